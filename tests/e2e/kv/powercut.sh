#!/usr/bin/env bash
# Power cuts under load. Three qraft-kv members take snapshots every few
# entries (so snapshots and log compaction happen all the time) while four
# clients run; a cut SIGKILLs all three at once and then rolls every file
# of every member back to what a disk may hold after a power loss: the
# members ran with the power-cut shim preloaded (tools/powercut), which
# logged every write not yet made durable by fsync/fdatasync, and
# qraft-powercut undoes them, all of them or a seeded random subset of
# pages (a torn mix).
#
# qraft-kv applies into memory and commits to LMDB (synced) every
# --state-sync-ms, off the Raft loop (docs/kv.md, "How the state is
# kept"): at a cut, LMDB is behind what the member applied, and the node
# must have kept the log from LMDB's durable index on, whatever snapshots
# it took meanwhile (qraft/node.h, the durable-index contract), and re-apply
# it at the restart. The sync interval changes with the cuts (50 ms to
# 1.5 s), so the cuts land before and after the flusher's commits.
#
# Before each cut the test writes a key no client touches and waits for
# the acknowledgement. Every other cut the clients are paused (SIGSTOP)
# first and the cut comes 0.3 s after the acknowledgement, so that write is
# the newest one every member applied and a snapshot due at it is taken;
# the other cuts come at once, among the clients' writes. The snapshot
# threshold changes every two cuts (1, 2, 3 or 8 entries).
#
# Checked after every cut: no member's store holds a snapshot of its own
# above LMDB's durable index (the node logs "durable-index contract
# broken" at the restart if one does: the log was compacted past the state
# machine), every member, once it caught up, holds every write
# acknowledged before this cut and the earlier ones, and the cluster takes
# writes. At the end: the clients' history is linearizable (no
# acknowledged write was lost, none came back from the dead) and the
# members' digests agree. The test counts the member restarts that resumed
# from an LMDB index below what the member had applied before the cut
# (they re-applied the log), and fails if there were none: a test that
# exercised nothing cannot fail.
#
#   QRAFT_E2E_CUTS (8)  QRAFT_POWERCUT_SEED (random)
#   QRAFT_E2E_SNAPSHOT_ENTRIES (by cut: 1, 2, 3 or 8)
#   QRAFT_E2E_HIST (kv_powercut): the history's name under build/e2e/
source "$(dirname "$0")/lib.sh"
: "${QRAFT_POWERCUT:?}" "${QRAFT_POWERCUT_SHIM:?}"
CUTS=${QRAFT_E2E_CUTS:-8}
SNAPS=(1 2 3 8)
SYNCS=(400 1500 50)
# the threshold the members run with after cut N (0: at first); two cuts
# in a row share one, and one of the two has the clients paused
snap_entries() { echo "${QRAFT_E2E_SNAPSHOT_ENTRIES:-${SNAPS[$(( ($1 / 2 + SEED) % 4 ))]}}"; }
# the members' --state-sync-ms after cut N: changes every cut
sync_ms() { echo "${SYNCS[$(( ($1 + SEED) % 3 ))]}"; }
SEED=${QRAFT_POWERCUT_SEED:-$(( $(date +%s%N) % 1000000007 ))}
HIST="$QRAFT_E2E_OUT/${QRAFT_E2E_HIST:-kv_powercut}.jsonl"
replay="QRAFT_POWERCUT_SEED=$SEED QRAFT_E2E_CUTS=$CUTS${QRAFT_E2E_SNAPSHOT_ENTRIES:+ QRAFT_E2E_SNAPSHOT_ENTRIES=$QRAFT_E2E_SNAPSHOT_ENTRIES}"
log "seed $SEED; replay the cuts' choices with: $replay ctest -R e2e_kv_powercut (the timing of the cuts is not replayable)"
trap 'echo "FAILED: command at ${BASH_SOURCE[0]##*/}:$LINENO exited $?; replay: $replay" >&2' ERR
fail() {
  echo "FAILED: $*" >&2
  echo "replay: $replay" >&2
  local keep="$QRAFT_E2E_OUT/powercut-failed-$SEED"
  rm -rf "$keep" && mkdir -p "$keep" && cp -r "$D"/pre* "$D"/n* "$D"/log* "$keep/" 2>/dev/null &&
    echo "the members' files after the last cut, and LMDB and the undo logs before its rollback (pre*), are in $keep" >&2
  for f in "$D"/log*; do [ -f "$f" ] && { echo "--- $f" >&2; tail -20 "$f" >&2; }; done
  exit 1
}

# A preloaded library must come after the sanitizer runtime of an ASan build.
PRELOAD=$QRAFT_POWERCUT_SHIM
asan=$(ldd "$KV" | awk '/libasan/ {print $3; exit}')
[ -n "$asan" ] && PRELOAD="$asan:$PRELOAD"

