/*
 * qraft-kv serve: one member of a cluster. Opens the LMDB state machine and
 * the node, bootstraps or joins, serves HTTP, registers its HTTP address in
 * the replicated state (so any member can name the leader's), and stops
 * gracefully on SIGINT or SIGTERM (a leader first hands leadership over).
 */
#include "kv.h"

#include <jansson.h>
#include <microhttpd.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct kv_server {
  qraft_node *node;
  kv_store *store;
  uint64_t cluster_id;
};

qraft_node *kv_server_node(kv_server *srv) { return srv->node; }
kv_store *kv_server_store(kv_server *srv) { return srv->store; }
uint64_t kv_server_cluster_id(kv_server *srv) { return srv->cluster_id; }

static volatile sig_atomic_t stop_flag;
static void on_signal(int sig) {
  (void)sig;
  stop_flag = 1;
}

uint64_t kv_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int kv_parse_hostport(const char *text, struct sockaddr_storage *out) {
  char host[256];
  const char *colon;
  memset(out, 0, sizeof *out);
  if (text[0] == '[') {
    const char *end = strchr(text, ']');
    if (end == NULL || end[1] != ':' || (size_t)(end - text - 1) >= sizeof host) {
      return -1;
    }
    memcpy(host, text + 1, (size_t)(end - text - 1));
    host[end - text - 1] = 0;
    colon = end + 1;
  } else {
    colon = strrchr(text, ':');
    if (colon == NULL || (size_t)(colon - text) >= sizeof host) {
      return -1;
    }
    memcpy(host, text, (size_t)(colon - text));
    host[colon - text] = 0;
  }
  char *endp;
  long port = strtol(colon + 1, &endp, 10);
  if (*endp != 0 || port < 0 || port > 65535 || colon[1] == 0) {
    return -1;
  }
  struct addrinfo hints = {0}, *res;
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  if (getaddrinfo(host[0] ? host : "0.0.0.0", NULL, &hints, &res) != 0) {
    return -1;
  }
  memcpy(out, res->ai_addr, res->ai_addrlen);
  freeaddrinfo(res);
  if (out->ss_family == AF_INET) {
    ((struct sockaddr_in *)out)->sin_port = htons((uint16_t)port);
  } else {
    ((struct sockaddr_in6 *)out)->sin6_port = htons((uint16_t)port);
  }
  return 0;
}

/* "ID@host:port", or "ID" alone (reached through relays), into a node
 * address. */
static int parse_member(const char *text, qraft_node_addr *a) {
  const char *at = strchr(text, '@');
  char id[160];
  size_t idlen = at != NULL ? (size_t)(at - text) : strlen(text);
  if (idlen >= sizeof id) {
    return -1;
  }
  memcpy(id, text, idlen);
  id[idlen] = 0;
  memset(a, 0, sizeof *a);
  if (qraft_node_id_parse(id, &a->id) != 0) {
    return -1;
  }
  if (at != NULL) {
    if (kv_parse_hostport(at + 1, &a->addrs[0]) != 0) {
      return -1;
    }
    a->addrs_n = 1;
  }
  return 0;
}

int kv_parse_relay(const char *text, qraft_relay_addr *out) {
  qraft_node_addr a;
  if (strchr(text, '@') == NULL || parse_member(text, &a) != 0) {
    return -1;
  }
  out->id = a.id;
  out->addr = a.addrs[0];
  return 0;
}

int kv_parse_members(const char *list_text, const qraft_relay_addr *relays,
                     uint32_t relays_n, bool ids_ok, qraft_node_addr *members,
                     size_t *n_out) {
  size_t n = 0;
  char *list = strdup(list_text), *save = NULL;
  if (list == NULL) return -1;
  for (char *m = strtok_r(list, ",", &save); m != NULL;
       m = strtok_r(NULL, ",", &save)) {
    if (n == QRAFT_NODE_MEMBERS_MAX || parse_member(m, &members[n]) != 0) {
      kv_log(QRAFT_LOG_WARN, "bad member '%s' (want ID@HOST:PORT, or ID "
                             "with --relay)\n", m);
      free(list);
      return -1;
    }
    if (members[n].addrs_n == 0 && relays_n == 0 && !ids_ok) {
      kv_log(QRAFT_LOG_WARN, "member '%s' has no address: give it as "
                             "ID@HOST:PORT, or give --relay or "
                             "--discovery-file\n", m);
      free(list);
      return -1;
    }
    /* Every member is also reachable through our relays: the founders of
     * a cluster behind NATs share them. */
    members[n].relays_n = relays_n;
    if (relays_n > 0) {
      memcpy(members[n].relays, relays, relays_n * sizeof *relays);
    }
    n++;
  }
  free(list);
  *n_out = n;
  return 0;
}

/* ---- the data folder's format and cluster (DATA/qraft-kv.meta) ---- */

int kv_data_meta_read(const char *dir, uint32_t *format, uint64_t *cluster,
                      char *msg, size_t n) {
  char path[1100];
  snprintf(path, sizeof path, "%s/" KV_DATA_META, dir);
  FILE *f = fopen(path, "r");
  if (f == NULL) {
    if (errno == ENOENT) return 1;
    snprintf(msg, n, "%s: %s", path, strerror(errno));
    return -1;
  }
  char line[200];
  unsigned fmt = 0;
  unsigned long long c = 0;
  bool got_fmt = false, got_cluster = false;
  while (fgets(line, sizeof line, f) != NULL) {
    if (sscanf(line, "qraft-kv data format %u", &fmt) == 1) got_fmt = true;
    else if (sscanf(line, "cluster %llx", &c) == 1) got_cluster = true;
  }
  fclose(f);
  if (!got_fmt || (fmt == KV_DATA_FORMAT && (!got_cluster || c == 0))) {
    snprintf(msg, n, "%s: unreadable (want lines 'qraft-kv data format N' "
                     "and 'cluster HEX')", path);
    return -1;
  }
  *format = fmt;
  *cluster = c;
  return 0;
}

