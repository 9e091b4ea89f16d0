/* Histograms: bucketing, quantile bounds and the Prometheus rendering. */
#include "cmocka_all.h"

#include <qraft/histogram.h>

#include <string.h>

static void values_land_in_power_of_two_buckets(void **st) {
  (void)st;
  qraft_histogram h;
  memset(&h, 0, sizeof h);
  qraft_histogram_record(&h, 0);   /* bucket 0: <= 1 */
  qraft_histogram_record(&h, 1);   /* bucket 0 */
  qraft_histogram_record(&h, 3);   /* bucket 2: <= 4 */
  qraft_histogram_record(&h, 100); /* bucket 7: <= 128 */
  assert_int_equal(h.buckets[0], 2);
  assert_int_equal(h.buckets[2], 1);
  assert_int_equal(h.buckets[7], 1);
  assert_int_equal(h.count, 4);
  assert_int_equal(h.sum, 104);
  assert_int_equal(h.max, 100);
  assert_int_equal(qraft_histogram_quantile(&h, 0.5), 1);
  assert_int_equal(qraft_histogram_quantile(&h, 0.99), 128);
  qraft_histogram_record(&h, UINT64_MAX); /* the +Inf bucket */
  assert_int_equal(h.buckets[31], 1);
  assert_int_equal(qraft_histogram_quantile(&h, 1.0), UINT64_MAX);
}

static void renders_cumulative_prometheus_buckets(void **st) {
  (void)st;
  qraft_histogram h;
  memset(&h, 0, sizeof h);
  qraft_histogram_record(&h, 1000);
  qraft_histogram_record(&h, 3000);
  char buf[4096];
  size_t n = qraft_histogram_prometheus(&h, "x_seconds", 1e6, buf, sizeof buf);
  assert_int_equal(n, strlen(buf));
  assert_non_null(strstr(buf, "# TYPE x_seconds histogram\n"));
  assert_non_null(strstr(buf, "x_seconds_bucket{le=\"0.001024\"} 1\n"));
  assert_non_null(strstr(buf, "x_seconds_bucket{le=\"0.004096\"} 2\n"));
  assert_non_null(strstr(buf, "x_seconds_bucket{le=\"+Inf\"} 2\n"));
  assert_non_null(strstr(buf, "x_seconds_sum 0.004\n"));
  assert_non_null(strstr(buf, "x_seconds_count 2\n"));
  char small[8];
  assert_int_equal(qraft_histogram_prometheus(&h, "x_seconds", 1e6, small,
                                              sizeof small),
                   n);
  assert_int_equal(strlen(small), sizeof small - 1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(values_land_in_power_of_two_buckets),
      cmocka_unit_test(renders_cumulative_prometheus_buckets),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
