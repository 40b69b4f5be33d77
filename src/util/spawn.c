#include "util/spawn.h"
#include "util/macro.h"

#include <fcntl.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

extern char **environ;

/* How run() connects the child: stdin (input, else /dev/null), what the
 * capture holds, which end of a long output it keeps. */
typedef struct run_opts {
  const char *input; /* at most 64 KiB (fits the pipe: written before reading) */
  bool with_stderr;  /* stderr into the capture; else to /dev/null */
  bool keep_head;    /* the first cap bytes; else the last */
  bool capture;      /* read stdout even without ret_output (then dropped) */
} run_opts;

/* Adds n bytes of p to out (len of size), keeping its head or its tail. */
static void keep(char *out, size_t *len, size_t size, const char *p, size_t n, bool head) {
  if (head) {
    size_t k = MIN(n, size - *len); /* beyond size: dropped */
    memcpy(out + *len, p, k);
    *len += k;
  } else if (n >= size) {
    memcpy(out, p + n - size, size);
    *len = size;
  } else {
    if (*len + n > size) {
      size_t drop = *len + n - size;
      memmove(out, out + drop, *len - drop);
      *len -= drop;
    }
    memcpy(out + *len, p, n);
    *len += n;
  }
}

static void close_pair(int p[2]) {
  for (int i = 0; i < 2; i++)
    if (p[i] >= 0) close(p[i]);
}

static int run(char *const argv[], const run_opts *o, char **ret_output, size_t cap,
               cr_error **err) {
  size_t in_len = o->input ? strlen(o->input) : 0;
  if (in_len > 65536) return cr_error_set(err, CR_E_INVALID_ARGUMENT, 0, "input too large");
  bool capture = ret_output || o->capture;
  int in[2] = {-1, -1}, out[2] = {-1, -1};
  if ((o->input && pipe2(in, O_CLOEXEC) < 0) || (capture && pipe2(out, O_CLOEXEC) < 0)) {
    int e = errno;
    close_pair(in);
    close_pair(out);
    return cr_error_set(err, CR_E_INTERNAL, e, "pipe");
  }
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  if (o->input) posix_spawn_file_actions_adddup2(&fa, in[0], 0);
  else posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  if (capture) {
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    if (o->with_stderr) posix_spawn_file_actions_adddup2(&fa, out[1], 2);
    else posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  }
  pid_t pid;
  int r = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  if (in[0] >= 0) close(in[0]);
  if (out[1] >= 0) close(out[1]);
  if (r != 0) {
    if (in[1] >= 0) close(in[1]);
    if (out[0] >= 0) close(out[0]);
    return cr_error_set(err, CR_E_INTERNAL, r, "cannot run %s", argv[0]);
  }
  for (size_t off = 0; off < in_len;) {
    ssize_t n = write(in[1], o->input + off, in_len - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    off += (size_t)n;
  }
  if (in[1] >= 0) close(in[1]);
  char *buf = NULL;
  if (capture) {
    size_t len = 0, size = cap ? cap : 65536;
    buf = ret_output ? calloc(1, size + 1) : NULL;
    char tmp[8192];
    for (;;) {
      ssize_t n = read(out[0], tmp, sizeof(tmp));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      if (buf) keep(buf, &len, size, tmp, (size_t)n, o->keep_head);
    }
    close(out[0]);
    if (buf) buf[len] = '\0';
  }
  int status;
  while (waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) {
      free(buf);
      return cr_error_set(err, CR_E_INTERNAL, errno, "waitpid");
    }
  if (ret_output) *ret_output = buf;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + WTERMSIG(status);
}

int cr_run(char *const argv[], char **ret_output, size_t cap, cr_error **err) {
  run_opts o = {.with_stderr = true};
  return run(argv, &o, ret_output, cap, err);
}

int cr_run_input(char *const argv[], const char *input, char **ret_stdout, size_t cap,
                 cr_error **err) {
  run_opts o = {.input = input ? input : "", .keep_head = true, .capture = true};
  return run(argv, &o, ret_stdout, cap, err);
}
