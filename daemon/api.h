/* api.h: the daemon's HTTP endpoints on evhttp: POST /v1/batch, GET
 * /healthz, GET /metrics, and JSON errors for everything else. */
#ifndef FANOUTD_API_H
#define FANOUTD_API_H

#include <openssl/ssl.h>

struct evhttp;
struct conf;

void api_init(struct evhttp *http, struct conf *c, SSL_CTX *tls);
/* Swaps the snapshot and TLS context new batches start with (reload). */
void api_set_conf(struct conf *c, SSL_CTX *tls);
/* From now on batches are refused with 503. */
void api_stop_accepting(void);
void api_shutdown(void);

#endif
