// Properties of the storage backends: random sequences of appends (with
// truncation), hard states, configurations, compactions, snapshot installs,
// bad writes and (for the WAL) reopens give, from every backend, the same
// answers as a plain model written here from the rules in qraft/storage.h:
// same log bounds and terms, same bytes, same hard state, configuration and
// snapshot, same refusals. A failure prints the RC_PARAMS="reproduce=..."
// line that replays it.
#include <rapidcheck.h>

#include <qraft/storage.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <unistd.h>
#include <vector>

namespace {

using Bytes = std::vector<uint8_t>;

// ---- the model ---------------------------------------------------------

struct Model {
  uint64_t first = 1, prev_term = 0;
  std::vector<uint64_t> terms;
  std::vector<Bytes> data;
  qraft_hard_state hs{};
  std::vector<uint64_t> voters;
  uint64_t snap_index = 0, snap_term = 0;
  Bytes snap_data;
  std::vector<uint64_t> snap_voters;

  uint64_t last() const { return first + terms.size() - 1; }
  bool term_at(uint64_t i, uint64_t *t) const {
    if (i + 1 == first) {
      *t = prev_term;
      return true;
    }
    if (i < first || i > last()) {
      return false;
    }
    *t = terms[i - first];
    return true;
  }
  void drop_before(uint64_t index) {  // entries < index go
    uint64_t k = index - first;
    prev_term = terms[k - 1];
    terms.erase(terms.begin(), terms.begin() + (long)k);
    data.erase(data.begin(), data.begin() + (long)k);
    first = index;
  }
};

// One step, as drawn: interpreted against the model so that most steps are
// valid writes.
struct Step {
  unsigned kind;  // see apply_step
  uint32_t a, b, c;
};

Bytes bytes_of(uint64_t seed, size_t len) {
  Bytes b(len);
  for (size_t i = 0; i < len; i++) {
    b[i] = (uint8_t)(seed * 131 + i * 7 + (i >> 8));
  }
  return b;
}

qraft_conf_state conf_of(const std::vector<uint64_t> &v) {
  qraft_conf_state c{};
  for (uint64_t id : v) {
    c.voters[c.voters_n++] = id;
  }
  return c;
}

std::vector<uint64_t> voters_of(const qraft_conf_state &c) {
  return std::vector<uint64_t>(c.voters, c.voters + c.voters_n);
}

// ---- a backend under test ----------------------------------------------

struct Backend {
  std::string kind;  // "mem" or "wal"
  std::string dir;
  qraft_storage *s = nullptr;

