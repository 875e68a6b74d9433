/* service.h: what the service manager hears from the daemon, through
 * sd_notify: readiness, reloads, shutdown, a status line with live figures
 * and the watchdog ping. Every call is a no-op without NOTIFY_SOCKET. */
#ifndef FANOUTD_SERVICE_H
#define FANOUTD_SERVICE_H

struct event_base;

/* Arms the status line (once a second, when it changed) and, when the
 * manager asks for one (WATCHDOG_USEC), the watchdog ping at half its period. */
void service_init(struct event_base *base);
void service_shutdown(void);

void service_ready(void);	/* READY=1, also after a reload */
void service_reloading(void);	/* RELOADING=1 */
void service_stopping(void);	/* STOPPING=1 */

#endif
