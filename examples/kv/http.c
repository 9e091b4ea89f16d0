/*
 * The qraft-kv HTTP/JSON API (libmicrohttpd with a small pool of epoll
 * threads, keep-alive, jansson). No handler waits for the node: a request
 * that needs it suspends its connection until the node's callback resumes
 * it. The node's loop thread is never blocked either: its callbacks only
 * record an outcome and resume a connection.
 *
 * Every input from a client is checked (sizes, JSON types, UTF-8) and
 * answered with a JSON error {code, message}; nothing a client sends may
 * crash the server.
 */
#include "kv.h"

#include <qraft/crc32c.h>
#include <qraft/histogram.h>

#include <gnutls/gnutls.h>
#include <jansson.h>
#include <microhttpd.h>

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* How many threads serve HTTP: each polls its share of the connections
 * (epoll) and none ever waits for the node. */
#define KV_HTTP_THREADS 2
/* How often the timer thread looks for waits past their deadline. */
#define KV_HTTP_TIMER_MS 50

typedef struct op op;

typedef struct http_ctx {
  kv_server *srv;
  char *token;
  /* HTTPS: PEM text libmicrohttpd reads while it runs; client_ca set:
   * every request must come with a client certificate it signed */
  char *tls_cert, *tls_key, *tls_client_ca;
  struct MHD_Daemon *d;
  atomic_int refs; /* kv_http_start's, and one per op */
  pthread_t timer;
  pthread_mutex_t mu;
  pthread_cond_t cv; /* wakes the timer thread to stop */
  /* under mu: */
  op *waiting; /* ops in OP_WAITING, newest first */
  size_t waiting_n;
  bool stopping;
  bool timer_stop;
  op *reads_next;     /* gets waiting for the next read barrier */
  bool read_inflight; /* a read barrier is in flight (see read_start) */
} http_ctx;

/* One request (libmicrohttpd's con_cls), from its first call to
 * NOTIFY_COMPLETED. */
typedef struct req {
  char *body;
  size_t len;
  bool too_large;
  op *op;     /* the node request it waits or waited for */
  json_t *ok; /* the answer of a membership request once it is done */
  uint64_t t_recv_ns; /* its headers arrived */
} req;

static atomic_uint_fast64_t m_requests, m_errors, m_too_large, m_unauth,
    m_timeouts;

/* Where the time of a write goes on this side of the node (the node's own
 * stages are qraft_write_*_seconds): from its headers to the proposal
 * (body, parsing), from the node's callback to the answer queued (the
 * resume of the connection), and the whole. */
enum { KV_W_IN, KV_W_OUT, KV_W_TOTAL, KV_W_N };
static pthread_mutex_t m_hmu = PTHREAD_MUTEX_INITIALIZER;
static qraft_histogram m_write_us[KV_W_N];
static const char *const m_write_name[KV_W_N] = {
    "qraft_kv_write_http_in_seconds", "qraft_kv_write_http_out_seconds",
    "qraft_kv_write_seconds"};

/* ---- waiting for the node without holding a thread ----
 *
 * A request that needs the node (a write, a read barrier, a membership
 * change) hands the node its request and suspends its connection
 * (MHD_suspend_connection); no HTTP thread waits. The node's callback, on
 * the loop thread, records the outcome in the request's `op` and resumes
 * the connection; libmicrohttpd then calls on_request again for the same
 * request, and the handler answers from the recorded outcome. The timer
 * thread resumes a connection whose wait passed its deadline (answered 503
 * `timeout`, outcome unknown); kv_http_stop resumes every waiting one
 * (503 `shutting_down`) before it stops the daemon, which must not hold a
 * suspended connection when it stops.
 *
 * h->mu orders the three ways out of OP_WAITING (callback, deadline,
 * stop): the first one moves the op out of the waiting list and resumes
 * the connection, exactly once, while the connection is still suspended.
 * The op is freed by whichever of the request and the node's callback lets
 * go of it last; each op holds a reference to the http_ctx, so a callback
 * that comes after kv_http_stop (the node is freed after the HTTP front)
 * still finds its mutex. */

enum op_state { OP_WAITING, OP_DONE, OP_TIMEDOUT, OP_SHUTDOWN };

typedef struct op {
  http_ctx *h;
  struct MHD_Connection *c;
  struct op *prev, *next; /* h->waiting, while OP_WAITING */
  struct op *batch_next;  /* the gets served by one read barrier */
  uint64_t deadline_ns;
  uint64_t t_begin_ns; /* handed to the node */
  uint64_t t_done_ns;  /* the node's callback (under h->mu) */
  atomic_int refs; /* the request and the node's callback */
  /* under h->mu: */
  enum op_state state;
  int status;
  qraft_id leader;
  uint8_t res[KV_RESULT_BYTES];
  size_t res_len;
} op;

static void http_unref(http_ctx *h) {
  if (atomic_fetch_sub(&h->refs, 1) != 1) return;
  pthread_cond_destroy(&h->cv);
  pthread_mutex_destroy(&h->mu);
  free(h->token);
  free(h->tls_cert);
  free(h->tls_key);
  free(h->tls_client_ca);
  free(h);
}

static void op_unref(op *o) {
  if (atomic_fetch_sub(&o->refs, 1) != 1) return;
  http_ctx *h = o->h;
  free(o);
  http_unref(h);
}

/* Under h->mu, o in OP_WAITING: records how it ended and resumes it. */
static void op_end_locked(op *o, enum op_state state) {
  http_ctx *h = o->h;
  assert(o->state == OP_WAITING);
  o->state = state;
  if (o->prev != NULL) o->prev->next = o->next;
  else h->waiting = o->next;
  if (o->next != NULL) o->next->prev = o->prev;
  o->prev = o->next = NULL;
  assert(h->waiting_n > 0);
  h->waiting_n--;
  MHD_resume_connection(o->c);
}

static void op_finish(op *o, int status, qraft_id leader, const uint8_t *res,
                      size_t len) {
  http_ctx *h = o->h;
  pthread_mutex_lock(&h->mu);
  if (o->state == OP_WAITING) {
    o->status = status;
    o->leader = leader;
    if (len > sizeof o->res) len = sizeof o->res;
    if (len) memcpy(o->res, res, len);
    o->res_len = len;
    o->t_done_ns = kv_now_ns();
    op_end_locked(o, OP_DONE);
  }
  pthread_mutex_unlock(&h->mu);
  op_unref(o);
}

static void propose_cb(void *ud, int status, qraft_slice result,
                       qraft_id leader) {
  op_finish(ud, status, leader, result.data, result.len);
}

static void done_cb(void *ud, int status, qraft_id leader) {
  op_finish(ud, status, leader, NULL, 0);
}

/* Hands the node one request (start(node, arg, op), which passes the op as
 * its callback's user data) and suspends the connection. Returns 0 when
 * the request waits (the handler returns MHD_YES and is called again once
 * it ends), or the node's refusal (nothing suspended, callback not to
 * come). */
typedef int (*op_start_fn)(qraft_node *node, void *arg, op *o);

static int op_begin(http_ctx *h, struct MHD_Connection *c, req *r,
                    int timeout_ms, op_start_fn start, void *arg) {
  assert(r->op == NULL);
  op *o = calloc(1, sizeof *o);
  if (o == NULL) return -ENOMEM;
  o->h = h;
  o->c = c;
  o->t_begin_ns = kv_now_ns();
  o->deadline_ns = o->t_begin_ns + (uint64_t)timeout_ms * 1000000ull;
  atomic_init(&o->refs, 2);
  atomic_fetch_add(&h->refs, 1);
  int rv;
  /* Under h->mu, so that the callback cannot resume the connection before
   * it is suspended. The node calls back on its own thread, never from
   * inside start(). */
  pthread_mutex_lock(&h->mu);
  if (h->stopping) {
    rv = QRAFT_ESHUTDOWN;
  } else {
    rv = start(kv_server_node(h->srv), arg, o);
  }
  if (rv == 0) {
    MHD_suspend_connection(c);
    o->state = OP_WAITING;
    o->next = h->waiting;
    if (h->waiting != NULL) h->waiting->prev = o;
    h->waiting = o;
    h->waiting_n++;
    /* one request at a time per connection, at most 256 connections */
    assert(h->waiting_n <= KV_CONNECTIONS_MAX);
    r->op = o;
  }
  pthread_mutex_unlock(&h->mu);
  if (rv != 0) {
    free(o);
    http_unref(h);
  }
  return rv;
}

