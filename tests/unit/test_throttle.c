/* test_throttle.c: throttle.c alone, on times the test makes up. The token
 * bucket (burst, pace, exactness under late wake-ups, fractional rates, a
 * rate changed in flight, when it may be forgotten) and an origin's pause
 * (429 and 503 with and without Retry-After, the doubling and what resets
 * or does not double it, the cap, backoff off, the slow restart, when the
 * pause may be forgotten). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "throttle.h"
#include "unit.h"

#define T0 1000000000ull	/* a now_us() far from 0 */
#define S 1000000ull		/* a second */

/* A small fixed generator: the lateness of wake-ups, the same every run. */
static uint32_t seed = 12345;

static uint32_t
lcg(void)
{
	seed = seed * 1103515245u + 12345u;
	return (seed >> 8) & 0xffffff;
}

static struct throttle_bucket
bucket(double per_s, unsigned burst)
{
	struct throttle_bucket b;

	memset(&b, 0, sizeof(b));
	throttle_bucket_set(&b, per_s, burst);
	return b;
}

/* Takes every token there is at now; how many. */
static unsigned
take_all(struct throttle_bucket *b, uint64_t now)
{
	unsigned n = 0;

	while (throttle_bucket_ready(b) <= now && n < 1000000) {
		throttle_bucket_take(b, now);
		n++;
	}
	return n;
}

/* No limit: always ready, always full, taking changes nothing. */
static void
test_bucket_off(void)
{
	struct throttle_bucket b = bucket(0, 5);

	CHECK(!throttle_bucket_on(&b));
	CHECK(throttle_bucket_ready(&b) == 0);
	throttle_bucket_take(&b, T0);
	throttle_bucket_take(&b, T0);
	CHECK(throttle_bucket_ready(&b) == 0);
	CHECK(throttle_bucket_full(&b, T0));
	b = bucket(-3, 1);
	CHECK(!throttle_bucket_on(&b));
	CHECK(throttle_bucket_on(&(struct throttle_bucket){ .interval = 1 }));
}

/* After a quiet spell, burst tokens at once; then one per interval, and
 * never a microsecond early. */
static void
test_bucket_burst_then_pace(void)
{
	struct throttle_bucket b = bucket(10, 4);	/* 100 ms a token */

	CHECK(throttle_bucket_on(&b));
	CHECK(throttle_bucket_ready(&b) <= T0);
	CHECK(take_all(&b, T0) == 4);
	CHECK(throttle_bucket_ready(&b) == T0 + 100000);
	CHECK(take_all(&b, T0 + 99999) == 0);
	CHECK(take_all(&b, T0 + 100000) == 1);
	CHECK(throttle_bucket_ready(&b) == T0 + 200000);
	CHECK(take_all(&b, T0 + 200000) == 1);
	/* A second of quiet: the bucket is full again, and holds only 4. */
	CHECK(take_all(&b, T0 + 2 * S) == 4);
	CHECK(throttle_bucket_ready(&b) == T0 + 2 * S + 100000);

	/* Half a quiet spell refills half. */
	CHECK(take_all(&b, T0 + 2 * S + 250000) == 2);	/* at 100 and 200 ms */

	b = bucket(10, 1);
	CHECK(take_all(&b, T0) == 1);
	CHECK(throttle_bucket_ready(&b) == T0 + 100000);
}

/* A taker refused at each token and woken 0 to 1.5 ms late, as timers
 * are: over a simulated minute at 50/s it gets exactly 3,000 tokens (and
 * burst - 1 more at the start), the lateness not adding up. Each token
 * is taken at or after its due time, and no later than the lateness. */
static unsigned
simulate(double per_s, unsigned burst, uint64_t span, unsigned late_max_us, int *exact)
{
	struct throttle_bucket b = bucket(per_s, burst);
	double interval = 1e6 / per_s;
	uint64_t now = T0, end = T0 + span;
	unsigned n = 0, paced = 0;

	*exact = 1;
	for (;;) {
		while (throttle_bucket_ready(&b) <= now) {
			throttle_bucket_take(&b, now);
			if (n++ >= burst) {
				/* The paced token k is due at T0 + k * interval. */
				double due = (double)T0 + (double)++paced * interval;
				if ((double)now < due - 1 || (double)now > due + late_max_us + 1)
					*exact = 0;
			}
		}
		throttle_bucket_refuse(&b);
		now = throttle_bucket_ready(&b) + (late_max_us ? lcg() % (late_max_us + 1) : 0);
		if (now >= end)
			break;
	}
	return n;
}

