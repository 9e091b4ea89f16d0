/*
 * frame.c: frames (a length prefix and a qraft.wire.Frame body holding the
 * messages of one Raft group), decoded batches and their memory, the stream
 * preamble, and the limits.
 *
 * Decoding runs two passes over the input: the first checks the structure
 * and counts messages, entries and snapshots, so that one allocation sized
 * within the limits holds the whole batch; the second fills it. Bytes are
 * never copied. Nothing here may trust a length before checking it against
 * the bytes that are really there.
 */
#include "codec.h"

#include <qraft/assert.h>
#include <qraft/crc32c.h>
#include <qraft/wire.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(QRAFT_WIRE_FRAME_BYTES_LIMIT <= UINT32_MAX,
               "a frame's length fits its 4-byte prefix");
_Static_assert(QRAFT_WIRE_FRAME_BYTES_MAX_DEFAULT <=
                   QRAFT_WIRE_FRAME_BYTES_LIMIT,
               "default frame size within the ceiling");
_Static_assert(QRAFT_WIRE_FRAME_MESSAGES_MAX_DEFAULT <=
                   QRAFT_WIRE_FRAME_MESSAGES_LIMIT,
               "default message count within the ceiling");
_Static_assert(QRAFT_WIRE_FRAME_ENTRIES_MAX_DEFAULT <=
                   QRAFT_WIRE_FRAME_ENTRIES_LIMIT,
               "default entry count within the ceiling");
_Static_assert(_Alignof(qraft_message) <= _Alignof(qraft_wire_batch) &&
                   _Alignof(qraft_entry) <= _Alignof(qraft_message) &&
                   _Alignof(qraft_snapshot) <= _Alignof(qraft_entry),
               "the arrays of a batch block stay aligned one after another");

/* ---- limits ----------------------------------------------------------- */

int qraft_wire_limits_check(const qraft_wire_limits *limits, qraft_err *err) {
  if (limits->frame_bytes_max == 0 ||
      limits->frame_bytes_max > QRAFT_WIRE_FRAME_BYTES_LIMIT) {
    return QRAFT_ERR(err, QRAFT_ECONFIG, "frame_bytes_max %u not in 1..%u",
                     limits->frame_bytes_max, QRAFT_WIRE_FRAME_BYTES_LIMIT);
  }
  if (limits->frame_messages_max == 0 ||
      limits->frame_messages_max > QRAFT_WIRE_FRAME_MESSAGES_LIMIT) {
    return QRAFT_ERR(err, QRAFT_ECONFIG, "frame_messages_max %u not in 1..%u",
                     limits->frame_messages_max,
                     QRAFT_WIRE_FRAME_MESSAGES_LIMIT);
  }
  if (limits->frame_entries_max == 0 ||
      limits->frame_entries_max > QRAFT_WIRE_FRAME_ENTRIES_LIMIT) {
    return QRAFT_ERR(err, QRAFT_ECONFIG, "frame_entries_max %u not in 1..%u",
                     limits->frame_entries_max,
                     QRAFT_WIRE_FRAME_ENTRIES_LIMIT);
  }
  return 0;
}

const qraft_wire_limits *qraft__wire_limits(const qraft_wire_limits *limits,
                                            qraft_wire_limits *storage) {
  if (limits == NULL) {
    *storage = QRAFT_WIRE_LIMITS_DEFAULT;
    return storage;
  }
  QRAFT_ASSERTF(qraft_wire_limits_check(limits, NULL) == 0,
                "wire limits out of range (bytes %u, messages %u, entries %u)",
                limits->frame_bytes_max, limits->frame_messages_max,
                limits->frame_entries_max);
  return limits;
}

/* ---- batches ------------------------------------------------------------ */

/* One block: the batch, then msgs_n messages, entries_n entries and
 * snaps_n snapshots. */
static qraft_wire_batch *batch_alloc(size_t msgs_n, size_t entries_n,
                                     size_t snaps_n) {
  /* The limits keep these products far from overflow. */
  size_t bytes = sizeof(qraft_wire_batch) + msgs_n * sizeof(qraft_message) +
                 entries_n * sizeof(qraft_entry) +
                 snaps_n * sizeof(qraft_snapshot);
  qraft_wire_batch *b = calloc(1, bytes);
  if (b == NULL) {
    return NULL;
  }
  b->msgs = (qraft_message *)(b + 1);
  b->msgs_n = 0; /* counts messages as they are filled */
  return b;
}

