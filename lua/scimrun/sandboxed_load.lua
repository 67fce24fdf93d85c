-- Loading an operator's Lua data file (a policy file, a mapping file) and calling the functions
-- it defines, with what that code may do bounded: the one restricted environment and the one
-- CPU-time limit both kinds of file get. (Not the fake SCIM server: that is scimrun.sandbox.)
-- Contract:
--   load(text, path, kind, opts) -> chunk | nil, syntax error (as loadstring reports it)
--       The chunk (named "@path") runs in a fresh environment: math, string (without dump),
--       table, os.time/date/getenv and the base functions in ALLOWED. Reading any other global
--       raises "'NAME' is not available in a KIND file (allowed: ...)" (the path after "file"
--       when opts.cite_path); setting a global raises "KIND files may not set globals (...)".
--       The JIT is off for the chunk and the functions it defines, so guard's limit holds there.
--   guard(fn, what, ...) -> pcall's results: fn(...), stopped with "WHAT ran for more than Ns
--       of CPU and was stopped" once it has used CPU_LIMIT seconds of CPU. Callers run the
--       chunk and every function it returned through it (policy.guard is this function).
local M = {}

local CPU_LIMIT = 2 -- seconds of CPU a data file or one of its functions may use per call

-- Runs fn(...) with a CPU-time cut-off (a count hook; chunks are loaded with the JIT off for
-- them, since LuaJIT hooks do not fire inside compiled traces). Returns pcall's results.
function M.guard(fn, what, ...)
  local old_hook, old_mask, old_count = debug.gethook()
  local limit = os.clock() + CPU_LIMIT
  debug.sethook(function()
    if os.clock() > limit then
      debug.sethook()
      error(("%s ran for more than %ds of CPU and was stopped"):format(what or "policy code", CPU_LIMIT), 2)
    end
  end, "", 10000)
  local res = { pcall(fn, ...) }
  if old_hook then debug.sethook(old_hook, old_mask, old_count) else debug.sethook() end
  return unpack(res, 1, table.maxn(res))
end

local ALLOWED = { "pairs", "ipairs", "tostring", "tonumber", "type", "select", "unpack", "error" }

local function copy_lib(lib, skip)
  local t = {}
  for k, v in pairs(lib) do
    if not (skip and skip[k]) then t[k] = v end
  end
  return t
end

-- kind: "policy" or "mapping", as the messages name the file; cited: the path, or nil.
local function make_env(kind, cited)
  local env = {
    math = copy_lib(math),
    string = copy_lib(string, { dump = true }),
    table = copy_lib(table),
    os = { time = os.time, date = os.date, getenv = os.getenv },
  }
  for _, name in ipairs(ALLOWED) do env[name] = _G[name] end
  local where = cited and (kind .. " file " .. cited) or (kind .. " file")
  return setmetatable(env, {
    __index = function(_, k)
      error(("'%s' is not available in a %s (allowed: math, string, table, os.time, os.date, os.getenv, %s)")
        :format(tostring(k), where, table.concat(ALLOWED, ", ")), 2)
    end,
    __newindex = function(_, k)
      error(("%s files may not set globals (tried to set '%s'); use `local %s = ...`")
        :format(kind, tostring(k), tostring(k)), 2)
    end,
  })
end

function M.load(text, path, kind, opts)
  local chunk, err = loadstring(text, "@" .. path)
  if not chunk then return nil, err end
  setfenv(chunk, make_env(kind, opts and opts.cite_path and path or nil))
  if jit and jit.off then jit.off(chunk, true) end
  return chunk
end

return M
