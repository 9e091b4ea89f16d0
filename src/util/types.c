/* types.c: names of the eraftpb enums. */
#include <qraft/types.h>

static const char *const types_msg_names[] = {
    "MsgHup",           "MsgBeat",
    "MsgPropose",       "MsgAppend",
    "MsgAppendResponse", "MsgRequestVote",
    "MsgRequestVoteResponse", "MsgSnapshot",
    "MsgHeartbeat",     "MsgHeartbeatResponse",
    "MsgUnreachable",   "MsgSnapStatus",
    "MsgCheckQuorum",   "MsgTransferLeader",
    "MsgTimeoutNow",    "MsgReadIndex",
    "MsgReadIndexResp", "MsgRequestPreVote",
    "MsgRequestPreVoteResponse",
};
_Static_assert(sizeof types_msg_names / sizeof types_msg_names[0] ==
                   QRAFT_MSG_TYPE_MAX + 1,
               "a name for every message type");

const char *qraft_msg_type_name(qraft_msg_type type) {
  if ((unsigned)type > QRAFT_MSG_TYPE_MAX) {
    return "?";
  }
  return types_msg_names[type];
}

const char *qraft_entry_type_name(qraft_entry_type type) {
  switch (type) {
  case QRAFT_ENTRY_NORMAL:
    return "EntryNormal";
  case QRAFT_ENTRY_CONF_CHANGE:
    return "EntryConfChange";
  case QRAFT_ENTRY_CONF_CHANGE_V2:
    return "EntryConfChangeV2";
  }
  return "?";
}
