/* upstream.c: see upstream.h.
 *
 * One event per request serves every time limit: it is re-armed at each
 * phase for the nearest of the phase's limit (connect) and the request's
 * total limit, so no trickling peer can stretch a request past timeout_ms.
 * Every attempt ends in upstream_end(), which alone decides between a
 * result, a redirect, a retry and a retry on a fresh connection; the state
 * changes only in upstream_set_state(), along the edges of one table.
 *
 * Lifetime: once done, a request is never touched by this file again, and
 * upstream_free() leaves the memory until the next loop turn, so code under
 * the done callback may still look at r->state. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <jansson.h>

#include "body.h"
#include "conf.h"
#include "dnscache.h"
#include "h1.h"
#include "h2.h"
#include "log.h"
#include "metrics.h"
#include "policy.h"
#include "pool.h"
#include "tls.h"
#include "upstream.h"
#include "wire.h"

#define UPSTREAM_DISCARD_MAX (64 * 1024)	/* body read only to keep a connection */
#define UPSTREAM_READ_MAX (128 * 1024)		/* bytes taken from a socket per read */
#define UPSTREAM_BACKOFF_BASE_US 100000u
#define UPSTREAM_BACKOFF_CAP_US 10000000u
#define UPSTREAM_MAX_RESENDS 10		/* unprocessed by the server, sent again */

enum ureq_state {
	UREQ_NEW,
	UREQ_QUEUED,	/* with its owner, for a retry or a hop */
	UREQ_RESOLVING,
	UREQ_CONNECTING,
	UREQ_TLS,
	UREQ_HEAD,
	UREQ_BODY,
	UREQ_BACKOFF,	/* waiting to retry */
	UREQ_DONE,
	UREQ_NSTATES,
};

static const char *const upstream_state_names[UREQ_NSTATES] = {
	"new", "queued", "resolving", "connecting", "tls", "head", "body", "backoff", "done",
};

/* The edges of the state machine: from each state, the states it may go
 * to. Any state may end (done); nothing leaves done. */
#define S_(s) (1u << (s))
static const unsigned upstream_edges[UREQ_NSTATES] = {
	[UREQ_NEW] = S_(UREQ_RESOLVING) | S_(UREQ_HEAD) | S_(UREQ_DONE),
	[UREQ_QUEUED] = S_(UREQ_RESOLVING) | S_(UREQ_HEAD) | S_(UREQ_DONE),
	[UREQ_RESOLVING] = S_(UREQ_CONNECTING) | S_(UREQ_BACKOFF) | S_(UREQ_DONE),
	[UREQ_CONNECTING] = S_(UREQ_TLS) | S_(UREQ_HEAD) | S_(UREQ_QUEUED) | S_(UREQ_BACKOFF) |
	    S_(UREQ_DONE),
	[UREQ_TLS] = S_(UREQ_HEAD) | S_(UREQ_BACKOFF) | S_(UREQ_DONE),
	[UREQ_HEAD] = S_(UREQ_BODY) | S_(UREQ_QUEUED) | S_(UREQ_BACKOFF) | S_(UREQ_DONE),
	[UREQ_BODY] = S_(UREQ_QUEUED) | S_(UREQ_BACKOFF) | S_(UREQ_DONE),
	[UREQ_BACKOFF] = S_(UREQ_QUEUED) | S_(UREQ_DONE),
	[UREQ_DONE] = 0,
};
#undef S_

/* What the body being read is for, settled when its head arrives. */
enum ureq_fate {
	FATE_RESULT,	/* the caller's result */
	FATE_REDIRECT,	/* read to keep the connection, then the hop to next_url */
	FATE_RETRY,	/* read to keep the connection, then a retry after retry_in_us */
};

/* How an attempt ended, as upstream_end() is told. */
enum ureq_end {
	END_RESPONSE,	/* the response is whole: its fate decides */
	END_FAILED,	/* an error that no retry mends */
	END_RETRYABLE,	/* connect failure or timeout before any response byte */
	END_STALE,	/* a reused connection closed before any response byte */
	END_NO_FD,	/* no descriptor to connect with: not an attempt yet */
	END_UNPROCESSED, /* the server says it did not process it (HTTP/2) */
};

struct ureq {
	const struct upstream_owner *owner;
	void *arg;
	const struct bopts *opts;
	enum ureq_state state;
	struct reqspec spec;		/* what to send; url is the current hop's */
	struct report rep;		/* what it came to */

	/* The attempt. */
	struct conn *conn;
	struct dnscache_wait *dnsw;
	struct event *timer;
	struct h1_body hbody;
	struct body_dec *dec;
	struct evbuffer *raw;		/* transfer-decoded, before content decoding */
	enum ureq_fate fate;
	int got_bytes;			/* any response byte on this attempt */
	int decode;			/* we asked for gzip/deflate: decode the body */
	struct event *skim;		/* body "none": discarding in the kernel */
	struct h2_stream *h2s;		/* on a multiplexing connection */
	int hold;			/* the owner's caller is slow: hold the body back */
	int holding;			/* holding now: reading a body while hold is set */
	uint64_t hold_since;		/* when this holding began */
	uint64_t held_us;		/* time held so far: timeout_ms does not count it */
	struct event *unhold;		/* lets go of a hold from the loop */
	size_t held;			/* body bytes of h2s taken in but not yet consumed */

	/* Across attempts and hops. */
	int fresh_retry_done;		/* the one retry on a fresh connection */
	unsigned resends;		/* END_UNPROCESSED so far */
	struct url next_url;		/* FATE_REDIRECT: where to */
	int64_t retry_in_us;		/* FATE_RETRY: after this delay */
	uint64_t throttle_seen;		/* owner->throttled when last looked at */
	char **visited;			/* hrefs of earlier hops, to tell a loop */
	unsigned hops;
	int strip_credentials;		/* redirected to another origin: no Authorization, Cookie */
	char *final_url;		/* set when a redirect was followed */
	uint64_t t_phase;		/* the current state began */
	uint64_t t_connect;		/* connect began: TLS counts against connect_timeout_ms */
	int armed_connect;		/* the timer is for connect_timeout_ms, not timeout_ms */
	TAILQ_ENTRY(ureq) reap;		/* upstream.dead */
};

/* Finished requests' structs kept for the next ones. Freed a loop turn
 * late, a turn's worth at once, they overflowed glibc's per-size cache and
 * sent malloc down its slow path. h2o recycles its buffers the same way
 * (h2o_mem_recycle). */
