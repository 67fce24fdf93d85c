/*
 * rate_adapt: learns a target's send-rate limit from the answers it gives, so that a default
 * policy needs no fixed cap. Pure arithmetic: the caller passes monotonic time `now` (seconds).
 *
 * The caller reports every request as it leaves (rate_adapt_sent -> window id) and its answer
 * (rate_adapt_answered with that id: limited = the answer was a 429 / rate_limited). Sends are
 * grouped in windows of `window` seconds (longer until min_samples were sent). A window is
 * judged once it is over and all its requests have answered, so latency never fools it.
 *
 * Contract:
 *  - The limit starts unlimited (or at the fixed `ceiling`, which it never exceeds) and stays
 *    so while the 429 share is within target_share of the background level.
 *  - A window with more 429s than that (by 3 standard deviations, and at least 2) cuts the
 *    limit: the first time after running unlimited by 10% of the peak send rate, then in
 *    proportion to the excess (gain), at most by 20%; a share of 30% or more sets it to the
 *    goodput seen (non-429 answers/s), but to no less than half the rate.
 *  - The first cut after running unlimited is a probe: in the next window the new limit binds,
 *    a limit's 429s fall to 1 - G0/S1 of the send rate S1 (G0: the goodput before), random
 *    ones keep their share. A share nearer the old one than that prediction, by more than 3
 *    standard errors and within max_background, is background: the limit is lifted at once.
 *  - While cutting, goodput is fitted against the send rate over the windows the limit set.
 *    Behind a rate limit goodput holds whatever is sent (slope near 0); random 429s take the
 *    same share of any rate (slope near 1). Cuts that moved the send rate by 8% along a
 *    slope of at least half of (1 - share) (less two standard errors), over at least
 *    20 x min_samples answers, with the 429s still over the target but within max_background,
 *    did not help: that share becomes the background and the limit returns to where the cuts
 *    began. The background decays when fewer 429s are seen.
 *  - A binding window (sent >= 0.85 x limit) with a few 429s moves the limit by small steps
 *    toward the target share. One with none raises it: fast (doubling steps from `growth`)
 *    below where 429s last began, by `growth` near it, fast again 20% above it. Where 429s
 *    began is set by a window over the target and by a pause (below); while neither has been
 *    seen (the limit came from running free), by the first small step down.
 *  - rate_adapt_refused(): the caller saw a run of refusals (429s with a server delay, none
 *    accepted since the first). If the window open now has at least min_samples accepted
 *    requests, sends pause for that delay and the window is judged by what the server accepted
 *    over it, the pause included (at least half the send rate, the goodput of the window
 *    before, and what it accepted since the last pause, at most 10 windows ago, over
 *    that time and this pause): the limit is set there (never raised) and growth from it
 *    creeps. Returns 1 when it paused. Fewer accepted requests say little (a server may refill
 *    in milliseconds and round its Retry-After up to a second).
 *  - rate_adapt_server_rate() sets the limit from a server's RateLimit headers (remaining
 *    requests within reset seconds) until that reset; the learned limit applies after it.
 *  - rate_adapt_limit() is the limit now in force: 0 = unlimited, -s = send nothing for s s.
 */
#ifndef SCIMRUN_RATE_ADAPT_H
#define SCIMRUN_RATE_ADAPT_H

#define RATE_ADAPT_WINDOWS 32

typedef struct rate_adapt_config {
  double window;         /* seconds per measurement window, > 0 (default 1) */
  double target_share;   /* 429 share tolerated above the background (0.01) */
  double gain;           /* cut per window = gain x excess share (0.5) */
  double growth;         /* raise per window without 429s, share of the limit (0.01) */
  double ceiling;        /* fixed maximum requests/s, 0 = none */
  double max_background; /* a background 429 share above this is never assumed (0.2) */
  int min_samples;       /* sends a window needs to be judged (10) */
} rate_adapt_config;

typedef struct rate_adapt_window {
  long id;
  double start, end; /* end: 0 while open */
  long sent, answered, limited;
  int paused;      /* the server refused a run of its requests: see rate_adapt_refused */
  double run_rate; /* ... and had accepted this many requests/s since the pause before */
} rate_adapt_window;

typedef struct rate_adapt_stats {
  double send_rate, goodput, share;
  long answered; /* answers the window had */
} rate_adapt_stats;

typedef struct rate_adapt_fit {
  long n, answers;
  double sx, sy, sxx, sxy, syy, share, min_x, max_x;
} rate_adapt_fit;

typedef struct rate_adapt {
  rate_adapt_config cfg;
  double limit;        /* learned limit, 0 = unlimited */
  double background;   /* 429 share treated as noise */
  double excess_limit; /* limit in force when 429s last went over the target */
  int zero_streak;     /* binding windows without any 429 in a row */
  int anchored;        /* cutting: the state before the first cut follows */
  double anchor_limit, anchor_rate;
  rate_adapt_fit fit;  /* goodput against send rate since the cuts began */
  double peak_rate;    /* recent peak send rate while the limit did not bind */
  double last_goodput; /* of the window judged last */
  double run_start;    /* first send since the last pause (rate_adapt_refused); -1: none yet */
  long run_accepted;   /* answers accepted since then */
  long cur;            /* id of the window now open; -1 before the first send */
  long next_judge;     /* lowest window id not judged yet */
  double server_limit; /* from RateLimit headers, in force until server_until */
  double server_until;
  int probing;       /* the first cut after running free is a probe: its next binding window */
  int probe_windows; /* says whether the 429s fell as a limit's would (probe_* before it) */
  double probe_share, probe_goodput;
  long probe_answered;
  long cuts, noise; /* decisions taken, for reports and specs */
  rate_adapt_window ring[RATE_ADAPT_WINDOWS];
} rate_adapt;

/* window 1, target_share 0.01, gain 0.5, growth 0.01, ceiling 0, max_background 0.2,
 * min_samples 10 */
void rate_adapt_config_default(rate_adapt_config *cfg);
/* NULL when cfg is usable, else a static message naming the bad field. */
const char *rate_adapt_config_check(const rate_adapt_config *cfg);
void rate_adapt_init(rate_adapt *ra, const rate_adapt_config *cfg);

long rate_adapt_sent(rate_adapt *ra, double now);
void rate_adapt_answered(rate_adapt *ra, long id, double now, int limited);
/* remaining requests allowed within reset_seconds; remaining <= 0 pauses until the reset. */
void rate_adapt_server_rate(rate_adapt *ra, double now, double remaining, double reset_seconds);
/* A run of requests was refused (see above): 1 = sends pause for `seconds`, 0 = too little
 * accepted in the window to judge by, nothing done. */
int rate_adapt_refused(rate_adapt *ra, double now, double seconds);
/* 0 = unlimited; a negative value -s means "send nothing for s more seconds". */
double rate_adapt_limit(const rate_adapt *ra, double now);

#endif
