/*
 * storage.c: what every backend shares: releasing entries read back,
 * submit-and-wait, the binary form of a configuration.
 */
#include <qraft/storage.h>

#include "storage/codec.h"

#include <qraft/assert.h>

#include <errno.h>

void qraft_storage_entries_release(qraft_entry *entries, size_t n) {
  for (size_t i = 0; i < n; i++) {
    qraft_slice_release(&entries[i].data);
    qraft_slice_release(&entries[i].context);
  }
}

typedef struct storage_sync_ctx {
  qraft_storage_write_cb user_cb;
  void *user_data;
  bool done;
  int status;
} storage_sync_ctx;

static void storage_sync_cb(qraft_storage_write *w, int status) {
  storage_sync_ctx *ctx = w->data;
  ctx->done = true;
  ctx->status = status;
  w->cb = ctx->user_cb;
  w->data = ctx->user_data;
  if (w->cb != NULL) {
    w->cb(w, status);
  }
}

int qraft_storage_write_sync(qraft_storage *s, qraft_storage_write *w,
                             qraft_err *err) {
  storage_sync_ctx ctx = {.user_cb = w->cb, .user_data = w->data};
  w->cb = storage_sync_cb;
  w->data = &ctx;
  int rc = qraft_storage_submit(s, w, err);
  if (rc != 0) {
    w->cb = ctx.user_cb;
    w->data = ctx.user_data;
    return rc;
  }
  while (!ctx.done) {
    qraft_storage_wait(s, -1);
    qraft_storage_poll(s);
  }
  if (ctx.status != 0) {
    return QRAFT_ERR(err, ctx.status, "write");
  }
  return 0;
}

bool qraft_conf_state_equal(const qraft_conf_state *a,
                            const qraft_conf_state *b) {
  if (a->voters_n != b->voters_n || a->learners_n != b->learners_n ||
      a->voters_outgoing_n != b->voters_outgoing_n ||
      a->learners_next_n != b->learners_next_n ||
      a->auto_leave != b->auto_leave) {
    return false;
  }
  for (uint32_t i = 0; i < a->voters_n; i++) {
    if (a->voters[i] != b->voters[i]) {
      return false;
    }
  }
  for (uint32_t i = 0; i < a->learners_n; i++) {
    if (a->learners[i] != b->learners[i]) {
      return false;
    }
  }
  for (uint32_t i = 0; i < a->voters_outgoing_n; i++) {
    if (a->voters_outgoing[i] != b->voters_outgoing[i]) {
      return false;
    }
  }
  for (uint32_t i = 0; i < a->learners_next_n; i++) {
    if (a->learners_next[i] != b->learners_next[i]) {
      return false;
    }
  }
  return true;
}

size_t qraft__conf_encode(uint8_t *p, const qraft_conf_state *c) {
  QRAFT_ASSERT(c->voters_n <= QRAFT_CONF_NODES_MAX &&
               c->learners_n <= QRAFT_CONF_NODES_MAX &&
               c->voters_outgoing_n <= QRAFT_CONF_NODES_MAX &&
               c->learners_next_n <= QRAFT_CONF_NODES_MAX);
  qraft__put32(p, c->voters_n);
  qraft__put32(p + 4, c->learners_n);
  qraft__put32(p + 8, c->voters_outgoing_n);
  qraft__put32(p + 12, c->learners_next_n);
  qraft__put32(p + 16, c->auto_leave ? 1 : 0);
  qraft__put32(p + 20, 0);
  size_t off = 24;
  const qraft_id *lists[4] = {c->voters, c->learners, c->voters_outgoing,
                              c->learners_next};
  const uint32_t ns[4] = {c->voters_n, c->learners_n, c->voters_outgoing_n,
                          c->learners_next_n};
  for (int l = 0; l < 4; l++) {
    for (uint32_t i = 0; i < ns[l]; i++) {
      qraft__put64(p + off, lists[l][i]);
      off += 8;
    }
  }
  QRAFT_ASSERT(off == qraft__conf_size(c));
  return off;
}

size_t qraft__conf_decode(const uint8_t *p, size_t len, qraft_conf_state *c) {
  if (len < 24) {
    return 0;
  }
  uint32_t ns[4];
  for (int l = 0; l < 4; l++) {
    ns[l] = qraft__get32(p + 4 * l);
    if (ns[l] > QRAFT_CONF_NODES_MAX) {
      return 0;
    }
  }
  uint32_t auto_leave = qraft__get32(p + 16);
  if (auto_leave > 1 || qraft__get32(p + 20) != 0) {
    return 0;
  }
  size_t need = 24 + 8 * ((size_t)ns[0] + ns[1] + ns[2] + ns[3]);
  if (len < need) {
    return 0;
  }
  memset(c, 0, sizeof *c);
  c->voters_n = ns[0];
  c->learners_n = ns[1];
  c->voters_outgoing_n = ns[2];
  c->learners_next_n = ns[3];
  c->auto_leave = auto_leave == 1;
  qraft_id *lists[4] = {c->voters, c->learners, c->voters_outgoing,
                        c->learners_next};
  size_t off = 24;
  for (int l = 0; l < 4; l++) {
    for (uint32_t i = 0; i < ns[l]; i++) {
      lists[l][i] = qraft__get64(p + off);
      off += 8;
    }
  }
  return off;
}
