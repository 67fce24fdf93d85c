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
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "store_internal.h"

#define N_MIGRATIONS store_migration_count

int store_schema_version(void) { return N_MIGRATIONS; }
const char *store_path(const store *s) { return s->path; }
int store_is_readonly(const store *s) { return s->readonly; }
size_t store_max_value_bytes(const store *s) { return s->max_value; }
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
  case SQLITE_TOOBIG: return "SQLITE_TOOBIG";
  case SQLITE_RANGE: return "SQLITE_RANGE";
  case SQLITE_MISUSE: return "SQLITE_MISUSE";
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
  case SQLITE_TOOBIG: return "; store less (e.g. ids, not whole resources)";
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

/* ---- files this process has open ---------------------------------------------------------
 * close() of any descriptor of a file drops every POSIX lock this process holds on it,
 * SQLite's included. So while a store of this process has a state file open, a descriptor this
 * module opened on the same file is parked here instead of closed, and closed together with
 * the last store of that file. The store is used from one thread (SQLITE_OPEN_NOMUTEX). */

struct open_file {
  dev_t dev;
  ino_t ino;
  int users;  /* stores of this process with the file open */
  int writer; /* one of them is its writer */
  int *parked;
  int nparked, cap;
  struct open_file *next;
};

static struct open_file *open_files;

static struct open_file *file_find(dev_t dev, ino_t ino) {
  for (struct open_file *f = open_files; f; f = f->next)
    if (f->dev == dev && f->ino == ino)
      return f;
  return NULL;
}

/* Registers one more user of the file; NULL when out of memory. */
static struct open_file *file_use(dev_t dev, ino_t ino) {
  struct open_file *f = file_find(dev, ino);
  if (!f) {
    f = calloc(1, sizeof *f);
    if (!f)
      return NULL;
    f->dev = dev, f->ino = ino;
    f->next = open_files;
    open_files = f;
  }
  f->users++;
  return f;
}

/* Closes fd, a descriptor of (dev, ino), unless a store of this process has that file open:
 * then it is kept until the last one closes. */
static void close_fd_of(dev_t dev, ino_t ino, int fd) {
  struct open_file *f = file_find(dev, ino);
  if (f && f->users > 0) {
    if (f->nparked == f->cap) {
      int cap = f->cap ? 2 * f->cap : 4;
      int *p = realloc(f->parked, (size_t)cap * sizeof *p);
      if (!p)
        return; /* keeping a descriptor open is harmless; closing it is not */
      f->parked = p, f->cap = cap;
    }
    f->parked[f->nparked++] = fd;
    return;
  }
  close(fd);
}

/* One user less; fd (or -1), that user's descriptor of the file, is closed or parked. The last
 * user closes the parked descriptors and forgets the file. */
static void file_release(struct open_file *f, int fd) {
  f->users--;
  if (fd >= 0)
    close_fd_of(f->dev, f->ino, fd);
  if (f->users > 0)
    return;
  for (int i = 0; i < f->nparked; i++)
    close(f->parked[i]);
  free(f->parked);
  for (struct open_file **pp = &open_files; *pp; pp = &(*pp)->next)
    if (*pp == f) {
      *pp = f->next;
      break;
    }
  free(f);
}

/* ---- open ---------------------------------------------------------------------------- */

/* The pid holding a flock on (dev, ino), from /proc/locks (Linux); 0 when unknown. */
static long flock_holder(dev_t dev, ino_t ino) {
  FILE *f = fopen("/proc/locks", "r");
  if (!f)
    return 0;
  char line[256];
  long pid = 0;
  while (!pid && fgets(line, sizeof line, f)) {
    /* "12: FLOCK  ADVISORY  WRITE 4242 fe:00:10952811 0 EOF"; waiters are "12: -> FLOCK ..." */
    char type[16];
    long p;
    unsigned maj, min;
    unsigned long long ino_read;
    if (sscanf(line, "%*d: %15s %*s %*s %ld %x:%x:%llu", type, &p, &maj, &min, &ino_read) == 5 &&
        strcmp(type, "FLOCK") == 0 && maj == major(dev) && min == minor(dev) &&
        ino_read == (unsigned long long)ino)
      pid = p;
  }
  fclose(f);
  return pid;
}

