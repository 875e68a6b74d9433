/* server.c: see server.h.
 *
 * A connection reads one request at a time: its head, then its body as the
 * route asked. Answers go to the bufferevent's output in the order the
 * requests came; a pipelined request waits in the input until the answer
 * before it is queued and the output is small again.
 *
 * Closing after an answer is lingering, as nginx does it: the output is
 * flushed, the sending side shut, and whatever the caller still sends is
 * read and dropped until it closes (or SRV_LINGER_MS), so that the kernel
 * does not answer unread input with a reset that could destroy the answer
 * before the caller has read it. */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <sys/queue.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "conf.h"
#include "h1.h"
#include "jout.h"
#include "log.h"
#include "server.h"
#include "util.h"

#define SRV_MAX_HEAD (64 * 1024)	/* a request head: line and fields */
#define SRV_WRITE_TIMEOUT_S 60		/* a caller that takes nothing this long while output waits */
#define SRV_WRITE_MAX (256 * 1024)	/* bytes written per write call (libevent's default: 16 KiB) */
#define SRV_PIPELINE_OUT (256 * 1024)	/* output above which a pipelined request waits */
#define SRV_READ_AHEAD (256 * 1024)	/* raw input read ahead of the parser */
#define SRV_LINGER_MS 1000

struct srv_conn {
	struct bufferevent *bev;
	char peer[INET6_ADDRSTRLEN + 8];
	struct srv_req *req;		/* being read or answered; NULL between requests */
	struct event *timer;		/* client_timeout_s, then the linger */
	struct event *next;		/* looks at the input again, from the loop */
	int got_bytes;			/* the next request has begun to arrive */
	int closing;			/* its last answer is queued: linger, then close */
	int eof;			/* the caller has shut its sending side */
	TAILQ_ENTRY(srv_conn) link;
};

enum srv_body { SRB_NONE, SRB_WHOLE, SRB_STREAM };

struct srv_req {
	struct srv_conn *sc;
	struct h1_head head;
	char *path;			/* the target's path, and after its NUL the query */
	const char *query;
	enum srv_body mode;
	struct h1_body br;
	struct evbuffer *body;
	enum srv_input input;
	int paused;
	void (*done)(struct srv_req *);
	const struct srv_handler *h;	/* who took it over, or NULL */
	void *arg;
	int streaming;			/* a streamed answer has begun */
	int chunked;
	int ended;			/* the answer's last byte is queued */
};

static struct {
	struct event_base *base;
	srv_route_fn *route;
	TAILQ_HEAD(, srv_conn) conns;
	unsigned nconns;
	unsigned max_clients;
	struct timeval client_timeout;
	size_t max_request_bytes;
	int stopping;
} srv;

static void srv_process(struct srv_conn *sc);
static void srv_conn_free(struct srv_conn *sc);

void
srv_init(struct event_base *base, srv_route_fn *route)
{
	srv.base = base;
	srv.route = route;
	TAILQ_INIT(&srv.conns);
}

void
srv_configure(const struct conf *c)
{
	srv.max_clients = c->max_clients;
	srv.client_timeout.tv_sec = c->client_timeout_s;
	srv.max_request_bytes = c->max_request_bytes;
}

/*
 * The request.
 */

const char *
srv_req_method(const struct srv_req *r)
{
	return r->head.method;
}

const char *
srv_req_path(const struct srv_req *r)
{
	return r->path;
}

const char *
srv_req_query(const struct srv_req *r)
{
	return r->query;
}

const char *
srv_req_header(const struct srv_req *r, const char *name)
{
	const struct h1_header *f = h1_find(&r->head, name);

	return f != NULL ? f->value : NULL;
}

const char *
srv_req_peer(const struct srv_req *r)
{
	return r->sc != NULL ? r->sc->peer : "gone";
}

struct evbuffer *
srv_req_input(struct srv_req *r)
{
	return r->body;
}

enum srv_input
srv_req_input_end(const struct srv_req *r)
{
	return r->input;
}

static void
srv_req_free(struct srv_req *r)
{
	h1_head_clear(&r->head);
	if (r->body != NULL)
		evbuffer_free(r->body);
	free(r->path);
	free(r);
}

/* The path and query of an origin-form or absolute-form target (RFC 9112
 * §3.2): "/path?query", or "http://host/path?query" (a missing path is
 * "/"); -1 for anything else. */
