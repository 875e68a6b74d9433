/* test_sched.c: the scheduler with the real pool below it, on a real event
 * base. The batch above is a fake dispatch callback that records every
 * dispatch and counts what is in flight; each test then decides, as
 * upstream.c and batch.c would, what happens to a dispatched request: its
 * connection released idle or closed, the request finished or requeued.
 * Covered: the index ring, batch and per-origin limits, turn-taking between
 * batches and between a batch's origins, the pool's limits parking and
 * waking requests without polling, output pause, requeue (fresh, cancelled
 * while queued), generations, cancel and free. Then the throttle, on real
 * time: a batch's rate_per_host, a configured rate_limit shared fairly by
 * batches, a 429's pause for every batch and the slow restart after it,
 * the throttled time a request reports, /v1/origins' view, a reload, and
 * no polling while requests are held. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/bufferevent.h>
#include <event2/event.h>

#include "conf.h"
#include "log.h"
#include "metrics.h"
#include "pool.h"
#include "sched.h"
#include "url.h"
#include "util.h"
#include "unit.h"

#define NINDEX 6000	/* request indexes a fake batch can have */
#define NREC 12000	/* dispatches a test can record */

static struct event_base *base;
static struct url urls[3];	/* origins 'a', 'b' and 'c' */

/* One fake batch: which origin each index was queued for, and counts of
 * its requests kept as the scheduler's contract says they should be. */
struct fake {
	struct sched_batch *sb;
	char org[NINDEX];	/* 'a'..'c', 0: not queued */
	unsigned running;	/* dispatched, not finished: against concurrency */
	unsigned on[3];		/* holding a slot of each origin: against per_host */
	unsigned max_running;
	unsigned max_on;
	int at_once;		/* finish each request as it is dispatched */
};

/* One dispatch as the fake saw it. */
struct rec {
	struct fake *f;
	struct sched_req *r;
	struct conn *c;
	size_t index;
	char org;
	int reused;
	int again;		/* dispatched before: a requeued request */
	uint64_t t;		/* now_us() at dispatch */
	uint64_t throttled;	/* sched_req_throttled_us then */
};

static struct rec recs[NREC];
static size_t nrec;
static unsigned nbad;	/* dispatches that broke the callback's contract */
static int peers[64];	/* far ends of the connections given transports */
static size_t npeers;

static const struct url *
url_of(char org)
{
	return &urls[org - 'a'];
}

