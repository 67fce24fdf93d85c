/*
 * signals: SIGINT, SIGTERM and SIGHUP delivered to Lua as tasks.
 * `scimrun.signals`.watch(name, fn) runs fn(name) on a new task each time the signal
 * arrives; watch(name, nil) restores the default. Watching does not keep the loop alive.
 */
#ifndef SCIMRUN_SIGNALS_H
#define SCIMRUN_SIGNALS_H

#include <lua.h>

int luaopen_scimrun_signals(lua_State *L);
/* Stops every watcher and releases its Lua reference. */
void signals_shutdown(lua_State *L);

#endif
