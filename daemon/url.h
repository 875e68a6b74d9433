/* url.h: strict parsing of caller URLs and redirect Locations into the parts an
 * upstream request is built from. Nothing from the caller reaches the wire
 * except through these re-serialised, validated parts. */
#ifndef FANOUTD_URL_H
#define FANOUTD_URL_H

#include <stddef.h>
#include <stdint.h>

struct url {
	int https;		/* 0: http, 1: https */
	char *host;		/* lower-case; an IPv6 literal without brackets */
	int host_is_ip;		/* 4 or 6 for literals, 0 for names */
	uint16_t port;		/* explicit or the scheme's default */
	char *target;		/* origin-form request-target: "/path?query", never empty */
	char *authority;	/* Host header value: host[:port], [v6] bracketed, default port omitted */
	char *origin;		/* pool and limit key: "http://host:port" (always with port) */
	char *href;		/* the whole normalised URL, fragment dropped */
};

/* Parses an absolute http(s) URL. On failure returns -1 and writes a message
 * naming the problem (e.g. `unsupported scheme "ftp"`) into why, and leaves
 * *u zeroed. *u is overwritten, not freed. Normalises: scheme and host to
 * lower case, IPv6 to its compressed form, bytes >= 0x80 in the path and
 * query percent-encoded, dot segments removed, the fragment dropped. */
int url_parse(struct url *u, const char *s, char *why, size_t whylen);

/* Resolves a redirect Location (absolute, scheme-relative, absolute-path or
 * relative reference) against base (RFC 3986 §5.2). Same return and why as
 * url_parse; u must not be base. */
int url_resolve(struct url *u, const struct url *base, const char *location, char *why, size_t whylen);

void url_free(struct url *u);

#endif
