/*
 * The qraft-kv client: one command per run, over plain HTTP/1.1 sockets to
 * any member. Also the load generator of the demo (`load`) and the
 * concurrent workload of the end-to-end tests (`workload`), which records a
 * JSON-lines history for qraft-lincheck (docs/lincheck.md).
 */
#include "kv.h"

#include <jansson.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- HTTP ---- */

int kv_wait_fd(int fd, short ev, uint64_t deadline_ns) {
  for (;;) {
    uint64_t now = kv_now_ns();
    if (now >= deadline_ns) return 0;
    struct pollfd p = {.fd = fd, .events = ev};
    int ms = (int)((deadline_ns - now) / 1000000) + 1;
    int rv = poll(&p, 1, ms);
    if (rv > 0) return 1;
    if (rv < 0 && errno != EINTR) return -1;
  }
}

/* Connects to "host:port" before the deadline. Returns the socket or -1. */
static int http_connect(const char *hp, uint64_t deadline) {
  struct sockaddr_storage sa;
  if (kv_parse_hostport(hp, &sa) != 0) return -1;
  int fd = socket(sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  socklen_t sl = sa.ss_family == AF_INET ? sizeof(struct sockaddr_in)
                                         : sizeof(struct sockaddr_in6);
  if (connect(fd, (struct sockaddr *)&sa, sl) != 0) {
    if (errno != EINPROGRESS || kv_wait_fd(fd, POLLOUT, deadline) != 1) {
      close(fd);
      return -1;
    }
    int e = 0;
    socklen_t el = sizeof e;
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el);
    if (e != 0) {
      close(fd);
      return -1;
    }
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

/* A connection to a member: plain TCP, or TLS over it (https://). */
typedef struct kv_sock {
  int fd;    /* -1: none */
  void *tls; /* the TLS session, or NULL */
} kv_sock;

/* Connects to "host:port" (with TLS if `tls`) before the deadline.
 * Returns 0, or -1 (a TLS failure is said on stderr). */
static int sock_open(kv_sock *k, const char *hp, bool tls, uint64_t deadline) {
  k->tls = NULL;
  k->fd = http_connect(hp, deadline);
  if (k->fd < 0) return -1;
  if (tls) {
    char msg[400];
    k->tls = kv_tls_client_open(k->fd, hp, deadline, msg, sizeof msg);
    if (k->tls == NULL) {
      fprintf(stderr, "qraft-kv: %s\n", msg);
      close(k->fd);
      k->fd = -1;
      return -1;
    }
  }
  return 0;
}

static void sock_close(kv_sock *k) {
  if (k->fd < 0) return;
  kv_tls_close(k->tls);
  close(k->fd);
  k->fd = -1;
  k->tls = NULL;
}

static ssize_t sock_send(kv_sock *k, const void *p, size_t n, int flags) {
  if (k->tls != NULL) return kv_tls_send(k->tls, p, n);
  return send(k->fd, p, n, MSG_NOSIGNAL | flags);
}

static ssize_t sock_recv(kv_sock *k, void *p, size_t n) {
  if (k->tls != NULL) return kv_tls_recv(k->tls, p, n);
  return recv(k->fd, p, n, 0);
}

static int sock_wait(kv_sock *k, short ev, uint64_t deadline) {
  if (k->tls != NULL && ev == POLLIN && kv_tls_pending(k->tls)) return 1;
  return kv_wait_fd(k->fd, ev, deadline);
}

/* "http://host:port[/...]" or "https://..." into "host:port"; *tls says
 * which. */
static void url_split(const char *url, char *hp, size_t n, bool *tls) {
  *tls = strncmp(url, "https://", 8) == 0;
  if (*tls) url += 8;
  else if (strncmp(url, "http://", 7) == 0) url += 7;
  snprintf(hp, n, "%s", url);
  char *slash = strchr(hp, '/');
  if (slash) *slash = 0;
}

/* The value of header `name` (case-insensitive) in the header block
 * `head` (NUL-terminated), or NULL. */
static const char *header_value(const char *head, const char *name) {
  size_t nl = strlen(name);
  for (const char *l = strstr(head, "\r\n"); l != NULL;
       l = strstr(l + 2, "\r\n")) {
    const char *h = l + 2;
    if (strncasecmp(h, name, nl) == 0 && h[nl] == ':') {
      h += nl + 1;
      while (*h == ' ' || *h == '\t') h++;
      return h;
    }
  }
  return NULL;
}

/* One request and its answer on a connected socket. With `keep`, asks to
 * keep the connection and reads exactly the answer's Content-Length;
 * *reusable then says whether the connection may carry the next request.
 * *got_any says whether any byte of an answer came. Returns the status,
 * or -1 if nothing was sent, or -2 if the answer is missing (outcome
 * unknown). */
static int http_exchange(kv_sock *k, const char *hp, const char *method,
                         const char *path, const char *token, const char *body,
                         bool keep, uint64_t deadline, char **resp,
                         bool *reusable, bool *got_any) {
  *resp = NULL;
  *reusable = false;
  *got_any = false;
  size_t bl = body ? strlen(body) : 0;
  char auth[600] = "";
  if (token) snprintf(auth, sizeof auth, "Authorization: Bearer %s\r\n", token);
  char head[2048];
  int hl = snprintf(head, sizeof head,
                    "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: %s\r\n%s"
                    "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                    method, path, hp, keep ? "keep-alive" : "close", auth, bl);
  if (hl < 0 || (size_t)hl >= sizeof head) return -1;
  const char *parts[2] = {head, body};
  size_t lens[2] = {(size_t)hl, bl};
  bool sent_any = false;
  for (int p = 0; p < 2; p++) {
    size_t off = 0;
    while (off < lens[p]) {
      ssize_t w = sock_send(k, parts[p] + off, lens[p] - off,
                            p == 0 && bl > 0 ? MSG_MORE : 0);
      if (w > 0) {
        off += (size_t)w;
        sent_any = true;
      } else if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
        if (sock_wait(k, POLLOUT, deadline) != 1) return sent_any ? -2 : -1;
      } else {
        return sent_any ? -2 : -1;
      }
    }
  }
  size_t cap = 4096, n = 0, want = SIZE_MAX, body_at = 0;
  bool closes = !keep;
  char *buf = malloc(cap);
  if (buf == NULL) return -2;
  while (n < want) {
    if (n + 1 >= cap) {
      char *nb = realloc(buf, cap * 2);
      if (nb == NULL) break;
      buf = nb;
      cap *= 2;
    }
    ssize_t r = sock_recv(k, buf + n, cap - n - 1);
    if (r > 0) {
      n += (size_t)r;
      *got_any = true;
      buf[n] = 0;
      if (body_at == 0) {
        char *sep = strstr(buf, "\r\n\r\n");
        if (sep != NULL) {
          body_at = (size_t)(sep + 4 - buf);
          *sep = 0; /* the header block alone, for header_value */
          const char *cl = header_value(buf, "Content-Length");
          const char *conn = header_value(buf, "Connection");
          if (conn != NULL && strncasecmp(conn, "close", 5) == 0) closes = true;
          if (cl != NULL) {
            char *e;
            unsigned long long v = strtoull(cl, &e, 10);
            if (e != cl && v < SIZE_MAX - body_at) want = body_at + (size_t)v;
          } else {
            closes = true; /* the answer ends where the connection does */
          }
          *sep = '\r';
        }
      }
    } else if (r == 0) {
      break;
    } else if (errno == EAGAIN || errno == EINTR) {
      if (sock_wait(k, POLLIN, deadline) != 1) {
        free(buf);
        return -2;
      }
    } else {
      free(buf);
      return -2;
    }
  }
  buf[n] = 0;
  int status = 0;
  if (body_at == 0 || (want != SIZE_MAX && n < want) ||
      sscanf(buf, "HTTP/1.%*d %d", &status) != 1) {
    free(buf);
    return -2;
  }
  memmove(buf, buf + body_at, n - body_at + 1);
  *resp = buf;
  *reusable = !closes && want != SIZE_MAX;
  return status;
}

int kv_http_request(const char *url, const char *method, const char *path,
                    const char *token, const char *body, int timeout_ms,
                    char **resp) {
  *resp = NULL;
  char hp[300];
  bool tls;
  url_split(url, hp, sizeof hp, &tls);
  uint64_t deadline = kv_now_ns() + (uint64_t)timeout_ms * 1000000ull;
  kv_sock k;
  if (sock_open(&k, hp, tls, deadline) != 0) return -1;
  bool reusable, got_any;
  int st = http_exchange(&k, hp, method, path, token, body, false, deadline,
                         resp, &reusable, &got_any);
  sock_close(&k);
  return st;
}

/* A keep-alive connection to one member, for the bench: one request at a
 * time, reconnecting when the member closed it. */
typedef struct kv_conn {
  char hp[300];
  bool tls;
  kv_sock sock; /* fd -1: not connected */
} kv_conn;

static void kv_conn_init(kv_conn *k, const char *url) {
  url_split(url, k->hp, sizeof k->hp, &k->tls);
  k->sock.fd = -1;
  k->sock.tls = NULL;
}

static void kv_conn_close(kv_conn *k) { sock_close(&k->sock); }

/* As kv_http_request, over the kept connection. A kept connection the
 * member closed while it was idle fails before any answer; the request is
 * then sent once more on a new connection, so use it only for requests
 * that may be repeated (the bench's puts of fixed values and its gets). */
static int kv_conn_request(kv_conn *k, const char *method, const char *path,
                           const char *token, const char *body, int timeout_ms,
                           char **resp) {
  uint64_t deadline = kv_now_ns() + (uint64_t)timeout_ms * 1000000ull;
  for (int attempt = 0; attempt < 2; attempt++) {
    bool fresh = k->sock.fd < 0;
    if (fresh && sock_open(&k->sock, k->hp, k->tls, deadline) != 0) return -1;
    bool reusable, got_any;
    int st = http_exchange(&k->sock, k->hp, method, path, token, body, true,
                           deadline, resp, &reusable, &got_any);
    if (st >= 0 && reusable) return st;
    kv_conn_close(k);
    if (st >= 0 || fresh || got_any) return st;
  }
  return -2;
}

/* ---- the command line ---- */

typedef struct opts {
  char servers[2048];
  char *token;
  bool json;
  bool stale;
  int timeout_ms;
} opts;

/* Sends to each server in turn until one answers (a connect failure moves
 * on; anything else is the answer). Follows a 503's leader_http once when
 * `follow` is set (membership and transfer run on the leader). */
static int request(const opts *o, const char *method, const char *path,
                   const char *body, bool follow, char **resp) {
  char list[2048];
  snprintf(list, sizeof list, "%s", o->servers);
  char *save = NULL;
  int st = -1;
  for (char *u = strtok_r(list, ",", &save); u; u = strtok_r(NULL, ",", &save)) {
    st = kv_http_request(u, method, path, o->token, body, o->timeout_ms, resp);
    if (st != -1) break;
  }
  if (follow && st == 503 && *resp) {
    json_t *j = json_loads(*resp, 0, NULL);
    const char *lh = j ? json_string_value(json_object_get(j, "leader_http")) : NULL;
    if (lh && lh[0]) {
      char target[300];
      snprintf(target, sizeof target, "%s", lh);
      free(*resp);
      *resp = NULL;
      st = kv_http_request(target, method, path, o->token, body, o->timeout_ms,
                           resp);
    }
    json_decref(j);
  }
  return st;
}

/* ---- snapshot save: a backup streamed to a file ---- */

static int report_error(int st, const char *resp);

/* GET `path` from `url` (HTTP/1.0: the answer ends with the connection)
 * into fd. Returns the status (the body of a non-200 answer in *err_body,
 * to free), or -1 when nothing answered, -2 when the answer broke off
 * (no byte for `idle_ms`, or a failed read). */
static int http_download(const char *url, const char *path, const char *token,
                         int out, int idle_ms, char **err_body) {
  *err_body = NULL;
  char hp[300];
  bool tls;
  url_split(url, hp, sizeof hp, &tls);
  kv_sock k;
  if (sock_open(&k, hp, tls, kv_now_ns() + (uint64_t)idle_ms * 1000000ull) != 0) {
    return -1;
  }
  char auth[600] = "", head[2048];
  if (token) snprintf(auth, sizeof auth, "Authorization: Bearer %s\r\n", token);
  int hl = snprintf(head, sizeof head, "GET %s HTTP/1.0\r\nHost: %s\r\n%s\r\n",
                    path, hp, auth);
  uint64_t deadline = kv_now_ns() + (uint64_t)idle_ms * 1000000ull;
  size_t sent = 0;
  while (hl > 0 && (size_t)hl < sizeof head && sent < (size_t)hl) {
    ssize_t w = sock_send(&k, head + sent, (size_t)hl - sent, 0);
    if (w > 0) {
      sent += (size_t)w;
    } else if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
      if (sock_wait(&k, POLLOUT, deadline) != 1) break;
    } else {
      break;
    }
  }
  if (hl < 0 || (size_t)hl >= sizeof head || sent < (size_t)hl) {
    sock_close(&k);
    return -1;
  }
  char buf[65536];
  size_t n = 0;
  int status = 0;
  bool in_body = false;
  char *ebody = NULL;
  size_t elen = 0;
  for (;;) {
    if (sock_wait(&k, POLLIN, kv_now_ns() + (uint64_t)idle_ms * 1000000ull) != 1) {
      status = -2;
      break;
    }
    ssize_t rd = sock_recv(&k, buf + n, sizeof buf - n - 1);
    if (rd < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (rd <= 0) {
      if (rd < 0 || !in_body) status = -2;
      break;
    }
    n += (size_t)rd;
    size_t from = 0;
    if (!in_body) {
      buf[n] = 0;
      char *sep = strstr(buf, "\r\n\r\n");
      if (sep == NULL) {
        if (n + 1 >= sizeof buf) { status = -2; break; }
        continue;
      }
      if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1) { status = -2; break; }
      in_body = true;
      from = (size_t)(sep + 4 - buf);
    }
    size_t k = n - from;
    if (status == 200) {
      for (size_t off = 0; off < k;) {
        ssize_t w = write(out, buf + from + off, k - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) { status = -3; break; }
        off += (size_t)w;
      }
      if (status == -3) break;
    } else if (elen < 4096) {
      char *nb = realloc(ebody, elen + k + 1);
      if (nb != NULL) {
        memcpy(nb + elen, buf + from, k);
        elen += k;
        nb[elen] = 0;
        ebody = nb;
      }
    }
    n = 0;
  }
  sock_close(&k);
  if (status != 200) *err_body = ebody;
  else free(ebody);
  return status;
}

static int snapshot_save(const opts *o, const char *file) {
  char part[4200];
  snprintf(part, sizeof part, "%s.part", file);
  char list[2048];
  snprintf(list, sizeof list, "%s", o->servers);
  char *save = NULL;
  int st = -1;
  char *ebody = NULL;
  for (char *u = strtok_r(list, ",", &save); u; u = strtok_r(NULL, ",", &save)) {
    int fd = open(part, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
      fprintf(stderr, "qraft-kv: %s: %s\n", part, strerror(errno));
      return 1;
    }
    free(ebody);
    ebody = NULL;
    st = http_download(u, o->stale ? "/v1/snapshot?stale=1" : "/v1/snapshot",
                       o->token, fd, o->timeout_ms > 30000 ? o->timeout_ms : 30000,
                       &ebody);
    bool synced = st == 200 && fsync(fd) == 0;
    close(fd);
    if (st == 200 && !synced) {
      fprintf(stderr, "qraft-kv: %s: %s\n", part, strerror(errno));
      unlink(part);
      return 1;
    }
    if (st == 200 || st == -3 || (st != -1 && st != 503 && st != -2)) break;
  }
  if (st != 200) {
    unlink(part);
    int rv = 1;
    if (st == -3) {
      fprintf(stderr, "qraft-kv: writing %s failed: %s\n", part, strerror(errno));
    } else if (st == -2) {
      fprintf(stderr, "qraft-kv: the backup broke off; nothing was saved\n");
    } else {
      rv = report_error(st, ebody);
    }
    free(ebody);
    return rv;
  }
  free(ebody);
  char msg[600];
  kv_backup_info info;
  if (kv_backup_verify(part, &info, msg, sizeof msg) != 0) {
    fprintf(stderr, "qraft-kv: the backup received is not whole (%s); "
                    "nothing was saved\n", msg);
    unlink(part);
    return 1;
  }
  if (rename(part, file) != 0) {
    fprintf(stderr, "qraft-kv: rename %s: %s\n", part, strerror(errno));
    unlink(part);
    return 1;
  }
  char dir[4200];
  snprintf(dir, sizeof dir, "%s", file);
  char *slash = strrchr(dir, '/');
  if (slash == NULL) snprintf(dir, sizeof dir, ".");
  else if (slash == dir) dir[1] = 0;
  else *slash = 0;
  int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)fsync(dfd);
    close(dfd);
  }
  if (o->json) {
    printf("{\"file\":\"%s\",\"cluster_id\":\"%016llx\",\"index\":%llu,"
           "\"keys\":%llu,\"digest\":\"%016llx\",\"state_bytes\":%llu}\n",
           file, (unsigned long long)info.cluster_id,
           (unsigned long long)info.index, (unsigned long long)info.keys,
           (unsigned long long)info.digest,
           (unsigned long long)info.state_bytes);
  } else {
    printf("saved %s: cluster %016llx, index %llu, %llu keys (digest "
           "%016llx), %llu bytes of state\n",
           file, (unsigned long long)info.cluster_id,
           (unsigned long long)info.index, (unsigned long long)info.keys,
           (unsigned long long)info.digest,
           (unsigned long long)info.state_bytes);
  }
  return 0;
}

