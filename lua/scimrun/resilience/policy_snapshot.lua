-- A run's policy snapshot: the resolved policy (the merged table after `extends` and the
-- built-in values) kept in the run record, so that `--resume`, a SIGHUP reload and
-- `dlq replay --policy original` use what the run used, whatever happened to the files since.
--
-- Values, not a path: every setting is stored as JSON. Functions (a profile's `delay`, a
-- classify rule's `when`, `dead_letter.on_dead_letter`) cannot be: the snapshot marks each one
-- by its key path ({"$function": ["classify", 2, "when"]}) and then also keeps the text of
-- every file of the extends chain; restoring re-runs those texts (in the same sandbox as a
-- policy file) only to take the functions back from the same key paths, the values still come
-- from the snapshot. A snapshot without functions holds no source text.
--
-- S.take(pol, reason) -> snap                a plain table (cjson-encodable)
-- S.encode(snap) -> json  S.decode(json) -> snap or nil, err
-- S.restore(snap) -> policy                  raises a policy error (class "config")
-- S.of_run(db, run) -> snap or nil           the policy the run uses now: the last change
--                                            (SIGHUP reload, --policy on resume) or the start one
-- S.save(db, run_id, snap)                   records a change (the run's kv, key "policy")
-- S.lines(snap) -> { lines }                 a compact description (`scimrun runs show`)
-- snap.overrides: the command-line layer of the policy (--retry-attempts N, --set K=V, ...) as
-- { flag, arg, key, value } records, in order; the values already hold their effect
local cjson = require "cjson"
local policy = require "scimrun.resilience.policy"

local S = {}

local VERSION = 1
local KV_KEY = "policy"
-- fields policy.load adds that are not settings: kept beside the values (overrides: the
-- command-line layer, --retry-attempts N ... --set KEY=VALUE, already applied to the values)
local META = { file = true, chain = true, name = true, overrides = true }

-- restored policy -> the source texts of its snapshot (a later snapshot of it keeps them)
local restored_sources = setmetatable({}, { __mode = "k" })

local function absolute(path)
  if type(path) ~= "string" or path:sub(1, 1) == "/" then return path end
  return require("scimrun.cli.runfiles").absolute(path)
end

local function copy_path(path, k)
  local p = {}
  for i, x in ipairs(path) do p[i] = x end
  p[#p + 1] = k
  return p
end

local function count_keys(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n
end

local function is_array(t)
  local n = count_keys(t)
  return n > 0 and n == #t
end

local function all_string_keys(t)
  for k in pairs(t) do
    if type(k) ~= "string" then return false end
  end
  return true
end

-- Lua value -> JSON-able value. fns collects the key paths of the functions met.
local function to_plain(v, path, fns, top)
  local t = type(v)
  if t == "function" then
    fns[#fns + 1] = path
    return { ["$function"] = path }
  elseif t == "number" then
    if v ~= v or v == math.huge or v == -math.huge then return { ["$number"] = tostring(v) } end
    return v
  elseif t == "table" then
    local out = {}
    if is_array(v) then
      for i = 1, #v do out[i] = to_plain(v[i], copy_path(path, i), fns) end
    elseif all_string_keys(v) then
      for k, x in pairs(v) do
        if not (top and META[k]) then out[k] = to_plain(x, copy_path(path, k), fns) end
      end
    else -- mixed or sparse keys: a list of pairs, so that numbers stay numbers
      local pairs_list = {}
      for k, x in pairs(v) do pairs_list[#pairs_list + 1] = { k, to_plain(x, copy_path(path, k), fns) } end
      table.sort(pairs_list, function(a, b) return tostring(a[1]) < tostring(b[1]) end)
      out["$pairs"] = pairs_list
    end
    return out
  end
  return v -- string, boolean
end

local function from_plain(v)
  if type(v) ~= "table" then return v end
  if v["$number"] ~= nil then
    local n = tostring(v["$number"])
    if n:find("nan") then return 0 / 0 end
    return n:sub(1, 1) == "-" and -math.huge or math.huge
  end
  if v["$function"] ~= nil then return v end -- replaced by restore
  if v["$pairs"] ~= nil then
    local out = {}
    for _, kv in ipairs(v["$pairs"]) do out[kv[1]] = from_plain(kv[2]) end
    return out
  end
  local out = {}
  for k, x in pairs(v) do out[k] = from_plain(x) end
  return out
end

-- Deterministic JSON (sorted keys), so equal policies have equal text and equal hashes.
local function canonical(v)
  if type(v) ~= "table" then return cjson.encode(v) end
  local parts = {}
  if is_array(v) then
    for i = 1, #v do parts[i] = canonical(v[i]) end
    return "[" .. table.concat(parts, ",") .. "]"
  end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = tostring(k) end
  table.sort(keys)
  for i, k in ipairs(keys) do parts[i] = cjson.encode(k) .. ":" .. canonical(v[k]) end
  return "{" .. table.concat(parts, ",") .. "}"
end
S.canonical = canonical

function S.take(pol, reason)
  local fns = {}
  local values = to_plain(pol, {}, fns, true)
  local chain = {}
  for i, p in ipairs(pol.chain or {}) do chain[i] = absolute(p) end
  local snap = {
    v = VERSION, spec = pol.name, file = absolute(pol.file), chain = chain,
    reason = reason or "start", taken_at = os.time(),
    sha256 = require("scimrun.sha256").hex(canonical(values)),
    values = values, functions = fns,
  }
  if pol.overrides and #pol.overrides > 0 then
    local list = {}
    for i, ov in ipairs(pol.overrides) do
      list[i] = { flag = ov.flag, arg = ov.arg, key = ov.key, value = ov.value }
    end
    snap.overrides = list
  end
  if #fns > 0 then
    local sources = {}
    for i, s in ipairs(policy.sources(pol) or restored_sources[pol] or {}) do
      sources[i] = { file = absolute(s.file), text = s.text }
    end
    snap.sources = sources
  end
  return snap
end

function S.encode(snap) return canonical(snap) end

function S.decode(json)
  if type(json) ~= "string" or json == "" then return nil, "no snapshot" end
  local ok, snap = pcall(cjson.decode, json)
  if not ok or type(snap) ~= "table" or snap.v ~= VERSION or type(snap.values) ~= "table" then
    return nil, "unreadable policy snapshot"
  end
  return snap
end

local function config_error(msg)
  local e = { class = "config", message = msg }
  return setmetatable(e, { __tostring = function(x) return x.message end })
end

local function get_path(t, path)
  for _, k in ipairs(path) do
    if type(t) ~= "table" then return nil end
    t = t[k]
  end
  return t
end

local function set_path(t, path, v)
  for i = 1, #path - 1 do t = t[path[i]] end
  t[path[#path]] = v
end

local function path_name(path)
  local s = ""
  for _, k in ipairs(path) do
    if type(k) == "number" then s = s .. "[" .. k .. "]" else s = s .. (s == "" and "" or ".") .. k end
  end
  return s
end
S.path_name = path_name

-- The policy the snapshot describes, ready for retry.executor.
function S.restore(snap)
  local pol = from_plain(snap.values)
  local fns = snap.functions or {}
  if #fns > 0 then
    local texts = {}
    for _, s in ipairs(snap.sources or {}) do texts[s.file] = s.text end
    local ok, fresh = pcall(policy.load_sources, snap.chain or {}, texts, snap.spec)
    if not ok then
      error(config_error(("cannot restore the functions of the policy snapshot (%s): %s"):format(
        tostring(snap.file), tostring(type(fresh) == "table" and fresh.message or fresh))), 0)
    end
    for _, path in ipairs(fns) do
      local f = get_path(fresh, path)
      if type(f) ~= "function" then
        error(config_error(("the policy snapshot's %s is a function its stored source no longer makes; "
          .. "give the policy explicitly: --policy NAME|FILE"):format(path_name(path))), 0)
      end
      set_path(pol, path, f)
    end
  end
  pol.file, pol.chain, pol.name = snap.file, snap.chain, snap.spec
  if type(snap.overrides) == "table" and #snap.overrides > 0 then pol.overrides = snap.overrides end
  restored_sources[pol] = snap.sources
  return pol
end

function S.of_run(db, run)
  local changed = db:kv_get(run.id, KV_KEY)
  if changed then
    local snap = S.decode(changed)
    if snap then return snap end
  end
  return (S.decode(run.policy_json))
end

-- The snapshot the run started with, when a later change replaced it (nil otherwise).
function S.start_of_run(db, run)
  if not db:kv_get(run.id, KV_KEY) then return nil end
  return (S.decode(run.policy_json))
end

function S.save(db, run_id, snap)
  return db:apply { { op = "kv_put", run_id = run_id, key = KV_KEY, value_json = S.encode(snap) } }
end

-- What `runs show` prints: compact, one line per profile and per section.
local function fmt(v)
  if type(v) == "table" and v["$function"] then return "<function>" end
  if type(v) == "number" and v == math.floor(v) then return ("%d"):format(v) end
  if type(v) == "table" then return canonical(v) end
  return tostring(v)
end

local function section(t)
  local keys, parts = {}, {}
  for k in pairs(t or {}) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do parts[#parts + 1] = k .. "=" .. fmt(t[k]) end
  return #parts > 0 and table.concat(parts, " ") or "(none)"
end

function S.lines(snap)
  local v = snap.values
  local out = {}
  local function add(label, text)
    if label == "policy" then
      out[#out + 1] = ("%-11s%s"):format(label, text)
    else
      out[#out + 1] = ("%11s%-12s%s"):format("", label, text)
    end
  end
  add("policy", ("%s, sha256 %s, %s %s"):format(tostring(snap.spec or snap.file), tostring(snap.sha256):sub(1, 12),
    snap.reason == "start" and "snapshot taken at start" or ("changed by " .. tostring(snap.reason)),
    os.date("!%Y-%m-%dT%H:%M:%SZ", tonumber(snap.taken_at) or 0)))
  add("files", table.concat(snap.chain or { tostring(snap.file) }, " -> "))
  if type(snap.overrides) == "table" and #snap.overrides > 0 then
    local flags = {}
    for i, ov in ipairs(snap.overrides) do flags[i] = policy.override_text(ov) end
    add("flags", table.concat(flags, " ") .. "  (the command line, over the files; --resume keeps them)")
  end
  local names = {}
  for name in pairs(v.profiles or {}) do names[#names + 1] = name end
  table.sort(names)
  for i, name in ipairs(names) do
    add(i == 1 and "profiles" or "", ("%s: %s"):format(name, policy.describe_profile(v.profiles[name])))
  end
  local layers = {}
  for _, ops in ipairs(v.operation_layers or { v.operations or {} }) do
    local keys = {}
    for pat in pairs(ops) do keys[#keys + 1] = pat end
    table.sort(keys)
    local parts = {}
    for _, pat in ipairs(keys) do parts[#parts + 1] = pat .. " -> " .. tostring(ops[pat]) end
    if #parts > 0 then layers[#layers + 1] = table.concat(parts, ", ") end
    if ops["*"] then break end -- the layers after a "*" are never consulted
  end
  add("operations", table.concat(layers, " | then ") .. (#layers > 1 and "  (extending file first)" or ""))
  local rules = {}
  for i, r in ipairs(v.classify or {}) do rules[#rules + 1] = r.name or ("classify[" .. i .. "]") end
  add("classify", #rules == 0 and "built-in rules only" or (#rules .. " rules: " .. table.concat(rules, ", ")))
  for _, name in ipairs { "breaker", "rate_limit", "bulkhead", "timeouts", "budget", "dead_letter", "scim" } do
    if v[name] then add(name, section(v[name])) end
  end
  local fns = snap.functions or {}
  if #fns > 0 then
    local list = {}
    for i, p in ipairs(fns) do list[i] = path_name(p) end
    add("functions", table.concat(list, ", ") .. " (restored from the stored source text)")
  end
  return out
end

return S
