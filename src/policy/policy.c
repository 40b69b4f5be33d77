/* cleanroom.yaml: schema walk, validation, defaults, normalization. */
#include "policy/walk.h"

/* ---- entry points ---- */

void policy_free(policy *p) {
  if (!p) return;
  free(p->filename);
  free(p->image_ref);
  for (size_t i = 0; i < p->n_allow; i++) policy_rule_done(&p->allow[i]);
  free(p->allow);
  for (size_t i = 0; i < p->n_git_push; i++) policy_rule_done(&p->git_push[i]);
  free(p->git_push);
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
  if (!root || policy_is_null(root)) {
    policy_err_at(c, root, "", "the policy is empty; it needs at least 'version: 1'");
    return;
  }
  if (root->type != POLICY_NODE_MAP) {
    policy_err_at(c, root, "", "expected a mapping with 'version', 'sandbox' and 'repository', got %s",
           policy_type_name(root));
    return;
  }
  policy_check_keys(c, root, "", keys);
  const policy_node *v = policy_map_get(root, "version");
  uint64_t ver;
  if (!v)
    policy_err_at(c, root, "version", "missing 'version' (add 'version: 1' at the top)");
  else if (v->type == POLICY_NODE_SCALAR && v->plain && !strcmp(v->value, "1"))
    c->p->version = 1;
  else if (policy_get_uint(c, v, "version", 0, UINT64_MAX, &ver))
    policy_err_at(c, v, "version", "unsupported version %llu (this cleanroom reads version 1)",
           (unsigned long long)ver);
  v = policy_map_get(root, "sandbox");
  if (v) policy_parse_sandbox(c, v);
  v = policy_map_get(root, "repository");
  if (v) policy_parse_repository(c, v);
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
    policy_err_at(&c, NULL, "", "file larger than %d bytes", POLICY_MAX_FILE_SIZE);
  } else if (memchr(buf, '\0', len)) {
    policy_err_at(&c, NULL, "", "NUL byte in file; a policy is UTF-8 text");
  } else {
    policy_node *root = NULL;
    unsigned line = 0, column = 0;
    char *problem = NULL;
    r = policy_yaml_load(buf, len, &root, &line, &column, &problem);
    if (r == -ENOMEM) goto oom;
    if (r < 0) {
      policy_node at = {.line = line ? line : 1, .column = column ? column : 1};
      policy_err_at(&c, &at, "", "YAML: %s", problem ? problem : "syntax error");
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
