/*
 * modules: the C modules the binary preloads, as package.preload["scimrun.<name>"].
 * Add a line here (and the luaopen prototype in the module's header) for each new module.
 */
#ifndef SCIMRUN_MODULES_H
#define SCIMRUN_MODULES_H

#include "http_client.h"
#include "log.h"
#include "paths.h"
#include "scheduler.h"
#include "signals.h"

#define SCIMRUN_C_MODULES(X)                                                                       \
  X("scimrun.core", luaopen_scimrun_core)                                                          \
  X("scimrun.log", luaopen_scimrun_log)                                                            \
  X("scimrun.build", luaopen_scimrun_build)                                                        \
  X("scimrun._http", luaopen_scimrun_http)                                                         \
  X("scimrun.signals", luaopen_scimrun_signals)

#endif
