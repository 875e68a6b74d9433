/* test_pool.c: the connection pool alone, on a real event base, with a fake
 * listener in the scheduler's place: what pool_take hands out and refuses,
 * which idle connection is reused, generations across a reload, descriptor
 * pressure, idle connections whose peer closes or talks, and origin
 * refcounting. Connections that go idle get a bufferevent over one end of a
 * socketpair; the other end tells whether the pool closed it. */
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/bufferevent.h>
#include <event2/event.h>

#include "log.h"
#include "metrics.h"
#include "pool.h"
#include "url.h"
#include "unit.h"

static struct event_base *base;
static unsigned gen;	/* the current generation: its connections are kept */

/* What the pool told its listener. */
static struct {
	unsigned origin_freed;
	unsigned room_freed;
	unsigned limits_changed;
	struct origin *last;
} told;

static void
fake_origin_freed(struct origin *o)
{
	told.origin_freed++;
	told.last = o;
}

static void
fake_room_freed(void)
{
	told.room_freed++;
}

static void
fake_limits_changed(void)
{
	told.limits_changed++;
}

static const struct pool_listener fake_listener = {
	.origin_freed = fake_origin_freed,
	.room_freed = fake_room_freed,
	.limits_changed = fake_limits_changed,
};

static void
setup(unsigned max_conns, unsigned max_per_host, unsigned idle_timeout_s)
{
	base = event_base_new();
	pool_init(base, max_conns, max_per_host, idle_timeout_s);
	pool_set_listener(&fake_listener);
	memset(&told, 0, sizeof(told));
	/* Reloads in earlier tests moved it on; a new pool keeps counting. */
	gen = pool_batch_begin();
	pool_batch_end(gen);
}

/* Every test closes what it took: nothing may be left counted. */
static void
teardown(void)
{
	pool_shutdown();
	CHECK(metrics.conns_open == 0);
	CHECK(metrics.conns_idle == 0);
	event_base_free(base);
}

/* The origin of s (a URL), with one reference for the caller. */
static struct origin *
origin(const char *s)
{
	struct url u;
	struct origin *o;
	char why[128];

	if (url_parse(&u, s, why, sizeof(why)) != 0) {
		fprintf(stderr, "%s: %s\n", s, why);
		abort();
	}
	o = pool_origin_get(&u);
	url_free(&u);
	return o;
}

/* Gives c a transport over one end of a socketpair, as its taker would;
 * returns the other end, the "upstream". */
static int
attach(struct conn *c)
{
	struct bufferevent *bev;
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
		abort();
	evutil_make_socket_nonblocking(sv[0]);
	evutil_make_socket_nonblocking(sv[1]);
	bev = bufferevent_socket_new(base, sv[0], BEV_OPT_CLOSE_ON_FREE);
	pool_conn_set_bev(c, bev);
	return sv[1];
}

/* Whether the pool's end of the socketpair whose other end is peer was
 * closed: the peer reads EOF rather than "nothing yet". A freed bufferevent
 * closes its socket from the loop (libevent finalizes it there), so the
 * loop gets a few turns first. */
static int
closed(int peer)
{
	char b;

	for (int i = 0; i < 3; i++)
		event_base_loop(base, EVLOOP_NONBLOCK);
	return read(peer, &b, 1) == 0;
}

/* A connection to o, made new, with a transport; *peer is its far end. */
static struct conn *
take_new(struct origin *o, unsigned g, int *peer)
{
	struct conn *c = NULL;

	CHECK(pool_take(o, 0, g, &c) == POOL_NEW);
	*peer = attach(c);
	return c;
}

/* Runs the loop without blocking until cond or a bounded number of turns. */
#define SPIN_UNTIL(cond) do { \
	for (int spin_ = 0; spin_ < 100 && !(cond); spin_++) \
		event_base_loop(base, EVLOOP_NONBLOCK); \
} while (0)