static int
srv_req_target(struct srv_req *r)
{
	const char *t = r->head.target;
	char *q;

	if (strncasecmp(t, "http://", 7) == 0 || strncasecmp(t, "https://", 8) == 0) {
		t = strchr(t, ':') + 3;
		t += strcspn(t, "/?");
		r->path = xmalloc(strlen(t) + 2);
		snprintf(r->path, strlen(t) + 2, "%s%s", *t == '/' ? "" : "/", t);
	} else if (*t == '/')
		r->path = xstrdup(t);
	else
		return -1;
	if ((q = strchr(r->path, '?')) != NULL) {
		*q = '\0';
		r->query = q + 1;
	}
	return 0;
}

/*
 * Writing answers.
 */

static const char *
srv_reason(int status)
{
	switch (status) {
	case 100: return "Continue";
	case 200: return "OK";
	case 400: return "Bad Request";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 413: return "Content Too Large";
	case 417: return "Expectation Failed";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 503: return "Service Unavailable";
	case 505: return "HTTP Version Not Supported";
	default: return "Unknown";
	}
}

/* The status line and the headers every answer has. */
static void
srv_head(struct evbuffer *out, int minor, int status, const char *type, const char *extra,
    int keep)
{
	char date[64];
	time_t now = time(NULL);
	struct tm tm;

	gmtime_r(&now, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
	evbuffer_add_printf(out, "HTTP/1.%d %d %s\r\nDate: %s\r\nContent-Type: %s\r\n%s%s", minor,
	    status, srv_reason(status), date, type, extra != NULL ? extra : "",
	    keep ? "" : "Connection: close\r\n");
}

/* Whether the connection can take another request after r: HTTP/1.1,
 * its framing read whole, and nothing asked to close. (HTTP/1.0 callers
 * get their answer delimited by the close.) */
static int
srv_keep(const struct srv_req *r)
{
	const struct srv_conn *sc = r->sc;
	int body_done = r->head.framing == H1_NOBODY || r->input == SRV_INPUT_END;

	return r->head.minor == 1 && r->head.keep_alive && body_done &&
	    !sc->closing && !srv.stopping;
}

static void
srv_arm(struct srv_conn *sc, const struct timeval *tv)
{
	evtimer_add(sc->timer, tv);
}

/* The output is all written: the sending side is shut, and the caller
 * has SRV_LINGER_MS to close its own. */
static void
srv_linger(struct srv_conn *sc)
{
	static const struct timeval linger = { SRV_LINGER_MS / 1000, (SRV_LINGER_MS % 1000) * 1000 };

	shutdown(bufferevent_getfd(sc->bev), SHUT_WR);
	srv_arm(sc, &linger);
}

/* Closes sc once its output is written (the write timeout bounds that),
 * lingering for what the caller still sends. */
static void
srv_close_after(struct srv_conn *sc)
{
	sc->closing = 1;
	evtimer_del(sc->timer);
	if (evbuffer_get_length(bufferevent_get_output(sc->bev)) == 0)
		srv_linger(sc);
	bufferevent_enable(sc->bev, EV_READ);	/* to drop and see the close */
}

/* r's answer is queued whole: the connection goes on to the next request,
 * or closes. r is freed. */
static void
srv_req_over(struct srv_req *r, int keep)
{
	struct srv_conn *sc = r->sc;

	sc->req = NULL;
	srv_req_free(r);
	if (!keep) {
		srv_close_after(sc);
		return;
	}
	sc->got_bytes = 0;
	srv_arm(sc, &srv.client_timeout);
	if (!sc->eof)
		bufferevent_enable(sc->bev, EV_READ);
	event_active(sc->next, 0, 0);
}

void
srv_reply(struct srv_req *r, int status, const char *type, const char *extra, const void *body,
    size_t len)
{
	struct evbuffer *out = bufferevent_get_output(r->sc->bev);
	int keep = srv_keep(r);

	srv_head(out, r->head.minor, status, type, extra, keep);
	evbuffer_add_printf(out, "Content-Length: %zu\r\n\r\n", len);
	if (strcmp(r->head.method, "HEAD") != 0)
		evbuffer_add(out, body, len);
	srv_req_over(r, keep);
}

/* The JSON error object, into out. */
static void
srv_error_body(struct evbuffer *out, const char *kind, const char *msg)
{
	struct jbuf jb;

	jb_init(&jb, out);
	JB_LIT(&jb, "{\"error\":{\"kind\":");
	jout_cstr(&jb, kind);
	JB_LIT(&jb, ",\"message\":");
	jout_cstr(&jb, msg);
	JB_LIT(&jb, "}}\n");
	jb_flush(&jb);
}

void
srv_error(struct srv_req *r, int status, const char *kind, const char *msg, const char *extra)
{
	struct evbuffer *b = evbuffer_new();
	size_t n;

	srv_error_body(b, kind, msg);
	n = evbuffer_get_length(b);
	srv_reply(r, status, "application/json", extra, evbuffer_pullup(b, -1), n);
	evbuffer_free(b);
}

/* An error that ends the connection: a request that cannot be read. If an
 * answer is under way it cannot be told; the connection just closes. */
static void
srv_fail(struct srv_conn *sc, int status, const char *kind, const char *msg)
{
	struct evbuffer *out = bufferevent_get_output(sc->bev), *b;
	struct srv_req *r = sc->req;

	log_debug("caller %s: %d: %s", sc->peer, status, msg);
	if (r != NULL && r->streaming) {
		srv_conn_free(sc);
		return;
	}
	b = evbuffer_new();
	srv_error_body(b, kind, msg);
	srv_head(out, 1, status, "application/json", NULL, 0);
	evbuffer_add_printf(out, "Content-Length: %zu\r\n\r\n", evbuffer_get_length(b));
	evbuffer_add_buffer(out, b);
	evbuffer_free(b);
	if (r != NULL) {
		sc->req = NULL;
		if (r->h != NULL)
			r->h->closed(r->arg);
		srv_req_free(r);
	}
	srv_close_after(sc);
}

void
srv_stream_begin(struct srv_req *r, int status, const char *type, const char *extra,
    const struct srv_handler *h, void *arg)
{
	struct evbuffer *out = bufferevent_get_output(r->sc->bev);

	r->h = h;
	r->arg = arg;
	r->streaming = 1;
	r->chunked = r->head.minor == 1;
	/* Whether it may keep alive is known at the end; HTTP/1.0 cannot. */
	srv_head(out, r->head.minor, status, type, extra, r->chunked);
	evbuffer_add(out, r->chunked ? "Transfer-Encoding: chunked\r\n\r\n" : "\r\n",
	    r->chunked ? 30 : 2);
}

void
srv_stream_write(struct srv_req *r, struct evbuffer *buf)
{
	struct evbuffer *out = bufferevent_get_output(r->sc->bev);
	size_t n = evbuffer_get_length(buf);

	if (n == 0)	/* an empty chunk would end the answer */
		return;
	if (r->chunked)
		evbuffer_add_printf(out, "%zx\r\n", n);
	evbuffer_add_buffer(out, buf);
	if (r->chunked)
		evbuffer_add(out, "\r\n", 2);
}

size_t
srv_stream_unsent(const struct srv_req *r)
{
	return r->sc != NULL ? evbuffer_get_length(bufferevent_get_output(r->sc->bev)) : 0;
}

void
srv_stream_end(struct srv_req *r)
{
	if (r->chunked)
		evbuffer_add(bufferevent_get_output(r->sc->bev), "0\r\n\r\n", 5);
	r->ended = 1;
	/* closed comes from the write callback, once it is all out. */
}

/*
 * Reading bodies.
 */

static void
srv_body_begin(struct srv_req *r, enum srv_body mode)
{
	struct srv_conn *sc = r->sc;
	const char *expect = srv_req_header(r, "expect");

	r->mode = mode;
	r->body = evbuffer_new();
	h1_body_init(&r->br, &r->head);
	/* Even without a body: srv_read_body sees its (empty) end and tells the taker. */
	r->input = SRV_INPUT_MORE;
	if (expect != NULL && r->head.framing != H1_NOBODY && r->head.minor == 1)
		evbuffer_add(bufferevent_get_output(sc->bev), "HTTP/1.1 100 Continue\r\n\r\n", 25);
	event_active(sc->next, 0, 0);
}

void
srv_req_read_body(struct srv_req *r, void (*done)(struct srv_req *))
{
	char why[96];

	if (r->head.framing == H1_LENGTH && r->head.length > srv.max_request_bytes) {
		snprintf(why, sizeof(why), "request body over %zu bytes (max_request_bytes)",
		    srv.max_request_bytes);
		srv_error(r, 413, "too_large", why, NULL);
		return;
	}
	r->done = done;
	srv_body_begin(r, SRB_WHOLE);
}

void
srv_req_stream_body(struct srv_req *r, const struct srv_handler *h, void *arg)
{
	r->h = h;
	r->arg = arg;
	srv_body_begin(r, SRB_STREAM);
}

void
srv_req_input_pause(struct srv_req *r, int paused)
{
	struct srv_conn *sc = r->sc;

	if (paused == r->paused || sc == NULL)
		return;
	r->paused = paused;
	if (paused) {
		evtimer_del(sc->timer);
		bufferevent_disable(sc->bev, EV_READ);
		return;
	}
	if (r->input == SRV_INPUT_MORE)
		srv_arm(sc, &srv.client_timeout);
	bufferevent_enable(sc->bev, EV_READ);
	event_active(sc->next, 0, 0);
}

void
srv_req_progress(struct srv_req *r)
{
	if (r->sc != NULL && !r->paused && r->input == SRV_INPUT_MORE)
		srv_arm(r->sc, &srv.client_timeout);
}

/* Tells a streamed body's taker what came or how it ended. Returns 0 when
 * r is still the connection's request afterwards. */
static int
srv_body_tell(struct srv_conn *sc, struct srv_req *r)
{
	r->h->body(r->arg);
	return sc->req == r ? 0 : -1;
}

/* Reads what input holds of r's body. Returns 0 to go on, -1 when the
 * connection has nothing more to do now. */
static int
srv_read_body(struct srv_conn *sc, struct srv_req *r, struct evbuffer *in)
{
	size_t before = evbuffer_get_length(r->body);
	const char *why = NULL;
	char msg[96];
	int rc;

	if (r->input != SRV_INPUT_MORE || r->paused)
		return -1;
	/* A streamed body's taker drains lines; one that does not fit in
	 * max_request_bytes is its to refuse, and reading waits meanwhile. */
	if (r->mode == SRB_STREAM && before > srv.max_request_bytes)
		return -1;
	rc = h1_body_read(&r->br, in, r->body, 0, &why);
	if (rc == H1_ERROR) {
		if (r->mode == SRB_WHOLE) {
			srv_fail(sc, 400, "bad_request", why);
			return -1;
		}
		r->input = SRV_INPUT_BAD;
		evtimer_del(sc->timer);
		srv_body_tell(sc, r);
		return -1;
	}
	if (r->mode == SRB_WHOLE && evbuffer_get_length(r->body) > srv.max_request_bytes) {
		snprintf(msg, sizeof(msg), "request body over %zu bytes (max_request_bytes)",
		    srv.max_request_bytes);
		srv_fail(sc, 413, "too_large", msg);
		return -1;
	}
	if (rc == H1_DONE) {
		r->input = SRV_INPUT_END;
		evtimer_del(sc->timer);
		if (r->mode == SRB_WHOLE) {
			r->done(r);
			return 0;
		}
		return srv_body_tell(sc, r);
	}
	if (r->mode == SRB_STREAM && evbuffer_get_length(r->body) > before)
		srv_body_tell(sc, r);
	return -1;	/* the rest of the body is still to come */
}

/*
 * Reading requests.
 */

/* Checks what h1.c leaves to the server: Host, the target, Expect. */
static int
srv_req_check(struct srv_req *r, int *status, const char **why)
{
	const char *expect = srv_req_header(r, "expect");
	size_t hosts = 0;

	for (size_t i = 0; i < r->head.nheaders; i++)
		hosts += strcasecmp(r->head.headers[i].name, "host") == 0;
	*status = 400;
	if (r->head.minor == 1 && hosts != 1) {
		*why = hosts == 0 ? "no Host header" : "more than one Host header";
		return -1;
	}
	if (srv_req_target(r) < 0) {
		*why = "request target must be a path or an absolute http URL";
		return -1;
	}
	if (expect != NULL && strcasecmp(expect, "100-continue") != 0) {
		*status = 417;
		*why = "the only expectation understood is 100-continue";
		return -1;
	}
	return 0;
}

/* Takes a head off in; -1 when there is none yet or the connection failed. */
static int
srv_read_head(struct srv_conn *sc, struct evbuffer *in)
{
	struct srv_req *r;
	const char *why = NULL;
	int rc, status;

	if (evbuffer_get_length(bufferevent_get_output(sc->bev)) > SRV_PIPELINE_OUT)
		return -1;	/* the write callback comes back here */
	if (evbuffer_get_length(in) == 0) {
		if (sc->eof)	/* half-closed, every request answered */
			srv_close_after(sc);
		return -1;
	}
	sc->got_bytes = 1;
	r = xcalloc(1, sizeof(*r));
	rc = h1_parse_request(in, SRV_MAX_HEAD, &r->head, &why);
	if (rc != H1_DONE) {
		free(r);
		if (rc == H1_TOO_BIG)
			srv_fail(sc, 431, "too_large", why);
		else if (rc == H1_VERSION)
			srv_fail(sc, 505, "bad_request", why);
		else if (rc == H1_ERROR)
			srv_fail(sc, 400, "bad_request", why);
		else if (sc->eof)	/* a head cut by the FIN */
			srv_close_after(sc);
		return -1;
	}
	r->sc = sc;
	sc->req = r;
	if (r->head.framing == H1_NOBODY)
		evtimer_del(sc->timer);	/* all of it is in */
	if (srv_req_check(r, &status, &why) < 0) {
		log_debug("caller %s: %d: %s", sc->peer, status, why);
		r->head.keep_alive = 0;
		srv_error(r, status, "bad_request", why, NULL);
		return 0;
	}
	srv.route(r);
	if (sc->req == r && r->mode == SRB_NONE && !r->streaming)
		fatal("server: %s %s was neither answered nor taken", r->head.method, r->path);
	return 0;
}

static void
srv_process(struct srv_conn *sc)
{
	struct evbuffer *in = bufferevent_get_input(sc->bev);

	if (sc->closing) {
		evbuffer_drain(in, evbuffer_get_length(in));
		return;
	}
	for (;;) {
		struct srv_req *r = sc->req;
		int rc = r == NULL ? srv_read_head(sc, in) :
		    r->mode != SRB_NONE ? srv_read_body(sc, r, in) : -1;

		if (rc < 0 || sc->closing)
			return;
	}
}

static void
srv_next(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	srv_process(arg);
}

static void
srv_read(struct bufferevent *bev, void *arg)
{
	(void)bev;
	srv_process(arg);
}

/* The output is all written. */
static void
srv_write(struct bufferevent *bev, void *arg)
{
	struct srv_conn *sc = arg;
	struct srv_req *r = sc->req;

	(void)bev;
	if (sc->closing) {
		srv_linger(sc);
		return;
	}
	if (r == NULL) {
		event_active(sc->next, 0, 0);	/* a pipelined request may go on */
		return;
	}
	if (!r->streaming)
		return;
	if (r->ended) {
		int keep = srv_keep(r);
		r->h->closed(r->arg);
		srv_req_over(r, keep);
		return;
	}
	if (r->h->drained != NULL)
		r->h->drained(r->arg);
}

/* Whether the caller has closed its socket altogether (a Unix socket
 * says so; TCP tells a shut sending side from a close only when written
 * to), rather than only its sending side. */
static int
srv_peer_closed(struct srv_conn *sc)
{
	struct pollfd p = { .fd = bufferevent_getfd(sc->bev), .events = POLLIN | POLLRDHUP };

	return poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLERR)) != 0;
}

