/* test_breaker.c: circuit breaker transitions, windows, probes, snapshots (runtime/breaker.h). */
#include <stddef.h>

#include "breaker.h"
#include "check.h"

static breaker *make(breaker_config c) {
  CHECK(breaker_config_check(&c) == NULL);
  breaker *b = breaker_new(&c);
  CHECK(b != NULL);
  return b;
}

static breaker_config consecutive(int failures, double cooldown) {
  breaker_config c;
  breaker_config_default(&c);
  c.failures = failures;
  c.cooldown = cooldown;
  return c;
}

static void record_n(breaker *b, double now, int n, int success) {
  for (int i = 0; i < n; i++)
    breaker_record(b, now, success);
}

static void test_consecutive_failures_and_cooldown(void) {
  breaker *b = make(consecutive(3, 10));
  double wait = -1;
  record_n(b, 1, 2, 0);
  breaker_record(b, 1, 1); /* a success breaks the run */
  record_n(b, 2, 2, 0);
  CHECK(breaker_state(b) == BREAKER_CLOSED);
  CHECK(breaker_allow(b, 2, &wait) == 1 && wait == 0);
  breaker_record(b, 3, 0);
  CHECK(breaker_state(b) == BREAKER_OPEN);
  CHECK(breaker_allow(b, 3, &wait) == 0);
  CHECK_NEAR(wait, 10, 1e-9);
  CHECK(breaker_allow(b, 12.5, &wait) == 0);
  CHECK_NEAR(wait, 0.5, 1e-9);
  record_n(b, 12.9, 5, 0); /* late results while open change nothing */
  CHECK(breaker_allow(b, 12.99, &wait) == 0);
  CHECK(breaker_allow(b, 13, &wait) == 1);
  CHECK(breaker_state(b) == BREAKER_HALF_OPEN);
  CHECK(breaker_allow(b, 13, &wait) == 0); /* the single probe is out */
  CHECK(wait > 0);
  breaker_record(b, 13.5, 1);
  CHECK(breaker_state(b) == BREAKER_CLOSED);
  record_n(b, 14, 2, 0); /* the count restarted on close */
  CHECK(breaker_state(b) == BREAKER_CLOSED);
  breaker_free(b);
}

static void test_probe_permits(void) {
  breaker_config c = consecutive(1, 5);
  c.half_open_probes = 3;
  breaker *b = make(c);
  breaker_record(b, 0, 0);
  int granted = 0;
  for (int i = 0; i < 10; i++)
    granted += breaker_allow(b, 5, NULL);
  CHECK(granted == 3);
  breaker_release(b, 5.1); /* a cancelled call gives its permit back */
  CHECK(breaker_allow(b, 5.2, NULL) == 1);
  CHECK(breaker_allow(b, 5.2, NULL) == 0);
  breaker_free(b);
}

static void test_success_ratio(void) {
  breaker_config c = consecutive(1, 5);
  c.half_open_probes = 4;
  c.success_ratio = 0.75; /* 3 of 4 */
  breaker *b = make(c);
  breaker_record(b, 0, 0);
  for (int i = 0; i < 4; i++)
    CHECK(breaker_allow(b, 5, NULL) == 1);
  breaker_record(b, 6, 1);
  breaker_record(b, 6, 0);
  breaker_record(b, 6, 1);
  CHECK(breaker_state(b) == BREAKER_HALF_OPEN); /* 2 of 3 so far: still undecided */
  breaker_record(b, 6, 1);
  CHECK(breaker_state(b) == BREAKER_CLOSED);

  breaker_record(b, 7, 0);
  for (int i = 0; i < 4; i++)
    CHECK(breaker_allow(b, 12, NULL) == 1);
  breaker_record(b, 13, 1);
  breaker_record(b, 13, 0);
  CHECK(breaker_state(b) == BREAKER_HALF_OPEN);
  breaker_record(b, 13, 0); /* 3 of 4 is now out of reach */
  CHECK(breaker_state(b) == BREAKER_OPEN);
  breaker_free(b);
}

