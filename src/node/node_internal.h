/*
 * node_internal.h: the node's state, shared by the files of src/node/.
 * Internal.
 *
 * The node is the driver. It turns the core's updates into storage writes,
 * messages and state-machine applies, in the order the durability contract
 * of qraft/core.h requires, and serves the public API of qraft/node.h.
 * Everything runs on the node's loop thread, except the functions marked
 * "any thread", which only touch the request queue and the status copy
 * under `mu`.
 *
 * It must never: send a message of messages_after_persist before the write
 * of its update is durable (asserted), apply an entry the core did not hand
 * out, or compact the log past a durable snapshot or the state machine's
 * durable index.
 *
 * The files: node.c (lifecycle), addr.c (addresses), requests.c, loop.c
 * (the update loop), write.c (storage writes), apply.c, snapshot.c,
 * metrics.c.
 */
#ifndef QRAFT_NODE_INTERNAL_H
#define QRAFT_NODE_INTERNAL_H

#include <qraft/discovery.h>
#include <qraft/node.h>

#include <qraft/assert.h>
#include <qraft/histogram.h>
#include <qraft/wire.h>

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* --- requests from any thread --------------------------------------------- */

typedef enum req_kind {
  REQ_PROPOSE,
  REQ_READ,
  REQ_ADD_LEARNER,
  REQ_ADD_VOTER,
  REQ_PROMOTE,
  REQ_REMOVE,
  REQ_TRANSFER,
} req_kind;

typedef struct node_req {
  struct node_req *next;
  req_kind kind;
  qraft_buf *data;     /* propose */
  qraft_node_addr addr; /* add */
  qraft_id id;          /* promote, remove, transfer */
  qraft_propose_cb propose_cb;
  qraft_done_cb done_cb;
  void *ud;
  /* on the loop */
  uint64_t seq;      /* proposals and reads */
  uint64_t index;    /* conf changes: entry index; reads: read index */
  uint64_t deadline_ns;
  bool index_known;
  bool applied; /* a configuration change: applied, to complete */
  uint64_t tq_ns; /* proposals: qraft_node_propose was called */
  uint64_t t0_ns; /* taken by the loop */
} node_req;

/* The stages of a write, timed per proposal and exported as histograms
 * (docs/node.md, "Where the time of a write goes"): from the call to the
 * loop taking it, to its entry handed to the store (in the turn that also
 * sends it to the followers), to durable here, to committed (a quorum
 * acknowledged it), to applied, to the callback's return. */
enum {
  STAGE_QUEUED,   /* qraft_node_propose -> taken by the loop */
  STAGE_TO_WAL,   /* taken -> appended, sent and handed to the store */
  STAGE_WAL_SYNC, /* handed to the store -> durable here */
  STAGE_QUORUM,   /* durable here -> committed */
  STAGE_APPLY,    /* committed -> applied */
  STAGE_CALLBACK, /* applied -> the proposer's callback returned */
  STAGES
};

/* When each recent entry was handed to the store and became durable here,
 * by index (a slot holds the entry whose index it names). */
#define NODE_STAGE_RING 16384u
typedef struct stage_slot {
  uint64_t index;
  uint64_t submit_ns;
  uint64_t durable_ns;
} stage_slot;

/* --- storage writes ------------------------------------------------------- */

typedef struct node_write {
  qraft_storage_write w;
  qraft_node *node;
  qraft_entry *ents;
  size_t ents_n;
  qraft_hard_state hs;
  qraft_message *msgs; /* after persist, deep-copied */
  size_t msgs_n;
  qraft_buf **msg_bufs; /* payload copies of ownerless slices */
  size_t msg_bufs_n;
  uint64_t persist_id;
  uint64_t submit_ns;
  bool restore_after; /* a received snapshot: restore the state machine */
  uint64_t restore_index;
  uint64_t seq;             /* submission order */
  struct node_write *held_next; /* in the list of held writes (space.c) */
} node_write;

