/* harness.c: see harness.h. */
#include "harness.h"

#include <qraft/assert.h>

#include <stdlib.h>
#include <string.h>

/* The snapshot state travels beside MsgSnapshot (the transport streams it):
 * per receiving node, the last snapshot state received. */
static char h_recv_state[H_NODES_MAX][H_APPLIED_MAX][16];
static uint32_t h_recv_state_n[H_NODES_MAX];
static char h_snap_state[H_NODES_MAX][H_APPLIED_MAX][16];

static int h_slot(harness *h, qraft_id id) {
  for (int i = 0; i < H_NODES_MAX; i++) {
    if (h->nodes[i].id == id) {
      return i;
    }
  }
  QRAFT_ASSERTF(false, "no node %llu", (unsigned long long)id);
  return -1;
}

h_node *h_node_of(harness *h, qraft_id id) { return &h->nodes[h_slot(h, id)]; }

static qraft_slice h_keep(qraft_slice s) {
  if (s.len == 0) {
    return (qraft_slice){0};
  }
  qraft_buf *b = qraft_buf_copy(s.data, s.len);
  QRAFT_ASSERT(b != NULL);
  return (qraft_slice){.data = b->data, .len = s.len, .owner = b};
}

static void h_msg_free(h_msg *hm) {
  for (size_t i = 0; i < hm->m.entries_n; i++) {
    qraft_slice_release(&hm->ents[i].data);
    qraft_slice_release(&hm->ents[i].context);
  }
  hm->used = false;
}

static void h_enqueue(harness *h, const qraft_message *m) {
  QRAFT_ASSERT(h->q_n < H_QUEUE_MAX);
  h_msg *hm = &h->queue[(h->q_start + h->q_n) % H_QUEUE_MAX];
  h->q_n++;
  memset(hm, 0, sizeof *hm);
  hm->used = true;
  hm->m = *m;
  QRAFT_ASSERT(m->entries_n <= 64);
  for (size_t i = 0; i < m->entries_n; i++) {
    hm->ents[i] = m->entries[i];
    hm->ents[i].data = h_keep(m->entries[i].data);
    hm->ents[i].context = h_keep(m->entries[i].context);
  }
  hm->m.entries = hm->ents;
  if (m->context.len > 0) {
    QRAFT_ASSERT(m->context.len <= sizeof hm->ctx);
    memcpy(hm->ctx, m->context.data, m->context.len);
    hm->m.context = (qraft_slice){.data = hm->ctx, .len = m->context.len};
  }
  if (m->snapshot != NULL) {
    hm->snap = *m->snapshot;
    hm->m.snapshot = &hm->snap;
  }
}

static void h_apply(h_node *n, const qraft_entry *e) {
  QRAFT_ASSERT(e->index == n->applied_index + 1);
  n->applied_index = e->index;
  if (e->type == QRAFT_ENTRY_NORMAL && e->data.len > 0) {
    QRAFT_ASSERT(n->applied_n < H_APPLIED_MAX);
    size_t l = e->data.len < 15 ? e->data.len : 15;
    memcpy(n->applied[n->applied_n], e->data.data, l);
    n->applied[n->applied_n][l] = '\0';
    n->applied_n++;
  }
}

static void h_log_truncate(h_node *n, uint64_t from) {
  while (n->log_n > 0 && n->snap.index + n->log_n >= from) {
    n->log_n--;
    qraft_slice_release(&n->log[n->log_n].data);
    qraft_slice_release(&n->log[n->log_n].context);
  }
}

