-- Files and identities of a run: absolute paths, parameter resolution, input hashes,
-- run ids and the exact command that resumes a run.
local fs = require "scimrun.fs"

local M = {}

local function exists(path)
  local f = io.open(path, "r")
  if not f then return false end
  local ok = f:read(0) ~= nil or f:seek("end") ~= nil
  f:close()
  return ok
end
M.exists = exists

local CWD
function M.absolute(path)
  if path:sub(1, 1) == "/" then return path end
  CWD = CWD or assert(fs.cwd())
  return (CWD .. "/" .. path):gsub("/%./", "/")
end

function M.dirname(path) return path:match("^(.*)/[^/]*$") or "." end

-- Defaults in the workflow resolve against the workflow's folder; --param values against the
-- current directory. Only values naming an existing file are turned into absolute paths.
function M.resolve_params(defaults, given, wf_path, cli)
  local out = {}
  local wf_dir = M.dirname(wf_path)
  for k, v in pairs(defaults or {}) do
    if type(v) == "string" and v ~= "" and v:sub(1, 1) ~= "/" and exists(wf_dir .. "/" .. v) then
      v = wf_dir .. "/" .. v
    end
    out[k] = v
  end
  for k, v in pairs(given or {}) do
    if defaults[k] == nil then
      local known = {}
      for name in pairs(defaults) do known[#known + 1] = name end
      table.sort(known)
      cli.fail("unknown parameter %q (this workflow takes: %s)", k, #known > 0 and table.concat(known, ", ") or "none")
    end
    if type(defaults[k]) == "number" then
      v = tonumber(v) or cli.fail("--param %s must be a number, got %q", k, v)
    elseif type(defaults[k]) == "boolean" then
      if v ~= "true" and v ~= "false" then cli.fail("--param %s must be true or false, got %q", k, v) end
      v = v == "true"
    elseif v ~= "" and v:sub(1, 1) ~= "/" and exists(v) then
      v = M.absolute(v)
    end
    out[k] = v
  end
  return out
end

function M.hash_file(path) return require("scimrun.csv").hash(path) end

-- Hashes of every parameter that names an existing file: a changed input refuses --resume.
function M.input_hashes(params)
  local out = {}
  for _, v in pairs(params) do
    if type(v) == "string" and v:sub(1, 1) == "/" and exists(v) then out[v] = M.hash_file(v) end
  end
  return out
end

function M.changes(run, wf_hash, inputs)
  local cjson = require "cjson"
  local changed = {}
  if run.workflow_hash ~= wf_hash then changed[#changed + 1] = "the workflow file " .. run.workflow_path end
  local old = run.inputs_json and cjson.decode(run.inputs_json) or {}
  for path, hash in pairs(old) do
    local now = M.exists(path) and M.hash_file(path) or nil
    if now ~= hash then changed[#changed + 1] = "the input file " .. path .. (now and "" or " (missing)") end
  end
  local _ = inputs
  return changed
end

function M.new_run_id()
  local t = os.date("!*t")
  local rnd
  local f = io.open("/dev/urandom", "rb")
  if f then
    local b = f:read(3)
    f:close()
    rnd = b:gsub(".", function(c) return ("%02x"):format(c:byte()) end)
  else
    rnd = ("%06x"):format(math.random(0, 0xffffff))
  end
  return ("r-%04d%02d%02d-%02d%02d%02d-%s"):format(t.year, t.month, t.day, t.hour, t.min, t.sec, rnd)
end

-- Creates the missing folders above path with mode 0700 (a state file's folder also holds its
-- sandbox journal and lock). true, or nil, message, code (scimrun.fs's convention).
function M.ensure_parent_dir(path)
  local dir = M.dirname(path)
  if dir == "." then return true end
  return fs.mkdir_p(dir, tonumber("700", 8))
end

local shell_quote = require("scimrun.cli.common").shell_quote

-- The exact command that continues this run, with the options that change its meaning.
function M.resume_command(o, run_id)
  local parts = { "scimrun", shell_quote(o.file), "--resume", run_id }
  if o.state then parts[#parts + 1] = "--state " .. shell_quote(o.state) end
  -- a worker's run goes on as a worker (a plain resume would run beside the others, unfenced)
  if o.worker then parts[#parts + 1] = "--worker" end
  if o.worker and o.lease then parts[#parts + 1] = "--lease " .. o.lease end
  if o.policy then parts[#parts + 1] = "--policy " .. shell_quote(o.policy) end
  if o.sandbox then parts[#parts + 1] = o.sandbox ~= "" and ("--sandbox=" .. shell_quote(o.sandbox)) or "--sandbox" end
  if o.continue_on_error then parts[#parts + 1] = "--continue-on-error" end
  if o.concurrency then parts[#parts + 1] = "--concurrency " .. o.concurrency end
  if o.allow_deletes then parts[#parts + 1] = "--allow-deletes " .. o.allow_deletes end
  -- the resumed run keeps the textfile up to date (else it would say "interrupted" until the next run)
  if o.metrics_textfile then parts[#parts + 1] = "--metrics-textfile " .. shell_quote(o.metrics_textfile) end
  return table.concat(parts, " ")
end

-- The command that checks the same input without sending anything (--check).
function M.check_command(o)
  local parts = { "scimrun", shell_quote(o.file), "--check" }
  local keys = {}
  for k in pairs(o.params or {}) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do parts[#parts + 1] = "--param " .. shell_quote(k .. "=" .. o.params[k]) end
  return table.concat(parts, " ")
end

return M
