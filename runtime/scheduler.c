/*
 * scheduler.c: coroutine tasks on one libuv loop (see scheduler.h for the contract).
 *
 * Resumes happen only in drain_ready(), called from an idle/check handle, so a wake from a
 * timer, curl or another task never resumes a coroutine nested inside another one.
 */
#include "scheduler.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

struct sched_task {
  lua_State *co;
  int ref;     /* registry ref keeping the coroutine alive */
  int waiting; /* suspended in sched_wait, not yet woken */
  int ready;   /* in the ready queue */
  int nvalues; /* values pushed on co for the next resume */
  sched_task *next_ready;
  sched_task *prev, *next; /* all live tasks */
};

static struct {
  lua_State *L;
  uv_loop_t loop;
  uv_idle_t idle;
  uv_check_t check;
  sched_task *ready_head, *ready_tail;
  sched_task *tasks;
  int ntasks;
  int failed;
  int refs;
  int turn_end_ref; /* Lua function run after each drain (group commit) */
  int stopping;
} S;

static const char TASK_MAP_KEY = 't'; /* registry[&TASK_MAP_KEY] = { [thread] = lightuserdata } */

uv_loop_t *sched_loop(void) { return &S.loop; }
lua_State *sched_main_state(void) { return S.L; }

int sched_ref(lua_State *L) {
  S.refs++;
  return luaL_ref(L, LUA_REGISTRYINDEX);
}

void sched_unref(lua_State *L, int ref) {
  if (ref == LUA_NOREF || ref == LUA_REFNIL)
    return;
  S.refs--;
  luaL_unref(L, LUA_REGISTRYINDEX, ref);
}

int sched_ref_count(void) { return S.refs; }
int sched_task_count(void) { return S.ntasks; }
int sched_failed_count(void) { return S.failed; }

static void task_map_push(lua_State *L) {
  lua_pushlightuserdata(L, (void *)&TASK_MAP_KEY);
  lua_rawget(L, LUA_REGISTRYINDEX);
}

sched_task *sched_current(lua_State *L) {
  task_map_push(L);
  lua_pushthread(L);
  lua_rawget(L, -2);
  sched_task *t = lua_touserdata(L, -1);
  lua_pop(L, 2);
  return t;
}

sched_task *sched_check_task(lua_State *L, const char *what) {
  sched_task *t = sched_current(L);
  if (!t)
    luaL_error(L, "%s must be called from a scimrun task (scimrun.spawn or a workflow)", what);
  return t;
}

static void on_idle(uv_idle_t *h);

static void ensure_draining(void) {
  if (!uv_is_active((uv_handle_t *)&S.idle))
    uv_idle_start(&S.idle, on_idle);
}

static void enqueue(sched_task *t) {
  if (t->ready)
    return;
  t->ready = 1;
  t->next_ready = NULL;
  if (S.ready_tail)
    S.ready_tail->next_ready = t;
  else
    S.ready_head = t;
  S.ready_tail = t;
  ensure_draining();
}

int sched_wait(lua_State *L, sched_task *t) {
  t->waiting = 1;
  return lua_yield(L, 0);
}

lua_State *sched_wake_begin(sched_task *t) { return t->co; }

void sched_wake_commit(sched_task *t, int nvalues) {
  t->waiting = 0;
  t->nvalues = nvalues;
  enqueue(t);
}

static void task_release(sched_task *t) {
  if (t->prev)
    t->prev->next = t->next;
  else
    S.tasks = t->next;
  if (t->next)
    t->next->prev = t->prev;
  task_map_push(S.L);
  lua_pushthread(t->co);
  lua_xmove(t->co, S.L, 1);
  lua_pushnil(S.L);
  lua_rawset(S.L, -3);
  lua_pop(S.L, 1);
  sched_unref(S.L, t->ref);
  S.ntasks--;
  free(t);
}

static void report_task_error(sched_task *t) {
  const char *msg = lua_tostring(t->co, -1);
  if (!msg) {
    /* Error objects that are tables (our error contract) carry `detail` or `message`. */
    msg = "(error object is not a string)";
    if (lua_istable(t->co, -1)) {
      lua_getfield(t->co, -1, "detail");
      if (lua_isstring(t->co, -1))
        msg = lua_tostring(t->co, -1);
    }
  }
  luaL_traceback(S.L, t->co, msg, 0);
  log_emit(LOG_ERROR, "task failed", "traceback", lua_tostring(S.L, -1), NULL);
  lua_pop(S.L, 1);
}

