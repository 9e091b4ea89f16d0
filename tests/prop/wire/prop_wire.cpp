// Properties of the wire codec over random values of every eraftpb type:
//  - our encode then our decode is the identity;
//  - our encoding, unpacked by protobuf-c (generated from docs/eraftpb.proto),
//    is the same value, and is byte for byte what protobuf-c packs;
//  - protobuf-c's encoding decodes with ours to the same value;
//  - unknown fields inserted anywhere are skipped, by us and by protobuf-c;
//  - frames of random batches round trip, and their body is a
//    qraft.wire.Frame to protobuf-c;
//  - decoding random bytes, when it succeeds, re-encodes to bytes that decode
//    to the same value;
//  - the core's own ConfChange codec (src/core/cc_codec.c, for configuration
//    entries) writes the same bytes as ours and reads ours;
//  - relay frames round trip; fed back to back to the relay reader in random
//    pieces, they come out in order as they went in.
// A failure prints the RC_PARAMS="reproduce=..." line that replays it.
#include <rapidcheck.h>

#include "eraftpb.pb-c.h"
#include "qraft_wire.pb-c.h"

#include <qraft/core.h>
#include <qraft/relay.h>
#include <qraft/varint.h>

#include <netinet/in.h>
#include <qraft/wire.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

// qraft/assert.h does not compile as C++ (it spells _Noreturn, which C++
// does not have): its hook setter, declared as it is there.
extern "C" {
typedef void (*qraft_assert_hook_cb)(const char *msg, void *ud);
void qraft_assert_set_hook(qraft_assert_hook_cb hook_cb, void *ud);
}