static void
test_bucket_exact(void)
{
	int exact;

	CHECK(simulate(50, 1, 60 * S, 1500, &exact) == 3000);
	CHECK(exact);
	CHECK(simulate(50, 10, 60 * S, 1500, &exact) == 3009);
	CHECK(exact);
	CHECK(simulate(50, 1, 60 * S, 0, &exact) == 3000);
	CHECK(exact);
	/* Late by up to 19.9 ms of a 20 ms interval: still exact. */
	CHECK(simulate(50, 1, 60 * S, 19900, &exact) == 3000);
	CHECK(exact);
	/* Fractional rates: 0.5/s and 3/s (an interval that is no whole
	 * number of microseconds: the rounding up does not drift either). */
	CHECK(simulate(0.5, 1, 60 * S, 1500, &exact) == 30);
	CHECK(exact);
	CHECK(simulate(3, 1, 60 * S, 1500, &exact) == 180);
	CHECK(exact);
	CHECK(simulate(3, 2, 60 * S, 0, &exact) == 181);
	CHECK(exact);
	CHECK(simulate(7, 1, 600 * S, 3000, &exact) == 4200);
	CHECK(exact);
}

/* The rounding of a fractional interval: never a token early. */
static void
test_bucket_fractional(void)
{
	struct throttle_bucket b = bucket(3, 1);	/* 333,333.33 us */

	throttle_bucket_take(&b, T0);
	CHECK(throttle_bucket_ready(&b) == T0 + 333334);
	throttle_bucket_refuse(&b);
	throttle_bucket_take(&b, T0 + 333334);
	CHECK(throttle_bucket_ready(&b) == T0 + 666667);
	throttle_bucket_refuse(&b);
	throttle_bucket_take(&b, T0 + 666667);
	/* Three thirds of a second, summed in doubles at 1e9 us, come out a
	 * hair above T0 + S: rounded up, a microsecond late, never early. */
	CHECK(throttle_bucket_ready(&b) == T0 + S || throttle_bucket_ready(&b) == T0 + S + 1);

	b = bucket(0.5, 1);
	throttle_bucket_take(&b, T0);
	CHECK(throttle_bucket_ready(&b) == T0 + 2 * S);
	CHECK(take_all(&b, T0 + 2 * S - 1) == 0);
	CHECK(take_all(&b, T0 + 2 * S) == 1);

	b = bucket(1e6, 1);	/* the largest rate: 1 us */
	throttle_bucket_take(&b, T0);
	CHECK(throttle_bucket_ready(&b) == T0 + 1);
}

/* Lateness is forgiven within one interval, and only to a taker that was
 * refused: one that comes by after a quiet spell, or wakes more than an
 * interval late, starts afresh from now. */
static void
test_bucket_refused_carry(void)
{
	struct throttle_bucket b = bucket(50, 1);	/* 20 ms */

	throttle_bucket_take(&b, T0);
	throttle_bucket_refuse(&b);
	throttle_bucket_take(&b, T0 + 20000 + 5000);	/* 5 ms late */
	CHECK(throttle_bucket_ready(&b) == T0 + 40000);	/* counted from when it was due */
	throttle_bucket_refuse(&b);
	throttle_bucket_take(&b, T0 + 40000 + 19999);	/* just under an interval late */
	CHECK(throttle_bucket_ready(&b) == T0 + 60000);
	throttle_bucket_refuse(&b);
	throttle_bucket_take(&b, T0 + 60000 + 30000);	/* 1.5 intervals late */
	CHECK(throttle_bucket_ready(&b) == T0 + 110000);	/* afresh: no catching up */
	throttle_bucket_refuse(&b);
	throttle_bucket_take(&b, T0 + 110000 + 20000);	/* exactly an interval late */
	CHECK(throttle_bucket_ready(&b) == T0 + 150000);

	/* Not refused: the same lateness is a new start. */
	throttle_bucket_take(&b, T0 + 150000 + 5000);
	CHECK(throttle_bucket_ready(&b) == T0 + 175000);
	/* The refusal is spent by the take that follows it. */
	throttle_bucket_refuse(&b);
	throttle_bucket_take(&b, T0 + 175000 + 1000);
	CHECK(throttle_bucket_ready(&b) == T0 + 195000);
	throttle_bucket_take(&b, T0 + 195000 + 1000);
	CHECK(throttle_bucket_ready(&b) == T0 + 216000);
}

