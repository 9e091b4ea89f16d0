/*
 * qraft-relay: the relay server (qraft/relay.h) as a program. One endpoint
 * on one UDP address serves QRAFT_RELAY_ALPN; an optional allow- or
 * deny-list of node ids decides at the handshake who may connect, and is
 * read again on SIGHUP; an optional plain-HTTP listener serves Prometheus
 * metrics. Everything runs on the env's loop thread: the metrics sockets
 * and the signals (through a pipe) are descriptors the env watches, so
 * nothing here may block.
 *
 * Exit status: 0 after SIGINT or SIGTERM; 2 when the configuration is
 * wrong (flags, the --config file, the list file); 1 when the key cannot be
 * loaded or a socket cannot be bound.
 */
#include <qraft/assert.h>
#include <qraft/env.h>
#include <qraft/error.h>
#include <qraft/log.h>
#include <qraft/relay.h>
#include <qraft/transport.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MS 1000000ull

#define RELAY_LISTEN_DEFAULT "0.0.0.0:3340"
/* What clients are told on a graceful stop (RESTARTING), and how long the
 * loop runs on so that those frames go out. */
#define RELAY_RECONNECT_IN_MS 1000u
#define RELAY_TRY_FOR_MS 30000u
#define RELAY_STOP_FLUSH_MS 100u

/* Bounds of the settings. */
#define RELAY_MS_MAX 3600000u                  /* any interval: an hour */
#define RELAY_QUEUE_BYTES_MIN QRAFT_RELAY_PAYLOAD_MAX /* one full frame */
#define RELAY_QUEUE_BYTES_MAX (1ull << 30)
#define RELAY_RATE_BYTES_MAX (1ull << 40)
/* A --config file and a list file: lines up to this long. */
#define RELAY_LINE_BYTES_MAX 4096
/* Ids in an allow- or deny-list (32 bytes each: 32 MiB). */
#define RELAY_LIST_IDS_MAX (1u << 20)
/* "FILE:LINE" or "command line", as error messages name a setting. */
#define RELAY_WHERE_BYTES_MAX 320

/* The metrics listener: at most this many clients at once (one more is
 * accepted and closed at once), each with a request of at most
 * METRICS_REQUEST_BYTES_MAX bytes, closed after METRICS_IDLE_MS without
 * progress or METRICS_LIFETIME_MS in all. */
#define METRICS_CLIENTS_MAX 16
#define METRICS_REQUEST_BYTES_MAX 8192
#define METRICS_BODY_BYTES_MAX 12288
#define METRICS_RESPONSE_BYTES_MAX 16384
#define METRICS_IDLE_MS 5000u
#define METRICS_LIFETIME_MS 10000u
#define METRICS_TICK_MS 100u
#define METRICS_ACCEPT_BATCH 16
#define METRICS_BACKLOG 16

_Static_assert(METRICS_RESPONSE_BYTES_MAX >= METRICS_BODY_BYTES_MAX + 512,
               "a response holds the body and its headers");
_Static_assert(METRICS_IDLE_MS <= METRICS_LIFETIME_MS,
               "an idle client is closed before its lifetime ends");
_Static_assert(RELAY_QUEUE_BYTES_MIN <= RELAY_QUEUE_BYTES_MAX,
               "the queue bounds leave room");

/* ---- messages ----
 * Before the loop runs, and for errors that end the program, the text is
 * "qraft-relay: ..." on stderr; with --log-format json it goes through the
 * logger, so that stderr stays JSON lines. */

static bool say_json;

static void relay_say(qraft_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void relay_say(qraft_log_level level, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (!say_json) {
    fprintf(stderr, "qraft-relay: %s\n", msg);
    return;
  }
  QRAFT_LOG(NULL, level, msg);
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: qraft-relay --key KEYFILE [--listen HOST:PORT]\n"
          "         [--allow FILE | --deny FILE] [--metrics HOST:PORT]\n"
          "         [--queue-bytes N] [--write-timeout-ms N]\n"
          "         [--ping-interval-ms N] [--ping-timeout-ms N]\n"
          "         [--rate BYTES_PER_S] [--burst BYTES]\n"
          "         [--log-format text|json] [--log-level LEVEL]\n"
          "         [--config FILE]\n"
          "  Forwards datagrams between qraft endpoints named by their node\n"
          "  ids (docs/connectivity.md). Prints 'relay ID listening on\n"
          "  HOST:PORT' on stdout once it serves.\n"
          "  --listen: the UDP address (default " RELAY_LISTEN_DEFAULT
          "; IPv6 as [::]:PORT;\n"
          "  port 0 picks one).\n"
          "  --allow FILE: only the ids listed may connect; --deny FILE: the\n"
          "  ids listed may not. One id a line (64 hex or 52 base32\n"
          "  characters), '#' comments. SIGHUP reads the file again (a\n"
          "  malformed file leaves the old list in place).\n"
          "  --metrics: serve Prometheus metrics at GET /metrics (plain HTTP).\n"
          "  --queue-bytes: bytes waiting for one client before datagrams to\n"
          "  it are dropped (default 768K; K, M, G suffixes); a client whose\n"
          "  queue stays full --write-timeout-ms (2000) is closed.\n"
          "  --ping-interval-ms (15000), --ping-timeout-ms (5000): a client\n"
          "  that does not answer a ping in time is closed.\n"
          "  --rate, --burst: each client may send --rate bytes a second\n"
          "  (default: no limit) in bursts of --burst (default --rate; at\n"
          "  least 64K, the largest datagram).\n"
          "  --log-format: text (default) or json lines on stderr;\n"
          "  --log-level: trace, debug, info (default), warn, error or off.\n"
          "  --config FILE: 'name = value' lines with the flags' names\n"
          "  without '--', '#' comments; flags on the command line override\n"
          "  the file (an --allow or --deny flag replaces the file's list).\n"
          "  Exit status: 0 after SIGINT or SIGTERM, 2 for a wrong\n"
          "  configuration, 1 when the key or a socket fails.\n");
}

/* ---- settings: flags and the --config file ----
 * Each source (command line, file) fills raw strings by setting; the
 * command line's win; then the merged strings are checked and converted,
 * and an error names where its value came from. */

typedef enum relay_opt {
  OPT_KEY,
  OPT_LISTEN,
  OPT_ALLOW,
  OPT_DENY,
  OPT_METRICS,
  OPT_QUEUE_BYTES,
  OPT_WRITE_TIMEOUT_MS,
  OPT_PING_INTERVAL_MS,
  OPT_PING_TIMEOUT_MS,
  OPT_RATE,
  OPT_BURST,
  OPT_LOG_FORMAT,
  OPT_LOG_LEVEL,
  OPT_CONFIG, /* command line only */
  OPT_N
} relay_opt;

