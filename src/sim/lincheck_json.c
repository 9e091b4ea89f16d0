/*
 * lincheck_json.c: histories as JSON lines (docs/lincheck.md), read with
 * jansson and written by hand. Only the loader and the writer do I/O; the
 * checker itself never sees JSON.
 */
#include "sim/lincheck.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include <qraft/assert.h>

/* Interns a JSON value by its compact encoding. */
static int json_intern(qraft__lincheck_history *h, qraft__lincheck_kind kind,
                       const json_t *v, uint64_t *id) {
  char *text = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT | JSON_SORT_KEYS);
  if (!text) {
    return -ENOMEM;
  }
  int rc = qraft__lincheck_intern(h, kind, text, id);
  free(text);
  return rc;
}

static bool json_is_scalar(const json_t *v) {
  return json_is_string(v) || json_is_integer(v) || json_is_real(v) ||
         json_is_boolean(v);
}

static int parse_f(const char *s, qraft__lincheck_f *f) {
  static const struct {
    const char *name;
    qraft__lincheck_f f;
  } names[] = {{"put", QRAFT_LINCHECK_PUT},
               {"write", QRAFT_LINCHECK_PUT},
               {"get", QRAFT_LINCHECK_GET},
               {"read", QRAFT_LINCHECK_GET},
               {"cas", QRAFT_LINCHECK_CAS},
               {"del", QRAFT_LINCHECK_DEL},
               {"delete", QRAFT_LINCHECK_DEL}};
  for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
    if (strcmp(s, names[i].name) == 0) {
      *f = names[i].f;
      return 0;
    }
  }
  return -1;
}

/* Finds the pending operation of `process` (the builder checks the rest). */
static const qraft__lincheck_op *find_pending(const qraft__lincheck_history *h,
                                              uint64_t process) {
  size_t n = qraft__lincheck_history_ops_n(h);
  for (size_t i = n; i-- > 0;) {
    const qraft__lincheck_op *o = qraft__lincheck_history_op(h, i);
    if (o->process == process) {
      return o->status == QRAFT_LINCHECK_PENDING ? o : NULL;
    }
  }
  return NULL;
}

static int load_invoke(qraft__lincheck_history *h, json_t *obj,
                       uint64_t process, uint64_t time_ns, qraft_err *err) {
  const char *fs = json_string_value(json_object_get(obj, "f"));
  qraft__lincheck_f f;
  if (!fs || parse_f(fs, &f) != 0) {
    return QRAFT_ERR(err, QRAFT_EMALFORMED,
                     "\"f\" must be \"put\", \"get\", \"cas\" or \"del\"");
  }
  json_t *jkey = json_object_get(obj, "key");
  if (!jkey || !json_is_scalar(jkey)) {
    return QRAFT_ERR(err, QRAFT_EMALFORMED, "\"key\" missing or not a scalar");
  }
  uint64_t key;
  int rc = json_intern(h, QRAFT_LINCHECK_KIND_KEY, jkey, &key);
  if (rc) {
    return QRAFT_ERR(err, rc, "key");
  }
  json_t *jv = json_object_get(obj, "value");
  uint64_t value = 0, value_new = 0;
  switch (f) {
  case QRAFT_LINCHECK_PUT:
    if (!jv || !json_is_scalar(jv)) {
      return QRAFT_ERR(err, QRAFT_EMALFORMED,
                       "put: \"value\" missing or not a scalar");
    }
    rc = json_intern(h, QRAFT_LINCHECK_KIND_VALUE, jv, &value);
    break;
  case QRAFT_LINCHECK_CAS: {
    json_t *je = json_array_get(jv, 0);
    json_t *jn = json_array_get(jv, 1);
    if (!json_is_array(jv) || json_array_size(jv) != 2 ||
        !(json_is_null(je) || json_is_scalar(je)) || !json_is_scalar(jn)) {
      return QRAFT_ERR(err, QRAFT_EMALFORMED,
                       "cas: \"value\" must be [expected, new]");
    }
    if (!json_is_null(je)) {
      rc = json_intern(h, QRAFT_LINCHECK_KIND_VALUE, je, &value);
    }
    if (rc == 0) {
      rc = json_intern(h, QRAFT_LINCHECK_KIND_VALUE, jn, &value_new);
    }
    break;
  }
  case QRAFT_LINCHECK_GET:
  case QRAFT_LINCHECK_DEL:
    if (jv && !json_is_null(jv)) {
      return QRAFT_ERR(err, QRAFT_EMALFORMED,
                       "%s: \"value\" must be null or absent on invoke", fs);
    }
    break;
  }
  if (rc) {
    return QRAFT_ERR(err, rc, "value");
  }
  return qraft__lincheck_invoke(h, process, time_ns, f, key, value, value_new,
                                err);
}

