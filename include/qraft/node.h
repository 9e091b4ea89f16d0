/*
 * qraft/node.h: a Raft node, the runtime that joins the core, the storage,
 * the transport and the user's state machine.
 *
 * A node owns one Raft core (qraft/core.h), one store (qraft/storage.h,
 * the write-ahead log by default), one QUIC endpoint with the Raft protocol
 * handler (qraft/transport.h), and drives the user's state machine. It runs
 * on an env (qraft/env.h): by default a libuv loop on a thread of its own
 * (plus the WAL's writer thread); in tests and simulations, an env the
 * caller runs.
 *
 * Identity: a node is named by its Ed25519 key. Its Raft id (the u64 of
 * the eraftpb schema) is derived from the key: the first 8 bytes of the
 * public key, big-endian (qraft_node_raft_id). Members learn each other's
 * addresses from the configuration entries of the log: every configuration
 * change carries the node address (key and direct UDP addresses) of the
 * node it adds, so a member needs no other directory, and the transport
 * admits exactly the members and the nodes being added.
 *
 * Threads. Every qraft_node_* function may be called from any thread unless
 * it says otherwise; calls hand their work to the loop thread and return.
 * Completion callbacks run on the loop thread, must not block, and may call
 * qraft_node_* functions (but not qraft_node_stop or qraft_node_free).
 * State machine callbacks run on the loop thread too.
 *
 * Writes: qraft_node_propose hands `data` to Raft; the callback runs once,
 * after the entry is applied to the local state machine (with the state
 * machine's result), or with an error. Refused at once, never in the log:
 * QRAFT_ENOTLEADER (no leader known, or forwarding is off),
 * QRAFT_EPROPOSAL_DROPPED (a leadership transfer is under way, or the
 * uncommitted limit is reached), QRAFT_EBUSY (back-pressure: more pending
 * proposals or bytes than configured). Outcome unknown: QRAFT_EDROPPED (not
 * applied here within proposal_timeout_ms, e.g. lost in a leader change: it
 * may or may not have been committed), QRAFT_ESHUTDOWN (the node stopped
 * first).
 *
 * Reads: qraft_node_read_barrier completes once the local state machine
 * has applied everything committed when the read was asked, confirmed by a
 * quorum (ReadIndex, thesis 6.4) or under the leader lease when
 * configured. Read the state machine from the callback: that read is
 * linearizable.
 */
#ifndef QRAFT_NODE_H
#define QRAFT_NODE_H

#include <qraft/buf.h>
#include <qraft/core.h>
#include <qraft/env.h>
#include <qraft/error.h>
#include <qraft/log.h>
#include <qraft/storage.h>
#include <qraft/transport.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define QRAFT_NODE_CONFIG_VERSION 2

typedef struct qraft_node qraft_node;

/* The Raft id of a node key: its first 8 bytes, big-endian (never 0: a key
 * whose first 8 bytes are 0 maps to 1). */
qraft_id qraft_node_raft_id(const qraft_node_id *key);

/* ---- The state machine ---- */

/* Streams a snapshot out: call it with successive chunks. Returns 0 or a
 * negative code (stop and return it). */
typedef int (*qraft_sm_write_fn)(void *wctx, const void *data, size_t len);
/* Streams a snapshot in: fills buf with up to cap bytes, *n 0 at the end. */
typedef int (*qraft_sm_read_fn)(void *rctx, void *buf, size_t cap, size_t *n);