static const char *const opt_names[OPT_N] = {
    [OPT_KEY] = "key",
    [OPT_LISTEN] = "listen",
    [OPT_ALLOW] = "allow",
    [OPT_DENY] = "deny",
    [OPT_METRICS] = "metrics",
    [OPT_QUEUE_BYTES] = "queue-bytes",
    [OPT_WRITE_TIMEOUT_MS] = "write-timeout-ms",
    [OPT_PING_INTERVAL_MS] = "ping-interval-ms",
    [OPT_PING_TIMEOUT_MS] = "ping-timeout-ms",
    [OPT_RATE] = "rate",
    [OPT_BURST] = "burst",
    [OPT_LOG_FORMAT] = "log-format",
    [OPT_LOG_LEVEL] = "log-level",
    [OPT_CONFIG] = "config",
};

typedef struct relay_raw {
  char *value[OPT_N]; /* owned; NULL: not set */
  bool from_file[OPT_N];
  char where[OPT_N][RELAY_WHERE_BYTES_MAX];
} relay_raw;

static int opt_lookup(const char *name, size_t len) {
  for (int i = 0; i < OPT_N; i++) {
    if (strlen(opt_names[i]) == len && memcmp(opt_names[i], name, len) == 0) {
      return i;
    }
  }
  return -1;
}

static int raw_set(relay_raw *raw, int id, const char *value, bool from_file,
                   const char *where) {
  char *copy = strdup(value);
  if (copy == NULL) {
    return -ENOMEM;
  }
  free(raw->value[id]);
  raw->value[id] = copy;
  raw->from_file[id] = from_file;
  snprintf(raw->where[id], sizeof raw->where[id], "%s", where);
  return 0;
}

static void raw_clear(relay_raw *raw, int id) {
  free(raw->value[id]);
  raw->value[id] = NULL;
}

static void raw_free(relay_raw *raw) {
  for (int i = 0; i < OPT_N; i++) {
    raw_clear(raw, i);
  }
}

/* How a setting is named in a message: "--rate" from the command line,
 * "FILE:LINE: rate" from a file. */
static void raw_name(const relay_raw *raw, int id, char *out, size_t n) {
  if (raw->from_file[id]) {
    snprintf(out, n, "%s: %s", raw->where[id], opt_names[id]);
  } else {
    snprintf(out, n, "--%s", opt_names[id]);
  }
}

/* Returns 0, 1 for --help, or the exit status 2. */
static int args_read(int argc, char **argv, relay_raw *raw) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      return 1;
    }
    if (strncmp(a, "--", 2) != 0) {
      fprintf(stderr, "qraft-relay: unexpected argument '%s' (qraft-relay "
                      "--help)\n", a);
      return 2;
    }
    const char *name = a + 2;
    const char *eq = strchr(name, '=');
    size_t len = eq != NULL ? (size_t)(eq - name) : strlen(name);
    int id = opt_lookup(name, len);
    if (id < 0) {
      fprintf(stderr, "qraft-relay: unknown flag '%.*s' (qraft-relay "
                      "--help)\n", (int)len + 2, a);
      return 2;
    }
    const char *v = eq != NULL ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
    if (v == NULL) {
      fprintf(stderr, "qraft-relay: --%s needs a value\n", opt_names[id]);
      return 2;
    }
    if (raw_set(raw, id, v, false, "command line") != 0) {
      fprintf(stderr, "qraft-relay: out of memory\n");
      return 2;
    }
  }
  if (raw->value[OPT_ALLOW] != NULL && raw->value[OPT_DENY] != NULL) {
    fprintf(stderr, "qraft-relay: --allow and --deny exclude each other: "
                    "give one list\n");
    return 2;
  }
  return 0;
}

/* Trims blanks and the line end at both ends, in place. */
static char *trim(char *p) {
  while (*p == ' ' || *p == '\t') {
    p++;
  }
  size_t l = strlen(p);
  while (l > 0 && (p[l - 1] == '\n' || p[l - 1] == '\r' || p[l - 1] == ' ' ||
                   p[l - 1] == '\t')) {
    p[--l] = 0;
  }
  return p;
}

/* Reads the next line of `f` into line[RELAY_LINE_BYTES_MAX + 2] without
 * its comment. Returns 1 with a line, 0 at the end, -1 for a line too
 * long or a read error (message in msg). */
static int line_next(FILE *f, const char *path, int lineno, char *line,
                     char *msg, size_t msg_n) {
  if (fgets(line, RELAY_LINE_BYTES_MAX + 2, f) == NULL) {
    if (ferror(f)) {
      snprintf(msg, msg_n, "%s: %s", path, strerror(errno));
      return -1;
    }
    return 0;
  }
  size_t l = strlen(line);
  if (l > RELAY_LINE_BYTES_MAX && line[l - 1] != '\n') {
    snprintf(msg, msg_n, "%s:%d: line longer than %d bytes", path, lineno,
             RELAY_LINE_BYTES_MAX);
    return -1;
  }
  char *hash = strchr(line, '#');
  if (hash != NULL) {
    *hash = 0;
  }
  return 1;
}

/* Reads `path` (name = value lines) into `raw`. Returns 0 or 2. */
static int config_read(const char *path, relay_raw *raw) {
  FILE *f = fopen(path, "r");
  if (f == NULL) {
    fprintf(stderr, "qraft-relay: --config %s: %s\n", path, strerror(errno));
    return 2;
  }
  char line[RELAY_LINE_BYTES_MAX + 2];
  char msg[RELAY_WHERE_BYTES_MAX + 200];
  int rc = 0;
  for (int lineno = 1;; lineno++) {
    int got = line_next(f, path, lineno, line, msg, sizeof msg);
    if (got < 0) {
      fprintf(stderr, "qraft-relay: %s\n", msg);
      rc = 2;
      break;
    }
    if (got == 0) {
      break;
    }
    char *p = trim(line);
    if (*p == 0) {
      continue;
    }
    char *eq = strchr(p, '=');
    if (eq == NULL) {
      fprintf(stderr, "qraft-relay: %s:%d: want 'name = value', got '%.80s'\n",
              path, lineno, p);
      rc = 2;
      break;
    }
    *eq = 0;
    char *name = trim(p);
    char *value = trim(eq + 1);
    int id = opt_lookup(name, strlen(name));
    if (id < 0 || id == OPT_CONFIG) {
      fprintf(stderr, "qraft-relay: %s:%d: unknown setting '%.80s'\n", path,
              lineno, name);
      rc = 2;
      break;
    }
    if (*value == 0) {
      fprintf(stderr, "qraft-relay: %s:%d: %s has no value\n", path, lineno,
              name);
      rc = 2;
      break;
    }
    char where[RELAY_WHERE_BYTES_MAX];
    snprintf(where, sizeof where, "%s:%d", path, lineno);
    if ((id == OPT_ALLOW && raw->value[OPT_DENY] != NULL) ||
        (id == OPT_DENY && raw->value[OPT_ALLOW] != NULL)) {
      fprintf(stderr, "qraft-relay: %s: allow and deny exclude each other: "
                      "give one list\n", where);
      rc = 2;
      break;
    }
    if (raw_set(raw, id, value, true, where) != 0) {
      fprintf(stderr, "qraft-relay: out of memory\n");
      rc = 2;
      break;
    }
  }
  fclose(f);
  return rc;
}

