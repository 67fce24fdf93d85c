-- The sandbox passes the ported Okta SCIM 2.0 conformance steps (spec/conformance/).
local sandbox = require "scimrun.sandbox"
local conformance = require "helpers.conformance"
local suite = require "conformance.scim_conformance"

describe("sandbox conformance", function()
  it("passes every step of " .. suite.name, function()
    local srv = assert(sandbox.start({ port = 0 }))
    local results = conformance.run(suite, { url = srv.url, token = srv.token })
    srv.close()
    assert.are.equal(#suite.steps, results.passed, conformance.report(results))
    assert.are.equal(0, results.failed, conformance.report(results))
  end)

  it("reports the failing step and why", function()
    local srv = assert(sandbox.start({ port = 0 }))
    local results = conformance.run(suite, { url = srv.url, token = "not-the-token" })
    srv.close()
    assert.are.equal(0, results.passed)
    assert.matches("FAIL Required: the Users endpoint answers a ListResponse", conformance.report(results))
    assert.matches("status 401, expected 200", conformance.report(results))
  end)
end)
