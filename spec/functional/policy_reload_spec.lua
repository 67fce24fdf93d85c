-- SIGHUP re-reads the policy file: a valid one applies to the next attempts of the running
-- run, an invalid one is refused with the reason and the old one stays.
local cjson = require "cjson"
local http = require "scimrun.http"
local ts = require "helpers.test_server"
local proc = require "helpers.proc"

local write = proc.write

describe("policy hot reload", function()
  local srv
  setup(function() srv = ts.start() end)
  teardown(function() srv.stop() end)

  it("applies a valid policy on SIGHUP and refuses an invalid one", function()
    local dir = proc.tmpdir("reload")
    local pol = dir .. "/pol.lua"
    local one = 'return { extends = "fast-test", operations = { ["*"] = "none" } }\n'
    write(pol, one)
    assert(http.request { method = "POST", url = srv.url .. "/script/reload", body = cjson.encode {
      responses = { { status = 503 }, { status = 503 }, { status = 503 }, { status = 201, body = "{}" } } } })
    local log = dir .. "/log"
    local pid = proc.spawn("spec/fixtures/workflows/reload.lua --param wait=2.5 --policy " .. pol
      .. " --state " .. dir .. "/s.db", "KV_BASE_URL=" .. srv.url, log)
    scimrun.sleep(0.6)
    write(pol, 'return { extends = "fast-test", profiles = { balanced = { atempts = 5 } } }\n')
    os.execute("kill -HUP " .. pid)
    scimrun.sleep(0.6)
    write(pol, 'return { extends = "fast-test", operations = { ["*"] = "balanced" } }\n')
    os.execute("kill -HUP " .. pid)
    assert.is_true(proc.wait_gone(pid, 20))
    local out = proc.read_all(log)
    assert.matches("policy reload refused; keeping the old one", out)
    assert.matches("atempts", out) -- the reason names the bad key
    assert.matches("policy reloaded", out)
    assert.matches("completed", out)
    local stats = cjson.decode(assert(http.request { url = srv.url .. "/stats/reload" }).body)
    assert.are.equal(4, stats.count) -- 3 failures retried under the reloaded profile, then success
  end)
end)
