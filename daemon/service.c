/* service.c: see service.h. The watchdog is pinged from a timer on the event
 * loop, not from a thread, so that a wedged loop stops the pings and the
 * manager restarts the daemon.
 *
 * Messages go out without blocking, by hand: sd_notify() sends with a
 * blocking sendmsg(), and a notification socket nobody reads (its queue is
 * net.unix.max_dgram_qlen, 10 here) stopped the whole event loop after ten
 * status lines, a stop included. One that would block is dropped: a status
 * line comes again a second later, and a manager that reads nothing acts
 * on nothing anyway. */
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/event.h>
#include <systemd/sd-daemon.h>

#include "log.h"
#include "metrics.h"
#include "service.h"
#include "util.h"

#define SERVICE_STATUS_PERIOD_S 1

static struct {
	struct event *status;
	struct event *watchdog;
	int stopping;
	char last[256];
	int fd;				/* non-blocking, to NOTIFY_SOCKET */
	struct sockaddr_un addr;
	socklen_t addrlen;
} sv = { .fd = -1 };

/* The manager's socket from NOTIFY_SOCKET: a path, or "@name" for an
 * abstract one. -1 when there is none or it cannot be used. */
static int
service_open(void)
{
	const char *e = getenv("NOTIFY_SOCKET");
	size_t n;

	if (e == NULL || (e[0] != '/' && e[0] != '@') ||
	    (n = strlen(e)) >= sizeof(sv.addr.sun_path))
		return -1;
	memset(&sv.addr, 0, sizeof(sv.addr));
	sv.addr.sun_family = AF_UNIX;
	memcpy(sv.addr.sun_path, e, n);
	if (e[0] == '@')
		sv.addr.sun_path[0] = '\0';
	sv.addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (e[0] == '/'));
	sv.fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	return sv.fd;
}

/* Sent if the manager's queue has room, else dropped. */
static void
service_send(const char *msg)
{
	if (sv.fd < 0)
		return;
	if (sendto(sv.fd, msg, strlen(msg), MSG_NOSIGNAL | MSG_DONTWAIT,
	    (const struct sockaddr *)&sv.addr, sv.addrlen) < 0 && errno != EAGAIN)
		log_debug("notify: %s", strerror(errno));
}

/* "STATUS=" with what an operator asks first: is it busy, is it stuck. */
static void
service_status(evutil_socket_t fd, short what, void *arg)
{
	char line[sizeof(sv.last)];
	uint64_t done = 0;

	(void)fd;
	(void)what;
	(void)arg;
	for (int k = 0; k < KIND_MAX; k++)
		done += metrics.requests[k];
	snprintf(line, sizeof(line), "STATUS=%s%" PRId64 " batches, %" PRId64 " requests in flight, "
	    "%" PRId64 " queued, %" PRIu64 " done; upstream connections: %" PRId64 " HTTP/1.1, %"
	    PRId64 " HTTP/2 with %" PRId64 " streams", sv.stopping ? "draining: " : "",
	    metrics.batches_in_flight, metrics.requests_in_flight, metrics.requests_queued, done,
	    metrics.conns_open - metrics.conns_h2, metrics.conns_h2, metrics.h2_streams);
	if (strcmp(line, sv.last) == 0)
		return;
	memcpy(sv.last, line, sizeof(line));
	service_send(line);
}

static void
service_ping(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	service_send("WATCHDOG=1");
}

static struct event *
service_every(struct event_base *base, uint64_t usec, event_callback_fn cb)
{
	struct timeval tv = { (time_t)(usec / 1000000), (suseconds_t)(usec % 1000000) };
	struct event *ev = event_new(base, -1, EV_PERSIST, cb, NULL);

	if (ev == NULL || event_add(ev, &tv) != 0)
		fatal("cannot arm a service timer");
	return ev;
}

void
service_init(struct event_base *base)
{
	uint64_t usec = 0;

	if (service_open() < 0)
		return;
	sv.status = service_every(base, SERVICE_STATUS_PERIOD_S * 1000000u, service_status);
	if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
		usec = usec / 2 > 1000 ? usec / 2 : 1000;	/* never a spinning timer */
		sv.watchdog = service_every(base, usec, service_ping);
		log_info("watchdog: pinging every %" PRIu64 " ms", usec / 1000);
	}
}

void
service_shutdown(void)
{
	if (sv.status != NULL)
		event_free(sv.status);
	if (sv.watchdog != NULL)
		event_free(sv.watchdog);
	if (sv.fd >= 0)
		close(sv.fd);
	memset(&sv, 0, sizeof(sv));
	sv.fd = -1;
}

void
service_ready(void)
{
	service_send("READY=1");
	service_status(-1, 0, NULL);
}

void
service_reloading(void)
{
	/* MONOTONIC_USEC lets systemd >= 253 pair the reload with its request
	 * (Type=notify-reload); older managers ignore it. */
	char msg[64];

	snprintf(msg, sizeof(msg), "RELOADING=1\nMONOTONIC_USEC=%" PRIu64, now_us());
	service_send(msg);
}

void
service_stopping(void)
{
	sv.stopping = 1;
	service_send("STOPPING=1");
	service_status(-1, 0, NULL);
}
