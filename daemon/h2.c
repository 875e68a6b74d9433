/* h2.c: see h2.h.
 *
 * Re-entrancy: nghttp2 must not be freed or asked to send from inside its
 * own callbacks, and our callbacks may end streams or drop the whole
 * connection. Every way into a session (bufferevent callbacks, submit,
 * cancel, consume) is bracketed by h2_enter/h2_leave: the session is sent on
 * and freed only by the outermost leave.
 *
 * Flow control: windows are not opened automatically; a stream's opens by
 * what its owner says it has passed on (h2_consume), so a consumer that
 * stops taking bytes stops the sender after one window. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <nghttp2/nghttp2.h>

#include "h1.h"
#include "h2.h"
#include "log.h"
#include "metrics.h"
#include "util.h"

#define H2_STREAM_WINDOW (256 * 1024)		/* a stream's receive window */
#define H2_CONN_WINDOW (16 * 1024 * 1024)	/* the connection's */
/* Frames waiting for the socket before nghttp2 is asked for more. Past it,
 * what the server provokes (PING and SETTINGS acknowledgements) stays in
 * nghttp2's queue, whose flood limit then ends the connection, instead of
 * growing our buffer for as long as the server does not read. */
#define H2_OUT_MAX (256 * 1024)

struct h2_stream {
	struct h2_session *s;
	int32_t id;
	const struct h2_stream_cb *cb;
	void *arg;
	struct evbuffer *body;		/* request body not yet sent */
	struct evbuffer *head;		/* response head being assembled, HTTP/1.1 text */
	int status;
	int head_request;
	int got_head;
	int ended;			/* END_STREAM from the server */
	int head_too_big;		/* we reset it: over max_header_bytes */
	size_t unconsumed;		/* body bytes delivered, not yet consumed */
	TAILQ_ENTRY(h2_stream) link;
};

struct h2_session {
	nghttp2_session *ng;
	struct bufferevent *bev;
	const struct h2_session_cb *cb;
	void *arg;
	size_t max_header_bytes;
	unsigned max_streams;		/* the owner's own limit */
	unsigned depth;			/* h2_enter nesting */
	int freeing;			/* h2_session_free asked while inside */
	int dead;			/* on_dead told */
	TAILQ_HEAD(, h2_stream) streams;
};

static void h2_read(struct bufferevent *bev, void *arg);
static void h2_write(struct bufferevent *bev, void *arg);
static void h2_event(struct bufferevent *bev, short what, void *arg);

const char *
h2_error_name(uint32_t error)
{
	if (error == H2_CONN_LOST)
		return "connection lost";
	if (error == H2_CUT)
		return "NO_ERROR before the end of the response";
	return nghttp2_http2_strerror(error);
}

static void
h2_enter(struct h2_session *s)
{
	s->depth++;
}

static void
h2_stream_free(struct h2_stream *st)
{
	TAILQ_REMOVE(&st->s->streams, st, link);
	if (st->body != NULL)
		evbuffer_free(st->body);
	if (st->head != NULL)
		evbuffer_free(st->head);
	free(st);
}

static void
h2_free_now(struct h2_session *s)
{
	struct h2_stream *st;

	while ((st = TAILQ_FIRST(&s->streams)) != NULL) {
		nghttp2_session_set_stream_user_data(s->ng, st->id, NULL);
		h2_stream_free(st);
	}
	nghttp2_session_del(s->ng);
	free(s);
}

/* Tells the owner, once, that no new stream may start. */
static void
h2_die(struct h2_session *s)
{
	if (s->dead || s->freeing)
		return;
	s->dead = 1;
	s->cb->on_dead(s->arg);
}

/* Every stream still open ends with H2_CONN_LOST. */
static void
h2_lose_streams(struct h2_session *s)
{
	struct h2_stream *st;

	while ((st = TAILQ_FIRST(&s->streams)) != NULL) {
		const struct h2_stream_cb *cb = st->cb;
		void *arg = st->arg;

		nghttp2_session_set_stream_user_data(s->ng, st->id, NULL);
		h2_stream_free(st);
		cb->on_close(arg, H2_CONN_LOST);
	}
}

/* Sends what nghttp2 has queued; a session that cannot go on dies. */
static void
h2_flush(struct h2_session *s)
{
	struct evbuffer *out = bufferevent_get_output(s->bev);
	const uint8_t *data;
	ssize_t n = 0;

	/* The rest goes when the socket has taken this (h2_write). */
	while (evbuffer_get_length(out) < H2_OUT_MAX &&
	    (n = nghttp2_session_mem_send(s->ng, &data)) > 0)
		evbuffer_add(out, data, (size_t)n);
	if (n < 0) {
		log_debug("h2: send: %s", nghttp2_strerror((int)n));
		h2_lose_streams(s);
		h2_die(s);
	} else if (!nghttp2_session_want_read(s->ng) && !nghttp2_session_want_write(s->ng)) {
		/* A GOAWAY (the server's, or ours for its protocol error) ended
		 * it: nothing more will come for the streams it still has. */
		h2_die(s);
		h2_lose_streams(s);
	}
}

