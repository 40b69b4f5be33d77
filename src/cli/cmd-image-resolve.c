/* cleanroom image resolve REF: print the digest-pinned ref. */
#include "cli/cli.h"
#include "cli/cmd-sandbox-common.h"
#include "image/registry.h"
#include "policy/policy.h"

#include <stdio.h>
#include <string.h>

/* "name[:tag][@digest]" -> "name@digest" (new string). Shared by bump-ref. */
static char *pinned_ref(const char *ref, const char *digest) {
  const char *at = strchr(ref, '@');
  size_t n = at ? (size_t)(at - ref) : strlen(ref);
  const char *slash = memrchr(ref, '/', n);
  const char *colon = memrchr(slash ? slash : ref, ':', n - (size_t)((slash ? slash : ref) - ref));
  if (colon) n = (size_t)(colon - ref);
  char *s = NULL;
  if (asprintf(&s, "%.*s@%s", (int)n, ref, digest) < 0) return NULL;
  return s;
}

bool cli_names_registry(const char *ref) {
  const char *slash = ref ? strchr(ref, '/') : NULL;
  if (!slash) return false;
  size_t n = (size_t)(slash - ref);
  return memchr(ref, '.', n) || memchr(ref, ':', n) || (n == 9 && !strncmp(ref, "localhost", 9));
}

int cli_image_stored(api_client *c, const char *ref, char **ret_digest, cr_error **err) {
  _cleanup_json_ json_t *res = NULL;
  cr_error *e = NULL;
  json_t *params = json_pack("{s:s}", "ref", ref);
  if (api_client_call(c, "image.inspect", params, NULL, NULL, &res, &e) < 0) {
    if (!strcmp(cr_error_reason(e), CR_E_IMAGE_NOT_FOUND)) {
      cr_error_free(e);
      return 0;
    }
    *err = e;
    return -1;
  }
  if (!ret_digest) return 1;
  const char *d = json_string_value(json_object_get(json_object_get(res, "image"), "digest"));
  if (!d) return cr_error_set(err, CR_E_INTERNAL, 0, "image.inspect: no digest for %s", ref);
  if (!(*ret_digest = strdup(d))) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "%s", ref);
  return 1;
}

int cli_image_resolve(const char *ref, const char *auth_file, char **ret, cr_error **err) {
  bool pinned = false;
  const char *problem = NULL;
  if (!strncmp(ref, "sha256:", 7))
    return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0,
                        "'%s' is a digest; give an image name such as name:tag", ref);
  if (!policy_image_ref_valid(ref, &pinned, &problem))
    return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0, "%s: '%s'", problem, ref);
  if (pinned) {
    char *s = strdup(ref);
    if (!s) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "resolving %s", ref);
    *ret = s;
    return 0;
  }
  _cleanup_free_ char *digest = NULL;
  if (!cli_names_registry(ref)) {
    /* a local name (imported) first: the daemon's store */
    _cleanup_api_client_ api_client *c = NULL;
    if (api_client_connect(NULL, true, &c, err) < 0 || cli_image_stored(c, ref, &digest, err) < 0)
      return -1;
  }
  if (!digest) {
    image_pull_opts o = {.auth_file = auth_file};
    if (image_registry_resolve(ref, &o, &digest, err) < 0) return -1;
  }
  char *s = pinned_ref(ref, digest);
  if (!s) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "resolving %s", ref);
  *ret = s;
  return 0;
}

int cmd_image_resolve(int argc, char **argv) {
  if (cli_wants_help(argc, argv)) {
    printf("Usage: cleanroom image resolve REF [--registry-auth FILE]\n\n"
           "Print the digest-pinned form of an image ref (name@sha256:<hex>) for\n"
           "sandbox.image.ref. A ref that already has a digest is printed as is.\n"
           "A ref naming a registry (a first component with '.' or ':', or\n"
           "localhost) is resolved by asking that registry: the digest of the\n"
           "manifest or index the tag names, as 'skopeo inspect' reports it. Any\n"
           "other ref is looked up in the local image store first, then on\n"
           "docker.io.\n\n"
           "Options:\n"
           "  --registry-auth FILE  registry credentials (docker config.json style);\n"
           "                        default $DOCKER_CONFIG/config.json, ~/.docker/config.json\n");
    return 0;
  }
  const char *ref = NULL, *auth_file = NULL;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--registry-auth") && i + 1 < argc) auth_file = argv[++i];
    else if (argv[i][0] != '-' && !ref) ref = argv[i];
    else return cli_usage_error(NULL, "unexpected argument '%s'; see --help", argv[i]);
  }
  if (!ref) return cli_usage_error(NULL, "expected one REF; see --help");
  _cleanup_error_ cr_error *err = NULL;
  _cleanup_free_ char *out = NULL;
  if (cli_image_resolve(ref, auth_file, &out, &err) < 0) return cli_fail(err);
  printf("%s\n", out);
  return 0;
}
