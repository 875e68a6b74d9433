/* pool.h: upstream origins and their kept-alive connections, and the
 * connection budget: max_per_host per origin and max_connections in all
 * (lowered to what RLIMIT_NOFILE allows).
 *
 * A connection is a slot and a transport: the pool counts it, keeps it idle
 * between uses and closes it; whoever took it connects it and moves bytes
 * on it. Nothing here assumes one request per connection. */
#ifndef FANOUTD_POOL_H
#define FANOUTD_POOL_H

struct event_base;
struct sockaddr_storage;
struct bufferevent;
struct tls_sessions;
struct url;

struct origin;	/* scheme, host and port, shared by all batches */
struct conn;	/* one upstream connection */

/* What the pool tells the layer above when room frees (pool_set_listener);
 * calls come from inside pool_release, pool_close, pool_reload and the
 * pool's own events. */
struct pool_listener {
	/* o has an idle connection, or one fewer open. */
	void (*origin_freed)(struct origin *o);
	/* The global budget may have room again. */
	void (*room_freed)(void);
	/* A reload changed the limits: any origin may have room. */
	void (*limits_changed)(void);
};

void pool_init(struct event_base *base, unsigned max_conns, unsigned max_per_host,
    unsigned idle_timeout_s);
void pool_set_listener(const struct pool_listener *listener);
void pool_shutdown(void);

/* The origin of u, created on first use; each get is paired with a put. */
struct origin *pool_origin_get(const struct url *u);
void pool_origin_put(struct origin *o);
const char *pool_origin_key(const struct origin *o);
/* Its parts: https or not, the host as url.c keeps it, the port. */
int pool_origin_https(const struct origin *o);
const char *pool_origin_host(const struct origin *o);
unsigned pool_origin_port(const struct origin *o);
/* One pointer of the layer above's per-origin state; NULL at first. */
void *pool_origin_data(const struct origin *o);
void pool_origin_set_data(struct origin *o, void *data);

enum pool_rc {
	POOL_REUSE,		/* *c is a kept-alive connection */
	POOL_SHARED,		/* *c is a multiplexing connection; the request is one more on it */
	POOL_OWN,		/* pool_take_shared: nothing to share, take a connection of one's own */
	POOL_FULL_SHARED,	/* pool_take_shared: its shared connections are busy; another may open */
	POOL_NEW,		/* *c is a new, unconnected connection (counted) */
	POOL_FULL_ORIGIN,	/* max_per_host reached for o */
	POOL_FULL_GLOBAL,	/* the budget is used and nothing idle can be closed */
};

/* How a taker takes (pool_take's flags). */
#define POOL_TAKE_FRESH		0x1	/* not a kept-alive connection */
#define POOL_TAKE_MUX		0x2	/* it can multiplex (HTTP/2 offered by ALPN): a new
					 * connection to an origin not known yet tells */

/* A connection of one's own: kept-alive, or new. gen: the asking batch's
 * generation (from pool_batch_begin); it reuses only connections opened by
 * batches of the same generation. */
enum pool_rc pool_take(struct origin *o, int how, unsigned gen, struct conn **c);

/* For a taker that can multiplex, first: one more request on a shared
 * connection of o with room (POOL_SHARED; fresh: not an idle one); or
 * POOL_FULL_ORIGIN, to wait, while o's first connection is still to say
 * whether it multiplexes, while a new one's SETTINGS are due, or when o has
 * max_conns multiplexing connections and all are busy; POOL_FULL_SHARED
 * when it has fewer, all busy (the taker may open one with pool_take); else
 * POOL_OWN: pool_take. */
enum pool_rc pool_take_shared(struct origin *o, unsigned gen, unsigned max_conns, int fresh,
    struct conn **c);

/* A batch starts: returns its generation, the number of reloads so far.
 * Connections of a generation are kept while it has batches alive (or it is
 * the current one); pool_batch_end when the batch is over. */
unsigned pool_batch_begin(void);
void pool_batch_end(unsigned gen);

/* A connection that served a complete response and may serve another; on
 * a multiplexing connection, one request is over (whatever its outcome). */
void pool_release(struct conn *c);

/* Closes c and frees its slot; for every other end of a connection. */
void pool_close(struct conn *c);

/* The connection's transport: NULL until its taker connects it; the pool
 * frees the one set last when it closes c. */
struct bufferevent *pool_conn_bev(const struct conn *c);
void pool_conn_set_bev(struct conn *c, struct bufferevent *bev);
/* Where it goes, "1.2.3.4:80" once set: formatted once for every use. */
void pool_conn_set_remote(struct conn *c, const struct sockaddr_storage *ss);
const char *pool_conn_remote(const struct conn *c);
/* Its origin's TLS sessions, to resume with. */
struct tls_sessions *pool_conn_tls(const struct conn *c);

/* What the handshake said. A single-request connection (HTTP/1.1). Or a
 * multiplexing one: session (freed with session_free when c closes) takes
 * one request, its taker's, until pool_conn_set_max_streams says how many
 * the server allows; pool_conn_retire when it takes no new one (GOAWAY,
 * a dead transport): it closes with its last request. */
void pool_conn_set_single(struct conn *c);
void pool_conn_set_mux(struct conn *c, void *session, void (*session_free)(void *));
void pool_conn_set_max_streams(struct conn *c, unsigned n);
void pool_conn_retire(struct conn *c);
/* The session of a multiplexing connection, or NULL. */
void *pool_conn_mux(const struct conn *c);

/* Descriptors ran out while opening: hold the budget at what is open now. */
void pool_fd_pressure(void);

/* A reload: a new generation begins. Connections opened before it, under
 * the old address policy and trust store, serve only batches of their own
 * generation and are closed once those are over; the new limits apply from
 * the next connection on. */
void pool_reload(unsigned max_conns, unsigned max_per_host, unsigned idle_timeout_s);

/* What the pool holds for an origin, for /v1/origins. */
struct pool_origin_info {
	unsigned conns;		/* open or opening */
	unsigned mux;		/* of them, multiplexing (HTTP/2) */
	unsigned idle;		/* of them, serving nothing */
	unsigned streams;	/* requests on the multiplexing ones */
};
void pool_origin_info(const struct origin *o, struct pool_origin_info *info);
/* Calls fn for every origin the pool knows; fn must not get or put one. */
void pool_foreach_origin(void (*fn)(const struct origin *o, void *arg), void *arg);

/* True when pool_take could give some origin a connection now. */
int pool_has_room(void);

#endif
