-- Helpers shared by the inspection subcommands (runs, dlq): the state file and times. Their
-- options are parsed by scimrun.cli.flags.
local M = {}

function M.state_path(o) return o.state or os.getenv("SCIMRUN_STATE") or ".scimrun/state.db" end

function M.open_store(o, cli, readonly)
  local path = M.state_path(o)
  local f = io.open(path, "r")
  if not f then cli.fail("no state file at %s (run a workflow first, or pass --state FILE)", path) end
  f:close()
  local db, err = require("scimrun.store").open(path, { readonly = readonly })
  if not db then cli.fail("%s", err) end
  return db, path
end

-- Serves until SIGINT or SIGTERM (a foreground server: scimrun sandbox, scimrun ui): then
-- close() runs once and this returns.
function M.serve_until_signal(close)
  local signals = require "scimrun.signals"
  local me = coroutine.running()
  local stopping = false
  local function stop(name)
    if stopping then return end
    stopping = true
    signals.watch("SIGINT", nil)
    signals.watch("SIGTERM", nil)
    close(name or "stop")
    scimrun.wake(me)
  end
  signals.watch("SIGINT", stop)
  signals.watch("SIGTERM", stop)
  scimrun.park()
end

function M.time(t)
  if not t then return "-" end
  return os.date("%Y-%m-%d %H:%M:%S", math.floor(t))
end

return M
