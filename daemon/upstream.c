/* upstream.c: see upstream.h.
 *
 * One event per request serves every time limit: it is re-armed at each
 * phase for the nearest of the phase's limit (connect) and the request's
 * total limit, so no trickling peer can stretch a request past timeout_ms.
 * Every failure goes through upstream_fail(), which alone decides between a
 * retry and a result. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <jansson.h>

#include "batch.h"
#include "body.h"
#include "conf.h"
#include "log.h"
#include "metrics.h"
#include "policy.h"
#include "pool.h"
#include "sched.h"
#include "jout.h"
#include "tls.h"
#include "upstream.h"

#define UPSTREAM_DISCARD_MAX (64 * 1024)	/* body read only to keep a connection */
#define UPSTREAM_READ_MAX (128 * 1024)		/* bytes taken from a socket per read */
#define UPSTREAM_BACKOFF_BASE_US 100000u
#define UPSTREAM_BACKOFF_CAP_US 10000000u

static struct event_base *ev_base;

static void upstream_timer(evutil_socket_t fd, short what, void *arg);
static void upstream_read(struct bufferevent *bev, void *arg);
static void upstream_event(struct bufferevent *bev, short what, void *arg);
static void upstream_connect(struct ureq *r, const struct dns_answer *a);
static void upstream_resolved(const struct dns_answer *a, void *arg);
static void upstream_send(struct ureq *r);
static void upstream_skim_stop(struct ureq *r);
static int upstream_consume(struct ureq *r, struct evbuffer *in, int eof);

void
upstream_init(struct event_base *base)
{
	ev_base = base;
}

struct ureq *
upstream_new(struct batch *b, const struct bopts *opts, size_t index)
{
	struct ureq *r = xcalloc(1, sizeof(*r));

	r->batch = b;
	r->opts = opts;
	r->index = index;
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
	return r->t_dispatch + (uint64_t)r->timeout_ms * 1000u;
}

/* Arms the request's one timer for the nearer of the total limit and, in
 * the connect and TLS phases, the connect limit. */
static void
upstream_arm(struct ureq *r)
{
	uint64_t now = now_us(), at = upstream_deadline(r);
	struct timeval tv;

	if (r->state == UREQ_CONNECTING || r->state == UREQ_TLS) {
		uint64_t c = r->t_connect + (uint64_t)r->opts->connect_timeout_ms * 1000u;
		if (c < at)
			at = c;
	}
	if (r->state == UREQ_BACKOFF)
		at = now + (uint64_t)r->retry_in_us;
	at = at > now ? at - now : 0;
	tv.tv_sec = (time_t)(at / 1000000u);
	tv.tv_usec = (suseconds_t)(at % 1000000u);
	evtimer_add(r->timer, &tv);
}

static void
upstream_set_state(struct ureq *r, enum ureq_state s)
{
	log_debug("request %zu: state %d -> %d", r->index, r->state, s);
	r->state = s;
	r->t_phase = now_us();
	upstream_arm(r);
}

/* Lets go of the connection: kept alive when it ended cleanly. */
static void
upstream_drop_conn(struct ureq *r, int keep)
{
	struct conn *c = r->conn;

	if (c == NULL)
		return;
	upstream_skim_stop(r);
	r->conn = NULL;
	if (keep && c->bev != NULL && evbuffer_get_length(bufferevent_get_input(c->bev)) == 0)
		pool_release(c);
	else
		pool_close(c);
	sched_release(r);
}

static void
upstream_drop_body(struct ureq *r)
{
	if (r->resp != NULL)
		evbuffer_free(r->resp);
	r->resp = NULL;
	r->resp_bytes = 0;
}

/* Frees what one attempt built up, keeping the outcome. */
static void
upstream_reset_attempt(struct ureq *r)
{
	if (r->dnsw != NULL) {
		dnscache_cancel(r->dnsw);
		r->dnsw = NULL;
	}
	h1_head_clear(&r->head);
	body_dec_free(r->dec);
	r->dec = NULL;
	r->got_bytes = 0;
	r->discard = 0;
}

