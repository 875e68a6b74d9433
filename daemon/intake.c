/* intake.c: see intake.h. Options are a table (intake_opts) whose numeric
 * rows take the bounds of the configuration key of the same name. Caps:
 * concurrency and per_host by max_connections and max_per_host; timeout_ms
 * (a request's own too), connect_timeout_ms, max_body_bytes and
 * follow_redirects by their configured values, which are also their
 * defaults. A value over its cap is lowered to it, not refused: the caller
 * cannot know the daemon's configuration. */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "conf.h"
#include "intake.h"

#define INTAKE_MAX_RETRIES 10
#define INTAKE_MAX_RATE 1000000	/* rate_per_host and rate_burst, as rate_limit's */
#define INTAKE_MAX_HEADER_VALUE 8192

int
intake_token(const char *s)
{
	static const char tchar[] = "!#$%&'*+-.^_`|~";

	if (*s == '\0')
		return 0;
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;
		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c != '\0' && strchr(tchar, c) != NULL)))
			return 0;
	}
	return 1;
}

/* The document is loaded with JSON_ALLOW_NUL so that a NUL in a header
 * value is one request's invalid_request, not the whole batch's 400; every
 * key and every string compared as a C string must then be NUL-free, or
 * "url\u0000x" would pass for "url". */
static int
intake_plain(const char *s, size_t len)
{
	return strlen(s) == len;
}

static int
intake_plain_string(const json_t *v)
{
	return json_is_string(v) && intake_plain(json_string_value(v), json_string_length(v));
}

/* An integer option in [min, max]; over cap it is lowered to cap. */
static int
intake_uint(const json_t *v, const char *name, unsigned long long min, unsigned long long max,
    unsigned long long cap, unsigned long long *out, char *why, size_t whylen)
{
	json_int_t i;

	if (!json_is_integer(v)) {
		snprintf(why, whylen, "%s: must be an integer", name);
		return -1;
	}
	i = json_integer_value(v);
	if (i < 0 || (unsigned long long)i < min || (unsigned long long)i > max) {
		snprintf(why, whylen, "%s: must be between %llu and %llu", name, min, max);
		return -1;
	}
	*out = (unsigned long long)i < cap ? (unsigned long long)i : cap;
	return 0;
}

/* RFC 9110 field-value bytes: HTAB, SP, visible characters and obs-text,
 * no other control character (our own request reader refuses them too). */
static int
intake_field_value(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return 0;
	}
	return 1;
}

/* A headers object: token names, string values of field-value bytes. */
static int
intake_headers(const json_t *h, const char *place, char *why, size_t whylen)
{
	const char *k;
	size_t klen;
	json_t *v;

	if (!json_is_object(h)) {
		snprintf(why, whylen, "%s: must be an object", place);
		return -1;
	}
	json_object_keylen_foreach((json_t *)(uintptr_t)h, k, klen, v) {
		if (!intake_plain(k, klen) || !intake_token(k) || klen > 256) {
			snprintf(why, whylen, "%s: \"%.64s\" is not a valid header name", place, k);
			return -1;
		}
		if (!json_is_string(v)) {
			snprintf(why, whylen, "%s.%s: must be a string", place, k);
			return -1;
		}
		const char *s = json_string_value(v);
		size_t n = json_string_length(v);
		if (n > INTAKE_MAX_HEADER_VALUE || !intake_field_value(s, n)) {
			snprintf(why, whylen, "%s.%s: value has a control character (CR, LF, NUL, "
			    "DEL...), or is over %d bytes", place, k, INTAKE_MAX_HEADER_VALUE);
			return -1;
		}
	}
	return 0;
}

