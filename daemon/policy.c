/* policy.c: the allow/deny decision on a resolved address, made at connect
 * time for every hop so that DNS answers and redirects cannot reach what the
 * configuration denies. */
#include <sys/socket.h>

#include <netinet/in.h>

#include <stdint.h>
#include <string.h>

#include "conf.h"
#include "policy.h"

/* Puts sa's address in the form conf.c stores ranges in: an IPv4-mapped IPv6
 * address (::ffff:a.b.c.d) becomes the IPv4 address, or a deny of an IPv4
 * range could be walked around by a resolver answering with the mapped form. */
static int
policy_addr(const struct sockaddr *sa, int *family, uint8_t addr[16])
{
	static const uint8_t mapped[12] = { [10] = 0xff, [11] = 0xff };
	const struct sockaddr_in6 *sin6;

	switch (sa->sa_family) {
	case AF_INET:
		*family = AF_INET;
		memcpy(addr, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
		return 0;
	case AF_INET6:
		sin6 = (const struct sockaddr_in6 *)(const void *)sa;
		if (memcmp(sin6->sin6_addr.s6_addr, mapped, sizeof(mapped)) == 0) {
			*family = AF_INET;
			memcpy(addr, sin6->sin6_addr.s6_addr + 12, 4);
		} else {
			*family = AF_INET6;
			memcpy(addr, sin6->sin6_addr.s6_addr, 16);
		}
		return 0;
	default:
		return -1;
	}
}

static int
policy_in_range(const struct conf_cidr *r, int family, const uint8_t *addr)
{
	unsigned whole = r->prefix / 8, rest = r->prefix % 8;
	uint8_t mask;

	if (r->family != family)
		return 0;
	if (memcmp(r->addr, addr, whole) != 0)
		return 0;
	if (rest == 0)
		return 1;
	mask = (uint8_t)(0xff00u >> rest);
	return (addr[whole] & mask) == r->addr[whole];
}

static int
policy_in_any(const struct conf_cidr *list, size_t n, int family, const uint8_t *addr)
{
	for (size_t i = 0; i < n; i++)
		if (policy_in_range(&list[i], family, addr))
			return 1;
	return 0;
}

int
policy_allows(const struct conf *c, const struct sockaddr *sa)
{
	uint8_t addr[16];
	int family;

	/* Anything but IPv4 and IPv6 is never an upstream; refuse it. */
	if (policy_addr(sa, &family, addr) == -1)
		return 0;
	if (policy_in_any(c->deny, c->ndeny, family, addr))
		return 0;
	return c->nallow == 0 || policy_in_any(c->allow, c->nallow, family, addr);
}
