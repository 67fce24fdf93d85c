/* resilience_lua.c: Lua bindings for the resilience primitives (see resilience_lua.h). */
#include "resilience_lua.h"

#include <lauxlib.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "backoff.h"
#include "breaker.h"
#include "budget.h"
#include "rate_adapt.h"
#include "ratelimit.h"
#include "rng.h"

#define RNG_MT "scimrun.resilience.rng"
#define BREAKER_MT "scimrun.resilience.breaker"
#define LIMITER_MT "scimrun.resilience.limiter"
#define BUDGET_MT "scimrun.resilience.budget"
#define ADAPT_MT "scimrun.resilience.rate_adapt"

typedef struct {
  breaker *b; /* freed by __gc */
  int changed;
  breaker_status changed_to;
} lbreaker;

/* ---- reading config tables ------------------------------------------------------------ */

static double opt_num(lua_State *L, int t, const char *what, const char *key, double def) {
  lua_getfield(L, t, key);
  double v = def;
  if (!lua_isnil(L, -1)) {
    if (lua_type(L, -1) != LUA_TNUMBER)
      luaL_error(L, "%s: '%s' must be a number, got %s", what, key, luaL_typename(L, -1));
    v = lua_tonumber(L, -1);
    if (isnan(v))
      luaL_error(L, "%s: '%s' must be a number, got nan", what, key);
  }
  lua_pop(L, 1);
  return v;
}

static int opt_int(lua_State *L, int t, const char *what, const char *key, int def) {
  double v = opt_num(L, t, what, key, def);
  if (v != floor(v) || v < -2147483647.0 || v > 2147483647.0)
    luaL_error(L, "%s: '%s' must be a whole number, got %f", what, key, v);
  return (int)v;
}

static const char *opt_str(lua_State *L, int t, const char *what, const char *key,
                           const char *def) {
  lua_getfield(L, t, key);
  const char *v = def;
  if (!lua_isnil(L, -1)) {
    if (lua_type(L, -1) != LUA_TSTRING)
      luaL_error(L, "%s: '%s' must be a string, got %s", what, key, luaL_typename(L, -1));
    v = lua_tostring(L, -1); /* stays alive: the table still holds it */
  }
  lua_pop(L, 1);
  return v;
}

static int has_key(lua_State *L, int t, const char *key) {
  lua_getfield(L, t, key);
  int has = !lua_isnil(L, -1);
  lua_pop(L, 1);
  return has;
}

static void check_config(lua_State *L, const char *what, const char *err) {
  if (err)
    luaL_error(L, "%s: %s", what, err);
}

static void *new_udata(lua_State *L, size_t size, const char *mt) {
  void *p = lua_newuserdata(L, size);
  memset(p, 0, size);
  luaL_getmetatable(L, mt);
  lua_setmetatable(L, -2);
  return p;
}

/* ---- rng ------------------------------------------------------------------------------ */

static int l_rng(lua_State *L) {
  uint64_t seed;
  if (lua_isnoneornil(L, 1)) {
    seed = rng_next_u64(rng_default());
  } else {
    double x = luaL_checknumber(L, 1);
    if (x == floor(x) && fabs(x) < 9e18)
      seed = (uint64_t)(int64_t)x;
    else
      memcpy(&seed, &x, sizeof seed); /* fractional or huge seeds: use the bits as they are */
  }
  rng_seed(new_udata(L, sizeof(rng), RNG_MT), seed);
  return 1;
}

static int l_rng_next(lua_State *L) {
  lua_pushnumber(L, rng_next_double(luaL_checkudata(L, 1, RNG_MT)));
  return 1;
}

/* ---- backoff -------------------------------------------------------------------------- */

