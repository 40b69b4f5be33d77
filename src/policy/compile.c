/* The compiled policy: canonical JSON and its hash. */
#include "policy/policy-internal.h"
#include "util/fs.h"

#include <string.h>

static const char *kind_name(policy_rule_kind k) {
  switch (k) {
  case POLICY_RULE_HOST: return "host";
  case POLICY_RULE_WILDCARD: return "wildcard";
  case POLICY_RULE_IP: return "ip";
  case POLICY_RULE_CIDR: return "cidr";
  }
  return "host";
}

static json_t *str_or_null(const char *s) { return s ? json_string(s) : json_null(); }
static json_t *uint_or_null(uint64_t v) { return v ? json_integer((json_int_t)v) : json_null(); }

static json_t *rules_json(const policy_rule *rules, size_t n) {
  json_t *a = json_array();
  if (!a) return NULL;
  for (size_t i = 0; i < n; i++) {
    const policy_rule *r = &rules[i];
    json_t *o = json_pack("{s:s, s:s}", "host", r->host, "kind", kind_name(r->kind));
    if (!o) goto fail;
    if (r->n_ports > 0) {
      json_t *ports = json_array();
      for (size_t j = 0; ports && j < r->n_ports; j++)
        json_array_append_new(ports, json_integer(r->ports[j]));
      if (!ports || json_object_set_new(o, "ports", ports) < 0) {
        json_decref(o);
        goto fail;
      }
    }
    if (r->reason) json_object_set_new(o, "reason", json_string(r->reason));
    if (json_array_append_new(a, o) < 0) goto fail;
  }
  return a;
fail:
  json_decref(a);
  return NULL;
}

static json_t *strings_json(char *const *v, size_t n) {
  json_t *a = json_array();
  for (size_t i = 0; a && i < n; i++)
    if (json_array_append_new(a, json_string(v[i])) < 0) {
      json_decref(a);
      return NULL;
    }
  return a;
}

static json_t *steps_json(const policy_step *steps, size_t n) {
  json_t *a = json_array();
  for (size_t i = 0; a && i < n; i++) {
    const policy_step *s = &steps[i];
    json_t *o = json_pack("{s:s, s:s, s:{s:o*}, s:{s:o*}}", "name", s->name, "command",
                          s->command, "inputs", "files",
                          strings_json(s->input_files, s->n_input_files), "outputs", "dirs",
                          strings_json(s->output_dirs, s->n_output_dirs));
    if (!o || json_array_append_new(a, o) < 0) {
      json_decref(a);
      return NULL;
    }
  }
  return a;
}

/* [{name, hosts}] (only present when there are secrets: the hash of a
 * policy without them stays what it was) */
static json_t *secrets_json(const policy *p) {
  json_t *a = json_array();
  for (size_t i = 0; a && i < p->n_secrets; i++) {
    json_t *o = json_pack("{s:s, s:o*}", "name", p->secrets[i].name, "hosts",
                          rules_json(p->secrets[i].hosts, p->secrets[i].n_hosts));
    if (!o || json_array_append_new(a, o) < 0) {
      json_decref(a);
      return NULL;
    }
  }
  return a;
}

json_t *policy_compile_json(const policy *p) {
  json_t *image = json_null();
  if (p->image_ref)
    image = json_pack("{s:s, s:b}", "ref", p->image_ref, "digest_pinned", p->image_pinned);
  json_t *j = json_pack(
      "{s:i, s:{s:o*, s:{s:o, s:o, s:o}, s:{s:s, s:o*, s:o*}, s:{s:b}, s:o*, s:o*, s:{s:o}, "
      "s:o}, s:{s:b, s:s, s:s, s:b}}",
      "version", p->version ? p->version : 1,
      "sandbox",
        "image", image,
        "resources",
          "vcpus", uint_or_null(p->vcpus),
          "memory_mib", uint_or_null(p->memory_mib),
          "disk_mib", uint_or_null(p->disk_mib),
        "network",
          "default", p->network_default_allow ? "allow" : "deny",
          "allow", rules_json(p->allow, p->n_allow),
          "deny", rules_json(p->deny, p->n_deny),
        "docker", "required", p->docker_required,
        "dependencies", steps_json(p->deps, p->n_deps),
        "services", steps_json(p->services, p->n_services),
        "run", "before", str_or_null(p->run_before),
        "ttl_minutes", uint_or_null(p->ttl_minutes),
      "repository",
        "enabled", p->repo_enabled,
        "remote", p->repo_remote,
        "path", p->repo_path,
        "submodules", p->repo_submodules);
  if (j && p->n_git_push) { /* only when present: other policies keep their hash */
    json_t *gp = rules_json(p->git_push, p->n_git_push);
    json_t *net = json_object_get(json_object_get(j, "sandbox"), "network");
    if (!gp || json_object_set_new(net, "git_push", gp) < 0) {
      json_decref(j);
      return NULL;
    }
  }
  if (j && p->n_secrets) {
    json_t *sec = secrets_json(p);
    if (!sec || json_object_set_new(json_object_get(j, "sandbox"), "secrets", sec) < 0) {
      json_decref(j);
      return NULL;
    }
  }
  return j;
}

char *policy_compile_string(const policy *p) {
  json_t *j = policy_compile_json(p);
  if (!j) return NULL;
  char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
  json_decref(j);
  return s;
}

static void hash_canonical(const char *s, char ret[72]) {
  char hex[65];
  cr_sha256_hex(s, strlen(s), hex);
  memcpy(ret, "sha256:", 7);
  memcpy(ret + 7, hex, 65);
}

int policy_hash(const policy *p, char ret[72]) {
  _cleanup_free_ char *s = policy_compile_string(p);
  if (!s) return -ENOMEM;
  hash_canonical(s, ret);
  return 0;
}

int policy_hash_json(json_t *compiled, char ret[72]) {
  _cleanup_free_ char *s = json_dumps(compiled, JSON_COMPACT | JSON_SORT_KEYS);
  if (!s) return -ENOMEM;
  hash_canonical(s, ret);
  return 0;
}
