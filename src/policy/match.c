/* Egress matching (egress.md): deny > exact allow > wildcard allow > default. */
#include "policy/policy-internal.h"

#include <string.h>

static bool has_port(const policy_rule *r, uint16_t port) {
  if (r->n_ports == 0) return true; /* deny rules without ports: every port */
  for (size_t i = 0; i < r->n_ports; i++)
    if (r->ports[i] == port) return true;
  return false;
}

/* "*.example.com" matches "a.example.com" and "a.b.example.com", not
 * "example.com" nor "badexample.com". */
static bool wildcard_matches(const char *pattern, const char *host) {
  const char *suffix = pattern + 1; /* ".example.com" */
  size_t sl = strlen(suffix), hl = strlen(host);
  return hl > sl && !strcmp(host + hl - sl, suffix);
}

static bool rule_matches_name(const policy_rule *r, const char *host) {
  if (r->kind == POLICY_RULE_HOST) return !strcmp(r->host, host);
  if (r->kind == POLICY_RULE_WILDCARD) return wildcard_matches(r->host, host);
  return false;
}

static bool rule_matches_addr(const policy_rule *r, const policy_addr *a) {
  if (r->kind != POLICY_RULE_IP && r->kind != POLICY_RULE_CIDR) return false;
  return policy_addr_contains(&r->addr, a);
}

static int verdict(int v, const char *reason, const char **ret_reason) {
  if (ret_reason) *ret_reason = reason;
  return v;
}

/* Parses an IP literal query, with or without brackets. */
static bool query_addr(const char *host, policy_addr *ret) {
  char buf[INET6_ADDRSTRLEN + 4];
  size_t len = strnlen(host, sizeof(buf));
  if (len >= sizeof(buf) || len == 0) return false;
  if (host[0] == '[') {
    if (len < 3 || host[len - 1] != ']') return false;
    memcpy(buf, host + 1, len - 2);
    buf[len - 2] = '\0';
  } else {
    memcpy(buf, host, len + 1);
  }
  if (strchr(buf, '/')) return false;
  bool host_bits;
  return policy_addr_parse(buf, ret, &host_bits) == 0;
}

int policy_match(const policy *p, const char *host, uint16_t port, const char **ret_reason) {
  if (!p || !host) return verdict(POLICY_DENY, POLICY_REASON_HOST_INVALID, ret_reason);
  if (port == 0) return verdict(POLICY_DENY, POLICY_REASON_PORT_NOT_ALLOWED, ret_reason);

  policy_addr a;
  if (query_addr(host, &a)) {
    for (size_t i = 0; i < p->n_deny; i++)
      if (rule_matches_addr(&p->deny[i], &a) && has_port(&p->deny[i], port))
        return verdict(POLICY_DENY, POLICY_REASON_HOST_DENIED, ret_reason);
    bool any = false;
    for (size_t i = 0; i < p->n_allow; i++)
      if (rule_matches_addr(&p->allow[i], &a)) {
        any = true;
        if (has_port(&p->allow[i], port))
          return verdict(POLICY_ALLOW, POLICY_REASON_ALLOWED, ret_reason);
      }
    /* an IP literal is judged only by IP/CIDR rules */
    return verdict(POLICY_DENY,
                   any ? POLICY_REASON_PORT_NOT_ALLOWED : POLICY_REASON_HOST_NOT_ALLOWED,
                   ret_reason);
  }

  _cleanup_free_ char *name = NULL;
  if (host[0] == '*' || policy_normalize_host(host, &name, NULL) < 0)
    return verdict(POLICY_DENY, POLICY_REASON_HOST_INVALID, ret_reason);

  for (size_t i = 0; i < p->n_deny; i++)
    if (rule_matches_name(&p->deny[i], name) && has_port(&p->deny[i], port))
      return verdict(POLICY_DENY, POLICY_REASON_HOST_DENIED, ret_reason);

  /* exact allow rules decide when any names this host */
  bool exact = false;
  for (size_t i = 0; i < p->n_allow; i++)
    if (p->allow[i].kind == POLICY_RULE_HOST && !strcmp(p->allow[i].host, name)) {
      exact = true;
      if (has_port(&p->allow[i], port))
        return verdict(POLICY_ALLOW, POLICY_REASON_ALLOWED, ret_reason);
    }
  if (exact) return verdict(POLICY_DENY, POLICY_REASON_PORT_NOT_ALLOWED, ret_reason);

  bool wild = false;
  for (size_t i = 0; i < p->n_allow; i++)
    if (p->allow[i].kind == POLICY_RULE_WILDCARD && wildcard_matches(p->allow[i].host, name)) {
      wild = true;
      if (has_port(&p->allow[i], port))
        return verdict(POLICY_ALLOW, POLICY_REASON_ALLOWED, ret_reason);
    }
  if (wild) return verdict(POLICY_DENY, POLICY_REASON_PORT_NOT_ALLOWED, ret_reason);

  if (p->network_default_allow) return verdict(POLICY_ALLOW, POLICY_REASON_ALLOWED, ret_reason);
  return verdict(POLICY_DENY, POLICY_REASON_HOST_NOT_ALLOWED, ret_reason);
}

bool policy_host_may_resolve(const policy *p, const char *host) {
  _cleanup_free_ char *name = NULL;
  if (!p || !host || host[0] == '*' || policy_normalize_host(host, &name, NULL) < 0) return false;
  for (size_t i = 0; i < p->n_deny; i++)
    if (p->deny[i].n_ports == 0 && rule_matches_name(&p->deny[i], name)) return false;
  if (p->network_default_allow) return true;
  for (size_t i = 0; i < p->n_allow; i++)
    if (rule_matches_name(&p->allow[i], name)) return true;
  return false;
}

/* Whether one of rules (allow-like entries) matches host:port. */
static bool rules_allow(const policy_rule *rules, size_t n, const char *host, uint16_t port) {
  if (!host || port == 0) return false;
  policy_addr a;
  bool is_addr = query_addr(host, &a);
  _cleanup_free_ char *name = NULL;
  if (!is_addr && (host[0] == '*' || policy_normalize_host(host, &name, NULL) < 0)) return false;
  for (size_t j = 0; j < n; j++) {
    const policy_rule *r = &rules[j];
    bool m = is_addr ? rule_matches_addr(r, &a) : rule_matches_name(r, name);
    if (m && has_port(r, port)) return true;
  }
  return false;
}

bool policy_secret_allows(const policy *p, const char *secret, const char *host, uint16_t port) {
  if (!p || !secret) return false;
  for (size_t i = 0; i < p->n_secrets; i++)
    if (!strcmp(p->secrets[i].name, secret) &&
        rules_allow(p->secrets[i].hosts, p->secrets[i].n_hosts, host, port))
      return true;
  return false;
}

bool policy_git_push_allows(const policy *p, const char *host, uint16_t port) {
  return p && rules_allow(p->git_push, p->n_git_push, host, port);
}

size_t policy_secret_count(const policy *p) { return p ? p->n_secrets : 0; }
const char *policy_secret_name(const policy *p, size_t i) {
  return p && i < p->n_secrets ? p->secrets[i].name : NULL;
}