/*
 * The state machine. Its callbacks run on the node's loop thread and must
 * not block: no waiting for a disk, a lock held long, or the network.
 *
 * Durability. A state machine may keep nothing across a restart (the node
 * then restores it from its latest snapshot at every start and re-applies
 * the log after it), or keep its state durably itself (a database), and
 * say how far with `durable_index`. The durable-index contract:
 *
 *  - Applying need not make anything durable: the entries are durable in
 *    the log of a quorum before they are applied, and a client is answered
 *    once its entry is applied (visible to reads). The state machine makes
 *    its state durable when it chooses (grouped, on a thread of its own, on
 *    a timer) and reports the index it is durable at.
 *  - The node keeps every log entry after that index: a snapshot it takes
 *    at index T goes to the store, which drops the log up to T, only once
 *    durable_index() >= T. So the durable index must keep moving on its
 *    own (a timer, a size threshold), also when no new entries come, or
 *    the log is never compacted.
 *  - On start, qraft_node_new calls durable_index() once (open the state
 *    first): from D there, the node re-applies the log from D + 1 and
 *    never calls restore, unless the store's snapshot is above D, which
 *    happens when a crash interrupted the install of a snapshot received
 *    from the leader (restore then replaces the state, as always). A
 *    snapshot taken here above D means the state machine lost state it had
 *    reported durable: the node restores it from the snapshot, logs an
 *    error and counts it (qraft_node_status.sm_rebuilds_lost), or, if that
 *    snapshot is stateless (below), refuses to start (QRAFT_ECORRUPT: the
 *    member's data must be removed and the member added again). D beyond
 *    the log is refused (QRAFT_ECORRUPT): that state belongs to another
 *    log.
 *  - Stateless snapshots: a durable state machine that also has
 *    snapshot_begin/step/end is never asked to write its state to compact
 *    the log. A snapshot taken here is the node's header alone (members'
 *    addresses, index, term, configuration), at an index below the applied
 *    one by half of what triggers a snapshot (so a follower a little behind
 *    still gets entries), landing once D reaches it. A peer that needs the
 *    state gets it streamed from a view (snapshot_begin at the applied
 *    index, steps of snapshot_chunk_bytes as the connection's window opens,
 *    snapshot_end when the transfer ends whichever way), as a snapshot of
 *    that index. So a view may stay open for as long as a transfer takes,
 *    several at once (one per peer), while entries are applied.
 *  - restore must make the new state durable before it returns
 *    (durable_index() >= index afterwards).
 *
 * examples/kv/store.c keeps its state in LMDB, applies into memory on the
 * loop thread and commits to LMDB with a sync on a thread of its own;
 * examples/sim_counter keeps nothing.
 */
typedef struct qraft_sm_ops {
  /*
   * Applies `n` committed normal entries in log order. For each, write the
   * result the proposer's callback gets into results[i] (an empty slice is
   * fine; a slice with an owner hands the node a reference it drops after
   * the callback). Configuration entries and a new leader's empty entries
   * are applied by the node and never passed here, but their index counts:
   * `last_index` is the index of the last entry handled by this call,
   * applied or not, to store with the state if the state machine is
   * durable. `n` is 0 (and `entries`, `results` NULL) when the entries up
   * to `last_index` carried nothing for the state machine.
   *
   * Returns 0 once all `n` are applied, or a negative code (-ENOSPC,
   * -EDQUOT, ...) when it cannot take them now and applied none of them:
   * the call is all or nothing. The node then applies nothing more and
   * calls again with the same entries (and the ones committed since) until
   * it returns 0, never skipping one: a second later, then less often, up
   * to every second. Meanwhile the node raises QRAFT_ALARM_NOSPACE when
   * the code says so (-ENOSPC, -EDQUOT), keeps its log, votes and
   * acknowledges appends; reads wait for what they must see. A failed call
   * with `n` 0 (only the index moved) is not repeated: the next call
   * carries a later `last_index`.
   */
  int (*apply)(void *ud, const qraft_entry *entries, size_t n,
               uint64_t last_index, qraft_slice *results);
  /* Writes the whole state with `write`, as of the index it has applied,
   * returned in *index. Returns 0 or a negative code. */
  int (*snapshot)(void *ud, uint64_t *index, qraft_sm_write_fn write,
                  void *wctx);
  /* Replaces the whole state with the snapshot read with `read`, which is
   * the state as of `index`. Returns 0 or a negative code. */
  int (*restore)(void *ud, uint64_t index, qraft_sm_read_fn read, void *rctx);
  /* Optional (NULL: the state machine keeps nothing across a restart): the
   * index its state is durable at, by the contract above. Must not block. */
  uint64_t (*durable_index)(void *ud);
  /*
   * Optional, all three or none: a snapshot taken in steps, so that the
   * loop goes on (heartbeats, appends, applies) while a large state is
   * written. With them the node calls these instead of `snapshot` (which
   * is still required: it writes the same bytes in one call).
   *  - snapshot_begin captures a consistent view of the state as of what
   *    it has applied (its index in *index) and returns it in *view;
   *    entries applied afterwards must not show in the view (an MVCC read
   *    transaction and a copy of what is not in it, a copy-on-write fork).
   *  - snapshot_step writes the view's next part, about `budget` bytes,
   *    with `write`; returns 1 while more remains, 0 once the whole view
   *    was written (the same bytes `snapshot` would write), or a negative
   *    code. Entries are applied, and restore may run, between two steps.
   *  - snapshot_end releases the view: after the last step, after an
   *    error, or when the node abandons the snapshot (a received one is
   *    installed first, the node stops).
   */
  int (*snapshot_begin)(void *ud, uint64_t *index, void **view);
  int (*snapshot_step)(void *ud, void *view, size_t budget,
                       qraft_sm_write_fn write, void *wctx);
  void (*snapshot_end)(void *ud, void *view);
  /*
   * Optional, all three or none: a snapshot received from a leader is
   * restored in steps, so that the loop goes on (heartbeats, votes, appends
   * to the log) while a large state is read in. With them the node calls
   * these for received snapshots instead of `restore` (still required: a
   * start that restores from the store calls it, before the loop runs).
   *  - restore_begin prepares to replace the state with the snapshot of
   *    `index` and returns its context in *ctx.
   *  - restore_step reads about `budget` bytes more with `read` and puts
   *    them in; returns 1 while more remains, 0 once the whole snapshot was
   *    read and the new state is in place (durable, as `restore` leaves
   *    it), or a negative code (the node stops, as after `restore`).
   *    Between two steps the node applies nothing and calls nothing else
   *    of the state machine; reads wait until the last step.
   *  - restore_end releases the context: after the last step, after an
   *    error, or when the node abandons the restore (a newer snapshot
   *    arrives, the node stops). An abandoned restore may leave a partial
   *    state, provided its durable index is then below `index` (a restart
   *    restores again); the node restores a newer snapshot before it
   *    applies anything.
   */
  int (*restore_begin)(void *ud, uint64_t index, void **ctx);
  int (*restore_step)(void *ud, void *ctx, size_t budget,
                      qraft_sm_read_fn read, void *rctx);
  void (*restore_end)(void *ud, void *ctx);
} qraft_sm_ops;

