/*
 * discovery.c: discovery providers and the endpoint's use of them
 * (qraft/discovery.h).
 */
#include "transport_int.h"

#include <qraft/discovery.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MS 1000000ull

/* ---- the endpoint ---- */

int qraft_endpoint_add_discovery(qraft_endpoint *ep,
                                 const qraft_discovery_ops *ops, void *ud) {
  if (ops == NULL || ops->resolve == NULL) {
    return QRAFT_ECONFIG;
  }
  if (ep->disc_n == QRAFT_DISCOVERY_MAX) {
    return QRAFT_ELIMIT;
  }
  int k = ep->disc_n++;
  ep->disc[k].name = ops->name != NULL ? ops->name : "?";
  ep->disc[k].resolve = ops->resolve;
  ep->disc[k].publish = ops->publish;
  ep->disc[k].ud = ud;
  if (ops->publish != NULL) {
    qraft_node_addr self;
    qraft_endpoint_addr(ep, &self);
    ops->publish(ud, &self);
  }
  return 0;
}

int qraft_endpoint_resolve(qraft_endpoint *ep, const qraft_node_id *id,
                           qraft_node_addr *out) {
  memset(out, 0, sizeof *out);
  out->id = *id;
  for (int k = 0; k < ep->disc_n; k++) {
    qraft_node_addr a;
    memset(&a, 0, sizeof a);
    a.id = *id;
    if (ep->disc[k].resolve(ep->disc[k].ud, id, &a) != 0) {
      continue;
    }
    for (uint32_t i = 0; i < a.addrs_n && i < QRAFT_NODE_ADDRS_MAX; i++) {
      bool seen = false;
      for (uint32_t j = 0; j < out->addrs_n; j++) {
        seen |= qraft__sockaddr_eq((const struct sockaddr *)&out->addrs[j],
                                   (const struct sockaddr *)&a.addrs[i]);
      }
      if (!seen && out->addrs_n < QRAFT_NODE_ADDRS_MAX) {
        out->addrs[out->addrs_n++] = a.addrs[i];
      }
    }
    for (uint32_t i = 0; i < a.relays_n && i < QRAFT_NODE_RELAYS_MAX; i++) {
      bool seen = false;
      for (uint32_t j = 0; j < out->relays_n; j++) {
        seen |= qraft_node_id_eq(&out->relays[j].id, &a.relays[i].id);
      }
      if (!seen && out->relays_n < QRAFT_NODE_RELAYS_MAX) {
        out->relays[out->relays_n++] = a.relays[i];
      }
    }
  }
  return out->addrs_n > 0 || out->relays_n > 0 ? 0 : QRAFT_ENOTFOUND;
}

int qraft_endpoint_dial_id(qraft_endpoint *ep, const qraft_node_id *id,
                           const char *alpn, qraft_err *err) {
  qraft_node_addr a;
  if (qraft_endpoint_resolve(ep, id, &a) != 0) {
    char hex[QRAFT_NODE_ID_HEX_SIZE];
    qraft_node_id_to_hex(id, hex);
    return QRAFT_ERR(err, QRAFT_ENOTFOUND,
                     "no discovery provider knows %s (%d asked)", hex,
                     ep->disc_n);
  }
  int rv = qraft_endpoint_dial(ep, &a, alpn);
  if (rv != 0) {
    return QRAFT_ERR(err, rv, "dial");
  }
  return 0;
}

/* ---- addresses in text ---- */

int qraft_sockaddr_parse(const char *text, struct sockaddr_storage *out) {
  memset(out, 0, sizeof *out);
  char host[64];
  const char *port_text;
  bool v6 = text[0] == '[';
  if (v6) {
    const char *end = strchr(text, ']');
    if (end == NULL || end[1] != ':' || (size_t)(end - text - 1) >= sizeof host) {
      return QRAFT_EMALFORMED;
    }
    memcpy(host, text + 1, (size_t)(end - text - 1));
    host[end - text - 1] = '\0';
    port_text = end + 2;
  } else {
    const char *colon = strrchr(text, ':');
    if (colon == NULL || (size_t)(colon - text) >= sizeof host) {
      return QRAFT_EMALFORMED;
    }
    memcpy(host, text, (size_t)(colon - text));
    host[colon - text] = '\0';
    port_text = colon + 1;
  }
  char *endp;
  long port = strtol(port_text, &endp, 10);
  if (port_text[0] == '\0' || *endp != '\0' || port < 1 || port > 65535) {
    return QRAFT_EMALFORMED;
  }
  if (v6) {
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)out;
    if (inet_pton(AF_INET6, host, &s6->sin6_addr) != 1) {
      return QRAFT_EMALFORMED;
    }
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons((uint16_t)port);
  } else {
    struct sockaddr_in *s4 = (struct sockaddr_in *)out;
    if (inet_pton(AF_INET, host, &s4->sin_addr) != 1) {
      return QRAFT_EMALFORMED;
    }
    s4->sin_family = AF_INET;
    s4->sin_port = htons((uint16_t)port);
  }
  return 0;
}

