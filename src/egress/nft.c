/* nftables commands for per-sandbox egress (nft.h). */
#include "egress/nft.h"
#include "util/buf.h"

#include <jansson.h>
#include <nftables/libnftables.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* the commands of one change: a few KiB (one sandbox's chain, set and
 * rules); the bound only catches a runaway */
#define NFT_CMDS_MAX (1u << 20)

bool egress_nft_name_valid(const char *s) {
  size_t n = s ? strlen(s) : 0;
  if (n == 0 || n > 32) return false;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'))
      return false;
  }
  return true;
}

#define IP4(a) (a)[0], (a)[1], (a)[2], (a)[3]

char *egress_nft_base_cmds(const char *t) {
  cr_buf b = CR_BUF_INIT(NFT_CMDS_MAX);
  cr_buf_printf(&b, "add table inet %s\n", t);
  cr_buf_printf(&b, "add map inet %s fwd_in { type ifname : verdict; }\n", t);
  cr_buf_printf(&b, "add map inet %s fwd_out { type ifname : verdict; }\n", t);
  cr_buf_printf(&b, "add map inet %s in_in { type ifname : verdict; }\n", t);
  cr_buf_printf(&b, "add set inet %s guests { type ipv4_addr; }\n", t);
  cr_buf_printf(&b, "add set inet %s guest_ifs { type ifname; }\n", t);
  cr_buf_printf(&b, "add chain inet %s forward { type filter hook forward priority -10; policy accept; }\n", t);
  cr_buf_printf(&b, "add chain inet %s input { type filter hook input priority -10; policy accept; }\n", t);
  cr_buf_printf(&b, "add chain inet %s postrouting { type nat hook postrouting priority 100; policy accept; }\n", t);
  /* the base rules once: flush and re-add so a repeated call adds no duplicate */
  cr_buf_printf(&b, "flush chain inet %s forward\n", t);
  cr_buf_printf(&b, "flush chain inet %s input\n", t);
  cr_buf_printf(&b, "flush chain inet %s postrouting\n", t);
  cr_buf_printf(&b, "add rule inet %s forward iifname vmap @fwd_in\n", t);
  cr_buf_printf(&b, "add rule inet %s forward oifname vmap @fwd_out\n", t);
  cr_buf_printf(&b, "add rule inet %s input iifname vmap @in_in\n", t);
  cr_buf_printf(&b, "add rule inet %s postrouting ip saddr @guests oifname != @guest_ifs masquerade\n", t);
  return cr_buf_steal_str(&b);
}

static void add_ports(cr_buf *b, const uint16_t *ports, size_t n) {
  cr_buf_printf(b, "{ ");
  for (size_t i = 0; i < n; i++) cr_buf_printf(b, "%s%u", i ? ", " : "", ports[i]);
  cr_buf_printf(b, " }");
}

/* log + reject, with the reason as the log prefix */
static void add_reject(cr_buf *b, const char *t, const char *chain, const char *id,
                       const char *reason, unsigned g) {
  /* at most 20 log lines a second per chain; the reject applies to all */
  cr_buf_printf(b, "add rule inet %s %s_%s limit rate 20/second burst 40 packets log prefix \"cr %s %s \" group %u\n",
         t, chain, id, id, reason, g);
  cr_buf_printf(b, "add rule inet %s %s_%s meta l4proto tcp reject with tcp reset\n", t, chain, id);
  cr_buf_printf(b, "add rule inet %s %s_%s reject with icmpx admin-prohibited\n", t, chain, id);
}

