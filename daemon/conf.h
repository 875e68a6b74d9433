/* conf.h: the configuration snapshot. A snapshot is immutable once loaded and
 * reference-counted: a reload builds a new one and batches in flight keep the
 * one they started with. */
#ifndef FANOUTD_CONF_H
#define FANOUTD_CONF_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define CONF_MAX_LISTEN 16
#define CONF_MAX_CIDR 256
#define CONF_MAX_RATE 256

/* One rate_limit line: requests a second that may start to an origin, or
 * to each origin below a domain, shared by every batch. */
struct conf_rate {
	int https;
	int wildcard;		/* host is a domain: each origin strictly below it */
	char *host;		/* lower case; IPv6 without brackets, as url.c keeps it */
	uint16_t port;		/* explicit or the scheme's default */
	double rate;		/* per second, > 0 */
	unsigned burst;		/* >= 1 */
};

struct conf_cidr {
	int family;		/* AF_INET or AF_INET6 */
	uint8_t addr[16];	/* network address, host bits cleared */
	unsigned prefix;
};

struct conf {
	unsigned refcnt;

	char *listen[CONF_MAX_LISTEN];	/* "HOST:PORT", "[V6]:PORT" or "unix:/path" */
	size_t nlisten;

	unsigned max_batch;
	unsigned max_batches;
	size_t max_request_bytes;
	unsigned max_connections;
	unsigned max_per_host;
	unsigned concurrency;
	unsigned per_host;
	unsigned timeout_ms;
	unsigned connect_timeout_ms;
	size_t max_body_bytes;
	unsigned follow_redirects;
	unsigned deadline_ms;
	unsigned idle_timeout_s;
	char *dns_server;		/* NULL: resolv.conf and hosts */
	unsigned dns_min_ttl_s;
	unsigned dns_max_ttl_s;
	unsigned dns_negative_ttl_s;
	char *ca_file;			/* NULL: system trust store */
	struct conf_cidr deny[CONF_MAX_CIDR];
	size_t ndeny;
	struct conf_cidr allow[CONF_MAX_CIDR];
	size_t nallow;
	unsigned drain_timeout_s;
	int log_level;

	/* Bounds the contract leaves to us (documented in doc/config.md). */
	size_t max_header_bytes;	/* one upstream response header block */
	size_t output_buffer_bytes;	/* a batch's unsent output before it stops dispatching */
	unsigned dns_cache_size;	/* names kept in the DNS cache */
	unsigned tls_resume;		/* 1: resume TLS sessions per origin; 0: full handshakes */

	/* v1.1 additions. */
	unsigned http2;			/* 1: offer h2 by ALPN to https:// origins */
	unsigned max_streams;		/* requests at once on one HTTP/2 connection */
	struct conf_rate rate_limit[CONF_MAX_RATE];
	size_t nrate_limit;
	unsigned backoff;		/* 1: a 429 (or a 503 with Retry-After) pauses its origin */
	unsigned max_backoff_s;		/* the longest such pause */
	unsigned client_timeout_s;	/* a caller's head and document, or a gap between lines */
	unsigned max_clients;		/* caller connections at once */
};

/* A snapshot holding every default. */
struct conf *conf_new_default(void);

/* Parses FILE into a new snapshot. On failure returns NULL and writes every
 * problem found, one "FILE:LINE: what" per line, to errs. */
struct conf *conf_load(const char *path, FILE *errs);

/* Parses one "HOST:PORT"/"[V6]:PORT"/"unix:/path" listener string; used by
 * both the file and -l, so they reject the same things. */
int conf_listen_valid(const char *s, const char **why);

/* Replaces the snapshot's listeners with the given ones (from -l). */
int conf_set_listen(struct conf *c, char *const *listen, size_t n, const char **why);

/* Whether a and b list the same listeners in the same order. */
int conf_same_listen(const struct conf *a, const struct conf *b);

/* The bounds of the numeric key NAME: 0, or -1 when there is no such key.
 * A batch option of the same name takes them, so that the file and a batch
 * accept the same range. */
int conf_bounds(const char *name, uint64_t *min, uint64_t *max);

/* The rate_limit line for an origin: its exact origin's, else the one of
 * the longest domain above host; NULL when none. */
const struct conf_rate *conf_rate_find(const struct conf *c, int https, const char *host,
    uint16_t port);

int conf_cidr_parse(const char *s, struct conf_cidr *out, const char **why);

struct conf *conf_ref(struct conf *c);
void conf_unref(struct conf *c);

#endif
