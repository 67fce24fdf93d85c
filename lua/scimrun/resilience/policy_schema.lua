-- The policy schema (private to scimrun.resilience.policy): which keys a policy file may hold, their
-- types and allowed values, the built-in values under every policy, and the checks that only
-- make sense on the merged result (operations naming a defined profile, min_delay <= max_delay).
-- check_file(t) / check_effective(t) -> { { key = "a.b", msg = "...", fix = "..." }, ... }
local M = {}

M.CLASSES = { "transient", "rate_limited", "permanent", "conflict", "auth" }
M.KINDS = { "timeout", "connect", "reset", "dns", "tls", "too_large", "other" }
M.BACKOFFS = { "constant", "linear", "exponential" }
M.JITTERS = { "none", "full", "equal", "decorrelated" }

M.PROFILE_DEFAULTS = { attempts = 1, backoff = "exponential", base = 1, multiplier = 2, min_delay = 0,
                       max_delay = 30, jitter = "full", max_elapsed = 300 }

-- Used when no operation pattern matches and the policy has no "*".
M.FALLBACK_PROFILE = { attempts = 3, backoff = "exponential", base = 1, multiplier = 2, min_delay = 0,
                       max_delay = 30, jitter = "full", max_elapsed = 300 }

-- Merged under every policy, so a file that extends nothing still gets every section.
M.BUILTIN = {
  profiles = {
    balanced = { attempts = 5, backoff = "exponential", base = 1, multiplier = 2, min_delay = 0,
                 max_delay = 30, jitter = "full", max_elapsed = 300 },
    none = { attempts = 1 },
  },
  operations = { ["*"] = "balanced" },
  classify = {},
  breaker = { failures = 5, window = 10, min_calls = 5, cooldown = 30, cooldown_multiplier = 2,
              max_cooldown = 300, half_open_probes = 1, success_ratio = 1, half_open_max_wait = 60,
              when_open = "wait", max_open = 180 },
  rate_limit = { rps = 0, burst = 100, adaptive = true, headers = true, window = 1, target_share = 0.01,
                 gain = 0.5, growth = 0.01, max_background = 0.2, min_samples = 10, slow_start = 4 },
  bulkhead = { max_in_flight = 32 },
  timeouts = { request = 30, connect = 10, step = 900 },
  budget = { retry_ratio = 0.2, min_retries = 10 },
  dead_letter = { max_size = 10000, retention_days = 30 },
  -- the audit trail of writes in the state file (scimrun audit): rows older than this are pruned
  audit = { retention_days = 365 },
  -- SCIM client settings, in the run context scim.connect reads (scimrun.ctx().run)
  scim = { max_members_per_patch = 100 },
  -- functions called on events of the run (scimrun.observe.hooks); none by default
  on_event = {},
}

local closest = require("scimrun.errors").closest
M.closest = closest

local function keypath(base, k)
  if type(k) == "number" then return base .. "[" .. k .. "]" end
  if type(k) == "string" and k:match("^[%a_][%w_]*$") then
    return base == "" and k or (base .. "." .. k)
  end
  return base .. '["' .. tostring(k) .. '"]'
end
M.keypath = keypath

local function show(v)
  if type(v) == "string" then return ("%q"):format(v) end
  return tostring(v)
end

local function typename(v)
  if type(v) == "number" and v ~= math.floor(v) then return "number" end
  return type(v)
end

-- Field specs: { t = "number"|"integer"|"string"|"boolean"|"function", min, max, gt, enum, fix }
local function num(min, max, extra)
  local s = { t = "number", min = min, max = max }
  for k, v in pairs(extra or {}) do s[k] = v end
  return s
end
local function int(min, max, extra)
  local s = num(min, max, extra)
  s.t = "integer"
  return s
end
local STR = { t = "string" }
local BOOL = { t = "boolean" }
local FUNC = { t = "function" }

