/*
 * simnet.c: an in-memory datagram network with a virtual clock, for
 * deterministic tests.
 *
 * One event queue (a binary heap ordered by time, then by the order events
 * were made), one clock that jumps to the next event, one generator for every
 * random choice. Nothing here reads the real clock or the OS's randomness:
 * the same seed and the same calls give the same run.
 */
#include <qraft/assert.h>
#include <qraft/env.h>
#include <qraft/error.h>
#include <qraft/prng.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

typedef struct sim_host sim_host;

typedef enum { EV_TIMER, EV_DGRAM, EV_WAKE } ev_kind;

typedef struct sim_dgram {
  struct sockaddr_in from;
  struct sockaddr_in to;
  uint64_t send_seq;
  uint64_t arrive_ns; /* network time it reaches the socket */
  size_t len;
  uint8_t data[];
} sim_dgram;

typedef struct sim_timer {
  qraft_env_timer base;
  qraft_env_timer_cb cb;
  void *ud;
  uint64_t gen; /* an event fires only if it carries the current gen */
  uint32_t events_pending;
  bool freed;
} sim_timer;

typedef struct sim_wake {
  qraft_env_wake base;
  qraft_env_wake_cb cb;
  void *ud;
  bool pending;
  bool freed;
} sim_wake;

typedef struct pair_seq {
  struct sockaddr_in from;
  uint64_t seq;
} pair_seq;

typedef struct sim_udp {
  qraft_env_udp base;
  struct sockaddr_in addr;
  qraft_env_recv_cb cb;
  void *ud;
  struct sim_udp *next;
  pair_seq *seen; /* the highest send_seq delivered from each source */
  size_t seen_n;
} sim_udp;

typedef struct sim_event {
  uint64_t at_ns;
  uint64_t seq;
  ev_kind kind;
  uint64_t gen;
  void *obj;
} sim_event;

struct qraft_simnet {
  qraft_prng prng;
  uint64_t now_ns;
  uint64_t seq;
  uint64_t send_seq;
  sim_event *heap;
  size_t heap_n, heap_cap;
  qraft_simnet_faults faults;
  qraft_simnet_stats stats;
  sim_udp *sockets;
  uint32_t hosts_n;
  uint32_t envs_live;
  struct sim_host *hosts[QRAFT_SIMNET_CONTROL_HOSTS_MAX + 1]; /* by index */
  qraft_simnet_tap_cb tap;
  void *tap_ud;
};

/* A NAT mapping: local port, and the destination it was opened toward. */
typedef struct sim_map {
  uint16_t lport;          /* network order */
  struct sockaddr_in remote;
  uint16_t eport;          /* network order */
  uint64_t used_ns;
} sim_map;

#define SIM_NAT_MAPS_MAX 4096u

struct sim_host {
  qraft_env base;
  qraft_simnet *net;
  uint32_t index;
  uint16_t next_port;
  qraft_simnet_nat nat;
  uint64_t nat_timeout_ns;
  sim_map *maps;
  uint32_t maps_n;
  uint16_t next_eport;
  /* Controls (qraft_simnet_link_block etc.); hosts 1..CONTROL_HOSTS_MAX. */
  uint64_t blocked_to;   /* bit i: datagrams to host i are dropped */
  uint64_t clog_until_ns[QRAFT_SIMNET_CONTROL_HOSTS_MAX + 1]; /* to host i */
  bool down;
  uint64_t paused_until_ns;
  int64_t clock_offset_ns;
  int32_t clock_rate_ppm;
};

static sim_host *host_of(qraft_env *env) { return (sim_host *)env; }

/* ---- NAT models ---- */

static bool addr_public(const struct sockaddr_in *a) {
  return ((ntohl(a->sin_addr.s_addr) >> 16) & 0xff) == 1;
}

static bool map_live(const sim_host *h, const sim_map *m, uint64_t now) {
  return now - m->used_ns < h->nat_timeout_ns;
}

/* Rewrites `from` (the host's socket) to its public address and mapped
 * port toward `to`, opening a mapping if none is live. */
