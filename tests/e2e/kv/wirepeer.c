/*
 * wirepeer: a Raft peer that speaks another wire version, for versions.sh.
 *
 *   wirepeer KEYFILE ID@HOST:PORT CLUSTER_HEX VERSION
 *
 * Dials the member ID at HOST:PORT on the Raft ALPN with the key in
 * KEYFILE (a member's key, so that the member's handshake admits it), opens
 * a stream and sends the stream preamble for CLUSTER_HEX with the wire
 * version VERSION in place of this library's, then waits (10 s at most)
 * for the connection to end. Prints how it ended; exits 0 if the member
 * closed it as a protocol violation (QRAFT_CLOSE_PROTOCOL), 1 otherwise.
 */
#include <qraft/env.h>
#include <qraft/node.h>
#include <qraft/transport.h>
#include <qraft/wire.h>

#include <arpa/inet.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct peer {
  uint8_t bytes[QRAFT_WIRE_PREAMBLE_BYTES + 1];
  bool sent, down;
  qraft_close_info why;
} peer;

static void up_cb(void *ud, qraft_conn *c, bool dialed) {
  (void)dialed;
  peer *p = ud;
  int64_t sid;
  if (qraft_conn_stream_open(c, false, &sid) == 0 &&
      qraft_conn_stream_send(c, sid, qraft_slice_of(NULL, p->bytes, sizeof p->bytes),
                             false) == 0) {
    p->sent = true;
  }
}

static void down_cb(void *ud, qraft_conn *c, const qraft_close_info *why) {
  (void)c;
  peer *p = ud;
  if (!p->down) {
    p->down = true;
    p->why = *why;
  }
}

static bool done(void *ud) { return ((peer *)ud)->down; }

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: wirepeer KEYFILE ID@HOST:PORT CLUSTER_HEX VERSION\n");
    return 2;
  }
  qraft_err err;
  qraft_err_init(&err, 0);
  qraft_secret_key key;
  if (qraft_secret_key_load(&key, argv[1], &err) != 0) {
    qraft_err_print(&err, stderr);
    return 2;
  }
  char id[160], host[64];
  unsigned port = 0;
  const char *at = strchr(argv[2], '@');
  const char *colon = at != NULL ? strrchr(at, ':') : NULL;
  qraft_node_addr addr;
  memset(&addr, 0, sizeof addr);
  if (at == NULL || colon == NULL || (size_t)(at - argv[2]) >= sizeof id ||
      (size_t)(colon - at - 1) >= sizeof host) {
    fprintf(stderr, "wirepeer: want ID@HOST:PORT\n");
    return 2;
  }
  memcpy(id, argv[2], (size_t)(at - argv[2]));
  id[at - argv[2]] = 0;
  memcpy(host, at + 1, (size_t)(colon - at - 1));
  host[colon - at - 1] = 0;
  port = (unsigned)strtoul(colon + 1, NULL, 10);
  struct sockaddr_in *sin = (struct sockaddr_in *)&addr.addrs[0];
  if (qraft_node_id_parse(id, &addr.id) != 0 ||
      inet_pton(AF_INET, host, &sin->sin_addr) != 1 || port == 0 || port > 65535) {
    fprintf(stderr, "wirepeer: bad ID@HOST:PORT\n");
    return 2;
  }
  sin->sin_family = AF_INET;
  sin->sin_port = htons((uint16_t)port);
  addr.addrs_n = 1;

  peer p;
  memset(&p, 0, sizeof p);
  uint64_t cluster = strtoull(argv[3], NULL, 16);
  unsigned version = (unsigned)strtoul(argv[4], NULL, 10);
  qraft_wire_preamble_encode(cluster, qraft_node_raft_id(&key.public_key),
                             p.bytes);
  p.bytes[4] = (uint8_t)version; /* the version, little-endian u16 */
  p.bytes[5] = (uint8_t)(version >> 8);
  p.bytes[QRAFT_WIRE_PREAMBLE_BYTES] = QRAFT_RAFT_STREAM_MESSAGES;

  qraft_env *env = NULL;
  if (qraft_env_uv_new(&env) != 0) return 2;
  qraft_endpoint_config cfg = {.env = env, .key = &key, .bind_n = 1};
  struct sockaddr_in *b = (struct sockaddr_in *)&cfg.bind[0];
  b->sin_family = AF_INET;
  b->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  qraft_endpoint *ep = NULL;
  static const qraft_protocol_ops ops = {.conn_up_cb = up_cb,
                                         .conn_down_cb = down_cb};
  if (qraft_endpoint_new(&cfg, &ep, &err) != 0 ||
      qraft_endpoint_register(ep, QRAFT_RAFT_ALPN, &ops, &p) != 0 ||
      qraft_endpoint_dial(ep, &addr, QRAFT_RAFT_ALPN) != 0) {
    qraft_err_print(&err, stderr);
    return 2;
  }
  (void)qraft_env_run(env, qraft_env_now_ns(env) + 10ull * 1000000000ull, done,
                      &p);
  int rv = 1;
  if (!p.down) {
    printf("wirepeer: the connection did not end in 10 s (preamble sent: %s)\n",
           p.sent ? "yes" : "no");
  } else {
    printf("wirepeer: closed by %s: %s code %llu, reason '%s'\n",
           p.why.remote ? "the member" : "us", p.why.app ? "application" : "transport",
           (unsigned long long)(p.why.app ? p.why.app_code : p.why.quic_code),
           p.why.reason);
    rv = p.sent && p.why.remote && p.why.app &&
                 p.why.app_code == QRAFT_CLOSE_PROTOCOL
             ? 0
             : 1;
  }
  qraft_endpoint_free(ep);
  qraft_env_free(env);
  qraft_secret_key_wipe(&key);
  return rv;
}
