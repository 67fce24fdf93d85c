-- `scimrun dlq list|show|replay|drop`: the dead-letter queue, for a person to inspect, fix and
-- replay. Replay re-sends the recorded request with the current credentials and policy; on
-- success the entry is marked replayed and the response becomes the step's result, so a later
-- `--resume` continues that item from its next step.
local cjson = require "cjson"
local common = require "scimrun.cli_common"

local M = {}
local SPEC = { ["--json"] = "flag", ["--state"] = "value", ["--run"] = "value", ["--all"] = "flag",
  ["--policy"] = "value", ["--sandbox"] = "flag", ["--token-env"] = "value", ["--state-filter"] = "value" }

local function show_line(e)
  return ("%-5d %-9s %-24s %-18s %-13s %s"):format(e.id, e.state, e.step_key or "?", e.operation or "?",
    (e.class or "?") .. (e.status and ("/" .. e.status) or ""), (e.last_error or ""):sub(1, 70))
end

local function list(db, o)
  local entries = db:dlq_list { run_id = o.run, state = o.state_filter }
  if o.json then io.stdout:write(cjson.encode(entries), "\n"); return 0 end
  if #entries == 0 then io.stdout:write("dead-letter queue is empty\n"); return 0 end
  io.stdout:write(("%-5s %-9s %-24s %-18s %-13s %s\n"):format("ID", "STATE", "STEP", "OPERATION", "CLASS", "ERROR"))
  for _, e in ipairs(entries) do
    io.stdout:write(show_line(e), "\n")
    if e.suggest then io.stdout:write("      what to do: ", e.suggest, "\n") end
  end
  return 0
end

local function show(db, id, o, cli)
  local e = db:dlq_get(tonumber(id) or cli.fail("dlq show needs a numeric ID"))
  if not e then cli.fail("no dead letter %s (see: scimrun dlq list)", id) end
  if o.json then io.stdout:write(cjson.encode(e), "\n"); return 0 end
  local fields = { "id", "state", "run_id", "step_key", "operation", "method", "url", "class", "status", "scim_type",
    "rule", "attempts", "last_error", "suggest" }
  for _, k in ipairs(fields) do
    if e[k] ~= nil then io.stdout:write(("%-14s %s\n"):format(k, tostring(e[k]))) end
  end
  if e.is_compensation == 1 or e.is_compensation == true then
    io.stdout:write("COMPENSATION   this entry is a failed rollback: the target may hold half-done work\n")
  end
  io.stdout:write(("%-14s %s\n"):format("first failed", common.time(e.first_failed_at)))
  io.stdout:write(("%-14s %s\n"):format("last failed", common.time(e.last_failed_at)))
  if e.request_body then io.stdout:write("payload\n  ", e.request_body, "\n") end
  io.stdout:write(("replay with: scimrun dlq replay %d   drop with: scimrun dlq drop %d\n"):format(e.id, e.id))
  return 0
end

local function replay_one(db, e, ex, token, base_rewrite)
  local http = require "scimrun.http"
  local url = e.url
  if base_rewrite then url = url:gsub("^http://127%.0%.0%.1:%d+/scim/v2", base_rewrite) end
  local headers = { ["Content-Type"] = "application/scim+json", Accept = "application/scim+json",
    ["User-Agent"] = "scimrun/" .. scimrun.version }
  if token then headers.Authorization = "Bearer " .. token end
  local target = url:match("^%a+://([^/]+)") or "default"
  local res, err = ex:run(e.operation or "dlq.replay", target, function()
    local r, terr = http.request { method = e.method or "POST", url = url, headers = headers, body = e.request_body }
    if not r then terr.op, terr.url, terr.method = e.operation, url, e.method; return nil, terr end
    if r.status >= 200 and r.status < 300 then return r end
    local body = r.body ~= "" and select(2, pcall(cjson.decode, r.body)) or nil
    return nil, { status = r.status, headers = r.headers, op = e.operation, url = url, method = e.method,
      scim_type = type(body) == "table" and body.scimType or nil,
      detail = type(body) == "table" and body.detail or r.body:sub(1, 200) }
  end, {})
  if not res then return nil, err end
  local ok, decoded = pcall(cjson.decode, res.body ~= "" and res.body or "null")
  local result_json = cjson.encode { v = ok and decoded or true }
  local batch = { { op = "dlq_set_state", id = e.id, state = "replayed" } }
  if e.is_compensation ~= 1 and e.is_compensation ~= true then
    batch[#batch + 1] = { op = "step_complete", run_id = e.run_id, key = e.step_key, result_json = result_json,
      attempts = (e.attempts or 0) + 1 }
  end
  local aok, aerr = db:apply(batch)
  if not aok then return nil, { detail = "replayed but could not record it: " .. tostring(aerr) } end
  return true
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
  local pol_name = o.policy or "default"
  if pol_name == "original" then
    local run = db:run_get(entries[1].run_id)
    pol_name = run and run.policy_path or "default"
  end
  local ok, pol = pcall(require("scimrun.policy").load, pol_name)
  if not ok then cli.fail("%s", tostring(type(pol) == "table" and pol.message or pol)) end
  local ex = require("scimrun.retry").executor { policy = pol }
  local sandbox, base_rewrite
  local token = os.getenv(o.token_env or "SCIM_TOKEN")
  if o.sandbox then
    sandbox = require("scimrun.sandbox").start { port = 0, persist = common.state_path(o) .. ".sandbox.json",
      token = token }
    token, base_rewrite = sandbox.token, sandbox.url
  end
  if token then scimrun.log.add_secret(token) end
  local done, failed = 0, 0
  for _, e in ipairs(entries) do
    local rok, err = replay_one(db, e, ex, token, base_rewrite)
    if rok then
      done = done + 1
      io.stdout:write(("replayed %d (%s %s)\n"):format(e.id, e.operation or "?", e.step_key or ""))
    else
      failed = failed + 1
      local detail = type(err) == "table" and (tostring(err.class or "") .. " " .. tostring(err.status or "")
        .. " " .. tostring(err.detail or err.message or "")) or tostring(err)
      io.stdout:write(("still failing %d (%s): %s\n"):format(e.id, e.step_key or "", scimrun.log.redact(detail)))
    end
  end
  if sandbox then sandbox.close() end
  io.stdout:write(("%d replayed, %d still failing\n"):format(done, failed))
  if done > 0 then
    io.stdout:write("continue the affected runs with: scimrun WORKFLOW.lua --resume RUN_ID\n")
  end
  return failed > 0 and 3 or 0
end

function M.main(args, cli)
  local o, pos = common.parse(args, SPEC, cli)
  local sub = pos[1] or "list"
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
      local id = tonumber(pos[2]) or cli.fail("usage: scimrun dlq drop ID")
      local e = db:dlq_get(id)
      if not e then cli.fail("no dead letter %d", id) end
      db:dlq_set_state(id, "dropped")
      io.stdout:write(("dropped %d (%s); the item stays failed in run %s\n"):format(id, e.step_key or "?", e.run_id))
      return 0
    end
    cli.fail("unknown dlq command %q (use: list, show ID, replay ID...|--all, drop ID)", sub)
  end)
  db:close()
  if not ok then error(code, 0) end
  return code
end

return M
