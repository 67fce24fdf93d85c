-- Worker mode (`scimrun WF.lua --state postgres://... --worker`, issue 16): this process is one
-- of N workers of one run. It registers in scimrun.workers, claims items in batches (see
-- claims.lua for the SQL), keeps its leases alive with one statement every third of the lease,
-- finishes items under the fence it claimed them with, gives back what it will not run when it
-- stops, and shares the target's protection with the others: a breaker one worker opens, the
-- others follow; a fixed rate limit is divided by the live workers (from the heartbeats).
--
-- The engine asks the worker for items through source() (scimrun.engine.each) and tags every
-- step write of a claimed item with its claim (scimrun.engine.commit), so the store writes it
-- only while the claim's fence is the item's (a lost lease: the write is discarded and logged).
local ffi = require "ffi"
local claims = require "scimrun.worker.claims"
local cjson = require "cjson"

ffi.cdef [[
int getpid(void);
int gethostname(char *name, size_t len);
]]

local M = {}
local Worker = {}
Worker.__index = Worker

M.DEFAULT_LEASE = 30 -- seconds; a dead worker's items are claimed again after at most this

local function hostname()
  local buf = ffi.new("char[256]")
  if ffi.C.gethostname(buf, 255) ~= 0 then return "unknown" end
  return ffi.string(buf)
end

