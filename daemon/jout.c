/* jout.c: JSON string escaping, UTF-8 checking and base64 into evbuffers.
 * Hand-written because jansson only escapes its own json_t strings, and going
 * through one would copy every body once more. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <event2/buffer.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "jout.h"

/* Length of the valid UTF-8 sequence at s (n bytes left), or 0 if invalid. */
static size_t
utf8_seq(const unsigned char *s, size_t n)
{
	unsigned char c = s[0];
	size_t len;
	uint32_t cp;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf) {
		len = 2;
		cp = c & 0x1f;
	} else if (c >= 0xe0 && c <= 0xef) {
		len = 3;
		cp = c & 0x0f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		len = 4;
		cp = c & 0x07;
	} else
		return 0;
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

void
jb_init(struct jbuf *jb, struct evbuffer *out)
{
	jb->out = out;
	jb->len = 0;
}

void
jb_flush(struct jbuf *jb)
{
	if (jb->len > 0)
		evbuffer_add(jb->out, jb->b, jb->len);
	jb->len = 0;
}

void
jb_add_slow(struct jbuf *jb, const void *p, size_t n)
{
	jb_flush(jb);
	if (n >= sizeof(jb->b))
		evbuffer_add(jb->out, p, n);	/* a long run: no staging */
	else {
		memcpy(jb->b, p, n);
		jb->len = n;
	}
}

/* Bytes that end a run of plain characters: controls, '"', '\\' and
 * non-ASCII (which is checked as UTF-8). */
static const unsigned char jout_special[256] = {
	[0 ... 0x1f] = 1, ['"'] = 1, ['\\'] = 1, [0x80 ... 0xff] = 1,
};

/* How many bytes at the start of s[0..n) are plain: ASCII and, when json is
 * set, not special (jout_special) either. Text bodies spend most of their
 * escaping here, so with SSE2, which every x86_64 CPU has, it takes sixteen
 * bytes a step and the exact position from the mask; a signed compare below
 * 0x20 flags controls and bytes >= 0x80 at once. */
static size_t
jout_plain_run(const unsigned char *s, size_t n, int json)
{
	size_t i = 0;

#if defined(__SSE2__)
	const __m128i space = _mm_set1_epi8(0x20), quote = _mm_set1_epi8('"'),
	    bslash = _mm_set1_epi8('\\');

	for (; n - i >= 16; i += 16) {
		__m128i v = _mm_loadu_si128((const __m128i *)(s + i));
		__m128i bad = json ? _mm_or_si128(_mm_cmplt_epi8(v, space),
		    _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, bslash))) : v;
		int mask = _mm_movemask_epi8(bad);

		if (mask != 0)
			return i + (size_t)__builtin_ctz((unsigned)mask);
	}
#endif
	while (i < n && (json ? !jout_special[s[i]] : s[i] < 0x80))
		i++;
	return i;
}

int
jout_utf8_valid(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;

	for (size_t i = 0; i < n;) {
		i += jout_plain_run(p + i, n - i, 0);	/* ASCII: the common case */
		if (i == n)
			break;
		size_t l = utf8_seq(p + i, n - i);
		if (l == 0)
			return 0;
		i += l;
	}
	return 1;
}


/* Appends s[0..n) escaped, without quotes. */
static void
jout_escape(struct jbuf *out, const unsigned char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	size_t i = 0, run = 0;

	while (i < n) {
		unsigned char c;
		const char *esc;
		char u[7];

		i += jout_plain_run(s + i, n - i, 1);	/* plain text: the common case */
		if (i == n)
			break;
		c = s[i];
		if (c >= 0x80) {
			size_t l = utf8_seq(s + i, n - i);
			if (l > 0) {
				i += l;
				continue;
			}
			esc = "\xef\xbf\xbd";	/* U+FFFD for a byte that is not UTF-8 */
		} else if (c == '"')
			esc = "\\\"";
		else if (c == '\\')
			esc = "\\\\";
		else if (c == '\n')
			esc = "\\n";
		else if (c == '\r')
			esc = "\\r";
		else if (c == '\t')
			esc = "\\t";
		else {
			snprintf(u, sizeof(u), "\\u00%c%c", hex[c >> 4], hex[c & 15]);
			esc = u;
		}
		jb_add(out, s + run, i - run);
		jb_add(out, esc, strlen(esc));
		i++;
		run = i;
	}
	jb_add(out, s + run, i - run);
}