#define UPSTREAM_SPARE_MAX 64

static struct {
	struct event_base *base;
	struct event *reaper;
	TAILQ_HEAD(, ureq) dead;	/* freed on the next loop turn */
	TAILQ_HEAD(, ureq) spare;
	unsigned nspare;
} up;

static void upstream_timer(evutil_socket_t fd, short what, void *arg);
static void upstream_read(struct bufferevent *bev, void *arg);
static void upstream_event(struct bufferevent *bev, short what, void *arg);
static void upstream_connect(struct ureq *r, const struct dns_answer *a);
static void upstream_resolved(const struct dns_answer *a, void *arg);
static void upstream_send(struct ureq *r);
static void upstream_skim_stop(struct ureq *r);
static void upstream_consume(struct ureq *r, struct evbuffer *in, int eof);
static void upstream_end(struct ureq *r, enum ureq_end how, enum kind kind, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void upstream_redirect(struct ureq *r);
static void upstream_h2_send(struct ureq *r);
static void upstream_h2_begin(struct ureq *r);
static void upstream_reap(evutil_socket_t fd, short what, void *arg);

void
upstream_init(struct event_base *base)
{
	up.base = base;
	up.reaper = event_new(base, -1, 0, upstream_reap, NULL);
	TAILQ_INIT(&up.dead);
	TAILQ_INIT(&up.spare);
}

struct ureq *
upstream_new(const struct upstream_owner *owner, void *arg, const struct bopts *o,
    size_t index, struct reqspec *spec)
{
	struct ureq *r = TAILQ_FIRST(&up.spare);

	if (r != NULL) {
		TAILQ_REMOVE(&up.spare, r, reap);
		up.nspare--;
		memset(r, 0, sizeof(*r));
	} else
		r = xcalloc(1, sizeof(*r));
	r->owner = owner;
	r->arg = arg;
	r->opts = o;
	r->spec = *spec;
	memset(&spec->url, 0, sizeof(spec->url));	/* r's now */
	r->rep.index = index;
	r->retry_in_us = -1;
	return r;
}

/* True for the methods the contract retries: GET HEAD OPTIONS PUT DELETE. */
static int
upstream_idempotent(const char *method)
{
	static const char *const m[] = { "GET", "HEAD", "OPTIONS", "PUT", "DELETE" };

	for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++)
		if (strcmp(method, m[i]) == 0)
			return 1;
	return 0;
}

static double
us_to_ms(uint64_t us)
{
	return (double)us / 1000.0;
}

static uint64_t
upstream_deadline(const struct ureq *r)
{
	return r->rep.t_dispatch + (uint64_t)r->spec.timeout_ms * 1000u + r->held_us;
}

/* Arms the request's one timer for the nearer of the total limit and, in
 * the connect and TLS phases, the connect limit. */
static void
upstream_arm(struct ureq *r)
{
	uint64_t now = now_us(), at = upstream_deadline(r);
	struct timeval tv;

	r->armed_connect = 0;
	if (r->state == UREQ_CONNECTING || r->state == UREQ_TLS) {
		uint64_t c = r->t_connect + (uint64_t)r->opts->connect_timeout_ms * 1000u;
		if (c < at) {
			at = c;
			r->armed_connect = 1;
		}
	}
	if (r->state == UREQ_BACKOFF)
		at = now + (uint64_t)r->retry_in_us;
	at = at > now ? at - now : 0;
	tv.tv_sec = (time_t)(at / 1000000u);
	tv.tv_usec = (suseconds_t)(at % 1000000u);
	evtimer_add(r->timer, &tv);
}

/* A retry or hop held back by a rate limit or a pause waited in the queue,
 * not on timeout_ms: the request's clock moves on by that wait, which then
 * counts in queue_ms and not in total_ms. Returns whether it moved. */
static int
upstream_unthrottle(struct ureq *r)
{
	uint64_t t = r->owner->throttled(r->arg);

	if (t <= r->throttle_seen)
		return 0;
	r->rep.t_dispatch += t - r->throttle_seen;
	r->throttle_seen = t;
	return 1;
}

/* Starts or stops reading r's HTTP/1.1 connection, and below a TLS layer
 * the socket's too: TLS would otherwise go on filling its own input. */
static void
upstream_h1_read(struct ureq *r, int on)
{
	struct bufferevent *bev, *under;

	if (r->conn == NULL || pool_conn_mux(r->conn) != NULL ||
	    (bev = pool_conn_bev(r->conn)) == NULL)
		return;
	under = bufferevent_get_underlying(bev);
	if (on) {
		if (under != NULL)
			bufferevent_enable(under, EV_READ);
		bufferevent_enable(bev, EV_READ);
		/* What was read before the hold is not announced again. */
		bufferevent_trigger(bev, EV_READ, BEV_TRIG_IGNORE_WATERMARKS |
		    BEV_TRIG_DEFER_CALLBACKS);
		return;
	}
	bufferevent_disable(bev, EV_READ);
	if (under != NULL)
		bufferevent_disable(under, EV_READ);
}

/* Holding: r reads a body to pass on while its owner's caller is not
 * reading. Then an HTTP/1.1 connection is not read (HTTP/2 keeps the
 * stream's window shut instead: upstream_h2_data), so what the daemon
 * holds for a slow caller is bounded by what was read before; and r's
 * clock stops, since the wait is the caller's and not the upstream's. */
static void
upstream_hold_sync(struct ureq *r)
{
	int want = r->hold && r->state == UREQ_BODY && r->fate == FATE_RESULT &&
	    r->opts->body != BODY_NONE;
	uint64_t now;

	if (want == r->holding)
		return;
	r->holding = want;
	now = now_us();
	if (want) {
		r->hold_since = now;
		evtimer_del(r->timer);
		upstream_h1_read(r, 0);
		return;
	}
	r->held_us += now - r->hold_since;
	if (r->state == UREQ_BODY) {
		upstream_arm(r);
		upstream_h1_read(r, 1);
	}
}

/* The only writer of r->state. */
static void
upstream_set_state(struct ureq *r, enum ureq_state s)
{
	if (!(upstream_edges[r->state] & (1u << s)))
		fatal("request %zu: no edge from state %s to %s", r->rep.index,
		    upstream_state_names[r->state], upstream_state_names[s]);
	log_debug("request %zu: %s -> %s", r->rep.index, upstream_state_names[r->state],
	    upstream_state_names[s]);
	r->state = s;
	r->t_phase = now_us();
	upstream_hold_sync(r);
	if (r->holding)
		return;
	if (s != UREQ_DONE)
		upstream_arm(r);
	else if (r->timer != NULL)	/* NULL: ended before it started */
		evtimer_del(r->timer);
}

