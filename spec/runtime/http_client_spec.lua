-- The HTTP transport against an independent loopback server (spec/fixtures/test_server.py).
local http = require "scimrun.http"
local cjson = require "cjson"
local ts = require "helpers.test_server"

describe("http.request", function()
  local srv
  setup(function() srv = ts.start() end)
  teardown(function() srv.stop() end)

  it("returns status, case-insensitive headers and body", function()
    local res = assert(http.request { url = srv.url .. "/status/429?retry_after=7" })
    assert.are.equal(429, res.status)
    assert.are.equal("7", res.headers["Retry-After"])
    assert.are.equal("7", res.headers["retry-after"])
    assert.are.equal("scripted 429", cjson.decode(res.body).detail)
  end)

  it("sends method, headers and body", function()
    local res = assert(http.request {
      method = "PATCH", url = srv.url .. "/echo?x=1",
      headers = { ["Content-Type"] = "application/scim+json", ["X-Trace"] = "abc" },
      body = '{"Operations":[]}',
    })
    local echo = cjson.decode(res.body)
    assert.are.equal("PATCH", echo.method)
    assert.are.equal("x=1", echo.query)
    assert.are.equal("abc", echo.headers["x-trace"])
    assert.are.equal("application/scim+json", echo.headers["content-type"])
    assert.are.equal('{"Operations":[]}', echo.body)
  end)

  it("reports a refused connection as kind connect", function()
    -- the runtime's error contract: nil, message, code (the transport kind)
    local res, msg, kind = http.request { url = "http://127.0.0.1:1/" }
    assert.is_nil(res)
    assert.are.equal("connect", kind)
    assert.is_string(msg)
    assert.matches("[Cc]onnect", msg)
  end)

  it("reports a dropped connection as kind reset", function()
    local res, _, kind = http.request { url = srv.url .. "/drop" }
    assert.is_nil(res)
    assert.are.equal("reset", kind)
  end)

  it("reports a slow answer as kind timeout", function()
    local t0 = scimrun.now()
    local res, _, kind = http.request { url = srv.url .. "/delay?s=2", timeout = 0.3 }
    assert.is_nil(res)
    assert.are.equal("timeout", kind)
    assert.is_true(scimrun.now() - t0 < 1.5)
  end)

  it("caps the response size", function()
    local res, _, kind = http.request { url = srv.url .. "/echo", body = string.rep("x", 5000), method = "POST",
                                    max_size = 1000 }
    assert.is_nil(res)
    assert.are.equal("too_large", kind)
  end)

  it("keeps hundreds of requests in flight without blocking timers", function()
    local t0 = scimrun.now()
    local ok, fns = 0, {}
    for _ = 1, 200 do
      fns[#fns + 1] = function()
        local res = http.request { url = srv.url .. "/delay?s=0.5" }
        if res and res.status == 200 then ok = ok + 1 end
      end
    end
    local slept = 0
    for _ = 1, 100 do fns[#fns + 1] = function() scimrun.sleep(0.2); slept = slept + 1 end end
    scimrun.all(fns)
    assert.are.equal(200, ok)
    assert.are.equal(100, slept)
    assert.is_true(scimrun.now() - t0 < 5, "requests were serialised")
  end)
end)