/* How the request's op ended (after the resume). */
static enum op_state op_outcome(http_ctx *h, req *r, int *status,
                                qraft_id *leader) {
  pthread_mutex_lock(&h->mu);
  op *o = r->op;
  enum op_state s = o->state;
  *status = o->status;
  *leader = o->leader;
  pthread_mutex_unlock(&h->mu);
  assert(s != OP_WAITING);
  return s;
}

/* Resumes, answered 503 timeout, the waits past their deadline. */
static void *timer_main(void *arg) {
  http_ctx *h = arg;
  pthread_mutex_lock(&h->mu);
  while (!h->timer_stop) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_nsec += KV_HTTP_TIMER_MS * 1000000l;
    if (ts.tv_nsec >= 1000000000l) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000l;
    }
    pthread_cond_timedwait(&h->cv, &h->mu, &ts);
    uint64_t now = kv_now_ns();
    for (op *o = h->waiting, *next; o != NULL; o = next) {
      next = o->next;
      if (o->deadline_ns <= now) op_end_locked(o, OP_TIMEDOUT);
    }
  }
  pthread_mutex_unlock(&h->mu);
  return NULL;
}

/* ---- linearizable reads, batched ----
 *
 * At most one read barrier is in flight per member. A get that arrives
 * while one is in flight waits for the next one, which starts when the one
 * in flight completes and serves every get that arrived meanwhile. Each get
 * is so served by a barrier asked after it arrived, which is what a
 * linearizable read needs (the barrier's read index is at least the commit
 * index when the get arrived), and 64 concurrent gets cost a few quorum
 * rounds instead of 64. A batch holds one reference to each of its ops. */

static void op_list_unref(op *o) {
  while (o != NULL) {
    op *next = o->batch_next;
    op_unref(o);
    o = next;
  }
}

/* Under h->mu: ends the batch's waiting ops with the barrier's outcome. */
static void read_batch_end_locked(op *batch, int status, qraft_id leader) {
  for (op *o = batch; o != NULL; o = o->batch_next) {
    if (o->state != OP_WAITING) continue; /* timed out meanwhile */
    o->status = status;
    o->leader = leader;
    op_end_locked(o, OP_DONE);
  }
}

static void read_batch_cb(void *ud, int status, qraft_id leader) {
  op *batch = ud;
  http_ctx *h = batch->h;
  op *refused = NULL;
  pthread_mutex_lock(&h->mu);
  assert(h->read_inflight);
  read_batch_end_locked(batch, status, leader);
  op *next = h->reads_next;
  h->reads_next = NULL;
  h->read_inflight = false;
  if (next != NULL && h->stopping) {
    refused = next; /* kv_http_stop ended them */
  } else if (next != NULL) {
    int rv = qraft_node_read_barrier(kv_server_node(h->srv), read_batch_cb,
                                     next);
    if (rv == 0) {
      h->read_inflight = true;
    } else {
      read_batch_end_locked(next, rv, 0);
      refused = next;
    }
  }
  pthread_mutex_unlock(&h->mu);
  op_list_unref(batch);
  op_list_unref(refused);
}

/* op_begin's start for a get, under h->mu: asks a barrier now if none is
 * in flight, else joins the next batch. */
static int start_read(qraft_node *node, void *arg, op *o) {
  (void)arg;
  http_ctx *h = o->h;
  o->batch_next = NULL;
  if (h->read_inflight) {
    o->batch_next = h->reads_next;
    h->reads_next = o;
    return 0;
  }
  assert(h->reads_next == NULL);
  int rv = qraft_node_read_barrier(node, read_batch_cb, o);
  if (rv == 0) h->read_inflight = true;
  return rv;
}

/* ---- replies ---- */

static enum MHD_Result reply_text(struct MHD_Connection *c, unsigned status,
                                  const char *ctype, char *text, size_t len) {
  struct MHD_Response *r = MHD_create_response_from_buffer(
      len, text, MHD_RESPMEM_MUST_FREE);
  if (r == NULL) {
    free(text);
    return MHD_NO;
  }
  MHD_add_response_header(r, "Content-Type", ctype);
  enum MHD_Result rv = MHD_queue_response(c, status, r);
  MHD_destroy_response(r);
  return rv;
}

static enum MHD_Result reply_json(struct MHD_Connection *c, unsigned status,
                                  json_t *j) {
  char *s = json_dumps(j, JSON_COMPACT);
  json_decref(j);
  if (s == NULL) {
    return MHD_NO;
  }
  size_t n = strlen(s);
  char *t = realloc(s, n + 2);
  if (t == NULL) {
    free(s);
    return MHD_NO;
  }
  t[n] = '\n';
  t[n + 1] = 0;
  return reply_text(c, status, "application/json", t, n + 1);
}

static json_t *err_json(const char *code, const char *message) {
  return json_pack("{s:s, s:s}", "code", code, "message", message);
}

static enum MHD_Result reply_err(struct MHD_Connection *c, unsigned status,
                                 const char *code, const char *message) {
  atomic_fetch_add(&m_errors, 1);
  return reply_json(c, status, err_json(code, message));
}

/* The hex id and HTTP address of the member with Raft id `id`. */
static void member_names(http_ctx *h, const qraft_node_status *st, qraft_id id,
                         char hex[QRAFT_NODE_ID_HEX_SIZE], char *http,
                         size_t http_n) {
  hex[0] = 0;
  http[0] = 0;
  for (uint32_t i = 0; i < st->members_n; i++) {
    if (st->members[i].id == id) {
      qraft_node_id_to_hex(&st->members[i].addr.id, hex);
      kv_store_http_of(kv_server_store(h->srv), hex, http, http_n);
      return;
    }
  }
}

/* Whether this member refuses writes for lack of space: its own alarm
 * (any role), or, as leader, a quorum of voters in alarm; says why. */
static bool nospace_why(const qraft_node_status *st, char *why, size_t n) {
  if (st->alarms & QRAFT_ALARM_NOSPACE) {
    snprintf(why, n, "this member is out of disk space: %s", st->alarm_why);
    return true;
  }
  if (st->role != QRAFT_ROLE_LEADER) return false;
  if (st->alarm_quorum) {
    snprintf(why, n,
             "%u of the voters are out of disk space (a quorum): writes "
             "resume once they have room",
             st->voters_in_alarm);
    return true;
  }
  return false;
}

/* 503 for a node error, naming the leader when known. `unknown`: the
 * request may have taken effect. */
static enum MHD_Result reply_node_err(http_ctx *h, struct MHD_Connection *c,
                                      int status, qraft_id leader,
                                      bool unknown) {
  qraft_node_status st;
  qraft_node_status_get(kv_server_node(h->srv), &st);
  if (leader == 0) leader = st.leader;
  char hex[QRAFT_NODE_ID_HEX_SIZE], lh[256];
  member_names(h, &st, leader, hex, lh, sizeof lh);
  const char *code = status == QRAFT_ENOTLEADER   ? "not_leader"
                     : status == QRAFT_EBUSY      ? "busy"
                     : status == QRAFT_ETIMEDOUT  ? "timeout"
                     : status == QRAFT_EDROPPED   ? "dropped"
                     : status == QRAFT_ESHUTDOWN  ? "shutting_down"
                     : status == QRAFT_ECONF_PENDING ? "conf_pending"
                                                     : "unavailable";
  if (status == -ENOSPC) {
    /* the leader refused it before proposing: it did not happen */
    char why[512];
    if (!nospace_why(&st, why, sizeof why)) {
      snprintf(why, sizeof why, "no space left on a quorum of members");
    }
    json_t *j = err_json("no_space", why);
    json_object_set_new(j, "outcome", json_string("none"));
    atomic_fetch_add(&m_errors, 1);
    return reply_json(c, 507, j);
  }
  json_t *j = err_json(code, qraft_strerror(status));
  json_object_set_new(j, "outcome", json_string(unknown ? "unknown" : "none"));
  if (hex[0]) json_object_set_new(j, "leader", json_string(hex));
  if (lh[0]) json_object_set_new(j, "leader_http", json_string(lh));
  if (status == QRAFT_ETIMEDOUT) atomic_fetch_add(&m_timeouts, 1);
  atomic_fetch_add(&m_errors, 1);
  return reply_json(c, status == QRAFT_ECONFIG ? 400 : 503, j);
}