/* --- the node ------------------------------------------------------------- */

#define NODE_ADDRS_MAX (2 * QRAFT_CONF_NODES_MAX)
/* The node's header of a snapshot: taken here, or received from a leader
 * (a receiver rewrites the magic, so that a restart tells the two apart),
 * or a stateless one: the header alone, where a durable state machine with
 * views holds the state (the log compacted at its durable index; a peer
 * that needs the state gets it streamed from a view). */
#define NODE_SNAP_MAGIC 0x51524e53u           /* "QRNS" */
#define NODE_SNAP_MAGIC_RECEIVED 0x51524e52u  /* "QRNR" */
#define NODE_SNAP_MAGIC_STATELESS 0x51524e4cu /* "QRNL" */

typedef struct node_member {
  qraft_id id;
  qraft_node_addr addr;
  uint64_t refused_seen; /* the transport's count of its refusals of us */
  uint32_t alarms;        /* as its last message said (space.c) */
  uint64_t heard_ns;      /* when its last message came (0: never) */
} node_member;

typedef struct node_snap_report {
  qraft_id to;
  bool ok;
} node_snap_report;

struct qraft_node {
  qraft_node_config cfg;
  qraft_secret_key key;
  qraft_id id;
  qraft_logger *lg;

  qraft_env *env;
  bool own_env;
  pthread_t thread;
  bool thread_started;
  qraft_env_timer *tick_timer;
  qraft_env_timer *poll_timer;
  qraft_env_timer *snap_timer; /* the next step of a snapshot in steps */
  qraft_env_timer *restore_timer; /* the next step of a restore in steps */
  qraft_env_wake *wake;
  uint64_t tick_ns;
  uint64_t next_tick_ns;
  uint64_t ticked_ns;   /* when ticks were last counted */
  uint64_t leader_term; /* the term of the last leader we knew (metrics) */
  /* what the role log lines last said (loop.c, node_log_role) */
  qraft_role log_role;
  qraft_id log_leader;
  uint64_t log_stepdowns[QRAFT_STEPDOWN_REASONS];
  bool stalled;         /* ticks were missed since the tick timer last ran */

  qraft_storage *st;
  int st_fd;
  qraft_env_fd *st_watch; /* the loop watches st_fd (else the bridge does) */
  pthread_t bridge;
  bool bridge_started;
  int bridge_stop_fd;
  int bridge_go_fd; /* the loop polled the store: watch the fd again */
  atomic_bool bridge_waiting;

  qraft_endpoint *ep;
  struct qraft_discovery_file *disc_file; /* cfg.discovery_file */
  uint64_t disc_synced_ns;
  qraft_raft_net *net;
  qraft_core *core;

  /* requests: queued by any thread, taken by the loop */
  pthread_mutex_t mu;
  node_req *q_head;
  node_req *q_tail;
  uint32_t pending_proposals; /* queued or in flight */
  uint64_t pending_bytes;
  uint32_t pending_reads;
  bool accepting;
  bool stop_requested;
  bool stopped;
  qraft_node_status status; /* copy for qraft_node_status_get */

