/*
 * quic.c: QUIC connections with TLS 1.3 raw public keys, on ngtcp2 0.12 and
 * GnuTLS 3.7.
 *
 * This is the only file that calls ngtcp2 or GnuTLS: moving to ngtcp2 1.x
 * (which renames the close-error and connection-statistics functions) is a
 * change here only. Pool, routing policy and the public API live in
 * endpoint.c. Nothing here touches the OS: datagrams, time, timers and
 * randomness come from the env.
 *
 * ngtcp2 does not copy stream data: queued slices stay referenced until the
 * peer acknowledges them (acked_stream_data_offset).
 */
#include "transport_int.h"

#include <qraft/assert.h>

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <netinet/in.h>
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* TLS 1.3 only, Ed25519 signatures, raw public keys both ways, and no
 * middlebox compatibility mode (RFC 9001, section 8.4). */
#define TP_PRIORITY                                                            \
  "NORMAL:-VERS-ALL:+VERS-TLS1.3:-SIGN-ALL:+SIGN-EDDSA-ED25519:"               \
  "-CTYPE-ALL:+CTYPE-CLI-RAWPK:+CTYPE-SRV-RAWPK:%DISABLE_TLS13_COMPAT_MODE"

/* DER prefixes of an Ed25519 SubjectPublicKeyInfo (RFC 8410) and of a
 * PKCS #8 private key holding a seed. */
static const uint8_t spki_prefix[12] = {0x30, 0x2a, 0x30, 0x05, 0x06, 0x03,
                                        0x2b, 0x65, 0x70, 0x03, 0x21, 0x00};
static const uint8_t pkcs8_prefix[16] = {0x30, 0x2e, 0x02, 0x01, 0x00, 0x30,
                                         0x05, 0x06, 0x03, 0x2b, 0x65, 0x70,
                                         0x04, 0x22, 0x04, 0x20};

/* One vector per STREAM frame: ngtcp2 0.12 leaks retransmitted frames that
 * carry more than one (see docs/transport.md). Small sends are coalesced
 * into TP_COALESCE_BYTES buffers instead, so frames stay large. */
#define TP_STREAM_VECS 1
#define TP_COALESCE_MAX 1024
#define TP_COALESCE_BYTES 16384
#define TP_PKT_MAX 1452 /* 1500 minus IPv6 and UDP headers */
#define TP_CLOSE_RESENDS_MAX 8
/* Acknowledge every this many ack-eliciting packets (ngtcp2: 2), or after
 * max_ack_delay: fewer ACK datagrams on bulk transfers. */
#define TP_ACK_THRESH 8
#define TLS_ALERT_NO_APPLICATION_PROTOCOL 120

typedef struct tp_tls {
  gnutls_certificate_credentials_t cred;
  gnutls_priority_t prio;
} tp_tls;

typedef struct tp_stream {
  int64_t id;
  struct tp_stream *next;
  qraft_slice *chunks; /* queued, unacknowledged: chunks[head..n) */
  size_t head, n, cap;
  uint64_t head_off; /* stream offset of chunks[head] */
  uint64_t end_off;  /* offset after the last queued byte */
  uint64_t sent_off; /* handed to ngtcp2 up to here */
  bool fin_queued, fin_sent;
  bool tail_coalescing; /* the last chunk is ours and may grow */
  uint64_t pkt_gen; /* already offered to the packet being built */
} tp_stream;

struct tp_quic {
  ngtcp2_conn *conn;
  gnutls_session_t tls;
  ngtcp2_crypto_conn_ref ref;
  ngtcp2_cid odcid; /* server: the client's first destination id */
  tp_stream *streams;
  uint8_t *close_pkt;
  size_t close_len;
  unsigned close_resends;
  qraft_node_id expected; /* client: the id we dialed */
  uint64_t pkt_gen;
  uint64_t lost_closed; /* loss counts of streams gone */
  bool acked;           /* acked_cb owed to the handler */
  /* the stream whose bytes the handler is being given, and whether it
   * reset that stream meanwhile (uni_close_bug) */
  int64_t delivering;
  bool delivering_reset;
  /* What arrived while the connection was held (TP_HELD), in order, for
   * the handler once the connection is served. Bounded by the flow-control
   * windows: they are not extended until the bytes are delivered. */
  struct tp_held_ev *held_head, **held_tail;
};

/* Stream data (or a stream's close) that arrived on a held connection. */
typedef struct tp_held_ev {
  struct tp_held_ev *next;
  int64_t sid;
  bool closed; /* the stream closed (app_code); else data and fin */
  bool fin;
  uint64_t app_code;
  size_t len;
  uint8_t data[];
} tp_held_ev;

static bool held_push(tp_quic *q, int64_t sid, const uint8_t *data,
                      size_t len, bool fin, bool closed, uint64_t app_code) {
  tp_held_ev *ev = malloc(sizeof *ev + len);
  if (ev == NULL) {
    return false;
  }
  ev->next = NULL;
  ev->sid = sid;
  ev->closed = closed;
  ev->fin = fin;
  ev->app_code = app_code;
  ev->len = len;
  if (len > 0) {
    memcpy(ev->data, data, len);
  }
  if (q->held_tail == NULL) {
    q->held_tail = &q->held_head;
  }
  *q->held_tail = ev;
  q->held_tail = &ev->next;
  return true;
}

static void held_clear(tp_quic *q) {
  while (q->held_head != NULL) {
    tp_held_ev *ev = q->held_head;
    q->held_head = ev->next;
    free(ev);
  }
  q->held_tail = &q->held_head;
}

static tp_tls *tls_of(qraft_endpoint *ep) { return ep->tls; }

static socklen_t addr_len(const struct sockaddr_storage *a) {
  return a->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                  : sizeof(struct sockaddr_in);
}

static ngtcp2_tstamp now_ts(qraft_endpoint *ep) {
  return qraft_env_now_ns(ep->env);
}

static void conn_path(qraft_conn *c, ngtcp2_path *p) {
  p->local.addr = (ngtcp2_sockaddr *)&c->local;
  p->local.addrlen = addr_len(&c->local);
  p->remote.addr = (ngtcp2_sockaddr *)&c->remote;
  p->remote.addrlen = addr_len(&c->remote);
  p->user_data = NULL;
}

/* ---- endpoint-wide TLS ---- */

static int verify_cb(gnutls_session_t session);

int qraft__quic_ep_init(qraft_endpoint *ep, qraft_err *err) {
  tp_tls *t = calloc(1, sizeof *t);
  if (t == NULL) {
    return QRAFT_ERR(err, -ENOMEM, "TLS credentials");
  }
  int rv = gnutls_certificate_allocate_credentials(&t->cred);
  if (rv != 0) {
    free(t);
    return QRAFT_ERR(err, QRAFT_ETLS, "gnutls credentials: %s",
                     gnutls_strerror(rv));
  }
  uint8_t spki[44], pkcs8[48];
  memcpy(spki, spki_prefix, sizeof spki_prefix);
  memcpy(spki + 12, ep->key.public_key.bytes, QRAFT_KEY_BYTES);
  memcpy(pkcs8, pkcs8_prefix, sizeof pkcs8_prefix);
  memcpy(pkcs8 + 16, ep->key.seed, QRAFT_KEY_BYTES);
  gnutls_datum_t pub = {spki, sizeof spki}, priv = {pkcs8, sizeof pkcs8};
  rv = gnutls_certificate_set_rawpk_key_mem(t->cred, &pub, &priv,
                                            GNUTLS_X509_FMT_DER, NULL, 0,
                                            NULL, 0, 0);
  gnutls_memset(pkcs8, 0, sizeof pkcs8);
  if (rv != 0) {
    rv = QRAFT_ERR(err, QRAFT_ETLS, "load raw public key: %s",
                   gnutls_strerror(rv));
    goto err_free_cred;
  }
  gnutls_certificate_set_verify_function(t->cred, verify_cb);
  const char *errpos = NULL;
  rv = gnutls_priority_init(&t->prio, TP_PRIORITY, &errpos);
  if (rv != 0) {
    rv = QRAFT_ERR(err, QRAFT_ETLS, "priority string at \"%s\": %s",
                   errpos ? errpos : "?", gnutls_strerror(rv));
    goto err_free_cred;
  }
  /* Stateless reset tokens must be the same after a restart with the same
   * key, so the secret is derived from the key. */
  gnutls_hash_hd_t h;
  rv = gnutls_hash_init(&h, GNUTLS_DIG_SHA256);
  if (rv != 0) {
    rv = QRAFT_ERR(err, QRAFT_ETLS, "sha256: %s", gnutls_strerror(rv));
    goto err_free_prio;
  }
  gnutls_hash(h, "qraft stateless reset", 21);
  gnutls_hash(h, ep->key.seed, QRAFT_KEY_BYTES);
  gnutls_hash_deinit(h, ep->reset_secret);
  ep->tls = t;
  return 0;

err_free_prio:
  gnutls_priority_deinit(t->prio);
err_free_cred:
  gnutls_certificate_free_credentials(t->cred);
  free(t);
  return rv;
}

