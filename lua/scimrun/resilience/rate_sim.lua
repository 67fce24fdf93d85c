-- What a policy's rate limit does against a server, on a simulated clock (no network): the
-- engine behind `scimrun policy simulate --server ...`. The learned limit and the token bucket
-- are the executor's own (scimrun.resilience); the server decides at send time.
--   rate_sim.parse_server("bucket:30/s[:burst=5]" | "random429:0.03" | "none") -> server | nil, msg
--   rate_sim.run(pol, { server, concurrency, latency, seconds, every, seed }) -> rows, totals
-- Clients loop: take a bulkhead slot (slow start included), wait for the bucket, send, get the
-- answer `latency` later (jittered 0.5-1.5x), and after a 429 wait the server's Retry-After
-- before sending again. Every answer goes through retry.answered, as in the executor (slow
-- start, a run of refusals pausing the target).
local R = require "scimrun.resilience"
local retry = require "scimrun.resilience.retry"

local M = {}

function M.parse_server(spec)
  spec = tostring(spec or "")
  if spec == "none" then return { kind = "none", label = "a server with no limit" } end
  local rate, unit, rest = spec:match("^bucket:(%d+%.?%d*)/(%a+)(.*)$")
  if rate then
    rate = tonumber(rate) / (unit == "min" and 60 or unit == "s" and 1 or 0 / 0)
    if rate ~= rate or rate <= 0 then return nil, "bucket:N/s or bucket:N/min, e.g. bucket:30/s" end
    local burst = tonumber(rest:match("^:burst=(%d+%.?%d*)$") or (rest == "" and math.max(2, rate / 10)) or "")
    if not burst or burst < 1 then return nil, "the burst is a number >= 1, e.g. bucket:30/s:burst=5" end
    return { kind = "bucket", rate = rate, burst = burst, tokens = burst, last = 0,
             label = ("a token bucket of %g/s (burst %g) it is not told about"):format(rate, burst) }
  end
  local share = tonumber(spec:match("^random429:(%d*%.?%d+)$") or "")
  if share and share >= 0 and share < 1 then
    return { kind = "random", share = share, label = ("429s to %g%% of requests at random"):format(share * 100) }
  end
  return nil, ("unknown server '%s': use bucket:30/s, bucket:600/min:burst=20, random429:0.03 or none"):format(spec)
end

-- 0 for a success, else the Retry-After of a 429.
local function serve(sv, now, rng)
  if sv.kind == "bucket" then
    sv.tokens = math.min(sv.burst, sv.tokens + (now - sv.last) * sv.rate)
    sv.last = now
    if sv.tokens >= 1 then
      sv.tokens = sv.tokens - 1
      return 0
    end
    return math.max(1, math.ceil((1 - sv.tokens) / sv.rate))
  elseif sv.kind == "random" and rng:next() < sv.share then
    return 1
  end
  return 0
end

