-- scimrun ui without a browser (issue 14): the API's safety (the token, Host and Origin,
-- --read-only, bad and oversized requests), that it answers what the CLI's --json does, that a
-- Replay through it has the effect of `scimrun dlq replay` by the provider's records and takes
-- the CLI's lock, that actions are audited with who did them, the --sandbox replay path, and
-- /metrics. spec/browser/ui_browser_spec.lua clicks through the same in headless Chromium.
local cjson = require "cjson"
local http = require "scimrun.http"
local proc = require "helpers.proc"
local sbrun = require "helpers.sbrun"
local uihelp = require "helpers.ui"

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  return path
end

local function people(dir, prefix, n)
  local rows = { "userName,email,first_name,last_name,employee_id\n" }
  for i = 1, n do
    rows[#rows + 1] = ("%s%02d,%s%02d@example.com,First%d,Last%d,%s-%d\n"):format(prefix, i, prefix, i, i, i,
      prefix:upper(), i)
  end
  return write(dir .. "/" .. prefix .. ".csv", table.concat(rows))
end

local function with_db(state, fn, writable)
  local db = assert(require("scimrun.store").open(state, { readonly = not writable }))
  local ok, res = pcall(fn, db)
  db:close()
  assert(ok, res)
  return res
end

local function pending_creates(state)
  return with_db(state, function(db)
    local out = {}
    for _, e in ipairs(db:dlq_list { state = "pending" }) do
      if e.operation == "users.create" then out[#out + 1] = e end
    end
    return out
  end)
end

local function dlq_state(state, id) return with_db(state, function(db) return db:dlq_get(id).state end) end

local same = require("helpers.ui").same

local cli_json = require("helpers.ui").cli_json

describe("scimrun ui", function()
  local srv, dir, state, ui, run_id, entries, abs_state
  setup(function()
    srv = sbrun.sandbox()
    dir = proc.tmpdir("ui")
    state = dir .. "/state.db"
    abs_state = state:sub(1, 1) == "/" and state or (io.popen("pwd"):read("*l") .. "/" .. state)
    local group = assert(http.request { method = "POST", url = srv.url .. "/Groups",
      body = cjson.encode { schemas = { "urn:ietf:params:scim:schemas:core:2.0:Group" }, displayName = "Staff" },
      headers = { Authorization = "Bearer " .. srv.token, ["Content-Type"] = "application/scim+json" } })
    assert(group.status == 201, group.body) -- before the faults: only the items' writes fail
    sbrun.faults(srv, "400:0.3@writes@scim-type=invalidValue,409:0.2@writes@scim-type=uniqueness", 5)
    local code, out = sbrun.run(("examples/onboard.lua --policy fast-test --continue-on-error --state %s "
      .. "--param csv=%s --param group=Staff"):format(state, people(dir, "uis", 30)), srv.env)
    assert.are.equal(3, code, out)
    sbrun.faults(srv, nil)
    entries = pending_creates(state)
    assert.is_true(#entries >= 6, #entries .. " pending creates")
    run_id = entries[1].run_id
    ui = uihelp.start("--state " .. state, "SCIM_TOKEN=" .. srv.token)
  end)
  teardown(function()
    if ui then ui:stop() end
    srv.close()
    os.execute("rm -rf '" .. dir .. "'")
  end)

  it("prints its URL with a token made at this start; the page needs none, the API refuses a request without it",
    function()
      assert.matches("^http://127%.0%.0%.1:%d+/#token=%x+$", ui.url)
      assert.is_true(#ui.token >= 32)
      local page = ui:get("/", { token = false })
      assert.are.equal(200, page.status)
      assert.matches("^text/html", page.headers["content-type"])
      assert.matches("script%-src 'self'", page.headers["content-security-policy"])
      assert.are.equal("DENY", page.headers["x-frame-options"])
      assert.are.equal(200, ui:get("/app.js", { token = false }).status)

      local e = entries[1]
      for _, res in ipairs {
        ui:get("/api/runs", { token = false }),
        ui:get("/api/dlq/" .. e.id, { token = "wrong-" .. ui.token:sub(7) }),
        ui:get("/api/runs", { token = "" }),
        ui:post("/api/dlq/drop", { ids = { e.id }, reason = "no token" }, { token = false }),
        ui:post("/api/dlq/replay", { ids = { e.id } }, { token = false }),
      } do
        assert.are.equal(401, res.status, res.body)
        assert.matches("missing or wrong token", res.doc.error)
      end
      assert.are.equal("pending", dlq_state(state, e.id))
      -- the other header scripts may use
      local ok = ui:get("/api/runs", { token = false, headers = { ["X-Scimrun-Token"] = ui.token } })
      assert.are.equal(200, ok.status)
      assert.are.equal(run_id, ok.doc[1].id)
      assert.are.equal("no-store", ok.headers["cache-control"])
    end)

  it("refuses a foreign Origin and a Host that is not its address (DNS rebinding), even with the token", function()
    local e = entries[1]
    local origin = "http://127.0.0.1:" .. ui.port
    for _, h in ipairs { { Origin = "http://evil.example" }, { Origin = "null" },
                         { Origin = "http://127.0.0.1:" .. (ui.port + 1) }, { ["Sec-Fetch-Site"] = "cross-site" } } do
      local res = ui:get("/api/runs", { headers = h })
      assert.are.equal(403, res.status, cjson.encode(h))
      res = ui:post("/api/dlq/drop", { ids = { e.id }, reason = "cross-site" }, { headers = h })
      assert.are.equal(403, res.status, cjson.encode(h))
    end
    assert.are.equal("pending", dlq_state(state, e.id))
    assert.are.equal(200, ui:get("/api/runs", { headers = { Origin = origin, ["Sec-Fetch-Site"] = "same-origin" } })
      .status)
    for _, host in ipairs { "evil.example:" .. ui.port, "evil.example", "127.0.0.1:" .. (ui.port + 1),
                            "attacker.localhost.example:" .. ui.port } do
      assert.are.equal(403, ui:get("/", { headers = { Host = host } }).status, host)
      assert.are.equal(403, ui:get("/api/runs", { headers = { Host = host } }).status, host)
    end
    assert.are.equal(200, ui:get("/api/runs", { headers = { Host = "localhost:" .. ui.port } }).status)
  end)

  it("answers bad or oversized requests with a 4xx and keeps serving", function()
    local e = entries[1]
    local function status(res) return res.status end
    assert.are.equal(415, status(ui:request { method = "POST", path = "/api/dlq/drop", body = '{"ids":[1]}',
      headers = { ["Content-Type"] = "text/plain" } }))
    for _, body in ipairs { "{not json", "[1,2]", "null", '"x"' } do
      assert.are.equal(400, status(ui:request { method = "POST", path = "/api/dlq/drop", body = body,
        headers = { ["Content-Type"] = "application/json" } }), body)
    end
    for _, body in ipairs { {}, { ids = {} }, { ids = { "1" } }, { ids = { 1.5 } }, { ids = { -1 } },
                            { ids = { e.id } }, { ids = { e.id }, reason = "   " },
                            { ids = { e.id }, reason = ("x"):rep(501) } } do
      assert.are.equal(400, status(ui:post("/api/dlq/drop", body)), cjson.encode(body))
    end
    assert.are.equal(400, status(ui:post("/api/dlq/replay", { ids = { e.id }, policy = "../../etc/passwd" })))
    assert.are.equal(413, status(ui:request { method = "POST", path = "/api/dlq/drop",
      body = '{"ids":[1],"reason":"' .. ("x"):rep(100 * 1024) .. '"}',
      headers = { ["Content-Type"] = "application/json" } }))
    assert.are.equal(405, status(ui:request { method = "PUT", path = "/api/dlq/drop", body = "{}" }))
    assert.are.equal(405, status(ui:request { method = "DELETE", path = "/" }))
    assert.are.equal(405, status(ui:get("/api/dlq/replay")))
    assert.are.equal(404, status(ui:get("/api/nothing")))
    assert.are.equal(404, status(ui:get("/api/runs/r-no-such-run")))
    assert.are.equal(404, status(ui:get("/api/runs/" .. run_id .. "/items/no-such-step")))
    assert.are.equal(400, status(ui:get("/api/dlq/abc")))
    assert.are.equal(404, status(ui:get("/api/dlq/999999")))
    assert.are.equal(400, status(ui:get("/api/runs?limit=abc")))
    assert.are.equal(400, status(ui:get("/api/runs?status=bogus")))
    assert.are.equal(400, status(ui:get("/api/runs/" .. run_id .. "/items?offset=-3")))
    assert.are.equal(404, status(ui:get("/../../etc/passwd", { token = false })))
    assert.are.equal(431, status(ui:get("/api/runs", { headers = { ["X-Big"] = ("y"):rep(20000) } })))
    -- not HTTP at all, straight on the socket
    local p = io.popen(("timeout 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/%d; printf \"GARBAGE\\r\\n\\r\\n\" >&3; "
      .. "head -c 12 <&3'"):format(ui.port))
    local answer = p:read("*a")
    p:close()
    assert.matches("^HTTP/1%.1 400", answer)
    assert.are.equal("pending", dlq_state(state, e.id))
    local info = ui:get("/api/info")
    assert.are.equal(200, info.status)
    assert.are.equal(abs_state, info.doc.state)
  end)

  it("answers what the CLI's --json does", function()
    local runs = ui:get("/api/runs").doc
    same(cli_json("runs list --json --state " .. state), runs, "runs")
    same(cli_json("runs show " .. run_id .. " --json --state " .. state), ui:get("/api/runs/" .. run_id).doc, "run")
    local list = ui:get("/api/dlq?state=").doc
    same(cli_json("dlq list --json --state " .. state), list, "dlq")
    same(cli_json("dlq show " .. entries[1].id .. " --json --state " .. state),
      ui:get("/api/dlq/" .. entries[1].id).doc, "dlq entry")
    same(cli_json("audit --json --state " .. state), ui:get("/api/audit?limit=100000").doc, "audit")
    -- the groups: "N x 409 uniqueness", every pending entry in one of them
    local groups, n = ui:get("/api/dlq/groups").doc, 0
    for _, g in ipairs(groups) do
      n = n + g.count
      assert.are.equal(#g.ids, g.count)
      assert.matches("^%d%d%d %a+$", g.label)
    end
    assert.are.equal(#cli_json("dlq list --json --state-filter pending --state " .. state), n)
    -- the items of the run: searchable by key, filterable by state and class
    local items = ui:get("/api/runs/" .. run_id .. "/items?state=failed&class=permanent").doc
    assert.is_true(items.total >= 1)
    for _, it in ipairs(items.items) do
      assert.are.equal("failed", it.state)
      assert.are.equal("permanent", it.class)
    end
    local one = ui:get("/api/runs/" .. run_id .. "/items?q=" .. entries[1].step_key:gsub(":", "%%3A")).doc
    assert.are.equal(entries[1].step_key, one.items[1].key)
    local item = ui:get("/api/runs/" .. run_id .. "/items/" .. entries[1].step_key:gsub(":", "%%3A")).doc
    assert.are.equal("failure", item.history[2].type)
    assert.are.equal(entries[1].id, item.dead_letters[1].id)
    assert.are.equal(cjson.decode(entries[1].request_body).userName, item.payload.userName)
    assert.are.equal(("scimrun dlq replay %d --state %s"):format(entries[1].id, abs_state),
      item.dead_letters[1].commands.replay)
  end)

  it("Replay has the effect of scimrun dlq replay, by the provider's records, under the CLI's lock", function()
    local a, b = entries[2], entries[3]
    -- while another process holds the state file's writer lock, the action is refused and changes nothing
    write(dir .. "/hold.lua", "local db = assert(require('scimrun.store').open(arg[1], {}))\n"
      .. "io.stdout:write('locked\\n'); io.stdout:flush(); scimrun.sleep(30); db:close()\n")
    local holder = proc.spawn(("-l %s %s"):format(dir .. "/hold.lua", state), nil, dir .. "/hold.log")
    local deadline = scimrun.now() + 10
    while not proc.read_all(dir .. "/hold.log"):find("locked") and scimrun.now() < deadline do scimrun.sleep(0.05) end
    local refused = ui:post("/api/dlq/replay", { ids = { a.id } })
    os.execute("kill " .. holder)
    proc.wait_gone(holder, 10)
    assert.are.equal(409, refused.status, refused.body)
    assert.matches("in use by another scimrun %(pid " .. holder .. "%)", refused.doc.error)
    assert.are.equal("pending", dlq_state(state, a.id))

    local res = ui:post("/api/dlq/replay", { ids = { a.id }, policy = "current" })
    assert.are.equal(200, res.status, res.body)
    assert.are.equal(1, res.doc.replayed)
    assert.are.equal(("scimrun dlq replay %d --state %s"):format(a.id, abs_state), res.doc.command)
    local code, out, err = proc.run_bg(dir, ("dlq replay %d --state %s"):format(b.id, state),
      "SCIM_TOKEN=" .. srv.token)
    assert.are.equal(0, code, out .. err)

    local users = sbrun.state(srv, "Staff")
    local state_of = {}
    for _, e in ipairs { a, b } do
      local payload = cjson.decode(e.request_body)
      local u = users[payload.userName]
      assert.is_table(u, payload.userName)
      assert.are.equal(payload.externalId, u.externalId)
      assert.are.same(payload.emails, u.emails)
      local s = with_db(state, function(db)
        local step = db:step_get(e.run_id, e.step_key)
        local writes, console = 0, 0
        for _, row in ipairs(db:audit_list { run_id = e.run_id }) do
          if row.item == e.step_key and row.operation == "users.create" and row.result == "replayed" then
            writes = writes + 1
            assert.are.equal(u.id, row.resource_id)
          end
          if row.item == e.step_key and row.operation == "console.dlq.replay" then console = console + 1 end
        end
        return { dlq = db:dlq_get(e.id).state, step = step.state, id = cjson.decode(step.result_json).v.id,
                 writes = writes, console = console }
      end)
      assert.are.equal(u.id, s.id)
      state_of[#state_of + 1] = s
    end
    -- the same effect: the entry, the step, the write in the audit trail; only the console's action row differs
    assert.are.same({ dlq = "replayed", step = "completed", writes = 1 },
      { dlq = state_of[1].dlq, step = state_of[1].step, writes = state_of[1].writes })
    assert.are.same({ dlq = "replayed", step = "completed", writes = 1 },
      { dlq = state_of[2].dlq, step = state_of[2].step, writes = state_of[2].writes })
    assert.are.same({ 1, 0 }, { state_of[1].console, state_of[2].console })
    -- a second replay of the same entry is refused, and says why
    local again = ui:post("/api/dlq/replay", { ids = { a.id } })
    assert.are.equal(200, again.status)
    assert.are.same({ 0, 1 }, { again.doc.replayed, again.doc.still_failing })
    assert.matches("replayed, not pending", again.doc.results[1].why)
  end)

  it("--read-only shows everything and allows no action", function()
    local ro = uihelp.start("--state " .. state .. " --read-only", "SCIM_TOKEN=" .. srv.token)
    local e = entries[4]
    local ok, err = pcall(function()
      assert.matches("read%-only", ro.output)
      assert.is_true(ro:get("/api/info").doc.read_only)
      assert.are.equal(200, ro:get("/api/dlq").status)
      assert.are.equal(200, ro:get("/api/dlq/" .. e.id).status)
      assert.are.equal(403, ro:post("/api/dlq/replay", { ids = { e.id } }).status)
      local res = ro:post("/api/dlq/drop", { ids = { e.id }, reason = "read-only" })
      assert.are.equal(403, res.status)
      assert.matches("read%-only", res.doc.error)
    end)
    ro:stop()
    assert(ok, err)
    assert.are.equal("pending", dlq_state(state, e.id))
  end)

  it("Drop needs a reason; every action is in the audit trail with who did it, shown by scimrun audit", function()
    local e = entries[4]
    local res = ui:post("/api/dlq/drop", { ids = { e.id, 999999 }, reason = "left the company\nbefore the run" })
    assert.are.equal(200, res.status, res.body)
    assert.are.same({ 1, 1 }, { res.doc.dropped, res.doc.refused })
    assert.are.equal(("scimrun dlq drop %d --reason 'left the company before the run' --state %s"):format(e.id,
      abs_state), res.doc.command)
    assert.are.equal("dropped", dlq_state(state, e.id))
    local rows = cli_json("audit --json --run " .. e.run_id .. " --state " .. state)
    local drop
    for _, r in ipairs(rows) do
      if r.operation == "console.dlq.drop" then drop = r end
    end
    assert.is_table(drop)
    assert.are.equal("dropped", drop.result)
    assert.are.equal(tostring(e.id), drop.resource_id)
    assert.are.equal(e.step_key, drop.item)
    local ch = {}
    for _, c in ipairs(drop.changes) do ch[c.attribute] = c.after end
    assert.are.equal("127.0.0.1", ch.from)
    assert.is_truthy(ch.by ~= nil and ch.by ~= "")
    assert.are.equal("left the company before the run", ch.reason)
    local _, text = proc.run("audit --run " .. e.run_id .. " --state " .. state)
    assert.matches("console%.dlq%.drop%s+dropped%s+dead_letter/" .. e.id, text)
    assert.matches('by = "[^"]+"; from = "127%.0%.0%.1"; reason = "left the company before the run"', text)
    -- the API's audit page has it too
    local api_rows = ui:get("/api/audit?run=" .. e.run_id).doc
    assert.are.equal("console.dlq.drop", api_rows[#api_rows].operation)
  end)

  it("shows a running run's progress live, from the row the run keeps in its state file", function()
    local lstate = dir .. "/live.db"
    local h = sbrun.spawn(("examples/onboard.lua --sandbox=latency:100ms --param concurrency=2 --policy fast-test "
      .. "--state %s --param csv=%s"):format(lstate, people(dir, "uilive", 40)))
    local deadline = scimrun.now() + 30
    while scimrun.now() < deadline and not io.open(lstate) do scimrun.sleep(0.05) end
    local live = uihelp.start("--state " .. lstate)
    local ok, err = pcall(function()
      local seen = {}
      while scimrun.now() < deadline and #seen < 2 do
        local r = live:get("/api/runs").doc[1]
        if r and r.status == "running" and type(r.progress) == "table" and r.progress.done > 0 then
          assert.are.equal(40, r.progress.total)
          if #seen == 0 or r.progress.done > seen[#seen] then seen[#seen + 1] = r.progress.done end
        end
        scimrun.sleep(0.2)
      end
      assert.is_true(#seen >= 2, "progress seen while running: " .. table.concat(seen, ", "))
      local code, out = sbrun.wait(h, 60)
      assert.are.equal(0, code, out)
      local r = live:get("/api/runs").doc[1]
      assert.are.equal("completed", r.status)
      assert.are.same({ 40, 40, 0, 0 }, { r.progress.done, r.counts.created, r.counts.failed, r.counts.dead_letters })
      local detail = live:get("/api/runs/" .. r.id).doc
      assert.matches("^127%.0%.0%.1:%d+$", detail.targets[1].name)
      assert.are.equal("closed", detail.targets[1].breaker)
    end)
    live:stop()
    assert(ok, err)
  end)

  it("serves the state file's gauges at /metrics", function()
    local res = ui:get("/metrics", { token = false })
    assert.are.equal(200, res.status)
    assert.matches("^text/plain; version=0%.0%.4", res.headers["content-type"])
    local pending = #cli_json("dlq list --json --state-filter pending --state " .. state)
    assert.matches('scimrun_dead_letters_pending{workflow="onboard"} ' .. pending .. "\n", res.body)
    assert.matches('scimrun_run_status{workflow="onboard",status="completed_with_dead_letters"} 1\n', res.body)
    assert.matches('scimrun_last_success_timestamp_seconds{workflow="onboard"} %d', res.body)
  end)

  it("--sandbox replays against the sandbox data kept beside the state file", function()
    local sstate = dir .. "/sb.db"
    local code, out = proc.run_bg(dir, ("examples/onboard.lua --sandbox=400:0.3@writes@scim-type=invalidValue "
      .. "--seed 3 --policy fast-test --continue-on-error --state %s --param csv=%s"):format(sstate,
      people(dir, "uisb", 12)))
    assert.are.equal(3, code, out)
    local e = pending_creates(sstate)[1]
    local name = cjson.decode(e.request_body).userName
    local sui = uihelp.start("--state " .. sstate .. " --sandbox")
    local res = sui:post("/api/dlq/replay", { ids = { e.id }, policy = "original" })
    sui:stop()
    assert.are.equal(200, res.status, res.body)
    assert.are.equal(1, res.doc.replayed, res.body)
    assert.matches("%-%-policy original", res.doc.command)
    assert.matches("%-%-sandbox", res.doc.command)
    assert.matches("policy: the snapshot of run", res.doc.output)
    local sb = assert(require("scimrun.sandbox").new { persist = sstate .. ".sandbox.json" })
    local found
    for _, u in ipairs(sb:dump().users) do
      if u.userName == name then found = u end
    end
    sb:close()
    assert.is_table(found, name .. " is in the sandbox's data")
    assert.are.equal("replayed", dlq_state(sstate, e.id))
  end)

  it("refuses bad options with one line and exit 2; --token-file gives the token", function()
    local tf = write(dir .. "/ui.token", "tok-0123456789abcdef-xyz\n")
    os.execute("chmod 644 '" .. tf .. "'")
    for args, msg in pairs {
      ["--token-file " .. tf] = "is readable by others",
      ["--bind localhost"] = "must be an IP address",
      ["--port 70000"] = "must be a port number",
      ["extra"] = "takes no positional arguments",
    } do
      local code, _, err = proc.run("ui --state " .. state .. " " .. args)
      assert.are.equal(2, code, args)
      assert.matches(msg, err, 1, true)
    end
    local code, _, err = proc.run("ui --state " .. dir .. "/missing.db")
    assert.are.equal(2, code)
    assert.matches("no state file at", err)
    os.execute("chmod 600 '" .. tf .. "'")
    write(dir .. "/short.token", "short\n")
    os.execute("chmod 600 '" .. dir .. "/short.token'")
    code, _, err = proc.run("ui --state " .. state .. " --token-file " .. dir .. "/short.token")
    assert.are.equal(2, code)
    assert.matches("at least 16 characters", err)
    local t = uihelp.start("--state " .. state .. " --token-file " .. tf)
    local ok, perr = pcall(function()
      assert.is_nil(t.output:find("tok-0123456789abcdef-xyz", 1, true))
      assert.are.equal(200, t:get("/api/info", { token = "tok-0123456789abcdef-xyz" }).status)
      assert.are.equal(401, t:get("/api/info", { token = "tok-0123456789abcdef-xyZ" }).status)
    end)
    t:stop()
    assert(ok, perr)
  end)
end)
