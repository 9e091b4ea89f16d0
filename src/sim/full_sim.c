/*
 * full_sim.c: the full-stack simulator (`qraft-sim --full`). A simulated
 * cluster (sim_cluster.c: real nodes, QUIC transport with TLS handshakes,
 * simulated disks, all on qraft_simnet) runs a key-value state machine
 * under clients and faults drawn from one seed, and is checked as it runs
 * and after.
 *
 * Checkers (the names printed on failure):
 *   election_safety      at most one leader per term (node statuses)
 *   term_monotonic       a process's term never goes back
 *   commit_monotonic     a process's commit index never goes back
 *   state_machine_safety every node applies the same entry at each index
 *   apply_order          a node applies indexes in increasing order
 *   durability           an acknowledged write is durable on a quorum of
 *                        voters when it is acknowledged, and is in the
 *                        final log
 *   leader_commit        a leader commits nothing before the first entry
 *                        of its own term (paper 5.4.2, Figure 8)
 *   check_quorum         a leader cut off from a quorum of voters steps
 *                        down within two election timeouts (thesis 6.2)
 *   storage_contract     the node never submits a write the store refuses
 *   state_equality       every member's state as of an index is the same
 *                        (what applying every committed entry up to it
 *                        gives; the first member to get there records it)
 *   apply_skipped        after the state machine refused entries (no room
 *                        on its disk), the node calls it again from the
 *                        first of them (qraft_sm_ops.apply: never skipping
 *                        one)
 *   nospace_fatal        no member stops on its own (a fatal error) after
 *                        its disk ran out of space: that is a state, not a
 *                        fatal error (QRAFT_ALARM_NOSPACE)
 *   node_fatal           no member stops on its own for any other reason
 *   linearizability      the client history (lincheck.h)
 *   liveness             the healed cluster elects a leader and commits
 *   steady               (steady seeds: a healthy network, no crash, no
 *                        membership change, only stalls of one member at a
 *                        time) leadership moves only when its leader
 *                        stalled long enough for the followers to miss it
 *
 * It must never: read the OS clock or randomness, or let a choice depend on
 * bytes the TLS library drew (it hashes events, not bytes).
 */
#include <qraft/sim.h>

#include <qraft/assert.h>
#include <qraft/buf.h>
#include <qraft/crc32c.h>
#include <qraft/prng.h>

#include "sim/lincheck.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define FS_KEYS 24
#define FS_CLIENTS_MAX 6
#define FS_OP_BYTES 18
#define FS_SLICE_MS 5
#define FS_OP_TIMEOUT_MS 3000
#define FS_LIVENESS_MS 30000
#define FS_SETTLE_MS 20000
#define FS_CHECK_EVERY_NS 1000000ull
#define FS_CONFS_MAX 4 /* configurations a durable write may be judged by */
#define FS_CONF_QUIET_NS 3000000000ull /* after a change, checks that assume
                                          one configuration wait this long */
/* Node timing: faster than the node's defaults (1 s elections), for more
 * elections per simulated second; set on the cluster. */
#define FS_TICK_MS 10
#define FS_ELECTION_TICKS 10
#define FS_HEARTBEAT_TICKS 2
#define FS_ELECTION_NS ((uint64_t)FS_TICK_MS * FS_ELECTION_TICKS * 1000000ull)
/* Steady seeds. A follower misses its leader when it hears nothing for
 * its election timeout (at least E ticks of its clock, 2% fast at most):
 * the leader's stall plus up to a heartbeat interval, a tick of phase and
 * the network's delay. So a leader stall justifies a change from
 * E - H - 2 ticks on; shorter ones, and any follower's stall, never do.
 * The election that follows ends within a few election timeouts. */
#define FS_STEADY_JUSTIFY_NS \
  ((uint64_t)FS_TICK_MS * (FS_ELECTION_TICKS - FS_HEARTBEAT_TICKS - 2) * 1000000ull)
#define FS_STEADY_WINDOW_NS (4 * FS_ELECTION_NS)

enum { OP_PUT = 1, OP_GET = 2, OP_CAS = 3 };

typedef struct fs_sim fs_sim;

typedef struct fs_kv {
  fs_sim *sim;
  uint32_t node;
  uint64_t vals[FS_KEYS];
  uint64_t index; /* last index handled */
  /* the first entry of a call refused for lack of room (durable state
   * machines on a full disk): the next call starts there; 0: none */
  uint64_t refused_from;
} fs_kv;

typedef struct fs_client {
  uint32_t id;
  bool busy;
  uint64_t op_seq;
  uint64_t next_ns;     /* when to start the next operation */
  uint64_t deadline_ns; /* busy: when to give up (info) */
  int f;
  uint64_t key, value, value_new;
  uint32_t target;
  int leader_hint; /* node index, or -1 */
} fs_client;

typedef struct fs_op {
  fs_sim *sim;
  fs_client *client;
  uint64_t seq;
  uint32_t node;
} fs_op;

typedef struct fs_acked {
  uint64_t index;
  uint64_t hash;
} fs_acked;

typedef struct fs_proc {
  bool seen;
  uint64_t term, commit;
} fs_proc;

/* A voter set (from a node's status), for the quorum checks. */
typedef struct fs_conf {
  uint32_t n;
  qraft_id voters[QRAFT_SIM_CLUSTER_NODES_MAX];
} fs_conf;

/* A leader of one term, for election safety and the commit rule. */
typedef struct fs_leader {
  uint64_t term;
  uint64_t leader;
} fs_leader;

/* What one node wrote (its disk's observer) in the term of its newest hard
 * state: for the commit rule. */
typedef struct fs_wlog {
  fs_sim *sim;
  uint32_t node;
  uint64_t term;         /* of the newest hard state written */
  uint64_t commit_enter; /* the commit index of the first one in `term` */
  uint64_t commit_low;   /* the lowest above it written in `term`; 0: none */
  uint64_t first_index;  /* the first entry of `term` written; 0: none */
} fs_wlog;

/* A node moved its commit index, in a term, to below the first entry of
 * that term: a follower may; a leader must not. */
typedef struct fs_low_commit {
  uint32_t node;
  uint64_t term, commit, first_index;
} fs_low_commit;

typedef struct fs_conf_req {
  fs_sim *sim;
  int kind; /* FS_REQ_* */
  uint32_t node;
} fs_conf_req;

enum { FS_REQ_ADD = 1, FS_REQ_PROMOTE, FS_REQ_REMOVE, FS_REQ_TRANSFER };

struct fs_sim {
  qraft_sim_core_opts opts;
  qraft_sim_core_result *res;
  qraft_prng rng;
  qraft_sim_cluster *c;
  uint32_t n;     /* founding voters */
  uint32_t total; /* founders and spares */
  qraft_id ids[QRAFT_SIM_CLUSTER_NODES_MAX];
  uint64_t trace_hash;
  bool failed;
  bool closing;
  /* checkers */
  uint64_t *applied_hash; /* by index; 0: not yet applied anywhere */
  uint64_t *applied_data; /* by index: the hash of the entry's data */
  size_t applied_cap;
  /* by index: the hash of a state machine's values once it had applied up
   * to it (the first to get there records it; 0: none did), which a
   * restored snapshot of that index must equal */
  uint64_t *state_hash;
  size_t state_cap;
  fs_leader *leaders;
  size_t leaders_n, leaders_cap;
  fs_proc proc[QRAFT_SIM_CLUSTER_NODES_MAX];
  uint64_t last_check_ns;
  fs_acked *acked;
  size_t acked_n, acked_cap;
  uint64_t acked_max;
  fs_wlog wlog[QRAFT_SIM_CLUSTER_NODES_MAX];
  fs_low_commit *low_commits;
  size_t low_commits_n, low_commits_cap;
  uint64_t rule_checked_ns;
  fs_conf confs[FS_CONFS_MAX]; /* the newest voter sets seen, newest last */
  uint32_t confs_n;
  uint64_t conf_change_ns; /* when a membership change was last asked */
  uint64_t isolated_since_ns[QRAFT_SIM_CLUSTER_NODES_MAX]; /* 0: not */
  uint64_t isolated_term[QRAFT_SIM_CLUSTER_NODES_MAX];
  /* clients */
  fs_client clients[FS_CLIENTS_MAX];
  uint32_t clients_n;
  qraft__lincheck_history *hist;
  uint64_t next_value;
  uint64_t last_put[FS_KEYS]; /* the newest value a client wrote per key */
  /* faults */
  uint64_t restart_at_ns[QRAFT_SIM_CLUSTER_NODES_MAX]; /* 0: up */
  uint64_t heal_at_ns;
  uint32_t p_crash, p_partition, p_clog, p_pause; /* per slice, ppm */
  uint32_t p_slow_disk;                           /* per slice, ppm */
  uint64_t disk_min_ns, disk_max_ns;              /* the disks' usual delay */
  uint64_t disk_slow_until_ns[QRAFT_SIM_CLUSTER_NODES_MAX]; /* 0: not */
  bool skew;
  bool check_quorum;
  uint64_t restart_ms_max;
  uint64_t faults_end_ns;
  uint64_t delay_max_ns;
  /* The fault model the checkers reason with: what the sim did to links
   * and hosts. */
  bool blocked[QRAFT_SIM_CLUSTER_NODES_MAX][QRAFT_SIM_CLUSTER_NODES_MAX];
  uint64_t clog_until_ns[QRAFT_SIM_CLUSTER_NODES_MAX]
                        [QRAFT_SIM_CLUSTER_NODES_MAX];
  uint64_t pause_until_ns[QRAFT_SIM_CLUSTER_NODES_MAX];
  /* Steady seeds: stalls of one member at a time, and who led last. */
  bool steady;
  uint64_t stall_start_ns[QRAFT_SIM_CLUSTER_NODES_MAX]; /* the latest */
  uint64_t stall_end_ns[QRAFT_SIM_CLUSTER_NODES_MAX];
  uint64_t steady_next_ns; /* no stall before this */
  int steady_leader;       /* node that led steady_term, or -1 */
  uint64_t steady_term;
  /* Flaky leaders (the Figure 8 schedules need leaders that replicate to
   * a minority and die): a new leader is crashed or cut off soon after it
   * is elected, with this chance (ppm). */
  uint32_t leader_kill_ppm;
  uint64_t doom_at_ns[QRAFT_SIM_CLUSTER_NODES_MAX]; /* 0: none */
  uint64_t doom_term[QRAFT_SIM_CLUSTER_NODES_MAX];
  bool doom_crash[QRAFT_SIM_CLUSTER_NODES_MAX];
  int stale_node;  /* a cut-off old leader clients still read from, or -1 */
  bool crash_soon; /* a write was just acknowledged: crash before the
                      followers' disks catch up */
  uint32_t p_crash_after_ack; /* ppm per acknowledgement */
  /* Membership: spares to add, one change at a time, and transfers. */
  uint32_t p_member, p_transfer; /* per slice, ppm */
  bool conf_busy;
  bool started[QRAFT_SIM_CLUSTER_NODES_MAX]; /* ever started */
  bool retired[QRAFT_SIM_CLUSTER_NODES_MAX]; /* removed and stopped */
  bool joining[QRAFT_SIM_CLUSTER_NODES_MAX]; /* its add is in flight */
  uint64_t retire_at_ns[QRAFT_SIM_CLUSTER_NODES_MAX];
  /* Durable state machines (qraft/node.h, the durable-index contract): on
   * these seeds a node's state machine keeps a durable copy that survives
   * its crashes, made every sync_ns of simulated time (or at a restore),
   * and restarts from it; what it applied since is lost in a crash. */
  bool durable_sm;
  uint64_t sync_ns;
  /* Bytes of filler after the values in every snapshot, so that snapshots
   * cross the network in many chunks and round trips (and faults cut them
   * midway); restore checks every byte (snapshot_integrity). */
  uint32_t snap_pad;
  /* Per slice while a member receives a snapshot (ppm): cut the transfer
   * by crashing its receiver or the leader, or isolating the receiver.
   * Drawn from a stream of its own. */
  uint32_t p_snap_cut;
  qraft_prng cut_rng;
  struct {
    uint64_t vals[FS_KEYS];
    uint64_t index;
    uint64_t synced_ns;
  } dur[QRAFT_SIM_CLUSTER_NODES_MAX];
  /* Disks that run out of space for a while, one node's or a quorum's at
   * once (per slice, ppm), drawn from a stream of their own; a durable
   * state machine on a full disk refuses to apply (-ENOSPC). */
  uint32_t p_disk_full;
  qraft_prng full_rng;
  uint64_t full_until_ns[QRAFT_SIM_CLUSTER_NODES_MAX]; /* 0: has room */
  bool space_hit[QRAFT_SIM_CLUSTER_NODES_MAX]; /* its disk was ever full */
  uint64_t stops_seen[QRAFT_SIM_CLUSTER_NODES_MAX];
  uint64_t disk_fulls, apply_refused;
  /* The relay (qraft/relay.h), on one seed in three (a stream of its own):
   * every member's home relay; with relay_only the members know no direct
   * address of each other. Its faults: crashes and restarts, clogs of what
   * it sends to a member, members cut from it (the minority side of a
   * partition), and cuts of the direct links of a pair alone, which the
   * path layer must survive through the relay. */
  bool relay, relay_only;
  /* Half the relay seeds put the members behind NATs of random kinds
   * (simnet's models); and every relay seed has an attacker on the wire:
   * a host that copies the members' QUIC packets and replays them from
   * its own address, now and then. The path layer must take no address
   * for a member's that no authenticated probe came from. */
  bool nats;
  qraft_simnet_nat nat[QRAFT_SIM_CLUSTER_NODES_MAX];
  uint32_t p_spoof; /* per slice, ppm */
  qraft_env *evil_env;
  qraft_env_udp *evil;
  struct sockaddr_in evil_addr;
  struct {
    uint8_t pkt[1500];
    size_t len;
    struct sockaddr_in to;
  } spied[4];
  uint32_t spied_n;
  uint64_t spy_count, spoofs;
  qraft_prng relay_rng;
  uint32_t p_relay_crash, p_relay_clog, p_direct_cut; /* per slice, ppm */
  uint64_t relay_restart_at_ns;                       /* 0: up */
  bool relay_cut[QRAFT_SIM_CLUSTER_NODES_MAX];
  uint64_t relay_clog_until_ns[QRAFT_SIM_CLUSTER_NODES_MAX];
  /* the direct links of a pair cut (both ways) since, with the relay left
   * up; 0: not */
  uint64_t direct_cut_ns[QRAFT_SIM_CLUSTER_NODES_MAX]
                        [QRAFT_SIM_CLUSTER_NODES_MAX];
  uint64_t direct_cut_end_ns;
  /* since when node i has seen itself lead j, or j lead it (0: not) */
  uint64_t busy_since_ns[QRAFT_SIM_CLUSTER_NODES_MAX]
                        [QRAFT_SIM_CLUSTER_NODES_MAX];
  uint64_t relay_changed_ns; /* the relay crashed, restarted or a cut of it
                                changed */
  uint64_t relay_crashes, direct_cuts, path_checks;
};

/* What the path layer must do once a pair's direct links die and the relay
 * is there: stop sending direct alone within path_quiet_ms (the
 * endpoint's default, 300 ms) of the last packet on it; the check allows
 * the packets still in flight and a check interval. */
#define FS_PATH_QUIET_NS 300000000ull
#define FS_PATH_GRACE_NS 500000000ull

/* ---- trace and failure ---- */

static void fs_mix(fs_sim *s, uint64_t x) {
  for (int i = 0; i < 8; i++) {
    s->trace_hash ^= (x >> (8 * i)) & 0xff;
    s->trace_hash *= 0x100000001b3ULL;
  }
}

static uint64_t fs_now(fs_sim *s) {
  return qraft_simnet_now_ns(qraft_sim_cluster_net(s->c));
}

