/* A user's first program against an installed qraft. */
#include <qraft/qraft.h>

#include <stdio.h>

int main(void) {
  qraft_err err;
  qraft_err_init(&err, 0);
  int rv = QRAFT_ERR(&err, QRAFT_ENOTLEADER, "propose");
  char line[256];
  qraft_err_format(&err, line, sizeof line);
  printf("qraft %s crc32c=%08x err=%s\n", qraft_version(),
         qraft_crc32c(0, "123456789", 9), qraft_errname(rv));
  return rv == QRAFT_ENOTLEADER ? 0 : 1;
}
