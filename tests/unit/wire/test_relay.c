/* The relay protocol's frames (include/qraft/relay.h): golden bytes, round
 * trips of every type, and refusals of what does not fit a layout; and the
 * reader that takes them off a stream arriving in pieces of any length. */
#include "cmocka_all.h"
#include <qraft/assert.h>
#include <qraft/relay.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint8_t out[QRAFT_RELAY_PAYLOAD_MAX + QRAFT_RELAY_HEADER_MAX];

/* Encodes f, checks the size, decodes it back; returns the decoded frame. */
static qraft_relay_frame round_trip(const qraft_relay_frame *f) {
  size_t n = qraft_relay_frame_size(f);
  assert_true(n > 0);
  assert_int_equal(qraft_relay_frame_encode(f, out), n);
  qraft_relay_frame g;
  size_t used = 0;
  assert_int_equal(qraft_relay_frame_decode(out, n, &g, &used, NULL), 0);
  assert_int_equal(used, n);
  assert_int_equal(g.type, f->type);
  /* every shorter prefix asks for more bytes */
  for (size_t k = 0; k < n; k++) {
    qraft_relay_frame h;
    size_t u = 0;
    assert_int_equal(qraft_relay_frame_decode(out, k, &h, &u, NULL),
                     QRAFT_ETRUNCATED);
  }
  return g;
}

static void golden_bytes_follow_iroh_layouts(void **st) {
  (void)st;
  qraft_relay_frame f = {.type = QRAFT_RELAY_PING,
                         .ping = {1, 2, 3, 4, 5, 6, 7, 8}};
  uint8_t want_ping[] = {9, 8, 1, 2, 3, 4, 5, 6, 7, 8};
  assert_int_equal(qraft_relay_frame_encode(&f, out), sizeof want_ping);
  assert_memory_equal(out, want_ping, sizeof want_ping);

  qraft_relay_frame s = {.type = QRAFT_RELAY_SEND, .ecn = 2,
                         .data = (const uint8_t *)"hi", .data_len = 2};
  memset(s.peer.bytes, 0xab, sizeof s.peer.bytes);
  assert_int_equal(qraft_relay_frame_encode(&s, out), 2 + 32 + 1 + 2);
  assert_int_equal(out[0], 4);
  assert_int_equal(out[1], 35);
  assert_int_equal(out[2], 0xab); /* the id: bytes 2 to 33 */
  assert_int_equal(out[33], 0xab);
  assert_int_equal(out[34], 2); /* ECN */
  assert_memory_equal(out + 35, "hi", 2);

  qraft_relay_frame r = {.type = QRAFT_RELAY_RESTARTING,
                         .reconnect_in_ms = 0x01020304,
                         .try_for_ms = 0x0a0b0c0d};
  uint8_t want_restart[] = {12, 8, 1, 2, 3, 4, 0x0a, 0x0b, 0x0c, 0x0d};
  assert_int_equal(qraft_relay_frame_encode(&r, out), sizeof want_restart);
  assert_memory_equal(out, want_restart, sizeof want_restart);

  /* a payload of 300 bytes takes a two-byte length: 0x41 0x2c */
  static uint8_t big[300];
  qraft_relay_frame h = {.type = QRAFT_RELAY_HEALTH, .data = big,
                         .data_len = sizeof big};
  memset(big, 'x', sizeof big);
  assert_int_equal(qraft_relay_frame_encode(&h, out), 3 + 300);
  assert_int_equal(out[0], 11);
  assert_int_equal(out[1], 0x41);
  assert_int_equal(out[2], 0x2c);
}