int kv_data_meta_write(const char *dir, uint64_t cluster, char *msg,
                       size_t n) {
  char path[1100], tmp[1110];
  snprintf(path, sizeof path, "%s/" KV_DATA_META, dir);
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  char text[120];
  int len = snprintf(text, sizeof text,
                     "qraft-kv data format %u\ncluster %016llx\n",
                     KV_DATA_FORMAT, (unsigned long long)cluster);
  bool ok = fd >= 0 && write(fd, text, (size_t)len) == len && fsync(fd) == 0;
  int e = errno;
  if (fd >= 0 && close(fd) != 0 && ok) {
    ok = false;
    e = errno;
  }
  if (ok && rename(tmp, path) != 0) {
    ok = false;
    e = errno;
  }
  if (!ok) {
    (void)unlink(tmp);
    snprintf(msg, n, "writing %s: %s", path, strerror(e));
    return -1;
  }
  int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)fsync(dfd);
    close(dfd);
  }
  return 0;
}

/* The cluster id the member at `url` reports (1, the default, for a
 * member of format 0 whose status has none), or 0 if it did not answer
 * within about 30 s. */
static uint64_t remote_cluster(const char *url, const char *token) {
  for (int attempt = 0; attempt < 60 && !stop_flag; attempt++) {
    char *resp = NULL;
    if (kv_http_request(url, "GET", "/v1/status", token, NULL, 3000, &resp) ==
        200) {
      json_t *j = json_loads(resp, 0, NULL);
      const char *h = json_string_value(json_object_get(j, "cluster_id"));
      uint64_t c = h != NULL ? strtoull(h, NULL, 16) : 1;
      json_decref(j);
      free(resp);
      return c != 0 ? c : 1;
    }
    free(resp);
    usleep(500 * 1000);
  }
  return 0;
}

/* ---- a clean stop hands leadership over ---- */

qraft_id kv_best_voter(const qraft_node_status *st) {
  qraft_id to = 0;
  uint64_t best = 0;
  for (uint32_t i = 0; i < st->members_n; i++) {
    const qraft_member_status *m = &st->members[i];
    if (m->voter && m->id != st->id && (to == 0 || m->match > best)) {
      to = m->id;
      best = m->match;
    }
  }
  return to;
}

typedef struct handover {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool done;
  int status;
} handover;

static void handover_cb(void *ud, int status, qraft_id leader) {
  (void)leader;
  handover *h = ud;
  pthread_mutex_lock(&h->mu);
  h->done = true;
  h->status = status;
  pthread_cond_signal(&h->cv);
  pthread_mutex_unlock(&h->mu);
}

/* A leader that stops cleanly first hands leadership to its most caught-up
 * voter (thesis 3.10), so the others go on after a round trip instead of an
 * election timeout. Waits up to `wait_ms`; `h` must outlive the node (the
 * callback may come as the node stops). */
static void hand_over(qraft_node *node, handover *h, uint32_t wait_ms,
                      bool quiet) {
  qraft_node_status st;
  qraft_node_status_get(node, &st);
  if (st.role != QRAFT_ROLE_LEADER) {
    return;
  }
  qraft_id to = kv_best_voter(&st);
  if (to == 0 || qraft_node_transfer(node, to, handover_cb, h) != 0) {
    return;
  }
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += wait_ms / 1000;
  until.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
  if (until.tv_nsec >= 1000000000L) {
    until.tv_sec++;
    until.tv_nsec -= 1000000000L;
  }
  pthread_mutex_lock(&h->mu);
  while (!h->done) {
    if (pthread_cond_timedwait(&h->cv, &h->mu, &until) != 0) {
      break;
    }
  }
  bool done = h->done;
  int status = h->status;
  pthread_mutex_unlock(&h->mu);
  if (!quiet) {
    printf("qraft-kv: leadership %s to %016" PRIx64 "\n",
           done && status == 0 ? "handed over" : "not handed over in time",
           to);
    fflush(stdout);
  }
}

/* "123", "64K", "1G", ...: bytes with an optional power-of-1024 suffix. */
int kv_parse_size(const char *v, uint64_t *out) {
  char *end = NULL;
  errno = 0;
  unsigned long long n = strtoull(v, &end, 10);
  if (end == v || errno != 0 || v[0] == '-') {
    return -1;
  }
  int shift = 0;
  switch (*end) {
  case 0: break;
  case 'K': case 'k': shift = 10; end++; break;
  case 'M': case 'm': shift = 20; end++; break;
  case 'G': case 'g': shift = 30; end++; break;
  case 'T': case 't': shift = 40; end++; break;
  default: return -1;
  }
  if (*end != 0 || (shift > 0 && n > (UINT64_MAX >> shift))) {
    return -1;
  }
  *out = (uint64_t)n << shift;
  return 0;
}

static void store_alarm(void *ud, bool raised, const char *why) {
  (void)qraft_node_alarm_set(ud, QRAFT_ALARM_NOSPACE, raised, why);
}