namespace {

using Bytes = std::vector<uint8_t>;

// ---- the model: plain C++ values, compared with == ----------------------

struct EntryM {
  uint32_t type = 0;
  uint64_t term = 0, index = 0;
  Bytes data, context;
  bool sync_log = false;
  bool operator==(const EntryM &) const = default;
};

struct ConfStateM {
  std::vector<uint64_t> voters, learners, voters_outgoing, learners_next;
  bool auto_leave = false;
  bool operator==(const ConfStateM &) const = default;
};

struct MetaM {
  ConfStateM conf_state;
  uint64_t index = 0, term = 0;
  bool operator==(const MetaM &) const = default;
};

struct SnapshotM {
  Bytes data;
  MetaM metadata;
  bool operator==(const SnapshotM &) const = default;
};

struct MessageM {
  uint32_t type = 0;
  uint64_t to = 0, from = 0, term = 0, log_term = 0, index = 0;
  std::vector<EntryM> entries;
  uint64_t commit = 0, commit_term = 0;
  std::optional<SnapshotM> snapshot;
  uint64_t request_snapshot = 0;
  bool reject = false;
  uint64_t reject_hint = 0;
  Bytes context;
  uint64_t deprecated_priority = 0;
  int64_t priority = 0;
  bool operator==(const MessageM &) const = default;
};

struct HardStateM {
  uint64_t term = 0, vote = 0, commit = 0;
  bool operator==(const HardStateM &) const = default;
};

struct SingleM {
  uint32_t type = 0;
  uint64_t node_id = 0;
  bool operator==(const SingleM &) const = default;
};

struct ConfChangeM {
  uint64_t id = 0;
  uint32_t type = 0;
  uint64_t node_id = 0;
  Bytes context;
  bool operator==(const ConfChangeM &) const = default;
};

struct ConfChangeV2M {
  uint32_t transition = 0;
  std::vector<SingleM> changes;
  Bytes context;
  bool operator==(const ConfChangeV2M &) const = default;
};

// ---- generators -----------------------------------------------------------

// Numbers of every varint length, zero often (absent in proto3).
rc::Gen<uint64_t> genU64() {
  return rc::gen::oneOf(rc::gen::just<uint64_t>(0),
                        rc::gen::inRange<uint64_t>(0, 200),
                        rc::gen::arbitrary<uint64_t>(),
                        rc::gen::map(rc::gen::inRange(0, 64), [](int bits) {
                          return bits == 64 ? UINT64_MAX
                                            : (uint64_t(1) << bits);
                        }));
}

rc::Gen<Bytes> genBytes() {
  return rc::gen::oneOf(rc::gen::just(Bytes{}),
                        rc::gen::arbitrary<Bytes>(),
                        rc::gen::map(rc::gen::inRange(0, 300), [](int n) {
                          return Bytes(size_t(n), uint8_t(0xa5));
                        }));
}

rc::Gen<std::vector<uint64_t>> genIds() {
  return rc::gen::mapcat(rc::gen::inRange(0, QRAFT_CONF_NODES_MAX + 1),
                         [](int n) {
                           return rc::gen::container<std::vector<uint64_t>>(
                               size_t(n), genU64());
                         });
}

rc::Gen<ConfStateM> genConfState() {
  return rc::gen::build<ConfStateM>(
      rc::gen::set(&ConfStateM::voters, genIds()),
      rc::gen::set(&ConfStateM::learners, genIds()),
      rc::gen::set(&ConfStateM::voters_outgoing, genIds()),
      rc::gen::set(&ConfStateM::learners_next, genIds()),
      rc::gen::set(&ConfStateM::auto_leave));
}

rc::Gen<SnapshotM> genSnapshot() {
  return rc::gen::build<SnapshotM>(
      rc::gen::set(&SnapshotM::data, genBytes()),
      rc::gen::set(&SnapshotM::metadata,
                   rc::gen::build<MetaM>(
                       rc::gen::set(&MetaM::conf_state, genConfState()),
                       rc::gen::set(&MetaM::index, genU64()),
                       rc::gen::set(&MetaM::term, genU64()))));
}

rc::Gen<EntryM> genEntry() {
  return rc::gen::build<EntryM>(
      rc::gen::set(&EntryM::type, rc::gen::inRange<uint32_t>(
                                      0, QRAFT_ENTRY_TYPE_MAX + 1)),
      rc::gen::set(&EntryM::term, genU64()),
      rc::gen::set(&EntryM::index, genU64()),
      rc::gen::set(&EntryM::data, genBytes()),
      rc::gen::set(&EntryM::context, genBytes()),
      rc::gen::set(&EntryM::sync_log));
}

rc::Gen<MessageM> genMessage() {
  return rc::gen::build<MessageM>(
      rc::gen::set(&MessageM::type,
                   rc::gen::inRange<uint32_t>(0, QRAFT_MSG_TYPE_MAX + 1)),
      rc::gen::set(&MessageM::to, genU64()),
      rc::gen::set(&MessageM::from, genU64()),
      rc::gen::set(&MessageM::term, genU64()),
      rc::gen::set(&MessageM::log_term, genU64()),
      rc::gen::set(&MessageM::index, genU64()),
      rc::gen::set(&MessageM::entries,
                   rc::gen::mapcat(rc::gen::inRange(0, 12), [](int n) {
                     return rc::gen::container<std::vector<EntryM>>(
                         size_t(n), genEntry());
                   })),
      rc::gen::set(&MessageM::commit, genU64()),
      rc::gen::set(&MessageM::commit_term, genU64()),
      rc::gen::set(&MessageM::snapshot,
                   rc::gen::oneOf(
                       rc::gen::just(std::optional<SnapshotM>()),
                       rc::gen::map(genSnapshot(), [](SnapshotM s) {
                         return std::optional<SnapshotM>(std::move(s));
                       }))),
      rc::gen::set(&MessageM::request_snapshot, genU64()),
      rc::gen::set(&MessageM::reject),
      rc::gen::set(&MessageM::reject_hint, genU64()),
      rc::gen::set(&MessageM::context, genBytes()),
      rc::gen::set(&MessageM::deprecated_priority, genU64()),
      rc::gen::set(&MessageM::priority,
                   rc::gen::map(genU64(), [](uint64_t u) {
                     return int64_t(u);
                   })));
}

rc::Gen<SingleM> genSingle() {
  return rc::gen::build<SingleM>(
      rc::gen::set(&SingleM::type, rc::gen::inRange<uint32_t>(0, 3)),
      rc::gen::set(&SingleM::node_id, genU64()));
}

rc::Gen<ConfChangeV2M> genConfChangeV2() {
  return rc::gen::build<ConfChangeV2M>(
      rc::gen::set(&ConfChangeV2M::transition,
                   rc::gen::inRange<uint32_t>(0, 3)),
      rc::gen::set(&ConfChangeV2M::changes,
                   rc::gen::mapcat(
                       rc::gen::inRange(0, QRAFT_CONF_CHANGES_MAX + 1),
                       [](int n) {
                         return rc::gen::container<std::vector<SingleM>>(
                             size_t(n), genSingle());
                       })),
      rc::gen::set(&ConfChangeV2M::context, genBytes()));
}

// ---- model <-> qraft types ----------------------------------------------

qraft_slice sliceOf(const Bytes &b) {
  return qraft_slice{b.empty() ? nullptr : b.data(), b.size(), nullptr};
}

Bytes bytesOf(qraft_slice s) { return Bytes(s.data, s.data + s.len); }

void idsTo(const std::vector<uint64_t> &v, qraft_id *ids, uint32_t *n) {
  *n = uint32_t(v.size());
  std::copy(v.begin(), v.end(), ids);
}

qraft_conf_state toQ(const ConfStateM &m) {
  qraft_conf_state cs{};
  idsTo(m.voters, cs.voters, &cs.voters_n);
  idsTo(m.learners, cs.learners, &cs.learners_n);
  idsTo(m.voters_outgoing, cs.voters_outgoing, &cs.voters_outgoing_n);
  idsTo(m.learners_next, cs.learners_next, &cs.learners_next_n);
  cs.auto_leave = m.auto_leave;
  return cs;
}

ConfStateM fromQ(const qraft_conf_state &cs) {
  ConfStateM m;
  m.voters.assign(cs.voters, cs.voters + cs.voters_n);
  m.learners.assign(cs.learners, cs.learners + cs.learners_n);
  m.voters_outgoing.assign(cs.voters_outgoing,
                           cs.voters_outgoing + cs.voters_outgoing_n);
  m.learners_next.assign(cs.learners_next,
                         cs.learners_next + cs.learners_next_n);
  m.auto_leave = cs.auto_leave;
  return m;
}

qraft_snapshot toQ(const SnapshotM &m) {
  qraft_snapshot s{};
  s.data = sliceOf(m.data);
  s.metadata.conf_state = toQ(m.metadata.conf_state);
  s.metadata.index = m.metadata.index;
  s.metadata.term = m.metadata.term;
  return s;
}

SnapshotM fromQ(const qraft_snapshot &s) {
  SnapshotM m;
  m.data = bytesOf(s.data);
  m.metadata.conf_state = fromQ(s.metadata.conf_state);
  m.metadata.index = s.metadata.index;
  m.metadata.term = s.metadata.term;
  return m;
}

qraft_entry toQ(const EntryM &m) {
  qraft_entry e{};
  e.type = qraft_entry_type(m.type);
  e.term = m.term;
  e.index = m.index;
  e.data = sliceOf(m.data);
  e.context = sliceOf(m.context);
  e.sync_log = m.sync_log;
  return e;
}

EntryM fromQ(const qraft_entry &e) {
  return EntryM{uint32_t(e.type), e.term,           e.index,
                bytesOf(e.data),  bytesOf(e.context), e.sync_log};
}

// A qraft_message and the storage its pointers point to.
struct QMessage {
  qraft_message msg{};
  std::vector<qraft_entry> entries;
  std::unique_ptr<qraft_snapshot> snapshot;
};

std::unique_ptr<QMessage> toQ(const MessageM &m) {
  auto q = std::make_unique<QMessage>();
  for (const auto &e : m.entries) {
    q->entries.push_back(toQ(e));
  }
  qraft_message &o = q->msg;
  o.type = qraft_msg_type(m.type);
  o.to = m.to;
  o.from = m.from;
  o.term = m.term;
  o.log_term = m.log_term;
  o.index = m.index;
  o.entries = q->entries.empty() ? nullptr : q->entries.data();
  o.entries_n = q->entries.size();
  o.commit = m.commit;
  o.commit_term = m.commit_term;
  if (m.snapshot) {
    q->snapshot = std::make_unique<qraft_snapshot>(toQ(*m.snapshot));
    o.snapshot = q->snapshot.get();
  }
  o.request_snapshot = m.request_snapshot;
  o.reject = m.reject;
  o.reject_hint = m.reject_hint;
  o.context = sliceOf(m.context);
  o.deprecated_priority = m.deprecated_priority;
  o.priority = m.priority;
  return q;
}

MessageM fromQ(const qraft_message &o) {
  MessageM m;
  m.type = uint32_t(o.type);
  m.to = o.to;
  m.from = o.from;
  m.term = o.term;
  m.log_term = o.log_term;
  m.index = o.index;
  for (size_t i = 0; i < o.entries_n; i++) {
    m.entries.push_back(fromQ(o.entries[i]));
  }
  m.commit = o.commit;
  m.commit_term = o.commit_term;
  if (o.snapshot != nullptr) {
    m.snapshot = fromQ(*o.snapshot);
  }
  m.request_snapshot = o.request_snapshot;
  m.reject = o.reject;
  m.reject_hint = o.reject_hint;
  m.context = bytesOf(o.context);
  m.deprecated_priority = o.deprecated_priority;
  m.priority = o.priority;
  return m;
}

// ---- model <-> protobuf-c -------------------------------------------------
// Values built here point into the model and into an arena of vectors that
// lives as long as the Pbc object.

struct Pbc {
  std::vector<std::unique_ptr<Eraftpb__Entry>> entries;
  std::vector<Eraftpb__Entry *> entry_ptrs;
  Eraftpb__ConfState cs = ERAFTPB__CONF_STATE__INIT;
  Eraftpb__SnapshotMetadata meta = ERAFTPB__SNAPSHOT_METADATA__INIT;
  Eraftpb__Snapshot snap = ERAFTPB__SNAPSHOT__INIT;
  Eraftpb__Message msg = ERAFTPB__MESSAGE__INIT;
  std::vector<uint64_t> ids[4];
};

ProtobufCBinaryData binOf(const Bytes &b) {
  return ProtobufCBinaryData{b.size(), const_cast<uint8_t *>(b.data())};
}

Bytes bytesOf(ProtobufCBinaryData b) { return Bytes(b.data, b.data + b.len); }

bool confStateEmpty(const ConfStateM &m) { return m == ConfStateM{}; }

// Fills p->cs from m; returns whether it is non-empty (then it is encoded).
void toPbc(const ConfStateM &m, Eraftpb__ConfState *cs,
           std::vector<uint64_t> ids[4]) {
  ids[0] = m.voters;
  ids[1] = m.learners;
  ids[2] = m.voters_outgoing;
  ids[3] = m.learners_next;
  cs->n_voters = ids[0].size();
  cs->voters = ids[0].data();
  cs->n_learners = ids[1].size();
  cs->learners = ids[1].data();
  cs->n_voters_outgoing = ids[2].size();
  cs->voters_outgoing = ids[2].data();
  cs->n_learners_next = ids[3].size();
  cs->learners_next = ids[3].data();
  cs->auto_leave = m.auto_leave;
}

ConfStateM fromPbc(const Eraftpb__ConfState *cs) {
  ConfStateM m;
  if (cs == nullptr) {
    return m;
  }
  m.voters.assign(cs->voters, cs->voters + cs->n_voters);
  m.learners.assign(cs->learners, cs->learners + cs->n_learners);
  m.voters_outgoing.assign(cs->voters_outgoing,
                           cs->voters_outgoing + cs->n_voters_outgoing);
  m.learners_next.assign(cs->learners_next,
                         cs->learners_next + cs->n_learners_next);
  m.auto_leave = cs->auto_leave;
  return m;
}

// Our C types embed SnapshotMetadata and ConfState, so an empty one is not
// encoded; protobuf-c gets NULL for them.
void toPbc(const SnapshotM &m, Pbc *p) {
  p->snap.data = binOf(m.data);
  toPbc(m.metadata.conf_state, &p->cs, p->ids);
  p->meta.conf_state = confStateEmpty(m.metadata.conf_state) ? nullptr : &p->cs;
  p->meta.index = m.metadata.index;
  p->meta.term = m.metadata.term;
  bool meta_empty = p->meta.conf_state == nullptr && p->meta.index == 0 &&
                    p->meta.term == 0;
  p->snap.metadata = meta_empty ? nullptr : &p->meta;
}

SnapshotM fromPbc(const Eraftpb__Snapshot *s) {
  SnapshotM m;
  m.data = bytesOf(s->data);
  if (s->metadata != nullptr) {
    m.metadata.conf_state = fromPbc(s->metadata->conf_state);
    m.metadata.index = s->metadata->index;
    m.metadata.term = s->metadata->term;
  }
  return m;
}

void toPbc(const EntryM &m, Eraftpb__Entry *e) {
  eraftpb__entry__init(e);
  e->entry_type = Eraftpb__EntryType(m.type);
  e->term = m.term;
  e->index = m.index;
  e->data = binOf(m.data);
  e->context = binOf(m.context);
  e->sync_log = m.sync_log;
}

EntryM fromPbc(const Eraftpb__Entry *e) {
  return EntryM{uint32_t(e->entry_type), e->term,           e->index,
                bytesOf(e->data),        bytesOf(e->context), e->sync_log != 0};
}

std::unique_ptr<Pbc> toPbc(const MessageM &m) {
  auto p = std::make_unique<Pbc>();
  for (const auto &e : m.entries) {
    p->entries.push_back(std::make_unique<Eraftpb__Entry>());
    toPbc(e, p->entries.back().get());
    p->entry_ptrs.push_back(p->entries.back().get());
  }
  Eraftpb__Message &o = p->msg;
  o.msg_type = Eraftpb__MessageType(m.type);
  o.to = m.to;
  o.from = m.from;
  o.term = m.term;
  o.log_term = m.log_term;
  o.index = m.index;
  o.n_entries = p->entry_ptrs.size();
  o.entries = p->entry_ptrs.data();
  o.commit = m.commit;
  o.commit_term = m.commit_term;
  if (m.snapshot) {
    toPbc(*m.snapshot, p.get());
    o.snapshot = &p->snap;
  }
  o.request_snapshot = m.request_snapshot;
  o.reject = m.reject;
  o.reject_hint = m.reject_hint;
  o.context = binOf(m.context);
  o.deprecated_priority = m.deprecated_priority;
  o.priority = m.priority;
  return p;
}

MessageM fromPbc(const Eraftpb__Message *o) {
  MessageM m;
  m.type = uint32_t(o->msg_type);
  m.to = o->to;
  m.from = o->from;
  m.term = o->term;
  m.log_term = o->log_term;
  m.index = o->index;
  for (size_t i = 0; i < o->n_entries; i++) {
    m.entries.push_back(fromPbc(o->entries[i]));
  }
  m.commit = o->commit;
  m.commit_term = o->commit_term;
  if (o->snapshot != nullptr) {
    m.snapshot = fromPbc(o->snapshot);
  }
  m.request_snapshot = o->request_snapshot;
  m.reject = o->reject != 0;
  m.reject_hint = o->reject_hint;
  m.context = bytesOf(o->context);
  m.deprecated_priority = o->deprecated_priority;
  m.priority = o->priority;
  return m;
}

// ---- helpers --------------------------------------------------------------

std::string errText(const qraft_err &err) {
  char buf[1024];
  qraft_err_format(&err, buf, sizeof buf);
  return buf;
}

Bytes encodeQ(const qraft_message &m) {
  Bytes out(qraft_wire_message_size(&m));
  size_t n = 0;
  RC_ASSERT(qraft_wire_message_encode(&m, out.data(), out.size(), &n) == 0);
  RC_ASSERT(n == out.size());
  return out;
}

// Decodes with ours; the buffer is a qraft_buf so payloads are zero copy.
MessageM decodeQ(const Bytes &bytes) {
  qraft_buf *b = qraft_buf_copy(bytes.data(), bytes.size());
  qraft_wire_batch *batch = nullptr;
  qraft_err err;
  qraft_err_init(&err, 0);
  int rc = qraft_wire_message_decode(b, b->data, b->len, nullptr, &batch, &err);
  if (rc != 0) {
    qraft_buf_unref(b);
    RC_FAIL("our decoder: " + errText(err));
  }
  RC_ASSERT(batch->msgs_n == size_t(1));
  MessageM m = fromQ(batch->msgs[0]);
  qraft_wire_batch_free(batch);
  RC_ASSERT(qraft_buf_refs(b) == 1u);
  qraft_buf_unref(b);
  return m;
}

Bytes packPbc(const ProtobufCMessage *m) {
  Bytes out(protobuf_c_message_get_packed_size(m));
  RC_ASSERT(protobuf_c_message_pack(m, out.data()) == out.size());
  return out;
}

// Appends a random unknown field (numbers 17..2000 are unknown to every
// eraftpb message; 100 is Message.alarms, qraft's own) to `out`.
void appendUnknown(Bytes &out) {
  auto num = *rc::gen::suchThat(rc::gen::inRange<uint32_t>(17, 2000),
                                [](uint32_t f) { return f != 100; });
  auto wt = *rc::gen::element(0u, 1u, 2u, 5u);
  uint8_t tmp[QRAFT_VARINT_MAX];
  size_t n = qraft_varint_encode(tmp, (uint64_t(num) << 3) | wt);
  out.insert(out.end(), tmp, tmp + n);
  switch (wt) {
  case 0:
    n = qraft_varint_encode(tmp, *genU64());
    out.insert(out.end(), tmp, tmp + n);
    break;
  case 1:
    out.insert(out.end(), 8, 0x11);
    break;
  case 2: {
    Bytes v = *genBytes();
    n = qraft_varint_encode(tmp, v.size());
    out.insert(out.end(), tmp, tmp + n);
    out.insert(out.end(), v.begin(), v.end());
    break;
  }
  default:
    out.insert(out.end(), 4, 0x22);
  }
}

// Splits an encoded message into its top-level fields.
std::vector<Bytes> fieldsOf(const Bytes &enc) {
  std::vector<Bytes> fields;
  size_t i = 0;
  while (i < enc.size()) {
    size_t start = i;
    uint64_t tag = 0, v = 0;
    size_t n = 0;
    RC_ASSERT(qraft_varint_decode(&enc[i], enc.size() - i, &tag, &n) == 0);
    i += n;
    RC_ASSERT(qraft_varint_decode(&enc[i], enc.size() - i, &v, &n) == 0);
    i += n;
    if ((tag & 7) == 2) {
      i += v;
    }
    fields.emplace_back(enc.begin() + long(start), enc.begin() + long(i));
  }
  return fields;
}

// ---- relay frames --------------------------------------------------------

// One relay frame of a random layout, or of a type we do not know, encoded
// (empty if it could not be: the property checks). Our encoder writes the
// shortest varints, so a frame read back and encoded again gives these
// bytes back.
rc::Gen<Bytes> genRelayFrame() {
  return rc::gen::exec([] {
    static const uint64_t types[] = {
        QRAFT_RELAY_SEND,       QRAFT_RELAY_SEND_BATCH, QRAFT_RELAY_RECV,
        QRAFT_RELAY_RECV_BATCH, QRAFT_RELAY_PEER_GONE,  QRAFT_RELAY_PING,
        QRAFT_RELAY_PONG,       QRAFT_RELAY_HEALTH,     QRAFT_RELAY_RESTARTING,
        QRAFT_RELAY_STATUS,     QRAFT_RELAY_OBSERVED_ADDR, 14, 40, 20000};
    qraft_relay_frame f{};
    f.type = *rc::gen::elementOf(
        std::vector<uint64_t>(std::begin(types), std::end(types)));
    Bytes data = *rc::gen::container<Bytes>(rc::gen::arbitrary<uint8_t>());
    if (f.type == QRAFT_RELAY_HEALTH) {
      for (auto &c : data) c &= 0x7f; /* ASCII is UTF-8 */
    }
    bool dgram = f.type >= QRAFT_RELAY_SEND && f.type <= QRAFT_RELAY_RECV_BATCH;
    if (dgram && data.empty()) {
      data.push_back(1);
    }
    f.data = data.data();
    f.data_len = data.size();
    for (auto &b : f.peer.bytes) b = *rc::gen::arbitrary<uint8_t>();
    f.ecn = *rc::gen::inRange<uint8_t>(0, 4);
    f.segment = *rc::gen::inRange<uint16_t>(1, 65535);
    for (auto &b : f.ping) b = *rc::gen::arbitrary<uint8_t>();
    f.reconnect_in_ms = *rc::gen::arbitrary<uint32_t>();
    f.try_for_ms = *rc::gen::arbitrary<uint32_t>();
    f.status = *rc::gen::inRange<uint8_t>(0, 2);
    if (*rc::gen::arbitrary<bool>()) {
      auto *a = reinterpret_cast<sockaddr_in *>(&f.addr);
      a->sin_family = AF_INET;
      a->sin_port = *rc::gen::arbitrary<uint16_t>();
      a->sin_addr.s_addr = *rc::gen::arbitrary<uint32_t>();
    } else {
      auto *a = reinterpret_cast<sockaddr_in6 *>(&f.addr);
      a->sin6_family = AF_INET6;
      a->sin6_port = *rc::gen::arbitrary<uint16_t>();
      for (auto &b : a->sin6_addr.s6_addr) b = *rc::gen::arbitrary<uint8_t>();
    }
    Bytes out(qraft_relay_frame_size(&f));
    if (!out.empty() && qraft_relay_frame_encode(&f, out.data()) != out.size()) {
      out.clear();
    }
    return out;
  });
}

// A failed QRAFT_ASSERT becomes an exception, so that rapidcheck shrinks the
// case and prints the line that replays it rather than the process
// aborting. It unwinds through qraft's C frames (gcc on x86-64 gives them
// unwind tables). The hook clears itself when it fires: install it again
// for each case.
[[noreturn]] void assertionThrows(const char *msg, void *) {
  throw std::runtime_error(msg);
}

struct RelayReader {
  qraft_relay_reader r{};
  ~RelayReader() { qraft_relay_reader_free(&r); }
};

} // namespace

