-- Retry flags and --set (issue 13, item 3): the top layer of the policy, given on the command
-- line. The evidence is what the provider counts (creates sent against a target answering 503
-- to every write), what `runs show` prints, and what a resume does with the run's flags.
local cjson = require "cjson"
local proc = require "helpers.proc"
local sbrun = require "helpers.sbrun"

local function posts(srv) return sbrun.stats(srv).by_route["POST /Users"] or 0 end

-- saga fixture, one item, no group, no saga: one create per attempt; fast-test policy (5
-- attempts, millisecond delays) unless the flags say otherwise
local function saga(state, extra)
  return "spec/fixtures/workflows/saga.lua --policy fast-test --state " .. state
    .. " --param n=1 --param group=none --param saga=0 " .. (extra or "")
end

-- a resume as an operator types it: no --policy (the run carries its policy)
local function resume(state, extra)
  return "spec/fixtures/workflows/saga.lua --resume --retry-failed --state " .. state .. " " .. (extra or "")
end

local function run_id(state) return select(2, sbrun.steps(state)).id end

local function show(state, json)
  local code, out, err = proc.run("runs show " .. run_id(state) .. (json and " --json" or "") .. " --state " .. state)
  assert.are.equal(0, code, out .. err)
  return json and cjson.decode(out) or out
end

