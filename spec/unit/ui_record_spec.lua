-- The console's row of a run (scimrun.ui.record): what `scimrun ui` shows of its progress.
-- A `--worker` of a shared run writes the run's items done by every worker, not its own share,
-- in a row of its own; the console reads the workers' rows as one.
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

  -- a store's kv rows of one run (kv_all), as the SQLite and PostgreSQL stores return them
  local function store_with(rows)
    return { kv_all = function(_, run_id)
      assert.are.equal("r-1", run_id)
      return rows
    end }
  end

  it("merges the rows of a run's workers: counts summed, done the run's, the worst breaker", function()
    local a, b = record.new { started_at = 100 }, record.new { started_at = 90 }
    for _, rec in ipairs { a, b } do record.apply(rec, { type = "input", total = 300 }, 0) end
    items(a, 7)
    items(b, 5)
    record.apply(b, { type = "item", status = "failed", outcome = "dead_lettered" }, 0)
    record.apply(a, { type = "failure", retry = true, class = "transient" }, 0)
    record.apply(b, { type = "failure", retry = true, class = "transient" }, 0)
    record.apply(b, { type = "failure", retry = true, class = "rate_limited" }, 0)
    record.apply(a, { type = "run_items", done = 40 }, 0)
    record.apply(b, { type = "run_items", done = 44 }, 0)
    record.apply(a, { type = "rate", target = "scim.example", rps = 20 }, 0)
    record.apply(b, { type = "rate", target = "scim.example", rps = 25 }, 0)
    record.apply(b, { type = "breaker", target = "scim.example", state = "open", cooldown = 30 }, 50)
    local db = store_with {
      ["console:h:1:aaaaaa"] = record.encode(a, 200), ["console:h:2:bbbbbb"] = record.encode(b, 210),
      ["retry_budget"] = "{}", -- another kv row of the run: not the console's
    }
    local m = record.read(db, "r-1")
    assert.are.same({ 2, 300, 13, 12, 1 }, { m.workers, m.total, m.mine, m.outcomes.created, m.dead_letters })
    assert.are.equal(44, m.done) -- the highest: b's heartbeat (its own items among them), not a sum
    assert.are.same({ 3, 2, 1 }, { m.retries, m.retries_by_class.transient, m.retries_by_class.rate_limited })
    local t = m.targets["scim.example"]
    assert.are.same({ "open", 45 }, { t.breaker, t.rps })
    assert.are.same({ 90, 210, false }, { m.started_at, m.updated_at, m.finished })
  end)

  it("counts nothing in flight of a worker whose row is older than its lease (killed), nor waits for it", function()
    local live, killed = record.new { started_at = 100 }, record.new { started_at = 100 }
    for _, rec in ipairs { live, killed } do
      record.apply(rec, { type = "input", total = 300 }, 0)
      record.apply(rec, { type = "run_items", done = 20, every = 10 }, 0) -- a heartbeat each 10 s: lease 30 s
      record.apply(rec, { type = "rate", target = "scim.example", rps = 20 }, 0)
      for _ = 1, 6 do record.apply(rec, { type = "item_start" }, 0) end -- 6 items in flight each
    end
    items(live, 4)
    local rows = { ["console:a"] = record.encode(live, 160), ["console:b"] = record.encode(killed, 129) }
    local m = record.read(store_with(rows), "r-1")
    assert.are.same({ 12, 0, 40 }, { m.in_flight, m.gone, m.targets["scim.example"].rps }) -- 31 s: within 3 x 10 + 1
    rows["console:b"] = record.encode(killed, 128) -- 32 s before the newest row: gone
    m = record.read(store_with(rows), "r-1")
    assert.are.same({ 6, 1, 20 }, { m.in_flight, m.gone, m.targets["scim.example"].rps })
    assert.are.equal(4, m.mine) -- what each did still counts (the gone one: nothing)
    live.finished = true
    rows["console:a"] = record.encode(live, 160)
    assert.is_true(record.read(store_with(rows), "r-1").finished) -- not held unfinished by the gone row
    -- a row without heartbeats (a lone process's, an older scimrun's) is never taken for gone
    killed.heartbeat = nil
    rows["console:b"] = record.encode(killed, 0)
    m = record.read(store_with(rows), "r-1")
    assert.are.same({ 12, 0, false }, { m.in_flight, m.gone, m.finished })
  end)

  it("reads a lone process's row as it was written, and nothing when there is none", function()
    local rec = record.new { started_at = 5 }
    record.apply(rec, { type = "input", total = 3 }, 0)
    items(rec, 3)
    local m = record.read(store_with { console = record.encode(rec, 9), other = "{}" }, "r-1")
    assert.are.same({ 3, 3, 3, 9 }, { m.total, m.done, m.outcomes.created, m.updated_at })
    assert.is_nil(m.workers)
    assert.is_nil(record.read(store_with { other = "{}" }, "r-1"))
  end)
end)
