/* cleanroom.yaml: schema walk, validation, defaults, normalization. */
#include "policy/policy-internal.h"
#include "util/fs.h"

#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>

typedef struct ctx {
  const char *filename;
  policy_diags *diags;
  policy *p;
  bool oom;
} ctx;

#define PATH_MAX_LEN 256

static void diag_add(ctx *c, policy_severity sev, unsigned line, unsigned column,
                     const char *path, const char *fmt, va_list ap) {
  policy_diags *d = c->diags;
  if (sev == POLICY_ERROR) d->n_errors++;
  else d->n_warnings++;
  if (d->n >= POLICY_MAX_DIAGS) {
    d->n_dropped++;
    return;
  }
  if ((d->n & (d->n - 1)) == 0) {
    size_t cap = d->n ? d->n * 2 : 2;
    policy_diag *items = realloc(d->items, cap * sizeof(*items));
    if (!items) {
      c->oom = true;
      return;
    }
    d->items = items;
  }
  policy_diag *g = &d->items[d->n];
  *g = (policy_diag){.severity = sev, .line = line, .column = column};
  g->file = strdup(c->filename);
  g->path = strdup(path ? path : "");
  if (vasprintf(&g->message, fmt, ap) < 0) g->message = NULL;
  if (!g->file || !g->path || !g->message) {
    free(g->file);
    free(g->path);
    free(g->message);
    c->oom = true;
    return;
  }
  d->n++;
}

_printf_(4, 5) static void err_at(ctx *c, const policy_node *n, const char *path,
                                  const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  diag_add(c, POLICY_ERROR, n ? n->line : 1, n ? n->column : 1, path, fmt, ap);
  va_end(ap);
}

_printf_(4, 5) static void warn_at(ctx *c, const policy_node *n, const char *path,
                                   const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  diag_add(c, POLICY_WARNING, n ? n->line : 1, n ? n->column : 1, path, fmt, ap);
  va_end(ap);
}

/* ---- tree helpers ---- */

static const char *type_name(const policy_node *n) {
  switch (n->type) {
  case POLICY_NODE_MAP: return "a mapping";
  case POLICY_NODE_SEQ: return "a list";
  default: break;
  }
  if (n->plain && (n->len == 0 || !strcmp(n->value, "~") || !strcmp(n->value, "null")))
    return "nothing (null)";
  return "a scalar";
}

static bool is_null(const policy_node *n) {
  return n->type == POLICY_NODE_SCALAR && n->plain &&
         (n->len == 0 || !strcmp(n->value, "~") || !strcmp(n->value, "null") ||
          !strcmp(n->value, "Null") || !strcmp(n->value, "NULL"));
}

/* Paths are truncated when longer than PATH_MAX_LEN (only in messages). */
static void join_path(char *buf, const char *base, const char *key) {
  int r;
  if (!base || !*base)
    r = snprintf(buf, PATH_MAX_LEN, "%s", key);
  else
    r = snprintf(buf, PATH_MAX_LEN, "%s.%s", base, key);
  if (r < 0) buf[0] = '\0';
}

static void index_path(char *buf, const char *base, size_t i) {
  if (snprintf(buf, PATH_MAX_LEN, "%s[%zu]", base, i) < 0) buf[0] = '\0';
}

static const policy_node *map_get(const policy_node *map, const char *key) {
  if (!map || map->type != POLICY_NODE_MAP) return NULL;
  for (size_t i = 0; i + 1 < map->n; i += 2) {
    const policy_node *k = map->items[i];
    if (k->type == POLICY_NODE_SCALAR && !strcmp(k->value, key)) return map->items[i + 1];
  }
  return NULL;
}

/* Reports non-scalar keys, duplicates and unknown keys (with a suggestion). */
static void check_keys(ctx *c, const policy_node *map, const char *path,
                       const char *const *known) {
  for (size_t i = 0; i + 1 < map->n; i += 2) {
    const policy_node *k = map->items[i];
    if (k->type != POLICY_NODE_SCALAR) {
      err_at(c, k, path, "keys must be plain strings, not %s", type_name(k));
      continue;
    }
    bool dup = false;
    for (size_t j = 0; j < i; j += 2) {
      const policy_node *o = map->items[j];
      if (o->type == POLICY_NODE_SCALAR && !strcmp(o->value, k->value)) {
        char p[PATH_MAX_LEN];
        join_path(p, path, k->value);
        err_at(c, k, p, "duplicate key '%s' (first at line %u, column %u)", k->value,
               o->line, o->column);
        dup = true;
        break;
      }
    }
    if (dup) continue;
    bool ok = false;
    const char *best = NULL;
    size_t best_d = SIZE_MAX;
    for (size_t j = 0; known[j]; j++) {
      if (!strcmp(known[j], k->value)) {
        ok = true;
        break;
      }
      size_t d = policy_edit_distance(k->value, known[j]);
      if (d < best_d) {
        best_d = d;
        best = known[j];
      }
    }
    if (ok) continue;
    char p[PATH_MAX_LEN];
    join_path(p, path, k->value);
    if (best && best_d <= 2 && best_d < strlen(best))
      err_at(c, k, p, "unknown key '%s'; did you mean '%s'?", k->value, best);
    else {
      char list[PATH_MAX_LEN] = "";
      size_t off = 0;
      for (size_t j = 0; known[j] && off < sizeof(list); j++)
        off += (size_t)snprintf(list + off, sizeof(list) - off, "%s%s", j ? ", " : "", known[j]);
      err_at(c, k, p, "unknown key '%s' (expected one of: %s)", k->value, list);
    }
  }
}

