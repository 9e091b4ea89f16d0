/*
 * requests.c: requests: queued by any thread (qraft_node_propose and the
 * others), taken and proposed by the loop, completed, and expired.
 */
#include "node_internal.h"

/* --- requests: completion ------------------------------------------------- */

static void req_free(qraft_node *n, node_req *r) {
  pthread_mutex_lock(&n->mu);
  if (r->kind == REQ_PROPOSE) {
    n->pending_proposals--;
    n->pending_bytes -= r->data ? r->data->len : 0;
  } else if (r->kind == REQ_READ) {
    n->pending_reads--;
  }
  pthread_mutex_unlock(&n->mu);
  qraft_buf_unref(r->data);
  free(r);
}

void qraft__node_req_complete(qraft_node *n, node_req *r, int status,
                         qraft_slice result) {
  qraft_id leader = 0;
  if (n->core != NULL) {
    qraft_core_status st;
    qraft_core_status_get(n->core, &st);
    leader = st.leader;
  }
  if (r->kind == REQ_PROPOSE) {
    if (status != 0) {
      n->m_proposals_failed++;
    } else if (r->t0_ns != 0) {
      uint64_t dt = (qraft_env_now_ns(n->env) - r->t0_ns) / 1000;
      pthread_mutex_lock(&n->mu);
      qraft_histogram_record(&n->h_commit_us, dt);
      pthread_mutex_unlock(&n->mu);
    }
    if (r->propose_cb) {
      r->propose_cb(r->ud, status, result, leader);
    }
  } else if (r->done_cb) {
    r->done_cb(r->ud, status, leader);
  }
  req_free(n, r);
}

void qraft__node_inflight_remove(qraft_node *n, node_req *r) {
  for (node_req **pp = &n->inflight; *pp != NULL; pp = &(*pp)->next) {
    if (*pp == r) {
      *pp = r->next;
      return;
    }
  }
}

static void inflight_add(qraft_node *n, node_req *r) {
  r->next = n->inflight;
  n->inflight = r;
}

/* --- on the loop: taking requests, expiring them ------------------------- */

