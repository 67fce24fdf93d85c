-- The learned rate limit (the default policy's) against simulated servers, on a simulated clock
-- (scimrun.resilience.rate_sim, the engine of `scimrun policy simulate --server`): hidden token
-- buckets (utilization = accepted/s / their rate, and the share answered 429, over short and
-- long runs from a cold start), random 429s (throughput / what the same clients reach with
-- the limiter off; issue 10 asks for >= 1 - the 429 share) and a server without any limit (what
-- slow start costs, against the limiter off). Three seeds each; about 1 s.
--
--   ./build/scimrun -l bench/learned_limit_bench.lua
local sim = require "scimrun.resilience.rate_sim"
local policy = require "scimrun.resilience.policy"

local pol = policy.load("default")
local off = setmetatable({ rate_limit = { adaptive = false, rps = 0 } }, { __index = pol })
local SEEDS = tonumber(os.getenv("SEEDS") or 3) -- SEEDS=10 for steadier figures

-- { server, clients, latency (s), seconds }
local cases = {
  { "bucket:30/s:burst=30", 64, 0.005, 20 }, { "bucket:30/s:burst=30", 64, 0.005, 60 },
  { "bucket:30/s", 64, 0.05, 20 }, { "bucket:30/s", 64, 0.05, 60 },
  { "bucket:100/s:burst=10", 16, 0.02, 30 }, { "bucket:5/s:burst=5", 8, 0.05, 60 },
  { "none", 64, 0.05, 10 }, { "none", 64, 0.2, 30 },
  { "random429:0.03", 64, 0.005, 20 }, { "random429:0.02", 64, 0.01, 30 }, { "random429:0.1", 16, 0.02, 30 },
}

local function accepted(p, c, seed)
  local _, t = sim.run(p, { server = assert(sim.parse_server(c[1])), concurrency = c[2], latency = c[3],
                            seconds = c[4], every = c[4], seed = seed })
  return t
end

print(("%-24s %7s %8s %6s %10s %8s  %s"):format("server", "clients", "latency", "secs", "accepted/s", "429", "vs"))
for _, c in ipairs(cases) do
  local ok, limited, ref = 0, 0, 0
  for seed = 1, SEEDS do
    local t = accepted(pol, c, seed)
    ok, limited = ok + t.ok, limited + t.limited
    if not c[1]:match("^bucket") then ref = ref + accepted(off, c, seed).ok end
  end
  local rate = ok / (SEEDS * c[4])
  local vs
  local bucket_rate = tonumber(c[1]:match("^bucket:(%d+)"))
  if bucket_rate then
    vs = ("utilization %.2f"):format(rate / bucket_rate)
  else
    vs = ("%.2f of the limiter off"):format(ok / ref)
  end
  print(("%-24s %7d %7.0fms %6d %10.1f %7.1f%%  %s"):format(c[1], c[2], c[3] * 1000, c[4], rate,
    100 * limited / (ok + limited), vs))
end
