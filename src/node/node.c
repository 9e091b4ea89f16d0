/*
 * node.c: the node's lifecycle: its configuration, opening the store and
 * the core (where the state machine resumes), bootstrap, start, stop and free.
 */
#include "node_internal.h"

/* --- config --------------------------------------------------------------- */

void qraft_node_config_default(qraft_node_config *cfg) {
  memset(cfg, 0, sizeof *cfg);
  cfg->version = QRAFT_NODE_CONFIG_VERSION;
}

static int node_config_check(qraft_node_config *c, qraft_err *err) {
  if (c->version != QRAFT_NODE_CONFIG_VERSION) {
    return QRAFT_ERR(err, QRAFT_ECONFIG, "node config version %u, expected %u",
                     c->version, QRAFT_NODE_CONFIG_VERSION);
  }
  if ((c->data_dir == NULL) == (c->storage == NULL)) {
    return QRAFT_ERR(err, QRAFT_ECONFIG,
                     "set exactly one of data_dir and storage");
  }
  if (c->key == NULL) {
    return QRAFT_ERR(err, QRAFT_ECONFIG, "key is required");
  }
  if (c->cluster_id == 0) {
    return QRAFT_ERR(err, QRAFT_ECONFIG, "cluster_id must not be 0");
  }
  if (c->bind_n == 0 || c->bind_n > 2) {
    return QRAFT_ERR(err, QRAFT_ECONFIG, "bind_n must be 1 or 2, not %u",
                     c->bind_n);
  }
  if (c->relays_n > QRAFT_NODE_RELAYS_MAX) {
    return QRAFT_ERR(err, QRAFT_ECONFIG, "relays_n must be at most %u, not %u",
                     QRAFT_NODE_RELAYS_MAX, c->relays_n);
  }
  if (c->sm == NULL || c->sm->apply == NULL || c->sm->snapshot == NULL ||
      c->sm->restore == NULL) {
    return QRAFT_ERR(err, QRAFT_ECONFIG,
                     "sm with apply, snapshot and restore is required");
  }
  if (c->tick_ms == 0) {
    c->tick_ms = 10;
  }
  /* Defaults: 1 s election timeout, 100 ms heartbeats (etcd's too). On a
   * shared 2-core machine under saturation a loop went 0.3 s without
   * running; the leader's must not be taken for dead (docs/node.md,
   * "Timing and stalls"). */
  if (c->election_ticks == 0) {
    c->election_ticks = (1000 + c->tick_ms - 1) / c->tick_ms;
    if (c->election_ticks < 10) {
      c->election_ticks = 10;
    }
  }
  if (c->heartbeat_ticks == 0) {
    c->heartbeat_ticks = c->election_ticks / 10;
    if (c->heartbeat_ticks < 1) {
      c->heartbeat_ticks = 1;
    }
  }
  if (c->election_ticks <= c->heartbeat_ticks) {
    return QRAFT_ERR(err, QRAFT_ECONFIG,
                     "election_ticks (%u) must be greater than "
                     "heartbeat_ticks (%u)",
                     c->election_ticks, c->heartbeat_ticks);
  }
  if (c->lease_reads && c->disable_check_quorum) {
    return QRAFT_ERR(err, QRAFT_ECONFIG, "lease_reads need check-quorum");
  }
  if (c->pending_proposals_max == 0) {
    c->pending_proposals_max = 8192;
  }
  if (c->pending_bytes_max == 0) {
    c->pending_bytes_max = 64u << 20;
  }
  if (c->pending_reads_max == 0) {
    c->pending_reads_max = 4096;
  }
  if (c->proposal_timeout_ms == 0) {
    c->proposal_timeout_ms = 10 * c->election_ticks * c->tick_ms;
  }
  if (c->snapshot_entries == 0) {
    c->snapshot_entries = 10000;
  }
  if (c->snapshot_log_bytes == 0) {
    c->snapshot_log_bytes = 64u << 20;
  }
  if (c->snapshot_step_bytes == 0) {
    c->snapshot_step_bytes = 4u << 20;
  }
  if (c->snapshot_chunk_bytes == 0) {
    c->snapshot_chunk_bytes = 64u << 10;
  }
  if (c->snapshot_inflight_bytes == 0) {
    c->snapshot_inflight_bytes = 1u << 20;
  }
  if (c->space_reserve_bytes == 0) {
    c->space_reserve_bytes = 64u << 20;
  }
  if (c->space_check_ms == 0) {
    c->space_check_ms = 1000;
  }
  bool steps = c->sm->snapshot_begin != NULL;
  if (steps != (c->sm->snapshot_step != NULL) ||
      steps != (c->sm->snapshot_end != NULL)) {
    return QRAFT_ERR(err, QRAFT_ECONFIG,
                     "sm: snapshot_begin, snapshot_step and snapshot_end go "
                     "together");
  }
  steps = c->sm->restore_begin != NULL;
  if (steps != (c->sm->restore_step != NULL) ||
      steps != (c->sm->restore_end != NULL)) {
    return QRAFT_ERR(err, QRAFT_ECONFIG,
                     "sm: restore_begin, restore_step and restore_end go "
                     "together");
  }
  return 0;
}

