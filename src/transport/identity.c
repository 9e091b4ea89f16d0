/*
 * identity.c: Ed25519 keys, key files and the textual forms of node ids.
 *
 * A node id is the 32-byte Ed25519 public key (RFC 8032), as in iroh. Its
 * forms: 64 lowercase hex characters (printing), hex or RFC 4648 base32
 * (parsing), and the TLS server name: lowercase base32hex without padding
 * followed by ".iroh.invalid" (iroh's BASE32_DNSSEC name).
 */
#include <qraft/transport.h>

#include <errno.h>
#include <fcntl.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <libgen.h>
#include <limits.h>
#include <nettle/eddsa.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

_Static_assert(ED25519_KEY_SIZE == QRAFT_KEY_BYTES, "Ed25519 key size");
_Static_assert(QRAFT_SERVER_NAME_SIZE == 52 + sizeof ".iroh.invalid",
               "server name size");

void qraft_secret_key_from_seed(qraft_secret_key *key,
                                const uint8_t seed[QRAFT_KEY_BYTES]) {
  memcpy(key->seed, seed, QRAFT_KEY_BYTES);
  ed25519_sha512_public_key(key->public_key.bytes, key->seed);
}

int qraft_secret_key_generate(qraft_secret_key *key) {
  uint8_t seed[QRAFT_KEY_BYTES];
  if (gnutls_rnd(GNUTLS_RND_KEY, seed, sizeof seed) != 0) {
    return QRAFT_EKEY;
  }
  qraft_secret_key_from_seed(key, seed);
  gnutls_memset(seed, 0, sizeof seed);
  return 0;
}

void qraft_secret_key_wipe(qraft_secret_key *key) {
  gnutls_memset(key, 0, sizeof *key);
}

static const char hex_digits[] = "0123456789abcdef";

static int hex_value(char c) {
  if (c >= '0' && c <= '9') {
    return c - '0';
  }
  if (c >= 'a' && c <= 'f') {
    return c - 'a' + 10;
  }
  if (c >= 'A' && c <= 'F') {
    return c - 'A' + 10;
  }
  return -1;
}

static int hex_decode32(const char *text, uint8_t out[QRAFT_KEY_BYTES]) {
  for (size_t i = 0; i < QRAFT_KEY_BYTES; i++) {
    int hi = hex_value(text[2 * i]);
    int lo = hex_value(text[2 * i + 1]);
    if (hi < 0 || lo < 0) {
      return QRAFT_EMALFORMED;
    }
    out[i] = (uint8_t)(hi << 4 | lo);
  }
  return 0;
}

static void hex_encode32(const uint8_t in[QRAFT_KEY_BYTES], char *out) {
  for (size_t i = 0; i < QRAFT_KEY_BYTES; i++) {
    out[2 * i] = hex_digits[in[i] >> 4];
    out[2 * i + 1] = hex_digits[in[i] & 15];
  }
  out[2 * QRAFT_KEY_BYTES] = '\0';
}

int qraft_secret_key_save(const qraft_secret_key *key, const char *path,
                          qraft_err *err) {
  char tmp[PATH_MAX];
  if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) {
    return QRAFT_ERR(err, -ENAMETOOLONG, "key file %s", path);
  }
  char text[2 * QRAFT_KEY_BYTES + 2];
  hex_encode32(key->seed, text);
  text[2 * QRAFT_KEY_BYTES] = '\n';
  text[2 * QRAFT_KEY_BYTES + 1] = '\0';
  int rv = 0;
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW,
                0600);
  if (fd < 0) {
    rv = QRAFT_ERR(err, -errno, "create %s", tmp);
    goto err_wipe;
  }
  /* O_CREAT's mode passes through the umask; and an old file keeps its
   * mode. Make it exactly 0600 before the secret is written. */
  if (fchmod(fd, 0600) != 0) {
    rv = QRAFT_ERR(err, -errno, "chmod %s", tmp);
    goto err_close;
  }
  size_t len = strlen(text);
  if (write(fd, text, len) != (ssize_t)len) {
    rv = QRAFT_ERR(err, errno ? -errno : -EIO, "write %s", tmp);
    goto err_close;
  }
  if (fsync(fd) != 0) {
    rv = QRAFT_ERR(err, -errno, "fsync %s", tmp);
    goto err_close;
  }
  close(fd);
  if (rename(tmp, path) != 0) {
    rv = QRAFT_ERR(err, -errno, "rename %s to %s", tmp, path);
    goto err_unlink;
  }
  char dir[PATH_MAX];
  snprintf(dir, sizeof dir, "%s", path);
  int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    fsync(dfd);
    close(dfd);
  }
  gnutls_memset(text, 0, sizeof text);
  return 0;

err_close:
  close(fd);
err_unlink:
  unlink(tmp);
