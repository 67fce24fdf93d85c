/* ratelimit.c: token bucket with queued reservations and AIMD rate adaptation (ratelimit.h). */
#include "ratelimit.h"

#include <math.h>
#include <stddef.h>

void ratelimit_config_default(ratelimit_config *cfg) {
  cfg->rate = 0;
  cfg->burst = 1;
  cfg->min_fraction = 0.01;
  cfg->recover_step = 0.1;
  cfg->recover_after = 1;
}

const char *ratelimit_config_check(const ratelimit_config *c) {
  if (!isfinite(c->rate))
    return "rps must be a finite number (<= 0 = unlimited)";
  if (!(c->burst >= 1) || !isfinite(c->burst))
    return "burst must be a finite number >= 1";
  if (!(c->min_fraction > 0 && c->min_fraction <= 1))
    return "min_fraction must be > 0 and <= 1";
  if (!(c->recover_step > 0 && c->recover_step <= 1))
    return "recover_step must be > 0 and <= 1";
  if (!(c->recover_after >= 0) || !isfinite(c->recover_after))
    return "recover_after must be a finite number of seconds >= 0";
  return NULL;
}

void ratelimit_init(ratelimit *rl, const ratelimit_config *cfg) {
  rl->cfg = *cfg;
  rl->current = cfg->rate;
  rl->tokens = cfg->burst;
  rl->last = 0;
  rl->last_change = 0;
  rl->started = 0;
}

static int unlimited(const ratelimit *rl) { return !(rl->cfg.rate > 0); }

/* Refills at the current rate for the time since the last update. Time never runs
 * backwards here: an earlier `now` (callers racing on a clock read) refills nothing. */
static void refill(ratelimit *rl, double now) {
  if (!rl->started) {
    rl->started = 1;
    rl->last = rl->last_change = now;
    return;
  }
  if (now > rl->last) {
    rl->tokens += (now - rl->last) * rl->current;
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
  double wait = -rl->tokens / rl->current + (rl->last - now);
  return wait > 0 ? wait : 0;
}

double ratelimit_throttle(ratelimit *rl, double now, double factor) {
  if (unlimited(rl))
    return 0;
  if (!(factor > 0 && factor < 1))
    return rl->current;
  refill(rl, now); /* tokens earned so far were earned at the old rate */
  double floor_rate = rl->cfg.rate * rl->cfg.min_fraction;
  rl->current *= factor;
  if (rl->current < floor_rate)
    rl->current = floor_rate;
  rl->last_change = now;
  return rl->current;
}

double ratelimit_recover(ratelimit *rl, double now) {
  if (unlimited(rl))
    return 0;
  refill(rl, now);
  if (rl->current >= rl->cfg.rate || now - rl->last_change < rl->cfg.recover_after)
    return rl->current;
  rl->current += rl->cfg.rate * rl->cfg.recover_step;
  if (rl->current > rl->cfg.rate)
    rl->current = rl->cfg.rate;
  rl->last_change = now;
  return rl->current;
}

double ratelimit_rate(const ratelimit *rl) { return unlimited(rl) ? 0 : rl->current; }
