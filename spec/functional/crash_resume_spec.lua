-- SIGKILL at random instants, then --resume until done: by the server's own records every key
-- is written exactly once and none is missing (DESIGN.md "Durability and resume"). The same
-- test runs against both stores (issue 16): an SQLite state file and a PostgreSQL database
-- (--state postgres://..., a throwaway cluster this spec starts), with the same kills and the
-- same checks.
local cjson = require "cjson"
local http = require "scimrun.http"
local ts = require "helpers.test_server"
local proc = require "helpers.proc"
local pg_cluster = require "helpers.pg_cluster"

local q = proc.sh_quote

-- kills, then a resume that finishes, then the exactly-once check at the server; `state` is a
-- file path or a postgres:// URL, passed as --state to every command alike
local function crash_and_resume(srv, state, log)
  local n = 2000
  local env = "KV_BASE_URL=" .. srv.url
  local wf = "spec/fixtures/workflows/kv_writes.lua --param n=" .. n
    .. " --param concurrency=8 --param delay=0.03 --state " .. q(state)
  math.randomseed(os.time())
  local kills, started = 0, false
  while kills < 22 do
    local pid = proc.spawn(wf .. (started and " --resume" or ""), env, log)
    -- the first launch must live long enough to record its run
    scimrun.sleep(started and (0.05 + math.random() * 0.35) or 0.5)
    started = true
    if not proc.alive(pid) then break end -- finished before we could kill it
    os.execute("kill -9 " .. pid)
    assert.is_true(proc.wait_gone(pid, 10))
    kills = kills + 1
  end
  local code, out, err = proc.run(wf .. " --resume", env)
  assert.are.equal(0, code, out .. err .. proc.read_all(log):sub(-2000))
  local res = assert(http.request { url = srv.url .. "/kv" })
  local writes = cjson.decode(res.body).writes
  local missing, dup = {}, {}
  for i = 1, n do
    local c = writes["k" .. i]
    if not c then missing[#missing + 1] = i elseif c > 1 then dup[#dup + 1] = i .. "x" .. c end
  end
  assert.is_true(kills >= 20, "only " .. kills .. " kills happened: the run was too fast to test")
  assert.are.same({}, missing)
  assert.are.same({}, dup)
  -- the run's id as `runs list` shows it (for PostgreSQL too), and resuming the finished run by
  -- id says so and exits 0
  local lcode, list, lerr = proc.run("runs list --state " .. q(state))
  assert.are.equal(0, lcode, list .. lerr)
  local id = assert(list:match("(r%-%d+%-%d+%-%x+)%s+completed%s"), list)
  local code2, out2 = proc.run(wf .. " --resume " .. id, env)
  assert.are.equal(0, code2)
  assert.matches("nothing to resume", out2)
end

describe("a run killed with SIGKILL and resumed", function()
  local srv, cluster, dir
  setup(function()
    srv = ts.start()
    dir = proc.tmpdir("crash")
    assert(pg_cluster.available())
    cluster = pg_cluster.start()
  end)
  teardown(function()
    if srv then srv.stop() end
    if cluster then cluster.stop() end
    if dir then os.execute("rm -rf " .. q(dir)) end
  end)
  -- each store's run starts from a server that has seen no write
  before_each(function()
    local res = assert(http.request { method = "POST", url = srv.url .. "/reset" })
    assert(res.status == 204, "test server reset answered " .. res.status)
  end)

  it("writes every key exactly once after 20+ kills, with an SQLite state file", function()
    crash_and_resume(srv, dir .. "/state.db", dir .. "/sqlite.log")
  end)

  it("writes every key exactly once after 20+ kills, with the state in PostgreSQL", function()
    crash_and_resume(srv, cluster.createdb("crash"), dir .. "/postgres.log")
  end)
end)
