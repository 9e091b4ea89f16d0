/*
 * bench_node: a three-node cluster in one process on loopback, each node
 * with its write-ahead log (syncs on) in a directory on the same disk and
 * its own loop thread, QUIC between them. Measures proposals per second and
 * the commit latency (propose call to callback, after the entry is applied
 * on the proposing leader) at 1, 16 and 256 proposals in flight, 256-byte
 * payloads, beside two baselines measured in the same run on the same
 * machine: the raw fdatasync rate (append 256 bytes + fdatasync) and the
 * raw loopback UDP round trip between two threads.
 *
 *   bench_node [--seconds S] [--dir D]
 */
#include <qraft/node.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static uint64_t pct(uint64_t *v, size_t n, double p) {
  if (n == 0) {
    return 0;
  }
  qsort(v, n, sizeof *v, cmp_u64);
  size_t i = (size_t)(p * (double)(n - 1));
  return v[i];
}

/* --- baselines ---------------------------------------------------------------- */

static double baseline_fdatasync(const char *dir, double seconds,
                                 uint64_t *p50) {
  char path[1100];
  snprintf(path, sizeof path, "%s/fdatasync.bin", dir);
  int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0600);
  if (fd < 0) {
    perror(path);
    exit(1);
  }
  char buf[256];
  memset(buf, 'x', sizeof buf);
  size_t cap = 1 << 20, n = 0;
  uint64_t *lat = malloc(cap * sizeof *lat);
  uint64_t t0 = now_ns(), end = t0 + (uint64_t)(seconds * 1e9);
  while (now_ns() < end && n < cap) {
    uint64_t a = now_ns();
    if (write(fd, buf, sizeof buf) != (ssize_t)sizeof buf || fdatasync(fd) != 0) {
      perror("write/fdatasync");
      exit(1);
    }
    lat[n++] = now_ns() - a;
  }
  double rate = (double)n / ((double)(now_ns() - t0) / 1e9);
  *p50 = pct(lat, n, 0.5);
  free(lat);
  close(fd);
  unlink(path);
  return rate;
}

typedef struct udp_echo {
  int fd;
  atomic_bool stop;
} udp_echo;

static void *udp_echo_main(void *arg) {
  udp_echo *e = arg;
  char buf[256];
  while (!atomic_load(&e->stop)) {
    struct sockaddr_in from;
    socklen_t fl = sizeof from;
    ssize_t r = recvfrom(e->fd, buf, sizeof buf, 0, (struct sockaddr *)&from,
                         &fl);
    if (r > 0) {
      sendto(e->fd, buf, (size_t)r, 0, (struct sockaddr *)&from, fl);
    }
  }
  return NULL;
}

