/* probe.c: path probes (include/qraft/probe.h has the layout). */
#include <qraft/probe.h>

#include <arpa/inet.h>
#include <nettle/eddsa.h>
#include <netinet/in.h>
#include <string.h>

#define PROBE_CONTEXT "qraft probe v1"
#define PROBE_HEAD 34u /* type, version, sender id */
/* what the signature covers: the context, then the probe before it */
#define PROBE_SIGNED_MAX (sizeof PROBE_CONTEXT - 1 + QRAFT_PROBE_MAX)

static size_t addr_size(const struct sockaddr_storage *a) {
  return a->ss_family == AF_INET ? 7 : a->ss_family == AF_INET6 ? 19 : 0;
}

static size_t addr_put(const struct sockaddr_storage *a, uint8_t *out) {
  if (a->ss_family == AF_INET) {
    const struct sockaddr_in *s4 = (const struct sockaddr_in *)a;
    out[0] = 4;
    memcpy(out + 1, &s4->sin_addr, 4);
    memcpy(out + 5, &s4->sin_port, 2);
    return 7;
  }
  const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)a;
  out[0] = 6;
  memcpy(out + 1, &s6->sin6_addr, 16);
  memcpy(out + 17, &s6->sin6_port, 2);
  return 19;
}

/* Reads an address at p[*o..end); 0 or -1. */
static int addr_get(const uint8_t *p, size_t end, size_t *o,
                    struct sockaddr_storage *a) {
  memset(a, 0, sizeof *a);
  if (*o >= end) {
    return -1;
  }
  uint8_t fam = p[*o];
  if (fam == 4 && end - *o >= 7) {
    struct sockaddr_in *s4 = (struct sockaddr_in *)a;
    s4->sin_family = AF_INET;
    memcpy(&s4->sin_addr, p + *o + 1, 4);
    memcpy(&s4->sin_port, p + *o + 5, 2);
    *o += 7;
    return 0;
  }
  if (fam == 6 && end - *o >= 19) {
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)a;
    s6->sin6_family = AF_INET6;
    memcpy(&s6->sin6_addr, p + *o + 1, 16);
    memcpy(&s6->sin6_port, p + *o + 17, 2);
    *o += 19;
    return 0;
  }
  return -1;
}

/* The bytes the signature covers: the context, then data[0..len). */
static size_t signed_bytes(const uint8_t *data, size_t len, uint8_t *out) {
  memcpy(out, PROBE_CONTEXT, sizeof PROBE_CONTEXT - 1);
  memcpy(out + sizeof PROBE_CONTEXT - 1, data, len);
  return sizeof PROBE_CONTEXT - 1 + len;
}

size_t qraft_probe_encode(const qraft_probe *p, const qraft_secret_key *key,
                          uint8_t *out, size_t cap) {
  size_t body = 0;
  switch (p->type) {
  case QRAFT_PROBE_PING:
  case QRAFT_PROBE_PONG:
    if (addr_size(&p->addr) == 0) {
      return 0;
    }
    body = QRAFT_PROBE_TXID_BYTES + addr_size(&p->addr);
    break;
  case QRAFT_PROBE_CALL_ME_MAYBE:
    if (p->addrs_n > QRAFT_PROBE_ADDRS_MAX) {
      return 0;
    }
    body = 1;
    for (uint32_t i = 0; i < p->addrs_n; i++) {
      if (addr_size(&p->addrs[i]) == 0) {
        return 0;
      }
      body += addr_size(&p->addrs[i]);
    }
    break;
  default:
    return 0;
  }
  size_t total = PROBE_HEAD + body + QRAFT_PROBE_SIG_BYTES;
  if (total > cap) {
    return 0;
  }
  size_t o = 0;
  out[o++] = p->type;
  out[o++] = 0; /* version */
  memcpy(out + o, key->public_key.bytes, QRAFT_KEY_BYTES);
  o += QRAFT_KEY_BYTES;
  if (p->type == QRAFT_PROBE_CALL_ME_MAYBE) {
    out[o++] = (uint8_t)p->addrs_n;
    for (uint32_t i = 0; i < p->addrs_n; i++) {
      o += addr_put(&p->addrs[i], out + o);
    }
  } else {
    memcpy(out + o, p->txid, QRAFT_PROBE_TXID_BYTES);
    o += QRAFT_PROBE_TXID_BYTES;
    o += addr_put(&p->addr, out + o);
  }
  uint8_t msg[PROBE_SIGNED_MAX];
  size_t mlen = signed_bytes(out, o, msg);
  ed25519_sha512_sign(key->public_key.bytes, key->seed, mlen, msg, out + o);
  return o + QRAFT_PROBE_SIG_BYTES;
}

