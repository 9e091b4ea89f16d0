/*
 * tracker.c: configurations, quorums, progress and configuration changes.
 * Pure: no I/O, no allocation after qraft__tracker_init.
 */
#include "tracker.h"

#include <qraft/assert.h>

#include <stdlib.h>
#include <string.h>

/* --- id lists ------------------------------------------------------------ */

static bool ids_has(const qraft_id *ids, uint32_t n, qraft_id id) {
  for (uint32_t i = 0; i < n; i++) {
    if (ids[i] == id) {
      return true;
    }
  }
  return false;
}

static int ids_add(qraft_id *ids, uint32_t *n, qraft_id id) {
  if (ids_has(ids, *n, id)) {
    return 0;
  }
  if (*n == QRAFT_CONF_NODES_MAX) {
    return QRAFT_ELIMIT;
  }
  /* keep sorted: configurations compare and print the same everywhere */
  uint32_t i = *n;
  while (i > 0 && ids[i - 1] > id) {
    ids[i] = ids[i - 1];
    i--;
  }
  ids[i] = id;
  (*n)++;
  return 0;
}

static void ids_del(qraft_id *ids, uint32_t *n, qraft_id id) {
  for (uint32_t i = 0; i < *n; i++) {
    if (ids[i] == id) {
      memmove(&ids[i], &ids[i + 1], (*n - i - 1) * sizeof ids[0]);
      (*n)--;
      return;
    }
  }
}

/* --- inflights ------------------------------------------------------------ */

static void inflights_reset(inflights *in) {
  in->start = 0;
  in->count = 0;
}

static void inflights_add(inflights *in, uint64_t index) {
  QRAFT_ASSERTF(in->count < in->cap, "inflights full (%u)", in->cap);
  uint32_t slot = (in->start + in->count) % in->cap;
  in->index[slot] = index;
  in->count++;
}

void qraft__inflights_free_le(inflights *in, uint64_t index) {
  while (in->count > 0 && in->index[in->start] <= index) {
    in->start = (in->start + 1) % in->cap;
    in->count--;
  }
  if (in->count == 0) {
    in->start = 0;
  }
}

bool qraft__inflights_full(const inflights *in) { return in->count == in->cap; }

void qraft__inflights_free_first(inflights *in) {
  if (in->count > 0) {
    qraft__inflights_free_le(in, in->index[in->start]);
  }
}

/* --- progress -------------------------------------------------------------- */

static void progress_reset_state(progress *pr, progress_state state) {
  pr->probe_sent = false;
  pr->pending_snapshot = 0;
  pr->state = state;
  inflights_reset(&pr->infl);
}

void qraft__progress_become_probe(progress *pr) {
  if (pr->state == PROGRESS_SNAPSHOT) {
    /* The snapshot may have arrived: probe from just past it. */
    uint64_t pending = pr->pending_snapshot;
    progress_reset_state(pr, PROGRESS_PROBE);
    pr->next = (pr->match + 1 > pending + 1) ? pr->match + 1 : pending + 1;
  } else {
    progress_reset_state(pr, PROGRESS_PROBE);
    pr->next = pr->match + 1;
  }
}

void qraft__progress_become_replicate(progress *pr) {
  progress_reset_state(pr, PROGRESS_REPLICATE);
  pr->next = pr->match + 1;
}

void qraft__progress_become_snapshot(progress *pr, uint64_t snapshot_index) {
  progress_reset_state(pr, PROGRESS_SNAPSHOT);
  pr->pending_snapshot = snapshot_index;
}

bool qraft__progress_maybe_update(progress *pr, uint64_t n) {
  bool updated = false;
  if (pr->match < n) {
    pr->match = n;
    updated = true;
    pr->probe_sent = false;
  }
  if (pr->next < n + 1) {
    pr->next = n + 1;
  }
  return updated;
}