/* Gives c a transport, so that it can go back to the pool idle. */
static void
attach(struct conn *c)
{
	int sv[2];

	if (npeers == sizeof(peers) / sizeof(peers[0]) ||
	    socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
		abort();
	evutil_make_socket_nonblocking(sv[0]);
	evutil_make_socket_nonblocking(sv[1]);
	pool_conn_set_bev(c, bufferevent_socket_new(base, sv[0], BEV_OPT_CLOSE_ON_FREE));
	peers[npeers++] = sv[1];
}

enum drop { DROP_CLOSE, DROP_IDLE };

/* Gives d's connection back to the pool and tells nobody else: the
 * scheduler can hear of it only from the pool. */
static void
pool_drop(struct rec *d, enum drop how)
{
	if (d->c == NULL)
		return;
	if (how == DROP_IDLE) {
		if (pool_conn_bev(d->c) == NULL)
			attach(d->c);
		pool_release(d->c);
	} else
		pool_close(d->c);
	d->c = NULL;
}

/* Lets go of d's connection as upstream.c does: to the pool (unless done
 * already), then the request's per-origin slot. */
static void
drop_conn(struct rec *d, enum drop how)
{
	pool_drop(d, how);
	d->f->on[d->org - 'a']--;
	sched_release(d->r);
}

static void
finish(struct rec *d, enum drop how)
{
	drop_conn(d, how);
	d->f->running--;
	sched_finished(d->r);
}

/* A redirect (to org) or a retry (org the same). */
static void
requeue(struct rec *d, enum drop how, char org, int fresh)
{
	drop_conn(d, how);
	d->f->org[d->index] = org;
	sched_requeue(d->r, url_of(org), fresh);
}

static void
fake_dispatch(void *owner, struct sched_req *r, struct conn *c, int reused)
{
	struct fake *f = owner;
	struct rec *d;

	if (nrec == NREC)
		abort();
	d = &recs[nrec++];
	d->f = f;
	d->r = r;
	d->c = c;
	d->reused = reused;
	d->index = sched_req_index(r);
	d->org = f->org[d->index];
	d->again = sched_req_data(r) != NULL;
	d->t = now_us();
	d->throttled = sched_req_throttled_us(r);
	if (d->org == 0) {
		fprintf(stderr, "index %zu was never queued\n", d->index);
		abort();
	}
	/* Checked once per test, in teardown: dispatches number thousands. */
	if (c == NULL || (d->again && sched_req_data(r) != f))
		nbad++;	/* no connection, or the owner's data lost */
	if (!d->again) {
		sched_req_set_data(r, f);
		f->running++;
	}
	f->on[d->org - 'a']++;
	if (f->running > f->max_running)
		f->max_running = f->running;
	if (f->on[d->org - 'a'] > f->max_on)
		f->max_on = f->on[d->org - 'a'];
	if (f->at_once)
		finish(d, DROP_CLOSE);
}

/* A batch with rate_per_host rate (0: none) and rate_burst burst. */
static struct fake *
fake_new_rate(unsigned concurrency, unsigned per_host, double rate, unsigned burst)
{
	struct fake *f = calloc(1, sizeof(*f));

	if (f == NULL)
		abort();
	f->sb = sched_batch_new(fake_dispatch, f, &(struct sched_limits){
		.concurrency = concurrency, .per_host = per_host, .rate = rate, .burst = burst });
	return f;
}

static struct fake *
fake_new(unsigned concurrency, unsigned per_host)
{
	return fake_new_rate(concurrency, per_host, 0, 1);
}

static void
fake_free(struct fake *f)
{
	sched_batch_free(f->sb);
	free(f);
}

static void
enq(struct fake *f, char org, size_t index)
{
	f->org[index] = org;
	sched_enqueue_new(f->sb, url_of(org), index);
}

/* Runs the loop without blocking until three turns in a row dispatch
 * nothing (bounded). */
static void
settle(void)
{
	int quiet = 0;

	for (int i = 0; i < 10000 && quiet < 3; i++) {
		size_t before = nrec;

		event_base_loop(base, EVLOOP_NONBLOCK);
		quiet = nrec == before ? quiet + 1 : 0;
	}
}

/* Nothing is pending or active in the loop: a parked request is woken by
 * the pool's callbacks, not by a timer that looks again. Only meaningful
 * while no connection has a transport. */
static int
loop_idle(void)
{
	return event_base_get_num_events(base, EVENT_BASE_COUNT_ACTIVE |
	    EVENT_BASE_COUNT_VIRTUAL | EVENT_BASE_COUNT_ADDED) == 0;
}

static void
setup(unsigned max_conns, unsigned max_per_host)
{
	base = event_base_new();
	pool_init(base, max_conns, max_per_host, 60);
	sched_init(base);
	nrec = 0;
	npeers = 0;
	nbad = 0;
}

/* Every test finishes its requests and frees its batches first. */
static void
teardown(void)
{
	CHECK(nbad == 0);
	sched_shutdown();
	pool_shutdown();
	CHECK(metrics.conns_open == 0);
	CHECK(metrics.requests_in_flight == 0);
	CHECK(metrics.requests_queued == 0);
	for (size_t i = 0; i < npeers; i++)
		close(peers[i]);
	event_base_free(base);
}

/* Thousands of indexes for two origins, queued faster than they go, so
 * each ring grows many times with its head in the middle: every index is
 * dispatched once, in input order for its origin. */
static void
test_ring_growth(void)
{
	const size_t n = 5000;
	struct fake *f;
	size_t next = 0, last[2] = { 0, 0 }, count[2] = { 0, 0 };
	int order_ok = 1;

	setup(100, 100);
	f = fake_new(4, 4);
	sched_batch_start(f->sb);
	while (next < n) {
		size_t mark = nrec;

		/* Ten in, two out for each origin: both queues grow a round. */
		for (int i = 0; i < 10 && next < n; i++, next++)
			enq(f, next % 3 == 0 ? 'b' : 'a', next);
		settle();
		for (size_t i = mark; i < nrec; i++)
			finish(&recs[i], DROP_CLOSE);
	}
	CHECK(metrics.requests_queued > 1000);	/* the rings really were deep */
	f->at_once = 1;
	settle();
	CHECK(nrec == n);
	for (size_t i = 0; i < nrec; i++) {
		int k = recs[i].org == 'b';

		/* Each origin's indexes, strictly increasing from its first. */
		if (count[k]++ > 0 && recs[i].index <= last[k])
			order_ok = 0;
		if (recs[i].org != (recs[i].index % 3 == 0 ? 'b' : 'a'))
			order_ok = 0;
		last[k] = recs[i].index;
	}
	CHECK(order_ok);
	CHECK(count[0] == n - (n + 2) / 3 && count[1] == (n + 2) / 3);	/* so each exactly once */
	CHECK(f->max_running == 4);
	fake_free(f);
	teardown();
}

/* Concurrency 3 and per_host 2, most requests for one origin: neither is
 * ever exceeded, and each finish lets at most one more go. */
static void
test_limits(void)
{
	struct fake *f;
	size_t done = 0;

	setup(100, 100);
	f = fake_new(3, 2);
	for (size_t i = 0; i < 12; i++)
		enq(f, i < 9 ? 'a' : 'b', i);
	sched_batch_start(f->sb);
	settle();
	CHECK(nrec == 3 && f->running == 3);
	while (done < nrec) {
		size_t before = nrec;

		finish(&recs[done++], DROP_CLOSE);
		settle();
		CHECK(nrec <= before + 1);
		CHECK(f->running <= 3 && f->on[0] <= 2 && f->on[1] <= 2);
	}
	CHECK(nrec == 12);	/* and nothing stalled */
	CHECK(f->max_running == 3 && f->max_on == 2);
	fake_free(f);
	teardown();
}

/* per_host binds alone when concurrency is ample. */
static void
test_per_host_limit(void)
{
	struct fake *f;

	setup(100, 100);
	f = fake_new(10, 2);
	for (size_t i = 0; i < 5; i++)
		enq(f, 'a', i);
	sched_batch_start(f->sb);
	settle();
	CHECK(nrec == 2 && recs[0].index == 0 && recs[1].index == 1);
	finish(&recs[1], DROP_CLOSE);
	settle();
	CHECK(nrec == 3 && recs[2].index == 2);
	finish(&recs[0], DROP_CLOSE);
	finish(&recs[2], DROP_CLOSE);
	settle();
	CHECK(nrec == 5);
	finish(&recs[3], DROP_CLOSE);
	finish(&recs[4], DROP_CLOSE);
	fake_free(f);
	teardown();
}

/* A request that released its connection but is not finished (its
 * response still being handled) frees its origin slot, not its place in
 * the batch's concurrency. */
static void
test_release_frees_origin_slot_only(void)
{
	struct fake *f;

	setup(100, 100);
	f = fake_new(2, 1);
	for (size_t i = 0; i < 3; i++)
		enq(f, 'a', i);
	sched_batch_start(f->sb);
	settle();
	CHECK(nrec == 1);
	drop_conn(&recs[0], DROP_CLOSE);
	settle();
	CHECK(nrec == 2 && recs[1].index == 1);
	drop_conn(&recs[1], DROP_CLOSE);
	settle();
	CHECK(nrec == 2);	/* two unfinished: the batch is at 2 */
	f->running--;
	sched_finished(recs[0].r);
	settle();
	CHECK(nrec == 3 && recs[2].index == 2);
	f->running--;
	sched_finished(recs[1].r);
	finish(&recs[2], DROP_CLOSE);
	fake_free(f);
	teardown();
}

/* Finishes each request as soon as it is dispatched, one at a time, and
 * returns whether the batches alternated for the first n dispatches. */
static int
alternates(struct fake *x, struct fake *y, size_t n)
{
	int ok = 1;

	settle();
	for (size_t i = 0; i < n; i++) {
		if (nrec != i + 1)
			return 0;
		if (recs[i].f != (i % 2 == 0 ? x : y))
			ok = 0;
		finish(&recs[i], DROP_CLOSE);
		settle();
	}
	return ok;
}

/* One connection for everyone: two batches' requests to one origin take
 * it in turns, whichever queued more. */
static void
test_batches_take_turns_global(void)
{
	struct fake *x, *y;

	setup(1, 8);
	x = fake_new(8, 8);
	y = fake_new(8, 8);
	for (size_t i = 0; i < 6; i++)
		enq(x, 'a', i);
	for (size_t i = 0; i < 3; i++)
		enq(y, 'a', i);
	sched_batch_start(x->sb);
	sched_batch_start(y->sb);
	CHECK(alternates(x, y, 6));
	for (size_t i = 6; i < 9; i++) {	/* then x's last three */
		CHECK(nrec == i + 1 && recs[i].f == x);
		finish(&recs[i], DROP_CLOSE);
		settle();
	}
	CHECK(nrec == 9);
	fake_free(x);
	fake_free(y);
	teardown();
}

/* The same with the origin's limit as the scarce slot. */
static void
test_batches_take_turns_per_host(void)
{
	struct fake *x, *y;

	setup(100, 1);
	x = fake_new(8, 8);
	y = fake_new(8, 8);
	for (size_t i = 0; i < 4; i++) {
		enq(x, 'a', i);
		enq(y, 'a', i);
	}
	sched_batch_start(x->sb);
	sched_batch_start(y->sb);
	CHECK(alternates(x, y, 8));
	fake_free(x);
	fake_free(y);
	teardown();
}

/* With room to spare the batches still alternate, one dispatch each. */
static void
test_batches_take_turns_plenty(void)
{
	struct fake *x, *y;

	setup(100, 100);
	x = fake_new(3, 8);
	y = fake_new(3, 8);
	for (size_t i = 0; i < 3; i++) {
		enq(x, 'a', i);
		enq(y, 'b', i);
	}
	sched_batch_start(x->sb);
	sched_batch_start(y->sb);
	settle();
	CHECK(nrec == 6);
	for (size_t i = 0; i < nrec; i++)
		CHECK(recs[i].f == (i % 2 == 0 ? x : y));
	for (size_t i = 0; i < nrec; i++)
		finish(&recs[i], DROP_CLOSE);
	fake_free(x);
	fake_free(y);
	teardown();
}

/* Within a batch the origins take turns, whatever the input order. */
static void
test_origins_take_turns(void)
{
	static const char want[] = "abababab";
	struct fake *f;
	char got[sizeof(want)] = "";

	setup(100, 100);
	f = fake_new(8, 8);
	for (size_t i = 0; i < 8; i++)
		enq(f, i < 4 ? 'a' : 'b', i);
	sched_batch_start(f->sb);
	settle();
	CHECK(nrec == 8);
	for (size_t i = 0; i < nrec && i < 8; i++)
		got[i] = recs[i].org;
	CHECK_STR(got, want);
	CHECK(recs[0].index == 0 && recs[1].index == 4 && recs[6].index == 3 &&
	    recs[7].index == 7);
	for (size_t i = 0; i < nrec; i++)
		finish(&recs[i], DROP_CLOSE);
	fake_free(f);
	teardown();
}

/* At max_per_host the rest park; a connection of the origin closing, or
 * going idle, wakes them (no scheduler call is made), and nothing in the
 * loop looks again in between. */
static void
test_parks_on_max_per_host(void)
{
	struct fake *f;
	struct conn *c;

	setup(100, 1);
	f = fake_new(8, 8);
	for (size_t i = 0; i < 3; i++)
		enq(f, 'a', i);
	sched_batch_start(f->sb);
	settle();
	CHECK(nrec == 1);
	CHECK(loop_idle());

	pool_drop(&recs[0], DROP_CLOSE);
	settle();
	CHECK(nrec == 2 && recs[1].index == 1 && !recs[1].reused);

	c = recs[1].c;
	pool_drop(&recs[1], DROP_IDLE);
	settle();
	CHECK(nrec == 3 && recs[2].index == 2 && recs[2].reused && recs[2].c == c);
	for (size_t i = 0; i < 3; i++)
		finish(&recs[i], DROP_CLOSE);
	fake_free(f);
	teardown();
}

/* With the global budget used, requests park; a connection closing lets
 * one go, and so does one going idle: it is closed for another origin. */
static void
test_parks_on_global_budget(void)
{
	struct fake *f;
	size_t mark;

	setup(2, 8);
	f = fake_new(8, 8);
	enq(f, 'a', 0);
	enq(f, 'b', 1);
	enq(f, 'c', 2);
	enq(f, 'c', 3);
	sched_batch_start(f->sb);
	settle();
	CHECK(nrec == 2 && recs[0].org == 'a' && recs[1].org == 'b');
	CHECK(loop_idle());

	pool_drop(&recs[0], DROP_CLOSE);
	settle();
	CHECK(nrec == 3 && recs[2].org == 'c' && !recs[2].reused);

	mark = nrec;
	pool_drop(&recs[1], DROP_IDLE);	/* b's, idle: worth less than c's request */
	settle();
	CHECK(nrec == mark + 1 && recs[3].org == 'c' && recs[3].index == 3);
	CHECK(!recs[3].reused);
	CHECK(metrics.conns_open == 2 && metrics.conns_idle == 0);
	for (size_t i = 0; i < 4; i++)
		finish(&recs[i], DROP_CLOSE);
	fake_free(f);
	teardown();
}

/* Paused output: nothing new goes, a continuing request does, the index
 * the output waits for does; unpausing lets the rest go. */
static void
test_pause(void)
{
	struct fake *f;

	setup(100, 100);
	f = fake_new(8, 8);
	for (size_t i = 0; i < 6; i++)
		enq(f, i < 3 ? 'a' : 'b', i);
	sched_batch_start(f->sb);
	sched_set_output(f->sb, 1, 0);
	settle();
	CHECK(nrec == 1 && recs[0].index == 0);

	sched_set_output(f->sb, 1, SIZE_MAX);
	requeue(&recs[0], DROP_CLOSE, 'a', 0);
	settle();
	CHECK(nrec == 2 && recs[1].index == 0 && recs[1].again);

	sched_set_output(f->sb, 1, 3);	/* b's head, not a's */
	settle();
	CHECK(nrec == 3 && recs[2].index == 3);
	sched_set_output(f->sb, 1, 3);	/* gone already: nothing else may go */
	settle();
	CHECK(nrec == 3);

	sched_set_output(f->sb, 0, SIZE_MAX);
	settle();
	CHECK(nrec == 7);	/* 1, 2, 4 and 5 */
	for (size_t i = 1; i < nrec; i++)
		finish(&recs[i], DROP_CLOSE);
	fake_free(f);
	teardown();
}

/* A retry goes before the origin's new requests, and at the batch's
 * concurrency: it holds its place already and is not counted again. */
static void
test_requeue_goes_first(void)
{
	struct fake *f;

	setup(100, 100);
	f = fake_new(1, 1);
	for (size_t i = 0; i < 3; i++)
		enq(f, 'a', i);
	sched_batch_start(f->sb);
	settle();
	CHECK(nrec == 1);
	requeue(&recs[0], DROP_CLOSE, 'a', 0);
	settle();
	CHECK(nrec == 2 && recs[1].index == 0 && recs[1].again && recs[1].r == recs[0].r);
	requeue(&recs[1], DROP_CLOSE, 'b', 0);	/* a redirect elsewhere */
	settle();
	CHECK(nrec == 3 && recs[2].index == 0 && recs[2].org == 'b');
	finish(&recs[2], DROP_CLOSE);
	settle();
	CHECK(nrec == 4 && recs[3].index == 1 && !recs[3].again);
	finish(&recs[3], DROP_CLOSE);
	settle();
	CHECK(nrec == 5 && recs[4].index == 2);
	finish(&recs[4], DROP_CLOSE);
	CHECK(f->max_running == 1);
	fake_free(f);
	teardown();
}

/* A retry with fresh=1 opens a new connection though the one it left is
 * idle; the idle one serves the next request; without fresh it is reused. */
static void
test_requeue_fresh(void)
{
	struct fake *f;
	struct conn *c;

	setup(100, 100);
	f = fake_new(1, 8);
	enq(f, 'a', 0);
	enq(f, 'a', 1);
	sched_batch_start(f->sb);
	settle();
	CHECK(nrec == 1);
	c = recs[0].c;
	requeue(&recs[0], DROP_IDLE, 'a', 0);
	settle();
	CHECK(nrec == 2 && recs[1].reused && recs[1].c == c);
	requeue(&recs[1], DROP_IDLE, 'a', 1);
	settle();
	CHECK(nrec == 3 && recs[2].index == 0 && !recs[2].reused && recs[2].c != c);
	CHECK(metrics.conns_idle == 1);
	finish(&recs[2], DROP_CLOSE);
	settle();
	CHECK(nrec == 4 && recs[3].index == 1 && recs[3].reused && recs[3].c == c);
	finish(&recs[3], DROP_CLOSE);
	fake_free(f);
	teardown();
}

/* A retry cancelled while it waits (its origin full) is taken off its
 * queue: it never goes, and the batch's other requests still do. */
static void
test_finish_while_requeued(void)
{
	struct fake *f, *z;

	setup(100, 1);
	z = fake_new(8, 8);
	f = fake_new(8, 8);
	enq(f, 'a', 0);
	enq(f, 'b', 1);
	sched_batch_start(f->sb);
	settle();
	CHECK(nrec == 2 && recs[0].index == 0);
	enq(z, 'a', 0);
	sched_batch_start(z->sb);
	pool_drop(&recs[0], DROP_CLOSE);	/* z takes a's only slot */
	settle();
	CHECK(nrec == 3 && recs[2].f == z);
	requeue(&recs[0], DROP_CLOSE, 'a', 0);
	settle();
	CHECK(nrec == 3);	/* parked on a */
	f->running--;
	sched_finished(recs[0].r);	/* cancelled */
	finish(&recs[2], DROP_CLOSE);
	settle();
	CHECK(nrec == 3);
	enq(f, 'a', 2);
	settle();
	CHECK(nrec == 4 && recs[3].index == 2 && !recs[3].again);
	finish(&recs[1], DROP_CLOSE);
	finish(&recs[3], DROP_CLOSE);
	fake_free(f);
	fake_free(z);
	teardown();
}

/* A batch begun before a reload reuses the connections of its generation;
 * one begun after opens its own. */
static void
test_batch_generation(void)
{
	struct fake *old, *cur;
	struct conn *c;

	setup(100, 100);
	old = fake_new(8, 8);
	enq(old, 'a', 0);
	sched_batch_start(old->sb);
	settle();
	CHECK(nrec == 1);
	c = recs[0].c;
	finish(&recs[0], DROP_IDLE);
	pool_reload(100, 100, 60);
	cur = fake_new(8, 8);
	enq(cur, 'a', 0);
	sched_batch_start(cur->sb);
	settle();
	CHECK(nrec == 2 && recs[1].f == cur && !recs[1].reused && recs[1].c != c);
	enq(old, 'a', 1);
	settle();
	CHECK(nrec == 3 && recs[2].f == old && recs[2].reused && recs[2].c == c);
	finish(&recs[1], DROP_CLOSE);
	finish(&recs[2], DROP_CLOSE);
	fake_free(old);
	fake_free(cur);
	teardown();
}

/* Cancel: the queued indexes come back off the queues, each once, and
 * the batch is freed with nothing left behind (its origins' scheduler
 * state included; ASan sees the memory). */
static void
test_pop_new_and_free(void)
{
	struct fake *f;
	struct origin *o;
	size_t index, got = 0;
	unsigned seen = 0;

	setup(100, 100);
	f = fake_new(2, 8);
	for (size_t i = 0; i < 10; i++)
		enq(f, i % 2 ? 'b' : 'a', i);
	sched_batch_start(f->sb);
	settle();
	CHECK(nrec == 2 && recs[0].index == 0 && recs[1].index == 1);
	while (sched_pop_new(f->sb, &index, NULL)) {
		CHECK(index >= 2 && index < 10 && !(seen & 1u << index));
		seen |= 1u << index;
		got++;
	}
	CHECK(got == 8);
	CHECK(sched_pop_new(f->sb, &index, NULL) == 0);
	CHECK(metrics.requests_queued == 0);
	finish(&recs[0], DROP_IDLE);
	finish(&recs[1], DROP_CLOSE);
	settle();
	CHECK(nrec == 2);
	fake_free(f);

	o = pool_origin_get(url_of('a'));	/* kept by its idle connection */
	CHECK(pool_origin_data(o) == NULL);
	pool_origin_put(o);
	teardown();
}

/* Batches cancelled and freed while parked on the global budget: one
 * beside another batch waiting for the same origin, which is still woken;
 * one alone on its origin, whose scheduler state goes with it. The pump
 * must touch neither afterwards (ASan would see it). */
static void
test_free_while_parked(void)
{
	struct fake *x, *y, *z, *v;
	size_t index;

	setup(1, 8);
	x = fake_new(8, 8);
	y = fake_new(8, 8);
	z = fake_new(8, 8);
	v = fake_new(8, 8);
	enq(x, 'a', 0);
	sched_batch_start(x->sb);
	settle();
	enq(y, 'b', 0);
	enq(z, 'b', 0);
	enq(v, 'c', 0);
	sched_batch_start(y->sb);
	sched_batch_start(z->sb);
	sched_batch_start(v->sb);
	settle();
	CHECK(nrec == 1);
	CHECK(sched_pop_new(y->sb, &index, NULL) && index == 0);
	CHECK(sched_pop_new(v->sb, &index, NULL) && index == 0);
	fake_free(y);
	fake_free(v);
	finish(&recs[0], DROP_CLOSE);
	settle();
	CHECK(nrec == 2 && recs[1].f == z);
	finish(&recs[1], DROP_CLOSE);	/* room again: nobody is waiting */
	settle();
	CHECK(nrec == 2);
	fake_free(x);
	fake_free(z);
	teardown();
}

/* A big batch to one origin and a small one to another, the global budget
 * the scarce slot: the small one gets the next freed connection, not the
 * one after the big batch's queue is empty (doc/api.md: "a big batch does
 * not starve a small one"). */
static void
test_big_batch_does_not_starve_small(enum drop how)
{
	struct fake *big, *small;
	size_t small_at = 0;

	setup(2, 8);
	big = fake_new(8, 8);
	small = fake_new(8, 8);
	for (size_t i = 0; i < 100; i++)
		enq(big, 'a', i);
	sched_batch_start(big->sb);
	settle();
	CHECK(nrec == 2);	/* big holds the budget */
	enq(small, 'b', 0);
	sched_batch_start(small->sb);
	settle();
	for (size_t i = 0; i < nrec && i < 200; i++) {
		if (recs[i].f == small && small_at == 0)
			small_at = i;
		finish(&recs[i], how);
		settle();
	}
	CHECK(small_at > 0 && small_at <= 3);	/* big had parked first */
	CHECK(nrec == 101);
	fake_free(big);
	fake_free(small);
	teardown();
}

/* Requests parked on max_per_host go as soon as a reload raises it. */
static void
test_reload_raises_per_host(void)
{
	struct fake *f;

	setup(100, 1);
	f = fake_new(8, 8);
	for (size_t i = 0; i < 3; i++)
		enq(f, 'a', i);
	sched_batch_start(f->sb);
	settle();
	CHECK(nrec == 1);
	pool_reload(100, 4, 60);
	settle();
	CHECK(nrec == 3);
	for (size_t i = 0; i < nrec; i++)
		finish(&recs[i], DROP_CLOSE);
	fake_free(f);
	teardown();
}

/*
 * The throttle. These run on real time: a token at 50/s is 20 ms. Lower
 * bounds are exact (a token is never early by now_us()); upper bounds
 * allow for timers' lateness and a slow sanitised build.
 */

#define MS 1000u		/* microseconds */
#define LATE_US (40 * MS)	/* how late a wake-up may be and still pass */

/* A configuration made from text, as the daemon loads it. */
static struct conf *
conf_text(const char *text)
{
	char path[] = "/tmp/test_sched.XXXXXX";
	int fd = mkstemp(path);
	struct conf *c;

	if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text))
		abort();
	close(fd);
	c = conf_load(path, stderr);
	unlink(path);
	if (c == NULL)
		abort();
	return c;
}