static bool expect_type(ctx *c, const policy_node *n, const char *path, policy_node_type t) {
  if (n->type == t) return true;
  err_at(c, n, path, "expected %s, got %s",
         t == POLICY_NODE_MAP ? "a mapping" : t == POLICY_NODE_SEQ ? "a list" : "a value",
         type_name(n));
  return false;
}

/* A non-empty string scalar. Returns a new copy or NULL (error reported). */
static char *get_string(ctx *c, const policy_node *n, const char *path, bool allow_empty) {
  if (n->type != POLICY_NODE_SCALAR || (is_null(n) && !allow_empty)) {
    err_at(c, n, path, "expected a string, got %s", type_name(n));
    return NULL;
  }
  if (!allow_empty && n->len == 0) {
    err_at(c, n, path, "must not be empty");
    return NULL;
  }
  if (strlen(n->value) != n->len) {
    err_at(c, n, path, "NUL character in string");
    return NULL;
  }
  char *s = strdup(n->value);
  if (!s) c->oom = true;
  return s;
}

static bool get_bool(ctx *c, const policy_node *n, const char *path, bool *ret) {
  static const char *const t[] = {"true", "True", "TRUE"}, *const f[] = {"false", "False", "FALSE"};
  if (n->type == POLICY_NODE_SCALAR && n->plain) {
    for (size_t i = 0; i < ELEMENTSOF(t); i++) {
      if (!strcmp(n->value, t[i])) {
        *ret = true;
        return true;
      }
      if (!strcmp(n->value, f[i])) {
        *ret = false;
        return true;
      }
    }
  }
  if (n->type == POLICY_NODE_SCALAR)
    err_at(c, n, path, "expected true or false, got '%s'", n->value);
  else
    err_at(c, n, path, "expected true or false, got %s", type_name(n));
  return false;
}

