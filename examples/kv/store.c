/*
 * The qraft-kv state machine, in LMDB: database "kv" maps a key to its
 * revision (the log index of the entry that last wrote it, u64 LE) and its
 * value; database "meta" holds the applied index ("applied") and the
 * members' HTTP addresses ("http/<hex id>"). Every apply writes its entries
 * and the applied index in one transaction, so the state on disk is always
 * the state as of the index it records.
 *
 * Restart: the node restores the latest snapshot and re-applies the log
 * after it. A snapshot at or below the index LMDB already holds is skipped
 * (the state already contains it), and entries at or below it are skipped
 * on apply, so a restart resumes where the state left off. A snapshot above
 * it (LMDB lost its last transactions in an OS crash, or this member was
 * behind) replaces the whole database in one transaction.
 *
 * Apply runs on the node's loop thread only; HTTP threads read in their own
 * read transactions (MDB_NOTLS). Never call the node from here.
 */
#include "kv.h"

#include <lmdb.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define KV_SNAP_MAGIC 0x514b5631u /* "QKV1" */
#define KV_MAP_BYTES (4ull << 30)

struct kv_store {
  MDB_env *env;
  MDB_dbi kv, meta;
  uint64_t applied; /* loop thread: the index the database holds */
  pthread_mutex_t mu; /* counters */
  kv_counters ctr;
#ifdef QRAFT_CANARY_KV_RESTORE_SKIPPED_AT_START
  bool restore_seen;
#endif
};

static void put_u64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++) {
    p[i] = (uint8_t)(v >> (8 * i));
  }
}
static uint64_t get_u64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) {
    v = (v << 8) | p[i];
  }
  return v;
}
static void put_u32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++) {
    p[i] = (uint8_t)(v >> (8 * i));
  }
}
static uint32_t get_u32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
         (uint32_t)p[3] << 24;
}

/* ---- command codec: op, cmp, klen u32, vlen u32, elen u32, erev u64,
 * key, value, expected ---- */
#define CMD_HDR 22

size_t kv_cmd_encode(const kv_cmd *c, uint8_t **out) {
  size_t n = CMD_HDR + (size_t)c->key_len + c->value_len + c->expect_len;
  uint8_t *p = malloc(n);
  if (p == NULL) {
    return 0;
  }
  p[0] = c->op;
  p[1] = c->cmp;
  put_u32(p + 2, c->key_len);
  put_u32(p + 6, c->value_len);
  put_u32(p + 10, c->expect_len);
  put_u64(p + 14, c->expect_rev);
  size_t o = CMD_HDR;
  if (c->key_len) memcpy(p + o, c->key, c->key_len);
  o += c->key_len;
  if (c->value_len) memcpy(p + o, c->value, c->value_len);
  o += c->value_len;
  if (c->expect_len) memcpy(p + o, c->expect, c->expect_len);
  *out = p;
  return n;
}

int kv_cmd_decode(const uint8_t *p, size_t n, kv_cmd *c) {
  if (n < CMD_HDR) {
    return -1;
  }
  memset(c, 0, sizeof *c);
  c->op = p[0];
  c->cmp = p[1];
  c->key_len = get_u32(p + 2);
  c->value_len = get_u32(p + 6);
  c->expect_len = get_u32(p + 10);
  c->expect_rev = get_u64(p + 14);
  if ((uint64_t)CMD_HDR + c->key_len + c->value_len + c->expect_len != n ||
      c->key_len == 0 || c->key_len > KV_KEY_BYTES_MAX + 80) {
    return -1;
  }
  c->key = p + CMD_HDR;
  c->value = c->key + c->key_len;
  c->expect = c->value + c->value_len;
  return 0;
}

/* ---- open / close ---- */

