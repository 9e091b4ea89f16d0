/*
 * qraft/sim.h: the deterministic simulator.
 *
 * qraft_sim_core_run runs one simulated cluster of Raft cores (1 to 7
 * nodes) in the calling thread from one seed: a virtual clock, a network
 * that delays, drops, duplicates and reorders messages and can be
 * partitioned or clogged, disks whose writes become durable after random
 * delays and are lost in a crash, crashes and restarts, pauses, clock skew,
 * membership churn, snapshots with log compaction and leadership transfers.
 * Clients run a key-value workload against the cluster. Every step is
 * checked (election safety, leader append-only, log matching, leader
 * completeness, state machine safety, monotonic term and commit, durability
 * of acknowledged writes, check-quorum step-down); after the run the client
 * history is checked for linearizability and the healed cluster must elect a
 * leader and commit within a bounded time.
 *
 * Swarm testing: each seed draws its own configuration (cluster size, fault
 * rates, which features are on) from the seed. The same seed gives the same
 * run and the same trace hash on every machine.
 *
 * The full-stack simulation (below: qraft_simdisk, qraft_sim_cluster,
 * qraft_sim_full_run; `qraft-sim --full`) runs the code users run instead
 * of bare cores: the node driver, the QUIC transport with its TLS
 * handshakes, and a simulated disk behind the storage interface, on the
 * in-memory network of qraft/env.h. Users run their own state machine in
 * a qraft_sim_cluster, inject faults, step it and check their invariants
 * (examples/sim_counter).
 *
 * Thread-safety: runs share nothing; distinct runs may go on distinct
 * threads or processes. A qraft_sim_cluster is used from one thread.
 */
#ifndef QRAFT_SIM_H
#define QRAFT_SIM_H

#include <qraft/env.h>
#include <qraft/node.h>
#include <qraft/storage.h>

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct qraft_sim_core_opts {
  uint64_t seed;
  /* Length of the run in virtual milliseconds (0: drawn from the seed,
   * 20 to 60 seconds). Faults stop at 70% of it; the rest is for healing
   * and the liveness check. */
  uint64_t duration_ms;
  /* If not NULL, every event is printed there, one line each. */
  FILE *trace;
  /* If not NULL, the clients' history is written there as JSON lines
   * (docs/lincheck.md) before it is checked, for qraft-lincheck. The core
   * simulator only. */
  FILE *history;
  /* The full-stack simulation only: make the seed a steady one (a healthy
   * network, no crash or membership change, only stalls of one member at
   * a time), which one seed in five of the others is anyway. */
  bool steady;
} qraft_sim_core_opts;

typedef struct qraft_sim_core_result {
  bool ok;
  /* On failure: the checker that failed and what it saw. */
  char checker[48];
  char failure[512];
  uint64_t trace_hash; /* FNV-1a over every event: same seed, same hash */
  uint64_t events;
  uint64_t virtual_ms;
  /* What the seed drew. */
  char swarm[896];
  /* What happened. */
  uint64_t elections_won;
  uint64_t max_term;
  uint64_t max_commit;
  uint64_t crashes;
  uint64_t partitions;
  uint64_t snapshots_sent;
  uint64_t compactions;
  /* full stack only: snapshots installed from a leader, and snapshot
   * transfers cut midway (failed sends and abandoned receives) */
  uint64_t snapshots_installed;
  uint64_t snapshot_transfers_cut;
  /* full stack only: steps of snapshots restored in steps, and committed
   * entries that waited for such a restore to end */
  uint64_t restore_steps;
  /* stateless compactions, and snapshots streamed from a view for them */
  uint64_t compactions_stateless, sends_from_state;
  uint64_t restore_waited;
  /* full stack only: times disks ran out of space (one node's or a
   * quorum's at once), writes that failed for it, and calls a durable
   * state machine refused for it */
  uint64_t disk_fulls, writes_nospace, apply_refused;
  uint64_t conf_changes;
  uint64_t transfers;
  uint64_t ops_ok;
  uint64_t ops_info;
  uint64_t ops_fail;
  uint64_t messages;
  uint64_t messages_dropped;
} qraft_sim_core_result;

/*
 * Runs one simulation. Returns 0 when the run completed (check res->ok for
 * the verdict), or -ENOMEM.
 */
int qraft_sim_core_run(const qraft_sim_core_opts *opts,
                       qraft_sim_core_result *res);


/* ======================================================================
 * The full-stack simulation: real nodes (qraft/node.h) with their QUIC
 * transport and TLS handshakes, on the in-memory network of qraft/env.h,
 * each with a simulated disk, all in the calling thread from one seed.
 * ====================================================================== */

