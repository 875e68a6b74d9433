/* body.c: Content-Encoding decoding (gzip, deflate) with zlib, writing
 * straight into the output evbuffer in bounded steps so that the size limit
 * stops a compression bomb after about limit bytes of work. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define ZLIB_CONST
#include <zlib.h>

#include <event2/buffer.h>

#include "body.h"

#define BODY_STEP	(16 * 1024)	/* decoded bytes per inflate() call */

enum body_kind {
	BODY_GZIP,
	BODY_DEFLATE,
};

struct body_dec {
	enum body_kind kind;
	z_stream z;
	int inited;		/* inflateInit2 done */
	int ended;		/* the current stream reached Z_STREAM_END */
	int seen_input;		/* any encoded byte at all arrived */
	unsigned char hdr[2];	/* deflate: the first bytes, held until we can tell the wrapping */
	size_t nhdr;
};

struct body_dec *
body_dec_new(const char *coding)
{
	struct body_dec *d;
	enum body_kind kind;
	size_t n;

	if (coding == NULL)
		return NULL;
	coding += strspn(coding, " \t");
	for (n = strlen(coding); n > 0 && (coding[n - 1] == ' ' || coding[n - 1] == '\t'); n--)
		;
	if ((n == 4 && strncasecmp(coding, "gzip", 4) == 0) ||
	    (n == 6 && strncasecmp(coding, "x-gzip", 6) == 0))
		kind = BODY_GZIP;
	else if (n == 7 && strncasecmp(coding, "deflate", 7) == 0)
		kind = BODY_DEFLATE;
	else
		return NULL;
	if ((d = calloc(1, sizeof(*d))) == NULL)
		return NULL;
	d->kind = kind;
	return d;
}

/* "deflate" is meant to be zlib-wrapped (RFC 9110 §8.4.1.2) but some servers
 * send raw deflate; like curl and browsers, take a valid zlib header as zlib
 * and anything else as raw. */
static int
body_zlib_header(const unsigned char *h)
{
	return (h[0] & 0x0f) == Z_DEFLATED && (h[0] >> 4) <= 7 && ((h[0] << 8) | h[1]) % 31 == 0;
}

static int
body_init(struct body_dec *d)
{
	int bits = d->kind == BODY_GZIP ? 15 + 16 : body_zlib_header(d->hdr) ? 15 : -15;

	if (inflateInit2(&d->z, bits) != Z_OK)
		return BODY_CORRUPT;
	d->inited = 1;
	return BODY_OK;
}

/* Whatever follows the end of a stream. Another gzip member is decoded like
 * the first (RFC 1952 §2.2 allows several, and gzip(1) reads them all);
 * anything else after the end, and anything after a deflate stream, is
 * corrupt rather than silently dropped. */
static int
body_after_end(struct body_dec *d)
{
	if (d->kind != BODY_GZIP || inflateReset(&d->z) != Z_OK)
		return BODY_CORRUPT;
	d->ended = 0;
	return BODY_OK;
}

/* Inflates n bytes at p into out, one bounded step at a time. The output
 * space offered is never more than one byte beyond what the limit allows,
 * so the moment the decoded size would pass it is seen at once. */
static int
body_feed(struct body_dec *d, const unsigned char *p, size_t n, struct evbuffer *out,
    size_t *total, size_t limit)
{
	struct evbuffer_iovec v;
	size_t room, want, got;
	int zr;

	d->z.next_in = p;
	d->z.avail_in = (uInt)n;
	for (;;) {
		if (d->ended) {
			if (d->z.avail_in == 0)
				return BODY_OK;
			if (body_after_end(d) != BODY_OK)
				return BODY_CORRUPT;
		}
		room = limit - *total;
		want = room < BODY_STEP ? room + 1 : BODY_STEP;
		if (evbuffer_reserve_space(out, (ev_ssize_t)want, &v, 1) < 1)
			return BODY_CORRUPT;	/* out of memory: no better kind to give */
		if (v.iov_len > want)
			v.iov_len = want;
		d->z.next_out = v.iov_base;
		d->z.avail_out = (uInt)v.iov_len;
		zr = inflate(&d->z, Z_NO_FLUSH);
		got = v.iov_len - d->z.avail_out;
		if (got > room) {
			evbuffer_commit_space(out, &v, 0);
			return BODY_TOO_LARGE;
		}
		v.iov_len = got;
		evbuffer_commit_space(out, &v, got > 0 ? 1 : 0);
		*total += got;
		if (zr == Z_STREAM_END)
			d->ended = 1;
		else if (zr != Z_OK && zr != Z_BUF_ERROR)
			return BODY_CORRUPT;
		/* all input taken and room left over: zlib holds nothing back */
		if (!d->ended && d->z.avail_in == 0 && d->z.avail_out > 0)
			return BODY_OK;
	}
}

/* Feeds one contiguous span, in pieces zlib's uInt counters can hold, first
 * holding back a deflate stream's opening bytes until its wrapping is known. */
static int
body_span(struct body_dec *d, const unsigned char *p, size_t n, struct evbuffer *out,
    size_t *total, size_t limit)
{
	int rc;

	if (n > 0)
		d->seen_input = 1;
	if (!d->inited && d->kind == BODY_DEFLATE) {
		while (n > 0 && d->nhdr < sizeof(d->hdr)) {
			d->hdr[d->nhdr++] = *p++;
			n--;
		}
		if (d->nhdr < sizeof(d->hdr))
			return BODY_OK;
		if ((rc = body_init(d)) != BODY_OK ||
		    (rc = body_feed(d, d->hdr, d->nhdr, out, total, limit)) != BODY_OK)
			return rc;
	} else if (!d->inited && (rc = body_init(d)) != BODY_OK)
		return rc;
	while (n > 0) {
		size_t k = n > UINT_MAX ? UINT_MAX : n;
		if ((rc = body_feed(d, p, k, out, total, limit)) != BODY_OK)
			return rc;
		p += k;
		n -= k;
	}
	return BODY_OK;
}

int
body_dec_write(struct body_dec *d, struct evbuffer *in, struct evbuffer *out, size_t *total,
    size_t limit)
{
	struct evbuffer_iovec v[8];
	int rc = BODY_OK;

	if (*total > limit)
		return BODY_TOO_LARGE;
	while (rc == BODY_OK && evbuffer_get_length(in) > 0) {
		int nv = evbuffer_peek(in, -1, NULL, v, 8);
		size_t used = 0;
		if (nv > 8)
			nv = 8;
		for (int i = 0; i < nv && rc == BODY_OK; i++) {
			rc = body_span(d, v[i].iov_base, v[i].iov_len, out, total, limit);
			used += v[i].iov_len;
		}
		evbuffer_drain(in, used);
	}
	if (rc != BODY_OK)
		evbuffer_drain(in, evbuffer_get_length(in));
	return rc;
}

int
body_dec_finish(struct body_dec *d)
{
	if (!d->seen_input)
		return BODY_OK;	/* an empty body labelled gzip: nothing to decode */
	return d->ended ? BODY_OK : BODY_CORRUPT;
}

void
body_dec_free(struct body_dec *d)
{
	if (d == NULL)
		return;
	if (d->inited)
		inflateEnd(&d->z);
	free(d);
}
