/* Unit tests for src/policy: matching, validation messages, canonical form,
 * examples, find, edit. Arguments: the examples dir and the fixtures dir
 * (tests/data/policy); env CR_POLICY_EXAMPLES / CR_POLICY_DATA also work. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "policy/policy.h"
#include "util/fs.h"

#include <dirent.h>
#include <string.h>
#include <sys/stat.h>

static const char *examples_dir;
static const char *data_dir;

static policy *load_data(const char *name) {
  _cleanup_free_ char *path = cr_path_join(data_dir, name);
  policy *p = NULL;
  cr_error *err = NULL;
  policy_diags *d = NULL;
  int r = policy_load_file(path, &p, &d, &err);
  if (r < 0) {
    for (size_t i = 0; d && i < d->n; i++) {
      _cleanup_free_ char *s = policy_diag_format(&d->items[i]);
      fprintf(stderr, "%s\n", s);
    }
    fprintf(stderr, "%s: %s\n", path, err ? err->message : "?");
  }
  policy_diags_free(d);
  cr_error_free(err);
  assert_int_equal(r, 0);
  return p;
}

static policy *parse_ok(const char *yaml) {
  policy *p = NULL;
  cr_error *err = NULL;
  int r = policy_parse(yaml, strlen(yaml), "cleanroom.yaml", &p, NULL, &err);
  if (r < 0) fprintf(stderr, "unexpected: %s\n", err->message);
  cr_error_free(err);
  assert_int_equal(r, 0);
  return p;
}

/* ---- matching ---- */

typedef struct match_case {
  const char *host;
  uint16_t port;
  int verdict;
  const char *reason;
} match_case;

static const match_case match_cases[] = {
    {"api.github.com", 443, POLICY_ALLOW, "allowed"},
    {"API.GitHub.com", 443, POLICY_ALLOW, "allowed"},
    {"api.github.com.", 443, POLICY_ALLOW, "allowed"},
    {"api.github.com", 80, POLICY_DENY, "port_not_allowed"},
    {"api.github.com", 22, POLICY_DENY, "host_denied"},
    {"github.com", 443, POLICY_DENY, "host_not_allowed"},
    {"registry.npmjs.org", 80, POLICY_ALLOW, "allowed"},
    {"registry.npmjs.org", 443, POLICY_ALLOW, "allowed"},
    {"registry.npmjs.org", 8080, POLICY_DENY, "port_not_allowed"},
    {"a.example.com", 443, POLICY_ALLOW, "allowed"},
    {"a.b.example.com", 443, POLICY_ALLOW, "allowed"},
    {"A.Example.Com.", 443, POLICY_ALLOW, "allowed"},
    {"example.com", 443, POLICY_DENY, "host_not_allowed"}, /* apex */
    {"badexample.com", 443, POLICY_DENY, "host_not_allowed"},
    {"a.example.com", 80, POLICY_DENY, "port_not_allowed"},
    {"exact.example.com", 8443, POLICY_ALLOW, "allowed"},
    {"exact.example.com", 443, POLICY_DENY, "port_not_allowed"}, /* exact beats wildcard */
    {"evil.example.com", 443, POLICY_DENY, "host_denied"},       /* deny beats wildcard */
    {"x.evil.example.com", 443, POLICY_ALLOW, "allowed"},
    {"bücher.example", 443, POLICY_ALLOW, "allowed"},
    {"BÜCHER.example", 443, POLICY_ALLOW, "allowed"},
    {"xn--bcher-kva.example", 443, POLICY_ALLOW, "allowed"},
    {"bücher.example", 80, POLICY_DENY, "port_not_allowed"},
    {"bucher.example", 443, POLICY_DENY, "host_not_allowed"},
    {"10.1.2.3", 5432, POLICY_ALLOW, "allowed"},
    {"10.255.255.255", 5432, POLICY_ALLOW, "allowed"},
    {"10.1.2.3", 443, POLICY_DENY, "port_not_allowed"},
    {"10.9.1.1", 5432, POLICY_DENY, "host_denied"}, /* deny CIDR inside allow CIDR */
    {"11.0.0.1", 5432, POLICY_DENY, "host_not_allowed"},
    {"192.168.1.10", 8080, POLICY_ALLOW, "allowed"},
    {"192.168.1.11", 8080, POLICY_DENY, "host_not_allowed"},
    {"140.82.112.5", 443, POLICY_DENY, "host_not_allowed"}, /* IPs never match names */
    {"2001:db8::1", 443, POLICY_ALLOW, "allowed"},
    {"[2001:db8::1]", 443, POLICY_ALLOW, "allowed"},
    {"2001:DB8:0:0:0:0:0:1", 443, POLICY_ALLOW, "allowed"},
    {"2001:db8::1", 80, POLICY_DENY, "port_not_allowed"},
    {"2001:db8::2", 443, POLICY_DENY, "host_not_allowed"},
    {"2001:db8:abcd:1::5", 22, POLICY_ALLOW, "allowed"},
    {"2001:db8:abcd:1::5", 443, POLICY_DENY, "port_not_allowed"},
    {"2001:db8:abce::1", 22, POLICY_DENY, "host_not_allowed"},
    {"x.wild.test", 80, POLICY_ALLOW, "allowed"},
    {"x.wild.test", 443, POLICY_ALLOW, "allowed"},
    {"x.wild.test", 8080, POLICY_DENY, "port_not_allowed"},
    {"blocked.wild.test", 443, POLICY_DENY, "host_denied"},
    {"wild.test", 80, POLICY_DENY, "host_not_allowed"},
    {"", 443, POLICY_DENY, "host_invalid"},
    {"bad host", 443, POLICY_DENY, "host_invalid"},
    {"*.example.com", 443, POLICY_DENY, "host_invalid"},
    {"[2001:db8::1", 443, POLICY_DENY, "host_invalid"},
    {"api.github.com", 0, POLICY_DENY, "port_not_allowed"},
    {"a..example.com", 443, POLICY_DENY, "host_invalid"},
    {"127.1", 443, POLICY_DENY, "host_invalid"},      /* IPv4 in short notation */
    {"0x7f.0x1", 443, POLICY_DENY, "host_invalid"},
    {"10.1.2.3.", 5432, POLICY_DENY, "host_invalid"}, /* not an address, not a name */
};

