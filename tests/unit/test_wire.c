/* test_wire.c: the request on the wire, both protocols from one set of
 * rules: the request line and Host, the caller's headers with the daemon's
 * own dropped, a request's header winning over the batch's default,
 * credentials dropped after a hop to another origin, the fields the daemon
 * adds, bodies and Content-Length; on HTTP/2 lower-case names and the
 * pseudo-header values. */
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <jansson.h>

#include "unit.h"
#include "util.h"
#include "wire.h"

static char *
h1_text(const struct wire_request *w, int *decode)
{
	struct evbuffer *b = evbuffer_new();
	size_t n;
	char *s;

	*decode = wire_h1(b, w);
	n = evbuffer_get_length(b);
	s = malloc(n + 1);
	evbuffer_copyout(b, s, n);
	s[n] = '\0';
	evbuffer_free(b);
	return s;
}

static void
spec_init(struct reqspec *s, const char *url, const char *method)
{
	char why[128];

	memset(s, 0, sizeof(*s));
	CHECK(url_parse(&s->url, url, why, sizeof(why)) == 0);
	s->method = method;
}

static void
test_h1_get(void)
{
	struct reqspec s;
	json_t *own = json_pack("{s:s,s:s,s:s,s:s}", "X-A", "1", "Connection", "close", "Host",
	    "a.test:8080", "Transfer-Encoding", "chunked");
	json_t *defaults = json_pack("{s:s,s:s}", "x-a", "default", "X-B", "2");
	struct wire_request w = { &s, defaults, 0 };
	int decode;
	char *t;

	spec_init(&s, "http://a.test:8080/p?q=1", "GET");
	s.headers = own;
	t = h1_text(&w, &decode);
	CHECK_STR(t, "GET /p?q=1 HTTP/1.1\r\nHost: a.test:8080\r\nX-A: 1\r\nX-B: 2\r\n"
	    "Accept-Encoding: gzip, deflate\r\nUser-Agent: fanoutd/" FANOUTD_VERSION "\r\n\r\n");
	CHECK(decode == 1);
	free(t);
	url_free(&s.url);
	json_decref(own);
	json_decref(defaults);
}

static void
test_h1_bodies_and_credentials(void)
{
	struct reqspec s;
	json_t *own = json_pack("{s:s,s:s,s:s,s:s}", "Authorization", "Bearer x", "cookie", "c=1",
	    "Accept-Encoding", "br", "User-Agent", "me");
	json_t *doc = json_pack("{s:i}", "a", 1);
	struct wire_request w = { &s, NULL, 1 };
	int decode;
	char *t;

	spec_init(&s, "http://b.test/", "POST");
	s.headers = own;
	s.json = doc;
	t = h1_text(&w, &decode);
	CHECK_STR(t, "POST / HTTP/1.1\r\nHost: b.test\r\nAccept-Encoding: br\r\nUser-Agent: me\r\n"
	    "Content-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"a\":1}");
	CHECK(decode == 0);	/* the caller's own Accept-Encoding: kept raw */
	free(t);
	s.json = NULL;
	s.headers = NULL;
	s.method = "PUT";	/* no body, but a method that has one */
	w.strip_credentials = 0;
	t = h1_text(&w, &decode);
	CHECK(strstr(t, "Content-Length: 0\r\n") != NULL);
	free(t);
	url_free(&s.url);
	json_decref(own);
	json_decref(doc);
}

static void
test_h2_fields(void)
{
	struct reqspec s;
	json_t *own = json_pack("{s:s,s:s,s:s}", "X-Mixed-Case", "v", "Upgrade", "h2c", "TE", "gzip");
	struct wire_request w = { &s, NULL, 0 };
	struct wire_h2 o;
	int decode;

	spec_init(&s, "https://c.test:8443/x", "POST");
	s.headers = own;
	s.body = "hello";
	s.bodylen = 5;
	decode = wire_h2(&o, &w);
	CHECK(decode == 1);
	CHECK_STR(o.req.method, "POST");
	CHECK_STR(o.req.scheme, "https");
	CHECK_STR(o.req.authority, "c.test:8443");
	CHECK_STR(o.req.path, "/x");
	CHECK(o.req.body == s.body && o.req.bodylen == 5 && !o.req.head_request);
	CHECK(o.req.nfields == 4);
	static const char *const want[][2] = {
		{ "x-mixed-case", "v" }, { "accept-encoding", "gzip, deflate" },
		{ "user-agent", "fanoutd/" FANOUTD_VERSION }, { "content-length", "5" },
	};
	for (size_t i = 0; i < 4 && i < o.req.nfields; i++) {
		const struct h2_field *f = &o.req.fields[i];
		CHECK(f->namelen == strlen(want[i][0]) && memcmp(f->name, want[i][0], f->namelen) == 0);
		CHECK(f->valuelen == strlen(want[i][1]) && memcmp(f->value, want[i][1], f->valuelen) == 0);
	}
	wire_h2_free(&o);
	url_free(&s.url);
	json_decref(own);
}

int
main(void)
{
	test_h1_get();
	test_h1_bodies_and_credentials();
	test_h2_fields();
	return UNIT_DONE();
}
