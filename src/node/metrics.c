/*
 * metrics.c: the status copy and the Prometheus text of a node's metrics.
 */
#include "node_internal.h"

static const char *const stage_metric[STAGES] = {
    "qraft_write_queued_seconds",   "qraft_write_to_wal_seconds",
    "qraft_write_wal_sync_seconds", "qraft_write_quorum_seconds",
    "qraft_write_apply_seconds",    "qraft_write_callback_seconds"};

void qraft_node_status_get(qraft_node *n, qraft_node_status *out) {
  pthread_mutex_lock(&n->mu);
  *out = n->status;
  pthread_mutex_unlock(&n->mu);
}

/* snprintf into buf at *off, tracking the length the whole text needs. */
static void mt_put(char *buf, size_t size, size_t *off, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void mt_put(char *buf, size_t size, size_t *off, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int k = vsnprintf(*off < size ? buf + *off : NULL,
                    *off < size ? size - *off : 0, fmt, ap);
  va_end(ap);
  if (k > 0) {
    *off += (size_t)k;
  }
}

static size_t node_transport_metrics(qraft_node *n, char *buf, size_t size) {
  size_t off = 0;
  pthread_mutex_lock(&n->mu);
  qraft_endpoint_metrics em = n->m_ep;
  uint32_t pn = n->m_peers_n;
  qraft_peer_metrics pm[NODE_ADDRS_MAX];
  memcpy(pm, n->m_peers, pn * sizeof pm[0]);
  pthread_mutex_unlock(&n->mu);
  mt_put(buf, size, &off, "# TYPE qraft_transport_connections gauge\n"
                          "qraft_transport_connections %" PRIu64 "\n",
         em.conns_up);
  mt_put(buf, size, &off,
         "# HELP qraft_transport_relay_drops_total Datagrams from relays "
         "dropped: the queue to QUIC was full, or the path table.\n"
         "# TYPE qraft_transport_relay_drops_total counter\n"
         "qraft_transport_relay_drops_total %" PRIu64 "\n",
         em.relay_drops);
  mt_put(buf, size, &off,
         "# HELP qraft_transport_probes_total Path probes received "
         "(result: ok, bad, limited, stale).\n"
         "# TYPE qraft_transport_probes_total counter\n"
         "qraft_transport_probes_total{result=\"ok\"} %" PRIu64 "\n"
         "qraft_transport_probes_total{result=\"bad\"} %" PRIu64 "\n"
         "qraft_transport_probes_total{result=\"limited\"} %" PRIu64 "\n"
         "qraft_transport_probes_total{result=\"stale\"} %" PRIu64 "\n"
         "# HELP qraft_transport_packets_unprobed_total QUIC packets of a "
         "peer from an address no authenticated probe vouched for "
         "(dropped).\n"
         "# TYPE qraft_transport_packets_unprobed_total counter\n"
         "qraft_transport_packets_unprobed_total %" PRIu64 "\n",
         em.probes_in - em.probes_bad - em.probes_limited - em.probes_stale,
         em.probes_bad, em.probes_limited, em.probes_stale,
         em.packets_unprobed);
  mt_put(buf, size, &off,
         "# TYPE qraft_transport_handshake_failures_total counter\n");
  for (int r = 0; r < QRAFT_HS_FAIL_N; r++) {
    mt_put(buf, size, &off,
           "qraft_transport_handshake_failures_total{reason=\"%s\"} %" PRIu64
           "\n",
           qraft_handshake_failure_name((qraft_handshake_failure)r),
           em.handshake_failures[r]);
  }
  static const char *const names[] = {
      "bytes_out_total", "bytes_in_total", "messages_out_total",
      "messages_in_total", "lost_packets_total", "reconnects_total",
      "smoothed_rtt_seconds", "cwnd_bytes"};
  for (int k = 0; k < 8; k++) {
    bool gauge = k >= 6;
    mt_put(buf, size, &off, "# TYPE qraft_peer_%s %s\n", names[k],
           gauge ? "gauge" : "counter");
    for (uint32_t i = 0; i < pn; i++) {
      char hex[QRAFT_NODE_ID_HEX_SIZE];
      qraft_node_id_to_hex(&pm[i].peer, hex);
      hex[16] = '\0'; /* the Raft id part: enough to tell peers apart */
      uint64_t v[] = {pm[i].bytes_out,    pm[i].bytes_in,
                      pm[i].messages_out, pm[i].messages_in,
                      pm[i].lost_packets, pm[i].reconnects,
                      0,                  pm[i].cwnd_bytes};
      if (k == 6) {
        mt_put(buf, size, &off, "qraft_peer_%s{peer=\"%s\"} %.6f\n",
               names[k], hex, (double)pm[i].smoothed_rtt_ns / 1e9);
      } else {
        mt_put(buf, size, &off, "qraft_peer_%s{peer=\"%s\"} %" PRIu64 "\n",
               names[k], hex, v[k]);
      }
    }
  }
  /* The path layer: which path each peer's packets take, and the bytes
   * and relay round trip of each (docs/connectivity.md). */
  mt_put(buf, size, &off,
         "# HELP qraft_peer_path The path a peer's packets take (1 on the "
         "current one).\n# TYPE qraft_peer_path gauge\n");
  for (uint32_t i = 0; i < pn; i++) {
    char hex[QRAFT_NODE_ID_HEX_SIZE];
    qraft_node_id_to_hex(&pm[i].peer, hex);
    hex[16] = '\0';
    for (int k = QRAFT_PATH_NONE; k <= QRAFT_PATH_RELAY; k++) {
      mt_put(buf, size, &off, "qraft_peer_path{peer=\"%s\",path=\"%s\"} %d\n",
             hex, qraft_path_kind_name(k), pm[i].path == k);
    }
  }
  mt_put(buf, size, &off, "# TYPE qraft_peer_path_bytes_total counter\n");
  for (uint32_t i = 0; i < pn; i++) {
    char hex[QRAFT_NODE_ID_HEX_SIZE];
    qraft_node_id_to_hex(&pm[i].peer, hex);
    hex[16] = '\0';
    const char *dirs[] = {"out", "in", "out", "in"};
    const char *paths[] = {"direct", "direct", "relay", "relay"};
    uint64_t v[] = {pm[i].path_direct_bytes_out, pm[i].path_direct_bytes_in,
                    pm[i].path_relay_bytes_out, pm[i].path_relay_bytes_in};
    for (int k = 0; k < 4; k++) {
      mt_put(buf, size, &off,
             "qraft_peer_path_bytes_total{peer=\"%s\",path=\"%s\","
             "dir=\"%s\"} %" PRIu64 "\n",
             hex, paths[k], dirs[k], v[k]);
    }
  }
  mt_put(buf, size, &off, "# TYPE qraft_peer_relay_rtt_seconds gauge\n"
                          "# TYPE qraft_peer_path_fallbacks_total counter\n"
                          "# TYPE qraft_peer_path_upgrades_total counter\n");
  for (uint32_t i = 0; i < pn; i++) {
    char hex[QRAFT_NODE_ID_HEX_SIZE];
    qraft_node_id_to_hex(&pm[i].peer, hex);
    hex[16] = '\0';
    mt_put(buf, size, &off,
           "qraft_peer_relay_rtt_seconds{peer=\"%s\"} %.6f\n"
           "qraft_peer_path_fallbacks_total{peer=\"%s\"} %" PRIu64 "\n"
           "qraft_peer_path_upgrades_total{peer=\"%s\"} %" PRIu64 "\n",
           hex, (double)pm[i].path_relay_rtt_ns / 1e9, hex,
           pm[i].path_fallbacks, hex, pm[i].path_upgrades);
  }
  mt_put(buf, size, &off, "# TYPE qraft_peer_path_probes_total counter\n"
                          "# TYPE qraft_peer_time_to_direct_seconds gauge\n");
  for (uint32_t i = 0; i < pn; i++) {
    char hex[QRAFT_NODE_ID_HEX_SIZE];
    qraft_node_id_to_hex(&pm[i].peer, hex);
    hex[16] = '\0';
    const char *kinds[] = {"ping_out", "ping_in", "pong_out",
                           "pong_in", "call_me_maybe_out",
                           "call_me_maybe_in"};
    uint64_t v[] = {pm[i].path_pings_out, pm[i].path_pings_in,
                    pm[i].path_pongs_out, pm[i].path_pongs_in,
                    pm[i].path_call_me_maybe_out,
                    pm[i].path_call_me_maybe_in};
    for (int k = 0; k < 6; k++) {
      mt_put(buf, size, &off,
             "qraft_peer_path_probes_total{peer=\"%s\",kind=\"%s\"} "
             "%" PRIu64 "\n",
             hex, kinds[k], v[k]);
    }
    if (pm[i].path_first_direct_ns != 0) {
      mt_put(buf, size, &off,
             "qraft_peer_time_to_direct_seconds{peer=\"%s\"} %.6f\n", hex,
             (double)pm[i].path_first_direct_ns / 1e9);
    }
  }
  return off;
}

size_t qraft_node_metrics_text(qraft_node *n, char *buf, size_t size) {
  qraft_node_status s;
  qraft_node_status_get(n, &s);
  uint64_t v[] = {n->m_elections,      n->m_proposals,
                  n->m_proposals_failed, n->m_reads,
                  n->m_applied_entries, n->m_snapshots_taken,
                  n->m_snapshots_installed, n->m_writes,
                  n->m_write_entries,   n->m_messages_out,
                  n->m_messages_in};
  size_t off = (size_t)snprintf(
      buf, size,
      "# TYPE qraft_term gauge\nqraft_term %" PRIu64 "\n"
      "# TYPE qraft_is_leader gauge\nqraft_is_leader %d\n"
      "# TYPE qraft_commit_index gauge\nqraft_commit_index %" PRIu64 "\n"
      "# TYPE qraft_applied_index gauge\nqraft_applied_index %" PRIu64 "\n"
      "# TYPE qraft_apply_lag gauge\nqraft_apply_lag %" PRIu64 "\n"
      "# TYPE qraft_elections_won_total counter\n"
      "qraft_elections_won_total %" PRIu64 "\n"
      "# TYPE qraft_proposals_total counter\nqraft_proposals_total %" PRIu64
      "\n"
      "# TYPE qraft_proposals_failed_total counter\n"
      "qraft_proposals_failed_total %" PRIu64 "\n"
      "# TYPE qraft_reads_total counter\nqraft_reads_total %" PRIu64 "\n"
      "# TYPE qraft_applied_entries_total counter\n"
      "qraft_applied_entries_total %" PRIu64 "\n"
      "# TYPE qraft_snapshots_taken_total counter\n"
      "qraft_snapshots_taken_total %" PRIu64 "\n"
      "# TYPE qraft_snapshots_installed_total counter\n"
      "qraft_snapshots_installed_total %" PRIu64 "\n"
      "# TYPE qraft_storage_writes_total counter\n"
      "qraft_storage_writes_total %" PRIu64 "\n"
      "# TYPE qraft_storage_entries_total counter\n"
      "qraft_storage_entries_total %" PRIu64 "\n"
      "# TYPE qraft_messages_out_total counter\nqraft_messages_out_total %" PRIu64
      "\n"
      "# TYPE qraft_messages_in_total counter\nqraft_messages_in_total %" PRIu64
      "\n",
      s.term, s.role == QRAFT_ROLE_LEADER, s.commit, s.applied,
      s.commit > s.applied ? s.commit - s.applied : 0, v[0], v[1], v[2], v[3],
      v[4], v[5], v[6], v[7], v[8], v[9], v[10]);
  mt_put(buf, size, &off,
      "# HELP qraft_leader_changes_total New terms with a leader after the "
      "first this member knew.\n"
      "# TYPE qraft_leader_changes_total counter\n"
      "qraft_leader_changes_total %" PRIu64 "\n"
      "# HELP qraft_election_timeouts_total Campaigns this member's election "
      "timeout started.\n"
      "# TYPE qraft_election_timeouts_total counter\n"
      "qraft_election_timeouts_total %" PRIu64 "\n"
      "# HELP qraft_leader_stepdowns_total Times this member stopped leading, "
      "by reason.\n"
      "# TYPE qraft_leader_stepdowns_total counter\n",
      (uint64_t)n->m_leader_changes, (uint64_t)n->m_election_timeouts);
  for (int r = 0; r < QRAFT_STEPDOWN_REASONS; r++) {
    mt_put(buf, size, &off,
        "qraft_leader_stepdowns_total{reason=\"%s\"} %" PRIu64 "\n",
        qraft_stepdown_reason_name((qraft_stepdown_reason)r),
        (uint64_t)n->m_stepdowns[r]);
  }
  if (n->cfg.sm->durable_index != NULL) {
    mt_put(buf, size, &off,
        "# HELP qraft_sm_durable_index The index the state machine's state "
        "is durable at; the log is kept after it.\n"
        "# TYPE qraft_sm_durable_index gauge\n"
        "qraft_sm_durable_index %" PRIu64 "\n"
        "# HELP qraft_sm_durable_lag Applied entries not yet durable in the "
        "state machine.\n"
        "# TYPE qraft_sm_durable_lag gauge\n"
        "qraft_sm_durable_lag %" PRIu64 "\n"
        "# HELP qraft_sm_rebuilds_total Starts that restored the state "
        "machine from a snapshot above its durable index: a received one "
        "whose install a crash interrupted, or one taken here (state_lost: "
        "the state machine lost state it had reported durable).\n"
        "# TYPE qraft_sm_rebuilds_total counter\n"
        "qraft_sm_rebuilds_total{reason=\"install_interrupted\"} %" PRIu64 "\n"
        "qraft_sm_rebuilds_total{reason=\"state_lost\"} %" PRIu64 "\n",
        s.sm_durable_index,
        s.applied > s.sm_durable_index ? s.applied - s.sm_durable_index : 0,
        (uint64_t)n->m_sm_rebuilds_received, (uint64_t)n->m_sm_rebuilds_lost);
  }
  pthread_mutex_lock(&n->mu);
  uint64_t pending_bytes = n->pending_bytes;
  pthread_mutex_unlock(&n->mu);
  mt_put(buf, size, &off,
      "# HELP qraft_memory_bytes What this member holds in memory, by part "
      "(payload bytes; the parts do not overlap): log, the applied entries "
      "the core keeps until the next snapshot (bounded by "
      "snapshot_log_bytes); unapplied, the entries in the log not yet "
      "applied (uncommitted, or waiting for the state machine: for a "
      "snapshot restored in steps, for one); proposals, queued or in "
      "flight here (bounded by pending_bytes_max); send_buffers, messages "
      "handed to the transport and not yet acknowledged by the peer; "
      "snapshot_transfers, snapshot chunks in flight out (bounded by "
      "snapshot_inflight_bytes per transfer) and snapshots received into "
      "memory.\n"
      "# TYPE qraft_memory_bytes gauge\n"
      "qraft_memory_bytes{part=\"log\"} %" PRIu64 "\n"
      "qraft_memory_bytes{part=\"unapplied\"} %" PRIu64 "\n"
      "qraft_memory_bytes{part=\"proposals\"} %" PRIu64 "\n"
      "qraft_memory_bytes{part=\"send_buffers\"} %" PRIu64 "\n"
      "qraft_memory_bytes{part=\"snapshot_transfers\"} %" PRIu64 "\n"
      "# HELP qraft_snapshot_transfers Snapshots streaming now: out, each "
      "holding at most snapshot_inflight_bytes plus a chunk; in, written to "
      "the store as they arrive.\n"
      "# TYPE qraft_snapshot_transfers gauge\n"
      "qraft_snapshot_transfers{dir=\"out\"} %u\n"
      "qraft_snapshot_transfers{dir=\"in\"} %u\n"
      "# TYPE qraft_snapshot_bytes_total counter\n"
      "qraft_snapshot_bytes_total{dir=\"out\"} %" PRIu64 "\n"
      "qraft_snapshot_bytes_total{dir=\"in\"} %" PRIu64 "\n"
      "# HELP qraft_snapshot_sends_total Snapshots sent, by outcome (done: "
      "acknowledged whole by the peer's transport).\n"
      "# TYPE qraft_snapshot_sends_total counter\n"
      "qraft_snapshot_sends_total{outcome=\"done\"} %" PRIu64 "\n"
      "qraft_snapshot_sends_total{outcome=\"failed\"} %" PRIu64 "\n"
      "# HELP qraft_snapshot_receives_aborted_total Snapshots whose transfer "
      "broke midway (nothing of them is installed).\n"
      "# TYPE qraft_snapshot_receives_aborted_total counter\n"
      "qraft_snapshot_receives_aborted_total %" PRIu64 "\n"
      "# HELP qraft_snapshots_stateless_total Snapshots taken here without "
      "a copy of the state (a durable state machine holds it): the log "
      "compacted at its durable index.\n"
      "# TYPE qraft_snapshots_stateless_total counter\n"
      "qraft_snapshots_stateless_total %" PRIu64 "\n"
      "# HELP qraft_snapshot_sends_from_state_total Snapshots sent streamed "
      "from a view of the state machine (the store's was stateless).\n"
      "# TYPE qraft_snapshot_sends_from_state_total counter\n"
      "qraft_snapshot_sends_from_state_total %" PRIu64 "\n"
      "# HELP qraft_snapshot_steps_total Steps of snapshots taken in steps "
      "(the loop goes on between two).\n"
      "# TYPE qraft_snapshot_steps_total counter\n"
      "qraft_snapshot_steps_total %" PRIu64 "\n"
      "# HELP qraft_snapshot_restore_steps_total Steps of received snapshots "
      "restored in steps (the loop goes on between two).\n"
      "# TYPE qraft_snapshot_restore_steps_total counter\n"
      "qraft_snapshot_restore_steps_total %" PRIu64 "\n"
      "# HELP qraft_restore_waited_entries_total Committed entries that "
      "waited for a restore in steps to end before they were applied.\n"
      "# TYPE qraft_restore_waited_entries_total counter\n"
      "qraft_restore_waited_entries_total %" PRIu64 "\n",
      s.log_applied_bytes, s.log_bytes - s.log_applied_bytes, pending_bytes,
      s.send_buffer_bytes, s.snapshot_buffer_bytes, s.snapshot_sends_active,
      s.snapshot_recvs_active, s.snapshot_bytes_sent,
      s.snapshot_bytes_received, s.snapshot_sends_done,
      s.snapshot_sends_failed, s.snapshot_recvs_aborted,
      s.snapshots_stateless, s.snapshot_sends_from_state,
      (uint64_t)n->m_snap_steps, (uint64_t)n->m_restore_steps,
      (uint64_t)n->m_restore_waited);
  mt_put(buf, size, &off,
         "# HELP qraft_alarm_nospace 1 while this member is out of disk "
         "space or below its reserve (it refuses writes as leader).\n"
         "# TYPE qraft_alarm_nospace gauge\nqraft_alarm_nospace %d\n"
         "# HELP qraft_alarm_voters_nospace Voters (this one included) in the "
         "no-space alarm, as last heard from them.\n"
         "# TYPE qraft_alarm_voters_nospace gauge\n"
         "qraft_alarm_voters_nospace %u\n"
         "# HELP qraft_alarm_quorum_nospace 1 while the voters in alarm are a "
         "quorum (proposals fail at once with no space).\n"
         "# TYPE qraft_alarm_quorum_nospace gauge\n"
         "qraft_alarm_quorum_nospace %d\n"
         "# TYPE qraft_alarms_raised_total counter\n"
         "qraft_alarms_raised_total %" PRIu64 "\n"
         "# HELP qraft_space_free_bytes Free space of the data directory as "
         "last checked (absent: not checked).\n"
         "# TYPE qraft_space_free_bytes gauge\n",
         (s.alarms & QRAFT_ALARM_NOSPACE) ? 1 : 0, s.voters_in_alarm,
         s.alarm_quorum ? 1 : 0, s.alarms_raised);
  if (s.space_free_bytes != UINT64_MAX) {
    mt_put(buf, size, &off, "qraft_space_free_bytes %" PRIu64 "\n",
           s.space_free_bytes);
  }
  mt_put(buf, size, &off,
         "# TYPE qraft_space_reserve_bytes gauge\n"
         "qraft_space_reserve_bytes %" PRIu64 "\n"
         "# HELP qraft_writes_held Storage writes waiting for room.\n"
         "# TYPE qraft_writes_held gauge\nqraft_writes_held %" PRIu64 "\n"
         "# TYPE qraft_writes_held_total counter\n"
         "qraft_writes_held_total %" PRIu64 "\n"
         "# HELP qraft_apply_waiting_entries Committed entries waiting for "
         "the state machine to take them.\n"
         "# TYPE qraft_apply_waiting_entries gauge\n"
         "qraft_apply_waiting_entries %" PRIu64 "\n"
         "# TYPE qraft_apply_refused_total counter\n"
         "qraft_apply_refused_total %" PRIu64 "\n"
         "# HELP qraft_appends_dropped_nospace_total Appends from the leader "
         "dropped while writes waited for room.\n"
         "# TYPE qraft_appends_dropped_nospace_total counter\n"
         "qraft_appends_dropped_nospace_total %" PRIu64 "\n"
         "# TYPE qraft_proposals_nospace_total counter\n"
         "qraft_proposals_nospace_total %" PRIu64 "\n",
         n->cfg.space_reserve_bytes == QRAFT_NODE_SPACE_RESERVE_NONE
             ? 0
             : n->cfg.space_reserve_bytes,
         s.writes_held, (uint64_t)n->m_writes_held_total,
         s.apply_waiting_entries, (uint64_t)n->m_apply_refused,
         (uint64_t)n->m_appends_dropped_nospace,
         (uint64_t)n->m_proposals_nospace);
  off += node_transport_metrics(n, off < size ? buf + off : NULL,
                                off < size ? size - off : 0);
  pthread_mutex_lock(&n->mu);
  qraft_histogram hs[5] = {n->h_write_us, n->h_write_entries, n->h_commit_us,
                           n->h_apply_entries, n->h_stall_us};
  qraft_histogram stages[STAGES];
  memcpy(stages, n->h_stage_us, sizeof stages);
  pthread_mutex_unlock(&n->mu);
  mt_put(buf, size, &off,
         "# HELP qraft_write_queued_seconds The stages of this member's "
         "proposals: the call to the loop taking it (queued), to its entry "
         "appended, sent to the followers and handed to the store (to_wal), "
         "to durable here (wal_sync), to committed by a quorum (quorum), to "
         "applied (apply), to the callback's return (callback).\n");
  for (int k = 0; k < STAGES; k++) {
    off += qraft_histogram_prometheus(&stages[k], stage_metric[k], 1e6,
                                      off < size ? buf + off : NULL,
                                      off < size ? size - off : 0);
  }
  mt_put(buf, size, &off,
         "# HELP qraft_loop_stall_seconds_max The longest the loop went "
         "without counting ticks, among the gaps that missed a tick "
         "(qraft_loop_stall_seconds).\n"
         "# TYPE qraft_loop_stall_seconds_max gauge\n"
         "qraft_loop_stall_seconds_max %.6f\n",
         (double)hs[4].max / 1e6);
  static const char *const hn[5] = {"qraft_storage_write_seconds",
                                    "qraft_storage_write_entries",
                                    "qraft_commit_seconds",
                                    "qraft_apply_batch_entries",
                                    "qraft_loop_stall_seconds"};
  static const double hscale[5] = {1e6, 1, 1e6, 1, 1e6};
  for (int i = 0; i < 5; i++) {
    off += qraft_histogram_prometheus(&hs[i], hn[i], hscale[i],
                                      off < size ? buf + off : NULL,
                                      off < size ? size - off : 0);
  }
  return off;
}
