-- `scimrun policy check` and `scimrun policy simulate` through the binary.
-- Set SCIMRUN_BIN to the binary under test (helpers.proc defaults to ./build/scimrun).
local proc = require "helpers.proc"

describe("scimrun policy", function()
  local dir
  setup(function() dir = proc.tmpdir("policy-cli") end)
  teardown(function() os.execute("rm -rf '" .. dir .. "'") end)

  local function write(name, text) return proc.write(dir .. "/" .. name .. ".lua", text) end

  it("check prints the effective profiles, operation map and rules", function()
    local code, out, err = proc.run("policy check policies/fast-test.lua")
    assert.are.equal(0, code, err)
    assert.matches("balanced%s+5 attempts, exponential backoff 0.01s x2, delay 0..0.05s", out)
    assert.matches("%*%s+%-> balanced", out)
    assert.matches("http%-429%s+status 429 %-> rate_limited", out)
    assert.matches("policy OK", out, 1, true)
  end)

  it("check refuses a bad policy with exit code 2, naming file and key", function()
    local path = write("bad", [[return { extends = "default", profiles = { balanced = { attemps = 3 } } }]])
    local code, out, err = proc.run("policy check " .. path)
    assert.are.equal(2, code, out .. err)
    assert.truthy(err:find(path, 1, true), err)
    assert.truthy(err:find("profiles.balanced.attemps: unknown key; did you mean 'attempts'?", 1, true), err)
    code, out, err = proc.run("policy check no-such-policy")
    assert.are.equal(2, code, out)
    assert.matches("no policy 'no%-such%-policy'", err)
  end)

  it("simulate prints the schedule: classes, rules, Retry-After, cumulative time", function()
    local args = "policy simulate --op users.create --errors 503,503,429:ra=7,timeout,201 --seed 5"
    local code, out, err = proc.run(args)
    assert.are.equal(0, code, err)
    local rows = {}
    for line in out:gmatch("[^\n]+") do
      local n, at = line:match("^(%d+)%s+([%d%.]+)s")
      if n then rows[#rows + 1] = { n = tonumber(n), at = tonumber(at), line = line } end
    end
    assert.are.equal(5, #rows)
    assert.matches("503%s+transient%s+http%-5xx%-transient", rows[1].line)
    assert.matches("429:ra=7%s+rate_limited%s+http%-429.*retry in 7.000s: paced by the server: wait 7.000s",
                   rows[3].line)
    assert.matches("timeout%s+transient%s+transport%-transient", rows[4].line)
    assert.matches("201.*success", rows[5].line)
    assert.is_true(rows[4].at - rows[3].at >= 7, "the 429 wait shows in the cumulative time")
    assert.matches("result: succeeded on attempt 5", out)
    -- same seed, same schedule
    local _, again = proc.run(args)
    assert.are.equal(out, again)
  end)

  it("simulate --server shows the learned rate limit against a hidden one, window by window", function()
    local code, out, err = proc.run("policy simulate --server bucket:30/s --seconds 90")
    assert.are.equal(0, code, err)
    assert.matches("against a token bucket of 30/s", out)
    local share, of_limit = out:match("overall: [%d.]+ accepted/s, ([%d.]+)%% of requests answered 429; (%d+)%%")
    assert.is_true(tonumber(of_limit) >= 90 and tonumber(share) < 10, out)
    -- a healthy server is never limited
    code, out = proc.run("policy simulate --server none --seconds 30")
    assert.are.equal(0, code)
    assert.matches("30s%s+none", out)
    assert.matches("0.0%% of requests answered 429", out)
    code, out, err = proc.run("policy simulate --server bucket:fast")
    assert.are.equal(2, code, out)
    assert.matches("unknown server 'bucket:fast'", err)
  end)

  it("simulate shows a give-up and its reason", function()
    local code, out = proc.run("policy simulate policies/fast-test.lua --op users.get --errors 400:scim=invalidValue")
    assert.are.equal(0, code)
    assert.matches("give up: permanent errors are never retried", out, 1, true)
    assert.matches("result: failed %(permanent, rule http%-client%-error%) after 1 attempt", out)
    code, out = proc.run("policy simulate --op users.get --errors 429:ra=900")
    assert.are.equal(0, code)
    assert.matches("more than the 300.000s left before the deadline", out, 1, true)
  end)

  it("simulate refuses a malformed outcome list with exit code 2", function()
    local code, out, err = proc.run("policy simulate --op users.get --errors 503,explode")
    assert.are.equal(2, code, out)
    assert.matches("'explode': expected a status", err)
    code, out, err = proc.run("policy simulate --errors 503")
    assert.are.equal(2, code, out)
    assert.matches("simulate needs %-%-op", err)
  end)

  it("refuses a flag the subcommand or the kind of simulation would ignore, with exit code 2", function()
    local cases = {
      { "policy check policies/fast-test.lua --op users.get", "%-%-op is for scimrun policy simulate, not check" },
      { "policy simulate --server bucket:30/s --op users.create", "%-%-op is not used with %-%-server" },
      { "policy simulate --server bucket:30/s --target hr", "%-%-target is not used with %-%-server" },
      { "policy simulate --op users.get --errors 503,200 --seconds 30",
        "%-%-seconds is for policy simulate %-%-server" },
    }
    for _, c in ipairs(cases) do
      local code, out, err = proc.run(c[1])
      assert.are.equal(2, code, c[1] .. ": " .. out)
      assert.matches(c[2], err)
      assert.are.equal("", out, c[1])
    end
  end)
end)
