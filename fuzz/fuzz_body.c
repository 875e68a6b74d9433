/* fuzz_body.c: Content-Encoding decoding (body.c) of whatever an upstream
 * sends as a gzip or deflate body. The input's first byte picks the coding
 * (its low two bits: gzip, deflate, x-gzip, " Deflate ") and how the body
 * is cut and capped (its other bits); the rest is the encoded body.
 *
 * Beyond memory safety:
 * - decoding the body whole (one call, many chains) and in slices gives the
 *   same final status, and the same output; where the status is an error,
 *   one output is a prefix of the other (each stops where it saw the error)
 *   and neither passes the cap;
 * - a round trip: the rest compressed with zlib in the picked coding (gzip
 *   as two members, deflate zlib-wrapped or raw) decodes, whole and in
 *   slices, to exactly the rest, under a cap of exactly its length, and is
 *   refused as too large under a cap one byte shorter. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <zlib.h>

#include "body.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const codings[] = { "gzip", "deflate", "x-gzip", " Deflate " };

struct body_out {
	int status;
	struct evbuffer *out;
	size_t total;
};

static void
body_fail(const char *what, int a, int b)
{
	fprintf(stderr, "fuzz_body: %s (status %d and %d)\n", what, a, b);
	abort();
}

/* Slice lengths from 1 to 64, from a generator seeded by the flags byte:
 * the cuts are the input's, reproducibly. */
static size_t
body_next_cut(uint32_t *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 17;
	*x ^= *x << 5;
	return (*x & 63) + 1;
}

/* Decodes p[0..n) with coding; sliced: fed in cuts, else as one buffer of
 * many chains (the decoder peeks eight at a time). */
static void
body_decode(struct body_out *r, const char *coding, const uint8_t *p, size_t n, size_t limit,
    int sliced, uint32_t seed)
{
	struct body_dec *d = body_dec_new(coding);
	struct evbuffer *in = evbuffer_new();
	uint32_t x = seed | 1;
	size_t off = 0;

	if (d == NULL)
		abort();
	r->out = evbuffer_new();
	r->total = 0;
	r->status = BODY_OK;
	while (off < n) {
		size_t k = body_next_cut(&x);
		k = k < n - off ? k : n - off;
		evbuffer_add_reference(in, p + off, k, NULL, NULL);	/* a chain each */
		off += k;
		if (sliced && (r->status = body_dec_write(d, in, r->out, &r->total, limit)) != BODY_OK)
			break;
	}
	if (!sliced)
		r->status = body_dec_write(d, in, r->out, &r->total, limit);
	if (evbuffer_get_length(in) != 0)
		body_fail("input left undrained", r->status, 0);
	if (r->status == BODY_OK)
		r->status = body_dec_finish(d);
	if (r->total != evbuffer_get_length(r->out) || r->total > limit)
		body_fail("decoded count wrong or over the cap", r->status, 0);
	body_dec_free(d);
	evbuffer_free(in);
}

static void
body_compare(struct body_out *a, struct body_out *b)
{
	size_t na = evbuffer_get_length(a->out), nb = evbuffer_get_length(b->out);
	size_t n = na < nb ? na : nb;

	if (a->status != b->status)
		body_fail("whole and sliced end differently", a->status, b->status);
	if (a->status == BODY_OK && na != nb)
		body_fail("whole and sliced decode to different lengths", a->status, b->status);
	if (n > 0 && memcmp(evbuffer_pullup(a->out, (ev_ssize_t)n),
	    evbuffer_pullup(b->out, (ev_ssize_t)n), n) != 0)
		body_fail("whole and sliced decode to different bytes", a->status, b->status);
}

static void
body_free(struct body_out *r)
{
	evbuffer_free(r->out);
}

/* Compresses p[0..n) into one stream: windowBits as deflateInit2 takes
 * them (31 gzip, 15 zlib, -15 raw). */
static size_t
body_compress(uint8_t *dst, size_t room, const uint8_t *p, size_t n, int bits, int level)
{
	z_stream z;
	size_t got;

	memset(&z, 0, sizeof(z));
	if (deflateInit2(&z, level, Z_DEFLATED, bits, 8, Z_DEFAULT_STRATEGY) != Z_OK)
		abort();
	z.next_in = (Bytef *)(uintptr_t)p;
	z.avail_in = (uInt)n;
	z.next_out = dst;
	z.avail_out = (uInt)room;
	if (deflate(&z, Z_FINISH) != Z_STREAM_END)
		abort();
	got = room - z.avail_out;
	deflateEnd(&z);
	return got;
}

static void
body_round_trip(const char *coding, int gzip, const uint8_t *p, size_t n, uint8_t flags)
{
	int level = flags >> 4 < 10 ? flags >> 4 : 9;
	size_t room = 2 * (compressBound((uLong)n) + 64), len, cut;
	uint8_t *enc = malloc(room);
	struct body_out whole, sliced;

	if (gzip) {	/* two members, cut where the flags say */
		cut = n * ((flags >> 2) & 3) / 4;
		len = body_compress(enc, room, p, cut, 31, level);
		len += body_compress(enc + len, room - len, p + cut, n - cut, 31, level);
	} else
		len = body_compress(enc, room, p, n, flags & 4 ? 15 : -15, level);
	body_decode(&whole, coding, enc, len, n, 0, flags);
	body_decode(&sliced, coding, enc, len, n, 1, flags);
	if (whole.status != BODY_OK || sliced.status != BODY_OK)
		body_fail("own compression not decoded", whole.status, sliced.status);
	if (evbuffer_get_length(whole.out) != n ||
	    (n > 0 && memcmp(evbuffer_pullup(whole.out, -1), p, n) != 0))
		body_fail("round trip changed the bytes", whole.status, sliced.status);
	body_compare(&whole, &sliced);
	body_free(&whole);
	body_free(&sliced);
	if (n > 0) {
		body_decode(&whole, coding, enc, len, n - 1, 0, flags);
		body_decode(&sliced, coding, enc, len, n - 1, 1, flags);
		if (whole.status != BODY_TOO_LARGE || sliced.status != BODY_TOO_LARGE)
			body_fail("a cap one byte short not enforced", whole.status, sliced.status);
		body_compare(&whole, &sliced);
		body_free(&whole);
		body_free(&sliced);
	}
	free(enc);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct body_out whole, sliced;
	const char *coding;
	size_t limit;
	int gzip;

	if (size < 1)
		return 0;
	coding = codings[data[0] & 3];
	gzip = (data[0] & 1) == 0;
	/* a small cap (0..248) now and then, so that it bites mid-stream; else
	 * 64 KiB, four of body.c's steps */
	limit = data[0] & 0x80 ? (size_t)(data[0] & 0x7c) * 2 : 64 * 1024;
	body_decode(&whole, coding, data + 1, size - 1, limit, 0, data[0]);
	body_decode(&sliced, coding, data + 1, size - 1, limit, 1, data[0]);
	body_compare(&whole, &sliced);
	body_free(&whole);
	body_free(&sliced);
	body_round_trip(coding, gzip, data + 1, size - 1, data[0]);
	return 0;
}
