-- Resource comparison and a local PatchOp applier (RFC 7644 §3.5.2), used to:
--   * decide whether an existing resource already is in the desired state (ensure -> skipped),
--   * build the PATCH operations for the attributes that differ (ensure -> updated),
--   * apply PATCH operations to a fresh read for servers without PATCH (read-modify-PUT).
local cjson = require "cjson"
local filter = require "scimrun.scim.filter"

local M = {}

local NULL = cjson.null

-- Attributes the client never compares or sends back: server-managed or write-only.
M.SERVER_MANAGED = { id = true, meta = true, schemas = true, password = true }

local function lower_if(s, ci) if ci and type(s) == "string" then return s:lower() end return s end

local function is_array(t)
  if type(t) ~= "table" then return false end
  local n = #t
  if n == 0 then return next(t) == nil end
  for k in pairs(t) do
    if type(k) ~= "number" or k < 1 or k > n or k % 1 ~= 0 then return false end
  end
  return true
end
M.is_array = is_array

-- Case-insensitive key lookup (SCIM attribute names are case-insensitive).
local function get_ci(t, key)
  if type(t) ~= "table" then return nil, nil end
  if t[key] ~= nil then return t[key], key end
  local lk = key:lower()
  for k, v in pairs(t) do
    if type(k) == "string" and k:lower() == lk then return v, k end
  end
  return nil, nil
end
M.get_ci = get_ci

-- True when `have` already holds everything in `want`: objects by key (extra keys in `have`
-- are fine: servers add display, $ref, ...), arrays as sets of contained elements.
-- `ci` compares strings case-insensitively (userName, emails.value).
function M.contains(have, want, ci)
  if want == nil or want == NULL then return have == nil or have == NULL end
  if type(want) ~= "table" then
    if type(have) == "table" then return false end
    return lower_if(have, ci) == lower_if(want, ci)
  end
  if type(have) ~= "table" then return false end
  if is_array(want) then
    if not is_array(have) or #have ~= #want then return false end
    for _, w in ipairs(want) do
      local found = false
      for _, h in ipairs(have) do
        if M.contains(h, w, ci) then found = true break end
      end
      if not found then return false end
    end
    return true
  end
  for k, w in pairs(want) do
    local h = get_ci(have, k)
    if not M.contains(h, w, ci) then return false end
  end
  return true
end

local function is_object(v) return type(v) == "table" and not is_array(v) end

