/*
 * lincheck.c: the history builder and the Wing-Gong-Lowe linearizability
 * search with memoization, per key. See lincheck.h and docs/lincheck.md.
 *
 * Never reads a clock except when the caller sets a time budget; never
 * keeps global state.
 */
#include "sim/lincheck.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <qraft/assert.h>
#include <qraft/prng.h>

/* ------------------------------------------------------------ name table */

typedef struct lincheck_names {
  char **texts;      /* texts[id - 1] */
  size_t texts_n;
  size_t texts_cap;
  uint64_t *slots;   /* open addressing: id, 0 = empty */
  size_t slots_cap;  /* power of two */
} lincheck_names;

struct qraft__lincheck_history {
  qraft__lincheck_op *ops;
  size_t ops_n;
  size_t ops_cap;
  size_t *pending; /* op numbers with status PENDING */
  size_t pending_n;
  size_t pending_cap;
  lincheck_names names[QRAFT_LINCHECK_KINDS];
};

static uint64_t lincheck_hash_text(const char *s) {
  uint64_t hash = 0xcbf29ce484222325ULL; /* FNV-1a */
  for (; *s; s++) {
    hash ^= (unsigned char)*s;
    hash *= 0x100000001b3ULL;
  }
  return hash;
}

static int lincheck_grow(void **p, size_t *cap, size_t need, size_t elem) {
  if (need <= *cap) {
    return 0;
  }
  size_t cap_new = *cap ? *cap : 16;
  while (cap_new < need) {
    cap_new *= 2;
  }
  void *q = realloc(*p, cap_new * elem);
  if (!q) {
    return -ENOMEM;
  }
  *p = q;
  *cap = cap_new;
  return 0;
}

static int names_rehash(lincheck_names *n, size_t cap) {
  uint64_t *slots = calloc(cap, sizeof(*slots));
  if (!slots) {
    return -ENOMEM;
  }
  for (size_t i = 0; i < n->texts_n; i++) {
    size_t s = lincheck_hash_text(n->texts[i]) & (cap - 1);
    while (slots[s]) {
      s = (s + 1) & (cap - 1);
    }
    slots[s] = i + 1;
  }
  free(n->slots);
  n->slots = slots;
  n->slots_cap = cap;
  return 0;
}

int qraft__lincheck_intern(qraft__lincheck_history *h,
                           qraft__lincheck_kind kind, const char *text,
                           uint64_t *id) {
  QRAFT_ASSERT(kind < QRAFT_LINCHECK_KINDS);
  lincheck_names *n = &h->names[kind];
  if (n->slots_cap) {
    size_t s = lincheck_hash_text(text) & (n->slots_cap - 1);
    while (n->slots[s]) {
      if (strcmp(n->texts[n->slots[s] - 1], text) == 0) {
        *id = n->slots[s];
        return 0;
      }
      s = (s + 1) & (n->slots_cap - 1);
    }
  }
  /* New text: keep the table at most half full. */
  if ((n->texts_n + 1) * 2 > n->slots_cap) {
    int rc = names_rehash(n, n->slots_cap ? n->slots_cap * 2 : 64);
    if (rc) {
      return rc;
    }
  }
  int rc = lincheck_grow((void **)&n->texts, &n->texts_cap, n->texts_n + 1,
                         sizeof(*n->texts));
  if (rc) {
    return rc;
  }
  char *copy = strdup(text);
  if (!copy) {
    return -ENOMEM;
  }
  n->texts[n->texts_n++] = copy;
  size_t s = lincheck_hash_text(text) & (n->slots_cap - 1);
  while (n->slots[s]) {
    s = (s + 1) & (n->slots_cap - 1);
  }
  n->slots[s] = n->texts_n;
  *id = n->texts_n;
  return 0;
}

const char *qraft__lincheck_name(const qraft__lincheck_history *h,
                                 qraft__lincheck_kind kind, uint64_t id) {
  QRAFT_ASSERT(kind < QRAFT_LINCHECK_KINDS);
  const lincheck_names *n = &h->names[kind];
  if (id == 0 || id > n->texts_n) {
    return NULL;
  }
  return n->texts[id - 1];
}

/* --------------------------------------------------------------- builder */

int qraft__lincheck_history_new(qraft__lincheck_history **out) {
  qraft__lincheck_history *h = calloc(1, sizeof(*h));
  if (!h) {
    return -ENOMEM;
  }
  *out = h;
  return 0;
}

void qraft__lincheck_history_free(qraft__lincheck_history *h) {
  if (!h) {
    return;
  }
  for (int k = 0; k < QRAFT_LINCHECK_KINDS; k++) {
    for (size_t i = 0; i < h->names[k].texts_n; i++) {
      free(h->names[k].texts[i]);
    }
    free(h->names[k].texts);
    free(h->names[k].slots);
  }
  free(h->pending);
  free(h->ops);
  free(h);
}

static const char *lincheck_f_name(qraft__lincheck_f f) {
  switch (f) {
  case QRAFT_LINCHECK_PUT:
    return "put";
  case QRAFT_LINCHECK_GET:
    return "get";
  case QRAFT_LINCHECK_CAS:
    return "cas";
  case QRAFT_LINCHECK_DEL:
    return "del";
  }
  return "?";
}

