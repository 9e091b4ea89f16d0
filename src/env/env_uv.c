/*
 * env_uv.c: the real env, on a libuv loop of its own.
 *
 * Timers armed for "now" go on a due list that a prepare handle runs right
 * before the loop polls; one armed for "now" by such a timer's callback
 * runs at the next turn, after that poll (work done in steps, a timer
 * re-armed after each step, lets the loop read its sockets between
 * steps). And datagrams are batched per socket and handed to
 * the kernel with one sendmmsg before the poll (or when a batch is full), so
 * a burst of work costs one system call, not one per packet. This file is
 * the only one in qraft that calls libuv.
 */
#include <qraft/assert.h>
#include <qraft/env.h>
#include <qraft/error.h>

#include <errno.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <uv.h>

#define UV_BATCH_MAX 64
/* qraft_env_udp_poll reads into slots of its own buffer (not libuv's, which
 * may be in use if a receive callback polls). */
#define UV_POLL_SLOT_BYTES 2048
#define UV_POLL_SLOTS 64
/* libuv's recvmmsg takes one datagram per 64 KiB of buffer. */
#define UV_RECV_BUF_BYTES (16 * 64 * 1024)

typedef struct env_uv env_uv;

typedef struct uv_timer_obj {
  qraft_env_timer base;
  uv_timer_t h;
  qraft_env_timer_cb cb;
  void *ud;
  uint64_t deadline_ns;
  bool armed;
  bool on_due_list;
  struct uv_timer_obj *due_next;
} uv_timer_obj;

typedef struct uv_udp_obj {
  qraft_env_udp base;
  uv_udp_t h;
  qraft_env_recv_cb cb;
  void *ud;
  int fd;
  bool closing;
  bool on_flush_list;
  struct uv_udp_obj *flush_next;
  unsigned batch_n;
  struct mmsghdr msgs[UV_BATCH_MAX];
  struct iovec iov[UV_BATCH_MAX];
  struct sockaddr_storage to[UV_BATCH_MAX];
  uint8_t bufs[UV_BATCH_MAX][QRAFT_ENV_DGRAM_MAX];
  uint8_t *recv_buf; /* UV_RECV_BUF_BYTES */
  uint8_t *poll_buf; /* UV_POLL_SLOTS * UV_POLL_SLOT_BYTES, on first poll */
} uv_udp_obj;

typedef struct uv_wake_obj {
  qraft_env_wake base;
  uv_async_t h;
  qraft_env_wake_cb cb;
  void *ud;
} uv_wake_obj;

struct env_uv {
  qraft_env base;
  uv_loop_t loop;
  uv_prepare_t prepare;
  uv_idle_t idle; /* active while timers are due: the poll must not wait */
  uv_timer_t deadline;
  uv_timer_obj *due_head;
  uv_timer_obj *due_firing; /* the due timers prepare_cb is running */
  uv_udp_obj *flush_head;
};

static env_uv *env_of(qraft_env *env) { return (env_uv *)env; }

static uint64_t uv_env_now_ns(qraft_env *env) {
  (void)env;
  return uv_hrtime();
}

static void uv_env_random(qraft_env *env, void *out, size_t len) {
  (void)env;
  uint8_t *p = out;
  while (len > 0) {
    ssize_t n = getrandom(p, len, 0);
    if (n < 0) {
      QRAFT_ASSERTF(errno == EINTR, "getrandom: %s", strerror(errno));
      continue;
    }
    p += n;
    len -= (size_t)n;
  }
}

/* ---- timers ---- */

static void timer_fire(uv_timer_obj *t) {
  t->armed = false;
  t->cb(t->ud);
}

static void timer_uv_cb(uv_timer_t *h) {
  uv_timer_obj *t = h->data;
  /* uv timers count whole milliseconds from a cached loop time: they may
   * fire a little early. Never call back before the deadline. */
  uint64_t now = uv_hrtime();
  if (now < t->deadline_ns) {
    uint64_t ms = (t->deadline_ns - now + 999999) / 1000000;
    uv_timer_start(&t->h, timer_uv_cb, ms, 0);
    return;
  }
  timer_fire(t);
}

static int uv_env_timer_new(qraft_env *env, qraft_env_timer_cb cb, void *ud,
                            qraft_env_timer **out) {
  uv_timer_obj *t = calloc(1, sizeof *t);
  if (t == NULL) {
    return -ENOMEM;
  }
  t->base.env = env;
  t->cb = cb;
  t->ud = ud;
  uv_timer_init(&env_of(env)->loop, &t->h);
  t->h.data = t;
  *out = &t->base;
  return 0;
}

