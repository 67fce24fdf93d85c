/* test_backoff.c: the PRNG and the retry delay schedule (runtime/rng.h, runtime/backoff.h). */
#include <limits.h>
#include <math.h>
#include <string.h>

#include "backoff.h"
#include "check.h"
#include "rng.h"

static void test_rng(void) {
  rng a, b, c;
  rng_seed(&a, 42);
  rng_seed(&b, 42);
  rng_seed(&c, 43);
  int same = 1, differs = 0, in_range = 1;
  double sum = 0;
  for (int i = 0; i < 100000; i++) {
    double x = rng_next_double(&a), y = rng_next_double(&b), z = rng_next_double(&c);
    same &= x == y;
    differs |= x != z;
    in_range &= x >= 0 && x < 1;
    sum += x;
  }
  CHECK(same);
  CHECK(differs);
  CHECK(in_range);
  CHECK_NEAR(sum / 100000, 0.5, 0.01);
  rng_seed(&a, 0); /* a zero seed must not give the all-zero (stuck) state */
  CHECK(rng_next_u64(&a) != rng_next_u64(&a));
}

static void test_schedules(void) {
  backoff_params p;
  backoff_params_default(&p); /* exponential, base 1, x2, max 30, no jitter */
  CHECK(backoff_params_check(&p) == NULL);
  const double expected[] = {1, 2, 4, 8, 16, 30, 30, 30};
  for (int i = 0; i < 8; i++)
    CHECK_NEAR(backoff_delay(&p, i + 1, 0, NULL), expected[i], 1e-12);
  CHECK_NEAR(backoff_delay(&p, 0, 0, NULL), 1, 1e-12); /* retry < 1 counts as the first */

  p.base = 0.5;
  p.multiplier = 3;
  CHECK_NEAR(backoff_delay(&p, 3, 0, NULL), 4.5, 1e-12);

  p.kind = BACKOFF_CONSTANT;
  p.base = 2;
  CHECK_NEAR(backoff_delay(&p, 1, 0, NULL), 2, 1e-12);
  CHECK_NEAR(backoff_delay(&p, 50, 0, NULL), 2, 1e-12);

  p.kind = BACKOFF_LINEAR;
  p.base = 1.5;
  CHECK_NEAR(backoff_delay(&p, 1, 0, NULL), 1.5, 1e-12);
  CHECK_NEAR(backoff_delay(&p, 4, 0, NULL), 6, 1e-12);
  CHECK_NEAR(backoff_delay(&p, 100, 0, NULL), 30, 1e-12);

  /* min_delay floors a small base; max_delay caps everything */
  backoff_params_default(&p);
  p.base = 0.1;
  p.min_delay = 0.5;
  p.max_delay = 2;
  CHECK_NEAR(backoff_delay(&p, 1, 0, NULL), 0.5, 1e-12);
  CHECK_NEAR(backoff_delay(&p, 3, 0, NULL), 0.5, 1e-12);
  CHECK_NEAR(backoff_delay(&p, 4, 0, NULL), 0.8, 1e-12);
  CHECK_NEAR(backoff_delay(&p, 6, 0, NULL), 2, 1e-12);
}

static void test_overflow(void) {
  backoff_params p;
  backoff_params_default(&p);
  p.multiplier = 10;
  p.max_delay = 3600;
  const int retries[] = {40, 400, 100000, INT_MAX};
  for (int i = 0; i < 4; i++) {
    double d = backoff_delay(&p, retries[i], 0, NULL);
    CHECK(isfinite(d));
    CHECK_NEAR(d, 3600, 1e-9);
  }
  p.kind = BACKOFF_LINEAR;
  CHECK_NEAR(backoff_delay(&p, INT_MAX, 0, NULL), 3600, 1e-9);
  p.kind = BACKOFF_EXPONENTIAL;
  p.base = 0; /* 0 * inf would be NaN */
  CHECK_NEAR(backoff_delay(&p, INT_MAX, 0, NULL), 0, 0);
  p.base = 1;
  p.multiplier = 0.5; /* shrinking schedule underflows to min_delay, not NaN */
  p.min_delay = 0.25;
  CHECK_NEAR(backoff_delay(&p, INT_MAX, 0, NULL), 0.25, 0);
}