static int serve_usage(void) {
  fprintf(stderr,
          "usage: qraft-kv serve --data DIR --key KEYFILE --raft HOST:PORT\n"
          "         [--http HOST:PORT] [--token-file FILE] [--cluster-id N]\n"
          "         [--bootstrap ID[@HOST:PORT],ID[@HOST:PORT],...]\n"
          "         [--relay ID@HOST:PORT]... [--discovery-file FILE]\n"
          "         [--join http://HOST:PORT] [--advertise-http URL]\n"
          "         [--tick-ms N] [--election-ms N] [--heartbeat-ms N]\n"
          "         [--snapshot-entries N] [--snapshot-log-bytes SIZE]\n"
          "         [--state-sync-ms N] [--map-size SIZE]\n"
          "         [--space-reserve SIZE] [--quiet]\n"
          "         [--force-new-cluster [--force-new-cluster]]\n"
          "         [--tls-cert FILE --tls-key FILE [--tls-client-ca FILE]]\n"
          "         [--cacert FILE] [--insecure-token]\n"
          "         [--log-format text|json] [--log-level LEVEL]\n"
          "  --relay: a qraft-relay server (up to 2): this member stays\n"
          "  connected to it and reaches through it the members it has no\n"
          "  direct path to; --bootstrap members given by ID alone are\n"
          "  reached through the relays only. --discovery-file: lines 'ID\n"
          "  addr=IP:PORT relay=ID@IP:PORT': where members are, besides\n"
          "  the addresses in the log (re-read when it changes).\n"
          "  --election-ms: election timeout (default 1000: failover after a\n"
          "  crash takes 1 to 2 of it); --heartbeat-ms (default a tenth of it);\n"
          "  both in multiples of --tick-ms (default 10).\n"
          "  --state-sync-ms: how often the applied writes are committed to\n"
          "  LMDB (default 100, at most 60000; 0: as soon as possible); the\n"
          "  log keeps what LMDB does not hold yet, so a restart loses nothing.\n"
          "  --map-size: the most the state may hold in LMDB (default 64G; a\n"
          "  bound, not space used). Once full, writes to this member fail\n"
          "  with 507 no_space until it restarts with a larger one.\n"
          "  --space-reserve: once the free space of the data folder's file\n"
          "  system (or the state's) falls below this (default 64M; 0: no\n"
          "  reserve), the member raises its no-space alarm and takes no\n"
          "  writes (507 no_space) until there is room; it stays up.\n"
          "  --snapshot-log-bytes: snapshot once the log in memory holds this\n"
          "  much (default 64M), or after --snapshot-entries (10000).\n"
          "  SIZE: bytes, or with a K, M, G or T suffix (powers of 1024).\n"
          "         [--config FILE]\n"
          "  --config FILE reads the same settings from a file, one per line:\n"
          "  'name value' or 'name = value' with the flag's name without\n"
          "  '--' ('quiet' takes true or false), '#' starts a comment; flags\n"
          "  on the command line override the file.\n"
          "  --http defaults to 127.0.0.1:8080; any address but 127.0.0.1\n"
          "  needs --token-file (every request then carries\n"
          "  'Authorization: Bearer TOKEN'). A missing KEYFILE is created.\n"
          "  --force-new-cluster: recovery after a quorum is gone for good\n"
          "  (docs/operations.md): this member's membership becomes itself\n"
          "  alone, every entry it holds is kept; the others are then added\n"
          "  again with --join and empty data. Refused while a quorum of its\n"
          "  configuration answers within a few election timeouts; given\n"
          "  twice, forced without that check. Command line only.\n"
          "  --tls-cert/--tls-key: serve HTTPS (PEM files); --tls-client-ca:\n"
          "  requests must also come with a client certificate it signed.\n"
          "  --cacert: the CA of the other members' certificates, for this\n"
          "  member's own requests to them (join). A token over plain HTTP\n"
          "  off loopback is refused unless --insecure-token.\n"
          "  --log-format json: each line on stderr is a JSON object (ts,\n"
          "  level, msg, fields, src); --log-level: trace, debug, info (the\n"
          "  default; warn with --quiet), warn, error or off.\n");
  return 2;
}

/* --force-new-cluster once: runs the node in its old configuration for a
 * few election timeouts and counts the voters it hears from or holds a
 * connection with (a follower under a leader's lease ignores our votes,
 * but its handshake answers). Returns the voters that answered (this
 * member included if a voter) and the voters in *voters_n. */
static uint32_t probe_quorum(qraft_node *node, uint32_t election_ms,
                             uint32_t *voters_n, uint32_t *window_ms) {
  uint32_t window = 3 * election_ms;
  if (window < 3000) window = 3000;
  *window_ms = window;
  uint64_t end = kv_now_ns() + (uint64_t)window * 1000000ull;
  uint32_t best = 0;
  while (kv_now_ns() < end && !stop_flag) {
    usleep(100 * 1000);
    qraft_node_status st;
    qraft_node_status_get(node, &st);
    uint32_t voters = 0, answered = 0;
    for (uint32_t i = 0; i < st.members_n; i++) {
      const qraft_member_status *m = &st.members[i];
      if (!m->voter) continue;
      voters++;
      if (m->id == st.id || m->connected || m->heard_ms <= window ||
          (st.leader != 0 && m->id == st.leader)) {
        answered++;
      }
    }
    *voters_n = voters;
    if (answered > best) best = answered;
    if (voters > 0 && best >= voters / 2 + 1) break;
  }
  return best;
}

static void noop_propose_cb(void *ud, int status, qraft_slice result,
                            qraft_id leader) {
  (void)ud;
  (void)status;
  (void)result;
  (void)leader;
}

/* Proposes our HTTP address when the replicated one differs. */
static void register_http(kv_server *srv, const char *hex, const char *url) {
  char cur[256];
  if (kv_store_http_of(srv->store, hex, cur, sizeof cur) &&
      strcmp(cur, url) == 0) {
    return;
  }
  kv_cmd c = {.op = KV_OP_SETHTTP,
              .key = (const uint8_t *)hex,
              .key_len = (uint32_t)strlen(hex),
              .value = (const uint8_t *)url,
              .value_len = (uint32_t)strlen(url)};
  uint8_t *p;
  size_t n = kv_cmd_encode(&c, &p);
  if (n > 0) {
    qraft_node_propose(srv->node, p, n, noop_propose_cb, NULL);
    free(p);
  }
}

