/* fuzz_jscan.c: fanout's scan of result lines (cli/jscan.c), on any bytes
 * a daemon (or something posing as one) could send.
 *
 * Beyond memory safety (the input is scanned as it is, in a buffer of its
 * exact length), against jansson as the reference: when the input parses as
 * an object, its compact form -- what fanoutd writes -- is scanned for
 * "status" and "error", and the scan must name the first of the two in the
 * object's key order and point at that value's compact form. Strings full of
 * quotes, backslashes and brackets, and keys of those names in nested values,
 * are what the property is about. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "jscan.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const keys[] = { "status", "error", NULL };

static void
jscan_fail(const char *what, const char *line)
{
	fprintf(stderr, "fuzz_jscan: %s\nline: %s\n", what, line);
	abort();
}

/* The index in keys of the first of them among o's keys, and its value. */
static int
first_key(json_t *o, json_t **value)
{
	const char *k;
	json_t *v;

	json_object_foreach(o, k, v)
		for (int i = 0; keys[i] != NULL; i++)
			if (strcmp(k, keys[i]) == 0) {
				*value = v;
				return i;
			}
	return -1;
}

static void
check_compact(json_t *o)
{
	char *line = json_dumps(o, JSON_COMPACT | JSON_ENCODE_ANY);
	json_t *want_v = NULL;
	const char *got_v = NULL;
	int want, got;

	if (line == NULL)
		return;
	want = first_key(o, &want_v);
	got = jscan_top_key(line, strlen(line), keys, &got_v);
	if (got != want)
		jscan_fail("found another key than the object's first of status and error", line);
	if (want >= 0) {
		char *v = json_dumps(want_v, JSON_COMPACT | JSON_ENCODE_ANY);

		if (v == NULL || strncmp(got_v, v, strlen(v)) != 0)
			jscan_fail("the value found is not the key's", line);
		free(v);
	}
	free(line);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *copy = malloc(size ? size : 1);
	const char *v = NULL;
	json_t *o;

	memcpy(copy, data, size);
	if (jscan_top_key(copy, size, keys, &v) >= 0 && (v < copy || v >= copy + size))
		jscan_fail("a value outside the line", "(raw input)");
	free(copy);
	o = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
	if (json_is_object(o))
		check_compact(o);
	json_decref(o);
	return 0;
}
