/* test_dnscache.c: the DNS cache's TTL policy, the string map under it,
 * /etc/hosts answered without a query (a real evdns base, no network), and a
 * reload racing an answer, against a one-socket DNS server on loopback. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

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

/* A DNS server of one UDP socket: takes a query, answers it with one A
 * record (127.0.0.1, TTL 60), built from the query itself. */
struct fake_dns {
	int fd;
	unsigned char q[512];
	ssize_t qlen;
	struct sockaddr_in from;
};

static int
fake_dns_query(struct fake_dns *f)
{
	struct pollfd p = { f->fd, POLLIN, 0 };
	socklen_t fl = sizeof(f->from);

	if (poll(&p, 1, 2000) != 1)
		return -1;
	f->qlen = recvfrom(f->fd, f->q, sizeof(f->q), 0, (struct sockaddr *)&f->from, &fl);
	return f->qlen > 12 ? 0 : -1;
}

static void
fake_dns_answer(struct fake_dns *f)
{
	static const unsigned char rr[] = { 0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1 };
	unsigned char r[sizeof(f->q) + sizeof(rr)];

	memcpy(r, f->q, (size_t)f->qlen);
	r[2] = 0x81;	/* a response, recursion desired and available */
	r[3] = 0x80;
	r[6] = 0;	/* one answer, nothing else */
	r[7] = 1;
	memset(r + 8, 0, 4);
	memcpy(r + f->qlen, rr, sizeof(rr));
	sendto(f->fd, r, (size_t)f->qlen + sizeof(rr), 0, (struct sockaddr *)&f->from,
	    sizeof(f->from));
}

static int answers;

static void
count_answer(const struct dns_answer *a, void *arg)
{
	(void)arg;
	CHECK(a->naddrs == 1);
	answers++;
}

static struct conf *reload_conf;

static void
reload_now(evutil_socket_t fd, short what, void *arg)
{
	char b;
	const char *why;

	(void)what;
	(void)arg;
	CHECK(read(fd, &b, 1) == 1);
	CHECK(dnscache_reload(reload_conf, &why) == 0);
}

/* An answer already read (its callback queued by evdns) when a reload runs
 * in the same loop turn: the lookup is answered once, by the resolver it
 * started on, and not asked again; the old resolver is freed afterwards
 * (LeakSanitizer checks that at exit). Once, an answer could settle the
 * entry and a second query, made on the new resolver, later wrote into it
 * after the cache had evicted it. */
static void
test_reload_races_an_answer(void)
{
	struct event_base *base = event_base_new();
	struct fake_dns f = { .fd = socket(AF_INET, SOCK_DGRAM, 0) };
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001) };
	socklen_t sl = sizeof(sa);
	struct dns_answer a;
	struct event *ev;
	const char *why;
	char server[32];
	uint64_t queries;
	int pv[2];

	CHECK(bind(f.fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
	CHECK(getsockname(f.fd, (struct sockaddr *)&sa, &sl) == 0);
	snprintf(server, sizeof(server), "127.0.0.1:%d", ntohs(sa.sin_port));
	reload_conf = conf_new_default();
	reload_conf->dns_server = strdup(server);
	reload_conf->dns_cache_size = 2;
	CHECK(dnscache_init(base, reload_conf, &why) == 0);
	CHECK(pipe(pv) == 0);
	ev = event_new(base, pv[0], EV_READ | EV_PERSIST, reload_now, NULL);
	event_add(ev, NULL);

	queries = metrics.dns_queries;
	CHECK(dnscache_lookup("a.test", &a, count_answer, NULL) != NULL);
	CHECK(fake_dns_query(&f) == 0);
	fake_dns_answer(&f);
	CHECK(write(pv[1], "x", 1) == 1);	/* the "SIGHUP", ready in the same turn */
	for (int i = 0; i < 20 && answers == 0; i++)
		event_base_loop(base, EVLOOP_ONCE);
	event_base_loop(base, EVLOOP_NONBLOCK);
	CHECK(answers == 1);
	CHECK(metrics.dns_queries == queries + 1);	/* not asked again */
	CHECK(dnscache_lookup("a.test", &a, count_answer, NULL) == NULL && a.naddrs == 1);

	/* The new resolver answers new names; evicting a.test is harmless. */
	for (const char *const *n = (const char *const[]){ "b.test", "c.test", NULL }; *n; n++) {
		CHECK(dnscache_lookup(*n, &a, count_answer, NULL) != NULL);
		CHECK(fake_dns_query(&f) == 0);
		fake_dns_answer(&f);
		for (int i = 0; i < 20 && answers < (n[0][0] == 'b' ? 2 : 3); i++)
			event_base_loop(base, EVLOOP_ONCE);
	}
	CHECK(answers == 3);

	event_free(ev);
	close(pv[0]);
	close(pv[1]);
	close(f.fd);
	dnscache_shutdown();
	conf_unref(reload_conf);
	event_base_free(base);
}

int
main(void)
{
	test_ttl();
	test_map();
	test_hosts();
	test_reload_races_an_answer();
	return UNIT_DONE();
}
