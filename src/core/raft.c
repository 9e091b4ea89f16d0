/*
 * raft.c: the Raft algorithm. Pure: no I/O, no clock, no threads, no global
 * state. Allocation happens at creation and when the in-memory log or an
 * output array has to grow past its high-water mark; the steady state
 * reuses memory.
 *
 * The structure follows etcd's raft.go (Step, stepLeader, stepCandidate,
 * stepFollower); each rule names the section of the Raft paper ("paper") or
 * Ongaro's dissertation ("thesis") it implements.
 */
#include "core_internal.h"

#include <qraft/assert.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* The context of vote requests sent because of a leadership transfer: they
 * may disrupt a leader lease (thesis 3.10). */
static const uint8_t campaign_transfer_ctx[] = "CampaignTransfer";
#define CAMPAIGN_TRANSFER_LEN (sizeof campaign_transfer_ctx - 1)

typedef enum campaign_type {
  CAMPAIGN_PRE_ELECTION,
  CAMPAIGN_ELECTION,
  CAMPAIGN_TRANSFER,
} campaign_type;

static void core_bcast_append(qraft_core *c);
static bool core_maybe_send_append(qraft_core *c, qraft_id to,
                                   bool send_if_empty);
static void core_become_follower(qraft_core *c, uint64_t term, qraft_id lead);
static void core_campaign(qraft_core *c, campaign_type t);
static void core_removed_leader_handover(qraft_core *c);
static void core_release_reads_waiting_commit(qraft_core *c);
static bool core_lease_valid(const qraft_core *c);

const char *qraft_role_name(qraft_role role) {
  switch (role) {
  case QRAFT_ROLE_FOLLOWER:
    return "follower";
  case QRAFT_ROLE_CANDIDATE:
    return "candidate";
  case QRAFT_ROLE_LEADER:
    return "leader";
  case QRAFT_ROLE_PRE_CANDIDATE:
    return "pre-candidate";
  }
  return "?";
}

const char *qraft_stepdown_reason_name(qraft_stepdown_reason r) {
  switch (r) {
  case QRAFT_STEPDOWN_CHECK_QUORUM:
    return "check_quorum";
  case QRAFT_STEPDOWN_HIGHER_TERM:
    return "higher_term";
  case QRAFT_STEPDOWN_TRANSFER:
    return "transfer";
  case QRAFT_STEPDOWN_REMOVED:
    return "removed";
  case QRAFT_STEPDOWN_REASONS:
    break;
  }
  return "?";
}

/* --- configuration ---------------------------------------------------------- */

void qraft_core_config_default(qraft_core_config *cfg) {
  memset(cfg, 0, sizeof *cfg);
  cfg->version = QRAFT_CORE_CONFIG_VERSION;
  cfg->election_ticks = 10;
  cfg->heartbeat_ticks = 1;
  cfg->pre_vote = true;
  cfg->check_quorum = true;
  cfg->read_only = QRAFT_READ_ONLY_SAFE;
}

static void config_fill_defaults(qraft_core_config *cfg) {
  if (cfg->inflight_msgs_max == 0) {
    cfg->inflight_msgs_max = 256;
  }
  if (cfg->append_bytes_max == 0) {
    cfg->append_bytes_max = 1u << 20;
  }
  if (cfg->append_entries_max == 0) {
    cfg->append_entries_max = 1024;
  }
  if (cfg->uncommitted_bytes_max == 0) {
    cfg->uncommitted_bytes_max = 64u << 20;
  }
  if (cfg->apply_bytes_max == 0) {
    cfg->apply_bytes_max = 16u << 20;
  }
  if (cfg->messages_max == 0) {
    cfg->messages_max = 4096;
  }
  if (cfg->read_states_max == 0) {
    cfg->read_states_max = 4096;
  }
  if (cfg->pending_reads_max == 0) {
    cfg->pending_reads_max = 4096;
  }
}

int qraft_core_config_validate(const qraft_core_config *cfg, qraft_err *err) {
  if (cfg->version != QRAFT_CORE_CONFIG_VERSION) {
    return QRAFT_ERR(err, QRAFT_ECONFIG,
                     "config version %u, this library speaks %u", cfg->version,
                     QRAFT_CORE_CONFIG_VERSION);
  }
  if (cfg->id == QRAFT_ID_NONE) {
    return QRAFT_ERR(err, QRAFT_ECONFIG, "id must not be 0");
  }
  if (cfg->heartbeat_ticks == 0) {
    return QRAFT_ERR(err, QRAFT_ECONFIG, "heartbeat_ticks must be at least 1");
  }
  if (cfg->election_ticks <= cfg->heartbeat_ticks) {
    return QRAFT_ERR(err, QRAFT_ECONFIG,
                     "election_ticks (%u) must be greater than "
                     "heartbeat_ticks (%u)",
                     cfg->election_ticks, cfg->heartbeat_ticks);
  }
  if (cfg->election_ticks > 1000000) {
    return QRAFT_ERR(err, QRAFT_ECONFIG, "election_ticks %u is absurd",
                     cfg->election_ticks);
  }
  if (cfg->read_only == QRAFT_READ_ONLY_LEASE_BASED && !cfg->check_quorum) {
    return QRAFT_ERR(err, QRAFT_ECONFIG,
                     "lease-based reads need check_quorum (thesis 6.4.1)");
  }
  if (cfg->read_only == QRAFT_READ_ONLY_LEASE_BASED &&
      cfg->election_ticks < 3) {
    return QRAFT_ERR(err, QRAFT_ECONFIG,
                     "lease-based reads need election_ticks >= 3 (%u): the "
                     "lease must end a tick before the voters' promise",
                     cfg->election_ticks);
  }
  if (cfg->read_only != QRAFT_READ_ONLY_SAFE &&
      cfg->read_only != QRAFT_READ_ONLY_LEASE_BASED) {
    return QRAFT_ERR(err, QRAFT_ECONFIG, "unknown read_only option %d",
                     (int)cfg->read_only);
  }
  if (cfg->inflight_msgs_max > 65536) {
    return QRAFT_ERR(err, QRAFT_ECONFIG, "inflight_msgs_max %u over 65536",
                     cfg->inflight_msgs_max);
  }
  return 0;
}

/* --- the in-memory log ------------------------------------------------------- */

static inline uint64_t log_last_index(const qraft_core *c) {
  return c->snap_index + c->ents_n;
}

static inline qraft_entry *log_at(const qraft_core *c, uint64_t index) {
  QRAFT_ASSERTF(index > c->snap_index && index <= log_last_index(c),
                "index %llu outside the log (%llu, %llu]",
                (unsigned long long)index, (unsigned long long)c->snap_index,
                (unsigned long long)log_last_index(c));
  return &c->ents[index - c->snap_index - 1];
}

/* Term at index: 0 with *term set, or an error code if not in memory. */
static int log_term(const qraft_core *c, uint64_t index, uint64_t *term) {
  if (index == c->snap_index) {
    *term = c->snap_term;
    return 0;
  }
  if (index < c->snap_index) {
    return QRAFT_ECOMPACTED;
  }
  if (index > log_last_index(c)) {
    return QRAFT_EUNAVAILABLE;
  }
  *term = log_at(c, index)->term;
  return 0;
}

static uint64_t log_term_or0(const qraft_core *c, uint64_t index) {
  uint64_t t = 0;
  if (log_term(c, index, &t) != 0) {
    return 0;
  }
  return t;
}

static uint64_t log_last_term(const qraft_core *c) {
  return log_term_or0(c, log_last_index(c));
}

static bool log_match_term(const qraft_core *c, uint64_t index,
                           uint64_t term) {
  uint64_t t;
  if (log_term(c, index, &t) != 0) {
    return false;
  }
  return t == term;
}

/* Is a candidate's log (last index, last term) at least as up to date as
 * ours? (paper 5.4.1) */
static bool log_is_up_to_date(const qraft_core *c, uint64_t last_index,
                              uint64_t last_term) {
#ifdef QRAFT_CANARY_VOTE_WITHOUT_LOG_CHECK
  (void)c;
  (void)last_index;
  (void)last_term;
  return true;
#else
  uint64_t our_term = log_last_term(c);
  return last_term > our_term ||
         (last_term == our_term && last_index >= log_last_index(c));
#endif
}

static int log_reserve(qraft_core *c, size_t n) {
  if (c->ents_n + n <= c->ents_cap) {
    return 0;
  }
  size_t cap = c->ents_cap ? c->ents_cap : 64;
  while (cap < c->ents_n + n) {
    cap *= 2;
  }
  qraft_entry *e = realloc(c->ents, cap * sizeof *e);
  if (e == NULL) {
    return -ENOMEM;
  }
  c->ents = e;
  c->ents_cap = cap;
  return 0;
}

static void entry_release(qraft_entry *e) {
  qraft_slice_release(&e->data);
  qraft_slice_release(&e->context);
}

/* What an entry costs the in-memory log (qraft_core_status.log_bytes). */
static uint64_t entry_bytes(const qraft_entry *e) {
  return e->data.len + e->context.len + sizeof(qraft_entry);
}

static void entry_copy_ref(qraft_entry *dst, const qraft_entry *src) {
  *dst = *src;
  dst->data = qraft_slice_ref(src->data);
  dst->context = qraft_slice_ref(src->context);
}

/* Drops entries with index >= from. */
static void log_truncate(qraft_core *c, uint64_t from) {
  QRAFT_ASSERTF(from > c->commit, "truncating committed entry %llu (commit %llu)",
                (unsigned long long)from, (unsigned long long)c->commit);
  QRAFT_ASSERT(from > c->snap_index);
  uint64_t last = log_last_index(c);
  for (uint64_t i = from; i <= last; i++) {
    c->ents_bytes -= entry_bytes(log_at(c, i));
    entry_release(log_at(c, i));
  }
  c->ents_n = (size_t)(from - c->snap_index - 1);
  if (from < c->unstable_from) {
    /* Only entries already handed out to storage need a storage
     * truncation; the others are simply replaced before they are. */
    if (c->truncate_from == 0 || from < c->truncate_from) {
      c->truncate_from = from;
    }
    c->unstable_from = from;
  }
  if (c->persisted >= from) {
    c->persisted = from - 1;
  }
}

/* Appends entries that follow the last index exactly. */
static int log_append(qraft_core *c, const qraft_entry *es, size_t n) {
  if (n == 0) {
    return 0;
  }
  QRAFT_ASSERTF(es[0].index == log_last_index(c) + 1,
                "append at %llu after last %llu",
                (unsigned long long)es[0].index,
                (unsigned long long)log_last_index(c));
  int rv = log_reserve(c, n);
  if (rv != 0) {
    return rv;
  }
  for (size_t i = 0; i < n; i++) {
    QRAFT_ASSERT(i == 0 || es[i].index == es[i - 1].index + 1);
    QRAFT_ASSERT(es[i].term >= log_last_term(c));
    c->ents_bytes += entry_bytes(&es[i]);
    entry_copy_ref(&c->ents[c->ents_n++], &es[i]);
  }
  return 0;
}

/* The first entry of es that conflicts with the log (different term or past
 * the end): its index, or 0 if every entry is already there. */
static uint64_t log_find_conflict(const qraft_core *c, const qraft_entry *es,
                                  size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (!log_match_term(c, es[i].index, es[i].term)) {
      return es[i].index;
    }
  }
  return 0;
}

/* The largest index <= index whose term is <= term (etcd's
 * findConflictByTerm), used to skip a whole term per rejection. */
static uint64_t log_find_conflict_by_term(const qraft_core *c, uint64_t index,
                                          uint64_t term, uint64_t *found_term) {
  for (;;) {
    uint64_t t;
    if (log_term(c, index, &t) != 0) {
      *found_term = 0;
      return index;
    }
    if (t <= term) {
      *found_term = t;
      return index;
    }
    if (index == 0) {
      *found_term = 0;
      return 0;
    }
    index--;
  }
}

static void log_commit_to(qraft_core *c, uint64_t to) {
  if (to > log_last_index(c)) {
    /* A leader never sends a commit index past what it knows we have; a
     * follower whose log lost entries it had acknowledged cannot be trusted
     * with a commit past its log. */
    to = log_last_index(c);
  }
  if (to > c->commit) {
    c->commit = to;
  }
}