int qraft__lincheck_invoke(qraft__lincheck_history *h, uint64_t process,
                           uint64_t time_ns, qraft__lincheck_f f, uint64_t key,
                           uint64_t value, uint64_t value_new, qraft_err *err) {
  switch (f) {
  case QRAFT_LINCHECK_PUT:
    if (value == QRAFT_LINCHECK_MISSING || value_new != 0) {
      return QRAFT_ERR(err, QRAFT_EMALFORMED,
                       "put needs a value (not 0) and no new value");
    }
    break;
  case QRAFT_LINCHECK_CAS:
    if (value_new == QRAFT_LINCHECK_MISSING) {
      return QRAFT_ERR(err, QRAFT_EMALFORMED, "cas needs a new value (not 0)");
    }
    break;
  case QRAFT_LINCHECK_GET:
  case QRAFT_LINCHECK_DEL:
    if (value != 0 || value_new != 0) {
      return QRAFT_ERR(err, QRAFT_EMALFORMED, "%s takes no value",
                       lincheck_f_name(f));
    }
    break;
  default:
    return QRAFT_ERR(err, QRAFT_EMALFORMED, "unknown operation %d", (int)f);
  }
  if (time_ns == UINT64_MAX) {
    return QRAFT_ERR(err, QRAFT_EMALFORMED, "invocation time is out of range");
  }
  for (size_t i = 0; i < h->pending_n; i++) {
    if (h->ops[h->pending[i]].process == process) {
      return QRAFT_ERR(err, QRAFT_EMALFORMED,
                       "process %" PRIu64
                       " invokes while operation #%zu is pending",
                       process, h->pending[i]);
    }
  }
  int rc = lincheck_grow((void **)&h->ops, &h->ops_cap, h->ops_n + 1,
                         sizeof(*h->ops));
  if (rc == 0) {
    rc = lincheck_grow((void **)&h->pending, &h->pending_cap,
                       h->pending_n + 1, sizeof(*h->pending));
  }
  if (rc) {
    return QRAFT_ERR(err, rc, "history of %zu operations", h->ops_n);
  }
  h->ops[h->ops_n] = (qraft__lincheck_op){
      .process = process,
      .f = f,
      .key = key,
      .value = value,
      .value_new = value_new,
      .call_ns = time_ns,
      .status = QRAFT_LINCHECK_PENDING,
  };
  h->pending[h->pending_n++] = h->ops_n++;
  return 0;
}

/* Finds the pending operation of `process`, removes it from the pending
 * list and checks the completion time. */
static int history_take_pending(qraft__lincheck_history *h, uint64_t process,
                                uint64_t time_ns, qraft__lincheck_op **op,
                                qraft_err *err) {
  for (size_t i = 0; i < h->pending_n; i++) {
    qraft__lincheck_op *o = &h->ops[h->pending[i]];
    if (o->process != process) {
      continue;
    }
    if (time_ns < o->call_ns || time_ns == UINT64_MAX) {
      return QRAFT_ERR(err, QRAFT_EMALFORMED,
                       "process %" PRIu64 " completes at %" PRIu64
                       ", before its invocation at %" PRIu64,
                       process, time_ns, o->call_ns);
    }
    h->pending[i] = h->pending[--h->pending_n];
    *op = o;
    return 0;
  }
  return QRAFT_ERR(err, QRAFT_EMALFORMED,
                   "process %" PRIu64 " completes with no pending operation",
                   process);
}

int qraft__lincheck_complete(qraft__lincheck_history *h, uint64_t process,
                             uint64_t time_ns, uint64_t result,
                             qraft_err *err) {
  for (size_t i = 0; i < h->pending_n; i++) {
    const qraft__lincheck_op *o = &h->ops[h->pending[i]];
    if (o->process != process) {
      continue;
    }
    bool result_ok = o->f == QRAFT_LINCHECK_GET ||
                     (o->f == QRAFT_LINCHECK_CAS && result <= 1) || result == 0;
    if (!result_ok) {
      return QRAFT_ERR(err, QRAFT_EMALFORMED,
                       "bad result %" PRIu64 " for a %s", result,
                       lincheck_f_name(o->f));
    }
  }
  qraft__lincheck_op *op;
  int rc = history_take_pending(h, process, time_ns, &op, err);
  if (rc) {
    return rc;
  }
  op->status = QRAFT_LINCHECK_OK;
  op->ret_ns = time_ns;
  if (op->f == QRAFT_LINCHECK_GET) {
    op->out = result;
  } else if (op->f == QRAFT_LINCHECK_CAS) {
    op->cas_swapped = result == 1;
  }
  return 0;
}

int qraft__lincheck_info(qraft__lincheck_history *h, uint64_t process,
                         uint64_t time_ns, qraft_err *err) {
  qraft__lincheck_op *op;
  int rc = history_take_pending(h, process, time_ns, &op, err);
  if (rc) {
    return rc;
  }
  op->status = QRAFT_LINCHECK_INFO;
  op->ret_ns = time_ns;
  return 0;
}

