/*
 * qraft-crashtest: crash safety of the WAL store with real processes.
 *
 *   qraft-crashtest --kills N --dir D [--seed S] [--max-ms M] [--verbose]
 *
 * Each round forks a child that opens the store in D and writes in a loop,
 * up to 8 writes in flight: appends, truncating appends, hard states,
 * configurations, compactions and snapshot installs. Before submitting a
 * write it sends its description ("intent") to the parent through a pipe;
 * after the write's callback reports it durable it sends an "ack". The
 * parent kills the child with SIGKILL after a random 0..M ms (during
 * recovery, mid-batch, mid-snapshot: wherever it lands), then opens the
 * store itself and checks that what it holds is exactly the state after
 * the first k writes, for some k between the number acknowledged and the
 * number submitted: nothing acknowledged lost, no write half applied,
 * every entry's and snapshot's bytes intact, the hard state one that was
 * written. The state found is the model for the next round.
 *
 * Exit status 0 when every round checks out, 1 on the first violation (it
 * prints the round, its seed and what differed).
 */
#include <qraft/prng.h>
#include <qraft/storage.h>

#include "storage/log_view.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define INFLIGHT_MAX 8
#define SEGMENT_BYTES (256u << 10)

/* ---- what a write is, as sent through the pipe ---- */

enum { MSG_INTENT = 1, MSG_ACK = 2 };

typedef struct msg {
  uint32_t kind;
  uint32_t conf_mask; /* has_conf: voters 1..32 by bit */
  uint64_t seq;
  uint64_t snap_index, snap_term, snap_bytes; /* snap_index 0: none */
  uint32_t snap_mask;
  uint32_t has_hs, has_conf;
  uint32_t pad;
  uint64_t ent_lo, ent_n, ent_term;
  uint64_t hs_term, hs_vote, hs_commit;
  uint64_t compact;
} msg;
_Static_assert(sizeof(msg) <= 512, "a message is written atomically");

/* ---- deterministic bytes ---- */

static size_t entry_len(uint64_t index, uint64_t term) {
  return (size_t)((index * 131 + term * 17) % 301);
}
static uint8_t entry_byte(uint64_t index, uint64_t term, size_t i) {
  return (uint8_t)(index * 7 + term * 13 + i * 31 + (i >> 8));
}
static uint8_t snap_byte(uint64_t index, uint64_t term, uint64_t i) {
  return (uint8_t)(index * 3 + term * 5 + i * 11 + (i >> 10));
}

static qraft_conf_state conf_of(uint32_t mask) {
  qraft_conf_state c = {0};
  for (uint32_t i = 0; i < 32; i++) {
    if (mask & (1u << i)) {
      c.voters[c.voters_n++] = i + 1;
    }
  }
  return c;
}

static uint32_t mask_of(const qraft_conf_state *c) {
  uint32_t m = 0;
  for (uint32_t i = 0; i < c->voters_n; i++) {
    if (c->voters[i] >= 1 && c->voters[i] <= 32) {
      m |= 1u << (c->voters[i] - 1);
    } else {
      return 0xffffffffu; /* never a mask we write */
    }
  }
  return c->voters_n > 0 || c->learners_n == 0 ? m : 0xffffffffu;
}

/* ---- the model: the state after a sequence of writes ---- */

typedef struct model {
  qraft_hard_state hs;
  uint32_t conf_mask;
  uint64_t snap_index, snap_term, snap_bytes;
  uint32_t snap_mask;
  qraft__logv log; /* terms */
} model;

static void model_init(model *m) {
  memset(m, 0, sizeof *m);
  qraft__logv_init(&m->log, 8, NULL, NULL);
}

static void model_copy(model *dst, const model *src) {
  qraft__logv log = dst->log;
  *dst = *src;
  dst->log = log;
  if (qraft__logv_copy_terms(&dst->log, &src->log) != 0) {
    abort();
  }
}

