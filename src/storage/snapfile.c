/*
 * snapfile.c: checksummed snapshot files, written to a temporary name,
 * synced, renamed, directory synced; read back chunk by chunk, each chunk
 * checked before its bytes are returned. See snapfile.h.
 */
#include "storage/snapfile.h"

#include "storage/codec.h"
#include "storage/fsutil.h"

#include <qraft/assert.h>
#include <qraft/crc32c.h>

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const uint8_t snap_magic[8] = {'Q', 'R', 'A', 'F', 'T', 'S', 'N', 'P'};
#define SNAP_FIXED 48u
#define SNAP_CHUNK_HEAD 8u
#define SNAP_CHUNK_MAX (64u << 20)

typedef struct snap_writer {
  qraft_snapshot_writer base;
  int fd;
  uint32_t chunk_bytes;
  uint32_t header_len;
  uint32_t data_crc;
  uint8_t *chunk; /* SNAP_CHUNK_HEAD + chunk_bytes */
  size_t chunk_n;
  uint64_t off; /* file offset of the next chunk */
  char dir[PATH_MAX];
  char tmp[PATH_MAX];
  char final[PATH_MAX];
} snap_writer;

typedef struct snap_reader {
  qraft_snapshot_reader base;
  int fd;
  uint32_t chunk_bytes;
  uint32_t data_crc;
  uint32_t crc_so_far;
  uint64_t off;      /* file offset of the next chunk */
  uint64_t consumed; /* data bytes read from the file */
  uint8_t *chunk;
  size_t chunk_len, chunk_pos;
  char path[PATH_MAX];
} snap_reader;

static uint32_t snap_header_len(const qraft_conf_state *c) {
  return (uint32_t)((SNAP_FIXED + qraft__conf_size(c) + 4 + 7) & ~(size_t)7);
}

void qraft__snapfile_name(char *buf, size_t size, uint64_t index,
                          uint64_t term) {
  snprintf(buf, size, "snap-%016" PRIx64 "-%016" PRIx64 ".snap", index, term);
}

bool qraft__snapfile_is_tmp(const char *name) {
  size_t n = strlen(name);
  return n >= 5 + 16 + 1 + 16 + 4 && strncmp(name, "snap-", 5) == 0 &&
         strcmp(name + n - 4, ".tmp") == 0;
}

bool qraft__snapfile_parse_name(const char *name, const char *suffix,
                                uint64_t *index, uint64_t *term) {
  char tail[16];
  int n = 0;
  if (strlen(name) != 5 + 16 + 1 + 16 + strlen(suffix)) {
    return false;
  }
  if (sscanf(name, "snap-%16" SCNx64 "-%16" SCNx64 "%15s%n", index, term, tail,
             &n) != 3) {
    return false;
  }
  return strcmp(tail, suffix) == 0 && (size_t)n == strlen(name);
}

static int snap_flush_chunk(snap_writer *sw, qraft_err *err) {
  if (sw->chunk_n == 0) {
    return 0;
  }
  uint8_t *c = sw->chunk;
  qraft__put32(c, (uint32_t)sw->chunk_n);
  uint32_t crc = qraft_crc32c(0, c, 4);
  crc = qraft_crc32c(crc, c + SNAP_CHUNK_HEAD, sw->chunk_n);
  qraft__put32(c + 4, crc);
  int rc = qraft__pwrite_all(sw->fd, c, SNAP_CHUNK_HEAD + sw->chunk_n, sw->off,
                             "snap.write");
  if (rc != 0) {
    return QRAFT_ERR(err, rc, "write snapshot %s at offset %" PRIu64, sw->tmp,
                     sw->off);
  }
  sw->off += SNAP_CHUNK_HEAD + sw->chunk_n;
  sw->chunk_n = 0;
  return 0;
}