/* The caller shut its sending side. */
static void
srv_eof(struct srv_conn *sc)
{
	struct srv_req *r = sc->req;

	sc->eof = 1;
	if ((r != NULL && r->mode == SRB_WHOLE && r->input == SRV_INPUT_MORE) ||
	    srv_peer_closed(sc) || (r == NULL && !sc->got_bytes &&
	    evbuffer_get_length(bufferevent_get_output(sc->bev)) == 0 &&
	    evbuffer_get_length(bufferevent_get_input(sc->bev)) == 0)) {
		srv_conn_free(sc);	/* nothing asked, or asked and gone */
		return;
	}
	if (sc->closing) {
		if (evbuffer_get_length(bufferevent_get_output(sc->bev)) == 0)
			srv_conn_free(sc);	/* the last answer is out */
		return;			/* else srv_write lingers, then frees */
	}
	if (r == NULL) {		/* answers queued, or requests buffered */
		event_active(sc->next, 0, 0);
		return;
	}
	/* A half-close: the caller still reads what it asked for. */
	if (r->input == SRV_INPUT_MORE) {
		r->input = SRV_INPUT_CUT;
		evtimer_del(sc->timer);
		if (r->mode == SRB_STREAM)
			srv_body_tell(sc, r);
	}
}

static void
srv_event(struct bufferevent *bev, short what, void *arg)
{
	struct srv_conn *sc = arg;

	(void)bev;
	if ((what & BEV_EVENT_EOF) && (what & BEV_EVENT_READING))
		srv_eof(sc);
	else {
		if (what & BEV_EVENT_TIMEOUT)
			log_info("caller %s: took nothing for %d s; dropped", sc->peer,
			    SRV_WRITE_TIMEOUT_S);
		srv_conn_free(sc);
	}
}

