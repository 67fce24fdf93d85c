-- The run's metrics, read from its event stream (scimrun.engine.events) like the log, the progress
-- display and the report: every counter here is a tally of events, never a second count kept
-- beside them. Two gauges describe the state file rather than the stream (the dead letters
-- pending and the oldest of them, the last successful run of the workflow): they are read from
-- the store, at most once a second, while the run has it open.
--
--   local mx = run_metrics.new { workflow = "onboard", db = db, run_id = id, workflow_path = abs,
--                                textfile = DIR | nil, port = N | nil, interval = 5 }
--   mx:listen() -> true | nil, err     serves GET /metrics on 127.0.0.1:N (N = 0: a free port)
--   mx:attach(stream)                  subscribes (when a textfile or a port is asked for, or o.always);
--                                      run_started / run_finished events frame the run
--   mx:start()                         writes DIR/scimrun_<workflow>.prom now and every `interval` s
--   mx:close()                         stops the writer and the server (after run_finished)
--   mx:text() -> the exposition text   mx.reg: the registry (scimrun.observe.metrics)
--
-- Names follow Prometheus practice: one `scimrun_` prefix, base units (seconds), `_total` on
-- counters. Labels: workflow, target (host[:port] of the provider), op (users.create, ...),
-- class, rule, outcome, state, status: all bounded sets; never a userName or any value of a
-- person. docs/metrics.md lists every series and its meaning.
local metrics = require "scimrun.observe.metrics"

local M = {}

-- Request durations: from a fast local provider (a few ms) to the request timeout (30 s).
M.REQUEST_BUCKETS = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60 }
M.ITEM_OUTCOMES = { "created", "updated", "skipped", "adopted", "done", "failed", "dead_lettered", "rolled_back",
                    "interrupted" }
M.RUN_STATUSES = { "running", "completed", "completed_with_dead_letters", "failed", "interrupted" }
M.BREAKER_STATES = { "closed", "open", "half_open" }
-- A run that went through its whole input: succeeded, or parked what failed as dead letters.
M.SUCCESS = { completed = true, completed_with_dead_letters = true }

local R = {}
R.__index = R

-- The file name of a workflow's textfile: node_exporter reads DIR/*.prom.
function M.textfile_name(workflow)
  return "scimrun_" .. tostring(workflow):gsub("[^%w_%-]", "_") .. ".prom"
end

-- A target label never carries credentials (user:password@host).
local function target_label(t)
  t = tostring(t or "default")
  return (t:gsub("^.*@", ""))
end

