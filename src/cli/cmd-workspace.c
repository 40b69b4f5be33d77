/* cleanroom workspace diff|preview|copy-in|copy-out, and the repository
 * parts of `exec` (--repo-url, --copy-in, --copy-out, --sync). The daemon
 * owns the mirror and the sandbox side (workspace.* methods); the local
 * checkout is read and written here, in the CLI's own process. */
#include "cli/cmd-workspace.h"

#include "cli/cmd-sandbox-common.h"
#include "policy/policy.h"
#include "util/base64.h"
#include "util/macro.h"
#include "workspace/local.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define UPLOAD_CHUNK (2u << 20) /* tar bytes per workspace.copy_in call */
#define READ_CHUNK (2u << 20)   /* bytes per file.read call */

static void ws_local_freep(ws_local **l) { ws_local_free(*l); }
#define _cleanup_local_ _cleanup_(ws_local_freep)

const char *cli_ws_path(json_t *sb) {
  return json_string_value(json_object_get(json_object_get(sb, "workspace"), "path"));
}

void cli_ws_fallback_note(json_t *fallback, const char *why) {
  fprintf(stderr,
          "cleanroom: warning: %s; checking out this checkout's own HEAD (%.12s) from %s "
          "instead (push to share it with CI, or pass --no-repo for a plain sandbox)\n",
          why, json_string_value(json_object_get(fallback, "ref")),
          json_string_value(json_object_get(fallback, "repo_url")));
}

int cli_ws_create_params(const char *policy_path, const cli_ws_opts *o, json_t *params,
                         bool *ret_local, json_t **ret_fallback) {
  *ret_local = false;
  if (ret_fallback) *ret_fallback = NULL;
  if (o->no_repo) {
    if (o->repo_url || o->copy_in || o->copy_out)
      return cli_usage_error(NULL, "--no-repo conflicts with --repo-url, --copy-in, --copy-out, --sync");
    return 0;
  }
  /* the policy's repository block (defaults when there is no policy) */
  bool enabled = true, submodules = false;
  _cleanup_free_ char *remote = strdup("origin"), *path = strdup("/workspace");
  _cleanup_free_ char *found = NULL;
  _cleanup_error_ cr_error *err = NULL;
  bool explicit_block = false;
  if (policy_locate(policy_path, &found, NULL, &err) == 0) {
    _cleanup_policy_ policy *p = NULL;
    _cleanup_(policy_diags_freep) policy_diags *diags = NULL;
    if (policy_load_file(found, &p, &diags, &err) == 0) {
      enabled = policy_repository_enabled(p);
      submodules = policy_repository_submodules(p);
      free(remote);
      remote = strdup(policy_repository_remote(p));
      free(path);
      path = strdup(policy_repository_path(p));
      explicit_block = true;
    }
  }
  if (o->repo_url) {
    json_object_set_new(params, "workspace",
                        json_pack("{s:s, s:s?, s:s, s:b}", "repo_url", o->repo_url, "ref", o->ref,
                                  "path", path ? path : "/workspace", "submodules", submodules));
    if (o->copy_in || o->copy_out) {
      /* the local checkout, if any, is where copies go */
      _cleanup_local_ ws_local *l = NULL;
      _cleanup_error_ cr_error *e2 = NULL;
      if (ws_local_open(NULL, &l, &e2) < 0) return cli_fail(e2);
      *ret_local = true;
    }
    return 0;
  }
  if (!enabled) {
    if (o->copy_in || o->copy_out || o->ref)
      return cli_failf(CR_E_WORKSPACE_NONE,
                       "the policy turns the repository off (repository.enabled: false)");
    return 0;
  }
  _cleanup_local_ ws_local *l = NULL;
  _cleanup_error_ cr_error *e2 = NULL;
  if (ws_local_open(NULL, &l, &e2) < 0) {
    if (o->copy_in || o->copy_out || o->ref) return cli_fail(e2);
    return 0; /* not in a checkout: a plain sandbox */
  }
  _cleanup_free_ char *url = NULL;
  int r = ws_local_remote_url(l, remote, &url, &e2);
  if (r == -ENOENT) {
    if (o->copy_in || o->copy_out || o->ref)
      return cli_failf(CR_E_WORKSPACE_NONE,
                       "the checkout %s has no remote '%s' to take the repository from",
                       ws_local_root(l), remote);
    (void)explicit_block;
    return 0; /* a checkout without that remote: a plain sandbox */
  }
  if (r < 0) return cli_fail(e2);
  _cleanup_free_ char *branch = o->ref ? NULL : ws_local_upstream_branch(l, remote);
  const char *ref = o->ref ? o->ref : branch;
  json_object_set_new(params, "workspace",
                      json_pack("{s:s, s:s?, s:s, s:b}", "repo_url", url, "ref", ref, "path",
                                path ? path : "/workspace", "submodules", submodules));
  *ret_local = true;
  /* The checkout's own repository at HEAD, for when the remote cannot be
   * fetched (offline, or a path that is not there). */
  char head[41];
  if (o->ref || ws_local_head(l, head) < 0) return 0;
  json_t *fb = json_pack("{s:s, s:s, s:s, s:b}", "repo_url", ws_local_root(l), "ref", head,
                         "path", path ? path : "/workspace", "submodules", submodules);
  if (!fb) return cli_failf(CR_E_INTERNAL, "out of memory");
  struct stat st;
  if (ws_url_is_local_path(url) && stat(url, &st) < 0) {
    char why[4300];
    snprintf(why, sizeof(why), "remote '%s' is %s, which does not exist", remote, url);
    cli_ws_fallback_note(fb, why);
    json_object_set_new(params, "workspace", fb);
    return 0;
  }
  if (ret_fallback) *ret_fallback = fb;
  else json_decref(fb);
  return 0;
}

