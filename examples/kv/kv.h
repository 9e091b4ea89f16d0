/*
 * qraft-kv: the declarations shared by the server (store.c, server.c,
 * http.c) and the client (client.c). One binary, both roles (main.c).
 */
#ifndef QRAFT_KV_H
#define QRAFT_KV_H

#include <qraft/log.h>
#include <qraft/node.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Limits on what a client may send. */
#define KV_KEY_BYTES_MAX 1024
#define KV_VALUE_BYTES_MAX (256 * 1024)
#define KV_BODY_BYTES_MAX (KV_VALUE_BYTES_MAX * 2 + 4096)
#define KV_LIST_LIMIT_MAX 10000
#define KV_CONNECTIONS_MAX 256
#define KV_CONNECTION_TIMEOUT_S 10
#define KV_REQUEST_TIMEOUT_MS 5000
_Static_assert(KV_BODY_BYTES_MAX > KV_VALUE_BYTES_MAX + KV_KEY_BYTES_MAX,
               "a body holds a key and a value");

/* ---- Commands (the payload of one Raft entry) ---- */

enum kv_op { KV_OP_PUT = 1, KV_OP_DEL = 2, KV_OP_CAS = 3, KV_OP_SETHTTP = 4 };
/* How a CAS (or a conditional delete) compares. */
enum kv_cmp { KV_CMP_NONE = 0, KV_CMP_REV = 1, KV_CMP_VALUE = 2,
              KV_CMP_ABSENT = 3 };
/* Result of applying a command (first byte of the result slice; a u64
 * revision follows, little-endian). */
enum kv_status { KV_OK = 0, KV_NOTFOUND = 1, KV_CMPFAIL = 2, KV_BADCMD = 3 };
#define KV_RESULT_BYTES 9

typedef struct kv_cmd {
  uint8_t op, cmp;
  const uint8_t *key, *value, *expect;
  uint32_t key_len, value_len, expect_len;
  uint64_t expect_rev;
} kv_cmd;

/* Encodes `c` into a malloc'd buffer; returns its length, 0 on no memory. */
size_t kv_cmd_encode(const kv_cmd *c, uint8_t **out);
/* Decodes a payload (pointers into it). Returns 0 or -1. */
int kv_cmd_decode(const uint8_t *p, size_t n, kv_cmd *c);

/* ---- The LMDB state machine (store.c) ---- */

typedef struct kv_store kv_store;

/* LMDB's map: an upper bound on the state's size, not space used (the file
 * grows with the data), but address space: mapped whole at open. 64 GiB
 * (1 TiB failed now and then under ThreadSanitizer, whose shadow memory
 * leaves fewer large free ranges). */
#define KV_MAP_BYTES_DEFAULT (64ull << 30)

/* Opens (creates) the state in LMDB under `dir` with a map of `map_bytes`
 * (0: KV_MAP_BYTES_DEFAULT) and starts its flusher, which commits what was
 * applied every `sync_ms` (0: as soon as it can). Returns 0, or -1 with a
 * message. */
int kv_store_open(const char *dir, uint32_t sync_ms, uint64_t map_bytes,
                  kv_store **out, char *msg, size_t msg_n);
/* The exit status of a member whose state's LMDB failed for a reason other
 * than space (EX_IOERR): a failed sync cannot be retried safely. */
#define KV_EXIT_STORAGE 74
/* LMDB reports a short write as EIO: with less than this free on the
 * state's file system it counts as no space (a state, not a crash). */
#define KV_NEARLY_FULL_BYTES (4ull << 20)

/* True while LMDB has no room (its map is full, or its file system): the
 * member takes no more entries into memory (apply says -ENOSPC, the node
 * retries), refuses writes (507) with `why`, and tries the commit again
 * every second. */
bool kv_store_full(kv_store *s, char *why, size_t n);
/* Watches the free space of the state's file system against `reserve`
 * bytes (0: no reserve) once a second, on the flusher's thread, and calls
 * fn (on that thread) when the store's alarm (no room, or below the
 * reserve) is raised or cleared, with what and where. While below the
 * reserve, kv_store_full is true too. */
typedef void (*kv_alarm_fn)(void *ud, bool raised, const char *why);
void kv_store_watch_space(kv_store *s, uint64_t reserve, kv_alarm_fn fn,
                          void *ud);
void kv_store_close(kv_store *s);
const qraft_sm_ops *kv_store_ops(void);
uint64_t kv_store_applied(kv_store *s);

