-- Starts spec/interop/server.js (scimmy + scimmy-routers, an independently written SCIM 2.0
-- service provider) for a spec. Needs `npm ci --prefix spec/interop` to have run.
--   local ss = require "helpers.scimmy_server"
--   if not ss.available() then pending("npm ci not run") return end
--   local srv = ss.start{ token = "t" }  -- srv.base_url, srv.url, srv.token, srv.dump(), srv.reset(), srv.stop()
-- helpers.betterauth_server starts the second interop server with the same interface.
local http = require "scimrun.http"
local cjson = require "cjson"
local proc = require "helpers.proc"

local M = { name = "scimmy" }

function M.available()
  local f = io.open("spec/interop/node_modules/scimmy-routers/package.json")
  if f then f:close() return true end
  return false
end

function M.start(opts)
  opts = opts or {}
  local token = opts.token or "interop-token"
  local port, pid = proc.start_listening("scimmy", function(port_file)
    return ("SCIM_TOKEN=%s node spec/interop/server.js --port 0 --port-file %s --max-results %d")
      :format(proc.sh_quote(token), proc.sh_quote(port_file), opts.max_results or 50)
  end, "interop server did not start (is node installed? did `npm ci --prefix spec/interop` run?)")
  local srv = { name = M.name, url = "http://127.0.0.1:" .. port, pid = pid, token = token }
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