/* ---- copy-in */

static int upload(api_client *c, const char *sid, cr_buf *tar, json_t *deletes, json_t **ret) {
  size_t off = 0;
  do {
    size_t n = tar->len - off < UPLOAD_CHUNK ? tar->len - off : UPLOAD_CHUNK;
    bool more = off + n < tar->len;
    char *enc = cr_base64_encode(tar->data ? tar->data + off : (const uint8_t *)"", n);
    if (!enc) return cli_failf(CR_E_INTERNAL, "out of memory");
    json_t *p = json_pack("{s:s, s:s, s:b}", "sandbox_id", sid, "tar", enc, "more", more);
    free(enc);
    if (!more) json_object_set(p, "delete", deletes);
    json_t *res = NULL;
    int r = cli_call(c, "workspace.copy_in", p, &res);
    if (r) return r;
    if (more) json_decref(res);
    else *ret = res;
    off += n;
  } while (off < tar->len);
  return 0;
}

int cli_ws_copy_in(api_client *c, const char *sid, char **paths, size_t npaths, bool json) {
  _cleanup_json_ json_t *sb = NULL;
  int r = cli_call(c, "sandbox.get", json_pack("{s:s}", "id", sid), &sb);
  if (r) return r;
  const char *commit = json_string_value(json_object_get(json_object_get(sb, "workspace"), "commit"));
  if (!commit)
    return cli_failf(CR_E_WORKSPACE_NONE, "sandbox %s has no workspace", sid);
  sid = cli_json_str(sb, "id", sid);
  _cleanup_local_ ws_local *l = NULL;
  _cleanup_error_ cr_error *err = NULL;
  if (ws_local_open(NULL, &l, &err) < 0) return cli_fail(err);
  cr_buf tar = {0};
  _cleanup_json_ json_t *deletes = NULL, *record = NULL;
  if (ws_local_changes(l, commit, (const char *const *)paths, npaths, &tar, &deletes, &record,
                       &err) < 0) {
    cr_buf_free(&tar);
    return cli_fail(err);
  }
  _cleanup_json_ json_t *res = NULL;
  r = upload(c, sid, &tar, deletes, &res);
  cr_buf_free(&tar);
  if (r) return r;
  /* what the sandbox now has, so copy-out can tell later local edits */
  _cleanup_json_ json_t *old = ws_local_record_load(l, sid);
  json_t *files = json_object_get(old, "files");
  json_t *merged = json_is_object(files) ? json_deep_copy(files) : json_object();
  json_object_update(merged, record);
  _cleanup_json_ json_t *rec = json_pack("{s:s, s:o}", "base_commit", commit, "files", merged);
  if (ws_local_record_save(l, sid, rec, &err) < 0) return cli_fail(err);
  if (json) {
    cli_print_json(json_pack("{s:s, s:O, s:I}", "sandbox_id", sid, "files", record,
                             "bytes", json_integer_value(json_object_get(res, "bytes"))));
    return 0;
  }
  const char *k;
  json_t *v;
  json_object_foreach(record, k, v)
    fprintf(stderr, "copy-in: %s %s\n", json_is_null(v) ? "deleted" : "wrote", k);
  fprintf(stderr, "copy-in: %zu path(s) from %s into sandbox %s (base %.12s)\n",
          json_object_size(record), ws_local_root(l), sid, commit);
  return 0;
}

