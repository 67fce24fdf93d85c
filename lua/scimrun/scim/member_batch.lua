-- Group commit for membership changes: concurrent add_members / remove_members calls for one
-- group on one connection go out as one PATCH.
--
--   member_batch.submit(sp, group_id, mode, ids, send, narrow) -> requests | nil, err
--     mode: "add" | "remove"; ids: unique non-empty member ids.
--     send(mode, ids) -> fails, requests: sends ids (at most sp.max_members_per_patch) and
--       returns {member id = err} for the members that failed and the number of requests;
--       it may raise.
--     narrow(err, mode, ids) -> err: the caller's own copy of err, as it concerns only `ids`
--       (its failed members; the error of a batch may describe more).
--
-- Contract:
--   - The first caller of a batch (group, mode) is its leader; later callers join it and park.
--     The leader sends the batch as soon as one of these holds:
--       full:   it holds sp.max_members_per_patch members;
--       alone:  nobody else may join soon: no request of the connection in flight
--               (sp.in_flight), no other task that used the connection within W
--               (sp.last_used, kept by SP:call), parked callers of membership batches aside,
--               and no call queued on the target's rate limit (sp.executor:queued);
--       (not alone while a caller sleeping out a backoff, not a batch's leader, wakes within
--               1 s: nothing else is under way, and its item will likely join (a create that met
--               a 429 near the end of a run); the window then runs from its waking, beyond 8 W
--               but never past 3 s after the batch's turn: the tail of a run with random 429s
--               sent one PATCH of a single member per such item);
--       window: no caller joined for W seconds, or 8 W passed since the leader arrived (both
--               counted from its turn when a batch ahead of it was being sent), where
--               W = sp.member_batch_window, stretched to twice the connection's average call
--               time on the wire (sp.call_time) when calls are slower (at most 1 s), 1 s while
--               calls queue on the target's rate limit (sp.executor:queued), and shortened for a
--               group whose lone callers keep waiting it out for nothing (see max_wait).
--     It looks after one loop turn (tasks made ready in the same turn join first), then
--     every POLL seconds.
--   - Batches of one group go out one at a time in arrival order (at most one membership PATCH
--     per group on the wire): callers arriving while a batch is being sent form the next one,
--     which goes when the batches ahead are done or all sleeping out a backoff; in the latter
--     case only once a member has joined it since (alone, it waits for them: every other
--     caller may be parked in them, and its PATCH of one member would take a place on a binding
--     rate limit for nothing).
--   - Each caller gets the outcome of its own members only (the first error among them, as its
--     own copy); an id given by several callers is sent once. A caller with more ids than fit
--     takes part in consecutive batches and stops at its first failed one (as chunked requests
--     did). Splitting a failed batch so that one bad member fails no other is send's job.
--   - A caller inside wf:each lends its item's slot (scimrun.engine.each) from joining a batch
--     until its outcome: waiting for a PATCH is not using the connection, and with the slots
--     lent new items keep creating users whose members fill the next batch. Also while the
--     target's rate limit binds: the lent items queue on the limit, but their members fill
--     the batches up to the maximum, and each PATCH saved is a place on the limit for a create
--     (600 users at 30/s: 17-19 PATCHes of at most 64 members, the concurrency, became 10-11).
--   - Every parked caller is woken exactly once, also when the leader's send raises: the others
--     then get an error table and the leader re-raises.
--   - Outside a scheduler task, or with a window of 0, calls are sent on their own (chunked):
--     member_batch.unbatched(sp, mode, ids, send, narrow), also used for dry runs.
local M = {}

local POLL = 0.001
local MAX_WAIT = 1
-- Windows a batch stays open at most while members keep joining: filling 100 members takes
-- about 3-4 s at a binding 30/s, and each PATCH saved matters most on servers whose PATCH costs
-- grow with the group (scimmy: 3 windows sent its first batch at 72-86 members).
local CAP_WAITS = 8
local AHEAD_POLL = 0.01
local SLEEPER_CAP = 3 -- seconds a batch waits for callers asleep in a backoff, at most

