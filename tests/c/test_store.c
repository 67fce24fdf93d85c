/* test_store.c: the checkpoint store in C: file mode (and tightening a loose one), locking
 * across processes through any name of the file (path, symbolic link, hard link), refusal of
 * foreign or corrupted files without touching them, migrations, batch rollback, disk full,
 * values too big to store. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "store.h"

static int failures;
#define CHECK(cond)                                                                                \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);                     \
      failures++;                                                                                  \
    }                                                                                              \
  } while (0)
#define CHECK_CONTAINS(text, part)                                                                 \
  do {                                                                                             \
    if (!strstr((text), (part))) {                                                                 \
      fprintf(stderr, "%s:%d: '%s' does not contain '%s'\n", __FILE__, __LINE__, (text), (part));  \
      failures++;                                                                                  \
    }                                                                                              \
  } while (0)

static char dir[512];

static const char *tmp_path(const char *name) {
  static char buf[4][600];
  static int next;
  char *p = buf[next++ % 4];
  snprintf(p, sizeof buf[0], "%s/%s", dir, name);
  return p;
}

static store *open_rw(const char *path, store_error *err) {
  store_options o = {0, 0, 0};
  return store_open(path, &o, err);
}

static store *open_ok(const char *path) {
  store_error err;
  store *s = open_rw(path, &err);
  if (!s)
    fprintf(stderr, "open %s failed: %s\n", path, err.msg);
  return s;
}

static int file_mode(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 ? (int)(st.st_mode & 0777) : -1;
}

static char *read_all(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f)
    return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *buf = malloc((size_t)n + 1);
  *len = fread(buf, 1, (size_t)n, f);
  fclose(f);
  return buf;
}

static void write_all(const char *path, const void *data, size_t len) {
  FILE *f = fopen(path, "wb");
  fwrite(data, 1, len, f);
  fclose(f);
}

static int exec_sql(const char *path, const char *sql) {
  sqlite3 *db;
  int rc = sqlite3_open(path, &db);
  if (rc == SQLITE_OK)
    rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
  sqlite3_close(db);
  return rc;
}

static int64_t scalar(store *s, const char *sql) {
  sqlite3_stmt *st;
  int64_t v = -1;
  if (sqlite3_prepare_v2(store_handle(s), sql, -1, &st, NULL) == SQLITE_OK &&
      sqlite3_step(st) == SQLITE_ROW)
    v = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  return v;
}

static int integrity_ok(store *s) {
  sqlite3_stmt *st;
  int ok = 0;
  if (sqlite3_prepare_v2(store_handle(s), "PRAGMA integrity_check", -1, &st, NULL) == SQLITE_OK &&
      sqlite3_step(st) == SQLITE_ROW)
    ok = strcmp((const char *)sqlite3_column_text(st, 0), "ok") == 0;
  sqlite3_finalize(st);
  return ok;
}

static void new_run(store *s, const char *id) {
  store_run r = {id, "wf", "/x/wf.lua", "hash", NULL, NULL, NULL};
  CHECK(store_run_create(s, &r) == 0);
}

static void test_create_mode_and_schema(void) {
  const char *path = tmp_path("mode.db");
  mode_t old = umask(0); /* the file must be 0600 whatever the umask */
  store *s = open_ok(path);
  umask(old);
  CHECK(s != NULL);
  if (!s)
    return;
  new_run(s, "r1"); /* forces the WAL and shm files into existence */
  CHECK(file_mode(path) == 0600);
  CHECK(file_mode(tmp_path("mode.db-wal")) == 0600);
  CHECK(file_mode(tmp_path("mode.db-shm")) == 0600);
  CHECK(access(tmp_path("mode.db.lock"), F_OK) != 0); /* the lock is on the file itself */
  CHECK(scalar(s, "PRAGMA user_version") == store_schema_version());
  CHECK(scalar(s, "PRAGMA synchronous") == 2); /* FULL by default */
  store_close(s);

  /* Reopening applies no migration again and keeps the data. */
  store_options normal = {1, 0, 0};
  store_error err;
  s = store_open(path, &normal, &err);
  CHECK(s != NULL);
  if (!s)
    return;
  CHECK(scalar(s, "PRAGMA synchronous") == 1);
  CHECK(scalar(s, "SELECT count(*) FROM runs WHERE id = 'r1'") == 1);
  store_close(s);
}

