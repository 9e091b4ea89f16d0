/*
 * qraft/env.h: the world as the node and the transport see it.
 *
 * Everything that touches the operating system goes through a `qraft_env`:
 * the clock, timers, randomness, UDP datagrams and cross-thread wake-ups.
 * The transport and the node never call the OS directly, so the same code
 * runs on a real event loop (the libuv env, qraft_env_uv_new) and inside a
 * deterministic simulation (the in-memory datagram network, qraft_simnet).
 *
 * Threads: an env is driven by one thread, its loop thread. Every function
 * here must be called on that thread, except qraft_env_wake_send (libuv env:
 * any thread). Callbacks (timer, receive, wake) run on the loop thread, one
 * at a time, and may call any function of the env, including freeing the
 * object whose callback is running.
 *
 * Time is a monotonic count of nanoseconds with an arbitrary origin.
 *
 * Objects (timers, sockets, wakes) are allocated by the env and freed by
 * their _free/_close function; free them all before qraft_env_free.
 */
#ifndef QRAFT_ENV_H
#define QRAFT_ENV_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct qraft_env qraft_env;
typedef struct qraft_env_timer qraft_env_timer;
typedef struct qraft_env_udp qraft_env_udp;
typedef struct qraft_env_wake qraft_env_wake;
typedef struct qraft_env_fd qraft_env_fd;

/* Largest datagram payload an env carries; longer sends fail with
 * -EMSGSIZE. */
#define QRAFT_ENV_DGRAM_MAX 1500

typedef void (*qraft_env_timer_cb)(void *ud);
/* A datagram arrived. `from` and `data` are valid only during the call. */
typedef void (*qraft_env_recv_cb)(void *ud, const struct sockaddr *from,
                                  const uint8_t *data, size_t len);
typedef void (*qraft_env_wake_cb)(void *ud);
typedef void (*qraft_env_fd_cb)(void *ud);
/* For qraft_env_run: return true to stop running. */
typedef bool (*qraft_env_done_cb)(void *ud);

/* An address of one of the machine's network interfaces. */
typedef struct qraft_env_ifaddr {
  char name[16];                 /* the interface's name, e.g. "eth0" */
  struct sockaddr_storage addr;  /* port 0 */
  bool loopback;
} qraft_env_ifaddr;

/* The operations an env implements. Users call the qraft_env_* functions
 * below, never these directly. */
typedef struct qraft_env_ops {
  uint64_t (*now_ns)(qraft_env *env);
  void (*random)(qraft_env *env, void *out, size_t len);
  int (*timer_new)(qraft_env *env, qraft_env_timer_cb cb, void *ud,
                   qraft_env_timer **out);
  void (*timer_arm)(qraft_env_timer *t, uint64_t deadline_ns);
  void (*timer_disarm)(qraft_env_timer *t);
  void (*timer_free)(qraft_env_timer *t);
  int (*udp_bind)(qraft_env *env, const struct sockaddr *addr,
                  qraft_env_recv_cb cb, void *ud, qraft_env_udp **out);
  int (*udp_local_addr)(qraft_env_udp *u, struct sockaddr_storage *out);
  int (*udp_send)(qraft_env_udp *u, const struct sockaddr *to,
                  const void *data, size_t len);
  void (*udp_close)(qraft_env_udp *u);
  int (*udp_poll)(qraft_env_udp *u, uint32_t max);
  int (*wake_new)(qraft_env *env, qraft_env_wake_cb cb, void *ud,
                  qraft_env_wake **out);
  void (*wake_send)(qraft_env_wake *w);
  void (*wake_free)(qraft_env_wake *w);
  int (*run)(qraft_env *env, uint64_t deadline_ns, qraft_env_done_cb done_cb,
             void *ud);
  void (*free)(qraft_env *env);
  /* Optional (NULL in an env without file descriptors, such as the
   * simulator's): watch a descriptor for reading. */
  int (*fd_watch)(qraft_env *env, int fd, qraft_env_fd_cb cb, void *ud,
                  qraft_env_fd **out);
  void (*fd_unwatch)(qraft_env_fd *w);
  /* Optional (NULL: none known): the machine's interface addresses. */
  uint32_t (*interfaces)(qraft_env *env, qraft_env_ifaddr *out,
                         uint32_t cap);
} qraft_env_ops;