function M.unbatched(sp, mode, ids, send, narrow)
  local size, requests = sp.max_members_per_patch, 0
  for first = 1, #ids, size do
    local chunk = {}
    for i = first, math.min(first + size - 1, #ids) do chunk[#chunk + 1] = ids[i] end
    local fails, n = send(mode, chunk)
    requests = requests + n
    local failed, err = {}, nil
    for _, id in ipairs(chunk) do
      if fails[id] then failed[#failed + 1] = id; err = err or fails[id] end
    end
    if err then return nil, narrow(err, mode, failed) end
  end
  return requests
end

-- The error a caller receives when the leader raised instead of returning: its own copy (each
-- step annotates its error table).
local function raised_error(e)
  if type(e) ~= "table" then
    return require("scimrun.errors").new { class = "internal",
      detail = "the membership batch was not sent: " .. tostring(e) }
  end
  local copy = setmetatable({}, getmetatable(e))
  for k, v in pairs(e) do copy[k] = v end
  return copy
end

local function queue_for(sp, group_id)
  local queues = sp._member_queues
  if not queues then queues = {}; sp._member_queues = queues end
  local q = queues[group_id]
  if not q then
    q = { group_id = group_id, batches = {}, open = {} }
    queues[group_id] = q
  end
  return q
end

-- The outcome of one caller's part of a finished batch: {requests} or {err}.
local function outcome(b, part, narrow)
  local failed, err = {}, nil
  for _, id in ipairs(part.ids) do
    local e = b.fails[id]
    if e then failed[#failed + 1] = id; err = err or e end
  end
  if err then return { err = narrow(err, b.mode, failed), requests = b.requests } end
  return { requests = b.requests }
end

-- Takes b out of its group's queue, hands every part its outcome and lets the next batch go.
local function finish(sp, q, b, ok, raised, narrow)
  for i, x in ipairs(q.batches) do
    if x == b then table.remove(q.batches, i); break end
  end
  if q.open[b.mode] == b then q.open[b.mode] = nil end
  if #q.batches == 0 and sp._member_queues[q.group_id] == q then sp._member_queues[q.group_id] = nil end
  local nxt = q.batches[1]
  if nxt and nxt.turn_waiter then
    local co = nxt.turn_waiter
    nxt.turn_waiter = nil
    pcall(scimrun.wake, co)
  end
  local mine
  local now = scimrun.now()
  for _, part in ipairs(b.parts) do
    sp.last_used[part.co] = now -- about to run again: later batches wait for it
    local res
    if ok then
      local pok, r = pcall(outcome, b, part, narrow)
      res = pok and r or { err = raised_error(r) }
    else
      res = { err = raised_error(raised) }
    end
    if part.co == b.leader then mine = res else pcall(scimrun.wake, part.co, res) end
  end
  return mine
end

-- Could another task join this batch soon? One with a request of this connection in flight, or
-- one that used the connection within `horizon` seconds and is neither finished nor parked in a
-- membership batch.
local function others_active(sp, me, now, horizon)
  if sp.in_flight > 0 then return true end
  local active = false
  for co, t in pairs(sp.last_used) do
    if co ~= me and t then
      if now - t > horizon or coroutine.status(co) == "dead" then
        sp.last_used[co] = nil
      else
        active = true
      end
    end
  end
  return active
end

-- The window W: how long a batch stays open after its latest caller joined. The connect option
-- member_batch_window, or twice the connection's average call time when calls take longer (a
-- task in the middle of a request is about that far from joining; a slow or rate-limited
-- provider makes waiting cheap), at most MAX_WAIT. A batch never stays open longer than
-- CAP_WAITS windows after its leader arrived. max_wait scales W by the group's patience: halved
-- each time a lone caller waited it out for nothing, whole again as soon as a batch has several
-- callers (at 0 the group still coalesces the callers arriving while its PATCH is in flight).
-- What the connection's executor says of its target (Executor:queued); false
-- for an executor without that question (a spec's recorder, a single attempt).
local function target_is(sp, question)
  local ex = sp.executor
  return type(ex) == "table" and ex[question] ~= nil and ex[question](ex, sp.target)
end

local function window(sp)
  -- Calls queued on a binding rate limit: each PATCH takes a place a user's create could have
  -- had, and a member waiting here costs little (its slot is lent to an item that queues on
  -- the same limit meanwhile).
  -- The batch then waits long: until it is full, 1 s without a new member, 3 s in all, or the
  -- queue on the limit is gone (the window shrinks back at the next look).
  if target_is(sp, "queued") then return MAX_WAIT end
  return math.min(MAX_WAIT, math.max(sp.member_batch_window, 2 * (sp.call_time or 0)))
end

local function max_wait(sp, group_id)
  local f = sp._member_patience and sp._member_patience[group_id] or 1
  return window(sp) * f
end

local function learn(sp, b, reason)
  sp._member_patience = sp._member_patience or {}
  local gid = b.group_id
  if #b.parts > 1 then
    sp._member_patience[gid] = nil
  elseif reason == "window" then
    local f = (sp._member_patience[gid] or 1) / 2
    sp._member_patience[gid] = f >= 1 / 64 and f or 0
  end
  local st = sp.member_stats
  if not st then
    st = { batches = 0, callers = 0, members = 0, full = 0, window = 0, alone = 0 }
    sp.member_stats = st
  end
  st.batches = st.batches + 1
  st.callers = st.callers + #b.parts
  st.members = st.members + b.n
  st[reason] = st[reason] + 1
end

-- When the first caller asleep in a backoff wakes (it may join a batch then), if within
-- MAX_WAIT of now and not already past by more than `late`; nil if none. The leaders of
-- batches (of any group) are not counted: they wake to send their own PATCH again.
local function sleeper_wake(sp, now, late)
  local leaders, first = {}, nil
  for _, q in pairs(sp._member_queues or {}) do
    for _, x in ipairs(q.batches) do leaders[x.leader] = true end
  end
  for co, at in pairs(sp.backing_off) do
    if type(at) == "number" and at - now <= MAX_WAIT and now - at <= late and not leaders[co]
      and (not first or at < first) and coroutine.status(co) ~= "dead" then
      first = at
    end
  end
  return first
end

-- Is it b's turn? When every batch ahead of it is being sent by a leader that sleeps out a
-- backoff (a 429's Retry-After, a 503): a PATCH waiting a second to be re-sent is not on the
-- wire, and holding every later member back for it stalled whole runs.
local function my_turn(sp, q, b)
  for _, x in ipairs(q.batches) do
    if x == b then return true end
    if not (x.sending and sp.backing_off[x.leader]) then return false end
  end
  return true
end

-- SP:call tells when a call's task starts sleeping out a backoff: the next batch of a group
-- whose batch that task is sending may go.
function M.backing_off(sp, co)
  for _, q in pairs(sp._member_queues or {}) do
    for _, x in ipairs(q.batches) do
      if x.turn_waiter and my_turn(sp, q, x) then
        local waiter = x.turn_waiter
        x.turn_waiter = nil
        pcall(scimrun.wake, waiter)
      end
    end
  end
  return co
end

-- The leader's side: waits for its turn and for company, sends, then wakes everybody.
local function lead(sp, q, b, send, narrow)
  local me = b.leader
  local ok, raised = pcall(function()
    local reason
    local looks = 0 -- since its turn came: tasks made ready in that turn (spawned, woken) join first
    local n_at_turn = b.n -- its members when its turn last came
    -- Waits for the batch ahead (finish() of it wakes this one, or M.backing_off when it starts
    -- sleeping out a backoff). The window then runs from now: this batch could not go while the
    -- one ahead was on the wire, and a server busy with that PATCH (one that re-validates the
    -- whole group) answers no create meanwhile, so no member could join; counted, the wait
    -- sent it half full.
    local function turn_now()
      looks, n_at_turn = 0, b.n
      local now = scimrun.now()
      if b.last_join < now then b.last_join = now end
      if b.started < now then b.started = now end
    end
    local function wait_ahead()
      b.turn_waiter = me
      scimrun.park()
      turn_now()
    end
    local held = false -- waiting below for a batch ahead that backs off
    while true do
      if held and q.batches[1] == b then
        held = false
        turn_now() -- the batch ahead has ended: its window runs from now, as after wait_ahead
      end
      if not my_turn(sp, q, b) then
        held = false
        wait_ahead()
      elseif q.batches[1] ~= b and b.n < sp.max_members_per_patch and b.n <= n_at_turn then
        -- Its turn came only because the batch ahead sleeps out a backoff, and nobody joined it
        -- since: with the other callers parked in that batch (or its items' slots lent up to
        -- wf:each's bound), a PATCH of its few members now would take a place on the limit for
        -- nothing (a 600-user run at 30/s sent one of one member after each 429).
        -- It goes on as any batch once a member joins, or when the batch ahead has ended.
        held = true
        scimrun.sleep(AHEAD_POLL)
      elseif b.n >= sp.max_members_per_patch then
        reason = "full"
        break
      else
        local now = scimrun.now()
        local w = max_wait(sp, b.group_id)
        local left = math.max(math.min(b.last_join + w, b.started + CAP_WAITS * w), b.sleeper_until or 0) - now
        local idle = looks > 0 and not others_active(sp, me, now, window(sp)) and not target_is(sp, "queued")
        local wake = idle and now - b.started < SLEEPER_CAP and sleeper_wake(sp, now, w)
        if wake then -- its window runs from the waking, to SLEEPER_CAP after the batch's turn
          b.sleeper_until = math.min(b.started + SLEEPER_CAP, math.max(b.sleeper_until or 0, wake + w))
          left = math.max(left, b.sleeper_until - now)
        end
        if left <= 0 then reason = "window"
        elseif idle and not wake then reason = "alone"
        end
        if reason then break end
        scimrun.sleep(looks > 0 and math.min(POLL, left) or 0) -- 0: after the tasks ready now
        looks = looks + 1
      end
    end
    if q.open[b.mode] == b then q.open[b.mode] = nil end
    learn(sp, b, reason)
    b.sending = true
    b.fails, b.requests = send(b.mode, b.ids)
    b.fails = b.fails or {}
    b.requests = b.requests or 0
  end)
  local mine = finish(sp, q, b, ok, raised, narrow)
  if not ok then error(raised, 0) end
  return mine
end

-- One pass: puts ids[from..] into the group's open batch (or a new one), up to its room.
-- Returns the caller's outcome {requests} | {err} and the index of the first id not taken.
local function take_part(sp, group_id, mode, ids, from, send, narrow)
  local q = queue_for(sp, group_id)
  local b = q.open[mode]
  local leader = false
  if not b then
    b = { group_id = group_id, mode = mode, ids = {}, seen = {}, n = 0, parts = {}, started = scimrun.now(),
          leader = coroutine.running() }
    q.batches[#q.batches + 1] = b
    q.open[mode] = b
    leader = true
  end
  local max = sp.max_members_per_patch
  local mine, i = {}, from
  while i <= #ids and b.n < max do
    local id = ids[i]
    mine[#mine + 1] = id
    if not b.seen[id] then
      b.seen[id] = true
      b.n = b.n + 1
      b.ids[b.n] = id
    end
    i = i + 1
  end
  if b.n >= max and q.open[mode] == b then q.open[mode] = nil end -- full: the next caller starts another
  local me = coroutine.running()
  b.last_join = scimrun.now()
  b.parts[#b.parts + 1] = { co = me, ids = mine }
  sp.last_used[me] = false -- parked here: not a caller the batches wait for
  -- the item lends its slot while it waits (a cold target's in-flight requests stay bounded by
  -- slow start and the bulkhead, not by the items under way)
  local item = scimrun.ctx().item
  local lend = item and item.lend
  if lend then lend(true) end
  local ok, res
  if leader then
    ok, res = pcall(lead, sp, q, b, send, narrow)
  else
    ok, res = true, scimrun.park() -- finish() wakes us
  end
  if lend then lend(false) end
  if not ok then error(res, 0) end
  return res, i
end

function M.submit(sp, group_id, mode, ids, send, narrow)
  if #ids == 0 then return 0 end
  local sched = rawget(_G, "scimrun")
  if not (sp.member_batch_window > 0 and sched and sched.is_task and sched.is_task()) then
    return M.unbatched(sp, mode, ids, send, narrow)
  end
  local requests, from = 0, 1
  while from <= #ids do
    local res
    res, from = take_part(sp, group_id, mode, ids, from, send, narrow)
    requests = requests + (res.requests or 0)
    if res.err then return nil, res.err end
  end
  return requests
end

-- Batches waiting or being sent, per group (specs, diagnostics).
function M.pending(sp)
  local out = {}
  for gid, q in pairs(sp._member_queues or {}) do out[gid] = #q.batches end
  return out
end

return M
