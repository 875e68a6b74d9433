/* api.c: see api.h. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include <event2/buffer.h>

#include "api.h"
#include "batch.h"
#include "conf.h"
#include "jout.h"
#include "metrics.h"
#include "pool.h"
#include "sched.h"
#include "server.h"
#include "util.h"

static struct {
	struct conf *conf;
	SSL_CTX *tls;
	int stopping;
} api;

static void
api_reply_buf(struct srv_req *req, const char *type, struct evbuffer *out)
{
	size_t n = evbuffer_get_length(out);

	srv_reply(req, 200, type, NULL, n > 0 ? (const void *)evbuffer_pullup(out, -1) : "", n);
}

static void
api_metrics(struct srv_req *req)
{
	struct evbuffer *out = evbuffer_new();

	metrics_render(out);
	api_reply_buf(req, "text/plain; version=0.0.4", out);
	evbuffer_free(out);
}

/* Monotonic now_us() time at as RFC 3339 UTC with milliseconds. */
static json_t *
api_wall_time(uint64_t at)
{
	struct timespec ts;
	struct tm tm;
	char buf[40];
	uint64_t now = now_us(), ms;

	clock_gettime(CLOCK_REALTIME, &ts);
	ms = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
	ms = at > now ? ms + (at - now) / 1000u : ms - (now - at) / 1000u;
	time_t s = (time_t)(ms / 1000u);
	gmtime_r(&s, &tm);
	strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf + strlen(buf), sizeof(buf) - strlen(buf), ".%03uZ", (unsigned)(ms % 1000u));
	return json_string(buf);
}

static json_t *
api_origin_pause(const struct sched_origin_info *s)
{
	uint64_t now = now_us();

	if (s->paused_until == 0)
		return json_null();
	return json_pack("{s:o,s:I,s:i,s:o}",
	    "until", api_wall_time(s->paused_until),
	    "remaining_ms", (json_int_t)(s->paused_until > now ?
	    (s->paused_until - now + 999) / 1000 : 0),
	    "status", s->pause_status,
	    "retry_after_ms", s->retry_after_us >= 0 ?
	    json_integer(s->retry_after_us / 1000) : json_null());
}

/* One origin of /v1/origins: the pool's side, and the scheduler's when a
 * batch has wanted it lately. */
static void
api_origin(const struct origin *o, void *arg)
{
	struct pool_origin_info p;
	struct sched_origin_info s;
	json_t *e;

	pool_origin_info(o, &p);
	(void)sched_origin_info(o, &s);
	e = json_pack("{s:s,s:{s:i,s:i,s:i,s:i},s:i,s:i,s:I}",
	    "origin", pool_origin_key(o),
	    "connections", "total", (json_int_t)p.conns, "http/1.1", (json_int_t)(p.conns - p.mux),
	    "h2", (json_int_t)p.mux, "idle", (json_int_t)p.idle,
	    "streams", (json_int_t)p.streams,
	    "in_flight", (json_int_t)s.in_flight,
	    "queued", (json_int_t)s.queued);
	json_object_set_new(e, "rate_limit", s.rate > 0 ?
	    json_pack("{s:f,s:i}", "rate", s.rate, "burst", (json_int_t)s.burst) : json_null());
	json_object_set_new(e, "pause", api_origin_pause(&s));
	json_object_set_new(e, "restart", s.window > 0 && s.paused_until == 0 ?
	    json_pack("{s:i}", "window", (json_int_t)s.window) : json_null());
	json_array_append_new(arg, e);
}

/* GET /v1/origins: every origin the daemon knows, and what holds it back. */
static void
api_origins(struct srv_req *req)
{
	json_t *list = json_array();
	json_t *doc = json_pack("{s:o}", "origins", list);
	struct evbuffer *out = evbuffer_new();
	char *text;

	pool_foreach_origin(api_origin, list);
	text = json_dumps(doc, JSON_COMPACT);
	evbuffer_add(out, text, strlen(text));
	evbuffer_add(out, "\n", 1);
	api_reply_buf(req, "application/json", out);
	evbuffer_free(out);
	free(text);
	json_decref(doc);
}

/* The whole document of a POST /v1/batch is in. */
static void
api_batch_document(struct srv_req *req)
{
	char why[256];
	int status;

	if ((status = batch_handle(req, api.conf, api.tls, why, sizeof(why))) != 0)
		batch_refuse(req, status, why);
}

/* POST /v1/batch: a document is read whole, then the batch streams its own
 * answer; a stream of NDJSON lines goes to the batch as it comes. */
static void
api_batch(struct srv_req *req)
{
	char why[256];
	int status;

	if (api.stopping) {
		batch_refuse(req, 503, "shutting down");
		return;
	}
	if (!batch_is_stream(req)) {
		srv_req_read_body(req, api_batch_document);
		return;
	}
	if ((status = batch_stream(req, api.conf, api.tls, why, sizeof(why))) != 0)
		batch_refuse(req, status, why);
}

static void
api_route(struct srv_req *req)
{
	const char *path = srv_req_path(req), *method = srv_req_method(req);
	int get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;

	if (strcmp(path, "/v1/batch") == 0) {
		if (strcmp(method, "POST") != 0)
			srv_error(req, 405, "method_not_allowed", "use POST", "Allow: POST\r\n");
		else
			api_batch(req);
	} else if (strcmp(path, "/healthz") == 0) {
		if (get)
			srv_reply(req, 200, "application/json", NULL, "{\"status\":\"ok\"}\n", 16);
		else
			srv_error(req, 405, "method_not_allowed", "use GET", "Allow: GET, HEAD\r\n");
	} else if (strcmp(path, "/v1/origins") == 0) {
		if (get)
			api_origins(req);
		else
			srv_error(req, 405, "method_not_allowed", "use GET", "Allow: GET, HEAD\r\n");
	} else if (strcmp(path, "/metrics") == 0) {
		if (get)
			api_metrics(req);
		else
			srv_error(req, 405, "method_not_allowed", "use GET", "Allow: GET, HEAD\r\n");
	} else
		srv_error(req, 404, "not_found", "no such endpoint", NULL);
}

void
api_init(struct event_base *base, struct conf *c, SSL_CTX *tls)
{
	srv_init(base, api_route);
	api_set_conf(c, tls);
}

void
api_set_conf(struct conf *c, SSL_CTX *tls)
{
	api_shutdown();
	api.conf = conf_ref(c);
	SSL_CTX_up_ref(tls);
	api.tls = tls;
	srv_configure(c);
}

void
api_stop_accepting(void)
{
	api.stopping = 1;
}

void
api_shutdown(void)
{
	if (api.conf != NULL)
		conf_unref(api.conf);
	if (api.tls != NULL)
		SSL_CTX_free(api.tls);
	api.conf = NULL;
	api.tls = NULL;
}