static void model_apply(model *m, const msg *x) {
  /* The same rules the stores follow, through the shared log view. */
  qraft_snapshot_writer sw = {0};
  qraft_entry *ents = NULL;
  qraft_storage_write w = {0};
  if (x->snap_index != 0) {
    sw.meta.index = x->snap_index;
    sw.meta.term = x->snap_term;
    w.snapshot = &sw;
    m->snap_index = x->snap_index;
    m->snap_term = x->snap_term;
    m->snap_bytes = x->snap_bytes;
    m->snap_mask = x->snap_mask;
    m->conf_mask = x->snap_mask;
  }
  if (x->ent_n > 0) {
    ents = calloc(x->ent_n, sizeof *ents);
    for (uint64_t i = 0; i < x->ent_n; i++) {
      ents[i].index = x->ent_lo + i;
      ents[i].term = x->ent_term;
    }
    w.entries = ents;
    w.entries_n = x->ent_n;
  }
  if (x->has_conf) {
    m->conf_mask = x->conf_mask;
  }
  if (x->has_hs) {
    m->hs = (qraft_hard_state){x->hs_term, x->hs_vote, x->hs_commit};
  }
  w.compact_index = x->compact;
  if (qraft__logv_apply_terms(&m->log, &w) != 0) {
    abort();
  }
  free(ents);
}

/* ---- the child ---- */

typedef struct child_write {
  qraft_storage_write w;
  qraft_entry *ents;
  uint8_t *bytes;
  qraft_hard_state hs;
  qraft_conf_state cs;
  uint64_t seq;
  int fd;
  int *inflight;
} child_write;

static void send_msg(int fd, const msg *x) {
  ssize_t n;
  do {
    n = write(fd, x, sizeof *x);
  } while (n < 0 && errno == EINTR);
  if (n != (ssize_t)sizeof *x) {
    _exit(3);
  }
}

static void child_done_cb(qraft_storage_write *w, int status) {
  child_write *cw = w->data;
  if (status != 0) {
    fprintf(stderr, "crashtest child: write %" PRIu64 " failed: %s\n", cw->seq,
            qraft_strerror(status));
    _exit(4);
  }
  msg ack = {.kind = MSG_ACK, .seq = cw->seq};
  send_msg(cw->fd, &ack);
  (*cw->inflight)--;
  free(cw->ents);
  free(cw->bytes);
  free(cw);
}

/* Says what the child started from and what it believed when the store
 * refused a write: the store's view and the child's must never differ. */
static void child_dump(const qraft_storage_state *st, const qraft__logv *view,
                       const msg *x) {
  fprintf(stderr,
          "crashtest child: opened with log %" PRIu64 "..%" PRIu64
          " prev %" PRIu64 ", snapshot %" PRIu64 "/%" PRIu64
          ", hard state %" PRIu64 "/%" PRIu64 "/%" PRIu64 "\n"
          "crashtest child: its view before write %" PRIu64 ": log %" PRIu64
          "..%" PRIu64 " prev %" PRIu64 "\n"
          "crashtest child: write %" PRIu64 ": snapshot %" PRIu64 "/%" PRIu64
          ", entries %" PRIu64 "+%" PRIu64 " term %" PRIu64
          ", compact %" PRIu64 ", conf %u, hard state %u\n",
          st->first_index, st->last_index, st->prev_term, st->snapshot.index,
          st->snapshot.term, st->hard_state.term, st->hard_state.vote,
          st->hard_state.commit, x->seq, view->first, qraft__logv_last(view),
          view->prev_term, x->seq, x->snap_index, x->snap_term, x->ent_lo,
          x->ent_n, x->ent_term, x->compact, x->has_conf, x->has_hs);
}

