-- The JSON API of `scimrun ui` (under /api/), which the page uses and nothing else; scripts can
-- use it too. Where the CLI has a --json output the API answers the same document, built by the
-- same function (scimrun.cli.runs list_data/show_data, dlq_list/dlq_get, scimrun.cli.audit rows), with fields
-- added for the page; the rest (items of a run, one item, dead letters grouped) has no CLI twin.
--
--   GET  /api/info                        the console: state file, read-only, version, the CLI options
--   GET  /api/runs?status=&workflow=&limit=       = runs list --json (+ counts, progress, elapsed)
--   GET  /api/runs/ID                     = runs show ID --json (+ counts, progress, targets, elapsed)
--   GET  /api/runs/ID/items?q=&state=&class=&offset=&limit=   the run's steps, searchable
--   GET  /api/runs/ID/items/KEY           one step: its attempts (step_events), error, dead letters
--   GET  /api/dlq?state=&run=&class=&rule=&status=&q=          = dlq list --json (+ todo, replayable)
--   GET  /api/dlq/groups?state=&run=      pending entries by class, status, scimType and rule
--   GET  /api/dlq/ID                      = dlq show ID --json (+ attempts, todo, commands)
--   POST /api/dlq/replay {ids, policy}    = dlq replay IDS [--policy original]  (scimrun.ui.actions)
--   POST /api/dlq/drop {ids, reason}      = dlq drop ID, the reason kept in the audit trail
--   GET  /api/audit?run=&user=&limit=     = audit --json
--
-- The state file is read through one read-only connection (a WAL reader: runs may be writing
-- it meanwhile); actions open it for writing, with the CLI's lock (scimrun.ui.actions).
local cjson = require "cjson"
local json = require "scimrun.sandbox.json"
local server = require "scimrun.ui.server"
local record = require "scimrun.ui.record"
local errors = require "scimrun.errors"

local M = {}

local A = {}
A.__index = A

local fail = server.fail

local shell_quote = require("scimrun.cli.common").shell_quote
M.shell_quote = shell_quote -- scimrun.cli.ui's

-- o: db (read-only store), state (absolute path), read_only, sandbox, token_env, actions, version,
-- user (the OS user the console runs as), now/wall clocks.
function M.new(o)
  return setmetatable({ db = o.db, state = o.state, read_only = o.read_only, sandbox = o.sandbox,
    token_env = o.token_env, actions = o.actions, user = o.user, started_at = (o.wall or scimrun.wall)(),
    wall = o.wall or scimrun.wall }, A)
end

-- The --state (and --sandbox) the printed CLI commands carry.
function A:cli_opts()
  return " --state " .. shell_quote(self.state)
end

local function array(t) return json.array(t or {}) end

local function int(v, name, lo, hi, default)
  if v == nil or v == "" then return default end
  local n = tonumber(v)
  if not n or n % 1 ~= 0 or n < lo or n > hi then fail(400, "%s must be a whole number from %d to %d", name, lo, hi) end
  return n
end

local function decode(text)
  if type(text) ~= "string" or text == "" then return nil end
  local ok, v = pcall(cjson.decode, text)
  return ok and v or nil
end

local RUN_STATUSES = { running = true, interrupted = true, failed = true, completed = true,
                       completed_with_dead_letters = true }
local STEP_STATES = { started = true, completed = true, failed = true, compensated = true }
local DLQ_STATES = { pending = true, replayed = true, dropped = true }