static bool due_unlink(uv_timer_obj **head, uv_timer_obj *t) {
  for (uv_timer_obj **pp = head; *pp != NULL; pp = &(*pp)->due_next) {
    if (*pp == t) {
      *pp = t->due_next;
      return true;
    }
  }
  return false;
}

static void due_remove(env_uv *e, uv_timer_obj *t) {
  if (!t->on_due_list) {
    return;
  }
  if (!due_unlink(&e->due_head, t)) {
    (void)due_unlink(&e->due_firing, t);
  }
  t->on_due_list = false;
  t->due_next = NULL;
}

static void uv_env_timer_disarm(qraft_env_timer *base) {
  uv_timer_obj *t = (uv_timer_obj *)base;
  due_remove(env_of(base->env), t);
  uv_timer_stop(&t->h);
  t->armed = false;
}

static void uv_env_timer_arm(qraft_env_timer *base, uint64_t deadline_ns) {
  uv_timer_obj *t = (uv_timer_obj *)base;
  env_uv *e = env_of(base->env);
  uint64_t now = uv_hrtime();
  uv_env_timer_disarm(base);
  t->armed = true;
  t->deadline_ns = deadline_ns;
  if (deadline_ns <= now) {
    t->on_due_list = true;
    t->due_next = e->due_head;
    e->due_head = t;
    return;
  }
  uv_timer_start(&t->h, timer_uv_cb, (deadline_ns - now + 999999) / 1000000,
                 0);
}

static void close_free_cb(uv_handle_t *h) { free(h->data); }

static void udp_close_free_cb(uv_handle_t *h) {
  uv_udp_obj *u = h->data;
  free(u->recv_buf);
  free(u->poll_buf);
  free(u);
}

static void uv_env_timer_free(qraft_env_timer *base) {
  uv_timer_obj *t = (uv_timer_obj *)base;
  uv_env_timer_disarm(base);
  uv_close((uv_handle_t *)&t->h, close_free_cb);
}

/* ---- UDP ---- */

static void udp_flush(uv_udp_obj *u) {
  unsigned done = 0;
  while (done < u->batch_n) {
    int n = sendmmsg(u->fd, u->msgs + done, u->batch_n - done, 0);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      /* EAGAIN (socket buffer full) or an ICMP error reported on this
       * socket: drop the first datagram, as the network would, and go on. */
      done++;
      continue;
    }
    done += (unsigned)n;
  }
  u->batch_n = 0;
}

static void flush_all(env_uv *e) {
  while (e->flush_head != NULL) {
    uv_udp_obj *u = e->flush_head;
    e->flush_head = u->flush_next;
    u->on_flush_list = false;
    u->flush_next = NULL;
    udp_flush(u);
  }
}

static void idle_cb(uv_idle_t *h) { (void)h; }

static void prepare_cb(uv_prepare_t *h) {
  env_uv *e = h->data;
  /* The timers due as of now; those their callbacks arm for "now" wait for
   * the next turn, and the poll between does not wait. */
  e->due_firing = e->due_head;
  e->due_head = NULL;
  while (e->due_firing != NULL) {
    uv_timer_obj *t = e->due_firing;
    e->due_firing = t->due_next;
    t->on_due_list = false;
    t->due_next = NULL;
    timer_fire(t);
  }
  if (e->due_head != NULL) {
    uv_idle_start(&e->idle, idle_cb);
  } else {
    uv_idle_stop(&e->idle);
  }
  flush_all(e);
}

static void udp_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  uv_udp_obj *u = h->data;
  buf->base = (char *)u->recv_buf;
  buf->len = UV_RECV_BUF_BYTES;
}

static void udp_recv_cb(uv_udp_t *h, ssize_t nread, const uv_buf_t *buf,
                        const struct sockaddr *addr, unsigned flags) {
  (void)buf;
  (void)flags;
  uv_udp_obj *u = h->data;
  if (nread <= 0 || addr == NULL) {
    return; /* nothing more, a recvmmsg buffer release, or an error */
  }
  u->cb(u->ud, addr, (const uint8_t *)buf->base, (size_t)nread);
}