static void test_cooldown_growth(void) {
  breaker_config c = consecutive(1, 10);
  c.cooldown_multiplier = 2;
  c.max_cooldown = 25;
  breaker *b = make(c);
  double wait;
  breaker_record(b, 0, 0); /* open #1: 10 s */
  CHECK(breaker_allow(b, 10, NULL) == 1);
  breaker_record(b, 10, 0); /* probe failed: open #2, 20 s */
  CHECK(breaker_state(b) == BREAKER_OPEN);
  CHECK(breaker_allow(b, 10, &wait) == 0);
  CHECK_NEAR(wait, 20, 1e-9);
  CHECK(breaker_allow(b, 29.9, NULL) == 0);
  CHECK(breaker_allow(b, 30, NULL) == 1);
  breaker_record(b, 30, 0); /* open #3: 40 s capped at 25 */
  CHECK(breaker_allow(b, 30, &wait) == 0);
  CHECK_NEAR(wait, 25, 1e-9);
  CHECK(breaker_allow(b, 55, NULL) == 1);
  breaker_record(b, 55, 1); /* closed: the growth starts over */
  CHECK(breaker_state(b) == BREAKER_CLOSED);
  breaker_record(b, 60, 0);
  CHECK(breaker_allow(b, 60, &wait) == 0);
  CHECK_NEAR(wait, 10, 1e-9);
  breaker_free(b);
}

static void test_rate_count_window(void) {
  breaker_config c;
  breaker_config_default(&c);
  c.failures = 0;
  c.failure_rate = 0.5;
  c.window_calls = 10;
  c.min_calls = 4;
  breaker *b = make(c);
  record_n(b, 0, 3, 0); /* 100% but only 3 calls: not enough evidence */
  CHECK(breaker_state(b) == BREAKER_CLOSED);
  breaker_record(b, 0, 1); /* 3 of 4 */
  CHECK(breaker_state(b) == BREAKER_OPEN);
  breaker_free(b);

  b = make(c);
  record_n(b, 0, 6, 1);
  record_n(b, 0, 4, 0); /* 4 of 10 */
  CHECK(breaker_state(b) == BREAKER_CLOSED);
  breaker_record(b, 0, 0); /* the oldest success slides out: 5 of 10 */
  CHECK(breaker_state(b) == BREAKER_OPEN);
  breaker_free(b);
}

static void test_rate_time_window(void) {
  breaker_config c;
  breaker_config_default(&c);
  c.failures = 0;
  c.failure_rate = 0.5;
  c.window_calls = 0;
  c.window_seconds = 10;
  c.min_calls = 4;
  breaker *b = make(c);
  breaker_record(b, 100, 0);
  breaker_record(b, 101, 0);
  breaker_record(b, 102, 0);
  CHECK(breaker_state(b) == BREAKER_CLOSED);
  breaker_record(b, 120, 0); /* the three older failures have left the window */
  CHECK(breaker_state(b) == BREAKER_CLOSED);
  breaker_record(b, 120.5, 0);
  breaker_record(b, 121, 0);
  CHECK(breaker_state(b) == BREAKER_CLOSED);
  breaker_record(b, 121.5, 0);
  CHECK(breaker_state(b) == BREAKER_OPEN);
  breaker_free(b);

  b = make(c); /* the same four failures inside one window trip it */
  for (int i = 0; i < 4; i++)
    breaker_record(b, 100 + i, 0);
  CHECK(breaker_state(b) == BREAKER_OPEN);
  breaker_free(b);

  b = make(c); /* successes in the window keep the rate below the threshold */
  for (int i = 0; i < 20; i++)
    breaker_record(b, 100 + i * 0.5, i % 4 != 3); /* one failure in four */
  CHECK(breaker_state(b) == BREAKER_CLOSED);
  breaker_free(b);
}

static void test_half_open_max_wait(void) {
  breaker_config c = consecutive(1, 5);
  c.half_open_max_wait = 3;
  breaker *b = make(c);
  double wait;
  breaker_record(b, 0, 0);
  CHECK(breaker_allow(b, 5, NULL) == 1); /* the probe never reports back */
  CHECK(breaker_allow(b, 6, &wait) == 0);
  CHECK_NEAR(wait, 2, 1e-9);
  CHECK(breaker_state(b) == BREAKER_HALF_OPEN);
  CHECK(breaker_allow(b, 8, &wait) == 0);
  CHECK(breaker_state(b) == BREAKER_OPEN);
  CHECK_NEAR(wait, 5, 1e-9);
  breaker_record(b, 8.5, 1); /* the lost probe's late answer does not close it */
  CHECK(breaker_state(b) == BREAKER_OPEN);
  CHECK(breaker_allow(b, 13, NULL) == 1);
  breaker_free(b);
}

static breaker_status seen[16][2];
static int nseen;

static void on_change(void *ud, breaker_status from, breaker_status to, double now) {
  (*(int *)ud)++;
  if (nseen < 16) {
    seen[nseen][0] = from;
    seen[nseen][1] = to;
    nseen++;
  }
}

