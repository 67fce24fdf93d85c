/* signals.c: uv_signal_t watchers that spawn a Lua task per delivery (see signals.h). */
#include "signals.h"

#include <lauxlib.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "scheduler.h"

typedef struct {
  uv_signal_t handle; /* first member: data == handle, freed on close (sched convention) */
  int signum;
  int fn_ref;
} signal_watch;

static const struct {
  const char *name;
  int signum;
} known[] = {{"SIGINT", SIGINT}, {"SIGTERM", SIGTERM}, {"SIGHUP", SIGHUP}};

static signal_watch *watches[3];

static void on_signal(uv_signal_t *h, int signum) {
  signal_watch *w = (signal_watch *)h;
  lua_State *L = sched_main_state();
  lua_rawgeti(L, LUA_REGISTRYINDEX, w->fn_ref);
  for (size_t i = 0; i < 3; i++)
    if (known[i].signum == signum)
      lua_pushstring(L, known[i].name);
  sched_spawn(L, -2, 1);
  lua_pop(L, 1);
}

static void on_closed(uv_handle_t *h) { free(h); }

static int l_watch(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  int idx = -1;
  for (int i = 0; i < 3; i++)
    if (strcmp(known[i].name, name) == 0)
      idx = i;
  if (idx < 0)
    return luaL_argerror(L, 1, "signal must be SIGINT, SIGTERM or SIGHUP");
  signal_watch *old = watches[idx];
  if (old) {
    sched_unref(L, old->fn_ref);
    uv_signal_stop(&old->handle);
    uv_close((uv_handle_t *)&old->handle, on_closed);
    watches[idx] = NULL;
  }
  if (lua_isnoneornil(L, 2))
    return 0;
  luaL_checktype(L, 2, LUA_TFUNCTION);
  signal_watch *w = calloc(1, sizeof *w);
  if (!w)
    return luaL_error(L, "out of memory");
  w->signum = known[idx].signum;
  lua_pushvalue(L, 2);
  w->fn_ref = sched_ref(L);
  uv_signal_init(sched_loop(), &w->handle);
  w->handle.data = w;
  uv_signal_start(&w->handle, on_signal, w->signum);
  uv_unref((uv_handle_t *)&w->handle);
  watches[idx] = w;
  return 0;
}

void signals_shutdown(lua_State *L) {
  for (int i = 0; i < 3; i++)
    if (watches[i]) {
      sched_unref(L, watches[i]->fn_ref);
      uv_signal_stop(&watches[i]->handle);
      uv_close((uv_handle_t *)&watches[i]->handle, on_closed);
      watches[i] = NULL;
    }
}

static int l_unwatch_all(lua_State *L) {
  signals_shutdown(L);
  return 0;
}

int luaopen_scimrun_signals(lua_State *L) {
  static const luaL_Reg funcs[] = {
      {"watch", l_watch}, {"unwatch_all", l_unwatch_all}, {NULL, NULL}};
  lua_newtable(L);
  luaL_register(L, NULL, funcs);
  return 1;
}
