/* fuzz_lines.c: a streamed batch (NDJSON in) as batch.c's batch_stream_*
 * takes it: the input split at LF, a CR before it dropped, blank lines
 * skipped, each line through json_loadb; the first through
 * intake_stream_first, the others through intake_request. Every request
 * intake accepts is then written as upstream.c writes it (wire_h1, with the
 * batch's default headers), while the lines are held as batch.c holds them:
 * an options line for the batch's life (b->doc), each request line for its
 * request's.
 *
 * Beyond memory safety: what wire_h1 writes reads back with h1.c's request
 * reader as one request, with the method, target, Host and body intake
 * settled; no caller text may turn into framing (this found intake letting
 * control characters other than CR, LF and NUL through to the wire). The
 * JSON values a batch's options borrow (options.headers) must still be
 * alive when a request uses them: jansson is not instrumented, so ASan would
 * not see it read freed memory; the target asks ASan, and has freed memory
 * filled, instead. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <jansson.h>
#include <sanitizer/asan_interface.h>

#include "conf.h"
#include "h1.h"
#include "intake.h"
#include "wire.h"

#define FUZZ_MAX_LINES	64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
const char *__asan_default_options(void);

const char *
__asan_default_options(void)
{
	return "max_free_fill_size=4096";
}

static void
lines_fail(const char *what, const char *detail, struct evbuffer *wire)
{
	size_t n = evbuffer_get_length(wire);

	fprintf(stderr, "fuzz_lines: %s (%s)\n%.*s\n", what, detail != NULL ? detail : "",
	    n > 2048 ? 2048 : (int)n, (const char *)evbuffer_pullup(wire, -1));
	abort();
}

/* Writes r as upstream.c would and reads it back. */
static void
lines_wire(const struct reqspec *r, const struct bopts *o)
{
	struct wire_request w = { r, o->headers, 0 };
	struct evbuffer *out = evbuffer_new();
	struct h1_head h;
	const struct h1_header *host;
	const char *why = NULL;
	int rc, post;
	size_t bodylen;
	char *json = NULL;

	if (o->headers != NULL && __asan_address_is_poisoned(o->headers))
		lines_fail("options.headers used after it was freed", NULL, out);
	(void)wire_h1(out, &w);
	rc = h1_parse_request(out, SIZE_MAX, &h, &why);
	if (rc == H1_TOO_BIG) {	/* over the reader's 256 fields: no limit of the wire's */
		evbuffer_free(out);
		return;
	}
	if (rc != H1_DONE)
		lines_fail("read back: not one request head", why, out);
	if (strcmp(h.method, r->method) != 0 || strcmp(h.target, r->url.target) != 0)
		lines_fail("read back: request line", NULL, out);
	if ((host = h1_find(&h, "host")) == NULL || strcmp(host->value, r->url.authority) != 0 ||
	    h.headers != host)
		lines_fail("read back: Host", NULL, out);
	post = strcmp(r->method, "POST") == 0 || strcmp(r->method, "PUT") == 0 ||
	    strcmp(r->method, "PATCH") == 0;
	if (r->json != NULL)
		json = json_dumps(r->json, JSON_COMPACT | JSON_ENCODE_ANY);
	bodylen = json != NULL ? strlen(json) : r->body != NULL ? r->bodylen : 0;
	if (r->body != NULL || r->json != NULL || post) {
		if (h.framing != H1_LENGTH || h.length != bodylen)
			lines_fail("read back: body framing", NULL, out);
	} else if (h.framing != H1_NOBODY)
		lines_fail("read back: a body where none was asked for", NULL, out);
	if (evbuffer_get_length(out) != bodylen ||
	    (bodylen > 0 && memcmp(evbuffer_pullup(out, -1), json != NULL ? json : r->body,
	    bodylen) != 0))
		lines_fail("read back: body bytes", NULL, out);
	free(json);
	h1_head_clear(&h);
	evbuffer_free(out);
}

/* A line of spaces and tabs only is no request (batch.c). */
static int
lines_blank(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] != ' ' && s[i] != '\t')
			return 0;
	return 1;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct conf *c;
	json_t *held[FUZZ_MAX_LINES];
	size_t nheld = 0, off = 0;
	int started = 0;
	struct bopts o;
	struct reqspec r;
	char why[256];

	if (c == NULL)
		c = conf_new_default();
	while (off < size && nheld < FUZZ_MAX_LINES) {
		const uint8_t *lf = memchr(data + off, '\n', size - off);
		size_t len = (lf != NULL ? (size_t)(lf - data) : size) - off;
		const char *line = (const char *)data + off;
		json_t *elem;

		off += len + (lf != NULL);
		if (len > 0 && line[len - 1] == '\r')
			len--;
		if (lines_blank(line, len))
			continue;
		elem = json_loadb(line, len, JSON_ALLOW_NUL | JSON_DECODE_ANY, NULL);
		if (!started) {
			int rc = intake_stream_first(elem, c, &o, why, sizeof(why));
			started = 1;
			if (rc < 0) {
				json_decref(elem);
				break;
			}
			if (rc == 1) {
				held[nheld++] = elem;	/* o.headers points into it */
				continue;
			}
		}
		if (elem == NULL)
			continue;
		held[nheld++] = elem;
		if (!json_is_string(elem) && !json_is_object(elem))
			continue;
		if (intake_request(elem, &o, &r, why, sizeof(why)) == 0)
			lines_wire(&r, &o);
		url_free(&r.url);
	}
	while (nheld > 0)
		json_decref(held[--nheld]);
	return 0;
}