/* Whether r is reading a response on its connection. */
static int
upstream_reading(const struct ureq *r)
{
	return r->state == UREQ_HEAD || r->state == UREQ_BODY;
}

/* Lets go of the connection: kept alive when it ended cleanly. */
static void
upstream_drop_conn(struct ureq *r, int keep)
{
	struct conn *c = r->conn;
	struct bufferevent *bev;

	if (c == NULL)
		return;
	upstream_skim_stop(r);
	if (r->holding && (bev = pool_conn_bev(c)) != NULL &&
	    bufferevent_get_underlying(bev) != NULL)	/* the pool reads the top */
		bufferevent_enable(bufferevent_get_underlying(bev), EV_READ);
	r->conn = NULL;
	bev = pool_conn_bev(c);
	if (pool_conn_mux(c) != NULL) {
		/* One stream ends, whatever its outcome; the connection goes on. */
		if (r->h2s != NULL)
			h2_cancel(r->h2s);
		r->h2s = NULL;
		r->held = 0;
		pool_release(c);
	} else if (keep && bev != NULL && evbuffer_get_length(bufferevent_get_input(bev)) == 0)
		pool_release(c);
	else
		pool_close(c);
	r->owner->released(r->arg);
}

static void
upstream_drop_body(struct ureq *r)
{
	if (r->rep.body != NULL)
		evbuffer_free(r->rep.body);
	r->rep.body = NULL;
	r->rep.bytes = 0;
}

/* Frees what one attempt built up, keeping the outcome. */
static void
upstream_reset_attempt(struct ureq *r)
{
	if (r->dnsw != NULL) {
		dnscache_cancel(r->dnsw);
		r->dnsw = NULL;
	}
	h1_head_clear(&r->rep.head);
	body_dec_free(r->dec);
	r->dec = NULL;
	r->got_bytes = 0;
	r->fate = FATE_RESULT;
	r->rep.bytes = 0;	/* a discarded body's, counted for its cap alone */
}

/* The end: the report is final and goes to the owner. */
static void
upstream_result(struct ureq *r, int keep_conn)
{
	upstream_drop_conn(r, keep_conn);
	if (r->dnsw != NULL) {
		dnscache_cancel(r->dnsw);
		r->dnsw = NULL;
	}
	upstream_set_state(r, UREQ_DONE);
	r->rep.t_end = r->t_phase;
	r->rep.throttle_us = r->owner->throttled(r->arg);
	r->rep.final_url = r->final_url;
	metrics.requests[r->rep.kind]++;
	if (r->rep.t_dispatch != 0)
		metrics_observe_duration((double)(r->rep.t_end - r->rep.t_dispatch) / 1e6);
	r->owner->done(r->arg, &r->rep);
}

/* Backoff before attempt n+1: exponential, with jitter so that many
 * requests failing together do not come back together. Retry-After, when
 * given, is a floor. Returns -1 when the request's time would not allow it. */
static int64_t
upstream_retry_delay(const struct ureq *r, int64_t retry_after_us)
{
	uint64_t d = UPSTREAM_BACKOFF_BASE_US << (r->rep.attempts - 1 < 16 ? r->rep.attempts - 1 : 16);
	uint64_t now = now_us(), end = upstream_deadline(r);

	if (r->rep.attempts > r->opts->retries || !upstream_idempotent(r->spec.method))
		return -1;
	if (d > UPSTREAM_BACKOFF_CAP_US)
		d = UPSTREAM_BACKOFF_CAP_US;
	d = d / 2 + (uint64_t)random() % (d / 2 + 1);
	if (retry_after_us > 0 && (uint64_t)retry_after_us > d)
		d = (uint64_t)retry_after_us;
	if (now + d >= end)
		return -1;
	return (int64_t)d;
}

/* Waits delay_us, then queues the next attempt. */
static void
upstream_backoff(struct ureq *r, int64_t delay_us)
{
	upstream_drop_conn(r, 0);
	upstream_reset_attempt(r);
	upstream_drop_body(r);
	r->retry_in_us = delay_us;
	upstream_set_state(r, UREQ_BACKOFF);
}

/* strerror() text as it reads inside a sentence: "connection refused". */
static const char *
upstream_strerror(int err, char *buf, size_t len)
{
	snprintf(buf, len, "%s", strerror(err));
	if (buf[0] >= 'A' && buf[0] <= 'Z' && (buf[1] < 'A' || buf[1] > 'Z'))
		buf[0] = (char)(buf[0] - 'A' + 'a');
	return buf;
}

/* Queues the next attempt or hop with the owner. A connection still held
 * failed (one that ended cleanly was dropped before), so it is closed. The
 * total timer runs on: waiting for a slot again counts against timeout_ms. */
static void
upstream_requeue(struct ureq *r, int fresh)
{
	upstream_drop_conn(r, 0);
	upstream_reset_attempt(r);
	upstream_set_state(r, UREQ_QUEUED);
	r->owner->requeue(r->arg, &r->spec.url, fresh);
}

/*
 * The funnel: every attempt ends here, and only here is it decided what
 * comes next. kind and fmt are the error the request ends with when nothing
 * else is to be done.
 */
static void
upstream_end(struct ureq *r, enum ureq_end how, enum kind kind, const char *fmt, ...)
{
	va_list ap;
	int64_t d;

	switch (how) {
	case END_RESPONSE:
		switch (r->fate) {
		case FATE_RESULT:
			upstream_result(r, r->rep.head.keep_alive);
			return;
		case FATE_REDIRECT:
			upstream_drop_conn(r, r->rep.head.keep_alive);
			upstream_redirect(r);
			return;
		case FATE_RETRY:
			upstream_drop_conn(r, r->rep.head.keep_alive);
			upstream_backoff(r, r->retry_in_us);
			return;
		}
		break;
	case END_NO_FD:
		upstream_requeue(r, 1);
		return;
	case END_UNPROCESSED:
		/* Not a retry: the server never saw it (RFC 9113, 8.7). */
		if (++r->resends > UPSTREAM_MAX_RESENDS)
			break;
		upstream_requeue(r, 0);
		return;
	case END_STALE:
		/* The upstream closed a kept-alive connection as we reused it:
		 * the request never reached it, so one more go is safe. */
		if (r->fresh_retry_done)
			break;
		log_debug("request %zu: kept-alive connection was closed; retrying fresh",
		    r->rep.index);
		r->fresh_retry_done = 1;
		upstream_requeue(r, 1);
		return;
	case END_RETRYABLE:
		if ((d = upstream_retry_delay(r, 0)) < 0)
			break;
		log_debug("request %zu: %s; retrying in %lld us", r->rep.index, kind_name(kind),
		    (long long)d);
		upstream_backoff(r, d);
		return;
	case END_FAILED:
		break;
	}
	r->rep.kind = kind;
	va_start(ap, fmt);
	vsnprintf(r->rep.msg, sizeof(r->rep.msg), fmt, ap);
	va_end(ap);
	upstream_drop_body(r);
	upstream_result(r, 0);
}

