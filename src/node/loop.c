/*
 * loop.c: the update loop: each turn takes the core's updates in order
 * (writes, messages, applies), and the callbacks that start a turn (ticks,
 * wake-ups, datagrams, the storage bridge), with the clock and the status.
 */
#include "node_internal.h"

/* --- the update loop ------------------------------------------------------ */

void qraft__node_publish_status(qraft_node *n) {
  qraft_node_status s;
  memset(&s, 0, sizeof s);
  qraft_core_status st;
  qraft_core_status_get(n->core, &st);
  s.id = n->id;
  s.role = st.role;
  s.leader = st.leader;
  s.term = st.term;
  s.commit = st.commit;
  s.applied = n->applied;
  s.last_index = st.last_index;
  s.snapshot_index = st.snapshot_index;
  s.joint = n->conf.voters_outgoing_n > 0;
  s.running = !n->stopped && !n->fatal;
  s.stopped_on = n->fatal_code;
  if (n->cfg.sm->durable_index != NULL) {
    n->m_sm_durable = n->cfg.sm->durable_index(n->cfg.sm_ud);
  }
  s.sm_durable_index = n->m_sm_durable;
  s.sm_rebuilds_lost = n->m_sm_rebuilds_lost;
  s.snapshots_taken = n->m_snapshots_taken;
  s.snapshots_installed = n->m_snapshots_installed;
  s.snapshots_stateless = n->m_snapshots_stateless;
  s.snapshot_sends_from_state = n->m_snap_sends_from_view;
  s.snapshot_sends = n->m_snap_sends;
  s.snapshot_sends_done = n->m_snap_sends_done;
  s.snapshot_sends_failed = n->m_snap_sends_failed;
  s.snapshot_bytes_sent = n->m_snap_sent_bytes;
  s.snapshot_bytes_received = n->m_snap_recv_bytes;
  s.snapshot_recvs_aborted = n->m_snap_recvs_aborted;
  s.snapshot_recvs_active = qraft__node_snap_recvs_active(n);
  s.snapshot_sends_active = n->snap_sends;
  s.snapshot_restore_steps = n->m_restore_steps;
  s.restore_waited_entries = n->m_restore_waited;
  s.log_bytes = st.log_bytes;
  s.log_applied_bytes = st.log_applied_bytes;
  s.alarms = n->alarms;
  s.voters_in_alarm = qraft__node_voters_in_alarm(n, &s.alarm_quorum);
  s.space_free_bytes = n->space_free;
  s.writes_held = n->held_n;
  s.apply_waiting_entries = n->apply_blocked ? n->backlog_n : 0;
  s.alarms_raised = n->m_alarms_raised;
  memcpy(s.alarm_why, n->alarm_why, sizeof s.alarm_why);
  if (n->net != NULL) {
    qraft_raft_net_memory nm;
    qraft_raft_net_memory_get(n->net, &nm);
    s.send_buffer_bytes = nm.send_bytes - nm.snapshot_out_bytes;
    s.snapshot_buffer_bytes = nm.snapshot_out_bytes + nm.snapshot_in_bytes;
  }
  n->m_election_timeouts = st.election_timeouts;
  for (int r = 0; r < QRAFT_STEPDOWN_REASONS; r++) {
    n->m_stepdowns[r] = st.stepdowns[r];
  }
  qraft_progress_info prs[QRAFT_NODE_MEMBERS_MAX * 2];
  size_t prs_n = qraft_core_progress(n->core, prs, QRAFT_NODE_MEMBERS_MAX * 2);
  uint64_t now = qraft_env_now_ns(n->env);
  for (uint32_t i = 0; i < n->members_n && s.members_n < QRAFT_NODE_MEMBERS_MAX;
       i++) {
    node_member *m = &n->members[i];
    if (!qraft__node_conf_has(&n->conf, m->id)) {
      continue;
    }
    qraft_member_status *ms = &s.members[s.members_n++];
    ms->id = m->id;
    ms->addr = m->addr;
    bool voter = false;
    for (uint32_t k = 0; k < n->conf.voters_n; k++) {
      voter = voter || n->conf.voters[k] == m->id;
    }
    for (uint32_t k = 0; k < n->conf.voters_outgoing_n; k++) {
      voter = voter || n->conf.voters_outgoing[k] == m->id;
    }
    ms->voter = voter;
    ms->learner = !voter;
    ms->heard_ms = m->id == n->id ? 0
                   : m->heard_ns == 0 ? UINT64_MAX
                                      : (now - m->heard_ns) / 1000000u;
    for (size_t k = 0; k < prs_n && k < QRAFT_NODE_MEMBERS_MAX * 2; k++) {
      if (prs[k].id == m->id) {
        ms->match = prs[k].match;
        ms->next = prs[k].next;
      }
    }
  }
  qraft_endpoint_metrics em;
  memset(&em, 0, sizeof em);
  qraft_peer_metrics pm[NODE_ADDRS_MAX];
  uint32_t pm_n = 0;
  if (n->ep != NULL && !n->stopped) {
    uint32_t rn = qraft_endpoint_relays(n->ep, s.relays,
                                        QRAFT_NODE_RELAYS_MAX * 2);
    s.relays_n = rn < QRAFT_NODE_RELAYS_MAX * 2 ? rn
                                                : QRAFT_NODE_RELAYS_MAX * 2;
    qraft_endpoint_metrics_get(n->ep, &em);
    for (uint32_t i = 0; i < n->members_n; i++) {
      if (n->members[i].id != n->id &&
          qraft_endpoint_peer_metrics(n->ep, &n->members[i].addr.id,
                                      QRAFT_RAFT_ALPN, &pm[pm_n]) == 0) {
        pm_n++;
      }
    }
  }
  for (uint32_t k = 0; k < s.members_n; k++) {
    for (uint32_t i = 0; i < pm_n; i++) {
      if (memcmp(&pm[i].peer, &s.members[k].addr.id, sizeof pm[i].peer) == 0) {
        s.members[k].connected = pm[i].up;
        s.members[k].path = pm[i].path;
        s.members[k].direct_addr = pm[i].path_direct_addr;
        s.members[k].time_to_direct_ns = pm[i].path_first_direct_ns;
        s.members[k].path_fallbacks = pm[i].path_fallbacks;
        s.members[k].path_upgrades = pm[i].path_upgrades;
        s.members[k].path_pings_out = pm[i].path_pings_out;
        s.members[k].path_pongs_in = pm[i].path_pongs_in;
        s.members[k].path_call_me_maybe_out = pm[i].path_call_me_maybe_out;
        s.members[k].path_call_me_maybe_in = pm[i].path_call_me_maybe_in;
      }
    }
  }
  pthread_mutex_lock(&n->mu);
  n->status = s;
  if (n->ep != NULL && !n->stopped) {
    n->m_ep = em;
    memcpy(n->m_peers, pm, pm_n * sizeof pm[0]);
    n->m_peers_n = pm_n;
  }
  pthread_mutex_unlock(&n->mu);
}

