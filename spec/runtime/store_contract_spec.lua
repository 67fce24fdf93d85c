-- The store contract, run against both stores: the SQLite state file (scimrun.store, C) and
-- the PostgreSQL store (scimrun.postgres.store, Lua over scimrun.pg) behind scimrun.state.
-- Every test of the first part runs once per store, on a fresh state; the second part covers
-- what only the PostgreSQL store has (URL passwords, its schema, run locks, fencing, a lost
-- connection). The suite requires PostgreSQL: without it this spec fails, it does not skip.
local pg = require "scimrun.pg"
local pg_cluster = require "helpers.pg_cluster"
local proc = require "helpers.proc"
local schema = require "scimrun.postgres.schema"
local session = require "scimrun.postgres.session"
local state = require "scimrun.state"

local cluster, dir
local n = 0

setup(function()
  local usable, why = pg_cluster.available()
  assert(usable, "PostgreSQL is required (scripts/install-deps.sh): " .. tostring(why))
  cluster = pg_cluster.start()
  dir = proc.tmpdir("store_contract")
end)

teardown(function()
  if cluster then cluster.stop() end
  if dir then os.execute("rm -rf " .. proc.sh_quote(dir)) end
end)

-- A fresh, empty state of the given kind: a path or a database URL.
local function fresh(kind)
  n = n + 1
  if kind == "sqlite" then return ("%s/state-%d.db"):format(dir, n) end
  return cluster.createdb("contract_" .. n)
end

local function new_run(db, id, path)
  assert(db:run_create {
    id = id, workflow_name = "onboard", workflow_path = path or "/wf/onboard.lua",
    workflow_hash = "sha256:abc", params_json = '{"dept":"eng"}', inputs_json = '{"users.csv":"sha256:def"}',
  })
end

-- Asserts an operational failure: nil, a message holding text (when given), code.
local function refused(code, text, ok, err, got)
  assert.is_nil(ok, err)
  assert.are.equal(code, got, err)
  if text then assert.matches(text, err, 1, true) end
end

-- An UPDATE of the audit trail behind the store's back; returns the error it got.
local function update_audit(kind, spec)
  if kind == "sqlite" then
    return proc.sh(("sqlite3 %s \"UPDATE audit SET result = 'x'\" 2>&1"):format(proc.sh_quote(spec)))
  end
  local conn = assert(pg.connect(spec))
  local ok, err = conn:exec("UPDATE scimrun.audit SET result = 'x'")
  conn:close()
  assert.is_nil(ok)
  return err
end

