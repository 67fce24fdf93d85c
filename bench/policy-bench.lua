-- The policy of bench/onboard_bench.sh: the default policy (same retry profiles, classification,
-- breaker and retry budget as an operator gets out of the box), with no client-side rate limit
-- (the local sandbox has no quota to respect) and room for 64 requests in flight, so
-- `--param concurrency=64` is not throttled by the client itself.
return {
  extends = "default",
  rate_limit = { rps = 0 },
  bulkhead = { max_in_flight = 64 },
}
