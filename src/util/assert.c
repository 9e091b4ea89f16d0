/*
 * assert.c: the failure path of QRAFT_ASSERT. Uses only async-signal-safe
 * output (write, backtrace_symbols_fd) so it works with a damaged heap.
 */
#include <qraft/assert.h>

#include <execinfo.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static qraft_assert_hook_cb assert_hook;
static void *assert_hook_ud;

void qraft_assert_set_hook(qraft_assert_hook_cb hook_cb, void *ud) {
  assert_hook = hook_cb;
  assert_hook_ud = ud;
}

void qraft__assert_fail(const char *expr, const char *file, int line,
                        const char *func, const char *fmt, ...) {
  char msg[1024];
  int n = snprintf(msg, sizeof msg, "qraft: assertion failed: %s at %s:%d in %s",
                   expr, file, line, func);
  if (fmt != NULL && n > 0 && (size_t)n < sizeof msg) {
    size_t off = (size_t)n;
    off += (size_t)snprintf(msg + off, sizeof msg - off, ": ");
    if (off < sizeof msg) {
      va_list ap;
      va_start(ap, fmt);
      vsnprintf(msg + off, sizeof msg - off, fmt, ap);
      va_end(ap);
    }
  }
  size_t len = strnlen(msg, sizeof msg - 1);
  ssize_t w = write(STDERR_FILENO, msg, len);
  w = write(STDERR_FILENO, "\nbacktrace:\n", 12);
  (void)w;
  void *frames[64];
  int frames_n = backtrace(frames, 64);
  backtrace_symbols_fd(frames, frames_n, STDERR_FILENO);
  if (assert_hook != NULL) {
    qraft_assert_hook_cb hook = assert_hook;
    assert_hook = NULL; /* an assertion inside the hook must not recurse */
    hook(msg, assert_hook_ud);
  }
  abort();
}
