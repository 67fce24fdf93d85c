-- The scheduler as a workflow author sees it: tasks, sleeps, park/wake, error isolation.
describe("scheduler", function()
  it("runs 100 concurrent sleeps in about the time of one", function()
    local t0 = scimrun.now()
    local fns = {}
    for i = 1, 100 do fns[i] = function() scimrun.sleep(0.2); return i end end
    local results = scimrun.all(fns)
    local elapsed = scimrun.now() - t0
    assert.are.equal(100, #results)
    assert.are.equal(57, results[57])
    assert.is_true(elapsed >= 0.19, "slept less than asked: " .. elapsed)
    assert.is_true(elapsed < 2, "sleeps ran one after another: " .. elapsed)
  end)

  it("gives a monotonic clock with sub-millisecond resolution", function()
    local a = scimrun.now()
    local b = scimrun.now()
    assert.is_true(b >= a)
    scimrun.sleep(0.01)
    local c = scimrun.now()
    assert.is_true(c - a >= 0.009 and c - a < 1)
    assert.are_not.equal(math.floor(c * 1000) / 1000, c) -- has digits below the millisecond
  end)

  it("passes values from wake to park", function()
    local me = coroutine.running()
    scimrun.spawn(function() scimrun.sleep(0.01); scimrun.wake(me, "hello", 42) end)
    local a, b = scimrun.park()
    assert.are.same({ "hello", 42 }, { a, b })
  end)

  it("refuses to wake a task that is not parked", function()
    local co = scimrun.spawn(function() scimrun.sleep(0.05) end)
    scimrun.sleep(0) -- let it start and block in sleep (not park)
    assert.has_error(function() scimrun.wake(coroutine.running()) end)
    assert.is_truthy(co)
  end)

  it("keeps other tasks running when one fails", function()
    local before = scimrun.stats().failed
    local finished = false
    scimrun.spawn(function() error("deliberate failure in a spec") end)
    scimrun.spawn(function() scimrun.sleep(0.02); finished = true end)
    scimrun.sleep(0.05)
    assert.is_true(finished)
    assert.are.equal(before + 1, scimrun.stats().failed)
  end)

  it("runs an explicit coroutine.yield as a cooperative yield", function()
    local order = {}
    local a = function() for i = 1, 3 do order[#order + 1] = "a" .. i; coroutine.yield() end end
    local b = function() for i = 1, 3 do order[#order + 1] = "b" .. i; coroutine.yield() end end
    scimrun.all({ a, b })
    assert.are.same({ "a1", "b1", "a2", "b2", "a3", "b3" }, order)
  end)

  it("raises a clear error when sleep is called outside a task", function()
    local ok, err = pcall(function()
      local co = coroutine.create(function() return scimrun.sleep(0.01) end)
      local _, e = coroutine.resume(co)
      error(e, 0)
    end)
    assert.is_false(ok)
    assert.matches("must be called from a scimrun task", tostring(err))
  end)
end)