void qraft__quic_ep_close(qraft_endpoint *ep) {
  tp_tls *t = tls_of(ep);
  if (t == NULL) {
    return;
  }
  gnutls_priority_deinit(t->prio);
  gnutls_certificate_free_credentials(t->cred);
  free(t);
  ep->tls = NULL;
}

/* GnuTLS does not check a raw public key by itself: this does. Client: the
 * server's key must be the id we dialed. Server: record the client's id;
 * the authorization hook runs when the handshake completes. */
static int verify_cb(gnutls_session_t session) {
  ngtcp2_crypto_conn_ref *ref = gnutls_session_get_ptr(session);
  qraft_conn *c = ref->user_data;
  unsigned n = 0;
  const gnutls_datum_t *certs = gnutls_certificate_get_peers(session, &n);
  if (gnutls_certificate_type_get2(session, GNUTLS_CTYPE_PEERS) !=
          GNUTLS_CRT_RAWPK ||
      certs == NULL || n != 1 || certs[0].size != 44 ||
      memcmp(certs[0].data, spki_prefix, sizeof spki_prefix) != 0) {
    c->hs_fail = QRAFT_HS_FAIL_TLS;
    return -1;
  }
  qraft_node_id id;
  memcpy(id.bytes, certs[0].data + 12, QRAFT_KEY_BYTES);
  if (c->dialed) {
    if (!qraft_node_id_eq(&id, &c->q->expected)) {
      c->hs_fail = QRAFT_HS_FAIL_PEER_KEY;
      return -1;
    }
  }
  c->peer_id = id;
  c->peer_id_known = true;
  return 0;
}

static ngtcp2_conn *get_conn_cb(ngtcp2_crypto_conn_ref *ref) {
  qraft_conn *c = ref->user_data;
  return c->q->conn;
}

/* ---- streams ---- */

static tp_stream *stream_find(qraft_conn *c, int64_t id) {
  for (tp_stream *s = c->q->streams; s != NULL; s = s->next) {
    if (s->id == id) {
      return s;
    }
  }
  return NULL;
}

static tp_stream *stream_add(qraft_conn *c, int64_t id) {
  tp_stream *s = calloc(1, sizeof *s);
  if (s == NULL) {
    return NULL;
  }
  s->id = id;
  /* Append: the order streams were made is the order they share packets. */
  tp_stream **pp = &c->q->streams;
  while (*pp != NULL) {
    pp = &(*pp)->next;
  }
  *pp = s;
  return s;
}

uint64_t qraft__quic_stream_unacked(const qraft_conn *c, int64_t id) {
  if (c->q == NULL) {
    return 0;
  }
  for (const tp_stream *s = c->q->streams; s != NULL; s = s->next) {
    if (s->id == id) {
      return s->end_off - s->head_off;
    }
  }
  return 0;
}

static void stream_release_to(qraft_conn *c, tp_stream *s, uint64_t off) {
  while (s->head < s->n && s->head_off + s->chunks[s->head].len <= off) {
    size_t len = s->chunks[s->head].len;
    s->head_off += len;
    c->unacked_bytes -= len;
    qraft_slice_release(&s->chunks[s->head]);
    s->head++;
  }
  if (s->head == s->n) {
    s->head = s->n = 0;
    s->tail_coalescing = false;
  }
}

static void stream_free(qraft_conn *c, tp_stream *s) {
  for (size_t i = s->head; i < s->n; i++) {
    c->unacked_bytes -= s->chunks[i].len;
    qraft_slice_release(&s->chunks[i]);
  }
  free(s->chunks);
  free(s);
}

static void stream_remove(qraft_conn *c, int64_t id) {
  for (tp_stream **pp = &c->q->streams; *pp != NULL; pp = &(*pp)->next) {
    if ((*pp)->id == id) {
      tp_stream *s = *pp;
      *pp = s->next;
      if (c->q->conn != NULL) {
        c->q->lost_closed += ngtcp2_conn_get_stream_loss_count(c->q->conn, id);
      }
      stream_free(c, s);
      return;
    }
  }
}

static bool stream_pending(const tp_stream *s) {
  return s->sent_off < s->end_off || (s->fin_queued && !s->fin_sent);
}

/* ---- ngtcp2 callbacks ---- */

/* True while ngtcp2 creates a connection (see rand_cb). */
static _Thread_local bool tp_conn_new;

static void rand_cb(uint8_t *dest, size_t len, const ngtcp2_rand_ctx *ctx) {
  qraft_endpoint *ep = ctx->native_handle;
  qraft_env_random(ep->env, dest, len);
  if (tp_conn_new && len == 1) {
    /* ngtcp2 0.12 always offers to grease the fixed bit (RFC 9287), and a
     * new connection draws one random byte to decide whether to clear that
     * bit in what it sends: its low bit set means "clear". Probes share
     * our socket and are told apart from QUIC by that bit (qraft/probe.h),
     * so the draw always says "keep it"; nothing else in creating a
     * connection draws a single byte. ep_send checks every packet. */
    dest[0] &= 0xfe;
  }
}

static void make_cid(qraft_conn *c, ngtcp2_cid *cid) {
  uint8_t b[TP_CID_LEN];
  memcpy(b, &c->tag, 4);
  qraft_env_random(c->ep->env, b + 4, sizeof b - 4);
  ngtcp2_cid_init(cid, b, sizeof b);
}

static int get_new_cid_cb(ngtcp2_conn *conn, ngtcp2_cid *cid, uint8_t *token,
                          size_t cidlen, void *ud) {
  (void)conn;
  qraft_conn *c = ud;
  QRAFT_ASSERT(cidlen == TP_CID_LEN);
  make_cid(c, cid);
  if (ngtcp2_crypto_generate_stateless_reset_token(
          token, c->ep->reset_secret, sizeof c->ep->reset_secret, cid) != 0) {
    return NGTCP2_ERR_CALLBACK_FAILURE;
  }
  return 0;
}

/* Server: the handshake is complete, which for a server also confirms it. */
static int handshake_completed_cb(ngtcp2_conn *conn, void *ud) {
  qraft_conn *c = ud;
  if (!ngtcp2_conn_is_server(conn)) {
    return 0; /* a client waits for confirmation (HANDSHAKE_DONE) */
  }
  gnutls_datum_t alpn;
  if (gnutls_alpn_get_selected_protocol(c->q->tls, &alpn) != 0) {
    return NGTCP2_ERR_CALLBACK_FAILURE;
  }
  for (int i = 0; i < c->ep->protocols_n; i++) {
    const tp_protocol *p = &c->ep->protocols[i];
    if (p->alpn_len == alpn.size && memcmp(p->alpn, alpn.data, alpn.size) == 0) {
      c->proto = i;
    }
  }
  if (c->proto < 0 || !c->peer_id_known) {
    return NGTCP2_ERR_CALLBACK_FAILURE;
  }
  qraft__ep_conn_established(c);
  return 0;
}

/* Client: established only when the server confirmed the handshake: with
 * TLS 1.3 client authentication, a server's refusal arrives after the
 * client's own handshake completed. */