/* --- lifecycle ------------------------------------------------------------ */

/* Reads the whole log the store holds (ss: its state) into *es (*cnt
 * entries; the caller releases them and frees the array). */
static int node_read_log(qraft_node *n, const qraft_storage_state *ss,
                         qraft_entry **es_out, size_t *cnt_out,
                         qraft_err *err) {
  size_t cnt = ss->last_index >= ss->first_index
                   ? (size_t)(ss->last_index - ss->first_index + 1)
                   : 0;
  qraft_entry *es = NULL;
  if (cnt > 0) {
    es = calloc(cnt, sizeof *es);
    if (es == NULL) {
      return QRAFT_ERR(err, -ENOMEM, "reading %zu entries", cnt);
    }
    size_t got = 0;
    while (got < cnt) {
      size_t k = 0;
      int rv = qraft_storage_entries(n->st, ss->first_index + got,
                                     ss->last_index + 1, UINT64_MAX, es + got,
                                     cnt - got, &k, err);
      if (rv != 0) {
        qraft_storage_entries_release(es, got);
        free(es);
        return QRAFT_ERR(err, rv, "reading the log back");
      }
      got += k;
    }
  }
  *es_out = es;
  *cnt_out = cnt;
  return 0;
}

static int node_open_core(qraft_node *n, qraft_err *err) {
  qraft_storage_state ss;
  int rv = qraft_storage_state_get(n->st, &ss, err);
  if (rv != 0) {
    return rv;
  }
  n->applied = 0;
  n->sm_index = 0;
  n->snap_index = 0;
  /* Where the state machine stands: a durable one resumes from its durable
   * index and the node re-applies the log after it; one that keeps nothing,
   * or is behind the snapshot, is restored from the snapshot first. */
  bool durable = n->cfg.sm->durable_index != NULL;
  uint64_t d0 = durable ? n->cfg.sm->durable_index(n->cfg.sm_ud) : 0;
  n->m_sm_durable = d0;
  if (durable && d0 > ss.last_index && d0 > ss.snapshot.index) {
    return QRAFT_ERR(err, QRAFT_ECORRUPT,
                     "the state machine is durable at index %" PRIu64
                     ", beyond this log (last index %" PRIu64
                     "): its state belongs to another log",
                     d0, ss.last_index);
  }
  if (ss.snapshot.index > 0) {
    bool keep = durable && d0 >= ss.snapshot.index;
    bool received = false;
    rv = qraft__node_restore_from_store(n, !keep, &received, err);
    if (rv != 0) {
      return QRAFT_ERR(err, rv, "restore from snapshot %" PRIu64,
                       ss.snapshot.index);
    }
    if (durable && !keep && received) {
      n->m_sm_rebuilds_received++;
      QRAFT_LOG(n->lg, QRAFT_LOG_INFO,
                "state machine restored from a received snapshot whose "
                "install a crash interrupted",
                QRAFT_LOG_U64("durable_index", d0),
                QRAFT_LOG_U64("snapshot", ss.snapshot.index));
    } else if (durable && !keep) {
      /* The store installed this snapshot, and dropped the log up to it,
       * only once the state machine reported its state durable there: the
       * state machine lost state it had reported durable (or the log was
       * compacted past it). Rebuilt from the snapshot; nothing is lost. */
      n->m_sm_rebuilds_lost++;
      QRAFT_LOG(n->lg, QRAFT_LOG_ERROR,
                "durable-index contract broken: the state machine's durable "
                "state is behind a snapshot taken here (the log was compacted "
                "past it, or it lost state it had reported durable); "
                "restored it from the snapshot",
                QRAFT_LOG_U64("durable_index", d0),
                QRAFT_LOG_U64("snapshot", ss.snapshot.index));
    }
  }
  if (durable && d0 > n->applied) {
    n->applied = d0;
    n->sm_index = d0;
  }
  size_t cnt = 0;
  qraft_entry *es = NULL;
  rv = node_read_log(n, &ss, &es, &cnt, err);
  if (rv != 0) {
    return rv;
  }
  qraft_core_config cc;
  qraft_core_config_default(&cc);
  cc.id = n->id;
  qraft_env_random(n->env, &cc.seed, sizeof cc.seed);
  cc.election_ticks = n->cfg.election_ticks;
  cc.heartbeat_ticks = n->cfg.heartbeat_ticks;
  cc.pre_vote = !n->cfg.disable_pre_vote;
  cc.check_quorum = !n->cfg.disable_check_quorum;
  cc.read_only = n->cfg.lease_reads ? QRAFT_READ_ONLY_LEASE_BASED
                                    : QRAFT_READ_ONLY_SAFE;
  cc.pending_reads_max = n->cfg.pending_reads_max;
  qraft_snapshot_meta sm = ss.snapshot;
  if (sm.index == 0) {
    sm.term = ss.prev_term;
  }
  qraft_core_restore rs = {.hard_state = ss.hard_state,
                           .snapshot = sm,
                           .entries = es,
                           .entries_n = cnt,
                           .applied = n->applied};
  if (rs.hard_state.commit < n->applied) {
    rs.hard_state.commit = n->applied; /* what was applied was committed */
  }
  /* The addresses of the members added by the entries the state machine
   * kept (they are not applied again). */
  for (size_t i = 0; i < cnt && es[i].index <= n->applied; i++) {
    if (es[i].type != QRAFT_ENTRY_NORMAL) {
      qraft__node_learn_conf_entry(n, &es[i]);
    }
  }
  rv = qraft_core_new(&cc, &rs, &n->core, err);
  qraft_storage_entries_release(es, cnt);
  free(es);
  if (rv != 0) {
    return rv;
  }
  n->conf = *qraft_core_conf_state(n->core);
  return 0;
}

