/* cleanroom.yaml: network rules (allow/deny entries, ports, canonical order). */
#include "policy/walk.h"

/* ---- network entries ---- */

void policy_rule_done(policy_rule *r) {
  free(r->host);
  free(r->ports);
  free(r->reason);
}

static bool all_digits_dots(const char *s) {
  bool digit = false;
  for (; *s; s++) {
    if (*s >= '0' && *s <= '9') digit = true;
    else if (*s != '.') return false;
  }
  return digit;
}

static int parse_port(const char *s, long *ret) {
  long v = 0;
  if (!*s) return -EINVAL;
  for (; *s; s++) {
    if (*s < '0' || *s > '9') return -EINVAL;
    if (v < 1000000) v = v * 10 + (*s - '0');
  }
  *ret = v;
  return 0;
}

/* Parses "host", "host:port", "[v6]:port", "v6", "cidr", "cidr:port" into r
 * (kind, host, addr) and *ret_port (-1 when no port). */
static bool parse_target(ctx *c, const policy_node *n, const char *path, const char *text,
                         policy_rule *r, long *ret_port) {
  char buf[1100];
  size_t len = strlen(text);
  *ret_port = -1;
  if (len == 0) {
    policy_err_at(c, n, path, "empty host");
    return false;
  }
  if (len >= sizeof(buf)) {
    policy_err_at(c, n, path, "host too long");
    return false;
  }
  memcpy(buf, text, len + 1);
  char *host = buf;
  char *port = NULL;
  if (buf[0] == '[') {
    char *close = strchr(buf, ']');
    if (!close) {
      policy_err_at(c, n, path, "missing ']' in '%s'", text);
      return false;
    }
    *close = '\0';
    host = buf + 1;
    if (close[1] == ':') port = close + 2;
    else if (close[1] != '\0') {
      policy_err_at(c, n, path, "expected ':port' after ']' in '%s'", text);
      return false;
    }
  } else {
    char *colon = strchr(buf, ':');
    if (colon && !strchr(colon + 1, ':')) {
      *colon = '\0';
      port = colon + 1;
    }
  }
  if (port) {
    long v;
    if (parse_port(port, &v) < 0) {
      policy_err_at(c, n, path, "invalid port '%s' (expected a number 1-65535)", port);
      return false;
    }
    if (v < 1 || v > 65535) {
      policy_err_at(c, n, path, "port %ld out of range (1-65535)", v);
      return false;
    }
    *ret_port = v;
  }
  bool host_bits = false;
  int a = policy_addr_parse(host, &r->addr, &host_bits);
  if (a == 0) {
    unsigned full = r->addr.family == AF_INET ? 32 : 128;
    r->kind = r->addr.prefix == full ? POLICY_RULE_IP : POLICY_RULE_CIDR;
    char canon[64];
    policy_addr_format(&r->addr, canon, sizeof(canon));
    if (host_bits)
      policy_warn_at(c, n, path, "'%s' has bits set past the prefix length; using %s", host, canon);
    r->host = strdup(canon);
    if (!r->host) c->oom = true;
    return r->host != NULL;
  }
  if (a == -ERANGE) {
    policy_err_at(c, n, path, "prefix length out of range in '%s'", host);
    return false;
  }
  if (strchr(host, '/')) {
    policy_err_at(c, n, path, "invalid CIDR '%s'", host);
    return false;
  }
  if (strchr(host, ':')) {
    policy_err_at(c, n, path, "invalid IPv6 address '%s' (write '[addr]:port' for a port)", host);
    return false;
  }
  if (all_digits_dots(host)) {
    policy_err_at(c, n, path, "invalid IPv4 address '%s'", host);
    return false;
  }
  const char *problem = NULL;
  int rn = policy_normalize_host(host, &r->host, &problem);
  if (rn == -ENOMEM) {
    c->oom = true;
    return false;
  }
  if (rn < 0) {
    policy_err_at(c, n, path, "%s: '%s'", problem ? problem : "invalid host", host);
    return false;
  }
  r->kind = r->host[0] == '*' ? POLICY_RULE_WILDCARD : POLICY_RULE_HOST;
  return true;
}

static int cmp_port(const void *a, const void *b) {
  return (int)*(const uint16_t *)a - (int)*(const uint16_t *)b;
}

