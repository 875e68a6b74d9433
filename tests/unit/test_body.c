/* test_body.c: gzip and deflate decoding: whole and split input, zlib and raw
 * deflate, concatenated members, corrupt and truncated streams, and a bomb
 * stopped at the limit after about limit bytes of work. */
#include <stdlib.h>
#include <time.h>

#define ZLIB_CONST
#include <zlib.h>

#include <event2/buffer.h>

#include "body.h"
#include "unit.h"

enum { RAW = -15, ZLIB = 15, GZIP = 31 };

/* Compresses n bytes of src (or n zero bytes when src is NULL) with the given
 * window bits; returns a malloc'd buffer and its size in *outlen. */
static unsigned char *
compress_with(const unsigned char *src, size_t n, int bits, size_t *outlen)
{
	static const unsigned char zeros[64 * 1024];
	size_t cap = n / 100 + 4096, done = 0;
	unsigned char *out = malloc(cap);
	z_stream z;
	int zr;

	memset(&z, 0, sizeof(z));
	if (deflateInit2(&z, 9, Z_DEFLATED, bits, 9, Z_DEFAULT_STRATEGY) != Z_OK)
		abort();
	if (src != NULL)
		cap = deflateBound(&z, n) + 64, out = realloc(out, cap);
	do {
		size_t k = n - done < sizeof(zeros) ? n - done : sizeof(zeros);
		z.next_in = src != NULL ? src + done : zeros;
		z.avail_in = (uInt)k;
		done += k;
		do {
			if (cap - z.total_out < 1024)
				out = realloc(out, cap *= 2);
			z.next_out = out + z.total_out;
			z.avail_out = (uInt)(cap - z.total_out);
			zr = deflate(&z, done == n ? Z_FINISH : Z_NO_FLUSH);
		} while (z.avail_out == 0 || (done == n && zr != Z_STREAM_END));
	} while (done < n);
	*outlen = z.total_out;
	deflateEnd(&z);
	return out;
}

static unsigned char *
sample(size_t n)
{
	unsigned char *s = malloc(n);

	for (size_t i = 0; i < n; i++)
		s[i] = (unsigned char)("The quick brown fox jumps over the lazy dog. "[i % 45] ^ (i / 4096));
	return s;
}

/* Decodes enc feeding it in pieces of step bytes; returns the final rc
 * (write failure or finish) and leaves the output in out. */
static int
decode(const char *coding, const unsigned char *enc, size_t n, size_t step, size_t limit,
    struct evbuffer *out, size_t *total)
{
	struct body_dec *d = body_dec_new(coding);
	struct evbuffer *in = evbuffer_new();
	int rc = BODY_OK, drained = 1;

	*total = 0;
	evbuffer_drain(out, evbuffer_get_length(out));
	for (size_t o = 0; o < n && rc == BODY_OK; o += step) {
		evbuffer_add(in, enc + o, n - o < step ? n - o : step);
		rc = body_dec_write(d, in, out, total, limit);
		drained &= evbuffer_get_length(in) == 0;
	}
	CHECK(drained);
	if (rc == BODY_OK)
		rc = body_dec_finish(d);
	body_dec_free(d);
	evbuffer_free(in);
	return rc;
}

static int
same(struct evbuffer *out, const unsigned char *want, size_t n)
{
	return evbuffer_get_length(out) == n &&
	    (n == 0 || memcmp(evbuffer_pullup(out, -1), want, n) == 0);
}

static void
test_new(void)
{
	struct body_dec *d;

	CHECK(body_dec_new(NULL) == NULL);
	CHECK(body_dec_new("identity") == NULL);
	CHECK(body_dec_new("br") == NULL);
	CHECK(body_dec_new("gzip, br") == NULL);
	CHECK(body_dec_new("") == NULL);
	CHECK(body_dec_new("gzipx") == NULL);
	CHECK((d = body_dec_new("gzip")) != NULL);
	body_dec_free(d);
	CHECK((d = body_dec_new(" GZip\t")) != NULL);
	body_dec_free(d);
	CHECK((d = body_dec_new("x-gzip")) != NULL);
	body_dec_free(d);
	CHECK((d = body_dec_new("Deflate")) != NULL);
	body_dec_free(d);
	body_dec_free(NULL);
}