/* sched_configure with text (NULL: every default), as start-up and a
 * reload do; the scheduler keeps its own reference. */
static void
configure(const char *text)
{
	struct conf *c = text != NULL ? conf_text(text) : conf_new_default();

	sched_configure(c);
	conf_unref(c);
}

static void
guard_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	*(int *)arg = 1;
}

/* Runs the loop, blocking, until n dispatches are recorded or ms pass;
 * returns the loop turns it took (a scheduler that polled would take
 * thousands). */
static unsigned
run_until(size_t n, unsigned ms)
{
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
	int fired = 0;
	struct event *g = evtimer_new(base, guard_cb, &fired);
	unsigned turns = 0;

	evtimer_add(g, &tv);
	while (!fired && nrec < n && turns < 100000) {
		event_base_loop(base, EVLOOP_ONCE);
		turns++;
	}
	event_free(g);
	return turns;
}

static unsigned
run_ms(unsigned ms)
{
	return run_until(SIZE_MAX, ms);
}

/* Cancels what f still has queued. */
static void
drain(struct fake *f)
{
	size_t index;

	while (sched_pop_new(f->sb, &index, NULL))
		;
}

static size_t
count_of(const struct fake *f, char org, size_t from, size_t to)
{
	size_t n = 0;

	for (size_t i = from; i < to && i < nrec; i++)
		n += recs[i].f == f && recs[i].org == org;
	return n;
}