static int handshake_confirmed_cb(ngtcp2_conn *conn, void *ud) {
  qraft_conn *c = ud;
  if (ngtcp2_conn_is_server(conn) || c->state != TP_HANDSHAKE) {
    return 0;
  }
  qraft__ep_conn_established(c);
  return 0;
}

/* ngtcp2 before 0.14 never closes a stream the peer opened to send only
 * (fixed upstream by "Fix bug that a remote uni stream never be closed",
 * ngtcp2 commit 1d591bde): its stream_close callback never comes, so the
 * peer's stream budget (streams_max) would never be given back, and after
 * that many snapshot streams on one connection no other could open. With
 * such a version (Debian 12 ships 0.12.1), a peer's unidirectional stream
 * counts as closed here once its FIN was delivered or it was reset: the
 * budget is extended then, and a reset is reported to the handler as the
 * close. ngtcp2 keeps its small stream object until the connection ends.
 * The stream's user data records the state: NULL before its first bytes,
 * UNI_OPEN, then UNI_DONE. */
static char uni_open, uni_done;
#define UNI_OPEN ((void *)&uni_open)
#define UNI_DONE ((void *)&uni_done)

static bool uni_close_bug(void) {
  /* endpoints on several threads ask: the same answer, read atomically */
  static _Atomic int bug = -1;
  int b = atomic_load_explicit(&bug, memory_order_relaxed);
  if (b < 0) {
    const ngtcp2_info *v = ngtcp2_version(0);
    b = v != NULL && v->version_num < 0x000e00;
    atomic_store_explicit(&bug, b, memory_order_relaxed);
  }
  return b != 0;
}

static bool remote_uni(ngtcp2_conn *conn, int64_t stream_id) {
  return !ngtcp2_is_bidi_stream(stream_id) &&
         !ngtcp2_conn_is_local_stream(conn, stream_id);
}

static void uni_done_now(ngtcp2_conn *conn, int64_t stream_id) {
  ngtcp2_conn_set_stream_user_data(conn, stream_id, UNI_DONE);
  ngtcp2_conn_extend_max_streams_uni(conn, 1);
}

static int recv_stream_data_cb(ngtcp2_conn *conn, uint32_t flags,
                               int64_t stream_id, uint64_t offset,
                               const uint8_t *data, size_t datalen, void *ud,
                               void *stream_ud) {
  (void)offset;
  (void)stream_ud;
  qraft_conn *c = ud;
  /* 1-RTT stream data from the server proves it accepted us: the handshake
   * is confirmed even if HANDSHAKE_DONE was reordered behind this. */
  if (!ngtcp2_conn_is_server(conn) && c->state == TP_HANDSHAKE &&
      ngtcp2_conn_get_handshake_completed(conn)) {
    qraft__ep_conn_established(c);
  }
  c->bytes_in += datalen;
  bool fin = (flags & NGTCP2_STREAM_DATA_FLAG_FIN) != 0;
  bool track = uni_close_bug() && remote_uni(conn, stream_id) &&
               stream_ud != UNI_DONE;
  if (track && stream_ud == NULL) {
    ngtcp2_conn_set_stream_user_data(conn, stream_id, UNI_OPEN);
  }
  if (c->state == TP_HELD) {
    /* Kept for the handler, should this connection be served; the windows
     * open again when it gets the bytes (qraft__quic_held_deliver). */
    if (!held_push(c->q, stream_id, data, datalen,
                   (flags & NGTCP2_STREAM_DATA_FLAG_FIN) != 0, false, 0)) {
      return NGTCP2_ERR_CALLBACK_FAILURE;
    }
    return 0;
  }
  c->q->delivering = stream_id;
  c->q->delivering_reset = false;
  if (c->state == TP_UP && !c->close_pending) {
    const qraft_protocol_ops *ops = &c->ep->protocols[c->proto].ops;
    if (ops->stream_recv_cb != NULL) {
      ops->stream_recv_cb(c->ep->protocols[c->proto].ud, c, stream_id, data,
                          datalen, fin);
    }
  }
  c->q->delivering = -1;
  /* The handler consumed the bytes: open the windows again. */
  ngtcp2_conn_extend_max_stream_offset(conn, stream_id, datalen);
  ngtcp2_conn_extend_max_offset(conn, datalen);
  if (track && fin && !c->q->delivering_reset) {
    uni_done_now(conn, stream_id); /* a reset did it already */
  }
  return 0;
}

static int stream_closed(qraft_conn *c, int64_t stream_id, uint64_t code);

/* With ngtcp2 before 0.14: a peer's unidirectional stream reset after its
 * first bytes (ngtcp2 itself gives the budget back for one reset before
 * them, and calls this with no stream user data). */
static int stream_reset_cb(ngtcp2_conn *conn, int64_t stream_id,
                           uint64_t final_size, uint64_t app_error_code,
                           void *ud, void *stream_ud) {
  (void)final_size;
  if (!uni_close_bug() || !remote_uni(conn, stream_id) ||
      stream_ud == UNI_DONE) {
    return 0;
  }
  if (stream_ud == NULL &&
      ngtcp2_conn_set_stream_user_data(conn, stream_id, UNI_DONE) != 0) {
    return 0; /* no stream object: ngtcp2 gave the budget back itself */
  }
  /* (with no user data: a stream that had only out-of-order bytes) */
  uni_done_now(conn, stream_id);
  return stream_closed(ud, stream_id, app_error_code);
}

static int acked_cb(ngtcp2_conn *conn, int64_t stream_id, uint64_t offset,
                    uint64_t datalen, void *ud, void *stream_ud) {
  (void)conn;
  (void)stream_ud;
  qraft_conn *c = ud;
  tp_stream *s = stream_find(c, stream_id);
  if (s != NULL) {
    stream_release_to(c, s, offset + datalen);
    c->q->acked = true;
  }
  return 0;
}

static int stream_close_cb(ngtcp2_conn *conn, uint32_t flags,
                           int64_t stream_id, uint64_t app_error_code,
                           void *ud, void *stream_ud) {
  (void)stream_ud;
  qraft_conn *c = ud;
  if (!(flags & NGTCP2_STREAM_CLOSE_FLAG_APP_ERROR_CODE_SET)) {
    app_error_code = 0;
  }
  stream_remove(c, stream_id);
  c->q->acked = true;
  if (!ngtcp2_conn_is_local_stream(conn, stream_id) && stream_ud != UNI_DONE) {
    /* Let the peer open another one in its place. */
    if (ngtcp2_is_bidi_stream(stream_id)) {
      ngtcp2_conn_extend_max_streams_bidi(conn, 1);
    } else {
      ngtcp2_conn_extend_max_streams_uni(conn, 1);
    }
  }
  if (stream_ud == UNI_DONE) {
    return 0; /* reported when it was done */
  }
  return stream_closed(c, stream_id, app_error_code);
}

/* Tells the handler a stream is closed (or keeps that for it while the
 * connection is held). */
static int stream_closed(qraft_conn *c, int64_t stream_id,
                         uint64_t app_error_code) {
  if (c->state == TP_HELD &&
      !held_push(c->q, stream_id, NULL, 0, false, true, app_error_code)) {
    return NGTCP2_ERR_CALLBACK_FAILURE;
  }
  if (c->state == TP_UP) {
    const tp_protocol *p = &c->ep->protocols[c->proto];
    if (p->ops.stream_closed_cb != NULL) {
      p->ops.stream_closed_cb(p->ud, c, stream_id, app_error_code);
    }
  }
  return 0;
}

static int extend_max_stream_data_cb(ngtcp2_conn *conn, int64_t stream_id,
                                     uint64_t max_data, void *ud,
                                     void *stream_ud) {
  (void)conn;
  (void)stream_id;
  (void)max_data;
  (void)stream_ud;
  qraft__ep_mark_dirty(ud);
  return 0;
}

/* Set when a packet's payload decrypts: the AEAD proved it came from the
 * holder of the connection's keys. The path layer trusts a direct path
 * only on such a packet. (ngtcp2's decrypt callback has no user data; an
 * endpoint runs on one thread, so a thread-local flag is exact.) */
