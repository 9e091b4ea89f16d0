/*
 * nfdelay: delays the packets that an iptables NFQUEUE rule hands it, the
 * way tc netem's "delay D J" does, for kernels built without sch_netem.
 *
 *   nfdelay --queue N --delay-ms D [--jitter-ms J] [--seed S] [--seconds T]
 *
 * Each packet is held for a time drawn uniformly from [D - J, D + J] ms and
 * then accepted; with jitter, packets may leave out of order, as they do on
 * a real path with netem's jitter. Runs inside the network namespace of the
 * rule (ip netns exec NS nfdelay ...). On SIGTERM or SIGINT, or after T
 * seconds, every packet still held is accepted and the queue is unbound, so
 * nothing is lost by stopping it; rules should use --queue-bypass so that
 * packets pass when nfdelay is not running.
 *
 * A test tool of the end-to-end tests (tests/e2e/kv/partition.sh), not part
 * of the library.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <libnetfilter_queue/libnetfilter_queue.h>
#ifndef NF_ACCEPT
#define NF_ACCEPT 1 /* linux/netfilter.h, which clashes with netinet/in.h */
#endif

typedef struct held {
  uint64_t release_ns;
  uint32_t id;
} held;

/* A binary min-heap of held packets by release time. */
typedef struct heap {
  held *v;
  size_t n, cap;
} heap;

static bool heap_push(heap *h, held x) {
  if (h->n == h->cap) {
    size_t cap = h->cap ? h->cap * 2 : 1024;
    held *v = realloc(h->v, cap * sizeof *v);
    if (v == NULL) {
      return false;
    }
    h->v = v;
    h->cap = cap;
  }
  size_t i = h->n++;
  while (i > 0 && h->v[(i - 1) / 2].release_ns > x.release_ns) {
    h->v[i] = h->v[(i - 1) / 2];
    i = (i - 1) / 2;
  }
  h->v[i] = x;
  return true;
}

static held heap_pop(heap *h) {
  held top = h->v[0];
  held last = h->v[--h->n];
  size_t i = 0;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= h->n) {
      break;
    }
    if (c + 1 < h->n && h->v[c + 1].release_ns < h->v[c].release_ns) {
      c++;
    }
    if (h->v[c].release_ns >= last.release_ns) {
      break;
    }
    h->v[i] = h->v[c];
    i = c;
  }
  if (h->n > 0) {
    h->v[i] = last;
  }
  return top;
}

typedef struct state {
  heap held;
  uint64_t delay_ns, jitter_ns;
  uint64_t rng;
  uint64_t packets, dropped_full;
  struct nfq_q_handle *qh;
} state;

static volatile sig_atomic_t stop;

