/* upstream.h: one upstream request's life, from dispatch to result: resolve,
 * connect, send, read the head and body, and the one funnel that turns every
 * failure into a retry, a fresh-connection retry, a redirect or a result. */
#ifndef FANOUTD_UPSTREAM_H
#define FANOUTD_UPSTREAM_H

#include "engine.h"

struct event_base;

void upstream_init(struct event_base *base);

/* A ureq for a validated request; queued by the batch. */
struct ureq *upstream_new(struct batch *b, const struct bopts *opts, size_t index);

/* From sched.c: r may go, on c (kept-alive when reused). */
void upstream_start(struct ureq *r, struct conn *c, int reused);

/* Ends r now with kind (deadline, cancelled) and hands it to its batch; r
 * may be queued or in any state of flight. */
void upstream_abort(struct ureq *r, enum kind kind, const char *msg);

void upstream_free(struct ureq *r);


#endif
