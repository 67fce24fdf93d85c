-- Atlassian Cloud user provisioning (SCIM 2.0: https://api.atlassian.com/scim/directory/DIRECTORY_ID).
-- Use: scimrun WORKFLOW --policy atlassian. Everything not set here comes from policies/default.lua.
--
-- Atlassian documents that every admin API request is rate limited and that a client over the
-- limit gets 429 Too Many Requests and must wait for the counter to reset; the response headers
-- say when (developer.atlassian.com/cloud/admin/organization/rest/intro, "Rate limits"). The
-- user provisioning reference (developer.atlassian.com/cloud/admin/user-provisioning/rest/intro)
-- publishes no number, so the rates below are a conservative starting point (check): scimrun
-- honours Retry-After and learns a lower rate from the 429s (rate_limit.adaptive), so a lower real limit
-- costs speed, not failures.
--
-- Quirks from the same reference ("Limitations"):
--   * a user can only be created with an email address on a domain verified in the organisation;
--   * DELETE /Users/{id} does not delete: it deactivates, like PATCH active=false. The offboard
--     example's grace_days therefore only deactivates on Atlassian;
--   * a deactivated user answers 404 to later requests until reactivated (the client treats a
--     404 after deactivation as "already gone").
return {
  extends = "default",
  description = "Atlassian user provisioning: conservative rate, verified-domain hint",

  -- 5 requests/s, bursts of 10: not published (see above, check). Raise it if your organisation
  -- never sees a 429 (the run summary shows rate_limited counts).
  rate_limit = { rps = 5, burst = 10, adaptive = true },

  -- No concurrency limit is published; a handful in flight is enough for 5 requests/s.
  bulkhead = { max_in_flight = 4 },

  -- No per-request member cap is published (check); 100 per PATCH, and a 413 halves it.
  scim = { max_members_per_patch = 100 },

  classify = {
    -- 400 on a user create: most often the email's domain is not verified (reference,
    -- "Limitations"). Still permanent; the suggestion says what to fix.
    { name = "atlassian-unverified-domain", status = 400, op = "users.create", class = "permanent",
      suggest = "Atlassian creates a user only with an email on a verified domain: verify the domain in "
        .. "admin.atlassian.com or fix the address, then: scimrun dlq replay ID" },
    { name = "atlassian-auth", status = { 401, 403 }, class = "auth",
      suggest = "Atlassian rejected the directory API key: regenerate it in admin.atlassian.com "
        .. "(Security > Identity providers > your directory > Regenerate API key) and set SCIM_TOKEN" },
  },
}
