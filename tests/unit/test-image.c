/* Unit tests for src/image: path safety, whiteouts, OCI and docker-save
 * imports, atomicity, lookup/list/remove. Archives are built here with
 * libarchive's writer; mkfs.ext4 and debugfs (e2fsprogs) are real. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "image/image.h"
#include "util/fs.h"
#include "util/macro.h"
#include "util/spawn.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <string.h>
#include <sys/stat.h>

static char *tmpdir;  /* per test: <tmp>/in holds inputs, <tmp>/data the store */
static char *indir;

static int setup(void **state) {
  char t[] = "/tmp/cr-test-image-XXXXXX";
  assert_non_null(mkdtemp(t));
  tmpdir = strdup(t);
  assert_true(asprintf(&indir, "%s/in", tmpdir) > 0);
  assert_int_equal(mkdir(indir, 0700), 0);
  char *data = NULL;
  assert_true(asprintf(&data, "%s/data", tmpdir) > 0);
  setenv("CLEANROOM_DATA_DIR", data, 1);
  free(data);
  return 0;
}

static int teardown(void **state) {
  cr_rm_rf(tmpdir);
  free(tmpdir);
  free(indir);
  tmpdir = indir = NULL;
  return 0;
}

static char *in_path(const char *name) {
  char *p = NULL;
  assert_true(asprintf(&p, "%s/%s", indir, name) > 0);
  return p;
}

/* f: file with data, d: dir, l: symlink to data, h: hardlink to data */
typedef struct tent {
  char type;
  const char *path;
  const char *data;
} tent;

static void write_tar_filter(const char *out, const tent *ents, size_t n, int filter) {
  struct archive *a = archive_write_new();
  archive_write_set_format_pax_restricted(a);
  if (filter != ARCHIVE_FILTER_NONE) assert_int_equal(archive_write_add_filter(a, filter), ARCHIVE_OK);
  assert_int_equal(archive_write_open_filename(a, out), ARCHIVE_OK);
  for (size_t i = 0; i < n; i++) {
    struct archive_entry *e = archive_entry_new();
    archive_entry_set_pathname(e, ents[i].path);
    archive_entry_set_uid(e, 0);
    archive_entry_set_gid(e, 0);
    archive_entry_set_mtime(e, 1000, 0);
    switch (ents[i].type) {
    case 'f':
      archive_entry_set_filetype(e, AE_IFREG);
      archive_entry_set_perm(e, 0644);
      archive_entry_set_size(e, (la_int64_t)strlen(ents[i].data));
      break;
    case 'd':
      archive_entry_set_filetype(e, AE_IFDIR);
      archive_entry_set_perm(e, 0755);
      break;
    case 'l':
      archive_entry_set_filetype(e, AE_IFLNK);
      archive_entry_set_perm(e, 0777);
      archive_entry_set_symlink(e, ents[i].data);
      break;
    case 'h':
      archive_entry_set_filetype(e, AE_IFREG);
      archive_entry_set_perm(e, 0644);
      archive_entry_set_hardlink(e, ents[i].data);
      archive_entry_set_size(e, 0);
      break;
    }
    assert_int_equal(archive_write_header(a, e), ARCHIVE_OK);
    if (ents[i].type == 'f')
      assert_int_equal(archive_write_data(a, ents[i].data, strlen(ents[i].data)),
                       (la_ssize_t)strlen(ents[i].data));
    archive_entry_free(e);
  }
  assert_int_equal(archive_write_close(a), ARCHIVE_OK);
  archive_write_free(a);
}

static void write_tar(const char *out, const tent *ents, size_t n, bool gzip) {
  write_tar_filter(out, ents, n, gzip ? ARCHIVE_FILTER_GZIP : ARCHIVE_FILTER_NONE);
}

static void write_bytes(const char *path, const void *data, size_t len) {
  assert_int_equal(cr_write_file_atomic(path, data, len, 0644), 0);
}

/* Output of debugfs -R "<cmd>" on an image's rootfs. */
static char *debugfs(const image_info *info, const char *cmd) {
  const char *argv[] = {"debugfs", "-R", cmd, info->rootfs, NULL};
  char *out = NULL;
  cr_error *err = NULL;
  assert_int_equal(cr_run((char *const *)argv, &out, 1 << 20, &err), 0);
  return out;
}

static bool has_entry(const image_info *info, const char *dir, const char *name) {
  char cmd[512], want[300];
  snprintf(cmd, sizeof(cmd), "ls -p %s", dir);
  snprintf(want, sizeof(want), "/%s/", name);
  _cleanup_free_ char *out = debugfs(info, cmd);
  return strstr(out, want) != NULL;
}