static _Noreturn void child_main(const char *dir, uint64_t seed, int fd) {
  qraft_prng prng;
  qraft_prng_init(&prng, seed);
  qraft_storage *s = NULL;
  qraft_err err;
  qraft_err_init(&err, 0);
  qraft_wal_config cfg = {.segment_bytes = SEGMENT_BYTES,
                          .snapshot_chunk_bytes = 4096};
  if (qraft_storage_wal_open(dir, &cfg, &s, &err) != 0) {
    qraft_err_print(&err, stderr);
    _exit(2);
  }
  qraft_storage_state st;
  qraft_storage_state_get(s, &st, NULL);
  /* The child's view of the log, after every write it submitted. */
  qraft__logv view;
  qraft__logv_init(&view, 8, NULL, NULL);
  qraft__logv_reset(&view, st.first_index, st.prev_term);
  uint64_t cur_term = st.prev_term > st.hard_state.term ? st.prev_term
                                                         : st.hard_state.term;
  for (uint64_t i = st.first_index; i <= st.last_index; i++) {
    uint64_t t;
    if (qraft_storage_term(s, i, &t, NULL) != 0) {
      _exit(2);
    }
    qraft__logv_append(&view, t);
    if (t > cur_term) {
      cur_term = t;
    }
  }
  if (cur_term == 0) {
    cur_term = 1;
  }
  int inflight = 0;
  for (uint64_t seq = 1;; seq++) {
    while (inflight >= INFLIGHT_MAX) {
      qraft_storage_wait(s, -1);
      qraft_storage_poll(s);
    }
    uint64_t first = view.first, last = qraft__logv_last(&view);
    child_write *cw = calloc(1, sizeof *cw);
    cw->seq = seq;
    cw->fd = fd;
    cw->inflight = &inflight;
    msg x = {.kind = MSG_INTENT, .seq = seq};
    uint64_t r = qraft_prng_below(&prng, 100);
    if (r < 5) {
      /* Snapshot: inside the log (kept suffix) or past it (new log). */
      if (last >= first && qraft_prng_chance(&prng, 1, 2)) {
        x.snap_index = qraft_prng_between(&prng, first, last);
        qraft__logv_term(&view, x.snap_index, &x.snap_term);
      } else {
        x.snap_index = last + qraft_prng_between(&prng, 1, 50);
        x.snap_term = cur_term;
      }
      x.snap_bytes = qraft_prng_below(&prng, 20000);
      x.snap_mask = (uint32_t)qraft_prng_between(&prng, 1, 0xffff);
      qraft_snapshot_meta meta = {.index = x.snap_index, .term = x.snap_term,
                                  .conf_state = conf_of(x.snap_mask)};
      qraft_snapshot_writer *sw;
      if (qraft_storage_snapshot_writer_open(s, &meta, &sw, &err) != 0) {
        qraft_err_print(&err, stderr);
        _exit(2);
      }
      uint8_t buf[3000];
      for (uint64_t off = 0; off < x.snap_bytes;) {
        size_t n = (size_t)qraft_prng_between(&prng, 1, sizeof buf);
        if (n > x.snap_bytes - off) {
          n = (size_t)(x.snap_bytes - off);
        }
        for (size_t k = 0; k < n; k++) {
          buf[k] = snap_byte(x.snap_index, x.snap_term, off + k);
        }
        if (qraft_snapshot_writer_write(sw, buf, n, &err) != 0) {
          qraft_err_print(&err, stderr);
          _exit(2);
        }
        off += n;
      }
      cw->w.snapshot = sw;
      first = x.snap_index + 1; /* entries may follow at the new first */
      uint64_t t;
      if (qraft__logv_term(&view, x.snap_index, &t) == 0 &&
          t == x.snap_term && x.snap_index >= view.first) {
        /* kept: last unchanged */
      } else {
        last = x.snap_index;
      }
    } else if (r < 15 && last >= first) {
      uint64_t span = last - first + 1;
      x.compact = last + 1 - qraft_prng_below(&prng, span > 50 ? 50 : span);
      if (x.compact <= first) {
        x.compact = first + 1;
      }
    } else if (r < 20) {
      x.has_conf = 1;
      x.conf_mask = (uint32_t)qraft_prng_between(&prng, 1, 0xffffffffu);
    }
    if (x.compact == 0 && x.snap_index == 0 && r >= 20) {
      uint64_t lo = last + 1;
      if (r < 30 && last >= first) {
        /* A new leader overwrites a suffix (Raft paper 5.3). */
        uint64_t back = qraft_prng_below(&prng, 10);
        lo = last - (back > last - first ? last - first : back);
        cur_term++;
      }
      x.ent_lo = lo;
      x.ent_n = qraft_prng_between(&prng, 1, 20);
      x.ent_term = cur_term;
    }
    if (x.compact == 0 && last >= first && last - first > 1500 && x.snap_index == 0 &&
        x.ent_n == 0) {
      x.compact = last - 500;
    }
    if (qraft_prng_chance(&prng, 1, 3) || (x.ent_n == 0 && x.compact == 0 &&
                                            !x.has_conf && x.snap_index == 0)) {
      x.has_hs = 1;
      x.hs_term = cur_term;
      x.hs_vote = qraft_prng_between(&prng, 1, 5);
      x.hs_commit = qraft_prng_below(&prng, last + 1);
    }
    /* Build the write. */
    if (x.ent_n > 0) {
      cw->ents = calloc(x.ent_n, sizeof *cw->ents);
      size_t total = 0;
      for (uint64_t i = 0; i < x.ent_n; i++) {
        total += entry_len(x.ent_lo + i, x.ent_term);
      }
      cw->bytes = malloc(total + 1);
      size_t off = 0;
      for (uint64_t i = 0; i < x.ent_n; i++) {
        uint64_t idx = x.ent_lo + i;
        size_t len = entry_len(idx, x.ent_term);
        for (size_t k = 0; k < len; k++) {
          cw->bytes[off + k] = entry_byte(idx, x.ent_term, k);
        }
        cw->ents[i] = (qraft_entry){.term = x.ent_term, .index = idx,
                                    .data = {cw->bytes + off, len, NULL}};
        off += len;
      }
      cw->w.entries = cw->ents;
      cw->w.entries_n = x.ent_n;
    }
    if (x.has_hs) {
      cw->hs = (qraft_hard_state){x.hs_term, x.hs_vote, x.hs_commit};
      cw->w.hard_state = &cw->hs;
    }
    if (x.has_conf) {
      cw->cs = conf_of(x.conf_mask);
      cw->w.conf_state = &cw->cs;
    }
    cw->w.compact_index = x.compact;
    cw->w.cb = child_done_cb;
    cw->w.data = cw;
    /* From a successful submit until its callback the write belongs to the
     * store, and the snapshot writer for good (qraft/storage.h): the WAL's
     * writer thread finishes and frees the writer and clears w.snapshot,
     * possibly before submit returns. So the view takes what it needs now,
     * while the write is still ours; the entries stay ours to read. */
    qraft_snapshot_writer snap_meta = {0};
    qraft_storage_write applied = cw->w;
    if (applied.snapshot != NULL) {
      snap_meta.meta = applied.snapshot->meta;
      applied.snapshot = &snap_meta;
    }
    send_msg(fd, &x);
    if (qraft_storage_submit(s, &cw->w, &err) != 0) {
      qraft_err_print(&err, stderr);
      child_dump(&st, &view, &x);
      _exit(2);
    }
    inflight++;
    if (qraft__logv_apply_terms(&view, &applied) != 0) {
      _exit(2);
    }
    qraft_storage_poll(s);
  }
}

