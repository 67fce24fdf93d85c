/* test_ratelimit.c: token bucket rate, burst, fair reservations, throttle/recover
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

static void test_throttle_recover(void) {
  ratelimit rl = make(10, 1);
  CHECK_NEAR(ratelimit_throttle(&rl, 0, 0.5), 5, 1e-9);
  CHECK_NEAR(ratelimit_rate(&rl), 5, 1e-9);
  CHECK_NEAR(simulate(&rl, 4, 0, 5, 0), 25, 2.5);

  for (int i = 0; i < 20; i++) /* a storm of 429s stops at 1% of the configured rate */
    ratelimit_throttle(&rl, 5, 0.5);
  CHECK_NEAR(ratelimit_rate(&rl), 0.1, 1e-9);
  double w1 = ratelimit_reserve(&rl, 5); /* queued callers are now 10 s apart */
  CHECK_NEAR(ratelimit_reserve(&rl, 5) - w1, 10, 1e-9);

  CHECK_NEAR(ratelimit_recover(&rl, 5.5), 0.1, 1e-9); /* not quiet long enough yet */
  CHECK_NEAR(ratelimit_recover(&rl, 6), 1.1, 1e-9);   /* + 10% of 10 per quiet second */
  CHECK_NEAR(ratelimit_recover(&rl, 6.5), 1.1, 1e-9); /* one step per quiet period */
  double t = 6;
  while (ratelimit_rate(&rl) < 10 && t < 100)
    ratelimit_recover(&rl, t += 1);
  CHECK_NEAR(t, 15, 1e-9);                          /* 9 more steps of 1 rps */
  CHECK_NEAR(ratelimit_recover(&rl, 50), 10, 1e-9); /* never above the configured rate */

  ratelimit_throttle(&rl, 60, 0.5);
  CHECK_NEAR(ratelimit_recover(&rl, 60.9), 5, 1e-9); /* a throttle restarts the quiet period */
  CHECK_NEAR(ratelimit_recover(&rl, 61), 6, 1e-9);
}

static void test_unlimited_and_checks(void) {
  ratelimit rl = make(0, 1);
  int all_free = 1;
  for (int i = 0; i < 1000; i++)
    all_free &= ratelimit_reserve(&rl, 0) == 0;
  CHECK(all_free);
  CHECK(ratelimit_throttle(&rl, 0, 0.5) == 0 && ratelimit_rate(&rl) == 0);
  CHECK(ratelimit_reserve(&rl, 0) == 0);

  ratelimit_config c;
  ratelimit_config_default(&c);
  c.rate = 10;
  c.burst = 0;
  CHECK(ratelimit_config_check(&c) != NULL);
  c.burst = 1;
  c.min_fraction = 0;
  CHECK(ratelimit_config_check(&c) != NULL);
}

int main(void) {
  test_holds_rate();
  test_fair_queue();
  test_burst();
  test_throttle_recover();
  test_unlimited_and_checks();
  return check_report();
}
