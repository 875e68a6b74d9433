/* sched.h: who goes next. Each batch keeps a queue per origin (a bhost); a
 * request is dispatched when its batch is under `concurrency`, its bhost under
 * `per_host`, and the pool can give its origin a connection. Batches take turns
 * one dispatch at a time, so no batch starves another; requests blocked by an
 * origin's limit or the global budget park their bhost on the origin and are
 * woken when it frees, so nothing polls.
 *
 * The scheduler knows requests only as indexes (queued, not yet made) and
 * as sched_req handles (dispatched): what a request is belongs to the
 * batch, which the scheduler reaches through the dispatch callback alone. */
#ifndef FANOUTD_SCHED_H
#define FANOUTD_SCHED_H

#include <stddef.h>

struct event_base;
struct conn;
struct url;

struct sched_batch;	/* one batch's queues */
struct sched_req;	/* one dispatched request's place */

/* r may go on c (a kept-alive one when reused). The first time for a
 * request, sched_req_data(r) is NULL: the owner makes the request and sets
 * it. Called from the scheduler's own event only, never from inside a call
 * into the scheduler, and as the scheduler's last step: the callee may do
 * anything, sched_finished(r) included, but free a batch, which must wait
 * for a later loop turn. */
typedef void sched_dispatch_fn(void *owner, struct sched_req *r, struct conn *c, int reused);

/* The pool must be initialised first: the scheduler registers with it. */
void sched_init(struct event_base *base);
void sched_shutdown(void);

/* mux: its requests may share multiplexing connections (pool_take). */
struct sched_batch *sched_batch_new(sched_dispatch_fn *dispatch, void *owner,
    unsigned concurrency, unsigned per_host, int mux);
/* Joins the turn-taking; requests enqueued before or after are dispatched. */
void sched_batch_start(struct sched_batch *sb);
/* Leaves it and frees sb; every sched_req of it must be finished. */
void sched_batch_free(struct sched_batch *sb);

/* Queues request index for u's origin, as an index only. */
void sched_enqueue_new(struct sched_batch *sb, const struct url *u, size_t index);
/* Takes any queued new request's index off sb's queues: for cancelling.
 * Returns 0 when none is left. */
int sched_pop_new(struct sched_batch *sb, size_t *index);

/* The batch's output: paused, only the request it waits for (need_index, or
 * SIZE_MAX) and continuing ones may go. */
void sched_set_output(struct sched_batch *sb, int paused, size_t need_index);

size_t sched_req_index(const struct sched_req *r);
void *sched_req_data(const struct sched_req *r);
void sched_req_set_data(struct sched_req *r, void *data);

/* Queues r again (a redirect or retry) for u's origin: it goes before the
 * origin's new requests and does not count against concurrency again.
 * fresh: it must not get a kept-alive connection. */
void sched_requeue(struct sched_req *r, const struct url *u, int fresh);
/* Takes r off its queue if it is queued. */
void sched_dequeue(struct sched_req *r);
/* r gives back its per-origin slot (its connection is released or closed). */
void sched_release(struct sched_req *r);
/* r is finished: its slot and its place in the batch's concurrency free,
 * and r is freed. */
void sched_finished(struct sched_req *r);

#endif
