/* sched.c: see sched.h. The pump runs from its own event, activated by every
 * change that could let a request go, so many changes in one loop turn cost
 * one pass and nothing is dispatched from inside another module's callback.
 *
 * Throttling: an origin's configured bucket, its pause and its restart are
 * kept on its sorigin, shared by every batch; a batch's own bucket on its
 * bhost. A bhost whose head may not start yet parks on the origin (woken
 * all together by the origin's timer, so the batches wanting it take turns
 * through the pump's rotation) or on its own timer. The time a bhost spends
 * parked so is what its requests report as throttle_ms. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include <event2/event.h>

#include "conf.h"
#include "log.h"
#include "map.h"
#include "metrics.h"
#include "pool.h"
#include "sched.h"
#include "throttle.h"
#include "url.h"
#include "util.h"

/* The scheduler's side of an origin: the bhosts parked on it and its
 * throttle. Shared by the batches that queue for it, hung on the pool's
 * origin; kept while its throttle has something to remember. */
struct sorigin {
	struct origin *origin;
	unsigned refs;			/* bhosts */
	TAILQ_HEAD(, bhost) waiters;	/* bhosts waiting for this origin's limit */
	TAILQ_HEAD(, bhost) held;	/* bhosts held back by its throttle */
	const struct conf_rate *limit;	/* the configured rate_limit, or NULL */
	struct throttle_bucket bucket;	/* its tokens */
	struct throttle_pause pause;
	int paused;			/* counted in metrics.origins_paused */
	unsigned active;		/* requests on their way to it: what a restart counts */
	unsigned running;		/* dispatched and not finished, all batches */
	size_t queued;			/* waiting in the batches' queues */
	struct event *timer;		/* the next token, the pause's end, or forgetting */
	uint64_t timer_at;		/* when it is set for; 0: not set */
	TAILQ_ENTRY(sorigin) link;	/* sched.origins */
};

enum bhost_where {
	BH_NONE,
	BH_READY,	/* on sb->ready */
	BH_WAITING,	/* on so->waiters: the origin is at max_per_host */
	BH_STARVING,	/* on sched.starving: the global budget is used */
	BH_HELD,	/* on so->held: the origin's rate, pause or restart */
	BH_RATED,	/* on no list: its own bucket's timer wakes it */
};

/* A queued new request: its index, and its bhost's throttled time when it
 * was queued (milliseconds, wrapping: a difference is good for 49 days). */
struct fresh {
	uint32_t index;
	uint32_t held_ms;
};

/* One batch's queue and slots for one origin. */
struct bhost {
	struct sorigin *so;
	struct sched_batch *sb;
	TAILQ_HEAD(, sched_req) cont;	/* redirects and retries: they go first */
	/* Requests not dispatched yet are only their indexes, in input order:
	 * a ring that grows by doubling, so a queued request costs 4 bytes and
	 * its request exists only from dispatch on. */
	struct fresh *fresh;
	size_t fhead, fcount, fcap;
	unsigned inflight;		/* connections of this batch to this origin */
	unsigned running;		/* its requests dispatched and not finished */
	struct throttle_bucket bucket;	/* the batch's rate_per_host */
	struct event *rtimer;		/* wakes it when that bucket has a token */
	uint64_t held_us;		/* time parked BH_HELD or BH_RATED, */
	uint64_t held_since;		/* and since when while it is */
	enum bhost_where where;
	TAILQ_ENTRY(bhost) link;	/* sb->ready, so->waiters or sched.starving */
	TAILQ_ENTRY(bhost) all;
};

struct sched_batch {
	TAILQ_HEAD(, bhost) ready;	/* bhosts that may dispatch now */
	TAILQ_HEAD(, bhost) hosts;	/* all of them, to free */
	struct map *bymap;		/* origin key -> bhost */
	sched_dispatch_fn *dispatch;
	void *owner;
	unsigned inflight;		/* dispatched requests not finished */
	unsigned concurrency;
	unsigned per_host;
	double rate;			/* rate_per_host; 0: none */
	unsigned burst;
	unsigned gen;			/* pool generation (configuration) it started in */
	int mux;			/* its requests may share multiplexing connections */
	unsigned ncontinuing;		/* queued redirects and retries */
	int paused;			/* output backpressure: only continuing may go */
	size_t need_index;		/* order "input": the index output waits for */
	int active;			/* on the scheduler's list */
	TAILQ_ENTRY(sched_batch) link;
};