/* client_timeout_s, or the end of a linger. */
static void
srv_timer(evutil_socket_t fd, short what, void *arg)
{
	struct srv_conn *sc = arg;
	struct srv_req *r = sc->req;
	char msg[96];

	(void)fd;
	(void)what;
	if (sc->closing || (r == NULL && !sc->got_bytes)) {
		srv_conn_free(sc);	/* lingered, or idle between requests */
		return;
	}
	if (r != NULL && r->mode == SRB_STREAM) {
		r->input = SRV_INPUT_STALLED;
		srv_body_tell(sc, r);
		return;
	}
	snprintf(msg, sizeof(msg), "request not received within %ld s (client_timeout_s)",
	    (long)srv.client_timeout.tv_sec);
	log_info("caller %s: %s", sc->peer, msg);
	srv_fail(sc, 408, "timeout", msg);
}

/*
 * Connections.
 */

static void
srv_conn_free(struct srv_conn *sc)
{
	struct srv_req *r = sc->req;

	if (r != NULL) {
		sc->req = NULL;
		r->sc = NULL;
		if (r->h != NULL)
			r->h->closed(r->arg);
		srv_req_free(r);
	}
	TAILQ_REMOVE(&srv.conns, sc, link);
	srv.nconns--;
	bufferevent_free(sc->bev);
	event_free(sc->timer);
	event_free(sc->next);
	free(sc);
}