typedef struct kv_counters {
  uint64_t puts, dels, cases, cas_failed, restores, restore_batches,
      restores_skipped,
      snapshots, entries_skipped, apply_refused;
  /* the flusher: commits, keys written, time in commits (us) */
  uint64_t flushes, flush_keys, flush_us_sum, flush_us_max;
  /* now: the index readers see, the index LMDB holds, the overlays */
  uint64_t applied, durable, overlay_keys, overlay_bytes;
  /* LMDB: the map, the bytes its pages use, flushes that found it full */
  uint64_t map_bytes, map_used_bytes, map_full;
  bool full;
} kv_counters;
void kv_store_counters(kv_store *s, kv_counters *out);

/* Reads a key; the value is copied into a malloc'd *val. Returns 0, 1 if
 * missing, -1 on error. */
int kv_store_get(kv_store *s, const char *key, size_t key_len, char **val,
                 size_t *val_len, uint64_t *rev);
/* Calls fn for up to `limit` keys starting with `prefix`, in order; sets
 * *more if there were more. Returns 0 or -1. */
typedef void (*kv_item_fn)(void *ud, const char *key, size_t key_len,
                           const char *val, size_t val_len, uint64_t rev);
int kv_store_list(kv_store *s, const char *prefix, size_t prefix_len,
                  size_t limit, kv_item_fn fn, void *ud, bool *more);
/* FNV-1a 64 over every key, revision and value, with the applied index
 * and key count of the same read transaction. */
int kv_store_digest(kv_store *s, uint64_t *digest, uint64_t *keys,
                    uint64_t *applied);
/* The HTTP address a member registered (meta "http/<hex id>"); 0 or 1. */
int kv_store_http_of(kv_store *s, const char *hex_id, char *out, size_t n);
/* The whole state as the node's snapshots carry it, in steps, from any
 * thread (a backup): a consistent view as of *index (an LMDB read
 * transaction: while it is open, for as long as the backup's client
 * reads, LMDB cannot reuse the pages it sees, and the file grows by what
 * is written meanwhile),
 * written about `budget` bytes a step (1 while more remains, 0 at the end,
 * or a negative code); kv_store_view_end releases it. */
int kv_store_view_begin(kv_store *s, uint64_t *index, void **view);
int kv_store_view_step(kv_store *s, void *view, size_t budget,
                       qraft_sm_write_fn write, void *wctx);
void kv_store_view_end(kv_store *s, void *view);

/* ---- The server (server.c) ---- */

typedef struct kv_server kv_server;

int kv_serve_main(int argc, char **argv);
/* A line of qraft-kv's own on stderr: "qraft-kv: TEXT" (a trailing newline
 * dropped), or with --log-format json a record of the default logger
 * ({"msg": TEXT, ...}); below the default logger's level: nothing, in
 * json mode only. */