/* Asks the member at `url` to add us with `role`, following the leader's
 * HTTP address on 503. Returns 0 or -1 after `deadline_ns`. */
static int join_step(const char *url, const char *token, const char *hex,
                     const char *raft, const char *relays, const char *role,
                     uint64_t deadline_ns) {
  char target[256];
  snprintf(target, sizeof target, "%s", url);
  char body[1024];
  snprintf(body, sizeof body,
           "{\"id\":\"%s\",\"addr\":\"%s\",\"relays\":[%s],\"role\":\"%s\"}",
           hex, raft, relays, role);
  while (kv_now_ns() < deadline_ns && !stop_flag) {
    char *resp = NULL;
    int st = kv_http_request(target, "POST", "/v1/members", token, body, 15000,
                             &resp);
    if (st == 200) {
      free(resp);
      return 0;
    }
    if (resp != NULL) {
      resp[strcspn(resp, "\n")] = 0;
    }
    if (st >= 400 && st < 500) {
      kv_log(QRAFT_LOG_WARN, "join as %s via %s refused: %d %s\n", role,
              target, st, resp ? resp : "");
      free(resp);
      return -1; /* refused: retrying will not help */
    }
    json_t *j = st == 503 && resp ? json_loads(resp, 0, NULL) : NULL;
    const char *lh = j ? json_string_value(json_object_get(j, "leader_http"))
                       : NULL;
    if (lh != NULL && lh[0] && strcmp(lh, target) != 0) {
      kv_log(QRAFT_LOG_WARN, "join: %s is not the leader; asking %s\n",
              target, lh);
      snprintf(target, sizeof target, "%s", lh);
      json_decref(j);
      free(resp);
      continue;
    }
    json_decref(j);
    kv_log(QRAFT_LOG_WARN, "join as %s via %s: %d %s; retrying\n", role,
            target, st, resp ? resp : "(no answer)");
    free(resp);
    usleep(300 * 1000);
  }
  return -1;
}

/* The commit index the member at `url` reports, or 0. */
static uint64_t remote_commit(const char *url, const char *token) {
  char *resp = NULL;
  uint64_t c = 0;
  if (kv_http_request(url, "GET", "/v1/status", token, NULL, 5000, &resp) ==
      200) {
    json_t *j = json_loads(resp, 0, NULL);
    c = (uint64_t)json_integer_value(json_object_get(j, "commit"));
    json_decref(j);
  }
  free(resp);
  return c;
}

static int join_cluster(kv_server *srv, const char *url, const char *token,
                        const char *hex, const char *raft,
                        const char *relays) {
  uint64_t deadline = kv_now_ns() + 60ull * 1000000000ull;
  if (join_step(url, token, hex, raft, relays, "learner", deadline) != 0) {
    return -1;
  }
  /* Catch up as a learner before counting in quorums. */
  uint64_t want = remote_commit(url, token);
  while (kv_now_ns() < deadline && !stop_flag) {
    qraft_node_status st;
    qraft_node_status_get(srv->node, &st);
    if (st.applied >= want && st.leader != 0) {
      break;
    }
    usleep(50 * 1000);
  }
  return join_step(url, token, hex, raft, relays, "voter", deadline);
}

/* A whole (small) file as a string, or NULL (errno says why). */
static char *read_text(const char *path) {
  FILE *f = fopen(path, "r");
  if (f == NULL) return NULL;
  char *buf = malloc(1 << 20);
  size_t n = buf ? fread(buf, 1, (1 << 20) - 1, f) : 0;
  fclose(f);
  if (buf == NULL) return NULL;
  buf[n] = 0;
  return buf;
}

static char *read_token(const char *path) {
  FILE *f = fopen(path, "r");
  if (f == NULL) {
    return NULL;
  }
  char buf[512];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ')) {
    buf[--n] = 0;
  }
  return n > 0 ? strdup(buf) : NULL;
}

/* --config: the file's settings become flags placed before the command
 * line's, so that the command line wins. Values live in static storage. */
#define KV_CONFIG_LINES 64
static char kv_config_text[KV_CONFIG_LINES][2][512];
static char *kv_config_argv[2 * KV_CONFIG_LINES + 256];

static int kv_config_read(const char *path, int *n_out) {
  FILE *f = fopen(path, "r");
  if (f == NULL) {
    kv_log(QRAFT_LOG_WARN, "--config %s: %s\n", path, strerror(errno));
    return -1;
  }
  char line[1100];
  int n = 0, lineno = 0;
  while (fgets(line, sizeof line, f) != NULL) {
    lineno++;
    char *p = line;
    char *hash = strchr(p, '#');
    if (hash != NULL) {
      *hash = 0;
    }
    while (*p == ' ' || *p == '\t') {
      p++;
    }
    size_t l = strlen(p);
    while (l > 0 && (p[l - 1] == '\n' || p[l - 1] == '\r' || p[l - 1] == ' ' ||
                     p[l - 1] == '\t')) {
      p[--l] = 0;
    }
    if (l == 0) {
      continue;
    }
    char *name = p;
    char *sep = strpbrk(p, " \t=");
    if (sep == NULL) {
      kv_log(QRAFT_LOG_WARN, "%s:%d: '%s' has no value\n", path, lineno,
              name);
      fclose(f);
      return -1;
    }
    *sep++ = 0;
    while (*sep == ' ' || *sep == '\t' || *sep == '=') {
      sep++;
    }
    if (*sep == 0 || n == KV_CONFIG_LINES || strlen(name) > 500 ||
        strlen(sep) > 510) {
      kv_log(QRAFT_LOG_WARN, "%s:%d: bad setting '%s'\n", path, lineno,
              name);
      fclose(f);
      return -1;
    }
    /* lengths checked above: "--" + name and the value fit */
    kv_config_text[n][0][0] = '-';
    kv_config_text[n][0][1] = '-';
    memcpy(kv_config_text[n][0] + 2, name, strlen(name) + 1);
    memcpy(kv_config_text[n][1], sep, strlen(sep) + 1);
    n++;
  }
  fclose(f);
  *n_out = n;
  return 0;
}