/* A rate changed (a reload) keeps what was taken: the token already due
 * later stays due then; the new pace applies from the next one. */
static void
test_bucket_set_keeps_tat(void)
{
	struct throttle_bucket b = bucket(10, 1);	/* 100 ms */

	throttle_bucket_take(&b, T0);
	CHECK(throttle_bucket_ready(&b) == T0 + 100000);
	throttle_bucket_set(&b, 100, 1);	/* 10 ms */
	CHECK(throttle_bucket_on(&b));
	CHECK(throttle_bucket_ready(&b) == T0 + 100000);
	CHECK(take_all(&b, T0 + 100000) == 1);
	CHECK(throttle_bucket_ready(&b) == T0 + 110000);

	/* Slower: the past is kept, the next interval is the new one. */
	throttle_bucket_set(&b, 1, 1);
	CHECK(throttle_bucket_ready(&b) == T0 + 110000);
	CHECK(take_all(&b, T0 + 110000) == 1);
	CHECK(throttle_bucket_ready(&b) == T0 + 1110000);

	/* A larger burst lets some of the future be taken now. */
	throttle_bucket_set(&b, 10, 3);	/* tau 200 ms */
	CHECK(throttle_bucket_ready(&b) == T0 + 910000);

	/* Off, then on again: the same. */
	throttle_bucket_set(&b, 0, 1);
	CHECK(!throttle_bucket_on(&b));
	CHECK(throttle_bucket_ready(&b) == 0);
	throttle_bucket_set(&b, 1, 1);
	CHECK(throttle_bucket_ready(&b) == T0 + 1110000);
}

/* Full when everything taken has been paid back: forgettable. */
static void
test_bucket_full(void)
{
	struct throttle_bucket b = bucket(10, 3);

	CHECK(throttle_bucket_full(&b, T0));
	throttle_bucket_take(&b, T0);
	CHECK(!throttle_bucket_full(&b, T0));
	CHECK(!throttle_bucket_full(&b, T0 + 99999));
	CHECK(throttle_bucket_full(&b, T0 + 100000));
	CHECK(take_all(&b, T0 + 100000) == 3);
	CHECK(!throttle_bucket_full(&b, T0 + 399999));
	CHECK(throttle_bucket_full(&b, T0 + 400000));
	/* Full means as good as new: burst tokens at once. */
	CHECK(take_all(&b, T0 + 400000) == 3);
}

/*
 * The pause.
 */

static const struct throttle_rules rules = { .backoff = 1, .max_us = 300 * S, .window_max = 8 };

static struct throttle_pause
pause_new(void)
{
	struct throttle_pause p;

	memset(&p, 0, sizeof(p));
	return p;
}

/* A 429 with Retry-After pauses until then; one to a request sent in the
 * pause's epoch, or in an earlier one, that asks for no longer changes
 * nothing. */
