/*
 * codec.c: encoder and decoder of the eraftpb messages (docs/eraftpb.proto)
 * in the protobuf wire format.
 *
 * Encoding writes fields in ascending field number, proto3 style (zero
 * scalars and empty bytes are left out, lists are packed), which is what
 * protobuf-c and the other canonical encoders write: the same message gives
 * the same bytes. Decoding follows protobuf's rules (the last value of a
 * scalar wins, a repeated sub-message appends, a sub-message seen twice is
 * merged, unknown fields are skipped, packed and unpacked lists are both
 * read) with two strict additions: unknown enum values are errors, and every
 * list has a limit. Byte fields are never copied: they become slices of the
 * input. This file must never allocate; batch.c owns the memory of decoded
 * messages.
 */
#include "codec.h"

#include <qraft/assert.h>
#include <qraft/wire.h>

#include <errno.h>
#include <string.h>

/* ---- names for errors ------------------------------------------------- */

static const char *const entry_fields[] = {
    [1] = "entry_type", [2] = "term",     [3] = "index",
    [4] = "data",       [5] = "sync_log", [6] = "context"};
static const pb_desc entry_desc = {"Entry", entry_fields, 7};

static const char *const hard_state_fields[] = {
    [1] = "term", [2] = "vote", [3] = "commit"};
static const pb_desc hard_state_desc = {"HardState", hard_state_fields, 4};

static const char *const conf_state_fields[] = {
    [1] = "voters", [2] = "learners", [3] = "voters_outgoing",
    [4] = "learners_next", [5] = "auto_leave"};
static const pb_desc conf_state_desc = {"ConfState", conf_state_fields, 6};

static const char *const meta_fields[] = {
    [1] = "conf_state", [2] = "index", [3] = "term"};
static const pb_desc meta_desc = {"SnapshotMetadata", meta_fields, 4};

static const char *const snapshot_fields[] = {[1] = "data", [2] = "metadata"};
static const pb_desc snapshot_desc = {"Snapshot", snapshot_fields, 3};

static const char *const conf_change_fields[] = {
    [1] = "id", [2] = "change_type", [3] = "node_id", [4] = "context"};
static const pb_desc conf_change_desc = {"ConfChange", conf_change_fields, 5};

static const char *const single_fields[] = {[1] = "change_type",
                                            [2] = "node_id"};
static const pb_desc single_desc = {"ConfChangeSingle", single_fields, 3};

static const char *const conf_change_v2_fields[] = {
    [1] = "transition", [2] = "changes", [3] = "context"};
static const pb_desc conf_change_v2_desc = {"ConfChangeV2",
                                            conf_change_v2_fields, 4};

static const char *const message_fields[] = {
    [1] = "msg_type",   [2] = "to",
    [3] = "from",       [4] = "term",
    [5] = "log_term",   [6] = "index",
    [7] = "entries",    [8] = "commit",
    [9] = "snapshot",   [10] = "reject",
    [11] = "reject_hint", [12] = "context",
    [13] = "request_snapshot", [14] = "deprecated_priority",
    [15] = "commit_term", [16] = "priority", [100] = "alarms"};
static const pb_desc message_desc = {"Message", message_fields, 101};

/* ---- reader primitives ------------------------------------------------ */

size_t qraft__pb_off(const pb_dec *d, const uint8_t *p) {
  return (size_t)(p - d->base);
}

const char *qraft__pb_field_name(const pb_field *f) {
  if (f->num < f->desc->fields_n && f->desc->fields[f->num] != NULL) {
    return f->desc->fields[f->num];
  }
  return "unknown";
}

/* Running past `end`: the input is truncated if `end` is the input's end,
 * otherwise a nested length overflows its enclosing message. */
static int pb_past_end_code(const pb_dec *d, const uint8_t *end) {
  return end == d->end ? QRAFT_ETRUNCATED : QRAFT_EMALFORMED;
}

int qraft__pb_varint_slow(pb_dec *d, const uint8_t **pp, const uint8_t *end,
                          uint64_t *v, const pb_field *f, const char *what) {
  const uint8_t *p = *pp;
  size_t n = 0;
  int rc = qraft_varint_decode(p, (size_t)(end - p), v, &n);
  if (rc == 0) {
    *pp = p + n;
    return 0;
  }
  if (rc == QRAFT_ETRUNCATED) {
    return QRAFT_ERR(d->err, pb_past_end_code(d, end),
                     "%s.%s (field %u) at offset %zu: %s varint runs past the "
                     "end of the %s",
                     f->desc->name, qraft__pb_field_name(f), f->num,
                     qraft__pb_off(d, p), what,
                     end == d->end ? "input" : "enclosing message");
  }
  return QRAFT_ERR(d->err, QRAFT_EMALFORMED,
                   "%s.%s (field %u) at offset %zu: %s varint longer than 10 "
                   "bytes or above 64 bits",
                   f->desc->name, qraft__pb_field_name(f), f->num,
                   qraft__pb_off(d, p), what);
}

static const char *pb_wt_name(unsigned wt) {
  switch (wt) {
  case PB_VARINT:
    return "varint";
  case PB_I64:
    return "fixed64";
  case PB_LEN:
    return "length-delimited";
  case PB_SGROUP:
    return "start-group";
  case PB_EGROUP:
    return "end-group";
  case PB_I32:
    return "fixed32";
  default:
    return "invalid";
  }
}

int qraft__pb_wire_type_err(pb_dec *d, const pb_field *f, unsigned want) {
  return QRAFT_ERR(d->err, QRAFT_EMALFORMED,
                   "%s.%s (field %u) at offset %zu: wire type %u (%s), want "
                   "%u (%s)",
                   f->desc->name, qraft__pb_field_name(f), f->num,
                   qraft__pb_off(d, f->tag), f->wt, pb_wt_name(f->wt), want,
                   pb_wt_name(want));
}

