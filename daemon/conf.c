/* conf.c: the configuration table, parsing of the file into a snapshot, the
 * checks -t runs, and the snapshot's reference count. Every key is one row of
 * conf_keys[]; defaults, parsing and freeing are all driven by that table. */
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "conf.h"
#include "log.h"

#define CONF_LINE_MAX 4096
#define CONF_ERR_MAX 512
#define CONF_QUOTE_MAX 128	/* a value quoted in a message, escaped */

#define CONF_STR_(x) #x
#define CONF_STR(x) CONF_STR_(x)

enum conf_type {
	CONF_T_UINT,		/* unsigned, decimal */
	CONF_T_SIZE,		/* size_t, decimal with an optional k/m/g suffix */
	CONF_T_LEVEL,		/* int, a log level name */
	CONF_T_STRING,		/* char *, NULL when unset */
	CONF_T_LISTEN,		/* char *[], repeatable */
	CONF_T_CIDR,		/* struct conf_cidr [], repeatable */
	CONF_T_RATE,		/* struct conf_rate [], repeatable */
};

struct conf_key {
	const char *name;
	enum conf_type type;
	size_t off;		/* the field in struct conf */
	size_t count_off;	/* list types: the element count */
	size_t cap;		/* list types: the array's length */
	uint64_t min, max;	/* numeric types */
	uint64_t def;		/* numeric types and the log level */
	const char *sdef;	/* string and list types; NULL: none */
	int (*valid)(const char *, const char **);
};

/* What one type knows: how to store a value from the file, how to put the
 * default back, and how to free what it holds (NULL: nothing to free). */
struct conf_type_ops {
	int list;
	int (*set)(struct conf *, const struct conf_key *, const char *, char *, size_t);
	int (*reset)(struct conf *, const struct conf_key *);
	void (*clear)(struct conf *, const struct conf_key *);
};

static int conf_dns_server_valid(const char *, const char **);
static int conf_port_valid(const char *);
static int conf_copy_host(char *, const char *, size_t);
static int conf_file_valid(const char *, const char **);

/* _Generic refuses to compile a row whose field does not have the C type the
 * row's kind writes through, so a type change in conf.h cannot silently turn
 * into a write of the wrong width. */
#define CONF_OFF(f, T) _Generic(((struct conf *)0)->f, T: offsetof(struct conf, f))

#define CONF_UINT(f, d, lo, hi) { .name = #f, .type = CONF_T_UINT, \
	.off = CONF_OFF(f, unsigned), .def = (d), .min = (lo), .max = (hi) }
#define CONF_SIZE(f, d, lo, hi) { .name = #f, .type = CONF_T_SIZE, \
	.off = CONF_OFF(f, size_t), .def = (d), .min = (lo), .max = (hi) }
#define CONF_LEVEL(f, d) { .name = #f, .type = CONF_T_LEVEL, \
	.off = CONF_OFF(f, int), .def = (d) }
#define CONF_STRING(f, d, v) { .name = #f, .type = CONF_T_STRING, \
	.off = CONF_OFF(f, char *), .sdef = (d), .valid = (v) }
#define CONF_LIST(f, t, T, n, cnt, d) { .name = #f, .type = (t), \
	.off = CONF_OFF(f, T), .count_off = CONF_OFF(n, size_t), .cap = (cnt), .sdef = (d) }

#define KIB 1024ULL
#define MIB (1024ULL * KIB)
#define GIB (1024ULL * MIB)
#define MS_HOUR 3600000ULL
#define S_DAY 86400ULL

/* In the order of the contract's example file; the four after log_level are
 * ours, then the v1.1 additions. */
