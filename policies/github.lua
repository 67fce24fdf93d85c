-- GitHub SCIM (Enterprise Managed Users: https://api.github.com/scim/v2/enterprises/ENTERPRISE,
-- or organization SCIM: https://api.github.com/scim/v2/organizations/ORG).
-- Use: scimrun WORKFLOW --policy github. Everything not set here comes from policies/default.lua.
--
-- GitHub's SCIM endpoints are REST API endpoints and share its limits
-- (docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api):
--   primary:   5,000 requests per hour for a personal access token (15,000 for a GitHub App on
--              Enterprise Cloud); when used up, GitHub answers 403 (or 429) with
--              X-RateLimit-Remaining: 0 and X-RateLimit-Reset = the epoch second it refills.
--   secondary: at most 100 concurrent requests; at most 900 points per minute per endpoint
--              (a GET costs 1 point, a POST/PATCH/PUT/DELETE 5 -> 180 writes per minute, check);
--              answered with 403 or 429 and a message naming the "secondary rate limit".
--   advice:    honour retry-after; if x-ratelimit-remaining is 0 wait until x-ratelimit-reset;
--              otherwise wait at least one minute before retrying; make requests serially.

-- SCIM answers carry lower-cased header names in err.headers (see scimrun.scim.request).
local function header(err, name)
  local h = type(err) == "table" and err.headers
  if type(h) ~= "table" then return nil end
  return h[name:lower()] or h[name]
end

-- Full-jitter exponential backoff, with GitHub's one-minute floor for a rate-limit answer that
-- says neither when to come back (retry-after) nor that the hourly quota is used up (then the
-- executor waits for X-RateLimit-Reset by itself).
local function delay_with_floor(base, multiplier, max_delay)
  return function(retry, _, err)
    local computed = math.random() * math.min(max_delay, base * multiplier ^ (retry - 1))
    if type(err) == "table" and err.class == "rate_limited" and header(err, "Retry-After") == nil
        and tostring(header(err, "X-RateLimit-Remaining")) ~= "0" then
      return math.max(60, computed)
    end
    return computed
  end
end

return {
  extends = "default",
  description = "GitHub SCIM (REST API limits): 5,000 requests/hour, secondary limits, 403 as rate limit",

  -- max_elapsed leaves room for a few one-minute waits.
  profiles = {
    aggressive = { delay = delay_with_floor(0.2, 2, 10), max_elapsed = 600 },
    balanced = { delay = delay_with_floor(1, 2, 30), max_elapsed = 900 },
    conservative = { delay = delay_with_floor(2, 3, 60), max_elapsed = 900 },
  },

  classify = {
    -- Primary limit used up: 403 + X-RateLimit-Remaining: 0 (rate-limits-for-the-rest-api,
    -- "Exceeding the rate limit"). Retried after X-RateLimit-Reset, not reported as a bad token.
    { name = "github-primary-limit", status = { 403, 429 }, header = { name = "X-RateLimit-Remaining", value = "^0$" },
      class = "rate_limited",
      suggest = "GitHub's hourly request quota is used up; the run waits for X-RateLimit-Reset" },
    -- Secondary limit: 403 with "You have exceeded a secondary rate limit" (same page).
    { name = "github-secondary-limit", status = 403, detail = "[Ss]econdary rate limit", class = "rate_limited",
      suggest = "GitHub's secondary rate limit: lower rate_limit.rps or bulkhead.max_in_flight" },
    -- Any other 403 is a permission problem.
    { name = "github-auth", status = { 401, 403 }, class = "auth",
      suggest = "GitHub rejected the token: SCIM needs a personal access token (classic) with the "
        .. "scim:enterprise scope (Enterprise Managed Users) or admin:org (organization SCIM); check SCIM_TOKEN" },
  },

  -- 1.35 requests/s = 4,860 per hour, under the 5,000/hour primary limit of a personal access
  -- token (rate-limits-for-the-rest-api, "Primary rate limit for authenticated users"); a
  -- GitHub App token on Enterprise Cloud may use up to 15,000/hour: rps = 4.
  -- burst 20 stays far below 180 writes/minute per endpoint (secondary limit, same page, check).
  rate_limit = { rps = 1.35, burst = 20, adaptive = true },

  -- GitHub allows at most 100 concurrent requests (secondary limit) and advises making requests
  -- serially (docs.github.com/en/rest/using-the-rest-api/best-practices-for-using-the-rest-api);
  -- two in flight already reach 1.35/s at normal latency.
  bulkhead = { max_in_flight = 2 },

  -- No per-request member cap found in GitHub's SCIM pages we could read (docs.github.com/en/
  -- enterprise-cloud@latest/admin/managing-iam/provisioning-user-accounts-with-scim/
  -- provisioning-users-and-groups-with-scim-using-the-rest-api, check). 100 keeps each PATCH
  -- small; a 413 halves it automatically.
  scim = { max_members_per_patch = 100 },
}