/* The report's remote, copied from the connection's text; snprintf() cost
 * 600 instructions a request here. */
static void
upstream_note_remote(struct ureq *r)
{
	const char *s = pool_conn_remote(r->conn);
	size_t n = strnlen(s, sizeof(r->rep.remote) - 1);

	memcpy(r->rep.remote, s, n);
	r->rep.remote[n] = '\0';
}

void
upstream_start(struct ureq *r, struct conn *c, int reused)
{
	struct dns_answer a;

	if (r->rep.t_dispatch == 0) {
		r->rep.t_dispatch = now_us();
		r->timer = evtimer_new(up.base, upstream_timer, r);
		r->rep.attempts = 1;
		r->throttle_seen = r->owner->throttled(r->arg);	/* before dispatch: queue time */
	} else
		upstream_unthrottle(r);
	r->conn = c;
	r->rep.reused = reused;
	r->rep.dns_ms = r->rep.connect_ms = r->rep.tls_ms = r->rep.ttfb_ms = 0;
	if (reused) {
		metrics.conns_reused++;
		upstream_note_remote(r);
		if (pool_conn_mux(c) != NULL)
			upstream_h2_send(r);
		else
			upstream_send(r);
		return;
	}
	upstream_set_state(r, UREQ_RESOLVING);
	if (r->spec.url.host_is_ip) {
		a.naddrs = 1;
		a.addrs[0].family = r->spec.url.host_is_ip == 6 ? AF_INET6 : AF_INET;
		inet_pton(a.addrs[0].family, r->spec.url.host, &a.addrs[0].u);
		upstream_connect(r, &a);
		return;
	}
	r->dnsw = dnscache_lookup(r->spec.url.host, &a, upstream_resolved, r);
	if (r->dnsw == NULL)
		upstream_connect(r, &a);
}

static void
upstream_resolved(const struct dns_answer *a, void *arg)
{
	struct ureq *r = arg;

	r->dnsw = NULL;
	upstream_connect(r, a);
}

static socklen_t
upstream_sockaddr(const struct dns_addr *d, uint16_t port, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (d->family == AF_INET6) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(port);
		s6->sin6_addr = d->u.v6;
		return sizeof(*s6);
	}
	struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
	s4->sin_family = AF_INET;
	s4->sin_port = htons(port);
	s4->sin_addr = d->u.v4;
	return sizeof(*s4);
}