static void
test_origin_refcount(void)
{
	struct origin *a, *a2, *b, *s;
	int x;

	setup(10, 4, 60);
	a = origin("http://A.test/x");
	a2 = origin("http://a.test:80/y");
	b = origin("http://b.test/");
	s = origin("https://a.test/");
	CHECK(a == a2);
	CHECK(a != b && a != s);
	CHECK_STR(pool_origin_key(a), "http://a.test:80");
	CHECK_STR(pool_origin_key(s), "https://a.test:443");
	CHECK(pool_origin_data(a) == NULL);
	pool_origin_set_data(a, &x);
	CHECK(pool_origin_data(a2) == &x);
	CHECK(pool_origin_data(b) == NULL);

	pool_origin_put(a2);	/* one reference is left: a stays */
	a2 = origin("http://a.test/");
	CHECK(a2 == a && pool_origin_data(a2) == &x);
	pool_origin_put(a2);
	pool_origin_put(a);	/* the last: a is gone, its data with it */
	a = origin("http://a.test/");
	CHECK(pool_origin_data(a) == NULL);
	pool_origin_put(a);
	pool_origin_put(b);
	pool_origin_put(s);
	teardown();
}

/* A connection keeps its origin alive after the taker's reference is put. */
static void
test_conn_holds_origin(void)
{
	struct origin *o, *o2;
	struct conn *c;
	int x;

	setup(10, 4, 60);
	o = origin("http://a.test/");
	pool_origin_set_data(o, &x);
	CHECK(pool_take(o, 0, gen, &c) == POOL_NEW);
	pool_origin_put(o);
	o2 = origin("http://a.test/");
	CHECK(o2 == o && pool_origin_data(o2) == &x);
	pool_origin_put(o2);
	pool_close(c);
	o2 = origin("http://a.test/");
	CHECK(pool_origin_data(o2) == NULL);
	pool_origin_put(o2);
	teardown();
}

/* max_per_host is per origin, fresh or not. */
static void
test_take_new_and_full_origin(void)
{
	struct origin *a, *b;
	struct conn *c[4];

	setup(10, 2, 60);
	a = origin("http://a.test/");
	b = origin("http://b.test/");
	CHECK(pool_take(a, 0, gen, &c[0]) == POOL_NEW);
	CHECK(pool_take(a, 0, gen, &c[1]) == POOL_NEW);
	CHECK(c[0] != c[1]);
	CHECK(pool_conn_bev(c[0]) == NULL);	/* unconnected */
	CHECK(pool_take(a, 0, gen, &c[3]) == POOL_FULL_ORIGIN);
	CHECK(pool_take(a, 1, gen, &c[3]) == POOL_FULL_ORIGIN);
	CHECK(pool_take(b, 0, gen, &c[2]) == POOL_NEW);	/* the limit is per origin */
	CHECK(metrics.conns_open == 3);
	CHECK(pool_has_room());

	pool_close(c[0]);
	CHECK(told.origin_freed == 1 && told.last == a && told.room_freed == 1);
	CHECK(pool_take(a, 0, gen, &c[0]) == POOL_NEW);
	for (int i = 0; i < 3; i++)
		pool_close(c[i]);
	CHECK(metrics.conns_open == 0);
	pool_origin_put(a);
	pool_origin_put(b);
	teardown();
}

/* The budget is counted over all origins. */
static void
test_take_full_global(void)
{
	struct origin *a, *b, *c;
	struct conn *ca, *cb, *cc;

	setup(2, 8, 60);
	a = origin("http://a.test/");
	b = origin("http://b.test/");
	c = origin("http://c.test/");
	CHECK(pool_has_room());
	CHECK(pool_take(a, 0, gen, &ca) == POOL_NEW);
	CHECK(pool_take(b, 0, gen, &cb) == POOL_NEW);
	CHECK(!pool_has_room());
	CHECK(pool_take(c, 0, gen, &cc) == POOL_FULL_GLOBAL);
	CHECK(pool_take(a, 0, gen, &cc) == POOL_FULL_GLOBAL);
	pool_close(ca);
	CHECK(pool_has_room());
	CHECK(pool_take(c, 0, gen, &cc) == POOL_NEW);
	CHECK(!pool_has_room());
	pool_close(cb);
	pool_close(cc);
	pool_origin_put(a);
	pool_origin_put(b);
	pool_origin_put(c);
	teardown();
}

/* The most recently released idle connection goes first; a reused one is
 * the taker's again, no longer watched by the pool. */