static int snap_write(qraft_snapshot_writer *w, const void *data, size_t len,
                      qraft_err *err) {
  snap_writer *sw = (snap_writer *)w;
  const uint8_t *p = data;
  while (len > 0) {
    size_t room = sw->chunk_bytes - sw->chunk_n;
    size_t n = len < room ? len : room;
    memcpy(sw->chunk + SNAP_CHUNK_HEAD + sw->chunk_n, p, n);
    sw->chunk_n += n;
    sw->data_crc = qraft_crc32c(sw->data_crc, p, n);
    w->bytes += n;
    p += n;
    len -= n;
    if (sw->chunk_n == sw->chunk_bytes) {
      int rc = snap_flush_chunk(sw, err);
      if (rc != 0) {
        return rc;
      }
    }
  }
  return 0;
}

static void snap_writer_free(snap_writer *sw, bool remove_tmp) {
  if (sw->fd >= 0) {
    close(sw->fd);
  }
  if (remove_tmp) {
    unlink(sw->tmp);
  }
  free(sw->chunk);
  free(sw);
}

static void snap_abort(qraft_snapshot_writer *w) {
  snap_writer_free((snap_writer *)w, true);
}

static const qraft_snapshot_writer_ops snap_writer_ops = {
    .write = snap_write, .abort = snap_abort};

