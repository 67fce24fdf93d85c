-- An item's outcome comes from the SCIM client calls inside its steps (scimrun.engine.outcome),
-- never from what a step returns: created, updated, skipped and adopted reach the summary and
-- the --report from the client alone; `return nil, err` is still a failure; a step returning an
-- outcome name as its second value (the convention before) counts for nothing and is said once.
-- The workflow is spec/fixtures/workflows/outcomes.lua, against the embedded sandbox.
local cjson = require "cjson"
local proc = require "helpers.proc"

local dir = proc.tmpdir("outcomes")
teardown(function() os.execute("rm -rf '" .. dir .. "'") end)

local function report(path)
  local r = cjson.decode(proc.read_all(path))
  local by = {}
  for _, it in ipairs(r.items) do by[it.item] = it end
  return r, by
end

describe("item outcomes", function()
  it("come from the client call inside each step, in the summary and the --report", function()
    local state, rep = dir .. "/o.db", dir .. "/o.json"
    local code, out, err = proc.run(("spec/fixtures/workflows/outcomes.lua --sandbox --policy fast-test"
      .. " --continue-on-error --state %s --report %s"):format(state, rep))
    local all = out .. err
    assert.are.equal(3, code, all) -- the failed item is a dead letter
    assert.matches("7: 6 succeeded %(1 created, 2 updated, 1 skipped, 1 adopted%), 1 failed", all)
    local r, by = report(rep)
    assert.are.equal("created", by.new.outcome)
    assert.are.equal("skipped", by.same.outcome)
    assert.are.equal("updated", by.changed.outcome)
    assert.are.equal("adopted", by.late.outcome)
    assert.are.equal("updated", by.member.outcome) -- skipped by ensure, then a member added
    assert.are.same({ 1, 2, 1, 1 }, { r.summary.created, r.summary.updated, r.summary.skipped, r.summary.adopted })

    -- `return nil, err` fails the step with the client's error
    assert.are.equal("failed", by.fails.status)
    assert.are.equal("dead_lettered", by.fails.outcome)
    assert.are.equal("permanent", by.fails.error.class)
    assert.are.equal("user:fails", by.fails.error.step)
    assert.matches("ensure needs the match attribute", by.fails.error.detail)
    assert.are.equal(1, r.summary.failed)

    -- a second return value is no outcome: the item succeeded with none, and the log says why once
    assert.are.equal("ok", by.legacy.status)
    assert.are.equal("done", by.legacy.outcome)
    assert.matches('step "user:legacy" returned "created" as its second value', all)
    local _, n = all:gsub("as its second value", "")
    assert.are.equal(1, n)
  end)
end)
