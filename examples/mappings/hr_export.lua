-- A mapping for an HR export whose headers are not SCIM names (examples/data/hr_export.csv):
--
--   scimrun examples/onboard.lua --sandbox --param csv=examples/data/hr_export.csv \
--       --param mapping=examples/mappings/hr_export.lua
--
-- It starts from the default mapping (extends) and says only what differs. The file runs in the
-- restricted environment of policy files: no io, no require, no globals. The same mapping
-- without the function is examples/mappings/hr_export.json.
local ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"

return {
  extends = "default",
  attributes = {
    userName = { from = "Login", lower = true, required = true },                 -- lowercase
    ['emails[type eq "work"].value'] = { from = "Work Email", lower = true },
    ["name.givenName"] = { from = "First" },
    ["name.familyName"] = { from = "Last" },
    displayName = { concat = { "First", " ", "Last" } },                          -- concatenation
    title = { from = "Job Title", trim = true },       -- trim is on by default; trim = false keeps spaces
    externalId = { from = "Employee ID" },
    [ENTERPRISE .. ":department"] = { from = "Dept", default = "Unassigned" },   -- default value
    userType = { const = "Employee" },                                            -- constant
    active = { from = "Status", map = { active = true, leaver = false } },        -- value map
    -- a Lua function: fn(value, row) -> new value, or nil, "reason" to refuse the row
    ['phoneNumbers[type eq "work"].value'] = { from = "Phone", fn = function(v)
      local digits = v:gsub("[^%d+]", "")
      if #digits < 6 then return nil, "phone number '" .. v .. "' is too short" end
      return digits
    end },
  },
  ignore = { "Notes" },   -- known columns that go nowhere: no warning for them
}