/* Where a dispatched request sits. */
enum sched_where {
	SR_RUNNING,	/* holds a per-origin slot: a connection of its own */
	SR_SHARED,	/* one of many on a multiplexing connection: no slot */
	SR_QUEUED,	/* on its bhost's cont queue, waiting to go again */
	SR_ASIDE,	/* neither: backing off, or between release and finish */
};

struct sched_req {
	struct bhost *bh;
	size_t index;
	void *data;			/* the owner's */
	enum sched_where where;
	int fresh;			/* the next connection must not be a kept-alive one */
	int active;			/* counted in its origin's active */
	unsigned epoch;			/* its origin's pauses when it was sent */
	uint64_t throttle_us;		/* held back before its last dispatch, */
	uint64_t mark;			/* and its bhost's held_us when queued again */
	TAILQ_ENTRY(sched_req) qlink;	/* bh->cont */
};

static struct {
	struct event_base *base;
	struct event *pump;
	struct conf *conf;
	struct throttle_rules rules;
	TAILQ_HEAD(, sorigin) origins;
	TAILQ_HEAD(sched_batches, sched_batch) batches;
	/* bhosts parked on the global budget, in the order they parked: a
	 * freed slot goes to the first, and a bhost that used one parks again
	 * at the back, so batches to different origins take turns. */
	TAILQ_HEAD(, bhost) starving;
} sched;

static void sched_pump(evutil_socket_t fd, short what, void *arg);
static void sched_origin_freed(struct origin *o);
static void sched_room_freed(void);
static void sched_limits_changed(void);

static const struct pool_listener sched_pool_listener = {
	.origin_freed = sched_origin_freed,
	.room_freed = sched_room_freed,
	.limits_changed = sched_limits_changed,
};

void
sched_init(struct event_base *base)
{
	sched.base = base;
	sched.pump = event_new(base, -1, 0, sched_pump, NULL);
	TAILQ_INIT(&sched.batches);
	TAILQ_INIT(&sched.starving);
	TAILQ_INIT(&sched.origins);
	pool_set_listener(&sched_pool_listener);
}

static void sorigin_free(struct sorigin *so);

void
sched_shutdown(void)
{
	struct sorigin *so;

	/* Only origins kept for their throttle are left: batches are gone. */
	while ((so = TAILQ_FIRST(&sched.origins)) != NULL)
		sorigin_free(so);
	event_free(sched.pump);
	sched.pump = NULL;
	conf_unref(sched.conf);
	sched.conf = NULL;
	memset(&sched.rules, 0, sizeof(sched.rules));
}

static void
sched_kick(void)
{
	if (sched.pump != NULL)
		event_active(sched.pump, 0, 0);
}

struct sched_batch *
sched_batch_new(sched_dispatch_fn *dispatch, void *owner, const struct sched_limits *l)
{
	struct sched_batch *sb = xcalloc(1, sizeof(*sb));

	TAILQ_INIT(&sb->ready);
	TAILQ_INIT(&sb->hosts);
	sb->bymap = map_new();
	sb->dispatch = dispatch;
	sb->owner = owner;
	sb->concurrency = l->concurrency;
	sb->per_host = l->per_host;
	sb->rate = l->rate;
	sb->burst = l->burst;
	sb->gen = pool_batch_begin();
	sb->need_index = SIZE_MAX;
	sb->mux = l->mux;
	return sb;
}

void
sched_batch_start(struct sched_batch *sb)
{
	sb->active = 1;
	TAILQ_INSERT_TAIL(&sched.batches, sb, link);
	sched_kick();
}

static void
bhost_unlink(struct bhost *bh)
{
	switch (bh->where) {
	case BH_READY:
		TAILQ_REMOVE(&bh->sb->ready, bh, link);
		break;
	case BH_WAITING:
		TAILQ_REMOVE(&bh->so->waiters, bh, link);
		break;
	case BH_STARVING:
		TAILQ_REMOVE(&sched.starving, bh, link);
		break;
	case BH_HELD:
		TAILQ_REMOVE(&bh->so->held, bh, link);
		bh->held_us += now_us() - bh->held_since;
		break;
	case BH_RATED:
		event_del(bh->rtimer);
		bh->held_us += now_us() - bh->held_since;
		break;
	case BH_NONE:
		break;
	}
	bh->where = BH_NONE;
}