int qraft__pb_enum_err(pb_dec *d, const pb_field *f, uint64_t v) {
  return QRAFT_ERR(d->err, QRAFT_EMALFORMED,
                   "%s.%s (field %u) at offset %zu: unknown enum value %llu",
                   f->desc->name, qraft__pb_field_name(f), f->num,
                   qraft__pb_off(d, f->tag), (unsigned long long)v);
}

int qraft__pb_next(pb_dec *d, const uint8_t **pp, const uint8_t *end,
                   const pb_desc *desc, pb_field *f) {
  const uint8_t *p = *pp;
  uint64_t tag = 0;
  f->desc = desc;
  f->tag = p;
  f->num = 0;
  f->wt = 0;
  int rc = pb_varint(d, pp, end, &tag, f, "tag");
  if (rc != 0) {
    return rc;
  }
  f->wt = (unsigned)(tag & 7);
  if (tag >> 3 == 0 || tag >> 3 > 0x1fffffff) {
    return QRAFT_ERR(d->err, QRAFT_EMALFORMED,
                     "%s at offset %zu: field number %llu out of range",
                     desc->name, qraft__pb_off(d, p),
                     (unsigned long long)(tag >> 3));
  }
  f->num = (uint32_t)(tag >> 3);
  return 0;
}

int qraft__pb_len_err(pb_dec *d, const uint8_t *p, const uint8_t *end,
                      const pb_field *f, uint64_t n) {
  return QRAFT_ERR(d->err, pb_past_end_code(d, end),
                   "%s.%s (field %u) at offset %zu: length %llu runs past "
                   "the end of the %s (%zu bytes left)",
                   f->desc->name, qraft__pb_field_name(f), f->num,
                   qraft__pb_off(d, f->tag), (unsigned long long)n,
                   end == d->end ? "input" : "enclosing message",
                   (size_t)(end - p));
}

static int pb_skip_fixed(pb_dec *d, const uint8_t **pp, const uint8_t *end,
                         const pb_field *f, size_t n) {
  if ((size_t)(end - *pp) < n) {
    return QRAFT_ERR(d->err, pb_past_end_code(d, end),
                     "%s.%s (field %u) at offset %zu: %zu-byte value runs past "
                     "the end (%zu bytes left)",
                     f->desc->name, qraft__pb_field_name(f), f->num,
                     qraft__pb_off(d, f->tag), n, (size_t)(end - *pp));
  }
  *pp += n;
  return 0;
}

/* Skips one value of wire type f->wt (an unknown field). */
static int pb_skip_value(pb_dec *d, const uint8_t **pp, const uint8_t *end,
                         const pb_field *f) {
  uint64_t v = 0;
  const uint8_t *val = NULL;
  size_t len = 0;
  switch (f->wt) {
  case PB_VARINT:
    return pb_varint(d, pp, end, &v, f, "value");
  case PB_I64:
    return pb_skip_fixed(d, pp, end, f, 8);
  case PB_LEN:
    return qraft__pb_len(d, pp, end, f, &val, &len);
  case PB_I32:
    return pb_skip_fixed(d, pp, end, f, 4);
  default:
    return QRAFT_ERR(d->err, QRAFT_EMALFORMED,
                     "%s at offset %zu: field %u has wire type %u (%s)",
                     f->desc->name, qraft__pb_off(d, f->tag), f->num, f->wt,
                     pb_wt_name(f->wt));
  }
}

int qraft__pb_skip(pb_dec *d, const uint8_t **pp, const uint8_t *end,
                   const pb_field *f) {
  if (f->wt != PB_SGROUP) {
    return pb_skip_value(d, pp, end, f);
  }
  /* A group: fields up to the end-group tag of the same number, possibly
   * holding groups of their own. */
  uint32_t open[PB_GROUP_DEPTH_MAX];
  uint32_t depth = 0;
  open[depth++] = f->num;
  while (depth > 0) {
    if (*pp >= end) {
      return QRAFT_ERR(d->err, pb_past_end_code(d, end),
                       "%s at offset %zu: group %u not closed before the end",
                       f->desc->name, qraft__pb_off(d, f->tag), open[depth - 1]);
    }
    pb_field g;
    int rc = qraft__pb_next(d, pp, end, f->desc, &g);
    if (rc != 0) {
      return rc;
    }
    if (g.wt == PB_EGROUP) {
      if (g.num != open[depth - 1]) {
        return QRAFT_ERR(d->err, QRAFT_EMALFORMED,
                         "%s at offset %zu: end of group %u inside group %u",
                         f->desc->name, qraft__pb_off(d, g.tag), g.num,
                         open[depth - 1]);
      }
      depth--;
    } else if (g.wt == PB_SGROUP) {
      if (depth == PB_GROUP_DEPTH_MAX) {
        return QRAFT_ERR(d->err, QRAFT_EMALFORMED,
                         "%s at offset %zu: groups nested deeper than %d",
                         f->desc->name, qraft__pb_off(d, g.tag),
                         PB_GROUP_DEPTH_MAX);
      }
      open[depth++] = g.num;
    } else {
      rc = pb_skip_value(d, pp, end, &g);
      if (rc != 0) {
        return rc;
      }
    }
  }
  return 0;
}

/* A length-delimited sub-message: [*sub, *sub_end). */
static int pb_sub(pb_dec *d, const uint8_t **pp, const uint8_t *end,
                  const pb_field *f, const uint8_t **sub,
                  const uint8_t **sub_end) {
  size_t len = 0;
  int rc = qraft__pb_len(d, pp, end, f, sub, &len);
  if (rc != 0) {
    return rc;
  }
  *sub_end = *sub + len;
  return 0;
}

