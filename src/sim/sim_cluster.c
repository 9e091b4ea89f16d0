/*
 * sim_cluster.c: a simulated cluster of real nodes (qraft/node.h) with
 * their QUIC transport, on the in-memory network (qraft_simnet), each with
 * a simulated disk (simdisk.c). Public as the qraft_sim_cluster_* API of
 * qraft/sim.h: users run their own state machine under faults with it, and
 * the full-stack simulator (full_sim.c) is built on it.
 *
 * It must never: read the OS clock or randomness (everything comes from the
 * network's one generator), or block.
 */
#include <qraft/relay.h>
#include <qraft/sim.h>

#include <qraft/assert.h>
#include <qraft/log.h>
#include <qraft/prng.h>

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define SIM_CLUSTER_ID 0x51a7
#define SIM_PORT 7000

typedef struct sc_node {
  struct qraft_sim_cluster *c;
  qraft_env *env;
  qraft_simdisk *disk;
  qraft_secret_key key;
  qraft_node_addr addr;
  qraft_node *node; /* NULL while crashed */
  void *sm;
  /* The node's own logger: it watches for the records of a node that
   * stops on its own and passes the rest on to the user's. */
  qraft_logger lg;
  bool killing; /* the simulator crashes or frees the node */
  uint64_t stops;
  char stop_why[256];
} sc_node;

struct qraft_sim_cluster {
  qraft_sim_cluster_config cfg;
  qraft_simnet *net;
  qraft_env *control; /* host 1: no sockets, no skew; runs the loop */
  uint32_t n;
  sc_node nodes[QRAFT_SIM_CLUSTER_NODES_MAX];
  /* cfg.relay: the relay's host (after the nodes'), key and server */
  qraft_env *relay_env;
  qraft_secret_key relay_key;
  qraft_relay_addr relay_addr;
  qraft_endpoint *relay_ep;
  qraft_relay_server *relay_srv;
  qraft_logger relay_quiet;
};

/* A key drawn from the cluster's one generator. */
static void sc_key(qraft_sim_cluster *c, qraft_secret_key *key) {
  uint8_t seed[32];
  for (size_t k = 0; k < sizeof seed; k += 8) {
    uint64_t x = qraft_simnet_random(c->net);
    memcpy(seed + k, &x, 8);
  }
  qraft_secret_key_from_seed(key, seed);
}

static int sc_relay_start(qraft_sim_cluster *c) {
  qraft_endpoint_config ec = {.env = c->relay_env, .key = &c->relay_key,
                              .bind_n = 1};
  struct sockaddr_in *b = (struct sockaddr_in *)&ec.bind[0];
  b->sin_family = AF_INET;
  b->sin_port = htons(SIM_PORT);
  /* the relay logs as the nodes do: to the user's logger, or nowhere */
  qraft_logger_init(&c->relay_quiet, QRAFT_LOG_OFF);
  qraft_logger *lg = c->cfg.logger != NULL ? c->cfg.logger : &c->relay_quiet;
  ec.logger = lg;
  int rv = qraft_endpoint_new(&ec, &c->relay_ep, NULL);
  if (rv != 0) {
    return rv;
  }
  qraft_relay_server_config rc = {.ep = c->relay_ep, .logger = lg};
  rv = qraft_relay_server_new(&rc, &c->relay_srv, NULL);
  if (rv != 0) {
    qraft_endpoint_free(c->relay_ep);
    c->relay_ep = NULL;
  }
  return rv;
}

static void sc_relay_stop(qraft_sim_cluster *c) {
  if (c->relay_ep == NULL) {
    return;
  }
  qraft_endpoint_shutdown(c->relay_ep);
  qraft_relay_server_free(c->relay_srv);
  qraft_endpoint_free(c->relay_ep);
  c->relay_srv = NULL;
  c->relay_ep = NULL;
}

/* Every record that says "node stops" (qraft/node.h: the node's fatal
 * errors, after which it takes no part any more; its status still says
 * `running`) counts as a stop of its own, unless the simulator is taking
 * the node down itself (a crash fails its pending writes, which the node
 * takes as fatal just before it is freed). */