static void test_newer_schema_refused(void) {
  const char *path = tmp_path("newer.db");
  store *s = open_ok(path);
  CHECK(s != NULL);
  if (!s)
    return;
  store_close(s);
  char sql[64];
  snprintf(sql, sizeof sql, "PRAGMA user_version = %d", store_schema_version() + 1);
  CHECK(exec_sql(path, sql) == SQLITE_OK);
  size_t n0, n1;
  char *before = read_all(path, &n0);
  store_error err;
  CHECK(open_rw(path, &err) == NULL);
  CHECK(strcmp(err.code, "SCHEMA") == 0);
  CHECK_CONTAINS(err.msg, path);
  CHECK_CONTAINS(err.msg, "newer than this scimrun knows");
  char *after = read_all(path, &n1);
  CHECK(n0 == n1 && memcmp(before, after, n0) == 0);
  free(before);
  free(after);
}

static void test_empty_file_is_migrated_foreign_db_refused(void) {
  const char *empty = tmp_path("empty.db");
  write_all(empty, "", 0);
  store *s = open_ok(empty);
  CHECK(s != NULL);
  if (s) {
    CHECK(scalar(s, "PRAGMA user_version") == store_schema_version());
    store_close(s);
  }

  const char *foreign = tmp_path("foreign.db");
  CHECK(exec_sql(foreign, "CREATE TABLE runs(x); INSERT INTO runs VALUES (42);") == SQLITE_OK);
  size_t n0, n1;
  char *before = read_all(foreign, &n0);
  store_error err;
  CHECK(open_rw(foreign, &err) == NULL);
  CHECK_CONTAINS(err.msg, "not a scimrun state file");
  char *after = read_all(foreign, &n1);
  CHECK(n0 == n1 && memcmp(before, after, n0) == 0);
  free(before);
  free(after);
}

static void test_not_sqlite_refused_untouched(void) {
  const char *path = tmp_path("notes.txt");
  const char text[] = "important operator notes, not a database\n";
  write_all(path, text, sizeof text - 1);
  store_error err;
  CHECK(open_rw(path, &err) == NULL);
  CHECK(strcmp(err.code, "NOTADB") == 0);
  CHECK_CONTAINS(err.msg, path);
  size_t n;
  char *after = read_all(path, &n);
  CHECK(n == sizeof text - 1 && memcmp(after, text, n) == 0);
  free(after);
  CHECK(access(tmp_path("notes.txt-wal"), F_OK) != 0);

  /* Readonly opening of a missing file creates nothing. */
  store_options ro = {0, 1, 0};
  CHECK(store_open(tmp_path("missing.db"), &ro, &err) == NULL);
  CHECK(strcmp(err.code, "NOTFOUND") == 0);
  CHECK(access(tmp_path("missing.db"), F_OK) != 0);
}

static void test_corrupted_refused_untouched(void) {
  const char *path = tmp_path("corrupt.db");
  store *s = open_ok(path);
  CHECK(s != NULL);
  if (!s)
    return;
  new_run(s, "r1");
  CHECK(store_begin(s) == 0);
  for (int i = 0; i < 500; i++) {
    char key[32];
    snprintf(key, sizeof key, "user-%d", i);
    CHECK(store_step_complete(s, "r1", key, "{\"id\":\"abcdefghijklmnop\"}", 1) == 0);
  }
  CHECK(store_commit(s) == 0);
  store_close(s); /* checkpoints: everything is in the main file now */
  size_t n0;
  char *bytes = read_all(path, &n0);
  CHECK(n0 >= 4 * 4096);
  memset(bytes + 2 * 4096 + 8, 0xA5, 2048); /* trash the middle of page 3 */
  write_all(path, bytes, n0);
  store_error err;
  CHECK(open_rw(path, &err) == NULL);
  CHECK(strcmp(err.code, "SQLITE_CORRUPT") == 0);
  CHECK_CONTAINS(err.msg, path);
  CHECK_CONTAINS(err.msg, "corrupted");
  size_t n1;
  char *after = read_all(path, &n1);
  CHECK(n0 == n1 && memcmp(bytes, after, n0) == 0);
  free(bytes);
  free(after);
}

