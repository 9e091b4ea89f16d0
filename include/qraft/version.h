/* qraft/version.h: the library version. */
#ifndef QRAFT_VERSION_H
#define QRAFT_VERSION_H

#define QRAFT_VERSION_MAJOR 0
#define QRAFT_VERSION_MINOR 1
#define QRAFT_VERSION_PATCH 0
#define QRAFT_VERSION_STRING "0.1.0"

#ifdef __cplusplus
extern "C" {
#endif
/* The version of the library linked at run time, "MAJOR.MINOR.PATCH". */
const char *qraft_version(void);
#ifdef __cplusplus
}
#endif
#endif
