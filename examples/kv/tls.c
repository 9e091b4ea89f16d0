/*
 * HTTPS for qraft-kv's client side (GnuTLS): the command-line client and a
 * member's own requests to other members (join, registration) talk to
 * https:// URLs with the credentials set once by kv_tls_client_setup: the
 * CA that signed the members' certificates (--cacert) and, when the
 * members ask for one, a client certificate. The server's certificate is
 * checked against the CA and against the host of the URL (a name or an IP
 * address in its subjectAltName).
 */
#include "kv.h"

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static gnutls_certificate_credentials_t kv_cred;
static bool kv_cred_ready;
/* the bench's and the workload's threads may open the first session at
 * once */
static pthread_mutex_t kv_cred_mu = PTHREAD_MUTEX_INITIALIZER;

static int tls_setup_locked(const char *cacert, const char *cert,
                            const char *key, char *msg, size_t n);

int kv_tls_client_setup(const char *cacert, const char *cert, const char *key,
                        char *msg, size_t n) {
  pthread_mutex_lock(&kv_cred_mu);
  int rv = tls_setup_locked(cacert, cert, key, msg, n);
  pthread_mutex_unlock(&kv_cred_mu);
  return rv;
}

static int tls_setup_locked(const char *cacert, const char *cert,
                            const char *key, char *msg, size_t n) {
  if (kv_cred_ready) return 0;
  int rv = gnutls_certificate_allocate_credentials(&kv_cred);
  if (rv < 0) {
    snprintf(msg, n, "TLS credentials: %s", gnutls_strerror(rv));
    return -1;
  }
  if (cacert != NULL) {
    rv = gnutls_certificate_set_x509_trust_file(kv_cred, cacert,
                                                GNUTLS_X509_FMT_PEM);
    if (rv <= 0) {
      snprintf(msg, n, "--cacert %s: %s", cacert,
               rv == 0 ? "no certificate in it" : gnutls_strerror(rv));
      gnutls_certificate_free_credentials(kv_cred);
      return -1;
    }
  } else {
    rv = gnutls_certificate_set_x509_system_trust(kv_cred);
    (void)rv; /* the system's CAs, if any */
  }
  if (cert != NULL && key != NULL) {
    rv = gnutls_certificate_set_x509_key_file(kv_cred, cert, key,
                                              GNUTLS_X509_FMT_PEM);
    if (rv < 0) {
      snprintf(msg, n, "client certificate %s / key %s: %s", cert, key,
               gnutls_strerror(rv));
      gnutls_certificate_free_credentials(kv_cred);
      return -1;
    }
  }
  kv_cred_ready = true;
  return 0;
}

static int tls_wait(int fd, gnutls_session_t s, uint64_t deadline) {
  return kv_wait_fd(fd, gnutls_record_get_direction(s) ? POLLOUT : POLLIN,
                    deadline);
}

void *kv_tls_client_open(int fd, const char *host, uint64_t deadline,
                         char *msg, size_t n) {
  if (kv_tls_client_setup(NULL, NULL, NULL, msg, n) != 0) {
    return NULL; /* (the credentials set up first, or now: the system's CAs) */
  }
  gnutls_session_t s;
  int rv = gnutls_init(&s, GNUTLS_CLIENT | GNUTLS_NONBLOCK);
  if (rv < 0) {
    snprintf(msg, n, "TLS: %s", gnutls_strerror(rv));
    return NULL;
  }
  /* the host of the URL, without brackets or port, names the server */
  char name[256];
  snprintf(name, sizeof name, "%s", host[0] == '[' ? host + 1 : host);
  char *end = host[0] == '[' ? strchr(name, ']') : strrchr(name, ':');
  if (end != NULL) *end = 0;
  if ((rv = gnutls_set_default_priority(s)) < 0 ||
      (rv = gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, kv_cred)) < 0) {
    snprintf(msg, n, "TLS: %s", gnutls_strerror(rv));
    gnutls_deinit(s);
    return NULL;
  }
  /* SNI only for names; the certificate is checked for names and IPs */
  bool ip = strspn(name, "0123456789.") == strlen(name) || strchr(name, ':');
  if (!ip) gnutls_server_name_set(s, GNUTLS_NAME_DNS, name, strlen(name));
  gnutls_session_set_verify_cert(s, name, 0);
  gnutls_transport_set_int(s, fd);
  gnutls_handshake_set_timeout(s, GNUTLS_DEFAULT_HANDSHAKE_TIMEOUT);
  do {
    rv = gnutls_handshake(s);
    if (rv == GNUTLS_E_AGAIN || rv == GNUTLS_E_INTERRUPTED) {
      if (tls_wait(fd, s, deadline) != 1) {
        snprintf(msg, n, "TLS handshake with %s: timed out", host);
        gnutls_deinit(s);
        return NULL;
      }
      continue;
    }
  } while (rv < 0 && gnutls_error_is_fatal(rv) == 0);
  if (rv < 0) {
    if (rv == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR) {
      unsigned st = gnutls_session_get_verify_cert_status(s);
      gnutls_datum_t out = {0};
      gnutls_certificate_verification_status_print(
          st, gnutls_certificate_type_get(s), &out, 0);
      snprintf(msg, n, "TLS: the certificate of %s is not trusted: %s", host,
               out.data ? (const char *)out.data : "?");
      gnutls_free(out.data);
    } else {
      snprintf(msg, n, "TLS handshake with %s: %s", host, gnutls_strerror(rv));
    }
    gnutls_deinit(s);
    return NULL;
  }
  return s;
}

ssize_t kv_tls_send(void *t, const void *buf, size_t len) {
  ssize_t rv = gnutls_record_send((gnutls_session_t)t, buf, len);
  if (rv == GNUTLS_E_AGAIN || rv == GNUTLS_E_INTERRUPTED) {
    errno = EAGAIN;
    return -1;
  }
  if (rv < 0) {
    errno = EIO;
    return -1;
  }
  return rv;
}

ssize_t kv_tls_recv(void *t, void *buf, size_t len) {
  ssize_t rv = gnutls_record_recv((gnutls_session_t)t, buf, len);
  if (rv == GNUTLS_E_AGAIN || rv == GNUTLS_E_INTERRUPTED) {
    errno = EAGAIN;
    return -1;
  }
  if (rv == GNUTLS_E_PREMATURE_TERMINATION) return 0; /* closed, no bye */
  if (rv < 0) {
    errno = EIO;
    return -1;
  }
  return rv;
}

bool kv_tls_pending(void *t) {
  return gnutls_record_check_pending((gnutls_session_t)t) > 0;
}

void kv_tls_close(void *t) {
  if (t == NULL) return;
  gnutls_session_t s = t;
  (void)gnutls_bye(s, GNUTLS_SHUT_WR); /* non-blocking: best effort */
  gnutls_deinit(s);
}
