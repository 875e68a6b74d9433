/* tls.c: see tls.h.
 *
 * Sessions are cached per origin rather than in OpenSSL's internal client
 * cache, which is keyed by session id and would not find the session for a
 * new connection: the new-session callback keeps the newest few sessions on
 * the origin (TLS 1.3 tickets arrive after the handshake, so it may run while
 * the response is read), and a new connection to the origin offers one.
 * A TLS 1.3 ticket is offered once (RFC 8446 C.4; servers with stateful
 * tickets refuse a second use, which made every other concurrent connection
 * a full handshake); a TLS 1.2 session stays for the next connection too. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "conf.h"
#include "metrics.h"
#include "tls.h"
#include "util.h"

#define TLS_MAX_SESSIONS 4

/* One origin's resumable sessions, newest last. */
struct tls_sessions {
	SSL_SESSION *s[TLS_MAX_SESSIONS];
	unsigned n;
};

static int tls_origin_idx = -1;	/* SSL ex_data slot: the connection's tls_sessions */
static int tls_names_idx = -1;	/* SSL ex_data slot: names of a rejected leaf */

static void tls_cert_names(X509 *cert, char *buf, size_t len);

static void
tls_names_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
	(void)parent;
	(void)ad;
	(void)idx;
	(void)argl;
	(void)argp;
	free(ptr);
}

/* OpenSSL 3.0 keeps no peer certificate after a failed verification, so the
 * names a mismatched leaf is for are noted while it is at hand. */
static int
tls_verify(int ok, X509_STORE_CTX *store)
{
	SSL *ssl = X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx());
	char *names;

	if (ok || X509_STORE_CTX_get_error_depth(store) != 0 || ssl == NULL ||
	    SSL_get_ex_data(ssl, tls_names_idx) != NULL || (names = malloc(160)) == NULL)
		return ok;
	tls_cert_names(X509_STORE_CTX_get_current_cert(store), names, 160);
	SSL_set_ex_data(ssl, tls_names_idx, names);
	return ok;
}

static int
tls_new_session(SSL *ssl, SSL_SESSION *sess)
{
	struct tls_sessions *ts = SSL_get_ex_data(ssl, tls_origin_idx);

	if (ts == NULL || !SSL_SESSION_is_resumable(sess))
		return 0;
	if (ts->n == TLS_MAX_SESSIONS) {	/* the oldest goes */
		SSL_SESSION_free(ts->s[0]);
		memmove(ts->s, ts->s + 1, (TLS_MAX_SESSIONS - 1) * sizeof(ts->s[0]));
		ts->n--;
	}
	ts->s[ts->n++] = sess;
	return 1;	/* we keep the reference */
}

SSL_CTX *
tls_ctx_new(const struct conf *c, const char **why)
{
	static const unsigned char alpn[] = "\x08http/1.1";
	SSL_CTX *ctx;

	if (tls_origin_idx < 0) {
		tls_origin_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
		tls_names_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, tls_names_free);
	}
	if ((ctx = SSL_CTX_new(TLS_client_method())) == NULL) {
		*why = "cannot create a TLS context";
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, tls_verify);
	SSL_CTX_set_alpn_protos(ctx, alpn, sizeof(alpn) - 1);
	if (c->tls_resume) {
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT |
		    SSL_SESS_CACHE_NO_INTERNAL_STORE);
		SSL_CTX_sess_set_new_cb(ctx, tls_new_session);
	} else {
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
		SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
	}
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	/* The system store is read as its hashed directory, certificate by
	 * certificate when a chain needs one, rather than as the whole bundle
	 * at every start and reload. */
	if (c->ca_file != NULL ? SSL_CTX_load_verify_locations(ctx, c->ca_file, NULL) != 1 :
	    SSL_CTX_set_default_verify_dir(ctx) != 1 && SSL_CTX_set_default_verify_paths(ctx) != 1) {
		*why = c->ca_file != NULL ? "ca_file: no usable certificate in it" :
		    "cannot load the system trust store";
		ERR_clear_error();
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

struct tls_sessions *
tls_sessions_new(void)
{
	return xcalloc(1, sizeof(struct tls_sessions));
}

unsigned
tls_sessions_count(const struct tls_sessions *ts)
{
	return ts->n;
}

void
tls_sessions_free(struct tls_sessions *ts)
{
	while (ts->n > 0)
		SSL_SESSION_free(ts->s[--ts->n]);
	free(ts);
}

SSL *
tls_ssl_new(SSL_CTX *ctx, struct tls_sessions *ts, const char *host, int host_is_ip, int h2)
{
	static const unsigned char alpn_h2[] = "\x02h2\x08http/1.1";
	SSL *ssl = SSL_new(ctx);

	if (ssl == NULL)
		return NULL;
	if (h2)
		SSL_set_alpn_protos(ssl, alpn_h2, sizeof(alpn_h2) - 1);
	SSL_set_ex_data(ssl, tls_origin_idx, ts);
	if (host_is_ip) {
		/* No SNI for addresses (RFC 6066); the certificate must name the IP. */
		X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host);
	} else {
		SSL_set_tlsext_host_name(ssl, host);
		SSL_set1_host(ssl, host);
	}
	if (ts->n > 0 && SSL_CTX_get_session_cache_mode(ctx) != SSL_SESS_CACHE_OFF) {
		SSL_SESSION *sess = ts->s[ts->n - 1];
		SSL_set_session(ssl, sess);	/* takes its own reference */
		if (SSL_SESSION_get_protocol_version(sess) >= TLS1_3_VERSION) {
			ts->n--;
			SSL_SESSION_free(sess);
		}
	}
	return ssl;
}