int qraft_node_new(const qraft_node_config *cfg_in, qraft_node **out,
                   qraft_err *err) {
  *out = NULL;
  qraft_node_config cfg = *cfg_in;
  int rv = node_config_check(&cfg, err);
  if (rv != 0) {
    return rv;
  }
  qraft_node *n = calloc(1, sizeof *n);
  if (n == NULL) {
    return QRAFT_ERR(err, -ENOMEM, "node");
  }
  n->cfg = cfg;
  n->key = *cfg.key;
  n->cfg.key = &n->key;
  n->id = qraft_node_raft_id(&n->key.public_key);
  n->lg = cfg.logger;
  n->st_fd = -1;
  n->bridge_stop_fd = -1;
  n->bridge_go_fd = -1;
  n->tick_ns = (uint64_t)cfg.tick_ms * 1000000u;
  n->accepting = true;
  n->stage_ring = calloc(NODE_STAGE_RING, sizeof *n->stage_ring);
  n->space_free = UINT64_MAX;
  n->space_dir = cfg.data_dir != NULL ? strdup(cfg.data_dir) : NULL;
  if (n->stage_ring == NULL || (cfg.data_dir != NULL && n->space_dir == NULL)) {
    free(n->stage_ring);
    free(n->space_dir);
    free(n);
    return QRAFT_ERR(err, -ENOMEM, "node");
  }
  pthread_mutex_init(&n->mu, NULL);
  if (cfg.env != NULL) {
    n->env = cfg.env;
  } else {
    rv = qraft_env_uv_new(&n->env);
    if (rv != 0) {
      QRAFT_ERR(err, rv, "libuv env");
      goto err_free;
    }
    n->own_env = true;
  }
  /* Proposals carry (our id, seq) in their context and reads use seq as
   * their id; entries and read states of an earlier run of this node may
   * still come back after a restart, so a run's numbers must not start
   * where the last run's did (found by qraft-sim --full). */
  qraft_env_random(n->env, &n->next_seq, sizeof n->next_seq);
  n->next_seq &= (UINT64_C(1) << 62) - 1;
  if (cfg.storage != NULL) {
    n->st = cfg.storage;
  } else {
    rv = qraft_storage_wal_open(cfg.data_dir, NULL, &n->st, err);
    if (rv != 0) {
      QRAFT_ERR(err, rv, "open %s", cfg.data_dir);
      goto err_env;
    }
  }
  n->st_fd = qraft_storage_fd(n->st);
  rv = node_open_core(n, err);
  if (rv != 0) {
    goto err_storage;
  }
  *out = n;
  return 0;

err_storage:
  if (cfg.storage == NULL) {
    qraft_storage_close(n->st); /* a store given to us stays the caller's */
  }
err_env:
  if (n->own_env) {
    qraft_env_free(n->env);
  }
err_free:
  pthread_mutex_destroy(&n->mu);
  free(n->stage_ring);
  free(n->space_dir);
  free(n);
  return rv;
}

/* A bootstrap needs a node not started and an empty store. */
static int node_bootstrap_check(qraft_node *n, qraft_err *err) {
  if (n->started) {
    return QRAFT_ERR(err, QRAFT_ESTATE, "bootstrap after start");
  }
  qraft_storage_state ss;
  int rv = qraft_storage_state_get(n->st, &ss, err);
  if (rv != 0) {
    return rv;
  }
  if (ss.last_index != 0 || ss.snapshot.index != 0 ||
      ss.hard_state.term != 0) {
    return QRAFT_ERR(err, QRAFT_ESTATE, "bootstrap: the store is not empty");
  }
  return 0;
}

