#!/usr/bin/env bash
# A full disk is an alarm, not a crash. Members whose data folders sit on
# small tmpfs mounts this test makes run out of space, one part at a time:
#  1. the log (WAL) of one member: it holds its writes and stays up; the
#     other two commit; writes and reads go on;
#  2. the state (LMDB) of one member and the log of another, so that a
#     quorum is in alarm: the leader refuses writes at once with 507
#     no_space naming the cause, reads go on, no process exits;
#  3. the folder of a member that joins: the snapshot it receives finds no
#     room; it stays up and catches up once there is.
# After each, the test grows the mounts and the members resume without a
# restart; the digests end equal and the clients' history (a workload over
# phases 1 and 2) is linearizable. Then the reserve: a member whose free
# space is below --space-reserve raises its alarm before anything fails.
# Needs root (mount): skipped otherwise.
source "$(dirname "$0")/lib.sh"
if [ "$(id -u)" != 0 ]; then echo "SKIPPED: needs root to mount tmpfs"; exit 77; fi
HIST="$QRAFT_E2E_OUT/kv_nospace.jsonl"
MOUNTS=()
cleanup_extra() {
  for m in "${MOUNTS[@]}"; do umount -l "$m" 2>/dev/null || true; done
}
# small DIR: a tmpfs of 96 MiB at DIR
small() {
  mkdir -p "$1"
  mount -t tmpfs -o size=96m tmpfs "$1" || { echo "SKIPPED: cannot mount tmpfs"; exit 77; }
  MOUNTS+=("$1")
}
# fillup DIR [LEAVE_MB]: a ballast file takes all but LEAVE_MB (0) of DIR's
# mount; grow DIR: the mount grows by 256 MiB (the ballast stays)
fillup() {
  local free_mb; free_mb=$(( $(stat -f -c '%a * %S' "$1") / 1048576 ))
  free_mb=$(( free_mb - ${2:-0} ))
  dd if=/dev/zero of="$1/ballast" bs=1M count="$free_mb" status=none 2>/dev/null || true
  [ "${2:-0}" != 0 ] || head -c 1G /dev/zero >>"$1/ballast" 2>/dev/null || true
}
grow() { mount -o remount,size=352m "$1"; }
metric() { # metric MEMBER NAME: the first sample of NAME in /metrics
  local t; t=$(kcurl "$1" "$(http "$1")/metrics" || true)
  awk -v n="$2" '$1 == n {print $2; exit}' <<<"$t"
}
alive() { for i in "$@"; do kill -0 "${PID[$i]}" 2>/dev/null || fail "member $i exited (see its log)"; done; }
# (jq -s: a member that does not answer yet is neither in alarm nor out;
# jq -e alone succeeds on empty input)
in_alarm() { status "$1" | jq -se '.[0].alarms | index("nospace") != null' >/dev/null 2>&1; }
no_alarm() { status "$1" | jq -se '.[0].alarms == []' >/dev/null 2>&1; }
# wait_for SECONDS CMD...: until CMD succeeds
wait_for() { local end=$(( $(date +%s) + $1 )); shift; while ! "$@"; do [ "$(date +%s)" -lt "$end" ] || return 1; sleep 0.1; done; }
VALUE=$(head -c 12000 /dev/zero | tr '\0' 'v')
# put MEMBER KEY: a 12 KB value; prints the HTTP status, the body in put.out
put() {
  kcurl "$1" -o "$D/put.out" -w '%{http_code}' -X PUT "$(http "$1")/v1/kv/$2" \
    --data-binary "{\"value\":\"$VALUE\"}" || true
}
put_ok() { local l; l=$(leader 1 2 3) && [ "$(put "$l" "after-$RANDOM")" = 200 ]; }
read_ok() { local l; l=$(leader 1 2 3) && [ "$(kcurl "$l" -o /dev/null -w '%{http_code}' "$(http "$l")/v1/kv/none")" = 404 ]; }
# fill N: N puts of 12 KB (8 clients) of new keys (the state grows: LMDB
# cannot get by with the pages it freed) through the leader; FAILED and
# FIRST (the first failure's status and body) say how it went
FILLS=0
fill() {
  local l; l=$(leader 1 2 3 || echo 1)
  FILLS=$((FILLS + 1))
  "$KV" bench --server "$(http "$l")" --clients 8 --count "$1" --value-bytes 12000 \
    --op put --prefix "fill$FILLS-" >"$D/fill.out" 2>&1 || true
  FAILED=$(sed -n 's/.* \([0-9]*\) failed$/\1/p' "$D/fill.out" | head -1)
  FIRST=$(grep -m1 'first failure' "$D/fill.out" || true)
}

