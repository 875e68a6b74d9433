/* test_url.c: url_parse and url_resolve: what is accepted and how it is
 * normalised, every rejection with its message, RFC 3986 §5.4 resolution. */
#include <stdlib.h>

#include "url.h"
#include "unit.h"

static char why[256];

/* Parses s, expecting success; checks href and target. */
static void
good(const char *s, const char *href, const char *target)
{
	struct url u;

	why[0] = '\0';
	if (url_parse(&u, s, why, sizeof(why)) != 0) {
		fprintf(stderr, "unexpected failure for %s: %s\n", s, why);
		CHECK(0);
		return;
	}
	CHECK_STR(u.href, href);
	CHECK_STR(u.target, target);
	url_free(&u);
}

/* Parses s, expecting failure with exactly msg; u must come back zeroed. */
static void
bad(const char *s, const char *msg)
{
	struct url u;

	why[0] = '\0';
	CHECK(url_parse(&u, s, why, sizeof(why)) == -1);
	CHECK_STR(why, msg);
	CHECK(u.host == NULL && u.href == NULL && u.target == NULL);
}

static void
test_parts(void)
{
	struct url u;

	CHECK(url_parse(&u, "HTTP://Example.COM/a/b?x=1&y=%2F#frag", why, sizeof(why)) == 0);
	CHECK(u.https == 0);
	CHECK_STR(u.host, "example.com");
	CHECK(u.host_is_ip == 0);
	CHECK(u.port == 80);
	CHECK_STR(u.target, "/a/b?x=1&y=%2F");
	CHECK_STR(u.authority, "example.com");
	CHECK_STR(u.origin, "http://example.com:80");
	CHECK_STR(u.href, "http://example.com/a/b?x=1&y=%2F");
	url_free(&u);
	CHECK(u.host == NULL && u.href == NULL);
	url_free(&u);	/* idempotent */

	CHECK(url_parse(&u, "https://api.example.com:8443", why, sizeof(why)) == 0);
	CHECK(u.https == 1);
	CHECK(u.port == 8443);
	CHECK_STR(u.target, "/");
	CHECK_STR(u.authority, "api.example.com:8443");
	CHECK_STR(u.origin, "https://api.example.com:8443");
	CHECK_STR(u.href, "https://api.example.com:8443/");
	url_free(&u);

	CHECK(url_parse(&u, "https://x.test:443/", why, sizeof(why)) == 0);
	CHECK_STR(u.authority, "x.test");
	CHECK_STR(u.origin, "https://x.test:443");
	url_free(&u);

	CHECK(url_parse(&u, "http://x.test:443/", why, sizeof(why)) == 0);
	CHECK_STR(u.authority, "x.test:443");
	url_free(&u);

	CHECK(url_parse(&u, "https://x.test:80/", why, sizeof(why)) == 0);
	CHECK_STR(u.authority, "x.test:80");
	CHECK_STR(u.origin, "https://x.test:80");
	url_free(&u);

	CHECK(url_parse(&u, "http://10.0.0.1:8080/p", why, sizeof(why)) == 0);
	CHECK(u.host_is_ip == 4);
	CHECK_STR(u.host, "10.0.0.1");
	CHECK_STR(u.origin, "http://10.0.0.1:8080");
	url_free(&u);

	CHECK(url_parse(&u, "http://[::1]/", why, sizeof(why)) == 0);
	CHECK(u.host_is_ip == 6);
	CHECK_STR(u.host, "::1");
	CHECK(u.port == 80);
	CHECK_STR(u.authority, "[::1]");
	CHECK_STR(u.origin, "http://[::1]:80");
	CHECK_STR(u.href, "http://[::1]/");
	url_free(&u);

	CHECK(url_parse(&u, "https://[2001:DB8:0:0::1]:8443/x", why, sizeof(why)) == 0);
	CHECK(u.host_is_ip == 6);
	CHECK_STR(u.host, "2001:db8::1");
	CHECK_STR(u.authority, "[2001:db8::1]:8443");
	CHECK_STR(u.origin, "https://[2001:db8::1]:8443");
	url_free(&u);
}