void kv_log(qraft_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void kv_log_json(bool on);
/* The most caught-up voter other than this member, or 0: where leadership
 * goes by default (POST /v1/transfer, and a leader that stops). */
qraft_id kv_best_voter(const qraft_node_status *st);

/* ---- The HTTP front (http.c) ---- */

/* Serves the API on "host:port" in threads of libmicrohttpd's own; with a
 * token, every request must carry "Authorization: Bearer <token>". Returns
 * 0 or -1. */
/* HTTPS for the API: PEM text (copied); NULL cert_pem: plain HTTP. With
 * client_ca_pem, every request must come with a client certificate it
 * signed (401 otherwise). */
typedef struct kv_http_tls {
  const char *cert_pem, *key_pem, *client_ca_pem;
} kv_http_tls;
int kv_http_start(kv_server *srv, const char *hostport, const char *token,
                  const kv_http_tls *tls, void **daemon_out);
void kv_http_stop(void *daemon);

/* What http.c needs from the server. */
qraft_node *kv_server_node(kv_server *srv);
kv_store *kv_server_store(kv_server *srv);
uint64_t kv_server_cluster_id(kv_server *srv);

/* SIZE: bytes, or with a K, M, G or T suffix (powers of 1024). */
int kv_parse_size(const char *text, uint64_t *out);
/* "ID@HOST:PORT,..." into members (at most QRAFT_NODE_MEMBERS_MAX); says
 * what is wrong on stderr. */
int kv_parse_members(const char *list, const qraft_relay_addr *relays,
                     uint32_t relays_n, bool ids_ok, qraft_node_addr *members,
                     size_t *n_out);
/* "ID@HOST:PORT" of a relay. Returns 0 or -1. */
int kv_parse_relay(const char *text, qraft_relay_addr *out);
/* "HOST:PORT" ("[v6]:PORT") of an address. */
void kv_format_addr(const struct sockaddr_storage *sa, char *out, size_t n);

/* The data folder's format and cluster: DATA/qraft-kv.meta holds the
 * lines "qraft-kv data format N" and "cluster HEX". Format 1 is this
 * layout (DATA/raft: the node's log, DATA/kv: LMDB); a folder without the
 * file is of format 0 (written before it existed) and gets it at its next
 * start. read returns 0, 1 when there is no file, or -1 (msg says why). */
#define KV_DATA_META "qraft-kv.meta"
#define KV_DATA_FORMAT 1u
int kv_data_meta_read(const char *dir, uint32_t *format, uint64_t *cluster,
                      char *msg, size_t n);
int kv_data_meta_write(const char *dir, uint64_t cluster, char *msg,
                       size_t n);

/* ---- small shared pieces: little-endian integers, FNV-1a ---- */

/* The state machine's snapshot stream starts with this magic ("QKV1"). */
#define KV_SNAP_MAGIC 0x514b5631u
#define KV_FNV_OFFSET 0xcbf29ce484222325ull

static inline void kv_le_put(uint8_t *p, uint64_t v, int n) {
  for (int i = 0; i < n; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint64_t kv_le_get(const uint8_t *p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}
/* FNV-1a over n more bytes (the digest of GET /v1/digest, backups, ...). */
static inline uint64_t kv_fnv(uint64_t h, const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}

/* ---- backups (backup.c: the file format) ---- */

#define KV_BACKUP_FORMAT 1u
#define KV_BACKUP_HEADER_BYTES 48
#define KV_BACKUP_TRAILER_BYTES 32
typedef struct kv_backup_info {
  uint32_t format;
  uint64_t cluster_id, index, created, state_bytes, keys, digest;
  uint32_t crc;
} kv_backup_info;
void kv_backup_header(uint8_t out[KV_BACKUP_HEADER_BYTES], uint64_t cluster_id,
                      uint64_t index, uint64_t created);
void kv_backup_trailer(uint8_t out[KV_BACKUP_TRAILER_BYTES],
                       uint64_t state_bytes, uint64_t digest, uint32_t crc);
/* Parses a state stream (the records of store.c's snapshots) as it comes:
 * counts the keys and computes their digest as GET /v1/digest does. */
typedef struct kv_state_scan {
  uint64_t index, keys, digest, skip;
  uint8_t h[12];
  size_t h_n, need;
  int stage; /* 0 the state's header, 1 records, 2 after the end record */
  bool hashing, bad;
} kv_state_scan;
void kv_state_scan_init(kv_state_scan *sc, uint64_t index);
void kv_state_scan_feed(kv_state_scan *sc, const uint8_t *p, size_t n);
bool kv_state_scan_done(const kv_state_scan *sc);
/* Checks the whole file (header, trailer, CRC, every record); 0 and
 * *info, or -1 with msg naming the file and what is wrong. */
int kv_backup_verify(const char *path, kv_backup_info *info, char *msg,
                     size_t n);
/* qraft-kv restore FILE ...; qraft-kv snapshot info FILE */
int kv_restore_main(int argc, char **argv);
int kv_snapshot_info(const char *file, bool json);

/* ---- The client (client.c) ---- */

int kv_client_main(const char *cmd, int argc, char **argv);

/* ---- HTTPS, the client side (tls.c) ---- */
/* The CA that signed the members' certificates (NULL: the system's) and,
 * if the members ask for one, a client certificate and its key. Once per
 * process, before any https:// request; 0, or -1 with msg. */
int kv_tls_client_setup(const char *cacert, const char *cert, const char *key,
                        char *msg, size_t n);
/* A TLS session over the connected non-blocking socket fd to "host:port",
 * handshaken before the deadline and its certificate checked against the
 * CA and the host; NULL with msg on failure. */
void *kv_tls_client_open(int fd, const char *hostport, uint64_t deadline,
                         char *msg, size_t n);
ssize_t kv_tls_send(void *tls, const void *buf, size_t len); /* -1, errno EAGAIN */
ssize_t kv_tls_recv(void *tls, void *buf, size_t len);       /* 0 at the end */
bool kv_tls_pending(void *tls);
void kv_tls_close(void *tls); /* NULL is ignored */

/* A plain HTTP/1.1 request over a socket (Connection: close). `url` is
 * "http://host:port" (the path is separate). Returns the status code, or
 * -1 if the request may not have been sent (connect failed), or -2 if it
 * was sent and no complete answer came (outcome unknown). *body is
 * malloc'd (NUL-terminated) when a status is returned. */
int kv_http_request(const char *url, const char *method, const char *path,
                    const char *token, const char *body, int timeout_ms,
                    char **resp);

/* Parses "host:port" (IPv4, IPv6 in brackets, or a name) into a socket
 * address. Returns 0 or -1. */
int kv_parse_hostport(const char *text, struct sockaddr_storage *out);

uint64_t kv_now_ns(void);
/* Waits until fd is ready for `events` (poll's): 1, or 0 at the deadline
 * (kv_now_ns's clock), or -1. */
int kv_wait_fd(int fd, short events, uint64_t deadline_ns);

#endif