static int
intake_enum(const json_t *v, const char *name, const char *const *names, int *out, char *why,
    size_t whylen)
{
	char list[96] = "";

	for (int i = 0; names[i] != NULL; i++) {
		if (intake_plain_string(v) && strcmp(json_string_value(v), names[i]) == 0) {
			*out = i;
			return 0;
		}
		snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s", i ? ", " : "",
		    names[i]);
	}
	snprintf(why, whylen, "%s: must be one of %s", name, list);
	return -1;
}

static void
intake_defaults(const struct conf *c, struct bopts *o)
{
	memset(o, 0, sizeof(*o));
	o->concurrency = c->concurrency < c->max_connections ? c->concurrency : c->max_connections;
	o->per_host = c->per_host < c->max_per_host ? c->per_host : c->max_per_host;
	o->timeout_ms = c->timeout_ms;
	o->connect_timeout_ms = c->connect_timeout_ms;
	o->deadline_ms = c->deadline_ms;
	o->max_body_bytes = c->max_body_bytes;
	o->max_header_bytes = c->max_header_bytes;
	o->follow_redirects = c->follow_redirects;
	o->include_headers = 1;
	o->http2 = c->http2 != 0;
	o->rate_burst = 1;
	o->conf = c;
}

static const char *const body_modes[] = { "auto", "text", "base64", "json", "none", NULL };
static const char *const orders[] = { "completion", "input", NULL };

static int
intake_set_headers(const json_t *v, const char *name, struct bopts *o, char *why, size_t whylen)
{
	if (intake_headers(v, name, why, whylen) < 0)
		return -1;
	o->headers = v;
	return 0;
}

static int
intake_set_body(const json_t *v, const char *name, struct bopts *o, char *why, size_t whylen)
{
	int e;

	if (intake_enum(v, name, body_modes, &e, why, whylen) < 0)
		return -1;
	o->body = (enum body_mode)e;
	return 0;
}

static int
intake_set_order(const json_t *v, const char *name, struct bopts *o, char *why, size_t whylen)
{
	return intake_enum(v, name, orders, &o->order_input, why, whylen);
}

static int
intake_bool(const json_t *v, const char *name, int *out, char *why, size_t whylen)
{
	if (!json_is_boolean(v)) {
		snprintf(why, whylen, "%s: must be true or false", name);
		return -1;
	}
	*out = json_is_true(v);
	return 0;
}

static int
intake_set_include_headers(const json_t *v, const char *name, struct bopts *o, char *why,
    size_t whylen)
{
	return intake_bool(v, name, &o->include_headers, why, whylen);
}

/* true cannot turn on what the configuration turned off. */
static int
intake_set_http2(const json_t *v, const char *name, struct bopts *o, char *why, size_t whylen)
{
	int on;

	if (intake_bool(v, name, &on, why, whylen) < 0)
		return -1;
	o->http2 = on && o->conf->http2;
	return 0;
}

/* Requests a second: any JSON number above 0 and up to the configuration's
 * own bound for rate_limit. */
static int
intake_set_rate(const json_t *v, const char *name, struct bopts *o, char *why, size_t whylen)
{
	double r = json_number_value(v);

	if (!json_is_number(v) || !(r > 0) || r > INTAKE_MAX_RATE) {
		snprintf(why, whylen, "%s: must be a number above 0 and at most %d", name,
		    INTAKE_MAX_RATE);
		return -1;
	}
	o->rate_per_host = r;
	return 0;
}

/*
 * The options table, in the shape of conf.c's: a row per option. A numeric
 * option takes the bounds of the configuration key of the same name
 * (conf_bounds), so that the file and a batch accept one range; only
 * `retries` and `rate_burst`, which have no key, carry their own. `cap` names the
 * configuration field that is the option's ceiling; the others are set by
 * their row's function.
 */
enum intake_type { INTAKE_UINT, INTAKE_SIZE, INTAKE_OTHER };

struct intake_opt {
	const char *name;
	enum intake_type type;
	size_t off;			/* numeric: the field in struct bopts */
	size_t cap;			/* numeric: the ceiling in struct conf, or INTAKE_NO_CAP */
	uint64_t min, max;		/* numeric options without a configuration key */
	int (*set)(const json_t *, const char *, struct bopts *, char *, size_t);
};

