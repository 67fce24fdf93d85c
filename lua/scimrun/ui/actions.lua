-- The actions of `scimrun ui`: Replay and Drop of dead letters. Each is what the CLI does, by
-- the same functions (scimrun.cli.dlq: replay_entries, drop_entry), under the same lock: the
-- state file is opened for writing for the action and closed after it, so while a run writes
-- the file an action is refused (409, naming the pid), exactly as `scimrun dlq replay` would be.
-- One action at a time.
--
-- Every action is recorded in the audit trail (the `audit` table, append-only; `scimrun audit`
-- and the console's Audit page list it), one row per dead letter: operation console.dlq.replay
-- or console.dlq.drop, the entry's run and step, resource dead_letter/ID, the result (replayed,
-- still_failing, dropped, refused) and, as its changes, who (by: the OS user the console runs
-- as; from: the client's address), the reason of a drop and the policy of a replay. A replay's
-- own writes at the provider are recorded as `dlq replay` records them.
local json = require "scimrun.sandbox.json"
local server = require "scimrun.ui.server"
local dlq = require "scimrun.cli.dlq"
local common = require "scimrun.cli.common"

local M = {}

local X = {}
X.__index = X

local fail = server.fail

M.MAX_IDS = 10000
M.MAX_REASON = dlq.MAX_REASON

-- o: state (path or postgres:// URL), sandbox, token_env, open (fn(path) -> db | nil, err,
-- code; default: a writable store by scimrun.state), log, cli_opts (" --state PATH").
function M.new(o)
  return setmetatable({ state = o.state, sandbox = o.sandbox, token_env = o.token_env, cli_opts = o.cli_opts or "",
    open = o.open or function(path) return require("scimrun.state").open(path, {}) end,
    log = o.log or function(level, msg, fields) scimrun.log.emit(level, msg, fields or {}) end, busy = false }, X)
end

local function ids_of(body)
  local ids = body.ids
  if type(ids) ~= "table" or #ids == 0 then fail(400, 'give the dead letters as {"ids": [1, 2, ...]}') end
  if #ids > M.MAX_IDS then fail(400, "at most %d ids at once", M.MAX_IDS) end
  local out, seen = {}, {}
  for _, id in ipairs(ids) do
    local n = tonumber(id)
    if type(id) ~= "number" or n % 1 ~= 0 or n < 1 or n > 2 ^ 53 then
      fail(400, "ids must be whole numbers >= 1, got %s", tostring(id))
    end
    if not seen[n] then
      seen[n] = true
      out[#out + 1] = n
    end
  end
  return out
end

-- the row of an action, as `scimrun dlq drop` writes its own (operation console.dlq.*)
local function audit_row(e, what, result, actor, extra)
  return dlq.action_row(e, what, result, { user = actor.user, address = actor.address, via = "scimrun ui",
    prefix = "console.dlq." }, extra)
end

-- Runs fn(db) with the state file open for writing and the console's action slot held.
function X:with_store(fn)
  if self.busy then fail(409, "another action is running in this console; try again when it ends") end
  local db, err, code = self.open(self.state)
  if not db then
    if code == "LOCKED" then
      fail(409, "%s; a run is writing it (an action takes the same lock as scimrun dlq): try again when it ends", err)
    end
    fail(500, "cannot open the state file for writing: %s", tostring(err))
  end
  self.busy = true
  local ok, res = pcall(fn, db)
  self.busy = false
  db:close()
  if not ok then error(res, 0) end
  return res
end

-- Appends the audit rows of an action; a failure is logged (the action itself is done).
function X:record(db, rows)
  if #rows == 0 then return end
  local ok, err = db:apply(rows)
  if not ok then self.log("error", "ui: could not record the action in the audit trail", { error = tostring(err) }) end
end

-- The command that does the same from a shell (a drop's: of the entries it dropped; none when
-- it dropped nothing, as the CLI would refuse those IDs).
function X:replay_command(ids, policy)
  return ("scimrun dlq replay %s%s%s%s%s"):format(table.concat(ids, " "),
    policy ~= "default" and (" --policy " .. policy) or "", self.cli_opts, self.sandbox and " --sandbox" or "",
    self.token_env and (" --token-env " .. self.token_env) or "")
end

function X:drop_command(ids, reason)
  return ("scimrun dlq drop %s --reason %s%s"):format(table.concat(ids, " "),
    common.shell_quote(reason), self.cli_opts)
end

local POLICY_NAME = "^[%w_%-]+$"

-- body: { ids = {...}, policy = "current" | "original" | a name from policies/ }
function X:replay(body, actor)
  local ids = ids_of(body)
  local policy = body.policy
  if policy == nil or policy == json.null or policy == "current" then policy = "default" end
  if type(policy) ~= "string" or not policy:match(POLICY_NAME) then
    fail(400, 'policy must be "current", "original" or the name of a file in policies/')
  end
  return self:with_store(function(db)
    local entries, rows, results = {}, {}, json.array {}
    for _, id in ipairs(ids) do
      local e = db:dlq_get(id)
      local why = not e and "no such dead letter"
        or (e.state ~= "pending" and ("it is " .. e.state .. ", not pending"))
      if why then
        results[#results + 1] = { id = id, ok = false, why = why }
        if e then rows[#rows + 1] = audit_row(e, "replay", "refused", actor, { policy = policy, detail = why }) end
      else
        entries[#entries + 1] = e
      end
    end
    local lines, out = {}, { replayed = 0, failed = 0, results = {}, resume = {} }
    if #entries > 0 then
      local cli = require "scimrun._cli"
      local o = { state = self.state, policy = policy, sandbox = self.sandbox, token_env = self.token_env }
      local ok, res = pcall(require("scimrun.cli.dlq").replay_entries, db, entries, o, cli,
        function(text) lines[#lines + 1] = text end)
      if not ok then
        local msg = cli.is_usage_error(res) and res.message or tostring(res)
        for _, e in ipairs(entries) do rows[#rows + 1] = audit_row(e, "replay", "refused", actor,
          { policy = policy, detail = msg }) end
        self:record(db, rows)
        self.log("warn", "ui: replay refused", { ids = table.concat(ids, ","), by = actor.user, from = actor.address,
          error = msg })
        fail(cli.is_usage_error(res) and 409 or 500, "%s", msg)
      end
      out = res
    end
    local by_id = {}
    for _, e in ipairs(entries) do by_id[e.id] = e end
    for _, r in ipairs(out.results) do
      local e = by_id[r.id]
      results[#results + 1] = r
      rows[#rows + 1] = audit_row(e, "replay", r.ok and "replayed" or "still_failing", actor,
        { policy = policy, status = r.status, detail = not r.ok and r.why or nil })
    end
    self:record(db, rows)
    self.log("info", "ui: replay", { ids = table.concat(ids, ","), by = actor.user, from = actor.address,
      policy = policy, replayed = out.replayed, still_failing = out.failed })
    table.sort(results, function(a, b) return a.id < b.id end)
    return { replayed = out.replayed, still_failing = out.failed + (#ids - #entries), results = results,
      resume = json.array(out.resume), output = table.concat(lines), command = self:replay_command(ids, policy),
      policy = policy }
  end)
end

-- body: { ids = {...}, reason = "why they are dropped" }
function X:drop(body, actor)
  local ids = ids_of(body)
  if type(body.reason) ~= "string" or not body.reason:find("%S") then
    fail(400, 'say why: {"ids": [...], "reason": "..."} (kept in the audit trail)')
  end
  local reason, bad = dlq.clean_reason(body.reason)
  if not reason then fail(400, "%s", bad) end
  return self:with_store(function(db)
    local results, rows, done = json.array {}, {}, {}
    for _, id in ipairs(ids) do
      local e, why = dlq.drop_entry(db, id)
      if e then
        done[#done + 1] = id
        results[#results + 1] = { id = id, ok = true }
        rows[#rows + 1] = audit_row(e, "drop", "dropped", actor, { reason = reason })
      else
        results[#results + 1] = { id = id, ok = false, why = why }
        local known = db:dlq_get(id)
        if known then
          rows[#rows + 1] = audit_row(known, "drop", "refused", actor, { reason = reason, detail = why })
        end
      end
    end
    self:record(db, rows)
    self.log("info", "ui: drop", { ids = table.concat(ids, ","), by = actor.user, from = actor.address,
      dropped = #done })
    return { dropped = #done, refused = #ids - #done, results = results, reason = reason,
      command = #done > 0 and self:drop_command(done, reason) or nil }
  end)
end

return M
