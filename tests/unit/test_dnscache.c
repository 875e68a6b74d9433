/* test_dnscache.c: the DNS cache's TTL policy, the string map under it, and
 * /etc/hosts answered without a query (a real evdns base, no network). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>

#include <event2/event.h>

#include "conf.h"
#include "dnscache.h"
#include "map.h"
#include "metrics.h"
#include "unit.h"

static void
test_ttl(void)
{
	CHECK(dnscache_ttl(0, 5, 300) == 5);
	CHECK(dnscache_ttl(5, 5, 300) == 5);
	CHECK(dnscache_ttl(60, 5, 300) == 60);
	CHECK(dnscache_ttl(86400, 5, 300) == 300);
	CHECK(dnscache_ttl(7, 0, 0) == 0);
}

static void
test_map(void)
{
	struct map *m = map_new();
	char keys[1000][8];

	for (int i = 0; i < 1000; i++) {
		snprintf(keys[i], sizeof(keys[i]), "k%d", i);
		map_put(m, keys[i], &keys[i]);
	}
	CHECK(map_count(m) == 1000);
	CHECK(map_get(m, "k999") == &keys[999]);
	CHECK(map_get(m, "k1000") == NULL);
	for (int i = 0; i < 1000; i += 2)
		CHECK(map_del(m, keys[i]) == &keys[i]);
	CHECK(map_del(m, "k0") == NULL);
	CHECK(map_count(m) == 500);
	CHECK(map_get(m, "k0") == NULL && map_get(m, "k1") == &keys[1]);
	map_free(m);
}

static void
never(const struct dns_answer *a, void *arg)
{
	(void)a;
	(void)arg;
	CHECK(!"a hosts answer must not call back");
}

/* Only meaningful where /etc/hosts names localhost, as Debian's does. */
static void
test_hosts(void)
{
	struct event_base *base = event_base_new();
	struct conf *c = conf_new_default();
	struct dns_answer a;
	const char *why;
	char ip[INET6_ADDRSTRLEN];
	uint64_t queries;

	CHECK(dnscache_init(base, c, &why) == 0);
	queries = metrics.dns_queries;
	CHECK(dnscache_lookup("localhost", &a, never, NULL) == NULL);
	CHECK(a.naddrs >= 1);
	inet_ntop(a.addrs[0].family, &a.addrs[0].u, ip, sizeof(ip));
	CHECK(strcmp(ip, "127.0.0.1") == 0 || strcmp(ip, "::1") == 0);
	CHECK(metrics.dns_queries == queries);
	dnscache_shutdown();
	conf_unref(c);
	event_base_free(base);
}

int
main(void)
{
	test_ttl();
	test_map();
	test_hosts();
	return UNIT_DONE();
}
