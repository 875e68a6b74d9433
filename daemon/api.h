/* api.h: the daemon's HTTP endpoints on the server: POST /v1/batch, GET
 * /v1/origins, /healthz, /metrics, and JSON errors for everything else. */
#ifndef FANOUTD_API_H
#define FANOUTD_API_H

#include <openssl/ssl.h>

struct event_base;
struct conf;

void api_init(struct event_base *base, struct conf *c, SSL_CTX *tls);
/* Swaps the snapshot and TLS context new batches start with (reload). */
void api_set_conf(struct conf *c, SSL_CTX *tls);
/* From now on batches are refused with 503. */
void api_stop_accepting(void);
void api_shutdown(void);

#endif
