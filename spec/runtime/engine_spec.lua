-- The workflow engine in process, on a real store, without the binary: steps and their group
-- commit, sagas, and the task context that tasks a task spawns inherit (scimrun.ctx):
-- wf:map workers and wf:each items keep the saga scope, the item outcome and the step (its
-- checkpoint keys and its timeouts.step deadline) of the task that started them.
local store = require "scimrun.store"
local workflow = require "scimrun.workflow"
local core = require "scimrun.core"
local retry = require "scimrun.resilience.retry"
local policy = require "scimrun.resilience.policy"

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
        wf:step("created-in-worker", function() return true, "created" end)
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