__attribute__((format(printf, 3, 4))) static void
fs_event(fs_sim *s, uint64_t code, const char *fmt, ...) {
  fs_mix(s, code);
  if (s->opts.trace != NULL) {
    fprintf(s->opts.trace, "%10.3f ms  ",
            (double)(fs_now(s) - 1000000000ull) / 1e6);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(s->opts.trace, fmt, ap);
    va_end(ap);
    fputc('\n', s->opts.trace);
  }
}

__attribute__((format(printf, 3, 4))) static void
fs_fail(fs_sim *s, const char *checker, const char *fmt, ...) {
  if (s->failed) {
    return;
  }
  s->failed = true;
  s->res->ok = false;
  snprintf(s->res->checker, sizeof s->res->checker, "%s", checker);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(s->res->failure, sizeof s->res->failure, fmt, ap);
  va_end(ap);
  if (s->opts.trace != NULL) {
    fprintf(s->opts.trace, "FAILED [%s] %s\n", checker, s->res->failure);
  }
}

static uint64_t fs_hash_bytes(uint64_t h, const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++) {
    h = (h ^ p[i]) * 0x100000001b3ULL;
  }
  return h;
}

/* ---- configurations and disks, as the checkers see them ---- */

static int fs_index_of(const fs_sim *s, qraft_id id) {
  for (uint32_t i = 0; i < s->total; i++) {
    if (s->ids[i] == id) {
      return (int)i;
    }
  }
  return -1;
}

static void fs_conf_of(const qraft_node_status *st, fs_conf *out) {
  out->n = 0;
  for (uint32_t k = 0; k < st->members_n; k++) {
    if (st->members[k].voter && out->n < QRAFT_SIM_CLUSTER_NODES_MAX) {
      out->voters[out->n++] = st->members[k].id;
    }
  }
}

static bool fs_conf_has(const fs_conf *cf, qraft_id id) {
  for (uint32_t k = 0; k < cf->n; k++) {
    if (cf->voters[k] == id) {
      return true;
    }
  }
  return false;
}

static bool fs_conf_eq(const fs_conf *a, const fs_conf *b) {
  if (a->n != b->n) {
    return false;
  }
  for (uint32_t k = 0; k < a->n; k++) {
    if (!fs_conf_has(b, a->voters[k])) {
      return false;
    }
  }
  return true;
}

/* Remembers a voter set a leader applied (the newest FS_CONFS_MAX). */
static void fs_note_conf(fs_sim *s, const fs_conf *cf) {
  for (uint32_t k = 0; k < s->confs_n; k++) {
    if (fs_conf_eq(&s->confs[k], cf)) {
      return;
    }
  }
  if (s->confs_n == FS_CONFS_MAX) {
    memmove(s->confs, s->confs + 1, (FS_CONFS_MAX - 1) * sizeof *s->confs);
    s->confs_n--;
  }
  s->confs[s->confs_n++] = *cf;
}

/* Is the client write whose data hashes to `hash` at `index` on node i's
 * disk, durably (or covered by its snapshot)? */
static bool fs_durable_on(fs_sim *s, uint32_t i, uint64_t index,
                          uint64_t hash) {
  qraft_storage *st = qraft_simdisk_durable(qraft_sim_cluster_disk(s->c, i));
  qraft_storage_state ss;
  qraft_err err;
  qraft_err_init(&err, 0);
  if (qraft_storage_state_get(st, &ss, &err) != 0) {
    return false;
  }
  if (index <= ss.snapshot.index) {
    return true;
  }
  if (index < ss.first_index || index > ss.last_index) {
    return false;
  }
  qraft_entry e;
  size_t got = 0;
  if (qraft_storage_entries(st, index, index + 1, UINT64_MAX, &e, 1, &got,
                            &err) != 0 ||
      got != 1) {
    return false;
  }
  bool ok = fs_hash_bytes(0xcbf29ce484222325ULL, e.data.data, e.data.len) ==
            hash;
  qraft_storage_entries_release(&e, got);
  return ok;
}

static uint32_t fs_durable_voters(fs_sim *s, const fs_conf *cf,
                                  uint64_t index, uint64_t hash) {
  uint32_t have = 0;
  for (uint32_t k = 0; k < cf->n; k++) {
    int i = fs_index_of(s, cf->voters[k]);
    if (i >= 0 && fs_durable_on(s, (uint32_t)i, index, hash)) {
      have++;
    }
  }
  return have;
}

static bool fs_conf_quiet(const fs_sim *s, uint64_t now) {
  return !s->conf_busy &&
         (s->conf_change_ns == 0 || now - s->conf_change_ns >= FS_CONF_QUIET_NS);
}

/* Durability at the moment of acknowledgement (paper 5.3, thesis 3.8: an
 * entry is committed once durable on a majority): the acknowledged write
 * is on the disks of a quorum of the voters that committed it. That
 * configuration is one of the newest few; while one is being changed the
 * check accepts any of them, or waits for the end of the run. */
static void fs_check_ack_durable(fs_sim *s, uint32_t node, uint64_t index,
                                 uint64_t hash) {
  fs_conf cands[FS_CONFS_MAX + 1];
  uint32_t cn = 0;
  for (uint32_t k = 0; k < s->confs_n; k++) {
    cands[cn++] = s->confs[k];
  }
  qraft_node *nd = qraft_sim_cluster_node(s->c, node);
  if (nd != NULL) {
    qraft_node_status st;
    qraft_node_status_get(nd, &st);
    if (!st.joint && st.members_n > 0) {
      fs_conf_of(&st, &cands[cn++]);
    }
  }
  uint32_t have = 0, of = 0;
  for (uint32_t k = 0; k < cn; k++) {
    have = fs_durable_voters(s, &cands[k], index, hash);
    of = cands[k].n;
    if (2 * have > of) {
      return;
    }
  }
  if (!fs_conf_quiet(s, fs_now(s))) {
    return;
  }
  fs_fail(s, "durability",
          "node %u acknowledged the write at index %" PRIu64
          " while it was durable on %u of %u voters",
          node, index, have, of);
}

/* The commit rule (paper 5.4.2, Figure 8): a leader commits by counting
 * replicas only entries of its own term, so once it moves its commit index
 * that index is at least the one of its term's first entry (the empty one
 * it appends when elected). Judged on what the leader writes (every change
 * of the commit index goes to disk in a hard state), once the status shows
 * which node led the term. */
static void fs_wlog_close_term(fs_sim *s, fs_wlog *wl) {
  if (wl->commit_low == 0 || wl->first_index == 0 ||
      wl->commit_low >= wl->first_index) {
    return;
  }
  if (s->low_commits_n == s->low_commits_cap) {
    s->low_commits_cap = s->low_commits_cap ? 2 * s->low_commits_cap : 64;
    s->low_commits =
        realloc(s->low_commits, s->low_commits_cap * sizeof *s->low_commits);
    QRAFT_ASSERT(s->low_commits != NULL);
  }
  s->low_commits[s->low_commits_n++] = (fs_low_commit){
      .node = wl->node, .term = wl->term, .commit = wl->commit_low,
      .first_index = wl->first_index};
  wl->commit_low = 0; /* recorded once */
}

static void fs_disk_write(void *ud, const qraft_storage_write *w) {
  fs_wlog *wl = ud;
  fs_sim *s = wl->sim;
  if (w->hard_state != NULL && w->hard_state->term < wl->term) {
    /* A write that failed for lack of room, submitted again after one of
     * a later term that failed with it: seen already, when it was first
     * submitted (what it holds of the newest term was counted then). */
    return;
  }
  if (w->hard_state != NULL) {
    const qraft_hard_state *hs = w->hard_state;
    if (hs->term != wl->term) {
      fs_wlog_close_term(s, wl);
      wl->term = hs->term;
      wl->commit_enter = hs->commit;
      wl->commit_low = 0;
      wl->first_index = 0;
    } else if (hs->commit > wl->commit_enter &&
               (wl->commit_low == 0 || hs->commit < wl->commit_low)) {
      wl->commit_low = hs->commit;
    }
  }
  for (size_t k = 0; k < w->entries_n; k++) {
    if (wl->first_index == 0 && w->entries[k].term == wl->term) {
      wl->first_index = w->entries[k].index;
    }
  }
  fs_wlog_close_term(s, wl);
}

static void fs_check_commit_rule(fs_sim *s) {
  for (size_t k = 0; k < s->low_commits_n; k++) {
    const fs_low_commit *lc = &s->low_commits[k];
    for (size_t j = 0; j < s->leaders_n; j++) {
      if (s->leaders[j].term == lc->term &&
          s->leaders[j].leader == s->ids[lc->node]) {
        fs_fail(s, "leader_commit",
                "node %u, leader of term %" PRIu64
                ", moved its commit index to %" PRIu64 ", before %" PRIu64
                ", the first entry of its term: it committed an entry of an "
                "earlier term by counting replicas",
                lc->node, lc->term, lc->commit, lc->first_index);
      }
    }
  }
}

/* ---- the key-value state machine ---- */

static void put_u64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++) {
    p[i] = (uint8_t)(v >> (8 * i));
  }
}

static uint64_t get_u64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) {
    v |= (uint64_t)p[i] << (8 * i);
  }
  return v;
}

static uint64_t entry_hash(const qraft_entry *e) {
  uint64_t h = 0xcbf29ce484222325ULL ^ e->term;
  h = fs_hash_bytes(h, e->data.data, e->data.len);
  return h | 1; /* never 0 */
}

/* State machine safety, thesis 3.6.3 / paper figure 3: if a server has
 * applied a log entry at a given index, no other server ever applies a
 * different log entry for the same index. */
static void fs_record_applied(fs_sim *s, uint32_t node, const qraft_entry *e) {
  if (e->index >= s->applied_cap) {
    size_t cap = s->applied_cap ? s->applied_cap : 1024;
    while (cap <= e->index) {
      cap *= 2;
    }
    uint64_t *a = realloc(s->applied_hash, cap * sizeof *a);
    QRAFT_ASSERT(a != NULL);
    memset(a + s->applied_cap, 0, (cap - s->applied_cap) * sizeof *a);
    s->applied_hash = a;
    a = realloc(s->applied_data, cap * sizeof *a);
    QRAFT_ASSERT(a != NULL);
    memset(a + s->applied_cap, 0, (cap - s->applied_cap) * sizeof *a);
    s->applied_data = a;
    s->applied_cap = cap;
  }
  uint64_t h = entry_hash(e);
  if (s->applied_hash[e->index] == 0) {
    s->applied_hash[e->index] = h;
    s->applied_data[e->index] =
        fs_hash_bytes(0xcbf29ce484222325ULL, e->data.data, e->data.len);
  } else if (s->applied_hash[e->index] != h) {
    fs_fail(s, "state_machine_safety",
            "node %u applied a different entry at index %" PRIu64
            " (term %" PRIu64 ")",
            node, e->index, e->term);
  }
}

static uint64_t kv_vals_hash(const uint64_t *vals) {
  return fs_hash_bytes(0xcbf29ce484222325ULL, (const uint8_t *)vals,
                       8 * FS_KEYS) |
         1;
}

/* The state as of `index` (node `node` applied up to it), for
 * snapshot_state; every member's state as of `index` must be the one
 * recorded there first (state_equality: applying the same committed
 * entries from the same start gives the same state, so a member that
 * skipped an entry, or applied one twice, differs from then on). */
static void fs_record_state(fs_sim *s, uint32_t node, uint64_t index,
                            const uint64_t *vals) {
  if (index >= s->state_cap) {
    size_t cap = s->state_cap ? s->state_cap : 1024;
    while (cap <= index) {
      cap *= 2;
    }
    uint64_t *a = realloc(s->state_hash, cap * sizeof *a);
    QRAFT_ASSERT(a != NULL);
    memset(a + s->state_cap, 0, (cap - s->state_cap) * sizeof *a);
    s->state_hash = a;
    s->state_cap = cap;
  }
  uint64_t h = kv_vals_hash(vals);
  if (s->state_hash[index] == 0) {
    s->state_hash[index] = h;
  } else if (s->state_hash[index] != h) {
    fs_fail(s, "state_equality",
            "node %u's state once it applied up to index %" PRIu64
            " differs from the state another member had there",
            node, index);
  }
}

/* A snapshot restored as the state of `index` holds exactly the state
 * some node had once it applied up to `index`: the newest state recorded
 * at or below it (the entries between were configuration or empty ones,
 * which change nothing; every entry that does was applied somewhere before
 * any snapshot could hold it). */
static void fs_check_snapshot_state(fs_sim *s, uint32_t node, uint64_t index,
                                    const uint64_t *vals) {
  uint64_t i = 0;
  if (s->state_cap > 0) {
    i = index < s->state_cap ? index : s->state_cap - 1;
    while (i > 0 && s->state_hash[i] == 0) {
      i--;
    }
  }
  uint64_t zero[FS_KEYS] = {0};
  uint64_t want = s->state_cap > 0 && s->state_hash[i] != 0
                      ? s->state_hash[i]
                      : kv_vals_hash(zero);
  if (kv_vals_hash(vals) != want) {
    fs_fail(s, "snapshot_state",
            "node %u restored a snapshot as of index %" PRIu64
            " whose values are not the state at that index (recorded at %" PRIu64
            ")",
            node, index, i);
  }
}

static int kv_apply(void *ud, const qraft_entry *es, size_t n, uint64_t last,
                     qraft_slice *results) {
  fs_kv *kv = ud;
  fs_sim *s = kv->sim;
  if (kv->refused_from != 0) {
    /* qraft_sm_ops.apply: called again with the same entries, never
     * skipping one */
    if (n == 0 || es[0].index != kv->refused_from) {
      fs_fail(s, "apply_skipped",
              "node %u: the state machine refused index %" PRIu64
              " for lack of room; the next call began at %" PRIu64
              " (%zu entries, up to %" PRIu64 ")",
              kv->node, kv->refused_from, n > 0 ? es[0].index : 0, n, last);
    }
    kv->refused_from = 0;
  }
  for (size_t i = 0; i < n; i++) {
    const qraft_entry *e = &es[i];
    results[i] = (qraft_slice){0};
    if (e->index <= kv->index) {
      fs_fail(s, "apply_order",
              "node %u applied index %" PRIu64 " after %" PRIu64, kv->node,
              e->index, kv->index);
    }
    kv->index = e->index;
    fs_record_applied(s, kv->node, e);

    if (s->opts.trace != NULL && e->data.len == FS_OP_BYTES) {
      fprintf(s->opts.trace, "             node %u applies %" PRIu64
                             " term %" PRIu64 ": op %u key %u value %" PRIu64
                             "\n",
              kv->node, e->index, e->term, e->data.data[0], e->data.data[1],
              get_u64(e->data.data + 2));
    }
    if (e->data.len != FS_OP_BYTES) {
      continue; /* a leader's empty entry, or a probe */
    }
    const uint8_t *p = e->data.data;
    uint64_t key = p[1] % FS_KEYS;
    uint64_t v = get_u64(p + 2), vn = get_u64(p + 10);
    uint64_t out = 0;
    if (p[0] == OP_PUT) {
      kv->vals[key] = v;
    } else if (p[0] == OP_CAS) {
      if (kv->vals[key] == v) {
        kv->vals[key] = vn;
        out = 1;
      }
    }
    fs_record_state(s, kv->node, e->index, kv->vals);
    uint8_t r[16];
    put_u64(r, e->index);
    put_u64(r + 8, out);
    qraft_buf *b = qraft_buf_copy(r, sizeof r);
    QRAFT_ASSERT(b != NULL);
    results[i] = qraft_slice_of(b, b->data, b->len);
    qraft_buf_unref(b);
  }
  if (last > kv->index) {
    kv->index = last;
  }
  fs_record_state(s, kv->node, kv->index, kv->vals);
  return 0;
}

