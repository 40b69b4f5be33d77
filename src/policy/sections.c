/* cleanroom.yaml: the sandbox (resources, steps, secrets) and repository sections. */
#include "policy/walk.h"

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
  if (policy_is_null(n) || !policy_expect_type(c, n, path, POLICY_NODE_SEQ)) return;
  if (n->n > 256) {
    policy_err_at(c, n, path, "more than 256 entries");
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
    policy_index_path(p, path, i);
    if (!policy_expect_type(c, e, p, POLICY_NODE_MAP)) continue;
    policy_check_keys(c, e, p, keys);
    policy_step s = {0};
    const policy_node *v = policy_map_get(e, "name");
    policy_join_path(q, p, "name");
    if (!v)
      policy_err_at(c, e, p, "missing 'name'");
    else if ((s.name = policy_get_string(c, v, q, false)) && !name_ok(s.name))
      policy_err_at(c, v, q,
             "invalid name '%s' (1-63 letters, digits, '-', '_' or '.', starting with a letter "
             "or digit)",
             s.name);
    else if (s.name)
      for (size_t j = 0; j < k; j++)
        if (!strcmp(steps[j].name, s.name)) {
          policy_err_at(c, v, q, "duplicate name '%s'", s.name);
          break;
        }
    v = policy_map_get(e, "command");
    policy_join_path(q, p, "command");
    if (!v)
      policy_err_at(c, e, p, "missing 'command'");
    else
      s.command = policy_get_string(c, v, q, false);
    v = policy_map_get(e, "inputs");
    policy_join_path(q, p, "inputs");
    if (v && !policy_is_null(v) && policy_expect_type(c, v, q, POLICY_NODE_MAP)) {
      policy_check_keys(c, v, q, in_keys);
      const policy_node *f = policy_map_get(v, "files");
      policy_join_path(r, q, "files");
      if (f) policy_get_string_list(c, f, r, true, &s.input_files, &s.n_input_files);
    }
    v = policy_map_get(e, "outputs");
    policy_join_path(q, p, "outputs");
    if (v && !policy_is_null(v) && policy_expect_type(c, v, q, POLICY_NODE_MAP)) {
      policy_check_keys(c, v, q, out_keys);
      const policy_node *d = policy_map_get(v, "dirs");
      policy_join_path(r, q, "dirs");
      if (d) policy_get_string_list(c, d, r, false, &s.output_dirs, &s.n_output_dirs);
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
  if (policy_is_null(n) || !policy_expect_type(c, n, path, POLICY_NODE_SEQ)) return;
  if (n->n > 64) {
    policy_err_at(c, n, path, "more than 64 secrets");
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
    policy_index_path(p, path, i);
    const policy_node *e = n->items[i];
    if (!policy_expect_type(c, e, p, POLICY_NODE_MAP)) continue;
    policy_check_keys(c, e, p, keys);
    const policy_node *nm = policy_map_get(e, "name"), *hs = policy_map_get(e, "hosts");
    policy_join_path(q, p, "name");
    char *name = nm ? policy_get_string(c, nm, q, false) : NULL;
    if (!nm) policy_err_at(c, e, p, "missing 'name' (the secret's key in the host's credentials file)");
    else if (name && !secret_name_ok(name))
      policy_err_at(c, nm, q, "'%s' is not a secret name (lowercase letters, digits, '_', '.', '-'; at most 64)",
             name);
    bool dup = false;
    for (size_t j = 0; name && j < k; j++) dup |= !strcmp(v[j].name, name);
    if (dup) policy_err_at(c, nm, q, "secret '%s' is listed twice", name);
    policy_join_path(q, p, "hosts");
    if (!hs) policy_err_at(c, e, p, "missing 'hosts' (the upstreams the secret may be sent to)");
    else if (hs->type == POLICY_NODE_SEQ && hs->n == 0)
      policy_err_at(c, hs, q, "empty list: a secret must name the hosts it may be sent to");
    policy_secret s = {.name = name};
    if (hs) policy_parse_rules(c, hs, q, true, &s.hosts, &s.n_hosts);
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

void policy_parse_sandbox(ctx *c, const policy_node *n) {
  static const char *const keys[] = {"image",    "resources", "network", "docker",
                                     "dependencies", "services", "run",  "ttl_minutes",
                                     "secrets", NULL};
  static const char *const image_keys[] = {"ref", NULL};
  static const char *const res_keys[] = {"vcpus", "memory", "disk", NULL};
  static const char *const docker_keys[] = {"required", NULL};
  static const char *const run_keys[] = {"before", NULL};
  policy *p = c->p;
  char q[PATH_MAX_LEN];
  if (policy_is_null(n) || !policy_expect_type(c, n, "sandbox", POLICY_NODE_MAP)) return;
  policy_check_keys(c, n, "sandbox", keys);

  const policy_node *v = policy_map_get(n, "image");
  if (v && !policy_is_null(v) && policy_expect_type(c, v, "sandbox.image", POLICY_NODE_MAP)) {
    policy_check_keys(c, v, "sandbox.image", image_keys);
    const policy_node *ref = policy_map_get(v, "ref");
    if (!ref) {
      policy_err_at(c, v, "sandbox.image", "missing 'ref'");
    } else if ((p->image_ref = policy_get_string(c, ref, "sandbox.image.ref", false))) {
      const char *problem = NULL;
      if (!policy_image_ref_valid(p->image_ref, &p->image_pinned, &problem))
        policy_err_at(c, ref, "sandbox.image.ref", "%s: '%s'", problem, p->image_ref);
      else if (!p->image_pinned)
        policy_warn_at(c, ref, "sandbox.image.ref",
                "'%s' is not pinned to a digest; run 'cleanroom image bump-ref %s' to pin it",
                p->image_ref, p->image_ref);
    }
  }

  v = policy_map_get(n, "resources");
  if (v && !policy_is_null(v) && policy_expect_type(c, v, "sandbox.resources", POLICY_NODE_MAP)) {
    policy_check_keys(c, v, "sandbox.resources", res_keys);
    const policy_node *r = policy_map_get(v, "vcpus");
    uint64_t u;
    if (r && policy_get_uint(c, r, "sandbox.resources.vcpus", 1, 128, &u)) p->vcpus = (unsigned)u;
    static const struct {
      const char *key;
      uint64_t min, max;
    } sizes[] = {{"memory", 64, 1024 * 1024}, {"disk", 64, 16 * 1024 * 1024}};
    for (size_t i = 0; i < ELEMENTSOF(sizes); i++) {
      r = policy_map_get(v, sizes[i].key);
      if (!r) continue;
      snprintf(q, sizeof(q), "sandbox.resources.%s", sizes[i].key);
      if (r->type != POLICY_NODE_SCALAR || policy_is_null(r)) {
        policy_err_at(c, r, q, "expected a size like '8GiB' or '512MiB', got %s", policy_type_name(r));
        continue;
      }
      uint64_t mib = 0;
      int e = policy_parse_size_mib(r->value, &mib);
      if (e == -EINVAL) {
        policy_err_at(c, r, q, "invalid size '%s' (use a number with B, KiB, MiB, GiB, TiB, KB, MB, GB or TB)",
               r->value);
        continue;
      }
      if (e < 0 || mib < sizes[i].min || mib > sizes[i].max) {
        policy_err_at(c, r, q, "size '%s' out of range (%lluMiB-%lluTiB)", r->value,
               (unsigned long long)sizes[i].min,
               (unsigned long long)(sizes[i].max / (1024 * 1024)));
        continue;
      }
      if (i == 0) p->memory_mib = mib;
      else p->disk_mib = mib;
    }
  }

  v = policy_map_get(n, "network");
  if (v) policy_parse_network(c, v, "sandbox.network");

  v = policy_map_get(n, "docker");
  if (v && !policy_is_null(v) && policy_expect_type(c, v, "sandbox.docker", POLICY_NODE_MAP)) {
    policy_check_keys(c, v, "sandbox.docker", docker_keys);
    const policy_node *r = policy_map_get(v, "required");
    if (r) policy_get_bool(c, r, "sandbox.docker.required", &p->docker_required);
  }

  v = policy_map_get(n, "dependencies");
  if (v) parse_steps(c, v, "sandbox.dependencies", &p->deps, &p->n_deps);
  v = policy_map_get(n, "services");
  if (v) parse_steps(c, v, "sandbox.services", &p->services, &p->n_services);

  v = policy_map_get(n, "run");
  if (v && !policy_is_null(v) && policy_expect_type(c, v, "sandbox.run", POLICY_NODE_MAP)) {
    policy_check_keys(c, v, "sandbox.run", run_keys);
    const policy_node *b = policy_map_get(v, "before");
    if (b) p->run_before = policy_get_string(c, b, "sandbox.run.before", false);
  }

  v = policy_map_get(n, "ttl_minutes");
  if (v) {
    uint64_t u;
    if (policy_get_uint(c, v, "sandbox.ttl_minutes", 1, 43200, &u)) p->ttl_minutes = (unsigned)u;
  }

  v = policy_map_get(n, "secrets");
  if (v) parse_secrets(c, v, "sandbox.secrets");
}

static bool remote_ok(const char *s) {
  if (s[0] == '-') return false; /* would be read as a git option */
  for (const char *q = s; *q; q++)
    if ((unsigned char)*q <= 0x20 || *q == 0x7f) return false;
  return true;
}

void policy_parse_repository(ctx *c, const policy_node *n) {
  static const char *const keys[] = {"enabled", "remote", "path", "submodules", NULL};
  policy *p = c->p;
  if (policy_is_null(n) || !policy_expect_type(c, n, "repository", POLICY_NODE_MAP)) return;
  policy_check_keys(c, n, "repository", keys);
  const policy_node *v = policy_map_get(n, "enabled");
  if (v) policy_get_bool(c, v, "repository.enabled", &p->repo_enabled);
  v = policy_map_get(n, "submodules");
  if (v) policy_get_bool(c, v, "repository.submodules", &p->repo_submodules);
  v = policy_map_get(n, "remote");
  char *s;
  if (v && (s = policy_get_string(c, v, "repository.remote", false))) {
    if (!remote_ok(s)) {
      policy_err_at(c, v, "repository.remote",
             "invalid remote '%s' (a remote name or URL, no spaces, not starting with '-')", s);
      free(s);
    } else {
      free(p->repo_remote);
      p->repo_remote = s;
    }
  }
  v = policy_map_get(n, "path");
  if (v && (s = policy_get_string(c, v, "repository.path", false))) {
    bool dotdot = strstr(s, "/..") != NULL;
    if (s[0] != '/' || dotdot) {
      policy_err_at(c, v, "repository.path", "'%s' must be an absolute path without '..'", s);
      free(s);
    } else {
      /* collapse repeated slashes and drop a trailing one */
      size_t w = 0;
      for (size_t r = 0; s[r]; r++)
        if (!(s[r] == '/' && w > 0 && s[w - 1] == '/')) s[w++] = s[r];
      if (w > 1 && s[w - 1] == '/') w--;
      s[w] = '\0';
      if (!strcmp(s, "/")) {
        policy_err_at(c, v, "repository.path", "the repository cannot be checked out at '/'");
        free(s);
      } else {
        free(p->repo_path);
        p->repo_path = s;
      }
    }
  }
}