local SECTIONS = {
  profile = {
    attempts = int(1, 1000, { fix = "use attempts = 1 for no retries" }),
    backoff = { t = { "string", "function" }, enum = M.BACKOFFS },
    base = num(0), multiplier = num(nil, nil, { gt = 0 }), min_delay = num(0), max_delay = num(0),
    jitter = { t = "string", enum = M.JITTERS },
    max_elapsed = num(nil, nil, { gt = 0 }),
    delay = FUNC, description = STR,
  },
  breaker = {
    failures = int(0), failure_rate = num(0, 1), window = num(nil, nil, { gt = 0 }),
    window_calls = int(0), min_calls = int(1), cooldown = num(nil, nil, { gt = 0 }),
    cooldown_multiplier = num(1), max_cooldown = num(0), half_open_probes = int(1),
    success_ratio = num(nil, 1, { gt = 0 }), half_open_max_wait = num(0), max_open = num(0),
    when_open = { t = "string", enum = { "wait", "fail" } },
  },
  rate_limit = { rps = num(0), burst = num(1), adaptive = BOOL, headers = BOOL,
                 window = num(nil, nil, { gt = 0 }), target_share = num(nil, nil, { gt = 0, lt = 0.5 }),
                 gain = num(nil, 2, { gt = 0 }), growth = num(nil, 1, { gt = 0 }),
                 max_background = num(0, nil, { lt = 1 }), min_samples = int(1),
                 slow_start = int(0, nil, { fix = "requests in flight a new target starts with, e.g. 4 (0 = none)" }) },
  bulkhead = { max_in_flight = int(1) },
  timeouts = { request = num(nil, nil, { gt = 0 }), connect = num(nil, nil, { gt = 0 }), step = num(0) },
  budget = { retry_ratio = num(0, 1, { fix = "a share of first attempts between 0 and 1, e.g. 0.2" }),
             min_retries = int(0) },
  dead_letter = { max_size = int(1), retention_days = num(nil, nil, { gt = 0 }), on_dead_letter = FUNC },
  audit = { retention_days = num(nil, nil, { gt = 0, fix = "days the audit trail is kept, e.g. 365" }) },
  scim = { max_members_per_patch = int(1, nil, { fix = "members per group PATCH request, e.g. 100" }),
           -- attribute path -> characters the provider accepts (--check and the preflight)
           max_lengths = { t = "table",
                           entries = int(1, nil, { fix = "characters the provider accepts, e.g. 256" }) } },
  on_event = { dead_letter = FUNC, breaker_open = FUNC, run_finished = FUNC },
}

local TOP_KEYS = { "extends", "description", "profiles", "operations", "classify", "breaker", "rate_limit",
                   "bulkhead", "timeouts", "budget", "dead_letter", "audit", "scim", "on_event" }
-- (the command line's --set and the man page's spec read these)
M.SECTIONS, M.TOP_KEYS = SECTIONS, TOP_KEYS
local RULE_KEYS = { "name", "description", "status", "scim_type", "kind", "header", "op", "detail", "when",
                    "class", "suggest" }

