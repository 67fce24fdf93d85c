/* rate_adapt.c: a send-rate limit learned from 429 answers (see rate_adapt.h). */
#include "rate_adapt.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

void rate_adapt_config_default(rate_adapt_config *cfg) {
  cfg->window = 1;
  cfg->target_share = 0.01;
  cfg->gain = 0.5;
  cfg->growth = 0.01;
  cfg->ceiling = 0;
  cfg->max_background = 0.2;
  cfg->min_samples = 10;
}

const char *rate_adapt_config_check(const rate_adapt_config *c) {
  if (!(c->window > 0) || !isfinite(c->window))
    return "window must be a finite number of seconds > 0";
  if (!(c->target_share > 0 && c->target_share < 0.5))
    return "target_share must be > 0 and < 0.5";
  if (!(c->gain > 0 && c->gain <= 2))
    return "gain must be > 0 and <= 2";
  if (!(c->growth > 0 && c->growth <= 1))
    return "growth must be > 0 and <= 1";
  if (!(c->ceiling >= 0) || !isfinite(c->ceiling))
    return "ceiling must be a finite number >= 0 (0 = none)";
  if (!(c->max_background >= 0 && c->max_background < 1))
    return "max_background must be >= 0 and < 1";
  if (c->min_samples < 1)
    return "min_samples must be >= 1";
  return NULL;
}

void rate_adapt_init(rate_adapt *ra, const rate_adapt_config *cfg) {
  memset(ra, 0, sizeof *ra);
  ra->cfg = *cfg;
  ra->cur = -1;
  ra->run_start = -1;
  for (int i = 0; i < RATE_ADAPT_WINDOWS; i++)
    ra->ring[i].id = -1;
}

static rate_adapt_window *slot(rate_adapt *ra, long id) {
  rate_adapt_window *w = &ra->ring[id % RATE_ADAPT_WINDOWS];
  return w->id == id ? w : NULL;
}

static double capped(const rate_adapt *ra, double limit) {
  double c = ra->cfg.ceiling;
  if (c > 0 && (limit <= 0 || limit > c))
    return c;
  return limit;
}

/* The lowest limit ever set: a server that refuses everything is paced by its Retry-After,
 * and a limit of 0 would mean "unlimited". */
#define FLOOR_RATE 0.5
/* A 429 share no server answers at random: whatever the rate, it says "too fast" (given
 * enough answers to tell: three windows' minimum). */
#define SURELY_TOO_FAST 0.3
/* Growth creeps from where 429s began up to this many times that rate, then climbs fast again:
 * a server whose burst allowance is a second of its rate hides a limit set a little above it
 * for many seconds, then refuses at once. */
#define CREEP_BAND 1.2
/* What a pause's estimate counts, at most: see rate_adapt_sent. */
#define RUN_WINDOWS 10

/* What the server accepted, as a limit whose 429 share would be `target`: goodput / (1 -
 * target), the divisor kept sane for a background near 1 (a policy may allow it). */
static double accepted_rate(double goodput, double target) {
  double keep = 1 - target;
  return goodput / (keep > 0.5 ? keep : 0.5);
}

static double max2(double a, double b) { return a > b ? a : b; }

static void set_limit(rate_adapt *ra, double limit) {
  if (limit < FLOOR_RATE)
    limit = FLOOR_RATE;
  if (ra->cfg.ceiling > 0 && limit >= ra->cfg.ceiling)
    limit = 0; /* the fixed cap applies */
  ra->limit = limit;
}

#ifdef RATE_ADAPT_TRACE
#include <stdio.h>
#define TRACE(...) fprintf(stderr, __VA_ARGS__)
#else
#define TRACE(...) ((void)0)
#endif

static void fit_add(rate_adapt_fit *f, const rate_adapt_stats *s) {
  f->n++;
  f->answers += s->answered;
  f->sx += s->send_rate;
  f->sy += s->goodput;
  f->sxx += s->send_rate * s->send_rate;
  f->sxy += s->send_rate * s->goodput;
  f->syy += s->goodput * s->goodput;
  f->share += s->share;
  if (f->n == 1 || s->send_rate < f->min_x)
    f->min_x = s->send_rate;
  if (f->n == 1 || s->send_rate > f->max_x)
    f->max_x = s->send_rate;
}

