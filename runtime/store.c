/* store.c: open, lock, check and migrate a state file; errors; the statement cache (store.h). */
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "store_internal.h"

#define BUSY_TIMEOUT_MS 5000
#define N_MIGRATIONS store_migration_count

int store_schema_version(void) { return N_MIGRATIONS; }
const char *store_path(const store *s) { return s->path; }
int store_is_readonly(const store *s) { return s->readonly; }
sqlite3 *store_handle(store *s) { return s->db; }
const char *store_errmsg(const store *s) { return s->err; }
const char *store_errcode(const store *s) { return s->code; }

double store_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int in_list(const char *v, const char *const *list) {
  if (!v)
    return 0;
  for (; *list; list++)
    if (strcmp(v, *list) == 0)
      return 1;
  return 0;
}

int store_run_status_valid(const char *status) {
  static const char *const ok[] = {
      "running", "interrupted", "failed", "completed", "completed_with_dead_letters", NULL};
  return in_list(status, ok);
}
int store_step_state_valid(const char *state) {
  static const char *const ok[] = {"started", "completed", "failed", "compensated", NULL};
  return in_list(state, ok);
}
int store_dlq_state_valid(const char *state) {
  static const char *const ok[] = {"pending", "replayed", "dropped", NULL};
  return in_list(state, ok);
}

/* ---- errors ------------------------------------------------------------------------ */

int store_set_error(store *s, const char *code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  snprintf(s->code, sizeof s->code, "%s", code);
  vsnprintf(s->err, sizeof s->err, fmt, ap);
  va_end(ap);
  return -1;
}

static const char *code_name(int rc) {
  switch (rc & 0xff) {
  case SQLITE_FULL: return "SQLITE_FULL";
  case SQLITE_READONLY: return "SQLITE_READONLY";
  case SQLITE_IOERR: return "SQLITE_IOERR";
  case SQLITE_BUSY: return "SQLITE_BUSY";
  case SQLITE_LOCKED: return "SQLITE_LOCKED";
  case SQLITE_CORRUPT: return "SQLITE_CORRUPT";
  case SQLITE_NOTADB: return "SQLITE_NOTADB";
  case SQLITE_CANTOPEN: return "SQLITE_CANTOPEN";
  case SQLITE_CONSTRAINT: return "SQLITE_CONSTRAINT";
  case SQLITE_NOMEM: return "SQLITE_NOMEM";
  case SQLITE_PERM: return "SQLITE_PERM";
  default: return "SQLITE_ERROR";
  }
}

static const char *hint(int rc) {
  switch (rc & 0xff) {
  case SQLITE_FULL: return "; free disk space, then resume the run";
  case SQLITE_READONLY:
  case SQLITE_PERM: return "; make the file and its directory writable";
  case SQLITE_IOERR: return "; check the disk and filesystem";
  case SQLITE_BUSY: return "; another process holds the database";
  case SQLITE_CORRUPT:
  case SQLITE_NOTADB: return "; restore the file from a backup or move it away";
  default: return "";
  }
}

/* Records a SQLite failure; `what` names the operation. Always returns -1. */
int store_fail_sqlite(store *s, int rc, const char *what) {
  store_set_error(s, code_name(rc), "state file %s: %s failed: %s%s", s->path, what,
                  s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc), hint(rc));
  return -1;
}

/* ---- statements -------------------------------------------------------------------- */

sqlite3_stmt *store_stmt(store *s, int id) {
  if (!s->stmts[id]) {
    int rc = sqlite3_prepare_v3(s->db, store_sql[id], -1, SQLITE_PREPARE_PERSISTENT, &s->stmts[id],
                                NULL);
    if (rc != SQLITE_OK) {
      store_fail_sqlite(s, rc, "prepare");
      s->stmts[id] = NULL;
      return NULL;
    }
  }
  return s->stmts[id];
}

/* Steps a bound write statement once and resets it. `run_id` names the run in a
 * foreign-key failure. Returns 0 or -1. */
