/* Registry credentials from the host: a docker config.json style file
 * (auths, credHelpers, credsStore). Never passed into a guest. */
#include "image/image-internal.h"
#include "image/registry.h"
#include "util/base64.h"
#include "util/fs.h"
#include "util/macro.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#define MAX_AUTH_FILE (1u << 20)
#define HELPER_TIMEOUT_MS 20000
#define MAX_HELPER_OUTPUT (64u << 10)

void image_credentials_clear(image_credentials *c) {
  if (c->password) explicit_bzero(c->password, strlen(c->password));
  free(c->username);
  free(c->password);
  *c = (image_credentials){0};
}

/* "https://index.docker.io/v1/" -> "index.docker.io"; docker.io aliases. */
static bool key_matches(const char *key, const char *registry) {
  const char *k = key;
  if (!strncmp(k, "https://", 8)) k += 8;
  else if (!strncmp(k, "http://", 7)) k += 7;
  size_t n = strcspn(k, "/");
  bool hub = !strcmp(registry, "docker.io");
  if (hub) {
    static const char *const aliases[] = {"docker.io", "index.docker.io", "registry-1.docker.io"};
    for (size_t i = 0; i < ELEMENTSOF(aliases); i++)
      if (strlen(aliases[i]) == n && !strncmp(k, aliases[i], n)) return true;
    return false;
  }
  return strlen(registry) == n && !strncmp(k, registry, n);
}

static bool helper_name_ok(const char *s) {
  if (!s || !*s || strlen(s) > 64) return false;
  for (; *s; s++)
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
          *s == '-' || *s == '_' || *s == '.'))
      return false;
  return true;
}

/* Runs docker-credential-NAME get with the server on stdin. */
static int run_helper(const char *name, const char *registry, image_credentials *ret,
                      cr_error **err) {
  if (!helper_name_ok(name))
    return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0, "bad credential helper name '%.64s'", name);
  char prog[96];
  snprintf(prog, sizeof(prog), "docker-credential-%s", name);
  const char *server = !strcmp(registry, "docker.io") ? "https://index.docker.io/v1/" : registry;
  int in[2], out[2];
  if (pipe2(in, O_CLOEXEC) < 0) return cr_error_set(err, CR_E_IO, errno, "pipe");
  if (pipe2(out, O_CLOEXEC) < 0) {
    close(in[0]);
    close(in[1]);
    return cr_error_set(err, CR_E_IO, errno, "pipe");
  }
  pid_t pid = fork();
  if (pid < 0) {
    close(in[0]), close(in[1]), close(out[0]), close(out[1]);
    return cr_error_set(err, CR_E_IO, errno, "fork");
  }
  if (pid == 0) {
    dup2(in[0], 0);
    dup2(out[1], 1);
    int devnull = open("/dev/null", O_WRONLY);
    if (devnull >= 0) dup2(devnull, 2);
    execlp(prog, prog, "get", (char *)NULL);
    _exit(127);
  }
  close(in[0]);
  close(out[1]);
  signal(SIGPIPE, SIG_IGN);
  size_t sl = strlen(server);
  ssize_t w = write(in[1], server, sl);
  (void)w;
  close(in[1]);
  char *buf = malloc(MAX_HELPER_OUTPUT + 1);
  size_t len = 0;
  int rc = 0;
  struct timespec t0;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  while (buf) {
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long left = HELPER_TIMEOUT_MS - ((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000);
    struct pollfd pfd = {.fd = out[0], .events = POLLIN};
    if (left <= 0 || poll(&pfd, 1, (int)left) <= 0) {
      rc = cr_error_set(err, CR_E_REGISTRY_AUTH_REQUIRED, 0, "%s timed out", prog);
      break;
    }
    ssize_t n = read(out[0], buf + len, MAX_HELPER_OUTPUT - len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    len += (size_t)n;
    if (len >= MAX_HELPER_OUTPUT) break;
  }
  close(out[0]);
  if (rc < 0) kill(pid, SIGKILL);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
  if (!buf) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "credential helper");
  if (rc < 0) {
    free(buf);
    return rc;
  }
  buf[len] = '\0';
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    bool missing = WIFEXITED(status) && WEXITSTATUS(status) == 127;
    free(buf);
    if (missing)
      return cr_error_set(err, CR_E_REGISTRY_AUTH_REQUIRED, 0,
                          "credential helper %s is not installed", prog);
    return 0; /* "credentials not found in native keychain" */
  }
  json_error_t je;
  _cleanup_json_ json_t *j = json_loadb(buf, len, 0, &je);
  explicit_bzero(buf, len);
  free(buf);
  const char *u = json_string_value(json_object_get(j, "Username"));
  const char *s = json_string_value(json_object_get(j, "Secret"));
  if (!u || !s)
    return cr_error_set(err, CR_E_REGISTRY_PROTOCOL, 0, "%s printed no Username/Secret", prog);
  ret->username = strdup(u);
  ret->password = strdup(s);
  if (!ret->username || !ret->password) {
    image_credentials_clear(ret);
    return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "credentials");
  }
  return 1;
}

