/* batch.c: see batch.h.
 *
 * Lifetime: a batch is freed, on a later loop turn, once all its requests
 * have their results and either its document has been sent whole
 * (on_complete) or its caller has gone (the connection's close callback).
 * Results are written as they come; with order "input" a result that comes
 * early waits, encoded, in its slot, and counts as unsent output. When the
 * unsent output passes output_buffer_bytes the batch stops dispatching new
 * requests until the caller has read it. */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <openssl/ssl.h>

#include "batch.h"
#include "conf.h"
#include "intake.h"
#include "jout.h"
#include "log.h"
#include "metrics.h"
#include "report.h"
#include "result.h"
#include "sched.h"
#include "upstream.h"

#define BATCH_INTAKE_FIRST 64	/* elements checked before the first dispatch */
#define BATCH_INTAKE_SLICE 512	/* elements checked per later loop turn */
#define BATCH_WRITE_MAX (256 * 1024)	/* bytes written to a caller per write call */

struct batch {
	unsigned id;
	struct evhttp_request *req;	/* NULL once the caller is gone */
	struct evhttp_connection *evcon;
	struct event *closewatch;	/* sees the caller hang up while we wait */
	struct conf *conf;
	json_t *doc;
	const json_t *reqs;		/* doc's "requests" */
	struct bopts opts;
	struct sched_batch *sb;
	TAILQ_HEAD(, breq) live;	/* dispatched requests without a result yet */
	size_t n, done, responses, errors;
	uint64_t t_start;
	struct event *deadline;
	struct evbuffer *scratch;
	struct evbuffer *out;		/* results of this loop turn, sent as one chunk */
	struct event *flush;
	struct evbuffer **slots;	/* order "input": results waiting their turn */
	size_t next_out;
	size_t slot_bytes;
	int wrote_first;
	size_t next_intake;		/* elements checked so far */
	struct event *intake;		/* checks the next slice on a later turn */
	int intake_done;
	int complete;			/* 0 once cut short */
	int paused;			/* dispatching stopped: the caller is slow */
	int hold;			/* bodies held: the caller is not reading */
	int finishing;			/* summary written */
	int released;			/* free scheduled */
	char caller[64];
	TAILQ_ENTRY(batch) link;
};

/* One dispatched request: the scheduler's handle and the upstream request,
 * from dispatch to result. */
struct breq {
	struct batch *b;
	struct sched_req *sr;
	struct ureq *u;
	TAILQ_ENTRY(breq) link;		/* b->live */
};

static struct {
	struct event_base *base;
	TAILQ_HEAD(, batch) all;
	unsigned count;
	unsigned next_id;
	void (*idle)(void);
} bs;

void
batch_init(struct event_base *base, void (*idle)(void))
{
	bs.base = base;
	bs.idle = idle;
	TAILQ_INIT(&bs.all);
	/* Bodies pass through evbuffer chunks of up to 128 KiB. By default glibc
	 * serves those with mmap, or gives the heap top back on free, so every
	 * body faulted its pages in afresh: a quarter of the daemon's CPU on a
	 * batch of 64 KiB bodies. Freed memory is kept while batches run and
	 * given back all at once when the daemon goes idle (batch_free). */
	mallopt(M_MMAP_THRESHOLD, 4 << 20);
	mallopt(M_TRIM_THRESHOLD, 32 << 20);
}

unsigned
batch_count(void)
{
	return bs.count;
}

static void
batch_free(evutil_socket_t fd, short what, void *arg)
{
	struct batch *b = arg;

	(void)fd;
	(void)what;
	TAILQ_REMOVE(&bs.all, b, link);
	bs.count--;
	metrics.batches_in_flight--;
	sched_batch_free(b->sb);
	if (b->slots != NULL)
		for (size_t i = 0; i < b->n; i++)
			if (b->slots[i] != NULL)
				evbuffer_free(b->slots[i]);
	free(b->slots);
	if (b->deadline != NULL)
		event_free(b->deadline);
	event_free(b->intake);
	evbuffer_free(b->scratch);
	evbuffer_free(b->out);
	event_free(b->flush);
	json_decref(b->doc);
	SSL_CTX_free(b->opts.tls);
	conf_unref(b->conf);
	free(b);
	if (bs.count == 0) {
		/* glibc keeps freed heap for reuse; an idle daemon gives it back,
		 * so RSS returns near its starting value after a big batch. */
		upstream_trim();
		malloc_trim(0);
		if (bs.idle != NULL)
			bs.idle();
	}
}

/* Lets go of the caller's connection and schedules the free. Only called
 * when every request has its result. */
