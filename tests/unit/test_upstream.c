/* test_upstream.c: one upstream request, upstream.c linked alone, driven over
 * a socketpair with the test playing the server and a fake owner recording
 * the callbacks: the request on the wire, the response's framing and
 * decoding, and every way an attempt ends (result, stale-connection retry,
 * redirect, status retry, timeout, abort), and what the owner's throttle
 * is told and tells (responses, a paused origin, throttled waits). A few
 * cases connect for real, to a listener on loopback. */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <jansson.h>
#include <zlib.h>

#include "conf.h"
#include "h1.h"
#include "pool.h"
#include "report.h"
#include "spec.h"
#include "upstream.h"
#include "url.h"
#include "util.h"
#include "unit.h"

#define URL "http://127.0.0.1:8080/x?q=1"
#define TURNS 1000		/* loop turns any one wait may take */
#define GUARD_MS 3000		/* and the time: a broken case fails, it does not hang */
#define MAX_SRV 8
/* Without EVENT_BASE_FLAG_PRECISE_TIMER, libevent 2.1 on Linux times events
 * by CLOCK_MONOTONIC_COARSE (a 4 ms tick at HZ=250), now_us() by
 * CLOCK_MONOTONIC: a timer may fire up to a tick before the time asked for,
 * as now_us() sees it. */
#define TICK_SLACK_US 10000

struct fx;
static enum pool_rc fx_start(struct fx *f, struct origin *o, int fresh);

/* Set for a second run of the cases: the owner frees the request inside
 * done, as batch.c does, so that nothing under done may touch what it held. */
static int free_in_done;

/* What the owner was told. */
struct rec {
	int requeues, released, done;
	int fresh;			/* the last requeue's */
	char href[256];			/* the last requeue's url */
	uint64_t t_requeue;
	int released_at_done;
	enum kind kind;
	int status;
	char msg[160];
	int body_null;
	char body[8192];
	size_t bodylen, bytes;
	unsigned attempts;
	int reused;
	char remote[64];
	char final_url[256];
	char xtest[64];			/* the response's X-Test header */
	struct ureq **rp;		/* the request, for free_in_done */
	struct fx *restart;		/* requeue starts it again at once, on this */
	int responses;			/* final heads reported */
	int last_response;		/* the last one's status */
	int64_t last_retry_after;	/* and its Retry-After */
	int paused;			/* what the owner answers: the origin is paused */
	uint64_t throttled_us;		/* what the owner says r was held back */
	uint64_t rep_throttle_us;	/* the report's throttle_us, */
	uint64_t t_dispatch, t_end;	/* and its times */
};

/* One test's world: a loop, the pool and upstream on it, a batch's options
 * and one request; srv is the server's end of the current connection. */
struct fx {
	struct event_base *base;
	struct event *guard;
	int guard_fired;
	struct conf *conf;
	unsigned gen;
	struct bopts opts;
	struct reqspec spec;
	struct url url;			/* the first origin's, for pool_origin_get */
	struct origin *o;
	struct origin *o2;		/* a redirect's other origin, if any */
	struct url url2;
	struct rec rec;
	struct ureq *r;
	struct conn *c;
	int srv;
	int srvs[MAX_SRV];		/* every server end, closed at the end */
	int nsrv;
	json_t *hdrs, *ohdrs, *json;
};

static void
own_requeue(void *arg, const struct url *u, int fresh)
{
	struct rec *k = arg;

	k->requeues++;
	k->fresh = fresh;
	snprintf(k->href, sizeof(k->href), "%s", u->href);
	k->t_requeue = now_us();
	if (k->restart != NULL)
		fx_start(k->restart, k->restart->o, fresh);
}

static void
own_released(void *arg)
{
	struct rec *k = arg;

	k->released++;
}

static void
own_done(void *arg, const struct report *rep)
{
	struct rec *k = arg;
	const struct h1_header *h = h1_find(&rep->head, "x-test");

	k->done++;
	k->released_at_done = k->released;
	k->kind = rep->kind;
	k->status = rep->head.status;
	snprintf(k->msg, sizeof(k->msg), "%s", rep->msg);
	k->body_null = rep->body == NULL;
	k->bodylen = rep->body != NULL ? evbuffer_get_length(rep->body) : 0;
	memset(k->body, 0, sizeof(k->body));
	if (rep->body != NULL)
		evbuffer_copyout(rep->body, k->body, sizeof(k->body) - 1);
	k->bytes = rep->bytes;
	k->attempts = rep->attempts;
	k->rep_throttle_us = rep->throttle_us;
	k->t_dispatch = rep->t_dispatch;
	k->t_end = rep->t_end;
	k->reused = rep->reused;
	snprintf(k->remote, sizeof(k->remote), "%s", rep->remote);
	snprintf(k->final_url, sizeof(k->final_url), "%s",
	    rep->final_url != NULL ? rep->final_url : "");
	snprintf(k->xtest, sizeof(k->xtest), "%s", h != NULL ? h->value : "");
	if (free_in_done && k->rp != NULL && *k->rp != NULL) {
		upstream_free(*k->rp);
		*k->rp = NULL;
	}
}

static int
own_response(void *arg, int status, int64_t retry_after_us)
{
	struct rec *k = arg;

	k->responses++;
	k->last_response = status;
	k->last_retry_after = retry_after_us;
	return k->paused;
}

static uint64_t
own_throttled(void *arg)
{
	struct rec *k = arg;

	return k->throttled_us;
}

static const struct upstream_owner owner = {
	.requeue = own_requeue,
	.released = own_released,
	.response = own_response,
	.throttled = own_throttled,
	.done = own_done,
};

static void
guard_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fx *f = arg;

	(void)fd;
	(void)what;
	f->guard_fired = 1;
}

static void
fx_init(struct fx *f, const char *method)
{
	char why[128];

	memset(f, 0, sizeof(*f));
	f->srv = -1;
	f->base = event_base_new();
	f->guard = evtimer_new(f->base, guard_cb, f);
	pool_init(f->base, 64, 16, 30);
	upstream_init(f->base);
	f->conf = conf_new_default();
	f->gen = pool_batch_begin();
	f->opts = (struct bopts){
		.concurrency = 8,
		.per_host = 4,
		.timeout_ms = 5000,
		.connect_timeout_ms = 1000,
		.max_body_bytes = 1 << 20,
		.max_header_bytes = 65536,
		.follow_redirects = 5,
		.retries = 0,
		.body = BODY_AUTO,
		.conf = f->conf,
	};
	f->spec.method = method;
	f->spec.timeout_ms = f->opts.timeout_ms;
	CHECK(url_parse(&f->url, URL, why, sizeof(why)) == 0);
	f->o = pool_origin_get(&f->url);
}

/* Makes the request for href from f->spec and f->opts as they stand. */
static void
fx_new(struct fx *f, const char *href)
{
	char why[128];

	memset(&f->rec, 0, sizeof(f->rec));
	f->rec.rp = &f->r;
	CHECK(url_parse(&f->spec.url, href, why, sizeof(why)) == 0);
	f->r = upstream_new(&owner, &f->rec, &f->opts, 0, &f->spec);
	CHECK(f->spec.url.href == NULL);	/* the request took it over */
}

/* pool_take for this batch, as a taker that does not multiplex: the one
 * place that knows pool_take's signature (an int fresh, or flags). */
static enum pool_rc
fx_take(struct fx *f, struct origin *o, int fresh)
{
#ifdef POOL_TAKE_FRESH
	return pool_take(o, fresh ? POOL_TAKE_FRESH : 0, f->gen, &f->c);
#else
	return pool_take(o, fresh, f->gen, &f->c);
#endif
}

/* A connection from o's pool; a new one gets a socketpair as its transport,
 * whose other end becomes f->srv. Returns what pool_take said. */
static enum pool_rc
fx_conn(struct fx *f, struct origin *o, int fresh)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(8080),
		.sin_addr.s_addr = htonl(0x7f000001) };
	struct sockaddr_storage ss;
	enum pool_rc rc = fx_take(f, o, fresh);
	int sv[2];

	if (rc != POOL_NEW)
		return rc;
	CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
	evutil_make_socket_nonblocking(sv[0]);
	evutil_make_socket_nonblocking(sv[1]);
	pool_conn_set_bev(f->c, bufferevent_socket_new(f->base, sv[0], BEV_OPT_CLOSE_ON_FREE));
	memset(&ss, 0, sizeof(ss));
	memcpy(&ss, &sin, sizeof(sin));
	pool_conn_set_remote(f->c, &ss);
	f->srv = sv[1];
	if (f->nsrv < MAX_SRV)
		f->srvs[f->nsrv++] = sv[1];
	return rc;
}

/* Sends f->r on a connection of o (kept-alive or a new socketpair: either
 * way the transport is there, so upstream writes at once). */
static enum pool_rc
fx_start(struct fx *f, struct origin *o, int fresh)
{
	enum pool_rc rc = fx_conn(f, o, fresh);

	CHECK(rc == POOL_NEW || rc == POOL_REUSE);
	upstream_start(f->r, f->c, 1);
	return rc;
}

/* The owner is done with the request (unless done freed it already). */
static void
fx_free_req(struct fx *f)
{
	if (f->r != NULL)
		upstream_free(f->r);
	f->r = NULL;
	event_base_loop(f->base, EVLOOP_NONBLOCK);	/* the reaper */
}

