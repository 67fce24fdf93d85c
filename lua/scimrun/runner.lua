-- `scimrun WORKFLOW.lua [options]`: loads the workflow, opens the state file, creates or resumes
-- the run, wires policy, sandbox and signals, runs it and reports. Exit codes (DESIGN.md):
-- 0 all succeeded, 1 run failed, 2 usage/configuration, 3 dead letters, 130 interrupted.
local cjson = require "cjson"
local workflow = require "scimrun.workflow"
local errors = require "scimrun.errors"
local runfiles = require "scimrun.runfiles"
local report = require "scimrun.report"

local M = {}

-- Every flag is declared once, in scimrun.cli_flags (help, man page and this parser share it).
function M.parse(argv, cli)
  local o, extra = require("scimrun.cli_flags").parse("run", argv, cli, 2)
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
  require("scimrun.run_metrics").check_options(o, cli) -- --metrics-port N
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
  local store = require "scimrun.store"
  runfiles.ensure_parent_dir(path)
  local db, err = store.open(path, { durability = durability or "full" })
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
  local ok, res = pcall(require("scimrun.policy").apply_overrides, pol, all)
  if ok then return res end
  db:close()
  cli.fail("%s", policy_message(res))
end

local function resumed_policy(db, run, o, given, load_policy, cli)
  local snapshots = require "scimrun.policy_snapshot"
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