void h_drain(harness *h, qraft_id id) {
  int slot = h_slot(h, id);
  h_node *n = &h->nodes[slot];
  while (n->up && qraft_core_has_update(n->core)) {
    qraft_update u;
    qraft_core_take_update(n->core, &u);
    n->role = u.role;
    /* durable writes first (synchronous disk) */
    if (u.snapshot != NULL) {
      h_log_truncate(n, 0);
      n->snap = *u.snapshot;
      n->applied_index = u.snapshot->index;
      n->applied_n = h_recv_state_n[slot];
      memcpy(n->applied, h_recv_state[slot], sizeof n->applied);
      n->snap_applied_n = n->applied_n;
      memcpy(h_snap_state[slot], n->applied, sizeof n->applied);
    }
    if (u.truncate_from != 0) {
      h_log_truncate(n, u.truncate_from);
    }
    for (size_t i = 0; i < u.entries_n; i++) {
      QRAFT_ASSERT(u.entries[i].index == n->snap.index + n->log_n + 1);
      QRAFT_ASSERT(n->log_n < H_APPLIED_MAX);
      n->log[n->log_n] = u.entries[i];
      n->log[n->log_n].data = h_keep(u.entries[i].data);
      n->log[n->log_n].context = h_keep(u.entries[i].context);
      n->log_n++;
    }
    if (u.hard_state_changed) {
      n->hs = u.hard_state;
    }
    for (size_t i = 0; i < u.messages_n; i++) {
      h_enqueue(h, &u.messages[i]);
    }
    /* (a held node sends nothing that waits for durability; the tests that
     * hold a node use it for a leader, which sends its appends at once) */
    for (size_t i = 0; i < u.messages_after_persist_n && !n->hold; i++) {
      h_enqueue(h, &u.messages_after_persist[i]);
    }
    uint64_t last_applied = 0;
    for (size_t i = 0; i < u.committed_n; i++) {
      h_apply(n, &u.committed[i]);
      last_applied = u.committed[i].index;
    }
    for (size_t i = 0; i < u.read_states_n; i++) {
      uint64_t rid = u.read_states[i].id;
      if (rid < 64) {
        n->read_index[rid] = u.read_states[i].index;
        n->read_done[rid] = true;
      }
    }
    uint64_t pid = u.persist_id;
    if (pid != 0 && n->hold) {
      n->held_persist_id = pid;
    } else if (pid != 0) {
      qraft_core_persisted(n->core, pid);
    }
    if (last_applied != 0) {
      qraft_core_applied(n->core, last_applied);
    }
  }
}

static void h_boot(harness *h, int slot, h_config_cb tweak) {
  h_node *n = &h->nodes[slot];
  qraft_core_config_default(&n->cfg);
  n->cfg.id = n->id;
  n->cfg.seed = 1000 + n->id;
  n->cfg.election_ticks = 10;
  n->cfg.heartbeat_ticks = 1;
  if (tweak != NULL) {
    tweak(&n->cfg);
  }
  qraft_core_restore rs = {.hard_state = n->hs,
                           .snapshot = n->snap,
                           .entries = n->log,
                           .entries_n = n->log_n,
                           .applied = n->snap.index};
  qraft_err err;
  qraft_err_init(&err, 0);
  int rv = qraft_core_new(&n->cfg, &rs, &n->core, &err);
  QRAFT_ASSERTF(rv == 0, "core_new: %d", rv);
  n->up = true;
  n->applied_index = n->snap.index;
  n->applied_n = n->snap_applied_n;
  memcpy(n->applied, h_snap_state[slot], sizeof n->applied);
  h_drain(h, n->id);
}

void h_init(harness *h, int voters, h_config_cb tweak) {
  memset(h, 0, sizeof *h);
  memset(h_recv_state_n, 0, sizeof h_recv_state_n);
  memset(h_snap_state, 0, sizeof h_snap_state);
  h->queue = calloc(H_QUEUE_MAX, sizeof *h->queue);
  QRAFT_ASSERT(h->queue != NULL);
  h->n = voters;
  for (int i = 0; i < H_NODES_MAX; i++) {
    h->nodes[i].id = (qraft_id)(i + 1);
  }
  qraft_conf_change members[H_NODES_MAX] = {{0}};
  for (int i = 0; i < voters; i++) {
    members[i] = (qraft_conf_change){.change_type = QRAFT_CONF_ADD_NODE,
                                     .node_id = (qraft_id)(i + 1)};
  }
  qraft_entry boot[H_NODES_MAX];
  int rv = qraft_core_bootstrap_entries(members, (size_t)voters, boot, NULL);
  QRAFT_ASSERT(rv == 0);
  for (int i = 0; i < voters; i++) {
    h_node *n = &h->nodes[i];
    n->hs = (qraft_hard_state){.term = 1, .commit = (uint64_t)voters};
    for (int k = 0; k < voters; k++) {
      n->log[k] = boot[k];
      n->log[k].data = h_keep(boot[k].data);
    }
    n->log_n = (size_t)voters;
  }
  for (int k = 0; k < voters; k++) {
    qraft_slice_release(&boot[k].data);
  }
  for (int i = 0; i < voters; i++) {
    h_boot(h, i, tweak);
  }
}

