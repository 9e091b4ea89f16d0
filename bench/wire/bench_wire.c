/*
 * bench_wire: encode and decode throughput of qraft's codec against
 * protobuf-c (code generated from docs/eraftpb.proto) on the same messages
 * in the same run: a heartbeat, an append with 1 entry and with 100 entries
 * of 256 bytes, and a frame of 64 heartbeats (decoded as a
 * qraft.wire.Frame by protobuf-c). Prints messages/s, MB/s and ours/protobuf-c ratios (above 1
 * is faster), each the median of several timed rounds.
 *
 * What is timed, per message:
 *   encode  qraft_wire_message_encode (computes the exact size, writes)
 *           vs protobuf_c_message_get_packed_size + protobuf_c_message_pack
 *   decode  qraft_wire_message_decode + qraft_wire_batch_free (entry
 *           payloads stay in the input buffer, referenced)
 *           vs protobuf_c_message_unpack + protobuf_c_message_free_unpacked
 *           (copies payloads)
 */
#include "eraftpb.pb-c.h"
#include "qraft_wire.pb-c.h"

#include <qraft/assert.h>
#include <qraft/wire.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ROUNDS 7
#define ROUND_NS 100000000.0 /* 0.1 s per round */
#define ENTRIES_MAX 100
#define PAYLOAD_BYTES 256

static volatile size_t sink;

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

typedef struct bench_case {
  const char *name;
  qraft_message msg;
  Eraftpb__Message pbc;
  qraft_buf *encoded; /* our encoding, which is also protobuf-c's */
} bench_case;

typedef void (*op_fn)(bench_case *c);

/* The frame case: 64 heartbeats for one group. */
#define FRAME_MSGS 64
static qraft_message frame_msgs[FRAME_MSGS];
static Eraftpb__Message frame_pbc_msgs[FRAME_MSGS];
static Eraftpb__Message *frame_pbc_ptrs[FRAME_MSGS];
static Qraft__Wire__Frame frame_pbc = QRAFT__WIRE__FRAME__INIT;

static uint8_t out_buf[1 << 20];

static void ours_encode(bench_case *c) {
  size_t n = 0;
  int rc = qraft_wire_message_encode(&c->msg, out_buf, sizeof out_buf, &n);
  QRAFT_ASSERT(rc == 0);
  sink += n;
}

static void pbc_encode(bench_case *c) {
  size_t n = protobuf_c_message_get_packed_size(&c->pbc.base);
  QRAFT_ASSERT(n <= sizeof out_buf);
  sink += protobuf_c_message_pack(&c->pbc.base, out_buf);
}

static void ours_decode(bench_case *c) {
  qraft_wire_batch *batch = NULL;
  int rc = qraft_wire_message_decode(c->encoded, c->encoded->data,
                                     c->encoded->len, NULL, &batch, NULL);
  QRAFT_ASSERT(rc == 0);
  sink += batch->msgs[0].entries_n;
  qraft_wire_batch_free(batch);
}

static void pbc_decode(bench_case *c) {
  ProtobufCMessage *m = protobuf_c_message_unpack(
      &eraftpb__message__descriptor, NULL, c->encoded->len, c->encoded->data);
  QRAFT_ASSERT(m != NULL);
  sink += ((Eraftpb__Message *)m)->n_entries;
  protobuf_c_message_free_unpacked(m, NULL);
}

static void ours_frame_encode(bench_case *c) {
  (void)c;
  size_t n = 0;
  int rc = qraft_wire_frame_encode(7, frame_msgs, FRAME_MSGS, NULL, out_buf,
                                   sizeof out_buf, &n, NULL);
  QRAFT_ASSERT(rc == 0);
  sink += n;
}

static void pbc_frame_encode(bench_case *c) {
  (void)c;
  size_t n = protobuf_c_message_get_packed_size(&frame_pbc.base);
  QRAFT_ASSERT(n + 4 <= sizeof out_buf);
  out_buf[0] = (uint8_t)n; /* the prefix, as a sender writes it */
  out_buf[1] = (uint8_t)(n >> 8);
  out_buf[2] = (uint8_t)(n >> 16);
  out_buf[3] = (uint8_t)(n >> 24);
  sink += protobuf_c_message_pack(&frame_pbc.base, out_buf + 4);
}

