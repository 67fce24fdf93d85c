-- SCIM attribute paths of a mapping: parsing, and the check that a path names a User attribute.
-- Contract:
--   ENTERPRISE, WORK_EMAIL  the enterprise extension's schema URN; the work email's path
--   parse(path) -> steps | nil, reason
--       steps: { { name = "emails", attr = "type", value = "work" }, { name = "value" } }; a
--       path with an extension's URN has the URN as its first step's name (a core schema's URN
--       is dropped). The path is RFC 7644's (scimrun.protocol.path: attr, attr.sub or
--       attr[filter].sub); a filter must read [attr eq "value"] and be followed by a
--       sub-attribute.
--   check_user_attribute(src, path, steps)
--       raises a "config" error (spec_error) when the first step is not an attribute of the
--       core User schema (RFC 7643 section 4.1) or is read-only (id, meta, groups, schemas),
--       with a "did you mean" hint; URN-prefixed paths (extensions) are not checked.
local common = require "scimrun.mapping.common"
local protocol_path = require "scimrun.protocol.path"

local spec_error, did_you_mean = common.spec_error, common.did_you_mean
local find, lower = string.find, string.lower

local M = {}

M.ENTERPRISE = protocol_path.ENTERPRISE
M.WORK_EMAIL = 'emails[type eq "work"].value'
local FILTER_FORM = 'a filter must read [attr eq "value"]'

-- Attribute paths as steps (scimrun.protocol.path parses them); a filter must give the element
-- it selects, so it reads [attr eq "value"], and the value goes in a sub-attribute.
local function parse_path(text)
  local p, why, kind = protocol_path.parse(text)
  if not p then
    if kind == "filter" then return nil, FILTER_FORM end
    return nil, why
  end
  local step = { name = p.attr }
  local steps = p.urn and { { name = p.urn }, step } or { step }
  if p.filter then
    local attr, value = protocol_path.eq_filter(p)
    if type(value) ~= "string" then return nil, FILTER_FORM end
    step.attr, step.value = attr, value
    if not p.sub then return nil, "a filter segment must be followed by a sub-attribute, as in .value" end
  end
  if p.sub then steps[#steps + 1] = { name = p.sub } end
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
