-- Attribute mapping: turns an input row (CSV/JSONL) into SCIM attributes, as data.
--
--   local mapping = require "scimrun.mapping"
--   local spec = mapping.load(path_or_nil, { require = { "userName" } })  -- nil/"": the default mapping
--   local plan = mapping.plan(spec, columns)   -- { mapped, unmapped, missing_required, ... }
--   mapping.assert_header(plan)                -- raises exit-2 input error for a missing required column
--   mapping.log_plan(plan, wf.log)             -- info: column -> attribute; warn: unmapped columns
--   local attrs, reason = mapping.apply(plan or spec, row)   -- nil, "column 'email' ..." on a bad row
--   local result = mapping.check_rows(plan, csv.rows(path))  -- every bad row, duplicates included
--   mapping.prepare(spec, columns, { file, log, ignore })    -- plan + assert_header + log_plan
--   mapping.with_required(spec, attrs) / mapping.select(spec, attrs)  -- copies: more required / fewer attrs
--
-- A spec maps attribute paths to sources. In code it is a table; in a file (Lua, run in the same
-- restricted environment as policy files, or JSON) it is the same table, or
-- { extends = "default", attributes = {...}, ignore = { "column", ... } }.
--
--   userName = "email",                                  -- a string names a source column
--   ["name.givenName"] = { from = { "givenName", "first_name" } },  -- first name the header has
--   ['emails[type eq "work"].value'] = { from = "email", lower = true, required = true },
--   displayName = { concat = { "first_name", " ", "last_name" } },  -- columns and literal text
--   userType = { const = "Employee" },                   -- a constant (string, number, boolean)
--   ["urn:...:enterprise:2.0:User:department"] = { from = "dept", default = "none" },
--   active = { from = "status", map = { terminated = false, ["*"] = true } },
--   title = function(row) return row.job end,            -- a function(row) computes (Lua only)
--   nickName = { from = "nick", fn = function(value, row) return value:sub(1, 20) end },
--
-- Column names match ignoring case, spaces and punctuation (first_name = firstName = "First
-- Name"); in a list the first name the input has wins. Steps of a source, in order: read (from,
-- concat, const or a function), trim (on unless trim = false), default when empty, lower/upper,
-- map (exact then case-insensitive key, "*" for any other value), fn(value, row) (called when
-- there is a value, or always when the source reads nothing else), required.
-- A concat part is a column when it looks like a name (letters, digits, _ . -, starting with a
-- letter), otherwise literal text; { const = "text" } or { from = "A Column" } say it
-- explicitly. A concat whose columns are all empty is empty.
--
-- Rules of apply: an empty or absent value (nil, "", JSON null) sets nothing, so an empty email
-- creates no emails entry. A function may return nil, "reason" to fail the row. `active` and
-- `primary` accept true/false/yes/no/1/0 strings. A column mapped to an emails[...].value must
-- hold a valid address. A multi-valued entry built from a filter path gets primary=true when it
-- is the only entry of its attribute and none sets primary itself.
-- Spec mistakes (unparsable path, a path both a value and a parent, an unknown key) raise an
-- error table of class "config" (exit 2), naming the file and the key.
local errors = require "scimrun.errors"

local M = {}

M.ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
M.WORK_EMAIL = 'emails[type eq "work"].value'

local NULL
do
  local ok, cjson = pcall(require, "cjson")
  NULL = ok and cjson.null or {}
end

local find, sub, lower, upper = string.find, string.sub, string.lower, string.upper
local concat = table.concat

