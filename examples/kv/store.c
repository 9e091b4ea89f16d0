/*
 * The qraft-kv state machine, in LMDB: database "kv" maps a key to its
 * revision (the log index of the entry that last wrote it, u64 LE) and its
 * value; database "meta" holds the applied index ("applied") and the
 * members' HTTP addresses ("http/<hex id>").
 *
 * Applying never waits for the disk (qraft/node.h, the durable-index
 * contract). The node's loop applies entries into an overlay in memory
 * (`active`: the newest write of each key, or its deletion), where reads
 * see them at once; a thread of the store's own, the flusher, moves the
 * overlay into LMDB in one transaction with the applied index, synced on
 * commit (data, then meta page: an OS crash never corrupts LMDB and never
 * undoes a committed transaction), every --state-sync-ms or sooner when the
 * overlay grows large. What it committed is the durable index the node
 * reads; the node keeps the log after it, and a restart re-applies the log
 * from there. While the flusher commits, the batch it took (`flushing`)
 * stays readable beside the new `active`.
 *
 * Reads (any thread) look in `active`, then `flushing`, then LMDB. One
 * mutex (`mu`) orders them with the flusher: it commits a batch before it
 * drops it from `flushing`, so a key missing from both overlays is in LMDB
 * as of that read. Scans (list, digest, snapshot) copy the overlays' keys
 * and open their LMDB read transaction under `mu`, so they see one state.
 *
 * Restore (a snapshot from the leader, or a rebuild at start) waits for the
 * flusher to finish its batch, writes the new state in one transaction and
 * commits it, and empties both overlays, under `mu`: readers see the old
 * state or the new one, never a mix. It is durable when it returns.
 *
 * Never call the node from here.
 */
#include "kv.h"

#include <lmdb.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>
#include <time.h>

/* A restore commits every this many bytes: LMDB keeps a write
 * transaction's dirty pages in memory, so one transaction would hold the
 * whole state (up to 512 MiB before it spills). */
#define KV_RESTORE_BATCH_BYTES (8ull << 20)
/* The flusher commits early when the overlay holds this much. */
#define KV_FLUSH_BYTES (64ull << 20)

/* An overlay entry: the newest write of a key not yet in LMDB. `val` is
 * the bytes LMDB will hold (for "kv": revision u64 LE, then the value). */
typedef struct ov_ent {
  struct ov_ent *next; /* hash chain */
  uint8_t db;          /* 0 "kv", 1 "meta" */
  bool deleted;
  uint32_t klen;
  size_t vlen;
  uint8_t *key; /* klen bytes, then vlen bytes of val, one allocation */
  uint8_t *val;
} ov_ent;

typedef struct ov_table {
  ov_ent **slots;
  size_t cap; /* a power of two, or 0 */
  size_t n;
  uint64_t bytes;
} ov_table;

struct kv_store {
  MDB_env *env;
  MDB_dbi kv, meta;
  MDB_txn *rtxn; /* the loop's read transaction, reset between applies */
  pthread_mutex_t mu; /* everything below */
  pthread_cond_t cv;  /* the flusher's wake-up, and the end of its batch */
  uint64_t applied;   /* the index the state readers see is at */
  uint64_t flushed;   /* the index LMDB holds (committed, synced) */
  _Atomic uint64_t durable; /* = flushed, for the node without `mu` */
  ov_table active, flushing;
  uint64_t active_since_ns; /* when `applied` first passed `flushed`; 0 */
  uint64_t sync_ns;
  bool flush_busy, restoring, stop;
  /* LMDB's map is full (MDB_MAP_FULL): the batch went back into the
   * overlay, writes are refused (kv_store_full) and the flusher tries
   * again every second; `full_msg` says what to do. */
  bool full;
  bool broken; /* a restore failed after committing part of the snapshot */
  char dir[1024];
  int full_code; /* what the last failed commit said */
  /* the state's file system against the reserve (kv_store_watch_space) */
  uint64_t reserve;
  uint64_t space_next_ns;
  bool low;
  bool alarm_said; /* what alarm_fn was last told */
  kv_alarm_fn alarm_fn;
  void *alarm_ud;
  uint64_t full_retry_ns;
  char full_msg[512];
  uint64_t map_bytes;
  pthread_t flusher;
  bool flusher_started;
  kv_counters ctr;
};

static void put_u64(uint8_t *p, uint64_t v) { kv_le_put(p, v, 8); }
static uint64_t get_u64(const uint8_t *p) { return kv_le_get(p, 8); }
static void put_u32(uint8_t *p, uint32_t v) { kv_le_put(p, v, 4); }
static uint32_t get_u32(const uint8_t *p) { return (uint32_t)kv_le_get(p, 4); }

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


static uint64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* An LMDB failure in the flusher or in restore leaves the replica unable to
 * keep its state: stop with a message (the node rebuilds it on restart). */
static void store_die(const char *what, int rv) {
  kv_log(QRAFT_LOG_ERROR,
          "fatal: the state's LMDB failed (%s: %s); stopping with "
          "status %d. Nothing acknowledged is lost: a restart replays the "
          "log from the state's last commit (docs/kv.md, \"A full disk\")\n",
          what, mdb_strerror(rv), KV_EXIT_STORAGE);
  fflush(stderr);
  _exit(KV_EXIT_STORAGE);
}

/* Free bytes of `dir`'s file system for this process, or UINT64_MAX. */
static uint64_t dir_free(const char *dir) {
  struct statvfs sv;
  if (statvfs(dir, &sv) != 0) return UINT64_MAX;
  return (uint64_t)sv.f_bavail * (uint64_t)sv.f_frsize;
}

/* Whether an LMDB error means "no room": its map is full, the file system
 * is (ENOSPC, EDQUOT), or a write came back short (LMDB reports that as
 * EIO: "short write, filesystem full?") while the file system is nearly
 * full. */
static bool no_room(const kv_store *s, int rv) {
  if (rv == MDB_MAP_FULL || rv == ENOSPC || rv == EDQUOT) return true;
  return rv == EIO && dir_free(s->dir) < KV_NEARLY_FULL_BYTES;
}

/* ---- the overlay ---- */

/* LMDB's default order: bytes, then the shorter first. */
static int key_cmp(const uint8_t *a, size_t al, const uint8_t *b, size_t bl) {
  int c = memcmp(a, b, al < bl ? al : bl);
  if (c != 0) {
    return c;
  }
  return al < bl ? -1 : al > bl;
}

static uint64_t ov_hash(uint8_t db, const uint8_t *k, size_t kl) {
  return kv_fnv(KV_FNV_OFFSET ^ db, k, kl);
}

static ov_ent *ov_find(const ov_table *t, uint8_t db, const uint8_t *k,
                       size_t kl) {
  if (t->cap == 0) {
    return NULL;
  }
  for (ov_ent *e = t->slots[ov_hash(db, k, kl) & (t->cap - 1)]; e != NULL;
       e = e->next) {
    if (e->db == db && e->klen == kl && memcmp(e->key, k, kl) == 0) {
      return e;
    }
  }
  return NULL;
}

