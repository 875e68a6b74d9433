/* batch.h: one caller's batch, from the accepted document to the last byte
 * of its streamed result document. */
#ifndef FANOUTD_BATCH_H
#define FANOUTD_BATCH_H

#include "engine.h"

struct event_base;
struct evhttp_request;
struct conf;

/* idle: called whenever the last batch is freed (for shutdown). */
void batch_init(struct event_base *base, void (*idle)(void));

/* POST /v1/batch: takes the request, answers it (an error, or a stream). */
void batch_handle(struct evhttp_request *req, struct conf *c, struct ssl_ctx_st *tls);

/* From upstream.c: r is finished; the batch writes its result and frees it. */
void batch_result(struct batch *b, struct ureq *r);

struct sched_batch *batch_sb(struct batch *b);

/* From sched.c, at dispatch: the ureq of request index, which intake
 * queued as an index only. */
struct ureq *batch_materialize(struct batch *b, size_t index);

/* Batches accepted and not yet freed. */
unsigned batch_count(void);

/* Shutdown: ends every batch now; unfinished requests get kind cancelled. */
void batch_cancel_all(const char *why);

#endif