/* A snapshot: the state machine's index (u64), its values, snap_pad bytes
 * of filler drawn from that index, and a CRC-32C of everything before it. */
#define FS_SNAP_PIECE 4096

static void kv_pad(uint64_t idx, uint64_t off, uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++) {
    uint64_t o = off + i;
    uint64_t x = (idx + 1) * 0x9e3779b97f4a7c15ULL ^ (o >> 3) * 0xbf58476d1ce4e5b9ULL;
    p[i] = (uint8_t)(x >> ((o & 7) * 8));
  }
}

static int kv_snapshot(void *ud, uint64_t *index, qraft_sm_write_fn write,
                       void *wctx) {
  fs_kv *kv = ud;
  *index = kv->index;
  uint8_t b[8 + 8 * FS_KEYS];
  put_u64(b, kv->index);
  for (int k = 0; k < FS_KEYS; k++) {
    put_u64(b + 8 + 8 * k, kv->vals[k]);
  }
  uint32_t crc = qraft_crc32c(0, b, sizeof b);
  int rv = write(wctx, b, sizeof b);
  uint8_t piece[FS_SNAP_PIECE];
  for (uint64_t off = 0; rv == 0 && off < kv->sim->snap_pad;
       off += FS_SNAP_PIECE) {
    size_t n = kv->sim->snap_pad - off < FS_SNAP_PIECE
                   ? (size_t)(kv->sim->snap_pad - off)
                   : FS_SNAP_PIECE;
    kv_pad(kv->index, off, piece, n);
    crc = qraft_crc32c(crc, piece, n);
    rv = write(wctx, piece, n);
  }
  if (rv == 0) {
    put_u64(b, crc);
    rv = write(wctx, b, 8);
  }
  return rv;
}

static int kv_read_exact(qraft_sm_read_fn read, void *rctx, uint8_t *p,
                         size_t n) {
  size_t off = 0;
  while (off < n) {
    size_t got = 0;
    int rv = read(rctx, p + off, n - off, &got);
    if (rv != 0) {
      return rv;
    }
    if (got == 0) {
      return QRAFT_ETRUNCATED;
    }
    off += got;
  }
  return 0;
}

/* In steps (qraft_sm_ops.snapshot_begin/step/end): the view is a copy of
 * the values and the index; each step writes about `budget` bytes of the
 * same layout as kv_snapshot, while the node applies between steps. */
typedef struct kv_view {
  uint64_t index;
  uint64_t vals[FS_KEYS];
  uint64_t off; /* bytes of the layout written */
  uint32_t crc;
} kv_view;

static int kv_snapshot_begin(void *ud, uint64_t *index, void **view) {
  fs_kv *kv = ud;
  kv_view *v = calloc(1, sizeof *v);
  if (v == NULL) {
    return -ENOMEM;
  }
  v->index = kv->index;
  memcpy(v->vals, kv->vals, sizeof v->vals);
  *index = v->index;
  *view = v;
  return 0;
}

static int kv_snapshot_step(void *ud, void *view, size_t budget,
                            qraft_sm_write_fn write, void *wctx) {
  fs_kv *kv = ud;
  kv_view *v = view;
  uint64_t head = 8 + 8 * FS_KEYS, pad = kv->sim->snap_pad;
  size_t done = 0;
  int rv = 0;
  if (v->off == 0) {
    uint8_t b[8 + 8 * FS_KEYS];
    put_u64(b, v->index);
    for (int k = 0; k < FS_KEYS; k++) {
      put_u64(b + 8 + 8 * k, v->vals[k]);
    }
    v->crc = qraft_crc32c(0, b, sizeof b);
    rv = write(wctx, b, sizeof b);
    v->off = head;
    done += sizeof b;
  }
  uint8_t piece[FS_SNAP_PIECE];
  while (rv == 0 && done < budget && v->off < head + pad) {
    uint64_t o = v->off - head;
    size_t n = pad - o < FS_SNAP_PIECE ? (size_t)(pad - o) : FS_SNAP_PIECE;
    kv_pad(v->index, o, piece, n);
    v->crc = qraft_crc32c(v->crc, piece, n);
    rv = write(wctx, piece, n);
    v->off += n;
    done += n;
  }
  if (rv != 0) {
    return rv;
  }
  if (v->off < head + pad) {
    return 1;
  }
  uint8_t t[8];
  put_u64(t, v->crc);
  return write(wctx, t, 8);
}

static void kv_snapshot_end(void *ud, void *view) {
  (void)ud;
  free(view);
}

static void kv_sync(fs_kv *kv);

/* Restored in steps (qraft_sm_ops.restore_begin/step/end): each step reads
 * about `budget` bytes of kv_snapshot's layout into the context, checking
 * as it goes (the values, every byte of the filler against its index, the
 * checksum, nothing after the end: a partial or damaged snapshot is a
 * violation, whatever the node does with the error); the values replace
 * the state only after the last step (made durable there for a durable
 * state machine), so an abandoned restore leaves it whole. The node must apply nothing between
 * the steps: an entry applied then would be lost when the last step
 * replaces the values (canary NODE_APPLY_DURING_RESTORE). */
typedef struct kv_rstate {
  uint64_t index;  /* the snapshot's */
  uint64_t off;    /* filler bytes read */
  bool head;       /* the index and values were read */
  uint32_t crc;
  uint8_t b[8 + 8 * FS_KEYS];
} kv_rstate;

static int kv_restore_begin(void *ud, uint64_t index, void **ctx) {
  (void)ud;
  kv_rstate *r = calloc(1, sizeof *r);
  if (r == NULL) {
    return -ENOMEM;
  }
  r->index = index;
  *ctx = r;
  return 0;
}

static int kv_restore_step(void *ud, void *ctx, size_t budget,
                           qraft_sm_read_fn read, void *rctx) {
  fs_kv *kv = ud;
  fs_sim *s = kv->sim;
  kv_rstate *r = ctx;
  const char *why = NULL;
  int rv = 0;
  size_t done = 0;
  if (!r->head) {
    rv = kv_read_exact(read, rctx, r->b, sizeof r->b);
    why = rv != 0 ? "values" : NULL;
    if (rv == 0 && get_u64(r->b) > r->index) {
      why = "index ahead of the snapshot";
      rv = QRAFT_ECORRUPT;
    }
    r->crc = qraft_crc32c(0, r->b, sizeof r->b);
    r->head = true;
    done += sizeof r->b;
  }
  uint8_t piece[FS_SNAP_PIECE], want[FS_SNAP_PIECE];
  while (rv == 0 && done < budget && r->off < s->snap_pad) {
    size_t n = s->snap_pad - r->off < FS_SNAP_PIECE
                   ? (size_t)(s->snap_pad - r->off)
                   : FS_SNAP_PIECE;
    rv = kv_read_exact(read, rctx, piece, n);
    kv_pad(get_u64(r->b), r->off, want, n);
    if (rv == 0 && memcmp(piece, want, n) != 0) {
      rv = QRAFT_ECORRUPT;
    }
    if (rv != 0) {
      why = "filler";
    }
    r->crc = qraft_crc32c(r->crc, piece, n);
    r->off += n;
    done += n;
  }
  if (rv == 0 && r->off < s->snap_pad) {
    /* A step takes time (1 ms per 16 KiB, as a disk-bound restore at
     * 16 MB/s): the host is busy meanwhile and reads what arrived before
     * the next step, entries to apply among it. */
    if (s->c != NULL) {
      qraft_sim_cluster_pause(s->c, kv->node, 1 + done / (16 * 1024));
    }
    return 1;
  }
  uint8_t t[8];
  if (rv == 0) {
    rv = kv_read_exact(read, rctx, t, 8);
    if (rv == 0 && get_u64(t) != r->crc) {
      rv = QRAFT_ECORRUPT;
    }
    if (rv != 0) {
      why = "checksum";
    }
  }
  size_t extra = 0;
  if (rv == 0 && read(rctx, t, 1, &extra) == 0 && extra != 0) {
    why = "bytes after the end";
    rv = QRAFT_ECORRUPT;
  }
  if (rv != 0) {
    fs_fail(s, "snapshot_integrity",
            "node %u restored snapshot %" PRIu64 " with a bad %s (%s)",
            kv->node, r->index, why, qraft_strerror(rv));
    return rv;
  }
  for (int k = 0; k < FS_KEYS; k++) {
    kv->vals[k] = get_u64(r->b + 8 + 8 * k);
  }
  fs_check_snapshot_state(s, kv->node, r->index, kv->vals);
  kv->index = r->index;
  kv->refused_from = 0; /* the state was replaced */
  if (s->durable_sm) {
    kv_sync(kv); /* durable before the last step returns */
  }
  return 0;
}

static void kv_restore_end(void *ud, void *ctx) {
  (void)ud;
  free(ctx);
}

/* In one call: the same steps, without a budget (so without their time). */
static int kv_restore(void *ud, uint64_t index, qraft_sm_read_fn read,
                      void *rctx) {
  void *ctx = NULL;
  int rv = kv_restore_begin(ud, index, &ctx);
  if (rv == 0) {
    rv = kv_restore_step(ud, ctx, SIZE_MAX, read, rctx);
    QRAFT_ASSERT(rv != 1);
    kv_restore_end(ud, ctx);
  }
  return rv;
}

static const qraft_sm_ops kv_ops = {
    .apply = kv_apply, .snapshot = kv_snapshot, .restore = kv_restore};
static const qraft_sm_ops kv_steps_ops = {.apply = kv_apply,
                                          .snapshot = kv_snapshot,
                                          .restore = kv_restore,
                                          .snapshot_begin = kv_snapshot_begin,
                                          .snapshot_step = kv_snapshot_step,
                                          .snapshot_end = kv_snapshot_end,
                                          .restore_begin = kv_restore_begin,
                                          .restore_step = kv_restore_step,
                                          .restore_end = kv_restore_end};

/* The durable variant: the node reads the durable index on every turn of
 * its loop, which is when the copy is made once sync_ns passed (a timer
 * of the state machine's own, in simulated time). */
static void kv_sync(fs_kv *kv) {
  fs_sim *s = kv->sim;
  memcpy(s->dur[kv->node].vals, kv->vals, sizeof kv->vals);
  s->dur[kv->node].index = kv->index;
  s->dur[kv->node].synced_ns = s->c != NULL ? fs_now(s) : 0;
}

/* The durable state machine keeps its state on its node's disk: while
 * that disk is full, its copy does not move, and it refuses to apply
 * (applying none of the call, as qraft_sm_ops.apply says), as a store
 * whose commits fail for lack of room would. Its restores still land
 * (the node opens a received snapshot's writer on the same disk first). */
static bool kv_disk_full(const fs_kv *kv) {
  const fs_sim *s = kv->sim;
  return s->c != NULL && /* NULL while the cluster is made */
         qraft_simdisk_is_full(qraft_sim_cluster_disk(s->c, kv->node));
}

static int kv_durable_apply(void *ud, const qraft_entry *es, size_t n,
                            uint64_t last, qraft_slice *results) {
  fs_kv *kv = ud;
  fs_sim *s = kv->sim;
  if (kv_disk_full(kv)) {
    s->apply_refused++;
    if (n > 0 && kv->refused_from == 0) {
      kv->refused_from = es[0].index;
    }
    if (s->opts.trace != NULL) {
      fprintf(s->opts.trace, "             node %u refuses to apply %zu "
                             "entries up to %" PRIu64 ": disk full\n",
              kv->node, n, last);
    }
    return -ENOSPC;
  }
  return kv_apply(ud, es, n, last, results);
}

static uint64_t kv_durable_index(void *ud) {
  fs_kv *kv = ud;
  fs_sim *s = kv->sim;
  if (s->c != NULL && /* NULL while the cluster is made */
      fs_now(s) - s->dur[kv->node].synced_ns >= s->sync_ns &&
      !kv_disk_full(kv)) {
    kv_sync(kv);
  }
  return s->dur[kv->node].index;
}

static const qraft_sm_ops kv_durable_ops = {.apply = kv_durable_apply,
                                            .snapshot = kv_snapshot,
                                            .restore = kv_restore,
                                            .durable_index = kv_durable_index};
static const qraft_sm_ops kv_durable_steps_ops = {
    .apply = kv_durable_apply,
    .snapshot = kv_snapshot,
    .restore = kv_restore,
    .durable_index = kv_durable_index,
    .snapshot_begin = kv_snapshot_begin,
    .snapshot_step = kv_snapshot_step,
    .snapshot_end = kv_snapshot_end,
    .restore_begin = kv_restore_begin,
    .restore_step = kv_restore_step,
    .restore_end = kv_restore_end};

static void *kv_new(void *ud, uint32_t i) {
  fs_kv *kv = calloc(1, sizeof *kv);
  if (kv != NULL) {
    fs_sim *s = ud;
    kv->sim = s;
    kv->node = i;
    if (s->durable_sm) { /* it opens its durable state */
      memcpy(kv->vals, s->dur[i].vals, sizeof kv->vals);
      kv->index = s->dur[i].index;
    }
  }
  return kv;
}

static void kv_free(void *ud, uint32_t i, void *sm) {
  (void)ud;
  (void)i;
  free(sm);
}

/* ---- checks while running ---- */

/* Check-quorum (thesis 6.2): a leader that the sim has cut off from a
 * quorum of its voters (links blocked both ways count, as do voters down
 * or paused) steps down within two election timeouts of its own clock.
 * Not judged while its own host is paused, while any of its links is
 * clogged (late messages may still reach it), or while the membership is
 * changing (the core counts the newest configuration, the status shows
 * the applied one). */
/* Whether node i's packets can reach node j's and back as the sim set the
 * links: directly, or through the relay. */
/* Whether two members' NATs let a direct path open (with the relay's
 * help): not when both filter by address and port and one of them maps
 * per destination. */
static bool fs_nat_direct(const fs_sim *s, uint32_t i, uint32_t j) {
  qraft_simnet_nat a = s->nat[i], b = s->nat[j];
  bool apdf = a >= QRAFT_SIMNET_NAT_RESTRICTED && b >= QRAFT_SIMNET_NAT_RESTRICTED;
  return !(apdf && (a == QRAFT_SIMNET_NAT_SYMMETRIC ||
                    b == QRAFT_SIMNET_NAT_SYMMETRIC));
}

/* (A member that knows no direct address of another, relay_only or behind
 * a NAT, learns it through the relay and probes: counted as reachable
 * directly when the links and NATs allow, which may be generous while the
 * relay is down.) */
static bool fs_reach(const fs_sim *s, uint32_t i, uint32_t j) {
  bool direct =
      !s->blocked[i][j] && !s->blocked[j][i] && fs_nat_direct(s, i, j);
  bool relay = s->relay && s->relay_restart_at_ns == 0 && !s->relay_cut[i] &&
               !s->relay_cut[j];
  return direct || relay;
}