char *egress_nft_sbx_cmds(const egress_nft_sbx *s) {
  cr_buf b = CR_BUF_INIT(NFT_CMDS_MAX);
  const char *t = s->table, *id = s->id;
  unsigned g = s->nflog_group ? s->nflog_group : EGRESS_NFLOG_GROUP;
  cr_buf_printf(&b, "add set inet %s a_%s { type ipv4_addr . inet_service; flags timeout; }\n", t, id);
  cr_buf_printf(&b, "add chain inet %s f_%s\n", t, id);
  cr_buf_printf(&b, "add chain inet %s o_%s\n", t, id);
  cr_buf_printf(&b, "add chain inet %s i_%s\n", t, id);
  cr_buf_printf(&b, "flush chain inet %s f_%s\n", t, id);
  cr_buf_printf(&b, "flush chain inet %s o_%s\n", t, id);
  cr_buf_printf(&b, "flush chain inet %s i_%s\n", t, id);
  /* from the guest, forwarded: anti-spoofing, IPv4 only, then the policy */
  static const char *in_chains[] = {"f", "i"};
  for (size_t c = 0; c < 2; c++) {
    const char *ch = in_chains[c];
    cr_buf_printf(&b, "add rule inet %s %s_%s meta nfproto != ipv4 drop\n", t, ch, id);
    cr_buf_printf(&b, "add rule inet %s %s_%s ip saddr != %u.%u.%u.%u limit rate 20/second burst 40 packets log prefix \"cr %s spoofed_source \" group %u\n",
           t, ch, id, IP4(s->guest), id, g);
    cr_buf_printf(&b, "add rule inet %s %s_%s ip saddr != %u.%u.%u.%u drop\n", t, ch, id, IP4(s->guest));
    cr_buf_printf(&b, "add rule inet %s %s_%s ct state established,related accept\n", t, ch, id);
  }
  for (size_t i = 0; i < s->n_deny; i++) {
    const egress_cidr *r = &s->deny[i];
    cr_buf_printf(&b, "add rule inet %s f_%s ip daddr %u.%u.%u.%u/%u ", t, id, IP4(r->addr), r->prefix);
    if (r->n_ports) {
      cr_buf_printf(&b, "tcp dport ");
      add_ports(&b, r->ports, r->n_ports);
      cr_buf_printf(&b, " ");
    }
    cr_buf_printf(&b, "log prefix \"cr %s host_denied \" group %u reject with %s\n", id, g,
           r->n_ports ? "tcp reset" : "icmpx admin-prohibited");
  }
  cr_buf_printf(&b, "add rule inet %s f_%s ip daddr . tcp dport @a_%s accept\n", t, id, id);
  for (size_t i = 0; i < s->n_allow; i++) {
    const egress_cidr *r = &s->allow[i];
    if (!r->n_ports) continue;
    cr_buf_printf(&b, "add rule inet %s f_%s ip daddr %u.%u.%u.%u/%u tcp dport ", t, id, IP4(r->addr),
           r->prefix);
    add_ports(&b, r->ports, r->n_ports);
    cr_buf_printf(&b, " accept\n");
  }
  add_reject(&b, t, "f", id, "not_allowed", g);
  /* to the guest: only replies */
  cr_buf_printf(&b, "add rule inet %s o_%s ct state established,related accept\n", t, id);
  cr_buf_printf(&b, "add rule inet %s o_%s drop\n", t, id);
  /* to the host: DNS on the sandbox's host address, nothing else */
  cr_buf_printf(&b, "add rule inet %s i_%s ip daddr %u.%u.%u.%u udp dport 53 accept\n", t, id,
         IP4(s->host));
  if (s->gateway_port)
    cr_buf_printf(&b, "add rule inet %s i_%s ip daddr %u.%u.%u.%u tcp dport %u accept\n", t, id,
           IP4(s->host), s->gateway_port);
  add_reject(&b, t, "i", id, "host_service_denied", g);
  cr_buf_printf(&b, "add element inet %s guests { %u.%u.%u.%u }\n", t, IP4(s->guest));
  cr_buf_printf(&b, "add element inet %s guest_ifs { \"%s\" }\n", t, s->tap);
  cr_buf_printf(&b, "add element inet %s fwd_in { \"%s\" : jump f_%s }\n", t, s->tap, id);
  cr_buf_printf(&b, "add element inet %s fwd_out { \"%s\" : jump o_%s }\n", t, s->tap, id);
  cr_buf_printf(&b, "add element inet %s in_in { \"%s\" : jump i_%s }\n", t, s->tap, id);
  return cr_buf_steal_str(&b);
}

char *egress_nft_sbx_delete_cmds(const char *t, const char *id, const char *tap,
                                 const uint8_t guest[4]) {
  cr_buf b = CR_BUF_INIT(NFT_CMDS_MAX);
  if (tap) {
    cr_buf_printf(&b, "delete element inet %s fwd_in { \"%s\" }\n", t, tap);
    cr_buf_printf(&b, "delete element inet %s fwd_out { \"%s\" }\n", t, tap);
    cr_buf_printf(&b, "delete element inet %s in_in { \"%s\" }\n", t, tap);
    cr_buf_printf(&b, "delete element inet %s guest_ifs { \"%s\" }\n", t, tap);
  }
  if (guest) cr_buf_printf(&b, "delete element inet %s guests { %u.%u.%u.%u }\n", t, IP4(guest));
  cr_buf_printf(&b, "delete chain inet %s f_%s\n", t, id);
  cr_buf_printf(&b, "delete chain inet %s o_%s\n", t, id);
  cr_buf_printf(&b, "delete chain inet %s i_%s\n", t, id);
  cr_buf_printf(&b, "delete set inet %s a_%s\n", t, id);
  return cr_buf_steal_str(&b);
}