err_wipe:
  gnutls_memset(text, 0, sizeof text);
  return rv;
}

int qraft_secret_key_load(qraft_secret_key *key, const char *path,
                          qraft_err *err) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return QRAFT_ERR(err, -errno, "open key file %s", path);
  }
  int rv = 0;
  struct stat st;
  if (fstat(fd, &st) != 0) {
    rv = QRAFT_ERR(err, -errno, "stat key file %s", path);
    goto out_close;
  }
  if (!S_ISREG(st.st_mode)) {
    rv = QRAFT_ERR(err, QRAFT_EKEY, "key file %s is not a regular file",
                   path);
    goto out_close;
  }
  if ((st.st_mode & 077) != 0) {
    rv = QRAFT_ERR(err, QRAFT_EKEY,
                   "key file %s has mode %04o: group or others may access "
                   "it; run chmod 600 %s",
                   path, (unsigned)(st.st_mode & 07777), path);
    goto out_close;
  }
  char text[2 * QRAFT_KEY_BYTES + 3];
  ssize_t n = read(fd, text, sizeof text);
  if (n < 0) {
    rv = QRAFT_ERR(err, -errno, "read key file %s", path);
    goto out_close;
  }
  uint8_t seed[QRAFT_KEY_BYTES];
  if (n == QRAFT_KEY_BYTES) {
    memcpy(seed, text, QRAFT_KEY_BYTES);
  } else if ((n == 2 * QRAFT_KEY_BYTES ||
              (n == 2 * QRAFT_KEY_BYTES + 1 && text[n - 1] == '\n')) &&
             hex_decode32(text, seed) == 0) {
    /* hex */
  } else {
    rv = QRAFT_ERR(err, QRAFT_EKEY,
                   "key file %s: expected 64 hex characters (%zd bytes read)",
                   path, n);
    goto out_wipe;
  }
  qraft_secret_key_from_seed(key, seed);
  gnutls_memset(seed, 0, sizeof seed);
out_wipe:
  gnutls_memset(text, 0, sizeof text);
out_close:
  close(fd);
  return rv;
}

void qraft_node_id_to_hex(const qraft_node_id *id,
                          char out[QRAFT_NODE_ID_HEX_SIZE]) {
  hex_encode32(id->bytes, out);
}

/* Decodes 52 characters of base32 (alphabet given, upper case) into 32
 * bytes; the 4 bits left over in the last character must be zero. */
static int base32_decode32(const char *text, const char *alphabet,
                           uint8_t out[QRAFT_KEY_BYTES]) {
  uint32_t acc = 0;
  int bits = 0;
  size_t o = 0;
  for (size_t i = 0; i < 52; i++) {
    char c = text[i];
    if (c >= 'a' && c <= 'z') {
      c = (char)(c - 'a' + 'A');
    }
    const char *p = c != '\0' ? strchr(alphabet, c) : NULL;
    if (p == NULL) {
      return QRAFT_EMALFORMED;
    }
    acc = (acc << 5) | (uint32_t)(p - alphabet);
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (uint8_t)(acc >> bits);
      acc &= (1u << bits) - 1;
    }
  }
  if (o != QRAFT_KEY_BYTES || acc != 0) {
    return QRAFT_EMALFORMED;
  }
  return 0;
}

int qraft_node_id_parse(const char *text, qraft_node_id *out) {
  size_t len = strlen(text);
  if (len == 2 * QRAFT_KEY_BYTES) {
    return hex_decode32(text, out->bytes);
  }
  if (len == 52) {
    return base32_decode32(text, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567",
                           out->bytes);
  }
  return QRAFT_EMALFORMED;
}

void qraft_node_id_server_name(const qraft_node_id *id,
                               char out[QRAFT_SERVER_NAME_SIZE]) {
  static const char b32hex[] = "0123456789abcdefghijklmnopqrstuv";
  uint32_t acc = 0;
  int bits = 0;
  size_t o = 0;
  for (size_t i = 0; i < QRAFT_KEY_BYTES; i++) {
    acc = (acc << 8) | id->bytes[i];
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      out[o++] = b32hex[(acc >> bits) & 31];
    }
    acc &= (1u << bits) - 1;
  }
  if (bits > 0) {
    out[o++] = b32hex[(acc << (5 - bits)) & 31];
  }
  memcpy(out + o, ".iroh.invalid", sizeof ".iroh.invalid");
}

bool qraft_node_id_eq(const qraft_node_id *a, const qraft_node_id *b) {
  return memcmp(a->bytes, b->bytes, QRAFT_KEY_BYTES) == 0;
}

int qraft_node_id_cmp(const qraft_node_id *a, const qraft_node_id *b) {
  return memcmp(a->bytes, b->bytes, QRAFT_KEY_BYTES);
}