/* bh's throttled time so far, a wait in progress included. */
static uint64_t
bhost_held_us(const struct bhost *bh)
{
	if (bh->where == BH_HELD || bh->where == BH_RATED)
		return bh->held_us + (now_us() - bh->held_since);
	return bh->held_us;
}

static int
bhost_empty(const struct bhost *bh)
{
	return TAILQ_EMPTY(&bh->cont) && bh->fcount == 0;
}

/* A parked bhost stays parked: only what it waits for unparks it. Taking
 * it off the budget's line because its own request ended was what let a
 * big batch keep the budget from a small one. */
static void
bhost_make_ready(struct bhost *bh)
{
	if (bh->where != BH_NONE || bhost_empty(bh) ||
	    (!bh->sb->mux && bh->inflight >= bh->sb->per_host))
		return;	/* a batch that multiplexes may still share at per_host */
	bh->where = BH_READY;
	TAILQ_INSERT_TAIL(&bh->sb->ready, bh, link);
	sched_kick();
}

/*
 * Origins' throttles.
 */

/* Whether anything of the origin's throttle may hold a request back. */
static int
sorigin_throttles(const struct sorigin *so)
{
	return throttle_bucket_on(&so->bucket) || so->pause.until != 0 || so->pause.window != 0;
}

/* The rate_limit line for o in the configuration now in force, or NULL. */
static const struct conf_rate *
sched_rate_of(const struct origin *o)
{
	if (sched.conf == NULL)
		return NULL;
	return conf_rate_find(sched.conf, pool_origin_https(o), pool_origin_host(o),
	    (uint16_t)pool_origin_port(o));
}

/* Looks up its rate_limit in the configuration now in force. */
static void
sorigin_configure(struct sorigin *so)
{
	so->limit = sched_rate_of(so->origin);
	if (so->limit != NULL)
		throttle_bucket_set(&so->bucket, so->limit->rate, so->limit->burst);
	else
		throttle_bucket_set(&so->bucket, 0, 1);
}

/* Sets the origin's timer for at, unless it is set for sooner. */
static void
sorigin_arm(struct sorigin *so, uint64_t at)
{
	uint64_t now = now_us(), in;
	struct timeval tv;

	if (so->timer_at != 0 && so->timer_at <= at)
		return;
	in = at > now ? at - now : 0;
	tv.tv_sec = (time_t)(in / 1000000u);
	tv.tv_usec = (suseconds_t)(in % 1000000u);
	so->timer_at = at;
	evtimer_add(so->timer, &tv);
}

/* Every bhost the origin's throttle held goes back to its batch's ready
 * list; the pump's rotation then decides whose turn it is. */
static void
sorigin_wake(struct sorigin *so)
{
	struct bhost *bh;

	while ((bh = TAILQ_FIRST(&so->held)) != NULL) {
		bhost_unlink(bh);
		bhost_make_ready(bh);
	}
}

/* Nothing holds so but its throttle, which has nothing left to remember. */
static int
sorigin_forgettable(const struct sorigin *so, uint64_t now)
{
	return so->refs == 0 && throttle_bucket_full(&so->bucket, now) &&
	    throttle_pause_idle(&so->pause, now);
}

static void
sorigin_free(struct sorigin *so)
{
	if (so->paused)
		metrics.origins_paused--;
	TAILQ_REMOVE(&sched.origins, so, link);
	event_free(so->timer);
	pool_origin_set_data(so->origin, NULL);
	pool_origin_put(so->origin);
	free(so);
}

/* Frees so when it may be forgotten; else sets its timer for when it may,
 * if nothing else will look at it. */
static void
sorigin_maybe_free(struct sorigin *so, uint64_t now)
{
	uint64_t at;

	if (so->refs > 0)
		return;
	if (sorigin_forgettable(so, now)) {
		sorigin_free(so);
		return;
	}
	at = throttle_pause_idle_at(&so->pause);
	if ((uint64_t)so->bucket.tat > at)
		at = (uint64_t)so->bucket.tat + 1;
	sorigin_arm(so, at);
}

