-- SCIM User and Group resources: input validation, output rendering, attribute projection.
--   resources.validate(kind, body, store, self_id) -> clean resource (no id/meta) | nil, err
--   resources.render(kind, res, store, base) -> the representation a client sees
--   resources.project(out, attributes, excluded) -> out with only/without those attributes
-- err is { status, scimType, detail } (the caller turns it into a SCIM Error response).
local json = require "scimrun.sandbox.json"
local path = require "scimrun.protocol.path"
local discovery = require "scimrun.sandbox.discovery"

local M = {}

local CANON = {}
for _, n in ipairs({ "schemas", "id", "externalId", "meta", "userName", "name", "displayName", "nickName",
  "profileUrl", "title", "userType", "preferredLanguage", "locale", "timezone", "active", "password",
  "emails", "phoneNumbers", "ims", "photos", "addresses", "groups", "entitlements", "roles",
  "x509Certificates", "members" }) do
  CANON[n:lower()] = n
end
CANON[discovery.ENTERPRISE:lower()] = discovery.ENTERPRISE

local MULTI = { "emails", "phoneNumbers", "ims", "photos", "addresses", "entitlements", "roles", "x509Certificates" }
local STRINGS = { "externalId", "displayName", "nickName", "profileUrl", "title", "userType", "preferredLanguage",
  "locale", "timezone", "password" }

local function invalid(fmt, ...)
  return nil, { status = 400, scimType = "invalidValue", detail = fmt:format(...) }
end

local function is_object(v) return type(v) == "table" and not json.is_array(v) end

-- Copies body with canonical attribute names, JSON nulls dropped, read-only attributes ignored.
local function canonical(body)
  local out = {}
  for k, v in pairs(body) do
    local name = type(k) == "string" and (CANON[k:lower()] or k) or k
    if v ~= json.null and name ~= "id" and name ~= "meta" and name ~= "groups" then out[name] = json.copy(v) end
  end
  return out
end

local function has_schema(res, urn)
  if not json.is_array(res.schemas) then return false end
  for _, s in ipairs(res.schemas) do
    if type(s) == "string" and s:lower() == urn:lower() then return true end
  end
  return false
end

local function check_schemas(res, urn)
  if res.schemas == nil then
    return nil, { status = 400, scimType = "invalidSyntax", detail = "schemas is required and must contain " .. urn }
  end
  if not json.is_array(res.schemas) or not has_schema(res, urn) then
    return invalid("schemas must be an array containing %s", urn)
  end
  return true
end

local function validate_user(res, store, self_id)
  local ok, err = check_schemas(res, discovery.USER)
  if not ok then return nil, err end
  if type(res.userName) ~= "string" or res.userName:match("^%s*$") then
    return invalid("userName is required and must be a non-empty string")
  end
  if res.active ~= nil and type(res.active) ~= "boolean" then
    return invalid("active must be a JSON boolean (true or false), got %s %s", type(res.active),
      json.encode(res.active))
  end
  if res.name ~= nil and not is_object(res.name) then return invalid("name must be an object") end
  for _, a in ipairs(STRINGS) do
    if res[a] ~= nil and type(res[a]) ~= "string" then return invalid("%s must be a string", a) end
  end
  for _, a in ipairs(MULTI) do
    local v = res[a]
    if v ~= nil then
      if is_object(v) then v = json.array({ v }); res[a] = v end
      if not json.is_array(v) then return invalid("%s must be an array of objects", a) end
      for i, el in ipairs(v) do
        if not is_object(el) then return invalid("%s[%d] must be an object", a, i) end
        local pv = path.get(el, "primary")
        if pv ~= nil and type(pv) ~= "boolean" then return invalid("%s[%d].primary must be a boolean", a, i) end
      end
    end
  end
  local ext = res[discovery.ENTERPRISE]
  if ext ~= nil and not is_object(ext) then return invalid("%s must be an object", discovery.ENTERPRISE) end
  local owner = store:find_unique("Users", res.userName)
  if owner and owner ~= self_id then
    return nil, { status = 409, scimType = "uniqueness",
      detail = ("userName '%s' is already taken (compared case-insensitively)"):format(res.userName) }
  end
  return res
end