/* The bases of the env objects; implementations embed them first. */
struct qraft_env {
  const qraft_env_ops *ops;
};
struct qraft_env_timer {
  qraft_env *env;
};
struct qraft_env_udp {
  qraft_env *env;
};
struct qraft_env_wake {
  qraft_env *env;
};
struct qraft_env_fd {
  qraft_env *env;
};

/* Current time, nanoseconds, monotonic. */
static inline uint64_t qraft_env_now_ns(qraft_env *env) {
  return env->ops->now_ns(env);
}

/* Fills `out` with `len` random bytes. The libuv env draws them from the
 * kernel (getrandom); the sim env from its one seeded generator, so a run is
 * reproducible. Not for long-term secrets: keys come from
 * qraft_secret_key_generate (qraft/transport.h). */
static inline void qraft_env_random(qraft_env *env, void *out, size_t len) {
  env->ops->random(env, out, len);
}

/*
 * Creates a disarmed one-shot timer that calls `cb(ud)` on the loop thread.
 * The caller owns the timer until qraft_env_timer_free.
 * Returns 0 on success, or one of these negative codes: -ENOMEM.
 */
static inline int qraft_env_timer_new(qraft_env *env, qraft_env_timer_cb cb,
                                      void *ud, qraft_env_timer **out) {
  return env->ops->timer_new(env, cb, ud, out);
}

/* Arms (or re-arms) `t` to fire once at `deadline_ns`. A deadline at or
 * before now fires on this turn of the loop, after the current callback and
 * before the loop waits for I/O: use it to defer work (such as flushing
 * packets) to the end of the current batch of events. */
static inline void qraft_env_timer_arm(qraft_env_timer *t,
                                       uint64_t deadline_ns) {
  t->env->ops->timer_arm(t, deadline_ns);
}

/* Disarms `t`; its callback will not run until it is armed again. */
static inline void qraft_env_timer_disarm(qraft_env_timer *t) {
  t->env->ops->timer_disarm(t);
}

/* Disarms and frees `t`; NULL is ignored. */
static inline void qraft_env_timer_free(qraft_env_timer *t) {
  if (t != NULL) {
    t->env->ops->timer_free(t);
  }
}

/*
 * Binds a UDP socket to `addr` (IPv4 or IPv6; port 0 picks a free port) and
 * calls `cb(ud, ...)` for every datagram received until qraft_env_udp_close.
 * Returns 0 on success, or one of these negative codes: -EADDRINUSE,
 * -EAFNOSUPPORT, -ENOMEM, or another -errno from the OS.
 */
static inline int qraft_env_udp_bind(qraft_env *env,
                                     const struct sockaddr *addr,
                                     qraft_env_recv_cb cb, void *ud,
                                     qraft_env_udp **out) {
  return env->ops->udp_bind(env, addr, cb, ud, out);
}

/* Fills up to `cap` entries of `out` with the machine's interface
 * addresses (IPv4, and IPv6 other than link-local), for candidates of
 * direct paths; returns how many it wrote (0 in an env that knows none). */
static inline uint32_t qraft_env_interfaces(qraft_env *env,
                                            qraft_env_ifaddr *out,
                                            uint32_t cap) {
  return env->ops->interfaces != NULL ? env->ops->interfaces(env, out, cap)
                                      : 0;
}

/* Writes the address the socket is bound to (with the port chosen).
 * Returns 0 on success, or one of these negative codes: -errno. */
static inline int qraft_env_udp_local_addr(qraft_env_udp *u,
                                           struct sockaddr_storage *out) {
  return u->env->ops->udp_local_addr(u, out);
}

/*
 * Sends one datagram. The bytes are copied before the call returns. The
 * libuv env batches datagrams and hands them to the kernel (sendmmsg) before
 * the loop next waits, or when its batch is full; a datagram the kernel
 * refuses for lack of buffer space is dropped, as a network would.
 * Returns 0 on success, or one of these negative codes: -EMSGSIZE (longer
 * than QRAFT_ENV_DGRAM_MAX), -EAFNOSUPPORT, -errno.
 */
