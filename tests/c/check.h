/*
 * check.h: the assertion macros of the C unit tests. A failed check prints file:line and
 * the expression, and the test carries on; check_report() prints "N passed, M failed" and
 * returns the exit status (non-zero when anything failed): `return check_report();`.
 */
#ifndef SCIMRUN_TEST_CHECK_H
#define SCIMRUN_TEST_CHECK_H

#include <math.h>
#include <stdio.h>

static int check_passed, check_failed;

#define CHECK(cond)                                                                                \
  do {                                                                                             \
    if (cond) {                                                                                    \
      check_passed++;                                                                              \
    } else {                                                                                       \
      check_failed++;                                                                              \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);                     \
    }                                                                                              \
  } while (0)

#define CHECK_NEAR(actual, expected, tolerance)                                                    \
  do {                                                                                             \
    double check_a_ = (actual), check_e_ = (expected);                                             \
    if (fabs(check_a_ - check_e_) <= (tolerance)) {                                                \
      check_passed++;                                                                              \
    } else {                                                                                       \
      check_failed++;                                                                              \
      fprintf(stderr, "%s:%d: CHECK_NEAR failed: %s = %.9g, expected %.9g +- %g\n", __FILE__,      \
              __LINE__, #actual, check_a_, check_e_, (double)(tolerance));                         \
    }                                                                                              \
  } while (0)

static inline int check_report(void) {
  printf("%d passed, %d failed\n", check_passed, check_failed);
  return check_failed ? 1 : 0;
}

#endif
