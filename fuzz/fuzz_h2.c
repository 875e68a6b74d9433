/* fuzz_h2.c: an HTTP/2 client session (h2.c over libnghttp2) fed whatever a
 * server could send, after two requests went out: framing, HPACK, flow
 * control and the heads h2.c assembles and h1.c reads. The input is the
 * server's side of the connection, written in pieces the first byte sizes. */
#include <stddef.h>
#include <stdint.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "h1.h"
#include "h2.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
room(void *arg, unsigned n)
{
	(void)arg;
	(void)n;
}

static void
dead(void *arg)
{
	*(int *)arg = 1;
}

static void
on_head(void *arg, int rc, struct h1_head *head, const char *why)
{
	(void)arg;
	(void)why;
	if (rc == H1_DONE)
		h1_head_clear(head);
}

static void
on_data(void *arg, const uint8_t *d, size_t n)
{
	struct h2_stream **st = arg;

	(void)d;
	if (*st != NULL)
		h2_consume(*st, n);
}

static void
on_close(void *arg, uint32_t error)
{
	(void)error;
	*(struct h2_stream **)arg = NULL;
}

static const struct h2_session_cb scb = { room, dead };
static const struct h2_stream_cb tcb = { on_head, on_data, on_close };

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct h2_field f[] = { { "accept", 6, "*/*", 3 } };
	const struct h2_request req = { "GET", "https", "a.test", "/", f, 1, NULL, 0, 0 };
	const struct h2_request post = { "POST", "https", "a.test", "/p", f, 1, "body", 4, 0 };
	struct event_base *base;
	struct bufferevent *pair[2];
	struct h2_session *s;
	struct h2_stream *st[2];
	const char *why;
	size_t step, off;
	int died = 0;

	if (size < 1)
		return 0;
	step = (size_t)data[0] * 16 + 1;
	base = event_base_new();
	bufferevent_pair_new(base, 0, pair);
	bufferevent_enable(pair[1], EV_READ | EV_WRITE);
	s = h2_session_new(pair[0], &scb, &died, 100, 4096);
	st[0] = h2_submit(s, &req, &tcb, &st[0], &why);
	st[1] = h2_submit(s, &post, &tcb, &st[1], &why);
	for (off = 1; off < size && !died; off += step) {
		size_t n = size - off < step ? size - off : step;
		bufferevent_write(pair[1], data + off, n);
		event_base_loop(base, EVLOOP_NONBLOCK);
	}
	for (int i = 0; i < 2; i++)
		if (st[i] != NULL)
			h2_cancel(st[i]);
	event_base_loop(base, EVLOOP_NONBLOCK);
	h2_session_free(s);
	bufferevent_free(pair[0]);
	bufferevent_free(pair[1]);
	event_base_free(base);
	return 0;
}