static void sc_log_sink(void *ud, qraft_log_level level, const char *file,
                        int line, const char *msg,
                        const qraft_log_field *fields, size_t fields_n) {
  sc_node *sn = ud;
  if (level >= QRAFT_LOG_ERROR && !sn->killing &&
      strstr(msg, "node stops") != NULL) {
    sn->stops++;
    qraft_log_format(sn->stop_why, sizeof sn->stop_why, level, file, line,
                     msg, fields, fields_n);
  }
  const qraft_logger *user = sn->c->cfg.logger;
  if (user != NULL && (int)level >= user->level && user->sink_cb != NULL) {
    user->sink_cb(user->sink_ud, level, file, line, msg, fields, fields_n);
  }
}

static int sc_node_open(qraft_sim_cluster *c, uint32_t i) {
  sc_node *sn = &c->nodes[i];
  qraft_storage *st = NULL;
  int rv = qraft_simdisk_open(sn->disk, &st);
  if (rv != 0) {
    return rv;
  }
  sn->sm = c->cfg.sm_new(c->cfg.ud, i);
  if (sn->sm == NULL) {
    qraft_storage_close(st);
    return -ENOMEM;
  }
  qraft_node_config nc;
  qraft_node_config_default(&nc);
  nc.storage = st;
  nc.key = &sn->key;
  nc.cluster_id = SIM_CLUSTER_ID;
  nc.bind_n = 1;
  struct sockaddr_in *b = (struct sockaddr_in *)&nc.bind[0];
  b->sin_family = AF_INET;
  b->sin_port = htons(SIM_PORT);
  if (c->cfg.relay) {
    nc.relays_n = 1;
    nc.relays[0] = c->relay_addr;
  }
  nc.sm = c->cfg.sm;
  nc.sm_ud = sn->sm;
  nc.env = sn->env;
  int level = c->cfg.logger != NULL ? c->cfg.logger->level : QRAFT_LOG_OFF;
  qraft_logger_init(&sn->lg, QRAFT_LOG_OFF);
  sn->lg.level = level < QRAFT_LOG_ERROR ? level : QRAFT_LOG_ERROR;
  sn->lg.sink_cb = sc_log_sink;
  sn->lg.sink_ud = sn;
  sn->lg.name = c->cfg.logger != NULL ? c->cfg.logger->name : NULL;
  nc.logger = &sn->lg;
  if (c->cfg.tick_ms != 0) {
    nc.tick_ms = c->cfg.tick_ms;
  }
  if (c->cfg.election_ticks != 0) {
    nc.election_ticks = c->cfg.election_ticks;
  }
  if (c->cfg.heartbeat_ticks != 0) {
    nc.heartbeat_ticks = c->cfg.heartbeat_ticks;
  }
  nc.disable_pre_vote = c->cfg.disable_pre_vote;
  nc.disable_check_quorum = c->cfg.disable_check_quorum;
  nc.lease_reads = c->cfg.lease_reads;
  if (c->cfg.snapshot_entries != 0) {
    nc.snapshot_entries = c->cfg.snapshot_entries;
  }
  nc.snapshot_chunk_bytes = c->cfg.snapshot_chunk_bytes;
  nc.snapshot_inflight_bytes = c->cfg.snapshot_inflight_bytes;
  nc.snapshot_step_bytes = c->cfg.snapshot_step_bytes;
  qraft_err err;
  qraft_err_init(&err, 0);
  rv = qraft_node_new(&nc, &sn->node, &err);
  if (rv != 0) {
    qraft_storage_close(st);
    c->cfg.sm_free(c->cfg.ud, i, sn->sm);
    sn->sm = NULL;
    sn->node = NULL;
    return rv;
  }
  return 0;
}

