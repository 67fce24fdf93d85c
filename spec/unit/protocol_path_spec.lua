-- SCIM attribute paths (RFC 7644): the one parser of the client, the sandbox and the mapping.
local path = require "scimrun.protocol.path"
local filter = require "scimrun.protocol.filter"

local ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"

describe("protocol path", function()
  it("parses attribute paths with a sub-attribute and a schema URN", function()
    assert.same({ attr = "userName" }, path.parse("userName"))
    assert.same({ attr = "name", sub = "givenName" }, path.parse(" name.givenName "))
    assert.same({ urn = ENTERPRISE, attr = "manager", sub = "value" }, path.parse(ENTERPRISE .. ":manager.value"))
    assert.same({ attr = "members", sub = "$ref" }, path.parse("members.$ref"))
    -- a core schema's URN names the resource's own attributes; a known URN alone is an attribute
    assert.same({ attr = "userName" }, path.parse("urn:ietf:params:scim:schemas:core:2.0:User:userName"))
    assert.same({ attr = ENTERPRISE }, path.parse(ENTERPRISE))
    assert.same({ urn = "urn:example:ext:1.0:Thing", attr = "color" }, path.parse("urn:example:ext:1.0:Thing:color"))
    -- the spelling is kept
    assert.same({ urn = ENTERPRISE:lower(), attr = "DEPARTMENT" }, path.parse(ENTERPRISE:lower() .. ":DEPARTMENT"))
  end)

  it("parses value paths with a filter and an optional sub-attribute", function()
    local p = assert(path.parse('emails[type eq "work"].value'))
    assert.are.equal("emails", p.attr)
    assert.are.equal("value", p.sub)
    assert.is_true(filter.matches(p.filter, { type = "WORK" }))
    assert.same({ "type", "work" }, { path.eq_filter(p) })
    p = assert(path.parse('members[value eq "a]b"]'))
    assert.is_nil(p.sub)
    assert.same({ "value", "a]b" }, { path.eq_filter(p) })
    assert.is_nil(path.eq_filter(assert(path.parse('emails[type eq "work" and primary eq true]'))))
    assert.is_nil(path.eq_filter(assert(path.parse("title"))))
  end)

  it("refuses what is not a path, saying why", function()
    local cases = {
      { "", "empty path" },
      { "bad path", "'bad path' is not an attribute path" },
      { "name..givenName", "is not an attribute path" },
      { "a.b.c", "is not an attribute path" },
      { "name.givenName[type eq \"x\"]", "is not an attribute path" },
      { 'emails[type eq "work"]x', "bad sub%-attribute after ']'" },
      { "urn:foo bar:x", "is not an attribute path" },
      { "urn:example:", "is not an attribute path" },
    }
    for _, c in ipairs(cases) do
      local p, err, kind = path.parse(c[1])
      assert.is_nil(p, c[1])
      assert.matches(c[2], err)
      assert.is_nil(kind)
    end
    local p, err, kind = path.parse("emails[type eq]")
    assert.is_nil(p)
    assert.matches("bad filter in path 'emails%[type eq%]': expected a value at the end", err)
    assert.equal("filter", kind)
  end)

  it("tells names that can go into a filter unescaped", function()
    for _, ok in ipairs({ "userName", "emails.value", "members.$ref", ENTERPRISE .. ":employeeNumber" }) do
      assert.is_true(path.valid_attr(ok), ok)
    end
    for _, bad in ipairs({ "", "userName pr or x", "members]", "a[b]", "x y", "1st", 'a"', "urn:a b:c" }) do
      assert.is_false(path.valid_attr(bad), bad)
    end
    assert.is_false(path.valid_attr(nil))
  end)

  it("looks attributes up ignoring case, returning the key as spelled", function()
    assert.same({ 1, "userName" }, { path.get({ userName = 1 }, "USERNAME") })
    assert.is_nil(path.get("x", "a"))
    assert.equal("members.value", path.full_name({ attr = "VALUE" }, "Members"))
  end)
end)
