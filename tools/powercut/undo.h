/*
 * The undo log of one file, written by the power-cut shim (shim.c) and read
 * by qraft-powercut (powercut.c). One log per file, named for the file's
 * device, inode and birth time (so a reused inode never meets an old log):
 * UNDO/<dev>-<ino>-<btime_s>.<btime_ns>.undo.
 *
 * Layout (host byte order: written and read on the same machine): a header
 * of UNDO_HDR_BYTES, then records back to back. A record is struct
 * undo_rec, then `stored` old bytes, then the u32 UNDO_REC_END. A record
 * cut short (the process was killed while writing it, before the write it
 * describes) ends the log.
 *
 * Records before the header's valid_from were made durable by an fsync or
 * fdatasync and are ignored.
 */
#ifndef QRAFT_POWERCUT_UNDO_H
#define QRAFT_POWERCUT_UNDO_H

#include <stdint.h>

#define UNDO_MAGIC 0x55435051u   /* "QPCU" */
#define UNDO_REC_MAGIC 0x52435051u /* "QPCR" */
#define UNDO_REC_END 0x45435051u /* "QPCE" */
#define UNDO_HDR_BYTES 512u
#define UNDO_PATH_BYTES 400u
/* the granularity at which the disk keeps or loses a write */
#define UNDO_PAGE_BYTES 4096u

enum undo_kind {
  /* bytes [off, off+len) were overwritten (or the size changed, by
   * ftruncate or fallocate); the first `stored` of them are saved, the
   * rest lay beyond the old end of the file and read as zeros */
  UNDO_WRITE = 1,
  /* [off, off+len) was written through an O_SYNC/O_DSYNC descriptor or
   * flushed by sync_file_range: its pages are durable as they are now */
  UNDO_DURABLE = 2,
};

typedef struct undo_hdr {
  uint32_t magic;
  uint32_t version;
  uint64_t valid_from; /* offset of the first record not yet durable */
  uint64_t dev, ino;
  int64_t btime_s;
  uint32_t btime_ns;
  uint32_t pad;
  char path[UNDO_PATH_BYTES]; /* the file's path when the log began */
} undo_hdr;

typedef struct undo_rec {
  uint32_t magic;
  uint32_t kind;
  uint64_t off;
  uint64_t len;
  uint64_t stored;
  uint64_t old_size; /* the file's size before this change */
} undo_rec;

_Static_assert(sizeof(undo_hdr) <= UNDO_HDR_BYTES, "undo header fits");
_Static_assert(sizeof(undo_rec) == 40, "undo record has no padding");

#endif