static void on_signal(int sig) {
  (void)sig;
  stop = 1;
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t next_rand(uint64_t *s) { /* splitmix64 */
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static int on_packet(struct nfq_q_handle *qh, struct nfgenmsg *msg,
                     struct nfq_data *nfa, void *ud) {
  (void)msg;
  state *st = ud;
  struct nfqnl_msg_packet_hdr *ph = nfq_get_msg_packet_hdr(nfa);
  if (ph == NULL) {
    return 0;
  }
  uint32_t id = ntohl(ph->packet_id);
  uint64_t d = st->delay_ns - st->jitter_ns;
  if (st->jitter_ns > 0) {
    d += next_rand(&st->rng) % (2 * st->jitter_ns + 1);
  }
  st->packets++;
  if (!heap_push(&st->held, (held){now_ns() + d, id})) {
    st->dropped_full++;
    nfq_set_verdict(qh, id, NF_ACCEPT, 0, NULL); /* out of memory: no delay */
  }
  return 0;
}

static void release_due(state *st, uint64_t now) {
  while (st->held.n > 0 && st->held.v[0].release_ns <= now) {
    held h = heap_pop(&st->held);
    nfq_set_verdict(st->qh, h.id, NF_ACCEPT, 0, NULL);
  }
}

static void usage(void) {
  fprintf(stderr, "usage: nfdelay --queue N --delay-ms D [--jitter-ms J] "
                  "[--seed S] [--seconds T]\n");
  exit(2);
}

int main(int argc, char **argv) {
  long queue = -1;
  double delay_ms = -1, jitter_ms = 0, seconds = 0;
  uint64_t seed = 1;
  for (int i = 1; i < argc; i++) {
    if (i + 1 >= argc) {
      usage();
    }
    const char *v = argv[++i];
    if (strcmp(argv[i - 1], "--queue") == 0) {
      queue = strtol(v, NULL, 10);
    } else if (strcmp(argv[i - 1], "--delay-ms") == 0) {
      delay_ms = strtod(v, NULL);
    } else if (strcmp(argv[i - 1], "--jitter-ms") == 0) {
      jitter_ms = strtod(v, NULL);
    } else if (strcmp(argv[i - 1], "--seed") == 0) {
      seed = strtoull(v, NULL, 10);
    } else if (strcmp(argv[i - 1], "--seconds") == 0) {
      seconds = strtod(v, NULL);
    } else {
      usage();
    }
  }
  if (queue < 0 || queue > 65535 || delay_ms < 0 || jitter_ms < 0 ||
      jitter_ms > delay_ms) {
    usage();
  }
  state st = {.delay_ns = (uint64_t)(delay_ms * 1e6),
              .jitter_ns = (uint64_t)(jitter_ms * 1e6),
              .rng = seed};
  struct nfq_handle *h = nfq_open();
  if (h == NULL) {
    fprintf(stderr, "nfdelay: nfq_open: %s\n", strerror(errno));
    return 1;
  }
  if (nfq_bind_pf(h, AF_INET) < 0) {
    fprintf(stderr, "nfdelay: nfq_bind_pf: %s\n", strerror(errno));
    nfq_close(h);
    return 1;
  }
  st.qh = nfq_create_queue(h, (uint16_t)queue, on_packet, &st);
  if (st.qh == NULL) {
    fprintf(stderr, "nfdelay: queue %ld: %s\n", queue, strerror(errno));
    nfq_close(h);
    return 1;
  }
  /* The verdict needs only the packet id: no payload is copied. */
  if (nfq_set_mode(st.qh, NFQNL_COPY_META, 0) < 0 ||
      nfq_set_queue_maxlen(st.qh, 1 << 16) < 0) {
    fprintf(stderr, "nfdelay: queue setup: %s\n", strerror(errno));
    nfq_destroy_queue(st.qh);
    nfq_close(h);
    return 1;
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  int fd = nfq_fd(h);
  uint64_t end = seconds > 0 ? now_ns() + (uint64_t)(seconds * 1e9) : 0;
  static char buf[65536];
  while (!stop) {
    uint64_t now = now_ns();
    if (end != 0 && now >= end) {
      break;
    }
    release_due(&st, now);
    int timeout = 100;
    if (st.held.n > 0) {
      uint64_t wait = st.held.v[0].release_ns > now
                          ? st.held.v[0].release_ns - now
                          : 0;
      uint64_t ms = (wait + 999999) / 1000000;
      timeout = ms < 100 ? (int)ms : 100;
    }
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int rv = poll(&p, 1, timeout);
    if (rv < 0 && errno != EINTR) {
      fprintf(stderr, "nfdelay: poll: %s\n", strerror(errno));
      break;
    }
    if (rv > 0) {
      ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
      if (n > 0) {
        nfq_handle_packet(h, buf, (int)n);
      } else if (n < 0 && errno == ENOBUFS) {
        /* The kernel's socket buffer overflowed: those packets were
         * dropped, which a real network does too. */
      }
    }
  }
  while (st.held.n > 0) { /* nothing held is lost by stopping */
    held x = heap_pop(&st.held);
    nfq_set_verdict(st.qh, x.id, NF_ACCEPT, 0, NULL);
  }
  fprintf(stderr, "nfdelay: queue %ld: %" PRIu64 " packets delayed\n", queue,
          st.packets);
  nfq_destroy_queue(st.qh);
  nfq_close(h);
  free(st.held.v);
  return 0;
}