/* ---- The simulated disk ---- */

typedef struct qraft_simdisk qraft_simdisk;

typedef struct qraft_simdisk_stats {
  uint64_t writes_submitted;
  uint64_t writes_durable;
  uint64_t entries_durable;
  uint64_t writes_lost; /* not yet durable at a crash */
  uint64_t entries_lost;
  uint64_t crashes;
  /* While full (qraft_simdisk_set_full): the times it filled up, writes
   * failed with -ENOSPC, and snapshot writer opens and writes refused. */
  uint64_t fulls;
  uint64_t writes_nospace;
  uint64_t snapshot_nospace;
} qraft_simdisk_stats;

/*
 * Creates a disk on `env` (a simnet env; it must outlive the disk): a
 * durable part that survives crashes and a volatile part. A write becomes
 * durable after a delay uniform in [delay_min_ns, delay_max_ns] drawn from
 * the env's generator, never before an earlier write; then its callback
 * runs from a timer on the env. Reads see the durable part.
 * Returns 0 on success, or one of these negative codes: -ENOMEM.
 */
int qraft_simdisk_new(qraft_env *env, uint64_t delay_min_ns,
                      uint64_t delay_max_ns, qraft_simdisk **out);

/* Opens a store on the disk (qraft/storage.h), for qraft_node_config's
 * `storage`: the node owns and closes it; the disk stays. One store at a
 * time. Returns 0 on success, or one of these negative codes: QRAFT_ESTATE
 * (a store is open), -ENOMEM. */
int qraft_simdisk_open(qraft_simdisk *d, qraft_storage **out);

/* Called with every write the disk accepts, when it is submitted (before
 * it is durable, and even if a crash loses it later): a checker's view of
 * what the node meant to store. The write is valid during the call. */
typedef void (*qraft_simdisk_write_cb)(void *ud, const qraft_storage_write *w);
void qraft_simdisk_set_observer(qraft_simdisk *d, qraft_simdisk_write_cb cb,
                                void *ud);

/* Changes the delay of writes submitted from now on (a disk that slows
 * down or recovers); writes still become durable in submission order. */
void qraft_simdisk_set_delay(qraft_simdisk *d, uint64_t delay_min_ns,
                             uint64_t delay_max_ns);

/*
 * Fills the disk up (`full`) or gives it room again. While it is full, the
 * write that reaches the head of the queue (its delay over) fails with
 * -ENOSPC instead of becoming durable, and so does every write queued
 * behind it, all in submission order, after the callbacks of the writes
 * that became durable before it (qraft/storage.h, "Failure after submit":
 * every write submitted before that callback ran fails with the same
 * code). The durable part is unchanged; a snapshot writer such a write
 * carried stays in its `snapshot` for the caller to submit again or abort.
 * qraft_storage_snapshot_writer_open and qraft_snapshot_writer_write fail
 * with -ENOSPC while it is full. Writes submitted afterwards, once it has
 * room again, succeed as usual; the open store stays usable throughout.
 */
void qraft_simdisk_set_full(qraft_simdisk *d, bool full);
/* Whether the disk is full now (for a state machine on the same disk). */
bool qraft_simdisk_is_full(const qraft_simdisk *d);

/* A power loss: every write not yet durable is lost; its callback runs now
 * with QRAFT_ESYNC and the open store refuses writes until the disk is
 * opened again. Call it before freeing the node that uses the disk. */
void qraft_simdisk_crash(qraft_simdisk *d);

/* Makes every pending write durable now and runs the callbacks (a clean
 * shutdown's final sync). */
void qraft_simdisk_flush(qraft_simdisk *d);

void qraft_simdisk_stats_get(const qraft_simdisk *d, qraft_simdisk_stats *out);

/* The first breach of the storage contract the disk saw (a write invalid on
 * the state the earlier writes leave), or NULL. */
const char *qraft_simdisk_violation(const qraft_simdisk *d);

/* The durable part of the disk, what a crash leaves, for checkers: read it
 * (qraft_storage_state_get, qraft_storage_entries, qraft_storage_term);
 * never submit to it or close it. Valid until the disk is freed. */
qraft_storage *qraft_simdisk_durable(qraft_simdisk *d);

/* Frees the disk; its store must be closed. NULL is ignored. */
void qraft_simdisk_free(qraft_simdisk *d);

/* ---- A simulated cluster of real nodes, for users' own state machines ---- */

#define QRAFT_SIM_CLUSTER_NODES_MAX 7

typedef struct qraft_sim_cluster qraft_sim_cluster;

