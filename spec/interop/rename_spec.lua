-- Renames between two runs (issue 17 item 2) against the independently written SCIM servers of
-- spec/interop/servers.lua: examples/onboard.lua provisions 20 people from a CSV whose
-- employee_id column feeds externalId, then 10 of them change their userName at the source.
-- The second run renames those 10 accounts in place (same ids, new userNames) and creates
-- nobody; checked by each server's own records (/_admin/dump). The scenario itself is
-- spec/helpers/rename.lua, shared with spec/functional/rename_spec.lua (the sandbox).
local rename = require "helpers.rename"

for _, S in ipairs(require "interop.servers") do
describe("renames between two runs against " .. S.name, function()
  local why = S.unavailable()
  if why then pending(why) return end

  local srv
  setup(function()
    srv = S.start("interop-rename-token-2f7a")
  end)
  teardown(function() if srv then srv.stop() end end)

  it("renames 10 users in place: same ids, new userNames, no duplicate on the server", function()
    srv.reset()
    local result = rename.scenario {
      name = S.name,
      env = ("SCIM_BASE_URL=%s SCIM_TOKEN=%s"):format(srv.base_url, srv.token),
      users = function() return srv.dump().users end,
    }
    -- the server's records as a whole: 20 users, each userName once, each externalId once
    local d = srv.dump()
    assert.are.equal(20, #d.users)
    local names, exts = {}, {}
    for _, u in ipairs(d.users) do
      assert.is_nil(names[u.userName:lower()], "duplicate userName " .. u.userName)
      assert.is_nil(exts[u.externalId], "duplicate externalId " .. tostring(u.externalId))
      names[u.userName:lower()], exts[u.externalId] = true, true
    end
    if d.authUsers then
      -- better-auth: a rename keeps the one Better Auth user row behind the SCIM user
      assert.are.equal(20, #d.authUsers)
      local by_id = {}
      for _, a in ipairs(d.authUsers) do by_id[a.id] = a end
      for _, u in pairs(result.ids) do assert.truthy(by_id[u.userId], u.userName .. " lost its Better Auth user") end
    end
    -- the group holds each of them once, renamed or not
    local group
    for _, g in ipairs(d.groups) do
      if g.displayName:match("^rn%d+%-group$") then group = g end
    end
    assert.truthy(group, "the scenario's group")
    local members = {}
    for _, m in ipairs(group.members or {}) do
      assert.is_nil(members[m.value], "duplicate membership " .. m.value)
      members[m.value] = true
    end
    for ext, u in pairs(result.ids) do assert.is_true(members[u.id] or false, ext .. " not in the group") end
  end)
end)
end
