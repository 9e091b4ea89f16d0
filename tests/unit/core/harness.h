/*
 * harness.h: a small deterministic cluster of cores for story tests.
 *
 * Each node persists synchronously (its update's writes are durable before
 * anything else happens), sends its messages into one FIFO queue, and
 * applies committed entries to a state machine that records the data of
 * every normal entry. Links can be cut; messages on cut links are dropped
 * when delivered. Tests step messages one by one or all at once.
 */
#ifndef QRAFT_TESTS_CORE_HARNESS_H
#define QRAFT_TESTS_CORE_HARNESS_H

#include <qraft/core.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define H_NODES_MAX 8
#define H_APPLIED_MAX 512
#define H_QUEUE_MAX 4096

typedef struct h_msg {
  qraft_message m;
  qraft_entry ents[64];
  qraft_snapshot snap;
  uint8_t ctx[32];
  bool used;
} h_msg;

typedef struct h_node {
  qraft_id id;
  bool up;
  qraft_core *core;
  qraft_core_config cfg;
  /* durable state */
  qraft_hard_state hs;
  qraft_snapshot_meta snap;
  uint32_t snap_applied_n; /* state machine in the snapshot */
  qraft_entry log[H_APPLIED_MAX];
  size_t log_n; /* entries (snap.index, snap.index + log_n] */
  /* state machine: data of applied normal entries, in order */
  uint64_t applied_index;
  uint32_t applied_n;
  char applied[H_APPLIED_MAX][16];
  qraft_role role;
  bool hold; /* writes stay volatile until h_release */
  uint64_t held_persist_id;
  uint64_t read_index[64]; /* read states by id (id < 64) */
  bool read_done[64];
} h_node;

typedef struct harness {
  int n;
  h_node nodes[H_NODES_MAX];
  h_msg *queue; /* FIFO ring */
  size_t q_start, q_n;
  bool cut[H_NODES_MAX + 1][H_NODES_MAX + 1]; /* by id */
  uint64_t delivered;
} harness;

typedef void (*h_config_cb)(qraft_core_config *cfg);

/* Bootstraps `voters` voters (ids 1..voters) and starts them. */
void h_init(harness *h, int voters, h_config_cb tweak);
void h_close(harness *h);

/* Starts node `id` empty (to be added), or restarts a crashed one from its
 * durable state. */
void h_start(harness *h, qraft_id id, h_config_cb tweak);
void h_crash(harness *h, qraft_id id);

h_node *h_node_of(harness *h, qraft_id id);
/* Takes and processes updates of node `id` until it has none. */
void h_drain(harness *h, qraft_id id);
/* Delivers every queued message (and the ones they cause); returns how many. */
size_t h_deliver_all(harness *h);
/* Delivers the first queued message for which `pred` is true (others wait
 * in order); returns false if there is none. */
bool h_deliver_one(harness *h, bool (*pred)(const qraft_message *m, void *ud),
                   void *ud);
/* Drops every queued message. */
void h_drop_all(harness *h);

/* Makes the writes of node `id` slow: nothing it writes becomes durable
 * (and nothing that waits for it is sent) until h_release. */
void h_hold(harness *h, qraft_id id);
void h_release(harness *h, qraft_id id);

void h_tick(harness *h, qraft_id id, int ticks);
/* Ticks every running node `ticks` times, delivering after each round. */
void h_tick_all(harness *h, int ticks);

void h_isolate(harness *h, qraft_id id);
void h_cut(harness *h, qraft_id a, qraft_id b); /* both ways */
void h_heal(harness *h);

/* Campaigns at `id` and delivers until quiet. */
void h_campaign(harness *h, qraft_id id);
/* Proposes "text" at `id`; returns the core's return code. */
int h_propose(harness *h, qraft_id id, const char *text);
/* The leader with the highest term among running nodes, or 0. */
qraft_id h_leader(harness *h);
uint64_t h_term(harness *h, qraft_id id);
uint64_t h_commit(harness *h, qraft_id id);
/* Takes a snapshot at the applied index and compacts the log. */
int h_compact(harness *h, qraft_id id);
/* True if every running node in `ids` applied the same sequence. */
bool h_same_applied(harness *h, const qraft_id *ids, int n);

#endif
