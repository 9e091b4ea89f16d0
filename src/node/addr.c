/*
 * addr.c: node ids and addresses: the address a configuration change
 * carries, the address book of members, and the peers the transport admits.
 */
#include "node_internal.h"

qraft_id qraft_node_raft_id(const qraft_node_id *key) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) {
    v = (v << 8) | key->bytes[i];
  }
  return v == 0 ? 1 : v;
}

qraft_id qraft_node_id_of(const qraft_node *n) { return n->id; }

void qraft_node_addr_of(const qraft_node *n, qraft_node_addr *out) {
  if (n->ep != NULL) {
    qraft_endpoint_addr(n->ep, out);
  } else {
    memset(out, 0, sizeof *out);
    out->id = n->key.public_key;
  }
}

/* --- addresses in configuration entries --------------------------------------
 * The context of a ConfChange that adds a node is its address: the 32-byte
 * key, a count, then per address a family byte (4 or 6), the address bytes
 * and a big-endian port. */

static size_t sockaddr_encode(const struct sockaddr_storage *ss, uint8_t *out) {
  size_t o = 0;
  if (ss->ss_family == AF_INET) {
    const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
    out[o++] = 4;
    memcpy(out + o, &s4->sin_addr, 4);
    o += 4;
    memcpy(out + o, &s4->sin_port, 2);
    o += 2;
  } else {
    const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
    out[o++] = 6;
    memcpy(out + o, &s6->sin6_addr, 16);
    o += 16;
    memcpy(out + o, &s6->sin6_port, 2);
    o += 2;
  }
  return o;
}

/* Decodes one family-tagged address at p[*o..len); 0 or QRAFT_EMALFORMED. */
static int sockaddr_decode(const uint8_t *p, size_t len, size_t *o,
                           struct sockaddr_storage *ss) {
  if (*o >= len) {
    return QRAFT_EMALFORMED;
  }
  uint8_t fam = p[(*o)++];
  if (fam == 4 && len - *o >= 6) {
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    s4->sin_family = AF_INET;
    memcpy(&s4->sin_addr, p + *o, 4);
    memcpy(&s4->sin_port, p + *o + 4, 2);
    *o += 6;
    return 0;
  }
  if (fam == 6 && len - *o >= 18) {
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
    s6->sin6_family = AF_INET6;
    memcpy(&s6->sin6_addr, p + *o, 16);
    memcpy(&s6->sin6_port, p + *o + 16, 2);
    *o += 18;
    return 0;
  }
  return QRAFT_EMALFORMED;
}

bool qraft__node_addr_valid(const qraft_node_addr *a) {
  if (a->addrs_n > QRAFT_NODE_ADDRS_MAX || a->relays_n > QRAFT_NODE_RELAYS_MAX) {
    return false;
  }
  for (uint32_t i = 0; i < a->addrs_n; i++) {
    if (a->addrs[i].ss_family != AF_INET && a->addrs[i].ss_family != AF_INET6) {
      return false;
    }
  }
  for (uint32_t i = 0; i < a->relays_n; i++) {
    sa_family_t f = a->relays[i].addr.ss_family;
    if (f != AF_INET && f != AF_INET6) {
      return false;
    }
  }
  return true;
}

size_t qraft__node_addr_encode(const qraft_node_addr *a, uint8_t *out) {
  QRAFT_ASSERT(qraft__node_addr_valid(a));
  size_t o = 0;
  memcpy(out + o, a->id.bytes, QRAFT_KEY_BYTES);
  o += QRAFT_KEY_BYTES;
  out[o++] = (uint8_t)a->addrs_n;
  for (uint32_t i = 0; i < a->addrs_n; i++) {
    o += sockaddr_encode(&a->addrs[i], out + o);
  }
  /* Relays follow only when there are some, so an address without them
   * reads the same to a node that knows nothing of relays. */
  if (a->relays_n > 0) {
    out[o++] = (uint8_t)a->relays_n;
    for (uint32_t i = 0; i < a->relays_n; i++) {
      memcpy(out + o, a->relays[i].id.bytes, QRAFT_KEY_BYTES);
      o += QRAFT_KEY_BYTES;
      o += sockaddr_encode(&a->relays[i].addr, out + o);
    }
  }
  return o;
}