/* ---- the request ---- */

static bool valid_utf8(const char *p, size_t n) {
  json_t *s = json_stringn(p, n);
  json_decref(s);
  return s != NULL;
}

/* After the resume: 0 if the node's request succeeded, else the error to
 * answer with (and the leader it named, if any). */
static int op_result(http_ctx *h, req *r, qraft_id *leader) {
  int status;
  enum op_state s = op_outcome(h, r, &status, leader);
  if (s == OP_DONE) return status;
  *leader = 0;
  return s == OP_TIMEDOUT ? QRAFT_ETIMEDOUT : QRAFT_ESHUTDOWN;
}

/* A linearizable read point (ReadIndex on the leader, from any member).
 * Returns 0 once it is reached (read the store now), or 1 when the request
 * waits for it or has been answered with an error: return *mr. */
static int read_point(http_ctx *h, struct MHD_Connection *c, req *r,
                      enum MHD_Result *mr) {
  qraft_id leader = 0;
  int rv;
  if (r->op == NULL) {
    rv = op_begin(h, c, r, KV_REQUEST_TIMEOUT_MS, start_read, NULL);
    if (rv == 0) {
      *mr = MHD_YES;
      return 1;
    }
  } else {
    rv = op_result(h, r, &leader);
    if (rv == 0) return 0;
  }
  *mr = reply_node_err(h, c, rv, leader, false);
  return 1;
}

static enum MHD_Result kv_get(http_ctx *h, struct MHD_Connection *c, req *r,
                              const char *key, size_t key_len, bool stale) {
  enum MHD_Result mr;
  if (!stale && read_point(h, c, r, &mr) != 0) return mr;
  char *val = NULL;
  size_t vl = 0;
  uint64_t rev = 0;
  int rv = kv_store_get(kv_server_store(h->srv), key, key_len, &val, &vl, &rev);
  if (rv < 0) return reply_err(c, 500, "internal", "store read failed");
  if (rv == 1) return reply_err(c, 404, "not_found", "no such key");
  json_t *v = json_stringn(val, vl);
  free(val);
  if (v == NULL) v = json_null();
  return reply_json(c, 200, json_pack("{s:s%, s:o, s:I}", "key", key, key_len,
                                      "value", v, "rev", (json_int_t)rev));
}

static void list_item(void *ud, const char *key, size_t key_len,
                      const char *val, size_t val_len, uint64_t rev) {
  json_t *v = json_stringn(val, val_len), *k = json_stringn(key, key_len);
  if (k == NULL) {
    json_decref(v);
    return;
  }
  json_array_append_new(ud, json_pack("{s:o, s:o, s:I}", "key", k, "value",
                                      v ? v : json_null(), "rev",
                                      (json_int_t)rev));
}

static enum MHD_Result kv_list(http_ctx *h, struct MHD_Connection *c,
                              req *r) {
  const char *prefix =
      MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "prefix");
  const char *lim = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "limit");
  const char *stale = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "stale");
  if (prefix == NULL) prefix = "";
  if (strlen(prefix) > KV_KEY_BYTES_MAX) {
    return reply_err(c, 413, "too_large", "prefix longer than the key limit");
  }
  long limit = 1000;
  if (lim != NULL) {
    char *e;
    limit = strtol(lim, &e, 10);
    if (*e != 0 || limit < 1 || limit > KV_LIST_LIMIT_MAX) {
      return reply_err(c, 400, "malformed", "limit must be 1..10000");
    }
  }
  enum MHD_Result mr;
  if ((stale == NULL || strcmp(stale, "1") != 0) &&
      read_point(h, c, r, &mr) != 0) {
    return mr;
  }
  json_t *items = json_array();
  bool more = false;
  if (kv_store_list(kv_server_store(h->srv), prefix, strlen(prefix),
                    (size_t)limit, list_item, items, &more) != 0) {
    json_decref(items);
    return reply_err(c, 500, "internal", "store read failed");
  }
  return reply_json(c, 200, json_pack("{s:o, s:b}", "items", items, "more",
                                      more));
}

typedef struct propose_arg {
  const uint8_t *p;
  size_t n;
} propose_arg;

static int start_propose(qraft_node *node, void *arg, op *o) {
  propose_arg *a = arg;
  return qraft_node_propose(node, a->p, a->n, propose_cb, o);
}

/* Proposes a command (the first call) and answers with its result (the
 * call after the resume; `cmd` is then NULL and the key comes from the
 * URL). */
static enum MHD_Result kv_write(http_ctx *h, struct MHD_Connection *c, req *r,
                                const char *key, size_t key_len,
                                const kv_cmd *cmd) {
  if (r->op == NULL) {
    /* No leader known: refuse before proposing, so the client knows the
     * write did not happen. (The node reports a proposal its core drops at
     * once with QRAFT_EDROPPED, the same code as one lost in a leader
     * change, so its outcome would be unknown.) */
    qraft_node_status ns;
    qraft_node_status_get(kv_server_node(h->srv), &ns);
    if (ns.leader == 0) {
      return reply_node_err(h, c, QRAFT_ENOTLEADER, 0, false);
    }
    char why[512];
    if (kv_store_full(kv_server_store(h->srv), why, sizeof why) ||
        nospace_why(&ns, why, sizeof why)) {
      /* Nothing proposed: the client knows the write did not happen. A
       * follower names the leader, which may have room. */
      json_t *j = err_json("no_space", why);
      json_object_set_new(j, "outcome", json_string("none"));
      if (ns.role != QRAFT_ROLE_LEADER) {
        char hex[QRAFT_NODE_ID_HEX_SIZE], lh[256];
        member_names(h, &ns, ns.leader, hex, lh, sizeof lh);
        if (hex[0]) json_object_set_new(j, "leader", json_string(hex));
        if (lh[0]) json_object_set_new(j, "leader_http", json_string(lh));
      }
      atomic_fetch_add(&m_errors, 1);
      return reply_json(c, 507, j);
    }
    uint8_t *p;
    size_t n = kv_cmd_encode(cmd, &p);
    if (n == 0) return reply_err(c, 503, "no_memory", "out of memory");
    propose_arg a = {.p = p, .n = n};
    int rv = op_begin(h, c, r, KV_REQUEST_TIMEOUT_MS, start_propose, &a);
    free(p);
    if (rv == 0) return MHD_YES;
    if (rv == QRAFT_ELIMIT) {
      return reply_err(c, 413, "too_large", "entry larger than a frame");
    }
    if (rv == -ENOMEM) return reply_err(c, 503, "no_memory", "out of memory");
    return reply_node_err(h, c, rv, 0, false);
  }
  qraft_id leader = 0;
  int st = op_result(h, r, &leader);
  if (st != 0) {
    return reply_node_err(h, c, st, leader, true);
  }
  uint8_t res[KV_RESULT_BYTES];
  pthread_mutex_lock(&h->mu);
  size_t rl = r->op->res_len;
  memcpy(res, r->op->res, sizeof res);
  uint64_t t_begin = r->op->t_begin_ns, t_done = r->op->t_done_ns;
  pthread_mutex_unlock(&h->mu);
  uint64_t now = kv_now_ns();
  if (r->t_recv_ns != 0 && t_begin >= r->t_recv_ns && now >= t_done &&
      t_done >= t_begin) {
    pthread_mutex_lock(&m_hmu);
    qraft_histogram_record(&m_write_us[KV_W_IN], (t_begin - r->t_recv_ns) / 1000);
    qraft_histogram_record(&m_write_us[KV_W_OUT], (now - t_done) / 1000);
    qraft_histogram_record(&m_write_us[KV_W_TOTAL], (now - r->t_recv_ns) / 1000);
    pthread_mutex_unlock(&m_hmu);
  }
  if (rl != KV_RESULT_BYTES) {
    return reply_err(c, 500, "internal", "no result from the state machine");
  }
  uint64_t rev = 0;
  for (int i = 8; i >= 1; i--) rev = (rev << 8) | res[i];
  switch (res[0]) {
  case KV_OK:
    return reply_json(c, 200, json_pack("{s:s%, s:I}", "key", key, key_len,
                                        "rev", (json_int_t)rev));
  case KV_NOTFOUND:
    return reply_err(c, 404, "not_found", "no such key");
  case KV_CMPFAIL: {
    json_t *j = err_json("compare_failed", "the key does not hold what was expected");
    json_object_set_new(j, "rev", json_integer((json_int_t)rev));
    atomic_fetch_add(&m_errors, 1);
    return reply_json(c, 409, j);
  }
  default:
    return reply_err(c, 400, "bad_command", "the state machine refused it");
  }
}

