/* main.c: start-up, signals and the event loop; nothing else. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <event2/event.h>

#include "api.h"
#include "batch.h"
#include "conf.h"
#include "dnscache.h"
#include "listen.h"
#include "tls.h"
#include "log.h"
#include "pool.h"
#include "sched.h"
#include "server.h"
#include "service.h"
#include "upstream.h"
#include "util.h"

#define MAIN_EXIT_GRACE_S 5		/* after the drain, for documents still being flushed */

static struct {
	struct event_base *base;
	struct conf *conf;
	SSL_CTX *tls;
	const char *conf_path;
	struct event *sigs[4];
	struct event *drain;
	int stopping;
	int verbose;			/* -v: debug logging whatever the file says */
	int listen_flags;		/* -l given: the file's listen lines are not used */
} m;

static void
main_usage(FILE *f)
{
	fprintf(f, "usage: fanoutd [-c FILE] [-l LISTEN]... [-t] [-v] [-h] [-V]\n"
	    "  -c FILE    configuration file (default: built-in defaults)\n"
	    "  -l LISTEN  listener (HOST:PORT, [V6]:PORT, unix:/path), repeatable;\n"
	    "             overrides the file's listen lines\n"
	    "  -t         check the configuration and exit (0: ok, 2: not)\n"
	    "  -v         more logging (debug)\n"
	    "  -h         this help\n"
	    "  -V         version\n");
}

/* Descriptors bound the upstream connections: raise the soft limit as far as
 * the hard one allows, and keep room for callers, listeners and DNS. */
static unsigned
main_fd_budget(const struct conf *c)
{
	struct rlimit rl;
	rlim_t reserve = (rlim_t)c->max_batches * 2 + 64;
	unsigned budget = c->max_connections;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
			getrlimit(RLIMIT_NOFILE, &rl);
		if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < reserve + budget) {
			budget = rl.rlim_cur > reserve + 1 ? (unsigned)(rl.rlim_cur - reserve) : 1;
			log_warn("open-file limit %llu: upstream connections held at %u",
			    (unsigned long long)rl.rlim_cur, budget);
		}
	}
	return budget;
}

static void
main_batches_gone(void)
{
	if (m.stopping && batch_count() == 0)
		event_base_loopexit(m.base, NULL);
}

static void
main_drain_over(evutil_socket_t fd, short what, void *arg)
{
	static const struct timeval grace = { MAIN_EXIT_GRACE_S, 0 };

	(void)fd;
	(void)what;
	(void)arg;
	if (m.stopping == 1) {
		log_info("drain time over: cancelling %u batches", batch_count());
		m.stopping = 2;
		batch_cancel_all("the daemon is shutting down");
		evtimer_add(m.drain, &grace);
		return;
	}
	log_warn("documents still unsent after the grace period; exiting");
	event_base_loopexit(m.base, NULL);
}

static void
main_stop(void)
{
	struct timeval tv = { m.conf->drain_timeout_s, 0 };

	if (m.stopping)
		return;
	m.stopping = 1;
	service_stopping();
	log_info("stopping: %u batches in flight, draining for up to %u s", batch_count(),
	    m.conf->drain_timeout_s);
	api_stop_accepting();
	srv_stop();
	listen_close_all();
	m.drain = evtimer_new(m.base, main_drain_over, NULL);
	evtimer_add(m.drain, &tv);
	main_batches_gone();
}

/* Builds what a new configuration needs before anything changes, so a file
 * that fails any step leaves the running settings whole. */
static void
main_reload(void)
{
	const char *why = NULL;
	SSL_CTX *tls = NULL;
	struct conf *c;

	if (m.conf_path == NULL) {
		log_info("reload: no configuration file; nothing to do");
		return;
	}
	if (m.stopping) {	/* READY=1 now would tell systemd the stop was undone */
		log_info("reload: ignored while stopping");
		return;
	}
	service_reloading();
	c = conf_load(m.conf_path, stderr);
	if (c == NULL)
		why = "the file has errors (above)";
	else if ((tls = tls_ctx_new(c, &why)) == NULL || dnscache_reload(c, &why) < 0) {
		SSL_CTX_free(tls);
		conf_unref(c);
		c = NULL;
	}
	if (c == NULL) {
		log_error("reload: %s: %s; keeping the running configuration", m.conf_path, why);
		service_ready();
		return;
	}
	if (m.listen_flags || listen_activated())
		conf_set_listen(c, m.conf->listen, m.conf->nlisten, &why);	/* for the record */
	else if (!conf_same_listen(c, m.conf))
		log_warn("reload: listen lines changed; listeners change only on restart");
	/* New batches take the new limits and trust store; batches in flight
	 * keep the snapshot they started with. */
	api_set_conf(c, tls);
	pool_reload(main_fd_budget(c), c->max_per_host, c->idle_timeout_s);
	sched_configure(c);
	log_level = m.verbose ? LOG_LEVEL_DEBUG : c->log_level;
	conf_unref(m.conf);
	SSL_CTX_free(m.tls);
	m.conf = c;
	m.tls = tls;
	log_info("reload: %s applied to new batches", m.conf_path);
	service_ready();
}

