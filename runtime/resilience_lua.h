/*
 * resilience_lua: the Lua face of rng, backoff, breaker, ratelimit, rate_adapt
 * and budget, as
 * require "scimrun.resilience". Times are the caller's monotonic seconds (scimrun.now()).
 *
 *   R.rng([seed]) -> rng                          rng:next() -> [0, 1)
 *   R.backoff_delay(params, retry, prev_delay, rng) -> seconds
 *   R.breaker(cfg) -> br    br:allow(now) -> true, 0 [, new_state] | false, wait [, new_state]
 *     br:record(now, ok) -> new_state | nil       br:release(now)    br:state()
 *     br:snapshot(now) -> table                   br:restore(table, now)
 *   R.limiter{rps, burst} -> lim   lim:reserve(now) -> wait   lim:set_rate(now, rps[, burst])
 *     lim:rate()
 *   R.rate_adapt{window, target_share, gain, growth, ceiling, max_background, min_samples}
 *     -> ra   ra:sent(now) -> id   ra:answered(id, now, limited)   ra:limit(now) -> rps
 *     (0 = unlimited, -s = pause s seconds)   ra:server_rate(now, remaining, reset_s)
 *     ra:refused(now, seconds) -> paused (a run of 429s; see rate_adapt_refused)
 *     ra:state() -> {limit, background, excess_limit, cutting, cuts, noise}
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