static int load_complete(qraft__lincheck_history *h, json_t *obj,
                         const char *type, uint64_t process, uint64_t time_ns,
                         qraft_err *err) {
  const qraft__lincheck_op *op = find_pending(h, process);
  if (!op) {
    return QRAFT_ERR(err, QRAFT_EMALFORMED,
                     "\"%s\" with no pending invocation of this process",
                     type);
  }
  /* f and key, where given, must be those of the invocation. */
  const char *fs = json_string_value(json_object_get(obj, "f"));
  qraft__lincheck_f f;
  if (fs && (parse_f(fs, &f) != 0 || f != op->f)) {
    return QRAFT_ERR(err, QRAFT_EMALFORMED,
                     "\"f\": \"%s\" is not the invoked operation", fs);
  }
  json_t *jkey = json_object_get(obj, "key");
  if (jkey) {
    uint64_t key;
    int rc = json_intern(h, QRAFT_LINCHECK_KIND_KEY, jkey, &key);
    if (rc) {
      return QRAFT_ERR(err, rc, "key");
    }
    if (key != op->key) {
      return QRAFT_ERR(err, QRAFT_EMALFORMED,
                       "\"key\" is not the invoked operation's");
    }
  }
  if (strcmp(type, "info") == 0) {
    json_t *jb = json_object_get(obj, "effect_by");
    if (jb && (!json_is_integer(jb) || json_integer_value(jb) < 0 ||
               op->f == QRAFT_LINCHECK_GET)) {
      return QRAFT_ERR(err, QRAFT_EMALFORMED,
                       "\"effect_by\" must be a non-negative integer, on "
                       "the info line of a write");
    }
    size_t i = 0;
    int rc = qraft__lincheck_pending_op(h, process, &i);
    if (rc == 0) {
      rc = qraft__lincheck_info(h, process, time_ns, err);
    }
    if (rc == 0 && jb) {
      rc = qraft__lincheck_effect_by(h, i, (uint64_t)json_integer_value(jb),
                                     err);
    }
    return rc;
  }
  if (strcmp(type, "fail") == 0) {
    return qraft__lincheck_fail(h, process, time_ns, err);
  }
  QRAFT_ASSERT(strcmp(type, "ok") == 0);
  uint64_t result = 0;
  if (op->f == QRAFT_LINCHECK_GET) {
    json_t *jv = json_object_get(obj, "value");
    if (!jv || !(json_is_null(jv) || json_is_scalar(jv))) {
      return QRAFT_ERR(err, QRAFT_EMALFORMED,
                       "get: \"value\" (the value read, null if missing) "
                       "missing or not a scalar");
    }
    if (!json_is_null(jv)) {
      int rc = json_intern(h, QRAFT_LINCHECK_KIND_VALUE, jv, &result);
      if (rc) {
        return QRAFT_ERR(err, rc, "value");
      }
    }
  } else if (op->f == QRAFT_LINCHECK_CAS) {
    json_t *jr = json_object_get(obj, "result");
    const char *r = json_string_value(jr);
    if (!jr || (r && strcmp(r, "ok") == 0)) {
      result = 1;
    } else if (r && strcmp(r, "failed") == 0) {
      result = 0;
    } else {
      return QRAFT_ERR(err, QRAFT_EMALFORMED,
                       "cas: \"result\" must be \"ok\" or \"failed\"");
    }
  }
  return qraft__lincheck_complete(h, process, time_ns, result, err);
}