static void
upstream_connect(struct ureq *r, const struct dns_answer *a)
{
	const struct dns_addr *pick = NULL;
	struct sockaddr_storage ss;
	struct bufferevent *bev;
	socklen_t sslen;
	char addr[INET6_ADDRSTRLEN + 8], msg[96];

	r->rep.dns_ms = us_to_ms(now_us() - r->t_phase);
	if (a->naddrs == 0) {
		upstream_end(r, END_FAILED, KIND_DNS, "%s: %s", r->spec.url.host, a->why);
		return;
	}
	/* Every address the name has must pass the policy: a name that also
	 * points somewhere forbidden is refused whole, not raced. */
	for (int i = 0; i < a->naddrs; i++) {
		upstream_sockaddr(&a->addrs[i], r->spec.url.port, &ss);
		if (!policy_allows(r->opts->conf, (struct sockaddr *)&ss)) {
			addr_format(&ss, addr, sizeof(addr));
			upstream_end(r, END_FAILED, KIND_BLOCKED,
			    "address %s is not allowed by policy", addr);
			return;
		}
		if (pick == NULL)
			pick = &a->addrs[i];
	}
	sslen = upstream_sockaddr(pick, r->spec.url.port, &ss);
	pool_conn_set_remote(r->conn, &ss);
	upstream_note_remote(r);
	bev = bufferevent_socket_new(up.base, -1, BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL) {
		upstream_end(r, END_FAILED, KIND_INTERNAL, "cannot create a connection");
		return;
	}
	pool_conn_set_bev(r->conn, bev);
	bufferevent_setcb(bev, upstream_read, NULL, upstream_event, r);
	/* libevent 2.1 reads 4 KiB a call by default: sixteen recv() and
	 * callbacks for a 64 KiB body. */
	bufferevent_set_max_single_read(bev, UPSTREAM_READ_MAX);
	r->t_connect = now_us();
	upstream_set_state(r, UREQ_CONNECTING);
	if (bufferevent_socket_connect(bev, (struct sockaddr *)&ss, (int)sslen) < 0) {
		int err = errno;
		if (err == EMFILE || err == ENFILE) {
			/* Out of descriptors: wait for one instead of failing. */
			pool_fd_pressure();
			upstream_end(r, END_NO_FD, KIND_CONNECT, "out of descriptors");
			return;
		}
		upstream_end(r, END_RETRYABLE, KIND_CONNECT, "%s",
		    upstream_strerror(err, msg, sizeof(msg)));
		return;
	}
	/* Requests and TLS records are written whole; waiting for an ACK
	 * before the next one (Nagle against delayed ACKs) costs 40 ms. */
	int one = 1;
	setsockopt(bufferevent_getfd(bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	metrics.conns_opened++;
}

/* Sends the request, serialised by wire.c. */
static void
upstream_send(struct ureq *r)
{
	struct bufferevent *bev = pool_conn_bev(r->conn);
	struct wire_request w = { &r->spec, r->opts->headers, r->strip_credentials };

	r->decode = wire_h1(bufferevent_get_output(bev), &w);
	bufferevent_setcb(bev, upstream_read, NULL, upstream_event, r);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
	upstream_set_state(r, UREQ_HEAD);
}

static const char *
upstream_phase(const struct ureq *r)
{
	switch (r->state) {
	case UREQ_RESOLVING:
		return "dns";
	case UREQ_QUEUED:	/* a retry or hop waiting for a connection */
	case UREQ_CONNECTING:
		return "connect";
	case UREQ_TLS:
		return "tls";
	case UREQ_BODY:
		return "body";
	default:
		return "response headers";
	}
}

static void
upstream_timer(evutil_socket_t fd, short what, void *arg)
{
	struct ureq *r = arg;
	char msg[96];
	int connect_phase;

	(void)fd;
	(void)what;
	if (r->state == UREQ_BACKOFF) {
		r->retry_in_us = -1;
		r->rep.attempts++;
		metrics.retries++;
		upstream_requeue(r, 0);
		return;
	}
	if (r->state == UREQ_QUEUED && upstream_unthrottle(r)) {
		upstream_arm(r);	/* the limit, less the throttled wait */
		return;
	}
	/* Which limit the timer was armed for, not the clock: libevent may
	 * fire a tick early, before the deadline by now_us(). */
	connect_phase = r->state == UREQ_CONNECTING || r->state == UREQ_TLS;
	if (r->armed_connect && connect_phase)
		snprintf(msg, sizeof(msg), "%s not complete within %u ms", upstream_phase(r),
		    r->opts->connect_timeout_ms);
	else
		snprintf(msg, sizeof(msg), "%s not complete within %u ms", upstream_phase(r),
		    r->spec.timeout_ms);
	/* A retry or hop still queued when its time is up has nothing left to
	 * retry with. */
	upstream_end(r, !r->got_bytes && r->state != UREQ_QUEUED ? END_RETRYABLE : END_FAILED,
	    KIND_TIMEOUT, "%s", msg);
}

/* Seconds or an HTTP-date, as microseconds from now; -1 if absent or bad. */
static int64_t
upstream_retry_after(const struct h1_head *h)
{
	const struct h1_header *ra = h1_find(h, "retry-after");
	char buf[64];
	struct tm tm;

	if (ra == NULL || ra->valuelen == 0 || ra->valuelen >= sizeof(buf))
		return -1;
	memcpy(buf, ra->value, ra->valuelen);
	buf[ra->valuelen] = '\0';
	if (strspn(buf, "0123456789") == ra->valuelen) {
		long long s = ra->valuelen > 9 ? 999999999LL : atoll(buf);
		return s * 1000000;
	}
	memset(&tm, 0, sizeof(tm));
	const char *end = strptime(buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
	if (end == NULL || *end != '\0')
		return -1;
	/* Against the clock to the microsecond: whole seconds of time()
	 * would pause up to a second too long. */
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	int64_t at = (int64_t)timegm(&tm) * 1000000;
	int64_t now = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
	return at > now ? at - now : 0;
}

static int
upstream_visited(const struct ureq *r, const char *href)
{
	if (strcmp(r->spec.url.href, href) == 0)
		return 1;
	for (unsigned i = 0; i < r->hops; i++)
		if (strcmp(r->visited[i], href) == 0)
			return 1;
	return 0;
}

/* Prepares the hop to location: 0, or -1 with why when it cannot be
 * followed (the request's result is then that error). */
static int
upstream_plan_redirect(struct ureq *r, const struct h1_header *loc, char *why, size_t whylen)
{
	char bad[128], *location;
	int st = r->rep.head.status;

	if (r->hops >= r->opts->follow_redirects) {
		snprintf(why, whylen, "more than %u redirects", r->opts->follow_redirects);
		return -1;
	}
	location = xstrndup(loc->value, loc->valuelen);
	if (url_resolve(&r->next_url, &r->spec.url, location, bad, sizeof(bad)) < 0) {
		free(location);
		snprintf(why, whylen, "bad Location: %s", bad);
		return -1;
	}
	free(location);
	if (upstream_visited(r, r->next_url.href)) {
		snprintf(why, whylen, "redirect loop at %s", r->next_url.href);
		return -1;
	}
	if ((st == 303 && strcmp(r->spec.method, "HEAD") != 0) ||
	    ((st == 301 || st == 302) && strcmp(r->spec.method, "POST") == 0)) {
		r->spec.method = "GET";
		r->spec.body = NULL;
		r->spec.bodylen = 0;
		r->spec.json = NULL;
	}
	return 0;
}

/* Follows the planned hop: a new URL, maybe a new origin, a new queue. */
static void
upstream_redirect(struct ureq *r)
{
	if (r->visited == NULL)
		r->visited = xcalloc(r->opts->follow_redirects, sizeof(*r->visited));
	r->visited[r->hops++] = xstrdup(r->spec.url.href);
	if (strcmp(r->next_url.origin, r->spec.url.origin) != 0)
		r->strip_credentials = 1;
	url_free(&r->spec.url);
	r->spec.url = r->next_url;
	memset(&r->next_url, 0, sizeof(r->next_url));
	free(r->final_url);
	r->final_url = xstrdup(r->spec.url.href);
	metrics.redirects++;
	upstream_requeue(r, 0);
}

static int
upstream_is_redirect(int status)
{
	return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

static int
upstream_is_retry_status(int status)
{
	return status == 429 || status == 502 || status == 503 || status == 504;
}

/* A final head is in: decide what its body is for. */
static void
upstream_on_head(struct ureq *r)
{
	const struct h1_header *loc = h1_find(&r->rep.head, "location");
	int st = r->rep.head.status;
	int64_t retry_after = upstream_retry_after(&r->rep.head);
	int paused = r->owner->response(r->arg, st, retry_after);
	char why[160];

	r->fate = FATE_RESULT;
	if (upstream_is_redirect(st) && r->opts->follow_redirects > 0 && loc != NULL) {
		if (upstream_plan_redirect(r, loc, why, sizeof(why)) < 0) {
			upstream_end(r, END_FAILED, KIND_REDIRECTS, "%s", why);
			return;
		}
		r->fate = FATE_REDIRECT;
	} else if (upstream_is_retry_status(st)) {
		/* A pause holds the retry in the queue until Retry-After;
		 * without one, the retry sleeps it itself. */
		r->retry_in_us = upstream_retry_delay(r, paused ? 0 : retry_after);
		if (r->retry_in_us >= 0)
			r->fate = FATE_RETRY;
	}
	h1_body_init(&r->hbody, &r->rep.head);
	if (r->raw == NULL)
		r->raw = evbuffer_new();
	if (r->fate == FATE_RESULT) {
		r->rep.body = evbuffer_new();
		r->rep.bytes = 0;
		if (r->decode)
			r->dec = body_dec_new(r->rep.head.content_encoding);
	}
	upstream_set_state(r, UREQ_BODY);
}

/* Takes the head off the input, if it is all there. */
static void
upstream_read_head(struct ureq *r, struct evbuffer *in)
{
	const char *why = NULL;

	for (;;) {
		int rc = h1_parse_head(in, r->opts->max_header_bytes,
		    strcmp(r->spec.method, "HEAD") == 0, &r->rep.head, &why);
		if (rc == H1_AGAIN)
			return;
		if (rc == H1_TOO_BIG) {
			upstream_end(r, END_FAILED, KIND_PROTOCOL,
			    "response header block over %zu bytes", r->opts->max_header_bytes);
			return;
		}
		if (rc == H1_ERROR) {
			upstream_end(r, END_FAILED, KIND_PROTOCOL, "%s", why);
			return;
		}
		metrics.bytes_in += r->rep.head.blocklen;
		if (r->rep.head.status >= 200) {
			r->rep.ttfb_ms = us_to_ms(now_us() - r->rep.t_dispatch);
			r->rep.protocol = r->rep.head.minor == 0 ? "http/1.0" : "http/1.1";
			upstream_on_head(r);
			return;
		}
		if (r->rep.head.status == 101) {
			upstream_end(r, END_FAILED, KIND_PROTOCOL, "unexpected 101 Switching Protocols");
			return;
		}
		h1_head_clear(&r->rep.head);	/* an interim response: skip it */
	}
}

/* The body is in: its fate follows. */
static void
upstream_body_done(struct ureq *r)
{
	if (r->dec != NULL && body_dec_finish(r->dec) != BODY_OK) {
		upstream_end(r, END_FAILED, KIND_PROTOCOL, "%s body is corrupt or truncated",
		    r->rep.head.content_encoding);
		return;
	}
	upstream_end(r, END_RESPONSE, KIND_NONE, "response");
}

/* In body mode "none" the bytes are counted (decoded, for `bytes` and the
 * size limit) and dropped as they come: nobody will read them. */
static void
upstream_keep_body(struct ureq *r)
{
	if (r->opts->body == BODY_NONE)
		evbuffer_drain(r->rep.body, evbuffer_get_length(r->rep.body));
}

/* Moves what the transfer coding released into the response body; ends r
 * on a body it cannot take. */
static void
upstream_take_body(struct ureq *r)
{
	size_t n = evbuffer_get_length(r->raw);

	metrics.bytes_in += n;
	if (r->fate != FATE_RESULT) {
		r->rep.bytes += n;
		evbuffer_drain(r->raw, n);
		if (r->rep.bytes > UPSTREAM_DISCARD_MAX)
			r->rep.head.keep_alive = 0;	/* not worth reading on */
		return;
	}
	if (r->dec != NULL) {
		int rc = body_dec_write(r->dec, r->raw, r->rep.body, &r->rep.bytes,
		    r->opts->max_body_bytes);
		if (rc == BODY_TOO_LARGE)
			upstream_end(r, END_FAILED, KIND_TOO_LARGE, "body over %zu bytes (decoded)",
			    r->opts->max_body_bytes);
		else if (rc == BODY_CORRUPT)
			upstream_end(r, END_FAILED, KIND_PROTOCOL, "%s body is corrupt",
			    r->rep.head.content_encoding);
		else
			upstream_keep_body(r);
		return;
	}
	if (r->rep.bytes + n > r->opts->max_body_bytes) {
		upstream_end(r, END_FAILED, KIND_TOO_LARGE, "body over %zu bytes",
		    r->opts->max_body_bytes);
		return;
	}
	r->rep.bytes += n;
	evbuffer_add_buffer(r->rep.body, r->raw);
	upstream_keep_body(r);
}

static void
upstream_skim_stop(struct ureq *r)
{
	if (r->skim == NULL)
		return;
	event_free(r->skim);
	r->skim = NULL;
}

/* Body mode "none" over plain TCP with a Content-Length: the rest of the body
 * is taken with recv(MSG_TRUNC), which on TCP drops the bytes in the kernel
 * (tcp(7)) instead of copying them out for us to throw away. That copy, and
 * the fresh buffer pages it fills, were most of what such a body cost. The
 * bufferevent does not read meanwhile; whoever uses the connection next
 * enables it again. */
static void
upstream_skim(evutil_socket_t fd, short what, void *arg)
{
	struct ureq *r = arg;
	uint64_t want = h1_body_skippable(&r->hbody);
	ssize_t n = recv(fd, NULL, want < (1u << 30) ? (size_t)want : (1u << 30),
	    MSG_TRUNC | MSG_DONTWAIT);

	(void)what;
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
	if (n <= 0) {	/* closed or failed mid-body: the reader says so */
		upstream_skim_stop(r);
		upstream_consume(r, bufferevent_get_input(pool_conn_bev(r->conn)), 1);
		return;
	}
	metrics.bytes_in += (uint64_t)n;
	if (r->rep.bytes + (size_t)n > r->opts->max_body_bytes) {
		upstream_end(r, END_FAILED, KIND_TOO_LARGE, "body over %zu bytes",
		    r->opts->max_body_bytes);
		return;
	}
	r->rep.bytes += (size_t)n;
	if (h1_body_skipped(&r->hbody, (uint64_t)n) == H1_DONE) {
		char c;

		/* Bytes past the body, or the peer's close, would otherwise
		 * stay in the kernel and be read as the next request's
		 * response: the connection is not kept, as when a bufferevent
		 * read brings them in with the body. */
		if (recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) >= 0)
			r->rep.head.keep_alive = 0;
		upstream_skim_stop(r);
		upstream_body_done(r);
	}
}

/* Whether the rest of r's body can go by upstream_skim, and if so starts it. */
static void
upstream_skim_start(struct ureq *r)
{
	struct bufferevent *bev = pool_conn_bev(r->conn);

	if (r->skim != NULL || r->opts->body != BODY_NONE || r->fate != FATE_RESULT ||
	    r->dec != NULL || h1_body_skippable(&r->hbody) == 0 ||
	    bufferevent_get_underlying(bev) != NULL ||
	    evbuffer_get_length(bufferevent_get_input(bev)) != 0)
		return;
	r->skim = event_new(up.base, bufferevent_getfd(bev), EV_READ | EV_PERSIST,
	    upstream_skim, r);
	if (r->skim == NULL || event_add(r->skim, NULL) != 0) {
		upstream_skim_stop(r);
		return;
	}
	bufferevent_disable(bev, EV_READ);
}

static void
upstream_read_body(struct ureq *r, struct evbuffer *in, int eof)
{
	const char *why = NULL;
	int rc = h1_body_read(&r->hbody, in, r->raw, eof, &why);

	if (rc == H1_ERROR) {
		upstream_end(r, END_FAILED, KIND_PROTOCOL, "%s", why);
		return;
	}
	upstream_take_body(r);
	if (r->state != UREQ_BODY)
		return;
	if (rc == H1_DONE || (r->fate != FATE_RESULT && !r->rep.head.keep_alive)) {
		/* A discarded body on a connection that closes anyway is not
		 * worth reading on. */
		upstream_body_done(r);
		return;
	}
	upstream_skim_start(r);
}

/* Takes what the connection has read; eof: it has closed too. TLS can
 * report the close together with the last bytes, so the close is handled
 * only after they are consumed. Afterwards r may have left the connection:
 * upstream_reading(r) says whether it still reads it. */
static void
upstream_consume(struct ureq *r, struct evbuffer *in, int eof)
{
	if (evbuffer_get_length(in) > 0)
		r->got_bytes = 1;
	if (r->state == UREQ_HEAD)
		upstream_read_head(r, in);
	if (r->state == UREQ_BODY)
		upstream_read_body(r, in, eof);
}

static void
upstream_read(struct bufferevent *bev, void *arg)
{
	upstream_consume(arg, bufferevent_get_input(bev), 0);
}

static void
upstream_closed(struct ureq *r, int err)
{
	char msg[96];

	if (r->state == UREQ_CONNECTING)
		upstream_end(r, END_RETRYABLE, KIND_CONNECT, "%s",
		    err != 0 ? upstream_strerror(err, msg, sizeof(msg)) : "connection closed");
	else if (!r->got_bytes)
		upstream_end(r, r->rep.reused ? END_STALE : END_FAILED, KIND_PROTOCOL,
		    "connection closed before any response%s%s", err != 0 ? ": " : "",
		    err != 0 ? upstream_strerror(err, msg, sizeof(msg)) : "");
	else
		upstream_end(r, END_FAILED, KIND_PROTOCOL,
		    "connection closed inside the response head");
}

/* TCP is up on an https origin: the handshake runs in a filter over it. */
static void
upstream_start_tls(struct ureq *r)
{
	SSL *ssl = tls_ssl_new(r->opts->tls, pool_conn_tls(r->conn), r->spec.url.host,
	    r->spec.url.host_is_ip, r->opts->http2);
	struct bufferevent *tls;

	tls = ssl == NULL ? NULL : bufferevent_openssl_filter_new(up.base,
	    pool_conn_bev(r->conn), ssl, BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE);
	if (tls == NULL) {
		if (ssl != NULL)
			SSL_free(ssl);
		upstream_end(r, END_FAILED, KIND_INTERNAL, "cannot start TLS");
		return;
	}
	pool_conn_set_bev(r->conn, tls);	/* frees the TCP bufferevent with it */
	/* Many servers close without close_notify; the HTTP framing, not the
	 * TLS layer, says whether a body was complete. */
	bufferevent_openssl_set_allow_dirty_shutdown(tls, 1);
	bufferevent_setcb(tls, upstream_read, NULL, upstream_event, r);
	bufferevent_enable(tls, EV_READ | EV_WRITE);
	upstream_set_state(r, UREQ_TLS);
}

static void
upstream_connected(struct ureq *r)
{
	if (r->state == UREQ_CONNECTING) {
		r->rep.connect_ms = us_to_ms(now_us() - r->t_connect);
		if (r->spec.url.https) {
			upstream_start_tls(r);
			return;
		}
	} else {
		r->rep.tls_ms = us_to_ms(now_us() - r->t_phase);
		if (tls_handshake_done(bufferevent_openssl_get_ssl(pool_conn_bev(r->conn)))) {
			upstream_h2_begin(r);
			return;
		}
		pool_conn_set_single(r->conn);
	}
	upstream_send(r);
}

static void
upstream_event(struct bufferevent *bev, short what, void *arg)
{
	struct ureq *r = arg;
	int err = EVUTIL_SOCKET_ERROR();
	char why[200];

	if (what & BEV_EVENT_CONNECTED) {
		upstream_connected(r);
		return;
	}
	if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)))
		return;
	if (r->state == UREQ_TLS) {
		upstream_end(r, END_FAILED, KIND_TLS, "%s", tls_failure(bev, why, sizeof(why)));
		return;
	}
	if (r->spec.url.https)
		tls_failure(bev, why, sizeof(why));	/* drained: this connection's alone */
	if (upstream_reading(r)) {
		upstream_consume(r, bufferevent_get_input(bev), 1);
		if (!upstream_reading(r))
			return;
	}
	upstream_closed(r, (what & BEV_EVENT_ERROR) ? err : 0);
}

