/* fuzz_jout.c: JSON output (jout.c) of any bytes an upstream or a caller
 * could hand it: strings escaped for results (jout_str, jout_str_buf,
 * jout_esc), the UTF-8 check that picks a body's encoding, and base64.
 *
 * Beyond memory safety, against a reference written here:
 * - the escaped string is valid UTF-8 and valid JSON, and jansson reads it
 *   back (JSON_DECODE_ANY) as a string equal to the input when the input is
 *   valid UTF-8, else equal to the input with every byte that does not
 *   start a valid sequence replaced by U+FFFD, as jout.h documents;
 * - it holds no raw control character, and jout_str_buf (the body, in many
 *   chains) and jout_esc between quotes write the same bytes as jout_str;
 * - jout_utf8_valid agrees with the reference;
 * - base64 output decodes back to the input, and jout_base64_buf's is a
 *   JSON string of the same text. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <jansson.h>

#include "jout.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
jout_fail(const char *what, const uint8_t *out, size_t n)
{
	fprintf(stderr, "fuzz_jout: %s\n%.*s\n", what, n > 4096 ? 4096 : (int)n, (const char *)out);
	abort();
}

/* The length of the well-formed UTF-8 sequence at s (Unicode Table 3-7:
 * no overlongs, no surrogates, nothing above U+10FFFF), or 0. */
static size_t
ref_seq(const uint8_t *s, size_t n)
{
	uint8_t c = s[0], lo = 0x80, hi = 0xbf;
	size_t len;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		len = 2;
	else if (c >= 0xe0 && c <= 0xef)
		len = 3;
	else if (c >= 0xf0 && c <= 0xf4)
		len = 4;
	else
		return 0;
	if (c == 0xe0)
		lo = 0xa0;
	else if (c == 0xed)
		hi = 0x9f;
	else if (c == 0xf0)
		lo = 0x90;
	else if (c == 0xf4)
		hi = 0x8f;
	if (n < len || s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++)
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	return len;
}

static int
ref_valid(const uint8_t *s, size_t n)
{
	for (size_t i = 0, l; i < n; i += l)
		if ((l = ref_seq(s + i, n - i)) == 0)
			return 0;
	return 1;
}

/* The input as jansson must read it back: invalid bytes as U+FFFD. */
static uint8_t *
ref_expect(const uint8_t *s, size_t n, size_t *len)
{
	uint8_t *e = malloc(3 * n + 1), *o = e;

	for (size_t i = 0, l; i < n; i += l) {
		if ((l = ref_seq(s + i, n - i)) == 0) {
			memcpy(o, "\xef\xbf\xbd", 3);
			o += 3;
			l = 1;
		} else {
			memcpy(o, s + i, l);
			o += l;
		}
	}
	*len = (size_t)(o - e);
	return e;
}

static const uint8_t *
take(struct evbuffer *b, size_t *n)
{
	*n = evbuffer_get_length(b);
	return *n == 0 ? (const uint8_t *)"" : evbuffer_pullup(b, -1);
}

static char stage_pad[sizeof(((struct jbuf *)0)->b) - 3];