typedef struct qraft_sim_cluster_config {
  uint64_t seed;  /* every random choice (network, disk, TLS nonces of the
                     env) comes from it */
  uint32_t nodes; /* 1..QRAFT_SIM_CLUSTER_NODES_MAX founding voters */
  /* Spare nodes (indexes nodes..nodes + spares - 1; nodes + spares at most
   * QRAFT_SIM_CLUSTER_NODES_MAX): keys, disks and hosts, but no node until
   * qraft_sim_cluster_restart starts one empty, for a member to add. */
  uint32_t spares;
  /* The user's state machine. sm_new makes a fresh one for node `i` when
   * the node starts and after every restart (a crash loses the process's
   * memory; the node restores it from its snapshot and log); sm_free frees
   * it when the node crashes or the cluster is freed. */
  const qraft_sm_ops *sm;
  void *(*sm_new)(void *ud, uint32_t i);
  void (*sm_free)(void *ud, uint32_t i, void *sm);
  void *ud;
  /* Network faults for every datagram (see qraft_simnet_faults); zero:
   * none, 50 us delay. */
  qraft_simnet_faults faults;
  /* Disk write delay (0, 0: 100 us to 2 ms). */
  uint64_t disk_delay_min_ns, disk_delay_max_ns;
  /* Each node's clock runs up to this many ppm fast or slow, drawn from
   * the seed (0: no skew). At most 100000. */
  uint32_t clock_skew_ppm_max;
  /* Node timing and features (see qraft_node_config; 0: defaults). */
  uint32_t tick_ms, election_ticks, heartbeat_ticks;
  bool disable_pre_vote, disable_check_quorum, lease_reads;
  uint64_t snapshot_entries;
  /* 0: the node's defaults (qraft_node_config) */
  uint32_t snapshot_chunk_bytes;
  uint32_t snapshot_inflight_bytes;
  uint32_t snapshot_step_bytes;
  qraft_logger *logger; /* NULL: nodes log nothing (the cluster still
                           watches their errors: _node_stops) */
  /* A relay server (qraft/relay.h) on a host of its own, every node's home
   * relay: members reach each other through it when their direct links
   * fail. With relay_only, the members' addresses carry no direct address
   * at all (they know each other by id and the relay only). */
  bool relay;
  bool relay_only;
  /* The NAT each node's host sits behind (qraft_simnet_host_set_nat; zero:
   * none), its mappings closing after nat_timeout_ms of quiet ([30000]).
   * Behind one, a node's configured address is private: peers find its
   * public mapping through the relay (CALL_ME_MAYBE) and probes. */
  qraft_simnet_nat nat[QRAFT_SIM_CLUSTER_NODES_MAX];
  uint32_t nat_timeout_ms;
} qraft_sim_cluster_config;

/*
 * Creates the network, the disks, the keys and the nodes, bootstraps and
 * starts them. The caller owns the cluster until qraft_sim_cluster_free.
 * Everything runs when the caller runs the cluster (qraft_sim_cluster_run),
 * on the calling thread. Returns 0 on success, or one of these negative
 * codes: QRAFT_ECONFIG (bad config), -ENOMEM, or a node's error.
 */
int qraft_sim_cluster_new(const qraft_sim_cluster_config *cfg,
                          qraft_sim_cluster **out);

/* Frees everything: pending writes are flushed (a clean shutdown), nodes
 * stopped (pending callbacks run with QRAFT_ESHUTDOWN). NULL is ignored. */
void qraft_sim_cluster_free(qraft_sim_cluster *c);

/* Founding nodes plus spares. */
uint32_t qraft_sim_cluster_size(const qraft_sim_cluster *c);
/* Node `i`'s address (key and simulated address), for adding it. */
void qraft_sim_cluster_addr(const qraft_sim_cluster *c, uint32_t i,
                            qraft_node_addr *out);
/* Node `i` (0-based), or NULL while it is crashed. Valid until it crashes. */
qraft_node *qraft_sim_cluster_node(qraft_sim_cluster *c, uint32_t i);
/* The state machine of node `i` (what sm_new returned), NULL if crashed. */
void *qraft_sim_cluster_sm(qraft_sim_cluster *c, uint32_t i);
/* The index of the node that is leader of the highest term, or -1. */
int qraft_sim_cluster_leader(qraft_sim_cluster *c);
/* How many times node i stopped on its own, over all its starts: it logged
 * an error after which it takes no part any more ("... node stops": a
 * storage write or a restore failed), while its status still says
 * `running`. The crashes and the stops the cluster makes itself
 * (qraft_sim_cluster_crash, _free) do not count. The record of the last
 * one, formatted, goes to `why` (may be NULL). */
