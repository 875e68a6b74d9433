/* h1.c: the strict, incremental HTTP/1.x message reader: the head (status
 * or request line, header fields, message framing per RFC 9112 §6.3) and
 * the body (Content-Length, chunked or until close). What a lenient parser
 * would let through is an error here; h1.h says why. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>

#include "h1.h"

#define H1_MAX_LINE	4096		/* one chunk-size or trailer line */
#define H1_MAX_TRAILER	(64 * 1024)	/* the whole trailer section */
#define H1_MAX_HEX	16		/* digits of a chunk size: a uint64_t */
#define H1_GO_ON	2		/* h1_chunked_step: progress made, step again */

/* h1_body.state */
enum {
	H1_BS_DATA,		/* Content-Length or close-delimited payload */
	H1_BS_SIZE,		/* expecting a chunk-size line */
	H1_BS_CHUNK,		/* inside chunk data */
	H1_BS_CHUNK_END,	/* expecting the CRLF after chunk data */
	H1_BS_TRAILER,		/* trailer lines up to the empty one */
	H1_BS_DONE,
	H1_BS_FAILED,
};

static int
h1_is_tchar(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	    (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static int
h1_is_ws(char c)
{
	return c == ' ' || c == '\t';
}

/* Field-value and reason-phrase bytes: HTAB, SP, VCHAR and obs-text. */
static int
h1_is_text(unsigned char c)
{
	return c == '\t' || (c >= 0x20 && c != 0x7f);
}

static int
h1_eq(const char *s, size_t n, const char *lit)
{
	return strlen(lit) == n && strncasecmp(s, lit, n) == 0;
}

/* The first bytes must read "HTTP/1.0 " or "HTTP/1.1 ": checked as soon as
 * they arrive, so that a peer speaking something else fails at once instead
 * of when the head limit or the timeout is reached. */
static int
h1_check_prefix(struct evbuffer *buf)
{
	static const char want[] = "HTTP/1.x ";
	char got[sizeof(want) - 1];
	ev_ssize_t n;

	if ((n = evbuffer_copyout(buf, got, sizeof(got))) < 0)
		return -1;
	for (ev_ssize_t i = 0; i < n; i++) {
		if (want[i] == 'x' ? got[i] != '0' && got[i] != '1' : got[i] != want[i])
			return -1;
	}
	return 0;
}

/* Finds the empty line that ends the head within the first limit bytes of
 * buf, walking the chains in place (no pull-up). Every LF must follow a CR
 * and every CR precede an LF. Returns 1 with *end set past the final CRLF,
 * 0 if not there yet, -1 with *why. */
static int
h1_find_end(struct evbuffer *buf, size_t limit, int request, size_t *end, const char **why)
{
	struct evbuffer_iovec v[16];
	struct evbuffer_ptr p;
	size_t off = 0, line = 0;
	char prev = '\0';

	while (off < limit) {
		if (evbuffer_ptr_set(buf, &p, off, EVBUFFER_PTR_SET) == -1)
			return 0;
		int nv = evbuffer_peek(buf, (ev_ssize_t)(limit - off), &p, v, 16);
		if (nv <= 0)
			return 0;
		for (int i = 0; i < nv && i < 16 && off < limit; i++) {
			const char *b = v[i].iov_base;
			size_t len = v[i].iov_len < limit - off ? v[i].iov_len : limit - off;

			/* Line by line with memchr rather than byte by byte: CR
			 * may only stand right before LF, LF only right after CR. */
			for (size_t j = 0; j < len;) {
				const char *lf = memchr(b + j, '\n', len - j);
				size_t seg = lf != NULL ? (size_t)(lf - (b + j)) : len - j;
				const char *cr = memchr(b + j, '\r', seg);

				/* A CR not last in the segment is followed by
				 * something other than LF; so is one that ended the
				 * previous chain if this one goes on with text. */
				if ((prev == '\r' && seg > 0) || (cr != NULL && cr != b + j + seg - 1)) {
					*why = request ? "bare CR in request head" :
					    "bare CR in response head";
					return -1;
				}
				if (lf == NULL) {
					if (seg > 0)
						prev = b[j + seg - 1];
					off += seg;
					break;
				}
				if ((seg > 0 ? b[j + seg - 1] : prev) != '\r') {
					*why = request ? "bare LF in request head" :
					    "bare LF in response head";
					return -1;
				}
				off += seg;	/* off: the LF */
				if (off - line == 1) {
					*end = off + 1;
					return 1;
				}
				line = off + 1;
				off++;
				prev = '\n';
				j += seg + 1;
			}
		}
	}
	return 0;
}

/* status-line = HTTP-version SP 3DIGIT [ SP reason-phrase ] (the SP before
 * an empty reason may be missing, RFC 9112 §4). */
static int
h1_status_line(struct h1_head *h, const char *s, size_t n, const char **why)
{
	int ok = n >= 12 && memcmp(s, "HTTP/1.", 7) == 0 && (s[7] == '0' || s[7] == '1') &&
	    s[8] == ' ' && s[9] >= '1' && s[9] <= '9' && s[10] >= '0' && s[10] <= '9' &&
	    s[11] >= '0' && s[11] <= '9' && (n == 12 || s[12] == ' ');

	for (size_t i = 13; ok && i < n; i++)
		ok = h1_is_text((unsigned char)s[i]);
	if (!ok) {
		*why = "malformed status line";
		return -1;
	}
	h->minor = s[7] - '0';
	h->status = (s[9] - '0') * 100 + (s[10] - '0') * 10 + (s[11] - '0');
	return 0;
}

/* request-line = method SP request-target SP HTTP-version (RFC 9112 §3),
 * single spaces, a target of visible characters. Method and target are
 * NUL-terminated in place. */
static int
h1_request_line(struct h1_head *h, char *s, size_t n, const char **why)
{
	char *sp1 = memchr(s, ' ', n), *sp2;
	size_t m, t;

	if (sp1 == NULL || (m = (size_t)(sp1 - s)) == 0 ||
	    (sp2 = memchr(sp1 + 1, ' ', n - m - 1)) == NULL ||
	    (t = (size_t)(sp2 - sp1 - 1)) == 0) {
		*why = "malformed request line";
		return -1;
	}
	for (size_t i = 0; i < m; i++) {
		if (!h1_is_tchar((unsigned char)s[i])) {
			*why = "malformed request method";
			return -1;
		}
	}
	for (size_t i = 0; i < t; i++) {
		unsigned char c = (unsigned char)sp1[1 + i];
		if (c <= 0x20 || c >= 0x7f) {
			*why = "malformed request target";
			return -1;
		}
	}
	if (n - m - t - 2 != 8 || memcmp(sp2 + 1, "HTTP/", 5) != 0 || sp2[7] != '.' ||
	    sp2[6] < '0' || sp2[6] > '9' || sp2[8] < '0' || sp2[8] > '9') {
		*why = "malformed HTTP version";
		return -1;
	}
	if (sp2[6] != '1' || (sp2[8] != '0' && sp2[8] != '1')) {
		*why = "unsupported HTTP version";
		return H1_VERSION;
	}
	h->minor = sp2[8] - '0';
	*sp1 = '\0';
	*sp2 = '\0';
	h->method = s;
	h->target = sp1 + 1;
	return 0;
}

/* field-line = field-name ":" OWS field-value OWS. Name and value are
 * NUL-terminated in place (over the ':' and the first byte after the
 * value), which the caller may rely on. */
static int
h1_field_line(struct h1_head *h, char *s, size_t n, const char **why)
{
	struct h1_header *f = &h->headers[h->nheaders];
	size_t i = 0, vs, ve;

	if (n > 0 && h1_is_ws(s[0])) {
		*why = h->method != NULL ? "obsolete line folding in request head" :
		    "obsolete line folding in response head";
		return -1;
	}
	while (i < n && h1_is_tchar((unsigned char)s[i]))
		i++;
	if (i == 0 || i == n || s[i] != ':') {
		*why = "malformed header field name";
		return -1;
	}
	for (vs = i + 1; vs < n && h1_is_ws(s[vs]); vs++)
		;
	for (ve = n; ve > vs && h1_is_ws(s[ve - 1]); ve--)
		;
	for (size_t k = vs; k < ve; k++) {
		if (!h1_is_text((unsigned char)s[k])) {
			*why = "control character in header value";
			return -1;
		}
	}
	s[i] = '\0';
	s[ve] = '\0';
	f->name = s;
	f->namelen = i;
	f->value = s + vs;
	f->valuelen = ve - vs;
	h->nheaders++;
	return 0;
}

/* Is tok one of the comma-separated elements of a header value? */
static int
h1_has_token(const char *v, size_t n, const char *tok)
{
	size_t i = 0;

	while (i < n) {
		size_t s, e;
		while (i < n && (h1_is_ws(v[i]) || v[i] == ','))
			i++;
		for (s = i; i < n && v[i] != ','; i++)
			;
		for (e = i; e > s && h1_is_ws(v[e - 1]); e--)
			;
		if (e > s && h1_eq(v + s, e - s, tok))
			return 1;
	}
	return 0;
}

/* 1*DIGIT fitting in a uint64_t; no sign, no spaces, no list. */
static int
h1_parse_length(const char *v, size_t n, uint64_t *len)
{
	uint64_t x = 0;

	if (n == 0)
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (v[i] < '0' || v[i] > '9')
			return -1;
		if (x > (UINT64_MAX - (uint64_t)(v[i] - '0')) / 10)
			return -1;
		x = x * 10 + (uint64_t)(v[i] - '0');
	}
	*len = x;
	return 0;
}

/* Message framing and persistence, RFC 9112 §6.3 and §9.3, with every
 * ambiguity that could let a body be read two ways refused outright. */
static int
h1_framing(struct h1_head *h, int head_request, const char **why)
{
	const struct h1_header *te = NULL, *cl = NULL;
	int conn_close = 0, keep = 0;

	for (size_t i = 0; i < h->nheaders; i++) {
		const struct h1_header *f = &h->headers[i];
		if (h1_eq(f->name, f->namelen, "transfer-encoding")) {
			if (te != NULL) {
				*why = "more than one Transfer-Encoding header";
				return -1;
			}
			te = f;
		} else if (h1_eq(f->name, f->namelen, "content-length")) {
			if (cl != NULL) {
				*why = "more than one Content-Length header";
				return -1;
			}
			cl = f;
		} else if (h1_eq(f->name, f->namelen, "connection")) {
			conn_close |= h1_has_token(f->value, f->valuelen, "close");
			keep |= h1_has_token(f->value, f->valuelen, "keep-alive");
		}
	}
	if (te != NULL) {
		const char *bad = h->minor == 0 ? (h->method != NULL ?
		    "Transfer-Encoding in an HTTP/1.0 request" : "Transfer-Encoding in an HTTP/1.0 response") :
		    cl != NULL ? "both Transfer-Encoding and Content-Length" :
		    !h1_eq(te->value, te->valuelen, "chunked") ? "Transfer-Encoding other than chunked" :
		    NULL;
		if (bad != NULL) {
			*why = bad;
			return -1;
		}
	}
	if (cl != NULL && h1_parse_length(cl->value, cl->valuelen, &h->length) == -1) {
		*why = "invalid Content-Length";
		return -1;
	}
	h->keep_alive = h->minor == 1 ? !conn_close : keep && !conn_close;
	if (h->method != NULL)	/* a request without a length has no body */
		h->framing = te != NULL ? H1_CHUNKED : cl != NULL ? H1_LENGTH : H1_NOBODY;
	else if (head_request || h->status < 200 || h->status == 204 || h->status == 304)
		h->framing = H1_NOBODY;
	else if (te != NULL)
		h->framing = H1_CHUNKED;
	else if (cl != NULL)
		h->framing = H1_LENGTH;
	else {
		h->framing = H1_CLOSE;
		h->keep_alive = 0;
	}
	if (h->framing != H1_LENGTH)
		h->length = 0;
	return 0;
}

/* Content-Encoding, with repeated headers joined by ", " into the spare room
 * after the block: a list the body decoder does not know is then kept raw
 * rather than half decoded. */
static void
h1_content_encoding(struct h1_head *h)
{
	char *o = h->block + h->blocklen + 1;
	size_t count = 0;

	h->content_encoding = NULL;
	for (size_t i = 0; i < h->nheaders; i++) {
		const struct h1_header *f = &h->headers[i];
		if (!h1_eq(f->name, f->namelen, "content-encoding"))
			continue;
		if (count++ == 0)
			h->content_encoding = f->value;
		if (count == 2) {
			size_t n = strlen(h->content_encoding);
			memmove(o, h->content_encoding, n);
			h->content_encoding = o;
			o += n;
		}
		if (count >= 2) {
			memcpy(o, ", ", 2);
			memcpy(o + 2, f->value, f->valuelen);
			o += 2 + f->valuelen;
			*o = '\0';
		}
	}
}

/* Splits and checks the head held in h->block. */
static int
h1_parse_block(struct h1_head *h, int head_request, int request, const char **why)
{
	int rc;

	char *s = h->block, *end = h->block + h->blocklen - 2, *eol;
	size_t lines = 0;

	for (char *p = s; (p = memchr(p, '\n', (size_t)(end - p))) != NULL; p++)
		lines++;
	if (lines > H1_MAX_HEADERS + 1) {
		*why = "too many header fields";
		return H1_TOO_BIG;
	}
	if (lines > 1 && (h->headers = calloc(lines - 1, sizeof(*h->headers))) == NULL) {
		*why = "out of memory";
		return H1_ERROR;
	}
	/* An empty first line has no CR before the end (it cannot come from
	 * h1_parse_request, which skips them, nor past h1_check_prefix). */
	if ((eol = memchr(s, '\r', (size_t)(end - s))) == NULL) {
		*why = request ? "malformed request line" : "malformed status line";
		return H1_ERROR;
	}
	if (request && (rc = h1_request_line(h, s, (size_t)(eol - s), why)) != 0)
		return rc == H1_VERSION ? H1_VERSION : H1_ERROR;
	if (!request && h1_status_line(h, s, (size_t)(eol - s), why) == -1)
		return H1_ERROR;
	for (s = eol + 2; s < end; s = eol + 2) {
		eol = memchr(s, '\r', (size_t)(end - s));
		if (h1_field_line(h, s, (size_t)(eol - s), why) == -1)
			return H1_ERROR;
	}
	if (h1_framing(h, head_request, why) == -1)
		return H1_ERROR;
	h1_content_encoding(h);
	return H1_DONE;
}

/* Takes a head, a response's or (request) a request's, off buf. */
static int
h1_take_head(struct evbuffer *buf, size_t max_bytes, int head_request, int request,
    struct h1_head *h, const char **why)
{
	size_t len = evbuffer_get_length(buf), limit = len < max_bytes ? len : max_bytes, end;
	int rc;

	memset(h, 0, sizeof(*h));
	if (!request && h1_check_prefix(buf) == -1) {
		*why = "malformed status line";
		return H1_ERROR;
	}
	if ((rc = h1_find_end(buf, limit, request, &end, why)) == -1)
		return H1_ERROR;
	if (rc == 0) {
		if (len < max_bytes)
			return H1_AGAIN;
		*why = request ? "request head too large" : "response head too large";
		return H1_TOO_BIG;
	}
	/* Twice the head: the second half holds a joined Content-Encoding,
	 * never longer than the header lines it comes from. */
	if ((h->block = malloc(2 * end + 2)) == NULL) {
		*why = "out of memory";
		return H1_ERROR;
	}
	evbuffer_copyout(buf, h->block, end);
	h->block[end] = '\0';
	h->blocklen = end;
	if ((rc = h1_parse_block(h, head_request, request, why)) != H1_DONE) {
		h1_head_clear(h);
		return rc;
	}
	evbuffer_drain(buf, end);
	return H1_DONE;
}

int
h1_parse_head(struct evbuffer *buf, size_t max_bytes, int head_request, struct h1_head *h,
    const char **why)
{
	return h1_take_head(buf, max_bytes, head_request, 0, h, why);
}

/* RFC 9112 §2.2: a server should ignore empty lines before a request line
 * (some clients send a CRLF after a POST body). All of them: a limit would
 * make the answer depend on how the bytes were sliced, and the caller's
 * client_timeout_s bounds a flood. */
int
h1_parse_request(struct evbuffer *buf, size_t max_bytes, struct h1_head *h, const char **why)
{
	char two[2];

	while (evbuffer_copyout(buf, two, 2) == 2 && two[0] == '\r' && two[1] == '\n')
		evbuffer_drain(buf, 2);
	return h1_take_head(buf, max_bytes, 0, 1, h, why);
}

void
h1_head_clear(struct h1_head *h)
{
	free(h->block);
	free(h->headers);
	memset(h, 0, sizeof(*h));
}

const struct h1_header *
h1_find(const struct h1_head *h, const char *name)
{
	for (size_t i = 0; i < h->nheaders; i++)
		if (h1_eq(h->headers[i].name, h->headers[i].namelen, name))
			return &h->headers[i];
	return NULL;
}

void
h1_body_init(struct h1_body *b, const struct h1_head *h)
{
	memset(b, 0, sizeof(*b));
	b->framing = h->framing;
	switch (h->framing) {
	case H1_NOBODY:
		b->state = H1_BS_DONE;
		break;
	case H1_LENGTH:
		b->remaining = h->length;
		b->state = h->length == 0 ? H1_BS_DONE : H1_BS_DATA;
		break;
	case H1_CHUNKED:
		b->state = H1_BS_SIZE;
		break;
	case H1_CLOSE:
		b->state = H1_BS_DATA;
		break;
	}
}

/* Moves up to max bytes from in to out by handing over chains. */
static uint64_t
h1_move(struct evbuffer *in, struct evbuffer *out, uint64_t max)
{
	uint64_t moved = 0;

	for (;;) {
		size_t n = evbuffer_get_length(in);
		if (n > max - moved)
			n = (size_t)(max - moved);
		if (n > 1u << 30)
			n = 1u << 30;	/* the count comes back as an int */
		if (n == 0)
			return moved;
		int r = evbuffer_remove_buffer(in, out, n);
		if (r <= 0)
			return moved;
		moved += (uint64_t)r;
	}
}

/* Takes one CRLF-terminated line of at most H1_MAX_LINE bytes off in,
 * into line (without the CRLF). Returns 1, 0 (incomplete) or -1. */
static int
h1_line(struct evbuffer *in, char *line, size_t *n, const char **why)
{
	ev_ssize_t got = evbuffer_copyout(in, line, H1_MAX_LINE);
	char *lf;

	if (got < 0 || (lf = memchr(line, '\n', (size_t)got)) == NULL) {
		if (got >= H1_MAX_LINE) {
			*why = "chunk-size or trailer line too long";
			return -1;
		}
		return 0;
	}
	if (lf == line || lf[-1] != '\r' || memchr(line, '\r', (size_t)(lf - 1 - line)) != NULL) {
		*why = "bare CR or LF in chunked framing";
		return -1;
	}
	*n = (size_t)(lf - 1 - line);
	evbuffer_drain(in, (size_t)(lf - line) + 1);
	return 1;
}

/* What follows the hex digits (from i on): nothing, or BWS ";" and
 * extensions that are ignored but may not hold control characters. */
static int
h1_chunk_ext_ok(const char *s, size_t i, size_t n)
{
	if (i == 0)
		return 0;	/* no digits */
	if (i == n)
		return 1;
	while (i < n && h1_is_ws(s[i]))
		i++;
	if (i == n || s[i] != ';')
		return 0;
	for (; i < n; i++)
		if (!h1_is_text((unsigned char)s[i]))
			return 0;
	return 1;
}

/* chunk-size [ chunk-ext ] CRLF */
static int
h1_chunk_size(struct h1_body *b, const char *s, size_t n, const char **why)
{
	uint64_t x = 0;
	size_t i;

	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 :
		    c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
		if (d < 0)
			break;
		if (i == H1_MAX_HEX) {
			*why = "chunk size too large";
			return -1;
		}
		x = x << 4 | (uint64_t)d;
	}
	if (!h1_chunk_ext_ok(s, i, n)) {
		*why = "malformed chunk size";
		return -1;
	}
	b->remaining = x;
	b->state = x == 0 ? H1_BS_TRAILER : H1_BS_CHUNK;
	b->linelen = 0;
	return 0;
}

