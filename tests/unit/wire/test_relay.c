/* The relay protocol's frames (include/qraft/relay.h): golden bytes, round
 * trips of every type, and refusals of what does not fit a layout. */
#include "cmocka_all.h"
#include <qraft/relay.h>

#include <arpa/inet.h>
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

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(golden_bytes_follow_iroh_layouts),
      cmocka_unit_test(every_type_round_trips),
      cmocka_unit_test(what_does_not_fit_is_refused),
      cmocka_unit_test(a_stream_of_frames_decodes_in_order),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