int store_write_step(store *s, sqlite3_stmt *st, const char *what, const char *run_id) {
  int rc = sqlite3_step(st);
  int ret = 0;
  if (rc == SQLITE_CONSTRAINT_FOREIGNKEY)
    store_set_error(s, "NOTFOUND", "state file %s: %s: run '%s' does not exist", s->path, what,
                    run_id ? run_id : "?");
  else if (rc == SQLITE_CONSTRAINT_PRIMARYKEY)
    store_set_error(s, "EXISTS", "state file %s: %s: run '%s' already exists", s->path, what,
                    run_id ? run_id : "?");
  else if (rc != SQLITE_DONE)
    store_fail_sqlite(s, rc, what);
  if (rc != SQLITE_DONE)
    ret = -1;
  sqlite3_reset(st);
  sqlite3_clear_bindings(st); /* SQLITE_STATIC pointers must not outlive the call */
  return ret;
}

sqlite3_stmt *store_query_begin(store *s, store_query q) {
  if ((int)q < 0 || q >= STORE_Q_COUNT_)
    return NULL;
  sqlite3_stmt *st = store_stmt(s, (int)q);
  if (st) {
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
  }
  return st;
}

int store_query_end(store *s, sqlite3_stmt *st, int rc) {
  int ret = 0;
  if (rc != SQLITE_DONE && rc != SQLITE_ROW)
    ret = store_fail_sqlite(s, rc, "read");
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  return ret;
}

/* Runs fixed SQL without results (pragmas, migrations). */
static int exec_fixed(store *s, const char *sql, const char *what) {
  int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
  return rc == SQLITE_OK ? 0 : store_fail_sqlite(s, rc, what);
}

/* Runs a pragma that returns one value; copies its text to out. */
static int pragma_value(store *s, const char *sql, char *out, size_t outlen) {
  sqlite3_stmt *st = NULL;
  int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
  if (rc == SQLITE_OK)
    rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    const unsigned char *v = sqlite3_column_text(st, 0);
    snprintf(out, outlen, "%s", v ? (const char *)v : "");
    rc = SQLITE_OK;
  } else if (rc == SQLITE_DONE) {
    out[0] = '\0';
    rc = SQLITE_OK;
  }
  if (rc != SQLITE_OK)
    store_fail_sqlite(s, rc, sql);
  sqlite3_finalize(st);
  return rc == SQLITE_OK ? 0 : -1;
}

/* ---- open ---------------------------------------------------------------------------- */

/* Takes the one-writer lock. flock belongs to the open file description, so the kernel
 * drops it when the process dies, however it dies. */
static int take_lock(store *s) {
  size_t n = strlen(s->path) + sizeof ".lock";
  char *lock_path = malloc(n);
  if (!lock_path) {
    store_set_error(s, "NOMEM", "out of memory");
    return -1;
  }
  snprintf(lock_path, n, "%s.lock", s->path);
  int fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    store_set_error(s, "CANTOPEN",
                    "cannot open lock file %s: %s (the state file's directory must exist and be "
                    "writable)",
                    lock_path, strerror(errno));
    free(lock_path);
    return -1;
  }
  free(lock_path);
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int e = errno;
    char buf[32] = {0};
    ssize_t got = pread(fd, buf, sizeof buf - 1, 0);
    long pid = got > 0 ? strtol(buf, NULL, 10) : 0;
    close(fd);
    if (e != EWOULDBLOCK)
      store_set_error(s, "LOCK", "cannot lock state file %s: %s", s->path, strerror(e));
    else if (pid == (long)getpid())
      store_set_error(s, "LOCKED", "state file %s is already open in this process", s->path);
    else if (pid > 0)
      store_set_error(s, "LOCKED", "state file %s is in use by another scimrun (pid %ld)", s->path,
                      pid);
    else
      store_set_error(s, "LOCKED", "state file %s is in use by another scimrun (pid unknown)",
                      s->path);
    return -1;
  }
  /* The pid is for the message above only; the lock itself is the flock. */
  char buf[32];
  int len = snprintf(buf, sizeof buf, "%ld\n", (long)getpid());
  if (ftruncate(fd, 0) != 0 || pwrite(fd, buf, (size_t)len, 0) != len) {
    /* Not fatal: a contender then reports "pid unknown". */
  }
  s->lock_fd = fd;
  return 0;
}

