-- The policy of the README's demo (scripts/demo.sh): the default, with short delays and a short
-- breaker cooldown so a run against the misbehaving sandbox shows retries, the breaker opening
-- and closing, and still finishes in seconds. Not meant for a real provider.
return {
  extends = "default",
  profiles = {
    balanced = { attempts = 6, backoff = "exponential", base = 0.1, multiplier = 2,
                 min_delay = 0, max_delay = 2, jitter = "full", max_elapsed = 60 },
  },
  breaker = { failures = 5, cooldown = 1, cooldown_multiplier = 1.5, max_cooldown = 4, half_open_probes = 1 },
  rate_limit = { rps = 400, burst = 100, adaptive = true },
  budget = { retry_ratio = 0.5, min_retries = 50 },
}
