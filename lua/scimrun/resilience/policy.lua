-- Policy files: the operator's resilience settings (retry profiles, operation map, error
-- classification, breaker, rate limit, bulkhead, timeouts, budget, dead letters).
--
-- policy.load(name_or_path, { datadir = scimrun.datadir }) -> policy, or raises a policy error
--   (a table: { class = "config", file, key, message }, tostring() gives the message).
--   A name ("fast-test") means policies/NAME.lua, searched in ./policies then DATADIR/policies;
--   anything with a "/" or ending in ".lua" is a path. Files run in an allow-listed environment
--   (no io, no require, no global writes), are validated against a schema and merged over the
--   file they `extends` (the extending file wins; its classify rules come first).
-- policy.profile_for(pol, op) -> profile, profile_name   (file by file from the extending one;
--                                                          in a file exact > "users.*" > "*")
-- policy.describe(pol) -> { lines }                        (what `scimrun policy check` prints)
-- policy.guard(fn, what, ...) -> ok, results...            (calls a policy function, CPU-bounded:
--                                                          scimrun.sandboxed_load.guard)
-- policy.is_error(e) -> bool
-- policy.sources(pol) -> { { file, text }, ... }  the text of each file of the chain, as loaded
-- policy.load_sources(chain, texts, spec) -> policy  the same load from stored texts (texts[file])
--   instead of the files: how a run's policy snapshot gets its functions back (policy_snapshot.lua)
-- policy.apply_overrides(pol, overrides) -> pol      the command-line layer (--retry-attempts N,
--   --backoff-*, --jitter, --set KEY=VALUE) over the policy, in order; validated by the same
--   schema, a bad value raises a policy error naming the flag. pol.overrides keeps the list.
--   policy.load(spec, { overrides = list }) loads and applies in one go.
local schema = require "scimrun.resilience.policy_schema"
local sandboxed_load = require "scimrun.sandboxed_load"

local M = {}

local PolicyError = {}
PolicyError.__index = PolicyError
PolicyError.__tostring = function(e) return e.message end

function M.is_error(e) return getmetatable(e) == PolicyError end

