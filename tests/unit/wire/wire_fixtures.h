/* Messages with known contents for the wire tests, and comparisons. */
#ifndef QRAFT_TESTS_WIRE_FIXTURES_H
#define QRAFT_TESTS_WIRE_FIXTURES_H

#include <qraft/wire.h>

#include <stdbool.h>
#include <string.h>

static inline bool fx_slice_eq(qraft_slice a, qraft_slice b) {
  return a.len == b.len && (a.len == 0 || memcmp(a.data, b.data, a.len) == 0);
}

static inline bool fx_ids_eq(const qraft_id *a, uint32_t an, const qraft_id *b,
                             uint32_t bn) {
  return an == bn && (an == 0 || memcmp(a, b, an * sizeof *a) == 0);
}

static inline bool fx_conf_state_eq(const qraft_conf_state *a,
                                    const qraft_conf_state *b) {
  return fx_ids_eq(a->voters, a->voters_n, b->voters, b->voters_n) &&
         fx_ids_eq(a->learners, a->learners_n, b->learners, b->learners_n) &&
         fx_ids_eq(a->voters_outgoing, a->voters_outgoing_n,
                   b->voters_outgoing, b->voters_outgoing_n) &&
         fx_ids_eq(a->learners_next, a->learners_next_n, b->learners_next,
                   b->learners_next_n) &&
         a->auto_leave == b->auto_leave;
}

static inline bool fx_snapshot_eq(const qraft_snapshot *a,
                                  const qraft_snapshot *b) {
  return fx_slice_eq(a->data, b->data) &&
         a->metadata.index == b->metadata.index &&
         a->metadata.term == b->metadata.term &&
         fx_conf_state_eq(&a->metadata.conf_state, &b->metadata.conf_state);
}

static inline bool fx_entry_eq(const qraft_entry *a, const qraft_entry *b) {
  return a->type == b->type && a->term == b->term && a->index == b->index &&
         fx_slice_eq(a->data, b->data) && fx_slice_eq(a->context, b->context) &&
         a->sync_log == b->sync_log;
}

static inline bool fx_message_eq(const qraft_message *a,
                                 const qraft_message *b) {
  if (a->type != b->type || a->to != b->to || a->from != b->from ||
      a->term != b->term || a->log_term != b->log_term ||
      a->index != b->index || a->entries_n != b->entries_n ||
      a->commit != b->commit || a->commit_term != b->commit_term ||
      a->request_snapshot != b->request_snapshot || a->reject != b->reject ||
      a->reject_hint != b->reject_hint || !fx_slice_eq(a->context, b->context) ||
      a->deprecated_priority != b->deprecated_priority ||
      a->priority != b->priority) {
    return false;
  }
  for (size_t i = 0; i < a->entries_n; i++) {
    if (!fx_entry_eq(&a->entries[i], &b->entries[i])) {
      return false;
    }
  }
  if ((a->snapshot == NULL) != (b->snapshot == NULL)) {
    return false;
  }
  return a->snapshot == NULL || fx_snapshot_eq(a->snapshot, b->snapshot);
}

static inline qraft_slice fx_str(const char *s) {
  return (qraft_slice){.data = (const uint8_t *)s, .len = strlen(s)};
}

/* A message with every field set (static storage; not thread-safe). */
static inline qraft_message fx_full_message(void) {
  static qraft_entry entries[3];
  static qraft_snapshot snap;
  entries[0] = (qraft_entry){.type = QRAFT_ENTRY_NORMAL, .term = 7,
                             .index = 41, .data = fx_str("put x=1"),
                             .context = fx_str("ctx")};
  entries[1] = (qraft_entry){.type = QRAFT_ENTRY_CONF_CHANGE_V2, .term = 7,
                             .index = 42, .data = fx_str("\x08\x01"),
                             .sync_log = true};
  entries[2] = (qraft_entry){.type = QRAFT_ENTRY_NORMAL, .term = 8,
                             .index = 43};
  memset(&snap, 0, sizeof snap);
  snap.data = fx_str("snapshot bytes");
  snap.metadata.index = 40;
  snap.metadata.term = 6;
  snap.metadata.conf_state.voters_n = 3;
  snap.metadata.conf_state.voters[0] = 1;
  snap.metadata.conf_state.voters[1] = 2;
  snap.metadata.conf_state.voters[2] = 300;
  snap.metadata.conf_state.learners_n = 1;
  snap.metadata.conf_state.learners[0] = 4;
  snap.metadata.conf_state.voters_outgoing_n = 1;
  snap.metadata.conf_state.voters_outgoing[0] = 5;
  snap.metadata.conf_state.learners_next_n = 1;
  snap.metadata.conf_state.learners_next[0] = UINT64_MAX;
  snap.metadata.conf_state.auto_leave = true;
  return (qraft_message){
      .type = QRAFT_MSG_APPEND,
      .to = 2,
      .from = 1,
      .term = 8,
      .log_term = 7,
      .index = 40,
      .entries = entries,
      .entries_n = 3,
      .commit = 39,
      .commit_term = 7,
      .snapshot = &snap,
      .request_snapshot = 12,
      .reject = true,
      .reject_hint = 33,
      .context = fx_str("message context"),
      .deprecated_priority = 3,
      .priority = -5,
  };
}

static inline qraft_message fx_heartbeat(qraft_id to) {
  return (qraft_message){.type = QRAFT_MSG_HEARTBEAT, .to = to, .from = 1,
                         .term = 5, .commit = 100};
}

#endif