void h_close(harness *h) {
  h_drop_all(h);
  for (int i = 0; i < H_NODES_MAX; i++) {
    h_node *n = &h->nodes[i];
    qraft_core_free(n->core);
    n->core = NULL;
    h_log_truncate(n, 0);
  }
  free(h->queue);
}

void h_start(harness *h, qraft_id id, h_config_cb tweak) {
  int slot = h_slot(h, id);
  QRAFT_ASSERT(!h->nodes[slot].up);
  h_boot(h, slot, tweak);
}

void h_crash(harness *h, qraft_id id) {
  h_node *n = h_node_of(h, id);
  qraft_core_free(n->core);
  n->core = NULL;
  n->up = false;
}

static bool h_deliver_msg(harness *h, h_msg *hm) {
  qraft_id to = hm->m.to, from = hm->m.from;
  if (hm->m.type == QRAFT_MSG_TRANSFER_LEADER) {
    from = to; /* forwarded transfer: From names the transferee */
  }
  int slot = h_slot(h, to);
  h_node *n = &h->nodes[slot];
  bool ok = n->up && !h->cut[from][to];
  if (ok) {
    if (hm->m.type == QRAFT_MSG_SNAPSHOT) {
      int src = h_slot(h, hm->m.from);
      memcpy(h_recv_state[slot], h_snap_state[src], sizeof h_recv_state[slot]);
      h_recv_state_n[slot] = h->nodes[src].snap_applied_n;
    }
    (void)qraft_core_step(n->core, &hm->m);
    h->delivered++;
  }
  if (ok && hm->m.type == QRAFT_MSG_SNAPSHOT) {
    h_node *src = h_node_of(h, hm->m.from);
    if (src->up) {
      qraft_core_report_snapshot(src->core, to, true);
      h_drain(h, src->id);
    }
  }
  h_msg_free(hm);
  if (ok) {
    h_drain(h, to);
  }
  return ok;
}

size_t h_deliver_all(harness *h) {
  size_t n = 0;
  while (h->q_n > 0) {
    h_msg hm = h->queue[h->q_start];
    h->q_start = (h->q_start + 1) % H_QUEUE_MAX;
    h->q_n--;
    hm.m.entries = hm.ents;
    if (hm.m.snapshot != NULL) {
      hm.m.snapshot = &hm.snap;
    }
    if (hm.m.context.len > 0) {
      hm.m.context.data = hm.ctx;
    }
    n += h_deliver_msg(h, &hm);
  }
  return n;
}

bool h_deliver_one(harness *h, bool (*pred)(const qraft_message *m, void *ud),
                   void *ud) {
  for (size_t k = 0; k < h->q_n; k++) {
    h_msg *slot = &h->queue[(h->q_start + k) % H_QUEUE_MAX];
    slot->m.entries = slot->ents;
    if (!pred(&slot->m, ud)) {
      continue;
    }
    h_msg hm = *slot;
    /* close the gap, keeping the order of the rest */
    for (size_t j = k; j + 1 < h->q_n; j++) {
      h->queue[(h->q_start + j) % H_QUEUE_MAX] =
          h->queue[(h->q_start + j + 1) % H_QUEUE_MAX];
    }
    h->q_n--;
    hm.m.entries = hm.ents;
    if (hm.m.snapshot != NULL) {
      hm.m.snapshot = &hm.snap;
    }
    if (hm.m.context.len > 0) {
      hm.m.context.data = hm.ctx;
    }
    h_deliver_msg(h, &hm);
    return true;
  }
  return false;
}

void h_drop_all(harness *h) {
  while (h->q_n > 0) {
    h_msg_free(&h->queue[h->q_start]);
    h->q_start = (h->q_start + 1) % H_QUEUE_MAX;
    h->q_n--;
  }
}

void h_hold(harness *h, qraft_id id) { h_node_of(h, id)->hold = true; }

