/*
 * qraft/error.h: error codes and error context chains.
 *
 * Every qraft function that can fail returns 0 on success or a negative
 * code: -errno for an operating-system error (-ENOMEM, -EIO, ...), or one of
 * the QRAFT_E* codes below, which live in a reserved band
 * [QRAFT_ERRNO_BAND_MIN, QRAFT_ERRNO_BAND_MAX] far from any errno value.
 *
 * Where a caller needs to know why, it passes a `qraft_err` and each layer the
 * error passes through adds a frame (code, file, line, function, short
 * message). Recording a frame never allocates; a chain holds at most
 * QRAFT_ERR_FRAMES_MAX frames and counts the ones it had to drop.
 */
#ifndef QRAFT_ERROR_H
#define QRAFT_ERROR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define QRAFT_ERRNO_BAND_MAX (-1000)
#define QRAFT_ERRNO_BAND_MIN (-1999)

/* X-macro: name, value, description. qraft_strerror names every one. */
#define QRAFT_ERRORS(X)                                                        \
  X(QRAFT_ECORRUPT, -1001, "data is corrupt (checksum or structure)")         \
  X(QRAFT_EMALFORMED, -1002, "malformed input")                               \
  X(QRAFT_ETRUNCATED, -1003, "input ends before the value it announces")      \
  X(QRAFT_ENOTLEADER, -1004, "this node is not the leader")                   \
  X(QRAFT_EVERSION, -1005, "unsupported protocol or format version")          \
  X(QRAFT_ECLUSTER, -1006, "peer belongs to another cluster")                 \
  X(QRAFT_ELIMIT, -1007, "a configured limit was exceeded")                   \
  X(QRAFT_ECONFIG, -1008, "invalid configuration")                            \
  X(QRAFT_ESHUTDOWN, -1009, "shutting down")                                  \
  X(QRAFT_EDROPPED, -1010, "request dropped")                                 \
  X(QRAFT_ECOMPACTED, -1011, "requested index is compacted away")            \
  X(QRAFT_EUNAVAILABLE, -1012, "requested entries are not available yet")     \
  X(QRAFT_ESNAPSHOT_TEMP, -1013, "snapshot temporarily unavailable")          \
  X(QRAFT_EBUSY, -1014, "back-pressure: too much pending work")               \
  X(QRAFT_ENOQUORUM, -1015, "no quorum")                                      \
  X(QRAFT_EPROPOSAL_DROPPED, -1016, "proposal dropped")                       \
  X(QRAFT_ECONF_PENDING, -1017, "a configuration change is already pending")  \
  X(QRAFT_ESTATE, -1018, "operation not valid in the current state")          \
  X(QRAFT_EAUTH, -1019, "peer not authorized")                                \
  X(QRAFT_EPEER, -1020, "peer violated the protocol")                         \
  X(QRAFT_ECLOSED, -1021, "closed")                                           \
  X(QRAFT_ETIMEDOUT, -1022, "timed out")                                      \
  X(QRAFT_ENOTFOUND, -1023, "not found")                                      \
  X(QRAFT_ESYNC, -1024, "a sync failed earlier; store refuses writes")        \
  X(QRAFT_ELOCKED, -1025, "directory is locked by another process")           \
  X(QRAFT_EUNKNOWN_NODE, -1026, "unknown node")                               \
  X(QRAFT_EKEY, -1027, "bad key or key file")                                 \
  X(QRAFT_ETLS, -1028, "TLS failure")                                         \
  X(QRAFT_EQUIC, -1029, "QUIC failure")

enum qraft_error_code {
#define QRAFT__ERR_ENUM(name, value, desc) name = value,
  QRAFT_ERRORS(QRAFT__ERR_ENUM)
#undef QRAFT__ERR_ENUM
};

/*
 * Returns a static, human-readable description of `code`: one of the QRAFT_E*
 * codes, a negative errno, or 0 ("success"). Never returns NULL; an unknown
 * code gives "unknown error". Thread-safe.
 */
const char *qraft_strerror(int code);

/* Returns the symbolic name ("QRAFT_ECORRUPT", "ENOENT", "OK") of `code`, or
 * "E?" for an unknown code. Static string; thread-safe. */
const char *qraft_errname(int code);

#define QRAFT_ERR_FRAMES_MAX 8
#define QRAFT_ERR_MSG_MAX 120
#define QRAFT_ERR_BACKTRACE_MAX 32

typedef struct qraft_err_frame {
  int code;
  const char *file; /* static string (__FILE__) */
  int line;
  const char *func; /* static string (__func__) */
  char msg[QRAFT_ERR_MSG_MAX];
} qraft_err_frame;

/*
 * An error context chain. The caller owns it (usually on the stack); it holds
 * no pointers to heap memory and needs no cleanup.
 *
 * frames[0] is where the error began (the root); later frames are context
 * added by callers on the way up. `code` is the code of the newest frame.
 */
typedef struct qraft_err {
  int code;
  uint32_t frames_n;
  uint32_t frames_dropped;
  qraft_err_frame frames[QRAFT_ERR_FRAMES_MAX];
  bool backtrace_on;
  int backtrace_n;
  void *backtrace[QRAFT_ERR_BACKTRACE_MAX];
} qraft_err;

/* Flags for qraft_err_init. */
#define QRAFT_ERR_WANT_BACKTRACE 1u

/* Resets `err` to "no error". With QRAFT_ERR_WANT_BACKTRACE the first frame
 * recorded also captures the call stack (glibc backtrace(); the first capture
 * in a process may load libgcc). */
void qraft_err_init(qraft_err *err, unsigned flags);

/*
 * Records a frame and returns `code`, so that a failing path reads
 *     return QRAFT_ERR(err, QRAFT_ECORRUPT, "segment %s: bad crc", name);
 * `err` may be NULL, in which case nothing is recorded. `code` must be
 * negative. The message is printf-formatted into the frame and truncated to
 * QRAFT_ERR_MSG_MAX - 1 bytes. Never allocates.
 */
#define QRAFT_ERR(err, code, ...)                                              \
  qraft__err_push((err), (code), __FILE__, __LINE__, __func__, __VA_ARGS__)

int qraft__err_push(qraft_err *err, int code, const char *file, int line,
                    const char *func, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

/* True if `err` holds at least one frame. */
bool qraft_err_is_set(const qraft_err *err);

/*
 * Formats the chain on one line into `buf` (always NUL-terminated when
 * `buf_size` > 0), newest context first, for example
 *   "append 41..57: write batch: bad checksum [QRAFT_ECORRUPT: data is
 *    corrupt] (at src/storage/wal.c:120 wal_read <- src/storage/wal.c:300 ...)"
 * Returns the length the full text needs, like snprintf.
 */
size_t qraft_err_format(const qraft_err *err, char *buf, size_t buf_size);

/* Writes the one-line chain and a newline to `f`, then, if one was captured,
 * the backtrace, one frame per line. */
void qraft_err_print(const qraft_err *err, FILE *f);

#ifdef __cplusplus
}
#endif
#endif
