-- A run killed in the middle of a server-requested backoff resumes waiting only for what is
-- left of the original deadline (issue: state that survives a crash).
local cjson = require "cjson"
local http = require "scimrun.http"
local ts = require "helpers.test_server"
local proc = require "helpers.proc"

describe("a pending backoff deadline", function()
  local srv
  setup(function() srv = ts.start() end)
  teardown(function() srv.stop() end)

  it("survives SIGKILL: the resumed run waits only for the rest of it", function()
    assert(http.request { method = "POST", url = srv.url .. "/script/backoff", body = cjson.encode {
      responses = { { status = 503, headers = { ["Retry-After"] = "5" } }, { status = 201, body = "{}" } } } })
    local dir = proc.tmpdir("backoff")
    local env = "KV_BASE_URL=" .. srv.url
    local args = "spec/fixtures/workflows/backoff.lua --state " .. dir .. "/s.db"
    local pid = proc.spawn(args, env, dir .. "/log")
    scimrun.sleep(2)
    os.execute("kill -9 " .. pid)
    assert.is_true(proc.wait_gone(pid, 5))
    local code, out, err = proc.run(args .. " --resume", env)
    assert.are.equal(0, code, out .. err)
    local stats = cjson.decode(assert(http.request { url = srv.url .. "/stats/backoff" }).body)
    assert.are.equal(2, stats.count)
    local gap = stats.times[2] - stats.times[1]
    -- a fresh backoff after the resume would make the gap about 2 + 5 = 7 s
    assert.is_true(gap >= 4.9, "sent before Retry-After allowed: " .. gap)
    assert.is_true(gap < 6.5, "the resumed run started a fresh backoff: " .. gap)
    local _, list = proc.run("runs list --json --state " .. dir .. "/s.db")
    assert.matches('"completed"', list)
  end)
end)