static size_t count_store_entries(const char *prefix) {
  char *data = getenv("CLEANROOM_DATA_DIR");
  char *dir = NULL;
  assert_true(asprintf(&dir, "%s/images", data) > 0);
  size_t n = 0;
  DIR *d = opendir(dir);
  free(dir);
  if (!d) return 0;
  struct dirent *de;
  while ((de = readdir(d)))
    if (!strncmp(de->d_name, prefix, strlen(prefix)) && strcmp(de->d_name, ".") &&
        strcmp(de->d_name, "..") && strcmp(de->d_name, ".lock") &&
        (strlen(prefix) || (strcmp(de->d_name, "refs.json") && de->d_name[0] != '.')))
      n++;
  closedir(d);
  return n;
}

static void expect_import_fails(const char *path, const char *reason, const char *needle) {
  cr_error *err = NULL;
  image_info *info = NULL;
  assert_true(image_import(path, "t:1", NULL, NULL, &info, &err) < 0);
  assert_null(info);
  assert_non_null(err);
  if (strcmp(cr_error_reason(err), reason) || (needle && !strstr(err->message, needle)))
    fail_msg("got %s: %s", cr_error_reason(err), err->message);
  cr_error_free(err);
  /* atomic: nothing stored, no temp dir left */
  assert_int_equal(count_store_entries(""), 0);
  assert_int_equal(count_store_entries(".tmp"), 0);
}

/* ---- path sanitizer */

static void test_sanitize(void **state) {
  struct {
    const char *in, *out;
  } ok[] = {{"a/b", "a/b"},       {"/etc/passwd", "etc/passwd"}, {"./x/./y/", "x/y"},
            {"//a//b", "a/b"},    {".", ""},                    {"./", ""},
            {"a..b/..c", "a..b/..c"}, {"...", "..."}};
  for (size_t i = 0; i < ELEMENTSOF(ok); i++) {
    char *r = NULL;
    cr_error *err = NULL;
    assert_int_equal(image_path_sanitize(ok[i].in, &r, &err), 0);
    assert_string_equal(r, ok[i].out);
    free(r);
  }
  const char *bad[] = {"..", "../x", "a/../../b", "/..", "a/..", NULL};
  for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
    char *r = NULL;
    cr_error *err = NULL;
    assert_true(image_path_sanitize(bad[i], &r, &err) < 0);
    assert_null(r);
    assert_string_equal(cr_error_reason(err), "image_unsafe_path");
    cr_error_free(err);
  }
  char longname[5000];
  memset(longname, 'a', sizeof(longname) - 1);
  longname[sizeof(longname) - 1] = '\0';
  char *r = NULL;
  cr_error *err = NULL;
  assert_true(image_path_sanitize(longname, &r, &err) < 0);
  cr_error_free(err);
  err = NULL;
  char comp[300];
  memset(comp, 'b', sizeof(comp) - 1);
  comp[sizeof(comp) - 1] = '\0';
  assert_true(image_path_sanitize(comp, &r, &err) < 0);
  cr_error_free(err);
}

static void test_archive_check(void **state) {
  _cleanup_free_ char *p = in_path("c.tar");
  const tent good[] = {{'d', "etc", NULL}, {'f', "etc/x", "1"}, {'l', "abs", "/etc"},
                       {'h', "etc/y", "etc/x"}};
  write_tar(p, good, ELEMENTSOF(good), true);
  _cleanup_free_ char *buf = NULL;
  size_t len = 0;
  assert_int_equal(cr_read_file(p, 1 << 20, &buf, &len), 0);
  cr_error *err = NULL;
  assert_int_equal(image_archive_check(buf, len, &err), 0);
  const tent bad[] = {{'f', "ok", "1"}, {'h', "hl", "../../etc/shadow"}};
  write_tar(p, bad, ELEMENTSOF(bad), false);
  free(buf);
  buf = NULL;
  assert_int_equal(cr_read_file(p, 1 << 20, &buf, &len), 0);
  assert_true(image_archive_check(buf, len, &err) < 0);
  assert_string_equal(cr_error_reason(err), "image_unsafe_path");
  cr_error_free(err);
}

/* ---- rootfs tars: unsafe paths */

static void test_reject_dotdot(void **state) {
  _cleanup_free_ char *p = in_path("dotdot.tar");
  const tent t[] = {{'f', "ok", "1"}, {'f', "../../../../tmp/cr-test-escape", "x"}};
  write_tar(p, t, ELEMENTSOF(t), false);
  expect_import_fails(p, "image_unsafe_path", "../../../../tmp/cr-test-escape");
  assert_int_equal(access("/tmp/cr-test-escape", F_OK), -1);
}