/* A child holds the lock; a second opener is refused with the child's pid; once the child is
 * SIGKILLed (no cleanup at all), the lock is free and the child's committed data is there. */
static void test_lock_across_processes(void) {
  const char *path = tmp_path("lock.db");
  int ready[2];
  CHECK(pipe(ready) == 0);
  pid_t child = fork();
  if (child == 0) {
    store *s = open_ok(path);
    if (!s)
      _exit(1);
    new_run(s, "child-run");
    if (write(ready[1], "x", 1) != 1)
      _exit(1);
    for (;;)
      pause(); /* killed by the parent */
  }
  char c;
  CHECK(read(ready[0], &c, 1) == 1);
  store_error err;
  CHECK(open_rw(path, &err) == NULL);
  CHECK(strcmp(err.code, "LOCKED") == 0);
  char expect[128];
  snprintf(expect, sizeof expect, "state file %s is in use by another scimrun (pid %ld)", path,
           (long)child);
  CHECK_CONTAINS(err.msg, expect);

  /* A readonly opener does not need the lock and sees committed data. */
  store_options ro = {0, 1, 0};
  store *r = store_open(path, &ro, &err);
  CHECK(r != NULL);
  if (r) {
    CHECK(scalar(r, "SELECT count(*) FROM runs WHERE id = 'child-run'") == 1);
    CHECK(store_step_start(r, "child-run", "k", 1) != 0);
    CHECK(strcmp(store_errcode(r), "SQLITE_READONLY") == 0);
    store_close(r);
  }

  kill(child, SIGKILL);
  int status;
  CHECK(waitpid(child, &status, 0) == child && WIFSIGNALED(status));
  store *s = open_ok(path);
  CHECK(s != NULL);
  if (s) {
    CHECK(scalar(s, "SELECT count(*) FROM runs WHERE id = 'child-run'") == 1);
    store_close(s);
  }
  close(ready[0]);
  close(ready[1]);

  /* A second opener in the same process is refused too. */
  s = open_ok(path);
  CHECK(open_rw(path, &err) == NULL);
  CHECK_CONTAINS(err.msg, "already open in this process");
  store_close(s);
}

static void test_batch_rollback(void) {
  store *s = open_ok(tmp_path("rollback.db"));
  CHECK(s != NULL);
  if (!s)
    return;
  new_run(s, "r1");
  CHECK(store_step_complete(s, "r1", "before", "{}", 1) == 0);
  CHECK(store_begin(s) == 0);
  CHECK(store_step_start(s, "r1", "a", -1) == 0);
  CHECK(store_step_complete(s, "r1", "before", "{\"changed\":true}", 2) == 0);
  CHECK(store_step_start(s, "no-such-run", "b", -1) != 0);
  CHECK(strcmp(store_errcode(s), "NOTFOUND") == 0);
  CHECK_CONTAINS(store_errmsg(s), "run 'no-such-run' does not exist");
  store_rollback(s);
  CHECK(scalar(s, "SELECT count(*) FROM steps WHERE key = 'a'") == 0);
  CHECK(scalar(s, "SELECT attempts FROM steps WHERE key = 'before'") == 1);
  CHECK(scalar(s, "SELECT count(*) FROM steps WHERE result_json = '{}'") == 1);

  /* attempts < 0: start counts one more, complete keeps the count. */
  CHECK(store_step_start(s, "r1", "c", -1) == 0);
  CHECK(store_step_start(s, "r1", "c", -1) == 0);
  CHECK(store_step_complete(s, "r1", "c", "{}", -1) == 0);
  CHECK(scalar(s, "SELECT attempts FROM steps WHERE key = 'c'") == 2);
  CHECK(store_step_compensated(s, "r1", "never") != 0);
  CHECK(strcmp(store_errcode(s), "NOTFOUND") == 0);
  store_close(s);
}

