-- Renames and identity (issue 17 item 2): a user whose userName changed at the source but
-- whose externalId (employee_id) did not is renamed at the provider, not created again. The
-- scenario (spec/helpers/rename.lua) takes the server as a parameter; here it is the embedded
-- sandbox, started in this process and reached by the binary through SCIM_BASE_URL.
local sbrun = require "helpers.sbrun"
local rename = require "helpers.rename"

describe("renames between two runs", function()
  local srv
  setup(function() srv = sbrun.sandbox() end)
  teardown(function() if srv then srv.close() end end)

  it("renames 10 users in place on the sandbox: same ids, new userNames, no duplicate", function()
    rename.scenario { name = "sandbox", env = srv.env, users = function() return sbrun.dump(srv).users end }
  end)
end)