int
tls_handshake_done(SSL *ssl)
{
	const unsigned char *proto;
	unsigned len;

	metrics.tls_handshakes[SSL_session_reused(ssl) ? 1 : 0]++;
	SSL_get0_alpn_selected(ssl, &proto, &len);
	return len == 2 && memcmp(proto, "h2", 2) == 0;
}

/* The names a certificate is for: its DNS and IP subjectAltNames. */
static void
tls_cert_names(X509 *cert, char *buf, size_t len)
{
	GENERAL_NAMES *sans = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
	size_t used = 0;

	buf[0] = '\0';
	for (int i = 0; sans != NULL && i < sk_GENERAL_NAME_num(sans) && used + 2 < len; i++) {
		const GENERAL_NAME *gn = sk_GENERAL_NAME_value(sans, i);
		char one[INET6_ADDRSTRLEN + 1] = "";
		if (gn->type == GEN_DNS)
			snprintf(one, sizeof(one), "%.*s", ASN1_STRING_length(gn->d.dNSName),
			    (const char *)ASN1_STRING_get0_data(gn->d.dNSName));
		else if (gn->type == GEN_IPADD && ASN1_STRING_length(gn->d.iPAddress) == 4) {
			const unsigned char *a = ASN1_STRING_get0_data(gn->d.iPAddress);
			snprintf(one, sizeof(one), "%u.%u.%u.%u", a[0], a[1], a[2], a[3]);
		} else if (gn->type == GEN_IPADD)
			snprintf(one, sizeof(one), "an IPv6 address");
		if (one[0] != '\0')
			used += (size_t)snprintf(buf + used, len - used, "%s%s", used ? ", " : "", one);
	}
	GENERAL_NAMES_free(sans);
	if (buf[0] == '\0')
		snprintf(buf, len, "no DNS or IP name");
}

const char *
tls_failure(struct bufferevent *bev, char *buf, size_t len)
{
	SSL *ssl = bufferevent_openssl_get_ssl(bev);
	long vr = ssl != NULL ? SSL_get_verify_result(ssl) : X509_V_OK;
	unsigned long e, first = 0;

	/* This connection's errors only: libevent queues them per bufferevent;
	 * the thread's queue is emptied too so that nothing carries over. */
	while ((e = bufferevent_get_openssl_error(bev)) != 0)
		if (first == 0)
			first = e;
	ERR_clear_error();
	if (vr == X509_V_ERR_HOSTNAME_MISMATCH || vr == X509_V_ERR_IP_ADDRESS_MISMATCH) {
		const char *names = SSL_get_ex_data(ssl, tls_names_idx);
		snprintf(buf, len, "%s mismatch: cert is for %s",
		    vr == X509_V_ERR_HOSTNAME_MISMATCH ? "hostname" : "IP address",
		    names != NULL ? names : "other names");
	} else if (vr != X509_V_OK)
		snprintf(buf, len, "%s", X509_verify_cert_error_string(vr));
	else if (first != 0 && ERR_reason_error_string(first) != NULL)
		snprintf(buf, len, "handshake failed: %s", ERR_reason_error_string(first));
	else
		snprintf(buf, len, "handshake failed: connection closed by the server");
	return buf;
}

void
tls_conn_closing(struct bufferevent *bev)
{
	SSL *ssl = bufferevent_openssl_get_ssl(bev);

	/* Freed without SSL_shutdown(), OpenSSL takes the session for a bad
	 * one and marks it not resumable, and with it the copy kept on the
	 * origin. Nothing is wrong with it: we just do not wait for close_notify. */
	if (ssl != NULL && SSL_is_init_finished(ssl))
		SSL_set_shutdown(ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
}