/* Refuses anything that is not an SQLite file before SQLite sees it. *exists and *empty
 * describe the file. */
static int check_file(store *s, int *exists, int *empty) {
  struct stat st;
  if (stat(s->path, &st) != 0) {
    if (errno != ENOENT) {
      store_set_error(s, "CANTOPEN", "cannot access state file %s: %s", s->path, strerror(errno));
      return -1;
    }
    *exists = 0, *empty = 1;
    return 0;
  }
  *exists = 1, *empty = st.st_size == 0;
  if (!S_ISREG(st.st_mode)) {
    store_set_error(s, "NOTADB", "state file %s is not a regular file", s->path);
    return -1;
  }
  if (*empty)
    return 0;
  static const char magic[16] = "SQLite format 3";
  char head[16] = {0};
  int fd = open(s->path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    store_set_error(s, "CANTOPEN", "cannot read state file %s: %s", s->path, strerror(errno));
    return -1;
  }
  ssize_t got = read(fd, head, sizeof head);
  close(fd);
  if (got != (ssize_t)sizeof head || memcmp(head, magic, sizeof head) != 0) {
    store_set_error(
        s, "NOTADB",
        "state file %s is not an SQLite database; it was left untouched: move it away or "
        "choose another --state file",
        s->path);
    return -1;
  }
  return 0;
}

static int quick_check(store *s) {
  sqlite3_stmt *st = NULL;
  int rc = sqlite3_prepare_v2(s->db, "PRAGMA quick_check", -1, &st, NULL);
  char first[256] = "";
  while (rc == SQLITE_OK || rc == SQLITE_ROW) {
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW && !first[0]) {
      const unsigned char *v = sqlite3_column_text(st, 0);
      snprintf(first, sizeof first, "%s", v ? (const char *)v : "");
    }
  }
  sqlite3_finalize(st);
  int primary = rc & 0xff;
  if (rc != SQLITE_DONE && primary != SQLITE_CORRUPT && primary != SQLITE_NOTADB)
    return store_fail_sqlite(s, rc, "open"); /* e.g. a read-only directory: not corruption */
  if (rc != SQLITE_DONE) {
    store_set_error(
        s, "SQLITE_CORRUPT",
        "state file %s is corrupted or not a database (%s); it was left untouched: restore "
        "it from a backup or move it away",
        s->path, sqlite3_errmsg(s->db));
    return -1;
  }
  if (strcmp(first, "ok") != 0) {
    store_set_error(
        s, "SQLITE_CORRUPT",
        "state file %s is corrupted (quick_check: %s); it was left untouched: restore it "
        "from a backup or move it away",
        s->path, first);
    return -1;
  }
  return 0;
}

static int migrate(store *s, int from) {
  for (int v = from; v < N_MIGRATIONS; v++) {
    char bump[64];
    snprintf(bump, sizeof bump, "PRAGMA user_version = %d", v + 1);
    if (exec_fixed(s, "BEGIN IMMEDIATE", "migration") != 0)
      return -1;
    if (exec_fixed(s, store_migrations[v], "migration") != 0 ||
        exec_fixed(s, bump, "migration") != 0 || exec_fixed(s, "COMMIT", "migration") != 0) {
      store_rollback(s);
      return -1;
    }
  }
  return 0;
}

/* Checks what the file holds, and brings a writable one up to date. */
static int check_schema(store *s) {
  char buf[64];
  if (pragma_value(s, "PRAGMA user_version", buf, sizeof buf) != 0)
    return -1;
  int version = atoi(buf);
  if (pragma_value(s, "PRAGMA application_id", buf, sizeof buf) != 0)
    return -1;
  long app = strtol(buf, NULL, 10);
  if (pragma_value(s, "SELECT count(*) FROM sqlite_master", buf, sizeof buf) != 0)
    return -1;
  int objects = atoi(buf);
  if ((version > 0 && app != STORE_APPLICATION_ID) || (version == 0 && objects > 0)) {
    store_set_error(s, "NOTADB",
                    "state file %s is an SQLite database but not a scimrun state file; it was left "
                    "untouched: choose another --state file",
                    s->path);
    return -1;
  }
  if (version > N_MIGRATIONS) {
    store_set_error(
        s, "SCHEMA",
        "state file %s has schema version %d, newer than this scimrun knows (%d); use the "
        "newer scimrun that wrote it",
        s->path, version, N_MIGRATIONS);
    return -1;
  }
  if (s->readonly) {
    if (version < N_MIGRATIONS) {
      store_set_error(s, "SCHEMA",
                      "state file %s has schema version %d, older than %d; open it once read-write "
                      "(e.g. run or resume a workflow) to upgrade it",
                      s->path, version, N_MIGRATIONS);
      return -1;
    }
    return 0;
  }
  if (pragma_value(s, "PRAGMA journal_mode = WAL", buf, sizeof buf) != 0)
    return -1;
  if (strcmp(buf, "wal") != 0) {
    store_set_error(s, "WAL", "state file %s: cannot switch to WAL mode (journal_mode is %s)",
                    s->path, buf);
    return -1;
  }
  return migrate(s, version);
}

