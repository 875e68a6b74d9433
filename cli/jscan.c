/* jscan.c: see jscan.h. */
#include <string.h>

#include "jscan.h"

/* The index of the quote that closes the JSON string begun before s[i],
 * or n. memchr finds each quote, so a long body is skipped at memory
 * speed; an odd run of backslashes before a quote escapes it. */
static size_t
jscan_string_end(const char *s, size_t i, size_t n)
{
	const char *q;

	while ((q = memchr(s + i, '"', n - i)) != NULL) {
		size_t k = (size_t)(q - s), bs = 0;

		while (k - bs > i && s[k - bs - 1] == '\\')
			bs++;
		if (bs % 2 == 0)
			return k;
		i = k + 1;
	}
	return n;
}

int
jscan_top_key(const char *s, size_t n, const char *const *keys, const char **val)
{
	int depth = 0;

	for (size_t i = 0; i < n; i++) {
		if (s[i] == '"') {
			size_t start = i + 1;

			i = jscan_string_end(s, start, n);
			if (depth != 1 || i + 2 >= n || s[i + 1] != ':')
				continue;
			for (int k = 0; keys[k] != NULL; k++)
				if (strlen(keys[k]) == i - start &&
				    memcmp(s + start, keys[k], i - start) == 0) {
					*val = s + i + 2;
					return k;
				}
		} else if (s[i] == '{' || s[i] == '[')
			depth++;
		else if ((s[i] == '}' || s[i] == ']') && --depth == 0)
			return -1;	/* the object ended: what follows is not its */
	}
	return -1;
}
