/* cleanroom.yaml: finding the policy file of a repository. */
#include "policy/walk.h"

static bool is_file(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int policy_find(const char *repo_dir, char **ret_path, char **ret_warning, cr_error **err) {
  bool here = !strcmp(repo_dir, ".");
  _cleanup_free_ char *a = here ? strdup(POLICY_FILE_NAME) : cr_path_join(repo_dir, POLICY_FILE_NAME);
  _cleanup_free_ char *b = here ? strdup(POLICY_FILE_NAME_FALLBACK)
                                : cr_path_join(repo_dir, POLICY_FILE_NAME_FALLBACK);
  if (!a || !b) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "finding policy");
  bool ha = is_file(a), hb = is_file(b);
  if (!ha && !hb)
    return cr_error_set(err, CR_E_POLICY_NOT_FOUND, 0,
                        "no %s or %s in %s", POLICY_FILE_NAME, POLICY_FILE_NAME_FALLBACK,
                        repo_dir);
  char *warning = NULL;
  if (ha && hb && ret_warning &&
      asprintf(&warning, "both %s and %s exist; using %s and ignoring %s", a, b, a, b) < 0)
    return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "finding policy");
  if (ret_warning) *ret_warning = warning;
  *ret_path = ha ? TAKE_PTR(a) : TAKE_PTR(b);
  return 0;
}

int policy_locate(const char *explicit_path, char **ret_path, char **ret_warning,
                  cr_error **err) {
  if (explicit_path) {
    char *s = strdup(explicit_path);
    if (!s) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "locating policy");
    *ret_path = s;
    if (ret_warning) *ret_warning = NULL;
    return 0;
  }
  _cleanup_free_ char *cwd = getcwd(NULL, 0);
  if (!cwd) return cr_error_set(err, CR_E_FILE_ERROR, errno, "getting current directory");
  _cleanup_free_ char *dir = strdup(cwd);
  if (!dir) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "locating policy");
  const char *root = cwd;
  for (;;) {
    _cleanup_free_ char *git = cr_path_join(dir, ".git");
    struct stat st;
    if (!git) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "locating policy");
    if (stat(git, &st) == 0) {
      root = dir;
      break;
    }
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir) break;
    *slash = '\0';
  }
  /* names relative to the current directory read better in diagnostics */
  return policy_find(!strcmp(root, cwd) ? "." : root, ret_path, ret_warning, err);
}
