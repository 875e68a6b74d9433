/* fuzz_conf.c: the configuration file (conf.c's conf_load) on any text: the
 * input is written to a memfd and loaded through /proc/self/fd/N, as -t and
 * a reload load a file, errors into a memory stream.
 *
 * Beyond memory safety: loading the same file twice gives the same outcome,
 * the same snapshot and the same error text; that text is one
 * "FILE:LINE: what" (or "FILE: what") per line, with the file's own bytes
 * escaped: nothing but printable ASCII and the newlines ending the lines. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "conf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
conf_fail(const char *what, const char *errs)
{
	fprintf(stderr, "fuzz_conf: %s\n%s\n", what, errs != NULL ? errs : "");
	abort();
}

/* Every pointer field cleared, so the rest compares with memcmp; the
 * strings they point to are compared on their own. */
static void
conf_scalars(struct conf *dst, const struct conf *src)
{
	memcpy(dst, src, sizeof(*dst));
	for (size_t i = 0; i < CONF_MAX_LISTEN; i++)
		dst->listen[i] = NULL;
	for (size_t i = 0; i < CONF_MAX_RATE; i++)
		dst->rate_limit[i].host = NULL;
	dst->dns_server = NULL;
	dst->ca_file = NULL;
}

static int
conf_same_str(const char *a, const char *b)
{
	return a == NULL || b == NULL ? a == b : strcmp(a, b) == 0;
}

static int
conf_same(const struct conf *a, const struct conf *b)
{
	static struct conf x, y;	/* large: 16 KiB and more */

	conf_scalars(&x, a);
	conf_scalars(&y, b);
	if (memcmp(&x, &y, sizeof(x)) != 0 || !conf_same_str(a->dns_server, b->dns_server) ||
	    !conf_same_str(a->ca_file, b->ca_file))
		return 0;
	for (size_t i = 0; i < a->nlisten; i++)
		if (!conf_same_str(a->listen[i], b->listen[i]))
			return 0;
	for (size_t i = 0; i < a->nrate_limit; i++)
		if (!conf_same_str(a->rate_limit[i].host, b->rate_limit[i].host))
			return 0;
	return conf_same_listen(a, b);
}

static void
conf_check_errors(const char *path, const char *errs, size_t n, int failed)
{
	size_t plen = strlen(path);

	if (failed != (n > 0))
		conf_fail(failed ? "refused without a message" : "loaded with error messages", errs);
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)errs[i];
		if (ch != '\n' && (ch < 0x20 || ch > 0x7e))
			conf_fail("an unescaped byte in the error text", errs);
	}
	for (const char *l = errs; l < errs + n; l = strchr(l, '\n') + 1) {
		const char *p = l + plen;

		if (strncmp(l, path, plen) != 0 || *p != ':')
			conf_fail("an error line not starting with the file's name", errs);
		p++;
		if (*p >= '1' && *p <= '9') {
			while (*p >= '0' && *p <= '9')
				p++;
			if (*p++ != ':')
				conf_fail("an error line with a bad line number", errs);
		}
		if (*p != ' ' || p[1] == '\n')
			conf_fail("an error line without a message", errs);
		if (strchr(l, '\n') == NULL)
			conf_fail("error text not ending in a newline", errs);
	}
}

/* Loads path; returns the snapshot or NULL, and the error text in *errs. */
static struct conf *
conf_try(const char *path, char **errs, size_t *n)
{
	FILE *f = open_memstream(errs, n);
	struct conf *c;

	if (f == NULL)
		abort();
	c = conf_load(path, f);
	fclose(f);
	conf_check_errors(path, *errs, *n, c == NULL);
	return c;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int fd = -1;
	static char path[64];
	struct conf *a, *b;
	char *ea, *eb;
	size_t na, nb;

	if (fd == -1) {
		if ((fd = memfd_create("fanoutd.conf", MFD_CLOEXEC)) == -1)
			abort();
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	}
	if (ftruncate(fd, 0) == -1 || pwrite(fd, data, size, 0) != (ssize_t)size)
		abort();
	a = conf_try(path, &ea, &na);
	b = conf_try(path, &eb, &nb);
	if ((a == NULL) != (b == NULL))
		conf_fail("loaded once, refused once", a == NULL ? ea : eb);
	if (na != nb || memcmp(ea, eb, na) != 0)
		conf_fail("different error text the second time", eb);
	if (a != NULL && !conf_same(a, b))
		conf_fail("two different snapshots from one file", NULL);
	if (a != NULL) {
		conf_unref(a);
		conf_unref(b);
	}
	free(ea);
	free(eb);
	return 0;
}
