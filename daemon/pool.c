/* pool.c: see pool.h. Idle connections are watched for reads: an upstream
 * that closes (or talks) while idle gets its connection closed at once, so a
 * reused connection is at least believed alive when it is handed out.
 *
 * An origin nothing refers to any more is kept if it holds TLS sessions, so
 * that the next batch to it resumes; at most POOL_MAX_RETIRED of them, the
 * least recently used going first. */

#include <stdlib.h>
#include <sys/queue.h>
#include <arpa/inet.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "log.h"
#include "map.h"
#include "metrics.h"
#include "pool.h"
#include "tls.h"
#include "url.h"
#include "util.h"

#define POOL_MAX_RETIRED 1024

/* What an origin's connections speak, learnt from the first handshake
 * that could multiplex. */
enum pool_kind { POOL_KIND_UNKNOWN, POOL_KIND_SINGLE, POOL_KIND_MUX };

struct origin {
	char *key;			/* "http://host:port", the map key */
	int https;
	char *host;			/* as url.c keeps it */
	uint16_t port;
	enum pool_kind kind;
	unsigned probing;		/* connections in their handshake, opened by
					 * takers that can multiplex */
	TAILQ_HEAD(, conn) muxed;	/* multiplexing connections */
	unsigned refcnt;		/* takers' gets and conns */
	unsigned nconns;		/* open or opening, idle included */
	TAILQ_HEAD(pool_conns, conn) idle;	/* most recently used last */
	struct tls_sessions *tls;	/* to resume */
	int retired;			/* unreferenced, kept for its TLS sessions */
	TAILQ_ENTRY(origin) retire_link;
	void *data;			/* the layer above's */
};

struct conn {
	struct bufferevent *bev;	/* NULL until its taker connects it */
	struct origin *origin;
	char remote[INET6_ADDRSTRLEN + 8];
	unsigned gen;			/* the pool generation of the batch that opened it */
	int idle;
	int probing;			/* counted in origin->probing until its handshake says */
	/* A multiplexing connection: its session, how many requests it has
	 * and takes at once (settled: as the server said), and whether it
	 * takes new ones. */
	void *mux;
	void (*mux_free)(void *);
	unsigned nstreams, max_streams;
	int settled;
	int retiring;
	struct event *timer;		/* idle timeout of a multiplexing connection */
	TAILQ_ENTRY(conn) link;		/* origin->idle */
	TAILQ_ENTRY(conn) lru;		/* the pool's global idle list */
	TAILQ_ENTRY(conn) mlink;	/* origin->muxed */
};

static struct {
	const struct pool_listener *listener;
	struct event_base *base;
	struct map *origins;
	TAILQ_HEAD(, conn) idle;	/* all idle connections, oldest first */
	TAILQ_HEAD(, origin) retired;	/* oldest first */
	unsigned nretired;
	unsigned gen;
	unsigned nconns;
	unsigned budget;
	unsigned configured;		/* budget before descriptor pressure */
	unsigned max_per_host;
	struct timeval idle_timeout;
	struct event *restore;		/* ends a descriptor-pressure hold */
	/* Generations (see pool_reload) that have batches alive, and how many:
	 * connections of such a generation are kept for its batches, which
	 * alone may reuse them. A handful at most, one per reload that
	 * happened while batches ran. */
	struct pool_gen {
		unsigned gen;
		unsigned batches;
	} *gens;
	size_t ngens, capgens;
} pool;

static void pool_origin_free(struct origin *o);
static void pool_conn_learnt(struct conn *c, enum pool_kind kind);

static void
pool_tell_room(void)
{
	if (pool.listener != NULL)
		pool.listener->room_freed();
}

static void
pool_tell_origin(struct origin *o)
{
	if (pool.listener != NULL)
		pool.listener->origin_freed(o);
}

static void
pool_restore(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	pool.budget = pool.configured;
	pool_tell_room();
}

void
pool_set_listener(const struct pool_listener *listener)
{
	pool.listener = listener;
}

