/* nftables for per-sandbox egress (docs/egress.md): the text commands (pure
 * functions, unit-tested) and running them through libnftables.
 *
 * One table (`inet <table>`, default "cleanroom") holds base chains that
 * dispatch by interface name through verdict maps, so adding or removing a
 * sandbox is adding or removing map elements, its chains and its set:
 *   forward: iifname vmap @fwd_in   (from a TAP -> f_<id>)
 *            oifname vmap @fwd_out  (to a TAP   -> o_<id>: return traffic only)
 *   input:   iifname vmap @in_in    (to the host -> i_<id>: DNS on its host address)
 *   postrouting (nat): ip saddr @guests masquerade
 * and per sandbox the set a_<id> (ipv4_addr . inet_service, per-element
 * timeouts) that the DNS resolver fills. */
#pragma once
#include "util/error.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define EGRESS_NFLOG_GROUP 2213

/* An IP/CIDR rule of the policy as the firewall applies it. */
typedef struct egress_cidr {
  uint8_t addr[4];
  unsigned prefix;
  uint16_t *ports; /* n_ports == 0: every port (deny rules only) */
  size_t n_ports;
} egress_cidr;

typedef struct egress_nft_sbx {
  const char *table;   /* "cleanroom" */
  const char *id;      /* sandbox id (names the chains and the set) */
  const char *tap;     /* interface name */
  uint8_t host[4];     /* host end of the sandbox's subnet (DNS, gateway) */
  uint8_t guest[4];    /* the only source address accepted from the TAP */
  const egress_cidr *allow; /* IPv4 IP/CIDR allow rules */
  size_t n_allow;
  const egress_cidr *deny;  /* IPv4 IP/CIDR deny rules */
  size_t n_deny;
  unsigned nflog_group;     /* rejected packets are logged there; 0 = EGRESS_NFLOG_GROUP */
  uint16_t gateway_port;    /* TCP port of the host gateway on `host`; 0 = none */
} egress_nft_sbx;

/* The table, base chains and maps (idempotent: `add`). New string. */
char *egress_nft_base_cmds(const char *table);
/* Everything for one sandbox. New string or NULL (ENOMEM). */
char *egress_nft_sbx_cmds(const egress_nft_sbx *s);
/* Removes one sandbox's objects (map elements first, then chains and set). */
char *egress_nft_sbx_delete_cmds(const char *table, const char *id, const char *tap,
                                 const uint8_t guest[4]);
/* Adds addr:port to the sandbox's set with a timeout in seconds. */
char *egress_nft_element_cmd(const char *verb, const char *table, const char *id,
                             const uint8_t addr[4], uint16_t port, unsigned timeout_s);

/* Runs commands through libnftables. Errors are CR_E_EGRESS_UNAVAILABLE with
 * nft's own message. */
int egress_nft_run(const char *cmds, cr_error **err);
/* Runs each line on its own, ignoring failures (removal of objects that may
 * be partly gone). Returns how many lines failed. */
int egress_nft_run_each(const char *cmds);
/* Lists the sandbox ids that have a chain f_<id> in the table (table NULL:
 * in any inet table of this network namespace, i.e. of any daemon) (new
 * array of new strings, *ret_n). 0 also when the table does not exist. */
int egress_nft_list_ids(const char *table, char ***ret, size_t *ret_n, cr_error **err);
/* Deletes the whole table (tests, `doctor --fix` later). */
int egress_nft_delete_table(const char *table, cr_error **err);
/* True when `table` is a name we accept (letters, digits, '_', <= 32). */
bool egress_nft_name_valid(const char *s);
