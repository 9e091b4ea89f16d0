/* Logging: levels, sinks, fields, and no evaluation when a level is off. */
#include "cmocka_all.h"

#include <qraft/log.h>

#include <stdio.h>

#include <math.h>
#include <string.h>
#include <unistd.h>

typedef struct capture {
  int calls;
  qraft_log_level level;
  char line[512];
} capture;

static void capture_sink(void *ud, qraft_log_level level, const char *file,
                         int line, const char *msg,
                         const qraft_log_field *fields, size_t fields_n) {
  capture *c = ud;
  c->calls++;
  c->level = level;
  qraft_log_format(c->line, sizeof c->line, level, file, line, msg, fields,
                   fields_n);
}

static int evaluated;
static uint64_t costly(void) {
  evaluated++;
  return 7;
}

static void records_below_threshold_are_not_evaluated(void **state) {
  (void)state;
  capture c = {0};
  qraft_logger lg = {.level = QRAFT_LOG_WARN, .sink_cb = capture_sink,
                     .sink_ud = &c};
  evaluated = 0;
  QRAFT_LOG(&lg, QRAFT_LOG_DEBUG, "quiet", QRAFT_LOG_U64("x", costly()));
  assert_int_equal(c.calls, 0);
  assert_int_equal(evaluated, 0);
  QRAFT_LOG(&lg, QRAFT_LOG_ERROR, "loud", QRAFT_LOG_U64("x", costly()));
  assert_int_equal(c.calls, 1);
  assert_int_equal(evaluated, 1);
  assert_int_equal(c.level, QRAFT_LOG_ERROR);
}

static void fields_render_as_key_value_pairs(void **state) {
  (void)state;
  capture c = {0};
  qraft_logger lg = {.level = QRAFT_LOG_TRACE, .sink_cb = capture_sink,
                     .sink_ud = &c};
  QRAFT_LOG(&lg, QRAFT_LOG_INFO, "became leader", QRAFT_LOG_U64("term", 5),
            QRAFT_LOG_I64("delta", -3), QRAFT_LOG_STR("peer", "a b"),
            QRAFT_LOG_STR("role", "leader"), QRAFT_LOG_F64("ratio", 0.5));
  assert_non_null(strstr(c.line, "INFO  became leader term=5 delta=-3 "
                                 "peer=\"a b\" role=leader ratio=0.5 "
                                 "(test_log.c:"));
  QRAFT_LOG(&lg, QRAFT_LOG_WARN, "no fields");
  assert_non_null(strstr(c.line, "WARN  no fields (test_log.c:"));
}

/* JSON records: strings escaped (quotes, backslashes, newlines, control
 * bytes), numbers as numbers, NaN as null, the level in lower case. */
static void json_records_escape_strings_and_keep_numbers(void **state) {
  (void)state;
  qraft_log_field f[] = {QRAFT_LOG_STR("path", "a \"b\"\\c\nd\x01"),
                         QRAFT_LOG_U64("index", 42), QRAFT_LOG_I64("delta", -3),
                         QRAFT_LOG_F64("ratio", 0.5),
                         QRAFT_LOG_F64("bad", NAN)};
  char buf[512];
  size_t n = qraft_log_format_json(buf, sizeof buf, QRAFT_LOG_WARN,
                                   "src/x/y.c", 7, "it \"broke\"", f, 5, "n1");
  assert_int_equal(n, strlen(buf));
  assert_memory_equal(buf, "{\"ts\":\"", 7);
  const char *rest = strstr(buf, "\"level\"");
  assert_non_null(rest);
  assert_string_equal(
      rest, "\"level\":\"warn\",\"node\":\"n1\",\"msg\":\"it \\\"broke\\\"\","
            "\"path\":\"a \\\"b\\\"\\\\c\\nd\\u0001\",\"index\":42,"
            "\"delta\":-3,\"ratio\":0.5,\"bad\":null,\"src\":\"y.c:7\"}");
  /* a buffer too small still tells the length the record needs */
  char small[16];
  assert_int_equal(qraft_log_format_json(small, sizeof small, QRAFT_LOG_WARN,
                                         "src/x/y.c", 7, "it \"broke\"", f, 5,
                                         "n1"),
                   n);
}

static void level_names_parse_both_ways(void **state) {
  (void)state;
  qraft_log_level l;
  assert_int_equal(qraft_log_level_parse("debug", &l), 0);
  assert_int_equal(l, QRAFT_LOG_DEBUG);
  assert_int_equal(qraft_log_level_parse("WARNING", &l), 0);
  assert_int_equal(l, QRAFT_LOG_WARN);
  assert_true(qraft_log_level_parse("loud", &l) < 0);
  assert_string_equal(qraft_log_level_name(QRAFT_LOG_ERROR), "ERROR");
}

static void default_logger_writes_timestamped_lines_to_stderr(void **state) {
  (void)state;
  /* Redirect stderr into a temporary file for the duration of the call. */
  FILE *tmp = tmpfile();
  assert_non_null(tmp);
  fflush(stderr);
  int saved = dup(2);
  dup2(fileno(tmp), 2);
  qraft_logger lg;
  qraft_logger_init(&lg, QRAFT_LOG_INFO);
  lg.name = "n1";
  QRAFT_LOG(&lg, QRAFT_LOG_INFO, "hello", QRAFT_LOG_U64("k", 1));
  QRAFT_LOG(&lg, QRAFT_LOG_DEBUG, "hidden");
  fflush(stderr);
  dup2(saved, 2);
  close(saved);
  rewind(tmp);
  char text[512] = {0};
  size_t n = fread(text, 1, sizeof text - 1, tmp);
  fclose(tmp);
  assert_true(n > 0);
  /* 2026-11-26T13:40:03.123456Z [n1] INFO  hello k=1 (test_log.c:NN) */
  assert_int_equal(text[4], '-');
  assert_int_equal(text[10], 'T');
  assert_int_equal(text[26], 'Z');
  assert_non_null(strstr(text, "[n1] INFO  hello k=1 (test_log.c:"));
  assert_null(strstr(text, "hidden"));
  assert_int_equal(strchr(text, '\n') - text + 1, (long)n);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(records_below_threshold_are_not_evaluated),
      cmocka_unit_test(fields_render_as_key_value_pairs),
      cmocka_unit_test(level_names_parse_both_ways),
      cmocka_unit_test(json_records_escape_strings_and_keep_numbers),
      cmocka_unit_test(default_logger_writes_timestamped_lines_to_stderr),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
