-- scimrun.resilience.classify: ordered rules from the policy, then the built-in defaults.
local policy = require "scimrun.resilience.policy"
local classify = require "scimrun.resilience.classify"
local proc = require "helpers.proc"

local dir = proc.tmpdir("classify-spec")
teardown(function() os.execute("rm -rf '" .. dir .. "'") end)

local function policy_with(rules_src, extends)
  local path = dir .. "/p" .. math.random(1, 1e9) .. ".lua"
  return policy.load(proc.write(path, ("return { %s classify = %s }"):format(
    extends and ('extends = "' .. extends .. '",') or "", rules_src)))
end

describe("classify with the default policy", function()
  local pol = policy.load("default")
  local cases = {
    { { kind = "timeout" }, "transient" }, { { kind = "connect" }, "transient" },
    { { kind = "reset" }, "transient" }, { { kind = "dns" }, "transient" },
    { { kind = "tls" }, "permanent" }, { { kind = "other" }, "permanent" },
    { { status = 500 }, "transient" }, { { status = 502 }, "transient" }, { { status = 503 }, "transient" },
    { { status = 504 }, "transient" }, { { status = 429 }, "rate_limited" }, { { status = 400 }, "permanent" },
    { { status = 404 }, "permanent" }, { { status = 422 }, "permanent" }, { { status = 401 }, "auth" },
    { { status = 403 }, "auth" }, { { status = 409 }, "conflict" }, { { status = 412 }, "conflict" },
    { { status = 413 }, "permanent" }, { { status = 501 }, "permanent" }, { { status = 418 }, "permanent" },
    { { detail = "no status at all" }, "permanent" },
  }
  for _, c in ipairs(cases) do
    local err, want = c[1], c[2]
    it(("classifies %s as %s"):format(err.kind or err.status or "an unknown error", want), function()
      assert.are.equal(want, (classify.classify(pol, err, "users.get")))
    end)
  end

  it("names the matching rule and passes on its suggestion", function()
    local class, rule, suggest = classify.classify(pol, { status = 401 }, "users.get")
    assert.are.equal("auth", class)
    assert.are.equal("http-auth", rule)
    assert.are.equal(classify.AUTH_SUGGEST, suggest)
    class, rule, suggest = classify.classify(pol, { kind = "tls" }, "users.get")
    assert.are.same({ "permanent", "tls" }, { class, rule })
    assert.matches("certificate", suggest)
    assert.are.equal("default:other", select(2, classify.classify(pol, { status = 418 }, "users.get")))
  end)

  it("falls back to the built-in defaults for a policy without rules", function()
    local bare = policy_with("{}")
    local class, rule = classify.classify(bare, { status = 503 }, "users.get")
    assert.are.equal("transient", class)
    assert.are.equal("http-5xx-transient", rule)
    assert.are.equal("http-auth", select(2, classify.classify(bare, { status = 403 }, "x")))
  end)

  it("has built-in rules equal to policies/default.lua's, so one table decides every class", function()
    local rules = policy.load("default").classify
    assert.are.equal(#classify.DEFAULTS, #rules)
    for i, r in ipairs(rules) do assert.are.same(r, classify.DEFAULTS[i]) end
    -- the cases that used to disagree between the SCIM client and the rules
    assert.are.same({ "permanent", "default:other" }, { classify.classify(nil, { kind = "other" }) })
    assert.are.same({ "permanent", "default:other" }, { classify.classify(nil, { status = 505 }) })
    assert.are.equal(classify.AUTH_SUGGEST, select(3, classify.classify(nil, { status = 401 })))
  end)

  it("is what a SCIM connection outside a run reports too", function()
    local scim = require "scimrun.scim"
    local sp = scim.connect { base_url = "http://127.0.0.1:9/scim/v2", token = "t0ken-unused", discover = false }
    local _, err = sp.users:get("x") -- nothing listens on port 9: a connect failure, no retry layer
    assert.are.same({ "transient", "transport-transient" }, { err.class, err.rule })
  end)
end)

describe("classify rules", function()
  it("tries the policy's rules in order, the extending file's first, ids classify[N] or name", function()
    local pol = policy_with([[{
      { status = 400, scim_type = "invalidValue", class = "permanent", suggest = "fix the data" },
      { name = "busy-400", status = 400, class = "transient" } }]], "default")
    local class, rule, suggest = classify.classify(pol, { status = 400, scim_type = "INVALIDVALUE" }, "users.create")
    assert.are.same({ "permanent", "classify[1]", "fix the data" }, { class, rule, suggest })
    class, rule = classify.classify(pol, { status = 400, scim_type = "mutability" }, "users.create")
    assert.are.same({ "transient", "busy-400" }, { class, rule })
    -- the default file's rules follow
    assert.are.equal("http-5xx-transient", select(2, classify.classify(pol, { status = 503 }, "users.get")))
  end)

  it("matches status lists, ranges and patterns", function()
    local pol = policy_with([[{
      { name = "list", status = { 520, 521 }, class = "transient" },
      { name = "range", status = { min = 530, max = 539 }, class = "transient" },
      { name = "dash", status = "540-545", class = "transient" },
      { name = "xx", status = "4xx", class = "conflict" } }]])
    assert.are.equal("list", select(2, classify.classify(pol, { status = 521 })))
    assert.are.equal("range", select(2, classify.classify(pol, { status = 535 })))
    assert.are.equal("dash", select(2, classify.classify(pol, { status = 545 })))
    assert.are.equal("xx", select(2, classify.classify(pol, { status = 451 })))
    assert.are.equal("default:other", select(2, classify.classify(pol, { status = 546 })))
  end)

  it("matches headers by name (any case) and value or Lua pattern", function()
    local pol = policy_with([[{
      { name = "maint", header = { name = "X-Maintenance" }, class = "transient" },
      { name = "quota", status = 403, header = { "X-Reason", "quota.*exceeded" }, class = "rate_limited" } }]])
    local maint = { status = 400, headers = { ["x-maintenance"] = "1" } }
    assert.are.equal("maint", select(2, classify.classify(pol, maint)))
    local quota = { status = 403, headers = { ["X-Reason"] = "daily quota was exceeded" } }
    local class, rule = classify.classify(pol, quota)
    assert.are.same({ "rate_limited", "quota" }, { class, rule })
    assert.are.equal("auth", (classify.classify(pol, { status = 403, headers = { ["X-Reason"] = "forbidden" } })))
  end)

  it("matches the operation, the transport kind and the detail text", function()
    local pol = policy_with([[{
      { name = "group-404", status = 404, op = "groups.*", class = "transient" },
      { name = "dns", kind = { "dns" }, class = "permanent", suggest = "check SCIM_BASE_URL" },
      { name = "detail", status = 400, detail = "try again", class = "transient" } }]])
    assert.are.equal("group-404", select(2, classify.classify(pol, { status = 404 }, "groups.add_member")))
    assert.are.equal("http-client-error", select(2, classify.classify(pol, { status = 404 }, "users.get")))
    assert.are.same({ "permanent", "dns", "check SCIM_BASE_URL" }, { classify.classify(pol, { kind = "dns" }) })
    assert.are.equal("detail", select(2, classify.classify(pol, { status = 400, detail = "busy, try again" })))
  end)

  it("calls a when predicate with the error and operation; a failing predicate does not match", function()
    local pol = policy_with([[{
      { name = "boom", when = function() error("broken") end, class = "transient" },
      { name = "pred", when = function(err, op) return op == "users.patch" and err.status == 400 end,
        class = "conflict" } }]])
    assert.are.equal("pred", select(2, classify.classify(pol, { status = 400 }, "users.patch")))
    assert.are.equal("http-client-error", select(2, classify.classify(pol, { status = 400 }, "users.create")))
  end)

  it("keeps a class the caller already decided when there is no status or transport kind", function()
    local pol = policy.load("default")
    assert.are.same({ "permanent", "caller" },
                    { classify.classify(pol, { class = "permanent", detail = "bad row" }, "users.create") })
    -- an HTTP error is classified by the rules even when a class is set
    assert.are.equal("transient", (classify.classify(pol, { class = "permanent", status = 503 }, "users.get")))
  end)

  it("retries only transient and rate_limited", function()
    assert.is_true(classify.retryable("transient"))
    assert.is_true(classify.retryable("rate_limited"))
    for _, c in ipairs({ "permanent", "auth", "conflict", "circuit_open" }) do
      assert.is_false(classify.retryable(c))
    end
  end)
end)