static int refuse_locked(store *s, int err, dev_t dev, ino_t ino) {
  if (err != EWOULDBLOCK)
    return store_set_error(s, "LOCK", "cannot lock state file %s: %s", s->path, strerror(err));
  long pid = flock_holder(dev, ino);
  if (pid == (long)getpid())
    return store_set_error(s, "LOCKED", "state file %s is already open in this process", s->path);
  if (pid > 0)
    return store_set_error(s, "LOCKED", "state file %s is in use by another scimrun (pid %ld)",
                           s->path, pid);
  return store_set_error(s, "LOCKED", "state file %s is in use by another scimrun (pid unknown)",
                         s->path);
}

/* Opens (creating it 0600 when absent) and locks the database file itself: the one-writer lock
 * of a state file, whatever name it is reached by (store.h). *st describes the locked file. */
static int open_and_lock(store *s, struct stat *st) {
  for (int attempt = 0;; attempt++) {
    int fd, retry = attempt < 3, created = 0;
    if (stat(s->path, st) == 0) {
      if (!S_ISREG(st->st_mode))
        return store_set_error(s, "NOTADB", "state file %s is not a regular file", s->path);
      struct open_file *f = file_find(st->st_dev, st->st_ino);
      if (f && f->writer) /* refused without opening: a close() would drop SQLite's locks */
        return store_set_error(s, "LOCKED", "state file %s is already open in this process",
                               s->path);
      fd = open(s->path, O_RDWR | O_NOCTTY | O_CLOEXEC);
    } else if (errno == ENOENT) {
      /* Created here, not by SQLite, so the mode is 0600 whatever the umask; SQLite gives the
       * -wal and -shm files the mode of the database file. O_EXCL: never through a dangling
       * symbolic link. */
      created = 1;
      fd = open(s->path, O_RDWR | O_CREAT | O_EXCL | O_NOCTTY | O_CLOEXEC, 0600);
      if (fd < 0 && errno == EEXIST && retry)
        continue; /* created by someone else meanwhile */
    } else {
      return store_set_error(s, "CANTOPEN", "cannot access state file %s: %s", s->path,
                             strerror(errno));
    }
    if (fd < 0) {
      int e = errno;
      if (!created && (e == EACCES || e == EROFS || e == EPERM))
        return store_set_error(
            s, "SQLITE_READONLY",
            "state file %s is not writable (%s); fix its permissions, or open it readonly", s->path,
            strerror(e));
      return store_set_error(s, "CANTOPEN",
                             "cannot %s state file %s: %s (the state file's directory must exist "
                             "and be writable)",
                             created ? "create" : "open", s->path, strerror(e));
    }
    if (fstat(fd, st) != 0 || !S_ISREG(st->st_mode)) {
      close(fd); /* not a store file of ours */
      return store_set_error(s, "NOTADB", "state file %s is not a regular file", s->path);
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
      int e = errno;
      close_fd_of(st->st_dev, st->st_ino, fd);
      return refuse_locked(s, e, st->st_dev, st->st_ino);
    }
    /* The name may have been pointed at another file between open() and flock(). */
    struct stat now;
    if (stat(s->path, &now) == 0 && now.st_dev == st->st_dev && now.st_ino == st->st_ino) {
      s->lock_fd = fd;
      if (fstat(fd, st) != 0) /* fresh size and link count, now that nobody else writes */
        return store_set_error(s, "CANTOPEN", "cannot access state file %s: %s", s->path,
                               strerror(errno));
      if (!(s->file = file_use(st->st_dev, st->st_ino)))
        return store_set_error(s, "NOMEM", "out of memory");
      s->file->writer = 1;
      return 0;
    }
    flock(fd, LOCK_UN);
    close_fd_of(st->st_dev, st->st_ino, fd);
    if (!retry)
      return store_set_error(s, "CANTOPEN",
                             "state file %s was replaced while it was being opened; try again",
                             s->path);
  }
}