static void
test_reuse_most_recent(void)
{
	struct origin *o;
	struct conn *c1, *c2, *c;
	struct bufferevent *bev2;
	int p1, p2;

	setup(10, 8, 60);
	o = origin("http://a.test/");
	c1 = take_new(o, gen, &p1);
	c2 = take_new(o, gen, &p2);
	bev2 = pool_conn_bev(c2);
	pool_release(c1);
	pool_release(c2);
	CHECK(metrics.conns_idle == 2);
	CHECK(told.origin_freed == 2 && told.last == o && told.room_freed == 2);
	CHECK(pool_take(o, 0, gen, &c) == POOL_REUSE && c == c2);
	CHECK(pool_conn_bev(c) == bev2);	/* the same transport */
	CHECK(pool_take(o, 0, gen, &c) == POOL_REUSE && c == c1);
	CHECK(metrics.conns_idle == 0);
	CHECK(pool_take(o, 0, gen, &c) == POOL_NEW);
	pool_close(c);

	/* Taken back, c2's upstream may close: that is for its taker to see. */
	close(p2);
	for (int i = 0; i < 10; i++)
		event_base_loop(base, EVLOOP_NONBLOCK);
	CHECK(metrics.conns_open == 2);
	pool_close(c1);
	pool_close(c2);
	CHECK(closed(p1));
	close(p1);
	pool_origin_put(o);
	teardown();
}

/* fresh=1 opens a new connection though one is idle, and leaves that one be. */
static void
test_fresh_never_reuses(void)
{
	struct origin *o;
	struct conn *c1, *c;
	int p1;

	setup(10, 8, 60);
	o = origin("http://a.test/");
	c1 = take_new(o, gen, &p1);
	pool_release(c1);
	CHECK(pool_take(o, 1, gen, &c) == POOL_NEW && c != c1);
	CHECK(metrics.conns_idle == 1);	/* c1 is kept for others */
	CHECK(!closed(p1));
	pool_close(c);
	CHECK(pool_take(o, 0, gen, &c) == POOL_REUSE && c == c1);
	pool_close(c);
	close(p1);
	pool_origin_put(o);
	teardown();
}

/* At max_per_host, a fresh connection replaces the origin's least recently
 * used idle one rather than being refused. */
static void
test_fresh_at_limit_replaces_idle(void)
{
	struct origin *o;
	struct conn *c1, *c2, *c;
	int p1, p2;

	setup(10, 2, 60);
	o = origin("http://a.test/");
	c1 = take_new(o, gen, &p1);
	c2 = take_new(o, gen, &p2);
	pool_release(c1);
	pool_release(c2);
	CHECK(pool_take(o, 1, gen, &c) == POOL_NEW);
	CHECK(closed(p1) && !closed(p2));
	CHECK(metrics.conns_idle == 1);
	CHECK(pool_take(o, 1, gen, &c1) == POOL_NEW);	/* and then c2 */
	CHECK(closed(p2));
	CHECK(pool_take(o, 1, gen, &c2) == POOL_FULL_ORIGIN);
	pool_close(c);
	pool_close(c1);
	close(p1);
	close(p2);
	pool_origin_put(o);
	teardown();
}

/* With the budget used, another origin's oldest idle connection is closed
 * for a request that is ready to go. */
static void
test_full_global_closes_others_idle(void)
{
	struct origin *a, *b, *c;
	struct conn *ca, *cb, *cc, *cd;
	int pa, pb;

	setup(2, 8, 60);
	a = origin("http://a.test/");
	b = origin("http://b.test/");
	c = origin("http://c.test/");
	ca = take_new(a, gen, &pa);
	cb = take_new(b, gen, &pb);
	pool_release(ca);
	pool_release(cb);
	CHECK(pool_has_room());	/* an idle connection can be closed */
	told.origin_freed = 0;
	CHECK(pool_take(c, 0, gen, &cc) == POOL_NEW);
	CHECK(closed(pa) && !closed(pb));	/* a's was the older */
	CHECK(told.origin_freed == 1 && told.last == a);
	CHECK(pool_take(c, 0, gen, &cd) == POOL_NEW);
	CHECK(closed(pb));
	CHECK(!pool_has_room());
	CHECK(pool_take(a, 0, gen, &ca) == POOL_FULL_GLOBAL);
	pool_close(cc);
	pool_close(cd);
	close(pa);
	close(pb);
	pool_origin_put(a);
	pool_origin_put(b);
	pool_origin_put(c);
	teardown();
}

/* A batch from before a reload reuses only its generation's connections; a
 * newer one never does; they are closed when the last old batch ends. */