/* Cuts begin: remember where, to go back if they turn out not to help. */
static void anchor(rate_adapt *ra, double in_force) {
  ra->anchored = 1;
  ra->anchor_limit = ra->limit;
  ra->anchor_rate = in_force;
  memset(&ra->fit, 0, sizeof ra->fit);
}

/* The 429s the cuts met are background (at most max_background): the limit goes back to where
 * the cuts began. Returns 1. */
static int background_found(rate_adapt *ra, double share) {
  double bg = share < ra->cfg.max_background ? share : ra->cfg.max_background;
  if (bg > ra->background)
    ra->background = bg;
  ra->limit = ra->anchor_limit;
  ra->anchored = 0;
  ra->noise++;
  return 1;
}

/* Goodput against send rate over the windows since the cuts began. Behind a rate limit the
 * server accepts the same whatever is sent (slope near 0); random 429s take the same share of
 * any rate (slope near 1 - share). So cuts that moved the send rate by 8% or more while the
 * 429s held, along a slope nearer 1 than 0, did not help: that share becomes the background
 * and the limit goes back to where the cuts began. */
static int cuts_did_not_help(rate_adapt *ra, const rate_adapt_stats *s, double target) {
  rate_adapt_fit *f = &ra->fit;
  fit_add(f, s);
  /* enough answers to tell: at 5 requests/s, windows of ten answers once fitted a real limit's
   * 429s as a 10% background, kept for good */
  if (f->n < 3 || f->answers < 20L * ra->cfg.min_samples || !(f->max_x >= 1.08 * f->min_x) ||
      s->share <= target)
    return 0;
  double n = (double)f->n, mean_share = f->share / n;
  double var = f->sxx - f->sx * f->sx / n;
  /* louder than any background is ever assumed to be: a limit, whatever the fit says (a
   * goodput swollen by tokens saved while clients slept on Retry-Afters can fake a slope) */
  if (!(var > 0) || mean_share < target || mean_share > ra->cfg.max_background)
    return 0;
  double cov = f->sxy - f->sx * f->sy / n;
  double slope = cov / var;
  /* ... and surely so: the slope's standard error counts (a few windows of a dozen answers
   * each, at 5 requests/s, once made a real limit look like noise, answered 429 to a fifth of
   * all requests for good) */
  double resid = f->syy - f->sy * f->sy / n - slope * cov;
  double se = n > 2 && resid > 0 ? sqrt(resid / (n - 2) / var) : 0;
  if (slope - 2 * se < 0.5 * (1 - mean_share))
    return 0;
  return background_found(ra, mean_share);
}

/* The window after the probe (the first cut after running free, to 90% of the rate) that the
 * new limit binds. Behind a limit R that the probe window's goodput G0 showed, the 429s now
 * take 1 - G0 / S1 of the send rate S1, less than before; random 429s take the same share as
 * before. A share that stayed nearer the old one than the limit's prediction, by more than
 * the sampling noise, is background: the limit returns to where it was (unlimited). One binding
 * window decides, instead of the several spread-out ones the fit below needs: with a 2% share
 * and a 1% target, the gain's small cuts took 15 s of throttling to spread the send rate 8%. */
static int probe_says_noise(rate_adapt *ra, const rate_adapt_stats *s) {
  double s0 = ra->probe_share;
  double predicted = s->send_rate > 0 ? 1 - ra->probe_goodput / s->send_rate : 0;
  if (predicted < 0)
    predicted = 0;
  /* both shares are samples: the standard error of their difference */
  double sigma = sqrt(s0 * (1 - s0) * (1 / (double)s->answered + 1 / (double)ra->probe_answered));
  if (s0 - predicted < 3 * sigma || s->share > ra->cfg.max_background ||
      s->share < predicted + 0.5 * (s0 - predicted))
    return 0;
  return background_found(ra, 0.5 * (s0 + s->share));
}