static void test_reject_long_name(void **state) {
  _cleanup_free_ char *p = in_path("long.tar");
  char name[5000];
  memset(name, 'n', sizeof(name) - 1);
  name[sizeof(name) - 1] = '\0';
  for (size_t i = 100; i < sizeof(name) - 1; i += 100) name[i] = '/';
  const tent t[] = {{'f', name, "1"}};
  write_tar(p, t, ELEMENTSOF(t), false);
  expect_import_fails(p, "image_unsafe_path", "limit");
}

static void test_reject_symlink_escape(void **state) {
  /* a file written through a symlink that points out */
  _cleanup_free_ char *p = in_path("sym.tar");
  const tent t[] = {{'l', "escape", "/tmp"}, {'f', "escape/cr-test-escape2", "x"}};
  write_tar(p, t, ELEMENTSOF(t), false);
  expect_import_fails(p, "image_unsafe_path", "symlink");
  assert_int_equal(access("/tmp/cr-test-escape2", F_OK), -1);

  /* a hardlink whose target goes through such a symlink */
  _cleanup_free_ char *p2 = in_path("hl.tar");
  const tent t2[] = {{'l', "etcl", "/etc"}, {'h', "stolen", "etcl/passwd"}};
  write_tar(p2, t2, ELEMENTSOF(t2), false);
  expect_import_fails(p2, "image_unsafe_path", "stolen");

  /* a hardlink to something that is not in the archive */
  _cleanup_free_ char *p3 = in_path("hl2.tar");
  const tent t3[] = {{'h', "stolen", "/etc/passwd"}};
  write_tar(p3, t3, ELEMENTSOF(t3), false);
  expect_import_fails(p3, "image_unsafe_path", "stolen");

  /* hardlink target with .. */
  _cleanup_free_ char *p4 = in_path("hl3.tar");
  const tent t4[] = {{'f', "a", "1"}, {'h', "b", "../a"}};
  write_tar(p4, t4, ELEMENTSOF(t4), false);
  expect_import_fails(p4, "image_unsafe_path", "..");
}

static void test_rootfs_ok(void **state) {
  /* absolute names become relative; symlinks may point anywhere; hardlinks
   * inside are fine; gzip is detected */
  _cleanup_free_ char *p = in_path("ok.tar.gz");
  const tent t[] = {{'d', "/etc", NULL},          {'f', "/etc/hostname", "box\n"},
                    {'l', "/etc/mtab", "/proc/self/mounts"}, {'h', "etc/hostname2", "/etc/hostname"},
                    {'f', "./bin/sh", "#!"},       {'l', "rel", "../../../../x"}};
  write_tar(p, t, ELEMENTSOF(t), true);
  cr_error *err = NULL;
  _cleanup_image_info_ image_info *info = NULL;
  int r = image_import(p, "test/ok:1", NULL, NULL, &info, &err);
  if (r < 0) fail_msg("%s: %s", cr_error_reason(err), err->message);
  assert_non_null(info);
  assert_int_equal(strncmp(info->digest, "sha256:", 7), 0);
  char hex[65];
  assert_int_equal(cr_sha256_file(p, hex), 0);
  assert_string_equal(info->digest + 7, hex);
  assert_int_equal(info->n_refs, 1);
  assert_string_equal(info->refs[0], "test/ok:1");
  assert_string_equal(info->source_format, "rootfs-tar");
  assert_true(info->rootfs[0] == '/');
  struct stat st;
  assert_int_equal(stat(info->rootfs, &st), 0);
  assert_true(info->size >= 256u << 20);
  assert_true(has_entry(info, "/etc", "hostname"));
  assert_true(has_entry(info, "/etc", "hostname2"));
  assert_true(has_entry(info, "/etc", "mtab"));
  assert_true(has_entry(info, "/bin", "sh"));
  _cleanup_free_ char *out = debugfs(info, "cat /etc/hostname2");
  assert_non_null(strstr(out, "box"));
  assert_int_equal(count_store_entries(".tmp"), 0);
}

static void test_rootfs_compressions(void **state) {
  const int filters[] = {ARCHIVE_FILTER_ZSTD, ARCHIVE_FILTER_XZ, ARCHIVE_FILTER_BZIP2};
  for (size_t i = 0; i < ELEMENTSOF(filters); i++) {
    _cleanup_free_ char *p = NULL;
    assert_true(asprintf(&p, "%s/c%zu.tar", indir, i) > 0);
    char content[16];
    snprintf(content, sizeof(content), "c%zu", i);
    const tent t[] = {{'f', "f", content}};
    write_tar_filter(p, t, 1, filters[i]);
    cr_error *err = NULL;
    _cleanup_image_info_ image_info *info = NULL;
    int r = image_import(p, NULL, NULL, NULL, &info, &err);
    if (r < 0) fail_msg("%s: %s", cr_error_reason(err), err->message);
    assert_int_equal(info->n_refs, 0);
    _cleanup_free_ char *out = debugfs(info, "cat /f");
    assert_non_null(strstr(out, content));
  }
}

