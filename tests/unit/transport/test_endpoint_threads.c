/* Two endpoints on two threads, each with its own libuv env: an echo over
 * loopback, for ThreadSanitizer to check that endpoints share nothing
 * unsynchronized (GnuTLS and ngtcp2 globals, the default logger). */
#include "cmocka_all.h"

#include <qraft/transport.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#define ALPN "echo/0"

typedef struct peer {
  qraft_env *env;
  qraft_env_wake *wake;
  qraft_endpoint *ep;
  qraft_secret_key key;
  qraft_node_addr addr;
  atomic_bool ready, stop;
  qraft_conn *conn;
  size_t rx;
  bool fin;
} peer;

static void up(void *ud, qraft_conn *c, bool dialed) {
  (void)dialed;
  ((peer *)ud)->conn = c;
}

static void echo(void *ud, qraft_conn *c, int64_t sid, const uint8_t *data,
                 size_t len, bool fin) {
  (void)ud;
  assert_int_equal(
      qraft_conn_stream_send(c, sid, qraft_slice_of(NULL, data, len), fin), 0);
}

static void count(void *ud, qraft_conn *c, int64_t sid, const uint8_t *data,
                  size_t len, bool fin) {
  (void)c;
  (void)sid;
  (void)data;
  peer *p = ud;
  p->rx += len;
  p->fin |= fin;
}

static void nop(void *ud) { (void)ud; }
static bool stopped(void *ud) { return atomic_load(&((peer *)ud)->stop); }


static int start(peer *p, bool server) {
  assert_int_equal(qraft_env_uv_new(&p->env), 0);
  assert_int_equal(qraft_env_wake_new(p->env, nop, p, &p->wake), 0);
  qraft_endpoint_config cfg = {.env = p->env, .key = &p->key, .bind_n = 1};
  struct sockaddr_in *a = (struct sockaddr_in *)&cfg.bind[0];
  a->sin_family = AF_INET;
  a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(qraft_endpoint_new(&cfg, &p->ep, NULL), 0);
  qraft_protocol_ops ops = {.conn_up_cb = up,
                            .stream_recv_cb = server ? echo : count};
  assert_int_equal(qraft_endpoint_register(p->ep, ALPN, &ops, p), 0);
  qraft_endpoint_addr(p->ep, &p->addr);
  return 0;
}

static void stop(peer *p) {
  qraft_endpoint_free(p->ep);
  qraft_env_wake_free(p->wake);
  qraft_env_free(p->env);
}

static void *server_main(void *arg) {
  peer *p = arg;
  start(p, true);
  atomic_store(&p->ready, true);
  qraft_env_run(p->env, UINT64_MAX, stopped, p);
  stop(p);
  return NULL;
}

static bool conn_up(void *ud) { return ((peer *)ud)->conn != NULL; }
static bool got_fin(void *ud) { return ((peer *)ud)->fin; }

static void echo_across_threads(void **st) {
  (void)st;
  static peer srv, cli;
  qraft_secret_key_generate(&srv.key);
  qraft_secret_key_generate(&cli.key);
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, server_main, &srv), 0);
  while (!atomic_load(&srv.ready)) {
  }
  start(&cli, false);
  assert_int_equal(qraft_endpoint_dial(cli.ep, &srv.addr, ALPN), 0);
  uint64_t t = qraft_env_now_ns(cli.env);
  assert_int_equal(qraft_env_run(cli.env, t + 10000000000ull, conn_up, &cli),
                   0);
  int64_t sid;
  assert_int_equal(qraft_conn_stream_open(cli.conn, true, &sid), 0);
  static uint8_t msg[100000];
  for (int i = 0; i < 10; i++) {
    assert_int_equal(qraft_conn_stream_send(cli.conn, sid,
                                            qraft_slice_of(NULL, msg,
                                                           sizeof msg),
                                            i == 9),
                     0);
  }
  assert_int_equal(qraft_env_run(cli.env, t + 20000000000ull, got_fin, &cli),
                   0);
  assert_int_equal(cli.rx, 10 * sizeof msg);
  stop(&cli);
  atomic_store(&srv.stop, true);
  qraft_env_wake_send(srv.wake);
  pthread_join(th, NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(echo_across_threads),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