/* ---- Configuration ---- */

typedef struct qraft_node_config {
  uint32_t version; /* QRAFT_NODE_CONFIG_VERSION */
  /* Where the write-ahead log lives (created if missing), or a store the
   * node takes over (ownership passes on success). One of the two. */
  const char *data_dir;
  qraft_storage *storage;
  /* With `storage`: the caller keeps it (the node does not close it), so a
   * test can restart a node on the same in-memory store. */
  bool storage_borrowed;
  const qraft_secret_key *key; /* required; copied */
  uint64_t cluster_id;         /* required, not 0; peers of another cluster
                                  are refused */
  uint32_t bind_n;             /* UDP addresses for Raft traffic, at least 1 */
  struct sockaddr_storage bind[2];
  /* Home relays (qraft-relay servers): the node stays connected to them,
   * its address (as configuration changes carry it) names them, and it
   * reaches through them the members it has no direct path to. None: the
   * members' direct addresses only. docs/connectivity.md. */
  uint32_t relays_n;
  qraft_relay_addr relays[QRAFT_NODE_RELAYS_MAX];
  /* Members reached through relays stay on them: no hole punching
   * (qraft_endpoint_config.relay_only). */
  bool relay_only;
  /* Optional: a discovery file (qraft/discovery.h: one node per line, its
   * id and addr=IP:PORT / relay=ID@IP:PORT). A member is dialed at the
   * address its configuration entry carries merged with what the file says
   * of it (re-read when it changes, looked at every few seconds): members
   * given by id alone, or that moved, are found there. */
  const char *discovery_file;
  const qraft_sm_ops *sm; /* required */
  void *sm_ud;
  /* NULL: the node makes a libuv env and runs it on a thread of its own
   * from qraft_node_start. Otherwise the caller runs this env (all node
   * calls then happen on the caller's loop thread). */
  qraft_env *env;
  qraft_logger *logger; /* NULL: the default logger */
  /* Timing; 0 picks the default in brackets: an election timeout of 1 s
   * (at least 10 ticks) and heartbeats ten times as often. A follower
   * campaigns after 1 to 2 election timeouts without word from its leader,
   * so failover after a crash takes 1 to 2.5 s; a shorter timeout fails
   * over faster but takes a leader whose loop waits for a CPU (a loaded
   * machine) for dead. docs/node.md, "Timing and stalls". */
  uint32_t tick_ms;         /* [10] */
  uint32_t election_ticks;  /* [ceil(1000 / tick_ms), at least 10] */
  uint32_t heartbeat_ticks; /* [election_ticks / 10, at least 1] */
  bool disable_pre_vote;
  bool disable_check_quorum;
  bool lease_reads; /* serve reads under the leader lease (needs check-quorum) */
  /* Back-pressure; 0 picks the default in brackets. */
  uint32_t pending_proposals_max;  /* [8192] */
  uint64_t pending_bytes_max;      /* [64 MiB] */
  uint32_t pending_reads_max;      /* [4096] */
  uint32_t proposal_timeout_ms;    /* [10 * election timeout] */
  /* Take a snapshot (and drop the log up to it) once this many entries
   * were applied since the last one, or once the applied entries the core
   * holds in memory reach snapshot_log_bytes (qraft_core_status.
   * log_applied_bytes: a snapshot drops those). Snapshots have no size
   * limit: they
   * stream from the state machine to the store and from the store to the
   * peers in chunks, never held whole in memory. */
  uint64_t snapshot_entries;   /* [10000] */
  uint64_t snapshot_log_bytes; /* [64 MiB] */
  /* A snapshot goes to a peer in chunks of snapshot_chunk_bytes, sent
   * while the connection holds less than snapshot_inflight_bytes
   * unacknowledged (so it never crowds out the messages). */
  uint32_t snapshot_chunk_bytes;    /* [64 KiB] */
  uint32_t snapshot_inflight_bytes; /* [1 MiB] */
  /* With snapshot_begin/step/end (restore_begin/step/end): the bytes one
   * step writes (reads) before the loop goes on. */
  uint32_t snapshot_step_bytes; /* [4 MiB] */
  /* With data_dir: once the free space of its file system (for this
   * process: statvfs f_bavail) falls below space_reserve_bytes, the node
   * raises QRAFT_ALARM_NOSPACE before writes start failing; it clears the
   * alarm once the free space is back above it. Checked every
   * space_check_ms. QRAFT_NODE_SPACE_RESERVE_NONE: no reserve (the alarm
   * then rises only when a write fails for lack of space). */
  uint64_t space_reserve_bytes; /* [64 MiB] */
  uint32_t space_check_ms;      /* [1000] */
} qraft_node_config;

