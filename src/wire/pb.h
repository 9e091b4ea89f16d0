/*
 * pb.h: protobuf wire-format primitives shared by the wire codec's files:
 * writing tags, varints and length-delimited fields, and a strict reader
 * that checks every length against the bytes it has and names the message,
 * field and offset of whatever is wrong. Internal to src/wire.
 *
 * Readers never read at or past `end`; `end` is the end of the enclosing
 * message, never beyond the end of the input.
 */
#ifndef QRAFT_WIRE_PB_H
#define QRAFT_WIRE_PB_H

#include <qraft/buf.h>
#include <qraft/error.h>
#include <qraft/varint.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

enum {
  PB_VARINT = 0,
  PB_I64 = 1,
  PB_LEN = 2,
  PB_SGROUP = 3,
  PB_EGROUP = 4,
  PB_I32 = 5,
};

/* Deepest nesting of groups inside an unknown field that is skipped. */
#define PB_GROUP_DEPTH_MAX 32

/* ---- writing ---------------------------------------------------------- */

static inline size_t pb_tag_size(uint32_t field) {
  return qraft_varint_size((uint64_t)field << 3);
}

static inline uint8_t *pb_put_varint(uint8_t *p, uint64_t v) {
  return p + qraft_varint_encode(p, v);
}

static inline uint8_t *pb_put_tag(uint8_t *p, uint32_t field, unsigned wt) {
  return pb_put_varint(p, ((uint64_t)field << 3) | wt);
}

/* A proto3 scalar: absent when zero. */
static inline size_t pb_u64_size(uint32_t field, uint64_t v) {
  return v == 0 ? 0 : pb_tag_size(field) + qraft_varint_size(v);
}

static inline uint8_t *pb_put_u64(uint8_t *p, uint32_t field, uint64_t v) {
  if (v != 0) {
    p = pb_put_tag(p, field, PB_VARINT);
    p = pb_put_varint(p, v);
  }
  return p;
}

/* A length-delimited field that is always written (a sub-message). */
static inline size_t pb_len_size(uint32_t field, size_t len) {
  return pb_tag_size(field) + qraft_varint_size(len) + len;
}

static inline uint8_t *pb_put_len(uint8_t *p, uint32_t field, size_t len) {
  p = pb_put_tag(p, field, PB_LEN);
  return pb_put_varint(p, len);
}

/* A proto3 bytes field: absent when empty. */
static inline size_t pb_bytes_size(uint32_t field, size_t len) {
  return len == 0 ? 0 : pb_len_size(field, len);
}

static inline uint8_t *pb_put_bytes(uint8_t *p, uint32_t field,
                                    const uint8_t *data, size_t len) {
  if (len != 0) {
    p = pb_put_len(p, field, len);
    memcpy(p, data, len);
    p += len;
  }
  return p;
}

/* ---- reading ---------------------------------------------------------- */

/* A message type as the reader names it in errors. */
typedef struct pb_desc {
  const char *name;
  const char *const *fields; /* indexed by field number */
  uint32_t fields_n;
} pb_desc;

typedef struct pb_dec {
  const uint8_t *base; /* start of the input: offsets count from here */
  const uint8_t *end;  /* end of the input */
  qraft_buf *owner;    /* buffer holding the input, or NULL */
  qraft_err *err;
  /* References to `owner` held by the slices made so far and not yet taken:
   * qraft__pb_dec_finish takes them in one atomic step. */
  size_t refs_pending;
} pb_dec;

/* The field being read. */
typedef struct pb_field {
  const pb_desc *desc;
  const uint8_t *tag; /* where its tag starts */
  uint32_t num;
  unsigned wt;
} pb_field;

/* A reader of the `len` bytes at `data` (NULL if len is 0); asserts they
 * lie within `owner` if given. */
pb_dec qraft__pb_dec_init(qraft_buf *owner, const uint8_t *data, size_t len,
                          qraft_err *err);
/* Takes the references the decoded slices hold. Call once decoding is
 * over, successful or not, before any slice is released. */
void qraft__pb_dec_finish(pb_dec *d);
int qraft__pb_varint_slow(pb_dec *d, const uint8_t **pp, const uint8_t *end,
                          uint64_t *v, const pb_field *f, const char *what);
int qraft__pb_wire_type_err(pb_dec *d, const pb_field *f, unsigned want);
int qraft__pb_next(pb_dec *d, const uint8_t **pp, const uint8_t *end,
                   const pb_desc *desc, pb_field *f);
