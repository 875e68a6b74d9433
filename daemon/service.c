/* service.c: see service.h. The watchdog is pinged from a timer on the event
 * loop, not from a thread, so that a wedged loop stops the pings and the
 * manager restarts the daemon. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
} sv;

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
	sd_notify(0, line);
}

static void
service_ping(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	sd_notify(0, "WATCHDOG=1");
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

	if (getenv("NOTIFY_SOCKET") == NULL)
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
	memset(&sv, 0, sizeof(sv));
}

void
service_ready(void)
{
	sd_notify(0, "READY=1");
	service_status(-1, 0, NULL);
}

void
service_reloading(void)
{
	/* MONOTONIC_USEC lets systemd >= 253 pair the reload with its request
	 * (Type=notify-reload); older managers ignore it. */
	sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%" PRIu64, now_us());
}

void
service_stopping(void)
{
	sv.stopping = 1;
	sd_notify(0, "STOPPING=1");
	service_status(-1, 0, NULL);
}
