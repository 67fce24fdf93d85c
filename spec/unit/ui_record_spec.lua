-- The console's row of a run (scimrun.ui.record): what `scimrun ui` shows of its progress.
-- A `--worker` of a shared run writes the run's items done by every worker, not its own share.
local cjson = require "cjson"
local record = require "scimrun.ui.record"

local function items(rec, n)
  for _ = 1, n do
    record.apply(rec, { type = "item_start" }, 0)
    record.apply(rec, { type = "item", status = "succeeded", outcome = "created" }, 0)
  end
end

local function row(rec) return cjson.decode(record.encode(rec, 0)) end

describe("the console's row of a run", function()
  it("counts this process's items when it runs alone", function()
    local rec = record.new()
    record.apply(rec, { type = "input", total = 300 }, 0)
    items(rec, 12)
    record.apply(rec, { type = "item_start" }, 0)
    local r = row(rec)
    assert.are.same({ 300, 12, 12, 1, 12 }, { r.total, r.done, r.mine, r.in_flight, r.outcomes.created })
  end)

  it("counts the run's items done by every worker in worker mode, and this worker's as mine", function()
    local rec = record.new()
    record.apply(rec, { type = "input", total = 300 }, 0)
    items(rec, 10)
    -- the heartbeat: 150 done by all the workers, this one's 10 among them
    record.apply(rec, { type = "run_items", done = 150 }, 0)
    local r = row(rec)
    assert.are.same({ 150, 10, 0 }, { r.done, r.mine, r.in_flight })
    items(rec, 5) -- its own since the heartbeat
    r = row(rec)
    assert.are.same({ 155, 15 }, { r.done, r.mine })
    record.apply(rec, { type = "run_items", done = 210 }, 0) -- includes those 5
    items(rec, 1)
    r = row(rec)
    assert.are.same({ 211, 16 }, { r.done, r.mine })
    record.apply(rec, { type = "run_items", done = 300 }, 0)
    items(rec, 2) -- counted by the heartbeat already at its end: never past the total
    assert.are.equal(300, row(rec).done)
  end)
end)
