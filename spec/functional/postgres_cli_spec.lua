-- Every CLI command works against a PostgreSQL state (issue 16: "Every CLI command (runs, dlq,
-- ui, replay) works against either"): a run whose provider refuses some writes parks them in
-- the dead-letter queue of a postgres:// state; then runs list|show, dlq list|show|replay|drop,
-- audit and scimrun ui (its API, a Replay and a Drop through it) on that URL, the commands they
-- print pasted into a shell, and --resume finishing the items. Also: a URL with a password is
-- refused without ever being shown, --worker needs a postgres:// state, two processes never run
-- one run at once, and no token reaches any table. The spec starts its own throwaway cluster
-- (helpers.pg_cluster); the provider is a sandbox in this process, so its records are the
-- evidence.
local cjson = require "cjson"
local http = require "scimrun.http"
local proc = require "helpers.proc"
local sbrun = require "helpers.sbrun"
local uihelp = require "helpers.ui"
local pg_cluster = require "helpers.pg_cluster"
local echo_server = require "helpers.echo_server"
local query = require("helpers.worker_records").query

local q = proc.sh_quote

-- Every row of every table of schema scimrun, as text (each row whole: all its columns), and
-- the number of tables read.
local function database_text(url)
  local conn = assert(require("scimrun.pg").connect(url))
  local tables = assert(conn:exec("SELECT table_name FROM information_schema.tables "
    .. "WHERE table_schema = 'scimrun' AND table_type = 'BASE TABLE' ORDER BY table_name"))
  local out = {}
  for _, t in ipairs(tables) do
    local rows = assert(conn:exec(('SELECT t::text AS row FROM scimrun."%s" t'):format(t.table_name)))
    for _, r in ipairs(rows) do out[#out + 1] = t.table_name .. ": " .. r.row end
  end
  conn:close()
  return table.concat(out, "\n"), #tables
end

-- `scimrun ARGS --json`, decoded; it must exit 0.
local cli_json = uihelp.cli_json

-- Runs a command line the binary printed ("scimrun ...") in a shell, as an operator pasting it
-- would, without blocking this process (its sandbox must keep answering). Returns code, output.
local function paste(dir, printed, env)
  assert(printed:match("^scimrun "), printed)
  local script = proc.write(("%s/paste-%d.sh"):format(dir, math.random(1, 1e9)),
    ("scimrun() { %s \"$@\"; }\n%s\n"):format(proc.bin, printed))
  local code, out, err = proc.run_bg(dir, "", ("%s sh %s"):format(env or "", script))
  return code, out .. err
end

local same = uihelp.same

local function post_group(srv, name)
  local res = assert(http.request { method = "POST", url = srv.url .. "/Groups",
    body = cjson.encode { schemas = { "urn:ietf:params:scim:schemas:core:2.0:Group" }, displayName = name },
    headers = { Authorization = "Bearer " .. srv.token, ["Content-Type"] = "application/scim+json" } })
  assert(res.status == 201, res.body)
end

describe("the CLI on a postgres:// state", function()
  local cluster, srv, dir
  setup(function()
    assert(pg_cluster.available())
    cluster = pg_cluster.start()
    srv = sbrun.sandbox()
    dir = proc.tmpdir("pgcli")
  end)
  teardown(function()
    if srv then srv.close() end
    if cluster then cluster.stop() end
    if dir then os.execute("rm -rf " .. q(dir)) end
  end)

  describe("after a run with dead letters", function()
    local url, run_id, creates, adds, ui, run_out
    local N = 40
    local function args(extra)
      return ("spec/fixtures/workflows/saga.lua --policy fast-test --state %s --param n=%d --param saga=0 "
        .. "--param member_window=0 %s"):format(q(url), N, extra or "")
    end
    local function entry_state(id) return cli_json(("dlq show %d --json --state %s"):format(id, q(url))).state end

    setup(function()
      sbrun.fresh(srv)
      url = cluster.createdb("cli")
      -- the group exists before the faults start, so only the items' writes fail
      post_group(srv, "Staff")
      sbrun.faults(srv, "400:0.25@writes@scim-type=invalidValue", 5)
      local code, out = sbrun.run(args("--continue-on-error"), srv.env)
      sbrun.faults(srv, nil)
      assert.are.equal(3, code, out)
      run_out = out
      creates, adds = {}, {}
      for _, e in ipairs(proc.dlq(q(url))) do
        if e.operation == "users.create" then creates[#creates + 1] = e end
        if e.operation == "groups.add_member" then adds[#adds + 1] = e end
      end
      assert.is_true(#creates >= 5 and #adds >= 1, ("%d creates, %d adds parked"):format(#creates, #adds))
      run_id = creates[1].run_id
    end)
    teardown(function()
      if ui then ui:stop() end
    end)

    it("runs list and runs show read the run", function()
      local code, out, err = proc.run("runs list --state " .. q(url))
      assert.are.equal(0, code, out .. err)
      assert.matches(run_id:gsub("%-", "%%-") .. "%s+completed_with_dead_letters%s+saga%-fixture", out)
      local runs = cli_json("runs list --json --state " .. q(url))
      assert.are.equal(1, #runs)
      assert.are.equal(run_id, runs[1].id)
      assert.are.equal(#creates + #adds, runs[1].steps.failed)

      code, out, err = proc.run(("runs show %s --state %s"):format(run_id, q(url)))
      assert.are.equal(0, code, out .. err)
      assert.matches("status%s+completed_with_dead_letters %(exit 3%)", out)
      assert.matches(("dead letters %d pending"):format(#creates + #adds), out)
      assert.matches("policy%s+fast%-test", out)
      local show = cli_json(("runs show %s --json --state %s"):format(run_id, q(url)))
      assert.are.equal(#creates + #adds, show.dead_letters)
      -- users created at the provider = create steps completed (the group existed already)
      local users = sbrun.state(srv, "Staff")
      assert.are.equal(N - #creates, proc.count(users))

      code, out, err = proc.run("runs show r-no-such-run --state " .. q(url))
      assert.are.equal(2, code, out)
      assert.matches("no run r%-no%-such%-run", err)
    end)

    it("dlq list and dlq show describe each entry; the commands they print work when pasted", function()
      local code, out, err = proc.run("dlq list --state " .. q(url))
      assert.are.equal(0, code, out .. err)
      for _, e in ipairs(creates) do
        assert.matches(("%d%%s+pending%%s+%s%%s+users%%.create%%s+permanent/400/invalidValue"):format(e.id,
          e.step_key:gsub("%p", "%%%0")), out)
      end
      local details = out:match("Details: (scimrun dlq show ID[^\n]-)   after")
      assert.is_truthy(details, out)
      local e = creates[1]
      code, out = paste(dir, (details:gsub(" ID ", " " .. e.id .. " ")))
      assert.are.equal(0, code, out)
      assert.matches("step_key%s+" .. e.step_key:gsub("%p", "%%%0"), out)

      code, out, err = proc.run(("dlq show %d --state %s"):format(e.id, q(url)))
      assert.are.equal(0, code, out .. err)
      assert.matches("run_id%s+" .. run_id:gsub("%-", "%%-"), out)
      assert.matches("error%s+injected fault: HTTP 400", out)
      assert.matches("attempts\n  %+", out)
      assert.matches("payload\n  {", out)
      assert.matches('"userName":"' .. cjson.decode(e.request_body).userName .. '"', out)
      local shown = cli_json(("dlq show %d --json --state %s"):format(e.id, q(url)))
      assert.are.same({ e.id, "pending", "users.create", 400 },
        { shown.id, shown.state, shown.operation, shown.status })

      -- "drop with: ..." pasted: the entry leaves the pending queue, the item stays failed
      local dropped = creates[#creates]
      local _, dshow = proc.run(("dlq show %d --state %s"):format(dropped.id, q(url)))
      local drop_cmd = dshow:match("drop with: (scimrun dlq drop [^\n]+)")
      assert.is_truthy(drop_cmd, dshow)
      code, out = paste(dir, drop_cmd)
      assert.are.equal(0, code, out)
      assert.matches(("dropped %d %%(%s%%); the item stays failed in run %s"):format(dropped.id,
        dropped.step_key:gsub("%p", "%%%0"), run_id:gsub("%-", "%%-")), out)
      assert.are.equal("dropped", entry_state(dropped.id))
      code, _, err = proc.run(("dlq drop %d --state %s"):format(dropped.id, q(url)))
      assert.are.equal(2, code)
      assert.matches("is dropped, not pending", err)
      assert.are.equal(#creates + #adds - 1, #cli_json("dlq list --json --state-filter pending --state " .. q(url)))
      -- the drop is in the PostgreSQL audit trail: who (the OS user, from the CLI) and why
      local other = creates[#creates - 1]
      code, out = proc.run(("dlq drop %d --reason 'left the company' --state %s"):format(other.id, q(url)))
      assert.are.equal(0, code, out)
      local drops = {}
      for _, r in ipairs(cli_json("audit --json --state " .. q(url))) do
        if r.operation == "dlq.drop" then drops[tonumber(r.resource_id)] = r end
      end
      for _, d in ipairs { { dropped.id, "none recorded" }, { other.id, "left the company" } } do
        local r = drops[d[1]]
        assert.is_table(r, "no audit row for the drop of " .. d[1])
        assert.are.equal("dropped", r.result)
        local changes = {}
        for _, c in ipairs(r.changes) do changes[c.attribute] = c.after end
        assert.are.equal("cli", changes.from)
        assert.is_string(changes.by)
        if d[2] ~= "none recorded" then assert.are.equal(d[2], changes.reason) end
      end
      assert.are.equal(#creates + #adds - 2, #cli_json("dlq list --json --state-filter pending --state " .. q(url)))
    end)

    -- report.lua quotes --state in the commands it prints: bare, the shell would run "scimrun dlq
    -- list --run ID --state postgres://...?host=DIR" in the background, without its port.
    it("the commands the run's summary prints work when pasted", function()
      local see = run_out:match("See them: (scimrun dlq list [^\n]+)")
      assert.is_truthy(see, run_out)
      local code, out = paste(dir, see)
      assert.are.equal(0, code, out)
      for _, e in ipairs(creates) do -- (one was dropped by the test before)
        assert.matches(("%d%%s+%s%%s+%s"):format(e.id, entry_state(e.id), e.step_key:gsub("%p", "%%%0")), out,
          nil, nil, "the summary's command did not reach the run's state: " .. see)
      end
      local show = run_out:match("dead letter %d+: (scimrun dlq show [^\n]+)")
      assert.is_truthy(show, run_out)
      code, out = paste(dir, show)
      assert.are.equal(0, code, out)
      assert.matches("payload\n  {", out, nil, nil, show)
    end)

    it("dlq replay sends nothing that is still refused, and after the fix re-sends the request", function()
      local e = creates[1]
      sbrun.faults(srv, "400:1@writes@scim-type=invalidValue")
      local code, out = sbrun.run(("dlq replay %d --policy fast-test --state %s"):format(e.id, q(url)), srv.env)
      sbrun.faults(srv, nil)
      assert.are.equal(3, code, out)
      assert.matches("still failing " .. e.id, out)
      assert.are.equal("pending", entry_state(e.id))

      -- "replay with: ..." as dlq show prints it, pasted after the cause is gone
      local _, show = proc.run(("dlq show %d --state %s"):format(e.id, q(url)))
      local replay_cmd = show:match("replay with: (scimrun dlq replay [^\n]-)   drop with")
      assert.is_truthy(replay_cmd, show)
      code, out = paste(dir, replay_cmd .. " --policy fast-test", srv.env)
      assert.are.equal(0, code, out)
      assert.matches("1 replayed, 0 still failing", out)
      assert.are.equal("replayed", entry_state(e.id))
      local name = cjson.decode(e.request_body).userName
      local users = sbrun.state(srv, "Staff")
      assert.is_table(users[name], name .. " was created by the replay")
      -- the step holds the provider's answer: a resume goes on from the next step
      local run = cli_json(("runs show %s --json --state %s"):format(run_id, q(url)))
      assert.are.equal(#creates + #adds - 1, run.steps.failed)
    end)

    it("audit lists every write made at the provider, the replayed one included", function()
      local rows = cli_json(("audit --run %s --json --state %s"):format(run_id, q(url)))
      local created, failed, replayed = {}, 0, {}
      for _, r in ipairs(rows) do
        assert.are.equal(run_id, r.run_id)
        if r.operation == "users.create" and r.result == "created" then
          assert.is_nil(created[r.resource_name], "two creates for " .. tostring(r.resource_name))
          created[r.resource_name] = r.resource_id
        elseif r.operation == "users.create" and r.result == "failed" then
          failed = failed + 1
        elseif r.operation == "users.create" and r.result == "replayed" then
          replayed[#replayed + 1] = r
        end
      end
      -- the provider's records: every account there has its one create (or the replay) in the trail
      local users = sbrun.state(srv, "Staff")
      for name, u in pairs(users) do
        local id = created[name]
        if not id then
          assert.are.equal(1, #replayed, name .. " has no create in the audit trail")
          id = replayed[1].resource_id
        end
        assert.are.equal(u.id, id, name)
      end
      assert.are.equal(proc.count(users), proc.count(created) + #replayed)
      assert.is_true(failed >= #creates, failed .. " failed creates recorded")

      local name = next(created)
      local code, text, err = proc.run(("audit --user %s --state %s"):format(name, q(url)))
      assert.are.equal(0, code, text .. err)
      assert.matches("users%.create%s+created%s+users/" .. created[name]:gsub("%p", "%%%0") .. " %(" .. name .. "%)",
        text)
      assert.matches("groups%.add_member", text)
      code, text, err = proc.run("audit --run r-no-such-run --state " .. q(url))
      assert.are.equal(2, code, text)
      assert.matches("no run r%-no%-such%-run", err)
    end)

    it("scimrun ui serves the runs and dead letters, and Replay and Drop act through it", function()
      ui = uihelp.start("--state " .. q(url), "SCIM_TOKEN=" .. srv.token)
      assert.matches("the operator console of " .. url:gsub("%p", "%%%0"), ui.output)
      local info = ui:get("/api/info")
      assert.are.equal(200, info.status, info.body)
      assert.are.equal(url, info.doc.state)
      -- the same documents as the CLI's --json
      local runs = ui:get("/api/runs")
      assert.are.equal(200, runs.status, runs.body)
      same(cli_json("runs list --json --state " .. q(url)), runs.doc, "runs")
      same(cli_json(("runs show %s --json --state %s"):format(run_id, q(url))), ui:get("/api/runs/" .. run_id).doc,
        "run")
      same(proc.dlq(q(url)), ui:get("/api/dlq?state=").doc, "dlq")
      local a, b = creates[2], creates[3]
      same(cli_json(("dlq show %d --json --state %s"):format(a.id, q(url))), ui:get("/api/dlq/" .. a.id).doc, "entry")
      same(cli_json("audit --json --state " .. q(url)), ui:get("/api/audit?limit=100000").doc, "audit")
      local item = ui:get("/api/runs/" .. run_id .. "/items/" .. a.step_key:gsub(":", "%%3A"))
      assert.are.equal(200, item.status, item.body)
      assert.are.equal(a.id, item.doc.dead_letters[1].id)
      assert.are.equal(("scimrun dlq replay %d --state %s"):format(a.id, q(url)),
        item.doc.dead_letters[1].commands.replay)

      -- Replay: the provider gets the user, the entry and the step are recorded as the CLI records them
      local res = ui:post("/api/dlq/replay", { ids = { a.id }, policy = "current" })
      assert.are.equal(200, res.status, res.body)
      assert.are.equal(1, res.doc.replayed, res.body)
      local name = cjson.decode(a.request_body).userName
      local users = sbrun.state(srv, "Staff")
      assert.is_table(users[name], name .. " was created by the console's replay")
      assert.are.equal("replayed", entry_state(a.id))
      local again = ui:post("/api/dlq/replay", { ids = { a.id } })
      assert.are.same({ 0, 1 }, { again.doc.replayed, again.doc.still_failing })

      -- Drop, with a reason kept in the audit trail
      res = ui:post("/api/dlq/drop", { ids = { b.id }, reason = "left the company" })
      assert.are.equal(200, res.status, res.body)
      assert.are.equal(1, res.doc.dropped, res.body)
      assert.are.equal("dropped", entry_state(b.id))
      local actions = {}
      for _, r in ipairs(cli_json(("audit --run %s --json --state %s"):format(run_id, q(url)))) do
        if r.operation:match("^console%.") then actions[#actions + 1] = r.operation .. " " .. r.result end
      end
      assert.are.same({ "console.dlq.replay replayed", "console.dlq.replay refused", "console.dlq.drop dropped" },
        actions)
      local metrics = ui:get("/metrics", { token = false })
      assert.are.equal(200, metrics.status)
      local pending = #cli_json("dlq list --json --state-filter pending --state " .. q(url))
      assert.matches('scimrun_dead_letters_pending{workflow="saga%-fixture"} ' .. pending .. "\n", metrics.body)
      ui:stop()
      ui = nil
    end)

    it("dlq replay --all, then --resume: every item finishes, each user created exactly once", function()
      local pending = cli_json("dlq list --json --state-filter pending --state " .. q(url))
      assert.is_true(#pending >= 3, #pending .. " pending")
      local code, out = sbrun.run("dlq replay --all --policy fast-test --state " .. q(url), srv.env)
      assert.are.equal(0, code, out)
      assert.matches(#pending .. " replayed, 0 still failing", out)
      -- the resume command it prints, pasted
      local resume = out:match("continue run %S+ from the replayed steps with: (scimrun [^\n]+)")
      assert.is_truthy(resume, out)
      local posts = sbrun.stats(srv).by_route["POST /Users"] or 0
      code, out = paste(dir, resume .. " --continue-on-error", srv.env)
      -- the three dropped items (two from the CLI, one from the console) stay failed: the run
      -- ends with them, nothing else
      assert.are.equal(3, code, out)
      assert.matches("completed_with_dead_letters", cli_json(("runs show %s --json --state %s"):format(run_id,
        q(url))).status)
      assert.are.equal(posts, sbrun.stats(srv).by_route["POST /Users"] or 0, "a create was sent again")
      local dropped = {}
      for _, e in ipairs(cli_json("dlq list --json --state-filter dropped --state " .. q(url))) do
        dropped[cjson.decode(e.request_body).userName] = true
      end
      assert.are.equal(3, proc.count(dropped))
      local users, members, dump = sbrun.state(srv, "Staff")
      local per_name = {}
      for _, u in ipairs(dump.users) do per_name[u.userName] = (per_name[u.userName] or 0) + 1 end
      for i = 1, N do
        local name = ("u%04d"):format(i)
        if dropped[name] then
          assert.is_nil(users[name], name .. " was dropped, yet created")
        else
          assert.are.equal(1, per_name[name], name)
          assert.is_true(members[users[name].id], name .. " is a member of Staff")
        end
      end
    end)

    it("keeps the token out of every table of the database", function()
      local text, tables = database_text(url)
      assert.is_true(tables >= 8, tables .. " tables")
      assert.matches(run_id:gsub("%-", "%%-"), text) -- the dump holds the run's rows
      assert.matches("u0001", text)
      assert.is_nil(text:find(srv.token, 1, true), "the token is in the database")
    end)
  end)

  it("keeps a token the provider echoes out of every table, the log and the queue", function()
    local token = "tok-" .. ("7pQ"):rep(8)
    local echo = echo_server.start()
    local url = cluster.createdb("echo")
    local env = ("SCIM_BASE_URL=http://127.0.0.1:%d/scim/v2 SCIM_TOKEN=%s"):format(echo:port(), token)
    local code, out, err = proc.run_bg(dir, ("spec/fixtures/workflows/down.lua --param n=3 --policy fast-test "
      .. "--state %s --continue-on-error --log-format json"):format(q(url)), env)
    echo:close()
    assert.are.equal(3, code, out .. err)
    local _, list = proc.run("dlq list --json --state " .. q(url))
    local entries = cjson.decode(list)
    assert.are.equal(3, #entries)
    local _, show = proc.run(("dlq show %d --state %s"):format(entries[1].id, q(url)))
    local text = database_text(url)
    assert.matches("REDACTED", text) -- the echo did reach the database, redacted
    assert.matches("down%.user001", text)
    for i, t in ipairs { out, err, list, show, text } do
      assert.is_nil(t:find(token, 1, true), ("the token leaked into text %d: %s"):format(i, t:sub(1, 400)))
    end
  end)

  it("refuses a URL with a password in every command, naming PGPASSWORD and never showing it", function()
    local base = cluster.createdb("pw")
    local user_pw = base:gsub("^postgres://postgres@", "postgres://postgres:secret@")
    local param_pw = base .. "&password=secret"
    assert(user_pw ~= base)
    local commands = { "runs list", "runs show r-1", "dlq list", "dlq show 1", "dlq replay --all", "dlq drop 1",
      "audit", "ui", "spec/fixtures/workflows/down.lua --param n=1", "spec/fixtures/workflows/down.lua --resume",
      "spec/fixtures/workflows/down.lua --worker --param n=1" }
    for _, bad in ipairs { user_pw, param_pw } do
      for _, cmd in ipairs(commands) do
        local code, out, err = proc.run(cmd .. " --state " .. q(bad), "SCIM_BASE_URL=http://127.0.0.1:9/scim/v2")
        assert.are.equal(2, code, cmd .. ": " .. out .. err)
        assert.matches("PGPASSWORD", err, 1, true)
        assert.is_nil((out .. err):find("secret", 1, true), cmd .. " showed the password: " .. out .. err)
      end
      -- the same through $SCIMRUN_STATE
      local code, out, err = proc.run("runs list", "SCIMRUN_STATE=" .. q(bad))
      assert.are.equal(2, code, out .. err)
      assert.matches("PGPASSWORD", err, 1, true)
      assert.is_nil((out .. err):find("secret", 1, true))
    end
    -- nothing was written to the database: not even the schema
    local rows = query(base, "SELECT count(*) AS n FROM information_schema.schemata WHERE schema_name = 'scimrun'")
    assert.are.equal(0, rows[1].n)
  end)

  it("--worker without a postgres:// state is a usage error (exit 2)", function()
    local state = dir .. "/worker.db"
    for _, extra in ipairs { "--state " .. q(state), "", "--state " .. q(state) .. " --resume" } do
      local code, out, err = proc.run("spec/fixtures/workflows/down.lua --worker --param n=1 " .. extra,
        "SCIMRUN_STATE=" .. q(state) .. " SCIM_BASE_URL=http://127.0.0.1:9/scim/v2")
      assert.are.equal(2, code, extra .. ": " .. out .. err)
      assert.matches("--worker needs --state postgres://", err, 1, true)
    end
    -- and with a postgres:// state, not with --dry-run
    local code, _, err = proc.run("spec/fixtures/workflows/down.lua --worker --dry-run --state "
      .. q(cluster.createdb("worker_dry")), "SCIM_BASE_URL=http://127.0.0.1:9/scim/v2")
    assert.are.equal(2, code)
    assert.matches("cannot be combined with --dry-run", err, 1, true)
    assert.is_nil(io.open(state), "a state file was created")
  end)

  it("refuses a second process resuming a run that another one is running (the run lock)", function()
    local url = cluster.createdb("lock")
    local wf = "spec/fixtures/workflows/slow_steps.lua --state " .. q(url)
    local log = dir .. "/holder.log"
    local pid = proc.spawn(wf .. " --param n=250 --param delay=0.02", nil, log)
    local id
    local deadline = scimrun.now() + 20
    repeat
      scimrun.sleep(0.05)
      local code, out = proc.run("runs list --state " .. q(url))
      id = code == 0 and out:match("(r%-%d+%-%d+%-%x+)%s+running")
    until id or scimrun.now() > deadline
    assert.is_truthy(id, "the holder did not start: " .. proc.read_all(log))

    local held = ("run %s is in use by another process %%(PostgreSQL backend pid %%d+, scimrun pid %s%%)")
      :format(id:gsub("%-", "%%-"), pid)
    for _, how in ipairs { " --resume " .. id, " --resume" } do
      local code, out, err = proc.run(wf .. how)
      assert.are.equal(2, code, how .. ": " .. out .. err)
      -- one line, the last one (an info line about the run's policy may come first)
      assert.matches("\nscimrun: state database postgres://[^\n]+: " .. held .. "\n$", "\n" .. err)
    end
    -- the resume command `runs show` prints for the running run, pasted: refused the same way
    local _, show = proc.run(("runs show %s --state %s"):format(id, q(url)))
    local resume = show:match("resume%s+(scimrun [^\n]+)")
    assert.is_truthy(resume, show)
    local code, out = paste(dir, resume)
    assert.are.equal(2, code, out)
    assert.matches(held, out)
    assert.is_true(proc.alive(pid), "the holder finished before the second process was tried: make it longer")
    -- readers need no lock
    code, out = proc.run(("dlq list --state %s"):format(q(url)))
    assert.are.equal(0, code, out)

    assert.is_true(proc.wait_gone(pid, 60))
    assert.matches("completed", proc.read_all(log))
    local steps = cli_json(("runs show %s --json --state %s"):format(id, q(url))).steps
    assert.are.same({ 250, 0, 0 }, { steps.completed, steps.failed, steps.started })
    -- once it is done, the lock is free: the resume says so
    code, out = proc.run(wf .. " --resume " .. id)
    assert.are.equal(0, code, out)
    assert.matches("already completed; nothing to resume", out)
  end)
end)