/* Adds context naming the sub-message a failure happened in. */
static int pb_in(pb_dec *d, int rc, const pb_field *f) {
  return QRAFT_ERR(d->err, rc, "in %s.%s (field %u) at offset %zu",
                   f->desc->name, qraft__pb_field_name(f), f->num,
                   qraft__pb_off(d, f->tag));
}

/* A repeated uint64 (packed or not) appended to ids[*n], at most cap. */
static int pb_ids(pb_dec *d, const uint8_t **pp, const uint8_t *end,
                  const pb_field *f, qraft_id *ids, uint32_t *n,
                  uint32_t cap) {
  const uint8_t *p = NULL;
  const uint8_t *list_end = NULL;
  if (f->wt == PB_VARINT) {
    list_end = NULL; /* one value */
  } else if (f->wt == PB_LEN) {
    int rc = pb_sub(d, pp, end, f, &p, &list_end);
    if (rc != 0) {
      return rc;
    }
  } else {
    return qraft__pb_wire_type_err(d, f, PB_LEN);
  }
  if (list_end == NULL) {
    uint64_t v = 0;
    int rc = pb_varint(d, pp, end, &v, f, "value");
    if (rc != 0) {
      return rc;
    }
    if (*n == cap) {
      goto err_limit;
    }
    ids[(*n)++] = v;
    return 0;
  }
  while (p < list_end) {
    uint64_t v = 0;
    int rc = pb_varint(d, &p, list_end, &v, f, "packed value");
    if (rc != 0) {
      return rc;
    }
    if (*n == cap) {
      goto err_limit;
    }
    ids[(*n)++] = v;
  }
  return 0;
err_limit:
  return QRAFT_ERR(d->err, QRAFT_ELIMIT,
                   "%s.%s (field %u) at offset %zu: more than %u ids",
                   f->desc->name, qraft__pb_field_name(f), f->num,
                   qraft__pb_off(d, f->tag), cap);
}

/* ---- Entry ------------------------------------------------------------- */

size_t qraft_wire_entry_size(const qraft_entry *e) {
  QRAFT_ASSERTF((unsigned)e->type <= QRAFT_ENTRY_TYPE_MAX, "entry type %d",
                (int)e->type);
  return pb_u64_size(1, (uint64_t)e->type) + pb_u64_size(2, e->term) +
         pb_u64_size(3, e->index) + pb_bytes_size(4, e->data.len) +
         pb_u64_size(5, e->sync_log) + pb_bytes_size(6, e->context.len);
}

static uint8_t *entry_put(uint8_t *p, const qraft_entry *e) {
  p = pb_put_u64(p, 1, (uint64_t)e->type);
  p = pb_put_u64(p, 2, e->term);
  p = pb_put_u64(p, 3, e->index);
  p = pb_put_bytes(p, 4, e->data.data, e->data.len);
  p = pb_put_u64(p, 5, e->sync_log);
  p = pb_put_bytes(p, 6, e->context.data, e->context.len);
  return p;
}

static int entry_dec(pb_dec *d, const uint8_t *p, const uint8_t *end,
                     qraft_entry *e) {
  while (p < end) {
    pb_field f;
    int rc = pb_next(d, &p, end, &entry_desc, &f);
    if (rc != 0) {
      return rc;
    }
    uint32_t type = 0;
    switch (f.num) {
    case 1:
      rc = pb_enum(d, &p, end, &f, QRAFT_ENTRY_TYPE_MAX, &type);
      e->type = (qraft_entry_type)type;
      break;
    case 2:
      rc = pb_u64(d, &p, end, &f, &e->term);
      break;
    case 3:
      rc = pb_u64(d, &p, end, &f, &e->index);
      break;
    case 4:
      rc = pb_slice(d, &p, end, &f, &e->data);
      break;
    case 5:
      rc = pb_bool(d, &p, end, &f, &e->sync_log);
      break;
    case 6:
      rc = pb_slice(d, &p, end, &f, &e->context);
      break;
    default:
      rc = qraft__pb_skip(d, &p, end, &f);
      break;
    }
    if (rc != 0) {
      return rc;
    }
  }
  return 0;
}

void qraft_wire_entry_release(qraft_entry *e) {
  if (e->data.owner != NULL) {
    qraft_slice_release(&e->data);
  }
  if (e->context.owner != NULL) {
    qraft_slice_release(&e->context);
  }
}

/* ---- HardState -------------------------------------------------------- */

size_t qraft_wire_hard_state_size(const qraft_hard_state *hs) {
  return pb_u64_size(1, hs->term) + pb_u64_size(2, hs->vote) +
         pb_u64_size(3, hs->commit);
}

static uint8_t *hard_state_put(uint8_t *p, const qraft_hard_state *hs) {
  p = pb_put_u64(p, 1, hs->term);
  p = pb_put_u64(p, 2, hs->vote);
  p = pb_put_u64(p, 3, hs->commit);
  return p;
}

static int hard_state_dec(pb_dec *d, const uint8_t *p, const uint8_t *end,
                          qraft_hard_state *hs) {
  while (p < end) {
    pb_field f;
    int rc = pb_next(d, &p, end, &hard_state_desc, &f);
    if (rc != 0) {
      return rc;
    }
    switch (f.num) {
    case 1:
      rc = pb_u64(d, &p, end, &f, &hs->term);
      break;
    case 2:
      rc = pb_u64(d, &p, end, &f, &hs->vote);
      break;
    case 3:
      rc = pb_u64(d, &p, end, &f, &hs->commit);
      break;
    default:
      rc = qraft__pb_skip(d, &p, end, &f);
      break;
    }
    if (rc != 0) {
      return rc;
    }
  }
  return 0;
}

/* ---- ConfState -------------------------------------------------------- */

static size_t ids_body_size(const qraft_id *ids, uint32_t n) {
  size_t s = 0;
  for (uint32_t i = 0; i < n; i++) {
    s += qraft_varint_size(ids[i]);
  }
  return s;
}