/* "123", "64K", "1G": bytes with an optional power-of-1024 suffix. */
static int parse_size(const char *v, uint64_t *out) {
  char *end = NULL;
  errno = 0;
  unsigned long long n = strtoull(v, &end, 10);
  if (end == v || errno != 0 || v[0] == '-' || v[0] == '+' || v[0] == ' ') {
    return -1;
  }
  int shift = 0;
  switch (*end) {
  case 0:
    break;
  case 'K': case 'k':
    shift = 10;
    end++;
    break;
  case 'M': case 'm':
    shift = 20;
    end++;
    break;
  case 'G': case 'g':
    shift = 30;
    end++;
    break;
  default:
    return -1;
  }
  if (*end != 0 || (shift > 0 && n > (UINT64_MAX >> shift))) {
    return -1;
  }
  *out = (uint64_t)n << shift;
  return 0;
}

/* HOST:PORT or [V6]:PORT into an address; names are resolved. */
static int parse_hostport(const char *text, int socktype,
                          struct sockaddr_storage *out) {
  char host[256];
  const char *colon;
  memset(out, 0, sizeof *out);
  if (text[0] == '[') {
    const char *end = strchr(text, ']');
    if (end == NULL || end[1] != ':' ||
        (size_t)(end - text - 1) >= sizeof host) {
      return -1;
    }
    memcpy(host, text + 1, (size_t)(end - text - 1));
    host[end - text - 1] = 0;
    colon = end + 1;
  } else {
    colon = strrchr(text, ':');
    if (colon == NULL || (size_t)(colon - text) >= sizeof host ||
        memchr(text, ':', (size_t)(colon - text)) != NULL) {
      return -1; /* an IPv6 address without brackets is ambiguous */
    }
    memcpy(host, text, (size_t)(colon - text));
    host[colon - text] = 0;
  }
  char *endp;
  errno = 0;
  long port = strtol(colon + 1, &endp, 10);
  if (colon[1] == 0 || *endp != 0 || errno != 0 || port < 0 || port > 65535) {
    return -1;
  }
  struct addrinfo hints = {0}, *res = NULL;
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = socktype;
  if (getaddrinfo(host[0] != 0 ? host : "0.0.0.0", NULL, &hints, &res) != 0) {
    return -1;
  }
  if (res->ai_addrlen > sizeof *out) {
    freeaddrinfo(res);
    return -1;
  }
  memcpy(out, res->ai_addr, res->ai_addrlen);
  freeaddrinfo(res);
  if (out->ss_family == AF_INET) {
    ((struct sockaddr_in *)out)->sin_port = htons((uint16_t)port);
  } else if (out->ss_family == AF_INET6) {
    ((struct sockaddr_in6 *)out)->sin6_port = htons((uint16_t)port);
  } else {
    return -1;
  }
  return 0;
}

static socklen_t addr_len(const struct sockaddr_storage *ss) {
  return ss->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                   : sizeof(struct sockaddr_in);
}

/* "1.2.3.4:5" or "[::1]:5". */
static void addr_format(const struct sockaddr_storage *ss, char *out,
                        size_t n) {
  char host[INET6_ADDRSTRLEN] = "?";
  unsigned port = 0;
  if (ss->ss_family == AF_INET6) {
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
    inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
    port = ntohs(a->sin6_port);
    snprintf(out, n, "[%s]:%u", host, port);
    return;
  }
  const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
  inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
  port = ntohs(a->sin_port);
  snprintf(out, n, "%s:%u", host, port);
}

typedef enum relay_list_mode {
  LIST_NONE,
  LIST_ALLOW,
  LIST_DENY
} relay_list_mode;

static const char *list_mode_name(relay_list_mode m) {
  return m == LIST_ALLOW ? "allow" : m == LIST_DENY ? "deny" : "none";
}

/* The checked settings. Strings point into the merged relay_raw. */
typedef struct relay_opts {
  const char *key_path;
  struct sockaddr_storage listen;
  relay_list_mode list_mode;
  const char *list_path;
  bool metrics_on;
  struct sockaddr_storage metrics;
  qraft_relay_server_config server; /* ep and logger left NULL */
  bool log_json;
  qraft_log_level log_level;
  bool log_level_given;
} relay_opts;

/* A number of milliseconds in 1..RELAY_MS_MAX. */
static int opts_ms(const relay_raw *raw, int id, uint32_t *out) {
  const char *v = raw->value[id];
  if (v == NULL) {
    return 0;
  }
  char *end = NULL;
  errno = 0;
  unsigned long long n = strtoull(v, &end, 10);
  if (end == v || *end != 0 || errno != 0 || v[0] == '-' || n == 0 ||
      n > RELAY_MS_MAX) {
    char name[RELAY_WHERE_BYTES_MAX + 40];
    raw_name(raw, id, name, sizeof name);
    fprintf(stderr, "qraft-relay: %s: bad value '%s' (milliseconds, 1 to "
                    "%u)\n", name, v, RELAY_MS_MAX);
    return 2;
  }
  *out = (uint32_t)n;
  return 0;
}

/* Bytes in [min, max]. */
static int opts_bytes(const relay_raw *raw, int id, uint64_t min, uint64_t max,
                      uint64_t *out) {
  const char *v = raw->value[id];
  if (v == NULL) {
    return 0;
  }
  uint64_t n;
  if (parse_size(v, &n) != 0 || n < min || n > max) {
    char name[RELAY_WHERE_BYTES_MAX + 40];
    raw_name(raw, id, name, sizeof name);
    fprintf(stderr, "qraft-relay: %s: bad value '%s' (bytes, %" PRIu64
                    " to %" PRIu64 "; K, M or G suffix)\n",
            name, v, min, max);
    return 2;
  }
  *out = n;
  return 0;
}

