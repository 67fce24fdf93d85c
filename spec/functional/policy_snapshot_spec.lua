-- The resolved policy is snapshotted in the run record at start (issue 11, item 3): values, not
-- a path, so that `dlq replay --policy original`, `--resume` and a SIGHUP reload use what the
-- run used even after the policy file was edited or deleted; `runs show` prints it.
-- Observable through attempts counted by the provider: each policy here differs from the
-- default one (5 attempts) in the number of creates it sends against a target answering 503.
local cjson = require "cjson"
local http = require "scimrun.http"
local proc = require "helpers.proc"
local sbrun = require "helpers.sbrun"
local ts = require "helpers.test_server"

local write = proc.write

local function posts(srv) return sbrun.stats(srv).by_route["POST /Users"] or 0 end

local function dlq(state)
  local code, out = proc.run("dlq list --json --state " .. state)
  assert.are.equal(0, code, out)
  return cjson.decode(out)
end

-- saga fixture, one item, no group, no saga: one create per attempt
local function saga(state, extra)
  return "spec/fixtures/workflows/saga.lua --state " .. state .. " --param n=1 --param group=none --param saga=0 "
    .. (extra or "")
end

local function quick(attempts)
  return ('return { extends = "fast-test", operations = { ["*"] = "quick" },\n'
    .. '  profiles = { quick = { attempts = %d, base = 0.001, max_delay = 0.002 } } }\n'):format(attempts)
end
local QUICK3, QUICK2 = quick(3), quick(2)

