/* Unit tests for the registry parsers (src/image/image-ref.c) and host
 * credential lookup (image-creds.c). The pull itself is tested against a
 * real registry in tests/integration/registry-pull.py. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "image/registry.h"
#include "util/fs.h"
#include "util/macro.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define HEX_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define HEX_B "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

static void expect_ref(const char *in, const char *reg, const char *repo, const char *tag,
                       const char *digest, const char *canonical) {
  image_reference r;
  cr_error *err = NULL;
  int rc = image_reference_parse(in, &r, &err);
  if (rc < 0) fail_msg("%s: %s", in, err->message);
  assert_string_equal(r.registry, reg);
  assert_string_equal(r.repository, repo);
  if (tag) assert_string_equal(r.tag, tag);
  else assert_null(r.tag);
  if (digest) assert_string_equal(r.digest, digest);
  else assert_null(r.digest);
  char *s = image_reference_format(&r);
  assert_string_equal(s, canonical);
  /* the canonical form parses to the same */
  image_reference r2;
  assert_int_equal(image_reference_parse(s, &r2, &err), 0);
  assert_string_equal(r2.registry, r.registry);
  assert_string_equal(r2.repository, r.repository);
  free(s);
  image_reference_clear(&r2);
  image_reference_clear(&r);
}

static void test_reference_parse(void **state) {
  expect_ref("busybox", "docker.io", "library/busybox", "latest", NULL,
             "docker.io/library/busybox:latest");
  expect_ref("busybox:1.36", "docker.io", "library/busybox", "1.36", NULL,
             "docker.io/library/busybox:1.36");
  expect_ref("index.docker.io/user/app", "docker.io", "user/app", "latest", NULL,
             "docker.io/user/app:latest");
  expect_ref("ghcr.io/buildkite/cleanroom-base/alpine:latest", "ghcr.io",
             "buildkite/cleanroom-base/alpine", "latest", NULL,
             "ghcr.io/buildkite/cleanroom-base/alpine:latest");
  expect_ref("localhost/x", "localhost", "x", "latest", NULL, "localhost/x:latest");
  expect_ref("localhost:5000/a/b_c__d-e.f:v1", "localhost:5000", "a/b_c__d-e.f", "v1", NULL,
             "localhost:5000/a/b_c__d-e.f:v1");
  expect_ref("127.0.0.1:5000/x@sha256:" HEX_A, "127.0.0.1:5000", "x", NULL, "sha256:" HEX_A,
             "127.0.0.1:5000/x@sha256:" HEX_A);
  expect_ref("r.example/x:t@sha256:" HEX_B, "r.example", "x", "t", "sha256:" HEX_B,
             "r.example/x:t@sha256:" HEX_B);
  expect_ref("[::1]:5000/x:1", "[::1]:5000", "x", "1", NULL, "[::1]:5000/x:1");
  /* a first component without '.' or ':' is part of the name */
  expect_ref("team/app:2", "docker.io", "team/app", "2", NULL, "docker.io/team/app:2");

  static const char *const bad[] = {
      "", "Busybox", "a//b", "a/", "/a", "x:", "x:-bad", "x@sha256:abc",
      "x@md5:" HEX_A, "host:99999/x", "host:/x", "a..b.example/x", "-x", "x-", "a/-b",
      "x:" "0123456789012345678901234567890123456789012345678901234567890123456789"
      "012345678901234567890123456789012345678901234567890123456789", "r.example/x y",
      "x@sha256:" HEX_A "0",
  };
  /* the 255-byte bound is on the full name, docker.io/library/ included
   * (found by fuzz-registry: a 251-byte bare name) */
  char longname[252];
  memset(longname, 'a', 251);
  longname[251] = '\0';
  image_reference lr;
  cr_error *lerr = NULL;
  assert_true(image_reference_parse(longname, &lr, &lerr) < 0);
  assert_string_equal(cr_error_reason(lerr), CR_E_INVALID_ARGUMENT);
  cr_error_free(lerr);
  longname[255 - 18] = '\0'; /* "docker.io/library/" + 237 = 255 */
  lerr = NULL;
  assert_int_equal(image_reference_parse(longname, &lr, &lerr), 0);
  image_reference_clear(&lr);
  for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
    image_reference r;
    cr_error *err = NULL;
    if (image_reference_parse(bad[i], &r, &err) == 0) fail_msg("accepted '%s'", bad[i]);
    assert_string_equal(cr_error_reason(err), CR_E_INVALID_ARGUMENT);
    cr_error_free(err);
  }
}

