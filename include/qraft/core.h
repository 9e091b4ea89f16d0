/*
 * qraft/core.h: the Raft algorithm as a pure state machine.
 *
 * The core does no I/O: no syscalls, no clock, no threads, no global state,
 * no rand(). Time comes in as ticks, randomness from a PRNG seeded by the
 * config, and the world through events: tick, message received, propose,
 * read request, configuration change, leadership transfer, "persisted up to
 * (term, index)", "applied up to index", "compacted to index", snapshot
 * status and peer unreachable. After any events, the driver takes one update
 * (qraft_core_take_update) that says what to persist, what to send and what
 * to apply. The same events in the same order give the same updates.
 *
 * Semantics follow etcd's raft (the Raft paper and Ongaro's thesis): leader
 * election with randomized timeouts, pre-vote (thesis 9.6), check-quorum,
 * log replication with pipelining and per-peer inflight limits (probe,
 * replicate, snapshot), proposal forwarding, commitment only by counting
 * entries of the current term (paper 5.4.2), snapshots and compaction,
 * ReadIndex and lease reads (thesis 6.4), joint consensus and single-step
 * membership changes with learners (thesis 4), leadership transfer
 * (thesis 3.10), and step-down of a leader removed from the configuration.
 *
 * The log: the core keeps every entry after the last snapshot in memory (as
 * canonical/raft does), so no event ever waits on storage. Entry payloads are
 * reference-counted slices (qraft/buf.h): the core takes a reference when an
 * entry enters its log and drops it when the entry is compacted or truncated.
 *
 * THE DURABILITY CONTRACT. The driver must keep these rules; breaking one
 * can lose committed data or elect two leaders. (etcd raft's README, "Usage";
 * raft-rs's on_persist_ready.)
 *
 *  1. Persist in order. Apply each update's writes (snapshot, then
 *     truncation, then entries, then hard state) after every earlier
 *     update's writes; writes of one update may be one atomic batch.
 *  2. Messages in `messages` may be sent at once, before the update's writes
 *     are durable. They are a leader's appends, heartbeats, snapshots and
 *     transfer notices (a leader writes its own log in parallel with
 *     replication, thesis 10.2.1), and pre-votes, forwarded proposals and
 *     forwarded reads, which promise nothing.
 *  3. Messages in `messages_after_persist` may be sent only after this
 *     update's writes, and all earlier ones, are durable: vote requests (the
 *     candidate's own vote must survive a crash), vote responses, append
 *     and heartbeat responses (an acknowledged entry must survive a crash;
 *     a granted vote must never be granted twice).
 *  4. When the writes of an update are durable, call
 *     qraft_core_persisted(core, update.persist_id) (when persist_id != 0).
 *     The leader counts itself toward a commit quorum only through this
 *     call, and a single-voter candidate becomes leader only when its vote
 *     for itself is durable.
 *  5. Apply `committed` entries in order to the state machine. They are
 *     always durable locally. Configuration entries among them are applied
 *     by the core itself when the update is taken (`conf_changed`,
 *     `conf_state`); the driver applies only their side effects (addresses).
 *     Then call qraft_core_applied(core, last applied index).
 *  6. A `snapshot` in an update replaces the state machine and the log up to
 *     its index: install the snapshot data the driver received with the
 *     MsgSnapshot for that (term, index), durably, as part of rule 1.
 *  7. Never compact the log (qraft_core_compact) past a snapshot of the state
 *     machine that is durable and covers that index.
 *  8. A read state (index, id) may be answered once the state machine has
 *     applied at least `index`.
 *
 * The driver asserts these rules; the simulator checks that a driver that
 * breaks rule 3 is caught (the "ack before durable" canary).
 *
 * Ticks: the driver calls qraft_core_tick from a monotonic clock. After a
 * stall (a pause of the process, a blocked loop) it counts every tick it
 * missed with qraft_core_elapse before stepping anything else, then steps
 * the messages that arrived during the stall, then calls
 * qraft_core_check_timeouts.
 * Lease reads rely on the first part: a leader that does not see time pass
 * would trust a lease that has run out. Steadiness relies on the rest: a
 * decision about time (check-quorum, an election timeout) taken before the
 * messages that arrived in that time are read takes silence for failure.
 *
 * Threads: a core belongs to one thread. Nothing here is thread-safe.
 * Lifetimes: an update, and everything it points to, stays valid until the
 * next call of any qraft_core_* function on the same core.
 */
#ifndef QRAFT_CORE_H
#define QRAFT_CORE_H

#include <qraft/error.h>
#include <qraft/types.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define QRAFT_CORE_CONFIG_VERSION 1