static size_t ids_size(uint32_t field, const qraft_id *ids, uint32_t n) {
  QRAFT_ASSERTF(n <= QRAFT_CONF_NODES_MAX, "%u ids", n);
  return n == 0 ? 0 : pb_len_size(field, ids_body_size(ids, n));
}

static uint8_t *ids_put(uint8_t *p, uint32_t field, const qraft_id *ids,
                        uint32_t n) {
  if (n == 0) {
    return p;
  }
  p = pb_put_len(p, field, ids_body_size(ids, n));
  for (uint32_t i = 0; i < n; i++) {
    p = pb_put_varint(p, ids[i]);
  }
  return p;
}

size_t qraft_wire_conf_state_size(const qraft_conf_state *cs) {
  return ids_size(1, cs->voters, cs->voters_n) +
         ids_size(2, cs->learners, cs->learners_n) +
         ids_size(3, cs->voters_outgoing, cs->voters_outgoing_n) +
         ids_size(4, cs->learners_next, cs->learners_next_n) +
         pb_u64_size(5, cs->auto_leave);
}

static uint8_t *conf_state_put(uint8_t *p, const qraft_conf_state *cs) {
  p = ids_put(p, 1, cs->voters, cs->voters_n);
  p = ids_put(p, 2, cs->learners, cs->learners_n);
  p = ids_put(p, 3, cs->voters_outgoing, cs->voters_outgoing_n);
  p = ids_put(p, 4, cs->learners_next, cs->learners_next_n);
  p = pb_put_u64(p, 5, cs->auto_leave);
  return p;
}

static int conf_state_dec(pb_dec *d, const uint8_t *p, const uint8_t *end,
                          qraft_conf_state *cs) {
  while (p < end) {
    pb_field f;
    int rc = pb_next(d, &p, end, &conf_state_desc, &f);
    if (rc != 0) {
      return rc;
    }
    switch (f.num) {
    case 1:
      rc = pb_ids(d, &p, end, &f, cs->voters, &cs->voters_n,
                  QRAFT_CONF_NODES_MAX);
      break;
    case 2:
      rc = pb_ids(d, &p, end, &f, cs->learners, &cs->learners_n,
                  QRAFT_CONF_NODES_MAX);
      break;
    case 3:
      rc = pb_ids(d, &p, end, &f, cs->voters_outgoing, &cs->voters_outgoing_n,
                  QRAFT_CONF_NODES_MAX);
      break;
    case 4:
      rc = pb_ids(d, &p, end, &f, cs->learners_next, &cs->learners_next_n,
                  QRAFT_CONF_NODES_MAX);
      break;
    case 5:
      rc = pb_bool(d, &p, end, &f, &cs->auto_leave);
      break;
    default:
      rc = qraft__pb_skip(d, &p, end, &f);
      break;
    }
    if (rc != 0) {
      return rc;
    }
  }
  return 0;
}

/* ---- SnapshotMetadata and Snapshot ------------------------------------ */

/* An embedded sub-message is written only when it is not empty: the C types
 * embed it, so "absent" and "empty" are the same value. */
static size_t sub_size(uint32_t field, size_t body) {
  return body == 0 ? 0 : pb_len_size(field, body);
}

size_t qraft_wire_snapshot_meta_size(const qraft_snapshot_meta *meta) {
  return sub_size(1, qraft_wire_conf_state_size(&meta->conf_state)) +
         pb_u64_size(2, meta->index) + pb_u64_size(3, meta->term);
}

static uint8_t *meta_put(uint8_t *p, const qraft_snapshot_meta *meta) {
  size_t cs = qraft_wire_conf_state_size(&meta->conf_state);
  if (cs != 0) {
    p = pb_put_len(p, 1, cs);
    p = conf_state_put(p, &meta->conf_state);
  }
  p = pb_put_u64(p, 2, meta->index);
  p = pb_put_u64(p, 3, meta->term);
  return p;
}

static int meta_dec(pb_dec *d, const uint8_t *p, const uint8_t *end,
                    qraft_snapshot_meta *meta) {
  while (p < end) {
    pb_field f;
    int rc = pb_next(d, &p, end, &meta_desc, &f);
    if (rc != 0) {
      return rc;
    }
    const uint8_t *sub = NULL;
    const uint8_t *sub_end = NULL;
    switch (f.num) {
    case 1:
      rc = pb_sub(d, &p, end, &f, &sub, &sub_end);
      if (rc == 0) {
        rc = conf_state_dec(d, sub, sub_end, &meta->conf_state);
        if (rc != 0) {
          rc = pb_in(d, rc, &f);
        }
      }
      break;
    case 2:
      rc = pb_u64(d, &p, end, &f, &meta->index);
      break;
    case 3:
      rc = pb_u64(d, &p, end, &f, &meta->term);
      break;
    default:
      rc = qraft__pb_skip(d, &p, end, &f);
      break;
    }
    if (rc != 0) {
      return rc;
    }
  }
  return 0;
}

size_t qraft_wire_snapshot_size(const qraft_snapshot *snap) {
  return pb_bytes_size(1, snap->data.len) +
         sub_size(2, qraft_wire_snapshot_meta_size(&snap->metadata));
}

static uint8_t *snapshot_put(uint8_t *p, const qraft_snapshot *snap) {
  p = pb_put_bytes(p, 1, snap->data.data, snap->data.len);
  size_t ms = qraft_wire_snapshot_meta_size(&snap->metadata);
  if (ms != 0) {
    p = pb_put_len(p, 2, ms);
    p = meta_put(p, &snap->metadata);
  }
  return p;
}

