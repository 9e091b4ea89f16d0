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
 * Thread-safety: runs share nothing; distinct runs may go on distinct
 * threads or processes.
 */
#ifndef QRAFT_SIM_H
#define QRAFT_SIM_H

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
  char swarm[256];
  /* What happened. */
  uint64_t elections_won;
  uint64_t max_term;
  uint64_t max_commit;
  uint64_t crashes;
  uint64_t partitions;
  uint64_t snapshots_sent;
  uint64_t compactions;
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

#ifdef __cplusplus
}
#endif
#endif