/*
 * HTTP/2: the request as a stream of the connection's session (h2.c).
 */

/* A multiplexing connection's session reports to the pool. */
static void
upstream_h2_room(void *arg, unsigned max_streams)
{
	pool_conn_set_max_streams(arg, max_streams);
}

static void
upstream_h2_dead(void *arg)
{
	pool_conn_retire(arg);
}

static const struct h2_session_cb upstream_h2_session_cb = {
	.on_room = upstream_h2_room,
	.on_dead = upstream_h2_dead,
};

static void
upstream_h2_session_free(void *session)
{
	h2_session_free(session);
}

static void
upstream_h2_head(void *arg, int rc, struct h1_head *head, const char *why)
{
	struct ureq *r = arg;

	r->got_bytes = 1;
	if (rc != H1_DONE) {
		upstream_end(r, END_FAILED, KIND_PROTOCOL, "%s", why);
		return;
	}
	r->rep.head = *head;
	r->rep.protocol = "h2";
	r->rep.ttfb_ms = us_to_ms(now_us() - r->rep.t_dispatch);
	upstream_on_head(r);
	/* A redirect or a retry needs no body to keep an HTTP/2 connection. */
	if (r->state == UREQ_BODY && r->fate != FATE_RESULT)
		upstream_end(r, END_RESPONSE, KIND_NONE, "response");
}

