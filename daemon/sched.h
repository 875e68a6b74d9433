/* sched.h: who goes next. Each batch keeps a queue per origin (a bhost); a
 * request is dispatched when its batch is under `concurrency`, its bhost under
 * `per_host`, and the pool can give its origin a connection. Batches take turns
 * one dispatch at a time, so no batch starves another; requests blocked by an
 * origin's limit or the global budget park their bhost on the origin and are
 * woken when it frees, so nothing polls. */
#ifndef FANOUTD_SCHED_H
#define FANOUTD_SCHED_H

#include "engine.h"

struct event_base;

void sched_init(struct event_base *base);
void sched_shutdown(void);

void sched_batch_init(struct sched_batch *sb, struct batch *b, unsigned concurrency,
    unsigned per_host);
/* Joins the turn-taking; requests enqueued before or after are dispatched. */
void sched_batch_start(struct sched_batch *sb);
/* Leaves it; the queues must be empty (see sched_remove). */
void sched_batch_fini(struct sched_batch *sb);

/* Queues request index of the batch for u's origin. At dispatch the batch
 * makes its ureq (batch_materialize). */
void sched_enqueue_new(struct sched_batch *sb, const struct url *u, size_t index);

/* Queues r again (a redirect or retry) for its URL's origin: it goes before
 * the origin's new requests and does not count against concurrency again. */
void sched_enqueue(struct sched_batch *sb, struct ureq *r);

/* Takes r off its queue if it is queued: for cancelling. */
void sched_remove(struct ureq *r);

/* Takes any queued new request's index off sb's queues: for cancelling.
 * Returns 0 when none is left. */
int sched_pop_new(struct sched_batch *sb, size_t *index);

/* r gives back its per-origin slot (its connection is released or closed). */
void sched_release(struct ureq *r);
/* r is finished: its slot and its place in the batch's concurrency. */
void sched_finished(struct ureq *r);

/* The batch's backpressure or order-input state changed. */
void sched_batch_changed(struct sched_batch *sb);

/* From pool.c: o has an idle connection or one fewer open. */
void sched_origin_freed(struct origin *o);
/* From pool.c: the global budget has room again. */
void sched_slot_freed(void);

#endif