/* Checks and converts the merged settings; returns 0 or 2. */
static int opts_check(const relay_raw *raw, relay_opts *o) {
  memset(o, 0, sizeof *o);
  char name[RELAY_WHERE_BYTES_MAX + 40];
  const char *v = raw->value[OPT_LOG_FORMAT];
  if (v != NULL && strcmp(v, "json") == 0) {
    o->log_json = true;
  } else if (v != NULL && strcmp(v, "text") != 0) {
    raw_name(raw, OPT_LOG_FORMAT, name, sizeof name);
    fprintf(stderr, "qraft-relay: %s: takes text or json, not '%s'\n", name,
            v);
    return 2;
  }
  v = raw->value[OPT_LOG_LEVEL];
  o->log_level = QRAFT_LOG_INFO;
  if (v != NULL) {
    if (qraft_log_level_parse(v, &o->log_level) != 0) {
      raw_name(raw, OPT_LOG_LEVEL, name, sizeof name);
      fprintf(stderr, "qraft-relay: %s: takes trace, debug, info, warn, "
                      "error or off, not '%s'\n", name, v);
      return 2;
    }
    o->log_level_given = true;
  }
  o->key_path = raw->value[OPT_KEY];
  if (o->key_path == NULL) {
    fprintf(stderr, "qraft-relay: --key KEYFILE is required (qraft-keygen "
                    "writes one)\n");
    return 2;
  }
  v = raw->value[OPT_LISTEN] != NULL ? raw->value[OPT_LISTEN]
                                     : RELAY_LISTEN_DEFAULT;
  if (parse_hostport(v, SOCK_DGRAM, &o->listen) != 0) {
    raw_name(raw, OPT_LISTEN, name, sizeof name);
    fprintf(stderr, "qraft-relay: %s: bad address '%s' (HOST:PORT, or "
                    "[V6]:PORT)\n", name, v);
    return 2;
  }
  v = raw->value[OPT_METRICS];
  if (v != NULL) {
    if (parse_hostport(v, SOCK_STREAM, &o->metrics) != 0) {
      raw_name(raw, OPT_METRICS, name, sizeof name);
      fprintf(stderr, "qraft-relay: %s: bad address '%s' (HOST:PORT, or "
                      "[V6]:PORT)\n", name, v);
      return 2;
    }
    o->metrics_on = true;
  }
  QRAFT_ASSERT(raw->value[OPT_ALLOW] == NULL || raw->value[OPT_DENY] == NULL);
  if (raw->value[OPT_ALLOW] != NULL) {
    o->list_mode = LIST_ALLOW;
    o->list_path = raw->value[OPT_ALLOW];
  } else if (raw->value[OPT_DENY] != NULL) {
    o->list_mode = LIST_DENY;
    o->list_path = raw->value[OPT_DENY];
  }
  qraft_relay_server_config *s = &o->server;
  int rc = opts_bytes(raw, OPT_QUEUE_BYTES, RELAY_QUEUE_BYTES_MIN,
                      RELAY_QUEUE_BYTES_MAX, &s->queue_bytes_max);
  if (rc == 0) {
    rc = opts_ms(raw, OPT_WRITE_TIMEOUT_MS, &s->write_timeout_ms);
  }
  if (rc == 0) {
    rc = opts_ms(raw, OPT_PING_INTERVAL_MS, &s->ping_interval_ms);
  }
  if (rc == 0) {
    rc = opts_ms(raw, OPT_PING_TIMEOUT_MS, &s->ping_timeout_ms);
  }
  if (rc == 0) {
    rc = opts_bytes(raw, OPT_RATE, 0, RELAY_RATE_BYTES_MAX,
                    &s->rx_bytes_per_s);
  }
  if (rc == 0) {
    rc = opts_bytes(raw, OPT_BURST, QRAFT_RELAY_DATAGRAM_MAX,
                    RELAY_RATE_BYTES_MAX, &s->rx_burst_bytes);
  }
  if (rc != 0) {
    return rc;
  }
  if (raw->value[OPT_BURST] != NULL && s->rx_bytes_per_s == 0) {
    raw_name(raw, OPT_BURST, name, sizeof name);
    fprintf(stderr, "qraft-relay: %s: a burst needs a rate (--rate)\n", name);
    return 2;
  }
  if (s->rx_bytes_per_s != 0 && raw->value[OPT_BURST] == NULL &&
      s->rx_bytes_per_s < QRAFT_RELAY_DATAGRAM_MAX) {
    raw_name(raw, OPT_RATE, name, sizeof name);
    fprintf(stderr, "qraft-relay: %s: under %u bytes a second, give --burst "
                    "of at least %u (the largest datagram)\n",
            name, QRAFT_RELAY_DATAGRAM_MAX, QRAFT_RELAY_DATAGRAM_MAX);
    return 2;
  }
  return 0;
}

/* ---- the allow- or deny-list ---- */

typedef struct relay_list {
  qraft_node_id *ids; /* sorted, no duplicates */
  size_t n;
} relay_list;

static int id_cmp(const void *a, const void *b) {
  return qraft_node_id_cmp(a, b);
}

static void list_free(relay_list *l) {
  free(l->ids);
  l->ids = NULL;
  l->n = 0;
}

static bool list_has(const relay_list *l, const qraft_node_id *id) {
  return l->n > 0 && bsearch(id, l->ids, l->n, sizeof *l->ids, id_cmp) != NULL;
}

/* Reads a list file into *out. Returns 0, or -1 with the reason (naming
 * the file, and the line of a malformed one) in msg. */
static int list_load(const char *path, relay_list *out, char *msg,
                     size_t msg_n) {
  memset(out, 0, sizeof *out);
  FILE *f = fopen(path, "r");
  if (f == NULL) {
    snprintf(msg, msg_n, "%s: %s", path, strerror(errno));
    return -1;
  }
  char line[RELAY_LINE_BYTES_MAX + 2];
  size_t cap = 0;
  int rv = 0;
  for (int lineno = 1;; lineno++) {
    int got = line_next(f, path, lineno, line, msg, msg_n);
    if (got <= 0) {
      rv = got;
      break;
    }
    char *p = trim(line);
    if (*p == 0) {
      continue;
    }
    qraft_node_id id;
    if (qraft_node_id_parse(p, &id) != 0) {
      snprintf(msg, msg_n, "%s:%d: '%.80s' is not a node id (64 hex or 52 "
                           "base32 characters)", path, lineno, p);
      rv = -1;
      break;
    }
    if (out->n == RELAY_LIST_IDS_MAX) {
      snprintf(msg, msg_n, "%s:%d: more than %u ids", path, lineno,
               RELAY_LIST_IDS_MAX);
      rv = -1;
      break;
    }
    if (out->n == cap) {
      size_t bigger = cap == 0 ? 64 : cap * 2;
      qraft_node_id *ids = realloc(out->ids, bigger * sizeof *ids);
      if (ids == NULL) {
        snprintf(msg, msg_n, "%s: out of memory", path);
        rv = -1;
        break;
      }
      out->ids = ids;
      cap = bigger;
    }
    out->ids[out->n++] = id;
  }
  fclose(f);
  if (rv != 0) {
    list_free(out);
    return -1;
  }
  if (out->n > 1) {
    qsort(out->ids, out->n, sizeof *out->ids, id_cmp);
    size_t k = 1;
    for (size_t i = 1; i < out->n; i++) {
      if (!qraft_node_id_eq(&out->ids[i], &out->ids[k - 1])) {
        out->ids[k++] = out->ids[i];
      }
    }
    out->n = k;
  }
  return 0;
}

/* ---- the program's state ---- */

typedef struct metrics_http metrics_http;

typedef struct relay {
  qraft_env *env;
  qraft_endpoint *ep;
  qraft_relay_server *srv;
  relay_list_mode list_mode;
  const char *list_path;
  relay_list list;
  uint64_t list_reloads, list_reload_errors;
  int sig_fds[2]; /* the signal handler writes the signal's number */
  qraft_env_fd *sig_watch;
  bool stopping;
  metrics_http *http;
} relay;