static enum MHD_Result kv_put(http_ctx *h, struct MHD_Connection *c,
                              const char *key, size_t key_len, req *r) {
  if (r->op != NULL) return kv_write(h, c, r, key, key_len, NULL);
  json_error_t je;
  json_t *j = json_loadb(r->body ? r->body : "", r->len, 0, &je);
  if (j == NULL || !json_is_object(j)) {
    json_decref(j);
    return reply_err(c, 400, "malformed", "body must be a JSON object "
                                          "{\"value\": \"...\"}");
  }
  json_t *v = json_object_get(j, "value");
  json_t *prev_rev = json_object_get(j, "prev_rev");
  json_t *prev_value = json_object_get(j, "prev_value");
  json_t *prev_exists = json_object_get(j, "prev_exists");
  if (!json_is_string(v) || (prev_rev && !json_is_integer(prev_rev)) ||
      (prev_value && !json_is_string(prev_value)) ||
      (prev_exists && !json_is_false(prev_exists)) ||
      (!!prev_rev + !!prev_value + !!prev_exists) > 1 ||
      (prev_rev && json_integer_value(prev_rev) < 0)) {
    json_decref(j);
    return reply_err(c, 400, "malformed",
                     "want {\"value\": string} and at most one of "
                     "prev_rev (integer), prev_value (string), prev_exists "
                     "(false)");
  }
  if (json_string_length(v) > KV_VALUE_BYTES_MAX ||
      (prev_value && json_string_length(prev_value) > KV_VALUE_BYTES_MAX)) {
    json_decref(j);
    atomic_fetch_add(&m_too_large, 1);
    return reply_err(c, 413, "too_large", "value larger than 262144 bytes");
  }
  kv_cmd cmd = {.op = KV_OP_PUT,
                .key = (const uint8_t *)key,
                .key_len = (uint32_t)key_len,
                .value = (const uint8_t *)json_string_value(v),
                .value_len = (uint32_t)json_string_length(v)};
  if (prev_rev) {
    cmd.op = KV_OP_CAS;
    cmd.cmp = KV_CMP_REV;
    cmd.expect_rev = (uint64_t)json_integer_value(prev_rev);
  } else if (prev_value) {
    cmd.op = KV_OP_CAS;
    cmd.cmp = KV_CMP_VALUE;
    cmd.expect = (const uint8_t *)json_string_value(prev_value);
    cmd.expect_len = (uint32_t)json_string_length(prev_value);
  } else if (prev_exists) {
    cmd.op = KV_OP_CAS;
    cmd.cmp = KV_CMP_ABSENT;
  }
  enum MHD_Result rv = kv_write(h, c, r, key, key_len, &cmd);
  json_decref(j);
  return rv;
}

static enum MHD_Result kv_del(http_ctx *h, struct MHD_Connection *c,
                              const char *key, size_t key_len, req *r) {
  if (r->op != NULL) return kv_write(h, c, r, key, key_len, NULL);
  kv_cmd cmd = {.op = KV_OP_DEL, .key = (const uint8_t *)key,
                .key_len = (uint32_t)key_len};
  const char *pr = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "prev_rev");
  if (pr != NULL) {
    char *e;
    unsigned long long v = strtoull(pr, &e, 10);
    if (*e != 0 || pr[0] == 0 || pr[0] == '-') {
      return reply_err(c, 400, "malformed", "prev_rev must be an integer");
    }
    cmd.cmp = KV_CMP_REV;
    cmd.expect_rev = v;
  }
  return kv_write(h, c, r, key, key_len, &cmd);
}

/* ---- status, members, transfer, metrics ---- */

void kv_format_addr(const struct sockaddr_storage *sa, char *out, size_t n) {
  char ip[INET6_ADDRSTRLEN] = "?";
  if (sa->ss_family == AF_INET) {
    const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
    inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
    snprintf(out, n, "%s:%u", ip, ntohs(a->sin_port));
  } else if (sa->ss_family == AF_INET6) {
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
    inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof ip);
    snprintf(out, n, "[%s]:%u", ip, ntohs(a->sin6_port));
  } else {
    snprintf(out, n, "?");
  }
}

static json_t *members_json(http_ctx *h, const qraft_node_status *st) {
  json_t *arr = json_array();
  for (uint32_t i = 0; i < st->members_n; i++) {
    const qraft_member_status *m = &st->members[i];
    char hex[QRAFT_NODE_ID_HEX_SIZE], http[256] = "", addr[80] = "";
    qraft_node_id_to_hex(&m->addr.id, hex);
    kv_store_http_of(kv_server_store(h->srv), hex, http, sizeof http);
    if (m->addr.addrs_n > 0) kv_format_addr(&m->addr.addrs[0], addr, sizeof addr);
    char rid[20];
    snprintf(rid, sizeof rid, "%016llx", (unsigned long long)m->id);
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:b}", "id", hex,
                          "raft_id", rid, "addr", addr, "http", http, "role",
                          m->voter ? "voter" : "learner", "leader",
                          m->id == st->leader);
    if (st->role == QRAFT_ROLE_LEADER) {
      json_object_set_new(o, "match", json_integer((json_int_t)m->match));
    }
    json_t *rl = json_array();
    for (uint32_t k = 0; k < m->addr.relays_n; k++) {
      char rh[QRAFT_NODE_ID_HEX_SIZE], ra[80], rt[200];
      qraft_node_id_to_hex(&m->addr.relays[k].id, rh);
      kv_format_addr(&m->addr.relays[k].addr, ra, sizeof ra);
      snprintf(rt, sizeof rt, "%s@%s", rh, ra);
      json_array_append_new(rl, json_string(rt));
    }
    json_object_set_new(o, "relays", rl);
    if (m->id != st->id) {
      json_object_set_new(o, "connected", json_boolean(m->connected));
      json_object_set_new(o, "path",
                          json_string(qraft_path_kind_name(m->path)));
      if (m->direct_addr.ss_family != 0) {
        char da[80];
        kv_format_addr(&m->direct_addr, da, sizeof da);
        json_object_set_new(o, "direct_addr", json_string(da));
      }
      json_object_set_new(
          o, "time_to_direct_ms",
          m->time_to_direct_ns == 0
              ? json_null()
              : json_real((double)m->time_to_direct_ns / 1e6));
      json_object_set_new(o, "path_fallbacks",
                          json_integer((json_int_t)m->path_fallbacks));
      json_object_set_new(o, "path_upgrades",
                          json_integer((json_int_t)m->path_upgrades));
      json_object_set_new(o, "pings_out",
                          json_integer((json_int_t)m->path_pings_out));
      json_object_set_new(o, "pongs_in",
                          json_integer((json_int_t)m->path_pongs_in));
      json_object_set_new(o, "call_me_maybe_out",
                          json_integer((json_int_t)m->path_call_me_maybe_out));
      json_object_set_new(o, "call_me_maybe_in",
                          json_integer((json_int_t)m->path_call_me_maybe_in));
      json_object_set_new(o, "heard_ms",
                          m->heard_ms == UINT64_MAX
                              ? json_null()
                              : json_integer((json_int_t)m->heard_ms));
    }
    json_array_append_new(arr, o);
  }
  return arr;
}

