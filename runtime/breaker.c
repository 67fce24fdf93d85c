/* breaker.c: circuit breaker state machine with count and time windows (see breaker.h). */
#include "breaker.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#define TIME_BUCKETS 10
#define COOLDOWN_CEILING 1e9 /* keeps an uncapped, growing cooldown finite */

typedef struct {
  int64_t slot; /* which window_seconds/TIME_BUCKETS slice of time this bucket counts */
  int calls, failures;
} time_bucket;

struct breaker {
  breaker_config cfg;
  breaker_status state;
  breaker_change_fn on_change;
  void *userdata;

  int consecutive_failures, consecutive_successes;
  int open_count;      /* opens in a row without a close; drives the cooldown growth */
  double opened_at;    /* when the current open period began */
  double cooldown;     /* length of the current open period */
  int probes_granted;  /* half-open permits handed out (returned ones excluded) */
  int probes_inflight; /* permits not yet reported */
  int probe_successes, probe_failures;
  double first_grant; /* when the oldest permit of this half-open period went out */

  /* failure_rate window: a ring of outcomes (count window) or time buckets */
  int win_calls, win_failures, ring_pos;
  time_bucket buckets[TIME_BUCKETS];
  unsigned char ring[]; /* window_calls entries: 0 empty, 1 success, 2 failure */
};

void breaker_config_default(breaker_config *cfg) {
  cfg->failures = 5;
  cfg->failure_rate = 0;
  cfg->window_calls = 0;
  cfg->window_seconds = 60;
  cfg->min_calls = 10;
  cfg->cooldown = 30;
  cfg->cooldown_multiplier = 1;
  cfg->max_cooldown = 0;
  cfg->half_open_probes = 1;
  cfg->success_ratio = 1;
  cfg->half_open_max_wait = 60;
}

static int finite_nonneg(double v) { return v >= 0 && isfinite(v); }

const char *breaker_config_check(const breaker_config *c) {
  if (c->failures < 0)
    return "failures must be >= 0";
  if (!(c->failure_rate >= 0 && c->failure_rate <= 1))
    return "failure_rate must be between 0 and 1";
  if (c->failures == 0 && c->failure_rate == 0)
    return "set failures (consecutive failures) or failure_rate, else the breaker never opens";
  if (c->window_calls < 0 || c->window_calls > 1000000)
    return "window_calls must be between 0 and 1000000";
  if (!finite_nonneg(c->window_seconds))
    return "window_seconds must be a finite number of seconds >= 0";
  if (c->failure_rate > 0 && c->window_calls == 0 && c->window_seconds <= 0)
    return "failure_rate needs a window: window_calls or window_seconds";
  if (c->min_calls < 0)
    return "min_calls must be >= 0";
  if (!finite_nonneg(c->cooldown))
    return "cooldown must be a finite number of seconds >= 0";
  if (!(c->cooldown_multiplier >= 1) || !isfinite(c->cooldown_multiplier))
    return "cooldown_multiplier must be a finite number >= 1";
  if (!finite_nonneg(c->max_cooldown))
    return "max_cooldown must be a finite number of seconds >= 0 (0 = no cap)";
  if (c->half_open_probes < 1)
    return "half_open_probes must be >= 1";
  if (!(c->success_ratio > 0 && c->success_ratio <= 1))
    return "success_ratio must be > 0 and <= 1";
  if (!finite_nonneg(c->half_open_max_wait))
    return "half_open_max_wait must be a finite number of seconds >= 0 (0 = no limit)";
  return NULL;
}

breaker *breaker_new(const breaker_config *cfg) {
  if (breaker_config_check(cfg))
    return NULL;
  size_t ring = cfg->failure_rate > 0 ? (size_t)cfg->window_calls : 0;
  breaker *b = calloc(1, sizeof *b + ring);
  if (!b)
    return NULL;
  b->cfg = *cfg;
  if (ring == 0)
    b->cfg.window_calls = 0;
  b->state = BREAKER_CLOSED;
  b->cooldown = cfg->cooldown;
  for (int i = 0; i < TIME_BUCKETS; i++)
    b->buckets[i].slot = INT64_MIN;
  return b;
}

void breaker_free(breaker *b) { free(b); }

void breaker_set_callback(breaker *b, breaker_change_fn fn, void *userdata) {
  b->on_change = fn;
  b->userdata = userdata;
}

