-- The log as a reader of the event stream (scimrun.engine.events): the retry layer emits facts, this
-- turns the ones an operator reads into log lines. Nothing else writes those lines, so the log,
-- the summary, the report and the progress display cannot tell different stories.
--
--   event_log.attach(stream, { log = scimrun.log, retries = "info"|"debug"|false, answers = bool })
--
-- retries: the level of the per-attempt `retrying` lines (info by default; the terminal's
-- status area counts them instead, so a run on a terminal shows them with -v only).
-- answers: every answer at debug level, with its duration (-vv).
local M = {}

local function round2(x) return math.floor(x * 100 + 0.5) / 100 end

function M.attach(stream, opts)
  opts = opts or {}
  local log = opts.log or scimrun.log
  local retries = opts.retries == nil and "info" or opts.retries
  local logged_rate = {} -- target -> the rate last logged
  return stream:subscribe(function(ev)
    local t = ev.type
    if t == "success" and opts.answers then
      log.emit("debug", "answer", { op = ev.op, target = ev.target, attempt = ev.attempt,
                                    seconds = ev.elapsed and round2(ev.elapsed) or nil })
    elseif t == "failure" and opts.answers and not ev.retry then
      log.emit("debug", "failed", { op = ev.op, target = ev.target, attempt = ev.attempt, class = ev.class,
                                    status = ev.status, kind = ev.kind })
    end
    if t == "failure" and ev.retry and retries then
      log.emit(retries, "retrying", { op = ev.op, target = ev.target, attempt = ev.attempt, class = ev.class,
                                      rule = ev.rule, status = ev.status, kind = ev.kind, delay = ev.delay })
    elseif t == "breaker" then
      log.emit(ev.state == "open" and "warn" or "info", "circuit breaker " .. ev.state
                 .. (ev.shared and " (opened by another worker of the run)" or ""),
               { target = ev.target, op = ev.op, cooldown = ev.cooldown })
    elseif t == "refused" then
      log.emit("info", "server refused a run of requests: waiting as it asked",
               { target = ev.target, seconds = ev.seconds })
    elseif t == "rate" then
      -- when a limit appears or goes, or moves by a quarter since it was last logged
      local rate, last = ev.rps, logged_rate[ev.target] or 0
      if (rate == 0) ~= (last == 0) or (last > 0 and math.abs(rate - last) / last >= 0.25) then
        logged_rate[ev.target] = rate
        log.emit("info", rate > 0 and "rate limit" or "rate limit lifted",
                 { target = ev.target, rps = rate > 0 and round2(rate) or nil })
      end
    end
  end, { "success", "failure", "breaker", "refused", "rate" })
end

return M
