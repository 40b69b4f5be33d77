#pragma once
#include "util/macro.h"
/* Logging to stderr, once at the top (main, dispatcher). */
enum { CR_LOG_ERROR, CR_LOG_WARN, CR_LOG_INFO, CR_LOG_DEBUG };
extern int cr_log_level;
void cr_log(int level, const char *fmt, ...) _printf_(2, 3);
#define log_error(...) cr_log(CR_LOG_ERROR, __VA_ARGS__)
#define log_warn(...) cr_log(CR_LOG_WARN, __VA_ARGS__)
#define log_info(...) cr_log(CR_LOG_INFO, __VA_ARGS__)
#define log_debug(...) cr_log(CR_LOG_DEBUG, __VA_ARGS__)
