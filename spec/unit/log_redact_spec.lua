-- Secret redaction at the source (runtime/log.c): registered secrets anywhere (short ones only
-- where they stand alone) and every "Bearer ..." value become [REDACTED]; other text comes back
-- unchanged.
local log = require "scimrun.log"

describe("log.redact", function()
  log.add_secret("s3cr3t-token-for-the-redact-spec")
  log.add_secret("abc") -- short: only where it stands alone

  it("replaces a registered secret wherever it appears", function()
    assert.are.equal("token=[REDACTED]&x=1", log.redact("token=s3cr3t-token-for-the-redact-spec&x=1"))
    local twice = ("s3cr3t-token-for-the-redact-spec"):rep(2)
    assert.are.equal("[REDACTED][REDACTED]", log.redact(twice))
  end)

  it("replaces a bearer credential in any case", function()
    assert.are.equal("Authorization: Bearer [REDACTED]", log.redact("Authorization: Bearer eyJhbGciOi.xyz"))
    assert.are.equal("BEARER [REDACTED], next", log.redact("BEARER t0k3n, next"))
  end)

  it("redacts a short secret standing alone, not inside a word", function()
    assert.are.equal("key [REDACTED] here", log.redact("key abc here"))
    assert.are.equal("fabcd abcdef", log.redact("fabcd abcdef"))
  end)

  it("returns text without secrets as it is", function()
    for _, s in ipairs { "", "Patrick.OBrien", "patrick.obrien@example.com", "bear with me", "b", "Bearer" } do
      assert.are.equal(s, log.redact(s))
    end
  end)
end)
