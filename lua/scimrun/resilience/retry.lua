-- The one retry layer: every outbound operation goes through an executor, which applies the
-- policy's profile (attempts, backoff, deadline), the target's circuit breaker, rate limiter
-- and bulkhead, and the run's retry budget. Nothing else in scimrun retries, so the attempts an
-- operation makes never multiply across layers.
--
-- local ex = retry.executor{ policy = pol, seed = n, log = scimrun.log|false, events = stream,
--                            on_event = fn(ev) (a subscriber to that stream),
--                            state = { load = fn(key) -> tbl|nil, save = fn(key, tbl|nil) } }
-- ex:run(op, target, attempt_fn, opts) -> result | nil, err
--   attempt_fn(attempt_no) -> result | nil, err (error contract table). Success is any call that
--   does not return (nil, err); a success without a value returns true.
--   opts: profile (name or table), deadline (absolute scimrun.now() time; the running step's
--   timeouts.step deadline applies too), key (checkpoint key for the backoff deadline; by
--   default the running step's, from scimrun.ctx().step), before_retry = fn(err, attempt) -> result|nil (called before
--   re-sending when the outcome of the failed attempt is unknown: timeout, reset or 5xx),
--   on_backoff = fn(sleeping, seconds) (called with true and the delay before sleeping out a
--                backoff, false after),
--   credential = where the target's token comes from (the environment variable's name, as
--   scim.connect's token_env, or a description such as "token_file PATH"), named in auth errors.
--   err gains class, rule, suggest, attempts, trail, retry_after and, when the retry budget
--   ran out, budget_exhausted = true.
-- Auth failures stop the target: the first error classified `auth` (401/403: the token expired,
-- was revoked or lacks a scope) marks the target stopped for this executor's life. No request
-- is sent to it any more; calls already waiting (breaker, bulkhead, rate limit, backoff) and
-- new ones fail at once with class auth and auth_stop = true, and one `auth_stop` event is
-- emitted (the workflow engine stops dispatching items on it). The error names the credential.
-- ex:set_policy(pol)  ex:counters()  ex:last_trail()
-- retry.decide{...} -> decision   the pure retry decision, shared with `scimrun policy simulate`
-- retry.server_delay(err, wall, class) -> seconds, source   (Retry-After and RateLimit headers)
local R = require "scimrun.resilience"
local policy = require "scimrun.resilience.policy"
local classify = require "scimrun.resilience.classify"
local bulkhead = require "scimrun.resilience.bulkhead"
local events = require "scimrun.engine.events"
local httpdate = require "scimrun.httpdate"

local M = {}

-- Parses an HTTP-date (the three forms of RFC 9110 5.6.7) into epoch seconds, or nil:
-- libcurl's curl_getdate (scimrun.httpdate), the one HTTP-date parser of scimrun.
function M.parse_http_date(s)
  if type(s) ~= "string" then return nil end
  return httpdate.parse(s)
end

-- A reset header is either a delta in seconds or an epoch time (GitHub-style X-RateLimit-Reset).
local function reset_delay(v, wall)
  local n = tonumber(v)
  if not n or n < 0 then return nil end
  if n > 1e9 then n = n - wall end
  return math.max(n, 0)
end

-- How long the server asked us to wait: err.retry_after (already parsed), Retry-After (seconds
-- or HTTP-date) for any retryable error, RateLimit-Reset / X-RateLimit-Reset for rate_limited.
function M.server_delay(err, wall, class)
  if type(err) ~= "table" then return nil end
  if type(err.retry_after) == "number" and err.retry_after >= 0 then return err.retry_after, "retry_after" end
  local ra = classify.header_value(err.headers, "Retry-After")
  if ra ~= nil then
    local n = tonumber(ra)
    if n and n >= 0 then return n, "Retry-After" end
    local at = M.parse_http_date(tostring(ra))
    if at then return math.max(at - wall, 0), "Retry-After (HTTP-date)" end
  end
  if class == "rate_limited" then
    for _, h in ipairs({ "RateLimit-Reset", "X-RateLimit-Reset" }) do
      local v = classify.header_value(err.headers, h)
      local n = v ~= nil and reset_delay(v, wall)
      if n then return n, h end
    end
  end
  return nil
end

-- What a server's rate-limit headers say: requests left and seconds until the window resets,
-- from RateLimit-Remaining/-Reset, X-RateLimit-Remaining/-Reset or the structured
-- `RateLimit: "policy";r=N;t=S` of draft-ietf-httpapi-ratelimit-headers. nil when absent or
-- malformed; a reset over a day is ignored as absurd. Epoch resets (seconds or ms) are turned
-- into deltas against `wall`.
function M.server_quota(headers, wall)
  if type(headers) ~= "table" then return nil end
  local remaining, reset
  local structured = classify.header_value(headers, "RateLimit")
  if structured then
    local r, t = tostring(structured):match(";%s*r=(%d+)"), tostring(structured):match(";%s*t=(%d+)")
    remaining, reset = tonumber(r), tonumber(t)
  end
  if not remaining then
    for _, prefix in ipairs({ "RateLimit-", "X-RateLimit-" }) do
      local r = tonumber(classify.header_value(headers, prefix .. "Remaining") or "")
      local t = r and classify.header_value(headers, prefix .. "Reset")
      if r and t then
        local n = tonumber(t)
        if n and n > 1e12 then n = n / 1000 end -- epoch milliseconds
        remaining, reset = r, n and reset_delay(n, wall or 0)
        break
      end
    end
  end
  if not remaining or not reset or remaining < 0 or reset > 86400 then return nil end
  return remaining, reset
