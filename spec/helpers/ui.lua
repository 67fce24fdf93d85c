-- Starts `scimrun ui` for a spec, as a separate process, and talks to it.
--   local ui = require "helpers.ui"
--   local c = ui.start("--state FILE --read-only", "SCIM_TOKEN=...")  -- c.base, c.url (with #token=), c.token, c.pid
--   local res = c:get("/api/runs")                 -- with the token; res.doc is the decoded JSON body
--   local res = c:post("/api/dlq/drop", { ids = { 1 }, reason = "x" }, { headers = { Origin = "..." } })
--   c:request{ method, path, headers, body, token = false }   -- token = false: sent without one
--   c:stop()                                        -- SIGTERM, waits until it is gone
--   ui.cli_json("runs list --json --state S")      -- the CLI's --json output, decoded (exit 0 asserted)
--   ui.same(api_doc, cli_doc, "runs")               -- equal, numbers within a millisecond
local cjson = require "cjson"
local http = require "scimrun.http"
local proc = require "helpers.proc"

local M = {}

-- The CLI's --json output of `scimrun ARGS`, decoded; the command must exit 0.
function M.cli_json(args)
  local code, out, err = proc.run(args)
  assert(code == 0, ("%s exited %s: %s%s"):format(args, tostring(code), out, err))
  return cjson.decode(out)
end

-- a and b equal where a has a value, numbers within a millisecond (the CLI writes 14
-- significant digits, the API all of them); path names the place in an assertion's message
function M.same(a, b, path)
  if type(a) == "number" and type(b) == "number" then
    assert(math.abs(a - b) < 1e-3, path .. ": " .. a .. " ~= " .. b)
  elseif type(a) == "table" and type(b) == "table" then
    for k, v in pairs(a) do M.same(v, b[k], path .. "." .. tostring(k)) end
  else
    assert(a == b, path .. ": " .. tostring(a) .. " ~= " .. tostring(b))
  end
end

local C = {}
C.__index = C

function M.start(args, env, timeout)
  local dir = os.getenv("SCIMRUN_TEST_TMP") or "/tmp"
  os.execute("mkdir -p " .. proc.sh_quote(dir))
  local log = os.tmpname()
  local pid = proc.spawn("ui " .. args, env, log)
  local deadline = scimrun.now() + (timeout or 15)
  local text = ""
  while scimrun.now() < deadline do
    text = proc.read_all(log)
    if text:find("Stop with Ctrl%-C") then break end
    if not proc.alive(pid) then break end
    scimrun.sleep(0.05)
  end
  local url = text:match("open:%s+(http://%S+)")
  if not url then
    os.execute("kill " .. pid .. " 2>/dev/null")
    error("scimrun ui " .. args .. " did not start:\n" .. text)
  end
  local base = url:match("^(http://[^/]+)")
  return setmetatable({ pid = pid, log = log, url = url, base = base, token = url:match("#token=([%w]+)$"),
    port = tonumber(base:match(":(%d+)$")), output = text }, C)
end

function C:request(o)
  local headers = {}
  for k, v in pairs(o.headers or {}) do headers[k] = v end
  local tok = o.token
  if tok == nil then tok = self.token end
  if tok then headers.Authorization = "Bearer " .. tok end
  local body = o.body
  if type(body) == "table" then
    body = cjson.encode(body)
    headers["Content-Type"] = headers["Content-Type"] or "application/json"
  end
  local res, err = http.request { method = o.method or "GET", url = self.base .. o.path, headers = headers,
                                  body = body, timeout = o.timeout or 60 }
  assert(res, err)
  local ok, doc = pcall(cjson.decode, res.body)
  res.doc = ok and doc or nil
  return res
end

function C:get(path, o)
  o = o or {}
  o.path, o.method = path, "GET"
  return self:request(o)
end

function C:post(path, body, o)
  o = o or {}
  o.path, o.method, o.body = path, "POST", body
  return self:request(o)
end

function C:stop()
  os.execute("kill -TERM " .. self.pid .. " 2>/dev/null")
  proc.wait_gone(self.pid, 10)
  self.output = proc.read_all(self.log)
  os.remove(self.log)
end

return M