/* A window in which the server refused a run of requests and the clients paused for its delay
 * (rate_adapt_refused) says what the server allows: what it accepted over the window, the pause
 * included, if that is at least min_samples requests. Fewer say little: a server that accepted
 * three requests and asked for a second's pause may refill in 30 ms (its Retry-After rounded up
 * to whole seconds); that window is judged as any other. */
static int paused_says_rate(const rate_adapt *ra, const rate_adapt_window *w) {
  return w->paused && w->answered - w->limited >= ra->cfg.min_samples;
}

static void judge(rate_adapt *ra, const rate_adapt_window *w) {
  double span = w->end - w->start;
  if (w->answered < ra->cfg.min_samples || !(span > 0))
    return;
  /* The first window meets a server's full burst allowance: its goodput says little, so it
   * only counts when it says "far too fast" (many clients starting at once). */
  if (w->id == 0 && !paused_says_rate(ra, w) &&
      !((double)w->limited >= SURELY_TOO_FAST * (double)w->answered &&
        w->answered >= 3 * ra->cfg.min_samples))
    return;
  rate_adapt_stats s;
  s.send_rate = (double)w->sent / span;
  s.goodput = (double)(w->answered - w->limited) / span;
  s.share = (double)w->limited / (double)w->answered;
  s.answered = w->answered;
  double in_force = capped(ra, ra->limit);
  double prev_goodput = ra->last_goodput;
  ra->last_goodput = s.goodput;
  TRACE("w%ld t=%.1f sent=%.1f good=%.1f share=%.3f limit=%.1f bg=%.3f anchored=%d known=%.1f "
        "zeros=%d\n",
        w->id, w->start, s.send_rate, s.goodput, s.share, in_force, ra->background, ra->anchored,
        ra->excess_limit, ra->zero_streak);
  double target = ra->background + ra->cfg.target_share;
  double spread = 3 * sqrt(target * (1 - target) / (double)w->answered);
  int excess = s.share > target + spread && w->limited >= 2;
  int binding = in_force > 0 && s.send_rate >= 0.85 * in_force;
  if (s.share < ra->background) /* noise that went away is forgotten; it never creeps up */
    ra->background = 0.95 * ra->background + 0.05 * s.share;
  /* The rate the clients reach unhindered (it swings with their Retry-After sleeps): cuts
   * start from its recent peak, not from one low window. */
  if (!binding) {
    ra->peak_rate *= 0.9;
    if (s.send_rate > ra->peak_rate)
      ra->peak_rate = s.send_rate;
  }
  if (paused_says_rate(ra, w)) {
    /* The server stopped the clients until its allowance came back: what it accepted over the
     * window, the pause included, is the rate it allows (no less than half the send rate).
     * Growth from there creeps, as near where 429s began (CREEP_BAND). */
    double est = max2(accepted_rate(s.goodput, target), 0.5 * s.send_rate);
    /* a pause early in a window leaves it few accepted requests: no less than the window
     * before, nor than what was accepted since the last pause, this one included */
    est = max2(est, max2(accepted_rate(prev_goodput, target), w->run_rate));
    set_limit(ra, in_force > 0 && in_force < est ? in_force : est);
    ra->excess_limit = ra->limit;
    ra->zero_streak = 0;
    ra->probing = 0;
    ra->anchored = 0;
    ra->cuts++;
    return;
  }
  if (ra->probing) {
    if (binding) {
      ra->probing = 0;
      if (probe_says_noise(ra, &s))
        return;
    } else if (++ra->probe_windows > 5) {
      ra->probing = 0; /* never bound: the clients' own pace sets the rate */
    }
  }
  if (ra->anchored) {
    /* Only windows whose send rate the limit set say what the limit does. */
    if (binding && cuts_did_not_help(ra, &s, target))
      return;
    if (ra->fit.n > 30 || ra->limit <= 0 || ra->limit >= ra->anchor_rate)
      ra->anchored = 0; /* grown back, or long ago: start afresh next time */
  }
  if (excess) {
    ra->zero_streak = 0;
    if (in_force > 0 && binding) {
      /* where 429s began: growth slows down near it. No higher than what the server accepted:
       * a limit raised while a burst allowance hid it meets its 429s far above the server's. */
      double accepted = accepted_rate(s.goodput, target);
      ra->excess_limit = accepted < in_force ? accepted : in_force;
    }
    if (in_force <= 0) /* unlimited: start from what the clients reach */
      in_force = s.send_rate > ra->peak_rate ? s.send_rate : ra->peak_rate;
    else if (!binding) /* above what is sent: bring it down to bind, but not at once (the
                        * clients may only be asleep on Retry-Afters for a moment) */
      in_force = s.send_rate > 0.8 * in_force ? s.send_rate : 0.8 * in_force;
    if (!ra->anchored)
      anchor(ra, in_force);
    if (s.share >= SURELY_TOO_FAST && w->answered >= 3 * ra->cfg.min_samples) {
      /* Far too fast: straight to what the server accepted. No noise is that loud, so
       * there is nothing to go back to. */
      double accepted = accepted_rate(s.goodput, target);
      /* ... but no lower than half the rate: with every client asleep on a Retry-After, the
       * goodput seen can be far below what the server accepts. */
      set_limit(ra, accepted > 0.5 * in_force ? accepted : 0.5 * in_force);
      ra->anchor_limit = ra->limit;
      ra->anchor_rate = capped(ra, ra->limit);
    } else if (ra->limit <= 0) {
      /* The first 429s over the target after running free: 10% slower, a clear step whose
       * answers tell a rate limit (the share falls) from random 429s (it does not). */
      set_limit(ra, 0.9 * in_force);
      ra->probing = 1;
      ra->probe_windows = 0;
      ra->probe_share = s.share;
      ra->probe_goodput = s.goodput;
      ra->probe_answered = s.answered;
    } else {
      double factor = 1 + ra->cfg.gain * (target - s.share);
      set_limit(ra, in_force * (factor < 0.8 ? 0.8 : factor));
    }
    ra->cuts++;
    return;
  }
  if (!binding)
    return; /* the limit does not bind: nothing to learn about it */
  if (w->limited > 0) {
    /* A few 429s, near the target: small steps either way. */
    ra->zero_streak = 0;
    /* Leaning up by half a growth step: at a share right on the target it still climbs,
     * which a rate limit stops and random 429s do not. */
    double factor = 1 + ra->cfg.gain * (target - s.share) + ra->cfg.growth / 2;
    if (factor > 1 + ra->cfg.growth)
      factor = 1 + ra->cfg.growth;
    if (factor >= 1 && ra->limit <= 0)
      return; /* only the fixed cap binds: nothing learned to raise */
    if (factor < 1 && !ra->anchored)
      anchor(ra, in_force);
    if (factor < 1 && ra->excess_limit <= 0) {
      /* No 429s have been placed yet (the limit came from running free): these mark where
       * they begin. At 10/s a window holds ten answers, and one 429 is too few to be an excess
       * but cuts; without a mark, growth doubled past it again and again. */
      double accepted = accepted_rate(s.goodput, target);
      ra->excess_limit = accepted < in_force ? accepted : in_force;
    }
    set_limit(ra, in_force * factor);
    return;
  }
  if (ra->limit <= 0)
    return; /* only the fixed cap binds, without 429s: nothing learned to raise */
  /* No 429 at all. Below where 429s last began, climb back fast (doubling steps, stopping
   * short of it); near it, creep; well above it, climb fast again (the server's limit grew,
   * or those 429s were someone else's). */
  ra->zero_streak++;
  double known = ra->excess_limit;
  double next;
  if (known > 0 && ra->limit >= 0.97 * known && ra->limit < CREEP_BAND * known) {
    ra->zero_streak = 0;
    next = ra->limit * (1 + ra->cfg.growth);
  } else {
    int d = ra->zero_streak > 5 ? 5 : ra->zero_streak;
    double step = ra->cfg.growth * (double)(1 << d);
    next = ra->limit * (1 + (step < 0.25 ? step : 0.25));
    if (known > 0 && ra->limit < 0.97 * known && next > 0.97 * known)
      next = 0.97 * known;
  }
  set_limit(ra, next);
}