static void ov_grow(ov_table *t) {
  size_t cap = t->cap ? 2 * t->cap : 256;
  ov_ent **slots = calloc(cap, sizeof *slots);
  if (slots == NULL) {
    store_die("overlay", ENOMEM);
  }
  for (size_t i = 0; i < t->cap; i++) {
    for (ov_ent *e = t->slots[i], *next; e != NULL; e = next) {
      next = e->next;
      size_t h = ov_hash(e->db, e->key, e->klen) & (cap - 1);
      e->next = slots[h];
      slots[h] = e;
    }
  }
  free(t->slots);
  t->slots = slots;
  t->cap = cap;
}

/* Sets a key's newest write: a value (v, vl; with `rev` first for "kv")
 * or a deletion. */
static void ov_put(ov_table *t, uint8_t db, const uint8_t *k, size_t kl,
                   bool has_rev, uint64_t rev, const uint8_t *v, size_t vl,
                   bool deleted) {
  if (t->n + 1 > t->cap / 2) {
    ov_grow(t);
  }
  size_t vlen = deleted ? 0 : vl + (has_rev ? 8 : 0);
  ov_ent *e = malloc(sizeof *e + kl + vlen);
  if (e == NULL) {
    store_die("overlay", ENOMEM);
  }
  e->db = db;
  e->deleted = deleted;
  e->klen = (uint32_t)kl;
  e->vlen = vlen;
  e->key = (uint8_t *)(e + 1);
  e->val = e->key + kl;
  memcpy(e->key, k, kl);
  if (!deleted) {
    if (has_rev) {
      put_u64(e->val, rev);
    }
    if (vl > 0) {
      memcpy(e->val + (has_rev ? 8 : 0), v, vl);
    }
  }
  ov_ent **pp = &t->slots[ov_hash(db, k, kl) & (t->cap - 1)];
  for (ov_ent *o = *pp; o != NULL; pp = &o->next, o = o->next) {
    if (o->db == db && o->klen == kl && memcmp(o->key, k, kl) == 0) {
      e->next = o->next;
      *pp = e;
      t->bytes -= o->klen + o->vlen;
      t->bytes += kl + vlen;
      free(o);
      return;
    }
  }
  e->next = t->slots[ov_hash(db, k, kl) & (t->cap - 1)];
  t->slots[ov_hash(db, k, kl) & (t->cap - 1)] = e;
  t->n++;
  t->bytes += kl + vlen;
}

/* Moves every entry of `src` into `dst`, replacing the same key's there:
 * `src` is newer. `src` ends empty. */
static void ov_absorb(ov_table *dst, ov_table *src) {
  for (size_t i = 0; i < src->cap; i++) {
    for (ov_ent *e = src->slots[i], *next; e != NULL; e = next) {
      next = e->next;
      if (dst->n + 1 > dst->cap / 2) {
        ov_grow(dst);
      }
      ov_ent **pp = &dst->slots[ov_hash(e->db, e->key, e->klen) &
                                (dst->cap - 1)];
      ov_ent **head = pp;
      bool replaced = false;
      for (ov_ent *o = *pp; o != NULL; pp = &o->next, o = o->next) {
        if (o->db == e->db && o->klen == e->klen &&
            memcmp(o->key, e->key, e->klen) == 0) {
          e->next = o->next;
          *pp = e;
          dst->bytes -= o->klen + o->vlen;
          dst->bytes += e->klen + e->vlen;
          free(o);
          replaced = true;
          break;
        }
      }
      if (!replaced) {
        e->next = *head;
        *head = e;
        dst->n++;
        dst->bytes += e->klen + e->vlen;
      }
    }
  }
  free(src->slots);
  memset(src, 0, sizeof *src);
}

static void ov_clear(ov_table *t) {
  for (size_t i = 0; i < t->cap; i++) {
    for (ov_ent *e = t->slots[i], *next; e != NULL; e = next) {
      next = e->next;
      free(e);
    }
  }
  free(t->slots);
  memset(t, 0, sizeof *t);
}

/* Under mu: the newest write of a key in the overlays, or NULL. */
static const ov_ent *ov_lookup(const kv_store *s, uint8_t db, const uint8_t *k,
                               size_t kl) {
  const ov_ent *e = ov_find(&s->active, db, k, kl);
  return e != NULL ? e : ov_find(&s->flushing, db, k, kl);
}

/* ---- a consistent view for scans: the overlays' entries of one database
 * (copied, sorted) over one LMDB read transaction ---- */

typedef struct view {
  MDB_txn *t;
  ov_ent **ov; /* copies */
  size_t n;
  uint64_t applied;
} view;

static int ov_ent_cmp(const void *a, const void *b) {
  const ov_ent *x = *(ov_ent *const *)a, *y = *(ov_ent *const *)b;
  return key_cmp(x->key, x->klen, y->key, y->klen);
}

static void view_add(view *v, size_t *cap, const ov_ent *e) {
  if (v->n == *cap) {
    *cap = *cap ? 2 * *cap : 64;
    ov_ent **a = realloc(v->ov, *cap * sizeof *a);
    if (a == NULL) {
      store_die("view", ENOMEM);
    }
    v->ov = a;
  }
  ov_ent *c = malloc(sizeof *c + e->klen + e->vlen);
  if (c == NULL) {
    store_die("view", ENOMEM);
  }
  *c = *e;
  c->key = (uint8_t *)(c + 1);
  c->val = c->key + e->klen;
  memcpy(c->key, e->key, e->klen);
  memcpy(c->val, e->val, e->vlen);
  v->ov[v->n++] = c;
}

static int view_open(kv_store *s, uint8_t db, const uint8_t *prefix,
                     size_t plen, view *v) {
  memset(v, 0, sizeof *v);
  size_t cap = 0;
  pthread_mutex_lock(&s->mu);
  while (s->restoring) { /* LMDB holds part of the new state */
    pthread_cond_wait(&s->cv, &s->mu);
  }
  if (s->broken) {
    pthread_mutex_unlock(&s->mu);
    return -1;
  }
  int rv = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &v->t);
  if (rv != 0) {
    pthread_mutex_unlock(&s->mu);
    return -1;
  }
  const ov_table *ts[2] = {&s->active, &s->flushing};
  for (int i = 0; i < 2; i++) {
    for (size_t j = 0; j < ts[i]->cap; j++) {
      for (const ov_ent *e = ts[i]->slots[j]; e != NULL; e = e->next) {
        if (e->db != db || e->klen < plen ||
            (plen > 0 && memcmp(e->key, prefix, plen) != 0) ||
            (i == 1 && ov_find(&s->active, db, e->key, e->klen) != NULL)) {
          continue;
        }
        view_add(v, &cap, e);
      }
    }
  }
  v->applied = s->applied;
  pthread_mutex_unlock(&s->mu);
  if (v->n > 1) {
    qsort(v->ov, v->n, sizeof *v->ov, ov_ent_cmp);
  }
  return 0;
}

static void view_close(view *v) {
  for (size_t i = 0; i < v->n; i++) {
    free(v->ov[i]);
  }
  free(v->ov);
  if (v->t != NULL) {
    mdb_txn_abort(v->t);
  }
}

/* The live keys of one database of a view, in order: the overlay's copies
 * merged over an LMDB cursor (an overlay entry hides LMDB's value of its
 * key; a deletion hides the key). Resumable: a stepped snapshot walks it a
 * part at a time. */