void
pool_init(struct event_base *base, unsigned max_conns, unsigned max_per_host,
    unsigned idle_timeout_s)
{
	pool.base = base;
	pool.origins = map_new();
	TAILQ_INIT(&pool.idle);
	TAILQ_INIT(&pool.retired);
	pool.budget = pool.configured = max_conns;
	pool.max_per_host = max_per_host;
	pool.idle_timeout.tv_sec = idle_timeout_s;
	pool.idle_timeout.tv_usec = 0;
	pool.restore = evtimer_new(base, pool_restore, NULL);
}

void
pool_shutdown(void)
{
	struct conn *c;

	struct origin *o;

	while ((c = TAILQ_FIRST(&pool.idle)) != NULL)
		pool_close(c);
	while ((o = TAILQ_FIRST(&pool.retired)) != NULL)
		pool_origin_free(o);
	map_free(pool.origins);
	pool.origins = NULL;
	event_free(pool.restore);
	free(pool.gens);
	pool.gens = NULL;
	pool.ngens = pool.capgens = 0;
}

static struct pool_gen *
pool_gen_find(unsigned gen)
{
	for (size_t i = 0; i < pool.ngens; i++)
		if (pool.gens[i].gen == gen)
			return &pool.gens[i];
	return NULL;
}

static int
pool_gen_live(unsigned gen)
{
	return gen == pool.gen || pool_gen_find(gen) != NULL;
}

/* Closes the idle connections no live generation can use any more. */
static void
pool_close_dead_idle(void)
{
	struct conn *c, *next;

	for (c = TAILQ_FIRST(&pool.idle); c != NULL; c = next) {
		next = TAILQ_NEXT(c, lru);
		if (!pool_gen_live(c->gen))
			pool_close(c);
	}
}

unsigned
pool_batch_begin(void)
{
	struct pool_gen *g = pool_gen_find(pool.gen);

	if (g == NULL) {
		if (pool.ngens == pool.capgens) {
			pool.capgens = pool.capgens ? 2 * pool.capgens : 4;
			pool.gens = xreallocarray(pool.gens, pool.capgens, sizeof(*pool.gens));
		}
		g = &pool.gens[pool.ngens++];
		g->gen = pool.gen;
		g->batches = 0;
	}
	g->batches++;
	return pool.gen;
}

void
pool_batch_end(unsigned gen)
{
	struct pool_gen *g = pool_gen_find(gen);

	if (g == NULL || --g->batches > 0)
		return;
	*g = pool.gens[--pool.ngens];
	if (gen != pool.gen)
		pool_close_dead_idle();
}

void
pool_reload(unsigned max_conns, unsigned max_per_host, unsigned idle_timeout_s)
{
	pool.gen++;
	pool_close_dead_idle();
	pool.configured = max_conns;
	/* During a descriptor-pressure hold the lower figure stands until
	 * pool_restore; connections over a lowered limit finish their requests
	 * and are not replaced. */
	if (!evtimer_pending(pool.restore, NULL) || pool.budget > max_conns)
		pool.budget = max_conns;
	pool.max_per_host = max_per_host;
	pool.idle_timeout.tv_sec = idle_timeout_s;
	if (pool.listener != NULL)	/* raised limits can let waiting origins go */
		pool.listener->limits_changed();
}

int
pool_has_room(void)
{
	return pool.nconns < pool.budget || !TAILQ_EMPTY(&pool.idle);
}

static void
pool_origin_free(struct origin *o)
{
	if (o->retired) {
		TAILQ_REMOVE(&pool.retired, o, retire_link);
		pool.nretired--;
	}
	map_del(pool.origins, o->key);
	tls_sessions_free(o->tls);
	free(o->key);
	free(o->host);
	free(o);
}

struct origin *
pool_origin_get(const struct url *u)
{
	struct origin *o = map_get(pool.origins, u->origin);

	if (o != NULL && o->retired) {
		TAILQ_REMOVE(&pool.retired, o, retire_link);
		pool.nretired--;
		o->retired = 0;
	}
	if (o == NULL) {
		o = xcalloc(1, sizeof(*o));
		o->key = xstrdup(u->origin);
		o->https = u->https;
		o->host = xstrdup(u->host);
		o->port = u->port;
		o->tls = tls_sessions_new();
		TAILQ_INIT(&o->idle);
		TAILQ_INIT(&o->muxed);
		map_put(pool.origins, o->key, o);
	}
	o->refcnt++;
	return o;
}