static void judge_ready(rate_adapt *ra) {
  if (ra->next_judge < ra->cur - RATE_ADAPT_WINDOWS + 1)
    ra->next_judge = ra->cur - RATE_ADAPT_WINDOWS + 1;
  while (ra->next_judge < ra->cur) {
    rate_adapt_window *w = slot(ra, ra->next_judge);
    if (w && w->answered < w->sent)
      return;
    if (w)
      judge(ra, w);
    ra->next_judge++;
  }
}

/* Opens the next window at `now`, closing the one open (it lasted until now). */
static void open_window(rate_adapt *ra, double now) {
  rate_adapt_window *w = ra->cur >= 0 ? slot(ra, ra->cur) : NULL;
  if (w)
    w->end = now;
  ra->cur++;
  w = &ra->ring[ra->cur % RATE_ADAPT_WINDOWS];
  w->id = ra->cur;
  w->start = now;
  w->end = 0;
  w->sent = w->answered = w->limited = 0;
  w->paused = 0;
  w->run_rate = 0;
  judge_ready(ra);
}

long rate_adapt_sent(rate_adapt *ra, double now) {
  rate_adapt_window *w = ra->cur >= 0 ? slot(ra, ra->cur) : NULL;
  /* A window lasts `window` seconds, longer when it has too few requests to judge. */
  if (!w || (now >= w->start + ra->cfg.window && w->sent >= ra->cfg.min_samples))
    open_window(ra, now);
  w = slot(ra, ra->cur);
  w->sent++;
  /* the count behind a pause's estimate covers the last RUN_WINDOWS windows at most: a rate
   * accepted long ago says little of a server that has just lowered its allowance */
  if (ra->run_start < 0 || now - ra->run_start > RUN_WINDOWS * ra->cfg.window) {
    ra->run_start = now;
    ra->run_accepted = 0;
  }
  return ra->cur;
}