static int report_error(int st, const char *resp) {
  if (st == -1) {
    fprintf(stderr, "qraft-kv: no server answered (is a member running?)\n");
    return 1;
  }
  if (st == -2) {
    fprintf(stderr, "qraft-kv: no answer in time; the outcome is unknown\n");
    return 1;
  }
  json_t *j = json_loads(resp ? resp : "", 0, NULL);
  const char *code = j ? json_string_value(json_object_get(j, "code")) : NULL;
  const char *msg = j ? json_string_value(json_object_get(j, "message")) : NULL;
  const char *lh = j ? json_string_value(json_object_get(j, "leader_http")) : NULL;
  fprintf(stderr, "qraft-kv: %d %s: %s%s%s\n", st, code ? code : "error",
          msg ? msg : (resp ? resp : ""), lh ? " (leader at " : "",
          lh ? lh : "");
  if (lh) fprintf(stderr, ")\n");
  json_decref(j);
  return st == 409 ? 3 : 1;
}

static char *url_escape(const char *s) {
  size_t n = strlen(s);
  char *o = malloc(n * 3 + 1), *p = o;
  if (o == NULL) return NULL;
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
        (ch >= '0' && ch <= '9') || strchr("-_.~/", ch)) {
      *p++ = (char)ch;
    } else {
      p += sprintf(p, "%%%02X", ch);
    }
  }
  *p = 0;
  return o;
}

