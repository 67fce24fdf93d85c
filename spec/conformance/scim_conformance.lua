-- SCIM 2.0 conformance steps, server-neutral data: a port of the steps of Okta's
-- "SCIM 2.0 Spec Test" (the Runscope suite Okta asks integrators to pass).
-- Run with spec/helpers/conformance.lua against any base URL + bearer token.
--
-- Step: { name, method, path, query = {k = v} (URL-encoded by the runner), body,
--         expect = { status = N | {N, ...}, fields = {["a.b.1.c"] = value}, types = {path = "number"},
--                    contains = {path = value in that array}, min = {path = n}, absent = {path, ...} },
--         save = { var = "json.path" } }
-- Strings may use {{var}} and {{upper:var}}. The runner predefines userName (a fresh,
-- mixed-case address), givenName, familyName and randomId (a UUID no server has).
local LIST = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
local ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
local USER = "urn:ietf:params:scim:schemas:core:2.0:User"
local PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"

local list_shape = {
  status = 200,
  contains = { schemas = LIST },
  types = { totalResults = "number", itemsPerPage = "number", startIndex = "number" },
}

return {
  name = "Okta SCIM 2.0 spec test (ported)",
  steps = {
    {
      name = "Required: the Users endpoint answers a ListResponse",
      method = "GET", path = "/Users", query = { count = "1", startIndex = "1" },
      expect = list_shape,
    },
    {
      name = "Required: a filter on an unknown userName finds nothing",
      method = "GET", path = "/Users", query = { filter = 'userName eq "{{userName}}"' },
      expect = { status = 200, contains = { schemas = LIST }, fields = { totalResults = 0 } },
    },
    {
      name = "Required: an unknown user id answers 404 with a SCIM error",
      method = "GET", path = "/Users/{{randomId}}",
      expect = { status = 404, contains = { schemas = ERROR } },
    },
    {
      name = "Required: create a user with realistic values",
      method = "POST", path = "/Users",
      body = {
        schemas = { USER },
        userName = "{{userName}}",
        name = { givenName = "{{givenName}}", familyName = "{{familyName}}" },
        emails = { { primary = true, value = "{{userName}}", type = "work" } },
        displayName = "{{givenName}} {{familyName}}",
        locale = "en-US",
        externalId = "{{randomId}}",
        password = "1mz050nq",
        active = true,
      },
      expect = {
        status = 201,
        contains = { schemas = USER },
        fields = { userName = "{{userName}}", active = true, ["name.familyName"] = "{{familyName}}",
          ["name.givenName"] = "{{givenName}}", ["emails.1.value"] = "{{userName}}" },
        types = { id = "string" },
        absent = { "password" },
      },
      save = { userId = "id" },
    },
    {
      name = "Required: the created user can be read back",
      method = "GET", path = "/Users/{{userId}}",
      expect = { status = 200, fields = { id = "{{userId}}", userName = "{{userName}}", active = true } },
    },
    {
      name = "Required: the list now holds at least one user",
      method = "GET", path = "/Users", query = { count = "1", startIndex = "1" },
      expect = { status = 200, contains = { schemas = LIST }, min = { totalResults = 1, itemsPerPage = 1 },
        types = { ["Resources.1.id"] = "string" } },
      save = { firstId = "Resources.1.id" },
    },
    {
      name = "Required: Users/{id} returns the user the list named",
      method = "GET", path = "/Users/{{firstId}}",
      expect = { status = 200, fields = { id = "{{firstId}}" }, types = { userName = "string" } },
    },
    {
      name = "Required: creating the same user again answers 409",
      method = "POST", path = "/Users",
      body = { schemas = { USER }, userName = "{{userName}}", active = true,
        name = { givenName = "{{givenName}}", familyName = "{{familyName}}" } },
      expect = { status = 409, contains = { schemas = ERROR } },
    },
    {
      name = "Required: userName filters are case-insensitive",
      method = "GET", path = "/Users", query = { filter = 'userName eq "{{upper:userName}}"' },
      expect = { status = 200, fields = { totalResults = 1, ["Resources.1.id"] = "{{userId}}" } },
    },
    {
      name = "Optional: deactivate the user with PATCH",
      method = "PATCH", path = "/Users/{{userId}}",
      body = { schemas = { PATCH }, Operations = { { op = "replace", value = { active = false } } } },
      expect = { status = { 200, 204 } },
    },
    {
      name = "Optional: the user reads back inactive",
      method = "GET", path = "/Users/{{userId}}",
      expect = { status = 200, fields = { active = false } },
    },
    {
      name = "Optional: delete the user",
      method = "DELETE", path = "/Users/{{userId}}",
      expect = { status = 204 },
    },
    {
      name = "Optional: the deleted user is gone",
      method = "GET", path = "/Users/{{userId}}",
      expect = { status = 404, contains = { schemas = ERROR } },
    },
  },
}
