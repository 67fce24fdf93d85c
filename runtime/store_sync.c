/* store_sync.c: deferred sync of the log, so a group commit's fdatasync can leave the event
 * loop (contract in store.h, "Deferred sync"). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store_internal.h"

int store_durability_full(const store *s) { return !s->readonly && !s->durability_normal; }

int store_defer_sync(store *s, int on) {
  if (!store_durability_full(s))
    return 0;
  /* A connection setting, read at each commit: FULL syncs the log in COMMIT, NORMAL leaves
   * it to store_wal_sync (and to checkpoints, which sync the log before copying it). */
  const char *sql = on ? "PRAGMA synchronous = NORMAL" : "PRAGMA synchronous = FULL";
  int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
  return rc == SQLITE_OK ? 0 : store_fail_sqlite(s, rc, "setting when the log is synced");
}

const char *store_wal_path(store *s) {
  if (!s->wal) {
    size_t n = strlen(s->real) + sizeof "-wal";
    s->wal = malloc(n);
    if (s->wal)
      snprintf(s->wal, n, "%s-wal", s->real);
  }
  return s->wal;
}

int store_wal_open(store *s) {
  if (s->wal_fd >= 0)
    return 0;
  const char *wal = store_wal_path(s);
  if (!wal)
    return store_set_error(s, "NOMEM", "state file %s: out of memory", s->path);
  /* After a deferred commit SQLite's log exists; opened read-only: fdatasync needs no more. */
  s->wal_fd = open(wal, O_RDONLY | O_CLOEXEC);
  if (s->wal_fd < 0)
    return store_set_error(s, "SYNC", "state file %s: cannot open its log %s to sync it: %s",
                           s->path, wal, strerror(errno));
  return 0;
}

int store_wal_dup(store *s) {
  if (store_wal_open(s) != 0)
    return -1;
  int fd = fcntl(s->wal_fd, F_DUPFD_CLOEXEC, 0);
  if (fd < 0)
    return store_set_error(s, "SYNC", "state file %s: cannot sync its log: %s", s->path,
                           strerror(errno));
  return fd;
}

int store_wal_sync(int fd) { return fdatasync(fd) == 0 ? 0 : errno; }
