-- Attribute mapping as data, through the binary and the embedded provider: a CSV whose headers
-- are SCIM attribute names is onboarded with every attribute (the provider's own records are
-- read back), unmapped columns are named in a warning, a required column the header lacks and a
-- bad mapping file stop the run before any write (exit 2, one line), and --param mapping=FILE
-- (Lua or JSON) applies each transform. group_sync and offboard read their rows through it too.
local proc = require "helpers.proc"
local sbrun = require "helpers.sbrun"

local ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"

local dir = proc.tmpdir("attr-mapping")
teardown(function() os.execute("rm -rf '" .. dir .. "'") end)

local function write(name, text) return proc.write(dir .. "/" .. name, text) end

-- The provider's records from a --sandbox run's journal: users by userName, groups by name.
local function journal(state)
  local user_list, group_list = sbrun.journal(state)
  local users, groups = {}, {}
  for _, u in ipairs(user_list) do
    assert.is_nil(users[u.userName], "duplicate user " .. u.userName)
    users[u.userName] = u
  end
  for _, g in ipairs(group_list) do groups[g.displayName] = g end
  return users, groups
end

local count = proc.count

local function onboard(state, args)
  return proc.run(("examples/onboard.lua --sandbox --state %s %s"):format(state, args))
end

-- Exit 2, one line on stderr after the sandbox banner, nothing written to the provider.
local function refused(code, out, err, state)
  assert.are.equal(2, code, out .. err)
  local lines = {}
  for l in err:gmatch("[^\n]+") do
    if not l:match("^sandbox: ") then lines[#lines + 1] = l end
  end
  assert.are.equal(1, #lines, err)
  assert.is_nil(err:find("traceback", 1, true))
  local users, groups = journal(state)
  assert.are.same({ 0, 0 }, { count(users), count(groups) })
  return lines[1]
end

describe("a CSV with SCIM attribute names as headers", function()
  it("is onboarded with name.givenName, name.familyName and the enterprise department", function()
    local csv = write("scim.csv", "userName,givenName,familyName,email,department,notes,cost_code\n"
      .. "ada.lovelace,Ada,Lovelace,ada@example.com,Engineering,likes engines,C1\n"
      .. "grace.hopper,Grace,Hopper,grace@example.com,Research,,C2\n")
    local state = dir .. "/scim.db"
    local code, out, err = onboard(state, "--param csv=" .. csv)
    assert.are.equal(0, code, out .. err)
    local users = journal(state)
    assert.are.equal(2, count(users))
    local ada = users["ada.lovelace"]
    assert.are.same({ givenName = "Ada", familyName = "Lovelace" }, ada.name)
    assert.are.same({ department = "Engineering" }, ada[ENTERPRISE])
    assert.are.equal("Ada Lovelace", ada.displayName)
    assert.are.equal("ada@example.com", ada.emails[1].value)
    assert.is_true(ada.active)
    assert.are.same({ givenName = "Grace", familyName = "Hopper" }, users["grace.hopper"].name)
    assert.are.same({ department = "Research" }, users["grace.hopper"][ENTERPRISE])
    -- the log says what maps where, and names the columns that go nowhere
    local said = out .. err
    assert.matches("info%s+input columns %-> SCIM attributes %(the default mapping%): userName %-> userName; "
      .. "givenName %-> name%.givenName", said)
    assert.matches("department %-> " .. ENTERPRISE:gsub("%p", "%%%0") .. ":department", said)
    assert.matches("warn%s+2 input column%(s%) mapped to nothing, their values are not sent: notes, cost_code", said)
  end)

  it("the shipped sample examples/data/users_scim.csv: every column mapped, no warning", function()
    local state = dir .. "/sample.db"
    local code, out, err = onboard(state, "--param csv=examples/data/users_scim.csv")
    assert.are.equal(0, code, out .. err)
    assert.is_nil((out .. err):find("mapped to nothing", 1, true))
    local users = journal(state)
    assert.are.equal(5, count(users))
    local grace = users["Grace.Hopper"]
    assert.are.equal("+1 202 555 0102", grace.phoneNumbers[1].value)
    assert.are.equal("Rear Admiral", grace.title)
    assert.is_false(users["Edsger.Dijkstra"].active)
    assert.is_true(users["Zoe.Bronte"].active)
    assert.are.equal("Brontë", users["Zoe.Bronte"].name.familyName)
  end)

  it("a required column the header lacks stops the run before any write (exit 2, one line)", function()
    local csv = write("nomail.csv", "userName,givenName,familyName\nada,Ada,Lovelace\n")
    local state = dir .. "/nomail.db"
    local code, out, err = onboard(state, "--param csv=" .. csv)
    local line = refused(code, out, err, state)
    assert.matches(csv:gsub("%p", "%%%0") .. ": required column 'email' is not in the header %(columns: userName, "
      .. "givenName, familyName%)", line)
    assert.matches("also accepted: emails", line)
    assert.matches("fix the input file %(add the column%), or name the column holding it in a mapping file given "
      .. "with %-%-param mapping=FILE", line)
  end)
end)

describe("--param mapping=FILE", function()
  -- examples/data/hr_export.csv through examples/mappings/hr_export.{lua,json}: each transform
  local function check_hr(users, with_function)
    assert.are.equal(3, count(users))
    local ada = assert(users["ada.lovelace"], "userName lowercased") -- Login ADA.LOVELACE
    assert.are.equal("ada.lovelace@example.com", ada.emails[1].value) -- lowercased
    assert.are.equal("Ada Lovelace", ada.displayName)                   -- concat
    assert.are.equal("Analyst", ada.title)                              -- trimmed
    assert.are.equal("Employee", ada.userType)                          -- constant
    assert.are.equal("E000001", ada.externalId)
    assert.are.same({ department = "Engineering" }, ada[ENTERPRISE])
    assert.are.same({ department = "Unassigned" }, users["grace.hopper"][ENTERPRISE]) -- default
    assert.is_true(ada.active)
    assert.is_false(users["alan.turing"].active)                        -- map: Leaver -> false
    assert.is_nil(users["grace.hopper"].phoneNumbers)                   -- empty: nothing sent
    -- a Lua function normalises the number; the JSON file passes it as it is
    assert.are.equal(with_function and "+442079460001" or "+44 (20) 7946-0001", ada.phoneNumbers[1].value)
  end

  it("a Lua mapping file applies lowercase, trim, default, concat, constant, map and a function", function()
    local state = dir .. "/hr-lua.db"
    local code, out, err = onboard(state, "--param csv=examples/data/hr_export.csv "
      .. "--param mapping=examples/mappings/hr_export.lua")
    assert.are.equal(0, code, out .. err)
    check_hr(journal(state), true)
    assert.matches("input columns %-> SCIM attributes %(.-examples/mappings/hr_export%.lua%): Login %-> userName",
      out .. err)
    assert.is_nil((out .. err):find("mapped to nothing", 1, true)) -- Notes is under ignore
  end)

  it("a JSON mapping file does the same with data only", function()
    local state = dir .. "/hr-json.db"
    local code, out, err = onboard(state, "--param csv=examples/data/hr_export.csv "
      .. "--param mapping=examples/mappings/hr_export.json")
    assert.are.equal(0, code, out .. err)
    check_hr(journal(state), false)
  end)

  it("a row the mapping refuses fails alone, with its line and the reason naming the column", function()
    local csv = write("hr_bad.csv", "Login,Work Email,First,Last,Dept,Job Title,Employee ID,Phone,Status,Notes\n"
      .. "ada,ada@example.com,Ada,Lovelace,Eng,Analyst,E1,12,Active,\n"
      .. "bob,bob@example.com,Bob,Ross,Art,Painter,E2,,Active,\n")
    local state = dir .. "/hr-bad.db"
    local code, out, err = onboard(state, "--continue-on-error --param csv=" .. csv
      .. " --param mapping=examples/mappings/hr_export.lua")
    assert.are.equal(3, code, out .. err)
    assert.matches("hr_bad%.csv:2", out .. err)
    assert.matches("phone number '12' is too short", out .. err)
    local users = journal(state)
    assert.are.same({ "bob" }, (function()
      local names = {}
      for k in pairs(users) do names[#names + 1] = k end
      return names
    end)())
  end)

  describe("a bad mapping file exits 2 naming the file and the key, before any write", function()
    local csv = write("ok.csv", "userName,email\nada,ada@example.com\n")
    local cases = {
      { "unknown key (Lua)", "typo.lua", 'return { extends = "default", attributes = { userName = { form = "x" } } }',
        "attribute 'userName': unknown key 'form' %(did you mean 'from'%?%)" },
      { "unknown key (JSON)", "typo.json", '{ "extends": "default", "attributes": { "title": { "const": "x", '
        .. '"lowercase": true } } }', "attribute 'title': unknown key 'lowercase'" },
      { "not a SCIM attribute", "attr.json", '{ "givenName": "first" }',
        "attribute 'givenName': 'givenName' is not an attribute of the SCIM User schema %(did you mean "
        .. "'name%.givenName'%?%)" },
      { "invalid JSON", "broken.json", '{ "userName": "u",\n  "title" }', "not valid JSON: .*%(line 2, column" },
      { "a Lua file reaching outside its sandbox", "io.lua", 'return { title = io.read("*a") }',
        "line 1: 'io' is not available in a mapping file" },
      { "a missing file", "absent.lua", nil, "cannot read the mapping file: No such file" },
      { "no userName for a workflow that needs it", "nouser.json", '{ "title": "t" }',
        "it gives no value for userName, which this workflow requires" },
    }
    for _, case in ipairs(cases) do
      it(case[1], function()
        local path = case[3] and write(case[2], case[3]) or (dir .. "/" .. case[2])
        local state = ("%s/bad-%s.db"):format(dir, case[2])
        local code, out, err = onboard(state, ("--param csv=%s --param mapping=%s"):format(csv, path))
        local line = refused(code, out, err, state)
        assert.matches("^scimrun: invalid mapping " .. path:gsub("%p", "%%%0") .. ": " .. case[4], line)
      end)
    end
  end)
end)

describe("group_sync and offboard read their rows through the mapping", function()
  it("group_sync creates a missing member from mapped columns; offboard finds leavers by a mapped column", function()
    local state = dir .. "/gs.db"
    local map = write("members.lua", [[
return { extends = "default", attributes = {
  userName = { from = "login", lower = true },
  ['emails[type eq "work"].value'] = { from = "mail", lower = true },
} }
]])
    local groups = write("groups.csv",
      "group,login,mail\nPainters,Bob.Ross,Bob@Example.com\nPainters,ADA,ada@example.com\n")
    local code, out, err = proc.run(("examples/group_sync.lua --sandbox --state %s --param csv=%s --param mapping=%s")
      :format(state, groups, map))
    assert.are.equal(0, code, out .. err)
    assert.is_nil((out .. err):find("mapped to nothing", 1, true)) -- the group column is not an attribute
    local users, gs = journal(state)
    assert.are.equal("bob@example.com", users["bob.ross"].emails[1].value)
    assert.is_table(users.ada)
    assert.are.equal(2, #gs.Painters.members)

    local leavers = write("leavers.csv", "login,reason\nbob.ross,retired\n")
    code, out, err = proc.run(("examples/offboard.lua --sandbox --state %s --param csv=%s --param mapping=%s "
      .. "--allow-deletes 1")
      :format(state, leavers, map))
    assert.are.equal(0, code, out .. err)
    assert.matches("leavers: userName from column 'login'", out .. err)
    users, gs = journal(state)
    assert.is_false(users["bob.ross"].active)
    assert.is_true(users.ada.active)
    assert.are.equal(1, #gs.Painters.members)
  end)
end)
