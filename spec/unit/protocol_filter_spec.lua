-- SCIM filters (RFC 7644 section 3.4.2.2): parsed and evaluated (the sandbox), built and quoted
-- (the client): a value can never change a filter's meaning.
local filter = require "scimrun.protocol.filter"
local cjson = require "cjson"
local json = require "scimrun.sandbox.json"

local A = json.array

local alice = {
  schemas = A({ "urn:ietf:params:scim:schemas:core:2.0:User" }),
  id = "2819c223-7f76-453a-919d-413861904646",
  externalId = "AbC-1",
  userName = "Alice.Smith@Example.com",
  name = { familyName = "Smith", givenName = "Alice" },
  active = true,
  emails = A({ { value = "alice@work.example", type = "work", primary = true },
    { value = "alice@home.example", type = "home" } }),
  title = "Senior Engineer",
  ["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"] = { employeeNumber = "701984", department = "R&D" },
  meta = { lastModified = "2024-05-13T04:42:34Z" },
  logins = 12,
}

local function match(text)
  local ast, err = filter.parse(text)
  assert(ast, err)
  return filter.matches(ast, alice)
end

describe("protocol filter", function()
  it("compares userName case-insensitively and id case-sensitively", function()
    assert.is_true(match('userName eq "alice.smith@example.com"'))
    assert.is_true(match('USERNAME EQ "ALICE.SMITH@EXAMPLE.COM"'))
    assert.is_false(match('id eq "2819C223-7F76-453A-919D-413861904646"'))
    assert.is_true(match('id eq "2819c223-7f76-453a-919d-413861904646"'))
    assert.is_false(match('externalId eq "abc-1"'))
  end)

  it("supports every comparison operator", function()
    assert.is_true(match('userName co "smith@"'))
    assert.is_true(match('userName sw "alice."'))
    assert.is_true(match('userName ew ".COM"'))
    assert.is_false(match('userName sw "smith"'))
    assert.is_true(match('userName ne "bob"'))
    assert.is_false(match('userName ne "alice.smith@example.com"'))
    assert.is_true(match('meta.lastModified gt "2024-01-01T00:00:00Z"'))
    assert.is_false(match('meta.lastModified lt "2024-01-01T00:00:00Z"'))
    assert.is_true(match("logins ge 12"))
    assert.is_false(match("logins gt 12"))
    assert.is_true(match("logins le 12 and logins lt 13"))
  end)

  it("tests presence with pr", function()
    assert.is_true(match("title pr"))
    assert.is_false(match("nickName pr"))
    assert.is_true(match("emails pr"))
  end)

  it("matches booleans as JSON literals", function()
    assert.is_true(match("active eq true"))
    assert.is_false(match("active eq false"))
  end)

  it("reads sub-attributes of single and multi-valued attributes", function()
    assert.is_true(match('name.familyName eq "SMITH"'))
    assert.is_true(match('emails.value eq "alice@home.example"'))
    assert.is_false(match('emails.value eq "bob@home.example"'))
    assert.is_true(match('emails.type eq "work"'))
  end)

  it("evaluates value filters on multi-valued attributes", function()
    assert.is_true(match('emails[type eq "work" and value co "@work"]'))
    assert.is_false(match('emails[type eq "home" and value co "@work"]'))
    assert.is_true(match("emails[primary eq true]"))
  end)

  it("applies precedence: not over and over or, parentheses override", function()
    assert.is_true(match('userName eq "x" or title pr and active eq true'))
    assert.is_false(match('(userName eq "x" or title pr) and active eq false'))
    assert.is_true(match('not (userName eq "x")'))
    assert.is_false(match('not (title pr) or userName eq "x"'))
  end)

  it("reads extension attributes through their URN", function()
    assert.is_true(match('urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber eq "701984"'))
    assert.is_true(match('urn:ietf:params:scim:schemas:core:2.0:User:userName sw "alice"'))
    assert.is_false(match('urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq "sales"'))
  end)

  it("unescapes quoted strings", function()
    local o = { displayName = 'He said "hi"\\ok' }
    assert.is_true(filter.matches(assert(filter.parse([[displayName eq "He said \"hi\"\\ok"]])), o))
    assert.is_true(filter.matches(assert(filter.parse([[displayName sw "He said \u0022"]])), o))
  end)

  it("compares a caseExact sub-attribute exactly inside a value filter", function()
    local g = { members = A({ { value = "AbC", display = "Ann" } }) }
    assert.is_false(filter.matches(assert(filter.parse('members[value eq "abc"]')), g))
    assert.is_true(filter.matches(assert(filter.parse('members[value eq "AbC" and display eq "ANN"]')), g))
    assert.is_false(filter.matches(assert(filter.parse('value eq "abc"')), g.members[1], "members"))
    assert.is_true(filter.matches(assert(filter.parse('value eq "abc"')), g.members[1]))
  end)

  it("treats eq null as absent", function()
    assert.is_true(match("nickName eq null"))
    assert.is_false(match("title eq null"))
  end)

  it("rejects malformed filters with the offset of the problem", function()
    local cases = {
      { 'userName eq', "expected a value" },
      { 'userName xx "a"', "unknown operator 'xx'" },
      { 'userName eq "a" and', "expected an expression" },
      { '(userName eq "a"', "expected '%)'" },
      { 'userName eq "a" extra', "unexpected 'extra'" },
      { 'userName eq "unterminated', "unterminated string" },
      { 'active gt true', "cannot compare booleans" },
      { 'userName co 5', "needs a quoted string" },
      { '', "empty filter" },
      { 'emails[type eq "work"', "expected '%]'" },
    }
    for _, c in ipairs(cases) do
      local ast, err = filter.parse(c[1])
      assert.is_nil(ast, c[1])
      assert.matches(c[2], err)
    end
  end)

  it("quotes values as JSON string literals", function()
    assert.equal('userName eq "alice@example.com"', filter.eq("userName", "alice@example.com"))
    assert.equal([[userName eq "a\"b"]], filter.eq("userName", 'a"b'))
    assert.equal([[userName eq "back\\slash"]], filter.eq("userName", [[back\slash]]))
    assert.equal([[displayName eq "tab\there\nnl\u0001"]], filter.eq("displayName", "tab\there\nnl\1"))
  end)

  it("keeps an injection attempt inside one literal that decodes back to the input", function()
    local evil = [[x" or userName pr or userName eq "y\]]
    local expr = filter.eq("userName", evil)
    local literal = expr:match("^userName eq (.*)$")
    assert.equal(evil, cjson.decode(literal))
  end)

  it("formats booleans and numbers as literals", function()
    assert.equal("active eq false", filter.eq("active", false))
    assert.equal("active eq true", filter.eq("active", true))
    assert.equal("employeeNumber eq 42", filter.eq("employeeNumber", 42))
    assert.has_error(function() filter.eq("x", 0 / 0) end)
    assert.has_error(function() filter.eq("x", {}) end)
  end)

  it("refuses attribute names that could smuggle syntax", function()
    assert.has_error(function() filter.eq('userName pr or x', "v") end)
    assert.has_error(function() filter.eq("", "v") end)
    assert.has_error(function() filter.value_path("members]", "v") end)
    assert.equal('emails.value eq "a@b"', filter.eq("emails.value", "a@b"))
    local urn = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber"
    assert.equal(urn .. ' eq "7"', filter.eq(urn, "7"))
  end)

  it("reads back every filter it builds with the value it was given", function()
    for _, v in ipairs({ 'a"b', [[back\slash]], "tab\there\1", [[x" or userName pr or userName eq "y\]], "é" }) do
      local f = assert(filter.parse(filter.eq("displayName", v)))
      assert.equal(v, f.value)
      assert.is_true(filter.matches(f, { displayName = v }))
      local p = assert(require("scimrun.protocol.path").parse(filter.value_path("members", v)))
      assert.is_true(filter.matches(p.filter, { value = v }, p.attr))
    end
  end)

  it("builds the remove-by-filter member path", function()
    assert.equal('members[value eq "2819c223"]', filter.value_path("members", "2819c223"))
    assert.equal('members[value eq "a\\"]"]', filter.value_path("members", 'a"]'))
  end)

  it("tells a filter expression from a bare value", function()
    assert.is_true(filter.looks_like_filter('userName eq "bob"'))
    assert.is_true(filter.looks_like_filter("active eq true"))
    assert.is_true(filter.looks_like_filter("title pr"))
    assert.is_true(filter.looks_like_filter('(emails.value co "@x")'))
    assert.is_false(filter.looks_like_filter("bob@example.com"))
    assert.is_false(filter.looks_like_filter("Bob le Grand"))
    assert.is_false(filter.looks_like_filter("Ann Eq Smith"))
    assert.is_false(filter.looks_like_filter(42))
    assert.is_false(filter.looks_like_filter("Smith pr Jones"))
    assert.is_true(filter.looks_like_filter('title pr and userName eq "x" & y'))
    assert.is_true(filter.looks_like_filter(
      "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:costCenter eq 7"))
  end)
end)