static void
sorigin_timer(evutil_socket_t fd, short what, void *arg)
{
	struct sorigin *so = arg;
	uint64_t now = now_us();

	(void)fd;
	(void)what;
	so->timer_at = 0;
	if (so->paused && !throttle_paused(&so->pause, now)) {
		so->paused = 0;
		metrics.origins_paused--;
	} else if (so->paused)	/* set sooner, for a token: the pause's end is still to come */
		sorigin_arm(so, so->pause.until);
	sorigin_wake(so);
	sorigin_maybe_free(so, now);
}

static struct sorigin *
sorigin_get(const struct url *u)
{
	struct origin *o = pool_origin_get(u);
	struct sorigin *so = pool_origin_data(o);

	if (so == NULL) {
		so = xcalloc(1, sizeof(*so));
		so->origin = o;
		so->timer = evtimer_new(sched.base, sorigin_timer, so);
		TAILQ_INIT(&so->waiters);
		TAILQ_INIT(&so->held);
		TAILQ_INSERT_TAIL(&sched.origins, so, link);
		sorigin_configure(so);
		pool_origin_set_data(o, so);
	} else
		pool_origin_put(o);	/* so holds the one reference */
	so->refs++;
	return so;
}

static void
sorigin_put(struct sorigin *so)
{
	so->refs--;
	sorigin_maybe_free(so, now_us());
}

void
sched_configure(struct conf *c)
{
	struct sorigin *so;

	conf_ref(c);
	conf_unref(sched.conf);
	sched.conf = c;
	sched.rules.backoff = c->backoff != 0;
	sched.rules.max_us = (uint64_t)c->max_backoff_s * 1000000u;
	sched.rules.window_max = c->max_per_host * c->max_streams;
	TAILQ_FOREACH(so, &sched.origins, link) {
		sorigin_configure(so);
		sorigin_wake(so);	/* the limit may be looser */
	}
	sched_kick();
}

void
sched_batch_free(struct sched_batch *sb)
{
	struct bhost *bh;

	if (sb->active)
		TAILQ_REMOVE(&sched.batches, sb, link);
	pool_batch_end(sb->gen);
	while ((bh = TAILQ_FIRST(&sb->hosts)) != NULL) {
		TAILQ_REMOVE(&sb->hosts, bh, all);
		bhost_unlink(bh);
		metrics.requests_queued -= bh->fcount;
		bh->so->queued -= bh->fcount;
		sorigin_put(bh->so);
		if (bh->rtimer != NULL)
			event_free(bh->rtimer);
		free(bh->fresh);
		free(bh);
	}
	map_free(sb->bymap);
	free(sb);
}

static struct bhost *
bhost_get(struct sched_batch *sb, const struct url *u)
{
	struct bhost *bh = map_get(sb->bymap, u->origin);

	if (bh == NULL) {
		bh = xcalloc(1, sizeof(*bh));
		bh->so = sorigin_get(u);
		bh->sb = sb;
		throttle_bucket_set(&bh->bucket, sb->rate, sb->burst);
		TAILQ_INIT(&bh->cont);
		TAILQ_INSERT_TAIL(&sb->hosts, bh, all);
		map_put(sb->bymap, pool_origin_key(bh->so->origin), bh);
	}
	return bh;
}

void
sched_enqueue_new(struct sched_batch *sb, const struct url *u, size_t index)
{
	struct bhost *bh = bhost_get(sb, u);

	if (bh->fcount == bh->fcap) {
		size_t cap = bh->fcap ? bh->fcap * 2 : 4;
		struct fresh *ring = xmalloc(cap * sizeof(*ring));
		/* Unwrap into the new ring, oldest first. */
		for (size_t i = 0; i < bh->fcount; i++)
			ring[i] = bh->fresh[(bh->fhead + i) % bh->fcap];
		free(bh->fresh);
		bh->fresh = ring;
		bh->fcap = cap;
		bh->fhead = 0;
	}
	bh->fresh[(bh->fhead + bh->fcount++) % bh->fcap] = (struct fresh){
		.index = (uint32_t)index,
		.held_ms = (uint32_t)(bhost_held_us(bh) / 1000u),
	};
	metrics.requests_queued++;
	bh->so->queued++;
	bhost_make_ready(bh);
}