/* The scheduler's view of an origin, for /v1/origins. */
static int
origin_info(char org, struct sched_origin_info *info)
{
	struct origin *o = pool_origin_get(url_of(org));
	int rc = sched_origin_info(o, info);

	pool_origin_put(o);
	return rc;
}

/* rate_per_host 50/s with a burst of 3: three at once to each origin,
 * then one every 20 ms, never early; each origin of the batch has its
 * own bucket. */
static void
test_rate_per_host(void)
{
	struct fake *f;
	uint64_t first = 0;
	size_t k = 0, nb = 0;
	int early = 0, late = 0;
	unsigned turns;

	setup(100, 100);
	configure(NULL);
	f = fake_new_rate(100, 100, 50, 3);
	f->at_once = 1;
	for (size_t i = 0; i < 12; i++)
		enq(f, 'a', i);
	for (size_t i = 12; i < 17; i++)
		enq(f, 'b', i);
	sched_batch_start(f->sb);
	settle();
	CHECK(nrec == 6);	/* the bursts */
	CHECK(count_of(f, 'a', 0, nrec) == 3 && count_of(f, 'b', 0, nrec) == 3);
	turns = run_until(17, 2000);
	CHECK(nrec == 17);
	for (size_t i = 0; i < nrec; i++) {
		if (recs[i].org != 'a')
			continue;
		if (k == 0)
			first = recs[i].t;
		/* The k-th (from 0) is due (k - 2) intervals after the first. */
		if (k >= 3) {
			uint64_t due = first + (k - 2) * 20 * MS;
			early += recs[i].t + MS < due;	/* 1 ms: the first's own dispatch */
			late += recs[i].t > due + LATE_US;
		}
		k++;
	}
	CHECK(k == 12 && early == 0 && late == 0);
	for (size_t i = 0; i < nrec; i++)
		nb += recs[i].org == 'b' && recs[i].index == 16 &&
		    recs[i].t >= recs[0].t + 2 * 20 * MS - MS;
	CHECK(nb == 1);	/* b's last, two intervals on */
	CHECK(turns < 100);	/* about one wake-up per token */
	CHECK(metrics.requests_queued == 0);
	fake_free(f);
	teardown();
}