-- o: db (the PostgreSQL store), run_id, lease (seconds), executor (the run's retry layer),
--    log(level, msg, fields)
function M.new(o)
  local pid = ffi.C.getpid()
  local self = setmetatable({
    db = o.db, run_id = o.run_id, lease = o.lease or M.DEFAULT_LEASE,
    executor = o.executor, log = o.log or function(level, msg, fields) scimrun.log.emit(level, msg, fields) end,
    host = hostname(), pid = pid,
    held = {},     -- batch -> { [idx] = fence }: claims of this process not finished yet
    finished = {}, -- batch -> array of { idx, fence, outcome } to mark done at the next flush
    live = 1, stopped = false,
  }, Worker)
  -- host:pid:random, so a pid reused on the host is another worker
  self.id = ("%s:%d:%s"):format(self.host, pid, require("scimrun.cli.runfiles").new_run_id():sub(-6))
  claims.register(self.db, self.run_id, self.id, self.host, pid)
  if o.retry_failed then
    local n = claims.reopen_failed(self.db, self.run_id)
    if n > 0 then self.log("info", "--retry-failed: failed items are claimable again", { items = n }) end
  end
  -- LISTEN on a connection of its own: a wait parked on its socket is never raced by the
  -- queries of the store's connection.
  local ok, lerr = self:listen_again()
  if not ok then error(("worker: cannot LISTEN for the other workers: %s"):format(tostring(lerr)), 0) end
  self.log("info", "worker joined the run", { run = self.run_id, worker = self.id, lease_s = self.lease })
  return self
end

-- (Re)opens the connection that waits for the other workers' NOTIFYs. true | nil, err.
function Worker:listen_again()
  if self.listen then self.listen:close(); self.listen = nil end
  local conn, err = require("scimrun.pg").connect(self.db:path())
  if not conn then return nil, err end
  local ok, lerr = conn:exec("LISTEN " .. claims.CHANNEL)
  if not ok then conn:close(); return nil, lerr end
  self.listen = conn
  return true
end

-- The heartbeat task: every third of the lease, extend every lease of this worker and learn
-- how many workers are alive (their share of a fixed rate limit), and follow the breakers the
-- other workers opened.
function Worker:start()
  local me = self
  scimrun.spawn(function()
    local period = me.lease / 3
    while not me.stopped do
      local slept = 0
      while slept < period and not me.stopped do scimrun.sleep(0.1); slept = slept + 0.1 end
      if me.stopped then break end
      local ok, live = pcall(claims.heartbeat, me.db, me.run_id, me.id, me.lease)
      if ok then
        me:set_live(live)
        me:run_items()
        me:follow_breakers()
      else
        me.log("warn", "worker heartbeat failed; the leases may run out",
          { error = tostring(type(live) == "table" and live.detail or live) })
      end
    end
  end)
  self:set_live(claims.heartbeat(self.db, self.run_id, self.id, self.lease))
  if self.executor and self.executor.events then
    self.executor.events:subscribe(function(ev)
      if ev.state == "open" and not ev.shared then self:share_breaker(ev) end
    end, { "breaker" })
  end
end

function Worker:set_live(n)
  n = math.max(1, tonumber(n) or 1)
  if n ~= self.live then
    self.log("info", "workers of the run", { live = n, share = ("1/%d of a fixed rate limit"):format(n) })
  end
  self.live = n
  if self.executor and self.executor.set_share then self.executor:set_share(1 / n) end
end

-- The items done by every worker in the batches this worker runs, counted now (at each
-- heartbeat and when a batch starts here): an event of the run's stream, so the progress shows
-- the run's done/total and ETA, not this worker's share against the whole input. every: the
-- seconds until the next count. A failed count is skipped (the heartbeat logs the database).
function Worker:run_items()
  local batches = {}
  for batch in pairs(self.held) do batches[#batches + 1] = batch end
  if #batches == 0 or not (self.executor and self.executor.events) then return end
  local ok, n = pcall(claims.done_count, self.db, self.run_id, batches)
  local done = ok and tonumber(n)
  if done then
    self.executor.events:emit { type = "run_items", done = done, every = self.lease / 3, worker = self.id }
  end
end

function Worker:share_breaker(ev)
  local tg = self.executor.targets[ev.target]
  if not tg then return end
  local now = scimrun.now()
  local snap = tg.breaker:snapshot(now)
  snap.cooldown = ev.cooldown or 1
  pcall(claims.publish_breaker, self.db, self.run_id, ev.target, ev.cooldown or 1, cjson.encode(snap))
end

function Worker:follow_breakers()
  if not self.executor then return end
  local ok, rows = pcall(claims.open_breakers, self.db, self.run_id)
  if not ok then return end
  for _, r in ipairs(rows) do
    local snap_ok, snap = pcall(cjson.decode, r.snapshot_json or "")
    if snap_ok and type(snap) == "table" then
      -- opened_ago as seen now: the cooldown it was opened with, less what is left of it
      snap.opened_ago = math.max(0, (tonumber(snap.cooldown) or 0) - (tonumber(r.open_for) or 0))
      snap.cooldown = nil
      self.executor:adopt_breaker(r.target, snap)
    end
  end
end

-- A step outside any item: one worker at a time runs it (scimrun.engine.steps). The lock is
-- tried without blocking the loop, so this worker's heartbeat goes on while it waits.
function Worker:lock_step(key)
  while not claims.try_lock_step(self.db, self.run_id, key) do scimrun.sleep(0.05) end
end

function Worker:unlock_step(key)
  pcall(claims.unlock_step, self.db, self.run_id, key)
end

function Worker:failed_items()
  local ok, n = pcall(claims.count_failed, self.db, self.run_id)
  return ok and n or 0
end

-- ---- items ---------------------------------------------------------------------------------

-- The items of the n-th wf:each call of the run, as a source for the engine: loaded once (by
-- whichever worker comes first, through the workflow's iterator), then claimed in batches.
-- Returns { total, next(free) -> item, info | nil, "wait" | nil (all done), wait() }.
function Worker:source(batch, iter, preflight)
  local total = claims.loaded(self.db, self.run_id, batch)
  if not total then
    if preflight then preflight() end
    total = claims.load_once(self.db, self.run_id, batch, self.id, iter)
  end
  self.held[batch] = self.held[batch] or {}
  self.finished[batch] = self.finished[batch] or {}
  self:run_items() -- a worker joining a run under way starts from what the others did
  local me, queue = self, {}
  local expires -- seconds until another worker's first lease runs out, as the last count saw it
  local src = { total = total }
  -- free: slots free in the engine; claims are made for those only, so no worker holds items
  -- it cannot start while another idles. busy: items of this worker are still under way, so
  -- with nothing to claim the answer is "wait" without counting what is left (a query over the
  -- whole input, once per item ending at the end of a run).
  function src.next(free, busy)
    if me.stopped then return nil end
    if #queue == 0 then
      me:flush()
      local got = claims.claim(me.db, me.run_id, batch, me.id, math.max(1, free), me.lease)
      for _, c in ipairs(got) do
        me.held[batch][c.idx] = c.fence
        queue[#queue + 1] = c
        if c.in_doubt then
          me.log("info", "item claimed again after its lease ran out: its steps are in doubt and are "
            .. "checked before anything is sent again", { item = c.idx, fence = c.fence })
        end
      end
    end
    local c = table.remove(queue, 1)
    if c then
      local info = type(c.info) == "table" and c.info or {}
      info.claim = { batch = batch, idx = c.idx, fence = c.fence, in_doubt = c.in_doubt }
      return c.item, info
    end
    if busy then return nil, "wait" end
    local left
    left, expires = claims.remaining(me.db, me.run_id, batch, me.id)
    if left == 0 then return nil end
    return nil, "wait"
  end
  -- Nothing to claim and nothing running here: wait for a NOTIFY (items finished or given
  -- back) or until the first lease of another worker runs out.
  -- (src.next has just counted what is left: its lease expiry is reused, not read again)
  function src.wait()
    local t = math.min(5, math.max(0.05, (tonumber(expires) or 5) + 0.05))
    if not (me.listen and me.listen:wait(t)) then
      -- the LISTEN connection broke (the database restarted): open it again; meanwhile sleep,
      -- so a broken connection never turns this wait into a busy loop
      me:listen_again()
      scimrun.sleep(t)
    end
  end
  -- Gives back the claims queued here and not started (the worker stops).
  function src.release()
    local idxs = {}
    for _, c in ipairs(queue) do idxs[#idxs + 1] = c.idx; me.held[batch][c.idx] = nil end
    queue = {}
    if #idxs > 0 then pcall(claims.release, me.db, me.run_id, me.id, { [batch] = idxs }) end
  end
  return src
end

-- An item of a claim ended (done, failed into the dead-letter queue, or rolled back): marked
-- done at the next flush (the engine's group commit), under its fence.
function Worker:item_finished(claim, outcome)
  self.held[claim.batch][claim.idx] = nil
  local f = self.finished[claim.batch]
  f[#f + 1] = { idx = claim.idx, fence = claim.fence, outcome = outcome }
end

-- An item whose run here ended without a verdict (interrupted, lease lost): not done.
function Worker:item_dropped(claim)
  self.held[claim.batch][claim.idx] = nil
end

-- Marks the finished items done: one statement per wf:each batch. Called after the engine's
-- group commit (their steps are durable first).
function Worker:flush()
  for batch, list in pairs(self.finished) do
    if #list > 0 then
      self.finished[batch] = {}
      local n = claims.finish(self.db, self.run_id, batch, list)
      if n < #list then
        self.log("warn", "lease lost: another worker claimed items this worker was finishing; their results "
          .. "here are discarded and the other worker's stand", { items = #list - n })
      end
    end
  end
end

-- The worker stops (end of the run, a signal, or a failure): what it finished is marked, what
-- it holds and did not finish is given back at once, and it leaves the run.
function Worker:stop()
  if self.stopped then return end
  self.stopped = true
  pcall(self.flush, self)
  local give_back = {}
  for batch, held in pairs(self.held) do
    local idxs = {}
    for idx in pairs(held) do idxs[#idxs + 1] = idx end
    give_back[batch] = idxs
  end
  pcall(claims.release, self.db, self.run_id, self.id, give_back)
  pcall(claims.unregister, self.db, self.id)
  if self.listen then self.listen:close(); self.listen = nil end
end

return M
