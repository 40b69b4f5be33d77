/* cleanroom image resolve REF: print the digest-pinned ref. */
#include "cli/cli.h"
#include "image/image.h"
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

int cli_image_resolve(const char *ref, char **ret, cr_error **err) {
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
  _cleanup_image_info_ image_info *info = NULL;
  if (image_lookup(ref, &info, err) < 0)
    return cr_error_wrap(err, "resolving %s (only the local image store is consulted; "
                              "import or pull the image first)", ref);
  char *s = pinned_ref(ref, info->digest);
  if (!s) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "resolving %s", ref);
  *ret = s;
  return 0;
}

int cmd_image_resolve(int argc, char **argv) {
  if (cli_wants_help(argc, argv)) {
    printf("Usage: cleanroom image resolve REF\n\n"
           "Print the digest-pinned form of an image ref (name@sha256:<hex>) for\n"
           "sandbox.image.ref. A ref that already has a digest is printed as is;\n"
           "otherwise the image is looked up in the local image store (no registry\n"
           "is contacted) and fails with image_not_found when it is not there.\n");
    return 0;
  }
  if (argc != 2 || argv[1][0] == '-') return cli_usage_error(NULL, "expected one REF; see --help");
  _cleanup_error_ cr_error *err = NULL;
  _cleanup_free_ char *out = NULL;
  if (cli_image_resolve(argv[1], &out, &err) < 0) return cli_fail(err);
  printf("%s\n", out);
  return 0;
}