bool qraft__progress_maybe_decr_to(progress *pr, uint64_t rejected,
                                   uint64_t match_hint) {
  if (pr->state == PROGRESS_REPLICATE) {
    /* Stale rejection, or one for an index already matched. */
    if (rejected <= pr->match) {
      return false;
    }
    pr->next = pr->match + 1;
    return true;
  }
  /* Probe: only the rejection of the probe we sent counts. */
  if (pr->next == 0 || pr->next - 1 != rejected) {
    return false;
  }
  uint64_t n = rejected < match_hint + 1 ? rejected : match_hint + 1;
  pr->next = n < 1 ? 1 : n;
  pr->probe_sent = false;
  return true;
}

bool qraft__progress_is_paused(const progress *pr) {
  switch (pr->state) {
  case PROGRESS_PROBE:
    return pr->probe_sent;
  case PROGRESS_REPLICATE:
    return qraft__inflights_full(&pr->infl);
  case PROGRESS_SNAPSHOT:
    return true;
  }
  QRAFT_UNREACHABLE();
}

void qraft__progress_sent_entries(progress *pr, uint64_t last_sent,
                                  size_t entries_n) {
  switch (pr->state) {
  case PROGRESS_REPLICATE:
    if (entries_n > 0) {
      pr->next = last_sent + 1;
      inflights_add(&pr->infl, last_sent);
    }
    break;
  case PROGRESS_PROBE:
    if (entries_n > 0) {
      pr->probe_sent = true;
    }
    break;
  case PROGRESS_SNAPSHOT:
    QRAFT_ASSERTF(false, "append sent to peer %llu in snapshot state",
                  (unsigned long long)pr->id);
  }
}

/* --- tracker --------------------------------------------------------------- */

int qraft__tracker_init(tracker *t, uint32_t inflight_max) {
  memset(t, 0, sizeof *t);
  t->inflight_max = inflight_max;
  t->infl_mem = calloc((size_t)QRAFT__PROGRESS_MAX * inflight_max,
                       sizeof(uint64_t));
  if (t->infl_mem == NULL) {
    return -12; /* -ENOMEM */
  }
  return 0;
}

void qraft__tracker_close(tracker *t) {
  free(t->infl_mem);
  t->infl_mem = NULL;
}

progress *qraft__tracker_get(tracker *t, qraft_id id) {
  for (uint32_t i = 0; i < t->progress_n; i++) {
    if (t->prs[i].id == id) {
      return &t->prs[i];
    }
  }
  return NULL;
}

bool qraft__tracker_is_voter(const tracker *t, qraft_id id) {
  return ids_has(t->conf.voters, t->conf.voters_n, id) ||
         ids_has(t->conf.voters_outgoing, t->conf.voters_outgoing_n, id);
}

bool qraft__tracker_is_joint(const tracker *t) {
  return t->conf.voters_outgoing_n > 0;
}

bool qraft__tracker_is_singleton(const tracker *t) {
  return t->conf.voters_n == 1 && t->conf.voters_outgoing_n == 0;
}

static progress *tracker_add_progress(tracker *t, qraft_id id,
                                      uint64_t next_index, bool learner) {
  QRAFT_ASSERT(t->progress_n < QRAFT__PROGRESS_MAX);
  uint32_t slot = t->progress_n++;
  progress *pr = &t->prs[slot];
  memset(pr, 0, sizeof *pr);
  pr->id = id;
  pr->next = next_index < 1 ? 1 : next_index;
  pr->state = PROGRESS_PROBE;
  pr->is_learner = learner;
  /* A new peer counts as active so check-quorum does not step down the
   * leader before it had a chance to hear from it. */
  pr->recent_active = true;
  pr->vote = -1;
  pr->infl.cap = t->inflight_max;
  return pr;
}

/* Inflight rings live in infl_mem by slot; slots move when a record is
 * deleted, so rebind after every change of the array. */