static void test_loopback_and_insecure(void **state) {
  assert_true(image_registry_is_loopback("localhost"));
  assert_true(image_registry_is_loopback("localhost:5000"));
  assert_true(image_registry_is_loopback("127.0.0.1:5000"));
  assert_true(image_registry_is_loopback("127.10.20.30"));
  assert_true(image_registry_is_loopback("[::1]:5000"));
  assert_false(image_registry_is_loopback("127.0.0.1.example.com"));
  assert_false(image_registry_is_loopback("localhost.example"));
  assert_false(image_registry_is_loopback("10.0.0.1:5000"));
  assert_false(image_registry_is_loopback("[::2]:5000"));
  assert_false(image_registry_insecure_allowed("reg.lan:5000"));
  setenv("CLEANROOM_INSECURE_REGISTRIES", "other.lan, reg.lan:5000", 1);
  assert_true(image_registry_insecure_allowed("reg.lan:5000"));
  assert_false(image_registry_insecure_allowed("reg.lan"));
  assert_false(image_registry_insecure_allowed("lan:5000"));
  unsetenv("CLEANROOM_INSECURE_REGISTRIES");
}

static void test_challenge_parse(void **state) {
  image_auth_challenge c;
  cr_error *err = NULL;
  assert_int_equal(image_auth_challenge_parse(
                       "Bearer realm=\"https://auth.docker.io/token\",service=\"registry.docker.io\","
                       "scope=\"repository:library/busybox:pull\"",
                       &c, &err),
                   0);
  assert_string_equal(c.scheme, "bearer");
  assert_string_equal(c.realm, "https://auth.docker.io/token");
  assert_string_equal(c.service, "registry.docker.io");
  assert_string_equal(c.scope, "repository:library/busybox:pull");
  image_auth_challenge_clear(&c);
  assert_int_equal(image_auth_challenge_parse("Basic realm=\"a \\\"q\\\" b\"", &c, &err), 0);
  assert_string_equal(c.scheme, "basic");
  assert_string_equal(c.realm, "a \"q\" b");
  assert_null(c.service);
  image_auth_challenge_clear(&c);
  /* unquoted values, odd spacing, unknown params, a second challenge */
  assert_int_equal(image_auth_challenge_parse(
                       "  bEaReR  realm = https://r.example/t , foo=bar,service=svc, Basic realm=x",
                       &c, &err),
                   0);
  assert_string_equal(c.scheme, "bearer");
  assert_string_equal(c.realm, "https://r.example/t");
  assert_string_equal(c.service, "svc");
  image_auth_challenge_clear(&c);
  static const char *const bad[] = {"", "Bearer service=x", "Bearer realm=\"unterminated",
                                    "=x"};
  for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
    if (image_auth_challenge_parse(bad[i], &c, &err) == 0) fail_msg("accepted '%s'", bad[i]);
    assert_string_equal(cr_error_reason(err), CR_E_REGISTRY_PROTOCOL);
    cr_error_free(err);
    err = NULL;
  }
}

static const char index_json[] =
    "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\","
    "\"manifests\":["
    "{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"sha256:" HEX_A
    "\",\"size\":10,\"platform\":{\"os\":\"linux\",\"architecture\":\"arm64\",\"variant\":\"v8\"}},"
    "{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"sha256:" HEX_B
    "\",\"size\":11,\"platform\":{\"os\":\"linux\",\"architecture\":\"amd64\"}}]}";

static const char manifest_json[] =
    "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.docker.distribution.manifest.v2+json\","
    "\"config\":{\"mediaType\":\"application/vnd.docker.container.image.v1+json\",\"digest\":"
    "\"sha256:" HEX_A "\",\"size\":5},\"layers\":["
    "{\"mediaType\":\"application/vnd.docker.image.rootfs.diff.tar.gzip\",\"digest\":\"sha256:" HEX_B
    "\",\"size\":7},"
    "{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+zstd\",\"digest\":\"sha256:" HEX_A
    "\",\"size\":8}]}";

static void test_manifest_parse(void **state) {
  image_manifest m;
  cr_error *err = NULL;
  assert_int_equal(image_manifest_parse(index_json, strlen(index_json), NULL, &m, &err), 0);
  assert_true(m.is_index);
  assert_int_equal(m.n_layers, 2);
  assert_string_equal(m.platforms[0], "linux/arm64/v8");
  assert_int_equal(image_manifest_pick_platform(&m, "linux/amd64"), 1);
  assert_int_equal(image_manifest_pick_platform(&m, "linux/arm64"), 0);
  assert_int_equal(image_manifest_pick_platform(&m, "linux/arm64/v7"), -1);
  assert_int_equal(image_manifest_pick_platform(&m, "linux/s390x"), -1);
  image_manifest_clear(&m);

  assert_int_equal(image_manifest_parse(manifest_json, strlen(manifest_json),
                                        IMAGE_MT_DOCKER_MANIFEST "; charset=utf-8", &m, &err),
                   0);
  assert_false(m.is_index);
  assert_string_equal(m.config.hex, HEX_A);
  assert_int_equal(m.n_layers, 2);
  assert_string_equal(m.layers[0].hex, HEX_B);
  assert_int_equal(m.layers[1].size, 8);
  image_manifest_clear(&m);

  /* served as an index but says it is a manifest */
  assert_true(image_manifest_parse(manifest_json, strlen(manifest_json), IMAGE_MT_OCI_INDEX, &m,
                                   &err) < 0);
  assert_string_equal(cr_error_reason(err), CR_E_IMAGE_INVALID);
  cr_error_free(err);
  err = NULL;
  static const char *const bad[] = {
      "{\"schemaVersion\":1,\"name\":\"x\"}",
      "[]",
      "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\"}",
      "{\"schemaVersion\":2,\"mediaType\":\"text/plain\",\"layers\":[]}",
      "{\"schemaVersion\":2,\"config\":{\"digest\":\"sha256:" HEX_A "\"},\"layers\":[{"
      "\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha512:x\"}]}",
      "{\"schemaVersion\":2,\"config\":{\"digest\":\"sha256:" HEX_A "\"},\"layers\":[{"
      "\"mediaType\":\"application/vnd.example.bin\",\"digest\":\"sha256:" HEX_A "\"}]}",
      "{\"schemaVersion\":2,\"config\":{\"digest\":\"sha256:" HEX_A "\"},\"layers\":[{"
      "\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"sha256:" HEX_A
      "\",\"size\":-1}]}",
      "{\"schemaVersion\":2,\"schemaVersion\":2,\"manifests\":[]}",
  };
  for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
    if (image_manifest_parse(bad[i], strlen(bad[i]), NULL, &m, &err) == 0)
      fail_msg("accepted %s", bad[i]);
    assert_string_equal(cr_error_reason(err), CR_E_IMAGE_INVALID);
    cr_error_free(err);
    err = NULL;
  }
}