static void nat_out(qraft_simnet *net, sim_host *h, struct sockaddr_in *from,
                    const struct sockaddr_in *to) {
  uint64_t now = net->now_ns;
  bool eim = h->nat != QRAFT_SIMNET_NAT_SYMMETRIC;
  sim_map *same = NULL, *port = NULL;
  for (uint32_t i = 0; i < h->maps_n; i++) {
    sim_map *m = &h->maps[i];
    if (m->lport != from->sin_port || !map_live(h, m, now)) {
      continue;
    }
    if (m->remote.sin_addr.s_addr == to->sin_addr.s_addr &&
        m->remote.sin_port == to->sin_port) {
      same = m;
    }
    port = port != NULL ? port : m;
  }
  if (same == NULL) {
    uint16_t eport = eim && port != NULL ? port->eport : 0;
    if (eport == 0) {
      eport = htons(h->next_eport);
      h->next_eport = h->next_eport >= 65000 ? 20000 : h->next_eport + 1;
    }
    if (h->maps_n == SIM_NAT_MAPS_MAX) {
      /* full: the dead go, else the one idle longest */
      uint32_t k = 0;
      for (uint32_t i = 0; i < h->maps_n; i++) {
        if (map_live(h, &h->maps[i], now)) {
          h->maps[k++] = h->maps[i];
        }
      }
      if (k == h->maps_n) {
        uint32_t old = 0;
        for (uint32_t i = 1; i < h->maps_n; i++) {
          old = h->maps[i].used_ns < h->maps[old].used_ns ? i : old;
        }
        h->maps[old] = h->maps[--k];
      }
      h->maps_n = k;
    }
    if (h->maps == NULL) {
      h->maps = calloc(SIM_NAT_MAPS_MAX, sizeof *h->maps);
      QRAFT_ASSERTF(h->maps != NULL, "simnet: out of memory");
    }
    same = &h->maps[h->maps_n++];
    same->lport = from->sin_port;
    same->remote = *to;
    same->eport = eport;
  }
  same->used_ns = now;
  from->sin_addr.s_addr = htonl((10u << 24) | (1u << 16) | h->index);
  from->sin_port = same->eport;
}

/* A datagram from `from` to the host's public address `to`: false if the
 * NAT stops it, else `to` is rewritten to the host's socket. */
static bool nat_in(qraft_simnet *net, sim_host *h, struct sockaddr_in *to,
                   const struct sockaddr_in *from) {
  uint64_t now = net->now_ns;
  bool eif = h->nat == QRAFT_SIMNET_NAT_FULL_CONE;
  for (uint32_t i = 0; i < h->maps_n; i++) {
    sim_map *m = &h->maps[i];
    if (m->eport != to->sin_port || !map_live(h, m, now)) {
      continue;
    }
    if (eif || (m->remote.sin_addr.s_addr == from->sin_addr.s_addr &&
                m->remote.sin_port == from->sin_port)) {
      m->used_ns = now;
      to->sin_addr.s_addr = htonl((10u << 24) | h->index);
      to->sin_port = m->lport;
      return true;
    }
  }
  return false;
}

/* The event trace: FNV-1a over what happened (kind, host, size), never over
 * payload bytes, so that a run hashes the same whatever bytes the TLS
 * library drew. */
static void trace_mix(qraft_simnet *net, uint64_t x) {
  for (int i = 0; i < 8; i++) {
    net->stats.trace_hash ^= (x >> (8 * i)) & 0xff;
    net->stats.trace_hash *= 0x100000001b3ULL;
  }
}

static uint32_t host_index_of_addr(const struct sockaddr_in *a) {
  return ntohl(a->sin_addr.s_addr) & 0xffffu;
}

static sim_host *host_by_index(qraft_simnet *net, uint32_t i) {
  return i >= 1 && i <= QRAFT_SIMNET_CONTROL_HOSTS_MAX ? net->hosts[i] : NULL;
}

/* ---- the event heap ---- */

static bool ev_before(const sim_event *a, const sim_event *b) {
  return a->at_ns < b->at_ns || (a->at_ns == b->at_ns && a->seq < b->seq);
}

static int heap_push(qraft_simnet *net, uint64_t at_ns, ev_kind kind,
                     uint64_t gen, void *obj) {
  if (net->heap_n == net->heap_cap) {
    size_t cap = net->heap_cap ? net->heap_cap * 2 : 256;
    sim_event *h = realloc(net->heap, cap * sizeof *h);
    if (h == NULL) {
      return -ENOMEM;
    }
    net->heap = h;
    net->heap_cap = cap;
  }
  sim_event ev = {.at_ns = at_ns < net->now_ns ? net->now_ns : at_ns,
                  .seq = net->seq++, .kind = kind, .gen = gen, .obj = obj};
  size_t i = net->heap_n++;
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (!ev_before(&ev, &net->heap[parent])) {
      break;
    }
    net->heap[i] = net->heap[parent];
    i = parent;
  }
  net->heap[i] = ev;
  return 0;
}

