/* The relay protocol's frames: include/qraft/relay.h has the layout. */
#include <qraft/relay.h>

#include <qraft/assert.h>

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <stdbool.h>
#include <netinet/in.h>
#include <string.h>

/* ---- QUIC variable-length integers (RFC 9000, 16) ---- */

#define VARINT_MAX ((1ull << 62) - 1)

static size_t quic_varint_size(uint64_t v) {
  return v < (1u << 6) ? 1 : v < (1u << 14) ? 2 : v < (1u << 30) ? 4 : 8;
}

static size_t quic_varint_put(uint8_t *out, uint64_t v) {
  size_t n = quic_varint_size(v);
  uint8_t prefix = n == 1 ? 0x00 : n == 2 ? 0x40 : n == 4 ? 0x80 : 0xc0;
  for (size_t i = 0; i < n; i++) {
    out[i] = (uint8_t)(v >> (8 * (n - 1 - i)));
  }
  out[0] = (uint8_t)((out[0] & 0x3f) | prefix);
  return n;
}

/* 0 and *v, *n; or QRAFT_ETRUNCATED. */
static int quic_varint_get(const uint8_t *p, size_t len, uint64_t *v,
                           size_t *n) {
  if (len == 0) {
    return QRAFT_ETRUNCATED;
  }
  size_t k = (size_t)1 << (p[0] >> 6);
  if (len < k) {
    return QRAFT_ETRUNCATED;
  }
  uint64_t x = p[0] & 0x3f;
  for (size_t i = 1; i < k; i++) {
    x = (x << 8) | p[i];
  }
  *v = x;
  *n = k;
  return 0;
}

const char *qraft_relay_frame_name(uint64_t type) {
  switch (type) {
  case QRAFT_RELAY_SEND: return "SEND";
  case QRAFT_RELAY_SEND_BATCH: return "SEND_BATCH";
  case QRAFT_RELAY_RECV: return "RECV";
  case QRAFT_RELAY_RECV_BATCH: return "RECV_BATCH";
  case QRAFT_RELAY_PEER_GONE: return "PEER_GONE";
  case QRAFT_RELAY_PING: return "PING";
  case QRAFT_RELAY_PONG: return "PONG";
  case QRAFT_RELAY_HEALTH: return "HEALTH";
  case QRAFT_RELAY_RESTARTING: return "RESTARTING";
  case QRAFT_RELAY_STATUS: return "STATUS";
  case QRAFT_RELAY_OBSERVED_ADDR: return "OBSERVED_ADDR";
  default: return "UNKNOWN";
  }
}

static bool is_datagram(uint64_t t) {
  return t >= QRAFT_RELAY_SEND && t <= QRAFT_RELAY_RECV_BATCH;
}

static bool is_batch(uint64_t t) {
  return t == QRAFT_RELAY_SEND_BATCH || t == QRAFT_RELAY_RECV_BATCH;
}