#define INTAKE_NO_CAP SIZE_MAX
#define BOPTS_OFF(f, T) _Generic(((struct bopts *)0)->f, T: offsetof(struct bopts, f))
#define CONF_CAP(f, T) _Generic(((struct conf *)0)->f, T: offsetof(struct conf, f))

#define OPT_UINT(f, capf) { .name = #f, .type = INTAKE_UINT, \
	.off = BOPTS_OFF(f, unsigned), .cap = CONF_CAP(capf, unsigned) }
#define OPT_SIZE(f, capf) { .name = #f, .type = INTAKE_SIZE, \
	.off = BOPTS_OFF(f, size_t), .cap = CONF_CAP(capf, size_t) }
#define OPT_OWN(f, lo, hi) { .name = #f, .type = INTAKE_UINT, \
	.off = BOPTS_OFF(f, unsigned), .cap = INTAKE_NO_CAP, .min = (lo), .max = (hi) }
#define OPT_SET(f, fn) { .name = #f, .type = INTAKE_OTHER, .set = (fn) }

static const struct intake_opt intake_opts[] = {
	OPT_UINT(concurrency, max_connections),
	OPT_UINT(per_host, max_per_host),
	OPT_UINT(timeout_ms, timeout_ms),
	OPT_UINT(connect_timeout_ms, connect_timeout_ms),
	{ .name = "deadline_ms", .type = INTAKE_UINT, .off = BOPTS_OFF(deadline_ms, unsigned),
	  .cap = INTAKE_NO_CAP },
	OPT_SIZE(max_body_bytes, max_body_bytes),
	OPT_UINT(follow_redirects, follow_redirects),
	OPT_OWN(retries, 0, INTAKE_MAX_RETRIES),
	OPT_SET(rate_per_host, intake_set_rate),
	OPT_OWN(rate_burst, 1, INTAKE_MAX_RATE),
	OPT_SET(headers, intake_set_headers),
	OPT_SET(body, intake_set_body),
	OPT_SET(order, intake_set_order),
	OPT_SET(include_headers, intake_set_include_headers),
	OPT_SET(http2, intake_set_http2),
};

#define INTAKE_NOPTS (sizeof(intake_opts) / sizeof(intake_opts[0]))

static const struct intake_opt *
intake_opt_find(const char *name)
{
	for (size_t i = 0; i < INTAKE_NOPTS; i++)
		if (strcmp(intake_opts[i].name, name) == 0)
			return &intake_opts[i];
	return NULL;
}

/* A numeric option's value, checked against its row's bounds and lowered to
 * its ceiling in c. */
static int
intake_number(const struct intake_opt *row, const json_t *v, const char *name,
    const struct conf *c, unsigned long long *out, char *why, size_t whylen)
{
	uint64_t min = row->min, max = row->max;
	unsigned long long cap = ULLONG_MAX;

	/* Left as they are when the option has no configuration key (retries). */
	(void)conf_bounds(row->name, &min, &max);
	if (row->cap != INTAKE_NO_CAP) {
		const char *capp = (const char *)c + row->cap;
		cap = row->type == INTAKE_SIZE ? *(const size_t *)(const void *)capp :
		    *(const unsigned *)(const void *)capp;
	}
	return intake_uint(v, name, min, max, cap, out, why, whylen);
}