static void
batch_release(struct batch *b)
{
	if (b->released)
		return;
	b->released = 1;
	if (b->closewatch != NULL) {
		event_free(b->closewatch);
		b->closewatch = NULL;
	}
	if (b->evcon != NULL)
		evhttp_connection_set_closecb(b->evcon, NULL, NULL);
	b->evcon = NULL;
	b->req = NULL;
	event_base_once(bs.base, -1, EV_TIMEOUT, batch_free, b, NULL);
}

static size_t
batch_unsent(struct batch *b)
{
	size_t n = b->slot_bytes + evbuffer_get_length(b->out);

	if (b->evcon != NULL)
		n += evbuffer_get_length(bufferevent_get_output(
		    evhttp_connection_get_bufferevent(b->evcon)));
	return n;
}

/* Pauses or resumes dispatching by the output the caller has not read. */
static void
batch_pressure(struct batch *b)
{
	size_t unsent = batch_unsent(b);
	int paused = unsent > b->conf->output_buffer_bytes;
	/* Results waiting for their turn (order "input") do not hold bodies
	 * back: the one they wait for may be among those held. */
	int hold = unsent - b->slot_bytes > b->conf->output_buffer_bytes;

	if (paused != b->paused)
		log_debug("batch %u: %s", b->id, paused ? "caller is slow: pausing" : "resuming");
	b->paused = paused;
	if (hold != b->hold) {
		struct breq *q;

		b->hold = hold;
		TAILQ_FOREACH(q, &b->live, link)
			upstream_hold(q->u, hold);
	}
	sched_set_output(b->sb, paused, b->opts.order_input ? b->next_out : SIZE_MAX);
}

static void
batch_drained(struct evhttp_connection *evcon, void *arg)
{
	(void)evcon;
	batch_pressure(arg);
}

static void
batch_send(struct batch *b, struct evbuffer *buf)
{
	metrics.bytes_out += evbuffer_get_length(buf);
	evhttp_send_reply_chunk_with_cb(b->req, buf, batch_drained, b);
}

/* Queues one encoded result, with the separator the format wants. The
 * results of one loop turn go out as one chunk: a chunk per result cost a
 * chunk header (printf'd by evhttp) and a write callback each. */
static void
batch_emit(struct batch *b, struct evbuffer *enc)
{
	if (!b->opts.ndjson && b->wrote_first)
		evbuffer_add(b->out, ",\n", 2);
	evbuffer_add_buffer(b->out, enc);
	if (b->opts.ndjson)
		evbuffer_add(b->out, "\n", 1);
	b->wrote_first = 1;
	/* The first result while the caller's connection has nothing queued
	 * goes out at once; the rest of the turn's results follow in one chunk. */
	if (b->evcon != NULL && evbuffer_get_length(bufferevent_get_output(
	    evhttp_connection_get_bufferevent(b->evcon))) == 0)
		batch_send(b, b->out);
	else
		event_active(b->flush, 0, 0);
}

static void
batch_flush(evutil_socket_t fd, short what, void *arg)
{
	struct batch *b = arg;

	(void)fd;
	(void)what;
	if (b->req != NULL && evbuffer_get_length(b->out) > 0)
		batch_send(b, b->out);
}

static void
batch_summary(struct batch *b)
{
	struct evbuffer *out = b->out;
	double elapsed = (double)(now_us() - b->t_start) / 1000.0;

	/* NDJSON: a last line of its own; JSON: the document's last member. */
	evbuffer_add_printf(out, "%s\"summary\":{\"total\":%zu,\"responses\":%zu,\"errors\":%zu,"
	    "\"complete\":%s,\"elapsed_ms\":%.1f}}\n",
	    b->opts.ndjson ? "{" : "\n],\n", b->n, b->responses, b->errors,
	    b->complete ? "true" : "false", elapsed);
	batch_send(b, out);
}

static void batch_finish(struct batch *b);
static void batch_result_error(struct batch *b, size_t index, uint64_t throttle_us,
    enum kind kind, const char *msg);

/* Request r's result: written (or kept for its turn) if the caller is
 * there. */