static _Thread_local bool tp_decrypted;

static int decrypt_cb(uint8_t *dest, const ngtcp2_crypto_aead *aead,
                      const ngtcp2_crypto_aead_ctx *aead_ctx,
                      const uint8_t *ciphertext, size_t ciphertextlen,
                      const uint8_t *nonce, size_t noncelen,
                      const uint8_t *aad, size_t aadlen) {
  int rv = ngtcp2_crypto_decrypt_cb(dest, aead, aead_ctx, ciphertext,
                                    ciphertextlen, nonce, noncelen, aad,
                                    aadlen);
  if (rv == 0) {
    tp_decrypted = true;
  }
  return rv;
}

static void callbacks_init(ngtcp2_callbacks *cb, bool server) {
  memset(cb, 0, sizeof *cb);
  if (server) {
    cb->recv_client_initial = ngtcp2_crypto_recv_client_initial_cb;
  } else {
    cb->client_initial = ngtcp2_crypto_client_initial_cb;
    cb->recv_retry = ngtcp2_crypto_recv_retry_cb;
  }
  cb->recv_crypto_data = ngtcp2_crypto_recv_crypto_data_cb;
  cb->encrypt = ngtcp2_crypto_encrypt_cb;
  cb->decrypt = decrypt_cb;
  cb->hp_mask = ngtcp2_crypto_hp_mask_cb;
  cb->update_key = ngtcp2_crypto_update_key_cb;
  cb->delete_crypto_aead_ctx = ngtcp2_crypto_delete_crypto_aead_ctx_cb;
  cb->delete_crypto_cipher_ctx = ngtcp2_crypto_delete_crypto_cipher_ctx_cb;
  cb->get_path_challenge_data = ngtcp2_crypto_get_path_challenge_data_cb;
  cb->version_negotiation = ngtcp2_crypto_version_negotiation_cb;
  cb->rand = rand_cb;
  cb->get_new_connection_id = get_new_cid_cb;
  cb->handshake_completed = handshake_completed_cb;
  cb->handshake_confirmed = handshake_confirmed_cb;
  cb->recv_stream_data = recv_stream_data_cb;
  cb->acked_stream_data_offset = acked_cb;
  cb->stream_close = stream_close_cb;
  cb->stream_reset = stream_reset_cb;
  cb->extend_max_stream_data = extend_max_stream_data_cb;
}

static void ngtcp2_log_cb(void *ud, const char *fmt, ...) {
  (void)ud;
  va_list ap;
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
}

static void settings_init(qraft_endpoint *ep, ngtcp2_settings *s,
                          ngtcp2_transport_params *p) {
  const qraft_endpoint_config *cfg = &ep->cfg;
  ngtcp2_settings_default(s);
  s->initial_ts = now_ts(ep);
  s->handshake_timeout = (uint64_t)cfg->handshake_timeout_ms * NGTCP2_MILLISECONDS;
  s->max_tx_udp_payload_size = TP_PKT_MAX;
  s->ack_thresh = TP_ACK_THRESH;
  s->max_window = cfg->conn_window_bytes * 4;
  s->max_stream_window = cfg->stream_window_bytes * 4;
  s->rand_ctx.native_handle = ep;
  if (getenv("QRAFT_NGTCP2_LOG") != NULL) {
    s->log_printf = ngtcp2_log_cb; /* debugging aid: ngtcp2's own trace */
  }
  ngtcp2_transport_params_default(p);
  p->initial_max_stream_data_bidi_local = cfg->stream_window_bytes;
  p->initial_max_stream_data_bidi_remote = cfg->stream_window_bytes;
  p->initial_max_stream_data_uni = cfg->stream_window_bytes;
  p->initial_max_data = cfg->conn_window_bytes;
  p->initial_max_streams_bidi = cfg->streams_max;
  p->initial_max_streams_uni = cfg->streams_max;
  p->max_idle_timeout = (uint64_t)cfg->idle_timeout_ms * NGTCP2_MILLISECONDS;
  p->max_ack_delay = (uint64_t)cfg->ack_delay_max_ms * NGTCP2_MILLISECONDS;
  /* Never grease the fixed bit (RFC 9287): probes share the socket, told
   * apart from QUIC by that bit (qraft/probe.h). ngtcp2 0.12 offers it
   * whatever this says; rand_cb keeps it from clearing the bit itself. */
  p->grease_quic_bit = 0;
}

/* ---- sessions ---- */

static int tls_session_new(qraft_conn *c, bool server) {
  qraft_endpoint *ep = c->ep;
  tp_quic *q = c->q;
  unsigned flags = (server ? GNUTLS_SERVER : GNUTLS_CLIENT) |
                   GNUTLS_ENABLE_RAWPK | GNUTLS_NO_END_OF_EARLY_DATA;
  if (gnutls_init(&q->tls, flags) != 0) {
    return QRAFT_ETLS;
  }
  int rv = gnutls_priority_set(q->tls, tls_of(ep)->prio);
  if (rv == 0) {
    rv = server ? ngtcp2_crypto_gnutls_configure_server_session(q->tls)
                : ngtcp2_crypto_gnutls_configure_client_session(q->tls);
  }
  if (rv == 0) {
    rv = gnutls_credentials_set(q->tls, GNUTLS_CRD_CERTIFICATE,
                                tls_of(ep)->cred);
  }
  if (rv != 0) {
    return QRAFT_ETLS;
  }
  q->ref.get_conn = get_conn_cb;
  q->ref.user_data = c;
  gnutls_session_set_ptr(q->tls, &q->ref);
  gnutls_datum_t alpns[TP_PROTOCOLS_MAX];
  unsigned alpns_n = 0;
  if (server) {
    gnutls_certificate_server_set_request(q->tls, GNUTLS_CERT_REQUIRE);
    for (int i = 0; i < ep->protocols_n; i++) {
      alpns[alpns_n].data = (unsigned char *)ep->protocols[i].alpn;
      alpns[alpns_n++].size = (unsigned)ep->protocols[i].alpn_len;
    }
  } else {
    const tp_protocol *p = &ep->protocols[c->proto];
    alpns[0].data = (unsigned char *)p->alpn;
    alpns[0].size = (unsigned)p->alpn_len;
    alpns_n = 1;
    char name[QRAFT_SERVER_NAME_SIZE];
    qraft_node_id_server_name(&q->expected, name);
    if (gnutls_server_name_set(q->tls, GNUTLS_NAME_DNS, name, strlen(name)) !=
        0) {
      return QRAFT_ETLS;
    }
  }
  /* Mandatory: a server without a handler for the client's ALPN fails the
   * handshake with no_application_protocol. */
  if (alpns_n == 0 ||
      gnutls_alpn_set_protocols(q->tls, alpns, alpns_n,
                                GNUTLS_ALPN_MANDATORY) != 0) {
    return QRAFT_ETLS;
  }
  return 0;
}

/* The TLS session and the settings both sides share, once the ngtcp2
 * connection exists. */
static int conn_tls_attach(qraft_endpoint *ep, qraft_conn *c, bool server) {
  int rv = tls_session_new(c, server);
  if (rv != 0) {
    return rv;
  }
  ngtcp2_conn_set_tls_native_handle(c->q->conn, c->q->tls);
  ngtcp2_conn_set_keep_alive_timeout(
      c->q->conn, (uint64_t)ep->cfg.keep_alive_ms * NGTCP2_MILLISECONDS);
  return 0;
}

static int quic_new(qraft_conn *c) {
  c->q = calloc(1, sizeof *c->q);
  if (c->q == NULL) {
    return -ENOMEM;
  }
  c->q->delivering = -1;
  return 0;
}

void qraft__quic_free(qraft_conn *c) {
  tp_quic *q = c->q;
  if (q == NULL) {
    return;
  }
  while (q->streams != NULL) {
    tp_stream *s = q->streams;
    q->streams = s->next;
    stream_free(c, s);
  }
  if (q->conn != NULL) {
    ngtcp2_conn_del(q->conn);
  }
  if (q->tls != NULL) {
    gnutls_deinit(q->tls);
  }
  held_clear(q);
  free(q->close_pkt);
  free(q);
  c->q = NULL;
}