int qraft__snapfile_writer_open(const char *dir, const qraft_snapshot_meta *meta,
                                uint32_t chunk_bytes,
                                qraft_snapshot_writer **out, qraft_err *err) {
  const qraft_conf_state *c = &meta->conf_state;
  if (meta->index == 0) {
    return QRAFT_ERR(err, -EINVAL, "snapshot at index 0");
  }
  if (c->voters_n > QRAFT_CONF_NODES_MAX || c->learners_n > QRAFT_CONF_NODES_MAX ||
      c->voters_outgoing_n > QRAFT_CONF_NODES_MAX ||
      c->learners_next_n > QRAFT_CONF_NODES_MAX) {
    return QRAFT_ERR(err, -EINVAL, "snapshot configuration lists too long");
  }
  QRAFT_ASSERT(chunk_bytes > 0 && chunk_bytes <= SNAP_CHUNK_MAX);
  snap_writer *sw = calloc(1, sizeof *sw);
  if (sw == NULL) {
    return QRAFT_ERR(err, -ENOMEM, "snapshot writer");
  }
  sw->fd = -1;
  sw->chunk = malloc(SNAP_CHUNK_HEAD + chunk_bytes);
  if (sw->chunk == NULL) {
    snap_writer_free(sw, false);
    return QRAFT_ERR(err, -ENOMEM, "snapshot chunk of %u bytes", chunk_bytes);
  }
  sw->base.ops = &snap_writer_ops;
  sw->base.meta = *meta;
  sw->chunk_bytes = chunk_bytes;
  sw->header_len = snap_header_len(c);
  sw->off = sw->header_len;
  char name[QRAFT__SNAP_NAME_MAX];
  qraft__snapfile_name(name, sizeof name, meta->index, meta->term);
  snprintf(sw->dir, sizeof sw->dir, "%s", dir);
  snprintf(sw->final, sizeof sw->final, "%s/%s", dir, name);
  /* A name of its own: two writers of the same snapshot (the node's own
   * and one received from the leader) must never share a file, or one's
   * abort removes the file the other is about to rename. */
  static atomic_uint tmp_seq;
  snprintf(sw->tmp, sizeof sw->tmp, "%s/%.*s.%08x.tmp", dir,
           (int)(strlen(name) - 5), name, atomic_fetch_add(&tmp_seq, 1));
  sw->fd = open(sw->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (sw->fd < 0) {
    int rc = -errno;
    snap_writer_free(sw, false);
    return QRAFT_ERR(err, rc, "create %s", sw->tmp);
  }
  *out = &sw->base;
  return 0;
}

int qraft__snapfile_finish(qraft_snapshot_writer *w, bool *sync_failed,
                           qraft_err *err) {
  snap_writer *sw = (snap_writer *)w;
  *sync_failed = false;
  int rc = snap_flush_chunk(sw, err);
  if (rc != 0) {
    goto err_free;
  }
  uint8_t head[SNAP_FIXED + QRAFT__CONF_SIZE_MAX + 12];
  memset(head, 0, sizeof head);
  memcpy(head, snap_magic, 8);
  qraft__put32(head + 8, QRAFT__SNAP_VERSION);
  qraft__put32(head + 12, sw->header_len);
  qraft__put64(head + 16, w->meta.index);
  qraft__put64(head + 24, w->meta.term);
  qraft__put64(head + 32, w->bytes);
  qraft__put32(head + 40, sw->chunk_bytes);
  qraft__put32(head + 44, sw->data_crc);
  qraft__conf_encode(head + SNAP_FIXED, &w->meta.conf_state);
  qraft__put32(head + sw->header_len - 4,
               qraft_crc32c(0, head, sw->header_len - 4));
  rc = qraft__pwrite_all(sw->fd, head, sw->header_len, 0, "snap.write");
  if (rc != 0) {
    rc = QRAFT_ERR(err, rc, "write snapshot header %s", sw->tmp);
    goto err_free;
  }
  rc = qraft__fdatasync(sw->fd, "snap.fsync");
  if (rc != 0) {
    *sync_failed = true;
    rc = QRAFT_ERR(err, rc, "sync snapshot %s", sw->tmp);
    goto err_free;
  }
  if (rename(sw->tmp, sw->final) != 0) {
    rc = QRAFT_ERR(err, -errno, "rename %s", sw->tmp);
    goto err_free;
  }
  rc = qraft__fsync_dir(sw->dir);
  if (rc != 0) {
    *sync_failed = true;
    rc = QRAFT_ERR(err, rc, "sync directory %s", sw->dir);
    unlink(sw->final);
    snap_writer_free(sw, false);
    return rc;
  }
  snap_writer_free(sw, false);
  return 0;

err_free:
  snap_writer_free(sw, true);
  return rc;
}

/* ---- reading ---- */

static int snap_read(qraft_snapshot_reader *r, void *buf, size_t cap,
                     size_t *out_n, qraft_err *err) {
  snap_reader *sr = (snap_reader *)r;
  *out_n = 0;
  uint8_t *dst = buf;
  while (*out_n < cap) {
    if (sr->chunk_pos == sr->chunk_len) {
      if (sr->consumed == r->bytes) {
        break;
      }
      uint8_t h[SNAP_CHUNK_HEAD];
      ssize_t n = qraft__pread_all(sr->fd, h, sizeof h, sr->off);
      if (n < 0) {
        return QRAFT_ERR(err, (int)n, "read %s at offset %" PRIu64, sr->path,
                         sr->off);
      }
      uint32_t len = n == (ssize_t)sizeof h ? qraft__get32(h) : 0;
      uint64_t left = r->bytes - sr->consumed;
      if (len == 0 || len > sr->chunk_bytes || len > left) {
        return QRAFT_ERR(err, QRAFT_ECORRUPT,
                         "snapshot %s: bad chunk length %u at offset %" PRIu64,
                         sr->path, len, sr->off);
      }
      n = qraft__pread_all(sr->fd, sr->chunk, len, sr->off + sizeof h);
      if (n < 0) {
        return QRAFT_ERR(err, (int)n, "read %s at offset %" PRIu64, sr->path,
                         sr->off);
      }
      uint32_t crc = qraft_crc32c(0, h, 4);
      crc = qraft_crc32c(crc, sr->chunk, (size_t)n);
      if ((size_t)n != len || crc != qraft__get32(h + 4)) {
        return QRAFT_ERR(err, QRAFT_ECORRUPT,
                         "snapshot %s: chunk at offset %" PRIu64
                         " fails its checksum",
                         sr->path, sr->off);
      }
      sr->crc_so_far = qraft_crc32c(sr->crc_so_far, sr->chunk, len);
      sr->consumed += len;
      if (sr->consumed == r->bytes && sr->crc_so_far != sr->data_crc) {
        return QRAFT_ERR(err, QRAFT_ECORRUPT,
                         "snapshot %s: data fails its checksum", sr->path);
      }
      sr->off += sizeof h + len;
      sr->chunk_len = len;
      sr->chunk_pos = 0;
    }
    size_t n = sr->chunk_len - sr->chunk_pos;
    if (n > cap - *out_n) {
      n = cap - *out_n;
    }
    memcpy(dst + *out_n, sr->chunk + sr->chunk_pos, n);
    sr->chunk_pos += n;
    *out_n += n;
  }
  return 0;
}

static void snap_reader_close(qraft_snapshot_reader *r) {
  snap_reader *sr = (snap_reader *)r;
  if (sr->fd >= 0) {
    close(sr->fd);
  }
  free(sr->chunk);
  free(sr);
}

static const qraft_snapshot_reader_ops snap_reader_ops = {
    .read = snap_read, .close = snap_reader_close};

int qraft__snapfile_reader_open(const char *path, const qraft_snapshot_meta *want,
                                qraft_snapshot_reader **out, qraft_err *err) {
  snap_reader *sr = calloc(1, sizeof *sr);
  if (sr == NULL) {
    return QRAFT_ERR(err, -ENOMEM, "snapshot reader");
  }
  sr->base.ops = &snap_reader_ops;
  snprintf(sr->path, sizeof sr->path, "%s", path);
  int rc;
  sr->fd = open(path, O_RDONLY | O_CLOEXEC);
  if (sr->fd < 0) {
    rc = QRAFT_ERR(err, -errno, "open %s", path);
    goto err_free;
  }
  uint8_t head[SNAP_FIXED + QRAFT__CONF_SIZE_MAX + 12];
  ssize_t n = qraft__pread_all(sr->fd, head, sizeof head, 0);
  if (n < 0) {
    rc = QRAFT_ERR(err, (int)n, "read %s", path);
    goto err_free;
  }
  if (n < (ssize_t)SNAP_FIXED || memcmp(head, snap_magic, 8) != 0) {
    rc = QRAFT_ERR(err, QRAFT_ECORRUPT, "snapshot %s: bad magic at offset 0",
                   path);
    goto err_free;
  }
  uint32_t hlen = qraft__get32(head + 12);
  if (hlen < SNAP_FIXED + 24 + 4 || hlen > (uint32_t)n || hlen % 8 != 0 ||
      qraft_crc32c(0, head, hlen - 4) != qraft__get32(head + hlen - 4)) {
    rc = QRAFT_ERR(err, QRAFT_ECORRUPT,
                   "snapshot %s: header fails its checksum", path);
    goto err_free;
  }
  uint32_t version = qraft__get32(head + 8);
  if (version != QRAFT__SNAP_VERSION) {
    rc = QRAFT_ERR(err, QRAFT_EVERSION,
                   "snapshot %s: format version %u, this build reads %u", path,
                   version, QRAFT__SNAP_VERSION);
    goto err_free;
  }
  qraft_snapshot_meta *m = &sr->base.meta;
  m->index = qraft__get64(head + 16);
  m->term = qraft__get64(head + 24);
  sr->base.bytes = qraft__get64(head + 32);
  sr->chunk_bytes = qraft__get32(head + 40);
  sr->data_crc = qraft__get32(head + 44);
  if (qraft__conf_decode(head + SNAP_FIXED, hlen - 4 - SNAP_FIXED,
                         &m->conf_state) == 0 ||
      sr->chunk_bytes == 0 || sr->chunk_bytes > SNAP_CHUNK_MAX) {
    rc = QRAFT_ERR(err, QRAFT_ECORRUPT, "snapshot %s: bad header fields",
                   path);
    goto err_free;
  }
  if (want != NULL &&
      (want->index != m->index || want->term != m->term ||
       !qraft_conf_state_equal(&want->conf_state, &m->conf_state))) {
    rc = QRAFT_ERR(err, QRAFT_ECORRUPT,
                   "snapshot %s: holds %" PRIu64 "/%" PRIu64
                   ", the log names %" PRIu64 "/%" PRIu64,
                   path, m->index, m->term, want->index, want->term);
    goto err_free;
  }
  sr->chunk = malloc(sr->chunk_bytes);
  if (sr->chunk == NULL) {
    rc = QRAFT_ERR(err, -ENOMEM, "snapshot chunk");
    goto err_free;
  }
  sr->off = hlen;
  *out = &sr->base;
  return 0;

err_free:
  snap_reader_close(&sr->base);
  return rc;
}
