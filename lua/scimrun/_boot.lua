-- Builds the global `scimrun` table every script and workflow sees: the scheduler
-- primitives from C plus the small Lua helpers built on them.
local core = require "scimrun.core"
local build = require "scimrun.build"
local log = require "scimrun.log"

-- Progress and summaries must interleave with the log (stderr) in order, even through a pipe.
io.stdout:setvbuf("line")

-- The garbage collector starts a cycle when the heap has grown to 8x (LuaJIT's default: 2x)
-- what the last cycle left alive. Each cycle marks what is alive and sweeps the whole heap, so
-- the collector's work per byte a run allocates is about (1 + p) / (p - 1) at pause p: half the
-- default's here (it was a quarter of the event loop's CPU in a 10,000-user onboarding,
-- bench/README.md). What a run keeps alive is small (7.5 MB after 10,000 users): the peak RSS
-- of that run is ~100 MB (65 MB at 4x).
collectgarbage("setpause", 800)

-- Task-local context (like OpenResty's ngx.ctx, but inherited): scimrun.ctx() is a table of
-- the running task; a task spawned from it sees its spawner's fields (reads fall through to the
-- spawner's context as it is then), and what it writes is its own. Shared state travels as a
-- table in a field (a saga scope, the item being processed, the step running): a worker of a
-- wf:map inside a step registers its compensation in that step's saga.
local ctx_of = setmetatable({}, { __mode = "k" })
local MAIN = {} -- the main chunk is no coroutine

local function ctx()
  local co = coroutine.running() or MAIN
  local c = ctx_of[co]
  if not c then
    c = {}
    ctx_of[co] = c
  end
  return c
end

local function spawn(fn, ...)
  local parent = ctx()
  return core.spawn(function(...)
    ctx_of[coroutine.running()] = setmetatable({}, { __index = parent })
    return fn(...)
  end, ...)
end

local scimrun = {
  spawn = spawn,          -- scimrun.spawn(fn, ...) -> coroutine; runs fn as a new task
  ctx = ctx,              -- scimrun.ctx() -> this task's context (inherits its spawner's)
  sleep = core.sleep,     -- scimrun.sleep(seconds): yields this task, timer-backed
  now = core.now,         -- monotonic seconds, sub-millisecond
  wall = core.wall,       -- wall-clock seconds since the epoch
  park = core.park,       -- suspends this task until scimrun.wake(co, ...)
  wake = core.wake,
  is_task = core.is_task,
  stats = core.stats,
  version = build.version,
  datadir = build.datadir,
  build = build,
  log = log,
}

-- Waits for every given task function to finish; returns their first results in order.
-- Errors are re-raised in the caller once all have finished.
function scimrun.all(fns)
  local me = coroutine.running()
  local pending, results, first_err = #fns, {}, nil
  if pending == 0 then return results end
  for i, fn in ipairs(fns) do
    spawn(function()
      local ok, res = pcall(fn)
      if ok then results[i] = res elseif first_err == nil then first_err = res end
      pending = pending - 1
      if pending == 0 then core.wake(me) end
    end)
  end
  core.park()
  if first_err ~= nil then error(first_err, 0) end
  return results
end

-- scimrun.workflow{...}: what a workflow file returns (see lua/scimrun/workflow.lua).
function scimrun.workflow(def) return require("scimrun.workflow").define(def) end

-- Sets an environment variable for this process (the sandbox hands SCIM_BASE_URL/SCIM_TOKEN
-- to the workflow this way). FFI is fine here: setenv never yields.
local ffi = require "ffi"
ffi.cdef "int setenv(const char *name, const char *value, int overwrite);"
function scimrun.setenv(name, value) ffi.C.setenv(name, value, 1) end

rawset(_G, "scimrun", scimrun)
return scimrun
