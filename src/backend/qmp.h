/* A small blocking QMP client (QEMU Machine Protocol) with deadlines.
 * Used for short control operations (quit, stop, cont, migrate). Events
 * that arrive before a command's reply are skipped. */
#pragma once
#include "util/error.h"
#include <jansson.h>

typedef struct qmp qmp;
int qmp_connect(const char *path, int timeout_ms, qmp **ret, cr_error **err);
/* Runs one command; *ret_return (optional) gets the "return" value. */
int qmp_execute(qmp *q, const char *command, json_t *args /* stolen, may be NULL */,
                int timeout_ms, json_t **ret_return, cr_error **err);
/* The same, passing pass_fd (SCM_RIGHTS) with the command (QMP getfd). */
int qmp_execute_fd(qmp *q, const char *command, json_t *args /* stolen */, int pass_fd,
                   int timeout_ms, json_t **ret_return, cr_error **err);
void qmp_free(qmp *q);