int qraft_sim_cluster_new(const qraft_sim_cluster_config *cfg,
                          qraft_sim_cluster **out) {
  if (cfg->nodes < 1 || cfg->nodes > QRAFT_SIM_CLUSTER_NODES_MAX ||
      cfg->spares > QRAFT_SIM_CLUSTER_NODES_MAX - cfg->nodes ||
      (cfg->relay_only && !cfg->relay) ||
      cfg->sm == NULL || cfg->sm_new == NULL || cfg->sm_free == NULL ||
      cfg->clock_skew_ppm_max > 100000) {
    return QRAFT_ECONFIG;
  }
  qraft_sim_cluster *c = calloc(1, sizeof *c);
  if (c == NULL) {
    return -ENOMEM;
  }
  c->cfg = *cfg;
  c->n = cfg->nodes + cfg->spares;
  int rv = qraft_simnet_new(cfg->seed, &c->net);
  if (rv != 0) {
    free(c);
    return rv;
  }
  qraft_simnet_faults f = cfg->faults;
  if (f.delay_max_ns == 0) {
    f.delay_min_ns = f.delay_max_ns = 50000;
  }
  qraft_simnet_set_faults(c->net, &f);
  rv = qraft_simnet_env_new(c->net, &c->control);
  if (rv != 0) {
    qraft_simnet_free(c->net);
    free(c);
    return rv;
  }
  uint64_t dmin = cfg->disk_delay_min_ns, dmax = cfg->disk_delay_max_ns;
  if (dmax == 0) {
    dmin = 100000;
    dmax = 2000000;
  }
  qraft_node_addr members[QRAFT_SIM_CLUSTER_NODES_MAX];
  for (uint32_t i = 0; i < c->n; i++) {
    sc_node *sn = &c->nodes[i];
    sn->c = c;
    rv = qraft_simnet_env_new(c->net, &sn->env);
    if (rv != 0) {
      goto err_free;
    }
    if (cfg->clock_skew_ppm_max > 0) {
      uint64_t span = 2ull * cfg->clock_skew_ppm_max + 1;
      int32_t ppm = (int32_t)(qraft_simnet_random(c->net) % span) -
                    (int32_t)cfg->clock_skew_ppm_max;
      int64_t off = (int64_t)(qraft_simnet_random(c->net) % 1000000000ull);
      qraft_simnet_host_set_clock(sn->env, off, ppm);
    }
    if (cfg->nat[i] != QRAFT_SIMNET_NAT_NONE) {
      uint64_t t = cfg->nat_timeout_ms ? cfg->nat_timeout_ms : 30000;
      qraft_simnet_host_set_nat(sn->env, cfg->nat[i], t * 1000000ull);
    }
    rv = qraft_simdisk_new(sn->env, dmin, dmax, &sn->disk);
    if (rv != 0) {
      goto err_free;
    }
    sc_key(c, &sn->key);
    sn->addr.id = sn->key.public_key;
    sn->addr.addrs_n = 1;
    struct sockaddr_in *a = (struct sockaddr_in *)&sn->addr.addrs[0];
    a->sin_family = AF_INET;
    a->sin_port = htons(SIM_PORT);
    a->sin_addr.s_addr = htonl(0x0a000000u + i + 2); /* simnet host i + 2 */
    members[i] = sn->addr;
  }
  if (cfg->relay) {
    /* the relay: the host after the nodes' */
    rv = qraft_simnet_env_new(c->net, &c->relay_env);
    if (rv != 0) {
      goto err_free;
    }
    sc_key(c, &c->relay_key);
    c->relay_addr.id = c->relay_key.public_key;
    struct sockaddr_in *ra = (struct sockaddr_in *)&c->relay_addr.addr;
    ra->sin_family = AF_INET;
    ra->sin_port = htons(SIM_PORT);
    ra->sin_addr.s_addr = htonl(0x0a000000u + c->n + 2);
    rv = sc_relay_start(c);
    if (rv != 0) {
      goto err_free;
    }
    for (uint32_t i = 0; i < c->n; i++) {
      members[i].relays_n = 1;
      members[i].relays[0] = c->relay_addr;
      if (cfg->relay_only) {
        members[i].addrs_n = 0;
      }
      c->nodes[i].addr = members[i];
    }
  }
  for (uint32_t i = cfg->nodes; i < c->n; i++) {
    qraft_simnet_host_set_down(c->nodes[i].env, true); /* until started */
  }
  for (uint32_t i = 0; i < cfg->nodes; i++) {
    rv = sc_node_open(c, i);
    if (rv != 0) {
      goto err_free;
    }
    qraft_err err;
    qraft_err_init(&err, 0);
    rv = qraft_node_bootstrap(c->nodes[i].node, members, cfg->nodes, &err);
    if (rv == 0) {
      rv = qraft_node_start(c->nodes[i].node);
    }
    if (rv != 0) {
      goto err_free;
    }
  }
  *out = c;
  return 0;

err_free:
  qraft_sim_cluster_free(c);
  return rv;
}