static void
test_pause_429_retry_after(void)
{
	struct throttle_pause p = pause_new();
	unsigned e = p.epoch;

	CHECK(!throttle_paused(&p, T0));
	CHECK(throttle_response(&p, &rules, T0, 429, 5 * S, e) == THROTTLE_PAUSED);
	CHECK(throttle_paused(&p, T0));
	CHECK(throttle_paused(&p, T0 + 5 * S - 1));
	CHECK(!throttle_paused(&p, T0 + 5 * S));
	CHECK(p.until == T0 + 5 * S);
	CHECK(p.status == 429 && p.retry_after == (int64_t)(5 * S));
	CHECK(p.epoch == e + 1);
	CHECK(p.window == 1);
	/* A late 429 of a request sent before, asking less: still paused,
	 * the end unchanged. */
	CHECK(throttle_response(&p, &rules, T0 + S, 429, 2 * S, e) == THROTTLE_PAUSED);
	CHECK(p.until == T0 + 5 * S && p.epoch == e + 1);
	/* Asking more: longer, the same pause (no new epoch). */
	CHECK(throttle_response(&p, &rules, T0 + S, 429, 10 * S, e) == THROTTLE_PAUSED);
	CHECK(p.until == T0 + 11 * S && p.epoch == e + 1);
	CHECK(p.retry_after == (int64_t)(10 * S));

	/* An HTTP-date in the past is Retry-After 0: no pause. */
	p = pause_new();
	CHECK(throttle_response(&p, &rules, T0, 429, 0, p.epoch) == THROTTLE_NONE);
	CHECK(!throttle_paused(&p, T0));
	CHECK(p.window == 0);

	/* Capped by max_backoff_s. */
	p = pause_new();
	CHECK(throttle_response(&p, &rules, T0, 429, 86400 * S, p.epoch) == THROTTLE_PAUSED);
	CHECK(p.until == T0 + 300 * S);
	CHECK(p.retry_after == (int64_t)(86400 * S));	/* as the origin said */
}

/* Without Retry-After: 1 s, 2 s, 4 s ... each 429 of a request sent after
 * the last pause began, up to 60 s, or max_backoff_s when lower. */
static void
test_pause_429_doubling(void)
{
	static const uint64_t want[] = { 1, 2, 4, 8, 16, 32, 60, 60, 60 };
	struct throttle_rules low = rules;
	struct throttle_pause p = pause_new();
	uint64_t now = T0;
	int ok = 1;

	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		/* Sent in the current epoch, after the last pause ended. */
		if (throttle_response(&p, &rules, now, 429, -1, p.epoch) != THROTTLE_PAUSED ||
		    p.until != now + want[i] * S || p.retry_after != -1 || p.status != 429)
			ok = 0;
		now = p.until + 1000;
	}
	CHECK(ok);
	CHECK(p.epoch == 9);

	/* 2xx and 3xx reset the doubling; other statuses do not. */
	CHECK(throttle_response(&p, &rules, now, 200, -1, p.epoch) == THROTTLE_NONE);
	CHECK(p.level == 0);
	CHECK(throttle_response(&p, &rules, now, 429, -1, p.epoch) == THROTTLE_PAUSED);
	CHECK(p.until == now + S);
	now = p.until;
	CHECK(throttle_response(&p, &rules, now, 429, -1, p.epoch) == THROTTLE_PAUSED);
	CHECK(p.until == now + 2 * S);
	now = p.until;
	CHECK(throttle_response(&p, &rules, now, 404, -1, p.epoch) == THROTTLE_NONE);
	CHECK(throttle_response(&p, &rules, now, 500, -1, p.epoch) == THROTTLE_NONE);
	CHECK(throttle_response(&p, &rules, now, 503, -1, p.epoch) == THROTTLE_NONE);
	CHECK(throttle_response(&p, &rules, now, 429, -1, p.epoch) == THROTTLE_PAUSED);
	CHECK(p.until == now + 4 * S);
	now = p.until;
	CHECK(throttle_response(&p, &rules, now, 304, -1, p.epoch) == THROTTLE_NONE);
	CHECK(throttle_response(&p, &rules, now, 429, -1, p.epoch) == THROTTLE_PAUSED);
	CHECK(p.until == now + S);

	/* max_backoff_s below 60 s caps the doubling too. */
	low.max_us = 5 * S;
	p = pause_new();
	now = T0;
	for (int i = 0; i < 5; i++) {
		throttle_response(&p, &low, now, 429, -1, p.epoch);
		now = p.until;
	}
	CHECK(p.len == 5 * S);	/* 1, 2, 4, 5, 5 */
}

/* The requests in flight when an origin says 429 all come back 429: those
 * sent before the pause began renew it at its length, without doubling,
 * during the pause or after it. */
