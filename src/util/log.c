/*
 * log.c: levels, sinks and the default stderr sink.
 */
#include <qraft/log.h>

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static qraft_logger log_default_logger;
static pthread_once_t log_default_once = PTHREAD_ONCE_INIT;

static const char *const log_level_names[] = {"TRACE", "DEBUG", "INFO",
                                              "WARN",  "ERROR", "OFF"};

const char *qraft_log_level_name(qraft_log_level level) {
  if ((unsigned)level > QRAFT_LOG_OFF) {
    return "?";
  }
  return log_level_names[level];
}

int qraft_log_level_parse(const char *name, qraft_log_level *out) {
  for (int i = 0; i <= QRAFT_LOG_OFF; i++) {
    if (strcasecmp(name, log_level_names[i]) == 0) {
      *out = (qraft_log_level)i;
      return 0;
    }
  }
  if (strcasecmp(name, "warning") == 0) {
    *out = QRAFT_LOG_WARN;
    return 0;
  }
  return -EINVAL;
}

void qraft_logger_init(qraft_logger *lg, qraft_log_level level) {
  lg->level = (int)level;
  lg->sink_cb = qraft_log_sink_stderr;
  lg->sink_ud = NULL;
  lg->name = NULL;
}

static void log_default_init(void) {
  qraft_log_level level = QRAFT_LOG_WARN;
  const char *env = getenv("QRAFT_LOG");
  if (env != NULL) {
    (void)qraft_log_level_parse(env, &level);
  }
  qraft_logger_init(&log_default_logger, level);
}

qraft_logger *qraft_log_default(void) {
  pthread_once(&log_default_once, log_default_init);
  return &log_default_logger;
}

static void log_put(char *buf, size_t size, size_t *off, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void log_put(char *buf, size_t size, size_t *off, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(*off < size ? buf + *off : NULL,
                    *off < size ? size - *off : 0, fmt, ap);
  va_end(ap);
  if (n > 0) {
    *off += (size_t)n;
  }
}

/* Strings with spaces, '=' or quotes are quoted so lines stay parseable. */
static void log_put_str(char *buf, size_t size, size_t *off, const char *s) {
  if (s == NULL) {
    log_put(buf, size, off, "(null)");
    return;
  }
  bool plain = s[0] != '\0' && strpbrk(s, " =\"\t\n") == NULL;
  if (plain) {
    log_put(buf, size, off, "%s", s);
    return;
  }
  log_put(buf, size, off, "\"");
  for (const char *p = s; *p; p++) {
    if (*p == '"' || *p == '\\') {
      log_put(buf, size, off, "\\%c", *p);
    } else if (*p == '\n') {
      log_put(buf, size, off, "\\n");
    } else {
      log_put(buf, size, off, "%c", *p);
    }
  }
  log_put(buf, size, off, "\"");
}

/* A JSON string: quotes, backslashes and control bytes escaped; bytes
 * above 0x7f pass as they are (our strings are UTF-8 or ASCII). */
static void log_put_json_str(char *buf, size_t size, size_t *off,
                             const char *s) {
  log_put(buf, size, off, "\"");
  for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
    if (*p == '"' || *p == '\\') {
      log_put(buf, size, off, "\\%c", *p);
    } else if (*p == '\n') {
      log_put(buf, size, off, "\\n");
    } else if (*p < 0x20) {
      log_put(buf, size, off, "\\u%04x", *p);
    } else {
      log_put(buf, size, off, "%c", *p);
    }
  }
  log_put(buf, size, off, "\"");
}

/* A field's value: as text (strings quoted when they need it), or as JSON
 * (strings always quoted, NaN and infinities as null). */
static void log_put_value(char *buf, size_t size, size_t *off,
                          const qraft_log_field *f, bool json) {
  switch (f->type) {
  case QRAFT_LOG_FIELD_I64:
    log_put(buf, size, off, "%lld", (long long)f->v.i64);
    break;
  case QRAFT_LOG_FIELD_U64:
    log_put(buf, size, off, "%llu", (unsigned long long)f->v.u64);
    break;
  case QRAFT_LOG_FIELD_STR:
    if (json) {
      log_put_json_str(buf, size, off, f->v.str);
    } else {
      log_put_str(buf, size, off, f->v.str);
    }
    break;
  case QRAFT_LOG_FIELD_F64:
    if (!json) {
      log_put(buf, size, off, "%g", f->v.f64);
    } else if (f->v.f64 == f->v.f64 && f->v.f64 - f->v.f64 == 0) {
      log_put(buf, size, off, "%.17g", f->v.f64);
    } else {
      log_put(buf, size, off, "null");
    }
    break;
  }
}