local function trim(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end

-- The form a column name is compared in: lower case, without white space or ASCII punctuation.
local function norm(s) return (lower(s):gsub("[%s%p]", "")) end
M.normalize_column = norm

local function is_empty(v) return v == nil or v == "" or v == NULL end

-- Checks an address the way a provisioning target will: one @, a plausible local part and a
-- dotted domain of valid labels (non-ASCII allowed, for internationalised addresses).
-- Returns true, or false and the reason.
function M.valid_email(s)
  if type(s) ~= "string" then return false, "not a string" end
  if s == "" then return false, "empty" end
  if #s > 254 then return false, "longer than 254 characters" end
  if find(s, "%s") then return false, "contains white space" end
  local at = find(s, "@", 1, true)
  if not at then return false, "has no @" end
  if find(s, "@", at + 1, true) then return false, "has more than one @" end
  local loc, dom = sub(s, 1, at - 1), sub(s, at + 1)
  if loc == "" then return false, "nothing before the @" end
  if #loc > 64 then return false, "the part before the @ is longer than 64 characters" end
  if find(loc, "[^%w!#$%%&'*+/=?^_`{|}~.%-\128-\255]") then return false, "invalid character before the @" end
  if find(loc, "^%.") or find(loc, "%.$") or find(loc, "..", 1, true) then
    return false, "misplaced dot before the @"
  end
  if dom == "" then return false, "nothing after the @" end
  if not find(dom, ".", 1, true) then return false, "the domain has no dot" end
  local labels = 0
  for label in (dom .. "."):gmatch("(.-)%.") do
    labels = labels + 1
    if label == "" then return false, "empty label in the domain" end
    if #label > 63 then return false, "a domain label is longer than 63 characters" end
    if find(label, "[^%w%-\128-\255]") then return false, "invalid character in the domain" end
    if find(label, "^%-") or find(label, "%-$") then return false, "a domain label starts or ends with -" end
  end
  local tld = dom:match("([^.]*)$")
  if labels < 2 or #tld < 2 or not find(tld, "%D") then return false, "the domain has no valid top-level part" end
  return true
end

local BOOLEAN_ATTRS = { active = true, primary = true }
local TRUTHY = { ["true"] = true, yes = true, ["1"] = true, y = true }
local FALSY = { ["false"] = false, no = false, ["0"] = false, n = false }

-- ---- errors ----------------------------------------------------------------------------

local FILE_FIX = 'fix the mapping file (docs/examples.md, "Attribute mapping" describes the format), then run again'

-- A mistake in a spec: class "config" (exit code 2), one line naming the file and the key.
local function spec_error(src, key, msg, fix)
  local detail
  if src then
    detail = ("invalid mapping %s: %s%s"):format(src, key and (key .. ": ") or "", msg)
  else
    detail = ("mapping: %s%s"):format(key and (key .. ": ") or "", msg)
  end
  error(errors.new { class = "config", file = src, key = key, detail = detail,
    suggest = fix or (src and FILE_FIX) or nil }, 0)
end

-- Levenshtein distance, for "did you mean".
local function distance(a, b)
  a, b = lower(a), lower(b)
  local prev = {}
  for j = 0, #b do prev[j] = j end
  for i = 1, #a do
    local cur = { [0] = i }
    for j = 1, #b do
      local cost = sub(a, i, i) == sub(b, j, j) and 0 or 1
      cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
    end
    prev = cur
  end
  return prev[#b]
end

local function did_you_mean(word, candidates)
  local best, bd
  for _, c in ipairs(candidates) do
    local d = distance(word, c)
    if d <= math.max(2, math.floor(#c / 3)) and (not bd or d < bd) then best, bd = c, d end
  end
  return best and (" (did you mean '%s'?)"):format(best) or ""
end

-- ---- attribute paths -------------------------------------------------------------------

-- Parses one attribute path into steps: { name = "emails", attr = "type", value = "work" } for a
-- filter segment, { name = "givenName" } otherwise. Returns nil, reason when it cannot.
local function parse_path(path)
  local steps = {}
  local rest = path
  if find(path, "^urn:") then
    -- The schema URN contains dots and colons; the attribute path follows its last colon.
    local bracket = find(path, "[", 1, true) or #path + 1
    local last
    for i = bracket - 1, 1, -1 do
      if sub(path, i, i) == ":" then
        last = i
        break
      end
    end
    if not last or last == #path then return nil, "a schema URN must be followed by :attribute" end
    steps[1] = { name = sub(path, 1, last - 1) }
    rest = sub(path, last + 1)
  end
  local pos = 1
  while true do
    local name, after = rest:match("^([%a_$][%w_$%-]*)()", pos)
    if not name then return nil, ("expected an attribute name at %q"):format(sub(rest, pos)) end
    local step = { name = name }
    pos = after
    if sub(rest, pos, pos) == "[" then
      local attr, value, after2 = rest:match('^%[%s*([%a_][%w_]*)%s+eq%s+"([^"]*)"%s*%]()', pos)
      if not attr then return nil, 'a filter must read [attr eq "value"]' end
      step.attr, step.value, pos = attr, value, after2
    end
    steps[#steps + 1] = step
    if pos > #rest then break end
    if sub(rest, pos, pos) ~= "." then return nil, ("unexpected %q"):format(sub(rest, pos)) end
    pos = pos + 1
  end
  if steps[#steps].attr then return nil, 'a filter segment must be followed by a sub-attribute, as in .value' end
  return steps
end

-- RFC 7643 section 4.1: the attributes of the core User schema (checked in mapping files).
local CORE_USER = {}
for _, n in ipairs({ "externalId", "userName", "name", "displayName", "nickName", "profileUrl", "title", "userType",
  "preferredLanguage", "locale", "timezone", "active", "password", "emails", "phoneNumbers", "ims", "photos",
  "addresses", "entitlements", "roles", "x509Certificates" }) do
  CORE_USER[lower(n)] = n
end
local READ_ONLY = { id = true, meta = true, groups = true, schemas = true }
-- Names people write for an attribute that lives elsewhere.
local MOVED = {
  givenname = "name.givenName", familyname = "name.familyName", middlename = "name.middleName",
  formatted = "name.formatted", email = M.WORK_EMAIL, phonenumber = 'phoneNumbers[type eq "work"].value',
  department = M.ENTERPRISE .. ":department", manager = M.ENTERPRISE .. ":manager.value",
  employeenumber = M.ENTERPRISE .. ":employeeNumber", costcenter = M.ENTERPRISE .. ":costCenter",
  organization = M.ENTERPRISE .. ":organization", division = M.ENTERPRISE .. ":division",
}

local function check_user_attribute(src, path, steps)
  if find(path, "^urn:") then return end
  local first = lower(steps[1].name)
  if READ_ONLY[first] then
    spec_error(src, ("attribute '%s'"):format(path), ("'%s' is set by the provider, not by a mapping"):format(
      steps[1].name), "remove it from the mapping")
  end
  if CORE_USER[first] then return end
  local hint = MOVED[first] and (" (did you mean '%s'?)"):format(MOVED[first]) or ""
  if hint == "" then
    local names = {}
    for _, n in pairs(CORE_USER) do names[#names + 1] = n end
    table.sort(names)
    hint = did_you_mean(steps[1].name, names)
  end
  spec_error(src, ("attribute '%s'"):format(path), ("'%s' is not an attribute of the SCIM User schema%s; an "
    .. "extension attribute is written with its schema URN, as in %s:department"):format(steps[1].name, hint,
    M.ENTERPRISE))
end

-- ---- sources (nodes) -------------------------------------------------------------------

local NODE_KEYS = { "from", "concat", "const", "fn", "default", "lower", "upper", "trim", "map", "required" }
local IS_NODE_KEY = {}
for _, k in ipairs(NODE_KEYS) do IS_NODE_KEY[k] = true end
local TOP_KEYS = { "extends", "attributes", "ignore" }

local function is_scalar(v) return type(v) == "string" or type(v) == "number" or type(v) == "boolean" end

local function column_node(names)
  local n = {}
  for i, name in ipairs(names) do n[i] = norm(name) end
  return { names = names, norm = n, trim = true }
end

-- A concat part written as a plain string is a column when it looks like a name.
local function looks_like_column(s) return find(s, "^[%a_][%w_%.%-]*$") ~= nil end

local compile_node

local function compile_table_node(v, ctx, key, top)
  for k in pairs(v) do
    if type(k) ~= "string" or not IS_NODE_KEY[k] then
      local hint = type(k) == "string" and did_you_mean(k, NODE_KEYS) or ""
      spec_error(ctx.src, key, ("unknown key '%s'%s; a source takes %s"):format(tostring(k), hint,
        concat(NODE_KEYS, ", ")))
    end
  end
  local node
  local bases = {}
  for _, b in ipairs({ "from", "concat", "const" }) do
    if v[b] ~= nil and v[b] ~= NULL then bases[#bases + 1] = b end
  end
  if #bases > 1 then
    spec_error(ctx.src, key, ("give one of from, concat and const, not %s"):format(concat(bases, " and ")))
  end
  if v.from ~= nil and v.from ~= NULL then
    local names = v.from
    if type(names) == "string" then names = { names } end
    if type(names) ~= "table" or #names == 0 then
      spec_error(ctx.src, key .. ".from", "expected a column name or a list of column names")
    end
    local copy = {}
    for i, name in ipairs(names) do
      if type(name) ~= "string" or name == "" then
        spec_error(ctx.src, ("%s.from[%d]"):format(key, i), "expected a column name (a non-empty string)")
      end
      copy[i] = name
    end
    node = column_node(copy)
  elseif v.concat ~= nil and v.concat ~= NULL then
    if type(v.concat) ~= "table" or #v.concat == 0 then
      spec_error(ctx.src, key .. ".concat", 'expected a list of parts, as in { "first_name", " ", "last_name" }')
    end
    local parts, columns = {}, 0
    for i, part in ipairs(v.concat) do
      local pkey = ("%s.concat[%d]"):format(key, i)
      if type(part) == "string" and not looks_like_column(part) then
        parts[i] = { lit = part }
      elseif type(part) == "number" then
        parts[i] = { lit = tostring(part) }
      else
        parts[i] = compile_node(part, ctx, pkey)
        columns = columns + 1
      end
    end
    if columns == 0 then
      spec_error(ctx.src, key .. ".concat", "no part reads a column; write { const = ... } for fixed text")
    end
    node = { parts = parts, trim = true }
  elseif v.const ~= nil and v.const ~= NULL then
    if not is_scalar(v.const) then
      spec_error(ctx.src, key .. ".const", ("expected a string, number or boolean, got %s"):format(type(v.const)))
    end
    node = { const = v.const }
  else
    node = { trim = true }
  end
  if v.fn ~= nil then
    if type(v.fn) ~= "function" then
      spec_error(ctx.src, key .. ".fn", ("expected a function(value, row), got %s"):format(type(v.fn)),
        ctx.json and "functions need a Lua mapping file; a JSON file cannot hold one" or nil)
    end
    node.fn = v.fn
    node.guarded = ctx.guarded
    node.fn_only = #bases == 0 or nil -- with nothing to read, fn(nil, row) computes the value
  end
  if #bases == 0 and v.fn == nil and (v.default == nil or v.default == NULL) then
    spec_error(ctx.src, key, "a source needs one of from, concat, const, fn or default")
  end
  if v.default ~= nil and v.default ~= NULL then
    if is_scalar(v.default) then
      node.default = v.default
    else
      node.default_node = compile_node(v.default, ctx, key .. ".default")
    end
  end
  for _, flag in ipairs({ "lower", "upper", "trim", "required" }) do
    if v[flag] ~= nil and type(v[flag]) ~= "boolean" then
      spec_error(ctx.src, key .. "." .. flag, ("expected true or false, got %s"):format(type(v[flag])))
    end
  end
  if v.lower and v.upper then spec_error(ctx.src, key, "lower and upper cannot both be set") end
  node.lower, node.upper = v.lower or nil, v.upper or nil
  if v.trim == false then node.trim = nil end
  if v.required ~= nil then
    if not top then
      spec_error(ctx.src, key .. ".required", "required applies to an attribute, not to a part of its source")
    end
    node.required = v.required
  end
  if v.map ~= nil and v.map ~= NULL then
    if type(v.map) ~= "table" then
      spec_error(ctx.src, key .. ".map", ("expected a table of value = replacement, got %s"):format(type(v.map)))
    end
    local map, map_ci = {}, {}
    for mk, mv in pairs(v.map) do
      if type(mk) ~= "string" then
        spec_error(ctx.src, key .. ".map", ("keys must be strings, got %s"):format(type(mk)))
      end
      if not is_scalar(mv) and mv ~= NULL then
        spec_error(ctx.src, ("%s.map[%q]"):format(key, mk), ("expected a string, number, boolean or null, got %s")
          :format(type(mv)))
      end
      if mk == "*" then node.map_other = mv else
        map[mk] = mv
        if map_ci[lower(mk)] == nil then map_ci[lower(mk)] = mv end
      end
    end
    node.map, node.map_ci = map, map_ci
  end
  return node
end

compile_node = function(v, ctx, key, top)
  local tv = type(v)
  if tv == "string" then
    if v == "" then spec_error(ctx.src, key, "an empty column name") end
    return column_node({ v })
  elseif tv == "function" then
    return { call = v, guarded = ctx.guarded }
  elseif tv == "table" then
    return compile_table_node(v, ctx, key, top)
  end
  spec_error(ctx.src, key, ("maps to a %s; use a column name (string), a function(row), or a table such as "
    .. "{ from = \"column\" } or { const = %s }"):format(tv, tv == "boolean" and tostring(v) or "\"text\""))
end

-- Column nodes of a source: { { node, fallback } }, fallback when read only through a default.
local function column_nodes(node, out, fallback)
  out = out or {}
  if node.names then out[#out + 1] = { node = node, fallback = fallback or false } end
  if node.parts then
    for _, p in ipairs(node.parts) do
      if not p.lit then column_nodes(p, out, fallback) end
    end
  end
  if node.default_node then column_nodes(node.default_node, out, true) end
  return out
end

-- Compiles one attribute table into entries, keyed by lower-cased path. ctx: { src, guarded,
-- json, check_names, allow_false }. A false (or JSON null) value drops an inherited entry.
local function compile_entries(attrs, ctx)
  local out = {}
  for path, source in pairs(attrs) do
    if type(path) ~= "string" then
      spec_error(ctx.src, nil, ("attribute paths must be strings, got %s"):format(type(path)))
    end
    local key = ("attribute '%s'"):format(path)
    if source == false or source == NULL then
      if not ctx.allow_false then
        spec_error(ctx.src, key, ("maps to %s, which drops an attribute of the mapping it extends, and this one "
          .. "extends none; for a constant write { const = false }"):format(source == false and "false" or "null"))
      end
      out[lower(path)] = { path = path, drop = source == false and "false" or "null", origin = ctx.src }
    else
      local steps, why = parse_path(path)
      if not steps then spec_error(ctx.src, nil, ("cannot read attribute path '%s': %s"):format(path, why)) end
      if ctx.check_names then check_user_attribute(ctx.src, path, steps) end
      local node = compile_node(source, ctx, key, true)
      local last = steps[#steps].name
      out[lower(path)] = {
        path = path, steps = steps, nsteps = #steps, node = node,
        required = node.required or false, origin = ctx.src, builtin = ctx.builtin,
        email = lower(steps[1].name) == "emails" and #steps == 2 and last == "value",
        boolean = BOOLEAN_ATTRS[last] or false,
      }
    end
  end
  return out
end

local compiled_cache = setmetatable({}, { __mode = "k" })
local COMPILED, PLAN = {}, {}

-- Orders entries, checks that no path is both a value and a parent, and builds the compiled spec.
local function finish(by_path, meta)
  local entries = {}
  for _, e in pairs(by_path) do
    if not e.drop then entries[#entries + 1] = e end
  end
  table.sort(entries, function(a, b) return a.path < b.path end)
  local shapes = {}
  for _, e in ipairs(entries) do
    local shape = ""
    local function claim(kind)
      local prev = shapes[shape]
      if prev and (prev.kind ~= kind or kind == "leaf") then
        spec_error(e.origin, nil, ("attribute '%s' conflicts with '%s'"):format(e.path, prev.path))
      end
      shapes[shape] = prev or { kind = kind, path = e.path }
    end
    for i, st in ipairs(e.steps) do
      shape = shape .. "/" .. st.name
      claim(i == e.nsteps and "leaf" or "parent")
      if st.attr then
        shape = shape .. "[" .. st.attr .. "=" .. st.value .. "]"
        claim("parent")
      end
    end
    e.columns = column_nodes(e.node)
  end
  local compiled = setmetatable({ entries = entries, source = meta.source or "the workflow's mapping",
    file = meta.file, ignore = meta.ignore or {} }, COMPILED)
  compiled_cache[compiled] = compiled
  return compiled
end

-- Validates a spec written in code and returns its compiled form (cached per spec table).
-- A compiled spec or a plan is returned as it is.
function M.compile(spec)
  if type(spec) ~= "table" then error("mapping: spec must be a table of attribute = source", 2) end
  local mt = getmetatable(spec)
  if mt == COMPILED then return spec end
  if mt == PLAN then return spec.spec end
  local cached = compiled_cache[spec]
  if cached then return cached end
  local compiled = finish(compile_entries(spec, {}), {})
  compiled_cache[spec] = compiled
  return compiled
end

-- Marks attributes as required (a copy; the spec is not changed). Each must have an entry.
function M.with_required(spec, attrs)
  local compiled = M.compile(spec)
  local by = {}
  for _, e in ipairs(compiled.entries) do by[lower(e.path)] = e end
  local entries = {}
  local want = {}
  for _, a in ipairs(attrs or {}) do
    if not by[lower(a)] then
      spec_error(compiled.file, nil, ("it gives no value for %s, which this workflow requires"):format(a),
        ("add an entry for %s%s"):format(a, compiled.file and ' (or start from the default: extends = "default")'
          or ""))
    end
    want[lower(a)] = true
  end
  for i, e in ipairs(compiled.entries) do
    if want[lower(e.path)] and not e.required then
      local c = {}
      for k, v in pairs(e) do c[k] = v end
      c.required = true
      entries[i] = c
    else
      entries[i] = e
    end
  end
  local out = setmetatable({ entries = entries, source = compiled.source, file = compiled.file,
    ignore = compiled.ignore }, COMPILED)
  compiled_cache[out] = out
  return out
end

-- The spec restricted to some attributes (a copy), for a workflow that reads only those (an
-- offboarding list needs the userName, not the rest of an HR export). Each must have an entry.
function M.select(spec, attrs)
  local compiled = M.compile(spec)
  local by = {}
  for _, e in ipairs(compiled.entries) do by[lower(e.path)] = e end
  local entries = {}
  for _, a in ipairs(attrs) do
    local e = by[lower(a)]
    if not e then
      spec_error(compiled.file, nil, ("it gives no value for %s, which this workflow requires"):format(a),
        ("add an entry for %s"):format(a))
    end
    entries[#entries + 1] = e
  end
  table.sort(entries, function(a, b) return a.path < b.path end)
  local out = setmetatable({ entries = entries, source = compiled.source, file = compiled.file,
    ignore = compiled.ignore }, COMPILED)
  compiled_cache[out] = out
  return out
end

-- ---- loading files -----------------------------------------------------------------------

local ALLOWED = { "pairs", "ipairs", "tostring", "tonumber", "type", "select", "unpack", "error" }

local function copy_lib(lib, skip)
  local t = {}
  for k, v in pairs(lib) do
    if not (skip and skip[k]) then t[k] = v end
  end
  return t
end

-- The environment of a Lua mapping file: the one policy files get (no io, no require, no global
-- writes; math, string, table, os.time/date/getenv and a few base functions).
local function make_env()
  local env = {
    math = copy_lib(math),
    string = copy_lib(string, { dump = true }),
    table = copy_lib(table),
    os = { time = os.time, date = os.date, getenv = os.getenv },
  }
  for _, name in ipairs(ALLOWED) do env[name] = _G[name] end
  return setmetatable(env, {
    __index = function(_, k)
      error(("'%s' is not available in a mapping file (allowed: math, string, table, os.time, os.date, "
        .. "os.getenv, %s)"):format(tostring(k), concat(ALLOWED, ", ")), 2)
    end,
    __newindex = function(_, k)
      error(("mapping files may not set globals (tried to set '%s'); use `local %s = ...`")
        :format(tostring(k), tostring(k)), 2)
    end,
  })
end

local function guard(fn, what, ...)
  return require("scimrun.policy").guard(fn, what, ...)
end

local function read_text(path)
  local f, err = io.open(path, "rb")
  if not f then
    local reason = err and err:match(": ([^:]+)$") or tostring(err)
    spec_error(path, nil, ("cannot read the mapping file: %s"):format(reason),
      "check the path given as --param mapping (a .lua or .json file)")
  end
  local text = f:read("*a")
  f:close()
  return text
end

local function line_col(text, pos)
  local line, last = 1, 0
  local i = find(text, "\n", 1, true)
  while i and i < pos do
    line, last = line + 1, i
    i = find(text, "\n", i + 1, true)
  end
  return line, pos - last
end

local function is_json(path, text)
  if path:match("%.[Jj][Ss][Oo][Nn]$") then return true end
  if path:match("%.lua$") then return false end
  return text:match("^%s*[{%[]") ~= nil
end

-- "FILE:12: message" -> "line 12: message" (the file is named once, at the start of the error).
local function at_line(msg, path)
  msg = errors.cite_file(msg, path)
  if sub(msg, 1, #path + 1) == path .. ":" then
    local l, rest = msg:match("^:(%d+): (.*)$", #path + 1)
    if l then return ("line %s: %s"):format(l, rest) end
  end
  return msg
end

-- Reads one mapping file into a raw table: { attributes, extends, ignore } (plain form folded in).
local function read_mapping_file(path)
  local text = read_text(path)
  local raw, json
  if is_json(path, text) then
    json = true
    local cjson = require("cjson").new()
    local ok, res = pcall(cjson.decode, text)
    if not ok then
      local msg = tostring(res)
      local at = tonumber(msg:match("at character (%d+)"))
      if at then
        local l, c = line_col(text, at)
        msg = ("%s (line %d, column %d)"):format(msg:gsub(" at character %d+", ""), l, c)
      end
      spec_error(path, nil, "not valid JSON: " .. msg)
    end
    raw = res
  else
    local chunk, err = loadstring(text, "@" .. path)
    if not chunk then spec_error(path, nil, "syntax error: " .. at_line(err, path)) end
    setfenv(chunk, make_env())
    if jit and jit.off then jit.off(chunk, true) end
    local ok, res = guard(chunk, "mapping file " .. path)
    if not ok then spec_error(path, nil, at_line(res, path)) end
    raw = res
  end
  if type(raw) ~= "table" then
    spec_error(path, nil, ("the file must %s a table, it %s %s"):format(json and "hold" or "return",
      json and "holds" or "returned", raw == NULL and "null" or type(raw)),
      json and 'write { "attributes": { ... } }' or "end the file with `return { attributes = { ... } }`")
  end
  local structured = raw.attributes ~= nil or raw.extends ~= nil or raw.ignore ~= nil
  local def = { json = json }
  if structured then
    for k in pairs(raw) do
      local ok = false
      for _, t in ipairs(TOP_KEYS) do if k == t then ok = true end end
      if not ok then
        spec_error(path, tostring(k), ("unknown key%s; a mapping file holds %s"):format(
          type(k) == "string" and did_you_mean(k, TOP_KEYS) or "", concat(TOP_KEYS, ", ")))
      end
    end
    if raw.attributes ~= nil and type(raw.attributes) ~= "table" then
      spec_error(path, "attributes", ("expected a table of attribute = source, got %s"):format(type(raw.attributes)))
    end
    def.attributes = raw.attributes or {}
    if raw.extends ~= nil and raw.extends ~= NULL and raw.extends ~= false then
      if type(raw.extends) ~= "string" or raw.extends == "" then
        spec_error(path, "extends", 'expected "default" or the path of another mapping file')
      end
      def.extends = raw.extends
    end
    def.ignore = {}
    if raw.ignore ~= nil and raw.ignore ~= NULL then
      if type(raw.ignore) ~= "table" then spec_error(path, "ignore", "expected a list of column names") end
      for i, c in ipairs(raw.ignore) do
        if type(c) ~= "string" then
          spec_error(path, ("ignore[%d]"):format(i), "expected a column name (a string)")
        end
        def.ignore[#def.ignore + 1] = c
      end
    end
  else
    for k, v in pairs(raw) do
      if type(k) == "string" and type(v) == "table" and next(v) ~= nil then
        local node_like = false
        for nk in pairs(v) do if IS_NODE_KEY[nk] then node_like = true end end
        local hint = did_you_mean(k, TOP_KEYS)
        if not node_like and hint ~= "" then
          spec_error(path, k, ("unknown key%s; a mapping file holds %s"):format(hint, concat(TOP_KEYS, ", ")))
        end
      end
    end
    def.attributes = raw
    def.ignore = {}
  end
  return def
end

local function dirname(path) return path:match("^(.*)/[^/]*$") or "." end

local DEFAULT_NAME = "the default mapping"

local function default_path()
  local p = package.searchpath("scimrun.mappings.default", package.path)
  if not p then error("mapping: lua/scimrun/mappings/default.lua is not on package.path", 0) end
  return p
end

-- Loads a file and what it extends into merged entries: by_path, ignore list, source name.
local function load_chain(path, seen, builtin)
  if seen[path] then spec_error(path, "extends", "extends itself (a cycle through " .. path .. ")") end
  seen[path] = true
  local def = read_mapping_file(path)
  local ctx = { src = path, guarded = not def.json, json = def.json, check_names = true,
    allow_false = def.extends ~= nil, builtin = builtin }
  local own = compile_entries(def.attributes, ctx)
  local by_path, ignore = {}, {}
  if def.extends then
    local parent
    if def.extends == "default" then
      parent = default_path()
    else
      parent = def.extends
      if sub(parent, 1, 1) ~= "/" then parent = dirname(path) .. "/" .. parent end
    end
    local pby, pignore = load_chain(parent, seen, def.extends == "default")
    by_path, ignore = pby, pignore
  end
  for k, e in pairs(own) do
    if e.drop and not by_path[k] then
      spec_error(path, ("attribute '%s'"):format(e.path), ("is set to %s but the mapping it extends (%s) has no such "
        .. "attribute"):format(e.drop, def.extends))
    end
    by_path[k] = e
  end
  for _, c in ipairs(def.ignore) do ignore[#ignore + 1] = c end
  return by_path, ignore
end

local default_cache

-- Loads a mapping file (Lua or JSON), or the default mapping for nil, "" or "default".
-- opts.require: attribute paths the caller needs (marked required; each must have an entry).
-- Returns a compiled spec; raises a "config" error (exit 2) naming the file and key.
function M.load(path, opts)
  opts = opts or {}
  local compiled
  if path == nil or path == "" or path == "default" then
    if not default_cache then
      local by_path, ignore = load_chain(default_path(), {}, true)
      default_cache = finish(by_path, { source = DEFAULT_NAME, ignore = ignore })
    end
    compiled = default_cache
  else
    if type(path) ~= "string" then error("mapping.load: path must be a string or nil", 2) end
    local by_path, ignore = load_chain(path, {}, false)
    compiled = finish(by_path, { source = path, file = path, ignore = ignore })
  end
  if opts.require and #opts.require > 0 then compiled = M.with_required(compiled, opts.require) end
  return compiled
end

-- ---- evaluating ------------------------------------------------------------------------

-- The input column a column node reads in this row: bound by a plan, else found in the row.
local function resolve(node, st)
  local bind = st.bind
  if bind then return bind[node] or nil end
  local row = st.row
  local idx = st.nidx
  for i, name in ipairs(node.names) do
    if row[name] ~= nil then return name end
    if not idx then
      idx = {}
      for k in pairs(row) do
        if type(k) == "string" then
          local n = norm(k)
          if n ~= "" and (idx[n] == nil or k < idx[n]) then idx[n] = k end
        end
      end
      st.nidx = idx
    end
    local hit = idx[node.norm[i]]
    if hit then return hit end
  end
  return nil
end

local function call(fn, guarded, what, ...)
  if guarded then return guard(fn, what, ...) end
  return pcall(fn, ...)
end

-- value, err, column (the column the value came from, when one did)
local function eval(node, st, e)
  local v, col
  if node.names then
    col = resolve(node, st)
    if col then
      v = st.row[col]
      if node.trim and type(v) == "string" then v = trim(v) end
    end
  elseif node.parts then
    local out, any = {}, false
    for _, part in ipairs(node.parts) do
      if part.lit then
        out[#out + 1] = part.lit
      else
        local pv, err = eval(part, st, e)
        if err then return nil, err end
        if not is_empty(pv) then
          any = true
          out[#out + 1] = tostring(pv)
        end
      end
    end
    if any then
      v = concat(out)
      if node.trim then v = trim(v) end
    end
  elseif node.const ~= nil then
    v = node.const
  elseif node.call then
    local ok, res, err = call(node.call, node.guarded, "the mapping function of " .. e.path, st.row)
    if not ok then return nil, ("attribute '%s': the mapping function failed: %s"):format(e.path, tostring(res)) end
    if res == nil and err ~= nil then return nil, ("attribute '%s': %s"):format(e.path, tostring(err)) end
    v = res
  end
  if is_empty(v) then
    if node.default_node then
      local err, dcol
      v, err, dcol = eval(node.default_node, st, e)
      if err then return nil, err end
      col = dcol or col
    elseif node.default ~= nil then
      v = node.default
    end
  end
  if type(v) == "string" then
    if node.lower then v = lower(v) elseif node.upper then v = upper(v) end
  end
  if node.map and not is_empty(v) then
    local k = tostring(v)
    local m = node.map[k]
    if m == nil then m = node.map_ci[lower(k)] end
    if m == nil then m = node.map_other end
    if m ~= nil then v = m end
  end
  if node.fn and (not is_empty(v) or node.fn_only) then
    local ok, res, err = call(node.fn, node.guarded, "the fn of " .. e.path, v, st.row)
    if not ok then return nil, ("attribute '%s': the mapping function failed: %s"):format(e.path, tostring(res)) end
    if res == nil and err ~= nil then return nil, ("attribute '%s': %s"):format(e.path, tostring(err)) end
    v = res
  end
  return v, nil, col
end

local function describe(e, col)
  return col and ("column '%s' (mapped to %s)"):format(col, e.path) or ("attribute '%s'"):format(e.path)
end

-- Why a required attribute has no value in this row, naming its column.
local function required_reason(e, st)
  local first = e.columns[1]
  if not first then return ("attribute '%s' is required and has no value"):format(e.path) end
  local col = resolve(first.node, st)
  if col then return ("required column '%s' is empty"):format(col) end
  return ("required column '%s' is missing"):format(first.node.names[1])
end

-- Builds the SCIM attributes for one row: attrs, or nil and a message naming the column.
-- spec: a spec table, a compiled spec (mapping.load) or a plan (mapping.plan).
function M.apply(spec, row)
  local compiled, bind
  if getmetatable(spec) == PLAN then
    compiled, bind = spec.spec, spec.bind
  else
    compiled = compiled_cache[spec] or M.compile(spec)
  end
  if type(row) ~= "table" then error("mapping.apply: row must be a table", 2) end
  local st = { row = row, bind = bind }
  local attrs, lists = {}, nil
  for _, e in ipairs(compiled.entries) do
    local v, err, col = eval(e.node, st, e)
    if err then return nil, err end
    if is_empty(v) then
      if e.required then return nil, required_reason(e, st) end
    else
      if e.boolean and (type(v) == "string" or type(v) == "number") then
        local s = lower(tostring(v))
        local b = TRUTHY[s]
        if b == nil then b = FALSY[s] end
        if b == nil then
          return nil, ("%s: %q is not a boolean (use true/false, yes/no or 1/0)"):format(describe(e, col), tostring(v))
        end
        v = b
      end
      if e.email then
        local ok, why = M.valid_email(v)
        if not ok then
          return nil, ("%s: %q is not a valid email address (%s)"):format(describe(e, col), tostring(v), why)
        end
      end
      local t = attrs
      for i = 1, e.nsteps - 1 do
        local stp = e.steps[i]
        local child = t[stp.name]
        if stp.attr then
          if child == nil then
            child = {}
            t[stp.name] = child
            lists = lists or {}
            lists[#lists + 1] = child
          end
          local entry
          for _, item in ipairs(child) do
            if item[stp.attr] == stp.value then
              entry = item
              break
            end
          end
          if not entry then
            entry = { [stp.attr] = stp.value }
            child[#child + 1] = entry
          end
          child = entry
        elseif child == nil then
          child = {}
          t[stp.name] = child
        end
        t = child
      end
      t[e.steps[e.nsteps].name] = v
    end
  end
  if lists then
    for _, list in ipairs(lists) do
      if #list == 1 and list[1].primary == nil then list[1].primary = true end
    end
  end
  return attrs
end

-- ---- planning against a header ------------------------------------------------------------

-- Source columns the spec reads (sorted, unique; every name of a list).
function M.columns(spec)
  local seen, out = {}, {}
  for _, e in ipairs(M.compile(spec).entries) do
    for _, c in ipairs(e.columns) do
      for _, name in ipairs(c.node.names) do
        if not seen[name] then
          seen[name] = true
          out[#out + 1] = name
        end
      end
    end
  end
  table.sort(out)
  return out
end

local function header_index(columns)
  local exact, normed = {}, {}
  for _, c in ipairs(columns) do
    exact[c] = true
    local n = norm(c)
    if n ~= "" and normed[n] == nil then normed[n] = c end
  end
  return exact, normed
end

-- The header column a node reads: for each of its names in order, that name, else a column
-- equal to it ignoring case, white space and punctuation. Also returns the other columns that
-- would have matched a later name (they are shadowed).
local function bind_node(node, exact, normed, columns)
  local found
  for i, name in ipairs(node.names) do
    if exact[name] then found = name
    elseif normed[node.norm[i]] then found = normed[node.norm[i]] end
    if found then break end
  end
  local shadowed = {}
  if found then
    for _, c in ipairs(columns) do
      if c ~= found then
        local n = norm(c)
        for _, nn in ipairs(node.norm) do
          if n == nn then
            shadowed[#shadowed + 1] = c
            break
          end
        end
      end
    end
  end
  return found, shadowed
end

local function how_computed(n)
  if n.call or n.fn then return "a function" end
  if n.const ~= nil then return ("constant %s"):format(tostring(n.const)) end
  if n.default ~= nil then return ("default %s"):format(tostring(n.default)) end
  if n.default_node then return how_computed(n.default_node) end
  return nil
end

-- Matches a spec against an input's header. Returns a plan (usable by mapping.apply) holding:
--   mapped           { { column, attributes = { "name.givenName", "displayName (fallback)" } } } header
--                    order; "(fallback)": read when the attribute's first source is empty
--   unmapped         { "column", ... } header columns nothing reads (ignored ones excepted)
--   why_unmapped     { column = "name.givenName comes from 'givenName'" } for shadowed columns
--   ignored          { "column", ... } columns the mapping (or opts.ignore) lists under ignore
--   computed         { { attribute, how = "constant x" | "default x" | "a function" } } set without a column
--   missing_required { { attribute, column, accepted = { names } } } required, no column in the header
--   missing          { { attribute, column, accepted } } a mapping file's optional attribute whose
--                    column the header lacks (the default mapping's are not listed: they are optional)
-- opts: file (the input, for messages), ignore (more columns to leave without a warning).
function M.plan(spec, columns, opts)
  opts = opts or {}
  local compiled = M.compile(spec)
  if type(columns) ~= "table" then error("mapping.plan: columns must be a list of column names", 2) end
  local exact, normed = header_index(columns)
  local ignore_norm, ignored = {}, {}
  for _, list in ipairs({ compiled.ignore, opts.ignore or {} }) do
    for _, c in ipairs(list) do ignore_norm[norm(c)] = true end
  end
  local bind, used, why = {}, {}, {}
  local plan = setmetatable({ spec = compiled, bind = bind, file = opts.file, columns = columns,
    source = compiled.source, mapped = {}, unmapped = {}, why_unmapped = why, ignored = ignored,
    computed = {}, missing_required = {}, missing = {} }, PLAN)
  for _, e in ipairs(compiled.entries) do
    local any_direct, any = false, false
    local accepted = {}
    for _, c in ipairs(e.columns) do
      local col, shadowed = bind_node(c.node, exact, normed, columns)
      bind[c.node] = col or false
      for _, name in ipairs(c.node.names) do accepted[#accepted + 1] = name end
      if col then
        any = true
        if not c.fallback then any_direct = true end
        local u = used[col] or { direct = {}, fallback = {} }
        used[col] = u
        local list = c.fallback and u.fallback or u.direct
        if list[#list] ~= e.path then list[#list + 1] = e.path end
        for _, s in ipairs(shadowed) do
          -- a column shadowed for a direct read is explained by that one
          if not why[s] or (not c.fallback and why[s].fallback) then
            why[s] = { text = ("%s comes from '%s'"):format(e.path, col), fallback = c.fallback }
          end
        end
      end
    end
    local first = e.columns[1] and e.columns[1].node.names[1]
    if #e.columns > 0 and not any then
      if e.required then
        plan.missing_required[#plan.missing_required + 1] = { attribute = e.path, column = first, accepted = accepted }
      elseif not e.builtin and not how_computed(e.node) then
        plan.missing[#plan.missing + 1] = { attribute = e.path, column = first, accepted = accepted }
      end
    end
    if not any_direct then
      local how = how_computed(e.node)
      if #e.columns == 0 or (not any and how) then
        plan.computed[#plan.computed + 1] = { attribute = e.path, how = how or "a function" }
      end
    end
  end
  for s, w in pairs(why) do why[s] = w.text end
  for _, c in ipairs(columns) do
    if used[c] then
      local attrs = {}
      for _, a in ipairs(used[c].direct) do attrs[#attrs + 1] = a end
      for _, a in ipairs(used[c].fallback) do
        if attrs[#attrs] ~= a then attrs[#attrs + 1] = a .. " (fallback)" end
      end
      plan.mapped[#plan.mapped + 1] = { column = c, attributes = attrs }
    elseif ignore_norm[norm(c)] then
      ignored[#ignored + 1] = c
    else
      plan.unmapped[#plan.unmapped + 1] = c
    end
  end
  return plan
end

local function quote_list(names)
  local out = {}
  for i, n in ipairs(names) do out[i] = "'" .. n .. "'" end
  return concat(out, ", ")
end

-- Stops the run (error of class "input", exit 2) when the header lacks a required column:
-- one line naming the input file, the column and what to do.
function M.assert_header(plan)
  local miss = plan.missing_required
  if #miss == 0 then return plan end
  local names, details = {}, {}
  for i, m in ipairs(miss) do
    names[i] = m.column
    local others = {}
    for _, a in ipairs(m.accepted) do if a ~= m.column then others[#others + 1] = a end end
    details[i] = ("%s for %s%s"):format(m.column, m.attribute,
      #others > 0 and (" (also accepted: " .. concat(others, ", ") .. ")") or "")
  end
  local what = #miss == 1 and ("required column %s is"):format(quote_list(names))
    or ("required columns %s are"):format(quote_list(names))
  local src = plan.spec.file or plan.source
  error(errors.new { class = "input", file = plan.file,
    detail = ("%s: %s not in the header (columns: %s); %s reads %s"):format(plan.file or "input", what,
      concat(plan.columns, ", "), src, concat(details, "; ")),
    suggest = "fix the input file (add the column), or name the column holding it in a mapping file given with "
      .. "--param mapping=FILE; then run the workflow again" }, 0)
end

-- The lines log_plan writes: { info = text, warn = { text, ... } }.
function M.describe_plan(plan)
  local parts = {}
  for _, m in ipairs(plan.mapped) do
    parts[#parts + 1] = ("%s -> %s"):format(m.column, concat(m.attributes, ", "))
  end
  for _, c in ipairs(plan.computed) do parts[#parts + 1] = ("%s = %s"):format(c.attribute, c.how) end
  local out = { info = ("input columns -> SCIM attributes (%s): %s"):format(plan.source,
    #parts > 0 and concat(parts, "; ") or "nothing"), warn = {} }
  if #plan.unmapped > 0 then
    local names = {}
    for i, c in ipairs(plan.unmapped) do
      names[i] = plan.why_unmapped[c] and ("%s (%s)"):format(c, plan.why_unmapped[c]) or c
    end
    out.warn[#out.warn + 1] = ("%d input column(s) mapped to nothing, their values are not sent: %s; map them in "
      .. "a mapping file (--param mapping=FILE) or list them under its ignore"):format(#names, concat(names, ", "))
  end
  if #plan.missing > 0 then
    local names = {}
    for i, m in ipairs(plan.missing) do names[i] = ("%s <- %s"):format(m.attribute, concat(m.accepted, " | ")) end
    out.warn[#out.warn + 1] = ("the mapping reads column(s) the input does not have, so these attributes stay "
      .. "unset: %s"):format(concat(names, ", "))
  end
  return out
end

-- Logs the plan: info, which column feeds which attribute; warn, columns mapped to nothing.
-- log: function(level, msg, fields) (wf.log, or scimrun.log.emit by default).
function M.log_plan(plan, log)
  log = log or function(level, msg, fields) scimrun.log.emit(level, msg, fields) end
  local d = M.describe_plan(plan)
  local fields = plan.file and { file = plan.file } or nil
  log("info", d.info, fields)
  for _, w in ipairs(d.warn) do log("warn", w, fields) end
  return plan
end

-- plan + assert_header + log_plan. opts: file, ignore, log.
function M.prepare(spec, columns, opts)
  opts = opts or {}
  local plan = M.plan(spec, columns, opts)
  M.assert_header(plan)
  return M.log_plan(plan, opts.log)
end

-- Checks every row of an input through a plan (or spec) without sending anything.
-- iter yields row, info as csv.rows / jsonl.rows do (row false for a bad record).
-- opts.unique: attributes no two rows may share (default { "userName", "externalId" });
-- userName is compared case-insensitively, as providers do. Returns
-- { rows = n, valid = n, bad = { { file, line, reason } } }, bad in input order.
function M.check_rows(spec, iter, opts)
  opts = opts or {}
  local unique = opts.unique or { "userName", "externalId" }
  local seen = {}
  for _, a in ipairs(unique) do seen[a] = {} end
  local result = { rows = 0, valid = 0, bad = {} }
  local n = 0
  for row, info in iter do
    n = n + 1
    info = info or { index = n }
    result.rows = result.rows + 1
    local reason
    local attrs
    if not row or info.error then
      reason = info.error or "unreadable record"
    else
      attrs, reason = M.apply(spec, row)
    end
    if attrs then
      for _, a in ipairs(unique) do
        local v = attrs[a]
        if not is_empty(v) then
          local k = a == "userName" and lower(tostring(v)) or tostring(v)
          local first = seen[a][k]
          if first then
            reason = ("duplicate %s '%s' (first on line %s)"):format(a, tostring(v), tostring(first))
            break
          end
          seen[a][k] = info.line or info.index or n
        end
      end
    end
    if reason then
      result.bad[#result.bad + 1] = { file = info.file, line = info.line or info.index or n, reason = reason }
    else
      result.valid = result.valid + 1
    end
  end
  return result
end

-- Checks that every column the spec names is in `columns` (e.g. csv.open(path).columns), so a
-- typo in a workflow fails at start, not as silently missing attributes. true or nil, err.
function M.check_columns(spec, columns)
  local compiled = M.compile(spec)
  local exact, normed = header_index(columns)
  for _, e in ipairs(compiled.entries) do
    for _, c in ipairs(e.columns) do
      if not bind_node(c.node, exact, normed, columns) then
        local names = c.node.names
        return nil, ("mapping for '%s' reads column '%s'%s, which the input does not have (columns: %s)")
          :format(e.path, names[1], #names > 1 and (" (or " .. concat(names, ", ", 2) .. ")") or "",
            concat(columns, ", "))
      end
    end
  end
  return true
end

return M