void qraft__node_take_requests(qraft_node *n) {
  pthread_mutex_lock(&n->mu);
  node_req *list = n->q_head;
  n->q_head = n->q_tail = NULL;
  pthread_mutex_unlock(&n->mu);
  uint64_t now = qraft_env_now_ns(n->env);
  int space_rv = 1; /* not asked yet */
  while (list != NULL) {
    node_req *r = list;
    list = r->next;
    r->next = NULL;
    r->deadline_ns = now + (uint64_t)n->cfg.proposal_timeout_ms * 1000000u;
    r->t0_ns = now;
    if (n->fatal || n->stop_requested) {
      qraft__node_req_complete(n, r, QRAFT_ESHUTDOWN, (qraft_slice){0});
      continue;
    }
    int rv = 0;
    switch (r->kind) {
    case REQ_PROPOSE: {
      if (space_rv == 1) {
        qraft_core_status cs;
        qraft_core_status_get(n->core, &cs);
        space_rv = qraft__node_propose_space(n, cs.role == QRAFT_ROLE_LEADER);
      }
      if (space_rv != 0) {
        /* out of space here, or on a quorum of voters (space.c) */
        n->m_proposals_nospace++;
        qraft__node_req_complete(n, r, space_rv, (qraft_slice){0});
        continue;
      }
      r->seq = ++n->next_seq;
      qraft_buf *ctx = qraft_buf_new(16);
      QRAFT_ASSERT(ctx != NULL);
      for (int b = 0; b < 8; b++) {
        ctx->data[b] = (uint8_t)(n->id >> (56 - 8 * b));
        ctx->data[8 + b] = (uint8_t)(r->seq >> (56 - 8 * b));
      }
      ctx->len = 16;
      qraft_entry e = {.type = QRAFT_ENTRY_NORMAL,
                       .data = {.data = r->data->data,
                                .len = r->data->len,
                                .owner = r->data},
                       .context = {.data = ctx->data, .len = 16, .owner = ctx}};
      rv = qraft_core_propose(n->core, &e, 1, NULL, NULL);
      qraft_buf_unref(ctx);
      n->m_proposals++;
      break;
    }
    case REQ_READ:
      r->seq = ++n->next_seq;
      rv = qraft_core_read_index(n->core, r->seq);
      n->m_reads++;
      break;
    case REQ_ADD_LEARNER:
    case REQ_ADD_VOTER:
    case REQ_PROMOTE:
    case REQ_REMOVE: {
      qraft_conf_change_v2 cc;
      memset(&cc, 0, sizeof cc);
      cc.changes_n = 1;
      uint8_t ctxbuf[NODE_ADDR_ENC_MAX];
      if (r->kind == REQ_ADD_LEARNER || r->kind == REQ_ADD_VOTER) {
        cc.changes[0].node_id = qraft_node_raft_id(&r->addr.id);
        cc.changes[0].change_type = r->kind == REQ_ADD_VOTER
                                        ? QRAFT_CONF_ADD_NODE
                                        : QRAFT_CONF_ADD_LEARNER_NODE;
        size_t l = qraft__node_addr_encode(&r->addr, ctxbuf);
        cc.context = (qraft_slice){.data = ctxbuf, .len = l};
        /* the node being added must be able to connect before the change
         * is applied */
        qraft__node_member_learn(n, &r->addr);
        if (n->net != NULL) {
          (void)qraft_raft_net_add_peer(n->net, cc.changes[0].node_id, &r->addr,
                                        true);
        }
      } else {
        cc.changes[0].node_id = r->id;
        cc.changes[0].change_type = r->kind == REQ_PROMOTE
                                        ? QRAFT_CONF_ADD_NODE
                                        : QRAFT_CONF_REMOVE_NODE;
      }
      uint64_t index = 0;
      rv = qraft_core_propose_conf_change(n->core, &cc, &index, NULL);
      r->index = index;
      r->index_known = rv == 0;
      break;
    }
    case REQ_TRANSFER:
      rv = qraft_core_transfer_leader(n->core, r->id);
      r->deadline_ns = now + (uint64_t)n->cfg.election_ticks *
                                 n->cfg.tick_ms * 1000000u * 2;
      break;
    }
    if (rv != 0) {
      /* refused at once (QRAFT_EPROPOSAL_DROPPED, QRAFT_ENOTLEADER, ...):
       * never appended, unlike QRAFT_EDROPPED (lost, outcome unknown) */
      qraft__node_req_complete(n, r, rv,
                   (qraft_slice){0});
    } else {
      inflight_add(n, r);
    }
  }
  qraft__node_drain(n);
}

void qraft__node_expire(qraft_node *n) {
  uint64_t now = qraft_env_now_ns(n->env);
  qraft_core_status st;
  qraft_core_status_get(n->core, &st);
  for (node_req *r = n->inflight; r != NULL;) {
    node_req *next = r->next;
    if (r->kind == REQ_TRANSFER && st.role == QRAFT_ROLE_FOLLOWER &&
        st.leader == r->id) {
      qraft__node_inflight_remove(n, r);
      qraft__node_req_complete(n, r, 0, (qraft_slice){0});
    } else if (r->kind == REQ_TRANSFER && st.role == QRAFT_ROLE_LEADER &&
               r->id == n->id) {
      qraft__node_inflight_remove(n, r);
      qraft__node_req_complete(n, r, 0, (qraft_slice){0});
    } else if (now >= r->deadline_ns) {
      qraft__node_inflight_remove(n, r);
      qraft__node_req_complete(n, r,
                   r->kind == REQ_PROPOSE ? QRAFT_EDROPPED : QRAFT_ETIMEDOUT,
                   (qraft_slice){0});
    }
    r = next;
  }
}

/* --- public requests (any thread) ----------------------------------------- */

