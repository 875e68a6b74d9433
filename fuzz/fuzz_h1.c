/* fuzz_h1.c: the HTTP/1.1 response reader (h1.c) on any bytes an upstream
 * could send: heads (interim 1xx ones skipped, as upstream.c does), then
 * the body by the framing the final head chose. The same bytes are read
 * twice, whole and in slices, and must give the same result: the same heads,
 * the same payload, the same end and the same message.
 *
 * Input: a flags byte (0x80: the request was HEAD; 0x40: take a Content-
 * Length body past the reader where it allows, as upstream.c's skim does;
 * low four bits: k), k slice lengths (each byte + 1, used in turn; k = 0
 * slices byte by byte), then the response. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "h1.h"

#define FUZZ_MAX_HEAD	4096
#define FUZZ_MAX_HEADS	8	/* heads kept for the comparison */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct h1_run {
	struct h1_head heads[FUZZ_MAX_HEADS];
	size_t nheads;
	int head_rc;		/* the last h1_parse_head's */
	int body_rc;		/* h1_body_read's last, or H1_AGAIN if never read */
	const char *why;
	struct evbuffer *payload;
	size_t left;		/* bytes left in the input buffer at the end */
};

struct h1_input {
	const uint8_t *msg;
	size_t len;
	int head_request, skip;
	const uint8_t *steps;
	size_t nsteps;
};

static void
h1_fail(const char *what)
{
	fprintf(stderr, "fuzz_h1: whole and sliced differ: %s\n", what);
	abort();
}

/* Reads heads off in; returns 1 when a final head is in (heads[nheads - 1]),
 * 0 when more input is needed, -1 when the reader refused. */
static int
h1_heads(struct h1_run *r, struct evbuffer *in, int head_request)
{
	struct h1_head h;

	for (;;) {
		r->head_rc = h1_parse_head(in, FUZZ_MAX_HEAD, head_request, &h, &r->why);
		if (r->head_rc == H1_AGAIN)
			return 0;
		if (r->head_rc != H1_DONE)
			return -1;
		if (r->nheads == FUZZ_MAX_HEADS)
			h1_head_clear(&r->heads[--r->nheads]);	/* keep the first ones and the last */
		r->heads[r->nheads++] = h;
		if (h.status >= 200)
			return 1;
		if (h.status == 101)
			return -1;
	}
}

/* Feeds msg in slices of the given lengths (in turn), as a connection's
 * reads would deliver it; nsteps 0 is the whole at once. */
static void
h1_read(struct h1_run *r, const struct h1_input *x, int sliced)
{
	struct evbuffer *in = evbuffer_new();
	struct h1_body body;
	size_t off = 0, step = 0;
	int st = 0;	/* 0: heads, 1: body, 2: over */

	memset(r, 0, sizeof(*r));
	r->head_rc = H1_AGAIN;
	r->body_rc = H1_AGAIN;
	r->payload = evbuffer_new();
	for (;;) {
		size_t n = x->len - off;
		int eof;

		if (sliced) {
			size_t want = x->nsteps > 0 ? (size_t)x->steps[step++ % x->nsteps] + 1 : 1;
			n = n < want ? n : want;
		}
		/* A Content-Length body may be taken past the reader when the
		 * buffer holds nothing of it (upstream.c's skim, MSG_TRUNC). */
		if (sliced && x->skip && st == 1 && evbuffer_get_length(in) == 0 &&
		    h1_body_skippable(&body) > 0 && n > 0) {
			uint64_t k = h1_body_skippable(&body);
			size_t take = k < n ? (size_t)k : n;
			evbuffer_add(r->payload, x->msg + off, take);
			off += take;
			if (h1_body_skipped(&body, take) == H1_DONE) {
				r->body_rc = H1_DONE;
				break;
			}
			if (off == x->len) {	/* the peer closed: as the whole read sees it */
				r->body_rc = h1_body_read(&body, in, r->payload, 1, &r->why);
				break;
			}
			continue;
		}
		evbuffer_add(in, x->msg + off, n);
		off += n;
		eof = off == x->len;
		if (st == 0) {
			int rc = h1_heads(r, in, x->head_request);
			if (rc < 0)
				break;
			if (rc == 1) {
				h1_body_init(&body, &r->heads[r->nheads - 1]);
				st = 1;
			}
		}
		if (st == 1) {
			r->body_rc = h1_body_read(&body, in, r->payload, eof, &r->why);
			if (r->body_rc != H1_AGAIN)
				st = 2;
		}
		if (st == 2 || eof)
			break;
	}
	r->left = evbuffer_get_length(in) + (x->len - off);
	evbuffer_free(in);
}

static int
h1_same_head(const struct h1_head *a, const struct h1_head *b)
{
	if (a->status != b->status || a->minor != b->minor || a->framing != b->framing ||
	    a->length != b->length || a->keep_alive != b->keep_alive ||
	    a->nheaders != b->nheaders || a->blocklen != b->blocklen ||
	    memcmp(a->block, b->block, a->blocklen) != 0 ||
	    (a->content_encoding == NULL) != (b->content_encoding == NULL) ||
	    (a->content_encoding != NULL && strcmp(a->content_encoding, b->content_encoding) != 0))
		return 0;
	for (size_t i = 0; i < a->nheaders; i++) {
		const struct h1_header *x = &a->headers[i], *y = &b->headers[i];
		if (x->namelen != y->namelen || x->valuelen != y->valuelen ||
		    memcmp(x->name, y->name, x->namelen) != 0 ||
		    memcmp(x->value, y->value, x->valuelen) != 0)
			return 0;
	}
	return (h1_find(a, "Content-Encoding") == NULL) == (h1_find(b, "content-encoding") == NULL);
}

static void
h1_compare(struct h1_run *a, struct h1_run *b)
{
	size_t n = evbuffer_get_length(a->payload);

	if (a->nheads != b->nheads)
		h1_fail("number of heads");
	for (size_t i = 0; i < a->nheads; i++)
		if (!h1_same_head(&a->heads[i], &b->heads[i]))
			h1_fail("a head");
	if (a->head_rc != b->head_rc)
		h1_fail("the head reader's result");
	if (a->body_rc != b->body_rc)
		h1_fail("the body reader's result");
	if ((a->head_rc < 0 || a->body_rc < 0) && strcmp(a->why, b->why) != 0)
		h1_fail("the error message");
	if (n != evbuffer_get_length(b->payload) ||
	    (n > 0 && memcmp(evbuffer_pullup(a->payload, -1), evbuffer_pullup(b->payload, -1), n) != 0))
		h1_fail("the payload");
	if (a->body_rc == H1_DONE && a->left != b->left)
		h1_fail("the bytes left after the body");
}

static void
h1_run_free(struct h1_run *r)
{
	for (size_t i = 0; i < r->nheads; i++)
		h1_head_clear(&r->heads[i]);
	evbuffer_free(r->payload);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct h1_input x;
	struct h1_run whole, sliced;

	if (size < 1 || size < 1 + (size_t)(data[0] & 15))
		return 0;
	x.head_request = (data[0] & 0x80) != 0;
	x.skip = (data[0] & 0x40) != 0;
	x.nsteps = data[0] & 15;
	x.steps = data + 1;
	x.msg = data + 1 + x.nsteps;
	x.len = size - 1 - x.nsteps;
	h1_read(&whole, &x, 0);
	h1_read(&sliced, &x, 1);
	h1_compare(&whole, &sliced);
	h1_run_free(&whole);
	h1_run_free(&sliced);
	return 0;
}