static int snapshot_dec(pb_dec *d, const uint8_t *p, const uint8_t *end,
                        qraft_snapshot *snap) {
  while (p < end) {
    pb_field f;
    int rc = pb_next(d, &p, end, &snapshot_desc, &f);
    if (rc != 0) {
      return rc;
    }
    const uint8_t *sub = NULL;
    const uint8_t *sub_end = NULL;
    switch (f.num) {
    case 1:
      rc = pb_slice(d, &p, end, &f, &snap->data);
      break;
    case 2:
      rc = pb_sub(d, &p, end, &f, &sub, &sub_end);
      if (rc == 0) {
        rc = meta_dec(d, sub, sub_end, &snap->metadata);
        if (rc != 0) {
          rc = pb_in(d, rc, &f);
        }
      }
      break;
    default:
      rc = qraft__pb_skip(d, &p, end, &f);
      break;
    }
    if (rc != 0) {
      return rc;
    }
  }
  return 0;
}

void qraft_wire_snapshot_release(qraft_snapshot *snap) {
  qraft_slice_release(&snap->data);
}

/* ---- ConfChange, ConfChangeSingle, ConfChangeV2 ------------------------ */

#define CONF_CHANGE_TYPE_MAX QRAFT_CONF_ADD_LEARNER_NODE
#define CONF_TRANSITION_MAX QRAFT_CONF_TRANSITION_EXPLICIT

size_t qraft_wire_conf_change_size(const qraft_conf_change *cc) {
  QRAFT_ASSERTF((unsigned)cc->change_type <= CONF_CHANGE_TYPE_MAX,
                "conf change type %d", (int)cc->change_type);
  return pb_u64_size(1, cc->id) + pb_u64_size(2, (uint64_t)cc->change_type) +
         pb_u64_size(3, cc->node_id) + pb_bytes_size(4, cc->context.len);
}

static uint8_t *conf_change_put(uint8_t *p, const qraft_conf_change *cc) {
  p = pb_put_u64(p, 1, cc->id);
  p = pb_put_u64(p, 2, (uint64_t)cc->change_type);
  p = pb_put_u64(p, 3, cc->node_id);
  p = pb_put_bytes(p, 4, cc->context.data, cc->context.len);
  return p;
}

static int conf_change_dec(pb_dec *d, const uint8_t *p, const uint8_t *end,
                           qraft_conf_change *cc) {
  while (p < end) {
    pb_field f;
    int rc = pb_next(d, &p, end, &conf_change_desc, &f);
    if (rc != 0) {
      return rc;
    }
    uint32_t type = 0;
    switch (f.num) {
    case 1:
      rc = pb_u64(d, &p, end, &f, &cc->id);
      break;
    case 2:
      rc = pb_enum(d, &p, end, &f, CONF_CHANGE_TYPE_MAX, &type);
      cc->change_type = (qraft_conf_change_type)type;
      break;
    case 3:
      rc = pb_u64(d, &p, end, &f, &cc->node_id);
      break;
    case 4:
      rc = pb_slice(d, &p, end, &f, &cc->context);
      break;
    default:
      rc = qraft__pb_skip(d, &p, end, &f);
      break;
    }
    if (rc != 0) {
      return rc;
    }
  }
  return 0;
}

void qraft_wire_conf_change_release(qraft_conf_change *cc) {
  qraft_slice_release(&cc->context);
}

size_t qraft_wire_conf_change_single_size(const qraft_conf_change_single *s) {
  QRAFT_ASSERTF((unsigned)s->change_type <= CONF_CHANGE_TYPE_MAX,
                "conf change type %d", (int)s->change_type);
  return pb_u64_size(1, (uint64_t)s->change_type) +
         pb_u64_size(2, s->node_id);
}

static uint8_t *single_put(uint8_t *p, const qraft_conf_change_single *s) {
  p = pb_put_u64(p, 1, (uint64_t)s->change_type);
  p = pb_put_u64(p, 2, s->node_id);
  return p;
}

static int single_dec(pb_dec *d, const uint8_t *p, const uint8_t *end,
                      qraft_conf_change_single *s) {
  while (p < end) {
    pb_field f;
    int rc = pb_next(d, &p, end, &single_desc, &f);
    if (rc != 0) {
      return rc;
    }
    uint32_t type = 0;
    switch (f.num) {
    case 1:
      rc = pb_enum(d, &p, end, &f, CONF_CHANGE_TYPE_MAX, &type);
      s->change_type = (qraft_conf_change_type)type;
      break;
    case 2:
      rc = pb_u64(d, &p, end, &f, &s->node_id);
      break;
    default:
      rc = qraft__pb_skip(d, &p, end, &f);
      break;
    }
    if (rc != 0) {
      return rc;
    }
  }
  return 0;
}

size_t qraft_wire_conf_change_v2_size(const qraft_conf_change_v2 *cc) {
  QRAFT_ASSERTF((unsigned)cc->transition <= CONF_TRANSITION_MAX,
                "transition %d", (int)cc->transition);
  QRAFT_ASSERTF(cc->changes_n <= QRAFT_CONF_CHANGES_MAX, "%u changes",
                cc->changes_n);
  size_t n = pb_u64_size(1, (uint64_t)cc->transition);
  for (uint32_t i = 0; i < cc->changes_n; i++) {
    n += pb_len_size(2, qraft_wire_conf_change_single_size(&cc->changes[i]));
  }
  return n + pb_bytes_size(3, cc->context.len);
}

static uint8_t *conf_change_v2_put(uint8_t *p,
                                   const qraft_conf_change_v2 *cc) {
  p = pb_put_u64(p, 1, (uint64_t)cc->transition);
  for (uint32_t i = 0; i < cc->changes_n; i++) {
    p = pb_put_len(p, 2, qraft_wire_conf_change_single_size(&cc->changes[i]));
    p = single_put(p, &cc->changes[i]);
  }
  p = pb_put_bytes(p, 3, cc->context.data, cc->context.len);
  return p;
}