/* ---- copy-out */

static int read_file(api_client *c, const char *sid, const char *full, uint64_t size,
                     cr_buf *out) {
  uint64_t off = 0;
  for (;;) {
    _cleanup_json_ json_t *res = NULL;
    int r = cli_call(c, "file.read",
                     json_pack("{s:s, s:s, s:I, s:I}", "sandbox_id", sid, "path", full, "offset",
                               (json_int_t)off, "length", (json_int_t)READ_CHUNK),
                     &res);
    if (r) return r;
    const char *d = cli_json_str(res, "data", "");
    uint8_t *buf = NULL;
    size_t n = 0;
    if (cr_base64_decode(d, strlen(d), &buf, &n) < 0)
      return cli_failf(CR_E_PROTOCOL, "bad data for %s", full);
    r = cr_buf_append(out, buf, n);
    free(buf);
    if (r < 0 || out->len > CR_WS_MAX_FILE) return cli_failf(CR_E_WORKSPACE_TOO_LARGE, "%s is too large", full);
    off += n;
    if (n == 0 || off >= (uint64_t)json_integer_value(json_object_get(res, "size"))) break;
  }
  (void)size;
  return 0;
}

static uint32_t parse_mode(json_t *v) {
  const char *s = json_string_value(v);
  return s ? (uint32_t)strtoul(s, NULL, 8) : 0;
}