local function sorted_names(t)
  local names = {}
  for k in pairs(t) do names[#names + 1] = k end
  table.sort(names)
  return names
end

local Checker = {}
Checker.__index = Checker

local function new_checker() return setmetatable({ problems = {} }, Checker) end

function Checker:add(key, msg, fix)
  self.problems[#self.problems + 1] = { key = key, msg = msg, fix = fix }
end

function Checker:unknown(path, k, valid)
  local name = tostring(k)
  local guess = type(k) == "string" and closest(name, valid)
  if guess then
    self:add(keypath(path, k), "unknown key", ("did you mean '%s'?"):format(guess))
  else
    self:add(keypath(path, k), "unknown key", "valid keys here: " .. table.concat(valid, ", "))
  end
end

function Checker:enum(path, v, allowed, what)
  for _, a in ipairs(allowed) do
    if v == a then return true end
  end
  local guess = type(v) == "string" and closest(v, allowed)
  self:add(path, ("unknown %s %s"):format(what, show(v)),
           (guess and ("did you mean '%s'? "):format(guess) or "") .. "use one of: " .. table.concat(allowed, ", "))
  return false
end

function Checker:value(path, v, spec)
  local types = type(spec.t) == "table" and spec.t or { spec.t }
  local ok = false
  for _, t in ipairs(types) do
    if t == "integer" then
      ok = ok or (type(v) == "number" and v == math.floor(v))
    else
      ok = ok or type(v) == t
    end
  end
  if not ok then
    local want = table.concat(types, " or ")
    local fix
    if type(v) == "string" and tonumber(v) and (spec.t == "number" or spec.t == "integer") then
      fix = ("write %s without quotes"):format(v)
    end
    self:add(path, ("expected %s %s, got %s %s"):format(want:match("^[aeiou]") and "an" or "a", want,
                                                        typename(v), show(v)), fix)
    return
  end
  if type(v) == "number" then
    if v ~= v or v == math.huge or v == -math.huge then
      self:add(path, "must be a finite number, got " .. tostring(v))
    elseif spec.min and v < spec.min then
      self:add(path, ("must be at least %s, got %s"):format(show(spec.min), show(v)), spec.fix)
    elseif spec.max and v > spec.max then
      self:add(path, ("must be at most %s, got %s"):format(show(spec.max), show(v)), spec.fix)
    elseif spec.gt and v <= spec.gt then
      self:add(path, ("must be greater than %s, got %s"):format(show(spec.gt), show(v)), spec.fix)
    elseif spec.lt and v >= spec.lt then
      self:add(path, ("must be less than %s, got %s"):format(show(spec.lt), show(v)), spec.fix)
    end
  elseif type(v) == "string" and spec.enum then
    self:enum(path, v, spec.enum, (path:match("([%w_]+)$") or "value"))
  elseif type(v) == "table" and spec.entries then -- a map: names to values of one spec
    for k2, v2 in pairs(v) do
      if type(k2) ~= "string" then
        self:add(path, ("keys must be names, got %s"):format(show(k2)), spec.entries.fix)
      else
        self:value(keypath(path, k2), v2, spec.entries)
      end
    end
  end
end

function Checker:record(path, t, fields)
  if type(t) ~= "table" then
    self:add(path, "expected a table, got " .. typename(t) .. " " .. show(t))
    return false
  end
  local valid = sorted_names(fields)
  for k, v in pairs(t) do
    local spec = fields[k]
    if spec then self:value(keypath(path, k), v, spec) else self:unknown(path, k, valid) end
  end
  return true
end

local function is_status(v)
  return type(v) == "number" and v == math.floor(v) and v >= 100 and v <= 599
end

function Checker:status(path, v)
  if type(v) == "number" then
    if not is_status(v) then self:add(path, "not an HTTP status: " .. show(v), "use a number 100..599") end
  elseif type(v) == "string" then
    local a, b = v:match("^(%d%d%d)%-(%d%d%d)$")
    if not (v:match("^[1-5]xx$") or (a and tonumber(a) <= tonumber(b))) then
      self:add(path, "not a status pattern: " .. show(v), 'use "5xx", "500-504", a number or a list')
    end
  elseif type(v) == "table" then
    if v.min ~= nil or v.max ~= nil then
      for k in pairs(v) do
        if k ~= "min" and k ~= "max" then self:unknown(path, k, { "max", "min" }) end
      end
      if not is_status(v.min) or not is_status(v.max) then
        self:add(path, "a status range needs min and max between 100 and 599", "e.g. { min = 500, max = 599 }")
      elseif v.min > v.max then
        self:add(path, ("range min %d is above max %d"):format(v.min, v.max), "swap them")
      end
    else
      if #v == 0 then self:add(path, "empty status list", "list at least one status") end
      for i, x in pairs(v) do
        if type(i) ~= "number" or type(x) == "table" then
          self:add(keypath(path, i), "expected a status or pattern in the list", "e.g. status = { 502, 503 }")
        else
          self:status(keypath(path, i), x)
        end
      end
    end
  else
    self:add(path, "expected a number, a list or a range, got " .. typename(v))
  end
end

-- A string or a list of strings; each checked with `each` when given.
function Checker:strings(path, v, each)
  local list = type(v) == "table" and v or { v }
  if type(v) ~= "string" and type(v) ~= "table" then
    self:add(path, "expected a string or a list of strings, got " .. typename(v))
    return
  end
  for i, x in pairs(list) do
    local p = type(v) == "table" and keypath(path, i) or path
    if type(x) ~= "string" then
      self:add(p, "expected a string, got " .. typename(x))
    elseif each then
      each(p, x)
    end
  end
end

local function valid_pattern(p)
  return (pcall(string.find, "", p))
end

function Checker:rule(path, r)
  if type(r) ~= "table" then
    self:add(path, "expected a rule table, got " .. typename(r), 'e.g. { status = 503, class = "transient" }')
    return
  end
  for k, v in pairs(r) do
    local p = keypath(path, k)
    if k == "status" then
      self:status(p, v)
    elseif k == "kind" then
      self:strings(p, v, function(pp, x) self:enum(pp, x, M.KINDS, "transport kind") end)
    elseif k == "scim_type" or k == "op" then
      self:strings(p, v)
    elseif k == "detail" then
      self:value(p, v, STR)
      if type(v) == "string" and not valid_pattern(v) then self:add(p, "invalid Lua pattern " .. show(v)) end
    elseif k == "header" then
      local name = type(v) == "table" and (v.name or v[1])
      local value = type(v) == "table" and (v.value or v[2])
      if type(name) ~= "string" then
        self:add(p, "expected { name = \"Header-Name\", value = \"pattern\" (optional) }")
      elseif value ~= nil and (type(value) ~= "string" or not valid_pattern(value)) then
        self:add(keypath(p, "value"), "expected a string or Lua pattern, got " .. show(value))
      end
    elseif k == "when" then
      self:value(p, v, FUNC)
    elseif k == "name" or k == "suggest" or k == "description" then
      self:value(p, v, STR)
    elseif k == "class" then
      if type(v) ~= "string" then self:add(p, "expected a string, got " .. typename(v))
      else self:enum(p, v, M.CLASSES, "class") end
    else
      self:unknown(path, k, RULE_KEYS)
    end
  end
  if r.class == nil then
    self:add(keypath(path, "class"), "missing", "every rule needs a class: " .. table.concat(M.CLASSES, ", "))
  end
end

-- Checks the file as written (before merging).
function M.check_file(t)
  local c = new_checker()
  for k, v in pairs(t) do
    if k == "extends" or k == "description" then
      c:value(keypath("", k), v, STR)
    elseif k == "profiles" then
      if type(v) ~= "table" then
        c:add("profiles", "expected a table of named profiles, got " .. typename(v))
      else
        for name, prof in pairs(v) do
          local p = keypath("profiles", name)
          if type(name) ~= "string" or not name:match("^[%w_%-]+$") then
            c:add(p, "a profile name must be a word (letters, digits, _ or -)")
          else
            c:record(p, prof, SECTIONS.profile)
          end
        end
      end
    elseif k == "operations" then
      if type(v) ~= "table" then
        c:add("operations", "expected a table mapping operation patterns to profile names, got " .. typename(v))
      else
        for op, prof in pairs(v) do
          local p = keypath("operations", op)
          if type(op) ~= "string" or not op:match("^[%w_%.%*%-]+$") then
            c:add(p, "not an operation pattern", 'use RESOURCE.VERB, "users.*" or "*"')
          elseif type(prof) ~= "string" then
            c:add(p, "expected a profile name, got " .. typename(prof) .. " " .. show(prof))
          end
        end
      end
    elseif k == "classify" then
      if type(v) ~= "table" then
        c:add("classify", "expected a list of rules, got " .. typename(v))
      else
        for i, r in pairs(v) do
          if type(i) ~= "number" then
            c:add(keypath("classify", i), "classify is an ordered list", "write classify = { { ... }, { ... } }")
          else
            c:rule(keypath("classify", i), r)
          end
        end
      end
    elseif SECTIONS[k] and k ~= "profile" then
      c:record(k, v, SECTIONS[k])
    else
      c:unknown("", k, TOP_KEYS)
    end
  end
  return c.problems
end

-- Checks the merged policy and fills each profile's missing fields. Mutates t.
function M.check_effective(t)
  local c = new_checker()
  local names = sorted_names(t.profiles)
  for _, name in ipairs(names) do
    local p = t.profiles[name]
    for k, v in pairs(M.PROFILE_DEFAULTS) do
      if p[k] == nil then p[k] = v end
    end
    if type(p.backoff) == "function" then
      p.delay = p.delay or p.backoff
      p.backoff = "exponential"
    end
    if p.min_delay > p.max_delay then
      c:add(keypath(keypath("profiles", name), "min_delay"),
            ("min_delay %s is above max_delay %s"):format(show(p.min_delay), show(p.max_delay)),
            "lower min_delay or raise max_delay")
    end
  end
  for op, prof in pairs(t.operations) do
    if not t.profiles[prof] then
      local guess = closest(prof, names)
      c:add(keypath("operations", op), ("profile '%s' is not defined"):format(prof),
            (guess and ("did you mean '%s'? "):format(guess) or "") ..
            "defined profiles: " .. table.concat(names, ", "))
    end
  end
  local b = t.breaker
  if b.max_cooldown > 0 and b.max_cooldown < b.cooldown then
    c:add("breaker.max_cooldown", ("max_cooldown %s is below cooldown %s"):format(show(b.max_cooldown),
          show(b.cooldown)), "raise max_cooldown")
  end
  if b.failures == 0 and (b.failure_rate or 0) == 0 then
    c:add("breaker.failures", "the breaker can never open: failures is 0 and no failure_rate is set",
          "set failures (consecutive failures) or failure_rate (share of calls in the window)")
  end
  return c.problems
end

return M
