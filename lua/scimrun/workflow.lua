-- Durable workflow execution: steps checkpointed in the store, bounded streaming fan-out,
-- saga compensation scopes, resume from the top with recorded results.
--
--   scimrun.workflow{ name, params, run = function(wf, p) ... end, options = {...} }
--   wf:step(key, fn, opts)   opts: recover = fn() -> result|nil, compensate = fn(result)
--   wf:each(iter, opts, fn)  opts: concurrency, preflight (fn(iter) -> {rows, bad}: see Engine:preflight)
--   wf:saga(fn)              compensation scope
--   wf.env(name), wf.params, wf.run_id, wf.log(level, msg, fields), wf:outcome(name)
--
-- A step's result is committed (group commit: every step finishing in the same loop turn
-- shares one transaction) before wf:step returns. A step recorded `started` but never
-- finished is in doubt: on resume opts.recover() decides whether its effect happened.
-- A step function fails by raising an error table or by returning `nil, err` (the SCIM
-- client's convention), so `wf:step(k, function() return sp.users:create(row) end)` works.
--
-- Failure handling:
--   - saga: the compensations of the scope's completed steps run in reverse, each a checkpointed
--     step `compensate:KEY`; a signal does not cut a rollback in half (it finishes or, on a
--     hard stop, is left in doubt and resumed). A compensation that fails goes to the
--     dead-letter queue marked as compensation and is reported loudly.
--   - auth (a 401/403: the target rejected the token; the retry layer then sends nothing more
--     to it): the run stops dispatching items at once, with or without continue_on_error. The
--     items in flight end `interrupted`, not failed: their step is not recorded failed, no saga
--     compensates, nothing is dead-lettered, so after the token is fixed `--resume` redoes them.
--     The run fails (exit 1) with the first such error, which names the token's variable.
--   - continue_on_error: a failed item goes to the dead-letter queue and the run goes on,
--     until max_failed_items (count, or "N%" of the items dispatched, from 20 items on) is
--     crossed. Without it, the first failure stops dispatch; in-flight items run to their end.
--   - dead_letter = { max_size, retention_days, on_dead_letter } (policy): entries older than
--     retention_days are pruned when the engine starts; a full queue fails the item (and the
--     run) instead of dropping it; on_dead_letter(entry) runs under policy.guard.
local cjson = require "cjson"
local errors = require "scimrun.errors"
local report = require "scimrun.report"

local M = {}

local WORKFLOW = {}
M.WORKFLOW = WORKFLOW

-- scimrun.workflow{...}: validates the definition a workflow file returns.
function M.define(def)
  if type(def) ~= "table" then error("scimrun.workflow expects a table {name, params, run}", 2) end
  if type(def.name) ~= "string" or def.name == "" then
    error("scimrun.workflow: `name` must be a non-empty string", 2)
  end
  if type(def.run) ~= "function" then error("scimrun.workflow: `run` must be a function(wf, params)", 2) end
  if def.params ~= nil and type(def.params) ~= "table" then
    error("scimrun.workflow: `params` must be a table of defaults", 2)
  end
  def.params = def.params or {}
  def.options = def.options or {}
  return setmetatable(def, WORKFLOW)
end

function M.is_workflow(v) return getmetatable(v) == WORKFLOW end

local Engine = {}
Engine.__index = Engine

-- opts: db, run_id, params, env (overrides), retry_failed, continue_on_error, concurrency,
--       max_failed_items, log, on_item (report callback), dead_letter (policy table),
--       emit (fn(ev): the run's event stream; items starting, input sizes and dead letters go there),
--       on_dead_letter (hook; dead_letter.on_dead_letter wins)
local MAX_LISTED_FAILURES = 20

function M.engine(opts)
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
    session_started = scimrun.wall(),
    stopping = false,   -- a signal: no new steps (rollbacks excepted)
    draining = false,   -- a failure without continue-on-error: no new items
    fatal = nil,        -- an error that stops the whole run (store failure)
    inflight_keys = {}, -- keys of steps running in this process right now
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
      if ev.type == "auth_stop" then self:auth_stop(errors.new {
        class = "auth", op = ev.op, method = ev.method, url = ev.url, status = ev.status, rule = ev.rule,
        detail = ev.detail, suggest = ev.suggest, target = ev.target, credential = ev.credential,
        auth_stop = true, from_event = true }) end
    end)
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

-- ---- group commit -----------------------------------------------------------------

-- Called by the scheduler after every loop turn: commits everything queued in one transaction
-- and wakes the waiting tasks with the outcome.
function Engine:flush()
  if #self.pending == 0 then return end
  local batch, waiters = self.pending, self.waiters
  self.pending, self.waiters = {}, {}
  local ok, ids_or_err = self.db:apply(batch)
  self.stats.commits = self.stats.commits + 1
  if not ok then
    self.fatal = self.fatal or errors.new {
      class = "store", detail = "cannot write the state file: " .. tostring(ids_or_err) ..
        " (everything committed before is kept; free space or fix permissions, then --resume)",
    }
    self.stopping = true
  end
  for _, w in ipairs(waiters) do
    local id = ok and type(ids_or_err) == "table" and ids_or_err[w.index] or nil
    scimrun.wake(w.co, ok, ok and id or ids_or_err)
  end
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
  self.pending[#self.pending + 1] = op
  self.waiters[#self.waiters + 1] = { co = coroutine.running(), index = #self.pending }
  local ok, id_or_err = scimrun.park()
  if not ok then error(self.fatal or errors.new { class = "store", detail = tostring(id_or_err) }, 0) end
  return id_or_err
end

-- ---- steps --------------------------------------------------------------------------

local function encode_result(key, value, limit)
  local ok, json = pcall(cjson.encode, { v = value })
  if not ok then
    error(errors.new { class = "usage", step = key,
      detail = ("step %q returned a value that is not JSON-serialisable (%s); return plain tables, "
        .. "strings, numbers and booleans"):format(key, tostring(json)) }, 0)
  end
  if limit and #json > limit then -- the store refuses it (max_value_bytes): never recorded done
    error(errors.new { class = "permanent", step = key,
      detail = ("the result of step %q is %d bytes, over the state file's limit of %d bytes for one stored "
        .. "value; it was not recorded"):format(key, #json, limit),
      suggest = "return less from the step (e.g. ids, not whole resources)" }, 0)
  end
  return json
end

local function decode_result(json)
  if not json then return nil end
  return cjson.decode(json).v
end

local function error_json(err)
  local e = errors.normalize(err)
  return cjson.encode(errors.persistable(e))
end

local OUTCOMES = { created = true, skipped = true, updated = true, adopted = true }

-- ctx.step:op_key(op): a key naming the n-th retried operation of the step, stable across a
-- resume (the workflow re-executes in the same order): the retry layer checkpoints pending
-- backoff deadlines under it, so a resumed run waits only for what is left.
local function step_op_key(step, op)
  step.n = step.n + 1
  return step.key .. "#" .. step.n .. ":" .. op
end

-- Task-local state lives in scimrun.ctx(), inherited by the tasks a task spawns (wf:map
-- workers, wf:each items): ctx.item = { outcome } of the item being processed, ctx.saga = the
-- innermost saga scope, ctx.step = the step running (its key, retried operations so far and
-- deadline), ctx.rolling_back = compensations are running (a signal does not stop them).

function Engine:note_outcome(outcome) -- luacheck: ignore 212 (a method, like its siblings)
  if not OUTCOMES[outcome] then return end
  local item = scimrun.ctx().item
  if not item then return end
  local prev = item.outcome
  -- an item is "created" if any of its steps created something, else the strongest outcome
  if prev == nil or outcome == "created" or (prev == "skipped" and outcome ~= "skipped") then
    item.outcome = outcome
  end
end

function Engine:step(key, fn, opts)
  opts = opts or {}
  if type(key) ~= "string" or key == "" then error("wf:step: key must be a non-empty string", 2) end
  if type(fn) ~= "function" then error("wf:step: fn must be a function", 2) end
  if self.fatal then error(self.fatal, 0) end
  if self.inflight_keys[key] then
    error(errors.new { class = "usage", step = key,
      detail = ("duplicate step key %q in this run: step keys must be unique (add the item's id)"):format(key) }, 0)
  end
  local rec = self.db:step_get(self.run_id, key)
  if rec and rec.started_at and rec.started_at >= self.session_started then
    error(errors.new { class = "usage", step = key,
      detail = ("duplicate step key %q in this run: step keys must be unique (add the item's id)"):format(key) }, 0)
  end
  local attempts = (rec and rec.attempts or 0)
  if rec then
    if rec.state == "completed" then
      self.stats.steps_replayed = self.stats.steps_replayed + 1
      self:register_compensation(key, decode_result(rec.result_json), opts)
      return decode_result(rec.result_json)
    elseif rec.state == "compensated" then
      error(errors.new { class = "permanent", step = key, replayed = true, compensated = true,
        detail = "rolled back in an earlier run of this run id (a later step of its saga failed)",
        suggest = "start a new run of the workflow to redo rolled-back items" }, 0)
    elseif rec.state == "failed" and not self.retry_failed then
      local e = rec.error_json and cjson.decode(rec.error_json) or { detail = "failed in an earlier run" }
      e.step = key
      e.replayed = true
      error(errors.new(e), 0)
    end
  end
  if self.stopping and not scimrun.ctx().rolling_back then error(errors.interrupted(), 0) end

  self.inflight_keys[key] = true
  local ok, res = pcall(self.run_step, self, key, fn, opts, rec, attempts)
  self.inflight_keys[key] = nil
  if not ok then error(res, 0) end
  return res
end

function Engine:run_step(key, fn, opts, rec, attempts)
  -- In doubt: the previous process started this step and died before recording the outcome.
  if rec and rec.state == "started" and opts.recover then
    local rok, recovered = pcall(opts.recover)
    if rok and recovered ~= nil then
      self:commit { op = "step_complete", key = key,
                    result_json = encode_result(key, recovered, self.db:max_value_bytes()),
                    attempts = attempts }
      self.stats.steps_recovered = self.stats.steps_recovered + 1
      self:note_outcome("adopted")
      self:register_compensation(key, recovered, opts)
      return recovered
    elseif not rok then
      -- Cannot tell whether the effect happened: re-running could duplicate it. Fail the step
      -- (it stays in doubt) so a later --resume checks again.
      local e = errors.normalize(recovered)
      e.step = key
      e.detail = "in doubt and the recover check failed: " .. tostring(e.detail)
      error(e, 0)
    end
  end
  attempts = attempts + 1
  self:commit { op = "step_start", key = key, attempts = attempts }
  self.stats.steps_run = self.stats.steps_run + 1
  local ctx = scimrun.ctx()
  local outer_step = ctx.step
  local timeout = self.step_timeout
  ctx.step = { key = key, n = 0, op_key = step_op_key,
               deadline = timeout and timeout > 0 and scimrun.now() + timeout or nil }
  local results = { pcall(fn) }
  ctx.step = outer_step
  -- The library's convention for operational failure is `return nil, err`: a step function
  -- that passes such a result on (`return sp.users:ensure(attrs)`) has failed.
  if results[1] and results[2] == nil and type(results[3]) == "table" then
    results = { false, results[3] }
  end
  if not results[1] then
    local err = errors.explain(errors.normalize(results[2]))
    err.step = key
    -- An auth failure is no verdict on the step: it stays started (in doubt, its recover check
    -- asked first) and a resume after the token is fixed runs it again.
    if err.class ~= "interrupted" and err.class ~= "store" and err.class ~= "auth" then
      self:commit { op = "step_fail", key = key, error_json = error_json(err), attempts = attempts }
    end
    error(err, 0)
  end
  local value, outcome = results[2], results[3]
  if type(outcome) == "string" then self:note_outcome(outcome) end
  local eok, json = pcall(encode_result, key, value, self.db:max_value_bytes())
  if not eok then -- it ran, but its result cannot be stored: the step failed
    self:commit { op = "step_fail", key = key, error_json = error_json(json), attempts = attempts }
    error(json, 0)
  end
  self:commit { op = "step_complete", key = key, result_json = json, attempts = attempts }
  self:register_compensation(key, value, opts)
  return value
end


-- ---- sagas --------------------------------------------------------------------------

function Engine:register_compensation(key, result, opts) -- luacheck: ignore 212
  if not opts.compensate then return end
  local scope = scimrun.ctx().saga
  if not scope then return end
  scope.done[#scope.done + 1] = { key = key, result = result, compensate = opts.compensate }
end

function Engine:saga(fn)
  local ctx = scimrun.ctx()
  local outer = ctx.saga
  local scope = { done = {} }
  ctx.saga = scope
  local ok, err = pcall(fn)
  ctx.saga = outer
  if ok then
    -- kept only when the run asks to roll back every completed saga if it is aborted
    if self.rollback_on_abort and #scope.done > 0 then
      if outer then
        for _, d in ipairs(scope.done) do outer.done[#outer.done + 1] = d end
      else
        self.completed_sagas[#self.completed_sagas + 1] = scope
      end
    end
    return
  end
  err = errors.normalize(err)
  -- an auth failure is no reason to undo: the resume after the token is fixed finishes the item
  if err.class == "interrupted" or err.class == "store" or err.class == "auth" or #scope.done == 0 then
    error(err, 0)
  end
  -- Each compensation is itself a checkpointed step, so a crash here resumes compensating.
  -- A signal does not cut the rollback in half: this task keeps running steps until it is done.
  local was = ctx.rolling_back
  ctx.rolling_back = true
  local rok, rerr = pcall(self.rollback, self, scope, err)
  ctx.rolling_back = was
  if not rok then error(rerr, 0) end
  error(err, 0)
end

-- --rollback-on-abort: when the run fails, the sagas that had completed are compensated too,
-- newest first, each compensation a checkpointed step (a crash here resumes compensating).
function Engine:rollback_completed(cause)
  local ctx = scimrun.ctx()
  local was = ctx.rolling_back
  ctx.rolling_back = true
  self.log("warn", "run aborted: rolling back every completed saga", { sagas = #self.completed_sagas })
  local ok, err = true, nil
  for i = #self.completed_sagas, 1, -1 do
    ok, err = pcall(self.rollback, self, self.completed_sagas[i], cause)
    if not ok then break end
  end
  self.completed_sagas = {}
  ctx.rolling_back = was
  if not ok then error(err, 0) end
end

function Engine:rollback(scope, cause)
  self.log("info", "saga failed; compensating its completed steps in reverse",
    { failed_step = cause.step, steps = #scope.done })
  local undone, failed = 0, 0
  for i = #scope.done, 1, -1 do
    local d = scope.done[i]
    local ckey = "compensate:" .. d.key
    self.log("info", "compensating step", { step = d.key })
    local cok, cerr = pcall(self.step, self, ckey, function()
      local r, e = d.compensate(d.result)
      if r == nil and type(e) == "table" then return nil, e end
      if r == nil then r = true end
      return r
    end)
    if cok then
      self:commit { op = "step_compensated", key = d.key }
      undone = undone + 1
      self.stats.compensated = self.stats.compensated + 1
    else
      cerr = errors.explain(errors.normalize(cerr))
      if cerr.class == "interrupted" or cerr.class == "store" or cerr.class == "auth" then error(cerr, 0) end
      failed = failed + 1
      self.stats.compensation_failed = self.stats.compensation_failed + 1
      local id, full
      if not cerr.replayed then
        id, full = self:dead_letter(cerr, { is_compensation = true, step_key = ckey })
        if not id and full then self:halt(full) end
      end
      local list = self.stats.compensation_failures
      if #list < MAX_LISTED_FAILURES then
        local p = errors.persistable(cerr)
        p.step, p.dead_letter, p.replayed = ckey, id, cerr.replayed
        list[#list + 1] = p
      end
      self.log("error", "COMPENSATION FAILED: the target may hold half-done work; manual clean-up needed",
        { step = ckey, op = cerr.op, url = cerr.url, class = cerr.class, status = cerr.status,
          scim_type = cerr.scim_type, detail = cerr.detail, rule = cerr.rule, dead_letter = id,
          suggest = errors.with_id(cerr.suggest, id) })
    end
  end
  cause.compensated = undone > 0 or nil
  cause.compensation_failed = failed > 0 or nil
end

-- ---- dead letters ----------------------------------------------------------------------

-- Stops dispatch because of err, which the run then fails with.
function Engine:halt(err)
  self.run_err = self.run_err or err
  self.draining = true
end

-- A target rejected the token (class auth): no new items, and the run fails with this error.
-- The 401/403 an item saw (with its step) replaces the retry layer's announcement of it, which
-- replaces a call refused afterwards ("not sent"). Logged once.
local function auth_rank(e)
  if e.not_sent then return 1 end
  if e.from_event then return 2 end
  return 3
end

function Engine:auth_stop(err)
  local first = self.auth_stopped == nil
  if first or auth_rank(err) > auth_rank(self.auth_stopped) then
    errors.explain(err)
    self.auth_stopped = err
  end
  self.draining = true
  if first then
    self.log("error", "the target rejected the token: no new requests or items; the run stops (items in flight "
      .. "are not dead-lettered; fix the token, then resume)", { target = err.target, op = err.op,
      status = err.status, credential = err.credential, suggest = err.suggest })
  end
end

-- Parks a failure in the dead-letter queue. Returns the entry id, or nil and an error when the
-- queue is full (dead_letter.max_size) or the store failed: the caller fails the item instead.
function Engine:dead_letter(err, extra)
  extra = extra or {}
  if self.dlq_max_size then
    if self.dlq_pending == nil then self.dlq_pending = self.db:dlq_count { state = "pending" } or 0 end
    if self.dlq_pending >= self.dlq_max_size then
      return nil, errors.new { class = "dead_letter_full", step = err.step, op = err.op,
        detail = ("the dead-letter queue is full (%d pending entries, dead_letter.max_size = %d), so the "
          .. "failure of step %s cannot be parked and fails the run instead: %s")
          :format(self.dlq_pending, self.dlq_max_size, tostring(err.step), tostring(err)),
        suggest = "replay or drop pending entries (scimrun dlq list), or raise dead_letter.max_size in the "
          .. "policy; then resume with --retry-failed" }
    end
    self.dlq_pending = self.dlq_pending + 1 -- reserved now: concurrent items see it
  end
  local last_error = scimrun.log.redact(err.detail or err.message or "?")
  local suggest = err.suggest
  if extra.rolled_back then
    last_error = "(item rolled back) " .. last_error
    suggest = "fix the cause, then run the workflow again: the item was rolled back, so replaying this one "
      .. "request would leave it half-done"
    err.suggest = suggest
  end
  local entry = {
    op = "dlq_add", step_key = extra.step_key or err.step or "?", operation = err.op,
    method = err.method, url = err.url, request_body = err.request_body,
    class = err.class, status = err.status, scim_type = err.scim_type,
    last_error = last_error, suggest = suggest,
    attempts = err.attempts or 1, is_compensation = extra.is_compensation == true, rule = err.rule,
  }
  -- Every text field passes the redactor: a server can echo the token anywhere (scimType, a
  -- redirect to ...?access_token=...), and the queue is shown and exported as it is stored.
  for k, v in pairs(entry) do
    if type(v) == "string" and k ~= "op" then entry[k] = scimrun.log.redact(v) end
  end
  local ok, id = pcall(self.commit, self, entry)
  if not ok then
    if self.dlq_pending then self.dlq_pending = self.dlq_pending - 1 end
    return nil, errors.normalize(id)
  end
  self.stats.dead_lettered = self.stats.dead_lettered + 1
  local function info()
    return { id = id, run_id = self.run_id, step_key = entry.step_key, operation = entry.operation,
      method = entry.method, url = entry.url, class = entry.class, status = entry.status, scim_type = entry.scim_type,
      last_error = entry.last_error, suggest = entry.suggest, rule = entry.rule, attempts = entry.attempts,
      item = extra.item, is_compensation = extra.is_compensation == true }
  end
  -- the stream's fact (metrics, the policy's on_event.dead_letter); entries hold no secret
  self.emit { type = "dead_letter", id = id, class = entry.class, op = entry.operation,
              is_compensation = extra.is_compensation == true, entry = info() }
  if self.on_dead_letter then
    local hok, herr = require("scimrun.policy").guard(self.on_dead_letter, "on_dead_letter", info())
    if not hok then self.log("warn", "on_dead_letter hook failed", { error = tostring(herr), dead_letter = id }) end
  end
  return id
end

-- Keeps the first failures (bounded) for the end-of-run report.
function Engine:remember_failure(err, item, dlq_id)
  local list = self.stats.failures
  if #list >= MAX_LISTED_FAILURES then
    self.stats.failures_more = self.stats.failures_more + 1
    return
  end
  local p = errors.persistable(err)
  p.item, p.dead_letter, p.replayed = item, dlq_id, err.replayed
  list[#list + 1] = p
end

-- ---- fan-out ----------------------------------------------------------------------------

-- Runs fn(item, info) for every item of the iterator, at most `concurrency` at once. Items
-- are pulled only when a slot frees, so memory stays flat with the number of items.
function Engine:each(iter, opts, fn)
  if type(opts) == "function" and fn == nil then fn, opts = opts, {} end
  opts = opts or {}
  local limit = opts.concurrency or self.concurrency
  local active, parked, first_err = 0, nil, nil
  local me = coroutine.running()
  local failed_here, seen = 0, 0
  -- Preflight: an input that can be read again (a CSV or JSONL file) is read whole first,
  -- through opts.preflight (e.g. the mapping's check_rows), so its bad rows are listed before
  -- the first write; with --check that is all that happens.
  local pre = self:preflight(iter, opts)
  if self.check then return end
  -- the size of the input when it is known, for progress and an ETA
  local total = pre and pre.rows or require("scimrun.input_size").of(iter)
  if total then self.emit { type = "input", total = total } end

  local function item_done()
    active = active - 1
    if parked then parked = nil; scimrun.wake(me) end
  end

  local function item_failed(err, item, info)
    errors.explain(err)
    failed_here = failed_here + 1
    self.stats.failed = self.stats.failed + 1
    local name = report.identity(item, info)
    if err.item == nil and (type(name) == "string" or type(name) == "number") then err.item = name end
    local dlq_id
    if self.continue_on_error and err.class ~= "usage" then
      if not err.replayed then
        local full
        dlq_id, full = self:dead_letter(err, { item = name, rolled_back = err.compensated })
        if not dlq_id then
          self.log("error", "DEAD-LETTER QUEUE REFUSED the item; it fails the run", { item = name,
            detail = full and full.detail })
          first_err = first_err or full
          self:halt(first_err)
        end
      end
    else
      first_err = first_err or err
      self:halt(first_err) -- no new items; those in flight run to their end
    end
    self:remember_failure(err, name, dlq_id)
    local outcome = dlq_id and "dead_lettered" or (err.compensated and "rolled_back") or "failed"
    self.on_item { item = item, info = info, status = "failed", outcome = outcome, error = err,
                   dead_letter = dlq_id, compensated = err.compensated }
    self.log("error", "item failed", { item = name, step = err.step, op = err.op, method = err.method,
      url = err.url, class = err.class, status = err.status, scim_type = err.scim_type, detail = err.detail,
      rule = err.rule, suggest = errors.with_id(err.suggest, dlq_id), dead_letter = dlq_id,
      rolled_back = err.compensated, where = info and info.file and (info.file .. ":" .. tostring(info.line)) or nil })
    if self.max_failed_items and self:over_failure_limit(failed_here, seen) then
      first_err = first_err or errors.new { class = "permanent",
        detail = ("tolerated-failure limit crossed: %d of %d items failed (max_failed_items = %s)")
          :format(failed_here, seen, tostring(self.max_failed_items)),
        suggest = "look at the failures (scimrun dlq list), fix the common cause, then replay them and resume" }
      self:halt(first_err)
    end
  end

  local function run_item(item, info)
    local item_state = {}
    scimrun.ctx().item = item_state
    local ok, err
    if info and info.error then
      ok, err = false, errors.new { class = "permanent", detail = info.error, file = info.file, line = info.line,
        suggest = "fix the row in the source file, then: scimrun --resume ID --retry-failed" }
    else
      ok, err = pcall(fn, item, info)
    end
    local outcome = item_state.outcome
    self.stats.items = self.stats.items + 1
    if ok then
      self.stats.succeeded = self.stats.succeeded + 1
      if outcome then self.stats[outcome] = (self.stats[outcome] or 0) + 1 end
      self.on_item { item = item, info = info, status = "ok", outcome = outcome or "done" }
    else
      err = errors.normalize(err)
      if err.class == "interrupted" then
        self.on_item { item = item, info = info, status = "interrupted", outcome = "interrupted" }
      elseif err.class == "auth" then
        -- not failed and not dead-lettered: the resume after the token is fixed redoes it
        errors.explain(err)
        self:auth_stop(err)
        self.stats.auth_stopped = self.stats.auth_stopped + 1
        self.on_item { item = item, info = info, status = "interrupted", outcome = "interrupted", error = err }
        self.log("warn", "item stopped: the target rejected the token", { item = report.identity(item, info),
          step = err.step, op = err.op, status = err.status })
      elseif err.class == "store" then
        first_err = first_err or err
      else
        local fok, ferr = pcall(item_failed, err, item, info)
        if not fok then first_err = first_err or errors.normalize(ferr); self:halt(first_err) end
      end
    end
    item_done()
  end

  for item, info in iter do
    if self.stopping or self.draining or self.fatal then break end
    while active >= limit do parked = true; scimrun.park() end
    if self.stopping or self.draining or self.fatal then break end
    active = active + 1
    seen = seen + 1
    self.emit { type = "item_start" }
    scimrun.spawn(run_item, item, info)
  end
  -- the input is read: its true size replaces the estimate (a quoted field with a line break)
  if total and not (self.stopping or self.draining or self.fatal) then
    self.emit { type = "input", total = seen - total, correction = true }
  end
  while active > 0 do parked = true; scimrun.park() end
  if self.fatal then error(self.fatal, 0) end
  if self.auth_stopped then error(self.auth_stopped, 0) end
  if first_err then error(first_err, 0) end
  if self.draining and self.run_err then error(self.run_err, 0) end
  if self.stopping then error(errors.interrupted(), 0) end
end

-- Reads the input of wf:each whole, without sending anything: every record the reader
-- refuses, and with opts.preflight(iter) -> {rows, bad = {{file, line, reason}}} every row the
-- workflow's own check refuses (the mapping's check_rows: values, duplicates). A normal run
-- lists the bad rows as warnings (they still fail as items); --check records them for the
-- runner's report. Returns the result, or nil when the input cannot be read twice.
local PREFLIGHT_LISTED = 20

local function scan_records(it)
  local res = { rows = 0, bad = {} }
  for row, info in it do
    res.rows = res.rows + 1
    if not row or (info and info.error) then
      res.bad[#res.bad + 1] = { file = info and info.file, line = info and (info.line or info.index),
                                reason = info and info.error or "unreadable record" }
    end
  end
  return res
end

function Engine:preflight(iter, opts)
  local input_size = require "scimrun.input_size"
  local fresh = input_size.reopen(iter)
  if not fresh then
    if not self.check then return nil end
    fresh = iter -- --check runs no item: the iterator itself is read
  end
  local res = (opts.preflight or scan_records)(fresh)
  input_size.set(iter, res.rows)
  self.emit { type = "preflight", rows = res.rows, bad = #res.bad }
  if self.check then
    self.check_results = self.check_results or {}
    self.check_results[#self.check_results + 1] = res
  elseif #res.bad > 0 then
    self.log("warn", ("the input has %d bad row(s) of %d; they will fail as items (%s lists them all)")
      :format(#res.bad, res.rows, self.check_command or "--check"), { file = res.bad[1].file })
    for i = 1, math.min(#res.bad, PREFLIGHT_LISTED) do
      local b = res.bad[i]
      self.log("warn", ("%s:%s: %s"):format(tostring(b.file), tostring(b.line), b.reason))
    end
    if #res.bad > PREFLIGHT_LISTED then
      self.log("warn", ("... and %d more bad row(s)"):format(#res.bad - PREFLIGHT_LISTED))
    end
  end
  return res
end

function Engine:over_failure_limit(failed, seen)
  local limit = self.max_failed_items
  if type(limit) == "number" then return failed > limit end
  local pct = type(limit) == "string" and tonumber(limit:match("^(%d+%.?%d*)%%$"))
  if pct and seen >= 20 then return failed * 100 / seen > pct end
  return false
end

-- The `wf` object handed to a workflow's run function.
function Engine:context(def)
  local engine = self
  local wf = {
    run_id = self.run_id,
    name = def.name,
    params = self.params,
    allow_deletes = self.allow_deletes,
    dry_run = self.dry_run,
  }
  function wf.env(name)
    local v = engine.env_overrides[name]
    if v ~= nil then return v end
    return os.getenv(name)
  end
  function wf.log(level, msg, fields) engine.log(level, msg, fields) end
  function wf.step(_, key, fn, opts) return engine:step(key, fn, opts) end
  function wf.each(_, iter, opts, fn) return engine:each(iter, opts, fn) end
  function wf.saga(_, fn) return engine:saga(fn) end
  function wf.outcome(_, name) engine:note_outcome(name) end
  -- wf:map(list, {concurrency = N}, fn): fn(x) for each element, at most N at once, for work
  -- that is not an item of the run (e.g. reading what a target holds before planning). Stops
  -- when the run is interrupted; the first error is raised once the running calls finish.
  function wf.map(_, list, opts, fn)
    if type(opts) == "function" then fn, opts = opts, {} end
    local limit = opts and opts.concurrency or engine.concurrency
    local i = 0
    local function worker()
      while true do
        if engine.stopping then error(errors.interrupted(), 0) end
        if engine.auth_stopped then error(engine.auth_stopped, 0) end
        i = i + 1
        local x = list[i]
        if x == nil then return end
        fn(x)
      end
    end
    local workers = {}
    for w = 1, math.min(limit, #list) do workers[w] = worker end
    scimrun.all(workers)
  end
  -- wf:call(op, target, attempt_fn): one operation of your own (any HTTP API) under the run's
  -- retry layer: classified, retried, rate-limited and breaker-guarded like the SCIM client's.
  function wf.call(_, op, target, attempt_fn, opts)
    if not engine.executor then error("wf:call needs a run's retry layer (run with scimrun WORKFLOW.lua)", 2) end
    return engine.executor:run(op, target, attempt_fn, opts)
  end
  function wf.stopping() return engine.stopping end
  return wf
end

return M
