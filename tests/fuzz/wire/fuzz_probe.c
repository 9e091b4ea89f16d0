/* fuzz_probe: path probes (qraft/probe.h). Any input decodes to a verified
 * probe or a refusal, never a crash; and a probe built from the input,
 * signed, decodes to itself, while the same bytes with one bit flipped (at
 * a place the input picks) do not verify. */
#include <qraft/assert.h>
#include <qraft/probe.h>

#include <netinet/in.h>
#include <stdint.h>
#include <string.h>

static size_t take(const uint8_t **d, size_t *n, void *out, size_t want) {
  size_t k = *n < want ? *n : want;
  memset(out, 0, want);
  memcpy(out, *d, k);
  *d += k;
  *n -= k;
  return k;
}

static void addr_from(const uint8_t **d, size_t *n,
                      struct sockaddr_storage *a) {
  uint8_t b[19];
  take(d, n, b, sizeof b);
  memset(a, 0, sizeof *a);
  if (b[0] & 1) {
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)a;
    s6->sin6_family = AF_INET6;
    memcpy(&s6->sin6_addr, b + 1, 16);
    memcpy(&s6->sin6_port, b + 17, 2);
  } else {
    struct sockaddr_in *s4 = (struct sockaddr_in *)a;
    s4->sin_family = AF_INET;
    memcpy(&s4->sin_addr, b + 1, 4);
    memcpy(&s4->sin_port, b + 5, 2);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  qraft_probe p;
  if (qraft_probe_decode(data, size, &p, NULL) == 0) {
    QRAFT_ASSERT(qraft_probe_is(data, size));
    QRAFT_ASSERT(p.addrs_n <= QRAFT_PROBE_ADDRS_MAX);
  }
  if (size == 0) {
    return 0;
  }
  static qraft_secret_key key;
  static int have_key;
  if (!have_key) {
    uint8_t seed[QRAFT_KEY_BYTES] = {7};
    qraft_secret_key_from_seed(&key, seed);
    have_key = 1;
  }
  const uint8_t *d = data;
  size_t n = size;
  uint8_t head[3];
  take(&d, &n, head, sizeof head);
  qraft_probe in;
  memset(&in, 0, sizeof in);
  in.type = (uint8_t)(1 + head[0] % 3);
  if (in.type == QRAFT_PROBE_CALL_ME_MAYBE) {
    in.addrs_n = head[1] % (QRAFT_PROBE_ADDRS_MAX + 1);
    for (uint32_t i = 0; i < in.addrs_n; i++) {
      addr_from(&d, &n, &in.addrs[i]);
    }
  } else {
    take(&d, &n, in.txid, sizeof in.txid);
    addr_from(&d, &n, &in.addr);
  }
  uint8_t buf[QRAFT_PROBE_MAX];
  size_t len = qraft_probe_encode(&in, &key, buf, sizeof buf);
  QRAFT_ASSERT(len > 0);
  qraft_probe out;
  QRAFT_ASSERT(qraft_probe_decode(buf, len, &out, NULL) == 0);
  QRAFT_ASSERT(out.type == in.type && out.addrs_n == in.addrs_n);
  QRAFT_ASSERT(memcmp(out.txid, in.txid, sizeof in.txid) == 0);
  size_t bit = ((size_t)head[1] << 8 | head[2]) % (len * 8);
  buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
  QRAFT_ASSERT(qraft_probe_decode(buf, len, &out, NULL) != 0);
  return 0;
}