static int node_enqueue(qraft_node *n, node_req *r) {
  pthread_mutex_lock(&n->mu);
  if (!n->accepting) {
    pthread_mutex_unlock(&n->mu);
    return QRAFT_ESHUTDOWN;
  }
  if (r->kind == REQ_PROPOSE) {
    size_t len = r->data->len;
    if (n->pending_proposals >= n->cfg.pending_proposals_max ||
        n->pending_bytes + len > n->cfg.pending_bytes_max) {
      pthread_mutex_unlock(&n->mu);
      return QRAFT_EBUSY;
    }
    n->pending_proposals++;
    n->pending_bytes += len;
  } else if (r->kind == REQ_READ) {
    if (n->pending_reads >= n->cfg.pending_reads_max) {
      pthread_mutex_unlock(&n->mu);
      return QRAFT_EBUSY;
    }
    n->pending_reads++;
  }
  r->next = NULL;
  if (n->q_tail != NULL) {
    n->q_tail->next = r;
  } else {
    n->q_head = r;
  }
  n->q_tail = r;
  pthread_mutex_unlock(&n->mu);
  if (n->wake != NULL) {
    qraft_env_wake_send(n->wake);
  }
  return 0;
}

int qraft_node_propose(qraft_node *n, const void *data, size_t len,
                       qraft_propose_cb cb, void *ud) {
  if (len > (1u << 20)) {
    return QRAFT_ELIMIT;
  }
  node_req *r = calloc(1, sizeof *r);
  if (r == NULL) {
    return -ENOMEM;
  }
  r->kind = REQ_PROPOSE;
  r->tq_ns = qraft_env_now_ns(n->env);
  r->data = qraft_buf_copy(data, len);
  if (r->data == NULL) {
    free(r);
    return -ENOMEM;
  }
  r->propose_cb = cb;
  r->ud = ud;
  int rv = node_enqueue(n, r);
  if (rv != 0) {
    qraft_buf_unref(r->data);
    free(r);
  }
  return rv;
}

static int node_simple_req(qraft_node *n, req_kind kind,
                           const qraft_node_addr *addr, qraft_id id,
                           qraft_done_cb cb, void *ud) {
  if (addr != NULL && !qraft__node_addr_valid(addr)) {
    return QRAFT_ECONFIG;
  }
  node_req *r = calloc(1, sizeof *r);
  if (r == NULL) {
    return -ENOMEM;
  }
  r->kind = kind;
  if (addr != NULL) {
    r->addr = *addr;
  }
  r->id = id;
  r->done_cb = cb;
  r->ud = ud;
  int rv = node_enqueue(n, r);
  if (rv != 0) {
    free(r);
  }
  return rv;
}

int qraft_node_read_barrier(qraft_node *n, qraft_done_cb cb, void *ud) {
  return node_simple_req(n, REQ_READ, NULL, 0, cb, ud);
}
int qraft_node_add_learner(qraft_node *n, const qraft_node_addr *addr,
                           qraft_done_cb cb, void *ud) {
  return node_simple_req(n, REQ_ADD_LEARNER, addr, 0, cb, ud);
}
int qraft_node_add_voter(qraft_node *n, const qraft_node_addr *addr,
                         qraft_done_cb cb, void *ud) {
  return node_simple_req(n, REQ_ADD_VOTER, addr, 0, cb, ud);
}
int qraft_node_promote(qraft_node *n, qraft_id id, qraft_done_cb cb,
                       void *ud) {
  return node_simple_req(n, REQ_PROMOTE, NULL, id, cb, ud);
}
int qraft_node_remove(qraft_node *n, qraft_id id, qraft_done_cb cb, void *ud) {
  return node_simple_req(n, REQ_REMOVE, NULL, id, cb, ud);
}
int qraft_node_transfer(qraft_node *n, qraft_id to, qraft_done_cb cb,
                        void *ud) {
  return node_simple_req(n, REQ_TRANSFER, NULL, to, cb, ud);
}
