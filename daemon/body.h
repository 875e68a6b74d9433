/* body.h: content decoding (gzip, deflate) of an upstream body with the size
 * limit applied to the decoded stream, so a compression bomb stops at the cap. */
#ifndef FANOUTD_BODY_H
#define FANOUTD_BODY_H

#include <stddef.h>

struct evbuffer;

enum body_rc {
	BODY_OK = 0,
	BODY_TOO_LARGE = -1,	/* decoded bytes would pass the limit */
	BODY_CORRUPT = -2,	/* the coding is broken or truncated */
};

struct body_dec;

/* coding: the Content-Encoding value or NULL. Returns NULL for identity
 * (and for codings we do not decode: the caller then keeps the raw bytes).
 * "gzip" and "x-gzip" accept concatenated members; "deflate" accepts zlib
 * streams and, failing a zlib header, raw deflate. */
struct body_dec *body_dec_new(const char *coding);

/* Decodes all of in (drained, whatever the result) and appends to out;
 * *total counts decoded bytes appended so far and must stay <= limit. */
int body_dec_write(struct body_dec *d, struct evbuffer *in, struct evbuffer *out,
    size_t *total, size_t limit);

/* At the end of the body: BODY_CORRUPT if the stream was truncated. An empty
 * body (no encoded byte at all) is BODY_OK. */
int body_dec_finish(struct body_dec *d);

void body_dec_free(struct body_dec *d);

#endif
