/*
 * space.c: running out of disk space is a state, not a fatal error
 * (QRAFT_ALARM_NOSPACE in qraft/node.h).
 *
 *  - A write the store failed with -ENOSPC or -EDQUOT had no effect, and
 *    neither had the writes submitted after it (qraft/storage.h): they all
 *    come back, in order, and wait in the held list with the writes the
 *    core hands out meanwhile. Once none is in flight and the retry is due
 *    (100 ms, doubling to 1 s), they are submitted again, in order. Their
 *    messages (acknowledgements, votes) still wait for them, so nothing is
 *    acknowledged that is not durable. Appends from the leader are dropped
 *    meanwhile (as a lossy network would): the leader probes again later,
 *    and the held list does not grow with the cluster's writes.
 *  - Committed entries the state machine refused wait in the backlog, with
 *    those committed after them, and are applied again on the same
 *    schedule, never skipping one.
 *  - The free space of data_dir is checked against a reserve, so that the
 *    alarm rises before writes fail.
 *  - Every message carries this member's alarms (qraft_message.alarms).
 *    A member whose writes are held sends nearly nothing else (its
 *    acknowledgements, even of heartbeats, wait for its writes), so while
 *    in alarm it also sends every member an alarm beacon each heartbeat
 *    interval: a MsgBeat (a local type, which a core refuses from a peer)
 *    with its alarms, taken by the receiving node and never stepped into
 *    its core; one more beacon with no alarm says it cleared. A leader in
 *    alarm refuses proposals and hands leadership to an up-to-date voter
 *    that is not; a leader whose voters are in alarm for a quorum refuses
 *    proposals at once.
 */
#include "node_internal.h"

#include <sys/statvfs.h>

#define RETRY_FIRST_MS 100u
#define RETRY_MAX_MS 1000u
/* a snapshot that found no room keeps the alarm at least this long */
#define SNAP_NOSPACE_HOLD_NS 2000000000ull

const char *qraft__node_dir_name(const qraft_node *n) {
  return n->space_dir != NULL ? n->space_dir : "(storage given)";
}

bool qraft__node_is_nospace(int code) {
  return code == -ENOSPC || code == -EDQUOT;
}

static uint32_t backoff_next(uint32_t ms) {
  if (ms == 0) {
    return RETRY_FIRST_MS;
  }
  return ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : ms * 2;
}

/* --- held writes ---------------------------------------------------------- */

bool qraft__node_writes_held(const qraft_node *n) {
  return n->held_head != NULL;
}

void qraft__node_held_append(qraft_node *n, node_write *w) {
  w->held_next = NULL;
  if (n->held_tail != NULL) {
    n->held_tail->held_next = w;
  } else {
    n->held_head = w;
  }
  n->held_tail = w;
  n->held_n++;
}

/* Puts `w` in the held list at its place in submission order: writes in
 * flight when the first one failed come back after the ones the core handed
 * out since, which were held at once. */
static void held_insert(qraft_node *n, node_write *w) {
  node_write **pp = &n->held_head;
  while (*pp != NULL && (*pp)->seq < w->seq) {
    pp = &(*pp)->held_next;
  }
  w->held_next = *pp;
  *pp = w;
  if (w->held_next == NULL) {
    n->held_tail = w;
  }
  n->held_n++;
}

bool qraft__node_write_hold(qraft_node *n, node_write *w, int status) {
  if (!qraft__node_is_nospace(status)) {
    return false;
  }
  /* A received snapshot's writer the store used up cannot be written
   * again (qraft/storage.h: it keeps it only when the failure came before
   * the snapshot was published). */
  if (w->restore_after && w->w.snapshot == NULL) {
    return false;
  }
  if (!(n->space_why & SPACE_WHY_WAL)) {
    QRAFT_LOG(n->lg, QRAFT_LOG_WARN,
              "the log's store has no room for a write; holding it and the "
              "writes after it until there is",
              QRAFT_LOG_STR("dir", qraft__node_dir_name(n)),
              QRAFT_LOG_STR("error", qraft_strerror(status)));
  }
  n->space_why |= SPACE_WHY_WAL;
  n->m_writes_held_total++;
  held_insert(n, w);
  if (n->held_retry_ns == 0) {
    n->held_backoff_ms = backoff_next(n->held_backoff_ms);
    n->held_retry_ns =
        qraft_env_now_ns(n->env) + n->held_backoff_ms * 1000000ull;
  }
  qraft__node_space_update(n);
  return true;
}

