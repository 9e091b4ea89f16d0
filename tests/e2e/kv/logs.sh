#!/usr/bin/env bash
# Logs: with --log-format json every line a member writes to stderr is a
# JSON object with ts, level, msg and src, and one line tells each
# important event: an election, a leader followed, a leader that stepped
# down and why, a configuration change, a snapshot taken and one
# installed, a peer connected and disconnected (with the reason).
# --log-level warn keeps them out.
source "$(dirname "$0")/lib.sh"

for i in 1 2 3 4 5; do keygen "$i"; done
M=$(members_arg 1 2 3)
J=(--log-format json --log-level info --snapshot-entries 200)
for i in 1 2 3; do start "$i" --bootstrap "$M" "${J[@]}"; done
start 5 --bootstrap "$(members_arg 5)" --log-format json --log-level warn
L=$(wait_leader 1 2 3) || fail "no leader"
"$KV" load --count 600 --prefix k --server "$(http "$L")" >/dev/null || fail "load"
start 4 --join "$(http "$L")" "${J[@]}"
for _ in $(seq 200); do grep -q '"snapshot installed"' "$D/log4" && break; sleep 0.1; done
"$KV" transfer --server "$(http "$L")" >/dev/null || fail "transfer"
L2=$(wait_leader 1 2 3 4) || fail "no leader after the transfer"
O=$(( L2 % 3 + 1 )); [ "$O" != "$L2" ] || O=$(( O % 3 + 1 ))
# a clean stop: its peers hear the close at once (a SIGKILL shows after
# the idle timeout)
kill -TERM "${PID[$O]}"; wait "${PID[$O]}" || true; unset "PID[$O]"
for _ in $(seq 50); do grep -q '"peer disconnected"' "$D/log$L2" && break; sleep 0.1; done
"$KV" put --server "$(http "$L2")" a b >/dev/null || fail "a write after a member stopped"

for i in 1 2 3 4 5; do
  [ -s "$D/log$i" ] || [ "$i" = 5 ] || fail "member $i wrote no log"
  while IFS= read -r line; do
    jq -e 'type == "object" and (.ts | type) == "string" and (.level | type) == "string"
           and (.msg | type) == "string" and (.src | type) == "string"' <<<"$line" >/dev/null 2>&1 ||
      fail "member $i wrote a line that is not a JSON record: $line"
  done <"$D/log$i"
done
all=$(cat "$D"/log1 "$D"/log2 "$D"/log3 "$D"/log4)
# has MSG [COND]: a record with that message (and COND true of it); jq -s:
# jq 1.6's -e looks at the last input's result only
has() { jq -se --arg m "$1" "[.[] | select(.msg == \$m)${2:+ | select($2)}] | length > 0" <<<"$all" >/dev/null 2>&1 || fail "no '$1' record${2:+ with $2}"; }
has "election started" '.term > 0'
has "became leader"
has "following a leader" '.leader > 0'
has "stepped down" '.why == "transfer"'
has "configuration change applied" '.changes | test("add learner")'
has "configuration change applied" '.changes | test("add voter")'
has "snapshot taken; log compacted" '.index > 0'
has "snapshot installed" '.index > 0'
has "peer connected" '.peer | length == 64'
has "peer disconnected" '.reason | type == "string"'
n=$(jq -s 'length' <<<"$all")
log "$n JSON records from members 1 to 4, every event there; e.g. $(jq -c 'select(.msg == "stepped down")' <<<"$all" | head -1)"
if grep -q '"level":"info"' "$D/log5"; then fail "member 5 (--log-level warn) wrote info records"; fi
no_sanitizer_reports
log "passed"
