-- scimrun.mapping: declared attribute mappings from input rows to SCIM attributes.
local mapping = require "scimrun.mapping"
local csv = require "scimrun.csv"

local ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"

local SPEC = {
  userName = "email",
  ["name.givenName"] = "first_name",
  ["name.familyName"] = "last_name",
  ['emails[type eq "work"].value'] = "email",
  active = function(row) return row.status ~= "terminated" end,
  externalId = "employee_id",
}

local ROW = { email = "ada@example.com", first_name = "Ada", last_name = "Lovelace", status = "active",
  employee_id = "E1", department = "Engineering" }

local function with(base, changes)
  local t = {}
  for k, v in pairs(base) do t[k] = v end
  for k, v in pairs(changes) do t[k] = v end
  return t
end

local function raises(fn, pattern)
  local ok, err = pcall(fn)
  assert.is_false(ok, "expected an error matching " .. pattern)
  assert.matches(pattern, tostring(err))
end

describe("mapping.apply", function()
  it("builds nested attributes, computed values and a primary work email", function()
    assert.same({
      userName = "ada@example.com",
      name = { givenName = "Ada", familyName = "Lovelace" },
      emails = { { type = "work", value = "ada@example.com", primary = true } },
      active = true,
      externalId = "E1",
    }, mapping.apply(SPEC, ROW))
    assert.is_false(mapping.apply(SPEC, with(ROW, { status = "terminated" })).active)
  end)

  it("trims column values and sets nothing for empty ones", function()
    local attrs = mapping.apply(SPEC, with(ROW, { first_name = "  Ada ", last_name = "", employee_id = "   " }))
    assert.same({ givenName = "Ada" }, attrs.name)
    assert.is_nil(attrs.externalId)
  end)

  it("creates no emails entry when the email is empty", function()
    local attrs = mapping.apply({ userName = "u", ['emails[type eq "work"].value'] = "email" }, { u = "x", email = "" })
    assert.same({ userName = "x" }, attrs)
  end)

  it("fails a row whose email column is not an address, naming the column", function()
    local attrs, err = mapping.apply(SPEC, with(ROW, { email = "ada.example.com" }))
    assert.is_nil(attrs)
    assert.matches("column 'email' %(mapped to emails%[type eq \"work\"%]%.value%)", err)
    assert.matches('"ada%.example%.com" is not a valid email address %(has no @%)', err)
  end)

  it("builds several typed entries; primary is set only when one entry stands alone", function()
    local spec = { ['emails[type eq "work"].value'] = "work", ['emails[type eq "home"].value'] = "home",
      ['phoneNumbers[type eq "mobile"].value'] = "mobile" }
    local attrs = mapping.apply(spec, { work = "w@example.com", home = "h@example.org", mobile = "+1 555" })
    assert.same({ { type = "home", value = "h@example.org" }, { type = "work", value = "w@example.com" } },
      attrs.emails)
    assert.same({ { type = "mobile", value = "+1 555", primary = true } }, attrs.phoneNumbers)
    attrs = mapping.apply(spec, { work = "w@example.com", home = "", mobile = "" })
    assert.same({ { type = "work", value = "w@example.com", primary = true } }, attrs.emails)
  end)

  it("lets the spec set primary itself", function()
    local spec = { ['emails[type eq "work"].value'] = "work", ['emails[type eq "work"].primary'] = "is_primary" }
    assert.same({ { type = "work", value = "w@example.com", primary = false } },
      mapping.apply(spec, { work = "w@example.com", is_primary = "no" }).emails)
  end)

  it("reads active from yes/no, true/false and 1/0 columns and refuses anything else", function()
    local spec = { userName = "u", active = "enabled" }
    assert.is_true(mapping.apply(spec, { u = "a", enabled = "Yes" }).active)
    assert.is_false(mapping.apply(spec, { u = "a", enabled = "FALSE" }).active)
    assert.is_false(mapping.apply(spec, { u = "a", enabled = "0" }).active)
    local attrs, err = mapping.apply(spec, { u = "a", enabled = "maybe" })
    assert.is_nil(attrs)
    assert.matches("column 'enabled' %(mapped to active%): \"maybe\" is not a boolean", err)
  end)

  it("puts schema-URN paths under the URN", function()
    local spec = { userName = "email", [ENTERPRISE .. ":department"] = "department",
      [ENTERPRISE .. ":manager.value"] = "manager_id" }
    assert.same({ userName = "ada@example.com",
      [ENTERPRISE] = { department = "Engineering", manager = { value = "M7" } } },
      mapping.apply(spec, with(ROW, { manager_id = "M7" })))
  end)

  it("fails the row when a function returns nil, reason or raises", function()
    local attrs, err = mapping.apply({ title = function() return nil, "no title for contractors" end }, {})
    assert.is_nil(attrs)
    assert.equal("attribute 'title': no title for contractors", err)
    attrs, err = mapping.apply({ title = function(row) return row.x.y end }, {})
    assert.is_nil(attrs)
    assert.matches("attribute 'title': the mapping function failed: .*index", err)
  end)

  it("treats a function returning nil alone as no value", function()
    assert.same({ userName = "a" }, mapping.apply({ userName = "u", title = function() return nil end }, { u = "a" }))
  end)

  it("accepts a compiled spec", function()
    local compiled = mapping.compile(SPEC)
    assert.same(mapping.apply(SPEC, ROW), mapping.apply(compiled, ROW))
  end)

  describe("refuses a spec it cannot follow, naming the key", function()
    it("an unreadable path", function()
      raises(function() mapping.apply({ ["emails[type = work].value"] = "e" }, {}) end,
        "cannot read attribute path 'emails%[type = work%]%.value': a filter must read")
      raises(function() mapping.apply({ ['emails[type eq "work"]'] = "e" }, {}) end,
        "must be followed by a sub%-attribute")
      raises(function() mapping.apply({ ["name..givenName"] = "e" }, {}) end, "cannot read attribute path")
    end)
    it("a path that is both a value and a parent", function()
      raises(function() mapping.apply({ name = "full", ["name.givenName"] = "first" }, {}) end,
        "attribute 'name%.givenName' conflicts with 'name'")
      raises(function() mapping.apply({ emails = "e", ['emails[type eq "work"].value'] = "w" }, {}) end,
        "conflicts with 'emails'")
    end)
    it("a source that is neither a column name nor a function", function()
      raises(function() mapping.apply({ active = true }, {}) end,
        "attribute 'active' maps to a boolean; use a column name %(string%) or a function")
    end)
  end)
end)