/* ---- OCI layouts */

static void blob_write(const char *layout, const void *data, size_t len, char ret_hex[65]) {
  cr_sha256_hex(data, len, ret_hex);
  char *dir = NULL, *p = NULL;
  assert_true(asprintf(&dir, "%s/blobs/sha256", layout) > 0);
  assert_int_equal(cr_mkdir_p(dir, 0755), 0);
  assert_true(asprintf(&p, "%s/%s", dir, ret_hex) > 0);
  write_bytes(p, data, len);
  free(dir);
  free(p);
}

static void blob_from_file(const char *layout, const char *file, char ret_hex[65]) {
  _cleanup_free_ char *buf = NULL;
  size_t len = 0;
  assert_int_equal(cr_read_file(file, 64 << 20, &buf, &len), 0);
  blob_write(layout, buf, len, ret_hex);
}

/* Two layers: the second whites out a/gone and makes o/ opaque. Returns the
 * manifest digest hex. With multi, the index also lists an arm64 manifest
 * first. */
static void make_oci_layout(const char *layout, bool multi, char ret_manifest[65]) {
  assert_int_equal(cr_mkdir_p(layout, 0755), 0);
  _cleanup_free_ char *l1 = in_path("l1.tar.gz"), *l2 = in_path("l2.tar");
  const tent t1[] = {{'d', "a", NULL},       {'f', "a/keep", "k"}, {'f', "a/gone", "g"},
                     {'d', "a/gonedir", NULL}, {'f', "a/gonedir/f", "f"},
                     {'d', "o", NULL},       {'f', "o/old", "o"},  {'f', "top", "t"}};
  const tent t2[] = {{'f', "a/.wh.gone", ""}, {'f', "a/.wh.gonedir", ""},
                     {'f', "o/new", "n"},     {'f', "o/.wh..wh..opq", ""},
                     {'f', "top", "T2"}};
  write_tar(l1, t1, ELEMENTSOF(t1), true);
  write_tar(l2, t2, ELEMENTSOF(t2), false);
  char h1[65], h2[65], hc[65], hm[65], ha[65];
  blob_from_file(layout, l1, h1);
  blob_from_file(layout, l2, h2);
  const char *config = "{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\"}}";
  blob_write(layout, config, strlen(config), hc);
  char *manifest = NULL;
  assert_true(asprintf(&manifest,
                       "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\","
                       "\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:%s\",\"size\":%zu},"
                       "\"layers\":[{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:%s\",\"size\":1},"
                       "{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"sha256:%s\",\"size\":1}]}",
                       hc, strlen(config), h1, h2) > 0);
  blob_write(layout, manifest, strlen(manifest), hm);
  /* an arm64 manifest whose layer is missing: picking it would fail */
  char *arm = NULL;
  assert_true(asprintf(&arm, "{\"schemaVersion\":2,\"layers\":[{\"digest\":\"sha256:%064d\"}]}", 0) > 0);
  blob_write(layout, arm, strlen(arm), ha);
  char *index = NULL;
  if (multi)
    assert_true(asprintf(&index,
                         "{\"schemaVersion\":2,\"manifests\":["
                         "{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"sha256:%s\",\"size\":%zu,"
                         "\"platform\":{\"os\":\"linux\",\"architecture\":\"arm64\"}},"
                         "{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"sha256:%s\",\"size\":%zu,"
                         "\"platform\":{\"os\":\"linux\",\"architecture\":\"amd64\"},"
                         "\"annotations\":{\"io.containerd.image.name\":\"example.com/test/oci:v1\"}}]}",
                         ha, strlen(arm), hm, strlen(manifest)) > 0);
  else
    assert_true(asprintf(&index,
                         "{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":"
                         "\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"sha256:%s\",\"size\":%zu}]}",
                         hm, strlen(manifest)) > 0);
  char *p = NULL;
  assert_true(asprintf(&p, "%s/index.json", layout) > 0);
  write_bytes(p, index, strlen(index));
  free(p);
  assert_true(asprintf(&p, "%s/oci-layout", layout) > 0);
  write_bytes(p, "{\"imageLayoutVersion\":\"1.0.0\"}", 30);
  free(p);
  free(manifest);
  free(arm);
  free(index);
  memcpy(ret_manifest, hm, 65);
}