static int uv_env_udp_bind(qraft_env *env, const struct sockaddr *addr,
                           qraft_env_recv_cb cb, void *ud,
                           qraft_env_udp **out) {
  env_uv *e = env_of(env);
  if (addr->sa_family != AF_INET && addr->sa_family != AF_INET6) {
    return -EAFNOSUPPORT;
  }
  uv_udp_obj *u = calloc(1, sizeof *u);
  if (u == NULL) {
    return -ENOMEM;
  }
  u->base.env = env;
  u->cb = cb;
  u->ud = ud;
  u->recv_buf = malloc(UV_RECV_BUF_BYTES);
  if (u->recv_buf == NULL) {
    free(u);
    return -ENOMEM;
  }
  int rv = uv_udp_init_ex(&e->loop, &u->h, addr->sa_family | UV_UDP_RECVMMSG);
  if (rv != 0) {
    free(u->recv_buf);
    free(u);
    return rv;
  }
  u->h.data = u;
  rv = uv_udp_bind(&u->h, addr,
                   addr->sa_family == AF_INET6 ? UV_UDP_IPV6ONLY : 0);
  if (rv == 0) {
    uv_os_fd_t fd;
    rv = uv_fileno((uv_handle_t *)&u->h, &fd);
    u->fd = fd;
  }
  if (rv == 0) {
    int sz = 4 * 1024 * 1024;
    uv_recv_buffer_size((uv_handle_t *)&u->h, &sz);
    sz = 4 * 1024 * 1024;
    uv_send_buffer_size((uv_handle_t *)&u->h, &sz);
    rv = uv_udp_recv_start(&u->h, udp_alloc_cb, udp_recv_cb);
  }
  if (rv != 0) {
    uv_close((uv_handle_t *)&u->h, udp_close_free_cb);
    return rv;
  }
  *out = &u->base;
  return 0;
}

static int uv_env_udp_local_addr(qraft_env_udp *base,
                                 struct sockaddr_storage *out) {
  uv_udp_obj *u = (uv_udp_obj *)base;
  int len = sizeof *out;
  return uv_udp_getsockname(&u->h, (struct sockaddr *)out, &len);
}

static int uv_env_udp_send(qraft_env_udp *base, const struct sockaddr *to,
                           const void *data, size_t len) {
  uv_udp_obj *u = (uv_udp_obj *)base;
  env_uv *e = env_of(base->env);
  if (len > QRAFT_ENV_DGRAM_MAX) {
    return -EMSGSIZE;
  }
  socklen_t tolen;
  if (to->sa_family == AF_INET) {
    tolen = sizeof(struct sockaddr_in);
  } else if (to->sa_family == AF_INET6) {
    tolen = sizeof(struct sockaddr_in6);
  } else {
    return -EAFNOSUPPORT;
  }
  if (u->batch_n == UV_BATCH_MAX) {
    udp_flush(u);
  }
  unsigned i = u->batch_n++;
  memcpy(u->bufs[i], data, len);
  memcpy(&u->to[i], to, tolen);
  u->iov[i].iov_base = u->bufs[i];
  u->iov[i].iov_len = len;
  memset(&u->msgs[i], 0, sizeof u->msgs[i]);
  u->msgs[i].msg_hdr.msg_name = &u->to[i];
  u->msgs[i].msg_hdr.msg_namelen = tolen;
  u->msgs[i].msg_hdr.msg_iov = &u->iov[i];
  u->msgs[i].msg_hdr.msg_iovlen = 1;
  if (!u->on_flush_list) {
    u->on_flush_list = true;
    u->flush_next = e->flush_head;
    e->flush_head = u;
  }
  return 0;
}

/* Reads what waits in the socket with recvmmsg, without blocking, into
 * slots of the poll buffer. A datagram longer than a slot (no peer of
 * ours sends one: QRAFT_ENV_DGRAM_MAX) is truncated by the kernel and
 * dropped here. */

static int uv_env_udp_poll(qraft_env_udp *base, uint32_t max) {
  uv_udp_obj *u = (uv_udp_obj *)base;
  struct mmsghdr msgs[UV_POLL_SLOTS];
  struct iovec iov[UV_POLL_SLOTS];
  struct sockaddr_storage from[UV_POLL_SLOTS];
  uint32_t done = 0;
  if (u->poll_buf == NULL) {
    u->poll_buf = malloc((size_t)UV_POLL_SLOTS * UV_POLL_SLOT_BYTES);
    if (u->poll_buf == NULL) {
      return -ENOMEM;
    }
  }
  while (done < max && !u->closing) {
    unsigned want = max - done < UV_POLL_SLOTS ? max - done : UV_POLL_SLOTS;
    for (unsigned i = 0; i < want; i++) {
      iov[i].iov_base = u->poll_buf + (size_t)i * UV_POLL_SLOT_BYTES;
      iov[i].iov_len = UV_POLL_SLOT_BYTES;
      memset(&msgs[i], 0, sizeof msgs[i]);
      msgs[i].msg_hdr.msg_name = &from[i];
      msgs[i].msg_hdr.msg_namelen = sizeof from[i];
      msgs[i].msg_hdr.msg_iov = &iov[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
    }
    int n = recvmmsg(u->fd, msgs, want, MSG_DONTWAIT, NULL);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        break;
      }
      return done > 0 ? (int)done : -errno;
    }
    if (n == 0) {
      break;
    }
    for (int i = 0; i < n && !u->closing; i++) {
      done++;
      if ((msgs[i].msg_hdr.msg_flags & MSG_TRUNC) != 0) {
        continue;
      }
      u->cb(u->ud, (const struct sockaddr *)&from[i],
            (const uint8_t *)iov[i].iov_base, msgs[i].msg_len);
    }
    if ((unsigned)n < want) {
      break;
    }
  }
  return (int)done;
}