/* Snapshot outcomes the transport reported while an update was being
 * handled (a core call then would invalidate the update's memory): told to
 * the core once the update is done. */
void qraft__node_snap_report(qraft_node *n, qraft_id to, bool ok) {
  if (!n->draining) {
    qraft_core_report_snapshot(n->core, to, ok);
    return;
  }
  for (uint32_t i = 0; i < n->snap_reports_n; i++) {
    if (n->snap_reports[i].to == to) {
      n->snap_reports[i].ok = ok;
      return;
    }
  }
  QRAFT_ASSERT(n->snap_reports_n < NODE_ADDRS_MAX);
  n->snap_reports[n->snap_reports_n++] = (node_snap_report){to, ok};
}

static void node_flush_snap_reports(qraft_node *n) {
  for (uint32_t i = 0; i < n->snap_reports_n; i++) {
    qraft_core_report_snapshot(n->core, n->snap_reports[i].to,
                               n->snap_reports[i].ok);
  }
  n->snap_reports_n = 0;
}

static void node_drain_updates(qraft_node *n);

/* Takes the core's updates until there are none. Callbacks that run
 * inside (the transport's, the store's) and drain again find this one
 * under way: it takes what they added before it returns. */
void qraft__node_drain(qraft_node *n) {
  if (n->draining) {
    return;
  }
  n->draining = true;
  node_drain_updates(n);
  n->draining = false;
  if (n->snap_reports_n > 0 && !n->fatal) {
    node_flush_snap_reports(n);
    qraft__node_drain(n);
  }
}

