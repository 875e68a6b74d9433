/* wire.h: the request as the daemon sends it, from a checked reqspec: the
 * HTTP/1.1 head and body, or HTTP/2's header fields and body. One set of
 * rules for both protocols (doc/api.md, "What the daemon sends upstream"). */
#ifndef FANOUTD_WIRE_H
#define FANOUTD_WIRE_H

#include "h2.h"
#include "spec.h"

struct evbuffer;
struct json_t;

struct wire_request {
	const struct reqspec *spec;
	const struct json_t *defaults;	/* the batch's options.headers, or NULL */
	int strip_credentials;		/* a hop to another origin: no Authorization, Cookie */
};

/* HTTP/1.1: the request line, head and body into out. Returns whether the
 * daemon asked for gzip and deflate, and so decodes the body. */
int wire_h1(struct evbuffer *out, const struct wire_request *w);

/* HTTP/2: the request for h2_submit, pointing into wire_h2's own storage;
 * free with wire_h2_free. Returns as wire_h1 does. */
struct wire_h2 {
	struct h2_request req;
	struct h2_field *fields;
	char *names;			/* the lower-cased names */
	size_t used;
	char *json;
	char len[24];
};
int wire_h2(struct wire_h2 *out, const struct wire_request *w);
void wire_h2_free(struct wire_h2 *out);

#endif
