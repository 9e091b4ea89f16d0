/*
 * qraft/discovery.h: how an endpoint learns where a node id is.
 *
 * A discovery provider answers resolve(id) with a node address (direct
 * addresses and relays) and is told publish(self) with the endpoint's own.
 * An endpoint asks its providers in the order they were added and merges
 * what they know (qraft_endpoint_resolve); qraft_endpoint_dial_id dials an
 * id by what they know. Providers here:
 *   - a static table the application fills (qraft_discovery_static_*);
 *   - a file, re-read when it changes (qraft_discovery_file_*);
 *   - the Raft membership: a node adds one to its endpoint that answers
 *     with the addresses its log carries (qraft/node.h).
 * Not built: DNS TXT records in iroh's format and pkarr publishing.
 *
 * Threads: resolve and publish run on the endpoint's loop thread and must
 * not block (a provider that must wait answers from what it has). The
 * static table may be changed from any thread.
 */
#ifndef QRAFT_DISCOVERY_H
#define QRAFT_DISCOVERY_H

#include <qraft/error.h>
#include <qraft/transport.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct qraft_discovery_ops {
  const char *name; /* for logs: "static", "file", "membership", ... */
  /* Fills *out (its id already set by the caller, everything else zero)
   * with what the provider knows of `id`. Returns 0, or QRAFT_ENOTFOUND. */
  int (*resolve)(void *ud, const qraft_node_id *id, qraft_node_addr *out);
  /* Optional: the endpoint's own address, when it starts. */
  void (*publish)(void *ud, const qraft_node_addr *self);
} qraft_discovery_ops;

#define QRAFT_DISCOVERY_MAX 4

/*
 * Adds a provider (ops copied; `ud` passed to its calls; the caller keeps
 * what `ud` points to alive until the endpoint is freed). Its publish is
 * called at once with the endpoint's address.
 * Returns 0, or QRAFT_ELIMIT (QRAFT_DISCOVERY_MAX already), QRAFT_ECONFIG.
 */
int qraft_endpoint_add_discovery(qraft_endpoint *ep,
                                 const qraft_discovery_ops *ops, void *ud);

/*
 * What the providers know of `id`, merged: the direct addresses and relays
 * of each (in the order of the providers, without repeats, up to
 * QRAFT_NODE_ADDRS_MAX and QRAFT_NODE_RELAYS_MAX).
 * Returns 0, or QRAFT_ENOTFOUND when no provider knows an address or a
 * relay of it.
 */
int qraft_endpoint_resolve(qraft_endpoint *ep, const qraft_node_id *id,
                           qraft_node_addr *out);

/*
 * Dials `id` for `alpn` at what the providers know of it (as
 * qraft_endpoint_dial). An id no provider knows is refused at once with
 * QRAFT_ENOTFOUND (err says so), even when the endpoint has home relays:
 * the relay would only say the id is not there, again and again.
 */
int qraft_endpoint_dial_id(qraft_endpoint *ep, const qraft_node_id *id,
                           const char *alpn, qraft_err *err);

/* ---- A static table ---- */

typedef struct qraft_discovery_static qraft_discovery_static;

int qraft_discovery_static_new(qraft_discovery_static **out);
/* Sets (or replaces) the address of addr->id. Any thread. Returns 0 or
 * -ENOMEM. */
int qraft_discovery_static_set(qraft_discovery_static *d,
                               const qraft_node_addr *addr);
/* Forgets `id`. Any thread. */
void qraft_discovery_static_remove(qraft_discovery_static *d,
                                   const qraft_node_id *id);
/* The provider's ops; its ud is the table. */
const qraft_discovery_ops *qraft_discovery_static_ops(void);
/* After the endpoints that use it are freed. NULL is ignored. */
void qraft_discovery_static_free(qraft_discovery_static *d);

/* ---- A file ----
 *
 * One node per line: its id (hex or base32), then any number of
 * `addr=IP:PORT` ([IPv6]:PORT for IPv6) and `relay=ID@IP:PORT` (iroh's TXT
 * attributes, with numeric addresses); `#` starts a comment. The file is
 * read at creation and again, at most once a second, when its modification
 * time or size changed; a file that cannot be read or parsed keeps the
 * last good table, and the error (with the line) is logged. Replace the
 * file whole (write another and rename it over): a file caught half
 * written reads as what it holds. */

typedef struct qraft_discovery_file qraft_discovery_file;

/*
 * Reads `path` (copied). `logger` may be NULL (the default logger).
 * Returns 0, or QRAFT_EMALFORMED (err names the line), -errno.
 */
int qraft_discovery_file_new(const char *path, qraft_env *env,
                             qraft_logger *logger,
                             qraft_discovery_file **out, qraft_err *err);
const qraft_discovery_ops *qraft_discovery_file_ops(void);
void qraft_discovery_file_free(qraft_discovery_file *d);

/* Parses "IP:PORT" or "[IPv6]:PORT" (numeric). Returns 0 or
 * QRAFT_EMALFORMED. */
int qraft_sockaddr_parse(const char *text, struct sockaddr_storage *out);

#ifdef __cplusplus
}
#endif
#endif