void
jout_esc(struct jbuf *out, const char *s, size_t n)
{
	jout_escape(out, (const unsigned char *)s, n);
}

void
jout_str(struct jbuf *out, const char *s, size_t n)
{
	jb_add(out, "\"", 1);
	jout_escape(out, (const unsigned char *)s, n);
	jb_add(out, "\"", 1);
}

void
jout_cstr(struct jbuf *out, const char *s)
{
	jout_str(out, s, strlen(s));
}

/* A body arrives in many small chains; making it contiguous costs one copy
 * but lets UTF-8 sequences be checked without handling splits. */
static const unsigned char *
jout_linear(struct evbuffer *src, size_t *n)
{
	*n = evbuffer_get_length(src);
	return *n == 0 ? (const unsigned char *)"" : evbuffer_pullup(src, -1);
}

void
jout_str_buf(struct jbuf *out, struct evbuffer *src)
{
	size_t n;
	const unsigned char *p = jout_linear(src, &n);

	jb_add(out, "\"", 1);
	jout_escape(out, p, n);
	jb_add(out, "\"", 1);
}

/* Base64 by hand: OpenSSL's EVP_EncodeBlock spends about ten instructions a
 * byte, which made it 84% of the daemon's work in mode base64. Twelve bits
 * at a time through a table of character pairs is about four; SSSE3, where
 * the CPU has it, under one. */
static char jout_b64_pairs[4096][2];

static void
jout_b64_init(void)
{
	static const char abc[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

	for (int i = 0; i < 4096; i++) {
		jout_b64_pairs[i][0] = abc[i >> 6];
		jout_b64_pairs[i][1] = abc[i & 63];
	}
}

/* The portable encoder: six bytes a step through one 64-bit big-endian load
 * while eight are readable, then three at a time, then the padded end. */
static size_t
jout_base64_scalar(char *dst, const unsigned char *src, size_t n)
{
	static const char abc[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	char *o = dst;
	size_t i = 0;

	for (; n - i >= 8; i += 6, o += 8) {
		uint64_t v;

		memcpy(&v, src + i, 8);
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
		v = __builtin_bswap64(v);
#endif
		v >>= 16;	/* the six bytes, big-endian, in the low 48 bits */
		memcpy(o, jout_b64_pairs[(v >> 36) & 0xfff], 2);
		memcpy(o + 2, jout_b64_pairs[(v >> 24) & 0xfff], 2);
		memcpy(o + 4, jout_b64_pairs[(v >> 12) & 0xfff], 2);
		memcpy(o + 6, jout_b64_pairs[v & 0xfff], 2);
	}
	for (; n - i >= 3; i += 3, o += 4) {
		uint32_t v = (uint32_t)src[i] << 16 | (uint32_t)src[i + 1] << 8 | src[i + 2];
		memcpy(o, jout_b64_pairs[v >> 12], 2);
		memcpy(o + 2, jout_b64_pairs[v & 0xfff], 2);
	}
	if (n - i > 0) {
		uint32_t v = (uint32_t)src[i] << 16 | (n - i > 1 ? (uint32_t)src[i + 1] << 8 : 0);
		o[0] = abc[v >> 18];
		o[1] = abc[(v >> 12) & 63];
		o[2] = n - i > 1 ? abc[(v >> 6) & 63] : '=';
		o[3] = '=';
		o += 4;
	}
	return (size_t)(o - dst);
}

#if defined(__x86_64__)
#include <immintrin.h>

/* Twelve bytes to sixteen characters per step with SSSE3, the method
 * published by Wojciech Muła and Daniel Lemire ("Faster Base64 Encoding and
 * Decoding Using AVX2 Instructions", 2018): a byte shuffle puts each 3-byte
 * group in a 32-bit lane as [b1 b0 b2 b1]; two multiplies move the four
 * 6-bit fields into the lane's four bytes; a 16-entry shuffle table gives
 * the offset from each field's value to its character. The scalar encoder
 * still did 4.3 instructions a byte, a quarter of the daemon's CPU in mode
 * base64; this does under one. */
__attribute__((target("ssse3"))) static size_t
jout_base64_ssse3(char *dst, const unsigned char *src, size_t n)
{
	const __m128i spread = _mm_set_epi8(10, 11, 9, 10, 7, 8, 6, 7, 4, 5, 3, 4, 1, 2, 0, 1);
	const __m128i offsets = _mm_setr_epi8('a' - 26, '0' - 52, '0' - 52, '0' - 52, '0' - 52,
	    '0' - 52, '0' - 52, '0' - 52, '0' - 52, '0' - 52, '0' - 52, '+' - 62, '/' - 63, 'A', 0, 0);
	char *o = dst;
	size_t i = 0;

	for (; n - i >= 16; i += 12, o += 16) {	/* loads 16, uses 12 */
		__m128i in = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(src + i)), spread);
		__m128i ac = _mm_mulhi_epu16(_mm_and_si128(in, _mm_set1_epi32(0x0fc0fc00)),
		    _mm_set1_epi32(0x04000040));
		__m128i bd = _mm_mullo_epi16(_mm_and_si128(in, _mm_set1_epi32(0x003f03f0)),
		    _mm_set1_epi32(0x01000010));
		__m128i idx = _mm_or_si128(ac, bd);	/* one 6-bit value a byte */
		/* 0..25 -> 13, 26..51 -> 0, 52..63 -> 1..12: the offsets entry */
		__m128i sel = _mm_or_si128(_mm_subs_epu8(idx, _mm_set1_epi8(51)),
		    _mm_and_si128(_mm_cmpgt_epi8(_mm_set1_epi8(26), idx), _mm_set1_epi8(13)));
		__m128i chars = _mm_add_epi8(_mm_shuffle_epi8(offsets, sel), idx);

		_mm_storeu_si128((__m128i *)o, chars);
	}
	return (size_t)(o - dst) + jout_base64_scalar(o, src + i, n - i);
}
#endif