static void every_type_round_trips(void **st) {
  (void)st;
  static uint8_t dg[QRAFT_RELAY_DATAGRAM_MAX];
  for (size_t i = 0; i < sizeof dg; i++) dg[i] = (uint8_t)(i * 13);
  uint64_t dgram_types[] = {QRAFT_RELAY_SEND, QRAFT_RELAY_SEND_BATCH,
                            QRAFT_RELAY_RECV, QRAFT_RELAY_RECV_BATCH};
  size_t lens[] = {1, 1200, QRAFT_RELAY_DATAGRAM_MAX};
  for (size_t t = 0; t < 4; t++) {
    for (size_t l = 0; l < 3; l++) {
      qraft_relay_frame f = {.type = dgram_types[t], .ecn = 3,
                             .segment = 1200, .data = dg, .data_len = lens[l]};
      memset(f.peer.bytes, (int)(t + 1), sizeof f.peer.bytes);
      qraft_relay_frame g = round_trip(&f);
      assert_memory_equal(g.peer.bytes, f.peer.bytes, sizeof f.peer.bytes);
      assert_int_equal(g.ecn, 3);
      assert_int_equal(g.data_len, lens[l]);
      assert_memory_equal(g.data, dg, lens[l]);
      if (t % 2 == 1) assert_int_equal(g.segment, 1200);
    }
  }
  qraft_relay_frame gone = {.type = QRAFT_RELAY_PEER_GONE};
  memset(gone.peer.bytes, 7, sizeof gone.peer.bytes);
  qraft_relay_frame g = round_trip(&gone);
  assert_memory_equal(g.peer.bytes, gone.peer.bytes, 32);

  qraft_relay_frame pong = {.type = QRAFT_RELAY_PONG, .ping = {9, 9, 9}};
  g = round_trip(&pong);
  assert_memory_equal(g.ping, pong.ping, 8);

  qraft_relay_frame restart = {.type = QRAFT_RELAY_RESTARTING,
                               .reconnect_in_ms = 500, .try_for_ms = 30000};
  g = round_trip(&restart);
  assert_int_equal(g.reconnect_in_ms, 500);
  assert_int_equal(g.try_for_ms, 30000);

  qraft_relay_frame status = {.type = QRAFT_RELAY_STATUS,
                              .status = QRAFT_RELAY_STATUS_SAME_ID_ELSEWHERE};
  g = round_trip(&status);
  assert_int_equal(g.status, 1);

  const char *text = "relay degraded: h\xc3\xa9";
  qraft_relay_frame health = {.type = QRAFT_RELAY_HEALTH,
                              .data = (const uint8_t *)text,
                              .data_len = strlen(text)};
  g = round_trip(&health);
  assert_int_equal(g.data_len, strlen(text));
  assert_memory_equal(g.data, text, strlen(text));

  qraft_relay_frame v4 = {.type = QRAFT_RELAY_OBSERVED_ADDR};
  struct sockaddr_in *a4 = (struct sockaddr_in *)&v4.addr;
  a4->sin_family = AF_INET;
  a4->sin_port = htons(7001);
  inet_pton(AF_INET, "203.0.113.7", &a4->sin_addr);
  g = round_trip(&v4);
  assert_int_equal(g.addr.ss_family, AF_INET);
  assert_memory_equal(&((struct sockaddr_in *)&g.addr)->sin_addr, &a4->sin_addr, 4);
  assert_int_equal(ntohs(((struct sockaddr_in *)&g.addr)->sin_port), 7001);

  qraft_relay_frame v6 = {.type = QRAFT_RELAY_OBSERVED_ADDR};
  struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&v6.addr;
  a6->sin6_family = AF_INET6;
  a6->sin6_port = htons(65535);
  inet_pton(AF_INET6, "2001:db8::1", &a6->sin6_addr);
  g = round_trip(&v6);
  assert_int_equal(g.addr.ss_family, AF_INET6);
  assert_memory_equal(&((struct sockaddr_in6 *)&g.addr)->sin6_addr, &a6->sin6_addr, 16);
  assert_int_equal(ntohs(((struct sockaddr_in6 *)&g.addr)->sin6_port), 65535);

  /* a type we do not know: its payload, to skip */
  qraft_relay_frame other = {.type = 0x1234, .data = (const uint8_t *)"abc",
                             .data_len = 3};
  g = round_trip(&other);
  assert_int_equal(g.type, 0x1234);
  assert_int_equal(g.data_len, 3);
  assert_memory_equal(g.data, "abc", 3);
}

/* decodes bytes; returns the code */
static int dec(const uint8_t *b, size_t n) {
  qraft_relay_frame f;
  size_t used;
  qraft_err err;
  qraft_err_init(&err, 0);
  int rv = qraft_relay_frame_decode(b, n, &f, &used, &err);
  if (rv != 0) assert_true(err.frames_n > 0); /* it says why */
  return rv;
}