static size_t
bhost_fresh_head(const struct bhost *bh)
{
	return bh->fresh[bh->fhead].index;
}

/* How long a queued request has been held back by a throttle: its
 * bhost's held time since it was queued. */
static uint64_t
bhost_fresh_held_us(const struct bhost *bh, const struct fresh *f)
{
	return (uint64_t)((uint32_t)(bhost_held_us(bh) / 1000u) - f->held_ms) * 1000u;
}

static struct fresh
bhost_fresh_pop(struct bhost *bh)
{
	struct fresh f = bh->fresh[bh->fhead];

	bh->fhead = (bh->fhead + 1) % bh->fcap;
	bh->fcount--;
	metrics.requests_queued--;
	bh->so->queued--;
	return f;
}

int
sched_pop_new(struct sched_batch *sb, size_t *index, uint64_t *throttle_us)
{
	struct bhost *bh;

	TAILQ_FOREACH(bh, &sb->hosts, all) {
		if (bh->fcount > 0) {
			struct fresh f = bhost_fresh_pop(bh);
			*index = f.index;
			if (throttle_us != NULL)
				*throttle_us = bhost_fresh_held_us(bh, &f);
			return 1;
		}
	}
	return 0;
}

void
sched_set_output(struct sched_batch *sb, int paused, size_t need_index)
{
	sb->paused = paused;
	sb->need_index = need_index;
	sched_kick();
}

size_t
sched_req_index(const struct sched_req *r)
{
	return r->index;
}

void *
sched_req_data(const struct sched_req *r)
{
	return r->data;
}

void
sched_req_set_data(struct sched_req *r, void *data)
{
	r->data = data;
}

/* r is no longer on its way to its origin: a restart may let one more go. */
static void
sched_req_settle(struct sched_req *r)
{
	struct sorigin *so = r->bh->so;

	if (!r->active)
		return;
	r->active = 0;
	so->active--;
	if (so->pause.window != 0)
		sorigin_wake(so);
}

void
sched_release(struct sched_req *r)
{
	sched_req_settle(r);
	if (r->where == SR_SHARED)
		r->where = SR_ASIDE;
	if (r->where != SR_RUNNING)
		return;
	r->where = SR_ASIDE;
	r->bh->inflight--;
	bhost_make_ready(r->bh);
}

void
sched_requeue(struct sched_req *r, const struct url *u, int fresh)
{
	struct bhost *bh = bhost_get(r->bh->sb, u);

	sched_release(r);
	sched_dequeue(r);
	r->bh->running--;
	r->bh->so->running--;
	bh->running++;
	bh->so->running++;
	bh->so->queued++;
	r->bh = bh;
	r->fresh = fresh;
	r->where = SR_QUEUED;
	r->mark = bhost_held_us(bh);
	bh->sb->ncontinuing++;
	TAILQ_INSERT_TAIL(&bh->cont, r, qlink);
	bhost_make_ready(bh);
	/* Even when bh was ready already: it may have been passed over (its
	 * batch at its concurrency), and a continuing request may go anyway. */
	sched_kick();
}

void
sched_dequeue(struct sched_req *r)
{
	if (r->where != SR_QUEUED)
		return;
	TAILQ_REMOVE(&r->bh->cont, r, qlink);
	r->where = SR_ASIDE;
	r->bh->sb->ncontinuing--;
	r->bh->so->queued--;
	r->throttle_us += bhost_held_us(r->bh) - r->mark;
}

uint64_t
sched_req_throttled_us(const struct sched_req *r)
{
	if (r->where == SR_QUEUED)
		return r->throttle_us + (bhost_held_us(r->bh) - r->mark);
	return r->throttle_us;
}

void
sched_finished(struct sched_req *r)
{
	struct sched_batch *sb = r->bh->sb;

	sched_dequeue(r);
	sched_release(r);
	r->bh->running--;
	r->bh->so->running--;
	sb->inflight--;
	metrics.requests_in_flight--;
	if (r->throttle_us > 0) {
		metrics.throttled_requests++;
		metrics.throttle_seconds += (double)r->throttle_us / 1e6;
	}
	free(r);
	sched_kick();
}