/* A plain decimal integer in [min, max]. */
static bool get_uint(ctx *c, const policy_node *n, const char *path, uint64_t min, uint64_t max,
                     uint64_t *ret) {
  if (n->type != POLICY_NODE_SCALAR || !n->plain || n->len == 0) {
    err_at(c, n, path, "expected an integer, got %s", n->type == POLICY_NODE_SCALAR && !is_null(n) ? "a string" : type_name(n));
    return false;
  }
  const char *s = n->value;
  uint64_t v = 0;
  bool big = false;
  if (*s == '+') s++;
  if (!*s) goto bad;
  for (; *s; s++) {
    if (*s < '0' || *s > '9') goto bad;
    if (v > (UINT64_MAX - 9) / 10) big = true;
    else v = v * 10 + (uint64_t)(*s - '0');
  }
  if (big || v < min || v > max) {
    err_at(c, n, path, "%s out of range (%llu-%llu)", n->value, (unsigned long long)min,
           (unsigned long long)max);
    return false;
  }
  *ret = v;
  return true;
bad:
  err_at(c, n, path, "expected an integer, got '%s'", n->value);
  return false;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* In place: drops "." components, repeated and trailing slashes
 * ("./a//b/" -> "a/b"); a leading '/' stays. */
static void normalize_path(char *s) {
  bool abs = s[0] == '/';
  size_t w = 0, r = 0, len = strlen(s);
  if (abs) w = r = 1;
  while (r < len) {
    size_t e = r;
    while (e < len && s[e] != '/') e++;
    size_t n = e - r;
    if (n > 0 && !(n == 1 && s[r] == '.')) {
      if (w > (abs ? 1u : 0u)) s[w++] = '/';
      memmove(s + w, s + r, n);
      w += n;
    }
    r = e + 1;
  }
  s[w] = '\0';
}

/* A list of paths, normalized, sorted and de-duplicated. */
static void get_string_list(ctx *c, const policy_node *n, const char *path, bool repo_relative,
                            char ***ret, size_t *ret_n) {
  if (is_null(n)) return;
  if (!expect_type(c, n, path, POLICY_NODE_SEQ)) return;
  char **v = calloc(n->n ? n->n : 1, sizeof(char *));
  if (!v) {
    c->oom = true;
    return;
  }
  size_t k = 0;
  for (size_t i = 0; i < n->n; i++) {
    char p[PATH_MAX_LEN];
    index_path(p, path, i);
    char *s = get_string(c, n->items[i], p, false);
    if (!s) continue;
    bool dotdot = !strcmp(s, "..") || !strncmp(s, "../", 3) || strstr(s, "/../") ||
                  (strlen(s) >= 3 && !strcmp(s + strlen(s) - 3, "/.."));
    if (dotdot) {
      err_at(c, n->items[i], p, "'..' is not allowed in '%s'", s);
      free(s);
      continue;
    }
    if (repo_relative && s[0] == '/') {
      err_at(c, n->items[i], p, "'%s' must be a path relative to the repository root", s);
      free(s);
      continue;
    }
    normalize_path(s);
    if (!*s || !strcmp(s, ".")) {
      err_at(c, n->items[i], p, "empty path");
      free(s);
      continue;
    }
    v[k++] = s;
  }
  qsort(v, k, sizeof(char *), cmp_str);
  size_t u = 0;
  for (size_t i = 0; i < k; i++) {
    if (u > 0 && !strcmp(v[u - 1], v[i])) {
      free(v[i]);
      continue;
    }
    v[u++] = v[i];
  }
  *ret = v;
  *ret_n = u;
}

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
    err_at(c, n, path, "empty host");
    return false;
  }
  if (len >= sizeof(buf)) {
    err_at(c, n, path, "host too long");
    return false;
  }
  memcpy(buf, text, len + 1);
  char *host = buf;
  char *port = NULL;
  if (buf[0] == '[') {
    char *close = strchr(buf, ']');
    if (!close) {
      err_at(c, n, path, "missing ']' in '%s'", text);
      return false;
    }
    *close = '\0';
    host = buf + 1;
    if (close[1] == ':') port = close + 2;
    else if (close[1] != '\0') {
      err_at(c, n, path, "expected ':port' after ']' in '%s'", text);
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
      err_at(c, n, path, "invalid port '%s' (expected a number 1-65535)", port);
      return false;
    }
    if (v < 1 || v > 65535) {
      err_at(c, n, path, "port %ld out of range (1-65535)", v);
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
      warn_at(c, n, path, "'%s' has bits set past the prefix length; using %s", host, canon);
    r->host = strdup(canon);
    if (!r->host) c->oom = true;
    return r->host != NULL;
  }
  if (a == -ERANGE) {
    err_at(c, n, path, "prefix length out of range in '%s'", host);
    return false;
  }
  if (strchr(host, '/')) {
    err_at(c, n, path, "invalid CIDR '%s'", host);
    return false;
  }
  if (strchr(host, ':')) {
    err_at(c, n, path, "invalid IPv6 address '%s' (write '[addr]:port' for a port)", host);
    return false;
  }
  if (all_digits_dots(host)) {
    err_at(c, n, path, "invalid IPv4 address '%s'", host);
    return false;
  }
  const char *problem = NULL;
  int rn = policy_normalize_host(host, &r->host, &problem);
  if (rn == -ENOMEM) {
    c->oom = true;
    return false;
  }
  if (rn < 0) {
    err_at(c, n, path, "%s: '%s'", problem ? problem : "invalid host", host);
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
  if (n->type == POLICY_NODE_SCALAR && !is_null(n)) {
    if (!parse_target(c, n, path, n->value, r, &port)) return false;
  } else if (n->type == POLICY_NODE_MAP) {
    check_keys(c, n, path, keys);
    const policy_node *h = map_get(n, "host");
    char p[PATH_MAX_LEN];
    if (!h) {
      err_at(c, n, path, "missing 'host'");
      return false;
    }
    join_path(p, path, "host");
    if (h->type != POLICY_NODE_SCALAR || is_null(h)) {
      err_at(c, h, p, "expected a host name, address or CIDR, got %s", type_name(h));
      return false;
    }
    if (!parse_target(c, h, p, h->value, r, &port)) return false;
    const policy_node *reason = map_get(n, "reason");
    if (reason) {
      join_path(p, path, "reason");
      r->reason = get_string(c, reason, p, false);
    }
    ports_node = map_get(n, "ports");
    if (ports_node && port >= 0) {
      join_path(p, path, "ports");
      err_at(c, ports_node, p, "port given both in 'host' and in 'ports'");
      return false;
    }
    if (ports_node) {
      join_path(p, path, "ports");
      if (ports_node->type == POLICY_NODE_SCALAR && !is_null(ports_node)) {
        uint64_t v;
        if (!get_uint(c, ports_node, p, 1, 65535, &v)) return false;
        port = (long)v;
        ports_node = NULL;
      } else if (!expect_type(c, ports_node, p, POLICY_NODE_SEQ)) {
        return false;
      } else if (ports_node->n == 0) {
        err_at(c, ports_node, p,
               allow ? "empty list; omit 'ports' to allow 80 and 443"
                     : "empty list; omit 'ports' to deny every port");
        return false;
      } else if (ports_node->n > 1024) {
        err_at(c, ports_node, p, "more than 1024 ports");
        return false;
      }
    }
  } else {
    err_at(c, n, path, "expected 'host:port' or a mapping with 'host', got %s", type_name(n));
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
      join_path(pp, path, "ports");
      index_path(p, pp, i);
      uint64_t v;
      const policy_node *pn = ports_node->items[i];
      if (pn->type == POLICY_NODE_SCALAR && pn->plain) {
        long lv;
        if (parse_port(pn->value, &lv) == 0 && (lv < 1 || lv > 65535)) {
          err_at(c, pn, p, "port %ld out of range (1-65535)", lv);
          ok = false;
          continue;
        }
      }
      if (!get_uint(c, pn, p, 1, 65535, &v)) {
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

static void parse_rules(ctx *c, const policy_node *n, const char *path, bool allow,
                        policy_rule **ret, size_t *ret_n) {
  if (is_null(n)) return;
  if (!expect_type(c, n, path, POLICY_NODE_SEQ)) return;
  if (n->n > POLICY_MAX_RULES) {
    err_at(c, n, path, "more than %d entries", POLICY_MAX_RULES);
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
    index_path(p, path, i);
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

static void parse_network(ctx *c, const policy_node *n, const char *path) {
  static const char *const keys[] = {"default", "allow", "deny", NULL};
  if (is_null(n) || !expect_type(c, n, path, POLICY_NODE_MAP)) return;
  check_keys(c, n, path, keys);
  char p[PATH_MAX_LEN];
  const policy_node *d = map_get(n, "default");
  if (d) {
    join_path(p, path, "default");
    if (d->type == POLICY_NODE_SCALAR && !strcmp(d->value, "deny")) {
      c->p->network_default_allow = false;
    } else if (d->type == POLICY_NODE_SCALAR && !strcmp(d->value, "allow")) {
      err_at(c, d, p,
             "'allow' is not supported in version 1; keep 'deny' and list what the sandbox "
             "may reach under 'allow'");
    } else {
      err_at(c, d, p, "expected 'deny', got %s%s%s",
             d->type == POLICY_NODE_SCALAR ? "'" : "",
             d->type == POLICY_NODE_SCALAR ? d->value : type_name(d),
             d->type == POLICY_NODE_SCALAR ? "'" : "");
    }
  }
  const policy_node *a = map_get(n, "allow");
  if (a) {
    join_path(p, path, "allow");
    parse_rules(c, a, p, true, &c->p->allow, &c->p->n_allow);
  }
  const policy_node *dn = map_get(n, "deny");
  if (dn) {
    join_path(p, path, "deny");
    parse_rules(c, dn, p, false, &c->p->deny, &c->p->n_deny);
  }
}

/* ---- sandbox ---- */

void policy_step_done(policy_step *s) {
  free(s->name);
  free(s->command);
  for (size_t i = 0; i < s->n_input_files; i++) free(s->input_files[i]);
  free(s->input_files);
  for (size_t i = 0; i < s->n_output_dirs; i++) free(s->output_dirs[i]);
  free(s->output_dirs);
}

static bool name_ok(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > 63) return false;
  for (size_t i = 0; i < n; i++) {
    char ch = s[i];
    bool alnum = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
    if (!alnum && (i == 0 || (ch != '-' && ch != '_' && ch != '.'))) return false;
  }
  return true;
}

static void parse_steps(ctx *c, const policy_node *n, const char *path, policy_step **ret,
                        size_t *ret_n) {
  static const char *const keys[] = {"name", "command", "inputs", "outputs", NULL};
  static const char *const in_keys[] = {"files", NULL};
  static const char *const out_keys[] = {"dirs", NULL};
  if (is_null(n) || !expect_type(c, n, path, POLICY_NODE_SEQ)) return;
  if (n->n > 256) {
    err_at(c, n, path, "more than 256 entries");
    return;
  }
  policy_step *steps = calloc(n->n ? n->n : 1, sizeof(policy_step));
  if (!steps) {
    c->oom = true;
    return;
  }
  size_t k = 0;
  for (size_t i = 0; i < n->n; i++) {
    const policy_node *e = n->items[i];
    char p[PATH_MAX_LEN], q[PATH_MAX_LEN], r[PATH_MAX_LEN];
    index_path(p, path, i);
    if (!expect_type(c, e, p, POLICY_NODE_MAP)) continue;
    check_keys(c, e, p, keys);
    policy_step s = {0};
    const policy_node *v = map_get(e, "name");
    join_path(q, p, "name");
    if (!v)
      err_at(c, e, p, "missing 'name'");
    else if ((s.name = get_string(c, v, q, false)) && !name_ok(s.name))
      err_at(c, v, q,
             "invalid name '%s' (1-63 letters, digits, '-', '_' or '.', starting with a letter "
             "or digit)",
             s.name);
    else if (s.name)
      for (size_t j = 0; j < k; j++)
        if (!strcmp(steps[j].name, s.name)) {
          err_at(c, v, q, "duplicate name '%s'", s.name);
          break;
        }
    v = map_get(e, "command");
    join_path(q, p, "command");
    if (!v)
      err_at(c, e, p, "missing 'command'");
    else
      s.command = get_string(c, v, q, false);
    v = map_get(e, "inputs");
    join_path(q, p, "inputs");
    if (v && !is_null(v) && expect_type(c, v, q, POLICY_NODE_MAP)) {
      check_keys(c, v, q, in_keys);
      const policy_node *f = map_get(v, "files");
      join_path(r, q, "files");
      if (f) get_string_list(c, f, r, true, &s.input_files, &s.n_input_files);
    }
    v = map_get(e, "outputs");
    join_path(q, p, "outputs");
    if (v && !is_null(v) && expect_type(c, v, q, POLICY_NODE_MAP)) {
      check_keys(c, v, q, out_keys);
      const policy_node *d = map_get(v, "dirs");
      join_path(r, q, "dirs");
      if (d) get_string_list(c, d, r, false, &s.output_dirs, &s.n_output_dirs);
    }
    if (s.name && s.command)
      steps[k++] = s;
    else
      policy_step_done(&s);
  }
  *ret = steps;
  *ret_n = k;
}

/* [a-z0-9][a-z0-9_.-]{0,63}: a key of the host's credentials file */
static bool secret_name_ok(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > 64 || !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= '0' && s[0] <= '9')))
    return false;
  for (size_t i = 0; i < n; i++)
    if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || strchr("_.-", s[i])))
      return false;
  return true;
}

