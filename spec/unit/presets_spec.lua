-- Provider presets (policies/slack.lua, github.lua, atlassian.lua, zoom.lua, group_sync.lua): each
-- loads, passes `scimrun policy check`, stays under the provider's published limits and
-- applies its quirks through the real classifier and retry executor.
local policy = require "scimrun.resilience.policy"
local classify = require "scimrun.resilience.classify"
local retry = require "scimrun.resilience.retry"
local proc = require "helpers.proc"

local PRESETS = { "slack", "github", "atlassian", "zoom" }

-- Runs one operation through the executor on a simulated clock; `answers` are the results of
-- successive attempts ({status=, headers=, detail=} or "ok"). Returns the delays slept between
-- attempts, the final result and error.
local function run_op(pol, op, answers)
  local t = 0
  local waits = {}
  local clock = { now = function() return t end, wall = function() return 1700000000 + t end,
                  sleep = function(s) t = t + s end }
  local ex = retry.executor { policy = pol, seed = 7, log = false, clock = clock,
    on_event = function(ev) if ev.type == "delay" then waits[#waits + 1] = ev.seconds end end }
  local res, err = ex:run(op, "target", function(n)
    local a = answers[math.min(n, #answers)]
    if a == "ok" then return { status = 200 } end
    return nil, { status = a.status, headers = a.headers or {}, detail = a.detail or "simulated" }
  end)
  return waits, res, err
end

describe("provider presets", function()
  local pols = {}
  setup(function()
    for _, name in ipairs(PRESETS) do pols[name] = policy.load(name) end
  end)

  it("each extends the default, limits its rate and concurrency and sets members per PATCH", function()
    for _, name in ipairs(PRESETS) do
      local pol = pols[name]
      assert.are.equal("policies/default.lua", pol.chain[2], name)
      assert.is_true(pol.rate_limit.rps > 0 and pol.rate_limit.rps < 50, name .. ": rps below the default")
      assert.is_true(pol.bulkhead.max_in_flight < 32, name .. ": fewer in flight than the default")
      assert.is_true(pol.scim.max_members_per_patch >= 1, name)
      -- the default's classification is still there after the preset's own rules
      assert.are.equal("transient", (classify.classify(pol, { status = 503 }, "users.create")))
    end
  end)

  it("passes `scimrun policy check NAME`", function()
    for _, name in ipairs(PRESETS) do
      local code, out, err = proc.run("policy check " .. name)
      assert.are.equal(0, code, name .. ": " .. out .. err)
      assert.matches("policy OK", out)
      assert.matches("policies/" .. name .. "%.lua %-> policies/default%.lua", out)
    end
  end)

  describe("github", function()
    it("treats 403 with X-RateLimit-Remaining: 0 as rate limited and a plain 403 as auth", function()
      local pol = pols.github
      local class, rule = classify.classify(pol, { status = 403, headers = { ["x-ratelimit-remaining"] = "0" } },
        "users.create")
      assert.are.equal("rate_limited", class)
      assert.are.equal("github-primary-limit", rule)
      assert.are.equal("auth", (classify.classify(pol, { status = 403, headers = {} }, "users.create")))
      -- "10" contains a 0: the header rule is anchored, so quota left is still an auth problem
      assert.are.equal("auth", (classify.classify(pol,
        { status = 403, headers = { ["x-ratelimit-remaining"] = "10" } }, "users.create")))
      local sclass = classify.classify(pol, { status = 403, headers = {},
        detail = "You have exceeded a secondary rate limit. Please wait a few minutes before you try again." })
      assert.are.equal("rate_limited", sclass)
      -- the same 403 under the default policy is an auth failure: the quirk lives in the preset
      assert.are.equal("auth", (classify.classify(policy.load("default"),
        { status = 403, headers = { ["x-ratelimit-remaining"] = "0" } }, "users.create")))
    end)

    it("waits at least 60 s after a 429 without Retry-After, but follows the server when it says", function()
      local waits, res = run_op(pols.github, "users.create", { { status = 429 }, "ok" })
      assert.truthy(res)
      assert.are.equal(1, #waits)
      assert.is_true(waits[1] >= 60, "waited only " .. tostring(waits[1]))
      waits = run_op(pols.github, "users.create", { { status = 429, headers = { ["retry-after"] = "5" } }, "ok" })
      assert.is_true(waits[1] >= 5 and waits[1] < 60, "waited " .. tostring(waits[1]))
      -- quota used up: until X-RateLimit-Reset (an epoch second), here 120 s ahead
      waits = run_op(pols.github, "users.create", { { status = 403, headers = { ["x-ratelimit-remaining"] = "0",
        ["x-ratelimit-reset"] = tostring(1700000000 + 120) } }, "ok" })
      assert.is_true(waits[1] >= 119 and waits[1] <= 121, "waited " .. tostring(waits[1]))
      -- a 503 keeps the ordinary short backoff
      waits = run_op(pols.github, "users.create", { { status = 503 }, "ok" })
      assert.is_true(waits[1] < 2, "waited " .. tostring(waits[1]))
      -- and a plain 403 is not retried at all
      local w403, _, err = run_op(pols.github, "users.create", { { status = 403 }, "ok" })
      assert.are.equal(0, #w403)
      assert.are.equal("auth", err.class)
      assert.matches("scim:enterprise", err.suggest)
    end)

    it("stays under 5,000 requests per hour and 100 concurrent requests", function()
      assert.is_true(pols.github.rate_limit.rps * 3600 <= 5000)
      assert.is_true(pols.github.bulkhead.max_in_flight <= 100)
    end)
  end)

  describe("slack", function()
    it("keeps the org-wide write limit (600/min) and the create limit (180/min, burst 20)", function()
      local rl = pols.slack.rate_limit
      -- even if every request were a write, 600 per minute holds
      assert.is_true(rl.rps * 60 <= 600)
      -- onboarding sends about a third of its requests as POST /Users
      assert.is_true(rl.rps / 3 * 60 <= 180)
      assert.is_true(rl.burst <= 20)
    end)

    it("honours Retry-After on a 429 and says what a Slack token needs on 401", function()
      local waits = run_op(pols.slack, "users.create", { { status = 429, headers = { ["retry-after"] = "7" } }, "ok" })
      assert.are.equal(7, waits[1])
      local class, _, suggest = classify.classify(pols.slack, { status = 401 }, "users.create")
      assert.are.equal("auth", class)
      assert.matches("admin scope", suggest)
    end)
  end)

  describe("zoom", function()
    it("sends at most one request per second and 30 members per PATCH", function()
      assert.is_true(pols.zoom.rate_limit.rps <= 1)
      assert.is_true(pols.zoom.scim.max_members_per_patch <= 30)
    end)

    it("names the daily limit and the SSO prerequisite", function()
      local class, rule = classify.classify(pols.zoom,
        { status = 429, headers = { ["x-ratelimit-type"] = "Daily-limit" } }, "users.create")
      assert.are.equal("rate_limited", class)
      assert.are.equal("zoom-daily-limit", rule)
      local qclass, qrule = classify.classify(pols.zoom, { status = 429, headers = { ["x-ratelimit-type"] = "QPS" } },
        "users.create")
      assert.are.equal("rate_limited", qclass)
      assert.are_not.equal("zoom-daily-limit", qrule)
      local c2, _, s2 = classify.classify(pols.zoom,
        { status = 400, detail = "Account has not enabled Single Sign-On." }, "users.create")
      assert.are.equal("permanent", c2)
      assert.matches("Single Sign%-On", s2)
    end)
  end)

  describe("atlassian", function()
    it("hints at the verified domain on a failed user create only", function()
      local class, rule, suggest = classify.classify(pols.atlassian, { status = 400 }, "users.create")
      assert.are.equal("permanent", class)
      assert.are.equal("atlassian-unverified-domain", rule)
      assert.matches("verified domain", suggest)
      assert.are_not.equal("atlassian-unverified-domain", select(2, classify.classify(pols.atlassian,
        { status = 400 }, "groups.create")))
    end)
  end)
end)

describe("policies/group_sync.lua", function()
  it("retries reads and users.create, and no other write", function()
    local pol = policy.load("group_sync")
    for _, op in ipairs({ "users.create", "users.search", "users.get", "groups.search", "groups.get" }) do
      local prof, name = policy.profile_for(pol, op)
      assert.are.equal("balanced", name, op)
      assert.is_true(prof.attempts > 1, op .. " uses " .. name)
    end
    for _, op in ipairs({ "groups.create", "groups.add_member", "groups.remove_member", "users.patch",
                          "users.replace", "users.delete", "groups.patch", "groups.delete" }) do
      local p, pname = policy.profile_for(pol, op)
      assert.are.equal(1, p.attempts, op .. " uses " .. pname)
    end
    local rwaits, rres = run_op(pol, "users.search", { { status = 503 }, "ok" })
    assert.are.equal(1, #rwaits)
    assert.truthy(rres)
    local waits, _, err = run_op(pol, "groups.add_member", { { status = 503 }, "ok" })
    assert.are.equal(0, #waits)
    assert.are.equal("transient", err.class)
    waits = run_op(pol, "users.create", { { status = 503 }, "ok" })
    assert.are.equal(1, #waits)
  end)
end)

describe("policy key scim.max_members_per_patch", function()
  local dir = proc.tmpdir("presets")
  teardown(function() os.execute("rm -rf '" .. dir .. "'") end)
  local function write(name, text) return proc.write(dir .. "/" .. name .. ".lua", text) end

  it("is validated like every other key", function()
    local ok, err = pcall(policy.load, write("typo", 'return { scim = { max_member_per_patch = 5 } }'))
    assert.is_false(ok)
    assert.matches("scim%.max_member_per_patch: unknown key; did you mean 'max_members_per_patch'", tostring(err))
    ok, err = pcall(policy.load, write("zero", 'return { scim = { max_members_per_patch = 0 } }'))
    assert.is_false(ok)
    assert.matches("scim%.max_members_per_patch: must be at least 1", tostring(err))
    assert.are.equal(100, policy.load("default").scim.max_members_per_patch)
  end)

  it("becomes the SCIM client's chunk size through the run context", function()
    local scim = require "scimrun.scim"
    local ctx = scimrun.ctx()
    local saved = ctx.run
    ctx.run = { max_members_per_patch = policy.load("zoom").scim.max_members_per_patch }
    local sp = scim.connect { base_url = "http://127.0.0.1:9/scim/v2", token = "t" }
    local explicit = scim.connect { base_url = "http://127.0.0.1:9/scim/v2", token = "t", max_members_per_patch = 7 }
    ctx.run = saved
    assert.are.equal(30, sp.max_members_per_patch)
    assert.are.equal(7, explicit.max_members_per_patch)
  end)
end)