static void resume_task(sched_task *t) {
  lua_State *co = t->co;
  int nvalues = t->nvalues;
  t->nvalues = 0;
  int status = lua_resume(co, nvalues);
  if (status == LUA_YIELD) {
    lua_settop(co, 0);
    if (!t->waiting) /* plain coroutine.yield(): give others a turn, then continue */
      enqueue(t);
    return;
  }
  if (status != 0) {
    S.failed++;
    report_task_error(t);
  }
  task_release(t);
}

static void call_turn_end(void) {
  if (S.turn_end_ref == LUA_NOREF)
    return;
  lua_rawgeti(S.L, LUA_REGISTRYINDEX, S.turn_end_ref);
  if (lua_pcall(S.L, 0, 0, 0) != 0) {
    log_emit(LOG_ERROR, "turn-end hook failed", "error", lua_tostring(S.L, -1), NULL);
    lua_pop(S.L, 1);
  }
}

static void drain_ready(void) {
  /* Only the tasks ready now: a task that yields again waits for the next loop turn. */
  sched_task *last = S.ready_tail;
  while (S.ready_head) {
    sched_task *t = S.ready_head;
    S.ready_head = t->next_ready;
    if (!S.ready_head)
      S.ready_tail = NULL;
    t->ready = 0;
    resume_task(t);
    if (t == last)
      break;
  }
  call_turn_end();
  if (!S.ready_head)
    uv_idle_stop(&S.idle);
}

static void on_idle(uv_idle_t *h) {
  (void)h;
  drain_ready();
}

static void on_check(uv_check_t *h) {
  (void)h;
  if (S.ready_head)
    drain_ready();
}

void sched_spawn(lua_State *L, int fn_index, int nargs) {
  if (fn_index < 0)
    fn_index = lua_gettop(L) + fn_index + 1;
  sched_task *t = calloc(1, sizeof *t);
  if (!t)
    luaL_error(L, "out of memory");
  lua_State *co = lua_newthread(L);
  lua_pushvalue(L, -1);
  t->ref = sched_ref(L);
  t->co = co;
  task_map_push(L);
  lua_pushvalue(L, -2);
  lua_pushlightuserdata(L, t);
  lua_rawset(L, -3);
  lua_pop(L, 1);
  /* stack: fn args... co  -> move fn and args onto co */
  lua_insert(L, fn_index);     /* co fn args... */
  lua_xmove(L, co, nargs + 1); /* co */
  t->nvalues = nargs;
  t->next = S.tasks;
  if (S.tasks)
    S.tasks->prev = t;
  S.tasks = t;
  S.ntasks++;
  enqueue(t);
}

void sched_run(void) {
  S.stopping = 0;
  uv_run(&S.loop, UV_RUN_DEFAULT);
}

void sched_stop(void) {
  S.stopping = 1;
  uv_stop(&S.loop);
}

/* ---- timers: scimrun.sleep ------------------------------------------------------- */

typedef struct {
  uv_timer_t timer;
  sched_task *task;
} sleep_waiter;

static void on_sleep_closed(uv_handle_t *h) { free(h->data); }

static void on_sleep_done(uv_timer_t *timer) {
  sleep_waiter *w = timer->data;
  sched_wake_commit(w->task, 0);
  uv_close((uv_handle_t *)timer, on_sleep_closed);
}

static int l_sleep(lua_State *L) {
  double seconds = luaL_checknumber(L, 1);
  sched_task *t = sched_check_task(L, "scimrun.sleep");
  if (seconds < 0)
    seconds = 0;
  sleep_waiter *w = calloc(1, sizeof *w);
  if (!w)
    return luaL_error(L, "out of memory");
  w->task = t;
  uv_timer_init(&S.loop, &w->timer);
  w->timer.data = w;
  /* The loop's cached clock is stale after a blocking stretch (an fsync, a long Lua turn):
   * refresh it so the sleep lasts as long as asked. */
  uv_update_time(&S.loop);
  uv_timer_start(&w->timer, on_sleep_done, (uint64_t)(seconds * 1000.0 + 0.5), 0);
  return sched_wait(L, t);
}