static inline int qraft_env_udp_send(qraft_env_udp *u,
                                     const struct sockaddr *to,
                                     const void *data, size_t len) {
  return u->env->ops->udp_send(u, to, data, len);
}

/*
 * Delivers now, through the socket's receive callback and before it
 * returns, the datagrams that have already arrived at the socket and wait
 * to be read, oldest first, at most `max`. A loop runs its due timers
 * before it reads its sockets (libuv does, and the sim env does after a
 * pause), so a timer that must see what arrived before it fired, such as a
 * Raft tick after a stall, calls this first. The callback may close the
 * socket; the call then stops. Returns the number delivered, or one of
 * these negative codes: -errno.
 */
static inline int qraft_env_udp_poll(qraft_env_udp *u, uint32_t max) {
  return u->env->ops->udp_poll(u, max);
}

/* Flushes pending datagrams, closes and frees the socket; NULL is ignored. */
static inline void qraft_env_udp_close(qraft_env_udp *u) {
  if (u != NULL) {
    u->env->ops->udp_close(u);
  }
}

/*
 * Creates a wake-up: qraft_env_wake_send (from any thread with the libuv
 * env) makes the loop call `cb(ud)` soon on its thread. Several sends before
 * the callback runs give one call.
 * Returns 0 on success, or one of these negative codes: -ENOMEM, -errno.
 */
static inline int qraft_env_wake_new(qraft_env *env, qraft_env_wake_cb cb,
                                     void *ud, qraft_env_wake **out) {
  return env->ops->wake_new(env, cb, ud, out);
}

static inline void qraft_env_wake_send(qraft_env_wake *w) {
  w->env->ops->wake_send(w);
}

/* Frees the wake-up; no send may race with it. NULL is ignored. */
static inline void qraft_env_wake_free(qraft_env_wake *w) {
  if (w != NULL) {
    w->env->ops->wake_free(w);
  }
}

/*
 * Watches `fd` (owned by the caller, open until the watch is freed): the
 * loop calls `cb(ud)` on its thread whenever the descriptor is readable
 * (level-triggered: again on the next turn if the callback left it
 * readable). A store's completion eventfd (qraft_storage_fd) is the use.
 * Returns 0, -ENOTSUP when the env cannot watch descriptors, -ENOMEM or
 * -errno.
 */
static inline int qraft_env_fd_watch(qraft_env *env, int fd, qraft_env_fd_cb cb,
                                     void *ud, qraft_env_fd **out) {
  if (env->ops->fd_watch == NULL) {
    return -ENOTSUP;
  }
  return env->ops->fd_watch(env, fd, cb, ud, out);
}

/* Stops watching and frees the watch. NULL is ignored. */
static inline void qraft_env_fd_unwatch(qraft_env_fd *w) {
  if (w != NULL) {
    w->env->ops->fd_unwatch(w);
  }
}

/*
 * Runs the loop on the calling thread until `done_cb(ud)` returns true
 * (checked after every batch of events; NULL: never) or the clock passes
 * `deadline_ns` (UINT64_MAX: no deadline). A deadline already passed (0)
 * runs one turn that does not wait: what is ready or due now runs. The sim
 * env runs every env of its network, jumping its virtual clock from event
 * to event.
 * Returns 0 on success, or one of these negative codes: QRAFT_ETIMEDOUT (the
 * deadline passed first), -errno.
 */
static inline int qraft_env_run(qraft_env *env, uint64_t deadline_ns,
                                qraft_env_done_cb done_cb, void *ud) {
  return env->ops->run(env, deadline_ns, done_cb, ud);
}

/* Frees the env; every object it made must be freed first. NULL is
 * ignored. */
static inline void qraft_env_free(qraft_env *env) {
  if (env != NULL) {
    env->ops->free(env);
  }
}

