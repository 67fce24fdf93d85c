-- SIGKILL at random instants, then --resume until done: by the server's own records every key
-- is written exactly once and none is missing (DESIGN.md "Durability and resume").
local cjson = require "cjson"
local http = require "scimrun.http"
local ts = require "helpers.test_server"
local proc = require "helpers.proc"

describe("a run killed with SIGKILL and resumed", function()
  local srv
  setup(function() srv = ts.start() end)
  teardown(function() srv.stop() end)

  it("writes every key exactly once after 20+ kills", function()
    local dir = proc.tmpdir("crash")
    local state = dir .. "/state.db"
    local log = dir .. "/runs.log"
    local n = 2000
    local env = "KV_BASE_URL=" .. srv.url
    local wf = "spec/fixtures/workflows/kv_writes.lua --param n=" .. n
      .. " --param concurrency=8 --param delay=0.03 --state " .. state
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
    -- resuming the finished run by id says so and exits 0
    local _, list = proc.run("runs list --state " .. state)
    local id = assert(list:match("(r%-%d+%-%d+%-%x+)"))
    local code2, out2 = proc.run(wf .. " --resume " .. id, env)
    assert.are.equal(0, code2)
    assert.matches("nothing to resume", out2)
  end)
end)