static int l_backoff_delay(lua_State *L) {
  static const char what[] = "backoff_delay";
  luaL_checktype(L, 1, LUA_TTABLE);
  backoff_params p;
  backoff_params_default(&p);
  const char *kind = opt_str(L, 1, what, "backoff", "exponential");
  if (backoff_kind_parse(kind, &p.kind) != 0)
    return luaL_error(L, "%s: unknown backoff '%s' (use constant, linear or exponential)", what,
                      kind);
  const char *jitter = opt_str(L, 1, what, "jitter", "none");
  if (backoff_jitter_parse(jitter, &p.jitter) != 0)
    return luaL_error(L, "%s: unknown jitter '%s' (use none, full, equal or decorrelated)", what,
                      jitter);
  p.base = opt_num(L, 1, what, "base", p.base);
  p.multiplier = opt_num(L, 1, what, "multiplier", p.multiplier);
  p.min_delay = opt_num(L, 1, what, "min_delay", p.min_delay);
  p.max_delay = opt_num(L, 1, what, "max_delay", p.max_delay);
  check_config(L, what, backoff_params_check(&p));
  double retry = luaL_checknumber(L, 2);
  luaL_argcheck(L, retry >= 1, 2, "retry must be >= 1 (1 = the first retry)");
  double prev = luaL_optnumber(L, 3, 0);
  rng *r = lua_isnoneornil(L, 4) ? NULL : luaL_checkudata(L, 4, RNG_MT);
  lua_pushnumber(L, backoff_delay(&p, retry > 1e6 ? 1000000 : (int)retry, prev, r));
  return 1;
}

/* ---- breaker -------------------------------------------------------------------------- */

static void on_breaker_change(void *ud, breaker_status from, breaker_status to, double now) {
  lbreaker *w = ud;
  w->changed = 1;
  w->changed_to = to;
}

static lbreaker *check_breaker(lua_State *L) {
  lbreaker *w = luaL_checkudata(L, 1, BREAKER_MT);
  if (!w->b)
    luaL_error(L, "breaker used after it was collected");
  w->changed = 0;
  return w;
}

static int push_change(lua_State *L, lbreaker *w) {
  if (!w->changed)
    return 0;
  lua_pushstring(L, breaker_state_name(w->changed_to));
  return 1;
}

static int l_breaker(lua_State *L) {
  static const char what[] = "breaker";
  luaL_checktype(L, 1, LUA_TTABLE);
  breaker_config c;
  breaker_config_default(&c);
  /* Choosing failure_rate alone means rate mode: no consecutive-failure trip by default. */
  if (has_key(L, 1, "failure_rate") && !has_key(L, 1, "failures"))
    c.failures = 0;
  c.failures = opt_int(L, 1, what, "failures", c.failures);
  c.failure_rate = opt_num(L, 1, what, "failure_rate", c.failure_rate);
  c.window_calls = opt_int(L, 1, what, "window_calls", c.window_calls);
  c.window_seconds = opt_num(L, 1, what, "window_seconds", c.window_seconds);
  c.min_calls = opt_int(L, 1, what, "min_calls", c.min_calls);
  c.cooldown = opt_num(L, 1, what, "cooldown", c.cooldown);
  c.cooldown_multiplier = opt_num(L, 1, what, "cooldown_multiplier", c.cooldown_multiplier);
  c.max_cooldown = opt_num(L, 1, what, "max_cooldown", c.max_cooldown);
  c.half_open_probes = opt_int(L, 1, what, "half_open_probes", c.half_open_probes);
  c.success_ratio = opt_num(L, 1, what, "success_ratio", c.success_ratio);
  c.half_open_max_wait = opt_num(L, 1, what, "half_open_max_wait", c.half_open_max_wait);
  check_config(L, what, breaker_config_check(&c));
  lbreaker *w = new_udata(L, sizeof *w, BREAKER_MT);
  w->b = breaker_new(&c);
  if (!w->b)
    return luaL_error(L, "breaker: out of memory");
  breaker_set_callback(w->b, on_breaker_change, w);
  return 1;
}

static int l_breaker_gc(lua_State *L) {
  lbreaker *w = luaL_checkudata(L, 1, BREAKER_MT);
  breaker_free(w->b);
  w->b = NULL;
  return 0;
}

static int l_breaker_allow(lua_State *L) {
  lbreaker *w = check_breaker(L);
  double wait = 0;
  int ok = breaker_allow(w->b, luaL_checknumber(L, 2), &wait);
  lua_pushboolean(L, ok);
  lua_pushnumber(L, wait);
  return 2 + push_change(L, w);
}

