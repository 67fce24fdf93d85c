-- The change diff (--diff FILE) and the audit trail (`scimrun audit`), issue 17 items 4 and 5:
-- a sandbox onboarding run, then what the state file and the diff say about its writes; an
-- update sends only the changed attribute and is listed before -> after; a dry run plans
-- without recording; retention prunes; never a token.
local cjson = require "cjson"
local proc = require "helpers.proc"

local TOKEN = "audit-spec-token-5d21c9e7"
local dir = proc.tmpdir("audit")
teardown(function() os.execute("rm -rf '" .. dir .. "'") end)

local write = proc.write

local function lines(path)
  local out = {}
  for l in io.lines(path) do out[#out + 1] = cjson.decode(l) end
  return out
end

local cwd = io.popen("pwd"):read("*l")
-- rows older than ~0.9 s are pruned when a run starts
local POLICY = write(dir .. "/short.lua", ('return { extends = "%s/policies/fast-test.lua", '
  .. 'audit = { retention_days = 0.00001 } }\n'):format(cwd))

local HEADER = "userName,email,first_name,last_name,employee_id,title\n"
local function people(title_of_3)
  local out = { HEADER }
  for i = 1, 8 do
    out[#out + 1] = ("aud.p%d,aud.p%d@example.com,First%d,Last%d,AUD-%d,%s\n"):format(i, i, i, i, i,
      i == 3 and title_of_3 or "Engineer")
  end
  return table.concat(out)
end

local state = dir .. "/state.db"
local function onboard(csv, extra, policy)
  return proc.run(("examples/onboard.lua --sandbox --state %s --policy %s --param csv=%s %s")
    :format(state, policy or "fast-test", csv, extra or ""), "SCIM_TOKEN=" .. TOKEN)
end

local function audit(args)
  local code, out, err = proc.run("audit --state " .. state .. " " .. args)
  assert.are.equal(0, code, err)
  return out
end

local function newest_run()
  local db = assert(require("scimrun.store").open(state, { readonly = true }))
  local r = db:runs_list { limit = 1 }[1]
  db:close()
  return r.id
end

local function bytes(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local s = f:read("*a")
  f:close()
  return s
end

describe("the audit trail and the change diff", function()
  local first_run, ids = nil, {}

  it("records one create per user and each membership change, with the diff of the run", function()
    local csv = write(dir .. "/a.csv", people("Engineer"))
    local code, out, err = onboard(csv, "--diff " .. dir .. "/d1.jsonl")
    assert.are.equal(0, code, out .. err)
    first_run = newest_run()
    local rows = cjson.decode(audit("--run " .. first_run .. " --json"))
    local creates, members, groups = {}, {}, 0
    for _, r in ipairs(rows) do
      assert.are.equal(first_run, r.run_id)
      assert.is_number(r.at)
      if r.operation == "users.create" then
        assert.are.equal("created", r.result)
        assert.are.equal("POST", r.method)
        assert.is_nil(creates[r.resource_name], "two creates for " .. r.resource_name)
        creates[r.resource_name] = r
        ids[r.resource_name] = r.resource_id
        assert.are.equal("user:" .. r.resource_name:lower(), r.item)
        local attrs = {}
        for _, c in ipairs(r.changes) do attrs[c.attribute] = c end
        assert.are.equal(r.resource_name, attrs.userName.after)
        assert.are.equal(cjson.null, attrs.userName.before)
        assert.truthy(attrs.externalId)
      elseif r.operation == "groups.add_member" then
        assert.are.equal("added", r.result)
        members[r.member_id] = r
      elseif r.operation == "groups.create" then
        groups = groups + 1
        assert.are.equal("Engineering", r.resource_name)
      else
        error("unexpected write " .. r.operation)
      end
    end
    assert.are.equal(1, groups)
    for i = 1, 8 do
      local name = "aud.p" .. i
      assert.truthy(creates[name], name)
      local m = members[ids[name]]
      assert.truthy(m, "membership of " .. name)
      assert.are.same({ { attribute = "members", added = { ids[name] } } }, m.changes)
    end
    assert.are.equal(17, #rows)
    -- the diff says the same, line by line
    local d = lines(dir .. "/d1.jsonl")
    assert.are.equal(17, #d)
    for _, l in ipairs(d) do
      assert.are.equal(first_run, l.run)
      assert.is_nil(l.dry_run)
    end
    assert.matches("diff: 17 write%(s%) made", out)
    -- never the token: not in the listing, the diff or the state file
    for _, text in ipairs { audit("--json"), audit(""), bytes(dir .. "/d1.jsonl"), bytes(state),
                            bytes(state .. "-wal") } do
      assert.is_nil(text:find(TOKEN, 1, true))
    end
  end)

  it("filters by user: its create and its membership; text shows the changes", function()
    local rows = cjson.decode(audit("--user AUD.P2 --json"))
    local ops = {}
    for i, r in ipairs(rows) do ops[i] = r.operation end
    assert.are.same({ "users.create", "groups.add_member" }, ops)
    assert.are.equal(ids["aud.p2"], rows[2].member_id)
    assert.are.same(rows, cjson.decode(audit("--user " .. ids["aud.p2"] .. " --json")))
    local text = audit("--user aud.p2")
    assert.matches("users%.create +created +users/" .. ids["aud.p2"]:gsub("%p", "%%%0") .. " %(aud%.p2%)", text)
    assert.matches('userName = "aud.p2"', text, 1, true)
    assert.matches("groups.add_member", text, 1, true)
    assert.are.equal("[]\n", audit("--user nobody --json"))
    local code, _, err = proc.run("audit --state " .. state .. " --run r-19990101-000000-0000")
    assert.are.equal(2, code)
    assert.matches("no run r%-19990101", err)
  end)

  it("plans an update in a dry run without recording it, then sends and records only the change", function()
    local csv = write(dir .. "/b.csv", people("Staff Engineer"))
    local before = #cjson.decode(audit("--json"))
    local code, out, err = onboard(csv, "--dry-run --diff " .. dir .. "/plan.jsonl")
    assert.are.equal(0, code, out .. err)
    assert.matches('title: "Engineer" %-> "Staff Engineer"', out)
    local plan = lines(dir .. "/plan.jsonl")
    assert.are.equal(1, #plan)
    assert.are.same({ { attribute = "title", before = "Engineer", after = "Staff Engineer" } }, plan[1].changes)
    assert.are.equal("planned", plan[1].result)
    assert.is_true(plan[1].dry_run)
    assert.are.equal(before, #cjson.decode(audit("--json"))) -- a dry run records nothing

    code, out, err = onboard(csv, "--diff " .. dir .. "/d2.jsonl")
    assert.are.equal(0, code, out .. err)
    assert.matches("0 created, 1 updated, 7 skipped", out)
    local run2 = newest_run()
    local rows = cjson.decode(audit("--run " .. run2 .. " --json"))
    assert.are.equal(1, #rows)
    assert.are.equal("users.patch", rows[1].operation)
    assert.are.equal("PATCH", rows[1].method)
    assert.are.equal(ids["aud.p3"], rows[1].resource_id)
    assert.are.same({ { attribute = "title", before = "Engineer", after = "Staff Engineer" } }, rows[1].changes)
    local d = lines(dir .. "/d2.jsonl")
    assert.are.equal(1, #d)
    assert.are.equal("updated", d[1].result)
  end)

  it("prunes rows older than audit.retention_days when a run starts", function()
    assert.is_true(#cjson.decode(audit("--run " .. first_run .. " --json")) > 0)
    scimrun.sleep(1.2)
    local code, out, err = onboard(dir .. "/b.csv", "", POLICY)
    assert.are.equal(0, code, out .. err)
    assert.are.equal("[]\n", audit("--json")) -- everything older pruned; this run wrote nothing
  end)
end)

describe("the audit trail of failed writes and of dlq replay", function()
  local sbrun = require "helpers.sbrun"
  local http = require "scimrun.http"
  local srv
  setup(function() srv = sbrun.sandbox() end)
  teardown(function() srv.close() end)

  it("records a failed write with its status, and the replayed request as replayed", function()
    local st = dir .. "/replay.db"
    assert(http.request { method = "POST", url = srv.url .. "/Groups", body = cjson.encode { displayName = "Staff" },
      headers = { Authorization = "Bearer " .. srv.token, ["Content-Type"] = "application/scim+json" } })
    sbrun.faults(srv, "400:0.2@writes@scim-type=invalidValue", 5)
    local code, out = sbrun.run(sbrun.saga_args(st, "--param n=30 --param saga=0 --param member_window=0 "
      .. "--continue-on-error"), srv.env)
    assert.are.equal(3, code, out)
    local function rows(args)
      local c, o, e = sbrun.run("audit --json --state " .. st .. " " .. (args or ""), "")
      assert.are.equal(0, c, e)
      return cjson.decode(o)
    end
    local failed = 0
    for _, r in ipairs(rows()) do
      if r.result == "failed" then
        failed = failed + 1
        assert.are.equal(400, r.status)
        assert.matches("injected fault", r.detail)
      end
    end
    local _, list = proc.run("dlq list --json --state " .. st)
    local parked = #cjson.decode(list)
    assert.is_true(parked > 0 and failed >= parked, ("%d failed rows, %d dead letters"):format(failed, parked))
    local before = #rows()
    sbrun.faults(srv, nil)
    local rcode, rout = sbrun.run("dlq replay --all --policy fast-test --state " .. st, srv.env)
    assert.are.equal(0, rcode, rout)
    local replayed, actions = {}, 0
    for i, r in ipairs(rows()) do
      if i > before and r.operation == "dlq.replay" then
        -- who replayed it (the CLI's action row, as the console writes its own)
        assert.are.equal("replayed", r.result)
        assert.are.equal("dead_letter", r.resource_type)
        actions = actions + 1
      elseif i > before then
        assert.are.equal("replayed", r.result)
        replayed[#replayed + 1] = r
        if r.operation == "groups.add_member" then
          assert.is_string(r.member_id)
        elseif r.operation == "users.create" then
          assert.is_string(r.resource_id)
          assert.are.equal("users", r.resource_type)
        end
      end
    end
    assert.are.equal(parked, #replayed)
    assert.are.equal(parked, actions)
  end)
end)