/* Strict UTF-8: no overlong forms, no surrogates, at most U+10FFFF. */
static bool utf8_valid(const uint8_t *p, size_t n) {
  size_t i = 0;
  while (i < n) {
    uint8_t c = p[i];
    size_t k;
    uint32_t cp;
    if (c < 0x80) {
      i++;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      k = 1;
      cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      k = 2;
      cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      k = 3;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (n - i <= k) {
      return false;
    }
    for (size_t j = 1; j <= k; j++) {
      if ((p[i + j] & 0xc0) != 0x80) {
        return false;
      }
      cp = (cp << 6) | (p[i + j] & 0x3f);
    }
    static const uint32_t min[4] = {0, 0x80, 0x800, 0x10000};
    if (cp < min[k] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
      return false;
    }
    i += k + 1;
  }
  return true;
}

/* The payload's size, or SIZE_MAX when `f` cannot be encoded. */
static size_t payload_size(const qraft_relay_frame *f) {
  if (is_datagram(f->type)) {
    if (f->data_len == 0 || f->data_len > QRAFT_RELAY_DATAGRAM_MAX ||
        f->ecn > 3 || (is_batch(f->type) && f->segment == 0)) {
      return SIZE_MAX;
    }
    return QRAFT_KEY_BYTES + 1 + (is_batch(f->type) ? 2 : 0) + f->data_len;
  }
  switch (f->type) {
  case QRAFT_RELAY_PEER_GONE:
    return QRAFT_KEY_BYTES;
  case QRAFT_RELAY_PING:
  case QRAFT_RELAY_PONG:
    return 8;
  case QRAFT_RELAY_RESTARTING:
    return 8;
  case QRAFT_RELAY_STATUS:
    return f->status <= QRAFT_RELAY_STATUS_SAME_ID_ELSEWHERE ? 1 : SIZE_MAX;
  case QRAFT_RELAY_OBSERVED_ADDR:
    return f->addr.ss_family == AF_INET    ? 1 + 4 + 2
           : f->addr.ss_family == AF_INET6 ? 1 + 16 + 2
                                           : SIZE_MAX;
  case QRAFT_RELAY_HEALTH:
    return f->data_len <= QRAFT_RELAY_PAYLOAD_MAX &&
                   utf8_valid(f->data, f->data_len)
               ? f->data_len
               : SIZE_MAX;
  default:
    return f->type <= VARINT_MAX && f->data_len <= QRAFT_RELAY_PAYLOAD_MAX
               ? f->data_len
               : SIZE_MAX;
  }
}

size_t qraft_relay_frame_size(const qraft_relay_frame *f) {
  size_t p = payload_size(f);
  if (p == SIZE_MAX) {
    return 0;
  }
  return quic_varint_size(f->type) + quic_varint_size(p) + p;
}

static void be_put(uint8_t *out, uint64_t v, int n) {
  for (int i = 0; i < n; i++) {
    out[i] = (uint8_t)(v >> (8 * (n - 1 - i)));
  }
}

static uint64_t be_get(const uint8_t *p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; i++) {
    v = (v << 8) | p[i];
  }
  return v;
}

size_t qraft_relay_frame_encode(const qraft_relay_frame *f, uint8_t *out) {
  size_t p = payload_size(f);
  if (p == SIZE_MAX) {
    return 0;
  }
  size_t o = quic_varint_put(out, f->type);
  o += quic_varint_put(out + o, p);
  if (is_datagram(f->type)) {
    memcpy(out + o, f->peer.bytes, QRAFT_KEY_BYTES);
    o += QRAFT_KEY_BYTES;
    out[o++] = f->ecn;
    if (is_batch(f->type)) {
      be_put(out + o, f->segment, 2);
      o += 2;
    }
    memcpy(out + o, f->data, f->data_len);
    return o + f->data_len;
  }
  switch (f->type) {
  case QRAFT_RELAY_PEER_GONE:
    memcpy(out + o, f->peer.bytes, QRAFT_KEY_BYTES);
    return o + QRAFT_KEY_BYTES;
  case QRAFT_RELAY_PING:
  case QRAFT_RELAY_PONG:
    memcpy(out + o, f->ping, 8);
    return o + 8;
  case QRAFT_RELAY_RESTARTING:
    be_put(out + o, f->reconnect_in_ms, 4);
    be_put(out + o + 4, f->try_for_ms, 4);
    return o + 8;
  case QRAFT_RELAY_STATUS:
    out[o] = f->status;
    return o + 1;
  case QRAFT_RELAY_OBSERVED_ADDR:
    if (f->addr.ss_family == AF_INET) {
      const struct sockaddr_in *a = (const struct sockaddr_in *)&f->addr;
      out[o] = 4;
      memcpy(out + o + 1, &a->sin_addr, 4);
      memcpy(out + o + 5, &a->sin_port, 2); /* network order already */
      return o + 7;
    } else {
      const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&f->addr;
      out[o] = 6;
      memcpy(out + o + 1, &a->sin6_addr, 16);
      memcpy(out + o + 17, &a->sin6_port, 2);
      return o + 19;
    }
  default: /* HEALTH and frames of other types: their bytes */
    if (f->data_len > 0) {
      memcpy(out + o, f->data, f->data_len);
    }
    return o + f->data_len;
  }
}

