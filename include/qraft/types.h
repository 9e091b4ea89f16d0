/*
 * qraft/types.h: the Raft data types shared by the core, the wire codec, the
 * storage and the simulator. They mirror the eraftpb schema of raft-rs (see
 * docs/eraftpb.proto) field for field, so the codec maps them one to one.
 *
 * Ownership: byte fields are qraft_slice (see qraft/buf.h): a pointer, a
 * length and an optional owner buffer that keeps the bytes alive. Arrays
 * (message entries, conf-change lists) are a pointer and a count; who owns
 * them is stated by the function that produces the value.
 */
#ifndef QRAFT_TYPES_H
#define QRAFT_TYPES_H

#include <qraft/buf.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A Raft node id (eraftpb uses uint64). 0 means "none". */
typedef uint64_t qraft_id;
#define QRAFT_ID_NONE ((qraft_id)0)

/* Most nodes in each list of a configuration (voters, learners, outgoing
 * voters, next learners). A decoded ConfState with more is QRAFT_ELIMIT. */
#define QRAFT_CONF_NODES_MAX 32
/* Most changes in one ConfChangeV2. */
#define QRAFT_CONF_CHANGES_MAX 32

/* eraftpb.EntryType */
typedef enum qraft_entry_type {
  QRAFT_ENTRY_NORMAL = 0,
  QRAFT_ENTRY_CONF_CHANGE = 1,    /* data: an encoded ConfChange */
  QRAFT_ENTRY_CONF_CHANGE_V2 = 2, /* data: an encoded ConfChangeV2 */
} qraft_entry_type;
#define QRAFT_ENTRY_TYPE_MAX QRAFT_ENTRY_CONF_CHANGE_V2

/* eraftpb.Entry */
typedef struct qraft_entry {
  qraft_entry_type type; /* field 1 entry_type */
  uint64_t term;         /* field 2 */
  uint64_t index;        /* field 3 */
  qraft_slice data;      /* field 4 */
  qraft_slice context;   /* field 6 */
  bool sync_log;         /* field 5, deprecated; carried, never used */
} qraft_entry;

/* eraftpb.ConfState */
typedef struct qraft_conf_state {
  uint32_t voters_n;
  uint32_t learners_n;
  uint32_t voters_outgoing_n;
  uint32_t learners_next_n;
  qraft_id voters[QRAFT_CONF_NODES_MAX];          /* field 1 */
  qraft_id learners[QRAFT_CONF_NODES_MAX];        /* field 2 */
  qraft_id voters_outgoing[QRAFT_CONF_NODES_MAX]; /* field 3 */
  qraft_id learners_next[QRAFT_CONF_NODES_MAX];   /* field 4 */
  bool auto_leave;                                /* field 5 */
} qraft_conf_state;

/* eraftpb.SnapshotMetadata */
typedef struct qraft_snapshot_meta {
  qraft_conf_state conf_state; /* field 1 */
  uint64_t index;              /* field 2 */
  uint64_t term;               /* field 3 */
} qraft_snapshot_meta;

/* eraftpb.Snapshot */
typedef struct qraft_snapshot {
  qraft_slice data;             /* field 1 */
  qraft_snapshot_meta metadata; /* field 2 */
} qraft_snapshot;

/* eraftpb.MessageType, same numbers. */
typedef enum qraft_msg_type {
  QRAFT_MSG_HUP = 0,
  QRAFT_MSG_BEAT = 1,
  QRAFT_MSG_PROPOSE = 2,
  QRAFT_MSG_APPEND = 3,
  QRAFT_MSG_APPEND_RESPONSE = 4,
  QRAFT_MSG_REQUEST_VOTE = 5,
  QRAFT_MSG_REQUEST_VOTE_RESPONSE = 6,
  QRAFT_MSG_SNAPSHOT = 7,
  QRAFT_MSG_HEARTBEAT = 8,
  QRAFT_MSG_HEARTBEAT_RESPONSE = 9,
  QRAFT_MSG_UNREACHABLE = 10,
  QRAFT_MSG_SNAP_STATUS = 11,
  QRAFT_MSG_CHECK_QUORUM = 12,
  QRAFT_MSG_TRANSFER_LEADER = 13,
  QRAFT_MSG_TIMEOUT_NOW = 14,
  QRAFT_MSG_READ_INDEX = 15,
  QRAFT_MSG_READ_INDEX_RESP = 16,
  QRAFT_MSG_REQUEST_PRE_VOTE = 17,
  QRAFT_MSG_REQUEST_PRE_VOTE_RESPONSE = 18,
} qraft_msg_type;
#define QRAFT_MSG_TYPE_MAX QRAFT_MSG_REQUEST_PRE_VOTE_RESPONSE

