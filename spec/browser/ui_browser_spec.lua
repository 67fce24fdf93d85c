-- scimrun ui in a real browser (issue 14 item 5): headless Chromium from Debian (`chromium`),
-- driven by puppeteer-core pinned in spec/browser/package-lock.json (scripts/test.sh runs
-- `npm ci --prefix spec/browser`; scripts/install-deps.sh installs chromium). A sandbox run with
-- rejecting faults leaves dead letters; the console is opened on its state file; drive.js clicks
-- through the pages, replays one entry and drops another; then the provider's own records and
-- the state file are checked here. Screenshots of every page: $SCIMRUN_TEST_TMP/browser-screenshots/
-- (build/spec-tmp/browser-screenshots under ctest).
local cjson = require "cjson"
local http = require "scimrun.http"
local proc = require "helpers.proc"
local sbrun = require "helpers.sbrun"
local uihelp = require "helpers.ui"

local CHROMIUM = os.getenv("CHROMIUM") or "/usr/bin/chromium"
local OUT = (os.getenv("SCIMRUN_TEST_TMP") or "/tmp") .. "/browser-screenshots"

local function exists(path)
  local f = io.open(path)
  if f then f:close() end
  return f ~= nil
end

-- Runs a shell command in the background and yields until it ends (the in-process sandbox keeps
-- answering meanwhile); returns exit code, stdout, stderr.
local function run_bg(dir, command, timeout)
  local base = ("%s/sh-%d"):format(dir, math.random(1, 1e9))
  os.execute(("(%s >%s.out 2>%s.err; echo $? >%s.tmp; mv %s.tmp %s.code) &"):format(command, base, base, base, base,
    base))
  local deadline = scimrun.now() + (timeout or 120)
  while scimrun.now() < deadline do
    local code = proc.read_all(base .. ".code"):match("%d+")
    if code then return tonumber(code), proc.read_all(base .. ".out"), proc.read_all(base .. ".err") end
    scimrun.sleep(0.05)
  end
  error(command .. " did not finish in " .. (timeout or 120) .. " s")
end

local function read_state(state, fn)
  local db = assert(require("scimrun.store").open(state, { readonly = true }))
  local ok, res = pcall(fn, db)
  db:close()
  assert(ok, res)
  return res
end

