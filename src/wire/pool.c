/*
 * pool.c: a pool of equal-sized blocks for encoded frames. Blocks come back
 * when the last reference to their qraft_buf goes, which may happen on any
 * thread (a transport finishing a send), so the free list is under a mutex.
 * The pool itself is reference-counted: its owner holds one reference and
 * every buffer in use holds one, so a buffer may outlive
 * qraft_wire_pool_free.
 */
#include <qraft/assert.h>
#include <qraft/wire.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

struct qraft_wire_pool {
  pthread_mutex_t mu;
  atomic_uint_fast32_t refs;
  size_t buf_bytes;
  uint32_t bufs_max;
  uint32_t idle_n; /* under mu */
  bool closed;     /* under mu: the owner freed the pool */
  void **idle;     /* bufs_max slots, under mu */
};

int qraft_wire_pool_new(size_t buf_bytes, uint32_t bufs_max,
                        qraft_wire_pool **out) {
  *out = NULL;
  if (buf_bytes == 0 || bufs_max == 0) {
    return QRAFT_ECONFIG;
  }
  qraft_wire_pool *pool = calloc(1, sizeof *pool);
  if (pool == NULL) {
    return -ENOMEM;
  }
  pool->idle = calloc(bufs_max, sizeof *pool->idle);
  if (pool->idle == NULL) {
    free(pool);
    return -ENOMEM;
  }
  int rc = pthread_mutex_init(&pool->mu, NULL);
  QRAFT_ASSERTF(rc == 0, "pthread_mutex_init: %d", rc);
  atomic_init(&pool->refs, 1);
  pool->buf_bytes = buf_bytes;
  pool->bufs_max = bufs_max;
  *out = pool;
  return 0;
}

static void pool_unref(qraft_wire_pool *pool) {
  uint_fast32_t old =
      atomic_fetch_sub_explicit(&pool->refs, 1, memory_order_acq_rel);
  QRAFT_ASSERT(old > 0);
  if (old != 1) {
    return;
  }
  QRAFT_ASSERT(pool->closed && pool->idle_n == 0);
  pthread_mutex_destroy(&pool->mu);
  free(pool->idle);
  free(pool);
}

void qraft_wire_pool_free(qraft_wire_pool *pool) {
  if (pool == NULL) {
    return;
  }
  pthread_mutex_lock(&pool->mu);
  QRAFT_ASSERT(!pool->closed);
  pool->closed = true;
  for (uint32_t i = 0; i < pool->idle_n; i++) {
    free(pool->idle[i]);
  }
  pool->idle_n = 0;
  pthread_mutex_unlock(&pool->mu);
  pool_unref(pool);
}

/* The last reference to a pooled buffer went: keep its block or free it. */
static void pool_release(void *data, size_t cap, void *ud) {
  qraft_wire_pool *pool = ud;
  QRAFT_ASSERT(cap == pool->buf_bytes);
  pthread_mutex_lock(&pool->mu);
  if (!pool->closed && pool->idle_n < pool->bufs_max) {
    pool->idle[pool->idle_n++] = data;
    data = NULL;
  }
  pthread_mutex_unlock(&pool->mu);
  free(data);
  pool_unref(pool);
}

qraft_buf *qraft_wire_pool_get(qraft_wire_pool *pool, size_t bytes) {
  if (bytes > pool->buf_bytes) {
    return qraft_buf_new(bytes);
  }
  void *block = NULL;
  pthread_mutex_lock(&pool->mu);
  QRAFT_ASSERT(!pool->closed);
  if (pool->idle_n > 0) {
    block = pool->idle[--pool->idle_n];
  }
  pthread_mutex_unlock(&pool->mu);
  if (block == NULL) {
    block = malloc(pool->buf_bytes);
    if (block == NULL) {
      return NULL;
    }
  }
  atomic_fetch_add_explicit(&pool->refs, 1, memory_order_relaxed);
  qraft_buf *b = qraft_buf_wrap(block, pool->buf_bytes, pool_release, pool);
  if (b == NULL) {
    pool_release(block, pool->buf_bytes, pool);
    return NULL;
  }
  b->len = 0;
  return b;
}

uint32_t qraft_wire_pool_idle(qraft_wire_pool *pool) {
  pthread_mutex_lock(&pool->mu);
  uint32_t n = pool->idle_n;
  pthread_mutex_unlock(&pool->mu);
  return n;
}