static void tracker_bind_inflights(tracker *t) {
  for (uint32_t i = 0; i < t->progress_n; i++) {
    t->prs[i].infl.index = t->infl_mem + (size_t)i * t->inflight_max;
    t->prs[i].infl.cap = t->inflight_max;
  }
}

static void tracker_del_progress(tracker *t, qraft_id id) {
  for (uint32_t i = 0; i < t->progress_n; i++) {
    if (t->prs[i].id == id) {
      /* copy the ring contents along with the record */
      for (uint32_t j = i; j + 1 < t->progress_n; j++) {
        t->prs[j] = t->prs[j + 1];
        memcpy(t->infl_mem + (size_t)j * t->inflight_max,
               t->infl_mem + (size_t)(j + 1) * t->inflight_max,
               t->inflight_max * sizeof(uint64_t));
      }
      t->progress_n--;
      tracker_bind_inflights(t);
      return;
    }
  }
}

int qraft__tracker_reset_conf(tracker *t, const qraft_conf_state *cs,
                              uint64_t next_index) {
  t->conf = *cs;
  t->progress_n = 0;
  const qraft_id *lists[4] = {cs->voters, cs->voters_outgoing, cs->learners,
                              cs->learners_next};
  uint32_t ns[4] = {cs->voters_n, cs->voters_outgoing_n, cs->learners_n,
                    cs->learners_next_n};
  for (int l = 0; l < 4; l++) {
    for (uint32_t i = 0; i < ns[l]; i++) {
      if (qraft__tracker_get(t, lists[l][i]) != NULL) {
        continue;
      }
      if (t->progress_n == QRAFT__PROGRESS_MAX) {
        return QRAFT_ELIMIT;
      }
      tracker_add_progress(t, lists[l][i], next_index, l == 2);
    }
  }
  tracker_bind_inflights(t);
  return 0;
}

/* --- quorums --------------------------------------------------------------- */

static uint64_t majority_committed(const tracker *t, const qraft_id *ids,
                                   uint32_t n) {
  if (n == 0) {
    return UINT64_MAX; /* an empty configuration agrees with anything */
  }
  uint64_t m[QRAFT_CONF_NODES_MAX];
  for (uint32_t i = 0; i < n; i++) {
    const progress *pr = qraft__tracker_get((tracker *)t, ids[i]);
    m[i] = pr != NULL ? pr->match : 0;
  }
  /* insertion sort, descending; n is small */
  for (uint32_t i = 1; i < n; i++) {
    uint64_t v = m[i];
    uint32_t j = i;
    while (j > 0 && m[j - 1] < v) {
      m[j] = m[j - 1];
      j--;
    }
    m[j] = v;
  }
  return m[n / 2]; /* the (n/2+1)-th largest: held by a majority */
}

uint64_t qraft__tracker_committed(const tracker *t) {
  uint64_t a = majority_committed(t, t->conf.voters, t->conf.voters_n);
  uint64_t b = majority_committed(t, t->conf.voters_outgoing,
                                  t->conf.voters_outgoing_n);
  return a < b ? a : b;
}

static vote_result majority_vote(const tracker *t, const qraft_id *ids,
                                 uint32_t n, const bool *acks_or_null,
                                 uint32_t *granted_out, uint32_t *rejected_out) {
  if (n == 0) {
    return VOTE_WON;
  }
  uint32_t granted = 0, rejected = 0, missing = 0;
  for (uint32_t i = 0; i < n; i++) {
    const progress *pr = NULL;
    uint32_t slot = 0;
    for (slot = 0; slot < t->progress_n; slot++) {
      if (t->prs[slot].id == ids[i]) {
        pr = &t->prs[slot];
        break;
      }
    }
    int v;
    if (pr == NULL) {
      v = -1;
    } else if (acks_or_null != NULL) {
      v = acks_or_null[slot] ? 1 : -1;
    } else {
      v = pr->vote;
    }
    if (v == 1) {
      granted++;
    } else if (v == 0) {
      rejected++;
    } else {
      missing++;
    }
  }
  if (granted_out) {
    *granted_out += granted;
  }
  if (rejected_out) {
    *rejected_out += rejected;
  }
  uint32_t q = n / 2 + 1;
  if (granted >= q) {
    return VOTE_WON;
  }
  if (granted + missing >= q) {
    return VOTE_PENDING;
  }
  return VOTE_LOST;
}

