/*
 * lincheck_main.c: qraft-lincheck, the linearizability checker as a
 * command: reads a JSON-lines history (docs/lincheck.md), prints the
 * verdict and, for a violation, the explanation.
 *
 * Exit codes: 0 linearizable, 1 not linearizable, 2 unknown (budget ran
 * out) or error (bad usage, unreadable or malformed file).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim/lincheck.h"

#define EXIT_LINEARIZABLE 0
#define EXIT_VIOLATION 1
#define EXIT_UNKNOWN_OR_ERROR 2

static void usage(FILE *f) {
  fputs("usage: qraft-lincheck [--steps N] [--time-ms N] [--memo-mb N] "
        "[--quiet] FILE.jsonl\n"
        "Checks a key-value history (JSON lines: process, type, f, key, "
        "value, time)\n"
        "for linearizability. Exit 0 linearizable, 1 not, 2 unknown or "
        "error.\n",
        f);
}

static int parse_u64(const char *s, uint64_t *out) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || end == s || *end || s[0] == '-') {
    return -1;
  }
  *out = v;
  return 0;
}

int main(int argc, char **argv) {
  qraft__lincheck_opts opts = {0};
  const char *path = NULL;
  bool quiet = false;
  uint64_t memo_mb = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      usage(stdout);
      return EXIT_LINEARIZABLE;
    } else if (strcmp(a, "--quiet") == 0 || strcmp(a, "-q") == 0) {
      quiet = true;
    } else if ((strcmp(a, "--steps") == 0 || strcmp(a, "--time-ms") == 0 ||
                strcmp(a, "--memo-mb") == 0) &&
               i + 1 < argc) {
      uint64_t *dst = strcmp(a, "--steps") == 0     ? &opts.steps_max
                      : strcmp(a, "--time-ms") == 0 ? &opts.time_max_ms
                                                    : &memo_mb;
      if (parse_u64(argv[++i], dst) != 0 || *dst > UINT64_MAX / (1 << 20)) {
        fprintf(stderr, "qraft-lincheck: %s wants a number, not '%s'\n", a,
                argv[i]);
        return EXIT_UNKNOWN_OR_ERROR;
      }
    } else if (a[0] == '-' || path) {
      usage(stderr);
      return EXIT_UNKNOWN_OR_ERROR;
    } else {
      path = a;
    }
  }
  if (!path) {
    usage(stderr);
    return EXIT_UNKNOWN_OR_ERROR;
  }
  opts.memo_bytes_max = memo_mb << 20;
  qraft__lincheck_history *h;
  if (qraft__lincheck_history_new(&h) != 0) {
    fputs("qraft-lincheck: out of memory\n", stderr);
    return EXIT_UNKNOWN_OR_ERROR;
  }
  qraft_err err;
  qraft_err_init(&err, 0);
  int rc = qraft__lincheck_load_jsonl_path(h, path, &err);
  qraft__lincheck_result result = {0};
  if (rc == 0) {
    rc = qraft__lincheck_check(h, &opts, &result, &err);
  }
  if (rc != 0) {
    fputs("qraft-lincheck: ", stderr);
    qraft_err_print(&err, stderr);
    qraft__lincheck_history_free(h);
    return EXIT_UNKNOWN_OR_ERROR;
  }
  if (!quiet || result.verdict != QRAFT_LINCHECK_LINEARIZABLE) {
    qraft__lincheck_result_print(h, &result, stdout);
  }
  int code = result.verdict == QRAFT_LINCHECK_LINEARIZABLE ? EXIT_LINEARIZABLE
             : result.verdict == QRAFT_LINCHECK_VIOLATION
                 ? EXIT_VIOLATION
                 : EXIT_UNKNOWN_OR_ERROR;
  qraft__lincheck_result_close(&result);
  qraft__lincheck_history_free(h);
  return code;
}