static const struct conf_key conf_keys[] = {
	CONF_LIST(listen, CONF_T_LISTEN, char **, nlisten, CONF_MAX_LISTEN, "127.0.0.1:8750"),
	CONF_UINT(max_batch, 10000, 1, 1000000),
	CONF_UINT(max_batches, 64, 1, 65536),
	CONF_SIZE(max_request_bytes, 16 * MIB, 1 * KIB, 1 * GIB),
	CONF_UINT(max_connections, 1024, 1, 1048576),
	CONF_UINT(max_per_host, 16, 1, 65536),
	CONF_UINT(concurrency, 256, 1, 65536),
	CONF_UINT(per_host, 8, 1, 65536),
	CONF_UINT(timeout_ms, 10000, 1, MS_HOUR),
	CONF_UINT(connect_timeout_ms, 3000, 1, MS_HOUR),
	CONF_SIZE(max_body_bytes, 8 * MIB, 0, 1 * GIB),
	CONF_UINT(follow_redirects, 5, 0, 20),
	CONF_UINT(deadline_ms, 0, 0, 24 * MS_HOUR),
	CONF_UINT(idle_timeout_s, 30, 0, S_DAY),
	CONF_STRING(dns_server, NULL, conf_dns_server_valid),
	CONF_UINT(dns_min_ttl_s, 5, 0, S_DAY),
	CONF_UINT(dns_max_ttl_s, 300, 0, S_DAY),
	CONF_UINT(dns_negative_ttl_s, 5, 0, S_DAY),
	CONF_STRING(ca_file, NULL, conf_file_valid),
	CONF_LIST(deny, CONF_T_CIDR, struct conf_cidr *, ndeny, CONF_MAX_CIDR, NULL),
	CONF_LIST(allow, CONF_T_CIDR, struct conf_cidr *, nallow, CONF_MAX_CIDR, NULL),
	CONF_UINT(drain_timeout_s, 10, 0, 3600),
	CONF_LEVEL(log_level, LOG_LEVEL_INFO),
	CONF_SIZE(max_header_bytes, 64 * KIB, 1 * KIB, 1 * MIB),
	CONF_SIZE(output_buffer_bytes, 1 * MIB, 64 * KIB, 256 * MIB),
	CONF_UINT(dns_cache_size, 10000, 1, 1000000),
	CONF_UINT(tls_resume, 1, 0, 1),
	/* v1.1: HTTP/2 upstreams. */
	CONF_UINT(http2, 1, 0, 1),
	CONF_UINT(max_streams, 100, 1, 1000),
	/* v1.1: rate limits and origin backoff. */
	CONF_LIST(rate_limit, CONF_T_RATE, struct conf_rate *, nrate_limit, CONF_MAX_RATE, NULL),
	CONF_UINT(backoff, 1, 0, 1),
	CONF_UINT(max_backoff_s, 300, 1, S_DAY),
	/* v1.1: the caller-facing server. */
	CONF_UINT(client_timeout_s, 30, 1, 3600),
	CONF_UINT(max_clients, 1024, 1, 1048576),
};

#define CONF_NKEYS (sizeof(conf_keys) / sizeof(conf_keys[0]))

static void *
conf_field(struct conf *c, const struct conf_key *k)
{
	return (char *)c + k->off;
}

static size_t *
conf_count(struct conf *c, const struct conf_key *k)
{
	return (size_t *)(void *)((char *)c + k->count_off);
}

/* Copies caller-controlled text for a message, escaped and bounded. */
static const char *
conf_quote(char *dst, const char *s)
{
	return log_escape(dst, CONF_QUOTE_MAX, s, strlen(s));
}

/*
 * Numbers.
 */

/* Parses decimal digits, then (when suffixes) one of k, m, g (1024-based).
 * Returns 0, -1 when s is not such a number, or 1 when it does not fit. */
static int
conf_parse_u64(const char *s, int suffixes, uint64_t *out)
{
	uint64_t n = 0, mult = 1;
	const char *p;

	for (p = s; isdigit((unsigned char)*p); p++) {
		unsigned d = (unsigned)(*p - '0');
		if (n > (UINT64_MAX - d) / 10)
			return 1;
		n = n * 10 + d;
	}
	if (p == s)
		return -1;
	if (suffixes && *p != '\0' && p[1] == '\0') {
		switch (*p++) {
		case 'k': case 'K': mult = KIB; break;
		case 'm': case 'M': mult = MIB; break;
		case 'g': case 'G': mult = GIB; break;
		default: return -1;
		}
	}
	if (*p != '\0')
		return -1;
	if (n > UINT64_MAX / mult)
		return 1;
	*out = n * mult;
	return 0;
}

static int
conf_number(const struct conf_key *k, const char *v, int suffixes, uint64_t *out,
    char *err, size_t errlen)
{
	char q[CONF_QUOTE_MAX];
	int rc;

	rc = conf_parse_u64(v, suffixes, out);
	if (rc < 0) {
		snprintf(err, errlen, "%s: \"%s\" is not a%s number", k->name,
		    conf_quote(q, v), suffixes ? " size" : "n unsigned");
		return -1;
	}
	if (rc > 0 || *out < k->min || *out > k->max) {
		snprintf(err, errlen, "%s: must be between %" PRIu64 " and %" PRIu64,
		    k->name, k->min, k->max);
		return -1;
	}
	return 0;
}

static int
conf_set_uint(struct conf *c, const struct conf_key *k, const char *v, char *err,
    size_t errlen)
{
	uint64_t n;

	if (conf_number(k, v, 0, &n, err, errlen) == -1)
		return -1;
	*(unsigned *)conf_field(c, k) = (unsigned)n;
	return 0;
}

static int
conf_set_size(struct conf *c, const struct conf_key *k, const char *v, char *err,
    size_t errlen)
{
	uint64_t n;

	if (conf_number(k, v, 1, &n, err, errlen) == -1)
		return -1;
	*(size_t *)conf_field(c, k) = (size_t)n;
	return 0;
}

static int
conf_reset_uint(struct conf *c, const struct conf_key *k)
{
	*(unsigned *)conf_field(c, k) = (unsigned)k->def;
	return 0;
}