static enum MHD_Result status_get(http_ctx *h, struct MHD_Connection *c) {
  qraft_node_status st;
  qraft_node_status_get(kv_server_node(h->srv), &st);
  char hex[QRAFT_NODE_ID_HEX_SIZE] = "", lhex[QRAFT_NODE_ID_HEX_SIZE], lh[256];
  qraft_node_addr self;
  qraft_node_addr_of(kv_server_node(h->srv), &self);
  qraft_node_id_to_hex(&self.id, hex);
  member_names(h, &st, st.leader, lhex, lh, sizeof lh);
  /* Not the digest nor the count of keys: those read the whole state
   * (GET /v1/digest), and a status must cost the same whatever its size. */
  uint64_t kv_applied = 0;
  kv_store_digest(kv_server_store(h->srv), NULL, NULL, &kv_applied);
  json_t *j = json_pack(
      "{s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:b}",
      "id", hex, "role", qraft_role_name(st.role), "leader", lhex,
      "leader_http", lh, "term", (json_int_t)st.term, "commit",
      (json_int_t)st.commit, "applied", (json_int_t)st.applied, "last_index",
      (json_int_t)st.last_index, "snapshot_index",
      (json_int_t)st.snapshot_index, "kv_applied", (json_int_t)kv_applied,
      "joint", st.joint);
  kv_counters kc;
  kv_store_counters(kv_server_store(h->srv), &kc);
  json_object_set_new(j, "kv_durable", json_integer((json_int_t)kc.durable));
  char cid[20];
  snprintf(cid, sizeof cid, "%016llx",
           (unsigned long long)kv_server_cluster_id(h->srv));
  json_object_set_new(j, "cluster_id", json_string(cid));
  json_object_set_new(j, "map_bytes", json_integer((json_int_t)kc.map_bytes));
  json_object_set_new(j, "map_used_bytes",
                      json_integer((json_int_t)kc.map_used_bytes));
  json_object_set_new(j, "map_full", json_boolean(kc.full));
  json_t *al = json_array();
  if (st.alarms & QRAFT_ALARM_NOSPACE) json_array_append_new(al, json_string("nospace"));
  json_object_set_new(j, "alarms", al);
  json_object_set_new(j, "alarm_why", json_string(st.alarm_why));
  json_object_set_new(j, "voters_in_alarm",
                      json_integer((json_int_t)st.voters_in_alarm));
  json_object_set_new(j, "alarm_quorum", json_boolean(st.alarm_quorum));
  if (st.space_free_bytes != UINT64_MAX) {
    json_object_set_new(j, "space_free_bytes",
                        json_integer((json_int_t)st.space_free_bytes));
  }
  json_object_set_new(j, "writes_held", json_integer((json_int_t)st.writes_held));
  json_object_set_new(j, "apply_waiting_entries",
                      json_integer((json_int_t)st.apply_waiting_entries));
  json_object_set_new(j, "members", members_json(h, &st));
  json_t *rs = json_array();
  for (uint32_t k = 0; k < st.relays_n; k++) {
    const qraft_relay_status *r = &st.relays[k];
    char rh[QRAFT_NODE_ID_HEX_SIZE], ra[80], ob[80] = "";
    qraft_node_id_to_hex(&r->relay.id, rh);
    kv_format_addr(&r->relay.addr, ra, sizeof ra);
    if (r->observed_set) kv_format_addr(&r->observed, ob, sizeof ob);
    json_array_append_new(
        rs, json_pack("{s:s, s:s, s:b, s:b, s:s, s:f, s:I, s:I, s:I, s:b}",
                      "id", rh, "addr", ra, "home", r->home, "connected",
                      r->up, "observed_addr", ob, "rtt_ms",
                      (double)r->rtt_ns / 1e6, "datagrams_out",
                      (json_int_t)r->datagrams_out, "datagrams_in",
                      (json_int_t)r->datagrams_in, "drops",
                      (json_int_t)r->drops, "id_elsewhere", r->elsewhere));
  }
  json_object_set_new(j, "relays", rs);
  return reply_json(c, 200, j);
}

/* ---- GET /v1/snapshot: a backup (backup.c has the format) ----
 * The header, then the state from a view of the store stepped as the
 * client reads (a few hundred KiB in memory whatever the state's size),
 * then the trailer with the CRC of all before it. */

#define KV_BACKUP_STEP_BYTES (256 * 1024)

typedef struct backup_stream {
  kv_store *store;
  void *view;
  uint8_t *buf;
  size_t len, off, cap;
  uint32_t crc;
  uint64_t state_bytes;
  kv_state_scan scan; /* the keys' digest, for the trailer */
  int phase; /* 1: the state's steps, 2: all queued */
  bool failed;
} backup_stream;

static int backup_put(void *ctx, const void *data, size_t len) {
  backup_stream *b = ctx;
  if (b->len + len > b->cap) {
    size_t cap = b->cap * 2 > b->len + len ? b->cap * 2 : b->len + len;
    uint8_t *nb = realloc(b->buf, cap);
    if (nb == NULL) return -ENOMEM;
    b->buf = nb;
    b->cap = cap;
  }
  memcpy(b->buf + b->len, data, len);
  b->len += len;
  return 0;
}

static int backup_state_put(void *ctx, const void *data, size_t len) {
  backup_stream *b = ctx;
  b->crc = qraft_crc32c(b->crc, data, len);
  b->state_bytes += len;
  kv_state_scan_feed(&b->scan, data, len);
  return backup_put(ctx, data, len);
}

static ssize_t backup_read(void *cls, uint64_t pos, char *out, size_t max) {
  (void)pos;
  backup_stream *b = cls;
  while (b->off == b->len && b->phase == 1) {
    b->off = b->len = 0;
    int rv = kv_store_view_step(b->store, b->view, KV_BACKUP_STEP_BYTES,
                                backup_state_put, b);
    if (rv < 0) {
      kv_log(QRAFT_LOG_WARN, "a backup failed reading the state: %s\n",
              qraft_strerror(rv));
      b->failed = true;
      return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    if (rv == 0) {
      uint8_t t[KV_BACKUP_TRAILER_BYTES];
      if (!kv_state_scan_done(&b->scan)) {
        kv_log(QRAFT_LOG_WARN, "a backup's state does not parse (a bug)\n");
        return MHD_CONTENT_READER_END_WITH_ERROR;
      }
      kv_backup_trailer(t, b->state_bytes, b->scan.digest, b->crc);
      if (backup_put(b, t, sizeof t) != 0) return MHD_CONTENT_READER_END_WITH_ERROR;
      b->phase = 2;
    }
  }
  if (b->off == b->len) return MHD_CONTENT_READER_END_OF_STREAM;
  size_t k = b->len - b->off < max ? b->len - b->off : max;
  memcpy(out, b->buf + b->off, k);
  b->off += k;
  return (ssize_t)k;
}

static void backup_free(void *cls) {
  backup_stream *b = cls;
  if (b->view != NULL) kv_store_view_end(b->store, b->view);
  free(b->buf);
  free(b);
}

static enum MHD_Result snapshot_get(http_ctx *h, struct MHD_Connection *c,
                                    req *r) {
  enum MHD_Result mr;
  const char *stale = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "stale");
  if (!(stale != NULL && strcmp(stale, "1") == 0) && read_point(h, c, r, &mr) != 0) {
    return mr;
  }
  backup_stream *b = calloc(1, sizeof *b);
  if (b == NULL) return reply_err(c, 500, "internal", "out of memory");
  b->store = kv_server_store(h->srv);
  b->phase = 1;
  uint64_t index = 0;
  int rv = kv_store_view_begin(b->store, &index, &b->view);
  if (rv != 0) {
    free(b);
    return reply_err(c, 503, "unavailable", "the state cannot be read now");
  }
  kv_state_scan_init(&b->scan, index);
  uint8_t hd[KV_BACKUP_HEADER_BYTES];
  kv_backup_header(hd, kv_server_cluster_id(h->srv), index,
                   (uint64_t)time(NULL));
  b->crc = qraft_crc32c(0, hd, sizeof hd);
  if (backup_put(b, hd, sizeof hd) != 0) {
    backup_free(b);
    return reply_err(c, 500, "internal", "out of memory");
  }
  struct MHD_Response *resp = MHD_create_response_from_callback(
      MHD_SIZE_UNKNOWN, 64 * 1024, backup_read, b, backup_free);
  if (resp == NULL) {
    backup_free(b);
    return MHD_NO;
  }
  char ix[24];
  snprintf(ix, sizeof ix, "%llu", (unsigned long long)index);
  MHD_add_response_header(resp, "Content-Type", "application/octet-stream");
  MHD_add_response_header(resp, "X-Qraft-Index", ix);
  enum MHD_Result ret = MHD_queue_response(c, 200, resp);
  MHD_destroy_response(resp);
  return ret;
}

