/*
 * qraft-wire: reads Raft messages, frames and streams as qraft sends them,
 * for people reading captures and bug reports.
 *
 *   qraft-wire decode --message FILE|-   one protobuf-encoded eraftpb.Message
 *   qraft-wire decode --frame FILE|-     frames, or a stream (preamble, frames)
 *   add --json for JSON instead of text
 *
 * Malformed input prints the error with its context (field, offset) on
 * stderr and exits 1; bad usage exits 2.
 */
#include <qraft/wire.h>

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Bytes of a payload shown in text output. */
#define PREVIEW_BYTES 32
/* Largest input read. */
#define INPUT_BYTES_MAX ((size_t)1 << 30)

static void usage(FILE *f) {
  fprintf(f,
          "usage: qraft-wire decode (--message | --frame) [--json] FILE|-\n"
          "  --message  FILE holds one protobuf-encoded eraftpb.Message\n"
          "  --frame    FILE holds frames, or a stream: preamble then frames\n"
          "  --json     print JSON instead of text\n"
          "  FILE of - reads standard input\n");
}

/* Reads all of `path` ("-": stdin) into a new buffer. */
static int read_input(const char *path, qraft_buf **out) {
  FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
  if (f == NULL) {
    return -errno;
  }
  size_t cap = 4096;
  size_t len = 0;
  uint8_t *data = malloc(cap);
  int rc = 0;
  while (data != NULL) {
    len += fread(data + len, 1, cap - len, f);
    if (len < cap) {
      rc = ferror(f) ? -EIO : 0;
      break;
    }
    if (cap >= INPUT_BYTES_MAX) {
      rc = -EFBIG;
      break;
    }
    uint8_t *bigger = realloc(data, cap * 2);
    if (bigger == NULL) {
      break;
    }
    data = bigger;
    cap *= 2;
  }
  if (f != stdin) {
    fclose(f);
  }
  if (data == NULL) {
    return -ENOMEM;
  }
  if (rc != 0) {
    free(data);
    return rc;
  }
  qraft_buf *b = qraft_buf_wrap(data, cap, NULL, NULL);
  if (b == NULL) {
    free(data);
    return -ENOMEM;
  }
  b->len = len;
  *out = b;
  return 0;
}

/* ---- text ----------------------------------------------------------------- */

static void text_bytes(qraft_slice s) {
  printf("%zu bytes", s.len);
  if (s.len == 0) {
    return;
  }
  printf(" \"");
  size_t n = s.len < PREVIEW_BYTES ? s.len : PREVIEW_BYTES;
  for (size_t i = 0; i < n; i++) {
    uint8_t c = s.data[i];
    if (c == '"' || c == '\\') {
      printf("\\%c", c);
    } else if (c >= 0x20 && c < 0x7f) {
      putchar(c);
    } else {
      printf("\\x%02x", c);
    }
  }
  printf("\"%s", s.len > n ? "..." : "");
}

static void text_ids(const char *name, const qraft_id *ids, uint32_t n) {
  printf("      %s: [", name);
  for (uint32_t i = 0; i < n; i++) {
    printf("%s%" PRIu64, i ? ", " : "", ids[i]);
  }
  printf("]\n");
}

static void text_message(const qraft_message *m, const char *indent) {
  printf("%smessage %s\n", indent, qraft_msg_type_name(m->type));
  printf("%s  to: %" PRIu64 "\n", indent, m->to);
  printf("%s  from: %" PRIu64 "\n", indent, m->from);
  printf("%s  term: %" PRIu64 "\n", indent, m->term);
  printf("%s  log_term: %" PRIu64 "\n", indent, m->log_term);
  printf("%s  index: %" PRIu64 "\n", indent, m->index);
  printf("%s  commit: %" PRIu64 "\n", indent, m->commit);
  printf("%s  commit_term: %" PRIu64 "\n", indent, m->commit_term);
  printf("%s  reject: %s\n", indent, m->reject ? "true" : "false");
  printf("%s  reject_hint: %" PRIu64 "\n", indent, m->reject_hint);
  printf("%s  request_snapshot: %" PRIu64 "\n", indent, m->request_snapshot);
  printf("%s  deprecated_priority: %" PRIu64 "\n", indent,
         m->deprecated_priority);
  printf("%s  priority: %" PRId64 "\n", indent, m->priority);
  printf("%s  context: ", indent);
  text_bytes(m->context);
  printf("\n%s  entries: %zu\n", indent, m->entries_n);
  for (size_t i = 0; i < m->entries_n; i++) {
    const qraft_entry *e = &m->entries[i];
    printf("%s    [%zu] %s term %" PRIu64 " index %" PRIu64 " data ", indent,
           i, qraft_entry_type_name(e->type), e->term, e->index);
    text_bytes(e->data);
    if (e->context.len > 0) {
      printf(" context ");
      text_bytes(e->context);
    }
    if (e->sync_log) {
      printf(" sync_log");
    }
    printf("\n");
  }
  if (m->snapshot == NULL) {
    printf("%s  snapshot: none\n", indent);
    return;
  }
  const qraft_snapshot *s = m->snapshot;
  const qraft_conf_state *cs = &s->metadata.conf_state;
  printf("%s  snapshot:\n%s    data: ", indent, indent);
  text_bytes(s->data);
  printf("\n%s    index: %" PRIu64 " term: %" PRIu64 "\n", indent,
         s->metadata.index, s->metadata.term);
  printf("%s    conf_state:\n", indent);
  text_ids("voters", cs->voters, cs->voters_n);
  text_ids("learners", cs->learners, cs->learners_n);
  text_ids("voters_outgoing", cs->voters_outgoing, cs->voters_outgoing_n);
  text_ids("learners_next", cs->learners_next, cs->learners_next_n);
  printf("      auto_leave: %s\n", cs->auto_leave ? "true" : "false");
}