// Each small type: ours round trips, is byte for byte protobuf-c's, and
// each decodes the other's encoding to the same value.
#define CHECK_SMALL(qtype, qname, q, pbcvar, pbcname, same)                    \
  do {                                                                         \
    Bytes ours(qraft_wire_##qname##_size(&(q)));                               \
    size_t n_ = 0;                                                             \
    RC_ASSERT(qraft_wire_##qname##_encode(&(q), ours.data(), ours.size(),      \
                                          &n_) == 0);                          \
    Bytes theirs = packPbc(&(pbcvar).base);                                    \
    RC_ASSERT(ours == theirs);                                                 \
    auto *u_ = pbcname##__unpack(nullptr, ours.size(), ours.data());           \
    RC_ASSERT(u_ != nullptr);                                                  \
    bool same_ = (same);                                                       \
    pbcname##__free_unpacked(u_, nullptr);                                     \
    RC_ASSERT(same_);                                                          \
  } while (0)

int main() {
  bool ok = true;

  ok &= rc::check("Message: round trip, same bytes as protobuf-c, each "
                  "decodes the other",
                  [] {
                    MessageM m = *genMessage();
                    auto q = toQ(m);
                    Bytes ours = encodeQ(q->msg);
                    RC_ASSERT(decodeQ(ours) == m);
                    auto p = toPbc(m);
                    Bytes theirs = packPbc(&p->msg.base);
                    RC_ASSERT(decodeQ(theirs) == m);
                    Eraftpb__Message *u = eraftpb__message__unpack(
                        nullptr, ours.size(), ours.data());
                    RC_ASSERT(u != nullptr);
                    MessageM back = fromPbc(u);
                    eraftpb__message__free_unpacked(u, nullptr);
                    RC_ASSERT(back == m);
                    RC_ASSERT(ours == theirs);
                  });

  ok &= rc::check("Message: unknown fields anywhere are skipped, by us and "
                  "by protobuf-c",
                  [] {
                    MessageM m = *genMessage();
                    auto q = toQ(m);
                    std::vector<Bytes> fields = fieldsOf(encodeQ(q->msg));
                    Bytes mixed;
                    for (size_t i = 0; i <= fields.size(); i++) {
                      int extra = *rc::gen::inRange(0, 3);
                      for (int k = 0; k < extra; k++) {
                        appendUnknown(mixed);
                      }
                      if (i < fields.size()) {
                        mixed.insert(mixed.end(), fields[i].begin(),
                                     fields[i].end());
                      }
                    }
                    RC_ASSERT(decodeQ(mixed) == m);
                    Eraftpb__Message *u = eraftpb__message__unpack(
                        nullptr, mixed.size(), mixed.data());
                    RC_ASSERT(u != nullptr);
                    MessageM back = fromPbc(u);
                    eraftpb__message__free_unpacked(u, nullptr);
                    RC_ASSERT(back == m);
                  });

  ok &= rc::check("Entry, Snapshot, ConfState, HardState: round trip and "
                  "protobuf-c agree",
                  [] {
                    EntryM em = *genEntry();
                    qraft_entry e = toQ(em);
                    Eraftpb__Entry pe;
                    toPbc(em, &pe);
                    CHECK_SMALL(qraft_entry, entry, e, pe, eraftpb__entry,
                                fromPbc(u_) == em);
                    Bytes enc(qraft_wire_entry_size(&e));
                    size_t n = 0;
                    RC_ASSERT(qraft_wire_entry_encode(&e, enc.data(),
                                                      enc.size(), &n) == 0);
                    qraft_entry e2;
                    RC_ASSERT(qraft_wire_entry_decode(nullptr, enc.data(),
                                                      enc.size(), &e2,
                                                      nullptr) == 0);
                    RC_ASSERT(fromQ(e2) == em);

                    SnapshotM sm = *genSnapshot();
                    qraft_snapshot s = toQ(sm);
                    Pbc ps;
                    toPbc(sm, &ps);
                    CHECK_SMALL(qraft_snapshot, snapshot, s, ps.snap,
                                eraftpb__snapshot, fromPbc(u_) == sm);
                    Bytes senc(qraft_wire_snapshot_size(&s));
                    RC_ASSERT(qraft_wire_snapshot_encode(&s, senc.data(),
                                                         senc.size(), &n) == 0);
                    qraft_snapshot s2;
                    RC_ASSERT(qraft_wire_snapshot_decode(nullptr, senc.data(),
                                                         senc.size(), &s2,
                                                         nullptr) == 0);
                    RC_ASSERT(fromQ(s2) == sm);
                    if (ps.snap.metadata != nullptr) {
                      qraft_snapshot_meta mq = s.metadata, mq2;
                      CHECK_SMALL(qraft_snapshot_meta, snapshot_meta, mq,
                                  ps.meta, eraftpb__snapshot_metadata,
                                  fromPbc(u_->conf_state) ==
                                      sm.metadata.conf_state);
                      Bytes menc(qraft_wire_snapshot_meta_size(&mq));
                      RC_ASSERT(qraft_wire_snapshot_meta_encode(
                                    &mq, menc.data(), menc.size(), &n) == 0);
                      RC_ASSERT(qraft_wire_snapshot_meta_decode(
                                    menc.data(), menc.size(), &mq2,
                                    nullptr) == 0);
                      RC_ASSERT(fromQ(mq2.conf_state) ==
                                sm.metadata.conf_state);
                    }
                    ConfStateM cm = *genConfState();
                    qraft_conf_state cs = toQ(cm), cs2;
                    Pbc pc;
                    toPbc(cm, &pc.cs, pc.ids);
                    CHECK_SMALL(qraft_conf_state, conf_state, cs, pc.cs,
                                eraftpb__conf_state, fromPbc(u_) == cm);
                    Bytes cenc(qraft_wire_conf_state_size(&cs));
                    RC_ASSERT(qraft_wire_conf_state_encode(
                                  &cs, cenc.data(), cenc.size(), &n) == 0);
                    RC_ASSERT(qraft_wire_conf_state_decode(
                                  cenc.data(), cenc.size(), &cs2, nullptr) == 0);
                    RC_ASSERT(fromQ(cs2) == cm);

                    qraft_hard_state hs{*genU64(), *genU64(), *genU64()}, hs2;
                    Eraftpb__HardState ph = ERAFTPB__HARD_STATE__INIT;
                    ph.term = hs.term;
                    ph.vote = hs.vote;
                    ph.commit = hs.commit;
                    CHECK_SMALL(qraft_hard_state, hard_state, hs, ph,
                                eraftpb__hard_state,
                                u_->term == hs.term && u_->vote == hs.vote &&
                                    u_->commit == hs.commit);
                    Bytes henc(qraft_wire_hard_state_size(&hs));
                    RC_ASSERT(qraft_wire_hard_state_encode(
                                  &hs, henc.data(), henc.size(), &n) == 0);
                    RC_ASSERT(qraft_wire_hard_state_decode(
                                  henc.data(), henc.size(), &hs2, nullptr) == 0);
                    RC_ASSERT(hs2.term == hs.term && hs2.vote == hs.vote &&
                              hs2.commit == hs.commit);
                  });

  ok &= rc::check("ConfChange, ConfChangeSingle, ConfChangeV2: round trip "
                  "and protobuf-c agree",
                  [] {
                    ConfChangeM m{*genU64(), *rc::gen::inRange<uint32_t>(0, 3),
                                  *genU64(), *genBytes()};
                    qraft_conf_change cc{m.id, qraft_conf_change_type(m.type),
                                         m.node_id, sliceOf(m.context)};
                    Eraftpb__ConfChange pcc = ERAFTPB__CONF_CHANGE__INIT;
                    pcc.id = m.id;
                    pcc.change_type = Eraftpb__ConfChangeType(m.type);
                    pcc.node_id = m.node_id;
                    pcc.context = binOf(m.context);
                    CHECK_SMALL(qraft_conf_change, conf_change, cc, pcc,
                                eraftpb__conf_change,
                                (ConfChangeM{u_->id, uint32_t(u_->change_type),
                                             u_->node_id,
                                             bytesOf(u_->context)} == m));
                    Bytes enc(qraft_wire_conf_change_size(&cc));
                    size_t n = 0;
                    RC_ASSERT(qraft_wire_conf_change_encode(
                                  &cc, enc.data(), enc.size(), &n) == 0);
                    qraft_conf_change cc2;
                    RC_ASSERT(qraft_wire_conf_change_decode(
                                  nullptr, enc.data(), enc.size(), &cc2,
                                  nullptr) == 0);
                    RC_ASSERT((ConfChangeM{cc2.id, uint32_t(cc2.change_type),
                                           cc2.node_id,
                                           bytesOf(cc2.context)} == m));

                    SingleM sm = *genSingle();
                    qraft_conf_change_single s{qraft_conf_change_type(sm.type),
                                               sm.node_id},
                        s2;
                    Eraftpb__ConfChangeSingle ps =
                        ERAFTPB__CONF_CHANGE_SINGLE__INIT;
                    ps.change_type = Eraftpb__ConfChangeType(sm.type);
                    ps.node_id = sm.node_id;
                    CHECK_SMALL(qraft_conf_change_single, conf_change_single,
                                s, ps, eraftpb__conf_change_single,
                                (SingleM{uint32_t(u_->change_type),
                                         u_->node_id} == sm));
                    Bytes senc(qraft_wire_conf_change_single_size(&s));
                    RC_ASSERT(qraft_wire_conf_change_single_encode(
                                  &s, senc.data(), senc.size(), &n) == 0);
                    RC_ASSERT(qraft_wire_conf_change_single_decode(
                                  senc.data(), senc.size(), &s2, nullptr) == 0);
                    RC_ASSERT((SingleM{uint32_t(s2.change_type), s2.node_id} ==
                               sm));

                    ConfChangeV2M vm = *genConfChangeV2();
                    auto v2 = std::make_unique<qraft_conf_change_v2>();
                    v2->transition = qraft_conf_transition(vm.transition);
                    v2->changes_n = uint32_t(vm.changes.size());
                    std::vector<Eraftpb__ConfChangeSingle> pcs(
                        vm.changes.size());
                    std::vector<Eraftpb__ConfChangeSingle *> pcs_ptrs;
                    for (size_t i = 0; i < vm.changes.size(); i++) {
                      v2->changes[i] = qraft_conf_change_single{
                          qraft_conf_change_type(vm.changes[i].type),
                          vm.changes[i].node_id};
                      eraftpb__conf_change_single__init(&pcs[i]);
                      pcs[i].change_type =
                          Eraftpb__ConfChangeType(vm.changes[i].type);
                      pcs[i].node_id = vm.changes[i].node_id;
                      pcs_ptrs.push_back(&pcs[i]);
                    }
                    v2->context = sliceOf(vm.context);
                    Eraftpb__ConfChangeV2 pv = ERAFTPB__CONF_CHANGE_V2__INIT;
                    pv.transition = Eraftpb__ConfChangeTransition(vm.transition);
                    pv.n_changes = pcs_ptrs.size();
                    pv.changes = pcs_ptrs.data();
                    pv.context = binOf(vm.context);
                    auto v2back = [](const Eraftpb__ConfChangeV2 *u) {
                      ConfChangeV2M r;
                      r.transition = uint32_t(u->transition);
                      for (size_t i = 0; i < u->n_changes; i++) {
                        r.changes.push_back(
                            SingleM{uint32_t(u->changes[i]->change_type),
                                    u->changes[i]->node_id});
                      }
                      r.context = bytesOf(u->context);
                      return r;
                    };
                    CHECK_SMALL(qraft_conf_change_v2, conf_change_v2, *v2, pv,
                                eraftpb__conf_change_v2, v2back(u_) == vm);
                    Bytes venc(qraft_wire_conf_change_v2_size(v2.get()));
                    RC_ASSERT(qraft_wire_conf_change_v2_encode(
                                  v2.get(), venc.data(), venc.size(), &n) == 0);
                    auto v22 = std::make_unique<qraft_conf_change_v2>();
                    RC_ASSERT(qraft_wire_conf_change_v2_decode(
                                  nullptr, venc.data(), venc.size(), v22.get(),
                                  nullptr) == 0);
                    ConfChangeV2M r;
                    r.transition = uint32_t(v22->transition);
                    for (uint32_t i = 0; i < v22->changes_n; i++) {
                      r.changes.push_back(
                          SingleM{uint32_t(v22->changes[i].change_type),
                                  v22->changes[i].node_id});
                    }
                    r.context = bytesOf(v22->context);
                    RC_ASSERT(r == vm);
                  });

  ok &= rc::check("Frame: a batch round trips and is a qraft.wire.Frame to "
                  "protobuf-c",
                  [] {
                    auto models = *rc::gen::mapcat(
                        rc::gen::inRange(1, 8), [](int n) {
                          return rc::gen::container<std::vector<MessageM>>(
                              size_t(n), genMessage());
                        });
                    uint64_t group = *genU64();
                    std::vector<std::unique_ptr<QMessage>> qs;
                    std::vector<qraft_message> msgs;
                    for (const auto &m : models) {
                      qs.push_back(toQ(m));
                      msgs.push_back(qs.back()->msg);
                    }
                    qraft_buf *f = nullptr;
                    qraft_err err;
                    qraft_err_init(&err, 0);
                    RC_ASSERT(qraft_wire_frame_encode_buf(
                                  group, msgs.data(), msgs.size(), nullptr,
                                  nullptr, &f, &err) == 0);
                    qraft_wire_batch *batch = nullptr;
                    int rc = qraft_wire_frame_decode(f, f->data, f->len,
                                                     nullptr, &batch, &err);
                    if (rc != 0) {
                      qraft_buf_unref(f);
                      RC_FAIL("frame decode: " + errText(err));
                    }
                    RC_ASSERT(batch->group_id == group);
                    RC_ASSERT(batch->msgs_n == models.size());
                    for (size_t i = 0; i < models.size(); i++) {
                      RC_ASSERT(fromQ(batch->msgs[i]) == models[i]);
                    }
                    qraft_wire_batch_free(batch);
                    Qraft__Wire__Frame *u = qraft__wire__frame__unpack(
                        nullptr, f->len - QRAFT_WIRE_FRAME_HEADER_BYTES,
                        f->data + QRAFT_WIRE_FRAME_HEADER_BYTES);
                    qraft_buf_unref(f);
                    RC_ASSERT(u != nullptr);
                    bool same = u->group_id == group &&
                                u->n_messages == models.size();
                    for (size_t i = 0; same && i < u->n_messages; i++) {
                      same = fromPbc(u->messages[i]) == models[i];
                    }
                    qraft__wire__frame__free_unpacked(u, nullptr);
                    RC_ASSERT(same);
                  });

  ok &= rc::check("Corrupted messages: whatever decodes re-encodes to the "
                  "same value, and protobuf-c reads the same value",
                  [] {
                    MessageM orig = *genMessage();
                    auto q = toQ(orig); // points into orig
                    Bytes enc = encodeQ(q->msg);
                    RC_PRE(!enc.empty());
                    int flips = *rc::gen::inRange(1, 4);
                    for (int k = 0; k < flips; k++) {
                      size_t at = *rc::gen::inRange<size_t>(0, enc.size());
                      enc[at] ^= *rc::gen::inRange<uint8_t>(1, 255);
                    }
                    qraft_wire_batch *batch = nullptr;
                    if (qraft_wire_message_decode(nullptr, enc.data(),
                                                  enc.size(), nullptr, &batch,
                                                  nullptr) != 0) {
                      RC_SUCCEED("refused");
                    }
                    MessageM m = fromQ(batch->msgs[0]);
                    qraft_wire_batch_free(batch);
                    auto q2 = toQ(m);
                    RC_ASSERT(decodeQ(encodeQ(q2->msg)) == m);
                    Eraftpb__Message *u = eraftpb__message__unpack(
                        nullptr, enc.size(), enc.data());
                    RC_ASSERT(u != nullptr);
                    MessageM back = fromPbc(u);
                    eraftpb__message__free_unpacked(u, nullptr);
                    RC_ASSERT(back == m);
                  });

  ok &= rc::check("ConfChange, ConfChangeV2: the core's codec and ours write "
                  "the same bytes and read each other's",
                  [] {
                    ConfChangeM m{*genU64(), *rc::gen::inRange<uint32_t>(0, 3),
                                  *genU64(), *genBytes()};
                    qraft_conf_change cc{m.id, qraft_conf_change_type(m.type),
                                         m.node_id, sliceOf(m.context)};
                    Bytes ours(qraft_wire_conf_change_size(&cc));
                    size_t n = 0;
                    RC_ASSERT(qraft_wire_conf_change_encode(
                                  &cc, ours.data(), ours.size(), &n) == 0);
                    Bytes core(qraft_conf_change_size(&cc));
                    RC_ASSERT(qraft_conf_change_encode(&cc, core.data()) ==
                              core.size());
                    RC_ASSERT(ours == core);
                    qraft_conf_change back{};
                    RC_ASSERT(qraft_conf_change_decode(ours.data(), ours.size(),
                                                       &back, nullptr) == 0);
                    RC_ASSERT((ConfChangeM{back.id, uint32_t(back.change_type),
                                           back.node_id,
                                           bytesOf(back.context)} == m));

                    ConfChangeV2M vm = *genConfChangeV2();
                    auto v2 = std::make_unique<qraft_conf_change_v2>();
                    v2->transition = qraft_conf_transition(vm.transition);
                    v2->changes_n = uint32_t(vm.changes.size());
                    for (size_t i = 0; i < vm.changes.size(); i++) {
                      v2->changes[i] = qraft_conf_change_single{
                          qraft_conf_change_type(vm.changes[i].type),
                          vm.changes[i].node_id};
                    }
                    v2->context = sliceOf(vm.context);
                    Bytes ours2(qraft_wire_conf_change_v2_size(v2.get()));
                    RC_ASSERT(qraft_wire_conf_change_v2_encode(
                                  v2.get(), ours2.data(), ours2.size(), &n) == 0);
                    Bytes core2(qraft_conf_change_v2_size(v2.get()));
                    RC_ASSERT(qraft_conf_change_v2_encode(v2.get(),
                                                          core2.data()) ==
                              core2.size());
                    RC_ASSERT(ours2 == core2);
                    auto cback = std::make_unique<qraft_conf_change_v2>();
                    RC_ASSERT(qraft_conf_change_v2_decode(
                                  ours2.data(), ours2.size(), cback.get(),
                                  nullptr) == 0);
                    auto wback = std::make_unique<qraft_conf_change_v2>();
                    RC_ASSERT(qraft_wire_conf_change_v2_decode(
                                  nullptr, core2.data(), core2.size(),
                                  wback.get(), nullptr) == 0);
                    for (auto *b : {cback.get(), wback.get()}) {
                      RC_ASSERT(b->transition == v2->transition);
                      RC_ASSERT(b->changes_n == v2->changes_n);
                      for (uint32_t i = 0; i < b->changes_n; i++) {
                        RC_ASSERT(b->changes[i].change_type ==
                                  v2->changes[i].change_type);
                        RC_ASSERT(b->changes[i].node_id ==
                                  v2->changes[i].node_id);
                      }
                      RC_ASSERT(bytesOf(b->context) == vm.context);
                    }
                  });

  ok &= rc::check(
      "Relay frames: every layout round trips with the shortest varints; "
      "random bytes decode to a frame that encodes back or to a refusal",
      [] {
        qraft_relay_frame f{};
        static const uint64_t types[] = {
            QRAFT_RELAY_SEND,       QRAFT_RELAY_SEND_BATCH, QRAFT_RELAY_RECV,
            QRAFT_RELAY_RECV_BATCH, QRAFT_RELAY_PEER_GONE,  QRAFT_RELAY_PING,
            QRAFT_RELAY_PONG,       QRAFT_RELAY_HEALTH,     QRAFT_RELAY_RESTARTING,
            QRAFT_RELAY_STATUS,     QRAFT_RELAY_OBSERVED_ADDR, 14, 64, 20000};
        f.type = *rc::gen::elementOf(std::vector<uint64_t>(
            std::begin(types), std::end(types)));
        Bytes data = *rc::gen::container<Bytes>(rc::gen::arbitrary<uint8_t>());
        if (f.type == QRAFT_RELAY_HEALTH) {
          for (auto &c : data) c &= 0x7f; /* ASCII is UTF-8 */
        }
        if (data.empty() && f.type >= QRAFT_RELAY_SEND &&
            f.type <= QRAFT_RELAY_RECV_BATCH) {
          data.push_back(1);
        }
        f.data = data.data();
        f.data_len = data.size();
        for (auto &b : f.peer.bytes) b = *rc::gen::arbitrary<uint8_t>();
        f.ecn = *rc::gen::inRange<uint8_t>(0, 4);
        f.segment = *rc::gen::inRange<uint16_t>(1, 65535);
        for (auto &b : f.ping) b = *rc::gen::arbitrary<uint8_t>();
        f.reconnect_in_ms = *rc::gen::arbitrary<uint32_t>();
        f.try_for_ms = *rc::gen::arbitrary<uint32_t>();
        f.status = *rc::gen::inRange<uint8_t>(0, 2);
        if (*rc::gen::arbitrary<bool>()) {
          auto *a = reinterpret_cast<sockaddr_in *>(&f.addr);
          a->sin_family = AF_INET;
          a->sin_port = *rc::gen::arbitrary<uint16_t>();
          a->sin_addr.s_addr = *rc::gen::arbitrary<uint32_t>();
        } else {
          auto *a = reinterpret_cast<sockaddr_in6 *>(&f.addr);
          a->sin6_family = AF_INET6;
          a->sin6_port = *rc::gen::arbitrary<uint16_t>();
          for (auto &b : a->sin6_addr.s6_addr) b = *rc::gen::arbitrary<uint8_t>();
        }
        size_t n = qraft_relay_frame_size(&f);
        RC_ASSERT(n > 0);
        Bytes out(n);
        RC_ASSERT(qraft_relay_frame_encode(&f, out.data()) == n);
        qraft_relay_frame g{};
        size_t used = 0;
        RC_ASSERT(qraft_relay_frame_decode(out.data(), n, &g, &used, nullptr) == 0);
        RC_ASSERT(used == n);
        RC_ASSERT(g.type == f.type);
        bool dgram = f.type >= QRAFT_RELAY_SEND && f.type <= QRAFT_RELAY_RECV_BATCH;
        bool batch = f.type == QRAFT_RELAY_SEND_BATCH || f.type == QRAFT_RELAY_RECV_BATCH;
        if (dgram || f.type == QRAFT_RELAY_PEER_GONE) {
          RC_ASSERT(std::memcmp(g.peer.bytes, f.peer.bytes, 32) == 0);
        }
        if (dgram) RC_ASSERT(g.ecn == f.ecn);
        if (batch) RC_ASSERT(g.segment == f.segment);
        if (f.type == QRAFT_RELAY_PING || f.type == QRAFT_RELAY_PONG) {
          RC_ASSERT(std::memcmp(g.ping, f.ping, 8) == 0);
        }
        if (f.type == QRAFT_RELAY_RESTARTING) {
          RC_ASSERT(g.reconnect_in_ms == f.reconnect_in_ms &&
                    g.try_for_ms == f.try_for_ms);
        }
        if (f.type == QRAFT_RELAY_STATUS) RC_ASSERT(g.status == f.status);
        if (f.type == QRAFT_RELAY_OBSERVED_ADDR) {
          RC_ASSERT(std::memcmp(&g.addr, &f.addr, sizeof f.addr) == 0);
        } else if (dgram || f.type == QRAFT_RELAY_HEALTH || f.type > 13) {
          RC_ASSERT(Bytes(g.data, g.data + g.data_len) == data);
        }
        // the same bytes with trailing garbage: the frame, then the rest
        Bytes more = out;
        Bytes tail = *rc::gen::container<Bytes>(rc::gen::arbitrary<uint8_t>());
        more.insert(more.end(), tail.begin(), tail.end());
        RC_ASSERT(qraft_relay_frame_decode(more.data(), more.size(), &g, &used,
                                           nullptr) == 0);
        RC_ASSERT(used == n);
        // random bytes: a refusal, or a frame that encodes back
        Bytes junk = *rc::gen::container<Bytes>(rc::gen::arbitrary<uint8_t>());
        int rv = qraft_relay_frame_decode(junk.data(), junk.size(), &g, &used,
                                          nullptr);
        RC_ASSERT(rv == 0 || rv == QRAFT_ETRUNCATED || rv == QRAFT_EMALFORMED ||
                  rv == QRAFT_ELIMIT);
        if (rv == 0) {
          size_t m = qraft_relay_frame_size(&g);
          RC_ASSERT(m > 0 && m <= used && used <= junk.size());
        }
      });

  ok &= rc::check(
      "Relay reader: frames encoded back to back and fed in random pieces "
      "come out in order, each encoding to the bytes it went in as, and "
      "nothing is left held",
      [] {
        auto frames =
            *rc::gen::container<std::vector<Bytes>>(genRelayFrame());
        Bytes stream;
        for (const auto &f : frames) {
          RC_ASSERT(!f.empty());
          stream.insert(stream.end(), f.begin(), f.end());
        }
        // mostly short pieces, so that headers are cut; what the pieces
        // leave goes in one last feed
        auto pieces = *rc::gen::container<std::vector<size_t>>(
            rc::gen::inRange<size_t>(1, 48));
        std::vector<Bytes> got;
        auto cb = [](void *ud, const qraft_relay_frame *f) -> int {
          Bytes b(qraft_relay_frame_size(f));
          if (!b.empty() && qraft_relay_frame_encode(f, b.data()) != b.size()) {
            b.clear();
          }
          static_cast<std::vector<Bytes> *>(ud)->push_back(std::move(b));
          return 0;
        };
        RelayReader rd;
        qraft_assert_set_hook(assertionThrows, nullptr);
        size_t off = 0;
        int rv = 0;
        for (size_t i = 0; off < stream.size() && rv == 0; i++) {
          size_t n = stream.size() - off;
          if (i < pieces.size() && pieces[i] < n) {
            n = pieces[i];
          }
          rv = qraft_relay_reader_feed(&rd.r, stream.data() + off, n, cb, &got,
                                       nullptr);
          off += n;
        }
        qraft_assert_set_hook(nullptr, nullptr);
        RC_ASSERT(rv == 0);
        RC_ASSERT(got == frames);
        RC_ASSERT(rd.r.len == 0u);
      });

  if (!ok) {
    std::fprintf(stderr, "prop_wire: a property failed; the RC_PARAMS line "
                         "above replays it\n");
  }
  return ok ? 0 : 1;
}