function M.run(pol, o)
  local rl = pol.rate_limit
  local acfg = retry.adapt_cfg(rl) -- the executor's own settings and pacing, not a copy
  local adapt = acfg and R.rate_adapt(acfg)
  local tg = { adapt = adapt, limiter = R.limiter { rps = 0 } } -- the target, as the executor keeps it
  local rng = R.rng(o.seed or 1)
  local sv, n = o.server, o.concurrency or 16
  local latency, seconds, every = o.latency or 0.05, o.seconds or 120, o.every or 10
  local next_at, state, window, wait, booked, sent_at = {}, {}, {}, {}, {}, {}
  for i = 1, n do next_at[i], state[i] = (i - 1) * 0.001, "ready" end
  local rows, bucket = {}, { sent = 0, ok = 0, limited = 0 }
  -- the bulkhead, as the executor keeps it: at most max_in_flight requests out, fewer while
  -- slow start holds a new target back
  local max = pol.bulkhead and pol.bulkhead.max_in_flight or n
  tg.slow = retry.slow_start(rl, max)
  local in_flight, blocked = 0, {}
  local function room() return in_flight < math.min(n, retry.in_flight_cap(tg, max)) end
  local totals = { sent = 0, ok = 0, limited = 0, seconds = seconds }
  local mark = every
  local function flush(at)
    local limit = adapt and adapt:limit(at) or (rl.rps or 0)
    rows[#rows + 1] = { t = at, limit = math.max(limit, 0), sent = bucket.sent / every, ok = bucket.ok / every,
                        share = bucket.sent > 0 and bucket.limited / (bucket.ok + bucket.limited) or 0 }
    bucket = { sent = 0, ok = 0, limited = 0 }
  end
  while true do
    local c = 1
    for i = 2, n do if next_at[i] < next_at[c] then c = i end end
    local now = next_at[c]
    while now >= mark and mark <= seconds do
      flush(mark)
      mark = mark + every
    end
    if now >= seconds then break end
    if state[c] == "ready" then
      -- the bulkhead first, as Executor:run: a slot, held while the booking waits
      if room() then
        in_flight = in_flight + 1
        state[c] = "slot"
      else
        blocked[#blocked + 1] = c -- woken by an answer
        next_at[c] = math.huge
      end
    elseif state[c] == "slot" or (state[c] == "booked"
        and retry.booking_void(tg, booked[c].rate, booked[c].gen, now)) then
      local w, reset = retry.book(tg, now, rl) -- the executor's own booking (Executor:_pace)
      if not w then
        next_at[c] = now + reset
      else
        booked[c] = { rate = tg.booked_rate, gen = tg.booked_gen }
        next_at[c] = now + w
        state[c] = w > 0 and "booked" or "sending"
      end
    elseif state[c] == "booked" then
      state[c] = "sending" -- its place came and is still good: send now
    elseif state[c] == "sending" then
      window[c] = adapt and adapt:sent(now)
      sent_at[c] = now
      wait[c] = serve(sv, now, rng)
      bucket.sent, totals.sent = bucket.sent + 1, totals.sent + 1
      next_at[c] = now + latency * (0.5 + rng:next())
      state[c] = "answer"
    else
      local limited = wait[c] > 0
      if window[c] then adapt:answered(window[c], now, limited) end
      retry.answered(tg, now, limited, wait[c], sent_at[c], max)
      in_flight = in_flight - 1
      while #blocked > 0 and room() do
        local b = table.remove(blocked, 1)
        in_flight = in_flight + 1
        next_at[b], state[b] = now, "slot"
      end
      if limited then
        bucket.limited, totals.limited = bucket.limited + 1, totals.limited + 1
      else
        bucket.ok, totals.ok = bucket.ok + 1, totals.ok + 1
      end
      next_at[c] = now + wait[c]
      state[c] = "ready"
    end
  end
  return rows, totals
end

-- The simulation as lines of text for the terminal.
function M.report(pol, o)
  local rows, totals = M.run(pol, o)
  local lines = {
    ("policy %s against %s: %d clients, %.0f ms latency, %d s simulated, seed %d"):format(tostring(pol.file),
      o.server.label, o.concurrency or 16, (o.latency or 0.05) * 1000, o.seconds or 120, o.seed or 1),
    ("%-8s %-12s %-10s %-12s %s"):format("at", "limit", "sent/s", "accepted/s", "429 share"),
  }
  for _, r in ipairs(rows) do
    lines[#lines + 1] = ("%-8s %-12s %-10.1f %-12.1f %.1f%%"):format(("%ds"):format(r.t),
      r.limit > 0 and ("%.1f/s"):format(r.limit) or "none", r.sent, r.ok, r.share * 100)
  end
  local answered = totals.ok + totals.limited
  lines[#lines + 1] = ("overall: %.1f accepted/s, %.1f%% of requests answered 429%s"):format(totals.ok / totals.seconds,
    answered > 0 and totals.limited / answered * 100 or 0,
    o.server.kind == "bucket" and ("; %.0f%% of the server's limit"):format(totals.ok / totals.seconds
      / o.server.rate * 100) or "")
  return lines, totals
end

return M