/* Commit only by counting replicas of entries of the current term
 * (paper 5.4.2, Figure 8). */
static bool log_maybe_commit(qraft_core *c, uint64_t max_index, uint64_t term) {
  if (max_index == UINT64_MAX || max_index <= c->commit) {
    return false;
  }
#ifdef QRAFT_CANARY_COMMIT_PREVIOUS_TERM
  (void)term;
  log_commit_to(c, max_index);
  return true;
#else
  if (log_term_or0(c, max_index) != term) {
    return false;
  }
  log_commit_to(c, max_index);
  return true;
#endif
}

/* --- outgoing messages ---------------------------------------------------- */

static msg_slot *core_new_msg(qraft_core *c, qraft_msg_type type, qraft_id to) {
  if (c->slots_n == c->cfg.messages_max) {
    c->messages_dropped++;
    return NULL;
  }
  msg_slot *s = &c->slots[c->slots_n++];
  memset(s, 0, sizeof *s);
  s->m.type = type;
  s->m.to = to;
  s->m.from = c->id;
  s->m.term = c->term;
  /* Rule 3 of the durability contract: what a crash must not undo. */
  switch (type) {
  case QRAFT_MSG_REQUEST_VOTE:
  case QRAFT_MSG_REQUEST_VOTE_RESPONSE:
  case QRAFT_MSG_HEARTBEAT_RESPONSE:
    s->after_persist = true;
    break;
  case QRAFT_MSG_APPEND_RESPONSE:
#ifdef QRAFT_CANARY_ACK_BEFORE_DURABLE
    s->after_persist = false;
#else
    s->after_persist = true;
#endif
    break;
  default:
    s->after_persist = false;
    break;
  }
  return s;
}

static void put_u64le(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++) {
    p[i] = (uint8_t)(v >> (8 * i));
  }
}

static uint64_t get_u64le(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) {
    v |= (uint64_t)p[i] << (8 * i);
  }
  return v;
}

/* A read request id travels as the 8-byte data of entries[0] of
 * MsgReadIndex and MsgReadIndexResp (as in etcd). */
static void msg_set_read_ctx(msg_slot *s, uint64_t id) {
  put_u64le(s->ctx, id);
  s->ctx_len = 8;
  s->ctx_entry = true;
}

static bool msg_get_read_ctx(const qraft_slice *sl, uint64_t *id) {
  if (sl->len != 8) {
    return false;
  }
  *id = get_u64le(sl->data);
  return true;
}

/* Heartbeat context: the leader's send tick (8 bytes), then, when a read is
 * waiting for confirmation, its id (8 more bytes). The response echoes it. */
static void msg_set_hb_ctx(msg_slot *s, uint64_t tick, bool has_read,
                           uint64_t read_id) {
  put_u64le(s->ctx, tick);
  s->ctx_len = 8;
  if (has_read) {
    put_u64le(s->ctx + 8, read_id);
    s->ctx_len = 16;
  }
  s->ctx_context = true;
}

static bool msg_get_hb_ctx(const qraft_slice *sl, uint64_t *tick,
                           bool *has_read, uint64_t *read_id) {
  if (sl->len != 8 && sl->len != 16) {
    return false;
  }
  *tick = get_u64le(sl->data);
  *has_read = sl->len == 16;
  *read_id = *has_read ? get_u64le(sl->data + 8) : 0;
  return true;
}

/* --- timers and roles ------------------------------------------------------ */

static void core_reset_randomized_timeout(qraft_core *c) {
  c->randomized_election_timeout =
      c->cfg.election_ticks +
      (uint32_t)qraft_prng_below(&c->prng, c->cfg.election_ticks);
}

static void core_abort_transfer(qraft_core *c) { c->lead_transferee = 0; }

static void core_reads_clear(qraft_core *c) {
  c->reads_start = 0;
  c->reads_n = 0;
}

static void core_reset(qraft_core *c, uint64_t term) {
  if (c->term != term) {
    c->term = term;
    c->vote = QRAFT_ID_NONE;
  }
  c->lead = QRAFT_ID_NONE;
  c->election_elapsed = 0;
  c->heartbeat_elapsed = 0;
  core_reset_randomized_timeout(c);
  core_abort_transfer(c);
  c->lease_revoked = false;
  c->leader_pending = false;
  c->removed_leader = false;
  c->append_pending = false;
  qraft__tracker_reset_votes(&c->trk);
  uint64_t last = log_last_index(c);
  for (uint32_t i = 0; i < c->trk.progress_n; i++) {
    progress *pr = &c->trk.prs[i];
    pr->match = 0;
    pr->next = last + 1;
    pr->state = PROGRESS_PROBE;
    pr->probe_sent = false;
    pr->pending_snapshot = 0;
    pr->recent_active = false;
    pr->infl.start = 0;
    pr->infl.count = 0;
    pr->lease_tick = 0;
    if (pr->id == c->id) {
      /* The leader counts itself only for what is durable (rule 4). */
      pr->match = c->persisted;
    }
  }
  c->pending_conf_index = 0;
  c->uncommitted_bytes = 0;
  core_reads_clear(c);
}

static bool core_promotable(const qraft_core *c) {
  const progress *pr = qraft__tracker_get((tracker *)&c->trk, c->id);
  return pr != NULL && !pr->is_learner && !c->snapshot_pending &&
         qraft__tracker_is_voter(&c->trk, c->id);
}

/* A node removed from the configuration (it has no progress record of its
 * own) may still hold the only copy of the newest entries: the remaining
 * voters then refuse each other (their logs are older) and, without it, can
 * never elect anyone. So a removed node that holds a log may campaign, by
 * pre-vote only, which the voters grant only if its log is at least as up
 * to date as theirs and they have no leader: it never disrupts a healthy
 * cluster. If it wins it leads only to hand over (core_removed_leader_
 * handover). A node in no configuration at all (being added) never does. */
static bool core_removed_may_campaign(const qraft_core *c) {
  return qraft__tracker_get((tracker *)&c->trk, c->id) == NULL &&
         c->trk.conf.voters_n > 0 && log_last_index(c) > 0 &&
         !c->snapshot_pending;
}

static bool core_may_campaign(const qraft_core *c) {
  return core_promotable(c) || core_removed_may_campaign(c);
}

static void core_become_follower(qraft_core *c, uint64_t term, qraft_id lead) {
  if (c->role == QRAFT_ROLE_LEADER) {
    qraft_stepdown_reason why = QRAFT_STEPDOWN_HIGHER_TERM;
    if (c->check_quorum_failed) {
      why = QRAFT_STEPDOWN_CHECK_QUORUM;
    } else if (c->removed_leader) {
      why = QRAFT_STEPDOWN_REMOVED;
    } else if (c->lease_revoked) {
      why = QRAFT_STEPDOWN_TRANSFER; /* it sent MsgTimeoutNow this term */
    }
    c->stepdowns[why]++;
    c->check_quorum_failed = false;
  }
  core_reset(c, term);
  c->lead = lead;
  c->role = QRAFT_ROLE_FOLLOWER;
}

static void core_become_candidate(qraft_core *c) {
  QRAFT_ASSERTF(c->role != QRAFT_ROLE_LEADER, "leader to candidate");
  core_reset(c, c->term + 1);
  c->vote = c->id;
  c->role = QRAFT_ROLE_CANDIDATE;
}

static void core_become_pre_candidate(qraft_core *c) {
  QRAFT_ASSERTF(c->role != QRAFT_ROLE_LEADER, "leader to pre-candidate");
  /* Pre-vote changes neither term nor vote (thesis 9.6). */
  qraft__tracker_reset_votes(&c->trk);
  c->lead = QRAFT_ID_NONE;
  c->role = QRAFT_ROLE_PRE_CANDIDATE;
}

static size_t entry_payload_size(const qraft_entry *e) {
  return e->data.len + e->context.len;
}

/* Appends entries on the leader, assigning term and index. */
static int core_append_entries(qraft_core *c, qraft_entry *es, size_t n) {
  size_t bytes = 0;
  for (size_t i = 0; i < n; i++) {
    bytes += entry_payload_size(&es[i]);
  }
  /* The uncommitted-bytes limit keeps a leader that cannot commit from
   * growing without bound; a single batch is always allowed in. */
  if (c->uncommitted_bytes > 0 && bytes > 0 &&
      c->uncommitted_bytes + bytes > c->cfg.uncommitted_bytes_max) {
    return QRAFT_EPROPOSAL_DROPPED;
  }
  uint64_t li = log_last_index(c);
  for (size_t i = 0; i < n; i++) {
    es[i].term = c->term;
    es[i].index = li + 1 + i;
  }
  int rv = log_append(c, es, n);
  if (rv != 0) {
    return rv;
  }
  c->uncommitted_bytes += bytes;
  return 0;
}

static void core_become_leader(qraft_core *c) {
  QRAFT_ASSERTF(c->role != QRAFT_ROLE_FOLLOWER, "follower to leader");
  core_reset(c, c->term);
  c->lead = c->id;
  c->role = QRAFT_ROLE_LEADER;
#ifdef QRAFT_CANARY_LEASE_OLD_CONFIG
  memcpy(c->lease_voters, c->trk.conf.voters, sizeof c->lease_voters);
  c->lease_voters_n = c->trk.conf.voters_n;
#endif
  progress *self = qraft__tracker_get(&c->trk, c->id);
  if (self != NULL) {
    qraft__progress_become_replicate(self);
    self->match = c->persisted;
    self->next = log_last_index(c) + 1;
    self->recent_active = true;
  }
  /* Conservatively, any configuration entry in the log may be pending. */
  c->pending_conf_index = log_last_index(c);
  /* An empty entry of the new term lets the leader commit, and so learn the
   * commit index, of everything before it (paper 8, thesis 6.4). */
  qraft_entry empty = {.type = QRAFT_ENTRY_NORMAL};
  int rv = core_append_entries(c, &empty, 1);
  QRAFT_ASSERTF(rv == 0, "empty entry refused: %d", rv);
  if (!qraft__tracker_is_voter(&c->trk, c->id)) {
    /* elected as a removed node (core_removed_may_campaign): hand over */
    c->removed_leader = true;
    core_removed_leader_handover(c);
  }
}

/* --- sending ----------------------------------------------------------- */

static void core_send_snapshot(qraft_core *c, progress *pr) {
  if (!pr->recent_active) {
    return; /* do not push a snapshot at a peer that is not responding */
  }
  msg_slot *s = core_new_msg(c, QRAFT_MSG_SNAPSHOT, pr->id);
  if (s == NULL) {
    return;
  }
  s->has_snapshot = true;
  qraft__progress_become_snapshot(pr, c->snap_index);
}

static bool core_maybe_send_append(qraft_core *c, qraft_id to,
                                   bool send_if_empty) {
  progress *pr = qraft__tracker_get(&c->trk, to);
  if (pr == NULL || qraft__progress_is_paused(pr)) {
    return false;
  }
  uint64_t prev_term;
  if (pr->next <= c->snap_index ||
      log_term(c, pr->next - 1, &prev_term) != 0) {
    core_send_snapshot(c, pr);
    return false;
  }
  uint64_t last = log_last_index(c);
  uint32_t n = 0;
  size_t bytes = 0;
  for (uint64_t i = pr->next; i <= last && n < c->cfg.append_entries_max;
       i++) {
    size_t b = entry_payload_size(log_at(c, i));
    if (n > 0 && bytes + b > c->cfg.append_bytes_max) {
      break;
    }
    bytes += b;
    n++;
  }
  if (n == 0 && !send_if_empty) {
    return false;
  }
  msg_slot *s = core_new_msg(c, QRAFT_MSG_APPEND, to);
  if (s == NULL) {
    return false;
  }
  s->m.index = pr->next - 1;
  s->m.log_term = prev_term;
  s->m.commit = c->commit;
  if (n > 0) {
    s->ents_first = pr->next;
    s->ents_n = n;
    s->ents_last_term = log_at(c, pr->next + n - 1)->term;
    qraft__progress_sent_entries(pr, pr->next + n - 1, n);
  }
  return true;
}