static qraft_entry *batch_entries(qraft_wire_batch *b, size_t msgs_n) {
  return (qraft_entry *)(b->msgs + msgs_n);
}

static qraft_snapshot *batch_snaps(qraft_wire_batch *b, size_t msgs_n,
                                   size_t entries_n) {
  return (qraft_snapshot *)(batch_entries(b, msgs_n) + entries_n);
}

/* Slices to release, counted per owner so that a run of slices of one
 * buffer costs one atomic step. */
typedef struct release_run {
  qraft_buf *owner;
  uint32_t n;
} release_run;

static void release_add(release_run *r, const qraft_slice *s) {
  if (s->owner == NULL) {
    return;
  }
  if (s->owner != r->owner || r->n == UINT32_MAX) {
    qraft_buf_unref_n(r->owner, r->n);
    r->owner = s->owner;
    r->n = 0;
  }
  r->n++;
}

void qraft_wire_batch_free(qraft_wire_batch *batch) {
  if (batch == NULL) {
    return;
  }
  release_run run = {0};
  for (size_t i = 0; i < batch->msgs_n; i++) {
    const qraft_message *m = &batch->msgs[i];
    for (size_t k = 0; k < m->entries_n; k++) {
      release_add(&run, &m->entries[k].data);
      release_add(&run, &m->entries[k].context);
    }
    if (m->snapshot != NULL) {
      release_add(&run, &m->snapshot->data);
    }
    release_add(&run, &m->context);
  }
  qraft_buf_unref_n(run.owner, run.n);
  free(batch);
}

/* Decodes message i of a batch from [p, end), its entries at *entries_used
 * and its snapshot (if any) at *snaps_used of the batch's arrays. */
static int batch_fill(pb_dec *d, qraft_wire_batch *b, size_t msgs_cap,
                      size_t entries_cap, size_t snaps_cap,
                      size_t *entries_used, size_t *snaps_used,
                      const uint8_t *p, const uint8_t *end) {
  QRAFT_ASSERT(b->msgs_n < msgs_cap);
  qraft_message *m = &b->msgs[b->msgs_n++];
  m->entries = batch_entries(b, msgs_cap) + *entries_used;
  qraft_snapshot *snap = NULL;
  if (*snaps_used < snaps_cap) {
    snap = batch_snaps(b, msgs_cap, entries_cap) + *snaps_used;
  }
  int rc = qraft__wire_message_fill(d, p, end, m, entries_cap - *entries_used,
                                    snap);
  *entries_used += m->entries_n;
  if (m->snapshot != NULL) {
    (*snaps_used)++;
  }
  if (m->entries_n == 0) {
    m->entries = NULL;
  }
  b->entries_n = *entries_used;
  return rc;
}

int qraft_wire_message_decode(qraft_buf *owner, const uint8_t *data,
                              size_t len, const qraft_wire_limits *limits,
                              qraft_wire_batch **out, qraft_err *err) {
  qraft_wire_limits storage;
  limits = qraft__wire_limits(limits, &storage);
  *out = NULL;
  pb_dec d = qraft__pb_dec_init(owner, data, len, err);
  data = d.base;
  if (len > limits->frame_bytes_max) {
    return QRAFT_ERR(err, QRAFT_ELIMIT, "message of %zu bytes, limit %u", len,
                     limits->frame_bytes_max);
  }
  size_t entries_n = 0;
  bool has_snap = false;
  int rc = qraft__wire_message_count(&d, data, d.end, &entries_n, &has_snap);
  if (rc != 0) {
    return rc;
  }
  if (entries_n > limits->frame_entries_max) {
    return QRAFT_ERR(err, QRAFT_ELIMIT, "message with %zu entries, limit %u",
                     entries_n, limits->frame_entries_max);
  }
  size_t snaps_n = has_snap ? 1 : 0;
  qraft_wire_batch *b = batch_alloc(1, entries_n, snaps_n);
  if (b == NULL) {
    return QRAFT_ERR(err, -ENOMEM, "batch of 1 message, %zu entries",
                     entries_n);
  }
  size_t entries_used = 0;
  size_t snaps_used = 0;
  rc = batch_fill(&d, b, 1, entries_n, snaps_n, &entries_used, &snaps_used,
                  data, d.end);
  qraft__pb_dec_finish(&d);
  if (rc != 0) {
    qraft_wire_batch_free(b);
    return rc;
  }
  QRAFT_ASSERT(entries_used == entries_n && snaps_used == snaps_n);
  *out = b;
  return 0;
}

