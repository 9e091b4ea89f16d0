/* Identity: key derivation, key files, node id forms. */
#include "cmocka_all.h"

#include <qraft/transport.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* RFC 8032, section 7.1, test 1. */
static const char *rfc_seed =
    "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
static const char *rfc_pub =
    "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

static void rfc_key(qraft_secret_key *k) {
  qraft_node_id seed;
  assert_int_equal(qraft_node_id_parse(rfc_seed, &seed), 0);
  qraft_secret_key_from_seed(k, seed.bytes);
}

static void public_key_is_derived_as_rfc8032_says(void **st) {
  (void)st;
  qraft_secret_key k;
  rfc_key(&k);
  char hex[QRAFT_NODE_ID_HEX_SIZE];
  qraft_node_id_to_hex(&k.public_key, hex);
  assert_string_equal(hex, rfc_pub);
}

static void node_id_parses_hex_and_base32(void **st) {
  (void)st;
  qraft_node_id a, b, c;
  assert_int_equal(qraft_node_id_parse(rfc_pub, &a), 0);
  assert_int_equal(
      qraft_node_id_parse(
          "25NJQAMCWEFLPVKL73J4SZAHHIHOC4XT3KTCGJNPAINGR5YHKENA", &b),
      0);
  assert_int_equal(
      qraft_node_id_parse(
          "25njqamcweflpvkl73j4szahhihoc4xt3ktcgjnpaingr5yhkena", &c),
      0);
  assert_true(qraft_node_id_eq(&a, &b));
  assert_true(qraft_node_id_eq(&a, &c));
  /* Wrong length, bad characters, non-zero trailing bits. */
  assert_int_equal(qraft_node_id_parse("abc", &a), QRAFT_EMALFORMED);
  char bad[65];
  memcpy(bad, rfc_pub, 65);
  bad[10] = 'g';
  assert_int_equal(qraft_node_id_parse(bad, &a), QRAFT_EMALFORMED);
  assert_int_equal(
      qraft_node_id_parse(
          "25NJQAMCWEFLPVKL73J4SZAHHIHOC4XT3KTCGJNPAINGR5YHKENB", &a),
      QRAFT_EMALFORMED);
  assert_int_equal(
      qraft_node_id_parse(
          "25NJQAMCWEFLPVKL73J4SZAHHIHOC4XT3KTCGJNPAINGR5YHKEN1", &a),
      QRAFT_EMALFORMED);
}

static void server_name_is_base32hex_dot_iroh_invalid(void **st) {
  (void)st;
  qraft_node_id id;
  assert_int_equal(qraft_node_id_parse(rfc_pub, &id), 0);
  char name[QRAFT_SERVER_NAME_SIZE];
  qraft_node_id_server_name(&id, name);
  assert_string_equal(
      name, "qtd9g0c2m45bflabvr9sip07787e2snjraj269df08d6hto7a4d0.iroh.invalid");
}

static void key_file_round_trips_with_mode_0600(void **st) {
  (void)st;
  char dir[] = "/tmp/qraft-key-XXXXXX";
  assert_non_null(mkdtemp(dir));
  char path[256];
  snprintf(path, sizeof path, "%s/node.key", dir);
  qraft_secret_key k, k2;
  assert_int_equal(qraft_secret_key_generate(&k), 0);
  umask(022);
  assert_int_equal(qraft_secret_key_save(&k, path, NULL), 0);
  struct stat s;
  assert_int_equal(stat(path, &s), 0);
  assert_int_equal(s.st_mode & 0777, 0600);
  assert_int_equal(qraft_secret_key_load(&k2, path, NULL), 0);
  assert_memory_equal(&k, &k2, sizeof k);
  unlink(path);
  rmdir(dir);
}

static void key_file_readable_by_others_is_refused(void **st) {
  (void)st;
  char dir[] = "/tmp/qraft-key-XXXXXX";
  assert_non_null(mkdtemp(dir));
  char path[256];
  snprintf(path, sizeof path, "%s/node.key", dir);
  qraft_secret_key k;
  rfc_key(&k);
  assert_int_equal(qraft_secret_key_save(&k, path, NULL), 0);
  assert_int_equal(chmod(path, 0644), 0);
  qraft_err err;
  qraft_err_init(&err, 0);
  assert_int_equal(qraft_secret_key_load(&k, path, &err), QRAFT_EKEY);
  char line[512];
  qraft_err_format(&err, line, sizeof line);
  assert_non_null(strstr(line, "chmod 600"));
  assert_non_null(strstr(line, "0644"));
  assert_int_equal(chmod(path, 0640), 0);
  assert_int_equal(qraft_secret_key_load(&k, path, NULL), QRAFT_EKEY);
  /* Malformed contents. */
  assert_int_equal(chmod(path, 0600), 0);
  FILE *f = fopen(path, "w");
  fputs("not a key\n", f);
  fclose(f);
  assert_int_equal(qraft_secret_key_load(&k, path, NULL), QRAFT_EKEY);
  unlink(path);
  assert_int_equal(qraft_secret_key_load(&k, path, NULL), -ENOENT);
  rmdir(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(public_key_is_derived_as_rfc8032_says),
      cmocka_unit_test(node_id_parses_hex_and_base32),
      cmocka_unit_test(server_name_is_base32hex_dot_iroh_invalid),
      cmocka_unit_test(key_file_round_trips_with_mode_0600),
      cmocka_unit_test(key_file_readable_by_others_is_refused),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
