-- Attribute mapping: turns an input row (CSV/JSONL) into SCIM attributes, as a workflow declares.
--
--   local mapping = require "scimrun.mapping"
--   local spec = {
--     userName = "email",                                  -- a string names a source column
--     ["name.givenName"] = "first_name",                   -- dotted paths build nested tables
--     ['emails[type eq "work"].value'] = "email",          -- -> emails = {{type="work", value=..., primary=true}}
--     active = function(row) return row.status ~= "terminated" end,  -- a function computes
--     ["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"] = "department",
--   }
--   local attrs, err = mapping.apply(spec, row)   -- nil, "column 'email' ..." on a bad value
--
-- Rules: column values are trimmed; an empty or absent value (nil, "", JSON null) sets nothing,
-- so an empty email creates no emails entry. A function may return nil, "reason" to fail the row.
-- `active` and `primary` accept true/false/yes/no/1/0 strings. A column mapped to an
-- emails[...].value must hold a valid address. A multi-valued entry built from a filter path
-- gets primary=true when it is the only entry of its attribute and none sets primary itself.
-- Spec mistakes (unparsable path, a path both a value and a parent, a source that is neither a
-- column name nor a function) raise at first use, naming the key.
local M = {}

local NULL
do
  local ok, cjson = pcall(require, "cjson")
  NULL = ok and cjson.null or {}
end

local find, sub, lower = string.find, string.sub, string.lower

local function trim(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end

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

local compiled_cache = setmetatable({}, { __mode = "k" })

-- Validates a spec and returns its compiled form (cached per spec table).
function M.compile(spec)
  if type(spec) ~= "table" then error("mapping: spec must be a table of attribute = column|function", 2) end
  local cached = compiled_cache[spec]
  if cached then return cached end
  local keys = {}
  for k in pairs(spec) do
    if type(k) ~= "string" then error(("mapping: attribute paths must be strings, got %s"):format(type(k)), 0) end
    keys[#keys + 1] = k
  end
  table.sort(keys)
  local entries, shapes = {}, {}
  for _, path in ipairs(keys) do
    local source = spec[path]
    if type(source) ~= "string" and type(source) ~= "function" then
      error(("mapping: attribute '%s' maps to a %s; use a column name (string) or a function(row)")
        :format(path, type(source)), 0)
    end
    local steps, why = parse_path(path)
    if not steps then error(("mapping: cannot read attribute path '%s': %s"):format(path, why), 0) end
    -- A path must not be both a value and the parent of another path.
    local shape = ""
    local function claim(kind)
      local prev = shapes[shape]
      if prev and (prev.kind ~= kind or kind == "leaf") then
        error(("mapping: attribute '%s' conflicts with '%s'"):format(path, prev.path), 0)
      end
      shapes[shape] = prev or { kind = kind, path = path }
    end
    for i, st in ipairs(steps) do
      shape = shape .. "/" .. st.name
      claim(i == #steps and "leaf" or "parent")
      if st.attr then
        shape = shape .. "[" .. st.attr .. "=" .. st.value .. "]"
        claim("parent")
      end
    end
    local last = steps[#steps].name
    entries[#entries + 1] = {
      path = path, steps = steps, nsteps = #steps,
      column = type(source) == "string" and source or nil,
      fn = type(source) == "function" and source or nil,
      email = lower(steps[1].name) == "emails" and #steps == 2 and last == "value",
      boolean = BOOLEAN_ATTRS[last] or false,
    }
  end
  local compiled = { entries = entries }
  compiled_cache[spec] = compiled
  compiled_cache[compiled] = compiled
  return compiled
end

-- Source columns the spec reads (sorted, unique).
function M.columns(spec)
  local seen, out = {}, {}
  for _, e in ipairs(M.compile(spec).entries) do
    if e.column and not seen[e.column] then
      seen[e.column] = true
      out[#out + 1] = e.column
    end
  end
  table.sort(out)
  return out
end

-- Checks that every column the spec names is in `columns` (e.g. csv.open(path).columns), so a
-- typo in a workflow fails at start, not as silently missing attributes. true or nil, err.
function M.check_columns(spec, columns)
  local have = {}
  for _, c in ipairs(columns) do have[c] = true end
  for _, e in ipairs(M.compile(spec).entries) do
    if e.column and not have[e.column] then
      return nil, ("mapping for '%s' reads column '%s', which the input does not have (columns: %s)")
        :format(e.path, e.column, table.concat(columns, ", "))
    end
  end
  return true
end

local function describe(e)
  return e.column and ("column '%s' (mapped to %s)"):format(e.column, e.path) or ("attribute '%s'"):format(e.path)
end

-- Builds the SCIM attributes for one row: attrs, or nil and a message naming the column.
function M.apply(spec, row)
  local compiled = compiled_cache[spec] or M.compile(spec)
  if type(row) ~= "table" then error("mapping.apply: row must be a table", 2) end
  local attrs, lists = {}, nil
  for _, e in ipairs(compiled.entries) do
    local v
    if e.column then
      v = row[e.column]
      if type(v) == "string" then v = trim(v) end
    else
      local ok, res, err = pcall(e.fn, row)
      if not ok then return nil, ("attribute '%s': the mapping function failed: %s"):format(e.path, tostring(res)) end
      if res == nil and err ~= nil then return nil, ("attribute '%s': %s"):format(e.path, tostring(err)) end
      v = res
    end
    if v ~= nil and v ~= "" and v ~= NULL then
      if e.boolean and type(v) == "string" then
        local b = TRUTHY[lower(v)]
        if b == nil then b = FALSY[lower(v)] end
        if b == nil then
          return nil, ("%s: %q is not a boolean (use true/false, yes/no or 1/0)"):format(describe(e), v)
        end
        v = b
      end
      if e.email then
        local ok, why = M.valid_email(v)
        if not ok then
          return nil, ("%s: %q is not a valid email address (%s)"):format(describe(e), tostring(v), why)
        end
      end
      local t = attrs
      for i = 1, e.nsteps - 1 do
        local st = e.steps[i]
        local child = t[st.name]
        if st.attr then
          if child == nil then
            child = {}
            t[st.name] = child
            lists = lists or {}
            lists[#lists + 1] = child
          end
          local entry
          for _, item in ipairs(child) do
            if item[st.attr] == st.value then
              entry = item
              break
            end
          end
          if not entry then
            entry = { [st.attr] = st.value }
            child[#child + 1] = entry
          end
          child = entry
        elseif child == nil then
          child = {}
          t[st.name] = child
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

return M
