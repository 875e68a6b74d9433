/* engine.h: the types the fan-out engine's modules share. Each struct names
 * its owner; the other modules read its fields but change only those marked
 * as theirs.
 *
 *   origin, conn  pool.c      kept-alive connections and connection counts
 *   bhost         sched.c     one batch's queue and slots for one origin
 *   sched_batch   sched.c     the scheduling half of a batch
 *   ureq          upstream.c  one upstream request: its state machine
 */
#ifndef FANOUTD_ENGINE_H
#define FANOUTD_ENGINE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <arpa/inet.h>

#include "dnscache.h"
#include "h1.h"
#include "url.h"
#include "util.h"

struct batch;
struct conf;
struct json_t;
struct bufferevent;
struct event;
struct evbuffer;
struct body_dec;
struct bhost;

enum body_mode { BODY_AUTO, BODY_TEXT, BODY_BASE64, BODY_JSON, BODY_NONE };

/* A batch's options, settled by intake from the document and the
 * configuration snapshot; read by every request of the batch. */
struct bopts {
	unsigned concurrency;
	unsigned per_host;
	unsigned timeout_ms;
	unsigned connect_timeout_ms;
	unsigned deadline_ms;		/* 0: none */
	size_t max_body_bytes;
	size_t max_header_bytes;
	unsigned follow_redirects;
	unsigned retries;
	const struct json_t *headers;	/* defaults for every request, or NULL */
	enum body_mode body;
	int order_input;
	int include_headers;
	int ndjson;
	const struct conf *conf;	/* the snapshot the batch started with */
	struct ssl_ctx_st *tls;		/* its TLS context (a reference) */
};

/* An upstream origin (scheme, host, port) shared by all batches. */
struct origin {
	char *key;			/* "http://host:port", the map key */
	int https;
	char *host;
	uint16_t port;
	unsigned refcnt;		/* bhosts and conns */
	unsigned nconns;		/* open or opening, idle included */
	TAILQ_HEAD(pool_conns, conn) idle;	/* most recently used last */
	struct ssl_session_st *tls_sessions[4];	/* tls.c's: to resume, newest last */
	unsigned ntls_sessions;
	int retired;			/* unreferenced, kept for its TLS sessions */
	TAILQ_ENTRY(origin) retire_link;
	/* sched.c's: */
	TAILQ_HEAD(, bhost) waiters;	/* bhosts waiting for this origin */
	int starving;			/* on the global starving list */
	TAILQ_ENTRY(origin) starve_link;
};

struct conn {
	struct bufferevent *bev;	/* NULL until upstream.c connects it */
	struct origin *origin;
	struct sockaddr_storage remote;
	socklen_t remotelen;
	char remote_str[INET6_ADDRSTRLEN + 8];	/* formatted once, for every result it serves */
	unsigned nreq;			/* requests it has carried */
	unsigned gen;			/* the pool generation of the batch that opened it */
	int idle;
	TAILQ_ENTRY(conn) link;		/* origin->idle */
	TAILQ_ENTRY(conn) lru;		/* the pool's global idle list */
};

enum bhost_where { BH_NONE, BH_READY, BH_WAITING };

struct bhost {
	struct origin *origin;
	struct sched_batch *sb;
	TAILQ_HEAD(, ureq) cont;	/* redirects and retries: they go first */
	/* Requests not dispatched yet are only their indexes, in input order:
	 * a ring that grows by doubling, so a queued request costs 4 bytes and
	 * its ureq exists only from dispatch on. */
	uint32_t *fresh;
	size_t fhead, fcount, fcap;
	unsigned inflight;		/* connections of this batch to this origin */
	enum bhost_where where;
	TAILQ_ENTRY(bhost) link;	/* sb->ready or origin->waiters */
	TAILQ_ENTRY(bhost) all;
};

struct sched_batch {
	TAILQ_HEAD(, bhost) ready;	/* bhosts that may dispatch now */
	TAILQ_HEAD(, bhost) hosts;	/* all of them, to free */
	struct map *bymap;		/* origin key -> bhost */
	unsigned inflight;		/* dispatched requests, backoffs included */
	unsigned concurrency;
	unsigned per_host;
	unsigned gen;			/* pool generation (configuration) it started in */
	unsigned ncontinuing;		/* queued redirects and retries */
	int paused;			/* output backpressure: only continuing may go */
	size_t need_index;		/* order "input": the index output waits for */
	struct batch *batch;
	int active;			/* on the scheduler's list */
	TAILQ_ENTRY(sched_batch) link;
};

enum ureq_state {
	UREQ_QUEUED,
	UREQ_RESOLVING,
	UREQ_CONNECTING,
	UREQ_TLS,
	UREQ_HEAD,
	UREQ_BODY,
	UREQ_BACKOFF,	/* waiting to retry */
	UREQ_DONE,
};

struct ureq {
	struct batch *batch;
	const struct bopts *opts;
	size_t index;
	enum ureq_state state;

	/* What to send, validated by intake. Strings and JSON values are
	 * borrowed from the batch document, which outlives every ureq. */
	struct url url;			/* the current hop's URL */
	const char *method;		/* changes to "GET" on a 303 */
	const struct json_t *headers;	/* the request's own: name -> string */
	const char *body;		/* "body", or NULL */
	size_t bodylen;
	const struct json_t *json;	/* "json", serialised when sent, or NULL */
	unsigned timeout_ms;

	/* sched.c's: */
	struct bhost *bh;
	int continuing;			/* dispatched before: a retry or redirect */
	int holds_slot;			/* counted in bh->inflight */
	int queued;			/* on bh->cont */
	TAILQ_ENTRY(ureq) qlink;
	TAILQ_ENTRY(ureq) blink;	/* batch.c's list of live requests */

	/* Progress. */
	struct conn *conn;
	struct dnscache_wait *dnsw;
	struct event *timer;
	struct h1_head head;
	struct h1_body hbody;
	struct body_dec *dec;
	struct evbuffer *raw;		/* transfer-decoded, before content decoding */
	struct evbuffer *resp;		/* the response body as the caller gets it */
	size_t resp_bytes;
	size_t max_body;
	unsigned attempts;
	unsigned hops;
	int reused;
	char remote[INET6_ADDRSTRLEN + 8];	/* where the last attempt went: "1.2.3.4:80" */
	int got_bytes;			/* any response byte on this attempt */
	int fresh_retry_done;		/* the one retry on a fresh connection */
	int want_fresh;			/* the next connection must not be a kept-alive one */
	int decode;			/* we asked for gzip/deflate: decode the body */
	int discard;			/* reading a body only to reuse the connection */
	struct event *skim;		/* body "none": discarding in the kernel */
	struct url next_url;		/* a redirect to follow once the body is read */
	int64_t retry_in_us;		/* >= 0: retry after this delay once the body is read */
	char **visited;			/* hrefs of earlier hops, to tell a loop */
	int strip_credentials;		/* redirected to another origin: no Authorization, Cookie */
	char *final_url;		/* set when a redirect was followed */

	/* Timings, microseconds since the epoch of now_us(). */
	uint64_t t_dispatch, t_phase;
	uint64_t t_connect;		/* connect began: TLS counts against connect_timeout_ms */
	double dns_ms, connect_ms, tls_ms, ttfb_ms;

	/* Outcome. */
	enum kind kind;
	char msg[160];
};

#endif
