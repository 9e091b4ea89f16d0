/* histogram.c: power-of-two histograms. See qraft/histogram.h. */
#include <qraft/histogram.h>

#include <inttypes.h>
#include <stdio.h>

void qraft_histogram_record(qraft_histogram *h, uint64_t v) {
  unsigned i = 0;
  while (i + 1 < QRAFT_HISTOGRAM_BUCKETS && v > ((uint64_t)1 << i)) {
    i++;
  }
  h->buckets[i]++;
  h->count++;
  h->sum += v;
  if (v > h->max) {
    h->max = v;
  }
}

uint64_t qraft_histogram_quantile(const qraft_histogram *h, double q) {
  if (h->count == 0) {
    return 0;
  }
  double exact = q * (double)h->count;
  uint64_t want = (uint64_t)exact;
  if ((double)want < exact) {
    want++; /* the ceiling: at least q of the values */
  }
  if (want == 0) {
    want = 1;
  }
  uint64_t seen = 0;
  for (unsigned i = 0; i < QRAFT_HISTOGRAM_BUCKETS; i++) {
    seen += h->buckets[i];
    if (seen >= want) {
      return i + 1 == QRAFT_HISTOGRAM_BUCKETS ? h->max : (uint64_t)1 << i;
    }
  }
  return h->max;
}

size_t qraft_histogram_prometheus(const qraft_histogram *h, const char *name,
                                  double scale, char *buf, size_t size) {
  size_t off = 0;
#define HPUT(...)                                                              \
  do {                                                                         \
    int k_ = snprintf(off < size ? buf + off : NULL,                           \
                      off < size ? size - off : 0, __VA_ARGS__);               \
    if (k_ > 0) {                                                              \
      off += (size_t)k_;                                                       \
    }                                                                          \
  } while (0)
  HPUT("# TYPE %s histogram\n", name);
  uint64_t cum = 0;
  for (unsigned i = 0; i + 1 < QRAFT_HISTOGRAM_BUCKETS; i++) {
    cum += h->buckets[i];
    HPUT("%s_bucket{le=\"%g\"} %" PRIu64 "\n", name,
         (double)((uint64_t)1 << i) / scale, cum);
  }
  HPUT("%s_bucket{le=\"+Inf\"} %" PRIu64 "\n", name, h->count);
  HPUT("%s_sum %g\n", name, (double)h->sum / scale);
  HPUT("%s_count %" PRIu64 "\n", name, h->count);
#undef HPUT
  return off;
}