static vote_result joint_vote(vote_result a, vote_result b) {
  if (a == VOTE_LOST || b == VOTE_LOST) {
    return VOTE_LOST;
  }
  if (a == VOTE_WON && b == VOTE_WON) {
    return VOTE_WON;
  }
  return VOTE_PENDING;
}

vote_result qraft__tracker_tally(const tracker *t, uint32_t *granted,
                                 uint32_t *rejected) {
  *granted = 0;
  *rejected = 0;
  vote_result a = majority_vote(t, t->conf.voters, t->conf.voters_n, NULL,
                                granted, rejected);
  vote_result b = majority_vote(t, t->conf.voters_outgoing,
                                t->conf.voters_outgoing_n, NULL, NULL, NULL);
  return joint_vote(a, b);
}

vote_result qraft__tracker_quorum_of(const tracker *t, const bool *acks) {
  vote_result a = majority_vote(t, t->conf.voters, t->conf.voters_n, acks,
                                NULL, NULL);
  vote_result b = majority_vote(t, t->conf.voters_outgoing,
                                t->conf.voters_outgoing_n, acks, NULL, NULL);
  return joint_vote(a, b);
}

void qraft__tracker_reset_votes(tracker *t) {
  for (uint32_t i = 0; i < t->progress_n; i++) {
    t->prs[i].vote = -1;
  }
}

bool qraft__tracker_quorum_active(const tracker *t) {
  bool acks[QRAFT__PROGRESS_MAX];
  for (uint32_t i = 0; i < t->progress_n; i++) {
    acks[i] = t->prs[i].recent_active && !t->prs[i].is_learner;
  }
  return qraft__tracker_quorum_of(t, acks) == VOTE_WON;
}

/* --- configuration changes (etcd confchange.Changer) ----------------------- */

typedef struct change_ctx {
  qraft_conf_state conf;
  /* which ids have progress after the change, and as learners? */
  uint32_t ids_n;
  qraft_id ids[QRAFT__PROGRESS_MAX];
  bool learner[QRAFT__PROGRESS_MAX];
} change_ctx;

static int ctx_find(const change_ctx *c, qraft_id id) {
  for (uint32_t i = 0; i < c->ids_n; i++) {
    if (c->ids[i] == id) {
      return (int)i;
    }
  }
  return -1;
}

static int ctx_ensure(change_ctx *c, qraft_id id, bool learner, bool *created) {
  int i = ctx_find(c, id);
  *created = false;
  if (i >= 0) {
    return i;
  }
  if (c->ids_n == QRAFT__PROGRESS_MAX) {
    return -1;
  }
  c->ids[c->ids_n] = id;
  c->learner[c->ids_n] = learner;
  *created = true;
  return (int)c->ids_n++;
}

static void ctx_remove(change_ctx *c, qraft_id id) {
  int i = ctx_find(c, id);
  if (i < 0) {
    return;
  }
  ids_del(c->conf.voters, &c->conf.voters_n, id);
  ids_del(c->conf.learners, &c->conf.learners_n, id);
  ids_del(c->conf.learners_next, &c->conf.learners_next_n, id);
  /* An outgoing voter keeps its progress until the joint config is left. */
  if (!ids_has(c->conf.voters_outgoing, c->conf.voters_outgoing_n, id)) {
    c->ids[i] = c->ids[c->ids_n - 1];
    c->learner[i] = c->learner[c->ids_n - 1];
    c->ids_n--;
  }
}