/*
 * The libuv env: a loop of its own, real time (CLOCK_MONOTONIC through
 * uv_hrtime), kernel randomness, UDP sockets with recvmmsg and sendmmsg.
 * Returns 0 on success, or one of these negative codes: -ENOMEM, -errno.
 */
int qraft_env_uv_new(qraft_env **out);

/* ---- The in-memory datagram network (deterministic simulation) ---- */

typedef struct qraft_simnet qraft_simnet;

/* Faults applied to every datagram, decided by the network's one generator.
 * Probabilities are in parts per million. A datagram's delay is uniform in
 * [delay_min_ns, delay_max_ns]; datagrams overtake each other (reorder) when
 * the range is wider than the gap between them. */
typedef struct qraft_simnet_faults {
  uint32_t drop_ppm;
  uint32_t dup_ppm;
  uint64_t delay_min_ns;
  uint64_t delay_max_ns;
} qraft_simnet_faults;

/* What the network did, for tests to assert that faults fired. */
typedef struct qraft_simnet_stats {
  uint64_t sent;       /* datagrams handed to the network */
  uint64_t delivered;  /* datagrams given to a receiver */
  uint64_t dropped;    /* by the drop fault */
  uint64_t duplicated; /* extra copies made by the dup fault */
  uint64_t reordered;  /* delivered before a datagram sent earlier on the
                          same (from, to) pair */
  uint64_t unroutable; /* no socket bound at the destination */
  uint64_t events;     /* events run (timers, deliveries, wakes) */
  uint64_t blocked;    /* dropped by a blocked link or a down host */
  uint64_t clogged;    /* held back by a clogged link */
  /* FNV-1a over every event's kind, host, time and datagram size (never
   * payload bytes): the same seed and calls give the same hash even when a
   * TLS library draws its own random bytes. */
  uint64_t trace_hash;
  uint64_t nat_dropped; /* stopped by a NAT: no mapping, filtered, or sent
                           to a host's private address from outside */
} qraft_simnet_stats;

/* Hosts 1..QRAFT_SIMNET_CONTROL_HOSTS_MAX can be partitioned, clogged,
 * taken down, paused and skewed; later hosts only carry traffic. */
#define QRAFT_SIMNET_CONTROL_HOSTS_MAX 63

/*
 * Creates a network whose virtual clock starts at 1 s and whose every random
 * choice (faults, and qraft_env_random of its envs) comes from one
 * generator seeded with `seed`: the same seed and the same calls give the
 * same run. No faults until qraft_simnet_set_faults. Single-threaded: the
 * network and its envs are used from one thread.
 * Returns 0 on success, or one of these negative codes: -ENOMEM.
 */
int qraft_simnet_new(uint64_t seed, qraft_simnet **out);

/* Sets the faults for datagrams sent from now on. */
void qraft_simnet_set_faults(qraft_simnet *net, const qraft_simnet_faults *f);

/*
 * Adds a host to the network and returns its env. Host n (from 1) owns the
 * IPv4 address 10.0.n/256.n%256; a socket bound to any IPv4 address on this
 * env gets that address. IPv6 is refused with -EAFNOSUPPORT. qraft_env_run
 * on any env of the network runs them all. Free the env with
 * qraft_env_free before qraft_simnet_free.
 * Returns 0 on success, or one of these negative codes: -ENOMEM.
 */
int qraft_simnet_env_new(qraft_simnet *net, qraft_env **out);

/* Copies the counters. */
void qraft_simnet_stats_get(const qraft_simnet *net, qraft_simnet_stats *out);

/* Frees the network; every env of it must be freed first. NULL is
 * ignored. */
void qraft_simnet_free(qraft_simnet *net);

/* ---- Fault controls. `from`, `to`, `env`: envs of one network (hosts
 * 1..QRAFT_SIMNET_CONTROL_HOSTS_MAX, asserted). Datagrams in flight are not
 * affected unless said otherwise. ---- */

/* Drops (blocked) or carries again every datagram sent from `from` to `to`:
 * one direction of a partition. */
void qraft_simnet_link_block(qraft_env *from, qraft_env *to, bool blocked);

