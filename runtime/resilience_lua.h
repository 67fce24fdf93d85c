/*
 * resilience_lua: the Lua face of rng, backoff, breaker, ratelimit and budget, as
 * require "scimrun.resilience". Times are the caller's monotonic seconds (scimrun.now()).
 *
 *   R.rng([seed]) -> rng                          rng:next() -> [0, 1)
 *   R.backoff_delay(params, retry, prev_delay, rng) -> seconds
 *   R.breaker(cfg) -> br    br:allow(now) -> true, 0 [, new_state] | false, wait [, new_state]
 *     br:record(now, ok) -> new_state | nil       br:release(now)    br:state()
 *     br:snapshot(now) -> table                   br:restore(table, now)
 *   R.limiter{rps, burst} -> lim   lim:reserve(now) -> wait   lim:throttle(now[, factor])
 *     lim:recover(now)   lim:rate()
 *   R.budget{ratio, min_retries} -> bud   bud:first()   bud:try_retry() -> bool
 *     bud:remaining()   bud:snapshot() -> table   bud:restore(table)
 *
 * Config tables are read by key; keys not listed are ignored (so a policy table can be
 * passed as is). A bad value or an unknown backoff/jitter name raises an error naming it.
 */
#ifndef SCIMRUN_RESILIENCE_LUA_H
#define SCIMRUN_RESILIENCE_LUA_H

#include <lua.h>

int luaopen_scimrun_resilience(lua_State *L);

#endif