static void
main_signal(evutil_socket_t sig, short what, void *arg)
{
	(void)what;
	(void)arg;
	if (sig == SIGHUP)
		main_reload();
	else
		main_stop();
}

static struct conf *
main_config(int argc, char **argv, int *check)
{
	char *listen[CONF_MAX_LISTEN];
	size_t nlisten = 0;
	const char *why;
	struct conf *c;
	int ch;

	opterr = 0;	/* one line of our own instead of getopt's */
	while ((ch = getopt(argc, argv, ":c:l:tvhV")) != -1) {
		switch (ch) {
		case 'c':
			m.conf_path = optarg;
			break;
		case 'l':
			if (nlisten == CONF_MAX_LISTEN) {
				fprintf(stderr, "fanoutd: more than %d listeners\n", CONF_MAX_LISTEN);
				exit(2);
			}
			listen[nlisten++] = optarg;
			break;
		case 't':
			*check = 1;
			break;
		case 'v':
			m.verbose = 1;
			break;
		case 'h':
			main_usage(stdout);
			exit(0);
		case 'V':
			printf("fanoutd %s\n", FANOUTD_VERSION);
			exit(0);
		case ':':
			fprintf(stderr, "fanoutd: -%c needs an argument (fanoutd -h for help)\n", optopt);
			exit(2);
		default:
			fprintf(stderr, "fanoutd: unknown option -%c (fanoutd -h for help)\n", optopt);
			exit(2);
		}
	}
	if (optind < argc) {
		fprintf(stderr, "fanoutd: unexpected argument \"%s\"\n", argv[optind]);
		exit(2);
	}
	c = m.conf_path != NULL ? conf_load(m.conf_path, stderr) : conf_new_default();
	if (c == NULL)
		exit(2);
	if (nlisten > 0 && conf_set_listen(c, listen, nlisten, &why) < 0) {
		fprintf(stderr, "fanoutd: -l: %s\n", why);
		exit(2);
	}
	m.listen_flags = nlisten > 0;
	log_level = m.verbose ? LOG_LEVEL_DEBUG : c->log_level;
	return c;
}

static void
main_setup(void)
{
	static const int signals[] = { SIGTERM, SIGINT, SIGHUP };
	char err[256];
	const char *why;
	int n;

	signal(SIGPIPE, SIG_IGN);
	m.base = event_base_new();
	if (m.base == NULL)
		fatal("cannot set up the event loop");
	if (dnscache_init(m.base, m.conf, &why) < 0)
		fatal("%s", why);
	if ((m.tls = tls_ctx_new(m.conf, &why)) == NULL)
		fatal("%s", why);
	pool_init(m.base, main_fd_budget(m.conf), m.conf->max_per_host, m.conf->idle_timeout_s);
	sched_init(m.base);
	sched_configure(m.conf);
	upstream_init(m.base);
	batch_init(m.base, main_batches_gone);
	api_init(m.base, m.conf, m.tls);
	/* Sockets passed by systemd replace the listen lines (spec). */
	n = listen_adopt(m.base, srv_accept, err, sizeof(err));
	if (n < 0 || (n == 0 &&
	    listen_open(m.base, srv_accept, m.conf->listen, m.conf->nlisten, err, sizeof(err)) < 0)) {
		fprintf(stderr, "fanoutd: %s\n", err);
		exit(2);
	}
	if (n > 0)
		log_info("socket activation: serving %d passed sockets; listen lines not used", n);
	service_init(m.base);
	for (size_t i = 0; i < sizeof(signals) / sizeof(signals[0]); i++) {
		m.sigs[i] = evsignal_new(m.base, signals[i], main_signal, NULL);
		evsignal_add(m.sigs[i], NULL);
	}
}

static void
main_teardown(void)
{
	for (size_t i = 0; i < sizeof(m.sigs) / sizeof(m.sigs[0]); i++)
		if (m.sigs[i] != NULL)
			event_free(m.sigs[i]);
	if (m.drain != NULL)
		event_free(m.drain);
	listen_close_all();
	srv_shutdown();
	upstream_shutdown();
	sched_shutdown();	/* it holds origins of the pool's */
	pool_shutdown();
	dnscache_shutdown();
	service_shutdown();
	api_shutdown();
	event_base_free(m.base);
	SSL_CTX_free(m.tls);
	conf_unref(m.conf);
}

int
main(int argc, char **argv)
{
	int check = 0;

	m.conf = main_config(argc, argv, &check);
	if (check) {
		printf("configuration ok\n");
		conf_unref(m.conf);
		return 0;
	}
	main_setup();
	log_info("fanoutd %s started", FANOUTD_VERSION);
	service_ready();
	event_base_dispatch(m.base);
	log_info("stopped");
	main_teardown();
	return 0;
}
