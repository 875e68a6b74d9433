/* listen.c: see listen.h. */
#include <errno.h>
#include <stddef.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <netinet/in.h>

#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <systemd/sd-daemon.h>

#include "listen.h"
#include "log.h"
#include "util.h"

#define LISTEN_MAX 16
#define LISTEN_BACKLOG 511
#define LISTEN_PAUSE_MS 100

struct listener {
	struct evconnlistener *lev;
	char *unix_path;	/* to unlink on close */
	struct event *resume;
};

static struct {
	struct listener l[LISTEN_MAX];
	size_t n;
	listen_accept_fn *accept;
	int activated;		/* serving sockets passed by the service manager */
} ls;

static void
listen_resume(evutil_socket_t fd, short what, void *arg)
{
	struct listener *l = arg;

	(void)fd;
	(void)what;
	evconnlistener_enable(l->lev);
}

/* accept() failed: out of descriptors (or another passing error). Stop
 * accepting for a moment; the pending callers wait in the backlog. */
static void
listen_error(struct evconnlistener *lev, void *arg)
{
	struct listener *l = NULL;
	int err = EVUTIL_SOCKET_ERROR();
	struct timeval tv = { 0, LISTEN_PAUSE_MS * 1000 };

	(void)arg;
	for (size_t i = 0; i < ls.n && l == NULL; i++)
		if (ls.l[i].lev == lev)
			l = &ls.l[i];
	if (l == NULL)
		return;

	log_warn("accept: %s; pausing for %d ms", evutil_socket_error_to_string(err),
	    LISTEN_PAUSE_MS);
	evconnlistener_disable(lev);
	evtimer_add(l->resume, &tv);
}

/* A Unix socket file left by a dead daemon is replaced; one that answers
 * belongs to a live process and is left alone. */
static int
listen_unix_stale(const char *path, char *err, size_t errlen, const char *name)
{
	struct sockaddr_un sun;
	struct stat st;
	int fd, live;

	if (lstat(path, &st) < 0)
		return 0;
	if (!S_ISSOCK(st.st_mode)) {
		snprintf(err, errlen, "listen %s: exists and is not a socket", name);
		return -1;
	}
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	live = fd >= 0 && connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0;
	if (fd >= 0)
		close(fd);
	if (live) {
		snprintf(err, errlen, "listen %s: another process is listening there", name);
		return -1;
	}
	unlink(path);
	return 0;
}

static int
listen_addr(const char *s, struct sockaddr_storage *ss, socklen_t *len, int *is_unix)
{
	int l = sizeof(*ss);

	memset(ss, 0, sizeof(*ss));
	*is_unix = strncmp(s, "unix:", 5) == 0;
	if (*is_unix) {
		struct sockaddr_un *sun = (struct sockaddr_un *)ss;
		if (strlen(s + 5) >= sizeof(sun->sun_path) || s[5] != '/')
			return -1;
		sun->sun_family = AF_UNIX;
		strcpy(sun->sun_path, s + 5);
		*len = sizeof(*sun);
		return 0;
	}
	if (evutil_parse_sockaddr_port(s, (struct sockaddr *)ss, &l) < 0)
		return -1;
	*len = (socklen_t)l;
	return 0;
}

