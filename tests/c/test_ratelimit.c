/* test_ratelimit.c: token bucket rate, burst, fair reservations, set_rate
 * (runtime/ratelimit.h). Time is simulated, so the test is exact and instant. */
#include "check.h"
#include "ratelimit.h"

static ratelimit make(double rate, double burst) {
  ratelimit_config c;
  ratelimit_config_default(&c);
  c.rate = rate;
  c.burst = burst;
  CHECK(ratelimit_config_check(&c) == NULL);
  ratelimit rl;
  ratelimit_init(&rl, &c);
  return rl;
}

/* `workers` callers in a loop: reserve, wait as told, call (taking `latency`), repeat.
 * Returns how many calls started in [start, end). */
static int simulate(ratelimit *rl, int workers, double start, double end, double latency) {
  double next[16];
  int calls = 0;
  for (int i = 0; i < workers; i++)
    next[i] = start;
  for (;;) {
    int w = 0;
    for (int i = 1; i < workers; i++)
      if (next[i] < next[w])
        w = i;
    if (next[w] >= end)
      return calls;
    double at = next[w] + ratelimit_reserve(rl, next[w]);
    calls += at < end;
    next[w] = at + latency;
  }
}

static void test_holds_rate(void) {
  ratelimit rl = make(20, 1);
  int calls = simulate(&rl, 8, 0, 5, 0.01);
  CHECK_NEAR(calls, 100, 10); /* 20/s over 5 s, within 10% */

  rl = make(20, 1); /* one caller that never waits for anything else */
  CHECK_NEAR(simulate(&rl, 1, 0, 5, 0), 100, 10);

  rl = make(3.5, 1);
  CHECK_NEAR(simulate(&rl, 4, 0, 5, 0.2), 17.5, 1.75);
}

static void test_fair_queue(void) {
  ratelimit rl = make(10, 1);
  CHECK(ratelimit_reserve(&rl, 0) == 0);
  double prev = 0;
  int increasing = 1;
  for (int i = 1; i <= 5; i++) {
    double w = ratelimit_reserve(&rl, 0);
    CHECK_NEAR(w, i * 0.1, 1e-9); /* each later caller waits one interval longer */
    increasing &= w > prev;
    prev = w;
  }
  CHECK(increasing);
  /* once the queue has drained (at 0.5 s) the bucket refills, up to burst only */
  CHECK(ratelimit_reserve(&rl, 1.0) == 0);
  CHECK_NEAR(ratelimit_reserve(&rl, 1.0), 0.1, 1e-9);
}

static void test_burst(void) {
  ratelimit rl = make(10, 5);
  for (int i = 0; i < 5; i++)
    CHECK(ratelimit_reserve(&rl, 0) == 0);
  CHECK_NEAR(ratelimit_reserve(&rl, 0), 0.1, 1e-9);
  /* a long idle period refills only up to burst */
  int free_calls = 0;
  while (ratelimit_reserve(&rl, 100) == 0)
    free_calls++;
  CHECK(free_calls == 5);
  /* over 5 s the burst adds to, but does not lift, the steady rate */
  rl = make(10, 5);
  CHECK_NEAR(simulate(&rl, 4, 0, 5, 0), 55, 1);
}

static void test_set_rate(void) {
  ratelimit rl = make(10, 1);
  CHECK(ratelimit_set_rate(&rl, 0, 5, 1) == 0);
  CHECK_NEAR(ratelimit_rate(&rl), 5, 1e-9);
  CHECK_NEAR(simulate(&rl, 4, 0, 5, 0), 25, 2.5);

  /* queued callers keep their place; later ones are spaced at the new rate */
  rl = make(10, 1);
  CHECK(ratelimit_reserve(&rl, 0) == 0);
  CHECK_NEAR(ratelimit_reserve(&rl, 0), 0.1, 1e-9);
  CHECK(ratelimit_set_rate(&rl, 0, 1, 1) == 0);
  CHECK_NEAR(ratelimit_reserve(&rl, 0), 2, 1e-9); /* a debt of 2 tokens at 1/s */

  /* from unlimited to a rate: one burst, not everything saved up while unlimited */
  rl = make(0, 1);
  for (int i = 0; i < 100; i++)
    ratelimit_reserve(&rl, i);
  CHECK(ratelimit_set_rate(&rl, 100, 10, 2) == 0);
  CHECK(ratelimit_reserve(&rl, 100) == 0);
  CHECK(ratelimit_reserve(&rl, 100) == 0);
  CHECK_NEAR(ratelimit_reserve(&rl, 100), 0.1, 1e-9);
  CHECK(ratelimit_set_rate(&rl, 100, 0, 1) == 0); /* back to unlimited */
  CHECK(ratelimit_reserve(&rl, 100) == 0 && ratelimit_rate(&rl) == 0);
  CHECK(ratelimit_set_rate(&rl, 100, 1.0 / 0.0, 1) == -1);
  CHECK(ratelimit_set_rate(&rl, 100, 1, 0.5) == -1);
}

static void test_unlimited_and_checks(void) {
  ratelimit rl = make(0, 1);
  int all_free = 1;
  for (int i = 0; i < 1000; i++)
    all_free &= ratelimit_reserve(&rl, 0) == 0;
  CHECK(all_free);
  CHECK(ratelimit_rate(&rl) == 0);
  CHECK(ratelimit_reserve(&rl, 0) == 0);

  ratelimit_config c;
  ratelimit_config_default(&c);
  c.rate = 10;
  c.burst = 0;
  CHECK(ratelimit_config_check(&c) != NULL);
  c.burst = 1;
  c.rate = 0.0 / 0.0;
  CHECK(ratelimit_config_check(&c) != NULL);
}

int main(void) {
  test_holds_rate();
  test_fair_queue();
  test_burst();
  test_set_rate();
  test_unlimited_and_checks();
  return check_report();
}