  void open() {
    qraft_err err;
    qraft_err_init(&err, 0);
    int rc;
    if (kind == "mem") {
      rc = qraft_storage_mem_new(&s);
    } else {
      qraft_wal_config cfg{};
      cfg.segment_bytes = 64 << 10;
      cfg.snapshot_chunk_bytes = 1000;
      rc = qraft_storage_wal_open(dir.c_str(), &cfg, &s, &err);
    }
    if (rc != 0) {
      char text[1024];
      qraft_err_format(&err, text, sizeof text);
      RC_FAIL(kind + " open: " + text);
    }
  }
  void reopen() {
    if (kind == "mem") {
      return;
    }
    qraft_storage_close(s);
    s = nullptr;
    open();
  }
  ~Backend() {
    qraft_storage_close(s);
    if (!dir.empty()) {
      std::string cmd = "rm -rf '" + dir + "'";
      if (system(cmd.c_str()) != 0) {
        fprintf(stderr, "could not remove %s\n", dir.c_str());
      }
    }
  }
};

// Submits a write and waits; returns the submit error or the write status.
int run_write(qraft_storage *s, qraft_storage_write *w) {
  return qraft_storage_write_sync(s, w, nullptr);
}

void check_state(Backend &b, const Model &m, bool bytes) {
  qraft_storage_state st;
  RC_ASSERT(qraft_storage_state_get(b.s, &st, nullptr) == 0);
  RC_ASSERT(st.first_index == m.first);
  RC_ASSERT(st.last_index == m.last());
  RC_ASSERT(st.prev_term == m.prev_term);
  RC_ASSERT(st.hard_state.term == m.hs.term);
  RC_ASSERT(st.hard_state.vote == m.hs.vote);
  RC_ASSERT(st.hard_state.commit == m.hs.commit);
  RC_ASSERT(voters_of(st.conf_state) == m.voters);
  RC_ASSERT(st.snapshot.index == m.snap_index);
  RC_ASSERT(st.snapshot.term == m.snap_term);
  for (uint64_t i = m.first == 0 ? 0 : m.first - 1; i <= m.last() + 1; i++) {
    uint64_t t = 0, want = 0;
    int rc = qraft_storage_term(b.s, i, &t, nullptr);
    if (m.term_at(i, &want)) {
      RC_ASSERT(rc == 0);
      RC_ASSERT(t == want);
    } else {
      RC_ASSERT(rc == QRAFT_EUNAVAILABLE);
    }
  }
  if (!bytes) {
    return;
  }
  std::vector<qraft_entry> out(16);
  for (uint64_t lo = m.first; lo <= m.last();) {
    size_t n = 0;
    RC_ASSERT(qraft_storage_entries(b.s, lo, m.last() + 1, UINT64_MAX,
                                    out.data(), out.size(), &n, nullptr) == 0);
    RC_ASSERT(n > 0);
    for (size_t i = 0; i < n; i++) {
      const Bytes &want = m.data[lo + i - m.first];
      RC_ASSERT(out[i].index == lo + i);
      RC_ASSERT(out[i].term == m.terms[lo + i - m.first]);
      RC_ASSERT(Bytes(out[i].data.data, out[i].data.data + out[i].data.len) ==
                want);
    }
    qraft_storage_entries_release(out.data(), n);
    lo += n;
  }
  qraft_snapshot_reader *r = nullptr;
  int rc = qraft_storage_snapshot_reader_open(b.s, &r, nullptr);
  if (m.snap_index == 0) {
    RC_ASSERT(rc == QRAFT_ENOTFOUND);
    return;
  }
  RC_ASSERT(rc == 0);
  RC_ASSERT(voters_of(r->meta.conf_state) == m.snap_voters);
  Bytes got;
  uint8_t buf[777];
  size_t n;
  do {
    RC_ASSERT(qraft_snapshot_reader_read(r, buf, sizeof buf, &n, nullptr) == 0);
    got.insert(got.end(), buf, buf + n);
  } while (n > 0);
  qraft_snapshot_reader_close(r);
  RC_ASSERT(got == m.snap_data);
}

// Interprets `st` against the model: builds the write (or reopen), runs it
// on every backend, applies it to the model when it is valid.
void apply_step(const Step &st, Model &m, std::vector<Backend *> &bs,
                uint64_t &cur_term) {
  qraft_storage_write w{};
  std::vector<qraft_entry> ents;
  std::vector<Bytes> payloads;
  qraft_hard_state hs{};
  qraft_conf_state cs{};
  std::vector<uint64_t> voters;
  bool valid = true;
  unsigned kind = st.kind % 10;
  uint64_t snap_index = 0, snap_term = 0;
  Bytes snap_data;
  std::vector<uint64_t> snap_voters;
  if (kind <= 3) {  // append, maybe truncating
    uint64_t lo = m.last() + 1;
    if (kind == 3 && m.last() >= m.first) {
      lo = m.last() + 1 - 1 - st.a % (m.last() - m.first + 1);
      cur_term++;
    }
    size_t n = 1 + st.b % 8;
    for (size_t i = 0; i < n; i++) {
      payloads.push_back(bytes_of(lo + i + cur_term * 1000, (st.c + i * 37) % 400));
    }
    for (size_t i = 0; i < n; i++) {
      qraft_entry e{};
      e.index = lo + i;
      e.term = cur_term;
      e.data.data = payloads[i].data();
      e.data.len = payloads[i].size();
      ents.push_back(e);
    }
    w.entries = ents.data();
    w.entries_n = n;
  } else if (kind == 4) {
    hs = {cur_term, 1 + st.a % 5, st.b % (m.last() + 1)};
    w.hard_state = &hs;
  } else if (kind == 5) {
    for (uint64_t id = 1; id <= 1 + st.a % 6; id++) {
      voters.push_back(id * 10 + st.b % 10);
    }
    cs = conf_of(voters);
    w.conf_state = &cs;
  } else if (kind == 6) {
    if (m.last() < m.first) {
      w.compact_index = m.first;  // nothing to compact: refused
      valid = false;
    } else {
      w.compact_index = m.first + 1 + st.a % (m.last() - m.first + 1);
    }
  } else if (kind == 7) {  // snapshot, inside the log or past it
    if (m.last() >= m.first && st.a % 2 == 0) {
      snap_index = m.first + st.b % (m.last() - m.first + 1);
      m.term_at(snap_index, &snap_term);
    } else {
      snap_index = m.last() + 1 + st.b % 20;
      snap_term = cur_term;
    }
    snap_data = bytes_of(snap_index * 7 + snap_term, st.c % 5000);
    snap_voters = {1 + st.a % 3, 7};
  } else if (kind == 8) {  // a bad write: a gap, or an empty write
    if (st.a % 2 == 0) {
      payloads.push_back(Bytes{1, 2, 3});
      qraft_entry e{};
      e.index = m.last() + 2;
      e.term = cur_term;
      e.data.data = payloads[0].data();
      e.data.len = 3;
      ents.push_back(e);
      w.entries = ents.data();
      w.entries_n = 1;
    }
    valid = false;
  } else {  // 9: reopen
    for (Backend *b : bs) {
      b->reopen();
      check_state(*b, m, true);
    }
    return;
  }
  for (Backend *b : bs) {
    qraft_storage_write wb = w;
    if (snap_index != 0) {
      qraft_snapshot_meta meta{};
      meta.index = snap_index;
      meta.term = snap_term;
      meta.conf_state = conf_of(snap_voters);
      qraft_snapshot_writer *sw = nullptr;
      RC_ASSERT(qraft_storage_snapshot_writer_open(b->s, &meta, &sw, nullptr) ==
                0);
      for (size_t off = 0; off < snap_data.size(); off += 1234) {
        size_t n = std::min<size_t>(1234, snap_data.size() - off);
        RC_ASSERT(qraft_snapshot_writer_write(sw, snap_data.data() + off, n,
                                              nullptr) == 0);
      }
      wb.snapshot = sw;
    }
    int rc = run_write(b->s, &wb);
    if (valid) {
      RC_ASSERT(rc == 0);
    } else {
      RC_ASSERT(rc == -EINVAL);
    }
  }
  if (!valid) {
    return;
  }
  // The model, by the rules of qraft/storage.h.
  if (snap_index != 0) {
    uint64_t t;
    if (m.term_at(snap_index, &t) && t == snap_term && snap_index >= m.first) {
      m.drop_before(snap_index + 1);
    } else if (!(snap_index + 1 == m.first && m.prev_term == snap_term)) {
      m.terms.clear();
      m.data.clear();
      m.first = snap_index + 1;
      m.prev_term = snap_term;
    }
    m.snap_index = snap_index;
    m.snap_term = snap_term;
    m.snap_data = snap_data;
    m.snap_voters = snap_voters;
    m.voters = snap_voters;
  }
  if (!ents.empty()) {
    uint64_t keep = ents[0].index - m.first;
    m.terms.resize(keep);
    m.data.resize(keep);
    for (size_t i = 0; i < ents.size(); i++) {
      m.terms.push_back(ents[i].term);
      m.data.push_back(payloads[i]);
    }
  }
  if (w.conf_state != nullptr) {
    m.voters = voters;
  }
  if (w.hard_state != nullptr) {
    m.hs = hs;
  }
  if (w.compact_index != 0) {
    m.drop_before(w.compact_index);
  }
}

}  // namespace

