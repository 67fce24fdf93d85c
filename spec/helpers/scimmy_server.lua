-- Starts spec/interop/server.js (scimmy + scimmy-routers, an independently written SCIM 2.0
-- service provider) for a spec. Needs `npm ci --prefix spec/interop` to have run.
--   local ss = require "helpers.scimmy_server"
--   if not ss.available() then pending("npm ci not run") return end
--   local srv = ss.start{ token = "t" }  -- srv.base_url, srv.url, srv:dump(), srv:reset(), srv:stop()
local http = require "scimrun.http"
local cjson = require "cjson"

local M = {}

function M.available()
  local f = io.open("spec/interop/node_modules/scimmy-routers/package.json")
  if f then f:close() return true end
  return false
end

local function sh_quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

function M.start(opts)
  opts = opts or {}
  local dir = os.getenv("SCIMRUN_TEST_TMP") or "/tmp"
  os.execute("mkdir -p " .. sh_quote(dir))
  local port_file = ("%s/scimmy-%d-%d.port"):format(dir, os.time(), math.random(1, 1e9))
  local pid_file = port_file .. ".pid"
  local cmd = ("SCIM_TOKEN=%s node spec/interop/server.js --port 0 --port-file %s --max-results %d "
    .. ">/dev/null 2>&1 & echo $! > %s"):format(sh_quote(opts.token or "interop-token"), sh_quote(port_file),
    opts.max_results or 50, sh_quote(pid_file))
  os.execute(cmd)
  local deadline = scimrun.now() + 15
  local port
  while scimrun.now() < deadline do
    local f = io.open(port_file)
    if f then port = f:read("*l"); f:close() end
    if port then break end
    scimrun.sleep(0.05)
  end
  local pf = io.open(pid_file)
  local pid = pf and pf:read("*l")
  if pf then pf:close() end
  os.remove(pid_file)
  os.remove(port_file)
  assert(port, "interop server did not start (is node installed? did `npm ci --prefix spec/interop` run?)")
  local srv = { url = "http://127.0.0.1:" .. port, pid = pid }
  srv.base_url = srv.url .. "/scim/v2"
  function srv.dump()
    local res = assert(http.request { method = "GET", url = srv.url .. "/_admin/dump" })
    return cjson.decode(res.body)
  end
  function srv.reset()
    assert(http.request { method = "POST", url = srv.url .. "/_admin/reset" })
  end
  function srv.stop()
    if pid then os.execute("kill " .. pid .. " 2>/dev/null") end
  end
  return srv
end

return M
