/* Error codes and context chains. */
#include "cmocka_all.h"

#include <qraft/error.h>

#include <errno.h>
#include <string.h>

static void every_qraft_code_has_a_name_and_description(void **state) {
  (void)state;
  static const int codes[] = {
#define X(name, value, desc) value,
      QRAFT_ERRORS(X)
#undef X
  };
  for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
    assert_true(codes[i] <= QRAFT_ERRNO_BAND_MAX);
    assert_true(codes[i] >= QRAFT_ERRNO_BAND_MIN);
    assert_string_not_equal(qraft_strerror(codes[i]), "unknown error");
    assert_string_not_equal(qraft_errname(codes[i]), "E?");
    assert_int_equal(strncmp(qraft_errname(codes[i]), "QRAFT_E", 7), 0);
  }
  assert_string_equal(qraft_errname(QRAFT_ECORRUPT), "QRAFT_ECORRUPT");
}

static void errno_codes_are_named_by_libc(void **state) {
  (void)state;
  assert_string_equal(qraft_errname(-ENOENT), "ENOENT");
  assert_string_equal(qraft_strerror(-ENOSPC), "No space left on device");
  assert_string_equal(qraft_strerror(0), "success");
  assert_string_equal(qraft_strerror(-1500), "unknown error");
  assert_string_equal(qraft_errname(-1500), "E?");
}

static int inner(qraft_err *err) {
  return QRAFT_ERR(err, QRAFT_ECORRUPT, "segment %s offset %d: bad checksum",
                   "00000001.wal", 4096);
}

static int middle(qraft_err *err) {
  int rv = inner(err);
  if (rv != 0) {
    return QRAFT_ERR(err, rv, "read entry %d", 41);
  }
  return 0;
}

static int outer(qraft_err *err) {
  int rv = middle(err);
  if (rv != 0) {
    return QRAFT_ERR(err, rv, "append 41..57");
  }
  return 0;
}

static void chain_prints_newest_context_first_with_file_and_line(void **state) {
  (void)state;
  qraft_err err;
  qraft_err_init(&err, 0);
  assert_false(qraft_err_is_set(&err));
  int rv = outer(&err);
  assert_int_equal(rv, QRAFT_ECORRUPT);
  assert_int_equal(err.code, QRAFT_ECORRUPT);
  assert_int_equal(err.frames_n, 3);
  assert_string_equal(err.frames[0].func, "inner");
  assert_string_equal(err.frames[2].func, "outer");

  char buf[1024];
  size_t n = qraft_err_format(&err, buf, sizeof buf);
  assert_int_equal(n, strlen(buf));
  const char *want_prefix = "append 41..57: read entry 41: segment "
                            "00000001.wal offset 4096: bad checksum "
                            "[QRAFT_ECORRUPT: data is corrupt";
  assert_int_equal(strncmp(buf, want_prefix, strlen(want_prefix)), 0);
  /* frames in order root -> outer, each with file:line and function */
  const char *a = strstr(buf, "test_error.c:");
  assert_non_null(a);
  const char *pi = strstr(buf, " inner");
  const char *pm = strstr(buf, " middle");
  const char *po = strstr(buf, " outer");
  assert_non_null(pi);
  assert_non_null(pm);
  assert_non_null(po);
  assert_true(pi < pm && pm < po);
  char line[32];
  snprintf(line, sizeof line, "test_error.c:%d inner", err.frames[0].line);
  assert_non_null(strstr(buf, line));
}

static void format_truncates_safely_and_reports_needed_length(void **state) {
  (void)state;
  qraft_err err;
  qraft_err_init(&err, 0);
  outer(&err);
  char full[1024];
  size_t need = qraft_err_format(&err, full, sizeof full);
  char small[16];
  memset(small, 'x', sizeof small);
  size_t need2 = qraft_err_format(&err, small, sizeof small);
  assert_int_equal(need, need2);
  assert_int_equal(strlen(small), sizeof small - 1);
  assert_int_equal(strncmp(small, full, sizeof small - 1), 0);
}

static void null_err_records_nothing_but_returns_code(void **state) {
  (void)state;
  assert_int_equal(QRAFT_ERR(NULL, -EIO, "x"), -EIO);
}

static void long_chains_keep_root_and_outermost(void **state) {
  (void)state;
  qraft_err err;
  qraft_err_init(&err, 0);
  QRAFT_ERR(&err, -EIO, "root");
  for (int i = 0; i < 20; i++) {
    QRAFT_ERR(&err, -EIO, "ctx %d", i);
  }
  assert_int_equal(err.frames_n, QRAFT_ERR_FRAMES_MAX);
  assert_int_equal(err.frames_dropped, 21 - QRAFT_ERR_FRAMES_MAX);
  assert_string_equal(err.frames[0].msg, "root");
  assert_string_equal(err.frames[QRAFT_ERR_FRAMES_MAX - 1].msg, "ctx 19");
  char buf[2048];
  qraft_err_format(&err, buf, sizeof buf);
  assert_non_null(strstr(buf, "more)"));
}

static void long_messages_are_truncated_in_the_frame(void **state) {
  (void)state;
  qraft_err err;
  qraft_err_init(&err, 0);
  char big[400];
  memset(big, 'a', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  QRAFT_ERR(&err, -EIO, "%s", big);
  assert_int_equal(strlen(err.frames[0].msg), QRAFT_ERR_MSG_MAX - 1);
}

static void backtrace_is_captured_when_asked(void **state) {
  (void)state;
  qraft_err err;
  qraft_err_init(&err, QRAFT_ERR_WANT_BACKTRACE);
  outer(&err);
  assert_true(err.backtrace_n > 2);
  qraft_err err2;
  qraft_err_init(&err2, 0);
  outer(&err2);
  assert_int_equal(err2.backtrace_n, 0);
  FILE *f = tmpfile();
  assert_non_null(f);
  qraft_err_print(&err, f);
  fflush(f);
  rewind(f);
  char text[8192];
  size_t n = fread(text, 1, sizeof text - 1, f);
  text[n] = '\0';
  fclose(f);
  assert_non_null(strstr(text, "backtrace of where the error began"));
  assert_non_null(strstr(text, "unit_util_error")); /* our own binary */
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(every_qraft_code_has_a_name_and_description),
      cmocka_unit_test(errno_codes_are_named_by_libc),
      cmocka_unit_test(chain_prints_newest_context_first_with_file_and_line),
      cmocka_unit_test(format_truncates_safely_and_reports_needed_length),
      cmocka_unit_test(null_err_records_nothing_but_returns_code),
      cmocka_unit_test(long_chains_keep_root_and_outermost),
      cmocka_unit_test(long_messages_are_truncated_in_the_frame),
      cmocka_unit_test(backtrace_is_captured_when_asked),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