int qraft_node_bootstrap(qraft_node *n, const qraft_node_addr *members,
                         size_t cnt, qraft_err *err) {
  int rv = node_bootstrap_check(n, err);
  if (rv != 0) {
    return rv;
  }
  if (cnt == 0 || cnt > QRAFT_CONF_NODES_MAX) {
    return QRAFT_ERR(err, QRAFT_ECONFIG, "bootstrap with %zu members", cnt);
  }
  for (size_t i = 0; i < cnt; i++) {
    if (!qraft__node_addr_valid(&members[i])) {
      return QRAFT_ERR(err, QRAFT_ECONFIG,
                       "bootstrap member %zu: too many addresses or relays, "
                       "or not IPv4 or IPv6", i);
    }
  }
  bool self = false;
  qraft_conf_change ccs[QRAFT_CONF_NODES_MAX];
  uint8_t ctx[QRAFT_CONF_NODES_MAX][NODE_ADDR_ENC_MAX];
  for (size_t i = 0; i < cnt; i++) {
    qraft_id id = qraft_node_raft_id(&members[i].id);
    self = self || id == n->id;
    size_t l = qraft__node_addr_encode(&members[i], ctx[i]);
    ccs[i] = (qraft_conf_change){.change_type = QRAFT_CONF_ADD_NODE,
                                 .node_id = id,
                                 .context = {.data = ctx[i], .len = l}};
  }
  if (!self) {
    return QRAFT_ERR(err, QRAFT_ECONFIG,
                     "bootstrap: this node is not among the members");
  }
  qraft_entry es[QRAFT_CONF_NODES_MAX];
  rv = qraft_core_bootstrap_entries(ccs, cnt, es, err);
  if (rv != 0) {
    return rv;
  }
  qraft_hard_state hs = {.term = 1, .commit = cnt};
  qraft_storage_write w = {.entries = es, .entries_n = cnt, .hard_state = &hs};
  rv = qraft_storage_write_sync(n->st, &w, err);
  for (size_t i = 0; i < cnt; i++) {
    qraft_slice_release(&es[i].data);
  }
  if (rv != 0) {
    return QRAFT_ERR(err, rv, "bootstrap write");
  }
  /* reopen the core on the bootstrapped log */
  qraft_core_free(n->core);
  n->core = NULL;
  return node_open_core(n, err);
}

int qraft_node_bootstrap_at(qraft_node *n, const qraft_node_addr *members,
                            size_t cnt, uint64_t index, qraft_err *err) {
  int rv = node_bootstrap_check(n, err);
  if (rv != 0) {
    return rv;
  }
  if (cnt == 0 || cnt > QRAFT_CONF_NODES_MAX || index == 0) {
    return QRAFT_ERR(err, QRAFT_ECONFIG,
                     "bootstrap at %" PRIu64 " with %zu members", index, cnt);
  }
  for (size_t i = 0; i < cnt; i++) {
    if (!qraft__node_addr_valid(&members[i])) {
      return QRAFT_ERR(err, QRAFT_ECONFIG,
                       "bootstrap member %zu: too many addresses or relays, "
                       "or not IPv4 or IPv6", i);
    }
  }
  if (n->cfg.sm->durable_index == NULL ||
      n->cfg.sm->durable_index(n->cfg.sm_ud) != index) {
    return QRAFT_ERR(err, QRAFT_ECONFIG,
                     "bootstrap at %" PRIu64
                     ": the state machine must be durable at that index",
                     index);
  }
  qraft_snapshot_meta meta = {.index = index, .term = 1};
  bool self = false;
  for (size_t i = 0; i < cnt; i++) {
    qraft_id id = qraft_node_raft_id(&members[i].id);
    self = self || id == n->id;
    for (uint32_t k = 0; k < meta.conf_state.voters_n; k++) {
      if (meta.conf_state.voters[k] == id) {
        return QRAFT_ERR(err, QRAFT_ECONFIG, "bootstrap: member %zu twice", i);
      }
    }
    meta.conf_state.voters[meta.conf_state.voters_n++] = id;
  }
  if (!self) {
    return QRAFT_ERR(err, QRAFT_ECONFIG,
                     "bootstrap: this node is not among the members");
  }
  /* sorted, as the core keeps configurations (so that they compare the
   * same everywhere) */
  qraft_conf_state *cs = &meta.conf_state;
  for (uint32_t i = 1; i < cs->voters_n; i++) {
    for (uint32_t j = i; j > 0 && cs->voters[j - 1] > cs->voters[j]; j--) {
      qraft_id t = cs->voters[j];
      cs->voters[j] = cs->voters[j - 1];
      cs->voters[j - 1] = t;
    }
  }
  /* a stateless snapshot at `index` (the node's header: the members'
   * addresses): the state machine holds the state */
  qraft_snapshot_writer *w = NULL;
  rv = qraft_storage_snapshot_writer_open(n->st, &meta, &w, err);
  if (rv != 0) {
    return rv;
  }
  uint8_t hdr[8];
  uint32_t magic = htonl(NODE_SNAP_MAGIC_STATELESS), be = htonl((uint32_t)cnt);
  memcpy(hdr, &magic, 4);
  memcpy(hdr + 4, &be, 4);
  rv = qraft_snapshot_writer_write(w, hdr, 8, err);
  for (size_t i = 0; i < cnt && rv == 0; i++) {
    uint8_t buf[2 + NODE_ADDR_ENC_MAX];
    size_t l = qraft__node_addr_encode(&members[i], buf + 2);
    buf[0] = (uint8_t)(l >> 8);
    buf[1] = (uint8_t)l;
    rv = qraft_snapshot_writer_write(w, buf, l + 2, err);
  }
  if (rv != 0) {
    qraft_snapshot_writer_abort(w);
    return rv;
  }
  qraft_hard_state hs = {.term = 1, .commit = index};
  qraft_storage_write sw = {.snapshot = w, .hard_state = &hs};
  rv = qraft_storage_write_sync(n->st, &sw, err);
  if (rv != 0) {
    if (sw.snapshot != NULL) {
      qraft_snapshot_writer_abort(sw.snapshot); /* still ours */
    }
    return QRAFT_ERR(err, rv, "bootstrap write");
  }
  qraft_core_free(n->core);
  n->core = NULL;
  return node_open_core(n, err);
}

