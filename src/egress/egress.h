/* Per-sandbox egress (docs/egress.md): deny by default, DNS included.
 *
 * For a sandbox whose compiled policy has network rules the daemon attaches
 * egress before the VMM starts: a /30 from the pool (CLEANROOM_EGRESS_POOL,
 * default 10.213.0.0/16; host end .1, guest .2), a persistent TAP
 * crt<12 chars of the id>, nftables objects in `inet <table>`
 * (CLEANROOM_EGRESS_TABLE, default "cleanroom", see nft.h) and a DNS resolver
 * on the host address, port 53. The resolver forwards A queries for names the
 * policy allows to the upstream resolver (CLEANROOM_DNS_UPSTREAM "ip[:port]",
 * default the first nameserver of /etc/resolv.conf) and adds every A answer
 * with each allowed port to the sandbox's set (timeout = TTL, at least
 * CLEANROOM_DNS_MIN_TTL, default 60 s) before it answers; every other name
 * gets REFUSED and is never sent upstream. Each decision is an audit event.
 * Detach removes all of it; egress_sweep() removes what belongs to sandboxes
 * that no longer exist. With no sandbox network left, the table goes and
 * IPv4 forwarding is switched off again if a daemon switched it on
 * (netif.h). */
#pragma once
#include "util/error.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

typedef struct egress egress;
typedef struct egress_sbx egress_sbx;

/* Reads the configuration from the environment. Does not touch the host
 * until the first attach. */
int egress_new(uv_loop_t *loop, egress **ret, cr_error **err);
/* Detaches nothing: sandboxes keep their network across a daemon restart. */
void egress_free(egress *e);

/* Whether this host can enforce egress (root or CAP_NET_ADMIN,
 * /dev/net/tun, nftables usable). On false *why says what is missing. */
bool egress_host_capable(const char **why);

/* True when the compiled policy asks for network access (allow rules or
 * default allow): such a sandbox gets a network, others get none. */
bool egress_policy_wants_network(json_t *compiled_policy);

/* Attaches egress for sandbox id. slot < 0 takes a free slot; slot >= 0
 * re-attaches a sandbox that already had it (daemon restart).
 * compiled_policy NULL reserves a network that allows nothing (a VMM pool
 * entry: address, TAP, chains that drop everything but DNS to its resolver,
 * which refuses every name) until egress_rebind() gives it a policy. */
int egress_attach(egress *e, const char *id, json_t *compiled_policy, int slot,
                  egress_sbx **ret, cr_error **err);
/* Replaces the rules and the resolver's policy of an attached network with
 * compiled_policy's, in one nftables transaction (on failure nothing
 * changed). The "attach" audit event is emitted here for a reserved one. */
int egress_rebind(egress_sbx *s, json_t *compiled_policy, cr_error **err);
/* Removes the TAP, the nftables objects and the resolver. */
void egress_detach(egress_sbx *s);
/* Stops the resolver only (daemon shutdown: the VMM and its network stay). */
void egress_release(egress_sbx *s);
/* Removes the nftables objects and TAPs of sandboxes not in live[]. */
void egress_sweep(egress *e, char *const *live, size_t n);

int egress_sbx_slot(const egress_sbx *s);
const char *egress_sbx_tap(const egress_sbx *s);
/* "10.213.0.2/30", "10.213.0.1" (the gateway and DNS server). */
const char *egress_sbx_guest_cidr(const egress_sbx *s);
const char *egress_sbx_host_addr(const egress_sbx *s);
/* {tap, guest_address, host_address, dns, allow: [...], deny: [...],
 *  resolved: [{name, address, port, expires_in_s}]}: the effective allowlist. */
json_t *egress_sbx_json(const egress_sbx *s);

/* Audit events, newest last: [{seq, time, sandbox, kind ("dns"|"connection"|
 * "network"), action ("allow"|"deny"|"attach"|"detach"), name?, qtype?,
 * address?, port?, protocol?, reason}]. id NULL = every sandbox, action
 * NULL = every action; only events with seq > since; the newest max of
 * them. New reference. The newest MAX_EVENTS (4096) are kept in memory and
 * every event is appended to <data>/egress/events.jsonl (evlog.h), from
 * which egress_new() loads them again: they survive a daemon restart. */
json_t *egress_events(egress *e, const char *id, const char *action, uint64_t since, size_t max);
/* seq of the newest event (0 when none). */
uint64_t egress_events_last(egress *e);
/* Adds an event (takes j; sets seq and time): the gateway's decisions go
 * into the same audit stream. */
void egress_event_add(egress *e, json_t *j);

/* The host gateway's TCP port (src/gateway): when not 0, each sandbox's
 * input chain accepts TCP to its host address on that port. Set before the
 * first attach. */
void egress_set_gateway_port(egress *e, uint16_t port);
/* The sandbox pool (host order network and mask): never an upstream. */
void egress_pool(const egress *e, uint32_t *net, uint32_t *mask);
egress *egress_sbx_owner(const egress_sbx *s);
const char *egress_sbx_id(const egress_sbx *s);
/* The guest's address as 4 bytes. */
void egress_sbx_guest_ip(const egress_sbx *s, uint8_t out[4]);
/* policy_match() of the sandbox's network policy (POLICY_ALLOW/DENY). */
int egress_sbx_match(const egress_sbx *s, const char *host, uint16_t port, const char **reason);
/* policy_git_push_allows() of the sandbox's policy (sandbox.network.git_push). */
bool egress_sbx_git_push_allows(const egress_sbx *s, const char *host, uint16_t port);
/* The network policy egress_sbx_match() decides by, as a policy document
 * (policy_parse() takes it): a thread that must decide on its own (the
 * gateway's upstream requests, for redirects) parses a copy of it. */
const char *egress_sbx_policy_text(const egress_sbx *s);
