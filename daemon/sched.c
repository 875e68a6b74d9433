/* sched.c: see sched.h. The pump runs from its own event, activated by every
 * change that could let a request go, so many changes in one loop turn cost
 * one pass and nothing is dispatched from inside another module's callback. */
#include <stdlib.h>

#include <event2/event.h>

#include "map.h"
#include "metrics.h"
#include "pool.h"
#include "sched.h"
#include "batch.h"
#include "upstream.h"

static struct {
	struct event *pump;
	TAILQ_HEAD(sched_batches, sched_batch) batches;
	TAILQ_HEAD(, origin) starving;	/* origins parked on the global budget */
} sched;

static void sched_pump(evutil_socket_t fd, short what, void *arg);

void
sched_init(struct event_base *base)
{
	sched.pump = event_new(base, -1, 0, sched_pump, NULL);
	TAILQ_INIT(&sched.batches);
	TAILQ_INIT(&sched.starving);
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

void
sched_batch_init(struct sched_batch *sb, struct batch *b, unsigned concurrency,
    unsigned per_host)
{
	TAILQ_INIT(&sb->ready);
	TAILQ_INIT(&sb->hosts);
	sb->bymap = map_new();
	sb->concurrency = concurrency;
	sb->per_host = per_host;
	sb->gen = pool_batch_begin();
	sb->need_index = SIZE_MAX;
	sb->batch = b;
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
		TAILQ_REMOVE(&bh->origin->waiters, bh, link);
	bh->where = BH_NONE;
}

static int
bhost_empty(const struct bhost *bh)
{
	return TAILQ_EMPTY(&bh->cont) && bh->fcount == 0;
}

static void
bhost_make_ready(struct bhost *bh)
{
	if (bh->where == BH_READY || bhost_empty(bh) || bh->inflight >= bh->sb->per_host)
		return;
	bhost_unlink(bh);
	bh->where = BH_READY;
	TAILQ_INSERT_TAIL(&bh->sb->ready, bh, link);
	sched_kick();
}

void
sched_batch_fini(struct sched_batch *sb)
{
	struct bhost *bh;

	if (sb->active)
		TAILQ_REMOVE(&sched.batches, sb, link);
	sb->active = 0;
	pool_batch_end(sb->gen);
	while ((bh = TAILQ_FIRST(&sb->hosts)) != NULL) {
		struct origin *o = bh->origin;

		TAILQ_REMOVE(&sb->hosts, bh, all);
		bhost_unlink(bh);
		if (o->starving && TAILQ_EMPTY(&o->waiters)) {
			o->starving = 0;	/* nobody waits for it: it may be freed now */
			TAILQ_REMOVE(&sched.starving, o, starve_link);
		}
		pool_origin_put(o);
		free(bh->fresh);
		free(bh);
	}
	map_free(sb->bymap);
	sb->bymap = NULL;
}

static struct bhost *
bhost_get(struct sched_batch *sb, const struct url *u)
{
	struct bhost *bh = map_get(sb->bymap, u->origin);

	if (bh == NULL) {
		bh = xcalloc(1, sizeof(*bh));
		bh->origin = pool_origin_get(u);
		bh->sb = sb;
		TAILQ_INIT(&bh->cont);
		TAILQ_INSERT_TAIL(&sb->hosts, bh, all);
		map_put(sb->bymap, bh->origin->key, bh);
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
sched_enqueue(struct sched_batch *sb, struct ureq *r)
{
	struct bhost *bh = bhost_get(sb, &r->url);

	r->bh = bh;
	r->continuing = 1;
	r->state = UREQ_QUEUED;
	r->queued = 1;
	sb->ncontinuing++;
	TAILQ_INSERT_TAIL(&bh->cont, r, qlink);
	bhost_make_ready(bh);
	/* Even when bh was ready already: it may have been passed over (its
	 * batch at its concurrency), and a continuing request may go anyway. */
	sched_kick();
}

void
sched_remove(struct ureq *r)
{
	if (!r->queued)
		return;
	TAILQ_REMOVE(&r->bh->cont, r, qlink);
	r->queued = 0;
	r->bh->sb->ncontinuing--;
}

void
sched_release(struct ureq *r)
{
	if (!r->holds_slot)
		return;
	r->holds_slot = 0;
	r->bh->inflight--;
	bhost_make_ready(r->bh);
}

void
sched_finished(struct ureq *r)
{
	struct sched_batch *sb = r->bh->sb;

	sched_release(r);
	if (r->t_dispatch != 0) {
		/* It was dispatched: its place in the batch frees. */
		sb->inflight--;
		metrics.requests_in_flight--;
	}
	sched_kick();
}

void
sched_batch_changed(struct sched_batch *sb)
{
	(void)sb;
	sched_kick();
}

void
sched_origin_freed(struct origin *o)
{
	struct bhost *bh;

	while ((bh = TAILQ_FIRST(&o->waiters)) != NULL) {
		bhost_unlink(bh);
		bhost_make_ready(bh);
	}
	if (o->starving) {
		o->starving = 0;
		TAILQ_REMOVE(&sched.starving, o, starve_link);
	}
}

void
sched_slot_freed(void)
{
	sched_kick();
}

/* Parks bh on its origin until the origin (or, when starving, the global
 * budget) frees. */
static void
bhost_park(struct bhost *bh, int starving)
{
	struct origin *o = bh->origin;

	bhost_unlink(bh);
	bh->where = BH_WAITING;
	TAILQ_INSERT_TAIL(&o->waiters, bh, link);
	if (starving && !o->starving) {
		o->starving = 1;
		TAILQ_INSERT_TAIL(&sched.starving, o, starve_link);
	}
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
 * request, whose ureq the batch makes now. */
static void
sched_dispatch(struct bhost *bh, struct conn *c, int reused)
{
	struct sched_batch *sb = bh->sb;
	struct ureq *r = TAILQ_FIRST(&bh->cont);

	if (r != NULL)
		sched_remove(r);
	else {
		r = batch_materialize(sb->batch, bhost_fresh_pop(bh));
		r->bh = bh;
		sb->inflight++;
		metrics.requests_in_flight++;
	}
	r->continuing = 0;
	r->holds_slot = 1;
	bh->inflight++;
	/* Rotate: the batch's next turn goes to another origin. */
	bhost_unlink(bh);
	bhost_make_ready(bh);
	upstream_start(r, c, reused);
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
		struct ureq *r = TAILQ_FIRST(&bh->cont);
		struct conn *c;

		next = TAILQ_NEXT(bh, link);
		if (bhost_empty(bh) || bh->inflight >= sb->per_host) {
			bhost_unlink(bh);
			continue;
		}
		if (!sched_batch_allows(sb, bh))
			continue;
		switch (pool_take(bh->origin, r != NULL && r->want_fresh, sb->gen, &c)) {
		case POOL_FULL_ORIGIN:
			bhost_park(bh, 0);
			continue;
		case POOL_FULL_GLOBAL:
			bhost_park(bh, 1);
			continue;
		case POOL_REUSE:
			sched_dispatch(bh, c, 1);
			return 1;
		case POOL_NEW:
			sched_dispatch(bh, c, 0);
			return 1;
		}
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
		 * slot, here or in a later pump, is offered to the others first. */
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
		/* Room in the budget and origins starved of it: wake the
		 * longest-waiting one and go round again. */
		struct origin *o = TAILQ_FIRST(&sched.starving);
		if (o == NULL || !pool_has_room())
			break;
		sched_origin_freed(o);
	}
}