static void
check_string(const uint8_t *data, size_t size)
{
	struct evbuffer *out = evbuffer_new(), *src = evbuffer_new(), *alt = evbuffer_new();
	struct jbuf jb;
	const uint8_t *o, *a;
	size_t n, na, elen;
	uint8_t *expect;
	json_error_t err;
	json_t *v;

	jb_init(&jb, out);
	jout_str(&jb, (const char *)data, size);
	jb_flush(&jb);
	o = take(out, &n);
	if (!ref_valid(o, n))
		jout_fail("escaped output is not UTF-8", o, n);
	for (size_t i = 0; i < n; i++)
		if (o[i] < 0x20)
			jout_fail("a raw control character in the output", o, n);
	v = json_loadb((const char *)o, n, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
	if (v == NULL || !json_is_string(v))
		jout_fail(v == NULL ? err.text : "not a JSON string", o, n);
	expect = ref_expect(data, size, &elen);
	if (json_string_length(v) != elen || memcmp(json_string_value(v), expect, elen) != 0)
		jout_fail("reads back as another string", o, n);
	if (ref_valid(data, size) && elen != size)
		jout_fail("valid UTF-8 changed", o, n);
	free(expect);
	json_decref(v);

	/* The same through jout_str_buf, the body cut into chains... */
	for (size_t off = 0, k; off < size; off += k) {
		k = (size_t)data[off] % 37 + 1;
		k = k < size - off ? k : size - off;
		evbuffer_add_reference(src, data + off, k, NULL, NULL);
	}
	jb_init(&jb, alt);
	jout_str_buf(&jb, src);
	jb_flush(&jb);
	a = take(alt, &na);
	if (na != n || memcmp(a, o, n) != 0)
		jout_fail("jout_str_buf differs from jout_str", a, na);
	if (evbuffer_get_length(src) != size)
		jout_fail("jout_str_buf took from its source", a, na);
	/* ...and through jout_esc between quotes, staged behind a prefix that
	 * leaves the staging buffer nearly full. */
	evbuffer_drain(alt, na);
	jb_init(&jb, alt);
	jb_add(&jb, stage_pad, sizeof(stage_pad));
	JB_LIT(&jb, "\"");
	jout_esc(&jb, (const char *)data, size);
	JB_LIT(&jb, "\"");
	jb_flush(&jb);
	evbuffer_drain(alt, sizeof(stage_pad));
	a = take(alt, &na);
	if (na != n || memcmp(a, o, n) != 0)
		jout_fail("jout_esc differs from jout_str", a, na);

	if (jout_utf8_valid((const char *)data, size) != ref_valid(data, size))
		jout_fail("jout_utf8_valid disagrees with the reference", data, size);
	evbuffer_free(out);
	evbuffer_free(src);
	evbuffer_free(alt);
}

static int
b64_val(uint8_t c)
{
	static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	const char *p = c != 0 ? strchr(abc, c) : NULL;

	return p != NULL ? (int)(p - abc) : -1;
}

/* Strict decoding: padded, canonical, nothing else. */
static int
b64_decode(const uint8_t *s, size_t n, uint8_t *dst, size_t *len)
{
	size_t o = 0;

	if (n % 4 != 0)
		return -1;
	for (size_t i = 0; i < n; i += 4) {
		int v[4], pad = 0;
		for (int j = 0; j < 4; j++) {
			v[j] = b64_val(s[i + j]);
			if (s[i + j] == '=' && i + 4 == n && j >= 2) {
				v[j] = 0;
				pad++;
			} else if (v[j] < 0 || pad > 0)
				return -1;
		}
		uint32_t x = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 |
		    (uint32_t)v[3];
		if ((pad == 1 && (x & 0xff)) || (pad == 2 && (x & 0xffff)))
			return -1;	/* bits that padding must leave zero */
		dst[o++] = (uint8_t)(x >> 16);
		if (pad < 2)
			dst[o++] = (uint8_t)(x >> 8);
		if (pad < 1)
			dst[o++] = (uint8_t)x;
	}
	*len = o;
	return 0;
}

static void
check_base64(const uint8_t *data, size_t size)
{
	size_t room = (size + 2) / 3 * 4, n, got;
	char *enc = malloc(room + 1);
	uint8_t *dec = malloc(size + 3);
	struct evbuffer *src = evbuffer_new(), *out = evbuffer_new();
	struct jbuf jb;
	const uint8_t *o;

	n = jout_base64(enc, data, size);
	if (n != room || b64_decode((const uint8_t *)enc, n, dec, &got) != 0 || got != size ||
	    (size > 0 && memcmp(dec, data, size) != 0))
		jout_fail("base64 does not decode back", (const uint8_t *)enc, n <= room ? n : room);
	evbuffer_add(src, data, size);
	jb_init(&jb, out);
	jout_base64_buf(&jb, src);
	jb_flush(&jb);
	o = take(out, &got);
	if (got != n + 2 || o[0] != '"' || o[n + 1] != '"' || memcmp(o + 1, enc, n) != 0)
		jout_fail("jout_base64_buf differs from jout_base64", o, got);
	free(enc);
	free(dec);
	evbuffer_free(src);
	evbuffer_free(out);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	check_string(data, size);
	check_base64(data, size);
	return 0;
}
