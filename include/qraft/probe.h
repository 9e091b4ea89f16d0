/*
 * qraft/probe.h: path probes, the packets that test and open direct paths
 * between endpoints (the path layer, src/transport/path.c, sends and
 * answers them; docs/connectivity.md, "Hole punching").
 *
 * A probe travels on the endpoint's own UDP socket, beside QUIC, and is
 * told apart by its first byte: QUIC sets the fixed bit (0x40) in every
 * packet (we never negotiate greasing it), a probe's first byte is its type,
 * 1 to 3 (RFC 9443's way to share a port). A CALL_ME_MAYBE travels through a
 * relay instead, in a SEND frame, with the same layout.
 *
 *   type 1 | version 0 | sender id 32 | body | Ed25519 signature 64
 *
 *   type  probe          body
 *   1     PING           txid 12 | the address the sender sends it to
 *   2     PONG           txid 12 (the PING's) | the address the PING came
 *                        from, as the answering side saw it
 *   3     CALL_ME_MAYBE  count 1 (at most QRAFT_PROBE_ADDRS_MAX) | addresses
 *
 * An address is family 4 or 6, the address (4 or 16 bytes), the port
 * (big-endian). The signature is the sender's (its node id is its Ed25519
 * public key) over the context string "qraft probe v1" followed by every
 * byte before the signature, so a third party can neither forge a probe nor
 * pass one of another context off as one; a PONG answers only a txid its
 * receiver drew and sent lately, so replaying an old one validates nothing.
 * Where iroh 0.91's disco boxes its pings (X25519 + XChaCha20-Poly1305),
 * we sign: probes carry nothing secret, and a signature needs no session.
 */
#ifndef QRAFT_PROBE_H
#define QRAFT_PROBE_H

#include <qraft/error.h>
#include <qraft/transport.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#ifdef __cplusplus
extern "C" {
#endif

#define QRAFT_PROBE_PING 1u
#define QRAFT_PROBE_PONG 2u
#define QRAFT_PROBE_CALL_ME_MAYBE 3u
#define QRAFT_PROBE_TXID_BYTES 12u
#define QRAFT_PROBE_SIG_BYTES 64u
#define QRAFT_PROBE_ADDRS_MAX 8u
/* the largest probe: a CALL_ME_MAYBE of 8 IPv6 addresses */
#define QRAFT_PROBE_MAX (2u + 32u + 1u + 8u * 19u + 64u)

typedef struct qraft_probe {
  uint8_t type; /* QRAFT_PROBE_* */
  qraft_node_id sender;
  uint8_t txid[QRAFT_PROBE_TXID_BYTES];  /* PING, PONG */
  struct sockaddr_storage addr;          /* PING: to; PONG: observed */
  uint32_t addrs_n;                      /* CALL_ME_MAYBE */
  struct sockaddr_storage addrs[QRAFT_PROBE_ADDRS_MAX];
} qraft_probe;

/* True if a datagram's first byte makes it a probe, not QUIC. */
static inline bool qraft_probe_is(const uint8_t *data, size_t len) {
  return len > 0 && data[0] >= QRAFT_PROBE_PING &&
         data[0] <= QRAFT_PROBE_CALL_ME_MAYBE;
}

/*
 * Encodes `p` (p->sender is ignored: the key's public key is written) and
 * signs it with `key`. Returns the size written (at most QRAFT_PROBE_MAX),
 * or 0 if `p` cannot be encoded (an unknown type, an address that is not
 * IPv4 or IPv6, more than QRAFT_PROBE_ADDRS_MAX addresses) or `cap` is too
 * small.
 */
size_t qraft_probe_encode(const qraft_probe *p, const qraft_secret_key *key,
                          uint8_t *out, size_t cap);

/*
 * Decodes and verifies a probe. Returns 0 with *p filled, or:
 *   QRAFT_EMALFORMED  not a probe of a known type and version, or a body
 *                     that does not fit its layout (err says where);
 *   QRAFT_EAUTH       the signature is not the sender's over these bytes.
 */
int qraft_probe_decode(const uint8_t *data, size_t len, qraft_probe *p,
                       qraft_err *err);

/* "PING", "PONG", "CALL_ME_MAYBE" or "UNKNOWN". */
const char *qraft_probe_name(uint8_t type);

#ifdef __cplusplus
}
#endif
#endif
