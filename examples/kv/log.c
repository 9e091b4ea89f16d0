/* qraft-kv's own log lines (kv.h, kv_log): text, or JSON through the
 * default logger (--log-format json). */
#include "kv.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>

static bool kv_json_log;

void kv_log_json(bool on) { kv_json_log = on; }

void kv_log(qraft_log_level level, const char *fmt, ...) {
  char msg[2048];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (n > 0 && (size_t)n < sizeof msg && msg[n - 1] == '\n') msg[n - 1] = 0;
  if (!kv_json_log) {
    fprintf(stderr, "qraft-kv: %s\n", msg);
    return;
  }
  QRAFT_LOG(NULL, level, msg);
}
