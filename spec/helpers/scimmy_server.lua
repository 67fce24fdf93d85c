-- Starts spec/interop/server.js (scimmy + scimmy-routers, an independently written SCIM 2.0
-- service provider) for a spec. Needs `npm ci --prefix spec/interop` to have run.
--   local ss = require "helpers.scimmy_server"
--   if not ss.available() then pending("npm ci not run") return end
--   local srv = ss.start{ token = "t" }  -- srv.base_url, srv.url, srv.token, srv.dump(), srv.stats(),
--                                        -- srv.reset(), srv.revoke(), srv.new_token(), srv.stop()
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
  local function admin(method, path)
    local res = assert(http.request { method = method, url = srv.url .. path })
    assert(res.status < 300, ("%s %s answered %d: %s"):format(method, path, res.status, tostring(res.body)))
    return res
  end
  function srv.dump() return cjson.decode(admin("GET", "/_admin/dump").body) end
  -- Request counts (requests by "METHOD /Users|/Groups|/other", statuses, injected, rejected:
  -- refused for their token, by route) and the numbers of users and groups.
  function srv.stats() return cjson.decode(admin("GET", "/_admin/stats").body) end
  function srv.reset() admin("POST", "/_admin/reset") end
  -- Revokes the current token (later requests answer 401); srv.token keeps the dead value.
  function srv.revoke() admin("POST", "/_admin/revoke") end
  -- Issues a new token and makes it srv.token.
  function srv.new_token()
    srv.token = cjson.decode(admin("POST", "/_admin/token").body).token
    return srv.token
  end
  function srv.stop()
    if pid then os.execute("kill " .. pid .. " 2>/dev/null") end
  end
  return srv
end

return M