uint64_t qraft_sim_cluster_node_stops(const qraft_sim_cluster *c, uint32_t i,
                                      char *why, size_t why_size);
/* Network time in milliseconds since the start. */
uint64_t qraft_sim_cluster_now_ms(const qraft_sim_cluster *c);
qraft_simnet *qraft_sim_cluster_net(qraft_sim_cluster *c);
qraft_env *qraft_sim_cluster_env(qraft_sim_cluster *c, uint32_t i);
qraft_simdisk *qraft_sim_cluster_disk(qraft_sim_cluster *c, uint32_t i);
/* A number from the cluster's one generator. */
uint64_t qraft_sim_cluster_random(qraft_sim_cluster *c);

/*
 * Runs the cluster for `ms` virtual milliseconds, or until `done_cb(ud)`
 * (may be NULL) returns true; it is checked after every event, so keep it
 * cheap. Returns true if done_cb stopped the run.
 */
bool qraft_sim_cluster_run(qraft_sim_cluster *c, uint64_t ms,
                           qraft_env_done_cb done_cb, void *ud);

/* Faults. */
void qraft_sim_cluster_set_faults(qraft_sim_cluster *c,
                                  const qraft_simnet_faults *f);
/* Blocks (or unblocks) traffic from node i to node j; both ways when
 * `both`. */
void qraft_sim_cluster_block(qraft_sim_cluster *c, uint32_t i, uint32_t j,
                             bool both, bool blocked);
/* Cuts node i off from every other node, both ways. */
void qraft_sim_cluster_isolate(qraft_sim_cluster *c, uint32_t i);
/* Holds back datagrams from i to j for `ms` virtual milliseconds. */
void qraft_sim_cluster_clog(qraft_sim_cluster *c, uint32_t i, uint32_t j,
                            uint64_t ms);
/* Unblocks and unclogs every link. */
void qraft_sim_cluster_heal(qraft_sim_cluster *c);
/* With a relay: cuts (or restores) the links between node i and the relay,
 * both ways. */
void qraft_sim_cluster_relay_block(qraft_sim_cluster *c, uint32_t i,
                                   bool blocked);
/* With a relay: holds back what the relay sends to node i for `ms`. */
void qraft_sim_cluster_relay_clog(qraft_sim_cluster *c, uint32_t i,
                                  uint64_t ms);
/* With a relay: crashes it (its host goes down, its clients are lost), or
 * restarts it with the same key and address. No-op if already so. */
void qraft_sim_cluster_relay_crash(qraft_sim_cluster *c);
int qraft_sim_cluster_relay_restart(qraft_sim_cluster *c);
/* With a relay: true while it runs. */
bool qraft_sim_cluster_relay_up(const qraft_sim_cluster *c);
/* Stops node i's process for `ms` virtual milliseconds. */
void qraft_sim_cluster_pause(qraft_sim_cluster *c, uint32_t i, uint64_t ms);
/* Crashes node i: writes not yet durable are lost, its state machine is
 * freed, its in-flight requests fail. No-op if crashed. */
void qraft_sim_cluster_crash(qraft_sim_cluster *c, uint32_t i);
/* Restarts a crashed node i with the same key, address and disk, and a
 * fresh state machine. Returns 0 on success, or the node's error code. */
int qraft_sim_cluster_restart(qraft_sim_cluster *c, uint32_t i);

/* ---- The full-stack simulator (`qraft-sim --full`) ---- */

/*
 * qraft_sim_full_run runs one seed: 3 to 7 nodes of a simulated cluster
 * with a key-value state machine, clients with a put, get (read barrier)
 * and compare-and-swap workload, and the faults: delay, loss, duplication,
 * reordering, partitions, clogging, crashes that lose unsynced writes and
 * restarts, clock skew and pauses, disks that run out of space for a while
 * (one node's or a quorum's; a durable state machine on a full disk refuses
 * to apply), drawn from the seed. Checked while it runs: at most one leader
 * per term, terms never go back, commit never goes back within a process,
 * every node applies the same entry at each index (state machine safety)
 * and has the same state as of each index, entries the state machine
 * refused are offered again, never skipped, and no node stops on its own
 * (a full disk is a state, not a fatal error). After it: acknowledged
 * writes are in the final log, the client history is linearizable, and the
 * healed cluster elects a leader and commits a new write in bounded time.
 * Uses qraft_sim_core_opts and qraft_sim_core_result; the hash is the event
 * trace of qraft_simnet (kinds and sizes, not bytes) mixed with the
 * simulator's own events.
 */
int qraft_sim_full_run(const qraft_sim_core_opts *opts,
                       qraft_sim_core_result *res);

#ifdef __cplusplus
}
#endif
#endif