/* One key of "options"; -1 with why on a bad value or an unknown key. */
static int
intake_option(const char *k, const json_t *v, const struct conf *c, struct bopts *o, char *why,
    size_t whylen)
{
	const struct intake_opt *row;
	unsigned long long u;
	char name[80];
	char *field;

	snprintf(name, sizeof(name), "options.%.60s", k);
	if ((row = intake_opt_find(k)) == NULL) {
		snprintf(why, whylen, "%s: unknown option", name);
		return -1;
	}
	if (row->type == INTAKE_OTHER)
		return row->set(v, name, o, why, whylen);
	if (intake_number(row, v, name, c, &u, why, whylen) < 0)
		return -1;
	field = (char *)o + row->off;
	if (row->type == INTAKE_SIZE)
		*(size_t *)(void *)field = (size_t)u;
	else
		*(unsigned *)(void *)field = (unsigned)u;
	return 0;
}

/* The "options" object, into o (which holds the defaults). */
static int
intake_options(const json_t *opts, const struct conf *c, struct bopts *o, char *why,
    size_t whylen)
{
	const char *k;
	size_t klen;
	json_t *v;

	if (!json_is_object(opts)) {
		snprintf(why, whylen, "options: must be an object");
		return -1;
	}
	json_object_keylen_foreach((json_t *)(uintptr_t)opts, k, klen, v) {
		if (!intake_plain(k, klen)) {
			snprintf(why, whylen, "options: a key holds a NUL");
			return -1;
		}
		if (intake_option(k, v, c, o, why, whylen) < 0)
			return -1;
	}
	return 0;
}

int
intake_document(const json_t *doc, const struct conf *c, struct bopts *o, char *why,
    size_t whylen)
{
	const json_t *reqs, *opts, *v;
	const char *k;
	size_t i;

	intake_defaults(c, o);
	if (!json_is_object(doc)) {
		snprintf(why, whylen, "the document must be a JSON object");
		return 400;
	}
	size_t klen;

	json_object_keylen_foreach((json_t *)(uintptr_t)doc, k, klen, v) {
		if (!intake_plain(k, klen) || (strcmp(k, "requests") != 0 && strcmp(k, "options") != 0)) {
			snprintf(why, whylen, "unknown key \"%.64s\"", k);
			return 400;
		}
	}
	reqs = json_object_get(doc, "requests");
	if (reqs == NULL) {
		snprintf(why, whylen, "requests: missing");
		return 400;
	}
	if (!json_is_array(reqs)) {
		snprintf(why, whylen, "requests: must be an array");
		return 400;
	}
	if (json_array_size(reqs) == 0) {
		snprintf(why, whylen, "requests: must not be empty");
		return 400;
	}
	if (json_array_size(reqs) > c->max_batch) {
		snprintf(why, whylen, "requests: more than %u requests", c->max_batch);
		return 413;
	}
	json_array_foreach(reqs, i, v) {
		if (!json_is_string(v) && !json_is_object(v)) {
			snprintf(why, whylen, "requests[%zu]: must be a string or an object", i);
			return 400;
		}
	}
	opts = json_object_get(doc, "options");
	return opts == NULL || intake_options(opts, c, o, why, whylen) == 0 ? 0 : 400;
}

int
intake_stream_first(const json_t *line, const struct conf *c, struct bopts *o, char *why,
    size_t whylen)
{
	const json_t *opts;

	intake_defaults(c, o);
	if (!json_is_object(line) || (opts = json_object_get(line, "options")) == NULL)
		return 0;
	if (json_object_size(line) != 1) {
		snprintf(why, whylen, "the options line must hold \"options\" alone");
		return -1;
	}
	return intake_options(opts, c, o, why, whylen) == 0 ? 1 : -1;
}

static int
intake_url(const json_t *v, struct reqspec *r, char *why, size_t whylen)
{
	char msg[160];

	if (v == NULL) {
		snprintf(why, whylen, "url: missing");
		return -1;
	}
	if (!json_is_string(v)) {
		snprintf(why, whylen, "url: must be a string");
		return -1;
	}
	if (!intake_plain_string(v)) {
		snprintf(why, whylen, "url: control character or space in URL");
		return -1;
	}
	if (url_parse(&r->url, json_string_value(v), msg, sizeof(msg)) < 0) {
		snprintf(why, whylen, "url: %s", msg);
		return -1;
	}
	return 0;
}

