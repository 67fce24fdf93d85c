-- URL encoding of the client's query strings and path segments.
local url = require "scimrun.scim.url"

describe("scim url", function()
  it("percent-encodes everything outside the unreserved set", function()
    assert.equal("userName%20eq%20%22a%2Bb%26c%3Dd%23e%25%22",
                 url.urlencode('userName eq "a+b&c=d#e%"'))
    assert.equal("AZaz09-._~", url.urlencode("AZaz09-._~"))
    assert.equal("%C3%A9", url.urlencode("é"))
    assert.equal("?filter=userName%20eq%20%22x%22&count=10",
                 url.query { { "filter", 'userName eq "x"' }, { "skipped", nil }, { "count", 10 } })
    assert.equal("", url.query {})
    assert.equal("a%2Fb%3Fc", url.segment("a/b?c"))
  end)
end)
