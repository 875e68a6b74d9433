/* dnscache.c: see dnscache.h.
 *
 * evdns_getaddrinfo() hides the TTL, so names are queried with
 * evdns_base_resolve_ipv4/ipv6, which report it: A first, AAAA only when the
 * name has no A record (one query per name in the common case). /etc/hosts is
 * consulted first, when no dns_server is configured, through a second evdns
 * base that has the hosts file but no nameserver: evdns answers a hosts entry
 * synchronously, and the lookup it would otherwise start goes nowhere and is
 * cancelled at once. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>

#include "conf.h"
#include "dnscache.h"
#include "log.h"
#include "map.h"
#include "metrics.h"
#include "util.h"

enum dns_state { DNS_PENDING, DNS_DONE };

struct dnscache_wait {
	struct dns_entry *entry;
	dnscache_cb cb;
	void *arg;
	TAILQ_ENTRY(dnscache_wait) link;
};

struct dns_entry {
	char *name;			/* the map key */
	enum dns_state state;
	uint64_t expires_us;
	struct dns_answer answer;
	int family;			/* of the query in flight */
	struct dns_resolver *res;	/* that carries it */
	int settling;			/* telling waiters: not to be evicted */
	TAILQ_HEAD(, dnscache_wait) waiters;
	TAILQ_ENTRY(dns_entry) link;	/* least recently used first */
};

/* One resolver configuration: what a reload replaces. A replaced one lives
 * on until the queries it carries have answered, because evdns may already
 * have queued their answers: dropped, they would be lost; asked again
 * elsewhere, an entry could be answered twice. It is then freed from a
 * timer, never from inside one of its own callbacks. */
struct dns_resolver {
	struct evdns_base *dns;
	struct evdns_base *hosts;	/* /etc/hosts; NULL when dns_server is set */
	unsigned queries;		/* in flight */
	struct event *reap;
	TAILQ_ENTRY(dns_resolver) link;	/* dc.retired */
};

static struct {
	struct event_base *base;
	struct dns_resolver *cur;
	TAILQ_HEAD(, dns_resolver) retired;
	struct map *names;
	TAILQ_HEAD(, dns_entry) entries;
	unsigned min_ttl, max_ttl, neg_ttl, max_entries;
} dc;

unsigned
dnscache_ttl(unsigned ttl, unsigned min_ttl, unsigned max_ttl)
{
	if (ttl < min_ttl)
		return min_ttl;
	if (ttl > max_ttl)
		return max_ttl;
	return ttl;
}

static void
dns_resolver_free(struct dns_resolver *res)
{
	if (res == NULL)
		return;
	if (res->dns != NULL)
		evdns_base_free(res->dns, 0);
	if (res->hosts != NULL)
		evdns_base_free(res->hosts, 0);
	if (res->reap != NULL)
		event_free(res->reap);
	free(res);
}

static void
dns_resolver_reap(evutil_socket_t fd, short what, void *arg)
{
	struct dns_resolver *res = arg;

	(void)fd;
	(void)what;
	TAILQ_REMOVE(&dc.retired, res, link);
	dns_resolver_free(res);
}

/* Retires res once nothing is in flight on it (see struct dns_resolver). */
static void
dns_resolver_settle(struct dns_resolver *res)
{
	static const struct timeval now = { 0, 0 };

	if (res != dc.cur && res->queries == 0)
		evtimer_add(res->reap, &now);
}

/* The resolver c asks for: its dns_server, or resolv.conf plus a second,
 * nameserver-less base for /etc/hosts. */
static struct dns_resolver *
dns_resolver_new(const struct conf *c, const char **why)
{
	struct dns_resolver *res = xcalloc(1, sizeof(*res));

	res->dns = evdns_base_new(dc.base, 0);
	res->reap = evtimer_new(dc.base, dns_resolver_reap, res);
	if (res->dns == NULL || res->reap == NULL) {
		*why = "cannot create the DNS resolver";
		goto fail;
	}
	if (c->dns_server != NULL) {
		if (evdns_base_nameserver_ip_add(res->dns, c->dns_server) != 0) {
			*why = "dns_server: cannot use this address";
			goto fail;
		}
		return res;
	}
	/* Without resolv.conf evdns falls back to 127.0.0.1, as libc does. */
	evdns_base_resolv_conf_parse(res->dns, DNS_OPTIONS_ALL & ~DNS_OPTION_HOSTSFILE,
	    "/etc/resolv.conf");
	res->hosts = evdns_base_new(dc.base, 0);
	if (res->hosts == NULL || evdns_base_load_hosts(res->hosts, NULL) != 0)
		log_warn("cannot read /etc/hosts; names go to DNS only");
	return res;
fail:
	dns_resolver_free(res);
	return NULL;
}