int
sched_response(struct sched_req *r, int status, int64_t retry_after_us)
{
	struct sorigin *so = r->bh->so;
	struct throttle_pause *p = &so->pause;
	unsigned epoch = p->epoch, window = p->window;
	uint64_t now = now_us();

	if (throttle_response(p, &sched.rules, now, status, retry_after_us, r->epoch) ==
	    THROTTLE_NONE) {
		if (p->window != window)	/* a restart widened or ended */
			sorigin_wake(so);
		return 0;
	}
	if (p->epoch != epoch) {
		metrics.origin_pauses[status == 429 ? 0 : 1]++;
		log_info("origin %s: %d: paused for %.1f s", pool_origin_key(so->origin), status,
		    (double)(p->until - now) / 1e6);
	}
	if (!so->paused) {
		so->paused = 1;
		metrics.origins_paused++;
	}
	sorigin_arm(so, p->until);	/* its end is counted even if none waits */
	return 1;
}

int
sched_origin_info(const struct origin *o, struct sched_origin_info *info)
{
	const struct sorigin *so = pool_origin_data(o);
	const struct conf_rate *limit = so != NULL ? so->limit : sched_rate_of(o);

	memset(info, 0, sizeof(*info));
	if (limit != NULL) {
		info->rate = limit->rate;
		info->burst = limit->burst;
	}
	if (so == NULL)
		return -1;	/* forgotten: nothing held back, nothing queued */
	info->in_flight = so->running;
	info->queued = so->queued;
	if (throttle_paused(&so->pause, now_us())) {
		info->paused_until = so->pause.until;
		info->pause_status = so->pause.status;
		info->retry_after_us = so->pause.retry_after;
	}
	info->window = so->pause.window;
	return 0;
}

/* From the pool: o has an idle connection or one fewer open. */
static void
sched_origin_freed(struct origin *o)
{
	struct sorigin *so = pool_origin_data(o);
	struct bhost *bh;

	if (so == NULL)		/* no batch queues for it */
		return;
	while ((bh = TAILQ_FIRST(&so->waiters)) != NULL) {
		bhost_unlink(bh);
		bhost_make_ready(bh);
	}
}

/* From the pool: the global budget may have room. */
static void
sched_room_freed(void)
{
	sched_kick();
}

/* From the pool, after a reload: every bhost waiting for its origin's
 * limit looks again (a reload is rare; this walks every batch). */
static void
sched_limits_changed(void)
{
	struct sched_batch *sb;
	struct bhost *bh;

	TAILQ_FOREACH(sb, &sched.batches, link) {
		TAILQ_FOREACH(bh, &sb->hosts, all) {
			if (bh->where != BH_WAITING)
				continue;
			bhost_unlink(bh);
			bhost_make_ready(bh);
		}
	}
	sched_kick();
}

/* Parks bh until its origin (waiting) or the global budget (starving)
 * has room. */
static void
bhost_park(struct bhost *bh, enum bhost_where where)
{
	bhost_unlink(bh);
	bh->where = where;
	if (where == BH_WAITING)
		TAILQ_INSERT_TAIL(&bh->so->waiters, bh, link);
	else
		TAILQ_INSERT_TAIL(&sched.starving, bh, link);
}

static void
bhost_rate_timer(evutil_socket_t fd, short what, void *arg)
{
	struct bhost *bh = arg;

	(void)fd;
	(void)what;
	bhost_unlink(bh);
	bhost_make_ready(bh);
}

/* Parks bh, held back by a throttle: on its origin (woken by the origin's
 * timer or a restart's release), or, for its own bucket, until at. */
static void
bhost_hold(struct bhost *bh, enum bhost_where where, uint64_t at)
{
	uint64_t now = now_us(), in = at > now ? at - now : 0;
	struct timeval tv = { (time_t)(in / 1000000u), (suseconds_t)(in % 1000000u) };

	bhost_unlink(bh);
	bh->where = where;
	bh->held_since = now;
	if (where == BH_HELD) {
		TAILQ_INSERT_TAIL(&bh->so->held, bh, link);
		return;
	}
	if (bh->rtimer == NULL)
		bh->rtimer = evtimer_new(sched.base, bhost_rate_timer, bh);
	evtimer_add(bh->rtimer, &tv);
}

