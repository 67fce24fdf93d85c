/* store_write.c: transactions and the write operations of the store (store.h). */
#include <stdio.h>
#include <string.h>

#include "store_internal.h"

/* Binding with every failure kept: the first one is recorded in the store and the write is
 * not run. A failed bind leaves its parameter NULL, so running the statement anyway would
 * record, say, a completed step with no result. */
typedef struct {
  store *s;
  sqlite3_stmt *st;
  int failed;
} binder;

static void bind_rc(binder *b, int rc, const char *what) {
  if (rc != SQLITE_OK && !b->failed) {
    b->failed = 1;
    store_fail_sqlite(b->s, rc, what);
  }
}

static void bind_text(binder *b, int i, const char *v) {
  bind_rc(b, v ? sqlite3_bind_text(b->st, i, v, -1, SQLITE_STATIC) : sqlite3_bind_null(b->st, i),
          "bind");
}

/* A JSON value or free text that may be large: refused over the store's limit with a message
 * naming it ("the result of step 'user:ada'") and its size. */
static void bind_value(binder *b, int i, const char *v, const char *what, const char *name) {
  if (!v) {
    bind_rc(b, sqlite3_bind_null(b->st, i), "bind");
    return;
  }
  size_t n = strlen(v);
  size_t limit = store_max_value_bytes(b->s);
  if (n > limit) {
    if (!b->failed)
      store_set_error(b->s, "TOOBIG",
                      "state file %s: %s '%s' is %zu bytes, over the limit of %zu bytes for one "
                      "stored value (store max_value_bytes); it was not recorded",
                      b->s->path, what, name ? name : "?", n, limit);
    b->failed = 1;
    return;
  }
  int rc = sqlite3_bind_text64(b->st, i, v, (sqlite3_uint64)n, SQLITE_STATIC, SQLITE_UTF8);
  if (rc != SQLITE_OK && !b->failed) {
    b->failed = 1;
    store_set_error(b->s, rc == SQLITE_TOOBIG ? "SQLITE_TOOBIG" : "SQLITE_ERROR",
                    "state file %s: %s '%s' (%zu bytes) cannot be stored: %s; it was not recorded",
                    b->s->path, what, name ? name : "?", n, sqlite3_errstr(rc));
  }
}

static void bind_count(binder *b, int i, int n) {
  bind_rc(b, n >= 0 ? sqlite3_bind_int(b->st, i, n) : sqlite3_bind_null(b->st, i), "bind");
}

static void bind_int(binder *b, int i, int n) { bind_rc(b, sqlite3_bind_int(b->st, i, n), "bind"); }

static void bind_double(binder *b, int i, double v) {
  bind_rc(b, sqlite3_bind_double(b->st, i, v), "bind");
}

/* Runs the bound write, unless a bind failed: then it only resets the statement. */
static int run_bound(binder *b, const char *what, const char *run_id) {
  if (b->failed) {
    sqlite3_reset(b->st);
    sqlite3_clear_bindings(b->st);
    return -1;
  }
  return store_write_step(b->s, b->st, what, run_id);
}

/* ---- transactions and writes ------------------------------------------------------- */

static int run_fixed(store *s, int id, const char *what) {
  sqlite3_stmt *st = store_stmt(s, id);
  return st ? store_write_step(s, st, what, NULL) : -1;
}

int store_begin(store *s) { return run_fixed(s, W_BEGIN, "begin"); }
int store_commit(store *s) { return run_fixed(s, W_COMMIT, "commit"); }

void store_rollback(store *s) {
  /* SQLite may already have rolled back (e.g. after SQLITE_FULL during COMMIT). */
  if (!sqlite3_get_autocommit(s->db)) {
    char keep_code[sizeof s->code], keep_err[sizeof s->err];
    memcpy(keep_code, s->code, sizeof keep_code);
    memcpy(keep_err, s->err, sizeof keep_err);
    run_fixed(s, W_ROLLBACK, "rollback");
    memcpy(s->code, keep_code, sizeof keep_code);
    memcpy(s->err, keep_err, sizeof keep_err);
  }
}