static void
batch_result(struct batch *b, const struct report *r)
{
	b->done++;
	if (r->kind == KIND_NONE)
		b->responses++;
	else
		b->errors++;
	if (b->req != NULL) {
		const json_t *elem = json_array_get(b->reqs, r->index);
		if (b->opts.order_input && r->index != b->next_out) {
			b->slots[r->index] = evbuffer_new();
			result_write(b->slots[r->index], r, &b->opts, elem, b->t_start);
			b->slot_bytes += evbuffer_get_length(b->slots[r->index]);
		} else {
			result_write(b->scratch, r, &b->opts, elem, b->t_start);
			batch_emit(b, b->scratch);
			b->next_out++;
			while (b->opts.order_input && b->next_out < b->n &&
			    b->slots[b->next_out] != NULL) {
				struct evbuffer *s = b->slots[b->next_out];
				b->slot_bytes -= evbuffer_get_length(s);
				batch_emit(b, s);
				evbuffer_free(s);
				b->slots[b->next_out++] = NULL;
			}
		}
	}
	if (b->intake_done && b->done == b->n)
		batch_finish(b);
	else if (b->req != NULL)
		batch_pressure(b);
}

static void
batch_finish(struct batch *b)
{
	double elapsed = (double)(now_us() - b->t_start) / 1000.0;

	if (b->finishing)
		return;
	b->finishing = 1;
	if (b->deadline != NULL)
		evtimer_del(b->deadline);
	log_info("batch %u: caller %s, %zu requests, %zu errors, %s, %.1f ms", b->id, b->caller,
	    b->n, b->errors, b->req == NULL ? "caller gone" : b->complete ? "complete" : "cut short",
	    elapsed);
	if (b->req == NULL) {
		batch_release(b);
		return;
	}
	batch_summary(b);
	evhttp_send_reply_end(b->req);
}

/* Ends every request still without a result with kind; each result is
 * written (if the caller is there) as for any other end. */
static void
batch_abort(struct batch *b, enum kind kind, const char *why)
{
	struct breq *q;
	uint64_t throttle;
	size_t i;

	b->complete = 0;
	while ((q = TAILQ_FIRST(&b->live)) != NULL)
		upstream_abort(q->u, kind, why);	/* its done takes it off the list */
	while (sched_pop_new(b->sb, &i, &throttle))
		batch_result_error(b, i, throttle, kind, why);
	while (!b->intake_done && b->next_intake < b->n)
		batch_result_error(b, b->next_intake++, 0, kind, why);
	b->intake_done = 1;
	if (b->done == b->n)
		batch_finish(b);
}

static void
batch_deadline(evutil_socket_t fd, short what, void *arg)
{
	struct batch *b = arg;
	char why[64];

	(void)fd;
	(void)what;
	snprintf(why, sizeof(why), "batch deadline of %u ms reached", b->opts.deadline_ms);
	batch_abort(b, KIND_DEADLINE, why);
}

void
batch_cancel_all(const char *why)
{
	struct batch *b;

	TAILQ_FOREACH(b, &bs.all, link)
		batch_abort(b, KIND_CANCELLED, why);
}

/* The caller's connection is going away: stop writing, cancel the rest. */
static void
batch_caller_gone(struct evhttp_connection *evcon, void *arg)
{
	struct batch *b = arg;

	(void)evcon;
	if (b->finishing) {
		batch_release(b);
		return;
	}
	log_debug("batch %u: caller went away", b->id);
	/* A failed write detaches the request from its connection before the
	 * connection is freed; libevent then leaves the request to us. */
	if (b->req != NULL && evhttp_request_get_connection(b->req) == NULL)
		evhttp_request_free(b->req);
	b->req = NULL;
	b->evcon = NULL;
	if (b->closewatch != NULL) {
		event_free(b->closewatch);
		b->closewatch = NULL;
	}
	batch_abort(b, KIND_CANCELLED, "the caller went away");
}

/* The caller hung up while nothing was being written to it: evhttp reads
 * nothing after the request, so it would only notice at the next write. */
static void
batch_closewatch(evutil_socket_t fd, short what, void *arg)
{
	struct batch *b = arg;

	(void)fd;
	(void)what;
	if (b->evcon != NULL)
		evhttp_connection_free(b->evcon);	/* calls batch_caller_gone */
}

static void
batch_sent(struct evhttp_request *req, void *arg)
{
	(void)req;
	batch_release(arg);
}

static int
batch_wants_ndjson(struct evhttp_request *req)
{
	const char *accept = evhttp_find_header(evhttp_request_get_input_headers(req), "Accept");
	const char *q = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req));
	struct evkeyvalq params;
	int nd = accept != NULL && strstr(accept, "application/x-ndjson") != NULL;

	if (q != NULL && evhttp_parse_query_str(q, &params) == 0) {
		const char *f = evhttp_find_header(&params, "format");
		if (f != NULL)
			nd = strcmp(f, "ndjson") == 0;
		evhttp_clear_headers(&params);
	}
	return nd;
}

/* Parses and checks the document: 0 with *docp, or the status to refuse it
 * with and why. */