static void uv_env_udp_close(qraft_env_udp *base) {
  uv_udp_obj *u = (uv_udp_obj *)base;
  env_uv *e = env_of(base->env);
  u->closing = true;
  udp_flush(u);
  if (u->on_flush_list) {
    for (uv_udp_obj **pp = &e->flush_head; *pp != NULL;
         pp = &(*pp)->flush_next) {
      if (*pp == u) {
        *pp = u->flush_next;
        break;
      }
    }
  }
  uv_udp_recv_stop(&u->h);
  uv_close((uv_handle_t *)&u->h, udp_close_free_cb);
}

/* ---- wake-ups ---- */

static void async_cb(uv_async_t *h) {
  uv_wake_obj *w = h->data;
  w->cb(w->ud);
}

static int uv_env_wake_new(qraft_env *env, qraft_env_wake_cb cb, void *ud,
                           qraft_env_wake **out) {
  uv_wake_obj *w = calloc(1, sizeof *w);
  if (w == NULL) {
    return -ENOMEM;
  }
  w->base.env = env;
  w->cb = cb;
  w->ud = ud;
  int rv = uv_async_init(&env_of(env)->loop, &w->h, async_cb);
  if (rv != 0) {
    free(w);
    return rv;
  }
  w->h.data = w;
  *out = &w->base;
  return 0;
}

static void uv_env_wake_send(qraft_env_wake *base) {
  uv_async_send(&((uv_wake_obj *)base)->h);
}

static void uv_env_wake_free(qraft_env_wake *base) {
  uv_close((uv_handle_t *)&((uv_wake_obj *)base)->h, close_free_cb);
}

/* ---- descriptors ---- */

typedef struct uv_fd_obj {
  qraft_env_fd base;
  uv_poll_t h;
  qraft_env_fd_cb cb;
  void *ud;
} uv_fd_obj;

static void fd_poll_cb(uv_poll_t *h, int status, int events) {
  uv_fd_obj *w = h->data;
  (void)events;
  if (status < 0) {
    /* libuv stopped the watch: start it again, and let the reader see
     * the error on the descriptor */
    int rv = uv_poll_start(&w->h, UV_READABLE, fd_poll_cb);
    QRAFT_ASSERTF(rv == 0, "watching a descriptor again: %s", uv_strerror(rv));
  }
  w->cb(w->ud);
}

static int uv_env_fd_watch(qraft_env *env, int fd, qraft_env_fd_cb cb,
                           void *ud, qraft_env_fd **out) {
  uv_fd_obj *w = calloc(1, sizeof *w);
  if (w == NULL) {
    return -ENOMEM;
  }
  w->base.env = env;
  w->cb = cb;
  w->ud = ud;
  int rv = uv_poll_init(&env_of(env)->loop, &w->h, fd);
  if (rv != 0) {
    free(w);
    return rv;
  }
  w->h.data = w;
  rv = uv_poll_start(&w->h, UV_READABLE, fd_poll_cb);
  if (rv != 0) {
    uv_close((uv_handle_t *)&w->h, close_free_cb);
    return rv;
  }
  *out = &w->base;
  return 0;
}

static void uv_env_fd_unwatch(qraft_env_fd *base) {
  uv_fd_obj *w = (uv_fd_obj *)base;
  uv_poll_stop(&w->h);
  uv_close((uv_handle_t *)&w->h, close_free_cb);
}

/* ---- running ---- */

static void deadline_cb(uv_timer_t *h) { (void)h; }