void rate_adapt_answered(rate_adapt *ra, long id, double now, int limited) {
  (void)now;
  rate_adapt_window *w = id >= 0 ? slot(ra, id) : NULL;
  if (!w || w->answered >= w->sent)
    return;
  w->answered++;
  if (limited)
    w->limited++;
  else
    ra->run_accepted++;
  if (id < ra->cur)
    judge_ready(ra);
}

void rate_adapt_server_rate(rate_adapt *ra, double now, double remaining, double reset_seconds) {
  if (!isfinite(remaining) || !isfinite(reset_seconds) || reset_seconds < 0 || remaining < 0)
    return;
  if (reset_seconds <= 0)
    reset_seconds = 1; /* "resets now": spread what is left over the next second */
  ra->server_until = now + reset_seconds;
  ra->server_limit = remaining / reset_seconds;
}

int rate_adapt_refused(rate_adapt *ra, double now, double seconds) {
  rate_adapt_window *w = ra->cur >= 0 ? slot(ra, ra->cur) : NULL;
  if (!(seconds > 0) || !isfinite(seconds) || !w || w->answered - w->limited < ra->cfg.min_samples)
    return 0;
  if (now + seconds > ra->server_until || ra->server_limit > 0) {
    ra->server_until = now + seconds;
    ra->server_limit = 0;
  }
  w->paused = 1;
  double span = now - ra->run_start + seconds;
  if (ra->run_start >= 0 && span > 0) {
    double rate = (double)ra->run_accepted / span;
    if (rate > w->run_rate)
      w->run_rate = rate;
  }
  ra->run_start = -1; /* the next send after the pause starts the next count */
  ra->run_accepted = 0;
  return 1;
}

double rate_adapt_limit(const rate_adapt *ra, double now) {
  if (now < ra->server_until) {
    if (ra->server_limit <= 0)
      return -(ra->server_until - now);
    return capped(ra, ra->server_limit);
  }
  return capped(ra, ra->limit);
}