/* The endpoint's hook: who may finish a handshake. */
static bool relay_authorize(void *ud, const qraft_node_id *peer,
                            const char *alpn) {
  const relay *r = ud;
  bool listed = list_has(&r->list, peer);
  bool ok = r->list_mode == LIST_ALLOW ? listed : !listed;
  if (!ok) {
    char hex[QRAFT_NODE_ID_HEX_SIZE];
    qraft_node_id_to_hex(peer, hex);
    QRAFT_LOG(NULL, QRAFT_LOG_DEBUG, "client refused by the list",
              QRAFT_LOG_STR("id", hex), QRAFT_LOG_STR("alpn", alpn),
              QRAFT_LOG_STR("list", list_mode_name(r->list_mode)));
  }
  return ok;
}

static bool relay_keeps(void *ud, const qraft_node_id *id) {
  return relay_authorize(ud, id, QRAFT_RELAY_ALPN);
}

/* SIGHUP: the list file again; a file that does not load leaves the old
 * list serving. Clients the new list refuses are closed. */
static void relay_reload(relay *r) {
  if (r->list_mode == LIST_NONE) {
    QRAFT_LOG(NULL, QRAFT_LOG_INFO, "SIGHUP: no --allow or --deny list to "
                                    "read again");
    return;
  }
  relay_list fresh;
  char msg[RELAY_WHERE_BYTES_MAX + 200];
  if (list_load(r->list_path, &fresh, msg, sizeof msg) != 0) {
    r->list_reload_errors++;
    QRAFT_LOG(NULL, QRAFT_LOG_ERROR, "list not reloaded: the old one stays",
              QRAFT_LOG_STR("list", list_mode_name(r->list_mode)),
              QRAFT_LOG_STR("error", msg), QRAFT_LOG_U64("ids", r->list.n));
    return;
  }
  list_free(&r->list);
  r->list = fresh;
  r->list_reloads++;
  /* the hook sees new handshakes only: clients the new list refuses go */
  uint32_t closed = qraft_relay_server_close_if(r->srv, relay_keeps, r);
  QRAFT_LOG(NULL, QRAFT_LOG_INFO, "list reloaded",
            QRAFT_LOG_STR("list", list_mode_name(r->list_mode)),
            QRAFT_LOG_STR("file", r->list_path),
            QRAFT_LOG_U64("ids", r->list.n),
            QRAFT_LOG_U64("clients_closed", closed));
}

/* ---- signals: a pipe the loop watches ---- */

static int sig_pipe_w = -1;

static void on_signal(int sig) {
  int saved = errno;
  uint8_t b = (uint8_t)sig;
  ssize_t n = write(sig_pipe_w, &b, 1); /* full pipe: dropped, harmless */
  (void)n;
  errno = saved;
}

static void sig_readable(void *ud) {
  relay *r = ud;
  uint8_t sigs[64];
  ssize_t n;
  while ((n = read(r->sig_fds[0], sigs, sizeof sigs)) > 0) {
    for (ssize_t i = 0; i < n; i++) {
      if (sigs[i] == SIGHUP) {
        relay_reload(r);
      } else if (!r->stopping) {
        r->stopping = true;
        QRAFT_LOG(NULL, QRAFT_LOG_INFO, "stopping",
                  QRAFT_LOG_STR("signal", sigs[i] == SIGINT ? "SIGINT"
                                                            : "SIGTERM"));
      }
    }
  }
}

static bool relay_done(void *ud) { return ((relay *)ud)->stopping; }

static int signals_start(relay *r) {
  if (pipe2(r->sig_fds, O_NONBLOCK | O_CLOEXEC) != 0) {
    return -errno;
  }
  int rv = qraft_env_fd_watch(r->env, r->sig_fds[0], sig_readable, r,
                              &r->sig_watch);
  if (rv != 0) {
    close(r->sig_fds[0]);
    close(r->sig_fds[1]);
    r->sig_fds[0] = r->sig_fds[1] = -1;
    return rv;
  }
  sig_pipe_w = r->sig_fds[1];
  struct sigaction sa = {0};
  sa.sa_handler = on_signal;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGHUP, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  return 0;
}

static void signals_stop(relay *r) {
  if (r->sig_watch == NULL) {
    return;
  }
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  signal(SIGHUP, SIG_DFL);
  sig_pipe_w = -1;
  qraft_env_fd_unwatch(r->sig_watch);
  r->sig_watch = NULL;
  close(r->sig_fds[0]);
  close(r->sig_fds[1]);
  r->sig_fds[0] = r->sig_fds[1] = -1;
}

/* ---- metrics over HTTP ----
 * A listening TCP socket and each client are non-blocking descriptors the
 * env watches for reading. A client sends one request (at most
 * METRICS_REQUEST_BYTES_MAX bytes of headers; a body is not read as a
 * request), gets one response and "Connection: close"; we then shut our
 * side and read what it still sends until it closes, so that unread bytes
 * do not turn our close into a reset that cuts the response short. The env
 * watches for reading only: a response the socket did not take at once is
 * retried from the tick. */

typedef enum mc_state {
  MC_FREE,
  MC_READING,  /* the request's headers */
  MC_WRITING,  /* the response; what the client sends is discarded */
  MC_DRAINING, /* response sent, our side shut: wait for the client's end */
} mc_state;

typedef struct metrics_client {
  metrics_http *h;
  mc_state state;
  int fd;
  qraft_env_fd *watch;
  uint64_t accepted_ns, active_ns;
  size_t req_len;
  size_t out_len, out_off;
  char req[METRICS_REQUEST_BYTES_MAX];
  char out[METRICS_RESPONSE_BYTES_MAX];
} metrics_client;

struct metrics_http {
  relay *r;
  int fd;
  qraft_env_fd *watch;
  qraft_env_timer *tick;
  uint32_t open_n;
  char body[METRICS_BODY_BYTES_MAX];
  metrics_client clients[METRICS_CLIENTS_MAX];
};

typedef struct text {
  char *p;
  size_t len, cap;
} text;