int qraft__lincheck_fail(qraft__lincheck_history *h, uint64_t process,
                         uint64_t time_ns, qraft_err *err) {
  qraft__lincheck_op *op;
  int rc = history_take_pending(h, process, time_ns, &op, err);
  if (rc) {
    return rc;
  }
  op->status = QRAFT_LINCHECK_FAIL;
  op->ret_ns = time_ns;
  return 0;
}

int qraft__lincheck_effect_by(qraft__lincheck_history *h, size_t op,
                              uint64_t time_ns, qraft_err *err) {
  if (op >= h->ops_n) {
    return QRAFT_ERR(err, QRAFT_EMALFORMED, "no operation #%zu", op);
  }
  qraft__lincheck_op *o = &h->ops[op];
  if (o->status != QRAFT_LINCHECK_INFO || o->f == QRAFT_LINCHECK_GET) {
    return QRAFT_ERR(err, QRAFT_EMALFORMED,
                     "#%zu: a bound on when it took effect is for a write "
                     "of unknown outcome",
                     op);
  }
  if (time_ns < o->call_ns || time_ns == UINT64_MAX) {
    return QRAFT_ERR(err, QRAFT_EMALFORMED,
                     "#%zu: took effect by %" PRIu64
                     ", before its invocation at %" PRIu64,
                     op, time_ns, o->call_ns);
  }
  if (o->effect_by_ns == 0 || time_ns < o->effect_by_ns) {
    o->effect_by_ns = time_ns;
  }
  return 0;
}

int qraft__lincheck_pending_op(const qraft__lincheck_history *h,
                               uint64_t process, size_t *op) {
  for (size_t i = 0; i < h->pending_n; i++) {
    if (h->ops[h->pending[i]].process == process) {
      *op = h->pending[i];
      return 0;
    }
  }
  return QRAFT_EMALFORMED;
}

size_t qraft__lincheck_history_ops_n(const qraft__lincheck_history *h) {
  return h->ops_n;
}

const qraft__lincheck_op *
qraft__lincheck_history_op(const qraft__lincheck_history *h, size_t i) {
  QRAFT_ASSERT(i < h->ops_n);
  return &h->ops[i];
}

static void print_id(const qraft__lincheck_history *h,
                     qraft__lincheck_kind kind, uint64_t id, FILE *f) {
  const char *name = qraft__lincheck_name(h, kind, id);
  if (kind == QRAFT_LINCHECK_KIND_VALUE && id == QRAFT_LINCHECK_MISSING) {
    fputs("missing", f);
  } else if (name) {
    fputs(name, f);
  } else {
    fprintf(f, "%" PRIu64, id);
  }
}

void qraft__lincheck_op_print(const qraft__lincheck_history *h, size_t i,
                              FILE *f) {
  const qraft__lincheck_op *op = qraft__lincheck_history_op(h, i);
  fprintf(f, "#%zu process ", i);
  print_id(h, QRAFT_LINCHECK_KIND_PROCESS, op->process, f);
  fprintf(f, " %s ", lincheck_f_name(op->f));
  print_id(h, QRAFT_LINCHECK_KIND_KEY, op->key, f);
  if (op->f == QRAFT_LINCHECK_PUT) {
    fputc(' ', f);
    print_id(h, QRAFT_LINCHECK_KIND_VALUE, op->value, f);
  } else if (op->f == QRAFT_LINCHECK_CAS) {
    fputc(' ', f);
    print_id(h, QRAFT_LINCHECK_KIND_VALUE, op->value, f);
    fputs(" -> ", f);
    print_id(h, QRAFT_LINCHECK_KIND_VALUE, op->value_new, f);
  }
  switch (op->status) {
  case QRAFT_LINCHECK_PENDING:
    fprintf(f, ": pending [%" PRIu64 ", never]", op->call_ns);
    return;
  case QRAFT_LINCHECK_INFO:
    fprintf(f, ": unknown outcome [%" PRIu64 ", info at %" PRIu64 "]",
            op->call_ns, op->ret_ns);
    return;
  case QRAFT_LINCHECK_FAIL:
    fputs(": did not happen", f);
    break;
  case QRAFT_LINCHECK_OK:
    if (op->f == QRAFT_LINCHECK_GET) {
      fputs(": read ", f);
      print_id(h, QRAFT_LINCHECK_KIND_VALUE, op->out, f);
    } else if (op->f == QRAFT_LINCHECK_CAS) {
      fputs(op->cas_swapped ? ": ok" : ": failed", f);
    } else {
      fputs(": ok", f);
    }
    break;
  }
  fprintf(f, " [%" PRIu64 ", %" PRIu64 "]", op->call_ns, op->ret_ns);
}

/* ---------------------------------------------------------------- search */

/*
 * One key's part of the history, as Wing and Gong's doubly linked list of
 * call and return entries in time order. Linearizing an operation "lifts"
 * its two entries out of the list; backtracking puts them back.
 */
typedef struct search_entry {
  struct search_entry *prev;
  struct search_entry *next;
  struct search_entry *match; /* call: its return; return: its call */
  uint32_t local;             /* operation's index within the part */
  bool is_call;
  uint64_t time;              /* for sorting */
} search_entry;