/* The most entry bytes one store write carries: the WAL's batch, half of
 * its segment (a write larger than a segment is refused). */
#define NODE_WRITE_BYTES_MAX (4u << 20)

/* Takes the front of w's entries, if they are more than one write may
 * carry, into a write of its own that goes first: with the snapshot, if w
 * has one (its record comes before the entries). w keeps the rest and
 * what it stands for (persist id, hard state, messages). NULL if w fits. */
static node_write *node_write_front(qraft_node *n, node_write *w) {
  uint64_t bytes = 0;
  size_t k = 0;
  while (k < w->ents_n) {
    uint64_t b = 64 + w->ents[k].data.len + w->ents[k].context.len;
    if (k > 0 && bytes + b > NODE_WRITE_BYTES_MAX) {
      break;
    }
    bytes += b;
    k++;
  }
  if (k == w->ents_n) {
    return NULL;
  }
  node_write *f = calloc(1, sizeof *f);
  QRAFT_ASSERT(f != NULL);
  f->node = n;
  f->seq = w->seq; /* before w: w takes the next number */
  w->seq = ++n->write_seq;
  f->ents = malloc(k * sizeof *f->ents);
  QRAFT_ASSERT(f->ents != NULL);
  memcpy(f->ents, w->ents, k * sizeof *f->ents); /* the references move */
  f->ents_n = k;
  memmove(w->ents, w->ents + k, (w->ents_n - k) * sizeof *w->ents);
  w->ents_n -= k;
  f->w.entries = f->ents;
  f->w.entries_n = f->ents_n;
  w->w.entries = w->ents;
  w->w.entries_n = w->ents_n;
  f->w.snapshot = w->w.snapshot;
  w->w.snapshot = NULL;
  f->restore_after = w->restore_after;
  f->restore_index = w->restore_index;
  w->restore_after = false;
  f->w.cb = qraft__node_write_cb;
  f->w.data = f;
  return f;
}

/* Submits w to the store, or holds it behind writes waiting for room
 * (space.c). A write the store refuses at once stops the node. */
static void node_write_submit(qraft_node *n, node_write *w) {
  if (qraft__node_writes_held(n)) {
    qraft__node_held_append(n, w);
    n->last_write = w;
    return;
  }
  qraft_err err;
  qraft_err_init(&err, 0);
  w->submit_ns = qraft_env_now_ns(n->env);
  int rv = qraft_storage_submit(n->st, &w->w, &err);
  if (rv != 0) {
    char line[512];
    qraft_err_format(&err, line, sizeof line);
    QRAFT_LOG(n->lg, QRAFT_LOG_ERROR, "storage refused a write; node stops",
              QRAFT_LOG_STR("dir", qraft__node_dir_name(n)),
              QRAFT_LOG_STR("error", line));
    if (w->w.snapshot != NULL) {
      qraft_snapshot_writer_abort(w->w.snapshot);
      w->w.snapshot = NULL;
    }
    qraft__node_write_free(w);
    n->fatal = true;
    qraft__node_fail_all(n, rv);
    return;
  }
  n->writes_inflight++;
  n->last_write = w;
  for (size_t i = 0; i < w->ents_n; i++) {
    stage_slot *sl = &n->stage_ring[w->ents[i].index % NODE_STAGE_RING];
    *sl = (stage_slot){.index = w->ents[i].index, .submit_ns = w->submit_ns};
  }
  qraft__node_kick_storage(n);
}

/* One INFO line when the role or the leader changes: elections started,
 * a leader followed, a leader that stepped down and why. */