/* A configuration entry at `index`, `term` for the single change (type,
 * id, ctx); V2 with no change when leave_joint. */
static int force_entry(bool leave_joint, qraft_conf_change_type type,
                       qraft_id id, const uint8_t *ctx, size_t ctx_n,
                       uint64_t index, uint64_t term, qraft_entry *out) {
  qraft_conf_change cc = {.change_type = type,
                          .node_id = id,
                          .context = {.data = (uint8_t *)ctx, .len = ctx_n}};
  qraft_conf_change_v2 v2 = {.transition = QRAFT_CONF_TRANSITION_AUTO};
  size_t size = leave_joint ? qraft_conf_change_v2_size(&v2)
                            : qraft_conf_change_size(&cc);
  qraft_buf *b = qraft_buf_new(size > 0 ? size : 1);
  if (b == NULL) {
    return -ENOMEM;
  }
  b->len = leave_joint ? qraft_conf_change_v2_encode(&v2, b->data)
                       : qraft_conf_change_encode(&cc, b->data);
  *out = (qraft_entry){.type = leave_joint ? QRAFT_ENTRY_CONF_CHANGE_V2
                                           : QRAFT_ENTRY_CONF_CHANGE,
                       .term = term,
                       .index = index,
                       .data = {.data = b->data, .len = b->len, .owner = b}};
  return 0;
}

static bool conf_list_has(const qraft_id *ids, uint32_t n, qraft_id id) {
  for (uint32_t i = 0; i < n; i++) {
    if (ids[i] == id) {
      return true;
    }
  }
  return false;
}

