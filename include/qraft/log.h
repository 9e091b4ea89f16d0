/*
 * qraft/log.h: structured logging with levels and a pluggable sink.
 *
 * A log record is a level, a source location, a short constant message and
 * key=value fields:
 *
 *   QRAFT_LOG(logger, QRAFT_LOG_INFO, "became leader",
 *             QRAFT_LOG_U64("term", term), QRAFT_LOG_U64("id", id));
 *
 * When the level is below the logger's threshold nothing is evaluated: the
 * fields are built only inside the level check, so a disabled record costs
 * one load and one compare.
 *
 * A `qraft_logger` is owned by the caller; modules that log (the node, the
 * transport, the simulator) take one in their configuration. NULL means the
 * process-wide default logger, whose sink writes timestamped lines to stderr.
 */
#ifndef QRAFT_LOG_H
#define QRAFT_LOG_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum qraft_log_level {
  QRAFT_LOG_TRACE = 0,
  QRAFT_LOG_DEBUG = 1,
  QRAFT_LOG_INFO = 2,
  QRAFT_LOG_WARN = 3,
  QRAFT_LOG_ERROR = 4,
  QRAFT_LOG_OFF = 5, /* as a threshold: log nothing */
} qraft_log_level;

typedef enum qraft_log_field_type {
  QRAFT_LOG_FIELD_I64,
  QRAFT_LOG_FIELD_U64,
  QRAFT_LOG_FIELD_STR,
  QRAFT_LOG_FIELD_F64,
} qraft_log_field_type;

typedef struct qraft_log_field {
  const char *key;
  qraft_log_field_type type;
  union {
    int64_t i64;
    uint64_t u64;
    const char *str;
    double f64;
  } v;
} qraft_log_field;

#define QRAFT_LOG_I64(k, x)                                                    \
  ((qraft_log_field){.key = (k), .type = QRAFT_LOG_FIELD_I64, .v.i64 = (int64_t)(x)})
#define QRAFT_LOG_U64(k, x)                                                    \
  ((qraft_log_field){.key = (k), .type = QRAFT_LOG_FIELD_U64, .v.u64 = (uint64_t)(x)})
#define QRAFT_LOG_STR(k, x)                                                    \
  ((qraft_log_field){.key = (k), .type = QRAFT_LOG_FIELD_STR, .v.str = (x)})
#define QRAFT_LOG_F64(k, x)                                                    \
  ((qraft_log_field){.key = (k), .type = QRAFT_LOG_FIELD_F64, .v.f64 = (double)(x)})

/*
 * A sink receives each enabled record. `msg`, `fields` and the strings in
 * them are valid only during the call. A sink may be called from any thread
 * that logs, concurrently; it must be thread-safe and must not call back into
 * the logger it serves.
 */
typedef void (*qraft_log_sink_cb)(void *ud, qraft_log_level level,
                                  const char *file, int line, const char *msg,
                                  const qraft_log_field *fields,
                                  size_t fields_n);

typedef struct qraft_logger {
  int level; /* threshold: records below it are dropped */
  qraft_log_sink_cb sink_cb;
  void *sink_ud;
  const char *name; /* optional prefix field "node=<name>" for the default sink */
} qraft_logger;

/* Initializes `lg` with the stderr sink and threshold `level`. */
void qraft_logger_init(qraft_logger *lg, qraft_log_level level);

/* The process-wide default logger (threshold QRAFT_LOG_WARN, or the level named
 * by the environment variable QRAFT_LOG=trace|debug|info|warn|error|off read at
 * first use). Setting its fields is not synchronized with logging threads: do
 * it before starting them. */
qraft_logger *qraft_log_default(void);

/* The stderr sink: "2026-11-26T13:40:03.123456Z INFO  msg k=v k=v (file:line)".
 * `ud` is the logger's name or NULL. Writes each record with one write(2). */
void qraft_log_sink_stderr(void *ud, qraft_log_level level, const char *file,
                           int line, const char *msg,
                           const qraft_log_field *fields, size_t fields_n);

/* The JSON sink: one object a line on stderr, {"ts", "level" (lower
 * case), "node" (the logger's name, if any), "msg", then each field by
 * its key (numbers as numbers), "src": "file:line"}. `ud` is the logger's
 * name or NULL. One write(2) a record; a record longer than 2 KiB keeps
 * its message and gets "truncated": its length instead of its fields. */
void qraft_log_sink_json(void *ud, qraft_log_level level, const char *file,
                         int line, const char *msg,
                         const qraft_log_field *fields, size_t fields_n);
/* Formats a record as the JSON sink does (with its timestamp) into buf;
 * returns the length the full text needs. */
size_t qraft_log_format_json(char *buf, size_t size, qraft_log_level level,
                             const char *file, int line, const char *msg,
                             const qraft_log_field *fields, size_t fields_n,
                             const char *name);

/* Formats a record as the stderr sink does, without the timestamp, into buf
 * (NUL-terminated when size > 0). Returns the length the full text needs. */
size_t qraft_log_format(char *buf, size_t size, qraft_log_level level,
                        const char *file, int line, const char *msg,
                        const qraft_log_field *fields, size_t fields_n);

/* "TRACE", "DEBUG", "INFO", "WARN", "ERROR" or "OFF". */
const char *qraft_log_level_name(qraft_log_level level);

/* Parses a level name (case-insensitive); returns 0 or -EINVAL. */
int qraft_log_level_parse(const char *name, qraft_log_level *out);

static inline qraft_logger *qraft__log_pick(qraft_logger *lg) {
  return lg != NULL ? lg : qraft_log_default();
}

void qraft__log_emit(qraft_logger *lg, qraft_log_level level, const char *file,
                     int line, const char *msg, const qraft_log_field *fields,
                     size_t fields_n);

/* The first element of the array is a dummy so that a record without
 * fields is still a valid array. */
#define QRAFT_LOG(lg, lvl, msg, ...)                                           \
  do {                                                                         \
    qraft_logger *qraft__lg = qraft__log_pick(lg);                             \
    if ((int)(lvl) >= qraft__lg->level) {                                      \
      const qraft_log_field qraft__f[] = {{0}, __VA_ARGS__};                   \
      qraft__log_emit(qraft__lg, (lvl), __FILE__, __LINE__, (msg),             \
                      qraft__f + 1,                                            \
                      sizeof qraft__f / sizeof qraft__f[0] - 1);               \
    }                                                                          \
  } while (0)

#ifdef __cplusplus
}
#endif
#endif
