/*
 * breaker: a circuit breaker state machine (closed -> open -> half_open -> closed|open).
 * Pure arithmetic: the caller passes monotonic time `now` (seconds) into every call.
 *
 * Contract:
 *  - Closed: every call is allowed. It opens when `failures` consecutive failures are
 *    recorded (failures > 0), or when failure_rate > 0 and, over the window, at least
 *    min_calls calls were recorded and failed/calls >= failure_rate. The window is the last
 *    window_calls calls, or (window_calls == 0) the last window_seconds seconds, counted in
 *    10 buckets, so a call leaves the window between 0.9 and 1.0 window_seconds after it.
 *  - Open: nothing is allowed until the cooldown has passed; the k-th open in a row (without
 *    a close in between) lasts cooldown * cooldown_multiplier^(k-1), capped at max_cooldown
 *    (0 = no cap). breaker_allow() returns 0 and sets *wait to the time left.
 *  - Half-open: the first allow after the cooldown moves to half_open. It hands out at most
 *    half_open_probes permits in total; each permit must be reported by breaker_record() or
 *    returned by breaker_release(). Once ceil(success_ratio * probes) probes succeed it
 *    closes (all counts reset); once that is out of reach it reopens with a longer cooldown.
 *    If a permit is out for half_open_max_wait seconds (0 = never) without a report, it reopens.
 *    Records arriving while open are late results of calls started before and are ignored.
 *  - The callback (if set) is called for every state change, after the change.
 *  - breaker_snapshot()/breaker_restore() (a plain breaker_checkpoint) carry the state, the
 *    open age, the consecutive counts and the open count across a process restart; window
 *    contents and probe permits are not kept (a restored half_open breaker starts afresh).
 */
#ifndef SCIMRUN_BREAKER_H
#define SCIMRUN_BREAKER_H

typedef enum { BREAKER_CLOSED, BREAKER_OPEN, BREAKER_HALF_OPEN } breaker_status;

typedef struct breaker_config {
  int failures;               /* consecutive failures that open it; 0 = off */
  double failure_rate;        /* 0..1 over the window; 0 = off */
  int window_calls;           /* count window for failure_rate */
  double window_seconds;      /* time window for failure_rate (when window_calls == 0) */
  int min_calls;              /* calls needed in the window before the rate counts */
  double cooldown;            /* seconds open before probing */
  double cooldown_multiplier; /* >= 1; growth of the cooldown on repeated opens */
  double max_cooldown;        /* cap on the grown cooldown; 0 = no cap */
  int half_open_probes;       /* probe permits per half-open period, >= 1 */
  double success_ratio;       /* (0, 1]: share of probes that must succeed to close */
  double half_open_max_wait;  /* seconds a probe may stay unreported; 0 = forever */
} breaker_config;

typedef struct breaker_checkpoint {
  breaker_status state;
  double opened_ago; /* seconds since it opened (open state), else 0 */
  int consecutive_failures;
  int consecutive_successes;
  int open_count; /* opens in a row without a close */
} breaker_checkpoint;

typedef struct breaker breaker;
typedef void (*breaker_change_fn)(void *userdata, breaker_status old_state,
                                  breaker_status new_state, double now);

/* failures 5, rate off, window_calls 0, window_seconds 60, min_calls 10, cooldown 30,
 * multiplier 1, max_cooldown 0, probes 1, success_ratio 1, half_open_max_wait 60 */
void breaker_config_default(breaker_config *cfg);
/* NULL when cfg is usable, else a static message naming the bad field. */
const char *breaker_config_check(const breaker_config *cfg);

/* NULL when cfg is invalid or memory runs out. */
breaker *breaker_new(const breaker_config *cfg);
void breaker_free(breaker *b);
void breaker_set_callback(breaker *b, breaker_change_fn fn, void *userdata);

/* 1: go ahead (in half_open this took a probe permit). 0: refused; *wait (if not NULL) is
 * the time in seconds until asking again may succeed. */
int breaker_allow(breaker *b, double now, double *wait);
void breaker_record(breaker *b, double now, int success);
/* Gives back an unused half-open permit (the call was cancelled before it ran). */
void breaker_release(breaker *b, double now);
breaker_status breaker_state(const breaker *b);
const char *breaker_state_name(breaker_status s);
/* The cooldown the current (or next) open period lasts. */
double breaker_current_cooldown(const breaker *b);

void breaker_snapshot(const breaker *b, double now, breaker_checkpoint *out);
/* 0 on success, -1 when the snapshot is malformed (the breaker is then unchanged). */
int breaker_restore(breaker *b, const breaker_checkpoint *cp, double now);

#endif
