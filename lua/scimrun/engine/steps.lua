-- Checkpointed steps: wf:step records `started` (durable before the function runs only for a
-- step with a recover check), runs the function (its retried operations keyed for the retry
-- layer, bounded by timeouts.step), commits the result or the failure; on a resume a recorded
-- result is returned without running again, a step in doubt is recovered.
local cjson = require "cjson"
local errors = require "scimrun.errors"
local outcome = require "scimrun.engine.outcome"

local Engine = {} -- methods, mixed into the engine by scimrun.engine

-- The step keys a fresh run remembers (engine.known_keys), about 10 MB of them at most.
Engine.KNOWN_KEYS_MAX = 100000

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

-- ctx.step:op_key(op): a key naming the n-th retried operation of the step, stable across a
-- resume (the workflow re-executes in the same order): the retry layer checkpoints pending
-- backoff deadlines under it, so a resumed run waits only for what is left.
local function step_op_key(step, op)
  step.n = step.n + 1
  return step.key .. "#" .. step.n .. ":" .. op
end

-- Task-local state lives in scimrun.ctx(), inherited by the tasks a task spawns (wf:map
-- workers, wf:each items): ctx.item = { outcome } of the item being processed, ctx.saga = the
-- innermost saga scope, ctx.step = the step running (its key, retried operations so far,
-- deadline and the outcome noted during it), ctx.rolling_back = compensations are running (a
-- signal does not stop them).

-- wf:outcome(name) and the engine's own notes (an in-doubt step recovered: "adopted"); the SCIM
-- client notes through scimrun.engine.outcome directly. See that module.
function Engine:note_outcome(name) -- luacheck: ignore 212 (a method, like its siblings)
  outcome.note(name)
end

-- A step's second return value is its error slot (`return nil, err`); a value there beside a
-- result is ignored. An outcome name there is the convention before outcomes were noted by the
-- client: said once per run, so a workflow written for it is noticed, never counted silently.
function Engine:ignored_second(key, second)
  if type(second) ~= "string" or not outcome.NAMES[second] or self.warned_second then return end
  self.warned_second = true
  self.log("warn", ("step %q returned %q as its second value; a step's outcome is no longer its return "
    .. "value and this one was ignored: the SCIM client's operations note theirs, other work calls "
    .. "wf:outcome(name)"):format(key, second), { step = key })
end

-- The store's limit on a recorded value, asked once (a constant of the open store).
function Engine:max_value_bytes()
  local limit = self.value_limit
  if limit == nil then
    limit = self.db:max_value_bytes() or false
    self.value_limit = limit
  end
  return limit or nil
end

-- Was this record started by this process (a second step with the same key)? In worker mode
-- other workers write the same run meanwhile: only a record written under the running item's
-- own claim is this process's.
function Engine:started_here(rec)
  if not self.worker then return rec.started_at and rec.started_at >= self.session_started end
  local item = scimrun.ctx().item
  local claim = item and item.claim
  return claim ~= nil and rec.fence == claim.fence and rec.started_at ~= nil
    and rec.started_at >= self.session_started
end

-- In worker mode a step outside any claimed item (the workflow's setup, such as ensuring the
-- group) runs in every worker: a lock on its key in the database lets one run it while the
-- others wait, then find it recorded and replay its result.
function Engine:step(key, fn, opts)
  local item = self.worker and scimrun.ctx().item
  if not self.worker or (item and item.claim) then return self:step_once(key, fn, opts) end
  self.worker:lock_step(key)
  local ok, res = pcall(self.step_once, self, key, fn, opts)
  self.worker:unlock_step(key)
  if not ok then error(res, 0) end
  return res
end

function Engine:step_once(key, fn, opts)
  opts = opts or {}
  if type(key) ~= "string" or key == "" then error("wf:step: key must be a non-empty string", 2) end
  if type(fn) ~= "function" then error("wf:step: fn must be a function", 2) end
  if self.fatal then error(self.fatal, 0) end
  if self.inflight_keys[key] then
    error(errors.new { class = "usage", step = key,
      detail = ("duplicate step key %q in this run: step keys must be unique (add the item's id)"):format(key) }, 0)
  end
  -- A fresh run's store holds only the steps this process started (known_keys): the lookup is
  -- needed only for those (a duplicate key), not for the ~10 µs read of each new step.
  local rec
  if not self.known_keys or self.known_keys[key] then rec = self.db:step_get(self.run_id, key) end
  if rec and self:started_here(rec) then
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
                    result_json = encode_result(key, recovered, self:max_value_bytes()),
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
  local known = self.known_keys
  if known then
    if self.n_known_keys >= self.KNOWN_KEYS_MAX then
      self.known_keys = nil -- a very large run: memory stays flat, each step looks its key up
    else
      known[key], self.n_known_keys = true, self.n_known_keys + 1
    end
  end
  -- The start record is what the in-doubt path finds after a crash. With a recover check it
  -- must be durable before fn runs; without one a step in doubt is simply run again, as one
  -- never started is, so the start rides on the next group commit (with the result at latest).
  local start = { op = "step_start", key = key, attempts = attempts }
  if opts.recover then self:commit(start) else self:commit_later(start) end
  self.stats.steps_run = self.stats.steps_run + 1
  local ctx = scimrun.ctx()
  local outer_step = ctx.step
  local timeout = self.step_timeout
  local this = { key = key, n = 0, op_key = step_op_key,
                 deadline = timeout and timeout > 0 and scimrun.now() + timeout or nil }
  ctx.step = this
  local ok, value, second = pcall(fn)
  ctx.step = outer_step
  -- The convention for operational failure is `return nil, err`: a step function that passes
  -- such a result on (`return sp.users:ensure(attrs)`) has failed. The second slot is the
  -- error's only: an outcome is noted (scimrun.engine.outcome), never returned.
  if ok and value == nil and second ~= nil then
    ok = false
    if type(second) == "string" and outcome.NAMES[second] then
      value = errors.new { class = "usage", step = key,
        detail = ("step %q returned nil, %q: a step's second return value is its error; report an outcome "
          .. "with wf:outcome(%q) and return a result (or nothing)"):format(key, second, second) }
    else
      value = second
    end
  end
  if not ok then
    local err = errors.explain(errors.normalize(value))
    err.step = key
    -- An auth failure is no verdict on the step: it stays started (in doubt, its recover check
    -- asked first) and a resume after the token is fixed runs it again.
    if not errors.no_verdict(err) then
      self:commit { op = "step_fail", key = key, error_json = error_json(err), attempts = attempts }
    end
    error(err, 0)
  end
  if second ~= nil then self:ignored_second(key, second) end
  local eok, json = pcall(encode_result, key, value, self:max_value_bytes())
  if not eok then -- it ran, but its result cannot be stored: the step failed
    self:commit { op = "step_fail", key = key, error_json = error_json(json), attempts = attempts }
    error(json, 0)
  end
  self:commit { op = "step_complete", key = key, result_json = json, attempts = attempts }
  -- what the step's work noted counts once the step is recorded: for the enclosing step, else the item
  if this.outcome then outcome.note(this.outcome) end
  self:register_compensation(key, value, opts)
  return value
end

return Engine