/* ---- JSON ------------------------------------------------------------------ */

static void json_base64(qraft_slice s) {
  static const char tab[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  putchar('"');
  size_t i = 0;
  for (; i + 3 <= s.len; i += 3) {
    uint32_t v = (uint32_t)s.data[i] << 16 | (uint32_t)s.data[i + 1] << 8 |
                 s.data[i + 2];
    printf("%c%c%c%c", tab[v >> 18], tab[(v >> 12) & 63], tab[(v >> 6) & 63],
           tab[v & 63]);
  }
  if (s.len - i == 1) {
    uint32_t v = (uint32_t)s.data[i] << 16;
    printf("%c%c==", tab[v >> 18], tab[(v >> 12) & 63]);
  } else if (s.len - i == 2) {
    uint32_t v = (uint32_t)s.data[i] << 16 | (uint32_t)s.data[i + 1] << 8;
    printf("%c%c%c=", tab[v >> 18], tab[(v >> 12) & 63], tab[(v >> 6) & 63]);
  }
  putchar('"');
}

/* "name_len":N,"name":"base64" */
static void json_bytes(const char *name, qraft_slice s) {
  printf("\"%s_len\":%zu,\"%s\":", name, s.len, name);
  json_base64(s);
}

static void json_ids(const char *name, const qraft_id *ids, uint32_t n) {
  printf("\"%s\":[", name);
  for (uint32_t i = 0; i < n; i++) {
    printf("%s%" PRIu64, i ? "," : "", ids[i]);
  }
  printf("]");
}

static void json_message(const qraft_message *m) {
  printf("{\"msg_type\":\"%s\",\"to\":%" PRIu64 ",\"from\":%" PRIu64
         ",\"term\":%" PRIu64 ",\"log_term\":%" PRIu64 ",\"index\":%" PRIu64
         ",\"commit\":%" PRIu64 ",\"commit_term\":%" PRIu64
         ",\"reject\":%s,\"reject_hint\":%" PRIu64
         ",\"request_snapshot\":%" PRIu64 ",\"deprecated_priority\":%" PRIu64
         ",\"priority\":%" PRId64 ",",
         qraft_msg_type_name(m->type), m->to, m->from, m->term, m->log_term,
         m->index, m->commit, m->commit_term, m->reject ? "true" : "false",
         m->reject_hint, m->request_snapshot, m->deprecated_priority,
         m->priority);
  json_bytes("context", m->context);
  printf(",\"entries\":[");
  for (size_t i = 0; i < m->entries_n; i++) {
    const qraft_entry *e = &m->entries[i];
    printf("%s{\"entry_type\":\"%s\",\"term\":%" PRIu64 ",\"index\":%" PRIu64
           ",",
           i ? "," : "", qraft_entry_type_name(e->type), e->term, e->index);
    json_bytes("data", e->data);
    printf(",");
    json_bytes("context", e->context);
    printf(",\"sync_log\":%s}", e->sync_log ? "true" : "false");
  }
  printf("],\"snapshot\":");
  if (m->snapshot == NULL) {
    printf("null}");
    return;
  }
  const qraft_snapshot *s = m->snapshot;
  const qraft_conf_state *cs = &s->metadata.conf_state;
  printf("{");
  json_bytes("data", s->data);
  printf(",\"metadata\":{\"index\":%" PRIu64 ",\"term\":%" PRIu64
         ",\"conf_state\":{",
         s->metadata.index, s->metadata.term);
  json_ids("voters", cs->voters, cs->voters_n);
  printf(",");
  json_ids("learners", cs->learners, cs->learners_n);
  printf(",");
  json_ids("voters_outgoing", cs->voters_outgoing, cs->voters_outgoing_n);
  printf(",");
  json_ids("learners_next", cs->learners_next, cs->learners_next_n);
  printf(",\"auto_leave\":%s}}}}", cs->auto_leave ? "true" : "false");
}

/* ---- commands -------------------------------------------------------------- */

static int fail(const char *what, const qraft_err *err) {
  char text[2048];
  qraft_err_format(err, text, sizeof text);
  fprintf(stderr, "qraft-wire: %s: %s\n", what, text);
  return 1;
}

static int decode_message(qraft_buf *b, bool json) {
  qraft_wire_limits lim = QRAFT_WIRE_LIMITS_LARGEST;
  qraft_wire_batch *batch = NULL;
  qraft_err err;
  qraft_err_init(&err, 0);
  if (qraft_wire_message_decode(b, b->data, b->len, &lim, &batch, &err) != 0) {
    return fail("decode message", &err);
  }
  if (json) {
    json_message(&batch->msgs[0]);
    printf("\n");
  } else {
    text_message(&batch->msgs[0], "");
  }
  qraft_wire_batch_free(batch);
  return 0;
}

static int decode_frames(qraft_buf *b, bool json) {
  qraft_wire_limits lim = QRAFT_WIRE_LIMITS_LARGEST;
  qraft_err err;
  qraft_err_init(&err, 0);
  size_t off = 0;
  if (json) {
    printf("{\"preamble\":");
  }
  if (b->len >= 4 && memcmp(b->data, QRAFT_WIRE_MAGIC, 4) == 0) {
    qraft_wire_preamble pre;
    if (qraft_wire_preamble_decode(b->data, b->len, 0, &pre, &err) != 0) {
      if (json) {
        printf("null}\n");
      }
      return fail("decode preamble", &err);
    }
    if (json) {
      printf("{\"version\":%u,\"cluster_id\":%" PRIu64 ",\"sender_id\":%" PRIu64
             "}",
             pre.version, pre.cluster_id, pre.sender_id);
    } else {
      printf("preamble version %u cluster %016" PRIx64 " sender %" PRIu64 "\n",
             pre.version, pre.cluster_id, pre.sender_id);
    }
    off = QRAFT_WIRE_PREAMBLE_BYTES;
  } else if (json) {
    printf("null");
  }
  if (json) {
    printf(",\"frames\":[");
  }
  int rc = 0;
  if (b->len == 0) {
    rc = QRAFT_ERR(&err, QRAFT_ETRUNCATED, "empty input");
  }
  for (size_t i = 0; rc == 0 && off < b->len; i++) {
    size_t frame_bytes = 0;
    if (qraft_wire_frame_peek(b->data + off, b->len - off, &lim, &frame_bytes,
                              &err) != 0) {
      rc = QRAFT_ERR(&err, err.code, "frame %zu at offset %zu", i, off);
      break;
    }
    if (frame_bytes > b->len - off) {
      rc = QRAFT_ERR(&err, QRAFT_ETRUNCATED,
                     "frame %zu at offset %zu: %zu bytes announced, %zu left",
                     i, off, frame_bytes, b->len - off);
      break;
    }
    qraft_wire_batch *batch = NULL;
    if (qraft_wire_frame_decode(b, b->data + off, frame_bytes, &lim, &batch,
                                &err) != 0) {
      rc = QRAFT_ERR(&err, err.code, "frame %zu at offset %zu", i, off);
      break;
    }
    if (json) {
      printf("%s{\"offset\":%zu,\"bytes\":%zu,\"group_id\":%" PRIu64
             ",\"messages\":[",
             i ? "," : "", off, frame_bytes, batch->group_id);
      for (size_t k = 0; k < batch->msgs_n; k++) {
        printf("%s", k ? "," : "");
        json_message(&batch->msgs[k]);
      }
      printf("]}");
    } else {
      printf("frame %zu at offset %zu: %zu bytes, group %" PRIu64
             ", %zu messages\n",
             i, off, frame_bytes, batch->group_id, batch->msgs_n);
      for (size_t k = 0; k < batch->msgs_n; k++) {
        text_message(&batch->msgs[k], "  ");
      }
    }
    qraft_wire_batch_free(batch);
    off += frame_bytes;
  }
  if (json) {
    printf("]}\n");
  }
  return rc != 0 ? fail("decode frames", &err) : 0;
}

int main(int argc, char **argv) {
  if (argc >= 2 && (strcmp(argv[1], "--help") == 0 ||
                    strcmp(argv[1], "-h") == 0)) {
    usage(stdout);
    return 0;
  }
  if (argc < 2 || strcmp(argv[1], "decode") != 0) {
    usage(stderr);
    return 2;
  }
  bool json = false;
  int mode = 0; /* 1 message, 2 frame */
  const char *path = NULL;
  for (int i = 2; i < argc; i++) {
    if (strcmp(argv[i], "--json") == 0) {
      json = true;
    } else if (strcmp(argv[i], "--message") == 0 ||
               strcmp(argv[i], "--frame") == 0) {
      if (mode != 0 || i + 1 == argc) {
        usage(stderr);
        return 2;
      }
      mode = argv[i][2] == 'm' ? 1 : 2;
      path = argv[++i];
    } else {
      usage(stderr);
      return 2;
    }
  }
  if (mode == 0) {
    usage(stderr);
    return 2;
  }
  qraft_buf *b = NULL;
  int rc = read_input(path, &b);
  if (rc != 0) {
    fprintf(stderr, "qraft-wire: read %s: %s\n", path, qraft_strerror(rc));
    return 1;
  }
  int status = mode == 1 ? decode_message(b, json) : decode_frames(b, json);
  qraft_buf_unref(b);
  return status;
}