/* One step of the chunked decoder: H1_GO_ON, H1_AGAIN, H1_DONE or H1_ERROR. */
static int
h1_chunked_step(struct h1_body *b, struct evbuffer *in, struct evbuffer *out, const char **why)
{
	char line[H1_MAX_LINE];
	size_t n;
	int rc;

	switch (b->state) {
	case H1_BS_SIZE:
	case H1_BS_TRAILER:
		if ((rc = h1_line(in, line, &n, why)) <= 0)
			return rc == 0 ? H1_AGAIN : H1_ERROR;
		if (b->state == H1_BS_SIZE)
			return h1_chunk_size(b, line, n, why) == -1 ? H1_ERROR : H1_GO_ON;
		if ((b->linelen += n + 2) > H1_MAX_TRAILER) {
			*why = "trailer section too large";
			return H1_ERROR;
		}
		for (size_t i = 0; i < n; i++) {
			if (!h1_is_text((unsigned char)line[i])) {
				*why = "control character in trailer";
				return H1_ERROR;
			}
		}
		if (n == 0)
			b->state = H1_BS_DONE;
		return H1_GO_ON;
	case H1_BS_CHUNK:
		b->remaining -= h1_move(in, out, b->remaining);
		if (b->remaining > 0)
			return H1_AGAIN;
		b->state = H1_BS_CHUNK_END;
		return H1_GO_ON;
	case H1_BS_CHUNK_END:
		if (evbuffer_get_length(in) < 2)
			return H1_AGAIN;
		evbuffer_copyout(in, line, 2);
		if (line[0] != '\r' || line[1] != '\n') {
			*why = "chunk data not followed by CRLF";
			return H1_ERROR;
		}
		evbuffer_drain(in, 2);
		b->state = H1_BS_SIZE;
		return H1_GO_ON;
	case H1_BS_DONE:
		return H1_DONE;
	}
	*why = "body reader in a bad state";
	return H1_ERROR;
}

