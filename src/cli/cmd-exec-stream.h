/* The streaming loop `cleanroom exec` and `cleanroom execution attach`
 * share: output notifications go to our stdout/stderr unmodified, stdin is
 * forwarded with execution.write, SIGINT once cancels the command (TERM),
 * twice detaches. Implemented in cmd-exec-stream.c. */
#pragma once
#include "cli/cmd-sandbox-common.h"

#include <stdbool.h>

#define EXEC_STREAM_EXIT_TIMEOUT 124
#define EXEC_STREAM_EXIT_DETACHED 130

typedef struct exec_stream {
  api_client *c;
  char *exec_id; /* owned; only notifications for it are handled once set */
  json_t *final; /* owned; the Execution from execution.exit */
  bool stdout_broken, stderr_broken;
  bool progress; /* show sandbox.progress notifications on stderr */
  bool tty;      /* a tty execution: our terminal's size changes are sent on */
} exec_stream;

/* api_client notification callback; ud is an exec_stream. */
void exec_stream_on_notification(const char *method, json_t *params, void *ud);

/* Ignores SIGPIPE (broken stdout/stderr are dropped instead). */
void exec_stream_ignore_sigpipe(void);

/* Installs the SIGINT/SIGTERM handlers the loop counts (and SIGWINCH, which
 * makes the loop send execution.resize for x->tty). Returns 0, or a CLI exit
 * code after printing the error. */
int exec_stream_catch_signals(void);
/* The size of the terminal on stdin (else stdout); false when neither is one. */
bool exec_stream_winsize(unsigned *rows, unsigned *cols);

/* Streams x->exec_id (set) until its execution.exit arrives, forwarding
 * stdin when stdin_open. Returns the exit status: the command's own (see
 * exec_stream_exit_status) when x->final was set, EXEC_STREAM_EXIT_DETACHED
 * after a second SIGINT (with a message naming the execution, sandbox_id and
 * how to re-attach), CLI_EXIT_FAILURE after printing a lost-connection error.
 * timeout_opt: the --timeout text for the timeout message, or NULL. */
int exec_stream_run(exec_stream *x, const char *sandbox_id, bool stdin_open,
                    const char *timeout_opt);

/* Maps a final Execution to an exit status (printing why it failed):
 * 124 timed out, 127 command not found, 128+N signal N, else the exit code. */
int exec_stream_exit_status(json_t *execution, const char *timeout_opt);

/* Frees exec_id and final. */
void exec_stream_done(exec_stream *x);