describe("mapping.columns and mapping.check_columns", function()
  it("lists the source columns and catches a column the input lacks", function()
    assert.same({ "email", "employee_id", "first_name", "last_name" }, mapping.columns(SPEC))
    assert.is_true(mapping.check_columns(SPEC, { "email", "first_name", "last_name", "employee_id", "status" }))
    local ok, err = mapping.check_columns(SPEC, { "email", "firstname", "last_name", "employee_id" })
    assert.is_nil(ok)
    assert.equal("mapping for 'name.givenName' reads column 'first_name', which the input does not have "
      .. "(columns: email, firstname, last_name, employee_id)", err)
  end)
end)

describe("mapping.valid_email", function()
  it("accepts ordinary and internationalised addresses", function()
    for _, e in ipairs({ "a@b.co", "first.last+tag@sub.example.com", "o'brien@example.ie", "josé@exämple.com",
      "x_y-z@a-b.example.org" }) do
      assert.is_true(mapping.valid_email(e), e)
    end
  end)
  it("refuses what a SCIM provider would, saying why", function()
    local cases = {
      [""] = "empty", ["plain"] = "has no @", ["a@@b.co"] = "more than one @", ["a@b@c.co"] = "more than one @",
      ["@b.co"] = "nothing before", ["a@"] = "nothing after", ["a@b"] = "no dot", ["a b@c.de"] = "white space",
      [".a@b.co"] = "misplaced dot", ["a..b@c.de"] = "misplaced dot", ["a@-b.co"] = "starts or ends with %-",
      ["a@b..co"] = "empty label", ["a@b.c"] = "top%-level", ["a@b.123"] = "top%-level",
      ["a(b)@c.de"] = "invalid character before", ["a@b_c.de"] = "invalid character in the domain",
      [("x"):rep(65) .. "@b.co"] = "longer than 64",
    }
    for email, why in pairs(cases) do
      local ok, reason = mapping.valid_email(email)
      assert.is_false(ok, email)
      assert.matches(why, reason, 1, false, email)
    end
    assert.is_false((mapping.valid_email(42)))
  end)
end)

describe("mapping over the example data", function()
  local spec = {
    userName = "userName",
    displayName = "display_name",
    ["name.givenName"] = "first_name",
    ["name.familyName"] = "last_name",
    ['emails[type eq "work"].value'] = "email",
    title = "title",
    externalId = "employee_id",
    active = function(row) return row.status ~= "terminated" end,
    [ENTERPRISE .. ":department"] = "department",
  }

  it("maps all 300 users of users.csv", function()
    local reader = csv.open("examples/data/users.csv")
    assert.is_true(mapping.check_columns(spec, reader.columns))
    local n = 0
    for row, info in reader.next do
      assert.is_truthy(row, info.error)
      local attrs, err = mapping.apply(spec, row)
      assert.is_truthy(attrs, err)
      assert.equal(row.email, attrs.emails[1].value)
      n = n + 1
    end
    assert.equal(300, n)
  end)

  it("rejects the invalid email of users_bad.csv line 4 and accepts the other good rows", function()
    local results = {}
    for row, info in csv.rows("examples/data/users_bad.csv", { required = { "userName", "email" } }) do
      if row then
        local attrs, err = mapping.apply(spec, row)
        results[#results + 1] = { line = info.line, ok = attrs ~= nil, err = err }
      end
    end
    assert.same({ 2, 4, 6 }, { results[1].line, results[2].line, results[3].line })
    assert.same({ true, false, true }, { results[1].ok, results[2].ok, results[3].ok })
    assert.matches("column 'email'.*\"alan%.turing@\" is not a valid email address", results[2].err)
  end)
end)