static void
test_normalise(void)
{
	good("http://a.test", "http://a.test/", "/");
	good("http://a.test?q=1", "http://a.test/?q=1", "/?q=1");
	good("http://a.test/#", "http://a.test/", "/");
	good("http://a.test/p#x/y?z", "http://a.test/p", "/p");
	good("http://a.test:/p", "http://a.test/p", "/p");
	good("http://a.test:080/", "http://a.test/", "/");
	good("http://a.test/a/./b/../c", "http://a.test/a/c", "/a/c");
	good("http://a.test/../../x", "http://a.test/x", "/x");
	/* Dots that are not dot segments: the path is kept as it is. */
	good("http://a.test/.well-known/x", "http://a.test/.well-known/x", "/.well-known/x");
	good("http://a.test/a.b/c.?d=./..", "http://a.test/a.b/c.?d=./..", "/a.b/c.?d=./..");
	good("http://a.test/a/..", "http://a.test/", "/");
	good("http://a.test/a/.", "http://a.test/a/", "/a/");
	good("http://a.test/caf\xc3\xa9?q=\xe2\x82\xac", "http://a.test/caf%C3%A9?q=%E2%82%AC",
	    "/caf%C3%A9?q=%E2%82%AC");
	good("http://a.test/%7e%41", "http://a.test/%7e%41", "/%7e%41");
	good("http://my_host.example./", "http://my_host.example./", "/");
	good("http://a-b.c-d.test/x:y@z!$&'()*+,;=", "http://a-b.c-d.test/x:y@z!$&'()*+,;=",
	    "/x:y@z!$&'()*+,;=");
}

static void
test_rejections(void)
{
	bad("", "empty URL");
	bad("ftp://example.com/", "unsupported scheme \"ftp\"");
	bad("FILE:///etc/passwd", "unsupported scheme \"FILE\"");
	bad("javascript:alert(1)", "unsupported scheme \"javascript\"");
	bad("example.com/path", "not an absolute URL");
	bad("//example.com/", "not an absolute URL");
	bad("http:/example.com/", "missing host");
	bad("http:example.com", "missing host");
	bad("http://", "missing host");
	bad("http:///path", "missing host");
	bad("http://:80/", "missing host");
	bad("http://a.test/a b", "control character or space in URL");
	bad(" http://a.test/", "control character or space in URL");
	bad("http://a.test/\r\nX-Injected: 1", "control character or space in URL");
	bad("http://a.test/\n", "control character or space in URL");
	bad("http://a.test/\t", "control character or space in URL");
	bad("http://a.test/\x7f", "control character or space in URL");
	bad("http://a.test/\x01", "control character or space in URL");
	bad("http://user:pw@a.test/", "credentials in URL are not supported");
	bad("http://user@a.test/", "credentials in URL are not supported");
	bad("http://@a.test/", "credentials in URL are not supported");
	bad("http://a.test:0/", "port out of range 1..65535");
	bad("http://a.test:65536/", "port out of range 1..65535");
	bad("http://a.test:99999999999999999999/", "invalid port");
	bad("http://a.test:8o/", "invalid port");
	bad("http://a.test:-1/", "invalid port");
	bad("http://b\xc3\xbc" "cher.example/", "non-ASCII host name: use its punycode form");
	bad("http://a.test:80\xc3\xa9/", "non-ASCII host name: use its punycode form");
	bad("http://a..test/", "invalid host name");
	bad("http://.a.test/", "invalid host name");
	bad("http://a.test../", "invalid host name");
	bad("http://a%2etest/", "invalid character '%' in host name");
	bad("http://a!b.test/", "invalid character '!' in host name");
	bad("http://127.1/", "invalid IPv4 address");
	bad("http://2130706433/", "invalid IPv4 address");
	bad("http://1.2.3.256/", "invalid IPv4 address");
	bad("http://[::1/", "malformed URL");
	bad("http://[fe80::1%25eth0]/", "malformed URL");
	bad("http://[v1.fe80::a+en1]/", "invalid IPv6 address");
	bad("http://[1.2.3.4]/", "malformed URL");
	good("http://a.test/<script>", "http://a.test/%3Cscript%3E", "/%3Cscript%3E");
	good("http://a.test/x\"y", "http://a.test/x%22y", "/x%22y");
	good("http://a.test/api?filter[a]=1&q={x}|y", "http://a.test/api?filter%5Ba%5D=1&q=%7Bx%7D%7Cy",
	    "/api?filter%5Ba%5D=1&q=%7Bx%7D%7Cy");
	bad("http://a.test/%zz", "invalid percent-encoding in URL");
	bad("http://a.test/%4", "invalid percent-encoding in URL");
	bad("http://a.test/#a#b", "invalid character '#' in URL");
	bad("http://a<b.test/", "malformed URL");
}

