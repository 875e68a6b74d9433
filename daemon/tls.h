/* tls.h: the OpenSSL client side: one verifying context per configuration
 * snapshot, per-origin session resumption, and failures in plain words. */
#ifndef FANOUTD_TLS_H
#define FANOUTD_TLS_H

#include <stddef.h>

#include <openssl/ssl.h>

struct conf;
struct bufferevent;

/* One origin's resumable sessions (the newest few), kept by its owner for
 * the origin's lifetime; it must outlive every SSL made with it. */
struct tls_sessions;

/* A new client context for c: TLS 1.2 minimum, peer verification against
 * ca_file or the system store, ALPN http/1.1, client session cache. NULL
 * with why on failure. Reference-counted with SSL_CTX_up_ref/SSL_CTX_free. */
SSL_CTX *tls_ctx_new(const struct conf *c, const char **why);

struct tls_sessions *tls_sessions_new(void);
unsigned tls_sessions_count(const struct tls_sessions *ts);
void tls_sessions_free(struct tls_sessions *ts);

/* An SSL for one connection to host: SNI and host check for names, IP check
 * for literals; the newest of ts is offered for resumption, and sessions
 * the server issues on it are kept in ts. h2: offer h2 before http/1.1 by
 * ALPN (the context offers http/1.1 alone). */
SSL *tls_ssl_new(SSL_CTX *ctx, struct tls_sessions *ts, const char *host, int host_is_ip,
    int h2);

/* After a completed handshake: counts it (full or resumed); returns whether
 * the server chose h2. */
int tls_handshake_done(SSL *ssl);

/* Why the handshake on bev failed, in words a user understands
 * ("certificate has expired", "hostname mismatch: cert is for x.test").
 * Drains this connection's OpenSSL errors, so none reach another request. */
const char *tls_failure(struct bufferevent *bev, char *buf, size_t len);

/* Before a TLS connection is freed: keeps its session resumable. */
void tls_conn_closing(struct bufferevent *bev);

#endif