/* ---- the parent ---- */

static int verbose;

/* Compares the reopened store with model `m`; returns 0 if equal, else
 * writes why into `why`. Entry bytes and snapshot bytes are checked once,
 * by check_bytes. */
static int store_equals(const qraft_storage_state *st, const uint64_t *terms,
                        const model *m, char *why, size_t why_size) {
  if (st->hard_state.term != m->hs.term || st->hard_state.vote != m->hs.vote ||
      st->hard_state.commit != m->hs.commit) {
    snprintf(why, why_size, "hard state %" PRIu64 "/%" PRIu64 "/%" PRIu64
             ", model %" PRIu64 "/%" PRIu64 "/%" PRIu64,
             st->hard_state.term, st->hard_state.vote, st->hard_state.commit,
             m->hs.term, m->hs.vote, m->hs.commit);
    return -1;
  }
  if (mask_of(&st->conf_state) != m->conf_mask) {
    snprintf(why, why_size, "configuration %08x, model %08x",
             mask_of(&st->conf_state), m->conf_mask);
    return -1;
  }
  if (st->snapshot.index != m->snap_index ||
      st->snapshot.term != m->snap_term) {
    snprintf(why, why_size, "snapshot %" PRIu64 "/%" PRIu64
             ", model %" PRIu64 "/%" PRIu64,
             st->snapshot.index, st->snapshot.term, m->snap_index,
             m->snap_term);
    return -1;
  }
  if (st->first_index != m->log.first ||
      st->last_index != qraft__logv_last(&m->log) ||
      st->prev_term != m->log.prev_term) {
    snprintf(why, why_size, "log %" PRIu64 "..%" PRIu64 " prev %" PRIu64
             ", model %" PRIu64 "..%" PRIu64 " prev %" PRIu64,
             st->first_index, st->last_index, st->prev_term, m->log.first,
             qraft__logv_last(&m->log), m->log.prev_term);
    return -1;
  }
  for (uint64_t i = st->first_index; i <= st->last_index; i++) {
    uint64_t t;
    qraft__logv_term(&m->log, i, &t);
    if (terms[i - st->first_index] != t) {
      snprintf(why, why_size, "entry %" PRIu64 " has term %" PRIu64
               ", model %" PRIu64, i, terms[i - st->first_index], t);
      return -1;
    }
  }
  return 0;
}