static void ours_frame_decode(bench_case *c) {
  qraft_wire_batch *batch = NULL;
  int rc = qraft_wire_frame_decode(c->encoded, c->encoded->data,
                                   c->encoded->len, NULL, &batch, NULL);
  QRAFT_ASSERT(rc == 0);
  sink += batch->msgs_n;
  qraft_wire_batch_free(batch);
}

static void pbc_frame_decode(bench_case *c) {
  Qraft__Wire__Frame *f = qraft__wire__frame__unpack(
      NULL, c->encoded->len - 4, c->encoded->data + 4);
  QRAFT_ASSERT(f != NULL);
  sink += f->n_messages;
  qraft__wire__frame__free_unpacked(f, NULL);
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Median nanoseconds per operation over ROUNDS rounds. */
static double measure(op_fn op, bench_case *c) {
  /* calibrate: operations per round */
  size_t iters = 1;
  for (;;) {
    double t0 = now_ns();
    for (size_t i = 0; i < iters; i++) {
      op(c);
    }
    double dt = now_ns() - t0;
    if (dt > ROUND_NS / 10) {
      iters = (size_t)((double)iters * ROUND_NS / dt) + 1;
      break;
    }
    iters *= 4;
  }
  double per_op[ROUNDS];
  for (int r = 0; r < ROUNDS; r++) {
    double t0 = now_ns();
    for (size_t i = 0; i < iters; i++) {
      op(c);
    }
    per_op[r] = (now_ns() - t0) / (double)iters;
  }
  qsort(per_op, ROUNDS, sizeof per_op[0], cmp_double);
  return per_op[ROUNDS / 2];
}

static void report(const char *what, bench_case *c, double ours_ns,
                   double pbc_ns) {
  double bytes = (double)c->encoded->len;
  printf("%-14s %-7s %12.0f %9.1f %12.0f %9.1f %7.2fx\n", c->name, what,
         1e9 / ours_ns, bytes / ours_ns * 1e3, 1e9 / pbc_ns,
         bytes / pbc_ns * 1e3, pbc_ns / ours_ns);
}

int main(void) {
  static uint8_t payload[ENTRIES_MAX][PAYLOAD_BYTES];
  static qraft_entry entries[ENTRIES_MAX];
  static Eraftpb__Entry pbc_entries[ENTRIES_MAX];
  static Eraftpb__Entry *pbc_entry_ptrs[ENTRIES_MAX];
  for (int i = 0; i < ENTRIES_MAX; i++) {
    memset(payload[i], 'a' + i % 26, PAYLOAD_BYTES);
    entries[i] = (qraft_entry){.type = QRAFT_ENTRY_NORMAL, .term = 5,
                               .index = 1000 + (uint64_t)i,
                               .data = {.data = payload[i],
                                        .len = PAYLOAD_BYTES}};
    eraftpb__entry__init(&pbc_entries[i]);
    pbc_entries[i].term = 5;
    pbc_entries[i].index = 1000 + (uint64_t)i;
    pbc_entries[i].data.data = payload[i];
    pbc_entries[i].data.len = PAYLOAD_BYTES;
    pbc_entry_ptrs[i] = &pbc_entries[i];
  }
  bench_case cases[3] = {
      {.name = "heartbeat",
       .msg = {.type = QRAFT_MSG_HEARTBEAT, .to = 2, .from = 1, .term = 5,
               .commit = 998}},
      {.name = "append 1x256",
       .msg = {.type = QRAFT_MSG_APPEND, .to = 2, .from = 1, .term = 5,
               .log_term = 5, .index = 999, .commit = 998,
               .entries = entries, .entries_n = 1}},
      {.name = "append 100x256",
       .msg = {.type = QRAFT_MSG_APPEND, .to = 2, .from = 1, .term = 5,
               .log_term = 5, .index = 999, .commit = 998,
               .entries = entries, .entries_n = 100}},
  };
  for (int i = 0; i < 3; i++) {
    bench_case *c = &cases[i];
    eraftpb__message__init(&c->pbc);
    c->pbc.msg_type = (Eraftpb__MessageType)c->msg.type;
    c->pbc.to = c->msg.to;
    c->pbc.from = c->msg.from;
    c->pbc.term = c->msg.term;
    c->pbc.log_term = c->msg.log_term;
    c->pbc.index = c->msg.index;
    c->pbc.commit = c->msg.commit;
    c->pbc.n_entries = c->msg.entries_n;
    c->pbc.entries = c->msg.entries_n > 0 ? pbc_entry_ptrs : NULL;
    size_t n = qraft_wire_message_size(&c->msg);
    c->encoded = qraft_buf_new(n);
    QRAFT_ASSERT(c->encoded != NULL);
    size_t written = 0;
    QRAFT_ASSERT(qraft_wire_message_encode(&c->msg, c->encoded->data, n,
                                           &written) == 0);
    c->encoded->len = n;
    /* Same message, same bytes: the comparison is like for like. */
    QRAFT_ASSERT(protobuf_c_message_get_packed_size(&c->pbc.base) == n);
    protobuf_c_message_pack(&c->pbc.base, out_buf);
    QRAFT_ASSERT(memcmp(out_buf, c->encoded->data, n) == 0);
  }
  /* The frame case. */
  bench_case frame = {.name = "frame 64 hb"};
  for (int i = 0; i < FRAME_MSGS; i++) {
    frame_msgs[i] = cases[0].msg;
    frame_msgs[i].commit += (uint64_t)i;
    eraftpb__message__init(&frame_pbc_msgs[i]);
    frame_pbc_msgs[i].msg_type = (Eraftpb__MessageType)frame_msgs[i].type;
    frame_pbc_msgs[i].to = frame_msgs[i].to;
    frame_pbc_msgs[i].from = frame_msgs[i].from;
    frame_pbc_msgs[i].term = frame_msgs[i].term;
    frame_pbc_msgs[i].commit = frame_msgs[i].commit;
    frame_pbc_ptrs[i] = &frame_pbc_msgs[i];
  }
  frame_pbc.group_id = 7;
  frame_pbc.n_messages = FRAME_MSGS;
  frame_pbc.messages = frame_pbc_ptrs;
  QRAFT_ASSERT(qraft_wire_frame_encode_buf(7, frame_msgs, FRAME_MSGS, NULL,
                                           NULL, &frame.encoded, NULL) == 0);
  QRAFT_ASSERT(protobuf_c_message_get_packed_size(&frame_pbc.base) + 4 ==
               frame.encoded->len);
  printf("qraft wire codec vs protobuf-c %s, median of %d rounds of %.1f s\n",
         protobuf_c_version(), ROUNDS, ROUND_NS / 1e9);
  printf("%-14s %-7s %12s %9s %12s %9s %8s\n", "message", "op", "qraft msg/s",
         "qraft MB/s", "pbc msg/s", "pbc MB/s", "ratio");
  for (int i = 0; i < 3; i++) {
    bench_case *c = &cases[i];
    report("encode", c, measure(ours_encode, c), measure(pbc_encode, c));
    report("decode", c, measure(ours_decode, c), measure(pbc_decode, c));
  }
  report("encode", &frame, measure(ours_frame_encode, &frame),
         measure(pbc_frame_encode, &frame));
  report("decode", &frame, measure(ours_frame_decode, &frame),
         measure(pbc_frame_decode, &frame));
  for (int i = 0; i < 3; i++) {
    qraft_buf_unref(cases[i].encoded);
  }
  qraft_buf_unref(frame.encoded);
  printf("(frame rows: frames/s, 64 messages each; ratio = protobuf-c time / "
         "qraft time)\n");
  return 0;
}