static int
conf_reset_size(struct conf *c, const struct conf_key *k)
{
	*(size_t *)conf_field(c, k) = (size_t)k->def;
	return 0;
}

/*
 * Log level.
 */

static int
conf_set_level(struct conf *c, const struct conf_key *k, const char *v, char *err,
    size_t errlen)
{
	char q[CONF_QUOTE_MAX];

	if (log_level_parse(v, (int *)conf_field(c, k)) == -1) {
		snprintf(err, errlen, "%s: \"%s\" is not one of error, warn, info, debug",
		    k->name, conf_quote(q, v));
		return -1;
	}
	return 0;
}

static int
conf_reset_level(struct conf *c, const struct conf_key *k)
{
	*(int *)conf_field(c, k) = (int)k->def;
	return 0;
}

/*
 * Strings.
 */

static int
conf_set_string(struct conf *c, const struct conf_key *k, const char *v, char *err,
    size_t errlen)
{
	char q[CONF_QUOTE_MAX];
	char **field = conf_field(c, k);
	const char *why;
	char *copy;

	if (k->valid != NULL && k->valid(v, &why) == -1) {
		snprintf(err, errlen, "%s: \"%s\": %s", k->name, conf_quote(q, v), why);
		return -1;
	}
	if ((copy = strdup(v)) == NULL) {
		snprintf(err, errlen, "%s: out of memory", k->name);
		return -1;
	}
	free(*field);
	*field = copy;
	return 0;
}

static void
conf_clear_string(struct conf *c, const struct conf_key *k)
{
	char **field = conf_field(c, k);

	free(*field);
	*field = NULL;
}

static int
conf_reset_string(struct conf *c, const struct conf_key *k)
{
	conf_clear_string(c, k);
	if (k->sdef != NULL && (*(char **)conf_field(c, k) = strdup(k->sdef)) == NULL)
		return -1;
	return 0;
}

/*
 * Lists: listeners and address ranges.
 */

static int
conf_list_full(struct conf *c, const struct conf_key *k, char *err, size_t errlen)
{
	if (*conf_count(c, k) < k->cap)
		return 0;
	snprintf(err, errlen, "%s: more than %zu entries", k->name, k->cap);
	return 1;
}

static int
conf_add_listen(struct conf *c, const struct conf_key *k, const char *v, char *err,
    size_t errlen)
{
	char q[CONF_QUOTE_MAX];
	char **list = conf_field(c, k);
	size_t *n = conf_count(c, k);
	const char *why;

	if (conf_list_full(c, k, err, errlen))
		return -1;
	if (conf_listen_valid(v, &why) == -1) {
		snprintf(err, errlen, "%s: \"%s\": %s", k->name, conf_quote(q, v), why);
		return -1;
	}
	if ((list[*n] = strdup(v)) == NULL) {
		snprintf(err, errlen, "%s: out of memory", k->name);
		return -1;
	}
	(*n)++;
	return 0;
}

static void
conf_clear_listen(struct conf *c, const struct conf_key *k)
{
	char **list = conf_field(c, k);
	size_t *n = conf_count(c, k);

	for (size_t i = 0; i < *n; i++) {
		free(list[i]);
		list[i] = NULL;
	}
	*n = 0;
}

static int
conf_add_cidr(struct conf *c, const struct conf_key *k, const char *v, char *err,
    size_t errlen)
{
	char q[CONF_QUOTE_MAX];
	struct conf_cidr *list = conf_field(c, k);
	size_t *n = conf_count(c, k);
	const char *why;

	if (conf_list_full(c, k, err, errlen))
		return -1;
	if (conf_cidr_parse(v, &list[*n], &why) == -1) {
		snprintf(err, errlen, "%s: \"%s\": %s", k->name, conf_quote(q, v), why);
		return -1;
	}
	(*n)++;
	return 0;
}

static void
conf_clear_cidr(struct conf *c, const struct conf_key *k)
{
	*conf_count(c, k) = 0;
}

/*
 * Rate limits: "ORIGIN RATE [BURST]".
 */

#define CONF_RATE_MAX 1000000	/* requests a second, and burst */

/* A host name as url.c would keep it: lower case letters, digits, "-" and
 * non-empty labels. */
static int
conf_hostname_valid(char *h)
{
	size_t len = strlen(h);

	if (len == 0 || len > 253 || h[0] == '.' || h[len - 1] == '.' || strstr(h, "..") != NULL)
		return 0;
	for (char *p = h; *p != '\0'; p++) {
		*p = (char)tolower((unsigned char)*p);
		if (!isalnum((unsigned char)*p) && *p != '-' && *p != '.')
			return 0;
	}
	return 1;
}

/* "[V6]" (with *rest after it) or a name or IPv4 up to ":" or the end;
 * host (256 bytes) gets it in url.c's form. */
