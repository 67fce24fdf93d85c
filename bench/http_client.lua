-- scimrun -l bench/http_client.lua URL N CONCURRENCY
-- Sends N GETs through scimrun's transport with CONCURRENCY tasks; prints
-- "<requests/s> <user CPU microseconds per request> <errors>".
local http = require "scimrun.http"
local url, n, c = arg[1], tonumber(arg[2] or 20000), tonumber(arg[3] or 64)

local function user_cpu()
  local f = io.open("/proc/self/stat")
  local stat = f:read("*a")
  f:close()
  local fields = {}
  for v in stat:match("%) (.*)$"):gmatch("%S+") do fields[#fields + 1] = v end
  return tonumber(fields[12]) / 100 -- utime in clock ticks (USER_HZ = 100)
end

local next_i, errors = 0, 0
local function worker()
  while next_i < n do
    next_i = next_i + 1
    local res = http.request { url = url }
    if not res or res.status ~= 200 then errors = errors + 1 end
  end
end

local cpu0, t0 = user_cpu(), scimrun.now()
local workers = {}
for i = 1, c do workers[i] = worker end
scimrun.all(workers)
local elapsed, cpu = scimrun.now() - t0, user_cpu() - cpu0
print(("%.0f %.1f %d"):format(n / elapsed, cpu * 1e6 / n, errors))
