-- A loopback SCIM provider in the spec process that echoes the bearer token back: in the SCIM
-- error's scimType and detail, and in a redirect to ...?access_token=<token>. Lookups find
-- nothing, so every row goes on to a create, which is redirected, then refused.
--   local srv = require("helpers.echo_server").start(); srv:port(); ...; srv:close()
local cjson = require "cjson"
local hs = require "scimrun.httpserver"

local M = {}

-- Answers every request as an echoing, unhelpful provider would.
function M.start()
  return assert(hs.listen { host = "127.0.0.1", port = 0, handler = function(req)
    local auth = (req.headers or {})["authorization"] or (req.headers or {})["Authorization"] or ""
    local token = auth:match("^Bearer (.+)$") or "?"
    if (req.path or ""):find("/redirected", 1, true) then
      return { status = 400, headers = { ["Content-Type"] = "application/scim+json" }, body = cjson.encode {
        schemas = { "urn:ietf:params:scim:api:messages:2.0:Error" }, status = "400", scimType = token,
        detail = "token " .. token .. " is not allowed here (Authorization: " .. auth .. ")" } }
    end
    if req.method == "POST" then -- a create: sent elsewhere with the token in the query
      return { status = 307, headers = { Location = "/scim/v2/redirected/Users?access_token=" .. token }, body = "" }
    end
    -- lookups find nothing, so every row goes on to a create
    return { status = 200, headers = { ["Content-Type"] = "application/scim+json" }, body = cjson.encode {
      schemas = { "urn:ietf:params:scim:api:messages:2.0:ListResponse" }, totalResults = 0, Resources = {} } }
  end })
end

return M