/* ---- a table of addresses, shared by the static and file providers ---- */

typedef struct addr_table {
  qraft_node_addr *v;
  size_t n, cap;
} addr_table;

static int table_set(addr_table *t, const qraft_node_addr *a) {
  for (size_t i = 0; i < t->n; i++) {
    if (qraft_node_id_eq(&t->v[i].id, &a->id)) {
      t->v[i] = *a;
      return 0;
    }
  }
  if (t->n == t->cap) {
    size_t cap = t->cap ? 2 * t->cap : 16;
    qraft_node_addr *nv = realloc(t->v, cap * sizeof *nv);
    if (nv == NULL) {
      return -ENOMEM;
    }
    t->v = nv;
    t->cap = cap;
  }
  t->v[t->n++] = *a;
  return 0;
}

static const qraft_node_addr *table_find(const addr_table *t,
                                         const qraft_node_id *id) {
  for (size_t i = 0; i < t->n; i++) {
    if (qraft_node_id_eq(&t->v[i].id, id)) {
      return &t->v[i];
    }
  }
  return NULL;
}

/* ---- the static table ---- */

struct qraft_discovery_static {
  pthread_mutex_t mu;
  addr_table t;
};

int qraft_discovery_static_new(qraft_discovery_static **out) {
  qraft_discovery_static *d = calloc(1, sizeof *d);
  if (d == NULL) {
    return -ENOMEM;
  }
  pthread_mutex_init(&d->mu, NULL);
  *out = d;
  return 0;
}

int qraft_discovery_static_set(qraft_discovery_static *d,
                               const qraft_node_addr *addr) {
  pthread_mutex_lock(&d->mu);
  int rv = table_set(&d->t, addr);
  pthread_mutex_unlock(&d->mu);
  return rv;
}

void qraft_discovery_static_remove(qraft_discovery_static *d,
                                   const qraft_node_id *id) {
  pthread_mutex_lock(&d->mu);
  for (size_t i = 0; i < d->t.n; i++) {
    if (qraft_node_id_eq(&d->t.v[i].id, id)) {
      d->t.v[i] = d->t.v[--d->t.n];
      break;
    }
  }
  pthread_mutex_unlock(&d->mu);
}

static int static_resolve(void *ud, const qraft_node_id *id,
                          qraft_node_addr *out) {
  qraft_discovery_static *d = ud;
  pthread_mutex_lock(&d->mu);
  const qraft_node_addr *a = table_find(&d->t, id);
  if (a != NULL) {
    *out = *a;
  }
  pthread_mutex_unlock(&d->mu);
  return a != NULL ? 0 : QRAFT_ENOTFOUND;
}

const qraft_discovery_ops *qraft_discovery_static_ops(void) {
  static const qraft_discovery_ops ops = {.name = "static",
                                          .resolve = static_resolve};
  return &ops;
}

void qraft_discovery_static_free(qraft_discovery_static *d) {
  if (d == NULL) {
    return;
  }
  pthread_mutex_destroy(&d->mu);
  free(d->t.v);
  free(d);
}

/* ---- the file ---- */

struct qraft_discovery_file {
  char *path;
  qraft_env *env;
  qraft_logger *log;
  addr_table t;
  struct timespec mtime;
  off_t size;
  uint64_t checked_ns;
};

