-- SCIM PATCH (RFC 7644 section 3.5.2) applied to a plain resource table.
--   patch.apply(resource, body) -> new_resource | nil, err {status = 400, scimType, detail}
-- The resource is not modified: operations run on a copy, so a failing operation leaves
-- nothing half-applied. Schema-level checks (types, uniqueness, members) are the caller's.
local json = require "scimrun.sandbox.json"
local filter = require "scimrun.sandbox.filter"

local M = {}

M.PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"

local MULTI = { emails = true, phonenumbers = true, ims = true, photos = true, addresses = true,
  groups = true, entitlements = true, roles = true, x509certificates = true, members = true, schemas = true }
local READ_ONLY = { id = true, meta = true, groups = true }
local CANONICAL_URN = {
  ["urn:ietf:params:scim:schemas:extension:enterprise:2.0:user"] =
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
}

local PatchError = {}

local function fail(scim_type, fmt, ...)
  error(setmetatable({ status = 400, scimType = scim_type, detail = fmt:format(...) }, PatchError), 0)
end

local function is_null(v) return v == nil or v == json.null end
local function is_object(v) return type(v) == "table" and not json.is_array(v) end

-- Sets obj[name] reusing the key's existing spelling (names are case-insensitive).
local function put(obj, name, value)
  local _, key = filter.get(obj, name)
  if is_null(value) then
    if key then obj[key] = nil end
  else
    obj[key or name] = value
  end
end

local function as_list(v)
  if json.is_array(v) then return v end
  return json.array({ v })
end

local function same_value(a, b)
  if is_object(a) and is_object(b) then
    local av, bv = filter.get(a, "value"), filter.get(b, "value")
    if av ~= nil and bv ~= nil then return av == bv end
    return json.encode(a) == json.encode(b)
  end
  return a == b
end

local function merge(dst, src)
  for k, v in pairs(src) do put(dst, k, json.copy(v)) end
end

