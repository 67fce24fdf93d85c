/*
 * backoff: how long to wait before retry number `retry` (1 = the first retry).
 *
 * Contract:
 *  - Undelayed delay d: constant = base; linear = base * retry;
 *    exponential = base * multiplier^(retry - 1); then d is clamped to [min_delay, max_delay].
 *  - Jitter: none = d; full = U(min_delay, d) (U(0, d) with the default min_delay 0);
 *    equal = d/2 + U(0, d/2); decorrelated (AWS) = min(max_delay, U(base, prev_delay * 3)),
 *    where prev_delay <= 0 (no previous delay) counts as base.
 *  - The result is always finite and within [min_delay, max_delay], also for huge retry counts.
 *  - A NULL rng uses rng_default(). Check params with backoff_params_check() first: it returns
 *    NULL when they are usable, else a static message naming the bad field.
 */
#ifndef SCIMRUN_BACKOFF_H
#define SCIMRUN_BACKOFF_H

#include "rng.h"

typedef enum { BACKOFF_CONSTANT, BACKOFF_LINEAR, BACKOFF_EXPONENTIAL } backoff_kind;
typedef enum { JITTER_NONE, JITTER_FULL, JITTER_EQUAL, JITTER_DECORRELATED } backoff_jitter;

typedef struct backoff_params {
  backoff_kind kind;
  double base;       /* seconds, >= 0 */
  double multiplier; /* exponential growth factor, > 0 */
  double min_delay;  /* seconds, >= 0 */
  double max_delay;  /* seconds, finite, >= min_delay */
  backoff_jitter jitter;
} backoff_params;

/* exponential, base 1, multiplier 2, min 0, max 30, jitter none */
void backoff_params_default(backoff_params *p);
const char *backoff_params_check(const backoff_params *p);

/* Name <-> enum ("constant", "linear", "exponential"; "none", "full", "equal",
 * "decorrelated"). The parsers return 0 on success, -1 for an unknown name. */
int backoff_kind_parse(const char *name, backoff_kind *out);
int backoff_jitter_parse(const char *name, backoff_jitter *out);
const char *backoff_kind_name(backoff_kind k);
const char *backoff_jitter_name(backoff_jitter j);

double backoff_delay(const backoff_params *p, int retry, double prev_delay, rng *r);

#endif