void h_release(harness *h, qraft_id id) {
  h_node *n = h_node_of(h, id);
  n->hold = false;
  if (n->held_persist_id != 0 && n->up) {
    qraft_core_persisted(n->core, n->held_persist_id);
    n->held_persist_id = 0;
    h_drain(h, id);
  }
}

void h_tick(harness *h, qraft_id id, int ticks) {
  h_node *n = h_node_of(h, id);
  for (int i = 0; i < ticks && n->up; i++) {
    qraft_core_tick(n->core);
    h_drain(h, id);
  }
}

void h_tick_all(harness *h, int ticks) {
  for (int t = 0; t < ticks; t++) {
    for (int i = 0; i < H_NODES_MAX; i++) {
      if (h->nodes[i].up) {
        qraft_core_tick(h->nodes[i].core);
        h_drain(h, h->nodes[i].id);
      }
    }
    h_deliver_all(h);
  }
}

void h_cut(harness *h, qraft_id a, qraft_id b) {
  h->cut[a][b] = true;
  h->cut[b][a] = true;
}

void h_isolate(harness *h, qraft_id id) {
  for (qraft_id o = 1; o <= H_NODES_MAX; o++) {
    if (o != id) {
      h_cut(h, id, o);
    }
  }
}

void h_heal(harness *h) { memset(h->cut, 0, sizeof h->cut); }

void h_campaign(harness *h, qraft_id id) {
  qraft_core_campaign(h_node_of(h, id)->core);
  h_drain(h, id);
  h_deliver_all(h);
}

int h_propose(harness *h, qraft_id id, const char *text) {
  qraft_buf *b = qraft_buf_copy(text, strlen(text));
  qraft_entry e = {.type = QRAFT_ENTRY_NORMAL,
                   .data = {.data = b->data, .len = b->len, .owner = b}};
  int rv = qraft_core_propose(h_node_of(h, id)->core, &e, 1, NULL, NULL);
  qraft_buf_unref(b);
  h_drain(h, id);
  return rv;
}

qraft_id h_leader(harness *h) {
  qraft_id best = 0;
  uint64_t term = 0;
  for (int i = 0; i < H_NODES_MAX; i++) {
    h_node *n = &h->nodes[i];
    if (!n->up) {
      continue;
    }
    qraft_core_status st;
    qraft_core_status_get(n->core, &st);
    if (st.role == QRAFT_ROLE_LEADER && st.term >= term) {
      best = n->id;
      term = st.term;
    }
  }
  return best;
}

uint64_t h_term(harness *h, qraft_id id) {
  qraft_core_status st;
  qraft_core_status_get(h_node_of(h, id)->core, &st);
  return st.term;
}

uint64_t h_commit(harness *h, qraft_id id) {
  qraft_core_status st;
  qraft_core_status_get(h_node_of(h, id)->core, &st);
  return st.commit;
}

int h_compact(harness *h, qraft_id id) {
  int slot = h_slot(h, id);
  h_node *n = &h->nodes[slot];
  uint64_t at = n->applied_index;
  int rv = qraft_core_compact(n->core, at);
  if (rv != 0) {
    return rv;
  }
  qraft_snapshot_meta meta;
  qraft_core_snapshot_meta(n->core, &meta);
  uint64_t drop = at - n->snap.index;
  for (uint64_t i = 0; i < drop; i++) {
    qraft_slice_release(&n->log[i].data);
    qraft_slice_release(&n->log[i].context);
  }
  memmove(n->log, n->log + drop, (n->log_n - drop) * sizeof n->log[0]);
  n->log_n -= drop;
  n->snap = meta;
  n->snap_applied_n = n->applied_n;
  memcpy(h_snap_state[slot], n->applied, sizeof n->applied);
  return 0;
}

bool h_same_applied(harness *h, const qraft_id *ids, int k) {
  h_node *a = h_node_of(h, ids[0]);
  for (int i = 1; i < k; i++) {
    h_node *b = h_node_of(h, ids[i]);
    if (a->applied_n != b->applied_n) {
      return false;
    }
    for (uint32_t j = 0; j < a->applied_n; j++) {
      if (strcmp(a->applied[j], b->applied[j]) != 0) {
        return false;
      }
    }
  }
  return true;
}
