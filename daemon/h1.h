/* h1.h: a strict, incremental HTTP/1.1 message reader: upstream responses,
 * and callers' requests.
 *
 * Written by hand on purpose: libevent 2.1's evhttp frames messages
 * leniently (TE other than chunked, TE+CL, duplicate CL, a signed CL, bare
 * LF, space before a colon, empty bodies on keep-alive connections without
 * framing), and on a pooled connection that lets one response's bytes
 * become another's. http-parser is unmaintained and llhttp is not packaged
 * for Debian 12. Every framing anomaly here is an error, and the connection
 * it came on is never used again. */
#ifndef FANOUTD_H1_H
#define FANOUTD_H1_H

#include <stddef.h>
#include <stdint.h>

struct evbuffer;

enum h1_rc {
	H1_AGAIN = 0,	/* need more input */
	H1_DONE = 1,	/* the head (or the body) is complete */
	H1_ERROR = -1,	/* malformed: why says how; the connection is unusable */
	H1_TOO_BIG = -2,	/* the header block passed its limit */
	H1_VERSION = -3,	/* a request in an HTTP version other than 1.0 and 1.1 */
};

enum h1_framing {
	H1_NOBODY,	/* HEAD, 1xx, 204, 304; a request with neither length nor chunking */
	H1_LENGTH,	/* Content-Length */
	H1_CHUNKED,	/* Transfer-Encoding: chunked */
	H1_CLOSE,	/* neither: the body runs to connection close */
};

struct h1_header {
	const char *name;	/* points into the head's block; NUL-terminated there */
	size_t namelen;
	const char *value;	/* surrounding whitespace trimmed; NUL-terminated */
	size_t valuelen;
};

#define H1_MAX_HEADERS 256

struct h1_head {
	int status;			/* 100..999; 0 in a request */
	const char *method;		/* a request's, NUL-terminated in block; NULL in a response */
	const char *target;		/* a request's request-target, likewise */
	int minor;			/* HTTP/1.<minor>: 0 or 1 */
	char *block;			/* owned copy of the header block, with every name
					 * and value NUL-terminated in place */
	size_t blocklen;
	struct h1_header *headers;	/* owned array */
	size_t nheaders;
	enum h1_framing framing;
	uint64_t length;		/* with H1_LENGTH */
	int keep_alive;			/* the connection may serve another request after this body */
	const char *content_encoding;	/* points into block, NUL-terminated; repeated
					 * headers joined with ", "; NULL if none */
};

/* Takes one complete response head off the front of buf once it is all there.
 * head_request: the request was HEAD (no body whatever the headers say).
 * Returns H1_AGAIN while the head is incomplete and under max_bytes,
 * H1_DONE with *h filled (free with h1_head_clear), or H1_ERROR/H1_TOO_BIG.
 * *h is overwritten, not freed; on anything but H1_DONE it is left empty and
 * buf untouched. Each call rescans the buffered head (at most max_bytes).
 * Interim 1xx heads are returned like any other; the caller skips them. */
int h1_parse_head(struct evbuffer *buf, size_t max_bytes, int head_request,
    struct h1_head *h, const char **why);

/* The same for a request head: method, target, headers and the body's
 * framing (H1_NOBODY, H1_LENGTH or H1_CHUNKED); H1_VERSION for an HTTP
 * version other than 1.0 and 1.1. keep_alive is false for HTTP/1.0 unless
 * asked for. */
int h1_parse_request(struct evbuffer *buf, size_t max_bytes, struct h1_head *h, const char **why);

void h1_head_clear(struct h1_head *h);

/* Case-insensitive lookup of the first header called name; NULL if absent. */
const struct h1_header *h1_find(const struct h1_head *h, const char *name);

struct h1_body {
	enum h1_framing framing;
	uint64_t remaining;	/* of Content-Length, or of the current chunk */
	int state;		/* private to h1.c */
	size_t linelen;		/* private: bytes of the trailer section seen */
};

void h1_body_init(struct h1_body *b, const struct h1_head *h);

/* Moves payload bytes (transfer coding removed) from in to out, without
 * copying where the buffers allow. eof: the peer has closed. Returns H1_AGAIN
 * (more to come), H1_DONE (complete; bytes left in in are the caller's
 * problem: a response we did not ask for), or H1_ERROR with why (bad chunk
 * framing, a body cut short by close). */
int h1_body_read(struct h1_body *b, struct evbuffer *in, struct evbuffer *out, int eof,
    const char **why);

/* How many payload bytes may be taken past the reader (recv with MSG_TRUNC)
 * without losing the framing: what is left of a Content-Length body, else 0. */
uint64_t h1_body_skippable(const struct h1_body *b);

/* Accounts n <= h1_body_skippable() bytes taken past the reader; H1_DONE when
 * that was the end of the body, else H1_AGAIN. */
int h1_body_skipped(struct h1_body *b, uint64_t n);

#endif