/* How a leader serves ReadIndex requests (thesis 6.4). */
typedef enum qraft_read_only_option {
  /* Confirm leadership with a round of heartbeats for every read batch. */
  QRAFT_READ_ONLY_SAFE = 0,
  /* Trust the leader lease: no round trip, relies on bounded clock drift
   * (the leader's clock no more than (E - 1) / L slower than any voter's,
   * E = election_ticks, L = min(3E/4, E - 2): 28% for E = 10), on ticks
   * delivered from a monotonic clock and caught up after a stall, and on
   * every member using it (a member with lease reads refuses votes for an
   * election timeout after it starts). docs/core.md, "Leader leases".
   * Requires check_quorum and election_ticks >= 3. */
  QRAFT_READ_ONLY_LEASE_BASED = 1,
} qraft_read_only_option;

typedef enum qraft_role {
  QRAFT_ROLE_FOLLOWER = 0,
  QRAFT_ROLE_CANDIDATE = 1,
  QRAFT_ROLE_LEADER = 2,
  QRAFT_ROLE_PRE_CANDIDATE = 3,
} qraft_role;

/* "follower", "candidate", "leader", "pre-candidate". */
const char *qraft_role_name(qraft_role role);

typedef struct qraft_core_config {
  uint32_t version; /* QRAFT_CORE_CONFIG_VERSION */
  qraft_id id;      /* this node, != 0 */
  /* A follower that hears nothing from a leader for a random number of ticks
   * in [election_ticks, 2 * election_ticks) starts an election. Must be
   * greater than heartbeat_ticks. */
  uint32_t election_ticks;
  uint32_t heartbeat_ticks; /* leader heartbeat interval, >= 1 */
  uint64_t seed;            /* seeds the election-timeout randomness */
  bool pre_vote;            /* thesis 9.6 */
  bool check_quorum;        /* leader steps down without a live quorum */
  qraft_read_only_option read_only;
  bool disable_proposal_forwarding;
  /* Limits. 0 picks the default named in parentheses. */
  uint32_t inflight_msgs_max;      /* appends in flight per peer (256) */
  uint64_t append_bytes_max;       /* entry bytes per MsgAppend (1 MiB) */
  uint32_t append_entries_max;     /* entries per MsgAppend (1024) */
  uint64_t uncommitted_bytes_max;  /* leader's uncommitted payload (64 MiB) */
  uint64_t apply_bytes_max;        /* payload bytes in one update (16 MiB) */
  uint32_t messages_max;           /* messages per update (4096) */
  uint32_t read_states_max;        /* read states per update (4096) */
  uint32_t pending_reads_max;      /* ReadIndex requests waiting (4096) */
} qraft_core_config;

/* Fills `cfg` with defaults: election 10 ticks, heartbeat 1, pre_vote and
 * check_quorum on, safe reads, default limits. Caller sets id and seed. */
void qraft_core_config_default(qraft_core_config *cfg);

/*
 * Checks a config. Returns 0 on success, or one of these negative codes:
 *   QRAFT_ECONFIG  with a frame naming the bad field (version, id 0,
 *                  election_ticks not above heartbeat_ticks, heartbeat 0,
 *                  lease reads without check_quorum or with
 *                  election_ticks under 3, ...).
 */
int qraft_core_config_validate(const qraft_core_config *cfg, qraft_err *err);

/* What the core starts from: a new node (everything zero, conf_state with
 * the initial members for a bootstrapped cluster, or empty for a node that
 * will join), or the durable state of a restarting node. */
typedef struct qraft_core_restore {
  qraft_hard_state hard_state;
  qraft_snapshot_meta snapshot; /* index 0: no snapshot; conf_state is the
                                   configuration as of snapshot.index */
  const qraft_entry *entries;   /* the log after snapshot.index, contiguous */
  size_t entries_n;
  uint64_t applied; /* state machine's durable applied index (>= snapshot) */
} qraft_core_restore;

typedef struct qraft_read_state {
  uint64_t index; /* answer once applied >= index */
  uint64_t id;    /* the request id given to qraft_core_read_index */
} qraft_read_state;