static void text_put(text *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void text_put(text *t, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(t->p + t->len, t->cap - t->len, fmt, ap);
  va_end(ap);
  /* The set of metrics is fixed: its text always fits. */
  QRAFT_ASSERTF(n >= 0 && (size_t)n < t->cap - t->len,
                "metrics text outgrew its %zu-byte buffer", t->cap);
  t->len += (size_t)n;
}

static void text_head(text *t, const char *name, const char *type,
                      const char *help) {
  text_put(t, "# HELP qraft_relay_%s %s\n# TYPE qraft_relay_%s %s\n", name,
           help, name, type);
}

static void text_metric(text *t, const char *name, const char *type,
                        const char *help, uint64_t v) {
  text_head(t, name, type, help);
  text_put(t, "qraft_relay_%s %" PRIu64 "\n", name, v);
}

/* The Prometheus text exposition of the server's and endpoint's counters
 * into h->body; returns its length. */
static size_t metrics_body(metrics_http *h) {
  qraft_relay_server_metrics m;
  qraft_endpoint_metrics em;
  qraft_relay_server_metrics_get(h->r->srv, &m);
  qraft_endpoint_metrics_get(h->r->ep, &em);
  text t = {.p = h->body, .cap = sizeof h->body};
  text_metric(&t, "clients", "gauge", "Client connections served now.",
              m.clients);
  text_metric(&t, "clients_accepted_total", "counter",
              "Client connections served since the start.",
              m.clients_accepted);
  text_metric(&t, "datagrams_in_total", "counter",
              "Datagrams clients sent to the relay.", m.datagrams_in);
  text_metric(&t, "datagrams_out_total", "counter",
              "Datagrams forwarded to their destination.", m.datagrams_out);
  text_metric(&t, "bytes_in_total", "counter",
              "Datagram bytes clients sent to the relay.", m.bytes_in);
  text_metric(&t, "bytes_out_total", "counter",
              "Datagram bytes forwarded to their destination.", m.bytes_out);
  text_head(&t, "drops_total", "counter",
            "Datagrams not forwarded, by reason: no_peer (destination not "
            "connected), queue (its queue was full), rate (the sender was "
            "over its rate), inactive (the destination id is served by a "
            "newer connection).");
  const struct {
    const char *reason;
    uint64_t v;
  } drops[] = {{"no_peer", m.drops_no_peer},
               {"queue", m.drops_queue},
               {"rate", m.drops_rate},
               {"inactive", m.drops_inactive}};
  for (size_t i = 0; i < sizeof drops / sizeof drops[0]; i++) {
    text_put(&t, "qraft_relay_drops_total{reason=\"%s\"} %" PRIu64 "\n",
             drops[i].reason, drops[i].v);
  }
  text_metric(&t, "duplicate_ids_total", "counter",
              "Connections that displaced an older one of the same id.",
              m.duplicate_ids);
  text_metric(&t, "ping_timeouts_total", "counter",
              "Clients closed for not answering a ping.", m.ping_timeouts);
  text_metric(&t, "write_timeouts_total", "counter",
              "Clients closed because their queue stayed full.",
              m.write_timeouts);
  text_metric(&t, "protocol_errors_total", "counter",
              "Clients closed for malformed relay frames.",
              m.protocol_errors);
  text_head(&t, "handshake_failures_total", "counter",
            "Handshakes that failed, by reason (unauthorized: refused by "
            "the allow- or deny-list).");
  for (int f = 0; f < QRAFT_HS_FAIL_N; f++) {
    text_put(&t,
             "qraft_relay_handshake_failures_total{reason=\"%s\"} %" PRIu64
             "\n",
             qraft_handshake_failure_name((qraft_handshake_failure)f),
             em.handshake_failures[f]);
  }
  text_metric(&t, "list_ids", "gauge",
              "Node ids in the allow- or deny-list now.", h->r->list.n);
  text_metric(&t, "list_reload_errors_total", "counter",
              "SIGHUP reloads of the list file that failed (the old list "
              "stayed).", h->r->list_reload_errors);
  return t.len;
}

static void mc_close(metrics_client *c) {
  QRAFT_ASSERT(c->state != MC_FREE);
  qraft_env_fd_unwatch(c->watch);
  c->watch = NULL;
  close(c->fd);
  c->fd = -1;
  c->state = MC_FREE;
  QRAFT_ASSERT(c->h->open_n > 0);
  c->h->open_n--;
}

/* Sends what the socket takes of the response; once all of it went, shuts
 * our side and drains. Returns false if the client was closed. */
static bool mc_flush(metrics_client *c) {
  QRAFT_ASSERT(c->state == MC_WRITING);
  while (c->out_off < c->out_len) {
    ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off,
                     MSG_NOSIGNAL);
    if (n > 0) {
      c->out_off += (size_t)n;
      c->active_ns = qraft_env_now_ns(c->h->r->env);
      continue;
    }
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      return true; /* the tick tries again */
    }
    mc_close(c);
    return false;
  }
  (void)shutdown(c->fd, SHUT_WR);
  c->state = MC_DRAINING;
  return true;
}

static void mc_respond(metrics_client *c, int status, const char *reason,
                       const char *extra, const char *body, size_t body_len,
                       bool head) {
  QRAFT_ASSERT(c->state == MC_READING);
  int n = snprintf(c->out, sizeof c->out,
                   "HTTP/1.1 %d %s\r\n"
                   "Content-Type: %s\r\n"
                   "Content-Length: %zu\r\n"
                   "%s"
                   "Connection: close\r\n\r\n",
                   status, reason,
                   status == 200 ? "text/plain; version=0.0.4; charset=utf-8"
                                 : "text/plain; charset=utf-8",
                   body_len, extra);
  QRAFT_ASSERT(n > 0 && (size_t)n + body_len <= sizeof c->out);
  c->out_len = (size_t)n;
  if (!head) {
    memcpy(c->out + c->out_len, body, body_len);
    c->out_len += body_len;
  }
  c->out_off = 0;
  c->state = MC_WRITING;
  (void)mc_flush(c);
}

static void mc_error(metrics_client *c, int status, const char *reason,
                     const char *extra) {
  char body[64];
  int n = snprintf(body, sizeof body, "%s\n", reason);
  QRAFT_ASSERT(n > 0 && (size_t)n < sizeof body);
  mc_respond(c, status, reason, extra, body, (size_t)n, false);
}

/* The request's headers are complete in c->req: answer it. */
static void mc_request(metrics_client *c) {
  size_t end = 0;
  while (end < c->req_len && c->req[end] != '\r' && c->req[end] != '\n') {
    end++;
  }
  char line[METRICS_REQUEST_BYTES_MAX + 1];
  memcpy(line, c->req, end);
  line[end] = 0;
  char *save = NULL;
  char *method = strtok_r(line, " ", &save);
  char *target = strtok_r(NULL, " ", &save);
  char *version = strtok_r(NULL, " ", &save);
  if (method == NULL || target == NULL || version == NULL ||
      strtok_r(NULL, " ", &save) != NULL ||
      strncmp(version, "HTTP/1.", 7) != 0) {
    mc_error(c, 400, "Bad Request", "");
    return;
  }
  bool head = strcmp(method, "HEAD") == 0;
  if (!head && strcmp(method, "GET") != 0) {
    mc_error(c, 405, "Method Not Allowed", "Allow: GET, HEAD\r\n");
    return;
  }
  target[strcspn(target, "?")] = 0;
  if (strcmp(target, "/metrics") != 0) {
    mc_error(c, 404, "Not Found", "");
    return;
  }
  size_t n = metrics_body(c->h);
  mc_respond(c, 200, "OK", "", c->h->body, n, head);
}

/* The headers end with an empty line (CRLF, or bare LF as some clients
 * send). */