typedef struct search_op {
  size_t op;      /* operation number in the history */
  bool definite;  /* false: info or pending, may be left out */
  uint64_t zobrist; /* random bits, XORed into the set's hash; 0 for info */
} search_op;

typedef struct search_frame {
  search_entry *call;
  uint64_t state_before;
  uint64_t max_call_before;
  bool info_pass; /* the pass in which `call` was tried */
} search_frame;

/* The memo: a set of (linearized set, model state), open addressing, the
 * bitsets in one arena. */
typedef struct search_cache {
  uint64_t *hashes;  /* 0 = empty slot (hashes are forced non-zero) */
  uint64_t *states;
  size_t *offsets;   /* into arena, in words */
  size_t cap;        /* power of two */
  size_t n;
  uint64_t *arena;
  size_t arena_n;
  size_t arena_cap;
  uint64_t bytes_max; /* limit on the table and the arena together */
} search_cache;

typedef struct search {
  const qraft__lincheck_history *h;
  search_op *ops;
  size_t ops_n;
  search_entry *entries; /* 2 * ops_n */
  search_entry head;     /* sentinel */
  uint64_t *bits;        /* linearized set */
  uint64_t *info_mask;   /* the operations of unknown outcome */
  size_t words_n;
  uint64_t bits_hash;
  /* The latest invocation among the linearized operations: an info write
   * bounded by effect_by_ns can follow them only if they were all invoked
   * by then. A function of the linearized set, so the memo stays exact. */
  uint64_t max_call;
  search_frame *stack;
  size_t stack_n;
  search_cache cache;
  size_t *best; /* deepest prefix seen, operation numbers */
  size_t best_n;
  size_t best_blocked;
  uint64_t best_value;
  bool best_set;
} search;

static int entry_cmp(const void *a, const void *b) {
  const search_entry *x = a;
  const search_entry *y = b;
  if (x->time != y->time) {
    return x->time < y->time ? -1 : 1;
  }
  /* At equal times calls come first, so that the two operations overlap:
   * the more permissive reading of a tie. */
  if (x->is_call != y->is_call) {
    return x->is_call ? -1 : 1;
  }
  return x->local < y->local ? -1 : x->local > y->local;
}

/* The model: applies operation `o` to `state`. Returns false if the
 * operation's recorded result cannot follow from `state`. An operation with
 * unknown outcome is applied as "it took effect"; leaving it out is the
 * other choice, which the search makes by never linearizing it. */
static bool model_step(const qraft__lincheck_op *o, uint64_t state,
                       uint64_t *next) {
  bool definite = o->status == QRAFT_LINCHECK_OK;
  switch (o->f) {
  case QRAFT_LINCHECK_PUT:
    *next = o->value;
    return true;
  case QRAFT_LINCHECK_DEL:
    *next = QRAFT_LINCHECK_MISSING;
    return true;
  case QRAFT_LINCHECK_GET:
    QRAFT_ASSERT(definite); /* info gets are dropped before the search */
    *next = state;
    return state == o->out;
  case QRAFT_LINCHECK_CAS:
    if (definite && !o->cas_swapped) {
      *next = state;
      return state != o->value;
    }
    *next = o->value_new;
    return state == o->value;
  }
  QRAFT_UNREACHABLE();
}

static void cache_close(search_cache *c) {
  free(c->hashes);
  free(c->states);
  free(c->offsets);
  free(c->arena);
  memset(c, 0, sizeof(*c));
}

/* Bytes the memo would use with a table of `cap` slots and an arena of
 * `arena_cap` words. */
static uint64_t cache_bytes(size_t cap, size_t arena_cap) {
  return (uint64_t)cap * (2 * sizeof(uint64_t) + sizeof(size_t)) +
         (uint64_t)arena_cap * sizeof(uint64_t);
}

static int cache_resize(search_cache *c, size_t cap) {
  if (cache_bytes(cap, c->arena_cap) > c->bytes_max) {
    return QRAFT_ELIMIT;
  }
  uint64_t *hashes = calloc(cap, sizeof(*hashes));
  uint64_t *states = malloc(cap * sizeof(*states));
  size_t *offsets = malloc(cap * sizeof(*offsets));
  if (!hashes || !states || !offsets) {
    free(hashes);
    free(states);
    free(offsets);
    return -ENOMEM;
  }
  for (size_t i = 0; i < c->cap; i++) {
    if (!c->hashes[i]) {
      continue;
    }
    size_t s = c->hashes[i] & (cap - 1);
    while (hashes[s]) {
      s = (s + 1) & (cap - 1);
    }
    hashes[s] = c->hashes[i];
    states[s] = c->states[i];
    offsets[s] = c->offsets[i];
  }
  free(c->hashes);
  free(c->states);
  free(c->offsets);
  c->hashes = hashes;
  c->states = states;
  c->offsets = offsets;
  c->cap = cap;
  return 0;
}

