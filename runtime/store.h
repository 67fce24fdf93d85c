/*
 * store: the durable checkpoint store, one SQLite database per state file.
 *
 * Contract:
 *  - store_open() creates the file with mode 0600 when absent (never when readonly), refuses a
 *    file that is not SQLite or fails `PRAGMA quick_check` without writing to it, refuses a
 *    schema newer than this build, applies forward migrations, and (unless readonly) takes the
 *    one-writer lock of the FILE (below) that the kernel releases when the process dies.
 *  - A writer tightens a pre-existing state file (and its -wal/-shm) that other users may read
 *    to mode 0600, logging it at info level, or refuses the file when that fails ("PERM").
 *  - WAL mode; synchronous=FULL (default) or NORMAL; busy_timeout; foreign keys on.
 *  - Every function returning int returns 0 on success and -1 on operational failure, with
 *    store_errmsg() naming the file and store_errcode() a short code ("SQLITE_FULL",
 *    "NOTFOUND", "TOOBIG", ...). Nothing here aborts the process. Every SQLite error of a write
 *    (bind, step, commit) is reported; none is ignored.
 *  - A JSON value (step result or error, kv value, dead-letter text) longer than
 *    max_value_bytes (default STORE_MAX_VALUE_BYTES, 16 MiB) is refused with code "TOOBIG",
 *    naming what it was and its size; nothing of that write is recorded.
 *  - Writes outside store_begin()/store_commit() commit one by one; inside, they are atomic and
 *    a failed batch must be ended with store_rollback(), leaving earlier commits intact.
 *  - All SQL is fixed text prepared once per connection; user data is only ever bound.
 *  - JSON columns are opaque text; timestamps are wall-clock seconds (REAL).
 *
 * The lock belongs to the file, not to the name (issue 12, item 1). A writer takes
 * flock(LOCK_EX) on the database file itself, so the same path, a symbolic link and a hard link
 * all meet the same lock (it is keyed by device and inode in the kernel). A second writer
 * through any name is refused with code "LOCKED" and the holder's pid (read from /proc/locks;
 * "pid unknown" where that is not available). Why flock on the database file:
 *  - SQLite locks the file with POSIX fcntl() byte-range locks; on Linux flock() locks are a
 *    separate kind and never conflict with them, so readers (other processes, the sqlite3
 *    shell) keep working during a run, and SQLite's own locking is untouched. (An OFD or fcntl
 *    lock would share SQLite's lock space; flock does not. On NFS, Linux emulates flock with
 *    fcntl, but SQLite's WAL mode needs a local filesystem anyway.)
 *  - POSIX locks belong to the process and the inode: close() of ANY descriptor of the file
 *    drops all of the process's locks on it, including SQLite's (https://www.sqlite.org/
 *    howtocorrupt.html "Posix advisory locks canceled by a separate thread doing close()", and
 *    lockingv3.html on POSIX advisory locks). So a descriptor this module opens on a state
 *    file is never closed while a store of this process still has that file open: it is
 *    parked and closed with the last one (as SQLite itself does), and the lock descriptor is
 *    closed only after sqlite3_close().
 *  - The name can be re-pointed between open() and flock(): after locking, the path is
 *    stat()ed again and must still be the locked device and inode (else retried, then refused).
 *  - SQLite keeps the -wal and -shm files beside the NAME it opens, so a writer opens SQLite
 *    through the resolved real path (symlinks lead to one log), and refuses a state file with
 *    more than one hard link (code "LINKED"): after a crash, committed transactions would sit
 *    in one name's log, invisible through the other name, which would then overwrite them
 *    (howtocorrupt.html "Multiple links to the same file"). Readers need no lock and are not
 *    refused (through a second hard link they may see a stale file, never harm it).
 * The old "<path>.lock" files are no longer used (a leftover one is harmless).
 *
 * Files: store.c (open, lock, checks), store_write.c (writes), store_sql.c (schema, SQL),
 * store_sync.c (deferred sync), store_reader.c (companion reader);
 * the Lua binding is store_lua.c + store_lua_apply.c.
 */
