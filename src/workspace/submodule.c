/* Submodules of a commit: the URL of a gitlink from the commit's own
 * .gitmodules (libgit2's config parser, includes ignored), resolved against
 * the superproject's URL as git does (`../x.git`), and checked before the
 * daemon fetches it: the repository is untrusted input. The trees are
 * written by tree.c. */
#include "workspace/ws.h"

#include "util/macro.h"

#include <ctype.h>
#include <errno.h>
#include <git2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

void ws_submodules_free(ws_submodules *s) {
  for (size_t i = 0; i < s->n; i++) {
    free(s->v[i].path);
    free(s->v[i].url);
  }
  free(s->v);
  *s = (ws_submodules){0};
}

static bool is_local(const char *u) {
  if (strncmp(u, "file://", 7) == 0) return true;
  if (strstr(u, "://")) return false;
  const char *colon = strchr(u, ':'), *slash = strchr(u, '/');
  return !(colon && (!slash || colon < slash)); /* else scp-like host:path */
}

char *ws_submodule_url(const char *super, const char *url) {
  if (!super || !url || !*url || strlen(url) > 2048 || strlen(super) > 2048) return NULL;
  for (const char *p = url; *p; p++)
    if ((unsigned char)*p < 0x20 || *p == 0x7f) return NULL;
  char *out = NULL;
  if (strncmp(url, "./", 2) == 0 || strncmp(url, "../", 3) == 0) {
    char base[2100];
    snprintf(base, sizeof(base), "%s", super);
    size_t l = strlen(base);
    while (l > 1 && base[l - 1] == '/') base[--l] = '\0';
    const char *scheme = strstr(base, "://");
    size_t floor = scheme ? (size_t)(scheme - base) + 3 : 0;
    char sep = '/';
    for (;;) {
      if (strncmp(url, "./", 2) == 0) {
        url += 2;
      } else if (strncmp(url, "../", 3) == 0) {
        url += 3;
        char *cut = strrchr(base + floor, '/');
        char *colon = !scheme ? strrchr(base, ':') : NULL;
        if (colon && (!cut || colon > cut)) { /* scp-like host:path */
          if (colon[1] == '\0') return NULL;
          colon[1] = '\0';
          sep = '\0';
          continue;
        }
        if (!cut) return NULL; /* above the host or the root */
        *cut = '\0';
      } else {
        break;
      }
    }
    if (!*url) return NULL;
    size_t bl = strlen(base);
    if (sep == '\0' || (bl && base[bl - 1] == ':')) {
      if (asprintf(&out, "%s%s", base, url) < 0) out = NULL;
    } else if (asprintf(&out, "%s/%s", base, url) < 0) {
      out = NULL;
    }
  } else {
    out = strdup(url);
  }
  if (!out) return NULL;
  /* what the daemon may fetch: no option-like or transport-helper URLs;
   * a host-local repository only when the superproject is local itself (a
   * remote repository must not pull the daemon host's files in: git's
   * protocol.file.allow=user) */
  bool ok = out[0] != '-' && !strstr(out, "::");
  const char *sch = strstr(out, "://");
  if (ok && sch) {
    size_t n = (size_t)(sch - out);
    ok = (n == 4 && !strncasecmp(out, "http", 4)) || (n == 5 && !strncasecmp(out, "https", 5)) ||
         (n == 3 && !strncasecmp(out, "ssh", 3)) || (n == 3 && !strncasecmp(out, "git", 3)) ||
         (n == 4 && !strncasecmp(out, "file", 4));
  } else if (ok && is_local(out)) {
    ok = out[0] == '/';
  }
  if (ok && is_local(out) && !is_local(super)) ok = false;
  if (!ok) {
    free(out);
    return NULL;
  }
  return out;
}

/* No include.path / includeIf: libgit2 would read those files on the host. */
static bool has_include(const char *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    size_t j = i;
    while (j < n && (s[j] == ' ' || s[j] == '\t')) j++;
    if (j < n && s[j] == '[') {
      size_t e = j;
      while (e < n && s[e] != '\n') e++;
      for (size_t k = j; k + 7 <= e; k++)
        if (!strncasecmp(s + k, "include", 7)) return true;
    }
    while (i < n && s[i] != '\n') i++;
    i++;
  }
  return false;
}

int ws_gitmodules_url(const void *data, size_t n, const char *path, char **ret,
                      cr_error **err) {
  *ret = NULL;
  if (n > (1u << 20))
    return cr_error_set(err, CR_E_WORKSPACE_TOO_LARGE, 0, ".gitmodules is larger than 1 MiB");
  if (memchr(data, '\0', n) || has_include(data, n))
    return cr_error_set(err, CR_E_WORKSPACE_UNSAFE_PATH, 0,
                        ".gitmodules has a NUL byte or an include (refused)");
  char tmp[] = "/tmp/cleanroom-gitmodules-XXXXXX";
  int fd = mkstemp(tmp);
  if (fd < 0) return cr_error_set(err, CR_E_IO, errno, "temp file for .gitmodules");
  size_t off = 0;
  while (off < n) {
    ssize_t k = write(fd, (const char *)data + off, n - off);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) {
      int e = errno;
      close(fd);
      unlink(tmp);
      return cr_error_set(err, CR_E_IO, e, "writing %s", tmp);
    }
    off += (size_t)k;
  }
  close(fd);
  git_libgit2_init();
  git_config *cfg = NULL;
  int r = git_config_open_ondisk(&cfg, tmp);
  unlink(tmp);
  int rc = 0;
  if (r < 0) {
    rc = cr_error_set(err, CR_E_WORKSPACE_FETCH, 0, "parsing .gitmodules: %s", ws_git_error());
    goto out;
  }
  /* submodule.<name>.path = path -> submodule.<name>.url */
  git_config_iterator *it = NULL;
  git_config_entry *e;
  char *name = NULL;
  /* (no glob iterator: libgit2 1.5 leaks its regex match data) */
  if (git_config_iterator_new(&it, cfg) == 0) {
    while (!name && git_config_next(&e, it) == 0) {
      size_t l = strlen(e->name);
      if (e->include_depth || !e->value || l <= 15 || strncmp(e->name, "submodule.", 10) ||
          strcmp(e->name + l - 5, ".path") || strcmp(e->value, path) != 0)
        continue;
      name = strndup(e->name + 10, l - 15);
    }
    git_config_iterator_free(it);
  }
  if (name) {
    char key[4200];
    snprintf(key, sizeof(key), "submodule.%s.url", name);
    git_config_entry *u = NULL;
    if (git_config_get_entry(&u, cfg, key) == 0 && !u->include_depth && u->value)
      *ret = strdup(u->value);
    git_config_entry_free(u);
    free(name);
  }
out:
  git_config_free(cfg);
  git_libgit2_shutdown();
  return rc;
}