static void test_match_table(void **state) {
  (void)state;
  _cleanup_policy_ policy *p = load_data("match.yaml");
  for (size_t i = 0; i < ELEMENTSOF(match_cases); i++) {
    const match_case *c = &match_cases[i];
    const char *reason = NULL;
    int v = policy_match(p, c->host, c->port, &reason);
    if (v != c->verdict || !reason || strcmp(reason, c->reason) != 0)
      fail_msg("case %zu: %s:%u: got %s/%s, want %s/%s", i, c->host, c->port,
               v == POLICY_ALLOW ? "allow" : "deny", reason ? reason : "(null)",
               c->verdict == POLICY_ALLOW ? "allow" : "deny", c->reason);
  }
  assert_true(ELEMENTSOF(match_cases) >= 40);
}

static void test_match_default_deny(void **state) {
  (void)state;
  _cleanup_policy_ policy *p = parse_ok("version: 1\n");
  const char *reason = NULL;
  assert_int_equal(policy_match(p, "api.github.com", 443, &reason), POLICY_DENY);
  assert_string_equal(reason, "host_not_allowed");
  assert_int_equal(policy_match(p, "10.0.0.1", 443, &reason), POLICY_DENY);
  assert_string_equal(reason, "host_not_allowed");
  assert_false(policy_host_may_resolve(p, "api.github.com"));
}

static void test_may_resolve(void **state) {
  (void)state;
  _cleanup_policy_ policy *p = load_data("match.yaml");
  assert_true(policy_host_may_resolve(p, "api.github.com"));
  assert_true(policy_host_may_resolve(p, "a.example.com"));
  assert_false(policy_host_may_resolve(p, "example.com"));
  assert_false(policy_host_may_resolve(p, "evil.example.com"));
  assert_false(policy_host_may_resolve(p, "blocked.wild.test"));
  assert_true(policy_host_may_resolve(p, "BÜCHER.example."));
}

typedef struct norm_case {
  const char *in;
  const char *out; /* NULL: invalid */
} norm_case;

static void test_normalize(void **state) {
  (void)state;
  static const norm_case cases[] = {
      {"bücher.example", "xn--bcher-kva.example"},
      {"Bücher.Example.", "xn--bcher-kva.example"},
      {"münchen.de", "xn--mnchen-3ya.de"},
      {"EXAMPLE.COM.", "example.com"},
      {"*.Example.com", "*.example.com"},
      {"*.bücher.example", "*.xn--bcher-kva.example"},
      {"_dmarc.example.com", "_dmarc.example.com"},
      {"*.com", NULL},
      {"*.0.1", NULL},
      {"a.123", NULL},
      {"1password.com", "1password.com"},
      {"a.*.com", NULL},
      {"-a.com", NULL},
      {"a..com", NULL},
      {"", NULL},
      {"exa mple.com", NULL},
      {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.com", NULL}, /* 64 */
  };
  for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
    char *out = NULL;
    const char *problem = NULL;
    int r = policy_normalize_host(cases[i].in, &out, &problem);
    if (cases[i].out) {
      if (r < 0) fail_msg("%s: %s", cases[i].in, problem);
      assert_string_equal(out, cases[i].out);
    } else {
      if (r == 0) fail_msg("%s: accepted as %s", cases[i].in, out);
      assert_non_null(problem);
    }
    free(out);
  }
}

/* ---- validation: one case per error kind ---- */

typedef struct invalid_case {
  const char *yaml;
  const char *want; /* substring of one formatted diagnostic */
} invalid_case;

