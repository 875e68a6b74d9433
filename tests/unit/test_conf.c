/* test_conf.c: the configuration table and file parser: defaults, every key,
 * bounds, error reporting with line numbers, listeners and CIDR ranges. */
#include <sys/socket.h>

#include <arpa/inet.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"
#include "log.h"
#include "unit.h"

static char tmpdir[64];
static char errbuf[8192];

/* Writes text to NAME in the test directory; returns the path (static). */
static const char *
write_file(const char *name, const char *text)
{
	static char path[128];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	if ((f = fopen(path, "w")) == NULL) {
		perror(path);
		exit(1);
	}
	fputs(text, f);
	fclose(f);
	return path;
}

/* Loads text as t.conf; errors land in errbuf with the directory removed
 * from the path, so expectations read "t.conf:3: ...". */
static struct conf *
load(const char *text)
{
	const char *path = write_file("t.conf", text);
	struct conf *c;
	char *out = NULL, *p;
	size_t len = 0, skip = strlen(tmpdir) + 1;
	FILE *errs;

	if ((errs = open_memstream(&out, &len)) == NULL)
		exit(1);
	c = conf_load(path, errs);
	fclose(errs);
	errbuf[0] = '\0';
	for (p = out; (p = strstr(p, tmpdir)) != NULL; p += skip)
		memmove(p, p + skip, strlen(p + skip) + 1);
	snprintf(errbuf, sizeof(errbuf), "%s", out);
	free(out);
	unlink(path);
	return c;
}

/* Expects text to be refused with exactly the message want. */
static void
check_error(const char *text, const char *want)
{
	struct conf *c = load(text);

	CHECK(c == NULL);
	CHECK_STR(errbuf, want);
	conf_unref(c);
}

static void
check_defaults(const struct conf *c)
{
	CHECK(c->nlisten == 1);
	CHECK_STR(c->listen[0], "127.0.0.1:8750");
	CHECK(c->max_batch == 10000);
	CHECK(c->max_batches == 64);
	CHECK(c->max_request_bytes == 16777216);
	CHECK(c->max_connections == 1024);
	CHECK(c->max_per_host == 16);
	CHECK(c->concurrency == 256);
	CHECK(c->per_host == 8);
	CHECK(c->timeout_ms == 10000);
	CHECK(c->connect_timeout_ms == 3000);
	CHECK(c->max_body_bytes == 8388608);
	CHECK(c->follow_redirects == 5);
	CHECK(c->deadline_ms == 0);
	CHECK(c->idle_timeout_s == 30);
	CHECK(c->dns_server == NULL);
	CHECK(c->dns_min_ttl_s == 5);
	CHECK(c->dns_max_ttl_s == 300);
	CHECK(c->dns_negative_ttl_s == 5);
	CHECK(c->ca_file == NULL);
	CHECK(c->ndeny == 0);
	CHECK(c->nallow == 0);
	CHECK(c->drain_timeout_s == 10);
	CHECK(c->log_level == LOG_LEVEL_INFO);
	CHECK(c->max_header_bytes == 65536);
	CHECK(c->output_buffer_bytes == 1048576);
	CHECK(c->dns_cache_size == 10000);
	CHECK(c->tls_resume == 1);
	CHECK(c->http2 == 1);
	CHECK(c->max_streams == 100);
}

static void
test_defaults(void)
{
	struct conf *c = conf_new_default();

	CHECK(c != NULL && c->refcnt == 1);
	check_defaults(c);
	conf_unref(c);

	/* An empty file and one of only comments are the defaults too. */
	c = load("");
	CHECK(c != NULL);
	if (c != NULL)
		check_defaults(c);
	conf_unref(c);
	c = load("# nothing\n\n   \t\n  # more\n");
	CHECK(c != NULL);
	if (c != NULL)
		check_defaults(c);
	conf_unref(c);
}

/* The shipped file must load and say exactly what the built-in defaults say. */
static void
test_shipped_file(void)
{
	struct conf *c = conf_load("conf/fanoutd.conf", stderr);

	CHECK(c != NULL);
	if (c != NULL)
		check_defaults(c);
	conf_unref(c);
}