static int cmp_secret(const void *a, const void *b) {
  return strcmp(((const policy_secret *)a)->name, ((const policy_secret *)b)->name);
}

/* sandbox.secrets: [{name, hosts: [host | host:port | {host, ports}]}] */
static void parse_secrets(ctx *c, const policy_node *n, const char *path) {
  static const char *const keys[] = {"name", "hosts", NULL};
  if (is_null(n) || !expect_type(c, n, path, POLICY_NODE_SEQ)) return;
  if (n->n > 64) {
    err_at(c, n, path, "more than 64 secrets");
    return;
  }
  policy_secret *v = calloc(n->n ? n->n : 1, sizeof(*v));
  if (!v) {
    c->oom = true;
    return;
  }
  size_t k = 0;
  for (size_t i = 0; i < n->n; i++) {
    char p[PATH_MAX_LEN], q[PATH_MAX_LEN];
    index_path(p, path, i);
    const policy_node *e = n->items[i];
    if (!expect_type(c, e, p, POLICY_NODE_MAP)) continue;
    check_keys(c, e, p, keys);
    const policy_node *nm = map_get(e, "name"), *hs = map_get(e, "hosts");
    join_path(q, p, "name");
    char *name = nm ? get_string(c, nm, q, false) : NULL;
    if (!nm) err_at(c, e, p, "missing 'name' (the secret's key in the host's credentials file)");
    else if (name && !secret_name_ok(name))
      err_at(c, nm, q, "'%s' is not a secret name (lowercase letters, digits, '_', '.', '-'; at most 64)",
             name);
    bool dup = false;
    for (size_t j = 0; name && j < k; j++) dup |= !strcmp(v[j].name, name);
    if (dup) err_at(c, nm, q, "secret '%s' is listed twice", name);
    join_path(q, p, "hosts");
    if (!hs) err_at(c, e, p, "missing 'hosts' (the upstreams the secret may be sent to)");
    else if (hs->type == POLICY_NODE_SEQ && hs->n == 0)
      err_at(c, hs, q, "empty list: a secret must name the hosts it may be sent to");
    policy_secret s = {.name = name};
    if (hs) parse_rules(c, hs, q, true, &s.hosts, &s.n_hosts);
    if (!name || dup || !secret_name_ok(name) || !s.n_hosts) {
      for (size_t j = 0; j < s.n_hosts; j++) policy_rule_done(&s.hosts[j]);
      free(s.hosts);
      free(s.name);
      continue;
    }
    v[k++] = s;
  }
  qsort(v, k, sizeof(*v), cmp_secret);
  c->p->secrets = v;
  c->p->n_secrets = k;
}