/* A retry takes a token too: with 10/s, a request requeued at once goes
 * again only 100 ms after it first went. */
static void
test_rate_counts_retries(void)
{
	struct fake *f;

	setup(100, 100);
	configure(NULL);
	f = fake_new_rate(8, 8, 10, 1);
	enq(f, 'a', 0);
	sched_batch_start(f->sb);
	settle();
	CHECK(nrec == 1);
	requeue(&recs[0], DROP_CLOSE, 'a', 0);
	settle();
	CHECK(nrec == 1);
	run_until(2, 1000);
	CHECK(nrec == 2 && recs[1].again);
	CHECK(recs[1].t >= recs[0].t + 100 * MS - MS);
	CHECK(recs[1].t <= recs[0].t + 100 * MS + LATE_US);
	finish(&recs[1], DROP_CLOSE);
	fake_free(f);
	teardown();
}

/* A configured rate_limit is shared by every batch: a batch with 1,000
 * queued and one with a single request take turns, the single one going
 * within two tokens of joining; together they stay at the limit. Another
 * origin is not held back at all. */
static void
test_rate_limit_shared_fair(void)
{
	struct fake *x, *y, *z;
	size_t mark, at = SIZE_MAX, alt_from, bad = 0;
	uint64_t t0;

	setup(100, 100);
	configure("rate_limit = http://a.test 50\n");
	x = fake_new(8, 8);
	y = fake_new(8, 8);
	z = fake_new(8, 8);
	x->at_once = y->at_once = z->at_once = 1;
	for (size_t i = 0; i < 1000; i++)
		enq(x, 'a', i);
	sched_batch_start(x->sb);
	settle();
	CHECK(nrec == 1);	/* a burst of 1 */
	t0 = recs[0].t;
	run_until(4, 1000);
	CHECK(nrec == 4);

	mark = nrec;
	enq(y, 'a', 0);
	sched_batch_start(y->sb);
	run_until(mark + 3, 1000);
	for (size_t i = mark; i < nrec; i++)
		if (recs[i].f == y && at == SIZE_MAX)
			at = i;
	CHECK(at != SIZE_MAX && at <= mark + 1);

	/* y with many more: strict turns. */
	for (size_t i = 1; i < 21; i++)
		enq(y, 'a', i);
	alt_from = nrec;
	run_until(alt_from + 20, 2000);
	CHECK(nrec >= alt_from + 20);
	for (size_t i = alt_from + 1; i < alt_from + 20 && i < nrec; i++)
		bad += recs[i].f == recs[i - 1].f;
	CHECK(bad == 0);

	/* Shared: both together no faster than 50/s. */
	CHECK(recs[nrec - 1].t + MS >= t0 + (nrec - 1) * 20 * MS);

	/* Another origin: all at once, while a.test is still throttled. */
	mark = nrec;
	for (size_t i = 0; i < 20; i++)
		enq(z, 'b', i);
	sched_batch_start(z->sb);
	settle();
	CHECK(count_of(z, 'b', mark, nrec) == 20);
	CHECK(count_of(x, 'a', mark, nrec) + count_of(y, 'a', mark, nrec) <= 1);
	drain(x);
	drain(y);
	fake_free(x);
	fake_free(y);
	fake_free(z);
	teardown();
}

