/* sched.c: see sched.h. The pump runs from its own event, activated by every
 * change that could let a request go, so many changes in one loop turn cost
 * one pass and nothing is dispatched from inside another module's callback. */
#include <stdint.h>
#include <stdlib.h>
#include <sys/queue.h>

#include <event2/event.h>

#include "map.h"
#include "metrics.h"
#include "pool.h"
#include "sched.h"
#include "url.h"
#include "util.h"

/* The scheduler's side of an origin: the bhosts parked on it. Shared by the
 * batches that queue for it, hung on the pool's origin. */
struct sorigin {
	struct origin *origin;
	unsigned refs;			/* bhosts */
	TAILQ_HEAD(, bhost) waiters;	/* bhosts waiting for this origin's limit */
};

enum bhost_where {
	BH_NONE,
	BH_READY,	/* on sb->ready */
	BH_WAITING,	/* on so->waiters: the origin is at max_per_host */
	BH_STARVING,	/* on sched.starving: the global budget is used */
};

/* One batch's queue and slots for one origin. */
struct bhost {
	struct sorigin *so;
	struct sched_batch *sb;
	TAILQ_HEAD(, sched_req) cont;	/* redirects and retries: they go first */
	/* Requests not dispatched yet are only their indexes, in input order:
	 * a ring that grows by doubling, so a queued request costs 4 bytes and
	 * its request exists only from dispatch on. */
	uint32_t *fresh;
	size_t fhead, fcount, fcap;
	unsigned inflight;		/* connections of this batch to this origin */
	unsigned running;		/* its requests dispatched and not finished */
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
	TAILQ_ENTRY(sched_req) qlink;	/* bh->cont */
};

static struct {
	struct event *pump;
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
	sched.pump = event_new(base, -1, 0, sched_pump, NULL);
	TAILQ_INIT(&sched.batches);
	TAILQ_INIT(&sched.starving);
	pool_set_listener(&sched_pool_listener);
}

void
sched_shutdown(void)
{
	event_free(sched.pump);
	sched.pump = NULL;
}

static void
sched_kick(void)
{
	if (sched.pump != NULL)
		event_active(sched.pump, 0, 0);
}

struct sched_batch *
sched_batch_new(sched_dispatch_fn *dispatch, void *owner, unsigned concurrency,
    unsigned per_host, int mux)
{
	struct sched_batch *sb = xcalloc(1, sizeof(*sb));

	TAILQ_INIT(&sb->ready);
	TAILQ_INIT(&sb->hosts);
	sb->bymap = map_new();
	sb->dispatch = dispatch;
	sb->owner = owner;
	sb->concurrency = concurrency;
	sb->per_host = per_host;
	sb->gen = pool_batch_begin();
	sb->need_index = SIZE_MAX;
	sb->mux = mux;
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
	if (bh->where == BH_READY)
		TAILQ_REMOVE(&bh->sb->ready, bh, link);
	else if (bh->where == BH_WAITING)
		TAILQ_REMOVE(&bh->so->waiters, bh, link);
	else if (bh->where == BH_STARVING)
		TAILQ_REMOVE(&sched.starving, bh, link);
	bh->where = BH_NONE;
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

static struct sorigin *
sorigin_get(const struct url *u)
{
	struct origin *o = pool_origin_get(u);
	struct sorigin *so = pool_origin_data(o);

	if (so == NULL) {
		so = xcalloc(1, sizeof(*so));
		so->origin = o;
		TAILQ_INIT(&so->waiters);
		pool_origin_set_data(o, so);
	} else
		pool_origin_put(o);	/* so holds the one reference */
	so->refs++;
	return so;
}

static void
sorigin_put(struct sorigin *so)
{
	if (--so->refs > 0)
		return;
	pool_origin_set_data(so->origin, NULL);
	pool_origin_put(so->origin);
	free(so);
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
		sorigin_put(bh->so);
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
		uint32_t *ring = xmalloc(cap * sizeof(*ring));
		/* Unwrap into the new ring, oldest first. */
		for (size_t i = 0; i < bh->fcount; i++)
			ring[i] = bh->fresh[(bh->fhead + i) % bh->fcap];
		free(bh->fresh);
		bh->fresh = ring;
		bh->fcap = cap;
		bh->fhead = 0;
	}
	bh->fresh[(bh->fhead + bh->fcount++) % bh->fcap] = (uint32_t)index;
	metrics.requests_queued++;
	bhost_make_ready(bh);
}

static size_t
bhost_fresh_head(const struct bhost *bh)
{
	return bh->fresh[bh->fhead];
}

static size_t
bhost_fresh_pop(struct bhost *bh)
{
	size_t index = bh->fresh[bh->fhead];

	bh->fhead = (bh->fhead + 1) % bh->fcap;
	bh->fcount--;
	metrics.requests_queued--;
	return index;
}

int
sched_pop_new(struct sched_batch *sb, size_t *index)
{
	struct bhost *bh;

	TAILQ_FOREACH(bh, &sb->hosts, all) {
		if (bh->fcount > 0) {
			*index = bhost_fresh_pop(bh);
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

void
sched_release(struct sched_req *r)
{
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
	bh->running++;
	r->bh = bh;
	r->fresh = fresh;
	r->where = SR_QUEUED;
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
}

void
sched_finished(struct sched_req *r)
{
	struct sched_batch *sb = r->bh->sb;

	sched_dequeue(r);
	sched_release(r);
	r->bh->running--;
	sb->inflight--;
	metrics.requests_in_flight--;
	free(r);
	sched_kick();
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
		r = xcalloc(1, sizeof(*r));
		r->index = bhost_fresh_pop(bh);
		r->bh = bh;
		bh->running++;
		sb->inflight++;
		metrics.requests_in_flight++;
	}
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
		if (!sched_batch_allows(sb, bh))
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
