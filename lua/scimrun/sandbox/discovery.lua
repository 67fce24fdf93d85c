-- The sandbox's discovery documents (RFC 7643 sections 5-7): ServiceProviderConfig,
-- ResourceTypes and Schemas. Each function takes the base URL for meta.location.
local json = require "scimrun.sandbox.json"

local M = {}

M.USER = "urn:ietf:params:scim:schemas:core:2.0:User"
M.GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
M.ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
M.LIST = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
M.ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
M.MAX_RESULTS = 200

local A = json.array

function M.service_provider_config(base)
  return {
    schemas = A({ "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig" }),
    documentationUri = "https://github.com/scimrun/scimrun",
    patch = { supported = true },
    bulk = { supported = false, maxOperations = 0, maxPayloadSize = 0 },
    filter = { supported = true, maxResults = M.MAX_RESULTS },
    changePassword = { supported = false },
    sort = { supported = false },
    etag = { supported = true },
    authenticationSchemes = A({ {
      type = "oauthbearertoken", name = "OAuth Bearer Token", primary = true,
      description = "Authentication with the sandbox token: Authorization: Bearer TOKEN",
      specUri = "https://www.rfc-editor.org/info/rfc6750",
    } }),
    meta = { resourceType = "ServiceProviderConfig", location = base .. "/ServiceProviderConfig" },
  }
end

local function resource_type(base, name, endpoint, schema, extensions)
  return {
    schemas = A({ "urn:ietf:params:scim:schemas:core:2.0:ResourceType" }),
    id = name, name = name, endpoint = endpoint, schema = schema,
    description = name .. " accounts",
    schemaExtensions = A(extensions),
    meta = { resourceType = "ResourceType", location = base .. "/ResourceTypes/" .. name },
  }
end

function M.resource_types(base)
  return {
    resource_type(base, "User", "/Users", M.USER, { { schema = M.ENTERPRISE, required = false } }),
    resource_type(base, "Group", "/Groups", M.GROUP, {}),
  }
end

-- attr(name, type, opts): a schema attribute with RFC 7643 defaults.
local function attr(name, ty, o)
  o = o or {}
  local a = {
    name = name, type = ty, multiValued = o.multi or false, required = o.required or false,
    caseExact = o.exact or false, mutability = o.mutability or "readWrite",
    returned = o.returned or "default", uniqueness = o.uniqueness or "none",
    description = o.description or name,
  }
  if o.sub then a.subAttributes = A(o.sub) end
  if o.refs then a.referenceTypes = A(o.refs) end
  return a
end

local function multi(name, extra)
  local sub = { attr("value", "string"), attr("display", "string"), attr("type", "string"),
    attr("primary", "boolean") }
  for _, s in ipairs(extra or {}) do sub[#sub + 1] = s end
  return attr(name, "complex", { multi = true, sub = sub })
end

local function schema(base, id, name, attributes)
  return {
    schemas = A({ "urn:ietf:params:scim:schemas:core:2.0:Schema" }),
    id = id, name = name, description = name, attributes = A(attributes),
    meta = { resourceType = "Schema", location = base .. "/Schemas/" .. id },
  }
end

function M.schemas(base)
  local user = schema(base, M.USER, "User", {
    attr("userName", "string", { required = true, uniqueness = "server" }),
    attr("name", "complex", { sub = { attr("formatted", "string"), attr("familyName", "string"),
      attr("givenName", "string"), attr("middleName", "string"), attr("honorificPrefix", "string"),
      attr("honorificSuffix", "string") } }),
    attr("displayName", "string"), attr("nickName", "string"),
    attr("profileUrl", "reference", { refs = { "external" } }),
    attr("title", "string"), attr("userType", "string"), attr("preferredLanguage", "string"),
    attr("locale", "string"), attr("timezone", "string"), attr("active", "boolean"),
    attr("password", "string", { mutability = "writeOnly", returned = "never" }),
    multi("emails"), multi("phoneNumbers"), multi("ims"), multi("photos"),
    attr("addresses", "complex", { multi = true, sub = { attr("formatted", "string"),
      attr("streetAddress", "string"), attr("locality", "string"), attr("region", "string"),
      attr("postalCode", "string"), attr("country", "string"), attr("type", "string") } }),
    attr("groups", "complex", { multi = true, mutability = "readOnly", sub = {
      attr("value", "string", { mutability = "readOnly" }),
      attr("$ref", "reference", { mutability = "readOnly", refs = { "Group" } }),
      attr("display", "string", { mutability = "readOnly" }), attr("type", "string", { mutability = "readOnly" }) } }),
    multi("entitlements"), multi("roles"), multi("x509Certificates"),
  })
  local group = schema(base, M.GROUP, "Group", {
    attr("displayName", "string", { required = true, uniqueness = "server" }),
    attr("members", "complex", { multi = true, sub = {
      attr("value", "string", { mutability = "immutable", exact = true }),
      attr("$ref", "reference", { mutability = "immutable", refs = { "User", "Group" } }),
      attr("display", "string"), attr("type", "string") } }),
  })
  local enterprise = schema(base, M.ENTERPRISE, "EnterpriseUser", {
    attr("employeeNumber", "string"), attr("costCenter", "string"), attr("organization", "string"),
    attr("division", "string"), attr("department", "string"),
    attr("manager", "complex", { sub = { attr("value", "string"), attr("$ref", "reference", { refs = { "User" } }),
      attr("displayName", "string", { mutability = "readOnly" }) } }),
  })
  return { user, group, enterprise }
end

-- A ListResponse around a fixed list (discovery endpoints are not paged).
function M.list(items)
  return { schemas = A({ M.LIST }), totalResults = #items, startIndex = 1, itemsPerPage = #items,
    Resources = A(items) }
end

return M
