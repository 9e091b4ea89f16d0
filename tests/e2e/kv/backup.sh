#!/usr/bin/env bash
# Backup and restore. A three-member cluster takes writes (a growing load,
# and clients whose history is checked); meanwhile `qraft-kv snapshot save`
# asks a follower for a linearizable backup. The file carries the index it
# is at and the digest of the keys as the source computed it from its view
# at that index. Three new members are seeded from it with `qraft-kv
# restore` and started: before any write their digest is the backup's, at
# the backup's index; their cluster id is new; they elect, take writes and
# agree. A backup with a flipped bit, and a truncated one, are refused by
# `snapshot info` and by `restore`, which then leaves the data folder
# untouched.
source "$(dirname "$0")/lib.sh"
HIST="$QRAFT_E2E_OUT/kv_backup.jsonl"

for i in 1 2 3; do keygen "$i"; done
M=$(members_arg 1 2 3)
for i in 1 2 3; do start "$i" --bootstrap "$M" --snapshot-entries 2000; done
L=$(wait_leader 1 2 3) || fail "no leader"
log "leader: member $L"
"$KV" load --count 2000 --prefix pre- --server "$(http "$L")" >/dev/null || fail "the first load failed"
"$KV" workload --server "$(http 1),$(http 2),$(http 3)" --clients 3 --keys 8 \
  --seconds 12 --history "$HIST" >"$D/workload.out" 2>&1 &
WL=$!
"$KV" bench --server "$(http 1),$(http 2),$(http 3)" --clients 4 --seconds 10 \
  --value-bytes 512 --op put --prefix load- >"$D/bench.out" 2>&1 &
BL=$!
sleep 3
F=$(( L % 3 + 1 )) # a follower
t0=$(ms)
"$KV" snapshot save "$D/backup" --server "$(http "$F")" --json >"$D/save.json" ||
  fail "snapshot save failed: $(cat "$D/save.json")"
log "backup from member $F under load in $(( $(ms) - t0 )) ms: $(cat "$D/save.json")"
IDX=$(jq -r .index "$D/save.json")
DIG=$(jq -r .digest "$D/save.json")
KEYS=$(jq -r .keys "$D/save.json")
[ "$IDX" -gt 2000 ] || fail "the backup's index $IDX is not past the first load"
[ "$KEYS" -ge 2000 ] || fail "the backup holds $KEYS keys, fewer than the first load's 2000"
"$KV" snapshot info "$D/backup" --json >"$D/info.json" || fail "snapshot info refused a whole backup"
[ "$(jq -r .digest "$D/info.json")" = "$DIG" ] || fail "snapshot info computes another digest: $(cat "$D/info.json")"
[ "$(jq -r .index "$D/info.json")" = "$IDX" ] || fail "snapshot info reads another index"
wait "$BL" || true
log "load: $(grep -m1 'puts/s\|put' "$D/bench.out" | head -1)"
wait "$WL" || { cat "$D/workload.out"; fail "workload"; }
log "workload: $(tail -1 "$D/workload.out")"
"$QRAFT_LINCHECK" --time-ms 60000 "$HIST" || fail "history $HIST is not linearizable"
SRC_APPLIED=$(field "$L" applied)
[ "$SRC_APPLIED" -gt "$IDX" ] || fail "the source did not write past the backup (applied $SRC_APPLIED)"

log "corrupt backups are refused"
cp "$D/backup" "$D/flipped"
SIZE=$(stat -c %s "$D/backup")
printf '\x5a' | dd of="$D/flipped" bs=1 seek=$(( SIZE / 2 )) conv=notrunc status=none
cmp -s "$D/backup" "$D/flipped" && fail "the bit flip changed nothing"
head -c $(( SIZE - 100 )) "$D/backup" >"$D/truncated"
keygen 7
for f in flipped truncated; do
  if "$KV" snapshot info "$D/$f" >"$D/$f.out" 2>&1; then fail "snapshot info took the $f backup"; fi
  grep -q "corrupt\|truncated" "$D/$f.out" || fail "snapshot info on the $f backup does not say why: $(cat "$D/$f.out")"
  if "$KV" restore "$D/$f" --data "$D/n7" --key "$D/k7" --bootstrap "$(cat "$D/id7")@$(raft 7)" >"$D/$f.restore" 2>&1; then
    fail "restore took the $f backup"
  fi
  grep -q "restore refused" "$D/$f.restore" || fail "restore of the $f backup does not say why: $(cat "$D/$f.restore")"
  [ ! -e "$D/n7" ] || fail "restore of the $f backup left $D/n7 behind"
  log "$f: $(head -1 "$D/$f.out")"
done

log "restore into a new cluster of three"
for i in 4 5 6; do keygen "$i"; done
M2=$(members_arg 4 5 6)
for i in 4 5 6; do
  "$KV" restore "$D/backup" --data "$D/n$i" --key "$D/k$i" --bootstrap "$M2" >"$D/restore$i.out" 2>&1 ||
    fail "restore for member $i failed: $(cat "$D/restore$i.out")"
done
log "$(cat "$D/restore4.out")"
for i in 4 5 6; do start "$i"; done
L2=$(wait_leader 4 5 6) || fail "the restored cluster elects no leader"
for i in 4 5 6; do
  d=$(digest "$i")
  [ "$d" = "$DIG $KEYS" ] || fail "member $i's digest is '$d', the backup's '$DIG $KEYS'"
  # (past IDX only by the new leader's empty entry and the members' HTTP
  # addresses, which are not keys)
  a=$(field "$i" kv_applied)
  [ "$a" -ge "$IDX" ] && [ "$a" -le $(( IDX + 8 )) ] || fail "member $i's state is at $a, the backup's at $IDX"
done
C1=$(field 1 cluster_id); C2=$(field 4 cluster_id)
[ -n "$C2" ] && [ "$C1" != "$C2" ] || fail "the restored cluster's id ($C2) is not new (old: $C1)"
log "members 4, 5, 6: digest $DIG of $KEYS keys at index $IDX, as the backup; cluster $C2 (was $C1)"
"$KV" put --server "$(http "$L2")" after-restore yes >/dev/null || fail "a write to the restored cluster failed"
converged 4 5 6 || fail "the restored members differ after a write"
[ "$("$KV" get --server "$(http 5)" pre-000007)" != "" ] || fail "a key of the first load is missing"
# the source goes on, unaffected
"$KV" put --server "$(http 1),$(http 2),$(http 3)" source-after yes >/dev/null || fail "the source cluster stopped taking writes"
converged 1 2 3 || fail "the source members differ"
no_sanitizer_reports
log "passed"
