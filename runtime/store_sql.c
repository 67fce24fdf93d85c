/* store_sql.c: the schema (forward migrations) and every statement the store runs. */
#include "store_internal.h"

#define STRINGIFY_(x) #x
#define STRINGIFY(x) STRINGIFY_(x)

/* Forward migrations, applied in order; store_migrations[i] takes user_version i to i + 1.
 * Never edit a released entry: append a new one. */
const char *const store_migrations[] = {
    /* 1: everything */
    "CREATE TABLE runs ("
    "  id TEXT PRIMARY KEY NOT NULL,"
    "  workflow_name TEXT NOT NULL,"
    "  workflow_path TEXT NOT NULL,"
    "  workflow_hash TEXT NOT NULL,"
    "  params_json TEXT NOT NULL DEFAULT '{}',"
    "  inputs_json TEXT NOT NULL DEFAULT '{}',"
    "  policy_json TEXT,"
    "  status TEXT NOT NULL CHECK (status IN ('running','interrupted','failed','completed',"
    "                                         'completed_with_dead_letters')),"
    "  created_at REAL NOT NULL,"
    "  updated_at REAL NOT NULL,"
    "  finished_at REAL,"
    "  exit_code INTEGER);"
    "CREATE INDEX runs_by_path ON runs(workflow_path, created_at);"
    "CREATE INDEX runs_by_created ON runs(created_at);"
    "CREATE TABLE steps ("
    "  run_id TEXT NOT NULL REFERENCES runs(id),"
    "  key TEXT NOT NULL,"
    "  state TEXT NOT NULL CHECK (state IN ('started','completed','failed','compensated')),"
    "  attempts INTEGER NOT NULL DEFAULT 0,"
    "  result_json TEXT,"
    "  error_json TEXT,"
    "  started_at REAL NOT NULL,"
    "  updated_at REAL NOT NULL,"
    "  PRIMARY KEY (run_id, key));"
    /* AUTOINCREMENT: an id shown to an operator is never reused after a prune. */
    "CREATE TABLE dead_letters ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  run_id TEXT NOT NULL REFERENCES runs(id),"
    "  step_key TEXT, operation TEXT, method TEXT, url TEXT, request_body TEXT,"
    "  class TEXT, status INTEGER, scim_type TEXT, last_error TEXT, suggest TEXT,"
    "  attempts INTEGER NOT NULL DEFAULT 0,"
    "  first_failed_at REAL NOT NULL,"
    "  last_failed_at REAL NOT NULL,"
    "  state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending','replayed','dropped')),"
    "  is_compensation INTEGER NOT NULL DEFAULT 0,"
    "  rule TEXT);"
    "CREATE INDEX dead_letters_by_state ON dead_letters(state, id);"
    "CREATE INDEX dead_letters_by_run ON dead_letters(run_id, id);"
    "CREATE INDEX dead_letters_by_age ON dead_letters(last_failed_at);"
    /* No foreign key: resilience state may be kept under a run id of its own (e.g. global). */
    "CREATE TABLE kv ("
    "  run_id TEXT NOT NULL,"
    "  key TEXT NOT NULL,"
    "  value_json TEXT NOT NULL,"
    "  updated_at REAL NOT NULL,"
    "  PRIMARY KEY (run_id, key));"
    "PRAGMA application_id = " STRINGIFY(STORE_APPLICATION_ID) ";",
    /* 2: per-attempt history of steps */
    "CREATE TABLE step_events ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  run_id TEXT NOT NULL,"
    "  step_key TEXT NOT NULL,"
    "  at REAL NOT NULL,"
    "  event_json TEXT NOT NULL);"
    "CREATE INDEX step_events_by_step ON step_events(run_id, step_key, id);"
    "CREATE INDEX step_events_by_age ON step_events(at);",
    /* 3: the audit trail, one row per write made at a service provider (a membership change:
     * one row per member). Append-only: rows are never updated; only the policy's retention
     * (audit.retention_days) deletes them. No secret is ever stored here. */
    "CREATE TABLE audit ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  run_id TEXT NOT NULL,"
    "  at REAL NOT NULL,"
    "  item TEXT,"
    "  operation TEXT NOT NULL,"
    "  method TEXT,"
    "  target TEXT,"
    "  resource_type TEXT,"
    "  resource_id TEXT,"
    "  resource_name TEXT,"
    "  member_id TEXT,"
    "  changes_json TEXT,"
    "  result TEXT NOT NULL,"
    "  status INTEGER,"
    "  detail TEXT);"
    "CREATE INDEX audit_by_run ON audit(run_id, id);"
    "CREATE INDEX audit_by_name ON audit(resource_name COLLATE NOCASE);"
    "CREATE INDEX audit_by_resource ON audit(resource_id);"
    "CREATE INDEX audit_by_member ON audit(member_id);"
    "CREATE INDEX audit_by_age ON audit(at);"
    "CREATE TRIGGER audit_append_only BEFORE UPDATE ON audit "
    "BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;",
};
const int store_migration_count = (int)(sizeof store_migrations / sizeof store_migrations[0]);