/* ---- frames ------------------------------------------------------------- */

static const char *const frame_fields[] = {[1] = "group_id",
                                           [2] = "messages"};
static const pb_desc frame_desc = {"Frame", frame_fields, 3};

static uint32_t le32_get(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
         (uint32_t)p[3] << 24;
}

static void le32_put(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
  p[2] = (uint8_t)(v >> 16);
  p[3] = (uint8_t)(v >> 24);
}

static uint64_t le64_get(const uint8_t *p) {
  return (uint64_t)le32_get(p) | (uint64_t)le32_get(p + 4) << 32;
}

static void le64_put(uint8_t *p, uint64_t v) {
  le32_put(p, (uint32_t)v);
  le32_put(p + 4, (uint32_t)(v >> 32));
}

int qraft_wire_frame_peek(const uint8_t *data, size_t len,
                          const qraft_wire_limits *limits, size_t *frame_bytes,
                          qraft_err *err) {
  qraft_wire_limits storage;
  limits = qraft__wire_limits(limits, &storage);
  if (len < QRAFT_WIRE_FRAME_HEADER_BYTES) {
    return QRAFT_ERR(err, QRAFT_ETRUNCATED,
                     "frame header: %zu of %d bytes", len,
                     QRAFT_WIRE_FRAME_HEADER_BYTES);
  }
  uint32_t body = le32_get(data);
  if (body == 0) {
    return QRAFT_ERR(err, QRAFT_EMALFORMED, "zero-length frame");
  }
  if (body > limits->frame_bytes_max) {
    return QRAFT_ERR(err, QRAFT_ELIMIT, "frame of %u bytes, limit %u", body,
                     limits->frame_bytes_max);
  }
  *frame_bytes = QRAFT_WIRE_FRAME_HEADER_BYTES + (size_t)body;
  return 0;
}

static size_t frame_body_size(uint64_t group_id, const qraft_message *msgs,
                              size_t msgs_n, size_t *entries_n) {
  size_t n = pb_u64_size(1, group_id);
  size_t e = 0;
  for (size_t i = 0; i < msgs_n; i++) {
    n += pb_len_size(2, qraft_wire_message_size(&msgs[i]));
    e += msgs[i].entries_n;
  }
  *entries_n = e;
  return n;
}

size_t qraft_wire_frame_size(uint64_t group_id, const qraft_message *msgs,
                             size_t msgs_n) {
  size_t entries_n = 0;
  return QRAFT_WIRE_FRAME_HEADER_BYTES +
         frame_body_size(group_id, msgs, msgs_n, &entries_n);
}

static uint8_t *frame_put(uint8_t *p, uint64_t group_id,
                          const qraft_message *msgs, size_t msgs_n,
                          size_t body) {
  le32_put(p, (uint32_t)body);
  p += QRAFT_WIRE_FRAME_HEADER_BYTES;
  p = pb_put_u64(p, 1, group_id);
  for (size_t i = 0; i < msgs_n; i++) {
    p = pb_put_len(p, 2, qraft_wire_message_size(&msgs[i]));
    p = qraft__wire_message_put(p, &msgs[i]);
  }
  return p;
}

/* The frame's body size, checked against the limits. */
static int frame_check(uint64_t group_id, const qraft_message *msgs,
                       size_t msgs_n, const qraft_wire_limits *limits,
                       size_t *body, qraft_err *err) {
  QRAFT_ASSERTF(msgs_n >= 1, "a frame holds at least one message");
  if (msgs_n > limits->frame_messages_max) {
    return QRAFT_ERR(err, QRAFT_ELIMIT, "frame of %zu messages, limit %u",
                     msgs_n, limits->frame_messages_max);
  }
  size_t entries_n = 0;
  *body = frame_body_size(group_id, msgs, msgs_n, &entries_n);
  if (entries_n > limits->frame_entries_max) {
    return QRAFT_ERR(err, QRAFT_ELIMIT, "frame of %zu entries, limit %u",
                     entries_n, limits->frame_entries_max);
  }
  if (*body > limits->frame_bytes_max) {
    return QRAFT_ERR(err, QRAFT_ELIMIT, "frame of %zu bytes, limit %u", *body,
                     limits->frame_bytes_max);
  }
  return 0;
}