int qraft_node_force_new_cluster(qraft_node *n, qraft_conf_state *was,
                                 uint64_t *last, qraft_err *err) {
  if (n->started) {
    return QRAFT_ERR(err, QRAFT_ESTATE, "force a new cluster after start");
  }
  qraft_storage_state ss;
  int rv = qraft_storage_state_get(n->st, &ss, err);
  if (rv != 0) {
    return rv;
  }
  if (ss.last_index == 0 && ss.snapshot.index == 0) {
    return QRAFT_ERR(err, QRAFT_ESTATE,
                     "force a new cluster: the store is empty (nothing to "
                     "keep; bootstrap instead)");
  }
  /* The configuration as of the whole log (committed or not): a core
   * that takes every entry as applied computes it. */
  size_t cnt = 0;
  qraft_entry *es = NULL;
  rv = node_read_log(n, &ss, &es, &cnt, err);
  if (rv != 0) {
    return rv;
  }
  qraft_snapshot_meta sm = ss.snapshot;
  if (sm.index == 0) {
    sm.term = ss.prev_term;
  }
  uint64_t last_index = sm.index + cnt;
  uint64_t last_term = cnt > 0 ? es[cnt - 1].term : sm.term;
  qraft_core_config cc;
  qraft_core_config_default(&cc);
  cc.id = n->id;
  cc.election_ticks = n->cfg.election_ticks;
  cc.heartbeat_ticks = n->cfg.heartbeat_ticks;
  qraft_core_restore rs = {.hard_state = ss.hard_state,
                           .snapshot = sm,
                           .entries = es,
                           .entries_n = cnt,
                           .applied = last_index};
  rs.hard_state.commit = last_index;
  qraft_core *tmp = NULL;
  rv = qraft_core_new(&cc, &rs, &tmp, err);
  qraft_storage_entries_release(es, cnt);
  free(es);
  if (rv != 0) {
    return QRAFT_ERR(err, rv, "force a new cluster: reading the configuration");
  }
  qraft_conf_state conf = *qraft_core_conf_state(tmp);
  qraft_core_free(tmp);
  if (was != NULL) {
    *was = conf;
  }

  /* Leave a joint configuration, make this node a voter, remove the
   * others: one single-step change each, in the current term. */
  uint64_t term = ss.hard_state.term > last_term ? ss.hard_state.term
                                                 : last_term;
  /* after leaving a joint configuration: the incoming voters, and the
   * learners with learners_next (outgoing voters that stay as learners) */
  qraft_id others[3 * QRAFT_CONF_NODES_MAX];
  size_t others_n = 0;
  const qraft_id *lists[3] = {conf.voters, conf.learners, conf.learners_next};
  uint32_t ns[3] = {conf.voters_n, conf.learners_n, conf.learners_next_n};
  for (int l = 0; l < 3; l++) {
    for (uint32_t i = 0; i < ns[l]; i++) {
      bool dup = lists[l][i] == n->id;
      for (size_t j = 0; j < others_n && !dup; j++) {
        dup = others[j] == lists[l][i];
      }
      if (!dup) {
        others[others_n++] = lists[l][i];
      }
    }
  }
  qraft_entry add[3 * QRAFT_CONF_NODES_MAX + 2];
  size_t k = 0;
  uint64_t index = last_index;
  if (conf.voters_outgoing_n > 0) {
    rv = force_entry(true, 0, 0, NULL, 0, ++index, term, &add[k]);
    k += rv == 0;
  }
  if (rv == 0 && !conf_list_has(conf.voters, conf.voters_n, n->id)) {
    uint8_t ctx[NODE_ADDR_ENC_MAX];
    qraft_node_addr self;
    qraft_node_addr_of(n, &self);
    for (uint32_t i = 0; i < n->members_n; i++) {
      if (n->members[i].id == n->id) {
        self = n->members[i].addr;
      }
    }
    size_t l = qraft__node_addr_encode(&self, ctx);
    rv = force_entry(false, QRAFT_CONF_ADD_NODE, n->id, ctx, l, ++index,
                     term, &add[k]);
    k += rv == 0;
  }
  for (size_t i = 0; i < others_n && rv == 0; i++) {
    rv = force_entry(false, QRAFT_CONF_REMOVE_NODE, others[i], NULL, 0,
                     ++index, term, &add[k]);
    k += rv == 0;
  }
  if (rv == 0) {
    /* everything this node holds is committed: the entries it kept and the
     * changes above */
    qraft_hard_state hs = ss.hard_state;
    hs.term = term;
    hs.commit = last_index + k;
    qraft_storage_write w = {.entries = k > 0 ? add : NULL,
                             .entries_n = k,
                             .hard_state = &hs};
    rv = qraft_storage_write_sync(n->st, &w, err);
    if (rv != 0) {
      rv = QRAFT_ERR(err, rv, "force a new cluster: writing the change");
    }
  } else {
    rv = QRAFT_ERR(err, rv, "force a new cluster: the change");
  }
  for (size_t i = 0; i < k; i++) {
    qraft_slice_release(&add[i].data);
  }
  if (rv != 0) {
    return rv;
  }
  QRAFT_LOG(n->lg, QRAFT_LOG_ERROR,
            "FORCED A NEW CLUSTER: this member is now the only voter; every "
            "entry it held is kept and committed; add the others again",
            QRAFT_LOG_U64("voters_before", conf.voters_n),
            QRAFT_LOG_U64("learners_before", conf.learners_n),
            QRAFT_LOG_U64("kept_through", last_index),
            QRAFT_LOG_U64("committed_before", ss.hard_state.commit),
            QRAFT_LOG_U64("changes", k), QRAFT_LOG_U64("term", term));
  if (last != NULL) {
    *last = last_index + k;
  }
  /* reopen the core on the rewritten log */
  qraft_core_free(n->core);
  n->core = NULL;
  return node_open_core(n, err);
}

static bool node_loop_done(void *ud) { return ((qraft_node *)ud)->stopped; }

static void *node_thread_main(void *arg) {
  qraft_node *n = arg;
  pthread_setname_np(pthread_self(), "qraft-loop"); /* top -H, perf */
  (void)qraft_env_run(n->env, UINT64_MAX, node_loop_done, n);
  return NULL;
}