/* The stricter of the batch's rate and the configured one applies, and a
 * wildcard limit gives each origin below the domain a bucket of its own. */
static void
test_rate_stricter_and_wildcard(void)
{
	struct fake *f;
	uint64_t gap;
	size_t mark;

	setup(100, 100);
	configure("rate_limit = http://*.test 100\n");
	f = fake_new_rate(8, 8, 20, 1);	/* 50 ms, stricter than 10 ms */
	f->at_once = 1;
	for (size_t i = 0; i < 3; i++) {
		enq(f, 'a', i);
		enq(f, 'b', 10 + i);
	}
	sched_batch_start(f->sb);
	settle();
	CHECK(nrec == 2 && recs[0].org != recs[1].org);	/* a bucket each */
	run_until(6, 1000);
	CHECK(nrec == 6);
	gap = recs[5].t - recs[0].t;
	CHECK(gap + MS >= 2 * 50 * MS);	/* the batch's 20/s, not 100/s */
	fake_free(f);

	/* The other way round: the configured limit is the stricter. */
	f = fake_new_rate(8, 8, 1000, 1);
	f->at_once = 1;
	configure("rate_limit = http://*.test 20\n");
	mark = nrec;
	for (size_t i = 0; i < 3; i++)
		enq(f, 'c', i);
	sched_batch_start(f->sb);
	run_until(mark + 3, 1000);
	CHECK(nrec == mark + 3);
	CHECK(recs[mark + 2].t + MS >= recs[mark].t + 2 * 50 * MS);
	fake_free(f);
	teardown();
}

/* A 429 with Retry-After pauses the origin for every batch; other origins
 * go on; the loop sleeps through it. At its end the origin restarts with
 * one request in flight, until a success lets two go, then four, ... up
 * to max_per_host * max_streams (here 4), where the restart ends. */
static void
test_pause_and_restart(void)
{
	struct sched_origin_info info;
	struct fake *x, *y, *z;
	size_t mark;
	uint64_t until, t, p429 = metrics.origin_pauses[0];
	unsigned turns;

	setup(100, 100);
	configure("max_per_host = 1\nmax_streams = 4\n");
	x = fake_new(8, 8);
	y = fake_new(8, 8);
	z = fake_new(8, 8);
	z->at_once = 1;
	enq(x, 'a', 0);
	sched_batch_start(x->sb);
	settle();
	CHECK(nrec == 1);
	CHECK(origin_info('a', &info) == 0 && info.paused_until == 0 && info.window == 0);
	t = now_us();
	CHECK(sched_response(recs[0].r, 429, 300 * MS) == 1);
	until = t + 300 * MS;
	CHECK(metrics.origins_paused == 1 && metrics.origin_pauses[0] == p429 + 1);
	CHECK(origin_info('a', &info) == 0);
	CHECK(info.paused_until >= until && info.paused_until <= now_us() + 300 * MS);
	CHECK(info.pause_status == 429 && info.retry_after_us == 300 * MS);
	CHECK(info.window == 1 && info.in_flight == 1 && info.queued == 0);
	finish(&recs[0], DROP_CLOSE);	/* the 429 was that request's result */

	for (size_t i = 1; i < 4; i++)
		enq(x, 'a', i);
	for (size_t i = 0; i < 4; i++)
		enq(y, 'a', i);
	sched_batch_start(y->sb);
	for (size_t i = 0; i < 4; i++)
		enq(z, 'b', i);
	sched_batch_start(z->sb);
	settle();
	CHECK(nrec == 5 && count_of(z, 'b', 1, nrec) == 4);
	CHECK(origin_info('a', &info) == 0 && info.queued == 7 && info.in_flight == 0);

	/* Held: nothing goes, and the loop is not woken meanwhile. */
	turns = run_ms(200);
	CHECK(nrec == 5);
	CHECK(turns <= 5);

	/* The end: one request, and only one. */
	mark = nrec;
	run_until(mark + 1, 1000);
	CHECK(nrec == mark + 1);
	CHECK(recs[mark].org == 'a' && recs[mark].t >= until);
	CHECK(recs[mark].t <= until + 100 * MS);
	run_ms(50);
	CHECK(nrec == mark + 1);
	CHECK(metrics.origins_paused == 0);
	CHECK(origin_info('a', &info) == 0 && info.paused_until == 0 && info.window == 1);
	CHECK(info.pause_status == 0);

	/* A failure frees its place, but the window stays at one. */
	finish(&recs[mark], DROP_CLOSE);
	settle();
	CHECK(nrec == mark + 2);
	run_ms(30);
	CHECK(nrec == mark + 2);

	/* A success: two in flight. */
	CHECK(sched_response(recs[mark + 1].r, 200, -1) == 0);
	settle();
	CHECK(nrec == mark + 3);
	CHECK(origin_info('a', &info) == 0 && info.window == 2 && info.in_flight == 2);
	/* Another: four, which is max_per_host * max_streams: the end. */
	CHECK(sched_response(recs[mark + 2].r, 200, -1) == 0);
	settle();
	CHECK(origin_info('a', &info) == 0 && info.window == 0);
	CHECK(nrec == mark + 7);	/* all 7 of a's, the rest at once */
	for (size_t i = mark + 1; i < nrec; i++)
		finish(&recs[i], DROP_CLOSE);
	CHECK(metrics.origins_paused == 0);
	fake_free(x);
	fake_free(y);
	fake_free(z);
	teardown();
}