static int malformed(qraft_err *err, uint64_t type, size_t len,
                     const char *why) {
  return QRAFT_ERR(err, QRAFT_EMALFORMED, "relay frame %s (%zu bytes): %s",
                   qraft_relay_frame_name(type), len, why);
}

int qraft_relay_frame_decode(const uint8_t *data, size_t len,
                             qraft_relay_frame *f, size_t *used,
                             qraft_err *err) {
  *used = 0;
  uint64_t type = 0, plen = 0;
  size_t tn = 0, ln = 0;
  if (quic_varint_get(data, len, &type, &tn) != 0 ||
      quic_varint_get(data + tn, len - tn, &plen, &ln) != 0) {
    return QRAFT_ERR(err, QRAFT_ETRUNCATED, "relay frame header: %zu bytes",
                     len);
  }
  if (plen > QRAFT_RELAY_PAYLOAD_MAX) {
    return QRAFT_ERR(err, QRAFT_ELIMIT,
                     "relay frame %s: a payload of %llu bytes (at most %u)",
                     qraft_relay_frame_name(type), (unsigned long long)plen,
                     QRAFT_RELAY_PAYLOAD_MAX);
  }
  size_t hn = tn + ln;
  *used = hn + (size_t)plen;
  if (len - hn < plen) {
    return QRAFT_ERR(err, QRAFT_ETRUNCATED,
                     "relay frame %s: %zu of %llu payload bytes",
                     qraft_relay_frame_name(type), len - hn,
                     (unsigned long long)plen);
  }
  const uint8_t *p = data + hn;
  size_t n = (size_t)plen;
  memset(f, 0, sizeof *f);
  f->type = type;
  if (is_datagram(type)) {
    size_t head = QRAFT_KEY_BYTES + 1 + (is_batch(type) ? 2 : 0);
    if (n <= head) {
      return malformed(err, type, n, "no datagram after the header");
    }
    memcpy(f->peer.bytes, p, QRAFT_KEY_BYTES);
    f->ecn = p[QRAFT_KEY_BYTES];
    if (f->ecn > 3) {
      return malformed(err, type, n, "ECN above 3");
    }
    if (is_batch(type)) {
      f->segment = (uint16_t)be_get(p + QRAFT_KEY_BYTES + 1, 2);
      if (f->segment == 0) {
        return malformed(err, type, n, "a segment size of 0");
      }
    }
    f->data = p + head;
    f->data_len = n - head;
    if (f->data_len > QRAFT_RELAY_DATAGRAM_MAX) {
      return malformed(err, type, n, "datagrams longer than 64 KiB");
    }
    return 0;
  }
  switch (type) {
  case QRAFT_RELAY_PEER_GONE:
    if (n != QRAFT_KEY_BYTES) {
      return malformed(err, type, n, "want a 32-byte id");
    }
    memcpy(f->peer.bytes, p, QRAFT_KEY_BYTES);
    return 0;
  case QRAFT_RELAY_PING:
  case QRAFT_RELAY_PONG:
    if (n != 8) {
      return malformed(err, type, n, "want 8 bytes");
    }
    memcpy(f->ping, p, 8);
    return 0;
  case QRAFT_RELAY_RESTARTING:
    if (n != 8) {
      return malformed(err, type, n, "want two u32");
    }
    f->reconnect_in_ms = (uint32_t)be_get(p, 4);
    f->try_for_ms = (uint32_t)be_get(p + 4, 4);
    return 0;
  case QRAFT_RELAY_STATUS:
    if (n != 1 || p[0] > QRAFT_RELAY_STATUS_SAME_ID_ELSEWHERE) {
      return malformed(err, type, n, "want one byte, 0 or 1");
    }
    f->status = p[0];
    return 0;
  case QRAFT_RELAY_OBSERVED_ADDR:
    if (n == 7 && p[0] == 4) {
      struct sockaddr_in *a = (struct sockaddr_in *)&f->addr;
      a->sin_family = AF_INET;
      memcpy(&a->sin_addr, p + 1, 4);
      memcpy(&a->sin_port, p + 5, 2);
      return 0;
    }
    if (n == 19 && p[0] == 6) {
      struct sockaddr_in6 *a = (struct sockaddr_in6 *)&f->addr;
      a->sin6_family = AF_INET6;
      memcpy(&a->sin6_addr, p + 1, 16);
      memcpy(&a->sin6_port, p + 17, 2);
      return 0;
    }
    return malformed(err, type, n, "want family 4 or 6, its address, a port");
  case QRAFT_RELAY_HEALTH:
    if (!utf8_valid(p, n)) {
      return malformed(err, type, n, "text that is not UTF-8");
    }
    f->data = p;
    f->data_len = n;
    return 0;
  default:
    f->data = p;
    f->data_len = n;
    return 0;
  }
}

