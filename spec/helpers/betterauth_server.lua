-- Starts spec/interop/betterauth_server.js (Better Auth + @better-auth/scim on its memory
-- adapter, a second independently written SCIM 2.0 service provider) for a spec. Needs
-- `npm ci --prefix spec/interop` to have run. Same shape as helpers.scimmy_server:
--   local bs = require "helpers.betterauth_server"
--   local ok, why = bs.available(); if not ok then pending(why) return end
--   local srv = bs.start()  -- srv.base_url, srv.url, srv.token (issued by the server at start),
--                           -- srv.dump(), srv.stats(), srv.reset(), srv.revoke(), srv.new_token(),
--                           -- srv.stop()
-- The token cannot be chosen: the plugin generates it (opts.token is ignored).
local http = require "scimrun.http"
local cjson = require "cjson"
local proc = require "helpers.proc"

local M = { name = "better-auth" }

-- true, or false and why not: the packages must be installed and node must be 20 or newer
-- (what better-auth's dependencies declare; kysely: >= 20).
function M.available()
  local f = io.open("spec/interop/node_modules/@better-auth/scim/package.json")
  if not f then return false, "npm ci --prefix spec/interop not run" end
  f:close()
  local p = io.popen("node --version 2>/dev/null")
  local v = p and p:read("*l") or ""
  if p then p:close() end
  local major = tonumber(v:match("^v(%d+)"))
  if not major or major < 20 then
    return false, ("better-auth needs node >= 20 (found %s)"):format(v ~= "" and v or "no node")
  end
  return true
end

function M.start(opts)
  opts = opts or {}
  local dir = os.getenv("SCIMRUN_TEST_TMP") or "/tmp"
  local token_file = ("%s/betterauth-%d-%d.token"):format(dir, os.time(), math.random(1, 1e9))
  local extra = opts.faults and (" --faults " .. proc.sh_quote(opts.faults)) or ""
  local port, pid = proc.start_listening("betterauth", function(port_file)
    return ("node spec/interop/betterauth_server.js --port 0 --port-file %s --token-file %s%s")
      :format(proc.sh_quote(port_file), proc.sh_quote(token_file), extra)
  end, "better-auth interop server did not start (is node >= 20 installed? did `npm ci --prefix spec/interop` run?)",
    30)
  local token = proc.read_all(token_file):match("%S+")
  os.remove(token_file)
  assert(token, "better-auth interop server wrote no token")
  local srv = { name = M.name, url = "http://127.0.0.1:" .. port, pid = pid, token = token }
  srv.base_url = srv.url .. "/api/auth/scim/v2"
  local function admin(method, path)
    local res = assert(http.request { method = method, url = srv.url .. path })
    assert(res.status < 300, ("%s %s answered %d: %s"):format(method, path, res.status, tostring(res.body)))
    return res
  end
  function srv.dump() return cjson.decode(admin("GET", "/_admin/dump").body) end
  -- Request counts, as helpers.scimmy_server's srv.stats().
  function srv.stats() return cjson.decode(admin("GET", "/_admin/stats").body) end
  function srv.reset() admin("POST", "/_admin/reset") end
  -- Revokes the current token; srv.token keeps the dead value.
  function srv.revoke() admin("POST", "/_admin/revoke") end
  -- Issues a new token for the same connection and makes it srv.token.
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