static int ctx_make_voter(change_ctx *c, qraft_id id) {
  bool created;
  int i = ctx_ensure(c, id, false, &created);
  if (i < 0) {
    return QRAFT_ELIMIT;
  }
  c->learner[i] = false;
  ids_del(c->conf.learners, &c->conf.learners_n, id);
  ids_del(c->conf.learners_next, &c->conf.learners_next_n, id);
  return ids_add(c->conf.voters, &c->conf.voters_n, id);
}

static int ctx_make_learner(change_ctx *c, qraft_id id) {
  bool created;
  int i = ctx_ensure(c, id, true, &created);
  if (i < 0) {
    return QRAFT_ELIMIT;
  }
  if (!created && c->learner[i]) {
    return 0;
  }
  /* remove from voters and learner lists but keep the progress record */
  ids_del(c->conf.voters, &c->conf.voters_n, id);
  ids_del(c->conf.learners, &c->conf.learners_n, id);
  ids_del(c->conf.learners_next, &c->conf.learners_next_n, id);
  if (ids_has(c->conf.voters_outgoing, c->conf.voters_outgoing_n, id)) {
    /* still a voter of the outgoing config: become a learner on leave */
    return ids_add(c->conf.learners_next, &c->conf.learners_next_n, id);
  }
  c->learner[i] = true;
  return ids_add(c->conf.learners, &c->conf.learners_n, id);
}

static int ctx_apply(change_ctx *c, const qraft_conf_change_v2 *cc,
                     qraft_err *err) {
  for (uint32_t k = 0; k < cc->changes_n; k++) {
    const qraft_conf_change_single *s = &cc->changes[k];
    if (s->node_id == 0) {
      continue; /* etcd ignores changes of node 0 */
    }
    int rv = 0;
    switch (s->change_type) {
    case QRAFT_CONF_ADD_NODE:
      rv = ctx_make_voter(c, s->node_id);
      break;
    case QRAFT_CONF_ADD_LEARNER_NODE:
      rv = ctx_make_learner(c, s->node_id);
      break;
    case QRAFT_CONF_REMOVE_NODE:
      ctx_remove(c, s->node_id);
      break;
    }
    if (rv != 0) {
      return QRAFT_ERR(err, QRAFT_ECONFIG,
                       "change %u of node %llu: more than %d nodes", k,
                       (unsigned long long)s->node_id, QRAFT_CONF_NODES_MAX);
    }
  }
  if (c->conf.voters_n == 0) {
    return QRAFT_ERR(err, QRAFT_ECONFIG, "removed all voters");
  }
  return 0;
}

/* Is the change a request to leave the joint configuration? */
static bool cc_leave_joint(const qraft_conf_change_v2 *cc) {
  return cc->changes_n == 0 && cc->transition == QRAFT_CONF_TRANSITION_AUTO;
}

static bool cc_enter_joint(const qraft_conf_change_v2 *cc, bool *auto_leave) {
  if (cc->transition != QRAFT_CONF_TRANSITION_AUTO || cc->changes_n > 1) {
    *auto_leave = cc->transition != QRAFT_CONF_TRANSITION_EXPLICIT;
    return true;
  }
  return false;
}