/* ---- reading frames off a stream ---- */

static int reader_room(qraft_relay_reader *r, size_t need) {
  if (need <= r->cap) {
    return 0;
  }
  size_t cap = r->cap ? r->cap : 2048;
  while (cap < need) {
    cap *= 2;
  }
  uint8_t *nb = realloc(r->buf, cap);
  if (nb == NULL) {
    return -ENOMEM;
  }
  r->buf = nb;
  r->cap = cap;
  return 0;
}

int qraft_relay_reader_feed(qraft_relay_reader *r, const uint8_t *data,
                            size_t len, qraft_relay_frame_cb cb, void *ud,
                            qraft_err *err) {
  while (len > 0 || r->len > 0) {
    qraft_relay_frame f;
    size_t used = 0;
    int rv;
    if (r->len == 0) {
      /* Nothing held back: decode in place. */
      rv = qraft_relay_frame_decode(data, len, &f, &used, err);
      if (rv == QRAFT_ETRUNCATED) {
        rv = reader_room(r, len);
        if (rv != 0) {
          return rv;
        }
        memcpy(r->buf, data, len);
        r->len = len;
        return 0;
      }
      if (rv != 0) {
        return rv;
      }
      data += used;
      len -= used;
      rv = cb(ud, &f);
      if (rv != 0) {
        return rv;
      }
      continue;
    }
    /* Complete the held frame: take what its header says it needs, or,
     * until the header is in, one byte at a time (a header is at most
     * QRAFT_RELAY_HEADER_MAX bytes, and a whole frame may be shorter than
     * that: taking more would take the next frame's bytes). */
    rv = qraft_relay_frame_decode(r->buf, r->len, &f, &used, err);
    if (rv == QRAFT_ETRUNCATED) {
      if (len == 0) {
        return 0;
      }
      size_t want = used > r->len ? used - r->len : 1;
      size_t take = len < want ? len : want;
      rv = reader_room(r, r->len + take);
      if (rv != 0) {
        return rv;
      }
      memcpy(r->buf + r->len, data, take);
      r->len += take;
      data += take;
      len -= take;
      continue;
    }
    if (rv != 0) {
      return rv;
    }
    QRAFT_ASSERT(used == r->len);
    r->len = 0;
    rv = cb(ud, &f);
    if (rv != 0) {
      return rv;
    }
  }
  return 0;
}

void qraft_relay_reader_free(qraft_relay_reader *r) {
  free(r->buf);
  memset(r, 0, sizeof *r);
}