static int client_usage(void) {
  fprintf(stderr,
          "usage: qraft-kv COMMAND [--server URL[,URL...]] [--token-file F] "
          "[--json]\n"
          "  put KEY VALUE                 write\n"
          "  get KEY [--stale]             read (linearizable unless --stale)\n"
          "  del KEY                       delete\n"
          "  cas KEY NEW (--rev N | --value OLD | --absent)\n"
          "  list [PREFIX] [--stale]       keys with a prefix\n"
          "  status                        this member's view of the cluster\n"
          "  digest                        keys and digest of the state (reads it all)\n"
          "  members                       list members\n"
          "  members add ID HOST:PORT [--learner]\n"
          "  members remove ID\n"
          "  transfer [ID]                 move leadership (default: best voter)\n"
          "  load --count N [--prefix P] [--progress]   sequential writes\n"
          "  snapshot save FILE [--stale]  a backup of the whole state from any\n"
          "                                member (linearizable unless --stale),\n"
          "                                checked before it is kept\n"
          "  snapshot info FILE            check a backup whole and describe it\n"
          "  bench --clients C (--count N | --seconds S) [--value-bytes B]\n"
          "        [--op put|get] [--stale] [--target qraft-kv|etcd]\n"
          "        [--prefix P]            (keys P<client>-<i>; bench-)\n"
          "        [--quantiles FILE]      (the latency distribution)\n"
          "                                concurrent puts or gets; client i\n"
          "                                talks to server i mod n, keep-alive;\n"
          "                                etcd: its v3 JSON gateway\n"
          "  workload --clients N --seconds S --keys K --history FILE [--stale]\n"
          "  The server defaults to $QRAFT_KV_SERVER or http://127.0.0.1:8080.\n"
          "  https:// servers: --cacert FILE (the CA that signed the members'\n"
          "  certificates; default: the system's), and --cert FILE --key FILE\n"
          "  when the members ask for a client certificate.\n");
  return 2;
}