static int
conf_rate_host(const char *s, char *host, const char **rest, const char **why)
{
	struct in6_addr a6;
	size_t len;

	if (*s == '[') {
		const char *end = strchr(s, ']');
		if (end == NULL || conf_copy_host(host, s + 1, (size_t)(end - s - 1)) == -1 ||
		    inet_pton(AF_INET6, host, &a6) != 1) {
			*why = "not an IPv6 address inside \"[]\"";
			return -1;
		}
		inet_ntop(AF_INET6, &a6, host, INET6_ADDRSTRLEN + 1);
		*rest = end + 1;
		return 0;
	}
	len = strcspn(s, ":/");
	if (len > 255) {
		*why = "host name too long";
		return -1;
	}
	memcpy(host, s, len);
	host[len] = '\0';
	*rest = s + len;
	if (strncmp(host, "*.", 2) == 0 ? !conf_hostname_valid(host + 2) : !conf_hostname_valid(host)) {
		*why = "not a host name, IPv4 address, [IPv6] or *.domain";
		return -1;
	}
	return 0;
}

/* An origin, scheme://host[:port] or scheme://[v6][:port], or a pattern,
 * with "*.domain" for the host; a port left out is the scheme's. Nothing
 * may follow but one "/". */
static int
conf_rate_origin(const char *s, struct conf_rate *r, const char **why)
{
	char host[256];
	const char *rest;

	if (strncasecmp(s, "http://", 7) == 0)
		s += 7;
	else if (strncasecmp(s, "https://", 8) == 0) {
		r->https = 1;
		s += 8;
	} else {
		*why = "origin must start with http:// or https://";
		return -1;
	}
	if (conf_rate_host(s, host, &rest, why) == -1)
		return -1;
	r->port = r->https ? 443 : 80;
	if (*rest == ':') {
		char port[8];
		size_t n = strcspn(rest + 1, "/");
		if (n == 0 || n >= sizeof(port)) {
			*why = "port must be a number between 1 and 65535";
			return -1;
		}
		memcpy(port, rest + 1, n);
		port[n] = '\0';
		if (!conf_port_valid(port)) {
			*why = "port must be a number between 1 and 65535";
			return -1;
		}
		r->port = (uint16_t)atoi(port);
		rest += 1 + n;
	}
	if (strcmp(rest, "") != 0 && strcmp(rest, "/") != 0) {
		*why = "an origin has no path, query or user";
		return -1;
	}
	r->wildcard = host[0] == '*';
	r->host = strdup(r->wildcard ? host + 2 : host);
	if (r->host == NULL) {
		*why = "out of memory";
		return -1;
	}
	return 0;
}

/* A rate: decimal digits with at most one ".", nothing else (no sign,
 * exponent, "inf" or hex that strtod would take). */
static int
conf_rate_number(const char *s, double *out)
{
	size_t digits = strspn(s, "0123456789.");
	const char *dot = strchr(s, '.');

	if (digits == 0 || s[digits] != '\0' || (dot != NULL && strchr(dot + 1, '.') != NULL) ||
	    strcmp(s, ".") == 0)
		return -1;
	*out = strtod(s, NULL);
	return 0;
}

static int
conf_rate_same(const struct conf_rate *a, const struct conf_rate *b)
{
	return a->https == b->https && a->wildcard == b->wildcard && a->port == b->port &&
	    strcmp(a->host, b->host) == 0;
}

/* Splits "ORIGIN RATE [BURST]" and checks each part into r. */
static int
conf_rate_parse(const char *v, struct conf_rate *r, char *err, size_t errlen)
{
	char buf[CONF_LINE_MAX + 1], q[CONF_QUOTE_MAX], *f[4], *save = NULL;
	const char *why;
	uint64_t burst = 1;
	size_t n = 0;

	snprintf(buf, sizeof(buf), "%s", v);
	for (char *t = strtok_r(buf, " \t", &save); t != NULL; t = strtok_r(NULL, " \t", &save))
		f[n < 4 ? n++ : 3] = t;
	if (n < 2 || n > 3) {
		snprintf(err, errlen, "rate_limit: expected \"ORIGIN RATE [BURST]\"");
		return -1;
	}
	if (conf_rate_number(f[1], &r->rate) == -1 || !(r->rate > 0) || r->rate > CONF_RATE_MAX) {
		snprintf(err, errlen, "rate_limit: rate \"%s\" must be a number above 0 and at most %d",
		    conf_quote(q, f[1]), CONF_RATE_MAX);
		return -1;
	}
	if (n == 3 && (conf_parse_u64(f[2], 0, &burst) != 0 || burst < 1 || burst > CONF_RATE_MAX)) {
		snprintf(err, errlen, "rate_limit: burst \"%s\" must be between 1 and %d",
		    conf_quote(q, f[2]), CONF_RATE_MAX);
		return -1;
	}
	r->burst = (unsigned)burst;
	if (conf_rate_origin(f[0], r, &why) == -1) {
		snprintf(err, errlen, "rate_limit: \"%s\": %s", conf_quote(q, f[0]), why);
		return -1;
	}
	return 0;
}