static void
h2_leave(struct h2_session *s)
{
	if (s->depth == 1 && !s->freeing)
		h2_flush(s);
	if (--s->depth == 0 && s->freeing)
		h2_free_now(s);
}

/* The stream of id, or NULL: none, or the owner let go of the session
 * from inside one of its callbacks (nothing of the owner's may be reached
 * any more, while nghttp2 parses the rest of the input). */
static struct h2_stream *
h2_stream_of(struct h2_session *s, int32_t id)
{
	return id > 0 && !s->freeing ? nghttp2_session_get_stream_user_data(s->ng, id) : NULL;
}

static int
h2_on_begin_headers(nghttp2_session *ng, const nghttp2_frame *f, void *arg)
{
	struct h2_stream *st = h2_stream_of(arg, f->hd.stream_id);

	(void)ng;
	if (st == NULL || f->hd.type != NGHTTP2_HEADERS)
		return 0;
	if (st->head == NULL)
		st->head = evbuffer_new();
	evbuffer_drain(st->head, evbuffer_get_length(st->head));
	st->status = 0;
	return 0;
}

static int
h2_on_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name, size_t namelen,
    const uint8_t *value, size_t valuelen, uint8_t flags, void *arg)
{
	struct h2_session *s = arg;
	struct h2_stream *st = h2_stream_of(s, f->hd.stream_id);

	(void)ng;
	(void)flags;
	if (st == NULL || st->head == NULL || st->got_head)
		return 0;	/* trailers: not reported */
	if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
		st->status = valuelen == 3 ? atoi((const char *)value) : 0;
		return 0;
	}
	if (namelen > 0 && name[0] == ':')
		return 0;
	if (evbuffer_get_length(st->head) + namelen + valuelen + 4 > s->max_header_bytes) {
		st->head_too_big = 1;
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;	/* resets the stream */
	}
	evbuffer_add(st->head, name, namelen);
	evbuffer_add(st->head, ": ", 2);
	evbuffer_add(st->head, value, valuelen);
	evbuffer_add(st->head, "\r\n", 2);
	return 0;
}

/* A header block ended: interim ones are dropped, the final one goes to
 * h1.c as HTTP/1.1 text and then to the owner. */
static void
h2_head_done(struct h2_session *s, struct h2_stream *st)
{
	struct evbuffer *text;
	struct h1_head head;
	const char *why = NULL;
	int rc;

	if (st->status >= 100 && st->status < 200)
		return;
	st->got_head = 1;
	text = evbuffer_new();
	evbuffer_add_printf(text, "HTTP/1.1 %03d \r\n", st->status);
	evbuffer_add_buffer(text, st->head);
	evbuffer_add(text, "\r\n", 2);
	rc = h1_parse_head(text, s->max_header_bytes + 32, st->head_request, &head, &why);
	evbuffer_free(text);
	if (rc == H1_AGAIN) {
		rc = H1_ERROR;
		why = "malformed response head";
	}
	st->cb->on_head(st->arg, rc, &head, why);
}