static void
upstream_h2_data(void *arg, const uint8_t *data, size_t len)
{
	struct ureq *r = arg;

	if (r->state != UREQ_BODY)
		return;
	evbuffer_add(r->raw, data, len);
	upstream_take_body(r);
	if (r->state != UREQ_BODY)
		return;
	if (r->hold)
		r->held += len;
	else
		h2_consume(r->h2s, len);	/* passed on: the window may open */
}

static void
upstream_unhold(evutil_socket_t fd, short what, void *arg)
{
	struct ureq *r = arg;

	(void)fd;
	(void)what;
	if (r->hold || r->state == UREQ_DONE)
		return;
	upstream_hold_sync(r);
	if (r->held > 0 && r->h2s != NULL)
		h2_consume(r->h2s, r->held);
	r->held = 0;
}

/* Holding begins at once; it ends from the loop, since reading again may
 * end requests, and the owner is in the middle of telling them all. */
void
upstream_hold(struct ureq *r, int hold)
{
	r->hold = hold;
	if (hold) {
		upstream_hold_sync(r);
		return;
	}
	if (!r->holding && r->held == 0)
		return;
	if (r->unhold == NULL)
		r->unhold = event_new(up.base, -1, 0, upstream_unhold, r);
	event_active(r->unhold, 0, 0);
}