static int
conf_add_rate(struct conf *c, const struct conf_key *k, const char *v, char *err, size_t errlen)
{
	struct conf_rate *list = conf_field(c, k), r;
	size_t *n = conf_count(c, k);

	memset(&r, 0, sizeof(r));
	if (conf_list_full(c, k, err, errlen) || conf_rate_parse(v, &r, err, errlen) == -1)
		return -1;
	for (size_t i = 0; i < *n; i++) {
		if (conf_rate_same(&list[i], &r)) {
			snprintf(err, errlen, "rate_limit: a limit for this origin is already set");
			free(r.host);
			return -1;
		}
	}
	list[(*n)++] = r;
	return 0;
}

static void
conf_clear_rate(struct conf *c, const struct conf_key *k)
{
	struct conf_rate *list = conf_field(c, k);
	size_t *n = conf_count(c, k);

	for (size_t i = 0; i < *n; i++) {
		free(list[i].host);
		list[i].host = NULL;
	}
	*n = 0;
}

/* Whether host is strictly below domain. */
static int
conf_below(const char *host, const char *domain)
{
	size_t h = strlen(host), d = strlen(domain);

	return h > d + 1 && host[h - d - 1] == '.' && strcmp(host + h - d, domain) == 0;
}

const struct conf_rate *
conf_rate_find(const struct conf *c, int https, const char *host, uint16_t port)
{
	const struct conf_rate *best = NULL;

	for (size_t i = 0; i < c->nrate_limit; i++) {
		const struct conf_rate *r = &c->rate_limit[i];
		if (r->https != https || r->port != port)
			continue;
		if (!r->wildcard && strcmp(r->host, host) == 0)
			return r;
		if (r->wildcard && conf_below(host, r->host) &&
		    (best == NULL || strlen(r->host) > strlen(best->host)))
			best = r;
	}
	return best;
}

/* A list's default is at most one entry, the row's sdef (listeners and
 * ranges; rate limits have none). */
static int
conf_reset_list(struct conf *c, const struct conf_key *k)
{
	char err[CONF_ERR_MAX];

	if (k->type == CONF_T_RATE) {
		conf_clear_rate(c, k);
		return 0;
	}
	if (k->type == CONF_T_LISTEN)
		conf_clear_listen(c, k);
	else
		conf_clear_cidr(c, k);
	if (k->sdef == NULL)
		return 0;
	if (k->type == CONF_T_LISTEN)
		return conf_add_listen(c, k, k->sdef, err, sizeof(err));
	return conf_add_cidr(c, k, k->sdef, err, sizeof(err));
}

static const struct conf_type_ops conf_types[] = {
	[CONF_T_UINT] = { 0, conf_set_uint, conf_reset_uint, NULL },
	[CONF_T_SIZE] = { 0, conf_set_size, conf_reset_size, NULL },
	[CONF_T_LEVEL] = { 0, conf_set_level, conf_reset_level, NULL },
	[CONF_T_STRING] = { 0, conf_set_string, conf_reset_string, conf_clear_string },
	[CONF_T_LISTEN] = { 1, conf_add_listen, conf_reset_list, conf_clear_listen },
	[CONF_T_CIDR] = { 1, conf_add_cidr, conf_reset_list, conf_clear_cidr },
	[CONF_T_RATE] = { 1, conf_add_rate, conf_reset_list, conf_clear_rate },
};

/*
 * Addresses: listeners, the DNS server, ranges.
 */

/* Accepts "1".."65535" and nothing else. */
static int
conf_port_valid(const char *s)
{
	uint64_t n;

	return conf_parse_u64(s, 0, &n) == 0 && n >= 1 && n <= 65535;
}

/* Copies s[0..len) into host (INET6_ADDRSTRLEN + 1 bytes); -1 when too long
 * to be an address. */
static int
conf_copy_host(char *host, const char *s, size_t len)
{
	if (len > INET6_ADDRSTRLEN)
		return -1;
	memcpy(host, s, len);
	host[len] = '\0';
	return 0;
}

/* "[IPV6]" with an optional ":PORT"; *port is left at the port text or NULL. */
static int
conf_bracket_valid(const char *s, const char **port, const char **why)
{
	char host[INET6_ADDRSTRLEN + 1];
	const char *end = strchr(s, ']');
	struct in6_addr a6;

	if (end == NULL) {
		*why = "missing \"]\" after the IPv6 address";
		return -1;
	}
	if (conf_copy_host(host, s + 1, (size_t)(end - s - 1)) == -1 ||
	    inet_pton(AF_INET6, host, &a6) != 1) {
		*why = "not an IPv6 address inside \"[]\"";
		return -1;
	}
	if (end[1] != '\0' && end[1] != ':') {
		*why = "expected \":PORT\" after \"]\"";
		return -1;
	}
	*port = end[1] == ':' ? end + 2 : NULL;
	return 0;
}

