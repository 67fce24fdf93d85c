/*
 * ratelimit: a token bucket with fair reservations and an adaptive rate (AIMD on 429).
 * Pure arithmetic: the caller passes monotonic time `now` (seconds) into every call.
 *
 * Contract:
 *  - Tokens refill at the current rate up to burst; the bucket starts full.
 *  - ratelimit_reserve() always takes a token: it returns 0 when one was there, else the
 *    seconds until the caller's token exists. Reservations queue in call order: each later
 *    caller gets a longer wait, so the calls, made after their waits, hold the rate.
 *  - ratelimit_throttle(factor) multiplies the current rate by factor (0 < factor < 1), never
 *    below min_fraction * rate. ratelimit_recover() adds recover_step * rate, up to rate, at
 *    most once per recover_after seconds since the last throttle or recovery step.
 *  - rate <= 0 means unlimited: reserve returns 0 and throttle/recover do nothing.
 */
#ifndef SCIMRUN_RATELIMIT_H
#define SCIMRUN_RATELIMIT_H

typedef struct ratelimit_config {
  double rate;          /* tokens per second; <= 0 = unlimited */
  double burst;         /* bucket size, >= 1 */
  double min_fraction;  /* floor of the throttled rate, as a share of rate (0, 1] */
  double recover_step;  /* additive increase per step, as a share of rate (0, 1] */
  double recover_after; /* quiet seconds before each increase, >= 0 */
} ratelimit_config;

typedef struct ratelimit {
  ratelimit_config cfg;
  double current;     /* current (possibly throttled) rate */
  double tokens;      /* negative = tokens already promised to waiting callers */
  double last;        /* when tokens was last brought up to date */
  double last_change; /* last throttle or recovery step */
  int started;
} ratelimit;

/* rate 0 (unlimited), burst 1, min_fraction 0.01, recover_step 0.1, recover_after 1 */
void ratelimit_config_default(ratelimit_config *cfg);
/* NULL when cfg is usable, else a static message naming the bad field. */
const char *ratelimit_config_check(const ratelimit_config *cfg);
void ratelimit_init(ratelimit *rl, const ratelimit_config *cfg);

double ratelimit_reserve(ratelimit *rl, double now);
/* Both return the rate now in force (0 = unlimited). */
double ratelimit_throttle(ratelimit *rl, double now, double factor);
double ratelimit_recover(ratelimit *rl, double now);
double ratelimit_rate(const ratelimit *rl);

#endif