typedef struct view_iter {
  view *v;
  MDB_cursor *c;
  MDB_val k, val; /* the cursor's current pair */
  const uint8_t *prefix;
  size_t plen;
  bool db_ok;
  size_t j; /* the next overlay copy */
} view_iter;

static bool iter_in_prefix(view_iter *it, int rv) {
  return rv == 0 && it->k.mv_size >= it->plen &&
         (it->plen == 0 || memcmp(it->k.mv_data, it->prefix, it->plen) == 0);
}

static int view_iter_open(view *v, MDB_dbi dbi, const uint8_t *prefix,
                          size_t plen, view_iter *it) {
  memset(it, 0, sizeof *it);
  it->v = v;
  it->prefix = prefix;
  it->plen = plen;
  if (mdb_cursor_open(v->t, dbi, &it->c) != 0) {
    return -1;
  }
  it->k = (MDB_val){plen, (void *)prefix};
  int rv = plen > 0 ? mdb_cursor_get(it->c, &it->k, &it->val, MDB_SET_RANGE)
                    : mdb_cursor_get(it->c, &it->k, &it->val, MDB_FIRST);
  it->db_ok = iter_in_prefix(it, rv);
  return 0;
}

/* The next live pair into *k, *v (valid while the view is open); false at
 * the end. */
static bool view_iter_next(view_iter *it, MDB_val *k, MDB_val *v) {
  for (;;) {
    const ov_ent *o = it->j < it->v->n ? it->v->ov[it->j] : NULL;
    if (!it->db_ok && o == NULL) {
      return false;
    }
    int cmp = !it->db_ok ? 1
              : o == NULL
                  ? -1
                  : key_cmp(it->k.mv_data, it->k.mv_size, o->key, o->klen);
    bool out = false;
    if (cmp < 0) {
      *k = it->k;
      *v = it->val;
      out = true;
    } else if (!o->deleted) {
      *k = (MDB_val){o->klen, o->key};
      *v = (MDB_val){o->vlen, o->val};
      out = true;
    }
    if (cmp >= 0) {
      it->j++;
    }
    if (cmp <= 0) {
      int rv = mdb_cursor_get(it->c, &it->k, &it->val, MDB_NEXT);
      it->db_ok = iter_in_prefix(it, rv);
    }
    if (out) {
      return true;
    }
  }
}

static void view_iter_close(view_iter *it) {
  if (it->c != NULL) {
    mdb_cursor_close(it->c);
    it->c = NULL;
  }
}

/* Calls fn for each live key of `dbi` with `prefix`, in order, the
 * overlays over LMDB, until fn returns false. Returns 0 or -1. */
typedef bool (*view_fn)(void *ud, const MDB_val *k, const MDB_val *v);

static int view_each(view *v, MDB_dbi dbi, const uint8_t *prefix, size_t plen,
                     view_fn fn, void *ud) {
  view_iter it;
  if (view_iter_open(v, dbi, prefix, plen, &it) != 0) {
    return -1;
  }
  MDB_val k, val;
  while (view_iter_next(&it, &k, &val) && fn(ud, &k, &val)) {
  }
  view_iter_close(&it);
  return 0;
}

/* ---- the flusher: the overlay into LMDB, synced ---- */

static int set_applied(kv_store *s, MDB_txn *t, uint64_t index) {
  uint8_t b[8];
  put_u64(b, index);
  MDB_val k = {7, "applied"}, v = {8, b};
  int rv = mdb_put(t, s->meta, &k, &v, 0);
  if (rv != 0 && !no_room(s, rv)) store_die("put applied", rv);
  return rv;
}

/* Writes a batch into LMDB and commits it. Returns 0, or a code of
 * no_room() with nothing written (a failed commit leaves LMDB as it was);
 * any other error stops the process. */
static int flush_write(kv_store *s, const ov_table *batch, uint64_t index) {
  MDB_txn *t;
  int rv = mdb_txn_begin(s->env, NULL, 0, &t);
  if (rv != 0) store_die("begin", rv);
  for (size_t i = 0; i < batch->cap && rv == 0; i++) {
    for (const ov_ent *e = batch->slots[i]; e != NULL && rv == 0;
         e = e->next) {
      MDB_val k = {e->klen, e->key};
      MDB_dbi dbi = e->db == 0 ? s->kv : s->meta;
      if (e->deleted) {
        rv = mdb_del(t, dbi, &k, NULL);
        if (rv == MDB_NOTFOUND) rv = 0;
        if (rv != 0 && !no_room(s, rv)) store_die("del", rv);
      } else {
        MDB_val v = {e->vlen, e->val};
        rv = mdb_put(t, dbi, &k, &v, 0);
        if (rv != 0 && !no_room(s, rv)) store_die("put", rv);
      }
    }
  }
  if (rv == 0) {
    rv = set_applied(s, t, index);
  }
  if (rv != 0) {
    mdb_txn_abort(t);
    return rv;
  }
  rv = mdb_txn_commit(t); /* synced: data pages, then the meta page */
  if (rv != 0 && !no_room(s, rv)) store_die("commit", rv);
  return rv;
}

/* Under mu; returns with mu held. */
static void flush_locked(kv_store *s) {
  ov_table batch = s->active;
  memset(&s->active, 0, sizeof s->active);
  s->flushing = batch;
  uint64_t index = s->applied;
  s->active_since_ns = 0;
  s->flush_busy = true;
  pthread_mutex_unlock(&s->mu);

  uint64_t t0 = mono_ns();
  int rv = flush_write(s, &batch, index);
  uint64_t us = (mono_ns() - t0) / 1000;

  pthread_mutex_lock(&s->mu);
  if (rv != 0) {
    /* Nothing was written: the batch goes back under the newer writes,
     * and the node keeps the log from `flushed` on (durable index), so
     * nothing is lost; this member refuses writes until there is room. */
    ov_absorb(&s->flushing, &s->active);
    s->active = s->flushing;
    memset(&s->flushing, 0, sizeof s->flushing);
    if (s->active_since_ns == 0) {
      s->active_since_ns = mono_ns();
    }
    if (!s->full || s->full_code != rv) {
      if (rv == MDB_MAP_FULL) {
        snprintf(s->full_msg, sizeof s->full_msg,
                 "the state's LMDB map is full (%llu bytes): restart this "
                 "member with a larger --map-size; writes since index %llu "
                 "wait in its log",
                 (unsigned long long)s->map_bytes,
                 (unsigned long long)s->flushed);
      } else {
        uint64_t fb = dir_free(s->dir);
        snprintf(s->full_msg, sizeof s->full_msg,
                 "%.300s: %s (%llu bytes free): writes since index %llu wait in "
                 "this member's log and land by themselves once there is "
                 "room",
                 s->dir,
                 rv == EIO ? "no space left on device (a short write)"
                           : strerror(rv),
                 (unsigned long long)(fb == UINT64_MAX ? 0 : fb),
                 (unsigned long long)s->flushed);
      }
      kv_log(QRAFT_LOG_WARN, "%s\n", s->full_msg);
    }
    s->full_code = rv;
    s->full = true;
    s->ctr.map_full++;
    s->full_retry_ns = mono_ns() + 1000000000ull;
    s->flush_busy = false;
    pthread_cond_broadcast(&s->cv);
    return;
  }
  if (s->full) {
    s->full = false;
    kv_log(QRAFT_LOG_WARN, "the state's LMDB has room again\n");
  }
  size_t keys = s->flushing.n;
  ov_clear(&s->flushing);
  s->flushed = index;
  if (s->applied > index && s->active_since_ns == 0) {
    /* applied during the commit: the next batch is due a sync interval
     * from now, not at once */
    s->active_since_ns = mono_ns();
  }
  atomic_store(&s->durable, index);
  s->flush_busy = false;
  s->ctr.flushes++;
  s->ctr.flush_keys += keys;
  s->ctr.flush_us_sum += us;
  if (us > s->ctr.flush_us_max) s->ctr.flush_us_max = us;
  pthread_cond_broadcast(&s->cv); /* a restore may wait for this */
}