static void
test_generations(void)
{
	struct origin *o;
	struct conn *old, *c;
	unsigned g0, g0b, g1;
	int p;

	setup(10, 8, 60);
	o = origin("http://a.test/");
	g0 = pool_batch_begin();
	g0b = pool_batch_begin();
	CHECK(g0b == g0);
	old = take_new(o, g0, &p);
	pool_release(old);
	pool_reload(10, 8, 60);
	CHECK(!closed(p));	/* g0 has batches: kept for them */
	CHECK(told.limits_changed == 1);
	g1 = pool_batch_begin();
	CHECK(g1 != g0);
	CHECK(pool_take(o, 0, g1, &c) == POOL_NEW && c != old);
	pool_close(c);
	CHECK(pool_take(o, 0, g0, &c) == POOL_REUSE && c == old);
	pool_release(c);
	CHECK(metrics.conns_idle == 1);

	pool_batch_end(g0);
	CHECK(!closed(p) && metrics.conns_idle == 1);	/* one g0 batch left */
	told.origin_freed = 0;
	pool_batch_end(g0b);
	CHECK(closed(p) && metrics.conns_idle == 0);
	CHECK(told.origin_freed == 1 && told.last == o);
	CHECK(pool_take(o, 0, g1, &c) == POOL_NEW);
	pool_close(c);
	pool_batch_end(g1);
	close(p);
	pool_origin_put(o);
	teardown();
}

/* A connection of a generation with no batch left is closed when released;
 * the current generation's idle ones outlive their batches until a reload. */
static void
test_generation_release_and_reload(void)
{
	struct origin *o;
	struct conn *c, *cur;
	unsigned g0, g1;
	int p, pc;

	setup(10, 8, 60);
	o = origin("http://a.test/");
	g0 = pool_batch_begin();
	c = take_new(o, g0, &p);
	pool_reload(10, 8, 60);
	pool_batch_end(g0);
	pool_release(c);	/* nobody can use it any more */
	CHECK(closed(p));
	CHECK(metrics.conns_idle == 0 && metrics.conns_open == 0);
	close(p);

	g1 = pool_batch_begin();
	cur = take_new(o, g1, &pc);
	pool_release(cur);
	pool_batch_end(g1);
	CHECK(!closed(pc) && metrics.conns_idle == 1);	/* for the next batch */
	CHECK(pool_batch_begin() == g1);
	CHECK(pool_take(o, 0, g1, &c) == POOL_REUSE && c == cur);
	pool_release(c);
	pool_batch_end(g1);
	pool_reload(10, 8, 60);
	CHECK(closed(pc) && metrics.conns_idle == 0);
	close(pc);
	pool_origin_put(o);
	teardown();
}

/* Taking frees nothing; releasing and closing, busy or idle, each tell. */
static void
test_listener_told(void)
{
	struct origin *a, *b;
	struct conn *ca, *cb;
	int pa;

	setup(10, 8, 60);
	a = origin("http://a.test/");
	b = origin("http://b.test/");
	ca = take_new(a, gen, &pa);
	CHECK(pool_take(b, 0, gen, &cb) == POOL_NEW);
	CHECK(told.origin_freed == 0 && told.room_freed == 0);
	pool_release(ca);
	CHECK(told.origin_freed == 1 && told.last == a && told.room_freed == 1);
	pool_close(cb);
	CHECK(told.origin_freed == 2 && told.last == b && told.room_freed == 2);
	pool_close(ca);	/* an idle one closed */
	CHECK(told.origin_freed == 3 && told.last == a && told.room_freed == 3);
	close(pa);
	pool_origin_put(a);
	pool_origin_put(b);
	teardown();
}

/* Out of descriptors while the third connection opens: the budget holds at
 * the two others, a reload's higher limit waits for the hold to end, a lower
 * one applies at once. The 5 s restore timer is not waited for. */
static void
test_fd_pressure(void)
{
	struct origin *o;
	struct conn *c[4];

	setup(10, 8, 60);
	o = origin("http://a.test/");
	for (int i = 0; i < 3; i++)
		CHECK(pool_take(o, 0, gen, &c[i]) == POOL_NEW);
	pool_fd_pressure();
	pool_close(c[2]);	/* the one that failed */
	CHECK(!pool_has_room());
	CHECK(pool_take(o, 0, gen, &c[2]) == POOL_FULL_GLOBAL);
	pool_reload(20, 8, 60);
	CHECK(!pool_has_room());
	CHECK(pool_take(o, 0, gen, &c[2]) == POOL_FULL_GLOBAL);
	pool_close(c[1]);
	CHECK(pool_has_room());
	CHECK(pool_take(o, 0, gen, &c[1]) == POOL_NEW);
	CHECK(pool_take(o, 0, gen, &c[2]) == POOL_FULL_GLOBAL);
	pool_reload(1, 8, 60);	/* below the hold */
	pool_close(c[1]);
	CHECK(!pool_has_room());
	pool_close(c[0]);
	CHECK(pool_has_room());
	CHECK(pool_take(o, 0, gen, &c[0]) == POOL_NEW);
	CHECK(pool_take(o, 0, gen, &c[1]) == POOL_FULL_GLOBAL);
	pool_close(c[0]);
	pool_origin_put(o);
	teardown();
}