  /* loop-thread state */
  node_req *inflight; /* proposals, reads and changes waiting */
  uint64_t next_seq;
  node_member members[NODE_ADDRS_MAX];
  uint32_t members_n;
  qraft_conf_state conf;
  uint64_t refused_transfer_ns; /* node_check_refused's last transfer */
  uint64_t applied;
  uint64_t sm_index; /* the last index the state machine was told of */
  uint64_t snap_index;
  /* With a durable state machine: a snapshot taken here, installed in the
   * store (which drops the log up to it) only once the state machine's
   * durable index reaches it. */
  qraft_snapshot_writer *snap_pending;
  uint64_t snap_pending_index;
  bool snap_pending_stateless;
  /* A snapshot being taken in steps (qraft_sm_ops.snapshot_begin): the
   * state machine's view, the store writer, and its metadata. */
  void *snap_view;
  qraft_snapshot_writer *snap_steps_w;
  qraft_snapshot_meta snap_steps_meta;
  _Atomic uint64_t m_snap_steps;
  /* A received snapshot being restored in steps (qraft_sm_ops.
   * restore_begin): the state machine's context and the store's reader.
   * Committed entries the core hands out meanwhile wait in the backlog
   * (references to the core's log) and are applied after the last step. */
  void *restore_ctx;
  qraft_snapshot_reader *restore_r;
  qraft_entry *backlog;
  size_t backlog_n, backlog_cap;
  uint64_t backlog_bytes;
  _Atomic uint64_t m_restore_steps, m_restore_waited;
  uint64_t writes_inflight;
  bool fatal;
  int fatal_code; /* what it stopped on (qraft_node_status.stopped_on) */
  bool freeing; /* qraft_node_free: late write callbacks only free */
  bool started;
  bool installing; /* a received snapshot is being written */
  /* a received snapshot waiting for the core to install it */
  qraft_snapshot_writer *recv_writer;
  uint64_t recv_index, recv_term;
  /* drain under way; snapshot outcomes to tell the core after it */
  bool draining;
  node_snap_report snap_reports[NODE_ADDRS_MAX];
  uint32_t snap_reports_n;
  /* snapshots streaming in (the transport owns each until it ends) */
  struct node_recv_sink *recv_sinks;
  /* snapshots streaming out, and the bytes read for them */
  uint32_t snap_sends;
  _Atomic uint64_t m_snap_sent_bytes, m_snap_recv_bytes;
  _Atomic uint64_t m_snap_sends, m_snap_sends_done, m_snap_sends_failed;
  _Atomic uint64_t m_snap_recvs_aborted;
  uint64_t persist_last; /* last persist id acknowledged, for the contract */
  /* a hard state whose commit index alone moved, not yet written */
  qraft_hard_state hs_lazy;
  bool hs_lazy_set;
  node_write *last_write; /* newest write not yet durable */
  uint64_t write_seq;      /* the last write's node_write.seq */

  /* Out of space (space.c): writes the store failed with -ENOSPC or
   * -EDQUOT, and the ones after them, in submission order, submitted again
   * once none is in flight and the retry is due; committed entries the
   * state machine refused wait in the backlog (apply_blocked). */
  node_write *held_head, *held_tail;
  uint64_t held_n;
  uint64_t held_retry_ns, apply_retry_ns;
  uint32_t held_backoff_ms, apply_backoff_ms;
  bool apply_blocked;
  int apply_code; /* what the state machine last said */
  char *space_dir;    /* data_dir, watched against the reserve; or NULL */
  uint32_t space_why; /* SPACE_WHY_* reasons the alarm stands for */
  uint32_t alarms;    /* this member's QRAFT_ALARM_* bits */
  uint64_t space_next_check_ns;
  uint64_t space_free; /* of data_dir; UINT64_MAX: not checked */
  uint64_t snap_nospace_ns;   /* a snapshot found no room then, */
  uint64_t snap_nospace_free; /* with this much free in data_dir */
  uint64_t alarm_transfer_ns; /* last handover for an alarm */
  uint64_t beacon_next_ns;    /* the next alarm beacon (space.c) */
  bool beacon_clear;          /* one beacon to say the alarm cleared */
  bool app_alarm;             /* under mu: qraft_node_alarm_set */
  char app_why[128];          /* under mu */
  char alarm_why[160];
  _Atomic uint64_t m_alarms_raised, m_writes_held_total, m_apply_refused;
  _Atomic uint64_t m_appends_dropped_nospace, m_proposals_nospace;

