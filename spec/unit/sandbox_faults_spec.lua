-- The sandbox's fault spec parser and deterministic injector.
local faults = require "scimrun.sandbox.faults"

-- The fault kinds (or ".") the injector picks for n requests of the given methods.
local function sequence(spec, seed, n, method)
  local inj = assert(faults.new(spec, seed, 0))
  local out = {}
  for i = 1, n do
    local d = inj:decide(method or "GET", i * 0.001)
    out[i] = d.fault and d.fault.kind or "."
  end
  return table.concat(out, " ")
end

describe("sandbox faults", function()
  local SPEC = "503:0.1,429:0.1@retry-after=3,reset:0.1,lost:0.1,hang:0.05"

  it("gives the same sequence for the same spec and seed", function()
    local a, b = sequence(SPEC, 42, 300), sequence(SPEC, 42, 300)
    assert.are.equal(a, b)
    for _, kind in ipairs({ "503", "429", "reset", "lost", "hang" }) do
      assert.matches(kind, a, 1, true)
    end
  end)

  it("gives a different sequence for a different seed", function()
    assert.are_not.equal(sequence(SPEC, 42, 300), sequence(SPEC, 43, 300))
  end)

  it("injects each kind at about its probability", function()
    local inj = assert(faults.new("503:0.2,reset:0.05", 7, 0))
    local counts = {}
    for _ = 1, 20000 do
      local d = inj:decide("GET", 0)
      local k = d.fault and d.fault.kind or "none"
      counts[k] = (counts[k] or 0) + 1
    end
    assert.is_true(math.abs(counts["503"] / 20000 - 0.2) < 0.015, tostring(counts["503"]))
    assert.is_true(math.abs(counts.reset / 20000 - 0.05) < 0.008, tostring(counts.reset))
  end)

  it("carries Retry-After on 429 (1 s unless given)", function()
    local inj = assert(faults.new("429:1", 1, 0))
    assert.are.equal(1, inj:decide("GET", 0).fault.retry_after)
    inj = assert(faults.new("429:1@retry-after=7", 1, 0))
    assert.are.equal(7, inj:decide("GET", 0).fault.retry_after)
  end)

  it("limits @writes faults to POST, PUT, PATCH and DELETE", function()
    assert.are.equal(("."):rep(20, " "), sequence("503:1@writes", 1, 20, "GET"))
    assert.are.equal(("503"):rep(20, " "), sequence("503:1@writes", 1, 20, "PATCH"))
  end)

  it("adds latency to every request, or a fraction, or a range", function()
    local inj = assert(faults.new("latency:20ms", 1, 0))
    assert.are.equal(0.02, inj:decide("GET", 0).latency)
    inj = assert(faults.new("latency:10-50ms", 1, 0))
    for _ = 1, 50 do
      local l = inj:decide("GET", 0).latency
      assert.is_true(l >= 0.01 and l <= 0.05, tostring(l))
    end
    inj = assert(faults.new("latency:100ms:0.25", 3, 0))
    local slow = 0
    for _ = 1, 4000 do if inj:decide("GET", 0).latency > 0 then slow = slow + 1 end end
    assert.is_true(math.abs(slow / 4000 - 0.25) < 0.03, tostring(slow))
  end)

  it("answers 503 for everything during an outage window", function()
    local inj = assert(faults.new("outage:5s@after=10s", 1, 100))
    assert.is_nil(inj:decide("GET", 109).fault)
    local f = inj:decide("GET", 111)
    assert.are.equal(503, f.fault.status)
    assert.are.equal(4, f.fault.retry_after)
    assert.is_nil(inj:decide("GET", 115.5).fault)
  end)

  it("rate-limits with a token bucket", function()
    local inj = assert(faults.new("ratelimit:10/s", 1, 0))
    local limited = 0
    for _ = 1, 30 do
      local d = inj:decide("GET", 0)
      if d.fault then
        limited = limited + 1
        assert.are.equal(429, d.fault.status)
        assert.is_true(d.fault.retry_after >= 1)
      end
    end
    assert.are.equal(20, limited)
    assert.is_nil(inj:decide("GET", 0.5).fault) -- refilled 5 tokens
  end)

  it("accepts the full example spec", function()
    local rules = assert(faults.parse("503:0.05,429:0.03@retry-after=1,reset:0.01,lost:0.01,"
      .. "latency:20ms,hang:0.005,outage:5s@after=10s,ratelimit:600/min"))
    assert.are.equal(8, #rules)
    assert.are.same({}, assert(faults.parse(nil)))
  end)

  it("names the bad token in its error", function()
    local cases = {
      { "503", "bad fault '503'" },
      { "503:1.5", "bad fault '503:1.5'" },
      { "200:0.1", "status must be 400%-599" },
      { "latency:20", "with a unit" },
      { "explode:0.1", "unknown kind 'explode'" },
      { "503:0.1@sometimes", "unknown option '@sometimes'" },
      { "ratelimit:10/fortnight", "ratelimit:N/s" },
      { "outage:soon", "bad fault 'outage:soon'" },
      { "503:0.7,500:0.7", "add up to 1.4" },
      { "503:0.1,,lost:0.1", "empty entry" },
      { "reset:0.1@retry-after=1", "unknown option '@retry%-after=1'" },
    }
    for _, c in ipairs(cases) do
      local rules, err = faults.parse(c[1])
      assert.is_nil(rules, c[1])
      assert.matches(c[2], err)
    end
    assert.is_nil((faults.new("503:0.1", 1.5, 0)))
  end)
end)