static void
srv_peer_name(struct srv_conn *sc, const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET || sa->sa_family == AF_INET6)
		addr_format((const struct sockaddr_storage *)(const void *)sa, sc->peer,
		    sizeof(sc->peer));
	else
		snprintf(sc->peer, sizeof(sc->peer), "unix");
}

void
srv_accept(int fd, const struct sockaddr *sa, socklen_t len)
{
	static const struct timeval wt = { SRV_WRITE_TIMEOUT_S, 0 };
	struct srv_conn *sc;
	int one = 1;

	(void)len;
	sc = xcalloc(1, sizeof(*sc));
	sc->bev = bufferevent_socket_new(srv.base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (sc->bev == NULL)
		fatal("server: cannot make a bufferevent");
	sc->timer = evtimer_new(srv.base, srv_timer, sc);
	sc->next = event_new(srv.base, -1, 0, srv_next, sc);
	srv_peer_name(sc, sa);
	TAILQ_INSERT_TAIL(&srv.conns, sc, link);
	srv.nconns++;
	/* An answer goes out when it is ready: Nagle would hold a small one
	 * (a stream's last chunk above all) until the caller's delayed ACK. */
	if (sa->sa_family != AF_UNIX)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	bufferevent_setcb(sc->bev, srv_read, srv_write, srv_event, sc);
	bufferevent_setwatermark(sc->bev, EV_READ, 0, SRV_READ_AHEAD);
	bufferevent_set_timeouts(sc->bev, NULL, &wt);
	bufferevent_set_max_single_write(sc->bev, SRV_WRITE_MAX);
	if (srv.nconns > srv.max_clients || srv.stopping) {
		struct evbuffer *out = bufferevent_get_output(sc->bev), *b = evbuffer_new();
		srv_error_body(b, "overloaded", srv.stopping ? "shutting down" :
		    "too many caller connections (max_clients)");
		srv_head(out, 1, 503, "application/json", "Retry-After: 1\r\n", 0);
		evbuffer_add_printf(out, "Content-Length: %zu\r\n\r\n", evbuffer_get_length(b));
		evbuffer_add_buffer(out, b);
		evbuffer_free(b);
		srv_close_after(sc);
		return;
	}
	srv_arm(sc, &srv.client_timeout);
	bufferevent_enable(sc->bev, EV_READ | EV_WRITE);
}

void
srv_stop(void)
{
	struct srv_conn *sc, *next;

	srv.stopping = 1;
	for (sc = TAILQ_FIRST(&srv.conns); sc != NULL; sc = next) {
		next = TAILQ_NEXT(sc, link);
		if (sc->req == NULL && !sc->got_bytes)
			srv_conn_free(sc);
	}
}

void
srv_shutdown(void)
{
	struct srv_conn *sc;

	while ((sc = TAILQ_FIRST(&srv.conns)) != NULL)
		srv_conn_free(sc);
}
