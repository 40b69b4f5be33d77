#include "util/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cr_log_level = CR_LOG_WARN;

__attribute__((constructor)) static void log_init(void) {
  const char *e = getenv("CLEANROOM_LOG");
  if (!e) return;
  if (!strcmp(e, "debug")) cr_log_level = CR_LOG_DEBUG;
  else if (!strcmp(e, "info")) cr_log_level = CR_LOG_INFO;
  else if (!strcmp(e, "error")) cr_log_level = CR_LOG_ERROR;
}

void cr_log(int level, const char *fmt, ...) {
  if (level > cr_log_level) return;
  static const char *names[] = {"error", "warning", "info", "debug"};
  char buf[4096];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  fprintf(stderr, "cleanroom: %s: %s\n", names[level], buf);
}