static void check_whiteouts(const image_info *info) {
  assert_true(has_entry(info, "/a", "keep"));
  assert_false(has_entry(info, "/a", "gone"));
  assert_false(has_entry(info, "/a", "gonedir"));
  assert_false(has_entry(info, "/a", ".wh.gone"));
  assert_true(has_entry(info, "/o", "new"));
  assert_false(has_entry(info, "/o", "old"));
  assert_false(has_entry(info, "/o", ".wh..wh..opq"));
  _cleanup_free_ char *out = debugfs(info, "cat /top");
  assert_non_null(strstr(out, "T2"));
}

static void test_oci_dir_whiteouts(void **state) {
  _cleanup_free_ char *layout = in_path("layout");
  char hm[65];
  make_oci_layout(layout, false, hm);
  cr_error *err = NULL;
  _cleanup_image_info_ image_info *info = NULL;
  int r = image_import(layout, "test/oci:1", NULL, NULL, &info, &err);
  if (r < 0) fail_msg("%s: %s", cr_error_reason(err), err->message);
  assert_string_equal(info->digest + 7, hm);
  assert_string_equal(info->source_format, "oci-layout");
  check_whiteouts(info);
}

static void progress_count(const char *phase, uint64_t done, uint64_t total, void *ud) {
  if (!strcmp(phase, "extracting layer 2/2")) ++*(int *)ud;
}

static void test_oci_tar_multiarch(void **state) {
  _cleanup_free_ char *layout = in_path("layout2");
  char hm[65];
  make_oci_layout(layout, true, hm);
  _cleanup_free_ char *tarp = in_path("oci.tar");
  const char *argv[] = {"tar", "-C", layout, "-cf", tarp, ".", NULL};
  cr_error *err = NULL;
  assert_int_equal(cr_run((char *const *)argv, NULL, 0, &err), 0);
  _cleanup_image_info_ image_info *info = NULL;
  int seen = 0;
  int r = image_import(tarp, NULL, progress_count, &seen, &info, &err);
  if (r < 0) fail_msg("%s: %s", cr_error_reason(err), err->message);
  assert_true(seen > 0);
  assert_string_equal(info->digest + 7, hm);
  assert_int_equal(info->n_refs, 1); /* from the index annotation */
  assert_string_equal(info->refs[0], "example.com/test/oci:v1");
  check_whiteouts(info);
  assert_int_equal(count_store_entries(".tmp"), 0);
}

static void test_oci_select_by_name(void **state) {
  /* several tagged manifests without platforms (as umoci writes them) */
  _cleanup_free_ char *layout = in_path("layout5");
  char hm[65];
  make_oci_layout(layout, false, hm);
  char *arm = NULL, ha[65];
  assert_true(asprintf(&arm, "{\"schemaVersion\":2,\"layers\":[{\"digest\":\"sha256:%064d\"}]}", 0) > 0);
  cr_sha256_hex(arm, strlen(arm), ha);
  free(arm);
  char *index = NULL, *p = NULL;
  assert_true(asprintf(&index,
                       "{\"schemaVersion\":2,\"manifests\":["
                       "{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"sha256:%s\","
                       "\"annotations\":{\"org.opencontainers.image.ref.name\":\"one\"}},"
                       "{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"sha256:%s\","
                       "\"annotations\":{\"org.opencontainers.image.ref.name\":\"two\"}}]}",
                       ha, hm) > 0);
  assert_true(asprintf(&p, "%s/index.json", layout) > 0);
  write_bytes(p, index, strlen(index));
  free(p);
  free(index);
  cr_error *err = NULL;
  image_info *info = NULL;
  assert_true(image_import(layout, NULL, NULL, NULL, &info, &err) < 0);
  assert_string_equal(cr_error_reason(err), "image_invalid");
  assert_non_null(strstr(err->message, "one, two"));
  cr_error_free(err);
  err = NULL;
  int r = image_import(layout, "test/sel:two", NULL, NULL, &info, &err);
  if (r < 0) fail_msg("%s: %s", cr_error_reason(err), err->message);
  assert_string_equal(info->digest + 7, hm);
  assert_string_equal(info->refs[0], "test/sel:two");
  image_info_free(info);
}

static void test_oci_corrupt_layer(void **state) {
  _cleanup_free_ char *layout = in_path("layout3");
  char hm[65];
  make_oci_layout(layout, false, hm);
  /* overwrite a layer blob: digest no longer matches */
  _cleanup_free_ char *dir = NULL;
  assert_true(asprintf(&dir, "%s/blobs/sha256", layout) > 0);
  DIR *d = opendir(dir);
  struct dirent *de;
  while ((de = readdir(d))) {
    if (de->d_name[0] == '.') continue;
    char *p = NULL;
    assert_true(asprintf(&p, "%s/%s", dir, de->d_name) > 0);
    _cleanup_free_ char *buf = NULL;
    size_t len = 0;
    assert_int_equal(cr_read_file(p, 1 << 20, &buf, &len), 0);
    if (buf[0] != '{') write_bytes(p, "garbage", 7); /* a layer, not JSON */
    free(p);
  }
  closedir(d);
  expect_import_fails(layout, "image_invalid", "corrupt");
}