typedef struct qraft_update {
  /* Role and leader, if they changed since the last update. */
  bool soft_state_changed;
  qraft_role role;
  qraft_id leader;

  /* Durable state to write (rule 1). */
  bool hard_state_changed;
  qraft_hard_state hard_state;
  const qraft_snapshot_meta *snapshot; /* install (rule 6); NULL: none */
  uint64_t truncate_from; /* 0: none; else drop entries >= this index */
  const qraft_entry *entries; /* append after the truncation point */
  size_t entries_n;
  /* After the writes above are durable: qraft_core_persisted(persist_id).
   * 0 when the update has nothing to write. Ids increase by one per update
   * with writes; acknowledging an id acknowledges every earlier one. */
  uint64_t persist_id;
  /* True if the writes must be durable before qraft_core_persisted and
   * messages_after_persist: entries, a snapshot, a truncation, a new term
   * or vote. False for a hard state whose commit index alone moved (etcd
   * raft's MustSync): the commit index is volatile state (a restarted node
   * learns it again from the leader), so the driver may write it lazily,
   * with the next write it syncs anyway, and report persist_id at once
   * (in order with the ids before it). */
  bool must_sync;

  const qraft_message *messages; /* rule 2 */
  size_t messages_n;
  const qraft_message *messages_after_persist; /* rule 3 */
  size_t messages_after_persist_n;

  const qraft_entry *committed; /* rule 5 */
  size_t committed_n;
  bool conf_changed;
  /* The configuration after this update's committed entries (or installed
   * snapshot), when conf_changed; NULL otherwise. */
  const qraft_conf_state *conf_state;

  const qraft_read_state *read_states; /* rule 8 */
  size_t read_states_n;
} qraft_update;

typedef struct qraft_core qraft_core;

/*
 * Creates a core. The core copies what it needs from `cfg` and `restore`
 * (entry payload slices are referenced, not copied).
 * Returns 0 on success, or one of these negative codes:
 *   QRAFT_ECONFIG  invalid config;
 *   QRAFT_ECORRUPT the restore state is inconsistent (entries not contiguous
 *                  after the snapshot, commit beyond the log, ...);
 *   -ENOMEM.
 */
int qraft_core_new(const qraft_core_config *cfg,
                   const qraft_core_restore *restore, qraft_core **out,
                   qraft_err *err);

/* Frees the core and drops its references to entry payloads. */
void qraft_core_free(qraft_core *core);

/* One logical clock tick, then the decisions that are due: a heartbeat,
 * check-quorum (a leader), an election timeout (a follower or candidate).
 * The same as qraft_core_elapse(core, 1) then
 * qraft_core_check_timeouts(core). */
void qraft_core_tick(qraft_core *core);

/*
 * `ticks` ticks went by (0 does nothing). Counts them, for the lease and
 * every timer, and sends a heartbeat or abandons a transfer if one is due,
 * but leaves the decisions that depend on what arrived meanwhile,
 * check-quorum and the election timeout, to qraft_core_check_timeouts.
 *
 * For a stall (the process was descheduled, the loop blocked): the driver
 * counts the missed ticks with this before it steps anything else (lease
 * reads need the time), then steps every message that arrived during the
 * stall (they were sent in that time), then calls
 * qraft_core_check_timeouts. So a leader whose quorum answered while it was
 * stalled does not step down, and a follower whose leader's heartbeats
 * waited in its socket does not campaign.
 */
void qraft_core_elapse(qraft_core *core, uint64_t ticks);

/* Takes the decisions due by the ticks counted so far: check-quorum (a
 * leader that has not heard from a quorum within an election timeout steps
 * down) and the election timeout (a follower or candidate campaigns). */
void qraft_core_check_timeouts(qraft_core *core);

/* Starts an election now (as if the election timeout fired). */
void qraft_core_campaign(qraft_core *core);

/*
 * Steps a message received from a peer. The core copies what it keeps
 * (entries are referenced). Messages from stale terms or in the wrong state
 * are ignored as Raft requires.
 * Returns 0 on success, or one of these negative codes:
 *   QRAFT_EMALFORMED a local-only message type (MsgHup, MsgBeat, ...), or
 *                    entries that are not contiguous;
 *   QRAFT_EUNKNOWN_NODE a response from a node that is not in the
 *                    configuration (ignored).
 */
int qraft_core_step(qraft_core *core, const qraft_message *msg);

/*
 * Proposes normal entries (type, data, context are used; term and index are
 * assigned). On the leader, *first_index (if not NULL) receives the index of
 * the first entry and *term its term; a follower forwards the proposal to the
 * leader and leaves them 0.
 * Returns 0 on success, or one of these negative codes:
 *   QRAFT_ENOTLEADER        no known leader, or forwarding is disabled;
 *   QRAFT_EPROPOSAL_DROPPED a leadership transfer is in progress, or the
 *                           uncommitted-bytes limit is reached;
 *   QRAFT_ELIMIT            more entries than append_entries_max.
 */