describe("policy snapshot in the run record", function()
  local srv, dir
  setup(function()
    srv = sbrun.sandbox()
    dir = proc.tmpdir("polsnap")
  end)
  teardown(function() srv.close() end)
  before_each(function() sbrun.fresh(srv) end)

  it("dlq replay --policy original uses the run's values after the policy file is gone", function()
    local state, pol = dir .. "/replay.db", dir .. "/quick3.lua"
    write(pol, QUICK3)
    sbrun.faults(srv, "503:1@writes")
    local code, out = sbrun.run(saga(state, "--policy " .. pol .. " --continue-on-error"), srv.env)
    assert.are.equal(3, code, out)
    assert.are.equal(3, posts(srv))
    local entries = dlq(state)
    assert.are.equal(1, #entries)
    local run_id = entries[1].run_id

    os.remove(pol)
    local rcode, rout = sbrun.run("dlq replay --all --policy original --state " .. state, srv.env)
    assert.are.equal(3, rcode, rout)
    assert.are.equal(6, posts(srv)) -- 3 more: the snapshot's quick profile, not the default 5
    assert.matches("policy: the snapshot of run " .. run_id:gsub("%-", "%%-"), rout)
    assert.matches("still failing " .. entries[1].id, rout)

    -- runs show prints the snapshot (the file is gone): the file, the merged values, the operation map
    local scode, show = proc.run("runs show " .. run_id .. " --state " .. state)
    assert.are.equal(0, scode, show)
    assert.matches("policy%s+" .. pol:gsub("%p", "%%%0") .. ", sha256 %x+, snapshot taken at start", show)
    assert.matches("quick: 3 attempts", show)
    assert.matches("operations%s+%* %-> quick", show)
    assert.matches("timeouts%s+connect=2 request=5 step=30", show) -- from fast-test, merged in
    local jcode, json = proc.run("runs show " .. run_id .. " --json --state " .. state)
    assert.are.equal(0, jcode, json)
    local r = cjson.decode(json)
    assert.are.equal(3, r.policy.values.profiles.quick.attempts)
    assert.is_nil(r.policy_json) -- the decoded snapshot replaces the raw column

    -- the cause gone, the replay succeeds with the same snapshot
    sbrun.faults(srv, nil)
    rcode, rout = sbrun.run("dlq replay --all --policy original --state " .. state, srv.env)
    assert.are.equal(0, rcode, rout)
    assert.matches("1 replayed, 0 still failing", rout)
  end)

  it("keeps functions: a classify `when` predicate is restored from the stored source", function()
    local state, pol = dir .. "/fn.db", dir .. "/when.lua"
    write(pol, 'return { extends = "fast-test", classify = { { name = "our-503", status = 503, class = "permanent",\n'
      .. '  when = function(err) return err.status == 503 end, suggest = "snapshot rule said so" } } }\n')
    sbrun.faults(srv, "503:1@writes")
    local code, out = sbrun.run(saga(state, "--policy " .. pol .. " --continue-on-error"), srv.env)
    assert.are.equal(3, code, out)
    assert.are.equal(1, posts(srv)) -- permanent at once
    local entries = dlq(state)
    assert.are.equal("our-503", entries[1].rule)

    write(pol, "return { this file is broken now\n")
    local rcode, rout = sbrun.run("dlq replay --all --policy original --state " .. state, srv.env)
    assert.are.equal(3, rcode, rout)
    assert.are.equal(2, posts(srv)) -- one attempt: the predicate still classifies 503 as permanent
    assert.matches("snapshot rule said so", rout)
    local _, show = proc.run("runs show " .. entries[1].run_id .. " --state " .. state)
    assert.matches("functions%s+classify%[1%]%.when %(restored from the stored source text%)", show)
  end)

  it("a resumed run uses the snapshot unless --policy is given, and says which in the log", function()
    local state, pol = dir .. "/resume.db", dir .. "/quick-resume.lua"
    write(pol, QUICK3)
    sbrun.faults(srv, "503:1@writes")
    local code, out = sbrun.run(saga(state, "--policy " .. pol), srv.env)
    assert.are.equal(1, code, out)
    assert.are.equal(3, posts(srv))

    -- the file now says 2 attempts; a resume without --policy keeps the run's 3
    write(pol, QUICK2)
    code, out = sbrun.run(saga(state, "--resume --retry-failed"), srv.env)
    assert.are.equal(1, code, out)
    assert.matches("policy from the run's snapshot", out)
    assert.are.equal(6, posts(srv))

    -- given explicitly, --policy wins, says so, and becomes the run's policy from now on
    code, out = sbrun.run(saga(state, "--resume --retry-failed --policy " .. pol), srv.env)
    assert.are.equal(1, code, out)
    assert.matches("policy from %-%-policy, replacing the run's snapshot", out)
    assert.are.equal(8, posts(srv))
    os.remove(pol)
    code, out = sbrun.run(saga(state, "--resume --retry-failed"), srv.env)
    assert.are.equal(1, code, out)
    assert.are.equal(10, posts(srv))

    local run_id = select(2, sbrun.steps(state)).id
    local _, show = proc.run("runs show " .. run_id .. " --state " .. state)
    assert.matches("quick: 2 attempts", show)
    assert.matches("changed by %-%-policy on resume", show)
    assert.matches("at start%s+sha256 %x+", show)
  end)
end)

describe("policy snapshot and SIGHUP", function()
  local srv
  setup(function() srv = ts.start() end)
  teardown(function() srv.stop() end)

  it("a resumed run reloads the file its snapshot came from, and the reload becomes the snapshot", function()
    local dir = proc.tmpdir("polsnap-hup")
    local pol, state = dir .. "/pol.lua", dir .. "/s.db"
    write(pol, 'return { extends = "fast-test", operations = { ["*"] = "none" } }\n')
    local env = "KV_BASE_URL=" .. srv.url
    -- first run: killed while it waits, before the call
    local h = sbrun.spawn("spec/fixtures/workflows/reload.lua --param wait=1.5 --policy " .. pol
      .. " --state " .. state, env)
    scimrun.sleep(0.5)
    sbrun.signal(h, "KILL")
    sbrun.wait(h, 10)

    assert(http.request { method = "POST", url = srv.url .. "/script/reload", body = cjson.encode {
      responses = { { status = 503 }, { status = 503 }, { status = 503 }, { status = 201, body = "{}" } } } })
    -- resumed without --policy; during the wait the file is edited and SIGHUP sent: 2 attempts
    h = sbrun.spawn("spec/fixtures/workflows/reload.lua --resume --state " .. state, env)
    scimrun.sleep(0.6)
    write(pol, 'return { extends = "fast-test", profiles = { balanced = { attempts = 2 } } }\n')
    sbrun.signal(h, "HUP")
    local code, out = sbrun.wait(h, 20)
    assert.matches("policy reloaded", out)
    assert.matches("pol%.lua", out)
    assert.are.equal(1, code, out) -- 2 attempts against 3 scripted failures
    local stats = cjson.decode(assert(http.request { url = srv.url .. "/stats/reload" }).body)
    assert.are.equal(2, stats.count)

    local db = assert(require("scimrun.store").open(state, { readonly = true }))
    local run = db:runs_list { limit = 1 }[1]
    db:close()
    local _, show = proc.run("runs show " .. run.id .. " --state " .. state)
    assert.matches("changed by reload", show)
    assert.matches("balanced: 2 attempts", show)
  end)
end)