/* Deferred sync: NORMAL only between store_defer_sync(s, 1) and (s, 0); the log's descriptor
 * is the file SQLite wrote, kept when the name goes away; a durability-normal store defers
 * nothing. */
static void test_deferred_sync(void) {
  const char *path = tmp_path("deferred.db");
  store *s = open_ok(path);
  CHECK(s != NULL);
  if (!s)
    return;
  new_run(s, "r1");
  CHECK(store_durability_full(s));
  CHECK(scalar(s, "PRAGMA synchronous") == 2); /* FULL */
  CHECK(store_defer_sync(s, 1) == 0);
  CHECK(scalar(s, "PRAGMA synchronous") == 1); /* NORMAL */
  CHECK(store_begin(s) == 0);
  CHECK(store_step_start(s, "r1", "a", -1) == 0);
  CHECK(store_commit(s) == 0);
  CHECK(store_defer_sync(s, 0) == 0);
  CHECK(scalar(s, "PRAGMA synchronous") == 2);
  CHECK(store_wal_open(s) == 0);
  int fd = store_wal_dup(s);
  CHECK(fd >= 0);
  CHECK(store_wal_sync(fd) == 0);
  close(fd);
  /* the name moved away: the kept descriptor still syncs the same log (no false "gone") */
  char moved[700];
  snprintf(moved, sizeof moved, "%s-wal.moved", path);
  CHECK(rename(store_wal_path(s), moved) == 0);
  fd = store_wal_dup(s);
  CHECK(fd >= 0);
  CHECK(store_wal_sync(fd) == 0);
  close(fd);
  CHECK(rename(moved, store_wal_path(s)) == 0);
  CHECK(store_wal_sync(-1) == EBADF);
  store_close(s);

  store_options o = {0};
  o.durability_normal = 1;
  store_error err;
  s = store_open(tmp_path("deferred-normal.db"), &o, &err);
  CHECK(s != NULL);
  if (!s)
    return;
  CHECK(!store_durability_full(s));
  CHECK(store_defer_sync(s, 1) == 0);
  CHECK(scalar(s, "PRAGMA synchronous") == 1);
  store_close(s);
}

static void test_disk_full(void) {
  store *s = open_ok(tmp_path("full.db"));
  CHECK(s != NULL);
  if (!s)
    return;
  new_run(s, "r1");
  CHECK(store_step_complete(s, "r1", "kept", "{}", 1) == 0);
  int64_t pages = scalar(s, "PRAGMA page_count");
  char sql[64];
  snprintf(sql, sizeof sql, "PRAGMA max_page_count = %lld", (long long)pages);
  CHECK(sqlite3_exec(store_handle(s), sql, NULL, NULL, NULL) == SQLITE_OK);
  static char big[3000];
  memset(big, 'x', sizeof big - 1);
  int rc = store_begin(s);
  for (int i = 0; rc == 0 && i < 50; i++) {
    char key[32];
    snprintf(key, sizeof key, "big-%d", i);
    rc = store_step_complete(s, "r1", key, big, 1);
  }
  if (rc == 0)
    rc = store_commit(s);
  CHECK(rc != 0);
  CHECK(strcmp(store_errcode(s), "SQLITE_FULL") == 0);
  CHECK_CONTAINS(store_errmsg(s), "free disk space");
  store_rollback(s);
  CHECK(scalar(s, "SELECT count(*) FROM steps WHERE key LIKE 'big-%'") == 0);
  CHECK(scalar(s, "SELECT count(*) FROM steps WHERE key = 'kept'") == 1);
  /* Space is back: the same store works again. */
  CHECK(sqlite3_exec(store_handle(s), "PRAGMA max_page_count = 1073741823", NULL, NULL, NULL) ==
        SQLITE_OK);
  CHECK(store_step_complete(s, "r1", "after", big, 1) == 0);
  store_close(s);
}