void qraft_sim_cluster_free(qraft_sim_cluster *c) {
  if (c == NULL) {
    return;
  }
  for (uint32_t i = 0; i < c->n; i++) {
    sc_node *sn = &c->nodes[i];
    if (sn->node != NULL) {
      sn->killing = true;
      qraft_simdisk_flush(sn->disk);
      qraft_node_free(sn->node);
      sn->node = NULL;
    }
  }
  sc_relay_stop(c);
  for (uint32_t i = 0; i < c->n; i++) {
    sc_node *sn = &c->nodes[i];
    if (sn->sm != NULL) {
      c->cfg.sm_free(c->cfg.ud, i, sn->sm);
      sn->sm = NULL;
    }
    qraft_simdisk_free(sn->disk);
    qraft_env_free(sn->env);
  }
  qraft_env_free(c->relay_env);
  qraft_env_free(c->control);
  qraft_simnet_free(c->net);
  free(c);
}

uint32_t qraft_sim_cluster_size(const qraft_sim_cluster *c) { return c->n; }

void qraft_sim_cluster_addr(const qraft_sim_cluster *c, uint32_t i,
                            qraft_node_addr *out) {
  QRAFT_ASSERT(i < c->n);
  *out = c->nodes[i].addr;
}

qraft_node *qraft_sim_cluster_node(qraft_sim_cluster *c, uint32_t i) {
  QRAFT_ASSERT(i < c->n);
  return c->nodes[i].node;
}

void *qraft_sim_cluster_sm(qraft_sim_cluster *c, uint32_t i) {
  QRAFT_ASSERT(i < c->n);
  return c->nodes[i].node != NULL ? c->nodes[i].sm : NULL;
}

int qraft_sim_cluster_leader(qraft_sim_cluster *c) {
  int best = -1;
  uint64_t best_term = 0;
  for (uint32_t i = 0; i < c->n; i++) {
    if (c->nodes[i].node == NULL) {
      continue;
    }
    qraft_node_status st;
    qraft_node_status_get(c->nodes[i].node, &st);
    if (st.role == QRAFT_ROLE_LEADER && st.term >= best_term) {
      best = (int)i;
      best_term = st.term;
    }
  }
  return best;
}

uint64_t qraft_sim_cluster_node_stops(const qraft_sim_cluster *c, uint32_t i,
                                      char *why, size_t why_size) {
  QRAFT_ASSERT(i < c->n);
  const sc_node *sn = &c->nodes[i];
  if (why != NULL && why_size > 0) {
    snprintf(why, why_size, "%s", sn->stop_why);
  }
  return sn->stops;
}

uint64_t qraft_sim_cluster_now_ms(const qraft_sim_cluster *c) {
  return (qraft_simnet_now_ns(c->net) - 1000000000ull) / 1000000u;
}

qraft_simnet *qraft_sim_cluster_net(qraft_sim_cluster *c) { return c->net; }

qraft_env *qraft_sim_cluster_env(qraft_sim_cluster *c, uint32_t i) {
  QRAFT_ASSERT(i < c->n);
  return c->nodes[i].env;
}

qraft_simdisk *qraft_sim_cluster_disk(qraft_sim_cluster *c, uint32_t i) {
  QRAFT_ASSERT(i < c->n);
  return c->nodes[i].disk;
}

uint64_t qraft_sim_cluster_random(qraft_sim_cluster *c) {
  return qraft_simnet_random(c->net);
}

bool qraft_sim_cluster_run(qraft_sim_cluster *c, uint64_t ms,
                           qraft_env_done_cb done_cb, void *ud) {
  /* The control host has no skew: its clock is the network's. */
  uint64_t end = qraft_env_now_ns(c->control) + ms * 1000000u;
  int rv = qraft_env_run(c->control, end, done_cb, ud);
  return rv == 0;
}

void qraft_sim_cluster_set_faults(qraft_sim_cluster *c,
                                  const qraft_simnet_faults *f) {
  qraft_simnet_set_faults(c->net, f);
}

void qraft_sim_cluster_block(qraft_sim_cluster *c, uint32_t i, uint32_t j,
                             bool both, bool blocked) {
  QRAFT_ASSERT(i < c->n && j < c->n);
  qraft_simnet_link_block(c->nodes[i].env, c->nodes[j].env, blocked);
  if (both) {
    qraft_simnet_link_block(c->nodes[j].env, c->nodes[i].env, blocked);
  }
}

