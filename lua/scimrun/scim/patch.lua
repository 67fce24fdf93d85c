-- What the client sends to change a resource (RFC 7644 §3.5.2), compared the client's way:
--   SERVER_MANAGED          attributes never compared nor sent back (id, meta, schemas, password)
--   contains(have, want, ci) -> boolean   `have` already holds everything in `want`
--   diff(have, want, opts) -> PATCH operations turning `have` into `want` (see below)
--   for_put(resource) -> the body of a PUT built from a read
--   get_ci(t, name), is_array(t), copy(v)  case-insensitive lookup, the client's array test
--       (an empty table is an array), deep copy
-- Applying operations to a resource (read-modify-PUT, a 204 answer) is scimrun.protocol.patch.
local cjson = require "cjson"
local path = require "scimrun.protocol.path"

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
local get_ci = path.get
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
  local function put(p, w)
    if w == NULL then
      ops[#ops + 1] = { op = "remove", path = p }
    else
      ops[#ops + 1] = { op = "replace", path = p, value = w }
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

-- The body of a PUT built from a read: server-managed attributes removed.
function M.for_put(resource)
  local body = deep_copy(resource)
  body.meta = nil
  body.password = nil
  return body
end

return M