static void test_oci_swapped_layer(void **state) {
  /* a valid tar in place of a layer: caught by the hash computed while
   * extracting */
  _cleanup_free_ char *layout = in_path("layout4");
  char hm[65];
  make_oci_layout(layout, false, hm);
  _cleanup_free_ char *dir = NULL, *other = in_path("other.tar");
  const tent t[] = {{'f', "evil", "e"}};
  write_tar(other, t, 1, false);
  assert_true(asprintf(&dir, "%s/blobs/sha256", layout) > 0);
  DIR *d = opendir(dir);
  struct dirent *de;
  while ((de = readdir(d))) {
    if (de->d_name[0] == '.') continue;
    char *p = NULL;
    assert_true(asprintf(&p, "%s/%s", dir, de->d_name) > 0);
    _cleanup_free_ char *buf = NULL;
    size_t len = 0;
    assert_int_equal(cr_read_file(p, 1 << 20, &buf, &len), 0);
    if (buf[0] != '{') {
      unlink(p);
      assert_int_equal(cr_copy_file_sparse(other, p, 0644, 0), 0);
    }
    free(p);
  }
  closedir(d);
  expect_import_fails(layout, "image_invalid", "corrupt");
}

/* ---- docker save */

static void test_docker_save(void **state) {
  _cleanup_free_ char *dir = in_path("docker");
  _cleanup_free_ char *l1dir = NULL, *l2dir = NULL, *l1 = NULL, *l2 = NULL;
  assert_true(asprintf(&l1dir, "%s/aaaa", dir) > 0);
  assert_true(asprintf(&l2dir, "%s/bbbb", dir) > 0);
  assert_int_equal(cr_mkdir_p(l1dir, 0755), 0);
  assert_int_equal(cr_mkdir_p(l2dir, 0755), 0);
  assert_true(asprintf(&l1, "%s/layer.tar", l1dir) > 0);
  assert_true(asprintf(&l2, "%s/layer.tar", l2dir) > 0);
  const tent t1[] = {{'d', "etc", NULL}, {'f', "etc/os-release", "ID=test\n"}, {'f', "etc/junk", "j"}};
  const tent t2[] = {{'f', "etc/.wh.junk", ""}, {'f', "etc/added", "a"}};
  write_tar(l1, t1, ELEMENTSOF(t1), false);
  write_tar(l2, t2, ELEMENTSOF(t2), false);
  const char *config = "{\"architecture\":\"amd64\",\"os\":\"linux\"}";
  _cleanup_free_ char *cp = NULL, *mp = NULL;
  assert_true(asprintf(&cp, "%s/cafe.json", dir) > 0);
  write_bytes(cp, config, strlen(config));
  const char *manifest =
      "[{\"Config\":\"cafe.json\",\"RepoTags\":[\"test/docker:latest\"],"
      "\"Layers\":[\"aaaa/layer.tar\",\"bbbb/layer.tar\"]}]";
  assert_true(asprintf(&mp, "%s/manifest.json", dir) > 0);
  write_bytes(mp, manifest, strlen(manifest));
  _cleanup_free_ char *tarp = in_path("docker.tar");
  const char *argv[] = {"tar", "-C", dir, "-cf", tarp, "manifest.json", "cafe.json", "aaaa", "bbbb", NULL};
  cr_error *err = NULL;
  assert_int_equal(cr_run((char *const *)argv, NULL, 0, &err), 0);
  _cleanup_image_info_ image_info *info = NULL;
  int r = image_import(tarp, NULL, NULL, NULL, &info, &err);
  if (r < 0) fail_msg("%s: %s", cr_error_reason(err), err->message);
  char hc[65];
  cr_sha256_hex(config, strlen(config), hc);
  assert_string_equal(info->digest + 7, hc);
  assert_string_equal(info->source_format, "docker-archive");
  assert_int_equal(info->n_refs, 1);
  assert_string_equal(info->refs[0], "test/docker:latest");
  assert_true(has_entry(info, "/etc", "os-release"));
  assert_true(has_entry(info, "/etc", "added"));
  assert_false(has_entry(info, "/etc", "junk"));

  /* a Layers path that escapes the archive */
  const char *evil = "[{\"Config\":\"cafe.json\",\"Layers\":[\"../../../etc/passwd\"]}]";
  write_bytes(mp, evil, strlen(evil));
  _cleanup_free_ char *tarp2 = in_path("docker2.tar");
  const char *argv2[] = {"tar", "-C", dir, "-cf", tarp2, "manifest.json", "cafe.json", NULL};
  assert_int_equal(cr_run((char *const *)argv2, NULL, 0, &err), 0);
  err = NULL;
  image_info *bad = NULL;
  assert_true(image_import(tarp2, NULL, NULL, NULL, &bad, &err) < 0);
  assert_string_equal(cr_error_reason(err), "image_unsafe_path");
  cr_error_free(err);
}