static const invalid_case invalid_cases[] = {
    {"version: 1\nsandbox:\n  network:\n    git_push: [\"git.example.com:99999\"]\n",
     "cleanroom.yaml:4:16: sandbox.network.git_push[0]: port 99999 out of range (1-65535)"},
    {"version: 1\nsandbox:\n  network:\n    git_psuh: [a.com]\n",
     "sandbox.network.git_psuh: unknown key 'git_psuh'; did you mean 'git_push'?"},
    {"version: 1\nsandbox:\n  network:\n    git_push: a.com\n",
     "sandbox.network.git_push: expected"},
    {"version: 1\nsandbox:\n  secrets:\n    - name: Git\n      hosts: [github.com]\n",
     "cleanroom.yaml:4:13: sandbox.secrets[0].name: 'Git' is not a secret name"},
    {"version: 1\nsandbox:\n  secrets:\n    - name: git\n",
     "sandbox.secrets[0]: missing 'hosts'"},
    {"version: 1\nsandbox:\n  secrets:\n    - name: git\n      hosts: []\n",
     "sandbox.secrets[0].hosts: empty list: a secret must name the hosts it may be sent to"},
    {"version: 1\nsandbox:\n  secrets:\n    - {name: a, hosts: [x.com]}\n    - {name: a, hosts: [y.com]}\n",
     "sandbox.secrets[1].name: secret 'a' is listed twice"},
    {"version: 1\nsandbox:\n  secrets:\n    - name: a\n      host: [x.com]\n",
     "sandbox.secrets[0].host: unknown key 'host'; did you mean 'hosts'?"},
    {"version: 1\nsandbx: {}\n",
     "cleanroom.yaml:2:1: sandbx: unknown key 'sandbx'; did you mean 'sandbox'?"},
    {"version: 1\nsandbox:\n  resources:\n    memroy: 8GiB\n",
     "cleanroom.yaml:4:5: sandbox.resources.memroy: unknown key 'memroy'; did you mean 'memory'?"},
    {"version: 1\nfoo: 1\n", "cleanroom.yaml:2:1: foo: unknown key 'foo' (expected one of: version, sandbox, repository)"},
    {"version: 1\nsandbox:\n  network:\n    allow:\n      - a.com:443\n      - b.com:443\n      - c.com:70000\n",
     "cleanroom.yaml:7:9: sandbox.network.allow[2]: port 70000 out of range (1-65535)"},
    {"version: 1\nsandbox:\n  network:\n    allow: [a.com:https]\n",
     "cleanroom.yaml:4:13: sandbox.network.allow[0]: invalid port 'https'"},
    {"version: 1\nsandbox:\n  network:\n    allow:\n      - host: a.com\n        ports: [443, 0]\n",
     "cleanroom.yaml:6:22: sandbox.network.allow[0].ports[1]: port 0 out of range (1-65535)"},
    {"version: 1\nsandbox:\n  network:\n    allow:\n      - host: a.com:443\n        ports: [443]\n",
     "cleanroom.yaml:6:16: sandbox.network.allow[0].ports: port given both in 'host' and in 'ports'"},
    {"version: 1\nsandbox:\n  network:\n    allow:\n      - host: a.com\n        ports: []\n",
     "sandbox.network.allow[0].ports: empty list; omit 'ports' to allow 80 and 443"},
    {"version: 1\nsandbox:\n  network:\n    allow:\n      - ports: [443]\n",
     "cleanroom.yaml:5:9: sandbox.network.allow[0]: missing 'host'"},
    {"version: 1\nsandbox:\n  network:\n    allow:\n      - host: a.com\n        port: 443\n",
     "sandbox.network.allow[0].port: unknown key 'port'; did you mean 'ports'?"},
    {"version: 1\nsandbox:\n  network:\n    allow: [\"exa mple.com:443\"]\n",
     "cleanroom.yaml:4:13: sandbox.network.allow[0]: control character or space in host name"},
    {"version: 1\nsandbox:\n  network:\n    allow: [\"a.*.com\"]\n",
     "'*' is only allowed as the whole first label"},
    {"version: 1\nsandbox:\n  network:\n    allow: [\"*.com\"]\n",
     "wildcard needs at least two labels"},
    {"version: 1\nsandbox:\n  network:\n    allow: [10.0.0.0/33]\n",
     "cleanroom.yaml:4:13: sandbox.network.allow[0]: prefix length out of range in '10.0.0.0/33'"},
    {"version: 1\nsandbox:\n  network:\n    allow: [10.0.0.256]\n", "invalid IPv4 address '10.0.0.256'"},
    {"version: 1\nsandbox:\n  network:\n    allow: [\"2001:db8::zz\"]\n", "invalid IPv6 address"},
    {"version: 1\nsandbox:\n  network:\n    allow: [\"[2001:db8::1\"]\n", "missing ']'"},
    {"version: 1\nsandbox:\n  network:\n    default: allow\n",
     "cleanroom.yaml:4:14: sandbox.network.default: 'allow' is not supported in version 1"},
    {"version: 1\nsandbox:\n  network:\n    default: maybe\n", "expected 'deny', got 'maybe'"},
    {"version: 1\nsandbox:\n  network:\n    allow: {a: 1}\n",
     "cleanroom.yaml:4:12: sandbox.network.allow: expected a list, got a mapping"},
    {"version: 2\n", "cleanroom.yaml:1:10: version: unsupported version 2"},
    {"sandbox: {}\n", "cleanroom.yaml:1:1: version: missing 'version'"},
    {"version: one\n", "cleanroom.yaml:1:10: version: expected an integer, got 'one'"},
    {"version: 1\nsandbox:\n  docker:\n    required: yes\n",
     "cleanroom.yaml:4:15: sandbox.docker.required: expected true or false, got 'yes'"},
    {"version: 1\nsandbox:\n  resources:\n    memory: 8 potatoes\n",
     "cleanroom.yaml:4:13: sandbox.resources.memory: invalid size '8 potatoes'"},
    {"version: 1\nsandbox:\n  resources:\n    memory: 1KiB\n",
     "sandbox.resources.memory: size '1KiB' out of range"},
    {"version: 1\nsandbox:\n  resources:\n    disk: 99999999999999999999999GiB\n",
     "sandbox.resources.disk: size '99999999999999999999999GiB' out of range"},
    {"version: 1\nsandbox:\n  resources:\n    vcpus: 0\n",
     "cleanroom.yaml:4:12: sandbox.resources.vcpus: 0 out of range (1-128)"},
    {"version: 1\nsandbox:\n  resources:\n    vcpus: \"4\"\n",
     "sandbox.resources.vcpus: expected an integer, got a string"},
    {"version: 1\nsandbox:\n  image:\n    ref: ghcr.io/x/y@sha256:abc\n",
     "cleanroom.yaml:4:10: sandbox.image.ref: digest must be 'sha256:' followed by 64 lowercase hex digits"},
    {"version: 1\nsandbox:\n  image:\n    ref: ghcr.io/X/y:latest\n", "image repository names must be lowercase"},
    {"version: 1\nsandbox:\n  image: {}\n", "cleanroom.yaml:3:10: sandbox.image: missing 'ref'"},
    {"version: 1\nversion: 1\n",
     "cleanroom.yaml:2:1: version: duplicate key 'version' (first at line 1, column 1)"},
    {"version: 1\nsandbox:\n  dependencies:\n    - command: npm ci\n",
     "cleanroom.yaml:4:7: sandbox.dependencies[0]: missing 'name'"},
    {"version: 1\nsandbox:\n  dependencies:\n    - name: node\n",
     "sandbox.dependencies[0]: missing 'command'"},
    {"version: 1\nsandbox:\n  services:\n    - {name: db, command: x}\n    - {name: db, command: y}\n",
     "cleanroom.yaml:5:14: sandbox.services[1].name: duplicate name 'db'"},
    {"version: 1\nsandbox:\n  services:\n    - {name: 'a b', command: x}\n", "invalid name 'a b'"},
    {"version: 1\nsandbox:\n  dependencies:\n    - name: n\n      command: x\n      inputs:\n        files: [/etc/passwd]\n",
     "cleanroom.yaml:7:17: sandbox.dependencies[0].inputs.files[0]: '/etc/passwd' must be a path relative"},
    {"version: 1\nsandbox:\n  dependencies:\n    - name: n\n      command: x\n      outputs:\n        dirs: [../up]\n",
     "sandbox.dependencies[0].outputs.dirs[0]: '..' is not allowed in '../up'"},
    {"version: 1\nsandbox:\n  dependencies:\n    - {name: n, command: x, outputs: {dirs: [./]}}\n",
     "cleanroom.yaml:4:46: sandbox.dependencies[0].outputs.dirs[0]: empty path"},
    {"version: 1\nsandbox:\n  run:\n    before: [a, b]\n",
     "cleanroom.yaml:4:13: sandbox.run.before: expected a string, got a list"},
    {"version: 1\nsandbox:\n  ttl_minutes: 100000\n",
     "sandbox.ttl_minutes: 100000 out of range (1-43200)"},
    {"version: 1\nrepository:\n  path: workspace\n",
     "cleanroom.yaml:3:9: repository.path: 'workspace' must be an absolute path"},
    {"version: 1\nrepository:\n  remote: --upload-pack=x\n", "repository.remote: invalid remote"},
    {"version: 1\nrepository:\n  enabled: 1\n", "repository.enabled: expected true or false, got '1'"},
    {"version: 1\nsandbox: [1]\n", "cleanroom.yaml:2:10: sandbox: expected a mapping, got a list"},
    {"version: 1\nsandbox:\n  network:\n    allow:\n    - a.com\n   - b.com\n",
     "cleanroom.yaml:6:4: YAML: "},
    {"version: 1\nsandbox: {\n", "YAML: "},
    {"a: &x 1\nb: *x\n", "cleanroom.yaml:2:4: YAML: aliases (*x) are not supported"},
    {"version: 1\n---\nversion: 1\n", "cleanroom.yaml:2:1: YAML: more than one document"},
    {"", "cleanroom.yaml:1:1: the policy is empty"},
    {"# only a comment\n", "the policy is empty"},
    {"- 1\n- 2\n", "cleanroom.yaml:1:1: expected a mapping with 'version'"},
    {"version: 1\n? [a]\n: b\n", "keys must be plain strings"},
};

