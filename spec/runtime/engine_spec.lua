-- The workflow engine in process, on a real store, without the binary: steps (replayed on a
-- resume, failed, recovered in doubt) and their group commit, sagas, item outcomes, and the
-- task context that tasks a task spawns inherit (scimrun.ctx): wf:map workers and wf:each
-- items keep the run context, the saga scope, the item and the step (its checkpoint keys, its
-- timeouts.step deadline and the outcome noted during it) of the task that started them.
local store = require "scimrun.store"
local workflow = require "scimrun.workflow"
local core = require "scimrun.core"
local retry = require "scimrun.resilience.retry"
local policy = require "scimrun.resilience.policy"
local outcome = require "scimrun.engine.outcome"

local dir = (os.getenv("SCIMRUN_TEST_TMP") or "/tmp") .. "/engine-spec-" .. os.time() .. "-" .. math.random(1e9)
os.execute("mkdir -p '" .. dir .. "'")
teardown(function() os.execute("rm -rf '" .. dir .. "'") end)

local n = 0
local function new_engine(opts)
  n = n + 1
  local db = assert(store.open(("%s/s%d.db"):format(dir, n)))
  local run_id = "r-" .. n
  assert(db:run_create { id = run_id, workflow_name = "spec", workflow_path = "/spec.lua", workflow_hash = "h" })
  opts = opts or {}
  opts.db, opts.run_id = db, run_id
  opts.log = opts.log or function() end
  local engine = workflow.engine(opts)
  core.at_turn_end(function() engine:flush() end)
  return engine, engine:context { name = "spec" }, db
end

local function done(db)
  core.at_turn_end(nil)
  db:close()
end

-- Another engine on the same state file and run id: what `--resume ID` builds.
local function resume(engine, opts)
  scimrun.sleep(0.01) -- a later session: steps of the first are not duplicates
  opts = opts or {}
  opts.db, opts.run_id = engine.db, engine.run_id
  opts.log = opts.log or function() end
  local again = workflow.engine(opts)
  core.at_turn_end(function() again:flush() end)
  return again, again:context { name = "spec" }
end