#define QRAFT_NODE_SPACE_RESERVE_NONE UINT64_MAX

/* Fills `cfg` with the defaults; the caller sets the required fields. */
void qraft_node_config_default(qraft_node_config *cfg);

/*
 * Creates a node from `cfg` (validated; `err` names the bad field), opens
 * its store and reads back its state. It does not run until
 * qraft_node_start. The caller owns the node until qraft_node_free.
 * Returns 0 on success, or one of these negative codes: QRAFT_ECONFIG,
 * QRAFT_ELOCKED (another process uses data_dir), QRAFT_ECORRUPT,
 * QRAFT_EVERSION, QRAFT_ETLS, -ENOMEM, -errno.
 */
int qraft_node_new(const qraft_node_config *cfg, qraft_node **out,
                   qraft_err *err);

/*
 * Bootstraps a new cluster whose founding voters are `members` (this node
 * must be one of them; every founder bootstraps with the same list, in the
 * same order). Call before qraft_node_start, on a node whose store is
 * empty. A node that joins an existing cluster does not bootstrap: it
 * starts empty and a member adds it (qraft_node_add_learner/add_voter).
 * Returns 0 on success, or one of these negative codes: QRAFT_ESTATE (the
 * store is not empty), QRAFT_ECONFIG (bad member list), -errno from the
 * store.
 */
int qraft_node_bootstrap(qraft_node *node, const qraft_node_addr *members,
                         size_t n, qraft_err *err);