size_t
jout_base64(char *dst, const unsigned char *src, size_t n)
{
	static size_t (*encode)(char *, const unsigned char *, size_t);

	if (encode == NULL) {
		jout_b64_init();
		encode = jout_base64_scalar;
#if defined(__x86_64__)
		if (__builtin_cpu_supports("ssse3"))
			encode = jout_base64_ssse3;
#endif
	}
	return encode(dst, src, n);
}

void
jout_base64_buf(struct jbuf *out, struct evbuffer *src)
{
	enum { STEP = 48 * 1024 };	/* a multiple of 3: no padding mid-stream */
	size_t n;
	const unsigned char *p = jout_linear(src, &n);
	struct evbuffer_iovec v;

	jb_add(out, "\"", 1);
	jb_flush(out);	/* encoded straight into the evbuffer */
	for (size_t off = 0; off < n; off += STEP) {
		size_t len = n - off < STEP ? n - off : STEP;
		if (evbuffer_reserve_space(out->out, (ev_ssize_t)(len / 3 + 1) * 4 + 1, &v, 1) < 1)
			break;
		v.iov_len = jout_base64(v.iov_base, p + off, len);
		evbuffer_commit_space(out->out, &v, 1);
	}
	jb_add(out, "\"", 1);
}

void
jout_uint(struct jbuf *out, uint64_t v)
{
	char buf[20];
	size_t i = sizeof(buf);

	do
		buf[--i] = (char)('0' + v % 10);
	while ((v /= 10) != 0);
	jb_add(out, buf + i, sizeof(buf) - i);
}

void
jout_ms(struct jbuf *out, double ms)
{
	uint64_t tenths = ms > 0 ? (uint64_t)(ms * 10 + 0.5) : 0;
	char frac[2] = { '.', (char)('0' + tenths % 10) };

	jout_uint(out, tenths / 10);
	jb_add(out, frac, 2);
}