for _, kind in ipairs { "sqlite", "postgres" } do
  describe(kind .. " store:", function()
    local spec, db
    before_each(function()
      spec = fresh(kind)
      db = assert(state.open(spec))
    end)
    after_each(function() db:close() end)

    it("is opened by scimrun.state according to the spec", function()
      assert.are.equal(kind == "postgres", state.is_postgres(spec))
      assert.are.equal(kind, state.kind(db))
      assert.are.equal(spec, db:path())
      assert.is_false(db:is_readonly())
      assert.are.equal(16 * 1024 * 1024, db:max_value_bytes())
      assert.matches(kind == "postgres" and "^state database postgres://" or "^state file /", state.describe(spec))
    end)

    it("creates, gets and lists runs newest first, refusing a duplicate id", function()
      new_run(db, "r-a", "/wf/a.lua")
      new_run(db, "r-b", "/wf/b.lua")
      new_run(db, "r-c", "/wf/a.lua")
      local r = db:run_get("r-a")
      assert.are.same({ "r-a", "onboard", "/wf/a.lua", "sha256:abc", '{"dept":"eng"}', "running" },
        { r.id, r.workflow_name, r.workflow_path, r.workflow_hash, r.params_json, r.status })
      assert.are.equal('{"users.csv":"sha256:def"}', r.inputs_json)
      assert.is_nil(r.policy_json)
      assert.is_nil(r.finished_at)
      assert.is_nil(r.exit_code)
      assert.is_number(r.created_at)
      assert.are.equal(r.created_at, r.updated_at)
      assert.is_true(math.abs(r.created_at - os.time()) < 60)
      assert.is_nil(db:run_get("r-zzz"))
      local all = db:runs_list {}
      assert.are.same({ "r-c", "r-b", "r-a" }, { all[1].id, all[2].id, all[3].id })
      assert.are.equal(3, #db:runs_list())
      assert.are.equal(2, #db:runs_list { limit = 2 })
      assert.are.equal(0, #db:runs_list { limit = 0 })
      assert.are.same({ "r-c", "r-a" }, { db:runs_list { workflow_path = "/wf/a.lua" }[1].id,
                                          db:runs_list { workflow_path = "/wf/a.lua" }[2].id })
      assert(db:run_create { id = "r-p", workflow_name = "w", workflow_path = "/w", workflow_hash = "h",
        policy_json = '{"p":1}' })
      assert.are.same({ "{}", "{}", '{"p":1}' }, { db:run_get("r-p").params_json, db:run_get("r-p").inputs_json,
        db:run_get("r-p").policy_json })
      refused("EXISTS", "run 'r-a' already exists",
        db:run_create { id = "r-a", workflow_name = "w", workflow_path = "/w", workflow_hash = "h" })
      assert.has_error(function() db:run_create { id = "", workflow_name = "w", workflow_path = "/w",
        workflow_hash = "h" } end, "run_create: field 'id' must not be empty")
      assert.has_error(function() db:run_create { id = "x", workflow_name = "w", workflow_path = "/w" } end,
        "run_create: field 'workflow_hash' must be a string (got nil)")
    end)

    it("finds the newest unfinished run and sets finished_at only for final states", function()
      new_run(db, "r-old")
      new_run(db, "r-new")
      new_run(db, "r-other", "/wf/other.lua")
      assert.are.equal("r-new", db:run_latest_unfinished("/wf/onboard.lua").id)
      assert.is_true(db:run_set_status("r-new", "interrupted", 130))
      local r = db:run_get("r-new")
      assert.are.same({ "interrupted", 130 }, { r.status, r.exit_code })
      assert.is_nil(r.finished_at)
      assert(db:run_set_status("r-new", "completed", 0))
      r = db:run_get("r-new")
      assert.are.same({ "completed", 0 }, { r.status, r.exit_code })
      assert.is_number(r.finished_at)
      assert.are.equal(r.updated_at, r.finished_at)
      assert.are.equal("r-old", db:run_latest_unfinished("/wf/onboard.lua").id)
      assert(db:run_set_status("r-old", "failed", 1))
      assert.is_number(db:run_get("r-old").finished_at)
      assert.are.equal("r-old", db:run_latest_unfinished("/wf/onboard.lua").id) -- failed is resumable
      assert(db:run_set_status("r-old", "running")) -- resumed: not finished, no exit code
      assert.is_nil(db:run_get("r-old").finished_at)
      assert.is_nil(db:run_get("r-old").exit_code)
      assert(db:run_set_status("r-old", "completed_with_dead_letters", 3))
      assert.is_nil(db:run_latest_unfinished("/wf/onboard.lua"))
      assert.has_error(function() db:run_set_status("r-old", "finished") end)
      refused("NOTFOUND", "no run 'r-nope'", db:run_set_status("r-nope", "completed", 0))
    end)

    it("records a step's lifecycle through apply, with the attempts rules", function()
      new_run(db, "r-1")
      local k = "users.create:ada"
      assert(db:apply { { op = "step_start", run_id = "r-1", key = k } })
      local s = db:step_get("r-1", k)
      assert.are.same({ k, "started", 1 }, { s.key, s.state, s.attempts })
      assert.is_number(s.started_at)
      assert.is_nil(s.result_json)
      assert(db:apply { { op = "step_fail", run_id = "r-1", key = k, error_json = '{"class":"transient"}' } })
      s = db:step_get("r-1", k)
      assert.are.same({ "failed", 1, '{"class":"transient"}' }, { s.state, s.attempts, s.error_json })
      assert(db:apply { { op = "step_start", run_id = "r-1", key = k } }) -- one more attempt
      assert.are.equal(2, db:step_get("r-1", k).attempts)
      assert(db:apply { { op = "step_start", run_id = "r-1", key = k, attempts = 7 } }) -- given: kept as given
      assert.are.equal(7, db:step_get("r-1", k).attempts)
      assert(db:apply { { op = "step_complete", run_id = "r-1", key = k, result_json = '{"id":"2819c223"}' } })
      s = db:step_get("r-1", k)
      assert.are.same({ "completed", 7, '{"id":"2819c223"}' }, { s.state, s.attempts, s.result_json })
      assert.is_nil(s.error_json) -- completing clears the error
      assert(db:apply { { op = "step_complete", run_id = "r-1", key = k, result_json = "{}", attempts = 2 } })
      assert.are.equal(2, db:step_get("r-1", k).attempts)
      assert(db:apply { { op = "step_compensated", run_id = "r-1", key = k } })
      s = db:step_get("r-1", k)
      assert.are.same({ "compensated", 2, "{}" }, { s.state, s.attempts, s.result_json })
      -- a step first seen completed or failed counts one attempt, or what is given
      assert(db:apply { { op = "step_complete", run_id = "r-1", key = "new1", result_json = "1" },
                        { op = "step_fail", run_id = "r-1", key = "new2", error_json = "{}", attempts = 3 } })
      assert.are.equal(1, db:step_get("r-1", "new1").attempts)
      assert.are.equal(3, db:step_get("r-1", "new2").attempts)
      assert.is_nil(db:step_get("r-1", "users.create:bob"))
      refused("NOTFOUND", "step_compensated: no step 'never'",
        db:apply { { op = "step_compensated", run_id = "r-1", key = "never" } })
    end)

    it("applies a batch in order: a step started and completed in one batch", function()
      new_run(db, "r-1")
      assert(db:apply {
        { op = "step_start", run_id = "r-1", key = "a" },
        { op = "step_fail", run_id = "r-1", key = "a", error_json = "{}" },
        { op = "step_start", run_id = "r-1", key = "a" },
        { op = "step_complete", run_id = "r-1", key = "a", result_json = '"done"' },
        { op = "kv_put", run_id = "r-1", key = "k", value_json = "1" },
        { op = "kv_put", run_id = "r-1", key = "k" },
        { op = "kv_put", run_id = "r-1", key = "k", value_json = "3" },
      })
      local s = db:step_get("r-1", "a")
      assert.are.same({ "completed", 2, '"done"' }, { s.state, s.attempts, s.result_json })
      assert.are.equal("3", db:kv_get("r-1", "k"))
    end)

    it("counts steps by state and loads them all at once", function()
      new_run(db, "r-1")
      local batch = {}
      for i = 1, 10 do
        batch[#batch + 1] = { op = "step_complete", run_id = "r-1", key = "k" .. i, result_json = tostring(i) }
      end
      batch[#batch + 1] = { op = "step_start", run_id = "r-1", key = "k11" }
      batch[#batch + 1] = { op = "step_fail", run_id = "r-1", key = "k12", error_json = "{}" }
      local ok, ids, lost = db:apply(batch)
      assert.is_true(ok)
      assert.are.same({}, ids)
      assert.is_nil(lost)
      assert.are.same({ started = 1, completed = 10, failed = 0 + 1, compensated = 0 }, db:run_step_counts("r-1"))
      assert.are.same({ started = 0, completed = 0, failed = 0, compensated = 0 }, db:run_step_counts("r-none"))
      local steps = db:steps_load("r-1")
      assert.are.equal(12, proc.count(steps))
      for key, s in pairs(steps) do assert.are.equal(key, s.key) end
      assert.are.equal("7", steps.k7.result_json)
      assert.are.same({}, db:steps_load("r-other"))
    end)

    it("keeps kv values; a nil value deletes", function()
      new_run(db, "r-1")
      assert(db:apply {
        { op = "kv_put", run_id = "r-1", key = "budget", value_json = '{"left":5}' },
        { op = "kv_put", run_id = "r-1", key = "breaker:idp", value_json = '{"state":"open"}' },
        { op = "kv_put", run_id = "global", key = "x", value_json = "1" }, -- kv needs no run
      })
      assert(db:apply { { op = "kv_put", run_id = "r-1", key = "budget", value_json = '{"left":4}' } })
      assert.are.equal('{"left":4}', db:kv_get("r-1", "budget"))
      assert.are.same({ budget = '{"left":4}', ["breaker:idp"] = '{"state":"open"}' }, db:kv_all("r-1"))
      assert(db:apply { { op = "kv_put", run_id = "r-1", key = "budget" } })
      assert.is_nil(db:kv_get("r-1", "budget"))
      assert.are.same({ ["breaker:idp"] = '{"state":"open"}' }, db:kv_all("r-1"))
      assert.are.same({}, db:kv_all("r-none"))
    end)

    it("adds dead letters with ids by batch position, lists, counts, changes state and prunes", function()
      new_run(db, "r-1")
      new_run(db, "r-2")
      local ok, ids = db:apply {
        { op = "step_fail", run_id = "r-1", key = "users.create:eve", error_json = "{}" },
        { op = "dlq_add", run_id = "r-1", step_key = "users.create:eve", operation = "users.create",
          method = "POST", url = "https://idp.example/scim/v2/Users", request_body = '{"userName":"eve"}',
          class = "conflict", status = 409, scim_type = "uniqueness", last_error = "userName taken",
          suggest = "rename or link the existing user", attempts = 1, rule = "scim.409",
          first_failed_at = 1700000000.123456 },
        { op = "kv_put", run_id = "r-1", key = "breaker:idp", value_json = '{"state":"closed"}' },
        { op = "dlq_add", run_id = "r-1", step_key = "groups.add:eve", is_compensation = true },
        { op = "dlq_add", run_id = "r-2", step_key = "c", attempts = 3 },
      }
      assert.is_true(ok)
      assert.is_nil(ids[1])
      assert.is_nil(ids[3])
      assert.is_number(ids[2])
      assert.are.equal(ids[2] + 1, ids[4])
      assert.are.equal(ids[4] + 1, ids[5])
      local e = db:dlq_get(ids[2])
      assert.are.same({ ids[2], "r-1", "users.create:eve", "users.create", "POST", "https://idp.example/scim/v2/Users",
        '{"userName":"eve"}', "conflict", 409, "uniqueness", "userName taken", "rename or link the existing user", 1,
        "pending", false, "scim.409" },
        { e.id, e.run_id, e.step_key, e.operation, e.method, e.url, e.request_body, e.class, e.status, e.scim_type,
          e.last_error, e.suggest, e.attempts, e.state, e.is_compensation, e.rule })
      assert.are.equal(1700000000.123456, e.first_failed_at)
      assert.is_number(e.last_failed_at)
      local c = db:dlq_get(ids[4])
      assert.is_true(c.is_compensation)
      assert.is_nil(c.status)
      assert.are.equal(0, c.attempts)
      assert.are.equal(c.first_failed_at, c.last_failed_at) -- none given: now
      assert.is_nil(db:dlq_get(99999))

      local list = db:dlq_list()
      assert.are.same({ ids[2], ids[4], ids[5] }, { list[1].id, list[2].id, list[3].id })
      assert.are.equal(2, #db:dlq_list { run_id = "r-1" })
      assert.are.equal(1, #db:dlq_list { limit = 1 })
      assert.is_true(db:dlq_set_state(ids[4], "replayed"))
      assert.are.equal(1, #db:dlq_list { run_id = "r-1", state = "pending" })
      assert.are.equal("replayed", db:dlq_get(ids[4]).state)
      assert.are.equal(2, db:dlq_count { state = "pending" })
      assert.are.equal(3, db:dlq_count {})
      assert.are.equal(3, db:dlq_count())
      assert.are.equal(1, db:dlq_count { state = "pending", run_id = "r-2" })
      assert.has_error(function() db:dlq_set_state(ids[2], "lost") end,
        "dead-letter state must be pending, replayed or dropped (got 'lost')")
      assert.has_error(function() db:dlq_list { state = "lost" } end)
      refused("NOTFOUND", "no pending dead letter '99999'", db:dlq_set_state(99999, "dropped"))
      -- only from pending: a replayed entry is not dropped after all (a race of two actions)
      refused("NOTFOUND", "no pending dead letter '" .. ids[4] .. "'", db:dlq_set_state(ids[4], "dropped"))
      assert.are.equal("replayed", db:dlq_get(ids[4]).state)

      assert.are.equal(0, db:dlq_prune(3600)) -- younger than an hour (first_failed_at does not count)
      assert.are.equal(3, db:dlq_prune(0))
      assert.are.equal(0, db:dlq_count {})
      local _, again = assert(db:apply { { op = "dlq_add", run_id = "r-1", step_key = "d" } })
      assert.is_true(again[1] > ids[5]) -- never reused after a prune
    end)

    it("keeps the attempt history of a step and prunes it by age", function()
      new_run(db, "r-1")
      assert(db:apply {
        { op = "event_add", run_id = "r-1", key = "s", event_json = '{"attempt":1}' },
        { op = "event_add", run_id = "r-1", key = "other", event_json = '{"attempt":1}' },
      })
      assert(db:apply { { op = "event_add", run_id = "r-1", key = "s", event_json = '{"attempt":2}' } })
      local ev = db:step_events("r-1", "s")
      assert.are.equal(2, #ev)
      assert.are.same({ '{"attempt":1}', '{"attempt":2}' }, { ev[1].event_json, ev[2].event_json })
      assert.is_number(ev[1].at)
      assert.is_true(ev[1].at <= ev[2].at)
      assert.are.same({}, db:step_events("r-1", "none"))
      assert.has_error(function() db:apply { { op = "event_add", run_id = "r-1", key = "s" } } end)
      assert.are.equal(0, db:events_prune(3600))
      assert.are.equal(3, db:events_prune(0))
      assert.are.same({}, db:step_events("r-1", "s"))
      assert.has_error(function() db:events_prune(-1) end)
    end)

    it("keeps an append-only audit trail, listed by run and by user (any case, renamed), pruned by age", function()
      new_run(db, "r-1")
      new_run(db, "r-2")
      local function write(run_id, t)
        t.op, t.run_id = "audit_add", run_id
        t.result = t.result or "created"
        assert(db:apply { t })
      end
      write("r-1", { item = "user:ada", operation = "users.create", method = "POST", target = "h",
                     resource_type = "users", resource_id = "u1", resource_name = "Ada",
                     changes_json = '[{"attribute":"userName","after":"Ada"}]', status = 201 })
      write("r-1", { item = "member:eng:ada", operation = "groups.add_member", resource_type = "groups",
                     resource_id = "g1", resource_name = "eng", member_id = "u1", result = "added" })
      write("r-1", { operation = "users.create", resource_type = "users", resource_id = "u2", resource_name = "bob" })
      write("r-2", { operation = "users.patch", resource_type = "users", resource_id = "u1", resource_name = "ada.l",
                     result = "updated" })
      write("r-2", { operation = "users.patch", resource_type = "users", resource_id = "u9", result = "failed",
                     status = 409, detail = "taken" })
      local all = db:audit_list()
      assert.are.equal(5, #all)
      assert.is_true(all[1].id < all[5].id) -- oldest first
      local a = all[1]
      assert.are.same({ "r-1", "user:ada", "users.create", "POST", "h", "users", "u1", "Ada",
        '[{"attribute":"userName","after":"Ada"}]', "created", 201 },
        { a.run_id, a.item, a.operation, a.method, a.target, a.resource_type, a.resource_id, a.resource_name,
          a.changes_json, a.result, a.status })
      assert.is_number(a.id)
      assert.is_number(a.at)
      assert.is_nil(all[3].status)
      assert.are.equal(3, #db:audit_list { run_id = "r-1" })
      for _, who in ipairs { "ADA", "ada", "ada.l", "ADA.L", "u1" } do
        local ops = {}
        for i, r in ipairs(db:audit_list { user = who }) do ops[i] = r.operation end
        assert.are.same({ "users.create", "groups.add_member", "users.patch" }, ops, who)
      end
      assert.are.equal(1, #db:audit_list { user = "bob" })
      assert.are.equal(0, #db:audit_list { user = "eng" }) -- a group's name is not a user
      assert.are.equal(1, #db:audit_list { user = "ada", run_id = "r-2" })
      local last = db:audit_list { limit = 2 }
      assert.are.same({ all[4].id, all[5].id }, { last[1].id, last[2].id })
      assert.has_error(function() db:apply { { op = "audit_add", run_id = "r-1", result = "created" } } end)
      assert.has_error(function() db:apply { { op = "audit_add", run_id = "r-1", operation = "users.create" } } end)
      assert.matches("append%-only", update_audit(kind, spec))
      assert.are.equal(5, #db:audit_list())
      assert.are.equal(0, db:audit_prune(3600))
      assert.are.equal(5, db:audit_prune(0))
      assert.are.equal(0, #db:audit_list())
    end)

    it("rolls a failed batch back entirely, keeping what was committed before", function()
      new_run(db, "r-1")
      assert(db:apply { { op = "step_complete", run_id = "r-1", key = "before", result_json = "1" } })
      refused("NOTFOUND", "run 'r-missing' does not exist", db:apply {
        { op = "step_complete", run_id = "r-1", key = "before", result_json = "2" },
        { op = "step_start", run_id = "r-1", key = "in-batch" },
        { op = "dlq_add", run_id = "r-1", step_key = "in-batch" },
        { op = "kv_put", run_id = "r-1", key = "k", value_json = "1" },
        { op = "step_start", run_id = "r-missing", key = "x" },
      })
      assert.are.equal("1", db:step_get("r-1", "before").result_json)
      assert.is_nil(db:step_get("r-1", "in-batch"))
      assert.is_nil(db:kv_get("r-1", "k"))
      assert.are.equal(0, db:dlq_count {})
      assert(db:apply { { op = "step_start", run_id = "r-1", key = "after" } }) -- still usable
    end)

    it("raises on a malformed batch before writing anything", function()
      new_run(db, "r-1")
      assert.has_error(function()
        db:apply { { op = "step_start", run_id = "r-1", key = "a" }, { op = "step_explode", run_id = "r-1" } }
      end, "apply: batch[2]: unknown op 'step_explode'")
      assert.has_error(function() db:apply { { op = "step_start", run_id = "r-1" } } end,
        "apply: batch[1] (step_start): field 'key' must be a string (got nil)")
      assert.has_error(function() db:apply { { op = "run_status", run_id = "r-1", status = "done" } } end,
        "apply: batch[1] (run_status): unknown run status 'done'")
      assert.has_error(function() db:apply { { op = "step_start", run_id = "r-1", key = "a", attempts = -1 } } end)
      assert.has_error(function() db:apply { "step_start" } end, "apply: batch[1] must be a table")
      assert.has_error(function() db:apply() end)
      assert.is_nil(db:step_get("r-1", "a"))
      local ok, ids = db:apply {}
      assert.is_true(ok)
      assert.are.same({}, ids)
      assert(db:apply { { op = "run_status", run_id = "r-1", status = "completed", exit_code = 0 } })
      assert.are.same({ "completed", 0 }, { db:run_get("r-1").status, db:run_get("r-1").exit_code })
    end)

    it("refuses a value over max_value_bytes, naming it and its size, and records nothing", function()
      db:close()
      db = assert(state.open(spec, { max_value_bytes = 100 }))
      assert.are.equal(100, db:max_value_bytes())
      new_run(db, "r-1")
      refused("TOOBIG", "the result of step 'user:big' is 150 bytes, over the limit of 100 bytes", db:apply {
        { op = "step_complete", run_id = "r-1", key = "fine", result_json = "{}" },
        { op = "step_complete", run_id = "r-1", key = "user:big", result_json = ("x"):rep(150) },
      })
      assert.is_nil(db:step_get("r-1", "fine"))
      assert.is_nil(db:step_get("r-1", "user:big"))
      refused("TOOBIG", "the request body of the dead letter for step 's' is 101 bytes",
        db:apply { { op = "dlq_add", run_id = "r-1", step_key = "s", request_body = ("b"):rep(101) } })
      refused("TOOBIG", nil, db:run_create { id = "r-2", workflow_name = "w", workflow_path = "/w", workflow_hash = "h",
        params_json = ("p"):rep(101) })
      assert.is_nil(db:run_get("r-2"))
      assert.are.equal(0, db:dlq_count {})
      assert.has_error(function() state.open(spec, { max_value_bytes = 0 }) end)
      assert.has_error(function() state.open(spec, { max_value_bytes = "big" }) end)
      assert.has_error(function() state.open(spec, { durability = "fast" }) end)
    end)

    it("opens readonly: reads work, writes raise", function()
      new_run(db, "r-1")
      local ro = assert(state.open(spec, { readonly = true }))
      assert.is_true(ro:is_readonly())
      assert.are.equal("r-1", ro:runs_list()[1].id)
      assert.has_error(function() ro:apply { { op = "step_start", run_id = "r-1", key = "a" } } end)
      assert.has_error(function() ro:run_set_status("r-1", "failed", 1) end)
      assert.has_error(function() ro:run_create { id = "r-2", workflow_name = "w", workflow_path = "/w",
        workflow_hash = "h" } end)
      assert.has_error(function() ro:dlq_set_state(1, "dropped") end)
      assert.has_error(function() ro:dlq_prune(0) end)
      ro:close()
      assert.has_error(function() ro:run_get("r-1") end, "state store is closed")
      assert.is_nil(db:step_get("r-1", "a"))
      db:close() -- (one writer per SQLite file in a process)
      db = assert(state.open(spec, { durability = "normal" }))
      assert.are.equal("onboard", db:run_get("r-1").workflow_name)
    end)
  end)
end

describe("postgres store only:", function()
  local opened = {}
  local function open(url, opts)
    local db = assert(state.open(url, opts))
    opened[#opened + 1] = db
    return db
  end
  local function raw(url)
    local conn = assert(pg.connect(url))
    opened[#opened + 1] = conn
    return conn
  end
  after_each(function()
    for _, x in ipairs(opened) do x:close() end
    opened = {}
  end)

  it("refuses a URL with a password, naming the field and never the password", function()
    local base = fresh("postgres")
    local with_user = base:gsub("^postgres://postgres@", "postgres://postgres:s3cr3t-pw@")
    for _, case in ipairs {
      { with_user, "user:password" },
      { base .. "&password=s3cr3t-pw", "password=" },
      { base .. "&pass%77ord=s3cr3t-pw", "password=" },
      { base .. "&sslpassword=s3cr3t-pw", "sslpassword=" },
      { (base:gsub("^postgres://", "POSTGRESQL://")) .. "&password=s3cr3t-pw", "password=" },
    } do
      local db, err, code = state.open(case[1])
      refused("PASSWORD", case[2], db, err, code)
      assert.matches("PGPASSWORD, ~/.pgpass or PGSERVICE", err, 1, true)
      assert.is_nil(err:find("s3cr3t", 1, true))
      assert.is_nil(state.describe(case[1]):find("s3cr3t", 1, true))
    end
    -- nothing was written: the database has no schema
    local conn = raw(base)
    assert.is_false(conn:exec("SELECT to_regnamespace('scimrun') IS NOT NULL AS x")[1].x)
  end)

  it("opens an upper-case scheme, and refuses readonly a database without the schema", function()
    local url = fresh("postgres")
    refused("NOTFOUND", "no scimrun schema", state.open(url, { readonly = true }))
    local up = url:gsub("^postgres://", "PostgreSQL://")
    assert.is_true(state.is_postgres(up))
    local db = open(up)
    assert.are.equal("postgresql://", db:path():sub(1, 13))
    assert.are.equal("postgres", db.kind)
    -- full keeps the server's synchronous_commit (on by default), normal sets it off
    local sql = "SELECT setting, source FROM pg_settings WHERE name = 'synchronous_commit'"
    assert.are_not.equal("session", db:conn():exec(sql)[1].source)
    local normal = open(url, { durability = "normal" })
    assert.are.same({ setting = "off", source = "session" }, normal:conn():exec(sql)[1])
    local ro = open(url, { readonly = true })
    assert.are.equal("on", ro:conn():exec("SHOW default_transaction_read_only")[1].default_transaction_read_only)
  end)

  it("records the schema version and refuses a newer one, read-write and readonly", function()
    local url = fresh("postgres")
    open(url)
    local conn = raw(url)
    assert.are.equal(schema.VERSION, conn:exec("SELECT version FROM scimrun.schema_version")[1].version)
    assert(conn:exec("UPDATE scimrun.schema_version SET version = $1", schema.VERSION + 1))
    for _, opts in ipairs { {}, { readonly = true } } do
      refused("SCHEMA", ("schema version %d, newer than this scimrun knows (%d)"):format(schema.VERSION + 1,
        schema.VERSION), state.open(url, opts))
    end
  end)

  it("migrates safely when several processes open a new database at once", function()
    local url = fresh("postgres")
    local script = proc.write(dir .. "/open.lua", [[
local t0 = tonumber(arg[2])
while os.time() < t0 do end -- start together
local db, err, code = require("scimrun.state").open(arg[1])
io.write(db and "ok" or (tostring(code) .. ": " .. tostring(err)))
]])
    local start = os.time() + 1
    local outs, cmds = {}, {}
    for i = 1, 4 do
      outs[i] = ("%s/open-%d.out"):format(dir, i)
      cmds[i] = ("%s -l %s %s %d >%s 2>&1 &"):format(proc.sh_quote(proc.bin), proc.sh_quote(script),
        proc.sh_quote(url), start, proc.sh_quote(outs[i]))
    end
    os.execute(table.concat(cmds, " ") .. " wait")
    for i = 1, 4 do assert.are.equal("ok", proc.read_all(outs[i])) end
    local conn = raw(url)
    assert.are.equal(schema.VERSION, conn:exec("SELECT version FROM scimrun.schema_version")[1].version)
  end)

  it("locks a run for one process: LOCKED from another connection, naming the holder's backend", function()
    local url = fresh("postgres")
    local a = open(url)
    local b = open(url)
    new_run(a, "r-1")
    assert.is_true(a:lock_run("r-1"))
    assert.is_true(a:lock_run("r-1")) -- again: still ours
    refused("LOCKED", ("run r-1 is in use by another process (PostgreSQL backend pid %d"):format(
      a:conn():backend_pid()), b:lock_run("r-1"))
    assert.is_true(b:lock_run("r-2")) -- another run
    a:close() -- the server releases the lock when that backend has gone: a moment later
    local got
    for _ = 1, 50 do
      got = b:lock_run("r-1")
      if got then break end
      scimrun.sleep(0.05)
    end
    assert.is_true(got)
  end)

  it("fences claimed writes: a stale claim's ops are skipped and reported, the rest commits", function()
    local url = fresh("postgres")
    local db = open(url)
    new_run(db, "r-1")
    local conn = raw(url)
    assert(conn:exec("INSERT INTO scimrun.items (run_id, batch, idx, item_json, state, owner, fence) VALUES "
      .. "('r-1', 'b', 1, '{}', 'claimed', 'w2', 2), ('r-1', 'b', 2, '{}', 'claimed', 'w1', 1)"))
    local stale = { batch = "b", idx = 1, fence = 1 } -- w1 lost item 1: w2 claimed it again (fence 2)
    local live = { batch = "b", idx = 2, fence = 1 }
    local ok, ids, lost = db:apply {
      { op = "step_start", run_id = "r-1", key = "user:1", claim = stale },
      { op = "step_complete", run_id = "r-1", key = "user:2", result_json = "{}", claim = live },
      { op = "kv_put", run_id = "r-1", key = "k1", value_json = "1", claim = stale },
      { op = "dlq_add", run_id = "r-1", step_key = "free" },
      { op = "step_complete", run_id = "r-1", key = "user:1", result_json = "{}", claim = stale },
      { op = "step_start", run_id = "r-1", key = "user:9", claim = { batch = "b", idx = 9, fence = 1 } },
      { op = "step_start", run_id = "r-1", key = "unclaimed" },
    }
    assert.is_true(ok)
    assert.are.same({ 1, 3, 5, 6 }, lost)
    assert.is_number(ids[4])
    assert.is_nil(db:step_get("r-1", "user:1"))
    assert.is_nil(db:step_get("r-1", "user:9"))
    assert.is_nil(db:kv_get("r-1", "k1"))
    local s = db:step_get("r-1", "user:2")
    assert.are.same({ "completed", 1 }, { s.state, s.fence })
    assert.is_nil(db:step_get("r-1", "unclaimed").fence)
    -- with the current fence the same write goes through
    local _
    ok, _, lost = db:apply { { op = "step_start", run_id = "r-1", key = "user:1", claim = { batch = "b", idx = 1,
      fence = 2 } } }
    assert.is_true(ok)
    assert.is_nil(lost)
    assert.are.equal(2, db:step_get("r-1", "user:1").fence)
    assert.has_error(function() db:apply { { op = "step_start", run_id = "r-1", key = "x", claim = { idx = 1 } } } end)
  end)

  it("survives a lost connection: the next query and batch reconnect, run locks are taken again", function()
    local url = fresh("postgres")
    local db = open(url)
    local other = open(url)
    new_run(db, "r-1")
    assert(db:lock_run("r-1"))
    local admin = raw(cluster.url) -- another database: it may refuse connections to this one
    local function kill(victim)
      local pid = victim:conn():backend_pid()
      assert.is_true(admin:exec("SELECT pg_terminate_backend($1) AS ok", pid)[1].ok)
      return pid
    end
    local before = kill(db)
    assert.are.equal("onboard", db:run_get("r-1").workflow_name) -- reset, then the read
    assert.are_not.equal(before, db:conn():backend_pid())
    refused("LOCKED", nil, other:lock_run("r-1")) -- the lock came back with the new session
    kill(db)
    assert(db:apply { { op = "step_start", run_id = "r-1", key = "after-loss" } }) -- BEGIN failed: run again
    assert.are.equal(1, db:step_get("r-1", "after-loss").attempts) -- once, not twice

    -- a reset that keeps failing gives up with CONNECTION; the store works once the server does
    local total = session.RECONNECT_TOTAL
    session.RECONNECT_TOTAL = 0.5
    local dbname = url:match("^postgres://[^/]*/([%w_]+)")
    assert(admin:exec(("ALTER DATABASE %s ALLOW_CONNECTIONS false"):format(dbname)))
    kill(db)
    local t0 = scimrun.now()
    local ok, err, code = db:run_get("r-1")
    session.RECONNECT_TOTAL = total
    refused("CONNECTION", "could not be restored", ok, err, code)
    assert.is_true(scimrun.now() - t0 < 5)
    assert(admin:exec(("ALTER DATABASE %s ALLOW_CONNECTIONS true"):format(dbname)))
    assert.are.equal("r-1", db:run_get("r-1").id)
  end)

  -- A store with run r-1 whose connection is gone and whose database refuses new ones, a
  -- reconnect window of 0.3 s, and the log going to log_emit. Returns db, back(): the window,
  -- the log and the database as they were.
  local function database_gone(log_emit)
    local url = fresh("postgres")
    local db = open(url)
    new_run(db, "r-1")
    local admin = raw(cluster.url)
    local dbname = url:match("^postgres://[^/]*/([%w_]+)")
    assert(admin:exec(("ALTER DATABASE %s ALLOW_CONNECTIONS false"):format(dbname)))
    assert(admin:exec("SELECT pg_terminate_backend($1)", db:conn():backend_pid()))
    local total, emit = session.RECONNECT_TOTAL, scimrun.log.emit
    session.RECONNECT_TOTAL, scimrun.log.emit = 0.3, log_emit
    return db, function()
      scimrun.log.emit, session.RECONNECT_TOTAL = emit, total
      assert(admin:exec(("ALTER DATABASE %s ALLOW_CONNECTIONS true"):format(dbname)))
    end
  end

  it("tasks whose statements fail together share one recovery, not a window each", function()
    local first_attempts = 0
    local db, back = database_gone(function(_, msg, fields)
      if msg:find("reconnecting", 1, true) and fields and fields.attempt == 1 then
        first_attempts = first_attempts + 1
      end
    end)
    local out = scimrun.all {
      function() return { db:run_get("r-1") } end,
      function() return { db:step_get("r-1", "x") } end,
    }
    back()
    for i, r in ipairs(out) do
      assert.is_nil(r[1], "task " .. i)
      assert.are.equal("CONNECTION", r[3], "task " .. i)
    end
    assert.are.equal(1, first_attempts)
    assert.are.equal("r-1", db:run_get("r-1").id)
  end)

  it("a statement outside a task (the group commit) does not wait on a task's recovery", function()
    -- Waiting there would block the loop, and with it the task that recovers: the process hung.
    local db, back = database_gone(function() end)
    local core = require "scimrun.core"
    local outside
    core.at_turn_end(function()
      if outside or not db._s.recovering then return end
      outside = { core.is_task() }
      local t0 = scimrun.now()
      -- a hang fails this case instead of the whole suite (hooks do not run in compiled code)
      jit.off()
      debug.sethook(function() if scimrun.now() - t0 > 20 then error("hung waiting for the task's recovery") end end,
        "", 1000)
      local ok, r = pcall(function() return { db:step_get("r-1", "x") } end)
      debug.sethook()
      jit.on()
      outside[2], outside[3] = ok, r
    end)
    local r = { db:run_get("r-1") } -- this task recovers; the turn's end runs meanwhile
    core.at_turn_end(nil)
    back()
    assert.is_table(outside, "the turn's end never ran during the recovery")
    assert.is_false(outside[1])
    assert.is_true(outside[2], tostring(outside[3]))
    assert.are.equal("CONNECTION", outside[3][3])
    assert.are.equal("CONNECTION", r[3])
    assert.are.equal("r-1", db:run_get("r-1").id)
  end)

  it("stops writing a run whose lock another process took while the connection was down", function()
    local url = fresh("postgres")
    local a, b = open(url), open(url)
    new_run(a, "r-1")
    assert(a:lock_run("r-1"))
    local admin = raw(url)
    assert(admin:exec("SELECT pg_terminate_backend($1)", a:conn():backend_pid()))
    local got
    for _ = 1, 50 do -- the lock is free once that backend has gone
      got = b:lock_run("r-1")
      if got then break end
      scimrun.sleep(0.05)
    end
    assert.is_true(got)
    refused("LOCKED", "run r-1 was taken by another process",
      a:apply { { op = "step_start", run_id = "r-1", key = "a" } })
    refused("LOCKED", nil, a:apply { { op = "step_start", run_id = "r-1", key = "b" } })
    assert.is_nil(b:step_get("r-1", "a"))
    assert.are.equal("r-1", a:run_get("r-1").id) -- reading goes on
  end)

  it("does not run a batch again when the connection broke during COMMIT: the outcome is unknown", function()
    local url = fresh("postgres")
    local db = open(url)
    new_run(db, "r-1")
    local s = db._s
    local real = s.conn
    local commits = 0
    s.conn = setmetatable({ exec = function(_, sql, ...) -- a connection that breaks at COMMIT
      if sql == "COMMIT" then
        commits = commits + 1
        real:exec("ROLLBACK")
        return nil, "server closed the connection unexpectedly", "CONNECTION"
      end
      return real:exec(sql, ...)
    end }, { __index = function(_, k) return function(_, ...) return real[k](real, ...) end end })
    local ok, err, code = db:apply { { op = "step_start", run_id = "r-1", key = "a" } }
    s.conn = real
    refused("CONNECTION", "whether it was recorded is unknown", ok, err, code)
    assert.are.equal(1, commits)
  end)
end)
