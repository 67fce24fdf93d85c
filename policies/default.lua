-- The default resilience policy. Copy it (or write a file with `extends = "default"` holding
-- only what you change) and pass it with `--policy NAME|FILE`. Times are in seconds.
-- Check a policy with `scimrun policy check FILE`; preview a retry schedule with
-- `scimrun policy simulate FILE --op users.create --errors 503,503,429:ra=7,201`.
return {
  -- Retry profiles. An operation's attempts, including the first, never exceed `attempts`:
  -- retries happen in this one layer only.
  --   attempts     total tries (1 = never retry)
  --   backoff      "constant" | "linear" | "exponential" (or a function, like `delay` below)
  --   base         first retry delay (constant: every delay; linear: base x retry number)
  --   multiplier   exponential only: delay of retry n = base x multiplier^(n-1)
  --   min_delay    floor of every delay; max_delay: ceiling of every computed delay
  --                ("full" jitter draws between min_delay and the computed delay)
  --   jitter       "none" | "full" | "equal" | "decorrelated": spreads retries of many clients
  --   max_elapsed  give up once this much time has passed since the first attempt
  --   delay        optional: function(retry, prev_delay, err) return seconds end, replaces backoff
  -- A server's Retry-After / RateLimit-Reset is always honoured (never sent earlier); when it is
  -- longer than the time left before max_elapsed the call fails at once, saying so.
  profiles = {
    aggressive = { attempts = 8, backoff = "exponential", base = 0.2, multiplier = 2,
                   min_delay = 0, max_delay = 10, jitter = "full", max_elapsed = 120 },
    balanced = { attempts = 5, backoff = "exponential", base = 1, multiplier = 2,
                 min_delay = 0, max_delay = 30, jitter = "full", max_elapsed = 300 },
    conservative = { attempts = 3, backoff = "exponential", base = 2, multiplier = 3,
                     min_delay = 1, max_delay = 60, jitter = "equal", max_elapsed = 600 },
    none = { attempts = 1 },
  },

  -- Which profile each operation (RESOURCE.VERB) uses. The most specific pattern wins:
  -- "users.create" over "users.*" over "*".
  -- Reads and idempotent writes (replace, patch, delete, add/remove member) retry with
  -- balanced. Creates retry too: before re-sending a create whose outcome is unknown (timeout,
  -- reset, 5xx) the SCIM client looks the resource up by its unique attribute and adopts it,
  -- so a retry never makes a duplicate account.
  operations = {
    ["*"] = "balanced",
  },

  -- Error classification, tried in order; the first rule that matches decides. A rule matches
  -- on any of: status (number, list, "5xx", or { min = 500, max = 599 }), scim_type, kind
  -- (transport: timeout, connect, reset, dns, tls, too_large, other), header = { name, value },
  -- op ("users.*"), when = function(err, op) return true end. All given fields must match.
  -- class: transient (retry), rate_limited (retry after the server's delay, slow down),
  -- permanent, auth, conflict (never retried). suggest: shown to the operator.
  -- Put your own rules in a file that extends this one: they are tried before these.
  -- Anything no rule matches is permanent.
  -- auth stops the target: after the first one (the token expired, was revoked or lacks a scope)
  -- nothing more is sent to it in the run, no new item starts, the items in flight stop without
  -- a dead letter, and the run exits 1 naming the token's variable; fix it, then --resume. A
  -- provider that answers 403 for one resource only can be given a rule making that permanent:
  --   { name = "protected-account", status = 403, detail = "cannot modify", class = "permanent" }
  classify = {
    { name = "transport-transient", kind = { "timeout", "connect", "reset", "dns" }, class = "transient" },
    { name = "tls", kind = "tls", class = "permanent",
      suggest = "TLS verification failed: check the server certificate; for a private CA give its PEM file "
      .. "as scim.connect's ca_file or SCIMRUN_CA_FILE" },
    { name = "http-5xx-transient", status = { 500, 502, 503, 504 }, class = "transient" },
    { name = "http-408", status = 408, class = "transient" },
    { name = "http-429", status = 429, class = "rate_limited" },
    { name = "http-auth", status = { 401, 403 }, class = "auth",
      suggest = "token rejected: check SCIM_TOKEN (is it current, with the scopes the provider needs?)" },
    { name = "http-409", status = 409, class = "conflict" },
    { name = "http-412", status = 412, class = "conflict",
      suggest = "precondition failed: the resource changed since it was read; re-read it and retry" },
    { name = "http-413", status = 413, class = "permanent",
      suggest = "request too large for the server: send fewer members or attributes per request" },
    { name = "http-client-error", status = { 400, 404, 422 }, class = "permanent",
      suggest = "fix the data in the source, then: scimrun dlq replay ID" },
  },

  -- Circuit breaker, one per target (service provider). Opens after `failures` consecutive
  -- failures (0 = off), or, with failure_rate (0..1), when that share of the calls in the last
  -- `window` seconds (or the last window_calls calls) failed, once min_calls calls were seen.
  -- Stays open `cooldown` seconds, times cooldown_multiplier for each re-open in a row, up to
  -- max_cooldown (0 = no cap); then lets half_open_probes calls through and closes when
  -- success_ratio of them succeed (a probe unanswered for half_open_max_wait re-opens it).
  -- Client errors (4xx other than 408) do not count: the service answered; nor do 429s, which
  -- pace the client (rate_limit below) rather than say the service is down.
  -- when_open: "wait" (batch runs pause until a probe succeeds) or "fail" (the item fails at
  -- once with class circuit_open and goes to the dead-letter queue). Waiting counts toward the
  -- profile's max_elapsed. max_open bounds an outage: once the breaker has stayed open (probes
  -- failing) that many seconds, waiting calls fail as circuit_open at once (dead-lettered with
  -- --continue-on-error, else the run stops with its resume command); 0 = wait forever.
  -- The default trips on the failure rate: with dozens of requests in flight, five failures in a
  -- row happen by chance at a 10% error rate, while half of the calls failing over 10 s do not.
  breaker = {
    failures = 0, failure_rate = 0.5, window = 10, min_calls = 20,
    cooldown = 30, cooldown_multiplier = 2, max_cooldown = 300,
    half_open_probes = 1, success_ratio = 1, half_open_max_wait = 60,
    when_open = "wait", max_open = 180,
  },

  -- Client-side rate limit, one per target. No fixed cap by default: the limit is learned
  -- from the server's answers (rate_limit.adaptive), so a healthy server is never throttled.
  --   rps      a fixed cap in requests/s (a provider's published limit); 0 = none
  --   burst    requests the fixed cap lets through at once
  --   adaptive learn a limit from 429s (runtime/rate_adapt.h): answers are judged in windows
  --            of `window` seconds (at least min_samples requests). 429s above the
  --            background share + target_share cut the limit (gain x the excess, at most 20%;
  --            a 30% share goes straight to what the server accepted). The first cut from
  --            unlimited is a 10% probe: if the next window's 429 share does not fall as a
  --            limit's would, it is random (background) and the limit is lifted at once.
  --            Later, goodput is compared with the send rate: behind a real limit goodput
  --            holds whatever is sent, while random 429s take the same share of any rate. Cuts
  --            that surely did not help make that share the background (at most
  --            max_background; a louder share is always a limit) and the limit goes back.
  --            Windows without 429s raise it again: by `growth` near where 429s began, in
  --            doubling steps below and well above it. It never exceeds rps when set.
  --            A run of refusals (five requests sent after the first 429 came back all 429
  --            with a server delay, none accepted) means the server's allowance is spent: the
  --            whole target waits out that delay, instead of every item getting a 429 of its
  --            own, and the limit is set to what the server accepted over that window, the
  --            wait included (no lower than the window before); from there it creeps up by
  --            `growth`. Only when that window had min_samples accepted requests: fewer say
  --            little of a server that may refill in milliseconds.
  --   slow_start  requests in flight a new target starts with (adaptive only; 0 = none): a
  --            quarter more per accepted answer, half a request fewer per 429, up to
  --            bulkhead.max_in_flight. A cold target behind a limit meets its burst allowance
  --            with a few requests in flight, not the whole bulkhead.
  --   headers  honour RateLimit-Remaining/-Reset and X-RateLimit-Remaining/-Reset: the rate is
  --            set to remaining / reset seconds until the reset (0 remaining: wait for it)
  -- A 429 with a server delay (Retry-After, RateLimit-Reset) is the server pacing the client:
  -- that request waits as told, and the retry costs neither an attempt nor the retry budget
  -- (max_elapsed still bounds it). `scimrun policy simulate` shows a 429 storm and the limit.
  rate_limit = { rps = 0, burst = 100, adaptive = true, headers = true, window = 1, target_share = 0.01,
                 gain = 0.5, growth = 0.01, max_background = 0.2, min_samples = 10, slow_start = 4 },

  -- At most max_in_flight requests in flight per target; further calls queue.
  bulkhead = { max_in_flight = 32 },

  -- request: one HTTP exchange; connect: establishing the connection;
  -- step: one workflow step, all its attempts and waits included (0 = no limit).
  timeouts = { request = 30, connect = 10, step = 900 },

  -- Retry budget per run: retries may add at most retry_ratio of the first attempts, plus
  -- min_retries, so a failing service is not hit by a retry storm. Retries of 429s that came
  -- with a server delay are paced by the server and do not spend it.
  budget = { retry_ratio = 0.2, min_retries = 10 },

  -- Dead-letter queue (in the state store). on_dead_letter = function(entry) ... end is called
  -- for each new entry (alerting); entries never contain secrets.
  dead_letter = { max_size = 10000, retention_days = 30, on_dead_letter = nil },

  -- Audit trail (in the state store, `scimrun audit`): every write made at a provider, kept
  -- this many days (pruned when a run starts). Never a token.
  audit = { retention_days = 365 },

  -- Hooks on events of a run (alerting without changing scimrun), each fn(event, tools) under
  -- the same CPU guard as every policy function; tools.post(url, body) sends a JSON POST (a
  -- chat webhook), tools.log(level, msg, fields) logs. For example:
  --   on_event = {
  --     dead_letter = function(e, tools)
  --       tools.post(os.getenv("CHAT_WEBHOOK"), { text = "scimrun: dead letter " .. e.id .. ": " .. e.last_error })
  --     end,
  --     breaker_open = function(b, tools) tools.post(os.getenv("CHAT_WEBHOOK"), { text = b.target .. " is down" }) end,
  --     run_finished = function(r, tools) if r.exit_code ~= 0 then tools.post(...) end end,
  --   },
  on_event = { dead_letter = nil, breaker_open = nil, run_finished = nil },
}