void qraft__node_write_landed(qraft_node *n) {
  if ((n->space_why & SPACE_WHY_WAL) && n->held_head == NULL) {
    n->space_why &= ~SPACE_WHY_WAL;
    n->held_backoff_ms = 0;
    QRAFT_LOG(n->lg, QRAFT_LOG_INFO, "the log's store has room again");
    qraft__node_space_update(n);
  }
}

/* Submits the held writes again, in order, once none is in flight. */
static void held_retry(qraft_node *n, uint64_t now) {
  if (n->held_head == NULL || n->writes_inflight > 0 ||
      now < n->held_retry_ns) {
    return;
  }
  n->held_retry_ns = 0;
  while (n->held_head != NULL) {
    node_write *w = n->held_head;
    qraft_err err;
    qraft_err_init(&err, 0);
    w->submit_ns = now;
    int rv = qraft_storage_submit(n->st, &w->w, &err);
    if (rv == QRAFT_EBUSY) {
      break; /* the rest go after these land */
    }
    if (rv != 0) {
      char line[512];
      qraft_err_format(&err, line, sizeof line);
      QRAFT_LOG(n->lg, QRAFT_LOG_ERROR, "storage refused a write; node stops",
                QRAFT_LOG_STR("error", line));
      n->fatal = true;
      qraft__node_fail_all(n, rv);
      return;
    }
    n->held_head = w->held_next;
    if (n->held_head == NULL) {
      n->held_tail = NULL;
    }
    w->held_next = NULL;
    n->held_n--;
    n->writes_inflight++;
  }
  if (n->held_head != NULL) {
    n->held_retry_ns = now; /* when the ones in flight land */
  }
  qraft__node_kick_storage(n);
}

void qraft__node_held_free(qraft_node *n) {
  while (n->held_head != NULL) {
    node_write *w = n->held_head;
    n->held_head = w->held_next;
    if (n->last_write == w) {
      n->last_write = NULL;
    }
    qraft__node_write_free(w);
  }
  n->held_tail = NULL;
  n->held_n = 0;
}

bool qraft__node_drop_for_space(qraft_node *n, const qraft_message *m) {
  if (m->type != QRAFT_MSG_APPEND || m->entries_n == 0) {
    return false;
  }
  if (n->held_head != NULL ||
      (n->apply_blocked && n->backlog_bytes > n->cfg.pending_bytes_max)) {
    n->m_appends_dropped_nospace++;
    return true;
  }
  return false;
}

/* --- entries the state machine refused ------------------------------------ */

void qraft__node_apply_refused(qraft_node *n, int code, uint64_t index) {
  n->m_apply_refused++;
  if (!n->apply_blocked || n->apply_code != code) {
    QRAFT_LOG(n->lg, QRAFT_LOG_WARN,
              "the state machine cannot apply now; entries wait and are "
              "applied again",
              QRAFT_LOG_U64("index", index),
              QRAFT_LOG_STR("error", qraft_strerror(code)));
  }
  n->apply_blocked = true;
  n->apply_code = code;
  if (qraft__node_is_nospace(code)) {
    n->space_why |= SPACE_WHY_APPLY;
  }
  n->apply_backoff_ms = backoff_next(n->apply_backoff_ms);
  n->apply_retry_ns =
      qraft_env_now_ns(n->env) + n->apply_backoff_ms * 1000000ull;
  qraft__node_space_update(n);
}