int qraft_core_propose(qraft_core *core, const qraft_entry *entries, size_t n,
                       uint64_t *first_index, uint64_t *term);

/*
 * Proposes a configuration change (leader only). Transition AUTO with one
 * change is a single-step change; several changes, or transition
 * IMPLICIT/EXPLICIT, enter a joint configuration (thesis 4.3), which is left
 * automatically (AUTO, IMPLICIT) or by proposing an empty change (EXPLICIT).
 * Returns 0 on success, or one of these negative codes:
 *   QRAFT_ENOTLEADER     not the leader;
 *   QRAFT_ECONF_PENDING  an earlier change is not yet applied;
 *   QRAFT_ECONFIG        the change is invalid for the current configuration
 *                        (e.g. leaving a joint configuration that is not
 *                        joint, removing every voter);
 *   QRAFT_EPROPOSAL_DROPPED as for qraft_core_propose; -ENOMEM.
 */
int qraft_core_propose_conf_change(qraft_core *core,
                                   const qraft_conf_change_v2 *cc,
                                   uint64_t *index, qraft_err *err);

/*
 * Requests a linearizable read. A read state (index, id) comes out in a later
 * update once leadership is confirmed (or at once under a valid lease).
 * Returns 0 on success, or one of these negative codes:
 *   QRAFT_ENOTLEADER  no leader known (or forwarding disabled on a follower);
 *   QRAFT_EUNAVAILABLE the leader has not committed an entry in its term yet;
 *   QRAFT_EBUSY       pending_reads_max requests are already waiting.
 */
int qraft_core_read_index(qraft_core *core, uint64_t id);

/* Asks the leader to hand leadership to `to` (thesis 3.10). On a follower
 * the request is forwarded. Returns 0, QRAFT_ENOTLEADER or
 * QRAFT_EUNKNOWN_NODE. */
int qraft_core_transfer_leader(qraft_core *core, qraft_id to);

/* The writes of the update with `persist_id`, and of every earlier one, are
 * durable (rule 4). Log entries replaced since they were handed out are not
 * counted. An id that was never handed out is an assertion failure. */
void qraft_core_persisted(qraft_core *core, uint64_t persist_id);

/* The state machine has applied every committed entry up to `index`. */
void qraft_core_applied(qraft_core *core, uint64_t index);

/*
 * A durable snapshot of the state machine covers the log up to `index`
 * (<= applied): the core drops entries up to `index` and sends this snapshot
 * to followers that need older entries.
 * Returns 0 on success, or one of these negative codes:
 *   QRAFT_ECOMPACTED  index is at or below the current snapshot;
 *   QRAFT_EUNAVAILABLE index is above the applied index.
 */
int qraft_core_compact(qraft_core *core, uint64_t index);

/* The snapshot sent to `to` arrived (ok) or failed. */
void qraft_core_report_snapshot(qraft_core *core, qraft_id to, bool ok);

/* The transport could not reach `to`; the leader pauses optimistic
 * replication to it. */
void qraft_core_report_unreachable(qraft_core *core, qraft_id to);

/* True if an update has something in it. */
bool qraft_core_has_update(const qraft_core *core);

/* Takes everything pending into *u (see the contract above). */
void qraft_core_take_update(qraft_core *core, qraft_update *u);

/* Read-only views, valid until the next call on the core. */
/* Why a leader stopped leading (qraft_core_status.stepdowns). */
typedef enum qraft_stepdown_reason {
  QRAFT_STEPDOWN_CHECK_QUORUM = 0, /* no quorum heard within an election
                                      timeout */
  QRAFT_STEPDOWN_HIGHER_TERM = 1,  /* another member's election */
  QRAFT_STEPDOWN_TRANSFER = 2,     /* it handed leadership over */
  QRAFT_STEPDOWN_REMOVED = 3,      /* it was removed from the configuration */
  QRAFT_STEPDOWN_REASONS = 4,
} qraft_stepdown_reason;

/* "check_quorum", "higher_term", "transfer", "removed". */
const char *qraft_stepdown_reason_name(qraft_stepdown_reason r);

typedef struct qraft_core_status {
  qraft_id id;
  qraft_role role;
  qraft_id leader;
  uint64_t term;
  qraft_id vote;
  uint64_t commit;
  uint64_t applied;
  uint64_t persisted;
  uint64_t first_index;
  uint64_t last_index;
  uint64_t snapshot_index;
  uint64_t snapshot_term;
  /* The log the core holds in memory (first_index..last_index): entries and
   * their bytes (payload and context, plus sizeof(qraft_entry) each). */
  uint64_t log_entries;
  uint64_t log_bytes;
  uint64_t log_applied_bytes; /* of those, the entries up to `applied` */
  qraft_id lead_transferee;
  uint64_t messages_dropped; /* over messages_max since creation */
  /* since creation: campaigns its election timeout started, and the times
   * it stopped leading, by reason */
  uint64_t election_timeouts;
  uint64_t stepdowns[QRAFT_STEPDOWN_REASONS];
} qraft_core_status;