static void
test_roundtrip(void)
{
	static const struct { const char *coding; int bits; } c[] = {
		{ "gzip", GZIP }, { "x-gzip", GZIP }, { "deflate", ZLIB }, { "deflate", RAW },
	};
	static const size_t steps[] = { 1, 2, 3, 7, 1000, 1 << 20 };
	struct evbuffer *out = evbuffer_new();
	size_t n = 300 * 1024, elen, total;
	unsigned char *src = sample(n), *enc;

	for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		enc = compress_with(src, n, c[i].bits, &elen);
		for (size_t j = 0; j < sizeof(steps) / sizeof(steps[0]); j++) {
			CHECK(decode(c[i].coding, enc, elen, steps[j], n, out, &total) == BODY_OK);
			CHECK(total == n);
			CHECK(same(out, src, n));
		}
		/* one byte under the decoded size is too large */
		CHECK(decode(c[i].coding, enc, elen, 4096, n - 1, out, &total) == BODY_TOO_LARGE);
		CHECK(total <= n - 1);
		free(enc);
	}

	/* empty content, and an empty body labelled gzip */
	enc = compress_with(src, 0, GZIP, &elen);
	CHECK(decode("gzip", enc, elen, 1, 0, out, &total) == BODY_OK);
	CHECK(total == 0);
	free(enc);
	CHECK(decode("gzip", (const unsigned char *)"", 0, 1, 10, out, &total) == BODY_OK);
	free(src);
	evbuffer_free(out);
}

/* Concatenated gzip members are all decoded; anything else after the end of
 * the stream is corrupt. */
static void
test_members(void)
{
	struct evbuffer *out = evbuffer_new();
	size_t alen, blen, total;
	unsigned char *a = compress_with((const unsigned char *)"hello, ", 7, GZIP, &alen);
	unsigned char *b = compress_with((const unsigned char *)"world", 5, GZIP, &blen);
	unsigned char *ab = malloc(alen + blen + 4);

	memcpy(ab, a, alen);
	memcpy(ab + alen, b, blen);
	CHECK(decode("gzip", ab, alen + blen, 1, 100, out, &total) == BODY_OK);
	CHECK(same(out, (const unsigned char *)"hello, world", 12));
	CHECK(decode("gzip", ab, alen + blen, 10000, 100, out, &total) == BODY_OK);
	CHECK(total == 12);
	/* a member cut short */
	CHECK(decode("gzip", ab, alen + blen - 3, 10000, 100, out, &total) == BODY_CORRUPT);
	/* garbage after a member */
	memcpy(ab + alen, "junk", 4);
	CHECK(decode("gzip", ab, alen + 4, 10000, 100, out, &total) == BODY_CORRUPT);
	CHECK(decode("gzip", ab, alen + 1, 1, 100, out, &total) == BODY_CORRUPT);
	free(a);
	free(b);
	a = compress_with((const unsigned char *)"hello", 5, ZLIB, &alen);
	memcpy(ab, a, alen);
	memcpy(ab + alen, "x", 1);
	CHECK(decode("deflate", ab, alen, 1, 100, out, &total) == BODY_OK);
	CHECK(decode("deflate", ab, alen + 1, 1, 100, out, &total) == BODY_CORRUPT);
	free(a);
	free(ab);
	evbuffer_free(out);
}