int kv_store_open(const char *dir, kv_store **out, char *msg, size_t msg_n) {
  kv_store *s = calloc(1, sizeof *s);
  if (s == NULL) {
    snprintf(msg, msg_n, "out of memory");
    return -1;
  }
  pthread_mutex_init(&s->mu, NULL);
  int rv;
  MDB_txn *t = NULL;
  mkdir(dir, 0700);
  if ((rv = mdb_env_create(&s->env)) != 0 ||
      (rv = mdb_env_set_maxdbs(s->env, 4)) != 0 ||
      (rv = mdb_env_set_mapsize(s->env, KV_MAP_BYTES)) != 0 ||
      (rv = mdb_env_set_maxreaders(s->env, KV_CONNECTIONS_MAX + 16)) != 0 ||
      /* NOMETASYNC: data pages are synced every commit, the meta page with
       * the next; an OS crash may undo the last transaction but never
       * corrupts, and the node's snapshot plus log cover what was undone. */
      (rv = mdb_env_open(s->env, dir, MDB_NOTLS | MDB_NOMETASYNC, 0600)) != 0 ||
      (rv = mdb_txn_begin(s->env, NULL, 0, &t)) != 0 ||
      (rv = mdb_dbi_open(t, "kv", MDB_CREATE, &s->kv)) != 0 ||
      (rv = mdb_dbi_open(t, "meta", MDB_CREATE, &s->meta)) != 0) {
    snprintf(msg, msg_n, "lmdb %s: %s", dir, mdb_strerror(rv));
    if (t) mdb_txn_abort(t);
    if (s->env) mdb_env_close(s->env);
    free(s);
    return -1;
  }
  MDB_val k = {7, "applied"}, v;
  if (mdb_get(t, s->meta, &k, &v) == 0 && v.mv_size == 8) {
    s->applied = get_u64(v.mv_data);
  }
  rv = mdb_txn_commit(t);
  if (rv != 0) {
    snprintf(msg, msg_n, "lmdb %s: commit: %s", dir, mdb_strerror(rv));
    mdb_env_close(s->env);
    free(s);
    return -1;
  }
  *out = s;
  return 0;
}

void kv_store_close(kv_store *s) {
  if (s == NULL) {
    return;
  }
  mdb_env_sync(s->env, 1);
  mdb_env_close(s->env);
  pthread_mutex_destroy(&s->mu);
  free(s);
}

uint64_t kv_store_applied(kv_store *s) {
  uint64_t a = 0;
  kv_store_digest(s, NULL, NULL, &a);
  return a;
}

void kv_store_counters(kv_store *s, kv_counters *out) {
  pthread_mutex_lock(&s->mu);
  *out = s->ctr;
  pthread_mutex_unlock(&s->mu);
}

/* An LMDB failure inside apply or restore leaves the replica unable to
 * follow the log: stop with a message (the node restores on restart). */
static void store_die(const char *what, int rv) {
  fprintf(stderr, "qraft-kv: fatal: lmdb %s: %s\n", what, mdb_strerror(rv));
  abort();
}

/* ---- apply ---- */

static qraft_slice result_of(uint8_t status, uint64_t rev) {
  qraft_buf *b = qraft_buf_new(KV_RESULT_BYTES);
  if (b == NULL) {
    return (qraft_slice){0};
  }
  b->data[0] = status;
  put_u64(b->data + 1, rev);
  b->len = KV_RESULT_BYTES;
  qraft_slice s = qraft_slice_of(b, b->data, KV_RESULT_BYTES);
  qraft_buf_unref(b); /* the slice holds the reference now */
  return s;
}

