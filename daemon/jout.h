/* jout.h: JSON text written straight into an evbuffer. Results are streamed
 * as text rather than built as jansson trees and dumped: bodies can be
 * megabytes, and a tree would copy them twice. */
#ifndef FANOUTD_JOUT_H
#define FANOUTD_JOUT_H

#include <stddef.h>
#include <stdint.h>

struct evbuffer;

/* True when s[0..n) is well-formed UTF-8 (no overlongs, no surrogates). */
int jout_utf8_valid(const char *s, size_t n);

/* Appends s as a quoted JSON string. Bytes that are not valid UTF-8 are
 * written as U+FFFD, so the output is always valid JSON. */
void jout_str(struct evbuffer *out, const char *s, size_t n);
void jout_cstr(struct evbuffer *out, const char *s);

/* The same escaping without the quotes, to build one string in pieces. */
void jout_esc(struct evbuffer *out, const char *s, size_t n);

/* Appends the contents of src (left untouched) as a quoted JSON string. */
void jout_str_buf(struct evbuffer *out, struct evbuffer *src);

/* Appends the contents of src (left untouched) as a quoted base64 string. */
void jout_base64_buf(struct evbuffer *out, struct evbuffer *src);

/* Numbers without printf, which showed in profiles of the result writer. */
void jout_uint(struct evbuffer *out, uint64_t v);
/* A millisecond figure with one decimal, e.g. 12.3 */
void jout_ms(struct evbuffer *out, double ms);

/* Appends a string literal. */
#define JOUT_LIT(out, s) evbuffer_add((out), (s), sizeof(s) - 1)

#endif