void qraft__node_apply_backlog(qraft_node *n) {
  n->apply_blocked = false;
  if (n->backlog_n > 0) {
    n->commit_seen_ns = qraft_env_now_ns(n->env);
    size_t k = qraft__node_apply(n, n->backlog, n->backlog_n);
    if (k > 0) {
      uint64_t last = n->backlog[k - 1].index;
      for (size_t i = 0; i < k; i++) {
        n->backlog_bytes -= n->backlog[i].data.len + n->backlog[i].context.len;
        qraft_slice_release(&n->backlog[i].data);
        qraft_slice_release(&n->backlog[i].context);
      }
      memmove(n->backlog, n->backlog + k,
              (n->backlog_n - k) * sizeof *n->backlog);
      n->backlog_n -= k;
      qraft_core_applied(n->core, last);
    }
    /* qraft__node_apply set apply_blocked again if it was refused */
  }
  if (!n->apply_blocked && n->apply_backoff_ms != 0) {
    n->apply_backoff_ms = 0;
    n->apply_code = 0;
    if (n->space_why & SPACE_WHY_APPLY) {
      n->space_why &= ~SPACE_WHY_APPLY;
      QRAFT_LOG(n->lg, QRAFT_LOG_INFO,
                "the state machine applies again");
    }
    qraft__node_space_update(n);
  }
}

/* --- snapshots ------------------------------------------------------------ */

/* A snapshot (taken here, or received) found no room. The alarm stands
 * until a snapshot lands, or, after SNAP_NOSPACE_HOLD_NS, until data_dir
 * has more room than it had then (without data_dir: after the hold). */
void qraft__node_snapshot_nospace(qraft_node *n, int code) {
  (void)code;
  n->snap_nospace_ns = qraft_env_now_ns(n->env);
  n->snap_nospace_free = 0;
  struct statvfs sv;
  if (n->space_dir != NULL && statvfs(n->space_dir, &sv) == 0) {
    n->snap_nospace_free = (uint64_t)sv.f_bavail * (uint64_t)sv.f_frsize;
  }
  if (!(n->space_why & SPACE_WHY_SNAPSHOT)) {
    n->space_why |= SPACE_WHY_SNAPSHOT;
    qraft__node_space_update(n);
  }
}

/* --- the alarm ------------------------------------------------------------ */

void qraft__node_snapshot_landed(qraft_node *n) {
  if (n->space_why & SPACE_WHY_SNAPSHOT) {
    n->space_why &= ~SPACE_WHY_SNAPSHOT;
    qraft__node_space_update(n);
  }
}

/* Whether the room a snapshot lacked may be there now. */
static bool snap_room_back(qraft_node *n, uint64_t now) {
  if (now - n->snap_nospace_ns < SNAP_NOSPACE_HOLD_NS) {
    return false;
  }
  struct statvfs sv;
  if (n->space_dir == NULL || statvfs(n->space_dir, &sv) != 0) {
    return true;
  }
  uint64_t free_now = (uint64_t)sv.f_bavail * (uint64_t)sv.f_frsize;
  return free_now > n->snap_nospace_free + (1u << 20);
}

static void space_check(qraft_node *n, uint64_t now) {
  if (n->space_dir == NULL ||
      n->cfg.space_reserve_bytes == QRAFT_NODE_SPACE_RESERVE_NONE ||
      now < n->space_next_check_ns) {
    return;
  }
  n->space_next_check_ns = now + n->cfg.space_check_ms * 1000000ull;
  struct statvfs sv;
  if (statvfs(n->space_dir, &sv) != 0) {
    return; /* the next write tells */
  }
  n->space_free = (uint64_t)sv.f_bavail * (uint64_t)sv.f_frsize;
  bool low = n->space_free < n->cfg.space_reserve_bytes;
  if (low && !(n->space_why & SPACE_WHY_RESERVE)) {
    n->space_why |= SPACE_WHY_RESERVE;
    QRAFT_LOG(n->lg, QRAFT_LOG_WARN,
              "free space below the reserve; this member refuses writes",
              QRAFT_LOG_STR("dir", n->space_dir),
              QRAFT_LOG_U64("free_bytes", n->space_free),
              QRAFT_LOG_U64("reserve_bytes", n->cfg.space_reserve_bytes));
  } else if (!low && (n->space_why & SPACE_WHY_RESERVE)) {
    n->space_why &= ~SPACE_WHY_RESERVE;
    QRAFT_LOG(n->lg, QRAFT_LOG_INFO, "free space above the reserve again",
              QRAFT_LOG_STR("dir", n->space_dir),
              QRAFT_LOG_U64("free_bytes", n->space_free));
  }
}