static void check_invalid(const char *yaml, size_t len, const char *want) {
  policy *p = NULL;
  policy_diags *d = NULL;
  cr_error *err = NULL;
  int r = policy_parse(yaml, len, "cleanroom.yaml", &p, &d, &err);
  if (r >= 0) fail_msg("accepted: %s", yaml);
  assert_null(p);
  assert_non_null(err);
  assert_string_equal(cr_error_reason(err), "policy_invalid");
  assert_non_null(d);
  assert_true(d->n_errors > 0);
  bool found = false;
  for (size_t i = 0; i < d->n && !found; i++) {
    _cleanup_free_ char *s = policy_diag_format(&d->items[i]);
    if (s && strstr(s, want)) found = true;
  }
  if (!found) {
    for (size_t i = 0; i < d->n; i++) {
      _cleanup_free_ char *s = policy_diag_format(&d->items[i]);
      fprintf(stderr, "  got: %s\n", s);
    }
    fail_msg("want: %s", want);
  }
  policy_diags_free(d);
  cr_error_free(err);
}

static void test_invalid_table(void **state) {
  (void)state;
  for (size_t i = 0; i < ELEMENTSOF(invalid_cases); i++)
    check_invalid(invalid_cases[i].yaml, strlen(invalid_cases[i].yaml), invalid_cases[i].want);
}

