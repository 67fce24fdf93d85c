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

  it("reads paths as RFC 7644 writes them (scimrun.protocol.path)", function()
    -- a core schema's URN names the User's own attribute; a filter value is a JSON string
    assert.same({ userName = "ada@example.com",
      phoneNumbers = { { type = 'mobile "eu"', value = "+33", primary = true } } },
      mapping.apply({ ["urn:ietf:params:scim:schemas:core:2.0:User:userName"] = "email",
        ['phoneNumbers[type EQ "mobile \\"eu\\""].value'] = "phone" }, with(ROW, { phone = "+33" })))
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
      raises(function() mapping.apply({ ["name.givenName.first"] = "e" }, {}) end,
        "cannot read attribute path 'name%.givenName%.first': 'name%.givenName%.first' is not an attribute path")
      raises(function() mapping.apply({ ['emails[type eq "work" or type eq "home"].value'] = "e" }, {}) end,
        'a filter must read %[attr eq "value"%]')
    end)
    it("a path that is both a value and a parent", function()
      raises(function() mapping.apply({ name = "full", ["name.givenName"] = "first" }, {}) end,
        "attribute 'name%.givenName' conflicts with 'name'")
      raises(function() mapping.apply({ emails = "e", ['emails[type eq "work"].value'] = "w" }, {}) end,
        "conflicts with 'emails'")
    end)
    it("a source that is neither a column name nor a function", function()
      raises(function() mapping.apply({ active = true }, {}) end,
        "attribute 'active': maps to a boolean; use a column name %(string%), a function%(row%), or a table such "
        .. "as { from = \"column\" } or { const = true }")
    end)
  end)
end)