static bool mc_headers_done(const metrics_client *c) {
  return memmem(c->req, c->req_len, "\r\n\r\n", 4) != NULL ||
         memmem(c->req, c->req_len, "\n\n", 2) != NULL;
}

static void mc_readable(void *ud) {
  metrics_client *c = ud;
  QRAFT_ASSERT(c->state != MC_FREE);
  c->active_ns = qraft_env_now_ns(c->h->r->env);
  if (c->state == MC_READING) {
    for (;;) {
      if (c->req_len == sizeof c->req) {
        mc_error(c, 431, "Request Header Fields Too Large", "");
        return;
      }
      ssize_t n = recv(c->fd, c->req + c->req_len, sizeof c->req - c->req_len,
                       0);
      if (n > 0) {
        c->req_len += (size_t)n;
        if (mc_headers_done(c)) {
          mc_request(c);
          return;
        }
        continue;
      }
      if (n < 0 && errno == EINTR) {
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        return;
      }
      mc_close(c); /* the client left before its request ended */
      return;
    }
  }
  /* After the request: discard, a bounded amount a turn, until the end. */
  char sink[4096];
  for (int k = 0; k < 4; k++) {
    ssize_t n = recv(c->fd, sink, sizeof sink, 0);
    if (n > 0) {
      continue;
    }
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      return;
    }
    mc_close(c);
    return;
  }
}

static void metrics_tick(void *ud) {
  metrics_http *h = ud;
  uint64_t now = qraft_env_now_ns(h->r->env);
  for (int i = 0; i < METRICS_CLIENTS_MAX; i++) {
    metrics_client *c = &h->clients[i];
    if (c->state == MC_WRITING && !mc_flush(c)) {
      continue;
    }
    if (c->state != MC_FREE &&
        (now - c->accepted_ns >= METRICS_LIFETIME_MS * MS ||
         now - c->active_ns >= METRICS_IDLE_MS * MS)) {
      mc_close(c);
    }
  }
  if (h->open_n > 0) {
    qraft_env_timer_arm(h->tick, now + METRICS_TICK_MS * MS);
  }
}

static void metrics_acceptable(void *ud) {
  metrics_http *h = ud;
  for (int k = 0; k < METRICS_ACCEPT_BATCH; k++) {
    int fd = accept4(h->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) {
        continue;
      }
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        QRAFT_LOG(NULL, QRAFT_LOG_WARN, "metrics: accept failed",
                  QRAFT_LOG_STR("error", strerror(errno)));
      }
      return;
    }
    metrics_client *c = NULL;
    for (int i = 0; i < METRICS_CLIENTS_MAX && c == NULL; i++) {
      if (h->clients[i].state == MC_FREE) {
        c = &h->clients[i];
      }
    }
    if (c == NULL) {
      QRAFT_LOG(NULL, QRAFT_LOG_DEBUG, "metrics: a client closed at once",
                QRAFT_LOG_U64("open", h->open_n));
      close(fd);
      continue;
    }
    if (qraft_env_fd_watch(h->r->env, fd, mc_readable, c, &c->watch) != 0) {
      close(fd);
      continue;
    }
    uint64_t now = qraft_env_now_ns(h->r->env);
    c->h = h;
    c->fd = fd;
    c->state = MC_READING;
    c->accepted_ns = c->active_ns = now;
    c->req_len = c->out_len = c->out_off = 0;
    if (h->open_n++ == 0) {
      qraft_env_timer_arm(h->tick, now + METRICS_TICK_MS * MS);
    }
  }
}

/* Listens on `addr`; *bound gets the address with its port. Returns 0, or
 * -errno with the step that failed in msg. */
