/* libFuzzer target: a relay stream as a client or the relay reads it,
 * frames until the bytes run out or one is refused. Every frame accepted
 * encodes again (with the shortest varints, so in at most the bytes it
 * came in) and decodes to the same fields. */
#include <qraft/assert.h>
#include <qraft/relay.h>

#include <string.h>

static uint8_t again[QRAFT_RELAY_PAYLOAD_MAX + QRAFT_RELAY_HEADER_MAX];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  size_t off = 0;
  while (off < size) {
    qraft_relay_frame f;
    size_t used = 0;
    qraft_err err;
    qraft_err_init(&err, 0);
    int rc = qraft_relay_frame_decode(data + off, size - off, &f, &used, &err);
    if (rc != 0) {
      QRAFT_ASSERTF(rc == QRAFT_ETRUNCATED || rc == QRAFT_EMALFORMED ||
                        rc == QRAFT_ELIMIT,
                    "unexpected code %d", rc);
      QRAFT_ASSERT(err.frames_n > 0);
      QRAFT_ASSERT(rc != QRAFT_ETRUNCATED || used == 0 || used > size - off);
      break;
    }
    QRAFT_ASSERT(used > 0 && used <= size - off);
    size_t n = qraft_relay_frame_size(&f);
    QRAFT_ASSERT(n > 0 && n <= used);
    QRAFT_ASSERT(qraft_relay_frame_encode(&f, again) == n);
    qraft_relay_frame g;
    size_t used2 = 0;
    QRAFT_ASSERT(qraft_relay_frame_decode(again, n, &g, &used2, NULL) == 0);
    QRAFT_ASSERT(used2 == n && g.type == f.type && g.data_len == f.data_len &&
                 g.ecn == f.ecn && g.segment == f.segment &&
                 g.status == f.status &&
                 g.reconnect_in_ms == f.reconnect_in_ms &&
                 g.try_for_ms == f.try_for_ms &&
                 memcmp(g.peer.bytes, f.peer.bytes, sizeof f.peer.bytes) == 0 &&
                 memcmp(g.ping, f.ping, 8) == 0 &&
                 memcmp(&g.addr, &f.addr, sizeof f.addr) == 0 &&
                 (f.data_len == 0 || memcmp(g.data, f.data, f.data_len) == 0));
    off += used;
  }
  return 0;
}