/* Under mu: checks the state's file system against the reserve once a
 * second, and tells alarm_fn when full or low changed. */
static void space_check_locked(kv_store *s) {
  uint64_t now = mono_ns();
  if (s->reserve > 0 && now >= s->space_next_ns) {
    s->space_next_ns = now + 1000000000ull;
    uint64_t fb = dir_free(s->dir);
    bool low = fb != UINT64_MAX && fb < s->reserve;
    if (low != s->low) {
      if (low) {
        kv_log(QRAFT_LOG_WARN,
               "the state's file system (%s) has %llu bytes free, below the "
               "reserve of %llu: alarm raised",
               s->dir, (unsigned long long)fb, (unsigned long long)s->reserve);
      } else {
        kv_log(QRAFT_LOG_INFO,
               "the state's file system (%s) has %llu bytes free again "
               "(reserve %llu)",
               s->dir, (unsigned long long)fb, (unsigned long long)s->reserve);
      }
    }
    s->low = low;
  }
  bool alarm = s->full || s->low;
  if (alarm != s->alarm_said && s->alarm_fn != NULL) {
    char why[600];
    if (s->full) {
      snprintf(why, sizeof why, "%s", s->full_msg);
    } else {
      snprintf(why, sizeof why, "%.300s: free space below the reserve of %llu bytes",
               s->dir, (unsigned long long)s->reserve);
    }
    s->alarm_said = alarm;
    /* under mu, so that kv_store_watch_space(.., NULL, ..) returns with no
     * call under way (fn must not take the store's lock) */
    s->alarm_fn(s->alarm_ud, alarm, why);
  }
}

void kv_store_watch_space(kv_store *s, uint64_t reserve, kv_alarm_fn fn,
                          void *ud) {
  pthread_mutex_lock(&s->mu);
  s->reserve = reserve;
  s->space_next_ns = 0;
  s->alarm_fn = fn;
  s->alarm_ud = ud;
  pthread_mutex_unlock(&s->mu);
  pthread_cond_broadcast(&s->cv);
}

static void *flusher_main(void *arg) {
  kv_store *s = arg;
  pthread_mutex_lock(&s->mu);
  for (;;) {
    space_check_locked(s);
    bool pending = s->applied > s->flushed && !s->restoring;
    if (pending && s->stop && s->full) {
      break; /* no room: what is left stays in the node's log */
    }
    if (pending) {
      uint64_t due = s->active_since_ns + s->sync_ns;
      if (s->full && due < s->full_retry_ns) {
        due = s->full_retry_ns;
      }
      if (s->stop || mono_ns() >= due ||
          (s->active.bytes >= KV_FLUSH_BYTES && !s->full)) {
        flush_locked(s);
        continue;
      }
      struct timespec ts = {.tv_sec = (time_t)(due / 1000000000ull),
                            .tv_nsec = (long)(due % 1000000000ull)};
      pthread_cond_timedwait(&s->cv, &s->mu, &ts);
    } else if (s->stop) {
      break;
    } else if (s->alarm_fn != NULL) {
      uint64_t due = mono_ns() + 1000000000ull; /* the next space check */
      struct timespec ts = {.tv_sec = (time_t)(due / 1000000000ull),
                            .tv_nsec = (long)(due % 1000000000ull)};
      pthread_cond_timedwait(&s->cv, &s->mu, &ts);
    } else {
      pthread_cond_wait(&s->cv, &s->mu);
    }
  }
  pthread_mutex_unlock(&s->mu);
  return NULL;
}

/* ---- open / close ---- */

int kv_store_open(const char *dir, uint32_t sync_ms, uint64_t map_bytes,
                  kv_store **out, char *msg, size_t msg_n) {
  kv_store *s = calloc(1, sizeof *s);
  if (s == NULL) {
    snprintf(msg, msg_n, "out of memory");
    return -1;
  }
  pthread_mutex_init(&s->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&s->cv, &ca);
  pthread_condattr_destroy(&ca);
  s->sync_ns = (uint64_t)sync_ms * 1000000ull;
  s->map_bytes = map_bytes > 0 ? map_bytes : KV_MAP_BYTES_DEFAULT;
  snprintf(s->dir, sizeof s->dir, "%s", dir);
  int rv;
  MDB_txn *t = NULL;
  mkdir(dir, 0700);
  if ((rv = mdb_env_create(&s->env)) != 0 ||
      (rv = mdb_env_set_maxdbs(s->env, 4)) != 0 ||
      (rv = mdb_env_set_mapsize(s->env, s->map_bytes)) != 0 ||
      (rv = mdb_env_set_maxreaders(s->env, KV_CONNECTIONS_MAX + 16)) != 0 ||
      /* every commit synced (the flusher's, off the node's loop) */
      (rv = mdb_env_open(s->env, dir, MDB_NOTLS, 0600)) != 0 ||
      (rv = mdb_txn_begin(s->env, NULL, 0, &t)) != 0 ||
      (rv = mdb_dbi_open(t, "kv", MDB_CREATE, &s->kv)) != 0 ||
      (rv = mdb_dbi_open(t, "meta", MDB_CREATE, &s->meta)) != 0) {
    snprintf(msg, msg_n, "lmdb %s: %s%s", dir, mdb_strerror(rv),
             rv == ENOMEM ? " (mapping --map-size bytes of address space; "
                            "try a smaller --map-size)"
                          : "");
    goto fail;
  }
  MDB_val k = {7, "applied"}, v;
  if (mdb_get(t, s->meta, &k, &v) == 0 && v.mv_size == 8) {
    s->applied = get_u64(v.mv_data);
  }
  rv = mdb_txn_commit(t);
  t = NULL;
  if (rv != 0) {
    snprintf(msg, msg_n, "lmdb %s: commit: %s", dir, mdb_strerror(rv));
    goto fail;
  }
  s->flushed = s->applied;
  atomic_store(&s->durable, s->applied);
  if ((rv = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &s->rtxn)) != 0) {
    snprintf(msg, msg_n, "lmdb %s: read transaction: %s", dir,
             mdb_strerror(rv));
    goto fail;
  }
  mdb_txn_reset(s->rtxn);
  if ((rv = pthread_create(&s->flusher, NULL, flusher_main, s)) != 0) {
    snprintf(msg, msg_n, "flusher thread: %s", strerror(rv));
    goto fail;
  }
  s->flusher_started = true;
  pthread_setname_np(s->flusher, "qraft-kv-flush");
  *out = s;
  return 0;

