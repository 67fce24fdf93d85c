-- Group commit: every write of every task queued during a loop turn goes in one transaction
-- at the end of the turn (the scheduler calls Engine:flush), then the waiting tasks are woken.
-- With a SQLite state file at durability full, the transaction's log is synced off the loop
-- (db:sync on the thread pool): its tasks wake when that sync is done, and meanwhile the loop
-- serves the other tasks and gathers what they write for the next transaction, written when
-- the sync is done. The loop used to stop for every fsync: a third of a 10,000-user run's wall
-- time when each fsync takes 2 ms (bench/fsync_bench.sh), little on a fast local disk.
local errors = require "scimrun.errors"

local Engine = {} -- methods, mixed into the engine by scimrun.engine

local LEASE_LOST = "lease lost"

-- Step writes of a claimed item (worker mode) carry its claim: the store makes them only while
-- the item's fence is still the claim's.
local CLAIMED = { step_start = true, step_complete = true, step_fail = true, step_compensated = true }

-- Called by the scheduler after every loop turn: commits everything queued in one transaction
-- and wakes the waiting tasks with the outcome. Whatever goes wrong, no task is left parked:
-- an error here (a bug, a store binding out of step with this code) stops the run and wakes
-- every waiter with it, where it used to leave them waiting forever, deaf to SIGTERM.
-- force: write now even while a sync runs (a hard stop, whose own last write syncs the log).
function Engine:flush(force)
  -- While a sync runs, writes wait for it: the syncer writes them in one transaction when it
  -- is done (their own sync could not start earlier anyway), fewer and larger transactions.
  if #self.pending == 0 or (self.syncing and not force) then return end
  -- While a task restores the PostgreSQL store's lost connection, writing now (outside any
  -- task) would run a second reconnect window of its own, blocking the loop, that task with
  -- it: the writes wait for a later turn, and meet the restored connection or the verdict.
  if self:store_recovering() then return end
  self:write_pending()
end

function Engine:store_recovering() return self.db.recovering ~= nil and self.db:recovering() end

function Engine:write_pending()
  if self.sync_error then return self:sync_failed() end -- nothing more after a failed sync
  local batch, waiters = self.pending, self.waiters
  self.pending, self.waiters = {}, {}
  local ok, err = pcall(self.commit_batch, self, batch, waiters)
  if ok then return end
  self.fatal = self.fatal or errors.new {
    class = "internal", op = "recording steps", detail = "the group commit failed: " .. tostring(err),
    suggest = "report this as a bug; what was committed before is kept and the run can be resumed" }
  self.stopping = true
  for _, w in ipairs(waiters) do pcall(scimrun.wake, w.co, false, self.fatal) end -- some may be awake
end

