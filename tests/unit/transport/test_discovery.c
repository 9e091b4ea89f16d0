/* Discovery: the static table, the file (with reloads and refusals), the
 * merge of providers, and dialing by id alone over the in-memory network:
 * an id no provider knows is refused at once. */
#include "cmocka_all.h"

#include <qraft/discovery.h>
#include <qraft/transport.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define ALPN "test/0"
#define SEC 1000000000ull

static void key_of(int i, qraft_secret_key *k) {
  uint8_t s[QRAFT_KEY_BYTES];
  for (int j = 0; j < QRAFT_KEY_BYTES; j++) {
    s[j] = (uint8_t)(i * 17 + j);
  }
  qraft_secret_key_from_seed(k, s);
}

static struct sockaddr_storage v4(const char *ip, uint16_t port) {
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  struct sockaddr_in *a = (struct sockaddr_in *)&ss;
  a->sin_family = AF_INET;
  a->sin_port = htons(port);
  inet_pton(AF_INET, ip, &a->sin_addr);
  return ss;
}

static void addresses_parse_numeric_only(void **st) {
  (void)st;
  struct sockaddr_storage ss;
  assert_int_equal(qraft_sockaddr_parse("10.1.2.3:7000", &ss), 0);
  assert_int_equal(ss.ss_family, AF_INET);
  assert_int_equal(ntohs(((struct sockaddr_in *)&ss)->sin_port), 7000);
  assert_int_equal(qraft_sockaddr_parse("[fd00::1]:443", &ss), 0);
  assert_int_equal(ss.ss_family, AF_INET6);
  const char *bad[] = {"10.1.2.3",   "10.1.2.3:",     "10.1.2.3:0",
                       "host:80",    "10.1.2.3:70000", "[fd00::1]443",
                       "fd00::1:80", "[nope]:80",     ""};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    assert_int_equal(qraft_sockaddr_parse(bad[i], &ss), QRAFT_EMALFORMED);
  }
}

static void write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
}

static void a_file_is_read_reloaded_and_kept_when_broken(void **st) {
  (void)st;
  char dir[] = "/tmp/qraft-disc-XXXXXX";
  assert_non_null(mkdtemp(dir));
  char path[128];
  snprintf(path, sizeof path, "%s/peers", dir);
  qraft_secret_key a, b, r;
  key_of(1, &a);
  key_of(2, &b);
  key_of(3, &r);
  char ha[QRAFT_NODE_ID_HEX_SIZE], hb[QRAFT_NODE_ID_HEX_SIZE],
      hr[QRAFT_NODE_ID_HEX_SIZE];
  qraft_node_id_to_hex(&a.public_key, ha);
  qraft_node_id_to_hex(&b.public_key, hb);
  qraft_node_id_to_hex(&r.public_key, hr);
  char text[1024];
  snprintf(text, sizeof text,
           "# members\n%s addr=10.0.0.1:7000 addr=[fd00::1]:7000 "
           "relay=%s@192.0.2.1:3340\n\n%s   # no address yet\n",
           ha, hr, hb);
  write_file(path, text);
  qraft_simnet *net;
  qraft_env *env;
  assert_int_equal(qraft_simnet_new(1, &net), 0);
  assert_int_equal(qraft_simnet_env_new(net, &env), 0);
  qraft_logger quiet;
  qraft_logger_init(&quiet, QRAFT_LOG_OFF);
  qraft_discovery_file *d;
  qraft_err err;
  qraft_err_init(&err, 0);
  assert_int_equal(qraft_discovery_file_new(path, env, &quiet, &d, &err), 0);
  const qraft_discovery_ops *ops = qraft_discovery_file_ops();
  qraft_node_addr out;
  memset(&out, 0, sizeof out);
  assert_int_equal(ops->resolve(d, &a.public_key, &out), 0);
  assert_int_equal(out.addrs_n, 2);
  assert_int_equal(out.relays_n, 1);
  assert_true(qraft_node_id_eq(&out.relays[0].id, &r.public_key));
  assert_int_equal(ops->resolve(d, &b.public_key, &out), 0);
  assert_int_equal(out.addrs_n, 0);
  assert_int_equal(ops->resolve(d, &r.public_key, &out), QRAFT_ENOTFOUND);

  /* A change is seen once a second has passed; a broken one is not taken. */
  snprintf(text, sizeof text, "%s addr=10.0.0.9:7000\n", hb);
  write_file(path, text);
  struct timespec later = {.tv_sec = time(NULL) + 5};
  struct timespec times[2] = {later, later};
  assert_int_equal(utimensat(AT_FDCWD, path, times, 0), 0);
  assert_int_equal(ops->resolve(d, &b.public_key, &out), 0);
  assert_int_equal(out.addrs_n, 0); /* not looked at again yet */
  qraft_env_run(env, qraft_env_now_ns(env) + 2 * SEC, NULL, NULL);
  assert_int_equal(ops->resolve(d, &b.public_key, &out), 0);
  assert_int_equal(out.addrs_n, 1);
  assert_int_equal(ops->resolve(d, &a.public_key, &out), QRAFT_ENOTFOUND);

  write_file(path, "zzz addr=10.0.0.1:1\n");
  later.tv_sec += 5;
  struct timespec times2[2] = {later, later};
  assert_int_equal(utimensat(AT_FDCWD, path, times2, 0), 0);
  qraft_env_run(env, qraft_env_now_ns(env) + 2 * SEC, NULL, NULL);
  assert_int_equal(ops->resolve(d, &b.public_key, &out), 0); /* kept */
  assert_int_equal(out.addrs_n, 1);
  qraft_discovery_file_free(d);

  /* Refused at creation, naming the line. */
  snprintf(text, sizeof text, "%s addr=10.0.0.1:7000\n%s bogus=1\n", ha, hb);
  write_file(path, text);
  qraft_err_init(&err, 0);
  assert_int_equal(qraft_discovery_file_new(path, env, &quiet, &d, &err),
                   QRAFT_EMALFORMED);
  char msg[512];
  qraft_err_format(&err, msg, sizeof msg);
  assert_non_null(strstr(msg, ":2:"));
  assert_non_null(strstr(msg, "bogus=1"));
  qraft_err_init(&err, 0);
  assert_true(qraft_discovery_file_new("/nonexistent/peers", env, &quiet, &d,
                                       &err) < 0);
  qraft_env_free(env);
  qraft_simnet_free(net);
  char cmd[160];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  assert_int_equal(system(cmd), 0);
}

