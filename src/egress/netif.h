/* TAP devices for sandboxes: create (persistent, IPv6 off, host address,
 * up) and delete. Root or CAP_NET_ADMIN. */
#pragma once
#include "util/error.h"
#include <stdint.h>

#define EGRESS_TAP_PREFIX "crt"

/* Creates TAP `name` (IFF_TAP|IFF_NO_PI, persistent), disables IPv6 on it,
 * gives it host/prefix and brings it up. An existing TAP of that name is
 * reused. */
int egress_tap_create(const char *name, const uint8_t host[4], unsigned prefix, cr_error **err);
/* Deletes TAP `name`; 0 when it is gone (also when it never existed). */
int egress_tap_delete(const char *name);
/* 1 when interface `name` exists. */
int egress_if_exists(const char *name);
/* IPv4 forwarding (net.ipv4.ip_forward, per network namespace, host-wide
 * within it) is needed for the guests' allowed traffic. Linux decides
 * forwarding by the input interface, and the answers come in on the uplink,
 * so a per-TAP setting is not enough: it is turned on for the namespace and
 * turned off again once no sandbox network is left. When a cleanroom daemon
 * finds it off and turns it on, it first writes a record,
 * /run/cleanroom-egress-ip_forward.<netns inode>, so that whichever daemon
 * removes the last sandbox network of the namespace (or finds none at
 * start, after a crash) turns it off again; when it was on already there is
 * no record and it is never touched. Both run under flock() of
 * /run/cleanroom-egress.lock, across daemons. */
/* Takes the lock: an fd to close, or -errno. */
int egress_forwarding_lock(void);
/* Under the lock: forwarding on, the record first when it was off. */
int egress_forwarding_on(void);
/* Under the lock: when the record exists, forwarding off and the record
 * removed (1); 0 when there is no record; -errno. The caller checks first
 * that no sandbox network is left in the namespace. */
int egress_forwarding_restore(void);
