-- `scimrun dlq list|show|replay|drop`: the dead-letter queue, for a person to inspect, fix and
-- replay. Replay re-sends the recorded request with the current credentials and the policy
-- given by --policy (default: "default"; "original": the run's own policy snapshot); on
-- success the entry is marked replayed and the response becomes the step's result, so a later
-- `--resume` continues that item from its next step.
local cjson = require "cjson"
local common = require "scimrun.cli.common"
local flags = require "scimrun.cli.flags"
local errors = require "scimrun.errors"

local M = {}

local function is_comp(e) return e.is_compensation == 1 or e.is_compensation == true end

local ROLLED_BACK = "(item rolled back) "

-- quoted: the printed commands are pasted into a shell, and a postgres:// URL's '&' would end
-- the command there (it ran in the background against the default port)
local function state_opt(o)
  local p = common.state_path(o)
  return p ~= ".scimrun/state.db" and (" --state " .. common.shell_quote(p)) or ""
end

local function show_line(e)
  local class = (e.class or "?") .. (e.status and ("/" .. e.status) or "")
    .. (e.scim_type and ("/" .. e.scim_type) or "")
  return ("%-5d %-9s %-28s %-18s %-26s %s"):format(e.id, e.state, (is_comp(e) and "COMPENSATION " or "")
    .. (e.step_key or "?"), e.operation or "?", class, (e.last_error or ""):sub(1, 100))
end

local function list(db, o)
  local entries = db:dlq_list { run_id = o.run, state = o.state_filter }
  if o.json then io.stdout:write(cjson.encode(entries), "\n"); return 0 end
  if #entries == 0 then io.stdout:write("dead-letter queue is empty\n"); return 0 end
  io.stdout:write(("%-5s %-9s %-28s %-18s %-26s %s\n"):format("ID", "STATE", "STEP", "OPERATION", "CLASS", "ERROR"))
  local pending = 0
  for _, e in ipairs(entries) do
    io.stdout:write(show_line(e), "\n")
    if e.state == "pending" then pending = pending + 1 end
    local todo = errors.with_id(e.suggest or errors.builtin_suggestion(e), e.id)
    if todo then io.stdout:write("      what to do: ", todo, "\n") end
  end
  if pending > 0 then
    io.stdout:write(("%d pending. Details: scimrun dlq show ID%s   after fixing the cause: scimrun dlq replay "
      .. "ID|--all%s   discard: scimrun dlq drop ID%s\n"):format(pending, state_opt(o), state_opt(o), state_opt(o)))
  end
  return 0
end

local function show(db, id, o, cli)
  local e = db:dlq_get(tonumber(id) or cli.fail("dlq show needs a numeric ID"))
  if not e then cli.fail("no dead letter %s (see: scimrun dlq list)", id) end
  if o.json then io.stdout:write(cjson.encode(e), "\n"); return 0 end
  local fields = { "id", "state", "run_id", "step_key", "operation", "method", "url", "class", "status", "scim_type",
    "rule", "attempts" }
  for _, k in ipairs(fields) do
    if e[k] ~= nil then io.stdout:write(("%-14s %s\n"):format(k, tostring(e[k]))) end
  end
  if is_comp(e) then
    io.stdout:write("COMPENSATION   this entry is a failed rollback: the target may hold half-done work\n")
  end
  io.stdout:write(("%-14s %s\n"):format("first failed", common.time(e.first_failed_at)))
  io.stdout:write(("%-14s %s\n"):format("last failed", common.time(e.last_failed_at)))
  io.stdout:write(("%-14s %s\n"):format("error", e.last_error or "?"))
  local todo = errors.with_id(e.suggest or errors.builtin_suggestion(e), e.id)
  if todo then io.stdout:write(("%-14s %s\n"):format("what to do", todo)) end
  -- every attempt of the step, as the retry layer recorded it (events.lua, store step_events)
  local history = e.run_id and e.step_key and db.step_events and db:step_events(e.run_id, e.step_key) or {}
  if #history > 0 then
    io.stdout:write("attempts\n")
    local t0 = history[1].at
    for _, h in ipairs(history) do
      local ok, ev = pcall(cjson.decode, h.event_json)
      if ok and type(ev) == "table" then
        local what = ev.status and ("HTTP " .. tostring(ev.status)) or ev.kind or ""
        local line
        if ev.type == "attempt" then line = ("attempt %s %s"):format(tostring(ev.attempt), tostring(ev.op))
        elseif ev.type == "failure" then
          local next_step = ev.retry and ("retry in %.3fs (%s)"):format(ev.delay or 0, tostring(ev.why))
            or ("gave up: " .. tostring(ev.why))
          line = ("  failed %s: %s [rule %s] %s"):format(what, tostring(ev.class), tostring(ev.rule), next_step)
        elseif ev.type == "success" then line = "  succeeded"
        elseif ev.type == "give_up" and ev.class == "circuit_open" then line = "  circuit open: " .. tostring(ev.why)
        elseif ev.type == "wait" then line = ("  waited %.3fs (%s)"):format(ev.seconds or 0, tostring(ev.reason))
        elseif ev.type == "adopted" then line = "  found on the target: adopted"
        end
        if line then io.stdout:write(("  +%7.3fs %s\n"):format(h.at - t0, line)) end
      end
    end
  end
  if e.request_body then
    local ok, decoded = pcall(cjson.decode, e.request_body)
    io.stdout:write("payload\n  ", ok and cjson.encode(decoded) or e.request_body, "\n")
  else
    io.stdout:write("payload        (none recorded)\n")
  end
  if e.state == "pending" then
    io.stdout:write(("replay with: scimrun dlq replay %d%s   drop with: scimrun dlq drop %d%s\n"):format(e.id,
      state_opt(o), e.id, state_opt(o)))
  end
  return 0
end

-- Why an entry cannot be replayed by re-sending its request, or nil.
local function not_replayable(e)
  if (e.last_error or ""):sub(1, #ROLLED_BACK) == ROLLED_BACK then
    return "its item was rolled back by its saga; replaying one request would leave it half-done. Fix the cause, "
      .. "then run the workflow again (or drop the entry)"
  end
  if not e.url or not e.method then
    return "the failure was not an HTTP request (nothing to re-send). Fix the cause, then resume the run with "
      .. "--retry-failed, or drop the entry"
  end
  return nil
end

local function replay_one(db, e, ex, token, base_rewrite)
  local why = not_replayable(e)
  if why then return nil, { class = "not_replayable", detail = why } end
  local http = require "scimrun.http"
  local url = e.url
  if base_rewrite then url = url:gsub("^http://127%.0%.0%.1:%d+/scim/v2", base_rewrite) end
  local headers = { ["Content-Type"] = "application/scim+json", Accept = "application/scim+json",
    ["User-Agent"] = "scimrun/" .. scimrun.version }
  if token then headers.Authorization = "Bearer " .. token end
  local target = url:match("^%a+://([^/]+)") or "default"
  local res, err = ex:run(e.operation or "dlq.replay", target, function()
    local r, tmsg, tkind = http.request { method = e.method, url = url, headers = headers, body = e.request_body }
    if not r then
      return nil, { kind = tkind, detail = tmsg, op = e.operation, url = url, method = e.method }
    end
    if r.status >= 200 and r.status < 300 then return r end
    local body = r.body ~= "" and select(2, pcall(cjson.decode, r.body)) or nil
    return nil, { status = r.status, headers = r.headers, op = e.operation, url = url, method = e.method,
      scim_type = type(body) == "table" and body.scimType or nil,
      detail = type(body) == "table" and body.detail or r.body:sub(1, 200) }
  end, {})
  -- the audit trail (scimrun.observe.audit) records the replayed write too, under the entry's run
  local audit = require "scimrun.observe.audit"
  local write = { run_id = e.run_id, item = e.step_key, operation = e.operation or "dlq.replay", method = e.method,
                  url = url, body = e.request_body }
  if not res then
    write.result, write.status, write.detail = "failed", err and err.status, err and err.detail
    pcall(audit.record, db, write)
    return nil, err
  end
  local ok, decoded = pcall(cjson.decode, res.body ~= "" and res.body or "null")
  if not ok or decoded == nil or decoded == cjson.null then decoded = true end
  write.result, write.status = "replayed", res.status
  write.resource_id = type(decoded) == "table" and decoded.id ~= nil and tostring(decoded.id) or nil
  -- The entry is marked first: should the process die before the step is recorded, the step
  -- stays failed and a --retry-failed resume looks before it writes, rather than a second
  -- replay re-sending a create.
  local sok, serr = db:dlq_set_state(e.id, "replayed")
  if not sok then return nil, { detail = "replayed but could not record it: " .. tostring(serr) } end
  local batch
  if is_comp(e) then
    -- the rollback step is done: a resume sees the compensation completed and the step undone
    local undone = (e.step_key or ""):match("^compensate:(.+)$")
    batch = { { op = "step_complete", run_id = e.run_id, key = e.step_key,
      result_json = cjson.encode { v = decoded } } }
    if undone then batch[2] = { op = "step_compensated", run_id = e.run_id, key = undone } end
  else
    batch = { { op = "step_complete", run_id = e.run_id, key = e.step_key, result_json = cjson.encode { v = decoded },
      attempts = (e.attempts or 0) + 1 } }
  end
  for _, row in ipairs(audit.request_rows(write)) do batch[#batch + 1] = row end
  local aok, aerr = db:apply(batch)
  if not aok then return nil, { detail = "replayed but could not record the step: " .. tostring(aerr) } end
  return true
end

local function policy_message(e) return tostring(type(e) == "table" and (e.message or e.detail) or e) end

-- One retry executor per run of the entries. `--policy original`: each run's policy snapshot
-- (what the run used, whatever happened to the files since); otherwise the named policy
-- (default: "default") for all. Everything is resolved before the first request is sent.
local function policy_executors(db, entries, o, cli, say)
  local retry = require "scimrun.resilience.retry"
  local out = {}
  if o.policy ~= "original" then
    local ok, pol = pcall(require("scimrun.resilience.policy").load, o.policy or "default")
    if not ok then cli.fail("%s", policy_message(pol)) end
    local ex = retry.executor { policy = pol }
    return setmetatable(out, { __index = function() return ex end })
  end
  local snapshots = require "scimrun.resilience.policy_snapshot"
  for _, e in ipairs(entries) do
    if not out[e.run_id] then
      local run = db:run_get(e.run_id)
      local snap = run and snapshots.of_run(db, run)
      if not snap then
        cli.fail("run %s has no policy snapshot (it was recorded by an older scimrun); name the policy instead: "
          .. "--policy NAME|FILE", e.run_id)
      end
      local ok, pol = pcall(snapshots.restore, snap)
      if not ok then cli.fail("run %s: %s", e.run_id, policy_message(pol)) end
      say(("policy: the snapshot of run %s (%s, sha256 %s)\n"):format(e.run_id,
        tostring(snap.spec or snap.file), tostring(snap.sha256):sub(1, 12)))
      out[e.run_id] = retry.executor { policy = pol }
    end
  end
  return out
end

-- Who acts from this command, for the audit rows of its actions (M.action_row).
local function cli_actor()
  return { user = common.os_user(), address = "cli", via = "scimrun dlq", prefix = "dlq." }
end

-- Appends the audit rows of the actions done (what: "replayed", "dropped"); true, or false
-- after saying on stderr that they are done but not on record.
local function record(db, rows, what)
  if #rows == 0 then return true end
  local ok, err = db:apply(rows)
  if not ok then
    io.stderr:write(("scimrun: %s, but the audit trail could not record it: %s\n"):format(what, tostring(err)))
  end
  return ok and true or false
end

local function replay(db, ids, o, cli)
  local entries = {}
  if o.all then
    entries = db:dlq_list { run_id = o.run, state = "pending" }
  else
    for _, id in ipairs(ids) do
      local e = db:dlq_get(tonumber(id) or cli.fail("dlq replay needs numeric IDs or --all"))
      if not e then cli.fail("no dead letter %s (see: scimrun dlq list)", id) end
      if e.state ~= "pending" then cli.fail("dead letter %s is %s, not pending", id, e.state) end
      entries[#entries + 1] = e
    end
  end
  if #entries == 0 then io.stdout:write("nothing to replay\n"); return 0 end
  local out = M.replay_entries(db, entries, o, cli, function(line) io.stdout:write(line) end)
  -- who replayed what, with which policy, as the console's Replay records it (the replay's own
  -- writes at the provider are recorded by the SCIM client as any run's)
  local actor = cli_actor()
  local by_id, rows = {}, {}
  for _, e in ipairs(entries) do by_id[e.id] = e end
  for _, r in ipairs(out.results) do
    rows[#rows + 1] = M.action_row(by_id[r.id], "replay", r.ok and "replayed" or "still_failing", actor,
      { policy = o.policy or "default", status = r.status, detail = not r.ok and r.why or nil })
  end
  record(db, rows, "replayed")
  return out.failed > 0 and 3 or 0
end

-- Replays pending entries as `dlq replay` does (scimrun ui's Replay calls it too, so both have
-- the same effect): the policy (o.policy: a name, a file or "original"), the token
-- ($SCIM_TOKEN or o.token_env), the sandbox beside the state file (o.sandbox). say(text) gets
-- the lines the command prints. Returns { replayed = n, failed = n, results = { {id, ok, why,
-- todo, status} }, resume = { commands } }. Raises cli.fail's error before the first request
-- when the policy or the sandbox cannot be had.
function M.replay_entries(db, entries, o, cli, say)
  local executors = policy_executors(db, entries, o, cli, say)
  local sandbox, base_rewrite
  local token = os.getenv(o.token_env or "SCIM_TOKEN")
  if o.sandbox then
    local persist = common.sandbox_data(common.state_path(o))
    local f = io.open(persist, "r")
    if not f then
      cli.fail("--sandbox: no sandbox data at %s (it is written by `scimrun WORKFLOW --sandbox --state %s`)",
        persist, common.state_path(o))
    end
    f:close()
    local serr
    sandbox, serr = require("scimrun.sandbox").start { port = 0, persist = persist, token = token }
    if not sandbox then cli.fail("--sandbox: cannot start the sandbox: %s", tostring(serr)) end
    token, base_rewrite = sandbox.token, sandbox.url
  end
  if token then scimrun.log.add_secret(token) end
  local done, failed, runs, seen, results, resume = 0, 0, {}, {}, {}, {}
  for _, e in ipairs(entries) do
    local pok, rok, err = pcall(replay_one, db, e, executors[e.run_id], token, base_rewrite)
    if not pok then
      if sandbox then sandbox.close() end -- a long-lived caller (scimrun ui) keeps no sandbox behind
      error(rok, 0)
    end
    if rok then
      done = done + 1
      if not seen[e.run_id] then seen[e.run_id], runs[#runs + 1] = true, e.run_id end
      results[#results + 1] = { id = e.id, ok = true }
      say(("replayed %d (%s %s)\n"):format(e.id, e.operation or "?", e.step_key or ""))
    else
      failed = failed + 1
      local d = errors.describe(errors.explain(errors.normalize(type(err) == "table" and err or { detail = err })))
      results[#results + 1] = { id = e.id, ok = false, why = d.why, todo = d.todo,
                                status = type(err) == "table" and tonumber(err.status) or nil }
      say(("still failing %d (%s): %s\n"):format(e.id, e.step_key or "", d.why))
      if d.todo then say("      what to do: " .. d.todo .. "\n") end
    end
  end
  if sandbox then sandbox.close() end
  say(("%d replayed, %d still failing\n"):format(done, failed))
  for _, run_id in ipairs(runs) do
    local run = db:run_get(run_id)
    local wf = common.shell_quote(run and run.workflow_path or "WORKFLOW.lua")
    local cmd = ("scimrun %s --resume %s%s%s"):format(wf, run_id,
      state_opt(o), o.sandbox and " --sandbox" or "")
    resume[#resume + 1] = cmd
    say(("continue run %s from the replayed steps with: %s\n"):format(run_id, cmd))
  end
  return { replayed = done, failed = failed, results = results, resume = resume }
end

M.MAX_REASON = 500

-- A reason given for an action (`dlq drop --reason`, the console's Drop): trimmed, control
-- characters made spaces, at most MAX_REASON bytes. Returns it, or nil and what is wrong.
function M.clean_reason(reason)
  if type(reason) ~= "string" then return nil, "say why (kept in the audit trail)" end
  reason = reason:gsub("[%z\1-\31\127]", " "):gsub("^%s+", ""):gsub("%s+$", "")
  if reason == "" then return nil, "say why (kept in the audit trail)" end
  if #reason > M.MAX_REASON then return nil, ("the reason is longer than %d bytes"):format(M.MAX_REASON) end
  return reason
end

-- The audit row of an action on dead letter e (what: "replay" or "drop"): actor = { user,
-- address, via = "scimrun dlq" | "scimrun ui", prefix = "dlq." | "console.dlq." }; extra:
-- reason, policy, status, detail. Who acted is the row's changes (by, from, reason, policy).
function M.action_row(e, what, result, actor, extra)
  extra = extra or {}
  local changes = { { attribute = "by", after = actor.user }, { attribute = "from", after = actor.address or "?" } }
  if extra.reason then changes[#changes + 1] = { attribute = "reason", after = extra.reason } end
  if extra.policy then changes[#changes + 1] = { attribute = "policy", after = extra.policy } end
  return { op = "audit_add", run_id = e.run_id or "-", item = e.step_key, operation = actor.prefix .. what,
    target = actor.via, resource_type = "dead_letter", resource_id = tostring(e.id), result = result,
    status = tonumber(extra.status), detail = extra.detail, changes_json = cjson.encode(changes) }
end

-- Drops a pending entry as `dlq drop` does (the item stays failed): the entry, or nil, why.
function M.drop_entry(db, id)
  local e = db:dlq_get(id)
  if not e then return nil, ("no dead letter %s (see: scimrun dlq list)"):format(tostring(id)) end
  if e.state ~= "pending" then return nil, ("dead letter %d is %s, not pending"):format(id, e.state) end
  local dok, derr = db:dlq_set_state(id, "dropped")
  if not dok then return nil, ("cannot drop dead letter %d: %s"):format(id, tostring(derr)) end
  return e
end
M.not_replayable = not_replayable

-- `dlq drop ID... [--reason TEXT]`: every ID is checked first (it exists and is pending; one
-- given twice counts once), so a bad one drops nothing; then each is dropped and recorded in
-- the audit trail (operation dlq.drop, by the OS user, with the reason when given), as the
-- console's Drop is. A drop that fails on the way (another process replayed the entry
-- meanwhile) stops there, and what was dropped before it is still recorded.
local function drop(db, ids, o, cli)
  if #ids == 0 then cli.fail("usage: scimrun dlq drop ID... [--reason TEXT]") end
  local reason
  if o.reason ~= nil then
    local why
    reason, why = M.clean_reason(o.reason)
    if not reason then cli.fail("--reason: %s", why) end
  end
  local entries, seen = {}, {}
  for _, id in ipairs(ids) do
    local n = tostring(id):match("^%d+$") and tonumber(id)
    if not n or n < 1 then cli.fail("dlq drop needs IDs as whole numbers (see: scimrun dlq list), got %q", id) end
    if not seen[n] then
      seen[n] = true
      local e = db:dlq_get(n)
      if not e then cli.fail("no dead letter %d (see: scimrun dlq list); nothing was dropped", n) end
      if e.state ~= "pending" then cli.fail("dead letter %d is %s, not pending; nothing was dropped", n, e.state) end
      entries[#entries + 1] = e
    end
  end
  local actor = cli_actor()
  local rows, failed = {}, nil
  for _, e in ipairs(entries) do
    local done, why = M.drop_entry(db, e.id)
    if not done then failed = why; break end
    rows[#rows + 1] = M.action_row(e, "drop", "dropped", actor, { reason = reason })
    io.stdout:write(("dropped %d (%s); the item stays failed in run %s\n"):format(e.id, e.step_key or "?", e.run_id))
  end
  if not record(db, rows, "dropped") then return 1 end
  if failed then cli.fail("%s; the entries before it were dropped", failed) end
  return 0
end

function M.main(args, cli)
  local o, pos = flags.parse("dlq", args, cli)
  local sub = pos[1] or "list"
  flags.check_only("dlq", o, sub, cli)
  local db = common.open_store(o, cli, sub == "list" or sub == "show")
  local ok, code = pcall(function()
    if sub == "list" then return list(db, o)
    elseif sub == "show" then return show(db, pos[2] or cli.fail("usage: scimrun dlq show ID"), o, cli)
    elseif sub == "replay" then
      local ids = {}
      for i = 2, #pos do ids[#ids + 1] = pos[i] end
      if #ids == 0 and not o.all then cli.fail("usage: scimrun dlq replay ID... | --all [--run ID]") end
      return replay(db, ids, o, cli)
    elseif sub == "drop" then
      local ids = {}
      for i = 2, #pos do ids[#ids + 1] = pos[i] end
      return drop(db, ids, o, cli)
    end
    cli.fail("unknown dlq command %q (use: list, show ID, replay ID...|--all, drop ID...)", sub)
  end)
  db:close()
  if not ok then error(code, 0) end
  return code
end

return M