void qraft_core_status_get(const qraft_core *core, qraft_core_status *st);

/* The metadata of the current snapshot (index 0: none). */
void qraft_core_snapshot_meta(const qraft_core *core, qraft_snapshot_meta *out);

/*
 * Builds the log that bootstraps a new cluster, as etcd's Bootstrap does:
 * one EntryConfChange per member (AddNode or AddLearnerNode; the context
 * carries whatever the driver puts there, e.g. addresses), term 1, indexes
 * 1..n. Every founding member must start from the same entries, persisted
 * before qraft_core_new, with hard state {term 1, vote 0, commit n} and
 * applied 0. Each out[i].data gets a new buffer: drop it with
 * qraft_slice_release when done.
 * Returns 0 on success, or one of these negative codes:
 *   QRAFT_ECONFIG  no members, a member id 0, a duplicate, a remove, or no
 *                  voter; -ENOMEM.
 */
int qraft_core_bootstrap_entries(const qraft_conf_change *members, size_t n,
                                 qraft_entry *out, qraft_err *err);

/* The current configuration. */
const qraft_conf_state *qraft_core_conf_state(const qraft_core *core);

/* The configuration as of `index` (the configuration entries up to it that
 * were handed out to apply), for a snapshot's metadata: 0 on success,
 * QRAFT_ECOMPACTED (below the snapshot) or QRAFT_EUNAVAILABLE (beyond what
 * was handed out to apply). */
int qraft_core_conf_at(const qraft_core *core, uint64_t index,
                       qraft_conf_state *out);

/* Replication progress of a peer, as the leader sees it. */
typedef struct qraft_progress_info {
  qraft_id id;
  uint64_t match;
  uint64_t next;
  int state; /* 0 probe, 1 replicate, 2 snapshot */
  bool is_learner;
  bool recent_active;
  uint32_t inflight;
} qraft_progress_info;

/* Writes up to `max` progress records; returns how many peers there are. */
size_t qraft_core_progress(const qraft_core *core, qraft_progress_info *out,
                           size_t max);

/* The log entry at `index`, or NULL if it is not in memory. */
const qraft_entry *qraft_core_entry(const qraft_core *core, uint64_t index);

/* The term of the entry at `index`: 0 on success, QRAFT_ECOMPACTED or
 * QRAFT_EUNAVAILABLE. */
int qraft_core_term(const qraft_core *core, uint64_t index, uint64_t *term);

/*
 * eraftpb encodings of configuration changes, used in the data of
 * EntryConfChange / EntryConfChangeV2 entries.
 * *_size returns the exact encoded size; *_encode writes it to `out`
 * (room for that size) and returns bytes written.
 * *_decode returns 0, or QRAFT_EMALFORMED / QRAFT_ETRUNCATED / QRAFT_ELIMIT
 * with context. Decoded context slices point into `data` (no owner).
 */
size_t qraft_conf_change_v2_size(const qraft_conf_change_v2 *cc);
size_t qraft_conf_change_v2_encode(const qraft_conf_change_v2 *cc,
                                   uint8_t *out);
int qraft_conf_change_v2_decode(const uint8_t *data, size_t len,
                                qraft_conf_change_v2 *cc, qraft_err *err);
int qraft_conf_change_decode(const uint8_t *data, size_t len,
                             qraft_conf_change *cc, qraft_err *err);
size_t qraft_conf_change_size(const qraft_conf_change *cc);
size_t qraft_conf_change_encode(const qraft_conf_change *cc, uint8_t *out);
/* A v1 ConfChange as the equivalent ConfChangeV2 (one change, AUTO). */
void qraft_conf_change_to_v2(const qraft_conf_change *cc,
                             qraft_conf_change_v2 *out);

/* Decodes the data of a configuration entry (EntryConfChange or
 * EntryConfChangeV2) as a ConfChangeV2. Returns 0, QRAFT_EMALFORMED (also
 * for a normal entry), QRAFT_ETRUNCATED or QRAFT_ELIMIT. */
int qraft_conf_change_entry_decode(const qraft_entry *e,
                                   qraft_conf_change_v2 *cc, qraft_err *err);

#ifdef __cplusplus
}
#endif
#endif