-- Runs fn(x) for each x of list as the items of a wf:each.
local function items(wf, list, fn, opts)
  local i = 0
  wf:each(function() i = i + 1; return list[i] end, opts or { concurrency = #list }, fn)
end

-- Puts a proxy of the engine's store in its place: the given methods, the store's for the rest.
local function override_db(engine, methods)
  local real = engine.db
  engine.db = setmetatable(methods, { __index = function(_, k)
    local f = real[k]
    if type(f) ~= "function" then return f end
    return function(_, ...) return f(real, ...) end
  end })
  return real
end

-- The sizes of the batches the engine hands db:apply_async (one per transaction).
local function count_applies(engine)
  local batches, db = {}, nil
  db = override_db(engine, {
    apply_async = function(_, batch)
      batches[#batches + 1] = #batch
      return db:apply_async(batch)
    end,
  })
  return batches
end

local function states(db, run_id)
  local out = {}
  for key, s in pairs(db:steps_load(run_id)) do out[key] = s.state end
  return out
end

describe("the engine", function()
  it("commits many concurrent steps in a few transactions (group commit)", function()
    local engine, wf, db = new_engine { concurrency = 32 }
    local i = 0
    wf:each(function() i = i + 1; if i <= 200 then return i end end, { concurrency = 32 }, function(x)
      wf:step("s:" .. x, function() return x end)
    end)
    assert.are.equal(200, engine.stats.steps_run)
    -- each step is two writes (start, complete); batched, far fewer transactions than writes
    assert.is_true(engine.stats.commits < 100, engine.stats.commits .. " commits")
    local st = states(db, engine.run_id)
    assert.are.equal("completed", st["s:1"])
    assert.are.equal("completed", st["s:200"])
    done(db)
  end)

  it("compensates a step completed by a wf:map worker when its saga fails", function()
    local engine, wf, db = new_engine()
    local undone = {}
    local ok, err = pcall(function()
      wf:saga(function()
        wf:map({ "a", "b", "c" }, { concurrency = 3 }, function(x)
          wf:step("make:" .. x, function() return x end, { compensate = function(r) undone[#undone + 1] = r end })
        end)
        wf:step("fails", function() error({ class = "permanent", detail = "no" }, 0) end)
      end)
    end)
    assert.is_false(ok)
    assert.are.equal("permanent", err.class)
    table.sort(undone)
    assert.are.same({ "a", "b", "c" }, undone)
    local st = states(db, engine.run_id)
    assert.are.equal("compensated", st["make:a"])
    assert.are.equal("completed", st["compensate:make:a"])
    done(db)
  end)

  it("keeps an outer saga's scope for the items of a wf:each inside it", function()
    local _, wf, db = new_engine()
    local undone = {}
    pcall(function()
      wf:saga(function()
        local i = 0
        wf:each(function() i = i + 1; if i <= 3 then return i end end, { concurrency = 3 }, function(x)
          wf:step("item:" .. x, function() return x end, { compensate = function(r) undone[#undone + 1] = r end })
        end)
        error({ class = "permanent", detail = "after the items" }, 0)
      end)
    end)
    table.sort(undone)
    assert.are.same({ 1, 2, 3 }, undone)
    done(db)
  end)

  it("counts the outcome a step reports from a wf:map worker for its item", function()
    local engine, wf, db = new_engine()
    wf:each(function() if not engine._given then engine._given = true; return "x" end end, {}, function()
      wf:map({ 1 }, {}, function()
        wf:step("created-in-worker", function() wf:outcome("created"); return true end)
      end)
    end)
    assert.are.equal(1, engine.stats.created)
    done(db)
  end)

  it("writes the retry layer's state in the group commit, not a transaction per retry", function()
    local engine, wf, db = new_engine()
    local dir_pol = (os.getenv("SCIMRUN_TEST_TMP") or "/tmp") .. "/engine-spec-budget.lua"
    local f = assert(io.open(dir_pol, "w"))
    f:write('return { extends = "fast-test", budget = { retry_ratio = 1, min_retries = 100 }, '
      .. 'breaker = { failures = 0, failure_rate = 1, min_calls = 1000 } }')
    f:close()
    local ex = retry.executor { policy = policy.load(dir_pol), seed = 1, log = false,
      state = { load = function() return nil end,
                save = function(key, value)
                  engine:enqueue { op = "kv_put", key = key, value_json = value and require("cjson").encode(value) }
                end } }
    -- 8 items, each failing 4 times before it succeeds: 32 retries
    local tries, i = {}, 0
    wf:each(function() i = i + 1; if i <= 8 then return i end end, { concurrency = 8 }, function(x)
      wf:step("flaky:" .. x, function()
        return ex:run("users.get", "t", function()
          tries[x] = (tries[x] or 0) + 1
          if tries[x] <= 4 then return nil, { status = 503 } end
          return true
        end, { profile = { attempts = 5, backoff = "constant", base = 0.01 } })
      end)
    end)
    for x = 1, 8 do assert.are.equal(5, tries[x]) end
    engine:flush()
    -- the budget and backoff deadline of every retry ride on group commits shared by all tasks:
    -- before, each of the 32 retries also wrote two transactions of its own (80+ in all)
    assert.is_true(engine.stats.commits <= 30, engine.stats.commits .. " commits for 8 steps and 32 retries")
    assert.is_table(require("cjson").decode(db:kv_get(engine.run_id, "budget")))
    done(db)
  end)

  it("hands the step's checkpoint key and timeouts.step deadline to the retry layer", function()
    local engine, wf, db = new_engine { step_timeout = 0.3 }
    local ex = retry.executor { policy = policy.load("fast-test"), seed = 1, log = false,
      state = { load = function() return nil end, save = function(k) engine._saved = k end } }
    local calls = 0
    local ok, err = pcall(wf.step, wf, "slow", function()
      return ex:run("users.get", "t", function()
        calls = calls + 1
        scimrun.sleep(0.1)
        return nil, { status = 503, headers = { ["Retry-After"] = "0.05" } }
      end, { profile = { attempts = 100, backoff = "constant", base = 0.01 } })
    end)
    assert.is_false(ok)
    assert.are.equal("transient", err.class)
    assert.is_true(calls >= 2 and calls <= 4, calls .. " attempts in a 0.3 s step") -- not 100
    assert.matches("^deadline:slow#1:users.get$", engine._saved) -- the step's key, not a guess
    done(db)
  end)
end)

describe("a step", function()
  it("replays on a resume: a completed step returns its recorded result without running", function()
    local engine, wf, db = new_engine()
    assert.are.same({ n = 1 }, wf:step("a", function() return { n = 1 } end))
    local again, wf2 = resume(engine)
    local ran = false
    assert.are.same({ n = 1 }, wf2:step("a", function() ran = true; return { n = 2 } end))
    assert.is_false(ran)
    assert.are.same({ 1, 0 }, { again.stats.steps_replayed, again.stats.steps_run })
    done(db)
  end)


  it("of a fresh run reads the store only for keys it started; a duplicate is still refused", function()
    local engine, wf, db = new_engine { fresh_run = true }
    local reads = {}
    override_db(engine, { step_get = function(_, run_id, key)
      reads[#reads + 1] = key
      return db:step_get(run_id, key)
    end })
    assert.are.equal(1, wf:step("a", function() return 1 end))
    assert.are.equal(2, wf:step("b", function() return 2 end))
    assert.are.same({}, reads) -- new keys: nothing to look up
    local ok, err = pcall(wf.step, wf, "a", function() return 3 end)
    assert.is_false(ok)
    assert.matches('duplicate step key "a"', tostring(err.detail))
    assert.are.same({ "a" }, reads)
    -- a resume is no fresh run: it looks every key up and replays what is recorded
    local _, wf2 = resume(engine)
    assert.are.equal(2, wf2:step("b", function() return 20 end))
    done(db)
  end)

  it("of a fresh run remembers at most KNOWN_KEYS_MAX keys, then looks every key up", function()
    local engine, wf, db = new_engine { fresh_run = true }
    engine.KNOWN_KEYS_MAX = 2
    local reads = 0
    override_db(engine, { step_get = function(_, run_id, key)
      reads = reads + 1
      return db:step_get(run_id, key)
    end })
    for _, k in ipairs { "a", "b", "c" } do wf:step(k, function() return k end) end
    assert.are.equal(0, reads) -- "c" started after the limit: the set is dropped
    assert.is_nil(engine.known_keys)
    wf:step("d", function() return "d" end)
    assert.are.equal(1, reads)
    local ok, err = pcall(wf.step, wf, "c", function() return 3 end)
    assert.is_false(ok)
    assert.matches('duplicate step key "c"', tostring(err.detail))
    done(db)
  end)
  it("that fails is recorded failed; a resume fails it again unrun, --retry-failed runs it", function()
    local engine, wf, db = new_engine()
    local ok, err = pcall(wf.step, wf, "b", function()
      return nil, { class = "permanent", status = 400, detail = "bad value" }
    end)
    assert.is_false(ok)
    assert.are.same({ "permanent", 400, "b" }, { err.class, err.status, err.step })
    assert.are.equal("failed", states(db, engine.run_id).b)
    assert.matches("bad value", db:step_get(engine.run_id, "b").error_json)

    local _, wf2 = resume(engine)
    local ran = false
    ok, err = pcall(wf2.step, wf2, "b", function() ran = true; return 1 end)
    assert.is_false(ok)
    assert.is_false(ran)
    assert.is_true(err.replayed)
    assert.are.same({ "permanent", "bad value" }, { err.class, err.detail })

    local _, wf3 = resume(engine, { retry_failed = true })
    assert.are.equal(2, wf3:step("b", function() ran = true; return 2 end))
    assert.is_true(ran)
    assert.are.equal("completed", states(db, engine.run_id).b)
    assert.are.equal(2, db:step_get(engine.run_id, "b").attempts)
    done(db)
  end)

  it("left in doubt is recovered: recover's answer is recorded, nothing re-run; its item is adopted", function()
    local engine, _, db = new_engine()
    -- a previous process started these steps and died before recording how they ended
    assert(db:apply { { op = "step_start", run_id = engine.run_id, key = "found" },
                      { op = "step_start", run_id = engine.run_id, key = "absent" },
                      { op = "step_start", run_id = engine.run_id, key = "unsure" } })
    local again, wf2 = resume(engine)
    local ran = {}
    local function step(key, recover)
      return wf2:step(key, function() ran[key] = true; return { id = "sent:" .. key } end, { recover = recover })
    end
    items(wf2, { "found" }, function()
      assert.are.same({ id = "u1" }, step("found", function() return { id = "u1" } end))
    end)
    assert.is_nil(ran.found)
    assert.are.same({ 1, 1 }, { again.stats.steps_recovered, again.stats.adopted })
    assert.are.equal("completed", states(db, engine.run_id).found)
    -- recover finds nothing: the effect did not happen, the step runs
    assert.are.same({ id = "sent:absent" }, step("absent", function() return nil end))
    assert.is_true(ran.absent)
    -- recover cannot tell: the step fails and stays in doubt for a later resume to check again
    local ok, err = pcall(step, "unsure", function() error({ class = "transient", detail = "timeout" }, 0) end)
    assert.is_false(ok)
    assert.is_nil(ran.unsure)
    assert.matches("in doubt and the recover check failed: timeout", err.detail)
    assert.are.equal("started", states(db, engine.run_id).unsure)
    done(db)
  end)
end)

describe("a saga", function()
  it("compensates its completed steps newest first, each as a checkpointed step", function()
    local engine, wf, db = new_engine()
    local undone = {}
    local function undo(r) undone[#undone + 1] = r end
    local ok, err = pcall(wf.saga, wf, function()
      for _, k in ipairs { "a", "b", "c" } do wf:step(k, function() return k end, { compensate = undo }) end
      wf:step("d", function() error({ class = "permanent", detail = "d fails" }, 0) end, { compensate = undo })
    end)
    assert.is_false(ok)
    assert.are.equal("d", err.step)
    assert.is_true(err.compensated)
    assert.are.same({ "c", "b", "a" }, undone) -- never the failed step's own
    local st = states(db, engine.run_id)
    assert.are.same({ "compensated", "compensated", "compensated", "failed" }, { st.a, st.b, st.c, st.d })
    assert.are.same({ "completed", "completed", "completed" },
                    { st["compensate:a"], st["compensate:b"], st["compensate:c"] })
    assert.is_nil(st["compensate:d"])
    assert.are.equal(3, engine.stats.compensated)
    done(db)
  end)
end)

describe("the task context", function()
  it("is inherited: a spawned task sees its parent's run context and item; its own writes stay its own", function()
    local _, wf, db = new_engine()
    local ctx = scimrun.ctx()
    local saved = ctx.run
    local run = { marker = true }
    ctx.run = run
    local seen = {}
    local ok, err = pcall(items, wf, { "x", "y" }, function(name)
      local item = scimrun.ctx().item
      seen[name] = { item = item }
      wf:map({ 1, 2 }, { concurrency = 2 }, function(i)
        local c = scimrun.ctx()
        seen[name][i] = { run = c.run, item = c.item }
        c.mine = i -- a worker's own field
      end)
      local done_spawn = false
      scimrun.spawn(function()
        seen[name].spawned = scimrun.ctx().item
        done_spawn = true
      end)
      while not done_spawn do scimrun.sleep(0.001) end
      seen[name].mine = scimrun.ctx().mine
    end)
    ctx.run = saved
    assert(ok, tostring(err))
    for _, name in ipairs { "x", "y" } do
      local s = seen[name]
      assert.is_table(s.item)
      for i = 1, 2 do
        assert.are.equal(run, s[i].run)
        assert.are.equal(s.item, s[i].item) -- the item's own table: what a worker notes counts for it
      end
      assert.are.equal(s.item, s.spawned)
      assert.is_nil(s.mine)
    end
    assert.are_not.equal(seen.x.item, seen.y.item)
    done(db)
  end)
end)

describe("the group commit", function()
  -- a step with a recover check: its start is durable before its function runs
  local GUARDED = { recover = function() end }

  it("puts every step finishing in one loop turn in one transaction", function()
    local engine, wf, db = new_engine()
    local batches = count_applies(engine)
    local list = {}
    for i = 1, 50 do list[i] = i end
    local recover = function() end
    wf:map(list, { concurrency = 50 }, function(x)
      wf:step("g:" .. x, function() return x end, { recover = recover })
    end)
    -- steps with a recover check: 50 starts in one transaction, 50 completions in the next
    assert.are.same({ 50, 50 }, batches)
    assert.are.equal(2, engine.stats.commits)
    assert.are.equal("completed", states(db, engine.run_id)["g:50"])
    done(db)
  end)

  it("writes the start of a step without a recover check with its completion: one transaction", function()
    local engine, wf, db = new_engine()
    local batches = count_applies(engine)
    local list = {}
    for i = 1, 50 do list[i] = i end
    wf:map(list, { concurrency = 50 }, function(x) wf:step("g:" .. x, function() return x end) end)
    assert.are.same({ 100 }, batches)
    assert.are.equal(1, engine.stats.commits)
    assert.are.equal("completed", states(db, engine.run_id)["g:50"])
    done(db)
  end)

  it("waits to write while a task restores the store's connection, then writes what was queued", function()
    -- The PostgreSQL store's recovering(): a group commit at a turn's end then ran a reconnect
    -- window of its own, blocking the loop (and the task restoring the connection) with it.
    local engine, wf, db = new_engine()
    local batches, real = {}, nil
    local restoring = true
    real = override_db(engine, {
      apply_async = false, -- as the PostgreSQL store: db:apply, a task's round trip
      apply = function(_, batch)
        batches[#batches + 1] = #batch
        return real:apply(batch)
      end,
      recovering = function() return restoring end,
    })
    local finished = false
    scimrun.spawn(function()
      wf:step("a", function() return 1 end)
      finished = true
    end)
    scimrun.sleep(0.05) -- many loop turns
    assert.are.same({}, batches)
    assert.is_false(finished)
    restoring = false
    for _ = 1, 200 do
      if finished then break end
      scimrun.sleep(0.005)
    end
    assert.is_true(finished)
    assert.are.same({ 2 }, batches) -- the step's start and its completion
    assert.are.equal("completed", states(db, engine.run_id)["a"])
    done(db)
  end)

  -- The store's commits on the thread pool seen through a proxy: what happened, in order.
  local function watch_commits(engine, fail)
    local seen, db = {}, nil
    db = override_db(engine, {
      apply_async = function(_, batch)
        seen[#seen + 1] = "commit"
        local ok, ids, code
        if fail then ok, ids, code = fail(batch) else ok, ids, code = db:apply_async(batch) end
        seen[#seen + 1] = ok and "committed" or "failed"
        return ok, ids, code
      end,
    })
    return seen
  end

  it("runs a step with a recover check only once the commit of its start is durable", function()
    local engine, wf, db = new_engine()
    local seen = watch_commits(engine)
    wf:step("one", function() seen[#seen + 1] = "ran" end, { recover = function() end })
    seen[#seen + 1] = "returned"
    assert.are.same({ "commit", "committed", "ran", "commit", "committed", "returned" }, seen)
    assert.are.equal("completed", states(db, engine.run_id).one)
    done(db)
  end)

  it("runs a step without one at once, and returns once its start and completion are durable", function()
    -- without recover, a step in doubt is run again on resume, as one never started is
    local engine, wf, db = new_engine()
    local seen = watch_commits(engine)
    wf:step("one", function() seen[#seen + 1] = "ran" end)
    seen[#seen + 1] = "returned"
    assert.are.same({ "ran", "commit", "committed", "returned" }, seen)
    assert.are.equal("completed", states(db, engine.run_id).one)
    done(db)
  end)

  it("writes what was queued during a commit in one transaction after it", function()
    local engine, wf, db = new_engine()
    local seen = watch_commits(engine)
    local list = {}
    for i = 1, 20 do list[i] = i end
    -- steps that end in different loop turns: several commits, never two at once
    wf:map(list, { concurrency = 20 }, function(x)
      for _ = 1, x % 4 do scimrun.sleep(0) end
      wf:step("s:" .. x, function() end)
    end)
    local commits, under_way = 0, false
    for _, what in ipairs(seen) do
      if what == "commit" then
        assert.is_false(under_way, "a batch was handed over while a commit ran; it waits for the next one")
        commits, under_way = commits + 1, true
      else
        under_way = false
      end
    end
    assert.is_true(commits >= 2 and commits < 40) -- 40 writes, fewer transactions
    assert.are.equal(20, engine.stats.steps_run)
    assert.are.equal(commits, engine.stats.commits)
    done(db)
  end)

  it("fails the step and stops the run when the commit's sync fails: nothing is reported durable", function()
    local engine, wf, db = new_engine()
    watch_commits(engine, function() return nil, "state file x: syncing its log failed: Input/output error", "SYNC" end)
    local ok, err = pcall(wf.step, wf, "one", function() error("must not run") end, GUARDED)
    assert.is_false(ok)
    assert.are.equal("store", err.class)
    assert.matches("syncing its log failed", err.detail)
    assert.is_true(engine.stopping)
    assert.has_error(function() wf:step("two", function() end) end)
    done(db)
  end)

  it("fails a step without a recover check whose commit fails: it ran, nothing of it is recorded", function()
    local engine, wf, db = new_engine()
    watch_commits(engine, function() return nil, "state file x: syncing its log failed: Input/output error", "SYNC" end)
    local ran = false
    local ok, err = pcall(wf.step, wf, "one", function() ran = true end)
    assert.is_false(ok)
    assert.is_true(ran) -- on resume it runs again, as a step in doubt without recover does
    assert.are.equal("store", err.class)
    assert.matches("syncing its log failed", err.detail)
    assert.is_true(engine.stopping)
    assert.is_nil(db:step_get(engine.run_id, "one"))
    done(db)
  end)

  it("stops the run when the store cannot write a batch, naming what to do", function()
    local engine, wf, db = new_engine()
    db:_pragma("query_only", 1)
    local ok, err = pcall(wf.step, wf, "one", function() error("must not run") end, GUARDED)
    db:_pragma("query_only", 0)
    assert.is_false(ok)
    assert.are.equal("store", err.class)
    assert.matches("cannot write the state file: .*free space or fix permissions, then %-%-resume", err.detail)
    assert.is_true(engine.stopping)
    assert.is_nil(db:step_get(engine.run_id, "one"))
    done(db)
  end)

  it("after a failed sync writes nothing more: no step queued meanwhile is told it is durable", function()
    local engine, wf, db = new_engine()
    local calls = 0
    override_db(engine, {
      apply_async = function(_, batch)
        calls = calls + 1
        scimrun.sleep(0.05) -- a slow disk: other steps queue meanwhile
        if calls == 1 then return nil, "state file x: syncing its log failed: Input/output error", "SYNC" end
        return db:apply_async(batch)
      end,
    })
    local ran, failed = {}, {}
    local fns = {}
    for i = 1, 3 do
      fns[i] = function()
        scimrun.sleep(i == 1 and 0 or 0.01)
        local ok, err = pcall(wf.step, wf, "s" .. i, function() ran[#ran + 1] = i end, { recover = function() end })
        if not ok then failed[#failed + 1] = err.class end
      end
    end
    scimrun.all(fns)
    assert.are.same({}, ran) -- every step_start was awaiting a commit: none ran its work
    assert.are.same({ "store", "store", "store" }, failed)
    assert.are.equal(1, calls)
    assert.matches("Input/output error", engine.fatal.detail)
    assert.is_false(engine.committing)
    done(db)
  end)

  -- A step whose commit meets a raising store method fails with (class, detail); the run stops.
  local function step_meets(methods, class, detail)
    local engine, wf, db = new_engine()
    override_db(engine, methods)
    local ok, err = pcall(wf.step, wf, "x", function() error("must not run") end, GUARDED)
    assert.is_false(ok)
    assert.are.equal(class, err.class)
    assert.matches(detail, err.detail)
    assert.is_true(engine.stopping)
    assert.is_false(engine.committing)
    assert.are.same({}, engine.waiters)
    done(db)
  end

  it("whose committer raises (a closed store, a bug) wakes its steps with the error; none waits forever", function()
    step_meets({ apply_async = function() error("state store is closed") end }, "internal",
      "the group commit failed: .*state store is closed")
  end)

  it("that raises on the loop (a bug) wakes its steps with the error and stops the run; none waits forever", function()
    step_meets({ apply_async = false, apply = function() error("attempt to get length of local 'lost'") end },
      "internal", "the group commit failed: .*length of local 'lost'")
  end)

  it("at a hard stop with no commit under way writes what is queued at once, on the loop", function()
    -- a hard stop exits right after this flush: a committer task spawned now would never run
    local engine, _, db = new_engine()
    engine:enqueue { op = "kv_put", key = "queued", value_json = "1" }
    engine:flush(true)
    assert.are.same({}, engine.pending)
    assert.are.equal("1", db:kv_get(engine.run_id, "queued")) -- no loop turn since
    assert.is_false(engine.committing)
    done(db)
  end)

  it("at a hard stop writes at once, on the loop, after the commit under way", function()
    local engine, wf, db = new_engine()
    local seen = watch_commits(engine)
    local started = false
    scimrun.spawn(function()
      started = true
      wf:step("under-way", function() end, { recover = function() end })
    end)
    while not started do scimrun.sleep(0) end
    scimrun.sleep(0) -- the start of "under-way" is handed to the thread pool
    assert.is_true(engine.committing)
    engine:enqueue { op = "kv_put", key = "late", value_json = "1" }
    engine:flush(true)
    assert.are.same({}, engine.pending)
    assert.are.equal("1", db:kv_get(engine.run_id, "late"))
    assert.are.equal("started", db:step_get(engine.run_id, "under-way").state) -- committed first
    while engine.committing or db:step_get(engine.run_id, "under-way").state ~= "completed" do scimrun.sleep(0.001) end
    assert.are.equal("commit", seen[1])
    done(db)
  end)

  it("at durability normal, commits on the thread pool too", function()
    n = n + 1
    local db = assert(store.open(("%s/s%d.db"):format(dir, n), { durability = "normal" }))
    assert(db:run_create { id = "r-normal", workflow_name = "spec", workflow_path = "/spec.lua", workflow_hash = "h" })
    local engine = workflow.engine { db = db, run_id = "r-normal", log = function() end }
    core.at_turn_end(function() engine:flush() end)
    local seen = watch_commits(engine)
    engine:context { name = "spec" }:step("one", function() end)
    assert.are.same({ "commit", "committed" }, seen) -- its start and completion
    assert.are.equal("completed", states(db, "r-normal").one)
    done(db)
  end)
end)

describe("an item's outcome", function()
  it("is what its steps' work noted, counted once each step is recorded; a failed step's is dropped", function()
    local engine, wf, db = new_engine()
    items(wf, { 1, 2 }, function(x)
      if x == 1 then
        local ok = pcall(wf.step, wf, "fails:1", function()
          outcome.note("created")
          error({ class = "permanent", detail = "after the create" }, 0)
        end)
        assert.is_false(ok)
        wf:step("then:1", function() outcome.note("skipped"); return true end)
      else
        wf:step("outer:2", function()
          -- a step inside a step: its note goes to the outer one, which hands it to the item
          wf:step("inner:2", function() outcome.note("updated"); return true end)
          return true
        end)
      end
    end)
    assert.are.same({ 0, 1, 1 }, { engine.stats.created, engine.stats.skipped, engine.stats.updated })
    done(db)
  end)

  it("never comes from a step's return values; `return nil, err` is a failure", function()
    local warnings = {}
    local engine, wf, db = new_engine { log = function(level, msg)
      if level == "warn" then warnings[#warnings + 1] = msg end
    end }
    local failures = {}
    items(wf, { "legacy", "legacy2", "nil-outcome", "nil-text" }, function(name)
      local ok, err = pcall(wf.step, wf, name, function()
        if name == "nil-outcome" then return nil, "created" end
        if name == "nil-text" then return nil, "no such thing" end
        return { ok = true }, "created"
      end)
      if not ok then failures[name] = err end
    end)
    assert.are.same({ 0, 0 }, { engine.stats.created, engine.stats.failed })
    assert.are.equal(1, #warnings) -- said once per run
    assert.matches('returned "created" as its second value', warnings[1])
    assert.are.equal("usage", failures["nil-outcome"].class)
    assert.matches("wf:outcome", failures["nil-outcome"].detail)
    assert.are.equal("no such thing", failures["nil-text"].detail)
    local st = states(db, engine.run_id)
    assert.are.same({ "completed", "failed", "failed" }, { st.legacy, st["nil-outcome"], st["nil-text"] })
    assert.has_error(function() wf:outcome("done") end,
      'wf:outcome: "done" is no outcome; use "created", "updated", "skipped" or "adopted"')
    done(db)
  end)

  it("comes from the SCIM client call inside the step; outside a run the client notes nothing", function()
    local sbrun = require "helpers.sbrun"
    local scim = require "scimrun.scim"
    local srv = sbrun.sandbox()
    local sp = scim.connect { base_url = srv.url, token = srv.token }
    -- outside a run: the answer is the resource, the outcome its third value, nothing noted
    local u, err, how = sp.users:ensure { userName = "ctx.old", title = "Engineer" }
    assert.is_nil(err)
    assert.are.same({ "ctx.old", "created" }, { u.userName, how })
    assert.is_nil(scimrun.ctx().item)
    assert(sp.users:ensure { userName = "ctx.same" })
    local g = assert(sp.groups:ensure { displayName = "ctx" })

    local engine, wf, db = new_engine()
    items(wf, { "new", "same", "old", "member" }, function(name)
      local r = wf:step("user:" .. name, function()
        local r, e = sp.users:ensure { userName = "ctx." .. (name == "member" and "same" or name),
                                       title = name == "old" and "Lead" or nil }
        if not r then return nil, e end
        return { id = r.id }
      end)
      if name == "member" then
        -- from a wf:map worker inside the step: counts for the step, then the item
        wf:step("member:" .. name, function()
          wf:map({ r.id }, {}, function(id) assert(sp.groups:add_members(g.id, { id })) end)
          return true
        end)
      end
    end)
    srv.close()
    assert.are.same({ 1, 2, 1, 0 },
      { engine.stats.created, engine.stats.updated, engine.stats.skipped, engine.stats.adopted })
    done(db)
  end)
end)

describe("wf:each's concurrency", function()
  local function order_with(lent_max, concurrency)
    local engine, wf, db = new_engine()
    local default = engine.LENT_MAX
    if lent_max then engine.LENT_MAX = lent_max end
    local ex = retry.executor { policy = policy.load("fast-test"), seed = 1, log = false }
    local finished, tries = {}, {}
    -- items 1 and 2 fail once (a 503) and sleep 0.3 s before their retry
    items(wf, { 1, 2, 3, 4 }, function(i)
      wf:step("s" .. i, function()
        return ex:run("users.create", "t", function()
          if i <= 2 then
            tries[i] = (tries[i] or 0) + 1
            if tries[i] == 1 then return nil, { status = 503 } end
          end
          return { ok = true }
        end, { profile = { attempts = 3, backoff = "constant", base = 0.3, jitter = "none" } })
      end)
      finished[#finished + 1] = i
    end, { concurrency = concurrency })
    done(db)
    return finished, default
  end

  it("an item asleep in a retry backoff lends its slot: the next items run meanwhile", function()
    local finished, default = order_with(nil, 2)
    assert.are.equal(4, default)
    assert.are.same({ 3, 4, 1, 2 }, finished)
  end)

  it("without lending, the next items wait for it", function()
    -- Items 3 and 4 start only when item 1 or 2 gives its slot back, so one of those finishes
    -- first. Item 3 may then finish before item 2 wakes (a slow machine's commit of item 1
    -- can outlast the few microseconds between the two sleeps' ends), so only the first place
    -- is pinned; with lending, 3 and 4 finish before both.
    local finished = order_with(0, 2)
    assert.are.equal(1, finished[1])
    table.sort(finished)
    assert.are.same({ 1, 2, 3, 4 }, finished)
  end)

  it("at concurrency 1 items run strictly one after another: nothing is lent", function()
    assert.are.same({ 1, 2, 3, 4 }, (order_with(nil, 1)))
  end)

  -- Worker mode's source (scimrun.worker): with nothing left to claim, wf:each waits for its own
  -- items, lent ones included, and not for other workers (source.wait: a NOTIFY, or up to 5 s).
  -- Items parked in a membership batch lend their slots, so at the end of a run every item of
  -- this worker may be lent; it used to wait out source.wait() then.
  it("with every item lent and nothing to claim, waits for its own items, not for other workers", function()
    local engine, wf, db = new_engine()
    local queue, waits = { 1, 2, 3, 4 }, 0
    engine.worker = {
      source = function(_, _, _, pre)
        pre()
        return {
          total = 4,
          next = function()
            local x = table.remove(queue, 1)
            if x then return x, {} end
            return nil, engine.stats.items < 4 and "wait" or nil
          end,
          wait = function() waits = waits + 1; scimrun.sleep(0.05) end,
          release = function() end,
        }
      end,
    }
    local finished = {}
    wf:each(function() return nil end, { concurrency = 2 }, function(x)
      local item = scimrun.ctx().item
      item.lend(true) -- parked in a membership batch
      scimrun.sleep(0.02)
      item.lend(false)
      finished[#finished + 1] = x
    end)
    engine.worker = nil
    done(db)
    assert.are.equal(4, #finished)
    assert.are.equal(0, waits)
  end)
end)