static void test_jitter_bounds(void) {
  backoff_params p;
  backoff_params_default(&p);
  rng r;
  rng_seed(&r, 7);
  const int n = 20000;

  p.jitter = JITTER_FULL; /* retry 4: d = 8, samples in [0, 8] spread over the range */
  double lo = 1e9, hi = -1, sum = 0;
  for (int i = 0; i < n; i++) {
    double d = backoff_delay(&p, 4, 0, &r);
    lo = fmin(lo, d), hi = fmax(hi, d), sum += d;
  }
  CHECK(lo >= 0 && lo < 0.1);
  CHECK(hi <= 8 && hi > 7.9);
  CHECK_NEAR(sum / n, 4, 0.1);

  p.jitter = JITTER_EQUAL; /* [4, 8], mean 6 */
  lo = 1e9, hi = -1, sum = 0;
  for (int i = 0; i < n; i++) {
    double d = backoff_delay(&p, 4, 0, &r);
    lo = fmin(lo, d), hi = fmax(hi, d), sum += d;
  }
  CHECK(lo >= 4 && lo < 4.05);
  CHECK(hi <= 8 && hi > 7.95);
  CHECK_NEAR(sum / n, 6, 0.05);

  p.jitter = JITTER_FULL; /* full jitter stays at or above min_delay */
  p.min_delay = 3;
  lo = 1e9;
  for (int i = 0; i < n; i++)
    lo = fmin(lo, backoff_delay(&p, 4, 0, &r));
  CHECK(lo >= 3 && lo < 3.05);

  /* decorrelated: each delay in [base, min(max, 3 * prev)]; the chain never passes max */
  backoff_params_default(&p);
  p.jitter = JITTER_DECORRELATED;
  p.max_delay = 20;
  double prev = 0;
  int within = 1, reached_cap_region = 0;
  for (int i = 0; i < n; i++) {
    double d = backoff_delay(&p, i + 1, prev, &r);
    double upper = fmin(20, 3 * (prev > 0 ? prev : p.base));
    within &= d >= p.base && d <= upper;
    reached_cap_region |= d > 15;
    prev = d;
  }
  CHECK(within);
  CHECK(reached_cap_region);
  /* first retry (no previous delay): U(base, 3 * base) */
  CHECK(backoff_delay(&p, 1, 0, &r) <= 3);
}

static void test_same_seed_same_delays(void) {
  backoff_params p;
  backoff_params_default(&p);
  p.jitter = JITTER_FULL;
  rng a, b;
  rng_seed(&a, 2024);
  rng_seed(&b, 2024);
  int same = 1, varied = 0;
  double first = backoff_delay(&p, 3, 0, &a);
  same &= first == backoff_delay(&p, 3, 0, &b);
  for (int i = 0; i < 100; i++) {
    double x = backoff_delay(&p, 3, 0, &a);
    same &= x == backoff_delay(&p, 3, 0, &b);
    varied |= x != first;
  }
  CHECK(same);
  CHECK(varied);
}

static void test_names_and_checks(void) {
  backoff_kind k;
  backoff_jitter j;
  CHECK(backoff_kind_parse("linear", &k) == 0 && k == BACKOFF_LINEAR);
  CHECK(backoff_kind_parse("fibonacci", &k) == -1);
  CHECK(backoff_jitter_parse("decorrelated", &j) == 0 && j == JITTER_DECORRELATED);
  CHECK(backoff_jitter_parse("fulll", &j) == -1);
  CHECK(strcmp(backoff_jitter_name(JITTER_EQUAL), "equal") == 0);
  CHECK(strcmp(backoff_kind_name(BACKOFF_CONSTANT), "constant") == 0);

  backoff_params p;
  backoff_params_default(&p);
  p.min_delay = 40; /* above max_delay 30 */
  CHECK(backoff_params_check(&p) != NULL);
  backoff_params_default(&p);
  p.base = -1;
  CHECK(backoff_params_check(&p) != NULL);
  backoff_params_default(&p);
  p.max_delay = INFINITY;
  CHECK(backoff_params_check(&p) != NULL);
  backoff_params_default(&p);
  p.multiplier = NAN;
  CHECK(backoff_params_check(&p) != NULL);
}

int main(void) {
  test_rng();
  test_schedules();
  test_overflow();
  test_jitter_bounds();
  test_same_seed_same_delays();
  test_names_and_checks();
  return check_report();
}
