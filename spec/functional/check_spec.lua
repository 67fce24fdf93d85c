-- Preflight: `scimrun WF.lua --check` reads the whole input through the mapping and reports
-- every bad row as file:line: reason, with the counts, and sends nothing (exit 0 clean, 2 not).
-- A normal run lists the same bad rows at its start; they still fail as items.
local proc = require "helpers.proc"
local sbrun = require "helpers.sbrun"

local dir = proc.tmpdir("check")
teardown(function() os.execute("rm -rf '" .. dir .. "'") end)

local function write(name, text) return proc.write(dir .. "/" .. name, text) end

local BAD = "examples/data/users_bad.csv"

describe("--check", function()
  local srv
  setup(function() srv = sbrun.sandbox {} end)
  teardown(function() srv.close() end)

  it("lists each bad line of users_bad.csv, counts the rows, sends nothing, exits 2", function()
    local state = dir .. "/bad.db"
    local code, out, err = proc.run_bg(dir, ("examples/onboard.lua --check --state %s --param csv=%s")
      :format(state, BAD), srv.env)
    assert.are.equal(2, code, out .. err)
    local lines = {}
    for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.matches("users_bad%.csv:3: required column 'email' is empty$", lines[1])
    assert.matches("users_bad%.csv:4: column 'email' .*\"alan%.turing@\" is not a valid email address", lines[2])
    assert.matches("users_bad%.csv:5: expected 9 fields", lines[3])
    assert.matches("users_bad%.csv:8: quoted field in column 5 is not closed", lines[4])
    assert.are.equal("check: 6 row(s) read, 4 bad, 2 would be processed; nothing was sent", lines[5])
    assert.are.equal(5, #lines)
    assert.are.equal(0, sbrun.stats(srv).requests, "the provider got no request")
    assert.is_nil(io.open(state), "no state file is written")
  end)

  it("a clean input: exit 0, without a provider or a token", function()
    local code, out, err = proc.run("examples/onboard.lua --check --state " .. dir .. "/clean.db",
      "env -u SCIM_BASE_URL -u SCIM_TOKEN")
    assert.are.equal(0, code, out .. err)
    assert.matches("check: 300 row%(s%) read, 0 bad, 300 would be processed; nothing was sent", out)
  end)

  it("names a duplicate userName (case-insensitive) with the line of the first", function()
    local csv = write("dups.csv", "userName,email\nada,ada@x.test\nbob,bob@x.test\nADA,ada2@x.test\n")
    local code, out = proc.run(("examples/onboard.lua --check --state %s/d.db --param csv=%s"):format(dir, csv),
      "env -u SCIM_BASE_URL -u SCIM_TOKEN")
    assert.are.equal(2, code, out)
    assert.matches("dups%.csv:4: duplicate userName 'ADA' %(first on line 2%)", out)
  end)

  it("names a value longer than the policy's scim.max_lengths allows (characters, not bytes)", function()
    local csv = write("long.csv", "userName,email,first_name\nada,ada@x.test,Ad\195\169le\n"
      .. "a-very-long-user-name,b@x.test,Bo\nbob,bob@x.test,Roberta\n")
    local pol = write("lengths.lua", 'return { extends = "default", scim = { max_lengths = '
      .. '{ userName = 12, ["name.givenName"] = 5 } } }')
    local code, out = proc.run(("examples/onboard.lua --check --policy %s --state %s/l.db --param csv=%s")
      :format(pol, dir, csv), "env -u SCIM_BASE_URL -u SCIM_TOKEN")
    assert.are.equal(2, code, out)
    assert.is_nil(out:find("long%.csv:2:"), out) -- "Adèle" is 5 characters (6 bytes)
    assert.matches("long%.csv:3: userName is 21 characters; the provider accepts at most 12", out)
    assert.matches("long%.csv:4: name%.givenName is 7 characters; the provider accepts at most 5", out)
    local bad = write("badlen.lua", 'return { extends = "default", scim = { max_lengths = { userName = 0 } } }')
    code, out = proc.run(("examples/onboard.lua --check --policy %s --state %s/l2.db"):format(bad, dir),
      "env -u SCIM_BASE_URL -u SCIM_TOKEN")
    assert.are.equal(2, code, out)
  end)

  it("a missing required column is still exit 2 before anything", function()
    local csv = write("nomail.csv", "userName,title\nada,dev\n")
    local code, out, err = proc.run(("examples/onboard.lua --check --state %s/m.db --param csv=%s"):format(dir, csv),
      "env -u SCIM_BASE_URL -u SCIM_TOKEN")
    assert.are.equal(2, code, out .. err)
    assert.matches("email", err)
  end)
end)

describe("a normal run of an input with bad rows", function()
  it("lists them at its start, before the first write; they still fail as items", function()
    local code, out, err = proc.run(("examples/onboard.lua --sandbox --state %s/normal.db --param csv=%s "
      .. "--continue-on-error"):format(dir, BAD))
    assert.are.equal(3, code, out .. err)
    local listed = err:find("the input has 4 bad row%(s%) of 6")
    assert.is_number(listed, err)
    assert.matches("scimrun examples/onboard%.lua %-%-check %-%-param csv=examples/data/users_bad%.csv "
      .. "lists them all", err)
    local first_failure = err:find("item failed", 1, true)
    assert.is_true(listed < first_failure)
    for _, line in ipairs { 3, 4, 5, 8 } do assert.matches("users_bad%.csv:" .. line .. ": ", err) end
    assert.matches("4 failed", out)
  end)
end)
