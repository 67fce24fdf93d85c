-- What the node interop servers (helpers.scimmy_server, helpers.betterauth_server) share:
-- starting the node process on a free port and the srv table specs use, whose calls go to the
-- server's /_admin endpoints.
--   node_server.start{ name, tag, command = function(port_file) -> shell command, hint,
--                      timeout, token, scim_path = "/scim/v2" } -> srv
--     srv.name, srv.url (http://127.0.0.1:PORT), srv.base_url (srv.url .. scim_path), srv.pid,
--     srv.token (o.token, or a function(srv) -> the token, called once the server listens);
--     srv.dump(), srv.stats() (requests by "METHOD /Users|/Groups|/other", statuses, injected,
--     rejected: refused for their token, by route; and the numbers of users and groups),
--     srv.reset(), srv.revoke() (later requests answer 401; srv.token keeps the dead value),
--     srv.new_token() (issues a new token and makes it srv.token), srv.stop()
-- Raises o.hint when the server writes no port within o.timeout seconds.
local http = require "scimrun.http"
local cjson = require "cjson"
local proc = require "helpers.proc"

local M = {}

function M.start(o)
  local port, pid = proc.start_listening(o.tag, o.command, o.hint, o.timeout)
  local srv = { name = o.name, url = "http://127.0.0.1:" .. port, pid = pid }
  srv.base_url = srv.url .. o.scim_path
  local function admin(method, path)
    local res = assert(http.request { method = method, url = srv.url .. path })
    assert(res.status < 300, ("%s %s answered %d: %s"):format(method, path, res.status, tostring(res.body)))
    return res
  end
  function srv.dump() return cjson.decode(admin("GET", "/_admin/dump").body) end
  function srv.stats() return cjson.decode(admin("GET", "/_admin/stats").body) end
  function srv.reset() admin("POST", "/_admin/reset") end
  function srv.revoke() admin("POST", "/_admin/revoke") end
  function srv.new_token()
    srv.token = cjson.decode(admin("POST", "/_admin/token").body).token
    return srv.token
  end
  function srv.stop()
    if pid then os.execute("kill " .. pid .. " 2>/dev/null") end
  end
  srv.token = o.token
  if type(o.token) == "function" then srv.token = o.token(srv) end
  return srv
end

return M
