-- What the operator gets back: exit codes, the --report JSON per item, failures that say what
-- failed, why and what to do, and no secret anywhere on disk.
local cjson = require "cjson"
local proc = require "helpers.proc"
local sbrun = require "helpers.sbrun"

local function read_json(path)
  local text = proc.read_all(path)
  assert.is_true(#text > 0, "no report at " .. path)
  return cjson.decode(text)
end

describe("run report", function()
  local srv, dir
  setup(function()
    dir = proc.tmpdir("report")
    srv = sbrun.sandbox { persist = dir .. "/sandbox.journal" }
  end)
  teardown(function() srv.close() end)
  before_each(function() sbrun.fresh(srv) end)

  local args = sbrun.saga_args

  it("writes per-item JSON with outcome, error class, rule and suggestion; exit 3 with dead letters", function()
    local state, rep = dir .. "/r3.db", dir .. "/r3.json"
    local code, out = sbrun.run(args(state, "--param n=40 --param bad_every=10 --param fail_third=5"
      .. " --continue-on-error --report " .. rep), srv.env)
    assert.are.equal(3, code, out)
    local r = read_json(rep)
    assert.are.equal("completed_with_dead_letters", r.status)
    assert.are.equal(3, r.exit_code)
    assert.matches("^r%-", r.run_id)
    assert.are.equal(40, #r.items)
    local by = {}
    for _, it in ipairs(r.items) do by[it.item] = it end
    assert.are.equal("ok", by[1].status)
    assert.are.equal("created", by[1].outcome)
    for i = 10, 40, 10 do
      local it = by[i]
      assert.are.equal("failed", it.status)
      assert.are.equal("dead_lettered", it.outcome)
      assert.are.equal("permanent", it.error.class)
      assert.are.equal("http-client-error", it.error.rule)
      assert.are.equal(400, it.error.status)
      assert.are.equal("users.create", it.error.op)
      assert.are.equal("fix the data in the source, then: scimrun dlq replay " .. it.dead_letter, it.error.suggest)
    end
    -- the rolled-back item says so, and says not to replay one request of it
    assert.are.equal("dead_lettered", by[5].outcome)
    assert.is_true(by[5].compensated)
    assert.are.equal("third:u0005", by[5].error.step)
    assert.matches("item was rolled back", by[5].error.suggest)
    assert.are.equal(5, r.summary.failed)
    assert.are.equal(5, r.summary.dead_lettered)
    assert.are.equal(5, #r.summary.failures)
  end)

  it("exits 0 when everything succeeded and 1 when the run failed", function()
    local rep = dir .. "/r0.json"
    local code, out = sbrun.run(args(dir .. "/r0.db", "--param n=5 --report " .. rep), srv.env)
    assert.are.equal(0, code, out)
    local r = read_json(rep)
    assert.are.equal("completed", r.status)
    assert.are.equal(5, #r.items)
    for _, it in ipairs(r.items) do assert.are.equal("created", it.outcome) end

    rep = dir .. "/r1.json"
    code, out = sbrun.run(args(dir .. "/r1.db", "--param n=3 --param prefix=f --param fail_third=2"
      .. " --param concurrency=1 --report " .. rep), srv.env)
    assert.are.equal(1, code, out)
    r = read_json(rep)
    assert.are.equal("failed", r.status)
    assert.are.equal(1, r.exit_code)
    assert.are.equal("permanent", r.error.class)
    assert.are.equal("third:f0002", r.error.step)
    local failed = r.items[2]
    assert.are.equal("rolled_back", failed.outcome)
    assert.is_nil(failed.dead_letter)
    -- not in the dead-letter queue: the way back is a resume, not a replay
    assert.matches("resume the run with %-%-retry%-failed", failed.error.suggest)
  end)

  it("exits 130 on SIGINT with the report marking the run interrupted", function()
    local rep = dir .. "/r130.json"
    local h = sbrun.spawn(args(dir .. "/r130.db", "--param n=400 --param step_sleep=0.05 --param concurrency=2"
      .. " --report " .. rep), srv.env)
    scimrun.sleep(0.5)
    sbrun.signal(h, "INT")
    local code, out = sbrun.wait(h, 20)
    assert.are.equal(130, code, out)
    local r = read_json(rep)
    assert.are.equal("interrupted", r.status)
    assert.are.equal(130, r.exit_code)
    assert.is_true(#r.items < 400)
    assert.matches("Resume with:\n  scimrun .*%-%-resume r%-", out)
  end)

  it("says what to do when the token is rejected, and never writes a token to disk", function()
    local state, rep = dir .. "/tok.db", dir .. "/tok.json"
    local h = sbrun.spawn(args(state, "--param n=120 --param group=none --param step_sleep=0.02 --param concurrency=4"
      .. " --continue-on-error --report " .. rep), srv.env)
    local deadline = scimrun.now() + 20
    while sbrun.stats(srv).users < 10 and scimrun.now() < deadline do scimrun.sleep(0.01) end
    -- while it runs, and after a SIGKILL, the write-ahead log holds recent pages
    sbrun.signal(h, 9)
    assert.are.equal(137, (sbrun.wait(h, 10)))
    assert.is_true(#proc.read_all(state .. "-wal") > 0, "a -wal file to inspect")
    for _, f in ipairs { state, state .. "-wal", dir .. "/sandbox.journal" } do
      assert.is_true(#proc.read_all(f) > 0, f .. " exists")
      assert.is_false(sbrun.file_contains(f, srv.token), f)
    end
    -- the right token, with the provider answering 401 to some requests: the first one stops the
    -- run (the token is taken for revoked), the items in flight say what to check, none is parked
    sbrun.faults(srv, "401:0.1", 11)
    local code, out = sbrun.run(args(state, "--resume --continue-on-error --report " .. rep), srv.env)
    assert.are.equal(1, code, out)
    assert.are.same({}, cjson.decode((select(2, proc.run("dlq list --json --state " .. state)))))
    local r = read_json(rep)
    local auth = 0
    for _, it in ipairs(r.items) do
      if it.error then
        auth = auth + 1
        assert.are.equal("auth", it.error.class)
        assert.matches("^token rejected: check SCIM_TOKEN", it.error.suggest)
      end
    end
    assert.is_true(auth > 0)

    -- a wrong token: every request is refused; the run stops and says what to check
    sbrun.faults(srv, nil)
    local wrong = "wrong-token-" .. require("scimrun.sandbox").random_token()
    local wstate = dir .. "/wrong.db"
    local wcode, wout = sbrun.run(args(wstate, "--param n=3 --report " .. dir .. "/wrong.json"),
      ("SCIM_BASE_URL=%s SCIM_TOKEN=%s"):format(srv.url, wrong))
    assert.are.equal(1, wcode, wout)
    assert.matches("stopped: groups%.search, GET http://127%.0%.0%.1:%d+/scim/v2/Groups", wout)
    assert.matches("why: auth 401: [^\n]*missing or wrong bearer", wout)
    assert.matches("what to do: token rejected: check SCIM_TOKEN", wout)
    assert.matches("resume with: scimrun .*%-%-resume r%-", wout)

    for _, f in ipairs { state, rep, wstate, dir .. "/wrong.json", dir .. "/sandbox.journal" } do
      assert.is_true(#proc.read_all(f) > 0, f .. " exists")
    end
    for _, f in ipairs { state, state .. "-wal", rep, wstate, wstate .. "-wal", dir .. "/wrong.json",
                         dir .. "/sandbox.journal" } do
      assert.is_false(sbrun.file_contains(f, srv.token), f)
      assert.is_false(sbrun.file_contains(f, wrong), f)
    end
    assert.is_nil(wout:find(wrong, 1, true))
    assert.is_nil(out:find(srv.token, 1, true))
  end)

  it("tells the operator to slow down when the target keeps rate-limiting", function()
    sbrun.faults(srv, "429:1@retry-after=0")
    local code, out = sbrun.run(args(dir .. "/rl.db", "--param n=2"), srv.env)
    assert.are.equal(1, code, out)
    assert.matches("why: rate_limited 429: [^\n]*%(after %d+ attempts%) %[rule http%-429%]", out)
    assert.matches("what to do: target rate%-limited: lower concurrency or use the conservative profile", out)
  end)
end)

describe("the summary's request counters", function()
  it("add up: every failed attempt was retried or given up, by class, from one event stream", function()
    local dir = require("helpers.proc").tmpdir("summary-counters")
    local rep = dir .. "/r.json"
    local code, out = require("helpers.proc").run(("spec/fixtures/workflows/down.lua --param n=2 "
      .. "--sandbox='503:1' --policy fast-test --continue-on-error --state %s/s.db --report %s"):format(dir, rep))
    os.execute("rm -rf '" .. dir .. "'")
    assert.are.equal(3, code, out)
    -- each of the 2 lookups: 5 attempts, 4 retried, the 5th given up
    assert.matches("10 attempts, 8 retries %(transient=8%), 2 gave up %(transient=2%)", out)
  end)
end)

describe("the report file", function()
  it("is readable by its owner only, even under umask 000", function()
    local dir = proc.tmpdir("report-mode")
    local rep = dir .. "/r.json"
    local code, out, err = proc.run(("spec/fixtures/workflows/hello.lua --state %s/s.db --report %s")
      :format(dir, rep), "umask 000;")
    assert.are.equal(0, code, out .. err)
    local p = io.popen("stat -c %a " .. rep)
    local mode = p:read("*l")
    p:close()
    os.execute("rm -rf '" .. dir .. "'")
    assert.are.equal("600", mode)
  end)
end)