static void
test_every_key(void)
{
	char text[4096], ca[128];
	struct conf *c;

	/* Only existence and readability are checked at load time. */
	snprintf(ca, sizeof(ca), "%s", write_file("ca.pem", "not a certificate\n"));
	snprintf(text, sizeof(text),
	    "listen = 127.0.0.1:9000\n"
	    "listen = [::1]:9001\n"
	    "listen = unix:/run/fanoutd/fanoutd.sock\n"
	    "max_batch = 5\n"
	    "max_batches = 6\n"
	    "max_request_bytes = 2m\n"
	    "max_connections = 7\n"
	    "max_per_host = 8\n"
	    "concurrency = 9\n"
	    "per_host = 10\n"
	    "timeout_ms = 11\n"
	    "connect_timeout_ms = 12\n"
	    "max_body_bytes = 13\n"
	    "follow_redirects = 14\n"
	    "deadline_ms = 15\n"
	    "idle_timeout_s = 16\n"
	    "dns_server = 127.0.0.1:5353\n"
	    "dns_min_ttl_s = 17\n"
	    "dns_max_ttl_s = 18\n"
	    "dns_negative_ttl_s = 19\n"
	    "ca_file = %s\n"
	    "deny = 169.254.0.0/16\n"
	    "deny = fe80::/10\n"
	    "allow = 10.0.0.0/8\n"
	    "drain_timeout_s = 20\n"
	    "log_level = debug\n"
	    "max_header_bytes = 2k\n"
	    "output_buffer_bytes = 128M\n"
	    "dns_cache_size = 21\n", ca);
	c = load(text);
	CHECK_STR(errbuf, "");
	CHECK(c != NULL);
	unlink(ca);
	if (c == NULL)
		return;
	CHECK(c->nlisten == 3);
	CHECK_STR(c->listen[0], "127.0.0.1:9000");
	CHECK_STR(c->listen[1], "[::1]:9001");
	CHECK_STR(c->listen[2], "unix:/run/fanoutd/fanoutd.sock");
	CHECK(c->max_batch == 5);
	CHECK(c->max_batches == 6);
	CHECK(c->max_request_bytes == 2 * 1024 * 1024);
	CHECK(c->max_connections == 7);
	CHECK(c->max_per_host == 8);
	CHECK(c->concurrency == 9);
	CHECK(c->per_host == 10);
	CHECK(c->timeout_ms == 11);
	CHECK(c->connect_timeout_ms == 12);
	CHECK(c->max_body_bytes == 13);
	CHECK(c->follow_redirects == 14);
	CHECK(c->deadline_ms == 15);
	CHECK(c->idle_timeout_s == 16);
	CHECK_STR(c->dns_server, "127.0.0.1:5353");
	CHECK(c->dns_min_ttl_s == 17);
	CHECK(c->dns_max_ttl_s == 18);
	CHECK(c->dns_negative_ttl_s == 19);
	CHECK_STR(c->ca_file, ca);
	CHECK(c->ndeny == 2);
	CHECK(c->deny[0].family == AF_INET && c->deny[0].prefix == 16);
	CHECK(c->deny[1].family == AF_INET6 && c->deny[1].prefix == 10);
	CHECK(c->nallow == 1);
	CHECK(c->allow[0].family == AF_INET && c->allow[0].addr[0] == 10);
	CHECK(c->drain_timeout_s == 20);
	CHECK(c->log_level == LOG_LEVEL_DEBUG);
	CHECK(c->max_header_bytes == 2048);
	CHECK(c->output_buffer_bytes == 128 * 1024 * 1024);
	CHECK(c->dns_cache_size == 21);
	conf_unref(c);
}

struct bound_case {
	const char *line;
	const char *msg;
};

