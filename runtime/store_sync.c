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

int store_wal_sync(const char *wal_path) {
  /* A descriptor of our own, opened and closed here: SQLite takes no locks on the -wal file,
   * so closing it cannot drop any (unlike the database file, store.h). fdatasync flushes the
   * file's data whichever descriptor wrote it. */
  int fd = open(wal_path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return errno == ENOENT ? 0 : errno;
  int err = fdatasync(fd) == 0 ? 0 : errno;
  close(fd);
  return err;
}