static int from_file(const char *path, const char *registry, bool must_exist,
                     image_credentials *ret, cr_error **err) {
  _cleanup_free_ char *buf = NULL;
  size_t len = 0;
  int r = cr_read_file(path, MAX_AUTH_FILE, &buf, &len);
  if (r == -ENOENT && !must_exist) return 0;
  if (r < 0) return cr_error_set(err, CR_E_FILE_ERROR, -r, "reading registry auth file %s", path);
  json_error_t je;
  _cleanup_json_ json_t *j = json_loadb(buf, len, 0, &je);
  explicit_bzero(buf, len);
  if (!json_is_object(j))
    return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0,
                        "registry auth file %s is not a JSON object: %s", path, je.text);
  /* credHelpers: per registry */
  const char *key;
  json_t *v;
  json_object_foreach(json_object_get(j, "credHelpers"), key, v) {
    if (key_matches(key, registry) && json_is_string(v))
      return run_helper(json_string_value(v), registry, ret, err);
  }
  json_object_foreach(json_object_get(j, "auths"), key, v) {
    if (!key_matches(key, registry)) continue;
    const char *a = json_string_value(json_object_get(v, "auth"));
    const char *u = json_string_value(json_object_get(v, "username"));
    const char *p = json_string_value(json_object_get(v, "password"));
    const char *it = json_string_value(json_object_get(v, "identitytoken"));
    if (a && *a) {
      _cleanup_free_ uint8_t *dec = NULL;
      size_t dl = 0;
      if (cr_base64_decode(a, strlen(a), &dec, &dl) < 0 || !memchr(dec, ':', dl))
        return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0,
                            "registry auth file %s: auth for %s is not base64(user:password)",
                            path, key);
      const uint8_t *colon = memchr(dec, ':', dl);
      ret->username = strndup((const char *)dec, (size_t)(colon - dec));
      ret->password = strndup((const char *)colon + 1, dl - (size_t)(colon - dec) - 1);
      explicit_bzero(dec, dl);
    } else if (u && p) {
      ret->username = strdup(u);
      ret->password = strdup(p);
    } else if (it) {
      ret->username = strdup("<token>");
      ret->password = strdup(it);
    } else {
      continue;
    }
    if (!ret->username || !ret->password) {
      image_credentials_clear(ret);
      return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "credentials");
    }
    return 1;
  }
  const char *store = json_string_value(json_object_get(j, "credsStore"));
  if (store && *store) return run_helper(store, registry, ret, err);
  return 0;
}

int image_credentials_lookup(const char *registry, const char *auth_file,
                             image_credentials *ret, cr_error **err) {
  *ret = (image_credentials){0};
  if (auth_file) return from_file(auth_file, registry, true, ret, err);
  const char *dc = getenv("DOCKER_CONFIG");
  if (dc && *dc) {
    _cleanup_free_ char *p = cr_path_join(dc, "config.json");
    if (!p) return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "credentials");
    return from_file(p, registry, false, ret, err);
  }
  const char *home = getenv("HOME");
  if (!home || !*home) return 0;
  _cleanup_free_ char *p = NULL;
  if (asprintf(&p, "%s/.docker/config.json", home) < 0)
    return cr_error_set(err, CR_E_INTERNAL, ENOMEM, "credentials");
  return from_file(p, registry, false, ret, err);
}