static int conf_change_v2_dec(pb_dec *d, const uint8_t *p, const uint8_t *end,
                              qraft_conf_change_v2 *cc) {
  while (p < end) {
    pb_field f;
    int rc = pb_next(d, &p, end, &conf_change_v2_desc, &f);
    if (rc != 0) {
      return rc;
    }
    uint32_t type = 0;
    const uint8_t *sub = NULL;
    const uint8_t *sub_end = NULL;
    switch (f.num) {
    case 1:
      rc = pb_enum(d, &p, end, &f, CONF_TRANSITION_MAX, &type);
      cc->transition = (qraft_conf_transition)type;
      break;
    case 2:
      rc = pb_sub(d, &p, end, &f, &sub, &sub_end);
      if (rc != 0) {
        break;
      }
      if (cc->changes_n == QRAFT_CONF_CHANGES_MAX) {
        rc = QRAFT_ERR(d->err, QRAFT_ELIMIT,
                       "ConfChangeV2.changes (field 2) at offset %zu: more "
                       "than %d changes",
                       qraft__pb_off(d, f.tag), QRAFT_CONF_CHANGES_MAX);
        break;
      }
      rc = single_dec(d, sub, sub_end, &cc->changes[cc->changes_n]);
      if (rc != 0) {
        rc = pb_in(d, rc, &f);
        break;
      }
      cc->changes_n++;
      break;
    case 3:
      rc = pb_slice(d, &p, end, &f, &cc->context);
      break;
    default:
      rc = qraft__pb_skip(d, &p, end, &f);
      break;
    }
    if (rc != 0) {
      return rc;
    }
  }
  return 0;
}

void qraft_wire_conf_change_v2_release(qraft_conf_change_v2 *cc) {
  qraft_slice_release(&cc->context);
}

/* ---- Message ------------------------------------------------------------ */

static size_t message_entries_size(const qraft_message *m) {
  size_t n = 0;
  for (size_t i = 0; i < m->entries_n; i++) {
    n += pb_len_size(7, qraft_wire_entry_size(&m->entries[i]));
  }
  return n;
}

size_t qraft_wire_message_size(const qraft_message *m) {
  QRAFT_ASSERTF((unsigned)m->type <= QRAFT_MSG_TYPE_MAX, "message type %d",
                (int)m->type);
  QRAFT_ASSERT(m->entries_n == 0 || m->entries != NULL);
  size_t n = pb_u64_size(1, (uint64_t)m->type) + pb_u64_size(2, m->to) +
             pb_u64_size(3, m->from) + pb_u64_size(4, m->term) +
             pb_u64_size(5, m->log_term) + pb_u64_size(6, m->index) +
             message_entries_size(m) + pb_u64_size(8, m->commit);
  if (m->snapshot != NULL) {
    n += pb_len_size(9, qraft_wire_snapshot_size(m->snapshot));
  }
  return n + pb_u64_size(10, m->reject) + pb_u64_size(11, m->reject_hint) +
         pb_bytes_size(12, m->context.len) +
         pb_u64_size(13, m->request_snapshot) +
         pb_u64_size(14, m->deprecated_priority) +
         pb_u64_size(15, m->commit_term) +
         pb_u64_size(16, (uint64_t)m->priority) + pb_u64_size(100, m->alarms);
}

uint8_t *qraft__wire_message_put(uint8_t *p, const qraft_message *m) {
  p = pb_put_u64(p, 1, (uint64_t)m->type);
  p = pb_put_u64(p, 2, m->to);
  p = pb_put_u64(p, 3, m->from);
  p = pb_put_u64(p, 4, m->term);
  p = pb_put_u64(p, 5, m->log_term);
  p = pb_put_u64(p, 6, m->index);
  for (size_t i = 0; i < m->entries_n; i++) {
    p = pb_put_len(p, 7, qraft_wire_entry_size(&m->entries[i]));
    p = entry_put(p, &m->entries[i]);
  }
  p = pb_put_u64(p, 8, m->commit);
  if (m->snapshot != NULL) {
    p = pb_put_len(p, 9, qraft_wire_snapshot_size(m->snapshot));
    p = snapshot_put(p, m->snapshot);
  }
  p = pb_put_u64(p, 10, m->reject);
  p = pb_put_u64(p, 11, m->reject_hint);
  p = pb_put_bytes(p, 12, m->context.data, m->context.len);
  p = pb_put_u64(p, 13, m->request_snapshot);
  p = pb_put_u64(p, 14, m->deprecated_priority);
  p = pb_put_u64(p, 15, m->commit_term);
  p = pb_put_u64(p, 16, (uint64_t)m->priority);
  p = pb_put_u64(p, 100, m->alarms);
  return p;
}

int qraft__wire_message_count(pb_dec *d, const uint8_t *p, const uint8_t *end,
                              size_t *entries_n, bool *has_snapshot) {
  size_t n = 0;
  bool snap = false;
  while (p < end) {
    pb_field f;
    int rc = pb_next(d, &p, end, &message_desc, &f);
    if (rc != 0) {
      return rc;
    }
    if (f.wt == PB_LEN) {
      const uint8_t *val = NULL;
      size_t len = 0;
      rc = qraft__pb_len(d, &p, end, &f, &val, &len);
      n += f.num == 7;
      snap |= f.num == 9;
    } else if (f.wt == PB_VARINT) {
      uint64_t v = 0;
      rc = pb_varint(d, &p, end, &v, &f, "value");
    } else {
      rc = qraft__pb_skip(d, &p, end, &f);
    }
    if (rc != 0) {
      return rc;
    }
  }
  *entries_n = n;
  *has_snapshot = snap;
  return 0;
}

