/* Unit tests for src/gateway (the request reader and router, upload-pack
 * cacheability) and src/cache (the local directory: get/put, integrity,
 * LRU eviction, prune, counters). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "cache/cache.h"
#include "gateway/request.h"
#include "util/fs.h"

static long feed_all(gw_request *r, const char *s, size_t split) {
  size_t n = strlen(s);
  if (split && split < n) {
    long a = gw_request_feed(r, s, split);
    if (a < 0 || r->complete) return a;
    long b = gw_request_feed(r, s + split, n - split);
    return b < 0 ? b : a + b;
  }
  return gw_request_feed(r, s, n);
}

static void test_request_ok(void **state) {
  const char *req =
      "POST /git/https/example.com/org/x.git/git-upload-pack HTTP/1.1\r\n"
      "Host: 10.213.0.1:8470\r\nContent-Type: application/x-git-upload-pack-request\r\n"
      "Git-Protocol: version=2\r\nTransfer-Encoding: chunked\r\n\r\n"
      "5\r\nhello\r\n0\r\n\r\nGET /next HTTP/1.1\r\n";
  for (size_t split = 0; split < strlen(req); split += 7) {
    gw_request r;
    gw_request_init(&r);
    long used = feed_all(&r, req, split);
    assert_true(used > 0);
    assert_true(r.complete);
    assert_string_equal(req + used, "GET /next HTTP/1.1\r\n");
    assert_string_equal(gw_request_method(&r), "POST");
    assert_string_equal(r.host, "10.213.0.1:8470");
    assert_string_equal(r.git_protocol, "version=2");
    assert_int_equal(r.body.len, 5);
    assert_memory_equal(r.body.data, "hello", 5);
    assert_true(r.keep_alive);
    gw_request_free(&r);
  }
}

static void expect_refused(const char *req, const char *reason) {
  gw_request r;
  gw_request_init(&r);
  assert_int_equal(gw_request_feed(&r, req, strlen(req)), -1);
  assert_string_equal(r.reason, reason);
  assert_true(r.status >= 400);
  gw_request_free(&r);
}

static void test_request_refused(void **state) {
  expect_refused("CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n", "method_not_allowed");
  expect_refused("PUT /x HTTP/1.1\r\nHost: a\r\n\r\n", "method_not_allowed");
  expect_refused("GET /x HTTP/1.1\r\n\r\n", "host_header_invalid");
  expect_refused("GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "host_header_invalid");
  expect_refused("GET /x HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n",
                 "method_not_allowed");
  expect_refused("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 999999999\r\n\r\n",
                 "request_too_large");
  expect_refused("garbage\r\n\r\n", "request_malformed");
  /* bounded head: a huge header value and too many headers */
  char *big = malloc(GW_MAX_HEAD + 200);
  int n = snprintf(big, 64, "GET /x HTTP/1.1\r\nHost: a\r\nX-A: ");
  memset(big + n, 'a', GW_MAX_HEAD);
  strcpy(big + n + GW_MAX_HEAD, "\r\n\r\n");
  expect_refused(big, "request_too_large");
  free(big);
  char many[8192] = "GET /x HTTP/1.1\r\nHost: a\r\n";
  for (int i = 0; i < GW_MAX_HEADERS + 2; i++) strcat(many, "X: y\r\n");
  strcat(many, "\r\n");
  expect_refused(many, "request_too_large");
  /* a known header over its bound */
  char ua[512] = "GET /x HTTP/1.1\r\nHost: a\r\nUser-Agent: ";
  memset(ua + strlen(ua), 'u', 300);
  strcat(ua, "\r\n\r\n");
  expect_refused(ua, "header_too_large");
}

static void expect_route(const char *method, const char *url, gw_route_kind kind,
                         const char *upstream) {
  gw_route rt;
  const char *reason = NULL;
  int status = 0;
  assert_int_equal(gw_route_parse(method, url, &rt, &reason, &status), 0);
  assert_int_equal(rt.kind, kind);
  assert_string_equal(rt.upstream_url, upstream);
}

static void expect_no_route(const char *method, const char *url, const char *reason_want) {
  gw_route rt;
  const char *reason = NULL;
  int status = 0;
  assert_int_equal(gw_route_parse(method, url, &rt, &reason, &status), -1);
  assert_string_equal(reason, reason_want);
}

