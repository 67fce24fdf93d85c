-- The command line: parses argv and dispatches. Usage and configuration errors are raised
-- with cli.fail(msg) and end the process with exit code 2 and a one-line reason.
local M = {}

local flags = require "scimrun.cli.flags"

local USAGE_ERROR = {}

-- Raises a usage/configuration error: one line, exit code 2.
function M.fail(fmt, ...)
  error(setmetatable({ message = select("#", ...) > 0 and fmt:format(...) or fmt }, USAGE_ERROR), 0)
end

function M.is_usage_error(e) return getmetatable(e) == USAGE_ERROR end

local function print_version()
  local b = scimrun.build
  io.stdout:write(("scimrun %s\n  %s\n  libuv %s\n  libcurl %s (%s)\n  SQLite %s\n  library %s\n")
    :format(b.version, b.luajit, b.libuv, b.libcurl, b.tls or "no TLS", b.sqlite, b.datadir or "?"))
  return 0
end

-- scimrun -l SCRIPT [ARGS]: `arg` as in plain Lua (arg[0] the script, arg[1..] its args).
local function run_script(argv, first)
  local path = argv[first]
  if not path then M.fail("-l needs a script path") end
  local chunk, err = loadfile(path)
  if not chunk then
    if err:find("No such file", 1, true) or err:find("cannot open", 1, true) then
      M.fail("cannot open script %s: no such file", path)
    end
    M.fail("%s", err)
  end
  local script_arg = { [0] = path }
  for i = first + 1, #argv do script_arg[#script_arg + 1] = argv[i] end
  script_arg[-1] = argv[0]
  rawset(_G, "arg", script_arg)
  local ok, res = xpcall(chunk, debug.traceback, unpack(script_arg))
  if not ok then
    io.stderr:write("scimrun: ", tostring(res), "\n")
    return 1
  end
  return type(res) == "number" and res or 0
end

local SUBCOMMANDS = {
  runs = "scimrun.cli.runs",
  dlq = "scimrun.cli.dlq",
  audit = "scimrun.cli.audit",
  ui = "scimrun.cli.ui",
  policy = "scimrun.cli.policy",
  sandbox = "scimrun.cli.sandbox",
}

-- `scimrun help [COMMAND]`: the overview, or every flag of COMMAND with its default and an example.
local function help(topic)
  if topic == nil then
    io.stdout:write(flags.overview())
    return 0
  end
  if topic:match("%.lua$") then topic = "run" end
  if not flags.commands[topic] then
    M.fail("no help on '%s': the commands are %s", topic, table.concat(flags.ORDER, ", "))
  end
  io.stdout:write(flags.help(topic))
  return 0
end

local function asks_help(args, from)
  for i = from, #args do
    if args[i] == "--help" or args[i] == "-h" then return true end
  end
  return false
end

local function dispatch(argv)
  local first = argv[1]
  if first == nil then
    io.stderr:write(flags.overview())
    return 2
  end
  if first == "-h" or first == "--help" then return help(nil) end
  if first == "help" then return help(argv[2]) end
  if first == "--version" or first == "-V" then return print_version() end
  if first == "-l" then return run_script(argv, 2) end
  local sub = SUBCOMMANDS[first]
  if sub then
    if asks_help(argv, 2) then return help(first) end
    local rest = {}
    for i = 2, #argv do rest[#rest + 1] = argv[i] end
    local ok, mod = pcall(require, sub)
    if not ok then M.fail("'%s' is not available in this build (%s)", first, tostring(mod)) end
    return mod.main(rest, M)
  end
  if first:sub(1, 1) == "-" then
    M.fail("unknown option %s before the workflow file (see: scimrun help)", first)
  end
  if asks_help(argv, 2) then return help("run") end
  return require("scimrun.cli.runner").main(argv, M)
end

function M.main(argv)
  local ok, res = xpcall(dispatch, function(e)
    if M.is_usage_error(e) then return e end
    return debug.traceback(e, 2)
  end, argv)
  if ok then return res or 0 end
  if M.is_usage_error(res) then
    io.stderr:write("scimrun: ", res.message, "\n")
    return 2
  end
  io.stderr:write("scimrun: internal error: ", tostring(res), "\n")
  return 1
end

return M