static int
h2_on_frame_recv(nghttp2_session *ng, const nghttp2_frame *f, void *arg)
{
	struct h2_session *s = arg;
	struct h2_stream *st;

	if ((f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) &&
	    (f->hd.flags & NGHTTP2_FLAG_END_STREAM) &&
	    (st = h2_stream_of(s, f->hd.stream_id)) != NULL)
		st->ended = 1;
	switch (f->hd.type) {
	case NGHTTP2_HEADERS:
		/* Until the final head, every header block is a response head:
		 * nghttp2 files the one after a 1xx under HCAT_HEADERS, as it
		 * does trailers, which come only after the final head. */
		if ((st = h2_stream_of(s, f->hd.stream_id)) != NULL && !st->got_head)
			h2_head_done(s, st);
		break;
	case NGHTTP2_SETTINGS:
		if (!(f->hd.flags & NGHTTP2_FLAG_ACK) && !s->freeing) {
			uint32_t n = nghttp2_session_get_remote_settings(ng,
			    NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
			s->cb->on_room(s->arg, n < s->max_streams ? n : s->max_streams);
		}
		break;
	case NGHTTP2_GOAWAY:
		log_debug("h2: GOAWAY %s, last stream %d", h2_error_name(f->goaway.error_code),
		    f->goaway.last_stream_id);
		h2_die(s);
		break;
	default:
		break;
	}
	return 0;
}

static int
h2_on_data(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
    void *arg)
{
	struct h2_stream *st = h2_stream_of(arg, id);

	(void)flags;
	if (st == NULL) {
		/* A stream we reset: its bytes still count against the connection. */
		nghttp2_session_consume_connection(ng, len);
		return 0;
	}
	st->unconsumed += len;
	st->cb->on_data(st->arg, data, len);
	return 0;
}

/* What a stream took in and its owner never consumed still holds the
 * connection's window: give it back as the stream goes. */
static void
h2_give_back(struct h2_stream *st)
{
	if (st->unconsumed > 0)
		nghttp2_session_consume_connection(st->s->ng, st->unconsumed);
	st->unconsumed = 0;
}

static int
h2_on_stream_close(nghttp2_session *ng, int32_t id, uint32_t error, void *arg)
{
	struct h2_stream *st = h2_stream_of(arg, id);
	const struct h2_stream_cb *cb;
	void *sarg;

	if (st == NULL)
		return 0;
	if (st->head_too_big)
		error = H2_HEAD_TOO_BIG;
	else if (error == 0 && !st->ended)
		error = H2_CUT;	/* RST_STREAM(NO_ERROR) before the end */
	h2_give_back(st);
	nghttp2_session_set_stream_user_data(ng, id, NULL);
	cb = st->cb;
	sarg = st->arg;
	h2_stream_free(st);
	cb->on_close(sarg, error);
	return 0;
}

static nghttp2_session_callbacks *
h2_callbacks(void)
{
	static nghttp2_session_callbacks *cbs;

	if (cbs == NULL) {
		if (nghttp2_session_callbacks_new(&cbs) != 0)
			fatal("out of memory");
		nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, h2_on_begin_headers);
		nghttp2_session_callbacks_set_on_header_callback(cbs, h2_on_header);
		nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, h2_on_frame_recv);
		nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, h2_on_data);
		nghttp2_session_callbacks_set_on_stream_close_callback(cbs, h2_on_stream_close);
	}
	return cbs;
}

struct h2_session *
h2_session_new(struct bufferevent *bev, const struct h2_session_cb *cb, void *arg,
    unsigned max_streams, size_t max_header_bytes)
{
	struct h2_session *s = xcalloc(1, sizeof(*s));
	nghttp2_settings_entry iv[] = {
		{ NGHTTP2_SETTINGS_ENABLE_PUSH, 0 },
		{ NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, max_streams },
		{ NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, H2_STREAM_WINDOW },
		{ NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, (uint32_t)max_header_bytes },
	};
	nghttp2_option *opt;

	if (nghttp2_option_new(&opt) != 0) {
		free(s);
		return NULL;
	}
	nghttp2_option_set_no_auto_window_update(opt, 1);
	nghttp2_option_set_peer_max_concurrent_streams(opt, 1);	/* until SETTINGS */
	if (nghttp2_session_client_new2(&s->ng, h2_callbacks(), s, opt) != 0) {
		nghttp2_option_del(opt);
		free(s);
		return NULL;
	}
	nghttp2_option_del(opt);
	s->bev = bev;
	s->cb = cb;
	s->arg = arg;
	s->max_header_bytes = max_header_bytes;
	s->max_streams = max_streams;
	TAILQ_INIT(&s->streams);
	nghttp2_submit_settings(s->ng, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0]));
	nghttp2_session_set_local_window_size(s->ng, NGHTTP2_FLAG_NONE, 0, H2_CONN_WINDOW);
	bufferevent_setcb(bev, h2_read, h2_write, h2_event, s);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
	/* The handshake may have brought the server's first frames (its
	 * SETTINGS): read them once the caller has the session in place. */
	if (evbuffer_get_length(bufferevent_get_input(bev)) > 0)
		bufferevent_trigger(bev, EV_READ, BEV_TRIG_DEFER_CALLBACKS);
	h2_enter(s);
	h2_leave(s);
	return s;
}

void
h2_session_free(struct h2_session *s)
{
	/* The bufferevent is its owner's, who may free it as soon as this
	 * returns: let go of it now, even when the rest must wait. */
	bufferevent_setcb(s->bev, NULL, NULL, NULL, NULL);
	s->bev = NULL;
	if (s->depth > 0) {
		s->freeing = 1;
		return;
	}
	h2_free_now(s);
}