static int print_or_json(const opts *o, int st, char *resp, int (*fmt)(json_t *)) {
  if (st != 200) {
    int rv = report_error(st, resp);
    free(resp);
    return rv;
  }
  int rv = 0;
  if (o->json) {
    fputs(resp, stdout);
  } else {
    json_t *j = json_loads(resp, 0, NULL);
    rv = j ? fmt(j) : 1;
    json_decref(j);
  }
  free(resp);
  return rv;
}

static int fmt_write(json_t *j) {
  printf("ok rev %lld\n", (long long)json_integer_value(json_object_get(j, "rev")));
  return 0;
}
static int fmt_get(json_t *j) {
  const char *v = json_string_value(json_object_get(j, "value"));
  printf("%s\n", v ? v : "");
  return 0;
}
static int fmt_list(json_t *j) {
  size_t i;
  json_t *it;
  json_array_foreach(json_object_get(j, "items"), i, it) {
    printf("%s = %s  (rev %lld)\n", json_string_value(json_object_get(it, "key")),
           json_string_value(json_object_get(it, "value")),
           (long long)json_integer_value(json_object_get(it, "rev")));
  }
  if (json_is_true(json_object_get(j, "more"))) printf("... (more)\n");
  return 0;
}
static int fmt_members(json_t *j) {
  size_t i;
  json_t *m;
  json_array_foreach(json_object_get(j, "members"), i, m) {
    const char *id = json_string_value(json_object_get(m, "id"));
    const char *path = json_string_value(json_object_get(m, "path"));
    const char *addr = json_string_value(json_object_get(m, "addr"));
    const char *direct = json_string_value(json_object_get(m, "direct_addr"));
    printf("%.16s  %-7s %-21s %-24s %-6s%s%s%s\n", id ? id : "?",
           json_string_value(json_object_get(m, "role")),
           addr && addr[0] ? addr : "(relay)",
           json_string_value(json_object_get(m, "http")),
           path ? path : "self",
           json_is_true(json_object_get(m, "leader")) ? " leader" : "",
           direct ? "  reached at " : "", direct ? direct : "");
  }
  return 0;
}
static int fmt_status(json_t *j) {
  const char *id = json_string_value(json_object_get(j, "id"));
  const char *l = json_string_value(json_object_get(j, "leader"));
  printf("node    %s\nrole    %s\nleader  %.16s %s\nterm    %lld\n"
         "commit  %lld  applied %lld  last %lld  snapshot %lld\nmembers\n",
         id, json_string_value(json_object_get(j, "role")), l ? l : "",
         json_string_value(json_object_get(j, "leader_http")),
         (long long)json_integer_value(json_object_get(j, "term")),
         (long long)json_integer_value(json_object_get(j, "commit")),
         (long long)json_integer_value(json_object_get(j, "applied")),
         (long long)json_integer_value(json_object_get(j, "last_index")),
         (long long)json_integer_value(json_object_get(j, "snapshot_index")));
  int rv = fmt_members(j);
  size_t i;
  json_t *r;
  json_array_foreach(json_object_get(j, "relays"), i, r) {
    const char *rid = json_string_value(json_object_get(r, "id"));
    const char *ob = json_string_value(json_object_get(r, "observed_addr"));
    printf("relay   %.16s %s %s%s%s%s\n", rid ? rid : "?",
           json_string_value(json_object_get(r, "addr")),
           json_is_true(json_object_get(r, "connected")) ? "connected"
                                                         : "not connected",
           ob && ob[0] ? ", sees us at " : "", ob && ob[0] ? ob : "",
           json_is_true(json_object_get(r, "id_elsewhere"))
               ? " (our id is connected elsewhere)"
               : "");
  }
  return rv;
}
static int fmt_digest(json_t *j) {
  printf("keys    %lld  digest %s  applied %lld\n",
         (long long)json_integer_value(json_object_get(j, "keys")),
         json_string_value(json_object_get(j, "digest")),
         (long long)json_integer_value(json_object_get(j, "applied")));
  return 0;
}
static int fmt_raw(json_t *j) {
  char *s = json_dumps(j, JSON_INDENT(2));
  printf("%s\n", s ? s : "");
  free(s);
  return 0;
}

/* ---- load: sequential writes with a progress bar ---- */

static int cmd_load(const opts *o, long count, const char *prefix, bool progress) {
  uint64_t t0 = kv_now_ns();
  long failed = 0;
  for (long i = 0; i < count; i++) {
    char path[256], body[128];
    snprintf(path, sizeof path, "/v1/kv/%s%06ld", prefix, i);
    snprintf(body, sizeof body, "{\"value\":\"v%ld\"}", i);
    char *resp = NULL;
    int st = -1;
    for (int attempt = 0; attempt < 50; attempt++) {
      st = request(o, "PUT", path, body, false, &resp);
      if (st == 200) break;
      free(resp);
      resp = NULL;
      usleep(100 * 1000); /* no leader yet, or a timeout: a put is idempotent */
    }
    free(resp);
    if (st != 200) failed++;
    if (progress && ((i + 1) % 20 == 0 || i + 1 == count)) {
      int w = (int)((i + 1) * 40 / count);
      printf("\r   [%.*s%*s] %ld/%ld", w,
             "########################################", 40 - w, "", i + 1, count);
      fflush(stdout);
    }
  }
  double s = (double)(kv_now_ns() - t0) / 1e9;
  if (progress) printf("\n");
  printf("   %ld writes in %.2f s (%.0f/s), %ld failed\n", count, s,
         (double)count / s, failed);
  return failed == 0 ? 0 : 1;
}