int cli_ws_copy_out(api_client *c, const char *sid, char **paths, size_t npaths, bool force,
                    bool json) {
  _cleanup_local_ ws_local *l = NULL;
  _cleanup_error_ cr_error *err = NULL;
  if (ws_local_open(NULL, &l, &err) < 0) return cli_fail(err);
  json_t *pa = json_array();
  for (size_t i = 0; i < npaths; i++) json_array_append_new(pa, json_string(paths[i]));
  _cleanup_json_ json_t *d = NULL;
  int r = cli_call(c, "workspace.diff",
                   json_pack("{s:s, s:o, s:b}", "sandbox_id", sid, "paths", pa, "stat_only", 1), &d);
  if (r) return r;
  _cleanup_json_ json_t *sb = NULL;
  r = cli_call(c, "sandbox.get", json_pack("{s:s}", "id", sid), &sb);
  if (r) return r;
  sid = cli_json_str(sb, "id", sid);
  const char *wpath = cli_json_str(d, "path", "/workspace");
  _cleanup_json_ json_t *rec = ws_local_record_load(l, sid);
  json_t *recf = json_object_get(rec, "files");
  json_t *files = json_object_get(d, "files");
  /* 1. decide, and refuse everything when anything conflicts */
  size_t nf = json_array_size(files), nconf = 0;
  bool *todo = calloc(nf + 1, sizeof(bool));
  if (!todo) return cli_failf(CR_E_INTERNAL, "out of memory");
  for (size_t i = 0; i < nf; i++) {
    json_t *f = json_array_get(files, i);
    const char *p = cli_json_str(f, "path", "");
    const char *want = json_string_value(json_object_get(f, "new_oid"));
    uint32_t want_mode = parse_mode(json_object_get(f, "new_mode"));
    const char *expect;
    uint32_t expect_mode = parse_mode(json_object_get(f, "old_mode"));
    json_t *rv = json_object_get(recf, p);
    if (rv) {
      expect = json_string_value(rv); /* NULL: copy-in deleted it */
      expect_mode = 0;
    } else {
      expect = json_string_value(json_object_get(f, "old_oid"));
    }
    char have[41];
    uint32_t have_mode = 0;
    int q = ws_local_oid(l, p, have, &have_mode);
    if (q == -ELOOP || q == -EINVAL) {
      fprintf(stderr, "cleanroom: workspace_unsafe_path: refusing %s: a parent in the checkout is a symlink or not a directory\n", p);
      nconf++;
      continue;
    }
    if (q < 0) {
      free(todo);
      return cli_failf(CR_E_IO, "reading %s/%s: %s", ws_local_root(l), p, strerror(-q));
    }
    bool same_as_new = want ? (strcmp(have, want) == 0 && have_mode == want_mode) : have[0] == '\0';
    if (same_as_new) continue;
    bool as_expected = expect ? strcmp(have, expect) == 0 &&
                                    (expect_mode == 0 || have_mode == expect_mode)
                              : have[0] == '\0';
    if (!as_expected && !force) {
      fprintf(stderr, "cleanroom: workspace_conflict: %s changed locally since copy-in (use --force to overwrite)\n", p);
      nconf++;
      continue;
    }
    todo[i] = true;
  }
  if (nconf) {
    free(todo);
    return cli_failf(CR_E_WORKSPACE_CONFLICT, "%zu path(s) not copied out; nothing was written", nconf);
  }
  /* 2. write */
  json_t *written = json_array();
  if (!json_is_object(recf)) recf = NULL;
  _cleanup_json_ json_t *newrec = recf ? json_deep_copy(recf) : json_object();
  for (size_t i = 0; i < nf && r == 0; i++) {
    if (!todo[i]) continue;
    json_t *f = json_array_get(files, i);
    const char *p = cli_json_str(f, "path", "");
    const char *st = cli_json_str(f, "status", "M");
    uint32_t mode = parse_mode(json_object_get(f, "new_mode"));
    cr_buf data = {0};
    if (mode == 0120000) {
      _cleanup_json_ json_t *res = NULL;
      char full[8300];
      snprintf(full, sizeof(full), "%s/%s", wpath, p);
      r = cli_call(c, "file.stat", json_pack("{s:s, s:s}", "sandbox_id", sid, "path", full), &res);
      const char *t = cli_json_str(res, "target", "");
      if (!r) cr_buf_append(&data, t, strlen(t));
    } else if (mode) {
      char full[8300];
      snprintf(full, sizeof(full), "%s/%s", wpath, p);
      r = read_file(c, sid, full, (uint64_t)json_integer_value(json_object_get(f, "size")), &data);
    }
    if (r) {
      cr_buf_free(&data);
      break;
    }
    if (mode) {
      char got[41];
      ws_blob_oid(data.data ? (const void *)data.data : "", data.len, got);
      const char *want = cli_json_str(f, "new_oid", "");
      if (strcmp(got, want) != 0) {
        cr_buf_free(&data);
        r = cli_failf(CR_E_WORKSPACE_CONFLICT, "%s changed in the sandbox during copy-out; run it again", p);
        break;
      }
    }
    if (ws_local_put(l, p, mode, data.data, data.len, &err) < 0) {
      cr_buf_free(&data);
      r = cli_fail(err);
      break;
    }
    cr_buf_free(&data);
    json_array_append_new(written, json_pack("{s:s, s:s}", "path", p, "status", st));
    json_object_set(newrec, p, json_object_get(f, "new_oid") ? json_object_get(f, "new_oid") : json_null());
    if (!json) fprintf(stderr, "copy-out: %s %s\n", mode ? "wrote" : "deleted", p);
  }
  free(todo);
  /* the checkout now has these: later copy-outs compare against them */
  _cleanup_json_ json_t *rec2 = json_pack("{s:s, s:O}", "base_commit", cli_json_str(d, "base_commit", ""), "files", newrec);
  cr_error *e3 = NULL;
  if (ws_local_record_save(l, sid, rec2, &e3) < 0) {
    cli_fail(e3);
    cr_error_free(e3);
  }
  if (json) cli_print_json(json_pack("{s:s, s:o}", "sandbox_id", sid, "written", written));
  else {
    fprintf(stderr, "copy-out: %zu path(s) written into %s\n", json_array_size(written),
            ws_local_root(l));
    json_decref(written);
  }
  return r;
}

