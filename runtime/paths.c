/* paths.c: locate lua/ and policies/, report component versions (see paths.h). */
#include "paths.h"

#include <curl/curl.h>
#include <lauxlib.h>
#include <limits.h>
#include <luajit.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#ifndef PATH_MAX
#define PATH_MAX 4096
#endif

static char datadir[PATH_MAX];

static int has_library(const char *dir) {
  char probe[PATH_MAX + 32];
  snprintf(probe, sizeof probe, "%s/lua/scimrun/_cli.lua", dir);
  return access(probe, R_OK) == 0;
}

const char *paths_datadir(void) {
  if (datadir[0])
    return datadir;
  const char *home = getenv("SCIMRUN_HOME");
  if (home && *home && has_library(home)) {
    snprintf(datadir, sizeof datadir, "%s", home);
    return datadir;
  }
  char exe[PATH_MAX];
  size_t size = sizeof exe;
  if (uv_exepath(exe, &size) == 0) {
    char *slash = strrchr(exe, '/');
    if (slash) {
      *slash = 0;
      char candidate[PATH_MAX + 32];
      snprintf(candidate, sizeof candidate, "%s/../%s", exe, SCIMRUN_DATADIR_REL);
      char *real = realpath(candidate, NULL);
      if (real) {
        int ok = has_library(real);
        if (ok)
          snprintf(datadir, sizeof datadir, "%s", real);
        free(real);
        if (ok)
          return datadir;
      }
    }
  }
  if (has_library(SCIMRUN_SOURCE_DIR)) {
    snprintf(datadir, sizeof datadir, "%s", SCIMRUN_SOURCE_DIR);
    return datadir;
  }
  return NULL;
}

int luaopen_scimrun_build(lua_State *L) {
  lua_newtable(L);
  lua_pushliteral(L, SCIMRUN_VERSION);
  lua_setfield(L, -2, "version");
  lua_pushliteral(L, LUAJIT_VERSION);
  lua_setfield(L, -2, "luajit");
  lua_pushstring(L, uv_version_string());
  lua_setfield(L, -2, "libuv");
  lua_pushstring(L, curl_version_info(CURLVERSION_NOW)->version);
  lua_setfield(L, -2, "libcurl");
  lua_pushstring(L, curl_version_info(CURLVERSION_NOW)->ssl_version);
  lua_setfield(L, -2, "tls");
  lua_pushstring(L, sqlite3_libversion());
  lua_setfield(L, -2, "sqlite");
  const char *dir = paths_datadir();
  if (dir) {
    lua_pushstring(L, dir);
    lua_setfield(L, -2, "datadir");
  }
  return 1;
}
