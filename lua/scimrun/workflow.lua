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
-- The second return slot is the error's only. What an item did (created, updated, skipped,
-- adopted) is noted, never returned: the SCIM client's operations note theirs on the running
-- step (scimrun.engine.outcome), other work calls wf:outcome(name); a step's notes count for
-- its item once the step is recorded completed.
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
local engine = require "scimrun.engine"

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

-- The engine that runs a workflow (lua/scimrun/engine/: steps, group commit, sagas, each, dead
-- letters, the `wf` object). opts: see engine/init.lua.
M.engine = engine.new

return M