static void parse_sandbox(ctx *c, const policy_node *n) {
  static const char *const keys[] = {"image",    "resources", "network", "docker",
                                     "dependencies", "services", "run",  "ttl_minutes",
                                     "secrets", NULL};
  static const char *const image_keys[] = {"ref", NULL};
  static const char *const res_keys[] = {"vcpus", "memory", "disk", NULL};
  static const char *const docker_keys[] = {"required", NULL};
  static const char *const run_keys[] = {"before", NULL};
  policy *p = c->p;
  char q[PATH_MAX_LEN];
  if (is_null(n) || !expect_type(c, n, "sandbox", POLICY_NODE_MAP)) return;
  check_keys(c, n, "sandbox", keys);

  const policy_node *v = map_get(n, "image");
  if (v && !is_null(v) && expect_type(c, v, "sandbox.image", POLICY_NODE_MAP)) {
    check_keys(c, v, "sandbox.image", image_keys);
    const policy_node *ref = map_get(v, "ref");
    if (!ref) {
      err_at(c, v, "sandbox.image", "missing 'ref'");
    } else if ((p->image_ref = get_string(c, ref, "sandbox.image.ref", false))) {
      const char *problem = NULL;
      if (!policy_image_ref_valid(p->image_ref, &p->image_pinned, &problem))
        err_at(c, ref, "sandbox.image.ref", "%s: '%s'", problem, p->image_ref);
      else if (!p->image_pinned)
        warn_at(c, ref, "sandbox.image.ref",
                "'%s' is not pinned to a digest; run 'cleanroom image bump-ref %s' to pin it",
                p->image_ref, p->image_ref);
    }
  }

  v = map_get(n, "resources");
  if (v && !is_null(v) && expect_type(c, v, "sandbox.resources", POLICY_NODE_MAP)) {
    check_keys(c, v, "sandbox.resources", res_keys);
    const policy_node *r = map_get(v, "vcpus");
    uint64_t u;
    if (r && get_uint(c, r, "sandbox.resources.vcpus", 1, 128, &u)) p->vcpus = (unsigned)u;
    static const struct {
      const char *key;
      uint64_t min, max;
    } sizes[] = {{"memory", 64, 1024 * 1024}, {"disk", 64, 16 * 1024 * 1024}};
    for (size_t i = 0; i < ELEMENTSOF(sizes); i++) {
      r = map_get(v, sizes[i].key);
      if (!r) continue;
      snprintf(q, sizeof(q), "sandbox.resources.%s", sizes[i].key);
      if (r->type != POLICY_NODE_SCALAR || is_null(r)) {
        err_at(c, r, q, "expected a size like '8GiB' or '512MiB', got %s", type_name(r));
        continue;
      }
      uint64_t mib = 0;
      int e = policy_parse_size_mib(r->value, &mib);
      if (e == -EINVAL) {
        err_at(c, r, q, "invalid size '%s' (use a number with B, KiB, MiB, GiB, TiB, KB, MB, GB or TB)",
               r->value);
        continue;
      }
      if (e < 0 || mib < sizes[i].min || mib > sizes[i].max) {
        err_at(c, r, q, "size '%s' out of range (%lluMiB-%lluTiB)", r->value,
               (unsigned long long)sizes[i].min,
               (unsigned long long)(sizes[i].max / (1024 * 1024)));
        continue;
      }
      if (i == 0) p->memory_mib = mib;
      else p->disk_mib = mib;
    }
  }

  v = map_get(n, "network");
  if (v) parse_network(c, v, "sandbox.network");

  v = map_get(n, "docker");
  if (v && !is_null(v) && expect_type(c, v, "sandbox.docker", POLICY_NODE_MAP)) {
    check_keys(c, v, "sandbox.docker", docker_keys);
    const policy_node *r = map_get(v, "required");
    if (r) get_bool(c, r, "sandbox.docker.required", &p->docker_required);
  }

  v = map_get(n, "dependencies");
  if (v) parse_steps(c, v, "sandbox.dependencies", &p->deps, &p->n_deps);
  v = map_get(n, "services");
  if (v) parse_steps(c, v, "sandbox.services", &p->services, &p->n_services);

  v = map_get(n, "run");
  if (v && !is_null(v) && expect_type(c, v, "sandbox.run", POLICY_NODE_MAP)) {
    check_keys(c, v, "sandbox.run", run_keys);
    const policy_node *b = map_get(v, "before");
    if (b) p->run_before = get_string(c, b, "sandbox.run.before", false);
  }

  v = map_get(n, "ttl_minutes");
  if (v) {
    uint64_t u;
    if (get_uint(c, v, "sandbox.ttl_minutes", 1, 43200, &u)) p->ttl_minutes = (unsigned)u;
  }

  v = map_get(n, "secrets");
  if (v) parse_secrets(c, v, "sandbox.secrets");
}