/* Puts `x` at slot `i` or below it, moving smaller children up. */
static void heap_sift_down(qraft_simnet *net, size_t i, sim_event x) {
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, m = i;
    const sim_event *best = &x;
    if (l < net->heap_n && ev_before(&net->heap[l], best)) {
      m = l;
      best = &net->heap[l];
    }
    if (r < net->heap_n && ev_before(&net->heap[r], best)) {
      m = r;
    }
    if (m == i) {
      break;
    }
    net->heap[i] = net->heap[m];
    i = m;
  }
  net->heap[i] = x;
}

/* Restores the heap order of the whole array (after removals). */
static void heap_rebuild(qraft_simnet *net) {
  for (size_t start = net->heap_n / 2; start-- > 0;) {
    heap_sift_down(net, start, net->heap[start]);
  }
}

static sim_event heap_pop(qraft_simnet *net) {
  QRAFT_ASSERT(net->heap_n > 0);
  sim_event top = net->heap[0];
  sim_event last = net->heap[--net->heap_n];
  if (net->heap_n > 0) {
    heap_sift_down(net, 0, last);
  }
  return top;
}

/* ---- clock and randomness ---- */

/* A host's clock runs at (1 + rate_ppm / 10^6) times the network's from
 * the network's origin, plus an offset: h(t) = t + off + (t - T0) * rate. */
#define SIM_T0_NS 1000000000ull

static uint64_t host_time(const sim_host *h, uint64_t t) {
  __int128 d = (__int128)(t - SIM_T0_NS) * h->clock_rate_ppm / 1000000;
  return (uint64_t)((__int128)t + h->clock_offset_ns + d);
}

/* The first network time at which the host's clock reads `hd` or later. */
static uint64_t net_time(const sim_host *h, uint64_t hd) {
  if (h->clock_rate_ppm == 0 && h->clock_offset_ns == 0) {
    return hd;
  }
  __int128 x = (__int128)hd - h->clock_offset_ns - SIM_T0_NS;
  if (x <= 0) {
    return SIM_T0_NS;
  }
  __int128 den = 1000000 + h->clock_rate_ppm;
  __int128 t = SIM_T0_NS + (x * 1000000 + den - 1) / den;
  while (t > SIM_T0_NS && host_time(h, (uint64_t)(t - 1)) >= hd) {
    t--;
  }
  while (host_time(h, (uint64_t)t) < hd) {
    t++;
  }
  return t > (__int128)UINT64_MAX / 2 ? UINT64_MAX / 2 : (uint64_t)t;
}

static uint64_t sim_now_ns(qraft_env *env) {
  sim_host *h = host_of(env);
  return host_time(h, h->net->now_ns);
}

static void sim_random(qraft_env *env, void *out, size_t len) {
  qraft_prng *p = &host_of(env)->net->prng;
  uint8_t *o = out;
  while (len > 0) {
    uint64_t x = qraft_prng_next(p);
    size_t n = len < 8 ? len : 8;
    memcpy(o, &x, n);
    o += n;
    len -= n;
  }
}

/* ---- timers ---- */

static int sim_timer_new(qraft_env *env, qraft_env_timer_cb cb, void *ud,
                         qraft_env_timer **out) {
  sim_timer *t = calloc(1, sizeof *t);
  if (t == NULL) {
    return -ENOMEM;
  }
  t->base.env = env;
  t->cb = cb;
  t->ud = ud;
  *out = &t->base;
  return 0;
}

static void sim_timer_arm(qraft_env_timer *base, uint64_t deadline_ns) {
  sim_timer *t = (sim_timer *)base;
  qraft_simnet *net = host_of(base->env)->net;
  t->gen++;
  sim_host *h = host_of(base->env);
  uint64_t at = deadline_ns <= host_time(h, net->now_ns)
                    ? net->now_ns
                    : net_time(h, deadline_ns);
  if (at == net->now_ns && h->paused_until_ns > net->now_ns) {
    /* Armed for now by the callback that paused its own host (work that
     * takes time: qraft_simnet_host_pause from inside it). The real env
     * runs such a timer after the loop's next poll, so it runs after the
     * host reads the datagrams that arrived meanwhile (paused_until + 1),
     * not before them as the timers that fell due during a stall. */
    at = h->paused_until_ns + 2;
  }
  int rv = heap_push(net, at, EV_TIMER, t->gen, t);
  QRAFT_ASSERTF(rv == 0, "simnet: out of memory for an event");
  t->events_pending++;
}