void
pool_origin_put(struct origin *o)
{
	if (--o->refcnt > 0)
		return;
	if (tls_sessions_count(o->tls) == 0) {
		pool_origin_free(o);
		return;
	}
	o->retired = 1;
	TAILQ_INSERT_TAIL(&pool.retired, o, retire_link);
	if (++pool.nretired > POOL_MAX_RETIRED)
		pool_origin_free(TAILQ_FIRST(&pool.retired));
}

int
pool_origin_https(const struct origin *o)
{
	return o->https;
}

const char *
pool_origin_host(const struct origin *o)
{
	return o->host;
}

unsigned
pool_origin_port(const struct origin *o)
{
	return o->port;
}

const char *
pool_origin_key(const struct origin *o)
{
	return o->key;
}

void *
pool_origin_data(const struct origin *o)
{
	return o->data;
}

void
pool_origin_set_data(struct origin *o, void *data)
{
	o->data = data;
}

static void
pool_unidle(struct conn *c)
{
	TAILQ_REMOVE(&c->origin->idle, c, link);
	TAILQ_REMOVE(&pool.idle, c, lru);
	c->idle = 0;
	metrics.conns_idle--;
	if (c->timer != NULL)
		evtimer_del(c->timer);
}

/* o's most recently used idle connection of generation gen, or NULL: a
 * batch from before a reload reuses only connections opened under its own
 * policy and trust store, and newer batches never reuse those. */
static struct conn *
pool_idle_of(struct origin *o, unsigned gen)
{
	struct conn *c;

	TAILQ_FOREACH_REVERSE(c, &o->idle, pool_conns, link)
		if (c->gen == gen && c->mux == NULL)
			return c;
	return NULL;
}

/* A multiplexing connection of o and generation gen that takes another
 * request now, the busiest first so that idle ones can time out; fresh: not
 * an idle one (a busy one is known alive). *live: how many there are;
 * *wait: one has yet to hear how many the server takes. */
static struct conn *
pool_mux_of(struct origin *o, unsigned gen, int fresh, unsigned *live, int *wait)
{
	struct conn *c, *best = NULL;

	*live = 0;
	*wait = 0;
	TAILQ_FOREACH(c, &o->muxed, mlink) {
		if (c->gen != gen || c->retiring)
			continue;
		(*live)++;
		if (!c->settled)
			*wait = 1;
		else if (c->nstreams < c->max_streams && !(fresh && c->idle) &&
		    (best == NULL || c->nstreams > best->nstreams))
			best = c;
	}
	return best;
}

enum pool_rc
pool_take_shared(struct origin *o, unsigned gen, unsigned max_conns, int fresh,
    struct conn **cp)
{
	struct conn *c;
	unsigned live;
	int wait;

	if (!o->https)
		return POOL_OWN;
	if ((c = pool_mux_of(o, gen, fresh, &live, &wait)) != NULL) {
		if (c->idle)
			pool_unidle(c);
		c->nstreams++;
		metrics.h2_streams++;
		*cp = c;
		return POOL_SHARED;
	}
	/* A connection still in its handshake may turn out shared: unless the
	 * origin is known to take one request a connection, wait for it. */
	if (wait || (o->kind != POOL_KIND_SINGLE && o->probing > 0) ||
	    (o->kind == POOL_KIND_MUX && live >= max_conns))
		return POOL_FULL_ORIGIN;
	return o->kind == POOL_KIND_MUX && !fresh ? POOL_FULL_SHARED : POOL_OWN;
}

