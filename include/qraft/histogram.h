/*
 * qraft/histogram.h: a fixed-size histogram of latencies or sizes, with
 * power-of-two buckets, rendered in Prometheus text format. Recording is
 * O(1) and never allocates. Not thread-safe: record on one thread, copy the
 * struct under a lock to read it elsewhere.
 */
#ifndef QRAFT_HISTOGRAM_H
#define QRAFT_HISTOGRAM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bucket i counts values <= 2^i (in the histogram's unit); the last bucket
 * is +Inf. */
#define QRAFT_HISTOGRAM_BUCKETS 32

typedef struct qraft_histogram {
  uint64_t buckets[QRAFT_HISTOGRAM_BUCKETS];
  uint64_t count;
  uint64_t sum;
  uint64_t max;
} qraft_histogram;

/* Adds one value. */
void qraft_histogram_record(qraft_histogram *h, uint64_t v);

/* The smallest bucket bound with at least q (0..1) of the values at or
 * below it: an upper bound of the q-quantile. 0 when empty. */
uint64_t qraft_histogram_quantile(const qraft_histogram *h, double q);

/*
 * Renders `h` as a Prometheus histogram named `name`, with bucket bounds
 * and the sum divided by `scale` (e.g. 1e6 to show microseconds as
 * seconds), into buf (NUL-terminated when size > 0). Returns the length the
 * full text needs, like snprintf.
 */
size_t qraft_histogram_prometheus(const qraft_histogram *h, const char *name,
                                  double scale, char *buf, size_t size);

#ifdef __cplusplus
}
#endif
#endif
