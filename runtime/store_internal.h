/*
 * store_internal: what store.c, store_write.c and store_sql.c share; not for other files.
 */
#ifndef SCIMRUN_STORE_INTERNAL_H
#define SCIMRUN_STORE_INTERNAL_H

#include <sys/types.h>

#include "store.h"

/* 'SCIM': marks a database as ours, so an unrelated SQLite file is never migrated. */
#define STORE_APPLICATION_ID 1396918605 /* 0x5343494D */

/* Statement ids: the read queries of store.h, then the writes. */
enum store_stmt_id {
  W_RUN_CREATE = STORE_Q_COUNT_,
  W_RUN_SET_STATUS,
  W_STEP_START,
  W_STEP_COMPLETE,
  W_STEP_FAIL,
  W_STEP_COMPENSATED,
  W_KV_PUT,
  W_KV_DELETE,
  W_DLQ_ADD,
  W_DLQ_SET_STATE,
  W_DLQ_PRUNE,
  W_EVENT_ADD,
  W_EVENTS_PRUNE,
  W_AUDIT_ADD,
  W_AUDIT_PRUNE,
  W_BEGIN,
  W_COMMIT,
  W_ROLLBACK,
  N_STMTS
};

/* Fixed SQL text per statement id, and the forward migrations (store_sql.c). */
extern const char *const store_sql[N_STMTS];
extern const char *const store_migrations[];
extern const int store_migration_count;

struct open_file; /* store.c: a state file this process has open, by device and inode */

struct store {
  sqlite3 *db;
  char *path;             /* as given: every message names it */
  char *real;             /* resolved real path: what SQLite opens */
  char *wal;              /* real + "-wal": the log a deferred sync makes durable */
  int wal_fd;             /* the log, opened at the first deferred commit; -1 before */
  int lock_fd;            /* writer: the database file, flock()ed */
  struct open_file *file; /* registered while open */
  int readonly;
  int durability_normal; /* synchronous=NORMAL chosen at open: nothing to sync later */
  size_t max_value;
  sqlite3_stmt *stmts[N_STMTS];
  char code[32];
  char err[768];
};

/* How long a connection waits for another's lock before SQLITE_BUSY. */
#define BUSY_TIMEOUT_MS 5000

/* A store with its path copied and no descriptor open, or NULL with *err set ("NOMEM");
 * store_close() frees it. */
store *store_alloc(const char *path, store_error *err);

/* The cached prepared statement for id (prepared on first use), or NULL with the error set. */
sqlite3_stmt *store_stmt(store *s, int id);
/* Steps a bound write once, resets it and clears its bindings; run_id names the run in a
 * foreign-key or primary-key failure. Returns 0 or -1. */
int store_write_step(store *s, sqlite3_stmt *st, const char *what, const char *run_id);
/* Record an error; both return -1. */
int store_set_error(store *s, const char *code, const char *fmt, ...);
int store_fail_sqlite(store *s, int rc, const char *what);

#endif