enum pool_rc
pool_take(struct origin *o, int how, unsigned gen, struct conn **cp)
{
	int fresh = how & POOL_TAKE_FRESH, mux = how & POOL_TAKE_MUX;
	struct conn *c;

	if (!fresh && (c = pool_idle_of(o, gen)) != NULL) {
		pool_unidle(c);
		bufferevent_setcb(c->bev, NULL, NULL, NULL, NULL);
		bufferevent_set_timeouts(c->bev, NULL, NULL);
		*cp = c;
		return POOL_REUSE;
	}
	if (o->nconns >= pool.max_per_host) {
		if ((c = TAILQ_FIRST(&o->idle)) == NULL)
			return POOL_FULL_ORIGIN;
		pool_close(c);	/* make room for the fresh one: the least recently used */
	}
	if (pool.nconns >= pool.budget) {
		/* Another origin's idle connection is worth less than a
		 * request that is ready to go: close the oldest. */
		if (TAILQ_EMPTY(&pool.idle))
			return POOL_FULL_GLOBAL;
		pool_close(TAILQ_FIRST(&pool.idle));
	}
	c = xcalloc(1, sizeof(*c));
	c->origin = o;
	c->gen = gen;
	if (mux && o->https) {
		c->probing = 1;
		o->probing++;
	}
	o->refcnt++;
	o->nconns++;
	pool.nconns++;
	metrics.conns_open++;
	*cp = c;
	return POOL_NEW;
}

static void
pool_idle_event(struct bufferevent *bev, short what, void *arg)
{
	struct conn *c = arg;

	(void)bev;
	(void)what;
	/* EOF, an error, the idle timeout: the connection is done. */
	pool_close(c);
}

static void
pool_idle_read(struct bufferevent *bev, void *arg)
{
	(void)bev;
	/* An upstream that speaks unasked cannot be trusted with the next
	 * request: those bytes would be read as its response. */
	pool_close(arg);
}

static void pool_mux_release(struct conn *c);

/* c has nothing to do: closed when it is not to be kept, else idle (most
 * recently used last). Returns whether it was kept. A multiplexing one is
 * kept even with idle_timeout_s 0, for what is left of this loop turn: its
 * last stream often ends in the same read that woke the requests about to
 * share it. */
static int
pool_keep_idle(struct conn *c)
{
	if (c->retiring || !pool_gen_live(c->gen) ||
	    (pool.idle_timeout.tv_sec == 0 && c->mux == NULL)) {
		pool_close(c);
		return 0;
	}
	c->idle = 1;
	TAILQ_INSERT_TAIL(&c->origin->idle, c, link);
	TAILQ_INSERT_TAIL(&pool.idle, c, lru);
	metrics.conns_idle++;
	return 1;
}

void
pool_release(struct conn *c)
{
	struct origin *o = c->origin;

	if (c->mux != NULL) {
		pool_mux_release(c);
		return;
	}
	if (!pool_keep_idle(c))
		return;
	bufferevent_setcb(c->bev, pool_idle_read, NULL, pool_idle_event, c);
	bufferevent_set_timeouts(c->bev, &pool.idle_timeout, NULL);
	bufferevent_enable(c->bev, EV_READ);
	pool_tell_origin(o);
	pool_tell_room();	/* an idle connection can be closed for another origin */
}

void
pool_close(struct conn *c)
{
	struct origin *o = c->origin;

	if (c->idle)
		pool_unidle(c);
	pool_conn_learnt(c, POOL_KIND_UNKNOWN);	/* closed in its handshake: no news */
	if (c->mux != NULL) {
		TAILQ_REMOVE(&o->muxed, c, mlink);
		c->mux_free(c->mux);
		metrics.conns_h2--;
		metrics.h2_streams -= c->nstreams;
	}
	if (c->timer != NULL)
		event_free(c->timer);
	if (c->bev != NULL) {
		if (o->https)
			tls_conn_closing(c->bev);
		bufferevent_free(c->bev);
	}
	o->nconns--;
	pool.nconns--;
	metrics.conns_open--;
	free(c);
	pool_tell_origin(o);
	pool_tell_room();
	pool_origin_put(o);
}

struct bufferevent *
pool_conn_bev(const struct conn *c)
{
	return c->bev;
}

void
pool_conn_set_bev(struct conn *c, struct bufferevent *bev)
{
	c->bev = bev;
}