static void test_routes(void **state) {
  expect_route("GET", "/git/https/github.com/org/x.git/info/refs?service=git-upload-pack",
               GW_ROUTE_GIT_INFO_REFS, "https://github.com/org/x.git/info/refs?service=git-upload-pack");
  expect_route("POST", "/git/http/10.0.0.5:8080/x.git/git-upload-pack", GW_ROUTE_GIT_UPLOAD_PACK,
               "http://10.0.0.5:8080/x.git/git-upload-pack");
  expect_route("GET", "/git/https/h.example:443/x/info/refs?service=git-receive-pack",
               GW_ROUTE_GIT_RECEIVE_PACK, "https://h.example/x/info/refs?service=git-receive-pack");
  expect_route("POST", "/git/https/h.example/x/git-receive-pack", GW_ROUTE_GIT_RECEIVE_PACK,
               "https://h.example/x/git-receive-pack");
  const char *d = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
  char u[512], want[512];
  snprintf(u, sizeof(u), "/download/sha256/%s/https/files.example/a/b-1.0.tar.gz", d);
  expect_route("GET", u, GW_ROUTE_DOWNLOAD, "https://files.example/a/b-1.0.tar.gz");
  snprintf(u, sizeof(u), "/download/sha256/%s/http/10.0.0.5:8080/x", d);
  snprintf(want, sizeof(want), "http://10.0.0.5:8080/x");
  expect_route("GET", u, GW_ROUTE_DOWNLOAD, want);
  snprintf(u, sizeof(u), "/download/sha256/%s/http/h/x", d);
  expect_no_route("POST", u, "method_not_allowed");
  snprintf(u, sizeof(u), "/download/sha256/%s/http/h/x?y=1", d);
  expect_no_route("GET", u, "path_not_canonical");
  snprintf(u, sizeof(u), "/download/sha256/%s/http/h/../x", d);
  expect_no_route("GET", u, "path_not_canonical");
  expect_no_route("GET", "/download/sha256/E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855/http/h/x",
                  "digest_invalid");
  expect_no_route("GET", "/download/sha256/abc/http/h/x", "route_not_found");
  /* OCI pull-through: the upstream registry is the name's first component */
  snprintf(u, sizeof(u), "/v2/10.0.0.5:5000/library/busybox/blobs/sha256:%s", d);
  snprintf(want, sizeof(want), "https://10.0.0.5:5000/v2/library/busybox/blobs/sha256:%s", d);
  expect_route("GET", u, GW_ROUTE_OCI, want);
  expect_route("GET", "/v2/ghcr.io/org/app/manifests/v1.2_3-rc", GW_ROUTE_OCI,
               "https://ghcr.io/v2/org/app/manifests/v1.2_3-rc");
  {
    gw_route rt;
    const char *reason = NULL;
    int status = 0;
    assert_int_equal(gw_route_parse("GET", "/v2/", &rt, &reason, &status), 0);
    assert_int_equal(rt.kind, GW_ROUTE_OCI_BASE);
    snprintf(u, sizeof(u), "/v2/r.example/a/b/manifests/sha256:%s", d);
    assert_int_equal(gw_route_parse("GET", u, &rt, &reason, &status), 0);
    assert_true(rt.immutable && rt.oci_manifest);
    assert_string_equal(rt.digest, d);
    assert_int_equal(gw_route_parse("GET", "/v2/r.example/a/manifests/latest", &rt, &reason, &status), 0);
    assert_false(rt.immutable);
    rt.https = false; /* CLEANROOM_GATEWAY_OCI_INSECURE */
    gw_route_build_url(&rt, NULL);
    assert_string_equal(rt.upstream_url, "http://r.example/v2/a/manifests/latest");
  }
  expect_route("HEAD", "/v2/r.example/a/manifests/latest", GW_ROUTE_OCI,
               "https://r.example/v2/a/manifests/latest");
  expect_no_route("HEAD", "/go/https/proxy.golang.org/x/@v/list", "method_not_allowed");
  expect_no_route("PUT", "/v2/r.example/a/manifests/latest", "method_not_allowed");
  expect_no_route("GET", "/v2/r.example/a/blobs/latest", "digest_invalid");
  expect_no_route("GET", "/v2/r.example/a/blobs/sha256:abc", "digest_invalid");
  expect_no_route("GET", "/v2/r.example/A/manifests/x", "path_not_canonical");
  expect_no_route("GET", "/v2/r.example/a/../b/manifests/x", "path_not_canonical");
  expect_no_route("GET", "/v2/r.example/a/manifests/-x", "path_not_canonical");
  expect_no_route("GET", "/v2/r.example/a/tags/list", "route_not_found");
  expect_no_route("GET", "/v2/r.example/manifests/x", "route_not_found");
  expect_no_route("GET", "/v2/R.example/a/manifests/x", "host_invalid");
  expect_no_route("GET", "/v2/r.example/a/manifests/x?n=1", "path_not_canonical");
  expect_route("GET", "/go/https/proxy.golang.org/github.com/!burnt!sushi/toml/@v/v1.3.2.zip",
               GW_ROUTE_GOPROXY, "https://proxy.golang.org/github.com/!burnt!sushi/toml/@v/v1.3.2.zip");
  expect_route("GET", "/go/http/10.0.0.5:8080/gomod/example.com/x/@v/list", GW_ROUTE_GOPROXY,
               "http://10.0.0.5:8080/gomod/example.com/x/@v/list");
  expect_no_route("POST", "/go/https/proxy.golang.org/x/@v/list", "method_not_allowed");
  expect_no_route("GET", "/go/https/proxy.golang.org/x/@v/list?x", "path_not_canonical");
  expect_route("GET", "/npm/https/registry.npmjs.org/@types%2fnode", GW_ROUTE_NPM,
               "https://registry.npmjs.org/@types%2fnode");
  expect_route("GET", "/npm/https/registry.npmjs.org/left-pad/-/left-pad-1.3.0.tgz", GW_ROUTE_NPM,
               "https://registry.npmjs.org/left-pad/-/left-pad-1.3.0.tgz");
  expect_no_route("GET", "/npm/https/registry.npmjs.org/a%2fb", "path_not_canonical");
  expect_no_route("GET", "/npm/https/registry.npmjs.org/@a%2e", "path_not_canonical");
  expect_no_route("GET", "/git/https/h/@a%2fb/info/refs?service=git-upload-pack", "path_not_canonical");
  {
    gw_route rt;
    const char *reason;
    int status;
    assert_int_equal(gw_route_parse("GET", "/npm/https/r.example/x/-/x-1.0.0.tgz", &rt, &reason, &status), 0);
    assert_true(rt.immutable);
    assert_int_equal(gw_route_parse("GET", "/npm/https/r.example/x", &rt, &reason, &status), 0);
    assert_false(rt.immutable);
  }
  /* RubyGems: the compact index (mutable), gems and gemspecs (immutable), the dependency API */
  expect_route("GET", "/gems/https/rubygems.org/versions", GW_ROUTE_GEMS, "https://rubygems.org/versions");
  expect_route("GET", "/gems/https/rubygems.org/info/rack", GW_ROUTE_GEMS, "https://rubygems.org/info/rack");
  expect_route("GET", "/gems/http/10.0.0.5:8080/gemsrv/gems/rack-3.0.8.gem", GW_ROUTE_GEMS,
               "http://10.0.0.5:8080/gemsrv/gems/rack-3.0.8.gem");
  expect_route("GET", "/gems/https/rubygems.org/api/v1/dependencies?gems=rack,rake", GW_ROUTE_GEMS,
               "https://rubygems.org/api/v1/dependencies?gems=rack,rake");
  expect_no_route("GET", "/gems/https/rubygems.org/api/v1/dependencies?gems=a,,b", "path_not_canonical");
  expect_no_route("GET", "/gems/https/rubygems.org/api/v1/dependencies?gems=a&x=1", "path_not_canonical");
  expect_no_route("GET", "/gems/https/rubygems.org/versions?x", "path_not_canonical");
  expect_no_route("POST", "/gems/https/rubygems.org/api/v1/gems", "method_not_allowed");
  expect_no_route("GET", "/gems/https/rubygems.org/gems/../versions", "path_not_canonical");
  {
    gw_route rt;
    const char *reason;
    int status;
    assert_int_equal(gw_route_parse("GET", "/gems/https/rubygems.org/gems/rack-3.0.8.gem", &rt, &reason, &status), 0);
    assert_true(rt.immutable);
    assert_int_equal(gw_route_parse("GET", "/gems/https/rubygems.org/quick/Marshal.4.8/rack-3.0.8.gemspec.rz",
                                    &rt, &reason, &status), 0);
    assert_true(rt.immutable);
    assert_int_equal(gw_route_parse("GET", "/gems/https/rubygems.org/info/rack", &rt, &reason, &status), 0);
    assert_false(rt.immutable);
    assert_int_equal(gw_route_parse("GET", "/gems/https/rubygems.org/api/v1/dependencies?gems=x.gem",
                                    &rt, &reason, &status), 0);
    assert_false(rt.immutable);
  }
  assert_true(gw_gems_immutable("/gems/a-1.gem"));
  assert_true(gw_gems_immutable("/mirror/gems/a-1.gem"));
  assert_false(gw_gems_immutable("/info/a.gem"));
  assert_false(gw_gems_immutable("/xgems/a-1.gem"));
  assert_false(gw_gems_immutable("/gems/.gem"));
  assert_false(gw_gems_immutable("/Marshal.4.8/a-1.gemspec.rz"));
  assert_false(gw_gems_immutable("/xquick/Marshal.4.8/a-1.gemspec.rz"));
  assert_false(gw_gems_immutable("/versions"));
  expect_no_route("GET", "http://evil/x", "path_not_canonical");
  expect_no_route("GET", "/other", "route_not_found");
  expect_no_route("GET", "/git/https/h/a/../b/info/refs?service=git-upload-pack", "path_not_canonical");
  expect_no_route("GET", "/git/https/h/a/./b/info/refs?service=git-upload-pack", "path_not_canonical");
  expect_no_route("GET", "/git/https/h//b/info/refs?service=git-upload-pack", "path_not_canonical");
  expect_no_route("GET", "/git/https/h/%2e%2e/info/refs?service=git-upload-pack", "path_not_canonical");
  expect_no_route("GET", "/git/https/user@h/x/info/refs?service=git-upload-pack", "host_invalid");
  expect_no_route("GET", "/git/https/H.example/x/info/refs?service=git-upload-pack", "host_invalid");
  expect_no_route("GET", "/git/https/h:0/x/info/refs?service=git-upload-pack", "host_invalid");
  expect_no_route("GET", "/git/https/h:99999/x/info/refs?service=git-upload-pack", "host_invalid");
  expect_no_route("GET", "/git/https/a..b/x/info/refs?service=git-upload-pack", "host_invalid");
  expect_no_route("GET", "/git/https/h/x/info/refs", "route_not_found");
  expect_no_route("GET", "/git/https/h/x/info/refs?service=git-upload-pack&x=1", "route_not_found");
  expect_no_route("GET", "/git/https/h/info/refs?service=git-upload-pack", "route_not_found");
  expect_no_route("POST", "/git/https/h/x/info/refs?service=git-upload-pack", "method_not_allowed");
  expect_no_route("GET", "/git/https/h/x/git-upload-pack", "method_not_allowed");
  expect_no_route("GET", "/git/https/h/x/HEAD", "route_not_found");
}

