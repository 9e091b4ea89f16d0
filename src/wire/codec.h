/*
 * codec.h: the message codec's internal entry points, used by frame.c and
 * batcher.c. Internal to src/wire.
 */
#ifndef QRAFT_WIRE_CODEC_H
#define QRAFT_WIRE_CODEC_H

#include "pb.h"

#include <qraft/types.h>
#include <qraft/wire.h>

/* Writes the message (exactly qraft_wire_message_size(m) bytes) at p and
 * returns the end. */
uint8_t *qraft__wire_message_put(uint8_t *p, const qraft_message *m);

/* Counts the entries (field 7) of the Message in [p, end) and whether it
 * has a snapshot (field 9), checking its structure on the way. */
int qraft__wire_message_count(pb_dec *d, const uint8_t *p, const uint8_t *end,
                              size_t *entries_n, bool *has_snapshot);

/* Decodes the Message in [p, end) into m, which is zeroed except for
 * m->entries (room for the number of entries counted) and `snap` (a zeroed
 * slot for its snapshot, NULL if it has none). */
int qraft__wire_message_fill(pb_dec *d, const uint8_t *p, const uint8_t *end,
                             qraft_message *m, size_t entries_cap,
                             qraft_snapshot *snap);

/* limits, or the defaults if NULL; asserts they are valid. */
const qraft_wire_limits *qraft__wire_limits(const qraft_wire_limits *limits,
                                            qraft_wire_limits *storage);

#endif
