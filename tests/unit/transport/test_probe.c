/* Path probes: every type round-trips, the layout is as documented, and no
 * change to a signed probe (a flipped bit, a cut, another sender, another
 * context) passes. */
#include "cmocka_all.h"

#include <qraft/probe.h>

#include <arpa/inet.h>
#include <nettle/eddsa.h>
#include <netinet/in.h>
#include <string.h>

static void key_of(int i, qraft_secret_key *k) {
  uint8_t s[QRAFT_KEY_BYTES];
  for (int j = 0; j < QRAFT_KEY_BYTES; j++) {
    s[j] = (uint8_t)(i * 29 + j);
  }
  qraft_secret_key_from_seed(k, s);
}

static struct sockaddr_storage v4(const char *ip, uint16_t port) {
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  struct sockaddr_in *a = (struct sockaddr_in *)&ss;
  a->sin_family = AF_INET;
  a->sin_port = htons(port);
  inet_pton(AF_INET, ip, &a->sin_addr);
  return ss;
}

static struct sockaddr_storage v6(const char *ip, uint16_t port) {
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
  a->sin6_family = AF_INET6;
  a->sin6_port = htons(port);
  inet_pton(AF_INET6, ip, &a->sin6_addr);
  return ss;
}

static void probes(qraft_probe *out) {
  memset(out, 0, 4 * sizeof *out);
  out[0].type = QRAFT_PROBE_PING;
  memset(out[0].txid, 0xab, sizeof out[0].txid);
  out[0].addr = v4("203.0.113.7", 7000);
  out[1].type = QRAFT_PROBE_PONG;
  memset(out[1].txid, 0x17, sizeof out[1].txid);
  out[1].addr = v6("2001:db8::1", 443);
  out[2].type = QRAFT_PROBE_CALL_ME_MAYBE;
  out[3].type = QRAFT_PROBE_CALL_ME_MAYBE;
  out[3].addrs_n = QRAFT_PROBE_ADDRS_MAX;
  for (uint32_t i = 0; i < QRAFT_PROBE_ADDRS_MAX; i++) {
    out[3].addrs[i] = i % 2 ? v6("fd00::2", (uint16_t)(1000 + i))
                            : v4("10.0.0.2", (uint16_t)(2000 + i));
  }
}

static bool same_addr(const struct sockaddr_storage *a,
                      const struct sockaddr_storage *b) {
  return memcmp(a, b, a->ss_family == AF_INET ? sizeof(struct sockaddr_in)
                                              : sizeof(struct sockaddr_in6)) ==
         0;
}

static void every_type_round_trips(void **st) {
  (void)st;
  qraft_secret_key k;
  key_of(1, &k);
  qraft_probe in[4];
  probes(in);
  for (int t = 0; t < 4; t++) {
    uint8_t buf[QRAFT_PROBE_MAX];
    size_t n = qraft_probe_encode(&in[t], &k, buf, sizeof buf);
    assert_true(n > 0 && n <= QRAFT_PROBE_MAX);
    assert_true(qraft_probe_is(buf, n));
    qraft_probe out;
    assert_int_equal(qraft_probe_decode(buf, n, &out, NULL), 0);
    assert_int_equal(out.type, in[t].type);
    assert_true(qraft_node_id_eq(&out.sender, &k.public_key));
    if (in[t].type == QRAFT_PROBE_CALL_ME_MAYBE) {
      assert_int_equal(out.addrs_n, in[t].addrs_n);
      for (uint32_t i = 0; i < out.addrs_n; i++) {
        assert_true(same_addr(&out.addrs[i], &in[t].addrs[i]));
      }
    } else {
      assert_memory_equal(out.txid, in[t].txid, QRAFT_PROBE_TXID_BYTES);
      assert_true(same_addr(&out.addr, &in[t].addr));
    }
  }
  /* the largest is QRAFT_PROBE_MAX */
  uint8_t buf[QRAFT_PROBE_MAX + 8];
  qraft_probe big = in[3];
  for (uint32_t i = 0; i < QRAFT_PROBE_ADDRS_MAX; i++) {
    big.addrs[i] = v6("fd00::9", 9);
  }
  assert_int_equal(qraft_probe_encode(&big, &k, buf, sizeof buf),
                   QRAFT_PROBE_MAX);
}

