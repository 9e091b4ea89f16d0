#!/usr/bin/env bash
# Recovery after losing a quorum for good (serve --force-new-cluster).
# First, on a healthy three-member cluster, a member restarted with the
# flag is refused (a quorum of its configuration answers) and the cluster
# is unharmed. Then, under concurrent clients talking to member 1 (the
# leader), members 2 and 3 are killed and their data and keys deleted;
# member 1 restarts with --force-new-cluster, finds no quorum, becomes a
# cluster of one that kept every write it acknowledged, and two new
# members join it with empty data. The clients' history over the whole run
# is linearizable and the three members end with the same data.
source "$(dirname "$0")/lib.sh"
HIST="$QRAFT_E2E_OUT/kv_forcenew.jsonl"

for i in 1 2 3; do keygen "$i"; done
M=$(members_arg 1 2 3)
for i in 1 2 3; do start "$i" --bootstrap "$M"; done
L=$(wait_leader 1 2 3) || fail "no leader"
log "leader: member $L"

log "refused on a healthy cluster: member 3 restarts with --force-new-cluster"
stop9 3
rc=0
timeout 60 "$KV" serve --data "$D/n3" --key "$D/k3" --raft "$(raft 3)" \
  --http "$(host 3):$((BASE + 83))" --force-new-cluster >"$D/refused.out" 2>&1 || rc=$?
[ $rc = 2 ] || { cat "$D/refused.out"; fail "--force-new-cluster on a healthy cluster exited $rc, not 2"; }
grep -q "force-new-cluster refused" "$D/refused.out" || { cat "$D/refused.out"; fail "the refusal does not say so"; }
log "refused: $(grep -m1 refused "$D/refused.out" | cut -c1-160)..."
grep -q "FORCED" "$D/refused.out" && fail "the refused member forced anyway"
start 3
L=$(wait_leader 1 2 3) || fail "no leader after the refusal"
"$KV" put --server "$(http "$L")" healthy yes >/dev/null || fail "a write after the refusal failed"
converged 1 2 3 || fail "members differ after the refusal"

# member 1 leads, so that it holds every write acknowledged
if [ "$L" != 1 ]; then
  "$KV" transfer --server "$(http "$L")" "$(cat "$D/id1")" >/dev/null 2>&1 || true
  leads1() { [ "$(leader 1 2 3)" = 1 ]; }
  for _ in $(seq 100); do leads1 && break; sleep 0.1; done
  leads1 || fail "leadership did not move to member 1"
fi
"$KV" put --server "$(http 1)" before-the-loss kept >/dev/null || fail "the sentinel write failed"
"$KV" workload --server "$(http 1)" --clients 3 --keys 8 --seconds 25 \
  --timeout-ms 2000 --history "$HIST" >"$D/workload.out" 2>&1 &
WL=$!
sleep 4

log "members 2 and 3 are lost with their data"
stop9 2; stop9 3
rm -rf "$D/n2" "$D/n3" "$D/k2" "$D/k3"
sleep 2
log "member 1 restarts with --force-new-cluster"
stop9 1
t0=$(ms)
start 1 --force-new-cluster
for _ in $(seq 300); do [ "$(leader 1)" = 1 ] && break; sleep 0.1; done
[ "$(leader 1)" = 1 ] || fail "member 1 does not lead its new cluster"
log "member 1 leads a cluster of one, $(( $(ms) - t0 )) ms after its restart"
grep -q "FORCED A NEW CLUSTER" "$D/log1" || fail "member 1 did not say loudly what it did"
[ "$(status 1 | jq '.members | length')" = 1 ] || fail "member 1's membership is not itself alone: $(status 1 | jq -c .members)"
[ "$("$KV" get --server "$(http 1)" before-the-loss)" = kept ] || fail "the write acknowledged before the loss is gone: $(status 1 | jq -c .)"

log "two new members join with empty data"
keygen 2; keygen 3
start 2 --join "$(http 1)"
start 3 --join "$(http 1)"
for _ in $(seq 600); do [ "$(status 1 | jq '[.members[] | select(.role == "voter")] | length')" = 3 ] && break; sleep 0.1; done
[ "$(status 1 | jq '[.members[] | select(.role == "voter")] | length')" = 3 ] || fail "the new members did not become voters: $(status 1 | jq -c .members)"
wait "$WL" || { cat "$D/workload.out"; fail "workload"; }
log "workload: $(tail -1 "$D/workload.out")"
converged 1 2 3 || fail "members differ at the end"
"$QRAFT_LINCHECK" --time-ms 60000 "$HIST" || fail "history $HIST is not linearizable"
# the new cluster survives the loss of one of its members
stop9 2
L=$(wait_leader 1 3) || fail "no leader after member 2 of the new cluster stopped"
"$KV" put --server "$(http "$L")" after tail >/dev/null || fail "a write with two of three members failed"
no_sanitizer_reports
log "passed"