static void
test_bounds(void)
{
	static const struct bound_case cases[] = {
		{ "max_batch = 0", "max_batch: must be between 1 and 1000000" },
		{ "max_batch = 1000001", "max_batch: must be between 1 and 1000000" },
		{ "max_batches = 65537", "max_batches: must be between 1 and 65536" },
		{ "max_request_bytes = 1023", "max_request_bytes: must be between 1024 and 1073741824" },
		{ "max_request_bytes = 2g", "max_request_bytes: must be between 1024 and 1073741824" },
		{ "max_connections = 0", "max_connections: must be between 1 and 1048576" },
		{ "max_per_host = 0", "max_per_host: must be between 1 and 65536" },
		{ "concurrency = 65537", "concurrency: must be between 1 and 65536" },
		{ "per_host = 0", "per_host: must be between 1 and 65536" },
		{ "timeout_ms = 0", "timeout_ms: must be between 1 and 3600000" },
		{ "connect_timeout_ms = 3600001", "connect_timeout_ms: must be between 1 and 3600000" },
		{ "max_body_bytes = 1073741825", "max_body_bytes: must be between 0 and 1073741824" },
		{ "follow_redirects = 21", "follow_redirects: must be between 0 and 20" },
		{ "deadline_ms = 86400001", "deadline_ms: must be between 0 and 86400000" },
		{ "idle_timeout_s = 86401", "idle_timeout_s: must be between 0 and 86400" },
		{ "dns_min_ttl_s = 86401", "dns_min_ttl_s: must be between 0 and 86400" },
		{ "dns_max_ttl_s = 86401", "dns_max_ttl_s: must be between 0 and 86400" },
		{ "dns_negative_ttl_s = 86401", "dns_negative_ttl_s: must be between 0 and 86400" },
		{ "drain_timeout_s = 3601", "drain_timeout_s: must be between 0 and 3600" },
		{ "max_header_bytes = 1023", "max_header_bytes: must be between 1024 and 1048576" },
		{ "output_buffer_bytes = 65535", "output_buffer_bytes: must be between 65536 and 268435456" },
		{ "dns_cache_size = 0", "dns_cache_size: must be between 1 and 1000000" },
		{ "tls_resume = 2", "tls_resume: must be between 0 and 1" },
		{ "http2 = 2", "http2: must be between 0 and 1" },
		{ "max_streams = 0", "max_streams: must be between 1 and 1000" },
		{ "max_streams = 1001", "max_streams: must be between 1 and 1000" },
		/* Overflow is out of range, not garbage. */
		{ "max_batch = 99999999999999999999999", "max_batch: must be between 1 and 1000000" },
		{ "max_body_bytes = 17179869184g", "max_body_bytes: must be between 0 and 1073741824" },
		{ "max_batch = 4294967297", "max_batch: must be between 1 and 1000000" },
		{ "max_batch = -1", "max_batch: \"-1\" is not an unsigned number" },
		{ "max_batch = +5", "max_batch: \"+5\" is not an unsigned number" },
		{ "max_batch = 5k", "max_batch: \"5k\" is not an unsigned number" },
		{ "max_batch = 0x10", "max_batch: \"0x10\" is not an unsigned number" },
		{ "max_batch = 1 0", "max_batch: \"1 0\" is not an unsigned number" },
		{ "max_body_bytes = 1t", "max_body_bytes: \"1t\" is not a size number" },
		{ "max_body_bytes = k", "max_body_bytes: \"k\" is not a size number" },
		{ "max_body_bytes = 1kk", "max_body_bytes: \"1kk\" is not a size number" },
		{ "log_level = loud", "log_level: \"loud\" is not one of error, warn, info, debug" },
		{ "dns_server = dns.example:53", "dns_server: \"dns.example:53\": host must be an "
		    "IPv4 address or [IPv6] (names are not resolved)" },
		{ "dns_server = 127.0.0.1:0", "dns_server: \"127.0.0.1:0\": port must be a number "
		    "between 1 and 65535" },
		{ "deny = 10.0.0.0/33", "deny: \"10.0.0.0/33\": prefix length must be 0..32 for IPv4" },
		{ "allow = nowhere", "allow: \"nowhere\": not an IPv4 or IPv6 address" },
		{ "listen = localhost:8750", "listen: \"localhost:8750\": host must be an IPv4 "
		    "address or [IPv6] (names are not resolved)" },
		{ "dns_min_ttl_s = 400", "dns_min_ttl_s (400) is greater than dns_max_ttl_s (300)" },
	};
	char text[256], want[512];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(text, sizeof(text), "# line one\n%s\n", cases[i].line);
		snprintf(want, sizeof(want), "t.conf:2: %s\n", cases[i].msg);
		check_error(text, want);
	}
}

/* The edges themselves are accepted. */
static void
test_bounds_inclusive(void)
{
	struct conf *c = load("max_batch = 1000000\nfollow_redirects = 0\n"
	    "max_body_bytes = 0\ndeadline_ms = 86400000\nmax_header_bytes = 1m\n"
	    "output_buffer_bytes = 256M\ndns_min_ttl_s = 0\ndns_max_ttl_s = 0\n"
	    "log_level = ERROR\n");

	CHECK_STR(errbuf, "");
	CHECK(c != NULL);
	if (c != NULL) {
		CHECK(c->max_batch == 1000000);
		CHECK(c->follow_redirects == 0);
		CHECK(c->max_body_bytes == 0);
		CHECK(c->deadline_ms == 86400000);
		CHECK(c->max_header_bytes == 1048576);
		CHECK(c->output_buffer_bytes == 268435456);
		CHECK(c->log_level == LOG_LEVEL_ERROR);
	}
	conf_unref(c);
}

