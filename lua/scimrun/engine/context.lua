-- The `wf` object a workflow's run function receives: its calls go to the engine.
local errors = require "scimrun.errors"
local outcome = require "scimrun.engine.outcome"

local Engine = {} -- methods, mixed into the engine by scimrun.engine

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
  -- wf:outcome(name): what the running item did, for work the SCIM client cannot tell (its own
  -- operations note theirs): "created", "updated", "skipped" or "adopted". Inside a step it
  -- counts once the step is recorded completed; see scimrun.engine.outcome.
  function wf.outcome(_, name)
    if not outcome.NAMES[name] then
      error(("wf:outcome: %s is no outcome; use \"created\", \"updated\", \"skipped\" or \"adopted\"")
        :format(type(name) == "string" and ("%q"):format(name) or tostring(name)), 2)
    end
    engine:note_outcome(name)
  end
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

return Engine
