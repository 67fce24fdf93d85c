/* store_lua_async.c: db:apply_async(batch), a whole group commit on libuv's thread pool while
 * the loop runs: its transaction, then at durability full the log's fdatasync (store.h
 * "Deferred sync"). The engine's use of it: lua/scimrun/engine/commit.lua. */
#include <errno.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "scheduler.h"
#include "store_lua.h"
#include "store_lua_internal.h"

/* Set at shutdown: the tasks of the commits still in flight are released, none may be woken. */
static int tasks_gone;

/* ---- db:apply_async ------------------------------------------------------------------- */

typedef struct apply_job {
  uv_work_t req;
  sched_task *task;
  store_lua_db *u;
  int db_ref, batch_ref; /* the db and the batch (the ops' strings) stay alive meanwhile */
  store_lua_batch *b;
  int rc;       /* 0, or -1 with code and msg copied from the store */
  int sync_err; /* errno of the log's sync, 0 on success */
  char code[32];
  char msg[768];
  size_t wal_at; /* names + wal_at: the log's name; names: the state file's (copied: the
                  * store may be closed by the time a failed sync is reported) */
  char names[];
} apply_job;

static void apply_release(store_lua_db *u) {
  pthread_mutex_lock(&u->mu);
  u->applying = 0;
  pthread_cond_broadcast(&u->idle);
  pthread_mutex_unlock(&u->mu);
}

/* On a pool thread: the job owns the writer until apply_release; the sync after it needs only
 * a descriptor of the log, so the loop may use the writer meanwhile. */
static void apply_work(uv_work_t *req) {
  apply_job *j = req->data;
  store *s = j->u->s;
  int full = store_durability_full(s), fd = -1;
  j->rc = full && store_defer_sync(s, 1) != 0 ? -1 : store_lua_batch_write(s, j->b);
  if (full && store_defer_sync(s, 0) != 0)
    j->rc = -1;
  if (j->rc == 0 && full && (fd = store_wal_dup(s)) < 0)
    j->rc = -1;
  if (j->rc != 0) {
    snprintf(j->code, sizeof j->code, "%s", store_errcode(s));
    snprintf(j->msg, sizeof j->msg, "%s", store_errmsg(s));
  }
  apply_release(j->u);
  if (fd >= 0) {
    j->sync_err = store_wal_sync(fd);
    close(fd);
    if (j->sync_err && !j->rc)
      snprintf(j->msg, sizeof j->msg,
               "state file %s: syncing its log %s to disk failed: %s (what was written since the "
               "last sync may be lost; check the disk, then --resume)",
               j->names, j->names + j->wal_at, strerror(j->sync_err));
  }
}

static void apply_done(uv_work_t *req, int status) {
  apply_job *j = req->data;
  if (status == UV_ECANCELED)
    apply_release(j->u); /* never ran: the writer was never taken */
  if (!tasks_gone) {
    lua_State *co = sched_wake_begin(j->task);
    if (status != 0 && j->rc == 0) {
      lua_pushnil(co);
      lua_pushfstring(co, "the group commit did not run: %s", uv_strerror(status));
      lua_pushliteral(co, "SYNC");
      sched_wake_commit(j->task, 3);
    } else if (j->rc != 0) {
      lua_pushnil(co);
      lua_pushstring(co, j->msg);
      lua_pushstring(co, j->code);
      sched_wake_commit(j->task, 3);
    } else if (j->sync_err) {
      lua_pushnil(co);
      lua_pushstring(co, j->msg);
      lua_pushliteral(co, "SYNC");
      sched_wake_commit(j->task, 3);
    } else {
      lua_pushboolean(co, 1);
      store_lua_batch_push_ids(co, j->b);
      sched_wake_commit(j->task, 2);
    }
  }
  lua_State *L = sched_main_state();
  sched_unref(L, j->batch_ref);
  sched_unref(L, j->db_ref);
  store_lua_batch_free(j->b);
  free(j);
}

int store_lua_apply_async(lua_State *L) {
  store *s = store_lua_check_writable(L); /* waits for the job before: one at a time */
  store_lua_db *u = store_lua_check_ud(L);
  const char *path = store_path(s), *wal = store_wal_path(s);
  sched_task *task = sched_check_task(L, "db:apply_async");
  lua_settop(L, 2);
  store_lua_batch *b = store_lua_batch_decode(L, 2);
  if (store_lua_batch_size(b) == 0) {
    store_lua_batch_free(b);
    lua_pushboolean(L, 1);
    lua_newtable(L);
    return 2;
  }
  size_t path_len = strlen(path) + 1;
  apply_job *j = wal ? calloc(1, sizeof *j + path_len + strlen(wal) + 1) : NULL;
  if (!j) {
    store_lua_batch_free(b);
    return luaL_error(L, "db:apply_async: out of memory");
  }
  memcpy(j->names, path, path_len);
  j->wal_at = path_len;
  strcpy(j->names + path_len, wal);
  j->task = task;
  j->u = u;
  j->b = b;
  lua_pushvalue(L, 2);
  j->batch_ref = sched_ref(L);
  lua_pushvalue(L, 1);
  j->db_ref = sched_ref(L);
  j->req.data = j;
  pthread_mutex_lock(&u->mu);
  u->applying = 1;
  pthread_mutex_unlock(&u->mu);
  int rc = uv_queue_work(sched_loop(), &j->req, apply_work, apply_done);
  if (rc != 0) {
    apply_release(u);
    sched_unref(L, j->batch_ref);
    sched_unref(L, j->db_ref);
    store_lua_batch_free(b);
    free(j);
    return luaL_error(L, "db:apply_async: %s", uv_strerror(rc));
  }
  return sched_wait(L, task);
}

void store_lua_async_shutdown(void) { tasks_gone = 1; }