/* serve --force-new-cluster: checks that no quorum of the old
 * configuration answers (unless forced twice), then rewrites this
 * member's membership to itself alone (qraft_node_force_new_cluster).
 * srv->node is a node made from cfg, not started; it is replaced. Returns
 * 0, or the exit status. */
static int force_new_cluster(kv_server *srv, const qraft_node_config *cfg,
                             int times, uint32_t election_ms, bool quiet) {
  qraft_err err;
  qraft_err_init(&err, 0);
  if (kv_store_applied(srv->store) == 0) {
    kv_log(QRAFT_LOG_WARN, "--force-new-cluster: this member's data "
                    "holds no log: there is nothing to recover from\n");
    return 2;
  }
  if (times == 1) {
    if (qraft_node_start(srv->node) != 0) {
      kv_log(QRAFT_LOG_WARN, "node start failed\n");
      return 1;
    }
    uint32_t voters = 0, window = 0;
    uint32_t answered = probe_quorum(srv->node, election_ms ? election_ms : 1000,
                                     &voters, &window);
    qraft_node_free(srv->node);
    srv->node = NULL;
    if (stop_flag) return 1;
    if (voters > 0 && answered >= voters / 2 + 1) {
      kv_log(QRAFT_LOG_WARN,
              "--force-new-cluster refused: %u of the %u voters of "
              "this member's configuration answered within %u ms (a "
              "quorum, this member included): the cluster can still "
              "commit, and forcing would split it in two. Restart without "
              "the flag. If those voters are really gone, give the flag "
              "twice.\n",
              answered, voters, window);
      return 2;
    }
    if (!quiet) {
      printf("qraft-kv: %u of the %u voters answered within %u ms: no "
             "quorum; forcing a new cluster\n",
             answered, voters, window);
      fflush(stdout);
    }
    int rv = qraft_node_new(cfg, &srv->node, &err);
    if (rv != 0) {
      qraft_err_print(&err, stderr);
      return 1;
    }
  }
  qraft_conf_state was;
  uint64_t last = 0;
  if (qraft_node_force_new_cluster(srv->node, &was, &last, &err) != 0) {
    qraft_err_print(&err, stderr);
    return 1;
  }
  kv_log(QRAFT_LOG_WARN,
          "FORCED A NEW CLUSTER%s: this member is now its only "
          "voter (it had %u voters and %u learners); every entry it held, "
          "through index %llu, is kept and committed. Writes the lost "
          "members committed without it are gone. Add members again with "
          "'serve --join' and empty data; never restart the old ones with "
          "their data.\n",
          times > 1 ? " (forced twice: the quorum check was skipped)" : "",
          was.voters_n, was.learners_n, (unsigned long long)last);
  return 0;
}

