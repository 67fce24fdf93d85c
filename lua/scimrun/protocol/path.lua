-- SCIM attribute paths (RFC 7644 sections 3.4.2.2, 3.5.2, 3.10), one parser for the client, the
-- sandbox and the mapping.
-- Contract:
--   parse(text) -> path | nil, message, kind
--       text: an attrPath (`userName`, `name.givenName`,
--       `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value`) or a valuePath
--       with an optional sub-attribute (`emails[type eq "work"].value`); blanks around it are
--       ignored. path: { urn = URN | nil, attr = NAME, sub = NAME | nil, filter = AST | nil }
--       (AST: scimrun.protocol.filter). The URN of a core schema is dropped (its attributes are
--       the resource's own); a known schema URN alone is itself the attribute name. Names keep
--       the spelling of the text. kind is "filter" when the bracketed filter is what failed.
--   parse_attr(text) -> { urn, attr, sub } | nil    an attrPath only (what a filter compares)
--   valid_attr(text) -> boolean                     parse_attr(text) ~= nil: no character of
--       filter syntax can be in it, so a client may put it in a filter unescaped
--   eq_filter(path) -> attr, value | nil            the filter of a valuePath when it reads
--       `attr eq literal` (no URN, no sub-attribute)
--   full_name(path[, parent]) -> "parent.attr.sub"  lower-cased, what CASE_EXACT and schemas key
--   get(obj, name) -> value, key                    attribute lookup, ignoring the name's case
--   ENTERPRISE                                      the enterprise User extension's URN
-- A name is ALPHA *(ALPHA / DIGIT / "-" / "_" / "$") (RFC 7643 section 2.1), also starting with
-- "$" ($ref) or "_". A URN is "urn:" and letters, digits and `.-_:+%`; the attribute follows its
-- last colon, unless the URN is a known schema's.
local M = {}

local lower, sub, match = string.lower, string.sub, string.match

M.ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"

local CORE = {
  ["urn:ietf:params:scim:schemas:core:2.0:user"] = true,
  ["urn:ietf:params:scim:schemas:core:2.0:group"] = true,
}
local KNOWN_URNS = {
  "urn:ietf:params:scim:schemas:core:2.0:user",
  "urn:ietf:params:scim:schemas:core:2.0:group",
  lower(M.ENTERPRISE),
}
local NAME = "[%a%$_][%w_%-%$]*"
local ATTR_ONLY, ATTR_SUB = "^(" .. NAME .. ")$", "^(" .. NAME .. ")%.(" .. NAME .. ")$"

function M.get(obj, name)
  if type(obj) ~= "table" then return nil end
  local v = obj[name]
  if v ~= nil then return v, name end
  local lname = lower(name)
  for k, x in pairs(obj) do
    if type(k) == "string" and lower(k) == lname then return x, k end
  end
end

function M.parse_attr(word)
  if type(word) ~= "string" then return nil end
  local urn, rest = nil, word
  local lw = lower(word)
  if sub(lw, 1, 4) == "urn:" then
    for _, u in ipairs(KNOWN_URNS) do
      if lw == u then return { attr = word } end
      if sub(lw, 1, #u + 1) == u .. ":" then
        urn, rest = sub(word, 1, #u), sub(word, #u + 2)
        break
      end
    end
    if not urn then
      urn, rest = match(word, "^(urn:[%w%.%-_:%+%%]+):([^:]+)$")
      if not urn then return nil end
    end
    if CORE[lower(urn)] then urn = nil end
  end
  local attr, s = match(rest, ATTR_SUB)
  if not attr then
    attr = match(rest, ATTR_ONLY)
    if not attr then return nil end
  end
  return { urn = urn, attr = attr, sub = s }
end

function M.valid_attr(text) return M.parse_attr(text) ~= nil end

function M.parse(text)
  if type(text) ~= "string" or match(text, "^%s*$") then return nil, "empty path" end
  local s = match(text, "^%s*(.-)%s*$")
  local head, inner, tail = match(s, "^([^%[]+)%[(.*)%](.*)$")
  if not head then
    local p = M.parse_attr(s)
    if not p then return nil, ("'%s' is not an attribute path"):format(text) end
    return p
  end
  local p = M.parse_attr(head)
  if not p or p.sub then return nil, ("'%s' is not an attribute path"):format(text) end
  -- required here, not at load: the filter module needs parse_attr from this one
  local f, err = require("scimrun.protocol.filter").parse(inner)
  if not f then return nil, ("bad filter in path '%s': %s"):format(text, err), "filter" end
  p.filter = f
  if tail ~= "" then
    p.sub = match(tail, "^%.(" .. NAME .. ")$")
    if not p.sub then return nil, ("bad sub-attribute after ']' in '%s'"):format(text) end
  end
  return p
end

function M.eq_filter(p)
  local f = p and p.filter
  if f and f.type == "cmp" and f.op == "eq" and not f.path.urn and not f.path.sub then
    return f.path.attr, f.value
  end
  return nil
end

function M.full_name(p, parent)
  local n = lower(p.attr)
  if p.sub then n = n .. "." .. lower(p.sub) end
  if parent then n = lower(parent) .. "." .. n end
  return n
end

return M
