-- The retry executor against the loopback test server (spec/fixtures/test_server.py): what the
-- server sees (request counts and arrival times) is the evidence, not the executor's own word.
local http = require "scimrun.http"
local cjson = require "cjson"
local policy = require "scimrun.resilience.policy"
local retry = require "scimrun.resilience.retry"
local ts = require "helpers.test_server"
local proc = require "helpers.proc"

local srv, dir

local function write_policy(name, text) return proc.write(dir .. "/" .. name .. ".lua", text) end

-- A temp policy extending fast-test with `body` (Lua table fields) merged in.
local function make_policy(name, body)
  return policy.load(write_policy(name, 'return { extends = "fast-test", ' .. (body or "") .. " }"))
end

local function script(name, responses)
  local res = assert(http.request { method = "POST", url = srv.url .. "/script/" .. name,
                                    body = cjson.encode({ responses = responses }) })
  assert.are.equal(204, res.status)
end

local function stats(name)
  local res = assert(http.request { url = srv.url .. "/stats/" .. name })
  return cjson.decode(res.body)
end

-- One attempt: GET /seq/NAME, turned into the error contract (as the SCIM client does).
local function attempt(name, seen)
  return function(n)
    if seen then seen[#seen + 1] = n end
    local res, err = http.request { url = srv.url .. "/seq/" .. name, timeout = 5 }
    if not res then return nil, { kind = err.kind, detail = err.message } end
    if res.status >= 400 then return nil, { status = res.status, headers = res.headers, detail = res.body } end
    return res
  end
end

local function quiet() return { emit = function() end } end

setup(function()
  srv = ts.start()
  dir = proc.tmpdir("retry-spec")
end)

teardown(function()
  if srv then srv.stop() end
  os.execute("rm -rf '" .. dir .. "'")
end)

describe("retry executor", function()
  it("retries a transient error and returns the success", function()
    script("t1", { { status = 503 }, { status = 502 }, { status = 200, body = { ok = true } } })
    local ex = retry.executor { policy = policy.load("fast-test"), seed = 1, log = quiet() }
    local res, err = ex:run("users.get", srv.url, attempt("t1"))
    assert.is_nil(err)
    assert.are.equal(200, res.status)
    assert.are.equal(3, stats("t1").count)
    local c = ex:counters()
    assert.are.same({ 3, 2, 2 }, { c.attempts, c.retries, c.by_class.transient })
  end)

  it("tries a permanent error once and explains it", function()
    script("p1", { { status = 400, body = { detail = "bad userName" } } })
    local ex = retry.executor { policy = policy.load("fast-test"), seed = 1, log = quiet() }
    local res, err = ex:run("users.create", srv.url, attempt("p1"))
    assert.is_nil(res)
    assert.are.same({ "permanent", "http-client-error", 1, "users.create" },
                    { err.class, err.rule, err.attempts, err.op })
    assert.matches("scimrun dlq replay", err.suggest)
    assert.are.equal(1, stats("p1").count)
  end)

  it("waits the Retry-After of a 429, and no less", function()
    script("ra", { { status = 429, headers = { ["Retry-After"] = "2" } }, { status = 200 } })
    local ex = retry.executor { policy = policy.load("fast-test"), seed = 1, log = quiet() }
    local res = ex:run("users.get", srv.url, attempt("ra"))
    assert.are.equal(200, res.status)
    local t = stats("ra").times
    assert.are.equal(2, #t)
    assert.is_true(t[2] - t[1] >= 2.0, "re-sent after " .. (t[2] - t[1]) .. "s")
    assert.is_true(t[2] - t[1] < 2.5, "re-sent after " .. (t[2] - t[1]) .. "s")
    assert.are.equal(1, ex:counters().paced) -- the server paced it: no attempt or budget spent
  end)

  it("honours a Retry-After given as an HTTP-date", function()
    local at = os.date("!%a, %d %b %Y %H:%M:%S GMT", math.floor(scimrun.wall()) + 2)
    script("rad", { { status = 503, headers = { ["Retry-After"] = at } }, { status = 200 } })
    local ex = retry.executor { policy = policy.load("fast-test"), seed = 1, log = quiet() }
    assert.are.equal(200, ex:run("users.get", srv.url, attempt("rad")).status)
    local t = stats("rad").times
    assert.is_true(t[2] - t[1] >= 1.0, "re-sent after " .. (t[2] - t[1]) .. "s")
  end)

  it("fails fast when Retry-After is longer than the time left", function()
    script("ralong", { { status = 429, headers = { ["Retry-After"] = "60" } }, { status = 200 } })
    local ex = retry.executor { policy = policy.load("fast-test"), seed = 1, log = quiet() }
    local t0 = scimrun.now()
    local res, err = ex:run("users.get", srv.url, attempt("ralong"))
    assert.is_nil(res)
    assert.is_true(scimrun.now() - t0 < 1)
    assert.are.equal("rate_limited", err.class)
    assert.are.equal(60, err.retry_after)
    assert.matches("server asked to wait 60.000s %(Retry%-After%), more than the", err.detail)
    assert.are.equal(1, stats("ralong").count)
  end)

  it("opens the breaker after 5 consecutive 503s; later calls wait for the half-open probe", function()
    -- "status.get" maps to "*" (no retries), so each run is one request
    local pol = make_policy("brk-wait", [[operations = { ["*"] = "none" },
      breaker = { failures = 5, cooldown = 1, half_open_max_wait = 10, when_open = "wait" }]])
    local saved = {}
    local ex = retry.executor { policy = pol, seed = 1, log = quiet(),
                                state = { load = function(k) return saved[k] end,
                                          save = function(k, v) saved[k] = v end } }
    script("bw", { { status = 503 }, { status = 503 }, { status = 503 }, { status = 503 }, { status = 503 },
                   { status = 200 } })
    for _ = 1, 5 do assert.is_nil((ex:run("status.get", srv.url, attempt("bw")))) end
    assert.are.equal("open", ex:breaker_state(srv.url))
    assert.are.equal("open", saved["breaker:" .. srv.url].state)
    -- three callers wait; one is the half-open probe, the others follow as soon as it succeeds
    local t0 = scimrun.now()
    local got = scimrun.all({
      function() return ex:run("status.get", srv.url, attempt("bw")).status end,
      function() return ex:run("status.get", srv.url, attempt("bw")).status end,
      function() return ex:run("status.get", srv.url, attempt("bw")).status end,
    })
    assert.are.same({ 200, 200, 200 }, got)
    assert.is_true(scimrun.now() - t0 < 2, "waiters took " .. (scimrun.now() - t0) .. "s")
    assert.are.equal("closed", ex:breaker_state(srv.url))
    local t = stats("bw").times
    assert.are.equal(8, #t)
    assert.is_true(t[6] - t[5] >= 0.95, "probe sent " .. (t[6] - t[5]) .. "s after the 5th failure")
    assert.are.equal(1, ex:counters().breaker_opened)
  end)

  it("fails fast with circuit_open while open when when_open = fail, then closes on a probe", function()
    local pol = make_policy("brk-fail", [[operations = { ["*"] = "none" },
      breaker = { failures = 5, cooldown = 0.5, when_open = "fail" }]])
    local ex = retry.executor { policy = pol, seed = 1, log = quiet() }
    script("bf", { { status = 503 }, { status = 503 }, { status = 503 }, { status = 503 }, { status = 503 },
                   { status = 200 } })
    for _ = 1, 5 do ex:run("status.get", srv.url, attempt("bf")) end
    local res, err = ex:run("status.get", srv.url, attempt("bf"))
    assert.is_nil(res)
    assert.are.equal("circuit_open", err.class)
    assert.are.equal(0, err.attempts)
    assert.are.equal(5, stats("bf").count) -- the refused call never reached the server
    scimrun.sleep(0.6)
    assert.are.equal(200, ex:run("status.get", srv.url, attempt("bf")).status)
    assert.are.equal("closed", ex:breaker_state(srv.url))
  end)

  it("does not count client errors against the target", function()
    local pol = make_policy("brk-4xx", [[breaker = { failures = 3, when_open = "fail" }]])
    local ex = retry.executor { policy = pol, seed = 1, log = quiet() }
    script("b4", { { status = 404 } })
    for _ = 1, 6 do ex:run("users.get", srv.url, attempt("b4")) end
    assert.are.equal("closed", ex:breaker_state(srv.url))
    assert.are.equal(6, stats("b4").count)
  end)

  it("holds the rate limit (20 rps within 10%) across concurrent callers", function()
    local pol = make_policy("rate", [[rate_limit = { rps = 20, burst = 1 }]])
    local ex = retry.executor { policy = pol, seed = 1, log = quiet() }
    script("rl", { { status = 200 } })
    local workers = {}
    for w = 1, 4 do
      workers[w] = function()
        for _ = 1, 15 do assert(ex:run("users.get", srv.url, attempt("rl"))) end
      end
    end
    scimrun.all(workers)
    local t = stats("rl").times
    assert.are.equal(60, #t)
    local rate = (#t - 1) / (t[#t] - t[1])
    assert.is_true(rate > 18 and rate < 22, ("measured %.2f rps"):format(rate))
  end)

  it("keeps at most max_in_flight requests in flight per target", function()
    local pol = make_policy("bulk", [[bulkhead = { max_in_flight = 2 }]])
    local ex = retry.executor { policy = pol, seed = 1, log = quiet() }
    script("bh", { { status = 200, delay = 0.3 } })
    local workers = {}
    for w = 1, 6 do workers[w] = function() assert(ex:run("users.get", srv.url, attempt("bh"))) end end
    scimrun.all(workers)
    local t = stats("bh").times
    table.sort(t)
    assert.are.equal(6, #t)
    -- arrivals come in pairs, each pair after the previous one finished
    assert.is_true(t[3] - t[1] >= 0.25, "3rd request arrived " .. (t[3] - t[1]) .. "s after the 1st")
    assert.is_true(t[5] - t[3] >= 0.25, "5th request arrived " .. (t[5] - t[3]) .. "s after the 3rd")
  end)

  it("stops a retry storm when the budget runs out", function()
    local pol = make_policy("budget", [[budget = { retry_ratio = 0, min_retries = 3 },
      breaker = { failures = 0, failure_rate = 1, min_calls = 1000 }]])
    local ex = retry.executor { policy = pol, seed = 1, log = quiet() }
    script("bud", { { status = 503 } })
    local last
    for _ = 1, 5 do last = select(2, ex:run("users.get", srv.url, attempt("bud"))) end
    assert.are.equal(8, stats("bud").count) -- 5 first attempts + 3 retries, not 5 x 5
    assert.is_true(last.budget_exhausted)
    assert.are.equal(1, last.attempts)
    assert.matches("retry budget", last.detail)
    assert.is_true(ex:counters().budget_exhausted >= 2)
  end)

  it("lets 429s with Retry-After through a spent budget and past the attempt limit, while 503s stop", function()
    local pol = make_policy("paced", [[budget = { retry_ratio = 0, min_retries = 0 },
      profiles = { balanced = { attempts = 2 } },
      breaker = { failures = 0, failure_rate = 1, min_calls = 1000 }]])
    local ex = retry.executor { policy = pol, seed = 1, log = quiet() }
    local paced = {}
    for i = 1, 4 do paced[i] = { status = 429, headers = { ["Retry-After"] = "0.1" } } end
    paced[5] = { status = 200 }
    script("paced", paced)
    local res = ex:run("users.get", srv.url, attempt("paced"))
    assert.are.equal(200, res.status) -- 5 attempts under a limit of 2 and a budget of 0
    assert.are.equal(5, stats("paced").count)
    local c = ex:counters()
    assert.are.same({ 4, 0, 0 }, { c.paced, c.budget_exhausted, c.budget_left })
    -- the same budget stops a 503 at once: the storm protection is intact
    script("storm", { { status = 503 } })
    local _, err = ex:run("users.get", srv.url, attempt("storm"))
    assert.is_true(err.budget_exhausted)
    assert.are.equal(1, stats("storm").count)
  end)

  it("lets an extending file's \"*\" override its parent's named operations", function()
    local parent = write_policy("parent", [[return { extends = "fast-test",
      operations = { ["users.create"] = "balanced", ["groups.*"] = "balanced" } }]])
    local child = policy.load(write_policy("child", ([[return { extends = %q,
      profiles = { quick = { attempts = 3, backoff = "constant", base = 0.01 } },
      operations = { ["*"] = "quick", ["groups.*"] = "none" } }]]):format(parent)))
    local ex = retry.executor { policy = child, seed = 1, log = quiet() }
    script("layer", { { status = 503 } })
    local _, err = ex:run("users.create", srv.url, attempt("layer"))
    assert.are.equal(3, err.attempts)
    assert.are.equal(3, stats("layer").count) -- not the parent's 5
    -- within one file the most specific pattern still wins
    script("layer2", { { status = 503 } })
    ex:run("groups.add_member", srv.url, attempt("layer2"))
    assert.are.equal(1, stats("layer2").count)
  end)

  it("follows an edit of attempts in the policy file (5, then 2)", function()
    local path = write_policy("edit", 'return { extends = "fast-test", profiles = { balanced = { attempts = 5 } } }')
    local ex = retry.executor { policy = policy.load(path), seed = 1, log = quiet() }
    script("ed5", { { status = 503 } })
    local _, err = ex:run("users.get", srv.url, attempt("ed5"))
    assert.are.equal(5, err.attempts)
    assert.are.equal(5, stats("ed5").count)
    write_policy("edit", 'return { extends = "fast-test", profiles = { balanced = { attempts = 2 } } }')
    ex:set_policy(policy.load(path))
    script("ed2", { { status = 503 } })
    _, err = ex:run("users.get", srv.url, attempt("ed2"))
    assert.are.equal(2, err.attempts)
    assert.are.equal(2, stats("ed2").count)
  end)

  it("adopts what before_retry finds instead of re-sending after an unknown outcome", function()
    script("adopt", { { status = 502 }, { status = 201 } })
    local ex = retry.executor { policy = policy.load("fast-test"), seed = 1, log = quiet() }
    local looked = 0
    local res = ex:run("users.create", srv.url, attempt("adopt"), {
      before_retry = function(err, n)
        looked = looked + 1
        assert.are.same({ 502, 1 }, { err.status, n })
        return { id = "found-by-filter" }
      end })
    assert.are.same({ id = "found-by-filter" }, res)
    assert.are.equal(1, looked)
    assert.are.equal(1, stats("adopt").count)
    -- a 429 was never processed: no lookup, just the retry
    script("noadopt", { { status = 429, headers = { ["Retry-After"] = "0" } }, { status = 201 } })
    looked = 0
    res = ex:run("users.create", srv.url, attempt("noadopt"), { before_retry = function() looked = looked + 1 end })
    assert.are.same({ 201, 0 }, { res.status, looked })
  end)

  it("resumes a checkpointed backoff: waits only the remainder and continues the attempt count", function()
    local saved = {}
    local state = { load = function(k) return saved[k] end, save = function(k, v) saved[k] = v end }
    -- a previous process made 2 attempts and was to retry 1 s after it died
    saved["deadline:user:ada"] = { until_wall = scimrun.wall() + 1, attempt = 2, started_wall = scimrun.wall() }
    script("res", { { status = 503 }, { status = 200 } })
    local ex = retry.executor { policy = policy.load("fast-test"), seed = 1, log = quiet(), state = state }
    local seen, t0 = {}, scimrun.now()
    local res = ex:run("users.get", srv.url, attempt("res", seen), { key = "user:ada" })
    assert.are.equal(200, res.status)
    assert.are.same({ 3, 4 }, seen)
    assert.is_true(scimrun.now() - t0 >= 0.95)
    assert.is_nil(saved["deadline:user:ada"]) -- cleared once done
    assert.is_table(saved.budget)
  end)

  it("reports every attempt, delay and state change to on_event", function()
    script("ev", { { status = 503 }, { status = 200 } })
    local types = {}
    local ex = retry.executor { policy = policy.load("fast-test"), seed = 1, log = quiet(),
                                on_event = function(ev) types[#types + 1] = ev.type end }
    ex:run("users.get", srv.url, attempt("ev"))
    -- "rate": the fixed rps of fast-test comes into force with the first call
    assert.are.same({ "rate", "attempt", "failure", "delay", "attempt", "success" }, types)
    assert.are.equal(1, #ex:last_trail())
  end)
end)
