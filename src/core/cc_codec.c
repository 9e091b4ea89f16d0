/*
 * cc_codec.c: the eraftpb encodings of ConfChange and ConfChangeV2, which
 * are the data of configuration entries. The core needs them to apply
 * configuration changes; it is a small, strict protobuf reader and writer
 * with no I/O.
 *
 * ConfChange:       1 id (varint), 2 change_type (enum), 3 node_id (varint),
 *                   4 context (bytes)
 * ConfChangeV2:     1 transition (enum), 2 changes (repeated message),
 *                   3 context (bytes)
 * ConfChangeSingle: 1 change_type (enum), 2 node_id (varint)
 */
#include <qraft/core.h>
#include <qraft/varint.h>

#include <string.h>

enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_I32 = 5 };

static size_t cc_tag_size(uint32_t field) {
  return qraft_varint_size((uint64_t)field << 3);
}

static size_t cc_put_tag(uint8_t *out, uint32_t field, int wt) {
  return qraft_varint_encode(out, ((uint64_t)field << 3) | (uint64_t)wt);
}

static size_t cc_single_size(const qraft_conf_change_single *s) {
  size_t n = 0;
  if (s->change_type != 0) {
    n += cc_tag_size(1) + qraft_varint_size((uint64_t)s->change_type);
  }
  if (s->node_id != 0) {
    n += cc_tag_size(2) + qraft_varint_size(s->node_id);
  }
  return n;
}

size_t qraft_conf_change_v2_size(const qraft_conf_change_v2 *cc) {
  size_t n = 0;
  if (cc->transition != 0) {
    n += cc_tag_size(1) + qraft_varint_size((uint64_t)cc->transition);
  }
  for (uint32_t i = 0; i < cc->changes_n; i++) {
    size_t s = cc_single_size(&cc->changes[i]);
    n += cc_tag_size(2) + qraft_varint_size(s) + s;
  }
  if (cc->context.len > 0) {
    n += cc_tag_size(3) + qraft_varint_size(cc->context.len) + cc->context.len;
  }
  return n;
}

size_t qraft_conf_change_v2_encode(const qraft_conf_change_v2 *cc,
                                   uint8_t *out) {
  size_t o = 0;
  if (cc->transition != 0) {
    o += cc_put_tag(out + o, 1, WT_VARINT);
    o += qraft_varint_encode(out + o, (uint64_t)cc->transition);
  }
  for (uint32_t i = 0; i < cc->changes_n; i++) {
    const qraft_conf_change_single *s = &cc->changes[i];
    o += cc_put_tag(out + o, 2, WT_LEN);
    o += qraft_varint_encode(out + o, cc_single_size(s));
    if (s->change_type != 0) {
      o += cc_put_tag(out + o, 1, WT_VARINT);
      o += qraft_varint_encode(out + o, (uint64_t)s->change_type);
    }
    if (s->node_id != 0) {
      o += cc_put_tag(out + o, 2, WT_VARINT);
      o += qraft_varint_encode(out + o, s->node_id);
    }
  }
  if (cc->context.len > 0) {
    o += cc_put_tag(out + o, 3, WT_LEN);
    o += qraft_varint_encode(out + o, cc->context.len);
    memcpy(out + o, cc->context.data, cc->context.len);
    o += cc->context.len;
  }
  return o;
}

size_t qraft_conf_change_size(const qraft_conf_change *cc) {
  size_t n = 0;
  if (cc->id != 0) {
    n += cc_tag_size(1) + qraft_varint_size(cc->id);
  }
  if (cc->change_type != 0) {
    n += cc_tag_size(2) + qraft_varint_size((uint64_t)cc->change_type);
  }
  if (cc->node_id != 0) {
    n += cc_tag_size(3) + qraft_varint_size(cc->node_id);
  }
  if (cc->context.len > 0) {
    n += cc_tag_size(4) + qraft_varint_size(cc->context.len) + cc->context.len;
  }
  return n;
}