breaker_status breaker_state(const breaker *b) { return b->state; }

const char *breaker_state_name(breaker_status s) {
  switch (s) {
  case BREAKER_CLOSED: return "closed";
  case BREAKER_OPEN: return "open";
  case BREAKER_HALF_OPEN: return "half_open";
  }
  return "?";
}

double breaker_current_cooldown(const breaker *b) { return b->cooldown; }

/* cooldown * multiplier^(opens-1), compared in log space so it never overflows. */
static double grown_cooldown(const breaker_config *c, int opens) {
  double cap = c->max_cooldown > 0 ? c->max_cooldown : COOLDOWN_CEILING;
  if (c->cooldown <= 0 || opens <= 1)
    return c->cooldown < cap ? c->cooldown : cap;
  if (c->cooldown_multiplier > 1 &&
      (double)(opens - 1) * log(c->cooldown_multiplier) >= log(cap / c->cooldown))
    return cap;
  double d = c->cooldown * pow(c->cooldown_multiplier, (double)(opens - 1));
  return d < cap ? d : cap;
}

static void reset_window(breaker *b) {
  b->win_calls = b->win_failures = b->ring_pos = 0;
  for (int i = 0; i < b->cfg.window_calls; i++)
    b->ring[i] = 0;
  for (int i = 0; i < TIME_BUCKETS; i++)
    b->buckets[i] = (time_bucket){INT64_MIN, 0, 0};
}

static void reset_probes(breaker *b, double now) {
  b->probes_granted = b->probes_inflight = 0;
  b->probe_successes = b->probe_failures = 0;
  b->first_grant = now;
}

static void set_state(breaker *b, breaker_status to, double now) {
  breaker_status from = b->state;
  if (from == to)
    return;
  b->state = to;
  reset_probes(b, now);
  if (to == BREAKER_OPEN) {
    b->open_count++;
    b->opened_at = now;
    b->cooldown = grown_cooldown(&b->cfg, b->open_count);
  } else if (to == BREAKER_CLOSED) {
    b->open_count = 0;
    b->cooldown = b->cfg.cooldown;
  }
  /* Every transition starts the next period with a clean slate of evidence. */
  b->consecutive_failures = b->consecutive_successes = 0;
  reset_window(b);
  if (b->on_change)
    b->on_change(b->userdata, from, to, now);
}

static int64_t time_slot(const breaker *b, double now) {
  return (int64_t)floor(now / (b->cfg.window_seconds / TIME_BUCKETS));
}

/* Adds one outcome to the window and leaves win_calls/win_failures covering the window. */
static void window_add(breaker *b, double now, int failed) {
  if (b->cfg.window_calls > 0) {
    unsigned char *cell = &b->ring[b->ring_pos];
    if (*cell) {
      b->win_calls--;
      b->win_failures -= *cell == 2;
    }
    *cell = failed ? 2 : 1;
    b->win_calls++;
    b->win_failures += failed;
    b->ring_pos = (b->ring_pos + 1) % b->cfg.window_calls;
    return;
  }
  int64_t slot = time_slot(b, now);
  time_bucket *tb = &b->buckets[((slot % TIME_BUCKETS) + TIME_BUCKETS) % TIME_BUCKETS];
  if (tb->slot != slot)
    *tb = (time_bucket){slot, 0, 0};
  tb->calls++;
  tb->failures += failed;
  b->win_calls = b->win_failures = 0;
  for (int i = 0; i < TIME_BUCKETS; i++)
    if (b->buckets[i].slot > slot - TIME_BUCKETS && b->buckets[i].slot <= slot) {
      b->win_calls += b->buckets[i].calls;
      b->win_failures += b->buckets[i].failures;
    }
}

static int should_trip(const breaker *b) {
  const breaker_config *c = &b->cfg;
  if (c->failures > 0 && b->consecutive_failures >= c->failures)
    return 1;
  if (c->failure_rate > 0) {
    int min_calls = c->min_calls < 1 ? 1 : c->min_calls;
    if (c->window_calls > 0 && min_calls > c->window_calls)
      min_calls = c->window_calls; /* a full window is always enough evidence */
    return b->win_calls >= min_calls &&
           (double)b->win_failures >= c->failure_rate * (double)b->win_calls;
  }
  return 0;
}