startp() { # startp N: start member N with the shim logging its writes
  local i=$1
  mkdir -p "$D/n$i" "$D/undo$i"
  QRAFT_POWERCUT_DIR="$D/n$i" QRAFT_POWERCUT_UNDO="$D/undo$i" LD_PRELOAD="$PRELOAD" \
    start "$i" --bootstrap "$M" --snapshot-entries "$SNAP" --state-sync-ms "$SYNC"
}
lmdb_applied() { "$QRAFT_POWERCUT" applied "$D/n$1/kv"; }
snap_index() { # the index of member N's newest snapshot, or 0
  local s
  s=$(ls "$D/n$1/raft" | sed -n 's/^snap-\([0-9a-f]*\)-[0-9a-f]*\.snap$/\1/p' | sort | tail -1)
  echo $(( 16#${s:-0} ))
}
put_acked() { # put_acked KEY VALUE: retries until a member answers 200
  for _ in $(seq 100); do
    for i in 1 2 3; do
      [ "$(kcurl "$i" -o /dev/null -w '%{http_code}' -X PUT -d "{\"value\":\"$2\"}" \
        "$(http "$i")/v1/kv/$1")" = 200 ] && return 0
    done
    sleep 0.1
  done
  return 1
}
get_value() { # get_value KEY: a linearizable read through any member
  for _ in $(seq 100); do
    for i in 1 2 3; do
      local r; r=$(kcurl "$i" -w '\n%{http_code}' "$(http "$i")/v1/kv/$1" || true)
      case ${r##*$'\n'} in
        200) jq -r .value <<<"${r%$'\n'*}"; return 0 ;;
        404) echo "<missing>"; return 0 ;;
      esac
    done
    sleep 0.1
  done
  echo "<unavailable>"
}

holds_all_acked() { # holds_all_acked CUT: every member has w1..wCUT
  local c=$1 target=""
  for _ in $(seq 100); do
    local l; l=$(leader 1 2 3 || true)
    [ -n "$l" ] && target=$(field "$l" commit) && [ -n "$target" ] && break
    sleep 0.1
  done
  [ -n "$target" ] || fail "cut $c: no leader reports its commit index"
  for i in 1 2 3; do
    local ok=0
    for _ in $(seq 150); do
      [ "$(field "$i" applied)" -ge "$target" ] 2>/dev/null && { ok=1; break; }
      sleep 0.1
    done
    [ $ok = 1 ] || fail "cut $c: member $i did not apply up to $target: $(status "$i" | jq -c '{role,commit,applied,kv_applied,snapshot_index}')"
    # its own state (a local read): one list of the w* keys
    local -A got=()
    local k v
    while read -r k v; do got[$k]=$v; done < <(kcurl "$i" \
      "$(http "$i")/v1/kv?prefix=w&limit=10000&stale=1" | jq -r '.items[] | "\(.key) \(.value)"' || true)
    for w in $(seq "$c"); do
      v=${got[w$w]:-<missing>}
      [ "$v" = "cut$w-$SEED" ] ||
        fail "cut $c: member $i (applied $target) reads w$w as '$v', not 'cut$w-$SEED', acknowledged before cut $w"
    done
  done
}

for i in 1 2 3; do keygen "$i"; done
M=$(members_arg 1 2 3)
SNAP=$(snap_entries 0)
SYNC=$(sync_ms 0)
for i in 1 2 3; do startp "$i"; done
wait_leader 1 2 3 >/dev/null || fail "no leader"

# A cut takes 2 to 3 s (more under ASan): at least CUTS of them, and more
# while the clients have time left.
WL_S=$(( CUTS * 3 + 2 ))
"$KV" workload --server "$(http 1),$(http 2),$(http 3)" --clients 4 --keys 10 \
  --seconds "$WL_S" --history "$HIST" >"$D/workload.out" 2>&1 &
WL=$!
WL_END=$(( $(date +%s) + WL_S ))
cleanup_extra() { [ -n "$WL" ] && { kill -CONT "$WL"; kill "$WL"; } 2>/dev/null || true; }

torn=0 restored=0 replayed=0 c=0
while [ "$c" -lt "$CUTS" ] || [ $(( WL_END - $(date +%s) )) -ge 4 ]; do
  c=$((c + 1))
  # load for a while, then a write the clients never touch, acknowledged
  # just before the cut: its apply is the newest LMDB transaction
  sleep "$(( (SEED + c * 7) % 10 / 5 )).$(( (SEED + c) % 10 ))"
  # every other cut the clients pause first, so that this write is the
  # newest one (the others land while the clients' writes are in flight)
  paused=""
  if [ $(( (SEED / 7 + c) % 2 )) = 0 ]; then
    kill -STOP "$WL" 2>/dev/null && paused=", clients paused"
    sleep 0.1
  fi
  put_acked "w$c" "cut$c-$SEED" || fail "cut $c: no write was acknowledged before the cut"
  # paused, let every member apply it and write its snapshot (if one is
  # due): the undone LMDB transaction then lies below the newest snapshot
  [ -n "$paused" ] && sleep 0.3
  # what each member applied (a lower bound while the clients run)
  declare -A ab=()
  for i in 1 2 3; do ab[$i]=$(field "$i" applied 2>/dev/null || echo 0); done
  for i in 1 2 3; do kill -9 "${PID[$i]}" 2>/dev/null || true; done
  for i in 1 2 3; do wait "${PID[$i]}" 2>/dev/null || true; unset "PID[$i]"; done
  mode=torn; [ $(( (SEED + c) % 3 )) = 0 ] && mode=all
  for i in 1 2 3; do
    # kept for a post-mortem of this cut: LMDB and the undo logs as the
    # cut found them (the WAL is too large to copy every time)
    rm -rf "$D/pre$i" && mkdir -p "$D/pre$i" && cp -r "$D/n$i/kv" "$D/undo$i" "$D/pre$i/"
    before=$(lmdb_applied "$i")
    out=$("$QRAFT_POWERCUT" rollback --dir "$D/n$i" --undo "$D/undo$i" --mode "$mode" \
      --seed $(( SEED * 8 + c * 3 + i ))) || fail "cut $c: rollback of member $i: $out"
    after=$(lmdb_applied "$i") || fail "cut $c: member $i: LMDB does not open after the cut"
    snap=$(snap_index "$i")
    how=""
    [ "$after" -lt "$before" ] && torn=$((torn + 1)) # an LMDB commit cut short
    if [ "$snap" -gt "$after" ]; then
      # only a snapshot received from the leader whose install the cut
      # interrupted may lie above LMDB (the restart's log says which)
      how="restores snapshot $snap"; restored=$((restored + 1))
    elif [ "$after" -lt "${ab[$i]:-0}" ]; then
      how="re-applies the log from $((after + 1)) (applied ${ab[$i]} before the cut, snapshot $snap)"
      replayed=$((replayed + 1))
    fi
    log "cut $c ($mode, snapshot every $SNAP, state sync $SYNC ms$paused): member $i: LMDB applied $before -> $after${how:+, $how}; ${out#rolled back $D/}"
  done
  SNAP=$(snap_entries "$c")
  SYNC=$(sync_ms "$c")
  for i in 1 2 3; do startp "$i"; done
  wait_leader 1 2 3 >/dev/null || fail "cut $c: no leader after the restart"
  [ -n "$paused" ] && kill -CONT "$WL" 2>/dev/null
  for i in 1 2 3; do
    ! grep -q "durable-index contract broken" "$D/log$i" ||
      fail "cut $c: member $i restarted behind a snapshot of its own: the log was compacted past LMDB's durable index: $(grep -m1 'durable-index contract broken' "$D/log$i")"
  done
  v=$(get_value "w$c")
  [ "$v" = "cut$c-$SEED" ] || fail "cut $c: w$c, acknowledged just before the cut, reads '$v', not 'cut$c-$SEED'"
  holds_all_acked "$c"
done
CUTS_DONE=$c
log "after $c cuts: $replayed member restarts resumed from an LMDB index below what they had applied and re-applied the log; $restored restored a received snapshot above LMDB; $torn found an LMDB commit cut short"
[ "$replayed" -gt 0 ] || fail "no restart found LMDB behind what its member applied: the test exercised nothing"

put_acked after "all-cuts-$SEED" || fail "the cluster takes no writes after the cuts"
wait "$WL" || { WL=""; fail "workload: $(cat "$D/workload.out")"; }
WL=""
log "$(cat "$D/workload.out")"
acked=$(jq -c 'select(.type == "ok" and (.f == "put" or (.f == "cas" and .result == "ok")))' "$HIST" | wc -l)
converged 1 2 3 || fail "members differ: $(for i in 1 2 3; do echo "member $i: $(digest "$i") $(status "$i" | jq -c '{role,commit,applied,kv_applied,snapshot_index}')"; done)"
log "members converged: $(digest 1)"
"$QRAFT_LINCHECK" --time-ms 60000 "$HIST" ||
  fail "history $HIST is not linearizable (an acknowledged write was lost or reordered)"
log "linearizable: $acked acknowledged client writes, and $CUTS_DONE writes acknowledged just before a cut, each read back from every member after every later cut"
no_sanitizer_reports
log "passed"
