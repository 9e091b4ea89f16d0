/*
 * Backups of qraft-kv's state: the file format, its checks, and the
 * commands `snapshot info FILE` and `restore FILE ...` (`snapshot save` is
 * in client.c; the server side is GET /v1/snapshot in http.c).
 *
 * A backup file:
 *   header, 48 bytes: "QRKVBAK\0", format u32 (1), 0 u32, the cluster id
 *     u64, the index the state is at u64, when it was taken (Unix seconds)
 *     u64, 0 u64;
 *   the state: the bytes the state machine's snapshot carries (store.c:
 *     "QKV1", its index, then records db u8 (0 keys, 1 metadata, 0xff the
 *     end), key length u32, value length u32, key, value);
 *   trailer, 32 bytes: "QRKVEND\0", the state's length u64, the digest of
 *     its keys u64 (as GET /v1/digest computes it: FNV-1a over each key's
 *     key length u32, value length u32, key and value, in key order), the
 *     CRC-32C of the header and the state u32, 0 u32.
 * All integers little-endian. A file is whole only if its trailer is there,
 * its lengths agree and the CRC matches; the state's records are checked
 * one by one before anything is restored from it.
 */
#include "kv.h"

#include <qraft/crc32c.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <dirent.h>
#include <time.h>
#include <unistd.h>

void kv_backup_header(uint8_t out[KV_BACKUP_HEADER_BYTES], uint64_t cluster_id,
                      uint64_t index, uint64_t created) {
  memset(out, 0, KV_BACKUP_HEADER_BYTES);
  memcpy(out, "QRKVBAK", 8);
  kv_le_put(out + 8, KV_BACKUP_FORMAT, 4);
  kv_le_put(out + 16, cluster_id, 8);
  kv_le_put(out + 24, index, 8);
  kv_le_put(out + 32, created, 8);
}

void kv_backup_trailer(uint8_t out[KV_BACKUP_TRAILER_BYTES],
                       uint64_t state_bytes, uint64_t digest, uint32_t crc) {
  memset(out, 0, KV_BACKUP_TRAILER_BYTES);
  memcpy(out, "QRKVEND", 8);
  kv_le_put(out + 8, state_bytes, 8);
  kv_le_put(out + 16, digest, 8);
  kv_le_put(out + 24, crc, 4);
}

void kv_state_scan_init(kv_state_scan *sc, uint64_t index) {
  memset(sc, 0, sizeof *sc);
  sc->index = index;
  sc->need = 12; /* the state's own header first */
  sc->digest = KV_FNV_OFFSET;
}

void kv_state_scan_feed(kv_state_scan *sc, const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n && !sc->bad;) {
    if (sc->skip > 0) {
      size_t k = n - i < sc->skip ? n - i : (size_t)sc->skip;
      if (sc->hashing) {
        sc->digest = kv_fnv(sc->digest, p + i, k);
      }
      sc->skip -= k;
      i += k;
      continue;
    }
    if (sc->stage == 2) {
      sc->bad = true; /* bytes after the end record */
      break;
    }
    sc->h[sc->h_n++] = p[i++];
    if (sc->h_n < sc->need) continue;
    if (sc->stage == 0) {
      if (kv_le_get(sc->h, 4) != KV_SNAP_MAGIC || kv_le_get(sc->h + 4, 8) > sc->index) {
        sc->bad = true;
      }
      sc->stage = 1;
      sc->need = 9;
    } else if (sc->h[0] == 0xff) {
      sc->bad = kv_le_get(sc->h + 1, 4) != 0 || kv_le_get(sc->h + 5, 4) != 0;
      sc->stage = 2;
    } else if (sc->h[0] > 1) {
      sc->bad = true;
    } else {
      sc->hashing = sc->h[0] == 0;
      if (sc->hashing) {
        sc->keys++;
        sc->digest = kv_fnv(sc->digest, sc->h + 1, 8); /* the lengths */
      }
      sc->skip = kv_le_get(sc->h + 1, 4) + kv_le_get(sc->h + 5, 4);
    }
    sc->h_n = 0;
  }
}

bool kv_state_scan_done(const kv_state_scan *sc) {
  return !sc->bad && sc->stage == 2 && sc->skip == 0 && sc->h_n == 0;
}

