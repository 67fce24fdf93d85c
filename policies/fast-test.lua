-- The default policy with tiny delays, for specs and quick local trials: same attempts and
-- classification, but retries wait milliseconds instead of seconds.
return {
  extends = "default",
  profiles = {
    aggressive = { base = 0.01, max_delay = 0.05, max_elapsed = 10 },
    balanced = { base = 0.01, max_delay = 0.05, max_elapsed = 10 },
    conservative = { base = 0.01, min_delay = 0, max_delay = 0.05, max_elapsed = 10 },
  },
  breaker = { cooldown = 0.5, max_cooldown = 2, half_open_max_wait = 2 },
  rate_limit = { rps = 1000, burst = 1000 },
  timeouts = { request = 5, connect = 2, step = 30 },
}