fail:
  if (t != NULL) mdb_txn_abort(t);
  if (s->rtxn != NULL) mdb_txn_abort(s->rtxn);
  if (s->env != NULL) mdb_env_close(s->env);
  pthread_cond_destroy(&s->cv);
  pthread_mutex_destroy(&s->mu);
  free(s);
  return -1;
}

void kv_store_close(kv_store *s) {
  if (s == NULL) {
    return;
  }
  if (s->flusher_started) {
    pthread_mutex_lock(&s->mu);
    s->stop = true; /* it commits what is left, then ends */
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->flusher, NULL);
  }
  mdb_txn_abort(s->rtxn);
  mdb_env_close(s->env);
  ov_clear(&s->active);
  ov_clear(&s->flushing);
  pthread_cond_destroy(&s->cv);
  pthread_mutex_destroy(&s->mu);
  free(s);
}

uint64_t kv_store_applied(kv_store *s) {
  pthread_mutex_lock(&s->mu);
  uint64_t a = s->applied;
  pthread_mutex_unlock(&s->mu);
  return a;
}

void kv_store_counters(kv_store *s, kv_counters *out) {
  pthread_mutex_lock(&s->mu);
  *out = s->ctr;
  out->applied = s->applied;
  out->durable = s->flushed;
  out->overlay_keys = s->active.n + s->flushing.n;
  out->overlay_bytes = s->active.bytes + s->flushing.bytes;
  out->map_bytes = s->map_bytes;
  out->full = s->full;
  pthread_mutex_unlock(&s->mu);
  MDB_envinfo ei;
  MDB_stat st;
  if (mdb_env_info(s->env, &ei) == 0 && mdb_env_stat(s->env, &st) == 0) {
    out->map_used_bytes = (uint64_t)(ei.me_last_pgno + 1) * st.ms_psize;
  }
}

bool kv_store_full(kv_store *s, char *why, size_t n) {
  pthread_mutex_lock(&s->mu);
  bool full = s->full;
  if (full && n > 0) {
    snprintf(why, n, "%s", s->full_msg);
  } else if (s->low && n > 0) {
    full = true;
    snprintf(why, n,
             "%.300s: free space below the reserve of %llu bytes (%llu "
             "free): this member takes no writes until there is room",
             s->dir, (unsigned long long)s->reserve,
             (unsigned long long)dir_free(s->dir));
  }
  pthread_mutex_unlock(&s->mu);
  return full;
}

/* ---- apply (the node's loop; never waits for the disk) ---- */

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

/* Under mu, with s->rtxn renewed: the current value of a "kv" key. */
static bool current(kv_store *s, const kv_cmd *c, MDB_val *v) {
  const ov_ent *e = ov_lookup(s, 0, c->key, c->key_len);
  if (e != NULL) {
    v->mv_size = e->vlen;
    v->mv_data = e->val;
    return !e->deleted && e->vlen >= 8;
  }
  MDB_val k = {c->key_len, (void *)c->key};
  int rv = mdb_get(s->rtxn, s->kv, &k, v);
  if (rv != 0 && rv != MDB_NOTFOUND) store_die("get", rv);
  return rv == 0 && v->mv_size >= 8;
}

static uint8_t apply_one(kv_store *s, uint64_t index, const kv_cmd *c,
                         uint64_t *rev_out) {
  if (c->op == KV_OP_SETHTTP) {
    char name[8 + KV_KEY_BYTES_MAX];
    int ln = snprintf(name, sizeof name, "http/%.*s", (int)c->key_len,
                      (const char *)c->key);
    ov_put(&s->active, 1, (const uint8_t *)name, (size_t)ln, false, 0,
           c->value, c->value_len, false);
    *rev_out = index;
    return KV_OK;
  }
  MDB_val v = {0, NULL};
  bool found = current(s, c, &v);
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
    s->ctr.cas_failed++;
    return KV_CMPFAIL;
  }
  if (c->op == KV_OP_DEL) {
    if (!found) {
      return KV_NOTFOUND;
    }
    ov_put(&s->active, 0, c->key, c->key_len, false, 0, NULL, 0, true);
    *rev_out = index;
    s->ctr.dels++;
    return KV_OK;
  }
  if (c->op != KV_OP_PUT && c->op != KV_OP_CAS) {
    return KV_BADCMD;
  }
  ov_put(&s->active, 0, c->key, c->key_len, true, index, c->value,
         c->value_len, false);
  *rev_out = index;
  if (c->op == KV_OP_CAS) s->ctr.cases++; else s->ctr.puts++;
  return KV_OK;
}

static int sm_apply(void *ud, const qraft_entry *es, size_t n,
                     uint64_t last_index, qraft_slice *results) {
  kv_store *s = ud;
  pthread_mutex_lock(&s->mu);
  if (last_index <= s->applied) {
    s->ctr.entries_skipped += n;
    pthread_mutex_unlock(&s->mu);
    return 0; /* already in the state (never, by the node's contract) */
  }
  if (s->full && n > 0) {
    /* LMDB has no room for what the overlay holds: take no more into
     * memory; the node calls again (qraft/node.h, apply). */
    s->ctr.apply_refused++;
    pthread_mutex_unlock(&s->mu);
    return -ENOSPC;
  }
  bool renewed = false;
  for (size_t i = 0; i < n; i++) {
    if (es[i].index <= s->applied) {
      continue;
    }
    if (!renewed) {
      int rv = mdb_txn_renew(s->rtxn);
      if (rv != 0) store_die("renew", rv);
      renewed = true;
    }
    kv_cmd c;
    uint64_t rev = 0;
    uint8_t code = KV_BADCMD;
    if (kv_cmd_decode(es[i].data.data, es[i].data.len, &c) == 0) {
      code = apply_one(s, es[i].index, &c, &rev);
    }
    results[i] = result_of(code, rev);
  }
  if (renewed) {
    mdb_txn_reset(s->rtxn);
  }
  /* the flusher sleeps until something is due: wake it when the state
   * first moves past LMDB's, or when the overlay must go at once */
  bool wake = s->applied == s->flushed || s->sync_ns == 0 ||
              s->active.bytes >= KV_FLUSH_BYTES;
  if (s->applied == s->flushed) {
    s->active_since_ns = mono_ns();
  }
  s->applied = last_index;
  pthread_mutex_unlock(&s->mu);
  if (wake) {
    pthread_cond_broadcast(&s->cv);
  }
  return 0;
}

static uint64_t sm_durable_index(void *ud) {
  kv_store *s = ud;
  return atomic_load(&s->durable);
}

/* ---- snapshot: one view, streamed as records ---- */

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

typedef struct snap_each {
  snap_buf *sb;
  uint8_t db;
} snap_each;

