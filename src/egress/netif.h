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
/* Turns on IPv4 forwarding (net.ipv4.ip_forward=1), needed for the guests'
 * allowed traffic. 0 or -errno. */
int egress_enable_forwarding(void);