typedef struct peer {
  qraft_conn *conn;
} peer;

static void on_up(void *ud, qraft_conn *c, bool dialed) {
  (void)dialed;
  ((peer *)ud)->conn = c;
}

static bool both_up(void *ud) {
  peer *p = ud;
  return p[0].conn != NULL && p[1].conn != NULL;
}

/* Providers merge in order; a dial by id goes where they say; an id nobody
 * knows is refused at once (no hang, even with relays of its own). */
static void dial_by_id_uses_the_providers(void **st) {
  (void)st;
  qraft_simnet *net;
  qraft_env *env[2];
  assert_int_equal(qraft_simnet_new(7, &net), 0);
  qraft_secret_key k[3];
  qraft_endpoint *ep[2];
  peer p[2] = {{0}, {0}};
  static const qraft_protocol_ops ops = {.conn_up_cb = on_up};
  for (int i = 0; i < 2; i++) {
    assert_int_equal(qraft_simnet_env_new(net, &env[i]), 0);
    key_of(10 + i, &k[i]);
    qraft_endpoint_config cfg = {.env = env[i], .key = &k[i], .bind_n = 1};
    cfg.bind[0] = v4("0.0.0.0", 7000);
    assert_int_equal(qraft_endpoint_new(&cfg, &ep[i], NULL), 0);
    assert_int_equal(qraft_endpoint_register(ep[i], ALPN, &ops, &p[i]), 0);
  }
  key_of(12, &k[2]);
  qraft_discovery_static *s1, *s2;
  assert_int_equal(qraft_discovery_static_new(&s1), 0);
  assert_int_equal(qraft_discovery_static_new(&s2), 0);
  assert_int_equal(
      qraft_endpoint_add_discovery(ep[0], qraft_discovery_static_ops(), s1), 0);
  assert_int_equal(
      qraft_endpoint_add_discovery(ep[0], qraft_discovery_static_ops(), s2), 0);
  qraft_err err;
  qraft_err_init(&err, 0);
  assert_int_equal(
      qraft_endpoint_dial_id(ep[0], &k[1].public_key, ALPN, &err),
      QRAFT_ENOTFOUND);
  char msg[256];
  qraft_err_format(&err, msg, sizeof msg);
  assert_non_null(strstr(msg, "no discovery provider knows"));
  /* the first provider has a stale address, the second the real one */
  qraft_node_addr real;
  qraft_endpoint_addr(ep[1], &real);
  qraft_node_addr stale = {.id = k[1].public_key, .addrs_n = 1};
  stale.addrs[0] = v4("10.0.0.99", 7000);
  assert_int_equal(qraft_discovery_static_set(s1, &stale), 0);
  assert_int_equal(qraft_discovery_static_set(s2, &real), 0);
  qraft_node_addr m;
  assert_int_equal(qraft_endpoint_resolve(ep[0], &k[1].public_key, &m), 0);
  assert_int_equal(m.addrs_n, 2); /* both, the first provider's first */
  qraft_discovery_static_set(s2, &stale); /* a repeat is merged away */
  assert_int_equal(qraft_endpoint_resolve(ep[0], &k[1].public_key, &m), 0);
  assert_int_equal(m.addrs_n, 1);
  qraft_discovery_static_remove(s1, &k[1].public_key);
  qraft_discovery_static_set(s2, &real);
  assert_int_equal(qraft_endpoint_dial_id(ep[0], &k[1].public_key, ALPN, NULL),
                   0);
  assert_int_equal(qraft_env_run(env[0], qraft_env_now_ns(env[0]) + 10 * SEC,
                                 both_up, p),
                   0);
  /* an id known to nobody: at once, not after a timeout */
  uint64_t t0 = qraft_env_now_ns(env[0]);
  assert_int_equal(qraft_endpoint_dial_id(ep[0], &k[2].public_key, ALPN, NULL),
                   QRAFT_ENOTFOUND);
  assert_int_equal(qraft_env_now_ns(env[0]), t0);
  for (int i = 0; i < 2; i++) {
    qraft_endpoint_free(ep[i]);
  }
  qraft_discovery_static_free(s1);
  qraft_discovery_static_free(s2);
  for (int i = 0; i < 2; i++) {
    qraft_env_free(env[i]);
  }
  qraft_simnet_free(net);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(addresses_parse_numeric_only),
      cmocka_unit_test(a_file_is_read_reloaded_and_kept_when_broken),
      cmocka_unit_test(dial_by_id_uses_the_providers),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
