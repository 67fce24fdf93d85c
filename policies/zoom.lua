-- Zoom SCIM 2.0 (https://api.zoom.us/scim2). Use: scimrun WORKFLOW --policy zoom
-- Everything not set here comes from policies/default.lua.
--
-- Zoom's SCIM2 reference states "Each SCIM2 API endpoint has a rate limit of 1 request/second
-- per account" (marketplace.zoom.us/docs/api-reference/scim-api). The newer reference labels the
-- SCIM2 user endpoints "Light" (developers.zoom.us/docs/api/scim2), and Zoom's rate-limit page
-- gives Light requests 30/s on Pro and 80/s on Business and above, per account, shared by every
-- app on the account (developers.zoom.us/docs/api/rate-limits, check which applies to yours).
-- The numbers below follow the stricter statement; see docs/examples.md for raising them.
-- Limits are per account: other apps using the same Zoom account draw on the same allowance.
local DAILY_LIMIT_HINT = "Zoom answered 429: lower rate_limit.rps in policies/zoom.lua, or wait for the "
  .. "daily allowance to reset if X-RateLimit-Type says Daily-limit"

return {
  extends = "default",
  description = "Zoom SCIM2: 1 request/s per endpoint per account, SSO required",

  -- 1 request/s in total keeps every endpoint at or under 1/s (marketplace.zoom.us/docs/
  -- api-reference/scim-api). On a Business account whose SCIM2 endpoints count as Light, up to
  -- 80/s is documented (developers.zoom.us/docs/api/rate-limits, check): try rps = 20.
  rate_limit = { rps = 1, burst = 1, adaptive = true },

  -- Zoom also limits concurrent operations on a single resource (developers.zoom.us/docs/api/
  -- rate-limits, "Rate limit details"); two in flight are plenty at 1 request/s.
  bulkhead = { max_in_flight = 2 },

  -- Zoom's group member API takes at most 30 members per request (developers.zoom.us/docs/api/
  -- users/#tag/groups "Add group members", check that SCIM2 PATCH has the same cap); a 413
  -- halves the chunk automatically.
  scim = { max_members_per_patch = 30 },

  classify = {
    -- A 429 names its quota in X-RateLimit-Type (QPS or Daily-limit) and, for the daily one,
    -- says in Retry-After when it resets (developers.zoom.us/docs/api/rate-limits, check). A
    -- Retry-After longer than the profile's max_elapsed fails the item at once, with this advice.
    { name = "zoom-daily-limit", status = 429, header = { name = "X-RateLimit-Type", value = "^[Dd]aily" },
      class = "rate_limited", suggest = DAILY_LIMIT_HINT },
    -- SCIM2 needs an account with Single Sign-On and an approved vanity URL (developers.zoom.us/
    -- docs/api/scim2, "Prerequisites"); otherwise 400 "Account has not enabled Single Sign-On".
    { name = "zoom-sso-required", status = 400, detail = "Single Sign%-On", class = "permanent",
      suggest = "enable Single Sign-On (and an approved vanity URL) on the Zoom account, then replay" },
    { name = "zoom-auth", status = { 401, 403 }, class = "auth",
      suggest = "Zoom rejected the token: use an OAuth token of an app with the scim2 scope, made by an "
        .. "Owner or Admin, and set SCIM_TOKEN" },
  },
}