static enum MHD_Result digest_get(http_ctx *h, struct MHD_Connection *c) {
  uint64_t digest = 0, keys = 0, applied = 0;
  kv_store_digest(kv_server_store(h->srv), &digest, &keys, &applied);
  char dg[20];
  snprintf(dg, sizeof dg, "%016llx", (unsigned long long)digest);
  return reply_json(c, 200, json_pack("{s:s, s:I, s:I}", "digest", dg, "keys",
                                      (json_int_t)keys, "applied",
                                      (json_int_t)applied));
}

/* Membership changes and transfers wait up to 10 s. */
#define KV_MEMBERSHIP_TIMEOUT_MS 10000

enum member_op { MEMBER_PROMOTE, MEMBER_ADD_VOTER, MEMBER_ADD_LEARNER,
                 MEMBER_REMOVE, MEMBER_TRANSFER };

typedef struct member_arg {
  enum member_op what;
  const qraft_node_addr *addr;
  qraft_id id;
} member_arg;

static int start_member(qraft_node *node, void *arg, op *o) {
  member_arg *a = arg;
  switch (a->what) {
  case MEMBER_PROMOTE: return qraft_node_promote(node, a->id, done_cb, o);
  case MEMBER_ADD_VOTER: return qraft_node_add_voter(node, a->addr, done_cb, o);
  case MEMBER_ADD_LEARNER:
    return qraft_node_add_learner(node, a->addr, done_cb, o);
  case MEMBER_REMOVE: return qraft_node_remove(node, a->id, done_cb, o);
  case MEMBER_TRANSFER: return qraft_node_transfer(node, a->id, done_cb, o);
  }
  return QRAFT_ECONFIG;
}

/* Starts a membership request; `ok` (owned) is the answer once it is
 * done (member_finish, after the resume). */
static enum MHD_Result member_begin(http_ctx *h, struct MHD_Connection *c,
                                    req *r, member_arg *a, json_t *ok) {
  int rv = op_begin(h, c, r, KV_MEMBERSHIP_TIMEOUT_MS, start_member, a);
  if (rv != 0) {
    json_decref(ok);
    if (rv == -ENOMEM) return reply_err(c, 503, "no_memory", "out of memory");
    return reply_node_err(h, c, rv, 0, false);
  }
  r->ok = ok;
  return MHD_YES;
}

static enum MHD_Result member_finish(http_ctx *h, struct MHD_Connection *c,
                                     req *r) {
  qraft_id leader = 0;
  int st = op_result(h, r, &leader);
  if (st != 0) {
    return reply_node_err(h, c, st, leader, st != QRAFT_ENOTLEADER);
  }
  json_t *ok = r->ok;
  r->ok = NULL;
  return reply_json(c, 200, ok);
}

static enum MHD_Result members_post(http_ctx *h, struct MHD_Connection *c,
                                    req *r) {
  json_t *j = json_loadb(r->body ? r->body : "", r->len, 0, NULL);
  const char *id = j ? json_string_value(json_object_get(j, "id")) : NULL;
  const char *addr = j ? json_string_value(json_object_get(j, "addr")) : NULL;
  const char *role = j ? json_string_value(json_object_get(j, "role")) : NULL;
  if (role == NULL) role = "voter";
  json_t *rj = j ? json_object_get(j, "relays") : NULL;
  qraft_node_addr a;
  memset(&a, 0, sizeof a);
  bool addr_ok = addr != NULL && addr[0] != 0 &&
                 kv_parse_hostport(addr, &a.addrs[0]) == 0;
  a.addrs_n = addr_ok ? 1 : 0;
  bool addr_bad = addr != NULL && addr[0] != 0 && !addr_ok;
  bool relays_ok = rj == NULL || (json_is_array(rj) &&
                                  json_array_size(rj) <= QRAFT_NODE_RELAYS_MAX);
  for (size_t k = 0; relays_ok && rj != NULL && k < json_array_size(rj); k++) {
    const char *rt = json_string_value(json_array_get(rj, k));
    relays_ok = rt != NULL && kv_parse_relay(rt, &a.relays[k]) == 0;
    a.relays_n += relays_ok;
  }
  if (id == NULL || qraft_node_id_parse(id, &a.id) != 0 || !relays_ok ||
      addr_bad ||
      (strcmp(role, "voter") != 0 && strcmp(role, "learner") != 0)) {
    json_decref(j);
    return reply_err(c, 400, "malformed",
                     "want {\"id\": 64-hex node id, \"addr\": \"host:port\", "
                     "\"relays\": [\"ID@HOST:PORT\", ...] (optional, at most "
                     "2), \"role\": \"voter\"|\"learner\"}");
  }
  qraft_node *node = kv_server_node(h->srv);
  qraft_node_status st;
  qraft_node_status_get(node, &st);
  qraft_id rid = qraft_node_raft_id(&a.id);
  const qraft_member_status *cur = NULL;
  for (uint32_t i = 0; i < st.members_n; i++) {
    if (st.members[i].id == rid) cur = &st.members[i];
  }
  bool want_voter = strcmp(role, "voter") == 0;
  json_t *ok = json_pack("{s:s, s:s}", "id", id, "role", role);
  json_decref(j); /* id, addr and role point into it */
  if (cur != NULL && (cur->voter || !want_voter)) {
    json_object_set_new(ok, "changed", json_false());
    return reply_json(c, 200, ok); /* already there */
  }
  member_arg ma = {.what = MEMBER_PROMOTE, .addr = &a, .id = rid};
  if (cur == NULL) {
    if (!addr_ok && a.relays_n == 0) {
      json_decref(ok);
      return reply_err(c, 400, "malformed",
                       "addr must be host:port (or give relays)");
    }
    ma.what = want_voter ? MEMBER_ADD_VOTER : MEMBER_ADD_LEARNER;
  }
  json_object_set_new(ok, "changed", json_true());
  return member_begin(h, c, r, &ma, ok);
}

static enum MHD_Result members_delete(http_ctx *h, struct MHD_Connection *c,
                                      req *r, const char *id) {
  qraft_node_id nid;
  if (qraft_node_id_parse(id, &nid) != 0) {
    return reply_err(c, 400, "malformed", "want /v1/members/{64-hex id}");
  }
  member_arg ma = {.what = MEMBER_REMOVE, .id = qraft_node_raft_id(&nid)};
  return member_begin(h, c, r, &ma,
                      json_pack("{s:s, s:b}", "id", id, "removed", 1));
}

static enum MHD_Result transfer_post(http_ctx *h, struct MHD_Connection *c,
                                     req *r) {
  qraft_node *node = kv_server_node(h->srv);
  qraft_node_status st;
  qraft_node_status_get(node, &st);
  json_t *j = r->len ? json_loadb(r->body, r->len, 0, NULL) : json_object();
  if (j == NULL || !json_is_object(j)) {
    json_decref(j);
    return reply_err(c, 400, "malformed", "want {\"id\": 64-hex} or {}");
  }
  const char *id = json_string_value(json_object_get(j, "id"));
  qraft_id to = 0;
  if (id != NULL) {
    qraft_node_id nid;
    if (qraft_node_id_parse(id, &nid) != 0) {
      json_decref(j);
      return reply_err(c, 400, "malformed", "bad id");
    }
    to = qraft_node_raft_id(&nid);
  } else {
    to = kv_best_voter(&st);
  }
  json_decref(j);
  if (to == 0) return reply_err(c, 400, "malformed", "no other voter");
  char hex[QRAFT_NODE_ID_HEX_SIZE], http[256];
  member_names(h, &st, to, hex, http, sizeof http);
  member_arg ma = {.what = MEMBER_TRANSFER, .id = to};
  return member_begin(h, c, r, &ma,
                      json_pack("{s:s, s:s}", "leader", hex, "leader_http",
                                http));
}