/* Reads every entry and the snapshot back and checks their bytes. Fills
 * `terms`. */
static int check_bytes(qraft_storage *s, const qraft_storage_state *st,
                       uint64_t *terms, uint64_t *snap_bytes, char *why,
                       size_t why_size) {
  qraft_entry out[128];
  qraft_err err;
  for (uint64_t lo = st->first_index; lo <= st->last_index;) {
    size_t n;
    qraft_err_init(&err, 0);
    if (qraft_storage_entries(s, lo, st->last_index + 1, UINT64_MAX, out, 128,
                              &n, &err) != 0) {
      qraft_err_format(&err, why, why_size);
      return -1;
    }
    for (size_t i = 0; i < n; i++) {
      const qraft_entry *e = &out[i];
      int ok = e->index == lo + i &&
               e->data.len == entry_len(e->index, e->term);
      for (size_t k = 0; ok && k < e->data.len; k++) {
        ok = e->data.data[k] == entry_byte(e->index, e->term, k);
      }
      if (!ok) {
        snprintf(why, why_size, "entry %" PRIu64 " bytes are wrong", lo + i);
        qraft_storage_entries_release(out, n);
        return -1;
      }
      terms[lo + i - st->first_index] = e->term;
    }
    qraft_storage_entries_release(out, n);
    lo += n;
  }
  *snap_bytes = 0;
  if (st->snapshot.index != 0) {
    qraft_snapshot_reader *r;
    qraft_err_init(&err, 0);
    if (qraft_storage_snapshot_reader_open(s, &r, &err) != 0) {
      qraft_err_format(&err, why, why_size);
      return -1;
    }
    uint8_t buf[8192];
    size_t n;
    uint64_t off = 0;
    int rc;
    while ((rc = qraft_snapshot_reader_read(r, buf, sizeof buf, &n, &err)) ==
               0 &&
           n > 0) {
      for (size_t k = 0; k < n; k++) {
        if (buf[k] != snap_byte(r->meta.index, r->meta.term, off + k)) {
          snprintf(why, why_size, "snapshot byte %" PRIu64 " is wrong",
                   off + k);
          qraft_snapshot_reader_close(r);
          return -1;
        }
      }
      off += n;
    }
    qraft_snapshot_reader_close(r);
    if (rc != 0) {
      qraft_err_format(&err, why, why_size);
      return -1;
    }
    *snap_bytes = off;
  }
  return 0;
}