size_t qraft_conf_change_encode(const qraft_conf_change *cc, uint8_t *out) {
  size_t o = 0;
  if (cc->id != 0) {
    o += cc_put_tag(out + o, 1, WT_VARINT);
    o += qraft_varint_encode(out + o, cc->id);
  }
  if (cc->change_type != 0) {
    o += cc_put_tag(out + o, 2, WT_VARINT);
    o += qraft_varint_encode(out + o, (uint64_t)cc->change_type);
  }
  if (cc->node_id != 0) {
    o += cc_put_tag(out + o, 3, WT_VARINT);
    o += qraft_varint_encode(out + o, cc->node_id);
  }
  if (cc->context.len > 0) {
    o += cc_put_tag(out + o, 4, WT_LEN);
    o += qraft_varint_encode(out + o, cc->context.len);
    memcpy(out + o, cc->context.data, cc->context.len);
    o += cc->context.len;
  }
  return o;
}

/* A field as read from the input: its number, wire type and value. */
typedef struct cc_field {
  uint32_t num;
  int wt;
  uint64_t v;         /* varint, fixed */
  const uint8_t *p;   /* WT_LEN payload */
  size_t len;
} cc_field;

static int cc_next(const uint8_t *d, size_t len, size_t *off, cc_field *f,
                   const char *what, qraft_err *err) {
  uint64_t key;
  size_t used;
  int rv = qraft_varint_decode(d + *off, len - *off, &key, &used);
  if (rv != 0) {
    return QRAFT_ERR(err, rv, "%s: field key at offset %zu", what, *off);
  }
  size_t at = *off;
  *off += used;
  if ((key >> 3) == 0 || (key >> 3) > UINT32_MAX) {
    return QRAFT_ERR(err, QRAFT_EMALFORMED, "%s: field number %llu at offset %zu",
                     what, (unsigned long long)(key >> 3), at);
  }
  f->num = (uint32_t)(key >> 3);
  f->wt = (int)(key & 7);
  switch (f->wt) {
  case WT_VARINT:
    rv = qraft_varint_decode(d + *off, len - *off, &f->v, &used);
    if (rv != 0) {
      return QRAFT_ERR(err, rv, "%s: field %u varint at offset %zu", what,
                       f->num, *off);
    }
    *off += used;
    return 0;
  case WT_I64:
  case WT_I32: {
    size_t n = f->wt == WT_I64 ? 8 : 4;
    if (len - *off < n) {
      return QRAFT_ERR(err, QRAFT_ETRUNCATED, "%s: field %u at offset %zu",
                       what, f->num, *off);
    }
    f->v = 0;
    for (size_t i = 0; i < n; i++) {
      f->v |= (uint64_t)d[*off + i] << (8 * i);
    }
    *off += n;
    return 0;
  }
  case WT_LEN: {
    uint64_t l;
    rv = qraft_varint_decode(d + *off, len - *off, &l, &used);
    if (rv != 0) {
      return QRAFT_ERR(err, rv, "%s: field %u length at offset %zu", what,
                       f->num, *off);
    }
    *off += used;
    if (l > len - *off) {
      return QRAFT_ERR(err, QRAFT_ETRUNCATED,
                       "%s: field %u length %llu past the end at offset %zu",
                       what, f->num, (unsigned long long)l, *off);
    }
    f->p = d + *off;
    f->len = (size_t)l;
    *off += (size_t)l;
    return 0;
  }
  default:
    return QRAFT_ERR(err, QRAFT_EMALFORMED, "%s: wire type %d at offset %zu",
                     what, f->wt, at);
  }
}

static int cc_want(const cc_field *f, int wt, const char *what, qraft_err *err) {
  if (f->wt != wt) {
    return QRAFT_ERR(err, QRAFT_EMALFORMED, "%s: field %u has wire type %d",
                     what, f->num, f->wt);
  }
  return 0;
}

static int cc_type(uint64_t v, qraft_conf_change_type *out, const char *what,
                   qraft_err *err) {
  if (v > QRAFT_CONF_ADD_LEARNER_NODE) {
    return QRAFT_ERR(err, QRAFT_EMALFORMED, "%s: unknown change type %llu",
                     what, (unsigned long long)v);
  }
  *out = (qraft_conf_change_type)v;
  return 0;
}

