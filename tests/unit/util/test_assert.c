/* Death tests: a failed assertion prints its message, file:line and a
 * backtrace, runs the user's hook, then aborts. Runs in a forked child. */
#include "cmocka_all.h"

#include <qraft/assert.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void hook(const char *msg, void *ud) {
  (void)ud;
  dprintf(2, "HOOK CALLED WITH <%s>\n", msg);
}

__attribute__((noinline)) static void check_term(int term) {
  QRAFT_ASSERTF(term >= 3, "term went back to %d", term);
}

/* Runs fn in a child with stderr captured; returns the wait status. */
static int run_child(void (*fn)(void), char *out, size_t out_size) {
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    dup2(fds[1], 2);
    close(fds[0]);
    fn();
    _exit(0);
  }
  close(fds[1]);
  size_t off = 0;
  ssize_t n;
  while ((n = read(fds[0], out + off, out_size - 1 - off)) > 0) {
    off += (size_t)n;
  }
  out[off] = '\0';
  close(fds[0]);
  int status;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  return status;
}

static void fail_with_hook(void) {
  qraft_assert_set_hook(hook, NULL);
  check_term(2);
}

static void assertion_failure_prints_message_backtrace_and_aborts(void **st) {
  (void)st;
  char out[16384];
  int status = run_child(fail_with_hook, out, sizeof out);
  assert_true(WIFSIGNALED(status));
  assert_int_equal(WTERMSIG(status), SIGABRT);
  assert_non_null(strstr(out, "qraft: assertion failed: term >= 3 at "));
  assert_non_null(strstr(out, "test_assert.c:"));
  assert_non_null(strstr(out, "in check_term: term went back to 2"));
  const char *bt = strstr(out, "backtrace:\n");
  assert_non_null(bt);
  /* backtrace_symbols_fd names our binary on each frame line */
  assert_non_null(strstr(bt, "unit_util_assert"));
  const char *h = strstr(out, "HOOK CALLED WITH <qraft: assertion failed: "
                              "term >= 3");
  assert_non_null(h);
  assert_true(h > bt); /* the hook runs after the backtrace is out */
}

static void pass(void) { check_term(5); }

static void passing_assertion_does_nothing(void **st) {
  (void)st;
  char out[1024];
  int status = run_child(pass, out, sizeof out);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
  assert_string_equal(out, "");
}

static void unreachable(void) { QRAFT_UNREACHABLE(); }

static void unreachable_aborts(void **st) {
  (void)st;
  char out[16384];
  int status = run_child(unreachable, out, sizeof out);
  assert_true(WIFSIGNALED(status));
  assert_int_equal(WTERMSIG(status), SIGABRT);
  assert_non_null(strstr(out, "assertion failed: unreachable"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(assertion_failure_prints_message_backtrace_and_aborts),
      cmocka_unit_test(passing_assertion_does_nothing),
      cmocka_unit_test(unreachable_aborts),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
