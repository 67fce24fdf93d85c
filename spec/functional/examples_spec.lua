-- The shipped examples (examples/onboard.lua, group_sync.lua, offboard.lua) run through the
-- scimrun binary against the embedded SCIM provider; outcomes are checked by the provider's own
-- records: the `<state>.sandbox.json` journal of a --sandbox run, or the dump of a sandbox this
-- spec starts in-process (the binary then reaches it through SCIM_BASE_URL / SCIM_TOKEN).
local cjson = require "cjson"
local csv = require "scimrun.csv"
local proc = require "helpers.proc"
local sandbox = require "scimrun.sandbox"
local sbrun = require "helpers.sbrun"

local USERS_CSV = "examples/data/users.csv"
local GROUPS_CSV = "examples/data/groups.csv"
local OFFBOARD_CSV = "examples/data/offboard.csv"
local TOKEN = "examples-spec-token-7f3a"

local dir = proc.tmpdir("examples")
teardown(function() os.execute("rm -rf '" .. dir .. "'") end)

local write = proc.write

-- Policies for the specs: the shipped ones with the rate limit out of the way (the sandbox is
-- local), so the examples run in a fraction of a second.
local cwd = io.popen("pwd"):read("*l")
local FAST = write(dir .. "/fast.lua", ('return { extends = "%s/policies/fast-test.lua" }\n'):format(cwd))
local GROUP_SYNC = write(dir .. "/group_sync_fast.lua", ([[
return { extends = "%s/policies/group_sync.lua", rate_limit = { rps = 2000, burst = 2000 },
         profiles = { balanced = { base = 0.01, max_delay = 0.05, max_elapsed = 10 } } }
]]):format(cwd))

-- Runs the binary without blocking this task (an in-process sandbox must keep answering).
local function run(args, env) return proc.run_bg(dir, args, env) end

local function report(path)
  local f = assert(io.open(path))
  local r = cjson.decode(f:read("*a"))
  f:close()
  return r
end

-- The provider's records from a --sandbox run's journal.
local function journal(state)
  local users, groups = sbrun.journal(state)
  return { users = users, groups = groups }
end

-- users by lower-cased userName (asserting none is duplicated), groups by displayName with
-- their members as a set of lower-cased userNames.
local function index(dump)
  local users, by_id, groups = {}, {}, {}
  for _, u in ipairs(dump.users) do
    local k = u.userName:lower()
    assert.is_nil(users[k], "duplicate user " .. u.userName .. " on the server")
    users[k] = u
    by_id[u.id] = u
  end
  for _, g in ipairs(dump.groups) do
    assert.is_nil(groups[g.displayName], "duplicate group " .. g.displayName)
    local set = {}
    for _, m in ipairs(g.members or {}) do
      local u = assert(by_id[m.value], "member " .. tostring(m.value) .. " is not a user")
      assert.is_nil(set[u.userName:lower()], "member listed twice in " .. g.displayName)
      set[u.userName:lower()] = true
    end
    groups[g.displayName] = set
  end
  return users, groups
end

local function desired_groups(path)
  local want = {}
  for row in csv.rows(path) do
    want[row.group] = want[row.group] or {}
    want[row.group][row.userName:lower()] = true
  end
  return want
end

local count = proc.count

