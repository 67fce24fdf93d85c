-- The learned rate limit (the default policy's) across 32 hidden token buckets, on the
-- simulated clock of `scimrun policy simulate` (scimrun.resilience.rate_sim): rates 10, 30, 100
-- and 300/s, a burst of a tenth of a second's rate or of a whole second's, 8 or 64 clients,
-- 5 or 50 ms latency; five seeds each. Prints the mean and worst utilization (accepted/s /
-- the bucket's rate) and the mean share answered 429; V=1 prints every bucket. A few cases
-- are bound by the clients, not the bucket (8 clients at 50 ms reach 160/s: 0.53 of 300/s).
--
--   SECS=20 ./build/scimrun -l bench/learned_limit_sweep.lua     # SECS: simulated seconds (30)
local sim = require "scimrun.resilience.rate_sim"
local policy = require "scimrun.resilience.policy"

local pol = policy.load("default")
local secs = tonumber(os.getenv("SECS") or 30)
local SEEDS = 5
local worst_u, sum_u, sum_s, n = math.huge, 0, 0, 0
for _, rate in ipairs { 10, 30, 100, 300 } do
  for _, burst_s in ipairs { 0.1, 1 } do
    for _, clients in ipairs { 8, 64 } do
      for _, latency in ipairs { 0.005, 0.05 } do
        local burst = math.max(1, rate * burst_s)
        local ok, limited, min_u = 0, 0, math.huge
        for seed = 1, SEEDS do
          local spec = ("bucket:%d/s:burst=%g"):format(rate, burst)
          local _, t = sim.run(pol, { server = assert(sim.parse_server(spec)), concurrency = clients,
                                      latency = latency, seconds = secs, every = secs, seed = seed })
          ok, limited = ok + t.ok, limited + t.limited
          min_u = math.min(min_u, t.ok / secs / rate)
        end
        local u, share = ok / SEEDS / secs / rate, limited / (ok + limited)
        if os.getenv("V") then
          print(("bucket %3d/s burst %3g, %2d clients, %2.0f ms: utilization %.2f (worst seed %.2f), %4.1f%% 429")
            :format(rate, burst, clients, latency * 1000, u, min_u, share * 100))
        end
        worst_u, sum_u, sum_s, n = math.min(worst_u, min_u), sum_u + u, sum_s + share, n + 1
      end
    end
  end
end
print(("%d s: mean utilization %.3f, worst %.2f, mean 429 share %.1f%%"):format(secs, sum_u / n, worst_u,
  sum_s / n * 100))