static void core_send_append(qraft_core *c, qraft_id to) {
  core_maybe_send_append(c, to, true);
}

static void core_bcast_append(qraft_core *c) {
  for (uint32_t i = 0; i < c->trk.progress_n; i++) {
    qraft_id id = c->trk.prs[i].id;
    if (id != c->id) {
      core_send_append(c, id);
    }
  }
}

static void core_send_heartbeat(qraft_core *c, progress *pr, bool has_ctx,
                                uint64_t ctx) {
  msg_slot *s = core_new_msg(c, QRAFT_MSG_HEARTBEAT, pr->id);
  if (s == NULL) {
    return;
  }
  /* Never tell a follower a commit index past what it has matched: it may
   * not have those entries yet. */
  s->m.commit = pr->match < c->commit ? pr->match : c->commit;
  msg_set_hb_ctx(s, c->ticks, has_ctx, ctx);
}

static void core_bcast_heartbeat(qraft_core *c) {
  bool has_ctx = false;
  uint64_t ctx = 0;
  for (size_t k = c->reads_n; k-- > 0;) {
    read_req *r = &c->reads[(c->reads_start + k) % c->cfg.pending_reads_max];
    if (!r->waiting_commit) {
      has_ctx = true;
      ctx = r->id;
      break;
    }
  }
  for (uint32_t i = 0; i < c->trk.progress_n; i++) {
    progress *pr = &c->trk.prs[i];
    if (pr->id != c->id) {
      core_send_heartbeat(c, pr, has_ctx, ctx);
    }
  }
}

/* MsgTimeoutNow makes its receiver campaign with a context that voters obey
 * even inside their promise to the leader (thesis 3.10), so from the moment
 * it leaves, the lease proves nothing: the transferee may win, take writes
 * and have them committed while this leader has not yet heard of its term.
 * The message may also sit in the network past the end of the transfer, so
 * the lease stays revoked until this leader's term ends; reads go through
 * ReadIndex meanwhile. (Found by qraft-sim seeds 5005167, 5022215, 5024339
 * and 5044255; the last two through the removed leader's handover.) */
static void core_send_timeout_now(qraft_core *c, qraft_id to) {
#ifndef QRAFT_CANARY_LEASE_AFTER_TRANSFER
  c->lease_revoked = true;
#endif
  core_new_msg(c, QRAFT_MSG_TIMEOUT_NOW, to);
}

/* A leader no longer in the configuration transfers leadership to the most
 * up-to-date voter; it leads (without counting itself) until that voter
 * takes over, retrying every election timeout. With no voter to hand to,
 * it steps down. */
static void core_removed_leader_handover(qraft_core *c) {
  progress *best = NULL;
  for (uint32_t i = 0; i < c->trk.progress_n; i++) {
    progress *pr = &c->trk.prs[i];
    if (pr->id == c->id || !qraft__tracker_is_voter(&c->trk, pr->id)) {
      continue;
    }
    if (best == NULL || pr->match > best->match) {
      best = pr;
    }
  }
  if (best == NULL) {
    core_become_follower(c, c->term, QRAFT_ID_NONE);
    return;
  }
  c->lead_transferee = best->id;
  c->transfer_elapsed = 0;
  if (best->match == log_last_index(c)) {
    core_send_timeout_now(c, best->id);
  } else {
    core_send_append(c, best->id);
  }
}

/* --- commitment -------------------------------------------------------------- */

static bool core_committed_in_current_term(const qraft_core *c) {
  return log_term_or0(c, c->commit) == c->term;
}

static bool core_maybe_commit(qraft_core *c) {
  uint64_t mci = qraft__tracker_committed(&c->trk);
  if (!log_maybe_commit(c, mci, c->term)) {
    return false;
  }
  core_release_reads_waiting_commit(c);
  return true;
}

/* --- reads (thesis 6.4) ------------------------------------------------------ */

static void core_add_read_state(qraft_core *c, uint64_t index, uint64_t id) {
  if (c->read_states_n == c->cfg.read_states_max) {
    c->messages_dropped++; /* the requester times out and retries */
    return;
  }
  c->read_states[c->read_states_n++] = (qraft_read_state){.index = index,
                                                          .id = id};
}

static void core_respond_read(qraft_core *c, qraft_id from, uint64_t id,
                              uint64_t index) {
  if (from == c->id || from == QRAFT_ID_NONE) {
    core_add_read_state(c, index, id);
    return;
  }
  msg_slot *s = core_new_msg(c, QRAFT_MSG_READ_INDEX_RESP, from);
  if (s != NULL) {
    s->m.index = index;
    msg_set_read_ctx(s, id);
  }
}

static read_req *core_read_at(qraft_core *c, size_t k) {
  return &c->reads[(c->reads_start + k) % c->cfg.pending_reads_max];
}

static void core_read_start_round(qraft_core *c, read_req *r) {
  r->waiting_commit = false;
  r->index = c->commit;
  memset(r->acks, 0, sizeof r->acks);
  for (uint32_t i = 0; i < c->trk.progress_n; i++) {
    if (c->trk.prs[i].id == c->id) {
      r->acks[i] = true;
    }
  }
}

/* A leader that has committed an entry in its term knows the commit index;
 * reads queued before that can now start their round. */
static void core_release_reads_waiting_commit(qraft_core *c) {
  if (c->role != QRAFT_ROLE_LEADER || !core_committed_in_current_term(c)) {
    return;
  }
  bool any = false;
  for (size_t k = 0; k < c->reads_n; k++) {
    read_req *r = core_read_at(c, k);
    if (r->waiting_commit) {
      core_read_start_round(c, r);
      any = true;
    }
  }
  if (any) {
    /* under a valid lease, or in a single-voter configuration (its own
     * acknowledgement is a quorum: no heartbeat answer would ever come),
     * leadership is confirmed now */
    bool self_only[QRAFT__PROGRESS_MAX] = {false};
    for (uint32_t i = 0; i < c->trk.progress_n; i++) {
      self_only[i] = c->trk.prs[i].id == c->id;
    }
    bool confirmed = (c->cfg.read_only == QRAFT_READ_ONLY_LEASE_BASED &&
                      core_lease_valid(c)) ||
                     qraft__tracker_quorum_of(&c->trk, self_only) == VOTE_WON;
    if (confirmed) {
      while (c->reads_n > 0) {
        read_req *r = core_read_at(c, 0);
        core_respond_read(c, r->from, r->id, r->index);
        c->reads_start = (c->reads_start + 1) % c->cfg.pending_reads_max;
        c->reads_n--;
      }
    } else {
      core_bcast_heartbeat(c);
    }
  }
}

/* Lease length L in leader ticks: three quarters of the election timeout E,
 * and at most E - 2. A lease runs from the tick at which its heartbeat left
 * and ends at the leader's L-th tick after it: at most L tick periods of
 * the leader after the voter heard it. The voter's promise runs from that
 * moment until its E-th tick, at least E - 1 of its periods. So the lease
 * is safe while L leader periods are shorter than E - 1 voter periods: for
 * the default E = 10, L = 7, while the leader's clock runs no more than
 * 9/7 (28%) slower than any voter's (docs/core.md). */
static uint64_t core_lease_ticks(const qraft_core *c) {
  uint64_t e = c->cfg.election_ticks;
  uint64_t l = e * 3 / 4;
  if (l + 2 > e) {
    l = e - 2; /* election_ticks >= 3 with leases (config_validate) */
  }
  return l;
}

static bool core_lease_valid(const qraft_core *c) {
  if (c->lease_revoked) {
    return false;
  }
#ifdef QRAFT_CANARY_LEASE_OLD_CONFIG
  /* planted bug: the lease counted on the configuration of the election,
   * whatever changed since */
  {
    uint32_t fresh = 0;
    for (uint32_t i = 0; i < c->lease_voters_n; i++) {
      const progress *pr =
          qraft__tracker_get((tracker *)&c->trk, c->lease_voters[i]);
      fresh += c->lease_voters[i] == c->id ||
               (pr != NULL && pr->lease_tick != 0 &&
                pr->lease_tick + core_lease_ticks(c) > c->ticks);
    }
    return fresh > c->lease_voters_n / 2;
  }
#endif
  bool acks[QRAFT__PROGRESS_MAX];
  uint64_t lease = core_lease_ticks(c);
  for (uint32_t i = 0; i < c->trk.progress_n; i++) {
    const progress *pr = &c->trk.prs[i];
    acks[i] = pr->id == c->id ||
              (pr->lease_tick != 0 && pr->lease_tick + lease > c->ticks);
  }
  return qraft__tracker_quorum_of(&c->trk, acks) == VOTE_WON;
}

static int core_leader_read(qraft_core *c, qraft_id from, uint64_t id) {
  bool known_commit = core_committed_in_current_term(c);
#ifdef QRAFT_CANARY_READ_WITHOUT_QUORUM
  if (known_commit) {
    /* planted bug: answer without confirming leadership */
    core_respond_read(c, from, id, c->commit);
    return 0;
  }
#endif
  if (known_commit && c->cfg.read_only == QRAFT_READ_ONLY_LEASE_BASED &&
      core_lease_valid(c)) {
    /* The lease (thesis 6.4.1): a quorum answered heartbeats sent less than
     * lease_ticks ago, and a voter grants no vote within election_ticks of
     * hearing from the leader, so no other leader can exist yet. */
    core_respond_read(c, from, id, c->commit);
    return 0;
  }
  if (c->reads_n == c->cfg.pending_reads_max) {
    return QRAFT_EBUSY;
  }
  read_req *r = core_read_at(c, c->reads_n);
  c->reads_n++;
  r->id = id;
  r->from = from;
  if (!known_commit) {
    /* The commit index is not known until the leader commits an entry of
     * its term (thesis 6.4, step 1). */
    r->waiting_commit = true;
    r->index = 0;
    return 0;
  }
  core_read_start_round(c, r);
  if (qraft__tracker_quorum_of(&c->trk, r->acks) == VOTE_WON) {
    /* a single-voter configuration confirms itself */
    c->reads_n--;
    core_respond_read(c, from, id, r->index);
    return 0;
  }
  core_bcast_heartbeat(c);
  return 0;
}

/* A heartbeat response acknowledged read `id`: confirm it and every read
 * queued before it once a quorum has answered. */
static void core_read_ack(qraft_core *c, qraft_id from, uint64_t id) {
  size_t slot_of_from = SIZE_MAX;
  for (uint32_t i = 0; i < c->trk.progress_n; i++) {
    if (c->trk.prs[i].id == from) {
      slot_of_from = i;
    }
  }
  if (slot_of_from == SIZE_MAX) {
    return;
  }
  size_t k;
  for (k = 0; k < c->reads_n; k++) {
    read_req *r = core_read_at(c, k);
    if (!r->waiting_commit && r->id == id) {
      break;
    }
  }
  if (k == c->reads_n) {
    return;
  }
  read_req *target = core_read_at(c, k);
  target->acks[slot_of_from] = true;
  if (qraft__tracker_quorum_of(&c->trk, target->acks) != VOTE_WON) {
    return;
  }
  /* Everything up to and including k is confirmed: the heartbeats that
   * confirmed k left after those reads recorded their index. Reads wait for
   * the commit only before the first commit of the term, and then all of
   * them do, so none is waiting here. */
  for (size_t j = 0; j <= k; j++) {
    read_req *r = core_read_at(c, 0);
    QRAFT_ASSERT(!r->waiting_commit);
    core_respond_read(c, r->from, r->id, r->index);
    c->reads_start = (c->reads_start + 1) % c->cfg.pending_reads_max;
    c->reads_n--;
  }
}

/* --- elections --------------------------------------------------------------- */

static vote_result core_poll(qraft_core *c, qraft_id id, bool granted) {
  progress *pr = qraft__tracker_get(&c->trk, id);
  if (pr != NULL && pr->vote < 0) {
    pr->vote = granted ? 1 : 0;
  }
  uint32_t g, r;
  return qraft__tracker_tally(&c->trk, &g, &r);
}

