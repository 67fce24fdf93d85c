/*
 * ratelimit: a token bucket with fair reservations. Pure arithmetic: the caller passes
 * monotonic time `now` (seconds) into every call.
 *
 * Contract:
 *  - Tokens refill at `rate` up to burst; the bucket starts full.
 *  - ratelimit_reserve() always takes a token: it returns 0 when one was there, else the
 *    seconds until the caller's token exists. Reservations queue in call order: each later
 *    caller gets a longer wait, so the calls, made after their waits, hold the rate.
 *  - ratelimit_set_rate() changes rate and burst from `now` on: tokens earned so far were
 *    earned at the old rate, and callers already promised a token keep their place.
 *  - rate <= 0 means unlimited: reserve returns 0.
 * Who decides the rate (a fixed policy value, the learned limit of rate_adapt, a server's
 * RateLimit headers) is the caller's business.
 */
#ifndef SCIMRUN_RATELIMIT_H
#define SCIMRUN_RATELIMIT_H

typedef struct ratelimit_config {
  double rate;  /* tokens per second; <= 0 = unlimited */
  double burst; /* bucket size, >= 1 */
} ratelimit_config;

typedef struct ratelimit {
  ratelimit_config cfg;
  double tokens; /* negative = tokens already promised to waiting callers */
  double last;   /* when tokens was last brought up to date */
  int started;
} ratelimit;

/* rate 0 (unlimited), burst 1 */
void ratelimit_config_default(ratelimit_config *cfg);
/* NULL when cfg is usable, else a static message naming the bad field. */
const char *ratelimit_config_check(const ratelimit_config *cfg);
void ratelimit_init(ratelimit *rl, const ratelimit_config *cfg);

double ratelimit_reserve(ratelimit *rl, double now);
/* Returns 0, or -1 when rate is not finite or burst < 1 (nothing changed). */
int ratelimit_set_rate(ratelimit *rl, double now, double rate, double burst);
double ratelimit_rate(const ratelimit *rl); /* 0 = unlimited */

#endif
