#!/usr/bin/env bash
# Discovery: three members bootstrapped by id alone find each other in a
# discovery file (--discovery-file: 'ID addr=IP:PORT' lines); then one
# moves to another port, the file says so, and the others find it there
# without a restart (they look at the file every few seconds). Writes
# commit and the members converge.
source "$(dirname "$0")/lib.sh"

for i in 1 2 3; do keygen "$i"; done
peers() { for i in 1 2 3; do echo "$(cat "$D/id$i") addr=$(raft "$i")"; done; }
peers >"$D/peers"
M="$(cat "$D/id1"),$(cat "$D/id2"),$(cat "$D/id3")"
for i in 1 2 3; do start "$i" --bootstrap "$M" --discovery-file "$D/peers"; done
L=$(wait_leader 1 2 3) || fail "no leader: the members did not find each other in the file"
log "leader: member $L, found through the discovery file"
"$KV" put --server "$(http "$L")" before move >/dev/null || fail "a write"
# no address in the log: the members' addresses as the log carries them are empty
addr=$(status "$L" | jq -r '[.members[].addr] | join(",")')
[ "$addr" = ",," ] || fail "the log carries addresses ($addr): the test would not show discovery"

# member M moves: stopped, the file updated, restarted on another port
MV=$(( L % 3 + 1 ))
stop9 "$MV"
OLD=$(raft "$MV")
raft() { if [ "$1" = "$MV" ]; then echo "127.0.0.1:$((BASE + 40 + $1))"; else echo "127.0.0.1:$((BASE + $1))"; fi; }
peers >"$D/peers.new" && mv "$D/peers.new" "$D/peers"
# It is given no address of the others (an empty file): only the others
# finding it through theirs brings it back.
echo "# nobody" >"$D/empty"
start "$MV" --discovery-file "$D/empty"
log "member $MV moved from $OLD to $(raft "$MV")"
L=$(wait_leader 1 2 3) || fail "no leader after the move"
"$KV" put --server "$(http "$L")" after move >/dev/null || fail "a write after the move"
t0=$(ms)
ok=0
for _ in $(seq 400); do
  [ "$(digest "$MV")" = "$(digest "$L")" ] && { ok=1; break; }
  sleep 0.1
done
[ $ok = 1 ] || fail "member $MV did not catch up: the others did not find it at its new address"
log "member $MV caught up at its new address $(( $(ms) - t0 )) ms after the write"
converged 1 2 3 || fail "members differ: $(for i in 1 2 3; do echo "member $i: $(digest "$i")"; done)"
log "members converged: $(digest 1)"

# a malformed file is refused at the start, naming the line
echo "not-an-id addr=127.0.0.1:1" >"$D/bad"
rc=0; "$KV" serve --data "$D/bad-data" --key "$D/k1" --raft 127.0.0.1:$((BASE + 60)) \
  --http 127.0.0.1:$((BASE + 61)) --bootstrap "$(cat "$D/id1")" --discovery-file "$D/bad" \
  >"$D/bad.out" 2>&1 || rc=$?
[ $rc != 0 ] || fail "a malformed discovery file was accepted"
grep -q "bad:1" "$D/bad.out" || fail "the refusal does not name the line: $(cat "$D/bad.out")"
no_sanitizer_reports
log "passed"