static uint8_t apply_one(kv_store *s, MDB_txn *t, uint64_t index,
                         const kv_cmd *c, uint64_t *rev_out) {
  MDB_val k = {c->key_len, (void *)c->key}, v;
  if (c->op == KV_OP_SETHTTP) {
    char name[8 + KV_KEY_BYTES_MAX];
    int ln = snprintf(name, sizeof name, "http/%.*s", (int)c->key_len,
                      (const char *)c->key);
    MDB_val mk = {(size_t)ln, name}, mv = {c->value_len, (void *)c->value};
    int rv = mdb_put(t, s->meta, &mk, &mv, 0);
    if (rv != 0) store_die("put meta", rv);
    *rev_out = index;
    return KV_OK;
  }
  int rv = mdb_get(t, s->kv, &k, &v);
  if (rv != 0 && rv != MDB_NOTFOUND) store_die("get", rv);
  bool found = rv == 0 && v.mv_size >= 8;
  uint64_t cur_rev = found ? get_u64(v.mv_data) : 0;
  bool match = true;
  switch (c->cmp) {
  case KV_CMP_NONE:
    break;
  case KV_CMP_REV:
    match = c->expect_rev == 0 ? !found : (found && cur_rev == c->expect_rev);
    break;
  case KV_CMP_VALUE:
    match = found && v.mv_size - 8 == c->expect_len &&
            memcmp((uint8_t *)v.mv_data + 8, c->expect, c->expect_len) == 0;
    break;
  case KV_CMP_ABSENT:
    match = !found;
    break;
  default:
    return KV_BADCMD;
  }
  if (!match) {
    *rev_out = cur_rev;
    pthread_mutex_lock(&s->mu);
    s->ctr.cas_failed++;
    pthread_mutex_unlock(&s->mu);
    return KV_CMPFAIL;
  }
  if (c->op == KV_OP_DEL) {
    if (!found) {
      return KV_NOTFOUND;
    }
    rv = mdb_del(t, s->kv, &k, NULL);
    if (rv != 0) store_die("del", rv);
    *rev_out = index;
    pthread_mutex_lock(&s->mu);
    s->ctr.dels++;
    pthread_mutex_unlock(&s->mu);
    return KV_OK;
  }
  if (c->op != KV_OP_PUT && c->op != KV_OP_CAS) {
    return KV_BADCMD;
  }
  MDB_val nv = {8 + (size_t)c->value_len, NULL};
  rv = mdb_put(t, s->kv, &k, &nv, MDB_RESERVE);
  if (rv != 0) store_die("put", rv);
  put_u64(nv.mv_data, index);
  if (c->value_len) memcpy((uint8_t *)nv.mv_data + 8, c->value, c->value_len);
  *rev_out = index;
  pthread_mutex_lock(&s->mu);
  if (c->op == KV_OP_CAS) s->ctr.cases++; else s->ctr.puts++;
  pthread_mutex_unlock(&s->mu);
  return KV_OK;
}

static void set_applied(kv_store *s, MDB_txn *t, uint64_t index) {
  uint8_t b[8];
  put_u64(b, index);
  MDB_val k = {7, "applied"}, v = {8, b};
  int rv = mdb_put(t, s->meta, &k, &v, 0);
  if (rv != 0) store_die("put applied", rv);
}

static void sm_apply(void *ud, const qraft_entry *es, size_t n,
                     uint64_t last_index, qraft_slice *results) {
  kv_store *s = ud;
  if (last_index <= s->applied) {
    pthread_mutex_lock(&s->mu);
    s->ctr.entries_skipped += n;
    pthread_mutex_unlock(&s->mu);
    return; /* already in the database (a restart re-applies the log) */
  }
  MDB_txn *t;
  int rv = mdb_txn_begin(s->env, NULL, 0, &t);
  if (rv != 0) store_die("begin", rv);
  for (size_t i = 0; i < n; i++) {
    if (es[i].index <= s->applied) {
      continue;
    }
    kv_cmd c;
    uint64_t rev = 0;
    uint8_t st = KV_BADCMD;
    if (kv_cmd_decode(es[i].data.data, es[i].data.len, &c) == 0) {
      st = apply_one(s, t, es[i].index, &c, &rev);
    }
    results[i] = result_of(st, rev);
  }
  set_applied(s, t, last_index);
  rv = mdb_txn_commit(t);
  if (rv != 0) store_die("commit", rv);
  s->applied = last_index;
}

/* ---- snapshot: one read transaction, streamed as records ---- */

typedef struct snap_buf {
  uint8_t b[64 * 1024];
  size_t n;
  qraft_sm_write_fn write;
  void *wctx;
  int rv;
} snap_buf;

static void sb_flush(snap_buf *sb) {
  if (sb->rv == 0 && sb->n > 0) {
    sb->rv = sb->write(sb->wctx, sb->b, sb->n);
  }
  sb->n = 0;
}