int qraft__quic_dial(qraft_endpoint *ep, tp_peer *peer,
                     const struct sockaddr *to, qraft_conn **out) {
  qraft_env_udp *udp = NULL;
  if (qraft__path_is_vaddr(to) && ep->udp_n > 0) {
    udp = ep->udp[0]; /* the path layer picks the socket of each packet */
  }
  for (uint32_t i = 0; i < ep->udp_n && udp == NULL; i++) {
    if (ep->udp_addr[i].ss_family == to->sa_family) {
      udp = ep->udp[i];
      break;
    }
  }
  if (udp == NULL) {
    return -EAFNOSUPPORT;
  }
  qraft_conn *c;
  int rv = qraft__ep_conn_new(ep, true, &c);
  if (rv != 0) {
    return rv;
  }
  rv = quic_new(c);
  if (rv != 0) {
    goto err_free_conn;
  }
  c->udp = udp;
  c->proto = peer->proto;
  c->peer = peer;
  c->q->expected = peer->id;
  qraft_env_udp_local_addr(udp, &c->local);
  memset(&c->remote, 0, sizeof c->remote);
  memcpy(&c->remote, to,
         to->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                   : sizeof(struct sockaddr_in));
  ngtcp2_cid dcid, scid;
  uint8_t dcid_bytes[TP_CID_LEN];
  qraft_env_random(ep->env, dcid_bytes, sizeof dcid_bytes);
  ngtcp2_cid_init(&dcid, dcid_bytes, sizeof dcid_bytes);
  make_cid(c, &scid);
  ngtcp2_path path;
  conn_path(c, &path);
  ngtcp2_callbacks cbs;
  callbacks_init(&cbs, false);
  ngtcp2_settings settings;
  ngtcp2_transport_params params;
  settings_init(ep, &settings, &params);
  tp_conn_new = true;
  rv = ngtcp2_conn_client_new(&c->q->conn, &dcid, &scid, &path,
                              NGTCP2_PROTO_VER_V1, &cbs, &settings, &params,
                              NULL, c);
  tp_conn_new = false;
  if (rv != 0) {
    rv = QRAFT_EQUIC;
    goto err_free_conn;
  }
  rv = conn_tls_attach(ep, c, false);
  if (rv != 0) {
    goto err_free_conn;
  }
  qraft__ep_mark_dirty(c);
  *out = c;
  return 0;

err_free_conn:
  c->state = TP_DEAD;
  qraft__ep_conn_free(c);
  return rv;
}

static int accept_conn(qraft_endpoint *ep, qraft_env_udp *udp,
                       const struct sockaddr *from, const ngtcp2_pkt_hd *hd,
                       qraft_conn **out) {
  qraft_conn *c;
  int rv = qraft__ep_conn_new(ep, false, &c);
  if (rv != 0) {
    return rv;
  }
  rv = quic_new(c);
  if (rv != 0) {
    goto err_free_conn;
  }
  c->udp = udp;
  qraft_env_udp_local_addr(udp, &c->local);
  memset(&c->remote, 0, sizeof c->remote);
  memcpy(&c->remote, from,
         from->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                     : sizeof(struct sockaddr_in));
  c->q->odcid = hd->dcid;
  ngtcp2_cid scid;
  make_cid(c, &scid);
  ngtcp2_path path;
  conn_path(c, &path);
  ngtcp2_callbacks cbs;
  callbacks_init(&cbs, true);
  ngtcp2_settings settings;
  ngtcp2_transport_params params;
  settings_init(ep, &settings, &params);
  params.original_dcid = hd->dcid;
  params.stateless_reset_token_present = 1;
  if (ngtcp2_crypto_generate_stateless_reset_token(
          params.stateless_reset_token, ep->reset_secret,
          sizeof ep->reset_secret, &scid) != 0) {
    rv = QRAFT_EQUIC;
    goto err_free_conn;
  }
  tp_conn_new = true;
  rv = ngtcp2_conn_server_new(&c->q->conn, &hd->scid, &scid, &path,
                              hd->version, &cbs, &settings, &params, NULL, c);
  tp_conn_new = false;
  if (rv != 0) {
    rv = QRAFT_EQUIC;
    goto err_free_conn;
  }
  rv = conn_tls_attach(ep, c, true);
  if (rv != 0) {
    goto err_free_conn;
  }
  *out = c;
  return 0;

err_free_conn:
  c->state = TP_DEAD;
  qraft__ep_conn_free(c);
  return rv;
}

/* ---- ending ---- */

/* The reason of a TLS alert, for the handshake failure counters. */
static int hs_fail_of_alert(uint8_t alert) {
  return alert == TLS_ALERT_NO_APPLICATION_PROTOCOL ? QRAFT_HS_FAIL_ALPN
                                                    : QRAFT_HS_FAIL_TLS;
}

static void send_close_pkt(qraft_conn *c) {
  tp_quic *q = c->q;
  if (q->close_pkt != NULL && q->close_resends < TP_CLOSE_RESENDS_MAX) {
    q->close_resends++;
    qraft__ep_send(c->ep, c->udp, (struct sockaddr *)&c->remote, q->close_pkt,
                       q->close_len);
    c->packets_out++;
  }
}

/* Writes our CONNECTION_CLOSE, tells the endpoint, and waits out the closing
 * period (three PTOs) answering stray packets with the same close. */
static void close_with(qraft_conn *c, ngtcp2_connection_close_error *ccerr,
                       const qraft_close_info *why) {
  tp_quic *q = c->q;
  uint8_t buf[TP_PKT_MAX];
  ngtcp2_path_storage ps;
  ngtcp2_path_storage_zero(&ps);
  ngtcp2_pkt_info pi;
  ngtcp2_ssize n = ngtcp2_conn_write_connection_close(
      q->conn, &ps.path, &pi, buf, sizeof buf, ccerr, now_ts(c->ep));
  qraft__ep_conn_ended(c, why);
  if (n > 0) {
    q->close_pkt = malloc((size_t)n);
    if (q->close_pkt != NULL) {
      memcpy(q->close_pkt, buf, (size_t)n);
      q->close_len = (size_t)n;
      send_close_pkt(c);
    }
  }
  if (q->close_pkt == NULL || c->ep->shut_down) {
    c->state = TP_DEAD;
    return;
  }
  c->state = TP_CLOSING;
  qraft_env_timer_arm(c->timer,
                      now_ts(c->ep) + 3 * ngtcp2_conn_get_pto(q->conn));
}

void qraft__quic_close(qraft_conn *c, uint64_t app_code, const char *reason) {
  if (c->state == TP_CLOSING || c->state == TP_DEAD) {
    return;
  }
  if (c->busy > 0) {
    if (!c->close_pending) {
      c->close_pending = true;
      c->close_pending_code = app_code;
      snprintf(c->close_pending_reason, sizeof c->close_pending_reason, "%s",
               reason ? reason : "");
      qraft__ep_mark_dirty(c);
    }
    return;
  }
  ngtcp2_connection_close_error ccerr;
  size_t rlen = reason ? strlen(reason) : 0;
  ngtcp2_connection_close_error_set_application_error(
      &ccerr, app_code, (const uint8_t *)reason, rlen);
  qraft_close_info why = {.code = app_code == QRAFT_CLOSE_UNAUTHORIZED
                                      ? QRAFT_EAUTH
                                      : QRAFT_ECLOSED,
                          .app = true, .app_code = app_code};
  snprintf(why.reason, sizeof why.reason, "%s", reason ? reason : "");
  close_with(c, &ccerr, &why);
}

/* A local error from ngtcp2 (including TLS failures): close with the
 * matching transport error. */