static int
batch_document(struct evhttp_request *req, const struct conf *c, struct bopts *o,
    json_t **docp, char *why, size_t whylen)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	size_t len = evbuffer_get_length(in);
	json_error_t err;
	json_t *doc;
	int status;

	doc = json_loadb(len ? (const char *)evbuffer_pullup(in, -1) : "", len, JSON_ALLOW_NUL, &err);
	if (doc == NULL) {
		snprintf(why, whylen, "not JSON: %s (line %d, column %d)", err.text, err.line,
		    err.column);
		return 400;
	}
	evbuffer_drain(in, len);
	status = intake_document(doc, c, o, why, whylen);
	if (status != 0) {
		json_decref(doc);
		return status;
	}
	*docp = doc;
	return 0;
}

static void
batch_caller_name(struct batch *b)
{
	char *addr = NULL;
	ev_uint16_t port = 0;

	evhttp_connection_get_peer(b->evcon, &addr, &port);
	if (addr == NULL || *addr == '\0')
		snprintf(b->caller, sizeof(b->caller), "unix");
	else
		snprintf(b->caller, sizeof(b->caller), "%s:%u", addr, port);
}

static void
batch_start_stream(struct batch *b)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(b->req);
	struct bufferevent *bev = evhttp_connection_get_bufferevent(b->evcon);

	evhttp_add_header(h, "Content-Type", b->opts.ndjson ? "application/x-ndjson" :
	    "application/json");
	char id[16];

	snprintf(id, sizeof(id), "%u", b->id);
	evhttp_add_header(h, "X-Fanoutd-Batch", id);	/* the id in the daemon's log */
	evhttp_send_reply_start(b->req, 200, "OK");
	/* Results can be megabytes; libevent 2.1 writes 16 KiB a call by default. */
	bufferevent_set_max_single_write(bev, BATCH_WRITE_MAX);
	/* A result is sent when it is ready: Nagle would hold a small one (the
	 * closing chunk above all) until the caller's delayed ACK, 40 ms later.
	 * Fails harmlessly on a Unix socket. */
	int one = 1;
	setsockopt(bufferevent_getfd(bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	evhttp_connection_set_closecb(b->evcon, batch_caller_gone, b);
	evhttp_request_set_on_complete_cb(b->req, batch_sent, b);
	if (event_base_get_features(bs.base) & EV_FEATURE_EARLY_CLOSE) {
		b->closewatch = event_new(bs.base, bufferevent_getfd(bev), EV_CLOSED | EV_PERSIST,
		    batch_closewatch, b);
		event_add(b->closewatch, NULL);
	}
	if (!b->opts.ndjson) {
		JOUT_LIT(b->out, "{\"results\":[\n");
		batch_send(b, b->out);
	}
}

/* A result for request index that never reached an upstream. */
static void
batch_result_error(struct batch *b, size_t index, uint64_t throttle_us, enum kind kind,
    const char *msg)
{
	struct report r;

	memset(&r, 0, sizeof(r));
	r.index = index;
	r.kind = kind;
	snprintf(r.msg, sizeof(r.msg), "%s", msg);
	r.t_end = now_us();
	r.throttle_us = throttle_us;
	metrics.requests[kind]++;
	batch_result(b, &r);
}

/*
 * A dispatched request reports through these; each is q's.
 */
static void
batch_req_requeue(void *arg, const struct url *u, int fresh)
{
	struct breq *q = arg;

	sched_requeue(q->sr, u, fresh);
}

static void
batch_req_released(void *arg)
{
	struct breq *q = arg;

	sched_release(q->sr);
}

static void
batch_req_done(void *arg, const struct report *rep)
{
	struct breq *q = arg;
	struct batch *b = q->b;

	TAILQ_REMOVE(&b->live, q, link);
	sched_finished(q->sr);
	batch_result(b, rep);	/* may end the batch, which is freed a turn later */
	upstream_free(q->u);	/* and with it rep */
	free(q);
}

static int
batch_req_response(void *arg, int status, int64_t retry_after_us)
{
	struct breq *q = arg;

	return sched_response(q->sr, status, retry_after_us);
}

static uint64_t
batch_req_throttled(void *arg)
{
	struct breq *q = arg;

	return sched_req_throttled_us(q->sr);
}

static const struct upstream_owner batch_req_owner = {
	.requeue = batch_req_requeue,
	.released = batch_req_released,
	.response = batch_req_response,
	.throttled = batch_req_throttled,
	.done = batch_req_done,
};

/* From the scheduler: sr may go on c. The first time, its request is made
 * from the document: intake queued it as an index only. */
static void
batch_dispatch(void *owner, struct sched_req *sr, struct conn *c, int reused)
{
	struct batch *b = owner;
	struct breq *q = sched_req_data(sr);

	if (q == NULL) {
		size_t index = sched_req_index(sr);
		struct reqspec spec;
		char why[160];

		if (intake_request(json_array_get(b->reqs, index), &b->opts, &spec, why,
		    sizeof(why)) < 0)
			fatal("batch %u: request %zu passed intake, then failed it: %s", b->id,
			    index, why);
		q = xcalloc(1, sizeof(*q));
		q->b = b;
		q->sr = sr;
		q->u = upstream_new(&batch_req_owner, q, &b->opts, index, &spec);
		upstream_hold(q->u, b->hold);
		sched_req_set_data(sr, q);
		TAILQ_INSERT_TAIL(&b->live, q, link);
	}
	upstream_start(q->u, c, reused);
}

/* Checks up to BATCH_INTAKE_SLICE elements: each is queued as an index for
 * its origin, or gets its invalid_request result now. A big batch is taken
 * in slices, one a loop turn, so its first requests go out (and its first
 * results come back) while the rest is still being checked. */
static void
batch_intake_slice(struct batch *b)
{
	const json_t *reqs = b->reqs;
	/* A short first slice: the first requests go out sooner. */
	size_t end = b->next_intake + (b->next_intake == 0 ? BATCH_INTAKE_FIRST : BATCH_INTAKE_SLICE);
	struct reqspec spec;
	char why[160];

	for (; b->next_intake < b->n && b->next_intake < end; b->next_intake++) {
		size_t i = b->next_intake;

		if (intake_request(json_array_get(reqs, i), &b->opts, &spec, why, sizeof(why)) < 0)
			batch_result_error(b, i, 0, KIND_INVALID_REQUEST, why);
		else
			sched_enqueue_new(b->sb, &spec.url, i);
		url_free(&spec.url);
	}
	if (b->next_intake < b->n) {
		/* A timer, not event_active(): an active event would run in this
		 * same loop turn, before any socket is looked at again. */
		static const struct timeval now = { 0, 0 };
		evtimer_add(b->intake, &now);
		return;
	}
	b->intake_done = 1;
	if (b->done == b->n)
		batch_finish(b);
}

static void
batch_intake_more(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	batch_intake_slice(arg);
}

int
batch_handle(struct evhttp_request *req, struct conf *c, SSL_CTX *tls, char *why, size_t whylen)
{
	struct batch *b;
	struct bopts o;
	json_t *doc;
	int status;

	if (bs.count >= c->max_batches) {
		snprintf(why, whylen, "too many batches in flight; retry later");
		return 503;
	}
	if ((status = batch_document(req, c, &o, &doc, why, whylen)) != 0)
		return status;
	b = xcalloc(1, sizeof(*b));
	b->id = ++bs.next_id;
	b->req = req;
	b->evcon = evhttp_request_get_connection(req);
	b->conf = conf_ref(c);
	b->doc = doc;
	b->opts = o;
	b->opts.ndjson = batch_wants_ndjson(req);
	SSL_CTX_up_ref(tls);
	b->opts.tls = tls;
	b->reqs = json_object_get(doc, "requests");
	b->n = json_array_size(b->reqs);
	b->t_start = now_us();
	b->complete = 1;
	b->scratch = evbuffer_new();
	b->out = evbuffer_new();
	b->flush = event_new(bs.base, -1, 0, batch_flush, b);
	TAILQ_INIT(&b->live);
	if (b->opts.order_input)
		b->slots = xcalloc(b->n, sizeof(*b->slots));
	batch_caller_name(b);
	b->sb = sched_batch_new(batch_dispatch, b, &(struct sched_limits){
		.concurrency = b->opts.concurrency,
		.per_host = b->opts.per_host,
		.mux = b->opts.http2,
		.rate = b->opts.rate_per_host,
		.burst = b->opts.rate_burst,
	});
	TAILQ_INSERT_TAIL(&bs.all, b, link);
	bs.count++;
	metrics.batches_total++;
	metrics.batches_in_flight++;
	b->intake = event_new(bs.base, -1, 0, batch_intake_more, b);
	batch_start_stream(b);
	if (b->opts.deadline_ms > 0) {
		struct timeval tv = { b->opts.deadline_ms / 1000, (b->opts.deadline_ms % 1000) * 1000 };
		b->deadline = evtimer_new(bs.base, batch_deadline, b);
		evtimer_add(b->deadline, &tv);
	}
	sched_batch_start(b->sb);
	batch_intake_slice(b);
	if (!b->finishing)
		batch_pressure(b);
	return 0;
}
