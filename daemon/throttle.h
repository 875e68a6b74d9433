/* throttle.h: how fast requests may start to an origin. A token bucket (a
 * batch's rate_per_host, or a configured rate_limit), and an origin's
 * backoff: the pause a 429 or a 503 with Retry-After starts, and the slow
 * restart after it. Arithmetic on times the caller gives (microseconds of
 * now_us()); the scheduler keeps the timers and the queues. */
#ifndef FANOUTD_THROTTLE_H
#define FANOUTD_THROTTLE_H

#include <stdint.h>

/* A token bucket kept as GCRA's theoretical arrival time: one number, no
 * refill loop, and exact over any span (a rate of 50/s starts 3,000
 * requests a minute, whatever the timers' lateness). */
struct throttle_bucket {
	double interval;	/* microseconds a token; 0: no limit */
	double tau;		/* (burst - 1) * interval: how far ahead tokens may go */
	double tat;		/* when the bucket is next empty-and-refilled */
	int refused;		/* someone has waited since the last take */
};

/* Sets the rate (per second; 0 or less: none) and burst, keeping what was
 * taken: a reload changes the pace, not the past. */
void throttle_bucket_set(struct throttle_bucket *b, double per_s, unsigned burst);
int throttle_bucket_on(const struct throttle_bucket *b);
/* The earliest time a token can be taken: now or before when one is there. */
uint64_t throttle_bucket_ready(const struct throttle_bucket *b);
/* Records a refusal: the token taken when it is due counts from then, so
 * a late wake-up does not slow the rate. */
void throttle_bucket_refuse(struct throttle_bucket *b);
/* Takes a token at now (throttle_bucket_ready(b) <= now). */
void throttle_bucket_take(struct throttle_bucket *b, uint64_t now);
/* True when full: the bucket is as good as new and may be forgotten. */
int throttle_bucket_full(const struct throttle_bucket *b, uint64_t now);

#define THROTTLE_429_FIRST_US 1000000u	/* a 429 without Retry-After: 1 s, */
#define THROTTLE_429_MAX_US 60000000u	/* doubling up to 60 s */

/* An origin's backoff. */
struct throttle_pause {
	uint64_t until;		/* no new request before; 0 or past: not paused */
	uint64_t len;		/* the pause's length, for a late 429 to renew */
	int status;		/* the response that started it: 429 or 503 */
	int64_t retry_after;	/* microseconds, as the origin said; -1: it did not */
	unsigned level;		/* 429s without Retry-After in a row: the next such pause is 1 s << level */
	unsigned epoch;		/* pauses begun; a request carries the one it was sent in */
	unsigned window;	/* slow restart: requests in flight allowed; 0: none */
};

/* The limits a response is weighed with. */
struct throttle_rules {
	int backoff;		/* 0: responses never pause the origin */
	uint64_t max_us;	/* the longest pause */
	unsigned window_max;	/* the restart ends when its window reaches this */
};

enum throttle_verdict {
	THROTTLE_NONE,		/* nothing changed that holds requests back */
	THROTTLE_PAUSED,	/* the origin is paused (begun or renewed) */
};

/* A final response from the origin to a request sent in epoch `epoch`:
 * 2xx and 3xx reset the 429 doubling and widen a restart's window; 429,
 * and 503 with Retry-After (retry_after_us >= 0), pause. A 429 to a request
 * sent before the current pause began renews the pause without doubling
 * it: the requests in flight when an origin says 429 all come back 429. */
enum throttle_verdict throttle_response(struct throttle_pause *p, const struct throttle_rules *rules,
    uint64_t now, int status, int64_t retry_after_us, unsigned epoch);

int throttle_paused(const struct throttle_pause *p, uint64_t now);
/* Whether one more request may be in flight, active being those now. */
int throttle_window_allows(const struct throttle_pause *p, unsigned active);
/* True when nothing is left to remember: no pause, no restart, no doubling
 * (kept THROTTLE_429_MAX_US past the pause, so that a 429 soon after counts
 * as further). */
int throttle_pause_idle(const struct throttle_pause *p, uint64_t now);
/* When throttle_pause_idle will be true if nothing else happens. */
uint64_t throttle_pause_idle_at(const struct throttle_pause *p);

#endif