static void node_log_role(qraft_node *n, const qraft_update *u) {
  qraft_core_status cs;
  qraft_core_status_get(n->core, &cs);
  if (n->log_role == QRAFT_ROLE_LEADER && u->role != QRAFT_ROLE_LEADER) {
    const char *why = "unknown";
    for (int r = 0; r < QRAFT_STEPDOWN_REASONS; r++) {
      if (cs.stepdowns[r] > n->log_stepdowns[r]) {
        why = qraft_stepdown_reason_name((qraft_stepdown_reason)r);
      }
    }
    QRAFT_LOG(n->lg, QRAFT_LOG_INFO, "stepped down", QRAFT_LOG_STR("why", why),
              QRAFT_LOG_U64("term", cs.term));
  }
  bool campaigning = u->role == QRAFT_ROLE_CANDIDATE ||
                     u->role == QRAFT_ROLE_PRE_CANDIDATE;
  bool was = n->log_role == QRAFT_ROLE_CANDIDATE ||
             n->log_role == QRAFT_ROLE_PRE_CANDIDATE;
  if (campaigning && !was) {
    QRAFT_LOG(n->lg, QRAFT_LOG_INFO, "election started",
              QRAFT_LOG_U64("term", cs.term),
              QRAFT_LOG_STR("stage", u->role == QRAFT_ROLE_PRE_CANDIDATE
                                         ? "pre-vote"
                                         : "vote"));
  }
  if (u->role == QRAFT_ROLE_FOLLOWER && u->leader != QRAFT_ID_NONE &&
      u->leader != n->log_leader) {
    QRAFT_LOG(n->lg, QRAFT_LOG_INFO, "following a leader",
              QRAFT_LOG_U64("leader", u->leader), QRAFT_LOG_U64("term", cs.term));
  }
  n->log_role = u->role;
  n->log_leader = u->leader;
  memcpy(n->log_stepdowns, cs.stepdowns, sizeof n->log_stepdowns);
}