static int load_line(qraft__lincheck_history *h, const char *line,
                     qraft_err *err) {
  json_error_t jerr;
  json_t *obj = json_loads(line, 0, &jerr);
  if (!obj) {
    return QRAFT_ERR(err, QRAFT_EMALFORMED, "column %d: %s", jerr.column,
                     jerr.text);
  }
  int rc;
  json_t *jp = json_object_get(obj, "process");
  json_t *jt = json_object_get(obj, "time");
  const char *type = json_string_value(json_object_get(obj, "type"));
  uint64_t process;
  if (!json_is_object(obj)) {
    rc = QRAFT_ERR(err, QRAFT_EMALFORMED, "not a JSON object");
  } else if (!jp || !json_is_scalar(jp)) {
    rc = QRAFT_ERR(err, QRAFT_EMALFORMED, "\"process\" missing");
  } else if (!json_is_integer(jt) || json_integer_value(jt) < 0) {
    rc = QRAFT_ERR(err, QRAFT_EMALFORMED,
                   "\"time\" missing or not a non-negative integer");
  } else if (!type || (strcmp(type, "invoke") != 0 &&
                       strcmp(type, "ok") != 0 && strcmp(type, "fail") != 0 &&
                       strcmp(type, "info") != 0)) {
    rc = QRAFT_ERR(err, QRAFT_EMALFORMED,
                   "\"type\" must be \"invoke\", \"ok\", \"fail\" or "
                   "\"info\"");
  } else if ((rc = json_intern(h, QRAFT_LINCHECK_KIND_PROCESS, jp,
                               &process)) != 0) {
    rc = QRAFT_ERR(err, rc, "process");
  } else if (strcmp(type, "invoke") == 0) {
    rc = load_invoke(h, obj, process, (uint64_t)json_integer_value(jt), err);
  } else {
    rc = load_complete(h, obj, type, process,
                       (uint64_t)json_integer_value(jt), err);
  }
  json_decref(obj);
  return rc;
}

int qraft__lincheck_load_jsonl(qraft__lincheck_history *h, FILE *f,
                               qraft_err *err) {
  char *line = NULL;
  size_t line_cap = 0;
  uint64_t line_no = 0;
  int rc = 0;
  ssize_t n;
  while ((n = getline(&line, &line_cap, f)) >= 0) {
    line_no++;
    if (strspn(line, " \t\r\n") == (size_t)n) {
      continue;
    }
    rc = load_line(h, line, err);
    if (rc) {
      QRAFT_ERR(err, rc, "line %" PRIu64, line_no);
      break;
    }
  }
  if (rc == 0 && ferror(f)) {
    rc = QRAFT_ERR(err, -EIO, "read error after line %" PRIu64, line_no);
  }
  free(line);
  return rc;
}

int qraft__lincheck_load_jsonl_path(qraft__lincheck_history *h,
                                    const char *path, qraft_err *err) {
  FILE *f = fopen(path, "r");
  if (!f) {
    int rc = -errno;
    return QRAFT_ERR(err, rc, "open %s", path);
  }
  int rc = qraft__lincheck_load_jsonl(h, f, err);
  fclose(f);
  if (rc) {
    QRAFT_ERR(err, rc, "%s", path);
  }
  return rc;
}

/* ----------------------------------------------------------------- writer */

typedef struct write_event {
  uint64_t time;
  size_t op;
  bool is_completion;
} write_event;

static int write_event_cmp(const void *a, const void *b) {
  const write_event *x = a;
  const write_event *y = b;
  if (x->time != y->time) {
    return x->time < y->time ? -1 : 1;
  }
  /* By operation next, so that a process's completion at time t comes
   * before its next invocation at the same t. */
  if (x->op != y->op) {
    return x->op < y->op ? -1 : 1;
  }
  return (int)x->is_completion - (int)y->is_completion;
}