static void core_campaign(qraft_core *c, campaign_type t) {
  if (!core_promotable(c)) {
    if (!core_removed_may_campaign(c)) {
      return;
    }
    /* A removed node: pre-vote first, the election only once the pre-vote
     * is won. The tally matters, not only the role: an election timeout
     * with pre_vote off asks for CAMPAIGN_ELECTION while the node is still
     * a pre-candidate that nobody answered, and an election then would
     * raise its term at every other timeout. Its vote requests go only to
     * the voters of its stale configuration, so the real leader would never
     * hear of that term, and without pre-vote or check-quorum it would
     * never answer the leader's lower-term messages either: a member the
     * leader needs would be lost for good (qraft-sim seeds 5048963,
     * 5072613 and 5094182, where a node being added held only a prefix of
     * the log older than its addition). */
    uint32_t g, r;
    if (t != CAMPAIGN_PRE_ELECTION &&
        (t != CAMPAIGN_ELECTION || c->role != QRAFT_ROLE_PRE_CANDIDATE ||
         qraft__tracker_tally(&c->trk, &g, &r) != VOTE_WON)) {
      t = CAMPAIGN_PRE_ELECTION;
    }
  }
  uint64_t term;
  qraft_msg_type vote_msg;
  if (t == CAMPAIGN_PRE_ELECTION) {
    core_become_pre_candidate(c);
    vote_msg = QRAFT_MSG_REQUEST_PRE_VOTE;
    term = c->term + 1; /* the term we would campaign in */
  } else {
    core_become_candidate(c);
    vote_msg = QRAFT_MSG_REQUEST_VOTE;
    term = c->term;
  }
  if (core_poll(c, c->id, true) == VOTE_WON) {
    /* A single-voter configuration wins at once, but leads only once its
     * vote for itself is durable: a leader whose term a crash can undo
     * could lead the same term twice with different entries. */
    if (t == CAMPAIGN_PRE_ELECTION) {
      core_campaign(c, CAMPAIGN_ELECTION);
    } else if (c->durable_term == c->term && c->durable_vote == c->id) {
      core_become_leader(c);
    } else {
      c->leader_pending = true;
    }
    return;
  }
  uint64_t li = log_last_index(c);
  uint64_t lt = log_last_term(c);
  /* voters of both halves of a joint configuration, each once */
  for (uint32_t i = 0; i < c->trk.progress_n; i++) {
    qraft_id id = c->trk.prs[i].id;
    if (id == c->id || !qraft__tracker_is_voter(&c->trk, id)) {
      continue;
    }
    msg_slot *s = core_new_msg(c, vote_msg, id);
    if (s == NULL) {
      continue;
    }
    s->m.term = term;
    s->m.index = li;
    s->m.log_term = lt;
    s->ctx_transfer = t == CAMPAIGN_TRANSFER;
  }
}

static bool core_has_unapplied_conf(const qraft_core *c) {
  for (uint64_t i = c->applying + 1; i <= c->commit; i++) {
    if (i <= c->snap_index || i > log_last_index(c)) {
      continue;
    }
    if (log_at(c, i)->type != QRAFT_ENTRY_NORMAL) {
      return true;
    }
  }
  return false;
}

static void core_hup(qraft_core *c, campaign_type t) {
  if (c->role == QRAFT_ROLE_LEADER) {
    return;
  }
  if (!core_may_campaign(c)) {
    return;
  }
  if (core_has_unapplied_conf(c)) {
    /* Campaigning now could use a configuration that is about to change. */
    return;
  }
  core_campaign(c, t);
}

/* --- follower side of replication -------------------------------------------- */

static void core_handle_append(qraft_core *c, const qraft_message *m) {
  if (m->index < c->commit) {
    msg_slot *s = core_new_msg(c, QRAFT_MSG_APPEND_RESPONSE, m->from);
    if (s != NULL) {
      s->m.index = c->commit;
    }
    return;
  }
  if (log_match_term(c, m->index, m->log_term)) {
    uint64_t last_new = m->index + m->entries_n;
    uint64_t ci = log_find_conflict(c, m->entries, m->entries_n);
    if (ci != 0) {
      QRAFT_ASSERTF(ci > c->commit,
                    "entry %llu conflicts with committed entry (commit %llu)",
                    (unsigned long long)ci, (unsigned long long)c->commit);
      if (ci <= log_last_index(c)) {
        log_truncate(c, ci);
      }
      size_t off = (size_t)(ci - (m->index + 1));
      int rv = log_append(c, m->entries + off, m->entries_n - off);
      if (rv != 0) {
        return; /* out of memory: as if the message was lost */
      }
    }
    log_commit_to(c, m->commit < last_new ? m->commit : last_new);
    msg_slot *s = core_new_msg(c, QRAFT_MSG_APPEND_RESPONSE, m->from);
    if (s != NULL) {
      s->m.index = last_new;
    }
    return;
  }
  /* Reject, with a hint that lets the leader skip a whole term at once. */
  uint64_t hint = m->index < log_last_index(c) ? m->index : log_last_index(c);
  uint64_t hint_term;
  hint = log_find_conflict_by_term(c, hint, m->log_term, &hint_term);
  msg_slot *s = core_new_msg(c, QRAFT_MSG_APPEND_RESPONSE, m->from);
  if (s != NULL) {
    s->m.index = m->index;
    s->m.reject = true;
    s->m.reject_hint = hint;
    s->m.log_term = hint_term;
  }
}

static void core_handle_heartbeat(qraft_core *c, const qraft_message *m) {
  log_commit_to(c, m->commit);
  msg_slot *s = core_new_msg(c, QRAFT_MSG_HEARTBEAT_RESPONSE, m->from);
  if (s != NULL && (m->context.len == 8 || m->context.len == 16)) {
    memcpy(s->ctx, m->context.data, m->context.len);
    s->ctx_len = (uint8_t)m->context.len;
    s->ctx_context = true;
  }
}

/* Installs a received snapshot if it is news (etcd's restore). */
static bool core_restore(qraft_core *c, const qraft_snapshot_meta *sm) {
  if (sm->index <= c->commit) {
    return false;
  }
  if (c->role != QRAFT_ROLE_FOLLOWER) {
    /* only followers install snapshots; should not happen (step makes us a
     * follower first) */
    return false;
  }
  /* The snapshot may predate our own addition to the configuration (a
   * learner added after the leader's last snapshot): install it anyway; the
   * entries after it add us. etcd refuses such a snapshot, and its leader
   * then sends the same snapshot forever. */
  if (log_match_term(c, sm->index, sm->term)) {
    /* We have the entry: just move the commit index (etcd does the same). */
    log_commit_to(c, sm->index);
    return false;
  }
  /* Throw away the whole log: the snapshot replaces it (paper 7). */
  for (size_t i = 0; i < c->ents_n; i++) {
    entry_release(&c->ents[i]);
  }
  c->ents_n = 0;
  c->ents_bytes = 0;
  c->applied_bytes = 0;
  c->snap_index = sm->index;
  c->snap_term = sm->term;
  c->snap_conf = sm->conf_state;
  c->commit = sm->index;
  c->applying = sm->index;
  if (c->applied < sm->index) {
    c->applied = sm->index;
  }
  if (c->persisted >= sm->index) {
    /* the entries we had there are being replaced by the snapshot */
    c->persisted = sm->index - 1;
  }
  c->unstable_from = sm->index + 1;
  c->truncate_from = 0;
  c->snapshot_pending = true;
  c->snapshot_handed = false;
  c->pending_snap = *sm;
  c->confs_n = 0;
  int rv = qraft__tracker_reset_conf(&c->trk, &sm->conf_state,
                                     log_last_index(c) + 1);
  QRAFT_ASSERTF(rv == 0, "snapshot configuration over limits");
  c->conf_changed = true;
  return true;
}

static void core_handle_snapshot(qraft_core *c, const qraft_message *m) {
  if (m->snapshot == NULL) {
    return;
  }
  msg_slot *s;
  if (core_restore(c, &m->snapshot->metadata)) {
    s = core_new_msg(c, QRAFT_MSG_APPEND_RESPONSE, m->from);
    if (s != NULL) {
      s->m.index = log_last_index(c);
    }
  } else {
    s = core_new_msg(c, QRAFT_MSG_APPEND_RESPONSE, m->from);
    if (s != NULL) {
      s->m.index = c->commit;
    }
  }
}

/* --- step: per role ---------------------------------------------------------- */

static int core_step_leader(qraft_core *c, const qraft_message *m) {
  switch (m->type) {
  case QRAFT_MSG_PROPOSE: {
    if (m->entries_n == 0) {
      return QRAFT_EMALFORMED;
    }
    if (qraft__tracker_get(&c->trk, c->id) == NULL ||
        c->lead_transferee != QRAFT_ID_NONE) {
      return QRAFT_EPROPOSAL_DROPPED;
    }
    if (m->entries_n > c->cfg.append_entries_max) {
      return QRAFT_ELIMIT;
    }
    /* Copy the entry headers; configuration entries from a follower are
     * refused (changes go through qraft_core_propose_conf_change on the
     * leader, which checks them). */
    qraft_entry local[64];
    qraft_entry *es = m->entries_n <= 64 ? local
                                         : malloc(m->entries_n * sizeof *es);
    if (es == NULL) {
      return -ENOMEM;
    }
    for (size_t i = 0; i < m->entries_n; i++) {
      es[i] = m->entries[i];
      if (es[i].type != QRAFT_ENTRY_NORMAL) {
        es[i].type = QRAFT_ENTRY_NORMAL;
        es[i].data = (qraft_slice){0};
        es[i].context = (qraft_slice){0};
      }
    }
    int rv = core_append_entries(c, es, m->entries_n);
    if (es != local) {
      free(es);
    }
    if (rv != 0) {
      return rv;
    }
    c->append_pending = true; /* one MsgAppend per peer per update */
    return 0;
  }
  case QRAFT_MSG_READ_INDEX: {
    uint64_t id;
    if (m->entries_n != 1 || !msg_get_read_ctx(&m->entries[0].data, &id)) {
      return QRAFT_EMALFORMED;
    }
    return core_leader_read(c, m->from, id);
  }
  default:
    break;
  }

  progress *pr = qraft__tracker_get(&c->trk, m->from);
  if (pr == NULL) {
    return QRAFT_EUNKNOWN_NODE;
  }
  switch (m->type) {
  case QRAFT_MSG_APPEND_RESPONSE: {
    pr->recent_active = true;
    if (m->reject) {
      uint64_t next_probe = m->reject_hint;
      if (m->log_term > 0) {
        uint64_t t;
        next_probe = log_find_conflict_by_term(c, m->reject_hint, m->log_term,
                                               &t);
      }
      if (qraft__progress_maybe_decr_to(pr, m->index, next_probe)) {
        if (pr->state == PROGRESS_REPLICATE) {
          qraft__progress_become_probe(pr);
        }
        core_send_append(c, m->from);
      }
      return 0;
    }
    if (m->index > log_last_index(c)) {
      return QRAFT_EMALFORMED; /* acknowledges entries we never sent */
    }
    bool old_paused = qraft__progress_is_paused(pr);
    if (!qraft__progress_maybe_update(pr, m->index)) {
      return 0;
    }
    switch (pr->state) {
    case PROGRESS_PROBE:
      qraft__progress_become_replicate(pr);
      break;
    case PROGRESS_SNAPSHOT:
      if (pr->match >= pr->pending_snapshot) {
        qraft__progress_become_probe(pr);
        qraft__progress_become_replicate(pr);
      }
      break;
    case PROGRESS_REPLICATE:
      qraft__inflights_free_le(&pr->infl, m->index);
      break;
    }
    if (core_maybe_commit(c)) {
      core_bcast_append(c);
    } else if (old_paused) {
      core_send_append(c, m->from);
    }
    /* pipeline: fill the window */
    while (core_maybe_send_append(c, m->from, false)) {
    }
    if (m->from == c->lead_transferee && pr->match == log_last_index(c)) {
      core_send_timeout_now(c, m->from);
    }
    return 0;
  }
  case QRAFT_MSG_HEARTBEAT_RESPONSE: {
    pr->recent_active = true;
    pr->probe_sent = false;
    /* An append or its answer may have been lost: free one slot of a full
     * window so that replication cannot stall for good (etcd does the
     * same). */
    if (pr->state == PROGRESS_REPLICATE && qraft__inflights_full(&pr->infl)) {
      qraft__inflights_free_first(&pr->infl);
    }
    if (pr->match < log_last_index(c)) {
      core_send_append(c, m->from);
    }
    uint64_t tick, id;
    bool has_read;
    if (msg_get_hb_ctx(&m->context, &tick, &has_read, &id)) {
      if (tick <= c->ticks && tick > pr->lease_tick) {
        pr->lease_tick = tick;
      }
      if (has_read) {
        core_read_ack(c, m->from, id);
      }
    }
    return 0;
  }
  case QRAFT_MSG_TRANSFER_LEADER: {
    if (pr->is_learner) {
      return 0;
    }
    qraft_id to = m->from;
    if (c->lead_transferee != QRAFT_ID_NONE) {
      if (c->lead_transferee == to) {
        return 0;
      }
      core_abort_transfer(c);
    }
    if (to == c->id) {
      return 0;
    }
    /* Transfer should finish within one election timeout (thesis 3.10).
     * It has a clock of its own: restarting election_elapsed, as etcd does,
     * would let an isolated leader outlive check-quorum. */
    c->transfer_elapsed = 0;
    c->lead_transferee = to;
    if (pr->match == log_last_index(c)) {
      core_send_timeout_now(c, to);
    } else {
      core_send_append(c, to);
    }
    return 0;
  }
  default:
    return 0; /* votes and the like at our term: nothing to do */
  }
}