static int uv_env_run(qraft_env *env, uint64_t deadline_ns,
                      qraft_env_done_cb done_cb, void *ud) {
  env_uv *e = env_of(env);
  int rv = 0;
  for (;;) {
    /* Timers due now and queued datagrams, even if nothing else is alive. */
    prepare_cb(&e->prepare);
    if (done_cb != NULL && done_cb(ud)) {
      break;
    }
    uint64_t now = uv_hrtime();
    if (now >= deadline_ns) {
      /* One last turn that does not wait: what is ready runs. */
      uv_run(&e->loop, UV_RUN_NOWAIT);
      prepare_cb(&e->prepare);
      rv = done_cb != NULL && done_cb(ud) ? 0 : QRAFT_ETIMEDOUT;
      break;
    }
    if (deadline_ns != UINT64_MAX) {
      uv_timer_start(&e->deadline, deadline_cb,
                     (deadline_ns - now + 999999) / 1000000, 0);
      uv_ref((uv_handle_t *)&e->deadline);
    }
    if (uv_run(&e->loop, UV_RUN_ONCE) == 0 && e->due_head == NULL &&
        deadline_ns == UINT64_MAX && !(done_cb != NULL && done_cb(ud))) {
      rv = QRAFT_ESTATE; /* nothing left that could make done_cb true */
      break;
    }
  }
  uv_timer_stop(&e->deadline);
  uv_unref((uv_handle_t *)&e->deadline);
  prepare_cb(&e->prepare);
  return rv;
}

static void uv_env_free(qraft_env *env) {
  env_uv *e = env_of(env);
  uv_close((uv_handle_t *)&e->prepare, NULL);
  uv_close((uv_handle_t *)&e->idle, NULL);
  uv_close((uv_handle_t *)&e->deadline, NULL);
  /* Let the close callbacks of every handle run. */
  uv_run(&e->loop, UV_RUN_DEFAULT);
  int rv = uv_loop_close(&e->loop);
  QRAFT_ASSERTF(rv == 0, "env freed with live handles: %s", uv_strerror(rv));
  free(e);
}

static uint32_t uv_env_interfaces(qraft_env *env, qraft_env_ifaddr *out,
                                  uint32_t cap) {
  (void)env;
  struct ifaddrs *all = NULL;
  if (getifaddrs(&all) != 0) {
    return 0;
  }
  uint32_t n = 0;
  for (struct ifaddrs *i = all; i != NULL && n < cap; i = i->ifa_next) {
    if (i->ifa_addr == NULL || (i->ifa_flags & IFF_UP) == 0) {
      continue;
    }
    int fam = i->ifa_addr->sa_family;
    if (fam == AF_INET6) {
      const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)i->ifa_addr;
      if (IN6_IS_ADDR_LINKLOCAL(&s6->sin6_addr)) {
        continue; /* needs a scope: not a candidate */
      }
    } else if (fam != AF_INET) {
      continue;
    }
    qraft_env_ifaddr *o = &out[n++];
    memset(o, 0, sizeof *o);
    snprintf(o->name, sizeof o->name, "%s", i->ifa_name);
    memcpy(&o->addr, i->ifa_addr,
           fam == AF_INET6 ? sizeof(struct sockaddr_in6)
                           : sizeof(struct sockaddr_in));
    o->loopback = (i->ifa_flags & IFF_LOOPBACK) != 0;
  }
  freeifaddrs(all);
  return n;
}

static const qraft_env_ops uv_ops = {
    .now_ns = uv_env_now_ns,
    .random = uv_env_random,
    .timer_new = uv_env_timer_new,
    .timer_arm = uv_env_timer_arm,
    .timer_disarm = uv_env_timer_disarm,
    .timer_free = uv_env_timer_free,
    .udp_bind = uv_env_udp_bind,
    .udp_local_addr = uv_env_udp_local_addr,
    .udp_send = uv_env_udp_send,
    .udp_close = uv_env_udp_close,
    .udp_poll = uv_env_udp_poll,
    .wake_new = uv_env_wake_new,
    .wake_send = uv_env_wake_send,
    .wake_free = uv_env_wake_free,
    .run = uv_env_run,
    .free = uv_env_free,
    .fd_watch = uv_env_fd_watch,
    .fd_unwatch = uv_env_fd_unwatch,
    .interfaces = uv_env_interfaces,
};

int qraft_env_uv_new(qraft_env **out) {
  env_uv *e = calloc(1, sizeof *e);
  if (e == NULL) {
    return -ENOMEM;
  }
  e->base.ops = &uv_ops;
  int rv = uv_loop_init(&e->loop);
  if (rv != 0) {
    free(e);
    return rv;
  }
  uv_prepare_init(&e->loop, &e->prepare);
  e->prepare.data = e;
  uv_prepare_start(&e->prepare, prepare_cb);
  uv_unref((uv_handle_t *)&e->prepare);
  uv_idle_init(&e->loop, &e->idle);
  uv_unref((uv_handle_t *)&e->idle);
  uv_timer_init(&e->loop, &e->deadline);
  uv_unref((uv_handle_t *)&e->deadline);
  *out = &e->base;
  return 0;
}