/*
 * Bootstraps a new cluster from a state the state machine already holds
 * (restored from a backup) as of `index`: as qraft_node_bootstrap, but the
 * log starts after `index`, at a snapshot there (term 1) whose
 * configuration is `members`, all voters. The state machine must be
 * durable (durable_index) at exactly `index`. Every founder calls it with
 * the same state, members (same order) and index. Returns 0, or
 * QRAFT_ESTATE (the store is not empty), QRAFT_ECONFIG (bad member list,
 * index 0, the state machine not durable at `index`), -errno from the
 * store.
 */
int qraft_node_bootstrap_at(qraft_node *node, const qraft_node_addr *members,
                            size_t n, uint64_t index, qraft_err *err);

/*
 * Recovery after losing a quorum for good: rewrites the membership to
 * this node alone. Call before qraft_node_start, on a node whose store
 * holds a log. The configuration as of the node's whole log (`was`, if not
 * NULL) is ended by configuration entries appended in the current term
 * (leave a joint configuration, add this node as a voter if it is not one,
 * remove every other member), and every entry the node holds, committed
 * or not, is marked committed (the index of the last in *last, if not
 * NULL). Once started the node elects itself; the others are then added
 * again as new members (their old data must go). Logged at ERROR.
 *
 * This breaks Raft's guarantee if a quorum of the old configuration is
 * still alive: two clusters would then accept writes. The caller must
 * make sure it is not (qraft-kv serve --force-new-cluster first checks
 * that no quorum answers). Entries committed by the others that this node
 * never received are lost; entries it held but that were not committed
 * become committed.
 * Returns 0, or QRAFT_ESTATE (started, or the store is empty),
 * QRAFT_ECORRUPT, -ENOMEM, -errno from the store.
 */
int qraft_node_force_new_cluster(qraft_node *node, qraft_conf_state *was,
                                 uint64_t *last, qraft_err *err);

/* Starts the node (its thread, with the default env). Returns 0, or
 * QRAFT_ESTATE if started twice, or -errno. */
int qraft_node_start(qraft_node *node);

/*
 * Stops the node gracefully: no new requests are taken (they fail with
 * QRAFT_ESHUTDOWN), pending writes finish, every pending callback runs
 * (with QRAFT_ESHUTDOWN if it could not complete), the endpoint closes its
 * connections and the loop ends. Blocks until done (default env), so it
 * must not be called from a node callback. Idempotent.
 */
void qraft_node_stop(qraft_node *node);

/* Stops the node if needed and frees it. NULL is ignored. */
void qraft_node_free(qraft_node *node);

/* This node's Raft id and address (bound ports included, once started). */
qraft_id qraft_node_id_of(const qraft_node *node);
void qraft_node_addr_of(const qraft_node *node, qraft_node_addr *out);

/* ---- Requests ---- */

/* Completion of a proposal: `status` 0 and the state machine's `result`
 * (valid during the call; take a reference to keep it), or an error and,
 * for QRAFT_ENOTLEADER, the leader's Raft id if known (else 0). -ENOSPC
 * means it was refused before it was proposed (this member, or as leader a
 * quorum of voters, out of space: QRAFT_ALARM_NOSPACE): it did not happen.
 * After QRAFT_EDROPPED or QRAFT_ETIMEDOUT its outcome is unknown. */
typedef void (*qraft_propose_cb)(void *ud, int status, qraft_slice result,
                                 qraft_id leader);

/*
 * Proposes `data` (copied) as one normal entry. The callback runs exactly
 * once, on the loop thread.
 * Returns 0 when the request is queued (the callback reports the outcome),
 * or one of these negative codes, without calling the callback:
 * QRAFT_EBUSY (too many pending proposals or bytes), QRAFT_ESHUTDOWN,
 * QRAFT_ELIMIT (data larger than a frame may carry), -ENOMEM.
 */
int qraft_node_propose(qraft_node *node, const void *data, size_t len,
                       qraft_propose_cb cb, void *ud);

/* Completion of a read barrier or a membership request: `status` 0, or an
 * error (QRAFT_ENOTLEADER with the leader if known, QRAFT_ETIMEDOUT,
 * QRAFT_EDROPPED, QRAFT_ESHUTDOWN, QRAFT_ECONF_PENDING, QRAFT_ECONFIG). */
typedef void (*qraft_done_cb)(void *ud, int status, qraft_id leader);