/* ---- bench: concurrent puts or gets, throughput and latency ---- */

/* Each client keeps one connection (keep-alive) to one server of the list,
 * client i to server i mod n, and sends one request at a time. Puts write
 * bench-<client>-<i>; gets first write bench-get-<client>, then read it
 * (linearizable unless --stale). */
typedef struct bench_arg {
  const opts *o;
  const char *url;
  int id;
  const char *prefix; /* of the keys put: PREFIX<id>-<i> */
  long count;      /* requests, or until end_ns if end_ns != 0 */
  uint64_t end_ns; /* 0: run `count` requests */
  size_t value_bytes;
  bool get;
  bool etcd; /* speak etcd's v3 JSON gateway instead of our API */
  uint64_t *lat_ns; /* grows */
  long n, cap;
  long failed;
  int first_status; /* of the first failed request */
  char first_error[160];
} bench_arg;

/* Counts a request that did not answer 200; keeps the first one's words. */
static void bench_failed(bench_arg *a, int st, const char *resp) {
  if (a->failed == 0) {
    a->first_status = st;
    snprintf(a->first_error, sizeof a->first_error, "%.150s",
             resp ? resp : "(no answer)");
    a->first_error[strcspn(a->first_error, "\r\n")] = 0;
  }
  a->failed++;
}

static void bench_record(bench_arg *a, uint64_t ns, int st, const char *resp) {
  if (st != 200) {
    bench_failed(a, st, resp);
  }
  if (a->n == a->cap) {
    long cap = a->cap ? 2 * a->cap : 1024;
    uint64_t *l = realloc(a->lat_ns, (size_t)cap * sizeof *l);
    if (l == NULL) {
      if (st == 200) bench_failed(a, st, "out of memory for the latencies");
      return;
    }
    a->lat_ns = l;
    a->cap = cap;
  }
  a->lat_ns[a->n++] = ns;
}

