-- `scimrun WORKFLOW.lua [options]`: loads the workflow, opens the state file, creates or resumes
-- the run, wires policy, sandbox and signals, runs it and reports. Exit codes (DESIGN.md):
-- 0 all succeeded, 1 run failed, 2 usage/configuration, 3 dead letters, 130 interrupted.
local cjson = require "cjson"
local workflow = require "scimrun.workflow"
local errors = require "scimrun.errors"
local runfiles = require "scimrun.cli.runfiles"
local report = require "scimrun.observe.report"

local M = {}

-- Every flag is declared once, in scimrun.cli.flags (help, man page and this parser share it).
function M.parse(argv, cli)
  local o, extra = require("scimrun.cli.flags").parse("run", argv, cli, 2)
  o.file = argv[1]
  if extra[1] then cli.fail("unexpected argument %s (see: scimrun help run)", extra[1]) end
  -- A whole number within [min, max), or nil: nan, inf and fractions are refused alike.
  local function whole(v, min, max)
    local n = tonumber(v)
    if n and n == n and n % 1 == 0 and n >= min and n < max then return n end
  end
  if o.concurrency then
    o.concurrency = whole(o.concurrency, 1, math.huge)
    if not o.concurrency then cli.fail("--concurrency must be a whole number >= 1") end
  end
  if o.allow_deletes then
    local given = o.allow_deletes
    o.allow_deletes = whole(given, 0, math.huge) -- inf would approve any deletion
    if not o.allow_deletes then
      cli.fail("--allow-deletes must be a whole number >= 0 (deletions approved), got %s", tostring(given))
    end
  end
  if o.seed then
    local given = o.seed
    o.seed = whole(given, -2 ^ 31 + 1, 2 ^ 31)
    if not o.seed then
      cli.fail("--seed must be a whole number (it makes the sandbox's faults and the jitter repeatable), got %s",
        tostring(given))
    end
  end
  require("scimrun.observe.run_metrics").check_options(o, cli) -- --metrics-port N
  if o.lease then
    local given = o.lease
    o.lease = tonumber(given)
    if not o.lease or o.lease ~= o.lease or o.lease < 1 or o.lease > 3600 then
      cli.fail("--lease must be a number of seconds from 1 to 3600, got %s", tostring(given))
    end
  end
  return o
end

-- Loads WORKFLOW.lua: syntax errors and files that do not return a workflow are usage errors.
function M.load_workflow(path, cli)
  local f = io.open(path, "r")
  if not f then cli.fail("cannot open workflow %s: no such file", path) end
  f:close()
  local chunk, err = loadfile(path)
  if not chunk then cli.fail("%s", errors.cite_file(err, path)) end
  local ok, def = pcall(chunk)
  if not ok then cli.fail("%s failed while loading: %s", path, errors.cite_file(def, path)) end
  if not workflow.is_workflow(def) then
    cli.fail("%s does not return a workflow: end the file with `return scimrun.workflow { name = ..., run = ... }`",
      path)
  end
  return def
end

local function open_store(path, durability, cli)
  local state = require "scimrun.state"
  if not state.is_postgres(path) then runfiles.ensure_parent_dir(path) end
  local db, err = state.open(path, { durability = durability or "full" })
  if not db then cli.fail("%s", err) end
  return db
end

local function policy_message(e)
  return tostring(type(e) == "table" and (e.message or e.detail) or e)
end

