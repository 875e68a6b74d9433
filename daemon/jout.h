/* jout.h: JSON text written straight into an evbuffer. Results are streamed
 * as text rather than built as jansson trees and dumped: bodies can be
 * megabytes, and a tree would copy them twice.
 *
 * Writes go through a jbuf, a small staging buffer in front of the evbuffer:
 * a result is dozens of short pieces, and evbuffer_add() costs about a
 * hundred instructions a call whatever the size. */
#ifndef FANOUTD_JOUT_H
#define FANOUTD_JOUT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct evbuffer;

struct jbuf {
	struct evbuffer *out;
	size_t len;
	char b[4096];
};

void jb_init(struct jbuf *jb, struct evbuffer *out);
/* Moves what is staged into the evbuffer; call before using it directly. */
void jb_flush(struct jbuf *jb);
void jb_add_slow(struct jbuf *jb, const void *p, size_t n);

static inline void
jb_add(struct jbuf *jb, const void *p, size_t n)
{
	if (n <= sizeof(jb->b) - jb->len) {
		memcpy(jb->b + jb->len, p, n);
		jb->len += n;
	} else
		jb_add_slow(jb, p, n);
}

/* Appends a string literal. */
#define JB_LIT(jb, s) jb_add((jb), (s), sizeof(s) - 1)

/* True when s[0..n) is well-formed UTF-8 (no overlongs, no surrogates). */
int jout_utf8_valid(const char *s, size_t n);

/* Appends s as a quoted JSON string. Bytes that are not valid UTF-8 are
 * written as U+FFFD, so the output is always valid JSON. */
void jout_str(struct jbuf *out, const char *s, size_t n);
void jout_cstr(struct jbuf *out, const char *s);

/* The same escaping without the quotes, to build one string in pieces. */
void jout_esc(struct jbuf *out, const char *s, size_t n);

/* Appends the contents of src (left untouched) as a quoted JSON string. */
void jout_str_buf(struct jbuf *out, struct evbuffer *src);

/* Writes the base64 of src[0..n) (with padding, no newlines) to dst, which
 * has room for (n + 2) / 3 * 4 bytes; returns the length written. */
size_t jout_base64(char *dst, const unsigned char *src, size_t n);

/* Appends the contents of src (left untouched) as a quoted base64 string. */
void jout_base64_buf(struct jbuf *out, struct evbuffer *src);

/* Numbers without printf, which showed in profiles of the result writer. */
void jout_uint(struct jbuf *out, uint64_t v);
/* A millisecond figure with one decimal, e.g. 12.3 */
void jout_ms(struct jbuf *out, double ms);

/* Appends a string literal to an evbuffer. */
#define JOUT_LIT(out, s) evbuffer_add((out), (s), sizeof(s) - 1)

#endif
