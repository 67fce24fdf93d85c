-- Fault injection for the sandbox: a spec string parsed into rules, and an injector that
-- decides, per request, what goes wrong.
--   faults.parse(spec) -> rules | nil, "message naming the bad token"
--   faults.new(spec, seed, now) -> injector | nil, message
--   injector:decide(method, now) -> decision { index, latency (s), fault = nil | {kind, ...},
--                                              patch_cost = nil | seconds per group member }
-- Spec: comma-separated tokens, each `kind:args` plus `@options`:
--   503:0.05  429:0.03@retry-after=2  409:0.01@scim-type=uniqueness   (any status 400-599)
--   latency:20ms  latency:20ms:0.1  latency:10-50ms    added delay (always, or a fraction)
--   hang:0.005[@for=120s]   reset:0.01   lost:0.01
--   outage:5s@after=10s     ratelimit:600/min  ratelimit:10/s
--   patchcost:20us          every PATCH of a group that is served (not answered by another
--                           fault) first costs 20 us x the group's member count at arrival, and
--                           the PATCHes of one group are served one after another (as behind a
--                           row lock, or a server that re-reads and re-validates the whole group
--                           on each change), so concurrency does not hide the cost: one member
--                           per PATCH makes onboarding quadratic, as on many real providers.
--                           Other requests are not delayed. Units: us, ms, s.
--   @writes on any token limits it to POST/PUT/PATCH/DELETE.
-- Probabilistic choices come from a counter-based generator (murmur3's finaliser over seed,
-- request index and rule number, in 32-bit `bit` arithmetic): the same spec and seed give the
-- same faults for the same request index, whatever the timing. Outage and rate limit are
-- clocked by time, not by index.
local bit = require "bit"

local M = {}

-- What `scimrun sandbox --help` prints about --faults (keep in step with the comment above).
M.HELP = [[
--faults SPEC: comma-separated faults, each KIND:ARGS[@OPTION...]; --seed N picks the draws
(the same spec and seed fault the same request numbers, whatever the timing).
  503:0.05  429:0.03@retry-after=2  409:0.01@scim-type=uniqueness
                     answer that status (any 400-599) to a fraction of requests
                     (a 429 carries Retry-After: 1 unless @retry-after is given)
  latency:20ms  latency:20ms:0.1  latency:10-50ms
                     added delay on every request, a fraction of them, or a random range
  hang:0.005[@for=120s]   never answer a fraction of requests (then close the connection)
  reset:0.01         close the connection instead of answering
  lost:0.01          apply the change, then close the connection instead of answering
  outage:5s@after=10s       answer 503 to everything for 5 s, 10 s after start
  ratelimit:600/min  ratelimit:10/s
                     a token bucket; requests over it get 429 with Retry-After
  patchcost:20us     each PATCH of a group costs 20 us x the group's member count, and the
                     PATCHes of one group are served one after another (as on servers that
                     re-validate the whole group on each change); other requests unaffected
  @writes on any fault limits it to POST, PUT, PATCH and DELETE.
  Durations take a unit: us, ms, s (or min). Example:
    --faults "503:0.04,429:0.02@retry-after=1,reset:0.02,lost:0.02,patchcost:50us"]]

local band, bxor, rshift, tobit = bit.band, bit.bxor, bit.rshift, bit.tobit

-- 32-bit multiply without losing bits to double precision.
local function mul32(a, b)
  local alo, ahi = band(a, 0xffff), rshift(a, 16)
  local blo, bhi = band(b, 0xffff), rshift(b, 16)
  local hi = band(ahi * blo + alo * bhi, 0xffff)
  return tobit(hi * 65536 + alo * blo)
end

local function fmix32(h)
  h = bxor(h, rshift(h, 16))
  h = mul32(h, 0x85ebca6b)
  h = bxor(h, rshift(h, 13))
  h = mul32(h, 0xc2b2ae35)
  return bxor(h, rshift(h, 16))
end

-- Uniform in [0, 1) for (seed, request index, stream).
function M.uniform(seed, index, stream)
  local h = fmix32(bxor(tobit(seed), fmix32(tobit(index) + 0x632be5ab)))
  h = fmix32(bxor(h, mul32(stream + 1, 0x9e3779b9)))
  return (h % 4294967296) / 4294967296
end

local WRITES = { POST = true, PUT = true, PATCH = true, DELETE = true }