local function declare(reg)
  local W = { "workflow" }
  local WT = { "workflow", "target" }
  local WTO = { "workflow", "target", "op" }
  return {
    build = reg:gauge("scimrun_build_info", "Always 1; the version label is scimrun's.", { "version" }),
    run_start = reg:gauge("scimrun_run_start_timestamp_seconds",
      "When the current (or, in a textfile, the last) run of the workflow started, Unix time.", W),
    run_duration = reg:gauge("scimrun_run_duration_seconds",
      "How long the current run has been running, or the last run ran.", W),
    run_status = reg:gauge("scimrun_run_status",
      "1 for the status of the current or last run (running, completed, completed_with_dead_letters, failed, "
        .. "interrupted), 0 for the others.", { "workflow", "status" }),
    last_success = reg:gauge("scimrun_last_success_timestamp_seconds",
      "When a run of the workflow last finished having gone through its whole input (completed, or completed "
        .. "with dead letters), Unix time; absent until one has.", W),
    requests = reg:counter("scimrun_requests_total",
      "Requests sent to a provider and answered or failed, by outcome: success, or the failure's class "
        .. "(transient, rate_limited, permanent, conflict, auth).", { "workflow", "target", "op", "outcome" }),
    duration = reg:histogram("scimrun_request_duration_seconds",
      "Time from sending a request to its answer or failure.", WTO, M.REQUEST_BUCKETS),
    retries = reg:counter("scimrun_retries_total",
      "Failed requests that were retried, by class and by the classification rule that decided.",
      { "workflow", "target", "op", "class", "rule" }),
    gave_up = reg:counter("scimrun_operations_failed_total",
      "Operations that ended failed after their retries, or refused by an open breaker (class circuit_open).",
      { "workflow", "target", "op", "class" }),
    budget = reg:counter("scimrun_retry_budget_exhausted_total",
      "Retries refused because the run's retry budget was spent.", WTO),
    adopted = reg:counter("scimrun_adopted_total",
      "Creates whose outcome was unknown, resolved by finding the resource instead of sending again.", WTO),
    items = reg:counter("scimrun_items_total",
      "Items (rows) finished, by outcome.", { "workflow", "outcome" }),
    dead_letters = reg:counter("scimrun_dead_letters_total",
      "Dead letters parked by this run, by class.", { "workflow", "class" }),
    dlq_pending = reg:gauge("scimrun_dead_letters_pending",
      "Dead letters waiting in the run's state file (replay or drop them: scimrun dlq).", W),
    dlq_oldest = reg:gauge("scimrun_dead_letters_oldest_timestamp_seconds",
      "When the oldest pending dead letter first failed, Unix time; absent when none is pending.", W),
    breaker_state = reg:gauge("scimrun_breaker_state",
      "1 for the circuit breaker's state for a target (closed, open, half_open), 0 for the others.",
      { "workflow", "target", "state" }),
    breaker_transitions = reg:counter("scimrun_breaker_transitions_total",
      "Circuit breaker transitions, by the state entered.", { "workflow", "target", "state" }),
    breaker_wait = reg:counter("scimrun_breaker_wait_seconds_total",
      "Seconds requests were held by an open breaker.", WT),
    rate_wait = reg:counter("scimrun_rate_limit_wait_seconds_total",
      "Seconds requests were held by the rate limit (the learned or configured rate, or a server's reset).", WT),
    rate = reg:gauge("scimrun_rate_limit_requests_per_second",
      "The rate limit in force for a target; 0 when none is.", WT),
  }
end

M.declare = declare -- the families, for a registry of the state file's (scimrun ui's /metrics)

function M.new(o)
  local reg = metrics.registry()
  local self = setmetatable({
    reg = reg, f = declare(reg), workflow = o.workflow, db = o.db, run_id = o.run_id,
    workflow_path = o.workflow_path, textfile = o.textfile, port = o.port, always = o.always,
    interval = o.interval or tonumber(os.getenv("SCIMRUN_METRICS_INTERVAL")) or 5,
    now = o.now or scimrun.now, wall = o.wall or scimrun.wall, log = o.log or scimrun.log,
    sent = setmetatable({}, { __mode = "k" }), -- task -> its request in flight {t, op, target}
    breakers = {}, finished = false, stopped = false, store_read_at = nil,
  }, R)
  if self.textfile then self.path = self.textfile:gsub("/+$", "") .. "/" .. M.textfile_name(self.workflow) end
  local f, wf = self.f, self.workflow
  f.build:set(1, scimrun.version or "dev")
  for _, outcome in ipairs(M.ITEM_OUTCOMES) do f.items:touch(wf, outcome) end
  reg:on_collect(function() self:collect() end)
  return self
end

-- The newest run of the workflow that went through its input (this one excluded: it is running).
function R:read_last_success()
  if not (self.db and self.workflow_path) then return end
  local ok, runs = pcall(self.db.runs_list, self.db, { limit = 1000, workflow_path = self.workflow_path })
  if not ok or type(runs) ~= "table" then return end
  for _, r in ipairs(runs) do
    if r.id ~= self.run_id and M.SUCCESS[r.status] then
      local at = tonumber(r.finished_at) or tonumber(r.updated_at)
      if at then self.f.last_success:set(at, self.workflow) end
      return
    end
  end
end

-- The dead-letter queue of the state file: pending entries and when the oldest first failed.
function R:read_dead_letters()
  local db, wf = self.db, self.workflow
  if not db then return end
  local ok, n = pcall(db.dlq_count, db, { state = "pending" })
  if not ok or type(n) ~= "number" then return end
  self.f.dlq_pending:set(n, wf)
  local oldest
  if n > 0 then
    local lok, rows = pcall(db.dlq_list, db, { state = "pending", limit = 1 })
    local e = lok and type(rows) == "table" and rows[1]
    oldest = e and (tonumber(e.first_failed_at) or tonumber(e.last_failed_at))
  end
  if oldest then self.f.dlq_oldest:set(oldest, wf) else self.f.dlq_oldest:remove(wf) end