static void test_all_errors_at_once(void **state) {
  (void)state;
  const char *y = "version: 1\n"
                  "sandbox:\n"
                  "  resources:\n"
                  "    vcpus: 0\n"
                  "    memory: lots\n"
                  "  network:\n"
                  "    allow: [a.com:0, b.com:99999, \"*.c\"]\n"
                  "  dokcer: {}\n";
  policy *p = NULL;
  policy_diags *d = NULL;
  cr_error *err = NULL;
  assert_true(policy_parse(y, strlen(y), "x.yaml", &p, &d, &err) < 0);
  assert_int_equal(d->n_errors, 6);
  /* sorted by position */
  for (size_t i = 1; i < d->n; i++)
    assert_true(d->items[i - 1].line < d->items[i].line ||
                (d->items[i - 1].line == d->items[i].line &&
                 d->items[i - 1].column <= d->items[i].column));
  assert_non_null(strstr(err->message, "x.yaml:4:12: sandbox.resources.vcpus"));
  assert_non_null(strstr(err->message, "(and 5 more errors)"));
  _cleanup_json_ json_t *j = policy_diag_to_json(&d->items[0]);
  assert_int_equal(json_integer_value(json_object_get(j, "line")), 4);
  assert_int_equal(json_integer_value(json_object_get(j, "column")), 12);
  assert_string_equal(json_string_value(json_object_get(j, "path")), "sandbox.resources.vcpus");
  policy_diags_free(d);
  cr_error_free(err);
}

static void test_warnings(void **state) {
  (void)state;
  const char *y = "version: 1\nsandbox:\n  image:\n    ref: ghcr.io/x/debian:bookworm\n"
                  "  network:\n    allow: [10.1.2.3/8]\n";
  policy *p = NULL;
  policy_diags *d = NULL;
  cr_error *err = NULL;
  assert_int_equal(policy_parse(y, strlen(y), "cleanroom.yaml", &p, &d, &err), 0);
  assert_non_null(d);
  assert_int_equal(d->n_errors, 0);
  assert_int_equal(d->n_warnings, 2);
  _cleanup_free_ char *s = policy_diag_format(&d->items[0]);
  assert_non_null(strstr(s, "cleanroom.yaml:4:10: warning: sandbox.image.ref: 'ghcr.io/x/debian:bookworm' is not pinned"));
  assert_false(policy_image_pinned(p));
  const char *reason;
  assert_int_equal(policy_match(p, "10.200.0.1", 443, &reason), POLICY_ALLOW);
  policy_diags_free(d);
  policy_free(p);
}

static void test_limits(void **state) {
  (void)state;
  /* deep nesting */
  size_t depth = 100;
  char *deep = malloc(depth * 2 + 16);
  size_t k = 0;
  for (size_t i = 0; i < depth; i++) deep[k++] = '[';
  for (size_t i = 0; i < depth; i++) deep[k++] = ']';
  check_invalid(deep, k, "nesting deeper than 32 levels");
  free(deep);
  /* too large */
  size_t big = POLICY_MAX_FILE_SIZE + 1;
  char *b = malloc(big);
  memset(b, '#', big);
  check_invalid(b, big, "file larger than");
  free(b);
  /* NUL byte */
  check_invalid("version: 1\n\0x: 1\n", 16, "NUL byte");
  /* invalid UTF-8 */
  check_invalid("version: 1\nx: \xff\xfe\n", 16, "YAML: ");
  /* too many errors: counted, not all kept */
  size_t n = 300;
  char *many = malloc(n * 16 + 32);
  k = (size_t)snprintf(many, 32, "version: 1\n");
  for (size_t i = 0; i < n; i++) k += (size_t)snprintf(many + k, 16, "k%zu: 1\n", i);
  policy *p = NULL;
  policy_diags *d = NULL;
  cr_error *err = NULL;
  assert_true(policy_parse(many, k, "f", &p, &d, &err) < 0);
  assert_int_equal(d->n_errors, n);
  assert_int_equal(d->n, POLICY_MAX_DIAGS);
  assert_int_equal(d->n_dropped, n - POLICY_MAX_DIAGS);
  policy_diags_free(d);
  cr_error_free(err);
  free(many);
}

/* ---- defaults, canonical form, hash ---- */

static void test_defaults(void **state) {
  (void)state;
  _cleanup_policy_ policy *p = parse_ok("version: 1\n");
  assert_true(policy_repository_enabled(p));
  assert_string_equal(policy_repository_remote(p), "origin");
  assert_string_equal(policy_repository_path(p), "/workspace");
  assert_false(policy_repository_submodules(p));
  assert_false(policy_docker_required(p));
  assert_null(policy_image_ref(p));
  assert_int_equal(policy_vcpus(p), 0);
  _cleanup_json_ json_t *j = policy_compile_json(p);
  assert_string_equal(
      json_string_value(json_object_get(json_object_get(json_object_get(j, "sandbox"), "network"), "default")),
      "deny");
  /* explicit defaults hash the same as none */
  _cleanup_policy_ policy *q = parse_ok(
      "version: 1\nsandbox:\n  network:\n    default: deny\n    allow: []\n  docker:\n    required: false\n"
      "repository:\n  enabled: true\n  remote: origin\n  path: /workspace/\n  submodules: false\n");
  char h1[72], h2[72];
  assert_int_equal(policy_hash(p, h1), 0);
  assert_int_equal(policy_hash(q, h2), 0);
  assert_string_equal(h1, h2);
  assert_int_equal(strncmp(h1, "sha256:", 7), 0);
  assert_int_equal(strlen(h1), 71);
}

