#!/usr/bin/env bash
# Steady under load: three qraft-kv members with default settings on a
# healthy loopback, 64 connections writing to the leader as fast as it
# answers for QRAFT_E2E_SECONDS (30), and meanwhile four clients doing
# linearizable reads, writes and compare-and-sets through every member.
# Nothing fails here, so nothing may: no leader change (the term and the
# leader stay, qraft_leader_changes_total stays 0 on every member), no
# failed request, a linearizable history and the same data everywhere.
# Then a clean stop (SIGTERM) of the leader must hand leadership over.
# If this fails, the cluster lost its leader under load: that is the bug
# this test exists for (issue "Steady under load"), not noise.
source "$(dirname "$0")/lib.sh"
SECONDS_RUN=${QRAFT_E2E_SECONDS:-30}
HIST="$QRAFT_E2E_OUT/kv_steady.jsonl"

for i in 1 2 3; do keygen "$i"; done
M=$(members_arg 1 2 3)
for i in 1 2 3; do start "$i" --bootstrap "$M"; done
L=$(wait_leader 1 2 3) || fail "no leader"
sleep 1 # the members register their HTTP addresses
term0=$(field "$L" term)
log "leader: member $L, term $term0; $SECONDS_RUN s of 64 writers and 4 checked clients"

"$KV" bench --op put --clients 64 --seconds "$SECONDS_RUN" --server "$(http "$L")" \
  >"$D/bench.out" 2>&1 &
BENCH=$!
"$KV" workload --server "$(http 1),$(http 2),$(http 3)" --clients 4 --keys 10 \
  --seconds "$SECONDS_RUN" --history "$HIST" >"$D/workload.out" 2>&1 &
WL=$!
brc=0; wait "$BENCH" || brc=$?
wrc=0; wait "$WL" || wrc=$?
log "$(cat "$D/bench.out")"
log "$(cat "$D/workload.out")"
report() {
  for i in 1 2 3; do
    echo "member $i: $(status "$i" | jq -c '{role,leader,term}') $(kcurl "$i" "$(http "$i")/metrics" |
      grep -E '^qraft_(leader_changes_total|election_timeouts_total|leader_stepdowns_total|loop_stall_seconds_count|loop_stall_seconds_max)' |
      grep -v ' 0$' | tr '\n' ' ')"
  done
}
log "$(report)"
[ "$brc" = 0 ] || fail "the writers saw failed requests: $(cat "$D/bench.out")"
[ "$wrc" = 0 ] || fail "workload: $(cat "$D/workload.out")"
grep -q ' 0 fail, 0 info;' "$D/workload.out" || fail "the checked clients saw failed requests: $(cat "$D/workload.out")"
for i in 1 2 3; do
  t=$(field "$i" term)
  [ "$t" = "$term0" ] || fail "member $i is in term $t, the run began in term $term0: leadership moved"
  c=$(kcurl "$i" "$(http "$i")/metrics" | awk '$1 == "qraft_leader_changes_total" {print $2}')
  [ "$c" = 0 ] || fail "member $i counted $c leader changes"
done
[ "$(leader 1 2 3)" = "$L" ] || fail "member $L no longer leads"
converged 1 2 3 || fail "members differ"
"$QRAFT_LINCHECK" --time-ms 60000 "$HIST" || fail "history $HIST is not linearizable"

# A clean stop of the leader hands leadership over (MsgTimeoutNow): the
# survivors elect its successor without waiting for an election timeout,
# so neither counts one.
for i in 1 2 3; do et[$i]=$(kcurl "$i" "$(http "$i")/metrics" | awk '$1 == "qraft_election_timeouts_total" {print $2}'); done
log "SIGTERM the leader, member $L"
kill -TERM "${PID[$L]}"; wait "${PID[$L]}" 2>/dev/null || true; unset "PID[$L]"
SURV=$(for i in 1 2 3; do [ "$i" = "$L" ] || echo "$i"; done | tr '\n' ' ')
# shellcheck disable=SC2086
N=$(wait_leader $SURV) || fail "no leader after the handover"
for i in $SURV; do
  e=$(kcurl "$i" "$(http "$i")/metrics" | awk '$1 == "qraft_election_timeouts_total" {print $2}')
  [ "$e" = "${et[$i]}" ] || fail "member $i's election timeout fired (${et[$i]} -> $e): the leader did not hand over"
done
"$KV" put after-handover yes --server "$(http "$N")" >/dev/null || fail "write after the handover"
log "member $N leads after the handover, no election timeout fired"
no_sanitizer_reports
log "passed"