static int core_step_candidate(qraft_core *c, const qraft_message *m) {
  qraft_msg_type my_resp = c->role == QRAFT_ROLE_PRE_CANDIDATE
                               ? QRAFT_MSG_REQUEST_PRE_VOTE_RESPONSE
                               : QRAFT_MSG_REQUEST_VOTE_RESPONSE;
  switch (m->type) {
  case QRAFT_MSG_PROPOSE:
    return QRAFT_ENOTLEADER;
  case QRAFT_MSG_APPEND:
    core_become_follower(c, m->term, m->from);
    core_handle_append(c, m);
    return 0;
  case QRAFT_MSG_HEARTBEAT:
    core_become_follower(c, m->term, m->from);
    core_handle_heartbeat(c, m);
    return 0;
  case QRAFT_MSG_SNAPSHOT:
    core_become_follower(c, m->term, m->from);
    core_handle_snapshot(c, m);
    return 0;
  default:
    break;
  }
  if (m->type == my_resp) {
    switch (core_poll(c, m->from, !m->reject)) {
    case VOTE_WON:
      if (c->role == QRAFT_ROLE_PRE_CANDIDATE) {
        core_campaign(c, CAMPAIGN_ELECTION);
      } else {
        core_become_leader(c);
        core_bcast_append(c);
      }
      break;
    case VOTE_LOST:
      core_become_follower(c, c->term, QRAFT_ID_NONE);
      break;
    case VOTE_PENDING:
      break;
    }
  }
  return 0;
}

static int core_step_follower(qraft_core *c, const qraft_message *m) {
  switch (m->type) {
  case QRAFT_MSG_PROPOSE: {
    if (c->lead == QRAFT_ID_NONE || c->cfg.disable_proposal_forwarding) {
      return QRAFT_ENOTLEADER;
    }
    /* forward (the entries were copied to the forward arena by the caller) */
    return 0;
  }
  case QRAFT_MSG_APPEND:
    c->election_elapsed = 0;
    c->lead = m->from;
    core_handle_append(c, m);
    return 0;
  case QRAFT_MSG_HEARTBEAT:
    c->election_elapsed = 0;
    c->lead = m->from;
    core_handle_heartbeat(c, m);
    return 0;
  case QRAFT_MSG_SNAPSHOT:
    c->election_elapsed = 0;
    c->lead = m->from;
    core_handle_snapshot(c, m);
    return 0;
  case QRAFT_MSG_TIMEOUT_NOW:
    /* Leadership transfer: campaign at once, without pre-vote, and with a
     * context that lets voters ignore their leader lease (thesis 3.10). */
    if (core_promotable(c)) {
      core_campaign(c, CAMPAIGN_TRANSFER);
    }
    return 0;
  case QRAFT_MSG_READ_INDEX_RESP: {
    uint64_t id;
    if (m->entries_n != 1 || !msg_get_read_ctx(&m->entries[0].data, &id)) {
      return QRAFT_EMALFORMED;
    }
    core_add_read_state(c, m->index, id);
    return 0;
  }
  default:
    return 0;
  }
}

static bool msg_is_transfer(const qraft_message *m) {
  return m->context.len == CAMPAIGN_TRANSFER_LEN &&
         memcmp(m->context.data, campaign_transfer_ctx,
                CAMPAIGN_TRANSFER_LEN) == 0;
}

/* Step: the term rules that apply to every message (paper Figure 2, "All
 * servers"; thesis 9.6 for pre-vote; 6.2 for the lease), then the role. */
static int core_step(qraft_core *c, const qraft_message *m) {
  if (m->term > c->term) {
    if (m->type == QRAFT_MSG_REQUEST_VOTE ||
        m->type == QRAFT_MSG_REQUEST_PRE_VOTE) {
      bool force = msg_is_transfer(m);
      /* The promise behind check-quorum and the leader lease: no vote
       * within an election timeout of hearing from a leader, so that a
       * partitioned node cannot depose it (thesis 4.2.3) and no other
       * leader can exist while its lease runs (core_lease_valid). The
       * promise lives in memory, so with lease reads a node that has just
       * started keeps it for its first election timeout too: it may have
       * heard from a leader just before it stopped, and a quick restart
       * must not let another leader win inside that leader's lease. (Only
       * with lease reads, which need it: without them an explicit
       * qraft_core_campaign right after a start keeps working.) A
       * transfer's campaign is obeyed all the same: the leader that sent
       * MsgTimeoutNow gave its lease up (core_send_timeout_now). */
      bool in_lease =
          c->cfg.check_quorum &&
          ((c->lead != QRAFT_ID_NONE &&
            c->election_elapsed < c->cfg.election_ticks) ||
           (c->cfg.read_only == QRAFT_READ_ONLY_LEASE_BASED &&
            c->ticks < c->cfg.election_ticks));
      if (!force && in_lease) {
        return 0;
      }
    }
    if (m->type == QRAFT_MSG_REQUEST_PRE_VOTE) {
      /* never change term for a pre-vote */
    } else if (m->type == QRAFT_MSG_REQUEST_PRE_VOTE_RESPONSE && !m->reject) {
      /* the term is bumped when the pre-vote is won */
    } else if (m->type == QRAFT_MSG_APPEND ||
               m->type == QRAFT_MSG_HEARTBEAT ||
               m->type == QRAFT_MSG_SNAPSHOT) {
      core_become_follower(c, m->term, m->from);
    } else {
      core_become_follower(c, m->term, QRAFT_ID_NONE);
    }
  } else if (m->term < c->term) {
    if ((c->cfg.check_quorum || c->cfg.pre_vote) &&
        (m->type == QRAFT_MSG_HEARTBEAT || m->type == QRAFT_MSG_APPEND)) {
      /* A stale leader (after a partition) learns the new term from this
       * and steps down; otherwise, with pre-vote or check-quorum, a node
       * with a higher term could never win against it. */
      core_new_msg(c, QRAFT_MSG_APPEND_RESPONSE, m->from);
    } else if (m->type == QRAFT_MSG_REQUEST_PRE_VOTE) {
      msg_slot *s =
          core_new_msg(c, QRAFT_MSG_REQUEST_PRE_VOTE_RESPONSE, m->from);
      if (s != NULL) {
        s->m.reject = true;
      }
    } else if (m->type == QRAFT_MSG_REQUEST_VOTE) {
      /* Refuse, at our term, as the paper's RequestVote does (Figure 2:
       * "reply false if term < currentTerm"); etcd stays silent here. A
       * voter whose term ran ahead while it was cut off, and whose stale
       * configuration does not name the candidates, never sends them
       * anything else: silent, it leaves them campaigning below its term
       * for good while their configuration needs its vote (qraft-sim seed
       * 21625, pre-vote off). Told the term, the candidate catches up and
       * wins the next election. */
      msg_slot *s = core_new_msg(c, QRAFT_MSG_REQUEST_VOTE_RESPONSE, m->from);
      if (s != NULL) {
        s->m.reject = true;
      }
    }
    return 0;
  }

  switch (m->type) {
  case QRAFT_MSG_REQUEST_VOTE:
  case QRAFT_MSG_REQUEST_PRE_VOTE: {
    /* Grant if we have not voted for another in this term (pre-votes are
     * for a future term) and the candidate's log is up to date (5.4.1). */
    bool can_vote =
        c->vote == m->from ||
        (c->vote == QRAFT_ID_NONE && c->lead == QRAFT_ID_NONE) ||
        (m->type == QRAFT_MSG_REQUEST_PRE_VOTE && m->term > c->term);
    qraft_msg_type resp = m->type == QRAFT_MSG_REQUEST_VOTE
                              ? QRAFT_MSG_REQUEST_VOTE_RESPONSE
                              : QRAFT_MSG_REQUEST_PRE_VOTE_RESPONSE;
    if (can_vote && log_is_up_to_date(c, m->index, m->log_term)) {
      msg_slot *s = core_new_msg(c, resp, m->from);
      if (s != NULL) {
        /* the response carries the candidate's term, not ours: a pre-vote
         * response must not look stale to the pre-candidate */
        s->m.term = m->term;
      }
      if (m->type == QRAFT_MSG_REQUEST_VOTE) {
        c->election_elapsed = 0;
        c->vote = m->from;
      }
    } else {
      msg_slot *s = core_new_msg(c, resp, m->from);
      if (s != NULL) {
        s->m.term = c->term;
        s->m.reject = true;
      }
    }
    return 0;
  }
  default:
    break;
  }
  switch (c->role) {
  case QRAFT_ROLE_LEADER:
    return core_step_leader(c, m);
  case QRAFT_ROLE_CANDIDATE:
  case QRAFT_ROLE_PRE_CANDIDATE:
    return core_step_candidate(c, m);
  case QRAFT_ROLE_FOLLOWER:
    return core_step_follower(c, m);
  }
  QRAFT_UNREACHABLE();
}

/* --- public events ----------------------------------------------------------- */

static void core_release_forwarded(qraft_core *c) {
  for (size_t i = 0; i < c->fwd_release_n; i++) {
    entry_release(&c->fwd[i]);
  }
  if (c->fwd_release_n > 0) {
    memmove(c->fwd, c->fwd + c->fwd_release_n,
            (c->fwd_n - c->fwd_release_n) * sizeof *c->fwd);
    c->fwd_n -= c->fwd_release_n;
    /* slots of the current update referring to forwarded entries */
    for (size_t i = 0; i < c->slots_n; i++) {
      if (c->slots[i].fwd_n > 0) {
        c->slots[i].fwd_first -= c->fwd_release_n;
      }
    }
    c->fwd_release_n = 0;
  }
}

/* Counts `n` ticks. With `decide`, then takes the decisions that are due:
 * check-quorum and an election timeout. Without it those wait, because
 * they must see the messages that arrived while the ticks went by
 * (qraft_core_elapse). Heartbeats and the end of a transfer are decided at
 * once: they need no message to be right. */
static uint32_t sat_add32(uint32_t a, uint64_t n) {
  return n >= UINT32_MAX - a ? UINT32_MAX : a + (uint32_t)n;
}

