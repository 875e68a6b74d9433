/* report.h: what one request came to, as result.c renders it. upstream.c
 * fills it in as the request goes; the batch reads it once the request is
 * done, or fills a bare one for a request that never went. Types only. */
#ifndef FANOUTD_REPORT_H
#define FANOUTD_REPORT_H

#include <stddef.h>
#include <stdint.h>
#include <arpa/inet.h>

#include "h1.h"
#include "util.h"

struct evbuffer;

struct report {
	size_t index;
	enum kind kind;			/* KIND_NONE: a response */
	char msg[160];			/* the error's message */
	struct h1_head head;		/* the response's */
	const char *protocol;		/* of the final response: "h2", "http/1.1", "http/1.0" */
	struct evbuffer *body;		/* the body as the caller gets it, or NULL */
	size_t bytes;			/* its decoded size */
	unsigned attempts;
	int reused;
	char remote[INET6_ADDRSTRLEN + 8];	/* where the last attempt went */
	const char *final_url;		/* set when a redirect was followed */
	/* Microseconds of now_us(); t_dispatch is 0 for a request that never
	 * went, and moves on by the throttled waits of its retries and hops,
	 * which are queue time. */
	uint64_t t_dispatch, t_end;
	uint64_t throttle_us;		/* held back by rate limits and pauses, all waits */
	double dns_ms, connect_ms, tls_ms, ttfb_ms;
};

#endif