static int l_now(lua_State *L) {
  lua_pushnumber(L, (double)uv_hrtime() / 1e9);
  return 1;
}

static int l_wall(lua_State *L) {
  uv_timeval64_t tv;
  uv_gettimeofday(&tv);
  lua_pushnumber(L, (double)tv.tv_sec + (double)tv.tv_usec / 1e6);
  return 1;
}

static int l_spawn(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  sched_spawn(L, 1, lua_gettop(L) - 1);
  return 1;
}

/* park(): suspends the calling task until wake(co, ...) passes it values. */
static int l_park(lua_State *L) {
  sched_task *t = sched_check_task(L, "scimrun.park");
  return sched_wait(L, t);
}

static int l_wake(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTHREAD);
  lua_State *co = lua_tothread(L, 1);
  sched_task *t = sched_current(co);
  if (!t || !t->waiting)
    return luaL_error(L, "scimrun.wake: that coroutine is not parked");
  int n = lua_gettop(L) - 1;
  lua_xmove(L, co, n);
  sched_wake_commit(t, n);
  return 0;
}

static int l_is_task(lua_State *L) {
  lua_pushboolean(L, sched_current(L) != NULL);
  return 1;
}

static int l_at_turn_end(lua_State *L) {
  if (S.turn_end_ref != LUA_NOREF)
    sched_unref(L, S.turn_end_ref);
  S.turn_end_ref = LUA_NOREF;
  if (!lua_isnoneornil(L, 1)) {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_pushvalue(L, 1);
    S.turn_end_ref = sched_ref(L);
  }
  return 0;
}

static int l_stats(lua_State *L) {
  lua_createtable(L, 0, 3);
  lua_pushinteger(L, S.ntasks);
  lua_setfield(L, -2, "tasks");
  lua_pushinteger(L, S.refs);
  lua_setfield(L, -2, "refs");
  lua_pushinteger(L, S.failed);
  lua_setfield(L, -2, "failed");
  return 1;
}

void sched_init(lua_State *L) {
  memset(&S, 0, sizeof S);
  S.L = L;
  S.turn_end_ref = LUA_NOREF;
  uv_loop_init(&S.loop);
  uv_idle_init(&S.loop, &S.idle);
  uv_check_init(&S.loop, &S.check);
  uv_check_start(&S.check, on_check);
  /* The check handle must not keep the loop alive on its own. */
  uv_unref((uv_handle_t *)&S.check);
  lua_pushlightuserdata(L, (void *)&TASK_MAP_KEY);
  lua_newtable(L);
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "k"); /* weak keys: a dead coroutine must not be kept by the map */
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_rawset(L, LUA_REGISTRYINDEX);
}

static void close_any(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h)) {
    if (h->data == (void *)h) {
      /* Convention: a handle that is the first member of a heap struct it owns has
       * data pointing to itself (sleep timers, curl socket polls); free it on close. */
      uv_close(h, on_sleep_closed);
      return;
    }
    uv_close(h, NULL);
  }
}

int sched_shutdown(void) {
  while (S.tasks)
    task_release(S.tasks);
  S.ready_head = S.ready_tail = NULL;
  if (S.turn_end_ref != LUA_NOREF)
    sched_unref(S.L, S.turn_end_ref);
  S.turn_end_ref = LUA_NOREF;
  uv_walk(&S.loop, close_any, NULL);
  uv_run(&S.loop, UV_RUN_DEFAULT);
  return uv_loop_close(&S.loop);
}

static const luaL_Reg core_funcs[] = {
    {"spawn", l_spawn}, {"sleep", l_sleep}, {"now", l_now},         {"wall", l_wall},
    {"park", l_park},   {"wake", l_wake},   {"is_task", l_is_task}, {"at_turn_end", l_at_turn_end},
    {"stats", l_stats}, {NULL, NULL}};

int luaopen_scimrun_core(lua_State *L) {
  lua_newtable(L);
  luaL_register(L, NULL, core_funcs);
  return 1;
}
