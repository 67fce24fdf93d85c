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

function M.time(t)
  if not t then return "-" end
  return os.date("%Y-%m-%d %H:%M:%S", math.floor(t))
end

return M