for i in 1 2 3 4; do keygen "$i"; small "$D/n$i/raft"; small "$D/n$i/kv"; done
M=$(members_arg 1 2 3)
OPTS=(--snapshot-entries 2000 --snapshot-log-bytes 1G --state-sync-ms 50 --space-reserve 0)
start 1 --bootstrap "$M" "${OPTS[@]}"
start 2 --bootstrap "$M" "${OPTS[@]}"
# member 3 takes no snapshot: its log is the first thing to run out
start 3 --bootstrap "$M" "${OPTS[@]}" --snapshot-entries 1000000
L=$(wait_leader 1 2 3) || fail "no leader"
log "leader: member $L"
"$KV" workload --server "$(http 1),$(http 2),$(http 3)" --clients 3 --keys 8 \
  --seconds 30 --history "$HIST" >"$D/workload.out" 2>&1 &
WL=$!

log "phase 1: member 3's log (WAL) runs out of space, while it leads"
if [ "$L" != 3 ]; then
  "$KV" transfer --server "$(http "$L")" "$(cat "$D/id3")" >/dev/null 2>&1 || true
  leads3() { [ "$(leader 1 2 3)" = 3 ]; }
  wait_for 10 leads3 || fail "leadership did not move to member 3"
fi
fillup "$D/n3/raft"
for _ in $(seq 12); do fill 300; in_alarm 3 && break; done
in_alarm 3 || fail "member 3 raised no alarm (its log's mount is full)"
[[ "$(field 3 alarm_why)" == *"the log's store has no room"* ]] || fail "member 3's alarm is not its log's: $(field 3 alarm_why)"
[ "$(metric 3 qraft_writes_held_total)" -gt 0 ] || fail "member 3 held no writes"
alive 1 2 3
log "member 3: $(status 3 | jq -c '{alarms, alarm_why, writes_held}')"
[ "$(metric 3 qraft_alarm_nospace)" = 1 ] || fail "qraft_alarm_nospace is not 1 on member 3"
grep -q "alarm raised: no space" "$D/log3" || fail "member 3 logged no alarm"
grep -q "handing leadership to a voter that is not" "$D/log3" || fail "member 3 kept leading in alarm"
[ "$(put 3 from-3)" = 507 ] || fail "member 3, out of space, did not answer 507"
jq -e '.code == "no_space" and .outcome == "none" and .leader_http != null' "$D/put.out" >/dev/null ||
  fail "member 3's 507 is not clear: $(cat "$D/put.out")"
fill 300
[ "${FAILED:-1}" -le 30 ] || fail "writes failed while one member was out of space: $FAILED of 300 ($FIRST)"
L=$(wait_leader 1 2 3) || fail "no leader"
[ "$L" != 3 ] || fail "member 3 leads while out of space"
wait_for 5 read_ok || fail "linearizable reads failed for 5 s while member 3 was out of space"
alive 1 2 3
grow "$D/n3/raft"
wait_for 30 no_alarm 3 || fail "member 3's alarm did not clear after its mount grew"
log "member 3's alarm cleared"
converged 1 2 3 || fail "members differ after member 3's log had room again"
log "member 3 resumed: $(metric 3 qraft_writes_held_total) writes held in all, digests equal"

log "phase 2: member 2's state (LMDB) and member 1's log run out: a quorum in alarm"
fillup "$D/n2/kv"; fillup "$D/n1/raft"
probe507() { local l; l=$(leader 1 2 3) && [ "$(put "$l" "probe-$RANDOM")" = 507 ]; }
for _ in $(seq 12); do fill 300; probe507 && break; done
probe507 || fail "no 507 with members 1 and 2 out of space ($FIRST)"
wait_for 10 in_alarm 1 || fail "member 1 raised no alarm"
wait_for 10 in_alarm 2 || fail "member 2 raised no alarm"
[[ "$(field 2 alarm_why)" == *"/n2/kv: "* ]] || fail "member 2's alarm is not its state's: $(field 2 alarm_why)"
# (member 1's log folder holds its snapshots too: either may be first)
[[ "$(field 1 alarm_why)" =~ "the log's store has no room"|"a snapshot found no room" ]] ||
  fail "member 1's alarm is not its log folder's: $(field 1 alarm_why)"
L=$(wait_leader 1 2 3) || fail "no leader while a quorum is out of space"
t0=$(ms); st=$(put "$L" quick); t1=$(ms)
[ "$st" = 507 ] || fail "a write with a quorum out of space answered $st, not 507"
log "507 in $((t1 - t0)) ms: $(cat "$D/put.out")"
[ $((t1 - t0)) -lt 1000 ] || fail "the 507 took $((t1 - t0)) ms (want at once)"
jq -e '.code == "no_space" and .outcome == "none" and (.message | length > 10)' "$D/put.out" >/dev/null ||
  fail "the 507 body does not say no_space clearly"