static void sb_add(snap_buf *sb, const void *p, size_t n) {
  const uint8_t *q = p;
  while (n > 0 && sb->rv == 0) {
    size_t c = sizeof sb->b - sb->n;
    if (c > n) c = n;
    memcpy(sb->b + sb->n, q, c);
    sb->n += c;
    q += c;
    n -= c;
    if (sb->n == sizeof sb->b) sb_flush(sb);
  }
}

/* record: db (0 kv, 1 meta, 0xff end), klen u32, vlen u32, key, value */
static void sb_record(snap_buf *sb, uint8_t db, const MDB_val *k,
                      const MDB_val *v) {
  uint8_t h[9];
  h[0] = db;
  put_u32(h + 1, (uint32_t)k->mv_size);
  put_u32(h + 5, (uint32_t)v->mv_size);
  sb_add(sb, h, 9);
  sb_add(sb, k->mv_data, k->mv_size);
  sb_add(sb, v->mv_data, v->mv_size);
}

static int sm_snapshot(void *ud, uint64_t *index, qraft_sm_write_fn write,
                       void *wctx) {
  kv_store *s = ud;
  snap_buf *sb = malloc(sizeof *sb);
  if (sb == NULL) {
    return -ENOMEM;
  }
  sb->n = 0;
  sb->write = write;
  sb->wctx = wctx;
  sb->rv = 0;
  MDB_txn *t;
  int rv = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &t);
  if (rv != 0) {
    free(sb);
    return QRAFT_ECORRUPT;
  }
  uint64_t applied = 0;
  MDB_val ak = {7, "applied"}, av;
  if (mdb_get(t, s->meta, &ak, &av) == 0 && av.mv_size == 8) {
    applied = get_u64(av.mv_data);
  }
  uint8_t h[12];
  put_u32(h, KV_SNAP_MAGIC);
  put_u64(h + 4, applied);
  sb_add(sb, h, 12);
  MDB_dbi dbs[2] = {s->kv, s->meta};
  for (int d = 0; d < 2 && sb->rv == 0; d++) {
    MDB_cursor *cur;
    rv = mdb_cursor_open(t, dbs[d], &cur);
    if (rv != 0) {
      sb->rv = QRAFT_ECORRUPT;
      break;
    }
    MDB_val k, v;
    for (rv = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rv == 0 && sb->rv == 0;
         rv = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
      if (d == 1 && k.mv_size == 7 && memcmp(k.mv_data, "applied", 7) == 0) {
        continue;
      }
      sb_record(sb, (uint8_t)d, &k, &v);
    }
    mdb_cursor_close(cur);
  }
  MDB_val e = {0, ""};
  sb_record(sb, 0xff, &e, &e);
  sb_flush(sb);
  mdb_txn_abort(t);
  rv = sb->rv;
  free(sb);
  if (rv == 0) {
    *index = applied;
    pthread_mutex_lock(&s->mu);
    s->ctr.snapshots++;
    pthread_mutex_unlock(&s->mu);
  }
  return rv;
}

/* ---- restore ---- */

static int read_exact(qraft_sm_read_fn read, void *rctx, void *p, size_t n) {
  uint8_t *q = p;
  while (n > 0) {
    size_t got = 0;
    int rv = read(rctx, q, n, &got);
    if (rv != 0) return rv;
    if (got == 0) return QRAFT_ETRUNCATED;
    q += got;
    n -= got;
  }
  return 0;
}

