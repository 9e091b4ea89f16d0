/* qraft-kv: `qraft-kv serve ...` runs a member; every other command is the
 * client (client.c). */
#include "kv.h"

#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
  if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
    fprintf(stderr, "usage: qraft-kv serve [options]   run a member\n"
                    "       qraft-kv put|get|del|cas|list|members|status|transfer ...\n"
                    "       qraft-kv snapshot save FILE | snapshot info FILE\n"
                    "       qraft-kv restore FILE --data DIR --key KEYFILE --bootstrap ...\n"
                    "       (qraft-kv serve --help, qraft-kv help)\n");
    return 2;
  }
  if (strcmp(argv[1], "serve") == 0) {
    return kv_serve_main(argc - 2, argv + 2);
  }
  if (strcmp(argv[1], "restore") == 0) {
    return kv_restore_main(argc - 2, argv + 2);
  }
  return kv_client_main(argv[1], argc - 2, argv + 2);
}