end

local function fmt(s) return ("%.3fs"):format(s) end

local MIN_PACED_DELAY = 0.05 -- a shorter server delay is treated as an ordinary retry
local MAX_PACED = 100 -- paced retries of one call before they count as ordinary ones

local backoff_cfgs = setmetatable({}, { __mode = "k" })

local function backoff_cfg(p)
  local c = backoff_cfgs[p]
  if not c then
    c = { backoff = p.backoff, base = p.base, multiplier = p.multiplier, min_delay = p.min_delay,
          max_delay = p.max_delay, jitter = p.jitter }
    backoff_cfgs[p] = c
  end
  return c
end

-- The retry decision after a failed attempt. Pure apart from the rng, the budget (consumed on
-- a retry) and an operator `delay` function. d = { profile, class, err, attempt (attempts made,
-- paced ones not counted), paced (paced retries so far), time_left (seconds before max_elapsed
-- / the deadline), prev_delay, rng, budget, wall }.
-- Returns { retry = bool, delay = seconds, why = text, reason = "class"|"attempts"|"deadline"|
-- "retry_after"|"budget"|nil, server_delay = seconds|nil, budget_exhausted = bool|nil,
-- paced = true when a 429's server delay paces the retry }.
function M.decide(d)
  local p, class = d.profile, d.class
  if not classify.retryable(class) then
    return { retry = false, reason = "class", why = class .. " errors are never retried" }
  end
  -- A 429 that says when to come back is the server pacing the client, not a failure: the
  -- request waits as told and the retry costs neither an attempt nor the retry budget. Only
  -- the deadline bounds it (and MAX_PACED, against a server that always says "now").
  local sd, source = M.server_delay(d.err, d.wall or 0, class)
  if class == "rate_limited" and sd and sd >= MIN_PACED_DELAY and (d.paced or 0) < MAX_PACED then
    if d.time_left and sd > d.time_left then
      return { retry = false, reason = "retry_after", server_delay = sd,
               why = ("server asked to wait %s (%s), more than the %s left before the deadline"):format(
                 fmt(sd), source, fmt(d.time_left)) }
    end
    return { retry = true, paced = true, delay = sd, server_delay = sd,
             why = ("paced by the server: wait %s (%s); no attempt or budget spent"):format(fmt(sd), source) }
  end
  if d.attempt >= p.attempts then
    return { retry = false, reason = "attempts", why = ("all %d attempts used"):format(p.attempts) }
  end
  if d.time_left and d.time_left <= 0 then
    return { retry = false, reason = "deadline", why = "out of time (max_elapsed or the deadline has passed)" }
  end
  local retry_no = d.attempt
  local delay, why
  if p.delay then
    local ok, v = policy.guard(p.delay, "profile delay function", retry_no, d.prev_delay or 0, d.err)
    if ok and type(v) == "number" and v == v and v >= 0 and v < math.huge then
      delay, why = v, ("delay function, retry %d"):format(retry_no)
    else
      delay = R.backoff_delay(backoff_cfg(p), retry_no, d.prev_delay or 0, d.rng)
      why = ("delay function failed (%s), used %s backoff"):format(ok and ("returned " .. tostring(v)) or
                                                                  tostring(v), p.backoff)
    end
  else
    delay = R.backoff_delay(backoff_cfg(p), retry_no, d.prev_delay or 0, d.rng)
    why = ("%s backoff, retry %d, %s jitter"):format(p.backoff, retry_no, p.jitter)
  end
  if sd then
    if d.time_left and sd > d.time_left then
      return { retry = false, reason = "retry_after", server_delay = sd,
               why = ("server asked to wait %s (%s), more than the %s left before the deadline"):format(
                 fmt(sd), source, fmt(d.time_left)) }
    end
    if sd >= delay then delay, why = sd, ("server asked to wait %s (%s)"):format(fmt(sd), source) end
  end
  if d.time_left and delay > d.time_left then
    return { retry = false, reason = "deadline", server_delay = sd,
             why = ("the next retry in %s would pass the deadline (%s left)"):format(fmt(delay), fmt(d.time_left)) }
  end
  if d.budget and not d.budget:try_retry() then
    return { retry = false, reason = "budget", budget_exhausted = true, server_delay = sd,
             why = "retry budget of the run exhausted (too many retries; the service is failing broadly)" }
  end
  return { retry = true, delay = delay, why = why, server_delay = sd }
end

-- Does this failure say the target is unhealthy? Client errors other than 408/429 do not:
-- the service answered.
-- A 429 does not either: the service is up and pacing the client, which is the rate limit's
-- business (a burst of 429s at the start of a run opened the breaker for 30 s).
local function counts_against_target(err)
  if err.kind ~= nil then return true end
  local s = err.status
  if type(s) ~= "number" then return false end
  return s >= 500 or s == 408
end

-- The side effect of the failed attempt may have happened: the request may have been processed.
local function outcome_unknown(err)
  return err.kind == "timeout" or err.kind == "reset" or err.kind == "other"
    or (type(err.status) == "number" and err.status >= 500)
end

local function same(a, b)
  if type(a) ~= "table" or type(b) ~= "table" then return a == b end
  for k, v in pairs(a) do
    if not same(v, b[k]) then return false end
  end
  for k in pairs(b) do
    if a[k] == nil then return false end
  end
  return true
end

local function breaker_cfg(b)
  return { failures = b.failures, failure_rate = b.failure_rate, window_calls = b.window_calls,
           window_seconds = b.window, min_calls = b.min_calls, cooldown = b.cooldown,
           cooldown_multiplier = b.cooldown_multiplier, max_cooldown = b.max_cooldown,
           half_open_probes = b.half_open_probes, success_ratio = b.success_ratio,
           half_open_max_wait = b.half_open_max_wait }
end

-- The learned limit's settings; nil when the policy does not adapt (a fixed rps or none).
function M.adapt_cfg(r)
  if r.adaptive == false then return nil end
  return { ceiling = r.rps or 0, window = r.window, target_share = r.target_share, gain = r.gain,
           growth = r.growth, max_background = r.max_background, min_samples = r.min_samples }
end

local Executor = {}
Executor.__index = Executor

local HALF_OPEN_POLL = 0.1 -- seconds between looks at a half-open breaker whose probes are out

local seed_counter = 0
local function default_seed()
  seed_counter = seed_counter + 1
  return (math.floor((os.time() % 100000) * 1000) + seed_counter * 7919 + math.random(1, 1e6)) % 2147483647
end

function M.executor(o)
  assert(type(o) == "table" and type(o.policy) == "table", "retry.executor{ policy = pol, ... }")
  local self = setmetatable({}, Executor)
  self.clock = o.clock or { now = scimrun.now, sleep = scimrun.sleep, wall = scimrun.wall }
  -- Every fact of this layer is an event on one stream (the run's, or its own); its counters
  -- are a tally of that stream (scimrun.engine.events), never kept on the side, and its log lines
  -- are written by a reader of the stream (scimrun.observe.event_log). log = false: no log lines
  -- (the runner attaches its own reader, which knows the terminal and the verbosity).
  self.events = o.events or events.new()
  if o.log ~= false then require("scimrun.observe.event_log").attach(self.events, { log = o.log }) end
  if o.on_event then self.events:subscribe(o.on_event) end
  self.tally = events.tally(self.events)
  self.state = o.state
  self.rng = R.rng(o.seed or default_seed())
  self.targets = {}
  self:set_policy(o.policy)
  if self.state then
    local snap = self.state.load("budget")
    if type(snap) == "table" then self.budget:restore(snap) end
  end
  return self
end

function Executor:_emit(ev)
  self.events:emit(ev)
end

-- Applies a new policy to the next attempts. Breaker and budget keep their history.
function Executor:set_policy(pol)
  assert(type(pol) == "table" and pol.profiles, "set_policy expects a loaded policy")
  local old = self.policy
  self.policy = pol
  local bcfg = { ratio = pol.budget.retry_ratio, min_retries = pol.budget.min_retries }
  if not self.budget or not same(bcfg, self.budget_cfg) then
    local snap = self.budget and self.budget:snapshot()
    self.budget, self.budget_cfg = R.budget(bcfg), bcfg
    if snap then self.budget:restore(snap) end
  end
  if old then
    local now = self.clock.now()
    for _, tg in pairs(self.targets) do
      local cfg = breaker_cfg(pol.breaker)
      if not same(cfg, tg.breaker_cfg) then
        local snap = tg.breaker:snapshot(now)
        tg.breaker, tg.breaker_cfg = R.breaker(cfg), cfg
        tg.breaker:restore(snap, now)
      end
      local acfg = M.adapt_cfg(pol.rate_limit)
      if not same(acfg, tg.adapt_cfg) then
        -- What was learned is about the server, not the policy: keep it unless adapting stops.
        tg.adapt, tg.adapt_cfg = acfg and R.rate_adapt(acfg), acfg
      end
      local max = pol.bulkhead.max_in_flight
      if not M.slow_start(pol.rate_limit, max) or (tg.slow and tg.slow >= max) then tg.slow = nil end
      tg.bulkhead:resize(M.in_flight_cap(tg, max))
    end
  end
end

function Executor:_target(name)
  local tg = self.targets[name]
  if tg then return tg end
  local pol = self.policy
  local bcfg, acfg = breaker_cfg(pol.breaker), M.adapt_cfg(pol.rate_limit)
  local max = pol.bulkhead.max_in_flight
  tg = { name = name, breaker = R.breaker(bcfg), breaker_cfg = bcfg, limiter = R.limiter { rps = 0 },
         adapt = acfg and R.rate_adapt(acfg), adapt_cfg = acfg, slow = M.slow_start(pol.rate_limit, max) }
  tg.bulkhead = bulkhead.new(M.in_flight_cap(tg, max))
  tg.share = self.share
  self.targets[name] = tg
  if self.state then
    local snap = self.state.load("breaker:" .. name)
    if type(snap) == "table" then
      tg.breaker:restore(snap, self.clock.now())
      if tg.breaker:state() ~= "closed" then tg.open_since = self.clock.now() end
    end
  end
  return tg
end

-- The rate in force on a target at `now`: learned or from a server's headers (rate_adapt;
-- -s = send nothing for s seconds), else the policy's fixed rps; 0 = none.
local function rate_in_force(tg, rl, now)
  return tg.adapt and tg.adapt:limit(now) or (rl.rps or 0)
end

-- Worker mode (scimrun.worker): this process's share of a fixed rate limit, 1/N of the live
-- workers of the run.
function Executor:set_share(f)
  self.share = f
  for _, tg in pairs(self.targets) do tg.share = f end
end

-- Worker mode: another worker opened this target's breaker (its snapshot); a closed breaker
-- here follows it, so the workers stop sending together. The event says `shared`.
function Executor:adopt_breaker(target, snap)
  local tg = self:_target(target)
  if tg.breaker:state() ~= "closed" then return end
  local now = self.clock.now()
  if not pcall(tg.breaker.restore, tg.breaker, snap, now) then return end
  if tg.breaker:state() ~= "closed" then self:_breaker_changed(tg, tg.breaker:state(), nil, true) end
end

function Executor:_breaker_changed(tg, state, op, shared)
  -- open_since: the start of the outage, kept through half-open probes that failed
  if state == "closed" then tg.open_since = nil
  elseif not tg.open_since then tg.open_since = self.clock.now() end
  self:_emit({ type = "breaker", target = tg.name, op = op, state = state, t = self.clock.now(),
               cooldown = state == "open" and tg.breaker:cooldown() or nil, shared = shared })
  if self.state then self.state.save("breaker:" .. tg.name, tg.breaker:snapshot(self.clock.now())) end
end

-- ---- auth failures stop the target ------------------------------------------------------

-- The rule's suggestion names SCIM_TOKEN (the default rules' text): the connection's own
-- variable or token file replaces it.
local function name_credential(text, credential)
  if type(text) ~= "string" or type(credential) ~= "string" or credential == "SCIM_TOKEN" then return text end
  return (text:gsub("SCIM_TOKEN", (credential:gsub("%%", "%%%%"))))