static void what_does_not_fit_is_refused(void **st) {
  (void)st;
  uint8_t b[64] = {0};
  /* known types with a payload of the wrong size */
  b[0] = QRAFT_RELAY_PING; b[1] = 7;
  assert_int_equal(dec(b, 9), QRAFT_EMALFORMED);
  b[0] = QRAFT_RELAY_PEER_GONE; b[1] = 31;
  assert_int_equal(dec(b, 33), QRAFT_EMALFORMED);
  b[0] = QRAFT_RELAY_STATUS; b[1] = 1; b[2] = 2; /* status 2 */
  assert_int_equal(dec(b, 3), QRAFT_EMALFORMED);
  b[0] = QRAFT_RELAY_OBSERVED_ADDR; b[1] = 7; b[2] = 5; /* family 5 */
  assert_int_equal(dec(b, 9), QRAFT_EMALFORMED);
  b[0] = QRAFT_RELAY_SEND; b[1] = 33; /* an id and ECN, no datagram */
  assert_int_equal(dec(b, 35), QRAFT_EMALFORMED);
  b[0] = QRAFT_RELAY_SEND; b[1] = 34; b[34] = 4; /* ECN 4 */
  assert_int_equal(dec(b, 36), QRAFT_EMALFORMED);
  b[34] = 0;
  b[0] = QRAFT_RELAY_SEND_BATCH; b[1] = 36; /* segment size 0 */
  assert_int_equal(dec(b, 38), QRAFT_EMALFORMED);
  b[0] = QRAFT_RELAY_HEALTH; b[1] = 2; b[2] = 0xc0; b[3] = 0x80; /* overlong */
  assert_int_equal(dec(b, 4), QRAFT_EMALFORMED);
  b[2] = 0xed; b[3] = 0xa0; /* a surrogate, cut */
  assert_int_equal(dec(b, 4), QRAFT_EMALFORMED);
  /* a payload over the limit, announced in the header alone */
  uint8_t big[] = {QRAFT_RELAY_SEND, 0x80, 0x01, 0x00, 0x41}; /* 65601 */
  assert_int_equal(dec(big, sizeof big), QRAFT_ELIMIT);
  /* a non-minimal length is read as the same number */
  uint8_t wide[] = {QRAFT_RELAY_PING, 0x40, 8, 1, 2, 3, 4, 5, 6, 7, 8};
  qraft_relay_frame f;
  size_t used;
  assert_int_equal(qraft_relay_frame_decode(wide, sizeof wide, &f, &used, NULL), 0);
  assert_int_equal(used, sizeof wide);
  assert_int_equal(f.ping[7], 8);
  /* frames that cannot be encoded */
  qraft_relay_frame e = {.type = QRAFT_RELAY_SEND, .data = b, .data_len = 0};
  assert_int_equal(qraft_relay_frame_size(&e), 0);
  e.data_len = QRAFT_RELAY_DATAGRAM_MAX + 1;
  assert_int_equal(qraft_relay_frame_size(&e), 0);
  e = (qraft_relay_frame){.type = QRAFT_RELAY_SEND_BATCH, .data = b,
                          .data_len = 4, .segment = 0};
  assert_int_equal(qraft_relay_frame_encode(&e, out), 0);
  e = (qraft_relay_frame){.type = QRAFT_RELAY_OBSERVED_ADDR};
  assert_int_equal(qraft_relay_frame_size(&e), 0);
  assert_string_equal(qraft_relay_frame_name(QRAFT_RELAY_RECV_BATCH), "RECV_BATCH");
  assert_string_equal(qraft_relay_frame_name(99), "UNKNOWN");
}

/* Frames back to back in one buffer decode one after the other. */
static void a_stream_of_frames_decodes_in_order(void **st) {
  (void)st;
  qraft_relay_frame fs[3] = {
      {.type = QRAFT_RELAY_PING, .ping = {1}},
      {.type = QRAFT_RELAY_RECV, .data = (const uint8_t *)"datagram", .data_len = 8},
      {.type = QRAFT_RELAY_STATUS, .status = 0}};
  size_t off = 0;
  for (int i = 0; i < 3; i++) off += qraft_relay_frame_encode(&fs[i], out + off);
  size_t at = 0;
  for (int i = 0; i < 3; i++) {
    qraft_relay_frame g;
    size_t used = 0;
    assert_int_equal(qraft_relay_frame_decode(out + at, off - at, &g, &used, NULL), 0);
    assert_int_equal(g.type, fs[i].type);
    at += used;
  }
  assert_int_equal(at, off);
}

/* ---- the reader: frames off a stream that arrives in pieces ---- */

/* A reader, and what it must deliver: want[0..want_n) in order. */
typedef struct expect {
  qraft_relay_reader r;
  const qraft_relay_frame *want;
  size_t want_n;
  size_t got;      /* frames delivered so far */
  size_t stop_at;  /* the callback returns stop_rv on this frame */
  int stop_rv;
  size_t piece_at, piece_len; /* the feed under way: stream[at, at + len) */
} expect;

static uint8_t stream[12 * (QRAFT_RELAY_HEADER_MAX + QRAFT_RELAY_PAYLOAD_MAX)];

/* The first field in which frame a differs from b, or NULL. Decoding zeroes
 * the fields a type does not use, and the frames built here leave them
 * zero, so every field is compared. */