/* sandbox.secrets: where each credential may go; in the compiled form (so
 * in the hash) only when present */
static void test_secrets(void **state) {
  (void)state;
  _cleanup_policy_ policy *p = parse_ok(
      "version: 1\nsandbox:\n  secrets:\n    - name: gh\n      hosts: [github.com, \"*.github.com\"]\n"
      "    - name: reg\n      hosts: [\"10.0.0.5:5000\", {host: 10.1.0.0/16, ports: [8443]}]\n");
  assert_int_equal(policy_secret_count(p), 2);
  assert_string_equal(policy_secret_name(p, 0), "gh");
  assert_true(policy_secret_allows(p, "gh", "github.com", 443));
  assert_true(policy_secret_allows(p, "gh", "api.github.com", 443));
  assert_true(policy_secret_allows(p, "gh", "GitHub.com", 80));
  assert_false(policy_secret_allows(p, "gh", "github.com", 8080)); /* 80 and 443 only */
  assert_false(policy_secret_allows(p, "gh", "evilgithub.com", 443));
  assert_false(policy_secret_allows(p, "gh", "10.0.0.5", 5000));
  assert_false(policy_secret_allows(p, "reg", "github.com", 443));
  assert_true(policy_secret_allows(p, "reg", "10.0.0.5", 5000));
  assert_false(policy_secret_allows(p, "reg", "10.0.0.5", 443));
  assert_true(policy_secret_allows(p, "reg", "10.1.2.3", 8443));
  assert_false(policy_secret_allows(p, "nope", "github.com", 443));
  _cleanup_free_ char *j = policy_compile_string(p);
  assert_non_null(strstr(j, "\"secrets\":[{\"hosts\":"));
  /* no secrets: no key, so older policies keep their hash */
  _cleanup_policy_ policy *q = parse_ok("version: 1\nsandbox:\n  resources:\n    vcpus: 2\n");
  _cleanup_free_ char *jq = policy_compile_string(q);
  assert_null(strstr(jq, "secrets"));
  assert_int_equal(policy_secret_count(q), 0);
}

/* sandbox.network.git_push: where the gateway lets a push through; in the
 * compiled form (so in the hash) only when present */
static void test_git_push(void **state) {
  (void)state;
  _cleanup_policy_ policy *p = parse_ok(
      "version: 1\nsandbox:\n  network:\n    allow: [git.example.com, \"10.0.0.5:8080\"]\n"
      "    git_push:\n      - git.example.com\n      - \"10.0.0.5:8080\"\n"
      "      - \"*.forge.example\"\n");
  assert_true(policy_git_push_allows(p, "git.example.com", 443));
  assert_true(policy_git_push_allows(p, "GIT.example.com", 80));
  assert_false(policy_git_push_allows(p, "git.example.com", 8080)); /* 80 and 443 only */
  assert_true(policy_git_push_allows(p, "10.0.0.5", 8080));
  assert_false(policy_git_push_allows(p, "10.0.0.5", 443));
  assert_true(policy_git_push_allows(p, "a.forge.example", 443));
  assert_false(policy_git_push_allows(p, "forge.example", 443)); /* subdomains only */
  assert_false(policy_git_push_allows(p, "other.example", 443));
  _cleanup_free_ char *j = policy_compile_string(p);
  assert_non_null(strstr(j, "\"git_push\":[{\"host\":"));
  /* without it: no key (older policies keep their hash), and no push anywhere */
  _cleanup_policy_ policy *q = parse_ok("version: 1\nsandbox:\n  network:\n    allow: [git.example.com]\n");
  _cleanup_free_ char *jq = policy_compile_string(q);
  assert_null(strstr(jq, "git_push"));
  assert_false(policy_git_push_allows(q, "git.example.com", 443));
}

static void test_same_hash_two_spellings(void **state) {
  (void)state;
  _cleanup_policy_ policy *a = load_data("full.yaml");
  _cleanup_policy_ policy *b = load_data("full-respelled.yaml");
  _cleanup_free_ char *ja = policy_compile_string(a);
  _cleanup_free_ char *jb = policy_compile_string(b);
  assert_string_equal(ja, jb);
  char ha[72], hb[72];
  assert_int_equal(policy_hash(a, ha), 0);
  assert_int_equal(policy_hash(b, hb), 0);
  assert_string_equal(ha, hb);
  char hex[65];
  cr_sha256_hex(ja, strlen(ja), hex);
  assert_string_equal(ha + 7, hex);
  /* a real difference changes the hash */
  _cleanup_policy_ policy *c = parse_ok("version: 1\nsandbox:\n  resources:\n    vcpus: 2\n");
  _cleanup_policy_ policy *e = parse_ok("version: 1\nsandbox:\n  resources:\n    vcpus: 3\n");
  char hc[72], he[72];
  policy_hash(c, hc);
  policy_hash(e, he);
  assert_string_not_equal(hc, he);
  /* accessors */
  assert_int_equal(policy_memory_mib(a), 4096);
  assert_int_equal(policy_disk_mib(a), 16384);
  assert_int_equal(policy_vcpus(a), 2);
  assert_int_equal(policy_ttl_minutes(a), 30);
  assert_true(policy_docker_required(a));
  assert_int_equal(policy_n_dependencies(b), 1);
  const policy_step *s = policy_dependency(b, 0);
  assert_int_equal(s->n_input_files, 2);
  assert_string_equal(s->input_files[0], "package-lock.json");
  assert_string_equal(policy_run_before(a), "docker compose up -d");
}