static void fs_check_quorum(fs_sim *s, uint32_t i, const qraft_node_status *st,
                            uint64_t now) {
  bool judge = s->check_quorum && st->role == QRAFT_ROLE_LEADER &&
               !st->joint && fs_conf_quiet(s, now) &&
               s->pause_until_ns[i] <= now;
  for (uint32_t j = 0; judge && j < s->total; j++) {
    if (s->clog_until_ns[i][j] > now || s->clog_until_ns[j][i] > now ||
        s->relay_clog_until_ns[j] > now) {
      judge = false;
    }
  }
  if (!judge) {
    s->isolated_since_ns[i] = 0;
    return;
  }
  fs_conf cf;
  fs_conf_of(st, &cf);
  uint32_t reach = 0;
  for (uint32_t k = 0; k < cf.n; k++) {
    int j = fs_index_of(s, cf.voters[k]);
    if (j == (int)i) {
      reach++;
    } else if (j >= 0 && qraft_sim_cluster_node(s->c, (uint32_t)j) != NULL &&
               s->pause_until_ns[j] <= now && fs_reach(s, i, (uint32_t)j)) {
      reach++;
    }
  }
  if (2 * reach > cf.n) {
    s->isolated_since_ns[i] = 0;
    return;
  }
  if (s->isolated_since_ns[i] == 0 || s->isolated_term[i] != st->term) {
    s->isolated_since_ns[i] = now;
    s->isolated_term[i] = st->term;
    return;
  }
  /* two election timeouts, the tick that starts the count, clock skew (at
   * most 2%) and the messages already on the way */
  uint64_t limit = (2 * FS_ELECTION_TICKS + 3) * FS_TICK_MS * 1030000ull +
                   s->delay_max_ns + 5000000ull;
  if (now - s->isolated_since_ns[i] > limit) {
    fs_fail(s, "check_quorum",
            "node %u kept leading term %" PRIu64 " for %" PRIu64
            " ms cut off from a quorum of its %u voters (reaches %u)",
            i, st->term, (now - s->isolated_since_ns[i]) / 1000000u, cf.n,
            reach);
  }
}

/* Steady seeds: a new term has a leader. Leadership may move only if the
 * leader of the last term stalled long enough for its followers to miss
 * it, and the change came during that stall or soon after it. */
static void fs_check_steady(fs_sim *s, uint32_t i, uint64_t term,
                            uint64_t now) {
  if (term <= s->steady_term) {
    return;
  }
  int j = s->steady_leader;
  s->steady_leader = (int)i;
  uint64_t old_term = s->steady_term;
  s->steady_term = term;
  if (j < 0) {
    return; /* the first leader */
  }
  uint64_t len = s->stall_end_ns[j] - s->stall_start_ns[j];
  bool justified = s->stall_start_ns[j] != 0 && len >= FS_STEADY_JUSTIFY_NS &&
                   now >= s->stall_start_ns[j] &&
                   now <= s->stall_end_ns[j] + FS_STEADY_WINDOW_NS;
  if (!justified) {
    char last[96] = "it never stalled";
    if (s->stall_start_ns[j] != 0) {
      snprintf(last, sizeof last, "its last stall: %.1f ms, ended %.1f ms ago",
               (double)len / 1e6,
               ((double)now - (double)s->stall_end_ns[j]) / 1e6);
    }
    fs_fail(s, "steady",
            "leadership moved from node %d (term %" PRIu64 ") to node %u "
            "(term %" PRIu64 ") on a healthy network; %s (a change needs a "
            "stall of the leader of %.0f ms or more that ended at most "
            "%.0f ms before)",
            j, old_term, i, term, last, (double)FS_STEADY_JUSTIFY_NS / 1e6,
            (double)FS_STEADY_WINDOW_NS / 1e6);
  }
}

/* No member stops on its own: out of space is a state (qraft/node.h,
 * QRAFT_ALARM_NOSPACE), and no other fault the simulator injects but a
 * crash (which it makes itself, and does not count) takes a node down. */
static void fs_check_stops(fs_sim *s) {
  for (uint32_t i = 0; i < s->total; i++) {
    char why[256];
    uint64_t stops = qraft_sim_cluster_node_stops(s->c, i, why, sizeof why);
    if (stops == s->stops_seen[i]) {
      continue;
    }
    s->stops_seen[i] = stops;
    bool space = s->space_hit[i] || strstr(why, "space") != NULL;
    fs_fail(s, space ? "nospace_fatal" : "node_fatal",
            "node %u stopped on its own%s: %s", i,
            space ? " (its disk had run out of space)" : "", why);
  }
}

/* The path layer: a node whose direct links to a member are cut (the relay
 * up, both connected to it) must not stay on the direct path alone past
 * path_quiet_ms: it would send every packet into the void. */
static void fs_check_path(fs_sim *s, uint32_t i, const qraft_node_status *st,
                          uint64_t now) {
  for (uint32_t k = 0; s->evil != NULL && k < st->members_n; k++) {
    const struct sockaddr_in *d =
        (const struct sockaddr_in *)&st->members[k].direct_addr;
    if (d->sin_family == AF_INET &&
        d->sin_addr.s_addr == s->evil_addr.sin_addr.s_addr) {
      fs_fail(s, "path_unprobed",
              "node %u sends to node %d at the attacker's address, which "
              "only replayed that member's packets (no probe from it was "
              "authenticated)",
              i, fs_index_of(s, st->members[k].id));
    }
  }
  /* Packets held by a pause of the node are read when it resumes, and
   * count as fresh: the window starts then. */
  if (!s->relay || s->relay_restart_at_ns != 0 ||
      now - s->relay_changed_ns < 2 * FS_PATH_QUIET_NS ||
      s->pause_until_ns[i] + FS_PATH_QUIET_NS + FS_PATH_GRACE_NS > now) {
    return;
  }
  for (uint32_t k = 0; k < st->members_n; k++) {
    int j = fs_index_of(s, st->members[k].id);
    if (j < 0 || j == (int)i) {
      continue;
    }
    /* Judged between a leader and its followers only, where packets flow
     * every heartbeat, and from when they became so: an idle pair (two
     * followers) sends nothing into a dead path, and its status says
     * direct until it sends. */
    bool busy = st->role == QRAFT_ROLE_LEADER || st->members[k].id == st->leader;
    if (!busy) {
      s->busy_since_ns[i][j] = 0;
      continue;
    }
    if (s->busy_since_ns[i][j] == 0) {
      s->busy_since_ns[i][j] = now;
    }
    if (s->direct_cut_ns[i][j] == 0 || !st->members[k].connected) {
      continue;
    }
    /* Packets on their way when the links were cut still arrive, later
     * if a clog held them: the window starts when the last can land. */
    uint64_t from = s->direct_cut_ns[i][j];
    if (s->busy_since_ns[i][j] > from) {
      from = s->busy_since_ns[i][j];
    }
    if (s->clog_until_ns[i][j] > from) {
      from = s->clog_until_ns[i][j];
    }
    if (s->clog_until_ns[j][i] > from) {
      from = s->clog_until_ns[j][i];
    }
    if (now < from + FS_PATH_QUIET_NS + FS_PATH_GRACE_NS + s->delay_max_ns) {
      continue;
    }
    s->path_checks++;
    if (st->members[k].path == QRAFT_PATH_DIRECT) {
      fs_fail(s, "path_fallback",
              "node %u still sends to node %d on the direct path alone %" PRIu64
              " ms after its direct links were cut (the relay is up)",
              i, j, (now - s->direct_cut_ns[i][j]) / 1000000u);
    }
  }
}

static void fs_check_statuses(fs_sim *s) {
  uint64_t now = fs_now(s);
  for (uint32_t i = 0; i < s->total; i++) {
    qraft_node *node = qraft_sim_cluster_node(s->c, i);
    if (node == NULL) {
      s->proc[i].seen = false;
      s->isolated_since_ns[i] = 0;
      continue;
    }
    qraft_node_status st;
    qraft_node_status_get(node, &st);
    fs_proc *p = &s->proc[i];
    if (p->seen && st.term < p->term) {
      fs_fail(s, "term_monotonic",
              "node %u went from term %" PRIu64 " to %" PRIu64, i, p->term,
              st.term);
    }
    if (p->seen && st.commit < p->commit) {
      fs_fail(s, "commit_monotonic",
              "node %u went from commit %" PRIu64 " to %" PRIu64, i,
              p->commit, st.commit);
    }
    if (!p->seen || st.term != p->term) {
      fs_event(s, 0x7e00 ^ ((uint64_t)i << 32) ^ st.term, "node %u term %" PRIu64,
               i, st.term);
    }
    p->seen = true;
    p->term = st.term;
    p->commit = st.commit;
    if (st.term > s->res->max_term) {
      s->res->max_term = st.term;
    }
    if (st.commit > s->res->max_commit) {
      s->res->max_commit = st.commit;
    }
    fs_check_quorum(s, i, &st, now);
    fs_check_path(s, i, &st, now);
    if (st.sm_rebuilds_lost > 0) {
      fs_fail(s, "sm_durable_contract",
              "node %u restarted behind a snapshot of its own: the log was "
              "compacted past its state machine's durable index (%" PRIu64
              " now)",
              i, st.sm_durable_index);
    }
    if (st.role != QRAFT_ROLE_LEADER) {
      continue;
    }
    if (!st.joint && st.members_n > 0) {
      fs_conf cf;
      fs_conf_of(&st, &cf);
      fs_note_conf(s, &cf);
    }
    /* Election safety (paper figure 3): at most one leader per term. */
    bool found = false;
    for (size_t k = 0; k < s->leaders_n; k++) {
      fs_leader *l = &s->leaders[k];
      if (l->term != st.term) {
        continue;
      }
      found = true;
      if (l->leader != st.id) {
        fs_fail(s, "election_safety",
                "two leaders in term %" PRIu64 ": %016" PRIx64
                " and %016" PRIx64 " (node %u)",
                st.term, l->leader, st.id, i);
      }
    }
    if (!found) {
      if (s->leaders_n == s->leaders_cap) {
        s->leaders_cap = s->leaders_cap ? 2 * s->leaders_cap : 64;
        s->leaders = realloc(s->leaders, s->leaders_cap * sizeof *s->leaders);
        QRAFT_ASSERT(s->leaders != NULL);
      }
      s->leaders[s->leaders_n] = (fs_leader){.term = st.term,
                                             .leader = st.id};
      s->leaders_n++;
      s->res->elections_won++;
      fs_event(s, 0x1ead ^ ((uint64_t)i << 32) ^ st.term,
               "node %u leads term %" PRIu64, i, st.term);
      if (s->steady) {
        fs_check_steady(s, i, st.term, now);
      }
      /* A flaky leader: it dies young, perhaps with entries of its term
       * on a minority only. */
      if (s->leader_kill_ppm > 0 && now < s->faults_end_ns &&
          s->doom_at_ns[i] == 0 &&
          qraft_prng_chance(&s->rng, s->leader_kill_ppm, 1000000)) {
        s->doom_at_ns[i] = now + qraft_prng_between(&s->rng, 1, 30) * 1000000ull;
        s->doom_term[i] = st.term;
        s->doom_crash[i] = qraft_prng_chance(&s->rng, 1, 2);
      }
    }
  }
  if (now - s->rule_checked_ns >= 100000000ull) {
    /* records wait for the status to show who led their term */
    s->rule_checked_ns = now;
    fs_check_commit_rule(s);
  }
  for (uint32_t i = 0; i < s->total; i++) {
    const char *v = qraft_simdisk_violation(qraft_sim_cluster_disk(s->c, i));
    if (v != NULL) {
      fs_fail(s, "storage_contract", "node %u: %s", i, v);
    }
  }
  fs_check_stops(s);
}

static bool fs_step_done(void *ud) {
  fs_sim *s = ud;
  uint64_t now = fs_now(s);
  if (now - s->last_check_ns >= FS_CHECK_EVERY_NS) {
    s->last_check_ns = now;
    fs_check_statuses(s);
  }
  return s->failed || s->crash_soon;
}

/* ---- clients ---- */

static void fs_client_end(fs_sim *s, fs_client *cl, const char *how) {
  cl->busy = false;
  cl->next_ns = fs_now(s) + qraft_prng_between(&s->rng, 2, 40) * 1000000ull;
  fs_event(s, 0xc11e ^ ((uint64_t)cl->id << 32) ^ cl->op_seq ^ how[0],
           "client %u op %" PRIu64 " %s", cl->id, cl->op_seq, how);
}

static void fs_info(fs_sim *s, fs_client *cl, const char *how) {
  int rv = qraft__lincheck_info(s->hist, cl->id, fs_now(s), NULL);
  QRAFT_ASSERT(rv == 0);
  s->res->ops_info++;
  fs_client_end(s, cl, how);
}

/* Resolves the op if it is still the client's current one. */
static fs_client *fs_op_take(fs_op *op) {
  fs_sim *s = op->sim;
  fs_client *cl = op->client;
  bool current = !s->closing && cl->busy && cl->op_seq == op->seq;
  free(op);
  return current ? cl : NULL;
}

static void fs_note_leader(fs_sim *s, fs_client *cl, qraft_id leader) {
  cl->leader_hint = -1;
  if (leader == 0) {
    return;
  }
  int i = fs_index_of(s, leader);
  if (i >= 0 && qraft_sim_cluster_node(s->c, (uint32_t)i) != NULL) {
    cl->leader_hint = i;
  }
}

static void fs_propose_cb(void *ud, int status, qraft_slice result,
                          qraft_id leader) {
  fs_op *op = ud;
  fs_sim *s = op->sim;
  uint32_t node = op->node;
  fs_client *cl = fs_op_take(op);
  if (cl == NULL) {
    return;
  }
  if (status == -ENOSPC) {
    /* Refused before it was proposed (a member, or a quorum, out of
     * space: qraft/node.h): it did not happen. */
    int rv = qraft__lincheck_fail(s->hist, cl->id, fs_now(s), NULL);
    QRAFT_ASSERT(rv == 0);
    s->res->ops_fail++;
    fs_client_end(s, cl, "no space");
    return;
  }
  if (status != 0 || result.len != 16) {
    fs_note_leader(s, cl, leader);
    fs_info(s, cl, "unknown");
    return;
  }
  uint64_t index = get_u64(result.data), out = get_u64(result.data + 8);
  uint64_t res = cl->f == OP_CAS ? out : 0;
  int rv = qraft__lincheck_complete(s->hist, cl->id, fs_now(s), res, NULL);
  QRAFT_ASSERT(rv == 0);
  s->res->ops_ok++;
  /* Durability: remember what an acknowledged write must stay. */
  uint8_t d[FS_OP_BYTES];
  d[0] = (uint8_t)cl->f;
  d[1] = (uint8_t)cl->key;
  put_u64(d + 2, cl->value);
  put_u64(d + 10, cl->value_new);
  if (s->acked_n == s->acked_cap) {
    s->acked_cap = s->acked_cap ? 2 * s->acked_cap : 256;
    s->acked = realloc(s->acked, s->acked_cap * sizeof *s->acked);
    QRAFT_ASSERT(s->acked != NULL);
  }
  uint64_t hash = fs_hash_bytes(0xcbf29ce484222325ULL, d, sizeof d);
  s->acked[s->acked_n].index = index;
  s->acked[s->acked_n].hash = hash;
  s->acked_n++;
  if (index > s->acked_max) {
    s->acked_max = index;
  }
  fs_check_ack_durable(s, node, index, hash);
  /* Sometimes crash at once, before the followers' disks catch up. */
  if (s->p_crash_after_ack > 0 && fs_now(s) < s->faults_end_ns &&
      qraft_prng_chance(&s->rng, s->p_crash_after_ack, 1000000)) {
    s->crash_soon = true;
  }
  cl->leader_hint = (int)node;
  if (s->opts.trace != NULL) {
    fprintf(s->opts.trace, "             client %u op %" PRIu64
                           " applied at index %" PRIu64 " on node %u\n",
            cl->id, cl->op_seq, index, node);
  }
  fs_client_end(s, cl, out ? "ok swapped" : "ok");
}

static void fs_read_cb(void *ud, int status, qraft_id leader) {
  fs_op *op = ud;
  fs_sim *s = op->sim;
  uint32_t node = op->node;
  fs_client *cl = fs_op_take(op);
  if (cl == NULL) {
    return;
  }
  if (status != 0) {
    fs_note_leader(s, cl, leader);
    fs_info(s, cl, "read unknown");
    return;
  }
  /* Linearizable: read the local state machine from the callback. */
  fs_kv *kv = qraft_sim_cluster_sm(s->c, node);
  QRAFT_ASSERT(kv != NULL);
  uint64_t v = kv->vals[cl->key];
  int rv = qraft__lincheck_complete(s->hist, cl->id, fs_now(s), v, NULL);
  QRAFT_ASSERT(rv == 0);
  s->res->ops_ok++;
  cl->leader_hint = (int)node;
  fs_client_end(s, cl, "read ok");
}