static void
test_corrupt(void)
{
	struct evbuffer *out = evbuffer_new();
	size_t n = 50000, elen, total;
	unsigned char *src = sample(n), *enc;

	enc = compress_with(src, n, GZIP, &elen);
	/* truncated at various points, including inside the header and trailer */
	static const size_t cut[] = { 1, 5, 10, 11, 100, 0 };
	for (size_t i = 0; i < sizeof(cut) / sizeof(cut[0]); i++) {
		size_t len = cut[i] ? cut[i] : elen - 4;
		CHECK(decode("gzip", enc, len, 3, n, out, &total) == BODY_CORRUPT);
	}
	CHECK(decode("gzip", enc, elen - 1, 10000, n, out, &total) == BODY_CORRUPT);
	/* a damaged CRC */
	enc[elen - 6] ^= 0xff;
	CHECK(decode("gzip", enc, elen, 10000, n, out, &total) == BODY_CORRUPT);
	enc[elen - 6] ^= 0xff;
	/* damaged magic */
	enc[0] = 0;
	CHECK(decode("gzip", enc, elen, 10000, n, out, &total) == BODY_CORRUPT);
	free(enc);

	/* not compressed at all */
	CHECK(decode("gzip", src, 1000, 100, n, out, &total) == BODY_CORRUPT);
	CHECK(decode("deflate", src, 1000, 100, n, out, &total) == BODY_CORRUPT);

	enc = compress_with(src, n, ZLIB, &elen);
	CHECK(decode("deflate", enc, elen - 2, 7, n, out, &total) == BODY_CORRUPT);
	CHECK(decode("deflate", enc, 1, 1, n, out, &total) == BODY_CORRUPT);
	free(enc);
	enc = compress_with(src, n, RAW, &elen);
	CHECK(decode("deflate", enc, elen / 2, 7, n, out, &total) == BODY_CORRUPT);
	free(enc);
	free(src);
	evbuffer_free(out);
}

/* 100 MB of zeros compress to about 100 KB; with a 1 MB limit the decoder
 * must stop after about 1 MB of output, having read only ~1 KB of input. */
static void
test_bomb(void)
{
	static const int kinds[] = { GZIP, ZLIB, RAW };
	static const char *const names[] = { "gzip", "deflate", "deflate" };
	size_t n = 100u * 1024 * 1024, limit = 1024 * 1024, elen, total;
	struct evbuffer *in = evbuffer_new(), *out = evbuffer_new();

	for (size_t k = 0; k < 3; k++) {
		unsigned char *enc = compress_with(NULL, n, kinds[k], &elen);
		struct body_dec *d = body_dec_new(names[k]);
		clock_t t0 = clock();
		int rc;

		CHECK(elen < 200 * 1024);
		evbuffer_drain(out, evbuffer_get_length(out));
		evbuffer_add(in, enc, elen);
		total = 0;
		rc = body_dec_write(d, in, out, &total, limit);
		CHECK(rc == BODY_TOO_LARGE);
		CHECK(total <= limit);
		CHECK(evbuffer_get_length(out) == total);
		CHECK(total > limit - 64 * 1024);
		CHECK(evbuffer_get_length(in) == 0);
		/* well under what decoding 100 MB would cost, even under ASan */
		CHECK((double)(clock() - t0) / CLOCKS_PER_SEC < 0.5);
		/* once over, it stays over */
		evbuffer_add(in, "x", 1);
		total = limit + 1;
		CHECK(body_dec_write(d, in, out, &total, limit) == BODY_TOO_LARGE);
		evbuffer_drain(in, evbuffer_get_length(in));
		body_dec_free(d);
		free(enc);
	}

	/* the limit is inclusive: exactly limit decoded bytes are fine */
	unsigned char *enc = compress_with(NULL, limit, GZIP, &elen);
	CHECK(decode("gzip", enc, elen, 999, limit, out, &total) == BODY_OK);
	CHECK(total == limit);
	CHECK(decode("gzip", enc, elen, 999, limit - 1, out, &total) == BODY_TOO_LARGE);
	CHECK(total <= limit - 1);
	CHECK(decode("gzip", enc, elen, 999, 0, out, &total) == BODY_TOO_LARGE);
	CHECK(total == 0 && evbuffer_get_length(out) == 0);
	free(enc);
	evbuffer_free(in);
	evbuffer_free(out);
}

int
main(void)
{
	test_new();
	test_roundtrip();
	test_members();
	test_corrupt();
	test_bomb();
	return UNIT_DONE();
}
