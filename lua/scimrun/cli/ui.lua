-- `scimrun ui [--state FILE] [--port N] [--bind ADDR] [--read-only] [--token-file F] [--sandbox]
-- [--token-env NAME]`: the operator console, a local web page served by the binary itself on
-- the runtime's HTTP server until SIGINT or SIGTERM (exit 0). It prints its URL, which carries
-- the token made at this start (or read from --token-file) in its fragment.
--
-- Parts: scimrun.ui.server (HTTP, the safety checks), scimrun.ui.api (the JSON API over a
-- read-only connection to the state file), scimrun.ui.actions (Replay and Drop, by the CLI's
-- functions under the CLI's lock, audited), scimrun.ui.metrics (/metrics), scimrun.ui.assets
-- (the page), scimrun.ui.record (what a run writes for the console).
local common = require "scimrun.cli.common"
local flags = require "scimrun.cli.flags"

local M = {}

M.MIN_TOKEN = 16

local read_file = common.read_file

M.os_user = common.os_user

local function read_token(path, cli)
  local st, err = require("scimrun.fs").stat(path)
  if not st then cli.fail("--token-file %s: %s", path, tostring(err)) end
  if bit.band(st.perm, 63) ~= 0 then -- 0077: group and others
    cli.fail("--token-file %s is readable by others (mode %o); run: chmod 600 %s", path, st.perm, path)
  end
  local text = read_file(path)
  if not text then cli.fail("--token-file %s cannot be read", path) end
  local tok = text:gsub("^%s+", ""):gsub("%s+$", "")
  if #tok < M.MIN_TOKEN or not tok:match("^[%w%-%._~+/=]+$") then
    cli.fail("--token-file %s must hold one token of at least %d characters (letters, digits, -._~+/=)", path,
      M.MIN_TOKEN)
  end
  return tok
end

local function is_loopback(addr)
  return addr == "::1" or addr:match("^127%.") ~= nil
end

-- The host part of the printed URL: a wildcard address is reached through the loopback.
local function url_host(bind)
  if bind == "0.0.0.0" then return "127.0.0.1" end
  if bind == "::" then return "[::1]" end
  if bind:find(":", 1, true) then return "[" .. bind .. "]" end
  return bind
end

function M.main(args, cli)
  local o, pos = flags.parse("ui", args, cli)
  if #pos > 0 then cli.fail("ui takes no positional arguments (got '%s'); see: scimrun help ui", pos[1]) end
  local port = tonumber(o.port or 0)
  if not port or port % 1 ~= 0 or port < 0 or port > 65535 then
    cli.fail("--port must be a port number from 0 to 65535 (0 picks a free one), got %s", tostring(o.port))
  end
  local bind = o.bind or "127.0.0.1"
  if not (bind:match("^%d+%.%d+%.%d+%.%d+$") or bind:match("^[%x:]+$") and bind:find(":", 1, true)) then
    cli.fail("--bind must be an IP address such as 127.0.0.1 or ::1, got %s", bind)
  end
  local token = o.token_file and read_token(o.token_file, cli) or require("scimrun.sandbox").random_token()
  scimrun.log.add_secret(token)

  local runfiles = require "scimrun.cli.runfiles"
  local db = common.open_store(o, cli, true) -- a WAL reader: runs may write the file meanwhile
  local state = common.state_path(o)
  if not require("scimrun.state").is_postgres(state) then state = runfiles.absolute(state) end
  local user = M.os_user()
  local api_mod = require "scimrun.ui.api"
  local cli_opts = " --state " .. api_mod.shell_quote(state)
  local actions = require("scimrun.ui.actions").new { state = state, sandbox = o.sandbox, token_env = o.token_env,
                                                      cli_opts = cli_opts }
  local api = api_mod.new { db = db, state = state, read_only = o.read_only, sandbox = o.sandbox,
                            token_env = o.token_env, actions = actions, user = user }
  local metrics = require("scimrun.ui.metrics").new(db)
  local server = require "scimrun.ui.server"
  local hostnames = {}
  if not is_loopback(bind) then
    local name = (read_file("/proc/sys/kernel/hostname") or ""):gsub("%s+$", "")
    if name ~= "" then hostnames[#hostnames + 1] = name end
  end
  local handler = server.new { api = api, assets = require "scimrun.ui.assets", metrics = metrics.handle,
                               token = token, read_only = o.read_only, hostnames = hostnames }
  local hs = require "scimrun.httpserver"
  local srv, err = hs.listen { host = bind, port = port, max_body = server.MAX_BODY, max_header = 16384,
                               idle_timeout = 60, handler = function(req) return handler:handle(req) end }
  if not srv then
    db:close()
    cli.fail("ui: %s", tostring(err))
  end
  handler.port = srv:port()
  local base = ("http://%s:%d"):format(url_host(bind), handler.port)
  io.stdout:write("scimrun ui: the operator console of ", state, "\n",
    "  open:    ", base, "/#token=", o.token_file and ("<the token in " .. o.token_file .. ">") or token, "\n",
    "  api:     curl -H 'Authorization: Bearer ", o.token_file and "TOKEN" or token, "' ", base, "/api/runs\n",
    "  metrics: ", base, "/metrics\n",
    o.read_only and "  read-only: Replay and Drop are off\n" or "",
    not is_loopback(bind) and ("  warning: listening on " .. bind .. ": other machines can reach it over plain HTTP; "
      .. "the token is its only protection\n") or "",
    "Stop with Ctrl-C.\n")
  io.stdout:flush()

  require("scimrun.cli.common").serve_until_signal(function(name)
    srv:close()
    io.stderr:write(("scimrun ui: %s, stopped\n"):format(name))
  end)
  db:close()
  io.stdout:flush()
  return 0
end

return M
