-- What one write changes, as plain data for the change diff (--diff, scimrun.observe.diff) and the
-- audit trail (scimrun.observe.audit): an array of
--   { attribute = PATH, before = V, after = V }     an attribute set, replaced or removed
--   { attribute = "members", added = { ids } }      group membership (or removed = { ids })
-- `before` is JSON null when the resource did not hold the attribute and absent when it was not
-- read (a deactivation, a replace); `after` is absent for a removal.
-- Never a secret: an attribute whose name mentions a password keeps its path but its values
-- become "(secret)", and every string goes through the log redactor (registered tokens).
local cjson = require "cjson"
local patch = require "scimrun.protocol.patch"

local M = {}

local NULL = cjson.null
M.SECRET = "(secret)"

local SKIP = { schemas = true, id = true, meta = true }

-- Attribute names are few and asked for every value recorded: the answers are kept (a bounded
-- table: cleared past 1,000 names).
local secret_names, n_secret_names = {}, 0
local function secret_name(name)
  if type(name) ~= "string" then return false end
  local s = secret_names[name]
  if s == nil then
    s = name:lower():find("password", 1, true) ~= nil
    if n_secret_names >= 1000 then secret_names, n_secret_names = {}, 0 end
    secret_names[name], n_secret_names = s, n_secret_names + 1
  end
  return s
end

local log_redact -- scimrun.log.redact, once the runtime has it
function M.redact(s)
  if type(s) ~= "string" then return s end
  if not log_redact then
    local log = rawget(_G, "scimrun") and scimrun.log
    log_redact = log and log.redact
    if not log_redact then return s end
  end
  return log_redact(s)
end

-- A deep copy without secrets.
local function clean(v)
  if type(v) == "string" then return M.redact(v) end
  if type(v) ~= "table" then return v end
  local out = {}
  for k, x in pairs(v) do
    out[k] = secret_name(k) and M.SECRET or clean(x)
  end
  return setmetatable(out, getmetatable(v))
end
M.clean = clean

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do
    if type(k) == "string" and not SKIP[k] then keys[#keys + 1] = k end
  end
  table.sort(keys)
  return keys
end

-- A create or a replace: every attribute the body sets (before: none, or unknown).
function M.from_attrs(attrs, opts)
  local out = {}
  if type(attrs) ~= "table" then return out end
  local replace = opts and opts.replace
  local keys = sorted_keys(attrs)
  for i = 1, #keys do
    local k = keys[i]
    local after = secret_name(k) and M.SECRET or clean(attrs[k])
    -- each entry built whole (a field added later grows the table: a second allocation)
    if replace then
      out[i] = { attribute = k, after = after }
    else
      out[i] = { attribute = k, after = after, before = NULL }
    end
  end
  return out
end

-- PATCH operations, with what each path held in `current` (the resource as read) when given.
function M.from_ops(ops, current)
  local out = {}
  for _, o in ipairs(ops or {}) do
    local kind = type(o.op) == "string" and o.op:lower() or "replace"
    local entries = {}
    if o.path == nil and type(o.value) == "table" then
      for _, k in ipairs(sorted_keys(o.value)) do entries[#entries + 1] = { k, o.value[k] } end
    else
      entries[1] = { tostring(o.path), o.value }
    end
    for _, e in ipairs(entries) do
      local path, value = e[1], e[2]
      local c = { attribute = path }
      if current ~= nil then
        local was = patch.get(current, path)
        if was == nil then was = NULL end
        c.before = (secret_name(path) and was ~= NULL) and M.SECRET or clean(was)
      end
      if kind ~= "remove" then c.after = secret_name(path) and M.SECRET or clean(value) end
      out[#out + 1] = c
    end
  end
  return out
end

-- Group membership: ids added or removed.
function M.members(mode, ids)
  local list = {}
  for i, id in ipairs(ids or {}) do list[i] = id end
  return { { attribute = "members", [mode == "add" and "added" or "removed"] = list } }
end

local function show(v)
  if v == nil then return "?" end
  if v == NULL then return "(none)" end
  local ok, json = pcall(cjson.encode, v)
  local s = ok and json or tostring(v)
  if #s > 60 then s = s:sub(1, 57) .. "..." end
  return s
end

-- One line for a person: `title: "Engineer" -> "Lead"; userName = "ada"; members: +2`.
function M.text(list)
  local parts = {}
  for _, c in ipairs(list or {}) do
    if c.added then
      parts[#parts + 1] = ("%s: +%d"):format(c.attribute, #c.added)
    elseif c.removed then
      parts[#parts + 1] = ("%s: -%d"):format(c.attribute, #c.removed)
    elseif c.after == nil then
      parts[#parts + 1] = ("%s: %s -> (removed)"):format(c.attribute, show(c.before))
    elseif c.before == nil or c.before == NULL then -- set (a create, a PUT), or added
      parts[#parts + 1] = ("%s = %s"):format(c.attribute, show(c.after))
    else
      parts[#parts + 1] = ("%s: %s -> %s"):format(c.attribute, show(c.before), show(c.after))
    end
  end
  return table.concat(parts, "; ")
end

return M