/* A 429 of a request sent before the pause (in the same volley) renews it
 * without doubling and counts no new pause; a 503 pauses only with
 * Retry-After; backoff = 0 turns it all off. */
static void
test_pause_rules(void)
{
	struct sched_origin_info info;
	struct fake *x;
	uint64_t t, p429 = metrics.origin_pauses[0], p503 = metrics.origin_pauses[1];

	setup(100, 100);
	configure("max_backoff_s = 2\n");
	x = fake_new(8, 8);
	for (size_t i = 0; i < 3; i++)
		enq(x, 'a', i);
	sched_batch_start(x->sb);
	settle();
	CHECK(nrec == 3);
	t = now_us();
	CHECK(sched_response(recs[0].r, 429, -1) == 1);	/* 1 s */
	CHECK(sched_response(recs[1].r, 429, -1) == 1);	/* the same volley: renews */
	CHECK(metrics.origin_pauses[0] == p429 + 1);	/* one pause, renewed */
	CHECK(origin_info('a', &info) == 0);
	CHECK(info.paused_until >= t + 1000 * MS && info.paused_until <= now_us() + 1000 * MS);
	CHECK(info.retry_after_us == -1 && info.pause_status == 429);
	/* Retry-After beyond max_backoff_s: 2 s. */
	CHECK(sched_response(recs[2].r, 503, 3600 * 1000 * MS) == 1);
	CHECK(origin_info('a', &info) == 0 && info.pause_status == 503);
	CHECK(info.paused_until <= now_us() + 2000 * MS && info.paused_until >= t + 2000 * MS);
	CHECK(metrics.origin_pauses[1] == p503);	/* a renewal, not a new pause */
	for (size_t i = 0; i < 3; i++)
		finish(&recs[i], DROP_CLOSE);
	fake_free(x);
	teardown();
	CHECK(metrics.origins_paused == 0);	/* forgotten with its origin */

	setup(100, 100);
	configure(NULL);
	x = fake_new(8, 8);
	enq(x, 'a', 0);
	sched_batch_start(x->sb);
	settle();
	CHECK(sched_response(recs[0].r, 503, -1) == 0);
	CHECK(sched_response(recs[0].r, 500, 5000 * MS) == 0);
	CHECK(sched_response(recs[0].r, 404, -1) == 0);
	CHECK(origin_info('a', &info) == 0 && info.paused_until == 0 && info.window == 0);
	CHECK(metrics.origins_paused == 0);
	configure("backoff = 0\n");
	CHECK(sched_response(recs[0].r, 429, 5000 * MS) == 0);
	CHECK(sched_response(recs[0].r, 429, -1) == 0);
	CHECK(origin_info('a', &info) == 0 && info.paused_until == 0);
	enq(x, 'a', 1);
	settle();
	CHECK(nrec == 2);
	finish(&recs[0], DROP_CLOSE);
	finish(&recs[1], DROP_CLOSE);
	fake_free(x);
	teardown();
}

/* A pause outlives the batch that met it: the origin is remembered, and a
 * batch that comes after waits for its end. */
static void
test_pause_outlives_batch(void)
{
	struct sched_origin_info info;
	struct fake *x, *y;
	uint64_t until;

	setup(100, 100);
	configure(NULL);
	x = fake_new(8, 8);
	enq(x, 'a', 0);
	sched_batch_start(x->sb);
	settle();
	CHECK(sched_response(recs[0].r, 429, 200 * MS) == 1);
	until = now_us() + 200 * MS - 5 * MS;
	finish(&recs[0], DROP_CLOSE);
	fake_free(x);
	CHECK(origin_info('a', &info) == 0 && info.paused_until != 0 && info.in_flight == 0);
	y = fake_new(8, 8);
	y->at_once = 1;
	enq(y, 'a', 0);
	sched_batch_start(y->sb);
	settle();
	CHECK(nrec == 1);
	run_until(2, 1000);
	CHECK(nrec == 2 && recs[1].f == y && recs[1].t >= until);
	fake_free(y);
	CHECK(origin_info('b', &info) == -1);	/* never wanted */
	teardown();
}

/* The gauge of origins paused follows each pause's end, when nothing is
 * queued for the origin, and when the origin's timer was set for a token
 * as the pause began and nothing is held afterwards. */
static void
test_pause_gauge_ends(void)
{
	struct sched_origin_info info;
	struct fake *x;

	setup(100, 100);
	configure(NULL);
	x = fake_new(8, 8);
	enq(x, 'a', 0);
	sched_batch_start(x->sb);
	settle();
	CHECK(sched_response(recs[0].r, 429, 50 * MS) == 1);
	finish(&recs[0], DROP_CLOSE);
	CHECK(metrics.origins_paused == 1);
	run_ms(120);
	CHECK(metrics.origins_paused == 0);
	fake_free(x);
	teardown();

	setup(100, 100);
	configure("rate_limit = http://a.test 10\n");
	x = fake_new(8, 8);
	enq(x, 'a', 0);
	enq(x, 'a', 1);
	sched_batch_start(x->sb);
	settle();
	CHECK(nrec == 1);	/* the second waits for a token, 100 ms on */
	CHECK(sched_response(recs[0].r, 429, 150 * MS) == 1);
	drain(x);		/* cancelled: nothing is held any more */
	finish(&recs[0], DROP_CLOSE);
	CHECK(metrics.origins_paused == 1);
	run_ms(300);
	CHECK(origin_info('a', &info) == 0 && info.paused_until == 0);
	CHECK(metrics.origins_paused == 0);
	fake_free(x);
	teardown();
	CHECK(metrics.origins_paused == 0);
}

/* sched_req_throttled_us: a retry waiting out a pause in the queue grows
 * it; once it runs, it stands still. A new request queued behind a rate
 * limit reports its own wait. */