#ifndef SCIMRUN_STORE_H
#define SCIMRUN_STORE_H

#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

typedef struct store store;

/* Highest schema version this build knows (PRAGMA user_version). */
int store_schema_version(void);

/* Default limit on one stored JSON value; larger ones are refused ("TOOBIG"). */
#define STORE_MAX_VALUE_BYTES ((size_t)16 * 1024 * 1024)

typedef struct {
  int durability_normal;  /* 0: synchronous=FULL, 1: synchronous=NORMAL */
  int readonly;           /* open without creating, migrating or locking */
  size_t max_value_bytes; /* 0: STORE_MAX_VALUE_BYTES */
} store_options;

typedef struct {
  char code[32]; /* "LOCKED", "LINKED", "PERM", "NOTADB", "SQLITE_CORRUPT", "SCHEMA", "CANTOPEN",
                    "NOTFOUND", ... */
  char msg[768]; /* names the file and what to do */
} store_error;

/* Returns NULL and fills *err on failure. */
store *store_open(const char *path, const store_options *opt, store_error *err);
void store_close(store *s);
const char *store_path(const store *s);
int store_is_readonly(const store *s);
size_t store_max_value_bytes(const store *s);
sqlite3 *store_handle(store *s); /* for tests and read queries */
const char *store_errmsg(const store *s);
const char *store_errcode(const store *s);
double store_now(void); /* wall clock, seconds */

/* Deferred sync (store_sync.c), so a group commit's fdatasync need not stop the event loop.
 * With synchronous=FULL chosen at open, store_defer_sync(s, 1) makes the following commits
 * write their log without syncing it (synchronous=NORMAL) until store_defer_sync(s, 0). Such a
 * commit is durable only once store_wal_sync() of a descriptor from store_wal_dup() has
 * returned 0 after it: nothing written that way may be reported durable before. The
 * descriptor of the -wal file is opened once (after the first deferred commit) and kept while
 * the store is open, so a write-back error that SQLite's own fsync saw first (a checkpoint) is
 * still reported to it, and a renamed or replaced path cannot make a sync touch another file.
 * With NORMAL chosen at open, store_defer_sync does nothing (the log is synced at checkpoints,
 * as SQLite does). */
int store_durability_full(const store *s);
int store_defer_sync(store *s, int on);
/* Opens the log's descriptor unless open: 0, or -1 with the error set ("SYNC"). */
int store_wal_open(store *s);
/* A new descriptor of the log (the caller closes it; it may be used from any thread), or -1
 * with the error set ("SYNC"). */
int store_wal_dup(store *s);
/* fdatasync(fd): 0, or an errno value. */
int store_wal_sync(int fd);
const char *store_wal_path(store *s); /* the -wal file beside what SQLite opened; NULL on OOM */

/* Companion reader (store_reader.c): a second, read-only connection to the file of the open
 * writer w, for reads made while w is busy on another thread (the Lua binding's group commit
 * on the thread pool). It sees every transaction w has committed, none in progress; it skips
 * the checks w made at open and takes no lock of its own, and is refused when w's resolved name
 * no longer leads to w's file (device and inode). Close it with store_close() before
 * w. NULL with *err filled on failure. */
store *store_open_reader_of(const store *w, store_error *err);

int store_begin(store *s); /* BEGIN IMMEDIATE */
int store_commit(store *s);
void store_rollback(store *s); /* no-op outside a transaction */

int store_run_status_valid(const char *status);
int store_step_state_valid(const char *state);
int store_dlq_state_valid(const char *state);

typedef struct {
  const char *id, *workflow_name, *workflow_path, *workflow_hash;
  const char *params_json, *inputs_json, *policy_json; /* may be NULL */
} store_run;

int store_run_create(store *s, const store_run *r);
/* Sets finished_at for failed, completed and completed_with_dead_letters; clears it otherwise.
 * has_exit == 0 stores a NULL exit code. NOTFOUND when the run does not exist. */
int store_run_set_status(store *s, const char *id, const char *status, int has_exit, int exit_code);

