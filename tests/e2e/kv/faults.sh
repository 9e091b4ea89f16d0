#!/usr/bin/env bash
# Three qraft-kv members under concurrent clients, while a schedule of faults
# runs: SIGKILL and restart of the leader, SIGSTOP/SIGCONT of the leader, a
# member joining and leaving while another is frozen, and a restart of the
# whole cluster. The clients' history must be linearizable (qraft-lincheck)
# and every member must end with the same data.
source "$(dirname "$0")/lib.sh"
SECONDS_RUN=${QRAFT_E2E_SECONDS:-22}
HIST="$QRAFT_E2E_OUT/kv_faults.jsonl"

for i in 1 2 3 4; do keygen "$i"; done
M=$(members_arg 1 2 3)
for i in 1 2 3; do start "$i" --bootstrap "$M" --snapshot-entries 300; done
L=$(wait_leader 1 2 3) || fail "no leader"
log "leader: member $L"

"$KV" workload --server "$(http 1),$(http 2),$(http 3)" --clients 4 --keys 10 \
  --seconds "$SECONDS_RUN" --history "$HIST" >"$D/workload.out" 2>&1 &
WL=$!

# One round of faults takes about 16 s; rounds repeat while the clients
# run (QRAFT_E2E_SECONDS, 22 by default: one round; make soak: more).
END_S=$(( $(date +%s) + SECONDS_RUN ))
round=0
while [ $(( END_S - $(date +%s) )) -ge 18 ] || [ $round = 0 ]; do
  round=$((round + 1))
  log "round $round"
  sleep 2
  L=$(wait_leader 1 2 3) || fail "no leader before kill"
  log "SIGKILL the leader, member $L"
  stop9 "$L"
  sleep 2
  start "$L" --bootstrap "$M" --snapshot-entries 300
  log "restarted member $L"

  sleep 2
  L=$(wait_leader 1 2 3) || fail "no leader before stop"
  # Stopped for 4 s, twice the longest election timeout (the default 1 s,
  # randomized up to 2 s): the other two must elect a leader meanwhile, and
  # the stopped one comes back as a stale leader of an old term.
  log "SIGSTOP the leader, member $L, for 4 s"
  kill -STOP "${PID[$L]}"
  sleep 4
  OTHERS=$(for i in 1 2 3; do [ "$i" = "$L" ] || echo "$i"; done | tr '\n' ' ')
  # shellcheck disable=SC2086
  NL=$(leader $OTHERS) || fail "no new leader while member $L was stopped for 4 s"
  kill -CONT "${PID[$L]}"
  log "member $NL took over; SIGCONT member $L"

  sleep 2
  L=$(wait_leader 1 2 3) || fail "no leader before the membership change"
  X=$(( L % 3 + 1 ))
  log "SIGSTOP member $X; member 4 joins through member $L"
  kill -STOP "${PID[$X]}"
  rm -rf "$D/n4" "$D/k4"; keygen 4
  start 4 --join "$(http "$L")" --snapshot-entries 300
  ok=0
  for _ in $(seq 200); do
    [ "$(status "$L" | jq -r --arg id "$(cat "$D/id4")" '.members[] | select(.id == $id) | .role')" = voter ] && { ok=1; break; }
    sleep 0.05
  done
  [ $ok = 1 ] || fail "member 4 did not become a voter"
  log "member 4 is a voter; SIGCONT member $X; remove member 4"
  kill -CONT "${PID[$X]}"
  "$KV" members remove "$(cat "$D/id4")" --server "$(http 1),$(http 2),$(http 3)" >/dev/null ||
    fail "could not remove member 4"
  stop9 4

  sleep 1
  log "restart the whole cluster (SIGKILL all three)"
  for i in 1 2 3; do stop9 "$i"; done
  for i in 1 2 3; do start "$i" --bootstrap "$M" --snapshot-entries 300; done
  wait_leader 1 2 3 >/dev/null || fail "no leader after the whole-cluster restart"
  log "leader after restart: member $(leader 1 2 3)"
done

wait "$WL" || fail "workload: $(cat "$D/workload.out")"
log "$(cat "$D/workload.out")"
converged 1 2 3 || fail "members differ: $(for i in 1 2 3; do echo "member $i: $(digest "$i") $(status "$i" | jq -c '{role,leader,term,commit,applied,kv_applied,snapshot_index}')"; done)"
log "members converged: $(digest 1)"
"$QRAFT_LINCHECK" --time-ms 60000 "$HIST" || fail "history $HIST is not linearizable"
no_sanitizer_reports
log "passed"
