/* version.c: the run-time version string. */
#include <qraft/version.h>

const char *qraft_version(void) { return QRAFT_VERSION_STRING; }