int store_run_create(store *s, const store_run *r) {
  binder b = {s, store_stmt(s, W_RUN_CREATE), 0};
  if (!b.st)
    return -1;
  bind_text(&b, 1, r->id);
  bind_text(&b, 2, r->workflow_name);
  bind_text(&b, 3, r->workflow_path);
  bind_text(&b, 4, r->workflow_hash);
  bind_value(&b, 5, r->params_json, "the parameters of run", r->id);
  bind_value(&b, 6, r->inputs_json, "the input hashes of run", r->id);
  bind_value(&b, 7, r->policy_json, "the policy of run", r->id);
  bind_double(&b, 8, store_now());
  return run_bound(&b, "run_create", r->id);
}

static int expect_change(store *s, const char *what, const char *kind, const char *id) {
  if (sqlite3_changes(s->db) > 0)
    return 0;
  store_set_error(s, "NOTFOUND", "state file %s: %s: no %s '%s'", s->path, what, kind, id);
  return -1;
}

int store_run_set_status(store *s, const char *id, const char *status, int has_exit,
                         int exit_code) {
  binder b = {s, store_stmt(s, W_RUN_SET_STATUS), 0};
  if (!b.st)
    return -1;
  bind_text(&b, 1, id);
  bind_text(&b, 2, status);
  if (has_exit)
    bind_int(&b, 3, exit_code);
  else
    bind_rc(&b, sqlite3_bind_null(b.st, 3), "bind");
  bind_double(&b, 4, store_now());
  if (run_bound(&b, "run_status", id) != 0)
    return -1;
  return expect_change(s, "run_status", "run", id);
}

int store_step_start(store *s, const char *run_id, const char *key, int attempts) {
  binder b = {s, store_stmt(s, W_STEP_START), 0};
  if (!b.st)
    return -1;
  bind_text(&b, 1, run_id);
  bind_text(&b, 2, key);
  bind_count(&b, 3, attempts);
  bind_double(&b, 4, store_now());
  return run_bound(&b, "step_start", run_id);
}

static int step_finish(store *s, int id, const char *what, const char *run_id, const char *key,
                       const char *json, const char *json_what, int attempts) {
  binder b = {s, store_stmt(s, id), 0};
  if (!b.st)
    return -1;
  bind_text(&b, 1, run_id);
  bind_text(&b, 2, key);
  bind_value(&b, 3, json, json_what, key);
  bind_count(&b, 4, attempts);
  bind_double(&b, 5, store_now());
  return run_bound(&b, what, run_id);
}

int store_step_complete(store *s, const char *run_id, const char *key, const char *result_json,
                        int attempts) {
  return step_finish(s, W_STEP_COMPLETE, "step_complete", run_id, key, result_json,
                     "the result of step", attempts);
}

int store_step_fail(store *s, const char *run_id, const char *key, const char *error_json,
                    int attempts) {
  return step_finish(s, W_STEP_FAIL, "step_fail", run_id, key, error_json, "the error of step",
                     attempts);
}

int store_step_compensated(store *s, const char *run_id, const char *key) {
  binder b = {s, store_stmt(s, W_STEP_COMPENSATED), 0};
  if (!b.st)
    return -1;
  bind_text(&b, 1, run_id);
  bind_text(&b, 2, key);
  bind_double(&b, 3, store_now());
  if (run_bound(&b, "step_compensated", run_id) != 0)
    return -1;
  return expect_change(s, "step_compensated", "step", key);
}

int store_kv_put(store *s, const char *run_id, const char *key, const char *value_json) {
  binder b = {s, store_stmt(s, value_json ? W_KV_PUT : W_KV_DELETE), 0};
  if (!b.st)
    return -1;
  bind_text(&b, 1, run_id);
  bind_text(&b, 2, key);
  if (value_json) {
    bind_value(&b, 3, value_json, "the value of key", key);
    bind_double(&b, 4, store_now());
  }
  return run_bound(&b, "kv_put", run_id);
}

