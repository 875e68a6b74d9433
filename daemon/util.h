/* util.h: allocation that cannot fail (out of memory is fatal for a daemon
 * that would otherwise half-serve), the monotonic clock, the error kinds
 * every module reports in, and socket addresses as text. */
#ifndef FANOUTD_UTIL_H
#define FANOUTD_UTIL_H

#include <stddef.h>
#include <stdint.h>

#define FANOUTD_VERSION "0.1.0"

void *xcalloc(size_t n, size_t size);
void *xmalloc(size_t size);
void *xreallocarray(void *p, size_t n, size_t size);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);

/* Monotonic time in microseconds. */
uint64_t now_us(void);

/* The result error kinds of the contract, in one place with their names. */
enum kind {
	KIND_NONE = 0,		/* a response, not an error */
	KIND_INVALID_REQUEST,
	KIND_BLOCKED,
	KIND_DNS,
	KIND_CONNECT,
	KIND_TLS,
	KIND_TIMEOUT,
	KIND_DEADLINE,
	KIND_TOO_LARGE,
	KIND_PROTOCOL,
	KIND_REDIRECTS,
	KIND_CANCELLED,
	KIND_INTERNAL,
	KIND_MAX,
};

const char *kind_name(enum kind k);

struct sockaddr_storage;

/* "1.2.3.4:80" or "[::1]:80" */
void addr_format(const struct sockaddr_storage *ss, char *dst, size_t len);

#endif