int qraft_probe_decode(const uint8_t *data, size_t len, qraft_probe *p,
                       qraft_err *err) {
  memset(p, 0, sizeof *p);
  if (!qraft_probe_is(data, len)) {
    return QRAFT_ERR(err, QRAFT_EMALFORMED, "not a probe (first byte)");
  }
  if (len < PROBE_HEAD + QRAFT_PROBE_SIG_BYTES || len > QRAFT_PROBE_MAX) {
    return QRAFT_ERR(err, QRAFT_EMALFORMED, "probe %s of %zu bytes",
                     qraft_probe_name(data[0]), len);
  }
  if (data[1] != 0) {
    return QRAFT_ERR(err, QRAFT_EMALFORMED, "probe version %u", data[1]);
  }
  p->type = data[0];
  memcpy(p->sender.bytes, data + 2, QRAFT_KEY_BYTES);
  size_t end = len - QRAFT_PROBE_SIG_BYTES, o = PROBE_HEAD;
  if (p->type == QRAFT_PROBE_CALL_ME_MAYBE) {
    uint32_t n = data[o++];
    if (n > QRAFT_PROBE_ADDRS_MAX) {
      return QRAFT_ERR(err, QRAFT_EMALFORMED, "CALL_ME_MAYBE of %u addresses",
                       n);
    }
    for (uint32_t i = 0; i < n; i++) {
      if (addr_get(data, end, &o, &p->addrs[i]) != 0) {
        return QRAFT_ERR(err, QRAFT_EMALFORMED,
                         "CALL_ME_MAYBE address %u at byte %zu", i, o);
      }
    }
    p->addrs_n = n;
  } else {
    if (end - o < QRAFT_PROBE_TXID_BYTES) {
      return QRAFT_ERR(err, QRAFT_EMALFORMED, "%s without its txid",
                       qraft_probe_name(p->type));
    }
    memcpy(p->txid, data + o, QRAFT_PROBE_TXID_BYTES);
    o += QRAFT_PROBE_TXID_BYTES;
    if (addr_get(data, end, &o, &p->addr) != 0) {
      return QRAFT_ERR(err, QRAFT_EMALFORMED, "%s address at byte %zu",
                       qraft_probe_name(p->type), o);
    }
  }
  if (o != end) {
    return QRAFT_ERR(err, QRAFT_EMALFORMED, "%s: %zu bytes after its body",
                     qraft_probe_name(p->type), end - o);
  }
  uint8_t msg[PROBE_SIGNED_MAX];
  size_t mlen = signed_bytes(data, end, msg);
  if (!ed25519_sha512_verify(p->sender.bytes, mlen, msg, data + end)) {
    return QRAFT_ERR(err, QRAFT_EAUTH, "%s: the signature is not the sender's",
                     qraft_probe_name(p->type));
  }
  return 0;
}

const char *qraft_probe_name(uint8_t type) {
  switch (type) {
  case QRAFT_PROBE_PING:
    return "PING";
  case QRAFT_PROBE_PONG:
    return "PONG";
  case QRAFT_PROBE_CALL_ME_MAYBE:
    return "CALL_ME_MAYBE";
  default:
    return "UNKNOWN";
  }
}