/*
 * True if a configuration seen before, with linearized set `seen` and the
 * same state, covers the current one: both linearized the same definite
 * operations, and `seen` placed no operation of unknown outcome that the
 * current one did not. Whatever the current configuration can still do,
 * the seen one can too (an unplaced info operation may stay unplaced or be
 * placed later, and the candidates are decided by the definite returns
 * alone), so exploring the current one cannot find a linearization that
 * the seen one's exploration misses. Without info operations this is the
 * plain equality of Lowe's and Porcupine's memo.
 */
static bool bits_covered(const search *s, const uint64_t *seen) {
  for (size_t w = 0; w < s->words_n; w++) {
    uint64_t cur = s->bits[w];
    if ((seen[w] & ~cur) != 0 || (cur & ~seen[w] & ~s->info_mask[w]) != 0) {
      return false;
    }
  }
  return true;
}

/* Adds (bits, state) to the memo. Sets *added to false if it, or a
 * configuration that covers it (bits_covered), is there. The hash covers
 * the definite operations only, so that covering entries share it. */
static int cache_add(search *s, uint64_t state, bool *added) {
  search_cache *c = &s->cache;
  uint64_t hash = s->bits_hash ^ (state * 0x9e3779b97f4a7c15ULL);
  hash ^= hash >> 29;
  hash |= 1; /* 0 marks an empty slot */
  if ((c->n + 1) * 2 > c->cap) {
    int rc = cache_resize(c, c->cap ? c->cap * 2 : 1024);
    if (rc) {
      return rc;
    }
  }
  size_t slot = hash & (c->cap - 1);
  while (c->hashes[slot]) {
    if (c->hashes[slot] == hash && c->states[slot] == state &&
        bits_covered(s, c->arena + c->offsets[slot])) {
      *added = false;
      return 0;
    }
    slot = (slot + 1) & (c->cap - 1);
  }
  if (c->arena_n + s->words_n > c->arena_cap &&
      cache_bytes(c->cap, 2 * (c->arena_n + s->words_n)) > c->bytes_max) {
    return QRAFT_ELIMIT;
  }
  int rc = lincheck_grow((void **)&c->arena, &c->arena_cap,
                         c->arena_n + s->words_n, sizeof(uint64_t));
  if (rc) {
    return rc;
  }
  memcpy(c->arena + c->arena_n, s->bits, s->words_n * sizeof(uint64_t));
  c->hashes[slot] = hash;
  c->states[slot] = state;
  c->offsets[slot] = c->arena_n;
  c->arena_n += s->words_n;
  c->n++;
  *added = true;
  return 0;
}

static void search_close(search *s) {
  free(s->ops);
  free(s->entries);
  free(s->bits);
  free(s->info_mask);
  free(s->stack);
  free(s->best);
  cache_close(&s->cache);
}

static void bits_flip(search *s, uint32_t local) {
  s->bits[local / 64] ^= 1ULL << (local % 64);
  s->bits_hash ^= s->ops[local].zobrist;
}

/* Takes a call entry and its return out of the list. */
static void entry_lift(search_entry *call) {
  search_entry *ret = call->match;
  call->prev->next = call->next;
  if (call->next) {
    call->next->prev = call->prev;
  }
  ret->prev->next = ret->next;
  if (ret->next) {
    ret->next->prev = ret->prev;
  }
}

/* Puts them back, in the reverse order of entry_lift. */
static void entry_unlift(search_entry *call) {
  search_entry *ret = call->match;
  ret->prev->next = ret;
  if (ret->next) {
    ret->next->prev = ret;
  }
  call->prev->next = call;
  if (call->next) {
    call->next->prev = call;
  }
}

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* The greedy order's quota on a key with info operations: a correct
 * history takes well under ten steps per operation. */
#define GREEDY_STEPS_BASE 10000
#define GREEDY_STEPS_PER_OP 64

typedef struct check_budget {
  uint64_t steps;
  uint64_t steps_max;
  uint64_t deadline_ms; /* 0: none */
  uint64_t memo_bytes_max;
  qraft__lincheck_order order;
  qraft__lincheck_limit exhausted;
} check_budget;

static bool budget_spend(check_budget *b) {
  if (b->steps >= b->steps_max) {
    b->exhausted = QRAFT_LINCHECK_LIMIT_STEPS;
    return false;
  }
  b->steps++;
  if (b->deadline_ms && (b->steps & 4095) == 0 && now_ms() >= b->deadline_ms) {
    b->exhausted = QRAFT_LINCHECK_LIMIT_TIME;
    return false;
  }
  return true;
}

/* Remembers the current prefix if it is the deepest so far. */
static int search_note_deepest(search *s, const search_entry *ret,
                               uint64_t state) {
  if (s->best_set && s->stack_n <= s->best_n) {
    return 0;
  }
  if (!s->best) {
    s->best = malloc((s->ops_n ? s->ops_n : 1) * sizeof(*s->best));
    if (!s->best) {
      return -ENOMEM;
    }
  }
  for (size_t i = 0; i < s->stack_n; i++) {
    s->best[i] = s->ops[s->stack[i].call->local].op;
  }
  s->best_n = s->stack_n;
  s->best_blocked = s->ops[ret->local].op;
  s->best_value = state;
  s->best_set = true;
  return 0;
}