/* Probes that must succeed; the epsilon keeps e.g. 0.7 * 10 from rounding up to 8. */
static int probes_needed(const breaker_config *c) {
  int n = (int)ceil(c->success_ratio * c->half_open_probes - 1e-9);
  return n < 1 ? 1 : n;
}

/* Open -> half_open after the cooldown; half_open -> open when a probe is overdue. */
static void advance(breaker *b, double now) {
  if (b->state == BREAKER_OPEN && now >= b->opened_at + b->cooldown)
    set_state(b, BREAKER_HALF_OPEN, now);
  if (b->state == BREAKER_HALF_OPEN && b->probes_inflight > 0 && b->cfg.half_open_max_wait > 0 &&
      now >= b->first_grant + b->cfg.half_open_max_wait)
    set_state(b, BREAKER_OPEN, now);
}

int breaker_allow(breaker *b, double now, double *wait) {
  int ok = 0;
  double w = 0;
  advance(b, now);
  switch (b->state) {
  case BREAKER_CLOSED: ok = 1; break;
  case BREAKER_OPEN: w = b->opened_at + b->cooldown - now; break;
  case BREAKER_HALF_OPEN:
    if (b->probes_granted < b->cfg.half_open_probes) {
      if (b->probes_inflight == 0)
        b->first_grant = now;
      b->probes_granted++;
      b->probes_inflight++;
      ok = 1;
    } else {
      /* All permits are out: the earliest news is a probe report or the overdue deadline. */
      w = b->cfg.half_open_max_wait > 0 ? b->first_grant + b->cfg.half_open_max_wait - now
                                        : b->cooldown;
    }
    break;
  }
  if (wait)
    *wait = w > 0 ? w : 0;
  return ok;
}

void breaker_record(breaker *b, double now, int success) {
  advance(b, now);
  if (b->state == BREAKER_OPEN)
    return;
  if (b->state == BREAKER_HALF_OPEN) {
    if (b->probes_inflight == 0)
      return; /* a straggler from before this half-open period */
    b->probes_inflight--;
    if (success)
      b->probe_successes++;
    else
      b->probe_failures++;
    int needed = probes_needed(&b->cfg);
    if (b->probe_successes >= needed)
      set_state(b, BREAKER_CLOSED, now);
    else if (b->probe_failures > b->cfg.half_open_probes - needed)
      set_state(b, BREAKER_OPEN, now);
    return;
  }
  if (success) {
    b->consecutive_failures = 0;
    b->consecutive_successes++;
  } else {
    b->consecutive_successes = 0;
    b->consecutive_failures++;
  }
  if (b->cfg.failure_rate > 0)
    window_add(b, now, !success);
  if (should_trip(b))
    set_state(b, BREAKER_OPEN, now);
}

void breaker_release(breaker *b, double now) {
  if (b->state == BREAKER_HALF_OPEN && b->probes_inflight > 0) {
    b->probes_inflight--;
    b->probes_granted--;
  }
}

void breaker_snapshot(const breaker *b, double now, breaker_checkpoint *out) {
  out->state = b->state;
  out->opened_ago = b->state == BREAKER_OPEN ? now - b->opened_at : 0;
  if (out->opened_ago < 0)
    out->opened_ago = 0;
  out->consecutive_failures = b->consecutive_failures;
  out->consecutive_successes = b->consecutive_successes;
  out->open_count = b->open_count;
}

int breaker_restore(breaker *b, const breaker_checkpoint *cp, double now) {
  if ((unsigned)cp->state > BREAKER_HALF_OPEN || !finite_nonneg(cp->opened_ago) ||
      cp->consecutive_failures < 0 || cp->consecutive_successes < 0 || cp->open_count < 0)
    return -1;
  if (cp->state != BREAKER_CLOSED && cp->open_count < 1)
    return -1; /* an open or half-open breaker has opened at least once */
  breaker_status from = b->state;
  reset_window(b);
  reset_probes(b, now);
  b->state = cp->state;
  b->open_count = cp->open_count;
  b->cooldown =
      cp->state == BREAKER_CLOSED ? b->cfg.cooldown : grown_cooldown(&b->cfg, cp->open_count);
  b->opened_at = cp->state == BREAKER_OPEN ? now - cp->opened_ago : now - b->cooldown;
  b->consecutive_failures = cp->consecutive_failures;
  b->consecutive_successes = cp->consecutive_successes;
  if (b->on_change && from != b->state)
    b->on_change(b->userdata, from, b->state, now);
  return 0;
}
