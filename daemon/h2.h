/* h2.h: one HTTP/2 client session over a connected transport (a bufferevent,
 * TLS underneath), many streams on it. libnghttp2 does the framing, HPACK,
 * flow control and the protocol's rules; this file moves bytes between it
 * and the bufferevent and turns its callbacks into per-stream reports.
 *
 * A response head is assembled as HTTP/1.1 text and read by h1.c, so that
 * one strict reader makes every head the rest of the daemon sees. */
#ifndef FANOUTD_H2_H
#define FANOUTD_H2_H

#include <stddef.h>
#include <stdint.h>

struct bufferevent;
struct h1_head;

struct h2_session;
struct h2_stream;

/* Not HTTP/2 error codes: the connection went away under the stream; the
 * stream was reset with NO_ERROR before the end of its response. */
#define H2_CONN_LOST 0x100u
#define H2_CUT 0x101u
#define H2_HEAD_TOO_BIG 0x102u	/* reset by us: the head passed max_header_bytes */

struct h2_field {
	const char *name;	/* lower case */
	size_t namelen;
	const char *value;
	size_t valuelen;
};

struct h2_request {
	const char *method, *scheme, *authority, *path;
	const struct h2_field *fields;	/* no connection-specific ones */
	size_t nfields;
	const char *body;		/* copied; NULL: none */
	size_t bodylen;
	int head_request;		/* HEAD: no body whatever the headers say */
};

/* What one stream reports, in this order: on_head once (the final head:
 * rc is H1_DONE with *head for the callee to keep, or an error with why),
 * on_data for each piece of the body, on_close last. After on_close, and
 * after h2_cancel, the stream is gone. */
struct h2_stream_cb {
	void (*on_head)(void *arg, int rc, struct h1_head *head, const char *why);
	void (*on_data)(void *arg, const uint8_t *data, size_t len);
	/* error: 0 after a whole response, else the HTTP/2 error code the stream
	 * was reset with (REFUSED_STREAM also for streams a GOAWAY left
	 * unprocessed), or H2_CONN_LOST. */
	void (*on_close)(void *arg, uint32_t error);
};

/* What the session reports to its owner. */
struct h2_session_cb {
	/* The streams it can take at once changed (the server's SETTINGS):
	 * the lower of the server's limit and the owner's max_streams. */
	void (*on_room)(void *arg, unsigned max_streams);
	/* No new stream may start on it (GOAWAY, a failed transport); the
	 * streams it still has are told on their own. */
	void (*on_dead)(void *arg);
};

/* Takes over bev's callbacks and sends the preface. max_streams: the most
 * the owner will open at once; max_header_bytes: the largest header block
 * accepted. NULL on failure. */
struct h2_session *h2_session_new(struct bufferevent *bev, const struct h2_session_cb *cb,
    void *arg, unsigned max_streams, size_t max_header_bytes);

/* Frees s and its bufferevent's callbacks (not the bufferevent). Streams
 * still open are not told. Safe from inside any of s's callbacks: the free
 * then waits until s's own code has returned. */
void h2_session_free(struct h2_session *s);

/* Starts a stream; NULL with why when s cannot take one. */
struct h2_stream *h2_submit(struct h2_session *s, const struct h2_request *req,
    const struct h2_stream_cb *cb, void *arg, const char **why);

/* n body bytes of st have been passed on: its window may open by as much. */
void h2_consume(struct h2_stream *st, size_t n);

/* Resets st (CANCEL); no callback of it runs again. */
void h2_cancel(struct h2_stream *st);

/* The name of an HTTP/2 error code: "INTERNAL_ERROR". */
const char *h2_error_name(uint32_t error);

#endif