static void
fx_done(struct fx *f)
{
	for (int i = 0; i < f->nsrv; i++)
		if (f->srvs[i] >= 0)
			close(f->srvs[i]);
	event_base_loop(f->base, EVLOOP_NONBLOCK);
	pool_origin_put(f->o);
	if (f->o2 != NULL)
		pool_origin_put(f->o2);
	pool_batch_end(f->gen);
	upstream_shutdown();
	pool_shutdown();
	event_base_loop(f->base, EVLOOP_NONBLOCK);
	event_free(f->guard);
	event_base_free(f->base);
	conf_unref(f->conf);
	url_free(&f->url);
	url_free(&f->url2);
	json_decref(f->hdrs);
	json_decref(f->ohdrs);
	json_decref(f->json);
}

static void
guard_arm(struct fx *f, unsigned ms)
{
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

	f->guard_fired = 0;
	evtimer_add(f->guard, &tv);
}

/* Runs the loop until *v reaches want, within TURNS turns and ms. */
static int
wait_ms(struct fx *f, const int *v, int want, unsigned ms)
{
	guard_arm(f, ms);
	for (int i = 0; i < TURNS && *v < want && !f->guard_fired; i++)
		event_base_loop(f->base, EVLOOP_ONCE);
	evtimer_del(f->guard);
	return *v >= want;
}

static int
wait_for(struct fx *f, const int *v, int want)
{
	return wait_ms(f, v, want, GUARD_MS);
}

/* Runs the loop for ms, whatever happens: only to show that something
 * (a timer that was cancelled) does not happen. */
static void
run_for(struct fx *f, unsigned ms)
{
	guard_arm(f, ms);
	for (int i = 0; i < TURNS && !f->guard_fired; i++)
		event_base_loop(f->base, EVLOOP_ONCE);
	evtimer_del(f->guard);
}

/* The value of the request's first header called name, or NULL. */
static const char *
hdr(const char *req, const char *name)
{
	static char val[512];
	const char *p = strstr(req, "\r\n"), *end = strstr(req, "\r\n\r\n");
	size_t n = strlen(name);

	while (p != NULL && end != NULL && p < end) {
		p += 2;
		if (strncasecmp(p, name, n) == 0 && p[n] == ':') {
			const char *v = p + n + 1, *e = strstr(v, "\r\n");
			while (*v == ' ')
				v++;
			snprintf(val, sizeof(val), "%.*s", (int)(e - v), v);
			return val;
		}
		p = strstr(p, "\r\n");
	}
	return NULL;
}

static int
hdr_count(const char *req, const char *name)
{
	const char *p = strstr(req, "\r\n"), *end = strstr(req, "\r\n\r\n");
	size_t n = strlen(name);
	int count = 0;

	while (p != NULL && end != NULL && p < end) {
		p += 2;
		if (strncasecmp(p, name, n) == 0 && p[n] == ':')
			count++;
		p = strstr(p, "\r\n");
	}
	return count;
}

static int
starts(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* Whether buf holds a whole request: a head and its Content-Length body. */
static int
req_whole(const char *buf, size_t len)
{
	const char *end = strstr(buf, "\r\n\r\n"), *cl;

	if (end == NULL)
		return 0;
	cl = hdr(buf, "content-length");
	return len >= (size_t)(end + 4 - buf) + (cl != NULL ? strtoul(cl, NULL, 10) : 0);
}

/* Reads one whole request off the server's end into buf (NUL-terminated);
 * its length, or -1 if none came. */
static ssize_t
srv_read(struct fx *f, char *buf, size_t cap)
{
	size_t len = 0;
	int i;

	buf[0] = '\0';
	guard_arm(f, GUARD_MS);
	for (i = 0; i < TURNS && !f->guard_fired; i++) {
		ssize_t n = read(f->srv, buf + len, cap - 1 - len);
		if (n > 0) {
			len += (size_t)n;
			buf[len] = '\0';
			if (req_whole(buf, len))
				break;
			continue;
		}
		if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
			break;
		event_base_loop(f->base, EVLOOP_ONCE);
	}
	evtimer_del(f->guard);
	return req_whole(buf, len) ? (ssize_t)len : -1;
}

static void
srv_send(struct fx *f, const void *p, size_t n)
{
	CHECK(write(f->srv, p, n) == (ssize_t)n);
}

static void
srv_write(struct fx *f, const char *s)
{
	srv_send(f, s, strlen(s));
}

/* Sends n bytes as fast as the daemon takes them, until it is done. */
static void
srv_feed(struct fx *f, const void *p, size_t n)
{
	size_t off = 0;

	for (int i = 0; i < 100 * TURNS && off < n && !f->rec.done; i++) {
		ssize_t w = write(f->srv, (const char *)p + off, n - off);
		if (w > 0)
			off += (size_t)w;
		else if (errno != EAGAIN && errno != EWOULDBLOCK)
			break;
		event_base_loop(f->base, EVLOOP_NONBLOCK);
	}
}

/* Whether the daemon closes its end: reads (and drops) until EOF. */
static int
srv_eof(struct fx *f)
{
	char b[4096];
	int eof = 0;

	guard_arm(f, GUARD_MS);
	for (int i = 0; i < TURNS && !f->guard_fired; i++) {
		ssize_t n = read(f->srv, b, sizeof(b));
		if (n == 0) {
			eof = 1;
			break;
		}
		if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
			break;
		if (n < 0)
			event_base_loop(f->base, EVLOOP_ONCE);
	}
	evtimer_del(f->guard);
	return eof;
}

/* Whether the daemon's end is still open and silent, once what was queued
 * for this turn (a bufferevent's deferred close) has run. */
static int
srv_open(struct fx *f)
{
	char b;

	for (int i = 0; i < 3; i++)
		event_base_loop(f->base, EVLOOP_NONBLOCK);
	return read(f->srv, &b, 1) < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

static void
srv_close(struct fx *f)
{
	for (int i = 0; i < f->nsrv; i++)
		if (f->srvs[i] == f->srv)
			f->srvs[i] = -1;
	close(f->srv);
	f->srv = -1;
}

/* gzip of n bytes of in into out; the compressed length. */
static size_t
gzip(const void *in, size_t n, unsigned char *out, size_t cap)
{
	z_stream z;
	size_t len;

	memset(&z, 0, sizeof(z));
	CHECK(deflateInit2(&z, 9, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) == Z_OK);
	z.next_in = (Bytef *)(uintptr_t)in;
	z.avail_in = (uInt)n;
	z.next_out = out;
	z.avail_out = (uInt)cap;
	CHECK(deflate(&z, Z_FINISH) == Z_STREAM_END);
	len = z.total_out;
	deflateEnd(&z);
	return len;
}

/* Sends a 200 whose body is body (len bytes) with Content-Encoding coding. */
static void
srv_send_encoded(struct fx *f, const char *coding, const void *body, size_t len)
{
	char head[256];

	snprintf(head, sizeof(head), "HTTP/1.1 200 OK\r\nContent-Encoding: %s\r\n"
	    "Content-Length: %zu\r\n\r\n", coding, len);
	srv_write(f, head);
	srv_send(f, body, len);
}

/*
 * The request on the wire.
 */

/* Method, target, Host, the daemon's own headers, the caller's (the
 * request's over the batch's, case-insensitively), and none of the headers
 * that belong to the connection or framing, whoever asked for them. */
static void
test_request_on_wire(void)
{
	struct fx f;
	char req[8192];
	const char *body;

	fx_init(&f, "POST");
	f.hdrs = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}",
	    "X-A", "1", "Authorization", "Bearer t", "Connection", "close",
	    "Host", "evil.example", "Content-Length", "99", "Transfer-Encoding", "chunked",
	    "Keep-Alive", "300", "TE", "trailers", "Upgrade", "h2c",
	    "Proxy-Connection", "close", "Trailer", "X-T");
	f.ohdrs = json_pack("{s:s, s:s, s:s, s:s}", "x-a", "from-batch", "X-B", "2",
	    "Cookie", "c=1", "connection", "keep-alive");
	f.spec.headers = f.hdrs;
	f.opts.headers = f.ohdrs;
	f.spec.body = "hello";
	f.spec.bodylen = 5;
	fx_new(&f, URL);
	fx_start(&f, f.o, 0);
	CHECK(srv_read(&f, req, sizeof(req)) > 0);
	CHECK(starts(req, "POST /x?q=1 HTTP/1.1\r\n"));
	CHECK_STR(hdr(req, "Host"), "127.0.0.1:8080");
	CHECK(hdr_count(req, "Host") == 1);
	CHECK_STR(hdr(req, "X-A"), "1");
	CHECK(hdr_count(req, "X-A") == 1);
	CHECK_STR(hdr(req, "X-B"), "2");
	CHECK_STR(hdr(req, "Authorization"), "Bearer t");
	CHECK_STR(hdr(req, "Cookie"), "c=1");
	CHECK_STR(hdr(req, "User-Agent"), "fanoutd/" FANOUTD_VERSION);
	CHECK_STR(hdr(req, "Accept-Encoding"), "gzip, deflate");
	CHECK_STR(hdr(req, "Content-Length"), "5");
	CHECK(hdr_count(req, "Content-Length") == 1);
	CHECK(hdr(req, "Connection") == NULL);
	CHECK(hdr(req, "Transfer-Encoding") == NULL);
	CHECK(hdr(req, "Keep-Alive") == NULL);
	CHECK(hdr(req, "TE") == NULL);
	CHECK(hdr(req, "Upgrade") == NULL);
	CHECK(hdr(req, "Proxy-Connection") == NULL);
	CHECK(hdr(req, "Trailer") == NULL);
	CHECK(hdr(req, "Content-Type") == NULL);
	body = strstr(req, "\r\n\r\n");
	CHECK(body != NULL && strcmp(body + 4, "hello") == 0);

	srv_write(&f, "HTTP/1.1 204 No Content\r\n\r\n");
	CHECK(wait_for(&f, &f.rec.done, 1));
	CHECK(f.rec.kind == KIND_NONE && f.rec.status == 204);
	fx_free_req(&f);
	fx_done(&f);
}

