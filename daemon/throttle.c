/* throttle.c: see throttle.h. */
#include "throttle.h"

void
throttle_bucket_set(struct throttle_bucket *b, double per_s, unsigned burst)
{
	if (!(per_s > 0)) {
		b->interval = b->tau = 0;
		return;
	}
	b->interval = 1e6 / per_s;
	b->tau = (double)(burst > 0 ? burst - 1 : 0) * b->interval;
}

int
throttle_bucket_on(const struct throttle_bucket *b)
{
	return b->interval > 0;
}

uint64_t
throttle_bucket_ready(const struct throttle_bucket *b)
{
	double at = b->tat - b->tau;
	uint64_t whole;

	if (b->interval == 0 || at <= 0)
		return 0;
	whole = (uint64_t)at;
	return whole + ((double)whole < at);	/* rounded up: never a token early */
}

void
throttle_bucket_refuse(struct throttle_bucket *b)
{
	b->refused = 1;
}

/* GCRA: the next token is due one interval after the later of the last
 * one's due time and now. A taker that was refused and woke up late takes
 * the token as of when it was due (up to one interval late), so that timer
 * lateness, a millisecond a wake-up, does not add up into a slower rate;
 * one that just happened by after a quiet spell starts afresh from now. */
void
throttle_bucket_take(struct throttle_bucket *b, uint64_t now)
{
	double t = (double)now;

	if (b->interval == 0)
		return;
	if (b->refused && t > b->tat && t < b->tat + b->interval)
		b->tat += b->interval;
	else
		b->tat = (t > b->tat ? t : b->tat) + b->interval;
	b->refused = 0;
}

int
throttle_bucket_full(const struct throttle_bucket *b, uint64_t now)
{
	return b->interval == 0 || b->tat <= (double)now;
}

int
throttle_paused(const struct throttle_pause *p, uint64_t now)
{
	return p->until > now;
}

int
throttle_window_allows(const struct throttle_pause *p, unsigned active)
{
	return p->window == 0 || active < p->window;
}

static int
throttle_success(int status)
{
	return status >= 200 && status < 400;
}

/* How long a pause the response asks for; 0: none. */
static uint64_t
throttle_pause_len(struct throttle_pause *p, const struct throttle_rules *rules, int status,
    int64_t retry_after_us, int renewal)
{
	uint64_t len;

	if (retry_after_us >= 0)
		len = (uint64_t)retry_after_us;
	else if (status != 429)
		return 0;	/* a 503 without Retry-After: the origin said nothing of when */
	else if (renewal)
		len = p->len;
	else {
		len = (uint64_t)THROTTLE_429_FIRST_US << (p->level < 6 ? p->level : 6);
		if (len > THROTTLE_429_MAX_US)
			len = THROTTLE_429_MAX_US;
	}
	if (status == 429 && retry_after_us < 0 && !renewal && p->level < 32)
		p->level++;	/* only the pauses the origin left to us double */
	return len < rules->max_us ? len : rules->max_us;
}

enum throttle_verdict
throttle_response(struct throttle_pause *p, const struct throttle_rules *rules, uint64_t now,
    int status, int64_t retry_after_us, unsigned epoch)
{
	/* Sent before the current pause (or the one just over) began. */
	int renewal = epoch != p->epoch;
	uint64_t len;

	if (throttle_success(status)) {
		p->level = 0;
		if (p->window > 0 && !throttle_paused(p, now) &&
		    (p->window *= 2) >= rules->window_max)
			p->window = 0;
		return THROTTLE_NONE;
	}
	if (!rules->backoff || (status != 429 && status != 503))
		return THROTTLE_NONE;
	if ((len = throttle_pause_len(p, rules, status, retry_after_us, renewal)) == 0)
		return THROTTLE_NONE;
	if (now + len <= p->until)
		return THROTTLE_PAUSED;	/* already paused for longer */
	if (!throttle_paused(p, now))
		p->epoch++;
	p->until = now + len;
	p->len = len;
	p->status = status;
	p->retry_after = retry_after_us;
	p->window = 1;
	return THROTTLE_PAUSED;
}

uint64_t
throttle_pause_idle_at(const struct throttle_pause *p)
{
	if (p->level == 0 && p->window == 0)
		return p->until;
	return p->until + THROTTLE_429_MAX_US;
}

int
throttle_pause_idle(const struct throttle_pause *p, uint64_t now)
{
	return throttle_pause_idle_at(p) <= now;
}
