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
};

struct sim_host {
  qraft_env base;
  qraft_simnet *net;
  uint32_t index;
  uint16_t next_port;
};

static sim_host *host_of(qraft_env *env) { return (sim_host *)env; }

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

static sim_event heap_pop(qraft_simnet *net) {
  QRAFT_ASSERT(net->heap_n > 0);
  sim_event top = net->heap[0];
  sim_event last = net->heap[--net->heap_n];
  size_t i = 0;
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, m = i;
    const sim_event *best = &last;
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
  if (net->heap_n > 0) {
    net->heap[i] = last;
  }
  return top;
}

/* ---- clock and randomness ---- */

static uint64_t sim_now_ns(qraft_env *env) { return host_of(env)->net->now_ns; }

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
  int rv = heap_push(net, deadline_ns, EV_TIMER, t->gen, t);
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
  uint64_t send_seq = ++net->send_seq;
  const qraft_simnet_faults *f = &net->faults;
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
    d->from = u->addr;
    memcpy(&d->to, to, sizeof d->to);
    d->send_seq = send_seq;
    d->len = len;
    memcpy(d->data, data, len);
    uint64_t delay = f->delay_min_ns;
    if (f->delay_max_ns > f->delay_min_ns) {
      delay = qraft_prng_between(&net->prng, f->delay_min_ns, f->delay_max_ns);
    }
    if (heap_push(net, net->now_ns + delay, EV_DGRAM, 0, d) != 0) {
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
  u->cb(u->ud, (const struct sockaddr *)&d->from, d->data, d->len);
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

static int sim_run(qraft_env *env, uint64_t deadline_ns,
                   qraft_env_done_cb done_cb, void *ud) {
  qraft_simnet *net = host_of(env)->net;
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
    net->stats.events++;
    run_event(net, ev);
  }
}

static void sim_env_free(qraft_env *env) {
  sim_host *h = host_of(env);
  for (sim_udp *s = h->net->sockets; s != NULL; s = s->next) {
    QRAFT_ASSERTF(s->base.env != env, "env freed with a socket still bound");
  }
  h->net->envs_live--;
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
  net->now_ns = 1000000000ull;
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