/* Whether the origin's throttle and the batch's rate let bh's head start
 * now; if not, bh is held until they may. Costs nothing for an origin with
 * no limit, no pause and no restart, and a batch without rate_per_host. */
static int
sched_throttled(struct bhost *bh)
{
	struct sorigin *so = bh->so;
	uint64_t now, at;

	if (!sorigin_throttles(so) && !throttle_bucket_on(&bh->bucket))
		return 0;
	now = now_us();
	if (throttle_paused(&so->pause, now)) {
		bhost_hold(bh, BH_HELD, 0);
		sorigin_arm(so, so->pause.until);
		return 1;
	}
	if (!throttle_window_allows(&so->pause, so->active)) {
		bhost_hold(bh, BH_HELD, 0);	/* a request settling wakes it */
		return 1;
	}
	if ((at = throttle_bucket_ready(&so->bucket)) > now) {
		throttle_bucket_refuse(&so->bucket);
		bhost_hold(bh, BH_HELD, 0);
		sorigin_arm(so, at);
		return 1;
	}
	if ((at = throttle_bucket_ready(&bh->bucket)) > now) {
		throttle_bucket_refuse(&bh->bucket);
		bhost_hold(bh, BH_RATED, at);
		return 1;
	}
	return 0;
}

/* bh's head starts: it takes its tokens and counts in a restart. */
static void
sched_throttle_take(struct bhost *bh, struct sched_req *r)
{
	struct sorigin *so = bh->so;
	uint64_t now;

	r->active = 1;
	r->epoch = so->pause.epoch;
	so->active++;
	if (!throttle_bucket_on(&so->bucket) && !throttle_bucket_on(&bh->bucket))
		return;
	now = now_us();
	throttle_bucket_take(&so->bucket, now);
	throttle_bucket_take(&bh->bucket, now);
}

/* May the head of bh go now, as far as its batch is concerned? */
static int
sched_batch_allows(const struct sched_batch *sb, const struct bhost *bh)
{
	if (!TAILQ_EMPTY(&bh->cont))
		return 1;
	if (sb->inflight >= sb->concurrency)
		return 0;
	/* A paused batch still sends the request its ordered output waits
	 * for, or order "input" could wait forever on a queued request. */
	return !sb->paused || bhost_fresh_head(bh) == sb->need_index;
}

/* Sends bh's head on c: a queued redirect or retry, else its next new
 * request, whose sched_req is made now. A request on a shared connection
 * holds no per-origin slot: per_host counts connections. */
static void
sched_dispatch(struct bhost *bh, struct conn *c, enum pool_rc how)
{
	struct sched_batch *sb = bh->sb;
	struct sched_req *r = TAILQ_FIRST(&bh->cont);

	if (r != NULL)
		sched_dequeue(r);
	else {
		struct fresh f = bhost_fresh_pop(bh);
		r = xcalloc(1, sizeof(*r));
		r->index = f.index;
		r->throttle_us = bhost_fresh_held_us(bh, &f);
		r->bh = bh;
		bh->running++;
		bh->so->running++;
		sb->inflight++;
		metrics.requests_in_flight++;
	}
	sched_throttle_take(bh, r);
	r->fresh = 0;
	if (how == POOL_SHARED)
		r->where = SR_SHARED;
	else {
		r->where = SR_RUNNING;
		bh->inflight++;
	}
	/* Rotate: the batch's next turn goes to another origin. */
	bhost_unlink(bh);
	bhost_make_ready(bh);
	sb->dispatch(sb->owner, r, c, how != POOL_NEW);
}

/* Whether bh may open another multiplexing connection: only while its
 * requests in flight are under the batch's fair share of its concurrency.
 * Otherwise the origin whose handshake ended first would fill one
 * connection, open a second, and take more than its share while the
 * others' handshakes end. Walks the batch's origins, but only when an
 * origin's shared connections are all full. */