static void node_drain_updates(qraft_node *n) {
  while (!n->fatal && qraft_core_has_update(n->core)) {
    qraft_update u;
    qraft_core_take_update(n->core, &u);
    if (u.soft_state_changed && u.role == QRAFT_ROLE_LEADER) {
      n->m_elections++;
      QRAFT_LOG(n->lg, QRAFT_LOG_INFO, "became leader",
                QRAFT_LOG_U64("term", u.hard_state_changed ? u.hard_state.term
                                                           : 0));
    }
    if (u.soft_state_changed) {
      node_log_role(n, &u);
    }
    if (u.soft_state_changed && u.leader != QRAFT_ID_NONE) {
      qraft_core_status cs;
      qraft_core_status_get(n->core, &cs);
      if (cs.term > n->leader_term) {
        if (n->leader_term != 0) {
          n->m_leader_changes++; /* a new term has a leader */
        }
        n->leader_term = cs.term;
      }
    }
    /* the write of this update */
    node_write *w = NULL;
    bool has_write = u.persist_id != 0 || u.messages_after_persist_n > 0;
    if (has_write) {
      w = calloc(1, sizeof *w);
      QRAFT_ASSERT(w != NULL);
      w->node = n;
      w->seq = ++n->write_seq;
      w->persist_id = u.persist_id;
      if (u.truncate_from != 0) {
        QRAFT_ASSERTF(u.entries_n > 0 && u.entries[0].index == u.truncate_from,
                      "truncation at %" PRIu64 " without entries from there",
                      u.truncate_from);
      }
      if (u.entries_n > 0) {
        w->ents = calloc(u.entries_n, sizeof *w->ents);
        QRAFT_ASSERT(w->ents != NULL);
        for (size_t i = 0; i < u.entries_n; i++) {
          w->ents[i] = u.entries[i];
          w->ents[i].data = qraft_slice_keep(u.entries[i].data);
          w->ents[i].context = qraft_slice_keep(u.entries[i].context);
        }
        w->ents_n = u.entries_n;
        w->w.entries = w->ents;
        w->w.entries_n = w->ents_n;
      }
      if (u.hard_state_changed && !u.must_sync) {
        /* The commit index alone moved: written with the next write that
         * is synced anyway, not synced on its own (qraft/core.h,
         * must_sync). */
        n->hs_lazy = u.hard_state;
        n->hs_lazy_set = true;
      } else if (u.hard_state_changed) {
        w->hs = u.hard_state;
        w->w.hard_state = &w->hs;
        n->hs_lazy_set = false; /* this one is newer */
      }
      if (w->w.hard_state == NULL && n->hs_lazy_set &&
          (u.entries_n > 0 || u.snapshot != NULL)) {
        w->hs = n->hs_lazy;
        w->w.hard_state = &w->hs;
        n->hs_lazy_set = false;
      }
      if (u.snapshot != NULL) {
        QRAFT_ASSERTF(n->recv_writer != NULL &&
                          n->recv_index == u.snapshot->index &&
                          n->recv_term == u.snapshot->term,
                      "installing snapshot %" PRIu64 " that was not received",
                      u.snapshot->index);
        w->w.snapshot = n->recv_writer;
        n->recv_writer = NULL;
        /* a snapshot of our own being taken is older */
        qraft__node_snapshot_abandon(n);
        /* a snapshot of our own waiting for durability is older */
        qraft_snapshot_writer_abort(n->snap_pending);
        n->snap_pending = NULL;
        w->restore_after = true;
        n->installing = true;
        w->restore_index = u.snapshot->index;
      }
      if (u.messages_after_persist_n > 0) {
        w->msgs = calloc(u.messages_after_persist_n, sizeof *w->msgs);
        QRAFT_ASSERT(w->msgs != NULL);
        for (size_t i = 0; i < u.messages_after_persist_n; i++) {
          QRAFT_ASSERT(qraft__node_msg_copy(&w->msgs[i],
                                            &u.messages_after_persist[i]) == 0);
        }
        w->msgs_n = u.messages_after_persist_n;
      }
#ifdef QRAFT_CANARY_NODE_ACK_BEFORE_DURABLE
      /* Planted bug (make canaries): the messages that must wait for the
       * write (append acknowledgements, votes) leave at once, and again
       * when it is durable. */
      for (size_t i = 0; i < u.messages_after_persist_n; i++) {
        qraft__node_send(n, &u.messages_after_persist[i]);
      }
#endif
      w->w.cb = qraft__node_write_cb;
      w->w.data = w;
    }
    /* Rule 2: these go now, in parallel with the write. */
    for (size_t i = 0; i < u.messages_n; i++) {
      qraft__node_send(n, &u.messages[i]);
    }
    /* Rule 5: apply. */
    uint64_t last = 0;
    if (u.committed_n > 0) {
      pthread_mutex_lock(&n->mu);
      qraft_histogram_record(&n->h_apply_entries, u.committed_n);
      pthread_mutex_unlock(&n->mu);
      bool restoring = n->restore_ctx != NULL;
#ifdef QRAFT_CANARY_NODE_APPLY_DURING_RESTORE
      /* Planted bug (make canaries): entries are applied while a snapshot
       * is restored in steps, and the restore's last step replaces them. */
      restoring = false;
#endif
      if (restoring || n->apply_blocked) {
        /* The state machine is being replaced, or refused entries before
         * these (space.c): these wait for it. */
        qraft__node_backlog_add(n, u.committed, u.committed_n);
      } else {
        n->commit_seen_ns = qraft_env_now_ns(n->env);
        size_t k = qraft__node_apply(n, u.committed, u.committed_n);
        if (k < u.committed_n) {
          qraft__node_backlog_add(n, u.committed + k, u.committed_n - k);
        }
        last = k > 0 ? u.committed[k - 1].index : 0;
      }
    }
    if (u.conf_changed) {
      n->conf = *u.conf_state;
    }
    for (size_t i = 0; i < u.read_states_n; i++) {
      for (node_req *r = n->inflight; r != NULL; r = r->next) {
        if (r->kind == REQ_READ && r->seq == u.read_states[i].id) {
          r->index = u.read_states[i].index;
          r->index_known = true;
        }
      }
    }
    bool conf_changed = u.conf_changed;
    /* `u` is invalid from here: calls into the core follow. */
    if (w != NULL && w->w.snapshot == NULL && w->ents_n == 0 &&
        w->w.hard_state == NULL) {
      /* Nothing to write (or only a commit index, kept for later): these
       * messages, and this update's persist id, wait only for earlier
       * writes. They ride with the newest one still in flight (writes
       * complete in order, and acknowledging an id acknowledges the ones
       * before it), or go now if everything is durable. */
      node_write *last = n->last_write;
      if (w->persist_id != 0) {
        QRAFT_ASSERT(n->hs_lazy_set);
        if (last != NULL) {
          QRAFT_ASSERT(w->persist_id > last->persist_id);
          last->persist_id = w->persist_id;
        }
      }
      if (last == NULL) {
        for (size_t i = 0; i < w->msgs_n; i++) {
          qraft__node_send(n, &w->msgs[i]);
        }
        if (w->persist_id != 0) {
          QRAFT_ASSERT(w->persist_id > n->persist_last);
          n->persist_last = w->persist_id;
          qraft_core_persisted(n->core, w->persist_id);
        }
      } else if (w->msgs_n > 0) {
        qraft_message *m = realloc(last->msgs, (last->msgs_n + w->msgs_n) *
                                                   sizeof *m);
        QRAFT_ASSERT(m != NULL);
        memcpy(m + last->msgs_n, w->msgs, w->msgs_n * sizeof *m);
        last->msgs = m;
        last->msgs_n += w->msgs_n;
        w->msgs_n = 0; /* moved */
      }
      qraft__node_write_free(w);
      w = NULL;
    }
    /* A store write has a size limit (a WAL segment): a large update goes
     * as several, in order, the last one standing for it. */
    while (w != NULL && !n->fatal) {
      node_write *front = node_write_front(n, w);
      if (front == NULL) {
        break;
      }
      node_write_submit(n, front);
    }
    if (w != NULL && !n->fatal) {
      node_write_submit(n, w);
    } else if (w != NULL) {
      qraft__node_write_free(w);
    }
    if (n->fatal) {
      return;
    }
    if (last != 0) {
      qraft_core_applied(n->core, last);
    }
    if (conf_changed) {
      qraft__node_sync_peers(n);
    }
    qraft__node_serve_reads(n);
    qraft__node_maybe_snapshot(n);
    node_flush_snap_reports(n);
  }
  qraft__node_submit_pending_snapshot(n);
  if (!n->fatal) {
    qraft__node_publish_status(n);
    /* configuration changes complete after the status shows them */
    for (node_req *r = n->inflight; r != NULL;) {
      node_req *next = r->next;
      if (r->applied) {
        qraft__node_inflight_remove(n, r);
        qraft__node_req_complete(n, r, 0, (qraft_slice){0});
      }
      r = next;
    }
  }
}