static int sm_restore(void *ud, uint64_t index, qraft_sm_read_fn read,
                      void *rctx) {
  kv_store *s = ud;
#ifdef QRAFT_CANARY_KV_RESTORE_SKIPPED_AT_START
  /* Planted bug (make canaries): the snapshot a member restores at start
   * is taken for one it wrote from its own LMDB, so it is skipped whenever
   * LMDB holds a state. After a power cut undid LMDB's last transactions
   * the snapshot is ahead of LMDB, and the node goes on after the snapshot
   * without the entries in between. */
  if (!s->restore_seen && s->applied > 0) {
    s->restore_seen = true;
    index = s->applied;
  }
  s->restore_seen = true;
#endif
  if (index <= s->applied) {
    /* The database already holds this state and more: a state at a later
     * index of the same log contains every entry the snapshot does. */
    pthread_mutex_lock(&s->mu);
    s->ctr.restores_skipped++;
    pthread_mutex_unlock(&s->mu);
    return 0;
  }
  uint8_t h[12];
  int rv = read_exact(read, rctx, h, 12);
  if (rv != 0) {
    fprintf(stderr, "qraft-kv: restore %llu: header: %s\n",
            (unsigned long long)index, qraft_strerror(rv));
    return rv;
  }
  /* The header holds the index the database held when the snapshot was
   * taken. The node takes it at its own applied index, which may be ahead:
   * empty entries (a new leader's) and configuration entries count as
   * applied but never reach this state machine, so the state is the same.
   * A header ahead of the snapshot is corrupt. */
  if (get_u32(h) != KV_SNAP_MAGIC || get_u64(h + 4) > index) {
    fprintf(stderr, "qraft-kv: restore %llu: bad header (magic %08x, index %llu)\n",
            (unsigned long long)index, get_u32(h),
            (unsigned long long)get_u64(h + 4));
    return QRAFT_ECORRUPT;
  }
  MDB_txn *t;
  rv = mdb_txn_begin(s->env, NULL, 0, &t);
  if (rv != 0) store_die("begin restore", rv);
  if ((rv = mdb_drop(t, s->kv, 0)) != 0 || (rv = mdb_drop(t, s->meta, 0)) != 0) {
    store_die("drop", rv);
  }
  uint8_t *buf = NULL;
  size_t cap = 0;
  for (;;) {
    uint8_t r[9];
    rv = read_exact(read, rctx, r, 9);
    if (rv != 0) break;
    if (r[0] == 0xff) break;
    size_t kl = get_u32(r + 1), vl = get_u32(r + 5);
    if (r[0] > 1 || kl == 0 || kl > 64 * 1024 || vl > 64 * 1024 * 1024) {
      rv = QRAFT_ECORRUPT;
      break;
    }
    if (kl + vl > cap) {
      uint8_t *nb = realloc(buf, kl + vl);
      if (nb == NULL) {
        rv = -ENOMEM;
        break;
      }
      buf = nb;
      cap = kl + vl;
    }
    rv = read_exact(read, rctx, buf, kl + vl);
    if (rv != 0) break;
    MDB_val k = {kl, buf}, v = {vl, buf + kl};
    rv = mdb_put(t, r[0] == 0 ? s->kv : s->meta, &k, &v, 0);
    if (rv != 0) store_die("put restore", rv);
  }
  free(buf);
  if (rv != 0) {
    fprintf(stderr, "qraft-kv: restore %llu: records: %s\n",
            (unsigned long long)index, qraft_strerror(rv));
    mdb_txn_abort(t); /* the old state stays whole */
    return rv;
  }
  set_applied(s, t, index);
  rv = mdb_txn_commit(t);
  if (rv != 0) store_die("commit restore", rv);
  s->applied = index;
  pthread_mutex_lock(&s->mu);
  s->ctr.restores++;
  pthread_mutex_unlock(&s->mu);
  return 0;
}

static const qraft_sm_ops kv_ops = {
    .apply = sm_apply, .snapshot = sm_snapshot, .restore = sm_restore};

const qraft_sm_ops *kv_store_ops(void) { return &kv_ops; }

/* ---- reads (any thread) ---- */

int kv_store_get(kv_store *s, const char *key, size_t key_len, char **val,
                 size_t *val_len, uint64_t *rev) {
  MDB_txn *t;
  if (mdb_txn_begin(s->env, NULL, MDB_RDONLY, &t) != 0) {
    return -1;
  }
  MDB_val k = {key_len, (void *)key}, v;
  int rv = mdb_get(t, s->kv, &k, &v);
  int out = 1;
  if (rv == 0 && v.mv_size >= 8) {
    *rev = get_u64(v.mv_data);
    *val_len = v.mv_size - 8;
    *val = malloc(*val_len + 1);
    if (*val == NULL) {
      out = -1;
    } else {
      memcpy(*val, (uint8_t *)v.mv_data + 8, *val_len);
      (*val)[*val_len] = 0;
      out = 0;
    }
  } else if (rv != MDB_NOTFOUND) {
    out = -1;
  }
  mdb_txn_abort(t);
  return out;
}

