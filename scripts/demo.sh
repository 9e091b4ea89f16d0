#!/usr/bin/env bash
# make demo: a real qraft-kv cluster of separate processes on loopback, in
# temporary directories. Every line it prints comes from a program it runs
# or a measurement it made; it exits non-zero if a step did not happen as
# shown. Then, if there is time left in the minute, a short tour of the
# simulator, the crash test and qraft-wire.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=build/bin
for b in qraft-kv qraft-keygen; do
  [ -x "$BIN/$b" ] || { echo "demo: $BIN/$b is not built (run make)" >&2; exit 1; }
done
KV="$BIN/qraft-kv"
START=$(date +%s)
D=$(mktemp -d /tmp/qraft-demo.XXXXXX)
# Ports from the process id, so two demos on one machine do not collide,
# below the ephemeral range, so no client connection holds one.
source scripts/ports.sh
pick_base
declare -A PID
cleanup() {
  for i in "${!PID[@]}"; do kill -9 "${PID[$i]}" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$D"
}
trap cleanup EXIT
fail() { echo "demo: FAILED: $*" >&2; for f in "$D"/log*; do echo "--- $f" >&2; tail -5 "$f" >&2; done; exit 1; }
ms() { echo $(( $(date +%s%N) / 1000000 )); }
http() { echo "http://127.0.0.1:$((BASE + 80 + $1))"; }
raft() { echo "127.0.0.1:$((BASE + $1))"; }
status() { curl -s -m 2 "$(http "$1")/v1/status" || true; }
field() { status "$1" | jq -r ".$2 // empty" 2>/dev/null || true; }
start() { # start N [serve options...]
  local i=$1; shift
  setsid "$KV" serve --quiet --data "$D/n$i" --key "$D/k$i" --raft "$(raft "$i")" \
    --http "127.0.0.1:$((BASE + 80 + i))" --snapshot-entries 400 "$@" >>"$D/log$i" 2>&1 &
  PID[$i]=$!
}
leader_of() { # the member number of the leader as member $1 sees it
  local lh; lh=$(field "$1" leader_http)
  if [ -n "$lh" ]; then echo $(( ${lh##*:} - BASE - 80 )); fi
}
wait_leader() { # wait_leader MEMBER... : prints the leader's number
  for _ in $(seq 200); do
    for i in "$@"; do
      local l; l=$(leader_of "$i")
      if [ -n "$l" ] && [ "$(field "$l" role)" = leader ]; then echo "$l"; return 0; fi
    done
    sleep 0.05
  done
  return 1
}
digest() { curl -s -m 2 "$(http "$1")/v1/digest" | jq -r '"\(.digest) \(.keys) keys at index \(.applied)"'; }
converged() { # converged MEMBER...: all the same digest and index
  for _ in $(seq 200); do
    local first="" same=1
    for i in "$@"; do
      local d; d=$(digest "$i" 2>/dev/null || true)
      [ -z "$first" ] && first=$d
      [ "$d" = "$first" ] && [ -n "$d" ] || same=0
    done
    [ $same = 1 ] && return 0
    sleep 0.05
  done
  return 1
}

echo "== qraft-kv: three members on loopback (data in $D)"
for i in 1 2 3; do "$BIN/qraft-keygen" "$D/k$i" >"$D/id$i"; done
MEMBERS="$(cat "$D/id1")@$(raft 1),$(cat "$D/id2")@$(raft 2),$(cat "$D/id3")@$(raft 3)"
t0=$(ms)
for i in 1 2 3; do start "$i" --bootstrap "$MEMBERS"; done
L=$(wait_leader 1 2 3) || fail "no leader elected"
echo "1. elected: member $L is leader in term $(field "$L" term), $(( $(ms) - t0 )) ms after start"
echo "   members: $(status 1 | jq -r '[.members[] | .id[0:8] + "(" + .role + ")"] | join(" ")')"

echo "2. 1000 writes through member $L"
"$KV" load --count 1000 --prefix key --progress --server "$(http "$L")" || fail "writes failed"

echo "3. linearizable reads of key000999 from every member"
for i in 1 2 3; do
  v=$("$KV" get key000999 --server "$(http "$i")") || fail "read on member $i"
  [ "$v" = v999 ] || fail "member $i read '$v'"
  echo "   member $i ($(field "$i" role)): key000999 = $v"
done

OLD=$L
SURV=$(for i in 1 2 3; do [ "$i" = "$OLD" ] || echo "$i"; done | tr '\n' ' ')
echo "4. SIGKILL the leader (member $OLD, pid ${PID[$OLD]})"
t0=$(ms)
kill -9 "${PID[$OLD]}"; wait "${PID[$OLD]}" 2>/dev/null || true; unset "PID[$OLD]"
S1=${SURV%% *}
ok=0
for _ in $(seq 300); do
  if "$KV" put after-failover yes --server "$(http "$S1")" --timeout-ms 500 >/dev/null 2>&1; then ok=1; break; fi
  sleep 0.02
done
[ $ok = 1 ] || fail "no write accepted after the leader died"
# shellcheck disable=SC2086
L=$(wait_leader $SURV) || fail "no new leader"
echo "   new leader: member $L (term $(field "$L" term)); a write succeeded $(( $(ms) - t0 )) ms after the kill"

echo "5. 300 more writes while member $OLD is down"
"$KV" load --count 300 --prefix more --server "$(http "$L")" || fail "writes failed"

echo "6. restart member $OLD; it catches up"
t0=$(ms)
start "$OLD" --bootstrap "$MEMBERS"
# shellcheck disable=SC2086
converged 1 2 3 || fail "member $OLD did not catch up"
echo "   member $OLD caught up in $(( $(ms) - t0 )) ms: $(digest "$OLD")"
metric() { curl -s "$(http "$1")/metrics" | awk -v m="$2" '$1 == m {print $2}'; }
echo "   it resumed from its own LMDB state: snapshot restore skipped $(metric "$OLD" qraft_kv_restores_skipped_total) time(s),"
echo "   $(metric "$OLD" qraft_kv_entries_skipped_total) log entries it had already applied were skipped, the rest applied"

echo "7. member 4 joins through member $L; member $OLD is removed"
"$BIN/qraft-keygen" "$D/k4" >"$D/id4"
t0=$(ms)
start 4 --join "$(http "$L")"
for _ in $(seq 200); do [ "$(status "$L" | jq -r --arg id "$(cat "$D/id4")" '.members[] | select(.id == $id) | .role')" = voter ] && break; sleep 0.05; done
[ "$(status "$L" | jq -r --arg id "$(cat "$D/id4")" '.members[] | select(.id == $id) | .role')" = voter ] || fail "member 4 did not become a voter"
converged 1 2 3 4 || fail "member 4 did not catch up"
echo "   member 4 is a voter and holds the data $(( $(ms) - t0 )) ms after it started: $(digest 4)"
echo "   (it was sent a snapshot of the leader's LMDB state: $(metric 4 qraft_kv_restores_total) restore(s), then the log after it)"
for _ in $(seq 100); do [ -n "$(status "$L" | jq -r --arg id "$(cat "$D/id4")" '.members[] | select(.id == $id) | .http')" ] && break; sleep 0.05; done
"$KV" members remove "$(cat "$D/id$OLD")" --server "$(http "$L")" >/dev/null || fail "remove member $OLD"
kill "${PID[$OLD]}"; wait "${PID[$OLD]}" 2>/dev/null || true; unset "PID[$OLD]"
REST=$(for i in 1 2 3 4; do [ "$i" = "$OLD" ] || echo "$i"; done | tr '\n' ' ')
echo "   members now:"
"$KV" members --server "$(http "$L")" | sed 's/^/     /'
n=$(status "$L" | jq '.members | length')
[ "$n" = 3 ] || fail "expected 3 members, saw $n"
"$KV" put final yes --server "$(http 4)" >/dev/null || fail "write after the change"

echo "8. every member holds the same data"
# shellcheck disable=SC2086
converged $REST || fail "members differ"
for i in $REST; do echo "   member $i: digest $(digest "$i" | cut -d' ' -f1-3)"; done
for i in $REST; do kill "${PID[$i]}"; done
for i in $REST; do wait "${PID[$i]}" 2>/dev/null || true; unset "PID[$i]"; done
echo "   cluster stopped after $(( $(date +%s) - START )) s"
echo

# The tour of the rest, if it fits in the minute.
if [ $(( $(date +%s) - START )) -lt 40 ] && [ -x "$BIN/qraft-sim" ] && [ -x "$BIN/qraft-crashtest" ]; then
  seed=$(( $(date +%s) % 100000 + 1 ))
  echo "== The Raft core under the simulator: 100 random clusters with faults from seed $seed"
  "$BIN/qraft-sim" --seeds 100 --start "$seed" --jobs 2
  echo "== The write-ahead log, SIGKILLed 10 times while it writes"
  c=$(mktemp -d /tmp/qraft-demo-crash.XXXXXX)
  "$BIN/qraft-crashtest" --kills 10 --dir "$c" || { rm -rf "$c"; fail "crash test"; }
  rm -rf "$c"
  if [ -x "$BIN/qraft-wire" ]; then
    echo "== A frame of Raft messages from the fuzz seed corpus, decoded by qraft-wire"
    "$BIN/qraft-wire" decode --frame tests/fuzz/corpus/frame/mixed >"$D/frame.txt" || fail "qraft-wire"
    head -8 "$D/frame.txt"
    echo "   ... ($(grep -c '^  message' "$D/frame.txt") messages in the frame)"
  fi
fi
echo "demo passed in $(( $(date +%s) - START )) s"
