/* ratelimit.c: token bucket with queued reservations (ratelimit.h). */
#include "ratelimit.h"

#include <math.h>
#include <stddef.h>

void ratelimit_config_default(ratelimit_config *cfg) {
  cfg->rate = 0;
  cfg->burst = 1;
}

const char *ratelimit_config_check(const ratelimit_config *c) {
  if (!isfinite(c->rate))
    return "rps must be a finite number (<= 0 = unlimited)";
  if (!(c->burst >= 1) || !isfinite(c->burst))
    return "burst must be a finite number >= 1";
  return NULL;
}

void ratelimit_init(ratelimit *rl, const ratelimit_config *cfg) {
  rl->cfg = *cfg;
  rl->tokens = cfg->burst;
  rl->last = 0;
  rl->started = 0;
}

static int unlimited(const ratelimit *rl) { return !(rl->cfg.rate > 0); }

/* Refills at the current rate for the time since the last update. Time never runs
 * backwards here: an earlier `now` (callers racing on a clock read) refills nothing. */
static void refill(ratelimit *rl, double now) {
  if (!rl->started) {
    rl->started = 1;
    rl->last = now;
    return;
  }
  if (now > rl->last) {
    if (!unlimited(rl))
      rl->tokens += (now - rl->last) * rl->cfg.rate;
    if (rl->tokens > rl->cfg.burst)
      rl->tokens = rl->cfg.burst;
    rl->last = now;
  }
}

double ratelimit_reserve(ratelimit *rl, double now) {
  if (unlimited(rl))
    return 0;
  refill(rl, now);
  rl->tokens -= 1;
  if (rl->tokens >= 0)
    return 0;
  /* The debt is paid back at the current rate; `now` may lag `last` by a clock race. */
  double wait = -rl->tokens / rl->cfg.rate + (rl->last - now);
  return wait > 0 ? wait : 0;
}

int ratelimit_set_rate(ratelimit *rl, double now, double rate, double burst) {
  if (!isfinite(rate) || !(burst >= 1) || !isfinite(burst))
    return -1;
  refill(rl, now);
  if (unlimited(rl) && rate > 0)
    rl->tokens = burst; /* leaving unlimited: start with one burst, not a hoard or a debt */
  rl->cfg.rate = rate;
  rl->cfg.burst = burst;
  if (rl->tokens > burst)
    rl->tokens = burst;
  return 0;
}

double ratelimit_rate(const ratelimit *rl) { return unlimited(rl) ? 0 : rl->cfg.rate; }
