/*
 * buf.c: reference-counted buffers and slices.
 */
#include <qraft/buf.h>

#include <qraft/assert.h>

#include <stdlib.h>
#include <string.h>

qraft_buf *qraft_buf_new(size_t cap) {
  if (cap > SIZE_MAX - sizeof(qraft_buf)) {
    return NULL;
  }
  qraft_buf *b = malloc(sizeof *b + cap);
  if (b == NULL) {
    return NULL;
  }
  atomic_init(&b->refs, 1);
  b->data = (uint8_t *)(b + 1);
  b->len = 0;
  b->cap = cap;
  b->release_cb = NULL;
  b->release_ud = NULL;
  return b;
}

qraft_buf *qraft_buf_copy(const void *data, size_t len) {
  qraft_buf *b = qraft_buf_new(len);
  if (b == NULL) {
    return NULL;
  }
  if (len > 0) {
    memcpy(b->data, data, len);
  }
  b->len = len;
  return b;
}

static void buf_release_free(void *data, size_t cap, void *ud) {
  (void)cap;
  (void)ud;
  free(data);
}

qraft_buf *qraft_buf_wrap(void *data, size_t cap,
                          qraft_buf_release_cb release_cb, void *ud) {
  qraft_buf *b = malloc(sizeof *b);
  if (b == NULL) {
    return NULL;
  }
  atomic_init(&b->refs, 1);
  b->data = data;
  b->len = cap;
  b->cap = cap;
  b->release_cb = release_cb != NULL ? release_cb : buf_release_free;
  b->release_ud = ud;
  return b;
}

qraft_buf *qraft_buf_ref(qraft_buf *b) {
  uint_fast32_t old = atomic_fetch_add_explicit(&b->refs, 1, memory_order_relaxed);
  QRAFT_ASSERTF(old > 0 && old < UINT32_MAX, "buf %p refs %lu", (void *)b,
                (unsigned long)old);
  return b;
}

void qraft_buf_unref(qraft_buf *b) {
  if (b == NULL) {
    return;
  }
  uint_fast32_t old = atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel);
  QRAFT_ASSERTF(old > 0, "buf %p released more often than referenced",
                (void *)b);
  if (old == 1) {
    if (b->release_cb != NULL) {
      b->release_cb(b->data, b->cap, b->release_ud);
    }
    free(b);
  }
}

qraft_buf *qraft_buf_ref_n(qraft_buf *b, uint32_t n) {
  uint_fast32_t old = atomic_fetch_add_explicit(&b->refs, n, memory_order_relaxed);
  QRAFT_ASSERTF(old > 0 && old <= UINT32_MAX - n, "buf %p refs %lu + %u",
                (void *)b, (unsigned long)old, n);
  return b;
}

void qraft_buf_unref_n(qraft_buf *b, uint32_t n) {
  if (b == NULL || n == 0) {
    return;
  }
  uint_fast32_t old = atomic_fetch_sub_explicit(&b->refs, n, memory_order_acq_rel);
  QRAFT_ASSERTF(old >= n, "buf %p: %u references dropped, %lu held", (void *)b,
                n, (unsigned long)old);
  if (old == n) {
    if (b->release_cb != NULL) {
      b->release_cb(b->data, b->cap, b->release_ud);
    }
    free(b);
  }
}

uint32_t qraft_buf_refs(const qraft_buf *b) {
  return (uint32_t)atomic_load_explicit(&((qraft_buf *)b)->refs,
                                        memory_order_relaxed);
}

qraft_slice qraft_slice_of(qraft_buf *owner, const void *data, size_t len) {
  if (owner != NULL) {
    QRAFT_ASSERT((const uint8_t *)data >= owner->data &&
                 (const uint8_t *)data + len <= owner->data + owner->cap);
    qraft_buf_ref(owner);
  }
  return (qraft_slice){.data = data, .len = len, .owner = owner};
}

qraft_slice qraft_slice_ref(qraft_slice s) {
  if (s.owner != NULL) {
    qraft_buf_ref(s.owner);
  }
  return s;
}

qraft_slice qraft_slice_keep(qraft_slice s) {
  if (s.owner != NULL || s.len == 0) {
    return qraft_slice_ref(s);
  }
  qraft_buf *b = qraft_buf_copy(s.data, s.len);
  if (b == NULL) {
    return (qraft_slice){0};
  }
  return (qraft_slice){.data = b->data, .len = s.len, .owner = b};
}

void qraft_slice_release(qraft_slice *s) {
  qraft_buf_unref(s->owner);
  s->owner = NULL;
  s->data = NULL;
  s->len = 0;
}