static void core_count_ticks(qraft_core *c, uint64_t n, bool decide) {
  core_release_forwarded(c);
  if (n == 0 && !decide) {
    return;
  }
  c->ticks += n;
  if (c->role == QRAFT_ROLE_LEADER) {
    c->heartbeat_elapsed = sat_add32(c->heartbeat_elapsed, n);
    c->election_elapsed = sat_add32(c->election_elapsed, n);
    if (decide && c->election_elapsed >= c->cfg.election_ticks) {
      c->election_elapsed = 0;
      if (c->cfg.check_quorum) {
        /* Check-quorum: a leader that has not heard from a quorum within
         * an election timeout steps down (thesis 6.2). */
#ifndef QRAFT_CANARY_NO_CHECK_QUORUM_STEP_DOWN
        if (!qraft__tracker_quorum_active(&c->trk)) {
          c->check_quorum_failed = true;
          core_become_follower(c, c->term, QRAFT_ID_NONE);
          return;
        }
#endif
        for (uint32_t i = 0; i < c->trk.progress_n; i++) {
          if (c->trk.prs[i].id != c->id) {
            c->trk.prs[i].recent_active = false;
          }
        }
      }
    }
    if (c->lead_transferee != QRAFT_ID_NONE) {
      c->transfer_elapsed = sat_add32(c->transfer_elapsed, n);
      if (c->transfer_elapsed >= c->cfg.election_ticks) {
        core_abort_transfer(c); /* took longer than an election timeout */
        if (c->removed_leader) {
          core_removed_leader_handover(c);
        }
      }
    }
    if (c->heartbeat_elapsed >= c->cfg.heartbeat_ticks) {
      c->heartbeat_elapsed = 0;
      core_bcast_heartbeat(c);
    }
    return;
  }
  c->election_elapsed = sat_add32(c->election_elapsed, n);
  if (decide && core_may_campaign(c) &&
      c->election_elapsed >= c->randomized_election_timeout) {
    c->election_elapsed = 0;
    c->election_timeouts++;
    core_hup(c, c->cfg.pre_vote ? CAMPAIGN_PRE_ELECTION : CAMPAIGN_ELECTION);
  }
}

void qraft_core_tick(qraft_core *c) { core_count_ticks(c, 1, true); }

void qraft_core_elapse(qraft_core *c, uint64_t ticks) {
  core_count_ticks(c, ticks, false);
}

void qraft_core_check_timeouts(qraft_core *c) { core_count_ticks(c, 0, true); }

void qraft_core_campaign(qraft_core *c) {
  core_release_forwarded(c);
  core_hup(c, c->cfg.pre_vote ? CAMPAIGN_PRE_ELECTION : CAMPAIGN_ELECTION);
}

int qraft_core_step(qraft_core *c, const qraft_message *m) {
  core_release_forwarded(c);
  switch (m->type) {
  case QRAFT_MSG_HUP:
  case QRAFT_MSG_BEAT:
  case QRAFT_MSG_UNREACHABLE:
  case QRAFT_MSG_SNAP_STATUS:
  case QRAFT_MSG_CHECK_QUORUM:
    return QRAFT_EMALFORMED; /* local messages never come from a peer */
  default:
    break;
  }
  if ((unsigned)m->type > QRAFT_MSG_TYPE_MAX) {
    return QRAFT_EMALFORMED;
  }
  if (m->from == QRAFT_ID_NONE || m->from == c->id) {
    return QRAFT_EMALFORMED;
  }
  for (size_t i = 1; i < m->entries_n; i++) {
    if (m->entries[i].index != m->entries[i - 1].index + 1 ||
        m->entries[i].term < m->entries[i - 1].term) {
      return QRAFT_EMALFORMED;
    }
  }
  if (m->type == QRAFT_MSG_PROPOSE && m->term != 0) {
    return QRAFT_EMALFORMED;
  }
  if (m->type == QRAFT_MSG_APPEND && m->entries_n > 0 &&
      (m->entries[0].index != m->index + 1 || m->entries[0].term < m->log_term ||
       m->entries[m->entries_n - 1].term > m->term)) {
    return QRAFT_EMALFORMED;
  }
  if (m->term == 0 && m->type != QRAFT_MSG_READ_INDEX &&
      m->type != QRAFT_MSG_PROPOSE &&
      m->type != QRAFT_MSG_READ_INDEX_RESP &&
      m->type != QRAFT_MSG_TRANSFER_LEADER) {
    return QRAFT_EMALFORMED;
  }
  if (m->term == 0) {
    /* term-less requests between members: handled by the role */
    if (m->type == QRAFT_MSG_TRANSFER_LEADER) {
      if (c->role == QRAFT_ROLE_LEADER) {
        return core_step_leader(c, m);
      }
      return 0;
    }
    if (m->type == QRAFT_MSG_READ_INDEX || m->type == QRAFT_MSG_PROPOSE) {
      /* forwarded by a follower; a node that is no longer the leader drops
       * it and the proposer times out */
      if (c->role != QRAFT_ROLE_LEADER) {
        return QRAFT_ENOTLEADER;
      }
      return core_step_leader(c, m);
    }
    if (c->role == QRAFT_ROLE_FOLLOWER) {
      return core_step_follower(c, m);
    }
    return 0;
  }
  return core_step(c, m);
}

int qraft_core_propose(qraft_core *c, const qraft_entry *entries, size_t n,
                       uint64_t *first_index, uint64_t *term) {
  core_release_forwarded(c);
  if (first_index) {
    *first_index = 0;
  }
  if (term) {
    *term = 0;
  }
  if (n == 0) {
    return 0;
  }
  if (n > c->cfg.append_entries_max) {
    return QRAFT_ELIMIT;
  }
  for (size_t i = 0; i < n; i++) {
    if (entries[i].type != QRAFT_ENTRY_NORMAL) {
      return QRAFT_EMALFORMED; /* use qraft_core_propose_conf_change */
    }
  }
  if (c->role == QRAFT_ROLE_LEADER) {
    if (qraft__tracker_get(&c->trk, c->id) == NULL ||
        c->lead_transferee != QRAFT_ID_NONE) {
      return QRAFT_EPROPOSAL_DROPPED;
    }
    qraft_entry local[64];
    qraft_entry *es = n <= 64 ? local : malloc(n * sizeof *es);
    if (es == NULL) {
      return -ENOMEM;
    }
    memcpy(es, entries, n * sizeof *es);
    int rv = core_append_entries(c, es, n);
    if (rv == 0) {
      if (first_index) {
        *first_index = es[0].index;
      }
      if (term) {
        *term = c->term;
      }
    }
    if (es != local) {
      free(es);
    }
    if (rv != 0) {
      return rv;
    }
    c->append_pending = true; /* one MsgAppend per peer per update */
    return 0;
  }
  if (c->role != QRAFT_ROLE_FOLLOWER || c->lead == QRAFT_ID_NONE ||
      c->cfg.disable_proposal_forwarding) {
    return QRAFT_ENOTLEADER;
  }
  /* Forward to the leader (etcd's stepFollower MsgProp). */
  if (c->fwd_n + n > c->fwd_cap) {
    size_t cap = c->fwd_cap ? c->fwd_cap : 64;
    while (cap < c->fwd_n + n) {
      cap *= 2;
    }
    qraft_entry *f = realloc(c->fwd, cap * sizeof *f);
    if (f == NULL) {
      return -ENOMEM;
    }
    c->fwd = f;
    c->fwd_cap = cap;
  }
  msg_slot *s = core_new_msg(c, QRAFT_MSG_PROPOSE, c->lead);
  if (s == NULL) {
    return QRAFT_EPROPOSAL_DROPPED;
  }
  s->m.term = 0; /* etcd sends proposals without a term */
  s->fwd_first = c->fwd_n;
  s->fwd_n = n;
  for (size_t i = 0; i < n; i++) {
    entry_copy_ref(&c->fwd[c->fwd_n++], &entries[i]);
  }
  return 0;
}

int qraft_core_propose_conf_change(qraft_core *c,
                                   const qraft_conf_change_v2 *cc,
                                   uint64_t *index, qraft_err *err) {
  core_release_forwarded(c);
  if (c->role != QRAFT_ROLE_LEADER) {
    return QRAFT_ERR(err, QRAFT_ENOTLEADER, "configuration change");
  }
  if (c->lead_transferee != QRAFT_ID_NONE) {
    return QRAFT_ERR(err, QRAFT_EPROPOSAL_DROPPED,
                     "configuration change during leadership transfer");
  }
  if (c->pending_conf_index > c->applying) {
    return QRAFT_ERR(err, QRAFT_ECONF_PENDING,
                     "change at index %llu is not applied yet (applied %llu)",
                     (unsigned long long)c->pending_conf_index,
                     (unsigned long long)c->applying);
  }
  int rv = qraft__tracker_check_change(&c->trk, cc, err);
  if (rv != 0) {
    return rv;
  }
  size_t size = qraft_conf_change_v2_size(cc);
  qraft_buf *b = qraft_buf_new(size);
  if (b == NULL) {
    return QRAFT_ERR(err, -ENOMEM, "configuration change");
  }
  b->len = qraft_conf_change_v2_encode(cc, b->data);
  QRAFT_ASSERT(b->len == size);
  qraft_entry e = {.type = QRAFT_ENTRY_CONF_CHANGE_V2,
                   .data = {.data = b->data, .len = b->len, .owner = b}};
  rv = core_append_entries(c, &e, 1);
  qraft_buf_unref(b); /* the log holds its own reference now */
  if (rv != 0) {
    return QRAFT_ERR(err, rv, "configuration change");
  }
  c->pending_conf_index = e.index;
  if (index) {
    *index = e.index;
  }
  c->append_pending = true; /* one MsgAppend per peer per update */
  return 0;
}

int qraft_core_read_index(qraft_core *c, uint64_t id) {
  core_release_forwarded(c);
  if (c->role == QRAFT_ROLE_LEADER) {
    return core_leader_read(c, c->id, id);
  }
  if (c->role != QRAFT_ROLE_FOLLOWER || c->lead == QRAFT_ID_NONE ||
      c->cfg.disable_proposal_forwarding) {
    return QRAFT_ENOTLEADER;
  }
  msg_slot *s = core_new_msg(c, QRAFT_MSG_READ_INDEX, c->lead);
  if (s == NULL) {
    return QRAFT_EBUSY;
  }
  s->m.term = 0;
  msg_set_read_ctx(s, id);
  return 0;
}

int qraft_core_transfer_leader(qraft_core *c, qraft_id to) {
  core_release_forwarded(c);
  if (qraft__tracker_get(&c->trk, to) == NULL) {
    return QRAFT_EUNKNOWN_NODE;
  }
  if (c->role == QRAFT_ROLE_LEADER) {
    qraft_message m = {.type = QRAFT_MSG_TRANSFER_LEADER, .from = to,
                       .to = c->id};
    return core_step_leader(c, &m);
  }
  if (c->lead == QRAFT_ID_NONE) {
    return QRAFT_ENOTLEADER;
  }
  /* Forward: etcd sends MsgTransferLeader with From = the transferee. */
  msg_slot *s = core_new_msg(c, QRAFT_MSG_TRANSFER_LEADER, c->lead);
  if (s != NULL) {
    s->m.term = 0;
    s->m.from = to;
  }
  return 0;
}

static void core_persisted_log(qraft_core *c, uint64_t term, uint64_t index) {
  if (index <= c->persisted || index > log_last_index(c) ||
      index < c->snap_index) {
    return;
  }
  /* Stale acknowledgement of an entry that was replaced since (same index,
   * same term means the same entry: log matching property). */
  if (!log_match_term(c, index, term)) {
    return;
  }
  QRAFT_ASSERTF(index < c->unstable_from,
                "persisted %llu but only %llu handed out",
                (unsigned long long)index,
                (unsigned long long)(c->unstable_from - 1));
  c->persisted = index;
  if (c->snapshot_pending && index >= c->pending_snap.index) {
    c->snapshot_pending = false;
  }
  if (c->role == QRAFT_ROLE_LEADER) {
    progress *self = qraft__tracker_get(&c->trk, c->id);
    if (self != NULL && qraft__progress_maybe_update(self, index)) {
      if (core_maybe_commit(c)) {
        core_bcast_append(c);
      }
    }
  }
}

