/* fuzz_request.c: the request reader (h1_parse_request, then h1_body_read
 * by the framing it chose) on any bytes a caller could send. Beyond memory
 * safety, it checks that the reader does not depend on how the bytes
 * arrive: the input parsed whole and the same input fed in slices give the
 * same result (codes and whys, method, target, headers, framing, body
 * bytes and what is left over), and that an accepted head is one the
 * server can act on (a request's framing, HTTP/1.0 or 1.1).
 *
 * Input: byte 0 says how many of the next bytes (0..15) are slice lengths
 * (each 1..256, used in turn); the rest is what the caller sends. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "h1.h"

#define MAX_HEAD 4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct run {
	struct h1_head h;
	int rc;			/* of the head */
	const char *why;
	int brc;		/* of the body, once the head is in */
	const char *bwhy;
	struct evbuffer *body;	/* payload read */
	struct evbuffer *rest;	/* left in the buffer, and never fed */
};

static void
fail(const char *what)
{
	fprintf(stderr, "fuzz_request: %s\n", what);
	abort();
}

/* Appends the next slice of msg to in; returns its length. No cuts: all. */
static size_t
feed(struct evbuffer *in, const uint8_t *msg, size_t size, size_t off, const uint8_t *cuts,
    size_t ncuts, size_t *k)
{
	size_t n = ncuts == 0 ? size - off : (size_t)cuts[(*k)++ % ncuts] + 1;

	if (n > size - off)
		n = size - off;
	evbuffer_add(in, msg + off, n);
	return n;
}

static void
run(struct run *r, const uint8_t *msg, size_t size, const uint8_t *cuts, size_t ncuts)
{
	struct evbuffer *in = evbuffer_new();
	struct h1_body b;
	size_t off = 0, k = 0;

	memset(r, 0, sizeof(*r));
	r->body = evbuffer_new();
	r->rest = evbuffer_new();
	r->brc = H1_AGAIN;
	do {
		off += feed(in, msg, size, off, cuts, ncuts, &k);
		r->rc = h1_parse_request(in, MAX_HEAD, &r->h, &r->why);
	} while (r->rc == H1_AGAIN && off < size);
	if (r->rc == H1_DONE) {
		h1_body_init(&b, &r->h);
		for (;;) {
			r->brc = h1_body_read(&b, in, r->body, 0, &r->bwhy);
			if (r->brc != H1_AGAIN || off == size)
				break;
			off += feed(in, msg, size, off, cuts, ncuts, &k);
		}
	}
	evbuffer_add_buffer(r->rest, in);
	evbuffer_add(r->rest, msg + off, size - off);
	evbuffer_free(in);
}

static int
same_str(const char *a, const char *b)
{
	return a == b || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static int
same_buf(struct evbuffer *a, struct evbuffer *b)
{
	size_t n = evbuffer_get_length(a);

	return n == evbuffer_get_length(b) &&
	    (n == 0 || memcmp(evbuffer_pullup(a, -1), evbuffer_pullup(b, -1), n) == 0);
}

/* What the server relies on in an accepted request head. */
static void
check_head(const struct run *r)
{
	const struct h1_head *h = &r->h;

	if (h->method == NULL || h->method[0] == '\0' || h->target == NULL || h->target[0] == '\0')
		fail("accepted without a method or a target");
	for (const char *t = h->target; *t != '\0'; t++)
		if ((unsigned char)*t <= 0x20 || (unsigned char)*t >= 0x7f)
			fail("accepted a target with a space or control byte");
	if (h->minor != 0 && h->minor != 1)
		fail("accepted a version other than 1.0 and 1.1");
	if (h->framing != H1_NOBODY && h->framing != H1_LENGTH && h->framing != H1_CHUNKED)
		fail("a request framed to the close");
	if (h->framing != H1_LENGTH && h->length != 0)
		fail("a length without Content-Length framing");
	if (h->nheaders > H1_MAX_HEADERS)
		fail("more headers than H1_MAX_HEADERS");
	if (h->framing == H1_NOBODY && (r->brc != H1_DONE || evbuffer_get_length(r->body) != 0))
		fail("a body read for a request without one");
	if (h->framing == H1_LENGTH && r->brc == H1_DONE &&
	    evbuffer_get_length(r->body) != h->length)
		fail("a Content-Length body of another length");
	if (r->brc == H1_ERROR && r->bwhy == NULL)
		fail("a body refused without a why");
}

static void
compare(const struct run *a, const struct run *b)
{
	if (a->rc != b->rc)
		fail("head: whole and sliced disagree on the result");
	if (a->rc < 0 && !same_str(a->why, b->why))
		fail("head: whole and sliced refuse for different reasons");
	if (a->rc == H1_DONE) {
		if (!same_str(a->h.method, b->h.method) || !same_str(a->h.target, b->h.target) ||
		    a->h.minor != b->h.minor)
			fail("request line: whole and sliced disagree");
		if (a->h.nheaders != b->h.nheaders)
			fail("header count: whole and sliced disagree");
		for (size_t i = 0; i < a->h.nheaders; i++)
			if (!same_str(a->h.headers[i].name, b->h.headers[i].name) ||
			    !same_str(a->h.headers[i].value, b->h.headers[i].value))
				fail("a header: whole and sliced disagree");
		if (a->h.framing != b->h.framing || a->h.length != b->h.length ||
		    a->h.keep_alive != b->h.keep_alive)
			fail("framing: whole and sliced disagree");
		if (!same_str(a->h.content_encoding, b->h.content_encoding))
			fail("content encoding: whole and sliced disagree");
		if (a->brc != b->brc)
			fail("body: whole and sliced disagree on the result");
		if (a->brc == H1_ERROR && !same_str(a->bwhy, b->bwhy))
			fail("body: whole and sliced refuse for different reasons");
		if (!same_buf(a->body, b->body))
			fail("body: whole and sliced read different bytes");
	}
	if (!same_buf(a->rest, b->rest))
		fail("whole and sliced leave different bytes over");
}

static void
done(struct run *r)
{
	h1_head_clear(&r->h);
	evbuffer_free(r->body);
	evbuffer_free(r->rest);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct run whole, sliced;
	size_t ncuts;

	if (size < 1)
		return 0;
	ncuts = data[0] % 16;
	if (size < 1 + ncuts)
		return 0;
	run(&whole, data + 1 + ncuts, size - 1 - ncuts, NULL, 0);
	run(&sliced, data + 1 + ncuts, size - 1 - ncuts, ncuts > 0 ? data + 1 : (const uint8_t *)"",
	    1);
	if (whole.rc == H1_DONE)
		check_head(&whole);
	compare(&whole, &sliced);
	done(&whole);
	done(&sliced);
	return 0;
}