static void fs_client_start(fs_sim *s, fs_client *cl) {
  int target = cl->leader_hint;
  if (target < 0 || qraft_sim_cluster_node(s->c, (uint32_t)target) == NULL ||
      qraft_prng_chance(&s->rng, 1, 4)) {
    target = (int)qraft_prng_below(&s->rng, s->total);
  }
  /* While an old leader is cut off, some clients still talk to it (their
   * last answer came from there) and only read: it must not answer from
   * its own state (a write there would only hang until it times out). */
  if (s->stale_node >= 0 &&
      qraft_sim_cluster_node(s->c, (uint32_t)s->stale_node) != NULL &&
      qraft_prng_chance(&s->rng, 1, 3)) {
    target = s->stale_node;
  }
  bool stale = target == s->stale_node;
  qraft_node *node = qraft_sim_cluster_node(s->c, (uint32_t)target);
  uint64_t now = fs_now(s);
  if (node == NULL) {
    cl->next_ns = now + 5000000ull;
    cl->leader_hint = -1;
    return;
  }
  uint64_t r = qraft_prng_below(&s->rng, 10);
  cl->f = stale ? OP_GET : r < 4 ? OP_PUT : r < 7 ? OP_GET : OP_CAS;
  cl->key = qraft_prng_below(&s->rng, FS_KEYS);
  cl->value = cl->value_new = 0;
  if (cl->f == OP_PUT) {
    cl->value = ++s->next_value;
    s->last_put[cl->key] = cl->value;
  } else if (cl->f == OP_CAS) {
    /* expect a recent value, so that some swaps succeed */
    cl->value = s->last_put[cl->key] != 0 ? s->last_put[cl->key] : 1;
    cl->value_new = ++s->next_value;
    s->last_put[cl->key] = cl->value_new;
  }
  cl->op_seq++;
  cl->busy = true;
  cl->target = (uint32_t)target;
  cl->deadline_ns = now + FS_OP_TIMEOUT_MS * 1000000ull;
  int rv = qraft__lincheck_invoke(s->hist, cl->id, now,
                                  (qraft__lincheck_f)cl->f, cl->key, cl->value,
                                  cl->value_new, NULL);
  QRAFT_ASSERT(rv == 0);
  fs_event(s, 0xc100 ^ ((uint64_t)cl->id << 32) ^ ((uint64_t)cl->f << 24) ^
                  cl->key ^ ((uint64_t)target << 16),
           "client %u op %" PRIu64 " %s key %" PRIu64 " %" PRIu64
           " %" PRIu64 " at node %d",
           cl->id, cl->op_seq,
           cl->f == OP_PUT ? "put" : cl->f == OP_GET ? "get" : "cas", cl->key,
           cl->value, cl->value_new, target);
  fs_op *op = calloc(1, sizeof *op);
  QRAFT_ASSERT(op != NULL);
  *op = (fs_op){.sim = s, .client = cl, .seq = cl->op_seq,
                .node = (uint32_t)target};
  if (cl->f == OP_GET) {
    rv = qraft_node_read_barrier(node, fs_read_cb, op);
  } else {
    uint8_t d[FS_OP_BYTES];
    d[0] = (uint8_t)cl->f;
    d[1] = (uint8_t)cl->key;
    put_u64(d + 2, cl->value);
    put_u64(d + 10, cl->value_new);
    rv = qraft_node_propose(node, d, sizeof d, fs_propose_cb, op);
  }
  if (rv != 0) {
    /* Refused before it was queued: it did not happen. */
    free(op);
    rv = qraft__lincheck_fail(s->hist, cl->id, now, NULL);
    QRAFT_ASSERT(rv == 0);
    s->res->ops_fail++;
    fs_client_end(s, cl, "refused");
  }
}

static void fs_clients_step(fs_sim *s, bool start_new) {
  uint64_t now = fs_now(s);
  for (uint32_t k = 0; k < s->clients_n; k++) {
    fs_client *cl = &s->clients[k];
    if (cl->busy && now >= cl->deadline_ns) {
      fs_info(s, cl, "timed out");
    }
    if (start_new && !cl->busy && now >= cl->next_ns && !s->failed) {
      fs_client_start(s, cl);
    }
  }
}

/* ---- faults ---- */

static bool fs_node_in_play(fs_sim *s, uint32_t i) {
  return s->started[i] && !s->retired[i];
}

static void fs_block(fs_sim *s, uint32_t i, uint32_t j, bool both) {
  qraft_sim_cluster_block(s->c, i, j, both, true);
  s->blocked[i][j] = true;
  if (both) {
    s->blocked[j][i] = true;
  }
}

static void fs_heal_links(fs_sim *s) {
  qraft_sim_cluster_heal(s->c);
  memset(s->blocked, 0, sizeof s->blocked);
  memset(s->clog_until_ns, 0, sizeof s->clog_until_ns);
  s->heal_at_ns = 0;
  s->stale_node = -1;
  if (s->relay) {
    memset(s->relay_cut, 0, sizeof s->relay_cut);
    memset(s->relay_clog_until_ns, 0, sizeof s->relay_clog_until_ns);
    memset(s->direct_cut_ns, 0, sizeof s->direct_cut_ns);
    s->direct_cut_end_ns = 0;
    s->relay_changed_ns = fs_now(s);
  }
}

/* The relay's faults (seeds with a relay). */
static void fs_relay_step(fs_sim *s, uint64_t now) {
  if (s->relay_restart_at_ns != 0 && now >= s->relay_restart_at_ns) {
    s->relay_restart_at_ns = 0;
    s->relay_changed_ns = now;
    int rv = qraft_sim_cluster_relay_restart(s->c);
    fs_event(s, 0x7e1a4, "restart the relay: %d", rv);
    if (rv != 0) {
      fs_fail(s, "restart", "the relay could not restart: %s",
              qraft_strerror(rv));
    }
  }
  if (s->direct_cut_end_ns != 0 && now >= s->direct_cut_end_ns) {
    /* the cut pair's direct links come back (unless a partition holds) */
    for (uint32_t i = 0; i < s->total; i++) {
      for (uint32_t j = 0; j < s->total; j++) {
        if (s->direct_cut_ns[i][j] != 0 && !s->blocked[i][j]) {
          qraft_sim_cluster_block(s->c, i, j, false, false);
        }
      }
    }
    memset(s->direct_cut_ns, 0, sizeof s->direct_cut_ns);
    s->direct_cut_end_ns = 0;
    fs_event(s, 0xd1ec7, "direct links back");
  }
  if (now >= s->faults_end_ns) {
    return;
  }
  if (s->relay_restart_at_ns == 0 &&
      qraft_prng_chance(&s->relay_rng, s->p_relay_crash, 1000000)) {
    qraft_sim_cluster_relay_crash(s->c);
    uint64_t ms = qraft_prng_between(&s->relay_rng, 100, 3000);
    s->relay_restart_at_ns = now + ms * 1000000ull;
    s->relay_changed_ns = now;
    s->relay_crashes++;
    fs_event(s, 0x7e1ac ^ (ms << 8), "crash the relay for %" PRIu64 " ms", ms);
  }
  if (qraft_prng_chance(&s->relay_rng, s->p_relay_clog, 1000000)) {
    uint32_t i = (uint32_t)qraft_prng_below(&s->relay_rng, s->total);
    uint64_t ms = qraft_prng_between(&s->relay_rng, 50, 1000);
    qraft_sim_cluster_relay_clog(s->c, i, ms);
    if (now + ms * 1000000ull > s->relay_clog_until_ns[i]) {
      s->relay_clog_until_ns[i] = now + ms * 1000000ull;
    }
    fs_event(s, 0x7e1c1 ^ ((uint64_t)i << 8) ^ (ms << 16),
             "clog the relay to node %u for %" PRIu64 " ms", i, ms);
  }
  if (!s->relay_only && s->direct_cut_end_ns == 0 && s->heal_at_ns == 0 &&
      qraft_prng_chance(&s->relay_rng, s->p_direct_cut, 1000000)) {
    /* A member loses its direct paths to another (or to all the others):
     * they must go on through the relay. */
    uint32_t i = (uint32_t)qraft_prng_below(&s->relay_rng, s->total);
    bool all = qraft_prng_chance(&s->relay_rng, 1, 3);
    uint32_t only = (uint32_t)qraft_prng_below(&s->relay_rng, s->total);
    for (uint32_t j = 0; j < s->total; j++) {
      if (j == i || (!all && j != only)) {
        continue;
      }
      qraft_sim_cluster_block(s->c, i, j, true, true);
      s->direct_cut_ns[i][j] = s->direct_cut_ns[j][i] = now;
    }
    uint64_t ms = qraft_prng_between(&s->relay_rng, 1000, 8000);
    s->direct_cut_end_ns = now + ms * 1000000ull;
    s->direct_cuts++;
    fs_event(s, 0xd1ecc ^ ((uint64_t)i << 8) ^ (ms << 16),
             "cut the direct links of node %u to %s for %" PRIu64 " ms", i,
             all ? "all" : "one other", ms);
  }
  if (s->evil != NULL && s->spied_n > 0 &&
      qraft_prng_chance(&s->relay_rng, s->p_spoof, 1000000)) {
    /* The attacker replays a member's packet it saw, from its own
     * address, to the member it was for. */
    uint32_t k = (uint32_t)qraft_prng_below(
        &s->relay_rng, s->spied_n < 4 ? s->spied_n : 4);
    qraft_env_udp_send(s->evil, (const struct sockaddr *)&s->spied[k].to,
                       s->spied[k].pkt, s->spied[k].len);
    s->spoofs++;
    fs_event(s, 0x5b00f ^ ((uint64_t)k << 8),
             "replay a member's packet from the attacker's address");
  }
}

/* The attacker's view of the wire: now and then a copy of a QUIC packet
 * (short header) from one member's host to another's. */
static void fs_spy(void *ud, const struct sockaddr *from,
                   const struct sockaddr *to, const uint8_t *data, size_t len) {
  fs_sim *s = ud;
  if (len < 64 || len > sizeof s->spied[0].pkt || (data[0] & 0xc0) != 0x40 ||
      (s->spy_count++ & 15) != 0) {
    return;
  }
  uint32_t fi = ntohl(((const struct sockaddr_in *)from)->sin_addr.s_addr) &
                0xffffu;
  uint32_t ti = ntohl(((const struct sockaddr_in *)to)->sin_addr.s_addr) &
                0xffffu;
  /* member i is on host i + 2 (host 1 is the cluster's control host) */
  if (fi < 2 || fi >= 2 + s->total || ti < 2 || ti >= 2 + s->total) {
    return;
  }
  uint32_t k = s->spied_n++ % 4;
  memcpy(s->spied[k].pkt, data, len);
  s->spied[k].len = len;
  memcpy(&s->spied[k].to, to, sizeof s->spied[k].to);
}

static void fs_evil_recv(void *ud, const struct sockaddr *from,
                         const uint8_t *data, size_t len) {
  (void)ud, (void)from, (void)data, (void)len;
}

/* Counts a node's snapshots into the summary before it goes (its counters
 * start again with each start). */
static void fs_count_node(fs_sim *s, uint32_t i) {
  qraft_node *nd = qraft_sim_cluster_node(s->c, i);
  if (nd == NULL) {
    return;
  }
  qraft_node_status st;
  qraft_node_status_get(nd, &st);
  s->res->snapshots_sent += st.snapshot_sends_done;
  s->res->compactions += st.snapshots_taken;
  s->res->snapshots_installed += st.snapshots_installed;
  s->res->snapshot_transfers_cut +=
      st.snapshot_sends_failed + st.snapshot_recvs_aborted;
  s->res->restore_steps += st.snapshot_restore_steps;
  s->res->restore_waited += st.restore_waited_entries;
  s->res->compactions_stateless += st.snapshots_stateless;
  s->res->sends_from_state += st.snapshot_sends_from_state;
}

static void fs_crash_node(fs_sim *s, uint32_t i, uint64_t now) {
  if (qraft_sim_cluster_node(s->c, i) == NULL) {
    return;
  }
  fs_count_node(s, i);
  qraft_simdisk_stats before, after;
  qraft_simdisk_stats_get(qraft_sim_cluster_disk(s->c, i), &before);
  qraft_sim_cluster_crash(s->c, i);
  qraft_simdisk_stats_get(qraft_sim_cluster_disk(s->c, i), &after);
  s->proc[i].seen = false;
  s->pause_until_ns[i] = 0;
  s->doom_at_ns[i] = 0;
  s->restart_at_ns[i] =
      now + qraft_prng_between(&s->rng, 20, s->restart_ms_max) * 1000000ull;
  s->res->crashes++;
  fs_event(s, 0xc7a5 ^ ((uint64_t)i << 32) ^
                  (after.writes_lost - before.writes_lost),
           "crash node %u (%" PRIu64 " writes lost)", i,
           after.writes_lost - before.writes_lost);
}

/* A power loss takes every node down at once: only what each disk made
 * durable survives. */
static void fs_power_loss(fs_sim *s, uint64_t now) {
  fs_event(s, 0x90e7, "power loss");
  for (uint32_t i = 0; i < s->total; i++) {
    fs_crash_node(s, i, now);
  }
}

static void fs_relay_cut(fs_sim *s, uint32_t i) {
  if (s->relay && !s->relay_cut[i]) {
    qraft_sim_cluster_relay_block(s->c, i, true);
    s->relay_cut[i] = true;
    s->relay_changed_ns = fs_now(s);
  }
}

static void fs_isolate(fs_sim *s, uint32_t i) {
  for (uint32_t j = 0; j < s->total; j++) {
    if (j != i) {
      fs_block(s, i, j, true);
    }
  }
  fs_relay_cut(s, i); /* or it would talk through the relay */
}

static void fs_partition(fs_sim *s, uint64_t now) {
  int l = qraft_sim_cluster_leader(s->c);
  uint64_t kind = qraft_prng_below(&s->rng, 5);
  uint64_t heal_ms = qraft_prng_between(&s->rng, 100, 3000);
  if (kind >= 3 && l < 0) {
    kind = 0;
  }
  if (kind == 0) {
    uint32_t i = (uint32_t)qraft_prng_below(&s->rng, s->total);
    fs_isolate(s, i);
    fs_event(s, 0x150 ^ i, "isolate node %u", i);
  } else if (kind == 3) {
    /* the leader alone: a new one is elected while clients may still
     * talk to the old one */
    fs_isolate(s, (uint32_t)l);
    s->stale_node = l;
    heal_ms = qraft_prng_between(&s->rng, 500, 4000);
    fs_event(s, 0x1501 ^ (uint64_t)l, "isolate the leader, node %d", l);
  } else {
    /* a random split; kind 2 makes it one-way; kind 4 puts the leader on
     * the minority side */
    uint64_t mask = qraft_prng_below(&s->rng, 1ull << s->total);
    if (kind == 4) {
      mask = 1ull << l;
      uint32_t more = (uint32_t)qraft_prng_below(&s->rng, (s->total + 1) / 2);
      for (uint32_t k = 0; k < more; k++) {
        uint64_t bit = 1ull << qraft_prng_below(&s->rng, s->total);
        if (__builtin_popcountll(mask | bit) < (int)(s->total + 1) / 2) {
          mask |= bit;
        }
      }
      s->stale_node = l;
      heal_ms = qraft_prng_between(&s->rng, 500, 4000);
    }
    for (uint32_t i = 0; i < s->total; i++) {
      for (uint32_t j = 0; j < s->total; j++) {
        if (((mask >> i) & 1) && !((mask >> j) & 1)) {
          fs_block(s, i, j, kind != 2);
        }
      }
    }
    /* The relay stays with the larger side (the mask's on a tie). */
    uint32_t in = 0;
    for (uint32_t i = 0; i < s->total; i++) {
      in += (uint32_t)((mask >> i) & 1);
    }
    for (uint32_t i = 0; s->relay && i < s->total; i++) {
      if (((mask >> i) & 1) == (2 * in > s->total ? 0u : 1u) && in > 0 &&
          in < s->total) {
        fs_relay_cut(s, i);
      }
    }
    fs_event(s, 0x5b17 ^ mask ^ (kind << 16), "partition %s mask %" PRIx64,
             kind == 2 ? "one way" : kind == 4 ? "leader in the minority"
                                               : "both ways",
             mask);
  }
  s->heal_at_ns = now + heal_ms * 1000000ull;
  s->res->partitions++;
}