-- problems: { { key = "profiles.x.attempts", msg = "...", fix = "..." }, ... }
local function raise(file, problems)
  -- in key order: the same file always reports the same first problem
  table.sort(problems, function(a, b) return tostring(a.key or "") < tostring(b.key or "") end)
  local lines = {}
  for _, p in ipairs(problems) do
    local line = p.key and p.key ~= "" and (p.key .. ": " .. p.msg) or p.msg
    if p.fix then line = line .. "; " .. p.fix end
    lines[#lines + 1] = line
  end
  -- One line wherever it is shown; `scimrun policy check FILE` lists every problem.
  local msg = ("invalid policy %s: %s"):format(file, lines[1] or "?")
  if #lines > 1 then
    msg = msg .. ("; and %d more (scimrun policy check %s lists them)"):format(#lines - 1, file)
  end
  error(setmetatable({ class = "config", file = file, key = problems[1] and problems[1].key,
                       problems = problems, lines = lines, message = msg }, PolicyError), 0)
end

-- Policy functions (hooks, classify `when`, delay, on_dead_letter) run under this CPU-time limit.
M.guard = sandboxed_load.guard

local function file_exists(path)
  local f = io.open(path, "r")
  if f then f:close() return true end
  return false
end

local function dirname(path)
  return path:match("^(.*)/[^/]*$") or "."
end

local function is_name(s) return not s:find("/", 1, true) and not s:match("%.lua$") end

-- Resolves a policy name or path. from_dir: the directory of the file that `extends` it.
local function resolve(spec, from_dir, datadir, referrer)
  if type(spec) ~= "string" or spec == "" then
    raise(referrer or "(argument)", { { key = referrer and "extends", msg = "expected a policy name or path",
                                         fix = 'write extends = "default"' } })
  end
  local tried = {}
  local function try(p)
    tried[#tried + 1] = p
    return file_exists(p) and p or nil
  end
  if is_name(spec) then
    local found = (from_dir and try(from_dir .. "/" .. spec .. ".lua"))
      or try("policies/" .. spec .. ".lua")
      or (datadir and try(datadir .. "/policies/" .. spec .. ".lua"))
    if found then return found end
  else
    local p = spec
    if from_dir and p:sub(1, 1) ~= "/" and not file_exists(p) then p = from_dir .. "/" .. p end
    if try(p) then return p end
  end
  local problem = { key = referrer and "extends" or nil,
                    msg = ("no policy '%s' (looked in %s)"):format(spec, table.concat(tried, ", ")),
                    fix = "give a name from policies/ (e.g. default, fast-test) or a path to a .lua file" }
  if referrer then raise(referrer, { problem }) end
  error(setmetatable({ class = "config", file = spec, message = "policy not found: " .. problem.msg ..
                       "; " .. problem.fix }, PolicyError), 0)
end

local cite_file = require("scimrun.errors").cite_file

local function read_file(path)
  local f, err = io.open(path, "rb")
  if not f then
    error(setmetatable({ class = "config", file = path, message = "cannot read policy: " .. tostring(err) },
                       PolicyError), 0)
  end
  local text = f:read("*a")
  f:close()
  return text
end

-- Runs one file's text in its sandbox and validates it on its own. Returns the raw table.
local function run_file(path, text)
  local chunk, err = sandboxed_load.load(text, path, "policy", { cite_path = true })
  if not chunk then
    error(setmetatable({ class = "config", file = path,
                         message = "invalid policy (syntax): " .. cite_file(err, path) }, PolicyError), 0)
  end
  local ok, res = M.guard(chunk, "policy file " .. path)
  if not ok then
    error(setmetatable({ class = "config", file = path,
                         message = "invalid policy: " .. cite_file(res, path) }, PolicyError), 0)
  end
  if type(res) ~= "table" then
    raise(path, { { msg = ("the file must return a table, it returned %s"):format(type(res)),
                    fix = "end the file with `return { profiles = {...}, ... }`" } })
  end
  local problems = schema.check_file(res)
  if #problems > 0 then raise(path, problems) end
  return res
end

local function deep_copy(v, seen)
  if type(v) ~= "table" then return v end
  seen = seen or {}
  if seen[v] then return seen[v] end
  local t = {}
  seen[v] = t
  for k, x in pairs(v) do t[k] = deep_copy(x, seen) end
  return t
end

local function is_array(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n > 0 and n == #t
end

-- The extending file (over) wins; classify rules of `over` come before those of `base`.
local function merge(base, over, top)
  local out = deep_copy(base)
  for k, v in pairs(over) do
    if top and k == "extends" then -- luacheck: ignore 542
      -- the chain is recorded separately
    elseif top and k == "classify" then
      local rules = deep_copy(v)
      for _, r in ipairs(out.classify or {}) do rules[#rules + 1] = r end
      out.classify = rules
    elseif type(v) == "table" and type(out[k]) == "table" and not is_array(v) and not is_array(out[k]) then
      out[k] = merge(out[k], v, false)
    else
      out[k] = deep_copy(v)
    end
  end
  return out
end

-- layers: each file's own `operations` table, the extending file first.
-- src: { read = function(path) -> text, resolve = function(extends, path, depth) -> path,
--        texts = { { file, text }, ... } (filled) }
local function load_chain(path, src, seen, chain, layers)
  if seen[path] then
    local names = {}
    for _, p in ipairs(chain) do names[#names + 1] = p end
    names[#names + 1] = path
    raise(chain[#chain], { { key = "extends", msg = "extends cycle: " .. table.concat(names, " -> "),
                             fix = "remove one of the extends so the chain ends in a file without extends" } })
  end
  seen[path] = true
  chain[#chain + 1] = path
  local text = src.read(path)
  src.texts[#src.texts + 1] = { file = path, text = text }
  local raw = run_file(path, text)
  layers[#layers + 1] = deep_copy(raw.operations or {})
  if raw.extends == nil then return raw end
  local base_path = src.resolve(raw.extends, path, #chain)
  local base = load_chain(base_path, src, seen, chain, layers)
  return merge(base, raw, true)
end

local loaded_texts = setmetatable({}, { __mode = "k" }) -- policy -> { { file, text }, ... }

local function build(path, src, spec)
  local chain, layers = {}, {}
  local merged = load_chain(path, src, {}, chain, layers)
  local pol = merge(schema.BUILTIN, merged, true)
  layers[#layers + 1] = deep_copy(schema.BUILTIN.operations)
  -- Operation patterns are consulted file by file, the extending file first: its "*" must
  -- beat a parent's "users.create", or extending could never change what a parent named.
  pol.operation_layers = layers
  local problems = schema.check_effective(pol)
  if #problems > 0 then raise(path, problems) end
  pol.file = path
  pol.chain = chain
  pol.name = spec
  loaded_texts[pol] = src.texts
  return pol
end

function M.load(spec, opts)
  opts = opts or {}
  local datadir = opts.datadir
  if datadir == nil and rawget(_G, "scimrun") then datadir = scimrun.datadir end
  local path = resolve(spec, nil, datadir, nil)
  local pol = build(path, {
    read = read_file,
    resolve = function(extends, from) return resolve(extends, dirname(from), datadir, from) end,
    texts = {},
  }, spec)
  return M.apply_overrides(pol, opts.overrides)
end

function M.sources(pol) return loaded_texts[pol] end

-- The chain is replayed as recorded: the file at chain[i + 1] is what chain[i] extends.
function M.load_sources(chain, texts, spec)
  return build(chain[1], {
    read = function(path)
      local text = texts[path]
      if not text then
        raise(path, { { msg = "no stored text of this file in the snapshot",
                        fix = "give the policy explicitly: --policy NAME|FILE" } })
      end
      return text
    end,
    resolve = function(extends, from, depth)
      return chain[depth + 1] or raise(from, { { key = "extends", msg = ("extends %q, which the snapshot does not hold")
        :format(tostring(extends)), fix = "give the policy explicitly: --policy NAME|FILE" } })
    end,
    texts = {},
  }, spec)
end

local op_cache = setmetatable({}, { __mode = "k" }) -- policy -> compiled operation layers

-- The command-line layer ------------------------------------------------------------------

local function override_text(ov)
  return ov.flag == "--set" and ("--set " .. tostring(ov.arg)) or (ov.flag .. " " .. tostring(ov.arg))
end
M.override_text = override_text

local function raise_flag(ov, p)
  local line = p.key and p.key ~= "" and (p.key .. ": " .. p.msg) or p.msg
  if p.fix then line = line .. "; " .. p.fix end
  local text = override_text(ov)
  error(setmetatable({ class = "config", file = text, key = p.key, problems = { p }, lines = { line },
                       message = text .. ": " .. line }, PolicyError), 0)
end

-- The text of a --set value as the schema expects it: a number, a boolean or a string.
local function convert(spec, text)
  local types = spec and (type(spec.t) == "table" and spec.t or { spec.t }) or {}
  for _, t in ipairs(types) do
    if (t == "number" or t == "integer") and tonumber(text) then return tonumber(text) end
    if t == "boolean" and (text == "true" or text == "false") then return text == "true" end
  end
  return text
end

local function split_key(key)
  local parts = {}
  for part in (key .. "."):gmatch("([^.]*)%.") do parts[#parts + 1] = part end
  return parts
end

-- Validates one override with the schema, as a one-key policy file, and applies it.
-- cli_layer(): the operations layer of the command line (created on first use).
local function apply_one(pol, ov, cli_layer)
  local key = tostring(ov.key)
  local parts = split_key(key)
  local section = parts[1]
  local function check(layer, rename)
    local problems = schema.check_file(layer)
    if #problems > 0 then
      table.sort(problems, function(a, b) return tostring(a.key) < tostring(b.key) end)
      local p = problems[1]
      if rename and p.key then p.key = p.key:gsub(rename[1], rename[2]) end
      raise_flag(ov, p)
    end
  end
  if section == "operations" then
    local pattern = key:sub(#"operations." + 1)
    if #parts < 2 or pattern == "" then
      raise_flag(ov, { key = key, msg = "names no operation", fix = "write operations.PATTERN=PROFILE, "
        .. "for example operations.users.create=none" })
    end
    check { operations = { [pattern] = ov.value } }
    cli_layer()[pattern] = ov.value
    pol.operations[pattern] = ov.value
  elseif section == "profiles" then
    if #parts ~= 3 or parts[2] == "" or parts[3] == "" then
      raise_flag(ov, { key = key, msg = "expected profiles.NAME.KEY", fix = "for example profiles.balanced.attempts=3, "
        .. "or profiles.*.attempts=3 for every profile" })
    end
    local name, field = parts[2], parts[3]
    local value = convert(schema.SECTIONS.profile[field], ov.value)
    local names = {}
    for n in pairs(pol.profiles) do names[#names + 1] = n end
    table.sort(names)
    if name ~= "*" and not pol.profiles[name] then
      local guess = schema.closest(name, names)
      raise_flag(ov, { key = "profiles." .. name, msg = "no such profile in policy " .. tostring(pol.file),
        fix = (guess and ("did you mean '%s'? "):format(guess) or "") .. "defined profiles: "
          .. table.concat(names, ", ") .. " (or * for all)" })
    end
    check({ profiles = { [name == "*" and "all" or name] = { [field] = value } } },
      name == "*" and { "^profiles%.all", "profiles.*" } or nil)
    for _, n in ipairs(name == "*" and names or { name }) do pol.profiles[n][field] = value end
  elseif schema.SECTIONS[section] and section ~= "profile" then
    if #parts ~= 2 or parts[2] == "" then
      local valid = {}
      for k in pairs(schema.SECTIONS[section]) do valid[#valid + 1] = k end
      table.sort(valid)
      raise_flag(ov, { key = key, msg = "expected " .. section .. ".KEY",
        fix = "KEY is one of: " .. table.concat(valid, ", ") })
    end
    local value = convert(schema.SECTIONS[section][parts[2]], ov.value)
    check { [section] = { [parts[2]] = value } }
    pol[section] = pol[section] or {}
    pol[section][parts[2]] = value
  elseif section == "classify" or section == "extends" or section == "description" then
    raise_flag(ov, { key = section, msg = "cannot be set from the command line",
      fix = "write it in a policy file (extends = \"default\" and what you change) and pass --policy FILE" })
  else
    check { [section] = ov.value }
    raise_flag(ov, { key = key, msg = "not a policy key" })
  end
end

-- Which override a problem of the merged policy comes from: the last one that set its key,
-- else the last one in its section (profiles: of its profile or of every profile).
local function culprit(overrides, p)
  local parts = split_key(tostring(p.key))
  local best
  for _, ov in ipairs(overrides) do
    local o = split_key(tostring(ov.key))
    local same_place = o[1] == parts[1] and (o[1] ~= "profiles" or o[2] == "*" or o[2] == parts[2])
    if same_place then best = ov end
  end
  for _, ov in ipairs(overrides) do
    local o = split_key(tostring(ov.key))
    if o[1] == parts[1] and (o[1] ~= "profiles" or o[2] == "*" or o[2] == parts[2]) and o[#o] == parts[#parts] then
      best = ov
    end
  end
  return best or overrides[#overrides]
end

function M.apply_overrides(pol, overrides)
  if not overrides or #overrides == 0 then return pol end
  local before = pol.overrides or {}
  local had_layer = false
  for _, ov in ipairs(before) do had_layer = had_layer or split_key(tostring(ov.key))[1] == "operations" end
  local function cli_layer()
    pol.operation_layers = pol.operation_layers or { pol.operations }
    if not had_layer then
      table.insert(pol.operation_layers, 1, {})
      had_layer = true
    end
    return pol.operation_layers[1]
  end
  for _, ov in ipairs(overrides) do apply_one(pol, ov, cli_layer) end
  local problems = schema.check_effective(pol)
  if #problems > 0 then
    table.sort(problems, function(a, b) return tostring(a.key) < tostring(b.key) end)
    raise_flag(culprit(overrides, problems[1]), problems[1])
  end
  -- kept in order, one per key (a later one for the same key replaces the earlier)
  local all, out = {}, {}
  for _, ov in ipairs(before) do all[#all + 1] = ov end
  for _, ov in ipairs(overrides) do
    all[#all + 1] = { flag = ov.flag, arg = ov.arg, key = ov.key, value = ov.value }
  end
  for i, ov in ipairs(all) do
    local later = false
    for j = i + 1, #all do later = later or all[j].key == ov.key end
    if not later then out[#out + 1] = ov end
  end
  pol.overrides = out
  op_cache[pol] = nil
  return pol
end

-- Operation patterns: "*" matches any run of characters; an exact name beats every pattern,
-- then the pattern with more literal characters.
local function glob_to_lua(p)
  return "^" .. p:gsub("[%^%$%(%)%%%.%[%]%+%-%?]", "%%%0"):gsub("%*", ".*") .. "$"
end
M.glob_to_lua = glob_to_lua

local function compile_layer(ops)
  local c = { exact = {}, patterns = {} }
  for pat, prof in pairs(ops or {}) do
    if pat:find("*", 1, true) then
      local _, stars = pat:gsub("%*", "")
      c.patterns[#c.patterns + 1] = { pat = pat, lua = glob_to_lua(pat), weight = #pat - stars, profile = prof }
    else
      c.exact[pat] = prof
    end
  end
  table.sort(c.patterns, function(a, b)
    if a.weight ~= b.weight then return a.weight > b.weight end
    return a.pat < b.pat
  end)
  return c
end

-- One compiled layer per file of the extends chain (a policy table built by hand has one).
local function compile_ops(pol)
  local c = op_cache[pol]
  if c then return c end
  c = {}
  for i, ops in ipairs(pol.operation_layers or { pol.operations }) do c[i] = compile_layer(ops) end
  op_cache[pol] = c
  return c
end

-- Returns the profile table for `op` and its name (the built-in fallback when nothing maps).
-- The first file of the chain that maps `op` decides: its exact name, else its most specific
-- pattern.
function M.profile_for(pol, op)
  op = op or ""
  local name
  for _, layer in ipairs(compile_ops(pol)) do
    name = layer.exact[op]
    if not name then
      for _, p in ipairs(layer.patterns) do
        if op:match(p.lua) then name = p.profile break end
      end
    end
    if name then break end
  end
  local prof = name and pol.profiles[name]
  if not prof then return schema.FALLBACK_PROFILE, "(built-in)" end
  return prof, name
end

local function fmt_num(v)
  if type(v) ~= "number" then return tostring(v) end
  if v == math.floor(v) then return ("%d"):format(v) end
  return (("%.3f"):format(v):gsub("0+$", ""))
end

local function describe_profile(p)
  if p.attempts == 1 then return "1 attempt (no retries)" end
  local how
  if p.delay then
    how = "delay from a Lua function"
  elseif p.backoff == "exponential" then
    how = ("exponential backoff %ss x%s"):format(fmt_num(p.base), fmt_num(p.multiplier))
  elseif p.backoff == "linear" then
    how = ("linear backoff %ss x retry number"):format(fmt_num(p.base))
  else
    how = ("constant backoff %ss"):format(fmt_num(p.base))
  end
  return ("%d attempts, %s, delay %s..%ss, %s jitter, give up after %ss"):format(
    p.attempts, how, fmt_num(p.min_delay), fmt_num(p.max_delay), p.jitter, fmt_num(p.max_elapsed))
end

local function describe_rule(r)
  local parts = {}
  local function list(v)
    if type(v) ~= "table" then return tostring(v) end
    if v.min or v.max then return ("%s..%s"):format(tostring(v.min or "?"), tostring(v.max or "?")) end
    local t = {}
    for _, x in ipairs(v) do t[#t + 1] = tostring(x) end
    return table.concat(t, "|")
  end
  for _, f in ipairs({ "status", "scim_type", "kind", "op", "detail" }) do
    if r[f] ~= nil then parts[#parts + 1] = f .. " " .. list(r[f]) end
  end
  if r.header then
    local name, value = r.header.name or r.header[1], r.header.value or r.header[2]
    parts[#parts + 1] = "header " .. tostring(name) .. (value and ("=" .. tostring(value)) or "")
  end
  if r.when then parts[#parts + 1] = "when <function>" end
  if #parts == 0 then parts[1] = "any error" end
  local s = table.concat(parts, ", ") .. " -> " .. r.class
  if r.suggest then s = s .. '  (suggest: "' .. r.suggest .. '")' end
  return s
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t or {}) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  return keys
end

local function describe_section(t)
  local parts = {}
  for _, k in ipairs(sorted_keys(t)) do
    local v = t[k]
    parts[#parts + 1] = k .. "=" .. (type(v) == "function" and "<function>" or fmt_num(v))
  end
  return #parts > 0 and table.concat(parts, " ") or "(none)"
end

M.describe_profile = describe_profile

function M.describe(pol)
  local classify = require "scimrun.resilience.classify"
  local out = {}
  local function add(fmt, ...) out[#out + 1] = select("#", ...) > 0 and fmt:format(...) or fmt end
  add("policy %s", tostring(pol.file))
  if pol.chain and #pol.chain > 1 then add("  extends: %s", table.concat(pol.chain, " -> ")) end
  if pol.overrides then
    local flags = {}
    for i, ov in ipairs(pol.overrides) do flags[i] = override_text(ov) end
    add("  command line (over the files): %s", table.concat(flags, " "))
  end
  add("")
  add("profiles:")
  for _, name in ipairs(sorted_keys(pol.profiles)) do
    add("  %-14s %s", name, describe_profile(pol.profiles[name]))
  end
  add("")
  add("operations (file by file, the extending file first; in a file, the exact name, then the most")
  add("specific pattern):")
  local layers = compile_ops(pol)
  local cli_ops = 0 -- the command line's operations layer comes first
  for _, ov in ipairs(pol.overrides or {}) do
    if split_key(tostring(ov.key))[1] == "operations" then cli_ops = 1 end
  end
  for i, c in ipairs(layers) do
    local from = (i <= cli_ops and "the command line") or (pol.chain and pol.chain[i - cli_ops]) or "built-in"
    if next(c.exact) or #c.patterns > 0 then
      if #layers > 1 then add("  from %s:", from) end
      for _, op in ipairs(sorted_keys(c.exact)) do add("  %-20s -> %s", op, c.exact[op]) end
      for _, p in ipairs(c.patterns) do add("  %-20s -> %s", p.pat, p.profile) end
    end
  end
  add("")
  add("classify (first match wins):")
  for i, r in ipairs(pol.classify or {}) do
    add("  %-24s %s", r.name or ("classify[" .. i .. "]"), describe_rule(r))
  end
  local names = {}
  for _, r in ipairs(classify.DEFAULTS) do names[#names + 1] = r.name end
  add("  then the built-in defaults (the same rules as policies/default.lua): %s", table.concat(names, ", "))
  add("  anything else -> permanent")
  add("")
  for _, section in ipairs({ "breaker", "rate_limit", "bulkhead", "timeouts", "budget", "dead_letter" }) do
    add("%-12s %s", section .. ":", describe_section(pol[section]))
  end
  return out
end

return M