int qraft_wire_frame_encode(uint64_t group_id, const qraft_message *msgs,
                            size_t msgs_n, const qraft_wire_limits *limits,
                            uint8_t *out, size_t cap, size_t *written,
                            qraft_err *err) {
  qraft_wire_limits storage;
  limits = qraft__wire_limits(limits, &storage);
  size_t body = 0;
  int rc = frame_check(group_id, msgs, msgs_n, limits, &body, err);
  if (rc != 0) {
    return rc;
  }
  size_t n = QRAFT_WIRE_FRAME_HEADER_BYTES + body;
  if (cap < n) {
    return QRAFT_ERR(err, -ENOBUFS, "frame of %zu bytes, room for %zu", n,
                     cap);
  }
  uint8_t *end = frame_put(out, group_id, msgs, msgs_n, body);
  QRAFT_ASSERTF((size_t)(end - out) == n, "wrote %zu of %zu bytes",
                (size_t)(end - out), n);
  *written = n;
  return 0;
}

int qraft_wire_frame_encode_buf(uint64_t group_id, const qraft_message *msgs,
                                size_t msgs_n, const qraft_wire_limits *limits,
                                qraft_wire_pool *pool, qraft_buf **out,
                                qraft_err *err) {
  qraft_wire_limits storage;
  limits = qraft__wire_limits(limits, &storage);
  *out = NULL;
  size_t body = 0;
  int rc = frame_check(group_id, msgs, msgs_n, limits, &body, err);
  if (rc != 0) {
    return rc;
  }
  size_t n = QRAFT_WIRE_FRAME_HEADER_BYTES + body;
  qraft_buf *b = pool != NULL ? qraft_wire_pool_get(pool, n)
                              : qraft_buf_new(n);
  if (b == NULL) {
    return QRAFT_ERR(err, -ENOMEM, "frame buffer of %zu bytes", n);
  }
  uint8_t *end = frame_put(b->data, group_id, msgs, msgs_n, body);
  QRAFT_ASSERTF((size_t)(end - b->data) == n, "wrote %zu of %zu bytes",
                (size_t)(end - b->data), n);
  b->len = n;
  *out = b;
  return 0;
}

/* First pass over a frame body: structure, and how many of each thing. */
static int frame_count(pb_dec *d, const uint8_t *p, const uint8_t *end,
                       const qraft_wire_limits *limits, size_t *msgs_n,
                       size_t *entries_n, size_t *snaps_n) {
  size_t msgs = 0;
  size_t entries = 0;
  size_t snaps = 0;
  while (p < end) {
    pb_field f;
    int rc = pb_next(d, &p, end, &frame_desc, &f);
    if (rc != 0) {
      return rc;
    }
    if (f.num != 2) {
      rc = qraft__pb_skip(d, &p, end, &f);
      if (rc != 0) {
        return rc;
      }
      continue;
    }
    const uint8_t *m = NULL;
    size_t m_len = 0;
    rc = qraft__pb_len(d, &p, end, &f, &m, &m_len);
    if (rc != 0) {
      return rc;
    }
    if (msgs == limits->frame_messages_max) {
      return QRAFT_ERR(d->err, QRAFT_ELIMIT,
                       "Frame.messages at offset %zu: more than %u messages",
                       qraft__pb_off(d, f.tag), limits->frame_messages_max);
    }
    size_t m_entries = 0;
    bool m_snap = false;
    rc = qraft__wire_message_count(d, m, m + m_len, &m_entries, &m_snap);
    if (rc != 0) {
      return QRAFT_ERR(d->err, rc, "in Frame.messages[%zu] at offset %zu",
                       msgs, qraft__pb_off(d, f.tag));
    }
    msgs++;
    entries += m_entries;
    snaps += m_snap;
    if (entries > limits->frame_entries_max) {
      return QRAFT_ERR(d->err, QRAFT_ELIMIT,
                       "Frame.messages[%zu] at offset %zu: more than %u "
                       "entries in the frame",
                       msgs - 1, qraft__pb_off(d, f.tag),
                       limits->frame_entries_max);
    }
  }
  if (msgs == 0) {
    return QRAFT_ERR(d->err, QRAFT_EMALFORMED, "frame holds no messages");
  }
  *msgs_n = msgs;
  *entries_n = entries;
  *snaps_n = snaps;
  return 0;
}

