-- Filter escaping and URL encoding (RFC 7644 §3.4.2.2): a value can never change a filter's meaning.
local filter = require "scimrun.scim.filter"
local cjson = require "cjson"

describe("scim filter", function()
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

  it("builds the remove-by-filter member path", function()
    assert.equal('members[value eq "2819c223"]', filter.value_path("members", "2819c223"))
    assert.equal('members[value eq "a\\"]"]', filter.value_path("members", 'a"]'))
  end)

  it("percent-encodes everything outside the unreserved set", function()
    assert.equal("userName%20eq%20%22a%2Bb%26c%3Dd%23e%25%22",
                 filter.urlencode('userName eq "a+b&c=d#e%"'))
    assert.equal("AZaz09-._~", filter.urlencode("AZaz09-._~"))
    assert.equal("%C3%A9", filter.urlencode("é"))
    assert.equal("?filter=userName%20eq%20%22x%22&count=10",
                 filter.query { { "filter", 'userName eq "x"' }, { "skipped", nil }, { "count", 10 } })
    assert.equal("", filter.query {})
    assert.equal("a%2Fb%3Fc", filter.segment("a/b?c"))
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
  end)
end)
