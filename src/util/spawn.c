#include "util/spawn.h"
#include "util/macro.h"

#include <fcntl.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

extern char **environ;

int cr_run(char *const argv[], char **ret_output, size_t cap, cr_error **err) {
  int pfd[2] = {-1, -1};
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  if (ret_output) {
    if (pipe2(pfd, O_CLOEXEC) < 0)
      return cr_error_set(err, CR_E_INTERNAL, errno, "pipe");
    posix_spawn_file_actions_adddup2(&fa, pfd[1], 1);
    posix_spawn_file_actions_adddup2(&fa, pfd[1], 2);
  }
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  pid_t pid;
  int r = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  if (pfd[1] >= 0) close(pfd[1]);
  if (r != 0) {
    if (pfd[0] >= 0) close(pfd[0]);
    return cr_error_set(err, CR_E_INTERNAL, r, "cannot run %s", argv[0]);
  }
  if (ret_output) {
    size_t len = 0, size = cap ? cap : 65536;
    char *out = calloc(1, size + 1);
    char buf[8192];
    for (;;) {
      ssize_t n = read(pfd[0], buf, sizeof(buf));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      if (!out) continue;
      if ((size_t)n >= size) {
        memcpy(out, buf + n - size, size);
        len = size;
      } else if (len + (size_t)n > size) {
        size_t drop = len + (size_t)n - size;
        memmove(out, out + drop, len - drop);
        len -= drop;
        memcpy(out + len, buf, (size_t)n);
        len += (size_t)n;
      } else {
        memcpy(out + len, buf, (size_t)n);
        len += (size_t)n;
      }
    }
    close(pfd[0]);
    if (out) out[len] = '\0';
    *ret_output = out;
  }
  int status;
  while (waitpid(pid, &status, 0) < 0)
    if (errno != EINTR)
      return cr_error_set(err, CR_E_INTERNAL, errno, "waitpid");
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + WTERMSIG(status);
}

int cr_run_input(char *const argv[], const char *input, char **ret_stdout, size_t cap,
                 cr_error **err) {
  size_t in_len = input ? strlen(input) : 0;
  if (in_len > 65536) return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0, "input too large");
  int in[2] = {-1, -1}, out[2] = {-1, -1};
  if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0) {
    int e = errno;
    for (int i = 0; i < 2; i++) {
      if (in[i] >= 0) close(in[i]);
      if (out[i] >= 0) close(out[i]);
    }
    return cr_error_set(err, CR_E_INTERNAL, e, "pipe");
  }
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in[0], 0);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  pid_t pid;
  int r = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  close(in[0]);
  close(out[1]);
  if (r != 0) {
    close(in[1]);
    close(out[0]);
    return cr_error_set(err, CR_E_INTERNAL, r, "cannot run %s", argv[0]);
  }
  /* the input fits the pipe: written whole before the output is read */
  for (size_t off = 0; off < in_len;) {
    ssize_t n = write(in[1], input + off, in_len - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    off += (size_t)n;
  }
  close(in[1]);
  size_t len = 0, size = cap ? cap : 65536;
  char *buf = calloc(1, size + 1);
  for (;;) {
    char tmp[4096];
    ssize_t n = read(out[0], tmp, sizeof(tmp));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    size_t k = buf ? MIN((size_t)n, size - len) : 0; /* beyond cap: dropped */
    if (k) memcpy(buf + len, tmp, k);
    len += k;
  }
  close(out[0]);
  int status;
  while (waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) {
      free(buf);
      return cr_error_set(err, CR_E_INTERNAL, errno, "waitpid");
    }
  if (ret_stdout) *ret_stdout = buf;
  else free(buf);
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + WTERMSIG(status);
}