/* --- the loop's other turns: ticks, wake-ups, the transport ------------- */

/*
 * A voter that refuses our connections as unauthorized does not know our
 * key: it missed the configuration entry that added us (it was down or cut
 * off) and cannot learn it from us, since it admits only keys its own
 * configuration names. If we lead, it would lag forever. So a leader that
 * a voter refuses hands leadership to another voter that holds the whole
 * log; a leader the lagging voter knows brings it up to date, after which
 * it admits us too. At most once per two election timeouts.
 */
static void node_check_refused(qraft_node *n) {
  qraft_core_status st;
  qraft_core_status_get(n->core, &st);
  bool refused = false;
  for (uint32_t i = 0; i < n->members_n; i++) {
    node_member *m = &n->members[i];
    qraft_peer_metrics pm;
    if (m->id == n->id ||
        qraft_endpoint_peer_metrics(n->ep, &m->addr.id, QRAFT_RAFT_ALPN,
                                    &pm) != 0 ||
        pm.refused == m->refused_seen) {
      continue;
    }
    m->refused_seen = pm.refused;
    for (uint32_t v = 0; v < n->conf.voters_n; v++) {
      refused |= n->conf.voters[v] == m->id;
    }
  }
  uint64_t now = qraft_env_now_ns(n->env);
  uint64_t gap = 2ull * n->cfg.election_ticks * n->tick_ns;
  if (!refused || st.role != QRAFT_ROLE_LEADER || st.lead_transferee != 0 ||
      (n->refused_transfer_ns != 0 && now - n->refused_transfer_ns < gap)) {
    return;
  }
  qraft_progress_info pr[NODE_ADDRS_MAX];
  size_t k = qraft_core_progress(n->core, pr, NODE_ADDRS_MAX);
  k = k < NODE_ADDRS_MAX ? k : NODE_ADDRS_MAX;
  qraft_id cand[NODE_ADDRS_MAX];
  size_t cand_n = 0;
  for (size_t i = 0; i < k; i++) {
    if (pr[i].id != n->id && !pr[i].is_learner && pr[i].recent_active &&
        pr[i].match == st.last_index &&
        qraft__node_conf_has(&n->conf, pr[i].id)) {
      cand[cand_n++] = pr[i].id;
    }
  }
  if (cand_n == 0) {
    return;
  }
  uint64_t r;
  qraft_env_random(n->env, &r, sizeof r);
  qraft_id to = cand[r % cand_n];
  n->refused_transfer_ns = now;
  QRAFT_LOG(n->lg, QRAFT_LOG_INFO,
            "a voter refuses us (it has not seen us added); handing leadership "
            "to a voter it may know",
            QRAFT_LOG_U64("to", to));
  (void)qraft_core_transfer_leader(n->core, to);
}