int qraft__node_addr_decode(const uint8_t *p, size_t len, qraft_node_addr *a) {
  memset(a, 0, sizeof *a);
  if (len < QRAFT_KEY_BYTES + 1) {
    return QRAFT_EMALFORMED;
  }
  memcpy(a->id.bytes, p, QRAFT_KEY_BYTES);
  size_t o = QRAFT_KEY_BYTES;
  uint32_t n = p[o++];
  if (n > QRAFT_NODE_ADDRS_MAX) {
    return QRAFT_EMALFORMED;
  }
  for (uint32_t i = 0; i < n; i++) {
    if (sockaddr_decode(p, len, &o, &a->addrs[i]) != 0) {
      return QRAFT_EMALFORMED;
    }
  }
  a->addrs_n = n;
  if (o == len) {
    return 0; /* no relays */
  }
  uint32_t r = p[o++];
  if (r > QRAFT_NODE_RELAYS_MAX) {
    return QRAFT_EMALFORMED;
  }
  for (uint32_t i = 0; i < r; i++) {
    if (len - o < QRAFT_KEY_BYTES) {
      return QRAFT_EMALFORMED;
    }
    memcpy(a->relays[i].id.bytes, p + o, QRAFT_KEY_BYTES);
    o += QRAFT_KEY_BYTES;
    if (sockaddr_decode(p, len, &o, &a->relays[i].addr) != 0) {
      return QRAFT_EMALFORMED;
    }
  }
  a->relays_n = r;
  return o == len ? 0 : QRAFT_EMALFORMED;
}

static node_member *member_find(qraft_node *n, qraft_id id) {
  for (uint32_t i = 0; i < n->members_n; i++) {
    if (n->members[i].id == id) {
      return &n->members[i];
    }
  }
  return NULL;
}

void qraft__node_member_learn(qraft_node *n, const qraft_node_addr *a) {
  qraft_id id = qraft_node_raft_id(&a->id);
  node_member *m = member_find(n, id);
  if (m == NULL) {
    if (n->members_n == NODE_ADDRS_MAX) {
      return;
    }
    m = &n->members[n->members_n++];
  }
  m->id = id;
  m->addr = *a;
}

/* Learns the address a configuration entry carries (a change that adds a
 * node); other entries, and ones without an address, teach nothing. */
void qraft__node_learn_conf_entry(qraft_node *n, const qraft_entry *e) {
  qraft_conf_change_v2 cc;
  qraft_node_addr a;
  if (qraft_conf_change_entry_decode(e, &cc, NULL) == 0 && cc.context.len > 0 &&
      qraft__node_addr_decode(cc.context.data, cc.context.len, &a) == 0) {
    qraft__node_member_learn(n, &a);
  }
}

/* One INFO line per configuration change applied: what changed. */
void qraft__node_log_conf_entry(qraft_node *n, const qraft_entry *e) {
  qraft_conf_change_v2 cc;
  if (qraft_conf_change_entry_decode(e, &cc, NULL) != 0) {
    return;
  }
  char what[256];
  size_t off = 0;
  what[0] = '\0';
  static const char *const verbs[] = {"add voter", "remove", "add learner"};
  for (uint32_t i = 0; i < cc.changes_n && off < sizeof what; i++) {
    unsigned t = (unsigned)cc.changes[i].change_type;
    int k = snprintf(what + off, sizeof what - off, "%s%s %016llx",
                     i > 0 ? ", " : "", t < 3 ? verbs[t] : "change",
                     (unsigned long long)cc.changes[i].node_id);
    off += k > 0 ? (size_t)k : 0;
  }
  QRAFT_LOG(n->lg, QRAFT_LOG_INFO,
            cc.changes_n == 0 ? "configuration: leaving the joint configuration"
            : cc.changes_n == 1 ? "configuration change applied"
                                : "configuration: entering a joint configuration",
            QRAFT_LOG_U64("index", e->index), QRAFT_LOG_STR("changes", what));
}

bool qraft__node_conf_has(const qraft_conf_state *cs, qraft_id id) {
  const qraft_id *lists[4] = {cs->voters, cs->voters_outgoing, cs->learners,
                              cs->learners_next};
  uint32_t ns[4] = {cs->voters_n, cs->voters_outgoing_n, cs->learners_n,
                    cs->learners_next_n};
  for (int l = 0; l < 4; l++) {
    for (uint32_t i = 0; i < ns[l]; i++) {
      if (lists[l][i] == id) {
        return true;
      }
    }
  }
  return false;
}

/* Tell the transport who the members are: dial every member but us, and
 * forget nodes that left. */
int qraft__node_member_resolve(void *ud, const qraft_node_id *id,
                               qraft_node_addr *out) {
  qraft_node *n = ud;
  for (uint32_t i = 0; i < n->members_n; i++) {
    if (qraft_node_id_eq(&n->members[i].addr.id, id)) {
      *out = n->members[i].addr;
      return 0;
    }
  }
  return QRAFT_ENOTFOUND;
}

void qraft__node_sync_peers(qraft_node *n) {
  if (n->net == NULL) {
    return;
  }
  for (uint32_t i = 0; i < n->members_n; i++) {
    node_member *m = &n->members[i];
    if (m->id == n->id) {
      continue;
    }
    if (qraft__node_conf_has(&n->conf, m->id)) {
      /* the log's address, merged with what discovery knows */
      qraft_node_addr a = m->addr;
      if (n->ep != NULL && qraft_endpoint_resolve(n->ep, &m->addr.id, &a) != 0) {
        a = m->addr;
      }
      (void)qraft_raft_net_add_peer(n->net, m->id, &a, true);
    } else {
      qraft_raft_net_remove_peer(n->net, m->id);
    }
  }
}