static bool remote_ok(const char *s) {
  if (s[0] == '-') return false; /* would be read as a git option */
  for (const char *q = s; *q; q++)
    if ((unsigned char)*q <= 0x20 || *q == 0x7f) return false;
  return true;
}

static void parse_repository(ctx *c, const policy_node *n) {
  static const char *const keys[] = {"enabled", "remote", "path", "submodules", NULL};
  policy *p = c->p;
  if (is_null(n) || !expect_type(c, n, "repository", POLICY_NODE_MAP)) return;
  check_keys(c, n, "repository", keys);
  const policy_node *v = map_get(n, "enabled");
  if (v) get_bool(c, v, "repository.enabled", &p->repo_enabled);
  v = map_get(n, "submodules");
  if (v) get_bool(c, v, "repository.submodules", &p->repo_submodules);
  v = map_get(n, "remote");
  char *s;
  if (v && (s = get_string(c, v, "repository.remote", false))) {
    if (!remote_ok(s)) {
      err_at(c, v, "repository.remote",
             "invalid remote '%s' (a remote name or URL, no spaces, not starting with '-')", s);
      free(s);
    } else {
      free(p->repo_remote);
      p->repo_remote = s;
    }
  }
  v = map_get(n, "path");
  if (v && (s = get_string(c, v, "repository.path", false))) {
    bool dotdot = strstr(s, "/..") != NULL;
    if (s[0] != '/' || dotdot) {
      err_at(c, v, "repository.path", "'%s' must be an absolute path without '..'", s);
      free(s);
    } else {
      /* collapse repeated slashes and drop a trailing one */
      size_t w = 0;
      for (size_t r = 0; s[r]; r++)
        if (!(s[r] == '/' && w > 0 && s[w - 1] == '/')) s[w++] = s[r];
      if (w > 1 && s[w - 1] == '/') w--;
      s[w] = '\0';
      if (!strcmp(s, "/")) {
        err_at(c, v, "repository.path", "the repository cannot be checked out at '/'");
        free(s);
      } else {
        free(p->repo_path);
        p->repo_path = s;
      }
    }
  }
}