/* ---- atomicity, limits */

static void test_atomic_failure(void **state) {
  /* fails late: the bad entry comes after many good ones */
  _cleanup_free_ char *p = in_path("late.tar");
  const tent t[] = {{'d', "usr", NULL}, {'f', "usr/a", "aaaa"}, {'f', "usr/b", "bbbb"},
                    {'l', "lnk", "/"}, {'f', "lnk/tmp/cr-x", "x"}};
  write_tar(p, t, ELEMENTSOF(t), false);
  expect_import_fails(p, "image_unsafe_path", "lnk");
  /* not an archive at all */
  _cleanup_free_ char *q = in_path("junk.tar");
  write_bytes(q, "this is not a tar archive at all, no sir", 40);
  cr_error *err = NULL;
  assert_true(image_import(q, NULL, NULL, NULL, NULL, &err) < 0);
  cr_error_free(err);
  assert_int_equal(count_store_entries(".tmp"), 0);
  /* over the entry limit */
  image_limits saved = *image_limits_get();
  image_limits_get()->max_entries = 3;
  expect_import_fails(p, "image_invalid", "entries");
  image_limits_get()->max_entries = saved.max_entries;
  image_limits_get()->max_total_bytes = 5;
  expect_import_fails(p, "image_invalid", "bytes");
  *image_limits_get() = saved;
  /* a bad ref is refused before anything happens */
  err = NULL;
  assert_true(image_import(p, "../x", NULL, NULL, NULL, &err) < 0);
  assert_string_equal(cr_error_reason(err), "invalid_argument");
  cr_error_free(err);
}

static void test_stale_tmp_collected(void **state) {
  /* leftovers of a killed import and of an interrupted removal */
  char *data = getenv("CLEANROOM_DATA_DIR");
  _cleanup_free_ char *dead = NULL, *rm = NULL, *pidf = NULL, *live = NULL, *livepid = NULL;
  assert_true(asprintf(&dead, "%s/images/.tmp-dead01", data) > 0);
  assert_true(asprintf(&rm, "%s/images/.tmp-rm-0123", data) > 0);
  assert_true(asprintf(&live, "%s/images/.tmp-live01", data) > 0);
  assert_int_equal(cr_mkdir_p(dead, 0700), 0);
  assert_int_equal(cr_mkdir_p(rm, 0700), 0);
  assert_int_equal(cr_mkdir_p(live, 0700), 0);
  assert_true(asprintf(&pidf, "%s/pid", dead) > 0);
  write_bytes(pidf, "2147483000\n", 11); /* no such process */
  assert_true(asprintf(&livepid, "%s/pid", live) > 0);
  char mine[32];
  snprintf(mine, sizeof(mine), "%d\n", (int)getpid());
  write_bytes(livepid, mine, strlen(mine));
  _cleanup_free_ char *p = in_path("s.tar");
  const tent t[] = {{'f', "s", "s"}};
  write_tar(p, t, 1, false);
  cr_error *err = NULL;
  assert_int_equal(image_import(p, "s:1", NULL, NULL, NULL, &err), 0);
  struct stat st;
  assert_true(stat(dead, &st) < 0);
  assert_true(stat(rm, &st) < 0);
  assert_int_equal(stat(live, &st), 0); /* a running import is left alone */
  cr_rm_rf(live);
  assert_int_equal(count_store_entries(".tmp"), 0);
}

/* ---- store: lookup, list, remove */