void
pool_conn_set_remote(struct conn *c, const struct sockaddr_storage *ss)
{
	addr_format(ss, c->remote, sizeof(c->remote));
}

const char *
pool_conn_remote(const struct conn *c)
{
	return c->remote;
}

struct tls_sessions *
pool_conn_tls(const struct conn *c)
{
	return c->origin->tls;
}

void
pool_origin_info(const struct origin *o, struct pool_origin_info *info)
{
	const struct conn *c;

	info->conns = o->nconns;
	info->mux = info->idle = info->streams = 0;
	TAILQ_FOREACH(c, &o->idle, link)
		info->idle++;
	TAILQ_FOREACH(c, &o->muxed, mlink) {
		info->mux++;
		info->streams += c->nstreams;
	}
}

struct pool_walk {
	void (*fn)(const struct origin *, void *);
	void *arg;
};

static void
pool_walk_one(void *val, void *arg)
{
	struct pool_walk *w = arg;

	w->fn(val, w->arg);
}

void
pool_foreach_origin(void (*fn)(const struct origin *o, void *arg), void *arg)
{
	struct pool_walk w = { fn, arg };

	map_foreach(pool.origins, pool_walk_one, &w);
}

/* c's handshake has said what its origin speaks. */
static void
pool_conn_learnt(struct conn *c, enum pool_kind kind)
{
	if (!c->probing)
		return;
	c->probing = 0;
	c->origin->probing--;
	if (kind != POOL_KIND_UNKNOWN)
		c->origin->kind = kind;
	pool_tell_origin(c->origin);
}

void
pool_conn_set_single(struct conn *c)
{
	pool_conn_learnt(c, POOL_KIND_SINGLE);
}

void
pool_conn_set_mux(struct conn *c, void *session, void (*session_free)(void *))
{
	struct origin *o = c->origin;

	c->mux = session;
	c->mux_free = session_free;
	c->nstreams = 1;	/* its taker's */
	c->max_streams = 1;
	metrics.conns_h2++;
	metrics.h2_streams++;
	TAILQ_INSERT_TAIL(&o->muxed, c, mlink);
	o->kind = POOL_KIND_MUX;
	pool_conn_learnt(c, POOL_KIND_MUX);
}

void *
pool_conn_mux(const struct conn *c)
{
	return c->mux;
}

void
pool_conn_set_max_streams(struct conn *c, unsigned n)
{
	c->max_streams = n > 0 ? n : 1;
	c->settled = 1;
	pool_tell_origin(c->origin);
}

void
pool_conn_retire(struct conn *c)
{
	if (c->retiring)
		return;
	c->retiring = 1;
	c->settled = 1;
	if (c->nstreams == 0)
		pool_close(c);
	else
		pool_tell_origin(c->origin);	/* its waiters open a new one */
}

static void
pool_mux_idle_timeout(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	pool_close(arg);
}

/* A request on a multiplexing connection is over. Without requests the
 * connection waits idle like any other; its session goes on reading, and
 * tells (pool_conn_retire) if the server goes away. */
static void
pool_mux_release(struct conn *c)
{
	struct origin *o = c->origin;

	metrics.h2_streams--;
	if (--c->nstreams > 0) {
		pool_tell_origin(o);
		return;
	}
	if (!c->settled) {	/* no SETTINGS yet: kept, it would hold its origin back */
		pool_close(c);
		return;
	}
	if (!pool_keep_idle(c))
		return;
	if (c->timer == NULL)
		c->timer = evtimer_new(pool.base, pool_mux_idle_timeout, c);
	evtimer_add(c->timer, &pool.idle_timeout);
	pool_tell_origin(o);
	pool_tell_room();
}

void
pool_fd_pressure(void)
{
	/* Callers' connections share the descriptor table; the hold lasts a
	 * few seconds and is then lifted to try the configured budget again. */
	static const struct timeval hold = { 5, 0 };
	unsigned open = pool.nconns > 1 ? pool.nconns - 1 : 1;

	if (open < pool.budget) {
		log_warn("out of file descriptors: holding upstream connections at %u", open);
		pool.budget = open;
	}
	evtimer_add(pool.restore, &hold);
}