int qraft__wire_message_fill(pb_dec *d, const uint8_t *p, const uint8_t *end,
                             qraft_message *m, size_t entries_cap,
                             qraft_snapshot *snap) {
  while (p < end) {
    pb_field f;
    int rc = pb_next(d, &p, end, &message_desc, &f);
    if (rc != 0) {
      return rc;
    }
    uint32_t type = 0;
    uint64_t u = 0;
    const uint8_t *sub = NULL;
    const uint8_t *sub_end = NULL;
    switch (f.num) {
    case 1:
      rc = pb_enum(d, &p, end, &f, QRAFT_MSG_TYPE_MAX, &type);
      m->type = (qraft_msg_type)type;
      break;
    case 2:
      rc = pb_u64(d, &p, end, &f, &m->to);
      break;
    case 3:
      rc = pb_u64(d, &p, end, &f, &m->from);
      break;
    case 4:
      rc = pb_u64(d, &p, end, &f, &m->term);
      break;
    case 5:
      rc = pb_u64(d, &p, end, &f, &m->log_term);
      break;
    case 6:
      rc = pb_u64(d, &p, end, &f, &m->index);
      break;
    case 7:
      rc = pb_sub(d, &p, end, &f, &sub, &sub_end);
      if (rc != 0) {
        break;
      }
      /* The counting pass saw the same tags. */
      QRAFT_ASSERTF(m->entries_n < entries_cap, "entry %zu of %zu",
                    m->entries_n, entries_cap);
      rc = entry_dec(d, sub, sub_end, &m->entries[m->entries_n]);
      /* Counted even on failure, so that its slices are released. */
      m->entries_n++;
      if (rc != 0) {
        rc = QRAFT_ERR(d->err, rc, "in Message.entries[%zu] at offset %zu",
                       m->entries_n - 1, qraft__pb_off(d, f.tag));
      }
      break;
    case 8:
      rc = pb_u64(d, &p, end, &f, &m->commit);
      break;
    case 9:
      rc = pb_sub(d, &p, end, &f, &sub, &sub_end);
      if (rc != 0) {
        break;
      }
      QRAFT_ASSERT(snap != NULL);
      m->snapshot = snap; /* a second occurrence merges into the first */
      rc = snapshot_dec(d, sub, sub_end, snap);
      if (rc != 0) {
        rc = pb_in(d, rc, &f);
      }
      break;
    case 10:
      rc = pb_bool(d, &p, end, &f, &m->reject);
      break;
    case 11:
      rc = pb_u64(d, &p, end, &f, &m->reject_hint);
      break;
    case 12:
      rc = pb_slice(d, &p, end, &f, &m->context);
      break;
    case 13:
      rc = pb_u64(d, &p, end, &f, &m->request_snapshot);
      break;
    case 14:
      rc = pb_u64(d, &p, end, &f, &m->deprecated_priority);
      break;
    case 15:
      rc = pb_u64(d, &p, end, &f, &m->commit_term);
      break;
    case 16:
      rc = pb_u64(d, &p, end, &f, &u);
      m->priority = (int64_t)u;
      break;
    case 100:
      rc = pb_u64(d, &p, end, &f, &u);
      m->alarms = (uint32_t)u;
      break;
    default:
      rc = qraft__pb_skip(d, &p, end, &f);
      break;
    }
    if (rc != 0) {
      return rc;
    }
  }
  return 0;
}

/* ---- public encode and decode wrappers -------------------------------- */

/* The encoder wrote exactly the size it announced. */
static int encode_done(const uint8_t *out, const uint8_t *end, size_t n,
                       size_t *written) {
  QRAFT_ASSERTF((size_t)(end - out) == n, "wrote %zu of %zu bytes",
                (size_t)(end - out), n);
  *written = n;
  return 0;
}

int qraft_wire_entry_encode(const qraft_entry *e, uint8_t *out, size_t cap,
                            size_t *written) {
  size_t n = qraft_wire_entry_size(e);
  if (cap < n) {
    return -ENOBUFS;
  }
  return encode_done(out, entry_put(out, e), n, written);
}

int qraft_wire_hard_state_encode(const qraft_hard_state *hs,
                                 uint8_t *out, size_t cap,
                                 size_t *written) {
  size_t n = qraft_wire_hard_state_size(hs);
  if (cap < n) {
    return -ENOBUFS;
  }
  return encode_done(out, hard_state_put(out, hs), n, written);
}

int qraft_wire_conf_state_encode(const qraft_conf_state *cs,
                                 uint8_t *out, size_t cap,
                                 size_t *written) {
  size_t n = qraft_wire_conf_state_size(cs);
  if (cap < n) {
    return -ENOBUFS;
  }
  return encode_done(out, conf_state_put(out, cs), n, written);
}

int qraft_wire_snapshot_meta_encode(const qraft_snapshot_meta *meta,
                                    uint8_t *out, size_t cap,
                                    size_t *written) {
  size_t n = qraft_wire_snapshot_meta_size(meta);
  if (cap < n) {
    return -ENOBUFS;
  }
  return encode_done(out, meta_put(out, meta), n, written);
}

int qraft_wire_snapshot_encode(const qraft_snapshot *snap,
                               uint8_t *out, size_t cap,
                               size_t *written) {
  size_t n = qraft_wire_snapshot_size(snap);
  if (cap < n) {
    return -ENOBUFS;
  }
  return encode_done(out, snapshot_put(out, snap), n, written);
}

int qraft_wire_conf_change_encode(const qraft_conf_change *cc,
                                  uint8_t *out, size_t cap,
                                  size_t *written) {
  size_t n = qraft_wire_conf_change_size(cc);
  if (cap < n) {
    return -ENOBUFS;
  }
  return encode_done(out, conf_change_put(out, cc), n, written);
}