  /* counters: the loop thread adds, any thread reads (atomics) */
  _Atomic uint64_t m_proposals, m_proposals_failed, m_reads,
      m_applied_entries;
  _Atomic uint64_t m_elections, m_snapshots_taken, m_snapshots_installed;
  /* of m_snapshots_taken, stateless; snapshots sent from a view */
  _Atomic uint64_t m_snapshots_stateless, m_snap_sends_from_view;
  _Atomic uint64_t m_writes, m_write_entries;
  _Atomic uint64_t m_messages_out, m_messages_in;
  _Atomic uint64_t m_leader_changes;
  /* the state machine's durable index as last read, and the starts that
   * restored it from a snapshot: one received (a crash during its
   * install), or one taken here (the state machine lost durable state) */
  _Atomic uint64_t m_sm_durable, m_sm_rebuilds_received, m_sm_rebuilds_lost;
  _Atomic uint64_t m_election_timeouts;
  _Atomic uint64_t m_stepdowns[QRAFT_STEPDOWN_REASONS];
  /* transport counters, copied on the loop for readers on any thread */
  qraft_histogram h_write_us;      /* storage write: submit to durable */
  qraft_histogram h_write_entries; /* entries per storage write */
  qraft_histogram h_commit_us;     /* proposal: taken by the loop to applied */
  qraft_histogram h_stall_us;      /* gaps between tick countings that
                                      missed a tick (a stall) */
  qraft_histogram h_apply_entries; /* entries per apply batch */
  qraft_histogram h_stage_us[STAGES]; /* a write's stages (under mu) */
  stage_slot *stage_ring;             /* loop thread */
  uint64_t commit_seen_ns; /* when the committed entries being applied
                              were taken from the core */
  qraft_endpoint_metrics m_ep;
  uint32_t m_peers_n;
  qraft_peer_metrics m_peers[NODE_ADDRS_MAX];
};

/* ---- functions shared between the files, by the file that has them ---- */

/* node.c */
void qraft__node_fail_all(qraft_node *n, int code);
void qraft__node_shutdown_on_loop(qraft_node *n);

/* addr.c */
int qraft__node_addr_decode(const uint8_t *p, size_t len, qraft_node_addr *a);
/* The most bytes qraft__node_addr_encode writes: the key, the direct
 * addresses (a count, then family, address, port each), and the relays (a
 * count, then key, family, address, port each). */
#define NODE_ADDR_ENC_MAX                                                      \
  (QRAFT_KEY_BYTES + 1 + QRAFT_NODE_ADDRS_MAX * 19 + 1 +                       \
   QRAFT_NODE_RELAYS_MAX * (QRAFT_KEY_BYTES + 19))
size_t qraft__node_addr_encode(const qraft_node_addr *a, uint8_t *out);
/* Counts within the limits and families IPv4 or IPv6: what the API takes. */
bool qraft__node_addr_valid(const qraft_node_addr *a);
/* The membership as a discovery provider (qraft/discovery.h): the address
 * the log carries for a key. */
int qraft__node_member_resolve(void *ud, const qraft_node_id *id,
                               qraft_node_addr *out);
bool qraft__node_conf_has(const qraft_conf_state *cs, qraft_id id);
void qraft__node_member_learn(qraft_node *n, const qraft_node_addr *a);
void qraft__node_learn_conf_entry(qraft_node *n, const qraft_entry *e);
void qraft__node_log_conf_entry(qraft_node *n, const qraft_entry *e);
void qraft__node_sync_peers(qraft_node *n);

/* requests.c */
void qraft__node_expire(qraft_node *n);
void qraft__node_inflight_remove(qraft_node *n, node_req *r);
void qraft__node_req_complete(qraft_node *n, node_req *r, int status,
                              qraft_slice result);
void qraft__node_take_requests(qraft_node *n);

/* loop.c */
bool qraft__node_authorize_cb(void *ud, const qraft_node_id *peer,
                              const char *alpn);
