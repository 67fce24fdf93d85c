/* backoff.c: retry delay arithmetic (see backoff.h). */
#include "backoff.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

static const char *const kind_names[] = {"constant", "linear", "exponential"};
static const char *const jitter_names[] = {"none", "full", "equal", "decorrelated"};

void backoff_params_default(backoff_params *p) {
  p->kind = BACKOFF_EXPONENTIAL;
  p->base = 1;
  p->multiplier = 2;
  p->min_delay = 0;
  p->max_delay = 30;
  p->jitter = JITTER_NONE;
}

const char *backoff_params_check(const backoff_params *p) {
  if ((unsigned)p->kind > BACKOFF_EXPONENTIAL)
    return "backoff must be constant, linear or exponential";
  if ((unsigned)p->jitter > JITTER_DECORRELATED)
    return "jitter must be none, full, equal or decorrelated";
  if (!(p->base >= 0) || !isfinite(p->base))
    return "base must be a finite number of seconds >= 0";
  if (!(p->multiplier > 0) || !isfinite(p->multiplier))
    return "multiplier must be a finite number > 0";
  if (!(p->min_delay >= 0) || !isfinite(p->min_delay))
    return "min_delay must be a finite number of seconds >= 0";
  if (!(p->max_delay >= p->min_delay) || !isfinite(p->max_delay))
    return "max_delay must be a finite number of seconds >= min_delay";
  return NULL;
}

int backoff_kind_parse(const char *name, backoff_kind *out) {
  for (int i = 0; i <= BACKOFF_EXPONENTIAL; i++)
    if (strcmp(name, kind_names[i]) == 0) {
      *out = (backoff_kind)i;
      return 0;
    }
  return -1;
}

int backoff_jitter_parse(const char *name, backoff_jitter *out) {
  for (int i = 0; i <= JITTER_DECORRELATED; i++)
    if (strcmp(name, jitter_names[i]) == 0) {
      *out = (backoff_jitter)i;
      return 0;
    }
  return -1;
}

const char *backoff_kind_name(backoff_kind k) {
  return (unsigned)k <= BACKOFF_EXPONENTIAL ? kind_names[k] : "?";
}

const char *backoff_jitter_name(backoff_jitter j) {
  return (unsigned)j <= JITTER_DECORRELATED ? jitter_names[j] : "?";
}

static double clamp(double v, double lo, double hi) {
  if (!(v >= lo)) /* also catches NaN */
    return lo;
  return v > hi ? hi : v;
}

/* The undelayed schedule, already capped at max_delay without ever computing an infinity:
 * base * multiplier^(retry-1) is compared in log space before it is evaluated. */
static double schedule(const backoff_params *p, int retry) {
  if (p->base <= 0)
    return 0;
  switch (p->kind) {
  case BACKOFF_CONSTANT: return p->base;
  case BACKOFF_LINEAR: return p->base * (double)retry;
  case BACKOFF_EXPONENTIAL:
    if (p->multiplier > 1 &&
        (double)(retry - 1) * log(p->multiplier) >= log(p->max_delay / p->base) + 1e-12)
      return p->max_delay;
    return p->base * pow(p->multiplier, (double)(retry - 1));
  }
  return p->base;
}

double backoff_delay(const backoff_params *p, int retry, double prev_delay, rng *r) {
  double lo = p->min_delay, hi = p->max_delay;
  if (retry < 1)
    retry = 1;
  if (p->jitter != JITTER_NONE && !r)
    r = rng_default();
  if (p->jitter == JITTER_DECORRELATED) {
    double prev = (prev_delay > 0 && isfinite(prev_delay)) ? prev_delay : p->base;
    double upper = prev * 3 > hi ? hi : prev * 3;
    return clamp(rng_uniform(r, p->base, upper), lo, hi);
  }
  double d = clamp(schedule(p, retry), lo, hi);
  switch (p->jitter) {
  case JITTER_FULL: d = rng_uniform(r, lo, d); break;
  case JITTER_EQUAL: d = d / 2 + rng_uniform(r, 0, d / 2); break;
  default: break;
  }
  return clamp(d, lo, hi);
}
