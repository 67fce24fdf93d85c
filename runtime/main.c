/*
 * main.c: build the Lua state, preload the C modules, hand `arg` to
 * require("scimrun._cli").main on a task, run the loop, exit with what it returned.
 */
#include <lauxlib.h>
#include <lualib.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_client.h"
#include "log.h"
#include "modules.h"
#include "paths.h"
#include "scheduler.h"
#include "signals.h"
#include "term_status.h"

#define PRELOAD(name, fn)                                                                          \
  lua_pushcfunction(L, fn);                                                                        \
  lua_setfield(L, -2, name);

static void preload_modules(lua_State *L) {
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "preload");
  SCIMRUN_C_MODULES(PRELOAD)
  lua_pop(L, 2);
}

static void set_package_path(lua_State *L, const char *dir) {
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "path");
  lua_pushfstring(L, "%s/lua/?.lua;%s/lua/?/init.lua;%s", dir, dir, lua_tostring(L, -1));
  lua_setfield(L, -3, "path");
  lua_pop(L, 2);
}

/* The boot chunk runs on the first task: CLI errors become exit code 2, crashes 1. */
static const char BOOT[] =
    "local argv = ...\n"
    "local ok, code = xpcall(function() return require('scimrun._cli').main(argv) end,\n"
    "                        debug.traceback)\n"
    "if not ok then io.stderr:write('scimrun: internal error: ', tostring(code), '\\n'); code = 1 "
    "end\n"
    "scimrun._exit_code = tonumber(code) or 0\n";

int main(int argc, char **argv) {
  /* A peer that hangs up mid-write must give EPIPE to the writer, not kill the process
   * (the sandbox answering a client that timed out, a log piped into `head`). */
  signal(SIGPIPE, SIG_IGN);
#ifdef __GLIBC__
  /* Every request allocates and frees a few buffers; glibc gave the top of the heap back to the
   * kernel after each burst and faulted it in again, a third of an onboarding run's CPU in
   * brk() and TLB flushes (perf). Keep up to 64 MiB of free heap instead. */
  mallopt(M_TRIM_THRESHOLD, 64 << 20);
  mallopt(M_TOP_PAD, 16 << 20);
#endif
  lua_State *L = luaL_newstate();
  if (!L) {
    fprintf(stderr, "scimrun: cannot create the Lua state (out of memory)\n");
    return 1;
  }
  luaL_openlibs(L);
  sched_init(L);
  preload_modules(L);
  const char *dir = paths_datadir();
  if (!dir) {
    fprintf(stderr, "scimrun: cannot find the Lua library (lua/scimrun/_cli.lua); set "
                    "SCIMRUN_HOME to the directory holding lua/ and policies/\n");
    lua_close(L);
    return 2;
  }
  set_package_path(L, dir);

  lua_getglobal(L, "require");
  lua_pushliteral(L, "scimrun._boot");
  if (lua_pcall(L, 1, 0, 0) != 0) {
    fprintf(stderr, "scimrun: %s\n", lua_tostring(L, -1));
    lua_close(L);
    return 1;
  }

  if (luaL_loadbuffer(L, BOOT, sizeof BOOT - 1, "=boot") != 0) {
    fprintf(stderr, "scimrun: %s\n", lua_tostring(L, -1));
    lua_close(L);
    return 1;
  }
  lua_createtable(L, argc, 0);
  for (int i = 1; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i);
  }
  lua_pushstring(L, argv[0]);
  lua_rawseti(L, -2, 0);
  sched_spawn(L, -2, 1);
  lua_pop(L, 1);

  sched_run();

  lua_getglobal(L, "scimrun");
  lua_getfield(L, -1, "_exit_code");
  int code = lua_isnumber(L, -1) ? (int)lua_tointeger(L, -1) : (sched_failed_count() ? 1 : 0);
  lua_pop(L, 2);
  if (code == 0 && sched_failed_count() > 0)
    code = 1;

  signals_shutdown(L);
  http_server_shutdown_all();
  http_client_shutdown();
  store_lua_async_shutdown();
  if (sched_shutdown() != 0)
    log_emit(LOG_WARN, "event loop did not close cleanly", NULL);
  int leaked_refs = sched_ref_count();
  /* Freeing the Lua state frees its objects one by one: 60 ms for the heap a 10,000-user run
   * leaves, a twentieth of its time. The process ends here and the system takes the memory
   * back (Lua's open files are FILE*s, which exit flushes; the state file, servers and
   * connections were closed above or by their owners), so, as Neovim frees its memory at exit
   * only in its EXITFREE builds, only the builds that look for leaks free it: the sanitizer
   * build and SCIMRUN_EXIT_FREE=1 (the valgrind test). */
#if defined(__SANITIZE_ADDRESS__)
  int exit_free = 1;
#else
  const char *exit_free_env = getenv("SCIMRUN_EXIT_FREE");
  int exit_free = exit_free_env && strcmp(exit_free_env, "1") == 0;
#endif
  if (exit_free)
    lua_close(L);
  log_clear_secrets();
  term_status_set(stderr, NULL); /* a run stopped hard leaves no status area behind */
  if (leaked_refs != 0) {
    fprintf(stderr, "scimrun: %d Lua references still held at shutdown\n", leaked_refs);
    if (getenv("SCIMRUN_STRICT_REFS"))
      code = code ? code : 1;
  }
  return code;
}