int qraft_conf_change_v2_decode(const uint8_t *data, size_t len,
                                qraft_conf_change_v2 *cc, qraft_err *err) {
  memset(cc, 0, sizeof *cc);
  size_t off = 0;
  while (off < len) {
    cc_field f;
    int rv = cc_next(data, len, &off, &f, "ConfChangeV2", err);
    if (rv != 0) {
      return rv;
    }
    switch (f.num) {
    case 1:
      if ((rv = cc_want(&f, WT_VARINT, "ConfChangeV2", err)) != 0) {
        return rv;
      }
      if (f.v > QRAFT_CONF_TRANSITION_EXPLICIT) {
        return QRAFT_ERR(err, QRAFT_EMALFORMED,
                         "ConfChangeV2: unknown transition %llu",
                         (unsigned long long)f.v);
      }
      cc->transition = (qraft_conf_transition)f.v;
      break;
    case 2: {
      if ((rv = cc_want(&f, WT_LEN, "ConfChangeV2", err)) != 0) {
        return rv;
      }
      if (cc->changes_n == QRAFT_CONF_CHANGES_MAX) {
        return QRAFT_ERR(err, QRAFT_ELIMIT, "ConfChangeV2: more than %d changes",
                         QRAFT_CONF_CHANGES_MAX);
      }
      qraft_conf_change_single *s = &cc->changes[cc->changes_n++];
      size_t soff = 0;
      while (soff < f.len) {
        cc_field g;
        rv = cc_next(f.p, f.len, &soff, &g, "ConfChangeSingle", err);
        if (rv != 0) {
          return rv;
        }
        if (g.num == 1 || g.num == 2) {
          if ((rv = cc_want(&g, WT_VARINT, "ConfChangeSingle", err)) != 0) {
            return rv;
          }
          if (g.num == 1) {
            if ((rv = cc_type(g.v, &s->change_type, "ConfChangeSingle", err)) !=
                0) {
              return rv;
            }
          } else {
            s->node_id = g.v;
          }
        }
      }
      break;
    }
    case 3:
      if ((rv = cc_want(&f, WT_LEN, "ConfChangeV2", err)) != 0) {
        return rv;
      }
      cc->context = (qraft_slice){.data = f.p, .len = f.len, .owner = NULL};
      break;
    default:
      break; /* unknown fields are skipped */
    }
  }
  return 0;
}

int qraft_conf_change_decode(const uint8_t *data, size_t len,
                             qraft_conf_change *cc, qraft_err *err) {
  memset(cc, 0, sizeof *cc);
  size_t off = 0;
  while (off < len) {
    cc_field f;
    int rv = cc_next(data, len, &off, &f, "ConfChange", err);
    if (rv != 0) {
      return rv;
    }
    switch (f.num) {
    case 1:
    case 2:
    case 3:
      if ((rv = cc_want(&f, WT_VARINT, "ConfChange", err)) != 0) {
        return rv;
      }
      if (f.num == 1) {
        cc->id = f.v;
      } else if (f.num == 2) {
        if ((rv = cc_type(f.v, &cc->change_type, "ConfChange", err)) != 0) {
          return rv;
        }
      } else {
        cc->node_id = f.v;
      }
      break;
    case 4:
      if ((rv = cc_want(&f, WT_LEN, "ConfChange", err)) != 0) {
        return rv;
      }
      cc->context = (qraft_slice){.data = f.p, .len = f.len, .owner = NULL};
      break;
    default:
      break;
    }
  }
  return 0;
}

void qraft_conf_change_to_v2(const qraft_conf_change *cc,
                             qraft_conf_change_v2 *out) {
  memset(out, 0, sizeof *out);
  out->transition = QRAFT_CONF_TRANSITION_AUTO;
  out->changes_n = 1;
  out->changes[0].change_type = cc->change_type;
  out->changes[0].node_id = cc->node_id;
  out->context = cc->context;
}

int qraft_conf_change_entry_decode(const qraft_entry *e,
                                   qraft_conf_change_v2 *cc, qraft_err *err) {
  if (e->type == QRAFT_ENTRY_CONF_CHANGE) {
    qraft_conf_change v1;
    int rv = qraft_conf_change_decode(e->data.data, e->data.len, &v1, err);
    if (rv == 0) {
      qraft_conf_change_to_v2(&v1, cc);
    }
    return rv;
  }
  if (e->type == QRAFT_ENTRY_CONF_CHANGE_V2) {
    return qraft_conf_change_v2_decode(e->data.data, e->data.len, cc, err);
  }
  return QRAFT_ERR(err, QRAFT_EMALFORMED, "entry %llu is not a configuration "
                   "change", (unsigned long long)e->index);
}
