-- Group commit: every write of every task queued during a loop turn goes in one transaction
-- at the end of the turn (the scheduler calls Engine:flush), then the waiting tasks are woken.
-- With a SQLite state file the whole commit leaves the loop (db:apply_async on the thread pool:
-- the transaction, then at durability full the log's fdatasync): its tasks wake when it is
-- durable, and meanwhile the loop serves the other tasks and gathers what they write for the
-- next one, written when this one is done. The loop used to stop for every fsync (a third of a
-- 10,000-user run's wall time when each takes 2 ms, bench/fsync_bench.sh), then for every
-- transaction (a fifth of its CPU: each commit writes the B-tree pages its rows touch).
-- The PostgreSQL store's db:apply is a task's round trip already.
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
-- force: write now even while a commit is under way (a hard stop: written on the loop once that
-- commit lets the store go, and synced in its own commit).
function Engine:flush(force)
  -- While a commit is under way, writes wait for it: the committer writes them in one
  -- transaction when it is done, fewer and larger transactions.
  if #self.pending == 0 or (self.committing and not force) then return end
  -- While a task restores the PostgreSQL store's lost connection, writing now (outside any
  -- task) would run a second reconnect window of its own, blocking the loop, that task with
  -- it: the writes wait for a later turn, and meet the restored connection or the verdict.
  if self:store_recovering() then return end
  self:write_pending(force)
end

function Engine:store_recovering() return self.db.recovering ~= nil and self.db:recovering() end

function Engine:write_pending(force)
  if self.sync_error then return self:sync_failed() end -- nothing more after a failed commit
  -- a hard stop (force) writes on the loop, now: it exits right after, no committer would run
  if self.db.apply_async and not force then return self:start_apply() end
  local batch, waiters = self.pending, self.waiters
  self.pending, self.waiters = {}, {}
  local ok, err = pcall(self.commit_batch, self, batch, waiters)
  if ok then return end
  self:commit_raised(err, waiters)
end

-- A bug (or a store binding out of step with this code) stops the run and wakes every waiter.
function Engine:commit_raised(err, waiters)
  self.fatal = self.fatal or errors.new {
    class = "internal", op = "recording steps", detail = "the group commit failed: " .. tostring(err),
    suggest = "report this as a bug; what was committed before is kept and the run can be resumed" }
  self.stopping = true
  for _, w in ipairs(waiters) do pcall(scimrun.wake, w.co, false, self.fatal) end -- some may be awake
end

-- The store's failure to write a batch (rolled back): the run stops, everything before is kept.
function Engine:write_failed(err, code)
  if code == "CONNECTION" then
    self.fatal = self.fatal or errors.new {
      class = "store", op = "recording steps", detail = "the state database is unreachable: " .. tostring(err)
        .. " (everything committed before is kept)",
      suggest = "bring the database back (or fix the network to it), then resume the run" }
  else
    self.fatal = self.fatal or errors.new {
      class = "store", op = "recording steps", detail = "cannot write the state file: " .. tostring(err) ..
        " (everything committed before is kept; free space or fix permissions, then --resume)",
    }
  end
  self.stopping = true
end

-- On the loop: the PostgreSQL store (a task's round trip), or a hard stop's last write.
function Engine:commit_batch(batch, waiters)
  local ok, ids_or_err, lost = self.db:apply(batch)
  local code = not ok and lost or nil -- on failure the third value is the store's error code
  self.stats.commits = self.stats.commits + 1
  -- worker mode: writes of an item whose lease another worker took were not made (fencing)
  local lost_at
  if ok and lost and #lost > 0 then
    lost_at = {}
    for _, i in ipairs(lost) do lost_at[i] = true end
  end
  if not ok then self:write_failed(ids_or_err, code) end
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

-- The committer (SQLite): one task handing group commits to the thread pool one after another
-- (db:apply_async: the transaction, then at durability full the log's fdatasync), while the
-- loop serves the other tasks and gathers the next batch. A failed commit or sync is final:
-- what a failed sync covered may be lost, and a later sync could not tell (after an EIO, Linux
-- reports success for pages it dropped), so nothing after it is written or reported durable;
-- the run stops.
function Engine:start_apply()
  if self.committing or #self.pending == 0 then return end
  self.committing = true
  scimrun.spawn(function()
    local ok, err = pcall(self.apply_rounds, self)
    self.committing = false
    if ok then return end
    self:commit_raised(err, {}) -- a bug or a closed store: the run stops, nobody waits forever
    self:sync_failed(self.fatal.detail)
  end)
end

function Engine:apply_rounds()
  while #self.pending > 0 and not self.sync_error do
    local batch = self.pending
    self.in_commit, self.pending, self.waiters = self.waiters, {}, {}
    local ok, ids_or_err, code = self.db:apply_async(batch)
    self.stats.commits = self.stats.commits + 1
    if not ok then
      if code ~= "SYNC" then self:write_failed(ids_or_err, code) end
      return self:sync_failed(ids_or_err)
    end
    for _, w in ipairs(self.in_commit) do pcall(scimrun.wake, w.co, true, ids_or_err[w.index]) end
    self.in_commit = nil
  end
end

-- Stops the run and fails every write not known durable: those of the failed commit and those
-- still queued.
function Engine:sync_failed(err)
  self.sync_error = self.sync_error or err
  self.fatal = self.fatal or errors.new {
    class = "store", op = "recording steps", detail = tostring(self.sync_error),
    suggest = "check the disk the state file is on, then --resume" }
  self.stopping = true
  local lists = { self.in_commit or {}, self.waiters }
  self.in_commit, self.waiters, self.pending = nil, {}, {}
  for _, list in ipairs(lists) do
    for _, w in ipairs(list) do pcall(scimrun.wake, w.co, false, self.sync_error) end -- some may be awake
  end
end

-- The end of a run: waits for a commit under way, then writes (and syncs) what is left, so the
-- store is closed with nothing queued and no committer running.
function Engine:settle()
  repeat
    while self.committing or self:store_recovering() do scimrun.sleep(0.001) end
    self:flush()
  until not self.committing and #self.pending == 0
end

-- Queues one write for the next group commit without waiting for it: for state whose loss in
-- a crash costs nothing but a repeat (the retry budget, backoff deadlines, breaker state), so
-- a retry adds no transaction of its own.
function Engine:enqueue(op)
  if self.fatal then return end
  op.run_id = self.run_id
  self.pending[#self.pending + 1] = op
end

-- Queues one write of the running task for the next group commit without waiting for it.
function Engine:commit_later(op)
  if self.fatal then error(self.fatal, 0) end
  op.run_id = self.run_id
  if self.worker and CLAIMED[op.op] then
    local item = scimrun.ctx().item
    op.claim = item and item.claim or nil
  end
  self.pending[#self.pending + 1] = op
end

-- Queues one write and parks until it is durable. Raises when the store failed.
function Engine:commit(op)
  self:commit_later(op)
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
