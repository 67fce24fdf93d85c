/* store_reader.c: a read-only companion connection of an open writer (contract in store.h,
 * "Companion reader"). */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "store_internal.h"

store *store_open_reader_of(const store *w, store_error *err) {
  store *r = store_alloc(w->path, err);
  if (!r)
    return NULL;
  if (!(r->real = strdup(w->real))) {
    store_close(r);
    snprintf(err->code, sizeof err->code, "NOMEM");
    snprintf(err->msg, sizeof err->msg, "out of memory");
    return NULL;
  }
  r->readonly = 1;
  r->max_value = w->max_value;
  r->durability_normal = w->durability_normal;
  /* The writer checked the file, its schema and its modes when it opened it: none of that is
   * repeated (a quick_check reads the whole file). SQLite shares its locks between the two
   * connections of this process, so closing this one drops none of the writer's. */
  int rc = sqlite3_open_v2(r->real, &r->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL);
  if (rc == SQLITE_OK) {
    sqlite3_extended_result_codes(r->db, 1);
    sqlite3_busy_timeout(r->db, BUSY_TIMEOUT_MS);
    rc = sqlite3_exec(r->db, "PRAGMA query_only = 1", NULL, NULL, NULL);
  }
  /* Opened by name, maybe long after the writer: the name must still be the writer's file (a
   * renamed or replaced state file would serve reads from another database). */
  struct stat ws, rs;
  if (rc == SQLITE_OK &&
      (w->lock_fd < 0 || fstat(w->lock_fd, &ws) != 0 || stat(r->real, &rs) != 0 ||
       ws.st_dev != rs.st_dev || ws.st_ino != rs.st_ino)) {
    snprintf(err->code, sizeof err->code, "CANTOPEN");
    snprintf(err->msg, sizeof err->msg,
             "state file %s: its name no longer leads to the file being "
             "written",
             w->path);
    store_close(r);
    return NULL;
  }
  if (rc != SQLITE_OK) {
    snprintf(err->code, sizeof err->code, "CANTOPEN");
    snprintf(err->msg, sizeof err->msg, "cannot open state file %s for reading: %s", w->path,
             r->db ? sqlite3_errmsg(r->db) : sqlite3_errstr(rc));
    store_close(r);
    return NULL;
  }
  return r;
}