/*
 * The clock. Every entry point of the loop calls this before it hands
 * anything to the core, so the core counts every tick that has gone by,
 * however long the loop was away (a lease read must see the time). The
 * decisions that a stall could make wrong wait for the tick timer, which
 * first reads what arrived meanwhile (qraft__node_tick_cb).
 */
void qraft__node_clock(qraft_node *n) {
  uint64_t now = qraft_env_now_ns(n->env);
  if (n->core == NULL || n->next_tick_ns > now) {
    return;
  }
  uint64_t k = (now - n->next_tick_ns) / n->tick_ns + 1;
  qraft_core_elapse(n->core, k);
  n->next_tick_ns += k * n->tick_ns;
  if (k > 1) {
    n->stalled = true;
    pthread_mutex_lock(&n->mu);
    qraft_histogram_record(&n->h_stall_us, (now - n->ticked_ns) / 1000);
    pthread_mutex_unlock(&n->mu);
  }
  n->ticked_ns = now;
}

void qraft__node_tick_cb(void *ud) {
  qraft_node *n = ud;
  if (n->fatal) {
    return;
  }
  qraft__node_clock(n);
#ifdef QRAFT_CANARY_NODE_TICKS_BEFORE_MESSAGES
  n->stalled = false; /* planted bug: decide before reading what arrived */
#endif
  if (n->stalled && n->ep != NULL) {
    /* A libuv loop runs its timers before it reads its sockets: after a
     * stall, what our peers sent meanwhile is still unread. Check-quorum
     * and the election timeout must see it, or a leader whose followers
     * answered steps down and a follower whose leader is alive campaigns.
     * (8192 datagrams a socket is more than its receive buffer holds.) */
    qraft_endpoint_poll(n->ep, 8192);
  }
  n->stalled = false;
  qraft_core_check_timeouts(n->core);
  qraft__node_expire(n);
  qraft__node_space_tick(n);
  if (n->net != NULL) {
    node_check_refused(n);
  }
  if (n->disc_file != NULL && n->net != NULL) {
    /* the discovery file may have changed: dial members at what it says
     * now (every 5 s; the file is re-read only when it changed) */
    uint64_t now = qraft_env_now_ns(n->env);
    if (now - n->disc_synced_ns >= 5000000000ull) {
      n->disc_synced_ns = now;
      qraft__node_sync_peers(n);
    }
  }
  qraft__node_drain(n);
  qraft_env_timer_arm(n->tick_timer, n->next_tick_ns);
}

void qraft__node_wake_cb(void *ud) {
  qraft_node *n = ud;
  if (n->stopped) {
    return;
  }
  if (n->st_fd >= 0) {
    qraft_storage_poll(n->st);
    if (atomic_exchange(&n->bridge_waiting, false)) {
      uint64_t one = 1;
      ssize_t wr = write(n->bridge_go_fd, &one, sizeof one);
      (void)wr;
    }
  }
  pthread_mutex_lock(&n->mu);
  bool stop = n->stop_requested;
  pthread_mutex_unlock(&n->mu);
  if (stop) {
    qraft__node_shutdown_on_loop(n);
    return;
  }
  qraft__node_clock(n);
  qraft__node_take_requests(n);
}

/* The store's eventfd is readable: completed writes wait (their callbacks
 * run inside the poll). */
void qraft__node_store_cb(void *ud) {
  qraft_node *n = ud;
  if (n->stopped) {
    return;
  }
  qraft__node_clock(n);
  qraft_storage_poll(n->st);
}

