/* cleanroom image pull REF [--json] [--registry-auth FILE] [--platform P]:
 * the daemon pulls (it owns the store); credentials are looked up here, on
 * the host, and sent with the request. */
#include "client/client.h"
#include "cli/cli.h"
#include "cli/cmd-sandbox-common.h"
#include "image/registry.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

typedef struct pull_view {
  bool json, tty;
  char last[64];
} pull_view;

static void bar(const char *phase, uint64_t done, uint64_t total) {
  const int width = 30;
  int fill = total ? (int)((double)done / (double)total * width) : 0;
  if (fill > width) fill = width;
  fprintf(stderr, "\r\033[K%-12.40s [", phase);
  for (int i = 0; i < width; i++) fputc(i < fill ? '#' : '.', stderr);
  fprintf(stderr, "] %6.1f/%.1f MiB", (double)done / (1 << 20), (double)total / (1 << 20));
}

static void on_note(const char *method, json_t *params, void *ud) {
  pull_view *v = ud;
  if (strcmp(method, "image.progress")) return;
  const char *phase = json_string_value(json_object_get(params, "phase"));
  uint64_t done = (uint64_t)json_integer_value(json_object_get(params, "done"));
  uint64_t total = (uint64_t)json_integer_value(json_object_get(params, "total"));
  if (!phase) return;
  if (v->json) {
    _cleanup_json_ json_t *e = json_pack("{s:s, s:s, s:I, s:I}", "event", "progress", "phase",
                                         phase, "done", (json_int_t)done, "total",
                                         (json_int_t)total);
    if (e) json_dumpf(e, stdout, JSON_COMPACT);
    fputc('\n', stdout);
    fflush(stdout);
    return;
  }
  if (v->tty) {
    if (!strcmp(phase, "downloading") && total) bar(phase, done, total);
    else fprintf(stderr, "\r\033[K%s", phase);
    fflush(stderr);
    return;
  }
  if (!strcmp(v->last, phase)) return;
  snprintf(v->last, sizeof(v->last), "%s", phase);
  fprintf(stderr, "%s\n", phase);
}

static void help(FILE *f) {
  fprintf(f,
          "Usage: cleanroom image pull REF [--json] [--registry-auth FILE] [--platform OS/ARCH]\n\n"
          "Pull an image from an OCI/Docker registry into the local store (through\n"
          "the daemon) and print its digest. REF is [registry/]name[:tag][@sha256:...];\n"
          "without a registry, docker.io is meant. An image index is resolved to\n"
          "linux/amd64. Layers are verified by sha256 while they download, kept in the\n"
          "store's blob cache (shared between images) and resumed when a pull was\n"
          "interrupted; pulling a digest that is stored downloads only manifests.\n"
          "Plain HTTP is used only for loopback registries and the ones listed in\n"
          "CLEANROOM_INSECURE_REGISTRIES (of the daemon).\n\n"
          "Credentials are read on this host only: --registry-auth FILE, else\n"
          "$DOCKER_CONFIG/config.json or ~/.docker/config.json (auths, credHelpers,\n"
          "credsStore). They are never given to a sandbox.\n\n"
          "Options:\n"
          "  --json                 print progress events and the result as JSON lines\n"
          "  --registry-auth FILE   a docker config.json style credentials file\n"
          "  --platform OS/ARCH     default linux/amd64 (the only one that boots here)\n"
          "  --host SOCKET          the daemon's socket\n");
}

bool cli_image_needs_pull(api_client *c, const char *ref) {
  if (!cli_names_registry(ref)) return false;
  _cleanup_error_ cr_error *e = NULL;
  return cli_image_stored(c, ref, NULL, &e) == 0; /* an error: not known missing */
}

int cli_registry_auth(const char *ref, const char *auth_file, json_t *params, cr_error **err) {
  image_reference r;
  if (image_reference_parse(ref, &r, err) < 0) return -1;
  image_credentials c;
  int q = image_credentials_lookup(r.registry, auth_file, &c, err);
  image_reference_clear(&r);
  if (q < 0) return -1;
  if (q > 0)
    json_object_set_new(params, "auth",
                        json_pack("{s:s, s:s}", "username", c.username, "password", c.password));
  image_credentials_clear(&c);
  return 0;
}

int cmd_image_pull(int argc, char **argv) {
  if (cli_wants_help(argc, argv)) {
    help(stdout);
    return 0;
  }
  const char *ref = NULL, *auth_file = NULL, *platform = NULL, *host = NULL;
  bool json = false;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--json")) json = true;
    else if (!strcmp(argv[i], "--registry-auth") && i + 1 < argc) auth_file = argv[++i];
    else if (!strcmp(argv[i], "--platform") && i + 1 < argc) platform = argv[++i];
    else if (!strcmp(argv[i], "--host") && i + 1 < argc) host = argv[++i];
    else if (argv[i][0] != '-' && !ref) ref = argv[i];
    else return cli_usage_error(help, "unexpected argument '%s'", argv[i]);
  }
  if (!ref) return cli_usage_error(help, "expected REF");
  _cleanup_error_ cr_error *err = NULL;
  image_reference parsed;
  if (image_reference_parse(ref, &parsed, &err) < 0) return cli_fail(err);
  image_reference_clear(&parsed);
  json_t *params = json_pack("{s:s}", "ref", ref);
  if (!params) return cli_failf(CR_E_INTERNAL, "out of memory");
  if (platform) json_object_set_new(params, "platform", json_string(platform));
  if (cli_registry_auth(ref, auth_file, params, &err) < 0) {
    json_decref(params);
    return cli_fail(err);
  }
  _cleanup_api_client_ api_client *c = NULL;
  if (cli_connect(host, &c) != 0) {
    json_decref(params);
    return CLI_EXIT_FAILURE;
  }
  pull_view v = {.json = json, .tty = !json && isatty(STDERR_FILENO)};
  _cleanup_json_ json_t *res = NULL;
  int r = api_client_call(c, "image.pull", params, on_note, &v, &res, &err);
  if (v.tty) fputc('\n', stderr);
  if (r < 0) return cli_fail(err);
  if (json) {
    json_object_set_new(res, "event", json_string("pulled"));
    json_dumpf(res, stdout, JSON_COMPACT);
    fputc('\n', stdout);
  } else {
    json_t *st = json_object_get(res, "stats");
    const char *digest = json_string_value(json_object_get(json_object_get(res, "image"), "digest"));
    if (json_is_true(json_object_get(st, "already_stored")))
      fprintf(stderr, "already stored; nothing downloaded\n");
    else
      fprintf(stderr, "downloaded %.1f MiB (%lld layers fetched, %lld cached)\n",
              (double)json_integer_value(json_object_get(st, "downloaded")) / (1 << 20),
              (long long)json_integer_value(json_object_get(st, "blobs_fetched")),
              (long long)json_integer_value(json_object_get(st, "blobs_cached")));
    printf("%s\n", digest ? digest : "");
  }
  return 0;
}