static void
upstream_h2_close(void *arg, uint32_t error)
{
	struct ureq *r = arg;

	r->h2s = NULL;
	r->held = 0;
	if (error == 0 && r->state == UREQ_BODY)
		upstream_body_done(r);
	else if (error == 0)
		upstream_end(r, END_FAILED, KIND_PROTOCOL, "stream ended without a response");
	else if (error == 7)	/* REFUSED_STREAM, also past a GOAWAY's last stream */
		upstream_end(r, END_UNPROCESSED, KIND_PROTOCOL, "stream refused %u times",
		    r->resends);
	else if (error == H2_CONN_LOST && !r->got_bytes)
		upstream_end(r, r->rep.reused ? END_STALE : END_FAILED, KIND_PROTOCOL,
		    "connection closed before any response");
	else if (error == H2_CONN_LOST)
		upstream_end(r, END_FAILED, KIND_PROTOCOL, "connection closed inside the response");
	else if (error == H2_HEAD_TOO_BIG)
		upstream_end(r, END_FAILED, KIND_PROTOCOL, "response header block over %zu bytes",
		    r->opts->max_header_bytes);
	else
		upstream_end(r, END_FAILED, KIND_PROTOCOL, "stream reset by server: %s",
		    h2_error_name(error));
}

static const struct h2_stream_cb upstream_h2_stream_cb = {
	.on_head = upstream_h2_head,
	.on_data = upstream_h2_data,
	.on_close = upstream_h2_close,
};

static void
upstream_h2_send(struct ureq *r)
{
	struct wire_request w = { &r->spec, r->opts->headers, r->strip_credentials };
	struct wire_h2 wh;
	const char *why = NULL;

	r->decode = wire_h2(&wh, &w);
	upstream_set_state(r, UREQ_HEAD);
	r->h2s = h2_submit(pool_conn_mux(r->conn), &wh.req, &upstream_h2_stream_cb, r, &why);
	wire_h2_free(&wh);
	if (r->h2s == NULL)
		upstream_end(r, END_UNPROCESSED, KIND_PROTOCOL, "%s", why);
}

/* The handshake chose h2: the connection becomes a session that the pool
 * can share, and r its first stream. */
static void
upstream_h2_begin(struct ureq *r)
{
	struct h2_session *s = h2_session_new(pool_conn_bev(r->conn), &upstream_h2_session_cb,
	    r->conn, r->opts->conf->max_streams, r->opts->max_header_bytes);

	if (s == NULL) {
		upstream_end(r, END_FAILED, KIND_INTERNAL, "cannot start HTTP/2");
		return;
	}
	pool_conn_set_mux(r->conn, s, upstream_h2_session_free);
	upstream_h2_send(r);
}

void
upstream_abort(struct ureq *r, enum kind kind, const char *msg)
{
	upstream_end(r, END_FAILED, kind, "%s", msg);
}

/* Lets go of everything r holds but its own memory, leaving nothing to
 * point to freed memory. */
static void
upstream_clear(struct ureq *r)
{
	url_free(&r->spec.url);
	url_free(&r->next_url);
	for (unsigned i = 0; i < r->hops; i++)
		free(r->visited[i]);
	free(r->visited);
	r->visited = NULL;
	r->hops = 0;
	h1_head_clear(&r->rep.head);
	body_dec_free(r->dec);
	r->dec = NULL;
	if (r->raw != NULL)
		evbuffer_free(r->raw);
	r->raw = NULL;
	upstream_drop_body(r);
	if (r->timer != NULL)
		event_free(r->timer);
	r->timer = NULL;
	if (r->unhold != NULL)
		event_free(r->unhold);
	r->unhold = NULL;
	upstream_skim_stop(r);
	free(r->final_url);
	r->final_url = NULL;
	r->rep.final_url = NULL;
}

/* What r holds goes at once, while it is hot in glibc's per-size cache;
 * only the struct, whose state code still on the stack under done may
 * read, waits for the next loop turn. */
void
upstream_free(struct ureq *r)
{
	upstream_clear(r);
	TAILQ_INSERT_TAIL(&up.dead, r, reap);
	event_active(up.reaper, 0, 0);
}

static void
upstream_reap(evutil_socket_t fd, short what, void *arg)
{
	struct ureq *r;

	(void)fd;
	(void)what;
	(void)arg;
	while ((r = TAILQ_FIRST(&up.dead)) != NULL) {
		TAILQ_REMOVE(&up.dead, r, reap);
		if (up.nspare < UPSTREAM_SPARE_MAX) {
			TAILQ_INSERT_HEAD(&up.spare, r, reap);
			up.nspare++;
		} else
			free(r);
	}
}

void
upstream_trim(void)
{
	struct ureq *r;

	while ((r = TAILQ_FIRST(&up.spare)) != NULL) {
		TAILQ_REMOVE(&up.spare, r, reap);
		free(r);
	}
	up.nspare = 0;
}

void
upstream_shutdown(void)
{
	upstream_reap(-1, 0, NULL);
	upstream_trim();
	event_free(up.reaper);
	up.reaper = NULL;
}
