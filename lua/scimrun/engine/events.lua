-- The facts of a run, emitted once each, as a stream that readers subscribe to: the retry
-- layer's attempts, failures, retries, waits, breaker transitions and rate changes, and the
-- engine's items. Counters are derived from the stream (events.tally), so the summary, the
-- report and `policy simulate` cannot disagree about what happened.
--
--   local s = events.new()          s:subscribe(fn [, types]) -> unsubscribe   s:emit(ev)
--     types: the event types fn reads, as a list or a set ({ "write" }, { write = true }); fn
--     is called for those only (without types, for every event). A run emits about seven
--     events a user: each reader declaring what it reads spares the others' calls.
--   local t = events.tally(s)       t.attempts, t.retries, ... (see TALLY below)
-- An event is a table with a `type`; it never holds a secret (no headers, no bodies).
-- A subscriber that raises is dropped with one warning: a broken reader must not stop a run.
local M = {}

local Stream = {}
Stream.__index = Stream

function M.new() return setmetatable({ subs = {}, routes = {} }, Stream) end

local function type_set(types)
  if types == nil then return nil end
  local set = {}
  for k, v in pairs(types) do
    if type(k) == "number" then set[v] = true elseif v then set[k] = true end
  end
  return set
end

function Stream:subscribe(fn, types)
  local entry = { fn = fn, types = type_set(types) }
  self.subs[#self.subs + 1] = entry
  self.routes = {} -- rebuilt per type at the next emit
  return function() entry.fn = nil end
end

-- The subscribers of one event type, in subscription order.
function Stream:route(ty)
  local list = {}
  for _, entry in ipairs(self.subs) do
    if entry.types == nil or entry.types[ty] then list[#list + 1] = entry end
  end
  self.routes[ty] = list
  return list
end

function Stream:emit(ev)
  local ty = ev.type
  if ty == nil then ty = false end
  local list = self.routes[ty] or self:route(ty)
  for i = 1, #list do
    local entry = list[i]
    local fn = entry.fn
    if fn then
      local ok, err = pcall(fn, ev)
      if not ok then
        entry.fn = nil
        local log = rawget(_G, "scimrun") and scimrun.log
        if log then log.emit("warn", "an event subscriber failed and was removed", { error = tostring(err) }) end
      end
    end
  end
end

-- What each counter counts:
--   attempts          requests sent (every attempt)
--   successes         attempts that succeeded
--   failures          attempts that failed; by_class: the same by class (circuit_open included)
--   retries           failed attempts that were retried; retries_by_class: the same by class
--   gave_up           operations that ended failed; gave_up_by_class: the same by class
--   paced             retries of 429s the server paced (Retry-After), no attempt or budget spent
--   budget_exhausted  retries refused by the run's retry budget
--   circuit_open      operations refused by an open breaker
--   breaker_opened    breaker transitions to open
--   rate_changes      changes of the rate limit in force
--   refusal_pauses    runs of 429s that paused a target for the server's delay
--   adopted           outcome-unknown creates resolved by finding the resource
--   items             items finished; items_by_outcome: created, updated, skipped, ... failed
local function bump(t, k, n) t[k] = (t[k] or 0) + (n or 1) end

local HANDLERS = {
  attempt = function(t) bump(t, "attempts") end,
  success = function(t) bump(t, "successes") end,
  failure = function(t, ev)
    bump(t, "failures")
    bump(t.by_class, ev.class or "?")
    if ev.retry then
      bump(t, "retries")
      bump(t.retries_by_class, ev.class or "?")
      if ev.paced then bump(t, "paced") end
    elseif ev.reason == "budget" then
      bump(t, "budget_exhausted")
    end
  end,
  give_up = function(t, ev)
    bump(t, "gave_up")
    bump(t.gave_up_by_class, ev.class or "?")
    if ev.class == "circuit_open" then
      bump(t, "circuit_open")
      bump(t, "failures")
      bump(t.by_class, "circuit_open")
    end
  end,
  breaker = function(t, ev) if ev.state == "open" then bump(t, "breaker_opened") end end,
  rate = function(t) bump(t, "rate_changes") end,
  refused = function(t) bump(t, "refusal_pauses") end,
  adopted = function(t) bump(t, "adopted") end,
  item = function(t, ev)
    bump(t, "items")
    bump(t.items_by_outcome, ev.outcome or "done")
  end,
}

function M.new_tally()
  return { attempts = 0, successes = 0, failures = 0, retries = 0, gave_up = 0, paced = 0,
           budget_exhausted = 0, circuit_open = 0, breaker_opened = 0, rate_changes = 0, refusal_pauses = 0,
           adopted = 0,
           items = 0, by_class = {}, retries_by_class = {}, gave_up_by_class = {}, items_by_outcome = {} }
end

-- Adds one event to a tally.
function M.count(t, ev)
  local h = HANDLERS[ev.type]
  if h then h(t, ev) end
end

-- A tally kept up to date by a subscription to the stream.
function M.tally(stream)
  local t = M.new_tally()
  stream:subscribe(function(ev) M.count(t, ev) end, HANDLERS)
  return t
end

-- A plain copy (for reports and specs).
function M.snapshot(t)
  local out = {}
  for k, v in pairs(t) do
    if type(v) == "table" then
      local c = {}
      for k2, v2 in pairs(v) do c[k2] = v2 end
      out[k] = c
    else
      out[k] = v
    end
  end
  return out
end

return M