-- A stable text form of a server dump, to compare before and after.
local function canon(v)
  if type(v) ~= "table" then return cjson.encode(v) end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  local parts = {}
  for _, k in ipairs(keys) do parts[#parts + 1] = tostring(k) .. "=" .. canon(v[k]) end
  return "{" .. table.concat(parts, ",") .. "}"
end

-- users.csv with every account active: the offboarding list then has something to deactivate.
local ALL_ACTIVE = dir .. "/users_active.csv"
do
  local src = assert(io.open(USERS_CSV, "rb"))
  write(ALL_ACTIVE, (src:read("*a"):gsub(",terminated\n", ",active\n")))
  src:close()
end

describe("examples/onboard.lua", function()
  it("creates every user once; a second run creates nothing and reports every row skipped", function()
    local state = dir .. "/onboard.db"
    local code, out, err = run(("examples/onboard.lua --sandbox --policy %s --state %s --report %s/o1.json")
      :format(FAST, state, dir))
    assert.are.equal(0, code, out .. err)
    local code2, out2, err2 = run(("examples/onboard.lua --sandbox --policy %s --state %s --report %s/o2.json")
      :format(FAST, state, dir))
    assert.are.equal(0, code2, out2 .. err2)
    local rows = 0
    for _ in csv.rows(USERS_CSV) do rows = rows + 1 end
    local r1, r2 = report(dir .. "/o1.json"), report(dir .. "/o2.json")
    assert.are.equal(rows, r1.summary.created)
    assert.are.equal(rows, #r2.items)
    for _, item in ipairs(r2.items) do assert.are.equal("skipped", item.outcome, cjson.encode(item)) end
    assert.are.equal(0, r2.summary.created)
    local users, groups = index(journal(state))
    assert.are.equal(rows, count(users))
    assert.are.equal(rows, count(groups.Engineering))
  end)

  it("fails exactly the bad rows of users_bad.csv, citing file:line, and goes on (exit 3)", function()
    local state = dir .. "/bad.db"
    local code, out, err = run(("examples/onboard.lua --sandbox --policy %s --state %s --continue-on-error "
      .. "--param csv=examples/data/users_bad.csv --report %s/bad.json"):format(FAST, state, dir))
    assert.are.equal(3, code, out .. err)
    local failed, ok = {}, {}
    for _, item in ipairs(report(dir .. "/bad.json").items) do
      if item.status == "failed" then failed[#failed + 1] = item.line else ok[#ok + 1] = item.item end
    end
    table.sort(failed)
    table.sort(ok)
    -- 3: empty email, 4: invalid email, 5: a field missing, 8: unterminated quote
    assert.are.same({ 3, 4, 5, 8 }, failed)
    assert.are.same({ "Ada.Lovelace", "Barbara.Liskov" }, ok)
    for _, line in ipairs(failed) do assert.matches("users_bad%.csv:" .. line, out .. err) end
    local users = index(journal(state))
    assert.are.same({ "ada.lovelace", "barbara.liskov" }, (function()
      local names = {}
      for k in pairs(users) do names[#names + 1] = k end
      table.sort(names)
      return names
    end)())
  end)
end)

describe("examples/group_sync.lua", function()
  it("creates the groups and memberships of groups.csv; a second run is all skipped", function()
    local state = dir .. "/gs.db"
    local code, out, err = run(("examples/group_sync.lua --sandbox --policy %s --state %s")
      :format(GROUP_SYNC, state))
    assert.are.equal(0, code, out .. err)
    local want = desired_groups(GROUPS_CSV)
    local users, groups = index(journal(state))
    assert.are.same(want, groups)
    local distinct = {}
    for _, members in pairs(want) do for k in pairs(members) do distinct[k] = true end end
    assert.are.equal(count(distinct), count(users)) -- each missing member created once
    local code2, out2, err2 = run(("examples/group_sync.lua --sandbox --policy %s --state %s --report %s/gs2.json")
      :format(GROUP_SYNC, state, dir))
    assert.are.equal(0, code2, out2 .. err2)
    local r2 = report(dir .. "/gs2.json")
    assert.are.equal(count(want), #r2.items)
    for _, item in ipairs(r2.items) do assert.are.equal("skipped", item.outcome, cjson.encode(item)) end
    assert.are.equal(0, r2.summary.steps_run - #r2.items) -- one step per group (found), no write

    -- one row less in a copy of the file: exactly that membership goes
    local removed = "Engineering,Kai.Nakamura"
    local src = assert(io.open(GROUPS_CSV, "rb"))
    local text = src:read("*a")
    src:close()
    local copy, n = text:gsub("\n" .. removed:gsub("%.", "%%.") .. "\n", "\n")
    assert.are.equal(1, n, "the sample data changed: " .. removed .. " is not a row of " .. GROUPS_CSV)
    local copy_path = write(dir .. "/groups_minus_one.csv", copy)
    local code3, out3, err3 = run(("examples/group_sync.lua --sandbox --policy %s --state %s --param csv=%s")
      :format(GROUP_SYNC, state, copy_path))
    assert.are.equal(0, code3, out3 .. err3)
    local users3, groups3 = index(journal(state))
    want.Engineering["kai.nakamura"] = nil
    assert.are.same(want, groups3)
    assert.is_table(users3["kai.nakamura"]) -- the account stays; only the membership went
    assert.are.equal(count(users), count(users3))
  end)

  it("refuses a file with a malformed row before writing anything (exit 2)", function()
    local state = dir .. "/gs_bad.db"
    local bad = write(dir .. "/groups_bad.csv", 'group,userName\nSales,Ada.Lovelace\n"Sales,Grace.Hopper\n')
    local code, out, err = run(("examples/group_sync.lua --sandbox --policy %s --state %s --param csv=%s")
      :format(GROUP_SYNC, state, bad))
    assert.are.equal(2, code, out .. err)
    assert.matches("groups_bad%.csv:3", out .. err)
    local dump = journal(state)
    assert.are.equal(0, #dump.users + #dump.groups)
  end)
end)

describe("examples against a sandbox of the spec's own", function()
  local srv, env
  setup(function()
    srv = assert(sandbox.start { port = 0, token = TOKEN })
    env = ("SCIM_BASE_URL=%s SCIM_TOKEN=%s"):format(srv.url, TOKEN)
  end)
  teardown(function() if srv then srv.close() end end)

  local function dump() return srv.sb:dump() end

  it("--dry-run prints the planned writes and writes nothing, for each example", function()
    local before = canon(dump())
    local code, out, err = run(("examples/onboard.lua --dry-run --policy %s --param csv=%s"):format(FAST, ALL_ACTIVE),
      env)
    assert.are.equal(0, code, out .. err)
    assert.matches("dry run: nothing was written", out)
    assert.matches("users%.create POST " .. srv.url:gsub("%p", "%%%0") .. "/Users", out)
    assert.are.equal(before, canon(dump()))
    -- now give the server something, then plan the other two against it
    code, out, err = run(("examples/onboard.lua --policy %s --param csv=%s --state %s/own.db")
      :format(FAST, ALL_ACTIVE, dir), env)
    assert.are.equal(0, code, out .. err)
    before = canon(dump())
    -- onboarding put everyone in Engineering: group_sync would remove the extra members
    code, out, err = run(("examples/group_sync.lua --dry-run --policy %s --allow-deletes 1000"):format(GROUP_SYNC), env)
    assert.are.equal(0, code, out .. err)
    assert.matches("groups%.create POST", out)
    assert.matches("groups%.add_member PATCH", out)
    assert.matches("groups%.remove_member PATCH", out)
    code, out, err = run(("examples/offboard.lua --dry-run --policy %s"):format(FAST), env)
    assert.are.equal(0, code, out .. err)
    assert.matches("users%.deactivate PATCH", out)
    assert.matches("groups%.remove_member PATCH", out)
    assert.are.equal(before, canon(dump()))
  end)

  it("offboard stops over the mass de-provisioning threshold with no write, then deactivates the 20", function()
    local users = index(dump())
    assert.are.equal(300, count(users), "the previous test onboards users.csv")
    local leavers = {}
    for row in csv.rows(OFFBOARD_CSV) do
      leavers[row.userName:lower()] = true
      assert.is_true(users[row.userName:lower()].active, row.userName .. " starts active")
    end
    assert.are.equal(20, count(leavers))
    local before = canon(dump())
    local code, out, err = run(("examples/offboard.lua --policy %s --param max_count=5 --state %s/off.db")
      :format(FAST, dir), env)
    assert.are.equal(2, code, out .. err)
    assert.matches("%-%-allow%-deletes 20", out .. err)
    assert.matches("Lukasz%.Wroblewski %(.-%): deactivate, remove from Engineering", out)
    assert.are.equal(before, canon(dump()))

    -- approved: the same run with --allow-deletes 20
    code, out, err = run(("examples/offboard.lua --policy %s --param max_count=5 --allow-deletes 20 --state %s/off.db "
      .. "--report %s/off.json"):format(FAST, dir, dir), env)
    assert.are.equal(0, code, out .. err)
    local after, groups = index(dump())
    for k, u in pairs(after) do
      if leavers[k] then
        assert.is_false(u.active, k .. " deactivated")
        assert.is_nil(groups.Engineering[k], k .. " left its group")
      else
        assert.is_true(u.active, k .. " untouched")
      end
    end
    assert.are.equal(300, count(after)) -- no grace_days: nobody deleted
    -- again: nothing left to do, nothing written
    local again = canon(dump())
    code, out, err = run(("examples/offboard.lua --policy %s --state %s/off.db --report %s/off2.json")
      :format(FAST, dir, dir), env)
    assert.are.equal(0, code, out .. err)
    for _, item in ipairs(report(dir .. "/off2.json").items) do assert.are.equal("skipped", item.outcome) end
    assert.are.equal(again, canon(dump()))
    -- grace_days=0: the deactivated leavers are deleted, nobody else
    code, out, err = run(("examples/offboard.lua --policy %s --param grace_days=0 --allow-deletes 20 --state %s/off.db")
      :format(FAST, dir), env)
    assert.are.equal(0, code, out .. err)
    local final = index(dump())
    assert.are.equal(280, count(final))
    for k in pairs(leavers) do assert.is_nil(final[k], k .. " deleted") end
  end)
end)

describe("onboarding with lost create responses, killed and resumed", function()
  it("leaves exactly one user per CSV row", function()
    local state = dir .. "/lost.db"
    local log = dir .. "/lost.log"
    -- generous attempts and budget: 30% of writes lose their answer
    local pol = write(dir .. "/lossy.lua", ([[
return { extends = "%s/policies/fast-test.lua",
         profiles = { balanced = { attempts = 12 } }, budget = { retry_ratio = 1, min_retries = 100000 } }
]]):format(cwd))
    local args = ("examples/onboard.lua --sandbox=lost:0.3@writes,latency:40ms --policy %s --state %s --concurrency 4")
      :format(pol, state)
    math.randomseed(os.time())
    local started, kills = false, 0
    for i = 1, 3 do
      local pid = proc.spawn(args .. (started and " --resume --retry-failed" or ""), nil, log)
      scimrun.sleep(started and (0.2 + math.random() * 0.3) or 0.6)
      started = true
      if not proc.alive(pid) then break end
      -- two hard kills, then a polite stop (SIGINT: finish in-flight steps, exit 130)
      os.execute((i < 3 and "kill -9 " or "kill -INT ") .. pid)
      assert.is_true(proc.wait_gone(pid, 20))
      kills = kills + 1
    end
    assert.are.equal(3, kills, "the run finished before it could be interrupted three times")
    local said = proc.read_all(log)
    assert.matches("SIGINT: finishing in%-flight steps", said)
    assert.matches("stopped; nothing is lost%. Resume with:\n  scimrun examples/onboard%.lua %-%-resume r%-", said)
    local code, out, err
    for _ = 1, 5 do
      code, out, err = run(args .. " --resume --retry-failed")
      if code == 0 then break end
    end
    assert.are.equal(0, code, out .. err .. proc.read_all(log):sub(-2000))
    local users, groups = index(journal(state)) -- index() fails on any duplicate
    local rows = 0
    for row in csv.rows(USERS_CSV) do
      rows = rows + 1
      assert.is_table(users[row.userName:lower()], row.userName .. " missing")
    end
    assert.are.equal(rows, count(users))
    assert.are.equal(rows, count(groups.Engineering))
  end)

  it("settles a membership step a crash left in doubt when the member is already in the group", function()
    local state = dir .. "/doubt.db"
    local code, out, err = run(("examples/onboard.lua --sandbox --state %s --policy %s"):format(state, FAST))
    assert.are.equal(0, code, out .. err)
    -- as a kill after the PATCH, before its completion was recorded, leaves it
    local steps, r = sbrun.steps(state)
    local key
    for k in pairs(steps) do if k:match("^member:") then key = k break end end
    local db = assert(require("scimrun.store").open(state))
    assert(db:apply { { op = "step_start", run_id = r.id, key = key },
                      { op = "run_status", run_id = r.id, status = "interrupted", exit_code = 137 } })
    db:close()
    code, out, err = run(("examples/onboard.lua --sandbox --state %s --resume %s"):format(state, r.id))
    assert.are.equal(0, code, out .. err)
    steps = sbrun.steps(state, r.id)
    assert.are.equal("completed", steps[key].state, key .. " left in doubt")
  end)
end)
