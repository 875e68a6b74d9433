/* policy.h: allow/deny on resolved addresses, asked by the connect step. */
#ifndef FANOUTD_POLICY_H
#define FANOUTD_POLICY_H

#include <sys/socket.h>

struct conf;

/* True when the snapshot lets us connect to sa: not in any deny range and,
 * when allow ranges exist, in one of them. */
int policy_allows(const struct conf *c, const struct sockaddr *sa);

#endif