void *qraft__node_bridge_main(void *arg);
void qraft__node_clock(qraft_node *n);
void qraft__node_drain(qraft_node *n);
void qraft__node_snap_report(qraft_node *n, qraft_id to, bool ok);
void qraft__node_peer_cb(void *ud, qraft_id peer, bool reachable);
void qraft__node_publish_status(qraft_node *n);
void qraft__node_recv_cb(void *ud, qraft_id from, qraft_wire_batch *batch);
void qraft__node_snapshot_sent_cb(void *ud, qraft_id to, int status);
void qraft__node_tick_cb(void *ud);
bool qraft__node_unknown_sender_cb(void *ud, qraft_id sender,
                                   const qraft_node_id *key);
void qraft__node_wake_cb(void *ud);
void qraft__node_store_cb(void *ud);

/* write.c */
void qraft__node_kick_storage(qraft_node *n);
int qraft__node_msg_copy(qraft_message *dst, const qraft_message *src);
void qraft__node_poll_timer_cb(void *ud);
void qraft__node_send(qraft_node *n, const qraft_message *m);
void qraft__node_write_cb(qraft_storage_write *sw, int status);
void qraft__node_write_free(node_write *w);

/* apply.c */
size_t qraft__node_apply(qraft_node *n, const qraft_entry *es, size_t n_es);
void qraft__node_serve_reads(qraft_node *n);

/* space.c */
#define SPACE_WHY_RESERVE 1u  /* data_dir's free space below the reserve */
#define SPACE_WHY_WAL 2u      /* the store failed a write for lack of space */
#define SPACE_WHY_APPLY 4u    /* the state machine refused entries */
#define SPACE_WHY_SNAPSHOT 8u /* a snapshot found no room */
#define SPACE_WHY_APP 16u     /* qraft_node_alarm_set */
bool qraft__node_is_nospace(int code);
const char *qraft__node_dir_name(const qraft_node *n); /* for logs */
bool qraft__node_write_hold(qraft_node *n, node_write *w, int status);
void qraft__node_write_landed(qraft_node *n);
bool qraft__node_writes_held(const qraft_node *n);
void qraft__node_held_append(qraft_node *n, node_write *w);
void qraft__node_held_free(qraft_node *n);
void qraft__node_apply_refused(qraft_node *n, int code, uint64_t index);
void qraft__node_apply_backlog(qraft_node *n);
void qraft__node_snapshot_nospace(qraft_node *n, int code);
void qraft__node_snapshot_landed(qraft_node *n);
void qraft__node_space_tick(qraft_node *n);
void qraft__node_space_update(qraft_node *n);
void qraft__node_peer_alarms(qraft_node *n, qraft_id from, uint32_t alarms);
bool qraft__node_drop_for_space(qraft_node *n, const qraft_message *m);
int qraft__node_propose_space(qraft_node *n, bool leader);
uint32_t qraft__node_voters_in_alarm(qraft_node *n, bool *quorum);

/* snapshot.c */
void qraft__node_maybe_snapshot(qraft_node *n);
void qraft__node_send_snapshot(qraft_node *n, const qraft_message *m);
int qraft__node_snap_begin_cb(void *ud, qraft_id from, const qraft_message *m,
                              uint64_t bytes, qraft_raft_snapshot_sink *sink);
void qraft__node_snap_recv_cb(void *ud, qraft_id from, qraft_wire_batch *batch,
                              void *sink_ctx);
void qraft__node_snap_sinks_detach(qraft_node *n);
void qraft__node_snapshot_step_cb(void *ud);
void qraft__node_backlog_add(qraft_node *n, const qraft_entry *es,
                             size_t n_es);
int qraft__node_restore_received(qraft_node *n, qraft_err *err);
void qraft__node_restore_step_cb(void *ud);
void qraft__node_restore_abandon(qraft_node *n);
void qraft__node_snapshot_abandon(qraft_node *n);
uint32_t qraft__node_snap_recvs_active(const qraft_node *n);
int qraft__node_restore_from_store(qraft_node *n, bool restore, bool *received,
                                   qraft_err *err);
void qraft__node_submit_pending_snapshot(qraft_node *n);

#endif
