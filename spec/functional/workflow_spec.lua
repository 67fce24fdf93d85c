-- Durable steps through the binary: recorded results, resume, failures, bad state files.
local cjson = require "cjson"
local http = require "scimrun.http"
local ts = require "helpers.test_server"
local proc = require "helpers.proc"

local function writes(srv)
  local res = assert(http.request { url = srv.url .. "/kv" })
  return cjson.decode(res.body).writes
end

describe("durable workflow", function()
  local srv, dir, env
  setup(function()
    srv = ts.start()
    dir = proc.tmpdir("wf")
    env = "KV_BASE_URL=" .. srv.url
  end)
  teardown(function() srv.stop() end)
  before_each(function() assert(http.request { method = "POST", url = srv.url .. "/reset" }) end)

  it("keeps a failed step failed on resume, and re-runs it with --retry-failed", function()
    local state, marker = dir .. "/retry.db", dir .. "/fixed.marker"
    os.remove(marker)
    local wf = "spec/fixtures/workflows/steps.lua --param mode=fail_once --param marker=" .. marker
      .. " --state " .. state
    local code, out, err = proc.run(wf, env)
    assert.are.equal(1, code, out .. err)
    assert.matches("marker missing", out .. err)
    assert.matches("%-%-resume r%-", out)
    assert.are.same({ one = 1 }, writes(srv))
    local f = assert(io.open(marker, "w")); f:write("ok"); f:close()
    code = proc.run(wf .. " --resume", env)
    assert.are.equal(1, code) -- still failed: failures are sticky without --retry-failed
    code, out, err = proc.run(wf .. " --resume --retry-failed", env)
    assert.are.equal(0, code, out .. err)
    -- step one was not re-sent: its recorded result was used
    assert.are.same({ one = 1, two = 1, three = 1 }, writes(srv))
  end)

  it("refuses duplicate step keys", function()
    local code, out, err = proc.run("spec/fixtures/workflows/steps.lua --param mode=dup --state " .. dir .. "/dup.db",
      env)
    assert.are.equal(2, code, out .. err)
    assert.matches('duplicate step key "same"', out .. err)
  end)

  it("names the step whose result is not JSON-serialisable", function()
    local code, out, err = proc.run("spec/fixtures/workflows/steps.lua --param mode=nonjson --state "
      .. dir .. "/nj.db", env)
    assert.are.equal(2, code, out .. err)
    assert.matches('step "bad%-result" returned a value that is not JSON%-serialisable', out .. err)
  end)

  it("refuses to resume when the workflow file changed, unless forced", function()
    local wf_copy = dir .. "/changing.lua"
    os.execute("cp spec/fixtures/workflows/steps.lua " .. wf_copy)
    local marker = dir .. "/never.marker"
    local args = wf_copy .. " --param mode=fail_once --param marker=" .. marker .. " --state " .. dir .. "/chg.db"
    assert.are.equal(1, (proc.run(args, env)))
    local f = assert(io.open(wf_copy, "a")); f:write("\n-- edited\n"); f:close()
    local code, out, err = proc.run(args .. " --resume", env)
    assert.are.equal(2, code)
    assert.matches("the workflow file .*changing%.lua", out .. err)
    assert.matches("%-%-force", out .. err)
    code = proc.run(args .. " --resume --force", env)
    assert.are.equal(1, code) -- resumed (the step still fails), not refused
  end)

  it("refuses a state file that is not SQLite and leaves it untouched", function()
    local state = dir .. "/garbage.db"
    local f = assert(io.open(state, "w")); f:write(("not a database\n"):rep(100)); f:close()
    local code, out, err = proc.run("spec/fixtures/workflows/hello.lua --state " .. state)
    assert.are.equal(2, code, out .. err)
    assert.matches("garbage%.db", err)
    assert.are.equal(("not a database\n"):rep(100), proc.read_all(state))
  end)

  it("refuses a state file in use by another live scimrun", function()
    local state = dir .. "/locked.db"
    local pid = proc.spawn("spec/fixtures/workflows/kv_writes.lua --param n=100000 --param concurrency=1"
      .. " --param delay=0.05 --state " .. state, env)
    scimrun.sleep(0.5)
    local code, out, err = proc.run("spec/fixtures/workflows/hello.lua --state " .. state)
    os.execute("kill -9 " .. pid)
    assert.are.equal(2, code, out .. err)
    assert.matches("in use", err)
    proc.wait_gone(pid, 5)
    -- the lock of a killed process does not block
    code, out, err = proc.run("spec/fixtures/workflows/hello.lua --state " .. state)
    assert.are.equal(0, code, out .. err)
  end)

  it("stops on SIGINT with exit 130 and the resume command, then resumes to the end", function()
    local state = dir .. "/sigint.db"
    local log = dir .. "/sigint.log"
    local args = "spec/fixtures/workflows/kv_writes.lua --param n=300 --param concurrency=4 --param delay=0.02"
      .. " --state " .. state
    local pid = proc.spawn(args, env, log)
    scimrun.sleep(0.6)
    os.execute("kill -INT " .. pid)
    assert.is_true(proc.wait_gone(pid, 20))
    local out = proc.read_all(log)
    assert.matches("Resume with:\n  scimrun .*kv_writes%.lua %-%-resume r%-", out)
    local code, out2, err2 = proc.run(args .. " --resume", env)
    assert.are.equal(0, code, out2 .. err2)
    local w = writes(srv)
    for i = 1, 300 do assert.are.equal(1, w["k" .. i], "key k" .. i) end
  end)

  it("stops at once on a second SIGINT, still resumable without duplicates", function()
    local state = dir .. "/sigint2.db"
    local log = dir .. "/sigint2.log"
    local args = "spec/fixtures/workflows/kv_writes.lua --param n=60 --param concurrency=4 --param delay=1"
      .. " --state " .. state
    local pid = proc.spawn(args, env, log)
    scimrun.sleep(1.5)
    os.execute("kill -INT " .. pid)
    scimrun.sleep(0.2)
    local t0 = scimrun.now()
    os.execute("kill -INT " .. pid)
    assert.is_true(proc.wait_gone(pid, 5))
    assert.is_true(scimrun.now() - t0 < 1, "the second signal did not stop at once")
    assert.matches("stopped; nothing is lost. Resume with:", proc.read_all(log))
    local code, out, err = proc.run(args .. " --resume", env)
    assert.are.equal(0, code, out .. err)
    local w = writes(srv)
    for i = 1, 60 do assert.are.equal(1, w["k" .. i], "key k" .. i) end
  end)

  it("with --continue-on-error parks permanent failures in the dead-letter queue and exits 3", function()
    local state = dir .. "/coe.db"
    local code, out, err = proc.run("spec/fixtures/workflows/kv_writes.lua --param n=500 --param fail_every=20"
      .. " --continue-on-error --state " .. state, env)
    assert.are.equal(3, code, out .. err)
    local lcode, list = proc.run("dlq list --json --state " .. state)
    assert.are.equal(0, lcode)
    local entries = cjson.decode(list)
    assert.are.equal(25, #entries)
    local w = writes(srv)
    local done = 0
    for _ in pairs(w) do done = done + 1 end
    assert.are.equal(475, done)
    for _, e in ipairs(entries) do
      assert.are.equal("permanent", e.class)
      assert.is_nil(w[e.step_key:match("write:(.*)")])
    end
    -- `--resume` (no id) continues the newest run when it finished with dead letters: the
    -- failed items stay failed (no --retry-failed), nothing is written twice
    local rcode, rout = proc.run("spec/fixtures/workflows/kv_writes.lua --resume --continue-on-error --state "
      .. state, env)
    assert.are.equal(3, rcode, rout)
    assert.matches("475 from checkpoint", rout)
    local again = writes(srv)
    for k, c in pairs(again) do assert.are.equal(1, c, k) end
  end)
end)