int store_dlq_add(store *s, const store_dlq_entry *e, int64_t *id) {
  binder b = {s, store_stmt(s, W_DLQ_ADD), 0};
  if (!b.st)
    return -1;
  const char *texts[] = {e->run_id, e->step_key, e->operation, e->method};
  for (int i = 0; i < 4; i++)
    bind_text(&b, i + 1, texts[i]);
  bind_value(&b, 5, e->url, "the URL of the dead letter for step", e->step_key);
  bind_value(&b, 6, e->request_body, "the request body of the dead letter for step", e->step_key);
  bind_text(&b, 7, e->class_);
  bind_count(&b, 8, e->status);
  bind_value(&b, 9, e->scim_type, "the scimType of the dead letter for step", e->step_key);
  bind_value(&b, 10, e->last_error, "the error of the dead letter for step", e->step_key);
  bind_value(&b, 11, e->suggest, "the suggestion of the dead letter for step", e->step_key);
  bind_int(&b, 12, e->attempts > 0 ? e->attempts : 0);
  if (e->first_failed_at > 0)
    bind_double(&b, 13, e->first_failed_at);
  else
    bind_rc(&b, sqlite3_bind_null(b.st, 13), "bind");
  bind_double(&b, 14, store_now());
  bind_int(&b, 15, e->is_compensation ? 1 : 0);
  bind_text(&b, 16, e->rule);
  if (run_bound(&b, "dlq_add", e->run_id) != 0)
    return -1;
  if (id)
    *id = (int64_t)sqlite3_last_insert_rowid(s->db);
  return 0;
}

int store_dlq_set_state(store *s, int64_t id, const char *state) {
  binder b = {s, store_stmt(s, W_DLQ_SET_STATE), 0};
  if (!b.st)
    return -1;
  bind_rc(&b, sqlite3_bind_int64(b.st, 1, id), "bind");
  bind_text(&b, 2, state);
  if (run_bound(&b, "dlq_set_state", NULL) != 0)
    return -1;
  char idtext[32];
  snprintf(idtext, sizeof idtext, "%lld", (long long)id);
  return expect_change(s, "dlq_set_state", "pending dead letter", idtext);
}

int store_dlq_prune(store *s, double retention_seconds, int64_t *deleted) {
  binder b = {s, store_stmt(s, W_DLQ_PRUNE), 0};
  if (!b.st)
    return -1;
  bind_double(&b, 1, store_now() - retention_seconds);
  if (run_bound(&b, "dlq_prune", NULL) != 0)
    return -1;
  if (deleted)
    *deleted = sqlite3_changes(s->db);
  return 0;
}

int store_event_add(store *s, const char *run_id, const char *step_key, const char *event_json) {
  binder b = {s, store_stmt(s, W_EVENT_ADD), 0};
  if (!b.st)
    return -1;
  bind_text(&b, 1, run_id);
  bind_text(&b, 2, step_key);
  bind_double(&b, 3, store_now());
  bind_value(&b, 4, event_json, "the event of step", step_key);
  return run_bound(&b, "event_add", run_id);
}

int store_events_prune(store *s, double retention_seconds, int64_t *deleted) {
  binder b = {s, store_stmt(s, W_EVENTS_PRUNE), 0};
  if (!b.st)
    return -1;
  bind_double(&b, 1, store_now() - retention_seconds);
  if (run_bound(&b, "events_prune", NULL) != 0)
    return -1;
  if (deleted)
    *deleted = sqlite3_changes(s->db);
  return 0;
}

int store_audit_add(store *s, const store_audit_entry *e) {
  binder b = {s, store_stmt(s, W_AUDIT_ADD), 0};
  if (!b.st)
    return -1;
  bind_text(&b, 1, e->run_id);
  bind_double(&b, 2, store_now());
  const char *texts[] = {e->item,          e->operation,   e->method,        e->target,
                         e->resource_type, e->resource_id, e->resource_name, e->member_id};
  for (int i = 0; i < 8; i++)
    bind_value(&b, i + 3, texts[i], "a field of the audit record of", e->item);
  bind_value(&b, 11, e->changes_json, "the changes of the audit record of", e->item);
  bind_text(&b, 12, e->result);
  bind_count(&b, 13, e->status);
  bind_value(&b, 14, e->detail, "the detail of the audit record of", e->item);
  return run_bound(&b, "audit_add", e->run_id);
}

int store_audit_prune(store *s, double retention_seconds, int64_t *deleted) {
  binder b = {s, store_stmt(s, W_AUDIT_PRUNE), 0};
  if (!b.st)
    return -1;
  bind_double(&b, 1, store_now() - retention_seconds);
  if (run_bound(&b, "audit_prune", NULL) != 0)
    return -1;
  if (deleted)
    *deleted = sqlite3_changes(s->db);
  return 0;
}
