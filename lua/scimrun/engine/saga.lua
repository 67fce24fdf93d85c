-- Saga scopes: the compensations of a scope's completed steps, run newest first as
-- checkpointed steps `compensate:KEY` when the scope fails (or the run, with --rollback-on-abort).
local errors = require "scimrun.errors"

local Engine = {} -- methods, mixed into the engine by scimrun.engine

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
  if errors.no_verdict(err) or #scope.done == 0 then
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
      if r == nil and e ~= nil then return nil, e end -- `return nil, err`: it failed
      if r == nil then r = true end
      return r
    end)
    if cok then
      self:commit { op = "step_compensated", key = d.key }
      undone = undone + 1
      self.stats.compensated = self.stats.compensated + 1
    else
      cerr = errors.explain(errors.normalize(cerr))
      if errors.no_verdict(cerr) then error(cerr, 0) end
      failed = failed + 1
      self.stats.compensation_failed = self.stats.compensation_failed + 1
      local id, full
      if not cerr.replayed then
        id, full = self:dead_letter(cerr, { is_compensation = true, step_key = ckey })
        if not id and full then self:halt(full) end
      end
      local list = self.stats.compensation_failures
      if #list < self.MAX_LISTED_FAILURES then
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

return Engine