static void
dns_limits(const struct conf *c)
{
	dc.min_ttl = c->dns_min_ttl_s;
	dc.max_ttl = c->dns_max_ttl_s;
	dc.neg_ttl = c->dns_negative_ttl_s;
	dc.max_entries = c->dns_cache_size;
}

int
dnscache_init(struct event_base *base, const struct conf *c, const char **why)
{
	dc.base = base;
	TAILQ_INIT(&dc.retired);
	if ((dc.cur = dns_resolver_new(c, why)) == NULL)
		return -1;
	dc.names = map_new();
	TAILQ_INIT(&dc.entries);
	dns_limits(c);
	return 0;
}

static void
dns_entry_free(struct dns_entry *e)
{
	struct dnscache_wait *w;

	while ((w = TAILQ_FIRST(&e->waiters)) != NULL) {
		TAILQ_REMOVE(&e->waiters, w, link);
		free(w);
	}
	TAILQ_REMOVE(&dc.entries, e, link);
	map_del(dc.names, e->name);
	free(e->name);
	free(e);
}

void
dnscache_shutdown(void)
{
	struct dns_entry *e;
	struct dns_resolver *res;

	/* Queries in flight are dropped without their callbacks. */
	dns_resolver_free(dc.cur);
	while ((res = TAILQ_FIRST(&dc.retired)) != NULL) {
		TAILQ_REMOVE(&dc.retired, res, link);
		dns_resolver_free(res);
	}
	if (dc.names != NULL) {
		while ((e = TAILQ_FIRST(&dc.entries)) != NULL)
			dns_entry_free(e);
		map_free(dc.names);
	}
	memset(&dc, 0, sizeof(dc));
}

/* Settles e with its answer: kept for ttl seconds, waiters told in order. */
static void
dns_entry_settle(struct dns_entry *e, unsigned ttl)
{
	struct dnscache_wait *w;

	e->state = DNS_DONE;
	e->expires_us = now_us() + (uint64_t)ttl * 1000000u;
	e->settling = 1;
	/* Each callback may cancel other waiters (a batch ending), so take
	 * them one at a time from the head rather than iterating. */
	while ((w = TAILQ_FIRST(&e->waiters)) != NULL) {
		TAILQ_REMOVE(&e->waiters, w, link);
		dnscache_cb cb = w->cb;
		void *arg = w->arg;
		free(w);
		cb(&e->answer, arg);
	}
	e->settling = 0;
}

static void dns_query(struct dns_entry *e, int family);

static void
dns_answered(int result, char type, int count, int ttl, void *addresses, void *arg)
{
	struct dns_entry *e = arg;
	struct dns_answer *a = &e->answer;
	struct dns_resolver *res = e->res;

	e->res = NULL;
	res->queries--;
	dns_resolver_settle(res);
	if (result == DNS_ERR_SHUTDOWN || result == DNS_ERR_CANCEL)
		return;
	if (result == DNS_ERR_NONE && count > 0 && (type == DNS_IPv4_A || type == DNS_IPv6_AAAA)) {
		a->naddrs = count < DNS_MAX_ADDRS ? count : DNS_MAX_ADDRS;
		for (int i = 0; i < a->naddrs; i++) {
			if (type == DNS_IPv4_A) {
				a->addrs[i].family = AF_INET;
				memcpy(&a->addrs[i].u.v4, (char *)addresses + 4 * i, 4);
			} else {
				a->addrs[i].family = AF_INET6;
				memcpy(&a->addrs[i].u.v6, (char *)addresses + 16 * i, 16);
			}
		}
		dns_entry_settle(e, dnscache_ttl(ttl < 0 ? 0 : (unsigned)ttl, dc.min_ttl, dc.max_ttl));
		return;
	}
	/* The name exists but has no A record: ask for AAAA before giving up. */
	if (e->family == AF_INET && (result == DNS_ERR_NODATA ||
	    (result == DNS_ERR_NONE && count == 0))) {
		dns_query(e, AF_INET6);
		return;
	}
	a->naddrs = 0;
	if (result == DNS_ERR_NOTEXIST || result == DNS_ERR_NODATA || result == DNS_ERR_NONE)
		snprintf(a->why, sizeof(a->why), "no address for this name");
	else
		snprintf(a->why, sizeof(a->why), "lookup failed: %s", evdns_err_to_string(result));
	dns_entry_settle(e, dc.neg_ttl);
}

static void
dns_query(struct dns_entry *e, int family)
{
	struct evdns_request *r;

	e->family = family;
	metrics.dns_queries++;
	if (family == AF_INET)
		r = evdns_base_resolve_ipv4(dc.cur->dns, e->name, 0, dns_answered, e);
	else
		r = evdns_base_resolve_ipv6(dc.cur->dns, e->name, 0, dns_answered, e);
	if (r != NULL) {
		e->res = dc.cur;
		dc.cur->queries++;
	} else {
		e->answer.naddrs = 0;
		snprintf(e->answer.why, sizeof(e->answer.why), "cannot start a DNS query");
		/* Settle on the next loop turn would be nicer; waiters are
		 * added by the caller after this returns, so none exist yet. */
		dns_entry_settle(e, dc.neg_ttl);
	}
}