describe("scimrun ui in headless Chromium", function()
  local srv, dir, ui

  setup(function()
    assert(exists(CHROMIUM), CHROMIUM .. " is missing: scripts/install-deps.sh installs Debian's chromium")
    assert(exists("spec/browser/node_modules/puppeteer-core/package.json"),
      "puppeteer-core is missing: run `npm ci --prefix spec/browser` (scripts/test.sh does)")
    srv = sbrun.sandbox()
    dir = proc.tmpdir("browser")
    os.execute("rm -rf '" .. OUT .. "' && mkdir -p '" .. OUT .. "'")
  end)

  teardown(function()
    if ui then ui:stop() end
    if srv then srv.close() end
    if dir then os.execute("rm -rf '" .. dir .. "'") end
  end)

  it("shows a run's dead letters; Replay and Drop clicked in the page change the provider and the store", function()
    -- a provider whose writes are rejected at random: 400 invalidValue and 409 uniqueness
    local csv = { "userName,email,first_name,last_name,employee_id\n" }
    for i = 1, 24 do
      csv[#csv + 1] = ("ui.user%02d,ui.user%02d@example.com,First%d,Last%d,UI-%d\n"):format(i, i, i, i, i)
    end
    local f = assert(io.open(dir .. "/people.csv", "w"))
    f:write(table.concat(csv))
    f:close()
    local group = assert(http.request { method = "POST", url = srv.url .. "/Groups",
      body = cjson.encode { schemas = { "urn:ietf:params:scim:schemas:core:2.0:Group" }, displayName = "Staff" },
      headers = { Authorization = "Bearer " .. srv.token, ["Content-Type"] = "application/scim+json" } })
    assert(group.status == 201, group.body) -- before the faults: only the items' writes fail
    sbrun.faults(srv, "400:0.2@writes@scim-type=invalidValue,409:0.2@writes@scim-type=uniqueness", 11)
    local state = dir .. "/state.db"
    local code, out = sbrun.run(("examples/onboard.lua --policy fast-test --continue-on-error --state %s "
      .. "--param csv=%s --param group=Staff"):format(state, dir .. "/people.csv"), srv.env)
    assert.are.equal(3, code, out)
    sbrun.faults(srv, nil) -- the cause is fixed: replays go through

    -- the entries the browser acts on: two creates (the provider's records tell their effect)
    local creates = read_state(state, function(db)
      local list = {}
      for _, e in ipairs(db:dlq_list { state = "pending" }) do
        if e.operation == "users.create" then list[#list + 1] = e end
      end
      return list
    end)
    assert.is_true(#creates >= 3, #creates .. " dead letters of creates")
    local replay_e, drop_e = creates[1], creates[2]
    local replay_name = cjson.decode(replay_e.request_body).userName
    local drop_name = cjson.decode(drop_e.request_body).userName
    local users = sbrun.state(srv, "Staff")
    assert.is_nil(users[replay_name])
    assert.is_nil(users[drop_name])

    ui = uihelp.start("--state " .. state, "SCIM_TOKEN=" .. srv.token)
    local dcode, dout, derr = run_bg(dir, ("REPLAY_ID=%d DROP_ID=%d CHROMIUM=%s node spec/browser/drive.js %s %s")
      :format(replay_e.id, drop_e.id, proc.sh_quote(CHROMIUM), proc.sh_quote(ui.url), proc.sh_quote(OUT)), 180)
    assert.are.equal(0, dcode, dout .. derr)
    local r = cjson.decode(dout:match("[^\n]+\n?$") or error("drive.js printed nothing: " .. dout .. derr))
    assert.are.equal(replay_e.id, r.replayed)
    assert.are.equal(drop_e.id, r.dropped)
    assert.are.equal(replay_e.step_key, r.replayed_key)

    -- the provider's own records: the replayed user exists as its payload says, the dropped one does not
    local payload = cjson.decode(replay_e.request_body)
    users = sbrun.state(srv, "Staff")
    local u = users[replay_name]
    assert.is_table(u, replay_name .. " is at the provider after the replay")
    assert.are.equal(payload.externalId, u.externalId)
    assert.are.same(payload.name, u.name)
    assert.is_nil(users[drop_name])

    -- the store: replayed -> the step's result is the provider's user; dropped; audited with who
    read_state(state, function(db)
      local e1, e2 = db:dlq_get(replay_e.id), db:dlq_get(drop_e.id)
      assert.are.equal("replayed", e1.state)
      assert.are.equal("dropped", e2.state)
      local untouched = db:dlq_get(r.untouched)
      assert.are.equal("pending", untouched.state) -- the requests without the token changed nothing
      local step = db:step_get(replay_e.run_id, replay_e.step_key)
      assert.are.equal("completed", step.state)
      assert.are.equal(u.id, cjson.decode(step.result_json).v.id)
      assert.are.equal("failed", db:step_get(drop_e.run_id, drop_e.step_key).state)
      local console, write = {}, nil
      for _, row in ipairs(db:audit_list { run_id = replay_e.run_id }) do
        if row.operation:match("^console%.") then console[#console + 1] = row end
        if row.operation == "users.create" and row.result == "replayed" and row.item == replay_e.step_key then
          write = row
        end
      end
      assert.is_table(write, "the replayed write is in the audit trail")
      assert.are.equal(u.id, write.resource_id)
      assert.are.equal(2, #console)
      local by = {}
      for _, row in ipairs(console) do
        local ch = {}
        for _, c in ipairs(cjson.decode(row.changes_json)) do ch[c.attribute] = c.after end
        by[row.operation] = { row = row, ch = ch }
      end
      assert.are.equal("replayed", by["console.dlq.replay"].row.result)
      assert.are.equal(tostring(replay_e.id), by["console.dlq.replay"].row.resource_id)
      assert.are.equal("127.0.0.1", by["console.dlq.replay"].ch.from)
      assert.is_string(by["console.dlq.replay"].ch.by)
      assert.are.equal("dropped", by["console.dlq.drop"].row.result)
      assert.are.equal("a duplicate in the HR export (browser spec)", by["console.dlq.drop"].ch.reason)
    end)

    -- without the token: refused, from the page and from outside
    assert.are.equal(401, r.page_no_token_status)
    assert.are.equal(401, r.no_token_status)
    assert.are.equal(401, r.wrong_token_status)
    assert.are.equal(401, r.post_no_token_status)
    assert.is_true(r.group_count >= 1)

    -- a screenshot of each page, in the test's output directory
    for _, name in ipairs { "01-runs.png", "02-run.png", "03-item.png", "04-dead-letters.png",
                            "05-confirm-replay.png", "06-replayed.png", "07-confirm-drop.png", "08-confirm-group.png",
                            "09-audit.png", "10-no-token.png" } do
      local png = proc.read_all(OUT .. "/" .. name)
      assert.is_true(#png > 5000 and png:sub(1, 8) == "\137PNG\r\n\26\n", name)
    end
  end)
end)
