-- The embedded HTTP/1.1 server (runtime/http_server.c), driven by the real HTTP client
-- (libcurl) in the same process and, for pipelining and slow clients, by a raw Python socket.
local hs = require "scimrun.httpserver"
local http = require "scimrun.http"
local cjson = require "cjson"

-- A raw TCP client in the background: sends the payload in one write, records everything
-- received until the server closes (or 5 s), then renames its output into place. With
-- half_close it shuts its sending side right after the payload, as `nc -N` does.
local RAW_CLIENT = [[
import socket, sys, os, time
port, payload_path, out_path, half_close = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4] == "1"
s = socket.create_connection(("127.0.0.1", port))
s.settimeout(5)
payload = open(payload_path, "rb").read()
if payload:
    s.sendall(payload)
if half_close:
    s.shutdown(socket.SHUT_WR)
t0, data = time.time(), b""
try:
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
except Exception as e:
    data += ("\n<client: %s>" % e).encode()
open(out_path + ".tmp", "wb").write(data + ("\n<closed after %.2f s>" % (time.time() - t0)).encode())
os.rename(out_path + ".tmp", out_path)
]]

local tmp = {}
local function tmpfile(content)
  local path = os.tmpname()
  tmp[#tmp + 1] = path
  if content then
    local f = assert(io.open(path, "wb"))
    f:write(content)
    f:close()
  end
  return path
end

local script
local function raw_request(port, payload, half_close)
  script = script or tmpfile(RAW_CLIENT)
  local out = tmpfile()
  os.remove(out)
  os.execute(("python3 %s %d %s %s %d >/dev/null 2>&1 &"):format(script, port, tmpfile(payload), out,
                                                               half_close and 1 or 0))
  local deadline = scimrun.now() + 8
  while scimrun.now() < deadline do
    local f = io.open(out, "rb")
    if f then
      local data = f:read("*a")
      f:close()
      return data
    end
    scimrun.sleep(0.02)
  end
  error("raw client did not finish")
end

local function echo_handler(req)
  if req.path == "/sleep" then scimrun.sleep(tonumber(req.query:match("s=([%d.]+)"))) end
  return {
    status = 200,
    headers = { ["Content-Type"] = "application/json", ["X-Path"] = req.path },
    body = cjson.encode(req),
  }
end

local servers = {}
local function listen(opts)
  local s, err = hs.listen(opts)
  servers[#servers + 1] = s
  return s, err
end

describe("scimrun.httpserver", function()
  local srv
  before_each(function() srv = assert(listen { handler = echo_handler }) end)
  after_each(function()
    -- a server left open keeps the loop (and the process) alive
    for _, s in ipairs(servers) do s:close() end
    servers = {}
  end)
  teardown(function()
    for _, p in ipairs(tmp) do os.remove(p) end
  end)

  it("listens on a free loopback port and hands the request to the handler", function()
    assert.is_true(srv:port() > 0)
    assert.are.equal("http://127.0.0.1:" .. srv:port(), srv:url())
    local res = assert(http.request { url = srv:url() .. "/scim/v2/Users?filter=userName%20eq%20%22a%22",
                                      headers = { ["X-Trace"] = "t1" } })
    assert.are.equal(200, res.status)
    assert.are.equal("application/json", res.headers["content-type"])
    assert.are.equal("/scim/v2/Users", res.headers["x-path"])
    assert.are.equal(tostring(#res.body), res.headers["content-length"])
    local req = cjson.decode(res.body)
    assert.are.equal("GET", req.method)
    assert.are.equal("/scim/v2/Users", req.path)
    assert.are.equal("filter=userName%20eq%20%22a%22", req.query)
    assert.are.equal("/scim/v2/Users?filter=userName%20eq%20%22a%22", req.url)
    assert.are.equal("t1", req.headers["x-trace"])
    assert.are.equal("127.0.0.1", req.remote)
    assert.are.equal("", req.body)
  end)

  it("passes a POST body and lower-cased headers, and answers the handler's status", function()
    local srv2 = assert(listen { handler = function(req)
      return { status = 201, headers = { Location = "/Users/1", ["Set-Cookie"] = { "a=1", "b=2" } },
               body = req.headers["content-type"] .. "|" .. req.body .. "|" .. tostring(req.query) }
    end })
    local body = '{"userName":"ada","emails":[' .. string.rep('"x@example.org",', 200) .. '"y"]}'
    local res = assert(http.request { method = "POST", url = srv2:url() .. "/Users", body = body,
                                      headers = { ["Content-Type"] = "application/scim+json" } })
    srv2:close()
    assert.are.equal(201, res.status)
    assert.are.equal("/Users/1", res.headers.location)
    assert.are.equal("a=1, b=2", res.headers["set-cookie"])
    assert.are.equal("application/scim+json|" .. body .. "|nil", res.body)
  end)

  it("keeps one connection alive across many sequential requests", function()
    for i = 1, 50 do
      local res = assert(http.request { url = srv:url() .. "/n" .. i })
      assert.are.equal("/n" .. i, cjson.decode(res.body).path)
    end
    local st = srv:stats()
    assert.are.equal(50, st.requests)
    assert.are.equal(1, st.connections)
  end)

  it("serves 200 concurrent slow requests at once", function()
    local fns = {}
    for i = 1, 200 do
      fns[i] = function()
        local res = assert(http.request { url = srv:url() .. "/sleep?s=0.5&i=" .. i, timeout = 10 })
        return res.status == 200 and cjson.decode(res.body).query
      end
    end
    local t0 = scimrun.now()
    local results = scimrun.all(fns)
    local elapsed = scimrun.now() - t0
    for i = 1, 200 do assert.are.equal("s=0.5&i=" .. i, results[i]) end
    assert.is_true(elapsed < 1.5, ("took %.2f s"):format(elapsed))
    assert.are.equal(200, srv:stats().requests)
  end)

  it("answers pipelined requests in request order even when a later one finishes first", function()
    local payload = "GET /sleep?s=0.3 HTTP/1.1\r\nHost: x\r\n\r\n"
      .. "POST /fast HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
      .. "GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
      .. "GET /never HTTP/1.1\r\nHost: x\r\n\r\n"
    local out = raw_request(srv:port(), payload)
    local paths = {}
    for p in out:gmatch("X%-Path: (%S+)") do paths[#paths + 1] = p end
    assert.are.same({ "/sleep", "/fast", "/last" }, paths)
    assert.truthy(out:find('"body":"hello"', 1, true))
    assert.truthy(out:find("Connection: close", 1, true))
    assert.are.equal(3, srv:stats().requests) -- nothing after Connection: close is read
  end)

  it("keeps order across more pipelined requests than it queues, after the client half-closes", function()
    local parts = {}
    for i = 1, 100 do parts[i] = ("GET /sleep?s=%.2f&i=%d HTTP/1.1\r\nHost: x\r\n\r\n"):format((i % 3) * 0.01, i) end
    local out = raw_request(srv:port(), table.concat(parts), true)
    local order = {}
    for i in out:gmatch('"query":"s=[%d.]+&i=(%d+)"') do order[#order + 1] = tonumber(i) end
    assert.are.equal(100, #order, out:sub(-300))
    for i = 1, 100 do assert.are.equal(i, order[i]) end
    assert.are.same({ connections = 1, requests = 100, open = 0 }, srv:stats())
  end)

  it("answers HEAD with the headers of GET and no body", function()
    local out = raw_request(srv:port(), "HEAD /h HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    local head, rest = out:match("^(.-\r\n\r\n)(.*)$")
    assert.truthy(head:match("^HTTP/1.1 200 OK\r\n"), out)
    assert.truthy(tonumber(head:match("Content%-Length: (%d+)")) > 0)
    assert.truthy(rest:match("^\n<closed after"), out)
  end)

  it("answers 413 to a body over max_body and keeps serving others", function()
    local small = assert(listen { handler = echo_handler, max_body = 1000 })
    local res = assert(http.request { method = "POST", url = small:url() .. "/big", body = string.rep("x", 5000) })
    assert.are.equal(413, res.status)
    local chunked = raw_request(small:port(), "POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
      .. "400\r\n" .. string.rep("y", 1024) .. "\r\n0\r\n\r\n")
    assert.truthy(chunked:match("^HTTP/1.1 413 "), chunked)
    res = assert(http.request { method = "POST", url = small:url() .. "/ok", body = string.rep("x", 1000) })
    assert.are.equal(200, res.status)
    small:close()
  end)

  it("answers 431 to oversized headers and 400 to garbage, then closes", function()
    local res = assert(http.request { url = srv:url() .. "/", headers = { ["X-Big"] = string.rep("h", 20000) } })
    assert.are.equal(431, res.status)
    local out = raw_request(srv:port(), "HELLO THERE\r\n\r\nGET / HTTP/1.1\r\n\r\n")
    assert.truthy(out:match("^HTTP/1.1 400 Bad Request\r\n"), out)
    assert.truthy(out:find("Connection: close", 1, true))
    assert.falsy(out:find("HTTP/1.1 200", 1, true))
  end)

  it("closes idle connections and answers 408 to a request that never completes", function()
    local quick = assert(listen { handler = echo_handler, idle_timeout = 0.2, read_timeout = 0.3 })
    local idle = raw_request(quick:port(), "")
    local after = tonumber(idle:match("^\n<closed after ([%d.]+) s>$"))
    assert.truthy(after and after > 0.1 and after < 2, idle)
    local partial = raw_request(quick:port(), "GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    assert.truthy(partial:match("^HTTP/1.1 408 Request Timeout\r\n"), partial)
    assert.are.equal(2, quick:stats().connections)
    local deadline = scimrun.now() + 2 -- after its answer the server reads until the client's FIN
    while quick:stats().open > 0 and scimrun.now() < deadline do scimrun.sleep(0.01) end
    assert.are.equal(0, quick:stats().open)
    quick:close()
  end)

  it("drops the connection without an answer when the handler returns drop = true", function()
    local calls = 0
    local dropper = assert(listen { handler = function()
      calls = calls + 1
      return { drop = true }
    end })
    local res, _, kind = http.request { url = dropper:url() .. "/lost" }
    dropper:close()
    assert.is_nil(res)
    assert.are.equal("reset", kind)
    assert.are.equal(1, calls)
  end)

  it("answers 500 when the handler fails or returns something unusable, and keeps serving", function()
    local bad = assert(listen { handler = function(req)
      if req.path == "/error" then error({ detail = "handler exploded" }) end
      if req.path == "/status" then return { status = "ok" } end
      if req.path == "/header" then return { headers = { ["X-Bad"] = "a\r\nInjected: 1" } } end
      return { body = "fine" }
    end })
    for _, path in ipairs { "/error", "/status", "/header" } do
      local res = assert(http.request { url = bad:url() .. path })
      assert.are.equal(500, res.status, path)
      assert.is_nil(res.headers.injected)
    end
    local res = assert(http.request { url = bad:url() .. "/ok" })
    assert.are.equal(200, res.status)
    assert.are.equal("fine", res.body)
    bad:close()
  end)

  it("reports a port in use instead of raising", function()
    local other, err, code = hs.listen { port = srv:port(), handler = echo_handler }
    assert.is_nil(other)
    assert.are.equal("EADDRINUSE", code)
    assert.truthy(err:find("address already in use", 1, true), err)
    assert.has_error(function() hs.listen { port = 0 } end)
    assert.has_error(function() hs.listen { port = -1, handler = echo_handler } end)
  end)

  it("frees the port on close; in-flight handlers finish but their answers are discarded", function()
    local started, finished = false, false
    local slow = assert(listen { handler = function()
      started = true
      scimrun.sleep(0.3)
      finished = true
      return { body = "too late" }
    end })
    local port = slow:port()
    local client = {}
    scimrun.spawn(function()
      local res, _, kind = http.request { url = slow:url() .. "/" }
      client.res, client.kind = res, kind
      client.done = true
    end)
    local function wait_for(pred)
      local deadline = scimrun.now() + 5
      while not pred() and scimrun.now() < deadline do scimrun.sleep(0.01) end
    end
    wait_for(function() return started end)
    slow:close()
    local res, _, kind = http.request { url = slow:url() .. "/", connect_timeout = 2 }
    assert.is_nil(res)
    assert.are.equal("connect", kind)
    local again = assert(listen { port = port, handler = echo_handler })
    assert.are.equal(port, again:port())
    again:close()
    wait_for(function() return client.done and finished end)
    assert.is_true(finished)
    assert.is_nil(client.res)
    assert.are.equal("reset", client.kind)
    assert.are.same({ connections = 1, requests = 1, open = 0 }, slow:stats())
  end)

  it("frees every connection, exchange and reference when the process stops with a server open", function()
    local bin = os.getenv("SCIMRUN_BIN") or arg[-1] -- arg[-1]: the scimrun running this spec
    local child = tmpfile([=[
local ffi = require "ffi"
ffi.cdef "void sched_stop(void);"
local http = require "scimrun.http"
local srv = assert(require("scimrun.httpserver").listen { handler = function(req)
  if req.path == "/park" then scimrun.park() end
  return { body = "ok" }
end })
if assert(http.request { url = srv:url() .. "/a" }).status ~= 200 then os.exit(3) end
scimrun.spawn(function() http.request { url = srv:url() .. "/park" } end)
scimrun.sleep(0.2)
if srv:stats().requests ~= 2 then os.exit(4) end
ffi.C.sched_stop() -- as a second SIGINT would: the loop ends with the server still open
]=])
    local err = tmpfile()
    local p = io.popen(("SCIMRUN_STRICT_REFS=1 %s -l %s 2>%s; echo $?"):format(bin, child, err))
    local code = tonumber(p:read("*l"))
    p:close()
    local f = io.open(err)
    local stderr = f:read("*a")
    f:close()
    assert.are.equal(0, code, stderr)
    assert.falsy(stderr:find("references still held", 1, true), stderr)
  end)
end)