/* A "json" body is serialised compactly with its Content-Type; the caller's
 * User-Agent and Accept-Encoding replace the daemon's; a PUT without a body
 * says Content-Length: 0, a DELETE with one says its length, a GET nothing. */
static void
test_request_json_and_overrides(void)
{
	struct fx f;
	char req[4096];
	const char *body;

	fx_init(&f, "PATCH");
	f.json = json_pack("{s:i}", "a", 1);
	f.hdrs = json_pack("{s:s, s:s}", "user-agent", "mine/1", "Accept-Encoding", "identity");
	f.spec.json = f.json;
	f.spec.headers = f.hdrs;
	fx_new(&f, URL);
	fx_start(&f, f.o, 0);
	CHECK(srv_read(&f, req, sizeof(req)) > 0);
	CHECK(starts(req, "PATCH /x?q=1 HTTP/1.1\r\n"));
	CHECK_STR(hdr(req, "Content-Type"), "application/json");
	CHECK_STR(hdr(req, "Content-Length"), "7");
	body = strstr(req, "\r\n\r\n");
	CHECK(body != NULL && strcmp(body + 4, "{\"a\":1}") == 0);
	CHECK(hdr_count(req, "User-Agent") == 1);
	CHECK_STR(hdr(req, "User-Agent"), "mine/1");
	CHECK(hdr_count(req, "Accept-Encoding") == 1);
	CHECK_STR(hdr(req, "Accept-Encoding"), "identity");
	srv_write(&f, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
	CHECK(wait_for(&f, &f.rec.done, 1));
	fx_free_req(&f);

	f.spec = (struct reqspec){ .method = "PUT", .timeout_ms = 5000 };
	fx_new(&f, "http://127.0.0.1:8080/put");
	CHECK(fx_start(&f, f.o, 0) == POOL_REUSE);
	CHECK(srv_read(&f, req, sizeof(req)) > 0);
	CHECK(starts(req, "PUT /put HTTP/1.1\r\n"));
	CHECK_STR(hdr(req, "Content-Length"), "0");
	srv_write(&f, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
	CHECK(wait_for(&f, &f.rec.done, 1));
	fx_free_req(&f);

	/* A body goes with its length whatever the method. */
	f.spec = (struct reqspec){ .method = "DELETE", .body = "bye", .bodylen = 3,
		.timeout_ms = 5000 };
	fx_new(&f, "http://127.0.0.1:8080/d");
	CHECK(fx_start(&f, f.o, 0) == POOL_REUSE);
	CHECK(srv_read(&f, req, sizeof(req)) > 0);
	CHECK(starts(req, "DELETE /d HTTP/1.1\r\n"));
	CHECK_STR(hdr(req, "Content-Length"), "3");
	body = strstr(req, "\r\n\r\n");
	CHECK(body != NULL && strcmp(body + 4, "bye") == 0);
	srv_write(&f, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
	CHECK(wait_for(&f, &f.rec.done, 1));
	fx_free_req(&f);

	f.spec = (struct reqspec){ .method = "GET", .timeout_ms = 5000 };
	fx_new(&f, "http://127.0.0.1:8080/");
	CHECK(fx_start(&f, f.o, 0) == POOL_REUSE);
	CHECK(srv_read(&f, req, sizeof(req)) > 0);
	CHECK(starts(req, "GET / HTTP/1.1\r\n"));
	CHECK(hdr(req, "Content-Length") == NULL);
	CHECK(hdr(req, "Content-Type") == NULL);
	srv_write(&f, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
	CHECK(wait_for(&f, &f.rec.done, 1));
	fx_free_req(&f);
	fx_done(&f);
}

/*
 * Responses.
 */

/* A 200 with Content-Length: one done, after released, with the body; the
 * connection goes back to the pool and serves the next request. */
static void
test_200_keeps_connection(void)
{
	struct fx f;
	struct conn *first;
	char req[4096];

	fx_init(&f, "GET");
	fx_new(&f, URL);
	CHECK(fx_start(&f, f.o, 0) == POOL_NEW);
	first = f.c;
	CHECK(srv_read(&f, req, sizeof(req)) > 0);
	srv_write(&f, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Test: yes\r\n\r\nhello");
	CHECK(wait_for(&f, &f.rec.done, 1));
	CHECK(f.rec.done == 1);
	CHECK(f.rec.kind == KIND_NONE);
	CHECK(f.rec.status == 200);
	CHECK_STR(f.rec.body, "hello");
	CHECK(f.rec.bodylen == 5 && f.rec.bytes == 5);
	CHECK_STR(f.rec.xtest, "yes");
	CHECK(f.rec.released == 1 && f.rec.released_at_done == 1);
	CHECK(f.rec.requeues == 0);
	CHECK(f.rec.attempts == 1);
	CHECK(f.rec.reused == 1);
	CHECK_STR(f.rec.remote, "127.0.0.1:8080");
	CHECK_STR(f.rec.final_url, "");
	CHECK(f.rec.msg[0] == '\0');
	fx_free_req(&f);
	CHECK(f.rec.done == 1);		/* never twice */
	CHECK(srv_open(&f));

	/* The same connection, from the pool, for the next request. */
	fx_new(&f, "http://127.0.0.1:8080/again");
	CHECK(fx_start(&f, f.o, 0) == POOL_REUSE);
	CHECK(f.c == first);
	CHECK(srv_read(&f, req, sizeof(req)) > 0);
	CHECK(starts(req, "GET /again HTTP/1.1\r\n"));
	srv_write(&f, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc");
	CHECK(wait_for(&f, &f.rec.done, 1));
	CHECK(f.rec.kind == KIND_NONE && f.rec.status == 200);
	CHECK_STR(f.rec.body, "abc");
	fx_free_req(&f);
	fx_done(&f);
}

/* Bytes after the body, or Connection: close, and the connection is not
 * kept: the result still stands. */
static void
test_connection_not_kept(void)
{
	static const char *const resp[] = {
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhiEXTRA",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
		"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi",
	};
	char req[4096];

	for (size_t i = 0; i < sizeof(resp) / sizeof(resp[0]); i++) {
		struct fx f;

		fx_init(&f, "GET");
		fx_new(&f, URL);
		fx_start(&f, f.o, 0);
		CHECK(srv_read(&f, req, sizeof(req)) > 0);
		srv_write(&f, resp[i]);
		CHECK(wait_for(&f, &f.rec.done, 1));
		CHECK(f.rec.kind == KIND_NONE && f.rec.status == 200);
		CHECK_STR(f.rec.body, "hi");
		CHECK(f.rec.released == 1);
		CHECK(srv_eof(&f));
		fx_free_req(&f);
		CHECK(fx_conn(&f, f.o, 0) == POOL_NEW);	/* nothing idle */
		pool_close(f.c);
		fx_done(&f);
	}
}

/* A chunked body arriving in two pieces. */
static void
test_chunked(void)
{
	struct fx f;
	char req[4096];

	fx_init(&f, "GET");
	fx_new(&f, URL);
	fx_start(&f, f.o, 0);
	CHECK(srv_read(&f, req, sizeof(req)) > 0);
	srv_write(&f, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
	event_base_loop(f.base, EVLOOP_ONCE);
	CHECK(f.rec.done == 0);
	srv_write(&f, "6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n");
	CHECK(wait_for(&f, &f.rec.done, 1));
	CHECK(f.rec.kind == KIND_NONE && f.rec.status == 200);
	CHECK_STR(f.rec.body, "hello world");
	CHECK(f.rec.bytes == 11);
	CHECK(srv_open(&f));		/* kept */
	fx_free_req(&f);
	CHECK(fx_conn(&f, f.o, 0) == POOL_REUSE);
	pool_close(f.c);
	fx_done(&f);
}

/* Neither a length nor chunks: the body runs to the close, and the
 * connection goes with it. */
static void
test_body_to_close(void)
{
	struct fx f;
	char req[4096];

	fx_init(&f, "GET");
	fx_new(&f, URL);
	fx_start(&f, f.o, 0);
	CHECK(srv_read(&f, req, sizeof(req)) > 0);
	srv_write(&f, "HTTP/1.1 200 OK\r\nX-Test: close\r\n\r\nuntil the end");
	event_base_loop(f.base, EVLOOP_ONCE);
	CHECK(f.rec.done == 0);
	srv_close(&f);
	CHECK(wait_for(&f, &f.rec.done, 1));
	CHECK(f.rec.kind == KIND_NONE && f.rec.status == 200);
	CHECK_STR(f.rec.body, "until the end");
	CHECK(f.rec.bytes == 13);
	CHECK(f.rec.released == 1);
	fx_free_req(&f);
	CHECK(fx_conn(&f, f.o, 0) == POOL_NEW);
	pool_close(f.c);
	fx_done(&f);
}

/* A gzip body is decoded when the daemon asked for it, kept raw when the
 * caller did; a truncated one is a protocol error. */
static void
test_gzip(void)
{
	static const char text[] = "The quick brown fox jumps over the lazy dog. "
	    "The quick brown fox jumps over the lazy dog. 0123456789";
	unsigned char gz[512], z[512];
	size_t gzlen = gzip(text, sizeof(text) - 1, gz, sizeof(gz));
	uLongf zlen;
	char req[4096];
	struct fx f;

	CHECK(gzlen > 18 && gzlen < sizeof(text) - 1);

	fx_init(&f, "GET");
	fx_new(&f, URL);
	fx_start(&f, f.o, 0);
	CHECK(srv_read(&f, req, sizeof(req)) > 0);
	srv_send_encoded(&f, "gzip", gz, gzlen);
	CHECK(wait_for(&f, &f.rec.done, 1));
	CHECK(f.rec.kind == KIND_NONE && f.rec.status == 200);
	CHECK(f.rec.bodylen == sizeof(text) - 1 && f.rec.bytes == sizeof(text) - 1);
	CHECK_STR(f.rec.body, text);
	fx_free_req(&f);

	/* deflate: a zlib stream. */
	zlen = sizeof(z);
	CHECK(compress2(z, &zlen, (const Bytef *)text, sizeof(text) - 1, 9) == Z_OK);
	fx_new(&f, URL);
	CHECK(fx_start(&f, f.o, 0) == POOL_REUSE);
	CHECK(srv_read(&f, req, sizeof(req)) > 0);
	srv_send_encoded(&f, "deflate", z, zlen);
	CHECK(wait_for(&f, &f.rec.done, 1));
	CHECK(f.rec.kind == KIND_NONE);
	CHECK(f.rec.bytes == sizeof(text) - 1);
	CHECK_STR(f.rec.body, text);
	fx_free_req(&f);

	/* The caller asked for an encoding: it gets the bytes as sent. */
	f.hdrs = json_pack("{s:s}", "Accept-Encoding", "gzip");
	f.spec.headers = f.hdrs;
	fx_new(&f, URL);
	CHECK(fx_start(&f, f.o, 0) == POOL_REUSE);
	CHECK(srv_read(&f, req, sizeof(req)) > 0);
	srv_send_encoded(&f, "gzip", gz, gzlen);
	CHECK(wait_for(&f, &f.rec.done, 1));
	CHECK(f.rec.kind == KIND_NONE);
	CHECK(f.rec.bodylen == gzlen && f.rec.bytes == gzlen);
	CHECK(memcmp(f.rec.body, gz, gzlen) == 0);
	fx_free_req(&f);

	/* Cut short, though framed whole. */
	f.spec.headers = NULL;
	fx_new(&f, URL);
	CHECK(fx_start(&f, f.o, 0) == POOL_REUSE);
	CHECK(srv_read(&f, req, sizeof(req)) > 0);
	srv_send_encoded(&f, "gzip", gz, gzlen / 2);
	CHECK(wait_for(&f, &f.rec.done, 1));
	CHECK(f.rec.kind == KIND_PROTOCOL);
	CHECK_STR(f.rec.msg, "gzip body is corrupt or truncated");
	CHECK(f.rec.body_null);
	CHECK(srv_eof(&f));
	fx_free_req(&f);
	fx_done(&f);
}

/* max_body_bytes: a body of exactly the limit passes; one byte more, as
 * sent or as decoded, is too_large, and the connection is closed. */
static void
test_too_large(void)
{
	static char big[1000];
	unsigned char gz[256];
	size_t gzlen;
	char req[4096];
	struct fx f;

	fx_init(&f, "GET");
	f.opts.max_body_bytes = 16;
	fx_new(&f, URL);
	fx_start(&f, f.o, 0);
	CHECK(srv_read(&f, req, sizeof(req)) > 0);
	srv_write(&f, "HTTP/1.1 200 OK\r\nContent-Length: 16\r\n\r\n0123456789abcdef");
	CHECK(wait_for(&f, &f.rec.done, 1));
	CHECK(f.rec.kind == KIND_NONE && f.rec.bytes == 16);
	fx_free_req(&f);

	fx_new(&f, URL);
	CHECK(fx_start(&f, f.o, 0) == POOL_REUSE);
	CHECK(srv_read(&f, req, sizeof(req)) > 0);
	srv_write(&f, "HTTP/1.1 200 OK\r\nContent-Length: 17\r\n\r\n0123456789abcdefg");
	CHECK(wait_for(&f, &f.rec.done, 1));
	CHECK(f.rec.kind == KIND_TOO_LARGE);
	CHECK_STR(f.rec.msg, "body over 16 bytes");
	CHECK(f.rec.body_null && f.rec.status == 200);
	CHECK(f.rec.released == 1);
	CHECK(srv_eof(&f));
	fx_free_req(&f);

	/* A compression bomb in miniature: small on the wire, not decoded. */
	memset(big, 'a', sizeof(big));
	gzlen = gzip(big, sizeof(big), gz, sizeof(gz));
	CHECK(gzlen < 100);
	f.opts.max_body_bytes = 100;
	fx_new(&f, URL);
	CHECK(fx_start(&f, f.o, 0) == POOL_NEW);
	CHECK(srv_read(&f, req, sizeof(req)) > 0);
	srv_send_encoded(&f, "gzip", gz, gzlen);
	CHECK(wait_for(&f, &f.rec.done, 1));
	CHECK(f.rec.kind == KIND_TOO_LARGE);
	CHECK_STR(f.rec.msg, "body over 100 bytes (decoded)");
	CHECK(srv_eof(&f));
	fx_free_req(&f);
	fx_done(&f);
}

/* Responses that can be read two ways, or not at all: protocol errors, the
 * connection closed, no retry even on a reused connection. */
static void
test_malformed(void)
{
	static const struct {
		const char *resp;
		const char *msg;
		int close_after;	/* the server closes after sending */
	} cases[] = {
		{ "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
		    "more than one Content-Length header", 0 },
		{ "HTPT/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", "malformed status line", 0 },
		{ "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc",
		    "both Transfer-Encoding and Content-Length", 0 },
		{ "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello",
		    "connection closed before end of body", 1 },
		{ "HTTP/1.1 200 OK\r\nContent-Le", "connection closed inside the response head", 1 },
		{ "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n",
		    "unexpected 101 Switching Protocols", 0 },
	};
	char req[4096];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct fx f;

		fx_init(&f, "GET");
		f.opts.retries = 2;
		fx_new(&f, URL);
		fx_start(&f, f.o, 0);
		CHECK(srv_read(&f, req, sizeof(req)) > 0);
		srv_write(&f, cases[i].resp);
		if (cases[i].close_after)
			srv_close(&f);
		CHECK(wait_for(&f, &f.rec.done, 1));
		CHECK(f.rec.kind == KIND_PROTOCOL);
		CHECK_STR(f.rec.msg, cases[i].msg);
		CHECK(f.rec.requeues == 0 && f.rec.released == 1);
		CHECK(f.rec.body_null);
		if (!cases[i].close_after)
			CHECK(srv_eof(&f));
		fx_free_req(&f);
		CHECK(fx_conn(&f, f.o, 0) == POOL_NEW);
		pool_close(f.c);
		fx_done(&f);
	}
}

/* A head over max_header_bytes. */
static void
test_header_too_big(void)
{
	struct fx f;
	char req[4096], resp[3000];

	fx_init(&f, "GET");
	f.opts.max_header_bytes = 1024;
	fx_new(&f, URL);
	fx_start(&f, f.o, 0);
	CHECK(srv_read(&f, req, sizeof(req)) > 0);
	snprintf(resp, sizeof(resp), "HTTP/1.1 200 OK\r\nX-Big: %0*d\r\n", 2000, 0);
	srv_write(&f, resp);
	CHECK(wait_for(&f, &f.rec.done, 1));
	CHECK(f.rec.kind == KIND_PROTOCOL);
	CHECK_STR(f.rec.msg, "response header block over 1024 bytes");
	CHECK(srv_eof(&f));
	fx_free_req(&f);
	fx_done(&f);
}

/* An interim 100 is skipped; the final head follows. */
static void
test_interim(void)
{
	struct fx f;
	char req[4096];

	fx_init(&f, "GET");
	fx_new(&f, URL);
	fx_start(&f, f.o, 0);
	CHECK(srv_read(&f, req, sizeof(req)) > 0);
	srv_write(&f, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok");
	CHECK(wait_for(&f, &f.rec.done, 1));
	CHECK(f.rec.kind == KIND_NONE && f.rec.status == 201);
	CHECK_STR(f.rec.body, "ok");
	fx_free_req(&f);
	fx_done(&f);
}

/* HEAD: the Content-Length is the resource's, no body follows. */
static void
test_head(void)
{
	struct fx f;
	char req[4096];

	fx_init(&f, "HEAD");
	fx_new(&f, URL);
	fx_start(&f, f.o, 0);
	CHECK(srv_read(&f, req, sizeof(req)) > 0);
	CHECK(starts(req, "HEAD /x?q=1 HTTP/1.1\r\n"));
	srv_write(&f, "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nX-Test: head\r\n\r\n");
	CHECK(wait_for(&f, &f.rec.done, 1));
	CHECK(f.rec.kind == KIND_NONE && f.rec.status == 200);
	CHECK(f.rec.bytes == 0 && f.rec.bodylen == 0);
	CHECK_STR(f.rec.xtest, "head");
	CHECK(f.rec.released == 1);
	CHECK(srv_open(&f));
	fx_free_req(&f);
	CHECK(fx_conn(&f, f.o, 0) == POOL_REUSE);
	pool_close(f.c);
	fx_done(&f);
}

/*
 * Attempts: stale connections, redirects, retries, time limits, aborts.
 */

/* A kept-alive connection closed before any response byte: the request did
 * not reach the upstream, so it goes once more on a fresh connection; the
 * second such close is the result. */
static void
test_stale_connection(void)
{
	struct fx f;
	char req[4096];

	fx_init(&f, "POST");	/* the contract retries this whatever the method */
	fx_new(&f, URL);
	fx_start(&f, f.o, 0);
	CHECK(srv_read(&f, req, sizeof(req)) > 0);
	srv_close(&f);
	CHECK(wait_for(&f, &f.rec.requeues, 1));
	CHECK(f.rec.requeues == 1 && f.rec.fresh == 1);
	CHECK_STR(f.rec.href, URL);
	CHECK(f.rec.done == 0);
	CHECK(f.rec.released == 1);

	CHECK(fx_start(&f, f.o, 1) == POOL_NEW);
	CHECK(srv_read(&f, req, sizeof(req)) > 0);
	CHECK(starts(req, "POST /x?q=1 HTTP/1.1\r\n"));
	srv_close(&f);
	CHECK(wait_for(&f, &f.rec.done, 1));
	CHECK(f.rec.requeues == 1);
	CHECK(f.rec.kind == KIND_PROTOCOL);
	CHECK_STR(f.rec.msg, "connection closed before any response");
	CHECK(f.rec.released == 2);
	CHECK(f.rec.attempts == 1);
	fx_free_req(&f);
	fx_done(&f);
}

/* Redirects: a same-origin hop keeps the caller's credentials, a hop to
 * another origin drops Authorization, Cookie and Proxy-Authorization and
 * keeps the rest; final_url is the last hop's. */
static void
test_redirect_credentials(void)
{
	struct fx f;
	char req[4096], why[128];
	struct conn *first;

	fx_init(&f, "GET");
	f.opts.follow_redirects = 3;
	f.hdrs = json_pack("{s:s, s:s}", "Authorization", "Bearer t", "X-A", "1");
	f.ohdrs = json_pack("{s:s, s:s}", "Cookie", "c=1", "Proxy-Authorization", "Basic x");
	f.spec.headers = f.hdrs;
	f.opts.headers = f.ohdrs;
	fx_new(&f, URL);
	fx_start(&f, f.o, 0);
	first = f.c;
	CHECK(srv_read(&f, req, sizeof(req)) > 0);
	srv_write(&f, "HTTP/1.1 302 Found\r\nLocation: /y\r\nContent-Length: 4\r\n\r\nmove");
	CHECK(wait_for(&f, &f.rec.requeues, 1));
	CHECK(f.rec.fresh == 0);
	CHECK_STR(f.rec.href, "http://127.0.0.1:8080/y");
	CHECK(f.rec.done == 0 && f.rec.released == 1);

	/* The 302's body was read off: the connection serves the hop. */
	CHECK(fx_start(&f, f.o, 0) == POOL_REUSE);
	CHECK(f.c == first);
	CHECK(srv_read(&f, req, sizeof(req)) > 0);
	CHECK(starts(req, "GET /y HTTP/1.1\r\n"));
	CHECK_STR(hdr(req, "Authorization"), "Bearer t");
	CHECK_STR(hdr(req, "Cookie"), "c=1");
	CHECK_STR(hdr(req, "Proxy-Authorization"), "Basic x");
	srv_write(&f, "HTTP/1.1 307 Temporary Redirect\r\n"
	    "Location: http://Other.Example:9000/z?a=b#frag\r\nContent-Length: 0\r\n\r\n");
	CHECK(wait_for(&f, &f.rec.requeues, 2));
	CHECK_STR(f.rec.href, "http://other.example:9000/z?a=b");
	CHECK(f.rec.done == 0 && f.rec.released == 2);

	CHECK(url_parse(&f.url2, f.rec.href, why, sizeof(why)) == 0);
	f.o2 = pool_origin_get(&f.url2);
	CHECK(fx_start(&f, f.o2, 0) == POOL_NEW);
	CHECK(srv_read(&f, req, sizeof(req)) > 0);
	CHECK(starts(req, "GET /z?a=b HTTP/1.1\r\n"));
	CHECK_STR(hdr(req, "Host"), "other.example:9000");
	CHECK(hdr(req, "Authorization") == NULL);
	CHECK(hdr(req, "Cookie") == NULL);
	CHECK(hdr(req, "Proxy-Authorization") == NULL);
	CHECK_STR(hdr(req, "X-A"), "1");
	srv_write(&f, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
	CHECK(wait_for(&f, &f.rec.done, 1));
	CHECK(f.rec.kind == KIND_NONE && f.rec.status == 200);
	CHECK_STR(f.rec.body, "ok");
	CHECK_STR(f.rec.final_url, "http://other.example:9000/z?a=b");
	CHECK(f.rec.released == 3);
	fx_free_req(&f);
	fx_done(&f);
}

/* 303 turns a POST into a GET without its body. */
static void
test_redirect_303(void)
{
	struct fx f;
	char req[4096];

	fx_init(&f, "POST");
	f.spec.body = "hello";
	f.spec.bodylen = 5;
	fx_new(&f, URL);
	fx_start(&f, f.o, 0);
	CHECK(srv_read(&f, req, sizeof(req)) > 0);
	CHECK_STR(hdr(req, "Content-Length"), "5");
	srv_write(&f, "HTTP/1.1 303 See Other\r\nLocation: /see\r\nContent-Length: 0\r\n\r\n");
	CHECK(wait_for(&f, &f.rec.requeues, 1));
	CHECK(fx_start(&f, f.o, 0) == POOL_REUSE);
	CHECK(srv_read(&f, req, sizeof(req)) > 0);
	CHECK(starts(req, "GET /see HTTP/1.1\r\n"));
	CHECK(hdr(req, "Content-Length") == NULL);
	CHECK(strcmp(strstr(req, "\r\n\r\n"), "\r\n\r\n") == 0);
	srv_write(&f, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
	CHECK(wait_for(&f, &f.rec.done, 1));
	CHECK(f.rec.kind == KIND_NONE && f.rec.status == 200);
	fx_free_req(&f);
	fx_done(&f);
}

/* follow_redirects 0: the 302 is the result. 1: the second hop is too many.
 * A Location back to where the request has been is a loop. */
static void
test_redirect_limits(void)
{
	struct fx f;
	char req[4096];

	fx_init(&f, "GET");
	f.opts.follow_redirects = 0;
	fx_new(&f, URL);
	fx_start(&f, f.o, 0);
	CHECK(srv_read(&f, req, sizeof(req)) > 0);
	srv_write(&f, "HTTP/1.1 302 Found\r\nLocation: /y\r\nContent-Length: 4\r\n\r\nmove");
	CHECK(wait_for(&f, &f.rec.done, 1));
	CHECK(f.rec.requeues == 0);
	CHECK(f.rec.kind == KIND_NONE && f.rec.status == 302);
	CHECK_STR(f.rec.body, "move");
	fx_free_req(&f);

	f.opts.follow_redirects = 1;
	fx_new(&f, URL);
	CHECK(fx_start(&f, f.o, 0) == POOL_REUSE);
	CHECK(srv_read(&f, req, sizeof(req)) > 0);
	srv_write(&f, "HTTP/1.1 301 Moved\r\nLocation: /y\r\nContent-Length: 0\r\n\r\n");
	CHECK(wait_for(&f, &f.rec.requeues, 1));
	CHECK(fx_start(&f, f.o, 0) == POOL_REUSE);
	CHECK(srv_read(&f, req, sizeof(req)) > 0);
	srv_write(&f, "HTTP/1.1 301 Moved\r\nLocation: /z\r\nContent-Length: 0\r\n\r\n");
	CHECK(wait_for(&f, &f.rec.done, 1));
	CHECK(f.rec.requeues == 1);
	CHECK(f.rec.kind == KIND_REDIRECTS);
	CHECK_STR(f.rec.msg, "more than 1 redirects");
	fx_free_req(&f);

	f.opts.follow_redirects = 5;
	fx_new(&f, URL);
	CHECK(fx_start(&f, f.o, 0) == POOL_NEW);	/* the last one failed: closed */
	CHECK(srv_read(&f, req, sizeof(req)) > 0);
	srv_write(&f, "HTTP/1.1 302 Found\r\nLocation: /y\r\nContent-Length: 0\r\n\r\n");
	CHECK(wait_for(&f, &f.rec.requeues, 1));
	CHECK(fx_start(&f, f.o, 0) == POOL_REUSE);
	CHECK(srv_read(&f, req, sizeof(req)) > 0);
	srv_write(&f, "HTTP/1.1 302 Found\r\nLocation: /x?q=1\r\nContent-Length: 0\r\n\r\n");
	CHECK(wait_for(&f, &f.rec.done, 1));
	CHECK(f.rec.kind == KIND_REDIRECTS);
	CHECK_STR(f.rec.msg, "redirect loop at " URL);
	fx_free_req(&f);

	fx_new(&f, URL);
	CHECK(fx_start(&f, f.o, 0) == POOL_NEW);
	CHECK(srv_read(&f, req, sizeof(req)) > 0);
	srv_write(&f, "HTTP/1.1 302 Found\r\nLocation: ftp://127.0.0.1/f\r\nContent-Length: 0\r\n\r\n");
	CHECK(wait_for(&f, &f.rec.done, 1));
	CHECK(f.rec.requeues == 0);
	CHECK(f.rec.kind == KIND_REDIRECTS);
	CHECK(strncmp(f.rec.msg, "bad Location: ", 14) == 0);
	fx_free_req(&f);
	fx_done(&f);
}

/* A 503 with a retry left: the connection is let go at once, the requeue
 * comes after the backoff (at least 50 ms), and the next attempt counts. */
static void
test_retry_503(void)
{
	struct fx f;
	char req[4096];
	uint64_t t0;

	fx_init(&f, "GET");
	f.opts.retries = 1;
	fx_new(&f, URL);
	fx_start(&f, f.o, 0);
	CHECK(srv_read(&f, req, sizeof(req)) > 0);
	t0 = now_us();
	srv_write(&f, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy");
	CHECK(wait_for(&f, &f.rec.released, 1));
	CHECK(f.rec.requeues == 0 && f.rec.done == 0);
	CHECK(wait_for(&f, &f.rec.requeues, 1));
	CHECK(f.rec.t_requeue - t0 >= 50000 - TICK_SLACK_US);
	CHECK(f.rec.fresh == 0);
	CHECK_STR(f.rec.href, URL);
	CHECK(f.rec.done == 0 && f.rec.released == 1);

	CHECK(fx_start(&f, f.o, 0) == POOL_REUSE);	/* the 503 was read whole */
	CHECK(srv_read(&f, req, sizeof(req)) > 0);
	srv_write(&f, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
	CHECK(wait_for(&f, &f.rec.done, 1));
	CHECK(f.rec.kind == KIND_NONE && f.rec.status == 200);
	CHECK_STR(f.rec.body, "ok");
	CHECK(f.rec.attempts == 2);
	fx_free_req(&f);
	fx_done(&f);
}

/* No retry: retries 0, a method not retried, or a Retry-After past the
 * request's time. The 503 is the result, with its body. */
static void
test_no_retry_503(void)
{
	static const struct {
		const char *method;
		unsigned retries;
		const char *extra;
	} cases[] = {
		{ "GET", 0, "" },
		{ "POST", 3, "" },
		{ "GET", 3, "Retry-After: 60\r\n" },
	};
	char req[4096], resp[256];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct fx f;

		fx_init(&f, cases[i].method);
		f.opts.retries = cases[i].retries;
		fx_new(&f, URL);
		fx_start(&f, f.o, 0);
		CHECK(srv_read(&f, req, sizeof(req)) > 0);
		snprintf(resp, sizeof(resp), "HTTP/1.1 503 Service Unavailable\r\n%s"
		    "Content-Length: 4\r\n\r\nbusy", cases[i].extra);
		srv_write(&f, resp);
		CHECK(wait_for(&f, &f.rec.done, 1));
		CHECK(f.rec.requeues == 0);
		CHECK(f.rec.kind == KIND_NONE && f.rec.status == 503);
		CHECK_STR(f.rec.body, "busy");
		CHECK(f.rec.attempts == 1);
		fx_free_req(&f);
		fx_done(&f);
	}
}

/* The server never answers: a timeout naming the phase, the connection
 * closed. And one that stops halfway through the body. */
static void
test_timeout(void)
{
	struct fx f;
	char req[4096];
	uint64_t t0;

	fx_init(&f, "GET");
	f.opts.timeout_ms = f.spec.timeout_ms = 50;
	fx_new(&f, URL);
	t0 = now_us();
	fx_start(&f, f.o, 0);
	CHECK(srv_read(&f, req, sizeof(req)) > 0);
	CHECK(wait_for(&f, &f.rec.done, 1));
	CHECK(now_us() - t0 >= 50000 - TICK_SLACK_US);
	CHECK(f.rec.kind == KIND_TIMEOUT);
	CHECK_STR(f.rec.msg, "response headers not complete within 50 ms");
	CHECK(f.rec.requeues == 0 && f.rec.released == 1);
	CHECK(srv_eof(&f));
	fx_free_req(&f);

	fx_new(&f, URL);
	fx_start(&f, f.o, 0);
	CHECK(srv_read(&f, req, sizeof(req)) > 0);
	srv_write(&f, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello");
	CHECK(wait_for(&f, &f.rec.done, 1));
	CHECK(f.rec.kind == KIND_TIMEOUT);
	CHECK_STR(f.rec.msg, "body not complete within 50 ms");
	CHECK(f.rec.body_null);
	CHECK(srv_eof(&f));
	fx_free_req(&f);

	/* Queued for a fresh connection that never comes: its time still runs. */
	fx_new(&f, URL);
	fx_start(&f, f.o, 0);
	CHECK(srv_read(&f, req, sizeof(req)) > 0);
	srv_close(&f);
	CHECK(wait_for(&f, &f.rec.requeues, 1));
	CHECK(f.rec.done == 0);
	CHECK(wait_for(&f, &f.rec.done, 1));
	CHECK(f.rec.kind == KIND_TIMEOUT);
	CHECK_STR(f.rec.msg, "connect not complete within 50 ms");
	CHECK(f.rec.requeues == 1 && f.rec.released == 1);
	fx_free_req(&f);
	fx_done(&f);
}

/* upstream_abort ends the request before it returns, wherever it is: in
 * flight (the connection closed), in its body, queued for a fresh
 * connection, or waiting out a backoff (whose timer then never fires). */
static void
test_abort(void)
{
	struct fx f;
	char req[4096];

	fx_init(&f, "GET");
	fx_new(&f, URL);
	fx_start(&f, f.o, 0);
	CHECK(srv_read(&f, req, sizeof(req)) > 0);
	upstream_abort(f.r, KIND_CANCELLED, "batch cancelled");
	CHECK(f.rec.done == 1);
	CHECK(f.rec.kind == KIND_CANCELLED);
	CHECK_STR(f.rec.msg, "batch cancelled");
	CHECK(f.rec.released == 1 && f.rec.body_null);
	CHECK(srv_eof(&f));
	fx_free_req(&f);

	fx_new(&f, URL);
	fx_start(&f, f.o, 0);
	CHECK(srv_read(&f, req, sizeof(req)) > 0);
	srv_write(&f, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello");
	event_base_loop(f.base, EVLOOP_ONCE);
	upstream_abort(f.r, KIND_DEADLINE, "batch deadline of 5 ms reached");
	CHECK(f.rec.done == 1);
	CHECK(f.rec.kind == KIND_DEADLINE && f.rec.body_null);
	CHECK_STR(f.rec.msg, "batch deadline of 5 ms reached");
	CHECK(srv_eof(&f));
	fx_free_req(&f);

	/* Queued after a stale close: nothing to let go of. */
	fx_new(&f, URL);
	fx_start(&f, f.o, 0);
	CHECK(srv_read(&f, req, sizeof(req)) > 0);
	srv_close(&f);
	CHECK(wait_for(&f, &f.rec.requeues, 1));
	upstream_abort(f.r, KIND_CANCELLED, "gone");
	CHECK(f.rec.done == 1 && f.rec.kind == KIND_CANCELLED);
	CHECK(f.rec.released == 1);
	fx_free_req(&f);

	/* In a backoff: the retry never comes. */
	f.opts.retries = 1;
	fx_new(&f, URL);
	fx_start(&f, f.o, 0);
	CHECK(srv_read(&f, req, sizeof(req)) > 0);
	srv_write(&f, "HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n");
	CHECK(wait_for(&f, &f.rec.released, 1));
	CHECK(f.rec.requeues == 0);
	upstream_abort(f.r, KIND_CANCELLED, "gone");
	CHECK(f.rec.done == 1 && f.rec.kind == KIND_CANCELLED);
	run_for(&f, 250);	/* past the longest first backoff, 100 ms */
	CHECK(f.rec.requeues == 0 && f.rec.done == 1);
	fx_free_req(&f);

	/* Never started (no timer yet): the state table allows new -> done. */
	fx_new(&f, URL);
	upstream_abort(f.r, KIND_CANCELLED, "before it went");
	CHECK(f.rec.done == 1 && f.rec.kind == KIND_CANCELLED && f.rec.released == 0);
	fx_free_req(&f);
	fx_done(&f);
}

/* An owner that starts the request again from inside requeue: on the
 * connection a redirect's response just gave back, and on a fresh one after
 * a stale close. */
static void
test_requeue_restarts_at_once(void)
{
	struct fx f;
	char req[4096];
	struct conn *first;

	fx_init(&f, "GET");
	fx_new(&f, URL);
	f.rec.restart = &f;
	fx_start(&f, f.o, 0);
	first = f.c;
	CHECK(srv_read(&f, req, sizeof(req)) > 0);
	srv_write(&f, "HTTP/1.1 302 Found\r\nLocation: /y\r\nContent-Length: 4\r\n\r\nmove");
	CHECK(srv_read(&f, req, sizeof(req)) > 0);
	CHECK(starts(req, "GET /y HTTP/1.1\r\n"));
	CHECK(f.rec.requeues == 1 && f.c == first);
	srv_write(&f, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
	CHECK(wait_for(&f, &f.rec.done, 1));
	CHECK(f.rec.kind == KIND_NONE);
	CHECK_STR(f.rec.body, "ok");
	CHECK_STR(f.rec.final_url, "http://127.0.0.1:8080/y");
	fx_free_req(&f);

	fx_new(&f, URL);
	f.rec.restart = &f;
	CHECK(fx_start(&f, f.o, 0) == POOL_REUSE);
	CHECK(srv_read(&f, req, sizeof(req)) > 0);
	srv_close(&f);
	CHECK(wait_for(&f, &f.rec.requeues, 1));
	CHECK(f.rec.fresh == 1 && f.c != first);
	CHECK(srv_read(&f, req, sizeof(req)) > 0);
	CHECK(starts(req, "GET /x?q=1 HTTP/1.1\r\n"));
	srv_write(&f, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
	CHECK(wait_for(&f, &f.rec.done, 1));
	CHECK(f.rec.kind == KIND_NONE);
	CHECK(f.rec.released == 2);
	fx_free_req(&f);
	fx_done(&f);
}

/*
 * A real connection, to a listener on loopback.
 */

static int
listener(uint16_t *port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001) };
	socklen_t sl = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	CHECK(fd >= 0);
	CHECK(bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
	CHECK(listen(fd, 8) == 0);
	CHECK(getsockname(fd, (struct sockaddr *)&sa, &sl) == 0);
	evutil_make_socket_nonblocking(fd);
	*port = ntohs(sa.sin_port);
	return fd;
}

/* Accepts the daemon's connection as f->srv. */
static int
srv_accept(struct fx *f, int lfd)
{
	int fd = -1;

	guard_arm(f, GUARD_MS);
	for (int i = 0; i < TURNS && !f->guard_fired; i++) {
		if ((fd = accept(lfd, NULL, NULL)) >= 0)
			break;
		event_base_loop(f->base, EVLOOP_ONCE);
	}
	evtimer_del(f->guard);
	if (fd < 0)
		return -1;
	evutil_make_socket_nonblocking(fd);
	f->srv = fd;
	if (f->nsrv < MAX_SRV)
		f->srvs[f->nsrv++] = fd;
	return 0;
}

/* Makes href's origin the test's first. */
static void
fx_origin(struct fx *f, const char *href)
{
	char why[128];

	pool_origin_put(f->o);
	url_free(&f->url);
	CHECK(url_parse(&f->url, href, why, sizeof(why)) == 0);
	f->o = pool_origin_get(&f->url);
}

/* Body mode "none" over TCP: the body is dropped in the kernel as it comes
 * (recv with MSG_TRUNC, which a socketpair refuses), counted in bytes, and
 * the connection kept; over max_body_bytes it is too_large. */
static void
test_body_none(void)
{
	static char big[100000];
	struct fx f;
	char req[4096], href[64];
	uint16_t port;
	int lfd = listener(&port);

	memset(big, 'n', sizeof(big));
	snprintf(href, sizeof(href), "http://127.0.0.1:%u/n", port);
	fx_init(&f, "GET");
	f.opts.body = BODY_NONE;
	fx_origin(&f, href);

	fx_new(&f, href);
	CHECK(fx_take(&f, f.o, 0) == POOL_NEW);
	upstream_start(f.r, f.c, 0);
	CHECK(srv_accept(&f, lfd) == 0);
	CHECK(srv_read(&f, req, sizeof(req)) > 0);
	srv_write(&f, "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n");
	srv_feed(&f, big, sizeof(big));
	CHECK(wait_for(&f, &f.rec.done, 1));
	CHECK(f.rec.kind == KIND_NONE && f.rec.status == 200);
	CHECK(f.rec.bytes == sizeof(big));
	CHECK(f.rec.bodylen == 0);
	CHECK(srv_open(&f));
	fx_free_req(&f);

	f.opts.max_body_bytes = 50000;
	fx_new(&f, href);
	CHECK(fx_take(&f, f.o, 0) == POOL_REUSE);
	upstream_start(f.r, f.c, 1);
	CHECK(srv_read(&f, req, sizeof(req)) > 0);
	srv_write(&f, "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n");
	srv_feed(&f, big, sizeof(big));
	CHECK(wait_for(&f, &f.rec.done, 1));
	CHECK(f.rec.kind == KIND_TOO_LARGE);
	CHECK_STR(f.rec.msg, "body over 50000 bytes");
	CHECK(srv_eof(&f));
	fx_free_req(&f);
	close(lfd);
	fx_done(&f);
}

/* Connected by upstream itself: remote and reused say so; a new connection
 * closed before any response is a result at once, not a fresh retry. */
static void
test_real_connect(void)
{
	struct fx f;
	char req[4096], href[64], remote[32];
	uint16_t port;
	int lfd = listener(&port);

	snprintf(href, sizeof(href), "http://127.0.0.1:%u/c", port);
	snprintf(remote, sizeof(remote), "127.0.0.1:%u", port);
	fx_init(&f, "GET");
	fx_origin(&f, href);

	fx_new(&f, href);
	CHECK(fx_take(&f, f.o, 0) == POOL_NEW);
	upstream_start(f.r, f.c, 0);
	CHECK(srv_accept(&f, lfd) == 0);
	CHECK(srv_read(&f, req, sizeof(req)) > 0);
	CHECK(starts(req, "GET /c HTTP/1.1\r\n"));
	CHECK_STR(hdr(req, "Host"), remote);
	srv_write(&f, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
	CHECK(wait_for(&f, &f.rec.done, 1));
	CHECK(f.rec.kind == KIND_NONE && f.rec.status == 200);
	CHECK(f.rec.reused == 0);
	CHECK_STR(f.rec.remote, remote);
	fx_free_req(&f);

	fx_new(&f, href);
	CHECK(fx_take(&f, f.o, 1) == POOL_NEW);
	upstream_start(f.r, f.c, 0);
	CHECK(srv_accept(&f, lfd) == 0);
	CHECK(srv_read(&f, req, sizeof(req)) > 0);
	srv_close(&f);
	CHECK(wait_for(&f, &f.rec.done, 1));
	CHECK(f.rec.requeues == 0);
	CHECK(f.rec.kind == KIND_PROTOCOL);
	CHECK_STR(f.rec.msg, "connection closed before any response");
	fx_free_req(&f);
	close(lfd);

	/* Nobody listens any more. */
	fx_new(&f, href);
	CHECK(fx_take(&f, f.o, 1) == POOL_NEW);
	upstream_start(f.r, f.c, 0);
	CHECK(wait_for(&f, &f.rec.done, 1));
	CHECK(f.rec.kind == KIND_CONNECT);
	CHECK_STR(f.rec.msg, "connection refused");
	fx_free_req(&f);
	fx_done(&f);
}

/* An address the policy denies is never connected to. */
static void
test_policy_blocks(void)
{
	struct fx f;
	const char *why;

	fx_init(&f, "GET");
	CHECK(conf_cidr_parse("127.0.0.0/8", &f.conf->deny[0], &why) == 0);
	f.conf->ndeny = 1;
	fx_new(&f, URL);
	CHECK(fx_take(&f, f.o, 0) == POOL_NEW);
	upstream_start(f.r, f.c, 0);
	CHECK(f.rec.done == 1);
	CHECK(f.rec.kind == KIND_BLOCKED);
	CHECK_STR(f.rec.msg, "address 127.0.0.1:8080 is not allowed by policy");
	CHECK(f.rec.released == 1);
	fx_free_req(&f);
	fx_done(&f);
}

/*
 * The owner's throttle: responses reported, a paused origin's retries, and
 * throttled waits that are queue time, not timeout_ms.
 */

/* time(NULL) + s as an HTTP-date, for Retry-After. */
static const char *
http_date(char *buf, size_t len, long s)
{
	time_t t = time(NULL) + s;
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(buf, len, "%a, %d %b %Y %H:%M:%S GMT", &tm);
	return buf;
}

/* Answers f->r with resp and waits for its end. */
static void
answer(struct fx *f, const char *resp)
{
	char req[4096];

	CHECK(srv_read(f, req, sizeof(req)) > 0);
	srv_write(f, resp);
	CHECK(wait_for(f, &f->rec.done, 1));
}

/* The owner hears of each final head, once, with its status and
 * Retry-After in microseconds (seconds or an HTTP-date; -1 when absent or
 * unreadable), and of no interim one; a redirect's and a retried
 * response's heads are final heads too. */
static void
test_owner_response(void)
{
	struct fx f;
	char date[64], resp[256], req[4096];
	int64_t ra;

	fx_init(&f, "GET");
	fx_new(&f, URL);
	fx_start(&f, f.o, 0);
	answer(&f, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nRetry-After: 7\r\n"
	    "Content-Length: 2\r\n\r\nok");
	CHECK(f.rec.responses == 1 && f.rec.last_response == 201);
	CHECK(f.rec.last_retry_after == 7000000);
	CHECK(f.rec.status == 201);
	fx_free_req(&f);

	fx_new(&f, URL);
	fx_start(&f, f.o, 0);
	answer(&f, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
	CHECK(f.rec.responses == 1 && f.rec.last_response == 200 && f.rec.last_retry_after == -1);
	fx_free_req(&f);

	fx_new(&f, URL);
	fx_start(&f, f.o, 0);
	snprintf(resp, sizeof(resp), "HTTP/1.1 429 Too Many\r\nRetry-After: %s\r\n"
	    "Content-Length: 0\r\n\r\n", http_date(date, sizeof(date), 10));
	answer(&f, resp);
	ra = f.rec.last_retry_after;
	CHECK(f.rec.responses == 1 && f.rec.last_response == 429);
	/* To the microsecond: the date is a whole second, the clock is not. */
	CHECK(ra > 8000000 && ra <= 10000000);
	CHECK(f.rec.status == 429);	/* retries 0: the result */
	fx_free_req(&f);

	/* A date past is now; an unreadable value is none. */
	fx_new(&f, URL);
	fx_start(&f, f.o, 0);
	snprintf(resp, sizeof(resp), "HTTP/1.1 503 Busy\r\nRetry-After: %s\r\n"
	    "Content-Length: 0\r\n\r\n", http_date(date, sizeof(date), -3600));
	answer(&f, resp);
	CHECK(f.rec.responses == 1 && f.rec.last_response == 503 && f.rec.last_retry_after == 0);
	fx_free_req(&f);

	fx_new(&f, URL);
	fx_start(&f, f.o, 0);
	answer(&f, "HTTP/1.1 503 Busy\r\nRetry-After: soon\r\nContent-Length: 0\r\n\r\n");
	CHECK(f.rec.responses == 1 && f.rec.last_retry_after == -1);
	fx_free_req(&f);

	/* A redirect, then its hop's answer: two heads. */
	fx_new(&f, URL);
	fx_start(&f, f.o, 0);
	CHECK(srv_read(&f, req, sizeof(req)) > 0);
	srv_write(&f, "HTTP/1.1 302 Found\r\nLocation: /y\r\nContent-Length: 0\r\n\r\n");
	CHECK(wait_for(&f, &f.rec.requeues, 1));
	CHECK(f.rec.responses == 1 && f.rec.last_response == 302);
	CHECK(fx_start(&f, f.o, 0) == POOL_REUSE);
	answer(&f, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
	CHECK(f.rec.responses == 2 && f.rec.last_response == 200);
	fx_free_req(&f);

	/* A retried 503, then the retry's 200: two heads. */
	f.opts.retries = 1;
	fx_new(&f, URL);
	fx_start(&f, f.o, 0);
	CHECK(srv_read(&f, req, sizeof(req)) > 0);
	srv_write(&f, "HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n");
	CHECK(wait_for(&f, &f.rec.requeues, 1));
	CHECK(f.rec.responses == 1 && f.rec.last_response == 503);
	CHECK(fx_start(&f, f.o, 0) == POOL_REUSE);
	answer(&f, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
	CHECK(f.rec.responses == 2 && f.rec.last_response == 200 && f.rec.attempts == 2);
	fx_free_req(&f);
	fx_done(&f);
}

/* A 429 with Retry-After: 30 and a retry left. The origin paused (the
 * owner says so): the retry waits only the short backoff, the pause being
 * the queue's to wait, and is not refused though 30 s is past timeout_ms.
 * Not paused: Retry-After is the retry's floor, and one past the time
 * left makes the 429 the result. */
static void
test_retry_paused_origin(void)
{
	struct fx f;
	char req[4096];
	uint64_t t0;

	fx_init(&f, "GET");
	f.opts.retries = 1;
	fx_new(&f, URL);
	f.rec.paused = 1;
	fx_start(&f, f.o, 0);
	CHECK(srv_read(&f, req, sizeof(req)) > 0);
	t0 = now_us();
	srv_write(&f, "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 30\r\nContent-Length: 0\r\n\r\n");
	CHECK(wait_for(&f, &f.rec.requeues, 1));
	CHECK(f.rec.done == 0);
	CHECK(f.rec.responses == 1 && f.rec.last_retry_after == 30000000);
	CHECK(f.rec.t_requeue - t0 >= 50000 - TICK_SLACK_US);
	CHECK(f.rec.t_requeue - t0 < 500000);	/* the backoff, 50 to 100 ms */
	CHECK(fx_start(&f, f.o, 0) == POOL_REUSE);
	answer(&f, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
	CHECK(f.rec.kind == KIND_NONE && f.rec.status == 200 && f.rec.attempts == 2);
	fx_free_req(&f);

	/* Paused, but no retry left: the 429 is the result. */
	f.opts.retries = 0;
	fx_new(&f, URL);
	f.rec.paused = 1;
	fx_start(&f, f.o, 0);
	answer(&f, "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 30\r\nContent-Length: 0\r\n\r\n");
	CHECK(f.rec.requeues == 0 && f.rec.status == 429 && f.rec.attempts == 1);
	fx_free_req(&f);

	/* Not paused: 30 s is past the 5 s left. */
	f.opts.retries = 1;
	fx_new(&f, URL);
	fx_start(&f, f.o, 0);
	answer(&f, "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 30\r\nContent-Length: 0\r\n\r\n");
	CHECK(f.rec.requeues == 0 && f.rec.status == 429 && f.rec.attempts == 1);
	CHECK(f.rec.responses == 1);
	fx_free_req(&f);

	/* Not paused, Retry-After: 1 within the time: waited in full. */
	fx_new(&f, URL);
	fx_start(&f, f.o, 0);
	CHECK(srv_read(&f, req, sizeof(req)) > 0);
	t0 = now_us();
	srv_write(&f, "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n");
	CHECK(wait_for(&f, &f.rec.requeues, 1));
	CHECK(f.rec.t_requeue - t0 >= 1000000 - TICK_SLACK_US);
	CHECK(fx_start(&f, f.o, 0) == POOL_REUSE);
	answer(&f, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
	CHECK(f.rec.status == 200 && f.rec.attempts == 2);
	fx_free_req(&f);
	fx_done(&f);
}

/* Every few ms, as a scheduler holding it would: the request's throttled
 * time is all its wait since it was queued. */
static void
throttle_tick(evutil_socket_t fd, short what, void *arg)
{
	struct rec *k = arg;

	(void)fd;
	(void)what;
	if (k->t_requeue != 0)
		k->throttled_us = now_us() - k->t_requeue;
}

/* A retry queued behind a rate limit or a pause: while its owner reports
 * it throttled, timeout_ms does not run out, however long; its report's
 * throttle_us is the owner's, and t_dispatch moved on by it, so that the
 * request's own time stays within timeout_ms. Not throttled, its time
 * runs out as before. A wait before the first dispatch moves nothing. */
static void
test_queued_throttled(void)
{
	static const struct timeval five_ms = { 0, 5000 };
	struct fx f;
	struct event *tick;
	char req[4096];
	uint64_t before, after;

	fx_init(&f, "GET");
	f.opts.retries = 1;
	f.opts.timeout_ms = f.spec.timeout_ms = 200;
	fx_new(&f, URL);
	tick = event_new(f.base, -1, EV_PERSIST, throttle_tick, &f.rec);
	before = now_us();
	fx_start(&f, f.o, 0);
	after = now_us();
	CHECK(srv_read(&f, req, sizeof(req)) > 0);
	srv_write(&f, "HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n");
	CHECK(wait_for(&f, &f.rec.requeues, 1));
	evtimer_add(tick, &five_ms);
	run_for(&f, 500);	/* 2.5 times timeout_ms */
	evtimer_del(tick);
	CHECK(f.rec.done == 0);
	CHECK(f.rec.throttled_us >= 400000);
	CHECK(fx_start(&f, f.o, 0) == POOL_REUSE);
	answer(&f, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
	CHECK(f.rec.kind == KIND_NONE && f.rec.status == 200 && f.rec.attempts == 2);
	CHECK(f.rec.rep_throttle_us == f.rec.throttled_us);
	CHECK(f.rec.t_dispatch - f.rec.throttled_us >= before);
	CHECK(f.rec.t_dispatch - f.rec.throttled_us <= after);
	CHECK(f.rec.t_end - f.rec.t_dispatch < 200000);
	CHECK(f.rec.t_end - before >= 500000);
	fx_free_req(&f);

	/* Queued and not throttled: the retry times out. */
	fx_new(&f, URL);
	before = now_us();
	fx_start(&f, f.o, 0);
	CHECK(srv_read(&f, req, sizeof(req)) > 0);
	srv_write(&f, "HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n");
	CHECK(wait_for(&f, &f.rec.requeues, 1));
	CHECK(wait_for(&f, &f.rec.done, 1));
	CHECK(f.rec.kind == KIND_TIMEOUT);
	CHECK_STR(f.rec.msg, "connect not complete within 200 ms");
	CHECK(now_us() - before >= 200000 - TICK_SLACK_US && now_us() - before < 400000);
	CHECK(f.rec.rep_throttle_us == 0);
	fx_free_req(&f);

	/* Held back before it first went: queue time, t_dispatch not moved,
	 * but reported. */
	fx_new(&f, URL);
	f.rec.throttled_us = 123000;
	before = now_us();
	fx_start(&f, f.o, 0);
	after = now_us();
	answer(&f, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
	CHECK(f.rec.rep_throttle_us == 123000);
	CHECK(f.rec.t_dispatch >= before && f.rec.t_dispatch <= after);
	fx_free_req(&f);
	event_free(tick);
	fx_done(&f);
}

static void
run_all(void)
{
	test_request_on_wire();
	test_request_json_and_overrides();
	test_200_keeps_connection();
	test_connection_not_kept();
	test_chunked();
	test_body_to_close();
	test_gzip();
	test_too_large();
	test_malformed();
	test_header_too_big();
	test_interim();
	test_head();
	test_stale_connection();
	test_redirect_credentials();
	test_redirect_303();
	test_redirect_limits();
	test_retry_503();
	test_no_retry_503();
	test_timeout();
	test_abort();
	test_requeue_restarts_at_once();
	test_body_none();
	test_real_connect();
	test_policy_blocks();
	test_owner_response();
	test_retry_paused_origin();
	test_queued_throttled();
}

int
main(void)
{
	signal(SIGPIPE, SIG_IGN);
	run_all();
	free_in_done = 1;
	run_all();
	return UNIT_DONE();
}
