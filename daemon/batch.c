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
#include <strings.h>
#include <sys/queue.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <openssl/ssl.h>

#include "batch.h"
#include "bring.h"
#include "conf.h"
#include "intake.h"
#include "jout.h"
#include "log.h"
#include "metrics.h"
#include "report.h"
#include "result.h"
#include "sched.h"
#include "server.h"
#include "upstream.h"

#define BATCH_INTAKE_FIRST 64	/* elements checked before the first dispatch */
#define BATCH_INTAKE_SLICE 512	/* elements checked per later loop turn */
#define BATCH_STREAM_AHEAD 1024	/* a streamed batch's requests read and not yet dispatched,
				 * at most (or 2 x concurrency, if more) */

struct batch {
	unsigned id;
	struct srv_req *req;		/* NULL once the caller is gone */
	struct conf *conf;
	json_t *doc;
	const json_t *reqs;		/* doc's "requests" */
	int stream;			/* NDJSON lines in: elements in elems, not reqs */
	struct bring elems;		/* stream: each request's element until its result */
	size_t queued;			/* stream: read and not yet dispatched */
	int upload_paused;		/* stream: we stopped reading the upload */
	int started;			/* the answer has begun */
	struct bopts opts;
	struct sched_batch *sb;
	TAILQ_HEAD(, breq) live;	/* dispatched requests without a result yet */
	TAILQ_HEAD(, breq) ready;	/* finished while held: results not yet encoded */
	int flushing;			/* batch_flush_ready is under way */
	size_t n, done, responses, errors;
	uint64_t t_start;
	struct event *deadline;
	struct evbuffer *scratch;
	struct evbuffer *out;		/* results of this loop turn, sent as one chunk */
	struct event *flush;
	struct bring slots;		/* order "input": results waiting their turn */
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
	const struct report *rep;	/* on b->ready: u's, final */
	TAILQ_ENTRY(breq) link;		/* b->live or b->ready */
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
batch_free_json(void *p)
{
	json_decref(p);
}

static void
batch_free_evbuffer(void *p)
{
	evbuffer_free(p);
}

/* Request index's element: the document's, or a streamed line's. */
static const json_t *
batch_elem(const struct batch *b, size_t index)
{
	return b->stream ? bring_get(&b->elems, index) : json_array_get(b->reqs, index);
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
	if (b->sb != NULL)
		sched_batch_free(b->sb);
	bring_free(&b->slots, batch_free_evbuffer);
	bring_free(&b->elems, batch_free_json);
	if (b->deadline != NULL)
		event_free(b->deadline);
	if (b->intake != NULL)
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

/* Lets go of the caller's request and schedules the free. Only called
 * when every request has its result and the answer is over. */
static void
batch_release(struct batch *b)
{
	if (b->released)
		return;
	b->released = 1;
	b->req = NULL;
	event_base_once(bs.base, -1, EV_TIMEOUT, batch_free, b, NULL);
}

static size_t
batch_unsent(struct batch *b)
{
	size_t n = b->slot_bytes + evbuffer_get_length(b->out);

	if (b->req != NULL)
		n += srv_stream_unsent(b->req);
	return n;
}

static void batch_flush_ready(struct batch *b);

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
		if (!hold)
			batch_flush_ready(b);
	}
	sched_set_output(b->sb, paused, b->opts.order_input ? b->next_out : SIZE_MAX);
	if (b->upload_paused && !paused)
		event_active(b->intake, 0, 0);	/* the caller reads: the upload may go on */
}

static void
batch_drained(void *arg)
{
	struct batch *b = arg;

	if (b->req != NULL && b->started && !b->finishing)
		batch_pressure(b);
}