describe("retry flags", function()
  local srv, dir
  setup(function()
    srv = sbrun.sandbox()
    dir = proc.tmpdir("retry-flags")
  end)
  teardown(function()
    srv.close()
    os.execute("rm -rf '" .. dir .. "'")
  end)
  before_each(function()
    sbrun.fresh(srv)
    sbrun.faults(srv, "503:1@writes")
  end)

  it("--retry-attempts 2 against a target answering 503 makes exactly 2 writes", function()
    local state = dir .. "/two.db"
    local code, out = sbrun.run(saga(state, "--retry-attempts 2"), srv.env)
    assert.are.equal(1, code, out)
    assert.are.equal(2, posts(srv))
    assert.matches("after 2 attempts", out)

    -- without the flag the policy's 5 attempts apply: the flag made the difference
    sbrun.fresh(srv)
    sbrun.faults(srv, "503:1@writes")
    code, out = sbrun.run(saga(dir .. "/five.db"), srv.env)
    assert.are.equal(1, code, out)
    assert.are.equal(5, posts(srv))
  end)

  it("records the flags in the run's policy snapshot, shown by runs show", function()
    local state = dir .. "/show.db"
    local code, out = sbrun.run(saga(state, "--retry-attempts 2 --jitter none --backoff-max 0.02 "
      .. "--set rate_limit.rps=5 --set profiles.conservative.attempts=4"), srv.env)
    assert.are.equal(1, code, out)
    local text = show(state)
    assert.matches("flags%s+%-%-retry%-attempts 2 %-%-jitter none %-%-backoff%-max 0%.02 %-%-set rate_limit%.rps=5 "
      .. "%-%-set profiles%.conservative%.attempts=4", text)
    assert.matches("balanced: 2 attempts, exponential backoff 0%.01s x2, delay 0%.%.0%.02s, none jitter", text)
    assert.matches("conservative: 4 attempts", text)
    assert.matches("rate_limit%s+.*rps=5", text)
    local r = show(state, true)
    assert.are.equal("--retry-attempts", r.policy.overrides[1].flag)
    assert.are.equal("2", r.policy.overrides[1].arg)
    assert.are.equal(2, r.policy.values.profiles.balanced.attempts)
    assert.are.equal(2, r.policy.values.profiles.aggressive.attempts) -- every operation's profile
    assert.are.equal(5, r.policy.values.rate_limit.rps)
  end)

  it("--set changes one key: profiles.balanced.attempts=3 makes 3 writes", function()
    local code, out = sbrun.run(saga(dir .. "/set.db", "--set profiles.balanced.attempts=3"), srv.env)
    assert.are.equal(1, code, out)
    assert.are.equal(3, posts(srv))
  end)

  it("--set operations.PATTERN=none maps an operation to a profile, over the file's map", function()
    local code, out = sbrun.run(saga(dir .. "/ops.db", "--set operations.users.create=none"), srv.env)
    assert.are.equal(1, code, out)
    assert.are.equal(1, posts(srv))
  end)

  it("the printed resume command keeps the flags; flags given on resume go over them", function()
    local state = dir .. "/resume.db"
    local code, out = sbrun.run(saga(state, "--retry-attempts 2"), srv.env)
    assert.are.equal(1, code, out)
    assert.are.equal(2, posts(srv))
    local printed = out:match("resume with: scimrun ([^\n]-)%s*\n")
    assert.is_string(printed, out)
    assert.is_nil(printed:find("--retry-attempts", 1, true)) -- the run carries them, not the command
    if not printed:find("--retry-failed", 1, true) then printed = printed .. " --retry-failed" end

    -- the printed command, as the operator runs it: still 2 attempts, not the policy's 5
    code, out = sbrun.run(printed, srv.env)
    assert.are.equal(1, code, out)
    assert.are.equal(4, posts(srv))

    -- a policy given again on resume keeps the run's flags over it
    code, out = sbrun.run(resume(state, "--policy fast-test"), srv.env)
    assert.are.equal(1, code, out)
    assert.matches("policy from %-%-policy, replacing the run's snapshot", out)
    assert.are.equal(6, posts(srv))

    -- a flag given on resume goes over the run's, and becomes the run's
    code, out = sbrun.run(resume(state, "--retry-attempts 3"), srv.env)
    assert.are.equal(1, code, out)
    assert.matches("policy flags given on resume", out)
    assert.are.equal(9, posts(srv))
    code, out = sbrun.run(resume(state), srv.env)
    assert.are.equal(1, code, out)
    assert.matches("policy from the run's snapshot", out)
    assert.are.equal(12, posts(srv))
    local text = show(state)
    assert.matches("changed by flags on resume", text)
    assert.matches("flags%s+%-%-retry%-attempts 3 ", text)
    assert.is_nil(text:find("--retry-attempts 2", 1, true)) -- the later value replaced it
  end)

  it("a bad value exits 2 with one line naming the flag, before the state file exists", function()
    local cases = {
      { "--retry-attempts 0", "%-%-retry%-attempts 0: profiles%.%*%.attempts: must be at least 1, got 0" },
      { "--retry-attempts two", "%-%-retry%-attempts two: profiles%.%*%.attempts: expected an integer, got string" },
      { "--backoff-min -1", "%-%-backoff%-min %-1: profiles%.%*%.min_delay: must be at least 0, got %-1" },
      { "--backoff-max 0.01 --backoff-min 1",
        "%-%-backoff%-min 1: profiles%.%w+%.min_delay: min_delay 1 is above max_delay 0%.01" },
      { "--backoff-multiplier 0", "%-%-backoff%-multiplier 0: profiles%.%*%.multiplier: must be greater than 0" },
      { "--jitter sometimes", "%-%-jitter sometimes: profiles%.%*%.jitter: unknown jitter \"sometimes\"; "
        .. "use one of: none, full, equal, decorrelated" },
      { "--set rate_limt.rps=5", "%-%-set rate_limt%.rps=5: rate_limt: unknown key; did you mean 'rate_limit'%?" },
      { "--set rate_limit.rps=fast", "%-%-set rate_limit%.rps=fast: rate_limit%.rps: expected a number, got string" },
      { "--set profiles.balnced.attempts=3", "did you mean 'balanced'%?" },
      { "--set operations.users.create=quick", "profile 'quick' is not defined" },
      { "--set budget.retry_ratio=2", "budget%.retry_ratio: must be at most 1, got 2" },
      { "--set classify=x", "%-%-set classify=x: classify: cannot be set from the command line" },
      { "--set rps", "%-%-set expects KEY=VALUE" },
      { "--retry-attempts", "%-%-retry%-attempts needs a value" },
    }
    for i, c in ipairs(cases) do
      local state = ("%s/bad-%d/s.db"):format(dir, i)
      local code, out, err = proc.run(saga(state, c[1]), srv.env)
      assert.are.equal(2, code, c[1] .. ": " .. out .. err)
      assert.matches(c[2], err)
      assert.are.equal(1, select(2, err:gsub("\n", "")), err)
      assert.is_nil(io.open(state), c[1] .. " created the state file")
    end
    assert.are.equal(0, posts(srv))
  end)

  it("policy check and simulate take the same flags", function()
    local code, out = proc.run("policy check fast-test --retry-attempts 2 --set rate_limit.rps=7")
    assert.are.equal(0, code, out)
    assert.matches("command line %(over the files%): %-%-retry%-attempts 2 %-%-set rate_limit%.rps=7", out)
    assert.matches("balanced%s+2 attempts", out)
    code, out = proc.run("policy simulate --op users.create --errors 503 --retry-attempts 3 --seed 1")
    assert.are.equal(0, code, out)
    assert.matches("give up: all 3 attempts used", out)
    local err
    code, out, err = proc.run("policy check --retry-attempts 0")
    assert.are.equal(2, code, out)
    assert.matches("%-%-retry%-attempts 0: profiles%.%*%.attempts: must be at least 1", err)
  end)
end)
