-- `scimrun policy check [FILE]`: loads and validates a policy, prints the effective profiles,
-- operation map and classification rules. An invalid policy exits with code 2.
-- `scimrun policy simulate [FILE] --op OP --errors LIST [--seed N] [--target NAME]`: prints,
-- offline, the exact retry schedule the executor would follow for the scripted outcomes, using
-- the executor itself on a simulated clock (so the decisions are the real ones).
-- `scimrun policy simulate [FILE] --server bucket:30/s|random429:0.03|none [--concurrency N]
-- [--latency S] [--seconds S] [--seed N]`: what the policy's rate limit does against such a
-- server, window by window (scimrun.resilience.rate_sim), also offline.
local policy = require "scimrun.resilience.policy"
local flags = require "scimrun.cli.flags"

local M = {}

local SEE = "(see: scimrun help policy)"

local KINDS = { timeout = true, connect = true, reset = true, dns = true, tls = true, too_large = true, other = true }

-- The policy with the command-line layer (--retry-attempts ..., --set) on top, as a run has it.
local function load_or_fail(cli, spec, overrides, all)
  local ok, pol = pcall(policy.load, spec or "default", { overrides = overrides })
  if ok then return pol end
  if policy.is_error(pol) then
    if all and pol.lines and #pol.lines > 1 then -- policy check: every problem, one per line
      cli.fail("invalid policy %s (%d problems):\n  %s", tostring(pol.file), #pol.lines,
        table.concat(pol.lines, "\n  "))
    end
    cli.fail("%s", tostring(pol))
  end
  error(pol, 0)
end

-- `policy simulate` runs a schedule of answers (--op, --errors) or a server (--server with
-- --concurrency, --latency, --seconds); a flag of the other kind would be ignored, so it is
-- refused (exit 2), as flags of another subcommand are (flags.check_only).
local SCHEDULE_ONLY, SERVER_ONLY = { "op", "errors", "target" }, { "concurrency", "latency", "seconds" }

local function check_simulate_mode(o, cli)
  local unused = o.server and SCHEDULE_ONLY or SERVER_ONLY
  for _, key in ipairs(unused) do
    if o[key] ~= nil then
      if o.server then
        cli.fail("--%s is not used with --server (it belongs to a simulation of --op/--errors) %s", key, SEE)
      end
      cli.fail("--%s is for policy simulate --server (a simulated rate-limited server) %s", key, SEE)
    end
  end
end

local function parse_args(args, cli, sub)
  local o, pos = flags.parse("policy", args, cli)
  flags.check_only("policy", o, sub, cli)
  if sub == "simulate" then check_simulate_mode(o, cli) end
  if #pos > 1 then cli.fail("unexpected argument %s %s", pos[2], SEE) end
  o.file = pos[1]
  o.target = o.target or "simulated"
  local seed = o.seed or "1"
  o.seed = tonumber(seed)
  if not o.seed then cli.fail("--seed needs a number, got %s", seed) end
  for _, key in ipairs { "concurrency", "latency", "seconds" } do
    if o[key] then
      local given = o[key]
      o[key] = tonumber(given)
      if not o[key] or o[key] <= 0 or (key ~= "latency" and o[key] % 1 ~= 0) then
        cli.fail("--%s needs a positive %s, got %s", key, key == "latency" and "number of seconds" or "whole number",
          given)
      end
    end
  end
  return o
end

