/* budget.c: retry budget arithmetic (see budget.h). */
#include "budget.h"

#include <math.h>
#include <stddef.h>

const char *budget_check(double ratio, int min_retries) {
  if (!(ratio >= 0) || !isfinite(ratio))
    return "ratio must be a finite number >= 0";
  if (min_retries < 0)
    return "min_retries must be >= 0";
  return NULL;
}

void budget_init(budget *b, double ratio, int min_retries) {
  b->ratio = ratio;
  b->min_retries = min_retries;
  b->first_attempts = 0;
  b->retries = 0;
}

void budget_record_first(budget *b) { b->first_attempts++; }

/* min_retries + ratio * first_attempts, less an epsilon so that products like 0.1 * 30
 * (3.0000000000000004) do not grant a retry that the plain arithmetic would not. */
static double allowance(const budget *b) {
  return (double)b->min_retries + b->ratio * (double)b->first_attempts - 1e-9;
}

int budget_try_retry(budget *b) {
  if (!((double)b->retries < allowance(b)))
    return 0;
  b->retries++;
  return 1;
}

long budget_remaining(const budget *b) {
  double left = ceil(allowance(b) - (double)b->retries);
  return left > 0 ? (long)left : 0;
}
