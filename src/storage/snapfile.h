/*
 * snapfile.h: snapshot files of the WAL store.
 *
 * A snapshot is written to "<dir>/snap-<index>-<term>.<seq>.tmp" (a name
 * no other writer in the process uses, even for the same snapshot) in checksummed
 * chunks, then (qraft__snapfile_finish, on the WAL's writer thread) its
 * header is completed, the file synced, renamed to ".snap" and the directory
 * synced. Only then does the WAL record the snapshot; old snapshot files go
 * after that record is durable. Data is streamed, never held whole.
 *
 * Layout (little endian), see docs/storage.md:
 *   header: "QRAFTSNP", u32 version, u32 header_len, u64 index, u64 term,
 *           u64 data_bytes, u32 chunk_bytes, u32 data_crc, configuration,
 *           zero padding, u32 crc32c of the header before it
 *   chunks: u32 len, u32 crc32c(len, data), data   (until data_bytes)
 */
#ifndef QRAFT_STORAGE_SNAPFILE_H
#define QRAFT_STORAGE_SNAPFILE_H

#include <qraft/storage.h>

#include <limits.h>

#define QRAFT__SNAP_VERSION 1u
#define QRAFT__SNAP_NAME_MAX 64

/* "snap-<index 16 hex>-<term 16 hex>.snap" */
void qraft__snapfile_name(char *buf, size_t size, uint64_t index,
                          uint64_t term);

/* Whether `name` is a snapshot's temporary file (any writer's). */
bool qraft__snapfile_is_tmp(const char *name);

/* Parses a snapshot file name (".snap" or ".tmp" per `suffix`). */
bool qraft__snapfile_parse_name(const char *name, const char *suffix,
                                uint64_t *index, uint64_t *term);

/* Starts a snapshot file in `dir`. Returns 0 or -EINVAL, -ENOMEM, -errno. */
int qraft__snapfile_writer_open(const char *dir, const qraft_snapshot_meta *meta,
                                uint32_t chunk_bytes,
                                qraft_snapshot_writer **out, qraft_err *err);

/* Completes, syncs and publishes a snapshot file, and frees the writer
 * whatever happens (on failure the temporary file is removed).
 * `*sync_failed` tells whether a sync failed (the store must stop). Returns
 * 0 or -errno. */
int qraft__snapfile_finish(qraft_snapshot_writer *w, bool *sync_failed,
                           qraft_err *err);

/* Opens a published snapshot file and checks its header against `want`
 * (NULL: no check). Returns 0 or QRAFT_ECORRUPT, QRAFT_EVERSION, -errno. */
int qraft__snapfile_reader_open(const char *path, const qraft_snapshot_meta *want,
                                qraft_snapshot_reader **out, qraft_err *err);

#endif
