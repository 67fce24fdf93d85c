-- The independent SCIM servers every interop spec runs against (not a spec itself: busted runs
-- only *_spec.lua). Each entry: name, helper (helpers.scimmy_server / helpers.betterauth_server:
-- available(), start(opts) -> srv with base_url, token, dump(), stats(), reset(), revoke(),
-- new_token(), stop()), and what the server is like, as its /ServiceProviderConfig advertises
-- it (`discovered`: what the client's discovery must find) or as its documentation and source
-- say (the other fields). The differences are written up in docs/examples.md ("Interop: two
-- independent SCIM servers").
--   for _, S in ipairs(require "interop.servers") do describe("... against " .. S.name, function() ... end) end
-- Each entry also has:
--   S.unavailable() -> nil, or why the server cannot run here (for pending())
--   S.start(token) -> srv: the helper's start with S.start_opts and that token (better-auth
--     issues its own: srv.token is the one to use)
local servers = {
  {
    name = "scimmy",
    helper = require "helpers.scimmy_server",
    start_opts = { max_results = 50 },
    discovered = { patch = true, etag = true, max_results = 50 },
    -- every RFC 7644 filter operator (sw, co, ...), not only eq
    filter_operators = "all",
    -- a user needs nothing but a userName
    email_required = false,
    -- email values are kept as sent
    lowercases_emails = false,
    -- a PATCH "add" of a member a group already holds appends it again
    duplicate_member_add = true,
    -- DELETE forgets the user
    keeps_deleted_identity = false,
  },
  {
    name = "better-auth",
    helper = require "helpers.betterauth_server",
    start_opts = {},
    discovered = { patch = true, etag = false, max_results = 100 },
    -- `attr eq "value"` (joined by `and`) on id, userName, externalId, emails.value
    -- (Users) and id, displayName, externalId (Groups); anything else answers 400 invalidFilter
    filter_operators = "eq",
    -- a userName that is not an email address needs an email: the user becomes a Better Auth
    -- user with that email (unique across all users)
    email_required = true,
    -- email values are stored and returned lower-cased (userName keeps its case)
    lowercases_emails = true,
    duplicate_member_add = false,
    -- DELETE keeps Better Auth's own user row and its email: the same person is provisioned
    -- again only with the externalId they had (else 409 uniqueness on the email)
    keeps_deleted_identity = true,
  },
}

for _, S in ipairs(servers) do
  function S.unavailable()
    local ok, why = S.helper.available()
    if not ok then return why or "npm ci --prefix spec/interop not run" end
  end
  function S.start(token)
    local opts = { token = token }
    for k, v in pairs(S.start_opts) do opts[k] = v end
    return S.helper.start(opts)
  end
end

return servers