/* "MsgAppend" etc., as eraftpb names them; "?" if out of range. */
const char *qraft_msg_type_name(qraft_msg_type type);
/* "EntryNormal", "EntryConfChange", "EntryConfChangeV2"; "?" otherwise. */
const char *qraft_entry_type_name(qraft_entry_type type);

/* eraftpb.Message */
typedef struct qraft_message {
  qraft_msg_type type;       /* field 1 msg_type */
  qraft_id to;               /* field 2 */
  qraft_id from;             /* field 3 */
  uint64_t term;             /* field 4 */
  uint64_t log_term;         /* field 5 */
  uint64_t index;            /* field 6 */
  qraft_entry *entries;      /* field 7, repeated */
  size_t entries_n;
  uint64_t commit;           /* field 8 */
  uint64_t commit_term;      /* field 15 */
  qraft_snapshot *snapshot;  /* field 9; NULL when absent */
  uint64_t request_snapshot; /* field 13 */
  bool reject;               /* field 10 */
  uint64_t reject_hint;      /* field 11 */
  qraft_slice context;       /* field 12 */
  uint64_t deprecated_priority; /* field 14 */
  int64_t priority;          /* field 16 */
  /* field 100, not in eraftpb (a decoder that does not know it skips it):
   * the sender's alarms (QRAFT_ALARM_* in qraft/node.h). Set and read by
   * the node; the core neither sets nor reads it. */
  uint32_t alarms;
} qraft_message;

/* eraftpb.HardState */
typedef struct qraft_hard_state {
  uint64_t term;  /* field 1 */
  qraft_id vote;  /* field 2 */
  uint64_t commit; /* field 3 */
} qraft_hard_state;

/* eraftpb.ConfChangeTransition */
typedef enum qraft_conf_transition {
  QRAFT_CONF_TRANSITION_AUTO = 0,
  QRAFT_CONF_TRANSITION_IMPLICIT = 1,
  QRAFT_CONF_TRANSITION_EXPLICIT = 2,
} qraft_conf_transition;

/* eraftpb.ConfChangeType */
typedef enum qraft_conf_change_type {
  QRAFT_CONF_ADD_NODE = 0,
  QRAFT_CONF_REMOVE_NODE = 1,
  QRAFT_CONF_ADD_LEARNER_NODE = 2,
} qraft_conf_change_type;

/* eraftpb.ConfChange (the v1 form: one change) */
typedef struct qraft_conf_change {
  uint64_t id;                        /* field 1 */
  qraft_conf_change_type change_type; /* field 2 */
  qraft_id node_id;                   /* field 3 */
  qraft_slice context;                /* field 4 */
} qraft_conf_change;

/* eraftpb.ConfChangeSingle */
typedef struct qraft_conf_change_single {
  qraft_conf_change_type change_type; /* field 1 */
  qraft_id node_id;                   /* field 2 */
} qraft_conf_change_single;

/* eraftpb.ConfChangeV2 */
typedef struct qraft_conf_change_v2 {
  qraft_conf_transition transition; /* field 1 */
  uint32_t changes_n;
  qraft_conf_change_single changes[QRAFT_CONF_CHANGES_MAX]; /* field 2 */
  qraft_slice context;                                      /* field 3 */
} qraft_conf_change_v2;

#ifdef __cplusplus
}
#endif
#endif
