-- PATCH operations applied to a resource (RFC 7644 section 3.5.2): the sandbox's answer to a
-- PatchOp, the client's read-modify-PUT and the resource a 204 answer leaves.
local patch = require "scimrun.protocol.patch"
local cjson = require "cjson"
local json = require "scimrun.sandbox.json"

local A = json.array
local PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
local ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"

local function user()
  return {
    schemas = A({ "urn:ietf:params:scim:schemas:core:2.0:User" }),
    id = "u1", userName = "bjensen", active = true,
    name = { givenName = "Barbara", familyName = "Jensen" },
    emails = A({ { value = "bj@work.example", type = "work", primary = true },
      { value = "bj@home.example", type = "home" } }),
  }
end

local function group()
  return { schemas = A({ "urn:ietf:params:scim:schemas:core:2.0:Group" }), id = "g1", displayName = "Eng",
    members = A({ { value = "u1" }, { value = "u2" }, { value = "u3" } }) }
end

local function apply(res, ...)
  return patch.apply(res, { schemas = A({ PATCH }), Operations = A({ ... }) })
end

local function values(list)
  local out = {}
  for _, m in ipairs(list or {}) do out[#out + 1] = m.value end
  return out
end

describe("protocol patch", function()
  it("replaces a simple attribute and leaves the input untouched", function()
    local u = user()
    local out = assert(apply(u, { op = "replace", path = "active", value = false }))
    assert.is_false(out.active)
    assert.is_true(u.active)
  end)

  it("accepts capitalised op names as Azure AD sends them", function()
    local out = assert(apply(user(), { op = "Replace", path = "active", value = false },
      { op = "Add", path = "title", value = "CTO" }))
    assert.is_false(out.active)
    assert.are.equal("CTO", out.title)
  end)

  it("replaces without a path from an object, merging complex attributes", function()
    local out = assert(apply(user(), { op = "replace", value = { active = false, name = { givenName = "Babs" } } }))
    assert.is_false(out.active)
    assert.are.equal("Babs", out.name.givenName)
    assert.are.equal("Jensen", out.name.familyName)
  end)

  it("accepts dotted attribute names as keys of a path-less value", function()
    local out = assert(apply(user(), { op = "replace", value = { ["name.familyName"] = "Jensen-Smith" } }))
    assert.are.equal("Jensen-Smith", out.name.familyName)
  end)

  it("sets a sub-attribute", function()
    local out = assert(apply(user(), { op = "replace", path = "name.familyName", value = "Doe" }))
    assert.are.same({ givenName = "Barbara", familyName = "Doe" }, out.name)
  end)

  it("adds members without duplicating existing ones", function()
    local out = assert(apply(group(), { op = "add", path = "members",
      value = A({ { value = "u2" }, { value = "u4" } }) }))
    assert.are.same({ "u1", "u2", "u3", "u4" }, values(out.members))
  end)

  it("removes a member selected by a value filter", function()
    local out = assert(apply(group(), { op = "remove", path = 'members[value eq "u2"]' }))
    assert.are.same({ "u1", "u3" }, values(out.members))
  end)

  it("removes members listed in the value (the Azure AD form)", function()
    local out = assert(apply(group(), { op = "remove", path = "members",
      value = A({ { value = "u1" }, { value = "u3" } }) }))
    assert.are.same({ "u2" }, values(out.members))
  end)

  it("removes a whole attribute", function()
    local out = assert(apply(group(), { op = "remove", path = "members" }))
    assert.is_nil(out.members)
  end)

  it("replaces the sub-attribute of filtered values", function()
    local out = assert(apply(user(),
      { op = "replace", path = 'emails[type eq "work"].value', value = "new@work.example" }))
    assert.are.equal("new@work.example", out.emails[1].value)
    assert.are.equal("bj@home.example", out.emails[2].value)
  end)

  it("creates a value for add on an unmatched eq filter", function()
    local out = assert(apply(user(), { op = "add", path = 'emails[type eq "other"].value', value = "x@other.example" }))
    assert.are.equal(3, #out.emails)
    assert.are.same({ type = "other", value = "x@other.example" }, out.emails[3])
  end)

  it("answers noTarget when replace selects nothing", function()
    local out, err = apply(user(), { op = "replace", path = 'emails[type eq "other"].value', value = "x" })
    assert.is_nil(out)
    assert.are.equal(400, err.status)
    assert.are.equal("noTarget", err.scimType)
  end)

  it("adds to the enterprise extension and lists its schema", function()
    local urn = ENTERPRISE
    local out = assert(apply(user(), { op = "add", path = urn .. ":department", value = "R&D" }))
    assert.are.equal("R&D", out[urn].department)
    assert.are.equal(urn, out.schemas[2])
  end)

  it("does not apply anything when a later operation fails", function()
    local u = user()
    local out, err = apply(u, { op = "replace", path = "title", value = "x" }, { op = "jump", path = "title" })
    assert.is_nil(out)
    assert.are.equal("invalidSyntax", err.scimType)
    assert.matches("Operations%[2%]", err.detail)
    assert.is_nil(u.title)
  end)

  it("rejects bad requests with the right scimType", function()
    local cases = {
      { { Operations = A({ { op = "add", path = "title", value = "x" } }) }, "invalidSyntax" },
      { { schemas = A({ PATCH }) }, "invalidSyntax" },
      { { schemas = A({ PATCH }), Operations = A({ { op = "remove" } }) }, "noTarget" },
      { { schemas = A({ PATCH }), Operations = A({ { op = "replace", path = "id", value = "x" } }) }, "mutability" },
      { { schemas = A({ PATCH }), Operations = A({ { op = "add", path = "emails[type eq]", value = "x" } }) },
        "invalidPath" },
      { { schemas = A({ PATCH }), Operations = A({ { op = "add", path = "title" } }) }, "invalidValue" },
    }
    for i, c in ipairs(cases) do
      local out, err = patch.apply(user(), c[1])
      assert.is_nil(out, "case " .. i)
      assert.are.equal(c[2], err.scimType, "case " .. i .. ": " .. tostring(err.detail))
    end
  end)

  it("compares the values of a filter as their attribute says: members.value exactly", function()
    local out = assert(apply(group(), { op = "remove", path = 'members[value eq "U2"]' }))
    assert.are.same({ "u1", "u2", "u3" }, values(out.members))
    out = assert(apply(user(), { op = "replace", path = 'emails[TYPE eq "WORK"].value', value = "w@x" }))
    assert.are.equal("w@x", out.emails[1].value)
  end)

  -- The client's resources and operations are plain decoded tables: no array marks, [] read as {}.
  describe("on the client's plain tables", function()
    local function read(text) return cjson.decode(text) end

    it("applies the operations the client sends", function()
      local u = read('{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"id":"u1","userName":"a",'
        .. '"name":{"givenName":"A","familyName":"B"},"emails":[{"value":"a@x","type":"work"}],"groups":[]}')
      local out = assert(patch.apply_ops(u, {
        { op = "replace", path = "name.givenName", value = "Ann" },
        { op = "replace", path = "title", value = "Lead" },
        { op = "add", path = ENTERPRISE .. ":department", value = "Lab" },
        { op = "replace", path = "emails", value = { { value = "b@x", type = "work" } } },
        { op = "remove", path = "nickName" },
      }))
      assert.same({ givenName = "Ann", familyName = "B" }, out.name)
      assert.equal("Lead", out.title)
      assert.equal("Lab", out[ENTERPRISE].department)
      assert.same({ "urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE }, out.schemas)
      assert.same({ { value = "b@x", type = "work" } }, out.emails)
      assert.equal("A", u.name.givenName)
    end)

    it("takes an empty table for an empty list", function()
      local g = read('{"id":"g1","displayName":"G","members":[]}')
      local out = assert(patch.apply_ops(g, { { op = "add", path = "members", value = { { value = "u1" } } } }))
      assert.same({ { value = "u1" } }, out.members)
      out = assert(patch.apply_ops(read('{"id":"u","emails":[{"value":"a@x"}]}'),
        { { op = "replace", path = "emails", value = {} } }))
      assert.same({}, out.emails)
    end)

    it("removes members by the value paths the client builds", function()
      local g = read('{"id":"g1","members":[{"value":"u1"},{"value":"a\\"]"},{"value":"u3"}]}')
      local filter = require "scimrun.protocol.filter"
      local out = assert(patch.apply_ops(g, { { op = "remove", path = filter.value_path("members", 'a"]') },
        { op = "remove", path = filter.value_path("members", "nobody") } }))
      assert.same({ "u1", "u3" }, values(out.members))
    end)

    it("says why it cannot apply an operation", function()
      local out, err = patch.apply_ops(read('{"id":"u1"}'), { { op = "move", path = "title" } })
      assert.is_nil(out)
      assert.equal("Operations[1].op must be add, replace or remove, got move", err.detail)
      out, err = patch.apply_ops(read('{"id":"u1"}'), { { op = "add" } })
      assert.is_nil(out)
      assert.equal("Operations[1]: add without a path needs an object value", err.detail)
    end)
  end)

  it("reads what a path designates (the change list's before values)", function()
    local u = user()
    u[ENTERPRISE] = { department = "R&D" }
    assert.equal("Barbara", patch.get(u, "name.givenName"))
    assert.equal("R&D", patch.get(u, ENTERPRISE:lower() .. ":DEPARTMENT"))
    assert.equal("bj@home.example", patch.get(u, 'emails[type eq "HOME"].value'))
    assert.same({ value = "bj@work.example", type = "work", primary = true }, patch.get(u, "emails[primary eq true]"))
    assert.same({ value = "u2" }, patch.get(group(), 'members[value eq "u2"]'))
    assert.is_nil(patch.get(u, 'emails[type eq "other"]'))
    assert.is_nil(patch.get(u, "nickName"))
    assert.is_nil(patch.get(u, "bad path"))
    assert.is_nil(patch.get(u, nil))
  end)
end)