/* "IPV4" with an optional ":PORT"; *port as above. */
static int
conf_ipv4_valid(const char *s, const char **port, const char **why)
{
	char host[INET6_ADDRSTRLEN + 1];
	const char *colon = strchr(s, ':');
	size_t len = colon != NULL ? (size_t)(colon - s) : strlen(s);
	struct in_addr a4;

	if (colon != NULL && strchr(colon + 1, ':') != NULL) {
		*why = "an IPv6 address must be written in brackets: [ADDR]:PORT";
		return -1;
	}
	if (len == 0) {
		*why = "missing host before \":PORT\"";
		return -1;
	}
	if (conf_copy_host(host, s, len) == -1 || inet_pton(AF_INET, host, &a4) != 1) {
		*why = "host must be an IPv4 address or [IPv6] (names are not resolved)";
		return -1;
	}
	*port = colon != NULL ? colon + 1 : NULL;
	return 0;
}

/* Checks "IPV4:PORT" or "[IPV6]:PORT"; when the port is optional also "IPV4",
 * "[IPV6]" and a bare IPV6. Names are refused: nothing here resolves. */
static int
conf_hostport_valid(const char *s, int need_port, const char **why)
{
	struct in6_addr a6;
	const char *port;
	int rc;

	if (!need_port && inet_pton(AF_INET6, s, &a6) == 1)
		return 0;
	rc = *s == '[' ? conf_bracket_valid(s, &port, why) : conf_ipv4_valid(s, &port, why);
	if (rc == -1)
		return -1;
	if (port == NULL && need_port) {
		*why = "missing \":PORT\"";
		return -1;
	}
	if (port != NULL && !conf_port_valid(port)) {
		*why = "port must be a number between 1 and 65535";
		return -1;
	}
	return 0;
}

int
conf_listen_valid(const char *s, const char **why)
{
	struct sockaddr_un sun;

	if (*s == '\0') {
		*why = "empty listener";
		return -1;
	}
	if (strncmp(s, "unix:", 5) != 0)
		return conf_hostport_valid(s, 1, why);
	s += 5;
	if (*s != '/') {
		*why = "a unix: listener needs an absolute path";
		return -1;
	}
	if (strlen(s) >= sizeof(sun.sun_path)) {
		*why = "unix: path longer than a socket address holds";
		return -1;
	}
	return 0;
}

static int
conf_dns_server_valid(const char *s, const char **why)
{
	return conf_hostport_valid(s, 0, why);
}

/* ca_file is checked at load time, so that -t and a reload catch a missing
 * or unreadable file instead of the first TLS handshake. */
static int
conf_file_valid(const char *path, const char **why)
{
	struct stat st;
	int fd;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)) == -1) {
		*why = strerror(errno);
		return -1;
	}
	if (fstat(fd, &st) == -1) {
		*why = strerror(errno);
		close(fd);
		return -1;
	}
	close(fd);
	if (!S_ISREG(st.st_mode)) {
		*why = "not a regular file";
		return -1;
	}
	return 0;
}

/* Clears the bits below the prefix, so matching can compare whole bytes. */
static void
conf_cidr_mask(struct conf_cidr *r)
{
	size_t len = r->family == AF_INET ? 4 : 16;

	for (size_t i = 0; i < len; i++) {
		unsigned have = r->prefix > i * 8 ? r->prefix - (unsigned)i * 8 : 0;
		if (have < 8)
			r->addr[i] &= (uint8_t)(0xff00u >> have);
	}
}

/* An IPv4-mapped range (::ffff:a.b.c.d/96 and longer) is stored as the IPv4
 * range it denotes; policy.c unmaps addresses the same way, so a rule matches
 * whichever form it was written in. */
static void
conf_cidr_unmap(struct conf_cidr *r)
{
	static const uint8_t mapped[12] = { [10] = 0xff, [11] = 0xff };

	if (r->family != AF_INET6 || r->prefix < 96 || memcmp(r->addr, mapped, 12) != 0)
		return;
	r->family = AF_INET;
	memmove(r->addr, r->addr + 12, 4);
	memset(r->addr + 4, 0, 12);
	r->prefix -= 96;
}

int
conf_cidr_parse(const char *s, struct conf_cidr *out, const char **why)
{
	char host[INET6_ADDRSTRLEN + 1];
	const char *slash = strchr(s, '/');
	size_t len = slash != NULL ? (size_t)(slash - s) : strlen(s);
	struct conf_cidr r;
	unsigned max;
	uint64_t n;

	memset(&r, 0, sizeof(r));
	if (conf_copy_host(host, s, len) == -1) {
		*why = "not an IPv4 or IPv6 address";
		return -1;
	}
	if (inet_pton(AF_INET, host, r.addr) == 1)
		r.family = AF_INET;
	else if (inet_pton(AF_INET6, host, r.addr) == 1)
		r.family = AF_INET6;
	else {
		*why = "not an IPv4 or IPv6 address";
		return -1;
	}
	max = r.family == AF_INET ? 32 : 128;
	r.prefix = max;
	if (slash != NULL) {
		if (conf_parse_u64(slash + 1, 0, &n) != 0 || n > max) {
			*why = r.family == AF_INET ? "prefix length must be 0..32 for IPv4" :
			    "prefix length must be 0..128 for IPv6";
			return -1;
		}
		r.prefix = (unsigned)n;
	}
	conf_cidr_mask(&r);
	conf_cidr_unmap(&r);
	*out = r;
	return 0;
}