end

function R:collect()
  local now = self.now()
  if self.started_at and not self.finished then
    self.f.run_duration:set(now - self.started_at, self.workflow)
  end
  -- the store is read while the run holds it open, at most once a second
  if not self.finished and (not self.store_read_at or now - self.store_read_at >= 1) then
    self.store_read_at = now
    self:read_dead_letters()
  end
end

function R:set_status(status)
  for _, s in ipairs(M.RUN_STATUSES) do self.f.run_status:set(s == status and 1 or 0, self.workflow, s) end
end

function R:set_breaker(target, state)
  self.breakers[target] = state
  for _, s in ipairs(M.BREAKER_STATES) do self.f.breaker_state:set(s == state and 1 or 0, self.workflow, target, s) end
end

-- The duration of the request this task sent (its attempt event), when its outcome arrives:
-- the retry layer emits both on the task that sends, one request at a time.
function R:duration(ev, target)
  local co = coroutine.running() or self
  local s = self.sent[co]
  if not s then return end
  self.sent[co] = nil
  if s.op == ev.op and s.target == target and ev.t then
    self.f.duration:observe(math.max(ev.t - s.t, 0), self.workflow, target, ev.op or "?")
  end
end

function R:on_event(ev)
  local ty, f, wf = ev.type, self.f, self.workflow
  if ty == "attempt" then
    local target = target_label(ev.target)
    if not self.breakers[target] then self:set_breaker(target, "closed") end
    self.sent[coroutine.running() or self] = { t = ev.t or self.now(), op = ev.op, target = target }
  elseif ty == "success" then
    local target = target_label(ev.target)
    f.requests:inc(1, wf, target, ev.op or "?", "success")
    self:duration(ev, target)
  elseif ty == "failure" then
    local target, op, class = target_label(ev.target), ev.op or "?", ev.class or "unknown"
    f.requests:inc(1, wf, target, op, class)
    self:duration(ev, target)
    if ev.retry then
      f.retries:inc(1, wf, target, op, class, ev.rule or "")
    elseif ev.reason == "budget" then
      f.budget:inc(1, wf, target, op)
    end
  elseif ty == "give_up" then
    f.gave_up:inc(1, wf, target_label(ev.target), ev.op or "?", ev.class or "unknown")
  elseif ty == "adopted" then
    f.adopted:inc(1, wf, target_label(ev.target), ev.op or "?")
  elseif ty == "breaker" then
    local target = target_label(ev.target)
    f.breaker_transitions:inc(1, wf, target, ev.state)
    self:set_breaker(target, ev.state)
  elseif ty == "wait" then
    local s = math.abs(tonumber(ev.seconds) or 0)
    if ev.reason == "breaker" then
      f.breaker_wait:inc(s, wf, target_label(ev.target))
    elseif ev.reason == "rate_limit" or ev.reason == "rate_limit_reset" then
      f.rate_wait:inc(s, wf, target_label(ev.target))
    end
  elseif ty == "rate" then
    f.rate:set(math.max(tonumber(ev.rps) or 0, 0), wf, target_label(ev.target))
  elseif ty == "item" then
    f.items:inc(1, wf, ev.outcome or "done")
  elseif ty == "dead_letter" then
    f.dead_letters:inc(1, wf, ev.class or "unknown")
    self.store_read_at = nil -- the pending count changed: read it again at the next exposition
  elseif ty == "run_started" then
    self.started_at = self.now()
    f.run_start:set(ev.t or self.wall(), wf)
    f.run_duration:set(0, wf)
    self:set_status("running")
    self:read_dead_letters()
  elseif ty == "run_finished" then
    if self.started_at then f.run_duration:set(self.now() - self.started_at, wf) end
    self:read_dead_letters() -- the last read: the state file is closed after this
    self.finished = true
    self:set_status(ev.status)
    if M.SUCCESS[ev.status] then -- as the state file has it, so the next run exports the same value
      local ok, run = pcall(function() return self.db and self.db:run_get(self.run_id) end)
      local at = ok and type(run) == "table" and tonumber(run.finished_at)
      f.last_success:set(at or ev.t or self.wall(), wf)
    end
    self:write()
  end
