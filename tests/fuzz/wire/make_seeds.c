/* Writes the seed corpora of the wire fuzz targets into
 * tests/fuzz/corpus/{message,frame,preamble}/ (run from the source root):
 *   build/fuzz-tree/bin/make_seeds tests/fuzz/corpus
 * The committed seeds were made with it. */
#include "unit/wire/wire_fixtures.h"

#include <qraft/assert.h>
#include <qraft/varint.h>
#include <qraft/wire.h>

#include <stdio.h>
#include <stdlib.h>

static void put(const char *dir, const char *sub, const char *name,
                const uint8_t *data, size_t len) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s/%s", dir, sub, name);
  FILE *f = fopen(path, "wb");
  QRAFT_ASSERTF(f != NULL, "open %s", path);
  QRAFT_ASSERT(fwrite(data, 1, len, f) == len);
  fclose(f);
}

static size_t message(const qraft_message *m, uint8_t *out, size_t cap) {
  size_t n = 0;
  QRAFT_ASSERT(qraft_wire_message_encode(m, out, cap, &n) == 0);
  return n;
}

static size_t frame(uint64_t group, const qraft_message *m, size_t k,
                    uint8_t *out, size_t cap) {
  size_t n = 0;
  QRAFT_ASSERT(qraft_wire_frame_encode(group, m, k, NULL, out, cap, &n, NULL) == 0);
  return n;
}

int main(int argc, char **argv) {
  QRAFT_ASSERT(argc == 2);
  const char *dir = argv[1];
  static uint8_t buf[1 << 16];
  static uint8_t payload[100][16];
  static qraft_entry entries[100];
  for (int i = 0; i < 100; i++) {
    memset(payload[i], 'a' + i % 26, sizeof payload[i]);
    entries[i] = (qraft_entry){.term = 3, .index = 10 + (uint64_t)i,
                               .data = {.data = payload[i], .len = 16}};
  }
  qraft_message hb = fx_heartbeat(2);
  qraft_message full = fx_full_message();
  qraft_message app = {.type = QRAFT_MSG_APPEND, .to = 2, .from = 1, .term = 3,
                       .log_term = 3, .index = 9, .entries = entries,
                       .entries_n = 100, .commit = 9};
  qraft_message vote = {.type = QRAFT_MSG_REQUEST_PRE_VOTE, .to = 3, .from = 1,
                        .term = 4, .log_term = 3, .index = 109,
                        .priority = -2};
  qraft_message resp = {.type = QRAFT_MSG_APPEND_RESPONSE, .to = 1, .from = 2,
                        .term = 3, .index = 109, .reject = true,
                        .reject_hint = 50, .log_term = 2};

  put(dir, "message", "heartbeat", buf, message(&hb, buf, sizeof buf));
  put(dir, "message", "full", buf, message(&full, buf, sizeof buf));
  put(dir, "message", "append_100", buf, message(&app, buf, sizeof buf));
  put(dir, "message", "pre_vote", buf, message(&vote, buf, sizeof buf));
  put(dir, "message", "append_reject", buf, message(&resp, buf, sizeof buf));
  put(dir, "message", "empty", buf, 0);
  /* unknown fields of every wire type after a heartbeat */
  size_t n = message(&hb, buf, sizeof buf);
  static const uint8_t unknown[] = {0xa0, 0x06, 0x01, 0xa1, 0x06, 1, 2, 3, 4,
                                    5,    6,    7,    8,    0xa2, 0x06, 0x01,
                                    'x',  0xa5, 0x06, 1,    2,    3,    4,
                                    0xa3, 0x06, 0x08, 0x01, 0xa4, 0x06};
  memcpy(buf + n, unknown, sizeof unknown);
  put(dir, "message", "unknown_fields", buf, n + sizeof unknown);
  qraft_conf_change_v2 v2 = {.transition = QRAFT_CONF_TRANSITION_EXPLICIT,
                             .changes_n = 2,
                             .changes = {{QRAFT_CONF_ADD_NODE, 4},
                                         {QRAFT_CONF_ADD_LEARNER_NODE, 5}}};
  QRAFT_ASSERT(qraft_wire_conf_change_v2_encode(&v2, buf, sizeof buf, &n) == 0);
  put(dir, "message", "conf_change_v2", buf, n);

  qraft_message mixed[4] = {hb, full, app, resp};
  put(dir, "frame", "heartbeat", buf, frame(1, &hb, 1, buf, sizeof buf));
  put(dir, "frame", "mixed", buf, frame(7, mixed, 4, buf, sizeof buf));
  put(dir, "frame", "append_100", buf, frame(0, &app, 1, buf, sizeof buf));

  qraft_wire_preamble_encode(0xc1a55e5, 1, buf);
  put(dir, "preamble", "preamble", buf, QRAFT_WIRE_PREAMBLE_BYTES);
  n = QRAFT_WIRE_PREAMBLE_BYTES;
  n += frame(1, &hb, 1, buf + n, sizeof buf - n);
  n += frame(1, mixed, 4, buf + n, sizeof buf - n);
  put(dir, "preamble", "stream", buf, n);
  return 0;
}