static void fail(qraft_conn *c, int liberr) {
  ngtcp2_connection_close_error ccerr;
  qraft_close_info why = {0};
  if (liberr == NGTCP2_ERR_CRYPTO) {
    uint8_t alert = ngtcp2_conn_get_tls_alert(c->q->conn);
    ngtcp2_connection_close_error_set_transport_error_tls_alert(&ccerr, alert,
                                                                NULL, 0);
    why.code = c->hs_fail == QRAFT_HS_FAIL_PEER_KEY ? QRAFT_EAUTH : QRAFT_ETLS;
    if (c->hs_fail < 0) {
      c->hs_fail = hs_fail_of_alert(alert);
    }
    snprintf(why.reason, sizeof why.reason, "%s",
             c->hs_fail == QRAFT_HS_FAIL_PEER_KEY
                 ? "server key is not the dialed id"
                 : gnutls_alert_get_name((gnutls_alert_description_t)alert));
  } else {
    ngtcp2_connection_close_error_set_transport_error_liberr(&ccerr, liberr,
                                                             NULL, 0);
    why.code = QRAFT_EQUIC;
    snprintf(why.reason, sizeof why.reason, "%s", ngtcp2_strerror(liberr));
  }
  why.quic_code = ccerr.error_code;
  close_with(c, &ccerr, &why);
}

/* The connection ended without a close of ours: the peer closed it (we are
 * draining), a timeout, or a stateless reset. Freed right away: packets that
 * still arrive meet a stateless reset. */
static void ended_silently(qraft_conn *c, int liberr) {
  qraft_close_info why = {.remote = true};
  if (liberr == NGTCP2_ERR_IDLE_CLOSE || liberr == NGTCP2_ERR_HANDSHAKE_TIMEOUT) {
    why.code = QRAFT_ETIMEDOUT;
    why.remote = false;
    if (c->hs_fail < 0) {
      c->hs_fail = QRAFT_HS_FAIL_TIMEOUT;
    }
    snprintf(why.reason, sizeof why.reason, "%s",
             liberr == NGTCP2_ERR_IDLE_CLOSE ? "idle timeout"
                                             : "handshake timeout");
  } else {
    ngtcp2_connection_close_error ccerr_store;
    ngtcp2_conn_get_connection_close_error(c->q->conn, &ccerr_store);
    const ngtcp2_connection_close_error *ccerr = &ccerr_store;
    why.app = ccerr->type ==
              NGTCP2_CONNECTION_CLOSE_ERROR_CODE_TYPE_APPLICATION;
    if (why.app) {
      why.app_code = ccerr->error_code;
      why.code = why.app_code == QRAFT_CLOSE_UNAUTHORIZED ? QRAFT_EAUTH
                                                          : QRAFT_ECLOSED;
      if (c->hs_fail < 0 && why.app_code == QRAFT_CLOSE_UNAUTHORIZED) {
        c->hs_fail = QRAFT_HS_FAIL_UNAUTHORIZED;
      }
    } else {
      why.quic_code = ccerr->error_code;
      if (why.quic_code >= 0x100 && why.quic_code <= 0x1ff) {
        why.code = QRAFT_ETLS;
        if (c->hs_fail < 0) {
          c->hs_fail = hs_fail_of_alert((uint8_t)(why.quic_code - 0x100));
        }
      } else {
        why.code = why.quic_code == NGTCP2_NO_ERROR ? QRAFT_ECLOSED
                                                    : QRAFT_EQUIC;
      }
    }
    if (liberr != NGTCP2_ERR_DRAINING) {
      why.code = QRAFT_ECLOSED; /* stateless reset or a dropped connection */
      snprintf(why.reason, sizeof why.reason, "%s", ngtcp2_strerror(liberr));
    } else {
      size_t n = ccerr->reasonlen < sizeof why.reason - 1
                     ? ccerr->reasonlen
                     : sizeof why.reason - 1;
      if (n > 0) {
        memcpy(why.reason, ccerr->reason, n);
      }
      why.reason[n] = '\0';
    }
  }
  qraft__ep_conn_ended(c, &why);
  c->state = TP_DEAD;
}

/* After any call into ngtcp2: closes asked for meanwhile, acknowledgements
 * owed to the handler. */
static void after_call(qraft_conn *c) {
  if (c->state == TP_DEAD || c->state == TP_CLOSING) {
    return;
  }
  if (c->close_pending) {
    c->close_pending = false;
    qraft__quic_close(c, c->close_pending_code, c->close_pending_reason);
    return;
  }
  if (c->q->acked && c->state == TP_UP) {
    c->q->acked = false;
    const tp_protocol *p = &c->ep->protocols[c->proto];
    if (p->ops.acked_cb != NULL) {
      p->ops.acked_cb(p->ud, c, c->unacked_bytes);
    }
  }
}

/* A held connection was served (promoted): hand the handler what arrived
 * meanwhile, in order, and open the flow-control windows behind it. Without
 * this a stream's first bytes (the Raft handler's preamble) would be lost
 * while its later bytes arrive. */
void qraft__quic_held_deliver(qraft_conn *c) {
  tp_quic *q = c->q;
  if (q == NULL || q->held_head == NULL) {
    return;
  }
  const tp_protocol *p = &c->ep->protocols[c->proto];
  c->busy++;
  while (q->held_head != NULL && c->state == TP_UP && !c->close_pending) {
    tp_held_ev *ev = q->held_head;
    q->held_head = ev->next;
    if (q->held_head == NULL) {
      q->held_tail = &q->held_head;
    }
    if (ev->closed) {
      if (p->ops.stream_closed_cb != NULL) {
        p->ops.stream_closed_cb(p->ud, c, ev->sid, ev->app_code);
      }
    } else {
      q->delivering = ev->sid;
      q->delivering_reset = false;
      if (p->ops.stream_recv_cb != NULL) {
        p->ops.stream_recv_cb(p->ud, c, ev->sid, ev->data, ev->len, ev->fin);
      }
      q->delivering = -1;
      ngtcp2_conn_extend_max_stream_offset(q->conn, ev->sid, ev->len);
      ngtcp2_conn_extend_max_offset(q->conn, ev->len);
      if (ev->fin && uni_close_bug() && remote_uni(q->conn, ev->sid) &&
          !q->delivering_reset) {
        uni_done_now(q->conn, ev->sid);
      }
    }
    free(ev);
  }
  c->busy--;
  held_clear(q);
  after_call(c);
  if (c->state == TP_DEAD) {
    qraft__ep_conn_free(c);
    return;
  }
  qraft__ep_mark_dirty(c); /* the window updates go out */
}

/* ---- reading ---- */

/* The peer's address is the one of the connection's current path: ngtcp2
 * moves it there once a new path (the peer's NAT rebound it) is validated.
 * A connection of the path layer keeps its virtual address. */
static void follow_path(qraft_conn *c) {
  if (c->q == NULL || c->q->conn == NULL ||
      qraft__path_is_vaddr((const struct sockaddr *)&c->remote)) {
    return;
  }
  const ngtcp2_path *p = ngtcp2_conn_get_path(c->q->conn);
  if (p->remote.addrlen == 0 || p->remote.addrlen > sizeof c->remote ||
      qraft__sockaddr_eq((const struct sockaddr *)p->remote.addr,
                         (const struct sockaddr *)&c->remote)) {
    return;
  }
  memset(&c->remote, 0, sizeof c->remote);
  memcpy(&c->remote, p->remote.addr, p->remote.addrlen);
  c->ep->metrics.migrations++;
}

static void conn_read(qraft_conn *c, const struct sockaddr *from,
                      const uint8_t *data, size_t len) {
  c->packets_in++;
  if (c->state == TP_CLOSING) {
    send_close_pkt(c);
    return;
  }
  if (c->state == TP_DEAD) {
    return;
  }
  ngtcp2_path path;
  conn_path(c, &path);
  struct sockaddr_storage remote;
  memset(&remote, 0, sizeof remote);
  memcpy(&remote, from,
         from->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                     : sizeof(struct sockaddr_in));
  path.remote.addr = (ngtcp2_sockaddr *)&remote;
  ngtcp2_pkt_info pi = {0};
  c->busy++;
  tp_decrypted = false;
  int rv = ngtcp2_conn_read_pkt(c->q->conn, &path, &pi, data, len,
                                now_ts(c->ep));
  bool authenticated = tp_decrypted;
  c->busy--;
  if (rv != 0) {
    if (rv == NGTCP2_ERR_DRAINING || rv == NGTCP2_ERR_DROP_CONN ||
        rv == NGTCP2_ERR_IDLE_CLOSE || rv == NGTCP2_ERR_HANDSHAKE_TIMEOUT) {
      ended_silently(c, rv);
    } else if (rv == NGTCP2_ERR_CLOSING) {
      /* already closing */
    } else {
      fail(c, rv);
    }
  } else {
    after_call(c);
    if (authenticated) {
      qraft__path_authenticated(c);
    }
    follow_path(c);
  }
  if (c->state == TP_DEAD) {
    qraft__ep_conn_free(c);
    return;
  }
  qraft__ep_mark_dirty(c);
}

