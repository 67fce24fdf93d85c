/* store_write.c: transactions and the write operations of the store (store.h). */
#include <stdio.h>
#include <string.h>

#include "store_internal.h"

static void bind_text(sqlite3_stmt *st, int i, const char *v) {
  if (v)
    sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC);
  else
    sqlite3_bind_null(st, i);
}

static void bind_count(sqlite3_stmt *st, int i, int n) {
  if (n >= 0)
    sqlite3_bind_int(st, i, n);
  else
    sqlite3_bind_null(st, i);
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
  sqlite3_stmt *st = store_stmt(s, W_RUN_CREATE);
  if (!st)
    return -1;
  bind_text(st, 1, r->id);
  bind_text(st, 2, r->workflow_name);
  bind_text(st, 3, r->workflow_path);
  bind_text(st, 4, r->workflow_hash);
  bind_text(st, 5, r->params_json);
  bind_text(st, 6, r->inputs_json);
  bind_text(st, 7, r->policy_json);
  sqlite3_bind_double(st, 8, store_now());
  return store_write_step(s, st, "run_create", r->id);
}

static int expect_change(store *s, const char *what, const char *kind, const char *id) {
  if (sqlite3_changes(s->db) > 0)
    return 0;
  store_set_error(s, "NOTFOUND", "state file %s: %s: no %s '%s'", s->path, what, kind, id);
  return -1;
}

int store_run_set_status(store *s, const char *id, const char *status, int has_exit,
                         int exit_code) {
  sqlite3_stmt *st = store_stmt(s, W_RUN_SET_STATUS);
  if (!st)
    return -1;
  bind_text(st, 1, id);
  bind_text(st, 2, status);
  if (has_exit)
    sqlite3_bind_int(st, 3, exit_code);
  else
    sqlite3_bind_null(st, 3);
  sqlite3_bind_double(st, 4, store_now());
  if (store_write_step(s, st, "run_status", id) != 0)
    return -1;
  return expect_change(s, "run_status", "run", id);
}

int store_step_start(store *s, const char *run_id, const char *key, int attempts) {
  sqlite3_stmt *st = store_stmt(s, W_STEP_START);
  if (!st)
    return -1;
  bind_text(st, 1, run_id);
  bind_text(st, 2, key);
  bind_count(st, 3, attempts);
  sqlite3_bind_double(st, 4, store_now());
  return store_write_step(s, st, "step_start", run_id);
}

static int step_finish(store *s, int id, const char *what, const char *run_id, const char *key,
                       const char *json, int attempts) {
  sqlite3_stmt *st = store_stmt(s, id);
  if (!st)
    return -1;
  bind_text(st, 1, run_id);
  bind_text(st, 2, key);
  bind_text(st, 3, json);
  bind_count(st, 4, attempts);
  sqlite3_bind_double(st, 5, store_now());
  return store_write_step(s, st, what, run_id);
}

int store_step_complete(store *s, const char *run_id, const char *key, const char *result_json,
                        int attempts) {
  return step_finish(s, W_STEP_COMPLETE, "step_complete", run_id, key, result_json, attempts);
}

int store_step_fail(store *s, const char *run_id, const char *key, const char *error_json,
                    int attempts) {
  return step_finish(s, W_STEP_FAIL, "step_fail", run_id, key, error_json, attempts);
}

int store_step_compensated(store *s, const char *run_id, const char *key) {
  sqlite3_stmt *st = store_stmt(s, W_STEP_COMPENSATED);
  if (!st)
    return -1;
  bind_text(st, 1, run_id);
  bind_text(st, 2, key);
  sqlite3_bind_double(st, 3, store_now());
  if (store_write_step(s, st, "step_compensated", run_id) != 0)
    return -1;
  return expect_change(s, "step_compensated", "step", key);
}

int store_kv_put(store *s, const char *run_id, const char *key, const char *value_json) {
  sqlite3_stmt *st = store_stmt(s, value_json ? W_KV_PUT : W_KV_DELETE);
  if (!st)
    return -1;
  bind_text(st, 1, run_id);
  bind_text(st, 2, key);
  if (value_json) {
    bind_text(st, 3, value_json);
    sqlite3_bind_double(st, 4, store_now());
  }
  return store_write_step(s, st, "kv_put", run_id);
}

int store_dlq_add(store *s, const store_dlq_entry *e, int64_t *id) {
  sqlite3_stmt *st = store_stmt(s, W_DLQ_ADD);
  if (!st)
    return -1;
  const char *texts[] = {e->run_id, e->step_key,     e->operation, e->method,
                         e->url,    e->request_body, e->class_};
  for (int i = 0; i < 7; i++)
    bind_text(st, i + 1, texts[i]);
  bind_count(st, 8, e->status);
  bind_text(st, 9, e->scim_type);
  bind_text(st, 10, e->last_error);
  bind_text(st, 11, e->suggest);
  sqlite3_bind_int(st, 12, e->attempts > 0 ? e->attempts : 0);
  if (e->first_failed_at > 0)
    sqlite3_bind_double(st, 13, e->first_failed_at);
  else
    sqlite3_bind_null(st, 13);
  sqlite3_bind_double(st, 14, store_now());
  sqlite3_bind_int(st, 15, e->is_compensation ? 1 : 0);
  bind_text(st, 16, e->rule);
  if (store_write_step(s, st, "dlq_add", e->run_id) != 0)
    return -1;
  if (id)
    *id = (int64_t)sqlite3_last_insert_rowid(s->db);
  return 0;
}

int store_dlq_set_state(store *s, int64_t id, const char *state) {
  sqlite3_stmt *st = store_stmt(s, W_DLQ_SET_STATE);
  if (!st)
    return -1;
  sqlite3_bind_int64(st, 1, id);
  bind_text(st, 2, state);
  if (store_write_step(s, st, "dlq_set_state", NULL) != 0)
    return -1;
  char idtext[32];
  snprintf(idtext, sizeof idtext, "%lld", (long long)id);
  return expect_change(s, "dlq_set_state", "dead letter", idtext);
}

int store_dlq_prune(store *s, double retention_seconds, int64_t *deleted) {
  sqlite3_stmt *st = store_stmt(s, W_DLQ_PRUNE);
  if (!st)
    return -1;
  sqlite3_bind_double(st, 1, store_now() - retention_seconds);
  if (store_write_step(s, st, "dlq_prune", NULL) != 0)
    return -1;
  if (deleted)
    *deleted = sqlite3_changes(s->db);
  return 0;
}