#define RUN_COLS                                                                                   \
  "id, workflow_name, workflow_path, workflow_hash, params_json, inputs_json, policy_json, "       \
  "status, created_at, updated_at, finished_at, exit_code"
#define STEP_COLS "key, state, attempts, result_json, error_json, started_at, updated_at"
#define DLQ_COLS                                                                                   \
  "id, run_id, step_key, operation, method, url, request_body, class, status, scim_type, "         \
  "last_error, suggest, attempts, first_failed_at, last_failed_at, state, is_compensation, rule"
#define AUDIT_COLS                                                                                 \
  "id, run_id, at, item, operation, method, target, resource_type, resource_id, resource_name, "   \
  "member_id, changes_json, result, status, detail"
/* The ids of the users once called ?2 (a user renamed later is found by either name). */
#define AUDIT_USER_IDS                                                                             \
  "(SELECT resource_id FROM audit WHERE resource_type = 'users' AND resource_name = ?2 "           \
  "COLLATE NOCASE AND resource_id IS NOT NULL)"
#define FINAL_STATES "('failed','completed','completed_with_dead_letters')"

const char *const store_sql[N_STMTS] = {
    [STORE_Q_RUN_GET] = "SELECT " RUN_COLS " FROM runs WHERE id = ?1",
    [STORE_Q_RUN_LATEST_UNFINISHED] =
        "SELECT " RUN_COLS " FROM runs WHERE workflow_path = ?1 "
        "AND status IN ('running','interrupted','failed') ORDER BY created_at DESC, rowid DESC "
        "LIMIT 1",
    [STORE_Q_RUNS_LIST] = "SELECT " RUN_COLS " FROM runs WHERE ?2 IS NULL OR workflow_path = ?2 "
                          "ORDER BY created_at DESC, rowid DESC LIMIT ?1",
    [STORE_Q_RUN_STEP_COUNTS] =
        "SELECT state, count(*) FROM steps WHERE run_id = ?1 GROUP BY state",
    [STORE_Q_STEP_GET] = "SELECT " STEP_COLS " FROM steps WHERE run_id = ?1 AND key = ?2",
    [STORE_Q_STEPS_LOAD] = "SELECT " STEP_COLS " FROM steps WHERE run_id = ?1",
    [STORE_Q_KV_GET] = "SELECT value_json FROM kv WHERE run_id = ?1 AND key = ?2",
    [STORE_Q_KV_ALL] = "SELECT key, value_json FROM kv WHERE run_id = ?1",
    [STORE_Q_DLQ_LIST] = "SELECT " DLQ_COLS " FROM dead_letters WHERE (?1 IS NULL OR run_id = ?1) "
                         "AND (?2 IS NULL OR state = ?2) ORDER BY id LIMIT ?3",
    [STORE_Q_DLQ_GET] = "SELECT " DLQ_COLS " FROM dead_letters WHERE id = ?1",
    [STORE_Q_DLQ_COUNT] = "SELECT count(*) FROM dead_letters WHERE (?1 IS NULL OR state = ?1) "
                          "AND (?2 IS NULL OR run_id = ?2)",
    [STORE_Q_STEP_EVENTS] = "SELECT at, event_json FROM step_events WHERE run_id = ?1 "
                            "AND step_key = ?2 ORDER BY id",
    [STORE_Q_AUDIT_LIST] =
        "SELECT " AUDIT_COLS " FROM audit WHERE (?1 IS NULL OR run_id = ?1) AND (?2 IS NULL "
        "OR resource_id = ?2 OR member_id = ?2 "
        "OR (resource_type = 'users' AND resource_name = ?2 COLLATE NOCASE) "
        "OR (resource_type = 'users' AND resource_id IN " AUDIT_USER_IDS ") "
        "OR member_id IN " AUDIT_USER_IDS ") ORDER BY id DESC LIMIT ?3",
    [W_RUN_CREATE] = "INSERT INTO runs (id, workflow_name, workflow_path, workflow_hash, "
                     "params_json, inputs_json, policy_json, status, created_at, updated_at) "
                     "VALUES (?1, ?2, ?3, ?4, COALESCE(?5, '{}'), COALESCE(?6, '{}'), ?7, "
                     "'running', ?8, ?8)",
    [W_RUN_SET_STATUS] =
        "UPDATE runs SET status = ?2, exit_code = ?3, updated_at = ?4, "
        "finished_at = CASE WHEN ?2 IN " FINAL_STATES " THEN ?4 ELSE NULL END WHERE id = ?1",
    [W_STEP_START] = "INSERT INTO steps (run_id, key, state, attempts, started_at, updated_at) "
                     "VALUES (?1, ?2, 'started', COALESCE(?3, 1), ?4, ?4) "
                     "ON CONFLICT (run_id, key) DO UPDATE SET state = 'started', "
                     "attempts = COALESCE(?3, attempts + 1), updated_at = ?4",
    [W_STEP_COMPLETE] = "INSERT INTO steps (run_id, key, state, attempts, result_json, "
                        "started_at, updated_at) VALUES (?1, ?2, 'completed', COALESCE(?4, 1), "
                        "?3, ?5, ?5) ON CONFLICT (run_id, key) DO UPDATE SET "
                        "state = 'completed', result_json = ?3, error_json = NULL, "
                        "attempts = COALESCE(?4, attempts), updated_at = ?5",
    [W_STEP_FAIL] = "INSERT INTO steps (run_id, key, state, attempts, error_json, started_at, "
                    "updated_at) VALUES (?1, ?2, 'failed', COALESCE(?4, 1), ?3, ?5, ?5) "
                    "ON CONFLICT (run_id, key) DO UPDATE SET state = 'failed', error_json = ?3, "
                    "attempts = COALESCE(?4, attempts), updated_at = ?5",
    [W_STEP_COMPENSATED] = "UPDATE steps SET state = 'compensated', updated_at = ?3 "
                           "WHERE run_id = ?1 AND key = ?2",
    [W_KV_PUT] = "INSERT INTO kv (run_id, key, value_json, updated_at) VALUES (?1, ?2, ?3, ?4) "
                 "ON CONFLICT (run_id, key) DO UPDATE SET value_json = ?3, updated_at = ?4",
    [W_KV_DELETE] = "DELETE FROM kv WHERE run_id = ?1 AND key = ?2",
    [W_DLQ_ADD] = "INSERT INTO dead_letters (run_id, step_key, operation, method, url, "
                  "request_body, class, status, scim_type, last_error, suggest, attempts, "
                  "first_failed_at, last_failed_at, state, is_compensation, rule) VALUES "
                  "(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, COALESCE(?13, ?14), ?14, "
                  "'pending', ?15, ?16)",
    /* only from pending: a replay and a drop racing for one entry cannot both win */
    [W_DLQ_SET_STATE] = "UPDATE dead_letters SET state = ?2 WHERE id = ?1 AND state = 'pending'",
    [W_DLQ_PRUNE] = "DELETE FROM dead_letters WHERE last_failed_at < ?1",
    [W_EVENT_ADD] = "INSERT INTO step_events (run_id, step_key, at, event_json) "
                    "VALUES (?1, ?2, ?3, ?4)",
    [W_EVENTS_PRUNE] = "DELETE FROM step_events WHERE at < ?1",
    [W_AUDIT_ADD] =
        "INSERT INTO audit (run_id, at, item, operation, method, target, resource_type, "
        "resource_id, resource_name, member_id, changes_json, result, status, detail) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    [W_AUDIT_PRUNE] = "DELETE FROM audit WHERE at < ?1",
    [W_BEGIN] = "BEGIN IMMEDIATE",
    [W_COMMIT] = "COMMIT",
    [W_ROLLBACK] = "ROLLBACK",
};