/* ---- membership ---- */

static void fs_conf_cb(void *ud, int status, qraft_id leader) {
  (void)leader;
  fs_conf_req *r = ud;
  fs_sim *s = r->sim;
  if (!s->closing) {
    if (r->kind == FS_REQ_TRANSFER) {
      if (status == 0) {
        s->res->transfers++;
      }
    } else {
      s->conf_busy = false;
      s->conf_change_ns = fs_now(s);
      if (r->kind == FS_REQ_ADD) {
        s->joining[r->node] = false;
      }
      if (status == 0) {
        s->res->conf_changes++;
      }
    }
    fs_event(s, 0xcc0b ^ ((uint64_t)r->kind << 8) ^ r->node ^
                    ((uint64_t)(uint32_t)status << 32),
             "membership request %d for node %u: %s", r->kind, r->node,
             status == 0 ? "done" : qraft_strerror(status));
  }
  free(r);
}

static int fs_conf_ask(fs_sim *s, qraft_node *leader, int kind, uint32_t i) {
  fs_conf_req *r = calloc(1, sizeof *r);
  QRAFT_ASSERT(r != NULL);
  *r = (fs_conf_req){.sim = s, .kind = kind, .node = i};
  int rv;
  if (kind == FS_REQ_ADD) {
    qraft_node_addr addr;
    qraft_sim_cluster_addr(s->c, i, &addr);
    rv = qraft_prng_chance(&s->rng, 1, 2)
             ? qraft_node_add_learner(leader, &addr, fs_conf_cb, r)
             : qraft_node_add_voter(leader, &addr, fs_conf_cb, r);
  } else if (kind == FS_REQ_PROMOTE) {
    rv = qraft_node_promote(leader, s->ids[i], fs_conf_cb, r);
  } else if (kind == FS_REQ_REMOVE) {
    rv = qraft_node_remove(leader, s->ids[i], fs_conf_cb, r);
  } else {
    rv = qraft_node_transfer(leader, s->ids[i], fs_conf_cb, r);
  }
  fs_event(s, 0xcc0a ^ ((uint64_t)kind << 8) ^ i ^
                  ((uint64_t)(uint32_t)rv << 32),
           "ask: %s node %u: %d",
           kind == FS_REQ_ADD       ? "add"
           : kind == FS_REQ_PROMOTE ? "promote"
           : kind == FS_REQ_REMOVE  ? "remove"
                                    : "transfer leadership to",
           i, rv);
  if (rv != 0) {
    free(r);
    return rv;
  }
  if (kind != FS_REQ_TRANSFER) {
    s->conf_busy = true;
    s->conf_change_ns = fs_now(s);
  }
  return 0;
}

/* One membership change at a time, asked of the leader through the node's
 * API: start a spare and add it (as a learner or a voter), promote a
 * learner, or remove a voter (the leader too) or a learner. */
static void fs_membership_step(fs_sim *s) {
  int l = qraft_sim_cluster_leader(s->c);
  if (l < 0) {
    return;
  }
  qraft_node *leader = qraft_sim_cluster_node(s->c, (uint32_t)l);
  qraft_node_status st;
  qraft_node_status_get(leader, &st);
  if (st.joint) {
    return;
  }
  int voters[QRAFT_SIM_CLUSTER_NODES_MAX], learners[QRAFT_SIM_CLUSTER_NODES_MAX];
  uint32_t vn = 0, ln = 0;
  for (uint32_t k = 0; k < st.members_n; k++) {
    int i = fs_index_of(s, st.members[k].id);
    if (i < 0) {
      continue;
    }
    if (st.members[k].voter) {
      voters[vn++] = i;
    } else if (st.members[k].learner) {
      learners[ln++] = i;
    }
  }
  uint64_t dice = qraft_prng_below(&s->rng, 100);
  if (dice < 40) {
    for (uint32_t i = 0; i < s->total; i++) {
      if (!s->started[i]) {
        s->started[i] = true;
        s->joining[i] = true;
        int rv = qraft_sim_cluster_restart(s->c, i);
        fs_event(s, 0x57a7 ^ i, "start spare node %u: %d", i, rv);
        if (rv != 0) {
          fs_fail(s, "restart", "spare node %u could not start: %s", i,
                  qraft_strerror(rv));
          return;
        }
        if (fs_conf_ask(s, leader, FS_REQ_ADD, i) != 0) {
          s->joining[i] = false;
        }
        return;
      }
    }
  } else if (dice < 65 && ln > 0) {
    uint32_t i = (uint32_t)learners[qraft_prng_below(&s->rng, ln)];
    (void)fs_conf_ask(s, leader, FS_REQ_PROMOTE, i);
  } else if (dice >= 65 && vn > 3) {
    uint32_t i = (uint32_t)voters[qraft_prng_below(&s->rng, vn)];
    (void)fs_conf_ask(s, leader, FS_REQ_REMOVE, i);
  } else if (dice >= 65 && ln > 0) {
    uint32_t i = (uint32_t)learners[qraft_prng_below(&s->rng, ln)];
    (void)fs_conf_ask(s, leader, FS_REQ_REMOVE, i);
  }
}

static void fs_transfer_step(fs_sim *s) {
  int l = qraft_sim_cluster_leader(s->c);
  if (l < 0) {
    return;
  }
  qraft_node *leader = qraft_sim_cluster_node(s->c, (uint32_t)l);
  qraft_node_status st;
  qraft_node_status_get(leader, &st);
  if (st.members_n == 0) {
    return;
  }
  const qraft_member_status *m =
      &st.members[qraft_prng_below(&s->rng, st.members_n)];
  int to = fs_index_of(s, m->id);
  if (m->voter && to >= 0 && to != l) {
    (void)fs_conf_ask(s, leader, FS_REQ_TRANSFER, (uint32_t)to);
  }
}

/* A node out of the configuration the leader applied is stopped for good
 * after a grace period, as an operator would, so that it does not disturb
 * the cluster. */
static void fs_membership_tend(fs_sim *s) {
  if (s->conf_busy) {
    return;
  }
  int l = qraft_sim_cluster_leader(s->c);
  if (l < 0) {
    return;
  }
  qraft_node_status st;
  qraft_node_status_get(qraft_sim_cluster_node(s->c, (uint32_t)l), &st);
  if (st.joint || st.members_n == 0) {
    return;
  }
  uint64_t now = fs_now(s);
  for (uint32_t i = 0; i < s->total; i++) {
    if (!fs_node_in_play(s, i) || s->joining[i]) {
      continue;
    }
    bool member = false;
    for (uint32_t k = 0; k < st.members_n; k++) {
      member = member || st.members[k].id == s->ids[i];
    }
    if (member) {
      s->retire_at_ns[i] = 0;
    } else if (s->retire_at_ns[i] == 0) {
      s->retire_at_ns[i] = now + 500000000ull;
    } else if (now >= s->retire_at_ns[i]) {
      s->retired[i] = true;
      if (qraft_sim_cluster_node(s->c, i) != NULL) {
        fs_count_node(s, i);
        qraft_sim_cluster_crash(s->c, i);
      }
      s->restart_at_ns[i] = 0;
      s->doom_at_ns[i] = 0;
      s->proc[i].seen = false;
      fs_event(s, 0x2e71 ^ i, "node %u is out of the configuration: stopped",
               i);
    }
  }
}

/* Cuts a snapshot transfer midway: a member is receiving one; crash it,
 * crash the leader sending it, or isolate the receiver. */
static void fs_snapshot_cut_step(fs_sim *s, uint64_t now) {
  for (uint32_t i = 0; i < s->total; i++) {
    qraft_node *nd = qraft_sim_cluster_node(s->c, i);
    if (nd == NULL || !fs_node_in_play(s, i)) {
      continue;
    }
    qraft_node_status st;
    qraft_node_status_get(nd, &st);
    if (st.snapshot_recvs_active == 0 ||
        !qraft_prng_chance(&s->cut_rng, s->p_snap_cut, 1000000)) {
      continue;
    }
    uint64_t how = qraft_prng_below(&s->cut_rng, 3);
    int l = qraft_sim_cluster_leader(s->c);
    if (how == 1 && l >= 0 && (uint32_t)l != i) {
      fs_event(s, 0x5c07 ^ (uint64_t)l, "cut a snapshot to node %u: crash "
               "the leader, node %d", i, l);
      fs_crash_node(s, (uint32_t)l, now);
    } else if (how == 2 && s->heal_at_ns == 0) {
      fs_isolate(s, i);
      s->heal_at_ns = now + qraft_prng_between(&s->cut_rng, 100, 3000) *
                                1000000ull;
      s->res->partitions++;
      fs_event(s, 0x5c08 ^ i, "cut a snapshot: isolate node %u", i);
    } else {
      fs_event(s, 0x5c09 ^ i, "cut a snapshot: crash node %u", i);
      fs_crash_node(s, i, now);
    }
    return;
  }
}

static void fs_set_full(fs_sim *s, uint32_t i, bool full) {
  qraft_simdisk_set_full(qraft_sim_cluster_disk(s->c, i), full);
  if (full) {
    s->space_hit[i] = true;
  } else {
    s->full_until_ns[i] = 0;
  }
}

/* A disk runs out of space for a while and then gets room back: one
 * node's (the leader's half the time) or, one time in four, those of a
 * quorum of the members at once (nothing commits until room comes back).
 * Never after faults_end_ns: the final checks see room everywhere. */
static void fs_disk_full_step(fs_sim *s, uint64_t now) {
  for (uint32_t i = 0; i < s->total; i++) {
    if (s->full_until_ns[i] != 0 && now >= s->full_until_ns[i]) {
      fs_set_full(s, i, false);
      fs_event(s, 0xf011b ^ i, "disk of node %u has room again", i);
    }
  }
  if (s->p_disk_full == 0 || now >= s->faults_end_ns ||
      !qraft_prng_chance(&s->full_rng, s->p_disk_full, 1000000)) {
    return;
  }
  uint64_t ms = qraft_prng_between(&s->full_rng, 50, 2000);
  uint32_t in[QRAFT_SIM_CLUSTER_NODES_MAX], m = 0;
  for (uint32_t i = 0; i < s->total; i++) {
    if (fs_node_in_play(s, i)) {
      in[m++] = i;
    }
  }
  if (m == 0) {
    return;
  }
  bool quorum = qraft_prng_chance(&s->full_rng, 1, 4);
  uint32_t k = quorum ? m / 2 + 1 : 1;
  /* the first k of a shuffle of the members, the leader first half the
   * time */
  for (uint32_t j = m - 1; j > 0; j--) {
    uint32_t r = (uint32_t)qraft_prng_below(&s->full_rng, j + 1);
    uint32_t t = in[j];
    in[j] = in[r];
    in[r] = t;
  }
  int l = qraft_sim_cluster_leader(s->c);
  if (l >= 0 && qraft_prng_chance(&s->full_rng, 1, 2)) {
    for (uint32_t j = 0; j < m; j++) {
      if (in[j] == (uint32_t)l) {
        in[j] = in[0];
        in[0] = (uint32_t)l;
      }
    }
  }
  uint64_t mask = 0;
  for (uint32_t j = 0; j < k; j++) {
    uint32_t i = in[j];
    fs_set_full(s, i, true);
    uint64_t until = now + ms * 1000000ull;
    if (until > s->full_until_ns[i]) {
      s->full_until_ns[i] = until;
    }
    mask |= 1ull << i;
  }
  s->disk_fulls++;
  fs_event(s, 0xf0110 ^ mask ^ (ms << 8),
           "disk%s full for %" PRIu64 " ms: nodes mask %" PRIx64
           "%s", k > 1 ? "s" : "", ms, mask,
           l >= 0 && ((mask >> l) & 1) ? " (the leader's too)" : "");
}

