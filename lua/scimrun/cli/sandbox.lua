-- scimrun sandbox [--port N] [--host H] [--faults SPEC] [--seed N] [--persist FILE] [--quiet]
-- scimrun sandbox --help     the options (scimrun.cli.flags) and the fault kinds (sandbox.faults.HELP)
-- Serves the embedded SCIM 2.0 service provider until SIGINT or SIGTERM, then exits 0.
-- The token is $SCIM_TOKEN, or a random one printed at start. Each request is logged on
-- stderr (unless --quiet) with the fault injected into it, if any.
local flags = require "scimrun.cli.flags"
local sandbox = require "scimrun.sandbox"

local M = {}

local function integer(cli, name, text, lo, hi)
  local n = tonumber(text)
  if not n or n % 1 ~= 0 or n < lo or n > hi then
    cli.fail("%s must be an integer from %d to %d, got '%s'", name, lo, hi, tostring(text))
  end
  return n
end

local function log_request(info)
  local line = ("%s %s -> %s (%d ms)"):format(info.method, info.path, info.outcome, math.floor(info.ms + 0.5))
  if info.fault then line = line .. "  [injected: " .. info.fault .. "]" end
  io.stderr:write(line, "\n")
end

function M.main(args, cli)
  local o, pos = flags.parse("sandbox", args, cli)
  if #pos > 0 then cli.fail("sandbox takes no positional arguments (got '%s'); see: scimrun help sandbox", pos[1]) end
  local port = o.port and integer(cli, "--port", o.port, 0, 65535) or 0
  local seed = o.seed and integer(cli, "--seed", o.seed, -2147483648, 2147483647) or 1
  local env_token = os.getenv("SCIM_TOKEN")
  if env_token == "" then env_token = nil end
  local srv, err = sandbox.start({
    host = o.host or "127.0.0.1", port = port, token = env_token, faults = o.faults, seed = seed,
    persist = o.persist, on_request = not o.quiet and log_request or nil,
    on_warning = function(msg) io.stderr:write("scimrun sandbox: warning: ", tostring(msg), "\n") end,
  })
  if not srv then cli.fail("sandbox: %s", err) end

  local admin = srv.url:gsub(srv.sb.base_path .. "$", "") .. "/_admin/stats"
  io.stdout:write("scimrun sandbox: SCIM 2.0 service provider\n",
    "  url:     ", srv.url, "\n",
    "  token:   ", env_token and "(from $SCIM_TOKEN)" or srv.token, "\n",
    "  faults:  ", (o.faults and o.faults ~= "") and (o.faults .. " (seed " .. seed .. ")") or "none", "\n",
    "  persist: ", o.persist or "(memory only)", "\n",
    "  admin:   ", admin, "\n",
    "Stop with Ctrl-C.\n")
  io.stdout:flush()

  require("scimrun.cli.common").serve_until_signal(function(name)
    srv.close()
    io.stderr:write(("scimrun sandbox: %s, stopped after %d requests (%d faults injected)\n")
      :format(name, srv.sb.stats_data.requests, srv.sb.stats_data.injected))
  end)
  io.stdout:flush()
  return 0
end

return M