/* A caller's Host must name what the URL names: anything else would send
 * one origin's request to another. */
static int
intake_host_header(const json_t *h, const struct reqspec *r, char *why, size_t whylen)
{
	const char *k;
	json_t *v;

	json_object_foreach((json_t *)(uintptr_t)h, k, v) {
		if (strcasecmp(k, "host") == 0 &&
		    strcasecmp(json_string_value(v), r->url.authority) != 0) {
			snprintf(why, whylen, "headers.%s: must equal the URL's authority \"%s\"", k,
			    r->url.authority);
			return -1;
		}
	}
	return 0;
}

static const char *const request_keys[] = {
	"url", "method", "headers", "body", "json", "id", "timeout_ms", NULL,
};

static int
intake_keys(const json_t *elem, char *why, size_t whylen)
{
	const char *k;
	size_t klen;
	json_t *v;

	json_object_keylen_foreach((json_t *)(uintptr_t)elem, k, klen, v) {
		int known = 0;
		if (!intake_plain(k, klen)) {
			snprintf(why, whylen, "a key holds a NUL");
			return -1;
		}
		for (int i = 0; request_keys[i] != NULL; i++)
			known |= strcmp(k, request_keys[i]) == 0;
		if (!known) {
			snprintf(why, whylen, "unknown key \"%.64s\"", k);
			return -1;
		}
	}
	return 0;
}

static int
intake_fields(const json_t *elem, const struct bopts *o, struct reqspec *r, char *why,
    size_t whylen)
{
	const json_t *v;
	unsigned long long u;

	if ((v = json_object_get(elem, "method")) != NULL) {
		if (!intake_plain_string(v) || !intake_token(json_string_value(v)) ||
		    json_string_length(v) > 32) {
			snprintf(why, whylen, "method: must be an HTTP token");
			return -1;
		}
		r->method = json_string_value(v);
	}
	if ((v = json_object_get(elem, "headers")) != NULL) {
		if (intake_headers(v, "headers", why, whylen) < 0 ||
		    intake_host_header(v, r, why, whylen) < 0)
			return -1;
		r->headers = v;
	}
	if ((v = json_object_get(elem, "body")) != NULL) {
		if (!json_is_string(v)) {
			snprintf(why, whylen, "body: must be a string");
			return -1;
		}
		r->body = json_string_value(v);
		r->bodylen = json_string_length(v);
	}
	if ((v = json_object_get(elem, "json")) != NULL) {
		if (r->body != NULL) {
			snprintf(why, whylen, "body and json: give one or the other");
			return -1;
		}
		r->json = v;
	}
	if ((v = json_object_get(elem, "id")) != NULL && !json_is_string(v) && !json_is_number(v)) {
		snprintf(why, whylen, "id: must be a string or a number");
		return -1;
	}
	if ((v = json_object_get(elem, "timeout_ms")) != NULL) {
		/* The configured value is the ceiling, not the batch's option: a
		 * request may ask for more time than its batch's default. */
		if (intake_number(intake_opt_find("timeout_ms"), v, "timeout_ms", o->conf, &u, why,
		    whylen) < 0)
			return -1;
		r->timeout_ms = (unsigned)u;
	}
	return 0;
}

int
intake_request(const json_t *elem, const struct bopts *o, struct reqspec *r, char *why,
    size_t whylen)
{
	memset(r, 0, sizeof(*r));
	r->method = "GET";
	r->timeout_ms = o->timeout_ms;
	if (json_is_string(elem))
		return intake_url(elem, r, why, whylen);
	if (intake_keys(elem, why, whylen) < 0 ||
	    intake_url(json_object_get(elem, "url"), r, why, whylen) < 0)
		return -1;
	return intake_fields(elem, o, r, why, whylen);
}