static double mono(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_batched_10k_steps(void) {
  store *s = open_ok(tmp_path("batch.db"));
  CHECK(s != NULL);
  if (!s)
    return;
  new_run(s, "r1");
  double t0 = mono();
  CHECK(store_begin(s) == 0);
  for (int i = 0; i < 10000; i++) {
    char key[32];
    snprintf(key, sizeof key, "users.create:%d", i);
    if (store_step_complete(s, "r1", key, "{\"id\":\"2819c223-7f76-453a-919d\"}", 1) != 0) {
      CHECK(!"step_complete failed");
      break;
    }
  }
  CHECK(store_commit(s) == 0);
  double elapsed = mono() - t0;
  sqlite3_stmt *st = store_query_begin(s, STORE_Q_RUN_STEP_COUNTS);
  CHECK(st != NULL);
  sqlite3_bind_text(st, 1, "r1", -1, SQLITE_STATIC);
  int64_t completed = 0;
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW)
    if (strcmp((const char *)sqlite3_column_text(st, 0), "completed") == 0)
      completed = sqlite3_column_int64(st, 1);
  CHECK(store_query_end(s, st, rc) == 0);
  CHECK(completed == 10000);
  printf("10k step_complete in one transaction: %.1f ms\n", elapsed * 1000);
  CHECK(elapsed < 5.0); /* generous: shared CI cores */
  store_close(s);
}

/* Forks a child that opens path as the writer, records a run and then waits to be killed;
 * returns its pid once it holds the lock. */
static pid_t spawn_holder(const char *path, const char *run_id) {
  int ready[2];
  if (pipe(ready) != 0)
    return -1;
  pid_t child = fork();
  if (child == 0) {
    close(ready[0]);
    store *s = open_ok(path);
    if (!s)
      _exit(1);
    new_run(s, run_id);
    if (write(ready[1], "x", 1) != 1)
      _exit(1);
    for (;;)
      pause(); /* killed by the parent */
  }
  close(ready[1]);
  char c;
  if (read(ready[0], &c, 1) != 1) {
    close(ready[0]);
    return -1;
  }
  close(ready[0]);
  return child;
}

static void kill_holder(pid_t child) {
  int status;
  kill(child, SIGKILL);
  CHECK(waitpid(child, &status, 0) == child && WIFSIGNALED(status));
}

/* The POSIX (SQLite) locks this process holds on path, from /proc/locks. */
static int my_posix_locks(const char *path) {
  struct stat st;
  if (stat(path, &st) != 0)
    return -1;
  FILE *f = fopen("/proc/locks", "r");
  if (!f)
    return -1;
  char line[256];
  int n = 0;
  while (fgets(line, sizeof line, f)) {
    char type[16];
    long pid;
    unsigned maj, min;
    unsigned long long ino;
    if (sscanf(line, "%*d: %15s %*s %*s %ld %x:%x:%llu", type, &pid, &maj, &min, &ino) == 5 &&
        strcmp(type, "POSIX") == 0 && pid == (long)getpid() && maj == major(st.st_dev) &&
        min == minor(st.st_dev) && ino == (unsigned long long)st.st_ino)
      n++;
  }
  fclose(f);
  return n;
}

/* The lock belongs to the file: a second writer through a symbolic link or a hard link is
 * refused with the holder's pid, and writes nothing (no log beside its name). */