static void
test_syntax_errors(void)
{
	check_error("foo = 1\n", "t.conf:1: unknown key \"foo\"\n");
	check_error("\n\nMax_Batch = 1\n", "t.conf:3: unknown key \"Max_Batch\"\n");
	check_error("max batch = 1\n", "t.conf:1: unknown key \"max batch\"\n");
	check_error("bad\x01key = 1\n", "t.conf:1: unknown key \"bad\\x01key\"\n");
	check_error("max_batch 5\n", "t.conf:1: expected \"key = value\"\n");
	check_error("= 5\n", "t.conf:1: missing key before \"=\"\n");
	check_error("max_batch =\n", "t.conf:1: max_batch: missing value\n");
	check_error("max_batch = # just a comment\n", "t.conf:1: max_batch: missing value\n");
	check_error("max_batch = 5\nmax_batch = 6\n",
	    "t.conf:2: max_batch: already set on line 1\n");
	check_error("dns_server = 127.0.0.1\n\ndns_server = 127.0.0.2\n",
	    "t.conf:3: dns_server: already set on line 1\n");
	check_error("log_level = info\nlog_level = debug\n",
	    "t.conf:2: log_level: already set on line 1\n");
}

static void
test_nul_and_long_lines(void)
{
	char *text;
	const char *path;
	struct conf *c;
	FILE *f;
	size_t len;

	/* A NUL inside a line. */
	path = write_file("nul.conf", "");
	f = fopen(path, "w");
	fwrite("max_batch = 5\0 6\nfoo = 1\n", 1, 25, f);
	fclose(f);
	f = open_memstream(&text, &len);
	c = conf_load(path, f);
	fclose(f);
	CHECK(c == NULL);
	CHECK(strstr(text, "nul.conf:1: line contains a NUL byte\n") != NULL);
	CHECK(strstr(text, "nul.conf:2: unknown key \"foo\"\n") != NULL);
	free(text);
	unlink(path);

	/* 4096 bytes is fine, 4097 is not, and the next line still counts. */
	text = malloc(3 * 4200);
	memset(text, ' ', 3 * 4200);
	memcpy(text, "max_batch = 7", 13);
	text[4096] = '\n';
	memcpy(text + 4097, "# long comment", 14);
	text[4097 + 4097] = '\n';
	strcpy(text + 4097 + 4098, "nope = 1\n");
	c = load(text);
	CHECK(c == NULL);
	CHECK_STR(errbuf, "t.conf:2: line longer than 4096 bytes\nt.conf:3: unknown key \"nope\"\n");
	conf_unref(c);
	free(text);
}

/* Every problem in the file is reported, each with its own line. */
static void
test_all_errors_reported(void)
{
	check_error(
	    "# a file with several mistakes\n"	/* 1 */
	    "max_batch = 0\n"			/* 2 */
	    "concurrency = 100\n"		/* 3 */
	    "frobnicate = yes\n"		/* 4 */
	    "\n"				/* 5 */
	    "concurrency = 200\n"		/* 6 */
	    "listen = 127.0.0.1\n"		/* 7 */
	    "listen = 127.0.0.1:80\n"		/* 8 */
	    "deny = 300.0.0.0/8\n"		/* 9 */
	    "dns_max_ttl_s = 3\n"		/* 10 */
	    "timeout_ms = soon   # trailing\n",	/* 11 */
	    "t.conf:2: max_batch: must be between 1 and 1000000\n"
	    "t.conf:4: unknown key \"frobnicate\"\n"
	    "t.conf:6: concurrency: already set on line 3\n"
	    "t.conf:7: listen: \"127.0.0.1\": missing \":PORT\"\n"
	    "t.conf:9: deny: \"300.0.0.0/8\": not an IPv4 or IPv6 address\n"
	    "t.conf:11: timeout_ms: \"soon\" is not an unsigned number\n"
	    "t.conf:10: dns_min_ttl_s (5) is greater than dns_max_ttl_s (3)\n");
}