static int l_breaker_record(lua_State *L) {
  lbreaker *w = check_breaker(L);
  double now = luaL_checknumber(L, 2);
  luaL_checkany(L, 3);
  breaker_record(w->b, now, lua_toboolean(L, 3));
  return push_change(L, w);
}

static int l_breaker_release(lua_State *L) {
  lbreaker *w = check_breaker(L);
  breaker_release(w->b, luaL_checknumber(L, 2));
  return 0;
}

static int l_breaker_state(lua_State *L) {
  lua_pushstring(L, breaker_state_name(breaker_state(check_breaker(L)->b)));
  return 1;
}

/* breaker:cooldown() -> seconds an open breaker stays open before its next probe */
static int l_breaker_cooldown(lua_State *L) {
  lua_pushnumber(L, breaker_current_cooldown(check_breaker(L)->b));
  return 1;
}

static int l_breaker_snapshot(lua_State *L) {
  lbreaker *w = check_breaker(L);
  breaker_checkpoint cp;
  breaker_snapshot(w->b, luaL_checknumber(L, 2), &cp);
  lua_createtable(L, 0, 5);
  lua_pushstring(L, breaker_state_name(cp.state));
  lua_setfield(L, -2, "state");
  lua_pushnumber(L, cp.opened_ago);
  lua_setfield(L, -2, "opened_ago");
  lua_pushinteger(L, cp.consecutive_failures);
  lua_setfield(L, -2, "consecutive_failures");
  lua_pushinteger(L, cp.consecutive_successes);
  lua_setfield(L, -2, "consecutive_successes");
  lua_pushinteger(L, cp.open_count);
  lua_setfield(L, -2, "open_count");
  return 1;
}

static int l_breaker_restore(lua_State *L) {
  static const char what[] = "breaker:restore";
  lbreaker *w = check_breaker(L);
  luaL_checktype(L, 2, LUA_TTABLE);
  double now = luaL_checknumber(L, 3);
  breaker_checkpoint cp = {0};
  const char *state = opt_str(L, 2, what, "state", "closed");
  if (strcmp(state, "closed") == 0)
    cp.state = BREAKER_CLOSED;
  else if (strcmp(state, "open") == 0)
    cp.state = BREAKER_OPEN;
  else if (strcmp(state, "half_open") == 0)
    cp.state = BREAKER_HALF_OPEN;
  else
    return luaL_error(L, "%s: unknown state '%s' (use closed, open or half_open)", what, state);
  cp.opened_ago = opt_num(L, 2, what, "opened_ago", 0);
  cp.consecutive_failures = opt_int(L, 2, what, "consecutive_failures", 0);
  cp.consecutive_successes = opt_int(L, 2, what, "consecutive_successes", 0);
  cp.open_count = opt_int(L, 2, what, "open_count", cp.state == BREAKER_CLOSED ? 0 : 1);
  if (breaker_restore(w->b, &cp, now) != 0)
    return luaL_error(L,
                      "%s: snapshot is inconsistent (negative counts or age, or not open "
                      "once though not closed)",
                      what);
  return 0;
}

/* ---- limiter -------------------------------------------------------------------------- */

static int l_limiter(lua_State *L) {
  static const char what[] = "limiter";
  luaL_checktype(L, 1, LUA_TTABLE);
  ratelimit_config c;
  ratelimit_config_default(&c);
  c.rate = opt_num(L, 1, what, "rps", c.rate);
  c.burst = opt_num(L, 1, what, "burst", c.rate > 1 ? c.rate : 1);
  check_config(L, what, ratelimit_config_check(&c));
  ratelimit_init(new_udata(L, sizeof(ratelimit), LIMITER_MT), &c);
  return 1;
}

static int l_limiter_reserve(lua_State *L) {
  ratelimit *rl = luaL_checkudata(L, 1, LIMITER_MT);
  lua_pushnumber(L, ratelimit_reserve(rl, luaL_checknumber(L, 2)));
  return 1;
}

/* limiter:set_rate(now, rps, burst): rps <= 0 = unlimited. */
static int l_limiter_set_rate(lua_State *L) {
  ratelimit *rl = luaL_checkudata(L, 1, LIMITER_MT);
  double now = luaL_checknumber(L, 2), rate = luaL_checknumber(L, 3);
  double burst = luaL_optnumber(L, 4, rl->cfg.burst);
  if (ratelimit_set_rate(rl, now, rate, burst) != 0)
    return luaL_error(L, "limiter:set_rate: rps must be finite and burst a finite number >= 1");
  return 0;
}

