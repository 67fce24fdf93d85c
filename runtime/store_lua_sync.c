/* store_lua_sync.c: db:sync(), the log's fdatasync on libuv's thread pool while the loop runs
 * (store.h "Deferred sync"; the group commit's use of it: lua/scimrun/engine/commit.lua). */
#include <errno.h>
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "scheduler.h"
#include "store_lua.h"
#include "store_lua_internal.h"

typedef struct sync_job {
  uv_work_t req;
  sched_task *task;
  int fd;        /* a descriptor of the log, closed by the job */
  int err;       /* errno of the sync, 0 on success */
  size_t wal_at; /* names + wal_at: the log's name; names: the state file's (for the message:
                  * the store may be closed by the time it is read) */
  char names[];
} sync_job;

/* Set at shutdown: the tasks of the syncs still in flight are released, none may be woken. */
static int tasks_gone;

static void sync_work(uv_work_t *req) {
  sync_job *j = req->data;
  j->err = store_wal_sync(j->fd);
  close(j->fd);
}

static void sync_done(uv_work_t *req, int status) {
  sync_job *j = req->data;
  if (!tasks_gone) {
    lua_State *co = sched_wake_begin(j->task);
    int err = status == UV_ECANCELED ? ECANCELED : status != 0 ? EIO : j->err;
    if (err == 0) {
      lua_pushboolean(co, 1);
      sched_wake_commit(j->task, 1);
    } else {
      lua_pushnil(co);
      lua_pushfstring(co,
                      "state file %s: syncing its log %s to disk failed: %s (what was written "
                      "since the last sync may be lost; check the disk, then --resume)",
                      j->names, j->names + j->wal_at, strerror(err));
      lua_pushliteral(co, "SYNC");
      sched_wake_commit(j->task, 3);
    }
  }
  free(j);
}

int store_lua_sync(lua_State *L) {
  store *s = store_lua_check_writable(L);
  sched_task *task = sched_check_task(L, "db:sync");
  if (!store_durability_full(s)) {
    lua_pushboolean(L, 1);
    return 1;
  }
  const char *wal = store_wal_path(s), *path = store_path(s);
  size_t path_len = strlen(path) + 1;
  sync_job *j = wal ? calloc(1, sizeof *j + path_len + strlen(wal) + 1) : NULL;
  if (!j)
    return luaL_error(L, "out of memory");
  memcpy(j->names, path, path_len);
  j->wal_at = path_len;
  strcpy(j->names + path_len, wal);
  j->fd = store_wal_dup(s);
  if (j->fd < 0) {
    free(j);
    return store_lua_failure(L, s);
  }
  j->task = task;
  j->req.data = j;
  int rc = uv_queue_work(sched_loop(), &j->req, sync_work, sync_done);
  if (rc != 0) {
    close(j->fd);
    free(j);
    return luaL_error(L, "db:sync: %s", uv_strerror(rc));
  }
  return sched_wait(L, task);
}

void store_lua_sync_shutdown(void) { tasks_gone = 1; }