-- The object holding the path's attribute: the resource, or its extension object.
local function container(res, path, create)
  if not path.urn then return res end
  local ext = filter.get(res, path.urn)
  if ext == nil and create then
    local name = CANONICAL_URN[path.urn:lower()] or path.urn
    ext = {}
    res[name] = ext
    local schemas = filter.get(res, "schemas")
    if json.is_array(schemas) then
      local present = false
      for _, s in ipairs(schemas) do if type(s) == "string" and s:lower() == name:lower() then present = true end end
      if not present then schemas[#schemas + 1] = name end
    end
  end
  return ext
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

local function op_add(res, path, value)
  if is_null(value) then fail("invalidValue", "add needs a value") end
  local obj = container(res, path, true)
  local cur = filter.get(obj, path.attr)
  if path.filter then
    if not json.is_array(cur) then cur = json.array({}); put(obj, path.attr, cur) end
    local hit = false
    for _, el in ipairs(cur) do
      if is_object(el) and filter.matches(path.filter, el) then
        hit = true
        if path.sub then put(el, path.sub, json.copy(value))
        elseif is_object(value) then merge(el, value) end
      end
    end
    if not hit then
      local el = element_from_filter(path.filter)
      if not el then fail("noTarget", "no value of %s matches the path filter", path.attr) end
      if path.sub then put(el, path.sub, json.copy(value)) elseif is_object(value) then merge(el, value) end
      cur[#cur + 1] = el
    end
    return
  end
  if path.sub then
    if json.is_array(cur) then
      for _, el in ipairs(cur) do if is_object(el) then put(el, path.sub, json.copy(value)) end end
      return
    end
    if not is_object(cur) then cur = {}; put(obj, path.attr, cur) end
    put(cur, path.sub, json.copy(value))
    return
  end
  if json.is_array(cur) or (cur == nil and MULTI[path.attr:lower()]) then
    if cur == nil then cur = json.array({}); put(obj, path.attr, cur) end
    for _, v in ipairs(as_list(value)) do
      local dup = false
      for _, have in ipairs(cur) do if same_value(have, v) then dup = true break end end
      if not dup then cur[#cur + 1] = json.copy(v) end
    end
  elseif is_object(cur) and is_object(value) then
    merge(cur, value)
  else
    put(obj, path.attr, json.copy(value))
  end
end

local function op_replace(res, path, value)
  local obj = container(res, path, true)
  local cur = filter.get(obj, path.attr)
  if path.filter then
    local hit = false
    if json.is_array(cur) then
      for i, el in ipairs(cur) do
        if is_object(el) and filter.matches(path.filter, el) then
          hit = true
          if path.sub then put(el, path.sub, json.copy(value)) else cur[i] = json.copy(value) end
        end
      end
    end
    if not hit then fail("noTarget", "no value of %s matches the path filter", path.attr) end
    return
  end
  if path.sub then
    if json.is_array(cur) then
      for _, el in ipairs(cur) do if is_object(el) then put(el, path.sub, json.copy(value)) end end
      return
    end
    if not is_object(cur) then cur = {}; put(obj, path.attr, cur) end
    put(cur, path.sub, json.copy(value))
    return
  end
  if is_object(cur) and is_object(value) then
    merge(cur, value)
  elseif MULTI[path.attr:lower()] and not is_null(value) then
    put(obj, path.attr, json.copy(as_list(value)))
  else
    put(obj, path.attr, json.copy(value))
  end
end

local function op_remove(res, path, value)
  local obj = container(res, path, false)
  if obj == nil then return end
  local cur = filter.get(obj, path.attr)
  if cur == nil then return end
  if path.filter or (json.is_array(cur) and not is_null(value) and not path.sub) then
    if not json.is_array(cur) then return end
    local keep = json.array({})
    for _, el in ipairs(cur) do
      local hit
      if path.filter then
        hit = is_object(el) and filter.matches(path.filter, el)
      else
        hit = false
        for _, v in ipairs(as_list(value)) do if same_value(el, v) then hit = true break end end
      end
      if hit and path.sub then
        put(el, path.sub, nil)
        keep[#keep + 1] = el
      elseif not hit then
        keep[#keep + 1] = el
      end
    end
    put(obj, path.attr, #keep > 0 and keep or nil)
    return
  end
  if path.sub then
    for _, el in ipairs(json.is_array(cur) and cur or { cur }) do
      if is_object(el) then put(el, path.sub, nil) end
    end
    if is_object(cur) and next(cur) == nil then put(obj, path.attr, nil) end
    return
  end
  put(obj, path.attr, nil)
end

local OPS = { add = op_add, replace = op_replace, remove = op_remove }

local function run_op(res, i, op)
  if not is_object(op) then fail("invalidSyntax", "Operations[%d] is not an object", i) end
  local name = filter.get(op, "op")
  local fn = type(name) == "string" and OPS[name:lower()]
  if not fn then
    fail("invalidSyntax", "Operations[%d].op must be add, replace or remove, got %s", i, tostring(name))
  end
  local raw_path, value = filter.get(op, "path"), filter.get(op, "value")
  if is_null(raw_path) or raw_path == "" then
    if name:lower() == "remove" then fail("noTarget", "Operations[%d]: remove needs a path", i) end
    if not is_object(value) then
      fail("invalidValue", "Operations[%d]: %s without a path needs an object value", i, name)
    end
    for k, v in pairs(value) do
      local path = filter.parse_path(k)
      if not path then fail("invalidPath", "Operations[%d]: '%s' is not an attribute", i, k) end
      if not path.urn and READ_ONLY[path.attr:lower()] then
        if path.attr:lower() ~= "meta" and path.attr:lower() ~= "id" then
          fail("mutability", "Operations[%d]: %s is read-only", i, k)
        end
      elseif path.attr:lower() == "schemas" then
        put(res, "schemas", json.copy(v))
      else
        fn(res, path, v)
      end
    end
    return
  end
  if type(raw_path) ~= "string" then fail("invalidPath", "Operations[%d].path must be a string", i) end
  local path, err = filter.parse_path(raw_path)
  if not path then fail("invalidPath", "Operations[%d].path: %s", i, err) end
  if not path.urn and READ_ONLY[path.attr:lower()] then
    fail("mutability", "Operations[%d]: %s is read-only", i, raw_path)
  end
  fn(res, path, value)
end

function M.apply(resource, body)
  if not is_object(body) then
    return nil, { status = 400, scimType = "invalidSyntax", detail = "the PATCH body must be a JSON object" }
  end
  local schemas = filter.get(body, "schemas")
  local ok_schema = false
  if json.is_array(schemas) then
    for _, s in ipairs(schemas) do if s == M.PATCH_SCHEMA then ok_schema = true end end
  end
  if not ok_schema then
    return nil, { status = 400, scimType = "invalidSyntax", detail = "schemas must contain " .. M.PATCH_SCHEMA }
  end
  local ops = filter.get(body, "Operations")
  if not json.is_array(ops) then
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

return M