static void
test_pause_renewal_no_doubling(void)
{
	struct throttle_pause p = pause_new();
	unsigned before = p.epoch;

	CHECK(throttle_response(&p, &rules, T0, 429, -1, before) == THROTTLE_PAUSED);
	CHECK(p.until == T0 + S);
	for (int i = 1; i <= 5; i++)	/* five more of the same volley, 100 ms apart */
		CHECK(throttle_response(&p, &rules, T0 + (uint64_t)i * 100000, 429, -1, before) ==
		    THROTTLE_PAUSED);
	CHECK(p.until == T0 + 500000 + S);	/* renewed: 1 s from the last */
	CHECK(p.len == S);
	CHECK(p.epoch == before + 1);
	/* One more after the pause is over: a new pause, still not doubled. */
	CHECK(throttle_response(&p, &rules, T0 + 3 * S, 429, -1, before) == THROTTLE_PAUSED);
	CHECK(p.until == T0 + 4 * S);
	/* A request sent in the current epoch doubles. */
	CHECK(throttle_response(&p, &rules, T0 + 5 * S, 429, -1, p.epoch) == THROTTLE_PAUSED);
	CHECK(p.until == T0 + 7 * S);
}

/* A 503 pauses only when it says Retry-After; it does not double a later
 * 429. */
static void
test_pause_503(void)
{
	struct throttle_pause p = pause_new();

	CHECK(throttle_response(&p, &rules, T0, 503, -1, p.epoch) == THROTTLE_NONE);
	CHECK(!throttle_paused(&p, T0) && p.window == 0 && p.epoch == 0);
	CHECK(throttle_pause_idle(&p, T0));
	CHECK(throttle_response(&p, &rules, T0, 503, 3 * S, p.epoch) == THROTTLE_PAUSED);
	CHECK(p.until == T0 + 3 * S && p.status == 503 && p.retry_after == (int64_t)(3 * S));
	CHECK(p.window == 1 && p.level == 0);
	CHECK(throttle_response(&p, &rules, T0 + 4 * S, 429, -1, p.epoch) == THROTTLE_PAUSED);
	CHECK(p.until == T0 + 5 * S && p.status == 429 && p.retry_after == -1);
	/* A 503 with Retry-After beyond max_backoff_s. */
	p = pause_new();
	CHECK(throttle_response(&p, &rules, T0, 503, 1000 * S, p.epoch) == THROTTLE_PAUSED);
	CHECK(p.until == T0 + 300 * S);
	/* Other 5xx with Retry-After do not pause. */
	p = pause_new();
	CHECK(throttle_response(&p, &rules, T0, 502, 3 * S, p.epoch) == THROTTLE_NONE);
	CHECK(throttle_response(&p, &rules, T0, 500, 3 * S, p.epoch) == THROTTLE_NONE);
	CHECK(!throttle_paused(&p, T0) && p.window == 0);
}

/* backoff = 0: nothing pauses, nothing is remembered. */
static void
test_pause_backoff_off(void)
{
	struct throttle_rules off = rules;
	struct throttle_pause p = pause_new();

	off.backoff = 0;
	CHECK(throttle_response(&p, &off, T0, 429, 5 * S, p.epoch) == THROTTLE_NONE);
	CHECK(throttle_response(&p, &off, T0, 429, -1, p.epoch) == THROTTLE_NONE);
	CHECK(throttle_response(&p, &off, T0, 503, 5 * S, p.epoch) == THROTTLE_NONE);
	CHECK(throttle_response(&p, &off, T0, 200, -1, p.epoch) == THROTTLE_NONE);
	CHECK(!throttle_paused(&p, T0));
	CHECK(p.window == 0 && p.level == 0 && p.epoch == 0);
	CHECK(throttle_window_allows(&p, 1000));
	CHECK(throttle_pause_idle(&p, T0));
}

/* After a pause: one request in flight, doubling with each success once
 * the pause is over (not during it), ending at window_max. A new pause
 * starts the restart over. */
