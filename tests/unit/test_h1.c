/* test_h1.c: the response reader: heads, framing decisions, every anomaly
 * refused, and bodies read whole and one byte at a time; and the request
 * reader (h1_parse_request): the forms accepted, each one refused and why,
 * versions, leading empty lines, persistence and a request body's framing. */
#include <stdlib.h>

#include <event2/buffer.h>

#include "h1.h"
#include "unit.h"

#define MAX_HEAD (64 * 1024)

static const char *why;

/* Feeds s whole and parses the head; returns the result code. */
static int
head(const char *s, int head_request, struct h1_head *h)
{
	struct evbuffer *b = evbuffer_new();
	int rc;

	evbuffer_add(b, s, strlen(s));
	why = NULL;
	rc = h1_parse_head(b, MAX_HEAD, head_request, h, &why);
	evbuffer_free(b);
	return rc;
}

/* Expects the head in s to be refused with rc and msg. */
static void
refused(const char *s, int want, const char *msg)
{
	struct h1_head h;
	int rc = head(s, 0, &h);

	if (rc != want)
		fprintf(stderr, "for %s: rc %d, why %s\n", s, rc, why ? why : "(null)");
	CHECK(rc == want);
	CHECK_STR(why, msg);
	CHECK(h.block == NULL && h.headers == NULL);
	h1_head_clear(&h);
}

/* Expects s to parse with framing f and keep-alive ka. */
static void
framed(const char *s, int head_request, enum h1_framing f, int ka)
{
	struct h1_head h;
	int rc = head(s, head_request, &h);

	if (rc != H1_DONE)
		fprintf(stderr, "for %s: rc %d, why %s\n", s, rc, why ? why : "(null)");
	CHECK(rc == H1_DONE);
	CHECK(h.framing == f);
	CHECK(h.keep_alive == ka);
	h1_head_clear(&h);
}

/* Reads a whole body in one go from s (after a parsed head). */
static int
body(const struct h1_head *h, const char *s, size_t n, int eof, struct evbuffer *out)
{
	struct evbuffer *in = evbuffer_new();
	struct h1_body b;
	int rc;

	evbuffer_add(in, s, n);
	h1_body_init(&b, h);
	why = NULL;
	rc = h1_body_read(&b, in, out, eof, &why);
	evbuffer_free(in);
	return rc;
}

static int
out_is(struct evbuffer *out, const char *want)
{
	size_t n = evbuffer_get_length(out);

	return n == strlen(want) && memcmp(evbuffer_pullup(out, -1), want, n) == 0;
}

static void
test_simple(void)
{
	struct evbuffer *in = evbuffer_new(), *out = evbuffer_new();
	const char *s = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
	    "Content-Length:   5  \r\nX-Empty:\r\nX-Tab:\tv a l\t\r\n\r\nhelloEXTRA";
	const struct h1_header *f;
	struct h1_head h;
	struct h1_body b;

	evbuffer_add(in, s, strlen(s));
	CHECK(h1_parse_head(in, MAX_HEAD, 0, &h, &why) == H1_DONE);
	CHECK(h.status == 200);
	CHECK(h.minor == 1);
	CHECK(h.nheaders == 4);
	CHECK(h.framing == H1_LENGTH);
	CHECK(h.length == 5);
	CHECK(h.keep_alive == 1);
	CHECK(h.content_encoding == NULL);
	CHECK((f = h1_find(&h, "content-TYPE")) != NULL);
	CHECK(f != NULL && f->namelen == 12 && memcmp(f->name, "Content-Type", 12) == 0);
	CHECK(f != NULL && f->valuelen == 10 && memcmp(f->value, "text/plain", 10) == 0);
	CHECK_STR(f != NULL ? f->value : NULL, "text/plain");
	CHECK((f = h1_find(&h, "content-length")) != NULL && f->valuelen == 1);
	CHECK((f = h1_find(&h, "x-empty")) != NULL && f->valuelen == 0);
	CHECK((f = h1_find(&h, "x-tab")) != NULL && f->valuelen == 5);
	CHECK(h1_find(&h, "x-missing") == NULL);
	CHECK(h1_find(&h, "content") == NULL);
	CHECK(evbuffer_get_length(in) == 10);	/* the head alone was taken */

	h1_body_init(&b, &h);
	CHECK(h1_body_read(&b, in, out, 0, &why) == H1_DONE);
	CHECK(out_is(out, "hello"));
	CHECK(evbuffer_get_length(in) == 5);	/* "EXTRA" is left for the caller */
	CHECK(h1_body_read(&b, in, out, 0, &why) == H1_DONE);
	h1_head_clear(&h);
	h1_head_clear(&h);
	evbuffer_free(in);
	evbuffer_free(out);
}

static void
test_status_lines(void)
{
	struct h1_head h;

	CHECK(head("HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n", 0, &h) == H1_DONE);
	CHECK(h.status == 404 && h.minor == 0 && h.keep_alive == 0 && h.framing == H1_LENGTH);
	h1_head_clear(&h);
	CHECK(head("HTTP/1.1 599\r\n\r\n", 0, &h) == H1_DONE);
	CHECK(h.status == 599 && h.nheaders == 0 && h.framing == H1_CLOSE);
	h1_head_clear(&h);
	CHECK(head("HTTP/1.1 200 \r\n\r\n", 0, &h) == H1_DONE);
	h1_head_clear(&h);
	CHECK(head("HTTP/1.1 200 OK \xe9t\xe9\r\n\r\n", 0, &h) == H1_DONE);
	h1_head_clear(&h);

	refused("HTTP/2 200\r\n\r\n", H1_ERROR, "malformed status line");
	refused("HTTP/1.2 200\r\n\r\n", H1_ERROR, "malformed status line");
	refused("http/1.1 200\r\n\r\n", H1_ERROR, "malformed status line");
	refused("HTTP/1.1  200\r\n\r\n", H1_ERROR, "malformed status line");
	refused("HTTP/1.1 20\r\n\r\n", H1_ERROR, "malformed status line");
	refused("HTTP/1.1 2000\r\n\r\n", H1_ERROR, "malformed status line");
	refused("HTTP/1.1 099 Low\r\n\r\n", H1_ERROR, "malformed status line");
	refused("HTTP/1.1 20x OK\r\n\r\n", H1_ERROR, "malformed status line");
	refused("HTTP/1.1 200 O\001K\r\n\r\n", H1_ERROR, "malformed status line");
	refused("SSH-2.0-OpenSSH", H1_ERROR, "malformed status line");	/* at once */
	refused("\r\nHTTP/1.1 200 OK\r\n\r\n", H1_ERROR, "malformed status line");
}

