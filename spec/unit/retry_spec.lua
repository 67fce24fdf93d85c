-- scimrun.resilience.retry's pure parts: the retry decision and the server-requested delay.
local R = require "scimrun.resilience"
local policy = require "scimrun.resilience.policy"
local retry = require "scimrun.resilience.retry"

describe("retry.parse_http_date", function()
  it("reads the three HTTP-date forms", function()
    local want = 784111777 -- Sun, 06 Nov 1994 08:49:37 GMT
    assert.are.equal(want, retry.parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"))
    assert.are.equal(want, retry.parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"))
    assert.are.equal(want, retry.parse_http_date("Sun Nov  6 08:49:37 1994"))
    assert.is_nil(retry.parse_http_date("tomorrow"))
  end)

  it("agrees with os.date for today's date", function()
    local now = os.time()
    assert.are.equal(now, retry.parse_http_date(os.date("!%a, %d %b %Y %H:%M:%S GMT", now)))
  end)
end)

describe("retry.server_delay", function()
  local wall = 1700000000
  it("takes Retry-After seconds or date, RateLimit-Reset delta and X-RateLimit-Reset epoch", function()
    assert.are.same({ 7, "Retry-After" }, { retry.server_delay({ headers = { ["retry-after"] = "7" } }, wall) })
    local date = os.date("!%a, %d %b %Y %H:%M:%S GMT", wall + 30)
    assert.are.equal(30, (retry.server_delay({ headers = { ["Retry-After"] = date } }, wall)))
    assert.are.equal(12, (retry.server_delay({ headers = { ["ratelimit-reset"] = "12" } }, wall, "rate_limited")))
    assert.are.equal(40, (retry.server_delay({ headers = { ["x-ratelimit-reset"] = tostring(wall + 40) } }, wall,
                                             "rate_limited")))
    -- reset headers describe the rate window: they do not delay a 503
    assert.is_nil(retry.server_delay({ headers = { ["x-ratelimit-reset"] = "12" } }, wall, "transient"))
    assert.are.equal(3, (retry.server_delay({ retry_after = 3 }, wall)))
  end)
end)

describe("retry.decide", function()
  local pol = policy.load("default")
  local function decide(over)
    local d = { profile = pol.profiles.balanced, class = "transient", err = {}, attempt = 1, time_left = 300,
                prev_delay = 0, rng = R.rng(1), wall = 1700000000 }
    for k, v in pairs(over or {}) do d[k] = v end
    return retry.decide(d)
  end

  it("never retries permanent, auth, conflict", function()
    for _, class in ipairs({ "permanent", "auth", "conflict", "circuit_open" }) do
      local d = decide({ class = class })
      assert.is_false(d.retry)
      assert.are.equal("class", d.reason)
    end
  end)

  it("retries within the profile's attempts with its backoff", function()
    local d = decide({ attempt = 2 })
    assert.is_true(d.retry)
    assert.is_true(d.delay >= 0 and d.delay <= 2, tostring(d.delay))
    assert.matches("exponential backoff, retry 2, full jitter", d.why)
    local last = decide({ attempt = 5 })
    assert.are.same({ false, "attempts" }, { last.retry, last.reason })
  end)

  it("is reproducible for the same seed", function()
    local a, b = {}, {}
    for n = 1, 4 do
      a[n] = decide({ attempt = n, rng = R.rng(42) }).delay
      b[n] = decide({ attempt = n, rng = R.rng(42) }).delay
    end
    assert.are.same(a, b)
  end)

  it("waits at least the server's Retry-After, even beyond max_delay", function()
    local d = decide({ class = "transient", err = { status = 503, headers = { ["Retry-After"] = "45" } } })
    assert.are.same({ true, 45 }, { d.retry, d.delay })
    assert.matches("server asked to wait 45.000s", d.why)
  end)

  it("lets a 429 with a server delay pace the retry without spending an attempt or the budget", function()
    local bud = R.budget { ratio = 0, min_retries = 0 }
    local ra = { headers = { ["Retry-After"] = "2" } }
    local d = decide({ class = "rate_limited", err = ra, budget = bud, attempt = 5 })
    assert.are.same({ true, 2, true }, { d.retry, d.delay, d.paced })
    assert.matches("paced by the server: wait 2.000s", d.why)
    -- a 503 with the same header spends both
    d = decide({ class = "transient", err = ra, budget = bud, attempt = 1 })
    assert.are.same({ false, "budget" }, { d.retry, d.reason })
    -- a 429 without a delay is an ordinary retry
    d = decide({ class = "rate_limited", err = {}, budget = bud, attempt = 1 })
    assert.are.same({ false, "budget" }, { d.retry, d.reason })
    -- the deadline still bounds it, and so does the count of paced retries
    d = decide({ class = "rate_limited", err = ra, time_left = 1, attempt = 1 })
    assert.are.same({ false, "retry_after" }, { d.retry, d.reason })
    d = decide({ class = "rate_limited", err = ra, paced = 100, attempt = 5 })
    assert.are.same({ false, "attempts" }, { d.retry, d.reason })
  end)

  it("reads a server's remaining quota from its RateLimit headers, in each dialect", function()
    local wall = 1700000000
    assert.are.same({ 10, 30 }, { retry.server_quota({ ["ratelimit-remaining"] = "10", ["ratelimit-reset"] = "30" },
                                                     wall) })
    assert.are.same({ 4999, 60 }, { retry.server_quota({ ["x-ratelimit-remaining"] = "4999",
                                                         ["x-ratelimit-reset"] = tostring(wall + 60) }, wall) })
    assert.are.same({ 7, 60 }, { retry.server_quota({ ["x-ratelimit-remaining"] = "7",
                                                      ["x-ratelimit-reset"] = tostring((wall + 60) * 1000) }, wall) })
    assert.are.same({ 50, 30 }, { retry.server_quota({ ratelimit = '"default";r=50;t=30' }, wall) })
    assert.is_nil(retry.server_quota({ ["ratelimit-remaining"] = "x", ["ratelimit-reset"] = "30" }, wall))
    assert.is_nil(retry.server_quota({ ["ratelimit-remaining"] = "1", ["ratelimit-reset"] = "9999999" }, wall))
    assert.is_nil(retry.server_quota({}, wall))
  end)

  it("fails fast when the server's wait or the next delay passes the deadline", function()
    local d = decide({ class = "rate_limited", err = { headers = { ["Retry-After"] = "45" } }, time_left = 10 })
    assert.are.same({ false, "retry_after" }, { d.retry, d.reason })
    d = decide({ profile = { attempts = 5, backoff = "constant", base = 20, multiplier = 2, min_delay = 0,
                             max_delay = 30, jitter = "none", max_elapsed = 300 }, time_left = 10 })
    assert.are.same({ false, "deadline" }, { d.retry, d.reason })
  end)

  it("consults the budget last and reports its exhaustion", function()
    local bud = R.budget { ratio = 0, min_retries = 1 }
    assert.is_true(decide({ budget = bud }).retry)
    local d = decide({ budget = bud })
    assert.are.same({ false, "budget", true }, { d.retry, d.reason, d.budget_exhausted })
    -- a permanent error does not spend budget
    local fresh = R.budget { ratio = 0, min_retries = 1 }
    decide({ class = "permanent", budget = fresh })
    assert.are.equal(1, fresh:remaining())
  end)

  it("uses a profile's delay function, falling back to backoff when it misbehaves", function()
    local p = {}
    for k, v in pairs(pol.profiles.balanced) do p[k] = v end
    p.delay = function(n, prev, err) return n * 0.5 + (err.extra or 0) + prev end
    assert.are.equal(1.25, decide({ profile = p, attempt = 2, prev_delay = 0.25, err = { extra = 0 } }).delay)
    p.delay = function() return "soon" end
    local d = decide({ profile = p })
    assert.is_true(d.retry)
    assert.matches("delay function failed", d.why)
  end)
end)