static char *pkt(char *out, const char *line) {
  sprintf(out + strlen(out), "%04zx%s", strlen(line) + 4, line);
  return out;
}

static void test_cacheable(void **state) {
  const char *oid = "0123456789abcdef0123456789abcdef01234567";
  char b[4096] = "", l[256];
  snprintf(l, sizeof(l), "want %s multi_ack side-band-64k ofs-delta\n", oid);
  pkt(b, l);
  strcat(b, "0000");
  pkt(b, "done\n");
  assert_true(gw_upload_pack_cacheable((uint8_t *)b, strlen(b)));
  /* with a have: the answer depends on what the server has now */
  char h[4096] = "";
  pkt(h, l);
  strcat(h, "0000");
  snprintf(l, sizeof(l), "have %s\n", oid);
  pkt(h, l);
  pkt(h, "done\n");
  assert_false(gw_upload_pack_cacheable((uint8_t *)h, strlen(h)));
  /* v2 fetch */
  char v[4096] = "";
  pkt(v, "command=fetch\n");
  pkt(v, "agent=git/2.39\n");
  strcat(v, "0001");
  pkt(v, "thin-pack\n");
  snprintf(l, sizeof(l), "want %s\n", oid);
  pkt(v, l);
  pkt(v, "done\n");
  strcat(v, "0000");
  assert_true(gw_upload_pack_cacheable((uint8_t *)v, strlen(v)));
  /* v2 ls-refs, want-ref, no done, truncated, a want that is not an id */
  char x[4096] = "";
  pkt(x, "command=ls-refs\n");
  strcat(x, "0000");
  assert_false(gw_upload_pack_cacheable((uint8_t *)x, strlen(x)));
  assert_true(gw_upload_pack_is_ls_refs((uint8_t *)x, strlen(x)));
  assert_false(gw_upload_pack_is_ls_refs((uint8_t *)v, strlen(v)));
  assert_false(gw_upload_pack_is_ls_refs((uint8_t *)x, 10));
  x[0] = '\0';
  pkt(x, "command=fetch\n");
  strcat(x, "0001");
  pkt(x, "want-ref refs/heads/main\n");
  pkt(x, "done\n");
  assert_false(gw_upload_pack_cacheable((uint8_t *)x, strlen(x)));
  assert_false(gw_upload_pack_cacheable((uint8_t *)b, strlen(b) - 9)); /* no done */
  assert_false(gw_upload_pack_cacheable((uint8_t *)b, strlen(b) - 2)); /* truncated */
  x[0] = '\0';
  pkt(x, "want refs/heads/main\n");
  pkt(x, "done\n");
  assert_false(gw_upload_pack_cacheable((uint8_t *)x, strlen(x)));
  assert_false(gw_upload_pack_cacheable((uint8_t *)"", 0));
}