static void
test_comments_whitespace(void)
{
	struct conf *c = load(
	    "# full-line comment\n"
	    "   # indented comment\n"
	    "\n"
	    "\t max_batch\t=\t42   # trailing comment\n"
	    "max_batches=3#not a comment? yes it is part of the value\n");

	CHECK(c == NULL);
	CHECK_STR(errbuf, "t.conf:5: max_batches: \"3#not a comment? yes it is part of the "
	    "value\" is not an unsigned number\n");
	conf_unref(c);

	c = load(
	    "# full-line comment\n"
	    "   # indented comment\n"
	    "\n"
	    "\t max_batch\t=\t42   # trailing comment\n"
	    "max_batches=3\r\n"
	    "listen = unix:/tmp/a#b\t# the first # is part of the path\n"
	    "listen=[::]:8750\n");
	CHECK_STR(errbuf, "");
	CHECK(c != NULL);
	if (c != NULL) {
		CHECK(c->max_batch == 42);
		CHECK(c->max_batches == 3);
		CHECK(c->nlisten == 2);
		CHECK_STR(c->listen[0], "unix:/tmp/a#b");
		CHECK_STR(c->listen[1], "[::]:8750");
	}
	conf_unref(c);
}

static void
test_lists(void)
{
	char text[8192];
	size_t o = 0;
	struct conf *c;

	/* The first listen line replaces the default rather than adding to it. */
	c = load("listen = 0.0.0.0:1\n");
	CHECK(c != NULL && c->nlisten == 1);
	if (c != NULL)
		CHECK_STR(c->listen[0], "0.0.0.0:1");
	conf_unref(c);

	for (int i = 1; i <= CONF_MAX_LISTEN + 1; i++)
		o += (size_t)snprintf(text + o, sizeof(text) - o, "listen = 127.0.0.1:%d\n", i);
	check_error(text, "t.conf:17: listen: more than 16 entries\n");

	o = 0;
	for (int i = 0; i <= CONF_MAX_CIDR; i++)
		o += (size_t)snprintf(text + o, sizeof(text) - o, "deny = 10.0.%d.%d\n",
		    i / 256, i % 256);
	check_error(text, "t.conf:257: deny: more than 256 entries\n");

	text[0] = '\0';
	c = load("allow = 10.0.0.1\nallow = ::1\n");
	CHECK(c != NULL && c->nallow == 2);
	if (c != NULL) {
		CHECK(c->allow[0].family == AF_INET && c->allow[0].prefix == 32);
		CHECK(c->allow[1].family == AF_INET6 && c->allow[1].prefix == 128);
	}
	conf_unref(c);
}

static void
test_files_and_dns(void)
{
	char text[256];
	struct conf *c;

	check_error("ca_file = /nonexistent/ca.pem\n",
	    "t.conf:1: ca_file: \"/nonexistent/ca.pem\": No such file or directory\n");
	snprintf(text, sizeof(text), "ca_file = %s\n", tmpdir);
	c = load(text);
	CHECK(c == NULL);
	CHECK(strstr(errbuf, ": not a regular file\n") != NULL);
	conf_unref(c);

	static const char *const good[] = {
		"127.0.0.1", "127.0.0.1:53", "[::1]:5353", "[::1]", "::1", "2001:db8::53",
	};
	static const char *const bad[] = {
		"", "dns.example", "127.0.0.1:", "127.0.0.1:65536", "[::1", "[::1]x",
		"[nope]:53", "::1:53x", "1.2.3:53",
	};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		snprintf(text, sizeof(text), "dns_server = %s\n", good[i]);
		c = load(text);
		CHECK(c != NULL);
		if (c != NULL)
			CHECK_STR(c->dns_server, good[i]);
		conf_unref(c);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(text, sizeof(text), "dns_server = %s\n", bad[i]);
		c = load(text);
		CHECK(c == NULL);
		if (c != NULL)
			fprintf(stderr, "accepted dns_server \"%s\"\n", bad[i]);
		conf_unref(c);
	}
}

static void
test_cannot_open(void)
{
	char path[128], *out = NULL, want[256];
	size_t len = 0;
	FILE *errs = open_memstream(&out, &len);

	snprintf(path, sizeof(path), "%s/missing.conf", tmpdir);
	CHECK(conf_load(path, errs) == NULL);
	fclose(errs);
	snprintf(want, sizeof(want), "%s: cannot open: No such file or directory\n", path);
	CHECK_STR(out, want);
	free(out);
	CHECK(conf_load(path, NULL) == NULL);	/* no error stream is allowed */
}