/* ---- commands */

static void help_diff(FILE *f) {
  fprintf(f, "Usage: cleanroom workspace diff [--in ID] [--stat] [--json] [PATH...]\n\n"
             "Print the sandbox workspace's changes against its base commit as a git\n"
             "patch (binary files as git binary patches, mode changes, deletions) that\n"
             "'git apply' accepts in a checkout of that commit. Only files whose size,\n"
             "mode or mtime differ from the base tree are read from the sandbox.\n\n"
             "Options:\n"
             "  --in ID       the sandbox (default: the newest)\n"
             "  --stat        only the changed paths (like 'workspace preview')\n"
             "  --json        the whole result as JSON\n"
             "  --host HOST   daemon socket (unix:/path)\n"
             "  -h, --help    show this help\n");
}

static void help_preview(FILE *f) {
  fprintf(f, "Usage: cleanroom workspace preview [--in ID] [--json] [PATH...]\n\n"
             "List the paths changed in the sandbox's workspace against its base commit,\n"
             "one per line with A (added), M (modified, content or mode), D (deleted) or\n"
             "T (type changed: file <-> symlink).\n\n"
             "Options:\n"
             "  --in ID       the sandbox (default: the newest)\n"
             "  --json        JSON\n"
             "  --host HOST   daemon socket (unix:/path)\n"
             "  -h, --help    show this help\n");
}

static void help_copy_in(FILE *f) {
  fprintf(f, "Usage: cleanroom workspace copy-in [--in ID] [--json] [PATH...]\n\n"
             "Copy the local checkout's changes against the sandbox's base commit into\n"
             "its workspace: modified, added (untracked, not ignored) and deleted files,\n"
             "modes and symlinks; renames arrive as a deletion plus an addition. PATHs\n"
             "(pathspecs relative to the checkout root) limit it. What was copied is\n"
             "recorded in .git/cleanroom/ so that copy-out can tell later local edits.\n\n"
             "Options:\n"
             "  --in ID       the sandbox (default: the newest)\n"
             "  --json        JSON\n"
             "  --host HOST   daemon socket (unix:/path)\n"
             "  -h, --help    show this help\n");
}

static void help_copy_out(FILE *f) {
  fprintf(f, "Usage: cleanroom workspace copy-out [--in ID] [--force] [--json] [PATH...]\n\n"
             "Write the sandbox workspace's changes into the local checkout and report\n"
             "every file written or deleted. Never writes outside the checkout: paths\n"
             "with '..' or absolute ones are refused, as are parents that are symlinks,\n"
             "and .git. A local file that changed since copy-in (or since the base\n"
             "commit, without copy-in) is a conflict: nothing is written unless --force.\n\n"
             "Options:\n"
             "  --in ID       the sandbox (default: the newest)\n"
             "  --force       overwrite local changes\n"
             "  --json        JSON\n"
             "  --host HOST   daemon socket (unix:/path)\n"
             "  -h, --help    show this help\n");
}