static int node_start_on_loop(qraft_node *n) {
  qraft_err err;
  qraft_err_init(&err, 0);
  int rv = qraft_env_timer_new(n->env, qraft__node_tick_cb, n, &n->tick_timer);
  if (rv == 0) {
    rv = qraft_env_timer_new(n->env, qraft__node_poll_timer_cb, n,
                             &n->poll_timer);
  }
  if (rv == 0) {
    rv = qraft_env_timer_new(n->env, qraft__node_snapshot_step_cb, n,
                             &n->snap_timer);
  }
  if (rv == 0) {
    rv = qraft_env_timer_new(n->env, qraft__node_restore_step_cb, n,
                             &n->restore_timer);
  }
  if (rv == 0) {
    rv = qraft_env_wake_new(n->env, qraft__node_wake_cb, n, &n->wake);
  }
  if (rv == 0 && n->st_fd >= 0) {
    /* The loop watches the store's eventfd itself when the env can; else
     * the bridge thread does (qraft_node_start). */
    rv = qraft_env_fd_watch(n->env, n->st_fd, qraft__node_store_cb, n,
                            &n->st_watch);
    if (rv == -ENOTSUP) {
      n->st_watch = NULL;
      rv = 0;
    }
  }
  if (rv != 0) {
    return rv;
  }
  qraft_endpoint_config ec;
  memset(&ec, 0, sizeof ec);
  ec.env = n->env;
  ec.key = &n->key;
  ec.bind_n = n->cfg.bind_n;
  memcpy(ec.bind, n->cfg.bind, sizeof ec.bind);
  ec.relays_n = n->cfg.relays_n;
  memcpy(ec.relays, n->cfg.relays, sizeof ec.relays);
  ec.relay_only = n->cfg.relay_only;
  ec.authorize_cb = qraft__node_authorize_cb;
  ec.authorize_ud = n;
  ec.logger = n->lg;
  rv = qraft_endpoint_new(&ec, &n->ep, &err);
  if (rv != 0) {
    char line[512];
    qraft_err_format(&err, line, sizeof line);
    QRAFT_LOG(n->lg, QRAFT_LOG_ERROR, "endpoint", QRAFT_LOG_STR("error", line));
    return rv;
  }
  qraft_raft_net_config nc;
  memset(&nc, 0, sizeof nc);
  nc.ep = n->ep;
  nc.cluster_id = n->cfg.cluster_id;
  nc.self_id = n->id;
  nc.group_id = 1;
  nc.recv_cb = qraft__node_recv_cb;
  nc.peer_cb = qraft__node_peer_cb;
  nc.snapshot_sent_cb = qraft__node_snapshot_sent_cb;
  nc.snapshot_chunk_bytes = n->cfg.snapshot_chunk_bytes;
  nc.snapshot_inflight_bytes_max = n->cfg.snapshot_inflight_bytes;
  nc.snapshot_begin_cb = qraft__node_snap_begin_cb;
  nc.snapshot_recv_cb = qraft__node_snap_recv_cb;
  nc.unknown_sender_cb = qraft__node_unknown_sender_cb;
  nc.ud = n;
  rv = qraft_raft_net_new(&nc, &n->net, &err);
  if (rv != 0) {
    char line[512];
    qraft_err_format(&err, line, sizeof line);
    QRAFT_LOG(n->lg, QRAFT_LOG_ERROR, "raft transport",
              QRAFT_LOG_STR("error", line));
    return rv;
  }
  /* Discovery: the membership answers first (the addresses the log
   * carries), then the discovery file. */
  static const qraft_discovery_ops member_ops = {
      .name = "membership", .resolve = qraft__node_member_resolve};
  rv = qraft_endpoint_add_discovery(n->ep, &member_ops, n);
  if (rv == 0 && n->cfg.discovery_file != NULL) {
    qraft_err_init(&err, 0);
    rv = qraft_discovery_file_new(n->cfg.discovery_file, n->env, n->lg,
                                  &n->disc_file, &err);
    if (rv != 0) {
      char line[512];
      qraft_err_format(&err, line, sizeof line);
      QRAFT_LOG(n->lg, QRAFT_LOG_ERROR, "discovery file",
                QRAFT_LOG_STR("error", line));
      return rv;
    }
    rv = qraft_endpoint_add_discovery(n->ep, qraft_discovery_file_ops(),
                                      n->disc_file);
  }
  if (rv != 0) {
    return rv;
  }
  qraft__node_drain(n); /* applies the log's configuration entries */
  qraft__node_sync_peers(n);
  n->ticked_ns = qraft_env_now_ns(n->env);
  n->next_tick_ns = n->ticked_ns + n->tick_ns;
  qraft_env_timer_arm(n->tick_timer, n->next_tick_ns);
  return 0;
}

int qraft_node_start(qraft_node *n) {
  if (n->started) {
    return QRAFT_ESTATE;
  }
  n->started = true;
  int rv = node_start_on_loop(n);
  if (rv != 0) {
    return rv;
  }
  if (n->st_fd >= 0 && n->st_watch == NULL) {
    n->bridge_stop_fd = eventfd(0, EFD_CLOEXEC);
    n->bridge_go_fd = eventfd(0, EFD_CLOEXEC);
    if (n->bridge_stop_fd < 0 || n->bridge_go_fd < 0) {
      return -errno;
    }
    if (pthread_create(&n->bridge, NULL, qraft__node_bridge_main, n) != 0) {
      return -EAGAIN;
    }
    n->bridge_started = true;
  }
  if (n->own_env) {
    if (pthread_create(&n->thread, NULL, node_thread_main, n) != 0) {
      return -EAGAIN;
    }
    n->thread_started = true;
  }
  return 0;
}

