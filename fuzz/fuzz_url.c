/* fuzz_url.c: URLs from callers and Locations from upstreams (url.c): the
 * input is split at its first newline into a URL to parse and a Location
 * to resolve against it. Beyond memory safety, normalisation must be
 * idempotent: a parsed or resolved URL's href parses again to the very same
 * parts, and its target resolved against it names it again. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "url.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
url_fail(const char *what, const struct url *a, const struct url *b, const char *why)
{
	fprintf(stderr, "fuzz_url: %s\n  first:  %s\n  second: %s\n", what, a->href,
	    b != NULL && b->href != NULL ? b->href : why);
	abort();
}

static int
url_same(const struct url *a, const struct url *b)
{
	return a->https == b->https && a->host_is_ip == b->host_is_ip && a->port == b->port &&
	    strcmp(a->host, b->host) == 0 && strcmp(a->href, b->href) == 0 &&
	    strcmp(a->origin, b->origin) == 0 && strcmp(a->authority, b->authority) == 0 &&
	    strcmp(a->target, b->target) == 0;
}

/* u is normalised: its href parses to u again, and (unless the target
 * would read as a scheme-relative reference) its target resolved against
 * u is u. */
static void
url_check_fixed(const struct url *u)
{
	struct url again;
	char why[160];

	if (url_parse(&again, u->href, why, sizeof(why)) != 0)
		url_fail("href does not parse again", u, NULL, why);
	if (!url_same(u, &again))
		url_fail("href parses to different parts", u, &again, NULL);
	url_free(&again);
	if (strncmp(u->target, "//", 2) == 0)
		return;
	if (url_resolve(&again, u, u->target, why, sizeof(why)) != 0)
		url_fail("target does not resolve against its URL", u, NULL, why);
	if (!url_same(u, &again))
		url_fail("target resolves elsewhere", u, &again, NULL);
	url_free(&again);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1), *loc, why[160];
	struct url base, hop;

	memcpy(s, data, size);
	s[size] = '\0';
	loc = strchr(s, '\n');
	if (loc != NULL)
		*loc++ = '\0';
	if (url_parse(&base, s, why, sizeof(why)) == 0) {
		url_check_fixed(&base);
		if (loc != NULL && url_resolve(&hop, &base, loc, why, sizeof(why)) == 0) {
			url_check_fixed(&hop);
			url_free(&hop);
		}
		url_free(&base);
	}
	free(s);
	return 0;
}