void qraft_sim_cluster_isolate(qraft_sim_cluster *c, uint32_t i) {
  for (uint32_t j = 0; j < c->n; j++) {
    if (j != i) {
      qraft_sim_cluster_block(c, i, j, true, true);
    }
  }
}

void qraft_sim_cluster_clog(qraft_sim_cluster *c, uint32_t i, uint32_t j,
                            uint64_t ms) {
  QRAFT_ASSERT(i < c->n && j < c->n);
  qraft_simnet_link_clog(c->nodes[i].env, c->nodes[j].env,
                         qraft_simnet_now_ns(c->net) + ms * 1000000u);
}

void qraft_sim_cluster_heal(qraft_sim_cluster *c) { qraft_simnet_heal(c->net); }

void qraft_sim_cluster_relay_block(qraft_sim_cluster *c, uint32_t i,
                                   bool blocked) {
  QRAFT_ASSERT(c->relay_env != NULL && i < c->n);
  qraft_simnet_link_block(c->nodes[i].env, c->relay_env, blocked);
  qraft_simnet_link_block(c->relay_env, c->nodes[i].env, blocked);
}

void qraft_sim_cluster_relay_clog(qraft_sim_cluster *c, uint32_t i,
                                  uint64_t ms) {
  QRAFT_ASSERT(c->relay_env != NULL && i < c->n);
  qraft_simnet_link_clog(c->relay_env, c->nodes[i].env,
                         qraft_simnet_now_ns(c->net) + ms * 1000000u);
}

void qraft_sim_cluster_relay_crash(qraft_sim_cluster *c) {
  QRAFT_ASSERT(c->relay_env != NULL);
  if (c->relay_ep == NULL) {
    return;
  }
  /* A crash says nothing more: no close frames leave. */
  qraft_simnet_host_set_down(c->relay_env, true);
  sc_relay_stop(c);
}

int qraft_sim_cluster_relay_restart(qraft_sim_cluster *c) {
  QRAFT_ASSERT(c->relay_env != NULL);
  if (c->relay_ep != NULL) {
    return 0;
  }
  qraft_simnet_host_set_down(c->relay_env, false);
  return sc_relay_start(c);
}

bool qraft_sim_cluster_relay_up(const qraft_sim_cluster *c) {
  return c->relay_ep != NULL;
}

void qraft_sim_cluster_pause(qraft_sim_cluster *c, uint32_t i, uint64_t ms) {
  QRAFT_ASSERT(i < c->n);
  qraft_simnet_host_pause(c->nodes[i].env,
                          qraft_simnet_now_ns(c->net) + ms * 1000000u);
}

void qraft_sim_cluster_crash(qraft_sim_cluster *c, uint32_t i) {
  QRAFT_ASSERT(i < c->n);
  sc_node *sn = &c->nodes[i];
  if (sn->node == NULL) {
    return;
  }
  /* A crashed machine says nothing more: not even its connections' close
   * frames leave. */
  qraft_simnet_host_set_down(sn->env, true);
  qraft_simnet_host_pause(sn->env, 0);
  sn->killing = true;
  qraft_simdisk_crash(sn->disk);
  qraft_node_free(sn->node);
  sn->killing = false;
  sn->node = NULL;
  c->cfg.sm_free(c->cfg.ud, i, sn->sm);
  sn->sm = NULL;
}

int qraft_sim_cluster_restart(qraft_sim_cluster *c, uint32_t i) {
  QRAFT_ASSERT(i < c->n);
  sc_node *sn = &c->nodes[i];
  if (sn->node != NULL) {
    return QRAFT_ESTATE;
  }
  qraft_simnet_host_set_down(sn->env, false);
  int rv = sc_node_open(c, i);
  if (rv != 0) {
    return rv;
  }
  rv = qraft_node_start(sn->node);
  if (rv != 0) {
    sn->killing = true;
    qraft_node_free(sn->node);
    sn->killing = false;
    sn->node = NULL;
    c->cfg.sm_free(c->cfg.ud, i, sn->sm);
    sn->sm = NULL;
  }
  return rv;
}