void qraft__node_fail_all(qraft_node *n, int code) {
  if (n->fatal && n->fatal_code == 0) {
    n->fatal_code = code; /* the first failure: what the status says */
    pthread_mutex_lock(&n->mu);
    n->status.stopped_on = code;
    n->status.running = false;
    pthread_mutex_unlock(&n->mu);
  }
  while (n->inflight != NULL) {
    node_req *r = n->inflight;
    n->inflight = r->next;
    qraft__node_req_complete(n, r, code, (qraft_slice){0});
  }
  pthread_mutex_lock(&n->mu);
  node_req *list = n->q_head;
  n->q_head = n->q_tail = NULL;
  n->accepting = false;
  pthread_mutex_unlock(&n->mu);
  while (list != NULL) {
    node_req *r = list;
    list = r->next;
    qraft__node_req_complete(n, r, code, (qraft_slice){0});
  }
}

/* Runs on the loop: finish what can finish, fail the rest, close. */
void qraft__node_shutdown_on_loop(qraft_node *n) {
  qraft__node_take_requests(n);
  /* let pending writes land (their callbacks send and apply) */
  for (int i = 0; i < 1000 && n->writes_inflight > 0 && !n->fatal; i++) {
    if (n->st_fd >= 0) {
      (void)qraft_storage_wait(n->st, 10);
    }
    qraft_storage_poll(n->st);
  }
  qraft__node_fail_all(n, QRAFT_ESHUTDOWN);
  qraft__node_held_free(n); /* never landed: nothing of them was said */
  qraft__node_snapshot_abandon(n);
  qraft_env_timer_free(n->snap_timer);
  n->snap_timer = NULL;
  qraft__node_restore_abandon(n);
  qraft_env_timer_free(n->restore_timer);
  n->restore_timer = NULL;
  qraft_env_timer_free(n->tick_timer);
  n->tick_timer = NULL;
  qraft_env_timer_free(n->poll_timer);
  n->poll_timer = NULL;
  qraft_env_fd_unwatch(n->st_watch);
  n->st_watch = NULL;
  if (n->ep != NULL) {
    qraft_endpoint_shutdown(n->ep);
  }
  n->stopped = true;
  qraft__node_publish_status(n);
}

void qraft_node_stop(qraft_node *n) {
  pthread_mutex_lock(&n->mu);
  bool already = n->stop_requested;
  n->stop_requested = true;
  n->accepting = false;
  pthread_mutex_unlock(&n->mu);
  if (already || !n->started) {
    return;
  }
  if (n->thread_started) {
    /* The loop thread shuts the node down in its wake callback and its run
     * ends (node_loop_done); then nothing else touches the node. */
    qraft_env_wake_send(n->wake);
    pthread_join(n->thread, NULL);
    n->thread_started = false;
  } else {
    /* The caller's env: we are on its loop thread. */
    qraft__node_shutdown_on_loop(n);
  }
  if (n->bridge_started) {
    uint64_t one = 1;
    ssize_t wr = write(n->bridge_stop_fd, &one, sizeof one);
    (void)wr;
    pthread_join(n->bridge, NULL);
    n->bridge_started = false;
  }
}

void qraft_node_free(qraft_node *n) {
  if (n == NULL) {
    return;
  }
  qraft_node_stop(n);
  qraft_snapshot_writer_abort(n->recv_writer);
  qraft_snapshot_writer_abort(n->snap_pending);
  qraft__node_snapshot_abandon(n); /* if it never ran its loop's shutdown */
  qraft__node_held_free(n);
  qraft__node_restore_abandon(n);
  qraft__node_snap_sinks_detach(n);
  /* Writes still in flight (after a fatal error, or a shutdown that gave
   * up waiting) complete inside the store's close: their callbacks only
   * free them now, before the core and the transport go. */
  n->freeing = true;
  if (!(n->cfg.storage != NULL && n->cfg.storage_borrowed)) {
    qraft_storage_close(n->st);
  }
  qraft_raft_net_free(n->net);
  qraft_endpoint_free(n->ep);
  qraft_discovery_file_free(n->disc_file);
  qraft_env_wake_free(n->wake);
  qraft_core_free(n->core);
  if (n->bridge_stop_fd >= 0) {
    close(n->bridge_stop_fd);
  }
  if (n->bridge_go_fd >= 0) {
    close(n->bridge_go_fd);
  }
  if (n->own_env) {
    qraft_env_free(n->env);
  }
  pthread_mutex_destroy(&n->mu);
  free(n->stage_ring);
  free(n->space_dir);
  free(n);
}
