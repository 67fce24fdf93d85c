-- What the operator reads at the end of a run: a text summary on stdout and, with
-- --report FILE, the same per item as JSON (written to FILE.tmp, renamed when complete,
-- so a report is never half-written). Never contains a secret: errors pass through
-- errors.persistable, which redacts.
--   report.new{path, run_id, workflow} -> r;  r:item(rec);  r:finish{status, exit_code, summary, error}
--   report.identity(item, info) -> the item's name (userName, displayName, id, ...)
--   report.summary(stats, ex, elapsed);  report.print(out, t)
-- A report item: {item, status = ok|failed|interrupted, outcome = created|updated|skipped|
--   adopted|done|dead_lettered|rolled_back|failed|interrupted, line, dead_letter, compensated,
--   error = {class, status, scim_type, detail, rule, suggest, op, url, method, step, ...}}.
local cjson = require "cjson"
local errors = require "scimrun.errors"
local utf8_check = require "scimrun.input.utf8_check"

-- JSON is UTF-8: a server's error text or an input value in another encoding is written with
-- U+FFFD in place of each invalid byte, so the report always parses.
local function encode(v) return utf8_check.sanitize(cjson.encode(v)) end

local M = {}
local Report = {}
Report.__index = Report

function M.new(opts)
  local self = setmetatable({ path = opts.path, n = 0 }, Report)
  if opts.path then
    self.tmp = opts.path .. ".tmp"
    self.f = assert(io.open(self.tmp, "w"))
    -- owner only, whatever the umask: a report names the people provisioned
    local ffi = require "ffi"
    pcall(ffi.cdef, "int chmod(const char *path, unsigned int mode);")
    ffi.C.chmod(self.tmp, 384) -- 0600
    self.f:write('{"run_id":', encode(opts.run_id), ',"workflow":', encode(opts.workflow), ',"items":[\n')
  end
  return self
end

local function identity(item, info)
  if type(item) == "table" then
    return item.userName or item.username or item.displayName or item.group or item.id or item.externalId
  end
  if type(item) == "string" or type(item) == "number" then return item end
  return info and (info.index or info.line)
end
M.identity = identity

function Report:item(rec)
  if not self.f then return end
  local out = { item = identity(rec.item, rec.info), status = rec.status, outcome = rec.outcome,
                line = rec.info and rec.info.line, dead_letter = rec.dead_letter, compensated = rec.compensated }
  if rec.error then
    out.error = errors.persistable(rec.error)
    out.error.suggest = errors.with_id(out.error.suggest or errors.builtin_suggestion(rec.error), rec.dead_letter)
  end
  self.f:write(self.n > 0 and ",\n" or "", encode(out))
  self.n = self.n + 1
end

function Report:finish(t)
  if not self.f then return end
  self.f:write('\n],"status":', encode(t.status), ',"exit_code":', t.exit_code,
    ',"summary":', encode(t.summary), t.error and (',"error":' .. encode(t.error)) or "", "}\n")
  self.f:close()
  os.rename(self.tmp, self.path)
end

-- Items from the engine's stats, requests from the retry layer's own counters.
function M.summary(stats, ex, elapsed)
  local exc = ex:counters()
  return {
    items = stats.items, succeeded = stats.succeeded, failed = stats.failed,
    auth_stopped = stats.auth_stopped, -- items in flight when the target rejected the token
    created = stats.created, updated = stats.updated, skipped = stats.skipped, adopted = stats.adopted,
    compensated = stats.compensated, compensation_failed = stats.compensation_failed,
    dead_lettered = stats.dead_lettered, dlq_pruned = stats.dlq_pruned,
    failures = stats.failures, failures_more = stats.failures_more,
    compensation_failures = stats.compensation_failures,
    steps_run = stats.steps_run, steps_from_checkpoint = stats.steps_replayed, steps_recovered = stats.steps_recovered,
    attempts = exc.attempts, retries = exc.retries, by_class = exc.by_class, breaker_opened = exc.breaker_opened,
    retries_by_class = exc.retries_by_class, gave_up = exc.gave_up, gave_up_by_class = exc.gave_up_by_class,
    budget_exhausted = exc.budget_exhausted, paced = exc.paced, rate_limits = exc.rate_limits,
    elapsed = math.floor(elapsed * 1000 + 0.5) / 1000,
  }
end