/* SQLite keeps its log beside the name it opens: two names, two logs (store.h). */
static int refuse_hard_links(store *s, const struct stat *st) {
  if (st->st_nlink <= 1)
    return 0;
  return store_set_error(
      s, "LINKED",
      "state file %s has %lu names (hard links); SQLite keeps its write-ahead log beside the name "
      "it is opened with, so writing through several names can lose or corrupt committed work: "
      "keep one name and remove the others (find them with: find / -xdev -samefile %s)",
      s->path, (unsigned long)st->st_nlink, s->path);
}

/* A writer's state file and its -wal/-shm must not be readable by other users (they hold
 * what the provider returned): tightened to 0600 and logged, or the file is refused. */
static int tighten_one(store *s, const char *file, int fd) {
  struct stat st;
  if ((fd >= 0 ? fstat(fd, &st) : stat(file, &st)) != 0)
    return errno == ENOENT ? 0
                           : store_set_error(s, "PERM", "state file %s: cannot access %s: %s",
                                             s->path, file, strerror(errno));
  if ((st.st_mode & 077) == 0)
    return 0;
  unsigned was = (unsigned)(st.st_mode & 07777);
  if ((fd >= 0 ? fchmod(fd, 0600) : chmod(file, 0600)) != 0)
    return store_set_error(s, "PERM",
                           "state file %s: %s has mode %04o (other users can read it) and cannot "
                           "be made 0600: %s; chmod 600 it, or use another --state file",
                           s->path, file, was, strerror(errno));
  char was_text[8];
  snprintf(was_text, sizeof was_text, "%04o", was);
  log_emit(LOG_INFO, "state file was readable by other users: mode tightened to 0600", "file", file,
           "was", was_text, NULL);
  return 0;
}

static int tighten_modes(store *s) {
  size_t n = strlen(s->real) + sizeof "-wal";
  char *side = malloc(n);
  if (!side)
    return store_set_error(s, "NOMEM", "out of memory");
  int rc = tighten_one(s, s->path, s->lock_fd);
  static const char *const suffixes[] = {"-wal", "-shm"};
  for (int i = 0; rc == 0 && i < 2; i++) {
    snprintf(side, n, "%s%s", s->real, suffixes[i]);
    rc = tighten_one(s, side, -1);
  }
  free(side);
  return rc;
}

/* The resolved name SQLite opens, checked to be the file at hand. */
static int resolve(store *s, const struct stat *st) {
  struct stat now;
  s->real = realpath(s->path, NULL);
  if (!s->real || stat(s->real, &now) != 0 || now.st_dev != st->st_dev || now.st_ino != st->st_ino)
    return store_set_error(s, "CANTOPEN", "cannot resolve the real path of state file %s: %s",
                           s->path, s->real ? "it changed while being opened" : strerror(errno));
  return 0;
}

/* Refuses anything that is not an SQLite file before SQLite sees it: reads the header from
 * fd, or (fd < 0) from a descriptor opened for the purpose. */
static int check_header(store *s, int fd, const struct stat *st) {
  static const char magic[16] = "SQLite format 3";
  char head[16] = {0};
  ssize_t got;
  if (fd >= 0) {
    got = pread(fd, head, sizeof head, 0);
  } else {
    int rfd = open(s->path, O_RDONLY | O_NOCTTY | O_CLOEXEC);
    if (rfd < 0)
      return store_set_error(s, "CANTOPEN", "cannot read state file %s: %s", s->path,
                             strerror(errno));
    got = read(rfd, head, sizeof head);
    close_fd_of(st->st_dev, st->st_ino, rfd);
  }
  if (got != (ssize_t)sizeof head || memcmp(head, magic, sizeof head) != 0)
    return store_set_error(
        s, "NOTADB",
        "state file %s is not an SQLite database; it was left untouched: move it away or "
        "choose another --state file",
        s->path);
  return 0;
}