static void test_callback_sequence(void) {
  breaker *b = make(consecutive(2, 1));
  int calls = 0;
  breaker_set_callback(b, on_change, &calls);
  record_n(b, 0, 2, 0);
  breaker_allow(b, 1, NULL);
  breaker_record(b, 1, 0);
  breaker_allow(b, 2, NULL);
  breaker_record(b, 2, 1);
  const breaker_status want[][2] = {{BREAKER_CLOSED, BREAKER_OPEN},
                                    {BREAKER_OPEN, BREAKER_HALF_OPEN},
                                    {BREAKER_HALF_OPEN, BREAKER_OPEN},
                                    {BREAKER_OPEN, BREAKER_HALF_OPEN},
                                    {BREAKER_HALF_OPEN, BREAKER_CLOSED}};
  CHECK(calls == 5 && nseen == 5);
  for (int i = 0; i < 5 && i < nseen; i++)
    CHECK(seen[i][0] == want[i][0] && seen[i][1] == want[i][1]);
  breaker_free(b);
}

static void test_snapshot_restore(void) {
  breaker_config c = consecutive(3, 10);
  c.cooldown_multiplier = 2;
  breaker *b = make(c);
  record_n(b, 100, 3, 0); /* open #1 */
  breaker_allow(b, 110, NULL);
  breaker_record(b, 110, 0); /* open #2: 20 s from 110 */
  breaker_checkpoint cp;
  breaker_snapshot(b, 113, &cp);
  CHECK(cp.state == BREAKER_OPEN && cp.open_count == 2);
  CHECK_NEAR(cp.opened_ago, 3, 1e-9);
  breaker_free(b);

  /* a new process, with a monotonic clock that started elsewhere */
  b = make(c);
  double wait;
  CHECK(breaker_restore(b, &cp, 5000) == 0);
  CHECK(breaker_state(b) == BREAKER_OPEN);
  CHECK(breaker_allow(b, 5000, &wait) == 0);
  CHECK_NEAR(wait, 17, 1e-9);
  CHECK(breaker_allow(b, 5017, NULL) == 1);
  breaker_record(b, 5017, 0); /* open #3 after the restore: 40 s */
  CHECK(breaker_allow(b, 5017, &wait) == 0);
  CHECK_NEAR(wait, 40, 1e-9);

  breaker_checkpoint closed = {BREAKER_CLOSED, 0, 2, 0, 0};
  CHECK(breaker_restore(b, &closed, 6000) == 0);
  CHECK(breaker_state(b) == BREAKER_CLOSED);
  breaker_record(b, 6000, 0); /* the restored run of 2 failures + 1 reaches 3 */
  CHECK(breaker_state(b) == BREAKER_OPEN);

  breaker_checkpoint half = {BREAKER_HALF_OPEN, 0, 0, 0, 1};
  CHECK(breaker_restore(b, &half, 7000) == 0);
  CHECK(breaker_allow(b, 7000, NULL) == 1); /* a fresh set of probes */
  CHECK(breaker_allow(b, 7000, NULL) == 0);

  breaker_checkpoint bad = {BREAKER_OPEN, -4, 0, 0, 1};
  CHECK(breaker_restore(b, &bad, 7001) == -1);
  bad = (breaker_checkpoint){(breaker_status)7, 0, 0, 0, 1};
  CHECK(breaker_restore(b, &bad, 7001) == -1);
  CHECK(breaker_state(b) == BREAKER_HALF_OPEN);
  breaker_free(b);
}

static void test_config_check(void) {
  breaker_config c;
  breaker_config_default(&c);
  CHECK(breaker_config_check(&c) == NULL);
  c.failures = 0; /* nothing would ever open it */
  CHECK(breaker_config_check(&c) != NULL);
  c.failure_rate = 0.5;
  c.window_seconds = 0; /* a rate needs a window */
  CHECK(breaker_config_check(&c) != NULL);
  CHECK(breaker_new(&c) == NULL);
  breaker_config_default(&c);
  c.success_ratio = 0;
  CHECK(breaker_config_check(&c) != NULL);
  breaker_config_default(&c);
  c.half_open_probes = 0;
  CHECK(breaker_config_check(&c) != NULL);
  breaker_config_default(&c);
  c.failure_rate = 1.5;
  CHECK(breaker_config_check(&c) != NULL);
}

int main(void) {
  test_consecutive_failures_and_cooldown();
  test_probe_permits();
  test_success_ratio();
  test_cooldown_growth();
  test_rate_count_window();
  test_rate_time_window();
  test_half_open_max_wait();
  test_callback_sequence();
  test_snapshot_restore();
  test_config_check();
  return check_report();
}