int qraft__pb_skip(pb_dec *d, const uint8_t **pp, const uint8_t *end,
                   const pb_field *f);
int qraft__pb_len_err(pb_dec *d, const uint8_t *p, const uint8_t *end,
                      const pb_field *f, uint64_t n);
int qraft__pb_enum_err(pb_dec *d, const pb_field *f, uint64_t v);
size_t qraft__pb_off(const pb_dec *d, const uint8_t *p);
const char *qraft__pb_field_name(const pb_field *f);

/* Reads a varint (fast path for one byte). */
static inline int pb_varint(pb_dec *d, const uint8_t **pp, const uint8_t *end,
                            uint64_t *v, const pb_field *f, const char *what) {
  const uint8_t *p = *pp;
  if (p < end && *p < 0x80) {
    *v = *p;
    *pp = p + 1;
    return 0;
  }
  if (end - p >= 2 && p[1] < 0x80) { /* lengths of 128..16383 bytes */
    *v = (uint64_t)(p[0] & 0x7f) | (uint64_t)p[1] << 7;
    *pp = p + 2;
    return 0;
  }
  return qraft__pb_varint_slow(d, pp, end, v, f, what);
}

/* Reads the next tag. */
static inline int pb_next(pb_dec *d, const uint8_t **pp, const uint8_t *end,
                          const pb_desc *desc, pb_field *f) {
  const uint8_t *p = *pp;
  if (*p < 0x80 && *p >= 0x08) { /* one-byte tag, field number 1..15 */
    f->desc = desc;
    f->tag = p;
    f->num = *p >> 3;
    f->wt = *p & 7;
    *pp = p + 1;
    return 0;
  }
  return qraft__pb_next(d, pp, end, desc, f);
}

/* A length-delimited value: [*val, *val + *len). */
static inline int qraft__pb_len(pb_dec *d, const uint8_t **pp,
                                const uint8_t *end, const pb_field *f,
                                const uint8_t **val, size_t *len) {
  if (f->wt != PB_LEN) {
    return qraft__pb_wire_type_err(d, f, PB_LEN);
  }
  uint64_t n = 0;
  int rc = pb_varint(d, pp, end, &n, f, "length");
  if (rc != 0) {
    return rc;
  }
  const uint8_t *p = *pp;
  if (n > (uint64_t)(end - p)) {
    return qraft__pb_len_err(d, p, end, f, n);
  }
  *val = p;
  *len = (size_t)n;
  *pp = p + n;
  return 0;
}

/* A varint field: uint64, int64, bool. */
static inline int pb_u64(pb_dec *d, const uint8_t **pp, const uint8_t *end,
                         const pb_field *f, uint64_t *v) {
  if (f->wt != PB_VARINT) {
    return qraft__pb_wire_type_err(d, f, PB_VARINT);
  }
  return pb_varint(d, pp, end, v, f, "value");
}

static inline int pb_bool(pb_dec *d, const uint8_t **pp, const uint8_t *end,
                          const pb_field *f, bool *v) {
  uint64_t u = 0;
  int rc = pb_u64(d, pp, end, f, &u);
  *v = u != 0;
  return rc;
}

/* An enum field whose known values are 0..max; others are an error. */
static inline int pb_enum(pb_dec *d, const uint8_t **pp, const uint8_t *end,
                          const pb_field *f, uint32_t max, uint32_t *v) {
  uint64_t u = 0;
  int rc = pb_u64(d, pp, end, f, &u);
  if (rc != 0) {
    return rc;
  }
  if (u > max) {
    return qraft__pb_enum_err(d, f, u);
  }
  *v = (uint32_t)u;
  return 0;
}

/* A bytes field into a slice: replaces (and releases) what it held, takes
 * a reference to the input's owner if not empty. */
static inline int pb_slice(pb_dec *d, const uint8_t **pp, const uint8_t *end,
                           const pb_field *f, qraft_slice *s) {
  const uint8_t *val = NULL;
  size_t len = 0;
  int rc = qraft__pb_len(d, pp, end, f, &val, &len);
  if (rc != 0) {
    return rc;
  }
  if (s->owner != NULL) {
    /* The field came twice: the last one wins. The first was made by this
     * decoder, so its reference is still pending. */
    d->refs_pending--;
  }
  if (len != 0 && d->owner != NULL) {
    d->refs_pending++;
  }
  /* [val, val + len) lies within the input, hence within d->owner. */
  *s = len != 0 ? (qraft_slice){.data = val, .len = len, .owner = d->owner}
                : (qraft_slice){0};
  return 0;
}

#endif
