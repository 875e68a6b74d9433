/* test_sched.c: the scheduler with the real pool below it, on a real event
 * base. The batch above is a fake dispatch callback that records every
 * dispatch and counts what is in flight; each test then decides, as
 * upstream.c and batch.c would, what happens to a dispatched request: its
 * connection released idle or closed, the request finished or requeued.
 * Covered: the index ring, batch and per-origin limits, turn-taking between
 * batches and between a batch's origins, the pool's limits parking and
 * waking requests without polling, output pause, requeue (fresh, cancelled
 * while queued), generations, cancel and free. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/bufferevent.h>
#include <event2/event.h>

#include "metrics.h"
#include "pool.h"
#include "sched.h"
#include "url.h"
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

static struct fake *
fake_new(unsigned concurrency, unsigned per_host)
{
	struct fake *f = calloc(1, sizeof(*f));

	if (f == NULL)
		abort();
	f->sb = sched_batch_new(fake_dispatch, f, &(struct sched_limits){
		.concurrency = concurrency, .per_host = per_host, .burst = 1 });
	return f;
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
	while (sched_pop_new(f->sb, &index)) {
		CHECK(index >= 2 && index < 10 && !(seen & 1u << index));
		seen |= 1u << index;
		got++;
	}
	CHECK(got == 8);
	CHECK(sched_pop_new(f->sb, &index) == 0);
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
	CHECK(sched_pop_new(y->sb, &index) && index == 0);
	CHECK(sched_pop_new(v->sb, &index) && index == 0);
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

int
main(void)
{
	static const char *const u[] = { "http://a.test/", "http://b.test/", "http://c.test/" };
	char why[128];

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
	for (int i = 0; i < 3; i++)
		url_free(&urls[i]);
	return UNIT_DONE();
}