function Engine:commit_batch(batch, waiters)
  -- unsynced (SQLite at durability full, only on success): durable after the next db:sync
  local ok, ids_or_err, lost, unsynced = self.db:apply(batch, self.db.sync ~= nil)
  local code = not ok and lost or nil -- on failure the third value is the store's error code
  self.stats.commits = self.stats.commits + 1
  -- worker mode: writes of an item whose lease another worker took were not made (fencing)
  local lost_at
  if ok and lost and #lost > 0 then
    lost_at = {}
    for _, i in ipairs(lost) do lost_at[i] = true end
  end
  if not ok and code == "CONNECTION" then
    self.fatal = self.fatal or errors.new {
      class = "store", op = "recording steps", detail = "the state database is unreachable: " .. tostring(ids_or_err)
        .. " (everything committed before is kept)",
      suggest = "bring the database back (or fix the network to it), then resume the run" }
    self.stopping = true
  elseif not ok then
    self.fatal = self.fatal or errors.new {
      class = "store", op = "recording steps", detail = "cannot write the state file: " .. tostring(ids_or_err) ..
        " (everything committed before is kept; free space or fix permissions, then --resume)",
    }
    self.stopping = true
  end
  if unsynced then
    assert(lost == nil and not self.worker, "a store that defers its sync has no fenced writes")
    for _, w in ipairs(waiters) do
      w.id = type(ids_or_err) == "table" and ids_or_err[w.index] or nil
      self.unsynced[#self.unsynced + 1] = w
    end
    self:start_sync()
    return
  end
  for _, w in ipairs(waiters) do
    local id = ok and type(ids_or_err) == "table" and ids_or_err[w.index] or nil
    if lost_at and lost_at[w.index] then
      scimrun.wake(w.co, false, LEASE_LOST)
    else
      scimrun.wake(w.co, ok, ok and id or ids_or_err)
    end
  end
  -- the items whose steps are now durable are marked done for every worker
  if ok and self.worker then
    local fok, ferr = pcall(self.worker.flush, self.worker)
    if not fok then
      self.fatal = self.fatal or errors.normalize(ferr)
      self.stopping = true
    end
  end
end

-- The syncer: one task while commits wait for their log to reach the disk. Each db:sync
-- covers every commit written before it began, so the tasks gathered meanwhile wake together
-- after the next one. A failed sync is final: what it covered may be lost, and a later sync
-- could not tell (after an EIO, Linux reports success for pages it dropped), so nothing
-- written after it is written or reported durable; the run stops as on a failed commit.
function Engine:start_sync()
  if self.syncing or #self.unsynced == 0 then return end
  self.syncing = true
  scimrun.spawn(function()
    local ok, err = pcall(self.sync_rounds, self)
    self.syncing = false
    if not ok then self:sync_failed(err) end -- a bug or a closed store: nobody waits forever
  end)
end

function Engine:sync_rounds()
  while #self.unsynced > 0 do
    self.in_sync, self.unsynced = self.unsynced, {}
    local ok, err = self.db:sync()
    if not ok then return self:sync_failed(err) end
    local waiters = self.in_sync
    self.in_sync = nil
    for _, w in ipairs(waiters) do scimrun.wake(w.co, true, w.id) end
    -- what was queued meanwhile: written now, in one transaction, and synced next round
    if #self.pending > 0 then self:write_pending() end
  end
end

-- Stops the run and fails every write not known durable: those of the failed sync, those
-- written after it and those still queued.
function Engine:sync_failed(err)
  self.sync_error = self.sync_error or err
  self.fatal = self.fatal or errors.new {
    class = "store", op = "recording steps", detail = tostring(self.sync_error),
    suggest = "check the disk the state file is on, then --resume" }
  self.stopping = true
  local lists = { self.in_sync or {}, self.unsynced, self.waiters }
  self.in_sync, self.unsynced, self.waiters, self.pending = nil, {}, {}, {}
  for _, list in ipairs(lists) do
    for _, w in ipairs(list) do pcall(scimrun.wake, w.co, false, self.sync_error) end -- some may be awake
  end
end

-- The end of a run: waits for a sync under way, then writes (and syncs) what is left, so the
-- store is closed with nothing queued and no syncer running.
function Engine:settle()
  repeat
    while self.syncing or self:store_recovering() do scimrun.sleep(0.001) end
    self:flush()
  until not self.syncing and #self.pending == 0
end

-- Queues one write for the next group commit without waiting for it: for state whose loss in
-- a crash costs nothing but a repeat (the retry budget, backoff deadlines, breaker state), so
-- a retry adds no transaction of its own.
function Engine:enqueue(op)
  if self.fatal then return end
  op.run_id = self.run_id
  self.pending[#self.pending + 1] = op
end

-- Queues one write and parks until it is durable. Raises when the store failed.
function Engine:commit(op)
  if self.fatal then error(self.fatal, 0) end
  op.run_id = self.run_id
  if self.worker and CLAIMED[op.op] then
    local item = scimrun.ctx().item
    op.claim = item and item.claim or nil
  end
  self.pending[#self.pending + 1] = op
  self.waiters[#self.waiters + 1] = { co = coroutine.running(), index = #self.pending }
  local ok, id_or_err = scimrun.park()
  if not ok and id_or_err == LEASE_LOST then
    error(errors.new { class = "lease_lost", step = op.key,
      detail = "the item's lease ran out and another worker claimed it; this write was discarded" }, 0)
  end
  if not ok then error(self.fatal or errors.new { class = "store", detail = tostring(id_or_err) }, 0) end
  return id_or_err
end

return Engine
