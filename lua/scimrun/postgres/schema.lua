-- The PostgreSQL store's schema: forward migrations, like runtime/store_sql.c's for SQLite.
-- MIGRATIONS[v] takes schema version v - 1 to v. Never edit a released entry: append one.
-- Everything lives in the schema `scimrun`; its version is the one row of
-- scimrun.schema_version. Each migration runs in a transaction of its own under a
-- transaction-level advisory lock, so processes starting at once migrate one after the other
-- (the later ones find the work done).
local M = {}

-- Advisory lock keys, in the two-int4 form so they never meet anyone's bigint keys: the first
-- key is 'SCIM' (as the SQLite store's application_id) for the schema (second key 0), plus one
-- for the runs (second key hashtext(run id): scimrun.postgres.store's lock_run).
M.LOCK_CLASS = 1396918605
M.LOCK_SCHEMA = 0
M.LOCK_CLASS_RUNS = M.LOCK_CLASS + 1

M.MIGRATIONS = {
  -- 1: what the SQLite schema holds (its three migrations), with `seq` where SQLite orders by
  -- rowid and steps.fence (the claim fence of the worker that last wrote the step). Times are
  -- seconds since the epoch (double precision, as SQLite's REAL), taken from the database clock.
  [[
CREATE TABLE scimrun.runs (
  seq bigserial NOT NULL UNIQUE,
  id text PRIMARY KEY,
  workflow_name text NOT NULL,
  workflow_path text NOT NULL,
  workflow_hash text NOT NULL,
  params_json text NOT NULL DEFAULT '{}',
  inputs_json text NOT NULL DEFAULT '{}',
  policy_json text,
  status text NOT NULL CHECK (status IN ('running','interrupted','failed','completed',
                                         'completed_with_dead_letters')),
  created_at double precision NOT NULL,
  updated_at double precision NOT NULL,
  finished_at double precision,
  exit_code integer);
CREATE INDEX runs_by_path ON scimrun.runs (workflow_path, created_at);
CREATE INDEX runs_by_created ON scimrun.runs (created_at);
CREATE TABLE scimrun.steps (
  run_id text NOT NULL REFERENCES scimrun.runs(id),
  key text NOT NULL,
  state text NOT NULL CHECK (state IN ('started','completed','failed','compensated')),
  attempts integer NOT NULL DEFAULT 0,
  result_json text,
  error_json text,
  started_at double precision NOT NULL,
  updated_at double precision NOT NULL,
  fence bigint,
  PRIMARY KEY (run_id, key));
CREATE TABLE scimrun.dead_letters (
  id bigserial PRIMARY KEY,
  run_id text NOT NULL REFERENCES scimrun.runs(id),
  step_key text, operation text, method text, url text, request_body text,
  class text, status integer, scim_type text, last_error text, suggest text,
  attempts integer NOT NULL DEFAULT 0,
  first_failed_at double precision NOT NULL,
  last_failed_at double precision NOT NULL,
  state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending','replayed','dropped')),
  is_compensation boolean NOT NULL DEFAULT false,
  rule text);
CREATE INDEX dead_letters_by_state ON scimrun.dead_letters (state, id);
CREATE INDEX dead_letters_by_run ON scimrun.dead_letters (run_id, id);
CREATE INDEX dead_letters_by_age ON scimrun.dead_letters (last_failed_at);
CREATE TABLE scimrun.kv (
  run_id text NOT NULL,
  key text NOT NULL,
  value_json text NOT NULL,
  updated_at double precision NOT NULL,
  PRIMARY KEY (run_id, key));
CREATE TABLE scimrun.step_events (
  id bigserial PRIMARY KEY,
  run_id text NOT NULL,
  step_key text NOT NULL,
  at double precision NOT NULL,
  event_json text NOT NULL);
CREATE INDEX step_events_by_step ON scimrun.step_events (run_id, step_key, id);
CREATE INDEX step_events_by_age ON scimrun.step_events (at);
CREATE TABLE scimrun.audit (
  id bigserial PRIMARY KEY,
  run_id text NOT NULL,
  at double precision NOT NULL,
  item text,
  operation text NOT NULL,
  method text,
  target text,
  resource_type text,
  resource_id text,
  resource_name text,
  member_id text,
  changes_json text,
  result text NOT NULL,
  status integer,
  detail text);
CREATE INDEX audit_by_run ON scimrun.audit (run_id, id);
CREATE INDEX audit_by_name ON scimrun.audit (lower(resource_name));
CREATE INDEX audit_by_resource ON scimrun.audit (resource_id);
CREATE INDEX audit_by_member ON scimrun.audit (member_id);
CREATE INDEX audit_by_age ON scimrun.audit (at);
CREATE FUNCTION scimrun.audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
  RAISE EXCEPTION 'the audit trail is append-only';
END
$fn$;
CREATE TRIGGER audit_append_only BEFORE UPDATE ON scimrun.audit
  FOR EACH ROW EXECUTE FUNCTION scimrun.audit_append_only();
]],
  -- 2: worker mode (issue 16): the items of a run claimed by N workers, the workers, and the
  -- protection of each target they share.
  [[
CREATE TABLE scimrun.items (
  run_id text NOT NULL REFERENCES scimrun.runs(id), batch text NOT NULL, idx integer NOT NULL,
  item_json text NOT NULL, info_json text,
  state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending','claimed','done')),
  owner text, fence bigint NOT NULL DEFAULT 0, lease_until timestamptz,
  in_doubt boolean NOT NULL DEFAULT false, outcome text,
  PRIMARY KEY (run_id, batch, idx));
CREATE INDEX items_claimable ON scimrun.items (run_id, batch, state, idx);
CREATE TABLE scimrun.item_loads (run_id text NOT NULL, batch text NOT NULL, total integer NOT NULL,
  loaded_by text, loaded_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (run_id, batch));
CREATE TABLE scimrun.workers (id text PRIMARY KEY, run_id text NOT NULL, host text, pid integer,
  started_at timestamptz NOT NULL DEFAULT now(), heartbeat_at timestamptz NOT NULL DEFAULT now(),
  stopped_at timestamptz);
CREATE INDEX workers_by_run ON scimrun.workers (run_id, heartbeat_at);
CREATE TABLE scimrun.targets (run_id text NOT NULL, target text NOT NULL, breaker_open_until timestamptz,
  breaker_reason text, rps double precision, rps_source text,
  updated_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (run_id, target));
]],
  -- 3: db:apply's batch writer. One call per batch instead of one round trip per write: the
  -- ops come as a JSON array (in batch order, since a later op may depend on an earlier one of
  -- the same step) and the claims they carry as another. A claim whose fence is no longer the
  -- item's (its lease was lost and the item claimed again) makes its ops skipped and reported
  -- ('lost'); the rows of the live claims are locked FOR SHARE (in key order: no deadlock
  -- between workers) so no claim can overtake them before the commit. Returns one row per
  -- dead letter ('dlq', batch index, id) and per skipped op ('lost', batch index, NULL).
  -- Errors the caller reports as such carry 'scimrun:CODE:' at the start of their message.
  [[
CREATE FUNCTION scimrun.apply_batch(ops json, claims json)
RETURNS TABLE (out_kind text, out_i integer, out_id bigint)
LANGUAGE plpgsql AS $fn$
DECLARE
  o record;
  live integer[] := '{}';
  t double precision := extract(epoch FROM now())::double precision;
  cur_op text;
  cur_run text;
  new_id bigint;
BEGIN
  IF claims IS NOT NULL THEN
    SELECT coalesce(array_agg(c.c), '{}') INTO live FROM (
      SELECT x.c FROM json_to_recordset(claims) AS x(c integer, run_id text, batch text, idx integer, fence bigint)
      JOIN scimrun.items it ON it.run_id = x.run_id AND it.batch = x.batch AND it.idx = x.idx
                           AND it.fence = x.fence
      ORDER BY it.run_id, it.batch, it.idx FOR SHARE OF it) c;
  END IF;
  BEGIN
    FOR o IN SELECT * FROM json_to_recordset(ops) AS x(
        i integer, op text, run_id text, key text, attempts integer, js text, rstatus text,
        exit_code integer, claim integer, fence bigint, step_key text, operation text,
        method text, url text, request_body text, class text, hstatus integer, scim_type text,
        last_error text, suggest text, first_failed_at double precision, is_compensation boolean,
        rule text, item text, target text, resource_type text, resource_id text,
        resource_name text, member_id text, changes_json text, result text, detail text)
    LOOP
      IF o.claim IS NOT NULL AND NOT (o.claim = ANY (live)) THEN
        out_kind := 'lost'; out_i := o.i; out_id := NULL;
        RETURN NEXT;
        CONTINUE;
      END IF;
      cur_op := o.op;
      cur_run := o.run_id;
      CASE o.op
      WHEN 'step_start' THEN
        INSERT INTO scimrun.steps AS s (run_id, key, state, attempts, started_at, updated_at, fence)
        VALUES (o.run_id, o.key, 'started', coalesce(o.attempts, 1), t, t, o.fence)
        ON CONFLICT (run_id, key) DO UPDATE SET state = 'started',
          attempts = coalesce(o.attempts, s.attempts + 1), updated_at = t, fence = o.fence;
      WHEN 'step_complete' THEN
        INSERT INTO scimrun.steps AS s (run_id, key, state, attempts, result_json, started_at,
                                        updated_at, fence)
        VALUES (o.run_id, o.key, 'completed', coalesce(o.attempts, 1), o.js, t, t, o.fence)
        ON CONFLICT (run_id, key) DO UPDATE SET state = 'completed', result_json = o.js,
          error_json = NULL, attempts = coalesce(o.attempts, s.attempts), updated_at = t,
          fence = o.fence;
      WHEN 'step_fail' THEN
        INSERT INTO scimrun.steps AS s (run_id, key, state, attempts, error_json, started_at,
                                        updated_at, fence)
        VALUES (o.run_id, o.key, 'failed', coalesce(o.attempts, 1), o.js, t, t, o.fence)
        ON CONFLICT (run_id, key) DO UPDATE SET state = 'failed', error_json = o.js,
          attempts = coalesce(o.attempts, s.attempts), updated_at = t, fence = o.fence;
      WHEN 'step_compensated' THEN
        UPDATE scimrun.steps SET state = 'compensated', updated_at = t, fence = o.fence
          WHERE run_id = o.run_id AND key = o.key;
        IF NOT FOUND THEN
          RAISE EXCEPTION USING ERRCODE = 'P0002',
            MESSAGE = 'scimrun:NOTFOUND:step_compensated: no step ''' || o.key || '''';
        END IF;
      WHEN 'kv_put' THEN
        IF o.js IS NULL THEN
          DELETE FROM scimrun.kv WHERE run_id = o.run_id AND key = o.key;
        ELSE
          INSERT INTO scimrun.kv (run_id, key, value_json, updated_at) VALUES (o.run_id, o.key, o.js, t)
          ON CONFLICT (run_id, key) DO UPDATE SET value_json = o.js, updated_at = t;
        END IF;
      WHEN 'run_status' THEN
        UPDATE scimrun.runs SET status = o.rstatus, exit_code = o.exit_code, updated_at = t,
          finished_at = CASE WHEN o.rstatus IN ('failed','completed','completed_with_dead_letters')
                             THEN t END
          WHERE id = o.run_id;
        IF NOT FOUND THEN
          RAISE EXCEPTION USING ERRCODE = 'P0002',
            MESSAGE = 'scimrun:NOTFOUND:run_status: no run ''' || o.run_id || '''';
        END IF;
      WHEN 'dlq_add' THEN
        INSERT INTO scimrun.dead_letters (run_id, step_key, operation, method, url, request_body,
          class, status, scim_type, last_error, suggest, attempts, first_failed_at,
          last_failed_at, state, is_compensation, rule)
        VALUES (o.run_id, o.step_key, o.operation, o.method, o.url, o.request_body, o.class,
          o.hstatus, o.scim_type, o.last_error, o.suggest, coalesce(o.attempts, 0),
          coalesce(o.first_failed_at, t), t, 'pending', coalesce(o.is_compensation, false), o.rule)
        RETURNING id INTO new_id;
        out_kind := 'dlq'; out_i := o.i; out_id := new_id;
        RETURN NEXT;
      WHEN 'event_add' THEN
        INSERT INTO scimrun.step_events (run_id, step_key, at, event_json)
        VALUES (o.run_id, o.key, t, o.js);
      WHEN 'audit_add' THEN
        INSERT INTO scimrun.audit (run_id, at, item, operation, method, target, resource_type,
          resource_id, resource_name, member_id, changes_json, result, status, detail)
        VALUES (o.run_id, t, o.item, o.operation, o.method, o.target, o.resource_type,
          o.resource_id, o.resource_name, o.member_id, o.changes_json, o.result, o.hstatus,
          o.detail);
      ELSE
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'scimrun:MISUSE:unknown op ' || o.op;
      END CASE;
    END LOOP;
  EXCEPTION WHEN foreign_key_violation THEN
    RAISE EXCEPTION USING ERRCODE = 'P0002',
      MESSAGE = 'scimrun:NOTFOUND:' || cur_op || ': run ''' || cur_run || ''' does not exist';
  END;
END
$fn$;
]],
}

M.VERSION = #M.MIGRATIONS

-- The text of a libpq error without its "ERROR:  " prefix and CONTEXT lines.
function M.clean_error(err)
  err = tostring(err or "unknown error")
  err = err:gsub("^%u+:%s+", "")
  err = err:gsub("\n.*$", "")
  return err
end

-- A failure to read or migrate the schema: code SCHEMA, or CONNECTION when that broke.
local function fail(url, what, err, state)
  return nil, ("state database %s: %s: %s"):format(url, what, M.clean_error(err)),
    state == "CONNECTION" and state or "SCHEMA"
end

-- The schema version of the database, 0 when it has none. conn: a scimrun.pg connection.
-- Returns version | nil, err, sqlstate. The catalog is read as a table, not through
-- to_regclass(): opening pg_class makes the backend take in the catalog changes committed
-- since its transaction began (after waiting for the migration lock, another process's).
function M.version(conn)
  local rows, err, state = conn:exec("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c "
    .. "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
    .. "WHERE n.nspname = 'scimrun' AND c.relname = 'schema_version') AS present")
  if not rows then return nil, err, state end
  if not rows[1].present then return 0 end
  rows, err, state = conn:exec("SELECT version FROM scimrun.schema_version")
  if not rows then return nil, err, state end
  return rows[1] and rows[1].version or 0
end

local function newer(url, v)
  return nil, ("state database %s has schema version %d, newer than this scimrun knows (%d); use the newer "
    .. "scimrun that wrote it"):format(url, v, M.VERSION), "SCHEMA"
end

-- Checks the version a reader needs: the schema exists and is this build's.
function M.check_readable(conn, url)
  local v, err, state = M.version(conn)
  if not v then return fail(url, "reading the schema version failed", err, state) end
  if v == 0 then
    return nil, ("state database %s has no scimrun schema (nothing was recorded there yet); run a workflow "
      .. "with --state %s first"):format(url, url), "NOTFOUND"
  end
  if v > M.VERSION then return newer(url, v) end
  if v < M.VERSION then
    return nil, ("state database %s has schema version %d, older than %d; open it once read-write (e.g. run or "
      .. "resume a workflow) to upgrade it"):format(url, v, M.VERSION), "SCHEMA"
  end
  return true
end

-- One migration step in its own transaction, under the lock: re-reads the version there (a
-- process that migrated meanwhile leaves nothing to do). Returns the version reached.
local function step(conn, url)
  local function abort(what, err, state)
    conn:exec("ROLLBACK")
    return fail(url, what, err, state)
  end
  local ok, err, state = conn:exec("BEGIN")
  if not ok then return fail(url, "migration: BEGIN failed", err, state) end
  ok, err, state = conn:exec("SELECT pg_advisory_xact_lock($1::int, $2::int)", tostring(M.LOCK_CLASS),
    tostring(M.LOCK_SCHEMA))
  if not ok then return abort("migration: taking the schema lock failed", err, state) end
  local v
  v, err, state = M.version(conn)
  if not v then return abort("migration: reading the schema version failed", err, state) end
  if v == 0 then
    -- CREATE SCHEMA IF NOT EXISTS needs the CREATE privilege on the database even when the
    -- schema exists: a schema a DBA made for scimrun beforehand is used as it is.
    local rows
    rows, err, state = conn:exec("SELECT to_regnamespace('scimrun') IS NOT NULL AS present")
    if not rows then return abort("migration: looking for schema scimrun failed", err, state) end
    if not rows[1].present then
      ok, err, state = conn:exec("CREATE SCHEMA scimrun")
      if not ok then return abort("migration: creating schema scimrun failed", err, state) end
    end
    ok, err, state = conn:exec_script([[
CREATE TABLE IF NOT EXISTS scimrun.schema_version (
  one boolean PRIMARY KEY DEFAULT true CHECK (one),
  version integer NOT NULL);
INSERT INTO scimrun.schema_version (version) VALUES (0) ON CONFLICT DO NOTHING;
]])
    if not ok then return abort("migration: creating scimrun.schema_version failed", err, state) end
  end
  if v > M.VERSION then
    conn:exec("ROLLBACK")
    return newer(url, v)
  end
  if v == M.VERSION then
    ok, err, state = conn:exec("COMMIT")
    if not ok then return fail(url, "migration: COMMIT failed", err, state) end
    return v
  end
  ok, err, state = conn:exec_script(M.MIGRATIONS[v + 1])
  if not ok then return abort(("migration to schema version %d failed"):format(v + 1), err, state) end
  ok, err, state = conn:exec("UPDATE scimrun.schema_version SET version = $1::int", tostring(v + 1))
  if not ok then return abort("migration: recording the schema version failed", err, state) end
  ok, err, state = conn:exec("COMMIT")
  if not ok then return fail(url, "migration: COMMIT failed", err, state) end
  return v + 1
end

-- Brings a writable database up to this build's schema, refusing a newer one.
-- Returns true | nil, err, code.
function M.migrate(conn, url)
  local v, err, state = M.version(conn)
  if not v then return fail(url, "reading the schema version failed", err, state) end
  if v > M.VERSION then return newer(url, v) end
  while v < M.VERSION do
    local code
    v, err, code = step(conn, url)
    if not v then return nil, err, code end
  end
  return true
end

return M