/*
 * Snapshots.
 */

static void
conf_free(struct conf *c)
{
	for (size_t i = 0; i < CONF_NKEYS; i++) {
		const struct conf_type_ops *t = &conf_types[conf_keys[i].type];
		if (t->clear != NULL)
			t->clear(c, &conf_keys[i]);
	}
	free(c);
}

struct conf *
conf_new_default(void)
{
	struct conf *c;

	if ((c = calloc(1, sizeof(*c))) == NULL)
		return NULL;
	c->refcnt = 1;
	for (size_t i = 0; i < CONF_NKEYS; i++) {
		if (conf_types[conf_keys[i].type].reset(c, &conf_keys[i]) == -1) {
			conf_free(c);
			return NULL;
		}
	}
	return c;
}

struct conf *
conf_ref(struct conf *c)
{
	if (c != NULL)
		c->refcnt++;
	return c;
}

void
conf_unref(struct conf *c)
{
	if (c != NULL && --c->refcnt == 0)
		conf_free(c);
}

/* All or nothing: on any bad entry the snapshot keeps its listeners. */
int
conf_set_listen(struct conf *c, char *const *listen, size_t n, const char **why)
{
	char *copy[CONF_MAX_LISTEN];

	if (n == 0) {
		*why = "no listener given";
		return -1;
	}
	if (n > CONF_MAX_LISTEN) {
		*why = "more than " CONF_STR(CONF_MAX_LISTEN) " listeners";
		return -1;
	}
	for (size_t i = 0; i < n; i++)
		if (conf_listen_valid(listen[i], why) == -1)
			return -1;
	for (size_t i = 0; i < n; i++) {
		if ((copy[i] = strdup(listen[i])) == NULL) {
			while (i > 0)
				free(copy[--i]);
			*why = "out of memory";
			return -1;
		}
	}
	for (size_t i = 0; i < c->nlisten; i++)
		free(c->listen[i]);
	memcpy(c->listen, copy, n * sizeof(copy[0]));
	c->nlisten = n;
	return 0;
}

/*
 * The file.
 */

struct conf_parse {
	const char *path;
	FILE *errs;
	struct conf *c;
	unsigned lineno;
	unsigned nerrors;
	unsigned seen[CONF_NKEYS];	/* line that set each key; 0: not yet */
};

static void conf_error(struct conf_parse *, unsigned, const char *, ...)
    __attribute__((format(printf, 3, 4)));

static void
conf_error(struct conf_parse *p, unsigned line, const char *fmt, ...)
{
	va_list ap;

	p->nerrors++;
	if (p->errs == NULL)
		return;
	if (line != 0)
		fprintf(p->errs, "%s:%u: ", p->path, line);
	else
		fprintf(p->errs, "%s: ", p->path);
	va_start(ap, fmt);
	vfprintf(p->errs, fmt, ap);
	va_end(ap);
	fputc('\n', p->errs);
}

enum conf_line {
	CONF_LINE_OK,
	CONF_LINE_EOF,
	CONF_LINE_LONG,
	CONF_LINE_NUL,
};

/* Reads one line, without its newline, into buf (CONF_LINE_MAX + 1 bytes).
 * An overlong line is consumed to its end so the next one starts fresh. */
static enum conf_line
conf_read_line(FILE *f, char *buf)
{
	size_t n = 0;
	int ch, any = 0, nul = 0;

	while ((ch = getc(f)) != EOF) {
		any = 1;
		if (ch == '\n')
			break;
		if (ch == '\0')
			nul = 1;
		if (n < CONF_LINE_MAX)
			buf[n] = (char)ch;
		n++;
	}
	buf[n < CONF_LINE_MAX ? n : CONF_LINE_MAX] = '\0';
	if (!any)
		return CONF_LINE_EOF;
	if (n > CONF_LINE_MAX)
		return CONF_LINE_LONG;
	return nul ? CONF_LINE_NUL : CONF_LINE_OK;
}