/* Reads exactly n bytes at the current offset; 0, or -1 (short or error). */
static int read_all(int fd, void *p, size_t n) {
  uint8_t *q = p;
  while (n > 0) {
    ssize_t r = read(fd, q, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    q += r;
    n -= (size_t)r;
  }
  return 0;
}

int kv_backup_verify(const char *path, kv_backup_info *info, char *msg,
                     size_t n) {
  memset(info, 0, sizeof *info);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    snprintf(msg, n, "%s: %s", path, strerror(errno));
    return -1;
  }
  struct stat st;
  uint8_t h[KV_BACKUP_HEADER_BYTES], t[KV_BACKUP_TRAILER_BYTES];
  int rv = -1;
  if (fstat(fd, &st) != 0) {
    snprintf(msg, n, "%s: %s", path, strerror(errno));
    goto out;
  }
  if ((uint64_t)st.st_size < KV_BACKUP_HEADER_BYTES + KV_BACKUP_TRAILER_BYTES + 12) {
    snprintf(msg, n, "%s: not a qraft-kv backup (%lld bytes: too short)", path,
             (long long)st.st_size);
    goto out;
  }
  if (read_all(fd, h, sizeof h) != 0 || memcmp(h, "QRKVBAK", 8) != 0) {
    snprintf(msg, n, "%s: not a qraft-kv backup (no header)", path);
    goto out;
  }
  info->format = (uint32_t)kv_le_get(h + 8, 4);
  if (info->format != KV_BACKUP_FORMAT) {
    snprintf(msg, n,
             "%s: backup format %u; this qraft-kv reads format %u", path,
             info->format, KV_BACKUP_FORMAT);
    goto out;
  }
  info->cluster_id = kv_le_get(h + 16, 8);
  info->index = kv_le_get(h + 24, 8);
  info->created = kv_le_get(h + 32, 8);
  uint64_t state_bytes = (uint64_t)st.st_size - KV_BACKUP_HEADER_BYTES -
                         KV_BACKUP_TRAILER_BYTES;
  if (pread(fd, t, sizeof t, st.st_size - (off_t)sizeof t) != (ssize_t)sizeof t ||
      memcmp(t, "QRKVEND", 8) != 0) {
    snprintf(msg, n, "%s: truncated or corrupt backup (no trailer at its end)",
             path);
    goto out;
  }
  if (kv_le_get(t + 8, 8) != state_bytes) {
    snprintf(msg, n,
             "%s: truncated or corrupt backup (its trailer says %" PRIu64
             " bytes of state, the file holds %" PRIu64 ")",
             path, kv_le_get(t + 8, 8), state_bytes);
    goto out;
  }
  /* the CRC over the header and the state, and the records one by one */
  uint32_t crc = qraft_crc32c(0, h, sizeof h);
  size_t cap = 1 << 20;
  uint8_t *buf = malloc(cap);
  if (buf == NULL) {
    snprintf(msg, n, "%s: out of memory", path);
    goto out;
  }
  uint64_t left = state_bytes;
  kv_state_scan sc;
  kv_state_scan_init(&sc, info->index);
  while (left > 0 && !sc.bad) {
    size_t want = left < cap ? (size_t)left : cap;
    if (read_all(fd, buf, want) != 0) {
      snprintf(msg, n, "%s: read failed", path);
      free(buf);
      goto out;
    }
    crc = qraft_crc32c(crc, buf, want);
    left -= want;
    kv_state_scan_feed(&sc, buf, want);
  }
  free(buf);
  if (!sc.bad && crc != (uint32_t)kv_le_get(t + 24, 4)) {
    snprintf(msg, n,
             "%s: corrupt backup: checksum mismatch (CRC-32C %08x, the "
             "trailer says %08x)",
             path, crc, (unsigned)kv_le_get(t + 24, 4));
    goto out;
  }
  if (!kv_state_scan_done(&sc)) {
    snprintf(msg, n, "%s: corrupt backup: the state's records do not parse",
             path);
    goto out;
  }
  if (sc.digest != kv_le_get(t + 16, 8)) {
    snprintf(msg, n,
             "%s: corrupt backup: the keys' digest is %016" PRIx64
             ", the trailer says %016" PRIx64,
             path, sc.digest, kv_le_get(t + 16, 8));
    goto out;
  }
  info->state_bytes = state_bytes;
  info->keys = sc.keys;
  info->digest = sc.digest;
  info->crc = crc;
  rv = 0;
out:
  close(fd);
  return rv;
}

/* ---- restore ---- */

typedef struct file_src {
  int fd;
  uint64_t left; /* state bytes not yet read */
} file_src;

static int file_src_read(void *ctx, void *buf, size_t cap, size_t *got) {
  file_src *f = ctx;
  size_t want = f->left < cap ? (size_t)f->left : cap;
  *got = 0;
  if (want == 0) return 0;
  ssize_t r;
  do {
    r = read(f->fd, buf, want);
  } while (r < 0 && errno == EINTR);
  if (r < 0) return -errno;
  *got = (size_t)r;
  f->left -= (uint64_t)r;
  return 0;
}