static void
test_listen_valid(void)
{
	static const char *const good[] = {
		"127.0.0.1:8750", "0.0.0.0:1", "10.1.2.3:65535", "[::1]:8750", "[::]:80",
		"[2001:db8::1]:443", "[::ffff:127.0.0.1]:8750", "unix:/run/fanoutd/fanoutd.sock",
		"unix:/x",
	};
	static const struct { const char *s, *why; } bad[] = {
		{ "", "empty listener" },
		{ "127.0.0.1", "missing \":PORT\"" },
		{ "127.0.0.1:", "port must be a number between 1 and 65535" },
		{ "127.0.0.1:0", "port must be a number between 1 and 65535" },
		{ "127.0.0.1:65536", "port must be a number between 1 and 65535" },
		{ "127.0.0.1:http", "port must be a number between 1 and 65535" },
		{ "127.0.0.1:-1", "port must be a number between 1 and 65535" },
		{ "127.0.0.1:80 ", "port must be a number between 1 and 65535" },
		{ ":8750", "missing host before \":PORT\"" },
		{ "localhost:8750", "host must be an IPv4 address or [IPv6] (names are not resolved)" },
		{ "*:8750", "host must be an IPv4 address or [IPv6] (names are not resolved)" },
		{ "256.0.0.1:80", "host must be an IPv4 address or [IPv6] (names are not resolved)" },
		{ "::1:8750", "an IPv6 address must be written in brackets: [ADDR]:PORT" },
		{ "[::1]", "missing \":PORT\"" },
		{ "[::1]:", "port must be a number between 1 and 65535" },
		{ "[::1]8750", "expected \":PORT\" after \"]\"" },
		{ "[::1:8750", "missing \"]\" after the IPv6 address" },
		{ "[127.0.0.1]:80", "not an IPv6 address inside \"[]\"" },
		{ "[fe80::1%eth0]:80", "not an IPv6 address inside \"[]\"" },
		{ "unix:", "a unix: listener needs an absolute path" },
		{ "unix:run/x.sock", "a unix: listener needs an absolute path" },
	};
	char longpath[256];
	const char *why;

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		why = NULL;
		CHECK(conf_listen_valid(good[i], &why) == 0);
		if (why != NULL)
			fprintf(stderr, "refused \"%s\": %s\n", good[i], why);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		why = NULL;
		CHECK(conf_listen_valid(bad[i].s, &why) == -1);
		CHECK_STR(why, bad[i].why);
	}

	/* sun_path holds 107 bytes and the NUL on Linux. */
	memset(longpath, 'a', sizeof(longpath));
	memcpy(longpath, "unix:/", 6);
	longpath[5 + 107] = '\0';
	CHECK(conf_listen_valid(longpath, &why) == 0);
	longpath[5 + 107] = 'a';
	longpath[5 + 108] = '\0';
	CHECK(conf_listen_valid(longpath, &why) == -1);
	CHECK_STR(why, "unix: path longer than a socket address holds");
}

static void
test_set_listen(void)
{
	struct conf *c = conf_new_default();
	char a[] = "127.0.0.1:1", b[] = "unix:/tmp/s", nope[] = "nope";
	char *good[] = { a, b };
	char *bad[] = { a, nope };
	char *many[CONF_MAX_LISTEN + 1];
	const char *why;

	CHECK(conf_set_listen(c, good, 2, &why) == 0);
	a[0] = 'X';	/* the snapshot holds copies */
	CHECK(c->nlisten == 2);
	CHECK_STR(c->listen[0], "127.0.0.1:1");
	CHECK_STR(c->listen[1], "unix:/tmp/s");
	a[0] = '1';

	/* A refused set leaves the listeners as they were. */
	why = NULL;
	CHECK(conf_set_listen(c, bad, 2, &why) == -1);
	CHECK(why != NULL);
	CHECK(c->nlisten == 2);
	CHECK_STR(c->listen[0], "127.0.0.1:1");
	CHECK(conf_set_listen(c, good, 0, &why) == -1);
	CHECK_STR(why, "no listener given");
	for (size_t i = 0; i < CONF_MAX_LISTEN + 1; i++)
		many[i] = a;
	CHECK(conf_set_listen(c, many, CONF_MAX_LISTEN + 1, &why) == -1);
	CHECK_STR(why, "more than 16 listeners");
	CHECK(conf_set_listen(c, many, CONF_MAX_LISTEN, &why) == 0);
	CHECK(c->nlisten == CONF_MAX_LISTEN);
	conf_unref(c);
}