static void fs_faults_step(fs_sim *s) {
  uint64_t now = fs_now(s);
  for (uint32_t i = 0; i < s->total; i++) {
    if (s->restart_at_ns[i] != 0 && now >= s->restart_at_ns[i]) {
      s->restart_at_ns[i] = 0;
      int rv = qraft_sim_cluster_restart(s->c, i);
      fs_event(s, 0x5e57a47 ^ i, "restart node %u: %d", i, rv);
      if (rv != 0) {
        fs_fail(s, "restart", "node %u could not restart: %s", i,
                qraft_strerror(rv));
      }
    }
  }
  if (s->heal_at_ns != 0 && now >= s->heal_at_ns) {
    fs_heal_links(s);
    fs_event(s, 0x4ea1, "heal the network");
  }
  /* flaky leaders, if they still lead the term they were doomed in */
  for (uint32_t i = 0; i < s->total; i++) {
    if (s->doom_at_ns[i] == 0 || now < s->doom_at_ns[i]) {
      continue;
    }
    s->doom_at_ns[i] = 0;
    qraft_node *node = qraft_sim_cluster_node(s->c, i);
    if (node == NULL) {
      continue;
    }
    qraft_node_status st;
    qraft_node_status_get(node, &st);
    if (st.role != QRAFT_ROLE_LEADER || st.term != s->doom_term[i]) {
      continue;
    }
    if (s->doom_crash[i] || s->heal_at_ns != 0) {
      fs_crash_node(s, i, now);
    } else {
      fs_isolate(s, i);
      s->stale_node = (int)i;
      s->heal_at_ns =
          now + qraft_prng_between(&s->rng, 50, 3000) * 1000000ull;
      s->res->partitions++;
      fs_event(s, 0x1502 ^ i, "isolate the young leader, node %u", i);
    }
  }
  if (s->crash_soon) {
    s->crash_soon = false;
    if (qraft_prng_chance(&s->rng, 1, 2)) {
      fs_power_loss(s, now);
    } else {
      uint32_t i = (uint32_t)qraft_prng_below(&s->rng, s->total);
      if (fs_node_in_play(s, i)) {
        fs_crash_node(s, i, now);
      }
    }
  }
  if (qraft_prng_chance(&s->rng, s->p_crash / 4, 1000000)) {
    fs_power_loss(s, now);
  } else if (qraft_prng_chance(&s->rng, s->p_crash, 1000000)) {
    /* a third of the crashes hit the leader */
    int l = qraft_sim_cluster_leader(s->c);
    uint32_t i = l >= 0 && qraft_prng_chance(&s->rng, 1, 3)
                     ? (uint32_t)l
                     : (uint32_t)qraft_prng_below(&s->rng, s->total);
    if (fs_node_in_play(s, i)) {
      fs_crash_node(s, i, now);
    }
  }
  if (s->heal_at_ns == 0 &&
      qraft_prng_chance(&s->rng, s->p_partition, 1000000)) {
    fs_partition(s, now);
  }
  if (s->p_snap_cut > 0 && now < s->faults_end_ns) {
    fs_snapshot_cut_step(s, now);
  }
  if (qraft_prng_chance(&s->rng, s->p_clog, 1000000)) {
    uint32_t i = (uint32_t)qraft_prng_below(&s->rng, s->total);
    uint32_t j = (uint32_t)qraft_prng_below(&s->rng, s->total);
    if (i != j) {
      uint64_t ms = qraft_prng_between(&s->rng, 50, 1000);
      qraft_sim_cluster_clog(s->c, i, j, ms);
      s->clog_until_ns[i][j] = now + ms * 1000000ull;
      fs_event(s, 0xc10 ^ ((uint64_t)i << 8) ^ j ^ (ms << 16),
               "clog %u -> %u for %" PRIu64 " ms", i, j, ms);
    }
  }
  /* A disk that slows down for a while: its node's acknowledgements and
   * its own progress as leader lag behind the others'. */
  for (uint32_t i = 0; i < s->total; i++) {
    if (s->disk_slow_until_ns[i] != 0 && now >= s->disk_slow_until_ns[i]) {
      s->disk_slow_until_ns[i] = 0;
      qraft_simdisk_set_delay(qraft_sim_cluster_disk(s->c, i), s->disk_min_ns,
                              s->disk_max_ns);
      fs_event(s, 0xd15c ^ i, "disk of node %u back to speed", i);
    }
  }
  if (qraft_prng_chance(&s->rng, s->p_slow_disk, 1000000)) {
    int l = qraft_sim_cluster_leader(s->c);
    uint32_t i = l >= 0 && qraft_prng_chance(&s->rng, 1, 2)
                     ? (uint32_t)l
                     : (uint32_t)qraft_prng_below(&s->rng, s->total);
    uint64_t ms = qraft_prng_between(&s->rng, 100, 2000);
    uint64_t dmin = qraft_prng_between(&s->rng, 2000, 10000) * 1000ull;
    qraft_simdisk_set_delay(qraft_sim_cluster_disk(s->c, i), dmin,
                            dmin + qraft_prng_between(&s->rng, 0, 20000) *
                                       1000ull);
    s->disk_slow_until_ns[i] = now + ms * 1000000ull;
    fs_event(s, 0xd15b ^ i ^ (ms << 8), "disk of node %u slow for %" PRIu64
                                         " ms", i, ms);
  }
  fs_disk_full_step(s, now);
  if (s->relay) {
    fs_relay_step(s, now);
  }
  if (s->steady) {
    /* CPU starvation: one member's loop stalls for 0.5 to 3 election
     * timeouts while messages keep arriving, the leader half the time;
     * one stall at a time, two election timeouts apart. */
    if (now >= s->steady_next_ns &&
        qraft_prng_chance(&s->rng, s->p_pause, 1000000)) {
      int l = qraft_sim_cluster_leader(s->c);
      uint32_t i = l >= 0 && qraft_prng_chance(&s->rng, 1, 2)
                       ? (uint32_t)l
                       : (uint32_t)qraft_prng_below(&s->rng, s->n);
      uint64_t ns = qraft_prng_between(&s->rng, FS_ELECTION_NS / 2,
                                       3 * FS_ELECTION_NS);
      qraft_sim_cluster_pause(s->c, i, ns / 1000000ull);
      ns = ns / 1000000ull * 1000000ull;
      s->stall_start_ns[i] = now;
      s->stall_end_ns[i] = now + ns;
      s->pause_until_ns[i] = now + ns;
      s->steady_next_ns = now + ns + 2 * FS_ELECTION_NS;
      fs_event(s, 0x57a1 ^ ((uint64_t)i << 8) ^ (ns << 16),
               "stall node %u%s for %" PRIu64 " ms", i,
               l == (int)i ? " (the leader)" : "", (uint64_t)(ns / 1000000ull));
    }
  } else if (qraft_prng_chance(&s->rng, s->p_pause, 1000000)) {
    uint32_t i = (uint32_t)qraft_prng_below(&s->rng, s->total);
    if (qraft_sim_cluster_node(s->c, i) != NULL) {
      uint64_t ms = qraft_prng_between(&s->rng, 20, 500);
      qraft_sim_cluster_pause(s->c, i, ms);
      uint64_t until = now + ms * 1000000ull;
      if (until > s->pause_until_ns[i]) {
        s->pause_until_ns[i] = until;
      }
      fs_event(s, 0x9a05 ^ ((uint64_t)i << 8) ^ (ms << 16),
               "pause node %u for %" PRIu64 " ms", i, ms);
    }
  }
  if (s->p_member > 0 && !s->conf_busy &&
      qraft_prng_chance(&s->rng, s->p_member, 1000000)) {
    fs_membership_step(s);
  }
  if (s->p_transfer > 0 &&
      qraft_prng_chance(&s->rng, s->p_transfer, 1000000)) {
    fs_transfer_step(s);
  }
}

static void fs_heal_all(fs_sim *s) {
  fs_heal_links(s);
  if (s->relay && s->relay_restart_at_ns != 0) {
    s->relay_restart_at_ns = 0;
    int rv = qraft_sim_cluster_relay_restart(s->c);
    if (rv != 0) {
      fs_fail(s, "restart", "the relay could not restart: %s",
              qraft_strerror(rv));
    }
  }
  s->crash_soon = false;
  for (uint32_t i = 0; i < s->total; i++) {
    if (s->disk_slow_until_ns[i] != 0) {
      s->disk_slow_until_ns[i] = 0;
      qraft_simdisk_set_delay(qraft_sim_cluster_disk(s->c, i), s->disk_min_ns,
                              s->disk_max_ns);
    }
  }
  memset(s->doom_at_ns, 0, sizeof s->doom_at_ns);
  for (uint32_t i = 0; i < s->total; i++) {
    if (s->full_until_ns[i] != 0) {
      fs_set_full(s, i, false);
    }
  }
  qraft_simnet_faults calm = {.delay_min_ns = 100000, .delay_max_ns = 1000000};
  qraft_sim_cluster_set_faults(s->c, &calm);
  for (uint32_t i = 0; i < s->total; i++) {
    if (fs_node_in_play(s, i) && qraft_sim_cluster_node(s->c, i) == NULL) {
      s->restart_at_ns[i] = 0;
      int rv = qraft_sim_cluster_restart(s->c, i);
      if (rv != 0) {
        fs_fail(s, "restart", "node %u could not restart: %s", i,
                qraft_strerror(rv));
      }
    }
  }
  fs_event(s, 0x4ea1a11, "heal everything");
}

/* ---- liveness and the final checks ---- */

typedef struct fs_probe {
  fs_sim *sim;
  bool done, ok, abandoned;
} fs_probe;

static void fs_probe_cb(void *ud, int status, qraft_slice result,
                        qraft_id leader) {
  (void)result;
  (void)leader;
  fs_probe *p = ud;
  if (p->abandoned) {
    free(p);
    return;
  }
  p->done = true;
  p->ok = status == 0;
}

static bool fs_probe_done(void *ud) {
  fs_probe *p = ud;
  return fs_step_done(p->sim) || p->done;
}

static bool fs_liveness(fs_sim *s) {
  uint64_t start = fs_now(s);
  while (fs_now(s) - start < FS_LIVENESS_MS * 1000000ull && !s->failed) {
    int l = qraft_sim_cluster_leader(s->c);
    if (l < 0) {
      qraft_sim_cluster_run(s->c, 10, fs_step_done, s);
      continue;
    }
    fs_probe *p = calloc(1, sizeof *p); /* outlives a timed-out wait */
    QRAFT_ASSERT(p != NULL);
    p->sim = s;
    if (qraft_node_propose(qraft_sim_cluster_node(s->c, (uint32_t)l), "probe",
                           5, fs_probe_cb, p) != 0) {
      free(p);
      qraft_sim_cluster_run(s->c, 10, fs_step_done, s);
      continue;
    }
    qraft_sim_cluster_run(s->c, 3000, fs_probe_done, p);
    bool ok = p->done && p->ok;
    if (p->done) {
      free(p);
    } else {
      /* Its callback still comes (at the latest when the node stops). */
      p->abandoned = true;
    }
    if (ok) {
      fs_event(s, 0x11fe, "liveness: a new write committed after %" PRIu64
                          " ms",
               (fs_now(s) - start) / 1000000u);
      return true;
    }
  }
  if (!s->failed) {
    fs_fail(s, "liveness",
            "no write committed within %u ms after every fault healed",
            FS_LIVENESS_MS);
  }
  return false;
}

typedef struct fs_settle {
  fs_sim *sim;
  uint64_t index;
} fs_settle;

static bool fs_settled(void *ud) {
  fs_settle *st = ud;
  fs_sim *s = st->sim;
  if (fs_step_done(s)) {
    return true;
  }
  /* every node of the leader's configuration that has not been retired */
  int l = qraft_sim_cluster_leader(s->c);
  if (l < 0) {
    return false;
  }
  qraft_node_status ns;
  qraft_node_status_get(qraft_sim_cluster_node(s->c, (uint32_t)l), &ns);
  for (uint32_t k = 0; k < ns.members_n; k++) {
    int i = fs_index_of(s, ns.members[k].id);
    if (i < 0 || s->retired[i]) {
      continue;
    }
    fs_kv *kv = qraft_sim_cluster_sm(s->c, (uint32_t)i);
    if (kv == NULL || kv->index < st->index) {
      return false;
    }
  }
  return true;
}

static void fs_check_durability(fs_sim *s) {
  /* Every node applies everything up to the last acknowledged write. */
  fs_settle st = {.sim = s, .index = s->acked_max};
  if (!qraft_sim_cluster_run(s->c, FS_SETTLE_MS, fs_settled, &st) &&
      !s->failed) {
    char who[200] = "";
    size_t wl = 0;
    for (uint32_t i = 0; i < s->total && wl < sizeof who; i++) {
      qraft_node *nd = qraft_sim_cluster_node(s->c, i);
      if (nd != NULL) {
        qraft_node_status ns;
        qraft_node_status_get(nd, &ns);
        wl += (size_t)snprintf(who + wl, sizeof who - wl,
                               " n%u(%s t%" PRIu64 " c%" PRIu64 " a%" PRIu64
                               " m%u)",
                               i, qraft_role_name(ns.role), ns.term, ns.commit,
                               ns.applied, ns.members_n);
      }
    }
    fs_fail(s, "liveness", "nodes did not apply up to %" PRIu64
                           " within %u ms after healing:%s",
            s->acked_max, FS_SETTLE_MS, who);
    return;
  }
  if (s->failed) {
    return;
  }
  /* Each acknowledged write is the entry applied at its index. */
  for (size_t k = 0; k < s->acked_n; k++) {
    uint64_t idx = s->acked[k].index;
    if (idx >= s->applied_cap || s->applied_hash[idx] == 0) {
      fs_fail(s, "durability", "acknowledged write at %" PRIu64
                               " was never applied", idx);
      return;
    }
    if (s->applied_data[idx] != s->acked[k].hash) {
      fs_fail(s, "durability", "acknowledged write at %" PRIu64
                               " was replaced by another entry", idx);
      return;
    }
  }
}

static void fs_check_history(fs_sim *s) {
  qraft__lincheck_result lr;
  memset(&lr, 0, sizeof lr);
  qraft__lincheck_opts lo = {.steps_max = 5000000};
  int rv = qraft__lincheck_check(s->hist, &lo, &lr, NULL);
  QRAFT_ASSERT(rv == 0);
  if (lr.verdict == QRAFT_LINCHECK_VIOLATION) {
    fs_fail(s, "linearizability",
            "key %" PRIu64 " has no linearization (%zu ops linearized first)",
            lr.key, lr.prefix_n);
    if (s->opts.trace != NULL) {
      qraft__lincheck_result_print(s->hist, &lr, s->opts.trace);
    }
  }
  qraft__lincheck_result_close(&lr);
}

/* ---- the run ---- */