int kv_serve_main(int argc, char **argv) {
  /* --config first: its settings go before the command line's */
  for (int i = 0; i + 1 < argc; i++) {
    if (strcmp(argv[i], "--config") == 0) {
      int n = 0;
      if (kv_config_read(argv[i + 1], &n) != 0) {
        return 2;
      }
      int k = 0;
      for (int j = 0; j < n; j++) {
        if (strcmp(kv_config_text[j][0], "--quiet") == 0 ||
            strcmp(kv_config_text[j][0], "--insecure-token") == 0) {
          if (strcmp(kv_config_text[j][1], "true") == 0) {
            kv_config_argv[k++] = kv_config_text[j][0];
          } else if (strcmp(kv_config_text[j][1], "false") != 0) {
            kv_log(QRAFT_LOG_WARN, "%s takes true or false\n",
                    kv_config_text[j][0] + 2);
            return 2;
          }
          continue;
        }
        kv_config_argv[k++] = kv_config_text[j][0];
        kv_config_argv[k++] = kv_config_text[j][1];
      }
      for (int j = 0; j < argc && k < (int)(sizeof kv_config_argv /
                                             sizeof kv_config_argv[0]);
           j++) {
        if (j == i || j == i + 1) {
          continue; /* the --config flag itself */
        }
        kv_config_argv[k++] = argv[j];
      }
      argc = k;
      argv = kv_config_argv;
      break;
    }
  }
  const char *data = NULL, *keyfile = NULL, *raft = NULL,
             *http = "127.0.0.1:8080", *token_file = NULL, *bootstrap = NULL,
             *join = NULL, *advertise = NULL, *tls_cert = NULL,
             *tls_key = NULL, *tls_client_ca = NULL, *cacert = NULL,
             *log_format = "text", *log_level = NULL, *disc_file = NULL;
  uint64_t cluster_id = 1, snapshot_entries = 0, map_bytes = 0,
           snapshot_log_bytes = 0, space_reserve = 64ull << 20;
  uint32_t tick_ms = 0, election_ms = 0, heartbeat_ms = 0, sync_ms = 100;
  bool quiet = false, cluster_given = false, insecure_token = false;
  int force_new = 0;
  qraft_relay_addr relays[QRAFT_NODE_RELAYS_MAX];
  uint32_t relays_n = 0;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(a, "--quiet") == 0) {
      quiet = true;
      continue;
    }
    if (strcmp(a, "--force-new-cluster") == 0) {
      force_new++;
      continue;
    }
    if (strcmp(a, "--insecure-token") == 0) {
      insecure_token = true;
      continue;
    }
    if (v == NULL) {
      return serve_usage();
    }
    i++;
    if (strcmp(a, "--data") == 0) data = v;
    else if (strcmp(a, "--key") == 0) keyfile = v;
    else if (strcmp(a, "--raft") == 0) raft = v;
    else if (strcmp(a, "--http") == 0) http = v;
    else if (strcmp(a, "--token-file") == 0) token_file = v;
    else if (strcmp(a, "--bootstrap") == 0) bootstrap = v;
    else if (strcmp(a, "--join") == 0) join = v;
    else if (strcmp(a, "--relay") == 0) {
      if (relays_n == QRAFT_NODE_RELAYS_MAX ||
          kv_parse_relay(v, &relays[relays_n]) != 0) {
        kv_log(QRAFT_LOG_WARN, "bad --relay %s (want ID@HOST:PORT, at most "
                               "%u)\n", v, QRAFT_NODE_RELAYS_MAX);
        return 2;
      }
      relays_n++;
    }
    else if (strcmp(a, "--advertise-http") == 0) advertise = v;
    else if (strcmp(a, "--discovery-file") == 0) disc_file = v;
    else if (strcmp(a, "--tls-cert") == 0) tls_cert = v;
    else if (strcmp(a, "--tls-key") == 0) tls_key = v;
    else if (strcmp(a, "--tls-client-ca") == 0) tls_client_ca = v;
    else if (strcmp(a, "--cacert") == 0) cacert = v;
    else if (strcmp(a, "--log-format") == 0) log_format = v;
    else if (strcmp(a, "--log-level") == 0) log_level = v;
    else if (strcmp(a, "--cluster-id") == 0) {
      cluster_id = strtoull(v, NULL, 0);
      cluster_given = true;
    }
    else if (strcmp(a, "--tick-ms") == 0) tick_ms = (uint32_t)strtoul(v, NULL, 0);
    else if (strcmp(a, "--election-ms") == 0) election_ms = (uint32_t)strtoul(v, NULL, 0);
    else if (strcmp(a, "--heartbeat-ms") == 0) heartbeat_ms = (uint32_t)strtoul(v, NULL, 0);
    else if (strcmp(a, "--snapshot-entries") == 0) snapshot_entries = strtoull(v, NULL, 0);
    else if (strcmp(a, "--map-size") == 0 ||
             strcmp(a, "--snapshot-log-bytes") == 0) {
      uint64_t b;
      if (kv_parse_size(v, &b) != 0 || b < (1u << 20)) {
        kv_log(QRAFT_LOG_WARN, "bad %s %s (bytes, at least 1M; "
                        "K, M, G or T suffix)\n", a, v);
        return 2;
      }
      if (strcmp(a, "--map-size") == 0) map_bytes = b;
      else snapshot_log_bytes = b;
    }
    else if (strcmp(a, "--space-reserve") == 0) {
      if (kv_parse_size(v, &space_reserve) != 0) {
        kv_log(QRAFT_LOG_WARN, "bad --space-reserve %s (bytes; K, M, G "
                        "or T suffix; 0: none)\n", v);
        return 2;
      }
    }
    else if (strcmp(a, "--state-sync-ms") == 0) {
      char *end = NULL;
      unsigned long ms = strtoul(v, &end, 10);
      if (end == v || *end != 0 || ms > 60000) {
        kv_log(QRAFT_LOG_WARN, "bad --state-sync-ms %s (0 to 60000)\n", v);
        return 2;
      }
      sync_ms = (uint32_t)ms;
    }
    else return serve_usage();
  }
  /* logs: text or JSON lines on stderr; INFO and up (WARN with --quiet,
   * or as QRAFT_LOG says), unless --log-level */
  qraft_logger *lg = qraft_log_default();
  if (strcmp(log_format, "json") == 0) {
    lg->sink_cb = qraft_log_sink_json;
    kv_log_json(true);
  } else if (strcmp(log_format, "text") != 0) {
    fprintf(stderr, "qraft-kv: --log-format takes text or json\n");
    return 2;
  }
  qraft_log_level lvl = quiet ? QRAFT_LOG_WARN : QRAFT_LOG_INFO;
  if (log_level != NULL) {
    if (qraft_log_level_parse(log_level, &lvl) != 0) {
      kv_log(QRAFT_LOG_ERROR, "--log-level takes trace, debug, info, warn, "
                              "error or off");
      return 2;
    }
    lg->level = (int)lvl;
  } else if (getenv("QRAFT_LOG") == NULL) {
    lg->level = (int)lvl;
  }
  if (data == NULL || keyfile == NULL || raft == NULL || cluster_id == 0 ||
      (bootstrap != NULL && join != NULL) ||
      (force_new > 0 && (bootstrap != NULL || join != NULL))) {
    return serve_usage();
  }
  struct sockaddr_storage http_sa;
  if (kv_parse_hostport(http, &http_sa) != 0) {
    kv_log(QRAFT_LOG_WARN, "bad --http %s\n", http);
    return 2;
  }
  bool loopback = strncmp(http, "127.0.0.1:", 10) == 0 ||
                  strncmp(http, "localhost:", 10) == 0 ||
                  strncmp(http, "[::1]:", 6) == 0;
  char *token = NULL;
  if (token_file != NULL) {
    token = read_token(token_file);
    if (token == NULL) {
      kv_log(QRAFT_LOG_WARN, "cannot read a token from %s\n", token_file);
      return 2;
    }
  } else if (!loopback) {
    kv_log(QRAFT_LOG_WARN, "--http %s is not loopback: --token-file is "
                    "required\n", http);
    return 2;
  }
  if ((tls_cert == NULL) != (tls_key == NULL) ||
      (tls_client_ca != NULL && tls_cert == NULL)) {
    kv_log(QRAFT_LOG_WARN, "--tls-cert and --tls-key go together "
                    "(and --tls-client-ca needs them)\n");
    return 2;
  }
  if (!loopback && tls_cert == NULL && !insecure_token) {
    kv_log(QRAFT_LOG_WARN,
            "--http %s is not loopback and has no TLS: the bearer "
            "token would cross the network in clear. Give --tls-cert and "
            "--tls-key, or --insecure-token to accept that\n", http);
    return 2;
  }
  kv_http_tls tls = {0};
  char *tls_text[3] = {NULL, NULL, NULL};
  if (tls_cert != NULL) {
    if (!MHD_is_feature_supported(MHD_FEATURE_TLS)) {
      kv_log(QRAFT_LOG_WARN, "this libmicrohttpd has no TLS\n");
      return 2;
    }
    const char *files[3] = {tls_cert, tls_key, tls_client_ca};
    for (int k = 0; k < 3; k++) {
      if (files[k] != NULL && (tls_text[k] = read_text(files[k])) == NULL) {
        kv_log(QRAFT_LOG_WARN, "cannot read %s: %s\n", files[k],
                strerror(errno));
        for (int j = 0; j < k; j++) free(tls_text[j]);
        return 2;
      }
    }
    tls = (kv_http_tls){tls_text[0], tls_text[1], tls_text[2]};
  }
  /* this member's own requests to others (join, registration) */
  if (cacert != NULL || tls_cert != NULL) {
    char tmsg[400];
    if (kv_tls_client_setup(cacert, tls_cert, tls_key, tmsg, sizeof tmsg) != 0) {
      kv_log(QRAFT_LOG_WARN, "%s\n", tmsg);
      return 2;
    }
  }

  qraft_err err;
  qraft_err_init(&err, 0);
  qraft_secret_key key;
  struct stat kst;
  if (stat(keyfile, &kst) != 0 && errno == ENOENT) {
    if (qraft_secret_key_generate(&key) != 0 ||
        qraft_secret_key_save(&key, keyfile, &err) != 0) {
      qraft_err_print(&err, stderr);
      return 1;
    }
  } else if (qraft_secret_key_load(&key, keyfile, &err) != 0) {
    qraft_err_print(&err, stderr);
    return 1;
  }
  char hex[QRAFT_NODE_ID_HEX_SIZE];
  qraft_node_id_to_hex(&key.public_key, hex);

  if (mkdir(data, 0700) != 0 && errno != EEXIST) {
    kv_log(QRAFT_LOG_WARN, "mkdir %s: %s\n", data, strerror(errno));
    return 1;
  }
  char kvdir[1024], raftdir[1024];
  snprintf(kvdir, sizeof kvdir, "%s/kv", data);
  snprintf(raftdir, sizeof raftdir, "%s/raft", data);
  kv_server srv = {0};
  uint32_t tick = tick_ms != 0 ? tick_ms : 10;
  if ((election_ms != 0 && (election_ms % tick != 0 || election_ms / tick < 3)) ||
      (heartbeat_ms != 0 && heartbeat_ms % tick != 0)) {
    kv_log(QRAFT_LOG_WARN, "--election-ms and --heartbeat-ms must be "
                    "multiples of --tick-ms (%u), the election timeout at "
                    "least 3 ticks\n", tick);
    return 2;
  }
  char msg[512];
  if (kv_store_open(kvdir, sync_ms, map_bytes, &srv.store, msg, sizeof msg) !=
      0) {
    kv_log(QRAFT_LOG_WARN, "%s\n", msg);
    return 1;
  }
  bool fresh = kv_store_applied(srv.store) == 0;
  /* The data folder's format and cluster (qraft-kv.meta). A folder without
   * it is fresh, or of format 0 (before the file existed): it gets one. */
  uint32_t format = 0;
  uint64_t stored = 0;
  int m = kv_data_meta_read(data, &format, &stored, msg, sizeof msg);
  if (m < 0) {
    kv_log(QRAFT_LOG_WARN, "%s\n", msg);
    kv_store_close(srv.store);
    return 2;
  }
  if (m == 0 && format != KV_DATA_FORMAT) {
    kv_log(QRAFT_LOG_WARN,
            "%s holds data of format %u; this qraft-kv reads "
            "format %u only. Run the qraft-kv that wrote it, or upgrade "
            "one version at a time (docs/operations.md, \"Upgrades\")\n",
            data, format, KV_DATA_FORMAT);
    kv_store_close(srv.store);
    return 2;
  }
  if (m == 0) {
    if (cluster_given && cluster_id != stored) {
      kv_log(QRAFT_LOG_WARN,
              "--cluster-id %016llx, but %s belongs to cluster "
              "%016llx\n",
              (unsigned long long)cluster_id, data,
              (unsigned long long)stored);
      kv_store_close(srv.store);
      return 2;
    }
    cluster_id = stored;
  } else {
    if (fresh && join != NULL && !cluster_given) {
      /* never guessed: a wrong id written here would stay */
      uint64_t c = remote_cluster(join, token);
      if (c == 0) {
        kv_log(QRAFT_LOG_ERROR,
               "could not learn the cluster id from %s (no answer to "
               "/v1/status); nothing was written. Start again once it "
               "answers, or give --cluster-id", join);
        kv_store_close(srv.store);
        return 1;
      }
      cluster_id = c;
    }
    if (kv_data_meta_write(data, cluster_id, msg, sizeof msg) != 0) {
      kv_log(QRAFT_LOG_WARN, "%s\n", msg);
      kv_store_close(srv.store);
      return 1;
    }
    if (!fresh) { /* once in a folder's life: said even with --quiet */
      kv_log(QRAFT_LOG_WARN, "%s upgraded from data format 0 to %u "
                      "(cluster %016llx)\n", data, KV_DATA_FORMAT,
              (unsigned long long)cluster_id);
    }
  }
  srv.cluster_id = cluster_id;

  qraft_node_config cfg;
  qraft_node_config_default(&cfg);
  cfg.data_dir = raftdir;
  cfg.key = &key;
  cfg.cluster_id = cluster_id;
  cfg.bind_n = 1;
  if (kv_parse_hostport(raft, &cfg.bind[0]) != 0) {
    kv_log(QRAFT_LOG_WARN, "bad --raft %s\n", raft);
    return 2;
  }
  cfg.relays_n = relays_n;
  memcpy(cfg.relays, relays, sizeof cfg.relays);
  cfg.discovery_file = disc_file;
  cfg.sm = kv_store_ops();
  cfg.sm_ud = srv.store;
  cfg.tick_ms = tick_ms;
  cfg.election_ticks = election_ms / (tick_ms != 0 ? tick_ms : 10);
  cfg.heartbeat_ticks = heartbeat_ms / (tick_ms != 0 ? tick_ms : 10);
  cfg.snapshot_entries = snapshot_entries;
  cfg.snapshot_log_bytes = snapshot_log_bytes;
  cfg.space_reserve_bytes =
      space_reserve == 0 ? QRAFT_NODE_SPACE_RESERVE_NONE : space_reserve;
  int rv = qraft_node_new(&cfg, &srv.node, &err);
  if (rv != 0) {
    qraft_err_print(&err, stderr);
    kv_store_close(srv.store);
    return 1;
  }
  if (force_new > 0) {
    rv = force_new_cluster(&srv, &cfg, force_new, election_ms, quiet);
    if (rv != 0) {
      qraft_node_free(srv.node);
      kv_store_close(srv.store);
      return rv;
    }
  }
  /* the state's LMDB raises the node's alarm when it has no room or its
   * file system is below the reserve */
  kv_store_watch_space(srv.store, space_reserve, store_alarm, srv.node);
  if (bootstrap != NULL) {
    qraft_node_addr members[QRAFT_NODE_MEMBERS_MAX];
    size_t n = 0;
    if (kv_parse_members(bootstrap, relays, relays_n, disc_file != NULL,
                         members, &n) != 0) {
      return 2;
    }
    qraft_err_init(&err, 0);
    rv = qraft_node_bootstrap(srv.node, members, n, &err);
    if (rv == QRAFT_ESTATE) {
      fresh = false; /* a restart: the store already holds the cluster */
    } else if (rv != 0) {
      qraft_err_print(&err, stderr);
      return 1;
    }
  }
  if (qraft_node_start(srv.node) != 0) {
    kv_log(QRAFT_LOG_WARN, "node start failed\n");
    return 1;
  }
  void *daemon = NULL;
  int hrv = kv_http_start(&srv, http, token, &tls, &daemon);
  for (int k = 0; k < 3; k++) free(tls_text[k]);
  if (hrv != 0) {
    kv_log(QRAFT_LOG_WARN, "cannot serve HTTP on %s\n", http);
    kv_store_watch_space(srv.store, 0, NULL, NULL);
    qraft_node_free(srv.node);
    kv_store_close(srv.store);
    return 1;
  }
  char url[300];
  if (advertise != NULL) {
    snprintf(url, sizeof url, "%s", advertise);
  } else {
    snprintf(url, sizeof url, "%s://%s", tls_cert != NULL ? "https" : "http",
             http);
  }
  signal(SIGPIPE, SIG_IGN);
  struct sigaction sa = {0};
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  if (!quiet) {
    printf("qraft-kv: node %s raft %s http %s\n", hex, raft, url);
    fflush(stdout);
  }
  int exit_code = 0;
  if (join != NULL && fresh) {
    /* our relays, as the JSON strings "ID@HOST:PORT" */
    char rl[600] = "";
    for (uint32_t k = 0; k < relays_n; k++) {
      char rh[QRAFT_NODE_ID_HEX_SIZE], ra[80];
      qraft_node_id_to_hex(&relays[k].id, rh);
      kv_format_addr(&relays[k].addr, ra, sizeof ra);
      size_t o = strlen(rl);
      snprintf(rl + o, sizeof rl - o, "%s\"%s@%s\"", k ? "," : "", rh, ra);
    }
    if (join_cluster(&srv, join, token, hex, raft, rl) != 0) {
      kv_log(QRAFT_LOG_WARN, "could not join through %s\n", join);
      exit_code = 1;
      stop_flag = 1;
    } else if (!quiet) {
      printf("qraft-kv: joined the cluster through %s\n", join);
      fflush(stdout);
    }
  }
  int ticks = 0;
  while (!stop_flag) {
    usleep(100 * 1000);
    if (++ticks % 5 == 0) {
      qraft_node_status st;
      qraft_node_status_get(srv.node, &st);
      if (st.stopped_on != 0) {
        kv_log(QRAFT_LOG_ERROR,
                "fatal: the node stopped after a storage failure "
                "(%s; its log above says where); stopping with status %d. "
                "Nothing acknowledged is lost: restart once the disk is "
                "sound (docs/kv.md, \"A full disk\")\n",
                qraft_strerror(st.stopped_on), KV_EXIT_STORAGE);
        exit_code = KV_EXIT_STORAGE;
        break;
      }
      bool member = false;
      for (uint32_t i = 0; i < st.members_n; i++) {
        member = member || st.members[i].id == st.id;
      }
      if (st.leader != 0 && member) {
        register_http(&srv, hex, url);
      }
    }
  }
  /* the HTTP API keeps answering (503 with the new leader) meanwhile */
  static handover ho = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
                        false, 0};
  if (exit_code == 0) {
    hand_over(srv.node, &ho, 2000, quiet);
  }
  kv_http_stop(daemon);
  kv_store_watch_space(srv.store, 0, NULL, NULL);
  qraft_node_free(srv.node);
  kv_store_close(srv.store);
  qraft_secret_key_wipe(&key);
  free(token);
  if (!quiet) {
    printf("qraft-kv: stopped\n");
  }
  return exit_code;
}