static void test_goproxy_immutable(void **state) {
  assert_true(gw_goproxy_immutable("/example.com/x/@v/v1.0.0.zip"));
  assert_true(gw_goproxy_immutable("/gomod/example.com/x/@v/v1.0.0.mod"));
  assert_true(gw_goproxy_immutable("/github.com/!a/b/@v/v0.0.0-20230101000000-abcdefabcdef.info"));
  assert_false(gw_goproxy_immutable("/example.com/x/@v/list"));
  assert_false(gw_goproxy_immutable("/example.com/x/@latest"));
  assert_false(gw_goproxy_immutable("/sumdb/sum.golang.org/lookup/x@v1.0.0"));
  assert_false(gw_goproxy_immutable("/example.com/x/@v/v1.0.0.txt"));
  assert_false(gw_goproxy_immutable("/example.com/x/@v/master.zip"));
  assert_false(gw_goproxy_immutable("/example.com/x/@v/.zip"));
  assert_false(gw_goproxy_immutable("/example.com/x/@v/v1/y.zip"));
}

static void test_npm_rewrite(void **state) {
  const char *doc = "{\"name\":\"x\",\"versions\":{\"1.0.0\":{\"dist\":{\"tarball\":"
                    "\"https://registry.npmjs.org/x/-/x-1.0.0.tgz\",\"integrity\":\"sha512-a\"}},"
                    "\"2.0.0\":{\"dist\":{\"tarball\":\"http://10.0.0.5:8080/x/-/x-2.0.0.tgz\"}},"
                    "\"3.0.0\":{\"dist\":{\"tarball\":\"file:///etc/passwd\"}}}}";
  size_t n = 0;
  char *out = gw_npm_rewrite(doc, strlen(doc), "http://10.213.0.1:8470", &n);
  assert_non_null(out);
  assert_int_equal(strlen(out), n);
  assert_non_null(strstr(out, "\"http://10.213.0.1:8470/npm/https/registry.npmjs.org/x/-/x-1.0.0.tgz\""));
  assert_non_null(strstr(out, "\"http://10.213.0.1:8470/npm/http/10.0.0.5:8080/x/-/x-2.0.0.tgz\""));
  assert_non_null(strstr(out, "\"file:///etc/passwd\""));
  assert_non_null(strstr(out, "sha512-a"));
  free(out);
  assert_null(gw_npm_rewrite("not json", 8, "http://g", &n));
  assert_null(gw_npm_rewrite("[1]", 3, "http://g", &n));
}

