/* intake.h: the batch document, checked. Document-level problems refuse
 * the batch (400/413); a bad request element only earns its own
 * invalid_request result. Messages name the place: `requests[3]: ...`,
 * `options.body: ...`, `url: ...`. */
#ifndef FANOUTD_INTAKE_H
#define FANOUTD_INTAKE_H

#include <stddef.h>

#include "spec.h"

struct conf;

/* Checks the document's shape and options and fills o. Returns 0, or the
 * HTTP status to refuse it with (400, 413) and a message in why. */
int intake_document(const struct json_t *doc, const struct conf *c, struct bopts *o,
    char *why, size_t whylen);

/* A streamed batch's first line: fills o with the defaults, then, if line
 * is an options line ({"options": {...}}), with its options. Returns 1 for
 * an options line, 0 for a line that is not one (a request), -1 with why
 * for a bad options line. */
int intake_stream_first(const struct json_t *line, const struct conf *c, struct bopts *o,
    char *why, size_t whylen);

/* Checks one element of "requests" and fills r (its url is then the
 * caller's to free, whatever the outcome). Returns 0, or -1 with why. */
int intake_request(const struct json_t *elem, const struct bopts *o, struct reqspec *r,
    char *why, size_t whylen);

/* True when s is an RFC 9110 token (methods, header names). */
int intake_token(const char *s);

#endif
