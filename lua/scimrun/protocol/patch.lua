-- SCIM PATCH (RFC 7644 section 3.5.2) applied to a resource: the sandbox answers a PatchOp with
-- it, the client computes with it what a provider without PATCH gets as a PUT, and the resource a
-- provider answering 204 now holds.
-- Contract:
--   SCHEMA                                   the PatchOp message's URN
--   apply(resource, body) -> new | nil, err  body: a PatchOp message (schemas lists SCHEMA,
--       Operations is an array)
--   apply_ops(resource, ops) -> new | nil, err   the Operations alone
--       err: { status = 400, scimType, detail }, detail naming the operation
--       ("Operations[2].path: ..."): invalidSyntax (the body, an op other than add, replace,
--       remove), invalidPath, invalidValue (add without a value, a path-less add or replace
--       whose value is not an object), noTarget (remove without a path, a filter matching
--       nothing where something must match), mutability (id, meta, groups)
--   get(resource, path_text) -> value | nil  what a PATCH path designates in a resource (with a
--       filter: the first matching value, or its sub-attribute)
-- The resource is not modified: the operations run on a copy, so a failing one leaves nothing
-- half-applied. Op names ignore case (Azure AD sends "Replace"); a path-less operation's keys
-- are paths; add to a multi-valued attribute skips values already there (same `value`, else
-- equal); replace of a complex attribute merges its sub-attributes; remove with a value and no
-- filter removes those values (the Azure AD form). Arrays are those of scimrun.sandbox.json
-- (marked, or non-empty sequences), which plain decoded tables also are. Schema checks (types,
-- uniqueness, members) are the caller's.
local json = require "scimrun.sandbox.json"
local path = require "scimrun.protocol.path"
local filter = require "scimrun.protocol.filter"

local M = {}

M.SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"

local get, lower = path.get, string.lower

local MULTI = { emails = true, phonenumbers = true, ims = true, photos = true, addresses = true,
  groups = true, entitlements = true, roles = true, x509certificates = true, members = true, schemas = true }
local READ_ONLY = { id = true, meta = true, groups = true }
local CANONICAL_URN = { [lower(path.ENTERPRISE)] = path.ENTERPRISE }

local PatchError = {}

local function fail(scim_type, fmt, ...)
  error(setmetatable({ status = 400, scimType = scim_type, detail = fmt:format(...) }, PatchError), 0)
end

local function is_null(v) return v == nil or v == json.null end
local function is_object(v) return type(v) == "table" and not json.is_array(v) end
local function is_empty(v) return type(v) == "table" and next(v) == nil end

-- Sets obj[name] reusing the key's existing spelling (names are case-insensitive).
local function put(obj, name, value)
  local _, key = get(obj, name)
  if is_null(value) then
    if key then obj[key] = nil end
  else
    obj[key or name] = value
  end
end

-- A value as a list of values; an empty table is an empty list (a decoder may not tell [] from {}).
local function as_list(v)
  if json.is_array(v) then return v end
  if is_empty(v) then return json.array({}) end
  return json.array({ v })
end

local function equal(a, b)
  if type(a) ~= "table" or type(b) ~= "table" then return a == b end
  if json.is_array(a) ~= json.is_array(b) then return false end
  for k, v in pairs(a) do
    if not equal(v, b[k]) then return false end
  end
  for k in pairs(b) do
    if a[k] == nil then return false end
  end
  return true
end

local function same_value(a, b)
  if is_object(a) and is_object(b) then
    local av, bv = get(a, "value"), get(b, "value")
    if av ~= nil and bv ~= nil then return av == bv end
  end
  return equal(a, b)
end

local function merge(dst, src)
  for k, v in pairs(src) do put(dst, k, json.copy(v)) end
end