wait_for 5 read_ok || fail "linearizable reads failed for 5 s with a quorum out of space"
log "leader $L: $(status "$L" | jq -c '{alarms, voters_in_alarm, alarm_quorum}'); 2: $(status 2 | jq -c '{alarms, alarm_why, apply_waiting_entries}'); 1: $(status 1 | jq -c '{alarms, writes_held}')"
[ "$(metric "$L" qraft_alarm_quorum_nospace)" = 1 ] || fail "qraft_alarm_quorum_nospace is not 1 on the leader"
grep -q "no space left on device\|No space left on device\|short write" "$D/log2" || fail "member 2 did not say its state had no space"
sleep 2
alive 1 2 3
grow "$D/n2/kv"; grow "$D/n1/raft"
wait_for 30 put_ok || fail "writes did not succeed again after the mounts grew"
wait_for 30 no_alarm 1 || fail "member 1's alarm did not clear"
wait_for 30 no_alarm 2 || fail "member 2's alarm did not clear"
converged 1 2 3 || fail "members differ after members 1 and 2 had room again"
wait "$WL" || { cat "$D/workload.out"; fail "workload"; }
log "workload: $(tail -1 "$D/workload.out")"
"$QRAFT_LINCHECK" --time-ms 60000 "$HIST" || fail "history $HIST is not linearizable"

log "phase 3: a joining member's snapshot finds no room"
USED=$(field 1 map_used_bytes)
[ "${USED:-0}" -ge $((2 << 20)) ] || fail "the state is too small for this phase ($USED bytes)"
# its log's two segments take 16 MiB; 1 MiB is left besides
fillup "$D/n4/raft" 17
L=$(wait_leader 1 2 3) || fail "no leader"
if [ "$L" = 3 ]; then # member 3 takes no snapshot: it would send its log
  "$KV" transfer --server "$(http 3)" "$(cat "$D/id1")" >/dev/null 2>&1 || true
  leads1() { [ "$(leader 1 2 3)" = 1 ]; }
  wait_for 10 leads1 || fail "leadership did not move to member 1"
  L=1
fi
: >"$D/log4"
start 4 --join "$(http "$L")" "${OPTS[@]}"
wait_for 60 grep -q "received snapshot" "$D/log4" ||
  fail "member 4's snapshot did not run out of space: $(status 4 | jq -c .) $(status "$L" | jq -c .members)"
alive 1 2 3 4
grow "$D/n4/raft"
converged 1 2 3 4 || fail "member 4 did not catch up once it had room"
alive 1 2 3 4

log "the reserve: members 1, 2 and 4 (of 4 voters) restart with a reserve above their free space"
for i in 1 2 4; do
  stop9 "$i"; rm -f "$D/n$i/raft/ballast" "$D/n$i/kv/ballast"; grow "$D/n$i/raft"; grow "$D/n$i/kv"
  fillup "$D/n$i/raft" 32
done
for i in 1 2; do start "$i" --bootstrap "$M" "${OPTS[@]:0:6}" --space-reserve 64m; done
start 4 --join "$(http 3)" "${OPTS[@]:0:6}" --space-reserve 64m
for i in 1 2 4; do wait_for 20 in_alarm "$i" || fail "member $i raised no alarm below its reserve"; done
grep -q "free space below the reserve" "$D/log1" || fail "member 1 did not log the reserve: $(status 1 | jq -c '{alarms, alarm_why, space_free_bytes}')"
[ -n "$(metric 1 qraft_space_free_bytes)" ] || fail "no qraft_space_free_bytes on member 1"
L=$(wait_leader 1 2 3 4) || fail "no leader with three members below their reserve"
probe507_4() { local l; l=$(leader 1 2 3 4) && [ "$(put "$l" "probe-$RANDOM")" = 507 ]; }
wait_for 10 probe507_4 || fail "no 507 with three of four voters below their reserve"
log "507: $(cat "$D/put.out")"
for i in 1 2 4; do [ "$(field "$i" writes_held)" = 0 ] || fail "member $i held writes: the reserve should come before writes fail"; done
wait_for 5 read_ok || fail "linearizable reads failed for 5 s with three members below their reserve"
log "leader $(leader 1 2 3 4): $(status "$(leader 1 2 3 4)" | jq -c '{voters_in_alarm, alarm_quorum}')"
for i in 1 2 4; do rm -f "$D/n$i/raft/ballast"; done
for i in 1 2 4; do wait_for 20 no_alarm "$i" || fail "member $i's reserve alarm did not clear"; done
put_ok4() { local l; l=$(leader 1 2 3 4) && [ "$(put "$l" "after-$RANDOM")" = 200 ]; }
wait_for 20 put_ok4 || fail "writes did not succeed again once there was room"
grep -q "alarm cleared" "$D/log1" || fail "member 1 did not log the clearing"
converged 1 2 3 4 || fail "members differ at the end"
alive 1 2 3 4
no_sanitizer_reports
log "passed"