describe("mapping.columns and mapping.check_columns", function()
  it("lists the source columns and catches a column the input lacks", function()
    assert.same({ "email", "employee_id", "first_name", "last_name" }, mapping.columns(SPEC))
    assert.is_true(mapping.check_columns(SPEC, { "email", "first_name", "last_name", "employee_id", "status" }))
    -- names match ignoring case, white space and punctuation
    assert.is_true(mapping.check_columns(SPEC, { "Email", "First Name", "LAST_NAME", "employeeId" }))
    local ok, err = mapping.check_columns(SPEC, { "email", "fname", "last_name", "employee_id" })
    assert.is_nil(ok)
    assert.equal("mapping for 'name.givenName' reads column 'first_name', which the input does not have "
      .. "(columns: email, fname, last_name, employee_id)", err)
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
  it("answers as the full rule-by-rule check does, for addresses made of the characters that matter", function()
    local full = require("scimrun.mapping.email").full_check
    local parts = { "a", "b", "Z", "9", "ab", "com", ".", "-", "_", "+", "@", " ", "\195\169", "(",
                    "x" .. ("y"):rep(62), "co", "1" }
    local rng = 12345
    local function pick()
      rng = (rng * 1103515245 + 12345) % 2147483648
      return parts[rng % #parts + 1]
    end
    local checked, valid = 0, 0
    local function run(n)
      local t = {}
      for i = 1, n do t[i] = pick() end
      return table.concat(t)
    end
    for _ = 1, 20000 do
      -- LOCAL@DOMAIN.TLD from random pieces (so many are valid), some with a stray piece after
      local s = run(1 + rng % 3) .. "@" .. run(1 + rng % 2) .. "." .. run(1 + rng % 2)
      if rng % 5 == 0 then s = s .. pick() end
      local ok, why = mapping.valid_email(s)
      local ok2, why2 = full(s)
      assert.are.same({ ok2, why2 }, { ok, why }, s)
      checked, valid = checked + 1, valid + (ok and 1 or 0)
    end
    assert.is_true(valid > 100, "too few valid addresses generated: " .. valid) -- the fast path ran
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

-- ---- mapping as data: sources with transforms, files, plans against a header --------------

local proc = require "helpers.proc"
local dir = proc.tmpdir("mapping-unit")
teardown(function() os.execute("rm -rf '" .. dir .. "'") end)

local function write(name, text) return proc.write(dir .. "/" .. name, text) end

-- The error a call raises (an error table of class config or input).
local function raised(fn)
  local ok, err = pcall(fn)
  assert.is_false(ok, "expected an error")
  return err
end

local WORK = mapping.WORK_EMAIL

describe("sources with transforms", function()
  it("lower, upper, trim (default) and trim = false", function()
    local spec = { userName = { from = "login", lower = true }, title = { from = "t", upper = true },
      nickName = { from = "nick", trim = false } }
    assert.same({ userName = "ada.l", title = "ANALYST", nickName = "  Ada " },
      mapping.apply(spec, { login = "  Ada.L ", t = "analyst", nick = "  Ada " }))
  end)

  it("default: a value or another source, used when the value is empty or absent", function()
    local spec = { userName = "u", [ENTERPRISE .. ":department"] = { from = "dept", default = "none" },
      displayName = { from = "dn", default = { concat = { "first", " ", "last" } } } }
    assert.same({ userName = "a", displayName = "Ada Lovelace", [ENTERPRISE] = { department = "none" } },
      mapping.apply(spec, { u = "a", dept = "  ", first = "Ada", last = "Lovelace" }))
    assert.same({ userName = "a", displayName = "Countess", [ENTERPRISE] = { department = "R&D" } },
      mapping.apply(spec, { u = "a", dept = "R&D", dn = "Countess", first = "Ada", last = "Lovelace" }))
  end)

  it("concat: columns and literal text; empty when every column is empty", function()
    local spec = { userName = "u", displayName = { concat = { "last", ", ", "first" } },
      ['emails[type eq "home"].value'] = { concat = { { from = "first", lower = true }, ".",
        { from = "last", lower = true }, "@example.org" } },
      nickName = { concat = { { const = "Dr" }, " ", { from = "Last Name" } } } }
    assert.same({ userName = "a", displayName = "Lovelace, Ada", nickName = "Dr Byron",
      emails = { { type = "home", value = "ada.lovelace@example.org", primary = true } } },
      mapping.apply(spec, { u = "a", first = "Ada", last = "Lovelace", ["Last Name"] = "Byron" }))
    -- a column part that is empty adds nothing; the literal text stays (then trimmed)
    local attrs, err = mapping.apply(spec, { u = "a", first = "", last = "Lovelace" })
    assert.is_nil(attrs)
    assert.matches('attribute \'emails%[type eq "home"%]%.value\': "%.lovelace@example%.org" is not a valid email', err)
    local names = { userName = "u", displayName = { concat = { "first", " ", "last" } } }
    assert.same({ userName = "a", displayName = "Lovelace" }, mapping.apply(names, { u = "a", last = "Lovelace" }))
    assert.same({ userName = "a" }, mapping.apply(names, { u = "a", first = " ", last = "" }))
  end)

  it("const: a string, number or boolean, whatever the row holds", function()
    assert.same({ userName = "a", userType = "Employee", active = false },
      mapping.apply({ userName = "u", userType = { const = "Employee" }, active = { const = false } }, { u = "a" }))
  end)

  it("map: exact, then case-insensitive, then '*'; other values pass through", function()
    local spec = { userName = "u", active = { from = "status", map = { terminated = false, ["*"] = true } },
      userType = { from = "kind", map = { FTE = "Employee", contractor = "Contractor" } } }
    assert.is_false(mapping.apply(spec, { u = "a", status = "Terminated" }).active)
    assert.is_true(mapping.apply(spec, { u = "a", status = "on leave" }).active)
    assert.equal("Employee", mapping.apply(spec, { u = "a", kind = "FTE" }).userType)
    assert.equal("Contractor", mapping.apply(spec, { u = "a", kind = "CONTRACTOR" }).userType)
    assert.equal("Intern", mapping.apply(spec, { u = "a", kind = "Intern" }).userType)
  end)

  it("fn(value, row): called when there is a value; nil, reason fails the row", function()
    local calls = 0
    local spec = { userName = "u", ['phoneNumbers[type eq "work"].value'] = { from = "phone", fn = function(v, row)
      calls = calls + 1
      assert(row.u)
      local d = v:gsub("[^%d+]", "")
      if #d < 4 then return nil, "too short" end
      return d
    end }, title = { fn = function(_, row) return row.u .. "-title" end } }
    assert.equal("+4420", mapping.apply(spec, { u = "a", phone = "+44 (20)" }).phoneNumbers[1].value)
    assert.same({ userName = "a", title = "a-title" }, mapping.apply(spec, { u = "a", phone = "" }))
    assert.equal(1, calls)
    local attrs, err = mapping.apply(spec, { u = "a", phone = "12" })
    assert.is_nil(attrs)
    assert.equal("attribute 'phoneNumbers[type eq \"work\"].value': too short", err)
  end)

  it("required: names the column that is empty or missing", function()
    local spec = { userName = { from = { "userName", "login" }, required = true }, [WORK] = "email" }
    assert.same({ nil, "required column 'login' is empty" }, { mapping.apply(spec, { login = " ", email = "" }) })
    assert.same({ nil, "required column 'userName' is missing" }, { mapping.apply(spec, { email = "a@b.co" }) })
  end)

  it("from a list: the first name the row has, matched ignoring case, spaces and punctuation", function()
    local spec = { ["name.givenName"] = { from = { "givenName", "first_name" } } }
    assert.equal("A", mapping.apply(spec, { first_name = "B", givenName = "A" }).name.givenName)
    assert.equal("B", mapping.apply(spec, { ["First Name"] = "B" }).name.givenName)
    assert.equal("C", mapping.apply(spec, { GIVEN_NAME = "C", first_name = "B" }).name.givenName)
  end)
end)

describe("mapping.load", function()
  it("nil, \"\" and \"default\" give the default mapping", function()
    local d = mapping.load(nil)
    assert.equal(d, mapping.load(""))
    assert.equal(d, mapping.load("default"))
    assert.equal("the default mapping", d.source)
  end)

  it("the default mapping takes SCIM attribute names as headers", function()
    local row = { userName = "ada", givenName = "Ada", familyName = "Lovelace", email = "ada@example.com",
      department = "Engineering", manager = "m-1", phoneNumber = "+1 555", externalId = "E1", title = "Analyst",
      active = "false" }
    assert.same({
      userName = "ada", externalId = "E1", title = "Analyst", active = false, displayName = "Ada Lovelace",
      name = { givenName = "Ada", familyName = "Lovelace" },
      emails = { { type = "work", value = "ada@example.com", primary = true } },
      phoneNumbers = { { type = "work", value = "+1 555", primary = true } },
      [ENTERPRISE] = { department = "Engineering", manager = { value = "m-1" } },
    }, mapping.apply(mapping.load(), row))
    local dotted = mapping.apply(mapping.load(), { userName = "ada", ["name.givenName"] = "Ada",
      ["name.familyName"] = "L", emails = "ada@example.com" })
    assert.same({ givenName = "Ada", familyName = "L" }, dotted.name)
    assert.equal("ada@example.com", dotted.emails[1].value)
  end)

  it("the default mapping takes users.csv's snake_case names as the example did", function()
    local row = { userName = "Patrick.OBrien", email = "patrick.obrien@example.com", first_name = "Patrick",
      last_name = 'O"Brien', display_name = 'Patrick "Paddy" O"Brien', department = "Sales",
      title = "Account Executive", employee_id = "E100001", status = "terminated" }
    assert.same({
      userName = "Patrick.OBrien", displayName = 'Patrick "Paddy" O"Brien', title = "Account Executive",
      externalId = "E100001", active = false, name = { givenName = "Patrick", familyName = 'O"Brien' },
      emails = { { type = "work", value = "patrick.obrien@example.com", primary = true } },
      [ENTERPRISE] = { department = "Sales" },
    }, mapping.apply(mapping.load(), row))
    row.status = "active"
    assert.is_true(mapping.apply(mapping.load(), row).active)
    row.status = "on_leave" -- any status but a leaver's is active, as the example's function had it
    assert.is_true(mapping.apply(mapping.load(), row).active)
    row.active = "no" -- an active column comes first
    assert.is_false(mapping.apply(mapping.load(), row).active)
    row.active = nil
    row.status = nil
    assert.is_true(mapping.apply(mapping.load(), row).active) -- no status column: active
  end)

  it("require marks attributes required without changing the loaded spec", function()
    local spec = mapping.load(nil, { require = { "userName", WORK } })
    assert.same({ nil, "required column 'email' is missing" }, { mapping.apply(spec, { userName = "a" }) })
    assert.is_table(mapping.apply(mapping.load(), { userName = "a" }))
    local err = raised(function() mapping.load(write("no-user.lua", "return { title = 't' }"),
      { require = { "userName" } }) end)
    assert.equal("config", err.class)
    assert.matches("invalid mapping .*/no%-user%.lua: it gives no value for userName, which this workflow requires",
      err.detail)
  end)

  it("a Lua file with every transform, extending the default", function()
    local path = write("full.lua", [[
local ENT = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
return {
  extends = "default",
  attributes = {
    userName = { from = "Login", lower = true },
    displayName = { concat = { "First", " ", "Last" } },
    [ENT .. ":department"] = { from = "Dept", default = "none" },
    userType = { const = "Employee" },
    title = { from = "Job", trim = false },
    nickName = function(row) return row.First:sub(1, 1) .. "." end,
    ['phoneNumbers[type eq "work"].value'] = false,
  },
  ignore = { "Notes" },
}
]])
    local spec = mapping.load(path)
    assert.equal(path, spec.source)
    assert.same({
      userName = "ada", displayName = "Ada Lovelace", userType = "Employee", title = " Analyst ",
      nickName = "A.", active = true, name = { givenName = "Ada" },
      [ENTERPRISE] = { department = "none" },
    }, mapping.apply(spec, { Login = "ADA", First = "Ada", Last = "Lovelace", Dept = "", Job = " Analyst ",
      givenName = "Ada", phone = "+1 555", Notes = "x" }))
    local plan = mapping.plan(spec, { "Login", "First", "Last", "Dept", "Job", "phone", "Notes" })
    assert.same({ "phone" }, plan.unmapped) -- the dropped attribute's column goes nowhere
    assert.same({ "Notes" }, plan.ignored)
  end)

  it("a JSON file with every data transform", function()
    local path = write("full.json", [[
{
  "attributes": {
    "userName": { "from": ["login", "userName"], "lower": true, "required": true },
    "displayName": { "concat": ["first", " ", "last"] },
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department": { "from": "dept", "default": "none" },
    "userType": { "const": "Employee" },
    "title": { "from": "job", "trim": false },
    "active": { "from": "status", "map": { "leaver": false, "*": true } },
    "emails[type eq \"work\"].value": { "from": "mail", "lower": true }
  },
  "ignore": ["notes"]
}
]])
    assert.same({
      userName = "ada", displayName = "Ada Lovelace", userType = "Employee", title = " Analyst ", active = false,
      emails = { { type = "work", value = "ada@example.com", primary = true } },
      [ENTERPRISE] = { department = "none" },
    }, mapping.apply(mapping.load(path), { login = "ADA", first = "Ada", last = "Lovelace", dept = " ",
      job = " Analyst ", status = "Leaver", mail = "Ada@Example.com", notes = "x" }))
  end)

  it("a plain table file (no attributes key) is the attribute table itself", function()
    local spec = mapping.load(write("plain.lua", 'return { userName = "login", title = { const = "x" } }'))
    assert.same({ userName = "a", title = "x" }, mapping.apply(spec, { login = "a" }))
    local j = mapping.load(write("plain.json", '{ "userName": "login", "externalId": "id" }'))
    assert.same({ userName = "a", externalId = "7" }, mapping.apply(j, { login = "a", id = "7" }))
  end)

  it("the shipped example mappings load and agree on the sample export", function()
    local reader = csv.open("examples/data/hr_export.csv")
    local lua_plan = mapping.plan(mapping.load("examples/mappings/hr_export.lua"), reader.columns)
    local json_plan = mapping.plan(mapping.load("examples/mappings/hr_export.json"), reader.columns)
    assert.same({}, lua_plan.unmapped)
    assert.same({ "Notes" }, lua_plan.ignored)
    for row in reader.next do
      local a, err = mapping.apply(lua_plan, row)
      local b, err2 = mapping.apply(json_plan, row)
      assert.is_table(a, err)
      assert.is_table(b, err2)
      a.phoneNumbers, b.phoneNumbers = nil, nil -- only the Lua one normalises numbers (a function)
      assert.same(a, b)
    end
  end)

  describe("a bad mapping file: a config error naming the file and the key", function()
    local function bad(name, text, pattern)
      local path = write(name, text)
      local err = raised(function() mapping.load(path) end)
      assert.equal("config", err.class)
      assert.equal(path, err.file)
      assert.matches("invalid mapping " .. path:gsub("%p", "%%%0") .. ": " .. pattern, err.detail)
      assert.is_string(err.suggest)
      return err
    end

    it("unknown keys, with did-you-mean", function()
      local err = bad("k1.lua", 'return { attributes = { userName = { fro = "x" } } }',
        "attribute 'userName': unknown key 'fro' %(did you mean 'from'%?%)")
      assert.equal("attribute 'userName'", err.key)
      bad("k2.json", '{ "atributes": { "userName": "x" } }', "atributes: unknown key %(did you mean 'attributes'%?%)")
      bad("k3.lua", 'return { extends = "default", attribute = {} }',
        "attribute: unknown key %(did you mean 'attributes'%?%)")
      bad("k4.json", '{ "title": { "from": "t", "lowercase": true } }', "attribute 'title': unknown key 'lowercase'")
    end)

    it("wrong types and impossible combinations", function()
      bad("t1.json", '{ "title": { "from": "t", "lower": "yes" } }', "attribute 'title'%.lower: expected true or false")
      bad("t2.json", '{ "title": { "from": "t", "const": "x" } }',
        "attribute 'title': give one of from, concat and const")
      bad("t3.json", '{ "title": { "concat": [" ", "-"] } }', "attribute 'title'%.concat: no part reads a column")
      bad("t4.json", '{ "title": { "const": [1] } }', "attribute 'title'%.const: expected a string, number or boolean")
      bad("t5.json", '{ "title": { "lower": true } }', "attribute 'title': a source needs one of from, concat")
      bad("t6.json", '{ "title": 5 }', "attribute 'title': maps to a number")
      bad("t7.json", '{ "title": false }', "attribute 'title': maps to false, which drops an attribute")
      bad("t8.lua", 'return { extends = "default", attributes = { nosuch = false } }',
        "attribute 'nosuch': is set to false but the mapping it extends %(default%) has no such attribute")
      bad("t9.json", '{ "title": { "from": "t", "fn": "string.upper" } }', "attribute 'title'%.fn: expected a function")
      bad("t10.lua", 'return { title = { from = "t", default = { from = "u", required = true } } }',
        "attribute 'title'%.default%.required: required applies to an attribute")
    end)

    it("attribute paths that are not SCIM User attributes", function()
      bad("p1.json", '{ "givenName": "first" }',
        "attribute 'givenName': 'givenName' is not an attribute of the SCIM User schema %(did you mean "
        .. "'name%.givenName'%?%)")
      bad("p2.json", '{ "department": "d" }',
        "attribute 'department': .*did you mean 'urn:ietf:params:scim:schemas:extension:enterprise:2%.0:User:"
        .. "department'")
      bad("p3.json", '{ "usrName": "u" }', "attribute 'usrName': .*did you mean 'userName'")
      bad("p4.json", '{ "groups": "g" }', "attribute 'groups': 'groups' is set by the provider")
      bad("p5.json", '{ "emails[type = work].value": "e" }', "cannot read attribute path")
      bad("p6.json", '{ "name": "n", "name.givenName": "g" }', "attribute 'name%.givenName' conflicts with 'name'")
    end)

    it("files that are not a mapping", function()
      bad("s1.lua", "return {", "syntax error: line 1: unexpected symbol near '<eof>'")
      bad("s2.lua", "return 42", "the file must return a table, it returned number")
      bad("s3.lua", 'local f = io.open("/etc/passwd") return {}',
        "line 1: 'io' is not available in a mapping file %(allowed: math")
      bad("s4.lua", "x = 1 return {}", "line 1: mapping files may not set globals")
      bad("s5.json", '{ "userName": "u",\n  "title": }', "not valid JSON: .*%(line 2, column %d+%)")
      bad("s6.json", '"text"', "the file must hold a table")
      bad("s7.lua", 'return { extends = "s7.lua" }', "extends: extends itself")
      local err = raised(function() mapping.load(dir .. "/absent.json") end)
      assert.matches("invalid mapping .*/absent%.json: cannot read the mapping file: No such file", err.detail)
    end)
  end)

  it("a Lua mapping function that runs away is stopped", function()
    local spec = mapping.load(write("loop.lua", "return { userName = 'u', title = function() while true do end end }"))
    local attrs, err = mapping.apply(spec, { u = "a" })
    assert.is_nil(attrs)
    assert.matches("attribute 'title': the mapping function failed: .*CPU", err)
  end)
end)

describe("mapping.plan against a header", function()
  local spec = mapping.load(nil, { require = { "userName", WORK } })

  it("SCIM-named headers: each column and its attributes, unmapped columns named", function()
    local plan = mapping.plan(spec, { "userName", "givenName", "familyName", "email", "department", "notes", "cost" },
      { file = "in.csv" })
    assert.same({
      { column = "userName", attributes = { "userName" } },
      { column = "givenName", attributes = { "name.givenName", "displayName (fallback)" } },
      { column = "familyName", attributes = { "name.familyName", "displayName (fallback)" } },
      { column = "email", attributes = { WORK } },
      { column = "department", attributes = { ENTERPRISE .. ":department" } },
    }, plan.mapped)
    assert.same({ "notes", "cost" }, plan.unmapped)
    assert.same({}, plan.missing_required)
    assert.same({ { attribute = "active", how = "default true" } }, plan.computed)
    local d = mapping.describe_plan(plan)
    assert.matches("^input columns %-> SCIM attributes %(the default mapping%): userName %-> userName; givenName %-> "
      .. "name%.givenName, displayName %(fallback%);", d.info)
    assert.matches("active = default true", d.info)
    assert.matches("2 input column%(s%) mapped to nothing, their values are not sent: notes, cost", d.warn[1])
  end)

  it("a column another name already supplies is unmapped, saying why", function()
    local plan = mapping.plan(spec, { "userName", "email", "first_name", "GivenName" })
    assert.same({ "first_name" }, plan.unmapped)
    assert.equal("name.givenName comes from 'GivenName'", plan.why_unmapped.first_name)
  end)

  it("opts.ignore and the file's ignore silence columns", function()
    local plan = mapping.plan(spec, { "group", "userName", "email" }, { ignore = { "Group" } })
    assert.same({}, plan.unmapped)
    assert.same({ "group" }, plan.ignored)
  end)

  it("missing required columns stop at assert_header: one line naming the file, column and fix", function()
    local plan = mapping.plan(spec, { "userName", "title" }, { file = "people.csv" })
    assert.same({ { attribute = WORK, column = "email", accepted = { "email", "emails", WORK } } },
      plan.missing_required)
    local err = raised(function() mapping.assert_header(plan) end)
    assert.equal("input", err.class)
    assert.equal("people.csv: required column 'email' is not in the header (columns: userName, title); the "
      .. "default mapping reads email for emails[type eq \"work\"].value (also accepted: emails, " .. WORK .. ")",
      err.detail)
    assert.matches("fix the input file %(add the column%), or name the column holding it in a mapping file given "
      .. "with %-%-param mapping=FILE", err.suggest)
    assert.is_nil(err.detail:find("\n"))
    err = raised(function() mapping.prepare(spec, { "title" }, { file = "p.csv" }) end)
    assert.matches("required columns 'email', 'userName' are not in the header", err.detail)
  end)

  it("a mapping file's own column that the header lacks is warned about", function()
    local s = mapping.load(write("own.lua",
      'return { extends = "default", attributes = { title = { from = "job" } } }'))
    local plan = mapping.plan(s, { "userName" })
    assert.same({ { attribute = "title", column = "job", accepted = { "job" } } }, plan.missing)
    assert.matches("the mapping reads column%(s%) the input does not have.*title <%- job",
      mapping.describe_plan(plan).warn[1])
  end)

  it("log_plan writes info then warnings through the given logger", function()
    local got = {}
    mapping.prepare(spec, { "userName", "email", "x" }, { file = "f.csv", log = function(level, msg, fields)
      got[#got + 1] = { level, msg, fields.file }
    end })
    assert.equal(2, #got)
    assert.same({ "info", "f.csv" }, { got[1][1], got[1][3] })
    assert.same({ "warn", "f.csv" }, { got[2][1], got[2][3] })
    assert.matches(": x;", got[2][2])
  end)

  it("a plan binds columns once; apply with it matches apply with the spec", function()
    local reader = csv.open("examples/data/users.csv")
    local plan = mapping.plan(spec, reader.columns)
    assert.same({}, plan.unmapped)
    for row in reader.next do assert.same(mapping.apply(spec, row), mapping.apply(plan, row)) end
  end)

  it("select keeps only the attributes a workflow reads", function()
    local only = mapping.select(spec, { "userName" })
    assert.same({ userName = "a" }, mapping.apply(only, { userName = "a", email = "bad", department = "x" }))
    local plan = mapping.plan(only, { "userName", "email" })
    assert.same({ "email" }, plan.unmapped)
  end)
end)

describe("mapping.check_rows (preflight)", function()
  it("lists every bad row as file, line and reason, duplicates included", function()
    local path = write("pre.csv", table.concat({
      "userName,email,externalId",
      "ada,ada@example.com,E1",
      "grace,,E2",
      "ADA,ada2@example.com,E3",
      "alan,alan@,E4",
      "bob,bob@example.com",
      "carl,carl@example.com,E1",
      "dora,dora@example.com,",
    }, "\n") .. "\n")
    local spec = mapping.load(nil, { require = { "userName", WORK } })
    local reader = csv.open(path)
    local plan = mapping.plan(spec, reader.columns, { file = path })
    local r = mapping.check_rows(plan, reader.next)
    assert.equal(7, r.rows)
    assert.equal(2, r.valid)
    local lines = {}
    for _, b in ipairs(r.bad) do
      assert.equal(path, b.file)
      lines[#lines + 1] = b.line .. ": " .. b.reason
    end
    assert.same({
      "3: required column 'email' is empty",
      "4: duplicate userName 'ADA' (first on line 2)",
      "5: column 'email' (mapped to emails[type eq \"work\"].value): \"alan@\" is not a valid email address "
        .. "(nothing after the @)",
      "6: expected 3 fields (userName,email,externalId), got 2",
      "7: duplicate externalId 'E1' (first on line 2)",
    }, lines)
  end)
end)
