/* spec.h: what intake settles from a batch document and the engine reads:
 * the batch's options and one request's spec. Types only: whoever holds one
 * owns it. */
#ifndef FANOUTD_SPEC_H
#define FANOUTD_SPEC_H

#include <stddef.h>

#include "url.h"

struct conf;
struct json_t;
struct ssl_ctx_st;

enum body_mode { BODY_AUTO, BODY_TEXT, BODY_BASE64, BODY_JSON, BODY_NONE };

/* A batch's options, settled by intake from the document and the
 * configuration snapshot; read by every request of the batch. */
struct bopts {
	unsigned concurrency;
	unsigned per_host;
	unsigned timeout_ms;
	unsigned connect_timeout_ms;
	unsigned deadline_ms;		/* 0: none */
	size_t max_body_bytes;
	size_t max_header_bytes;
	unsigned follow_redirects;
	unsigned retries;
	double rate_per_host;		/* requests a second to each origin; 0: no limit */
	unsigned rate_burst;
	const struct json_t *headers;	/* defaults for every request, or NULL */
	enum body_mode body;
	int order_input;
	int include_headers;
	int http2;			/* offer h2 to https:// origins */
	int ndjson;
	const struct conf *conf;	/* the snapshot the batch started with */
	struct ssl_ctx_st *tls;		/* its TLS context (a reference) */
};

/* One request as intake checked it. Strings and JSON values are borrowed
 * from the batch document, which outlives every request; url is owned. */
struct reqspec {
	struct url url;
	const char *method;
	const struct json_t *headers;	/* the request's own: name -> string */
	const char *body;		/* "body", or NULL */
	size_t bodylen;
	const struct json_t *json;	/* "json", serialised when sent, or NULL */
	unsigned timeout_ms;
};

#endif
