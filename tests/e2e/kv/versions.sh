#!/usr/bin/env bash
# Versions: a data folder of format 0 (no qraft-kv.meta, as qraft-kv wrote
# it before the file existed) is upgraded in place at the next start; a
# folder of a format this qraft-kv does not know, or of another cluster,
# is refused with a message naming both; a Raft peer that speaks another
# wire version (tests/e2e/kv/wirepeer.c) is refused by the member, which
# names both versions in its log and goes on serving the others.
source "$(dirname "$0")/lib.sh"
: "${QRAFT_WIREPEER:?}"

for i in 1 2 3; do keygen "$i"; done
M=$(members_arg 1 2 3)
for i in 1 2 3; do start "$i" --bootstrap "$M"; done
L=$(wait_leader 1 2 3) || fail "no leader"
"$KV" put --server "$(http 1),$(http 2),$(http 3)" a 1 >/dev/null || fail "a write failed"
grep -q "^qraft-kv data format 1$" "$D/n2/qraft-kv.meta" || fail "no format in $D/n2/qraft-kv.meta"

log "format 0 (no qraft-kv.meta) is upgraded at the next start"
stop9 2
rm "$D/n2/qraft-kv.meta"
: >"$D/log2"
start 2
for _ in $(seq 100); do grep -q "upgraded from data format 0 to 1" "$D/log2" && break; sleep 0.1; done
grep -q "upgraded from data format 0 to 1" "$D/log2" || fail "member 2 did not say it upgraded its data folder"
grep -q "^cluster 0000000000000001$" "$D/n2/qraft-kv.meta" || fail "the upgraded folder's cluster: $(cat "$D/n2/qraft-kv.meta")"
converged 1 2 3 || fail "members differ after the upgrade"
log "$(grep -m1 upgraded "$D/log2")"

log "an unknown format is refused"
stop9 2
sed -i 's/^qraft-kv data format 1$/qraft-kv data format 2/' "$D/n2/qraft-kv.meta"
rc=0
timeout 30 "$KV" serve --data "$D/n2" --key "$D/k2" --raft "$(raft 2)" \
  --http "$(host 2):$((BASE + 82))" >"$D/format2.out" 2>&1 || rc=$?
[ $rc = 2 ] || { cat "$D/format2.out"; fail "a folder of format 2 was not refused (exit $rc)"; }
grep -q "holds data of format 2; this qraft-kv reads format 1 only" "$D/format2.out" ||
  fail "the refusal does not name both formats: $(cat "$D/format2.out")"
log "$(head -1 "$D/format2.out")"
sed -i 's/^qraft-kv data format 2$/qraft-kv data format 1/' "$D/n2/qraft-kv.meta"

log "another cluster's folder is refused"
rc=0
timeout 30 "$KV" serve --data "$D/n2" --key "$D/k2" --raft "$(raft 2)" \
  --http "$(host 2):$((BASE + 82))" --cluster-id 0x77 >"$D/cluster.out" 2>&1 || rc=$?
[ $rc = 2 ] || { cat "$D/cluster.out"; fail "--cluster-id 0x77 on cluster 1's folder was not refused (exit $rc)"; }
grep -q "belongs to cluster 0000000000000001" "$D/cluster.out" || fail "the refusal does not name the cluster: $(cat "$D/cluster.out")"
start 2
converged 1 2 3 || fail "members differ after member 2 came back"

log "a peer that speaks wire version 2 is refused"
stop9 3
out=$("$QRAFT_WIREPEER" "$D/k3" "$(cat "$D/id1")@$(raft 1)" 1 2) || fail "wirepeer: $out"
log "$out"
for _ in $(seq 50); do grep -q "peer speaks wire version 2, this node speaks version 1" "$D/log1" && break; sleep 0.1; done
grep -q "peer speaks wire version 2, this node speaks version 1" "$D/log1" ||
  fail "member 1 did not log both versions"
log "member 1: $(grep -m1 "wire version 2" "$D/log1" | cut -c1-220)"
L=$(wait_leader 1 2) || fail "no leader among members 1 and 2"
"$KV" put --server "$(http "$L")" b 2 >/dev/null || fail "members 1 and 2 stopped taking writes: 1: $(status 1 | jq -c '{role, term, leader, commit, applied, members}'); 2: $(status 2 | jq -c '{role, term, leader, commit, applied}')"
start 3
converged 1 2 3 || fail "members differ at the end"
no_sanitizer_reports
log "passed"