static int tracker_compute_change(const tracker *t,
                                  const qraft_conf_change_v2 *cc,
                                  change_ctx *c, qraft_err *err) {
  memset(c, 0, sizeof *c);
  c->conf = t->conf;
  for (uint32_t i = 0; i < t->progress_n; i++) {
    c->ids[i] = t->prs[i].id;
    c->learner[i] = t->prs[i].is_learner;
  }
  c->ids_n = t->progress_n;
  bool joint = t->conf.voters_outgoing_n > 0;
  bool auto_leave = false;
  if (cc_leave_joint(cc)) {
    if (!joint) {
      return QRAFT_ERR(err, QRAFT_ECONFIG,
                       "cannot leave a joint configuration: not joint");
    }
    for (uint32_t i = 0; i < c->conf.learners_next_n; i++) {
      qraft_id id = c->conf.learners_next[i];
      (void)ids_add(c->conf.learners, &c->conf.learners_n, id);
      int k = ctx_find(c, id);
      QRAFT_ASSERT(k >= 0);
      c->learner[k] = true;
    }
    c->conf.learners_next_n = 0;
    for (uint32_t i = 0; i < c->conf.voters_outgoing_n; i++) {
      qraft_id id = c->conf.voters_outgoing[i];
      if (!ids_has(c->conf.voters, c->conf.voters_n, id) &&
          !ids_has(c->conf.learners, c->conf.learners_n, id)) {
        int k = ctx_find(c, id);
        QRAFT_ASSERT(k >= 0);
        c->ids[k] = c->ids[c->ids_n - 1];
        c->learner[k] = c->learner[c->ids_n - 1];
        c->ids_n--;
      }
    }
    c->conf.voters_outgoing_n = 0;
    c->conf.auto_leave = false;
    return 0;
  }
  if (cc_enter_joint(cc, &auto_leave)) {
    if (joint) {
      return QRAFT_ERR(err, QRAFT_ECONFIG,
                       "already in a joint configuration");
    }
    if (c->conf.voters_n == 0) {
      return QRAFT_ERR(err, QRAFT_ECONFIG,
                       "cannot enter a joint configuration with no voters");
    }
    memcpy(c->conf.voters_outgoing, c->conf.voters,
           c->conf.voters_n * sizeof(qraft_id));
    c->conf.voters_outgoing_n = c->conf.voters_n;
    int rv = ctx_apply(c, cc, err);
    if (rv != 0) {
      return rv;
    }
    c->conf.auto_leave = auto_leave;
    return 0;
  }
  /* Simple change: at most one voter may change (thesis 4.1). */
  if (joint) {
    return QRAFT_ERR(err, QRAFT_ECONFIG,
                     "a single-step change while in a joint configuration");
  }
  int rv = ctx_apply(c, cc, err);
  if (rv != 0) {
    return rv;
  }
  uint32_t diff = 0;
  for (uint32_t i = 0; i < c->conf.voters_n; i++) {
    diff += !ids_has(t->conf.voters, t->conf.voters_n, c->conf.voters[i]);
  }
  for (uint32_t i = 0; i < t->conf.voters_n; i++) {
    diff += !ids_has(c->conf.voters, c->conf.voters_n, t->conf.voters[i]);
  }
  if (diff > 1) {
    return QRAFT_ERR(err, QRAFT_ECONFIG,
                     "more than one voter changed without entering a joint "
                     "configuration");
  }
  return 0;
}

int qraft__tracker_check_change(const tracker *t, const qraft_conf_change_v2 *cc,
                                qraft_err *err) {
  change_ctx c;
  return tracker_compute_change(t, cc, &c, err);
}

int qraft__tracker_apply_change(tracker *t, const qraft_conf_change_v2 *cc,
                                uint64_t last_index, qraft_err *err) {
  change_ctx c;
  int rv = tracker_compute_change(t, cc, &c, err);
  if (rv != 0) {
    return rv;
  }
  /* Remove progress of ids that are gone, keep the rest, add new ones. */
  for (uint32_t i = t->progress_n; i-- > 0;) {
    if (ctx_find(&c, t->prs[i].id) < 0) {
      tracker_del_progress(t, t->prs[i].id);
    }
  }
  for (uint32_t i = 0; i < c.ids_n; i++) {
    progress *pr = qraft__tracker_get(t, c.ids[i]);
    if (pr == NULL) {
      pr = tracker_add_progress(t, c.ids[i], last_index + 1, c.learner[i]);
      tracker_bind_inflights(t);
    }
    pr->is_learner = c.learner[i];
  }
  t->conf = c.conf;
  return 0;
}
