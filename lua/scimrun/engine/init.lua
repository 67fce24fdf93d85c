-- The workflow engine behind scimrun.workflow: one per run, holding the run's steps, sagas,
-- fan-out and dead letters. Its methods live by concern in this folder and are mixed in here:
--   commit.lua        group commit (one transaction per loop turn)
--   steps.lua         checkpointed steps, recovery, outcomes
--   saga.lua          compensation scopes and rollbacks
--   dead_letters.lua  stopping dispatch, the dead-letter queue, the failures kept for the report
--   each.lua          wf:each fan-out and the input preflight
--   context.lua       the `wf` object a workflow's run function receives
-- events.lua (the run's event stream) and step_history.lua (a reader of it) sit beside them.
local errors = require "scimrun.errors"

local M = {}

local Engine = {}
Engine.__index = Engine
Engine.MAX_LISTED_FAILURES = 20 -- failures (and failed compensations) kept for the report

-- opts: db, run_id, fresh_run (a run this process created and no other writes), params,
--       env (overrides), retry_failed, continue_on_error, concurrency,
--       max_failed_items, log, on_item (report callback), dead_letter (policy table),
--       emit (fn(ev): the run's event stream; items starting, input sizes and dead letters go there),
--       on_dead_letter (hook; dead_letter.on_dead_letter wins)

function M.new(opts)
  local dl = opts.dead_letter or {}
  local self = setmetatable({
    db = opts.db,
    run_id = opts.run_id,
    params = opts.params or {},
    env_overrides = opts.env or {},
    retry_failed = opts.retry_failed,
    continue_on_error = opts.continue_on_error,
    concurrency = opts.concurrency or 16,
    max_failed_items = opts.max_failed_items,
    on_item = opts.on_item or function() end,
    emit = opts.emit or function() end,
    on_dead_letter = dl.on_dead_letter or opts.on_dead_letter,
    dlq_max_size = dl.max_size,
    dlq_pending = nil,  -- pending entries in the store, counted once, then kept up to date
    pending = {},       -- ops waiting for the next group commit
    waiters = {},       -- tasks parked until that commit
    committing = false, -- a committer task is running (Engine:start_apply, SQLite)
    in_commit = nil,    -- the tasks of the commit under way
    sync_error = nil,   -- a commit or sync failed: nothing after it is written (Engine:sync_failed)
    session_started = scimrun.wall(),
    stopping = false,   -- a signal: no new steps (rollbacks excepted)
    draining = false,   -- a failure without continue-on-error: no new items
    fatal = nil,        -- an error that stops the whole run (store failure)
    inflight_keys = {}, -- keys of steps running in this process right now
    -- A run this process created, that no other process writes (SQLite's lock, PostgreSQL's
    -- lock_run; not --worker): the keys of the steps it started, the only ones its store holds
    -- (Engine:step_once). At most KNOWN_KEYS_MAX of them (about 100 bytes each): past that,
    -- every step looks its key up again and memory stays flat.
    known_keys = opts.fresh_run and {} or nil,
    n_known_keys = 0,
    stats = { steps_run = 0, steps_replayed = 0, steps_recovered = 0, items = 0, succeeded = 0,
              failed = 0, skipped = 0, created = 0, updated = 0, adopted = 0, compensated = 0,
              compensation_failed = 0, dead_lettered = 0, commits = 0, dlq_pruned = 0, auth_stopped = 0,
              -- the first failures, for the end-of-run report (bounded: memory stays flat)
              failures = {}, failures_more = 0, compensation_failures = {} },
    step_timeout = opts.step_timeout, -- seconds one step may take, all attempts and waits (0/nil: none)
    executor = opts.executor,         -- the run's retry layer (wf:call)
    allow_deletes = opts.allow_deletes, -- --allow-deletes N (wf.allow_deletes)
    dry_run = opts.dry_run,
    check = opts.check, -- --check: wf:each reads and checks its input, runs no item
    check_command = opts.check_command, -- how to list the bad rows (a normal run's warning)
    rollback_on_abort = opts.rollback_on_abort,
    completed_sagas = {}, -- only filled with rollback_on_abort
    auth_stopped = nil,   -- the first auth failure (a target rejected the token): no new items
  }, Engine)
  self.log = opts.log or function(level, msg, fields) scimrun.log.emit(level, msg, fields) end
  -- The retry layer says when a target rejects the token (event auth_stop): dispatch stops then,
  -- before the failing item's error has even come back.
  if self.executor and self.executor.events then
    self.executor.events:subscribe(function(ev)
      self:auth_stop(errors.new {
        class = "auth", op = ev.op, method = ev.method, url = ev.url, status = ev.status, rule = ev.rule,
        detail = ev.detail, suggest = ev.suggest, target = ev.target, credential = ev.credential,
        auth_stop = true, from_event = true })
    end, { "auth_stop" })
  end
  if dl.retention_days and self.db then self:prune_dead_letters(dl.retention_days) end
  return self
end

-- Deletes dead letters older than the policy's retention (dead_letter.retention_days).
function Engine:prune_dead_letters(days)
  -- the steps' attempt history goes with the same retention
  if self.db.events_prune then pcall(self.db.events_prune, self.db, days * 86400) end
  local ok, n, err = pcall(self.db.dlq_prune, self.db, days * 86400)
  if ok and n then
    self.stats.dlq_pruned = n
    if n > 0 then self.log("info", "dead letters pruned", { count = n, older_than_days = days }) end
  else
    self.log("warn", "could not prune old dead letters", { error = tostring(ok and err or n) })
  end
end

for _, part in ipairs { "commit", "steps", "saga", "dead_letters", "each", "context" } do
  for name, fn in pairs(require("scimrun.engine." .. part)) do
    assert(Engine[name] == nil, name)
    Engine[name] = fn
  end
end
M.Engine = Engine

return M