static char *
conf_trim(char *s)
{
	char *e;

	while (isspace((unsigned char)*s))
		s++;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

/* A "#" starts a comment at the start of a line or after white space; one
 * inside a word (unix:/tmp/a#b) is part of the value. */
static void
conf_strip_comment(char *s)
{
	for (char *p = s; *p != '\0'; p++) {
		if (*p == '#' && (p == s || *(p - 1) == ' ' || *(p - 1) == '\t')) {
			*p = '\0';
			return;
		}
	}
}

static const struct conf_key *
conf_find(const char *name)
{
	for (size_t i = 0; i < CONF_NKEYS; i++)
		if (strcmp(conf_keys[i].name, name) == 0)
			return &conf_keys[i];
	return NULL;
}

int
conf_bounds(const char *name, uint64_t *min, uint64_t *max)
{
	const struct conf_key *k = conf_find(name);

	if (k == NULL || (k->type != CONF_T_UINT && k->type != CONF_T_SIZE))
		return -1;
	*min = k->min;
	*max = k->max;
	return 0;
}

/* Applies one "key = value" to the snapshot under construction. */
static void
conf_apply(struct conf_parse *p, const char *name, const char *value)
{
	char q[CONF_QUOTE_MAX], err[CONF_ERR_MAX];
	const struct conf_key *k;
	const struct conf_type_ops *t;
	size_t i;

	if ((k = conf_find(name)) == NULL) {
		conf_error(p, p->lineno, "unknown key \"%s\"", conf_quote(q, name));
		return;
	}
	t = &conf_types[k->type];
	i = (size_t)(k - conf_keys);
	if (p->seen[i] != 0 && !t->list) {
		conf_error(p, p->lineno, "%s: already set on line %u", k->name, p->seen[i]);
		return;
	}
	if (*value == '\0') {
		conf_error(p, p->lineno, "%s: missing value", k->name);
		return;
	}
	/* The file's first line of a list replaces the default list. */
	if (p->seen[i] == 0 && t->list)
		t->clear(p->c, k);
	p->seen[i] = p->lineno;
	if (t->set(p->c, k, value, err, sizeof(err)) == -1)
		conf_error(p, p->lineno, "%s", err);
}

static void
conf_parse_line(struct conf_parse *p, char *line)
{
	char *eq, *name;

	conf_strip_comment(line);
	line = conf_trim(line);
	if (*line == '\0')
		return;
	if ((eq = strchr(line, '=')) == NULL) {
		conf_error(p, p->lineno, "expected \"key = value\"");
		return;
	}
	*eq = '\0';
	name = conf_trim(line);
	if (*name == '\0') {
		conf_error(p, p->lineno, "missing key before \"=\"");
		return;
	}
	conf_apply(p, name, conf_trim(eq + 1));
}

/* The line that set a key; 0 when it kept its default. */
static unsigned
conf_line_of(const struct conf_parse *p, const char *name)
{
	return p->seen[conf_find(name) - conf_keys];
}

/* Checks between keys, once the whole file is read. Caps such as
 * concurrency > max_connections are not errors: they are applied at use. */
static void
conf_check(struct conf_parse *p)
{
	const struct conf *c = p->c;
	unsigned lmin = conf_line_of(p, "dns_min_ttl_s");
	unsigned lmax = conf_line_of(p, "dns_max_ttl_s");

	if (c->dns_min_ttl_s > c->dns_max_ttl_s)
		conf_error(p, lmin > lmax ? lmin : lmax,
		    "dns_min_ttl_s (%u) is greater than dns_max_ttl_s (%u)",
		    c->dns_min_ttl_s, c->dns_max_ttl_s);
}

static void
conf_parse_file(struct conf_parse *p, FILE *f)
{
	char line[CONF_LINE_MAX + 1];
	enum conf_line rc;

	while ((rc = conf_read_line(f, line)) != CONF_LINE_EOF) {
		p->lineno++;
		if (rc == CONF_LINE_LONG)
			conf_error(p, p->lineno, "line longer than %d bytes", CONF_LINE_MAX);
		else if (rc == CONF_LINE_NUL)
			conf_error(p, p->lineno, "line contains a NUL byte");
		else
			conf_parse_line(p, line);
	}
	if (ferror(f))
		conf_error(p, 0, "read error: %s", strerror(errno));
	else
		conf_check(p);
}

struct conf *
conf_load(const char *path, FILE *errs)
{
	struct conf_parse p;
	FILE *f;

	memset(&p, 0, sizeof(p));
	p.path = path;
	p.errs = errs;
	if ((f = fopen(path, "re")) == NULL) {
		conf_error(&p, 0, "cannot open: %s", strerror(errno));
		return NULL;
	}
	if ((p.c = conf_new_default()) == NULL) {
		fclose(f);
		conf_error(&p, 0, "out of memory");
		return NULL;
	}
	conf_parse_file(&p, f);
	fclose(f);
	if (p.nerrors != 0) {
		conf_unref(p.c);
		return NULL;
	}
	return p.c;
}

int
conf_same_listen(const struct conf *a, const struct conf *b)
{
	if (a->nlisten != b->nlisten)
		return 0;
	for (size_t i = 0; i < a->nlisten; i++)
		if (strcmp(a->listen[i], b->listen[i]) != 0)
			return 0;
	return 1;
}