/* attempts < 0: step_start counts one more attempt than before (1 for a new step);
 * step_complete and step_fail keep the previous count (1 for a new step). */
int store_step_start(store *s, const char *run_id, const char *key, int attempts);
int store_step_complete(store *s, const char *run_id, const char *key, const char *result_json,
                        int attempts);
int store_step_fail(store *s, const char *run_id, const char *key, const char *error_json,
                    int attempts);
/* NOTFOUND when the step was never recorded. */
int store_step_compensated(store *s, const char *run_id, const char *key);
/* value_json == NULL deletes the key. */
int store_kv_put(store *s, const char *run_id, const char *key, const char *value_json);

typedef struct {
  const char *run_id, *step_key, *operation, *method, *url, *request_body;
  const char *class_, *scim_type, *last_error, *suggest, *rule; /* any may be NULL but run_id */
  int status;                                                   /* HTTP status, < 0 for none */
  int attempts;
  int is_compensation;
  double first_failed_at; /* <= 0: now */
} store_dlq_entry;

int store_dlq_add(store *s, const store_dlq_entry *e, int64_t *id);
/* A pending entry becomes `state`; NOTFOUND if there is no such id or it is not pending. */
int store_dlq_set_state(store *s, int64_t id, const char *state);
int store_dlq_prune(store *s, double retention_seconds, int64_t *deleted);
/* Per-attempt history of a step (the retry layer's events, JSON without secrets), kept so a
 * failed item's attempts can be shown later; pruned by age like dead letters. */
int store_event_add(store *s, const char *run_id, const char *step_key, const char *event_json);
int store_events_prune(store *s, double retention_seconds, int64_t *deleted);

/* One row of the audit trail: a write made at a service provider. Append-only (a trigger
 * refuses UPDATE); pruned by age only (audit.retention_days). Never a secret. */
typedef struct {
  const char *run_id, *item, *operation, *method, *target, *resource_type, *resource_id;
  const char *resource_name, *member_id, *changes_json, *result, *detail; /* NULL: none */
  int status;                                                             /* < 0: none */
} store_audit_entry;

int store_audit_add(store *s, const store_audit_entry *e);
int store_audit_prune(store *s, double retention_seconds, int64_t *deleted);

/* Read queries: a cached statement, reset and unbound. Bind, step, then store_query_end(). */
typedef enum {
  STORE_Q_RUN_GET,               /* ?1 id */
  STORE_Q_RUN_LATEST_UNFINISHED, /* ?1 workflow_path */
  STORE_Q_RUNS_LIST,             /* ?1 limit, ?2 workflow_path or NULL */
  STORE_Q_RUN_STEP_COUNTS,       /* ?1 run_id -> state, n */
  STORE_Q_STEP_GET,              /* ?1 run_id, ?2 key */
  STORE_Q_STEPS_LOAD,            /* ?1 run_id */
  STORE_Q_KV_GET,                /* ?1 run_id, ?2 key -> value_json */
  STORE_Q_KV_ALL,                /* ?1 run_id -> key, value_json */
  STORE_Q_DLQ_LIST,              /* ?1 run_id or NULL, ?2 state or NULL, ?3 limit (-1 all) */
  STORE_Q_DLQ_GET,               /* ?1 id */
  STORE_Q_DLQ_COUNT,             /* ?1 state or NULL, ?2 run_id or NULL -> n */
  STORE_Q_STEP_EVENTS,           /* ?1 run_id, ?2 step_key -> at, event_json (oldest first) */
  STORE_Q_AUDIT_LIST, /* ?1 run_id or NULL, ?2 user (name, old name or id) or NULL, ?3 limit
                         (-1 all) -> rows, newest first */
  STORE_Q_COUNT_
} store_query;

/* NULL (with store_errmsg set) if the statement cannot be prepared. */
sqlite3_stmt *store_query_begin(store *s, store_query q);
/* rc is the last sqlite3_step result: SQLITE_DONE or SQLITE_ROW is success, anything else
 * records the error. Returns 0 or -1. */
int store_query_end(store *s, sqlite3_stmt *st, int rc);

#endif