/*
 * Asks for a linearizable read: the callback runs, on the loop thread, once
 * the local state machine has applied at least the read index; read the
 * state machine there. Works on followers (the leader confirms the index).
 * Returns 0, or QRAFT_EBUSY, QRAFT_ESHUTDOWN, -ENOMEM (callback not
 * called).
 */
int qraft_node_read_barrier(qraft_node *node, qraft_done_cb cb, void *ud);

/* Membership, on the leader (a follower answers QRAFT_ENOTLEADER with the
 * leader's id). Adding takes the new node's address, which goes into the
 * configuration entry. Promoting a learner and removing take only the id.
 * Each returns 0 when queued, or QRAFT_ESHUTDOWN / -ENOMEM; the callback
 * runs when the change is applied locally, or with an error. */
int qraft_node_add_learner(qraft_node *node, const qraft_node_addr *addr,
                           qraft_done_cb cb, void *ud);
int qraft_node_add_voter(qraft_node *node, const qraft_node_addr *addr,
                         qraft_done_cb cb, void *ud);
int qraft_node_promote(qraft_node *node, qraft_id id, qraft_done_cb cb,
                       void *ud);
int qraft_node_remove(qraft_node *node, qraft_id id, qraft_done_cb cb,
                      void *ud);
/* Transfers leadership to `to` (thesis 3.10); the callback runs when `to`
 * is leader, or with QRAFT_ETIMEDOUT after an election timeout. */
int qraft_node_transfer(qraft_node *node, qraft_id to, qraft_done_cb cb,
                        void *ud);

/* ---- Alarms ---- */

/*
 * QRAFT_ALARM_NOSPACE: this member is out of disk space, or below its
 * reserve (qraft_node_config.space_reserve_bytes). It is raised by the
 * node when the free space of data_dir falls below the reserve, when the
 * log's store fails a write with -ENOSPC or -EDQUOT (the node keeps the
 * write and submits it again, in order, until it lands), when a received
 * snapshot finds no room (dropped; the leader sends it again later) and
 * when the state machine's apply says so; and by the application
 * (qraft_node_alarm_set) for space it watches itself. While it is raised:
 *  - the node stays up: it keeps its log, votes, acknowledges what it
 *    could write, applies what it can and serves reads;
 *  - as leader, it refuses proposals (-ENOSPC) and hands leadership to an
 *    up-to-date voter that is not in alarm, if there is one;
 *  - it tells its peers with every message, so a leader whose voters are
 *    in alarm for a quorum refuses proposals at once (-ENOSPC) instead of
 *    letting them time out.
 * It clears by itself once the writes land, apply succeeds, the free space
 * is back above the reserve and the application cleared its part.
 */
#define QRAFT_ALARM_NOSPACE 1u

/* Raises (`raised`) or clears the application's part of `alarm` (one of
 * the QRAFT_ALARM_* bits); `why` (copied; may be NULL) says what and where
 * for the log. Any thread. Returns 0, or QRAFT_ECONFIG for an unknown
 * alarm. */
int qraft_node_alarm_set(qraft_node *node, uint32_t alarm, bool raised,
                         const char *why);

/* ---- Status and metrics ---- */

#define QRAFT_NODE_MEMBERS_MAX QRAFT_CONF_NODES_MAX

typedef struct qraft_member_status {
  qraft_id id;
  qraft_node_addr addr; /* as carried by the configuration */
  bool voter;
  bool learner;
  uint64_t match; /* leader only: replication progress */
  uint64_t next;
  /* Milliseconds since a message from this member last arrived (any role;
   * UINT64_MAX: none since this node started; this node itself: 0). */
  uint64_t heard_ms;
  /* A connection with this member is up (its handshake proved its key). */
  bool connected;
  /* The path its packets take (qraft_path_kind: none when no relay is in
   * play, else direct, mixed or relay; docs/connectivity.md). */
  int path;
  /* The path layer's view of it (qraft_peer_metrics' path_* fields): its
   * direct address in use (family 0: none), how long its first direct
   * path took (0: none yet), losses and gains of a direct path, and
   * probes. */
  struct sockaddr_storage direct_addr;
  uint64_t time_to_direct_ns;
  uint64_t path_fallbacks, path_upgrades;
  uint64_t path_pings_out, path_pongs_in;
  uint64_t path_call_me_maybe_out, path_call_me_maybe_in;
} qraft_member_status;

