/*
 * fault.h: named fault points on the file operations of the WAL and the
 * snapshot files (SQLite's fault simulation, canonical/raft's fault.h).
 *
 * Each point counts the times it is reached. A test arms a point to fail
 * with a code after it has been reached `after` more times, for `times`
 * calls (0: forever), then asserts with qraft__fault_fired that it fired.
 * Points are process-wide; unarmed, a check costs one atomic load.
 *
 * The points: "wal.prepare" (writing a new segment), "wal.pwrite",
 * "wal.fdatasync", "snap.write", "snap.fsync", "dir.fsync".
 */
#ifndef QRAFT_STORAGE_FAULT_H
#define QRAFT_STORAGE_FAULT_H

#include <stdint.h>

/* Returns 0, or the armed code if point `name` is set to fail now. */
int qraft__fault(const char *name);

/* Arms `name`: reached `after` more times it fails with `code` (< 0) for
 * `times` calls (0: until disarmed). */
void qraft__fault_arm(const char *name, uint64_t after, int code,
                      uint64_t times);

/* How many times `name` failed since the last reset. */
uint64_t qraft__fault_fired(const char *name);

/* Disarms every point and clears the counts. */
void qraft__fault_reset(void);

#endif