int main() {
  bool ok = rc::check(
      "every backend answers like the model, across reopens", [] {
        auto steps = *rc::gen::container<std::vector<Step>>(rc::gen::build<Step>(
            rc::gen::set(&Step::kind, rc::gen::elementOf(std::vector<unsigned>{
                                          0, 1, 2, 3, 4, 5, 6, 7, 8, 9})),
            rc::gen::set(&Step::a, rc::gen::arbitrary<uint32_t>()),
            rc::gen::set(&Step::b, rc::gen::arbitrary<uint32_t>()),
            rc::gen::set(&Step::c, rc::gen::arbitrary<uint32_t>())));
        Backend mem, wal;
        mem.kind = "mem";
        wal.kind = "wal";
        char tmpl[] = "/tmp/qraft-prop-XXXXXX";
        RC_ASSERT(mkdtemp(tmpl) != nullptr);
        wal.dir = tmpl;
        mem.open();
        wal.open();
        std::vector<Backend *> bs{&mem, &wal};
        Model m;
        uint64_t cur_term = 1;
        for (const Step &st : steps) {
          apply_step(st, m, bs, cur_term);
          for (Backend *b : bs) {
            check_state(*b, m, false);
          }
        }
        for (Backend *b : bs) {
          check_state(*b, m, true);
          b->reopen();
          check_state(*b, m, true);
        }
      });
  return ok ? 0 : 1;
}
