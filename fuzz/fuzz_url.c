/* fuzz_url.c: URLs from callers and Locations from upstreams (url.c): the
 * input is split at its first newline into a URL to parse and a Location
 * to resolve against it. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "url.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

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
		if (loc != NULL && url_resolve(&hop, &base, loc, why, sizeof(why)) == 0)
			url_free(&hop);
		url_free(&base);
	}
	free(s);
	return 0;
}