/* Parses the file into *t (replaced only on success). */
static int file_parse(const char *path, addr_table *t, qraft_err *err) {
  FILE *f = fopen(path, "r");
  if (f == NULL) {
    return QRAFT_ERR(err, -errno, "%s", path);
  }
  addr_table nt = {0};
  char line[2048];
  int lineno = 0, rv = 0;
  while (rv == 0 && fgets(line, sizeof line, f) != NULL) {
    lineno++;
    char *hash = strchr(line, '#');
    if (hash != NULL) {
      *hash = '\0';
    }
    char *save = NULL;
    char *tok = strtok_r(line, " \t\r\n", &save);
    if (tok == NULL) {
      continue;
    }
    qraft_node_addr a;
    memset(&a, 0, sizeof a);
    if (qraft_node_id_parse(tok, &a.id) != 0) {
      rv = QRAFT_ERR(err, QRAFT_EMALFORMED, "%s:%d: '%s' is not a node id",
                     path, lineno, tok);
      break;
    }
    while ((tok = strtok_r(NULL, " \t\r\n", &save)) != NULL) {
      if (strncmp(tok, "addr=", 5) == 0 && a.addrs_n < QRAFT_NODE_ADDRS_MAX &&
          qraft_sockaddr_parse(tok + 5, &a.addrs[a.addrs_n]) == 0) {
        a.addrs_n++;
        continue;
      }
      char *at = strncmp(tok, "relay=", 6) == 0 ? strchr(tok, '@') : NULL;
      if (at != NULL && a.relays_n < QRAFT_NODE_RELAYS_MAX) {
        *at = '\0';
        qraft_relay_addr *r = &a.relays[a.relays_n];
        if (qraft_node_id_parse(tok + 6, &r->id) == 0 &&
            qraft_sockaddr_parse(at + 1, &r->addr) == 0) {
          a.relays_n++;
          continue;
        }
        *at = '@';
      }
      rv = QRAFT_ERR(err, QRAFT_EMALFORMED,
                     "%s:%d: '%s' (want addr=IP:PORT or relay=ID@IP:PORT, at "
                     "most %u and %u)",
                     path, lineno, tok, QRAFT_NODE_ADDRS_MAX,
                     QRAFT_NODE_RELAYS_MAX);
      break;
    }
    if (rv == 0) {
      rv = table_set(&nt, &a);
      if (rv != 0) {
        QRAFT_ERR(err, rv, "%s", path);
      }
    }
  }
  if (rv == 0 && ferror(f)) {
    rv = QRAFT_ERR(err, -EIO, "%s: read error", path);
  }
  fclose(f);
  if (rv != 0) {
    free(nt.v);
    return rv;
  }
  free(t->v);
  *t = nt;
  return 0;
}

static void file_refresh(qraft_discovery_file *d) {
  uint64_t now = d->env != NULL ? qraft_env_now_ns(d->env) : 0;
  if (d->env != NULL && d->checked_ns != 0 && now - d->checked_ns < 1000 * MS) {
    return;
  }
  d->checked_ns = now == 0 ? 1 : now;
  struct stat st;
  if (stat(d->path, &st) != 0) {
    return; /* gone for now: keep the last table */
  }
  if (st.st_mtim.tv_sec == d->mtime.tv_sec &&
      st.st_mtim.tv_nsec == d->mtime.tv_nsec && st.st_size == d->size) {
    return;
  }
  d->mtime = st.st_mtim;
  d->size = st.st_size;
  qraft_err err;
  qraft_err_init(&err, 0);
  if (file_parse(d->path, &d->t, &err) != 0) {
    char msg[512];
    qraft_err_format(&err, msg, sizeof msg);
    QRAFT_LOG(d->log, QRAFT_LOG_ERROR,
              "discovery file not reloaded; the last good one stays",
              QRAFT_LOG_STR("error", msg));
  } else {
    QRAFT_LOG(d->log, QRAFT_LOG_INFO, "discovery file loaded",
              QRAFT_LOG_STR("path", d->path), QRAFT_LOG_U64("nodes", d->t.n));
  }
}

int qraft_discovery_file_new(const char *path, qraft_env *env,
                             qraft_logger *logger,
                             qraft_discovery_file **out, qraft_err *err) {
  qraft_discovery_file *d = calloc(1, sizeof *d);
  if (d == NULL || (d->path = strdup(path)) == NULL) {
    free(d);
    return QRAFT_ERR(err, -ENOMEM, "discovery file");
  }
  d->env = env;
  d->log = logger;
  struct stat st;
  if (stat(path, &st) == 0) {
    d->mtime = st.st_mtim;
    d->size = st.st_size;
  }
  int rv = file_parse(path, &d->t, err);
  if (rv != 0) {
    qraft_discovery_file_free(d);
    return rv;
  }
  if (env != NULL) {
    d->checked_ns = qraft_env_now_ns(env);
    if (d->checked_ns == 0) {
      d->checked_ns = 1;
    }
  }
  *out = d;
  return 0;
}

static int file_resolve(void *ud, const qraft_node_id *id,
                        qraft_node_addr *out) {
  qraft_discovery_file *d = ud;
  file_refresh(d);
  const qraft_node_addr *a = table_find(&d->t, id);
  if (a == NULL) {
    return QRAFT_ENOTFOUND;
  }
  *out = *a;
  return 0;
}

const qraft_discovery_ops *qraft_discovery_file_ops(void) {
  static const qraft_discovery_ops ops = {.name = "file",
                                          .resolve = file_resolve};
  return &ops;
}

void qraft_discovery_file_free(qraft_discovery_file *d) {
  if (d == NULL) {
    return;
  }
  free(d->t.v);
  free(d->path);
  free(d);
}
