/* dnscache.h: name resolution for upstream connects, through evdns, with a
 * TTL-aware cache shared by all batches: answers kept for their TTL clamped to
 * dns_min_ttl_s..dns_max_ttl_s, failures for dns_negative_ttl_s, and
 * concurrent lookups of one name merged into one query. */
#ifndef FANOUTD_DNSCACHE_H
#define FANOUTD_DNSCACHE_H

#include <netinet/in.h>
#include <stdint.h>

#define DNS_MAX_ADDRS 8

struct dns_addr {
	int family;		/* AF_INET or AF_INET6 */
	union {
		struct in_addr v4;
		struct in6_addr v6;
	} u;
};

struct dns_answer {
	int naddrs;		/* 0: failed, see why */
	struct dns_addr addrs[DNS_MAX_ADDRS];
	char why[96];
};

struct event_base;
struct conf;
struct dnscache_wait;

typedef void (*dnscache_cb)(const struct dns_answer *a, void *arg);

int dnscache_init(struct event_base *base, const struct conf *c, const char **why);
void dnscache_shutdown(void);

/* Takes c's resolver and limits (see dnscache.c); -1 with why, and nothing
 * changed, when the resolver cannot be set up. */
int dnscache_reload(const struct conf *c, const char **why);

/* Resolves name. When the answer is at hand (a cached entry, positive or
 * negative), fills *a and returns NULL without calling cb. Otherwise returns a
 * handle and calls cb(a, arg) once, later, from the event loop, unless the
 * handle is cancelled first. */
struct dnscache_wait *dnscache_lookup(const char *name, struct dns_answer *a, dnscache_cb cb,
    void *arg);
void dnscache_cancel(struct dnscache_wait *w);

/* Pure policy, exposed for the unit tests: the seconds an answer is kept. */
unsigned dnscache_ttl(unsigned ttl, unsigned min_ttl, unsigned max_ttl);

#endif