-- "503,429:ra=7,timeout,201" -> { { status = 503 }, { status = 429, headers = {...} }, ... }
function M.parse_outcomes(list, fail)
  local out = {}
  for item in tostring(list):gmatch("[^,]+") do
    item = item:match("^%s*(.-)%s*$")
    local head, rest = item:match("^([^:]+)(.*)$")
    local oc = { label = item }
    if tonumber(head) then
      oc.status = tonumber(head)
      if oc.status < 100 or oc.status > 599 then fail(("'%s': not an HTTP status"):format(item)) end
    elseif KINDS[head] then
      oc.kind = head
    else
      fail(("'%s': expected a status (503) or a transport error (timeout, connect, reset, dns, tls, other)")
        :format(item))
    end
    for k, v in (rest or ""):gmatch(":([%w_]+)=([^:]*)") do
      oc.headers = oc.headers or {}
      if k == "ra" then
        oc.headers["retry-after"] = v
      elseif k == "reset" then
        oc.headers["ratelimit-reset"] = v
      elseif k == "scim" then
        oc.scim_type = v
      else
        fail(("'%s': unknown option %s (use ra=SECONDS, reset=SECONDS, scim=TYPE)"):format(item, k))
      end
    end
    out[#out + 1] = oc
  end
  if #out == 0 then fail("--errors is empty") end
  return out
end

local function fmt_s(s) return ("%.3fs"):format(s) end

function M.simulate(pol, o)
  local retry = require "scimrun.resilience.retry"
  local t = 0
  local clock = { now = function() return t end, sleep = function(s) t = t + s end,
                  wall = function() return 1700000000 + t end }
  local lines, rows = {}, {}
  local cur
  local ex = retry.executor({
    policy = pol, seed = o.seed, log = false, clock = clock,
    on_event = function(ev)
      if ev.type == "attempt" then
        cur = { attempt = ev.attempt, at = ev.t }
        rows[#rows + 1] = cur
      elseif ev.type == "failure" then
        cur.class, cur.rule, cur.budget = ev.class, ev.rule, ev.budget_left
        cur.next = ev.retry and ("retry in %s: %s"):format(fmt_s(ev.delay), ev.why) or ("give up: " .. ev.why)
      elseif ev.type == "success" then
        cur.next = "success"
      elseif ev.type == "wait" then
        rows[#rows + 1] = { wait = ("wait %s (%s)"):format(fmt_s(ev.seconds or 0), ev.reason), at = ev.t }
      elseif ev.type == "breaker" then
        rows[#rows + 1] = { wait = "circuit breaker -> " .. ev.state, at = ev.t }
      end
    end,
  })
  local script = o.outcomes
  local res, err = ex:run(o.op, o.target, function(n)
    local s = script[math.min(n, #script)]
    cur.outcome = s.label
    if s.status and s.status < 400 then return { status = s.status } end
    return nil, { status = s.status, kind = s.kind, scim_type = s.scim_type, headers = s.headers or {},
                  detail = "simulated " .. s.label }
  end, {})
  local profile, pname = policy.profile_for(pol, o.op)
  lines[#lines + 1] = ("policy %s, operation %s -> profile %s (%d attempts, max_elapsed %ss), seed %s")
    :format(tostring(pol.file), o.op, pname, profile.attempts, tostring(profile.max_elapsed), tostring(o.seed))
  lines[#lines + 1] = ("%-8s %-10s %-16s %-13s %-22s %-7s %s"):format("attempt", "at", "outcome", "class", "rule",
                                                                      "budget", "next")
  for _, r in ipairs(rows) do
    if r.wait then
      lines[#lines + 1] = ("%-8s %-10s %s"):format("", fmt_s(r.at), r.wait)
    else
      lines[#lines + 1] = ("%-8d %-10s %-16s %-13s %-22s %-7s %s"):format(r.attempt, fmt_s(r.at), r.outcome or "?",
        r.class or "-", r.rule or "-", r.budget and ("%g"):format(r.budget) or "-", r.next or "")
    end
  end
  if res then
    lines[#lines + 1] = ("result: succeeded on attempt %d after %s"):format(ex:counters().attempts,
                                                                             fmt_s(t))
  else
    lines[#lines + 1] = ("result: failed (%s, rule %s) after %d attempt(s), %s: %s"):format(err.class,
      tostring(err.rule), err.attempts or 0, fmt_s(t), tostring(err.detail))
    if err.suggest then lines[#lines + 1] = "suggest: " .. err.suggest end
  end
  return lines, res, err
end

function M.main(args, cli)
  local sub = args[1]
  local rest = {}
  for i = 2, #args do rest[#rest + 1] = args[i] end
  if sub == "check" then
    local o = parse_args(rest, cli, sub)
    local pol = load_or_fail(cli, o.file, o.overrides, true)
    for _, l in ipairs(policy.describe(pol)) do io.stdout:write(l, "\n") end
    io.stdout:write("policy OK\n")
    return 0
  elseif sub == "simulate" then
    local o = parse_args(rest, cli, sub)
    if o.server then
      local rate_sim = require "scimrun.resilience.rate_sim"
      local server, msg = rate_sim.parse_server(o.server)
      if not server then cli.fail("--server %s %s", msg, SEE) end
      o.server_spec, o.server = o.server, server
      local pol = load_or_fail(cli, o.file, o.overrides)
      for _, l in ipairs((rate_sim.report(pol, o))) do io.stdout:write(l, "\n") end
      return 0
    end
    if not o.op then cli.fail("simulate needs --op OPERATION (for example --op users.create) %s", SEE) end
    if not o.errors then cli.fail("simulate needs --errors LIST (for example --errors 503,503,201) %s", SEE) end
    o.outcomes = M.parse_outcomes(o.errors, function(msg) cli.fail("--errors %s %s", msg, SEE) end)
    local pol = load_or_fail(cli, o.file, o.overrides)
    local lines = M.simulate(pol, o)
    for _, l in ipairs(lines) do io.stdout:write(l, "\n") end
    return 0
  elseif sub == nil then
    io.stderr:write(flags.help("policy"))
    return 2
  end
  cli.fail("unknown policy command '%s' (use: policy check [FILE], policy simulate [FILE] ...; see: scimrun help "
    .. "policy)", tostring(sub))
end

return M