static void sort_ports(policy_rule *r) {
  if (r->n_ports == 0) return;
  qsort(r->ports, r->n_ports, sizeof(uint16_t), cmp_port);
  size_t u = 0;
  for (size_t i = 0; i < r->n_ports; i++)
    if (u == 0 || r->ports[u - 1] != r->ports[i]) r->ports[u++] = r->ports[i];
  r->n_ports = u;
}

static bool parse_entry(ctx *c, const policy_node *n, const char *path, bool allow,
                        policy_rule *r) {
  static const char *const keys[] = {"host", "ports", "reason", NULL};
  long port = -1;
  const policy_node *ports_node = NULL;
  if (n->type == POLICY_NODE_SCALAR && !policy_is_null(n)) {
    if (!parse_target(c, n, path, n->value, r, &port)) return false;
  } else if (n->type == POLICY_NODE_MAP) {
    policy_check_keys(c, n, path, keys);
    const policy_node *h = policy_map_get(n, "host");
    char p[PATH_MAX_LEN];
    if (!h) {
      policy_err_at(c, n, path, "missing 'host'");
      return false;
    }
    policy_join_path(p, path, "host");
    if (h->type != POLICY_NODE_SCALAR || policy_is_null(h)) {
      policy_err_at(c, h, p, "expected a host name, address or CIDR, got %s", policy_type_name(h));
      return false;
    }
    if (!parse_target(c, h, p, h->value, r, &port)) return false;
    const policy_node *reason = policy_map_get(n, "reason");
    if (reason) {
      policy_join_path(p, path, "reason");
      r->reason = policy_get_string(c, reason, p, false);
    }
    ports_node = policy_map_get(n, "ports");
    if (ports_node && port >= 0) {
      policy_join_path(p, path, "ports");
      policy_err_at(c, ports_node, p, "port given both in 'host' and in 'ports'");
      return false;
    }
    if (ports_node) {
      policy_join_path(p, path, "ports");
      if (ports_node->type == POLICY_NODE_SCALAR && !policy_is_null(ports_node)) {
        uint64_t v;
        if (!policy_get_uint(c, ports_node, p, 1, 65535, &v)) return false;
        port = (long)v;
        ports_node = NULL;
      } else if (!policy_expect_type(c, ports_node, p, POLICY_NODE_SEQ)) {
        return false;
      } else if (ports_node->n == 0) {
        policy_err_at(c, ports_node, p,
               allow ? "empty list; omit 'ports' to allow 80 and 443"
                     : "empty list; omit 'ports' to deny every port");
        return false;
      } else if (ports_node->n > 1024) {
        policy_err_at(c, ports_node, p, "more than 1024 ports");
        return false;
      }
    }
  } else {
    policy_err_at(c, n, path, "expected 'host:port' or a mapping with 'host', got %s", policy_type_name(n));
    return false;
  }
  if (ports_node) {
    r->ports = calloc(ports_node->n, sizeof(uint16_t));
    if (!r->ports) {
      c->oom = true;
      return false;
    }
    bool ok = true;
    for (size_t i = 0; i < ports_node->n; i++) {
      char p[PATH_MAX_LEN], pp[PATH_MAX_LEN];
      policy_join_path(pp, path, "ports");
      policy_index_path(p, pp, i);
      uint64_t v;
      const policy_node *pn = ports_node->items[i];
      if (pn->type == POLICY_NODE_SCALAR && pn->plain) {
        long lv;
        if (parse_port(pn->value, &lv) == 0 && (lv < 1 || lv > 65535)) {
          policy_err_at(c, pn, p, "port %ld out of range (1-65535)", lv);
          ok = false;
          continue;
        }
      }
      if (!policy_get_uint(c, pn, p, 1, 65535, &v)) {
        ok = false;
        continue;
      }
      r->ports[r->n_ports++] = (uint16_t)v;
    }
    if (!ok) return false;
  } else if (port >= 0) {
    r->ports = calloc(1, sizeof(uint16_t));
    if (!r->ports) {
      c->oom = true;
      return false;
    }
    r->ports[r->n_ports++] = (uint16_t)port;
  } else if (allow) {
    r->ports = calloc(2, sizeof(uint16_t));
    if (!r->ports) {
      c->oom = true;
      return false;
    }
    r->ports[0] = 80;
    r->ports[1] = 443;
    r->n_ports = 2;
  }
  sort_ports(r);
  return true;
}

