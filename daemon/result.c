/* result.c: see result.h. Response headers come out as the contract says:
 * lower-case names, repeats joined with ", ", set-cookie always an array. */
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <jansson.h>

#include "jout.h"
#include "result.h"

/* Names are as long as max_header_bytes allows: lowered a slice at a time
 * into one JSON string. */
static void
result_lower_name(struct jbuf *out, const char *name, size_t n)
{
	char buf[256];

	jb_add(out, "\"", 1);
	while (n > 0) {
		size_t k = n < sizeof(buf) ? n : sizeof(buf);
		for (size_t i = 0; i < k; i++)
			buf[i] = (char)tolower((unsigned char)name[i]);
		jout_esc(out, buf, k);
		name += k;
		n -= k;
	}
	jb_add(out, "\"", 1);
}

static int
result_same_name(const struct h1_header *a, const struct h1_header *b)
{
	return a->namelen == b->namelen && strncasecmp(a->name, b->name, a->namelen) == 0;
}

static void
result_headers(struct jbuf *out, const struct h1_head *h)
{
	int first = 1;

	jb_add(out, "{", 1);
	for (size_t i = 0; i < h->nheaders; i++) {
		const struct h1_header *hi = &h->headers[i];
		int seen = 0, cookie;

		/* Headers are few (bounded by H1_MAX_HEADERS): the quadratic
		 * grouping is cheaper than building a table. */
		for (size_t j = 0; j < i && !seen; j++)
			seen = result_same_name(&h->headers[j], hi);
		if (seen)
			continue;
		cookie = hi->namelen == 10 && strncasecmp(hi->name, "set-cookie", 10) == 0;
		jb_add(out, ",", first ? 0 : 1);
		first = 0;
		result_lower_name(out, hi->name, hi->namelen);
		jb_add(out, cookie ? ":[" : ":\"", 2);
		for (size_t j = i, n = 0; j < h->nheaders; j++) {
			const struct h1_header *hj = &h->headers[j];
			if (!result_same_name(hi, hj))
				continue;
			if (cookie) {
				jb_add(out, ",", n++ ? 1 : 0);
				jout_str(out, hj->value, hj->valuelen);
				continue;
			}
			if (n++)
				jb_add(out, ", ", 2);
			jout_esc(out, hj->value, hj->valuelen);
		}
		jb_add(out, cookie ? "]" : "\"", 1);
	}
	jb_add(out, "}", 1);
}

static int
result_json_type(const char *ct, size_t n)
{
	size_t end = 0;

	while (end < n && ct[end] != ';' && ct[end] != ' ')
		end++;
	if (end == 16 && strncasecmp(ct, "application/json", 16) == 0)
		return 1;
	return end >= 5 && strncasecmp(ct + end - 5, "+json", 5) == 0;
}

static int
result_dump_cb(const char *buf, size_t size, void *data)
{
	jb_add(data, buf, size);
	return 0;
}

/* Embeds body as a JSON value if it parses; 0 when it does not. */
static int
result_body_json(struct jbuf *out, struct evbuffer *body)
{
	size_t n = evbuffer_get_length(body);
	const char *p = n > 0 ? (const char *)evbuffer_pullup(body, -1) : "";
	json_error_t err;
	json_t *v = json_loadb(p, n, JSON_DECODE_ANY, &err);

	if (v == NULL)
		return 0;
	/* Re-serialised compact, so NDJSON stays one line per result. */
	json_dump_callback(v, result_dump_cb, out, JSON_COMPACT | JSON_ENCODE_ANY);
	json_decref(v);
	return 1;
}

static const char *
result_body_jb(struct jbuf *out, enum body_mode m, struct evbuffer *body, const char *ct,
    size_t ctlen)
{
	size_t n = evbuffer_get_length(body);

	if (m == BODY_NONE)
		return "none";
	if ((m == BODY_JSON || (m == BODY_AUTO && ct != NULL && result_json_type(ct, ctlen))) &&
	    result_body_json(out, body))
		return "json";
	if (m != BODY_BASE64 &&
	    jout_utf8_valid(n > 0 ? (const char *)evbuffer_pullup(body, -1) : "", n)) {
		jout_str_buf(out, body);
		return "text";
	}
	jout_base64_buf(out, body);
	return "base64";
}