static void b64(const char *in, size_t n, char *out) {
  static const char t[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  size_t o = 0;
  for (size_t i = 0; i < n; i += 3) {
    uint32_t v = (uint32_t)(uint8_t)in[i] << 16;
    if (i + 1 < n) v |= (uint32_t)(uint8_t)in[i + 1] << 8;
    if (i + 2 < n) v |= (uint8_t)in[i + 2];
    out[o++] = t[(v >> 18) & 63];
    out[o++] = t[(v >> 12) & 63];
    out[o++] = i + 1 < n ? t[(v >> 6) & 63] : '=';
    out[o++] = i + 2 < n ? t[v & 63] : '=';
  }
  out[o] = 0;
}

/* One bench request: a put of the client's value under `key`, or a get of
 * it (linearizable unless --stale), in our API or etcd's JSON gateway
 * (POST /v3/kv/put and /v3/kv/range, keys and values in base64; a range
 * is linearizable unless serializable). */
static int bench_request(bench_arg *a, kv_conn *k, bool get, const char *key,
                         const char *value_b64, const char *body,
                         char **resp) {
  if (!a->etcd) {
    char path[96];
    snprintf(path, sizeof path, "/v1/kv/%s%s", key,
             get && a->o->stale ? "?stale=1" : "");
    return kv_conn_request(k, get ? "GET" : "PUT", path, a->o->token,
                           get ? NULL : body, a->o->timeout_ms, resp);
  }
  char kb[128];
  b64(key, strlen(key), kb);
  size_t need = strlen(kb) + (value_b64 ? strlen(value_b64) : 0) + 64;
  char *req = malloc(need);
  if (req == NULL) return -2;
  if (get) {
    snprintf(req, need, "{\"key\":\"%s\"%s}", kb,
             a->o->stale ? ",\"serializable\":true" : "");
  } else {
    snprintf(req, need, "{\"key\":\"%s\",\"value\":\"%s\"}", kb, value_b64);
  }
  int st = kv_conn_request(k, "POST", get ? "/v3/kv/range" : "/v3/kv/put",
                           a->o->token, req, a->o->timeout_ms, resp);
  free(req);
  return st;
}

static void *bench_run(void *p) {
  bench_arg *a = p;
  char *body = malloc(a->value_bytes + 32);
  char *vb64 = malloc(a->value_bytes / 3 * 4 + 8);
  if (body == NULL || vb64 == NULL) {
    free(body);
    free(vb64);
    a->failed = 1;
    return NULL;
  }
  int bl = snprintf(body, 16, "{\"value\":\"");
  memset(body + bl, 'x', a->value_bytes);
  memcpy(body + bl + a->value_bytes, "\"}", 3);
  b64(body + bl, a->value_bytes, vb64);
  kv_conn k;
  kv_conn_init(&k, a->url);
  char key[64];
  if (a->get) {
    snprintf(key, sizeof key, "bench-get-%d", a->id);
    char *resp = NULL;
    int st = bench_request(a, &k, false, key, vb64, body, &resp);
    if (st != 200) bench_failed(a, st, resp); /* the setup write: not timed */
    free(resp);
    if (st != 200) {
      kv_conn_close(&k);
      free(body);
      free(vb64);
      return NULL;
    }
  }
  for (long i = 0; a->end_ns != 0 ? kv_now_ns() < a->end_ns : i < a->count;
       i++) {
    if (!a->get) snprintf(key, sizeof key, "%.40s%d-%ld", a->prefix, a->id, i);
    char *resp = NULL;
    uint64_t t0 = kv_now_ns();
    int st = bench_request(a, &k, a->get, key, vb64, body, &resp);
    bench_record(a, kv_now_ns() - t0, st, resp);
    free(resp);
  }
  kv_conn_close(&k);
  free(body);
  free(vb64);
  return NULL;
}

static int cmp_u64(const void *x, const void *y) {
  uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
  return a < b ? -1 : a > b;
}

/* count requests in all, or (seconds > 0) as many as fit in that time. */
/* Writes the latency distribution: 1000 lines "quantile milliseconds". */
static void write_quantiles(const char *path, const uint64_t *lat, long n) {
  FILE *f = fopen(path, "w");
  if (f == NULL) {
    fprintf(stderr, "bench: cannot write %s: %s\n", path, strerror(errno));
    return;
  }
  for (int q = 1; q <= 1000 && n > 0; q++) {
    long i = (long)((double)n * q / 1000.0) - 1;
    if (i < 0) i = 0;
    fprintf(f, "%.3f %.4f\n", q / 1000.0, (double)lat[i] / 1e6);
  }
  fclose(f);
}

static int cmd_bench(const opts *o, int clients, long count, int seconds,
                     size_t value_bytes, const char *op, const char *target,
                     const char *prefix, const char *quantiles) {
  bool get = strcmp(op, "get") == 0;
  bool etcd = strcmp(target, "etcd") == 0;
  if ((!etcd && strcmp(target, "qraft-kv") != 0) || clients < 1 || clients > 256 || (seconds <= 0 && count < clients) ||
      (!get && strcmp(op, "put") != 0) || value_bytes > KV_VALUE_BYTES_MAX) {
    return client_usage();
  }
  char list[2048];
  snprintf(list, sizeof list, "%s", o->servers);
  char *servers[16];
  int servers_n = 0;
  char *save = NULL;
  for (char *u = strtok_r(list, ",", &save); u && servers_n < 16;
       u = strtok_r(NULL, ",", &save)) {
    servers[servers_n++] = u;
  }
  if (servers_n == 0) return client_usage();
  long per = count / clients;
  bench_arg *args = calloc((size_t)clients, sizeof *args);
  pthread_t *th = calloc((size_t)clients, sizeof *th);
  if (args == NULL || th == NULL) {
    free(args);
    free(th);
    return 1;
  }
  uint64_t t0 = kv_now_ns();
  uint64_t end = seconds > 0 ? t0 + (uint64_t)seconds * 1000000000ull : 0;
  for (int i = 0; i < clients; i++) {
    args[i] = (bench_arg){.o = o, .url = servers[i % servers_n], .id = i,
                          .prefix = prefix, .count = per, .end_ns = end,
                          .value_bytes = value_bytes, .get = get,
                          .etcd = etcd};
    pthread_create(&th[i], NULL, bench_run, &args[i]);
  }
  long failed = 0, n = 0;
  for (int i = 0; i < clients; i++) {
    pthread_join(th[i], NULL);
    failed += args[i].failed;
    n += args[i].n;
  }
  double s = (double)(kv_now_ns() - t0) / 1e9;
  uint64_t *lat = calloc((size_t)(n > 0 ? n : 1), sizeof *lat);
  if (lat == NULL) {
    failed++;
    n = 0;
  }
  for (int i = 0, off = 0; lat != NULL && i < clients; i++) {
    memcpy(lat + off, args[i].lat_ns, (size_t)args[i].n * sizeof *lat);
    off += (int)args[i].n;
  }
  if (n > 0) qsort(lat, (size_t)n, sizeof *lat, cmp_u64);
  if (quantiles != NULL) write_quantiles(quantiles, lat, n);
  printf("bench: %d clients, %ld %s%s of %zu bytes in %.2f s: %.0f %s/s, "
         "p50 %.2f ms, p99 %.2f ms, max %.2f ms, %ld failed\n",
         clients, n, get && o->stale ? "stale " : "", get ? "gets" : "puts",
         value_bytes, s, (double)n / s, get ? "gets" : "puts",
         n > 0 ? (double)lat[n / 2] / 1e6 : 0.0,
         n > 0 ? (double)lat[n * 99 / 100] / 1e6 : 0.0,
         n > 0 ? (double)lat[n - 1] / 1e6 : 0.0, failed);
  for (int i = 0; i < clients; i++) {
    if (args[i].failed > 0) {
      fprintf(stderr, "bench: first failure (client %d): status %d: %s\n",
              i, args[i].first_status, args[i].first_error);
      break;
    }
  }
  for (int i = 0; i < clients; i++) free(args[i].lat_ns);
  free(lat);
  free(args);
  free(th);
  return failed == 0 ? 0 : 1;
}

/* ---- workload: concurrent clients recording a history ---- */

typedef struct wl {
  const opts *o;
  char **servers;
  int servers_n;
  int keys;
  uint64_t end_ns;
  FILE *out;
  pthread_mutex_t mu;
  long ops, oks, fails, infos;
} wl;

typedef struct wl_client {
  wl *w;
  int id;
  unsigned seed;
} wl_client;

static void hist(wl *w, int proc, const char *type, const char *f,
                 const char *key, json_t *value, const char *result,
                 uint64_t t) {
  json_t *j = json_pack("{s:i, s:s, s:s, s:s}", "process", proc, "type", type,
                        "f", f, "key", key);
  json_object_set(j, "value", value ? value : json_null());
  if (result) json_object_set_new(j, "result", json_string(result));
  json_object_set_new(j, "time", json_integer((json_int_t)t));
  char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
  json_decref(j);
  pthread_mutex_lock(&w->mu);
  fprintf(w->out, "%s\n", s);
  if (strcmp(type, "invoke") != 0) {
    w->ops++;
    if (strcmp(type, "ok") == 0) w->oks++;
    else if (strcmp(type, "fail") == 0) w->fails++;
    else w->infos++;
  }
  pthread_mutex_unlock(&w->mu);
  free(s);
}

/* "none" in a 503 or a 507 means the request was refused before it was
 * proposed. */
static bool refused(const char *resp) {
  json_t *j = json_loads(resp ? resp : "", 0, NULL);
  const char *oc = j ? json_string_value(json_object_get(j, "outcome")) : NULL;
  bool r = oc && strcmp(oc, "none") == 0;
  json_decref(j);
  return r;
}

static void *wl_run(void *p) {
  wl_client *c = p;
  wl *w = c->w;
  long n = 0;
  json_t *last[64] = {0};
  int gen = 0; /* a process whose operation ended "info" is never reused */
  while (kv_now_ns() < w->end_ns) {
    int proc = c->id + 1000 * gen;
    int k = (int)(rand_r(&c->seed) % (unsigned)w->keys);
    char key[16], path[64];
    snprintf(key, sizeof key, "k%d", k);
    snprintf(path, sizeof path, "/v1/kv/%s", key);
    const char *url = w->servers[rand_r(&c->seed) % (unsigned)w->servers_n];
    int dice = (int)(rand_r(&c->seed) % 10);
    char val[48];
    snprintf(val, sizeof val, "c%d-%ld", c->id, n++);
    char *resp = NULL;
    int tmo = 3000;
    if (dice < 4) {
      hist(w, proc, "invoke", "get", key, NULL, NULL, kv_now_ns());
      if (w->o->stale) {
        strcat(path, "?stale=1"); /* the canary: local reads, no barrier */
      }
      int st = kv_http_request(url, "GET", path, w->o->token, NULL, tmo, &resp);
      uint64_t t = kv_now_ns();
      if (st == 200) {
        json_t *j = json_loads(resp, 0, NULL);
        json_t *v = j ? json_object_get(j, "value") : NULL;
        hist(w, proc, "ok", "get", key, v, NULL, t);
        if (v) {
          json_decref(last[k]);
          last[k] = json_incref(v);
        }
        json_decref(j);
      } else if (st == 404) {
        hist(w, proc, "ok", "get", key, NULL, NULL, t);
      } else {
        hist(w, proc, "fail", "get", key, NULL, NULL, t);
      }
    } else if (dice < 8) {
      json_t *v = json_string(val);
      char body[128];
      snprintf(body, sizeof body, "{\"value\":\"%s\"}", val);
      hist(w, proc, "invoke", "put", key, v, NULL, kv_now_ns());
      int st = kv_http_request(url, "PUT", path, w->o->token, body, tmo, &resp);
      uint64_t t = kv_now_ns();
      const char *type = st == 200 ? "ok"
                         : (st == -1 || ((st == 503 || st == 507) &&
                                         refused(resp)))
                             ? "fail"
                                                                      : "info";
      hist(w, proc, type, "put", key, v, NULL, t);
      gen += type[0] == 'i';
      json_decref(v);
    } else {
      json_t *exp = last[k] ? json_incref(last[k]) : json_null();
      json_t *pair = json_pack("[O, s]", exp, val);
      char *ebody = json_dumps(exp, JSON_ENCODE_ANY);
      char body[256];
      if (json_is_null(exp)) {
        snprintf(body, sizeof body, "{\"value\":\"%s\",\"prev_exists\":false}", val);
      } else {
        snprintf(body, sizeof body, "{\"value\":\"%s\",\"prev_value\":%s}", val,
                 ebody);
      }
      free(ebody);
      hist(w, proc, "invoke", "cas", key, pair, NULL, kv_now_ns());
      int st = kv_http_request(url, "PUT", path, w->o->token, body, tmo, &resp);
      uint64_t t = kv_now_ns();
      if (st == 200) {
        hist(w, proc, "ok", "cas", key, pair, "ok", t);
      } else if (st == 409) {
        hist(w, proc, "ok", "cas", key, pair, "failed", t);
      } else {
        bool none =
            st == -1 || ((st == 503 || st == 507) && refused(resp));
        hist(w, proc, none ? "fail" : "info", "cas", key, pair, NULL, t);
        gen += !none;
      }
      json_decref(pair);
      json_decref(exp);
    }
    free(resp);
  }
  for (int i = 0; i < 64; i++) json_decref(last[i]);
  return NULL;
}

static int cmd_workload(const opts *o, int clients, int seconds, int keys,
                        const char *path) {
  wl w = {.o = o, .keys = keys < 1 ? 1 : keys > 64 ? 64 : keys};
  pthread_mutex_init(&w.mu, NULL);
  w.out = fopen(path, "w");
  if (w.out == NULL) {
    fprintf(stderr, "qraft-kv: cannot write %s: %s\n", path, strerror(errno));
    return 1;
  }
  char list[2048];
  snprintf(list, sizeof list, "%s", o->servers);
  char *servers[16];
  char *save = NULL;
  for (char *u = strtok_r(list, ",", &save); u && w.servers_n < 16;
       u = strtok_r(NULL, ",", &save)) {
    servers[w.servers_n++] = u;
  }
  w.servers = servers;
  w.end_ns = kv_now_ns() + (uint64_t)seconds * 1000000000ull;
  pthread_t th[64];
  wl_client cs[64];
  if (clients > 64) clients = 64;
  for (int i = 0; i < clients; i++) {
    cs[i] = (wl_client){.w = &w, .id = i + 1, .seed = (unsigned)(i * 7919 + getpid())};
    pthread_create(&th[i], NULL, wl_run, &cs[i]);
  }
  for (int i = 0; i < clients; i++) pthread_join(th[i], NULL);
  fclose(w.out);
  printf("workload: %ld operations: %ld ok, %ld fail, %ld info; history %s\n",
         w.ops, w.oks, w.fails, w.infos, path);
  return w.oks > 0 ? 0 : 1;
}

int kv_client_main(const char *cmd, int argc, char **argv) {
  opts o = {.timeout_ms = 10000};
  const char *env = getenv("QRAFT_KV_SERVER");
  snprintf(o.servers, sizeof o.servers, "%s", env ? env : "http://127.0.0.1:8080");
  const char *pos[4] = {0};
  int npos = 0;
  long count = 0;
  const char *prefix = "key", *history = NULL, *cas_value = NULL,
             *bench_op = "put", *bench_target = "qraft-kv",
             *quantiles = NULL;
  long long cas_rev = -1;
  bool cas_absent = false, progress = false, learner = false,
       prefix_given = false;
  int clients = 4, seconds = 0, keys = 5;
  size_t value_bytes = 256;
  const char *cacert = NULL, *cert = NULL, *ckey = NULL;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(a, "--json") == 0) o.json = true;
    else if (strcmp(a, "--stale") == 0) o.stale = true;
    else if (strcmp(a, "--absent") == 0) cas_absent = true;
    else if (strcmp(a, "--progress") == 0) progress = true;
    else if (strcmp(a, "--learner") == 0) learner = true;
    else if (a[0] == '-' && a[1] == '-' && v == NULL) return client_usage();
    else if (strcmp(a, "--server") == 0) { snprintf(o.servers, sizeof o.servers, "%s", v); i++; }
    else if (strcmp(a, "--token-file") == 0) {
      FILE *f = fopen(v, "r");
      char t[512] = "";
      if (f == NULL || fgets(t, sizeof t, f) == NULL) {
        fprintf(stderr, "qraft-kv: cannot read %s\n", v);
        if (f) fclose(f);
        return 2;
      }
      fclose(f);
      t[strcspn(t, "\r\n ")] = 0;
      o.token = strdup(t);
      i++;
    }
    else if (strcmp(a, "--timeout-ms") == 0) { o.timeout_ms = atoi(v); i++; }
    else if (strcmp(a, "--rev") == 0) { cas_rev = atoll(v); i++; }
    else if (strcmp(a, "--value") == 0) { cas_value = v; i++; }
    else if (strcmp(a, "--count") == 0) { count = atol(v); i++; }
    else if (strcmp(a, "--prefix") == 0) { prefix = v; prefix_given = true; i++; }
    else if (strcmp(a, "--clients") == 0) { clients = atoi(v); i++; }
    else if (strcmp(a, "--seconds") == 0) { seconds = atoi(v); i++; }
    else if (strcmp(a, "--keys") == 0) { keys = atoi(v); i++; }
    else if (strcmp(a, "--value-bytes") == 0) { value_bytes = (size_t)atol(v); i++; }
    else if (strcmp(a, "--history") == 0) { history = v; i++; }
    else if (strcmp(a, "--op") == 0) { bench_op = v; i++; }
    else if (strcmp(a, "--target") == 0) { bench_target = v; i++; }
    else if (strcmp(a, "--quantiles") == 0) { quantiles = v; i++; }
    else if (strcmp(a, "--cacert") == 0) { cacert = v; i++; }
    else if (strcmp(a, "--cert") == 0) { cert = v; i++; }
    else if (strcmp(a, "--key") == 0) { ckey = v; i++; }
    else if (a[0] == '-' && a[1] == '-') return client_usage();
    else if (npos < 4) pos[npos++] = a;
    else return client_usage();
  }
  if ((cert == NULL) != (ckey == NULL)) {
    fprintf(stderr, "qraft-kv: --cert and --key go together\n");
    return 2;
  }
  if (cacert != NULL || cert != NULL) {
    char msg[400];
    if (kv_tls_client_setup(cacert, cert, ckey, msg, sizeof msg) != 0) {
      fprintf(stderr, "qraft-kv: %s\n", msg);
      return 2;
    }
  }
  char *resp = NULL;
  int rv = 2;
  if (strcmp(cmd, "put") == 0 || strcmp(cmd, "cas") == 0) {
    bool cas = cmd[0] == 'c';
    if (npos != 2 || (cas && (cas_rev >= 0) + (cas_value != NULL) + cas_absent != 1)) {
      rv = client_usage();
    } else {
      json_t *b = json_pack("{s:s}", "value", pos[1]);
      if (cas && cas_rev >= 0) json_object_set_new(b, "prev_rev", json_integer(cas_rev));
      if (cas && cas_value) json_object_set_new(b, "prev_value", json_string(cas_value));
      if (cas && cas_absent) json_object_set_new(b, "prev_exists", json_false());
      char *body = json_dumps(b, JSON_COMPACT);
      json_decref(b);
      char *k = url_escape(pos[0]);
      char path[4096];
      snprintf(path, sizeof path, "/v1/kv/%s", k);
      free(k);
      int st = request(&o, "PUT", path, body, false, &resp);
      free(body);
      rv = print_or_json(&o, st, resp, fmt_write);
    }
  } else if (strcmp(cmd, "get") == 0 || strcmp(cmd, "del") == 0) {
    if (npos != 1) {
      rv = client_usage();
    } else {
      char *k = url_escape(pos[0]);
      char path[4096];
      snprintf(path, sizeof path, "/v1/kv/%s%s", k, o.stale && cmd[0] == 'g' ? "?stale=1" : "");
      free(k);
      bool get = cmd[0] == 'g';
      int st = request(&o, get ? "GET" : "DELETE", path, NULL, false, &resp);
      rv = print_or_json(&o, st, resp, get ? fmt_get : fmt_write);
    }
  } else if (strcmp(cmd, "list") == 0) {
    char *k = url_escape(npos > 0 ? pos[0] : "");
    char path[4096];
    snprintf(path, sizeof path, "/v1/kv?prefix=%s%s", k, o.stale ? "&stale=1" : "");
    free(k);
    int st = request(&o, "GET", path, NULL, false, &resp);
    rv = print_or_json(&o, st, resp, fmt_list);
  } else if (strcmp(cmd, "snapshot") == 0) {
    if (npos == 2 && strcmp(pos[0], "save") == 0) {
      rv = snapshot_save(&o, pos[1]);
    } else if (npos == 2 && strcmp(pos[0], "info") == 0) {
      rv = kv_snapshot_info(pos[1], o.json);
    } else {
      rv = client_usage();
    }
  } else if (strcmp(cmd, "status") == 0) {
    int st = request(&o, "GET", "/v1/status", NULL, false, &resp);
    rv = print_or_json(&o, st, resp, fmt_status);
  } else if (strcmp(cmd, "digest") == 0) {
    int st = request(&o, "GET", "/v1/digest", NULL, false, &resp);
    rv = print_or_json(&o, st, resp, fmt_digest);
  } else if (strcmp(cmd, "members") == 0) {
    if (npos == 0) {
      int st = request(&o, "GET", "/v1/members", NULL, false, &resp);
      rv = print_or_json(&o, st, resp, fmt_members);
    } else if (strcmp(pos[0], "add") == 0 && npos == 3) {
      json_t *b = json_pack("{s:s, s:s, s:s}", "id", pos[1], "addr", pos[2],
                            "role", learner ? "learner" : "voter");
      char *body = json_dumps(b, JSON_COMPACT);
      json_decref(b);
      int st = request(&o, "POST", "/v1/members", body, true, &resp);
      free(body);
      rv = print_or_json(&o, st, resp, fmt_raw);
    } else if (strcmp(pos[0], "remove") == 0 && npos == 2) {
      char path[256];
      snprintf(path, sizeof path, "/v1/members/%.128s", pos[1]);
      int st = request(&o, "DELETE", path, NULL, true, &resp);
      rv = print_or_json(&o, st, resp, fmt_raw);
    } else {
      rv = client_usage();
    }
  } else if (strcmp(cmd, "transfer") == 0) {
    char body[256] = "{}";
    if (npos == 1) snprintf(body, sizeof body, "{\"id\":\"%.128s\"}", pos[0]);
    int st = request(&o, "POST", "/v1/transfer", body, true, &resp);
    rv = print_or_json(&o, st, resp, fmt_raw);
  } else if (strcmp(cmd, "load") == 0) {
    rv = count > 0 ? cmd_load(&o, count, prefix, progress) : client_usage();
  } else if (strcmp(cmd, "bench") == 0) {
    rv = cmd_bench(&o, clients, count, seconds, value_bytes, bench_op,
                   bench_target, prefix_given ? prefix : "bench-", quantiles);
  } else if (strcmp(cmd, "workload") == 0) {
    rv = history ? cmd_workload(&o, clients, seconds > 0 ? seconds : 5, keys,
                                history)
                 : client_usage();
  } else {
    rv = client_usage();
  }
  free(o.token);
  return rv;
}