/*
 * The search over one key. `idx` holds the operation numbers of the part.
 * Sets *verdict; on a violation the deepest prefix is in s->best.
 */
static int search_run(search *s, const size_t *idx, size_t idx_n,
                      bool definite_first, check_budget *budget,
                      qraft__lincheck_verdict *verdict) {
  const qraft__lincheck_history *h = s->h;
  s->ops_n = idx_n;
  s->ops = calloc(idx_n ? idx_n : 1, sizeof(*s->ops));
  s->entries = calloc(idx_n ? 2 * idx_n : 1, sizeof(*s->entries));
  s->words_n = idx_n / 64 + 1;
  s->cache.bytes_max = budget->memo_bytes_max;
  s->bits = calloc(s->words_n, sizeof(*s->bits));
  s->info_mask = calloc(s->words_n, sizeof(*s->info_mask));
  s->stack = calloc(idx_n ? idx_n : 1, sizeof(*s->stack));
  if (!s->ops || !s->entries || !s->bits || !s->info_mask || !s->stack) {
    return -ENOMEM;
  }
  uint64_t zobrist_seed = 0x5eed1234abcdULL;
  size_t definite_left = 0;
  for (size_t i = 0; i < idx_n; i++) {
    const qraft__lincheck_op *o = &h->ops[idx[i]];
    s->ops[i].op = idx[i];
    s->ops[i].definite = o->status == QRAFT_LINCHECK_OK;
    s->ops[i].zobrist = qraft_splitmix64(&zobrist_seed);
    if (definite_first && !s->ops[i].definite) {
      s->ops[i].zobrist = 0; /* see cache_add */
      s->info_mask[i / 64] |= 1ULL << (i % 64);
    }
    definite_left += s->ops[i].definite;
    search_entry *call = &s->entries[2 * i];
    search_entry *ret = &s->entries[2 * i + 1];
    call->local = ret->local = (uint32_t)i;
    call->is_call = true;
    call->time = o->call_ns;
    /* An operation of unknown outcome may take effect at any time after
     * its invocation: its return is at infinity, or at the bound its client
     * knows (qraft__lincheck_effect_by). That return entry does not force
     * anything, the operation may never have happened; the bound itself is
     * kept by the candidate test below (max_call). */
    ret->time = s->ops[i].definite ? o->ret_ns
                : o->effect_by_ns ? o->effect_by_ns
                                  : UINT64_MAX;
  }
  qsort(s->entries, 2 * idx_n, sizeof(*s->entries), entry_cmp);
  /* Link the sorted entries and pair calls with returns. */
  search_entry **call_of = calloc(idx_n ? idx_n : 1, sizeof(*call_of));
  if (!call_of) {
    return -ENOMEM;
  }
  search_entry *prev = &s->head;
  s->head.prev = NULL;
  for (size_t i = 0; i < 2 * idx_n; i++) {
    search_entry *e = &s->entries[i];
    e->prev = prev;
    prev->next = e;
    e->next = NULL;
    prev = e;
    if (e->is_call) {
      call_of[e->local] = e;
    } else {
      QRAFT_ASSERT(call_of[e->local]); /* a return follows its call */
      e->match = call_of[e->local];
      call_of[e->local]->match = e;
    }
  }
  if (idx_n == 0) {
    s->head.next = NULL;
  }
  free(call_of);

  uint64_t state = QRAFT_LINCHECK_MISSING;
  search_entry *entry = s->head.next;
  /* Greedy: candidates are tried in list order, as Wing and Gong do.
   * Definite first: in two passes, the definite operations first, then
   * those of unknown outcome. Configurations that placed fewer info
   * operations are then reached first and cover the others (bits_covered,
   * which is plain equality in the greedy order, where info_mask is
   * empty); that keeps the info operations, each of which overlaps
   * everything after its invocation, from multiplying the
   * configurations. */
  bool info_pass = false;
  for (;;) {
    if (definite_left == 0) {
      /* Every definite operation is placed; operations of unknown outcome
       * still in the list are taken not to have happened. */
      *verdict = QRAFT_LINCHECK_LINEARIZABLE;
      return 0;
    }
    QRAFT_ASSERT(entry != NULL); /* a definite return is still listed */
    if (!budget_spend(budget)) {
      *verdict = QRAFT_LINCHECK_UNKNOWN;
      return 0;
    }
    if (entry->is_call) {
      const search_op *so = &s->ops[entry->local];
      const qraft__lincheck_op *o = &h->ops[so->op];
      uint64_t next;
      /* A bounded info write can come after the linearized operations only
       * if each was invoked by its bound: if it took effect, it did so by
       * then, before an operation invoked later could take effect. */
      bool in_time = so->definite || o->effect_by_ns == 0 ||
                     s->max_call <= o->effect_by_ns;
      if ((!definite_first || so->definite != info_pass) && in_time &&
          model_step(o, state, &next)) {
        bits_flip(s, entry->local);
        bool added;
        int rc = cache_add(s, next, &added);
        if (rc == QRAFT_ELIMIT) {
          budget->exhausted = QRAFT_LINCHECK_LIMIT_MEMO;
          *verdict = QRAFT_LINCHECK_UNKNOWN;
          return 0;
        }
        if (rc) {
          return rc;
        }
        if (added) {
          s->stack[s->stack_n++] =
              (search_frame){.call = entry,
                             .state_before = state,
                             .max_call_before = s->max_call,
                             .info_pass = info_pass};
          if (o->call_ns > s->max_call) {
            s->max_call = o->call_ns;
          }
          state = next;
          entry_lift(entry);
          definite_left -= so->definite;
          entry = s->head.next;
          info_pass = false;
          continue;
        }
        bits_flip(s, entry->local);
      }
      entry = entry->next;
      continue;
    }
    if (!s->ops[entry->local].definite) {
      /* the bound of an info write: it may never have happened */
      entry = entry->next;
      continue;
    }
    /* A return: its operation had to be linearized by now, and was not. */
    if (definite_first && !info_pass) {
      /* Every definite candidate is tried; now the info ones. */
      info_pass = true;
      entry = s->head.next;
      continue;
    }
    int rc = search_note_deepest(s, entry, state);
    if (rc) {
      return rc;
    }
    if (s->stack_n == 0) {
      *verdict = QRAFT_LINCHECK_VIOLATION;
      return 0;
    }
    search_frame top = s->stack[--s->stack_n];
    state = top.state_before;
    s->max_call = top.max_call_before;
    bits_flip(s, top.call->local);
    entry_unlift(top.call);
    definite_left += s->ops[top.call->local].definite;
    entry = top.call->next;
    info_pass = top.info_pass;
  }
}