int qraft_sim_full_run(const qraft_sim_core_opts *opts,
                       qraft_sim_core_result *res) {
  memset(res, 0, sizeof *res);
  res->ok = true;
  fs_sim *s = calloc(1, sizeof *s);
  if (s == NULL) {
    return -ENOMEM;
  }
  s->opts = *opts;
  s->res = res;
  s->trace_hash = 0xcbf29ce484222325ULL;
  qraft_prng_init(&s->rng, opts->seed ^ 0xf011f011f011f011ULL);
  int rv = qraft__lincheck_history_new(&s->hist);
  if (rv != 0) {
    free(s);
    return rv;
  }
  /* Swarm: this seed's cluster, faults and features. One seed in six is
   * of the Figure 8 family: five voters, leaders that die young, quick
   * restarts, no membership changes. One in three changes the membership
   * (with one or two spares to add) and transfers leadership. */
  bool fig8 = qraft_prng_chance(&s->rng, 1, 6);
  bool churn = !fig8 && qraft_prng_chance(&s->rng, 1, 3);
  s->n = 3 + (uint32_t)qraft_prng_below(&s->rng, 5);
  uint32_t spares = 0;
  if (fig8) {
    s->n = 5;
  } else if (churn) {
    s->n = 3 + (uint32_t)qraft_prng_below(&s->rng, 3);
    spares = 1 + (uint32_t)qraft_prng_below(&s->rng, 2);
  }
  s->total = s->n + spares;
  uint64_t duration_ms = opts->duration_ms
                             ? opts->duration_ms
                             : qraft_prng_between(&s->rng, 5000, 15000);
  qraft_sim_cluster_config cc = {
      .seed = opts->seed,
      .nodes = s->n,
      .spares = spares,
      .sm = &kv_ops,
      .sm_new = kv_new,
      .sm_free = kv_free,
      .ud = s,
      .tick_ms = FS_TICK_MS,
      .election_ticks = FS_ELECTION_TICKS,
      .heartbeat_ticks = FS_HEARTBEAT_TICKS,
  };
  cc.faults.drop_ppm = (uint32_t)qraft_prng_below(&s->rng, 50000);
  cc.faults.dup_ppm = (uint32_t)qraft_prng_below(&s->rng, 20000);
  cc.faults.delay_min_ns = qraft_prng_between(&s->rng, 20, 200) * 1000ull;
  cc.faults.delay_max_ns = cc.faults.delay_min_ns +
                           qraft_prng_between(&s->rng, 0, 10000) * 1000ull;
  cc.disk_delay_min_ns = qraft_prng_between(&s->rng, 10, 500) * 1000ull;
  cc.disk_delay_max_ns = cc.disk_delay_min_ns +
                         qraft_prng_between(&s->rng, 0, 5000) * 1000ull;
  cc.disable_pre_vote = qraft_prng_chance(&s->rng, 1, 4);
  cc.disable_check_quorum = qraft_prng_chance(&s->rng, 1, 4);
  bool pauses = !fig8 && qraft_prng_chance(&s->rng, 1, 2);
  s->skew = qraft_prng_chance(&s->rng, 1, 2);
  /* Lease reads trust bounded clock drift and no long pauses (thesis
   * 6.4.1): only on seeds without skew and pauses. */
  cc.lease_reads = !cc.disable_check_quorum && !pauses && !s->skew &&
                   qraft_prng_chance(&s->rng, 1, 2);
  cc.clock_skew_ppm_max = s->skew ? 20000 : 0;
  cc.snapshot_entries = qraft_prng_chance(&s->rng, 1, 2) ? 50 : 1000;
  /* One seed in three is crash-heavy: frequent crashes and power losses,
   * quick restarts and a slow disk, so that writes are often lost. */
  bool crashy = qraft_prng_chance(&s->rng, 1, 3);
  s->p_crash = (uint32_t)qraft_prng_below(&s->rng, crashy ? 40000 : 4000);
  s->restart_ms_max = crashy ? 500 : 3000;
  if (crashy) {
    cc.disk_delay_max_ns += qraft_prng_between(&s->rng, 0, 20000) * 1000ull;
    s->p_crash_after_ack = (uint32_t)qraft_prng_below(&s->rng, 20000);
  }
  s->leader_kill_ppm = qraft_prng_chance(&s->rng, 1, 3)
                           ? (uint32_t)qraft_prng_between(&s->rng, 100000,
                                                          600000)
                           : 0;
  if (fig8) {
    s->leader_kill_ppm = (uint32_t)qraft_prng_between(&s->rng, 500000, 900000);
    s->restart_ms_max = 300;
  }
  s->p_partition = (uint32_t)qraft_prng_below(&s->rng, 6000);
  s->p_slow_disk = qraft_prng_chance(&s->rng, 1, 2)
                       ? (uint32_t)qraft_prng_below(&s->rng, 8000)
                       : 0;
  s->disk_min_ns = cc.disk_delay_min_ns;
  s->disk_max_ns = cc.disk_delay_max_ns;
  s->p_clog = (uint32_t)qraft_prng_below(&s->rng, 6000);
  s->p_pause = pauses ? (uint32_t)qraft_prng_below(&s->rng, 4000) : 0;
  if (churn) {
    s->p_member = (uint32_t)qraft_prng_between(&s->rng, 2000, 10000);
    s->p_transfer = (uint32_t)qraft_prng_below(&s->rng, 3000);
  } else if (!fig8 && qraft_prng_chance(&s->rng, 1, 4)) {
    s->p_transfer = (uint32_t)qraft_prng_below(&s->rng, 3000);
  }
  s->check_quorum = !cc.disable_check_quorum;
  s->delay_max_ns = cc.faults.delay_max_ns;
  s->stale_node = -1;
  s->clients_n = 2 + (uint32_t)qraft_prng_below(&s->rng, FS_CLIENTS_MAX - 1);
  for (uint32_t k = 0; k < s->clients_n; k++) {
    s->clients[k].id = k + 1;
    s->clients[k].leader_hint = -1;
  }
  /* One seed in five of the others is steady: the network and the disks
   * healthy, no crash, partition, membership change or transfer, only
   * stalls of one member at a time (qraft_simnet_host_pause: its timers
   * run before it reads what arrived meanwhile, as libuv's do). Drawn from
   * a stream of its own, so the other seeds draw what they drew before. */
  qraft_prng steady_rng;
  qraft_prng_init(&steady_rng, opts->seed ^ 0x57ead157ead1ULL);
  s->steady_leader = -1;
  if (opts->steady ||
      (!fig8 && !churn && qraft_prng_chance(&steady_rng, 1, 5))) {
    s->steady = true;
    cc.faults.drop_ppm = 0;
    cc.faults.dup_ppm = 0;
    if (cc.faults.delay_max_ns > 1000000) {
      cc.faults.delay_max_ns = 1000000;
    }
    if (cc.faults.delay_min_ns > cc.faults.delay_max_ns) {
      cc.faults.delay_min_ns = cc.faults.delay_max_ns;
    }
    cc.lease_reads = false; /* as on every seed with pauses */
    s->p_crash = 0;
    s->p_crash_after_ack = 0;
    s->leader_kill_ppm = 0;
    s->p_partition = 0;
    s->p_clog = 0;
    s->p_slow_disk = 0;
    s->p_transfer = 0;
    s->p_member = 0;
    s->p_pause = (uint32_t)qraft_prng_between(&steady_rng, 2000, 20000);
    crashy = false;
  }
  /* One seed in three (not of the Figure 8 family, not steady) has a
   * relay, every member's home relay; a third of those know no direct
   * address of each other. Drawn from a stream of its own. */
  qraft_prng_init(&s->relay_rng, opts->seed ^ 0x4e1a44e1a4ULL);
  if (!fig8 && !s->steady && qraft_prng_chance(&s->relay_rng, 1, 3)) {
    s->relay = true;
    s->relay_only = qraft_prng_chance(&s->relay_rng, 1, 3);
    cc.relay = true;
    cc.relay_only = s->relay_only;
    s->p_relay_crash = (uint32_t)qraft_prng_below(&s->relay_rng, 3000);
    s->p_relay_clog = (uint32_t)qraft_prng_below(&s->relay_rng, 3000);
    s->p_direct_cut = s->relay_only
                          ? 0
                          : (uint32_t)qraft_prng_between(&s->relay_rng, 2000,
                                                         10000);
    s->nats = qraft_prng_chance(&s->relay_rng, 1, 2);
    for (uint32_t i = 0; s->nats && i < QRAFT_SIM_CLUSTER_NODES_MAX; i++) {
      s->nat[i] = (qraft_simnet_nat)qraft_prng_below(&s->relay_rng, 4);
      cc.nat[i] = s->nat[i];
    }
    s->p_spoof = (uint32_t)qraft_prng_between(&s->relay_rng, 5000, 50000);
  }
  /* One seed in two runs durable state machines that sync every 1 ms to
   * 1 s, drawn from a stream of its own as well. */
  qraft_prng durable_rng;
  qraft_prng_init(&durable_rng, opts->seed ^ 0xd0ab1ed0ab1eULL);
  if (qraft_prng_chance(&durable_rng, 1, 2)) {
    s->durable_sm = true;
    s->sync_ns = qraft_prng_between(&durable_rng, 1, 1000) * 1000000ull;
    cc.sm = &kv_durable_ops;
  }
  /* Snapshots of 16 KiB to 512 KiB on three seeds in four (64 KiB chunks
   * on the wire), from a stream of its own too. */
  qraft_prng pad_rng;
  qraft_prng_init(&pad_rng, opts->seed ^ 0x5a9d5a9d5a9dULL);
  if (qraft_prng_chance(&pad_rng, 3, 4)) {
    s->snap_pad = (uint32_t)qraft_prng_between(&pad_rng, 16, 512) * 1024u;
  }
  /* One in three snapshots every 10 to 30 entries, so that members that
   * were down or cut off often need one (and faults cut transfers). */
  if (qraft_prng_chance(&pad_rng, 1, 3)) {
    cc.snapshot_entries = qraft_prng_between(&pad_rng, 10, 30);
  }
  qraft_prng_init(&s->cut_rng, opts->seed ^ 0xc07c07c07c07ULL);
  if (s->snap_pad > 0 && qraft_prng_chance(&s->cut_rng, 1, 2)) {
    /* small windows: a snapshot takes many round trips */
    cc.snapshot_chunk_bytes =
        (uint32_t)qraft_prng_between(&s->cut_rng, 2, 32) * 1024u;
    cc.snapshot_inflight_bytes =
        cc.snapshot_chunk_bytes *
        (uint32_t)qraft_prng_between(&s->cut_rng, 1, 8);
  }
  if (!s->steady && !fig8 && qraft_prng_chance(&s->cut_rng, 2, 3)) {
    s->p_snap_cut = (uint32_t)qraft_prng_between(&s->cut_rng, 100000, 600000);
  }
  /* Half the seeds take and restore snapshots in steps of 4 to 64 KiB,
   * the loop going on between them. */
  if (qraft_prng_chance(&s->cut_rng, 1, 2)) {
    cc.sm = s->durable_sm ? &kv_durable_steps_ops : &kv_steps_ops;
    cc.snapshot_step_bytes =
        (uint32_t)qraft_prng_between(&s->cut_rng, 4, 64) * 1024u;
  }
  /* Disks that run out of space on half the other seeds (never the steady
   * ones: a leader out of space hands its leadership on). */
  qraft_prng_init(&s->full_rng, opts->seed ^ 0xf011d15cf011ULL);
  if (!s->steady && qraft_prng_chance(&s->full_rng, 1, 2)) {
    s->p_disk_full = (uint32_t)qraft_prng_between(&s->full_rng, 1000, 6000);
  }
  char dur[512] = "";
  if (s->durable_sm) {
    snprintf(dur, sizeof dur, "durable-sm sync %" PRIu64 " ms: ",
             s->sync_ns / 1000000);
  }
  if (s->snap_pad > 0) {
    size_t l = strlen(dur);
    snprintf(dur + l, sizeof dur - l, "snapshots +%u KiB: ",
             s->snap_pad / 1024);
  }
  if (s->p_snap_cut > 0) {
    size_t l = strlen(dur);
    snprintf(dur + l, sizeof dur - l, "snapshot cuts %u ppm: ",
             s->p_snap_cut);
  }
  if (cc.snapshot_step_bytes > 0) {
    size_t l = strlen(dur);
    snprintf(dur + l, sizeof dur - l, "snapshot steps %u KiB: ",
             cc.snapshot_step_bytes / 1024);
  }
  if (s->relay) {
    size_t l = strlen(dur);
    snprintf(dur + l, sizeof dur - l,
             "relay%s crash %u clog %u direct-cut %u spoof %u ppm: ",
             s->relay_only ? " only" : "", s->p_relay_crash, s->p_relay_clog,
             s->p_direct_cut, s->p_spoof);
  }
  if (s->nats) {
    size_t l = strlen(dur);
    snprintf(dur + l, sizeof dur - l, "nats");
    for (uint32_t i = 0; i < cc.nodes + cc.spares; i++) {
      l = strlen(dur);
      snprintf(dur + l, sizeof dur - l, "%s%s", i ? "," : " ",
               qraft_simnet_nat_name(s->nat[i]));
    }
    l = strlen(dur);
    snprintf(dur + l, sizeof dur - l, ": ");
  }
  if (s->p_disk_full > 0) {
    size_t l = strlen(dur);
    snprintf(dur + l, sizeof dur - l, "disk full %u ppm: ", s->p_disk_full);
  }
  if (cc.snapshot_chunk_bytes > 0) {
    size_t l = strlen(dur);
    snprintf(dur + l, sizeof dur - l, "chunks %u KiB, %u in flight: ",
             cc.snapshot_chunk_bytes / 1024,
             cc.snapshot_inflight_bytes / cc.snapshot_chunk_bytes);
  }
  snprintf(res->swarm, sizeof res->swarm,
           "%s%snodes %u+%u clients %u drop %u dup %u delay %" PRIu64 "..%" PRIu64
           " us disk %" PRIu64 "..%" PRIu64
           " us pre-vote %d cq %d lease %d skew %d snap %" PRIu64
           " crash %u%s part %u clog %u pause %u slow-disk %u kill %u%s"
           " member %u transfer %u ppm",
           s->steady ? "steady: " : "",
           dur, s->n, spares, s->clients_n, cc.faults.drop_ppm, cc.faults.dup_ppm,
           cc.faults.delay_min_ns / 1000, cc.faults.delay_max_ns / 1000,
           cc.disk_delay_min_ns / 1000, cc.disk_delay_max_ns / 1000,
           !cc.disable_pre_vote, !cc.disable_check_quorum, cc.lease_reads,
           s->skew, cc.snapshot_entries, s->p_crash, crashy ? " (heavy)" : "",
           s->p_partition, s->p_clog, s->p_pause, s->p_slow_disk,
           s->leader_kill_ppm,
           fig8 ? " (fig8)" : "", s->p_member, s->p_transfer);
  fs_mix(s, opts->seed);
  if (opts->trace != NULL) {
    fprintf(opts->trace, "seed %" PRIu64 " (full stack): %s, %" PRIu64
                         " ms\n",
            opts->seed, res->swarm, duration_ms);
  }
  rv = qraft_sim_cluster_new(&cc, &s->c);
  if (rv != 0) {
    qraft__lincheck_history_free(s->hist);
    free(s);
    return rv == -ENOMEM ? -ENOMEM : rv;
  }
  if (s->relay) {
    /* the attacker: a host of its own, after the relay's */
    qraft_simnet *net = qraft_sim_cluster_net(s->c);
    struct sockaddr_in any = {.sin_family = AF_INET};
    struct sockaddr_storage ea;
    if (qraft_simnet_env_new(net, &s->evil_env) != 0 ||
        qraft_env_udp_bind(s->evil_env, (struct sockaddr *)&any,
                           fs_evil_recv, s, &s->evil) != 0 ||
        qraft_env_udp_local_addr(s->evil, &ea) != 0) {
      QRAFT_ASSERTF(false, "full sim: no attacker host");
    }
    memcpy(&s->evil_addr, &ea, sizeof s->evil_addr);
    qraft_simnet_set_tap(net, fs_spy, s);
  }
  for (uint32_t i = 0; i < s->total; i++) {
    s->wlog[i].sim = s;
    s->wlog[i].node = i;
    qraft_simdisk_set_observer(qraft_sim_cluster_disk(s->c, i), fs_disk_write,
                               &s->wlog[i]);
    qraft_node_addr addr;
    qraft_sim_cluster_addr(s->c, i, &addr);
    s->ids[i] = qraft_node_raft_id(&addr.id);
    s->started[i] = i < s->n;
  }
  s->confs_n = 1;
  s->confs[0].n = s->n;
  memcpy(s->confs[0].voters, s->ids, s->n * sizeof s->ids[0]);
  /* Faults until 70% of the run, clients throughout. */
  uint64_t t0 = fs_now(s);
  uint64_t faults_end = t0 + duration_ms * 700000ull;
  uint64_t end = t0 + duration_ms * 1000000ull;
  s->faults_end_ns = faults_end;
  while (!s->failed && fs_now(s) < end) {
    if (fs_now(s) < faults_end) {
      fs_faults_step(s);
    } else if (fs_now(s) - faults_end < FS_SLICE_MS * 1000000ull) {
      fs_heal_all(s);
    }
    if (s->p_member > 0) {
      fs_membership_tend(s);
    }
    fs_clients_step(s, true);
    qraft_sim_cluster_run(s->c, FS_SLICE_MS, fs_step_done, s);
  }
  if (!s->failed) {
    fs_heal_all(s);
    /* Let the clients' last operations finish or time out. */
    uint64_t drain_end = fs_now(s) + (FS_OP_TIMEOUT_MS + 100) * 1000000ull;
    while (!s->failed && fs_now(s) < drain_end) {
      fs_clients_step(s, false);
      qraft_sim_cluster_run(s->c, FS_SLICE_MS, fs_step_done, s);
    }
    fs_clients_step(s, false);
  }
  if (!s->failed) {
    fs_liveness(s);
  }
  if (!s->failed) {
    fs_check_durability(s);
  }
  if (!s->failed) {
    fs_check_commit_rule(s);
  }
  if (!s->failed) {
    fs_check_stops(s);
  }
  s->closing = true;
  /* Operations still pending count as info (lincheck does it). */
  if (!s->failed) {
    fs_check_history(s);
  }
  qraft_simnet_stats ns;
  qraft_simnet_stats_get(qraft_sim_cluster_net(s->c), &ns);
  res->messages = ns.sent;
  res->messages_dropped = ns.dropped + ns.blocked;
  res->events = ns.events;
  res->virtual_ms = qraft_sim_cluster_now_ms(s->c);
  fs_mix(s, ns.trace_hash);
  res->trace_hash = s->trace_hash;
  for (uint32_t i = 0; i < s->total; i++) {
    fs_count_node(s, i);
    qraft_simdisk_stats ds;
    qraft_simdisk_stats_get(qraft_sim_cluster_disk(s->c, i), &ds);
    res->writes_nospace += ds.writes_nospace;
  }
  res->disk_fulls = s->disk_fulls;
  res->apply_refused = s->apply_refused;
  if (s->evil_env != NULL) {
    qraft_simnet_set_tap(qraft_sim_cluster_net(s->c), NULL, NULL);
    qraft_env_udp_close(s->evil);
    qraft_env_free(s->evil_env);
  }
  qraft_sim_cluster_free(s->c);
  free(s->applied_hash);
  free(s->applied_data);
  free(s->state_hash);
  free(s->leaders);
  free(s->acked);
  free(s->low_commits);
  qraft__lincheck_history_free(s->hist);
  free(s);
  return 0;
}