static void
h2_read(struct bufferevent *bev, void *arg)
{
	struct h2_session *s = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	size_t len = evbuffer_get_length(in);
	ssize_t n;

	h2_enter(s);
	n = nghttp2_session_mem_recv(s->ng, evbuffer_pullup(in, -1), len);
	if (!s->freeing)
		evbuffer_drain(in, len);
	if (n < 0 && !s->freeing) {
		/* nghttp2 has queued a GOAWAY saying why; the streams are lost. */
		log_debug("h2: receive: %s", nghttp2_strerror((int)n));
		h2_lose_streams(s);
		h2_die(s);
	}
	h2_leave(s);
}

/* The socket took what was waiting: nghttp2 may have more to send. */
static void
h2_write(struct bufferevent *bev, void *arg)
{
	(void)bev;
	h2_enter(arg);
	h2_leave(arg);
}

static void
h2_event(struct bufferevent *bev, short what, void *arg)
{
	struct h2_session *s = arg;

	(void)bev;
	if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)))
		return;
	h2_enter(s);
	h2_lose_streams(s);
	h2_die(s);
	h2_leave(s);
}

static ssize_t
h2_read_body(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
    nghttp2_data_source *src, void *arg)
{
	struct h2_stream *st = src->ptr;
	int n = evbuffer_remove(st->body, buf, len);

	(void)ng;
	(void)id;
	(void)arg;
	if (evbuffer_get_length(st->body) == 0)
		*flags |= NGHTTP2_DATA_FLAG_EOF;
	return n < 0 ? NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE : n;
}

static nghttp2_nv
h2_nv(const char *name, size_t namelen, const char *value, size_t valuelen)
{
	nghttp2_nv nv = {
		(uint8_t *)(uintptr_t)name, (uint8_t *)(uintptr_t)value, namelen, valuelen,
		NGHTTP2_NV_FLAG_NONE,
	};
	return nv;
}

struct h2_stream *
h2_submit(struct h2_session *s, const struct h2_request *req, const struct h2_stream_cb *cb,
    void *arg, const char **why)
{
	struct h2_stream *st;
	nghttp2_data_provider prd;
	nghttp2_nv *nva;
	size_t n = 0;

	if (s->dead || s->freeing) {
		*why = "connection is going away";
		return NULL;
	}
	nva = xcalloc(req->nfields + 4, sizeof(*nva));
	nva[n++] = h2_nv(":method", 7, req->method, strlen(req->method));
	nva[n++] = h2_nv(":scheme", 7, req->scheme, strlen(req->scheme));
	nva[n++] = h2_nv(":authority", 10, req->authority, strlen(req->authority));
	nva[n++] = h2_nv(":path", 5, req->path, strlen(req->path));
	for (size_t i = 0; i < req->nfields; i++)
		nva[n++] = h2_nv(req->fields[i].name, req->fields[i].namelen, req->fields[i].value,
		    req->fields[i].valuelen);
	st = xcalloc(1, sizeof(*st));
	st->s = s;
	st->cb = cb;
	st->arg = arg;
	st->head_request = req->head_request;
	if (req->body != NULL) {
		st->body = evbuffer_new();
		evbuffer_add(st->body, req->body, req->bodylen);
		prd.source.ptr = st;
		prd.read_callback = h2_read_body;
	}
	h2_enter(s);
	st->id = nghttp2_submit_request(s->ng, NULL, nva, n, req->body != NULL ? &prd : NULL, st);
	free(nva);
	if (st->id < 0) {
		*why = nghttp2_strerror(st->id);
		if (st->body != NULL)
			evbuffer_free(st->body);
		free(st);
		h2_leave(s);
		return NULL;
	}
	TAILQ_INSERT_TAIL(&s->streams, st, link);
	/* A stream id is never used twice (RFC 9113, 5.1.1): once the last
	 * one is taken the connection can start no stream, and its owner must
	 * open another. Said now, not by the next submit's failure, which
	 * would have ended a request. */
	if (nghttp2_session_get_next_stream_id(s->ng) > INT32_MAX)
		h2_die(s);
	h2_leave(s);
	return st;
}

void
h2_consume(struct h2_stream *st, size_t n)
{
	struct h2_session *s = st->s;

	h2_enter(s);
	nghttp2_session_consume(s->ng, st->id, n);
	st->unconsumed -= n < st->unconsumed ? n : st->unconsumed;
	h2_leave(s);
}

void
h2_cancel(struct h2_stream *st)
{
	struct h2_session *s = st->s;

	h2_enter(s);
	h2_give_back(st);
	nghttp2_session_set_stream_user_data(s->ng, st->id, NULL);
	nghttp2_submit_rst_stream(s->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_CANCEL);
	h2_stream_free(st);
	h2_leave(s);
}