static void write_id(const qraft__lincheck_history *h,
                     qraft__lincheck_kind kind, uint64_t id, FILE *f) {
  const char *name = qraft__lincheck_name(h, kind, id);
  if (kind == QRAFT_LINCHECK_KIND_VALUE && id == QRAFT_LINCHECK_MISSING) {
    fputs("null", f);
  } else if (name) {
    fputs(name, f);
  } else {
    fprintf(f, "%" PRIu64, id);
  }
}

static void write_event_line(const qraft__lincheck_history *h,
                             const write_event *ev, FILE *f) {
  static const char *const f_names[] = {
      [QRAFT_LINCHECK_PUT] = "put",
      [QRAFT_LINCHECK_GET] = "get",
      [QRAFT_LINCHECK_CAS] = "cas",
      [QRAFT_LINCHECK_DEL] = "del",
  };
  static const char *const type_names[] = {
      [QRAFT_LINCHECK_OK] = "ok",
      [QRAFT_LINCHECK_INFO] = "info",
      [QRAFT_LINCHECK_FAIL] = "fail",
  };
  const qraft__lincheck_op *op = qraft__lincheck_history_op(h, ev->op);
  fputs("{\"process\":", f);
  write_id(h, QRAFT_LINCHECK_KIND_PROCESS, op->process, f);
  fprintf(f, ",\"type\":\"%s\",\"f\":\"%s\",\"key\":",
          ev->is_completion ? type_names[op->status] : "invoke",
          f_names[op->f]);
  write_id(h, QRAFT_LINCHECK_KIND_KEY, op->key, f);
  fputs(",\"value\":", f);
  switch (op->f) {
  case QRAFT_LINCHECK_PUT:
    write_id(h, QRAFT_LINCHECK_KIND_VALUE, op->value, f);
    break;
  case QRAFT_LINCHECK_CAS:
    fputc('[', f);
    write_id(h, QRAFT_LINCHECK_KIND_VALUE, op->value, f);
    fputc(',', f);
    write_id(h, QRAFT_LINCHECK_KIND_VALUE, op->value_new, f);
    fputc(']', f);
    break;
  case QRAFT_LINCHECK_GET:
    write_id(h, QRAFT_LINCHECK_KIND_VALUE,
             ev->is_completion && op->status == QRAFT_LINCHECK_OK
                 ? op->out
                 : QRAFT_LINCHECK_MISSING,
             f);
    break;
  case QRAFT_LINCHECK_DEL:
    fputs("null", f);
    break;
  }
  if (ev->is_completion && op->status == QRAFT_LINCHECK_OK &&
      op->f == QRAFT_LINCHECK_CAS) {
    fprintf(f, ",\"result\":\"%s\"", op->cas_swapped ? "ok" : "failed");
  }
  if (ev->is_completion && op->status == QRAFT_LINCHECK_INFO &&
      op->effect_by_ns != 0) {
    fprintf(f, ",\"effect_by\":%" PRIu64, op->effect_by_ns);
  }
  fprintf(f, ",\"time\":%" PRIu64 "}\n", ev->time);
}

int qraft__lincheck_write_jsonl(const qraft__lincheck_history *h, FILE *f,
                                qraft_err *err) {
  size_t ops_n = qraft__lincheck_history_ops_n(h);
  write_event *evs = malloc((2 * ops_n + 1) * sizeof(*evs));
  if (!evs) {
    return QRAFT_ERR(err, -ENOMEM, "write history of %zu operations", ops_n);
  }
  size_t evs_n = 0;
  for (size_t i = 0; i < ops_n; i++) {
    const qraft__lincheck_op *op = qraft__lincheck_history_op(h, i);
    evs[evs_n++] = (write_event){.time = op->call_ns, .op = i};
    if (op->status != QRAFT_LINCHECK_PENDING) {
      evs[evs_n++] =
          (write_event){.time = op->ret_ns, .op = i, .is_completion = true};
    }
  }
  qsort(evs, evs_n, sizeof(*evs), write_event_cmp);
  for (size_t i = 0; i < evs_n; i++) {
    write_event_line(h, &evs[i], f);
  }
  free(evs);
  if (fflush(f) != 0 || ferror(f)) {
    return QRAFT_ERR(err, -EIO, "write history");
  }
  return 0;
}