static int l_limiter_rate(lua_State *L) {
  lua_pushnumber(L, ratelimit_rate(luaL_checkudata(L, 1, LIMITER_MT)));
  return 1;
}

/* ---- learned rate limit (rate_adapt) ---------------------------------------------------- */

static int l_adapt(lua_State *L) {
  static const char what[] = "rate_adapt";
  luaL_checktype(L, 1, LUA_TTABLE);
  rate_adapt_config c;
  rate_adapt_config_default(&c);
  c.window = opt_num(L, 1, what, "window", c.window);
  c.target_share = opt_num(L, 1, what, "target_share", c.target_share);
  c.gain = opt_num(L, 1, what, "gain", c.gain);
  c.growth = opt_num(L, 1, what, "growth", c.growth);
  c.ceiling = opt_num(L, 1, what, "ceiling", c.ceiling);
  c.max_background = opt_num(L, 1, what, "max_background", c.max_background);
  c.min_samples = opt_int(L, 1, what, "min_samples", c.min_samples);
  check_config(L, what, rate_adapt_config_check(&c));
  rate_adapt_init(new_udata(L, sizeof(rate_adapt), ADAPT_MT), &c);
  return 1;
}

static int l_adapt_sent(lua_State *L) {
  rate_adapt *ra = luaL_checkudata(L, 1, ADAPT_MT);
  lua_pushnumber(L, (lua_Number)rate_adapt_sent(ra, luaL_checknumber(L, 2)));
  return 1;
}

static int l_adapt_answered(lua_State *L) {
  rate_adapt *ra = luaL_checkudata(L, 1, ADAPT_MT);
  rate_adapt_answered(ra, (long)luaL_checknumber(L, 2), luaL_checknumber(L, 3),
                      lua_toboolean(L, 4));
  return 0;
}

static int l_adapt_server_rate(lua_State *L) {
  rate_adapt *ra = luaL_checkudata(L, 1, ADAPT_MT);
  rate_adapt_server_rate(ra, luaL_checknumber(L, 2), luaL_checknumber(L, 3),
                         luaL_checknumber(L, 4));
  return 0;
}

static int l_adapt_refused(lua_State *L) {
  rate_adapt *ra = luaL_checkudata(L, 1, ADAPT_MT);
  lua_pushboolean(L, rate_adapt_refused(ra, luaL_checknumber(L, 2), luaL_checknumber(L, 3)));
  return 1;
}

static int l_adapt_limit(lua_State *L) {
  rate_adapt *ra = luaL_checkudata(L, 1, ADAPT_MT);
  lua_pushnumber(L, rate_adapt_limit(ra, luaL_checknumber(L, 2)));
  return 1;
}

/* The controller's state, for reports, `policy simulate` and specs. */
static int l_adapt_state(lua_State *L) {
  rate_adapt *ra = luaL_checkudata(L, 1, ADAPT_MT);
  lua_createtable(L, 0, 6);
  lua_pushnumber(L, ra->limit);
  lua_setfield(L, -2, "limit");
  lua_pushnumber(L, ra->background);
  lua_setfield(L, -2, "background");
  lua_pushnumber(L, ra->excess_limit);
  lua_setfield(L, -2, "excess_limit");
  lua_pushboolean(L, ra->anchored);
  lua_setfield(L, -2, "cutting");
  lua_pushnumber(L, (lua_Number)ra->cuts);
  lua_setfield(L, -2, "cuts");
  lua_pushnumber(L, (lua_Number)ra->noise);
  lua_setfield(L, -2, "noise");
  return 1;
}

/* ---- budget --------------------------------------------------------------------------- */

static int l_budget(lua_State *L) {
  static const char what[] = "budget";
  luaL_checktype(L, 1, LUA_TTABLE);
  double ratio = opt_num(L, 1, what, "ratio", 0.2);
  int min_retries = opt_int(L, 1, what, "min_retries", 10);
  check_config(L, what, budget_check(ratio, min_retries));
  budget_init(new_udata(L, sizeof(budget), BUDGET_MT), ratio, min_retries);
  return 1;
}