/* A reader: no lock, nothing created. *empty tells whether the file is empty. */
static int open_reader(store *s, struct stat *st) {
  if (stat(s->path, st) != 0) {
    if (errno == ENOENT)
      return store_set_error(s, "NOTFOUND", "state file %s does not exist", s->path);
    return store_set_error(s, "CANTOPEN", "cannot access state file %s: %s", s->path,
                           strerror(errno));
  }
  if (!S_ISREG(st->st_mode))
    return store_set_error(s, "NOTADB", "state file %s is not a regular file", s->path);
  if (st->st_size == 0)
    return store_set_error(s, "NOTFOUND", "state file %s does not exist (empty)", s->path);
  /* A file another store of this process has open was checked then. */
  if (!file_find(st->st_dev, st->st_ino) && check_header(s, -1, st) != 0)
    return -1;
  if (!(s->file = file_use(st->st_dev, st->st_ino)))
    return store_set_error(s, "NOMEM", "out of memory");
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
    for (char *c = first; *c; c++) /* one line wherever it is shown */
      if (*c == '\n' || *c == '\r')
        *c = ' ';
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

store *store_alloc(const char *path, store_error *err) {
  store *s = calloc(1, sizeof *s);
  if (!s || !(s->path = strdup(path))) {
    free(s);
    snprintf(err->code, sizeof err->code, "NOMEM");
    snprintf(err->msg, sizeof err->msg, "out of memory");
    return NULL;
  }
  s->lock_fd = -1;
  s->wal_fd = -1;
  return s;
}

store *store_open(const char *path, const store_options *opt, store_error *err) {
  store_options o = {0, 0, 0};
  if (opt)
    o = *opt;
  store *s = store_alloc(path, err);
  if (!s)
    return NULL;
  s->readonly = o.readonly != 0;
  s->max_value = o.max_value_bytes ? o.max_value_bytes : STORE_MAX_VALUE_BYTES;
  s->durability_normal = o.durability_normal;
  struct stat st;

  /* A writer locks before looking, so two writers cannot both create or migrate the file. */
  if (s->readonly ? open_reader(s, &st) != 0
                  : open_and_lock(s, &st) != 0 || refuse_hard_links(s, &st) != 0 ||
                        (st.st_size > 0 && check_header(s, s->lock_fd, &st) != 0))
    goto fail;
  if (resolve(s, &st) != 0)
    goto fail;
  int empty = st.st_size == 0;
  int flags = (s->readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE) | SQLITE_OPEN_NOMUTEX;
  int rc = sqlite3_open_v2(s->real, &s->db, flags, NULL);
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
  /* After the checks, so a refused file keeps its mode; before any run data is written. */
  if (!s->readonly && tighten_modes(s) != 0)
    goto fail;
  if (s->readonly) {
    if (exec_fixed(s, "PRAGMA query_only = 1", "open") != 0)
      goto fail;
  } else if (exec_fixed(s,
                        o.durability_normal ? "PRAGMA synchronous = NORMAL"
                                            : "PRAGMA synchronous = FULL",
                        "open") != 0 ||
             exec_fixed(s, "PRAGMA foreign_keys = ON", "open") != 0 ||
             /* A checkpoint every 4,000 log pages (16 MB; SQLite's default is 1,000): it runs
              * inside the group commit that crosses the mark, and pages a run rewrites in every
              * commit (index interiors, the tables' last leaves) are copied once per
              * checkpoint. The commits of a 10,000-user onboarding spent 22% less time writing
              * (bench/README.md). The log is removed when the store closes. */
             exec_fixed(s, "PRAGMA wal_autocheckpoint = 4000", "open") != 0) {
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
  if (s->wal_fd >= 0) /* SQLite locks nothing in the -wal file: closing it drops no lock */
    close(s->wal_fd);
  /* Only now, with SQLite's descriptors and locks gone, may the lock descriptor close. */
  if (s->lock_fd >= 0)
    flock(s->lock_fd, LOCK_UN);
  if (s->file) {
    if (s->lock_fd >= 0)
      s->file->writer = 0;
    file_release(s->file, s->lock_fd);
  } else if (s->lock_fd >= 0) {
    close(s->lock_fd);
  }
  free(s->wal);
  free(s->real);
  free(s->path);
  free(s);
}
