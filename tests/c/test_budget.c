/* test_budget.c: the retry budget caps retries when everything fails (runtime/budget.h). */
#include "budget.h"
#include "check.h"

/* Each of `requests` first attempts fails, and the caller retries up to `attempts - 1`
 * times while the budget allows. Returns the retries made. */
static long all_fail(budget *b, int requests, int attempts) {
  long retries = 0;
  for (int r = 0; r < requests; r++) {
    budget_record_first(b);
    for (int a = 1; a < attempts && budget_try_retry(b); a++)
      retries++;
  }
  return retries;
}

static void test_caps_retries(void) {
  budget b;
  CHECK(budget_check(0.2, 10) == NULL);
  budget_init(&b, 0.2, 10);
  long retries = all_fail(&b, 1000, 5);
  /* without the budget: 4000 retries; with it: about min_retries + 20% of the traffic */
  CHECK(retries <= 10 + 200);
  CHECK(retries >= 200);
  CHECK(b.retries == retries && b.first_attempts == 1000);
  CHECK(budget_remaining(&b) <= 1);
}

static void test_exact_allowance(void) {
  budget b;
  budget_init(&b, 0.5, 2);
  CHECK(budget_remaining(&b) == 2);
  CHECK(budget_try_retry(&b) && budget_try_retry(&b));
  CHECK(!budget_try_retry(&b)); /* 2 < 2 + 0.5 * 0 is false */
  CHECK(b.retries == 2);        /* a refused retry is not counted */
  budget_record_first(&b);      /* allowance 2.5: a third retry */
  CHECK(budget_remaining(&b) == 1);
  CHECK(budget_try_retry(&b));
  CHECK(!budget_try_retry(&b));
  budget_record_first(&b); /* allowance 3.0 */
  CHECK(!budget_try_retry(&b));
  CHECK(budget_remaining(&b) == 0);

  budget_init(&b, 1.1, 0); /* 1.1 * 50 is 55.00000000000001 in doubles: still 55 retries */
  for (int i = 0; i < 50; i++)
    budget_record_first(&b);
  CHECK(budget_remaining(&b) == 55);
  int granted = 0;
  while (budget_try_retry(&b))
    granted++;
  CHECK(granted == 55);
}

static void test_checks(void) {
  CHECK(budget_check(-0.1, 10) != NULL);
  CHECK(budget_check(0.2, -1) != NULL);
  budget b;
  budget_init(&b, 0, 0); /* a zero budget allows no retry at all */
  budget_record_first(&b);
  CHECK(!budget_try_retry(&b));
}

int main(void) {
  test_caps_retries();
  test_exact_allowance();
  test_checks();
  return check_report();
}