/* With one connection open, pressure holds the budget at one rather than
 * at none; and it never raises a budget a reload lowered. */
static void
test_fd_pressure_floor(void)
{
	struct origin *o;
	struct conn *c[4];

	setup(10, 8, 60);
	o = origin("http://a.test/");
	CHECK(pool_take(o, 0, gen, &c[0]) == POOL_NEW);
	pool_fd_pressure();
	pool_close(c[0]);
	CHECK(pool_has_room());
	CHECK(pool_take(o, 0, gen, &c[0]) == POOL_NEW);
	CHECK(pool_take(o, 0, gen, &c[1]) == POOL_FULL_GLOBAL);
	pool_close(c[0]);
	pool_origin_put(o);
	teardown();

	setup(10, 8, 60);
	o = origin("http://a.test/");
	for (int i = 0; i < 4; i++)
		CHECK(pool_take(o, 0, gen, &c[i]) == POOL_NEW);
	pool_reload(1, 8, 60);
	pool_fd_pressure();	/* three others are open: not a reason to allow 3 */
	for (int i = 3; i > 0; i--)
		pool_close(c[i]);
	CHECK(!pool_has_room());
	pool_close(c[0]);
	CHECK(pool_has_room());
	pool_origin_put(o);
	teardown();
}

/* An idle connection whose upstream closes is closed by the pool, which
 * tells its listener; the next take opens a new one. */
static void
test_idle_peer_closes(void)
{
	struct origin *o;
	struct conn *c;
	int p;

	setup(10, 8, 60);
	o = origin("http://a.test/");
	c = take_new(o, gen, &p);
	pool_release(c);
	memset(&told, 0, sizeof(told));
	close(p);
	SPIN_UNTIL(metrics.conns_open == 0);
	CHECK(metrics.conns_open == 0 && metrics.conns_idle == 0);
	CHECK(told.origin_freed == 1 && told.last == o && told.room_freed == 1);
	CHECK(pool_take(o, 0, gen, &c) == POOL_NEW);
	pool_close(c);
	pool_origin_put(o);
	teardown();
}

/* An upstream that sends while idle would have its bytes read as the next
 * response: its connection is closed. */
static void
test_idle_peer_talks(void)
{
	struct origin *o;
	struct conn *c;
	int p;

	setup(10, 8, 60);
	o = origin("http://a.test/");
	c = take_new(o, gen, &p);
	pool_release(c);
	CHECK(write(p, "x", 1) == 1);
	SPIN_UNTIL(metrics.conns_open == 0);
	CHECK(metrics.conns_open == 0);
	CHECK(closed(p));
	close(p);
	pool_origin_put(o);
	teardown();
}

/* idle_timeout_s = 0: nothing is kept alive. */
static void
test_idle_timeout_zero(void)
{
	struct origin *o;
	struct conn *c;
	unsigned g;
	int p;

	setup(10, 8, 0);
	o = origin("http://a.test/");
	c = take_new(o, gen, &p);
	pool_release(c);
	CHECK(closed(p));
	CHECK(metrics.conns_open == 0 && metrics.conns_idle == 0);
	CHECK(told.origin_freed == 1 && told.room_freed == 1);
	CHECK(pool_take(o, 0, gen, &c) == POOL_NEW);
	pool_close(c);
	close(p);

	/* The same when a reload sets it to 0, for a batch still alive. */
	pool_reload(10, 8, 60);
	g = pool_batch_begin();
	c = take_new(o, g, &p);
	pool_reload(10, 8, 0);
	pool_release(c);
	CHECK(closed(p));
	close(p);
	pool_batch_end(g);
	pool_origin_put(o);
	teardown();
}

static void
guard_fired(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	*(int *)arg = 1;
}

