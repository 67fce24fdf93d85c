-- The attempts, failures and waits of a step that ran into trouble, kept in the state file
-- (table step_events, through the engine's group commit) so a failed item's history can be
-- shown later (`dlq show`, `scimrun ui`). A reader of the event stream.
--
--   step_history.attach(stream, enqueue)   -- enqueue(op): the engine's group commit
--
-- A step whose attempts all went through writes nothing: its events wait in the step (held)
-- until the first failure, not on the hot path of every request; from the first trouble on,
-- what led to it is kept too. Events hold no secret: no headers, no bodies.
local cjson = require "cjson"

local M = {}

local HISTORY = { attempt = true, failure = true, success = true, give_up = true, adopted = true }

function M.attach(stream, enqueue)
  local function keep(step, ev) enqueue { op = "event_add", key = step.key, event_json = cjson.encode(ev) } end
  return stream:subscribe(function(ev)
    local step = (HISTORY[ev.type] or (ev.type == "wait" and ev.reason == "breaker")) and scimrun.ctx().step
    if not step then return end
    if step.troubled then return keep(step, ev) end
    if ev.type == "attempt" or ev.type == "success" then
      step.held = step.held or {}
      step.held[#step.held + 1] = ev
      return
    end
    step.troubled = true
    for _, held in ipairs(step.held or {}) do keep(step, held) end
    step.held = nil
    keep(step, ev)
  end, { "attempt", "failure", "success", "give_up", "adopted", "wait" })
end

return M
