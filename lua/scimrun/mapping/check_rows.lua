-- Preflight of a whole input: every row through a mapping, nothing sent.
-- Contract:
--   check_rows(spec, iter, opts) -> { rows = n, valid = n, bad = { { file, line, reason } } }
--       spec: a spec, compiled spec or plan (as mapping.apply). iter yields row, info as
--       csv.rows / jsonl.rows do (row false, info.error for a bad record). A row is bad when the
--       reader or mapping.apply refuses it, or when it repeats a value of an opts.unique attribute
--       (default { "userName", "externalId" }; userName compared case-insensitively, as
--       providers do), citing the line of the first, or when a value is longer than
--       opts.max_lengths allows ({ [attribute path] = characters }; default: the run policy's
--       scim.max_lengths, through the run context). bad is in input order.
local common = require "scimrun.mapping.common"
local apply = require "scimrun.mapping.apply"
local path = require "scimrun.protocol.path"

local is_empty = common.is_empty
local lower = string.lower

local M = {}

-- Checks every row of an input through a plan (or spec) without sending anything.
-- iter yields row, info as csv.rows / jsonl.rows do (row false for a bad record).
-- opts.unique: attributes no two rows may share (default { "userName", "externalId" });
-- userName is compared case-insensitively, as providers do. Returns
-- { rows = n, valid = n, bad = { { file, line, reason } } }, bad in input order.
-- Characters of a UTF-8 string (bytes that do not continue a sequence).
local function chars(s)
  local _, cont = s:gsub("[\128-\191]", "")
  return #s - cont
end

-- The first value of attrs longer than its limit: "reason" or nil. A multi-valued attribute's
-- path (emails) checks each entry's value.
local function value_at(attrs, name)
  local parent, leaf = name:match("^(urn:.+):([^:]+)$") -- an extension's attribute
  if not parent then parent, leaf = name:match("^([^.]+)%.(.+)$") end -- a sub-attribute
  if not parent then return (path.get(attrs, name)) end
  local p = path.get(attrs, parent)
  if type(p) ~= "table" then return nil end
  if p[1] ~= nil then -- a multi-valued attribute: the sub-attribute of each entry
    local out = {}
    for _, e in ipairs(p) do out[#out + 1] = path.get(e, leaf) end
    return out
  end
  return (path.get(p, leaf))
end

local function too_long(attrs, limits)
  for name, max in pairs(limits) do
    local v = value_at(attrs, name)
    local values = type(v) == "table" and v or { v }
    for _, one in ipairs(values) do
      if type(one) == "table" then one = one.value end
      if type(one) == "string" and chars(one) > max then
        return ("%s is %d characters; the provider accepts at most %d (scim.max_lengths in the policy)")
          :format(name, chars(one), max)
      end
    end
  end
end

function M.check_rows(spec, iter, opts)
  opts = opts or {}
  local run = rawget(_G, "scimrun") and scimrun.ctx and scimrun.ctx().run or {}
  local limits = opts.max_lengths or run.max_lengths
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
      attrs, reason = apply.apply(spec, row)
    end
    if attrs and limits then reason = too_long(attrs, limits) end
    if attrs and not reason then
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

return M
