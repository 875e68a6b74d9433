/* result.h: one result object of the output document, encoded as JSON text
 * straight into the output buffer. */
#ifndef FANOUTD_RESULT_H
#define FANOUTD_RESULT_H

#include <stdint.h>

#include "report.h"
#include "spec.h"

struct evbuffer;

/* Writes r's result as options o ask. elem: the request's element of the
 * document (for id and url); t_start: when the batch was accepted (for
 * queue_ms). */
void result_write(struct evbuffer *out, const struct report *r, const struct bopts *o,
    const struct json_t *elem, uint64_t t_start);

/* Which encoding a body gets in mode m, and writes it: "json", "text",
 * "base64" or "none". content_type may be NULL. */
const char *result_body(struct evbuffer *out, enum body_mode m, struct evbuffer *body,
    const char *content_type, size_t ctlen);

#endif