static qraft_conn *find_by_odcid(qraft_endpoint *ep, const uint8_t *dcid,
                                 size_t dcidlen, const struct sockaddr *from) {
  for (qraft_conn *c = ep->conns; c != NULL; c = c->next) {
    if (!c->dialed && c->q != NULL && c->q->odcid.datalen == dcidlen &&
        memcmp(c->q->odcid.data, dcid, dcidlen) == 0 &&
        qraft__sockaddr_eq((struct sockaddr *)&c->remote, from)) {
      return c;
    }
  }
  return NULL;
}

static void send_stateless_reset(qraft_endpoint *ep, qraft_env_udp *udp,
                                 const struct sockaddr *to,
                                 const uint8_t *dcid, size_t len) {
  /* Shorter than what we received, so two endpoints cannot loop; too short a
   * packet cannot be answered without giving the reset away. */
  if (len < 43) {
    return;
  }
  size_t out_len = len - 1 < 64 ? len - 1 : 64;
  ngtcp2_cid cid;
  ngtcp2_cid_init(&cid, dcid, TP_CID_LEN);
  uint8_t token[NGTCP2_STATELESS_RESET_TOKENLEN];
  if (ngtcp2_crypto_generate_stateless_reset_token(
          token, ep->reset_secret, sizeof ep->reset_secret, &cid) != 0) {
    return;
  }
  uint8_t rnd[64];
  size_t rnd_len = out_len - NGTCP2_STATELESS_RESET_TOKENLEN;
  qraft_env_random(ep->env, rnd, rnd_len);
  uint8_t buf[64];
  ngtcp2_ssize n = ngtcp2_pkt_write_stateless_reset(buf, sizeof buf, token,
                                                    rnd, rnd_len);
  if (n > 0) {
    qraft__ep_send(ep, udp, to, buf, (size_t)n);
    ep->metrics.stateless_resets_sent++;
  }
}

void qraft__quic_recv(qraft_endpoint *ep, qraft_env_udp *udp,
                      const struct sockaddr *from, const uint8_t *data,
                      size_t len) {
  ngtcp2_version_cid vc;
  int rv = ngtcp2_pkt_decode_version_cid(&vc, data, len, TP_CID_LEN);
  if (rv != 0) {
    ep->metrics.packets_dropped++; /* includes version negotiation */
    return;
  }
  bool long_header = (data[0] & 0x80) != 0;
  qraft_conn *c = NULL;
  if (long_header) {
    c = find_by_odcid(ep, vc.dcid, vc.dcidlen, from);
  }
  if (c == NULL && vc.dcidlen == TP_CID_LEN) {
    uint32_t tag;
    memcpy(&tag, vc.dcid, 4);
    c = qraft__ep_conn_by_tag(ep, tag);
  }
  if (c != NULL) {
    conn_read(c, from, data, len);
    return;
  }
  if (!long_header) {
    if (vc.dcidlen == TP_CID_LEN && !ep->shut_down) {
      send_stateless_reset(ep, udp, from, vc.dcid, len);
    }
    return;
  }
  ngtcp2_pkt_hd hd;
  if (ep->shut_down || ngtcp2_accept(&hd, data, len) != 0 ||
      ep->conns_n >= ep->cfg.conns_max || ep->protocols_n == 0) {
    ep->metrics.packets_dropped++;
    return;
  }
  if (accept_conn(ep, udp, from, &hd, &c) != 0) {
    ep->metrics.packets_dropped++;
    return;
  }
  ep->metrics.conns_accepted++;
  conn_read(c, from, data, len);
}

/* ---- writing ---- */

static tp_stream *next_stream(qraft_conn *c) {
  for (tp_stream *s = c->q->streams; s != NULL; s = s->next) {
    if (s->pkt_gen != c->q->pkt_gen && stream_pending(s)) {
      return s;
    }
  }
  return NULL;
}

/* Moves a stream that just filled a packet to the back, so streams share
 * the connection packet by packet: a snapshot never holds up heartbeats. */
static void stream_to_back(qraft_conn *c, tp_stream *s) {
  if (s->next == NULL) {
    return;
  }
  tp_stream **pp = &c->q->streams;
  while (*pp != s) {
    pp = &(*pp)->next;
  }
  *pp = s->next;
  while (*pp != NULL) {
    pp = &(*pp)->next;
  }
  *pp = s;
  s->next = NULL;
}

static size_t stream_vecs(const tp_stream *s, ngtcp2_vec *v, size_t *total) {
  size_t n = 0;
  uint64_t off = s->head_off;
  *total = 0;
  for (size_t i = s->head; i < s->n && n < TP_STREAM_VECS; i++) {
    const qraft_slice *ch = &s->chunks[i];
    uint64_t end = off + ch->len;
    if (end > s->sent_off) {
      size_t skip = s->sent_off > off ? (size_t)(s->sent_off - off) : 0;
      v[n].base = (uint8_t *)ch->data + skip;
      v[n].len = ch->len - skip;
      *total += v[n].len;
      n++;
    }
    off = end;
  }
  return n;
}

void qraft__quic_write(qraft_conn *c) {
  if (c->state == TP_CLOSING || c->state == TP_DEAD || c->q == NULL) {
    return;
  }
  tp_quic *q = c->q;
  qraft_endpoint *ep = c->ep;
  uint8_t buf[TP_PKT_MAX];
  ngtcp2_path_storage ps;
  ngtcp2_path_storage_zero(&ps);
  ngtcp2_pkt_info pi;
  ngtcp2_tstamp ts = now_ts(ep);
  q->pkt_gen++;
  c->busy++;
  for (;;) {
    tp_stream *s = next_stream(c);
    ngtcp2_vec v[TP_STREAM_VECS];
    size_t vn = 0, total = 0;
    uint32_t flags = 0;
    int64_t sid = -1;
    if (s != NULL) {
      sid = s->id;
      s->pkt_gen = q->pkt_gen;
      vn = stream_vecs(s, v, &total);
      flags = NGTCP2_WRITE_STREAM_FLAG_MORE;
      if (s->fin_queued && s->sent_off + total == s->end_off) {
        flags |= NGTCP2_WRITE_STREAM_FLAG_FIN;
      }
    }
    ngtcp2_ssize ndatalen = -1;
    ngtcp2_ssize n = ngtcp2_conn_writev_stream(q->conn, &ps.path, &pi, buf,
                                               sizeof buf, &ndatalen, flags,
                                               sid, v, vn, ts);
    if (s != NULL && ndatalen >= 0) {
      s->sent_off += (uint64_t)ndatalen;
      c->bytes_out += (uint64_t)ndatalen;
      if ((flags & NGTCP2_WRITE_STREAM_FLAG_FIN) &&
          (uint64_t)ndatalen == total) {
        s->fin_sent = true;
      }
    }
    if (n < 0) {
      if (n == NGTCP2_ERR_WRITE_MORE && s != NULL && ndatalen >= 0 &&
          (uint64_t)ndatalen == total && stream_pending(s)) {
        s->pkt_gen = 0; /* all taken and room left: offer it more */
        continue;
      }
      if (n == NGTCP2_ERR_WRITE_MORE || n == NGTCP2_ERR_STREAM_DATA_BLOCKED) {
        continue; /* this stream is done for this packet; try the next */
      }
      if (n == NGTCP2_ERR_STREAM_SHUT_WR || n == NGTCP2_ERR_STREAM_NOT_FOUND) {
        /* Reset by the peer: nothing of it will be sent any more. */
        s->sent_off = s->end_off;
        s->fin_sent = true;
        continue;
      }
      c->busy--;
      if (n == NGTCP2_ERR_IDLE_CLOSE || n == NGTCP2_ERR_HANDSHAKE_TIMEOUT) {
        ended_silently(c, (int)n);
      } else {
        fail(c, (int)n);
      }
      goto out;
    }
    if (n == 0) {
      break;
    }
    if (s != NULL) {
      stream_to_back(c, s);
    }
    q->pkt_gen++;
    QRAFT_ASSERTF((buf[0] & 0x40) != 0,
                  "a QUIC packet with the fixed bit clear (byte 0 %#x): "
                  "probes could not be told from it",
                  buf[0]);
    /* On the path ngtcp2 wrote it for: a peer whose NAT moved it (a new
     * mapping) is sent a PATH_CHALLENGE at its new address while the rest
     * still goes to the old one, until the new path is validated. */
    const struct sockaddr *to = (const struct sockaddr *)&c->remote;
    if (ps.path.remote.addrlen > 0 &&
        !qraft__path_is_vaddr((const struct sockaddr *)&c->remote)) {
      to = (const struct sockaddr *)ps.path.remote.addr;
    }
    qraft__ep_send(ep, c->udp, to, buf, (size_t)n);
    c->packets_out++;
  }
  c->busy--;
  /* Pacing starts once the connection is up: paced from the initial RTT
   * estimate (333 ms), the client's second flight would wait some 20 ms
   * behind its first. */
  if (c->state == TP_UP) {
    ngtcp2_conn_update_pkt_tx_time(q->conn, ts);
  }
  after_call(c);
  if (c->state == TP_HANDSHAKE || c->state == TP_UP || c->state == TP_LOSER ||
      c->state == TP_HELD) {
    ngtcp2_tstamp exp = ngtcp2_conn_get_expiry(q->conn);
    if (exp != UINT64_MAX) {
      qraft_env_timer_arm(c->timer, exp);
    }
  }
out:
  if (c->state == TP_DEAD) {
    qraft__ep_conn_free(c);
  }
}

