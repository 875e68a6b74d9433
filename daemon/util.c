/* util.c: see util.h. */
#include <stdio.h>
#include <stdlib.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "util.h"

static const char *const kind_names[KIND_MAX] = {
	[KIND_NONE] = "none",
	[KIND_INVALID_REQUEST] = "invalid_request",
	[KIND_BLOCKED] = "blocked",
	[KIND_DNS] = "dns",
	[KIND_CONNECT] = "connect",
	[KIND_TLS] = "tls",
	[KIND_TIMEOUT] = "timeout",
	[KIND_DEADLINE] = "deadline",
	[KIND_TOO_LARGE] = "too_large",
	[KIND_PROTOCOL] = "protocol",
	[KIND_REDIRECTS] = "redirects",
	[KIND_CANCELLED] = "cancelled",
	[KIND_INTERNAL] = "internal",
};

const char *
kind_name(enum kind k)
{
	return (unsigned)k < KIND_MAX ? kind_names[k] : "internal";
}

void *
xcalloc(size_t n, size_t size)
{
	void *p = calloc(n, size);

	if (p == NULL)
		fatal("out of memory");
	return p;
}

void *
xmalloc(size_t size)
{
	void *p = malloc(size);

	if (p == NULL)
		fatal("out of memory");
	return p;
}

void *
xreallocarray(void *p, size_t n, size_t size)
{
	if ((p = reallocarray(p, n, size)) == NULL)
		fatal("out of memory");
	return p;
}

char *
xstrdup(const char *s)
{
	return xstrndup(s, strlen(s));
}

char *
xstrndup(const char *s, size_t n)
{
	char *p = xmalloc(n + 1);

	memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

uint64_t
now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

void
addr_format(const struct sockaddr_storage *ss, char *dst, size_t len)
{
	char ip[INET6_ADDRSTRLEN];

	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
		inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof(ip));
		snprintf(dst, len, "[%s]:%u", ip, ntohs(s6->sin6_port));
	} else if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
		inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof(ip));
		snprintf(dst, len, "%s:%u", ip, ntohs(s4->sin_port));
	} else
		snprintf(dst, len, "?");
}
