/*
 * error.c: error codes and context chains. Never allocates: frames live in
 * the caller's qraft_err.
 */
#include <qraft/error.h>

#include <execinfo.h>
#include <stdarg.h>
#include <string.h>

const char *qraft_strerror(int code) {
  if (code == 0) {
    return "success";
  }
  switch (code) {
#define QRAFT__ERR_DESC(name, value, desc)                                     \
  case value:                                                                  \
    return desc;
    QRAFT_ERRORS(QRAFT__ERR_DESC)
#undef QRAFT__ERR_DESC
  default:
    break;
  }
  if (code < 0 && code > QRAFT_ERRNO_BAND_MAX) {
    const char *d = strerrordesc_np(-code);
    if (d != NULL) {
      return d;
    }
  }
  return "unknown error";
}

const char *qraft_errname(int code) {
  if (code == 0) {
    return "OK";
  }
  switch (code) {
#define QRAFT__ERR_NAME(name, value, desc)                                     \
  case value:                                                                  \
    return #name;
    QRAFT_ERRORS(QRAFT__ERR_NAME)
#undef QRAFT__ERR_NAME
  default:
    break;
  }
  if (code < 0 && code > QRAFT_ERRNO_BAND_MAX) {
    const char *n = strerrorname_np(-code);
    if (n != NULL) {
      return n;
    }
  }
  return "E?";
}

void qraft_err_init(qraft_err *err, unsigned flags) {
  err->code = 0;
  err->frames_n = 0;
  err->frames_dropped = 0;
  err->backtrace_on = (flags & QRAFT_ERR_WANT_BACKTRACE) != 0;
  err->backtrace_n = 0;
}

int qraft__err_push(qraft_err *err, int code, const char *file, int line,
                    const char *func, const char *fmt, ...) {
  if (err == NULL) {
    return code;
  }
  err->code = code;
  if (err->frames_n == 0 && err->backtrace_on) {
    err->backtrace_n = backtrace(err->backtrace, QRAFT_ERR_BACKTRACE_MAX);
  }
  if (err->frames_n == QRAFT_ERR_FRAMES_MAX) {
    /* Keep the root and the oldest context; the newest frame replaces the
     * last slot so that the outermost context is never lost. */
    err->frames_dropped++;
    err->frames_n--;
  }
  qraft_err_frame *f = &err->frames[err->frames_n++];
  f->code = code;
  f->file = file;
  f->line = line;
  f->func = func;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(f->msg, sizeof f->msg, fmt, ap);
  va_end(ap);
  return code;
}

bool qraft_err_is_set(const qraft_err *err) {
  return err != NULL && err->frames_n > 0;
}

/* snprintf into buf at *off, tracking the length the whole text needs. */
static void err_append(char *buf, size_t size, size_t *off, const char *fmt,
                       ...) __attribute__((format(printf, 4, 5)));
static void err_append(char *buf, size_t size, size_t *off, const char *fmt,
                       ...) {
  va_list ap;
  va_start(ap, fmt);
  char *dst = NULL;
  size_t room = 0;
  if (*off < size) {
    dst = buf + *off;
    room = size - *off;
  }
  int n = vsnprintf(dst, room, fmt, ap);
  va_end(ap);
  if (n > 0) {
    *off += (size_t)n;
  }
}

static const char *err_basename_src(const char *file) {
  /* Print paths from "src/" (or the file name) to keep lines short. */
  const char *p = strstr(file, "src/");
  if (p == NULL) {
    p = strstr(file, "tests/");
  }
  if (p != NULL) {
    return p;
  }
  const char *slash = strrchr(file, '/');
  return slash ? slash + 1 : file;
}

size_t qraft_err_format(const qraft_err *err, char *buf, size_t buf_size) {
  size_t off = 0;
  if (buf_size > 0) {
    buf[0] = '\0';
  }
  if (!qraft_err_is_set(err)) {
    err_append(buf, buf_size, &off, "no error");
    return off;
  }
  for (uint32_t i = err->frames_n; i-- > 0;) {
    const qraft_err_frame *f = &err->frames[i];
    if (f->msg[0] != '\0') {
      err_append(buf, buf_size, &off, "%s%s", f->msg, i > 0 ? ": " : "");
    }
  }
  const qraft_err_frame *root = &err->frames[0];
  err_append(buf, buf_size, &off, " [%s: %s]", qraft_errname(root->code),
             qraft_strerror(root->code));
  if (err->code != root->code) {
    err_append(buf, buf_size, &off, " [reported as %s]",
               qraft_errname(err->code));
  }
  err_append(buf, buf_size, &off, " (at");
  for (uint32_t i = 0; i < err->frames_n; i++) {
    const qraft_err_frame *f = &err->frames[i];
    err_append(buf, buf_size, &off, "%s %s:%d %s", i > 0 ? " <-" : "",
               err_basename_src(f->file), f->line, f->func);
  }
  if (err->frames_dropped > 0) {
    err_append(buf, buf_size, &off, " <- %u more", err->frames_dropped);
  }
  err_append(buf, buf_size, &off, ")");
  return off;
}

void qraft_err_print(const qraft_err *err, FILE *f) {
  char line[QRAFT_ERR_FRAMES_MAX * (QRAFT_ERR_MSG_MAX + 96) + 128];
  qraft_err_format(err, line, sizeof line);
  fprintf(f, "%s\n", line);
  if (err != NULL && err->backtrace_n > 0) {
    fprintf(f, "backtrace of where the error began:\n");
    fflush(f);
    backtrace_symbols_fd(err->backtrace, err->backtrace_n, fileno(f));
  }
}
