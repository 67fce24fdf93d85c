-- bench/policy-bench.lua with a breaker that opens on a failure *rate* instead of 5 consecutive
-- failures: at 64 requests in flight and 10% random faults, runs of 5 failures in a row happen
-- (and each costs a 30 s cooldown, doubled on re-open) while the service is healthy overall.
--   POLICY=bench/policy-bench-rate-breaker.lua bench/onboard_bench.sh
return {
  extends = "default",
  rate_limit = { rps = 0 },
  bulkhead = { max_in_flight = 64 },
  breaker = { failures = 0, failure_rate = 0.5, window = 10, min_calls = 20 },
}
