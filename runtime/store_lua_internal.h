/*
 * store_lua_internal: helpers shared by store_lua*.c; not for other files.
 */
#ifndef SCIMRUN_STORE_LUA_INTERNAL_H
#define SCIMRUN_STORE_LUA_INTERNAL_H

#include <lua.h>

#include "store.h"

/* The open store behind db argument 1; raises when closed (or, for writable, readonly). */
store *store_lua_check_db(lua_State *L);
store *store_lua_check_writable(lua_State *L);
/* Pushes nil, message, code; returns 3. */
int store_lua_failure(lua_State *L, store *s);
/* t[field] as a string (NULL when nil and optional), raising "<ctx>: field ..." on a wrong
 * type. The string stays valid while the table at idx is alive and unchanged. */
const char *store_lua_field_string(lua_State *L, int idx, const char *field, int required,
                                   const char *ctx);
/* t[field] as a non-negative integer, or dflt when nil. */
int store_lua_field_count(lua_State *L, int idx, const char *field, int dflt, const char *ctx);
/* db:apply(batch [, defer_sync]) (store_lua_apply.c) and db:sync() (store_lua_sync.c) */
int store_lua_apply(lua_State *L);
int store_lua_sync(lua_State *L);

#endif