static void test_sizes(void **state) {
  (void)state;
  static const struct {
    const char *in;
    uint64_t mib;
  } cases[] = {{"8GiB", 8192}, {"8Gi", 8192}, {"8G", 7630}, {"8GB", 7630}, {"512MiB", 512},
               {"512", 512},   {"1TiB", 1048576}, {"1000MB", 954}, {"2048 MiB", 2048},
               {"134217728B", 128}, {"131072KiB", 128}};
  for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
    _cleanup_free_ char *y = NULL;
    assert_true(asprintf(&y, "version: 1\nsandbox:\n  resources:\n    memory: %s\n", cases[i].in) > 0);
    _cleanup_policy_ policy *p = parse_ok(y);
    if (policy_memory_mib(p) != cases[i].mib)
      fail_msg("%s: got %llu MiB", cases[i].in, (unsigned long long)policy_memory_mib(p));
  }
}

/* ---- examples, fixtures, find ---- */

static void test_examples_validate(void **state) {
  (void)state;
  DIR *dir = opendir(examples_dir);
  if (!dir) fail_msg("cannot open %s", examples_dir);
  struct dirent *de;
  int count = 0;
  while ((de = readdir(dir))) {
    size_t n = strlen(de->d_name);
    if (n < 6 || strcmp(de->d_name + n - 5, ".yaml") != 0) continue;
    _cleanup_free_ char *path = cr_path_join(examples_dir, de->d_name);
    policy *p = NULL;
    policy_diags *d = NULL;
    cr_error *err = NULL;
    int r = policy_load_file(path, &p, &d, &err);
    if (r < 0) fail_msg("%s: %s", path, err->message);
    assert_null(d); /* no warnings either */
    char h[72];
    assert_int_equal(policy_hash(p, h), 0);
    policy_free(p);
    count++;
  }
  closedir(dir);
  assert_true(count >= 5);
}

static char *make_tmpdir(void) {
  char tmpl[] = "/tmp/test-policy-XXXXXX";
  char *d = mkdtemp(tmpl);
  assert_non_null(d);
  return strdup(d);
}

static void write_file(const char *dir, const char *name, const char *content) {
  _cleanup_free_ char *path = cr_path_join(dir, name);
  assert_int_equal(cr_write_file_atomic(path, content, strlen(content), 0644), 0);
}

static void test_find(void **state) {
  (void)state;
  _cleanup_free_ char *dir = make_tmpdir();
  char *path = NULL, *warning = NULL;
  cr_error *err = NULL;
  assert_true(policy_find(dir, &path, &warning, &err) < 0);
  assert_string_equal(cr_error_reason(err), "policy_not_found");
  cr_error_free(err);
  err = NULL;

  _cleanup_free_ char *bk = cr_path_join(dir, ".buildkite");
  assert_int_equal(cr_mkdir_p(bk, 0755), 0);
  write_file(dir, ".buildkite/cleanroom.yaml", "version: 1\n");
  assert_int_equal(policy_find(dir, &path, &warning, &err), 0);
  assert_non_null(strstr(path, ".buildkite/cleanroom.yaml"));
  assert_null(warning);
  free(path);

  write_file(dir, "cleanroom.yaml", "version: 1\n");
  assert_int_equal(policy_find(dir, &path, &warning, &err), 0);
  assert_null(strstr(path, ".buildkite"));
  assert_non_null(warning);
  assert_non_null(strstr(warning, "ignoring"));
  assert_non_null(strstr(warning, ".buildkite/cleanroom.yaml"));
  free(path);
  free(warning);
  assert_int_equal(cr_rm_rf(dir), 0);
}

/* ---- bump-ref edit ---- */