int qraft_wire_frame_decode(qraft_buf *owner, const uint8_t *data, size_t len,
                            const qraft_wire_limits *limits,
                            qraft_wire_batch **out, qraft_err *err) {
  qraft_wire_limits storage;
  limits = qraft__wire_limits(limits, &storage);
  *out = NULL;
  pb_dec d = qraft__pb_dec_init(owner, data, len, err);
  data = d.base;
  size_t frame_bytes = 0;
  int rc = qraft_wire_frame_peek(data, len, limits, &frame_bytes, err);
  if (rc != 0) {
    return rc;
  }
  if (len < frame_bytes) {
    return QRAFT_ERR(err, QRAFT_ETRUNCATED,
                     "frame announces %zu bytes, %zu present",
                     frame_bytes - QRAFT_WIRE_FRAME_HEADER_BYTES,
                     len - QRAFT_WIRE_FRAME_HEADER_BYTES);
  }
  if (len > frame_bytes) {
    return QRAFT_ERR(err, QRAFT_EMALFORMED,
                     "%zu bytes after a frame of %zu bytes", len - frame_bytes,
                     frame_bytes);
  }
  const uint8_t *body = data + QRAFT_WIRE_FRAME_HEADER_BYTES;
  size_t msgs_n = 0;
  size_t entries_n = 0;
  size_t snaps_n = 0;
  rc = frame_count(&d, body, d.end, limits, &msgs_n, &entries_n, &snaps_n);
  if (rc != 0) {
    return rc;
  }
  qraft_wire_batch *b = batch_alloc(msgs_n, entries_n, snaps_n);
  if (b == NULL) {
    return QRAFT_ERR(err, -ENOMEM, "batch of %zu messages, %zu entries",
                     msgs_n, entries_n);
  }
  size_t entries_used = 0;
  size_t snaps_used = 0;
  const uint8_t *p = body;
  while (p < d.end) {
    pb_field f;
    rc = pb_next(&d, &p, d.end, &frame_desc, &f);
    if (rc != 0) {
      goto err_free_batch;
    }
    const uint8_t *m = NULL;
    size_t m_len = 0;
    switch (f.num) {
    case 1:
      rc = pb_u64(&d, &p, d.end, &f, &b->group_id);
      break;
    case 2:
      rc = qraft__pb_len(&d, &p, d.end, &f, &m, &m_len);
      if (rc != 0) {
        break;
      }
      rc = batch_fill(&d, b, msgs_n, entries_n, snaps_n, &entries_used,
                      &snaps_used, m, m + m_len);
      if (rc != 0) {
        rc = QRAFT_ERR(err, rc, "in Frame.messages[%zu] at offset %zu",
                       b->msgs_n - 1, qraft__pb_off(&d, f.tag));
      }
      break;
    default:
      rc = qraft__pb_skip(&d, &p, d.end, &f);
      break;
    }
    if (rc != 0) {
      goto err_free_batch;
    }
  }
  qraft__pb_dec_finish(&d);
  QRAFT_ASSERT(b->msgs_n == msgs_n && entries_used == entries_n &&
               snaps_used == snaps_n);
  *out = b;
  return 0;

err_free_batch:
  qraft__pb_dec_finish(&d);
  qraft_wire_batch_free(b);
  return rc;
}

/* ---- preamble ----------------------------------------------------------- */

#define PREAMBLE_MAGIC_BYTES 4
#define PREAMBLE_CRC_AT 24
_Static_assert(PREAMBLE_CRC_AT + 4 == QRAFT_WIRE_PREAMBLE_BYTES,
               "the checksum ends the preamble");
_Static_assert(sizeof QRAFT_WIRE_MAGIC - 1 == PREAMBLE_MAGIC_BYTES,
               "four magic bytes");

