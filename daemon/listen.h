/* listen.h: the caller-facing sockets: TCP (IPv4, IPv6) and Unix stream
 * sockets, whose accepted connections go to a callback (the server).
 * Accepting pauses briefly when descriptors run out instead of spinning on
 * EMFILE. */
#ifndef FANOUTD_LISTEN_H
#define FANOUTD_LISTEN_H

#include <stddef.h>
#include <sys/socket.h>

struct event_base;

/* A connection accepted: fd is the callee's. */
typedef void listen_accept_fn(int fd, const struct sockaddr *sa, socklen_t len);

/* Binds each "HOST:PORT", "[V6]:PORT" or "unix:/path". On failure returns
 * -1 with a message naming the listener in err. */
int listen_open(struct event_base *base, listen_accept_fn *accept, char *const *addrs, size_t n,
    char *err, size_t errlen);

/* Socket activation: serves the listening sockets the service manager passed
 * (LISTEN_FDS, sd_listen_fds_with_names) and returns how many; 0 when none
 * were passed. -1 with err when one is not a listening TCP or Unix stream
 * socket: the daemon refuses to start rather than serve half its sockets. */
int listen_adopt(struct event_base *base, listen_accept_fn *accept, char *err, size_t errlen);

/* Whether listen_adopt found sockets to serve. */
int listen_activated(void);

/* Stops accepting and closes every listener (removing Unix socket files). */
void listen_close_all(void);

#endif
