/*
 * budget: a retry budget (Google SRE book, Envoy): retries may not exceed
 * min_retries + ratio * first attempts, so when everything fails the retries stay a bounded
 * share of the traffic instead of multiplying it.
 *
 * Contract:
 *  - budget_record_first() counts a first attempt.
 *  - budget_try_retry() returns 1 and counts the retry when retries < min_retries +
 *    ratio * first_attempts, else 0 (nothing counted).
 *  - budget_remaining() is how many retries would be allowed right now (>= 0).
 *  - The counts never decay: one budget covers one run. first_attempts/retries may be saved
 *    and set back (checkpoint) directly.
 */
#ifndef SCIMRUN_BUDGET_H
#define SCIMRUN_BUDGET_H

typedef struct budget {
  double ratio;    /* >= 0 */
  int min_retries; /* >= 0 */
  long first_attempts;
  long retries;
} budget;

/* NULL when usable, else a static message naming the bad field. */
const char *budget_check(double ratio, int min_retries);
void budget_init(budget *b, double ratio, int min_retries);
void budget_record_first(budget *b);
int budget_try_retry(budget *b);
long budget_remaining(const budget *b);

#endif
