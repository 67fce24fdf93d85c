-- Helpers shared by the inspection subcommands (runs, dlq): the state store and times. Their
-- options are parsed by scimrun.cli.flags.
local M = {}

function M.state_path(o) return o.state or os.getenv("SCIMRUN_STATE") or ".scimrun/state.db" end

-- Where the embedded sandbox (--sandbox) keeps its data: beside a state file, or in ./.scimrun
-- when the state is in PostgreSQL (a URL has no "beside").
function M.sandbox_data(state_path)
  if require("scimrun.state").is_postgres(state_path) then return ".scimrun/sandbox.json" end
  return state_path .. ".sandbox.json"
end

-- Opens the store of --state: a state file (which must exist: these commands only look at
-- runs made before) or a postgres:// URL (scimrun.state decides).
function M.open_store(o, cli, readonly)
  local state = require "scimrun.state"
  local path = M.state_path(o)
  if not state.is_postgres(path) then
    local f = io.open(path, "r")
    if not f then cli.fail("no state file at %s (run a workflow first, or pass --state FILE)", path) end
    f:close()
  end
  local db, err = state.open(path, { readonly = readonly })
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

-- A whole file's text, or nil when it cannot be opened.
function M.read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

-- The OS user this process runs as (who the audit trail says acted): the name of its uid in
-- /etc/passwd, else $USER, else "uid N".
function M.os_user()
  local status = M.read_file("/proc/self/status") or ""
  local uid = status:match("\nUid:%s*(%d+)")
  if uid then
    for line in (M.read_file("/etc/passwd") or ""):gmatch("[^\n]+") do
      local name, id = line:match("^([^:]+):[^:]*:(%d+):")
      if id == uid then return name end
    end
  end
  local env = os.getenv("USER") or os.getenv("LOGNAME")
  if env and env ~= "" then return env end
  return uid and ("uid " .. uid) or "?"
end

-- A word for a command printed to be pasted into a shell: a postgres:// state URL holds '?'
-- and '&' (`--state postgres://u@/db?host=/run/pg&port=5433` unquoted runs in the background,
-- without its port), so anything but plain path characters is single-quoted.
function M.shell_quote(s)
  s = tostring(s)
  if s:match("^[%w%./_%-=:,]+$") then return s end
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

function M.time(t)
  if not t then return "-" end
  return os.date("%Y-%m-%d %H:%M:%S", math.floor(t))
end

return M
