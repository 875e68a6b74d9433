/* batch.h: one caller's batch, from the accepted document to the last byte
 * of its streamed result document. */
#ifndef FANOUTD_BATCH_H
#define FANOUTD_BATCH_H

struct event_base;
struct evhttp_request;
struct conf;
struct ssl_ctx_st;

/* idle: called whenever the last batch is freed (for shutdown). */
void batch_init(struct event_base *base, void (*idle)(void));

/* POST /v1/batch: takes the request and answers it with the stream of
 * results. Returns 0, or the HTTP status to refuse it with (400, 413, 503)
 * and why; the caller answers a refusal. */
int batch_handle(struct evhttp_request *req, struct conf *c, struct ssl_ctx_st *tls,
    char *why, size_t whylen);

/* Batches accepted and not yet freed. */
unsigned batch_count(void);

/* Shutdown: ends every batch now; unfinished requests get kind cancelled. */
void batch_cancel_all(const char *why);

#endif
