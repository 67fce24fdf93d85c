-- Item outcomes (created, updated, skipped, adopted): what an item did at the provider, for the
-- summary, the --report and the metrics. One way in: noted on the running task's context
-- (scimrun.ctx), by the SCIM client's operations that know it (ensure, create, patch, replace,
-- deactivate, delete, add_members, remove_members) and by the workflow's `wf:outcome(name)`.
-- Never a return value of a step: a step's second return slot is for an error only.
--
--   outcome.note(name)   on the step running (ctx.step), which hands it to its item when it is
--                        recorded completed (a failed step's outcome is dropped); outside a step,
--                        on the item (ctx.item); outside a run (no item, no step), nothing
--   outcome.merge(prev, name) -> the item's outcome: "created" if any step created something,
--                        else the strongest (skipped < updated/adopted, the first of those kept)
-- Tasks a task spawns (wf:map workers) share its step and item tables, so what they note counts
-- for the step (and item) that started them.
local M = {}

M.NAMES = { created = true, updated = true, skipped = true, adopted = true }

function M.merge(prev, name)
  if prev == nil or name == "created" or (prev == "skipped" and name ~= "skipped") then return name end
  return prev
end

function M.note(name)
  if not M.NAMES[name] then return end
  local sc = rawget(_G, "scimrun")
  if not (sc and sc.ctx) then return end
  local ctx = sc.ctx()
  local holder = ctx.step or ctx.item
  if holder then holder.outcome = M.merge(holder.outcome, name) end
end

return M
