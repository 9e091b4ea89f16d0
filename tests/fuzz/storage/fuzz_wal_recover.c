/*
 * fuzz_wal_recover: WAL recovery on arbitrary segment contents must return
 * a store or an error, never crash, hang or read out of bounds; a store it
 * returns must answer every read consistently.
 *
 * The input is a list of records in a compact form, each: u16 payload
 * length (mod 2048), u8 batch offset, u8 type, u8 flags (bit 0: last of its
 * batch), u8 control (bit 7: leave the CRC wrong, bit 6: stop here and
 * leave the rest of the input as raw bytes), then the payload. The harness
 * writes them as real records with correct CRCs (so the fuzzer gets past
 * the checksums to the structure checks) into segment 1 behind a valid
 * header, on /dev/shm, and opens the store.
 */
#include <qraft/crc32c.h>
#include <qraft/storage.h>

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SEG_BYTES (64u << 10)

static void put32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++) {
    p[i] = (uint8_t)(v >> (8 * i));
  }
}
static void put64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++) {
    p[i] = (uint8_t)(v >> (8 * i));
  }
}

static char dir[64];
static uint8_t seg[SEG_BYTES];

static void clean(void) {
  static const char *names[] = {"wal-0000000000000001.seg",
                                "wal-0000000000000002.seg",
                                "wal-0000000000000002.prep", "LOCK"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    char p[128];
    snprintf(p, sizeof p, "%s/%s", dir, names[i]);
    unlink(p);
  }
}

static void remove_dir(void) {
  clean();
  rmdir(dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (dir[0] == '\0') {
    snprintf(dir, sizeof dir, "/dev/shm/qraft-fuzz-wal-%d", (int)getpid());
    mkdir(dir, 0700);
    atexit(remove_dir);
  }
  clean();
  memset(seg, 0, sizeof seg);
  memcpy(seg, "QRAFTWAL", 8);
  put32(seg + 8, 1);
  put32(seg + 12, 64);
  put64(seg + 16, 1);
  put64(seg + 24, SEG_BYTES);
  put32(seg + 60, qraft_crc32c(0, seg, 60));
  size_t off = 64, in = 0;
  while (in + 6 <= size) {
    uint32_t len = ((uint32_t)data[in] | (uint32_t)data[in + 1] << 8) % 2048;
    uint8_t batch = data[in + 2], type = data[in + 3], flags = data[in + 4],
            ctl = data[in + 5];
    in += 6;
    if (ctl & 0x40) {
      size_t n = size - in;
      if (n > SEG_BYTES - off) {
        n = SEG_BYTES - off;
      }
      memcpy(seg + off, data + in, n);
      break;
    }
    size_t rec = (24 + len + 7) & ~(size_t)7;
    if (off + rec > SEG_BYTES) {
      break;
    }
    uint8_t *r = seg + off;
    put32(r + 4, len);
    put64(r + 8, 1 + (uint64_t)batch);
    r[16] = type;
    r[17] = flags & 1;
    size_t n = size - in < len ? size - in : len;
    memcpy(r + 24, data + in, n);
    in += n;
    put32(r, qraft_crc32c(0, r + 4, rec - 4) ^ (ctl & 0x80 ? 1u : 0u));
    off += rec;
  }
  char path[128];
  snprintf(path, sizeof path, "%s/wal-0000000000000001.seg", dir);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0 || write(fd, seg, sizeof seg) != (ssize_t)sizeof seg) {
    abort();
  }
  close(fd);

  qraft_wal_config cfg = {.segment_bytes = SEG_BYTES};
  qraft_storage *s = NULL;
  qraft_err err;
  qraft_err_init(&err, 0);
  if (qraft_storage_wal_open(dir, &cfg, &s, &err) == 0) {
    qraft_storage_state st;
    qraft_storage_state_get(s, &st, NULL);
    if (st.last_index + 1 < st.first_index) {
      abort(); /* bounds the store reports must be a log */
    }
    qraft_entry out[16];
    for (uint64_t lo = st.first_index; lo <= st.last_index;) {
      size_t n = 0;
      if (qraft_storage_entries(s, lo, st.last_index + 1, UINT64_MAX, out, 16,
                                &n, NULL) != 0 ||
          n == 0) {
        abort(); /* recovery checked these records: they must read back */
      }
      for (size_t i = 0; i < n; i++) {
        uint64_t t;
        if (out[i].index != lo + i ||
            qraft_storage_term(s, lo + i, &t, NULL) != 0 || t != out[i].term) {
          abort();
        }
      }
      qraft_storage_entries_release(out, n);
      lo += n;
    }
    qraft_storage_close(s);
  }
  clean();
  return 0;
}