static void test_lock_through_links(void) {
  char path[600], sym[600], hard[600];
  snprintf(path, sizeof path, "%s", tmp_path("linked.db"));
  snprintf(sym, sizeof sym, "%s", tmp_path("sym.db"));
  snprintf(hard, sizeof hard, "%s", tmp_path("hard.db"));
  pid_t child = spawn_holder(path, "child-run");
  CHECK(child > 0);
  if (child <= 0)
    return;
  CHECK(symlink("linked.db", sym) == 0);
  CHECK(link(path, hard) == 0);
  const char *names[] = {path, sym, hard};
  for (int i = 0; i < 3; i++) {
    store_error err;
    CHECK(open_rw(names[i], &err) == NULL);
    CHECK(strcmp(err.code, "LOCKED") == 0);
    char expect[700];
    snprintf(expect, sizeof expect, "state file %s is in use by another scimrun (pid %ld)",
             names[i], (long)child);
    CHECK_CONTAINS(err.msg, expect);
  }
  CHECK(access(tmp_path("hard.db-wal"), F_OK) != 0);
  CHECK(access(tmp_path("sym.db-wal"), F_OK) != 0);
  /* A reader through the symbolic link needs no lock and sees the writer's committed run. */
  store_options ro = {0, 1, 0};
  store_error rerr;
  store *r = store_open(sym, &ro, &rerr);
  CHECK(r != NULL);
  if (r) {
    CHECK(scalar(r, "SELECT count(*) FROM runs WHERE id = 'child-run'") == 1);
    store_close(r);
  }
  kill_holder(child);

  /* Two names for one file: two write-ahead logs after a crash. Refused until one is left. */
  store_error err;
  CHECK(open_rw(hard, &err) == NULL);
  CHECK(strcmp(err.code, "LINKED") == 0);
  CHECK_CONTAINS(err.msg, "has 2 names (hard links)");
  CHECK(open_rw(path, &err) == NULL);
  CHECK(strcmp(err.code, "LINKED") == 0);
  CHECK(unlink(hard) == 0);

  /* Through the symbolic link, SQLite finds the log the crashed child left beside the real
   * name: its committed run is there. */
  store *s = open_ok(sym);
  CHECK(s != NULL);
  if (s) {
    CHECK(scalar(s, "SELECT count(*) FROM runs WHERE id = 'child-run'") == 1);
    CHECK(integrity_ok(s));
    store_close(s);
  }
  CHECK(access(tmp_path("sym.db-wal"), F_OK) != 0);
}

/* Descriptors of a file SQLite has open in this process are never closed early: that would
 * drop SQLite's POSIX locks (every lock of the process on the file). */
static void test_same_process_keeps_sqlite_locks(void) {
  const char *path = tmp_path("keep.db");
  store *w = open_ok(path);
  CHECK(w != NULL);
  if (!w)
    return;
  new_run(w, "r1");
  store_options ro = {0, 1, 0};
  store_error err;
  store *r = store_open(path, &ro, &err);
  CHECK(r != NULL);
  if (!r) {
    store_close(w);
    return;
  }
  CHECK(scalar(r, "SELECT count(*) FROM runs") == 1);
  int held = my_posix_locks(path);
  CHECK(held > 0);
  CHECK(symlink("keep.db", tmp_path("keep-sym.db")) == 0);
  CHECK(open_rw(tmp_path("keep-sym.db"), &err) == NULL);
  CHECK_CONTAINS(err.msg, "already open in this process");
  CHECK(my_posix_locks(path) == held);

  /* The writer closes while the reader stays: the lock is released, the reader's locks kept. */
  store_close(w);
  CHECK(my_posix_locks(path) > 0);
  CHECK(scalar(r, "SELECT count(*) FROM runs") == 1);
  pid_t child = fork();
  if (child == 0) {
    store_error e2;
    store *s = open_rw(path, &e2);
    _exit(s ? 0 : 1); /* the flock is free; exiting releases it */
  }
  int status;
  CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0);

  /* A writer attempt refused because another process holds the file leaves them too. */
  child = spawn_holder(path, "r2");
  CHECK(child > 0);
  held = my_posix_locks(path);
  CHECK(open_rw(path, &err) == NULL);
  CHECK(strcmp(err.code, "LOCKED") == 0);
  CHECK(my_posix_locks(path) == held);
  if (child > 0)
    kill_holder(child);
  store_close(r);
}