store *store_open(const char *path, const store_options *opt, store_error *err) {
  store_options o = {0, 0};
  if (opt)
    o = *opt;
  store *s = calloc(1, sizeof *s);
  if (!s || !(s->path = strdup(path))) {
    free(s);
    snprintf(err->code, sizeof err->code, "NOMEM");
    snprintf(err->msg, sizeof err->msg, "out of memory");
    return NULL;
  }
  s->lock_fd = -1;
  s->readonly = o.readonly != 0;
  int exists = 0, empty = 1;

  /* Lock before looking, so two writers cannot both create or migrate the file. */
  if (!s->readonly && take_lock(s) != 0)
    goto fail;
  if (check_file(s, &exists, &empty) != 0)
    goto fail;
  if (s->readonly && (!exists || empty)) {
    store_set_error(s, "NOTFOUND", "state file %s does not exist%s", s->path,
                    exists ? " (empty)" : "");
    goto fail;
  }
  if (!exists) {
    /* Created here, not by SQLite, so the mode is 0600 whatever the umask; SQLite gives the
     * -wal and -shm files the mode of the database file. */
    int fd = open(s->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
      store_set_error(s, "CANTOPEN", "cannot create state file %s: %s", s->path, strerror(errno));
      goto fail;
    }
    close(fd);
  }
  int flags = (s->readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE) | SQLITE_OPEN_NOMUTEX;
  int rc = sqlite3_open_v2(s->path, &s->db, flags, NULL);
  if (rc != SQLITE_OK) {
    store_set_error(s, code_name(rc), "cannot open state file %s: %s", s->path,
                    s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
    goto fail;
  }
  sqlite3_extended_result_codes(s->db, 1);
  sqlite3_busy_timeout(s->db, BUSY_TIMEOUT_MS);
  /* SQLite quietly opens a file it cannot write read-only; a writer must know now. */
  if (!s->readonly && sqlite3_db_readonly(s->db, "main") == 1) {
    store_set_error(s, "SQLITE_READONLY",
                    "state file %s is not writable; fix its permissions, or open it readonly",
                    s->path);
    goto fail;
  }
  if (!empty && quick_check(s) != 0)
    goto fail;
  if (check_schema(s) != 0)
    goto fail;
  if (s->readonly) {
    if (exec_fixed(s, "PRAGMA query_only = 1", "open") != 0)
      goto fail;
  } else if (exec_fixed(s,
                        o.durability_normal ? "PRAGMA synchronous = NORMAL"
                                            : "PRAGMA synchronous = FULL",
                        "open") != 0 ||
             exec_fixed(s, "PRAGMA foreign_keys = ON", "open") != 0) {
    goto fail;
  }
  return s;

fail:
  snprintf(err->code, sizeof err->code, "%s", s->code);
  snprintf(err->msg, sizeof err->msg, "%s", s->err);
  store_close(s);
  return NULL;
}

void store_close(store *s) {
  if (!s)
    return;
  if (s->db)
    store_rollback(s);
  for (int i = 0; i < N_STMTS; i++)
    sqlite3_finalize(s->stmts[i]);
  if (s->db)
    sqlite3_close(s->db);
  if (s->lock_fd >= 0)
    close(s->lock_fd); /* releases the flock */
  free(s->path);
  free(s);
}