static void
batch_send(struct batch *b, struct evbuffer *buf)
{
	metrics.bytes_out += evbuffer_get_length(buf);
	srv_stream_write(b->req, buf);
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
	if (b->req != NULL && srv_stream_unsent(b->req) == 0)
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
static void batch_stream_pause(struct batch *b, int paused);
static size_t batch_stream_ahead(const struct batch *b);
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
		const json_t *elem = batch_elem(b, r->index);
		if (b->opts.order_input && r->index != b->next_out) {
			struct evbuffer *slot = evbuffer_new();
			result_write(slot, r, &b->opts, elem, b->t_start);
			b->slot_bytes += evbuffer_get_length(slot);
			bring_slide(&b->slots, b->next_out);	/* all below are out */
			bring_set(&b->slots, r->index, slot);
		} else {
			result_write(b->scratch, r, &b->opts, elem, b->t_start);
			batch_emit(b, b->scratch);
			b->next_out++;
			struct evbuffer *slot;
			while (b->opts.order_input &&
			    (slot = bring_get(&b->slots, b->next_out)) != NULL) {
				b->slot_bytes -= evbuffer_get_length(slot);
				batch_emit(b, slot);
				evbuffer_free(slot);
				bring_clear(&b->slots, b->next_out, b->next_out + 1);
				b->next_out++;
			}
		}
	}
	if (b->stream) {	/* its element is not needed any more */
		json_decref(bring_get(&b->elems, r->index));
		bring_clear(&b->elems, r->index, b->n);
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
	srv_stream_end(b->req);	/* closed comes once it is written */
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
	while (sched_pop_new(b->sb, &i, &throttle)) {
		b->queued -= b->stream;
		batch_result_error(b, i, throttle, kind, why);
	}
	while (!b->stream && !b->intake_done && b->next_intake < b->n)
		batch_result_error(b, b->next_intake++, 0, kind, why);
	if (b->stream && b->req != NULL)
		batch_stream_pause(b, 1);	/* the rest of the upload is not read */
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

static void batch_begin_defaults(struct batch *b);

void
batch_cancel_all(const char *why)
{
	struct batch *b;

	TAILQ_FOREACH(b, &bs.all, link) {
		if (!b->started)	/* a streamed batch before its first line: an
					 * empty answer, cut short, sent whole */
			batch_begin_defaults(b);
		batch_abort(b, KIND_CANCELLED, why);
	}
}

/* The server is done with the caller's request: its answer was written
 * whole, or the caller went away before; the rest is cancelled. */
static void
batch_closed(void *arg)
{
	struct batch *b = arg;

	if (b->finishing) {
		batch_release(b);
		return;
	}
	log_debug("batch %u: caller went away", b->id);
	b->req = NULL;
	batch_flush_ready(b);
	batch_abort(b, KIND_CANCELLED, "the caller went away");
}

void
batch_refuse(struct srv_req *req, int status, const char *why)
{
	switch (status) {
	case 503:
		metrics.batches_rejected[METRICS_REJECT_OVERLOADED]++;
		srv_error(req, status, "overloaded", why, "Retry-After: 1\r\n");
		break;
	case 413:
		metrics.batches_rejected[METRICS_REJECT_TOO_LARGE]++;
		srv_error(req, status, "too_large", why, NULL);
		break;
	default:
		metrics.batches_rejected[METRICS_REJECT_BAD_REQUEST]++;
		srv_error(req, status, "bad_request", why, NULL);
		break;
	}
}

static const struct srv_handler batch_handler = {
	.drained = batch_drained,
	.closed = batch_closed,
};

static int
batch_wants_ndjson(struct srv_req *req)
{
	const char *accept = srv_req_header(req, "accept");
	const char *q = srv_req_query(req);
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
batch_document(struct srv_req *req, const struct conf *c, struct bopts *o,
    json_t **docp, char *why, size_t whylen)
{
	struct evbuffer *in = srv_req_input(req);
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

static const struct srv_handler batch_stream_handler;

static void
batch_start_stream(struct batch *b)
{
	char id[48];

	/* The id in the daemon's log. */
	snprintf(id, sizeof(id), "X-Fanoutd-Batch: %u\r\n", b->id);
	/* A streamed batch's taker of the upload is the same handler. */
	srv_stream_begin(b->req, 200, b->opts.ndjson ? "application/x-ndjson" :
	    "application/json", id, b->stream ? &batch_stream_handler : &batch_handler, b);
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

/* q's result is written (or counted, the caller gone) and q freed. */
static void
batch_req_result(struct breq *q, const struct report *rep)
{
	batch_result(q->b, rep);	/* may end the batch, which is freed a turn later */
	upstream_free(q->u);		/* and with it rep */
	free(q);
}

static void
batch_req_done(void *arg, const struct report *rep)
{
	struct breq *q = arg;
	struct batch *b = q->b;

	TAILQ_REMOVE(&b->live, q, link);
	sched_finished(q->sr);
	q->sr = NULL;
	if (b->hold && b->req != NULL) {
		/* The caller is not reading: encoded (escaping can make it six
		 * times its size), this result would be what grows. */
		q->rep = rep;
		TAILQ_INSERT_TAIL(&b->ready, q, link);
		return;
	}
	batch_req_result(q, rep);
}

/* Encodes the results that finished while held, as long as the caller
 * reads (or all of them, counted only, once it is gone). */
static void
batch_flush_ready(struct batch *b)
{
	struct breq *q;

	if (b->flushing)
		return;	/* the loop below is under way, further up the stack */
	b->flushing = 1;
	while ((!b->hold || b->req == NULL) && (q = TAILQ_FIRST(&b->ready)) != NULL) {
		TAILQ_REMOVE(&b->ready, q, link);
		batch_req_result(q, q->rep);
	}
	b->flushing = 0;
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

		if (b->stream && b->queued-- == batch_stream_ahead(b) / 2)
			event_active(b->intake, 0, 0);	/* room to read more lines */
		if (intake_request(batch_elem(b, index), &b->opts, &spec, why, sizeof(why)) < 0)
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

static void batch_stream_read(struct batch *b);

static void
batch_intake_more(evutil_socket_t fd, short what, void *arg)
{
	struct batch *b = arg;

	(void)fd;
	(void)what;
	if (b->stream)
		batch_stream_read(b);
	else
		batch_intake_slice(b);
}

/* A batch for req, counted against max_batches, not yet started. */
static struct batch *
batch_new(struct srv_req *req, struct conf *c, SSL_CTX *tls)
{
	struct batch *b = xcalloc(1, sizeof(*b));

	b->id = ++bs.next_id;
	b->req = req;
	b->conf = conf_ref(c);
	SSL_CTX_up_ref(tls);
	b->opts.tls = tls;
	b->complete = 1;
	b->scratch = evbuffer_new();
	b->out = evbuffer_new();
	b->flush = event_new(bs.base, -1, 0, batch_flush, b);
	b->intake = event_new(bs.base, -1, 0, batch_intake_more, b);
	TAILQ_INIT(&b->live);
	TAILQ_INIT(&b->ready);
	snprintf(b->caller, sizeof(b->caller), "%s", srv_req_peer(req));
	TAILQ_INSERT_TAIL(&bs.all, b, link);
	bs.count++;
	metrics.batches_in_flight++;
	return b;
}

/* The options are settled (in b->opts, o): the answer begins and requests
 * may go. */
static void
batch_begin(struct batch *b, const struct bopts *o)
{
	SSL_CTX *tls = b->opts.tls;

	b->opts = *o;
	b->opts.tls = tls;
	b->opts.ndjson = batch_wants_ndjson(b->req);
	b->t_start = now_us();
	b->started = 1;
	b->sb = sched_batch_new(batch_dispatch, b, &(struct sched_limits){
		.concurrency = b->opts.concurrency,
		.per_host = b->opts.per_host,
		.mux = b->opts.http2,
		.rate = b->opts.rate_per_host,
		.burst = b->opts.rate_burst,
	});
	metrics.batches_total++;
	batch_start_stream(b);
	if (b->opts.deadline_ms > 0) {
		struct timeval tv = { b->opts.deadline_ms / 1000, (b->opts.deadline_ms % 1000) * 1000 };
		b->deadline = evtimer_new(bs.base, batch_deadline, b);
		evtimer_add(b->deadline, &tv);
	}
	sched_batch_start(b->sb);
}

/* Begins a streamed batch that has no options line (nor any line). */
static void
batch_begin_defaults(struct batch *b)
{
	struct bopts o;
	char why[8];

	intake_stream_first(NULL, b->conf, &o, why, sizeof(why));
	batch_begin(b, &o);
}

int
batch_handle(struct srv_req *req, struct conf *c, SSL_CTX *tls, char *why, size_t whylen)
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
	b = batch_new(req, c, tls);
	b->doc = doc;
	b->reqs = json_object_get(doc, "requests");
	b->n = json_array_size(b->reqs);
	batch_begin(b, &o);
	batch_intake_slice(b);
	if (!b->finishing)
		batch_pressure(b);
	return 0;
}

int
batch_is_stream(const struct srv_req *req)
{
	const char *type = srv_req_header(req, "content-type");

	return type != NULL && strncasecmp(type, "application/x-ndjson", 20) == 0 &&
	    (type[20] == '\0' || type[20] == ';' || type[20] == ' ');
}

/*
 * Streamed batches: NDJSON lines in, each request dispatched as its line
 * comes. The upload is read only while the batch can take more: fewer than
 * batch_stream_ahead() requests waiting for dispatch, and a caller that
 * reads its results.
 */

static size_t
batch_stream_ahead(const struct batch *b)
{
	size_t n = 2 * (size_t)b->opts.concurrency;

	return n > BATCH_STREAM_AHEAD ? n : BATCH_STREAM_AHEAD;
}

/* A request line: queued for dispatch, or its invalid_request result. */
static void
batch_stream_request(struct batch *b, json_t *elem, const char *err)
{
	size_t i = b->n++;
	struct reqspec spec;
	char why[160];

	memset(&spec, 0, sizeof(spec));
	if (elem == NULL) {
		snprintf(why, sizeof(why), "not JSON: %s", err);
		batch_result_error(b, i, 0, KIND_INVALID_REQUEST, why);
		return;
	}
	bring_set(&b->elems, i, elem);
	if (!json_is_string(elem) && !json_is_object(elem))
		batch_result_error(b, i, 0, KIND_INVALID_REQUEST, "must be a string or an object");
	else if (intake_request(elem, &b->opts, &spec, why, sizeof(why)) < 0)
		batch_result_error(b, i, 0, KIND_INVALID_REQUEST, why);
	else {
		sched_enqueue_new(b->sb, &spec.url, i);
		b->queued++;
	}
	url_free(&spec.url);
}

/* The batch's first line: its options, or its first request. Returns -1
 * when it refused the batch (and freed it). */
static int
batch_stream_first(struct batch *b, json_t *line, const char *err)
{
	struct bopts o;
	char why[256];
	int rc = intake_stream_first(line, b->conf, &o, why, sizeof(why));

	if (rc < 0) {
		json_decref(line);
		batch_refuse(b->req, 400, why);
		b->req = NULL;
		batch_free(-1, 0, b);
		return -1;
	}
	batch_begin(b, &o);
	if (rc == 1)
		b->doc = line;	/* b->opts.headers points into it */
	else
		batch_stream_request(b, line, err);
	return 0;
}

/* Takes the next line off in, without its LF (and CR); NULL when no whole
 * line is there. last: the upload has ended, so what is left is a line. */
static char *
batch_stream_line(struct evbuffer *in, int last, size_t *len)
{
	struct evbuffer_ptr p = evbuffer_search(in, "\n", 1, NULL);
	size_t n = p.pos >= 0 ? (size_t)p.pos : evbuffer_get_length(in);
	char *line;

	if ((p.pos < 0 && !last) || (p.pos < 0 && n == 0))
		return NULL;
	line = xmalloc(n + 1);
	evbuffer_remove(in, line, n);
	if (p.pos >= 0)
		evbuffer_drain(in, 1);
	if (n > 0 && line[n - 1] == '\r')
		n--;
	line[n] = '\0';
	*len = n;
	return line;
}

static void
batch_stream_pause(struct batch *b, int paused)
{
	b->upload_paused = paused;
	srv_req_input_pause(b->req, paused);
}

/* Whether the batch can take another line now. */
static int
batch_stream_room(const struct batch *b)
{
	return !b->intake_done && !b->paused && b->queued < batch_stream_ahead(b) &&
	    b->n < UINT32_MAX;
}

/* The upload is over (ended, cut, stalled or bad): what arrived finishes. */
static void
batch_stream_over(struct batch *b, enum srv_input how)
{
	if (how != SRV_INPUT_END) {
		b->complete = 0;
		log_info("batch %u: upload %s after %zu requests", b->id,
		    how == SRV_INPUT_STALLED ? "stalled" : how == SRV_INPUT_BAD ? "badly framed" :
		    "cut short", b->n);
	}
	b->intake_done = 1;
	if (b->done == b->n)
		batch_finish(b);
}

/* A line longer than any request may be: the upload cannot go on (its
 * next line would start in the middle of this one). A first line refuses
 * the batch, and frees it. */
static void
batch_stream_too_long(struct batch *b)
{
	if (!b->started) {
		char why[96];
		snprintf(why, sizeof(why), "a line over %zu bytes (max_request_bytes)",
		    b->conf->max_request_bytes);
		batch_refuse(b->req, 413, why);
		b->req = NULL;
		batch_free(-1, 0, b);
		return;
	}
	batch_stream_pause(b, 1);
	batch_result_error(b, b->n++, 0, KIND_INVALID_REQUEST, "line over max_request_bytes");
	batch_stream_over(b, SRV_INPUT_BAD);
}

static void
batch_stream_read(struct batch *b)
{
	struct evbuffer *in;
	enum srv_input how;
	size_t len;
	char *line;

	if (b->req == NULL || b->intake_done)
		return;
	in = srv_req_input(b->req);
	how = srv_req_input_end(b->req);
	while (batch_stream_room(b) || !b->started) {
		if ((line = batch_stream_line(in, how == SRV_INPUT_END, &len)) == NULL)
			break;
		if (len > b->conf->max_request_bytes) {
			free(line);
			batch_stream_too_long(b);
			return;
		}
		if (strspn(line, " \t") == len) {	/* a blank line is no request */
			free(line);
			continue;
		}
		json_error_t err;
		json_t *elem = json_loadb(line, len, JSON_ALLOW_NUL | JSON_DECODE_ANY, &err);
		free(line);
		srv_req_progress(b->req);
		if (!b->started) {
			if (batch_stream_first(b, elem, err.text) < 0)
				return;
		} else
			batch_stream_request(b, elem, err.text);
	}
	if (b->intake_done)
		return;
	if (!batch_stream_room(b) && b->started) {
		batch_stream_pause(b, 1);	/* batch_dispatch or the caller's reading resumes */
		return;
	}
	if (evbuffer_get_length(in) > b->conf->max_request_bytes) {
		batch_stream_too_long(b);
		return;
	}
	batch_stream_pause(b, 0);
	if (how != SRV_INPUT_MORE) {
		if (!b->started)	/* an upload without a line: no requests */
			batch_begin_defaults(b);
		batch_stream_over(b, how);
	}
}

static void
batch_stream_body(void *arg)
{
	batch_stream_read(arg);
}

/* The caller went away, or the answer is written whole. */
static void
batch_stream_closed(void *arg)
{
	struct batch *b = arg;

	if (b->started) {
		batch_closed(b);
		return;
	}
	b->req = NULL;	/* before its first line: nothing to tell */
	batch_free(-1, 0, b);
}

static const struct srv_handler batch_stream_handler = {
	.body = batch_stream_body,
	.drained = batch_drained,
	.closed = batch_stream_closed,
};

int
batch_stream(struct srv_req *req, struct conf *c, SSL_CTX *tls, char *why, size_t whylen)
{
	struct batch *b;

	if (bs.count >= c->max_batches) {
		snprintf(why, whylen, "too many batches in flight; retry later");
		return 503;
	}
	b = batch_new(req, c, tls);
	b->stream = 1;
	srv_req_stream_body(req, &batch_stream_handler, b);
	return 0;
}