void qraft_wire_preamble_encode(uint64_t cluster_id, qraft_id sender_id,
                                uint8_t out[QRAFT_WIRE_PREAMBLE_BYTES]) {
  QRAFT_ASSERT(cluster_id != 0 && sender_id != QRAFT_ID_NONE);
  memcpy(out, QRAFT_WIRE_MAGIC, PREAMBLE_MAGIC_BYTES);
  out[4] = (uint8_t)QRAFT_WIRE_VERSION;
  out[5] = (uint8_t)(QRAFT_WIRE_VERSION >> 8);
  out[6] = 0;
  out[7] = 0;
  le64_put(out + 8, cluster_id);
  le64_put(out + 16, sender_id);
  le32_put(out + PREAMBLE_CRC_AT, qraft_crc32c(0, out, PREAMBLE_CRC_AT));
}

int qraft_wire_preamble_decode(const uint8_t *data, size_t len,
                               uint64_t cluster_id, qraft_wire_preamble *out,
                               qraft_err *err) {
  size_t magic_n = len < PREAMBLE_MAGIC_BYTES ? len : PREAMBLE_MAGIC_BYTES;
  if (magic_n > 0 && memcmp(data, QRAFT_WIRE_MAGIC, magic_n) != 0) {
    char seen[2 * PREAMBLE_MAGIC_BYTES + 1] = {0};
    for (size_t i = 0; i < magic_n; i++) {
      static const char hex[] = "0123456789abcdef";
      seen[2 * i] = hex[data[i] >> 4];
      seen[2 * i + 1] = hex[data[i] & 15];
    }
    return QRAFT_ERR(err, QRAFT_EMALFORMED,
                     "preamble: bad magic %s at offset 0 (want \"%s\")", seen,
                     QRAFT_WIRE_MAGIC);
  }
  if (len < 6) {
    return QRAFT_ERR(err, QRAFT_ETRUNCATED, "preamble: %zu of %d bytes", len,
                     QRAFT_WIRE_PREAMBLE_BYTES);
  }
  uint16_t version = (uint16_t)(data[4] | data[5] << 8);
  if (version != QRAFT_WIRE_VERSION) {
    return QRAFT_ERR(err, QRAFT_EVERSION,
                     "preamble: peer speaks wire version %u, this node speaks "
                     "version %u",
                     version, QRAFT_WIRE_VERSION);
  }
  if (len < QRAFT_WIRE_PREAMBLE_BYTES) {
    return QRAFT_ERR(err, QRAFT_ETRUNCATED, "preamble: %zu of %d bytes", len,
                     QRAFT_WIRE_PREAMBLE_BYTES);
  }
  uint32_t crc = le32_get(data + PREAMBLE_CRC_AT);
  uint32_t want = qraft_crc32c(0, data, PREAMBLE_CRC_AT);
  if (crc != want) {
    return QRAFT_ERR(err, QRAFT_EMALFORMED,
                     "preamble: checksum %08x at offset %d, computed %08x",
                     crc, PREAMBLE_CRC_AT, want);
  }
  if (data[6] != 0 || data[7] != 0) {
    return QRAFT_ERR(err, QRAFT_EMALFORMED,
                     "preamble: reserved bytes at offset 6 are %02x%02x, not 0",
                     data[6], data[7]);
  }
  uint64_t peer_cluster = le64_get(data + 8);
  qraft_id sender = le64_get(data + 16);
  if (peer_cluster == 0) {
    return QRAFT_ERR(err, QRAFT_EMALFORMED,
                     "preamble: cluster id 0 at offset 8");
  }
  if (sender == QRAFT_ID_NONE) {
    return QRAFT_ERR(err, QRAFT_EMALFORMED, "preamble: sender id 0 at offset 16");
  }
  if (cluster_id != 0 && peer_cluster != cluster_id) {
    return QRAFT_ERR(err, QRAFT_ECLUSTER,
                     "preamble: peer %llu is in cluster %016llx, this node in "
                     "%016llx",
                     (unsigned long long)sender,
                     (unsigned long long)peer_cluster,
                     (unsigned long long)cluster_id);
  }
  out->version = version;
  out->cluster_id = peer_cluster;
  out->sender_id = sender;
  return 0;
}