/* The idle timeout closes a kept connection; 1 s, driven by the loop. */
static void
test_idle_timeout_expires(void)
{
	static const struct timeval limit = { 3, 0 };
	struct origin *o;
	struct conn *c;
	struct event *guard;
	int p, gave_up = 0;

	setup(10, 8, 1);
	o = origin("http://a.test/");
	c = take_new(o, gen, &p);
	pool_release(c);
	guard = evtimer_new(base, guard_fired, &gave_up);
	evtimer_add(guard, &limit);
	for (int i = 0; i < 10 && metrics.conns_open > 0 && !gave_up; i++)
		event_base_loop(base, EVLOOP_ONCE);
	CHECK(!gave_up);
	CHECK(metrics.conns_open == 0 && closed(p));
	CHECK(told.origin_freed == 2 && told.room_freed == 2);	/* release, close */
	event_free(guard);
	close(p);
	pool_origin_put(o);
	teardown();
}

/* The remote address as logged and reported, the longest one included. */
static void
test_conn_remote(void)
{
	struct sockaddr_storage ss;
	struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
	struct origin *o;
	struct conn *c;

	setup(10, 8, 60);
	o = origin("http://a.test/");
	CHECK(pool_take(o, 0, gen, &c) == POOL_NEW);
	memset(&ss, 0, sizeof(ss));
	s4->sin_family = AF_INET;
	s4->sin_port = htons(80);
	inet_pton(AF_INET, "1.2.3.4", &s4->sin_addr);
	pool_conn_set_remote(c, &ss);
	CHECK_STR(pool_conn_remote(c), "1.2.3.4:80");
	memset(&ss, 0, sizeof(ss));
	s6->sin6_family = AF_INET6;
	s6->sin6_port = htons(65535);
	memset(&s6->sin6_addr, 0xff, sizeof(s6->sin6_addr));	/* the longest */
	pool_conn_set_remote(c, &ss);
	CHECK_STR(pool_conn_remote(c),
	    "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535");
	CHECK(pool_conn_tls(c) != NULL);
	pool_close(c);
	pool_origin_put(o);
	teardown();
}

/* A session stand-in: the pool frees it when its connection closes. */
static int sessions_freed;

static void
fake_session_free(void *session)
{
	(void)session;
	sessions_freed++;
}

/* Multiplexing: the first handshake is waited for, then SETTINGS; streams
 * are shared up to the server's limit; a fresh taker shares busy
 * connections but not idle ones; per_host bounds the shared connections;
 * a retired one closes with its last stream. */
static void
test_multiplexing(void)
{
	struct origin *o, *plain;
	struct conn *c1 = NULL, *c2 = NULL, *c = NULL;
	int p1, p2;

	setup(10, 8, 60);
	sessions_freed = 0;
	o = origin("https://a.test/");
	plain = origin("http://b.test/");
	CHECK(pool_take_shared(plain, gen, 8, 0, &c) == POOL_OWN);	/* no h2 without TLS */
	CHECK(pool_take_shared(o, gen, 8, 0, &c) == POOL_OWN);	/* nothing known yet */
	CHECK(pool_take(o, POOL_TAKE_MUX, gen, &c1) == POOL_NEW);
	p1 = attach(c1);
	CHECK(pool_take_shared(o, gen, 8, 0, &c) == POOL_FULL_ORIGIN);	/* its handshake */
	CHECK(pool_take_shared(o, gen, 8, 1, &c) == POOL_FULL_ORIGIN);
	pool_conn_set_mux(c1, c1, fake_session_free);
	CHECK(pool_conn_mux(c1) == c1);
	CHECK(pool_take_shared(o, gen, 8, 0, &c) == POOL_FULL_ORIGIN);	/* its SETTINGS */
	pool_conn_set_max_streams(c1, 3);
	CHECK(metrics.conns_h2 == 1 && metrics.h2_streams == 1);
	CHECK(pool_take_shared(o, gen, 8, 0, &c) == POOL_SHARED && c == c1);
	CHECK(pool_take_shared(o, gen, 8, 1, &c) == POOL_SHARED && c == c1);	/* busy: alive */
	CHECK(metrics.h2_streams == 3);
	CHECK(pool_take_shared(o, gen, 1, 0, &c) == POOL_FULL_ORIGIN);	/* per_host 1 */
	CHECK(pool_take_shared(o, gen, 8, 0, &c) == POOL_FULL_SHARED);	/* may open another */
	for (int i = 0; i < 3; i++)
		pool_release(c1);
	CHECK(metrics.h2_streams == 0 && metrics.conns_idle == 1 && !closed(p1));
	CHECK(pool_take_shared(o, gen, 8, 1, &c) == POOL_OWN);		/* idle: maybe stale */
	CHECK(pool_take_shared(o, gen, 8, 0, &c) == POOL_SHARED && c == c1);
	CHECK(metrics.conns_idle == 0);
	/* A second connection; the first retires (GOAWAY) and closes with its
	 * last stream, freeing its session. */
	CHECK(pool_take(o, POOL_TAKE_MUX | POOL_TAKE_FRESH, gen, &c2) == POOL_NEW);
	p2 = attach(c2);
	pool_conn_set_mux(c2, c2, fake_session_free);
	pool_conn_set_max_streams(c2, 100);
	pool_conn_retire(c1);
	CHECK(sessions_freed == 0 && !closed(p1));
	CHECK(pool_take_shared(o, gen, 8, 0, &c) == POOL_SHARED && c == c2);
	pool_release(c1);
	CHECK(sessions_freed == 1 && closed(p1));
	CHECK(metrics.conns_h2 == 1);
	pool_release(c);
	pool_release(c2);
	pool_conn_retire(c2);	/* idle: closes at once */
	CHECK(sessions_freed == 2 && closed(p2));
	CHECK(metrics.conns_h2 == 0 && metrics.h2_streams == 0);
	pool_origin_put(plain);
	pool_origin_put(o);
	close(p1);
	close(p2);
	teardown();
}

