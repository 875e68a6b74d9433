/* upstream.h: one upstream request's life, from a connection to its result:
 * resolve, connect, TLS, send, read the head and body, and the one funnel
 * that decides, at the end of every attempt, between a result, a redirect,
 * a retry and a retry on a fresh connection.
 *
 * A request does not know who queues it: it reports to its owner through
 * the callbacks it was made with. */
#ifndef FANOUTD_UPSTREAM_H
#define FANOUTD_UPSTREAM_H

#include "report.h"
#include "spec.h"

struct event_base;
struct conn;

struct ureq;	/* one upstream request */

struct upstream_owner {
	/* r wants to go again, to u's origin (a retry or a redirect's hop);
	 * fresh: not on a kept-alive connection. The owner calls
	 * upstream_start when a connection is there. */
	void (*requeue)(void *arg, const struct url *u, int fresh);
	/* r has let go of its connection. */
	void (*released)(void *arg);
	/* A final response head came from r's origin: returns whether the
	 * origin is paused for it, in which case a retry waits for the pause
	 * in its owner's queue instead of sleeping Retry-After itself. */
	int (*response)(void *arg, int status, int64_t retry_after_us);
	/* How long r has been held back by rate limits and pauses so far:
	 * queue time, which timeout_ms does not count. */
	uint64_t (*throttled)(void *arg);
	/* r is finished; rep is final. The owner calls upstream_free when done
	 * with it. */
	void (*done)(void *arg, const struct report *rep);
};

void upstream_init(struct event_base *base);
/* Frees what waits for the next loop turn; the loop has stopped. */
void upstream_shutdown(void);
/* Gives back the memory kept for the next requests (the daemon is idle). */
void upstream_trim(void);

/* A request for spec (whose url it takes over), index `index` of a batch
 * with options o (which outlive it). */
struct ureq *upstream_new(const struct upstream_owner *owner, void *arg,
    const struct bopts *o, size_t index, struct reqspec *spec);

/* r may go, on c (kept-alive when reused): its first attempt, or the one
 * it asked for with requeue. */
void upstream_start(struct ureq *r, struct conn *c, int reused);

/* Ends r now with kind (deadline, cancelled) wherever it is, queued or in
 * any state of flight; done is called before this returns. */
void upstream_abort(struct ureq *r, enum kind kind, const char *msg);

/* hold: the owner cannot pass bodies on now (its caller is not reading):
 * r stops opening its HTTP/2 stream's window, so the server stops sending
 * after one window; when let go, the window opens by what was held. */
void upstream_hold(struct ureq *r, int hold);

/* A finished r is freed on the next loop turn, so that no code still on
 * the stack under done finds it gone. */
void upstream_free(struct ureq *r);

#endif