typedef struct qraft_node_status {
  qraft_id id;
  qraft_role role;
  qraft_id leader;
  uint64_t term;
  uint64_t commit;
  uint64_t applied;
  uint64_t last_index;
  uint64_t snapshot_index;
  uint32_t members_n;
  qraft_member_status members[QRAFT_NODE_MEMBERS_MAX];
  bool joint;
  bool running;
  /* Not 0 once the node stopped on its own after a failure it cannot go on
   * from (a failed sync or write of its log, a snapshot it could not write
   * or restore): the code, also in its log at ERROR ("... node stops").
   * Requests then fail; restart the process once the disk is sound. */
  int stopped_on;
  /* With a durable state machine: its durable index as last read, and the
   * starts that restored it from a snapshot taken here because it had lost
   * state it reported durable (the contract above; 0 when kept). */
  uint64_t sm_durable_index;
  uint64_t sm_rebuilds_lost;
  /* Since this start: snapshots taken here and installed from a leader;
   * snapshots streamed out (started, acknowledged whole, failed) and in
   * (bytes written to the store, transfers abandoned midway). */
  uint64_t snapshots_taken, snapshots_installed;
  /* Of snapshots_taken, the stateless ones (a durable state machine with
   * snapshot_begin: the log compacted at its durable index without a copy
   * of the state), and of snapshot_sends, those streamed from a view of the
   * state machine because the store's snapshot was stateless. */
  uint64_t snapshots_stateless, snapshot_sends_from_state;
  uint64_t snapshot_sends, snapshot_sends_done, snapshot_sends_failed;
  uint64_t snapshot_bytes_sent, snapshot_bytes_received;
  uint64_t snapshot_recvs_aborted;
  uint32_t snapshot_recvs_active; /* streaming in now */
  uint32_t snapshot_sends_active; /* streaming out now */
  /* Received snapshots restored in steps (qraft_sm_ops.restore_begin):
   * the steps, and the committed entries that waited for a restore to end
   * before they were applied. */
  uint64_t snapshot_restore_steps, restore_waited_entries;
  /* Memory (bytes): the log the core holds (qraft_core_status.log_bytes)
   * and, of it, the entries already applied (dropped by the next
   * snapshot); the transport's send buffers: messages not yet
   * acknowledged by the peer, and apart from them snapshot transfers'
   * (chunks in flight out, snapshots received into memory). */
  uint64_t log_bytes, log_applied_bytes;
  uint64_t send_buffer_bytes, snapshot_buffer_bytes;
  /* Alarms (QRAFT_ALARM_* bits): this member's, and those of the voters
   * (this one included) whose alarm stands as last heard from them within
   * two election timeouts; `alarm_quorum` when these are a quorum of the
   * voters (a leader then refuses proposals). space_free_bytes: the free
   * space of data_dir as last checked (UINT64_MAX: not checked). Writes
   * held for lack of space (submitted again until they land), committed
   * entries the state machine could not take yet, and the times the alarm
   * was raised since this start; alarm_why says why it stands now. */
  uint32_t alarms;
  uint32_t voters_in_alarm;
  bool alarm_quorum;
  uint64_t space_free_bytes;
  uint64_t writes_held, apply_waiting_entries;
  uint64_t alarms_raised;
  char alarm_why[160];
  /* The relays the node talks to (its home relays first seen, then the
   * members' own), as the transport last reported them. */
  uint32_t relays_n;
  qraft_relay_status relays[QRAFT_NODE_RELAYS_MAX * 2];
} qraft_node_status;

/* Copies the status as of the end of the loop's last turn. Any thread. */
void qraft_node_status_get(qraft_node *node, qraft_node_status *out);

/*
 * Renders the node's metrics in Prometheus text format into `buf`
 * (NUL-terminated when size > 0): elections, term, commit and apply lag,
 * proposals, reads, storage batch sizes and sync latency, transport per
 * peer. Returns the length the full text needs, like snprintf. Any thread.
 */
size_t qraft_node_metrics_text(qraft_node *node, char *buf, size_t size);

#ifdef __cplusplus
}
#endif
#endif
