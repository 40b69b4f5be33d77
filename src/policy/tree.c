/* cleanroom.yaml: diagnostics and the tree getters of the schema walk. */
#include "policy/walk.h"

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

_printf_(4, 5) void policy_err_at(ctx *c, const policy_node *n, const char *path,
                                  const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  diag_add(c, POLICY_ERROR, n ? n->line : 1, n ? n->column : 1, path, fmt, ap);
  va_end(ap);
}

_printf_(4, 5) void policy_warn_at(ctx *c, const policy_node *n, const char *path,
                                   const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  diag_add(c, POLICY_WARNING, n ? n->line : 1, n ? n->column : 1, path, fmt, ap);
  va_end(ap);
}

/* ---- tree helpers ---- */

const char *policy_type_name(const policy_node *n) {
  switch (n->type) {
  case POLICY_NODE_MAP: return "a mapping";
  case POLICY_NODE_SEQ: return "a list";
  default: break;
  }
  if (n->plain && (n->len == 0 || !strcmp(n->value, "~") || !strcmp(n->value, "null")))
    return "nothing (null)";
  return "a scalar";
}

bool policy_is_null(const policy_node *n) {
  return n->type == POLICY_NODE_SCALAR && n->plain &&
         (n->len == 0 || !strcmp(n->value, "~") || !strcmp(n->value, "null") ||
          !strcmp(n->value, "Null") || !strcmp(n->value, "NULL"));
}

/* Paths are truncated when longer than PATH_MAX_LEN (only in messages). */
void policy_join_path(char *buf, const char *base, const char *key) {
  int r;
  if (!base || !*base)
    r = snprintf(buf, PATH_MAX_LEN, "%s", key);
  else
    r = snprintf(buf, PATH_MAX_LEN, "%s.%s", base, key);
  if (r < 0) buf[0] = '\0';
}

void policy_index_path(char *buf, const char *base, size_t i) {
  if (snprintf(buf, PATH_MAX_LEN, "%s[%zu]", base, i) < 0) buf[0] = '\0';
}

const policy_node *policy_map_get(const policy_node *map, const char *key) {
  if (!map || map->type != POLICY_NODE_MAP) return NULL;
  for (size_t i = 0; i + 1 < map->n; i += 2) {
    const policy_node *k = map->items[i];
    if (k->type == POLICY_NODE_SCALAR && !strcmp(k->value, key)) return map->items[i + 1];
  }
  return NULL;
}

/* Reports non-scalar keys, duplicates and unknown keys (with a suggestion). */
void policy_check_keys(ctx *c, const policy_node *map, const char *path,
                       const char *const *known) {
  for (size_t i = 0; i + 1 < map->n; i += 2) {
    const policy_node *k = map->items[i];
    if (k->type != POLICY_NODE_SCALAR) {
      policy_err_at(c, k, path, "keys must be plain strings, not %s", policy_type_name(k));
      continue;
    }
    bool dup = false;
    for (size_t j = 0; j < i; j += 2) {
      const policy_node *o = map->items[j];
      if (o->type == POLICY_NODE_SCALAR && !strcmp(o->value, k->value)) {
        char p[PATH_MAX_LEN];
        policy_join_path(p, path, k->value);
        policy_err_at(c, k, p, "duplicate key '%s' (first at line %u, column %u)", k->value,
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
    policy_join_path(p, path, k->value);
    if (best && best_d <= 2 && best_d < strlen(best))
      policy_err_at(c, k, p, "unknown key '%s'; did you mean '%s'?", k->value, best);
    else {
      char list[PATH_MAX_LEN] = "";
      size_t off = 0;
      for (size_t j = 0; known[j] && off < sizeof(list); j++)
        off += (size_t)snprintf(list + off, sizeof(list) - off, "%s%s", j ? ", " : "", known[j]);
      policy_err_at(c, k, p, "unknown key '%s' (expected one of: %s)", k->value, list);
    }
  }
}

bool policy_expect_type(ctx *c, const policy_node *n, const char *path, policy_node_type t) {
  if (n->type == t) return true;
  policy_err_at(c, n, path, "expected %s, got %s",
         t == POLICY_NODE_MAP ? "a mapping" : t == POLICY_NODE_SEQ ? "a list" : "a value",
         policy_type_name(n));
  return false;
}

/* A non-empty string scalar. Returns a new copy or NULL (error reported). */
char *policy_get_string(ctx *c, const policy_node *n, const char *path, bool allow_empty) {
  if (n->type != POLICY_NODE_SCALAR || (policy_is_null(n) && !allow_empty)) {
    policy_err_at(c, n, path, "expected a string, got %s", policy_type_name(n));
    return NULL;
  }
  if (!allow_empty && n->len == 0) {
    policy_err_at(c, n, path, "must not be empty");
    return NULL;
  }
  if (strlen(n->value) != n->len) {
    policy_err_at(c, n, path, "NUL character in string");
    return NULL;
  }
  char *s = strdup(n->value);
  if (!s) c->oom = true;
  return s;
}

bool policy_get_bool(ctx *c, const policy_node *n, const char *path, bool *ret) {
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
    policy_err_at(c, n, path, "expected true or false, got '%s'", n->value);
  else
    policy_err_at(c, n, path, "expected true or false, got %s", policy_type_name(n));
  return false;
}

/* A plain decimal integer in [min, max]. */
bool policy_get_uint(ctx *c, const policy_node *n, const char *path, uint64_t min, uint64_t max,
                     uint64_t *ret) {
  if (n->type != POLICY_NODE_SCALAR || !n->plain || n->len == 0) {
    policy_err_at(c, n, path, "expected an integer, got %s", n->type == POLICY_NODE_SCALAR && !policy_is_null(n) ? "a string" : policy_type_name(n));
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
    policy_err_at(c, n, path, "%s out of range (%llu-%llu)", n->value, (unsigned long long)min,
           (unsigned long long)max);
    return false;
  }
  *ret = v;
  return true;
bad:
  policy_err_at(c, n, path, "expected an integer, got '%s'", n->value);
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
void policy_get_string_list(ctx *c, const policy_node *n, const char *path, bool repo_relative,
                            char ***ret, size_t *ret_n) {
  if (policy_is_null(n)) return;
  if (!policy_expect_type(c, n, path, POLICY_NODE_SEQ)) return;
  char **v = calloc(n->n ? n->n : 1, sizeof(char *));
  if (!v) {
    c->oom = true;
    return;
  }
  size_t k = 0;
  for (size_t i = 0; i < n->n; i++) {
    char p[PATH_MAX_LEN];
    policy_index_path(p, path, i);
    char *s = policy_get_string(c, n->items[i], p, false);
    if (!s) continue;
    bool dotdot = !strcmp(s, "..") || !strncmp(s, "../", 3) || strstr(s, "/../") ||
                  (strlen(s) >= 3 && !strcmp(s + strlen(s) - 3, "/.."));
    if (dotdot) {
      policy_err_at(c, n->items[i], p, "'..' is not allowed in '%s'", s);
      free(s);
      continue;
    }
    if (repo_relative && s[0] == '/') {
      policy_err_at(c, n->items[i], p, "'%s' must be a path relative to the repository root", s);
      free(s);
      continue;
    }
    normalize_path(s);
    if (!*s || !strcmp(s, ".")) {
      policy_err_at(c, n->items[i], p, "empty path");
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