/* Recomputes this member's alarms from their reasons; logs changes. */
void qraft__node_space_update(qraft_node *n) {
  pthread_mutex_lock(&n->mu);
  bool app = n->app_alarm;
  char app_why[sizeof n->app_why];
  memcpy(app_why, n->app_why, sizeof app_why);
  pthread_mutex_unlock(&n->mu);
  if (app) {
    n->space_why |= SPACE_WHY_APP;
  } else {
    n->space_why &= ~SPACE_WHY_APP;
  }
  uint32_t alarms = n->space_why != 0 ? QRAFT_ALARM_NOSPACE : 0;
  char why[sizeof n->alarm_why];
  why[0] = '\0';
  size_t off = 0;
  struct {
    uint32_t bit;
    const char *text;
  } reasons[] = {
      {SPACE_WHY_RESERVE, "free space below the reserve"},
      {SPACE_WHY_WAL, "the log's store has no room"},
      {SPACE_WHY_APPLY, "the state machine has no room"},
      {SPACE_WHY_SNAPSHOT, "a snapshot found no room"},
      {SPACE_WHY_APP, app_why[0] ? app_why : "raised by the application"},
  };
  for (size_t i = 0; i < sizeof reasons / sizeof reasons[0]; i++) {
    if ((n->space_why & reasons[i].bit) && off < sizeof why) {
      int k = snprintf(why + off, sizeof why - off, "%s%s", off ? "; " : "",
                       reasons[i].text);
      off += k > 0 ? (size_t)k : 0;
    }
  }
  if (alarms != n->alarms) {
    n->beacon_next_ns = 0; /* tell the peers now */
    n->beacon_clear = alarms == 0;
    if (alarms & QRAFT_ALARM_NOSPACE) {
      n->m_alarms_raised++;
      QRAFT_LOG(n->lg, QRAFT_LOG_WARN, "alarm raised: no space",
                QRAFT_LOG_STR("why", why));
    } else {
      /* at the level of the raising, so that an operator sees both */
      QRAFT_LOG(n->lg, QRAFT_LOG_WARN, "alarm cleared: space again");
    }
  }
  n->alarms = alarms;
  memcpy(n->alarm_why, why, sizeof why);
}

void qraft__node_peer_alarms(qraft_node *n, qraft_id from, uint32_t alarms) {
  for (uint32_t i = 0; i < n->members_n; i++) {
    if (n->members[i].id == from) {
      n->members[i].alarms = alarms;
      n->members[i].heard_ns = qraft_env_now_ns(n->env);
      return;
    }
  }
}

uint32_t qraft__node_voters_in_alarm(qraft_node *n, bool *quorum) {
  uint64_t now = qraft_env_now_ns(n->env);
  uint64_t fresh = 2ull * n->cfg.election_ticks * n->tick_ns;
  uint32_t in = 0;
  for (uint32_t v = 0; v < n->conf.voters_n; v++) {
    qraft_id id = n->conf.voters[v];
    if (id == n->id) {
      in += n->alarms != 0;
      continue;
    }
    for (uint32_t i = 0; i < n->members_n; i++) {
      const node_member *m = &n->members[i];
      if (m->id == id) {
        in += m->alarms != 0 && now - m->heard_ns <= fresh;
        break;
      }
    }
  }
  *quorum = n->conf.voters_n > 0 && in >= n->conf.voters_n / 2 + 1;
  return in;
}

/* A member in alarm refuses proposals whatever its role: as a follower it
 * would forward them, and could not complete them (it applies only what
 * its own log holds, and its log or its state machine has no room). */
int qraft__node_propose_space(qraft_node *n, bool leader) {
  if (n->alarms != 0) {
    return -ENOSPC;
  }
  if (!leader) {
    return 0;
  }
  bool quorum;
  (void)qraft__node_voters_in_alarm(n, &quorum);
  return quorum ? -ENOSPC : 0;
}