static void
test_pause_restart_window(void)
{
	struct throttle_pause p = pause_new();

	CHECK(throttle_window_allows(&p, 0) && throttle_window_allows(&p, 50));
	throttle_response(&p, &rules, T0, 429, 2 * S, p.epoch);
	CHECK(p.window == 1);
	CHECK(throttle_window_allows(&p, 0));
	CHECK(!throttle_window_allows(&p, 1));
	/* A success of a request still in flight during the pause. */
	CHECK(throttle_response(&p, &rules, T0 + S, 200, -1, 0) == THROTTLE_NONE);
	CHECK(p.window == 1);
	CHECK(throttle_paused(&p, T0 + S));	/* a 2xx does not end the pause */
	CHECK(throttle_response(&p, &rules, T0 + 3 * S, 200, -1, p.epoch) == THROTTLE_NONE);
	CHECK(p.window == 2);
	CHECK(throttle_window_allows(&p, 1) && !throttle_window_allows(&p, 2));
	throttle_response(&p, &rules, T0 + 3 * S, 500, -1, p.epoch);	/* not a success */
	CHECK(p.window == 2);
	throttle_response(&p, &rules, T0 + 3 * S, 301, -1, p.epoch);
	CHECK(p.window == 4);
	CHECK(throttle_window_allows(&p, 3) && !throttle_window_allows(&p, 4));
	throttle_response(&p, &rules, T0 + 3 * S, 200, -1, p.epoch);
	CHECK(p.window == 0);	/* reached window_max, 8: over */
	CHECK(throttle_window_allows(&p, 1000));
	throttle_response(&p, &rules, T0 + 3 * S, 200, -1, p.epoch);
	CHECK(p.window == 0);

	/* A 429 in the restart: paused again, from one. */
	throttle_response(&p, &rules, T0 + 4 * S, 429, S, p.epoch);
	CHECK(throttle_response(&p, &rules, T0 + 5 * S, 200, -1, p.epoch) == THROTTLE_NONE);
	CHECK(p.window == 2);
	CHECK(throttle_response(&p, &rules, T0 + 5 * S, 429, S, p.epoch) == THROTTLE_PAUSED);
	CHECK(p.window == 1);
}

/* What may be forgotten: nothing paused, restarting or doubling, the last
 * a minute after the pause so that a 429 soon after still doubles. */
static void
test_pause_idle(void)
{
	struct throttle_pause p = pause_new();

	CHECK(throttle_pause_idle(&p, 0));
	CHECK(throttle_pause_idle_at(&p) == 0);
	throttle_response(&p, &rules, T0, 429, -1, p.epoch);
	CHECK(throttle_pause_idle_at(&p) == T0 + S + THROTTLE_429_MAX_US);
	CHECK(!throttle_pause_idle(&p, T0 + S));
	CHECK(!throttle_pause_idle(&p, T0 + S + THROTTLE_429_MAX_US - 1));
	CHECK(throttle_pause_idle(&p, T0 + S + THROTTLE_429_MAX_US));
	/* Restarted fully and reset: idle once the pause is over. */
	for (int i = 0; i < 3; i++)
		throttle_response(&p, &rules, T0 + 2 * S, 200, -1, p.epoch);
	CHECK(p.window == 0 && p.level == 0);
	CHECK(throttle_pause_idle_at(&p) == T0 + S);
	CHECK(throttle_pause_idle(&p, T0 + 2 * S));

	/* A 503 pause leaves no doubling, but a restart to remember. */
	p = pause_new();
	throttle_response(&p, &rules, T0, 503, 2 * S, p.epoch);
	CHECK(p.level == 0 && p.window == 1);
	CHECK(!throttle_pause_idle(&p, T0 + 3 * S));
	CHECK(throttle_pause_idle_at(&p) == T0 + 2 * S + THROTTLE_429_MAX_US);
	throttle_response(&p, &rules, T0 + 3 * S, 200, -1, p.epoch);
	throttle_response(&p, &rules, T0 + 3 * S, 200, -1, p.epoch);
	throttle_response(&p, &rules, T0 + 3 * S, 200, -1, p.epoch);
	CHECK(throttle_pause_idle(&p, T0 + 3 * S));
}

int
main(void)
{
	test_bucket_off();
	test_bucket_burst_then_pace();
	test_bucket_exact();
	test_bucket_fractional();
	test_bucket_refused_carry();
	test_bucket_set_keeps_tat();
	test_bucket_full();
	test_pause_429_retry_after();
	test_pause_429_doubling();
	test_pause_renewal_no_doubling();
	test_pause_503();
	test_pause_backoff_off();
	test_pause_restart_window();
	test_pause_idle();
	return UNIT_DONE();
}