function M.main(argv, cli)
  local o = M.parse(argv, cli)
  require("scimrun.run_metrics").check_textfile(o, cli) -- its directory exists
  -- --check: a dry run that sends nothing at all (reads included) and runs no item; wf:each
  -- reads its input whole and the bad rows are the result
  if o.check then o.dry_run, o.progress = true, "never" end
  local verbosity = o.verbosity or 0 -- --quiet -1, -v 1, -vv 2
  local level = o.log_level or (verbosity < 0 and "warn") or (verbosity >= 2 and "debug") or nil
  if o.log_format or level then scimrun.log.configure(o.log_format or "text", level) end
  local wf_path = runfiles.absolute(o.file)
  local def = M.load_workflow(o.file, cli)
  local params = runfiles.resolve_params(def.params, o.params, wf_path, cli)
  local wf_hash = runfiles.hash_file(wf_path)
  local inputs = runfiles.input_hashes(params)

  -- Everything the operator can get wrong is checked before the state file is touched, so a
  -- bad policy or fault spec leaves no half-made run behind.
  -- A resumed run keeps the policy it ran with (its snapshot, read once the run is found);
  -- a policy named on the command line, or that of a new run, is loaded now.
  local policy_mod = require "scimrun.policy"
  local snapshots = require "scimrun.policy_snapshot"
  local pol_spec = o.policy or def.options.policy or "default"
  local function load_policy(db)
    local pol_ok, p = pcall(policy_mod.load, pol_spec, { overrides = o.overrides }) -- flags over the file
    if pol_ok then return p end
    if db then db:close() end
    cli.fail("%s", policy_message(p))
  end
  local pol = (o.policy or not o.resume) and load_policy() or nil
  if o.sandbox and o.sandbox ~= "" then
    local fok, ferr = require("scimrun.sandbox.faults").parse(o.sandbox)
    if not fok then cli.fail("--sandbox=%s: %s", o.sandbox, tostring(ferr)) end
  end

  local state_path = o.state or os.getenv("SCIMRUN_STATE") or ".scimrun/state.db"
  local dry_base
  local sandbox_data = state_path .. ".sandbox.json"
  if o.dry_run then
    -- a dry run writes nothing: a throwaway state, and a copy of the sandbox's data to plan against
    dry_base = os.tmpname() -- created empty (mkstemp): reserves the name, removed at the end
    state_path = dry_base .. ".db"
    if o.sandbox and runfiles.exists(sandbox_data) then
      local copied, cerr = require("scimrun.fs").copyfile(sandbox_data, state_path .. ".sandbox.json")
      if not copied then cli.fail("--dry-run cannot copy the sandbox's data: %s", cerr) end
    end
    sandbox_data = state_path .. ".sandbox.json"
  end
  local db = open_store(state_path, o.durability, cli)

  local run, resumed, snap
  if o.resume then
    if o.resume_id then
      run = db:run_get(o.resume_id)
      if not run then
        db:close()
        cli.fail("no run %s in %s (see: scimrun runs list)", o.resume_id, state_path)
      end
    else
      -- The newest run of the workflow decides: unfinished (or finished with dead letters, so
      -- replayed items continue) it is resumed; completed, there is nothing to do; none at
      -- all, a new run starts, so `until scimrun WF --resume; do ...; done` does the work once.
      -- An older unfinished run that a newer one superseded is resumed by id only.
      run = db:runs_list { limit = 1, workflow_path = wf_path }[1]
      if not run then
        io.stdout:write(("no earlier run of %s in %s: starting a new run\n"):format(o.file, state_path))
      end
    end
    if run and run.status == "completed" then
      io.stdout:write(("run %s already completed; nothing to resume\n"):format(run.id))
      db:close()
      return 0
    end
    resumed = run ~= nil
  end
  if resumed then
    -- A run belongs to its workflow: resuming it with another one would run that workflow with
    -- the first one's parameters (offboarding with onboarding's list). --force does not
    -- override this; it only accepts a changed file of the same workflow.
    if run.workflow_name ~= def.name then
      db:close()
      cli.fail("refusing to resume %s with %s: that run belongs to workflow %q (%s), this file is workflow %q; "
        .. "resume it with its own file, or start a new run without --resume", run.id, o.file,
        tostring(run.workflow_name), tostring(run.workflow_path), tostring(def.name))
    end
    local changed = runfiles.changes(run, wf_hash, inputs)
    if #changed > 0 and not o.force then
      db:close()
      cli.fail("refusing to resume %s: %s changed since the run started; rerun without --resume for a new run, "
        .. "or add --force to resume anyway", run.id, table.concat(changed, ", "))
    end
    local recorded = cjson.decode(run.params_json)
    -- A resumed run keeps the parameters it started with: a --param that would change one is
    -- refused rather than silently ignored (a fix to the input is a new run, or dlq replay).
    for k in pairs(o.params) do
      if tostring(recorded[k]) ~= tostring(params[k]) then
        db:close()
        cli.fail("--param %s=%s cannot change run %s, which started with %s=%s; resume without it, or start "
          .. "a new run without --resume", k, tostring(o.params[k]), run.id, k, tostring(recorded[k]))
      end
    end
    params = recorded
    pol, snap = resumed_policy(db, run, o, pol, load_policy, cli)
  else
    pol = pol or load_policy(db)
    snap = snapshots.take(pol, "start")
    run = { id = runfiles.new_run_id(), workflow_name = def.name, workflow_path = wf_path,
            workflow_hash = wf_hash, params_json = cjson.encode(params), inputs_json = cjson.encode(inputs),
            policy_json = snapshots.encode(snap) }
    local ok, err = db:run_create(run)
    if not ok then db:close(); cli.fail("cannot record the run in %s: %s", state_path, tostring(err)) end
  end
  db:run_set_status(run.id, "running")

  -- Metrics (--metrics-textfile DIR, --metrics-port N): a reader of the event stream below. A
  -- dry run writes no textfile (it would report a run that did nothing as a success).
  local mx = require("scimrun.run_metrics").new { workflow = def.name, db = db, run_id = run.id,
    workflow_path = wf_path, textfile = not o.dry_run and o.metrics_textfile or nil, port = o.metrics_port }
  local mok, merr = mx:listen()
  if not mok then
    db:run_set_status(run.id, "failed", 2)
    db:close()
    cli.fail("%s", merr)
  end

  local sandbox
  if o.sandbox and not o.check then
    local serr
    sandbox, serr = require("scimrun.sandbox").start {
      port = 0, faults = o.sandbox ~= "" and o.sandbox or nil, seed = o.seed or 1,
      persist = sandbox_data, token = os.getenv("SCIM_TOKEN"),
    }
    if not sandbox then
      db:run_set_status(run.id, "failed", 2)
      db:close()
      mx:close()
      cli.fail("cannot start the sandbox: %s", tostring(serr))
    end
    -- the process environment, so wf.env and scim.connect's token_env both see them
    scimrun.setenv("SCIM_BASE_URL", sandbox.url)
    scimrun.setenv("SCIM_TOKEN", sandbox.token)
    scimrun.log.add_secret(sandbox.token)
    io.stdout:write(("sandbox: SCIM 2.0 provider at %s (faults: %s)\n"):format(sandbox.url,
      o.sandbox ~= "" and o.sandbox or "none"))
  end

  -- One stream of the run's facts (scimrun.events): the retry layer and the engine emit, the
  -- report and the summary's counters read it.
  local stream = require("scimrun.events").new()
  -- Progress: a status area on a terminal, a `progress` record every 10 s elsewhere (CI, cron,
  -- | tee), nothing with --quiet or --progress never. On a terminal the area counts the
  -- retries, so their per-attempt log lines need -v.
  local on_tty = scimrun.log.terminal() and not scimrun.log.is_json()
  local pmode = o.progress or "auto"
  if pmode == "never" or (verbosity < 0 and pmode ~= "always") then pmode = "off"
  elseif pmode == "always" or on_tty then pmode = "tty"
  else pmode = "lines" end
  local progress = require("scimrun.progress").new { stream = stream, mode = pmode, name = def.name,
    interval = tonumber(os.getenv("SCIMRUN_PROGRESS_INTERVAL")) or 10 }
  require("scimrun.event_log").attach(stream, { retries = (pmode ~= "tty" or verbosity >= 1) and "info" or "debug",
                                               answers = verbosity >= 2 })
  local engine -- below; the retry layer's state goes through its group commit
  local ex = require("scimrun.retry").executor {
    policy = pol, seed = o.seed, events = stream, log = false,
    state = {
      load = function(key) local v = db:kv_get(run.id, key); return v and cjson.decode(v) end,
      save = function(key, value)
        -- budget, breaker and backoff deadlines ride on the next group commit (no transaction
        -- of their own); lost in a crash, they cost at most an early retry
        local json = value ~= nil and cjson.encode(value) or nil -- nil deletes the key
        engine:enqueue { op = "kv_put", key = key, value_json = json }
      end,
    },
  }
  mx:attach(stream)
  -- the run's progress and counts as a row of the state file, for scimrun ui (another process)
  require("scimrun.ui.record").attach(stream, { enqueue = function(op) engine:enqueue(op) end, db = db,
                                                run_id = run.id, resumed = resumed, dry_run = o.dry_run })
  -- the policy's on_event hooks (the policy in force: a SIGHUP reload applies to them too)
  local hooks = require("scimrun.hooks").attach(stream, function() return ex.policy end)
  local scim = require "scimrun.scim"
  -- The run context every task of this run inherits (scimrun.ctx): what scim.connect needs.
  scimrun.ctx().run = { executor = ex, dry_run = o.dry_run or nil, offline = o.check or nil, timeouts = pol.timeouts,
                        max_members_per_patch = pol.scim and pol.scim.max_members_per_patch or nil,
                        events = stream } -- the SCIM client's `write` events: the diff and the audit trail
  -- Every write at a provider is kept in the state file's audit trail (scimrun.audit, rows
  -- older than audit.retention_days pruned now) and, with --diff FILE, written as a JSON line
  -- with the attributes it changes, before -> after (scimrun.diff; in a dry run: would change).
  require("scimrun.audit").attach(stream, { dry_run = o.dry_run, enqueue = function(op) engine:enqueue(op) end })
  if not o.dry_run then
    local pruned, perr = require("scimrun.audit").prune(db, pol.audit and pol.audit.retention_days)
    if not pruned then scimrun.log.emit("warn", "could not prune the audit trail", { error = perr }) end
  end
  local diff, derr = require("scimrun.diff").open(stream, { path = o.diff, run_id = run.id })
  if derr then
    db:run_set_status(run.id, "failed", 2)
    db:close()
    cli.fail("%s", derr)
  end

  local dl = pol.dead_letter or {}
  local rep = report.new { path = o.report, run_id = run.id, workflow = def.name }
  stream:subscribe(function(ev) if ev.type == "item" then rep:item(ev.record) end end)
  -- The attempts, failures and waits of a step that ran into trouble are kept with the group
  -- commit, so a failed item's history can be shown later (dlq show). A step whose attempts all
  -- went through writes nothing: its events wait in the step until the first failure, not on
  -- the hot path of every request. Events hold no secret: no headers, no bodies.
  local HISTORY = { attempt = true, failure = true, success = true, give_up = true, adopted = true }
  local function keep(step, ev) engine:enqueue { op = "event_add", key = step.key, event_json = cjson.encode(ev) } end
  stream:subscribe(function(ev)
    local step = (HISTORY[ev.type] or (ev.type == "wait" and ev.reason == "breaker")) and scimrun.ctx().step
    if not step then return end
    if step.troubled then return keep(step, ev) end
    if ev.type == "attempt" or ev.type == "success" then
      step.held = step.held or {}
      step.held[#step.held + 1] = ev
      return
    end
    step.troubled = true -- the first trouble: what led to it is kept too
    for _, held in ipairs(step.held or {}) do keep(step, held) end
    step.held = nil
    keep(step, ev)
  end)
  engine = workflow.engine {
    db = db, run_id = run.id, params = params,
    retry_failed = o.retry_failed, continue_on_error = o.continue_on_error or def.options.continue_on_error,
    concurrency = o.concurrency or def.options.concurrency,
    max_failed_items = def.options.max_failed_items,
    rollback_on_abort = o.rollback_on_abort or def.options.rollback_on_abort,
    on_item = function(rec) stream:emit { type = "item", record = rec, outcome = rec.outcome, status = rec.status } end,
    dead_letter = dl,
    step_timeout = pol.timeouts and pol.timeouts.step,
    executor = ex, allow_deletes = o.allow_deletes, dry_run = o.dry_run, check = o.check,
    check_command = runfiles.check_command(o),
    emit = function(ev) stream:emit(ev) end,
  }
  -- the run carries its policy (the snapshot): the command that resumes it need not name one
  local resume_cmd = runfiles.resume_command(setmetatable({ policy = false }, { __index = o }), run.id)
  require("scimrun.core").at_turn_end(function() engine:flush() end)
  local signals = require "scimrun.signals"
  local interrupts, finished = 0, false
  local function hard_stop()
    progress:stop()
    engine:flush()
    db:apply { { op = "run_status", run_id = run.id, status = "interrupted", exit_code = 130 } }
    stream:emit { type = "run_finished", run_id = run.id, workflow = def.name, status = "interrupted",
                  exit_code = 130, t = scimrun.wall() }
    io.stderr:write("scimrun: stopped; nothing is lost. Resume with:\n  " .. resume_cmd .. "\n")
    os.exit(130, true) -- close the state: the store and handles are released cleanly
  end
  local function on_stop(name)
    interrupts = interrupts + 1
    if interrupts > 1 then return hard_stop() end
    engine.stopping = true
    progress:stop() -- the status area is cleared before anything is said
    io.stderr:write(("\nscimrun: %s: finishing in-flight steps (signal again to stop at once)\n"):format(name))
    -- bounded wait: polled in short sleeps so a run that ends in time exits at once
    local deadline = scimrun.now() + (tonumber(os.getenv("SCIMRUN_STOP_GRACE")) or 30)
    while not finished and scimrun.now() < deadline do scimrun.sleep(0.1) end
    if not finished then return hard_stop() end
  end
  signals.watch("SIGINT", on_stop)
  signals.watch("SIGTERM", on_stop)
  -- SIGHUP re-reads the file the run's policy came from (a resumed run's snapshot names it);
  -- what it loads becomes the run's snapshot, so a later --resume continues with it.
  local reload_spec = (resumed and not o.policy and snap and snap.file) or pol_spec
  signals.watch("SIGHUP", function()
    local ok, newpol = pcall(policy_mod.load, reload_spec, { overrides = snap and snap.overrides })
    if not ok then
      scimrun.log.emit("error", "policy reload refused; keeping the old one", { error = policy_message(newpol) })
      return
    end
    ex:set_policy(newpol)
    local newsnap = snapshots.take(newpol, "reload")
    if newsnap.sha256 ~= (snap and snap.sha256) then
      snapshots.save(db, run.id, newsnap)
      snap = newsnap
    end
    scimrun.log.emit("info", "policy reloaded", { policy = reload_spec, sha256 = newsnap.sha256:sub(1, 12) })
  end)

  stream:emit { type = "run_started", run_id = run.id, workflow = def.name, resumed = resumed or false,
                t = scimrun.wall() }
  mx:start()
  local started = scimrun.now()
  progress:start()
  local wf = engine:context(def)
  local ok, err = pcall(def.run, wf, params)
  if not ok and engine.rollback_on_abort then
    local e = errors.normalize(err)
    -- an interrupted run, or one stopped by a rejected token, stays resumable
    if e.class ~= "interrupted" and e.class ~= "store" and e.class ~= "auth" then
      local rok, rerr = pcall(engine.rollback_completed, engine, e)
      if not rok then err = rerr end
    end
  end
  finished = true
  progress:stop()
  engine:flush()
  err = not ok and errors.normalize(err) or nil

  local pending_dlq = db:dlq_count { state = "pending", run_id = run.id } or 0
  local status, code
  if err and err.class == "interrupted" then status, code = "interrupted", 130
  elseif err then
    status = "failed"
    code = (err.class == "usage" or err.class == "config" or err.class == "input") and 2 or 1
  elseif pending_dlq > 0 or engine.stats.failed > 0 then status, code = "completed_with_dead_letters", 3
  else status, code = "completed", 0 end
  db:run_set_status(run.id, status, code)
  local summary = report.summary(engine.stats, ex, scimrun.now() - started)
  -- the end of the run as a fact of the stream: the textfile's last write, the on_event hook
  stream:emit { type = "run_finished", run_id = run.id, workflow = def.name, status = status, exit_code = code,
                elapsed = summary.elapsed, pending_dead_letters = pending_dlq, summary = summary,
                error = err and errors.persistable(err) or nil, t = scimrun.wall() }
  hooks:drain(10) -- posts the hooks started (a chat message) are sent before the process ends

  local function close_all()
    if diff then diff:close() end
    signals.unwatch_all()
    require("scimrun.core").at_turn_end(nil)
    if sandbox then sandbox.close() end
    mx:close()
    db:close()
    if o.dry_run then
      for _, suffix in ipairs { "", "-wal", "-shm", ".lock", ".sandbox.json", ".sandbox.json.tmp" } do
        os.remove(state_path .. suffix)
      end
      os.remove(dry_base)
    end
  end
  if o.check and code ~= 2 then
    close_all()
    return report.print_check(io.stdout, engine.check_results, err)
  end
  if code == 2 then -- a mistake in the workflow or its configuration: one line, no summary
    db:run_set_status(run.id, status, code)
    close_all()
    cli.fail("%s%s", errors.cite_file(err.detail or tostring(err), wf_path),
      err.suggest and ("; " .. err.suggest) or "")
  end
  rep:finish { status = status, exit_code = code, summary = summary, error = err and errors.persistable(err) }
  report.print(io.stdout, { run_id = run.id, status = status, summary = summary, err = err,
    pending_dlq = pending_dlq, resume_cmd = resume_cmd, dry_run = o.dry_run,
    planned = o.dry_run and scim.planned_all and scim.planned_all() or nil, state = state_path })
  if diff then
    io.stdout:write(("diff: %d write(s) %s, attributes before -> after, in %s\n")
      :format(diff.count, o.dry_run and "planned" or "made", diff.path))
  end

  close_all()
  return code
end

return M