static bool dir_empty_or_missing(const char *dir) {
  DIR *d = opendir(dir);
  if (d == NULL) return errno == ENOENT;
  struct dirent *e;
  bool empty = true;
  while ((e = readdir(d)) != NULL && empty) {
    empty = strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0;
  }
  closedir(d);
  return empty;
}

static int restore_usage(void) {
  fprintf(stderr,
          "usage: qraft-kv restore FILE --data DIR --key KEYFILE\n"
          "         --bootstrap ID@HOST:PORT,ID@HOST:PORT,...\n"
          "         [--cluster-id N] [--map-size SIZE]\n"
          "  Seeds DIR (missing or empty) with the backup FILE for one of the\n"
          "  founding members of a new cluster: run it on each with the same\n"
          "  FILE and --bootstrap list, then 'qraft-kv serve --data DIR ...'\n"
          "  (no --bootstrap). The new cluster's id is derived from the\n"
          "  backup and the members (or --cluster-id): members of the old\n"
          "  cluster are refused by it. The file is checked whole first; a\n"
          "  corrupt or truncated one is refused and DIR is left untouched.\n");
  return 2;
}

/* The new cluster's id: FNV-1a over the old id, the index and the
 * members' keys, never 0 nor the old id. */
static uint64_t new_cluster_id(const kv_backup_info *info,
                               const qraft_node_addr *m, size_t n) {
  uint8_t b[16];
  kv_le_put(b, info->cluster_id, 8);
  kv_le_put(b + 8, info->index, 8);
  uint64_t h = kv_fnv(KV_FNV_OFFSET, b, sizeof b);
  for (size_t k = 0; k < n; k++) {
    h = kv_fnv(h, m[k].id.bytes, sizeof m[k].id.bytes);
  }
  if (h == 0 || h == info->cluster_id) h ^= 0x5bd1e995ull;
  return h;
}