static void
test_anomalies(void)
{
	refused("HTTP/1.1 200 OK\nContent-Length: 0\n\n", H1_ERROR, "bare LF in response head");
	refused("HTTP/1.1 200 OK\r\nA: b\nC: d\r\n\r\n", H1_ERROR, "bare LF in response head");
	refused("HTTP/1.1 200 OK\r\nA: b\rC: d\r\n\r\n", H1_ERROR, "bare CR in response head");
	refused("HTTP/1.1 200 OK\r\nA: b\r\n\n", H1_ERROR, "bare LF in response head");
	refused("HTTP/1.1 200 OK\r\nA: b\r\n  folded\r\n\r\n", H1_ERROR,
	    "obsolete line folding in response head");
	refused("HTTP/1.1 200 OK\r\nA: b\r\n\tfolded\r\n\r\n", H1_ERROR,
	    "obsolete line folding in response head");
	refused("HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\nhello", H1_ERROR,
	    "malformed header field name");
	refused("HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n", H1_ERROR, "malformed header field name");
	refused("HTTP/1.1 200 OK\r\n: x\r\n\r\n", H1_ERROR, "malformed header field name");
	refused("HTTP/1.1 200 OK\r\nNoColon\r\n\r\n", H1_ERROR, "malformed header field name");
	refused("HTTP/1.1 200 OK\r\nA\"b: x\r\n\r\n", H1_ERROR, "malformed header field name");
	refused("HTTP/1.1 200 OK\r\nA: x\001y\r\n\r\n", H1_ERROR, "control character in header value");
	refused("HTTP/1.1 200 OK\r\nA: x\x7fy\r\n\r\n", H1_ERROR, "control character in header value");

	refused("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
	    H1_ERROR, "both Transfer-Encoding and Content-Length");
	refused("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
	    H1_ERROR, "both Transfer-Encoding and Content-Length");
	refused("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", H1_ERROR,
	    "Transfer-Encoding other than chunked");
	refused("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", H1_ERROR,
	    "Transfer-Encoding other than chunked");
	refused("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", H1_ERROR,
	    "Transfer-Encoding other than chunked");
	refused("HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\n", H1_ERROR,
	    "Transfer-Encoding other than chunked");
	refused("HTTP/1.1 200 OK\r\nTransfer-Encoding:\r\n\r\n", H1_ERROR,
	    "Transfer-Encoding other than chunked");
	refused("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
	    H1_ERROR, "more than one Transfer-Encoding header");
	refused("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", H1_ERROR,
	    "Transfer-Encoding in an HTTP/1.0 response");
	refused("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", H1_ERROR,
	    "more than one Content-Length header");
	refused("HTTP/1.1 200 OK\r\nContent-Length: 5\r\ncontent-length: 6\r\n\r\n", H1_ERROR,
	    "more than one Content-Length header");
	refused("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n", H1_ERROR, "invalid Content-Length");
	refused("HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n", H1_ERROR, "invalid Content-Length");
	refused("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", H1_ERROR, "invalid Content-Length");
	refused("HTTP/1.1 200 OK\r\nContent-Length: 1 2\r\n\r\n", H1_ERROR, "invalid Content-Length");
	refused("HTTP/1.1 200 OK\r\nContent-Length: 0x10\r\n\r\n", H1_ERROR, "invalid Content-Length");
	refused("HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n", H1_ERROR, "invalid Content-Length");
	refused("HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551616\r\n\r\n", H1_ERROR,
	    "invalid Content-Length");
	/* anomalies count even where no body is read */
	refused("HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
	    H1_ERROR, "more than one Content-Length header");

	struct h1_head h;
	CHECK(head("HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551615\r\n\r\n", 0, &h) ==
	    H1_DONE);
	CHECK(h.length == UINT64_MAX);
	h1_head_clear(&h);
	CHECK(head("HTTP/1.1 200 OK\r\nTransfer-Encoding: CHUNKED\r\n\r\n", 0, &h) == H1_DONE);
	CHECK(h.framing == H1_CHUNKED);
	h1_head_clear(&h);
}

static void
test_limits(void)
{
	struct evbuffer *b = evbuffer_new();
	struct h1_head h;
	char line[64];

	/* no end within max_bytes */
	evbuffer_add_printf(b, "HTTP/1.1 200 OK\r\n");
	while (evbuffer_get_length(b) < 200)
		evbuffer_add_printf(b, "X-Pad: 0123456789\r\n");
	CHECK(h1_parse_head(b, 200, 0, &h, &why) == H1_TOO_BIG);
	CHECK(h1_parse_head(b, 1000, 0, &h, &why) == H1_AGAIN);
	evbuffer_add_printf(b, "\r\n");
	CHECK(h1_parse_head(b, evbuffer_get_length(b) - 1, 0, &h, &why) == H1_TOO_BIG);
	CHECK(h1_parse_head(b, evbuffer_get_length(b), 0, &h, &why) == H1_DONE);
	CHECK(evbuffer_get_length(b) == 0);
	h1_head_clear(&h);

	/* H1_MAX_HEADERS fit, one more does not */
	evbuffer_add_printf(b, "HTTP/1.1 200 OK\r\n");
	for (int i = 0; i < H1_MAX_HEADERS; i++)
		evbuffer_add_printf(b, "X-%d: %d\r\n", i, i);
	evbuffer_add_printf(b, "\r\n");
	CHECK(h1_parse_head(b, MAX_HEAD, 0, &h, &why) == H1_DONE);
	CHECK(h.nheaders == H1_MAX_HEADERS);
	snprintf(line, sizeof(line), "X-%d", H1_MAX_HEADERS - 1);
	CHECK(h1_find(&h, line) != NULL);
	h1_head_clear(&h);
	evbuffer_add_printf(b, "HTTP/1.1 200 OK\r\n");
	for (int i = 0; i <= H1_MAX_HEADERS; i++)
		evbuffer_add_printf(b, "X-%d: %d\r\n", i, i);
	evbuffer_add_printf(b, "\r\n");
	CHECK(h1_parse_head(b, MAX_HEAD, 0, &h, &why) == H1_TOO_BIG);
	CHECK_STR(why, "too many header fields");
	evbuffer_free(b);
}

