-- Helpers shared by the inspection subcommands (runs, dlq): option parsing and the store.
local M = {}

-- Parses `--flag`, `--key value` and positionals; `spec` maps option names to "flag"|"value".
function M.parse(args, spec, cli)
  local o, pos = {}, {}
  local i = 1
  while i <= #args do
    local a = args[i]
    local name, inline = a:match("^(%-%-[%w%-]+)=(.*)$")
    name = name or a
    if name:sub(1, 2) == "--" then
      local kind = spec[name]
      if not kind then cli.fail("unknown option %s", a) end
      local key = name:sub(3):gsub("%-", "_")
      if kind == "flag" then o[key] = true
      else
        local v = inline or args[i + 1]
        if v == nil then cli.fail("%s needs a value", name) end
        if not inline then i = i + 1 end
        o[key] = v
      end
    else
      pos[#pos + 1] = a
    end
    i = i + 1
  end
  return o, pos
end

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