static int op_part_cmp(const void *a, const void *b, void *ctx) {
  const qraft__lincheck_history *h = ctx;
  size_t x = *(const size_t *)a;
  size_t y = *(const size_t *)b;
  uint64_t kx = h->ops[x].key;
  uint64_t ky = h->ops[y].key;
  if (kx != ky) {
    return kx < ky ? -1 : 1;
  }
  return x < y ? -1 : x > y;
}

/*
 * Checks one key with two strategies in turn. The greedy order finds the
 * linearization of a correct history in a few steps per operation, but a
 * history with a violation and many info operations can take it millions
 * of steps to refute; the definite-first order refutes those quickly but
 * backtracks more on correct histories that need info operations. So the
 * greedy order gets a small quota first, and the definite-first order
 * whatever of the budget is left. Either search, run to its end, gives
 * the exact answer.
 */
static int check_key(search *s, const size_t *idx, size_t idx_n,
                     check_budget *budget, qraft__lincheck_verdict *verdict) {
  if (budget->order == QRAFT_LINCHECK_ORDER_GREEDY) {
    return search_run(s, idx, idx_n, false, budget, verdict);
  }
  if (budget->order == QRAFT_LINCHECK_ORDER_DEFINITE_FIRST) {
    return search_run(s, idx, idx_n, true, budget, verdict);
  }
  bool any_info = false;
  for (size_t i = 0; i < idx_n; i++) {
    any_info |= s->h->ops[idx[i]].status != QRAFT_LINCHECK_OK;
  }
  check_budget quota = *budget;
  uint64_t quota_steps = GREEDY_STEPS_BASE + GREEDY_STEPS_PER_OP * idx_n;
  if (any_info && budget->steps_max - budget->steps > quota_steps) {
    quota.steps_max = budget->steps + quota_steps;
  }
  int rc = search_run(s, idx, idx_n, false, &quota, verdict);
  budget->steps = quota.steps;
  budget->exhausted = quota.exhausted;
  if (rc || *verdict != QRAFT_LINCHECK_UNKNOWN ||
      quota.exhausted != QRAFT_LINCHECK_LIMIT_STEPS ||
      budget->steps >= budget->steps_max) {
    return rc;
  }
  budget->exhausted = QRAFT_LINCHECK_LIMIT_NONE;
  const qraft__lincheck_history *h = s->h;
  search_close(s);
  *s = (search){.h = h};
  return search_run(s, idx, idx_n, true, budget, verdict);
}

void qraft__lincheck_result_close(qraft__lincheck_result *result) {
  free(result->prefix);
  result->prefix = NULL;
  result->prefix_n = 0;
}