static void test_error_body(void **state) {
  size_t n = 0;
  const char *ct = NULL;
  char *b = gw_error_body("/npm/http/10.0.0.5:4873/x", "host_not_allowed", "no \"such\"\n", &n, &ct);
  assert_non_null(b);
  assert_string_equal(ct, "application/json");
  assert_int_equal(strlen(b), n);
  json_t *o = json_loadb(b, n, 0, NULL); /* npm parses it and shows "error" */
  assert_non_null(o);
  assert_string_equal(json_string_value(json_object_get(o, "error")),
                      "cleanroom gateway: host_not_allowed: no \"such\"\n");
  json_decref(o);
  free(b);
  b = gw_error_body("/git/http/h/r.git/info/refs", "push_not_allowed", NULL, &n, &ct);
  assert_non_null(b);
  assert_string_equal(b, "cleanroom gateway: push_not_allowed: \n");
  assert_int_equal(n, strlen(b));
  assert_string_equal(ct, "text/plain; charset=utf-8");
  free(b);
}

static void key_of(const char *s, char out[65]) { cr_sha256_hex(s, strlen(s), out); }

static void test_cache(void **state) {
  char dir[] = "/tmp/cr-test-cache-XXXXXX";
  assert_non_null(mkdtemp(dir));
  cache *c = NULL;
  cr_error *err = NULL;
  assert_int_equal(cache_open_local(dir, 250, &c, &err), 0);
  json_t *l0 = cache_list(c); /* an empty cache lists (no entry array to sort) */
  assert_int_equal(json_array_size(json_object_get(l0, "entries")), 0);
  assert_non_null(json_object_get(l0, "entries"));
  json_decref(l0);
  char k1[65], k2[65], k3[65], k4[65];
  key_of("one", k1), key_of("two", k2), key_of("three", k3), key_of("four", k4);
  uint8_t data[100];
  memset(data, 'a', sizeof(data));
  uint8_t *got = NULL;
  size_t len = 0;
  assert_int_equal(cache_get(c, k1, &got, &len, &err), 0); /* miss */
  assert_int_equal(cache_put(c, k1, "git-pack", "u1", data, 100, &err), 0);
  assert_int_equal(cache_put(c, k2, "git-pack", "u2", data, 100, &err), 0); /* same bytes: one blob */
  data[0] = 'b';
  assert_int_equal(cache_put(c, k3, "git-pack", "u3", data, 100, &err), 0);
  assert_int_equal(cache_get(c, k1, &got, &len, &err), 1); /* hit, k1 now most recent */
  assert_int_equal(len, 100);
  assert_int_equal(got[0], 'a');
  free(got);
  json_t *st = cache_stats(c);
  assert_int_equal(json_integer_value(json_object_get(st, "entries")), 3);
  assert_int_equal(json_integer_value(json_object_get(st, "bytes")), 200);
  assert_int_equal(json_integer_value(json_object_get(st, "hits")), 1);
  assert_int_equal(json_integer_value(json_object_get(st, "misses")), 1);
  json_decref(st);
  /* over 250 bytes: the least recently used go (k2 shares k1's blob, k3 is older than k1) */
  data[0] = 'c';
  assert_int_equal(cache_put(c, k4, "git-pack", "u4", data, 100, &err), 0);
  assert_int_equal(cache_get(c, k4, &got, &len, &err), 1);
  free(got);
  assert_int_equal(cache_get(c, k1, &got, &len, &err), 1);
  free(got);
  assert_int_equal(cache_get(c, k3, &got, &len, &err), 0);
  st = cache_stats(c);
  assert_true(json_integer_value(json_object_get(st, "bytes")) <= 250);
  assert_true(json_integer_value(json_object_get(st, "evictions")) >= 1);
  json_decref(st);
  /* a corrupted blob is a miss and goes away */
  json_t *l = cache_list(c);
  const char *dg = NULL;
  size_t i;
  json_t *e;
  json_array_foreach(json_object_get(l, "entries"), i, e)
    if (!strcmp(json_string_value(json_object_get(e, "key")), k4))
      dg = json_string_value(json_object_get(e, "digest"));
  assert_non_null(dg);
  char path[256];
  snprintf(path, sizeof(path), "%s/blobs/%s", dir, dg);
  FILE *f = fopen(path, "r+");
  assert_non_null(f);
  fputc('X', f);
  fclose(f);
  json_decref(l);
  assert_int_equal(cache_get(c, k4, &got, &len, &err), 0);
  /* bad keys */
  assert_int_equal(cache_get(c, "../x", &got, &len, &err), -1);
  cr_error_free(err);
  err = NULL;
  size_t removed = 0;
  assert_int_equal(cache_prune(c, 0, &removed, &err), 0);
  st = cache_stats(c);
  assert_int_equal(json_integer_value(json_object_get(st, "entries")), 0);
  assert_int_equal(json_integer_value(json_object_get(st, "bytes")), 0);
  json_decref(st);
  /* larger than the limit: not stored */
  uint8_t big[300] = {0};
  assert_int_equal(cache_put(c, k1, "x", "u", big, sizeof(big), &err), 0);
  assert_int_equal(cache_get(c, k1, &got, &len, &err), 0);
  cache_close(c);
  cr_rm_rf(dir);
}