int kv_store_list(kv_store *s, const char *prefix, size_t prefix_len,
                  size_t limit, kv_item_fn fn, void *ud, bool *more) {
  MDB_txn *t;
  MDB_cursor *c;
  *more = false;
  if (mdb_txn_begin(s->env, NULL, MDB_RDONLY, &t) != 0) {
    return -1;
  }
  if (mdb_cursor_open(t, s->kv, &c) != 0) {
    mdb_txn_abort(t);
    return -1;
  }
  MDB_val k = {prefix_len, (void *)prefix}, v;
  int rv = prefix_len > 0 ? mdb_cursor_get(c, &k, &v, MDB_SET_RANGE)
                          : mdb_cursor_get(c, &k, &v, MDB_FIRST);
  size_t n = 0;
  while (rv == 0) {
    if (k.mv_size < prefix_len || memcmp(k.mv_data, prefix, prefix_len) != 0) {
      break;
    }
    if (n == limit) {
      *more = true;
      break;
    }
    if (v.mv_size >= 8) {
      fn(ud, k.mv_data, k.mv_size, (const char *)v.mv_data + 8,
         v.mv_size - 8, get_u64(v.mv_data));
      n++;
    }
    rv = mdb_cursor_get(c, &k, &v, MDB_NEXT);
  }
  mdb_cursor_close(c);
  mdb_txn_abort(t);
  return 0;
}

int kv_store_digest(kv_store *s, uint64_t *digest, uint64_t *keys,
                    uint64_t *applied) {
  MDB_txn *t;
  if (mdb_txn_begin(s->env, NULL, MDB_RDONLY, &t) != 0) {
    return -1;
  }
  MDB_val ak = {7, "applied"}, av;
  if (applied != NULL) {
    *applied = mdb_get(t, s->meta, &ak, &av) == 0 && av.mv_size == 8
                   ? get_u64(av.mv_data)
                   : 0;
  }
  if (digest != NULL) {
    uint64_t h = 0xcbf29ce484222325ULL, n = 0;
    MDB_cursor *c;
    if (mdb_cursor_open(t, s->kv, &c) == 0) {
      MDB_val k, v;
      for (int rv = mdb_cursor_get(c, &k, &v, MDB_FIRST); rv == 0;
           rv = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        uint8_t lens[8];
        put_u32(lens, (uint32_t)k.mv_size);
        put_u32(lens + 4, (uint32_t)v.mv_size);
        const MDB_val parts[3] = {{8, lens}, k, v};
        for (int p = 0; p < 3; p++) {
          const uint8_t *q = parts[p].mv_data;
          for (size_t i = 0; i < parts[p].mv_size; i++) {
            h = (h ^ q[i]) * 0x100000001b3ULL;
          }
        }
        n++;
      }
      mdb_cursor_close(c);
    }
    *digest = h;
    if (keys != NULL) *keys = n;
  }
  mdb_txn_abort(t);
  return 0;
}

int kv_store_http_of(kv_store *s, const char *hex_id, char *out, size_t n) {
  MDB_txn *t;
  if (mdb_txn_begin(s->env, NULL, MDB_RDONLY, &t) != 0) {
    return 0;
  }
  char name[80];
  int ln = snprintf(name, sizeof name, "http/%s", hex_id);
  MDB_val k = {(size_t)ln, name}, v;
  int found = 0;
  if (mdb_get(t, s->meta, &k, &v) == 0 && v.mv_size < n) {
    memcpy(out, v.mv_data, v.mv_size);
    out[v.mv_size] = 0;
    found = 1;
  }
  mdb_txn_abort(t);
  return found;
}