int kv_restore_main(int argc, char **argv) {
  const char *file = NULL, *data = NULL, *keyfile = NULL, *bootstrap = NULL;
  uint64_t cluster_id = 0, map_bytes = 0;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (a[0] != '-' && file == NULL) {
      file = a;
      continue;
    }
    if (v == NULL) return restore_usage();
    i++;
    if (strcmp(a, "--data") == 0) data = v;
    else if (strcmp(a, "--key") == 0) keyfile = v;
    else if (strcmp(a, "--bootstrap") == 0) bootstrap = v;
    else if (strcmp(a, "--cluster-id") == 0) {
      char *e = NULL;
      cluster_id = strtoull(v, &e, 0);
      if (e == v || *e != 0 || cluster_id == 0) return restore_usage();
    } else if (strcmp(a, "--map-size") == 0) {
      if (kv_parse_size(v, &map_bytes) != 0 || map_bytes < (1u << 20)) {
        fprintf(stderr, "qraft-kv: bad --map-size %s\n", v);
        return 2;
      }
    } else return restore_usage();
  }
  if (file == NULL || data == NULL || keyfile == NULL || bootstrap == NULL) {
    return restore_usage();
  }
  char msg[600];
  kv_backup_info info;
  if (kv_backup_verify(file, &info, msg, sizeof msg) != 0) {
    fprintf(stderr, "qraft-kv: restore refused: %s; %s is untouched\n", msg,
            data);
    return 1;
  }
  qraft_node_addr members[QRAFT_NODE_MEMBERS_MAX];
  size_t mn = 0;
  if (kv_parse_members(bootstrap, NULL, 0, false, members, &mn) != 0) return 2;
  qraft_err err;
  qraft_err_init(&err, 0);
  qraft_secret_key key;
  if (qraft_secret_key_load(&key, keyfile, &err) != 0) {
    qraft_err_print(&err, stderr);
    return 1;
  }
  bool self = false;
  for (size_t i = 0; i < mn; i++) {
    self = self || memcmp(&members[i].id, &key.public_key, sizeof key.public_key) == 0;
  }
  if (!self) {
    fprintf(stderr, "qraft-kv: restore: the key %s is not among the "
                    "--bootstrap members\n", keyfile);
    return 2;
  }
  if (!dir_empty_or_missing(data)) {
    fprintf(stderr, "qraft-kv: restore refused: %s is not empty (restore "
                    "seeds a new member's data only)\n", data);
    return 1;
  }
  if (cluster_id == 0) cluster_id = new_cluster_id(&info, members, mn);
  if (cluster_id == info.cluster_id) {
    fprintf(stderr, "qraft-kv: restore: --cluster-id %016llx is the backup's "
                    "own cluster: the new cluster needs another id, so that "
                    "members of the old one are refused\n",
            (unsigned long long)cluster_id);
    return 2;
  }
  char kvdir[1024], raftdir[1024];
  snprintf(kvdir, sizeof kvdir, "%s/kv", data);
  snprintf(raftdir, sizeof raftdir, "%s/raft", data);
  if ((mkdir(data, 0700) != 0 && errno != EEXIST)) {
    fprintf(stderr, "qraft-kv: mkdir %s: %s\n", data, strerror(errno));
    return 1;
  }
  kv_store *store = NULL;
  if (kv_store_open(kvdir, 100, map_bytes, &store, msg, sizeof msg) != 0) {
    fprintf(stderr, "qraft-kv: %s\n", msg);
    return 1;
  }
  qraft_node_config cfg;
  qraft_node_config_default(&cfg);
  cfg.data_dir = raftdir;
  cfg.key = &key;
  cfg.cluster_id = cluster_id;
  cfg.bind_n = 1;
  for (size_t i = 0; i < mn; i++) {
    if (memcmp(&members[i].id, &key.public_key, sizeof key.public_key) == 0) {
      memcpy(&cfg.bind[0], &members[i].addrs[0], sizeof cfg.bind[0]);
    }
  }
  cfg.sm = kv_store_ops();
  cfg.sm_ud = store;
  /* the node first, on an empty store and an empty state; then the state
   * from the file; then the log starts at its index */
  qraft_node *node = NULL;
  int rv = qraft_node_new(&cfg, &node, &err);
  if (rv != 0) {
    qraft_err_print(&err, stderr);
    kv_store_close(store);
    fprintf(stderr, "qraft-kv: restore failed; remove %s before trying "
                    "again\n", data);
    return 1;
  }
  int fd = open(file, O_RDONLY | O_CLOEXEC);
  file_src src = {.fd = fd, .left = info.state_bytes};
  rv = fd < 0 ? -errno
                  : lseek(fd, KV_BACKUP_HEADER_BYTES, SEEK_SET) < 0
                        ? -errno
                        : kv_store_ops()->restore(store, info.index,
                                                  file_src_read, &src);
  if (fd >= 0) close(fd);
  if (rv != 0) {
    fprintf(stderr, "qraft-kv: restore into %s failed: %s; remove %s before "
                    "trying again\n", kvdir, qraft_strerror(rv), data);
    qraft_node_free(node);
    kv_store_close(store);
    return 1;
  }
  /* the folder's cluster first: a crash before the bootstrap leaves a
   * folder a restart refuses to bootstrap (an empty log, a state at
   * index), never one of the wrong cluster */
  if (kv_data_meta_write(data, cluster_id, msg, sizeof msg) != 0) {
    fprintf(stderr, "qraft-kv: %s; remove %s before trying again\n", msg,
            data);
    qraft_node_free(node);
    kv_store_close(store);
    return 1;
  }
  rv = qraft_node_bootstrap_at(node, members, mn, info.index, &err);
  qraft_node_free(node);
  kv_store_close(store);
  if (rv != 0) {
    qraft_err_print(&err, stderr);
    fprintf(stderr, "qraft-kv: restore failed; remove %s before trying "
                    "again\n", data);
    return 1;
  }
  qraft_secret_key_wipe(&key);
  printf("qraft-kv: restored %" PRIu64 " keys at index %" PRIu64
         " into %s for a new cluster %016" PRIx64 " of %zu members (from "
         "cluster %016" PRIx64 "); start it with 'qraft-kv serve --data %s "
         "--key %s ...'\n",
         info.keys, info.index, data, cluster_id, mn, info.cluster_id, data,
         keyfile);
  return 0;
}

int kv_snapshot_info(const char *file, bool json) {
  char msg[600];
  kv_backup_info info;
  if (kv_backup_verify(file, &info, msg, sizeof msg) != 0) {
    fprintf(stderr, "qraft-kv: %s\n", msg);
    return 1;
  }
  char when[64] = "";
  time_t t = (time_t)info.created;
  struct tm tm;
  if (gmtime_r(&t, &tm) != NULL) strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
  if (json) {
    printf("{\"format\":%u,\"cluster_id\":\"%016" PRIx64 "\",\"index\":%" PRIu64
           ",\"keys\":%" PRIu64 ",\"digest\":\"%016" PRIx64
           "\",\"state_bytes\":%" PRIu64
           ",\"created\":\"%s\",\"crc32c\":\"%08x\"}\n",
           info.format, info.cluster_id, info.index, info.keys, info.digest,
           info.state_bytes, when, info.crc);
  } else {
    printf("%s: qraft-kv backup format %u, whole (CRC-32C %08x)\n"
           "cluster %016" PRIx64 ", index %" PRIu64 ", %" PRIu64
           " keys (digest %016" PRIx64 "), %" PRIu64
           " bytes of state, taken %s\n",
           file, info.format, info.crc, info.cluster_id, info.index,
           info.keys, info.digest, info.state_bytes, when);
  }
  return 0;
}
