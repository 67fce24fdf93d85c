-- The default policy at a provider's pace: a sandbox that limits the rate (a token bucket the
-- client is not told about, answering 429 with Retry-After) is onboarded to the end, with the
-- default policy and no --policy, and every user ends up in the provider. Timing-free: what is
-- checked is the exit code, the summary and the provider's own records, not a duration.
local cjson = require "cjson"
local proc = require "helpers.proc"
local sbrun = require "helpers.sbrun"

local dir = proc.tmpdir("rate-limit")
teardown(function() os.execute("rm -rf '" .. dir .. "'") end)

local function rows(n)
  local path = dir .. "/users-" .. n .. ".csv"
  local code = proc.run(("-l examples/data/generate.lua --rows %d --out %s"):format(n, path))
  assert.are.equal(0, code)
  return path
end

local function provider_users(state)
  local names = {}
  for _, u in ipairs((sbrun.journal(state))) do names[#names + 1] = u.userName end
  return names
end

describe("the default policy against a rate-limited provider", function()
  it("onboards every row of a CSV through a 60/s limit and exits 0", function()
    local csv = rows(240)
    local state = dir .. "/rl.db"
    local report = dir .. "/rl.json"
    local code, out, err = proc.run(("examples/onboard.lua --sandbox='ratelimit:60/s' --param csv=%s "
      .. "--state %s --report %s"):format(csv, state, report))
    assert.are.equal(0, code, out .. err)
    assert.matches("240 succeeded %(240 created", out)
    local r = cjson.decode(proc.read_all(report))
    -- the limit was met (429s were answered), yet no retry budget was spent on them
    assert.is_true((r.summary.by_class.rate_limited or 0) > 0, "the provider never answered 429: " .. out)
    assert.are.equal(0, r.summary.budget_exhausted or 0)
    assert.are.equal(r.summary.by_class.rate_limited, r.summary.paced)
    assert.are.equal(240, #provider_users(state))
  end)

  it("still stops a storm of 5xx with the retry budget", function()
    local csv = rows(60)
    local state = dir .. "/storm.db"
    local report = dir .. "/storm.json"
    -- seeded faults: the group step before the items gets through, then half of all answers fail
    local code, out, err = proc.run(("examples/onboard.lua --sandbox='503:0.5' --seed 3 --param csv=%s "
      .. "--state %s --report %s --policy fast-test --continue-on-error"):format(csv, state, report))
    assert.are_not.equal(0, code, out .. err)
    local r = cjson.decode(proc.read_all(report))
    assert.is_true((r.summary.budget_exhausted or 0) > 0, out .. err)
    -- retries stayed within the budget: 20% of first attempts plus 10
    assert.is_true(r.summary.retries <= 0.2 * (r.summary.attempts - r.summary.retries) + 10 + 16,
      ("%d retries for %d attempts"):format(r.summary.retries, r.summary.attempts))
  end)
end)