static void
test_framing(void)
{
	framed("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", 1, H1_NOBODY, 1);
	framed("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 1, H1_NOBODY, 1);
	framed("HTTP/1.1 200 OK\r\n\r\n", 1, H1_NOBODY, 1);
	framed("HTTP/1.1 204 No Content\r\n\r\n", 0, H1_NOBODY, 1);
	framed("HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\n\r\n", 0, H1_NOBODY, 1);
	framed("HTTP/1.1 100 Continue\r\n\r\n", 0, H1_NOBODY, 1);
	framed("HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n", 0, H1_NOBODY, 1);
	framed("HTTP/1.1 200 OK\r\n\r\n", 0, H1_CLOSE, 0);
	framed("HTTP/1.1 200 OK\r\nConnection: keep-alive\r\n\r\n", 0, H1_CLOSE, 0);
	framed("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", 0, H1_LENGTH, 0);
	framed("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: Upgrade, CLOSE\r\n\r\n", 0,
	    H1_LENGTH, 0);
	framed("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: closed\r\n\r\n", 0, H1_LENGTH, 1);
	framed("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: a\r\nConnection: close\r\n\r\n", 0,
	    H1_LENGTH, 0);
	framed("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", 0, H1_LENGTH, 0);
	framed("HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: Keep-Alive\r\n\r\n", 0,
	    H1_LENGTH, 1);
	framed("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n", 0, H1_CLOSE, 0);
	framed("HTTP/1.0 204 OK\r\nConnection: keep-alive, close\r\n\r\n", 0, H1_NOBODY, 0);
	framed("HTTP/1.1 200 OK\r\nContent-Length: 007\r\n\r\n", 0, H1_LENGTH, 1);
}

static void
test_content_encoding(void)
{
	struct h1_head h;

	CHECK(head("HTTP/1.1 200 OK\r\nContent-Encoding:  gzip \r\nContent-Length: 0\r\n\r\n", 0,
	    &h) == H1_DONE);
	CHECK_STR(h.content_encoding, "gzip");
	h1_head_clear(&h);
	CHECK(head("HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nX: y\r\ncontent-encoding: br\r\n"
	    "Content-Encoding: deflate\r\nContent-Length: 0\r\n\r\n", 0, &h) == H1_DONE);
	CHECK_STR(h.content_encoding, "gzip, br, deflate");
	CHECK_STR(h1_find(&h, "content-encoding")->value, "gzip");
	h1_head_clear(&h);
}

/* The head and the body fed one byte at a time. */
static void
test_incremental(void)
{
	const char *s = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Encoding: gzip\r\n\r\n"
	    "5;name=\"val\"\r\nhello\r\n1A\r\n abcdefghijklmnopqrstuvwxy\r\n0\r\n"
	    "Trailer-A: 1\r\nTrailer-B: 2\r\n\r\nNEXT";
	struct evbuffer *in = evbuffer_new(), *out = evbuffer_new();
	size_t i = 0, n = strlen(s);
	struct h1_head h;
	struct h1_body b;
	int rc = H1_AGAIN;

	while (i < n && rc == H1_AGAIN) {
		evbuffer_add(in, s + i++, 1);
		rc = h1_parse_head(in, MAX_HEAD, 0, &h, &why);
	}
	CHECK(rc == H1_DONE);
	CHECK(i == (size_t)(strstr(s, "\r\n\r\n") + 4 - s));
	CHECK(h.framing == H1_CHUNKED);
	CHECK_STR(h.content_encoding, "gzip");
	CHECK(evbuffer_get_length(in) == 0);
	h1_body_init(&b, &h);
	rc = H1_AGAIN;
	while (i < n && rc == H1_AGAIN) {
		evbuffer_add(in, s + i++, 1);
		rc = h1_body_read(&b, in, out, 0, &why);
	}
	CHECK(rc == H1_DONE);
	CHECK(out_is(out, "hello abcdefghijklmnopqrstuvwxy"));
	CHECK(i == n - 4);
	h1_head_clear(&h);
	evbuffer_free(in);
	evbuffer_free(out);
}

static void
test_bodies(void)
{
	struct evbuffer *out = evbuffer_new();
	struct h1_head h;

	CHECK(head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 0, &h) == H1_DONE);
#define CHUNKED(s, want_rc, want_why) do { \
	evbuffer_drain(out, evbuffer_get_length(out)); \
	CHECK(body(&h, s, sizeof(s) - 1, 0, out) == (want_rc)); \
	if (want_why != NULL) CHECK_STR(why, want_why); \
} while (0)
	CHUNKED("3\r\nabc\r\n0\r\n\r\n", H1_DONE, NULL);
	CHECK(out_is(out, "abc"));
	CHUNKED("A;x=1;y\r\n0123456789\r\n00\r\n\r\n", H1_DONE, NULL);
	CHECK(out_is(out, "0123456789"));
	CHUNKED("3 ;ext\r\nabc\r\n0\r\nT: v\r\n\r\n", H1_DONE, NULL);
	CHUNKED("3\r\nabc\r\n0\r\n", H1_AGAIN, NULL);
	CHUNKED("3\r\nabc\r\n0\r\nT: v\r\n", H1_AGAIN, NULL);
	CHUNKED("3\r\nabc", H1_AGAIN, NULL);
	CHUNKED("3\r\nabcd\r\n0\r\n\r\n", H1_ERROR, "chunk data not followed by CRLF");
	CHUNKED("3\r\nabc\n0\r\n\r\n", H1_ERROR, "chunk data not followed by CRLF");
	CHUNKED("3\nabc\r\n0\r\n\r\n", H1_ERROR, "bare CR or LF in chunked framing");
	CHUNKED("3\r\r\nabc\r\n0\r\n\r\n", H1_ERROR, "bare CR or LF in chunked framing");
	CHUNKED("3\r\nabc\r\n0\r\nT: v\n\r\n", H1_ERROR, "bare CR or LF in chunked framing");
	CHUNKED("\r\nabc\r\n0\r\n\r\n", H1_ERROR, "malformed chunk size");
	CHUNKED("x\r\nabc\r\n0\r\n\r\n", H1_ERROR, "malformed chunk size");
	CHUNKED("-3\r\nabc\r\n0\r\n\r\n", H1_ERROR, "malformed chunk size");
	CHUNKED("0x3\r\nabc\r\n0\r\n\r\n", H1_ERROR, "malformed chunk size");
	CHUNKED("3 \r\nabc\r\n0\r\n\r\n", H1_ERROR, "malformed chunk size");
	CHUNKED("3 4\r\nabc\r\n0\r\n\r\n", H1_ERROR, "malformed chunk size");
	CHUNKED("3;a\001\r\nabc\r\n0\r\n\r\n", H1_ERROR, "malformed chunk size");
	CHUNKED("00000000000000003\r\nabc\r\n0\r\n\r\n", H1_ERROR, "chunk size too large");
	CHUNKED("0\r\nT: a\001\r\n\r\n", H1_ERROR, "control character in trailer");
	CHUNKED("0000000000000003\r\nabc\r\n0\r\n\r\n", H1_DONE, NULL);
	CHECK(out_is(out, "abc"));

	/* a chunk-size line and the trailer section are bounded */
	char *big = malloc(80 * 1024);
	memset(big, 'a', 80 * 1024);
	memcpy(big, "1;", 2);
	evbuffer_drain(out, evbuffer_get_length(out));
	CHECK(body(&h, big, 5000, 0, out) == H1_ERROR);
	CHECK_STR(why, "chunk-size or trailer line too long");
	CHECK(body(&h, big, 4000, 0, out) == H1_AGAIN);
	size_t o = 0;
	memcpy(big, "0\r\n", 3);
	o = 3;
	while (o < 70 * 1024) {
		memcpy(big + o, "X-Trailer: 0123456789012345678901234567890123456789\r\n", 53);
		o += 53;
	}
	memcpy(big + o, "\r\n", 2);
	CHECK(body(&h, big, o + 2, 0, out) == H1_ERROR);
	CHECK_STR(why, "trailer section too large");
	CHECK(body(&h, big, 60 * 1024 / 53 * 53 + 3, 0, out) == H1_AGAIN);
	free(big);

	/* truncated */
	CHECK(body(&h, "3\r\nab", 5, 1, out) == H1_ERROR);
	CHECK_STR(why, "connection closed before end of body");
	CHECK(body(&h, "3\r\nabc\r\n", 8, 1, out) == H1_ERROR);
	CHECK(body(&h, "3\r\nabc\r\n0\r\n\r\n", 13, 1, out) == H1_DONE);
	h1_head_clear(&h);

	CHECK(head("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", 0, &h) == H1_DONE);
	evbuffer_drain(out, evbuffer_get_length(out));
	CHECK(body(&h, "01234", 5, 0, out) == H1_AGAIN);
	CHECK(body(&h, "01234", 5, 1, out) == H1_ERROR);
	CHECK_STR(why, "connection closed before end of body");
	evbuffer_drain(out, evbuffer_get_length(out));
	CHECK(body(&h, "0123456789", 10, 1, out) == H1_DONE);
	CHECK(out_is(out, "0123456789"));
	h1_head_clear(&h);

	CHECK(head("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 0, &h) == H1_DONE);
	CHECK(body(&h, "", 0, 0, out) == H1_DONE);
	h1_head_clear(&h);

	CHECK(head("HTTP/1.1 204 No Content\r\n\r\n", 0, &h) == H1_DONE);
	evbuffer_drain(out, evbuffer_get_length(out));
	CHECK(body(&h, "stray", 5, 0, out) == H1_DONE);
	CHECK(evbuffer_get_length(out) == 0);
	h1_head_clear(&h);
	evbuffer_free(out);
}

static void
test_close_delimited(void)
{
	struct evbuffer *in = evbuffer_new(), *out = evbuffer_new();
	struct h1_head h;
	struct h1_body b;

	CHECK(head("HTTP/1.0 200 OK\r\n\r\n", 0, &h) == H1_DONE);
	CHECK(h.framing == H1_CLOSE && h.keep_alive == 0);
	h1_body_init(&b, &h);
	evbuffer_add(in, "part one, ", 10);
	CHECK(h1_body_read(&b, in, out, 0, &why) == H1_AGAIN);
	evbuffer_add(in, "part two", 8);
	CHECK(h1_body_read(&b, in, out, 0, &why) == H1_AGAIN);
	CHECK(h1_body_read(&b, in, out, 1, &why) == H1_DONE);
	CHECK(out_is(out, "part one, part two"));
	CHECK(evbuffer_get_length(in) == 0);
	h1_head_clear(&h);
	evbuffer_free(in);
	evbuffer_free(out);
}

/* A large Content-Length body moves without copying: the chains change hands. */
static void
test_large_length(void)
{
	struct evbuffer *in = evbuffer_new(), *out = evbuffer_new();
	size_t n = 3 * 1024 * 1024 + 7;
	char *data = malloc(n);
	struct h1_head h;
	struct h1_body b;

	memset(data, 'z', n);
	evbuffer_add_printf(in, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n", n);
	CHECK(h1_parse_head(in, MAX_HEAD, 0, &h, &why) == H1_DONE);
	h1_body_init(&b, &h);
	evbuffer_add(in, data, n / 2);
	CHECK(h1_body_read(&b, in, out, 0, &why) == H1_AGAIN);
	evbuffer_add(in, data, n - n / 2);
	evbuffer_add(in, "HTTP/1.1", 8);
	CHECK(h1_body_read(&b, in, out, 0, &why) == H1_DONE);
	CHECK(evbuffer_get_length(out) == n);
	CHECK(evbuffer_get_length(in) == 8);
	h1_head_clear(&h);
	free(data);
	evbuffer_free(in);
	evbuffer_free(out);
}


/*
 * Requests (h1_parse_request).
 */

/* Feeds s whole and parses a request head; returns the result code. left:
 * the bytes left in the buffer afterwards, or NULL. */
static int
request(const char *s, struct h1_head *h, size_t *left)
{
	struct evbuffer *b = evbuffer_new();
	int rc;

	evbuffer_add(b, s, strlen(s));
	why = NULL;
	rc = h1_parse_request(b, MAX_HEAD, h, &why);
	if (left != NULL)
		*left = evbuffer_get_length(b);
	evbuffer_free(b);
	return rc;
}

/* Expects the request in s to be refused with rc and msg, the head left
 * empty and the buffer untouched. */
static void
req_refused(const char *s, int want, const char *msg)
{
	struct h1_head h;
	size_t left;
	int rc = request(s, &h, &left);

	if (rc != want || why == NULL || strcmp(why, msg) != 0)
		fprintf(stderr, "for %s: rc %d, why %s\n", s, rc, why ? why : "(null)");
	CHECK(rc == want);
	CHECK_STR(why, msg);
	CHECK(h.block == NULL && h.headers == NULL && h.method == NULL);
	CHECK(left == strlen(s));
	h1_head_clear(&h);
}

/* Expects s to parse with framing f, length len and keep-alive ka. */
static void
req_framed(const char *s, enum h1_framing f, uint64_t len, int ka)
{
	struct h1_head h;
	int rc = request(s, &h, NULL);

	if (rc != H1_DONE)
		fprintf(stderr, "for %s: rc %d, why %s\n", s, rc, why ? why : "(null)");
	CHECK(rc == H1_DONE);
	CHECK(h.framing == f);
	CHECK(h.length == len);
	CHECK(h.keep_alive == ka);
	h1_head_clear(&h);
}

static void
test_request_accepted(void)
{
	struct evbuffer *in = evbuffer_new(), *out = evbuffer_new();
	const struct h1_header *f;
	struct h1_head h;
	struct h1_body b;
	size_t left;

	CHECK(request("GET /healthz HTTP/1.1\r\nHost: fanoutd\r\nAccept:  */* \r\n\r\n", &h,
	    &left) == H1_DONE);
	CHECK_STR(h.method, "GET");
	CHECK_STR(h.target, "/healthz");
	CHECK(h.status == 0 && h.minor == 1 && h.nheaders == 2 && left == 0);
	CHECK(h.framing == H1_NOBODY && h.length == 0 && h.keep_alive == 1);
	CHECK((f = h1_find(&h, "host")) != NULL && f->valuelen == 7);
	CHECK_STR(f != NULL ? f->value : NULL, "fanoutd");
	CHECK_STR(h1_find(&h, "ACCEPT") != NULL ? h1_find(&h, "ACCEPT")->value : NULL, "*/*");
	h1_head_clear(&h);

	/* a body under Content-Length, and the next request behind it */
	evbuffer_add_printf(in, "POST /v1/batch?x=1&y HTTP/1.1\r\nHost: f\r\n"
	    "Content-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\nHost: f\r\n\r\n");
	CHECK(h1_parse_request(in, MAX_HEAD, &h, &why) == H1_DONE);
	CHECK_STR(h.method, "POST");
	CHECK_STR(h.target, "/v1/batch?x=1&y");
	CHECK(h.framing == H1_LENGTH && h.length == 5);
	h1_body_init(&b, &h);
	CHECK(h1_body_read(&b, in, out, 0, &why) == H1_DONE);
	CHECK(out_is(out, "hello"));
	h1_head_clear(&h);
	CHECK(h1_parse_request(in, MAX_HEAD, &h, &why) == H1_DONE);	/* pipelined */
	CHECK_STR(h.method, "GET");
	CHECK(evbuffer_get_length(in) == 0);
	h1_head_clear(&h);

	/* a chunked body, extensions and trailers */
	evbuffer_drain(out, evbuffer_get_length(out));
	evbuffer_add_printf(in, "POST /v1/batch HTTP/1.1\r\nHost: f\r\n"
	    "Transfer-Encoding: Chunked\r\n\r\n3;a=b\r\n{\"r\r\n2\r\n\":\r\n0\r\nX-T: 1\r\n\r\n");
	CHECK(h1_parse_request(in, MAX_HEAD, &h, &why) == H1_DONE);
	CHECK(h.framing == H1_CHUNKED && h.length == 0 && h.keep_alive == 1);
	h1_body_init(&b, &h);
	CHECK(h1_body_read(&b, in, out, 0, &why) == H1_DONE);
	CHECK(out_is(out, "{\"r\":"));
	CHECK(evbuffer_get_length(in) == 0);
	h1_head_clear(&h);

	/* forms the parser leaves to the server (target, Host, Expect) */
	CHECK(request("GET http://fanoutd/healthz HTTP/1.1\r\nHost: f\r\n\r\n", &h, NULL) ==
	    H1_DONE);
	CHECK_STR(h.target, "http://fanoutd/healthz");
	h1_head_clear(&h);
	CHECK(request("OPTIONS * HTTP/1.1\r\n\r\n", &h, NULL) == H1_DONE);
	CHECK_STR(h.target, "*");
	CHECK(h.nheaders == 0 && h.headers == NULL);
	h1_head_clear(&h);
	CHECK(request("M-SEARCH! /~a%20b?q=\"x\" HTTP/1.0\r\n\r\n", &h, NULL) == H1_DONE);
	CHECK_STR(h.method, "M-SEARCH!");
	CHECK_STR(h.target, "/~a%20b?q=\"x\"");
	CHECK(h.minor == 0 && h.keep_alive == 0 && h.framing == H1_NOBODY);
	h1_head_clear(&h);
	CHECK(request("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\nExpect: 100-continue\r\n"
	    "X-Obs: caf\xe9\r\n\r\n", &h, NULL) == H1_DONE);
	CHECK(h.nheaders == 4);
	h1_head_clear(&h);

	evbuffer_free(in);
	evbuffer_free(out);
}

static void
test_request_refused(void)
{
	/* the request line */
	req_refused("GET  /healthz HTTP/1.1\r\nHost: f\r\n\r\n", H1_ERROR, "malformed request line");
	req_refused(" GET / HTTP/1.1\r\nHost: f\r\n\r\n", H1_ERROR, "malformed request line");
	req_refused("GET /healthz\r\n\r\n", H1_ERROR, "malformed request line");
	req_refused("GET\r\n\r\n", H1_ERROR, "malformed request line");
	req_refused("GET /a b HTTP/1.1\r\nHost: f\r\n\r\n", H1_ERROR, "malformed HTTP version");
	req_refused("GET / HTTP/1.1 \r\nHost: f\r\n\r\n", H1_ERROR, "malformed HTTP version");
	req_refused("GET / http/1.1\r\nHost: f\r\n\r\n", H1_ERROR, "malformed HTTP version");
	req_refused("GET / HTTP/1\r\nHost: f\r\n\r\n", H1_ERROR, "malformed HTTP version");
	req_refused("GET / HTTP/1.x\r\nHost: f\r\n\r\n", H1_ERROR, "malformed HTTP version");
	req_refused("GET / HTTP/11.1\r\nHost: f\r\n\r\n", H1_ERROR, "malformed HTTP version");
	req_refused("G(T / HTTP/1.1\r\nHost: f\r\n\r\n", H1_ERROR, "malformed request method");
	req_refused("GET\t/ HTTP/1.1\r\nHost: f\r\n\r\n", H1_ERROR, "malformed request line");
	req_refused("GET /a\001b HTTP/1.1\r\nHost: f\r\n\r\n", H1_ERROR, "malformed request target");
	req_refused("GET /a\x7f HTTP/1.1\r\nHost: f\r\n\r\n", H1_ERROR, "malformed request target");
	req_refused("GET /caf\xe9 HTTP/1.1\r\nHost: f\r\n\r\n", H1_ERROR, "malformed request target");

	/* versions: H1_VERSION (505), not H1_ERROR */
	req_refused("GET / HTTP/2.0\r\nHost: f\r\n\r\n", H1_VERSION, "unsupported HTTP version");
	req_refused("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", H1_VERSION, "unsupported HTTP version");
	req_refused("GET / HTTP/1.2\r\nHost: f\r\n\r\n", H1_VERSION, "unsupported HTTP version");
	req_refused("GET / HTTP/0.9\r\n\r\n", H1_VERSION, "unsupported HTTP version");
	req_refused("GET / HTTP/3.0\r\n\r\n", H1_VERSION, "unsupported HTTP version");

	/* header lines */
	req_refused("GET / HTTP/1.1\r\nHost: f\r\nX-A: b\r\n c\r\n\r\n", H1_ERROR,
	    "obsolete line folding in request head");
	req_refused("GET / HTTP/1.1\r\nHost: f\r\nX-A: b\r\n\tc\r\n\r\n", H1_ERROR,
	    "obsolete line folding in request head");
	req_refused("GET / HTTP/1.1\r\n Host: f\r\n\r\n", H1_ERROR,
	    "obsolete line folding in request head");
	req_refused("POST / HTTP/1.1\r\nHost: f\r\nContent-Length : 5\r\n\r\nhello", H1_ERROR,
	    "malformed header field name");
	req_refused("GET / HTTP/1.1\r\nHost\t: f\r\n\r\n", H1_ERROR, "malformed header field name");
	req_refused("GET / HTTP/1.1\r\nHost f\r\n\r\n", H1_ERROR, "malformed header field name");
	req_refused("GET / HTTP/1.1\r\n: f\r\n\r\n", H1_ERROR, "malformed header field name");
	req_refused("GET / HTTP/1.1\r\nHost: f\001\r\n\r\n", H1_ERROR,
	    "control character in header value");
	req_refused("GET / HTTP/1.1\nHost: f\n\n", H1_ERROR, "bare LF in request head");
	req_refused("GET / HTTP/1.1\r\nHost: f\nX: y\r\n\r\n", H1_ERROR, "bare LF in request head");
	req_refused("GET / HTTP/1.1\r\nHost: f\r\n\n", H1_ERROR, "bare LF in request head");
	req_refused("GET / HTTP/1.1\r\nHost: f\rX: y\r\n\r\n", H1_ERROR, "bare CR in request head");
	req_refused("GET / HTTP/1.1\r\r\nHost: f\r\n\r\n", H1_ERROR, "bare CR in request head");

	/* framing */
	req_refused("POST / HTTP/1.1\r\nHost: f\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
	    H1_ERROR, "more than one Content-Length header");
	req_refused("POST / HTTP/1.1\r\nHost: f\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n",
	    H1_ERROR, "more than one Content-Length header");
	req_refused("POST / HTTP/1.1\r\nHost: f\r\nContent-Length: 5, 5\r\n\r\n", H1_ERROR,
	    "invalid Content-Length");
	req_refused("POST / HTTP/1.1\r\nHost: f\r\nContent-Length: +5\r\n\r\n", H1_ERROR,
	    "invalid Content-Length");
	req_refused("POST / HTTP/1.1\r\nHost: f\r\nContent-Length: 5x\r\n\r\n", H1_ERROR,
	    "invalid Content-Length");
	req_refused("POST / HTTP/1.1\r\nHost: f\r\nContent-Length: -5\r\n\r\n", H1_ERROR,
	    "invalid Content-Length");
	req_refused("POST / HTTP/1.1\r\nHost: f\r\nContent-Length: 0x5\r\n\r\n", H1_ERROR,
	    "invalid Content-Length");
	req_refused("POST / HTTP/1.1\r\nHost: f\r\nContent-Length:\r\n\r\n", H1_ERROR,
	    "invalid Content-Length");
	req_refused("POST / HTTP/1.1\r\nHost: f\r\nContent-Length: 99999999999999999999\r\n\r\n",
	    H1_ERROR, "invalid Content-Length");
	req_refused("POST / HTTP/1.1\r\nHost: f\r\nTransfer-Encoding: gzip\r\n\r\n", H1_ERROR,
	    "Transfer-Encoding other than chunked");
	req_refused("POST / HTTP/1.1\r\nHost: f\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
	    H1_ERROR, "Transfer-Encoding other than chunked");
	req_refused("POST / HTTP/1.1\r\nHost: f\r\nTransfer-Encoding: chunked\r\n"
	    "Transfer-Encoding: chunked\r\n\r\n", H1_ERROR, "more than one Transfer-Encoding header");
	req_refused("POST / HTTP/1.1\r\nHost: f\r\nTransfer-Encoding: chunked\r\n"
	    "Content-Length: 5\r\n\r\n", H1_ERROR, "both Transfer-Encoding and Content-Length");
	req_refused("POST / HTTP/1.1\r\nHost: f\r\nContent-Length: 5\r\n"
	    "Transfer-Encoding: chunked\r\n\r\n", H1_ERROR, "both Transfer-Encoding and Content-Length");
	req_refused("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", H1_ERROR,
	    "Transfer-Encoding in an HTTP/1.0 request");
}

static void
test_request_limits(void)
{
	struct evbuffer *b = evbuffer_new();
	struct h1_head h;

	evbuffer_add_printf(b, "GET / HTTP/1.1\r\n");
	while (evbuffer_get_length(b) < 300)
		evbuffer_add_printf(b, "X-Pad: 0123456789\r\n");
	CHECK(h1_parse_request(b, 300, &h, &why) == H1_TOO_BIG);
	CHECK_STR(why, "request head too large");
	CHECK(h1_parse_request(b, 1000, &h, &why) == H1_AGAIN);
	evbuffer_add_printf(b, "\r\n");
	CHECK(h1_parse_request(b, evbuffer_get_length(b) - 1, &h, &why) == H1_TOO_BIG);
	CHECK(h1_parse_request(b, evbuffer_get_length(b), &h, &why) == H1_DONE);
	h1_head_clear(&h);
	evbuffer_add_printf(b, "GET / HTTP/1.1\r\n");
	for (int i = 0; i <= H1_MAX_HEADERS; i++)
		evbuffer_add_printf(b, "X-%d: %d\r\n", i, i);
	evbuffer_add_printf(b, "\r\n");
	CHECK(h1_parse_request(b, MAX_HEAD, &h, &why) == H1_TOO_BIG);
	CHECK_STR(why, "too many header fields");
	evbuffer_free(b);
}

static void
test_request_framing(void)
{
	req_framed("GET / HTTP/1.1\r\nHost: f\r\n\r\n", H1_NOBODY, 0, 1);
	req_framed("POST / HTTP/1.1\r\nHost: f\r\n\r\n", H1_NOBODY, 0, 1);
	req_framed("POST / HTTP/1.1\r\nHost: f\r\nContent-Length: 0\r\n\r\n", H1_LENGTH, 0, 1);
	req_framed("POST / HTTP/1.1\r\nHost: f\r\nContent-Length: 0012\r\n\r\n", H1_LENGTH, 12, 1);
	req_framed("GET / HTTP/1.1\r\nHost: f\r\nContent-Length: 3\r\n\r\n", H1_LENGTH, 3, 1);
	req_framed("POST / HTTP/1.1\r\nHost: f\r\nTransfer-Encoding: chunked\r\n\r\n", H1_CHUNKED, 0,
	    1);
	req_framed("HEAD / HTTP/1.1\r\nHost: f\r\nContent-Length: 3\r\n\r\n", H1_LENGTH, 3, 1);
	req_framed("GET / HTTP/1.1\r\nHost: f\r\nConnection: close\r\n\r\n", H1_NOBODY, 0, 0);
	req_framed("GET / HTTP/1.1\r\nHost: f\r\nConnection: keep-alive, Close\r\n\r\n", H1_NOBODY,
	    0, 0);
	req_framed("GET / HTTP/1.1\r\nHost: f\r\nConnection: keep-alive\r\n\r\n", H1_NOBODY, 0, 1);
	req_framed("GET / HTTP/1.0\r\n\r\n", H1_NOBODY, 0, 0);
	req_framed("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", H1_NOBODY, 0, 1);
	req_framed("GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n",
	    H1_NOBODY, 0, 0);
	req_framed("POST / HTTP/1.0\r\nContent-Length: 4\r\n\r\n", H1_LENGTH, 4, 0);
}

/* Empty lines before the request line are skipped (RFC 9112 §2.2). */
static void
test_request_leading_crlf(void)
{
	struct h1_head h;
	size_t left;

	CHECK(request("\r\nGET / HTTP/1.1\r\nHost: f\r\n\r\n", &h, &left) == H1_DONE);
	CHECK_STR(h.method, "GET");
	CHECK(left == 0);
	h1_head_clear(&h);
	CHECK(request("\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: f\r\n\r\n", &h,
	    NULL) == H1_DONE);
	h1_head_clear(&h);
	/* only CRLF: waiting for the request line, the empty lines gone */
	CHECK(request("\r\n\r\n", &h, &left) == H1_AGAIN);
	CHECK(left == 0);
	CHECK(request("\r\n\r", &h, &left) == H1_AGAIN);
	CHECK(left == 1);
	/* bare LF or CR are no empty lines */
	req_refused("\nGET / HTTP/1.1\r\nHost: f\r\n\r\n", H1_ERROR, "bare LF in request head");
	req_refused("\rGET / HTTP/1.1\r\nHost: f\r\n\r\n", H1_ERROR, "bare CR in request head");
}

/* A request head and body fed one byte at a time: the same result as whole. */
static void
test_request_incremental(void)
{
	const char *s = "\r\nPOST /v1/batch HTTP/1.1\r\nHost: f\r\nTransfer-Encoding: chunked\r\n"
	    "Expect: 100-continue\r\n\r\n4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\nNEXT";
	struct evbuffer *in = evbuffer_new(), *out = evbuffer_new();
	size_t i = 0, n = strlen(s);
	struct h1_head h;
	struct h1_body b;
	int rc = H1_AGAIN;

	while (i < n && rc == H1_AGAIN) {
		evbuffer_add(in, s + i++, 1);
		rc = h1_parse_request(in, MAX_HEAD, &h, &why);
	}
	CHECK(rc == H1_DONE);
	CHECK(i == (size_t)(strstr(s, "\r\n\r\n") + 4 - s));
	CHECK_STR(h.method, "POST");
	CHECK(h.nheaders == 3 && h.framing == H1_CHUNKED);
	h1_body_init(&b, &h);
	rc = H1_AGAIN;
	while (i < n && rc == H1_AGAIN) {
		evbuffer_add(in, s + i++, 1);
		rc = h1_body_read(&b, in, out, 0, &why);
	}
	CHECK(rc == H1_DONE);
	CHECK(out_is(out, "{\"a\":1}"));
	CHECK(i == n - 4);
	h1_head_clear(&h);
	evbuffer_free(in);
	evbuffer_free(out);
}

/* A request body's chunked framing refused, with its why. */
static void
test_request_bad_chunks(void)
{
	struct evbuffer *out = evbuffer_new();
	struct h1_head h;

	CHECK(request("POST / HTTP/1.1\r\nHost: f\r\nTransfer-Encoding: chunked\r\n\r\n", &h, NULL) ==
	    H1_DONE);
	CHECK(body(&h, "zz\r\n{}\r\n0\r\n\r\n", 14, 0, out) == H1_ERROR);
	CHECK_STR(why, "malformed chunk size");
	CHECK(body(&h, "+2\r\n{}\r\n0\r\n\r\n", 14, 0, out) == H1_ERROR);
	CHECK_STR(why, "malformed chunk size");
	CHECK(body(&h, "2\r\n{}XX0\r\n\r\n", 12, 0, out) == H1_ERROR);
	CHECK_STR(why, "chunk data not followed by CRLF");
	CHECK(body(&h, "2\n{}\r\n0\r\n\r\n", 11, 0, out) == H1_ERROR);
	CHECK_STR(why, "bare CR or LF in chunked framing");
	h1_head_clear(&h);
	evbuffer_free(out);
}

/*
 * Regressions: inputs that once crashed or misled the request reader.
 */

/* Result of parsing s fed in slices of step bytes (0: whole). */
static int
request_sliced(const char *s, size_t n, size_t step, struct h1_head *h, size_t *left)
{
	struct evbuffer *b = evbuffer_new();
	size_t off = 0;
	int rc = H1_AGAIN;

	if (step == 0)
		step = n;
	while (off < n && rc == H1_AGAIN) {
		size_t k = n - off < step ? n - off : step;
		evbuffer_add(b, s + off, k);
		off += k;
		rc = h1_parse_request(b, MAX_HEAD, h, &why);
	}
	*left = evbuffer_get_length(b) + (n - off);
	evbuffer_free(b);
	return rc;
}

/* More than H1_MAX_LEADING_CRLF empty lines at once left an empty head:
 * the request line was then searched with a length of (NULL - block), far
 * past the block (a heap read overflow; SEGV in the daemon). Whatever the
 * answer, fed whole or in pieces it must be the same. */
static void
test_regress_many_leading_crlf(void)
{
	char s[256];
	struct h1_head h;
	size_t left, left2;
	int rc, rc2;

	for (int k = 9; k <= 40; k += 31) {
		size_t n = 0;
		for (int i = 0; i < k; i++) {
			memcpy(s + n, "\r\n", 2);
			n += 2;
		}
		memcpy(s + n, "GET / HTTP/1.1\r\nHost: f\r\n\r\n", 27);
		n += 27;
		rc = request_sliced(s, n, 0, &h, &left);
		CHECK(rc == H1_DONE || rc == H1_ERROR);
		h1_head_clear(&h);
		rc2 = request_sliced(s, n, 2, &h, &left2);
		h1_head_clear(&h);
		if (rc != rc2 || left != left2)
			fprintf(stderr, "%d CRLF: whole rc %d left %zu, in 2-byte slices rc %d left %zu\n",
			    k, rc, left, rc2, left2);
		CHECK(rc == rc2 && left == left2);
		/* nothing but empty lines */
		rc = request_sliced(s, (size_t)k * 2, 0, &h, &left);
		CHECK(rc == H1_AGAIN || rc == H1_ERROR);
		h1_head_clear(&h);
	}
}

int
main(void)
{
	test_simple();
	test_status_lines();
	test_anomalies();
	test_limits();
	test_framing();
	test_content_encoding();
	test_incremental();
	test_bodies();
	test_close_delimited();
	test_large_length();
	test_request_accepted();
	test_request_refused();
	test_request_limits();
	test_request_framing();
	test_request_leading_crlf();
	test_request_incremental();
	test_request_bad_chunks();
	test_regress_many_leading_crlf();	/* last: it crashes an unfixed h1.c */
	return UNIT_DONE();
}
