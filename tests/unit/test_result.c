/* test_result.c: the JSON text of results: string escaping, UTF-8 checks,
 * base64, body modes and the response headers object. Every output is also
 * parsed back with jansson, so "valid JSON" is checked, not assumed. */
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <jansson.h>
#include <openssl/evp.h>

#include "jout.h"
#include "result.h"
#include "unit.h"

/* The buffer's text, NUL-terminated; the caller frees it. */
static char *
text_of(struct evbuffer *b)
{
	size_t n = evbuffer_get_length(b);
	char *s = malloc(n + 1);

	evbuffer_copyout(b, s, n);
	s[n] = '\0';
	return s;
}

static void
check_str(const char *in, size_t n, const char *want)
{
	struct evbuffer *b = evbuffer_new();
	char *got;
	json_t *v;

	struct jbuf jb;

	jb_init(&jb, b);
	jout_str(&jb, in, n);
	jb_flush(&jb);
	got = text_of(b);
	CHECK_STR(got, want);
	v = json_loads(got, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
	CHECK(v != NULL && json_is_string(v));
	json_decref(v);
	free(got);
	evbuffer_free(b);
}

static void
test_escaping(void)
{
	check_str("plain", 5, "\"plain\"");
	check_str("a\"b\\c", 5, "\"a\\\"b\\\\c\"");
	check_str("\n\r\t\x01\x1f", 5, "\"\\n\\r\\t\\u0001\\u001f\"");
	check_str("a\0b", 3, "\"a\\u0000b\"");
	check_str("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 14, "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"");
	/* Not UTF-8: each bad byte becomes U+FFFD, so the JSON stays valid. */
	check_str("a\xffz", 3, "\"a\xef\xbf\xbdz\"");
	check_str("\xc3", 1, "\"\xef\xbf\xbd\"");			/* cut short */
	check_str("\xc0\xaf", 2, "\"\xef\xbf\xbd\xef\xbf\xbd\"");	/* overlong */
	check_str("\xed\xa0\x80", 3, "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"");	/* surrogate */
}

/* Every special byte at every position of a string longer than the
 * escaper's eight-byte steps comes back intact through jansson. */
static void
test_escaping_long(void)
{
	static const char specials[] = "\"\\\n\x01\x1f\xc3\x7f ";
	char in[41];

	for (size_t k = 0; k < sizeof(specials) - 1; k++) {
		for (size_t pos = 0; pos < sizeof(in) - 1; pos++) {
			struct evbuffer *b = evbuffer_new();
			size_t n = sizeof(in) - 1;
			char *got;
			json_t *v;

			struct jbuf jb;

			memset(in, 'a', n);
			in[pos] = specials[k];
			if ((unsigned char)specials[k] == 0xc3 && pos + 1 < n)
				in[pos + 1] = (char)0xa9;	/* a whole UTF-8 sequence */
			jb_init(&jb, b);
			jout_str(&jb, in, n);
			jb_flush(&jb);
			got = text_of(b);
			v = json_loads(got, JSON_DECODE_ANY, NULL);
			CHECK(v != NULL && json_string_length(v) >= n - 1);
			if (v != NULL && pos + 1 < n)
				CHECK(json_string_length(v) == n && memcmp(json_string_value(v), in, n) == 0);
			json_decref(v);
			free(got);
			evbuffer_free(b);
		}
	}
}

static void
test_utf8(void)
{
	CHECK(jout_utf8_valid("", 0));
	CHECK(jout_utf8_valid("abc", 3));
	CHECK(jout_utf8_valid("\xf4\x8f\xbf\xbf", 4));
	CHECK(!jout_utf8_valid("\xf4\x90\x80\x80", 4));		/* past U+10FFFF */
	CHECK(!jout_utf8_valid("\xe2\x82", 2));
	CHECK(!jout_utf8_valid("\x80", 1));
	/* A bad byte or a whole sequence at every position of a string longer
	 * than the sixteen-byte steps. */
	for (size_t pos = 0; pos < 40; pos++) {
		char in[41];

		memset(in, 'a', 40);
		in[pos] = (char)0xff;
		CHECK(!jout_utf8_valid(in, 40));
		in[pos] = (char)0xc3;
		if (pos + 1 < 40) {
			in[pos + 1] = (char)0xa9;
			CHECK(jout_utf8_valid(in, 40));
		} else
			CHECK(!jout_utf8_valid(in, 40));
	}
}

static char *
body_as(enum body_mode m, const char *body, size_t n, const char *ct, const char **enc)
{
	struct evbuffer *in = evbuffer_new(), *out = evbuffer_new();
	char *s;

	/* Several chains, as bodies arrive from the network. */
	for (size_t i = 0; i < n; i += 3)
		evbuffer_add(in, body + i, n - i < 3 ? n - i : 3);
	*enc = result_body(out, m, in, ct, ct ? strlen(ct) : 0);
	s = text_of(out);
	evbuffer_free(in);
	evbuffer_free(out);
	return s;
}

static void
check_body(enum body_mode m, const char *body, size_t n, const char *ct, const char *want_enc,
    const char *want)
{
	const char *enc;
	char *got = body_as(m, body, n, ct, &enc);

	CHECK_STR(enc, want_enc);
	CHECK_STR(got, want);
	free(got);
}

static void
test_body_modes(void)
{
	const char *js = "{ \"a\" : [1, 2],\n \"b\": null }";

	check_body(BODY_AUTO, js, strlen(js), "application/json; charset=utf-8", "json",
	    "{\"a\":[1,2],\"b\":null}");
	check_body(BODY_AUTO, js, strlen(js), "application/problem+json", "json",
	    "{\"a\":[1,2],\"b\":null}");
	check_body(BODY_AUTO, js, strlen(js), "text/plain", "text",
	    "\"{ \\\"a\\\" : [1, 2],\\n \\\"b\\\": null }\"");
	check_body(BODY_AUTO, "{bad", 4, "application/json", "text", "\"{bad\"");
	check_body(BODY_AUTO, "\xff\x00\x01", 3, NULL, "base64", "\"/wAB\"");
	check_body(BODY_JSON, "42", 2, NULL, "json", "42");
	check_body(BODY_JSON, "nope", 4, NULL, "text", "\"nope\"");
	check_body(BODY_JSON, "\xff", 1, NULL, "base64", "\"/w==\"");
	check_body(BODY_TEXT, "hi", 2, "application/json", "text", "\"hi\"");
	check_body(BODY_TEXT, "h\xffi", 3, NULL, "base64", "\"aP9p\"");
	check_body(BODY_BASE64, "hello", 5, NULL, "base64", "\"aGVsbG8=\"");
	check_body(BODY_BASE64, "", 0, NULL, "base64", "\"\"");
	check_body(BODY_TEXT, "", 0, NULL, "text", "\"\"");
	check_body(BODY_NONE, "hello", 5, NULL, "none", "");
}

/* A big body crosses the base64 step (48 KiB) with no padding in between. */
static void
test_base64_long(void)
{
	size_t n = 100000;
	char *body = malloc(n), *got;
	const char *enc;
	json_t *v;

	for (size_t i = 0; i < n; i++)
		body[i] = (char)(i * 7);
	got = body_as(BODY_BASE64, body, n, NULL, &enc);
	CHECK(strlen(got) == (n + 2) / 3 * 4 + 2);
	CHECK(strchr(got + 1, '=') == NULL || strchr(got + 1, '=') >= got + strlen(got) - 3);
	v = json_loads(got, JSON_DECODE_ANY, NULL);
	CHECK(v != NULL);
	json_decref(v);
	free(got);
	free(body);
}

/* The hand-written encoder against OpenSSL's, every length up to a few
 * hundred bytes and some long inputs: on x86_64 that is the SSSE3 loop with
 * every length of scalar tail after it. */
static void
test_base64_against_openssl(void)
{
	unsigned char src[3000];
	char mine[4100], ref[4100];

	for (size_t i = 0; i < sizeof(src); i++)
		src[i] = (unsigned char)(i * 131 + (i >> 3));
	for (size_t n = 0; n <= sizeof(src); n += n < 300 ? 1 : 677) {
		size_t a = jout_base64(mine, src, n);
		int b = EVP_EncodeBlock((unsigned char *)ref, src, (int)n);
		CHECK(a == (size_t)b && memcmp(mine, ref, a) == 0);
	}
}

static void
test_result_object(void)
{
	static const char resp[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
	    "Set-Cookie: a=1\r\nX-Many: 1\r\nset-cookie: b=2\r\nx-many: 2\r\nX-Bin: \xff\r\n"
	    "Content-Length: 2\r\n\r\n";
	struct bopts o = { .include_headers = 1, .body = BODY_AUTO };
	struct report r = { .index = 3, .attempts = 1, .reused = 1, .protocol = "http/1.1" };
	struct evbuffer *in = evbuffer_new(), *out = evbuffer_new();
	const char *why;
	json_t *elem = json_pack("{s:s,s:i}", "url", "http://a.test/x", "id", 7), *v;
	char *got;

	evbuffer_add(in, resp, sizeof(resp) - 1);
	CHECK(h1_parse_head(in, 65536, 0, &r.head, &why) == H1_DONE);
	r.body = evbuffer_new();
	evbuffer_add(r.body, "[]", 2);
	r.bytes = 2;
	result_write(out, &r, &o, elem, 0);
	got = text_of(out);
	v = json_loads(got, 0, NULL);
	CHECK(v != NULL);
	CHECK(json_integer_value(json_object_get(v, "index")) == 3);
	CHECK(json_integer_value(json_object_get(v, "id")) == 7);
	CHECK(json_integer_value(json_object_get(v, "status")) == 200);
	CHECK_STR(json_string_value(json_object_get(v, "protocol")), "http/1.1");
	CHECK_STR(json_string_value(json_object_get(v, "body_encoding")), "json");
	json_t *h = json_object_get(v, "headers");
	CHECK_STR(json_string_value(json_object_get(h, "x-many")), "1, 2");
	CHECK_STR(json_string_value(json_object_get(h, "x-bin")), "\xef\xbf\xbd");
	CHECK(json_array_size(json_object_get(h, "set-cookie")) == 2);
	CHECK_STR(json_string_value(json_array_get(json_object_get(h, "set-cookie"), 1)), "b=2");
	CHECK(json_is_true(json_object_get(v, "reused")));
	CHECK(json_object_get(json_object_get(v, "timing"), "total_ms") != NULL);
	json_decref(v);
	free(got);

	/* An error result has no status, headers or body. */
	evbuffer_drain(out, evbuffer_get_length(out));
	r.kind = KIND_TIMEOUT;
	snprintf(r.msg, sizeof(r.msg), "body not complete within 5 ms");
	result_write(out, &r, &o, elem, 0);
	got = text_of(out);
	v = json_loads(got, 0, NULL);
	CHECK(v != NULL && json_object_get(v, "status") == NULL);
	CHECK_STR(json_string_value(json_object_get(json_object_get(v, "error"), "kind")), "timeout");
	json_decref(v);
	free(got);

	h1_head_clear(&r.head);
	evbuffer_free(r.body);
	evbuffer_free(in);
	evbuffer_free(out);
	json_decref(elem);
}

/* Header names are not cut at any fixed length: names that differ only past
 * the lowering buffer's size are two keys, whole. */
static void
test_long_header_names(void)
{
	struct bopts o = { .include_headers = 1, .body = BODY_NONE };
	struct report r = { .attempts = 1, .protocol = "h2" };
	struct evbuffer *in = evbuffer_new(), *out = evbuffer_new();
	char name[700], want[700];
	const char *why;
	json_t *elem = json_string("http://a.test/"), *v, *h;
	char *got;

	evbuffer_add_printf(in, "HTTP/1.1 200 OK\r\n");
	for (int i = 1; i <= 2; i++) {
		memset(name, 'N', sizeof(name) - 2);
		name[sizeof(name) - 2] = (char)('0' + i);
		name[sizeof(name) - 1] = '\0';
		evbuffer_add_printf(in, "%s: v%d\r\n", name, i);
	}
	evbuffer_add_printf(in, "Content-Length: 0\r\n\r\n");
	CHECK(h1_parse_head(in, 65536, 0, &r.head, &why) == H1_DONE);
	r.body = evbuffer_new();
	result_write(out, &r, &o, elem, 0);
	got = text_of(out);
	v = json_loads(got, JSON_REJECT_DUPLICATES, NULL);
	CHECK(v != NULL);
	h = json_object_get(v, "headers");
	CHECK(json_object_size(h) == 3);
	for (int i = 1; i <= 2; i++) {
		char val[4];
		memset(want, 'n', sizeof(want) - 2);
		want[sizeof(want) - 2] = (char)('0' + i);
		want[sizeof(want) - 1] = '\0';
		snprintf(val, sizeof(val), "v%d", i);
		CHECK_STR(json_string_value(json_object_get(h, want)), val);
	}
	json_decref(v);
	free(got);
	h1_head_clear(&r.head);
	evbuffer_free(r.body);
	evbuffer_free(in);
	evbuffer_free(out);
	json_decref(elem);
}

int
main(void)
{
	test_escaping();
	test_escaping_long();
	test_utf8();
	test_body_modes();
	test_base64_long();
	test_base64_against_openssl();
	test_result_object();
	test_long_header_names();
	return UNIT_DONE();
}