static int
cidr_is(const char *s, int family, const char *addr, unsigned prefix)
{
	struct conf_cidr r, want;
	const char *why;

	memset(&want, 0, sizeof(want));
	if (conf_cidr_parse(s, &r, &why) == -1)
		return 0;
	if (inet_pton(family, addr, want.addr) != 1)
		return 0;
	return r.family == family && r.prefix == prefix &&
	    memcmp(r.addr, want.addr, sizeof(r.addr)) == 0;
}

static void
test_cidr(void)
{
	static const struct { const char *s, *why; } bad[] = {
		{ "", "not an IPv4 or IPv6 address" },
		{ "/8", "not an IPv4 or IPv6 address" },
		{ "10.0.0/8", "not an IPv4 or IPv6 address" },
		{ "example.com/8", "not an IPv4 or IPv6 address" },
		{ "fe80::1%eth0/64", "not an IPv4 or IPv6 address" },
		{ "10.0.0.0/", "prefix length must be 0..32 for IPv4" },
		{ "10.0.0.0/33", "prefix length must be 0..32 for IPv4" },
		{ "10.0.0.0/-1", "prefix length must be 0..32 for IPv4" },
		{ "10.0.0.0/8x", "prefix length must be 0..32 for IPv4" },
		{ "10.0.0.0/8/8", "prefix length must be 0..32 for IPv4" },
		{ "10.0.0.0/ 8", "prefix length must be 0..32 for IPv4" },
		{ "::/129", "prefix length must be 0..128 for IPv6" },
		{ "::/99999999999999999999999", "prefix length must be 0..128 for IPv6" },
	};
	struct conf_cidr r;
	const char *why;

	CHECK(cidr_is("10.0.0.0/8", AF_INET, "10.0.0.0", 8));
	CHECK(cidr_is("10.0.0.1", AF_INET, "10.0.0.1", 32));
	CHECK(cidr_is("0.0.0.0/0", AF_INET, "0.0.0.0", 0));
	CHECK(cidr_is("::1", AF_INET6, "::1", 128));
	CHECK(cidr_is("fd00::/8", AF_INET6, "fd00::", 8));
	/* Host bits are cleared, including within a byte. */
	CHECK(cidr_is("10.1.2.3/8", AF_INET, "10.0.0.0", 8));
	CHECK(cidr_is("192.168.255.255/20", AF_INET, "192.168.240.0", 20));
	CHECK(cidr_is("169.254.169.254/0", AF_INET, "0.0.0.0", 0));
	CHECK(cidr_is("2001:db8:ffff::1/33", AF_INET6, "2001:db8:8000::", 33));
	CHECK(cidr_is("fe80::1/10", AF_INET6, "fe80::", 10));
	CHECK(cidr_is("::ffff:ffff/127", AF_INET6, "::ffff:fffe", 127));
	/* IPv4-mapped ranges are stored as the IPv4 range they denote. */
	CHECK(cidr_is("::ffff:169.254.0.0/112", AF_INET, "169.254.0.0", 16));
	CHECK(cidr_is("::ffff:10.1.2.3", AF_INET, "10.1.2.3", 32));
	CHECK(cidr_is("::ffff:0:0/96", AF_INET, "0.0.0.0", 0));
	CHECK(cidr_is("::ffff:0:0/95", AF_INET6, "::fffe:0:0", 95));

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		why = NULL;
		CHECK(conf_cidr_parse(bad[i].s, &r, &why) == -1);
		CHECK_STR(why, bad[i].why);
	}
}

static void
test_refcount(void)
{
	struct conf *c = conf_new_default();

	CHECK(conf_ref(c) == c);
	CHECK(c->refcnt == 2);
	conf_unref(c);
	CHECK(c->refcnt == 1);
	conf_unref(c);		/* freed here; ASan reports a leak otherwise */
	conf_unref(NULL);
	CHECK(conf_ref(NULL) == NULL);
}

/* rate_limit lines: the forms taken, how a host finds its line, and each
 * refusal with its message. */
