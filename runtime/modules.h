/*
 * modules: the C modules the binary preloads, as package.preload["scimrun.<name>"].
 * Add a line here (and the luaopen prototype in the module's header) for each new module.
 */
#ifndef SCIMRUN_MODULES_H
#define SCIMRUN_MODULES_H

#include "fs.h"
#include "http_client.h"
#include "http_date.h"
#include "http_server.h"
#include "log.h"
#include "paths.h"
#include "pg_lua.h"
#include "resilience_lua.h"
#include "scheduler.h"
#include "sha256.h"
#include "signals.h"
#include "store_lua.h"
#include "utf8_check.h"

#define SCIMRUN_C_MODULES(X)                                                                       \
  X("scimrun.core", luaopen_scimrun_core)                                                          \
  X("scimrun.log", luaopen_scimrun_log)                                                            \
  X("scimrun.build", luaopen_scimrun_build)                                                        \
  X("scimrun._http", luaopen_scimrun_http)                                                         \
  X("scimrun.httpserver", luaopen_scimrun_httpserver)                                              \
  X("scimrun.signals", luaopen_scimrun_signals)                                                    \
  X("scimrun.store", luaopen_scimrun_store)                                                        \
  X("scimrun.resilience", luaopen_scimrun_resilience)                                              \
  X("scimrun.fs", luaopen_scimrun_fs)                                                              \
  X("scimrun.sha256", luaopen_scimrun_sha256)                                                      \
  X("scimrun.httpdate", luaopen_scimrun_httpdate)                                                  \
  X("scimrun.pg", luaopen_scimrun_pg)                                                              \
  X("scimrun.utf8", luaopen_scimrun_utf8)

#endif
