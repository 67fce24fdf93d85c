-- Slack SCIM API (https://api.slack.com/scim/v2/). Use: scimrun WORKFLOW --policy slack
-- Everything not set here comes from policies/default.lua.
--
-- Slack's limits apply to the whole organisation, across every SCIM app, not per token
-- (docs.slack.dev/reference/scim-api/rate-limits). They are per minute, in two tiers:
--   org-wide sets:  writes (POST, PUT, PATCH, DELETE) 600/min, burst 180; reads (GET) 1000/min, burst 1000
--   per endpoint:   POST /Users 180/min burst 20; PUT|PATCH /Users/<id> 180/min burst 20;
--                   DELETE /Users/<id> 180/min burst 20; GET /Users/<id> 300/min;
--                   POST /Groups 180/min burst 20; PUT|PATCH /Groups/<id> 180/min burst 80
-- A 429 always carries Retry-After, which scimrun honours (never retrying earlier) and which
-- also slows the token bucket down (rate_limit.adaptive).
return {
  extends = "default",
  description = "Slack SCIM API: org-wide per-minute limits, one bucket for reads and writes",

  -- scimrun has one token bucket per target for all requests, so rps is set to keep the
  -- tightest documented limit safe for the mix a provisioning run sends: onboarding sends
  -- about one read and two writes per user (search, POST /Users, PATCH /Groups), so at 8 rps
  -- POST /Users runs at ~2.7/s = 160/min (limit 180/min, docs.slack.dev/reference/scim-api/rate-limits),
  -- writes at ~5.3/s = 320/min (limit 600/min) and reads at ~2.7/s (limit 1000/min).
  -- burst 20 = the smallest per-endpoint burst on the same page (POST /Users, PATCH /Users).
  -- Raise rps only if your workflow sends mostly reads; other SCIM apps in the org share the limit.
  rate_limit = { rps = 8, burst = 20, adaptive = true },

  -- Slack publishes no concurrency limit; a few requests in flight already reach 8 rps
  -- (typical SCIM latency 200-500 ms), more only queue behind the bucket.
  bulkhead = { max_in_flight = 8 },

  -- Members per group PATCH: Slack's rate-limit page counts a PATCH /Groups/<id> as one write
  -- whatever its size, so big chunks save budget; no per-request member cap is given on the pages
  -- we could read (docs.slack.dev/reference/scim-api/scim-api-2.0, check). 500 is a conservative
  -- chunk; a 413 answer halves the chunk automatically.
  scim = { max_members_per_patch = 500 },

  classify = {
    -- A 401/403 from Slack means the token is wrong or lost its rights: the SCIM API needs an OAuth
    -- token with the admin scope, and the account that made it must stay an Admin or Owner
    -- (api.slack.com/scim, "Accessing the SCIM API"). Same class as the default rule, better advice.
    { name = "slack-token", status = { 401, 403 }, class = "auth",
      suggest = "Slack needs an OAuth token with the admin scope whose creator is still an Admin or Owner; "
        .. "check SCIM_TOKEN" },
  },
}