static bool member_in_alarm(const qraft_node *n, qraft_id id, uint64_t now,
                            uint64_t fresh) {
  for (uint32_t i = 0; i < n->members_n; i++) {
    const node_member *m = &n->members[i];
    if (m->id == id) {
      return m->alarms != 0 && now - m->heard_ns <= fresh;
    }
  }
  return false;
}

/* A leader in alarm hands leadership to an up-to-date voter that is not,
 * at most once per two election timeouts. */
static void alarm_transfer(qraft_node *n, uint64_t now) {
  if (n->alarms == 0) {
    return;
  }
  qraft_core_status st;
  qraft_core_status_get(n->core, &st);
  uint64_t gap = 2ull * n->cfg.election_ticks * n->tick_ns;
  if (st.role != QRAFT_ROLE_LEADER || st.lead_transferee != 0 ||
      (n->alarm_transfer_ns != 0 && now - n->alarm_transfer_ns < gap)) {
    return;
  }
  qraft_progress_info pr[NODE_ADDRS_MAX];
  size_t k = qraft_core_progress(n->core, pr, NODE_ADDRS_MAX);
  k = k < NODE_ADDRS_MAX ? k : NODE_ADDRS_MAX;
  qraft_id best = 0;
  uint64_t best_match = 0;
  for (size_t i = 0; i < k; i++) {
    if (pr[i].id == n->id || pr[i].is_learner || !pr[i].recent_active ||
        !qraft__node_conf_has(&n->conf, pr[i].id) ||
        member_in_alarm(n, pr[i].id, now, gap)) {
      continue;
    }
    if (best == 0 || pr[i].match > best_match) {
      best = pr[i].id;
      best_match = pr[i].match;
    }
  }
  if (best == 0) {
    return;
  }
  n->alarm_transfer_ns = now;
  QRAFT_LOG(n->lg, QRAFT_LOG_WARN,
            "leader in alarm (no space); handing leadership to a voter that "
            "is not",
            QRAFT_LOG_U64("to", best), QRAFT_LOG_STR("why", n->alarm_why));
  (void)qraft_core_transfer_leader(n->core, best);
}

/* Alarm beacons: see the top of this file. */
static void alarm_beacon(qraft_node *n, uint64_t now) {
  if ((n->alarms == 0 && !n->beacon_clear) || n->net == NULL ||
      now < n->beacon_next_ns) {
    return;
  }
  n->beacon_next_ns = now + (uint64_t)n->cfg.heartbeat_ticks * n->tick_ns;
  n->beacon_clear = false;
  for (uint32_t i = 0; i < n->members_n; i++) {
    if (n->members[i].id == n->id) {
      continue;
    }
    qraft_message b;
    memset(&b, 0, sizeof b);
    b.type = QRAFT_MSG_BEAT;
    b.to = n->members[i].id;
    b.from = n->id;
    b.alarms = n->alarms;
    (void)qraft_raft_net_send(n->net, &b, NULL);
  }
}

void qraft__node_space_tick(qraft_node *n) {
  uint64_t now = qraft_env_now_ns(n->env);
  space_check(n, now);
  if ((n->space_why & SPACE_WHY_SNAPSHOT) && snap_room_back(n, now)) {
    n->space_why &= ~SPACE_WHY_SNAPSHOT;
  }
  held_retry(n, now);
  if (n->fatal) {
    return;
  }
  if (n->apply_blocked && n->restore_ctx == NULL && now >= n->apply_retry_ns) {
    qraft__node_apply_backlog(n);
    qraft__node_serve_reads(n);
  }
  qraft__node_space_update(n);
  alarm_beacon(n, now);
  alarm_transfer(n, now);
}

int qraft_node_alarm_set(qraft_node *n, uint32_t alarm, bool raised,
                         const char *why) {
  if (alarm != QRAFT_ALARM_NOSPACE) {
    return QRAFT_ECONFIG;
  }
  pthread_mutex_lock(&n->mu);
  n->app_alarm = raised;
  snprintf(n->app_why, sizeof n->app_why, "%s",
           raised && why != NULL ? why : "");
  pthread_mutex_unlock(&n->mu);
  return 0;
}
