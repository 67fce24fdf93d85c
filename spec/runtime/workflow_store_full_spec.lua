-- The engine on a real store that runs out of space: the run stops cleanly with a store error,
-- and every step committed before stays recorded (so the run can be resumed once space is free).
local store = require "scimrun.store"
local workflow = require "scimrun.workflow"
local core = require "scimrun.core"

describe("a state file that runs out of space", function()
  it("stops the run with a store error and keeps what was committed", function()
    local dir = (os.getenv("SCIMRUN_TEST_TMP") or "/tmp") .. "/wf-full-" .. os.time() .. "-" .. math.random(1e9)
    os.execute("mkdir -p '" .. dir .. "'")
    local db = assert(store.open(dir .. "/s.db"))
    assert(db:run_create { id = "r-full", workflow_name = "full", workflow_path = "/full.lua", workflow_hash = "h" })
    local engine = workflow.engine { db = db, run_id = "r-full", concurrency = 4 }
    core.at_turn_end(function() engine:flush() end)
    local wf = engine:context { name = "full" }
    for i = 1, 5 do wf:step("before:" .. i, function() return i end) end
    db:_pragma("max_page_count", 1) -- no room to grow from here on
    local big = string.rep("x", 100000)
    local ok, err = pcall(function()
      for i = 1, 50 do wf:step("after:" .. i, function() return big end) end
    end)
    core.at_turn_end(nil)
    assert.is_false(ok)
    assert.are.equal("store", err.class)
    assert.matches("cannot write the state file", err.detail)
    assert.matches("resume", err.detail)
    for i = 1, 5 do
      local rec = db:step_get("r-full", "before:" .. i)
      assert.are.equal("completed", rec.state)
      assert.are.equal(i, require("cjson").decode(rec.result_json).v)
    end
    -- further steps refuse at once instead of running side effects that could not be recorded
    local ran = false
    assert.has_error(function() wf:step("later", function() ran = true end) end)
    assert.is_false(ran)
    db:close()
  end)
end)
