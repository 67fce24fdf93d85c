-- A provider that stays down: every request answers 500. The breaker opens; once it has stayed
-- open longer than breaker.max_open, waiting items fail as circuit_open instead of waiting for
-- one half-open probe each, so the run ends with every item accounted for (dead-lettered with
-- --continue-on-error; without it the run stops with the resume command). A short bound in a
-- test policy keeps the spec quick; what is asserted is the outcome, not a duration.
local cjson = require "cjson"
local proc = require "helpers.proc"

local dir = proc.tmpdir("breaker-bound")
teardown(function() os.execute("rm -rf '" .. dir .. "'") end)

local cwd = io.popen("pwd"):read("*l")
local write = proc.write

local POLICY = write(dir .. "/down.lua", ([[
return { extends = "%s/policies/fast-test.lua",
  breaker = { failures = 0, failure_rate = 0.5, window = 10, min_calls = 5, cooldown = 0.2,
              cooldown_multiplier = 2, max_cooldown = 0.4, max_open = 1 } }
]]):format(cwd))

describe("a provider that stays down", function()
  it("dead-letters every item as circuit_open once the breaker has been open longer than max_open", function()
    local state, rep = dir .. "/cont.db", dir .. "/cont.json"
    local code, out, err = proc.run(("spec/fixtures/workflows/down.lua --sandbox='500:1' --policy %s --state %s "
      .. "--report %s --continue-on-error"):format(POLICY, state, rep))
    assert.are.equal(3, code, out .. err) -- completed with dead letters
    local r = cjson.decode(proc.read_all(rep))
    assert.are.equal(40, r.summary.items)
    assert.are.equal(40, r.summary.failed)
    assert.are.equal(40, r.summary.dead_lettered)
    assert.is_true((r.summary.by_class.circuit_open or 0) > 0, out)
    assert.matches("longer than breaker.max_open", proc.read_all(rep))
  end)

  it("stops the run with its resume command without --continue-on-error", function()
    local state = dir .. "/stop.db"
    local code, out, err = proc.run(("spec/fixtures/workflows/down.lua --sandbox='500:1' --policy %s --state %s")
      :format(POLICY, state))
    assert.are.equal(1, code, out .. err)
    assert.matches("resume with: scimrun spec/fixtures/workflows/down.lua %-%-resume", out .. err)
  end)
end)