static int
listen_socket(const char *name, const struct sockaddr_storage *ss, socklen_t len, char *err,
    size_t errlen)
{
	int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;

	if (fd < 0) {
		snprintf(err, errlen, "listen %s: %s", name, strerror(errno));
		return -1;
	}
	if (ss->ss_family != AF_UNIX)
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	/* So that [::]:P and 0.0.0.0:P can both be listed. */
	if (ss->ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)ss, len) < 0 || listen(fd, LISTEN_BACKLOG) < 0) {
		snprintf(err, errlen, "listen %s: %s", name, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

static void
listen_accepted(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa, int len,
    void *arg)
{
	(void)lev;
	(void)arg;
	ls.accept(fd, sa, (socklen_t)len);
}

/* Serves the listening socket fd; on failure closes it. unix_path: a
 * socket file of ours, removed on close. */
static int
listen_serve(struct event_base *base, int fd, const char *name, const char *unix_path,
    char *err, size_t errlen)
{
	struct listener *l;

	if (ls.n >= LISTEN_MAX) {
		snprintf(err, errlen, "listen %s: more than %d listeners", name, LISTEN_MAX);
		close(fd);
		return -1;
	}
	l = &ls.l[ls.n];
	l->lev = evconnlistener_new(base, listen_accepted, NULL, LEV_OPT_CLOSE_ON_FREE, 0, fd);
	if (l->lev == NULL) {
		snprintf(err, errlen, "listen %s: cannot serve it", name);
		close(fd);
		return -1;
	}
	l->unix_path = unix_path != NULL ? xstrdup(unix_path) : NULL;
	l->resume = evtimer_new(base, listen_resume, l);
	evconnlistener_set_error_cb(l->lev, listen_error);
	ls.n++;
	log_info("listening on %s", name);
	return 0;
}

static int
listen_one(struct event_base *base, const char *name, char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int fd, is_unix;

	if (listen_addr(name, &ss, &len, &is_unix) < 0) {
		snprintf(err, errlen, "listen %s: not HOST:PORT, [V6]:PORT or unix:/path", name);
		return -1;
	}
	if (is_unix && listen_unix_stale(name + 5, err, errlen, name) < 0)
		return -1;
	if ((fd = listen_socket(name, &ss, len, err, errlen)) < 0)
		return -1;
	return listen_serve(base, fd, name, is_unix ? name + 5 : NULL, err, errlen);
}

/* What is wrong with a passed descriptor for serving HTTP, or NULL. */
static const char *
listen_unfit(int fd, struct sockaddr_storage *ss, socklen_t *len)
{
	*len = sizeof(*ss);
	memset(ss, 0, sizeof(*ss));
	if (sd_is_socket(fd, AF_UNSPEC, 0, -1) <= 0)
		return "not a socket";
	if (sd_is_socket(fd, AF_UNSPEC, SOCK_STREAM, -1) <= 0)
		return "not a stream socket (ListenStream= is needed, not ListenDatagram=)";
	if (sd_is_socket(fd, AF_UNSPEC, SOCK_STREAM, 1) <= 0)
		return "not listening (Accept=yes is not supported)";
	if (getsockname(fd, (struct sockaddr *)ss, len) < 0 ||
	    (ss->ss_family != AF_INET && ss->ss_family != AF_INET6 && ss->ss_family != AF_UNIX))
		return "not a TCP or Unix socket";
	return NULL;
}

/* "127.0.0.1:8750", "[::1]:8750", "unix:/run/x.sock" or, for an abstract
 * Unix socket, "unix:@name". A path may fill sun_path with no NUL. */
static void
listen_describe(const struct sockaddr_storage *ss, socklen_t len, char *dst, size_t dstlen)
{
	const struct sockaddr_un *sun = (const struct sockaddr_un *)ss;
	size_t off = offsetof(struct sockaddr_un, sun_path), n = len > off ? len - off : 0;

	if (ss->ss_family != AF_UNIX)
		addr_format(ss, dst, dstlen);
	else if (n > 0 && sun->sun_path[0] == '\0')
		snprintf(dst, dstlen, "unix:@%.*s", (int)(n - 1), sun->sun_path + 1);
	else
		snprintf(dst, dstlen, "unix:%.*s", (int)strnlen(sun->sun_path, n), sun->sun_path);
}

int
listen_adopt(struct event_base *base, listen_accept_fn *accept, char *err, size_t errlen)
{
	char **names = NULL, addr[INET6_ADDRSTRLEN + 8 + sizeof(((struct sockaddr_un *)0)->sun_path)];
	int n = sd_listen_fds_with_names(1, &names), rc = 0;

	ls.accept = accept;
	if (n < 0)
		snprintf(err, errlen, "socket activation: %s", strerror(-n));
	for (int i = 0; i < n; i++) {
		int fd = SD_LISTEN_FDS_START + i;
		const char *fdname = names != NULL ? names[i] : "unknown", *why;
		struct sockaddr_storage ss;
		socklen_t len;
		char name[sizeof(addr) + 64];

		/* After the first unfit one, the rest are only closed: the
		 * daemon will not start on half of its sockets. */
		if (rc == 0 && (why = listen_unfit(fd, &ss, &len)) != NULL) {
			snprintf(err, errlen, "socket activation: fd %d (%s): %s", fd, fdname, why);
			rc = -1;
		}
		if (rc < 0) {
			close(fd);
			continue;
		}
		listen_describe(&ss, len, addr, sizeof(addr));
		snprintf(name, sizeof(name), "%s (fd %d, %s, from the service manager)", addr, fd,
		    fdname);
		evutil_make_socket_nonblocking(fd);
		evutil_make_socket_closeonexec(fd);
		/* The socket file is the manager's: not ours to remove. */
		if (listen_serve(base, fd, name, NULL, err, errlen) < 0)
			rc = -1;
		else
			ls.activated = 1;
	}
	for (int i = 0; names != NULL && i < n; i++)
		free(names[i]);
	free(names);
	return n < 0 || rc < 0 ? -1 : n;
}

int
listen_activated(void)
{
	return ls.activated;
}

int
listen_open(struct event_base *base, listen_accept_fn *accept, char *const *addrs, size_t n,
    char *err, size_t errlen)
{
	ls.accept = accept;
	for (size_t i = 0; i < n; i++)
		if (listen_one(base, addrs[i], err, errlen) < 0)
			return -1;
	return 0;
}

void
listen_close_all(void)
{
	for (size_t i = 0; i < ls.n; i++) {
		struct listener *l = &ls.l[i];
		/* Closed, not just disabled: a caller connecting now is refused
		 * at once instead of waiting in a backlog nobody reads. A socket
		 * passed by systemd stays open in the manager, which queues
		 * callers for the next start. */
		evconnlistener_free(l->lev);
		l->lev = NULL;
		if (l->unix_path != NULL) {
			unlink(l->unix_path);
			free(l->unix_path);
			l->unix_path = NULL;
		}
		event_free(l->resume);
		l->resume = NULL;
	}
	ls.n = 0;
}