local function validate_group(res, store, self_id)
  local ok, err = check_schemas(res, discovery.GROUP)
  if not ok then return nil, err end
  if type(res.displayName) ~= "string" or res.displayName:match("^%s*$") then
    return invalid("displayName is required and must be a non-empty string")
  end
  if res.externalId ~= nil and type(res.externalId) ~= "string" then return invalid("externalId must be a string") end
  local members = res.members
  if members ~= nil then
    if is_object(members) then members = json.array({ members }) end
    if not json.is_array(members) then return invalid("members must be an array of {value = id}") end
    local clean, seen = json.array({}), {}
    for i, m in ipairs(members) do
      local id = is_object(m) and path.get(m, "value")
      if type(id) ~= "string" then return invalid("members[%d].value must be the id of a user or group", i) end
      local user, group = store:get("Users", id), store:get("Groups", id)
      if not user and not group then return invalid("members[%d].value '%s' is not a known user or group", i, id) end
      if id == self_id then return invalid("a group cannot be a member of itself") end
      if not seen[id] then
        seen[id] = true
        clean[#clean + 1] = { value = id, type = user and "User" or "Group",
          display = user and (user.displayName or user.userName) or group.displayName }
      end
    end
    res.members = clean
  end
  local owner = store:find_unique("Groups", res.displayName)
  if owner and owner ~= self_id then
    return nil, { status = 409, scimType = "uniqueness",
      detail = ("a group named '%s' already exists (compared case-insensitively)"):format(res.displayName) }
  end
  return res
end

function M.validate(kind, body, store, self_id)
  if not is_object(body) then
    return nil, { status = 400, scimType = "invalidSyntax", detail = "the request body must be a JSON object" }
  end
  local res = canonical(body)
  if kind == "Users" then return validate_user(res, store, self_id) end
  return validate_group(res, store, self_id)
end

-- The stored resource in its client-facing form (a fresh table; the store keeps its own).
function M.render(kind, res, store, base)
  local out = json.copy(res)
  out.password = nil
  out.meta = json.copy(res.meta)
  out.meta.location = ("%s/%s/%s"):format(base, kind, res.id)
  if kind == "Users" then
    local groups = json.array({})
    for _, g in ipairs(store:groups_of(res.id)) do
      groups[#groups + 1] = { value = g.id, display = g.displayName, type = "direct",
        ["$ref"] = base .. "/Groups/" .. g.id }
    end
    if #groups > 0 then out.groups = groups end
  elseif json.is_array(out.members) then
    for _, m in ipairs(out.members) do
      m["$ref"] = ("%s/%s/%s"):format(base, m.type == "Group" and "Groups" or "Users", m.value)
    end
  end
  return out
end

local function parse_list(text)
  local out = {}
  for item in tostring(text):gmatch("[^,]+") do
    item = item:match("^%s*(.-)%s*$")
    if item ~= "" then
      local p = path.parse(item)
      if p and not p.filter then out[#out + 1] = p end
    end
  end
  return out
end

local ALWAYS = { id = true, schemas = true, meta = true }

-- attributes / excludedAttributes query parameters (RFC 7644 section 3.9).
function M.project(out, attributes, excluded)
  if attributes and attributes ~= "" then
    local keep = {}
    for k, v in pairs(out) do
      if ALWAYS[k] then keep[k] = v end
    end
    for _, p in ipairs(parse_list(attributes)) do
      local root_src, root_dst = out, keep
      if p.urn then
        local ext, key = path.get(out, p.urn)
        if ext ~= nil then
          root_src = ext
          root_dst = keep[key] or {}
          keep[key] = root_dst
        else
          root_src = nil
        end
      end
      local v, key = path.get(root_src, p.attr)
      if v ~= nil then
        if not p.sub then
          root_dst[key] = v
        elseif json.is_array(v) then
          local arr = root_dst[key] or json.array({})
          for i, el in ipairs(v) do
            local sv, skey = path.get(el, p.sub)
            arr[i] = arr[i] or {}
            if sv ~= nil then arr[i][skey] = sv end
          end
          root_dst[key] = arr
        else
          local sv, skey = path.get(v, p.sub)
          if sv ~= nil then
            root_dst[key] = root_dst[key] or {}
            root_dst[key][skey] = sv
          end
        end
      end
    end
    out = keep
  end
  if excluded and excluded ~= "" then
    for _, p in ipairs(parse_list(excluded)) do
      local root = p.urn and path.get(out, p.urn) or (not p.urn and out) or nil
      local v, key = path.get(root, p.attr)
      if v ~= nil and not (root == out and ALWAYS[key]) then
        if not p.sub then
          root[key] = nil
        else
          for _, el in ipairs(json.is_array(v) and v or { v }) do
            local _, skey = path.get(el, p.sub)
            if skey then el[skey] = nil end
          end
        end
      end
    end
  end
  return out
end

return M