/* An entry's metadata (the gateway's validators): kept beside the bytes,
 * replaced without them; a replaced entry's old blob goes when no other
 * entry names it. */
static void test_cache_meta(void **state) {
  char dir[] = "/tmp/cr-test-cache-XXXXXX";
  assert_non_null(mkdtemp(dir));
  cache *c = NULL;
  cr_error *err = NULL;
  assert_int_equal(cache_open_local(dir, 1 << 20, &c, &err), 0);
  char k1[65], k2[65];
  key_of("m1", k1), key_of("m2", k2);
  json_t *m = NULL;
  assert_int_equal(cache_meta_get(c, k1, &m, &err), 0); /* no entry */
  assert_null(m);
  json_t *nm = json_pack("{s:s, s:f}", "etag", "\"abc\"", "stored", 1.5);
  assert_int_equal(cache_meta_set(c, k1, nm, &err), 0); /* no entry: nothing set */
  assert_int_equal(cache_put(c, k1, "index", "u1", (const uint8_t *)"old", 3, &err), 0);
  assert_int_equal(cache_meta_get(c, k1, &m, &err), 0); /* an entry without metadata */
  assert_int_equal(cache_meta_set(c, k1, nm, &err), 1);
  json_decref(nm);
  assert_int_equal(cache_meta_get(c, k1, &m, &err), 1);
  assert_string_equal(json_string_value(json_object_get(m, "etag")), "\"abc\"");
  json_decref(m);
  uint8_t *got = NULL;
  size_t len = 0;
  assert_int_equal(cache_get(c, k1, &got, &len, &err), 1); /* the bytes stay */
  assert_memory_equal(got, "old", 3);
  free(got);
  /* replaced: the old blob goes (k2 shares the new bytes, not the old) */
  char old_blob[256], hex[65];
  cr_sha256_hex("old", 3, hex);
  snprintf(old_blob, sizeof(old_blob), "%s/blobs/%s", dir, hex);
  assert_int_equal(access(old_blob, F_OK), 0);
  assert_int_equal(cache_put(c, k1, "index", "u1", (const uint8_t *)"new", 3, &err), 0);
  assert_int_equal(access(old_blob, F_OK), -1);
  assert_int_equal(cache_meta_get(c, k1, &m, &err), 0); /* a new answer: its own metadata */
  assert_int_equal(cache_put(c, k2, "index", "u2", (const uint8_t *)"new", 3, &err), 0);
  assert_int_equal(cache_put(c, k1, "index", "u1", (const uint8_t *)"newer", 5, &err), 0);
  assert_int_equal(cache_get(c, k2, &got, &len, &err), 1); /* the shared blob stays */
  assert_memory_equal(got, "new", 3);
  free(got);
  assert_int_equal(cache_meta_get(c, "../x", &m, &err), -1);
  cr_error_free(err);
  cache_close(c);
  cr_rm_rf(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_cache_meta),
      cmocka_unit_test(test_request_ok),
      cmocka_unit_test(test_request_refused),
      cmocka_unit_test(test_routes),
      cmocka_unit_test(test_cacheable),
      cmocka_unit_test(test_goproxy_immutable),
      cmocka_unit_test(test_npm_rewrite),
      cmocka_unit_test(test_error_body),
      cmocka_unit_test(test_cache),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