/* A pre-existing state file (and its -wal/-shm, left by a crash) readable by other users is
 * made 0600 by the next writer; a reader leaves the modes alone. */
static void test_loose_mode_tightened(void) {
  const char *path = tmp_path("loose.db");
  pid_t child = spawn_holder(path, "crashed");
  CHECK(child > 0);
  if (child <= 0)
    return;
  kill_holder(child); /* leaves loose.db-wal and loose.db-shm behind */
  const char *files[] = {path, tmp_path("loose.db-wal"), tmp_path("loose.db-shm")};
  for (int i = 0; i < 3; i++) {
    CHECK(access(files[i], F_OK) == 0);
    CHECK(chmod(files[i], 0644) == 0);
  }
  store_options ro = {0, 1, 0};
  store_error err;
  store *r = store_open(path, &ro, &err);
  CHECK(r != NULL);
  store_close(r);
  CHECK(file_mode(path) == 0644);
  store *s = open_ok(path);
  CHECK(s != NULL);
  for (int i = 0; i < 3; i++)
    CHECK(file_mode(files[i]) == 0600);
  if (s) {
    CHECK(scalar(s, "SELECT count(*) FROM runs WHERE id = 'crashed'") == 1);
    store_close(s);
  }
}

/* A value over the limit, or one SQLite refuses to bind, fails the write: nothing is recorded,
 * least of all a completed step with no result. */
static void test_value_too_big(void) {
  const char *path = tmp_path("toobig.db");
  store_options small = {0, 0, 1000};
  store_error err;
  store *s = store_open(path, &small, &err);
  CHECK(s != NULL);
  if (!s)
    return;
  CHECK(store_max_value_bytes(s) == 1000);
  new_run(s, "r1");
  static char big[2001];
  memset(big, 'x', sizeof big - 1);
  CHECK(store_step_start(s, "r1", "user:big", 1) == 0);
  CHECK(store_step_complete(s, "r1", "user:big", big, 1) != 0);
  CHECK(strcmp(store_errcode(s), "TOOBIG") == 0);
  CHECK_CONTAINS(store_errmsg(s), "the result of step 'user:big' is 2000 bytes");
  CHECK_CONTAINS(store_errmsg(s), "limit of 1000 bytes");
  CHECK(scalar(s, "SELECT count(*) FROM steps WHERE state = 'completed'") == 0);
  CHECK(store_kv_put(s, "r1", "k", big) != 0);
  CHECK(strcmp(store_errcode(s), "TOOBIG") == 0);
  store_dlq_entry e = {.run_id = "r1", .step_key = "user:big", .request_body = big, .status = -1};
  CHECK(store_dlq_add(s, &e, NULL) != 0);
  CHECK_CONTAINS(store_errmsg(s), "request body of the dead letter for step 'user:big'");

  /* In a batch, the failed write fails the batch. */
  CHECK(store_begin(s) == 0);
  CHECK(store_step_complete(s, "r1", "small", "{}", 1) == 0);
  CHECK(store_step_complete(s, "r1", "user:big", big, 1) != 0);
  store_rollback(s);
  CHECK(scalar(s, "SELECT count(*) FROM steps WHERE key = 'small'") == 0);

  /* SQLite's own limit (SQLITE_TOOBIG at bind) is an error too, not a NULL result. */
  sqlite3_limit(store_handle(s), SQLITE_LIMIT_LENGTH, 500);
  static char mid[801];
  memset(mid, 'y', sizeof mid - 1);
  CHECK(store_step_complete(s, "r1", "user:mid", mid, 1) != 0);
  CHECK(strcmp(store_errcode(s), "SQLITE_TOOBIG") == 0);
  CHECK_CONTAINS(store_errmsg(s), "the result of step 'user:mid' (800 bytes) cannot be stored");
  CHECK(scalar(s, "SELECT count(*) FROM steps WHERE key = 'user:mid'") == 0);
  CHECK(store_step_start(s, "r1", mid, 1) != 0); /* an over-long key as well */
  CHECK(strcmp(store_errcode(s), "SQLITE_TOOBIG") == 0);
  sqlite3_limit(store_handle(s), SQLITE_LIMIT_LENGTH, 1000000000);
  CHECK(store_step_complete(s, "r1", "user:mid", "{\"ok\":true}", 1) == 0);
  CHECK(scalar(s, "SELECT count(*) FROM steps WHERE result_json IS NULL AND state = 'completed'") ==
        0);
  store_close(s);

  /* The default limit. */
  s = open_ok(path);
  CHECK(s != NULL);
  if (s) {
    CHECK(store_max_value_bytes(s) == STORE_MAX_VALUE_BYTES);
    store_close(s);
  }
}

