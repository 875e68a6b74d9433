/* test_policy.c: allow/deny on resolved addresses: deny wins, an allow list
 * restricts, and IPv4-mapped IPv6 addresses are judged as IPv4. */
#include <sys/socket.h>
#include <sys/un.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <stdlib.h>
#include <string.h>

#include "conf.h"
#include "policy.h"
#include "unit.h"

static void
add(struct conf_cidr *list, size_t *n, const char *s)
{
	const char *why;

	if (conf_cidr_parse(s, &list[*n], &why) == -1) {
		fprintf(stderr, "bad range \"%s\": %s\n", s, why);
		exit(1);
	}
	(*n)++;
}

/* Asks the policy about a literal address, v4 or v6. */
static int
allows(const struct conf *c, const char *addr)
{
	struct sockaddr_storage ss;
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

	memset(&ss, 0, sizeof(ss));
	if (inet_pton(AF_INET, addr, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons(80);
	} else if (inet_pton(AF_INET6, addr, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(80);
	} else {
		fprintf(stderr, "bad address \"%s\"\n", addr);
		exit(1);
	}
	return policy_allows(c, (struct sockaddr *)&ss);
}

static void
test_no_rules(void)
{
	struct conf *c = conf_new_default();

	CHECK(allows(c, "127.0.0.1"));
	CHECK(allows(c, "169.254.169.254"));
	CHECK(allows(c, "::1"));
	CHECK(allows(c, "::ffff:10.0.0.1"));
	conf_unref(c);
}

static void
test_deny(void)
{
	struct conf *c = conf_new_default();

	add(c->deny, &c->ndeny, "169.254.0.0/16");
	add(c->deny, &c->ndeny, "fe80::/10");
	add(c->deny, &c->ndeny, "192.168.1.7");
	add(c->deny, &c->ndeny, "172.16.0.0/12");
	CHECK(!allows(c, "169.254.169.254"));
	CHECK(!allows(c, "169.254.0.0"));
	CHECK(!allows(c, "169.254.255.255"));
	CHECK(allows(c, "169.255.0.1"));
	CHECK(allows(c, "169.253.255.255"));
	CHECK(!allows(c, "192.168.1.7"));
	CHECK(allows(c, "192.168.1.8"));
	/* /12 splits a byte: 172.16.0.0 - 172.31.255.255. */
	CHECK(!allows(c, "172.16.0.1"));
	CHECK(!allows(c, "172.31.255.255"));
	CHECK(allows(c, "172.32.0.0"));
	CHECK(allows(c, "172.15.255.255"));
	CHECK(!allows(c, "fe80::1"));
	CHECK(!allows(c, "febf:ffff::1"));
	CHECK(allows(c, "fec0::1"));
	CHECK(allows(c, "2001:db8::1"));
	/* The mapped form of a denied IPv4 address is denied too. */
	CHECK(!allows(c, "::ffff:169.254.169.254"));
	CHECK(!allows(c, "::ffff:192.168.1.7"));
	CHECK(allows(c, "::ffff:192.168.1.8"));
	/* Only ::ffff:0:0/96 is mapped; its neighbours are plain IPv6. */
	CHECK(allows(c, "::fffe:a9fe:a9fe"));
	CHECK(allows(c, "::a9fe:a9fe"));
	conf_unref(c);
}

/* A range written in mapped form denies the IPv4 addresses, in both forms. */
static void
test_mapped_rule(void)
{
	struct conf *c = conf_new_default();

	add(c->deny, &c->ndeny, "::ffff:169.254.0.0/112");
	CHECK(!allows(c, "169.254.1.1"));
	CHECK(!allows(c, "::ffff:169.254.1.1"));
	CHECK(allows(c, "169.253.1.1"));
	conf_unref(c);
}

static void
test_allow(void)
{
	struct conf *c = conf_new_default();

	add(c->allow, &c->nallow, "10.0.0.0/8");
	add(c->allow, &c->nallow, "fd00::/8");
	add(c->deny, &c->ndeny, "10.0.0.0/24");
	CHECK(allows(c, "10.1.2.3"));
	CHECK(allows(c, "::ffff:10.1.2.3"));
	CHECK(!allows(c, "11.0.0.1"));
	CHECK(!allows(c, "::ffff:11.0.0.1"));
	CHECK(!allows(c, "127.0.0.1"));
	CHECK(allows(c, "fd12::1"));
	CHECK(!allows(c, "fe00::1"));
	CHECK(!allows(c, "::1"));
	/* Deny wins over allow. */
	CHECK(!allows(c, "10.0.0.5"));
	CHECK(!allows(c, "::ffff:10.0.0.5"));
	CHECK(allows(c, "10.0.1.5"));
	conf_unref(c);
}

/* An allow of all IPv6 must not let mapped IPv4 addresses around the IPv4
 * allow list. */
static void
test_allow_v6_everything(void)
{
	struct conf *c = conf_new_default();

	add(c->allow, &c->nallow, "10.0.0.0/8");
	add(c->allow, &c->nallow, "::/0");
	CHECK(allows(c, "2001:db8::1"));
	CHECK(allows(c, "10.9.9.9"));
	CHECK(!allows(c, "8.8.8.8"));
	CHECK(!allows(c, "::ffff:8.8.8.8"));
	conf_unref(c);
}

static void
test_prefix_edges(void)
{
	struct conf *c = conf_new_default();

	add(c->deny, &c->ndeny, "0.0.0.0/0");
	CHECK(!allows(c, "1.2.3.4"));
	CHECK(!allows(c, "255.255.255.255"));
	CHECK(!allows(c, "::ffff:1.2.3.4"));
	CHECK(allows(c, "::1"));
	c->ndeny = 0;
	add(c->deny, &c->ndeny, "2001:db8::/127");
	CHECK(!allows(c, "2001:db8::"));
	CHECK(!allows(c, "2001:db8::1"));
	CHECK(allows(c, "2001:db8::2"));
	c->ndeny = 0;
	add(c->deny, &c->ndeny, "::/0");
	CHECK(!allows(c, "::1"));
	CHECK(!allows(c, "2001:db8::2"));
	CHECK(allows(c, "1.2.3.4"));
	conf_unref(c);
}

static void
test_other_families(void)
{
	struct conf *c = conf_new_default();
	struct sockaddr_un sun;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	CHECK(!policy_allows(c, (struct sockaddr *)&sun));
	conf_unref(c);
}

int
main(void)
{
	test_no_rules();
	test_deny();
	test_mapped_rule();
	test_allow();
	test_allow_v6_everything();
	test_prefix_edges();
	test_other_families();
	return UNIT_DONE();
}