/* ---- entry points ---- */

void policy_free(policy *p) {
  if (!p) return;
  free(p->filename);
  free(p->image_ref);
  for (size_t i = 0; i < p->n_allow; i++) policy_rule_done(&p->allow[i]);
  free(p->allow);
  for (size_t i = 0; i < p->n_deny; i++) policy_rule_done(&p->deny[i]);
  free(p->deny);
  for (size_t i = 0; i < p->n_deps; i++) policy_step_done(&p->deps[i]);
  free(p->deps);
  for (size_t i = 0; i < p->n_services; i++) policy_step_done(&p->services[i]);
  free(p->services);
  free(p->run_before);
  free(p->repo_remote);
  free(p->repo_path);
  for (size_t i = 0; i < p->n_secrets; i++) {
    for (size_t j = 0; j < p->secrets[i].n_hosts; j++) policy_rule_done(&p->secrets[i].hosts[j]);
    free(p->secrets[i].hosts);
    free(p->secrets[i].name);
  }
  free(p->secrets);
  free(p);
}

static int cmp_diag(const void *a, const void *b) {
  const policy_diag *x = a, *y = b;
  if (x->line != y->line) return x->line < y->line ? -1 : 1;
  if (x->column != y->column) return x->column < y->column ? -1 : 1;
  return 0;
}

static void sort_diags(policy_diags *d) {
  /* stable insertion sort: diags are nearly sorted and few */
  for (size_t i = 1; i < d->n; i++) {
    policy_diag t = d->items[i];
    size_t j = i;
    while (j > 0 && cmp_diag(&d->items[j - 1], &t) > 0) {
      d->items[j] = d->items[j - 1];
      j--;
    }
    d->items[j] = t;
  }
}

static void walk(ctx *c, const policy_node *root) {
  static const char *const keys[] = {"version", "sandbox", "repository", NULL};
  if (!root || is_null(root)) {
    err_at(c, root, "", "the policy is empty; it needs at least 'version: 1'");
    return;
  }
  if (root->type != POLICY_NODE_MAP) {
    err_at(c, root, "", "expected a mapping with 'version', 'sandbox' and 'repository', got %s",
           type_name(root));
    return;
  }
  check_keys(c, root, "", keys);
  const policy_node *v = map_get(root, "version");
  uint64_t ver;
  if (!v)
    err_at(c, root, "version", "missing 'version' (add 'version: 1' at the top)");
  else if (v->type == POLICY_NODE_SCALAR && v->plain && !strcmp(v->value, "1"))
    c->p->version = 1;
  else if (get_uint(c, v, "version", 0, UINT64_MAX, &ver))
    err_at(c, v, "version", "unsupported version %llu (this cleanroom reads version 1)",
           (unsigned long long)ver);
  v = map_get(root, "sandbox");
  if (v) parse_sandbox(c, v);
  v = map_get(root, "repository");
  if (v) parse_repository(c, v);
}

int policy_parse(const char *buf, size_t len, const char *filename, policy **ret,
                 policy_diags **ret_diags, cr_error **err) {
  if (!filename) filename = POLICY_FILE_NAME;
  policy_diags *diags = calloc(1, sizeof(*diags));
  policy *p = calloc(1, sizeof(*p));
  ctx c = {.filename = filename, .diags = diags, .p = p};
  int r;
  if (!diags || !p) goto oom;
  p->filename = strdup(filename);
  p->repo_enabled = true;
  p->repo_remote = strdup("origin");
  p->repo_path = strdup("/workspace");
  if (!p->filename || !p->repo_remote || !p->repo_path) goto oom;

  if (len > POLICY_MAX_FILE_SIZE) {
    err_at(&c, NULL, "", "file larger than %d bytes", POLICY_MAX_FILE_SIZE);
  } else if (memchr(buf, '\0', len)) {
    err_at(&c, NULL, "", "NUL byte in file; a policy is UTF-8 text");
  } else {
    policy_node *root = NULL;
    unsigned line = 0, column = 0;
    char *problem = NULL;
    r = policy_yaml_load(buf, len, &root, &line, &column, &problem);
    if (r == -ENOMEM) goto oom;
    if (r < 0) {
      policy_node at = {.line = line ? line : 1, .column = column ? column : 1};
      err_at(&c, &at, "", "YAML: %s", problem ? problem : "syntax error");
      free(problem);
    } else {
      walk(&c, root);
      policy_node_free(root);
    }
  }
  if (c.oom) goto oom;
  sort_diags(diags);
  if (diags->n_errors > 0) {
    _cleanup_free_ char *first = diags->n > 0 ? policy_diag_format(&diags->items[0]) : NULL;
    /* the first kept diag may be a warning: find the first error */
    for (size_t i = 0; i < diags->n; i++)
      if (diags->items[i].severity == POLICY_ERROR) {
        free(first);
        first = policy_diag_format(&diags->items[i]);
        break;
      }
    size_t more = diags->n_errors - 1;
    if (more > 0)
      r = cr_error_set(err, CR_E_POLICY_INVALID, 0, "%s (and %zu more error%s)",
                       first ? first : filename, more, more == 1 ? "" : "s");
    else
      r = cr_error_set(err, CR_E_POLICY_INVALID, 0, "%s", first ? first : filename);
    policy_free(p);
    if (ret_diags) *ret_diags = diags;
    else policy_diags_free(diags);
    return r;
  }
  *ret = p;
  if (ret_diags) {
    if (diags->n > 0) *ret_diags = diags;
    else {
      *ret_diags = NULL;
      policy_diags_free(diags);
    }
  } else {
    policy_diags_free(diags);
  }
  return 0;
oom:
  policy_free(p);
  policy_diags_free(diags);
  return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "parsing %s", filename);
}