end
M.name_credential = name_credential

local function credential_phrase(credential)
  if type(credential) ~= "string" then return "its token" end
  if credential:find("^[%w_]+$") then return "the token in " .. credential end
  return "the token (" .. credential .. ")"
end

-- The first auth failure of a target: from now on nothing more is sent to it.
function Executor:_auth_failed(tg, err, op, opts)
  local credential = opts.credential
  err.auth_stop = true
  err.target = tg.name
  err.credential = credential
  err.suggest = name_credential(err.suggest, credential)
  if tg.auth_stop then return end
  tg.auth_stop = { op = op, status = err.status, rule = err.rule, suggest = err.suggest, credential = credential,
                   at = self.clock.now() }
  err.detail = ("%s rejected %s; no more requests are sent to it in this run%s"):format(tg.name,
    credential_phrase(credential), err.detail and (". The server said: " .. tostring(err.detail)) or "")
  self:_emit({ type = "auth_stop", target = tg.name, op = op, status = err.status, rule = err.rule,
               credential = credential, method = err.method, url = err.url, detail = err.detail,
               suggest = err.suggest, t = self.clock.now() })
end

-- The error of a call refused because its target rejected the token earlier in the run.
function Executor:_auth_refused(tg, op, attempt, trail)
  local st = tg.auth_stop
  self:_emit({ type = "give_up", op = op, target = tg.name, attempt = attempt, class = "auth", reason = "auth_stop",
               why = "the target rejected the token earlier in this run", t = self.clock.now() })
  return nil, { class = "auth", op = op, target = tg.name, rule = st.rule, auth_stop = true, not_sent = true,
                credential = st.credential, attempts = attempt, trail = trail, suggest = st.suggest,
                detail = ("not sent: %s rejected %s earlier in this run (%s answered %s); no more requests are "
                  .. "sent to it"):format(tg.name, credential_phrase(st.credential), tostring(st.op),
                  tostring(st.status or "auth")) }
