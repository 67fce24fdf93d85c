-- The checkpoint store over PostgreSQL (issue 16: --state postgres://...): the same `db`
-- interface as the SQLite store's Lua binding (runtime/store_lua.c), method for method, with
-- the same arguments, row shapes (field names and Lua types), ordering and conventions: misuse
-- raises, an operational failure returns nil, message, code. Messages name the database by
-- its URL, which never holds a password (such a URL is refused at open).
--
-- Beyond the SQLite store: db.kind = "postgres"; db:conn(), the raw scimrun.pg connection
-- (worker mode claims items on it); db:lock_run(id), a session advisory lock so that two
-- non-worker processes never run one run at once (what the SQLite store's file lock gives);
-- db:apply's claims (fencing, see scimrun.postgres.apply).
--
-- Times are seconds since the epoch from the database clock, so that processes on several
-- machines record one timeline (retention prunes compare with the same clock).
local apply = require "scimrun.postgres.apply"
local schema = require "scimrun.postgres.schema"
local session = require "scimrun.postgres.session"
local url_mod = require "scimrun.postgres.url"

local M = {}

M.MAX_VALUE_BYTES = 16 * 1024 * 1024

local DB = { kind = "postgres" }
DB.__index = DB

DB.__tostring = function(self)
  return ("scimrun.store(%s)"):format(self._s and self._url or "closed")
end

local RUN_COLS = "id, workflow_name, workflow_path, workflow_hash, params_json, inputs_json, policy_json, "
  .. "status, created_at, updated_at, finished_at, exit_code"
local STEP_COLS = "key, state, attempts, result_json, error_json, started_at, updated_at, fence"
local DLQ_COLS = "id, run_id, step_key, operation, method, url, request_body, class, status, scim_type, "
  .. "last_error, suggest, attempts, first_failed_at, last_failed_at, state, is_compensation, rule"
local AUDIT_COLS = "id, run_id, at, item, operation, method, target, resource_type, resource_id, resource_name, "
  .. "member_id, changes_json, result, status, detail"
-- The ids of the users once called $2 (a user renamed later is found by either name).
local AUDIT_USER_IDS = "(SELECT resource_id FROM scimrun.audit WHERE resource_type = 'users' "
  .. "AND lower(resource_name) = lower($2::text) AND resource_id IS NOT NULL)"
local FINAL_STATES = "('failed','completed','completed_with_dead_letters')"
local NOW = "extract(epoch FROM now())::double precision"

local SQL = {
  run_get = "SELECT " .. RUN_COLS .. " FROM scimrun.runs WHERE id = $1",
  run_latest_unfinished = "SELECT " .. RUN_COLS .. " FROM scimrun.runs WHERE workflow_path = $1 "
    .. "AND status IN ('running','interrupted','failed') ORDER BY created_at DESC, seq DESC LIMIT 1",
  runs_list = "SELECT " .. RUN_COLS .. " FROM scimrun.runs WHERE $2::text IS NULL OR workflow_path = $2 "
    .. "ORDER BY created_at DESC, seq DESC LIMIT $1::int",
  run_step_counts = "SELECT state, count(*) AS n FROM scimrun.steps WHERE run_id = $1 GROUP BY state",
  step_get = "SELECT " .. STEP_COLS .. " FROM scimrun.steps WHERE run_id = $1 AND key = $2",
  steps_load = "SELECT " .. STEP_COLS .. " FROM scimrun.steps WHERE run_id = $1",
  kv_get = "SELECT value_json FROM scimrun.kv WHERE run_id = $1 AND key = $2",
  kv_all = "SELECT key, value_json FROM scimrun.kv WHERE run_id = $1",
  dlq_list = "SELECT " .. DLQ_COLS .. " FROM scimrun.dead_letters WHERE ($1::text IS NULL OR run_id = $1) "
    .. "AND ($2::text IS NULL OR state = $2) ORDER BY id LIMIT $3::int",
  dlq_get = "SELECT " .. DLQ_COLS .. " FROM scimrun.dead_letters WHERE id = $1::bigint",
  dlq_count = "SELECT count(*) AS n FROM scimrun.dead_letters WHERE ($1::text IS NULL OR state = $1) "
    .. "AND ($2::text IS NULL OR run_id = $2)",
  step_events = "SELECT at, event_json FROM scimrun.step_events WHERE run_id = $1 AND step_key = $2 ORDER BY id",
  audit_list = "SELECT " .. AUDIT_COLS .. " FROM scimrun.audit WHERE ($1::text IS NULL OR run_id = $1) "
    .. "AND ($2::text IS NULL OR resource_id = $2 OR member_id = $2 "
    .. "OR (resource_type = 'users' AND lower(resource_name) = lower($2)) "
    .. "OR (resource_type = 'users' AND resource_id IN " .. AUDIT_USER_IDS .. ") "
    .. "OR member_id IN " .. AUDIT_USER_IDS .. ") ORDER BY id DESC LIMIT $3::int",
  run_create = "INSERT INTO scimrun.runs (id, workflow_name, workflow_path, workflow_hash, params_json, "
    .. "inputs_json, policy_json, status, created_at, updated_at) VALUES ($1, $2, $3, $4, "
    .. "COALESCE($5, '{}'), COALESCE($6, '{}'), $7, 'running', " .. NOW .. ", " .. NOW .. ")",
  run_set_status = "UPDATE scimrun.runs SET status = $2, exit_code = $3::int, updated_at = " .. NOW
    .. ", finished_at = CASE WHEN $2 IN " .. FINAL_STATES .. " THEN " .. NOW .. " END WHERE id = $1",
  dlq_set_state = "UPDATE scimrun.dead_letters SET state = $2 WHERE id = $1::bigint AND state = 'pending'",
  dlq_prune = "DELETE FROM scimrun.dead_letters WHERE last_failed_at < " .. NOW .. " - $1::double precision",
  events_prune = "DELETE FROM scimrun.step_events WHERE at < " .. NOW .. " - $1::double precision",
  audit_prune = "DELETE FROM scimrun.audit WHERE at < " .. NOW .. " - $1::double precision",
  lock_holder = "SELECT l.pid, a.application_name, a.client_addr::text AS client_addr, a.client_hostname "
    .. "FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' "
    .. "AND l.granted AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    .. "AND l.classid = $1::int::oid AND l.objid = hashtext($2)::oid AND l.objsubid = 2 "
    .. "AND l.pid <> pg_backend_pid() LIMIT 1",
}

local RUN_STATUSES = apply.RUN_STATUSES
local DLQ_STATES = { pending = true, replayed = true, dropped = true }

-- ---- arguments, checked as the C binding's luaL_check* calls check them ------------------

local function argerror(n, fname, msg) error(("bad argument #%d to '%s' (%s)"):format(n, fname, msg), 0) end

local function checkstring(v, n, fname)
  if type(v) == "string" then return v end
  if type(v) == "number" then return tostring(v) end
  argerror(n, fname, "string expected, got " .. (v == nil and "no value" or type(v)))
end

local function checknumber(v, n, fname)
  local x = tonumber(v)
  if type(v) ~= "number" and type(v) ~= "string" or x == nil then
    argerror(n, fname, "number expected, got " .. (v == nil and "no value" or type(v)))
  end
  return x
end

-- lua_Integer conversion truncates toward zero.
local function checkinteger(v, n, fname)
  local x = checknumber(v, n, fname)
  return x >= 0 and math.floor(x) or math.ceil(x)
end

local function check_db(self)
  if getmetatable(self) ~= DB then error("bad argument #1 (scimrun.store db expected)", 0) end
  if not self._s then error("state store is closed", 0) end
  return self._s
end

local function check_writable(self)
  local s = check_db(self)
  if self._readonly then error(("state database %s was opened readonly"):format(self._url), 0) end
  return s
end

local function opt_field(t, field, ctx)
  if type(t) ~= "table" then return nil end
  return apply.field_string(t, field, false, ctx)
end

local function check_dlq_state(state)
  if state ~= nil and not DLQ_STATES[state] then
    error(("dead-letter state must be pending, replayed or dropped (got '%s')"):format(state), 0)
  end
  return state
end

-- ---- open ---------------------------------------------------------------------------------

local function parse_options(opts)
  local o = { readonly = false, normal = false, max = M.MAX_VALUE_BYTES }
  if opts == nil then return o end
  if type(opts) ~= "table" then argerror(2, "open", "table expected, got " .. type(opts)) end
  local d = apply.field_string(opts, "durability", false, "store.open")
  if d == "normal" then
    o.normal = true
  elseif d ~= nil and d ~= "full" then
    argerror(2, "open", 'durability must be "full" or "normal"')
  end
  o.readonly = opts.readonly and true or false
  local n = opts.max_value_bytes
  if n ~= nil then
    if type(n) ~= "number" or n < 1 or n > 2e9 or n ~= math.floor(n) then
      argerror(2, "open", "max_value_bytes must be an integer from 1 to 2e9")
    end
    o.max = n
  end
  return o
end

-- open(url, opts) -> db | nil, err, code. opts: readonly, durability ("full": the server's
-- synchronous_commit, on unless a DBA chose otherwise; "normal": off for this session),
-- max_value_bytes. A writer migrates the schema; a reader only checks it.
function M.open(spec, opts)
  spec = checkstring(spec, 1, "open")
  local o = parse_options(opts)
  if not url_mod.is_postgres(spec) then
    return nil, "not a PostgreSQL URL (postgres://... or postgresql://...): " .. spec, "CANTOPEN"
  end
  local field = url_mod.password_field(spec)
  if field then
    -- Not even a redacted URL here: the caller may print it next to what it was given.
    return nil, ("the PostgreSQL URL given as state has a password (in %s); a URL is shown in logs, process "
      .. "lists and the run record, so scimrun refuses it: remove it and give the password through "
      .. "PGPASSWORD, ~/.pgpass or PGSERVICE"):format(field), "PASSWORD"
  end
  local u = url_mod.normalize(spec)
  local s, err, code = session.connect { url = u, readonly = o.readonly, durability_normal = o.normal }
  if not s then return nil, err, code end
  local ok
  if o.readonly then
    ok, err, code = schema.check_readable(s.conn, u)
  else
    ok, err, code = schema.migrate(s.conn, u)
  end
  if not ok then
    s:close()
    return nil, err, code
  end
  return setmetatable({ _s = s, _url = u, _readonly = o.readonly, _max = o.max }, DB)
end

-- ---- lifecycle ----------------------------------------------------------------------------

function DB:close()
  if self._s then self._s:close() end
  self._s = nil
end

-- True while a task of this process is restoring the lost connection (session.lua S:recover):
-- the group commit waits for the next loop turn instead of starting a reconnect window of its
-- own, which would block the loop (and that task) for up to RECONNECT_TOTAL seconds.
function DB:recovering() return self._s ~= nil and self._s.recovering == true end

function DB:path()
  check_db(self)
  return self._url
end

function DB:is_readonly()
  check_db(self)
  return self._readonly
end

function DB:max_value_bytes()
  check_db(self)
  return self._max
end

function DB:conn() return check_db(self).conn end

-- query(what, sql, ...) -> rows, affected | nil, message, code: one statement outside a
-- transaction, run once more after the connection is reset (worker mode's claims and leases:
-- each is safe to run twice).
function DB:query(what, sql, ...) return check_db(self):query(what, sql, ...) end

-- lock_run(run_id) -> true | nil, msg, "LOCKED": held until close (taken again after a
-- reconnect). hashtext() keys the lock: two run ids with one hash would exclude each other.
function DB:lock_run(run_id)
  local s = check_db(self)
  run_id = checkstring(run_id, 1, "lock_run")
  local rows, err, code = s:query("lock_run", session.TRY_LOCK_SQL, schema.LOCK_CLASS_RUNS, run_id)
  if not rows then return nil, err, code end
  if rows[1].ok then
    if not s.locks[run_id] then
      s.locks[run_id] = true
      s.lock_order[#s.lock_order + 1] = run_id
    end
    return true
  end
  local holder = s.conn:exec(SQL.lock_holder, schema.LOCK_CLASS_RUNS, run_id)
  local h = holder and holder[1]
  local who = "pid unknown"
  if h then
    who = ("PostgreSQL backend pid %d"):format(h.pid)
    if h.application_name and h.application_name ~= "" then who = who .. ", " .. h.application_name end
    local client = h.client_hostname or h.client_addr
    if client then who = who .. ", client " .. client end
  end
  return nil, ("state database %s: run %s is in use by another process (%s)"):format(self._url, run_id, who),
    "LOCKED"
end

-- ---- runs ---------------------------------------------------------------------------------

function DB:run_create(r)
  local s = check_writable(self)
  if type(r) ~= "table" then argerror(1, "run_create", "table expected, got " .. type(r)) end
  local ctx = "run_create"
  local f = {}
  for _, k in ipairs { "id", "workflow_name", "workflow_path", "workflow_hash" } do
    f[k] = apply.field_string(r, k, true, ctx)
  end
  for _, k in ipairs { "params_json", "inputs_json", "policy_json" } do f[k] = apply.field_string(r, k, false, ctx) end
  if f.id == "" then error("run_create: field 'id' must not be empty", 0) end
  for _, v in ipairs { { "params_json", "the parameters of run" }, { "inputs_json", "the input hashes of run" },
    { "policy_json", "the policy of run" } } do
    local err = apply.too_big(self, f[v[1]], v[2], f.id)
    if err then return nil, err, "TOOBIG" end
  end
  local ok, err, code = s:transaction("run_create", function(conn)
    return conn:exec(SQL.run_create, f.id, f.workflow_name, f.workflow_path, f.workflow_hash, f.params_json,
      f.inputs_json, f.policy_json)
  end)
  if ok then return true end
  if code == "PG_23505" then
    return nil, ("state database %s: run_create: run '%s' already exists"):format(self._url, f.id), "EXISTS"
  end
  return nil, err, code
end

-- ---- reads: SQL[fname], run once more after a reset -> rows | nil, err, code -------------

local function all(s, fname, ...)
  local rows, err, code = s:query(fname, SQL[fname], ...)
  if not rows then return nil, err, code end
  return rows
end

local function one(s, fname, ...)
  local rows, err, code = all(s, fname, ...)
  if not rows then return nil, err, code end
  return rows[1]
end

-- The readers whose arguments are all strings: the db, then each argument in order (as the C
-- binding's luaL_checkstring; the count is the caller's, so a missing one is "no value").
local function read(self, fname, ...)
  local s = check_db(self)
  local n, args = select("#", ...), { ... }
  for i = 1, n do args[i] = checkstring(args[i], i, fname) end
  return all(s, fname, unpack(args, 1, n))
end

local function read_one(self, fname, ...)
  local rows, err, code = read(self, fname, ...)
  if not rows then return nil, err, code end
  return rows[1]
end

-- The rows of a run by key: { [row.key] = row[field] }, or the whole row when field is nil.
local function keyed(self, fname, field, run_id)
  local rows, err, code = read(self, fname, run_id)
  if not rows then return nil, err, code end
  local out = {}
  for _, r in ipairs(rows) do
    if field then out[r.key] = r[field] else out[r.key] = r end
  end
  return out
end

function DB:run_get(id) return read_one(self, "run_get", id) end

function DB:run_latest_unfinished(path) return read_one(self, "run_latest_unfinished", path) end

function DB:runs_list(o)
  local s = check_db(self)
  local limit, path = 50, nil
  if o ~= nil then
    if type(o) ~= "table" then argerror(1, "runs_list", "table expected, got " .. type(o)) end
    limit = apply.field_count(o, "limit", 50, "runs_list")
    path = apply.field_string(o, "workflow_path", false, "runs_list")
  end
  return all(s, "runs_list", limit, path)
end

function DB:run_set_status(id, status, exit_code)
  local s = check_writable(self)
  id = checkstring(id, 1, "run_set_status")
  status = checkstring(status, 2, "run_set_status")
  if not RUN_STATUSES[status] then argerror(2, "run_set_status", "unknown run status") end
  if exit_code ~= nil then exit_code = checkinteger(exit_code, 3, "run_set_status") end
  local ok, err, code = s:transaction("run_status", function(conn)
    local rows, affected, state = conn:exec(SQL.run_set_status, id, status, exit_code)
    if not rows then return nil, affected, state end
    if affected == 0 then return nil, ("scimrun:NOTFOUND:run_status: no run '%s'"):format(id) end
    return true
  end)
  if not ok then return nil, err, code end
  return true
end

function DB:run_step_counts(id)
  local rows, err, code = read(self, "run_step_counts", id)
  if not rows then return nil, err, code end
  local out = { started = 0, completed = 0, failed = 0, compensated = 0 }
  for _, r in ipairs(rows) do out[r.state] = r.n end
  return out
end

-- ---- steps and kv -------------------------------------------------------------------------

function DB:step_get(run_id, key) return read_one(self, "step_get", run_id, key) end

function DB:steps_load(run_id) return keyed(self, "steps_load", nil, run_id) end

function DB:apply(batch) return apply.apply(self, check_writable(self), batch) end

function DB:kv_get(run_id, key)
  local row, err, code = read_one(self, "kv_get", run_id, key)
  if row == nil and err then return nil, err, code end
  return row and row.value_json
end

function DB:kv_all(run_id) return keyed(self, "kv_all", "value_json", run_id) end

function DB:step_events(run_id, key) return read(self, "step_events", run_id, key) end

-- ---- prunes -------------------------------------------------------------------------------

local function prune(self, what, retention)
  local s = check_writable(self)
  retention = checknumber(retention, 1, what)
  if retention < 0 then argerror(1, what, "retention must be >= 0 seconds") end
  local ok, deleted, code = s:transaction(what, function(conn)
    local rows, affected, state = conn:exec(SQL[what], retention)
    if not rows then return nil, affected, state end
    return true, affected
  end)
  if not ok then return nil, deleted, code end
  return deleted
end

function DB:events_prune(retention) return prune(self, "events_prune", retention) end
function DB:audit_prune(retention) return prune(self, "audit_prune", retention) end
function DB:dlq_prune(retention) return prune(self, "dlq_prune", retention) end

-- ---- audit trail --------------------------------------------------------------------------

-- audit_list{run_id, user, limit} -> rows, oldest first (the newest `limit` when given)
function DB:audit_list(o)
  local s = check_db(self)
  local run_id = opt_field(o, "run_id", "audit_list")
  local user = opt_field(o, "user", "audit_list")
  local limit = type(o) == "table" and apply.field_count(o, "limit", -1, "audit_list") or -1
  local rows, err, code = all(s, "audit_list", run_id, user, limit >= 0 and limit or nil)
  if not rows then return nil, err, code end
  -- newest first from the query (so LIMIT keeps the newest); oldest first to the caller
  local out, n = {}, #rows
  for i = 1, n do out[i] = rows[n + 1 - i] end
  return out
end

-- ---- dead letters -------------------------------------------------------------------------

function DB:dlq_list(o)
  local s = check_db(self)
  local run_id = opt_field(o, "run_id", "dlq_list")
  local state = check_dlq_state(opt_field(o, "state", "dlq_list"))
  local limit = type(o) == "table" and apply.field_count(o, "limit", -1, "dlq_list") or -1
  return all(s, "dlq_list", run_id, state, limit >= 0 and limit or nil)
end

function DB:dlq_get(id)
  local s = check_db(self)
  id = checkinteger(id, 1, "dlq_get")
  return one(s, "dlq_get", id)
end

function DB:dlq_set_state(id, state)
  local s = check_writable(self)
  id = checkinteger(id, 1, "dlq_set_state")
  state = check_dlq_state(checkstring(state, 2, "dlq_set_state"))
  local ok, err, code = s:transaction("dlq_set_state", function(conn)
    local rows, affected, st = conn:exec(SQL.dlq_set_state, id, state)
    if not rows then return nil, affected, st end
    if affected == 0 then return nil, ("scimrun:NOTFOUND:dlq_set_state: no pending dead letter '%d'"):format(id) end
    return true
  end)
  if not ok then return nil, err, code end
  return true
end

function DB:dlq_count(o)
  local s = check_db(self)
  local state = check_dlq_state(opt_field(o, "state", "dlq_count"))
  local run_id = opt_field(o, "run_id", "dlq_count")
  local row, err, code = one(s, "dlq_count", state, run_id)
  if not row then return nil, err, code end
  return row.n
end

return M
