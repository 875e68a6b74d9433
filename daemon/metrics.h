/* metrics.h: the daemon's counters and gauges, written by every module and
 * read out in Prometheus text format by /metrics. Plain globals: the daemon is
 * one thread, so no atomics are needed. */
#ifndef FANOUTD_METRICS_H
#define FANOUTD_METRICS_H

#include <stdint.h>

#include "util.h"

#define METRICS_NBUCKETS 14

struct metrics {
	uint64_t batches_total;			/* accepted and streamed */
	uint64_t batches_rejected[4];		/* by enum metrics_reject */
	uint64_t requests[KIND_MAX];		/* results by kind; KIND_NONE = response */
	int64_t batches_in_flight;
	int64_t requests_in_flight;		/* dispatched, not yet finished */
	int64_t requests_queued;		/* waiting for a slot */
	uint64_t conns_opened;
	uint64_t conns_reused;
	int64_t conns_open;
	int64_t conns_idle;
	int64_t conns_h2;			/* of conns_open, multiplexing (HTTP/2) */
	int64_t h2_streams;			/* requests on them now */
	uint64_t dns_hits;
	uint64_t dns_misses;
	uint64_t dns_queries;
	uint64_t bytes_in;			/* read from upstreams */
	uint64_t bytes_out;			/* result documents written to callers */
	uint64_t tls_handshakes[2];		/* full, resumed */
	uint64_t retries;
	uint64_t redirects;
	uint64_t throttled_requests;		/* finished after waiting on a rate limit or a pause */
	double throttle_seconds;		/* how long they waited so */
	uint64_t origin_pauses[2];		/* begun by a 429, by a 503 */
	int64_t origins_paused;			/* now */
	uint64_t duration_buckets[METRICS_NBUCKETS];	/* cumulative at render */
	double duration_sum;
	uint64_t duration_count;
};

enum metrics_reject {
	METRICS_REJECT_BAD_REQUEST,
	METRICS_REJECT_TOO_LARGE,
	METRICS_REJECT_OVERLOADED,
	METRICS_REJECT_OTHER,
};

extern struct metrics metrics;

struct evbuffer;

void metrics_observe_duration(double seconds);
void metrics_render(struct evbuffer *out);

#endif