end

-- True once an auth failure stopped the target (for reports and specs).
function Executor:auth_stopped(target)
  local tg = self.targets[target]
  return tg ~= nil and tg.auth_stop ~= nil
end

local function circuit_open_err(op, target, detail)
  return { class = "circuit_open", op = op, target = target, rule = "breaker", detail = detail,
           suggest = "the service is failing; the breaker lets calls through again after its cooldown " ..
                     "(replay later with scimrun dlq replay)" }
end

-- Passes the breaker: returns true, or nil, err (circuit_open) when failing fast or out of time.
function Executor:_pass_breaker(tg, op, deadline)
  local clock = self.clock
  while true do
    local now = clock.now()
    local ok, wait, changed = tg.breaker:allow(now)
    if changed then self:_breaker_changed(tg, changed, op) end
    if ok then return true end
    wait = math.max(tonumber(wait) or 0, 0.001)
    if self.policy.breaker.when_open == "fail" then
      return nil, circuit_open_err(op, tg.name, ("circuit breaker for %s is open (retry in %s)"):format(
        tg.name, fmt(wait)))
    end
    -- A target down for longer than max_open is down for good as far as this run goes: calls
    -- fail at once (half-open probes still go through), so the run ends in bounded time.
    local max_open = self.policy.breaker.max_open or 0
    if max_open > 0 and tg.open_since then
      local open_for = now - tg.open_since
      if open_for >= max_open then
        return nil, circuit_open_err(op, tg.name, ("circuit breaker for %s has been open for %s, longer than "
          .. "breaker.max_open (%s): the target is down"):format(tg.name, fmt(open_for), fmt(max_open)))
      end
      wait = math.min(wait, max_open - open_for + 0.001)
    end
    -- Half-open with every probe permit out: the probe's answer usually comes long before the
    -- breaker's own limit (half_open_max_wait), so look again soon. Before the deadline check:
    -- that limit is no wait anyone is sure to have (the demo's items failed "open for 60 s
    -- more, past the deadline" a moment before the probe closed the breaker).
    if tg.breaker:state() == "half_open" then wait = math.min(wait, HALF_OPEN_POLL) end
    if deadline and now + wait > deadline then
      return nil, circuit_open_err(op, tg.name, ("circuit breaker for %s is open for %s more, past the deadline")
        :format(tg.name, fmt(wait)))
    end
    self:_emit({ type = "wait", reason = "breaker", target = tg.name, op = op, seconds = wait, t = now })
    clock.sleep(wait)
  end
end

function Executor:_save_deadline(key, rec)
  if self.state and key then self.state.save("deadline:" .. key, rec) end
end

function Executor:_profile(op, opts)
  local pol = self.policy
  local p = opts.profile
  if type(p) == "string" then
    local prof = pol.profiles[p]
    if not prof then error(("retry: no profile '%s' in policy %s"):format(p, tostring(pol.file)), 3) end
    return prof, p
  elseif type(p) == "table" then
    local filled = {}
    for k, v in pairs(require("scimrun.resilience.policy_schema").PROFILE_DEFAULTS) do filled[k] = v end
    for k, v in pairs(p) do filled[k] = v end
    return filled, "(given)"
  end
  return policy.profile_for(pol, op)
end

-- A learned limit is paced with a bucket of about 2 ms of requests: servers with a small burst
-- allowance reject the clumps a bigger one lets through.
function M.limiter_burst(rate, rl)
  if rate > 0 and rate == (rl.rps or 0) then return rl.burst end
  return math.max(1, rate * 0.002)
end

-- Books the next send to a target on its token bucket at the rate in force (learned, from
-- headers, or the fixed rps). Returns wait (seconds until the booked place; 0: now), or nil and
-- the seconds until a server's "nothing left" resets. on_change(rate) hears of a new rate.
-- A cut of the rate voids the places booked at the old one: with hundreds of items waiting
-- (the workflow's concurrency is items, not requests), a queue booked at a rate the server has
-- just refused would go out too fast for seconds, and its debt would then stall the bucket. The
-- bucket starts again at the new rate, and every caller that was waiting books again (see
-- M.booking_void). Shared by the executor and `policy simulate` (rate_sim.lua).
function M.book(tg, now, rl, on_change)
  local rate = rate_in_force(tg, rl, now)
  if rate < 0 then return nil, -rate end
  local fixed = rate == (rl.rps or 0) -- the policy's rps, not learned nor from headers
  -- a worker of N (scimrun.worker) sends at most its share of a fixed limit (rps): together the
  -- workers stay within it
  if tg.share and tg.share < 1 and (rl.rps or 0) > 0 then
    local cap = rl.rps * tg.share
    if rate == 0 or rate > cap then rate, fixed = cap, true end
  end
  local burst = M.limiter_burst(rate, rl)
  local old = tg.limiter:rate()
  if rate ~= old or burst ~= tg.burst then
    if rate > 0 and (old <= 0 or rate < old) then
      tg.limiter = R.limiter { rps = rate, burst = burst }
      tg.rate_gen = (tg.rate_gen or 0) + 1
      -- A learned or server-given rate starts spent: a request may have left a moment ago at
      -- the old pace, and a full bucket would send the next one right behind it (against a
      -- server with a burst of 1, a 429 for every cut, and each 429 cut again).
      if not fixed then
        for _ = 1, math.floor(burst) do tg.limiter:reserve(now) end
      end
    else
      tg.limiter:set_rate(now, rate, burst)
    end
    tg.burst = burst
    if on_change then on_change(rate) end
  end
  tg.booked_rate, tg.booked_gen = rate, tg.rate_gen
  return rate > 0 and tg.limiter:reserve(now) or 0
end

-- Slow start (rate_limit.slow_start): a new target gets that many requests in flight, a quarter
-- more with each answer that is not a 429 and half a request fewer with each 429, until the
-- bulkhead's bound is reached. Behind a rate limit, a cold target then meets its burst
-- allowance with a few requests in flight instead of the whole bulkhead, each of which would
-- come back 429; at a millisecond's round trip the bound is gone after about a hundred answers.
local SLOW_GROWTH, SLOW_CUT = 0.25, 0.5
-- A run of refusals: this many requests sent after the server's first 429 came back were
-- answered 429 with a server delay, and none was accepted (requests already in flight then say
-- nothing: they left together). One 429 says little (random ones are background), but such a
-- run says the server's allowance is spent outright: until it comes back, every item that sends
-- gets a 429 of its own. So the whole target waits out the delay, when the learned limit can
-- judge by what the server accepted meanwhile (rate_adapt_refused: min_samples accepted in the
-- window; fewer say little of a server that may refill in milliseconds and rounds its
-- Retry-After up to a second). An accepted request ends the run: the allowance refills as it is
-- used, and the learned limit paces it window by window.
local REFUSED_RUN = 5

-- The in-flight bound slow start sets for a new target under policy rate_limit `rl` and a
-- bulkhead of `max`; nil: none.
function M.slow_start(rl, max)
  local n = rl.adaptive ~= false and rl.slow_start or 0
  if n > 0 and n < max then return n end
end

-- The bulkhead's bound for target `tg` now.
function M.in_flight_cap(tg, max)
  return tg.slow and math.min(max, math.max(1, math.floor(tg.slow))) or max
end

-- Every answer from a target, as Executor:run and `policy simulate` see it: limited = true for a
-- 429 (class rate_limited), false for an accepted request, nil for any other failure (it says
-- nothing of the allowance); delay = the server's delay with a 429 the executor waits out
-- (seconds or nil); sent_at = when its request left. Moves slow start and spots a run of
-- refusals; true when the target was paused.
function M.answered(tg, now, limited, delay, sent_at, max)
  if limited == nil then return end
  if tg.slow then
    tg.slow = math.max(1, tg.slow + (limited and -SLOW_CUT or SLOW_GROWTH))
    if tg.slow >= max then tg.slow = nil end
  end
  local run = tg.refused_run
  if not limited then
    if run and sent_at >= run.since then tg.refused_run = nil end -- the allowance refills
    return
  end
  if not (type(delay) == "number" and delay > 0) then return end -- not told how long: no pause
  if not run then
    run = { since = now, n = 0 }
    tg.refused_run = run
  end
  if sent_at >= run.since then run.n = run.n + 1 end
  if run.n >= REFUSED_RUN and tg.adapt then
    tg.refused_run = nil
    return tg.adapt:refused(now, delay)
  end
end

-- Is a place booked at (rate, gen) void at `now` (the rate was cut since, or the target is
-- paused)? Then book again.
function M.booking_void(tg, rate, gen, now)
  if tg.rate_gen ~= gen then return true end
  local r2 = tg.adapt and tg.adapt:limit(now) or rate
  return r2 < 0 or r2 < rate
end

-- A call waits until `at`: the target's limit binds until then (Executor:queued).
local function queue_until(tg, at)
  if at > (tg.queued_until or 0) then tg.queued_until = at end
end

-- Waits until this target may be sent to: a server's "nothing left until the reset" first,
-- then the place booked on the bucket (M.book), booked again if a cut voided it.
function Executor:_pace(tg, op)
  local clock, rl = self.clock, self.policy.rate_limit
  -- the rate change callback of M.book, made once per target (not a closure per call)
  local on_rate = tg.on_rate_change
  if not on_rate then
    on_rate = function(rate) self:_rate_changed(tg, tg.pacing_op, rate, tg.pacing_at) end
    tg.on_rate_change = on_rate
  end
  while true do
    local now = clock.now()
    tg.pacing_op, tg.pacing_at = op, now
    local w, reset = M.book(tg, now, rl, on_rate)
    if not w then
      self:_emit({ type = "wait", reason = "rate_limit_reset", op = op, target = tg.name, seconds = reset, t = now })
      queue_until(tg, now + reset)
      clock.sleep(reset)
    elseif w <= 0 then
      return
    else
      local rate, gen = tg.booked_rate, tg.booked_gen
      self:_emit({ type = "wait", reason = "rate_limit", op = op, target = tg.name, seconds = w, t = now })
      queue_until(tg, now + w)
      clock.sleep(w)
      if not M.booking_void(tg, rate, gen, clock.now()) then return end
    end
  end
end

-- Are calls to this target queued on its rate limit now (waiting for their booked place)? The
-- limit binds: a membership PATCH takes a place a user's create could have had
-- (scimrun.scim.member_batch waits longer to fill its batches then).
function Executor:queued(name)
  local tg = self.targets[name]
  return tg ~= nil and tg.queued_until ~= nil and self.clock.now() < tg.queued_until
end

-- An answer from target tg (M.answered): slow start moves the bulkhead's bound; a run of
-- refusals pauses the target, an event of its own.
function Executor:_answered(tg, now, limited, delay, sent)
  local max = self.policy.bulkhead.max_in_flight
  local was = M.in_flight_cap(tg, max)
  if M.answered(tg, now, limited, delay, sent, max) then
    self:_emit({ type = "refused", target = tg.name, seconds = delay, t = now })
  end
  local cap = M.in_flight_cap(tg, max)
  if cap ~= was then tg.bulkhead:resize(cap) end
end

-- Every change of the rate in force is an event (the log reader decides which it prints).
function Executor:_rate_changed(tg, op, rate, now)
  self:_emit({ type = "rate", target = tg.name, op = op, rps = rate, t = now })
end

function Executor:_observe_quota(tg, headers, now)
  if not (tg.adapt and headers and self.policy.rate_limit.headers ~= false) then return end
  local remaining, reset = M.server_quota(headers, self.clock.wall())
  if remaining then tg.adapt:server_rate(now, remaining, reset) end
end

function Executor:run(op, target, attempt_fn, opts)
  opts = opts or {}
  assert(type(attempt_fn) == "function", "ex:run(op, target, attempt_fn, opts)")
  target = target or "default"
  local clock = self.clock
  local profile, pname = self:_profile(op, opts)
  local tg = self:_target(target)
  -- The workflow step running on this task (scimrun.ctx): it names the checkpoint key of this
  -- operation's backoff deadline and bounds it by timeouts.step.
  local step = rawget(_G, "scimrun") and scimrun.ctx and scimrun.ctx().step
  local key = opts.key or (step and step:op_key(op))
  local deadline = opts.deadline
  if step and step.deadline then deadline = math.min(deadline or math.huge, step.deadline) end
  local start, gate_wait, attempt, prev_delay, paced = clock.now(), 0, 0, 0, 0
  local trail = {}
  local checkpointed = false
  if self.state and key then
    local d = self.state.load("deadline:" .. key)
    if type(d) == "table" and type(d.until_wall) == "number" then
      checkpointed = true
      attempt = tonumber(d.attempt) or 0
      if type(d.started_wall) == "number" then start = start - math.max(clock.wall() - d.started_wall, 0) end
      local remaining = d.until_wall - clock.wall()
      if remaining > 0 then
        self:_emit({ type = "wait", reason = "resume", op = op, target = target, seconds = remaining,
                     attempt = attempt, t = clock.now() })
        clock.sleep(remaining)
      end
    end
  end
  local start_wall = clock.wall() - (clock.now() - start)
  self.budget:first()

  local function finish()
    if checkpointed then self:_save_deadline(key, nil) end
    self._last_trail = trail
  end

  while true do
    local pol = self.policy
    if tg.auth_stop then
      finish()
      return self:_auth_refused(tg, op, attempt, trail)
    end
    -- Waiting on an open breaker counts toward max_elapsed (the target is failing); queueing
    -- for the bulkhead and the rate limit does not (gate_wait).
    local limit_at = start + gate_wait + profile.max_elapsed
    if deadline then limit_at = math.min(limit_at, deadline) end
    local ok, gerr = self:_pass_breaker(tg, op, limit_at)
    local t0 = clock.now()
    if not ok then
      gerr.attempts = attempt
      gerr.trail = trail
      finish()
      self:_emit({ type = "give_up", op = op, target = target, attempt = attempt, class = "circuit_open",
                   why = gerr.detail, t = clock.now() })
      return nil, gerr
    end
    tg.bulkhead:acquire(self, op, target)
    self:_pace(tg, op)
    if tg.auth_stop then -- the token was rejected while this call queued: nothing is sent
      tg.bulkhead:release()
      tg.breaker:release(clock.now())
      finish()
      return self:_auth_refused(tg, op, attempt, trail)
    end
    local sent = clock.now()
    local window = tg.adapt and tg.adapt:sent(sent)
    gate_wait = gate_wait + (sent - t0)
    attempt = attempt + 1
    self:_emit({ type = "attempt", op = op, target = target, attempt = attempt, profile = pname, t = sent })
    local pok, res, err = pcall(attempt_fn, attempt)
    tg.bulkhead:release()
    if not pok then
      tg.breaker:release(clock.now())
      finish()
      error(res, 0)
    end
    local now = clock.now()
    if res ~= nil or err == nil then
      local changed = tg.breaker:record(now, true)
      if changed then self:_breaker_changed(tg, changed, op) end
      if window then tg.adapt:answered(window, now, false) end
      self:_answered(tg, now, false, nil, sent)
      self:_observe_quota(tg, type(res) == "table" and res.headers, now)
      self:_emit({ type = "success", op = op, target = target, attempt = attempt, t = now, elapsed = now - start })
      finish()
      if res == nil then return true end
      return res
    end

    if type(err) ~= "table" then err = { detail = tostring(err) } end
    err.op = err.op or op
    local class, rule, suggest = classify.classify(pol, err, op)
    err.class, err.rule = class, rule
    if suggest then err.suggest = suggest end
    if class == "auth" then self:_auth_failed(tg, err, op, opts) end
    local changed = tg.breaker:record(now, not counts_against_target(err))
    if changed then self:_breaker_changed(tg, changed, op) end
    if window then tg.adapt:answered(window, now, class == "rate_limited") end
    self:_observe_quota(tg, err.headers, now)
    local time_left = profile.max_elapsed - (now - start - gate_wait)
    if deadline then time_left = math.min(time_left, deadline - now) end
    local d = M.decide({ profile = profile, class = class, err = err, attempt = attempt - paced, paced = paced,
                         time_left = time_left, prev_delay = prev_delay, rng = self.rng, budget = self.budget,
                         wall = clock.wall() })
    -- a delay the executor does not wait out (too long for the deadline) pauses nothing
    if class == "rate_limited" then self:_answered(tg, now, true, d.paced and d.server_delay or nil, sent) end
    if d.paced then paced = paced + 1 end
    if d.server_delay then err.retry_after = d.server_delay end
    trail[#trail + 1] = { attempt = attempt, status = err.status, kind = err.kind, class = class, rule = rule,
                          retry = d.retry, delay = d.delay, why = d.why, at = sent - start, paced = d.paced }
    self:_emit({ type = "failure", op = op, target = target, attempt = attempt, status = err.status,
                 kind = err.kind, class = class, rule = rule, retry = d.retry, delay = d.delay, why = d.why,
                 reason = d.reason, paced = d.paced, budget_left = self.budget:remaining(), t = now })
    if not d.retry then
      err.attempts = attempt
      err.trail = trail
      if d.budget_exhausted then
        err.budget_exhausted = true
      end
      if d.reason == "retry_after" or d.reason == "deadline" or d.reason == "budget" then
        err.detail = (err.detail and (tostring(err.detail) .. "; ") or "") .. d.why
      end
      if self.state and d.budget_exhausted then self.state.save("budget", self.budget:snapshot()) end
      self:_emit({ type = "give_up", op = op, target = target, attempt = attempt, class = class,
                   reason = d.reason, why = d.why, t = now })
      finish()
      return nil, err
    end

    if self.state and not d.paced then self.state.save("budget", self.budget:snapshot()) end
    if key and self.state then
      checkpointed = true
      self:_save_deadline(key, { until_wall = clock.wall() + d.delay, attempt = attempt, started_wall = start_wall })
    end
    self:_emit({ type = "delay", op = op, target = target, attempt = attempt, seconds = d.delay, why = d.why,
                 t = now })
    if d.delay > 0 then
      -- the item of wf:each this runs for lends its slot while it sleeps out a backoff, so a
      -- few failing items do not hold the run's concurrency (not for a 429 the server paces:
      -- more items would only queue on the same limit)
      local item = not d.paced and step and scimrun.ctx().item or nil
      local lend = item and item.lend
      if opts.on_backoff then opts.on_backoff(true, d.delay) end
      if lend then lend(true) end
      clock.sleep(d.delay)
      if lend then lend(false) end
      if opts.on_backoff then opts.on_backoff(false) end
    end
    prev_delay = d.delay
    if opts.before_retry and outcome_unknown(err) then
      local adopted = opts.before_retry(err, attempt)
      if adopted ~= nil then
        self:_emit({ type = "adopted", op = op, target = target, attempt = attempt, t = clock.now() })
        finish()
        return adopted
      end
    end
  end
end

-- The tally of this layer's events (scimrun.engine.events: what each counter counts), the retry
-- budget left and the rate limit in force per target.
function Executor:counters()
  local out = events.snapshot(self.tally)
  out.budget_left = self.budget:remaining()
  out.rate_limits = {}
  local now = self.clock.now()
  for name, tg in pairs(self.targets) do
    local st = tg.adapt and tg.adapt:state() or {}
    local rate = rate_in_force(tg, self.policy.rate_limit, now)
    out.rate_limits[name] = { rps = math.max(rate, 0), learned = (st.limit or 0) > 0 or nil,
                              background = st.background, cuts = st.cuts, noise = st.noise }
  end
  return out
end

function Executor:last_trail() return self._last_trail end

-- The breaker state of a target ("closed", "open", "half_open"), for reports and specs.
function Executor:breaker_state(target)
  local tg = self.targets[target]
  return tg and tg.breaker:state() or "closed"
end

return M
