/* metrics.c: Prometheus text exposition of struct metrics. */
#include <event2/buffer.h>

#include "metrics.h"

struct metrics metrics;

static const double duration_le[METRICS_NBUCKETS] = {
	0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
};

static const char *const reject_names[] = {
	[METRICS_REJECT_BAD_REQUEST] = "bad_request",
	[METRICS_REJECT_TOO_LARGE] = "too_large",
	[METRICS_REJECT_OVERLOADED] = "overloaded",
	[METRICS_REJECT_OTHER] = "other",
};

void
metrics_observe_duration(double seconds)
{
	for (int i = 0; i < METRICS_NBUCKETS; i++) {
		if (seconds <= duration_le[i]) {
			metrics.duration_buckets[i]++;
			break;
		}
	}
	metrics.duration_sum += seconds;
	metrics.duration_count++;
}

static void
metrics_one(struct evbuffer *out, const char *name, const char *type, const char *help,
    long long value)
{
	evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n%s %lld\n", name, help, name, type,
	    name, value);
}

static void
metrics_labelled(struct evbuffer *out, const char *name, const char *help, const char *label,
    const char *const *names, const uint64_t *values, int n)
{
	evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s counter\n", name, help, name);
	for (int i = 0; i < n; i++)
		evbuffer_add_printf(out, "%s{%s=\"%s\"} %llu\n", name, label, names[i],
		    (unsigned long long)values[i]);
}

static void
metrics_histogram(struct evbuffer *out)
{
	const char *name = "fanoutd_request_duration_seconds";
	uint64_t cum = 0;

	evbuffer_add_printf(out, "# HELP %s Time from dispatch to result of upstream requests.\n"
	    "# TYPE %s histogram\n", name, name);
	for (int i = 0; i < METRICS_NBUCKETS; i++) {
		cum += metrics.duration_buckets[i];
		evbuffer_add_printf(out, "%s_bucket{le=\"%g\"} %llu\n", name, duration_le[i],
		    (unsigned long long)cum);
	}
	evbuffer_add_printf(out, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.6f\n%s_count %llu\n", name,
	    (unsigned long long)metrics.duration_count, name, metrics.duration_sum, name,
	    (unsigned long long)metrics.duration_count);
}

void
metrics_render(struct evbuffer *out)
{
	const char *kinds[KIND_MAX];

	for (int k = 0; k < KIND_MAX; k++)
		kinds[k] = k == KIND_NONE ? "response" : kind_name((enum kind)k);
	metrics_one(out, "fanoutd_batches_total", "counter", "Batches accepted.",
	    (long long)metrics.batches_total);
	metrics_labelled(out, "fanoutd_batches_rejected_total", "Batches refused before streaming.",
	    "reason", reject_names, metrics.batches_rejected, 4);
	metrics_labelled(out, "fanoutd_requests_total", "Upstream requests finished, by outcome.",
	    "kind", kinds, metrics.requests, KIND_MAX);
	metrics_one(out, "fanoutd_batches_in_flight", "gauge", "Batches being served.",
	    metrics.batches_in_flight);
	metrics_one(out, "fanoutd_requests_in_flight", "gauge", "Upstream requests dispatched.",
	    metrics.requests_in_flight);
	metrics_one(out, "fanoutd_requests_queued", "gauge", "Upstream requests waiting for a slot.",
	    metrics.requests_queued);
	metrics_one(out, "fanoutd_upstream_connections_opened_total", "counter",
	    "Upstream connections opened.", (long long)metrics.conns_opened);
	metrics_one(out, "fanoutd_upstream_connections_reused_total", "counter",
	    "Requests served on a kept-alive connection.", (long long)metrics.conns_reused);
	metrics_one(out, "fanoutd_upstream_connections", "gauge", "Upstream connections open.",
	    metrics.conns_open);
	metrics_one(out, "fanoutd_upstream_connections_idle", "gauge",
	    "Kept-alive upstream connections waiting for reuse.", metrics.conns_idle);
	metrics_one(out, "fanoutd_upstream_connections_h2", "gauge",
	    "Upstream connections open that speak HTTP/2 (of fanoutd_upstream_connections).",
	    metrics.conns_h2);
	metrics_one(out, "fanoutd_h2_streams", "gauge", "Requests on HTTP/2 connections now.",
	    metrics.h2_streams);
	metrics_one(out, "fanoutd_dns_cache_hits_total", "counter", "Names answered from the cache.",
	    (long long)metrics.dns_hits);
	metrics_one(out, "fanoutd_dns_cache_misses_total", "counter", "Names not in the cache.",
	    (long long)metrics.dns_misses);
	metrics_one(out, "fanoutd_dns_queries_total", "counter", "DNS queries sent.",
	    (long long)metrics.dns_queries);
	metrics_one(out, "fanoutd_upstream_bytes_in_total", "counter", "Bytes read from upstreams.",
	    (long long)metrics.bytes_in);
	metrics_one(out, "fanoutd_caller_bytes_out_total", "counter",
	    "Bytes of result documents written to callers.", (long long)metrics.bytes_out);
	static const char *const hs[] = { "full", "resumed" };
	metrics_labelled(out, "fanoutd_tls_handshakes_total", "TLS handshakes completed.", "type",
	    hs, metrics.tls_handshakes, 2);
	metrics_one(out, "fanoutd_retries_total", "counter", "Upstream attempts that were retries.",
	    (long long)metrics.retries);
	metrics_one(out, "fanoutd_redirects_total", "counter", "Redirects followed.",
	    (long long)metrics.redirects);
	metrics_one(out, "fanoutd_throttled_requests_total", "counter",
	    "Requests finished that had waited on a rate limit or an origin's pause.",
	    (long long)metrics.throttled_requests);
	evbuffer_add_printf(out, "# HELP fanoutd_throttle_seconds_total Time those requests waited "
	    "so.\n# TYPE fanoutd_throttle_seconds_total counter\nfanoutd_throttle_seconds_total "
	    "%.6f\n", metrics.throttle_seconds);
	static const char *const ps[] = { "429", "503" };
	metrics_labelled(out, "fanoutd_origin_pauses_total",
	    "Pauses of an origin begun by its responses.", "status", ps, metrics.origin_pauses, 2);
	metrics_one(out, "fanoutd_origins_paused", "gauge", "Origins paused now.",
	    metrics.origins_paused);
	metrics_histogram(out);
}