static void
test_rate_limit(void)
{
	struct conf *c = load(
	    "rate_limit = https://API.example.com 10 5\n"
	    "rate_limit = http://127.0.0.1:8080/ 0.5\n"
	    "rate_limit = http://[::0001]:81 2\n"
	    "rate_limit = https://*.example.com 50\n"
	    "rate_limit = https://*.b.example.com 7 2\n"
	    "backoff = 0\n"
	    "max_backoff_s = 60\n");
	const struct conf_rate *r;

	CHECK(c != NULL);
	if (c == NULL)
		return;
	CHECK(c->nrate_limit == 5 && c->backoff == 0 && c->max_backoff_s == 60);
	r = conf_rate_find(c, 1, "api.example.com", 443);	/* exact wins over patterns */
	CHECK(r != NULL && r->rate == 10 && r->burst == 5 && !r->wildcard);
	r = conf_rate_find(c, 0, "127.0.0.1", 8080);
	CHECK(r != NULL && r->rate == 0.5 && r->burst == 1);
	r = conf_rate_find(c, 0, "::1", 81);	/* IPv6 kept as url.c keeps it */
	CHECK(r != NULL && r->rate == 2);
	r = conf_rate_find(c, 1, "x.example.com", 443);
	CHECK(r != NULL && r->rate == 50);
	r = conf_rate_find(c, 1, "a.b.example.com", 443);	/* the longest domain */
	CHECK(r != NULL && r->rate == 7 && r->burst == 2);
	CHECK(conf_rate_find(c, 1, "example.com", 443) == NULL);	/* strictly below */
	CHECK(conf_rate_find(c, 1, "badexample.com", 443) == NULL);
	CHECK(conf_rate_find(c, 0, "x.example.com", 80) == NULL);	/* scheme and port count */
	CHECK(conf_rate_find(c, 1, "x.example.com", 8443) == NULL);
	CHECK(conf_rate_find(c, 0, "127.0.0.1", 80) == NULL);
	conf_unref(c);

	check_error("rate_limit = ftp://x 1\n",
	    "t.conf:1: rate_limit: \"ftp://x\": origin must start with http:// or https://\n");
	check_error("rate_limit = http://x 0\n",
	    "t.conf:1: rate_limit: rate \"0\" must be a number above 0 and at most 1000000\n");
	check_error("rate_limit = http://x 1e3\n",
	    "t.conf:1: rate_limit: rate \"1e3\" must be a number above 0 and at most 1000000\n");
	check_error("rate_limit = http://x -1\n",
	    "t.conf:1: rate_limit: rate \"-1\" must be a number above 0 and at most 1000000\n");
	check_error("rate_limit = http://x 1 0\n",
	    "t.conf:1: rate_limit: burst \"0\" must be between 1 and 1000000\n");
	check_error("rate_limit = http://x\n",
	    "t.conf:1: rate_limit: expected \"ORIGIN RATE [BURST]\"\n");
	check_error("rate_limit = http://x 1 2 3\n",
	    "t.conf:1: rate_limit: expected \"ORIGIN RATE [BURST]\"\n");
	check_error("rate_limit = http://x/a 1\n",
	    "t.conf:1: rate_limit: \"http://x/a\": an origin has no path, query or user\n");
	check_error("rate_limit = http://u@x 1\n",
	    "t.conf:1: rate_limit: \"http://u@x\": not a host name, IPv4 address, [IPv6] or "
	    "*.domain\n");
	check_error("rate_limit = http://x:0 1\n",
	    "t.conf:1: rate_limit: \"http://x:0\": port must be a number between 1 and 65535\n");
	check_error("rate_limit = http://[::1 1\n",
	    "t.conf:1: rate_limit: \"http://[::1\": not an IPv6 address inside \"[]\"\n");
	check_error("rate_limit = http://x 1\nrate_limit = HTTP://X:80 2\n",
	    "t.conf:2: rate_limit: a limit for this origin is already set\n");
}

int
main(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "%s", "/tmp/test_conf.XXXXXX");
	if (mkdtemp(tmpdir) == NULL) {
		perror("mkdtemp");
		return 1;
	}
	test_defaults();
	test_shipped_file();
	test_every_key();
	test_bounds();
	test_bounds_inclusive();
	test_syntax_errors();
	test_nul_and_long_lines();
	test_all_errors_reported();
	test_comments_whitespace();
	test_lists();
	test_files_and_dns();
	test_cannot_open();
	test_listen_valid();
	test_set_listen();
	test_cidr();
	test_refcount();
	test_rate_limit();
	if (rmdir(tmpdir) == -1)
		perror(tmpdir);
	return UNIT_DONE();
}