local function one_of(v, set, name)
  if v == nil or v == "" then return nil end
  if not set[v] then
    local names = {}
    for k in pairs(set) do names[#names + 1] = k end
    table.sort(names)
    fail(400, "%s must be one of %s, got %s", name, table.concat(names, ", "), tostring(v))
  end
  return v
end

-- counts, progress and elapsed of a run, from its steps, dead letters and console record
function A:run_extras(r)
  local rec = record.read(self.db, r.id)
  local out = rec and rec.outcomes or {}
  local s = rec and rec.summary or {}
  -- a run recorded by an older scimrun has no record: its outcome counts are unknown (null)
  r.counts = {
    created = out.created or s.created or json.null, updated = out.updated or s.updated or json.null,
    skipped = out.skipped or s.skipped or json.null, adopted = out.adopted or s.adopted or json.null,
    failed = rec and rec.failed or (r.steps and r.steps.failed) or 0,
    dead_letters = r.dead_letters or self.db:dlq_count { run_id = r.id, state = "pending" } or 0,
    items = rec and rec.done or json.null,
  }
  r.progress = rec and { done = rec.done, total = rec.total, in_flight = rec.in_flight, failed = rec.failed,
    retries = rec.retries, retries_by_class = rec.retries_by_class, updated_at = rec.updated_at,
    session_started_at = rec.started_at, resumed = rec.resumed } or json.null
  local finished = tonumber(r.finished_at)
  local start = tonumber(r.created_at) or self.wall()
  r.elapsed = (finished or (r.status == "running" and self.wall()) or tonumber(r.updated_at) or start) - start
  if rec and rec.targets then
    local targets = array()
    for name, t in pairs(rec.targets) do
      t.name = name
      targets[#targets + 1] = t
    end
    table.sort(targets, function(a, b) return a.name < b.name end)
    r.targets = targets
  end
  return r
end

function A:info()
  local names, seen = array(), {}
  for _, r in ipairs(self.db:runs_list { limit = 1000 }) do
    if r.workflow_name and not seen[r.workflow_name] then
      seen[r.workflow_name] = true
      names[#names + 1] = r.workflow_name
    end
  end
  table.sort(names)
  return { state = self.state, read_only = self.read_only and true or false, sandbox = self.sandbox and true or false,
    version = scimrun.version or "dev", user = self.user, started_at = self.started_at, workflows = names,
    statuses = array { "running", "interrupted", "failed", "completed", "completed_with_dead_letters" },
    cli = { state = self:cli_opts(), replay = self.sandbox and " --sandbox" or "",
            token_env = self.token_env and (" --token-env " .. self.token_env) or "" },
    pending_dead_letters = self.db:dlq_count { state = "pending" } or 0 }
end

function A:runs(q)
  local status = one_of(q.status, RUN_STATUSES, "status")
  local workflow = q.workflow ~= "" and q.workflow or nil
  local limit = int(q.limit, "limit", 1, 1000, 50)
  local keep = (status or workflow) and function(r)
    return (not status or r.status == status) and (not workflow or r.workflow_name == workflow)
  end or nil
  local runs = require("scimrun.cli.runs").list_data(self.db, { state = self.state, limit = limit }, keep)
  for _, r in ipairs(runs) do self:run_extras(r) end
  return array(runs)
end

function A:run(id)
  local r, snap = require("scimrun.cli.runs").show_data(self.db, id, { state = self.state })
  if not r then fail(404, "no run %s", id) end
  self:run_extras(r)
  r.has_snapshot = snap ~= nil
  r.targets = r.targets or array()
  return r
end

-- The dead letters of a run, by step key (the newest entry of each step).
local function dlq_by_step(db, run_id)
  local out = {}
  for _, e in ipairs(db:dlq_list { run_id = run_id }) do
    if e.step_key then out[e.step_key] = e end
  end
  return out
end

local function step_row(key, s, dl)
  local err = decode(s.error_json) or {}
  return { key = key, state = s.state, attempts = s.attempts, started_at = s.started_at, updated_at = s.updated_at,
    class = err.class, status = err.status, scim_type = err.scim_type, rule = err.rule, op = err.op,
    detail = err.detail, dead_letter = dl and { id = dl.id, state = dl.state } or nil }
end

function A:items(run_id, q)
  if not self.db:run_get(run_id) then fail(404, "no run %s", run_id) end
  local state = one_of(q.state, STEP_STATES, "state")
  local class = q.class ~= "" and q.class or nil
  local text = q.q ~= "" and q.q and q.q:lower() or nil
  local offset = int(q.offset, "offset", 0, 2 ^ 31 - 1, 0)
  local limit = int(q.limit, "limit", 1, 1000, 100)
  local steps = self.db:steps_load(run_id)
  local dls = dlq_by_step(self.db, run_id)
  local rows, states, classes = {}, {}, {}
  for key, s in pairs(steps) do
    local row = step_row(key, s, dls[key])
    s.result_json = nil
    states[row.state] = (states[row.state] or 0) + 1
    if row.class then classes[row.class] = (classes[row.class] or 0) + 1 end
    if (not state or row.state == state) and (not class or row.class == class)
        and (not text or key:lower():find(text, 1, true)) then
      rows[#rows + 1] = row
    end
  end
  table.sort(rows, function(a, b)
    if a.started_at ~= b.started_at then return (a.started_at or 0) < (b.started_at or 0) end
    return a.key < b.key
  end)
  local page = array()
  for i = offset + 1, math.min(offset + limit, #rows) do page[#page + 1] = rows[i] end
  return { run_id = run_id, total = #rows, offset = offset, limit = limit, items = page, states = states,
           classes = classes }
end

-- The attempts of a step as the retry layer recorded them (the same rows `dlq show` prints).
local function history(db, run_id, key)
  local out = array()
  if not (db.step_events and run_id and key) then return out end
  for _, h in ipairs(db:step_events(run_id, key)) do
    local ev = decode(h.event_json)
    if type(ev) == "table" then
      ev.at = h.at
      ev.t = nil -- the monotonic clock of the process that ran it: meaningless here
      out[#out + 1] = ev
    end
  end
  return out
end

local function todo(e)
  return errors.with_id(e.suggest or errors.builtin_suggestion(e), e.id)
end

function A:dlq_commands(e)
  local opts = self:cli_opts()
  return { show = ("scimrun dlq show %d%s"):format(e.id, opts),
           replay = ("scimrun dlq replay %d%s%s"):format(e.id, opts, self.sandbox and " --sandbox" or ""),
           drop = ("scimrun dlq drop %d%s"):format(e.id, opts) }
end

local function decorate(self, e)
  e.todo = todo(e)
  e.replayable = require("scimrun.cli.dlq").not_replayable(e) == nil
  e.commands = self:dlq_commands(e)
  return e
end

function A:item(run_id, key)
  local run = self.db:run_get(run_id)
  if not run then fail(404, "no run %s", run_id) end
  local s = self.db:step_get(run_id, key)
  if not s then fail(404, "no step %s in run %s", key, run_id) end
  local err = decode(s.error_json)
  local entries = array()
  for _, e in ipairs(self.db:dlq_list { run_id = run_id }) do
    if e.step_key == key then entries[#entries + 1] = decorate(self, e) end
  end
  local last = entries[#entries]
  -- the other steps of the same item: keys that differ only before the first colon
  local related = array()
  local suffix = key:match("^[^:]+:(.+)$")
  if suffix then
    for k, st in pairs(self.db:steps_load(run_id)) do
      if k ~= key and k:match("^[^:]+:(.+)$") == suffix then
        related[#related + 1] = { key = k, state = st.state }
      end
    end
    table.sort(related, function(a, b) return a.key < b.key end)
  end
  return { run_id = run_id, workflow = run.workflow_name, key = key, state = s.state, attempts = s.attempts,
    started_at = s.started_at, updated_at = s.updated_at, error = err or json.null,
    result = decode(s.result_json) or json.null, history = history(self.db, run_id, key),
    todo = err and errors.with_id(err.suggest or errors.builtin_suggestion(err), last and last.id) or json.null,
    payload = last and decode(last.request_body) or json.null, dead_letters = entries, related = related,
    resume = ("scimrun %s --resume %s%s"):format(shell_quote(run.workflow_path), run.id, self:cli_opts()) }
end

-- The label of a group of dead letters: "409 uniqueness", "400 invalidValue", "timeout".
local function group_label(e)
  local parts = {}
  if e.status then parts[#parts + 1] = tostring(e.status) end
  if e.scim_type then parts[#parts + 1] = e.scim_type end
  if #parts == 0 then parts[1] = e.class or "?" end
  return table.concat(parts, " ")
end

local function dlq_filter(q)
  return { state = one_of(q.state, DLQ_STATES, "state"), run = q.run ~= "" and q.run or nil,
    class = q.class ~= "" and q.class or nil, rule = q.rule ~= "" and q.rule or nil,
    status = q.status ~= "" and q.status or nil, scim_type = q.scim_type ~= "" and q.scim_type or nil,
    operation = q.operation ~= "" and q.operation or nil, text = q.q ~= "" and q.q and q.q:lower() or nil }
end

local function matches(e, f)
  return (not f.class or e.class == f.class) and (not f.rule or e.rule == f.rule)
    and (not f.status or tostring(e.status) == f.status) and (not f.scim_type or e.scim_type == f.scim_type)
    and (not f.operation or e.operation == f.operation)
    and (not f.text or (e.step_key or ""):lower():find(f.text, 1, true) ~= nil
      or (e.last_error or ""):lower():find(f.text, 1, true) ~= nil)
end

function A:dlq_list(q)
  local f = dlq_filter(q)
  local out = array()
  for _, e in ipairs(self.db:dlq_list { run_id = f.run, state = f.state }) do
    if matches(e, f) then out[#out + 1] = decorate(self, e) end
  end
  return out
end

function A:dlq_groups(q)
  local f = dlq_filter(q)
  f.state = f.state or "pending"
  local groups, order = {}, array()
  for _, e in ipairs(self.db:dlq_list { run_id = f.run, state = f.state }) do
    if matches(e, f) then
      local key = table.concat({ e.class or "?", tostring(e.status or ""), e.scim_type or "", e.rule or "" }, "\0")
      local g = groups[key]
      if not g then
        g = { label = group_label(e), class = e.class, status = e.status, scim_type = e.scim_type, rule = e.rule,
              count = 0, ids = array(), operations = {}, runs = {}, example = e.last_error, todo = todo(e),
              replayable = 0 }
        groups[key] = g
        order[#order + 1] = g
      end
      g.count = g.count + 1
      g.ids[#g.ids + 1] = e.id
      g.operations[e.operation or "?"] = (g.operations[e.operation or "?"] or 0) + 1
      g.runs[e.run_id] = true
      if require("scimrun.cli.dlq").not_replayable(e) == nil then g.replayable = g.replayable + 1 end
    end
  end
  for _, g in ipairs(order) do
    local runs = array()
    for id in pairs(g.runs) do runs[#runs + 1] = id end
    table.sort(runs)
    g.runs = runs
    g.todo = g.todo and g.todo:gsub("dlq replay %d+", "dlq replay ID") or json.null
  end
  table.sort(order, function(a, b)
    if a.count ~= b.count then return a.count > b.count end
    return a.label < b.label
  end)
  return order
end

function A:dlq_entry(id)
  local n = tonumber(id)
  if not n or n % 1 ~= 0 or n < 1 then fail(400, "a dead letter id is a whole number, got %s", tostring(id)) end
  local e = self.db:dlq_get(n)
  if not e then fail(404, "no dead letter %s", id) end
  decorate(self, e)
  e.history = history(self.db, e.run_id, e.step_key)
  e.payload = decode(e.request_body) or json.null
  return e
end

function A:audit(q)
  local limit = int(q.limit, "limit", 1, 100000, 500)
  local rows, err = require("scimrun.cli.audit").rows(self.db, { run = q.run ~= "" and q.run or nil,
    user = q.user ~= "" and q.user or nil, limit = limit })
  if not rows then
    if tostring(err):find("no such table", 1, true) then return array() end
    fail(500, "%s", tostring(err))
  end
  for _, r in ipairs(rows) do
    if type(r.changes) == "table" then json.array(r.changes) end
  end
  return array(rows)
end

-- call: {method, segs (after "api"), query, body, remote}. Returns status, document.
function A:dispatch(call)
  local s, q, m = call.segs, call.query, call.method
  local n = #s
  local function get(doc) if m ~= "GET" then fail(405, "use GET here") end return 200, doc() end
  if s[1] == "info" and n == 1 then return get(function() return self:info() end) end
  if s[1] == "runs" then
    if n == 1 then return get(function() return self:runs(q) end) end
    if n == 2 then return get(function() return self:run(s[2]) end) end
    if n == 3 and s[3] == "items" then return get(function() return self:items(s[2], q) end) end
    if n == 4 and s[3] == "items" then return get(function() return self:item(s[2], s[4]) end) end
  elseif s[1] == "dlq" then
    if n == 1 then return get(function() return self:dlq_list(q) end) end
    if n == 2 and s[2] == "groups" then return get(function() return self:dlq_groups(q) end) end
    if n == 2 and (s[2] == "replay" or s[2] == "drop") then
      if m ~= "POST" then fail(405, "use POST here") end
      local actor = { user = self.user, address = call.remote }
      if s[2] == "replay" then return 200, self.actions:replay(call.body, actor) end
      return 200, self.actions:drop(call.body, actor)
    end
    if n == 2 then return get(function() return self:dlq_entry(s[2]) end) end
  elseif s[1] == "audit" and n == 1 then
    return get(function() return self:audit(q) end)
  end
  fail(404, "no such API endpoint: %s %s", m, call.path or "")
end

return M