static void sim_timer_disarm(qraft_env_timer *base) {
  ((sim_timer *)base)->gen++;
}

static void sim_timer_free(qraft_env_timer *base) {
  sim_timer *t = (sim_timer *)base;
  t->gen++;
  t->freed = true;
  if (t->events_pending == 0) {
    free(t);
  }
}

/* ---- sockets ---- */

static int sim_udp_bind(qraft_env *env, const struct sockaddr *addr,
                        qraft_env_recv_cb cb, void *ud, qraft_env_udp **out) {
  sim_host *h = host_of(env);
  if (addr->sa_family != AF_INET) {
    return -EAFNOSUPPORT;
  }
  uint16_t port = ntohs(((const struct sockaddr_in *)addr)->sin_port);
  if (port == 0) {
    port = h->next_port++;
  }
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  a.sin_addr.s_addr = htonl((10u << 24) | h->index);
  for (sim_udp *s = h->net->sockets; s != NULL; s = s->next) {
    if (s->addr.sin_addr.s_addr == a.sin_addr.s_addr &&
        s->addr.sin_port == a.sin_port) {
      return -EADDRINUSE;
    }
  }
  sim_udp *u = calloc(1, sizeof *u);
  if (u == NULL) {
    return -ENOMEM;
  }
  u->base.env = env;
  u->addr = a;
  u->cb = cb;
  u->ud = ud;
  u->next = h->net->sockets;
  h->net->sockets = u;
  *out = &u->base;
  return 0;
}

static int sim_udp_local_addr(qraft_env_udp *base,
                              struct sockaddr_storage *out) {
  memset(out, 0, sizeof *out);
  memcpy(out, &((sim_udp *)base)->addr, sizeof(struct sockaddr_in));
  return 0;
}

static sim_udp *socket_find(qraft_simnet *net, const struct sockaddr_in *a) {
  for (sim_udp *s = net->sockets; s != NULL; s = s->next) {
    if (s->addr.sin_addr.s_addr == a->sin_addr.s_addr &&
        s->addr.sin_port == a->sin_port) {
      return s;
    }
  }
  return NULL;
}

static int sim_udp_send(qraft_env_udp *base, const struct sockaddr *to,
                        const void *data, size_t len) {
  sim_udp *u = (sim_udp *)base;
  qraft_simnet *net = host_of(base->env)->net;
  if (len > QRAFT_ENV_DGRAM_MAX) {
    return -EMSGSIZE;
  }
  if (to->sa_family != AF_INET) {
    return -EAFNOSUPPORT;
  }
  net->stats.sent++;
  if (net->tap != NULL) {
    net->tap(net->tap_ud, (const struct sockaddr *)&u->addr, to, data, len);
  }
  uint64_t send_seq = ++net->send_seq;
  const qraft_simnet_faults *f = &net->faults;
  sim_host *src = host_of(base->env);
  uint32_t dst_i = host_index_of_addr((const struct sockaddr_in *)to);
  trace_mix(net, ((uint64_t)src->index << 48) | ((uint64_t)dst_i << 32) | len);
  if (src->down || (dst_i <= QRAFT_SIMNET_CONTROL_HOSTS_MAX &&
                    (src->blocked_to >> dst_i) & 1)) {
    net->stats.blocked++;
    return 0;
  }
  struct sockaddr_in from = u->addr, dst;
  memcpy(&dst, to, sizeof dst);
  sim_host *dh = host_by_index(net, dst_i);
  if (dst_i != src->index) {
    if (src->nat != QRAFT_SIMNET_NAT_NONE) {
      nat_out(net, src, &from, &dst);
    }
    if (dh != NULL && dh->nat != QRAFT_SIMNET_NAT_NONE &&
        (!addr_public(&dst) || !nat_in(net, dh, &dst, &from))) {
      net->stats.nat_dropped++;
      return 0;
    }
  }
  uint64_t clog_until = dst_i <= QRAFT_SIMNET_CONTROL_HOSTS_MAX
                            ? src->clog_until_ns[dst_i]
                            : 0;
  if (f->drop_ppm > 0 && qraft_prng_chance(&net->prng, f->drop_ppm, 1000000)) {
    net->stats.dropped++;
    return 0;
  }
  int copies = 1;
  if (f->dup_ppm > 0 && qraft_prng_chance(&net->prng, f->dup_ppm, 1000000)) {
    copies = 2;
    net->stats.duplicated++;
  }
  for (int i = 0; i < copies; i++) {
    sim_dgram *d = malloc(sizeof *d + len);
    if (d == NULL) {
      return -ENOMEM;
    }
    d->from = from;
    d->to = dst;
    d->send_seq = send_seq;
    d->len = len;
    memcpy(d->data, data, len);
    uint64_t delay = f->delay_min_ns;
    if (f->delay_max_ns > f->delay_min_ns) {
      delay = qraft_prng_between(&net->prng, f->delay_min_ns, f->delay_max_ns);
    }
    uint64_t at = net->now_ns + delay;
    if (at < clog_until) {
      at = clog_until + delay;
      net->stats.clogged++;
    }
    d->arrive_ns = at;
    if (heap_push(net, at, EV_DGRAM, 0, d) != 0) {
      free(d);
      return -ENOMEM;
    }
  }
  return 0;
}