static enum MHD_Result metrics_get(http_ctx *h, struct MHD_Connection *c) {
  qraft_node *node = kv_server_node(h->srv);
  size_t need = qraft_node_metrics_text(node, NULL, 0);
  size_t cap = need + 4096;
  char *buf = malloc(cap);
  if (buf == NULL) return reply_err(c, 503, "no_memory", "out of memory");
  size_t n = qraft_node_metrics_text(node, buf, need + 1);
  if (n > need) n = need;
  kv_counters k;
  kv_store_counters(kv_server_store(h->srv), &k);
  n += (size_t)snprintf(
      buf + n, cap - n,
      "# TYPE qraft_kv_puts_total counter\nqraft_kv_puts_total %llu\n"
      "# TYPE qraft_kv_deletes_total counter\nqraft_kv_deletes_total %llu\n"
      "# TYPE qraft_kv_cas_total counter\nqraft_kv_cas_total %llu\n"
      "# TYPE qraft_kv_cas_failed_total counter\nqraft_kv_cas_failed_total %llu\n"
      "# TYPE qraft_kv_snapshots_total counter\nqraft_kv_snapshots_total %llu\n"
      "# TYPE qraft_kv_restores_total counter\nqraft_kv_restores_total %llu\n"
      "# TYPE qraft_kv_restores_skipped_total counter\n"
      "qraft_kv_restores_skipped_total %llu\n"
      "# TYPE qraft_kv_entries_skipped_total counter\n"
      "qraft_kv_entries_skipped_total %llu\n"
      "# HELP qraft_kv_state_flushes_total Commits of applied writes to "
      "LMDB (synced, off the Raft loop).\n"
      "# TYPE qraft_kv_state_flushes_total counter\n"
      "qraft_kv_state_flushes_total %llu\n"
      "# TYPE qraft_kv_state_flush_keys_total counter\n"
      "qraft_kv_state_flush_keys_total %llu\n"
      "# HELP qraft_kv_state_flush_seconds_total Time in those commits.\n"
      "# TYPE qraft_kv_state_flush_seconds_total counter\n"
      "qraft_kv_state_flush_seconds_total %.6f\n"
      "# TYPE qraft_kv_state_flush_seconds_max gauge\n"
      "qraft_kv_state_flush_seconds_max %.6f\n"
      "# HELP qraft_kv_state_durable_index The index LMDB holds, synced.\n"
      "# TYPE qraft_kv_state_durable_index gauge\n"
      "qraft_kv_state_durable_index %llu\n"
      "# HELP qraft_kv_state_overlay_keys Applied writes not yet in LMDB.\n"
      "# TYPE qraft_kv_state_overlay_keys gauge\n"
      "qraft_kv_state_overlay_keys %llu\n"
      "# TYPE qraft_kv_state_overlay_bytes gauge\n"
      "qraft_kv_state_overlay_bytes %llu\n"
      "# HELP qraft_kv_state_map_bytes LMDB's map: the most the state may "
      "hold (--map-size).\n"
      "# TYPE qraft_kv_state_map_bytes gauge\nqraft_kv_state_map_bytes %llu\n"
      "# TYPE qraft_kv_state_map_used_bytes gauge\n"
      "qraft_kv_state_map_used_bytes %llu\n"
      "# HELP qraft_kv_state_map_full 1 while the map is full (writes to "
      "this member get 507).\n"
      "# TYPE qraft_kv_state_map_full gauge\nqraft_kv_state_map_full %d\n"
      "# TYPE qraft_kv_state_map_full_total counter\n"
      "qraft_kv_state_map_full_total %llu\n"
      "# TYPE qraft_kv_http_requests_total counter\n"
      "qraft_kv_http_requests_total %llu\n"
      "# TYPE qraft_kv_http_errors_total counter\nqraft_kv_http_errors_total %llu\n"
      "# TYPE qraft_kv_http_too_large_total counter\n"
      "qraft_kv_http_too_large_total %llu\n"
      "# TYPE qraft_kv_http_unauthorized_total counter\n"
      "qraft_kv_http_unauthorized_total %llu\n"
      "# TYPE qraft_kv_http_timeouts_total counter\n"
      "qraft_kv_http_timeouts_total %llu\n",
      (unsigned long long)k.puts, (unsigned long long)k.dels,
      (unsigned long long)k.cases, (unsigned long long)k.cas_failed,
      (unsigned long long)k.snapshots, (unsigned long long)k.restores,
      (unsigned long long)k.restores_skipped,
      (unsigned long long)k.entries_skipped,
      (unsigned long long)k.flushes, (unsigned long long)k.flush_keys,
      (double)k.flush_us_sum / 1e6, (double)k.flush_us_max / 1e6,
      (unsigned long long)k.durable, (unsigned long long)k.overlay_keys,
      (unsigned long long)k.overlay_bytes, (unsigned long long)k.map_bytes,
      (unsigned long long)k.map_used_bytes, k.full ? 1 : 0,
      (unsigned long long)k.map_full,
      (unsigned long long)atomic_load(&m_requests),
      (unsigned long long)atomic_load(&m_errors),
      (unsigned long long)atomic_load(&m_too_large),
      (unsigned long long)atomic_load(&m_unauth),
      (unsigned long long)atomic_load(&m_timeouts));
  if (n >= cap) n = cap - 1;
  pthread_mutex_lock(&m_hmu);
  qraft_histogram wh[KV_W_N];
  memcpy(wh, m_write_us, sizeof wh);
  pthread_mutex_unlock(&m_hmu);
  for (int k = 0; k < KV_W_N; k++) {
    size_t need_h = qraft_histogram_prometheus(&wh[k], m_write_name[k], 1e6,
                                               NULL, 0);
    char *nb = realloc(buf, n + need_h + 1);
    if (nb == NULL) break;
    buf = nb;
    n += qraft_histogram_prometheus(&wh[k], m_write_name[k], 1e6, buf + n,
                                    need_h + 1);
  }
  return reply_text(c, 200, "text/plain; version=0.0.4", buf, n);
}

/* ---- routing ---- */

static enum MHD_Result route(http_ctx *h, struct MHD_Connection *c,
                             const char *url, const char *method, req *r) {
  bool get = strcmp(method, "GET") == 0, put = strcmp(method, "PUT") == 0,
       del = strcmp(method, "DELETE") == 0, post = strcmp(method, "POST") == 0;
  if (strncmp(url, "/v1/kv/", 7) == 0 && url[7] != 0) {
    const char *key = url + 7;
    size_t kl = strlen(key);
    if (kl > KV_KEY_BYTES_MAX) {
      atomic_fetch_add(&m_too_large, 1);
      return reply_err(c, 413, "too_large", "key longer than 1024 bytes");
    }
    if (!valid_utf8(key, kl)) {
      return reply_err(c, 400, "malformed", "key is not UTF-8");
    }
    if (get) {
      const char *s = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "stale");
      return kv_get(h, c, r, key, kl, s != NULL && strcmp(s, "1") == 0);
    }
    if (put) return kv_put(h, c, key, kl, r);
    if (del) return kv_del(h, c, key, kl, r);
    return reply_err(c, 405, "method", "GET, PUT or DELETE");
  }
  if (strcmp(url, "/v1/kv") == 0 || strcmp(url, "/v1/kv/") == 0) {
    if (get) return kv_list(h, c, r);
    return reply_err(c, 405, "method", "GET");
  }
  if (strcmp(url, "/v1/status") == 0 && get) return status_get(h, c);
  if (strcmp(url, "/v1/digest") == 0 && get) return digest_get(h, c);
  if (strcmp(url, "/v1/snapshot") == 0 && get) return snapshot_get(h, c, r);
  if (strcmp(url, "/metrics") == 0 && get) return metrics_get(h, c);
  if (strcmp(url, "/v1/members") == 0) {
    if (get) {
      qraft_node_status st;
      qraft_node_status_get(kv_server_node(h->srv), &st);
      return reply_json(c, 200, json_pack("{s:o}", "members", members_json(h, &st)));
    }
    if (post) return r->op ? member_finish(h, c, r) : members_post(h, c, r);
    return reply_err(c, 405, "method", "GET or POST");
  }
  if (strncmp(url, "/v1/members/", 12) == 0 && del) {
    return r->op ? member_finish(h, c, r) : members_delete(h, c, r, url + 12);
  }
  if (strcmp(url, "/v1/transfer") == 0 && post) {
    return r->op ? member_finish(h, c, r) : transfer_post(h, c, r);
  }
  return reply_err(c, 404, "no_route", "unknown route");
}