static char *tmp;

static char *write_tmp(const char *name, const char *content, mode_t mode) {
  char *p = cr_path_join(tmp, name);
  assert_int_equal(cr_write_file_atomic(p, content, strlen(content), mode), 0);
  return p;
}

static void test_credentials(void **state) {
  char t[] = "/tmp/cr-test-registry-XXXXXX";
  assert_non_null(mkdtemp(t));
  tmp = t;
  /* "dXNlcjpwYTpzcw==" is base64("user:pa:ss") */
  char *f = write_tmp("auth.json",
                      "{\"auths\":{\"https://index.docker.io/v1/\":{\"auth\":\"dXNlcjpwYTpzcw==\"},"
                      "\"reg.example:5000\":{\"username\":\"u2\",\"password\":\"p2\"}},"
                      "\"credHelpers\":{\"helped.example\":\"crtest\"}}",
                      0600);
  image_credentials c;
  cr_error *err = NULL;
  assert_int_equal(image_credentials_lookup("docker.io", f, &c, &err), 1);
  assert_string_equal(c.username, "user");
  assert_string_equal(c.password, "pa:ss");
  image_credentials_clear(&c);
  assert_int_equal(image_credentials_lookup("reg.example:5000", f, &c, &err), 1);
  assert_string_equal(c.username, "u2");
  image_credentials_clear(&c);
  assert_int_equal(image_credentials_lookup("reg.example", f, &c, &err), 0);
  /* a credential helper on PATH */
  char *h = write_tmp("docker-credential-crtest",
                      "#!/bin/sh\nread server\n[ \"$1\" = get ] || exit 3\n"
                      "printf '{\"ServerURL\":\"%s\",\"Username\":\"hu\",\"Secret\":\"hs\"}' "
                      "\"$server\"\n",
                      0755);
  char *old = strdup(getenv("PATH") ? getenv("PATH") : "/usr/bin:/bin");
  char *path = NULL;
  assert_true(asprintf(&path, "%s:%s", tmp, old) > 0);
  setenv("PATH", path, 1);
  assert_int_equal(image_credentials_lookup("helped.example", f, &c, &err), 1);
  assert_string_equal(c.username, "hu");
  assert_string_equal(c.password, "hs");
  image_credentials_clear(&c);
  setenv("PATH", old, 1);
  /* DOCKER_CONFIG is the default place; a missing file means none */
  setenv("DOCKER_CONFIG", tmp, 1);
  assert_int_equal(image_credentials_lookup("docker.io", NULL, &c, &err), 0);
  char *cfg = cr_path_join(tmp, "config.json");
  assert_int_equal(rename(f, cfg), 0);
  free(cfg);
  assert_int_equal(image_credentials_lookup("docker.io", NULL, &c, &err), 1);
  image_credentials_clear(&c);
  unsetenv("DOCKER_CONFIG");
  /* a broken --registry-auth file is an error, not "no credentials" */
  char *bad = write_tmp("bad.json", "{not json", 0600);
  assert_true(image_credentials_lookup("docker.io", bad, &c, &err) < 0);
  assert_string_equal(cr_error_reason(err), CR_E_INVALID_ARGUMENT);
  cr_error_free(err);
  err = NULL;
  assert_true(image_credentials_lookup("docker.io", "/nonexistent/auth.json", &c, &err) < 0);
  cr_error_free(err);
  free(old);
  free(path);
  free(h);
  free(bad);
  free(f);
  cr_rm_rf(t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_reference_parse),
      cmocka_unit_test(test_loopback_and_insecure),
      cmocka_unit_test(test_challenge_parse),
      cmocka_unit_test(test_manifest_parse),
      cmocka_unit_test(test_credentials),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