end

-- Nothing is read or counted unless a way out was asked for (--metrics-textfile, --metrics-port),
-- or o.always: a run without them pays nothing.
function R:attach(stream)
  if not (self.path or self.port or self.always) then return self end
  self:read_last_success()
  self.unsubscribe = stream:subscribe(function(ev) self:on_event(ev) end,
    { "attempt", "success", "failure", "give_up", "adopted", "breaker", "wait", "rate", "item", "dead_letter",
      "run_started", "run_finished" })
  return self
end

function R:text() return self.reg:expose() end

-- Writes the textfile now; a failure is logged once, the run goes on.
function R:write()
  if not self.path then return true end
  local ok, err = metrics.write_atomic(self.path, self:text())
  if not ok and not self.write_failed then
    self.write_failed = true
    self.log.emit("warn", "cannot write the metrics textfile", { path = self.path, error = tostring(err) })
  elseif ok then
    self.write_failed = nil
  end
  return ok
end

function R:start()
  if not self.path then return self end
  self:write()
  scimrun.spawn(function()
    local next_at = self.now() + self.interval
    while not self.stopped do
      scimrun.sleep(math.min(0.25, math.max(next_at - self.now(), 0.001))) -- a stop ends the task in 0.25 s
      if not self.stopped and self.now() >= next_at then
        next_at = self.now() + self.interval
        self:write()
      end
    end
  end)
  return self
end

local function handle(self, req)
  local path = (req.path or "/"):gsub("%?.*$", "")
  if path ~= "/metrics" then
    return { status = 404, headers = { ["Content-Type"] = "text/plain; charset=utf-8" },
             body = "scimrun serves /metrics here\n" }
  end
  if req.method ~= "GET" and req.method ~= "HEAD" then
    return { status = 405, headers = { Allow = "GET, HEAD", ["Content-Type"] = "text/plain; charset=utf-8" },
             body = "GET /metrics\n" }
  end
  local body = self:text()
  return { status = 200, headers = { ["Content-Type"] = metrics.CONTENT_TYPE },
           body = req.method == "HEAD" and "" or body }
end
M.handle = handle

-- Serves /metrics on the loopback interface (only what runs on this machine can scrape it).
function R:listen()
  if self.port == nil then return true end
  local hs = require "scimrun.httpserver"
  local srv, err = hs.listen { host = "127.0.0.1", port = self.port,
                               handler = function(req) return handle(self, req) end }
  if not srv then return nil, ("--metrics-port %s: %s"):format(tostring(self.port), tostring(err)) end
  self.server = srv
  self.url = srv:url() .. "/metrics"
  io.stdout:write(("metrics: serving %s\n"):format(self.url))
  return true
end

function R:close()
  self.stopped = true
  if self.server then
    self.server:close()
    self.server = nil
  end
  if self.unsubscribe then self.unsubscribe() end
end

-- The textfile's directory exists (checked before anything is touched).
function M.check_textfile(o, cli)
  if o.metrics_textfile then
    local st = require("scimrun.fs").stat(o.metrics_textfile)
    if not st or st.type ~= "directory" then
      cli.fail("--metrics-textfile %s: no such directory (give the directory node_exporter's textfile collector "
        .. "reads, e.g. /var/lib/prometheus/node-exporter)", o.metrics_textfile)
    end
  end
end

-- The flag's syntax (the parser): a port number.
function M.check_options(o, cli)
  if o.metrics_port then
    local n = tonumber(o.metrics_port)
    if not n or n ~= n or n % 1 ~= 0 or n < 0 or n > 65535 then
      cli.fail("--metrics-port must be a port number from 0 to 65535 (0 picks a free one), got %s",
        tostring(o.metrics_port))
    end
    o.metrics_port = n
  end
end

return M
