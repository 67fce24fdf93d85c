-- The checkpoint store through its Lua binding (runtime/store_lua.c): what the workflow engine
-- and the `runs`/`dlq` commands rely on, including refusal of bad files and write failures.
local store = require "scimrun.store"
local proc = require "helpers.proc"

local dir
local n = 0
local function fresh_path()
  n = n + 1
  return ("%s/state-%d.db"):format(dir, n)
end

local function mode_of(path)
  local p = io.popen("stat -c %a '" .. path .. "' 2>/dev/null")
  local m = p:read("*l")
  p:close()
  return m
end

local function bytes_of(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

local function write_file(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

local function new_run(db, id, path)
  assert(db:run_create {
    id = id, workflow_name = "onboard", workflow_path = path or "/wf/onboard.lua",
    workflow_hash = "sha256:abc", params_json = '{"dept":"eng"}',
    inputs_json = '{"users.csv":"sha256:def"}',
  })
end

setup(function() dir = proc.tmpdir("store_spec") end)
teardown(function() os.execute("rm -rf '" .. dir .. "'") end)

describe("store.open", function()
  it("creates the state file with mode 0600 and reopens it with the data", function()
    local path = fresh_path()
    local db = assert(store.open(path))
    new_run(db, "r-1")
    assert.are.equal("600", mode_of(path))
    assert.are.equal("600", mode_of(path .. "-wal"))
    assert.are.equal(path, db:path())
    db:close()
    db = assert(store.open(path, { durability = "normal" }))
    assert.are.equal("onboard", db:run_get("r-1").workflow_name)
    db:close()
  end)

  it("raises on a misused option", function()
    assert.has_error(function() store.open(fresh_path(), { durability = "fast" }) end)
    assert.has_error(function() store.open(nil) end)
  end)

  it("fails clearly when the directory does not exist", function()
    local path = dir .. "/no/such/dir/state.db"
    local db, err = store.open(path)
    assert.is_nil(db)
    assert.matches("no/such/dir/state.db", err, 1, true)
  end)

  it("refuses a file that is not SQLite and leaves it byte for byte", function()
    local path = fresh_path()
    local content = "user,email\nada,ada@example.com\n"
    write_file(path, content)
    local db, err, code = store.open(path)
    assert.is_nil(db)
    assert.are.equal("NOTADB", code)
    assert.matches(path, err, 1, true)
    assert.matches("not an SQLite database", err, 1, true)
    assert.are.equal(content, bytes_of(path))
  end)

  it("refuses a second writer in another process, and not after that process is SIGKILLed", function()
    local path = fresh_path()
    local ready = path .. ".ready"
    local script = dir .. "/holder.lua"
    write_file(script, ([[
      local db = assert(require("scimrun.store").open(%q))
      assert(db:run_create{ id = "held", workflow_name = "w", workflow_path = "/w", workflow_hash = "h" })
      io.open(%q, "w"):close()
      scimrun.sleep(60)
    ]]):format(path, ready))
    local pid = proc.spawn("-l " .. script)
    local deadline = scimrun.now() + 10
    while not io.open(ready) and scimrun.now() < deadline do scimrun.sleep(0.02) end
    assert.is_truthy(io.open(ready), "holder did not start")

    local db, err, code = store.open(path)
    assert.is_nil(db)
    assert.are.equal("LOCKED", code)
    assert.are.equal(("state file %s is in use by another scimrun (pid %s)"):format(path, pid), err)

    -- Readers need no lock: `scimrun runs list` works during a run.
    local ro = assert(store.open(path, { readonly = true }))
    assert.are.equal("running", ro:run_get("held").status)
    ro:close()

    os.execute("kill -9 " .. pid)
    assert.is_true(proc.wait_gone(pid, 10))
    db = assert(store.open(path))
    assert.are.equal("held", db:run_get("held").id)
    db:close()
  end)
end)

describe("store runs", function()
  local db
  before_each(function() db = assert(store.open(fresh_path())) end)
  after_each(function() db:close() end)

  it("creates, gets and lists runs newest first", function()
    new_run(db, "r-a", "/wf/a.lua")
    new_run(db, "r-b", "/wf/b.lua")
    new_run(db, "r-c", "/wf/a.lua")
    local r = db:run_get("r-a")
    assert.are.same({ "r-a", "onboard", "/wf/a.lua", "sha256:abc", '{"dept":"eng"}', "running" },
      { r.id, r.workflow_name, r.workflow_path, r.workflow_hash, r.params_json, r.status })
    assert.are.equal('{"users.csv":"sha256:def"}', r.inputs_json)
    assert.is_nil(r.policy_json)
    assert.is_nil(r.finished_at)
    assert.is_true(math.abs(r.created_at - os.time()) < 5)
    assert.is_nil(db:run_get("r-zzz"))

    local all = db:runs_list {}
    assert.are.same({ "r-c", "r-b", "r-a" }, { all[1].id, all[2].id, all[3].id })
    assert.are.equal(2, #db:runs_list { limit = 2 })
    assert.are.equal(2, #db:runs_list { workflow_path = "/wf/a.lua" })
  end)

  it("refuses a duplicate run id without raising", function()
    new_run(db, "r-dup")
    local ok, err, code = db:run_create { id = "r-dup", workflow_name = "w", workflow_path = "/w",
      workflow_hash = "h" }
    assert.is_nil(ok)
    assert.are.equal("EXISTS", code)
    assert.matches("r-dup", err, 1, true)
  end)

  it("finds the newest unfinished run of a workflow and records final states", function()
    new_run(db, "r-old")
    new_run(db, "r-new")
    new_run(db, "r-other", "/wf/other.lua")
    assert.are.equal("r-new", db:run_latest_unfinished("/wf/onboard.lua").id)
    assert(db:run_set_status("r-new", "interrupted", 130))
    local r = db:run_get("r-new")
    assert.are.same({ "interrupted", 130 }, { r.status, r.exit_code })
    assert.is_nil(r.finished_at) -- interrupted is resumable, not finished
    assert(db:run_set_status("r-new", "completed", 0))
    r = db:run_get("r-new")
    assert.is_number(r.finished_at)
    assert.are.equal("r-old", db:run_latest_unfinished("/wf/onboard.lua").id)
    assert(db:run_set_status("r-old", "failed", 1))
    assert.are.equal("r-old", db:run_latest_unfinished("/wf/onboard.lua").id)
    assert(db:run_set_status("r-old", "completed_with_dead_letters", 3))
    assert.is_nil(db:run_latest_unfinished("/wf/onboard.lua"))
    assert.has_error(function() db:run_set_status("r-old", "finished") end)
    local ok, _, code = db:run_set_status("r-nope", "completed", 0)
    assert.is_nil(ok)
    assert.are.equal("NOTFOUND", code)
  end)

  it("generates run ids in the documented shape", function()
    local id = store.new_run_id()
    assert.matches("^r%-%d%d%d%d%d%d%d%d%-%d%d%d%d%d%d%-%x%x%x%x$", id)
    assert.are_not.equal(id, store.new_run_id())
  end)
end)

describe("store steps and apply", function()
  local db
  before_each(function()
    db = assert(store.open(fresh_path()))
    new_run(db, "r-1")
  end)
  after_each(function() db:close() end)

  it("records a step lifecycle with attempts", function()
    assert(db:apply { { op = "step_start", run_id = "r-1", key = "users.create:ada" } })
    local s = db:step_get("r-1", "users.create:ada")
    assert.are.same({ "users.create:ada", "started", 1 }, { s.key, s.state, s.attempts })
    assert(db:apply { { op = "step_fail", run_id = "r-1", key = "users.create:ada",
      error_json = '{"class":"transient"}', attempts = 1 } })
    assert(db:apply { { op = "step_start", run_id = "r-1", key = "users.create:ada" } })
    assert.are.equal(2, db:step_get("r-1", "users.create:ada").attempts)
    assert(db:apply { { op = "step_complete", run_id = "r-1", key = "users.create:ada",
      result_json = '{"id":"2819c223","userName":"ada"}', attempts = 2 } })
    s = db:step_get("r-1", "users.create:ada")
    assert.are.same({ "completed", 2, '{"id":"2819c223","userName":"ada"}' },
      { s.state, s.attempts, s.result_json })
    assert.is_nil(s.error_json)
    assert.is_true(s.updated_at >= s.started_at)
    assert(db:apply { { op = "step_compensated", run_id = "r-1", key = "users.create:ada" } })
    assert.are.equal("compensated", db:step_get("r-1", "users.create:ada").state)
    assert.is_nil(db:step_get("r-1", "users.create:bob"))
  end)

  it("writes a batch on the thread pool with db:apply_async, durable and readable when it returns", function()
    local batch = {
      { op = "step_start", run_id = "r-1", key = "async:1" },
      { op = "dlq_add", run_id = "r-1", step_key = "async:1", operation = "users.create", class = "permanent" },
      { op = "step_complete", run_id = "r-1", key = "async:1", result_json = "1", attempts = 1 },
    }
    local ok, ids = db:apply_async(batch)
    assert.is_true(ok)
    assert.is_nil(ids[1])
    assert.is_number(ids[2]) -- the dead letter's id, as db:apply gives it
    assert.are.equal("completed", db:step_get("r-1", "async:1").state)
    assert.are.equal(ids[2], db:dlq_get(ids[2]).id)
    -- it suspends its task: outside one it is refused, before anything is written
    local co = coroutine.create(function()
      return db:apply_async { { op = "step_start", run_id = "r-1", key = "x" } }
    end)
    local cok, cerr = coroutine.resume(co)
    assert.is_false(cok)
    assert.matches("db:apply_async", cerr)
    assert.is_nil(db:step_get("r-1", "x"))
    -- misuse raises as db:apply does, naming the op
    assert.has_error(function() db:apply_async { { op = "step_start" } } end,
      "apply: batch[1] (step_start): field 'run_id' must be a string (got nil)")
  end)

  it("rolls a failed db:apply_async back whole and names the file", function()
    local ok, err, code = db:apply_async {
      { op = "step_start", run_id = "r-1", key = "kept-out" },
      { op = "step_start", run_id = "r-nope", key = "orphan" },
    }
    assert.is_nil(ok)
    assert.matches("r%-nope", err)
    assert.is_string(code)
    assert.is_nil(db:step_get("r-1", "kept-out"))
    db:_pragma("query_only", 1)
    ok, err, code = db:apply_async { { op = "step_start", run_id = "r-1", key = "ro" } }
    assert.is_nil(ok)
    assert.matches("SQLITE_READONLY", code)
    assert.matches(db:path(), err, 1, true)
    db:_pragma("query_only", 0)
    assert(db:apply_async { { op = "step_start", run_id = "r-1", key = "after" } })
    assert.are.equal("started", db:step_get("r-1", "after").state)
  end)

  it("makes another write wait for a db:apply_async under way; reads see only what is committed", function()
    local big = {}
    for i = 1, 3000 do big[i] = { op = "step_start", run_id = "r-1", key = "big:" .. i } end
    local queued, finished = false, false
    scimrun.spawn(function()
      queued = true -- the next call queues the commit before this task parks
      assert(db:apply_async(big))
      finished = true
    end)
    while not queued do scimrun.sleep(0) end
    -- the writer belongs to the commit on the thread pool: this write waits for it, then lands
    assert(db:apply { { op = "step_start", run_id = "r-1", key = "after-big" } })
    assert.are.equal(3001, db:run_step_counts("r-1").started)
    while not finished do scimrun.sleep(0.001) end
    local normal = assert(store.open(fresh_path(), { durability = "normal" }))
    new_run(normal, "r-n")
    assert(normal:apply_async { { op = "step_start", run_id = "r-n", key = "k" } })
    assert.are.equal("started", normal:step_get("r-n", "k").state)
    normal:close()
  end)

  it("counts steps by state and loads them all at once", function()
    local batch = {}
    for i = 1, 10 do
      batch[#batch + 1] = { op = "step_complete", run_id = "r-1", key = "k" .. i, result_json = tostring(i) }
    end
    batch[#batch + 1] = { op = "step_start", run_id = "r-1", key = "k11" }
    batch[#batch + 1] = { op = "step_fail", run_id = "r-1", key = "k12", error_json = "{}" }
    assert(db:apply(batch))
    assert.are.same({ started = 1, completed = 10, failed = 1, compensated = 0 }, db:run_step_counts("r-1"))
    local steps = db:steps_load("r-1")
    local keys = 0
    for k, s in pairs(steps) do
      keys = keys + 1
      assert.are.equal(k, s.key)
    end
    assert.are.equal(12, keys)
    assert.are.equal("7", steps.k7.result_json)
    assert.are.same({}, db:steps_load("r-other"))
  end)

  it("returns dead-letter ids by batch position", function()
    local ok, ids = db:apply {
      { op = "step_fail", run_id = "r-1", key = "users.create:eve", error_json = "{}" },
      { op = "dlq_add", run_id = "r-1", step_key = "users.create:eve", operation = "users.create",
        method = "POST", url = "https://idp.example/scim/v2/Users", request_body = '{"userName":"eve"}',
        class = "conflict", status = 409, scim_type = "uniqueness", last_error = "userName taken",
        suggest = "rename or link the existing user", attempts = 1, rule = "scim.409" },
      { op = "kv_put", run_id = "r-1", key = "breaker:idp", value_json = '{"state":"closed"}' },
      { op = "dlq_add", run_id = "r-1", step_key = "groups.add:eve", is_compensation = true },
    }
    assert.is_true(ok)
    assert.is_nil(ids[1])
    assert.is_nil(ids[3])
    assert.is_number(ids[2])
    assert.are.equal(ids[2] + 1, ids[4])
    local e = db:dlq_get(ids[2])
    assert.are.same({ "users.create", "POST", 409, "uniqueness", "pending", false, "scim.409", 1 },
      { e.operation, e.method, e.status, e.scim_type, e.state, e.is_compensation, e.rule, e.attempts })
    assert.are.equal('{"userName":"eve"}', e.request_body)
    assert.is_true(db:dlq_get(ids[4]).is_compensation)
    assert.is_nil(db:dlq_get(ids[4]).status)
  end)

  it("rolls a failed batch back entirely, keeping what was committed before", function()
    assert(db:apply { { op = "step_complete", run_id = "r-1", key = "before", result_json = "1" } })
    local ok, err = db:apply {
      { op = "step_complete", run_id = "r-1", key = "before", result_json = "2" },
      { op = "step_start", run_id = "r-1", key = "in-batch" },
      { op = "dlq_add", run_id = "r-1", step_key = "in-batch" },
      { op = "step_start", run_id = "r-missing", key = "x" },
    }
    assert.is_nil(ok)
    assert.matches("run 'r-missing' does not exist", err, 1, true)
    assert.are.equal("1", db:step_get("r-1", "before").result_json)
    assert.is_nil(db:step_get("r-1", "in-batch"))
    assert.are.equal(0, db:dlq_count {})
  end)

  it("raises on a malformed batch before writing anything, and stays usable", function()
    assert.has_error(function()
      db:apply { { op = "step_start", run_id = "r-1", key = "a" }, { op = "step_explode", run_id = "r-1" } }
    end, "apply: batch[2]: unknown op 'step_explode'")
    assert.has_error(function() db:apply { { op = "step_start", run_id = "r-1" } } end)
    assert.has_error(function() db:apply { { op = "run_status", run_id = "r-1", status = "done" } } end)
    assert.is_nil(db:step_get("r-1", "a"))
    assert(db:apply { { op = "step_start", run_id = "r-1", key = "a" } })
    assert.are.equal("started", db:step_get("r-1", "a").state)
  end)

  it("sets the run status inside a batch", function()
    assert(db:apply { { op = "run_status", run_id = "r-1", status = "completed", exit_code = 0 } })
    assert.are.same({ "completed", 0 }, { db:run_get("r-1").status, db:run_get("r-1").exit_code })
  end)

  it("keeps resilience state in kv; a nil value deletes", function()
    assert(db:apply {
      { op = "kv_put", run_id = "r-1", key = "budget", value_json = '{"left":5}' },
      { op = "kv_put", run_id = "r-1", key = "breaker:idp", value_json = '{"state":"open"}' },
    })
    assert(db:apply { { op = "kv_put", run_id = "r-1", key = "budget", value_json = '{"left":4}' } })
    assert.are.equal('{"left":4}', db:kv_get("r-1", "budget"))
    assert.are.same({ budget = '{"left":4}', ["breaker:idp"] = '{"state":"open"}' }, db:kv_all("r-1"))
    assert(db:apply { { op = "kv_put", run_id = "r-1", key = "budget" } })
    assert.is_nil(db:kv_get("r-1", "budget"))
  end)

  it("loads 20k steps quickly", function()
    local batch = {}
    for i = 1, 20000 do
      batch[i] = { op = "step_complete", run_id = "r-1", key = "users.create:" .. i, result_json = '{"id":"x"}' }
    end
    assert(db:apply(batch))
    local t0 = scimrun.now()
    local steps = db:steps_load("r-1")
    local elapsed = scimrun.now() - t0
    assert.are.equal("completed", steps["users.create:20000"].state)
    assert.is_true(elapsed < 2, "steps_load took " .. elapsed .. " s")
  end)
end)

describe("store dead letters", function()
  local db
  before_each(function()
    db = assert(store.open(fresh_path()))
    new_run(db, "r-1")
    new_run(db, "r-2")
  end)
  after_each(function() db:close() end)

  local function add(run_id, key)
    local _, ids = assert(db:apply { { op = "dlq_add", run_id = run_id, step_key = key, attempts = 3 } })
    return ids[1]
  end

  it("lists, filters, changes state, counts and prunes", function()
    local a, b, c = add("r-1", "a"), add("r-1", "b"), add("r-2", "c")
    assert.are.same({ a, b, c }, { db:dlq_list()[1].id, db:dlq_list()[2].id, db:dlq_list()[3].id })
    assert.are.equal(2, #db:dlq_list { run_id = "r-1" })
    assert(db:dlq_set_state(b, "replayed"))
    assert.are.equal(1, #db:dlq_list { run_id = "r-1", state = "pending" })
    assert.are.equal(2, db:dlq_count { state = "pending" })
    assert.are.equal(3, db:dlq_count {})
    assert.are.equal(1, db:dlq_count { state = "pending", run_id = "r-2" })
    assert.has_error(function() db:dlq_set_state(a, "lost") end)
    local ok, _, code = db:dlq_set_state(99999, "dropped")
    assert.is_nil(ok)
    assert.are.equal("NOTFOUND", code)

    assert.are.equal(0, db:dlq_prune(3600)) -- all younger than an hour
    assert.are.equal(3, db:dlq_prune(0)) -- all older than now
    assert.are.equal(0, db:dlq_count {})
    -- Ids are never reused after a prune: an operator's "dlq show 3" stays unambiguous.
    assert.is_true(add("r-1", "d") > c)
  end)
end)

describe("store audit trail", function()
  local db
  before_each(function()
    db = assert(store.open(fresh_path()))
    new_run(db, "r-1")
    new_run(db, "r-2")
  end)
  after_each(function() db:close() end)

  local function write(run_id, t)
    t.op, t.run_id = "audit_add", run_id
    t.result = t.result or "created"
    assert(db:apply { t })
  end

  it("appends rows in the group commit; lists them by run and by user, old names and memberships included", function()
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
    assert.are.equal("users.create", all[1].operation)
    assert.are.equal(201, all[1].status)
    assert.is_number(all[1].at)
    assert.are.equal(3, #db:audit_list { run_id = "r-1" })
    -- by a name it had (ignoring case), by the name it has now, or by id: the whole history
    for _, who in ipairs { "ADA", "ada.l", "u1" } do
      local rows = db:audit_list { user = who }
      local ops = {}
      for i, r in ipairs(rows) do ops[i] = r.operation end
      assert.are.same({ "users.create", "groups.add_member", "users.patch" }, ops, who)
    end
    assert.are.equal(1, #db:audit_list { user = "bob" })
    assert.are.equal(0, #db:audit_list { user = "eng" }) -- a group's name is not a user
    assert.are.same({ "users.patch" }, { db:audit_list { user = "ada", run_id = "r-2" }[1].operation,
                                          db:audit_list { user = "ada", run_id = "r-2" }[2] })
    -- limit: the newest N, still oldest first
    local last = db:audit_list { limit = 2 }
    assert.are.same({ all[4].id, all[5].id }, { last[1].id, last[2].id })
  end)

  it("refuses a row without operation or result, and prunes by age", function()
    assert.has_error(function() db:apply { { op = "audit_add", run_id = "r-1", result = "created" } } end)
    assert.has_error(function() db:apply { { op = "audit_add", run_id = "r-1", operation = "users.create" } } end)
    write("r-1", { operation = "users.create" })
    assert.are.equal(0, db:audit_prune(3600))
    assert.are.equal(1, db:audit_prune(0))
    assert.are.equal(0, #db:audit_list())
  end)
end)

describe("store write failures", function()
  it("returns nil, err on a full disk and keeps committed data", function()
    local path = fresh_path()
    local db = assert(store.open(path))
    new_run(db, "r-1")
    assert(db:apply { { op = "step_complete", run_id = "r-1", key = "kept", result_json = "{}" } })
    db:_pragma("max_page_count", 1) -- SQLite raises it to the current size: no room to grow
    local big = string.rep("x", 3000)
    local batch = {}
    for i = 1, 50 do batch[i] = { op = "step_complete", run_id = "r-1", key = "big" .. i, result_json = big } end
    local ok, err, code = db:apply(batch)
    assert.is_nil(ok)
    assert.are.equal("SQLITE_FULL", code)
    assert.matches(path, err, 1, true)
    assert.is_nil(db:step_get("r-1", "big1"))
    db:close()
    db = assert(store.open(path))
    assert.are.equal("{}", db:step_get("r-1", "kept").result_json)
    assert.are.same({ started = 0, completed = 1, failed = 0, compensated = 0 }, db:run_step_counts("r-1"))
    db:close()
  end)

  it("refuses a value over max_value_bytes, naming it and its size, and records nothing", function()
    assert.are.equal(16 * 1024 * 1024, store.MAX_VALUE_BYTES)
    local db = assert(store.open(fresh_path()))
    assert.are.equal(store.MAX_VALUE_BYTES, db:max_value_bytes())
    db:close()
    local path = fresh_path()
    local small = assert(store.open(path, { max_value_bytes = 100 }))
    assert.are.equal(100, small:max_value_bytes())
    new_run(small, "r-1")
    local ok, err, code = small:apply {
      { op = "step_complete", run_id = "r-1", key = "fine", result_json = "{}" },
      { op = "step_complete", run_id = "r-1", key = "user:big", result_json = ("x"):rep(150) },
    }
    assert.is_nil(ok)
    assert.are.equal("TOOBIG", code)
    assert.matches("the result of step 'user:big' is 150 bytes, over the limit of 100 bytes", err, 1, true)
    assert.is_nil(small:step_get("r-1", "fine"))
    assert.is_nil(small:step_get("r-1", "user:big"))
    small:close()
    assert.has_error(function() store.open(path, { max_value_bytes = 0 }) end)
    assert.has_error(function() store.open(path, { max_value_bytes = "big" }) end)
  end)

  it("returns nil, err when the database refuses writes", function()
    local db = assert(store.open(fresh_path()))
    new_run(db, "r-1")
    db:_pragma("query_only", 1)
    local ok, _, code = db:apply { { op = "step_start", run_id = "r-1", key = "a" } }
    assert.is_nil(ok)
    assert.are.equal("SQLITE_READONLY", code)
    db:_pragma("query_only", 0)
    assert(db:apply { { op = "step_start", run_id = "r-1", key = "a" } })
    db:close()
  end)

  it("opens readonly without creating anything and raises on writes", function()
    local path = fresh_path()
    local db, err, code = store.open(path, { readonly = true })
    assert.is_nil(db)
    assert.are.equal("NOTFOUND", code)
    assert.matches("does not exist", err, 1, true)
    assert.is_nil(io.open(path))
    local w = assert(store.open(path))
    new_run(w, "r-1")
    local ro = assert(store.open(path, { readonly = true }))
    assert.is_true(ro:is_readonly())
    assert.are.equal("r-1", ro:runs_list()[1].id)
    assert.has_error(function() ro:apply { { op = "step_start", run_id = "r-1", key = "a" } } end)
    assert.has_error(function() ro:run_set_status("r-1", "failed", 1) end)
    ro:close()
    w:close()
    assert.has_error(function() w:run_get("r-1") end, "state store is closed")
  end)

  local p = io.popen("id -u")
  local is_root = p:read("*l") == "0"
  p:close()
  if is_root then
    pending("read-only directory: not testable as root (permission checks are bypassed)")
  else
    it("fails clearly in a read-only directory", function()
      local ro_dir = dir .. "/ro"
      os.execute("mkdir -p '" .. ro_dir .. "' && chmod 0500 '" .. ro_dir .. "'")
      local db, err = store.open(ro_dir .. "/state.db")
      os.execute("chmod 0700 '" .. ro_dir .. "'")
      assert.is_nil(db)
      assert.matches(ro_dir, err, 1, true)
    end)
  end
end)