function M.print(out, t)
  local s = t.summary
  local lines = {}
  local function add(fmt, ...) lines[#lines + 1] = fmt:format(...) end
  add("")
  add("run %s %s in %.2fs%s", t.run_id, t.status, s.elapsed, t.dry_run and " (dry run: nothing was written)" or "")
  add("  items      %d: %d succeeded (%d created, %d updated, %d skipped, %d adopted), %d failed%s",
    s.items, s.succeeded, s.created, s.updated, s.skipped, s.adopted, s.failed,
    (s.auth_stopped or 0) > 0 and (", %d stopped (token rejected; a resume redoes them)"):format(s.auth_stopped) or "")
  if s.compensated > 0 or s.compensation_failed > 0 then
    add("  sagas      %d steps compensated, %d compensations FAILED", s.compensated, s.compensation_failed)
  end
  -- retries and give-ups by class: both are tallies of the same events, so they add up
  local function by(counts)
    local parts = {}
    for k, v in pairs(counts or {}) do parts[#parts + 1] = k .. "=" .. v end
    table.sort(parts)
    return #parts > 0 and (" (" .. table.concat(parts, ", ") .. ")") or ""
  end
  add("  requests   %d attempts, %d retries%s, %d gave up%s; breaker opened %d time(s)", s.attempts or 0,
    s.retries or 0, by(s.retries_by_class), s.gave_up or 0, by(s.gave_up_by_class), s.breaker_opened or 0)
  local limits = {}
  for target, r in pairs(s.rate_limits or {}) do
    if r.learned then limits[#limits + 1] = ("%s %.1f/s"):format(target, r.rps) end
  end
  table.sort(limits)
  if (s.paced or 0) > 0 or #limits > 0 then
    add("  pacing     %d retries paced by the server's Retry-After%s", s.paced or 0,
      #limits > 0 and ("; learned rate limit at the end: " .. table.concat(limits, ", ")) or "")
  end
  add("  steps      %d run, %d from checkpoint, %d recovered in doubt", s.steps_run, s.steps_from_checkpoint,
    s.steps_recovered)
  if t.planned and #t.planned > 0 then
    add("  planned writes (dry run):")
    for i, p in ipairs(t.planned) do
      if i > 50 then add("    ... and %d more", #t.planned - 50); break end
      add("    %s %s", p.op or p.method or "?", p.summary or p.url or "")
    end
  end
  -- quoted: these lines are pasted into a shell, and a postgres:// URL's '&' would end the command
  local state_opt = t.state and t.state ~= ".scimrun/state.db"
    and (" --state " .. require("scimrun.cli.common").shell_quote(t.state)) or ""
  local cfs = s.compensation_failures or {}
  if #cfs > 0 then
    add("")
    add("  !! %d COMPENSATION(S) FAILED: the target may hold half-done work. Clean up by hand, or fix the cause", #cfs)
    add("  !! and replay the compensation (it is in the dead-letter queue, marked as compensation):")
    for _, f in ipairs(cfs) do
      local d = errors.describe(f, { dlq_id = f.dead_letter })
      add("  !!   %s", d.what)
      add("  !!     why: %s", d.why)
      if d.todo then add("  !!     what to do: %s", d.todo) end
      if f.dead_letter then
        add("  !!     see: scimrun dlq show %d%s   replay: scimrun dlq replay %d%s", f.dead_letter, state_opt,
          f.dead_letter, state_opt)
      elseif f.replayed then
        add("  !!     already in the dead-letter queue from an earlier attempt: scimrun dlq list --run %s%s",
          t.run_id, state_opt)
      end
    end
  end
  local shown = 0
  for _, f in ipairs(s.failures or {}) do
    -- the error that stopped the run is described below, with the resume command
    if not (t.err and f.step == t.err.step and f.class == t.err.class and not f.dead_letter) then
      if shown == 0 then add(""); add("  failed items:") end
      shown = shown + 1
      local d = errors.describe(f, { item = f.item, dlq_id = f.dead_letter })
      add("    %s", d.what)
      add("      why: %s", d.why)
      if d.todo then add("      what to do: %s", d.todo) end
      if f.dead_letter then
        add("      dead letter %d: scimrun dlq show %d%s", f.dead_letter, f.dead_letter, state_opt)
      elseif f.replayed then
        add("      failed in an earlier attempt of this run; retry it with: %s --retry-failed",
          t.resume_cmd or "--resume")
      end
    end
  end
  if (s.failures_more or 0) > 0 then
    add("    ... and %d more failed items%s", s.failures_more,
      t.pending_dlq > 0 and (": scimrun dlq list --run " .. t.run_id .. state_opt) or "")
  end
  if t.pending_dlq > 0 then
    add("  dead letters: %d waiting. See them: scimrun dlq list --run %s%s", t.pending_dlq, t.run_id, state_opt)
    add("  after fixing the cause: scimrun dlq replay --all --run %s%s, then: %s", t.run_id, state_opt,
      t.resume_cmd or "--resume")
  end
  if t.err and t.err.class ~= "interrupted" then -- an interrupt is said below, with the resume command
    local d = errors.describe(t.err)
    add("  stopped: %s", d.what)
    add("    why: %s", d.why)
    if d.todo then add("    what to do: %s", d.todo) end
  end
  if t.dry_run then -- luacheck: ignore 542
    -- nothing to resume: a dry run keeps no state
  elseif t.status == "interrupted" then
    add("stopped; nothing is lost. Resume with:")
    add("  %s", t.resume_cmd)
  elseif t.status == "failed" then
    add("  after fixing the cause, resume with: %s%s", t.resume_cmd,
      -- a store failure or a rejected token left no step failed: a plain resume redoes them
      t.err and not errors.no_verdict(t.err) and " --retry-failed" or "")
  end
  out:write(table.concat(lines, "\n"), "\n")
end

-- `--check`: every bad row as file:line: reason, the counts, and the exit code (0 clean, 2 not;
-- 1 when the workflow itself failed before its input was read).
function M.print_check(out, results, err)
  local rows, bad = 0, 0
  for _, r in ipairs(results or {}) do
    rows = rows + r.rows
    for _, b in ipairs(r.bad) do
      bad = bad + 1
      out:write(("%s:%s: %s\n"):format(tostring(b.file or "input"), tostring(b.line or "?"), b.reason))
    end
  end
  if err then
    local d = errors.describe(err)
    out:write(("check: the workflow failed before its input was checked: %s: %s\n"):format(d.what, d.why))
    return 1
  end
  if not results or #results == 0 then
    out:write("check: the workflow read no input through wf:each; nothing to check\n")
    return 0
  end
  out:write(("check: %d row(s) read, %d bad, %d would be processed; nothing was sent\n")
    :format(rows, bad, rows - bad))
  return bad > 0 and 2 or 0
end

return M
