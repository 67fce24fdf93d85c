-- The sandbox's fault spec parser and deterministic injector.
local faults = require "scimrun.sandbox.faults"
local sandbox = require "scimrun.sandbox"
local cjson = require "cjson"

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

  it("charges patchcost per group member on PATCH only", function()
    local rules = assert(faults.parse("patchcost:20us"))
    assert.are.equal("patchcost", rules[1].kind)
    assert.is_true(math.abs(rules[1].per_member - 20e-6) < 1e-15)
    assert.are.equal(0.002, assert(faults.parse("patchcost:2ms"))[1].per_member)
    assert.are.equal(0.5, assert(faults.parse("patchcost:0.5s"))[1].per_member)
    local inj = assert(faults.new("patchcost:2ms,503:0", 1, 0))
    assert.are.equal(0.002, inj:decide("PATCH", 0).patch_cost)
    for _, m in ipairs({ "GET", "POST", "PUT", "DELETE" }) do assert.is_nil(inj:decide(m, 0).patch_cost) end
    assert.are.equal(0, inj:decide("PATCH", 0).latency)
  end)

  it("documents every kind for scimrun sandbox --help", function()
    for _, kind in ipairs({ "503:", "429:", "latency:", "hang:", "reset:", "lost:", "outage:", "ratelimit:",
      "patchcost:", "@writes" }) do
      assert.is_truthy(faults.HELP:find(kind, 1, true), kind)
    end
    assert.is_truthy(faults.parse(faults.HELP:match('%-%-faults "([^"]+)"')))
  end)

  it("accepts the full example spec", function()
    local rules = assert(faults.parse("503:0.05,429:0.03@retry-after=1,reset:0.01,lost:0.01,"
      .. "latency:20ms,hang:0.005,outage:5s@after=10s,ratelimit:600/min,patchcost:20us"))
    assert.are.equal(9, #rules)
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
      { "patchcost:20", "bad fault 'patchcost:20': .*patchcost:20us" },
      { "patchcost", "bad fault 'patchcost'" },
      { "patchcost:fast", "bad fault 'patchcost:fast'" },
      { "patchcost:20us:0.5", "bad fault 'patchcost:20us:0.5'" },
      { "patchcost:20ns", "bad fault 'patchcost:20ns'" },
      { "patchcost:20us@writes", "unknown option '@writes'" },
    }
    for _, c in ipairs(cases) do
      local rules, err = faults.parse(c[1])
      assert.is_nil(rules, c[1])
      assert.matches(c[2], err)
    end
    assert.is_nil((faults.new("503:0.1", 1.5, 0)))
  end)
end)

-- patchcost through the sandbox's request handler, on a simulated clock: requests run as
-- coroutines and a sleep yields until the clock reaches its wake-up time (no real waiting).
describe("sandbox patchcost", function()
  local USER = "urn:ietf:params:scim:schemas:core:2.0:User"
  local GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
  local PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
  local t, sb

  local function req(method, path, body)
    return { method = method, path = "/scim/v2" .. path, headers = { authorization = "Bearer tok" },
      body = body and cjson.encode(body) }
  end

  local function add_member(group_id, user_id)
    return req("PATCH", "/Groups/" .. group_id,
      { schemas = { PATCH }, Operations = { { op = "add", path = "members", value = { { value = user_id } } } } })
  end

  -- Runs the requests as if they all arrived at the current time; returns each one's status
  -- and the simulated time at which it was answered.
  local function concurrently(reqs)
    local tasks, out = {}, {}
    for i, r in ipairs(reqs) do
      tasks[i] = { co = coroutine.create(function() return sb:handle(r) end), wake = t }
    end
    while true do
      local next_i
      for i, task in pairs(tasks) do
        if not next_i or task.wake < tasks[next_i].wake then next_i = i end
      end
      if not next_i then return out end
      local task = tasks[next_i]
      t = math.max(t, task.wake)
      local ok, res = coroutine.resume(task.co)
      assert(ok, res)
      if coroutine.status(task.co) == "dead" then
        out[next_i] = { status = res.status, at = t }
        tasks[next_i] = nil
      else
        task.wake = t + res
      end
    end
  end

  local function near(want, got) assert.is_true(math.abs(want - got) < 1e-9, ("%g ~= %g"):format(want, got)) end

  before_each(function()
    t = 0
    sb = assert(sandbox.new({ token = "tok", faults = "patchcost:1ms", seed = 1,
      now = function() return t end, sleep = function(s) return coroutine.yield(s) end }))
  end)
  after_each(function() sb:close() end)

  it("serves the PATCHes of a group one after another, each costing 1 ms per member", function()
    local ids = {}
    for i = 1, 6 do
      local res = concurrently({ req("POST", "/Users", { schemas = { USER }, userName = "u" .. i }) })[1]
      assert.are.equal(201, res.status)
      near(0, res.at)
      ids[i] = sb.store:find_unique("Users", "u" .. i)
    end
    assert.are.equal(201, concurrently({ req("POST", "/Groups", { schemas = { GROUP }, displayName = "g",
      members = { { value = ids[1] }, { value = ids[2] }, { value = ids[3] } } }) })[1].status)
    local gid = sb.store:find_unique("Groups", "g")
    local other = concurrently({ req("POST", "/Groups", { schemas = { GROUP }, displayName = "h" }) })
    assert.are.equal(201, other[1].status)
    local hid = sb.store:find_unique("Groups", "h")

    -- Two PATCHes of g arrive together with a read, a user PATCH and a PATCH of the empty h:
    -- g's second waits for its first; nothing else is delayed.
    local out = concurrently({ add_member(gid, ids[4]), add_member(gid, ids[5]), req("GET", "/Groups/" .. gid),
      req("PATCH", "/Users/" .. ids[1], { schemas = { PATCH },
        Operations = { { op = "replace", path = "active", value = false } } }),
      add_member(hid, ids[6]) })
    assert.are.equal(204, out[1].status)
    near(0.003, out[1].at)
    assert.are.equal(204, out[2].status)
    near(0.006, out[2].at)
    assert.are.equal(200, out[3].status)
    near(0, out[3].at)
    assert.are.equal(200, out[4].status)
    near(0, out[4].at)
    assert.are.equal(204, out[5].status)
    near(0, out[5].at)

    -- Later, one PATCH of the 5-member group costs 5 ms.
    t = 1
    out = concurrently({ add_member(gid, ids[6]) })
    near(1.005, out[1].at)
    assert.are.equal(6, #sb.store:get("Groups", gid).members)
    near(0.011, sb:stats().patchcost_s)
    assert.are.equal(4, sb:stats().by_route["PATCH /Groups/{id}"])
  end)

  it("charges nothing for a PATCH answered by another fault", function()
    assert.are.equal(201, concurrently({ req("POST", "/Users", { schemas = { USER }, userName = "a" }) })[1].status)
    local uid = sb.store:find_unique("Users", "a")
    assert.are.equal(201, concurrently({ req("POST", "/Groups", { schemas = { GROUP }, displayName = "g",
      members = { { value = uid } } }) })[1].status)
    assert(sb:set_faults("patchcost:1ms,503:1@writes", 1))
    local out = concurrently({ add_member(sb.store:find_unique("Groups", "g"), uid) })
    assert.are.equal(503, out[1].status)
    near(0, out[1].at)
    near(0, sb:stats().patchcost_s)
  end)
end)
