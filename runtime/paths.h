/*
 * paths: where the runtime finds its Lua library and policies, and what it was built with.
 * Order: $SCIMRUN_HOME, then <exe>/../share/scimrun (after `cmake --install`), then the
 * source tree the binary was built from. The first holding lua/scimrun/_cli.lua wins.
 */
#ifndef SCIMRUN_PATHS_H
#define SCIMRUN_PATHS_H

#include <lua.h>

/* Returns the data directory (holds lua/ and policies/), or NULL when none is found. */
const char *paths_datadir(void);

/* scimrun.build: version, luajit, libuv, libcurl, sqlite, datadir. */
int luaopen_scimrun_build(lua_State *L);

#endif