void qraft__node_recv_cb(void *ud, qraft_id from, qraft_wire_batch *batch) {
  qraft_node *n = ud;
  if (n->fatal) {
    qraft_wire_batch_free(batch);
    return;
  }
  qraft__node_clock(n);
  for (size_t i = 0; i < batch->msgs_n; i++) {
    qraft_message *m = &batch->msgs[i];
    n->m_messages_in++;
    if (m->from != from) {
      continue;
    }
    if (m->type == QRAFT_MSG_SNAPSHOT) {
      continue; /* they arrive whole through qraft__node_snap_recv_cb */
    }
    qraft__node_peer_alarms(n, from, m->alarms);
    if (m->type == QRAFT_MSG_BEAT) {
      continue; /* an alarm beacon (space.c): for the node, not the core */
    }
    if (qraft__node_drop_for_space(n, m)) {
      continue; /* no room for more: as if lost (space.c) */
    }
    (void)qraft_core_step(n->core, m);
  }
  qraft_wire_batch_free(batch);
  qraft__node_drain(n);
}

void qraft__node_peer_cb(void *ud, qraft_id peer, bool reachable) {
  qraft_node *n = ud;
  /* (not while an update is handled, e.g. a peer removed by a
   * configuration change: a core call would invalidate it; the report is
   * a hint the core's probing does without) */
  if (!reachable && n->core != NULL && !n->draining) {
    qraft__node_clock(n);
    qraft_core_report_unreachable(n->core, peer);
    qraft__node_drain(n);
  }
}

void qraft__node_snapshot_sent_cb(void *ud, qraft_id to, int status) {
  qraft_node *n = ud;
  qraft__node_clock(n);
  if (status == 0) {
    n->m_snap_sends_done++;
  } else {
    n->m_snap_sends_failed++;
  }
  qraft__node_snap_report(n, to, status == 0);
  qraft__node_drain(n);
}

bool qraft__node_unknown_sender_cb(void *ud, qraft_id sender,
                                   const qraft_node_id *key) {
  qraft_node *n = ud;
  /* Accept a peer we do not know yet only while we are not a member of
   * any configuration (a node being added); the id must be its key's. */
  return n->conf.voters_n == 0 && qraft_node_raft_id(key) == sender;
}

bool qraft__node_authorize_cb(void *ud, const qraft_node_id *peer,
                              const char *alpn) {
  qraft_node *n = ud;
  if (n->conf.voters_n == 0) {
    return true; /* a joining node accepts the cluster that adds it */
  }
  return qraft_raft_net_authorize_cb(n->net, peer, alpn);
}

/* --- the storage bridge: eventfd readable -> wake the loop ---------------- */

/* The store signals completed writes on its eventfd; with an env that
 * cannot watch descriptors (qraft_env_fd_watch), this thread turns
 * "readable" into a wake-up of the loop, then
 * waits until the loop has polled the store (bridge_go_fd) before it
 * watches the fd again, so it never spins on a readable fd. */
void *qraft__node_bridge_main(void *arg) {
  qraft_node *n = arg;
  pthread_setname_np(pthread_self(), "qraft-bridge");
  for (;;) {
    struct pollfd p[2] = {{.fd = n->st_fd, .events = POLLIN},
                          {.fd = n->bridge_stop_fd, .events = POLLIN}};
    int rv = poll(p, 2, -1);
    if (rv < 0 && errno == EINTR) {
      continue;
    }
    if (p[1].revents != 0) {
      return NULL;
    }
    if ((p[0].revents & POLLIN) == 0) {
      continue;
    }
    atomic_store(&n->bridge_waiting, true);
    qraft_env_wake_send(n->wake);
    struct pollfd q[2] = {{.fd = n->bridge_go_fd, .events = POLLIN},
                          {.fd = n->bridge_stop_fd, .events = POLLIN}};
    for (;;) {
      rv = poll(q, 2, -1);
      if (rv < 0 && errno == EINTR) {
        continue;
      }
      break;
    }
    if (q[1].revents != 0) {
      return NULL;
    }
    uint64_t v;
    ssize_t r = read(n->bridge_go_fd, &v, sizeof v);
    (void)r;
  }
}