static int
sched_fair_to_open(const struct sched_batch *sb, const struct bhost *bh)
{
	const struct bhost *h;
	unsigned busy = 0;

	TAILQ_FOREACH(h, &sb->hosts, all)
		busy += h->running > 0 || !bhost_empty(h);
	return bh->running < (sb->concurrency + busy - 1) / (busy ? busy : 1);
}

/* Dispatches at most one request of sb; returns whether it did. */
static int
sched_batch_one(struct sched_batch *sb)
{
	struct bhost *bh, *next;

	if (sb->ncontinuing == 0 && (sb->inflight >= sb->concurrency ||
	    (sb->paused && sb->need_index == SIZE_MAX)))
		return 0;
	for (bh = TAILQ_FIRST(&sb->ready); bh != NULL; bh = next) {
		struct sched_req *r = TAILQ_FIRST(&bh->cont);
		int fresh = r != NULL && r->fresh;
		enum pool_rc rc = POOL_OWN;
		struct conn *c;

		next = TAILQ_NEXT(bh, link);
		if (bhost_empty(bh)) {
			bhost_unlink(bh);
			continue;
		}
		if (!sched_batch_allows(sb, bh) || sched_throttled(bh))
			continue;
		/* A batch that multiplexes shares a connection first: per_host
		 * then bounds the origin's shared connections it may use. */
		if (sb->mux)
			rc = pool_take_shared(bh->so->origin, sb->gen, sb->per_host, fresh, &c);
		if (rc == POOL_FULL_SHARED)
			rc = sched_fair_to_open(sb, bh) ? POOL_OWN : POOL_FULL_ORIGIN;
		if (rc == POOL_OWN && bh->inflight >= sb->per_host) {
			bhost_unlink(bh);	/* its own request ending wakes it */
			continue;
		}
		if (rc == POOL_OWN)
			rc = pool_take(bh->so->origin, (fresh ? POOL_TAKE_FRESH : 0) |
			    (sb->mux ? POOL_TAKE_MUX : 0), sb->gen, &c);
		switch (rc) {
		case POOL_OWN:
		case POOL_FULL_SHARED:
		case POOL_FULL_ORIGIN:
			bhost_park(bh, BH_WAITING);
			continue;
		case POOL_FULL_GLOBAL:
			bhost_park(bh, BH_STARVING);
			continue;
		case POOL_REUSE:
		case POOL_SHARED:
		case POOL_NEW:
			break;
		}
		sched_dispatch(bh, c, rc);
		return 1;
	}
	return 0;
}

/* Dispatches per pump before the loop gets a turn. Opening a connection
 * costs a few system calls; a batch starting 80 of them used to keep the
 * first, already connected, from sending its request for a millisecond and
 * more. The rest goes on from a zero timer, which libevent runs after the
 * I/O that became ready meanwhile. */
#define SCHED_PUMP_BURST 16

static void
sched_pump(evutil_socket_t fd, short what, void *arg)
{
	static const struct timeval now = { 0, 0 };
	unsigned n = 0;

	(void)fd;
	(void)what;
	(void)arg;
	for (;;) {
		struct sched_batch *sb, *next;
		int progress = 0;

		/* One pass: each batch as it stood at the start gets one try.
		 * A batch that dispatches goes to the back, so the next free
		 * slot, here or in a later pump, is offered to the others first.
		 * Dispatching may finish requests and free batches' slots, but
		 * never frees a batch: that waits for a later loop turn. */
		struct sched_batch *last = TAILQ_LAST(&sched.batches, sched_batches);
		for (sb = TAILQ_FIRST(&sched.batches); sb != NULL; sb = next) {
			next = sb == last ? NULL : TAILQ_NEXT(sb, link);
			if (sched_batch_one(sb)) {
				progress = 1;
				TAILQ_REMOVE(&sched.batches, sb, link);
				TAILQ_INSERT_TAIL(&sched.batches, sb, link);
				if (++n == SCHED_PUMP_BURST) {
					event_add(sched.pump, &now);
					return;
				}
			}
		}
		if (progress)
			continue;
		/* Room in the budget and bhosts starved of it: wake the
		 * longest-waiting one and go round again. */
		struct bhost *bh = TAILQ_FIRST(&sched.starving);
		if (bh == NULL || !pool_has_room())
			break;
		bhost_unlink(bh);
		bhost_make_ready(bh);
	}
}