static int cmp_rule(const void *a, const void *b) {
  const policy_rule *x = a, *y = b;
  int k = strcmp(x->host, y->host);
  if (k) return k;
  if (!x->reason != !y->reason) return x->reason ? 1 : -1;
  if (x->reason && y->reason) return strcmp(x->reason, y->reason);
  return 0;
}

/* Sorts rules and merges those with the same host and reason (port union;
 * "all ports" absorbs). */
static void canonicalize_rules(ctx *c, policy_rule *rules, size_t *n) {
  qsort(rules, *n, sizeof(policy_rule), cmp_rule);
  size_t u = 0;
  for (size_t i = 0; i < *n; i++) {
    if (u > 0 && cmp_rule(&rules[u - 1], &rules[i]) == 0) {
      policy_rule *t = &rules[u - 1], *s = &rules[i];
      if (t->n_ports == 0 || s->n_ports == 0) {
        free(t->ports);
        t->ports = NULL;
        t->n_ports = 0;
      } else {
        uint16_t *m = realloc(t->ports, (t->n_ports + s->n_ports) * sizeof(uint16_t));
        if (!m) {
          c->oom = true;
        } else {
          memcpy(m + t->n_ports, s->ports, s->n_ports * sizeof(uint16_t));
          t->ports = m;
          t->n_ports += s->n_ports;
          sort_ports(t);
        }
      }
      policy_rule_done(s);
      continue;
    }
    rules[u++] = rules[i];
  }
  *n = u;
}

void policy_parse_rules(ctx *c, const policy_node *n, const char *path, bool allow,
                        policy_rule **ret, size_t *ret_n) {
  if (policy_is_null(n)) return;
  if (!policy_expect_type(c, n, path, POLICY_NODE_SEQ)) return;
  if (n->n > POLICY_MAX_RULES) {
    policy_err_at(c, n, path, "more than %d entries", POLICY_MAX_RULES);
    return;
  }
  policy_rule *rules = calloc(n->n ? n->n : 1, sizeof(policy_rule));
  if (!rules) {
    c->oom = true;
    return;
  }
  size_t k = 0;
  for (size_t i = 0; i < n->n; i++) {
    char p[PATH_MAX_LEN];
    policy_index_path(p, path, i);
    policy_rule r = {0};
    if (parse_entry(c, n->items[i], p, allow, &r))
      rules[k++] = r;
    else
      policy_rule_done(&r);
  }
  canonicalize_rules(c, rules, &k);
  *ret = rules;
  *ret_n = k;
}

void policy_parse_network(ctx *c, const policy_node *n, const char *path) {
  static const char *const keys[] = {"default", "allow", "deny", "git_push", NULL};
  if (policy_is_null(n) || !policy_expect_type(c, n, path, POLICY_NODE_MAP)) return;
  policy_check_keys(c, n, path, keys);
  char p[PATH_MAX_LEN];
  const policy_node *d = policy_map_get(n, "default");
  if (d) {
    policy_join_path(p, path, "default");
    if (d->type == POLICY_NODE_SCALAR && !strcmp(d->value, "deny")) {
      c->p->network_default_allow = false;
    } else if (d->type == POLICY_NODE_SCALAR && !strcmp(d->value, "allow")) {
      policy_err_at(c, d, p,
             "'allow' is not supported in version 1; keep 'deny' and list what the sandbox "
             "may reach under 'allow'");
    } else {
      policy_err_at(c, d, p, "expected 'deny', got %s%s%s",
             d->type == POLICY_NODE_SCALAR ? "'" : "",
             d->type == POLICY_NODE_SCALAR ? d->value : policy_type_name(d),
             d->type == POLICY_NODE_SCALAR ? "'" : "");
    }
  }
  const policy_node *a = policy_map_get(n, "allow");
  if (a) {
    policy_join_path(p, path, "allow");
    policy_parse_rules(c, a, p, true, &c->p->allow, &c->p->n_allow);
  }
  const policy_node *dn = policy_map_get(n, "deny");
  if (dn) {
    policy_join_path(p, path, "deny");
    policy_parse_rules(c, dn, p, false, &c->p->deny, &c->p->n_deny);
  }
  const policy_node *gp = policy_map_get(n, "git_push"); /* entries as in allow (80, 443 by default) */
  if (gp) {
    policy_join_path(p, path, "git_push");
    policy_parse_rules(c, gp, p, true, &c->p->git_push, &c->p->n_git_push);
  }
}
