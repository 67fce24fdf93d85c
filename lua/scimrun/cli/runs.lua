-- `scimrun runs [list | show ID] [--json] [--state FILE]`: what ran, how far it got, and the
-- command that resumes it.
local cjson = require "cjson"
local common = require "scimrun.cli.common"
local flags = require "scimrun.cli.flags"
local snapshots = require "scimrun.resilience.policy_snapshot"

local M = {}

-- The run's policy snapshot for --json: the values without the stored source text (which
-- only serves to restore functions), naming the files it came from instead.
local function policy_json(snap)
  if not snap then return nil end
  local out = {}
  for k, v in pairs(snap) do out[k] = v end
  if snap.sources then
    out.sources = nil
    out.source_files = {}
    for i, src in ipairs(snap.sources) do out.source_files[i] = src.file end
  end
  return out
end

local function resume_cmd(run, o)
  if run.status == "completed" or run.status == "completed_with_dead_letters" then return nil end
  return require("scimrun.cli.runfiles").resume_command({ file = run.workflow_path, state = o.state }, run.id)
end

-- What `runs list --json` prints (scimrun ui's /api/runs serves the same): the newest runs
-- (o.limit, default 50) for which keep(run) is true (all without keep), each with its step
-- counts, resume command and policy snapshot's name.
function M.list_data(db, o, keep)
  local limit = tonumber(o.limit) or 50
  local runs = db:runs_list { limit = keep and 1000 or limit }
  if keep then
    local kept = {}
    for _, r in ipairs(runs) do
      if #kept < limit and keep(r) then kept[#kept + 1] = r end
    end
    runs = kept
  end
  for _, r in ipairs(runs) do
    r.steps = db:run_step_counts(r.id)
    r.resume = resume_cmd(r, o)
    local snap = snapshots.of_run(db, r)
    r.policy_json = nil
    r.policy = snap and { spec = snap.spec, file = snap.file, sha256 = snap.sha256, reason = snap.reason } or nil
  end
  return runs
end

-- What `runs show ID --json` prints (and /api/runs/ID), or nil when there is no such run; then
-- the current and the start policy snapshots.
function M.show_data(db, id, o)
  local r = db:run_get(id)
  if not r then return nil end
  r.steps = db:run_step_counts(id)
  r.dead_letters = db:dlq_count { run_id = id, state = "pending" }
  r.resume = resume_cmd(r, o)
  local snap, start = snapshots.of_run(db, r), snapshots.start_of_run(db, r)
  r.policy_json = nil
  r.policy = policy_json(snap)
  r.policy_at_start = start and { spec = start.spec, file = start.file, sha256 = start.sha256 } or nil
  return r, snap, start
end

function M.main(args, cli)
  local o, pos = flags.parse("runs", args, cli)
  local sub = pos[1] or "list"
  flags.check_only("runs", o, sub, cli)
  local db = common.open_store(o, cli, true)
  if sub == "list" then
    local runs = M.list_data(db, o)
    db:close()
    if o.json then io.stdout:write(cjson.encode(runs), "\n"); return 0 end
    if #runs == 0 then io.stdout:write("no runs yet\n"); return 0 end
    io.stdout:write(("%-28s %-28s %-12s %8s %7s %7s  %s\n"):format("RUN", "STATUS", "WORKFLOW", "DONE", "FAILED",
      "INDOUBT", "STARTED"))
    for _, r in ipairs(runs) do
      io.stdout:write(("%-28s %-28s %-12s %8d %7d %7d  %s\n"):format(r.id, r.status, r.workflow_name or "?",
        r.steps.completed or 0, r.steps.failed or 0, r.steps.started or 0, common.time(r.created_at)))
    end
    return 0
  elseif sub == "show" then
    local id = pos[2] or cli.fail("usage: scimrun runs show ID")
    local r, snap, start = M.show_data(db, id, o)
    if not r then db:close(); cli.fail("no run %s (see: scimrun runs list)", id) end
    db:close()
    if o.json then io.stdout:write(cjson.encode(r), "\n"); return 0 end
    local lines = {
      ("run        %s"):format(r.id),
      ("workflow   %s (%s)"):format(r.workflow_name or "?", r.workflow_path or "?"),
      ("status     %s%s"):format(r.status, r.exit_code and (" (exit " .. r.exit_code .. ")") or ""),
      ("started    %s"):format(common.time(r.created_at)),
      ("updated    %s"):format(common.time(r.updated_at)),
      ("finished   %s"):format(common.time(r.finished_at)),
      ("steps      %d completed, %d failed, %d compensated, %d in doubt"):format(r.steps.completed or 0,
        r.steps.failed or 0, r.steps.compensated or 0, r.steps.started or 0),
      ("dead letters %d pending"):format(r.dead_letters or 0),
      ("params     %s"):format(r.params_json or "{}"),
    }
    if snap then
      for _, l in ipairs(snapshots.lines(snap)) do lines[#lines + 1] = l end
      if start and start.sha256 ~= snap.sha256 then
        lines[#lines + 1] = ("%11s%-12ssha256 %s (%s)"):format("", "at start", tostring(start.sha256):sub(1, 12),
          tostring(start.spec or start.file))
      end
    else
      lines[#lines + 1] = "policy     (no snapshot: the run was recorded by an older scimrun)"
    end
    if r.resume then lines[#lines + 1] = "resume     " .. r.resume end
    io.stdout:write(table.concat(lines, "\n"), "\n")
    return 0
  end
  db:close()
  cli.fail("unknown runs command %q (use: runs list | runs show ID)", sub)
end

return M
