-- Continue-on-error and the dead-letter queue through the binary: which items land there, the
-- tolerated-failure limit, `scimrun dlq list|show|replay|drop`, replay then --resume, the
-- --sandbox replay path, and the queue's bounds (max_size, retention_days).
local cjson = require "cjson"
local http = require "scimrun.http"
local proc = require "helpers.proc"
local sbrun = require "helpers.sbrun"

local function dlq(state, extra)
  local code, out, err = proc.run("dlq list --json --state " .. state .. " " .. (extra or ""))
  assert.are.equal(0, code, out .. err)
  return cjson.decode(out)
end

local function count_by_route(srv, route)
  return sbrun.stats(srv).by_route[route] or 0
end

describe("dead-letter queue", function()
  local srv, dir
  setup(function()
    srv = sbrun.sandbox()
    dir = proc.tmpdir("dlq")
  end)
  teardown(function() srv.close() end)
  before_each(function() sbrun.fresh(srv) end)

  local args = sbrun.saga_args

  it("with continue-on-error parks exactly the 5% failing items of 500; all others are done", function()
    local state = dir .. "/coe.db"
    local code, out = sbrun.run(args(state, "--param n=500 --param bad_every=20 --param concurrency=16"
      .. " --continue-on-error"), srv.env)
    assert.are.equal(3, code, out)
    assert.matches("dead letters: 25 waiting", out)
    local entries = dlq(state)
    assert.are.equal(25, #entries)
    local parked = {}
    for _, e in ipairs(entries) do
      local i = tonumber(e.step_key:match("^user:u(%d+)$"))
      assert.is_truthy(i, e.step_key)
      assert.are.equal(0, i % 20)
      parked[i] = true
      assert.are.equal("permanent", e.class)
      assert.are.equal(400, e.status)
      assert.are.equal("invalidValue", e.scim_type)
      assert.are.equal("users.create", e.operation)
      assert.matches('"active":"False"', e.request_body)
    end
    local users, members = sbrun.state(srv, "Staff")
    local n = 0
    for name, u in pairs(users) do
      n = n + 1
      assert.is_nil(parked[tonumber(name:match("%d+"))], name)
      assert.is_true(u.active, name)
      assert.is_true(members[u.id], name)
    end
    assert.are.equal(475, n)

    -- list: each failed item with its reason and what to do
    local lcode, list = proc.run("dlq list --state " .. state)
    assert.are.equal(0, lcode)
    local _, todo = list:gsub("what to do: fix the data in the source, then: scimrun dlq replay %d+", "")
    assert.are.equal(25, todo)
    for i = 20, 500, 20 do
      assert.matches(("user:u%04d%%s+users%%.create%%s+permanent/400/invalidValue%%s+active must be a JSON boolean")
        :format(i), list)
    end

    -- drop: the entry leaves the pending queue; dropping it twice is refused
    local id = entries[1].id
    local dcode, dout = proc.run(("dlq drop %d --state %s"):format(id, state))
    assert.are.equal(0, dcode, dout)
    assert.matches("dropped " .. id, dout)
    assert.are.equal(24, #dlq(state, "--state-filter pending"))
    assert.are.equal("dropped", cjson.decode((select(2, proc.run(("dlq show %d --json --state %s"):format(id,
      state))))).state)
    dcode, dout = proc.run(("dlq drop %d --state %s"):format(id, state))
    assert.are.equal(2, dcode, dout)

    -- several at once, with a reason: each is in the audit trail with who and why; one bad ID
    -- among them drops nothing, and so does an empty reason
    local a, b = entries[2].id, entries[3].id
    local derr
    dcode, _, derr = proc.run(("dlq drop %d 999999 %d --reason 'left' --state %s"):format(a, b, state))
    assert.are.equal(2, dcode, derr)
    assert.matches("no dead letter 999999.*nothing was dropped", derr)
    dcode, _, derr = proc.run(("dlq drop %d --reason ' ' --state %s"):format(a, state))
    assert.are.equal(2, dcode, derr)
    assert.matches("%-%-reason: say why", derr)
    -- a flag of another subcommand is refused, not ignored
    dcode, _, derr = proc.run(("dlq list --reason 'left' --state %s"):format(state))
    assert.are.equal(2, dcode, derr)
    assert.matches("%-%-reason is for scimrun dlq drop, not list", derr)
    assert.are.equal(24, #dlq(state, "--state-filter pending"))
    dcode, dout = proc.run(("dlq drop %d %d --reason 'left the company\tbefore the import' --state %s")
      :format(a, b, state))
    assert.are.equal(0, dcode, dout)
    assert.are.equal(22, #dlq(state, "--state-filter pending"))
    local _, aout = proc.run("audit --json --state " .. state)
    local drops = {}
    for _, r in ipairs(cjson.decode(aout)) do
      if r.operation == "dlq.drop" then drops[tonumber(r.resource_id)] = r end
    end
    for _, d in ipairs { a, b } do
      local r = drops[d]
      assert.is_table(r, "no audit row for the drop of " .. d)
      assert.are.equal("dropped", r.result)
      local changes = {}
      for _, c in ipairs(r.changes) do changes[c.attribute] = c.after end
      assert.are.equal("left the company before the import", changes.reason)
      assert.are.equal("cli", changes.from)
      assert.is_string(changes.by)
    end
    -- an ID given twice is dropped and recorded once; IDs are whole numbers, nothing else
    local c = entries[4].id
    dcode, dout = proc.run(("dlq drop %d %d --reason twice --state %s"):format(c, c, state))
    assert.are.equal(0, dcode, dout)
    _, aout = proc.run("audit --json --state " .. state)
    local rows_c = 0
    for _, r in ipairs(cjson.decode(aout)) do
      if r.operation == "dlq.drop" and r.resource_id == tostring(c) then rows_c = rows_c + 1 end
    end
    assert.are.equal(1, rows_c)
    dcode, _, derr = proc.run(("dlq drop 0x%x --state %s"):format(entries[5].id, state))
    assert.are.equal(2, dcode, derr)
    assert.matches("whole numbers", derr)
    assert.are.equal(21, #dlq(state, "--state-filter pending"))
  end)

  it("stops the run when max_failed_items (a count) is crossed", function()
    local state = dir .. "/max.db"
    local code, out = sbrun.run(args(state, "--param n=500 --param bad_every=20 --param concurrency=8"
      .. " --continue-on-error"), "SAGA_MAX_FAILED=5 " .. srv.env)
    assert.are.equal(1, code, out)
    assert.matches("tolerated%-failure limit crossed: 6 of %d+ items failed %(max_failed_items = 5%)", out)
    local n = #dlq(state)
    assert.is_true(n >= 6 and n <= 7, n .. " entries") -- one more may have been in flight
    local users = sbrun.state(srv, "Staff")
    local created = 0
    for _ in pairs(users) do created = created + 1 end
    assert.is_true(created < 200, created .. " users: dispatch went on")
  end)

  it("takes max_failed_items as a percentage of the items dispatched", function()
    local code, out = sbrun.run(args(dir .. "/pct10.db", "--param n=100 --param bad_every=20 --continue-on-error"),
      "SAGA_MAX_FAILED=10% " .. srv.env)
    assert.are.equal(3, code, out) -- 5% failed: under the limit
    srv.sb:reset()
    code, out = sbrun.run(args(dir .. "/pct2.db", "--param n=100 --param bad_every=20 --continue-on-error"),
      "SAGA_MAX_FAILED=2% " .. srv.env)
    assert.are.equal(1, code, out)
    assert.matches("tolerated%-failure limit crossed: 1 of %d+ items failed %(max_failed_items = 2%%%)", out)
  end)

  it("replays entries after the cause is gone; --resume continues those items from their next step", function()
    local state = dir .. "/replay.db"
    -- the group exists before the faults start, so only item writes fail
    assert(http.request { method = "POST", url = srv.url .. "/Groups", body = cjson.encode { displayName = "Staff" },
      headers = { Authorization = "Bearer " .. srv.token, ["Content-Type"] = "application/scim+json" } })
    sbrun.faults(srv, "400:0.2@writes@scim-type=invalidValue", 5)
    -- one membership PATCH per item (no coalescing), so random 400s land on single adds too
    local code, out = sbrun.run(args(state, "--param n=40 --param saga=0 --param member_window=0 --continue-on-error"),
      srv.env)
    assert.are.equal(3, code, out)
    local entries = dlq(state)
    local creates, adds = 0, 0
    for _, e in ipairs(entries) do
      if e.operation == "users.create" then creates = creates + 1 end
      if e.operation == "groups.add_member" then adds = adds + 1 end
      assert.matches("injected fault: HTTP 400", e.last_error)
    end
    assert.is_true(creates > 0 and adds > 0, ("%d creates, %d adds parked"):format(creates, adds))
    local run_id = entries[1].run_id

    local scode, show = proc.run(("dlq show %d --state %s"):format(entries[1].id, state))
    assert.are.equal(0, scode)
    assert.matches("error%s+injected fault: HTTP 400", show)
    assert.matches("what to do%s+fix the data in the source, then: scimrun dlq replay " .. entries[1].id, show)
    assert.matches("payload\n  {", show)

    -- still failing while the fault is on: nothing is marked
    sbrun.faults(srv, "400:1@writes@scim-type=invalidValue")
    local rcode, rout = sbrun.run("dlq replay " .. entries[1].id .. " --policy fast-test --state " .. state, srv.env)
    assert.are.equal(3, rcode, rout)
    assert.matches("still failing " .. entries[1].id, rout)
    assert.are.equal("pending", dlq(state)[1].state)

    sbrun.faults(srv, nil)
    rcode, rout = sbrun.run("dlq replay --all --policy fast-test --state " .. state, srv.env)
    assert.are.equal(0, rcode, rout)
    assert.matches(#entries .. " replayed, 0 still failing", rout)
    assert.matches("scimrun .*saga%.lua %-%-resume " .. run_id:gsub("%-", "%%-"), rout)
    for _, e in ipairs(dlq(state)) do assert.are.equal("replayed", e.state) end
    -- each replay is in the audit trail: who, from the CLI, with which policy, and its result
    local _, aout = proc.run("audit --json --state " .. state)
    local replays = {}
    for _, r in ipairs(cjson.decode(aout)) do
      if r.operation == "dlq.replay" then
        local id = tonumber(r.resource_id)
        replays[id] = replays[id] or {}
        table.insert(replays[id], r.result)
        local changes = {}
        for _, c in ipairs(r.changes) do changes[c.attribute] = c.after end
        assert.are.same({ "cli", "fast-test" }, { changes.from, changes.policy })
        assert.is_string(changes.by)
      end
    end
    for _, e in ipairs(entries) do
      table.sort(replays[e.id] or {})
      local want = e.id == entries[1].id and { "replayed", "still_failing" } or { "replayed" }
      assert.are.same(want, replays[e.id], "the audit rows of the replays of " .. e.id)
    end

    local posts = count_by_route(srv, "POST /Users")
    code, out = sbrun.run(args(state, "--resume " .. run_id .. " --continue-on-error"), srv.env)
    assert.are.equal(0, code, out)
    -- the replayed creates were not sent again: the items went on from their member step
    assert.are.equal(posts, count_by_route(srv, "POST /Users"))
    local users, members = sbrun.state(srv, "Staff")
    for i = 1, 40 do
      local u = users[("u%04d"):format(i)]
      assert.is_truthy(u, "user " .. i)
      assert.is_true(members[u.id], "member " .. i)
    end
  end)

  it("replays against the --sandbox of the run, restarted from its journal on a new port", function()
    local state = dir .. "/sbx.db"
    -- one item at a time: the sandbox draws its faults by request number, so the order of the
    -- requests (not the timing of concurrent items) decides which writes fail
    local code, out = proc.run(args(state, "--param n=20 --param group=none --param concurrency=1"
      .. " --param saga=0 --continue-on-error --seed 3 --sandbox=400:0.3@writes@scim-type=invalidValue"))
    assert.are.equal(3, code, out)
    local entries = dlq(state)
    local parked = #entries
    assert.is_true(parked > 0)
    local rcode, rout = proc.run("dlq replay --all --sandbox --policy fast-test --state " .. state)
    assert.are.equal(0, rcode, rout)
    assert.matches(parked .. " replayed, 0 still failing", rout)
    local sb = assert(require("scimrun.sandbox").new { persist = state .. ".sandbox.json" })
    local d = sb:dump()
    sb:close()
    assert.are.equal(20, #d.users)
    code, out = proc.run(args(state, "--resume " .. entries[1].run_id
      .. " --sandbox --continue-on-error"))
    assert.are.equal(0, code, out)
    assert.matches("completed", out)
  end)

  it("refuses to park more than dead_letter.max_size entries: the item fails the run", function()
    local state = dir .. "/full.db"
    local code, out = sbrun.run("spec/fixtures/workflows/saga.lua --policy spec/fixtures/policies/dlq_small.lua"
      .. " --state " .. state
      .. " --param n=100 --param bad_every=10 --param concurrency=1 --continue-on-error", srv.env)
    assert.are.equal(1, code, out)
    assert.matches("dead%-letter queue is full %(3 pending entries, dead_letter.max_size = 3%)", out)
    assert.matches("raise dead_letter.max_size", out)
    assert.are.equal(3, #dlq(state))
  end)
end)

describe("dead-letter bounds in the engine", function()
  local workflow = require "scimrun.workflow"
  local store = require "scimrun.store"
  local core = require "scimrun.core"
  local dir, db
  setup(function() dir = proc.tmpdir("dlqeng") end)
  after_each(function()
    core.at_turn_end(nil)
    if db then db:close(); db = nil end
  end)

  local function open(name)
    db = assert(store.open(dir .. "/" .. name))
    assert(db:run_create { id = "r-1", workflow_name = "t", workflow_path = "/t.lua", workflow_hash = "h" })
    return db
  end

  local function range(n)
    local i = 0
    return function() i = i + 1; if i <= n then return i end end
  end

  local function engine(opts)
    local e = workflow.engine(opts)
    core.at_turn_end(function() e:flush() end)
    return e
  end

  it("fails the item, and the run, when the queue is full instead of dropping it", function()
    open("full.db")
    local e = engine { db = db, run_id = "r-1", continue_on_error = true, dead_letter = { max_size = 3 },
      log = function() end }
    local ok, err = pcall(e.each, e, range(10), { concurrency = 1 }, function(i)
      e:step("s" .. i, function() return nil, { class = "permanent", status = 400, detail = "bad " .. i } end)
    end)
    assert.is_false(ok)
    assert.are.equal("dead_letter_full", err.class)
    assert.matches("dead%-letter queue is full %(3 pending entries, dead_letter.max_size = 3%)", err.detail)
    assert.are.equal(3, db:dlq_count { state = "pending" })
    assert.are.equal(4, e.stats.failed) -- dispatch stopped at the item that could not be parked
  end)

  it("prunes entries older than retention_days when a run starts, and calls the hook for new ones", function()
    open("prune.db")
    local seen = {}
    local e = engine { db = db, run_id = "r-1", continue_on_error = true, log = function() end,
      dead_letter = { on_dead_letter = function(entry) seen[#seen + 1] = entry end } }
    pcall(e.each, e, range(4), function(i)
      e:step("s" .. i, function()
        return nil, { class = "conflict", status = 409, op = "users.create", detail = "no" }
      end)
    end)
    assert.are.equal(4, #seen)
    assert.are.equal("conflict", seen[1].class)
    assert.matches("^the target reports a conflict for this user", seen[1].suggest)
    assert.is_false(seen[1].is_compensation)
    assert.are.equal(4, db:dlq_count {})
    scimrun.sleep(0.3)
    local e2 = engine { db = db, run_id = "r-1", log = function() end, dead_letter = { retention_days = 0.2 / 86400 } }
    assert.are.equal(4, e2.stats.dlq_pruned)
    assert.are.equal(0, db:dlq_count {})
  end)
end)

describe("dlq show", function()
  it("prints every attempt of the dead-lettered step, as recorded during the run", function()
    local dir = proc.tmpdir("dlq-history")
    local state = dir .. "/s.db"
    local code, out, err = proc.run(("spec/fixtures/workflows/down.lua --param n=1 --sandbox='503:1' "
      .. "--policy fast-test --continue-on-error --state %s"):format(state))
    assert.are.equal(3, code, out .. err)
    local _, show = proc.run("dlq show 1 --state " .. state)
    os.execute("rm -rf '" .. dir .. "'")
    local attempts = 0
    for _ in show:gmatch("attempt %d users%.search") do attempts = attempts + 1 end
    assert.are.equal(5, attempts, show)
    assert.matches("failed HTTP 503: transient %[rule http%-5xx%-transient%] retry in", show)
    assert.matches("gave up: all 5 attempts used", show)
  end)
end)
