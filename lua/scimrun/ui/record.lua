-- What a run keeps in its state file for `scimrun ui`: a reader of the run's event stream (like
-- the progress display, the report and the metrics) that writes one kv row of the run (key
-- "console") with its item outcomes, done/total, retries and each target's breaker and rate
-- limit. The UI runs in another process and only reads the state file, so this row is how it
-- sees a run's progress live and the counts the summary prints (created, updated, skipped,
-- adopted) after it ended.
--
--   record.attach(stream, { enqueue = fn(op), db = db, run_id = id, resumed = bool, dry_run = bool })
--
-- The row rides on the engine's group commit (o.enqueue, no transaction of its own), at most
-- once a second, and at once when a breaker changes state; the last one is written when the
-- run finishes (o.db:apply, after the engine's last flush). A resumed run counts the items of
-- its own session (as its summary does); the steps table holds what every session did.
-- A `--worker` of a shared run writes the run's items done by every worker (its heartbeat's
-- count, event run_items, plus its own since) as `done`, and its own as `mine`: the workers
-- write the same row, and each used to show only its own share of the run.
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
  stream:subscribe(function(ev)
    if ev.type == "run_finished" then
      rec.finished, rec.status, rec.exit_code = true, ev.status, ev.exit_code
      local s = type(ev.summary) == "table" and ev.summary or {}
      rec.elapsed = s.elapsed
      rec.summary = { items = s.items, succeeded = s.succeeded, failed = s.failed, created = s.created,
                      updated = s.updated, skipped = s.skipped, adopted = s.adopted, attempts = s.attempts,
                      retries = s.retries, gave_up = s.gave_up, breaker_opened = s.breaker_opened }
      if o.db then
        pcall(o.db.apply, o.db,
          { { op = "kv_put", run_id = o.run_id, key = M.KV_KEY, value_json = encode(rec, wall()) } })
      end
      return
    end
    local changed = M.apply(rec, ev, wall())
    if not changed then return end
    local t = now()
    if changed == "now" or t - last >= M.INTERVAL then
      last = t
      o.enqueue { op = "kv_put", key = M.KV_KEY, value_json = encode(rec, wall()) }
    end
  end)
end

-- The record of a run from the state file, or nil.
function M.read(db, run_id)
  local ok, json = pcall(db.kv_get, db, run_id, M.KV_KEY)
  if not ok or type(json) ~= "string" then return nil end
  local dok, rec = pcall(cjson.decode, json)
  return dok and type(rec) == "table" and rec or nil
end

return M