void qraft__ep_timer_cb(void *ud) {
  qraft_conn *c = ud;
  if (c->state == TP_CLOSING) {
    c->state = TP_DEAD; /* the closing period is over */
    qraft__ep_conn_free(c);
    return;
  }
  if (c->state == TP_DEAD) {
    qraft__ep_conn_free(c);
    return;
  }
  c->busy++;
  int rv = ngtcp2_conn_handle_expiry(c->q->conn, now_ts(c->ep));
  c->busy--;
  if (rv != 0) {
    if (rv == NGTCP2_ERR_IDLE_CLOSE || rv == NGTCP2_ERR_HANDSHAKE_TIMEOUT) {
      ended_silently(c, rv);
    } else {
      fail(c, rv);
    }
    if (c->state == TP_DEAD) {
      qraft__ep_conn_free(c);
    }
    return;
  }
  qraft__quic_write(c);
}

/* ---- streams, for the endpoint's API ---- */

int qraft__quic_stream_open(qraft_conn *c, bool bidi, int64_t *id) {
  int rv = bidi ? ngtcp2_conn_open_bidi_stream(c->q->conn, id, NULL)
                : ngtcp2_conn_open_uni_stream(c->q->conn, id, NULL);
  if (rv == NGTCP2_ERR_STREAM_ID_BLOCKED) {
    return QRAFT_ELIMIT;
  }
  if (rv != 0) {
    return QRAFT_EQUIC;
  }
  if (stream_add(c, *id) == NULL) {
    ngtcp2_conn_shutdown_stream(c->q->conn, *id, 0);
    return -ENOMEM;
  }
  return 0;
}

int qraft__quic_stream_send(qraft_conn *c, int64_t id, qraft_slice data,
                            bool fin) {
  tp_stream *s = stream_find(c, id);
  if (s == NULL) {
    /* A bidirectional stream the peer opened: we may answer on it. */
    if (!ngtcp2_is_bidi_stream(id) || ngtcp2_conn_is_local_stream(c->q->conn, id)) {
      return QRAFT_ENOTFOUND;
    }
    s = stream_add(c, id);
    if (s == NULL) {
      return -ENOMEM;
    }
  }
  if (s->fin_queued) {
    return QRAFT_ENOTFOUND;
  }
  if (data.len > 0) {
    if (c->unacked_bytes > 0 &&
        c->unacked_bytes + data.len > c->ep->cfg.send_buffer_bytes_max) {
      return QRAFT_EBUSY;
    }
    qraft_slice *tail = s->n > s->head ? &s->chunks[s->n - 1] : NULL;
    if (data.len <= TP_COALESCE_MAX && tail != NULL && s->tail_coalescing &&
        tail->owner->len + data.len <= tail->owner->cap) {
      /* Bytes past the tail's end were never handed to ngtcp2: append. */
      memcpy(tail->owner->data + tail->owner->len, data.data, data.len);
      tail->owner->len += data.len;
      tail->len += data.len;
      s->end_off += data.len;
      c->unacked_bytes += data.len;
      goto queued;
    }
    if (s->n == s->cap) {
      /* Compact before growing. */
      if (s->head > 0) {
        memmove(s->chunks, s->chunks + s->head,
                (s->n - s->head) * sizeof *s->chunks);
        s->n -= s->head;
        s->head = 0;
      }
      if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        qraft_slice *ch = realloc(s->chunks, cap * sizeof *ch);
        if (ch == NULL) {
          return -ENOMEM;
        }
        s->chunks = ch;
        s->cap = cap;
      }
    }
    qraft_slice owned;
    bool coalescing = false;
    if (data.owner != NULL && data.len > TP_COALESCE_MAX) {
      owned = qraft_slice_ref(data); /* zero copy */
    } else {
      size_t cap = data.len <= TP_COALESCE_MAX ? TP_COALESCE_BYTES : data.len;
      qraft_buf *b = qraft_buf_new(cap);
      if (b == NULL) {
        return -ENOMEM;
      }
      memcpy(b->data, data.data, data.len);
      b->len = data.len;
      owned = qraft_slice_of(b, b->data, data.len);
      qraft_buf_unref(b);
      coalescing = data.len <= TP_COALESCE_MAX;
    }
    s->chunks[s->n++] = owned;
    s->tail_coalescing = coalescing;
    s->end_off += data.len;
    c->unacked_bytes += data.len;
  }
queued:
  if (fin) {
    s->fin_queued = true;
  }
  qraft__ep_mark_dirty(c);
  return 0;
}

void qraft__quic_stream_reset(qraft_conn *c, int64_t id, uint64_t app_code) {
  ngtcp2_conn_shutdown_stream(c->q->conn, id, app_code);
  if (uni_close_bug() && remote_uni(c->q->conn, id)) {
    /* A stream the peer opened, stopped before its FIN reached us (the
     * handlers reset only those): ngtcp2 0.12 never closes it. */
    if (c->q->delivering == id) {
      c->q->delivering_reset = true;
    }
    uni_done_now(c->q->conn, id);
  }
  tp_stream *s = stream_find(c, id);
  if (s != NULL) {
    s->sent_off = s->end_off;
    s->fin_queued = s->fin_sent = true;
  }
  qraft__ep_mark_dirty(c);
}

void qraft__quic_stats(qraft_conn *c, qraft_peer_metrics *m) {
  if (c->q == NULL || c->q->conn == NULL) {
    return;
  }
  ngtcp2_conn_stat st;
  ngtcp2_conn_get_conn_stat(c->q->conn, &st);
  m->smoothed_rtt_ns = st.smoothed_rtt;
  m->cwnd_bytes = st.cwnd;
  uint64_t lost = c->q->lost_closed;
  for (tp_stream *s = c->q->streams; s != NULL; s = s->next) {
    lost += ngtcp2_conn_get_stream_loss_count(c->q->conn, s->id);
  }
  m->lost_packets += lost;
}