-- The object holding the path's attribute: the resource, or its extension object (created and
-- listed in schemas when `create`).
local function container(res, p, create)
  if not p.urn then return res end
  local ext = get(res, p.urn)
  if ext == nil and create then
    local name = CANONICAL_URN[lower(p.urn)] or p.urn
    ext = {}
    res[name] = ext
    local schemas = get(res, "schemas")
    if json.is_array(schemas) then
      local present = false
      for _, s in ipairs(schemas) do if type(s) == "string" and lower(s) == lower(name) then present = true end end
      if not present then schemas[#schemas + 1] = name end
    end
  end
  return ext
end

-- Whether the attribute holds a list: an array, or nothing or {} for a multi-valued attribute.
local function list_like(cur, attr)
  return json.is_array(cur) or ((cur == nil or is_empty(cur)) and MULTI[lower(attr)] ~= nil)
end

-- Builds a new element from an `a eq "x" and b eq "y"` filter, for add on an unmatched path.
local function element_from_filter(f, out)
  out = out or {}
  if f.type == "cmp" and f.op == "eq" and not f.path.sub and not f.path.urn then
    out[f.path.attr] = f.value
    return out
  end
  if f.type == "and" then
    if element_from_filter(f[1], out) and element_from_filter(f[2], out) then return out end
  end
  return nil
end

local function hits(el, p) return is_object(el) and filter.matches(p.filter, el, p.attr) end

-- Sets the sub-attribute of a complex attribute, or of each element of a multi-valued one.
local function put_sub(obj, p, cur, value)
  if json.is_array(cur) then
    for _, el in ipairs(cur) do if is_object(el) then put(el, p.sub, json.copy(value)) end end
    return
  end
  if not is_object(cur) then cur = {}; put(obj, p.attr, cur) end
  put(cur, p.sub, json.copy(value))
end

local function op_add(res, p, value)
  if is_null(value) then fail("invalidValue", "add needs a value") end
  local obj = container(res, p, true)
  local cur = get(obj, p.attr)
  if p.filter then
    if not json.is_array(cur) then cur = json.array({}); put(obj, p.attr, cur) end
    local hit = false
    for _, el in ipairs(cur) do
      if hits(el, p) then
        hit = true
        if p.sub then put(el, p.sub, json.copy(value))
        elseif is_object(value) then merge(el, value) end
      end
    end
    if not hit then
      local el = element_from_filter(p.filter)
      if not el then fail("noTarget", "no value of %s matches the path filter", p.attr) end
      if p.sub then put(el, p.sub, json.copy(value)) elseif is_object(value) then merge(el, value) end
      cur[#cur + 1] = el
    end
    return
  end
  if p.sub then return put_sub(obj, p, cur, value) end
  if list_like(cur, p.attr) then
    if not json.is_array(cur) then cur = json.array({}); put(obj, p.attr, cur) end
    for _, v in ipairs(as_list(value)) do
      local dup = false
      for _, have in ipairs(cur) do if same_value(have, v) then dup = true break end end
      if not dup then cur[#cur + 1] = json.copy(v) end
    end
  elseif is_object(cur) and is_object(value) then
    merge(cur, value)
  else
    put(obj, p.attr, json.copy(value))
  end
end

local function op_replace(res, p, value)
  local obj = container(res, p, true)
  local cur = get(obj, p.attr)
  if p.filter then
    local hit = false
    if json.is_array(cur) then
      for i, el in ipairs(cur) do
        if hits(el, p) then
          hit = true
          if p.sub then put(el, p.sub, json.copy(value)) else cur[i] = json.copy(value) end
        end
      end
    end
    if not hit then fail("noTarget", "no value of %s matches the path filter", p.attr) end
    return
  end
  if p.sub then return put_sub(obj, p, cur, value) end
  if is_object(cur) and not is_empty(cur) and is_object(value) then
    merge(cur, value)
  elseif MULTI[lower(p.attr)] and not is_null(value) then
    put(obj, p.attr, json.copy(as_list(value)))
  else
    put(obj, p.attr, json.copy(value))
  end
end

local function op_remove(res, p, value)
  local obj = container(res, p, false)
  if obj == nil then return end
  local cur = get(obj, p.attr)
  if cur == nil then return end
  if p.filter or (json.is_array(cur) and not is_null(value) and not p.sub) then
    if not json.is_array(cur) then return end
    local keep = json.array({})
    for _, el in ipairs(cur) do
      local hit
      if p.filter then
        hit = hits(el, p)
      else
        hit = false
        for _, v in ipairs(as_list(value)) do if same_value(el, v) then hit = true break end end
      end
      if hit and p.sub then
        put(el, p.sub, nil)
        keep[#keep + 1] = el
      elseif not hit then
        keep[#keep + 1] = el
      end
    end
    put(obj, p.attr, #keep > 0 and keep or nil)
    return
  end
  if p.sub then
    for _, el in ipairs(json.is_array(cur) and cur or { cur }) do
      if is_object(el) then put(el, p.sub, nil) end
    end
    if is_object(cur) and next(cur) == nil then put(obj, p.attr, nil) end
    return
  end
  put(obj, p.attr, nil)
end

local OPS = { add = op_add, replace = op_replace, remove = op_remove }

local function run_op(res, i, op)
  if not is_object(op) then fail("invalidSyntax", "Operations[%d] is not an object", i) end
  local name = get(op, "op")
  local fn = type(name) == "string" and OPS[lower(name)]
  if not fn then
    fail("invalidSyntax", "Operations[%d].op must be add, replace or remove, got %s", i, tostring(name))
  end
  local raw_path, value = get(op, "path"), get(op, "value")
  if is_null(raw_path) or raw_path == "" then
    if lower(name) == "remove" then fail("noTarget", "Operations[%d]: remove needs a path", i) end
    if not is_object(value) then
      fail("invalidValue", "Operations[%d]: %s without a path needs an object value", i, name)
    end
    for k, v in pairs(value) do
      local p = path.parse(k)
      if not p then fail("invalidPath", "Operations[%d]: '%s' is not an attribute", i, k) end
      local attr = lower(p.attr)
      if not p.urn and READ_ONLY[attr] then
        if attr ~= "meta" and attr ~= "id" then
          fail("mutability", "Operations[%d]: %s is read-only", i, k)
        end
      elseif attr == "schemas" then
        put(res, "schemas", json.copy(v))
      else
        fn(res, p, v)
      end
    end
    return
  end
  if type(raw_path) ~= "string" then fail("invalidPath", "Operations[%d].path must be a string", i) end
  local p, err = path.parse(raw_path)
  if not p then fail("invalidPath", "Operations[%d].path: %s", i, err) end
  if not p.urn and READ_ONLY[lower(p.attr)] then
    fail("mutability", "Operations[%d]: %s is read-only", i, raw_path)
  end
  fn(res, p, value)
end

function M.apply_ops(resource, ops)
  if type(ops) ~= "table" then
    return nil, { status = 400, scimType = "invalidSyntax", detail = "Operations must be a non-empty array" }
  end
  local res = json.copy(resource)
  local ok, err = pcall(function()
    for i, op in ipairs(ops) do run_op(res, i, op) end
  end)
  if not ok then
    if getmetatable(err) == PatchError then return nil, setmetatable(err, nil) end
    error(err, 0)
  end
  return res
end

function M.apply(resource, body)
  if not is_object(body) then
    return nil, { status = 400, scimType = "invalidSyntax", detail = "the PATCH body must be a JSON object" }
  end
  local schemas = get(body, "schemas")
  local ok_schema = false
  if json.is_array(schemas) then
    for _, s in ipairs(schemas) do if s == M.SCHEMA then ok_schema = true end end
  end
  if not ok_schema then
    return nil, { status = 400, scimType = "invalidSyntax", detail = "schemas must contain " .. M.SCHEMA }
  end
  local ops = get(body, "Operations")
  if not json.is_array(ops) then
    return nil, { status = 400, scimType = "invalidSyntax", detail = "Operations must be a non-empty array" }
  end
  return M.apply_ops(resource, ops)
end

function M.get(resource, text)
  local p = type(text) == "string" and path.parse(text)
  if not p then return nil end
  local v = get(container(resource, p, false), p.attr)
  if p.filter then
    if not json.is_array(v) then return nil end
    for _, el in ipairs(v) do
      if hits(el, p) then
        if p.sub then return (get(el, p.sub)) end
        return el
      end
    end
    return nil
  end
  if p.sub then return (get(v, p.sub)) end
  return v
end

return M
