/* http_date.c: HTTP-date parsing with curl_getdate (see http_date.h). */
#include "http_date.h"

#include <curl/curl.h>
#include <lauxlib.h>

static int l_parse(lua_State *L) {
  const char *s = luaL_checkstring(L, 1);
  time_t t = curl_getdate(s, NULL);
  /* -1 is curl's "cannot parse" (1969-12-31 23:59:59 is never an HTTP date worth keeping) */
  if (t == (time_t)-1)
    lua_pushnil(L);
  else
    lua_pushnumber(L, (lua_Number)t);
  return 1;
}

int luaopen_scimrun_httpdate(lua_State *L) {
  static const luaL_Reg funcs[] = {{"parse", l_parse}, {NULL, NULL}};
  lua_newtable(L);
  luaL_register(L, NULL, funcs);
  return 1;
}