static void test_edit_image_ref(void **state) {
  (void)state;
  static const char *pin =
      "ghcr.io/buildkite/cleanroom-base/debian@sha256:2222222222222222222222222222222222222222222222222222222222222222";
  _cleanup_free_ char *path = cr_path_join(data_dir, "bump.yaml");
  _cleanup_free_ char *buf = NULL, *out = NULL;
  size_t len = 0, out_len = 0;
  assert_int_equal(cr_read_file(path, 1 << 20, &buf, &len), 0);
  cr_error *err = NULL;
  assert_int_equal(policy_edit_image_ref(buf, len, "bump.yaml", pin, &out, &out_len, &err), 0);
  /* only the ref changed */
  const char *old = strstr(buf, "ghcr.io");
  const char *old_end = strstr(buf, "   # pin me");
  size_t prefix = (size_t)(old - buf);
  assert_memory_equal(out, buf, prefix);
  assert_memory_equal(out + prefix, pin, strlen(pin));
  assert_string_equal(out + prefix + strlen(pin), old_end);
  policy *p = NULL;
  assert_int_equal(policy_parse(out, out_len, "bump.yaml", &p, NULL, &err), 0);
  assert_string_equal(policy_image_ref(p), pin);
  assert_true(policy_image_pinned(p));
  policy_free(p);

  /* quoted, flow style */
  _cleanup_free_ char *qpath = cr_path_join(data_dir, "bump-quoted.yaml");
  _cleanup_free_ char *qbuf = NULL, *qout = NULL;
  assert_int_equal(cr_read_file(qpath, 1 << 20, &qbuf, &len), 0);
  assert_int_equal(policy_edit_image_ref(qbuf, len, "q.yaml", pin, &qout, &out_len, &err), 0);
  assert_non_null(strstr(qout, "{ref: \"ghcr.io/buildkite/cleanroom-base/debian@sha256:2222"));
  assert_non_null(strstr(qout, "\"}, network: {allow: [\"api.github.com:443\"]}}\n"));

  /* non-ASCII before the ref on the same line */
  const char *u = "version: 1\nsandbox: {image: {ref: 'x/y:1'}} # é\n";
  const char *u2 = "version: 1 # ünïcödé\nsandbox:\n  image: {ref: x/y:1}  # é\n";
  _cleanup_free_ char *uo = NULL, *uo2 = NULL;
  assert_int_equal(policy_edit_image_ref(u, strlen(u), "u", pin, &uo, &out_len, &err), 0);
  assert_non_null(strstr(uo, "{ref: 'ghcr.io/"));
  assert_int_equal(policy_edit_image_ref(u2, strlen(u2), "u", pin, &uo2, &out_len, &err), 0);
  assert_non_null(strstr(uo2, "{ref: ghcr.io/"));
  assert_non_null(strstr(uo2, "}  # é\n"));

  /* no ref yet: added, nothing else changes */
  static const struct {
    const char *in, *want_prefix, *want_suffix;
  } adds[] = {
      {"version: 1\n", "version: 1\nsandbox:\n  image:\n    ref: ghcr.io/", "2222\n"},
      {"version: 1", "version: 1\nsandbox:\n  image:\n    ref: ghcr.io/", "2222\n"},
      {"version: 1\nsandbox:\n    network:\n      allow: [a.com]\n# end\n",
       "version: 1\nsandbox:\n    image:\n      ref: ghcr.io/",
       "2222\n    network:\n      allow: [a.com]\n# end\n"},
  };
  for (size_t i = 0; i < ELEMENTSOF(adds); i++) {
    _cleanup_free_ char *ao = NULL;
    assert_int_equal(policy_edit_image_ref(adds[i].in, strlen(adds[i].in), "a", pin, &ao, &out_len, &err), 0);
    assert_int_equal(strncmp(ao, adds[i].want_prefix, strlen(adds[i].want_prefix)), 0);
    assert_string_equal(ao + out_len - strlen(adds[i].want_suffix), adds[i].want_suffix);
  }
  const char *flow = "version: 1\nsandbox: {network: {}}\n";
  assert_true(policy_edit_image_ref(flow, strlen(flow), "f", pin, &out, &out_len, &err) < 0);
  assert_string_equal(cr_error_reason(err), "policy_invalid");
  assert_non_null(strstr(err->message, "f:2:10: sandbox: cannot add sandbox.image.ref here"));
  cr_error_free(err);
  err = NULL;
  const char *block = "version: 1\nsandbox:\n  image:\n    ref: |\n      x/y:1\n";
  assert_true(policy_edit_image_ref(block, strlen(block), "b", pin, &out, &out_len, &err) < 0);
  assert_non_null(strstr(err->message, "b:4:10: sandbox.image.ref: cannot rewrite"));
  cr_error_free(err);
  err = NULL;
  assert_true(policy_edit_image_ref(u, strlen(u), "u", "Bad Ref", &out, &out_len, &err) < 0);
  assert_string_equal(cr_error_reason(err), "invalid_argument");
  cr_error_free(err);
}

int main(int argc, char **argv) {
  examples_dir = argc > 1 ? argv[1] : getenv("CR_POLICY_EXAMPLES");
  data_dir = argc > 2 ? argv[2] : getenv("CR_POLICY_DATA");
  if (!examples_dir || !data_dir) {
    fprintf(stderr, "usage: %s EXAMPLES_DIR DATA_DIR\n", argv[0]);
    return 2;
  }
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_match_table),
      cmocka_unit_test(test_match_default_deny),
      cmocka_unit_test(test_may_resolve),
      cmocka_unit_test(test_normalize),
      cmocka_unit_test(test_invalid_table),
      cmocka_unit_test(test_all_errors_at_once),
      cmocka_unit_test(test_warnings),
      cmocka_unit_test(test_limits),
      cmocka_unit_test(test_defaults),
      cmocka_unit_test(test_same_hash_two_spellings),
      cmocka_unit_test(test_secrets),
      cmocka_unit_test(test_git_push),
      cmocka_unit_test(test_sizes),
      cmocka_unit_test(test_examples_validate),
      cmocka_unit_test(test_find),
      cmocka_unit_test(test_edit_image_ref),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