static const char *frame_diff(const qraft_relay_frame *a,
                              const qraft_relay_frame *b) {
  if (a->type != b->type) return "type";
  if (memcmp(a->peer.bytes, b->peer.bytes, sizeof a->peer.bytes) != 0)
    return "peer";
  if (a->ecn != b->ecn) return "ecn";
  if (a->segment != b->segment) return "segment";
  if (a->data_len != b->data_len) return "data_len";
  if (a->data_len > 0 && memcmp(a->data, b->data, a->data_len) != 0)
    return "data";
  if (memcmp(a->ping, b->ping, sizeof a->ping) != 0) return "ping";
  if (a->reconnect_in_ms != b->reconnect_in_ms) return "reconnect_in_ms";
  if (a->try_for_ms != b->try_for_ms) return "try_for_ms";
  if (a->status != b->status) return "status";
  if (memcmp(&a->addr, &b->addr, sizeof a->addr) != 0) return "addr";
  return NULL;
}

static int expect_cb(void *ud, const qraft_relay_frame *f) {
  expect *x = ud;
  if (x->got >= x->want_n) {
    fail_msg("frame %zu delivered; the stream holds %zu (feeding stream "
             "bytes %zu to %zu)",
             x->got, x->want_n, x->piece_at, x->piece_at + x->piece_len);
  }
  const qraft_relay_frame *w = &x->want[x->got];
  const char *d = frame_diff(f, w);
  if (d != NULL) {
    fail_msg("frame %zu (%s): its %s differs (feeding stream bytes %zu to "
             "%zu)",
             x->got, qraft_relay_frame_name(w->type), d, x->piece_at,
             x->piece_at + x->piece_len);
  }
  return x->got++ == x->stop_at ? x->stop_rv : 0;
}

/* Feeds stream[at, at + len), noting it for a failure's message. */
static int feed_piece(expect *x, size_t at, size_t len, qraft_err *err) {
  x->piece_at = at;
  x->piece_len = len;
  return qraft_relay_reader_feed(&x->r, stream + at, len, expect_cb, x, err);
}

/* A failed QRAFT_ASSERT inside the reader fails the running test (cmocka's
 * fail_msg jumps back to the runner: the hook never returns into qraft)
 * rather than aborting the binary, so the other tests still report. The
 * hook clears itself when it fires: each reader test installs it again. */
static void assertion_fails_test(const char *msg, void *ud) {
  expect *x = ud;
  fail_msg("%s (feeding stream bytes %zu to %zu, after %zu frames)", msg,
           x->piece_at, x->piece_at + x->piece_len, x->got);
}

static int reader_setup(void **st) {
  expect *x = calloc(1, sizeof *x);
  if (x == NULL) {
    return -1;
  }
  x->stop_at = SIZE_MAX;
  qraft_assert_set_hook(assertion_fails_test, x);
  *st = x;
  return 0;
}

static int reader_teardown(void **st) {
  expect *x = *st;
  qraft_assert_set_hook(NULL, NULL);
  qraft_relay_reader_free(&x->r);
  free(x);
  return 0;
}

#define READER_TEST(t) \
  cmocka_unit_test_setup_teardown(t, reader_setup, reader_teardown)

/* Starts over: an empty reader, nothing delivered, no stop. */
static void expect_reset(expect *x) {
  qraft_relay_reader_free(&x->r);
  x->got = 0;
  x->stop_at = SIZE_MAX;
}

/* The reader grows its buffer from 2048 bytes by doubling (reader_room in
 * src/wire/relay.c): holding at most one frame, it never needs more than
 * the first such size that holds the largest frame. */
static size_t one_frame_cap(void) {
  size_t cap = 2048;
  while (cap < QRAFT_RELAY_HEADER_MAX + QRAFT_RELAY_PAYLOAD_MAX) {
    cap *= 2;
  }
  return cap;
}

