-- SCIM attribute paths of a mapping: parsing, and the check that a path names a User attribute.
-- Contract:
--   ENTERPRISE, WORK_EMAIL  the enterprise extension's schema URN; the work email's path
--   parse(path) -> steps | nil, reason
--       steps: { { name = "emails", attr = "type", value = "work" }, { name = "value" } }; a
--       path starting with urn: has the schema URN as its first step's name. A filter segment
--       must read [attr eq "value"] and be followed by a sub-attribute.
--   check_user_attribute(src, path, steps)
--       raises a "config" error (spec_error) when the first step is not an attribute of the
--       core User schema (RFC 7643 section 4.1) or is read-only (id, meta, groups, schemas),
--       with a "did you mean" hint; URN-prefixed paths (extensions) are not checked.
local common = require "scimrun.mapping.common"

local spec_error, did_you_mean = common.spec_error, common.did_you_mean
local find, sub, lower = string.find, string.sub, string.lower

local M = {}

M.ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
M.WORK_EMAIL = 'emails[type eq "work"].value'

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

M.parse = parse_path
M.check_user_attribute = check_user_attribute

return M
