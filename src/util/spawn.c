#include "util/spawn.h"

#include <fcntl.h>
#include <spawn.h>
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