static void
result_timing(struct jbuf *out, const struct report *r, uint64_t t_start)
{
	uint64_t end = r->t_end;
	double queue = r->t_dispatch ? (double)(r->t_dispatch - t_start) / 1000.0 :
	    (double)(end - t_start) / 1000.0;
	double total = r->t_dispatch ? (double)(end - r->t_dispatch) / 1000.0 : 0;
	double throttle = (double)r->throttle_us / 1000.0;

	JB_LIT(out, ",\"timing\":{\"queue_ms\":");
	jout_ms(out, queue);
	JB_LIT(out, ",\"dns_ms\":");
	jout_ms(out, r->dns_ms);
	JB_LIT(out, ",\"connect_ms\":");
	jout_ms(out, r->connect_ms);
	JB_LIT(out, ",\"tls_ms\":");
	jout_ms(out, r->tls_ms);
	JB_LIT(out, ",\"ttfb_ms\":");
	jout_ms(out, r->ttfb_ms);
	JB_LIT(out, ",\"total_ms\":");
	jout_ms(out, total);
	JB_LIT(out, ",\"throttle_ms\":");
	/* Part of queue_ms: a wait before dispatch is counted in whole
	 * milliseconds, which must not make it seem longer than the queue. */
	jout_ms(out, throttle < queue ? throttle : queue);
	JB_LIT(out, "}}");
}

static void
result_url(struct jbuf *out, const struct report *r, const json_t *elem)
{
	const json_t *url = json_is_string(elem) ? elem : json_object_get(elem, "url");
	const json_t *id = json_is_object(elem) ? json_object_get(elem, "id") : NULL;

	JB_LIT(out, "{\"index\":");
	jout_uint(out, r->index);
	if (id != NULL) {
		jb_add(out, ",\"id\":", 6);
		json_dump_callback(id, result_dump_cb, out, JSON_COMPACT | JSON_ENCODE_ANY);
	}
	jb_add(out, ",\"url\":", 7);
	if (json_is_string(url))
		jout_str(out, json_string_value(url), json_string_length(url));
	else
		jb_add(out, "null", 4);
	if (r->final_url != NULL) {
		jb_add(out, ",\"final_url\":", 13);
		jout_cstr(out, r->final_url);
	}
}

const char *
result_body(struct evbuffer *out, enum body_mode m, struct evbuffer *body, const char *ct,
    size_t ctlen)
{
	struct jbuf jb;
	const char *enc;

	jb_init(&jb, out);
	enc = result_body_jb(&jb, m, body, ct, ctlen);
	jb_flush(&jb);
	return enc;
}

static void
result_write_jb(struct jbuf *out, const struct report *r, const struct bopts *o,
    const json_t *elem, uint64_t t_start)
{
	result_url(out, r, elem);
	if (r->kind != KIND_NONE) {
		jb_add(out, ",\"error\":{\"kind\":", 17);
		jout_cstr(out, kind_name(r->kind));
		jb_add(out, ",\"message\":", 11);
		jout_cstr(out, r->msg);
		JB_LIT(out, "},\"attempts\":");
		jout_uint(out, r->attempts);
		result_timing(out, r, t_start);
		return;
	}
	JB_LIT(out, ",\"status\":");
	jout_uint(out, (uint64_t)r->head.status);
	JB_LIT(out, ",\"protocol\":\"");
	jb_add(out, r->protocol, strlen(r->protocol));
	JB_LIT(out, "\"");
	if (o->include_headers) {
		jb_add(out, ",\"headers\":", 11);
		result_headers(out, &r->head);
	}
	const struct h1_header *ct = h1_find(&r->head, "content-type");
	struct evbuffer *body = r->body;
	if (o->body != BODY_NONE)
		jb_add(out, ",\"body\":", 8);
	const char *enc = result_body_jb(out, o->body, body, ct ? ct->value : NULL,
	    ct ? ct->valuelen : 0);
	JB_LIT(out, ",\"body_encoding\":\"");
	jb_add(out, enc, strlen(enc));
	JB_LIT(out, "\",\"bytes\":");
	jout_uint(out, r->bytes);
	JB_LIT(out, ",\"attempts\":");
	jout_uint(out, r->attempts);
	JB_LIT(out, ",\"remote\":");
	jout_cstr(out, r->remote);
	if (r->reused)
		JB_LIT(out, ",\"reused\":true");
	else
		JB_LIT(out, ",\"reused\":false");
	result_timing(out, r, t_start);
}

void
result_write(struct evbuffer *out, const struct report *r, const struct bopts *o,
    const json_t *elem, uint64_t t_start)
{
	struct jbuf jb;

	jb_init(&jb, out);
	result_write_jb(&jb, r, o, elem, t_start);
	jb_flush(&jb);
}