static uint64_t baseline_udp_rtt(double seconds) {
  udp_echo e = {.fd = socket(AF_INET, SOCK_DGRAM, 0)};
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  bind(e.fd, (struct sockaddr *)&a, sizeof a);
  socklen_t al = sizeof a;
  getsockname(e.fd, (struct sockaddr *)&a, &al);
  struct timeval tv = {.tv_sec = 0, .tv_usec = 100000};
  setsockopt(e.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  pthread_t th;
  pthread_create(&th, NULL, udp_echo_main, &e);
  int c = socket(AF_INET, SOCK_DGRAM, 0);
  setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  char buf[256] = {0};
  size_t cap = 1 << 20, n = 0;
  uint64_t *lat = malloc(cap * sizeof *lat);
  uint64_t end = now_ns() + (uint64_t)(seconds * 1e9);
  while (now_ns() < end && n < cap) {
    uint64_t t = now_ns();
    sendto(c, buf, 100, 0, (struct sockaddr *)&a, sizeof a);
    if (recv(c, buf, sizeof buf, 0) > 0) {
      lat[n++] = now_ns() - t;
    }
  }
  atomic_store(&e.stop, true);
  pthread_join(th, NULL);
  close(c);
  close(e.fd);
  uint64_t p50 = pct(lat, n, 0.5);
  free(lat);
  return p50;
}

/* --- the cluster ------------------------------------------------------------------ */

static int sm_apply(void *ud, const qraft_entry *es, size_t n, uint64_t last,
                     qraft_slice *results) {
  uint64_t *applied = ud;
  *applied = last;
  (void)es;
  for (size_t i = 0; i < n; i++) {
    results[i] = (qraft_slice){0};
  }
  return 0;
}

static int sm_snapshot(void *ud, uint64_t *index, qraft_sm_write_fn write,
                       void *wctx) {
  *index = *(uint64_t *)ud;
  return write(wctx, index, sizeof *index);
}

static int sm_restore(void *ud, uint64_t index, qraft_sm_read_fn read,
                      void *rctx) {
  uint64_t v;
  size_t got = 0;
  int rv = read(rctx, &v, sizeof v, &got);
  *(uint64_t *)ud = index;
  return rv;
}

static const qraft_sm_ops sm_ops = {
    .apply = sm_apply, .snapshot = sm_snapshot, .restore = sm_restore};

typedef struct bench {
  qraft_node *node[3];
  uint64_t applied[3];
  qraft_node_addr addr[3];
  qraft_secret_key key[3];
  int leader;
  /* the closed loop */
  pthread_mutex_t mu;
  uint64_t *lat;
  size_t lat_n, lat_cap;
  uint64_t done;
  uint64_t errors;
  bool measuring;
  bool stop;
  uint64_t outstanding;
} bench;

typedef struct op {
  bench *b;
  uint64_t t0;
} op;

static char payload[256];

static void issue(bench *b);

static void on_done(void *ud, int status, qraft_slice result, qraft_id leader) {
  (void)result;
  (void)leader;
  op *o = ud;
  bench *b = o->b;
  uint64_t dt = now_ns() - o->t0;
  free(o);
  pthread_mutex_lock(&b->mu);
  b->outstanding--;
  if (status != 0) {
    b->errors++;
  } else if (b->measuring) {
    b->done++;
    if (b->lat_n < b->lat_cap) {
      b->lat[b->lat_n++] = dt;
    }
  }
  bool again = !b->stop;
  pthread_mutex_unlock(&b->mu);
  if (again) {
    issue(b);
  }
}

static void issue(bench *b) {
  op *o = malloc(sizeof *o);
  o->b = b;
  o->t0 = now_ns();
  pthread_mutex_lock(&b->mu);
  b->outstanding++;
  pthread_mutex_unlock(&b->mu);
  int rv = qraft_node_propose(b->node[b->leader], payload, sizeof payload,
                              on_done, o);
  if (rv != 0) {
    pthread_mutex_lock(&b->mu);
    b->outstanding--;
    b->errors++;
    pthread_mutex_unlock(&b->mu);
    free(o);
  }
}

int main(int argc, char **argv) {
  double seconds = 3;
  const char *dir = "build/bench-node";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (strcmp(argv[i], "--seconds") == 0) {
      seconds = atof(argv[i + 1]);
    } else if (strcmp(argv[i], "--dir") == 0) {
      dir = argv[i + 1];
    }
  }
  char root[600];
  snprintf(root, sizeof root, "%s/run-%d", dir, (int)getpid());
  char cmd[1400];
  snprintf(cmd, sizeof cmd, "mkdir -p '%s'", root);
  if (system(cmd) != 0) {
    return 1;
  }
  memset(payload, 'v', sizeof payload);

  uint64_t sync_p50;
  double sync_rate = baseline_fdatasync(root, 1.0, &sync_p50);
  uint64_t rtt_p50 = baseline_udp_rtt(1.0);
  printf("bench_node: 3 nodes, WAL with fdatasync in %s, QUIC on loopback, "
         "256-byte proposals\n",
         root);
  printf("  baseline: append 256 B + fdatasync  %8.0f/s  p50 %6.1f us\n",
         sync_rate, sync_p50 / 1e3);
  printf("  baseline: loopback UDP round trip              p50 %6.1f us\n",
         rtt_p50 / 1e3);
  printf("  floor for one write in flight (sync + round trip): %.1f us\n",
         (sync_p50 + rtt_p50) / 1e3);

  bench *b = calloc(1, sizeof *b);
  pthread_mutex_init(&b->mu, NULL);
  b->lat_cap = 4 << 20;
  b->lat = malloc(b->lat_cap * sizeof *b->lat);
  uint16_t base = (uint16_t)(30000 + getpid() % 2000 * 10);
  for (int i = 0; i < 3; i++) {
    qraft_secret_key_generate(&b->key[i]);
    b->addr[i].id = b->key[i].public_key;
    b->addr[i].addrs_n = 1;
    struct sockaddr_in *a = (struct sockaddr_in *)&b->addr[i].addrs[0];
    a->sin_family = AF_INET;
    a->sin_port = htons((uint16_t)(base + i));
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  }
  for (int i = 0; i < 3; i++) {
    char d[700];
    snprintf(d, sizeof d, "%s/n%d", root, i);
    qraft_node_config cfg;
    qraft_node_config_default(&cfg);
    cfg.data_dir = d;
    cfg.key = &b->key[i];
    cfg.cluster_id = 1;
    cfg.bind_n = 1;
    memcpy(&cfg.bind[0], &b->addr[i].addrs[0], sizeof(struct sockaddr_in));
    cfg.sm = &sm_ops;
    cfg.sm_ud = &b->applied[i];
    cfg.snapshot_entries = 100000;
    qraft_err err;
    qraft_err_init(&err, 0);
    if (qraft_node_new(&cfg, &b->node[i], &err) != 0 ||
        qraft_node_bootstrap(b->node[i], b->addr, 3, &err) != 0 ||
        qraft_node_start(b->node[i]) != 0) {
      qraft_err_print(&err, stderr);
      return 1;
    }
  }
  b->leader = -1;
  for (int k = 0; k < 500 && b->leader < 0; k++) {
    for (int i = 0; i < 3; i++) {
      qraft_node_status st;
      qraft_node_status_get(b->node[i], &st);
      if (st.role == QRAFT_ROLE_LEADER) {
        b->leader = i;
      }
    }
    usleep(10000);
  }
  if (b->leader < 0) {
    fprintf(stderr, "no leader\n");
    return 1;
  }
  usleep(200000); /* followers learn the leader */
  printf("  %-12s %12s %10s %10s %12s %14s\n", "in flight", "proposals/s",
         "p50 us", "p99 us", "p50/floor", "errors");
  static const int levels[] = {1, 16, 256};
  for (int l = 0; l < 3; l++) {
    pthread_mutex_lock(&b->mu);
    b->stop = false;
    b->measuring = false;
    b->done = 0;
    b->errors = 0;
    b->lat_n = 0;
    pthread_mutex_unlock(&b->mu);
    for (int k = 0; k < levels[l]; k++) {
      issue(b);
    }
    usleep(300000); /* warm up */
    pthread_mutex_lock(&b->mu);
    b->measuring = true;
    uint64_t t0 = now_ns();
    pthread_mutex_unlock(&b->mu);
    usleep((useconds_t)(seconds * 1e6));
    pthread_mutex_lock(&b->mu);
    b->measuring = false;
    b->stop = true;
    uint64_t t1 = now_ns();
    uint64_t done = b->done, errors = b->errors;
    size_t n = b->lat_n;
    pthread_mutex_unlock(&b->mu);
    uint64_t p50 = pct(b->lat, n, 0.5), p99 = pct(b->lat, n, 0.99);
    for (int k = 0; k < 500; k++) {
      pthread_mutex_lock(&b->mu);
      uint64_t out = b->outstanding;
      pthread_mutex_unlock(&b->mu);
      if (out == 0) {
        break;
      }
      usleep(10000);
    }
    printf("  %-12d %12.0f %10.1f %10.1f %11.2fx %14" PRIu64 "\n", levels[l],
           (double)done / ((double)(t1 - t0) / 1e9), p50 / 1e3, p99 / 1e3,
           (double)p50 / (double)(sync_p50 + rtt_p50), errors);
  }
  for (int i = 0; i < 3; i++) {
    qraft_node_free(b->node[i]);
  }
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
  (void)system(cmd);
  free(b->lat);
  free(b);
  return 0;
}