int
h1_body_read(struct h1_body *b, struct evbuffer *in, struct evbuffer *out, int eof,
    const char **why)
{
	int rc = H1_AGAIN;

	if (b->state == H1_BS_FAILED) {
		*why = "body reader already failed";
		return H1_ERROR;
	}
	if (b->state == H1_BS_DONE)
		return H1_DONE;
	if (b->framing == H1_CLOSE) {
		h1_move(in, out, UINT64_MAX);
		if (!eof)
			return H1_AGAIN;
		b->state = H1_BS_DONE;
		return H1_DONE;
	}
	if (b->framing == H1_LENGTH) {
		b->remaining -= h1_move(in, out, b->remaining);
		if (b->remaining == 0)
			b->state = H1_BS_DONE;
		rc = b->remaining == 0 ? H1_DONE : H1_AGAIN;
	} else {
		while ((rc = h1_chunked_step(b, in, out, why)) == H1_GO_ON)
			;
	}
	if (rc == H1_AGAIN && eof) {
		*why = "connection closed before end of body";
		rc = H1_ERROR;
	}
	if (rc == H1_ERROR)
		b->state = H1_BS_FAILED;
	return rc;
}

uint64_t
h1_body_skippable(const struct h1_body *b)
{
	return b->framing == H1_LENGTH && b->state != H1_BS_FAILED ? b->remaining : 0;
}

int
h1_body_skipped(struct h1_body *b, uint64_t n)
{
	b->remaining -= n;
	if (b->remaining == 0)
		b->state = H1_BS_DONE;
	return b->remaining == 0 ? H1_DONE : H1_AGAIN;
}
