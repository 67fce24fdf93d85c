-- The change diff (issue 17 item 4) against the independently written SCIM servers of
-- spec/interop/servers.lua. The server holds 10 people whose attributes differ from the CSV in
-- places: 5 changed at the source (title, last name, department) and 1 changed at the server
-- by someone else (its title). `--dry-run --diff FILE` writes one JSON line per user that
-- would change, attribute by attribute before -> after, and the server sees no write; the
-- real run with `--diff` then sends one PATCH per changed user and none for the 4 unchanged,
-- counted by the server's own request statistics, and leaves the server holding the CSV.
-- spec/functional/audit_spec.lua is the same against the sandbox.
local cjson = require "cjson"
local http = require "scimrun.http"
local proc = require "helpers.proc"

local ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
local DEPARTMENT = ENTERPRISE .. ":department"

local write = proc.write

local function lines(path)
  local out = {}
  for l in io.lines(path) do
    if l ~= "" then out[#out + 1] = cjson.decode(l) end
  end
  return out
end

-- The people: person i as { userName, email, first, last, employee_id, title, department };
-- `changed` overrides fields by index.
local function people(changed)
  local rows = { "userName,email,first_name,last_name,employee_id,title,department\n" }
  for i = 1, 10 do
    local p = { ("df.p%02d"):format(i), ("df.p%02d@example.com"):format(i), "First" .. i, "Last" .. i,
      ("DF-%02d"):format(i), "Engineer", "Eng" }
    for k, v in pairs(changed and changed[i] or {}) do p[k] = v end
    rows[#rows + 1] = table.concat(p, ",") .. "\n"
  end
  return table.concat(rows)
end

-- What the CSV changes, and what the dry run and the real run must report for each person:
-- 1-3 a new title, 4 a new last name (so also the display name made from it), 5 a new
-- department; 10 unchanged at the source but its title changed at the server; 6-9 unchanged.
local CHANGED = {
  [1] = { [6] = "Staff Engineer" }, [2] = { [6] = "Staff Engineer" }, [3] = { [6] = "Staff Engineer" },
  [4] = { [4] = "Other4" },
  [5] = { [7] = "Research" },
}
local EXPECTED = {
  ["df.p01"] = { title = { "Engineer", "Staff Engineer" } },
  ["df.p02"] = { title = { "Engineer", "Staff Engineer" } },
  ["df.p03"] = { title = { "Engineer", "Staff Engineer" } },
  ["df.p04"] = { ["name.familyName"] = { "Last4", "Other4" }, displayName = { "First4 Last4", "First4 Other4" } },
  ["df.p05"] = { [DEPARTMENT] = { "Eng", "Research" } },
  ["df.p10"] = { title = { "Contractor", "Engineer" } },
}

local function sum_writes(requests)
  local n = 0
  for route, count in pairs(requests) do
    if not route:match("^GET ") then n = n + count end
  end
  return n
end

for _, S in ipairs(require "interop.servers") do
describe("the change diff against " .. S.name, function()
  local why = S.unavailable()
  if why then pending(why) return end

  local srv, dir
  setup(function()
    srv = S.start("interop-diff-token-47c0")
    dir = proc.tmpdir("interop-diff")
  end)
  teardown(function()
    if srv then srv.stop() end
    if dir then os.execute("rm -rf '" .. dir .. "'") end
  end)

  local state
  local function onboard(csv_path, extra)
    local code, out, err = proc.run(("examples/onboard.lua --policy fast-test --state %s --param csv=%s "
      .. "--param group=Differs %s"):format(state, csv_path, extra or ""),
      ("SCIM_BASE_URL=%s SCIM_TOKEN=%s"):format(srv.base_url, srv.token))
    return code, out .. err
  end

  -- The server's users by userName, with the attributes the CSV sets. (better-auth stores the
  -- enterprise extension as `enterprise` in its table; its SCIM answers use the URN.)
  local function records()
    local out = {}
    for _, u in ipairs(srv.dump().users) do
      local k = u.userName:lower()
      assert.is_nil(out[k], "duplicate user " .. u.userName)
      local ent = u[ENTERPRISE] or u.enterprise
      out[k] = { id = u.id, title = u.title, displayName = u.displayName,
        ["name.familyName"] = u.name and u.name.familyName,
        [DEPARTMENT] = type(ent) == "table" and ent.department or nil,
        modified = u.meta and (tostring(u.meta.lastModified) .. " " .. tostring(u.meta.version)) }
    end
    return out
  end

  -- Someone changes a user at the server, through its SCIM API.
  local function patch_at_server(id, path, value)
    local res = assert(http.request { method = "PATCH", url = srv.base_url .. "/Users/" .. id,
      headers = { Authorization = "Bearer " .. srv.token, ["Content-Type"] = "application/scim+json" },
      body = cjson.encode { schemas = { "urn:ietf:params:scim:api:messages:2.0:PatchOp" },
        Operations = { { op = "replace", path = path, value = value } } } })
    assert(res.status < 300, ("PATCH %s answered %d: %s"):format(id, res.status, tostring(res.body)))
  end

  -- Each line's changes as { attribute = { before, after } }; the line's person by id.
  local function by_person(diff_lines, ids)
    local name_of = {}
    for name, u in pairs(ids) do name_of[u.id] = name end
    local out = {}
    for _, l in ipairs(diff_lines) do
      local name = assert(name_of[l.id], "a line for an unknown id: " .. cjson.encode(l))
      assert.is_nil(out[name], "two lines for " .. name)
      local changes = {}
      for _, c in ipairs(l.changes or {}) do
        assert.is_nil(changes[c.attribute], "attribute twice: " .. cjson.encode(l))
        changes[c.attribute] = { c.before, c.after }
      end
      out[name] = changes
    end
    return out
  end

  it("a dry run writes the expected before/after lines and changes nothing; the real run PATCHes only the "
    .. "changed users", function()
    srv.reset()
    state = dir .. "/state.db"
    local code, out = onboard(write(dir .. "/before.csv", people()))
    assert.are.equal(0, code, out)
    local ids = records()
    local n = 0
    for _ in pairs(ids) do n = n + 1 end
    assert.are.equal(10, n)
    for i = 1, 10 do
      local u = ids[("df.p%02d"):format(i)]
      assert.are.equal("Engineer", u.title, S.name .. " keeps title")
      assert.are.equal("Eng", u[DEPARTMENT], S.name .. " keeps the enterprise department")
      assert.are.equal("Last" .. i, u["name.familyName"])
    end
    patch_at_server(ids["df.p10"].id, "title", "Contractor")
    local after_csv = write(dir .. "/after.csv", people(CHANGED))
    local before = records()
    local stats0 = srv.stats()

    -- the dry run: the plan, line by line; no write reaches the server
    code, out = onboard(after_csv, "--dry-run --diff " .. dir .. "/plan.jsonl")
    assert.are.equal(0, code, out)
    assert.matches("diff: 6 write%(s%) planned", out)
    local plan = lines(dir .. "/plan.jsonl")
    assert.are.equal(6, #plan, out)
    for _, l in ipairs(plan) do
      assert.are.equal("users.patch", l.op)
      assert.are.equal("planned", l.result)
      assert.is_true(l.dry_run)
      assert.are.equal("users", l.resource)
      assert.is_string(l.run)
    end
    assert.are.same(EXPECTED, by_person(plan, ids))
    local stats1 = srv.stats()
    assert.are.equal(sum_writes(stats0.requests), sum_writes(stats1.requests), "the dry run wrote")
    assert.are.same(before, records())
    for _, text in ipairs { proc.read_all(dir .. "/plan.jsonl"), out } do
      assert.is_nil(text:find(srv.token, 1, true), "the token")
    end

    -- the real run: one PATCH per changed user, none for the 4 unchanged, nothing else written
    code, out = onboard(after_csv, "--diff " .. dir .. "/done.jsonl")
    assert.are.equal(0, code, out)
    assert.matches("0 created, 6 updated, 4 skipped", out)
    local stats2 = srv.stats()
    local function delta(route) return (stats2.requests[route] or 0) - (stats1.requests[route] or 0) end
    assert.are.equal(6, delta("PATCH /Users"), cjson.encode(stats2.requests))
    assert.are.equal(6, sum_writes(stats2.requests) - sum_writes(stats1.requests), cjson.encode(stats2.requests))
    local done = lines(dir .. "/done.jsonl")
    assert.are.equal(6, #done)
    for _, l in ipairs(done) do
      assert.are.equal("users.patch", l.op)
      assert.are.equal("updated", l.result)
      assert.is_nil(l.dry_run)
    end
    assert.are.same(EXPECTED, by_person(done, ids))
    -- the server now holds the CSV; the unchanged users were not touched at all
    local now = records()
    for name, u in pairs(now) do
      assert.are.equal(ids[name].id, u.id, name .. " kept its id")
      local want = EXPECTED[name]
      if want then
        for attr, ba in pairs(want) do assert.are.equal(ba[2], u[attr], name .. " " .. attr) end
      else
        assert.are.same(before[name], u, name .. " was written")
      end
    end

    -- nothing differs any more: a rerun writes nothing
    code, out = onboard(after_csv, "--diff " .. dir .. "/none.jsonl")
    assert.are.equal(0, code, out)
    assert.matches("0 created, 0 updated, 10 skipped", out)
    assert.are.same({}, lines(dir .. "/none.jsonl"))
    assert.are.equal(sum_writes(stats2.requests), sum_writes(srv.stats().requests))
  end)
end)
end