static void
test_long_host(void)
{
	char s[400];

	/* a label of 64 characters */
	snprintf(s, sizeof(s), "http://%s.test/",
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
	bad(s, "invalid host name");
	/* 63 is fine */
	snprintf(s, sizeof(s), "http://%s.test/",
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
	struct url u;
	CHECK(url_parse(&u, s, why, sizeof(why)) == 0);
	url_free(&u);
	/* 254 characters */
	memset(s, 0, sizeof(s));
	strcpy(s, "http://");
	for (int i = 0; i < 127; i++)
		strcat(s, "a.");
	s[strlen(s) - 1] = 'b';
	strcat(s, "/");
	bad(s, "host name too long");
}

/* Resolves ref against base, expecting href (or NULL for a failure with msg). */
static void
resolve(const struct url *base, const char *ref, const char *href, const char *msg)
{
	struct url u;
	int rc;

	why[0] = '\0';
	rc = url_resolve(&u, base, ref, why, sizeof(why));
	if (href != NULL) {
		if (rc != 0)
			fprintf(stderr, "resolving \"%s\": %s\n", ref, why);
		CHECK(rc == 0);
		if (rc == 0)
			CHECK_STR(u.href, href);
		url_free(&u);
	} else {
		CHECK(rc == -1);
		CHECK_STR(why, msg);
		CHECK(u.href == NULL);
	}
}

/* RFC 3986 §5.4.1 and §5.4.2, fragments dropped and "g:h" refused. */
static void
test_resolve_rfc(void)
{
	struct url base;

	CHECK(url_parse(&base, "http://a/b/c/d;p?q", why, sizeof(why)) == 0);
	resolve(&base, "g:h", NULL, "redirect to unsupported scheme \"g\"");
	resolve(&base, "g", "http://a/b/c/g", NULL);
	resolve(&base, "./g", "http://a/b/c/g", NULL);
	resolve(&base, "g/", "http://a/b/c/g/", NULL);
	resolve(&base, "/g", "http://a/g", NULL);
	resolve(&base, "//g", "http://g/", NULL);
	resolve(&base, "?y", "http://a/b/c/d;p?y", NULL);
	resolve(&base, "g?y", "http://a/b/c/g?y", NULL);
	resolve(&base, "#s", "http://a/b/c/d;p?q", NULL);
	resolve(&base, "g#s", "http://a/b/c/g", NULL);
	resolve(&base, "g?y#s", "http://a/b/c/g?y", NULL);
	resolve(&base, ";x", "http://a/b/c/;x", NULL);
	resolve(&base, "g;x", "http://a/b/c/g;x", NULL);
	resolve(&base, "g;x?y#s", "http://a/b/c/g;x?y", NULL);
	resolve(&base, ".", "http://a/b/c/", NULL);
	resolve(&base, "./", "http://a/b/c/", NULL);
	resolve(&base, "..", "http://a/b/", NULL);
	resolve(&base, "../", "http://a/b/", NULL);
	resolve(&base, "../g", "http://a/b/g", NULL);
	resolve(&base, "../..", "http://a/", NULL);
	resolve(&base, "../../", "http://a/", NULL);
	resolve(&base, "../../g", "http://a/g", NULL);
	/* abnormal examples */
	resolve(&base, "../../../g", "http://a/g", NULL);
	resolve(&base, "../../../../g", "http://a/g", NULL);
	resolve(&base, "/./g", "http://a/g", NULL);
	resolve(&base, "/../g", "http://a/g", NULL);
	resolve(&base, "g.", "http://a/b/c/g.", NULL);
	resolve(&base, ".g", "http://a/b/c/.g", NULL);
	resolve(&base, "g..", "http://a/b/c/g..", NULL);
	resolve(&base, "..g", "http://a/b/c/..g", NULL);
	resolve(&base, "./../g", "http://a/b/g", NULL);
	resolve(&base, "./g/.", "http://a/b/c/g/", NULL);
	resolve(&base, "g/./h", "http://a/b/c/g/h", NULL);
	resolve(&base, "g/../h", "http://a/b/c/h", NULL);
	resolve(&base, "g;x=1/./y", "http://a/b/c/g;x=1/y", NULL);
	resolve(&base, "g;x=1/../y", "http://a/b/c/y", NULL);
	resolve(&base, "g?y/./x", "http://a/b/c/g?y/./x", NULL);
	resolve(&base, "g?y/../x", "http://a/b/c/g?y/../x", NULL);
	resolve(&base, "g#s/./x", "http://a/b/c/g", NULL);
	resolve(&base, "g#s/../x", "http://a/b/c/g", NULL);
	resolve(&base, "http:g", NULL, "missing host");	/* strict parsers */
	url_free(&base);
}

static void
test_resolve_more(void)
{
	struct url base;

	CHECK(url_parse(&base, "https://[::1]:8443/dir/page?x", why, sizeof(why)) == 0);
	resolve(&base, "http://Other.Test:81/z#f", "http://other.test:81/z", NULL);
	resolve(&base, "HTTPS://other.test/", "https://other.test/", NULL);
	resolve(&base, "//h.test/p", "https://h.test/p", NULL);
	resolve(&base, "/abs", "https://[::1]:8443/abs", NULL);
	resolve(&base, "rel", "https://[::1]:8443/dir/rel", NULL);
	resolve(&base, "?only", "https://[::1]:8443/dir/page?only", NULL);
	resolve(&base, "/caf\xc3\xa9", "https://[::1]:8443/caf%C3%A9", NULL);
	resolve(&base, "ftp://files.test/x", NULL, "redirect to unsupported scheme \"ftp\"");
	resolve(&base, "mailto:a@b.test", NULL, "redirect to unsupported scheme \"mailto\"");
	resolve(&base, "", NULL, "empty Location");
	resolve(&base, "/a b", NULL, "control character or space in URL");
	resolve(&base, "http://u:p@h.test/", NULL, "credentials in URL are not supported");
	resolve(&base, "//", NULL, "missing host");
	resolve(&base, "//h.test:0/", NULL, "port out of range 1..65535");
	resolve(&base, "/<x>", "https://[::1]:8443/%3Cx%3E", NULL);
	url_free(&base);

	CHECK(url_parse(&base, "http://h.test", why, sizeof(why)) == 0);
	resolve(&base, "x", "http://h.test/x", NULL);
	resolve(&base, "../x", "http://h.test/x", NULL);
	url_free(&base);
}

int
main(void)
{
	test_parts();
	test_normalise();
	test_rejections();
	test_long_host();
	test_resolve_rfc();
	test_resolve_more();
	return UNIT_DONE();
}