size_t qraft_log_format(char *buf, size_t size, qraft_log_level level,
                        const char *file, int line, const char *msg,
                        const qraft_log_field *fields, size_t fields_n) {
  size_t off = 0;
  if (size > 0) {
    buf[0] = '\0';
  }
  log_put(buf, size, &off, "%-5s %s", qraft_log_level_name(level), msg);
  for (size_t i = 0; i < fields_n; i++) {
    log_put(buf, size, &off, " %s=", fields[i].key);
    log_put_value(buf, size, &off, &fields[i], false);
  }
  const char *base = strrchr(file, '/');
  log_put(buf, size, &off, " (%s:%d)", base ? base + 1 : file, line);
  return off;
}

void qraft_log_sink_stderr(void *ud, qraft_log_level level, const char *file,
                           int line, const char *msg,
                           const qraft_log_field *fields, size_t fields_n) {
  char buf[1024];
  size_t off = 0;
  struct timespec ts;
  struct tm tm;
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  off = strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  off += (size_t)snprintf(buf + off, sizeof buf - off, ".%06ldZ ",
                          ts.tv_nsec / 1000);
  if (ud != NULL) {
    off += (size_t)snprintf(buf + off, sizeof buf - off, "[%s] ",
                            (const char *)ud);
  }
  size_t need = qraft_log_format(buf + off, sizeof buf - off - 1, level, file,
                                 line, msg, fields, fields_n);
  size_t len = off + need;
  if (len > sizeof buf - 2) {
    len = sizeof buf - 2; /* truncated record */
  }
  buf[len++] = '\n';
  ssize_t w = write(STDERR_FILENO, buf, len);
  (void)w;
}

size_t qraft_log_format_json(char *buf, size_t size, qraft_log_level level,
                             const char *file, int line, const char *msg,
                             const qraft_log_field *fields, size_t fields_n,
                             const char *name) {
  size_t off = 0;
  if (size > 0) {
    buf[0] = '\0';
  }
  struct timespec ts;
  struct tm tm;
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  char when[40];
  strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
  static const char *const lower[] = {"trace", "debug", "info", "warn",
                                      "error", "off"};
  log_put(buf, size, &off, "{\"ts\":\"%s.%06ldZ\",\"level\":\"%s\"", when,
          ts.tv_nsec / 1000,
          (int)level >= 0 && (int)level <= 5 ? lower[level] : "?");
  if (name != NULL) {
    log_put(buf, size, &off, ",\"node\":");
    log_put_json_str(buf, size, &off, name);
  }
  log_put(buf, size, &off, ",\"msg\":");
  log_put_json_str(buf, size, &off, msg);
  for (size_t i = 0; i < fields_n; i++) {
    log_put(buf, size, &off, ",");
    log_put_json_str(buf, size, &off, fields[i].key);
    log_put(buf, size, &off, ":");
    log_put_value(buf, size, &off, &fields[i], true);
  }
  const char *base = strrchr(file, '/');
  log_put(buf, size, &off, ",\"src\":\"%s:%d\"}", base ? base + 1 : file,
          line);
  return off;
}

void qraft_log_sink_json(void *ud, qraft_log_level level, const char *file,
                         int line, const char *msg,
                         const qraft_log_field *fields, size_t fields_n) {
  char buf[2048];
  size_t need = qraft_log_format_json(buf, sizeof buf - 1, level, file, line,
                                      msg, fields, fields_n, ud);
  if (need >= sizeof buf - 1) {
    /* too long for one line: the record without its fields, marked */
    qraft_log_field cut = {.key = "truncated",
                           .type = QRAFT_LOG_FIELD_U64,
                           .v.u64 = need};
    need = qraft_log_format_json(buf, sizeof buf - 1, level, file, line, msg,
                                 &cut, 1, ud);
    if (need >= sizeof buf - 1) {
      need = (size_t)snprintf(buf, sizeof buf - 1,
                              "{\"level\":\"error\",\"msg\":\"a log record "
                              "too long to print\"}");
    }
  }
  buf[need++] = '\n';
  ssize_t w = write(STDERR_FILENO, buf, need);
  (void)w;
}

void qraft__log_emit(qraft_logger *lg, qraft_log_level level, const char *file,
                     int line, const char *msg, const qraft_log_field *fields,
                     size_t fields_n) {
  if (lg->sink_cb == NULL) {
    return;
  }
  void *ud = lg->sink_ud;
  if ((lg->sink_cb == qraft_log_sink_stderr ||
       lg->sink_cb == qraft_log_sink_json) &&
      ud == NULL) {
    ud = (void *)lg->name;
  }
  lg->sink_cb(ud, level, file, line, msg, fields, fields_n);
}