static bool snap_record_fn(void *ud, const MDB_val *k, const MDB_val *v) {
  snap_each *se = ud;
  if (se->db == 1 && k->mv_size == 7 && memcmp(k->mv_data, "applied", 7) == 0) {
    return true;
  }
  sb_record(se->sb, se->db, k, v);
  return se->sb->rv == 0;
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
  uint64_t applied = 0;
  uint8_t h[12];
  MDB_dbi dbs[2] = {s->kv, s->meta};
  for (uint8_t d = 0; d < 2 && sb->rv == 0; d++) {
    view v;
    if (view_open(s, d, NULL, 0, &v) != 0) {
      sb->rv = QRAFT_ECORRUPT;
      break;
    }
    if (d == 0) {
      /* the node calls from its loop, which alone applies: both views
       * are of the state at this index */
      applied = v.applied;
      put_u32(h, KV_SNAP_MAGIC);
      put_u64(h + 4, applied);
      sb_add(sb, h, 12);
    }
    snap_each se = {.sb = sb, .db = d};
    if (view_each(&v, dbs[d], NULL, 0, snap_record_fn, &se) != 0 &&
        sb->rv == 0) {
      sb->rv = QRAFT_ECORRUPT;
    }
    view_close(&v);
  }
  MDB_val e = {0, ""};
  sb_record(sb, 0xff, &e, &e);
  sb_flush(sb);
  int rv = sb->rv;
  free(sb);
  if (rv == 0) {
    *index = applied;
    pthread_mutex_lock(&s->mu);
    s->ctr.snapshots++;
    pthread_mutex_unlock(&s->mu);
  }
  return rv;
}

/* In steps (qraft_sm_ops.snapshot_begin/step/end): the same bytes as
 * sm_snapshot, from views of both databases taken at once on the loop
 * (copies of the overlays and LMDB read transactions: applies that come
 * after do not show in them), written about `budget` bytes at a time. */
typedef struct snap_steps {
  view v[2]; /* kv, meta */
  int d;     /* the database being written; 2: all written */
  bool iter_open;
  view_iter it;
  uint64_t applied;
  snap_buf sb;
} snap_steps;

static void sm_snapshot_end(void *ud, void *vw) {
  (void)ud;
  snap_steps *st = vw;
  if (st == NULL) {
    return;
  }
  if (st->iter_open) {
    view_iter_close(&st->it);
  }
  view_close(&st->v[0]);
  view_close(&st->v[1]);
  free(st);
}

static int sm_snapshot_begin(void *ud, uint64_t *index, void **vw) {
  kv_store *s = ud;
  snap_steps *st = calloc(1, sizeof *st);
  if (st == NULL) {
    return -ENOMEM;
  }
  if (view_open(s, 0, NULL, 0, &st->v[0]) != 0) {
    free(st);
    return QRAFT_ECORRUPT;
  }
  if (view_open(s, 1, NULL, 0, &st->v[1]) != 0) {
    view_close(&st->v[0]);
    free(st);
    return QRAFT_ECORRUPT;
  }
  /* the node calls from its loop, which alone applies: both views are of
   * the state at this index */
  st->applied = st->v[0].applied;
  *index = st->applied;
  uint8_t h[12];
  put_u32(h, KV_SNAP_MAGIC);
  put_u64(h + 4, st->applied);
  memcpy(st->sb.b, h, 12);
  st->sb.n = 12;
  *vw = st;
  return 0;
}

static int sm_snapshot_step(void *ud, void *vw, size_t budget,
                            qraft_sm_write_fn write, void *wctx) {
  kv_store *s = ud;
  snap_steps *st = vw;
  MDB_dbi dbs[2] = {s->kv, s->meta};
  snap_buf *sb = &st->sb;
  sb->write = write;
  sb->wctx = wctx;
  size_t done = 0;
  while (st->d < 2 && sb->rv == 0 && done < budget) {
    if (!st->iter_open) {
      if (view_iter_open(&st->v[st->d], dbs[st->d], NULL, 0, &st->it) != 0) {
        return QRAFT_ECORRUPT;
      }
      st->iter_open = true;
    }
    MDB_val k, v;
    if (!view_iter_next(&st->it, &k, &v)) {
      view_iter_close(&st->it);
      st->iter_open = false;
      st->d++;
      continue;
    }
    if (st->d == 1 && k.mv_size == 7 && memcmp(k.mv_data, "applied", 7) == 0) {
      continue;
    }
    sb_record(sb, (uint8_t)st->d, &k, &v);
    done += k.mv_size + v.mv_size + 9;
  }
  if (sb->rv != 0) {
    return sb->rv;
  }
  if (st->d < 2) {
    return 1;
  }
  MDB_val e = {0, ""};
  sb_record(sb, 0xff, &e, &e);
  sb_flush(sb);
  if (sb->rv == 0) {
    pthread_mutex_lock(&s->mu);
    s->ctr.snapshots++;
    pthread_mutex_unlock(&s->mu);
  }
  return sb->rv;
}

/* A view for a backup, from any thread: the node's loop may apply
 * between the two views, so both are taken again until they show the same
 * index. */
int kv_store_view_begin(kv_store *s, uint64_t *index, void **view) {
  for (int attempt = 0; attempt < 1000; attempt++) {
    snap_steps *st = NULL;
    int rv = sm_snapshot_begin(s, index, (void **)&st);
    if (rv != 0) {
      return rv;
    }
    if (st->v[0].applied == st->v[1].applied) {
      *view = st;
      return 0;
    }
    sm_snapshot_end(s, st);
  }
  return -EAGAIN;
}

int kv_store_view_step(kv_store *s, void *view, size_t budget,
                       qraft_sm_write_fn write, void *wctx) {
  return sm_snapshot_step(s, view, budget, write, wctx);
}

void kv_store_view_end(kv_store *s, void *view) { sm_snapshot_end(s, view); }

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

/* Under mu: a restore failed. With a batch committed, the old state is
 * gone and the new one partial, its durable index 0 (dropped with "meta"):
 * readers get errors from now on; the node stops on a failed restore and
 * restores again at its next start. Without, the old state stays whole. */
static void restore_failed_locked(kv_store *s, bool committed) {
  if (!committed) {
    return;
  }
  ov_clear(&s->active);
  ov_clear(&s->flushing);
  s->applied = 0;
  s->flushed = 0;
  atomic_store(&s->durable, 0);
  s->broken = true;
}

/* Under mu: a restore found LMDB's map full. */
static void restore_full_locked(kv_store *s, uint64_t index) {
  snprintf(s->full_msg, sizeof s->full_msg,
           "the state's LMDB map (%llu bytes) cannot hold snapshot %llu: "
           "restart this member with a larger --map-size",
           (unsigned long long)s->map_bytes, (unsigned long long)index);
  s->full = true;
  s->ctr.map_full++;
  kv_log(QRAFT_LOG_WARN, "%s\n", s->full_msg);
}

static void restore_end(kv_store *s) {
  s->restoring = false;
  pthread_cond_broadcast(&s->cv);
  pthread_mutex_unlock(&s->mu);
}

/* A restore in steps (qraft_sm_ops.restore_begin/step/end); `restore`
 * runs the same steps in one call. */
