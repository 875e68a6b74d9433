/* api.c: see api.h. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "api.h"
#include "batch.h"
#include "conf.h"
#include "jout.h"
#include "metrics.h"
#include "pool.h"
#include "sched.h"
#include "util.h"

static struct {
	struct conf *conf;
	SSL_CTX *tls;
	int stopping;
} api;

static void
api_reply(struct evhttp_request *req, int status, const char *type, const char *body)
{
	struct evbuffer *out = evbuffer_new();

	evbuffer_add(out, body, strlen(body));
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", type);
	evhttp_send_reply(req, status, NULL, out);
	evbuffer_free(out);
}

/* A batch-level error: {"error":{"kind":...,"message":...}}, the message
 * escaped as JSON since it may quote the caller's document. allow: the
 * Allow header, or NULL. */
static void
api_error(struct evhttp_request *req, int status, const char *kind, const char *msg,
    const char *allow)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	struct evbuffer *out = evbuffer_new();
	struct jbuf jb;

	if (allow != NULL)
		evhttp_add_header(h, "Allow", allow);
	if (status == 503)
		evhttp_add_header(h, "Retry-After", "1");
	evhttp_add_header(h, "Content-Type", "application/json");
	jb_init(&jb, out);
	JB_LIT(&jb, "{\"error\":{\"kind\":");
	jout_cstr(&jb, kind);
	JB_LIT(&jb, ",\"message\":");
	jout_cstr(&jb, msg);
	JB_LIT(&jb, "}}\n");
	jb_flush(&jb);
	evhttp_send_reply(req, status, NULL, out);
	evbuffer_free(out);
}

static void
api_metrics(struct evhttp_request *req)
{
	struct evbuffer *out = evbuffer_new();

	metrics_render(out);
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
	    "text/plain; version=0.0.4");
	evhttp_send_reply(req, 200, NULL, out);
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
api_origins(struct evhttp_request *req)
{
	json_t *list = json_array();
	json_t *doc = json_pack("{s:o}", "origins", list);
	struct evbuffer *out = evbuffer_new();
	char *text;

	pool_foreach_origin(api_origin, list);
	text = json_dumps(doc, JSON_COMPACT);
	evbuffer_add(out, text, strlen(text));
	evbuffer_add(out, "\n", 1);
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
	    "application/json");
	evhttp_send_reply(req, 200, NULL, out);
	evbuffer_free(out);
	free(text);
	json_decref(doc);
}

/* POST /v1/batch: the batch streams its own answer; a refusal is ours. */
static void
api_batch(struct evhttp_request *req)
{
	char why[256];
	int status;

	if (api.stopping) {
		metrics.batches_rejected[METRICS_REJECT_OVERLOADED]++;
		api_error(req, 503, "overloaded", "shutting down", NULL);
		return;
	}
	if ((status = batch_handle(req, api.conf, api.tls, why, sizeof(why))) == 0)
		return;
	switch (status) {
	case 503:
		metrics.batches_rejected[METRICS_REJECT_OVERLOADED]++;
		api_error(req, status, "overloaded", why, NULL);
		break;
	case 413:
		metrics.batches_rejected[METRICS_REJECT_TOO_LARGE]++;
		api_error(req, status, "too_large", why, NULL);
		break;
	default:
		metrics.batches_rejected[METRICS_REJECT_BAD_REQUEST]++;
		api_error(req, status, "bad_request", why, NULL);
		break;
	}
}

static void
api_route(struct evhttp_request *req, void *arg)
{
	const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
	enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
	int get = cmd == EVHTTP_REQ_GET || cmd == EVHTTP_REQ_HEAD;

	(void)arg;
	if (path == NULL)
		path = "";
	if (strcmp(path, "/v1/batch") == 0) {
		if (cmd != EVHTTP_REQ_POST)
			api_error(req, 405, "method_not_allowed", "use POST", "POST");
		else
			api_batch(req);
	} else if (strcmp(path, "/healthz") == 0) {
		if (get)
			api_reply(req, 200, "application/json", "{\"status\":\"ok\"}\n");
		else
			api_error(req, 405, "method_not_allowed", "use GET", "GET, HEAD");
	} else if (strcmp(path, "/v1/origins") == 0) {
		if (get)
			api_origins(req);
		else
			api_error(req, 405, "method_not_allowed", "use GET", "GET, HEAD");
	} else if (strcmp(path, "/metrics") == 0) {
		if (get)
			api_metrics(req);
		else
			api_error(req, 405, "method_not_allowed", "use GET", "GET, HEAD");
	} else
		api_error(req, 404, "not_found", "no such endpoint", NULL);
}

void
api_init(struct evhttp *http, struct conf *c, SSL_CTX *tls)
{
	api_set_conf(c, tls);
	/* Every method reaches api_route, so a wrong one gets our JSON 405. */
	evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
	    EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
	    EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
	evhttp_set_gencb(http, api_route, NULL);
}

void
api_set_conf(struct conf *c, SSL_CTX *tls)
{
	api_shutdown();
	api.conf = conf_ref(c);
	SSL_CTX_up_ref(tls);
	api.tls = tls;
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