static int l_budget_first(lua_State *L) {
  budget_record_first(luaL_checkudata(L, 1, BUDGET_MT));
  return 0;
}

static int l_budget_try_retry(lua_State *L) {
  lua_pushboolean(L, budget_try_retry(luaL_checkudata(L, 1, BUDGET_MT)));
  return 1;
}

static int l_budget_remaining(lua_State *L) {
  lua_pushnumber(L, (lua_Number)budget_remaining(luaL_checkudata(L, 1, BUDGET_MT)));
  return 1;
}

static int l_budget_snapshot(lua_State *L) {
  budget *b = luaL_checkudata(L, 1, BUDGET_MT);
  lua_createtable(L, 0, 2);
  lua_pushnumber(L, (lua_Number)b->first_attempts);
  lua_setfield(L, -2, "first_attempts");
  lua_pushnumber(L, (lua_Number)b->retries);
  lua_setfield(L, -2, "retries");
  return 1;
}

static int l_budget_restore(lua_State *L) {
  static const char what[] = "budget:restore";
  budget *b = luaL_checkudata(L, 1, BUDGET_MT);
  luaL_checktype(L, 2, LUA_TTABLE);
  int first = opt_int(L, 2, what, "first_attempts", 0);
  int retries = opt_int(L, 2, what, "retries", 0);
  if (first < 0 || retries < 0)
    return luaL_error(L, "%s: first_attempts and retries must be >= 0", what);
  b->first_attempts = first;
  b->retries = retries;
  return 0;
}

/* ---- module --------------------------------------------------------------------------- */

static void new_class(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction gc) {
  luaL_newmetatable(L, name);
  lua_newtable(L);
  luaL_register(L, NULL, methods);
  lua_setfield(L, -2, "__index");
  if (gc) {
    lua_pushcfunction(L, gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pushstring(L, name);
  lua_setfield(L, -2, "__metatable"); /* keeps Lua code from swapping the methods */
  lua_pop(L, 1);
}

int luaopen_scimrun_resilience(lua_State *L) {
  static const luaL_Reg rng_m[] = {{"next", l_rng_next}, {NULL, NULL}};
  static const luaL_Reg breaker_m[] = {
      {"allow", l_breaker_allow},       {"record", l_breaker_record},
      {"release", l_breaker_release},   {"state", l_breaker_state},
      {"cooldown", l_breaker_cooldown}, {"snapshot", l_breaker_snapshot},
      {"restore", l_breaker_restore},   {NULL, NULL}};
  static const luaL_Reg limiter_m[] = {{"reserve", l_limiter_reserve},
                                       {"set_rate", l_limiter_set_rate},
                                       {"rate", l_limiter_rate},
                                       {NULL, NULL}};
  static const luaL_Reg budget_m[] = {
      {"first", l_budget_first},         {"try_retry", l_budget_try_retry},
      {"remaining", l_budget_remaining}, {"snapshot", l_budget_snapshot},
      {"restore", l_budget_restore},     {NULL, NULL}};
  static const luaL_Reg adapt_m[] = {{"sent", l_adapt_sent},
                                     {"answered", l_adapt_answered},
                                     {"server_rate", l_adapt_server_rate},
                                     {"refused", l_adapt_refused},
                                     {"limit", l_adapt_limit},
                                     {"state", l_adapt_state},
                                     {NULL, NULL}};
  static const luaL_Reg funcs[] = {{"rng", l_rng},
                                   {"backoff_delay", l_backoff_delay},
                                   {"breaker", l_breaker},
                                   {"limiter", l_limiter},
                                   {"budget", l_budget},
                                   {"rate_adapt", l_adapt},
                                   {NULL, NULL}};
  new_class(L, RNG_MT, rng_m, NULL);
  new_class(L, BREAKER_MT, breaker_m, l_breaker_gc);
  new_class(L, LIMITER_MT, limiter_m, NULL);
  new_class(L, BUDGET_MT, budget_m, NULL);
  new_class(L, ADAPT_MT, adapt_m, NULL);
  lua_newtable(L);
  luaL_register(L, NULL, funcs);
  return 1;
}