typedef struct kv_restore_ctx {
  uint64_t index;
  MDB_txn *t;       /* the open batch */
  uint8_t *buf;     /* one record */
  size_t cap;
  uint64_t batch;   /* bytes in the open batch */
  bool open;        /* s->restoring is ours to clear */
  bool started;     /* the header was read and the databases dropped */
  bool committed;   /* a batch was committed: the old state is gone */
} kv_restore_ctx;

static int sm_restore_begin(void *ud, uint64_t index, void **ctx) {
  kv_store *s = ud;
  kv_restore_ctx *c = calloc(1, sizeof *c);
  if (c == NULL) {
    return -ENOMEM;
  }
  c->index = index;
  pthread_mutex_lock(&s->mu);
  if (index <= s->applied) {
    /* The state already holds this one and more (never, by the node's
     * contract): a state at a later index of the same log contains every
     * entry the snapshot does. */
    s->ctr.restores_skipped++;
    pthread_mutex_unlock(&s->mu);
    *ctx = c;
    return 0;
  }
  /* The flusher finishes its batch and takes no other: the new state
   * replaces both overlays. Readers wait (s->restoring) until the last
   * batch commits with the index. */
  s->restoring = true;
  c->open = true;
  while (s->flush_busy) {
    pthread_cond_wait(&s->cv, &s->mu);
  }
  pthread_mutex_unlock(&s->mu);
  *ctx = c;
  return 0;
}

/* A step failed with `rv`: the batch is dropped; the old state stays whole
 * unless a batch was committed (restore_failed_locked). */
static int restore_fail(kv_store *s, kv_restore_ctx *c, int rv,
                        const char *what) {
  kv_log(QRAFT_LOG_WARN, "restore %llu: %s: %s\n",
          (unsigned long long)c->index, what, qraft_strerror(rv));
  if (c->t != NULL) {
    mdb_txn_abort(c->t);
    c->t = NULL;
  }
  pthread_mutex_lock(&s->mu);
  restore_failed_locked(s, c->committed);
  c->open = false;
  restore_end(s);
  return rv;
}

/* Under no lock: LMDB's map cannot hold the snapshot. */
static int restore_map_full(kv_store *s, kv_restore_ctx *c) {
  pthread_mutex_lock(&s->mu);
  restore_full_locked(s, c->index);
  pthread_mutex_unlock(&s->mu);
  return restore_fail(s, c, -ENOSPC, "records");
}

/* The header, then both databases emptied in the first batch, "applied"
 * with them: a crash midway leaves a durable index of 0, below the
 * snapshot, and the node restores again at its next start. */
static int restore_start(kv_store *s, kv_restore_ctx *c, qraft_sm_read_fn read,
                         void *rctx) {
  uint8_t h[12];
  int rv = read_exact(read, rctx, h, 12);
  if (rv != 0) {
    return restore_fail(s, c, rv, "header");
  }
  /* The header holds the index the state was at when the snapshot was
   * taken: the node takes it at its own applied index, which the state
   * machine was told of. A header ahead of the snapshot is corrupt. */
  if (get_u32(h) != KV_SNAP_MAGIC || get_u64(h + 4) > c->index) {
    kv_log(QRAFT_LOG_WARN, "restore %llu: bad header (magic %08x, index %llu)\n",
            (unsigned long long)c->index, get_u32(h),
            (unsigned long long)get_u64(h + 4));
    return restore_fail(s, c, QRAFT_ECORRUPT, "header");
  }
  rv = mdb_txn_begin(s->env, NULL, 0, &c->t);
  if (rv != 0) store_die("begin restore", rv);
  if ((rv = mdb_drop(c->t, s->kv, 0)) != 0 ||
      (rv = mdb_drop(c->t, s->meta, 0)) != 0) {
    store_die("drop", rv);
  }
  c->started = true;
  return 0;
}

/* The last record was read: the index goes in with the last batch, and
 * the overlays are dropped in the same step for readers. */
static int restore_finish(kv_store *s, kv_restore_ctx *c) {
  int rv = set_applied(s, c->t, c->index);
  pthread_mutex_lock(&s->mu);
  if (rv == 0) {
    rv = mdb_txn_commit(c->t);
  } else {
    mdb_txn_abort(c->t);
  }
  c->t = NULL;
  if (rv == MDB_MAP_FULL) {
    restore_full_locked(s, c->index);
    pthread_mutex_unlock(&s->mu);
    return restore_fail(s, c, -ENOSPC, "commit");
  }
  if (rv != 0) store_die("commit restore", rv);
  ov_clear(&s->active);
  ov_clear(&s->flushing);
  s->applied = c->index;
  s->flushed = c->index;
  atomic_store(&s->durable, c->index);
  s->active_since_ns = 0;
  s->ctr.restores++;
  s->full = false;   /* the state fitted */
  s->broken = false; /* an abandoned restore before this one left a part */
  c->open = false;
  restore_end(s);
  return 0;
}

static int sm_restore_step(void *ud, void *ctx, size_t budget,
                           qraft_sm_read_fn read, void *rctx) {
  kv_store *s = ud;
  kv_restore_ctx *c = ctx;
  if (!c->open) {
    return 0; /* skipped in restore_begin */
  }
  int rv;
  if (!c->started && (rv = restore_start(s, c, read, rctx)) != 0) {
    return rv;
  }
  for (size_t done = 0; done < budget;) {
    if (c->batch >= KV_RESTORE_BATCH_BYTES) {
      rv = mdb_txn_commit(c->t);
      c->t = NULL;
      if (rv == MDB_MAP_FULL) {
        return restore_map_full(s, c);
      }
      if (rv != 0) store_die("commit restore batch", rv);
      c->committed = true;
      rv = mdb_txn_begin(s->env, NULL, 0, &c->t);
      if (rv != 0) store_die("begin restore", rv);
      c->batch = 0;
      pthread_mutex_lock(&s->mu);
      s->ctr.restore_batches++;
      pthread_mutex_unlock(&s->mu);
    }
    uint8_t r[9];
    rv = read_exact(read, rctx, r, 9);
    if (rv != 0) {
      return restore_fail(s, c, rv, "records");
    }
    if (r[0] == 0xff) {
      return restore_finish(s, c);
    }
    size_t kl = get_u32(r + 1), vl = get_u32(r + 5);
    if (r[0] > 1 || kl == 0 || kl > 64 * 1024 || vl > 64 * 1024 * 1024) {
      return restore_fail(s, c, QRAFT_ECORRUPT, "records");
    }
    if (kl + vl > c->cap) {
      uint8_t *nb = realloc(c->buf, kl + vl);
      if (nb == NULL) {
        return restore_fail(s, c, -ENOMEM, "records");
      }
      c->buf = nb;
      c->cap = kl + vl;
    }
    rv = read_exact(read, rctx, c->buf, kl + vl);
    if (rv != 0) {
      return restore_fail(s, c, rv, "records");
    }
    c->batch += kl + vl + 16;
    done += kl + vl + 9;
    MDB_val k = {kl, c->buf}, v = {vl, c->buf + kl};
    rv = mdb_put(c->t, r[0] == 0 ? s->kv : s->meta, &k, &v, 0);
    if (rv == MDB_MAP_FULL) {
      return restore_map_full(s, c);
    }
    if (rv != 0) store_die("put restore", rv);
  }
  return 1;
}