void qraft_core_persisted(qraft_core *c, uint64_t persist_id) {
  core_release_forwarded(c);
  QRAFT_ASSERTF(persist_id < c->persist_next,
                "persisted id %llu was never handed out (next %llu)",
                (unsigned long long)persist_id,
                (unsigned long long)c->persist_next);
  while (c->prs_n > 0) {
    persist_rec *r = &c->prs_q[c->prs_start];
    if (r->id > persist_id) {
      break;
    }
    c->durable_term = r->hs_term;
    c->durable_vote = r->hs_vote;
    if (r->has_log) {
      core_persisted_log(c, r->term, r->index);
    }
    c->prs_start = (c->prs_start + 1) % c->prs_cap;
    c->prs_n--;
  }
  if (c->leader_pending && c->role == QRAFT_ROLE_CANDIDATE &&
      c->durable_term == c->term && c->durable_vote == c->id) {
    /* Our vote for ourselves is durable: a crash can no longer make us vote
     * again in this term, so we may lead it. */
    c->leader_pending = false;
    core_become_leader(c);
  }
}

void qraft_core_applied(qraft_core *c, uint64_t index) {
  core_release_forwarded(c);
  QRAFT_ASSERTF(index <= c->applying,
                "applied %llu but only %llu were handed out",
                (unsigned long long)index, (unsigned long long)c->applying);
  if (index > c->applied) {
    uint64_t last = log_last_index(c);
    for (uint64_t i = c->applied + 1; i <= index && i <= last; i++) {
      if (i > c->snap_index) {
        c->applied_bytes += entry_bytes(log_at(c, i));
      }
    }
    c->applied = index;
  }
}

static const qraft_conf_state *core_conf_at(const qraft_core *c,
                                            uint64_t index) {
  const qraft_conf_state *cs = &c->snap_conf;
  for (size_t i = 0; i < c->confs_n; i++) {
    if (c->confs[i].index <= index) {
      cs = &c->confs[i].conf;
    }
  }
  return cs;
}

int qraft_core_compact(qraft_core *c, uint64_t index) {
  core_release_forwarded(c);
  if (index <= c->snap_index) {
    return QRAFT_ECOMPACTED;
  }
  if (index > c->applied || index > c->persisted) {
    return QRAFT_EUNAVAILABLE;
  }
  qraft_conf_state cs = *core_conf_at(c, index);
  uint64_t term = log_at(c, index)->term;
  size_t drop = (size_t)(index - c->snap_index);
  for (size_t i = 0; i < drop; i++) {
    c->ents_bytes -= entry_bytes(&c->ents[i]);
    c->applied_bytes -= entry_bytes(&c->ents[i]); /* index <= applied */
    entry_release(&c->ents[i]);
  }
  memmove(c->ents, c->ents + drop, (c->ents_n - drop) * sizeof *c->ents);
  c->ents_n -= drop;
  /* messages of this update that named compacted entries are dropped when
   * the update is taken */
  c->snap_index = index;
  c->snap_term = term;
  c->snap_conf = cs;
  size_t keep = 0;
  for (size_t i = 0; i < c->confs_n; i++) {
    if (c->confs[i].index > index) {
      c->confs[keep++] = c->confs[i];
    }
  }
  c->confs_n = keep;
  return 0;
}

void qraft_core_report_snapshot(qraft_core *c, qraft_id to, bool ok) {
  core_release_forwarded(c);
  if (c->role != QRAFT_ROLE_LEADER) {
    return;
  }
  progress *pr = qraft__tracker_get(&c->trk, to);
  if (pr == NULL || pr->state != PROGRESS_SNAPSHOT) {
    return;
  }
  if (!ok) {
    pr->pending_snapshot = 0;
  }
  qraft__progress_become_probe(pr);
  /* wait for the follower's answer (heartbeat or append response) before
   * probing again */
  pr->probe_sent = true;
}

void qraft_core_report_unreachable(qraft_core *c, qraft_id to) {
  core_release_forwarded(c);
  if (c->role != QRAFT_ROLE_LEADER) {
    return;
  }
  progress *pr = qraft__tracker_get(&c->trk, to);
  if (pr != NULL && pr->state == PROGRESS_REPLICATE) {
    qraft__progress_become_probe(pr);
  }
}

/* --- creation ------------------------------------------------------------------ */

static int core_record_conf(qraft_core *c, uint64_t index) {
  if (c->confs_n == c->confs_cap) {
    size_t cap = c->confs_cap ? c->confs_cap * 2 : 4;
    conf_record *r = realloc(c->confs, cap * sizeof *r);
    if (r == NULL) {
      return -ENOMEM;
    }
    c->confs = r;
    c->confs_cap = cap;
  }
  c->confs[c->confs_n].index = index;
  c->confs[c->confs_n].conf = c->trk.conf;
  c->confs_n++;
  return 0;
}

/* Applies the configuration entry at `e` (its data is a ConfChange or a
 * ConfChangeV2). Invalid changes are skipped, the same way on every node,
 * since every node sees the same committed bytes. */
static void core_apply_conf_entry(qraft_core *c, const qraft_entry *e) {
  qraft_conf_change_v2 cc;
  int rv = qraft_conf_change_entry_decode(e, &cc, NULL);
  if (rv != 0) {
    c->bad_conf_entries++;
    return;
  }
  rv = qraft__tracker_apply_change(&c->trk, &cc, log_last_index(c), NULL);
  if (rv != 0) {
    c->bad_conf_entries++;
    return;
  }
  c->conf_changed = true;
  (void)core_record_conf(c, e->index);
  if (c->role != QRAFT_ROLE_LEADER) {
    return;
  }
  if (!qraft__tracker_is_voter(&c->trk, c->id)) {
    /* A leader removed from the configuration hands over before it steps
     * down (thesis 4.2.2 and 3.10). Stepping down at once, as etcd does,
     * can leave the remaining voters unable to elect anyone: one of them may
     * not know the removal is committed and need our vote, which we refuse
     * if our log is longer than theirs. */
    c->removed_leader = true;
    core_removed_leader_handover(c);
  }
  if (core_maybe_commit(c)) {
    core_bcast_append(c);
  } else {
    for (uint32_t i = 0; i < c->trk.progress_n; i++) {
      if (c->trk.prs[i].id != c->id) {
        core_maybe_send_append(c, c->trk.prs[i].id, false);
      }
    }
  }
  if (c->lead_transferee != QRAFT_ID_NONE &&
      !qraft__tracker_is_voter(&c->trk, c->lead_transferee)) {
    core_abort_transfer(c);
  }
}

int qraft_core_new(const qraft_core_config *cfg_in,
                   const qraft_core_restore *rs, qraft_core **out,
                   qraft_err *err) {
  *out = NULL;
  int rv = qraft_core_config_validate(cfg_in, err);
  if (rv != 0) {
    return rv;
  }
  /* Check the restore state before touching anything. */
  const qraft_snapshot_meta *sm = &rs->snapshot;
  for (size_t i = 0; i < rs->entries_n; i++) {
    if (rs->entries[i].index != sm->index + 1 + i) {
      return QRAFT_ERR(err, QRAFT_ECORRUPT,
                       "restore: entry %zu has index %llu, expected %llu", i,
                       (unsigned long long)rs->entries[i].index,
                       (unsigned long long)(sm->index + 1 + i));
    }
    uint64_t prev = i == 0 ? sm->term : rs->entries[i - 1].term;
    if (rs->entries[i].term < prev) {
      return QRAFT_ERR(err, QRAFT_ECORRUPT,
                       "restore: term goes back at index %llu",
                       (unsigned long long)rs->entries[i].index);
    }
  }
  uint64_t last = sm->index + rs->entries_n;
  if (rs->hard_state.commit > last) {
    return QRAFT_ERR(err, QRAFT_ECORRUPT,
                     "restore: commit %llu beyond the last index %llu",
                     (unsigned long long)rs->hard_state.commit,
                     (unsigned long long)last);
  }
  if (rs->applied > last || rs->applied < sm->index) {
    return QRAFT_ERR(err, QRAFT_ECORRUPT,
                     "restore: applied %llu outside [%llu, %llu]",
                     (unsigned long long)rs->applied,
                     (unsigned long long)sm->index, (unsigned long long)last);
  }

  qraft_core *c = calloc(1, sizeof *c);
  if (c == NULL) {
    return QRAFT_ERR(err, -ENOMEM, "core");
  }
  c->cfg = *cfg_in;
  config_fill_defaults(&c->cfg);
  c->id = c->cfg.id;
  qraft_prng_init(&c->prng, c->cfg.seed ^ (c->id * 0x9e3779b97f4a7c15ULL));
  rv = qraft__tracker_init(&c->trk, c->cfg.inflight_msgs_max);
  if (rv != 0) {
    free(c);
    return QRAFT_ERR(err, rv, "core: progress tracker");
  }
  c->slots = calloc(c->cfg.messages_max, sizeof *c->slots);
  c->out_now = calloc(c->cfg.messages_max, sizeof *c->out_now);
  c->out_after = calloc(c->cfg.messages_max, sizeof *c->out_after);
  c->read_states = calloc(c->cfg.read_states_max, sizeof *c->read_states);
  c->reads = calloc(c->cfg.pending_reads_max, sizeof *c->reads);
  if (!c->slots || !c->out_now || !c->out_after || !c->read_states ||
      !c->reads || log_reserve(c, rs->entries_n + 64) != 0) {
    qraft_core_free(c);
    return QRAFT_ERR(err, -ENOMEM, "core: buffers");
  }
  c->term = rs->hard_state.term;
  c->vote = rs->hard_state.vote;
  c->durable_term = c->term;
  c->durable_vote = c->vote;
  c->persist_next = 1;
  c->snap_index = sm->index;
  c->snap_term = sm->term;
  c->snap_conf = sm->conf_state;
  for (size_t i = 0; i < rs->entries_n; i++) {
    c->ents_bytes += entry_bytes(&rs->entries[i]);
    if (rs->entries[i].index <= rs->applied) {
      c->applied_bytes += entry_bytes(&rs->entries[i]);
    }
    entry_copy_ref(&c->ents[c->ents_n++], &rs->entries[i]);
  }
  c->commit = rs->hard_state.commit > sm->index ? rs->hard_state.commit
                                                : sm->index;
  c->applied = rs->applied;
  c->applying = rs->applied;
  c->persisted = last; /* everything restored is durable */
  c->unstable_from = last + 1;
  rv = qraft__tracker_reset_conf(&c->trk, &sm->conf_state, last + 1);
  if (rv != 0) {
    qraft_core_free(c);
    return QRAFT_ERR(err, QRAFT_ECORRUPT, "restore: configuration too large");
  }
  /* Configuration entries already applied by the state machine. */
  for (uint64_t i = sm->index + 1; i <= rs->applied; i++) {
    const qraft_entry *e = log_at(c, i);
    if (e->type != QRAFT_ENTRY_NORMAL) {
      core_apply_conf_entry(c, e);
    }
  }
  c->conf_changed = false;
  c->role = QRAFT_ROLE_FOLLOWER;
  c->lead = QRAFT_ID_NONE;
  core_reset_randomized_timeout(c);
  c->prev_hs = rs->hard_state;
  c->prev_role = QRAFT_ROLE_FOLLOWER;
  c->prev_lead = QRAFT_ID_NONE;
  *out = c;
  return 0;
}

void qraft_core_free(qraft_core *c) {
  if (c == NULL) {
    return;
  }
  for (size_t i = 0; i < c->ents_n; i++) {
    entry_release(&c->ents[i]);
  }
  for (size_t i = 0; i < c->fwd_n; i++) {
    entry_release(&c->fwd[i]);
  }
  free(c->ents);
  free(c->fwd);
  free(c->confs);
  free(c->slots);
  free(c->out_now);
  free(c->out_after);
  free(c->read_states);
  free(c->reads);
  free(c->prs_q);
  qraft__tracker_close(&c->trk);
  free(c);
}

/* --- updates ------------------------------------------------------------------- */

static uint64_t core_apply_limit(const qraft_core *c) {
  return c->commit < c->persisted ? c->commit : c->persisted;
}

bool qraft_core_has_update(const qraft_core *c) {
  if (c->slots_n > 0 || c->read_states_n > 0 || c->append_pending ||
      (c->snapshot_pending && !c->snapshot_handed) ||
      c->unstable_from <= log_last_index(c) || c->truncate_from != 0) {
    return true;
  }
  if (c->role != c->prev_role || c->lead != c->prev_lead) {
    return true;
  }
  if (c->term != c->prev_hs.term || c->vote != c->prev_hs.vote ||
      c->commit != c->prev_hs.commit) {
    return true;
  }
  if (core_apply_limit(c) > c->applying && c->applying >= c->snap_index) {
    return true;
  }
  return false;
}