static void sim_udp_close(qraft_env_udp *base) {
  sim_udp *u = (sim_udp *)base;
  qraft_simnet *net = host_of(base->env)->net;
  for (sim_udp **pp = &net->sockets; *pp != NULL; pp = &(*pp)->next) {
    if (*pp == u) {
      *pp = u->next;
      break;
    }
  }
  free(u->seen);
  free(u);
}

static void deliver(qraft_simnet *net, sim_dgram *d) {
  sim_host *dst = host_by_index(net, host_index_of_addr(&d->to));
  if (dst != NULL && dst->down) {
    net->stats.blocked++;
    return;
  }
  sim_udp *u = socket_find(net, &d->to);
  if (u == NULL) {
    net->stats.unroutable++;
    return;
  }
  pair_seq *ps = NULL;
  for (size_t i = 0; i < u->seen_n; i++) {
    if (u->seen[i].from.sin_addr.s_addr == d->from.sin_addr.s_addr &&
        u->seen[i].from.sin_port == d->from.sin_port) {
      ps = &u->seen[i];
      break;
    }
  }
  if (ps == NULL) {
    pair_seq *n = realloc(u->seen, (u->seen_n + 1) * sizeof *n);
    if (n != NULL) {
      u->seen = n;
      ps = &n[u->seen_n++];
      ps->from = d->from;
      ps->seq = 0;
    }
  }
  if (ps != NULL) {
    if (d->send_seq < ps->seq) {
      net->stats.reordered++;
    } else {
      ps->seq = d->send_seq;
    }
  }
  net->stats.delivered++;
  trace_mix(net, 0xd0000000ull ^ ((uint64_t)host_index_of_addr(&d->from) << 48) ^
                     ((uint64_t)host_index_of_addr(&d->to) << 32) ^ d->len);
  u->cb(u->ud, (const struct sockaddr *)&d->from, d->data, d->len);
}