static int metrics_start(relay *r, const struct sockaddr_storage *addr,
                         struct sockaddr_storage *bound, char *msg,
                         size_t msg_n) {
  metrics_http *h = calloc(1, sizeof *h);
  if (h == NULL) {
    snprintf(msg, msg_n, "out of memory");
    return -ENOMEM;
  }
  h->r = r;
  for (int i = 0; i < METRICS_CLIENTS_MAX; i++) {
    h->clients[i].fd = -1;
  }
  int rv;
  h->fd = socket(addr->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                 0);
  if (h->fd < 0) {
    rv = -errno;
    snprintf(msg, msg_n, "socket: %s", strerror(errno));
    goto err_free;
  }
  int one = 1;
  (void)setsockopt(h->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  socklen_t len = sizeof *bound;
  if (bind(h->fd, (const struct sockaddr *)addr, addr_len(addr)) != 0 ||
      listen(h->fd, METRICS_BACKLOG) != 0 ||
      getsockname(h->fd, (struct sockaddr *)bound, &len) != 0) {
    rv = -errno;
    snprintf(msg, msg_n, "%s", strerror(errno));
    goto err_close;
  }
  rv = qraft_env_timer_new(r->env, metrics_tick, h, &h->tick);
  if (rv != 0) {
    snprintf(msg, msg_n, "timer: %s", qraft_strerror(rv));
    goto err_close;
  }
  rv = qraft_env_fd_watch(r->env, h->fd, metrics_acceptable, h, &h->watch);
  if (rv != 0) {
    snprintf(msg, msg_n, "watch: %s", qraft_strerror(rv));
    goto err_free_timer;
  }
  r->http = h;
  return 0;

err_free_timer:
  qraft_env_timer_free(h->tick);
err_close:
  close(h->fd);
err_free:
  free(h);
  return rv;
}

static void metrics_stop(relay *r) {
  metrics_http *h = r->http;
  if (h == NULL) {
    return;
  }
  for (int i = 0; i < METRICS_CLIENTS_MAX; i++) {
    if (h->clients[i].state != MC_FREE) {
      mc_close(&h->clients[i]);
    }
  }
  QRAFT_ASSERT(h->open_n == 0);
  qraft_env_fd_unwatch(h->watch);
  qraft_env_timer_free(h->tick);
  close(h->fd);
  free(h);
  r->http = NULL;
}

/* ---- main ---- */

/* Collects the settings and sets up logging. Returns 0, or the exit
 * status (0 after --help). */
static int relay_configure(int argc, char **argv, relay_raw *raw,
                           relay_opts *o) {
  relay_raw file = {0};
  int rc = args_read(argc, argv, raw);
  if (rc == 1) {
    usage(stdout);
    return -1;
  }
  if (rc != 0) {
    return rc;
  }
  if (raw->value[OPT_CONFIG] != NULL) {
    rc = config_read(raw->value[OPT_CONFIG], &file);
    if (rc != 0) {
      raw_free(&file);
      return rc;
    }
    /* A list flag replaces the file's list, whichever kind it is. */
    if (raw->value[OPT_ALLOW] != NULL || raw->value[OPT_DENY] != NULL) {
      raw_clear(&file, OPT_ALLOW);
      raw_clear(&file, OPT_DENY);
    }
    for (int i = 0; i < OPT_N; i++) {
      if (raw->value[i] == NULL && file.value[i] != NULL) {
        raw->value[i] = file.value[i];
        file.value[i] = NULL;
        raw->from_file[i] = true;
        memcpy(raw->where[i], file.where[i], sizeof raw->where[i]);
      }
    }
    raw_free(&file);
  }
  rc = opts_check(raw, o);
  if (rc != 0) {
    return rc;
  }
  /* logs: text or JSON lines on stderr, INFO and up unless --log-level
   * (or QRAFT_LOG without it) */
  qraft_logger *lg = qraft_log_default();
  if (o->log_json) {
    lg->sink_cb = qraft_log_sink_json;
    say_json = true;
  }
  if (o->log_level_given || getenv("QRAFT_LOG") == NULL) {
    lg->level = (int)o->log_level;
  }
  return 0;
}

/* Serves until SIGINT or SIGTERM. Returns the exit status. */
static int relay_serve(const relay_opts *o) {
  relay r = {.sig_fds = {-1, -1}, .list_mode = o->list_mode,
             .list_path = o->list_path};
  qraft_err err;
  qraft_err_init(&err, 0);
  char msg[RELAY_WHERE_BYTES_MAX + 200];
  char errtext[512];
  int rc = 1;
  if (r.list_mode != LIST_NONE &&
      list_load(r.list_path, &r.list, msg, sizeof msg) != 0) {
    relay_say(QRAFT_LOG_ERROR, "--%s %s", list_mode_name(r.list_mode), msg);
    return 2;
  }
  qraft_secret_key key;
  if (qraft_secret_key_load(&key, o->key_path, &err) != 0) {
    qraft_err_format(&err, errtext, sizeof errtext);
    relay_say(QRAFT_LOG_ERROR, "cannot load the key %s: %s", o->key_path,
              errtext);
    goto err_free_list;
  }
  int rv = qraft_env_uv_new(&r.env);
  if (rv != 0) {
    relay_say(QRAFT_LOG_ERROR, "event loop: %s", qraft_strerror(rv));
    goto err_wipe_key;
  }
  char listen_text[INET6_ADDRSTRLEN + 16];
  addr_format(&o->listen, listen_text, sizeof listen_text);
  qraft_endpoint_config ecfg = {.env = r.env, .key = &key, .bind_n = 1};
  ecfg.bind[0] = o->listen;
  if (r.list_mode != LIST_NONE) {
    ecfg.authorize_cb = relay_authorize;
    ecfg.authorize_ud = &r;
  }
  rv = qraft_endpoint_new(&ecfg, &r.ep, &err);
  if (rv != 0) {
    qraft_err_format(&err, errtext, sizeof errtext);
    relay_say(QRAFT_LOG_ERROR, "cannot listen on %s (UDP): %s", listen_text,
              errtext);
    goto err_free_env;
  }
  qraft_relay_server_config scfg = o->server;
  scfg.ep = r.ep;
  rv = qraft_relay_server_new(&scfg, &r.srv, &err);
  if (rv != 0) {
    qraft_err_format(&err, errtext, sizeof errtext);
    relay_say(QRAFT_LOG_ERROR, "relay server: %s", errtext);
    rc = rv == QRAFT_ECONFIG ? 2 : 1;
    goto err_free_ep;
  }
  char metrics_text[INET6_ADDRSTRLEN + 16] = "off";
  if (o->metrics_on) {
    struct sockaddr_storage bound;
    addr_format(&o->metrics, metrics_text, sizeof metrics_text);
    if (metrics_start(&r, &o->metrics, &bound, msg, sizeof msg) != 0) {
      relay_say(QRAFT_LOG_ERROR, "cannot serve metrics on %s (TCP): %s",
                metrics_text, msg);
      goto err_free_srv;
    }
    addr_format(&bound, metrics_text, sizeof metrics_text);
  }
  rv = signals_start(&r);
  if (rv != 0) {
    relay_say(QRAFT_LOG_ERROR, "signals: %s", qraft_strerror(rv));
    goto err_stop_metrics;
  }

  qraft_node_addr self;
  qraft_endpoint_addr(r.ep, &self);
  QRAFT_ASSERT(self.addrs_n == 1);
  addr_format(&self.addrs[0], listen_text, sizeof listen_text);
  char hex[QRAFT_NODE_ID_HEX_SIZE];
  qraft_node_id_to_hex(&key.public_key, hex);
  qraft_secret_key_wipe(&key);
  printf("relay %s listening on %s\n", hex, listen_text);
  fflush(stdout);
  QRAFT_LOG(NULL, QRAFT_LOG_INFO, "relay started", QRAFT_LOG_STR("id", hex),
            QRAFT_LOG_STR("listen", listen_text),
            QRAFT_LOG_STR("metrics", metrics_text),
            QRAFT_LOG_STR("list", list_mode_name(r.list_mode)),
            QRAFT_LOG_STR("list_file", r.list_path != NULL ? r.list_path : ""),
            QRAFT_LOG_U64("list_ids", r.list.n));

  rv = qraft_env_run(r.env, UINT64_MAX, relay_done, &r);
  QRAFT_ASSERTF(rv == 0, "the loop ended before a stop: %s",
                qraft_strerror(rv));

  /* Clients are told to come back soon, and get the time to hear it. */
  qraft_relay_server_metrics m;
  qraft_relay_server_metrics_get(r.srv, &m);
  qraft_relay_server_restarting(r.srv, RELAY_RECONNECT_IN_MS,
                                RELAY_TRY_FOR_MS);
  (void)qraft_env_run(r.env,
                      qraft_env_now_ns(r.env) + RELAY_STOP_FLUSH_MS * MS,
                      NULL, NULL);
  signals_stop(&r);
  metrics_stop(&r);
  qraft_endpoint_shutdown(r.ep);
  qraft_relay_server_free(r.srv);
  qraft_endpoint_free(r.ep);
  qraft_env_free(r.env);
  list_free(&r.list);
  QRAFT_LOG(NULL, QRAFT_LOG_INFO, "relay stopped",
            QRAFT_LOG_U64("clients_told", m.clients),
            QRAFT_LOG_U64("clients_accepted", m.clients_accepted),
            QRAFT_LOG_U64("datagrams_out", m.datagrams_out));
  return 0;

err_stop_metrics:
  metrics_stop(&r);
err_free_srv:
  qraft_endpoint_shutdown(r.ep);
  qraft_relay_server_free(r.srv);
err_free_ep:
  qraft_endpoint_free(r.ep);
err_free_env:
  qraft_env_free(r.env);
err_wipe_key:
  qraft_secret_key_wipe(&key);
err_free_list:
  list_free(&r.list);
  return rc;
}

int main(int argc, char **argv) {
  relay_raw raw = {0};
  relay_opts o;
  int rc = relay_configure(argc, argv, &raw, &o);
  if (rc < 0) {
    rc = 0; /* --help */
  } else if (rc == 0) {
    rc = relay_serve(&o);
  }
  raw_free(&raw);
  return rc;
}