int qraft__lincheck_check(const qraft__lincheck_history *h,
                          const qraft__lincheck_opts *opts,
                          qraft__lincheck_result *result, qraft_err *err) {
  memset(result, 0, sizeof(*result));
  check_budget budget = {
      .steps_max = opts && opts->steps_max ? opts->steps_max
                                           : QRAFT_LINCHECK_STEPS_DEFAULT,
  };
  budget.memo_bytes_max = opts && opts->memo_bytes_max
                              ? opts->memo_bytes_max
                              : QRAFT_LINCHECK_MEMO_BYTES_DEFAULT;
  if (opts) {
    QRAFT_ASSERT(opts->order <= QRAFT_LINCHECK_ORDER_DEFINITE_FIRST);
    budget.order = opts->order;
  }
  if (opts && opts->time_max_ms) {
    budget.deadline_ms = now_ms() + opts->time_max_ms;
  }
  /* The operations that take part, grouped by key. */
  size_t *idx = malloc((h->ops_n ? h->ops_n : 1) * sizeof(*idx));
  if (!idx) {
    return QRAFT_ERR(err, -ENOMEM, "lincheck: %zu operations", h->ops_n);
  }
  size_t idx_n = 0;
  for (size_t i = 0; i < h->ops_n; i++) {
    const qraft__lincheck_op *o = &h->ops[i];
    if (o->status == QRAFT_LINCHECK_FAIL) {
      continue; /* did not happen */
    }
    if (o->f == QRAFT_LINCHECK_GET && o->status != QRAFT_LINCHECK_OK) {
      continue; /* an unanswered read changes nothing and shows nothing */
    }
    idx[idx_n++] = i;
  }
  qsort_r(idx, idx_n, sizeof(*idx), op_part_cmp, (void *)h);
  result->ops_checked = idx_n;
  result->verdict = QRAFT_LINCHECK_LINEARIZABLE;
  int rc = 0;
  /* A key whose own memo ran out is unknown, but the keys after it are
   * still checked: one of them may show a violation, which outranks
   * unknown. The step and time budgets are shared: once spent, the keys
   * left are only counted. */
  bool spent = false;
  for (size_t lo = 0; lo < idx_n;) {
    size_t hi = lo;
    uint64_t key = h->ops[idx[lo]].key;
    while (hi < idx_n && h->ops[idx[hi]].key == key) {
      hi++;
    }
    result->keys_n++;
    if (result->verdict == QRAFT_LINCHECK_VIOLATION || spent) {
      lo = hi; /* only counting keys */
      continue;
    }
    search s = {.h = h};
    qraft__lincheck_verdict v;
    rc = check_key(&s, idx + lo, hi - lo, &budget, &v);
    if (rc) {
      search_close(&s);
      QRAFT_ERR(err, rc, "lincheck: key %" PRIu64 ": %zu operations", key,
                hi - lo);
      break;
    }
    if (s.cache.n > result->cache_entries_max) {
      result->cache_entries_max = s.cache.n;
    }
    if (v == QRAFT_LINCHECK_LINEARIZABLE) {
      result->keys_checked++;
    } else if (v == QRAFT_LINCHECK_UNKNOWN) {
      if (result->verdict == QRAFT_LINCHECK_LINEARIZABLE) {
        result->verdict = v; /* the first key left unknown is named */
        result->key = key;
        result->limit = budget.exhausted;
      }
      spent = budget.exhausted != QRAFT_LINCHECK_LIMIT_MEMO;
      budget.exhausted = QRAFT_LINCHECK_LIMIT_NONE;
    } else {
      result->verdict = v;
      result->key = key;
      result->limit = QRAFT_LINCHECK_LIMIT_NONE;
      result->keys_checked++;
      result->prefix = s.best;
      result->prefix_n = s.best_n;
      result->prefix_value = s.best_value;
      result->blocked = s.best_blocked;
      s.best = NULL;
    }
    search_close(&s);
    lo = hi;
  }
  result->steps = budget.steps;
  free(idx);
  if (rc) {
    qraft__lincheck_result_close(result);
  }
  return rc;
}

void qraft__lincheck_result_print(const qraft__lincheck_history *h,
                                  const qraft__lincheck_result *result,
                                  FILE *f) {
  switch (result->verdict) {
  case QRAFT_LINCHECK_LINEARIZABLE:
    fprintf(f,
            "linearizable: %" PRIu64 " operations on %" PRIu64
            " keys, %" PRIu64 " steps\n",
            result->ops_checked, result->keys_n, result->steps);
    return;
  case QRAFT_LINCHECK_UNKNOWN:
    fprintf(f, "unknown: the %s budget ran out after %" PRIu64 " steps on key ",
            result->limit == QRAFT_LINCHECK_LIMIT_MEMO   ? "memo size"
            : result->limit == QRAFT_LINCHECK_LIMIT_TIME ? "time"
                                                         : "step",
            result->steps);
    print_id(h, QRAFT_LINCHECK_KIND_KEY, result->key, f);
    fprintf(f, " (%" PRIu64 " of %" PRIu64 " keys checked)\n",
            result->keys_checked, result->keys_n);
    return;
  case QRAFT_LINCHECK_VIOLATION:
    break;
  }
  fputs("not linearizable: key ", f);
  print_id(h, QRAFT_LINCHECK_KIND_KEY, result->key, f);
  fprintf(f, " (%" PRIu64 " steps)\n", result->steps);
  fprintf(f, "  longest linearizable prefix (%zu operations):\n",
          result->prefix_n);
  for (size_t i = 0; i < result->prefix_n; i++) {
    fputs("    ", f);
    qraft__lincheck_op_print(h, result->prefix[i], f);
    fputc('\n', f);
  }
  fputs("  value after it: ", f);
  print_id(h, QRAFT_LINCHECK_KIND_VALUE, result->prefix_value, f);
  fputs("\n  cannot be placed next (completed before any order of the "
        "remaining operations explains it):\n    ",
        f);
  qraft__lincheck_op_print(h, result->blocked, f);
  fputc('\n', f);
}