static void the_layout_is_as_documented(void **st) {
  (void)st;
  qraft_secret_key k;
  key_of(2, &k);
  qraft_probe in[4];
  probes(in);
  uint8_t buf[QRAFT_PROBE_MAX];
  size_t n = qraft_probe_encode(&in[0], &k, buf, sizeof buf);
  /* type 1 | version 0 | sender | txid | family 4, address, port | sig */
  assert_int_equal(n, 2 + 32 + 12 + 7 + 64);
  assert_int_equal(buf[0], 1);
  assert_int_equal(buf[1], 0);
  assert_memory_equal(buf + 2, k.public_key.bytes, 32);
  assert_memory_equal(buf + 34, in[0].txid, 12);
  static const uint8_t addr[] = {4, 203, 0, 113, 7, 0x1b, 0x58};
  assert_memory_equal(buf + 46, addr, sizeof addr);
  /* the signature: Ed25519 over "qraft probe v1" and the bytes before it */
  uint8_t msg[256];
  memcpy(msg, "qraft probe v1", 14);
  memcpy(msg + 14, buf, n - 64);
  assert_true(ed25519_sha512_verify(k.public_key.bytes, 14 + n - 64, msg,
                                    buf + n - 64));
  /* Ed25519 is deterministic: the same probe, the same bytes */
  uint8_t again[QRAFT_PROBE_MAX];
  assert_int_equal(qraft_probe_encode(&in[0], &k, again, sizeof again), n);
  assert_memory_equal(buf, again, n);
}

static void no_change_passes(void **st) {
  (void)st;
  qraft_secret_key k, other;
  key_of(3, &k);
  key_of(4, &other);
  qraft_probe in[4];
  probes(in);
  for (int t = 0; t < 4; t++) {
    uint8_t buf[QRAFT_PROBE_MAX];
    size_t n = qraft_probe_encode(&in[t], &k, buf, sizeof buf);
    qraft_probe out;
    /* every bit of every byte */
    for (size_t i = 0; i < n; i++) {
      for (int b = 0; b < 8; b++) {
        buf[i] ^= (uint8_t)(1u << b);
        int rv = qraft_probe_decode(buf, n, &out, NULL);
        assert_true(rv == QRAFT_EMALFORMED || rv == QRAFT_EAUTH);
        buf[i] ^= (uint8_t)(1u << b);
      }
    }
    /* every cut, and a byte more */
    for (size_t cut = 0; cut < n; cut++) {
      assert_int_not_equal(qraft_probe_decode(buf, cut, &out, NULL), 0);
    }
    uint8_t longer[QRAFT_PROBE_MAX + 1];
    memcpy(longer, buf, n);
    longer[n] = 0;
    assert_int_not_equal(qraft_probe_decode(longer, n + 1, &out, NULL), 0);
    /* another's id on our signature */
    memcpy(buf + 2, other.public_key.bytes, 32);
    assert_int_equal(qraft_probe_decode(buf, n, &out, NULL), QRAFT_EAUTH);
    memcpy(buf + 2, k.public_key.bytes, 32);
    /* a signature over the same bytes without our context */
    ed25519_sha512_sign(k.public_key.bytes, k.seed, n - 64, buf, buf + n - 64);
    qraft_err err;
    qraft_err_init(&err, 0);
    assert_int_equal(qraft_probe_decode(buf, n, &out, &err), QRAFT_EAUTH);
    char msg[256];
    qraft_err_format(&err, msg, sizeof msg);
    assert_non_null(strstr(msg, "signature"));
  }
}

static void quic_is_not_a_probe_and_bad_probes_do_not_encode(void **st) {
  (void)st;
  for (unsigned b = 0; b < 256; b++) {
    uint8_t byte = (uint8_t)b;
    assert_int_equal(qraft_probe_is(&byte, 1), b >= 1 && b <= 3);
  }
  assert_false(qraft_probe_is(NULL, 0));
  qraft_secret_key k;
  key_of(5, &k);
  qraft_probe in[4];
  probes(in);
  uint8_t buf[QRAFT_PROBE_MAX];
  qraft_probe bad = in[0];
  bad.type = 0;
  assert_int_equal(qraft_probe_encode(&bad, &k, buf, sizeof buf), 0);
  bad.type = 4;
  assert_int_equal(qraft_probe_encode(&bad, &k, buf, sizeof buf), 0);
  bad = in[0];
  bad.addr.ss_family = AF_UNIX;
  assert_int_equal(qraft_probe_encode(&bad, &k, buf, sizeof buf), 0);
  bad = in[3];
  bad.addrs_n = QRAFT_PROBE_ADDRS_MAX + 1;
  assert_int_equal(qraft_probe_encode(&bad, &k, buf, sizeof buf), 0);
  assert_int_equal(qraft_probe_encode(&in[0], &k, buf, 40), 0);
  /* a version we do not know, and a count beyond the bound */
  size_t n = qraft_probe_encode(&in[2], &k, buf, sizeof buf);
  qraft_probe out;
  buf[1] = 1;
  assert_int_equal(qraft_probe_decode(buf, n, &out, NULL), QRAFT_EMALFORMED);
  buf[1] = 0;
  buf[34] = QRAFT_PROBE_ADDRS_MAX + 1;
  assert_int_equal(qraft_probe_decode(buf, n, &out, NULL), QRAFT_EMALFORMED);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(every_type_round_trips),
      cmocka_unit_test(the_layout_is_as_documented),
      cmocka_unit_test(no_change_passes),
      cmocka_unit_test(quic_is_not_a_probe_and_bad_probes_do_not_encode),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