/* splitmix64 */
static uint64_t rand_next(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* QRAFT_TEST_SEED, or 1; printed with the command that replays it. */
static uint64_t test_seed(void) {
  const char *s = getenv("QRAFT_TEST_SEED");
  uint64_t seed = s != NULL ? strtoull(s, NULL, 0) : 1;
  printf("# seed %llu (replay: QRAFT_TEST_SEED=%llu build/tests/"
         "unit_wire_relay)\n",
         (unsigned long long)seed, (unsigned long long)seed);
  fflush(stdout); /* before a failure's message on stderr */
  return seed;
}

/* The longest piece of a round of random pieces: short ones cut headers
 * often, long ones carry several frames, or the largest ones whole. */
static size_t random_piece_max(uint64_t *rng) {
  static const size_t maxes[] = {4, 24, 64, 4096, 2 * QRAFT_RELAY_PAYLOAD_MAX};
  return maxes[rand_next(rng) % (sizeof maxes / sizeof maxes[0])];
}

/* Feeds stream[at, at + len) in pieces of piece_max bytes, or of 1 to
 * piece_max bytes drawn from *rng when rng is not NULL. After every feed
 * the reader holds less than one frame, in a buffer no larger than one
 * frame needs. Returns the reader's first nonzero return, or 0. */
static int feed(expect *x, size_t at, size_t len, size_t piece_max,
                uint64_t *rng) {
  size_t off = 0;
  while (off < len) {
    size_t n = rng != NULL ? 1 + (size_t)(rand_next(rng) % piece_max)
                           : piece_max;
    if (n > len - off) {
      n = len - off;
    }
    int rv = feed_piece(x, at + off, n, NULL);
    assert_true(x->r.len < QRAFT_RELAY_HEADER_MAX + QRAFT_RELAY_PAYLOAD_MAX);
    assert_true(x->r.cap <= one_frame_cap());
    if (rv != 0) {
      return rv;
    }
    off += n;
  }
  return 0;
}

/* Encodes fs[0..n) back to back into `stream`; ends[i] (if ends is not
 * NULL) is where frame i ends. Returns the stream's length. */
static size_t encode_all(const qraft_relay_frame *fs, size_t n, size_t *ends) {
  size_t off = 0;
  for (size_t i = 0; i < n; i++) {
    size_t k = qraft_relay_frame_size(&fs[i]);
    assert_true(k > 0);
    assert_true(k <= sizeof stream - off);
    assert_int_equal(qraft_relay_frame_encode(&fs[i], stream + off), k);
    off += k;
    if (ends != NULL) {
      ends[i] = off;
    }
  }
  return off;
}

static uint8_t dgram[QRAFT_RELAY_PAYLOAD_MAX];

/* Frames of every layout: datagrams of 1200 bytes and of the largest size,
 * a batch, small fixed layouts, text, and a type we do not know (40). Writes
 * them to fs (room for 16); returns how many. */
static size_t mixed_frames(qraft_relay_frame *fs) {
  for (size_t i = 0; i < sizeof dgram; i++) {
    dgram[i] = (uint8_t)(i * 31 + 7);
  }
  size_t n = 0;
  fs[n] = (qraft_relay_frame){.type = QRAFT_RELAY_SEND, .ecn = 1,
                              .data = dgram, .data_len = 1200};
  memset(fs[n++].peer.bytes, 0x11, QRAFT_KEY_BYTES);
  fs[n++] = (qraft_relay_frame){.type = QRAFT_RELAY_PING,
                                .ping = {1, 2, 3, 4, 5, 6, 7, 8}};
  fs[n] = (qraft_relay_frame){.type = QRAFT_RELAY_OBSERVED_ADDR};
  struct sockaddr_in *a4 = (struct sockaddr_in *)&fs[n++].addr;
  a4->sin_family = AF_INET;
  a4->sin_port = htons(7001);
  inet_pton(AF_INET, "203.0.113.7", &a4->sin_addr);
  fs[n] = (qraft_relay_frame){.type = QRAFT_RELAY_OBSERVED_ADDR};
  struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&fs[n++].addr;
  a6->sin6_family = AF_INET6;
  a6->sin6_port = htons(443);
  inet_pton(AF_INET6, "2001:db8::7", &a6->sin6_addr);
  fs[n++] = (qraft_relay_frame){.type = QRAFT_RELAY_STATUS,
                                .status = QRAFT_RELAY_STATUS_SAME_ID_ELSEWHERE};
  const char *text = "relay degraded: h\xc3\xa9";
  fs[n++] = (qraft_relay_frame){.type = QRAFT_RELAY_HEALTH,
                                .data = (const uint8_t *)text,
                                .data_len = strlen(text)};
  fs[n++] = (qraft_relay_frame){.type = 40, .data = dgram + 5,
                                .data_len = 300};
  fs[n] = (qraft_relay_frame){.type = QRAFT_RELAY_SEND, .ecn = 3,
                              .data = dgram + 1,
                              .data_len = QRAFT_RELAY_DATAGRAM_MAX};
  memset(fs[n++].peer.bytes, 0x22, QRAFT_KEY_BYTES);
  fs[n] = (qraft_relay_frame){.type = QRAFT_RELAY_PEER_GONE};
  memset(fs[n++].peer.bytes, 0x33, QRAFT_KEY_BYTES);
  fs[n++] = (qraft_relay_frame){.type = QRAFT_RELAY_RESTARTING,
                                .reconnect_in_ms = 500, .try_for_ms = 30000};
  fs[n] = (qraft_relay_frame){.type = QRAFT_RELAY_RECV_BATCH, .segment = 600,
                              .data = dgram + 2, .data_len = 1500};
  memset(fs[n++].peer.bytes, 0x44, QRAFT_KEY_BYTES);
  fs[n++] = (qraft_relay_frame){.type = QRAFT_RELAY_PONG,
                                .ping = {8, 7, 6, 5, 4, 3, 2, 1}};
  return n;
}

static void reader_delivers_the_same_frames_however_the_stream_is_split(
    void **st) {
  expect *x = *st;
  qraft_relay_frame fs[16];
  x->want = fs;
  x->want_n = mixed_frames(fs);
  size_t len = encode_all(fs, x->want_n, NULL);
  uint64_t rng = test_seed();

  /* all at once */
  assert_int_equal(feed(x, 0, len, len, NULL), 0);
  assert_int_equal(x->got, x->want_n);
  assert_int_equal(x->r.len, 0);

  /* one byte at a time */
  expect_reset(x);
  assert_int_equal(feed(x, 0, len, 1, NULL), 0);
  assert_int_equal(x->got, x->want_n);
  assert_int_equal(x->r.len, 0);

  /* in random pieces */
  for (int round = 0; round < 300; round++) {
    expect_reset(x);
    assert_int_equal(feed(x, 0, len, random_piece_max(&rng), &rng), 0);
    assert_int_equal(x->got, x->want_n);
    assert_int_equal(x->r.len, 0);
  }
}

/* Small frames cut in two at every byte: the first piece's frames come out
 * with the first feed, the rest with the second. A cut inside a header
 * followed by more than the rest of that frame is the case to watch. */
static void reader_delivers_every_frame_wherever_one_cut_falls(void **st) {
  expect *x = *st;
  qraft_relay_frame all[16];
  size_t all_n = mixed_frames(all);
  qraft_relay_frame fs[16];
  size_t n = 0;
  for (size_t i = 0; i < all_n; i++) {
    if (qraft_relay_frame_size(&all[i]) < 100) {
      fs[n++] = all[i];
    }
  }
  assert_true(n >= 6);
  x->want = fs;
  x->want_n = n;
  size_t ends[16];
  size_t len = encode_all(fs, n, ends);
  for (size_t cut = 1; cut < len; cut++) {
    expect_reset(x);
    assert_int_equal(feed_piece(x, 0, cut, NULL), 0);
    size_t whole = 0;
    while (whole < n && ends[whole] <= cut) {
      whole++;
    }
    assert_int_equal(x->got, whole);
    assert_int_equal(x->r.len, cut - (whole > 0 ? ends[whole - 1] : 0));
    assert_int_equal(feed_piece(x, cut, len - cut, NULL), 0);
    assert_int_equal(x->got, n);
    assert_int_equal(x->r.len, 0);
  }
}

/* The header: "a nonzero return stops the reader and is returned". The
 * frames after the stopping one are not delivered by that feed. It does
 * not say what becomes of their bytes: the reader holds none of them
 * (r.len is 0), so feeding again from the end of the stopping frame
 * delivers the rest, which is what these last checks pin down. */
static void reader_stops_at_the_callbacks_nonzero_return(void **st) {
  expect *x = *st;
  qraft_relay_frame fs[16];
  x->want = fs;
  x->want_n = mixed_frames(fs);
  size_t ends[16];
  size_t len = encode_all(fs, x->want_n, ends);

  /* stopped on a frame decoded in place: the PING, frame 1 */
  x->stop_at = 1;
  x->stop_rv = 7;
  assert_int_equal(feed(x, 0, len, len, NULL), 7);
  assert_int_equal(x->got, 2);
  assert_int_equal(x->r.len, 0);
  x->stop_at = SIZE_MAX;
  assert_int_equal(feed(x, ends[1], len - ends[1], len, NULL), 0);
  assert_int_equal(x->got, x->want_n);

  /* stopped on a frame completed from held bytes, with a negative code (as
   * the relay server's callback returns QRAFT_ECLOSED): the SEND, frame 0,
   * cut inside its datagram */
  expect_reset(x);
  x->stop_at = 0;
  x->stop_rv = QRAFT_ECLOSED;
  assert_int_equal(feed(x, 0, 600, 600, NULL), 0);
  assert_int_equal(x->got, 0);
  assert_int_equal(x->r.len, 600);
  assert_int_equal(feed(x, 600, len - 600, len, NULL), QRAFT_ECLOSED);
  assert_int_equal(x->got, 1);
  assert_int_equal(x->r.len, 0);
  x->stop_at = SIZE_MAX;
  assert_int_equal(feed(x, ends[0], len - ends[0], len, NULL), 0);
  assert_int_equal(x->got, x->want_n);

  /* stopped on the last frame: the feed returns the code all the same */
  expect_reset(x);
  x->stop_at = x->want_n - 1;
  x->stop_rv = 1;
  assert_int_equal(feed(x, 0, len, 1, NULL), 1);
  assert_int_equal(x->got, x->want_n);
}

/* A PING, then the header of a frame that announces more than
 * QRAFT_RELAY_PAYLOAD_MAX bytes: QRAFT_ELIMIT as soon as the header is in,
 * whether it comes whole, cut in two anywhere, or a byte at a time, and
 * the reader never makes room for the payload announced. */
static void reader_refuses_an_oversized_frame_even_with_its_header_cut(
    void **st) {
  expect *x = *st;
  qraft_relay_frame ping = {.type = QRAFT_RELAY_PING, .ping = {9}};
  x->want = &ping;
  x->want_n = 1;
  /* SEND of 65601 bytes (a 4-byte varint); type 40 of 2^62 - 1 bytes (an
   * 8-byte type varint, an 8-byte length varint: QRAFT_RELAY_HEADER_MAX) */
  static const uint8_t over[][16] = {
      {QRAFT_RELAY_SEND, 0x80, 0x01, 0x00, 0x41},
      {0xc0, 0, 0, 0, 0, 0, 0, 40, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
       0xff}};
  static const size_t over_len[] = {5, 16};
  for (size_t o = 0; o < 2; o++) {
    size_t p = encode_all(&ping, 1, NULL);
    memcpy(stream + p, over[o], over_len[o]);
    size_t len = p + over_len[o];

    expect_reset(x);
    qraft_err err;
    qraft_err_init(&err, 0);
    assert_int_equal(feed_piece(x, 0, len, &err), QRAFT_ELIMIT);
    assert_true(err.frames_n > 0); /* it says why */
    assert_int_equal(x->got, 1);

    /* cut once, inside the oversized header */
    for (size_t cut = p + 1; cut < len; cut++) {
      expect_reset(x);
      assert_int_equal(feed(x, 0, cut, cut, NULL), 0);
      assert_int_equal(x->r.len, cut - p);
      assert_int_equal(feed(x, cut, len - cut, len, NULL), QRAFT_ELIMIT);
      assert_int_equal(x->got, 1);
      assert_true(x->r.cap <= 2048);
    }

    /* a byte at a time: refused on the header's last byte */
    expect_reset(x);
    for (size_t i = 0; i < len; i++) {
      assert_int_equal(feed_piece(x, i, 1, NULL),
                       i + 1 < len ? 0 : QRAFT_ELIMIT);
    }
    assert_int_equal(x->got, 1);
    assert_true(x->r.cap <= 2048);
  }

  /* exactly QRAFT_RELAY_PAYLOAD_MAX is allowed */
  qraft_relay_frame most = {.type = 40, .data = dgram,
                            .data_len = QRAFT_RELAY_PAYLOAD_MAX};
  x->want = &most;
  expect_reset(x);
  size_t len = encode_all(&most, 1, NULL);
  assert_int_equal(feed(x, 0, len, 1000, NULL), 0);
  assert_int_equal(x->got, 1);
}

/* Frames of the largest payloads between small ones, fed in random pieces:
 * feed() checks after every call that the reader holds less than one frame
 * and that its buffer stays within what one frame needs. */
static void reader_holds_at_most_one_frame(void **st) {
  expect *x = *st;
  for (size_t i = 0; i < sizeof dgram; i++) {
    dgram[i] = (uint8_t)(i * 31 + 7);
  }
  qraft_relay_frame fs[24];
  size_t n = 0;
  for (int k = 0; k < 3; k++) {
    fs[n++] = (qraft_relay_frame){.type = 40 + (uint64_t)k, .data = dgram,
                                  .data_len = QRAFT_RELAY_PAYLOAD_MAX};
    fs[n++] = (qraft_relay_frame){.type = QRAFT_RELAY_PING,
                                  .ping = {(uint8_t)k}};
    fs[n] = (qraft_relay_frame){.type = QRAFT_RELAY_RECV, .data = dgram + k,
                                .data_len = QRAFT_RELAY_DATAGRAM_MAX};
    memset(fs[n++].peer.bytes, k, QRAFT_KEY_BYTES);
    fs[n++] = (qraft_relay_frame){.type = QRAFT_RELAY_STATUS};
    fs[n] = (qraft_relay_frame){.type = QRAFT_RELAY_SEND_BATCH,
                                .segment = 1200, .data = dgram,
                                .data_len = QRAFT_RELAY_DATAGRAM_MAX};
    memset(fs[n++].peer.bytes, k + 8, QRAFT_KEY_BYTES);
    fs[n++] = (qraft_relay_frame){.type = 41, .data = dgram, .data_len = 3};
  }
  x->want = fs;
  x->want_n = n;
  size_t len = encode_all(fs, n, NULL);
  uint64_t rng = test_seed();
  for (int round = 0; round < 100; round++) {
    expect_reset(x);
    assert_int_equal(feed(x, 0, len, random_piece_max(&rng), &rng), 0);
    assert_int_equal(x->got, n);
  }
  /* and the largest frames a byte at a time */
  expect_reset(x);
  assert_int_equal(feed(x, 0, len, 1, NULL), 0);
  assert_int_equal(x->got, n);
}

/* A SEND, then a known frame whose payload does not fit its layout, then a
 * PING: QRAFT_EMALFORMED, the SEND delivered and the PING not, however the
 * bytes are cut. */
static void reader_refuses_a_malformed_frame_whole_or_cut(void **st) {
  expect *x = *st;
  qraft_relay_frame fs[2];
  fs[0] = (qraft_relay_frame){.type = QRAFT_RELAY_SEND, .data = dgram,
                              .data_len = 1200};
  fs[1] = (qraft_relay_frame){.type = QRAFT_RELAY_PING, .ping = {1}};
  x->want = fs;
  x->want_n = 1; /* the PING must not come out */
  static const uint8_t bad[][9] = {
      {QRAFT_RELAY_STATUS, 2, 0, 0}, /* STATUS of 2 bytes */
      {QRAFT_RELAY_STATUS, 1, 2},    /* STATUS 2 */
      {QRAFT_RELAY_OBSERVED_ADDR, 7, 5, 1, 2, 3, 4, 0, 80}}; /* family 5 */
  static const size_t bad_len[] = {4, 3, 9};
  for (size_t b = 0; b < 3; b++) {
    size_t s = encode_all(&fs[0], 1, NULL);
    memcpy(stream + s, bad[b], bad_len[b]);
    size_t len = s + bad_len[b];
    size_t t = qraft_relay_frame_encode(&fs[1], stream + len);
    assert_true(t > 0);
    len += t;

    expect_reset(x);
    qraft_err err;
    qraft_err_init(&err, 0);
    assert_int_equal(feed_piece(x, 0, len, &err), QRAFT_EMALFORMED);
    assert_true(err.frames_n > 0);
    assert_int_equal(x->got, 1);

    for (size_t cut = 1; cut < len; cut++) {
      expect_reset(x);
      int rv = feed(x, 0, cut, cut, NULL);
      if (rv == 0) {
        rv = feed(x, cut, len - cut, len, NULL);
      }
      assert_int_equal(rv, QRAFT_EMALFORMED);
      assert_int_equal(x->got, 1);
    }

    expect_reset(x);
    assert_int_equal(feed(x, 0, len, 1, NULL), QRAFT_EMALFORMED);
    assert_int_equal(x->got, 1);
  }
}

/* Freeing a zeroed reader does nothing; freeing one that holds part of a
 * frame releases its buffer (ASan's leak check sees the rest) and leaves it
 * zeroed, ready to read a stream from its start. */
static void reader_free_releases_a_held_frame(void **st) {
  expect *x = *st;
  qraft_relay_reader zero = {0};
  qraft_relay_reader_free(&zero);
  assert_null(zero.buf);
  assert_int_equal(zero.len, 0);
  assert_int_equal(zero.cap, 0);

  qraft_relay_frame f = {.type = QRAFT_RELAY_SEND, .data = dgram,
                         .data_len = 1200};
  x->want = &f;
  x->want_n = 1;
  size_t len = encode_all(&f, 1, NULL);
  assert_int_equal(feed(x, 0, 600, 600, NULL), 0);
  assert_int_equal(x->r.len, 600);
  assert_non_null(x->r.buf);
  qraft_relay_reader_free(&x->r);
  assert_null(x->r.buf);
  assert_int_equal(x->r.len, 0);
  assert_int_equal(x->r.cap, 0);
  qraft_relay_reader_free(&x->r); /* twice is fine */

  assert_int_equal(feed(x, 0, len, 7, NULL), 0);
  assert_int_equal(x->got, 1);
  assert_int_equal(x->r.len, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(golden_bytes_follow_iroh_layouts),
      cmocka_unit_test(every_type_round_trips),
      cmocka_unit_test(what_does_not_fit_is_refused),
      cmocka_unit_test(a_stream_of_frames_decodes_in_order),
      READER_TEST(reader_delivers_the_same_frames_however_the_stream_is_split),
      READER_TEST(reader_delivers_every_frame_wherever_one_cut_falls),
      READER_TEST(reader_stops_at_the_callbacks_nonzero_return),
      READER_TEST(reader_refuses_an_oversized_frame_even_with_its_header_cut),
      READER_TEST(reader_holds_at_most_one_frame),
      READER_TEST(reader_refuses_a_malformed_frame_whole_or_cut),
      READER_TEST(reader_free_releases_a_held_frame),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