-- The policy of a resumed run: its snapshot, unless --policy names one (which then becomes
-- the run's snapshot). Runs recorded before snapshots existed get one now. Returns pol, snap.
-- The command-line layer of the policy (--retry-attempts ..., --set KEY=VALUE: lists of
-- overrides, in order) applied over pol; a bad value is exit 2 naming the flag.
local function with_flags(db, pol, cli, ...)
  local all = {}
  for _, list in ipairs { ... } do
    for _, ov in ipairs(list) do all[#all + 1] = ov end
  end
  local ok, res = pcall(require("scimrun.resilience.policy").apply_overrides, pol, all)
  if ok then return res end
  db:close()
  cli.fail("%s", policy_message(res))
end

local function resumed_policy(db, run, o, given, load_policy, cli)
  local snapshots = require "scimrun.resilience.policy_snapshot"
  local snap = snapshots.of_run(db, run)
  if given or not snap then
    local pol = given or load_policy(db)
    -- the run's flags stay over a policy given again; the flags given now go over them
    if snap and snap.overrides then pol = with_flags(db, pol, cli, snap.overrides, o.overrides) end
    local newsnap = snapshots.take(pol, o.policy and "--policy on resume" or "resume")
    if not snap or newsnap.sha256 ~= snap.sha256 then snapshots.save(db, run.id, newsnap) end
    if not snap then
      scimrun.log.emit("info", "policy: the run has no snapshot (recorded by an older scimrun); using this one",
        { run = run.id, policy = newsnap.file, sha256 = newsnap.sha256:sub(1, 12) })
    else
      scimrun.log.emit("info", "policy from --policy, replacing the run's snapshot",
        { run = run.id, policy = newsnap.file, sha256 = newsnap.sha256:sub(1, 12),
          snapshot = snap.sha256 and snap.sha256:sub(1, 12) })
    end
    return pol, newsnap
  end
  local ok, pol = pcall(snapshots.restore, snap)
  if not ok then
    db:close()
    cli.fail("run %s: %s", run.id, policy_message(pol))
  end
  scimrun.log.emit("info", "policy from the run's snapshot (give --policy to use another)",
    { run = run.id, policy = snap.file, sha256 = tostring(snap.sha256):sub(1, 12), taken = snap.reason })
  if #o.overrides > 0 then -- flags given on resume go over the snapshot and become the run's
    pol = with_flags(db, pol, cli, o.overrides)
    local newsnap = snapshots.take(pol, "flags on resume")
    if newsnap.sha256 ~= snap.sha256 then
      snapshots.save(db, run.id, newsnap)
      scimrun.log.emit("info", "policy flags given on resume, over the run's snapshot",
        { run = run.id, sha256 = newsnap.sha256:sub(1, 12), snapshot = tostring(snap.sha256):sub(1, 12) })
      snap = newsnap
    end
  end
  return pol, snap
end

-- ---- the phases of a run ---------------------------------------------------------------
-- M.main is their sequence; `r` carries what one phase hands to the next: the options (o), the
-- workflow (def, params), the state (db, run), the policy (pol, snap), and the run's parts.

-- Logging and verbosity from the flags; --check is a dry run that sends nothing at all (reads
-- included) and runs no item.
local function configure_output(r)
  local o = r.o
  if o.check then o.dry_run, o.progress = true, "never" end
  r.verbosity = o.verbosity or 0 -- --quiet -1, -v 1, -vv 2
  local level = o.log_level or (r.verbosity < 0 and "warn") or (r.verbosity >= 2 and "debug") or nil
  if o.log_format or level then scimrun.log.configure(o.log_format or "text", level) end
end

-- The workflow file, its parameters and the hashes a resume compares.
local function load_definition(r)
  local o, cli = r.o, r.cli
  r.wf_path = runfiles.absolute(o.file)
  r.def = M.load_workflow(o.file, cli)
  r.params = runfiles.resolve_params(r.def.params, o.params, r.wf_path, cli)
  r.wf_hash = runfiles.hash_file(r.wf_path)
  r.inputs = runfiles.input_hashes(r.params)
end

-- Everything the operator can get wrong is checked before the state file is touched, so a bad
-- policy or fault spec leaves no half-made run behind. A resumed run keeps the policy it ran
-- with (its snapshot, read once the run is found); a policy named on the command line, or that
-- of a new run, is loaded now.
local function check_configuration(r)
  local o, cli = r.o, r.cli
  r.pol_spec = o.policy or r.def.options.policy or "default"
  function r.load_policy(db)
    local pol_ok, p = pcall(require("scimrun.resilience.policy").load, r.pol_spec, { overrides = o.overrides })
    if pol_ok then return p end -- flags over the file
    if db then db:close() end
    cli.fail("%s", policy_message(p))
  end
  r.pol = (o.policy or not o.resume) and r.load_policy() or nil
  if o.sandbox and o.sandbox ~= "" then
    local fok, ferr = require("scimrun.sandbox.faults").parse(o.sandbox)
    if not fok then cli.fail("--sandbox=%s: %s", o.sandbox, tostring(ferr)) end
  end
end

-- The state file; a dry run writes nothing: a throwaway state, and a copy of the sandbox's
-- data to plan against.
local function open_state(r)
  local o, cli = r.o, r.cli
  r.state_path = require("scimrun.cli.common").state_path(o)
  r.postgres = require("scimrun.state").is_postgres(r.state_path)
  if r.postgres then -- refused even when --dry-run or --check opens no database: no password in a URL
    local field = require("scimrun.postgres.url").password_field(r.state_path)
    if field then
      cli.fail("--state: the URL holds a password (%s); give it in PGPASSWORD, ~/.pgpass or PGSERVICE instead", field)
    end
  end
  if o.worker and (not r.postgres or o.dry_run or o.check) then
    cli.fail("--worker needs --state postgres://... (the workers of a run share its state there) and "
      .. "cannot be combined with --dry-run or --check")
  end
  r.sandbox_data = require("scimrun.cli.common").sandbox_data(r.state_path)
  if r.postgres and o.sandbox and not o.dry_run then runfiles.ensure_parent_dir(r.sandbox_data) end
  if o.dry_run then
    r.dry_base = os.tmpname() -- created empty (mkstemp): reserves the name, removed at the end
    r.state_path = r.dry_base .. ".db"
    if o.sandbox and runfiles.exists(r.sandbox_data) then
      local copied, cerr = require("scimrun.fs").copyfile(r.sandbox_data, r.state_path .. ".sandbox.json")
      if not copied then cli.fail("--dry-run cannot copy the sandbox's data: %s", cerr) end
    end
    r.sandbox_data = r.state_path .. ".sandbox.json"
  end
  r.db = open_store(r.state_path, o.durability, cli)
end

-- --resume: the run to continue (nil: a new run; "done": nothing to do). The newest run of the
-- workflow decides: unfinished (or finished with dead letters, so replayed items continue) it
-- is resumed; completed, there is nothing to do; none at all, a new run starts, so
-- `until scimrun WF --resume; do ...; done` does the work once. An older unfinished run that a
-- newer one superseded is resumed by id only.
local function run_to_resume(r)
  local o, db = r.o, r.db
  if o.worker and not o.resume_id then
    -- a worker joins the newest unfinished run of the workflow, or starts it; the join lock
    -- (released once the run is recorded) makes workers starting together start one run
    local id = require("scimrun.worker.claims").lock_join(db, r.def.name)
    r.join_locked = true
    return id and db:run_get(id) or nil
  end
  if not o.resume then return nil end
  local run
  if o.resume_id then
    run = db:run_get(o.resume_id)
    if not run then
      db:close()
      r.cli.fail("no run %s in %s (see: scimrun runs list)", o.resume_id, r.state_path)
    end
  else
    run = db:runs_list { limit = 1, workflow_path = r.wf_path }[1]
    if not run then
      io.stdout:write(("no earlier run of %s in %s: starting a new run\n"):format(o.file, r.state_path))
    end
  end
  if run and run.status == "completed" then
    io.stdout:write(("run %s already completed; nothing to resume\n"):format(run.id))
    db:close()
    return "done"
  end
  return run
end

-- A resumed run keeps its workflow, input files (unless --force) and parameters.
local function check_resumable(r, run)
  local o, cli, db = r.o, r.cli, r.db
  -- Resuming a run with another workflow would run that workflow with the first one's
  -- parameters (offboarding with onboarding's list); --force only accepts a changed file of
  -- the same workflow.
  if run.workflow_name ~= r.def.name then
    db:close()
    cli.fail("refusing to resume %s with %s: that run belongs to workflow %q (%s), this file is workflow %q; "
      .. "resume it with its own file, or start a new run without --resume", run.id, o.file,
      tostring(run.workflow_name), tostring(run.workflow_path), tostring(r.def.name))
  end
  local changed = runfiles.changes(run, r.wf_hash, r.inputs)
  if #changed > 0 and not o.force then
    db:close()
    cli.fail("refusing to resume %s: %s changed since the run started; rerun without --resume for a new run, "
      .. "or add --force to resume anyway", run.id, table.concat(changed, ", "))
  end
  local recorded = cjson.decode(run.params_json)
  -- a --param that would change one is refused rather than silently ignored (a fix to the
  -- input is a new run, or dlq replay)
  for k in pairs(o.params) do
    if tostring(recorded[k]) ~= tostring(r.params[k]) then
      db:close()
      cli.fail("--param %s=%s cannot change run %s, which started with %s=%s; resume without it, or start "
        .. "a new run without --resume", k, tostring(o.params[k]), run.id, k, tostring(recorded[k]))
    end
  end
  r.params = recorded
end

-- The run: resumed (with its snapshot's policy) or created (with a snapshot of this one).
-- Returns false when there is nothing to resume.
local function find_or_create_run(r)
  local snapshots = require "scimrun.resilience.policy_snapshot"
  local run = run_to_resume(r)
  if run == "done" then return false end
  r.resumed = run ~= nil
  -- created here, and written by no other process (the state file's lock, or lock_run below)
  r.fresh_run = not r.resumed and not r.o.worker
  if run then
    check_resumable(r, run)
    r.pol, r.snap = resumed_policy(r.db, run, r.o, r.pol, r.load_policy, r.cli)
  else
    r.pol = r.pol or r.load_policy(r.db)
    r.snap = snapshots.take(r.pol, "start")
    run = { id = runfiles.new_run_id(), workflow_name = r.def.name, workflow_path = r.wf_path,
            workflow_hash = r.wf_hash, params_json = cjson.encode(r.params), inputs_json = cjson.encode(r.inputs),
            policy_json = snapshots.encode(r.snap) }
    local ok, err = r.db:run_create(run)
    if not ok then r.db:close(); r.cli.fail("cannot record the run in %s: %s", r.state_path, tostring(err)) end
  end
  r.run = run
  if r.join_locked then require("scimrun.worker.claims").unlock_join(r.db, r.def.name) end
  -- PostgreSQL without --worker: one process per run, as the state file's lock makes it for SQLite
  if r.postgres and not r.o.worker and r.db.lock_run then
    local locked, lerr = r.db:lock_run(run.id)
    if not locked then r.db:close(); r.cli.fail("%s", tostring(lerr)) end
  end
  r.db:run_set_status(run.id, "running")
  -- the run carries its policy (the snapshot): the command that resumes it need not name one
  r.resume_cmd = runfiles.resume_command(setmetatable({ policy = false }, { __index = r.o }), run.id)
  return true
end

-- A failure while starting a part: the run is recorded failed (exit 2), one line.
local function fail_start(r, fmt, ...)
  require("scimrun.signals").unwatch_all()
  r.db:run_set_status(r.run.id, "failed", 2)
  r.db:close()
  if r.mx then r.mx:close() end
  r.cli.fail(fmt, ...)
end

-- Metrics (--metrics-textfile DIR, --metrics-port N; a dry run writes no textfile: it would
-- report a run that did nothing as a success) and the embedded sandbox (--sandbox).
local function start_services(r)
  local o = r.o
  r.mx = require("scimrun.observe.run_metrics").new { workflow = r.def.name, db = r.db, run_id = r.run.id,
    workflow_path = r.wf_path, textfile = not o.dry_run and o.metrics_textfile or nil, port = o.metrics_port }
  local mok, merr = r.mx:listen()
  if not mok then fail_start(r, "%s", merr) end
  if o.sandbox and not o.check then
    local sandbox, serr = require("scimrun.sandbox").start {
      port = 0, faults = o.sandbox ~= "" and o.sandbox or nil, seed = o.seed or 1,
      persist = r.sandbox_data, token = os.getenv("SCIM_TOKEN"),
    }
    if not sandbox then fail_start(r, "cannot start the sandbox: %s", tostring(serr)) end
    r.sandbox = sandbox
    -- the process environment, so wf.env and scim.connect's token_env both see them
    scimrun.setenv("SCIM_BASE_URL", sandbox.url)
    scimrun.setenv("SCIM_TOKEN", sandbox.token)
    scimrun.log.add_secret(sandbox.token)
    io.stdout:write(("sandbox: SCIM 2.0 provider at %s (faults: %s)\n"):format(sandbox.url,
      o.sandbox ~= "" and o.sandbox or "none"))
  end
end

-- One stream of the run's facts (scimrun.engine.events): the retry layer and the engine emit; the
-- log, progress, metrics, console row, hooks, audit trail, diff, report and step history read
-- it. Then the retry layer, the run context every task inherits, and the engine.
local function wire(r)
  local o, db, run = r.o, r.db, r.run
  local stream = require("scimrun.engine.events").new()
  r.stream = stream
  local function enqueue(op) r.engine:enqueue(op) end -- the engine's group commit
  -- Progress: a status area on a terminal, a `progress` record every 10 s elsewhere (CI, cron,
  -- | tee), nothing with --quiet or --progress never. On a terminal the area counts the
  -- retries, so their per-attempt log lines need -v.
  local on_tty = scimrun.log.terminal() and not scimrun.log.is_json()
  local pmode = o.progress or "auto"
  if pmode == "never" or (r.verbosity < 0 and pmode ~= "always") then pmode = "off"
  elseif pmode == "always" or on_tty then pmode = "tty"
  else pmode = "lines" end
  r.progress = require("scimrun.observe.progress").new { stream = stream, mode = pmode, name = r.def.name,
    interval = tonumber(os.getenv("SCIMRUN_PROGRESS_INTERVAL")) or 10 }
  require("scimrun.observe.event_log").attach(stream, { answers = r.verbosity >= 2,
    retries = (pmode ~= "tty" or r.verbosity >= 1) and "info" or "debug" })
  -- A run this process created, that no other process writes, holds only the values saved here:
  -- they are kept in memory (until deleted: in-flight backoffs, the budget and breakers) and
  -- each SCIM call's deadline lookup reads no database.
  local saved = r.fresh_run and {} or nil
  r.ex = require("scimrun.resilience.retry").executor {
    policy = r.pol, seed = o.seed, events = stream, log = false,
    state = {
      load = function(key)
        local v
        if saved then v = saved[key] else v = db:kv_get(run.id, key) end
        return v and cjson.decode(v)
      end,
      save = function(key, value)
        -- budget, breaker and backoff deadlines ride on the next group commit (no transaction
        -- of their own); lost in a crash, they cost at most an early retry
        local json = value ~= nil and cjson.encode(value) or nil
        if saved then saved[key] = json end
        enqueue { op = "kv_put", key = key, value_json = json }
      end,
    },
  }
  r.mx:attach(stream)
  -- the run's progress and counts as a row of the state file, for scimrun ui (another process)
  require("scimrun.ui.record").attach(stream, { enqueue = enqueue, db = db, run_id = run.id,
    resumed = r.resumed, dry_run = o.dry_run,
    worker = o.worker and function() return r.worker and r.worker.id end or nil })
  -- the policy's on_event hooks (the policy in force: a SIGHUP reload applies to them too)
  r.hooks = require("scimrun.observe.hooks").attach(stream, function() return r.ex.policy end)
  local pol = r.pol
  scimrun.ctx().run = { executor = r.ex, dry_run = o.dry_run or nil, offline = o.check or nil,
                        timeouts = pol.timeouts, events = stream, -- the SCIM client's `write` events
                        max_members_per_patch = pol.scim and pol.scim.max_members_per_patch or nil,
                        max_lengths = pol.scim and pol.scim.max_lengths or nil } -- the preflight's limits
  -- Every write at a provider is kept in the state file's audit trail (scimrun.observe.audit, rows
  -- older than audit.retention_days pruned now) and, with --diff FILE, written as a JSON line
  -- with the attributes it changes, before -> after (scimrun.observe.diff; in a dry run: would change).
  require("scimrun.observe.audit").attach(stream, { dry_run = o.dry_run, enqueue = enqueue })
  if not o.dry_run then
    local pruned, perr = require("scimrun.observe.audit").prune(db, pol.audit and pol.audit.retention_days)
    if not pruned then scimrun.log.emit("warn", "could not prune the audit trail", { error = perr }) end
  end
  local derr
  r.diff, derr = require("scimrun.observe.diff").open(stream, { path = o.diff, run_id = run.id })
  if derr then fail_start(r, "%s", derr) end
  r.rep = report.new { path = o.report, run_id = run.id, workflow = r.def.name }
  stream:subscribe(function(ev) r.rep:item(ev.record) end, { "item" })
  require("scimrun.engine.step_history").attach(stream, enqueue)
  local def = r.def
  r.engine = workflow.engine {
    db = db, run_id = run.id, params = r.params, fresh_run = r.fresh_run,
    retry_failed = o.retry_failed, continue_on_error = o.continue_on_error or def.options.continue_on_error,
    concurrency = o.concurrency or def.options.concurrency,
    max_failed_items = def.options.max_failed_items,
    rollback_on_abort = o.rollback_on_abort or def.options.rollback_on_abort,
    on_item = function(rec) stream:emit { type = "item", record = rec, outcome = rec.outcome, status = rec.status } end,
    dead_letter = pol.dead_letter or {},
    step_timeout = pol.timeouts and pol.timeouts.step,
    executor = r.ex, allow_deletes = o.allow_deletes, dry_run = o.dry_run, check = o.check,
    check_command = runfiles.check_command(o),
    emit = function(ev) stream:emit(ev) end,
  }
  if o.worker then
    r.worker = require("scimrun.worker").new { db = db, run_id = run.id, lease = o.lease, executor = r.ex,
                                                retry_failed = o.retry_failed }
    r.engine.worker = r.worker
  end
  require("scimrun.core").at_turn_end(function() r.engine:flush() end)
end

-- SIGINT/SIGTERM: finish the steps in flight (a second signal, or the grace period, stops at
-- once, resumable); SIGHUP: re-read the policy's file, which becomes the run's snapshot.
-- Watched as soon as the run is recorded: a signal while the run is still starting (before
-- any step) stops it at once, resumable, with the same message.
local function watch_signals(r)
  local signals = require "scimrun.signals"
  local snapshots = require "scimrun.resilience.policy_snapshot"
  local interrupts = 0
  local function hard_stop()
    if r.progress then r.progress:stop() end
    if r.engine then r.engine:flush(true) end -- the run_status write below syncs it
    if r.worker then r.worker:stop() end -- its claims go back to the other workers at once
    r.db:apply { { op = "run_status", run_id = r.run.id, status = "interrupted", exit_code = 130 } }
    if r.stream then
      r.stream:emit { type = "run_finished", run_id = r.run.id, workflow = r.def.name, status = "interrupted",
                      exit_code = 130, t = scimrun.wall() }
    end
    io.stderr:write("scimrun: stopped; nothing is lost. Resume with:\n  " .. r.resume_cmd .. "\n")
    os.exit(130, true) -- close the state: the store and handles are released cleanly
  end
  local function on_stop(name)
    interrupts = interrupts + 1
    if interrupts > 1 or not r.engine then return hard_stop() end -- nothing in flight yet
    r.engine.stopping = true
    r.progress:stop() -- the status area is cleared before anything is said
    io.stderr:write(("\nscimrun: %s: finishing in-flight steps (signal again to stop at once)\n"):format(name))
    -- bounded wait: polled in short sleeps so a run that ends in time exits at once
    local deadline = scimrun.now() + (tonumber(os.getenv("SCIMRUN_STOP_GRACE")) or 30)
    while not r.finished and scimrun.now() < deadline do scimrun.sleep(0.1) end
    if not r.finished then return hard_stop() end
  end
  signals.watch("SIGINT", on_stop)
  signals.watch("SIGTERM", on_stop)
  -- a resumed run's snapshot names the file its policy came from
  local reload_spec = (r.resumed and not r.o.policy and r.snap and r.snap.file) or r.pol_spec
  signals.watch("SIGHUP", function()
    local load_policy = require("scimrun.resilience.policy").load
    local ok, newpol = pcall(load_policy, reload_spec, { overrides = r.snap and r.snap.overrides })
    if not ok then
      scimrun.log.emit("error", "policy reload refused; keeping the old one", { error = policy_message(newpol) })
      return
    end
    if not r.ex then -- still starting: the policy loaded at the start is the file's
      scimrun.log.emit("info", "policy reload ignored: the run is still starting")
      return
    end
    r.ex:set_policy(newpol)
    local newsnap = snapshots.take(newpol, "reload")
    if newsnap.sha256 ~= (r.snap and r.snap.sha256) then
      snapshots.save(r.db, r.run.id, newsnap)
      r.snap = newsnap
    end
    scimrun.log.emit("info", "policy reloaded", { policy = reload_spec, sha256 = newsnap.sha256:sub(1, 12) })
  end)
end

-- The workflow's run function; --rollback-on-abort undoes completed sagas of a failed run
-- (not of an interrupted one, or one stopped by a rejected token: they stay resumable).
local function execute(r)
  r.stream:emit { type = "run_started", run_id = r.run.id, workflow = r.def.name, resumed = r.resumed or false,
                  t = scimrun.wall() }
  r.mx:start()
  r.started = scimrun.now()
  r.progress:start()
  if r.worker then r.worker:start() end
  local engine = r.engine
  local ok, err = pcall(r.def.run, engine:context(r.def), r.params)
  if not ok and engine.rollback_on_abort then
    local e = errors.normalize(err)
    if not errors.no_verdict(e) then
      local rok, rerr = pcall(engine.rollback_completed, engine, e)
      if not rok then err = rerr end
    end
  end
  r.finished = true
  r.progress:stop()
  engine:settle() -- nothing queued and no sync under way when the store closes
  if r.worker then r.worker:stop() end
  r.err = not ok and errors.normalize(err) or nil
end

-- The run's status and exit code, recorded; the end of the run as a fact of the stream (the
-- textfile's last write, the on_event hook).
-- A worker's verdict is the run's, not only its own items': an item another worker failed
-- (without --continue-on-error) fails the run here too, as replaying its failure would.
local function worker_failures(r)
  local failed = r.worker and not r.err and r.worker:failed_items() or 0
  if failed > 0 and not (r.o.continue_on_error or r.def.options.continue_on_error) then
    r.err = errors.new { class = "permanent",
      detail = ("%d item(s) of the run failed (in this worker or another)"):format(failed),
      suggest = "see them with scimrun runs show " .. r.run.id .. "; fix the cause, then resume the workers "
        .. "with --retry-failed" }
  end
  return failed
end

local function settle(r)
  local failed_elsewhere = worker_failures(r)
  local err, engine = r.err, r.engine
  r.pending_dlq = r.db:dlq_count { state = "pending", run_id = r.run.id } or 0
  if err and err.class == "interrupted" then r.status, r.code = "interrupted", 130
  elseif err then
    r.status = "failed"
    r.code = (err.class == "usage" or err.class == "config" or err.class == "input") and 2 or 1
  elseif r.pending_dlq > 0 or engine.stats.failed > 0 or failed_elsewhere > 0 then
    r.status, r.code = "completed_with_dead_letters", 3
  else r.status, r.code = "completed", 0 end
  r.db:run_set_status(r.run.id, r.status, r.code)
  r.summary = report.summary(engine.stats, r.ex, scimrun.now() - r.started)
  r.stream:emit { type = "run_finished", run_id = r.run.id, workflow = r.def.name, status = r.status,
                  exit_code = r.code, elapsed = r.summary.elapsed, pending_dead_letters = r.pending_dlq,
                  summary = r.summary, error = err and errors.persistable(err) or nil, t = scimrun.wall() }
  r.hooks:drain(10) -- posts the hooks started (a chat message) are sent before the process ends
end

local function close_all(r)
  if r.diff then r.diff:close() end
  require("scimrun.signals").unwatch_all()
  require("scimrun.core").at_turn_end(nil)
  if r.sandbox then r.sandbox.close() end
  r.mx:close()
  r.db:close()
  if r.o.dry_run then
    for _, suffix in ipairs { "", "-wal", "-shm", ".lock", ".sandbox.json", ".sandbox.json.tmp" } do
      os.remove(r.state_path .. suffix)
    end
    os.remove(r.dry_base)
  end
end

-- What the operator reads: --check's bad rows; a configuration mistake in one line (exit 2);
-- else the summary, the report file and the diff's path.
local function report_outcome(r)
  local o, err = r.o, r.err
  if o.check and r.code ~= 2 then
    close_all(r)
    return report.print_check(io.stdout, r.engine.check_results, err)
  end
  if r.code == 2 then
    close_all(r)
    r.cli.fail("%s%s", errors.cite_file(err.detail or tostring(err), r.wf_path),
      err.suggest and ("; " .. err.suggest) or "")
  end
  r.rep:finish { status = r.status, exit_code = r.code, summary = r.summary, error = err and errors.persistable(err) }
  local scim = require "scimrun.scim"
  report.print(io.stdout, { run_id = r.run.id, status = r.status, summary = r.summary, err = err,
    pending_dlq = r.pending_dlq, resume_cmd = r.resume_cmd, dry_run = o.dry_run,
    planned = o.dry_run and scim.planned_all and scim.planned_all() or nil, state = r.state_path })
  if r.diff then
    io.stdout:write(("diff: %d write(s) %s, attributes before -> after, in %s\n")
      :format(r.diff.count, o.dry_run and "planned" or "made", r.diff.path))
  end
  close_all(r)
  return r.code
end

function M.main(argv, cli)
  local r = { o = M.parse(argv, cli), cli = cli }
  require("scimrun.observe.run_metrics").check_textfile(r.o, cli) -- its directory exists
  configure_output(r)
  load_definition(r)
  check_configuration(r)
  open_state(r)
  if not find_or_create_run(r) then return 0 end -- --resume of a completed run
  watch_signals(r)
  start_services(r)
  wire(r)
  execute(r)
  settle(r)
  return report_outcome(r)
end

return M
