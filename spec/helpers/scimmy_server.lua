-- Starts spec/interop/server.js (scimmy + scimmy-routers, an independently written SCIM 2.0
-- service provider) for a spec. Needs `npm ci --prefix spec/interop` to have run.
--   local ss = require "helpers.scimmy_server"
--   if not ss.available() then pending("npm ci not run") return end
--   local srv = ss.start{ token = "t" }  -- srv.base_url, srv.url, srv.token, srv.dump(), srv.stats(),
--                                        -- srv.reset(), srv.revoke(), srv.new_token(), srv.stop()
--                                        -- (helpers.node_server describes them)
-- helpers.betterauth_server starts the second interop server with the same interface.
local node_server = require "helpers.node_server"
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
  return node_server.start {
    name = M.name, tag = "scimmy", token = token, scim_path = "/scim/v2",
    command = function(port_file)
      return ("SCIM_TOKEN=%s node spec/interop/server.js --port 0 --port-file %s --max-results %d")
        :format(proc.sh_quote(token), proc.sh_quote(port_file), opts.max_results or 50)
    end,
    hint = "interop server did not start (is node installed? did `npm ci --prefix spec/interop` run?)",
  }
end

return M