/* After the last step, an error, or when the node abandons the restore (a
 * newer snapshot, a shutdown): an unfinished one is dropped as a failed one
 * (the old state stays unless a batch was committed; then the durable index
 * is 0 and the next restore, or the next start, replaces the state). */
static void sm_restore_end(void *ud, void *ctx) {
  kv_store *s = ud;
  kv_restore_ctx *c = ctx;
  if (c->open) {
    if (c->t != NULL) {
      mdb_txn_abort(c->t);
    }
    pthread_mutex_lock(&s->mu);
    restore_failed_locked(s, c->committed);
    restore_end(s);
  }
  free(c->buf);
  free(c);
}

static int sm_restore(void *ud, uint64_t index, qraft_sm_read_fn read,
                      void *rctx) {
  void *ctx = NULL;
  int rv = sm_restore_begin(ud, index, &ctx);
  if (rv != 0) {
    return rv;
  }
  while ((rv = sm_restore_step(ud, ctx, SIZE_MAX, read, rctx)) == 1) {
  }
  sm_restore_end(ud, ctx);
  return rv;
}

static const qraft_sm_ops kv_ops = {.apply = sm_apply,
                                    .snapshot = sm_snapshot,
                                    .restore = sm_restore,
                                    .durable_index = sm_durable_index,
                                    .snapshot_begin = sm_snapshot_begin,
                                    .snapshot_step = sm_snapshot_step,
                                    .snapshot_end = sm_snapshot_end,
                                    .restore_begin = sm_restore_begin,
                                    .restore_step = sm_restore_step,
                                    .restore_end = sm_restore_end};

const qraft_sm_ops *kv_store_ops(void) { return &kv_ops; }

/* ---- reads (any thread) ---- */

static int copy_value(const uint8_t *v, size_t vl, char **val, size_t *val_len,
                      uint64_t *rev) {
  *rev = get_u64(v);
  *val_len = vl - 8;
  *val = malloc(*val_len + 1);
  if (*val == NULL) {
    return -1;
  }
  memcpy(*val, v + 8, *val_len);
  (*val)[*val_len] = 0;
  return 0;
}

int kv_store_get(kv_store *s, const char *key, size_t key_len, char **val,
                 size_t *val_len, uint64_t *rev) {
  pthread_mutex_lock(&s->mu);
  while (s->restoring) { /* LMDB holds part of the new state */
    pthread_cond_wait(&s->cv, &s->mu);
  }
  if (s->broken) {
    pthread_mutex_unlock(&s->mu);
    return -1;
  }
  const ov_ent *e = ov_lookup(s, 0, (const uint8_t *)key, key_len);
  if (e != NULL) {
    int out = e->deleted || e->vlen < 8
                  ? 1
                  : copy_value(e->val, e->vlen, val, val_len, rev);
    pthread_mutex_unlock(&s->mu);
    return out;
  }
  /* Not in the overlays: LMDB holds its newest write (the flusher drops
   * a batch only after committing it). The read transaction begins under
   * `mu`, so it sees no batch of a restore that starts after. */
  MDB_txn *t;
  int brv = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &t);
  pthread_mutex_unlock(&s->mu);
  if (brv != 0) {
    return -1;
  }
  MDB_val k = {key_len, (void *)key}, v;
  int rv = mdb_get(t, s->kv, &k, &v);
  int out = 1;
  if (rv == 0 && v.mv_size >= 8) {
    out = copy_value(v.mv_data, v.mv_size, val, val_len, rev);
  } else if (rv != MDB_NOTFOUND) {
    out = -1;
  }
  mdb_txn_abort(t);
  return out;
}

typedef struct list_each {
  size_t limit, n;
  bool *more;
  kv_item_fn fn;
  void *ud;
} list_each;

static bool list_fn(void *ud, const MDB_val *k, const MDB_val *v) {
  list_each *le = ud;
  if (v->mv_size < 8) {
    return true;
  }
  if (le->n == le->limit) {
    *le->more = true;
    return false;
  }
  le->fn(le->ud, k->mv_data, k->mv_size, (const char *)v->mv_data + 8,
         v->mv_size - 8, get_u64(v->mv_data));
  le->n++;
  return true;
}

int kv_store_list(kv_store *s, const char *prefix, size_t prefix_len,
                  size_t limit, kv_item_fn fn, void *ud, bool *more) {
  *more = false;
  view v;
  if (view_open(s, 0, (const uint8_t *)prefix, prefix_len, &v) != 0) {
    return -1;
  }
  list_each le = {.limit = limit, .more = more, .fn = fn, .ud = ud};
  int rv = view_each(&v, s->kv, (const uint8_t *)prefix, prefix_len, list_fn,
                     &le);
  view_close(&v);
  return rv;
}

typedef struct digest_each {
  uint64_t h, n;
} digest_each;

static bool digest_fn(void *ud, const MDB_val *k, const MDB_val *v) {
  digest_each *de = ud;
  uint8_t lens[8];
  put_u32(lens, (uint32_t)k->mv_size);
  put_u32(lens + 4, (uint32_t)v->mv_size);
  de->h = kv_fnv(de->h, lens, 8);
  de->h = kv_fnv(de->h, k->mv_data, k->mv_size);
  de->h = kv_fnv(de->h, v->mv_data, v->mv_size);
  de->n++;
  return true;
}

int kv_store_digest(kv_store *s, uint64_t *digest, uint64_t *keys,
                    uint64_t *applied) {
  view v;
  if (view_open(s, 0, NULL, 0, &v) != 0) {
    return -1;
  }
  if (applied != NULL) {
    *applied = v.applied;
  }
  if (digest != NULL) {
    digest_each de = {.h = KV_FNV_OFFSET};
    view_each(&v, s->kv, NULL, 0, digest_fn, &de);
    *digest = de.h;
    if (keys != NULL) *keys = de.n;
  }
  view_close(&v);
  return 0;
}

int kv_store_http_of(kv_store *s, const char *hex_id, char *out, size_t n) {
  char name[80];
  int ln = snprintf(name, sizeof name, "http/%s", hex_id);
  int found = 0;
  pthread_mutex_lock(&s->mu);
  while (s->restoring) { /* LMDB holds part of the new state */
    pthread_cond_wait(&s->cv, &s->mu);
  }
  if (s->broken) {
    pthread_mutex_unlock(&s->mu);
    return 0;
  }
  const ov_ent *e = ov_lookup(s, 1, (const uint8_t *)name, (size_t)ln);
  if (e != NULL) {
    if (!e->deleted && e->vlen < n) {
      memcpy(out, e->val, e->vlen);
      out[e->vlen] = 0;
      found = 1;
    }
    pthread_mutex_unlock(&s->mu);
    return found;
  }
  MDB_txn *t;
  int brv = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &t);
  pthread_mutex_unlock(&s->mu);
  if (brv != 0) {
    return 0;
  }
  MDB_val k = {(size_t)ln, name}, v;
  if (mdb_get(t, s->meta, &k, &v) == 0 && v.mv_size < n) {
    memcpy(out, v.mv_data, v.mv_size);
    out[v.mv_size] = 0;
    found = 1;
  }
  mdb_txn_abort(t);
  return found;
}
