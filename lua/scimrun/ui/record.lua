-- What a run keeps in its state file for `scimrun ui`: a reader of the run's event stream (like
-- the progress display, the report and the metrics) that writes one kv row of the run (key
-- "console") with its item outcomes, done/total, retries and each target's breaker and rate
-- limit. The UI runs in another process and only reads the state file, so this row is how it
-- sees a run's progress live and the counts the summary prints (created, updated, skipped,
-- adopted) after it ended.
--
--   record.attach(stream, { enqueue = fn(op), db = db, run_id = id, resumed = bool, dry_run = bool,
--                           worker = fn() -> the worker's id, or nil while it has none (worker mode) })
--
-- The row rides on the engine's group commit (o.enqueue, no transaction of its own), at most
-- once a second, and at once when a breaker changes state; the last one is written when the
-- run finishes (o.db:apply, after the engine's last flush). A resumed run counts the items of
-- its own session (as its summary does); the steps table holds what every session did.
-- A `--worker` of a shared run writes a row of its own (key "console:" .. its worker id): the
-- run's items done by every worker (its heartbeat's count, event run_items, plus its own since)
-- as `done`, its own as `mine`, and its own outcomes, failures, retries and targets. M.read
-- merges the rows of a run's workers (sums, the worst breaker, done the highest); the workers
-- used to write one row, and the console showed the last writer's counts as the run's.
local cjson = require "cjson"
local progress = require "scimrun.observe.progress"

local M = {}

M.KV_KEY = "console"
M.INTERVAL = 1 -- seconds between two rows written during the run

local OUTCOMES = { "created", "updated", "skipped", "adopted", "done", "failed", "dead_lettered", "rolled_back",
                   "interrupted" }

-- A fresh record (also what the UI assumes for a run that wrote none).
function M.new(o)
  o = o or {}
  local outcomes = {}
  for _, k in ipairs(OUTCOMES) do outcomes[k] = 0 end
  return { v = 1, started_at = o.started_at, resumed = o.resumed or false, total = cjson.null, done = 0,
           mine = 0,
           started = 0, failed = 0, dead_letters = 0, interrupted = 0, retries = 0, retries_by_class = {},
           outcomes = outcomes, targets = {}, finished = false }
end

local function target(rec, name)
  name = tostring(name or "?"):gsub("^.*@", "") -- never credentials of a URL
  local t = rec.targets[name]
  if not t then
    t = { breaker = "closed", rps = 0, waited_s = 0 }
    rec.targets[name] = t
  end
  return t
end

-- Applies one event to the record; returns true when it changed something, "now" when the
-- change should be written at once (a breaker transition).
function M.apply(rec, ev, wall)
  local ty = ev.type
  if ty == "item" then
    rec.mine = rec.mine + 1
    local outcome = ev.outcome or "done"
    rec.outcomes[outcome] = (rec.outcomes[outcome] or 0) + 1
    if ev.status == "failed" then rec.failed = rec.failed + 1 end
    if outcome == "dead_lettered" then rec.dead_letters = rec.dead_letters + 1 end
    if ev.status == "interrupted" then rec.interrupted = rec.interrupted + 1 end
  elseif ty == "item_start" then
    rec.started = rec.started + 1
  elseif ty == "run_items" then
    rec.shared = { done = tonumber(ev.done) or 0, mine = rec.mine }
    rec.heartbeat = tonumber(ev.every) -- the worker writes its row at least this often
  elseif ty == "input" then
    rec.total = (tonumber(rec.total) or 0) + (tonumber(ev.total) or 0)
  elseif ty == "failure" then
    if not ev.retry then return false end
    rec.retries = rec.retries + 1
    local c = ev.class or "?"
    rec.retries_by_class[c] = (rec.retries_by_class[c] or 0) + 1
  elseif ty == "breaker" then
    local t = target(rec, ev.target)
    t.breaker = ev.state
    t.breaker_since = wall
    t.open_until = ev.state == "open" and tonumber(ev.cooldown) and wall + ev.cooldown or nil
    return "now"
  elseif ty == "rate" then
    target(rec, ev.target).rps = math.max(tonumber(ev.rps) or 0, 0)
  elseif ty == "wait" and (ev.reason == "rate_limit" or ev.reason == "rate_limit_reset" or ev.reason == "breaker") then
    local t = target(rec, ev.target)
    t.waited_s = t.waited_s + math.abs(tonumber(ev.seconds) or 0)
  else
    return false
  end
  return true
end

local function encode(rec, wall)
  rec.updated_at = wall
  rec.in_flight = math.max(rec.started - rec.mine, 0)
  rec.done = progress.run_done(rec.shared, rec.mine, tonumber(rec.total))
  return cjson.encode(rec)
end
M.encode = encode

function M.attach(stream, o)
  if o.dry_run then return end
  local wall, now = o.wall or scimrun.wall, o.now or scimrun.now
  local rec = M.new { started_at = wall(), resumed = o.resumed }
  local last = -math.huge
  -- a worker writes no row before it has its id (its items come after): a row under the lone
  -- process's key would stay behind and be counted with the workers' rows
  local function key()
    if not o.worker then return M.KV_KEY end
    local id = o.worker()
    return id and M.KV_KEY .. ":" .. id or nil
  end
  stream:subscribe(function(ev)
    if ev.type == "run_finished" then
      rec.finished, rec.status, rec.exit_code = true, ev.status, ev.exit_code
      local s = type(ev.summary) == "table" and ev.summary or {}
      rec.elapsed = s.elapsed
      rec.summary = { items = s.items, succeeded = s.succeeded, failed = s.failed, created = s.created,
                      updated = s.updated, skipped = s.skipped, adopted = s.adopted, attempts = s.attempts,
                      retries = s.retries, gave_up = s.gave_up, breaker_opened = s.breaker_opened }
      local k = key()
      if o.db and k then
        pcall(o.db.apply, o.db, { { op = "kv_put", run_id = o.run_id, key = k, value_json = encode(rec, wall()) } })
      end
      return
    end
    local changed = M.apply(rec, ev, wall())
    if not changed then return end
    local t = now()
    local k = (changed == "now" or t - last >= M.INTERVAL) and key()
    if k then
      last = t
      o.enqueue { op = "kv_put", key = k, value_json = encode(rec, wall()) }
    end
  end, { "run_finished", "item", "item_start", "run_items", "input", "failure", "breaker", "rate", "wait" })
end

local BREAKER_RANK = { closed = 1, half_open = 2, open = 3 }
local SUMMED = { "mine", "started", "failed", "dead_letters", "interrupted", "retries", "in_flight" }
local SUMMARY_SUMMED = { "items", "succeeded", "failed", "created", "updated", "skipped", "adopted", "attempts",
                         "retries", "gave_up", "breaker_opened" }

local function num(v) return tonumber(v) or 0 end

local function add_counts(into, from)
  for k, v in pairs(type(from) == "table" and from or {}) do into[k] = num(into[k]) + num(v) end
end

-- The larger (smaller) of two values that may be missing or null: nil when both are.
local function pick(f, a, b)
  a, b = tonumber(a), tonumber(b)
  if a and b then return f(a, b) end
  return a or b
end
local function max_of(a, b) return pick(math.max, a, b) end
local function min_of(a, b) return pick(math.min, a, b) end

-- A worker whose row has not been written for 3 heartbeats (its lease) is gone (killed, its
-- machine lost): its items go back to the other workers, so its row's items in flight and its
-- send rates count no more, and it does not hold the merged row unfinished. Measured against
-- the newest row, not a clock: the console reads another process's rows.
local function gone(r, newest)
  local hb, at = tonumber(r.heartbeat), tonumber(r.updated_at)
  return r.finished ~= true and hb ~= nil and at ~= nil and newest ~= nil and newest - at > 3 * hb + 1
end

-- One record of the rows of a run's workers: counts summed; done, total and times the
-- highest (each worker's done is already the run's); a target's breaker the worst any worker
-- saw, its rates and waits summed (each worker has its own limiter); finished once all are.
-- A gone worker's row (above) adds what it did, not what it had in flight; m.gone counts them.
function M.merge(rows)
  if #rows == 1 then return rows[1] end
  local m = M.new()
  m.workers, m.finished, m.gone = #rows, true, 0
  local newest
  for _, r in ipairs(rows) do newest = max_of(newest, r.updated_at) end
  for _, r in ipairs(rows) do
    local is_gone = gone(r, newest)
    if is_gone then m.gone = m.gone + 1 end
    for _, k in ipairs(SUMMED) do
      if not (is_gone and k == "in_flight") then m[k] = num(m[k]) + num(r[k]) end
    end
    add_counts(m.outcomes, r.outcomes)
    add_counts(m.retries_by_class, r.retries_by_class)
    m.done = max_of(m.done, r.done)
    m.total = max_of(m.total, r.total) or m.total
    m.started_at = min_of(m.started_at, r.started_at)
    m.updated_at = max_of(m.updated_at, r.updated_at)
    m.resumed = m.resumed or r.resumed == true
    m.finished = m.finished and (r.finished == true or is_gone)
    for name, t in pairs(type(r.targets) == "table" and r.targets or {}) do
      local mt = m.targets[name]
      if not mt then
        mt = { breaker = "closed", rps = 0, waited_s = 0 }
        m.targets[name] = mt
      end
      if (BREAKER_RANK[t.breaker] or 0) > (BREAKER_RANK[mt.breaker] or 0) then mt.breaker = t.breaker end
      mt.rps, mt.waited_s = mt.rps + (is_gone and 0 or num(t.rps)), mt.waited_s + num(t.waited_s)
      mt.breaker_since, mt.open_until = max_of(mt.breaker_since, t.breaker_since), max_of(mt.open_until, t.open_until)
    end
    if type(r.summary) == "table" then
      m.summary = m.summary or {}
      for _, k in ipairs(SUMMARY_SUMMED) do
        if tonumber(r.summary[k]) then m.summary[k] = num(m.summary[k]) + r.summary[k] end
      end
    end
    m.elapsed = max_of(m.elapsed, r.elapsed)
  end
  return m
end

-- The record of a run from the state file (the workers' rows merged), or nil.
function M.read(db, run_id)
  local ok, all = pcall(db.kv_all, db, run_id)
  if not ok or type(all) ~= "table" then return nil end
  local rows, keys = {}, {}
  for k in pairs(all) do
    if k == M.KV_KEY or k:sub(1, #M.KV_KEY + 1) == M.KV_KEY .. ":" then keys[#keys + 1] = k end
  end
  table.sort(keys) -- the same merge whatever order the store returns them in
  for _, k in ipairs(keys) do
    local dok, rec = pcall(cjson.decode, all[k])
    if dok and type(rec) == "table" then rows[#rows + 1] = rec end
  end
  if #rows == 0 then return nil end
  return M.merge(rows)
end

return M