/* Migration 3 (the audit trail) on a state file of schema 2, rows append-only, prune by age. */
static void test_audit_trail(void) {
  const char *path = tmp_path("audit.db");
  store *s = open_ok(path);
  CHECK(s != NULL);
  if (!s)
    return;
  new_run(s, "r1");
  store_close(s);
  /* back to what an older scimrun wrote: no audit table, user_version 2 */
  CHECK(exec_sql(path, "DROP TABLE audit; PRAGMA user_version = 2;") == SQLITE_OK);
  s = open_ok(path);
  CHECK(s != NULL);
  if (!s)
    return;
  CHECK(scalar(s, "PRAGMA user_version") == store_schema_version());
  CHECK(scalar(s, "SELECT count(*) FROM runs WHERE id = 'r1'") == 1);
  store_audit_entry e = {"r1",  "user:ada", "users.create", "POST",    "host", "users", "u1",
                         "ada", NULL,       "[]",           "created", NULL,   201};
  CHECK(store_audit_add(s, &e) == 0);
  CHECK(scalar(s, "SELECT status FROM audit WHERE resource_id = 'u1'") == 201);
  /* append-only: an UPDATE is refused, the row is unchanged */
  CHECK(sqlite3_exec(store_handle(s), "UPDATE audit SET result = 'failed'", NULL, NULL, NULL) !=
        SQLITE_OK);
  CHECK(scalar(s, "SELECT count(*) FROM audit WHERE result = 'created'") == 1);
  int64_t deleted = -1;
  CHECK(store_audit_prune(s, 3600, &deleted) == 0 && deleted == 0);
  CHECK(store_audit_prune(s, 0, &deleted) == 0 && deleted == 1);
  store_close(s);
}

int main(void) {
  const char *base = getenv("SCIMRUN_TEST_TMP");
  if (!base || !*base)
    base = "/tmp";
  mkdir(base, 0700);
  snprintf(dir, sizeof dir, "%s/test_store.XXXXXX", base);
  if (!mkdtemp(dir)) {
    fprintf(stderr, "mkdtemp %s: %s\n", dir, strerror(errno));
    return 1;
  }
  test_create_mode_and_schema();
  test_newer_schema_refused();
  test_empty_file_is_migrated_foreign_db_refused();
  test_not_sqlite_refused_untouched();
  test_corrupted_refused_untouched();
  test_lock_across_processes();
  test_lock_through_links();
  test_same_process_keeps_sqlite_locks();
  test_loose_mode_tightened();
  test_value_too_big();
  test_batch_rollback();
  test_disk_full();
  test_deferred_sync();
  test_batched_10k_steps();
  test_audit_trail();
  if (failures == 0) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
      fprintf(stderr, "could not remove %s\n", dir);
  }
  printf("%s: %d failure(s)\n", failures ? "FAIL" : "ok", failures);
  return failures ? 1 : 0;
}
