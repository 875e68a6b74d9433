/* server.h: the caller-facing HTTP/1.1 server. Connections from the
 * listeners, requests read strictly by h1.c (a malformed one is answered
 * 400 with the JSON error object and its connection closed), bodies read
 * whole or streamed to a handler, answers written whole or streamed
 * (chunked; closed-delimited for HTTP/1.0), keep-alive and pipelining,
 * and the callers' limits: client_timeout_s, max_clients,
 * max_request_bytes.
 *
 * Written on bufferevents rather than on evhttp, whose server reads the
 * whole body before any handler runs, frames requests leniently, answers
 * its own errors with HTML and cannot bound a slow caller. */
#ifndef FANOUTD_SERVER_H
#define FANOUTD_SERVER_H

#include <stddef.h>
#include <sys/socket.h>

struct conf;
struct event_base;
struct evbuffer;

struct srv_req;	/* one request, from its head to the end of its answer */

/* What the server tells the one who took a request over (a streamed
 * answer, or a streamed body). */
struct srv_handler {
	/* A streamed body: more of it in srv_req_input(), or its end
	 * (srv_req_input_end() says how). */
	void (*body)(void *arg);
	/* Everything written so far has gone out. */
	void (*drained)(void *arg);
	/* The request is over: its answer was written whole after
	 * srv_stream_end, or the caller is gone before. It is freed once
	 * this returns. */
	void (*closed)(void *arg);
};

/* Called with each request once its head is in. It answers (srv_reply,
 * srv_error), or asks for the body (srv_req_read_body), or takes the
 * request over (srv_req_stream_body, srv_stream_begin). */
typedef void srv_route_fn(struct srv_req *r);

void srv_init(struct event_base *base, srv_route_fn *route);
/* The limits in force for new requests (start-up and reloads). */
void srv_configure(const struct conf *c);
/* A connection accepted by a listener. */
void srv_accept(int fd, const struct sockaddr *sa, socklen_t len);
/* Stopping: idle connections close now, the others after their answer. */
void srv_stop(void);
void srv_shutdown(void);

/* The request. */
const char *srv_req_method(const struct srv_req *r);
const char *srv_req_path(const struct srv_req *r);
const char *srv_req_query(const struct srv_req *r);	/* NULL when none */
const char *srv_req_header(const struct srv_req *r, const char *name);
const char *srv_req_peer(const struct srv_req *r);	/* "127.0.0.1:41000" or "unix" */

/* Reads the whole body, up to max_request_bytes (beyond: 413, closed),
 * then calls done. If the caller goes first, done is never called. */
void srv_req_read_body(struct srv_req *r, void (*done)(struct srv_req *r));
/* Hands the body, as it arrives, to h (body). */
void srv_req_stream_body(struct srv_req *r, const struct srv_handler *h, void *arg);
/* The body read so far and not yet drained by its taker. */
struct evbuffer *srv_req_input(struct srv_req *r);

enum srv_input {
	SRV_INPUT_MORE,		/* more may come */
	SRV_INPUT_END,		/* the body ended as its framing says */
	SRV_INPUT_CUT,		/* the caller stopped sending (half-close) before its end */
	SRV_INPUT_STALLED,	/* nothing came for client_timeout_s */
	SRV_INPUT_BAD,		/* bad chunk framing */
};
enum srv_input srv_req_input_end(const struct srv_req *r);
/* The taker cannot take more now: reading stops (and client_timeout_s
 * with it) until it can. */
void srv_req_input_pause(struct srv_req *r, int paused);
/* A streamed body made progress (a line): client_timeout_s starts again. */
void srv_req_progress(struct srv_req *r);

/* Whole answers; extra: more header lines ("Allow: GET\r\n"), or NULL.
 * r is freed: the caller must not use it again. */
void srv_reply(struct srv_req *r, int status, const char *type, const char *extra,
    const void *body, size_t len);
/* {"error":{"kind":...,"message":...}} */
void srv_error(struct srv_req *r, int status, const char *kind, const char *msg,
    const char *extra);

/* A streamed answer: chunked to HTTP/1.1 callers, delimited by closing to
 * HTTP/1.0 ones. h may be the one given to srv_req_stream_body. */
void srv_stream_begin(struct srv_req *r, int status, const char *type, const char *extra,
    const struct srv_handler *h, void *arg);
/* Sends what buf holds (drained from it). */
void srv_stream_write(struct srv_req *r, struct evbuffer *buf);
/* Bytes written and not yet taken by the caller. */
size_t srv_stream_unsent(const struct srv_req *r);
/* The last byte is queued; closed is called once it is written. */
void srv_stream_end(struct srv_req *r);

#endif