void qraft_core_take_update(qraft_core *c, qraft_update *u) {
  core_release_forwarded(c);
  memset(u, 0, sizeof *u);

  /* 1. Committed entries to apply; configuration entries take effect now
   *    (they may produce messages, so this comes first). */
  uint64_t limit = core_apply_limit(c);
  uint64_t from = c->applying + 1;
  if (from <= c->snap_index) {
    from = c->snap_index + 1; /* a snapshot covers them */
  }
  size_t committed_n = 0;
  uint64_t bytes = 0;
  for (uint64_t i = from; i <= limit; i++) {
    const qraft_entry *e = log_at(c, i);
    size_t b = entry_payload_size(e);
    if (committed_n > 0 && bytes + b > c->cfg.apply_bytes_max) {
      break;
    }
    bytes += b;
    committed_n++;
    if (e->type != QRAFT_ENTRY_NORMAL) {
      core_apply_conf_entry(c, e);
    }
  }
  if (committed_n > 0) {
    c->applying = from + committed_n - 1;
    /* committed entries no longer count against the uncommitted limit */
    c->uncommitted_bytes = c->uncommitted_bytes > bytes
                               ? c->uncommitted_bytes - bytes
                               : 0;
  }
  /* A joint configuration entered with auto-leave is left by the leader as
   * soon as it is applied (etcd: ConfChangeTransitionJointImplicit/Auto). */
  if (c->role == QRAFT_ROLE_LEADER && c->trk.conf.auto_leave &&
      qraft__tracker_is_joint(&c->trk) &&
      c->applying >= c->pending_conf_index) {
    qraft_conf_change_v2 leave;
    memset(&leave, 0, sizeof leave);
    (void)qraft_core_propose_conf_change(c, &leave, NULL, NULL);
  }

  /* New entries proposed since the last update go out in one MsgAppend
   * per peer (batching: the update is taken at the end of a loop turn). */
  if (c->append_pending) {
    c->append_pending = false;
    if (c->role == QRAFT_ROLE_LEADER) {
      core_bcast_append(c);
    }
  }

  /* 2. Soft and hard state. */
  if (c->role != c->prev_role || c->lead != c->prev_lead) {
    u->soft_state_changed = true;
    c->prev_role = c->role;
    c->prev_lead = c->lead;
  }
  u->role = c->role;
  u->leader = c->lead;
  qraft_hard_state hs = {.term = c->term, .vote = c->vote, .commit = c->commit};
  bool term_or_vote = hs.term != c->prev_hs.term || hs.vote != c->prev_hs.vote;
  if (term_or_vote || hs.commit != c->prev_hs.commit) {
    u->hard_state_changed = true;
    u->hard_state = hs;
    c->prev_hs = hs;
  }

  /* 3. Log writes. */
  if (c->snapshot_pending && !c->snapshot_handed) {
    u->snapshot = &c->pending_snap;
    c->snapshot_handed = true;
  }
  u->truncate_from = c->truncate_from;
  c->truncate_from = 0;
  uint64_t last = log_last_index(c);
  if (c->unstable_from <= last) {
    u->entries = log_at(c, c->unstable_from);
    u->entries_n = (size_t)(last - c->unstable_from + 1);
    c->unstable_from = last + 1;
  }
  bool has_log = u->entries_n > 0 || u->snapshot != NULL ||
                 u->truncate_from != 0;
  if (has_log || u->hard_state_changed) {
    if (c->prs_n == c->prs_cap) {
      size_t cap = c->prs_cap ? c->prs_cap * 2 : 16;
      persist_rec *q = malloc(cap * sizeof *q);
      QRAFT_ASSERTF(q != NULL, "out of memory for persist records");
      for (size_t i = 0; i < c->prs_n; i++) {
        q[i] = c->prs_q[(c->prs_start + i) % c->prs_cap];
      }
      free(c->prs_q);
      c->prs_q = q;
      c->prs_start = 0;
      c->prs_cap = cap;
    }
    persist_rec *r = &c->prs_q[(c->prs_start + c->prs_n) % c->prs_cap];
    c->prs_n++;
    r->id = c->persist_next++;
    r->has_log = has_log;
    r->index = last;
    r->term = log_last_term(c);
    if (u->entries_n == 0 && u->snapshot != NULL) {
      r->index = c->pending_snap.index;
      r->term = c->pending_snap.term;
    }
    r->hs_term = c->term;
    r->hs_vote = c->vote;
    u->persist_id = r->id;
  }
  u->must_sync = has_log || term_or_vote;

  /* 4. Messages: resolve entry ranges, drop those the log moved under. */
  size_t now_n = 0, after_n = 0;
  bool snap_meta_set = false;
  for (size_t i = 0; i < c->slots_n; i++) {
    msg_slot *s = &c->slots[i];
    qraft_message *m = &s->m;
    if (s->ents_n > 0) {
      uint64_t lastx = s->ents_first + s->ents_n - 1;
      if (s->ents_first <= c->snap_index || lastx > log_last_index(c) ||
          log_at(c, lastx)->term != s->ents_last_term) {
        c->messages_dropped++;
        continue;
      }
      m->entries = log_at(c, s->ents_first);
      m->entries_n = s->ents_n;
    } else if (s->fwd_n > 0) {
      m->entries = &c->fwd[s->fwd_first];
      m->entries_n = s->fwd_n;
    } else if (s->ctx_entry) {
      s->ctx_ent = (qraft_entry){.type = QRAFT_ENTRY_NORMAL,
                                 .data = {.data = s->ctx, .len = 8}};
      m->entries = &s->ctx_ent;
      m->entries_n = 1;
    }
    if (s->ctx_context) {
      m->context = (qraft_slice){.data = s->ctx, .len = s->ctx_len};
    }
    if (s->ctx_transfer) {
      m->context = (qraft_slice){.data = campaign_transfer_ctx,
                                 .len = CAMPAIGN_TRANSFER_LEN};
    }
    if (s->has_snapshot) {
      if (!snap_meta_set) {
        c->snap_msg.metadata.index = c->snap_index;
        c->snap_msg.metadata.term = c->snap_term;
        c->snap_msg.metadata.conf_state = c->snap_conf;
        c->snap_msg.data = (qraft_slice){0};
        snap_meta_set = true;
      }
      m->snapshot = &c->snap_msg;
    }
    if (s->after_persist) {
      c->out_after[after_n++] = *m;
    } else {
      c->out_now[now_n++] = *m;
    }
  }
  c->slots_n = 0;
  u->messages = c->out_now;
  u->messages_n = now_n;
  u->messages_after_persist = c->out_after;
  u->messages_after_persist_n = after_n;
  c->fwd_release_n = c->fwd_n; /* released at the next call */

  if (committed_n > 0) {
    u->committed = log_at(c, from);
    u->committed_n = committed_n;
  }
  if (c->conf_changed) {
    u->conf_changed = true;
    u->conf_state = &c->trk.conf;
    c->conf_changed = false;
  }
  u->read_states = c->read_states;
  u->read_states_n = c->read_states_n;
  c->read_states_n = 0;
}

/* --- views ------------------------------------------------------------------------ */

void qraft_core_status_get(const qraft_core *c, qraft_core_status *st) {
  st->id = c->id;
  st->role = c->role;
  st->leader = c->lead;
  st->term = c->term;
  st->vote = c->vote;
  st->commit = c->commit;
  st->applied = c->applied;
  st->persisted = c->persisted;
  QRAFT_ASSERT(c->applied_bytes <= c->ents_bytes);
  st->log_entries = c->ents_n;
  st->log_bytes = c->ents_bytes;
  st->log_applied_bytes = c->applied_bytes;
  st->first_index = c->snap_index + 1;
  st->last_index = log_last_index(c);
  st->snapshot_index = c->snap_index;
  st->snapshot_term = c->snap_term;
  st->lead_transferee = c->lead_transferee;
  st->messages_dropped = c->messages_dropped;
  st->election_timeouts = c->election_timeouts;
  memcpy(st->stepdowns, c->stepdowns, sizeof st->stepdowns);
}

void qraft_core_snapshot_meta(const qraft_core *c, qraft_snapshot_meta *out) {
  out->index = c->snap_index;
  out->term = c->snap_term;
  out->conf_state = c->snap_conf;
}

int qraft_core_bootstrap_entries(const qraft_conf_change *members, size_t n,
                                 qraft_entry *out, qraft_err *err) {
  if (n == 0 || n > QRAFT_CONF_NODES_MAX) {
    return QRAFT_ERR(err, QRAFT_ECONFIG, "bootstrap with %zu members", n);
  }
  bool voter = false;
  for (size_t i = 0; i < n; i++) {
    if (members[i].node_id == QRAFT_ID_NONE ||
        members[i].change_type == QRAFT_CONF_REMOVE_NODE) {
      return QRAFT_ERR(err, QRAFT_ECONFIG, "bootstrap member %zu: id %llu",
                       i, (unsigned long long)members[i].node_id);
    }
    for (size_t j = 0; j < i; j++) {
      if (members[j].node_id == members[i].node_id) {
        return QRAFT_ERR(err, QRAFT_ECONFIG, "bootstrap: node %llu twice",
                         (unsigned long long)members[i].node_id);
      }
    }
    voter = voter || members[i].change_type == QRAFT_CONF_ADD_NODE;
  }
  if (!voter) {
    return QRAFT_ERR(err, QRAFT_ECONFIG, "bootstrap without a voter");
  }
  /* Voters first: each entry is a single-step change, and the first one
   * must leave a voter in the configuration. */
  size_t k = 0;
  for (int pass = 0; pass < 2; pass++) {
    for (size_t i = 0; i < n; i++) {
      bool is_voter = members[i].change_type == QRAFT_CONF_ADD_NODE;
      if (is_voter != (pass == 0)) {
        continue;
      }
      size_t size = qraft_conf_change_size(&members[i]);
      qraft_buf *b = qraft_buf_new(size);
      if (b == NULL) {
        for (size_t j = 0; j < k; j++) {
          qraft_slice_release(&out[j].data);
        }
        return QRAFT_ERR(err, -ENOMEM, "bootstrap entries");
      }
      b->len = qraft_conf_change_encode(&members[i], b->data);
      out[k] = (qraft_entry){.type = QRAFT_ENTRY_CONF_CHANGE,
                             .term = 1,
                             .index = k + 1,
                             .data = {.data = b->data, .len = b->len,
                                      .owner = b}};
      k++;
    }
  }
  return 0;
}

const qraft_conf_state *qraft_core_conf_state(const qraft_core *c) {
  return &c->trk.conf;
}

int qraft_core_conf_at(const qraft_core *c, uint64_t index,
                       qraft_conf_state *out) {
  if (index < c->snap_index) {
    return QRAFT_ECOMPACTED;
  }
  if (index > c->applying && index > c->snap_index) {
    return QRAFT_EUNAVAILABLE;
  }
  *out = *core_conf_at(c, index);
  return 0;
}

size_t qraft_core_progress(const qraft_core *c, qraft_progress_info *out,
                           size_t max) {
  for (uint32_t i = 0; i < c->trk.progress_n && i < max; i++) {
    const progress *pr = &c->trk.prs[i];
    out[i] = (qraft_progress_info){.id = pr->id,
                                   .match = pr->match,
                                   .next = pr->next,
                                   .state = (int)pr->state,
                                   .is_learner = pr->is_learner,
                                   .recent_active = pr->recent_active,
                                   .inflight = pr->infl.count};
  }
  return c->trk.progress_n;
}

const qraft_entry *qraft_core_entry(const qraft_core *c, uint64_t index) {
  if (index <= c->snap_index || index > log_last_index(c)) {
    return NULL;
  }
  return log_at(c, index);
}

int qraft_core_term(const qraft_core *c, uint64_t index, uint64_t *term) {
  return log_term(c, index, term);
}
