-- Starts spec/interop/betterauth_server.js (Better Auth + @better-auth/scim on its memory
-- adapter, a second independently written SCIM 2.0 service provider) for a spec. Needs
-- `npm ci --prefix spec/interop` to have run. Same shape as helpers.scimmy_server:
--   local bs = require "helpers.betterauth_server"
--   local ok, why = bs.available(); if not ok then pending(why) return end
--   local srv = bs.start()  -- srv.base_url, srv.url, srv.token (issued by the server at start),
--                           -- srv.dump(), srv.stats(), srv.reset(), srv.revoke(), srv.new_token(),
--                           -- srv.stop() (helpers.node_server describes them)
-- The token cannot be chosen: the plugin generates it (opts.token is ignored).
local node_server = require "helpers.node_server"
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
  return node_server.start {
    name = M.name, tag = "betterauth", scim_path = "/api/auth/scim/v2", timeout = 30,
    command = function(port_file)
      return ("node spec/interop/betterauth_server.js --port 0 --port-file %s --token-file %s%s")
        :format(proc.sh_quote(port_file), proc.sh_quote(token_file), extra)
    end,
    hint = "better-auth interop server did not start (is node >= 20 installed? did `npm ci --prefix spec/interop` "
      .. "run?)",
    -- written by the server before it listens
    token = function(srv)
      local token = proc.read_all(token_file):match("%S+")
      os.remove(token_file)
      if not token then srv.stop() end
      return assert(token, "better-auth interop server wrote no token")
    end,
  }
end

return M
