/* batch.h: one caller's batch, from the accepted document to the last byte
 * of its streamed result document. */
#ifndef FANOUTD_BATCH_H
#define FANOUTD_BATCH_H

struct event_base;
struct srv_req;
struct conf;
struct ssl_ctx_st;

/* idle: called whenever the last batch is freed (for shutdown). */
void batch_init(struct event_base *base, void (*idle)(void));

/* POST /v1/batch with its whole document read: takes the request and
 * answers it with the stream of results. Returns 0, or the HTTP status to
 * refuse it with (400, 413, 503) and why; the caller answers a refusal. */
int batch_handle(struct srv_req *req, struct conf *c, struct ssl_ctx_st *tls,
    char *why, size_t whylen);

/* Whether the request is a streamed batch (NDJSON lines in). */
int batch_is_stream(const struct srv_req *req);

/* POST /v1/batch of NDJSON lines, its head read: takes the request, reads
 * its lines as they come and dispatches each. Returns 0, or the status to
 * refuse it with and why. */
int batch_stream(struct srv_req *req, struct conf *c, struct ssl_ctx_st *tls,
    char *why, size_t whylen);

/* Answers a refused batch with its JSON error, counted in the metrics. */
void batch_refuse(struct srv_req *req, int status, const char *why);

/* Batches accepted and not yet freed. */
unsigned batch_count(void);

/* Shutdown: ends every batch now; unfinished requests get kind cancelled. */
void batch_cancel_all(const char *why);

#endif