/* With a client CA: the connection's client certificate was signed by it
 * (checked per request: a session's certificate cannot change). */
static bool client_cert_ok(http_ctx *h, struct MHD_Connection *c) {
  if (h->tls_client_ca == NULL) return true;
  const union MHD_ConnectionInfo *ci =
      MHD_get_connection_info(c, MHD_CONNECTION_INFO_GNUTLS_SESSION);
  if (ci == NULL || ci->tls_session == NULL) return false;
  unsigned status = 0;
  return gnutls_certificate_verify_peers2(
             (gnutls_session_t)ci->tls_session, &status) == 0 &&
         status == 0;
}

static bool authorized(http_ctx *h, struct MHD_Connection *c) {
  if (h->token == NULL) return true;
  const char *a = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
  if (a == NULL || strncmp(a, "Bearer ", 7) != 0) return false;
  const char *t = a + 7;
  size_t n = strlen(h->token);
  if (strlen(t) != n) return false;
  unsigned char diff = 0; /* constant time in the token's length */
  for (size_t i = 0; i < n; i++) diff |= (unsigned char)(t[i] ^ h->token[i]);
  return diff == 0;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c,
                                  const char *url, const char *method,
                                  const char *version, const char *upload,
                                  size_t *upload_n, void **con_cls) {
  (void)version;
  http_ctx *h = cls;
  req *r = *con_cls;
  if (r == NULL) {
    r = calloc(1, sizeof *r);
    if (r == NULL) return MHD_NO;
    r->t_recv_ns = kv_now_ns();
    *con_cls = r;
    atomic_fetch_add(&m_requests, 1);
    return MHD_YES;
  }
  if (*upload_n > 0) {
    if (!r->too_large) {
      if (r->len + *upload_n > KV_BODY_BYTES_MAX) {
        r->too_large = true;
        free(r->body);
        r->body = NULL;
        r->len = 0;
      } else {
        char *nb = realloc(r->body, r->len + *upload_n + 1);
        if (nb == NULL) return MHD_NO;
        memcpy(nb + r->len, upload, *upload_n);
        r->body = nb;
        r->len += *upload_n;
        r->body[r->len] = 0;
      }
    }
    *upload_n = 0;
    return MHD_YES;
  }
  if (!client_cert_ok(h, c)) {
    atomic_fetch_add(&m_unauth, 1);
    return reply_err(c, 401, "unauthorized",
                     "a client certificate signed by the client CA is required");
  }
  if (!authorized(h, c)) {
    atomic_fetch_add(&m_unauth, 1);
    return reply_err(c, 401, "unauthorized", "missing or wrong bearer token");
  }
  if (r->too_large) {
    atomic_fetch_add(&m_too_large, 1);
    return reply_err(c, 413, "too_large", "body larger than the limit");
  }
  return route(h, c, url, method, r);
}

static void on_done(void *cls, struct MHD_Connection *c, void **con_cls,
                    enum MHD_RequestTerminationCode toe) {
  (void)cls;
  (void)c;
  (void)toe;
  req *r = *con_cls;
  if (r != NULL) {
    /* Never while the op waits: a suspended connection is neither polled
     * nor closed, and kv_http_stop resumes every one before stopping. */
    if (r->op != NULL) op_unref(r->op);
    json_decref(r->ok);
    free(r->body);
    free(r);
    *con_cls = NULL;
  }
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap) {
  (void)cls;
  (void)fmt;
  (void)ap; /* connection-level noise (resets, timeouts) is not logged */
}

int kv_http_start(kv_server *srv, const char *hostport, const char *token,
                  const kv_http_tls *tls, void **daemon_out) {
  struct sockaddr_storage sa;
  if (kv_parse_hostport(hostport, &sa) != 0) return -1;
  http_ctx *h = calloc(1, sizeof *h);
  if (h == NULL) return -1;
  h->srv = srv;
  h->token = token ? strdup(token) : NULL;
  if (token != NULL && h->token == NULL) goto err_free_ctx;
  if (tls != NULL && tls->cert_pem != NULL) {
    h->tls_cert = strdup(tls->cert_pem);
    h->tls_key = strdup(tls->key_pem);
    h->tls_client_ca = tls->client_ca_pem ? strdup(tls->client_ca_pem) : NULL;
    if (h->tls_cert == NULL || h->tls_key == NULL ||
        (tls->client_ca_pem != NULL && h->tls_client_ca == NULL)) {
      goto err_free_ctx;
    }
  }
  atomic_init(&h->refs, 1);
  pthread_mutex_init(&h->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&h->cv, &ca);
  pthread_condattr_destroy(&ca);
  if (pthread_create(&h->timer, NULL, timer_main, h) != 0) goto err_destroy_sync;
  /* A few polling threads, each with its share of the connections; a
   * request that waits for the node suspends its connection instead of
   * blocking a thread (see "waiting for the node" above). poll(), not
   * epoll: with epoll (edge-triggered in libmicrohttpd 0.9.75) and
   * connections suspended and resumed thousands of times a second, some
   * keep-alive connections' next request went unread until the client gave
   * up (10 s) at 256 clients; with poll() the same runs took at most 0.5 s
   * (docs/kv.md, "How a request is served"). */
  unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL |
                   MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
  if (sa.ss_family == AF_INET6) flags |= MHD_USE_IPv6;
  struct MHD_OptionItem tls_opts[4] = {{MHD_OPTION_END, 0, NULL}};
  if (h->tls_cert != NULL) {
    flags |= MHD_USE_TLS;
    int k = 0;
    tls_opts[k++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_KEY, 0, h->tls_key};
    tls_opts[k++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_CERT, 0, h->tls_cert};
    if (h->tls_client_ca != NULL) {
      /* asks every client for a certificate (optional in the handshake;
       * client_cert_ok refuses a request without one) */
      tls_opts[k++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_TRUST, 0,
                                              h->tls_client_ca};
    }
    tls_opts[k] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
  }
  uint16_t port = ntohs(sa.ss_family == AF_INET
                            ? ((struct sockaddr_in *)&sa)->sin_port
                            : ((struct sockaddr_in6 *)&sa)->sin6_port);
  h->d = MHD_start_daemon(
      flags, port, NULL, NULL, on_request, h, MHD_OPTION_SOCK_ADDR,
      (struct sockaddr *)&sa, MHD_OPTION_THREAD_POOL_SIZE,
      (unsigned)KV_HTTP_THREADS, MHD_OPTION_CONNECTION_LIMIT,
      (unsigned)KV_CONNECTIONS_MAX, MHD_OPTION_CONNECTION_TIMEOUT,
      (unsigned)KV_CONNECTION_TIMEOUT_S, MHD_OPTION_NOTIFY_COMPLETED, on_done,
      NULL, MHD_OPTION_THREAD_STACK_SIZE, (size_t)(512 * 1024),
      MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, NULL, MHD_OPTION_ARRAY,
      tls_opts, MHD_OPTION_END);
  if (h->d == NULL) goto err_stop_timer;
  *daemon_out = h;
  return 0;

err_stop_timer:
  pthread_mutex_lock(&h->mu);
  h->timer_stop = true;
  pthread_cond_signal(&h->cv);
  pthread_mutex_unlock(&h->mu);
  pthread_join(h->timer, NULL);
err_destroy_sync:
  pthread_cond_destroy(&h->cv);
  pthread_mutex_destroy(&h->mu);
err_free_ctx:
  free(h->token);
  free(h->tls_cert);
  free(h->tls_key);
  free(h->tls_client_ca);
  free(h);
  return -1;
}

void kv_http_stop(void *daemon) {
  http_ctx *h = daemon;
  if (h == NULL) return;
  /* No new wait from here on, and none left suspended: libmicrohttpd must
   * not stop with a suspended connection. The node may still call back
   * later (it is freed after us); those callbacks find their ops ended. */
  pthread_mutex_lock(&h->mu);
  h->stopping = true;
  while (h->waiting != NULL) op_end_locked(h->waiting, OP_SHUTDOWN);
  h->timer_stop = true;
  pthread_cond_signal(&h->cv);
  pthread_mutex_unlock(&h->mu);
  pthread_join(h->timer, NULL);
  MHD_stop_daemon(h->d);
  http_unref(h);
}