static void
test_throttled_us(void)
{
	struct fake *x;
	struct sched_req *r;
	uint64_t a, b, t;

	setup(100, 100);
	configure(NULL);
	x = fake_new(8, 8);
	enq(x, 'a', 0);
	sched_batch_start(x->sb);
	settle();
	CHECK(nrec == 1 && recs[0].throttled == 0);
	r = recs[0].r;
	CHECK(sched_req_throttled_us(r) == 0);
	CHECK(sched_response(r, 429, 200 * MS) == 1);
	t = now_us();
	requeue(&recs[0], DROP_CLOSE, 'a', 0);	/* its retry, held by the pause */
	settle();
	CHECK(nrec == 1);
	run_ms(50);
	a = sched_req_throttled_us(r);
	CHECK(a >= 45 * MS && a <= now_us() - t);
	run_ms(50);
	b = sched_req_throttled_us(r);
	CHECK(b >= a + 45 * MS);
	run_until(2, 1000);
	CHECK(nrec == 2 && recs[1].r == r && recs[1].again);
	CHECK(recs[1].throttled >= 190 * MS && recs[1].throttled <= recs[1].t - t);
	run_ms(50);	/* running: no more */
	CHECK(sched_req_throttled_us(r) == recs[1].throttled);
	finish(&recs[1], DROP_CLOSE);
	fake_free(x);

	/* New requests behind 10/s: each reports what it waited. */
	configure("rate_limit = http://b.test 10\n");
	x = fake_new(8, 8);
	for (size_t i = 0; i < 3; i++)
		enq(x, 'b', i);
	sched_batch_start(x->sb);
	settle();
	CHECK(nrec == 3 && recs[2].throttled == 0);
	run_until(5, 1000);
	CHECK(nrec == 5);
	CHECK(recs[3].throttled >= 95 * MS && recs[3].throttled <= recs[3].t - recs[2].t + MS);
	CHECK(recs[4].throttled >= 195 * MS && recs[4].throttled <= recs[4].t - recs[2].t + MS);
	for (size_t i = 2; i < 5; i++)
		finish(&recs[i], DROP_CLOSE);
	CHECK(metrics.throttled_requests >= 3);
	fake_free(x);
	teardown();
}

/* What /v1/origins shows: the configured limit, requests in flight and
 * queued (every batch's, continuing ones included). An origin kept only
 * for its throttle is forgotten once its bucket is full again. */
static void
test_origin_info(void)
{
	struct sched_origin_info info;
	struct fake *x, *y;

	setup(100, 100);
	configure("rate_limit = http://a.test 10 2\nrate_limit = http://c.test:81 5\n");
	CHECK(origin_info('a', &info) == -1);	/* no batch wants it yet */
	x = fake_new(8, 8);
	y = fake_new(8, 8);
	for (size_t i = 0; i < 5; i++)
		enq(x, 'a', i);
	enq(y, 'a', 0);
	enq(y, 'c', 1);
	sched_batch_start(x->sb);
	sched_batch_start(y->sb);
	settle();
	CHECK(nrec == 3);	/* the burst of 2, and c.test:80, which has no limit */
	CHECK(origin_info('a', &info) == 0);
	CHECK(info.rate == 10 && info.burst == 2);
	CHECK(info.in_flight == 2 && info.queued == 4);
	CHECK(info.paused_until == 0 && info.pause_status == 0 && info.window == 0);
	CHECK(origin_info('c', &info) == 0 && info.rate == 0 && info.in_flight == 1);
	/* A retry waiting counts as queued and in flight. */
	requeue(&recs[0], DROP_CLOSE, 'a', 0);
	CHECK(origin_info('a', &info) == 0 && info.in_flight == 2 && info.queued == 5);
	drain(x);
	drain(y);
	recs[0].f->running--;
	sched_finished(recs[0].r);	/* the retry, cancelled while it waits */
	finish(&recs[1], DROP_CLOSE);
	finish(&recs[2], DROP_CLOSE);
	fake_free(x);
	fake_free(y);
	CHECK(origin_info('a', &info) == 0 && info.in_flight == 0 && info.queued == 0);
	CHECK(origin_info('c', &info) == -1);	/* nothing to remember */
	run_ms(250);	/* the bucket refills: forgotten */
	CHECK(origin_info('a', &info) == -1);
	teardown();
}

/* A reload changes a limit for the origins known already: a faster one
 * speeds the queue up, none lets it all go. */
static void
test_reload_changes_limit(void)
{
	struct sched_origin_info info;
	struct fake *f;
	size_t mark;
	uint64_t t;

	setup(100, 100);
	configure("rate_limit = http://a.test 10\n");
	f = fake_new(100, 100);
	f->at_once = 1;
	for (size_t i = 0; i < 60; i++)
		enq(f, 'a', i);
	sched_batch_start(f->sb);
	run_ms(150);
	CHECK(nrec == 2);
	CHECK(origin_info('a', &info) == 0 && info.rate == 10);

	configure("rate_limit = http://a.test 200\n");
	CHECK(origin_info('a', &info) == 0 && info.rate == 200 && info.burst == 1);
	mark = nrec;
	t = now_us();
	run_ms(150);
	/* The token promised at 10/s stays due (<= 50 ms on), then 5 ms each
	 * from when it was due (the first may have been woken up to an
	 * interval late). */
	CHECK(nrec - mark >= 10);
	CHECK(recs[nrec - 1].t + 5 * MS >= recs[mark].t + (nrec - 1 - mark) * 5 * MS);
	CHECK(recs[mark].t <= t + 50 * MS + LATE_US);

	configure(NULL);
	CHECK(origin_info('a', &info) == 0 && info.rate == 0);
	settle();
	CHECK(nrec == 60);
	fake_free(f);
	teardown();
}

int
main(void)
{
	static const char *const u[] = { "http://a.test/", "http://b.test/", "http://c.test/" };
	char why[128];

	log_level = LOG_LEVEL_WARN;	/* not the pauses' info lines */
	for (int i = 0; i < 3; i++)
		if (url_parse(&urls[i], u[i], why, sizeof(why)) != 0)
			abort();
	test_ring_growth();
	test_limits();
	test_per_host_limit();
	test_release_frees_origin_slot_only();
	test_batches_take_turns_global();
	test_batches_take_turns_per_host();
	test_batches_take_turns_plenty();
	test_origins_take_turns();
	test_parks_on_max_per_host();
	test_parks_on_global_budget();
	test_pause();
	test_requeue_goes_first();
	test_requeue_fresh();
	test_finish_while_requeued();
	test_batch_generation();
	test_pop_new_and_free();
	test_free_while_parked();
	test_big_batch_does_not_starve_small(DROP_CLOSE);
	test_big_batch_does_not_starve_small(DROP_IDLE);
	test_reload_raises_per_host();
	test_rate_per_host();
	test_rate_counts_retries();
	test_rate_limit_shared_fair();
	test_rate_stricter_and_wildcard();
	test_pause_and_restart();
	test_pause_rules();
	test_pause_outlives_batch();
	test_pause_gauge_ends();
	test_throttled_us();
	test_origin_info();
	test_reload_changes_limit();
	for (int i = 0; i < 3; i++)
		url_free(&urls[i]);
	return UNIT_DONE();
}
