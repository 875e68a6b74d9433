/* url.c: strict parsing of absolute http(s) URLs and RFC 3986 resolution of
 * redirect Locations. libevent's strict URI parser checks the structure; the
 * rules of our own (scheme, host syntax, no credentials, no control
 * characters) and the re-serialisation into struct url's parts live here. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/http.h>

#include "url.h"

#define URL_HOST_MAX	253	/* a DNS name, without the trailing dot */
#define URL_LABEL_MAX	63

static void url_error(char *why, size_t whylen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
url_error(char *why, size_t whylen, const char *fmt, ...)
{
	va_list ap;

	if (why == NULL || whylen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(why, whylen, fmt, ap);
	va_end(ap);
}

static int
url_is_ctl_or_space(unsigned char c)
{
	return c <= 0x20 || c == 0x7f;
}

static int
url_has_ctl_or_space(const char *s)
{
	for (; *s != '\0'; s++)
		if (url_is_ctl_or_space((unsigned char)*s))
			return 1;
	return 0;
}

static int
url_is_alpha(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int
url_is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

/* Length of an RFC 3986 scheme followed by ':' at the start of s, else 0. A
 * relative reference cannot start like this, which is what tells the two
 * apart (RFC 3986 §4.2). */
static size_t
url_scheme_len(const char *s)
{
	size_t n;

	if (!url_is_alpha((unsigned char)s[0]))
		return 0;
	for (n = 1; url_is_alpha((unsigned char)s[n]) || url_is_digit((unsigned char)s[n]) ||
	    s[n] == '+' || s[n] == '-' || s[n] == '.'; n++)
		;
	return s[n] == ':' ? n : 0;
}

/* 0 for http, 1 for https, -1 for anything else. */
static int
url_scheme_kind(const char *s, size_t n)
{
	if (n == 4 && strncasecmp(s, "http", 4) == 0)
		return 0;
	if (n == 5 && strncasecmp(s, "https", 5) == 0)
		return 1;
	return -1;
}

/* Checks the port of an authority, if any, before libevent does, only so that
 * a bad port gets a message saying so rather than "malformed URL". */
static int
url_check_port(const char *auth, size_t n, char *why, size_t whylen)
{
	const char *colon, *end = auth + n;
	unsigned long port = 0;

	if (n > 0 && auth[0] == '[') {
		const char *rb = memchr(auth, ']', n);
		if (rb == NULL || rb + 1 == end || rb[1] != ':')
			return 0;	/* no port; libevent judges the rest */
		colon = rb + 1;
	} else if ((colon = memrchr(auth, ':', n)) == NULL)
		return 0;
	if (colon + 1 == end)
		return 0;	/* "host:" is the default port (RFC 3986 §3.2.3) */
	for (const char *p = colon + 1; p < end; p++) {
		if (!url_is_digit((unsigned char)*p) || port > 65535) {
			url_error(why, whylen, "invalid port");
			return -1;
		}
		port = port * 10 + (unsigned long)(*p - '0');
	}
	if (port < 1 || port > 65535) {
		url_error(why, whylen, "port out of range 1..65535");
		return -1;
	}
	return 0;
}

/* The checks on the authority that libevent would not make or would make
 * with a less useful message. */
static int
url_check_authority(const char *auth, size_t n, char *why, size_t whylen)
{
	if (n == 0) {
		url_error(why, whylen, "missing host");
		return -1;
	}
	if (memchr(auth, '@', n) != NULL) {
		url_error(why, whylen, "credentials in URL are not supported");
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		if ((unsigned char)auth[i] >= 0x80) {
			url_error(why, whylen, "non-ASCII host name: use its punycode form");
			return -1;
		}
	}
	return url_check_port(auth, n, why, whylen);
}

/* Percent-encodes, in the path, query and fragment (from offset skip on),
 * bytes >= 0x80 and the printable characters RFC 3986 does not allow there
 * but callers write all the time ("?filter[a]=1", "{id}"), the way browsers
 * and curl send them; libevent's strict parser (rightly) refuses them raw.
 * Space and control characters are not printable and stay refused. */
static int
url_needs_encoding(unsigned char c)
{
	static const unsigned char encode[256] = {
		['['] = 1, [']'] = 1, ['{'] = 1, ['}'] = 1, ['|'] = 1, ['^'] = 1, ['\\'] = 1,
		['`'] = 1, ['<'] = 1, ['>'] = 1, ['"'] = 1, [0x80 ... 0xff] = 1,
	};

	return encode[c];
}

/* Returns s itself when nothing needs encoding (the common case), else a
 * new string, also left in *owned for the caller to free. */
static const char *
url_encode_high(const char *s, size_t skip, char **owned)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = 0, i, extra = 0;
	char *r, *o;

	for (i = 0; s[i] != '\0'; i++)
		extra += i >= skip && url_needs_encoding((unsigned char)s[i]) ? 2 : 0;
	*owned = NULL;
	if (extra == 0)
		return s;
	n = i + extra;
	if ((r = malloc(n + 1)) == NULL)
		return NULL;
	*owned = r;
	for (o = r, i = 0; s[i] != '\0'; i++) {
		unsigned char c = (unsigned char)s[i];
		if (i >= skip && url_needs_encoding(c)) {
			*o++ = '%';
			*o++ = hex[c >> 4];
			*o++ = hex[c & 0xf];
		} else
			*o++ = (char)c;
	}
	*o = '\0';
	return r;
}

static int
url_is_hex(unsigned char c)
{
	return url_is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* Says what libevent's strict parser most likely refused in the path, query
 * or fragment (RFC 3986 pchar), for a more useful message. */
static void
url_explain(const char *rest, char *why, size_t whylen)
{
	int fragment = 0;

	for (const unsigned char *p = (const unsigned char *)rest; *p != '\0'; p++) {
		if (url_is_alpha(*p) || url_is_digit(*p) || strchr("-._~!$&'()*+,;=:@/?", *p) != NULL)
			continue;
		if (*p == '%') {
			if (url_is_hex(p[1]) && url_is_hex(p[2])) {
				p += 2;
				continue;
			}
			url_error(why, whylen, "invalid percent-encoding in URL");
			return;
		}
		if (*p == '#' && !fragment) {
			fragment = 1;
			continue;
		}
		url_error(why, whylen, "invalid character '%c' in URL", *p);
		return;
	}
	url_error(why, whylen, "malformed URL");
}

/* Checks a DNS-ish host name (already lower-case). Digits-only last labels
 * are refused: resolvers would read "127.1" or "2130706433" as addresses,
 * and an address must be written as a dotted quad. */
static int
url_check_name(const char *h, char *why, size_t whylen)
{
	size_t n = strlen(h), label = 0;
	int digits_only = 1;

	if (n > 0 && h[n - 1] == '.')
		n--;	/* the root label of a fully qualified name */
	if (n == 0 || n > URL_HOST_MAX) {
		url_error(why, whylen, n == 0 ? "missing host" : "host name too long");
		return -1;
	}
	for (size_t i = 0; i <= n; i++) {
		unsigned char c = i < n ? (unsigned char)h[i] : '.';
		if (c == '.') {
			if (label == 0 || label > URL_LABEL_MAX) {
				url_error(why, whylen, "invalid host name");
				return -1;
			}
			if (i < n)
				digits_only = 1;
			label = 0;
			continue;
		}
		if (!url_is_alpha(c) && !url_is_digit(c) && c != '-' && c != '_') {
			url_error(why, whylen, "invalid character '%c' in host name", c);
			return -1;
		}
		if (!url_is_digit(c))
			digits_only = 0;
		label++;
	}
	if (digits_only) {
		url_error(why, whylen, "invalid IPv4 address");
		return -1;
	}
	return 0;
}

/* Turns libevent's host (bracketed for IPv6) into our canonical form:
 * lower-case, IPv6 without brackets and in inet_ntop's compressed form. */
static char *
url_host(const char *raw, int *is_ip, char *why, size_t whylen)
{
	char *h, buf[INET6_ADDRSTRLEN];
	struct in6_addr a6;
	struct in_addr a4;
	size_t n = strlen(raw);

	*is_ip = 0;
	if (n == 0) {
		url_error(why, whylen, "missing host");
		return NULL;
	}
	if (raw[0] == '[') {
		if (n < 3 || n - 2 >= sizeof(buf) || raw[n - 1] != ']') {
			url_error(why, whylen, "invalid IPv6 address");
			return NULL;
		}
		memcpy(buf, raw + 1, n - 2);
		buf[n - 2] = '\0';
		if (inet_pton(AF_INET6, buf, &a6) != 1 ||
		    inet_ntop(AF_INET6, &a6, buf, sizeof(buf)) == NULL) {
			url_error(why, whylen, "invalid IPv6 address");
			return NULL;
		}
		*is_ip = 6;
		raw = buf;
	}
	if ((h = strdup(raw)) == NULL) {
		url_error(why, whylen, "out of memory");
		return NULL;
	}
	if (*is_ip == 6)
		return h;
	for (char *p = h; *p != '\0'; p++)
		if (*p >= 'A' && *p <= 'Z')
			*p = (char)(*p - 'A' + 'a');
	if (inet_pton(AF_INET, h, &a4) == 1) {
		*is_ip = 4;
		return h;
	}
	if (url_check_name(h, why, whylen) == -1) {
		free(h);
		return NULL;
	}
	return h;
}

/* RFC 3986 §5.2.4 remove_dot_segments on an absolute path ("/" for an
 * empty result). Returns path itself when it has no segment starting with
 * a dot (the common case), else a new string, also left in *owned. */
static const char *
url_remove_dots(const char *path, char **owned)
{
	size_t n = strlen(path), o = 0;
	char *in, *out, *p;

	*owned = NULL;
	if (n > 0 && path[0] != '.' && strstr(path, "/.") == NULL)
		return path;
	if ((in = strdup(path)) == NULL || (out = malloc(n + 2)) == NULL) {
		free(in);
		return NULL;
	}
	p = in;
	while (*p != '\0') {
		if (strncmp(p, "../", 3) == 0)
			p += 3;
		else if (strncmp(p, "./", 2) == 0)
			p += 2;
		else if (strncmp(p, "/./", 3) == 0)
			p += 2;
		else if (strcmp(p, "/.") == 0)
			p[1] = '\0';
		else if (strncmp(p, "/../", 4) == 0 || strcmp(p, "/..") == 0) {
			if (p[3] == '/')
				p += 3;
			else
				p[1] = '\0';
			while (o > 0 && out[--o] != '/')
				;
		} else if (strcmp(p, ".") == 0 || strcmp(p, "..") == 0)
			p += strlen(p);
		else {
			do
				out[o++] = *p++;
			while (*p != '\0' && *p != '/');
		}
	}
	if (o == 0)
		out[o++] = '/';
	out[o] = '\0';
	free(in);
	*owned = out;
	return out;
}

struct url_piece {
	const char *s;
	size_t n;
};

static size_t
url_pieces_len(const struct url_piece *pieces, size_t count)
{
	size_t n = 1;	/* the NUL */

	for (size_t i = 0; i < count; i++)
		n += pieces[i].n;
	return n;
}

/* Appends pieces at *o, then a NUL; returns where the result starts. */
static char *
url_put(char **o, const struct url_piece *pieces, size_t count)
{
	char *start = *o;

	for (size_t i = 0; i < count; i++) {
		memcpy(*o, pieces[i].s, pieces[i].n);
		*o += pieces[i].n;
	}
	*(*o)++ = '\0';
	return start;
}

#define URL_PIECE(s) { (s), strlen(s) }

/* Fills u's serialised parts from checked pieces: href, target, authority
 * and origin in one allocation (owned by href). This runs for every request,
 * twice: one malloc, each length taken once and no printf keep it cheap. */
static int
url_fill(struct url *u, const char *path, const char *query)
{
	int v6 = u->host_is_ip == 6, defport = u->port == (u->https ? 443 : 80);
	char port[8], *owned, *o;
	size_t i = sizeof(port), n;
	const char *clean;

	port[--i] = '\0';
	for (unsigned p = u->port; p > 0; p /= 10)
		port[--i] = (char)('0' + p % 10);
	port[--i] = ':';
	if ((clean = url_remove_dots(*path != '\0' ? path : "/", &owned)) == NULL)
		return -1;
	const struct url_piece scheme = URL_PIECE(u->https ? "https://" : "http://"),
	    lb = URL_PIECE(v6 ? "[" : ""), host = URL_PIECE(u->host), rb = URL_PIECE(v6 ? "]" : ""),
	    pt = URL_PIECE(port + i), ap = defport ? (struct url_piece){ "", 0 } : pt,
	    cl = URL_PIECE(clean), q = URL_PIECE(query != NULL ? "?" : ""),
	    qs = URL_PIECE(query != NULL ? query : "");
	const struct url_piece href[] = { scheme, lb, host, rb, ap, cl, q, qs },
	    target[] = { cl, q, qs }, authority[] = { lb, host, rb, ap },
	    origin[] = { scheme, lb, host, rb, pt };

#define URL_N(a) (a), sizeof(a) / sizeof((a)[0])
	n = url_pieces_len(URL_N(href)) + url_pieces_len(URL_N(target)) +
	    url_pieces_len(URL_N(authority)) + url_pieces_len(URL_N(origin));
	if ((o = malloc(n)) == NULL) {
		free(owned);
		return -1;
	}
	u->href = url_put(&o, URL_N(href));
	u->target = url_put(&o, URL_N(target));
	u->authority = url_put(&o, URL_N(authority));
	u->origin = url_put(&o, URL_N(origin));
#undef URL_N
	free(owned);
	return 0;
}

/* The part of url_parse after the checks on the raw text: structure from
 * libevent, then host, port and the serialised forms. */
static int
url_from_uri(struct url *u, const char *s, const char *rest, char *why, size_t whylen)
{
	struct evhttp_uri *uri;
	int port, rc = -1;

	if ((uri = evhttp_uri_parse_with_flags(s, 0)) == NULL) {
		url_explain(rest, why, whylen);
		return -1;
	}
	if (evhttp_uri_get_host(uri) == NULL) {
		url_error(why, whylen, "missing host");
		goto out;
	}
	if ((u->host = url_host(evhttp_uri_get_host(uri), &u->host_is_ip, why, whylen)) == NULL)
		goto out;
	port = evhttp_uri_get_port(uri);
	if (port == 0 || port > 65535) {
		url_error(why, whylen, "port out of range 1..65535");
		goto out;
	}
	u->port = port > 0 ? (uint16_t)port : (u->https ? 443 : 80);
	if (url_fill(u, evhttp_uri_get_path(uri), evhttp_uri_get_query(uri)) == -1) {
		url_error(why, whylen, "out of memory");
		goto out;
	}
	rc = 0;
out:
	evhttp_uri_free(uri);
	return rc;
}

int
url_parse(struct url *u, const char *s, char *why, size_t whylen)
{
	const char *auth, *text;
	size_t n, alen;
	char *copy;
	int rc;

	memset(u, 0, sizeof(*u));
	if (*s == '\0') {
		url_error(why, whylen, "empty URL");
		return -1;
	}
	if (url_has_ctl_or_space(s)) {
		url_error(why, whylen, "control character or space in URL");
		return -1;
	}
	if ((n = url_scheme_len(s)) == 0) {
		url_error(why, whylen, "not an absolute URL");
		return -1;
	}
	if ((u->https = url_scheme_kind(s, n)) == -1) {
		u->https = 0;
		url_error(why, whylen, "unsupported scheme \"%.*s\"", n > 32 ? 32 : (int)n, s);
		return -1;
	}
	if (strncmp(s + n + 1, "//", 2) != 0) {
		url_error(why, whylen, "missing host");
		return -1;
	}
	auth = s + n + 3;
	alen = strcspn(auth, "/?#");
	if (url_check_authority(auth, alen, why, whylen) == -1)
		return -1;
	if ((text = url_encode_high(s, n + 3 + alen, &copy)) == NULL) {
		url_error(why, whylen, "out of memory");
		return -1;
	}
	rc = url_from_uri(u, text, text + n + 3 + alen, why, whylen);
	free(copy);
	if (rc == -1)
		url_free(u);
	return rc;
}

/* RFC 3986 §5.2.2-5.2.3 for a reference without scheme or authority: builds
 * the target URL's text from base's parts and the reference's. */
static char *
url_merge(const struct url *base, const char *ref)
{
	size_t plen = strcspn(ref, "?#");
	const char *q = ref[plen] == '?' ? ref + plen + 1 : NULL;
	size_t qlen = q != NULL ? strcspn(q, "#") : 0;
	const char *bq = strchr(base->target, '?');
	size_t bplen = bq != NULL ? (size_t)(bq - base->target) : strlen(base->target);
	const char *scheme = base->https ? "https" : "http";
	char *r;
	int rc;

	if (plen == 0) {
		if (q != NULL)
			rc = asprintf(&r, "%s://%s%.*s?%.*s", scheme, base->authority, (int)bplen,
			    base->target, (int)qlen, q);
		else
			rc = asprintf(&r, "%s://%s%s", scheme, base->authority, base->target);
	} else {
		/* merge: the base path up to its last '/', unless ref is absolute */
		size_t keep = 0;
		if (ref[0] != '/')
			for (size_t i = 0; i < bplen; i++)
				if (base->target[i] == '/')
					keep = i + 1;
		rc = asprintf(&r, "%s://%s%.*s%.*s%s%.*s", scheme, base->authority, (int)keep,
		    base->target, (int)plen, ref, q != NULL ? "?" : "", (int)qlen, q != NULL ? q : "");
	}
	return rc < 0 ? NULL : r;
}

int
url_resolve(struct url *u, const struct url *base, const char *location, char *why,
    size_t whylen)
{
	size_t n;
	char *s;
	int rc;

	memset(u, 0, sizeof(*u));
	if (*location == '\0') {
		url_error(why, whylen, "empty Location");
		return -1;
	}
	if (url_has_ctl_or_space(location)) {
		url_error(why, whylen, "control character or space in URL");
		return -1;
	}
	if ((n = url_scheme_len(location)) > 0) {
		if (url_scheme_kind(location, n) == -1) {
			url_error(why, whylen, "redirect to unsupported scheme \"%.*s\"",
			    n > 32 ? 32 : (int)n, location);
			return -1;
		}
		return url_parse(u, location, why, whylen);
	}
	if (location[0] == '/' && location[1] == '/')
		rc = asprintf(&s, "%s:%s", base->https ? "https" : "http", location);
	else
		rc = (s = url_merge(base, location)) == NULL ? -1 : 0;
	if (rc < 0) {
		url_error(why, whylen, "out of memory");
		return -1;
	}
	rc = url_parse(u, s, why, whylen);
	free(s);
	return rc;
}

void
url_free(struct url *u)
{
	free(u->host);
	free(u->href);	/* target, authority and origin live in the same block */
	memset(u, 0, sizeof(*u));
}