char *egress_nft_element_cmd(const char *verb, const char *t, const char *id,
                             const uint8_t a[4], uint16_t port, unsigned timeout_s) {
  char *s = NULL;
  int r;
  if (timeout_s)
    r = asprintf(&s, "%s element inet %s a_%s { %u.%u.%u.%u . %u timeout %us }\n", verb, t, id,
                 IP4(a), port, timeout_s);
  else
    r = asprintf(&s, "%s element inet %s a_%s { %u.%u.%u.%u . %u }\n", verb, t, id, IP4(a), port);
  return r < 0 ? NULL : s;
}

static struct nft_ctx *ctx_new(bool json) {
  struct nft_ctx *c = nft_ctx_new(NFT_CTX_DEFAULT);
  if (!c) return NULL;
  nft_ctx_buffer_output(c);
  nft_ctx_buffer_error(c);
  if (json) nft_ctx_output_set_flags(c, NFT_CTX_OUTPUT_JSON);
  return c;
}

int egress_nft_run(const char *cmds, cr_error **err) {
  struct nft_ctx *c = ctx_new(false);
  if (!c) return cr_error_set(err, CR_E_EGRESS_UNAVAILABLE, ENOMEM, "nftables: no context");
  int r = nft_run_cmd_from_buffer(c, cmds);
  int ret = 0;
  if (r != 0) {
    const char *e = nft_ctx_get_error_buffer(c);
    ret = cr_error_set(err, CR_E_EGRESS_UNAVAILABLE, 0, "nftables: %s", e && *e ? e : "failed");
  }
  nft_ctx_free(c);
  return ret;
}

int egress_nft_run_each(const char *cmds) {
  int failed = 0;
  const char *p = cmds;
  while (p && *p) {
    const char *nl = strchr(p, '\n');
    size_t n = nl ? (size_t)(nl - p) : strlen(p);
    char *line = strndup(p, n);
    if (line && *line) {
      cr_error *e = NULL;
      if (egress_nft_run(line, &e) < 0) failed++;
      cr_error_free(e);
    }
    free(line);
    p = nl ? nl + 1 : NULL;
  }
  return failed;
}

int egress_nft_delete_table(const char *table, cr_error **err) {
  if (!egress_nft_name_valid(table))
    return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0, "bad nftables table name");
  char cmd[96];
  snprintf(cmd, sizeof(cmd), "delete table inet %s\n", table);
  return egress_nft_run(cmd, err);
}

int egress_nft_list_ids(const char *table, char ***ret, size_t *ret_n, cr_error **err) {
  *ret = NULL;
  *ret_n = 0;
  struct nft_ctx *c = ctx_new(true);
  if (!c) return cr_error_set(err, CR_E_EGRESS_UNAVAILABLE, ENOMEM, "nftables: no context");
  char cmd[96];
  snprintf(cmd, sizeof(cmd), "list chains inet");
  int r = nft_run_cmd_from_buffer(c, cmd);
  if (r != 0) {
    nft_ctx_free(c);
    return 0; /* no inet tables at all */
  }
  json_error_t je;
  json_t *j = json_loads(nft_ctx_get_output_buffer(c), 0, &je);
  nft_ctx_free(c);
  json_t *arr = json_object_get(j, "nftables");
  size_t i;
  json_t *o;
  char **ids = NULL;
  size_t n = 0;
  json_array_foreach(arr, i, o) {
    json_t *ch = json_object_get(o, "chain");
    const char *tn = json_string_value(json_object_get(ch, "table"));
    const char *name = json_string_value(json_object_get(ch, "name"));
    if (!tn || !name || (table && strcmp(tn, table)) || strncmp(name, "f_", 2)) continue;
    char **nv = realloc(ids, (n + 1) * sizeof(*ids));
    if (!nv) break;
    ids = nv;
    if ((ids[n] = strdup(name + 2))) n++;
  }
  json_decref(j);
  *ret = ids;
  *ret_n = n;
  return 0;
}
