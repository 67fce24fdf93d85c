-- The scimrun.resilience binding: rng, backoff, breaker, limiter and budget seen from Lua.
-- The arithmetic itself is tested in tests/c; this checks names, types, defaults and errors.
local R = require "scimrun.resilience"

describe("scimrun.resilience", function()
  describe("rng", function()
    it("repeats a sequence for the same seed", function()
      local a, b = R.rng(7), R.rng(7)
      for _ = 1, 20 do
        local x = a:next()
        assert.are.equal(x, b:next())
        assert.is_true(x >= 0 and x < 1)
      end
      assert.are_not.equal(R.rng(7):next(), R.rng(8):next())
    end)
  end)

  describe("backoff_delay", function()
    it("follows the exponential schedule with defaults and caps at max_delay", function()
      local got = {}
      for retry = 1, 7 do got[retry] = R.backoff_delay({}, retry, 0) end
      assert.are.same({ 1, 2, 4, 8, 16, 30, 30 }, got)
      assert.are.equal(5, R.backoff_delay({ backoff = "constant", base = 5 }, 9, 0))
      assert.are.equal(6, R.backoff_delay({ backoff = "linear", base = 2 }, 3, 0))
    end)

    it("jitters within bounds, reproducibly for a seeded rng", function()
      local p = { base = 1, multiplier = 2, max_delay = 30, jitter = "full" }
      local r1, r2 = R.rng(99), R.rng(99)
      for _ = 1, 200 do
        local d = R.backoff_delay(p, 4, 0, r1)
        assert.is_true(d >= 0 and d <= 8)
        assert.are.equal(d, R.backoff_delay(p, 4, 0, r2))
      end
      local prev = 0
      for retry = 1, 50 do
        prev = R.backoff_delay({ jitter = "decorrelated", max_delay = 10 }, retry, prev, r1)
        assert.is_true(prev >= 1 and prev <= 10)
      end
    end)

    it("ignores keys it does not use, so a retry profile can be passed as is", function()
      assert.are.equal(2, R.backoff_delay({ attempts = 5, max_elapsed = 300 }, 2, 0))
    end)

    it("raises a clear error on a bad jitter or backoff name or value", function()
      assert.has_error(function() R.backoff_delay({ jitter = "fulll" }, 1, 0) end,
        "backoff_delay: unknown jitter 'fulll' (use none, full, equal or decorrelated)")
      assert.has_error(function() R.backoff_delay({ backoff = "fibonacci" }, 1, 0) end,
        "backoff_delay: unknown backoff 'fibonacci' (use constant, linear or exponential)")
      local ok, err = pcall(R.backoff_delay, { min_delay = 40 }, 1, 0)
      assert.is_false(ok)
      assert.matches("max_delay must be", err)
      ok, err = pcall(R.backoff_delay, { base = "1" }, 1, 0)
      assert.is_false(ok)
      assert.matches("'base' must be a number, got string", err)
      assert.has_error(function() R.backoff_delay({}, 0, 0) end)
    end)
  end)

  describe("breaker", function()
    it("opens, reports the wait, probes and closes, naming each change", function()
      local br = R.breaker { failures = 2, cooldown = 10 }
      assert.are.equal("closed", br:state())
      assert.is_nil(br:record(0, false))
      assert.are.equal("open", br:record(0, false))
      local ok, wait = br:allow(4)
      assert.is_false(ok)
      assert.are.equal(6, wait)
      local ok2, wait2, changed = br:allow(10)
      assert.is_true(ok2)
      assert.are.equal(0, wait2)
      assert.are.equal("half_open", changed)
      assert.is_false((br:allow(10)))
      assert.are.equal("closed", br:record(11, true))
    end)

    it("gives a released probe permit to the next caller", function()
      local br = R.breaker { failures = 1, cooldown = 1, half_open_probes = 2 }
      br:record(0, false)
      assert.is_true((br:allow(1)))
      assert.is_true((br:allow(1)))
      assert.is_false((br:allow(1)))
      br:release(1)
      assert.is_true((br:allow(1)))
    end)

    it("trips on a failure rate alone when only failure_rate is set", function()
      local br = R.breaker { failure_rate = 0.5, window_calls = 4, min_calls = 4 }
      for _ = 1, 6 do br:record(0, false) end -- would trip at 5 with the default `failures`
      assert.are.equal("open", br:state())
      local br2 = R.breaker { failure_rate = 0.5, window_calls = 10, min_calls = 8 }
      for _ = 1, 7 do br2:record(0, false) end
      assert.are.equal("closed", br2:state()) -- min_calls not reached, no consecutive trip
    end)

    it("survives a restart through snapshot and restore", function()
      local br = R.breaker { failures = 1, cooldown = 30 }
      br:record(100, false)
      local snap = br:snapshot(110)
      assert.are.same({ state = "open", opened_ago = 10, consecutive_failures = 0,
        consecutive_successes = 0, open_count = 1 }, snap)
      local again = R.breaker { failures = 1, cooldown = 30 }
      again:restore(snap, 5)
      assert.are.equal("open", again:state())
      local ok, wait = again:allow(5)
      assert.is_false(ok)
      assert.are.equal(20, wait)
      assert.has_error(function() again:restore({ state = "ajar" }, 5) end,
        "breaker:restore: unknown state 'ajar' (use closed, open or half_open)")
    end)

    it("rejects a config that cannot work", function()
      local ok, err = pcall(R.breaker, { failures = 0 })
      assert.is_false(ok)
      assert.matches("breaker: set failures", err)
      ok, err = pcall(R.breaker, { cooldown = "30s" })
      assert.is_false(ok)
      assert.matches("'cooldown' must be a number, got string", err)
    end)
  end)

  describe("limiter", function()
    it("hands out the burst, then queues reservations at the rate", function()
      local lim = R.limiter { rps = 10, burst = 2 }
      assert.are.equal(0, lim:reserve(0))
      assert.are.equal(0, lim:reserve(0))
      assert.is_near(0.1, lim:reserve(0), 1e-9)
      assert.is_near(0.2, lim:reserve(0), 1e-9)
    end)

    it("takes a new rate from now on", function()
      local lim = R.limiter { rps = 10 }
      assert.are.equal(10, lim:rate())
      lim:set_rate(0, 2, 1)
      assert.are.equal(2, lim:rate())
      assert.are.equal(0, lim:reserve(0))
      assert.is_near(0.5, lim:reserve(0), 1e-9)
      lim:set_rate(0, 0)
      assert.are.equal(0, lim:reserve(0)) -- unlimited again
      assert.has_error(function() lim:set_rate(0, 1, 0.5) end)
    end)
  end)

  describe("rate_adapt", function()
    it("starts unlimited, or at its ceiling, and rejects bad settings", function()
      assert.are.equal(0, R.rate_adapt {}:limit(0))
      assert.are.equal(8, R.rate_adapt { ceiling = 8 }:limit(0))
      assert.has_error(function() R.rate_adapt { target_share = 0.7 } end)
      assert.has_error(function() R.rate_adapt { window = 0 } end)
    end)

    it("learns a limit from 429s over the target share", function()
      local ra = R.rate_adapt { min_samples = 10 }
      local t = 0
      -- 100 requests a second; the server accepts 60 of them
      for _ = 1, 4 do
        local ids = {}
        for i = 1, 100 do ids[i] = ra:sent(t + i / 100 - 0.005) end
        for i = 1, 100 do ra:answered(ids[i], t + 1, i > 60) end
        t = t + 1
      end
      local limit = ra:limit(t)
      assert.is_true(limit > 0 and limit < 100, "limit " .. limit)
      assert.is_true(ra:state().cuts >= 1)
    end)

    it("follows a server's RateLimit headers until the reset", function()
      local ra = R.rate_adapt {}
      ra:server_rate(0, 10, 5)
      assert.are.equal(2, ra:limit(1))
      ra:server_rate(10, 0, 2)
      assert.is_near(-1, ra:limit(11), 1e-9) -- nothing left: wait a second more
      assert.are.equal(0, ra:limit(12))
    end)

    it("is unlimited without a rate", function()
      local lim = R.limiter {}
      for _ = 1, 100 do assert.are.equal(0, lim:reserve(0)) end
      assert.are.equal(0, lim:rate())
    end)
  end)

  describe("budget", function()
    it("caps retries at min_retries + ratio * first attempts, and checkpoints", function()
      local bud = R.budget { ratio = 0.5, min_retries = 1 }
      for _ = 1, 4 do bud:first() end
      assert.are.equal(3, bud:remaining())
      local granted = 0
      while bud:try_retry() do granted = granted + 1 end
      assert.are.equal(3, granted)
      local snap = bud:snapshot()
      assert.are.same({ first_attempts = 4, retries = 3 }, snap)
      local again = R.budget { ratio = 0.5, min_retries = 1 }
      again:restore(snap)
      assert.is_false(again:try_retry())
      again:first()
      again:first()
      assert.is_true(again:try_retry())
    end)

    it("defaults to ratio 0.2 and 10 minimum retries", function()
      local bud = R.budget {}
      assert.are.equal(10, bud:remaining())
      for _ = 1, 10 do bud:first() end
      assert.are.equal(12, bud:remaining())
    end)
  end)
end)