/* The end: the result goes to the batch, which frees r. */
static void
upstream_finish(struct ureq *r, int keep_conn)
{
	uint64_t now = now_us();

	upstream_drop_conn(r, keep_conn);
	if (r->dnsw != NULL) {
		dnscache_cancel(r->dnsw);
		r->dnsw = NULL;
	}
	if (r->timer != NULL)
		evtimer_del(r->timer);
	if (r->bh != NULL) {
		sched_remove(r);	/* a redirect or retry timed out in the queue */
		sched_finished(r);
	}
	r->state = UREQ_DONE;
	r->t_phase = now;
	metrics.requests[r->kind]++;
	if (r->t_dispatch != 0)
		metrics_observe_duration((double)(now - r->t_dispatch) / 1e6);
	batch_result(r->batch, r);
}

static void
upstream_error(struct ureq *r, enum kind kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
upstream_error(struct ureq *r, enum kind kind, const char *fmt, ...)
{
	va_list ap;

	r->kind = kind;
	va_start(ap, fmt);
	vsnprintf(r->msg, sizeof(r->msg), fmt, ap);
	va_end(ap);
	upstream_drop_body(r);
	upstream_finish(r, 0);
}

/* Backoff before attempt n+1: exponential, with jitter so that many
 * requests failing together do not come back together. Retry-After, when
 * given, is a floor. Returns -1 when the request's time would not allow it. */
static int64_t
upstream_retry_delay(const struct ureq *r, int64_t retry_after_us)
{
	uint64_t d = UPSTREAM_BACKOFF_BASE_US << (r->attempts - 1 < 16 ? r->attempts - 1 : 16);
	uint64_t now = now_us(), end = upstream_deadline(r);

	if (r->attempts > r->opts->retries || !upstream_idempotent(r->method))
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

/* The funnel for failures before a usable response. retryable: the
 * contract's connect failure or timeout before any response byte. */
static void
upstream_fail(struct ureq *r, enum kind kind, int retryable, const char *msg)
{
	int64_t d = retryable ? upstream_retry_delay(r, 0) : -1;

	if (d >= 0) {
		log_debug("request %zu: %s: %s; retrying in %lld us", r->index, kind_name(kind),
		    msg, (long long)d);
		upstream_backoff(r, d);
		return;
	}
	upstream_error(r, kind, "%s", msg);
}

/* Queues the next attempt or hop. A connection still held failed (one that
 * ended cleanly was dropped by the caller), so it is closed. The total timer
 * is re-armed: waiting for a slot again counts against timeout_ms. */
static void
upstream_requeue(struct ureq *r)
{
	upstream_drop_conn(r, 0);
	upstream_reset_attempt(r);
	sched_enqueue(batch_sb(r->batch), r);
	upstream_arm(r);
}

void
upstream_start(struct ureq *r, struct conn *c, int reused)
{
	struct dns_answer a;

	if (r->t_dispatch == 0) {
		r->t_dispatch = now_us();
		r->timer = evtimer_new(ev_base, upstream_timer, r);
		r->attempts = 1;
	}
	r->conn = c;
	r->reused = reused;
	r->want_fresh = 0;
	r->dns_ms = r->connect_ms = r->tls_ms = r->ttfb_ms = 0;
	if (reused) {
		metrics.conns_reused++;
		memcpy(r->remote, c->remote_str, sizeof(r->remote));
		upstream_send(r);
		return;
	}
	upstream_set_state(r, UREQ_RESOLVING);
	if (r->url.host_is_ip) {
		a.naddrs = 1;
		a.addrs[0].family = r->url.host_is_ip == 6 ? AF_INET6 : AF_INET;
		inet_pton(a.addrs[0].family, r->url.host, &a.addrs[0].u);
		upstream_connect(r, &a);
		return;
	}
	r->dnsw = dnscache_lookup(r->url.host, &a, upstream_resolved, r);
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
	struct conn *c = r->conn;
	const struct dns_addr *pick = NULL;
	char addr[INET6_ADDRSTRLEN + 8], msg[96];

	r->dns_ms = us_to_ms(now_us() - r->t_phase);
	if (a->naddrs == 0) {
		upstream_error(r, KIND_DNS, "%s: %s", r->url.host, a->why);
		return;
	}
	/* Every address the name has must pass the policy: a name that also
	 * points somewhere forbidden is refused whole, not raced. */
	for (int i = 0; i < a->naddrs; i++) {
		c->remotelen = upstream_sockaddr(&a->addrs[i], r->url.port, &c->remote);
		if (!policy_allows(r->opts->conf, (struct sockaddr *)&c->remote)) {
			addr_format(&c->remote, addr, sizeof(addr));
			upstream_error(r, KIND_BLOCKED, "address %s is not allowed by policy", addr);
			return;
		}
		if (pick == NULL)
			pick = &a->addrs[i];
	}
	c->remotelen = upstream_sockaddr(pick, r->url.port, &c->remote);
	addr_format(&c->remote, c->remote_str, sizeof(c->remote_str));
	memcpy(r->remote, c->remote_str, sizeof(r->remote));
	c->bev = bufferevent_socket_new(ev_base, -1, BEV_OPT_CLOSE_ON_FREE);
	if (c->bev == NULL) {
		upstream_error(r, KIND_INTERNAL, "cannot create a connection");
		return;
	}
	bufferevent_setcb(c->bev, upstream_read, NULL, upstream_event, r);
	/* libevent 2.1 reads 4 KiB a call by default: sixteen recv() and
	 * callbacks for a 64 KiB body. */
	bufferevent_set_max_single_read(c->bev, UPSTREAM_READ_MAX);
	r->t_connect = now_us();
	upstream_set_state(r, UREQ_CONNECTING);
	if (bufferevent_socket_connect(c->bev, (struct sockaddr *)&c->remote, (int)c->remotelen) < 0) {
		int err = errno;
		if (err == EMFILE || err == ENFILE) {
			/* Out of descriptors: wait for one instead of failing. */
			pool_fd_pressure();
			r->want_fresh = 1;
			upstream_requeue(r);
			return;
		}
		upstream_fail(r, KIND_CONNECT, 1, upstream_strerror(err, msg, sizeof(msg)));
		return;
	}
	/* Requests and TLS records are written whole; waiting for an ACK
	 * before the next one (Nagle against delayed ACKs) costs 40 ms. */
	int one = 1;
	setsockopt(bufferevent_getfd(c->bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	metrics.conns_opened++;
}

static int
upstream_header_is(const char *name, const char *const *set)
{
	for (; *set != NULL; set++)
		if (strcasecmp(name, *set) == 0)
			return 1;
	return 0;
}

/* Headers the daemon owns: framing and connection management. */
static const char *const upstream_own_headers[] = {
	"host", "content-length", "transfer-encoding", "connection", "keep-alive", "te",
	"upgrade", "proxy-connection", "trailer", NULL,
};

static int
upstream_json_has(const json_t *obj, const char *name)
{
	const char *k;
	json_t *v;

	if (obj == NULL)
		return 0;
	json_object_foreach((json_t *)(uintptr_t)obj, k, v)
		if (strcasecmp(k, name) == 0)
			return 1;
	return 0;
}

/* Credentials the caller meant for the first origin, not a redirect's. */
static const char *const upstream_credential_headers[] = {
	"authorization", "cookie", "proxy-authorization", NULL,
};

static void
upstream_write_headers(const struct ureq *r, struct jbuf *out, const json_t *hdrs,
    const json_t *unless)
{
	const char *k;
	json_t *v;

	if (hdrs == NULL)
		return;
	json_object_foreach((json_t *)(uintptr_t)hdrs, k, v) {
		if (upstream_header_is(k, upstream_own_headers) || upstream_json_has(unless, k) ||
		    (r->strip_credentials && upstream_header_is(k, upstream_credential_headers)))
			continue;
		jb_add(out, k, strlen(k));
		JB_LIT(out, ": ");
		jb_add(out, json_string_value(v), json_string_length(v));
		JB_LIT(out, "\r\n");
	}
}

static int
upstream_has_header(const struct ureq *r, const char *name)
{
	return upstream_json_has(r->headers, name) || upstream_json_has(r->opts->headers, name);
}

/* Serialises the request from validated parts; nothing the caller wrote
 * reaches the wire unchecked (intake refused CR, LF and NUL). */
static void
upstream_send(struct ureq *r)
{
	struct jbuf jb, *out = &jb;
	char *json = NULL;
	const char *body = r->body;
	size_t bodylen = r->bodylen;

	r->conn->nreq++;
	jb_init(out, bufferevent_get_output(r->conn->bev));
	jb_add(out, r->method, strlen(r->method));
	JB_LIT(out, " ");
	jb_add(out, r->url.target, strlen(r->url.target));
	JB_LIT(out, " HTTP/1.1\r\nHost: ");
	jb_add(out, r->url.authority, strlen(r->url.authority));
	JB_LIT(out, "\r\n");
	upstream_write_headers(r, out, r->headers, NULL);
	upstream_write_headers(r, out, r->opts->headers, r->headers);
	r->decode = !upstream_has_header(r, "accept-encoding");
	if (r->decode)
		JB_LIT(out, "Accept-Encoding: gzip, deflate\r\n");
	if (!upstream_has_header(r, "user-agent"))
		JB_LIT(out, "User-Agent: fanoutd/" FANOUTD_VERSION "\r\n");
	if (r->json != NULL) {
		json = json_dumps(r->json, JSON_COMPACT | JSON_ENCODE_ANY);
		body = json;
		bodylen = json != NULL ? strlen(json) : 0;
		if (!upstream_has_header(r, "content-type"))
			JB_LIT(out, "Content-Type: application/json\r\n");
	}
	if (body != NULL || strcmp(r->method, "POST") == 0 || strcmp(r->method, "PUT") == 0 ||
	    strcmp(r->method, "PATCH") == 0) {
		JB_LIT(out, "Content-Length: ");
		jout_uint(out, bodylen);
		JB_LIT(out, "\r\n");
	}
	jb_add(out, "\r\n", 2);
	if (body != NULL)
		jb_add(out, body, bodylen);
	jb_flush(out);
	free(json);
	bufferevent_setcb(r->conn->bev, upstream_read, NULL, upstream_event, r);
	bufferevent_enable(r->conn->bev, EV_READ | EV_WRITE);
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
		r->attempts++;
		metrics.retries++;
		upstream_requeue(r);
		return;
	}
	connect_phase = r->state == UREQ_CONNECTING || r->state == UREQ_TLS;
	if (now_us() < upstream_deadline(r) && connect_phase)
		snprintf(msg, sizeof(msg), "%s not complete within %u ms", upstream_phase(r),
		    r->opts->connect_timeout_ms);
	else
		snprintf(msg, sizeof(msg), "%s not complete within %u ms", upstream_phase(r),
		    r->timeout_ms);
	/* A retry or hop still queued when its time is up has nothing left to
	 * retry with; it must not go to a backoff while on a queue either. */
	upstream_fail(r, KIND_TIMEOUT, !r->got_bytes && !r->queued, msg);
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
	time_t at = timegm(&tm), now = time(NULL);
	return at > now ? (int64_t)(at - now) * 1000000 : 0;
}

static int
upstream_visited(const struct ureq *r, const char *href)
{
	if (strcmp(r->url.href, href) == 0)
		return 1;
	for (unsigned i = 0; i < r->hops; i++)
		if (strcmp(r->visited[i], href) == 0)
			return 1;
	return 0;
}

/* Prepares the hop to location; -1 when r has been finished with an error. */
static int
upstream_plan_redirect(struct ureq *r, const struct h1_header *loc)
{
	char why[128], *location;
	int st = r->head.status;

	if (r->hops >= r->opts->follow_redirects) {
		upstream_error(r, KIND_REDIRECTS, "more than %u redirects", r->opts->follow_redirects);
		return -1;
	}
	location = xstrndup(loc->value, loc->valuelen);
	if (url_resolve(&r->next_url, &r->url, location, why, sizeof(why)) < 0) {
		free(location);
		upstream_error(r, KIND_REDIRECTS, "bad Location: %s", why);
		return -1;
	}
	free(location);
	if (upstream_visited(r, r->next_url.href)) {
		upstream_error(r, KIND_REDIRECTS, "redirect loop at %s", r->next_url.href);
		return -1;
	}
	if ((st == 303 && strcmp(r->method, "HEAD") != 0) ||
	    ((st == 301 || st == 302) && strcmp(r->method, "POST") == 0)) {
		r->method = "GET";
		r->body = NULL;
		r->bodylen = 0;
		r->json = NULL;
	}
	return 0;
}

/* Follows the planned hop: a new URL, maybe a new origin, a new queue. */
static void
upstream_redirect(struct ureq *r)
{
	if (r->visited == NULL)
		r->visited = xcalloc(r->opts->follow_redirects, sizeof(*r->visited));
	r->visited[r->hops++] = xstrdup(r->url.href);
	if (strcmp(r->next_url.origin, r->url.origin) != 0)
		r->strip_credentials = 1;
	url_free(&r->url);
	r->url = r->next_url;
	memset(&r->next_url, 0, sizeof(r->next_url));
	free(r->final_url);
	r->final_url = xstrdup(r->url.href);
	metrics.redirects++;
	upstream_requeue(r);
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

/* A final head is in: decide what its body is for. -1: r is finished. */
static int
upstream_on_head(struct ureq *r)
{
	const struct h1_header *loc = h1_find(&r->head, "location");
	int st = r->head.status;

	if (upstream_is_redirect(st) && r->opts->follow_redirects > 0 && loc != NULL) {
		if (upstream_plan_redirect(r, loc) < 0)
			return -1;
		r->discard = 1;
	} else if (upstream_is_retry_status(st)) {
		r->retry_in_us = upstream_retry_delay(r, upstream_retry_after(&r->head));
		r->discard = r->retry_in_us >= 0;
	}
	h1_body_init(&r->hbody, &r->head);
	if (r->raw == NULL)
		r->raw = evbuffer_new();
	if (!r->discard) {
		r->resp = evbuffer_new();
		r->resp_bytes = 0;
		if (r->decode)
			r->dec = body_dec_new(r->head.content_encoding);
	}
	upstream_set_state(r, UREQ_BODY);
	return 0;
}

/* Takes the head off the input; -1: r is finished; 0: wait or go on. */
static int
upstream_read_head(struct ureq *r, struct evbuffer *in)
{
	const char *why = NULL;

	for (;;) {
		int rc = h1_parse_head(in, r->opts->max_header_bytes,
		    strcmp(r->method, "HEAD") == 0, &r->head, &why);
		if (rc == H1_AGAIN)
			return 0;
		if (rc == H1_TOO_BIG) {
			upstream_error(r, KIND_PROTOCOL, "response header block over %zu bytes",
			    r->opts->max_header_bytes);
			return -1;
		}
		if (rc == H1_ERROR) {
			upstream_error(r, KIND_PROTOCOL, "%s", why);
			return -1;
		}
		metrics.bytes_in += r->head.blocklen;
		if (r->head.status >= 200) {
			r->ttfb_ms = us_to_ms(now_us() - r->t_dispatch);
			return upstream_on_head(r);
		}
		if (r->head.status == 101) {
			upstream_error(r, KIND_PROTOCOL, "unexpected 101 Switching Protocols");
			return -1;
		}
		h1_head_clear(&r->head);	/* an interim response: skip it */
	}
}

/* The body is in: a result, or the planned retry or hop. */
static void
upstream_body_done(struct ureq *r)
{
	int keep = r->head.keep_alive;

	if (r->dec != NULL && body_dec_finish(r->dec) != BODY_OK) {
		upstream_error(r, KIND_PROTOCOL, "%s body is corrupt or truncated",
		    r->head.content_encoding);
		return;
	}
	if (r->discard && r->next_url.href != NULL) {
		upstream_drop_conn(r, keep);
		upstream_redirect(r);
	} else if (r->discard) {
		upstream_drop_conn(r, keep);
		upstream_backoff(r, r->retry_in_us);
	} else
		upstream_finish(r, keep);
}

/* In body mode "none" the bytes are counted (decoded, for `bytes` and the
 * size limit) and dropped as they come: nobody will read them. */
static void
upstream_keep_body(struct ureq *r)
{
	if (r->opts->body == BODY_NONE)
		evbuffer_drain(r->resp, evbuffer_get_length(r->resp));
}

/* Moves what the transfer coding released into the response body. */
static int
upstream_take_body(struct ureq *r)
{
	size_t n = evbuffer_get_length(r->raw);

	metrics.bytes_in += n;
	if (r->discard) {
		r->resp_bytes += n;
		evbuffer_drain(r->raw, n);
		if (r->resp_bytes > UPSTREAM_DISCARD_MAX)
			r->head.keep_alive = 0;	/* not worth reading on */
		return 0;
	}
	if (r->dec != NULL) {
		int rc = body_dec_write(r->dec, r->raw, r->resp, &r->resp_bytes,
		    r->max_body);
		if (rc == BODY_TOO_LARGE) {
			upstream_error(r, KIND_TOO_LARGE, "body over %zu bytes (decoded)",
			    r->max_body);
			return -1;
		}
		if (rc == BODY_CORRUPT) {
			upstream_error(r, KIND_PROTOCOL, "%s body is corrupt",
			    r->head.content_encoding);
			return -1;
		}
		upstream_keep_body(r);
		return 0;
	}
	if (r->resp_bytes + n > r->max_body) {
		upstream_error(r, KIND_TOO_LARGE, "body over %zu bytes", r->max_body);
		return -1;
	}
	r->resp_bytes += n;
	evbuffer_add_buffer(r->resp, r->raw);
	upstream_keep_body(r);
	return 0;
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
		upstream_consume(r, bufferevent_get_input(r->conn->bev), 1);
		return;
	}
	metrics.bytes_in += (uint64_t)n;
	if (r->resp_bytes + (size_t)n > r->max_body) {
		upstream_error(r, KIND_TOO_LARGE, "body over %zu bytes", r->max_body);
		return;
	}
	r->resp_bytes += (size_t)n;
	if (h1_body_skipped(&r->hbody, (uint64_t)n) == H1_DONE) {
		char c;

		/* Bytes past the body, or the peer's close, would otherwise
		 * stay in the kernel and be read as the next request's
		 * response: the connection is not kept, as when a bufferevent
		 * read brings them in with the body. */
		if (recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) >= 0)
			r->head.keep_alive = 0;
		upstream_skim_stop(r);
		upstream_body_done(r);
	}
}

/* Whether the rest of r's body can go by upstream_skim, and if so starts it. */
static int
upstream_skim_start(struct ureq *r)
{
	struct bufferevent *bev = r->conn->bev;

	if (r->skim != NULL || r->opts->body != BODY_NONE || r->discard || r->dec != NULL ||
	    h1_body_skippable(&r->hbody) == 0 || bufferevent_get_underlying(bev) != NULL ||
	    evbuffer_get_length(bufferevent_get_input(bev)) != 0)
		return 0;
	r->skim = event_new(ev_base, bufferevent_getfd(bev), EV_READ | EV_PERSIST,
	    upstream_skim, r);
	if (r->skim == NULL || event_add(r->skim, NULL) != 0) {
		upstream_skim_stop(r);
		return 0;
	}
	bufferevent_disable(bev, EV_READ);
	return 1;
}

/* Returns 1 while r goes on reading this connection, 0 once it has left it
 * (finished and freed, or gone back to the queue or to a backoff). */
static int
upstream_read_body(struct ureq *r, struct evbuffer *in, int eof)
{
	const char *why = NULL;
	int rc = h1_body_read(&r->hbody, in, r->raw, eof, &why);

	if (rc == H1_ERROR) {
		upstream_error(r, KIND_PROTOCOL, "%s", why);
		return 0;
	}
	if (upstream_take_body(r) < 0)
		return 0;
	if (rc == H1_DONE || (r->discard && !r->head.keep_alive)) {
		/* A discarded body on a connection that closes anyway is not
		 * worth reading on. */
		upstream_body_done(r);
		return 0;
	}
	upstream_skim_start(r);
	return 1;
}

/* Takes what the connection has read; eof: it has closed too. The same
 * 0/1 as upstream_read_body. TLS can report the close together with the
 * last bytes, so the close is handled only after they are consumed. */
static int
upstream_consume(struct ureq *r, struct evbuffer *in, int eof)
{
	if (evbuffer_get_length(in) > 0)
		r->got_bytes = 1;
	if (r->state == UREQ_HEAD && upstream_read_head(r, in) < 0)
		return 0;
	if (r->state == UREQ_BODY)
		return upstream_read_body(r, in, eof);
	return 1;
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

	if (r->state == UREQ_CONNECTING) {
		upstream_fail(r, KIND_CONNECT, 1, err != 0 ? upstream_strerror(err, msg, sizeof(msg)) :
		    "connection closed");
		return;
	}
	if (!r->got_bytes && r->reused && !r->fresh_retry_done) {
		/* The upstream closed a kept-alive connection as we reused it:
		 * the request never reached it, so one more go is safe. */
		log_debug("request %zu: kept-alive connection was closed; retrying fresh", r->index);
		r->fresh_retry_done = 1;
		r->want_fresh = 1;
		upstream_requeue(r);
		return;
	}
	if (!r->got_bytes)
		upstream_error(r, KIND_PROTOCOL, "connection closed before any response%s%s",
		    err != 0 ? ": " : "", err != 0 ? upstream_strerror(err, msg, sizeof(msg)) : "");
	else
		upstream_error(r, KIND_PROTOCOL, "connection closed inside the response head");
}

/* TCP is up on an https origin: the handshake runs in a filter over it. */
static void
upstream_start_tls(struct ureq *r)
{
	struct conn *c = r->conn;
	SSL *ssl = tls_ssl_new(r->opts->tls, c->origin, r->url.host_is_ip);
	struct bufferevent *tls;

	tls = ssl == NULL ? NULL : bufferevent_openssl_filter_new(ev_base, c->bev, ssl,
	    BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE);
	if (tls == NULL) {
		if (ssl != NULL)
			SSL_free(ssl);
		upstream_error(r, KIND_INTERNAL, "cannot start TLS");
		return;
	}
	c->bev = tls;	/* frees the TCP bufferevent with it */
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
		r->connect_ms = us_to_ms(now_us() - r->t_connect);
		if (r->url.https) {
			upstream_start_tls(r);
			return;
		}
	} else {
		r->tls_ms = us_to_ms(now_us() - r->t_phase);
		tls_handshake_done(bufferevent_openssl_get_ssl(r->conn->bev));
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
		upstream_error(r, KIND_TLS, "%s", tls_failure(bev, why, sizeof(why)));
		return;
	}
	if (r->url.https)
		tls_failure(bev, why, sizeof(why));	/* drained: this connection's alone */
	if ((r->state == UREQ_HEAD || r->state == UREQ_BODY) &&
	    upstream_consume(r, bufferevent_get_input(bev), 1) == 0)
		return;
	upstream_closed(r, (what & BEV_EVENT_ERROR) ? err : 0);
}

void
upstream_abort(struct ureq *r, enum kind kind, const char *msg)
{
	upstream_error(r, kind, "%s", msg);
}

void
upstream_free(struct ureq *r)
{
	if (r == NULL)
		return;
	url_free(&r->url);
	url_free(&r->next_url);
	for (unsigned i = 0; i < r->hops; i++)
		free(r->visited[i]);
	free(r->visited);
	h1_head_clear(&r->head);
	body_dec_free(r->dec);
	if (r->raw != NULL)
		evbuffer_free(r->raw);
	if (r->resp != NULL)
		evbuffer_free(r->resp);
	if (r->timer != NULL)
		event_free(r->timer);
	upstream_skim_stop(r);
	free(r->final_url);
	free(r);
}
