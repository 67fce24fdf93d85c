-- The default attribute mapping: input columns -> SCIM User attributes (scimrun.mapping).
--
-- Used when a workflow is given no --param mapping=FILE. It accepts SCIM attribute names as
-- column headers (userName, givenName or name.givenName, email or emails, department, ...) and
-- the snake_case names of examples/data/users.csv (first_name, last_name, display_name,
-- employee_id, status). Names match ignoring case, white space and punctuation, so First Name,
-- firstName and first_name are the same column; in a list, the first name the header has wins.
--
-- This file is loaded the way a mapping file of yours is (the restricted environment of policy
-- files), so it is also an example: copy it, or start yours with extends = "default" and list
-- only what differs (docs/examples.md, "Attribute mapping").
local ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"

local GIVEN = { "givenName", "name.givenName", "first_name" }
local FAMILY = { "familyName", "name.familyName", "last_name" }

return {
  attributes = {
    userName = { from = { "userName" }, required = true },
    externalId = { from = { "externalId", "employee_id" } },
    -- when there is no display name column (or it is empty): "given family"
    displayName = { from = { "displayName", "display_name" },
                    default = { concat = { { from = GIVEN }, " ", { from = FAMILY } } } },
    ["name.givenName"] = { from = GIVEN },
    ["name.familyName"] = { from = FAMILY },
    ["name.middleName"] = { from = { "middleName", "name.middleName" } },
    ["name.formatted"] = { from = { "name.formatted" } },
    nickName = { from = { "nickName" } },
    title = { from = { "title" } },
    userType = { from = { "userType" } },
    preferredLanguage = { from = { "preferredLanguage" } },
    locale = { from = { "locale" } },
    timezone = { from = { "timezone" } },
    ['emails[type eq "work"].value'] = { from = { "email", "emails", 'emails[type eq "work"].value' } },
    ['phoneNumbers[type eq "work"].value'] = { from = { "phoneNumber", "phoneNumbers", "phone" } },
    -- an active column (true/false, yes/no, 1/0); else a status column, where only the statuses
    -- of a leaver mean inactive (on_leave is still active); without either: active
    active = { from = { "active" },
               default = { from = { "status" }, default = true,
                           map = { terminated = false, inactive = false, disabled = false, suspended = false,
                                   deactivated = false, ["*"] = true } } },
    [ENTERPRISE .. ":department"] = { from = { "department", ENTERPRISE .. ":department" } },
    -- RFC 7643 4.3: manager.value is the id of the manager's User resource at the provider
    [ENTERPRISE .. ":manager.value"] = { from = { "manager", "manager.value", "manager_id",
                                                   ENTERPRISE .. ":manager.value" } },
    [ENTERPRISE .. ":employeeNumber"] = { from = { "employeeNumber", ENTERPRISE .. ":employeeNumber" } },
    [ENTERPRISE .. ":costCenter"] = { from = { "costCenter", ENTERPRISE .. ":costCenter" } },
    [ENTERPRISE .. ":organization"] = { from = { "organization", ENTERPRISE .. ":organization" } },
    [ENTERPRISE .. ":division"] = { from = { "division", ENTERPRISE .. ":division" } },
  },
}