typedef struct ws_args {
  const char *in, *host;
  bool json, stat, force;
  char **paths;
  size_t npaths;
} ws_args;

static int parse(int argc, char **argv, void (*help)(FILE *), bool allow_stat, bool allow_force,
                 ws_args *a) {
  enum { O_IN = 1000, O_HOST, O_JSON, O_STAT, O_FORCE };
  static const struct option opts[] = {
      {"in", required_argument, NULL, O_IN},     {"host", required_argument, NULL, O_HOST},
      {"json", no_argument, NULL, O_JSON},       {"stat", no_argument, NULL, O_STAT},
      {"force", no_argument, NULL, O_FORCE},     {0},
  };
  *a = (ws_args){.in = "last"};
  opterr = 0;
  int o;
  while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (o) {
    case O_IN: a->in = optarg; break;
    case O_HOST: a->host = optarg; break;
    case O_JSON: a->json = true; break;
    case O_STAT:
      if (!allow_stat) goto bad;
      a->stat = true;
      break;
    case O_FORCE:
      if (!allow_force) goto bad;
      a->force = true;
      break;
    default:
    bad:
      return cli_usage_error(help, "unknown or incomplete option '%s'", argv[optind - 1]);
    }
  }
  a->paths = argv + optind;
  a->npaths = (size_t)(argc - optind);
  return 0;
}

static int run_diff(int argc, char **argv, bool preview) {
  void (*help)(FILE *) = preview ? help_preview : help_diff;
  if (cli_wants_help(argc, argv)) {
    help(stdout);
    return 0;
  }
  ws_args a;
  int r = parse(argc, argv, help, !preview, false, &a);
  if (r) return r;
  json_t *pa = json_array();
  for (size_t i = 0; i < a.npaths; i++) json_array_append_new(pa, json_string(a.paths[i]));
  _cleanup_json_ json_t *res = NULL;
  r = cli_connect_call(a.host, "workspace.diff",
                       json_pack("{s:s, s:o, s:b}", "sandbox_id", a.in, "paths", pa, "stat_only",
                                 preview || a.stat),
                       NULL, &res);
  if (r) return r;
  if (a.json) {
    cli_print_json(res);
    return 0;
  }
  if (preview || a.stat) {
    size_t i;
    json_t *f;
    json_array_foreach(json_object_get(res, "files"), i, f)
      printf("%s %s\n", cli_json_str(f, "status", "?"), cli_json_str(f, "path", ""));
    return 0;
  }
  fputs(cli_json_str(res, "patch", ""), stdout);
  return 0;
}

int cmd_workspace_diff(int argc, char **argv) { return run_diff(argc, argv, false); }
int cmd_workspace_preview(int argc, char **argv) { return run_diff(argc, argv, true); }

int cmd_workspace_copy_in(int argc, char **argv) {
  if (cli_wants_help(argc, argv)) {
    help_copy_in(stdout);
    return 0;
  }
  ws_args a;
  int r = parse(argc, argv, help_copy_in, false, false, &a);
  if (r) return r;
  _cleanup_api_client_ api_client *c = NULL;
  if ((r = cli_connect(a.host, &c))) return r;
  return cli_ws_copy_in(c, a.in, a.paths, a.npaths, a.json);
}

int cmd_workspace_copy_out(int argc, char **argv) {
  if (cli_wants_help(argc, argv)) {
    help_copy_out(stdout);
    return 0;
  }
  ws_args a;
  int r = parse(argc, argv, help_copy_out, false, true, &a);
  if (r) return r;
  _cleanup_api_client_ api_client *c = NULL;
  if ((r = cli_connect(a.host, &c))) return r;
  return cli_ws_copy_out(c, a.in, a.paths, a.npaths, a.force, a.json);
}
