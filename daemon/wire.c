/* wire.c: see wire.h. Both protocols take the header fields from one walk
 * (wire_fields): the daemon's own and connection-specific headers are never
 * the caller's, credentials stay with their first origin, a request's own
 * headers win over the batch's defaults (names compared case-insensitively),
 * and Accept-Encoding, User-Agent, Content-Type (for "json") and
 * Content-Length are added when the caller gave none. Nothing the caller
 * wrote reaches the wire unchecked: intake refused CR, LF and NUL. */
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <jansson.h>

#include "jout.h"
#include "util.h"
#include "wire.h"

typedef void wire_field_fn(void *arg, const char *name, const char *value, size_t valuelen);

/* Headers the daemon owns: framing and connection management. */
static const char *const wire_own[] = {
	"host", "content-length", "transfer-encoding", "connection", "keep-alive", "te",
	"upgrade", "proxy-connection", "trailer", NULL,
};

/* Credentials the caller meant for the first origin, not a redirect's. */
static const char *const wire_credentials[] = {
	"authorization", "cookie", "proxy-authorization", NULL,
};

static int
wire_is(const char *name, const char *const *set)
{
	for (; *set != NULL; set++)
		if (strcasecmp(name, *set) == 0)
			return 1;
	return 0;
}

static int
wire_json_has(const json_t *obj, const char *name)
{
	const char *k;
	json_t *v;

	if (obj == NULL)
		return 0;
	json_object_foreach((json_t *)(uintptr_t)obj, k, v)
		if (strcasecmp(k, name) == 0)
			return 1;
	return 0;
}

static int
wire_has(const struct wire_request *w, const char *name)
{
	return wire_json_has(w->spec->headers, name) || wire_json_has(w->defaults, name);
}

static void
wire_caller(const struct wire_request *w, const json_t *hdrs, const json_t *unless,
    wire_field_fn *fn, void *arg)
{
	const char *k;
	json_t *v;

	if (hdrs == NULL)
		return;
	json_object_foreach((json_t *)(uintptr_t)hdrs, k, v) {
		if (wire_is(k, wire_own) || wire_json_has(unless, k) ||
		    (w->strip_credentials && wire_is(k, wire_credentials)))
			continue;
		fn(arg, k, json_string_value(v), json_string_length(v));
	}
}

/* Calls fn for every header field after the request line, and sets the
 * body (*json: a serialised "json" to free, or NULL; len: room for the
 * Content-Length text). Returns whether the body is to be decoded. */
static int
wire_fields(const struct wire_request *w, wire_field_fn *fn, void *arg, const char **body,
    size_t *bodylen, char **json, char len[24])
{
	static const char ua[] = "fanoutd/" FANOUTD_VERSION;
	const struct reqspec *s = w->spec;
	int decode = !wire_has(w, "accept-encoding");

	wire_caller(w, s->headers, NULL, fn, arg);
	wire_caller(w, w->defaults, s->headers, fn, arg);
	if (decode)
		fn(arg, "Accept-Encoding", "gzip, deflate", 13);
	if (!wire_has(w, "user-agent"))
		fn(arg, "User-Agent", ua, sizeof(ua) - 1);
	*body = s->body;
	*bodylen = s->bodylen;
	*json = NULL;
	if (s->json != NULL) {
		*json = json_dumps(s->json, JSON_COMPACT | JSON_ENCODE_ANY);
		*body = *json != NULL ? *json : "";
		*bodylen = strlen(*body);
		if (!wire_has(w, "content-type"))
			fn(arg, "Content-Type", "application/json", 16);
	}
	if (*body != NULL || strcmp(s->method, "POST") == 0 || strcmp(s->method, "PUT") == 0 ||
	    strcmp(s->method, "PATCH") == 0) {
		snprintf(len, 24, "%zu", *bodylen);
		fn(arg, "Content-Length", len, strlen(len));
	}
	return decode;
}

static void
wire_h1_field(void *arg, const char *name, const char *value, size_t valuelen)
{
	struct jbuf *out = arg;

	jb_add(out, name, strlen(name));
	JB_LIT(out, ": ");
	jb_add(out, value, valuelen);
	JB_LIT(out, "\r\n");
}

int
wire_h1(struct evbuffer *evb, const struct wire_request *w)
{
	const struct reqspec *s = w->spec;
	struct jbuf jb, *out = &jb;
	const char *body;
	size_t bodylen;
	char *json, len[24];
	int decode;

	jb_init(out, evb);
	jb_add(out, s->method, strlen(s->method));
	JB_LIT(out, " ");
	jb_add(out, s->url.target, strlen(s->url.target));
	JB_LIT(out, " HTTP/1.1\r\nHost: ");
	jb_add(out, s->url.authority, strlen(s->url.authority));
	JB_LIT(out, "\r\n");
	decode = wire_fields(w, wire_h1_field, out, &body, &bodylen, &json, len);
	jb_add(out, "\r\n", 2);
	if (body != NULL)
		jb_add(out, body, bodylen);
	jb_flush(out);
	free(json);
	return decode;
}

/* HTTP/2 wants lower-case names (RFC 9113, 8.2.1). */
static void
wire_h2_field(void *arg, const char *name, const char *value, size_t valuelen)
{
	struct wire_h2 *o = arg;
	size_t len = strlen(name);
	char *dst = o->names + o->used;

	for (size_t i = 0; i < len; i++)
		dst[i] = (char)tolower((unsigned char)name[i]);
	o->used += len;
	o->fields[o->req.nfields++] = (struct h2_field){ dst, len, value, valuelen };
}

/* Room for every name of hdrs. */
static size_t
wire_names_len(const json_t *hdrs)
{
	const char *k;
	json_t *v;
	size_t n = 0;

	json_object_foreach((json_t *)(uintptr_t)hdrs, k, v)
		n += strlen(k);
	return n;
}

int
wire_h2(struct wire_h2 *o, const struct wire_request *w)
{
	const struct reqspec *s = w->spec;
	/* The daemon's own fields: at most four, names under 64 bytes in all. */
	size_t n = json_object_size(s->headers) + json_object_size(w->defaults) + 4;
	int decode;

	memset(o, 0, sizeof(*o));
	o->fields = xcalloc(n, sizeof(*o->fields));
	o->names = xmalloc(wire_names_len(s->headers) + wire_names_len(w->defaults) + 64);
	decode = wire_fields(w, wire_h2_field, o, &o->req.body, &o->req.bodylen, &o->json, o->len);
	o->req.method = s->method;
	o->req.scheme = s->url.https ? "https" : "http";
	o->req.authority = s->url.authority;
	o->req.path = s->url.target;
	o->req.fields = o->fields;
	o->req.head_request = strcmp(s->method, "HEAD") == 0;
	return decode;
}

void
wire_h2_free(struct wire_h2 *o)
{
	free(o->fields);
	free(o->names);
	free(o->json);
}
