/* libFuzzer target: a relay stream as a client or the relay reads it,
 * frames until the bytes run out or one is refused. Every frame accepted
 * encodes again (with the shortest varints, so in at most the bytes it
 * came in) and decodes to the same fields.
 *
 * Then the same bytes go through a qraft_relay_reader in pieces whose
 * lengths follow from a hash of the input: it must deliver exactly the
 * frames decoded in place, each one re-encoding as above, and end as the
 * in-place loop did (the same refusal, or the unfinished tail held), never
 * holding more than one frame. */
#include <qraft/assert.h>
#include <qraft/relay.h>

#include <string.h>

static uint8_t again[QRAFT_RELAY_PAYLOAD_MAX + QRAFT_RELAY_HEADER_MAX];

/* f, decoded from bytes where it took `used`, encodes again in at most
 * those bytes and decodes to the same fields. */
static void check_reencodes(const qraft_relay_frame *f, size_t used) {
  size_t n = qraft_relay_frame_size(f);
  QRAFT_ASSERT(n > 0 && n <= used);
  QRAFT_ASSERT(qraft_relay_frame_encode(f, again) == n);
  qraft_relay_frame g;
  size_t used2 = 0;
  QRAFT_ASSERT(qraft_relay_frame_decode(again, n, &g, &used2, NULL) == 0);
  QRAFT_ASSERT(used2 == n && g.type == f->type && g.data_len == f->data_len &&
               g.ecn == f->ecn && g.segment == f->segment &&
               g.status == f->status &&
               g.reconnect_in_ms == f->reconnect_in_ms &&
               g.try_for_ms == f->try_for_ms &&
               memcmp(g.peer.bytes, f->peer.bytes, sizeof f->peer.bytes) == 0 &&
               memcmp(g.ping, f->ping, 8) == 0 &&
               memcmp(&g.addr, &f->addr, sizeof f->addr) == 0 &&
               (f->data_len == 0 || memcmp(g.data, f->data, f->data_len) == 0));
}

/* Where the reader is in the input: the next frame it delivers must be the
 * one that decodes in place at `off`. */
typedef struct reader_check {
  const uint8_t *data;
  size_t size, off;
} reader_check;

static int reader_frame(void *ud, const qraft_relay_frame *f) {
  reader_check *c = ud;
  qraft_relay_frame want;
  size_t used = 0;
  QRAFT_ASSERTF(qraft_relay_frame_decode(c->data + c->off, c->size - c->off,
                                         &want, &used, NULL) == 0,
                "the reader delivered a frame at %zu that does not decode "
                "there", c->off);
  check_reencodes(f, used);
  QRAFT_ASSERTF(f->type == want.type && f->data_len == want.data_len &&
                    (f->data_len == 0 ||
                     memcmp(f->data, want.data, f->data_len) == 0),
                "the reader's frame at %zu differs from the one there",
                c->off);
  c->off += used;
  return 0;
}

/* splitmix64 */
static uint64_t rand_next(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* Feeds data[0..size) to a reader in pieces; `end` and `rc_end` are where
 * and how the in-place loop stopped. */
static void feed_reader(const uint8_t *data, size_t size, size_t end,
                        int rc_end) {
  uint64_t rng = 0xcbf29ce484222325ull; /* FNV-1a of the input */
  for (size_t i = 0; i < size; i++) {
    rng = (rng ^ data[i]) * 0x100000001b3ull;
  }
  /* short pieces cut headers; long ones carry several frames */
  size_t piece_max = (rng & 1) != 0 ? 24 : size;
  reader_check c = {data, size, 0};
  qraft_relay_reader r = {0};
  size_t cap_max = 2048; /* the reader's growth: from 2048, doubling */
  while (cap_max < QRAFT_RELAY_HEADER_MAX + QRAFT_RELAY_PAYLOAD_MAX) {
    cap_max *= 2;
  }
  size_t off = 0;
  int rc = 0;
  while (off < size && rc == 0) {
    size_t n = 1 + (size_t)(rand_next(&rng) % piece_max);
    if (n > size - off) {
      n = size - off;
    }
    rc = qraft_relay_reader_feed(&r, data + off, n, reader_frame, &c, NULL);
    off += n;
    QRAFT_ASSERT(r.len < QRAFT_RELAY_HEADER_MAX + QRAFT_RELAY_PAYLOAD_MAX);
    QRAFT_ASSERTF(r.cap <= cap_max, "the reader holds %zu bytes of room",
                  r.cap);
  }
  QRAFT_ASSERTF(c.off == end, "the reader delivered frames up to %zu, the "
                "loop decoded up to %zu", c.off, end);
  if (rc_end == 0 || rc_end == QRAFT_ETRUNCATED) {
    QRAFT_ASSERTF(rc == 0, "the reader returned %d", rc);
    QRAFT_ASSERT(r.len == size - end);
  } else {
    QRAFT_ASSERTF(rc == rc_end, "the reader returned %d, the loop %d", rc,
                  rc_end);
  }
  qraft_relay_reader_free(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  size_t off = 0;
  int rc = 0;
  while (off < size) {
    qraft_relay_frame f;
    size_t used = 0;
    qraft_err err;
    qraft_err_init(&err, 0);
    rc = qraft_relay_frame_decode(data + off, size - off, &f, &used, &err);
    if (rc != 0) {
      QRAFT_ASSERTF(rc == QRAFT_ETRUNCATED || rc == QRAFT_EMALFORMED ||
                        rc == QRAFT_ELIMIT,
                    "unexpected code %d", rc);
      QRAFT_ASSERT(err.frames_n > 0);
      QRAFT_ASSERT(rc != QRAFT_ETRUNCATED || used == 0 || used > size - off);
      break;
    }
    QRAFT_ASSERT(used > 0 && used <= size - off);
    check_reencodes(&f, used);
    off += used;
  }
  feed_reader(data, size, off, rc);
  return 0;
}
