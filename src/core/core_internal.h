/*
 * core_internal.h: the core's state. Internal; no I/O.
 */
#ifndef QRAFT_CORE_INTERNAL_H
#define QRAFT_CORE_INTERNAL_H

#include "tracker.h"

#include <qraft/core.h>
#include <qraft/prng.h>

/* An outgoing message and what it needs until the update is taken. Append
 * messages name their entries by index range; the range is resolved when
 * the update is taken and dropped if the log changed under it. */
typedef struct msg_slot {
  qraft_message m;
  bool after_persist;
  uint64_t ents_first; /* 0: no log entries */
  uint32_t ents_n;
  uint64_t ents_last_term;
  bool has_snapshot;
  bool ctx_entry;   /* MsgReadIndex(Resp): 8-byte id as entries[0].data */
  bool ctx_context; /* heartbeat(resp): context of ctx_len bytes */
  bool ctx_transfer;
  uint8_t ctx_len;
  uint8_t ctx[16];
  qraft_entry ctx_ent;
  /* forwarded proposal: entries live in the core's forward arena */
  size_t fwd_first;
  size_t fwd_n;
} msg_slot;

/* A ReadIndex request waiting for its heartbeat quorum (thesis 6.4). */
typedef struct read_req {
  uint64_t id;
  qraft_id from; /* who asked: this node or a follower */
  uint64_t index;
  bool waiting_commit; /* leader has no entry committed in its term yet */
  bool acks[QRAFT__PROGRESS_MAX];
} read_req;

/* The writes of an update, until the driver says they are durable. */
typedef struct persist_rec {
  uint64_t id;
  bool has_log;
  uint64_t index; /* last index of the log when handed out */
  uint64_t term;  /* its term */
  uint64_t hs_term;
  qraft_id hs_vote;
} persist_rec;

typedef struct conf_record {
  uint64_t index;
  qraft_conf_state conf;
} conf_record;

struct qraft_core {
  qraft_core_config cfg;
  qraft_id id;

  /* persistent state (Figure 2) */
  uint64_t term;
  qraft_id vote;

  qraft_role role;
  qraft_id lead;
  qraft_prng prng;
  tracker trk;

  /* the log: entries (snap_index, snap_index + ents_n] */
  qraft_entry *ents;
  size_t ents_n;
  size_t ents_cap;
  uint64_t ents_bytes; /* payload + context + sizeof(qraft_entry) each */
  uint64_t applied_bytes; /* the same, of the entries up to `applied` */
  uint64_t snap_index;
  uint64_t snap_term;
  qraft_conf_state snap_conf;
  uint64_t commit;
  uint64_t applying; /* handed out to the driver */
  uint64_t applied;  /* reported applied by the driver */
  uint64_t persisted;
  uint64_t unstable_from;  /* first index not yet handed out to persist */
  uint64_t truncate_from;  /* pending truncation for the next update */
  bool snapshot_pending;   /* a received snapshot not yet durable */
  bool snapshot_handed;    /* ... already handed out in an update */
  qraft_snapshot_meta pending_snap;

  /* writes handed out and not yet durable, oldest first */
  persist_rec *prs_q;
  size_t prs_start;
  size_t prs_n;
  size_t prs_cap;
  uint64_t persist_next;
  uint64_t durable_term; /* hard state known durable */
  qraft_id durable_vote;
  bool leader_pending; /* single voter: leader once its vote is durable */
  bool removed_leader; /* leading only to hand over to a member */
  bool append_pending; /* proposals to broadcast when the update is taken */

  /* configuration history since the snapshot, for compaction */
  conf_record *confs;
  size_t confs_n;
  size_t confs_cap;

  /* timers, in ticks */
  uint32_t election_elapsed;
  uint32_t heartbeat_elapsed;
  uint32_t randomized_election_timeout;
  uint64_t ticks; /* ticks since creation: the leader lease's clock */

  /* leader */
  qraft_id lead_transferee;
  uint32_t transfer_elapsed;
  /* MsgTimeoutNow went out in this term: no lease reads until the term
   * ends (core_lease_valid) */
  bool lease_revoked;
#ifdef QRAFT_CANARY_LEASE_OLD_CONFIG
  /* planted bug: the voters the lease is counted on, fixed at election */
  qraft_id lease_voters[QRAFT_CONF_NODES_MAX];
  uint32_t lease_voters_n;
#endif
  uint64_t pending_conf_index;
  uint64_t uncommitted_bytes;

  /* ReadIndex */
  read_req *reads;
  size_t reads_start;
  size_t reads_n;

  /* outputs of the next update */
  msg_slot *slots;
  size_t slots_n;
  qraft_message *out_now;
  qraft_message *out_after;
  qraft_read_state *read_states;
  size_t read_states_n;
  qraft_entry *fwd; /* entries of forwarded proposals */
  size_t fwd_n;
  size_t fwd_cap;
  size_t fwd_release_n; /* entries of the previous update still referenced */
  qraft_snapshot snap_msg; /* metadata of MsgSnapshot messages */
  bool conf_changed;

  /* what the last update reported */
  qraft_hard_state prev_hs;
  qraft_role prev_role;
  qraft_id prev_lead;

  uint64_t messages_dropped;
  uint64_t bad_conf_entries;
  /* why leadership ended (qraft_core_status) */
  uint64_t election_timeouts;
  uint64_t stepdowns[QRAFT_STEPDOWN_REASONS];
  bool check_quorum_failed; /* set just before the step-down it causes */
};

#endif
