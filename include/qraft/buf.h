/*
 * qraft/buf.h: reference-counted byte buffers, for payloads that cross layers
 * without being copied.
 *
 * A `qraft_buf` owns a block of bytes. Whoever holds a pointer to it holds a
 * reference; qraft_buf_ref takes another, qraft_buf_unref gives one back, and
 * the last unref frees the buffer (or calls the release callback of a wrapped
 * block). Reference counting is atomic, so references may be dropped on any
 * thread; the bytes themselves are not synchronized: fill a buffer before
 * sharing it, and treat shared buffers as read-only.
 *
 * A `qraft_slice` is a view of bytes (pointer and length) with an optional
 * owner buffer that keeps them alive. A decoded entry's payload is a slice
 * into the received frame's buffer.
 */
#ifndef QRAFT_BUF_H
#define QRAFT_BUF_H

#include <stddef.h>
#include <stdint.h>
#ifdef __cplusplus
/* C++ (tests, benchmarks, users' code) sees the same layout through
 * std::atomic, which GCC and Clang make compatible with C11 _Atomic. */
#include <atomic>
#define QRAFT__ATOMIC_UINT_FAST32 std::atomic<uint_fast32_t>
#else
#include <stdatomic.h>
#define QRAFT__ATOMIC_UINT_FAST32 atomic_uint_fast32_t
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef struct qraft_buf qraft_buf;

/* Called when the last reference to a wrapped block goes. */
typedef void (*qraft_buf_release_cb)(void *data, size_t cap, void *ud);

struct qraft_buf {
  QRAFT__ATOMIC_UINT_FAST32 refs;
  uint8_t *data;
  size_t len; /* bytes in use, set by the owner */
  size_t cap; /* bytes available at data */
  qraft_buf_release_cb release_cb; /* NULL: data is inline after the struct */
  void *release_ud;
};

/* Allocates a buffer with `cap` bytes of room and len 0, holding one
 * reference for the caller. Returns NULL if memory is exhausted. */
qraft_buf *qraft_buf_new(size_t cap);

/* Allocates a buffer holding a copy of `len` bytes at `data`. */
qraft_buf *qraft_buf_copy(const void *data, size_t len);

/* Wraps a block the caller allocated. Ownership of the block passes to the
 * buffer: `release_cb(data, cap, ud)` is called when the last reference is
 * dropped (NULL release_cb: the block is free()d). len starts at cap. */
qraft_buf *qraft_buf_wrap(void *data, size_t cap,
                          qraft_buf_release_cb release_cb, void *ud);

/* Takes another reference; returns `b` for convenience. */
qraft_buf *qraft_buf_ref(qraft_buf *b);

/* Drops a reference; NULL is ignored. */
void qraft_buf_unref(qraft_buf *b);

/* Takes `n` more references in one atomic step (for a decoder handing out
 * many slices of one buffer); n may be 0. Returns `b`. */
qraft_buf *qraft_buf_ref_n(qraft_buf *b, uint32_t n);

/* Drops `n` references in one atomic step; the last one frees the buffer as
 * qraft_buf_unref does. NULL or n == 0 is ignored. */
void qraft_buf_unref_n(qraft_buf *b, uint32_t n);

/* Current reference count (for tests and assertions). */
uint32_t qraft_buf_refs(const qraft_buf *b);

typedef struct qraft_slice {
  const uint8_t *data;
  size_t len;
  qraft_buf *owner; /* NULL: the caller guarantees the bytes outlive the slice */
} qraft_slice;

/* A slice of `len` bytes at `data` inside `owner`, taking a reference to
 * `owner` (if not NULL). */
qraft_slice qraft_slice_of(qraft_buf *owner, const void *data, size_t len);

/* Takes another reference to the slice's owner and returns a copy of it. */
qraft_slice qraft_slice_ref(qraft_slice s);

/* A slice that may outlive the memory it points into: another reference
 * when it has an owner, a copy in a new buffer when it has none (the bytes
 * then belong to someone else's memory, e.g. a core update). The result
 * always has an owner unless it is empty. Returns an empty slice if memory
 * is exhausted. */
qraft_slice qraft_slice_keep(qraft_slice s);

/* Drops the slice's reference and empties it. */
void qraft_slice_release(qraft_slice *s);

#ifdef __cplusplus
}
#endif
#endif
