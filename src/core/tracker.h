/*
 * tracker.h: configurations, quorums, per-peer replication progress and
 * configuration changes. Internal to the core; no I/O.
 *
 * A configuration is a qraft_conf_state: `voters` is the incoming majority
 * configuration, `voters_outgoing` the outgoing one (non-empty only in a
 * joint configuration, thesis 4.3), learners and learners_next as in etcd:
 * a voter demoted to learner while it is still an outgoing voter waits in
 * learners_next until the joint configuration is left.
 */
#ifndef QRAFT_CORE_TRACKER_H
#define QRAFT_CORE_TRACKER_H

#include <qraft/core.h>

/* Most peers tracked at once (the union of all lists of a configuration). */
#define QRAFT__PROGRESS_MAX (2 * QRAFT_CONF_NODES_MAX)

typedef enum progress_state {
  PROGRESS_PROBE = 0,
  PROGRESS_REPLICATE = 1,
  PROGRESS_SNAPSHOT = 2,
} progress_state;

typedef enum vote_result {
  VOTE_PENDING = 0,
  VOTE_LOST = 1,
  VOTE_WON = 2,
} vote_result;

/* A ring of the last indexes of appends in flight to one peer. */
typedef struct inflights {
  uint32_t start;
  uint32_t count;
  uint32_t cap;
  uint64_t *index; /* cap slots, owned by the tracker */
} inflights;

typedef struct progress {
  qraft_id id;
  uint64_t match;
  uint64_t next;
  progress_state state;
  uint64_t pending_snapshot;
  bool recent_active;
  bool probe_sent; /* probe: an append is out, wait for an answer */
  bool is_learner;
  int8_t vote;     /* -1 none, 0 rejected, 1 granted */
  uint64_t lease_tick; /* send tick of the newest heartbeat it answered */
  inflights infl;
} progress;

typedef struct tracker {
  qraft_conf_state conf;
  uint32_t progress_n;
  progress prs[QRAFT__PROGRESS_MAX];
  uint32_t inflight_max;
  uint64_t *infl_mem; /* QRAFT__PROGRESS_MAX * inflight_max slots */
} tracker;

int qraft__tracker_init(tracker *t, uint32_t inflight_max);
void qraft__tracker_close(tracker *t);

progress *qraft__tracker_get(tracker *t, qraft_id id);
bool qraft__tracker_is_voter(const tracker *t, qraft_id id);
bool qraft__tracker_is_joint(const tracker *t);
/* True if id is a voter of a single-voter configuration that is only it. */
bool qraft__tracker_is_singleton(const tracker *t);

/* The largest index committed by the configuration's quorum(s) given the
 * match indexes of the progress records. */
uint64_t qraft__tracker_committed(const tracker *t);
/* Election tally over the recorded votes. */
vote_result qraft__tracker_tally(const tracker *t, uint32_t *granted,
                                 uint32_t *rejected);
void qraft__tracker_reset_votes(tracker *t);
/* True if the voters marked recent_active form a quorum. */
bool qraft__tracker_quorum_active(const tracker *t);
/* Quorum check over an arbitrary predicate set of ids (for ReadIndex acks):
 * acks[i] refers to prs[i]. */
vote_result qraft__tracker_quorum_of(const tracker *t, const bool *acks);

/* Replaces the configuration wholesale (restore from a snapshot or on
 * start); progress records are created with next = next_index. */
int qraft__tracker_reset_conf(tracker *t, const qraft_conf_state *cs,
                              uint64_t next_index);

/* Applies a configuration change (etcd's confchange.Changer). Returns 0, or
 * QRAFT_ECONFIG with context (the configuration is unchanged then). */
int qraft__tracker_apply_change(tracker *t, const qraft_conf_change_v2 *cc,
                                uint64_t last_index, qraft_err *err);
/* Would `cc` be valid now? Same checks as apply, without changing anything. */
int qraft__tracker_check_change(const tracker *t, const qraft_conf_change_v2 *cc,
                                qraft_err *err);

/* Progress state machine (etcd's progress.go). */
void qraft__progress_become_probe(progress *pr);
void qraft__progress_become_replicate(progress *pr);
void qraft__progress_become_snapshot(progress *pr, uint64_t snapshot_index);
bool qraft__progress_maybe_update(progress *pr, uint64_t n);
bool qraft__progress_maybe_decr_to(progress *pr, uint64_t rejected,
                                   uint64_t match_hint);
bool qraft__progress_is_paused(const progress *pr);
void qraft__progress_sent_entries(progress *pr, uint64_t last_sent,
                                  size_t entries_n);
void qraft__inflights_free_le(inflights *in, uint64_t index);
bool qraft__inflights_full(const inflights *in);
void qraft__inflights_free_first(inflights *in);

#endif
