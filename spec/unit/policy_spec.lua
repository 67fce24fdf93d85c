-- scimrun.resilience.policy: loading, sandboxing, validation with operator-readable errors, extends
-- merging and operation -> profile resolution.
local policy = require "scimrun.resilience.policy"
local proc = require "helpers.proc"

local dir = proc.tmpdir("policy-spec")

local function write(name, text) return proc.write(dir .. "/" .. name .. ".lua", text) end

-- Loads and returns the error message (fails the spec when the load succeeds).
local function load_error(path)
  local ok, err = pcall(policy.load, path)
  assert.is_false(ok, "expected " .. path .. " to be refused")
  assert.is_true(policy.is_error(err), "expected a policy error, got " .. tostring(err))
  return tostring(err), err
end

teardown(function() os.execute("rm -rf '" .. dir .. "'") end)

describe("policy.load", function()
  it("loads policies/default.lua by name with every documented profile", function()
    local pol = policy.load("default")
    for _, name in ipairs({ "aggressive", "balanced", "conservative", "none" }) do
      assert.is_table(pol.profiles[name], name)
    end
    assert.are.equal(1, pol.profiles.none.attempts)
    assert.are.equal("full", pol.profiles.none.jitter) -- filled from the profile defaults
    assert.matches("policies/default%.lua$", pol.file)
  end)

  it("merges fast-test over default: its values win, the rest is inherited", function()
    local def, fast = policy.load("default"), policy.load("fast-test")
    assert.are.equal(0.01, fast.profiles.balanced.base)
    assert.are.equal(def.profiles.balanced.attempts, fast.profiles.balanced.attempts)
    assert.are.equal(#def.classify, #fast.classify)
    assert.are.equal(2, #fast.chain)
  end)

  it("puts an extending file's classify rules before the base's", function()
    local path = write("ext", [[
      return { extends = "fast-test",
               profiles = { balanced = { attempts = 2 }, mine = { attempts = 4, backoff = "constant" } },
               operations = { ["groups.*"] = "mine" },
               classify = { { name = "mine-first", status = 503, class = "permanent" } } }]])
    local pol = policy.load(path)
    assert.are.equal("mine-first", pol.classify[1].name)
    assert.are.equal(#policy.load("fast-test").classify + 1, #pol.classify)
    assert.are.equal(2, pol.profiles.balanced.attempts)
    assert.are.equal(0.01, pol.profiles.balanced.base) -- from fast-test, two levels down
    assert.are.same({ path, "policies/fast-test.lua", "policies/default.lua" },
                    { pol.chain[1], pol.chain[2]:match("policies/fast%-test%.lua$"),
                      pol.chain[3]:match("policies/default%.lua$") })
  end)

  it("finds a name in the extending file's own directory first", function()
    write("base-here", [[return { profiles = { balanced = { attempts = 7 } } }]])
    local pol = policy.load(write("child", [[return { extends = "base-here" }]]))
    assert.are.equal(7, pol.profiles.balanced.attempts)
  end)

  it("refuses an unknown key, suggesting the closest known one", function()
    local path = write("typo", [[return { profiles = { balanced = { attemps = 3 } } }]])
    local msg, err = load_error(path)
    assert.matches(path, msg, 1, true)
    assert.matches("profiles.balanced.attemps: unknown key; did you mean 'attempts'?", msg, 1, true)
    assert.are.equal("profiles.balanced.attemps", err.key)
    msg = load_error(write("typo2", [[return { brekaer = { failures = 3 } }]]))
    assert.matches("brekaer: unknown key; did you mean 'breaker'?", msg, 1, true)
  end)

  it("refuses a wrong type and says how to fix a quoted number", function()
    local msg = load_error(write("type", [[return { profiles = { balanced = { attempts = "5" } } }]]))
    assert.matches('profiles.balanced.attempts: expected an integer, got string "5"; write 5 without quotes',
                   msg, 1, true)
    msg = load_error(write("type2", [[return { breaker = { when_open = true } }]]))
    assert.matches("breaker.when_open: expected a string, got boolean", msg, 1, true)
  end)

  it("refuses impossible values naming the key", function()
    local cases = {
      { [[return { profiles = { balanced = { attempts = 0 } } }]],
        "profiles.balanced.attempts: must be at least 1, got 0; use attempts = 1 for no retries" },
      { [[return { profiles = { balanced = { min_delay = 10, max_delay = 5 } } }]],
        "profiles.balanced.min_delay: min_delay 10 is above max_delay 5" },
      { [[return { budget = { retry_ratio = 1.5 } }]], "budget.retry_ratio: must be at most 1, got 1.5" },
      { [[return { profiles = { fast = { jitter = "fulll" } } }]],
        "profiles.fast.jitter: unknown jitter \"fulll\"; did you mean 'full'?" },
      { [[return { profiles = { fast = { backoff = "fibonacci" } } }]], "unknown backoff \"fibonacci\"" },
      { [[return { classify = { { status = 503, class = "transiant" } } }]],
        "classify[1].class: unknown class \"transiant\"; did you mean 'transient'?" },
      { [[return { classify = { { status = 503 } } }]], "classify[1].class: missing" },
      { [[return { classify = { { status = { min = 599, max = 500 }, class = "transient" } } }]],
        "classify[1].status: range min 599 is above max 500" },
      { [[return { classify = { { kind = "timout", class = "transient" } } }]],
        "classify[1].kind: unknown transport kind \"timout\"; did you mean 'timeout'?" },
      { [[return { rate_limit = { target_share = 0.5 } }]], "rate_limit.target_share: must be less than 0.5" },
      { [[return { rate_limit = { slow_start = -1 } }]], "rate_limit.slow_start: must be at least 0, got -1" },
      { [[return { rate_limit = { slow_start = 2.5 } }]], "rate_limit.slow_start" },
    }
    for i, case in ipairs(cases) do
      local msg = load_error(write("bad" .. i, case[1]))
      assert.matches(case[2], msg, 1, true)
    end
  end)

  it("refuses an operation mapped to an undefined profile", function()
    local msg = load_error(write("undef", [[return { operations = { ["users.create"] = "balancd" } }]]))
    assert.matches('operations["users.create"]: profile \'balancd\' is not defined; did you mean \'balanced\'?',
                   msg, 1, true)
    assert.matches("defined profiles: balanced, none", msg, 1, true)
  end)

  it("reports several problems in one line: the first, and how many more policy check lists", function()
    local path = write("many", [[return { budget = { retry_ratio = 2, min_retries = -1 } }]])
    local msg = load_error(path)
    assert.is_nil(msg:find("\n", 1, true))
    assert.matches("budget.min_retries: must be at least 0, got -1; and 1 more (scimrun policy check "
      .. path .. " lists them)", msg, 1, true)
    local ok, err = pcall(policy.load, path)
    assert.is_false(ok)
    assert.are.equal(2, #err.lines) -- every problem, for scimrun policy check
    assert.matches("budget.retry_ratio", err.lines[2], 1, true)
  end)

  it("cites file:line for a syntax error", function()
    local path = write("syntax", "return {\n  profiles = {\n    balanced = { attempts = 5 \n  },\n")
    local msg = load_error(path)
    assert.truthy(msg:find(path .. ":5:", 1, true), msg)
  end)

  it("refuses global writes and unknown globals, citing the line", function()
    local path = write("global", "x = 1\nreturn {}\n")
    local msg = load_error(path)
    assert.matches(path .. ":1:", msg, 1, true)
    assert.matches("may not set globals (tried to set 'x')", msg, 1, true)
    msg = load_error(write("io", "local f = io.open('/etc/passwd')\nreturn {}\n"))
    assert.matches("'io' is not available in a policy file", msg, 1, true)
    msg = load_error(write("req", "local m = require 'os'\nreturn {}\n"))
    assert.matches("'require' is not available", msg, 1, true)
  end)

  it("lets a policy use the allowed library and environment", function()
    local pol = policy.load(write("env", [[
      local n = tonumber(os.getenv("SCIMRUN_POLICY_SPEC_UNSET") or "4")
      return { profiles = { balanced = { attempts = math.max(n, 2), description = string.format("%d", n) } } }]]))
    assert.are.equal(4, pol.profiles.balanced.attempts)
  end)

  it("stops a runaway policy file", function()
    local msg = load_error(write("loop", "while true do end\nreturn {}\n"))
    assert.matches("ran for more than", msg, 1, true)
  end)

  it("detects an extends cycle", function()
    write("cyc-a", [[return { extends = "cyc-b" }]])
    write("cyc-b", [[return { extends = "cyc-a" }]])
    local msg = load_error(dir .. "/cyc-a.lua")
    assert.matches("extends cycle: .*cyc%-a%.lua %-> .*cyc%-b%.lua %-> .*cyc%-a%.lua", msg)
  end)

  it("says where it looked for a missing policy", function()
    local msg = load_error("no-such-policy")
    assert.matches("no policy 'no-such-policy'", msg, 1, true)
    assert.matches("policies/no-such-policy.lua", msg, 1, true)
    msg = load_error(write("badbase", [[return { extends = "nowhere" }]]))
    assert.matches("extends: no policy 'nowhere'", msg, 1, true)
  end)

  it("refuses a file that does not return a table", function()
    assert.matches("must return a table, it returned number", load_error(write("num", "return 5")), 1, true)
  end)
end)

describe("policy.profile_for", function()
  local pol = policy.load(write("ops", [[
    return { profiles = { a = { attempts = 2 }, b = { attempts = 3 }, c = { attempts = 4 } },
             operations = { ["*"] = "a", ["users.*"] = "b", ["users.create"] = "c", ["*.delete"] = "none" } }]]))

  it("prefers the exact name, then the most specific pattern, then *", function()
    local p, name = policy.profile_for(pol, "users.create")
    assert.are.equal("c", name)
    assert.are.equal(4, p.attempts)
    assert.are.equal("b", select(2, policy.profile_for(pol, "users.patch")))
    -- "*.delete" has more literal characters than "users.*", so it is the more specific
    assert.are.equal("none", select(2, policy.profile_for(pol, "users.delete")))
    assert.are.equal("none", select(2, policy.profile_for(pol, "groups.delete")))
    assert.are.equal("a", select(2, policy.profile_for(pol, "groups.get")))
  end)
end)

describe("policy.describe", function()
  it("lists profiles, operations and rules for policy check", function()
    local text = table.concat(policy.describe(policy.load("default")), "\n")
    assert.matches("balanced%s+5 attempts, exponential backoff 1s x2", text)
    assert.matches("%*%s+%-> balanced", text)
    assert.matches("http%-auth%s+status 401|403 %-> auth", text)
    assert.matches("anything else -> permanent", text, 1, true)
  end)
end)