struct hosts_probe {
	int answered;
	struct dns_answer *a;
};

static void
dns_hosts_answered(int err, struct evutil_addrinfo *res, void *arg)
{
	struct hosts_probe *p = arg;

	if (err != 0 || res == NULL) {
		if (res != NULL)
			evutil_freeaddrinfo(res);
		return;
	}
	p->answered = 1;
	p->a->naddrs = 0;
	for (struct evutil_addrinfo *ai = res; ai != NULL && p->a->naddrs < DNS_MAX_ADDRS;
	    ai = ai->ai_next) {
		struct dns_addr *d = &p->a->addrs[p->a->naddrs];
		if (ai->ai_family == AF_INET) {
			d->family = AF_INET;
			d->u.v4 = ((struct sockaddr_in *)ai->ai_addr)->sin_addr;
		} else if (ai->ai_family == AF_INET6) {
			d->family = AF_INET6;
			d->u.v6 = ((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr;
		} else
			continue;
		p->a->naddrs++;
	}
	evutil_freeaddrinfo(res);
}

/* Answers name from /etc/hosts, synchronously, or returns 0. */
static int
dns_from_hosts(const char *name, struct dns_answer *a)
{
	struct hosts_probe p = { 0, a };
	struct evutil_addrinfo hints;
	struct evdns_getaddrinfo_request *r;

	if (dc.cur->hosts == NULL)
		return 0;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	r = evdns_getaddrinfo(dc.cur->hosts, name, NULL, &hints, dns_hosts_answered, &p);
	if (r != NULL)
		evdns_getaddrinfo_cancel(r);
	return p.answered && a->naddrs > 0;
}

/* Makes room for one more entry by dropping the least recently used
 * settled one; pending entries have waiters and stay. */
static void
dns_evict(void)
{
	struct dns_entry *e;

	if (map_count(dc.names) < dc.max_entries)
		return;
	TAILQ_FOREACH(e, &dc.entries, link) {
		if (e->state == DNS_DONE && !e->settling) {
			dns_entry_free(e);
			return;
		}
	}
}

struct dnscache_wait *
dnscache_lookup(const char *name, struct dns_answer *a, dnscache_cb cb, void *arg)
{
	struct dns_entry *e = map_get(dc.names, name);
	struct dnscache_wait *w;

	if (e != NULL) {
		TAILQ_REMOVE(&dc.entries, e, link);
		TAILQ_INSERT_TAIL(&dc.entries, e, link);
		if (e->state == DNS_DONE && e->expires_us > now_us()) {
			metrics.dns_hits++;
			*a = e->answer;
			return NULL;
		}
	} else {
		if (dns_from_hosts(name, a)) {
			metrics.dns_hits++;
			return NULL;
		}
		dns_evict();
		e = xcalloc(1, sizeof(*e));
		e->name = xstrdup(name);
		e->state = DNS_DONE;
		TAILQ_INIT(&e->waiters);
		map_put(dc.names, e->name, e);
		TAILQ_INSERT_TAIL(&dc.entries, e, link);
	}
	metrics.dns_misses++;
	if (e->state == DNS_DONE) {
		e->state = DNS_PENDING;
		dns_query(e, AF_INET);
		if (e->state == DNS_DONE) {	/* failed to start */
			*a = e->answer;
			return NULL;
		}
	}
	w = xcalloc(1, sizeof(*w));
	w->entry = e;
	w->cb = cb;
	w->arg = arg;
	TAILQ_INSERT_TAIL(&e->waiters, w, link);
	return w;
}

void
dnscache_cancel(struct dnscache_wait *w)
{
	if (w == NULL)
		return;
	TAILQ_REMOVE(&w->entry->waiters, w, link);
	free(w);
}

/* A reload. The resolver is always rebuilt, so that resolv.conf and
 * /etc/hosts are read again, and the answers of the old one are forgotten.
 * Lookups in flight finish on the resolver they started on. */
int
dnscache_reload(const struct conf *c, const char **why)
{
	struct dns_resolver *res = dns_resolver_new(c, why), *old = dc.cur;
	struct dns_entry *e, *next;

	if (res == NULL)
		return -1;
	dc.cur = res;
	TAILQ_INSERT_TAIL(&dc.retired, old, link);
	dns_resolver_settle(old);
	dns_limits(c);
	for (e = TAILQ_FIRST(&dc.entries); e != NULL; e = next) {
		next = TAILQ_NEXT(e, link);
		if (e->state == DNS_DONE && !e->settling)
			dns_entry_free(e);
	}
	return 0;
}
