-- examples/offboard.lua leaves alone the accounts scimrun does not manage (issue 17): a keep list
-- (--param keep=FILE, userNames one per line with # comments) and a keep filter (--param
-- keep_filter=SCIM filter) protect break-glass and service accounts even when the leavers' CSV
-- names them, and the mass de-provisioning threshold (--allow-deletes) counts only the
-- candidates left after them. Checked by the provider's own records.
local cjson = require "cjson"
local http = require "scimrun.http"
local proc = require "helpers.proc"
local sbrun = require "helpers.sbrun"

local write = proc.write

describe("offboard with a keep list", function()
  local srv, dir, leavers, keep
  setup(function()
    dir = proc.tmpdir("offboard-keep")
    srv = sbrun.sandbox {}
    -- 24 employees leave; the CSV (a careless export) also lists three accounts nobody may disable
    local rows = { "userName" }
    for i = 1, 24 do rows[#rows + 1] = ("emp%02d"):format(i) end
    for _, n in ipairs { "breakglass-admin", "svc-backup", "svc-ci" } do rows[#rows + 1] = n end
    leavers = write(dir .. "/leavers.csv", table.concat(rows, "\n") .. "\n")
    keep = write(dir .. "/keep.txt", table.concat({
      "# accounts scimrun never de-provisions",
      "BreakGlass-Admin",
      "",
      "   svc-backup    # nightly backups",
      "#svc-ci is matched by the filter below",
    }, "\n") .. "\n")
  end)
  teardown(function()
    srv.close()
    os.execute("rm -rf '" .. dir .. "'")
  end)

  local function post(path, body)
    body.schemas = { "urn:ietf:params:scim:schemas:core:2.0:" .. (path == "/Users" and "User" or "Group") }
    local res = assert(http.request { method = "POST", url = srv.url .. path, body = cjson.encode(body),
      headers = { Authorization = "Bearer " .. srv.token, ["Content-Type"] = "application/scim+json" } })
    assert.are.equal(201, res.status, res.body)
    return cjson.decode(res.body)
  end

  -- 26 employees, a break-glass admin and two service accounts; the admin and emp01 are Admins
  before_each(function()
    sbrun.fresh(srv)
    local ids = {}
    for i = 1, 26 do
      local n = ("emp%02d"):format(i)
      ids[n] = post("/Users", { userName = n, userType = "Employee", active = true }).id
    end
    ids["breakglass-admin"] = post("/Users",
      { userName = "breakglass-admin", userType = "Employee", active = true }).id
    for _, n in ipairs { "svc-backup", "svc-ci" } do
      ids[n] = post("/Users", { userName = n, userType = "Service", active = true }).id
    end
    post("/Groups", { displayName = "Admins",
                      members = { { value = ids["breakglass-admin"] }, { value = ids.emp01 } } })
  end)

  local function offboard(state, extra)
    return proc.run_bg(dir, ("examples/offboard.lua --policy fast-test --state %s --param csv=%s --param max_count=24 "
      .. "--param max_percent=100 %s"):format(state, leavers, extra), srv.env)
  end

  local function active()
    local users, members = sbrun.state(srv, "Admins")
    local out = {}
    for name, u in pairs(users) do out[name] = u.active ~= false end
    local admins = {}
    for id in pairs(members) do
      for name, u in pairs(users) do if u.id == id then admins[name] = true end end
    end
    return out, admins
  end

  it("never counts or touches kept accounts: the threshold sees the 24 employees only", function()
    local state = dir .. "/k1.db"
    local code, out, err = offboard(state, ("--param keep=%s --param 'keep_filter=userType eq \"Service\"' --report %s")
      :format(keep, dir .. "/k1.json"))
    assert.are.equal(0, code, out .. err)
    assert.matches("keep list: 2 account%(s%) are never de%-provisioned", err)
    assert.matches("keep filter: 2 account%(s%) match", err)
    assert.matches("3 leaver%(s%) of [^\n]* are kept and left alone: breakglass%-admin %(keep list%), "
      .. "svc%-backup %(keep list%), svc%-ci %(keep filter%)", err)
    local on, admins = active()
    for i = 1, 24 do assert.is_false(on[("emp%02d"):format(i)], ("emp%02d"):format(i)) end
    assert.is_true(on.emp25)
    assert.is_true(on.emp26)
    for _, n in ipairs { "breakglass-admin", "svc-backup", "svc-ci" } do
      assert.is_true(on[n], n .. " was deactivated")
    end
    assert.are.same({ ["breakglass-admin"] = true }, admins) -- emp01 left the group, the admin stayed
    local r = cjson.decode(proc.read_all(dir .. "/k1.json"))
    local outcomes = {}
    for _, it in ipairs(r.items) do outcomes[it.item] = it.outcome end
    assert.are.equal("skipped", outcomes["breakglass-admin"])
    assert.are.equal("skipped", outcomes["svc-ci"])
    assert.are.equal("updated", outcomes.emp01)
  end)

  it("without the filter, stops over the threshold naming only the unprotected accounts", function()
    local state = dir .. "/k2.db"
    local code, out, err = offboard(state, "--param keep=" .. keep)
    assert.are.equal(2, code, out .. err)
    assert.matches("It would de%-provision 25 user%(s%) %(2 more kept by the keep list%)", out)
    assert.matches("svc%-ci %(", out)
    assert.is_nil(out:find("breakglass-admin (", 1, true))
    assert.is_nil(out:find("svc-backup (", 1, true))
    assert.matches("re%-run with %-%-allow%-deletes 25", out .. err)
    local on = active()
    for name, is_active in pairs(on) do assert.is_true(is_active, name .. " changed") end
    -- --allow-deletes approves the 25 left after the keep list (27 were listed)
    code, out, err = offboard(dir .. "/k3.db", "--param keep=" .. keep .. " --allow-deletes 25")
    assert.are.equal(0, code, out .. err)
    on = active()
    assert.is_false(on["svc-ci"])
    assert.is_true(on["breakglass-admin"])
    assert.is_true(on["svc-backup"])
  end)

  it("refuses a keep list it cannot read before sending anything (exit 2)", function()
    local before = sbrun.stats(srv).requests
    local code, out, err = offboard(dir .. "/k4.db", "--param keep=" .. dir .. "/no-such-keep.txt")
    assert.are.equal(2, code, out .. err)
    assert.matches("cannot read the keep list [^\n]*no%-such%-keep%.txt", out .. err)
    assert.are.equal(before, sbrun.stats(srv).requests)
  end)
end)
