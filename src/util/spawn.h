/* Running helper programs with an argv (never a shell). */
#pragma once
#include "util/error.h"
#include <stddef.h>

/* Runs argv[0] (PATH lookup), waits. Captures stdout+stderr (the last
 * `cap` bytes) into *ret_output when non-NULL. Returns the exit status
 * (0..255), 128+signal, or < 0 when it could not start (err set). */
int cr_run(char *const argv[], char **ret_output, size_t cap, cr_error **err);
/* The same with `input` (small: at most a pipe's buffer, 64 KiB) on stdin
 * and only stdout captured, its first `cap` bytes (stderr goes to
 * /dev/null). Both are one runner (spawn.c's run()). */
int cr_run_input(char *const argv[], const char *input, char **ret_stdout, size_t cap,
                 cr_error **err);