/* An origin whose first handshake said HTTP/1.1 is not waited for again. */
static void
test_single_origin_learnt(void)
{
	struct origin *o;
	struct conn *c1 = NULL, *c2 = NULL, *c = NULL;

	setup(10, 8, 60);
	o = origin("https://a.test/");
	CHECK(pool_take(o, POOL_TAKE_MUX, gen, &c1) == POOL_NEW);
	CHECK(pool_take_shared(o, gen, 8, 0, &c) == POOL_FULL_ORIGIN);
	pool_conn_set_single(c1);
	CHECK(pool_take_shared(o, gen, 8, 0, &c) == POOL_OWN);
	CHECK(pool_take(o, POOL_TAKE_MUX, gen, &c2) == POOL_NEW);
	CHECK(pool_take_shared(o, gen, 8, 0, &c) == POOL_OWN);	/* c2 opening: not waited for */
	pool_close(c1);
	pool_close(c2);
	pool_origin_put(o);
	teardown();
}

/* With idle_timeout_s 0 a multiplexing connection whose last stream ended
 * waits out the loop turn: requests woken in the same read may share it. */
static void
test_multiplexing_idle_timeout_zero(void)
{
	struct origin *o;
	struct conn *c1 = NULL, *c = NULL;
	int p1;

	setup(10, 8, 0);
	sessions_freed = 0;
	o = origin("https://a.test/");
	CHECK(pool_take(o, POOL_TAKE_MUX, gen, &c1) == POOL_NEW);
	p1 = attach(c1);
	pool_conn_set_mux(c1, c1, fake_session_free);
	pool_conn_set_max_streams(c1, 10);
	pool_release(c1);	/* its opener's stream ends */
	CHECK(sessions_freed == 0);
	CHECK(pool_take_shared(o, gen, 8, 0, &c) == POOL_SHARED && c == c1);
	pool_release(c1);
	CHECK(closed(p1) && sessions_freed == 1);	/* the loop turned: closed */
	pool_origin_put(o);
	close(p1);
	teardown();
}

int
main(void)
{
	log_level = LOG_LEVEL_ERROR;	/* the pressure warnings are expected */
	test_origin_refcount();
	test_conn_holds_origin();
	test_take_new_and_full_origin();
	test_take_full_global();
	test_reuse_most_recent();
	test_fresh_never_reuses();
	test_fresh_at_limit_replaces_idle();
	test_full_global_closes_others_idle();
	test_generations();
	test_generation_release_and_reload();
	test_listener_told();
	test_fd_pressure();
	test_fd_pressure_floor();
	test_idle_peer_closes();
	test_idle_peer_talks();
	test_idle_timeout_zero();
	test_idle_timeout_expires();
	test_conn_remote();
	test_multiplexing();
	test_single_origin_learnt();
	test_multiplexing_idle_timeout_zero();
	return UNIT_DONE();
}