int qraft_wire_conf_change_single_encode(const qraft_conf_change_single *s,
                                         uint8_t *out, size_t cap,
                                         size_t *written) {
  size_t n = qraft_wire_conf_change_single_size(s);
  if (cap < n) {
    return -ENOBUFS;
  }
  return encode_done(out, single_put(out, s), n, written);
}

int qraft_wire_conf_change_v2_encode(const qraft_conf_change_v2 *cc,
                                     uint8_t *out, size_t cap,
                                     size_t *written) {
  size_t n = qraft_wire_conf_change_v2_size(cc);
  if (cap < n) {
    return -ENOBUFS;
  }
  return encode_done(out, conf_change_v2_put(out, cc), n, written);
}

int qraft_wire_message_encode(const qraft_message *m, uint8_t *out, size_t cap,
                              size_t *written) {
  size_t n = qraft_wire_message_size(m);
  if (cap < n) {
    return -ENOBUFS;
  }
  return encode_done(out, qraft__wire_message_put(out, m), n, written);
}

void qraft__pb_dec_finish(pb_dec *d) {
  if (d->refs_pending == 0) {
    return;
  }
  QRAFT_ASSERT(d->owner != NULL && d->refs_pending <= UINT32_MAX);
  qraft_buf_ref_n(d->owner, (uint32_t)d->refs_pending);
  d->refs_pending = 0;
}

pb_dec qraft__pb_dec_init(qraft_buf *owner, const uint8_t *data, size_t len,
                          qraft_err *err) {
  static const uint8_t empty[1];
  if (data == NULL) {
    QRAFT_ASSERT(len == 0);
    data = empty; /* no arithmetic on NULL */
  }
  if (owner != NULL) {
    QRAFT_ASSERT(data >= owner->data && data + len <= owner->data + owner->cap);
  }
  return (pb_dec){.base = data, .end = data + len, .owner = owner, .err = err};
}

int qraft_wire_entry_decode(qraft_buf *owner, const uint8_t *data, size_t len,
                            qraft_entry *e, qraft_err *err) {
  pb_dec d = qraft__pb_dec_init(owner, data, len, err);
  memset(e, 0, sizeof *e);
  int rc = entry_dec(&d, d.base, d.end, e);
  qraft__pb_dec_finish(&d);
  if (rc != 0) {
    qraft_wire_entry_release(e);
    memset(e, 0, sizeof *e);
  }
  return rc;
}

int qraft_wire_hard_state_decode(const uint8_t *data, size_t len,
                                 qraft_hard_state *hs, qraft_err *err) {
  pb_dec d = qraft__pb_dec_init(NULL, data, len, err);
  memset(hs, 0, sizeof *hs);
  int rc = hard_state_dec(&d, d.base, d.end, hs);
  if (rc != 0) {
    memset(hs, 0, sizeof *hs);
  }
  return rc;
}

int qraft_wire_conf_state_decode(const uint8_t *data, size_t len,
                                 qraft_conf_state *cs, qraft_err *err) {
  pb_dec d = qraft__pb_dec_init(NULL, data, len, err);
  memset(cs, 0, sizeof *cs);
  int rc = conf_state_dec(&d, d.base, d.end, cs);
  if (rc != 0) {
    memset(cs, 0, sizeof *cs);
  }
  return rc;
}

int qraft_wire_snapshot_meta_decode(const uint8_t *data, size_t len,
                                    qraft_snapshot_meta *meta,
                                    qraft_err *err) {
  pb_dec d = qraft__pb_dec_init(NULL, data, len, err);
  memset(meta, 0, sizeof *meta);
  int rc = meta_dec(&d, d.base, d.end, meta);
  if (rc != 0) {
    memset(meta, 0, sizeof *meta);
  }
  return rc;
}

int qraft_wire_snapshot_decode(qraft_buf *owner, const uint8_t *data,
                               size_t len, qraft_snapshot *snap,
                               qraft_err *err) {
  pb_dec d = qraft__pb_dec_init(owner, data, len, err);
  memset(snap, 0, sizeof *snap);
  int rc = snapshot_dec(&d, d.base, d.end, snap);
  qraft__pb_dec_finish(&d);
  if (rc != 0) {
    qraft_wire_snapshot_release(snap);
    memset(snap, 0, sizeof *snap);
  }
  return rc;
}

int qraft_wire_conf_change_decode(qraft_buf *owner, const uint8_t *data,
                                  size_t len, qraft_conf_change *cc,
                                  qraft_err *err) {
  pb_dec d = qraft__pb_dec_init(owner, data, len, err);
  memset(cc, 0, sizeof *cc);
  int rc = conf_change_dec(&d, d.base, d.end, cc);
  qraft__pb_dec_finish(&d);
  if (rc != 0) {
    qraft_wire_conf_change_release(cc);
    memset(cc, 0, sizeof *cc);
  }
  return rc;
}

int qraft_wire_conf_change_single_decode(const uint8_t *data, size_t len,
                                         qraft_conf_change_single *s,
                                         qraft_err *err) {
  pb_dec d = qraft__pb_dec_init(NULL, data, len, err);
  memset(s, 0, sizeof *s);
  int rc = single_dec(&d, d.base, d.end, s);
  if (rc != 0) {
    memset(s, 0, sizeof *s);
  }
  return rc;
}

int qraft_wire_conf_change_v2_decode(qraft_buf *owner, const uint8_t *data,
                                     size_t len, qraft_conf_change_v2 *cc,
                                     qraft_err *err) {
  pb_dec d = qraft__pb_dec_init(owner, data, len, err);
  memset(cc, 0, sizeof *cc);
  int rc = conf_change_v2_dec(&d, d.base, d.end, cc);
  qraft__pb_dec_finish(&d);
  if (rc != 0) {
    qraft_wire_conf_change_v2_release(cc);
    memset(cc, 0, sizeof *cc);
  }
  return rc;
}