-- PATCH operations turning `have` into `want` for the top-level attributes `want` names, each
-- with a path and only for what differs: an attribute, or the sub-attribute of a complex
-- attribute or extension the resource already holds (`name.givenName`,
-- `urn:...:enterprise:2.0:User:department`), so an update sends only the changed values.
-- A multi-valued attribute (emails) is replaced whole. JSON null in `want` removes.
-- `opts.case_insensitive` = set of attribute names compared case-insensitively;
-- `opts.ignore` = set of attribute names left alone (e.g. members on a group read without them).
function M.diff(have, want, opts)
  opts = opts or {}
  local ci, ignore = opts.case_insensitive or {}, opts.ignore or {}
  local ops, keys = {}, {}
  for k in pairs(want) do
    if type(k) == "string" and not M.SERVER_MANAGED[k] and not ignore[k] then keys[#keys + 1] = k end
  end
  table.sort(keys)
  local function put(path, w)
    if w == NULL then
      ops[#ops + 1] = { op = "remove", path = path }
    else
      ops[#ops + 1] = { op = "replace", path = path, value = w }
    end
  end
  for _, k in ipairs(keys) do
    local w = want[k]
    local h = get_ci(have, k)
    if not M.contains(h, w, ci[k]) then
      if is_object(w) and next(w) ~= nil and is_object(h) then
        local subs = {}
        for sk in pairs(w) do
          if type(sk) == "string" then subs[#subs + 1] = sk end
        end
        table.sort(subs)
        local sep = k:sub(1, 4):lower() == "urn:" and ":" or "."
        for _, sk in ipairs(subs) do
          local sw = w[sk]
          if not M.contains(get_ci(h, sk), sw) then put(k .. sep .. sk, sw) end
        end
      else
        put(k, w)
      end
    end
  end
  return ops
end

local function deep_copy(v)
  if type(v) ~= "table" then return v end
  local out = {}
  for k, x in pairs(v) do out[k] = deep_copy(x) end
  return out
end
M.copy = deep_copy

-- Parses the paths this client produces: `attr`, `attr.sub`, `urn:...:attr`, `attr[sub eq "v"]`.
local function parse_path(path)
  local attr, fattr, fval = path:match('^([^%[]+)%[%s*([%w_%-%.]+)%s+[eE][qQ]%s+(.-)%s*%]$')
  if attr then
    local ok, v = pcall(cjson.decode, fval)
    if not ok then return nil end
    return { attr = attr, filter_attr = fattr, filter_value = v }
  end
  if path:find("^urn:") then
    local urn, a = path:match("^(urn:.+):([^:]+)$")
    if not urn then return nil end
    return { urn = urn, attr = a }
  end
  local a, sub = path:match("^([^%.]+)%.([^%.]+)$")
  if a then return { attr = a, sub = sub } end
  if filter.valid_attr(path) then return { attr = path } end
  return nil
end

-- The value at a path this client produces (see parse_path) in `resource`, or nil.
function M.get_path(resource, path)
  if type(path) ~= "string" then return nil end
  local p = parse_path(path)
  if not p then return nil end
  local container = resource
  if p.urn then container = get_ci(resource, p.urn) end
  local v = get_ci(container, p.attr)
  if p.sub then return (get_ci(v, p.sub)) end
  if p.filter_attr then
    if not is_array(v) then return nil end
    for _, e in ipairs(v) do
      if get_ci(e, p.filter_attr) == p.filter_value then return e end
    end
    return nil
  end
  return v
end

local function merge_value(target, key, value, op)
  local cur, k = get_ci(target, key)
  k = k or key
  if op == "add" and is_array(cur) and type(value) == "table" then
    local list = is_array(value) and value or { value }
    for _, v in ipairs(list) do
      local dup = false
      for _, c in ipairs(cur) do
        if M.contains(c, v) then dup = true break end
      end
      if not dup then cur[#cur + 1] = deep_copy(v) end
    end
  elseif op == "add" and type(cur) == "table" and not is_array(cur) and type(value) == "table"
    and not is_array(value) then
    for vk, vv in pairs(value) do cur[vk] = deep_copy(vv) end
  else
    target[k] = deep_copy(value)
  end
end

-- Applies PatchOp operations to a copy of `resource`; returns the new resource or nil, reason.
function M.apply(resource, ops)
  local r = deep_copy(resource)
  for i, o in ipairs(ops) do
    local op = type(o.op) == "string" and o.op:lower() or nil
    if op ~= "add" and op ~= "replace" and op ~= "remove" then
      return nil, ("operation %d: unknown op %s"):format(i, tostring(o.op))
    end
    if o.path == nil then
      if op == "remove" or type(o.value) ~= "table" then
        return nil, ("operation %d: %s without a path needs an object value"):format(i, op)
      end
      for k, v in pairs(o.value) do merge_value(r, k, v, op) end
    else
      local p = parse_path(o.path)
      if not p then return nil, ("operation %d: unsupported path %s"):format(i, tostring(o.path)) end
      local container = r
      if p.urn then
        local ext, ek = get_ci(r, p.urn)
        if ext == nil then ext = {}; r[p.urn] = ext; ek = p.urn end
        container = r[ek]
      end
      if p.filter_attr then
        local list = get_ci(container, p.attr)
        if op ~= "remove" then
          return nil, ("operation %d: only remove is supported with a filtered path"):format(i)
        end
        if is_array(list) then
          for j = #list, 1, -1 do
            local v = get_ci(list[j], p.filter_attr)
            if v == p.filter_value then table.remove(list, j) end
          end
        end
      elseif p.sub then
        local parent, pk = get_ci(container, p.attr)
        if op == "remove" then
          if type(parent) == "table" then
            local _, sk = get_ci(parent, p.sub)
            if sk then parent[sk] = nil end
          end
        else
          if type(parent) ~= "table" then parent = {}; container[pk or p.attr] = parent end
          merge_value(parent, p.sub, o.value, op)
        end
      elseif op == "remove" then
        local _, k = get_ci(container, p.attr)
        if k then container[k] = nil end
      else
        merge_value(container, p.attr, o.value, op)
      end
    end
  end
  return r
end

-- The body of a PUT built from a read: server-managed attributes removed.
function M.for_put(resource)
  local body = deep_copy(resource)
  body.meta = nil
  body.password = nil
  return body
end

return M
