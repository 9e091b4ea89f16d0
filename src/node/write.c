/*
 * write.c: storage writes: the write of an update, the messages that wait
 * for it (rule 3), its completion, and sending messages.
 */
#include "node_internal.h"

/* --- storage writes ------------------------------------------------------- */

void qraft__node_write_free(node_write *w) {
  for (size_t i = 0; i < w->ents_n; i++) {
    qraft_slice_release(&w->ents[i].data);
    qraft_slice_release(&w->ents[i].context);
  }
  free(w->ents);
  for (size_t i = 0; i < w->msgs_n; i++) {
    qraft_message *m = &w->msgs[i];
    for (size_t k = 0; k < m->entries_n; k++) {
      qraft_slice_release(&((qraft_entry *)m->entries)[k].data);
      qraft_slice_release(&((qraft_entry *)m->entries)[k].context);
    }
    free((void *)m->entries);
    qraft_slice_release(&m->context);
    free(m->snapshot);
  }
  free(w->msgs);
  qraft_snapshot_writer_abort(w->w.snapshot); /* of a write never landed */
  free(w);
}

int qraft__node_msg_copy(qraft_message *dst, const qraft_message *src) {
  *dst = *src;
  dst->entries = NULL;
  dst->snapshot = NULL;
  dst->context = qraft_slice_keep(src->context);
  if (src->entries_n > 0) {
    qraft_entry *es = calloc(src->entries_n, sizeof *es);
    if (es == NULL) {
      return -ENOMEM;
    }
    for (size_t i = 0; i < src->entries_n; i++) {
      es[i] = src->entries[i];
      es[i].data = qraft_slice_keep(src->entries[i].data);
      es[i].context = qraft_slice_keep(src->entries[i].context);
    }
    dst->entries = es;
  }
  if (src->snapshot != NULL) {
    qraft_snapshot *sn = malloc(sizeof *sn);
    if (sn == NULL) {
      return -ENOMEM;
    }
    *sn = *src->snapshot;
    sn->data = (qraft_slice){0};
    dst->snapshot = sn;
  }
  return 0;
}

void qraft__node_send(qraft_node *n, const qraft_message *m) {
  if (n->net == NULL || m->to == n->id) {
    return;
  }
  n->m_messages_out++;
  if (m->type == QRAFT_MSG_SNAPSHOT) {
    qraft__node_send_snapshot(n, m);
    return;
  }
  if (n->alarms != 0) {
    /* our alarms go with every message (space.c) */
    qraft_message c = *m;
    c.alarms = n->alarms;
    (void)qraft_raft_net_send(n->net, &c, NULL);
    return;
  }
  (void)qraft_raft_net_send(n->net, m, NULL);
}

void qraft__node_write_cb(qraft_storage_write *sw, int status) {
  node_write *w = sw->data;
  qraft_node *n = w->node;
  if (n->freeing) {
    qraft__node_write_free(w);
    return;
  }
  qraft__node_clock(n);
  n->writes_inflight--;
  if (status != 0 && qraft__node_write_hold(n, w, status)) {
    return; /* no room: held, submitted again later (space.c) */
  }
  if (n->last_write == w) {
    n->last_write = NULL;
  }
  if (status != 0) {
    /* The store refuses writes from now on (a failed sync cannot be
     * retried safely): this node cannot go on. */
    QRAFT_LOG(n->lg, QRAFT_LOG_ERROR,
              "storage write failed; node stops (docs/storage.md: after a "
              "failed write or sync the log must be reopened)",
              QRAFT_LOG_STR("dir", qraft__node_dir_name(n)),
              QRAFT_LOG_STR("error", qraft_strerror(status)));
    n->fatal = true;
    qraft__node_write_free(w);
    qraft__node_fail_all(n, status);
    return;
  }
  n->m_writes++;
  n->m_write_entries += w->ents_n;
  qraft__node_write_landed(n);
  uint64_t durable_ns = qraft_env_now_ns(n->env);
  for (size_t i = 0; i < w->ents_n; i++) {
    stage_slot *sl = &n->stage_ring[w->ents[i].index % NODE_STAGE_RING];
    if (sl->index == w->ents[i].index) {
      sl->durable_ns = durable_ns;
    }
  }
  uint64_t wdt = (durable_ns - w->submit_ns) / 1000;
  pthread_mutex_lock(&n->mu);
  qraft_histogram_record(&n->h_write_us, wdt);
  qraft_histogram_record(&n->h_write_entries, w->ents_n);
  pthread_mutex_unlock(&n->mu);
  if (w->restore_after) {
    n->installing = false;
    qraft__node_snapshot_landed(n);
    qraft_err err;
    qraft_err_init(&err, 0);
    int rv = qraft__node_restore_received(n, &err);
    if (rv != 0) {
      char line[512];
      qraft_err_format(&err, line, sizeof line);
      QRAFT_LOG(n->lg, QRAFT_LOG_ERROR, "snapshot restore failed; node stops",
                QRAFT_LOG_STR("error", line));
      n->fatal = true;
      qraft__node_write_free(w);
      qraft__node_fail_all(n, rv);
      return;
    }
  }
  /* Rule 3: now, and only now, the messages that waited for this write. */
  for (size_t i = 0; i < w->msgs_n; i++) {
    qraft__node_send(n, &w->msgs[i]);
  }
  if (w->persist_id != 0) {
    QRAFT_ASSERTF(w->persist_id > n->persist_last,
                  "writes acknowledged out of order (%" PRIu64 " after %" PRIu64
                  ")",
                  w->persist_id, n->persist_last);
    n->persist_last = w->persist_id;
    qraft_core_persisted(n->core, w->persist_id);
  }
  qraft__node_write_free(w);
  qraft__node_drain(n);
}

/* For backends without a file descriptor (the in-memory store): poll on
 * the next turn of the loop. */
void qraft__node_poll_timer_cb(void *ud) {
  qraft_node *n = ud;
  qraft_storage_poll(n->st);
}

void qraft__node_kick_storage(qraft_node *n) {
  if (n->st_fd < 0) {
    qraft_env_timer_arm(n->poll_timer, 0);
  }
}
