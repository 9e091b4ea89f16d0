/*
 * apply.c: applying committed entries to the state machine, completing
 * proposals and reads, and timing the stages of a write.
 */
#include "node_internal.h"

/* --- applying ------------------------------------------------------------- */

/* Records the stages of our proposal `r`, whose entry `index` was applied
 * at `applied_ns` (docs/node.md, "Where the time of a write goes"). A
 * stage whose times are unknown here (the entry came in a snapshot, or its
 * slot was reused) is left out. */
static void node_stages(qraft_node *n, const node_req *r, uint64_t index,
                        uint64_t applied_ns) {
  uint64_t us[STAGES];
  bool known[STAGES] = {false};
  const stage_slot *sl = &n->stage_ring[index % NODE_STAGE_RING];
  bool have = sl->index == index && sl->submit_ns != 0 && sl->durable_ns != 0;
  uint64_t committed = n->commit_seen_ns;
#define STAGE(k, from, to)                                                     \
  do {                                                                         \
    us[k] = (to) > (from) ? ((to) - (from)) / 1000 : 0;                        \
    known[k] = true;                                                           \
  } while (0)
  if (r->tq_ns != 0 && r->t0_ns >= r->tq_ns) {
    STAGE(STAGE_QUEUED, r->tq_ns, r->t0_ns);
  }
  if (have && sl->submit_ns >= r->t0_ns) {
    STAGE(STAGE_TO_WAL, r->t0_ns, sl->submit_ns);
    STAGE(STAGE_WAL_SYNC, sl->submit_ns, sl->durable_ns);
    STAGE(STAGE_QUORUM, sl->durable_ns, committed);
  }
  STAGE(STAGE_APPLY, committed, applied_ns);
#undef STAGE
  pthread_mutex_lock(&n->mu);
  for (int k = 0; k < STAGES; k++) {
    if (known[k]) {
      qraft_histogram_record(&n->h_stage_us[k], us[k]);
    }
  }
  pthread_mutex_unlock(&n->mu);
}

size_t qraft__node_apply(qraft_node *n, const qraft_entry *es, size_t n_es) {
  /* Normal entries go to the state machine in runs; configuration entries
   * are applied by the node (their addresses) and complete changes. */
  size_t i = 0;
  size_t done = n_es; /* where the state machine said "later" */
  while (i < n_es && done == n_es) {
    if (es[i].type != QRAFT_ENTRY_NORMAL) {
      const qraft_entry *e = &es[i];
      qraft__node_learn_conf_entry(n, e);
      qraft__node_log_conf_entry(n, e);
      n->applied = e->index;
      for (node_req *r = n->inflight; r != NULL; r = r->next) {
        if (r->kind >= REQ_ADD_LEARNER && r->kind <= REQ_REMOVE &&
            r->index_known && r->index == e->index) {
          r->applied = true; /* completed once the status shows it */
        }
      }
      i++;
      continue;
    }
    size_t j = i;
    while (j < n_es && es[j].type == QRAFT_ENTRY_NORMAL) {
      j++;
    }
    size_t run = j - i;
    qraft_slice results_local[64];
    qraft_slice *results = run <= 64 ? results_local
                                     : calloc(run, sizeof *results);
    QRAFT_ASSERT(results != NULL);
    memset(results, 0, run * sizeof *results);
    /* empty entries (a new leader's) count as applied but are not passed */
    size_t k = i;
    while (k < j) {
      size_t s = k;
      while (k < j && es[k].data.len > 0) {
        k++;
      }
      if (k > s) {
        int rv = n->cfg.sm->apply(n->cfg.sm_ud, &es[s], k - s,
                                  es[k - 1].index, &results[s - i]);
#ifdef QRAFT_CANARY_NODE_SKIP_UNAPPLIED
        /* Planted bug (make canaries): entries the state machine refused
         * count as applied. */
        rv = 0;
#endif
        if (rv != 0) {
          /* none of es[s, k) applied: they and the rest wait */
          qraft__node_apply_refused(n, rv, es[s].index);
          done = s;
          j = s;
          break;
        }
        n->sm_index = es[k - 1].index;
      }
      while (k < j && es[k].data.len == 0) {
        k++;
      }
    }
    n->m_applied_entries += j - i;
    uint64_t applied_ns = qraft_env_now_ns(n->env);
    for (size_t x = i; x < j; x++) {
      const qraft_entry *e = &es[x];
      n->applied = e->index;
      /* our own proposals carry (our id, sequence) in their context */
      if (e->context.len == 16) {
        uint64_t origin = 0, seq = 0;
        for (int b = 0; b < 8; b++) {
          origin = (origin << 8) | e->context.data[b];
          seq = (seq << 8) | e->context.data[8 + b];
        }
        if (origin == n->id) {
          for (node_req *r = n->inflight; r != NULL; r = r->next) {
            if (r->kind == REQ_PROPOSE && r->seq == seq) {
              qraft__node_inflight_remove(n, r);
              node_stages(n, r, e->index, applied_ns);
              qraft__node_req_complete(n, r, 0, results[x - i]);
              uint64_t cb_us = (qraft_env_now_ns(n->env) - applied_ns) / 1000;
              pthread_mutex_lock(&n->mu);
              qraft_histogram_record(&n->h_stage_us[STAGE_CALLBACK], cb_us);
              pthread_mutex_unlock(&n->mu);
              applied_ns = qraft_env_now_ns(n->env); /* the next one's */
              break;
            }
          }
        }
      }
      qraft_slice_release(&results[x - i]);
    }
    for (size_t x = j - i; x < run; x++) {
      qraft_slice_release(&results[x]); /* of a refused call, if any */
    }
    if (results != results_local) {
      free(results);
    }
    i = j;
  }
  /* The batch ended with entries that carry nothing for the state machine
   * (configuration changes, a new leader's empty entry): tell it their
   * index, so that a durable state machine records where its state stands
   * and its durable index can reach every snapshot's. */
  if (done == n_es && n_es > 0 && n->sm_index < es[n_es - 1].index) {
    /* (a failure is not repeated: the next call carries a later index) */
    if (n->cfg.sm->apply(n->cfg.sm_ud, NULL, 0, es[n_es - 1].index, NULL) ==
        0) {
      n->sm_index = es[n_es - 1].index;
    }
  }
  return done;
}

void qraft__node_serve_reads(qraft_node *n) {
  for (node_req *r = n->inflight; r != NULL;) {
    node_req *next = r->next;
    if (r->kind == REQ_READ && r->index_known && n->applied >= r->index) {
      qraft__node_inflight_remove(n, r);
      qraft__node_req_complete(n, r, 0, (qraft_slice){0});
    }
    r = next;
  }
}