int policy_load_file(const char *path, policy **ret, policy_diags **ret_diags,
                     cr_error **err) {
  _cleanup_free_ char *buf = NULL;
  size_t len = 0;
  int r = cr_read_file(path, POLICY_MAX_FILE_SIZE, &buf, &len);
  if (r == -ENOENT)
    return cr_error_set(err, CR_E_POLICY_NOT_FOUND, ENOENT, "reading policy %s", path);
  if (r == -EFBIG)
    return cr_error_set(err, CR_E_POLICY_INVALID, 0, "%s: file larger than %d bytes", path,
                        POLICY_MAX_FILE_SIZE);
  if (r < 0) return cr_error_set(err, CR_E_FILE_ERROR, -r, "reading policy %s", path);
  return policy_parse(buf, len, path, ret, ret_diags, err);
}

static bool is_file(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int policy_find(const char *repo_dir, char **ret_path, char **ret_warning, cr_error **err) {
  bool here = !strcmp(repo_dir, ".");
  _cleanup_free_ char *a = here ? strdup(POLICY_FILE_NAME) : cr_path_join(repo_dir, POLICY_FILE_NAME);
  _cleanup_free_ char *b = here ? strdup(POLICY_FILE_NAME_FALLBACK)
                                : cr_path_join(repo_dir, POLICY_FILE_NAME_FALLBACK);
  if (!a || !b) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "finding policy");
  bool ha = is_file(a), hb = is_file(b);
  if (!ha && !hb)
    return cr_error_set(err, CR_E_POLICY_NOT_FOUND, 0,
                        "no %s or %s in %s", POLICY_FILE_NAME, POLICY_FILE_NAME_FALLBACK,
                        repo_dir);
  char *warning = NULL;
  if (ha && hb && ret_warning &&
      asprintf(&warning, "both %s and %s exist; using %s and ignoring %s", a, b, a, b) < 0)
    return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "finding policy");
  if (ret_warning) *ret_warning = warning;
  *ret_path = ha ? TAKE_PTR(a) : TAKE_PTR(b);
  return 0;
}

int policy_locate(const char *explicit_path, char **ret_path, char **ret_warning,
                  cr_error **err) {
  if (explicit_path) {
    char *s = strdup(explicit_path);
    if (!s) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "locating policy");
    *ret_path = s;
    if (ret_warning) *ret_warning = NULL;
    return 0;
  }
  _cleanup_free_ char *cwd = getcwd(NULL, 0);
  if (!cwd) return cr_error_set(err, CR_E_FILE_ERROR, errno, "getting current directory");
  _cleanup_free_ char *dir = strdup(cwd);
  if (!dir) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "locating policy");
  const char *root = cwd;
  for (;;) {
    _cleanup_free_ char *git = cr_path_join(dir, ".git");
    struct stat st;
    if (!git) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "locating policy");
    if (stat(git, &st) == 0) {
      root = dir;
      break;
    }
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir) break;
    *slash = '\0';
  }
  /* names relative to the current directory read better in diagnostics */
  return policy_find(!strcmp(root, cwd) ? "." : root, ret_path, ret_warning, err);
}

/* ---- accessors ---- */

const char *policy_filename(const policy *p) { return p->filename; }
const char *policy_image_ref(const policy *p) { return p->image_ref; }
bool policy_image_pinned(const policy *p) { return p->image_pinned; }
unsigned policy_vcpus(const policy *p) { return p->vcpus; }
uint64_t policy_memory_mib(const policy *p) { return p->memory_mib; }
uint64_t policy_disk_mib(const policy *p) { return p->disk_mib; }
bool policy_docker_required(const policy *p) { return p->docker_required; }
unsigned policy_ttl_minutes(const policy *p) { return p->ttl_minutes; }
const char *policy_run_before(const policy *p) { return p->run_before; }
bool policy_repository_enabled(const policy *p) { return p->repo_enabled; }
const char *policy_repository_remote(const policy *p) { return p->repo_remote; }
const char *policy_repository_path(const policy *p) { return p->repo_path; }
bool policy_repository_submodules(const policy *p) { return p->repo_submodules; }
size_t policy_n_dependencies(const policy *p) { return p->n_deps; }
const policy_step *policy_dependency(const policy *p, size_t i) {
  return i < p->n_deps ? &p->deps[i] : NULL;
}
size_t policy_n_services(const policy *p) { return p->n_services; }
const policy_step *policy_service(const policy *p, size_t i) {
  return i < p->n_services ? &p->services[i] : NULL;
}