/* Clogs the link from `from` to `to` until network time `until_ns`:
 * datagrams sent meanwhile arrive after it (plus their delay), in a burst.
 * 0 unclogs. */
void qraft_simnet_link_clog(qraft_env *from, qraft_env *to,
                            uint64_t until_ns);

/* Unblocks and unclogs every link. */
void qraft_simnet_heal(qraft_simnet *net);

/* A host that is down sends nothing and receives nothing (its datagrams,
 * including those in flight to it, are dropped), as a crashed machine. */
void qraft_simnet_host_set_down(qraft_env *env, bool down);

/* Pauses the host's process until network time `until_ns` (a stop-the-
 * world pause): its timers, wake-ups and deliveries wait until then. When
 * it resumes, it runs the timers that fell due before it reads the
 * datagrams that arrived meanwhile, as a libuv loop does after a stall
 * (qraft_env_udp_poll reads them first). Called by the host's own
 * callback, it models work that takes time: a timer that callback then
 * arms for "now" runs after those datagrams, as the real env runs it after
 * its next poll. */
void qraft_simnet_host_pause(qraft_env *env, uint64_t until_ns);

/* Skews the host's clock: it reads the network time plus `offset_ns`, and
 * runs `rate_ppm` parts per million faster (negative: slower) than the
 * network's from its origin. Timers follow the host's clock. The clock
 * never goes back (the offset is lifted if the change would). */
void qraft_simnet_host_set_clock(qraft_env *env, int64_t offset_ns,
                                 int32_t rate_ppm);

/* NAT models (RFC 4787's terms), for qraft_simnet_host_set_nat. */
typedef enum qraft_simnet_nat {
  QRAFT_SIMNET_NAT_NONE = 0,
  /* endpoint-independent mapping and filtering ("full cone") */
  QRAFT_SIMNET_NAT_FULL_CONE,
  /* endpoint-independent mapping, address-and-port-dependent filtering
   * ("port-restricted cone") */
  QRAFT_SIMNET_NAT_RESTRICTED,
  /* endpoint-dependent mapping, address-and-port-dependent filtering
   * ("symmetric") */
  QRAFT_SIMNET_NAT_SYMMETRIC,
} qraft_simnet_nat;

/*
 * Puts the host behind a NAT of that kind (NONE: in front again). Its
 * sockets keep its own address, 10.0.n/256.n%256, now private: datagrams
 * other hosts send there are dropped. What it sends to other hosts leaves
 * from its public address, 10.1.n/256.n%256, and a mapped port: one per
 * local port (endpoint-independent mapping), or one per local port and
 * destination (endpoint-dependent). Datagrams to the public address get
 * in through a mapping that carried a datagram (either way) within
 * `timeout_ns`: from anyone (endpoint-independent filtering) or only from
 * an address and port the mapping sent to (address-and-port-dependent).
 * Mapped ports are handed out in order, from 20000. The translation
 * happens when a datagram is sent.
 */
void qraft_simnet_host_set_nat(qraft_env *env, qraft_simnet_nat nat,
                               uint64_t timeout_ns);

/* Forgets every mapping of the host's NAT (conntrack -F): new ones get
 * new ports, and what arrives for the old ones is dropped. */
void qraft_simnet_nat_flush(qraft_env *env);

/* "none", "full-cone", "restricted", "symmetric". */
const char *qraft_simnet_nat_name(qraft_simnet_nat nat);

/* Called with every datagram a socket of the network sends, before the
 * network's faults act on it (NULL: none): a test's view of the wire, as
 * an attacker on the path would have. */
typedef void (*qraft_simnet_tap_cb)(void *ud, const struct sockaddr *from,
                                    const struct sockaddr *to,
                                    const uint8_t *data, size_t len);
void qraft_simnet_set_tap(qraft_simnet *net, qraft_simnet_tap_cb cb, void *ud);

/* The network's own time (no host skew). */
uint64_t qraft_simnet_now_ns(const qraft_simnet *net);

/* The next number of the network's one generator, for simulators that want
 * every random choice from one seed. */
uint64_t qraft_simnet_random(qraft_simnet *net);

#ifdef __cplusplus
}
#endif
#endif