static void usage(void) {
  fprintf(stderr,
          "usage: qraft-crashtest --kills N --dir D [--seed S] [--max-ms M] "
          "[--verbose]\n");
  exit(2);
}

int main(int argc, char **argv) {
  uint64_t kills = 0, seed = 0, max_ms = 30;
  const char *dir = NULL;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--kills") == 0 && i + 1 < argc) {
      kills = strtoull(argv[++i], NULL, 10);
    } else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc) {
      dir = argv[++i];
    } else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc) {
      seed = strtoull(argv[++i], NULL, 10);
    } else if (strcmp(argv[i], "--max-ms") == 0 && i + 1 < argc) {
      max_ms = strtoull(argv[++i], NULL, 10);
    } else if (strcmp(argv[i], "--verbose") == 0) {
      verbose = 1;
    } else {
      usage();
    }
  }
  if (kills == 0 || dir == NULL || max_ms == 0) {
    usage();
  }
  if (seed == 0) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ (uint64_t)getpid();
  }
  char store[4096];
  snprintf(store, sizeof store, "%s/store", dir);
  printf("qraft-crashtest: %" PRIu64 " kills in %s, seed %" PRIu64
         " (replay: qraft-crashtest --kills %" PRIu64 " --dir DIR --seed %" PRIu64
         "; kill timing still varies)\n",
         kills, store, seed, kills, seed);
  fflush(stdout);
  qraft_prng prng;
  qraft_prng_init(&prng, seed);
  model base, cand;
  model_init(&base);
  model_init(&cand);
  size_t intents_cap = 1024, intents_n = 0;
  msg *intents = malloc(intents_cap * sizeof *intents);
  uint64_t total_acked = 0, total_beyond = 0, total_intents = 0;
  size_t terms_cap = 0;
  uint64_t *terms = NULL;
  for (uint64_t round = 0; round < kills; round++) {
    int p[2];
    if (pipe(p) != 0) {
      perror("pipe");
      return 1;
    }
    fcntl(p[1], F_SETPIPE_SZ, 1 << 20);
    uint64_t child_seed = qraft_prng_next(&prng);
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
      perror("fork");
      return 1;
    }
    if (pid == 0) {
      close(p[0]);
      child_main(store, child_seed, p[1]);
    }
    close(p[1]);
    uint64_t us = qraft_prng_below(&prng, max_ms * 1000);
    struct timespec ts = {.tv_sec = (time_t)(us / 1000000),
                          .tv_nsec = (long)(us % 1000000) * 1000};
    nanosleep(&ts, NULL);
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    /* Everything the child said, in order. */
    intents_n = 0;
    uint64_t acked = 0;
    msg x;
    for (;;) {
      ssize_t n = read(p[0], &x, sizeof x);
      if (n <= 0) {
        break;
      }
      if (n != (ssize_t)sizeof x) {
        fprintf(stderr, "round %" PRIu64 ": short message\n", round);
        return 1;
      }
      if (x.kind == MSG_INTENT) {
        if (intents_n == intents_cap) {
          intents_cap *= 2;
          intents = realloc(intents, intents_cap * sizeof *intents);
        }
        intents[intents_n++] = x;
      } else if (x.kind == MSG_ACK) {
        if (x.seq != acked + 1) {
          fprintf(stderr, "round %" PRIu64 ": ack %" PRIu64 " out of order\n",
                  round, x.seq);
          return 1;
        }
        acked++;
      }
    }
    close(p[0]);
    if (!(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)) {
      fprintf(stderr,
              "round %" PRIu64 " (seed %" PRIu64 "): the child exited by "
              "itself (%d) after %zu writes, %" PRIu64 " acknowledged; the "
              "store checked after the round before: log %" PRIu64
              "..%" PRIu64 " prev %" PRIu64 ", snapshot %" PRIu64 "/%" PRIu64
              "\n",
              round, seed, status, intents_n, acked, base.log.first,
              qraft__logv_last(&base.log), base.log.prev_term, base.snap_index,
              base.snap_term);
      return 1;
    }
    /* Reopen and compare. */
    qraft_storage *s;
    qraft_err err;
    qraft_err_init(&err, 0);
    qraft_wal_config cfg = {.segment_bytes = SEGMENT_BYTES,
                            .snapshot_chunk_bytes = 4096};
    if (qraft_storage_wal_open(store, &cfg, &s, &err) != 0) {
      fprintf(stderr, "round %" PRIu64 " (seed %" PRIu64 "): reopen failed: ",
              round, seed);
      qraft_err_print(&err, stderr);
      return 1;
    }
    qraft_storage_state st;
    qraft_storage_state_get(s, &st, NULL);
    size_t need = st.last_index + 1 - st.first_index + 1;
    if (need > terms_cap) {
      terms_cap = need * 2;
      terms = realloc(terms, terms_cap * sizeof *terms);
    }
    char why[1024] = "";
    uint64_t snap_bytes = 0;
    if (check_bytes(s, &st, terms, &snap_bytes, why, sizeof why) != 0) {
      fprintf(stderr, "round %" PRIu64 " (seed %" PRIu64 "): %s\n", round,
              seed, why);
      return 1;
    }
    qraft_storage_close(s);
    model_copy(&cand, &base);
    size_t k;
    for (k = 0; k < acked; k++) {
      model_apply(&cand, &intents[k]);
    }
    int found = -1;
    for (;; k++) {
      if (store_equals(&st, terms, &cand, why, sizeof why) == 0 &&
          snap_bytes == cand.snap_bytes) {
        found = (int)k;
        break;
      }
      if (k == intents_n) {
        break;
      }
      model_apply(&cand, &intents[k]);
    }
    if (found < 0) {
      model_copy(&cand, &base);
      for (k = 0; k < acked; k++) {
        model_apply(&cand, &intents[k]);
      }
      store_equals(&st, terms, &cand, why, sizeof why);
      fprintf(stderr,
              "round %" PRIu64 " (seed %" PRIu64 "): the store matches no state "
              "between write %" PRIu64 " (acknowledged) and %zu (submitted); "
              "against the acknowledged state: %s\n",
              round, seed, acked, intents_n, why);
      return 1;
    }
    model_copy(&base, &cand);
    total_acked += acked;
    total_intents += intents_n;
    total_beyond += (uint64_t)found - acked;
    if (verbose) {
      printf("round %" PRIu64 ": %" PRIu64 " acknowledged, %zu submitted, "
             "found the state after %d; log %" PRIu64 "..%" PRIu64
             ", snapshot %" PRIu64 "\n",
             round, acked, intents_n, found, st.first_index, st.last_index,
             st.snapshot.index);
    }
  }
  printf("qraft-crashtest: %" PRIu64 " kills, %" PRIu64 " writes submitted, %"
         PRIu64 " acknowledged and all found intact; %" PRIu64
         " unacknowledged writes found whole; nothing lost, nothing torn\n",
         kills, total_intents, total_acked, total_beyond);
  qraft__logv_close(&base.log);
  qraft__logv_close(&cand.log);
  free(intents);
  free(terms);
  return 0;
}
