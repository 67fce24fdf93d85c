-- Checkpointed steps: wf:step records `started`, runs the function (its retried operations
-- keyed for the retry layer, bounded by timeouts.step), commits the result or the failure; on a
-- resume a recorded result is returned without running again, a step in doubt is recovered.
local cjson = require "cjson"
local errors = require "scimrun.errors"

local Engine = {} -- methods, mixed into the engine by scimrun.engine

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

return Engine