static void test_store_ops(void **state) {
  _cleanup_free_ char *p1 = in_path("one.tar"), *p2 = in_path("two.tar");
  const tent t1[] = {{'f', "one", "1"}};
  const tent t2[] = {{'f', "two", "2"}};
  write_tar(p1, t1, 1, false);
  write_tar(p2, t2, 1, false);
  cr_error *err = NULL;
  _cleanup_image_info_ image_info *a = NULL, *b = NULL, *a2 = NULL;
  assert_int_equal(image_import(p1, "img/one:1", NULL, NULL, &a, &err), 0);
  assert_int_equal(image_import(p2, "img/two", NULL, NULL, &b, &err), 0);
  /* same digest again: just another ref */
  assert_int_equal(image_import(p1, "img/one:alias", NULL, NULL, &a2, &err), 0);
  assert_string_equal(a->digest, a2->digest);
  assert_int_equal(a2->n_refs, 2);
  assert_int_equal(count_store_entries(""), 2);

  image_info **list = NULL;
  size_t n = 0;
  assert_int_equal(image_list(&list, &n, &err), 0);
  assert_int_equal(n, 2);
  image_info_list_free(list, n);

  /* lookups: ref, name -> name:latest? (img/two has no tag), digest, prefix */
  image_info *x = NULL;
  assert_int_equal(image_lookup("img/one:1", &x, &err), 0);
  assert_string_equal(x->digest, a->digest);
  image_info_free(x);
  assert_int_equal(image_lookup("img/two", &x, &err), 0);
  assert_string_equal(x->digest, b->digest);
  image_info_free(x);
  assert_int_equal(image_lookup(a->digest, &x, &err), 0);
  image_info_free(x);
  char prefix[13];
  memcpy(prefix, a->digest + 7, 12);
  prefix[12] = '\0';
  assert_int_equal(image_lookup(prefix, &x, &err), 0);
  assert_string_equal(x->digest, a->digest);
  image_info_free(x);
  x = NULL;
  prefix[11] = '\0'; /* too short */
  assert_true(image_lookup(prefix, &x, &err) < 0);
  assert_string_equal(cr_error_reason(err), "image_not_found");
  cr_error_free(err);
  err = NULL;
  assert_true(image_lookup("nope/base:1", &x, &err) < 0);
  assert_string_equal(cr_error_reason(err), "image_not_found");
  assert_non_null(strstr(err->message, "cleanroom image import"));
  assert_non_null(strstr(err->message, "images/base/build.sh"));
  cr_error_free(err);
  err = NULL;

  /* move a ref to another image */
  _cleanup_image_info_ image_info *moved = NULL;
  assert_int_equal(image_import(p2, "img/one:alias", NULL, NULL, &moved, &err), 0);
  assert_int_equal(image_lookup("img/one:alias", &x, &err), 0);
  assert_string_equal(x->digest, b->digest);
  image_info_free(x);

  /* rm a ref: image stays while another ref names it */
  char *removed = NULL;
  assert_int_equal(image_remove("img/two", 0, &removed, &err), 0);
  assert_null(removed);
  assert_int_equal(image_lookup(b->digest, &x, &err), 0);
  assert_int_equal(x->n_refs, 1);
  image_info_free(x);
  /* by digest: refused while refs exist, then forced */
  assert_true(image_remove(b->digest, 0, &removed, &err) < 0);
  assert_string_equal(cr_error_reason(err), "invalid_argument");
  cr_error_free(err);
  err = NULL;
  assert_true(image_remove(b->digest, IMAGE_REMOVE_FORCE, &removed, &err) > 0);
  assert_string_equal(removed, b->digest);
  free(removed);
  removed = NULL;
  x = NULL;
  assert_true(image_lookup("img/one:alias", &x, &err) < 0);
  cr_error_free(err);
  err = NULL;
  struct stat st;
  assert_true(stat(b->dir, &st) < 0);
  /* last ref of the other image: files go */
  assert_true(image_remove("img/one:1", 0, &removed, &err) > 0);
  free(removed);
  assert_true(stat(a->dir, &st) < 0);
  assert_int_equal(count_store_entries(""), 0);
  assert_true(image_remove("img/one:1", 0, NULL, &err) < 0);
  assert_string_equal(cr_error_reason(err), "image_not_found");
  cr_error_free(err);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sanitize),
      cmocka_unit_test_setup_teardown(test_archive_check, setup, teardown),
      cmocka_unit_test_setup_teardown(test_reject_dotdot, setup, teardown),
      cmocka_unit_test_setup_teardown(test_reject_long_name, setup, teardown),
      cmocka_unit_test_setup_teardown(test_reject_symlink_escape, setup, teardown),
      cmocka_unit_test_setup_teardown(test_rootfs_ok, setup, teardown),
      cmocka_unit_test_setup_teardown(test_rootfs_compressions, setup, teardown),
      cmocka_unit_test_setup_teardown(test_oci_dir_whiteouts, setup, teardown),
      cmocka_unit_test_setup_teardown(test_oci_tar_multiarch, setup, teardown),
      cmocka_unit_test_setup_teardown(test_oci_select_by_name, setup, teardown),
      cmocka_unit_test_setup_teardown(test_oci_corrupt_layer, setup, teardown),
      cmocka_unit_test_setup_teardown(test_oci_swapped_layer, setup, teardown),
      cmocka_unit_test_setup_teardown(test_docker_save, setup, teardown),
      cmocka_unit_test_setup_teardown(test_atomic_failure, setup, teardown),
      cmocka_unit_test_setup_teardown(test_stale_tmp_collected, setup, teardown),
      cmocka_unit_test_setup_teardown(test_store_ops, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
