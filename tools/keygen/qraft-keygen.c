/* qraft-keygen: writes a new Ed25519 secret key file (mode 0600) and prints
 * the node id. With --show, prints the id of an existing key file. Members
 * and relays (qraft-relay) get their keys so. */
#include <qraft/transport.h>

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static int usage(void) {
  fprintf(stderr,
          "usage: qraft-keygen [--force] KEYFILE   write a new key, print its id\n"
          "       qraft-keygen --show KEYFILE      print the id of a key file\n"
          "A member's key (qraft-kv serve --key) and a relay's are made the\n"
          "same way; a relay runs with its key and is named by its id:\n"
          "  qraft-keygen relay.key > relay.id\n"
          "  qraft-relay --key relay.key --listen 0.0.0.0:3340\n"
          "  qraft-kv serve ... --relay \"$(cat relay.id)@HOST:3340\"\n");
  return 2;
}

int main(int argc, char **argv) {
  bool force = false, show = false;
  const char *path = NULL;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--force") == 0) {
      force = true;
    } else if (strcmp(argv[i], "--show") == 0) {
      show = true;
    } else if (argv[i][0] == '-' || path != NULL) {
      return usage();
    } else {
      path = argv[i];
    }
  }
  if (path == NULL) {
    return usage();
  }
  qraft_err err;
  qraft_err_init(&err, 0);
  qraft_secret_key key;
  if (show) {
    if (qraft_secret_key_load(&key, path, &err) != 0) {
      qraft_err_print(&err, stderr);
      return 1;
    }
  } else {
    struct stat st;
    if (!force && stat(path, &st) == 0) {
      fprintf(stderr, "qraft-keygen: %s exists; use --force to replace it\n",
              path);
      return 1;
    }
    if (qraft_secret_key_generate(&key) != 0 ||
        qraft_secret_key_save(&key, path, &err) != 0) {
      qraft_err_print(&err, stderr);
      return 1;
    }
  }
  char hex[QRAFT_NODE_ID_HEX_SIZE];
  qraft_node_id_to_hex(&key.public_key, hex);
  printf("%s\n", hex);
  qraft_secret_key_wipe(&key);
  return 0;
}