local function duration(text, default_unit)
  local n, unit = tostring(text):match("^(%d+%.?%d*)(%a*)$")
  n = tonumber(n)
  if not n then return nil end
  unit = unit ~= "" and unit or default_unit
  if unit == "us" then return n / 1e6 elseif unit == "ms" then return n / 1000 elseif unit == "s" then return n
  elseif unit == "m" or unit == "min" then return n * 60 end
  return nil
end

local function probability(text)
  local p = tonumber(text)
  if p and p >= 0 and p <= 1 then return p end
  local pct = tostring(text):match("^(%d+%.?%d*)%%$")
  if pct and tonumber(pct) <= 100 then return tonumber(pct) / 100 end
  return nil
end

local KNOWN_OPTS = {
  status = { ["retry-after"] = true, ["scim-type"] = true, writes = true },
  latency = { writes = true }, hang = { ["for"] = true, writes = true },
  reset = { writes = true }, lost = { writes = true },
  outage = { after = true, writes = true, ["retry-after"] = true }, ratelimit = { writes = true },
  patchcost = {},
}

local function parse_token(tok)
  local body, opt_text = tok:match("^([^@]*)(.*)$")
  local parts = {}
  for p in (body .. ":"):gmatch("([^:]*):") do parts[#parts + 1] = p end
  local kind = parts[1]:lower()
  local rule = { token = tok, writes_only = false }
  local function bad(why) return nil, ("bad fault '%s': %s"):format(tok, why) end
  local status = tonumber(kind)
  if status then
    if status % 1 ~= 0 or status < 400 or status > 599 then return bad("status must be 400-599") end
    rule.kind, rule.status = "status", status
    rule.p = probability(parts[2])
    if not rule.p or parts[3] then return bad("expected STATUS:PROBABILITY, e.g. 503:0.05") end
  elseif kind == "latency" then
    rule.kind = "latency"
    local lo, hi = (parts[2] or ""):match("^(%d+%.?%d*)%-(%d+%.?%d*%a*)$")
    if lo then
      local unit = hi:match("%a+$") or ""
      rule.min, rule.max = duration(lo .. unit), duration(hi)
    else
      rule.min = duration(parts[2] or "")
      rule.max = rule.min
    end
    if not rule.min or not rule.max or rule.max < rule.min then
      return bad("expected latency:DURATION[:PROBABILITY] with a unit, e.g. latency:20ms or latency:10-50ms")
    end
    rule.p = parts[3] and probability(parts[3]) or (parts[3] == nil and 1)
    if not rule.p or parts[4] then return bad("the fraction must be a probability between 0 and 1") end
  elseif kind == "hang" or kind == "reset" or kind == "lost" then
    rule.kind = kind
    rule.p = probability(parts[2])
    if not rule.p or parts[3] then return bad(("expected %s:PROBABILITY, e.g. %s:0.01"):format(kind, kind)) end
    rule.hang_for = 120
  elseif kind == "outage" then
    rule.kind = "outage"
    rule.duration = duration(parts[2] or "", nil)
    if not rule.duration or parts[3] then
      return bad("expected outage:DURATION@after=DURATION, e.g. outage:5s@after=10s")
    end
    rule.after = 0
  elseif kind == "ratelimit" then
    rule.kind = "ratelimit"
    local n, per = (parts[2] or ""):match("^(%d+%.?%d*)/(%a+)$")
    local secs = per and ({ s = 1, sec = 1, second = 1, m = 60, min = 60, minute = 60 })[per]
    if not n or not secs or tonumber(n) <= 0 or parts[3] then
      return bad("expected ratelimit:N/s or ratelimit:N/min, e.g. ratelimit:600/min")
    end
    rule.rate = tonumber(n) / secs
    rule.burst = math.max(1, math.min(tonumber(n), rule.rate))
  elseif kind == "patchcost" then
    rule.kind = "patchcost"
    rule.per_member = duration(parts[2] or "")
    if not rule.per_member or parts[3] then
      return bad("expected patchcost:DURATION per group member with a unit, e.g. patchcost:20us")
    end
  else
    return bad("unknown kind '" .. parts[1]
      .. "' (use a status code, latency, hang, reset, lost, outage, ratelimit or patchcost)")
  end
  local allowed = KNOWN_OPTS[rule.kind]
  for opt in opt_text:gmatch("@([^@]*)") do
    local k, v = opt:match("^([%w%-]+)=(.*)$")
    k = (k or opt):lower()
    if not allowed[k] then return bad(("unknown option '@%s'"):format(opt)) end
    if k == "writes" then
      if v then return bad("@writes takes no value") end
      rule.writes_only = true
    elseif k == "retry-after" then
      rule.retry_after = duration(v or "", "s")
      if not rule.retry_after then return bad("@retry-after needs seconds, e.g. @retry-after=2") end
    elseif k == "scim-type" then
      if not v or not v:match("^%a+$") then return bad("@scim-type needs a word, e.g. @scim-type=uniqueness") end
      rule.scim_type = v
    elseif k == "for" then
      rule.hang_for = duration(v or "", "s")
      if not rule.hang_for then return bad("@for needs a duration, e.g. @for=60s") end
    elseif k == "after" then
      rule.after = duration(v or "", "s")
      if not rule.after then return bad("@after needs a duration, e.g. @after=10s") end
    end
  end
  if rule.kind == "status" and rule.status == 429 and not rule.retry_after then rule.retry_after = 1 end
  return rule
end

function M.parse(spec)
  if spec == nil or spec == "" or spec == "none" then return {} end
  if type(spec) ~= "string" then return nil, "the fault spec must be a string" end
  local rules, total = {}, 0
  for tok in (spec .. ","):gmatch("([^,]*),") do
    tok = tok:match("^%s*(.-)%s*$")
    if tok == "" then return nil, ("bad fault spec '%s': empty entry between commas"):format(spec) end
    local rule, err = parse_token(tok)
    if not rule then return nil, err end
    rule.stream = #rules
    rules[#rules + 1] = rule
    if rule.kind ~= "latency" and rule.p then total = total + rule.p end
  end
  if total > 1 + 1e-9 then
    return nil, ("bad fault spec '%s': the probabilities add up to %g, more than 1"):format(spec, total)
  end
  return rules
end

local Injector = {}
Injector.__index = Injector

function M.new(spec, seed, now)
  local rules, err = M.parse(spec)
  if not rules then return nil, err end
  seed = tonumber(seed) or 1
  if seed % 1 ~= 0 then return nil, "the seed must be an integer" end
  local self = setmetatable({ spec = spec or "", seed = seed, rules = rules, index = 0,
    started = now or 0 }, Injector)
  for _, r in ipairs(rules) do
    if r.kind == "ratelimit" then r.tokens, r.refilled = r.burst, self.started end
    if r.kind == "reset" or r.kind == "lost" or r.kind == "hang" then self.drops = true end
  end
  return self
end

-- The decision for the next request. `now` is a monotonic clock in seconds.
function Injector:decide(method, now)
  self.index = self.index + 1
  local idx = self.index
  local is_write = WRITES[method] == true
  local d = { index = idx, latency = 0 }
  for _, r in ipairs(self.rules) do
    local applies = is_write or not r.writes_only
    if r.kind == "latency" then
      local u = M.uniform(self.seed, idx, r.stream)
      if applies and u < r.p then
        local span = r.max - r.min
        d.latency = d.latency + r.min + span * M.uniform(self.seed, idx, r.stream + 1000)
      end
    elseif r.kind == "outage" and applies and not d.fault then
      local t = now - self.started
      if t >= r.after and t < r.after + r.duration then
        local left = math.ceil(r.after + r.duration - t)
        d.fault = { kind = "outage", status = 503, retry_after = r.retry_after or left }
      end
    elseif r.kind == "patchcost" then
      if method == "PATCH" then d.patch_cost = (d.patch_cost or 0) + r.per_member end
    elseif r.kind == "ratelimit" and applies and not d.fault then
      r.tokens = math.min(r.burst, r.tokens + (now - r.refilled) * r.rate)
      r.refilled = now
      if r.tokens >= 1 then
        r.tokens = r.tokens - 1
      else
        d.fault = { kind = "ratelimit", status = 429, retry_after = math.max(1, math.ceil((1 - r.tokens) / r.rate)) }
      end
    end
  end
  if d.fault then return d end
  -- One draw places the request in the cumulative probability band of at most one rule.
  local u, acc = M.uniform(self.seed, idx, -1), 0
  for _, r in ipairs(self.rules) do
    if r.kind ~= "latency" and r.p then
      local lo = acc
      acc = acc + r.p
      if u >= lo and u < acc then
        if is_write or not r.writes_only then
          d.fault = { kind = r.kind == "status" and tostring(r.status) or r.kind, status = r.status,
            retry_after = r.retry_after, scim_type = r.scim_type, hang_for = r.hang_for }
        end
        break
      end
    end
  end
  return d
end

return M