static int dgram_order(const void *a, const void *b) {
  const sim_event *x = a, *y = b;
  const sim_dgram *dx = x->obj, *dy = y->obj;
  if (dx->arrive_ns != dy->arrive_ns) {
    return dx->arrive_ns < dy->arrive_ns ? -1 : 1;
  }
  return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* The datagrams for this socket that have arrived by now (those held back
 * by a pause included) leave the queue and are delivered, oldest first. */
static int sim_udp_poll(qraft_env_udp *base, uint32_t max) {
  sim_udp *u = (sim_udp *)base;
  qraft_simnet *net = host_of(base->env)->net;
  sim_event *got = NULL;
  size_t got_n = 0, keep = 0;
  for (size_t i = 0; i < net->heap_n; i++) {
    sim_event ev = net->heap[i];
    const sim_dgram *d = ev.obj;
    if (ev.kind == EV_DGRAM && got_n < max && d->arrive_ns <= net->now_ns &&
        d->to.sin_addr.s_addr == u->addr.sin_addr.s_addr &&
        d->to.sin_port == u->addr.sin_port) {
      if (got == NULL) {
        got = malloc(net->heap_n * sizeof *got);
        if (got == NULL) {
          return -ENOMEM; /* nothing removed yet */
        }
      }
      got[got_n++] = ev;
      continue;
    }
    net->heap[keep++] = ev;
  }
  if (got_n == 0) {
    return 0;
  }
  net->heap_n = keep;
  heap_rebuild(net);
  qsort(got, got_n, sizeof *got, dgram_order);
  for (size_t i = 0; i < got_n; i++) {
    net->stats.events++;
    trace_mix(net, ((uint64_t)EV_DGRAM << 56) ^ 0x5000000000000ull ^
                       (net->now_ns << 8));
    deliver(net, got[i].obj); /* finds no socket if the callback closed it */
    free(got[i].obj);
  }
  free(got);
  return (int)got_n;
}

/* ---- wake-ups ---- */

static int sim_wake_new(qraft_env *env, qraft_env_wake_cb cb, void *ud,
                        qraft_env_wake **out) {
  sim_wake *w = calloc(1, sizeof *w);
  if (w == NULL) {
    return -ENOMEM;
  }
  w->base.env = env;
  w->cb = cb;
  w->ud = ud;
  *out = &w->base;
  return 0;
}

static void sim_wake_send(qraft_env_wake *base) {
  sim_wake *w = (sim_wake *)base;
  qraft_simnet *net = host_of(base->env)->net;
  if (w->pending) {
    return;
  }
  int rv = heap_push(net, net->now_ns, EV_WAKE, 0, w);
  QRAFT_ASSERTF(rv == 0, "simnet: out of memory for an event");
  w->pending = true;
}

static void sim_wake_free(qraft_env_wake *base) {
  sim_wake *w = (sim_wake *)base;
  w->freed = true;
  if (!w->pending) {
    free(w);
  }
}

/* ---- running ---- */

static void run_event(qraft_simnet *net, sim_event ev) {
  switch (ev.kind) {
  case EV_TIMER: {
    sim_timer *t = ev.obj;
    t->events_pending--;
    if (t->freed) {
      if (t->events_pending == 0) {
        free(t);
      }
      return;
    }
    if (ev.gen == t->gen) {
      t->gen++; /* one-shot */
      t->cb(t->ud);
    }
    return;
  }
  case EV_DGRAM:
    deliver(net, ev.obj);
    free(ev.obj);
    return;
  case EV_WAKE: {
    sim_wake *w = ev.obj;
    w->pending = false;
    if (w->freed) {
      free(w);
      return;
    }
    w->cb(w->ud);
    return;
  }
  }
  QRAFT_UNREACHABLE();
}

static sim_host *event_host(qraft_simnet *net, const sim_event *ev) {
  switch (ev->kind) {
  case EV_TIMER: {
    sim_timer *t = ev->obj; /* a freed timer's env may be gone */
    return t->freed ? NULL : host_of(t->base.env);
  }
  case EV_WAKE: {
    sim_wake *w = ev->obj;
    return w->freed ? NULL : host_of(w->base.env);
  }
  case EV_DGRAM:
    return host_by_index(net, host_index_of_addr(&((sim_dgram *)ev->obj)->to));
  }
  return NULL;
}

static int sim_run(qraft_env *env, uint64_t deadline_ns,
                   qraft_env_done_cb done_cb, void *ud) {
  qraft_simnet *net = host_of(env)->net;
  if (deadline_ns != UINT64_MAX) {
    deadline_ns = net_time(host_of(env), deadline_ns); /* the host's clock */
  }
  if (deadline_ns < net->now_ns) {
    deadline_ns = net->now_ns; /* what is due now still runs */
  }
  for (;;) {
    if (done_cb != NULL && done_cb(ud)) {
      return 0;
    }
    if (net->heap_n == 0) {
      if (deadline_ns == UINT64_MAX) {
        return QRAFT_ESTATE; /* nothing left that could make done_cb true */
      }
      net->now_ns = deadline_ns > net->now_ns ? deadline_ns : net->now_ns;
      return QRAFT_ETIMEDOUT;
    }
    if (net->heap[0].at_ns > deadline_ns) {
      net->now_ns = deadline_ns > net->now_ns ? deadline_ns : net->now_ns;
      return QRAFT_ETIMEDOUT;
    }
    sim_event ev = heap_pop(net);
    QRAFT_ASSERT(ev.at_ns >= net->now_ns);
    net->now_ns = ev.at_ns;
    sim_host *h = event_host(net, &ev);
    if (h != NULL && h->paused_until_ns > net->now_ns) {
      /* A paused process runs nothing; its events wait for it. When it
       * resumes it runs its due timers first, then reads its sockets (a
       * nanosecond later), as a libuv loop does after a stall. */
      int rv = heap_push(net,
                         h->paused_until_ns + (ev.kind == EV_TIMER ? 0 : 1),
                         ev.kind, ev.gen, ev.obj);
      QRAFT_ASSERTF(rv == 0, "simnet: out of memory for an event");
      continue;
    }
    net->stats.events++;
    trace_mix(net, ((uint64_t)ev.kind << 56) ^ (h != NULL ? h->index : 0) ^
                       (net->now_ns << 8));
    run_event(net, ev);
  }
}

static void sim_env_free(qraft_env *env) {
  sim_host *h = host_of(env);
  for (sim_udp *s = h->net->sockets; s != NULL; s = s->next) {
    QRAFT_ASSERTF(s->base.env != env, "env freed with a socket still bound");
  }
  h->net->envs_live--;
  if (h->index <= QRAFT_SIMNET_CONTROL_HOSTS_MAX) {
    h->net->hosts[h->index] = NULL;
  }
  free(h->maps);
  free(h);
}

static const qraft_env_ops sim_ops = {
    .now_ns = sim_now_ns,
    .random = sim_random,
    .timer_new = sim_timer_new,
    .timer_arm = sim_timer_arm,
    .timer_disarm = sim_timer_disarm,
    .timer_free = sim_timer_free,
    .udp_bind = sim_udp_bind,
    .udp_local_addr = sim_udp_local_addr,
    .udp_send = sim_udp_send,
    .udp_close = sim_udp_close,
    .udp_poll = sim_udp_poll,
    .wake_new = sim_wake_new,
    .wake_send = sim_wake_send,
    .wake_free = sim_wake_free,
    .run = sim_run,
    .free = sim_env_free,
};

int qraft_simnet_new(uint64_t seed, qraft_simnet **out) {
  qraft_simnet *net = calloc(1, sizeof *net);
  if (net == NULL) {
    return -ENOMEM;
  }
  qraft_prng_init(&net->prng, seed);
  net->now_ns = SIM_T0_NS;
  net->stats.trace_hash = 0xcbf29ce484222325ULL;
  net->faults.delay_min_ns = 50000;
  net->faults.delay_max_ns = 50000;
  *out = net;
  return 0;
}

void qraft_simnet_set_faults(qraft_simnet *net, const qraft_simnet_faults *f) {
  QRAFT_ASSERT(f->delay_min_ns <= f->delay_max_ns);
  net->faults = *f;
}

int qraft_simnet_env_new(qraft_simnet *net, qraft_env **out) {
  sim_host *h = calloc(1, sizeof *h);
  if (h == NULL) {
    return -ENOMEM;
  }
  h->base.ops = &sim_ops;
  h->net = net;
  h->index = ++net->hosts_n;
  QRAFT_ASSERTF(h->index < (1u << 16), "simnet: too many hosts");
  h->next_port = 40000;
  h->next_eport = 20000;
  if (h->index <= QRAFT_SIMNET_CONTROL_HOSTS_MAX) {
    net->hosts[h->index] = h;
  }
  net->envs_live++;
  *out = &h->base;
  return 0;
}

void qraft_simnet_stats_get(const qraft_simnet *net, qraft_simnet_stats *out) {
  *out = net->stats;
}

void qraft_simnet_free(qraft_simnet *net) {
  if (net == NULL) {
    return;
  }
  QRAFT_ASSERTF(net->envs_live == 0, "simnet freed with %u envs live",
                net->envs_live);
  /* Events still queued: datagrams are ours; timers and wakes were freed
   * by their owners and wait for their last event. */
  while (net->heap_n > 0) {
    sim_event ev = heap_pop(net);
    if (ev.kind == EV_DGRAM) {
      free(ev.obj);
    } else if (ev.kind == EV_TIMER) {
      sim_timer *t = ev.obj;
      if (--t->events_pending == 0 && t->freed) {
        free(t);
      }
    } else {
      sim_wake *w = ev.obj;
      w->pending = false;
      if (w->freed) {
        free(w);
      }
    }
  }
  free(net->heap);
  free(net);
}

/* ---- controls ---- */

static sim_host *control_host(qraft_env *env) {
  sim_host *h = host_of(env);
  QRAFT_ASSERTF(h->base.ops == &sim_ops, "not a simnet env");
  QRAFT_ASSERTF(h->index <= QRAFT_SIMNET_CONTROL_HOSTS_MAX,
                "simnet: host %u is beyond the controllable hosts", h->index);
  return h;
}

void qraft_simnet_link_block(qraft_env *from, qraft_env *to, bool blocked) {
  sim_host *a = control_host(from), *b = control_host(to);
  if (blocked) {
    a->blocked_to |= 1ull << b->index;
  } else {
    a->blocked_to &= ~(1ull << b->index);
  }
  trace_mix(a->net, 0xb10c0000ull ^ ((uint64_t)a->index << 8) ^ b->index ^
                        ((uint64_t)blocked << 40));
}

void qraft_simnet_link_clog(qraft_env *from, qraft_env *to,
                            uint64_t until_ns) {
  sim_host *a = control_host(from), *b = control_host(to);
  a->clog_until_ns[b->index] = until_ns;
  trace_mix(a->net, 0xc1060000ull ^ ((uint64_t)a->index << 8) ^ b->index);
}

void qraft_simnet_heal(qraft_simnet *net) {
  for (uint32_t i = 1; i <= QRAFT_SIMNET_CONTROL_HOSTS_MAX; i++) {
    if (net->hosts[i] != NULL) {
      net->hosts[i]->blocked_to = 0;
      memset(net->hosts[i]->clog_until_ns, 0,
             sizeof net->hosts[i]->clog_until_ns);
    }
  }
  trace_mix(net, 0x4ea1);
}

void qraft_simnet_host_set_down(qraft_env *env, bool down) {
  sim_host *h = control_host(env);
  h->down = down;
  trace_mix(h->net, 0xd0e70000ull ^ h->index ^ ((uint64_t)down << 40));
}

void qraft_simnet_host_pause(qraft_env *env, uint64_t until_ns) {
  sim_host *h = control_host(env);
  h->paused_until_ns = until_ns;
  trace_mix(h->net, 0x9a05e000ull ^ h->index);
}

void qraft_simnet_host_set_clock(qraft_env *env, int64_t offset_ns,
                                 int32_t rate_ppm) {
  sim_host *h = control_host(env);
  QRAFT_ASSERTF(rate_ppm > -500000 && rate_ppm < 500000,
                "simnet: clock rate %d ppm out of range", rate_ppm);
  uint64_t before = host_time(h, h->net->now_ns);
  h->clock_offset_ns = offset_ns;
  h->clock_rate_ppm = rate_ppm;
  /* Never let a host's clock go back: lift the offset if needed. */
  uint64_t after = host_time(h, h->net->now_ns);
  if (after < before) {
    h->clock_offset_ns += (int64_t)(before - after);
  }
}

uint64_t qraft_simnet_now_ns(const qraft_simnet *net) { return net->now_ns; }

uint64_t qraft_simnet_random(qraft_simnet *net) {
  return qraft_prng_next(&net->prng);
}

void qraft_simnet_set_tap(qraft_simnet *net, qraft_simnet_tap_cb cb,
                          void *ud) {
  net->tap = cb;
  net->tap_ud = ud;
}

void qraft_simnet_host_set_nat(qraft_env *env, qraft_simnet_nat nat,
                               uint64_t timeout_ns) {
  sim_host *h = control_host(env);
  h->nat = nat;
  h->nat_timeout_ns = timeout_ns;
  h->maps_n = 0;
}

void qraft_simnet_nat_flush(qraft_env *env) { control_host(env)->maps_n = 0; }

const char *qraft_simnet_nat_name(qraft_simnet_nat nat) {
  switch (nat) {
  case QRAFT_SIMNET_NAT_NONE:
    return "none";
  case QRAFT_SIMNET_NAT_FULL_CONE:
    return "full-cone";
  case QRAFT_SIMNET_NAT_RESTRICTED:
    return "restricted";
  case QRAFT_SIMNET_NAT_SYMMETRIC:
    return "symmetric";
  }
  return "?";
}
