/* test_h2.c: h2.c's session alone, on one end of a socketpair with nobody
 * at the other: what it decides before the server says anything.
 *
 * The file is included, not linked: a client's stream ids run out after
 * 2^30 streams (RFC 9113, 5.1.1), which no test reaches by submitting, so
 * the test moves the session's next id near the end through its nghttp2
 * session, which h2.h rightly does not show. */
#include "h2.c"

#include <sys/socket.h>
#include <unistd.h>

#include "unit.h"

static int deaths;

static void
on_room(void *arg, unsigned n)
{
	(void)arg;
	(void)n;
}

static void
on_dead(void *arg)
{
	(void)arg;
	deaths++;
}

static const struct h2_session_cb session_cb = { on_room, on_dead };

static void
on_head(void *arg, int rc, struct h1_head *head, const char *why)
{
	(void)arg;
	(void)rc;
	(void)head;
	(void)why;
}

static void
on_data(void *arg, const uint8_t *data, size_t len)
{
	(void)arg;
	(void)data;
	(void)len;
}

static void
on_close(void *arg, uint32_t error)
{
	(void)arg;
	(void)error;
}

static const struct h2_stream_cb stream_cb = { on_head, on_data, on_close };

static const struct h2_request get = {
	.method = "GET", .scheme = "https", .authority = "example.test", .path = "/",
};

/* Ids are used up: the stream that takes the last one goes out, and the
 * owner hears at once that the session takes no more, so it opens another
 * connection instead of failing the next request on this one. */
static void
test_stream_ids_run_out(struct event_base *base)
{
	struct h2_stream *st[3], *more;
	struct h2_session *s;
	struct bufferevent *bev;
	const char *why = NULL;
	int fds[2];

	CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0);
	bev = bufferevent_socket_new(base, fds[0], BEV_OPT_CLOSE_ON_FREE);
	deaths = 0;
	s = h2_session_new(bev, &session_cb, NULL, 100, 65536);
	CHECK(s != NULL);

	st[0] = h2_submit(s, &get, &stream_cb, NULL, &why);
	CHECK(st[0] != NULL && st[0]->id == 1 && deaths == 0);

	CHECK(nghttp2_session_set_next_stream_id(s->ng, INT32_MAX - 2) == 0);
	st[1] = h2_submit(s, &get, &stream_cb, NULL, &why);
	CHECK(st[1] != NULL && st[1]->id == INT32_MAX - 2 && deaths == 0);
	st[2] = h2_submit(s, &get, &stream_cb, NULL, &why);
	CHECK(st[2] != NULL && st[2]->id == INT32_MAX);
	CHECK(deaths == 1);	/* said with the last id, not at the next submit */

	more = h2_submit(s, &get, &stream_cb, NULL, &why);
	CHECK(more == NULL && why != NULL && strstr(why, "going away") != NULL);
	CHECK(deaths == 1);	/* once */

	/* The streams it has go on: cancelling one is still a RST_STREAM. */
	h2_cancel(st[2]);
	CHECK(TAILQ_FIRST(&s->streams) == st[0]);
	h2_cancel(st[0]);
	h2_cancel(st[1]);
	CHECK(TAILQ_EMPTY(&s->streams));
	h2_session_free(s);
	bufferevent_free(bev);
	close(fds[1]);
}

int
main(void)
{
	struct event_base *base = event_base_new();

	test_stream_ids_run_out(base);
	event_base_free(base);
	return UNIT_DONE();
}
