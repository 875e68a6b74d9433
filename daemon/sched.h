/* sched.h: who goes next. Each batch keeps a queue per origin (a bhost); a
 * request is dispatched when its batch is under `concurrency`, its bhost under
 * `per_host`, the origin's rate limits, pause and restart let it start, and
 * the pool can give its origin a connection. Batches take turns one dispatch
 * at a time, so no batch starves another; requests blocked by an origin's
 * limit, its throttle or the global budget park their bhost and are woken
 * when it frees (a timer for a token or a pause's end), so nothing polls.
 *
 * The scheduler knows requests only as indexes (queued, not yet made) and
 * as sched_req handles (dispatched): what a request is belongs to the
 * batch, which the scheduler reaches through the dispatch callback alone. */
#ifndef FANOUTD_SCHED_H
#define FANOUTD_SCHED_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct conf;
struct conn;
struct origin;
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

/* The configuration's rate_limit lines and backoff rules, from start-up
 * and each reload on (c is held until the next). A reload applies to the
 * origins known already. */
void sched_configure(struct conf *c);

/* A batch's limits. */
struct sched_limits {
	unsigned concurrency;
	unsigned per_host;
	int mux;		/* its requests may share multiplexing connections */
	double rate;		/* requests a second to each origin; 0: no limit */
	unsigned burst;		/* how many of them may start at once */
};

struct sched_batch *sched_batch_new(sched_dispatch_fn *dispatch, void *owner,
    const struct sched_limits *limits);
/* Joins the turn-taking; requests enqueued before or after are dispatched. */
void sched_batch_start(struct sched_batch *sb);
/* Leaves it and frees sb; every sched_req of it must be finished. */
void sched_batch_free(struct sched_batch *sb);

/* Queues request index for u's origin, as an index only. */
void sched_enqueue_new(struct sched_batch *sb, const struct url *u, size_t index);
/* Takes any queued new request's index off sb's queues: for cancelling;
 * *throttle_us (if not NULL): how long it was held back by a throttle.
 * Returns 0 when none is left. */
int sched_pop_new(struct sched_batch *sb, size_t *index, uint64_t *throttle_us);

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

/* A final response to r from its origin. A 429, or a 503 with Retry-After
 * (retry_after_us >= 0), pauses the origin for every batch; 2xx and 3xx
 * let a restart after a pause widen. Returns whether the origin is paused:
 * r's retry, if any, then waits for the pause's end in the queue. */
int sched_response(struct sched_req *r, int status, int64_t retry_after_us);

/* How long r has been held back by rate limits, pauses and restarts, all
 * its waits so far included. */
uint64_t sched_req_throttled_us(const struct sched_req *r);

/* What the scheduler knows of an origin, for /v1/origins. */
struct sched_origin_info {
	unsigned in_flight;	/* dispatched, not finished, all batches */
	size_t queued;		/* waiting to be */
	double rate;		/* the configured limit; 0: none */
	unsigned burst;
	uint64_t paused_until;	/* now_us() time; 0: not paused */
	int pause_status;	/* 429 or 503 */
	int64_t retry_after_us;	/* as the origin said; -1: it did not */
	unsigned window;	/* a restart's window; 0: none */
};
/* Fills *info, with the configured limit even for an origin no batch has
 * wanted lately; returns -1 when that is all the scheduler knows of it. */
int sched_origin_info(const struct origin *o, struct sched_origin_info *info);

#endif
