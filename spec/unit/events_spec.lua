-- The run's event stream: every reader sees the events of the types it declared (all of them
-- without a declaration), in subscription order; a reader that raises is dropped.
local events = require "scimrun.engine.events"

describe("the event stream", function()
  it("calls a reader for the types it declared only, and an undeclared reader for all", function()
    local s = events.new()
    local seen = {}
    s:subscribe(function(ev) seen[#seen + 1] = "all:" .. ev.type end)
    s:subscribe(function(ev) seen[#seen + 1] = "writes:" .. ev.type end, { "write" })
    s:subscribe(function(ev) seen[#seen + 1] = "items:" .. ev.type end, { item = true, item_start = true })
    for _, ty in ipairs { "write", "attempt", "item_start", "item", "write" } do s:emit { type = ty } end
    assert.are.same({ "all:write", "writes:write", "all:attempt", "all:item_start", "items:item_start",
                      "all:item", "items:item", "all:write", "writes:write" }, seen)
  end)

  it("reaches a reader subscribed after events of its type went out, and not one unsubscribed", function()
    local s = events.new()
    local a, b = 0, 0
    local off = s:subscribe(function() a = a + 1 end, { "write" })
    s:emit { type = "write" }
    s:subscribe(function() b = b + 1 end, { "write" })
    s:emit { type = "write" }
    off()
    s:emit { type = "write" }
    assert.are.same({ 2, 2 }, { a, b })
  end)

  it("drops a reader that raises and goes on with the others", function()
    local s = events.new()
    local calls, after = 0, 0
    s:subscribe(function() calls = calls + 1; error("broken reader") end, { "item" })
    s:subscribe(function() after = after + 1 end)
    s:emit { type = "item" }
    s:emit { type = "item" }
    assert.are.same({ 1, 2 }, { calls, after })
  end)

  it("keeps a tally of the types it counts", function()
    local s = events.new()
    local t = events.tally(s)
    s:emit { type = "attempt" }
    s:emit { type = "write" }
    s:emit { type = "success" }
    assert.are.same({ 1, 1 }, { t.attempts, t.successes })
  end)
end)
