#!/usr/bin/env bash
# bench_growth.sh BUILD_DIR: how qraft-kv's costs grow with its data and its
# membership, measured in one run on this machine.
#
#  1. For each state size (GROWTH_SIZES_MB; make bench: "128 512", make
#     soak: "1024 4096"; 16384 needs about 200 GB of disk), in 64 KiB
#     values on three members: the time
#     a fourth member takes to join and catch up (through a snapshot) and
#     its memory (the largest RssAnon sampled every 50 ms, and VmHWM, which
#     counts LMDB's mapped file pages too), next to the raw copy speed of
#     the same bytes measured just before: the leader's LMDB file copied on
#     this disk (cp, then sync) and sent over loopback TCP (socat); and the
#     cluster's write throughput (1 KiB puts, 8 clients, 5 s) before the
#     join and during its first 5 s; the joiner's longest loop stall (a
#     restore in steps keeps it short) and the leader changes the join
#     caused.
#     The same join on etcd 3.4 (Debian's etcd-server, installed when
#     missing; skipped without it) in the same run: three etcd members
#     loaded with the same values through etcd's JSON gateway, a fourth
#     added (member add, then started with --initial-cluster-state
#     existing; --snapshot-count 1000, so that the leader snapshots often;
#     etcd also keeps 5,000 entries after a snapshot for slow followers)
#     and timed until its applied index reaches the leader's.
#  2. Puts/s and p99 at 3, 5 and 7 members (GROWTH_MEMBERS; 1 KiB values,
#     16 clients, 10 s).
#  3. Linearizable gets/s and p50 (8 clients, 5 s, after 1 s of warm-up)
#     as the keys grow (GROWTH_KEYS: "1000 100000"; 100-byte values).
#
# Prints tables with ratios; plots with gnuplot (installed when missing,
# like socat) into BUILD_DIR/bench/growth-*.png.
set -Eeuo pipefail
dir=${1:-build}
# (set but empty: that part is skipped)
SIZES=${GROWTH_SIZES_MB-128 512}
MEMBERS=${GROWTH_MEMBERS-3 5 7}
KEYS=${GROWTH_KEYS-1000 100000}
export QRAFT_KV="$dir/bin/qraft-kv" QRAFT_KEYGEN="$dir/bin/qraft-keygen" \
  QRAFT_LINCHECK="$dir/bin/qraft-lincheck" QRAFT_E2E_OUT="$dir/e2e"
for b in "$QRAFT_KV" "$QRAFT_KEYGEN" "$QRAFT_LINCHECK"; do
  [ -x "$b" ] || { echo "bench_growth: no $b (make release first)" >&2; exit 1; }
done
PLOT_DIR=$dir/bench
mkdir -p "$PLOT_DIR"
for tool in socat gnuplot etcd; do
  if ! command -v "$tool" >/dev/null && [ -x /usr/bin/apt-get ] && [ "$(id -u)" = 0 ]; then
    pkg=$tool; [ "$tool" = gnuplot ] && pkg=gnuplot-nox; [ "$tool" = etcd ] && pkg=etcd-server
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$pkg" >/dev/null 2>&1 || true
  fi
done
source "$(dirname "$0")/../tests/e2e/kv/lib.sh"
trap 'echo "bench_growth: failed at line $LINENO" >&2' ERR

rss_anon_kb() { awk '/^RssAnon/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
hwm_kb() { awk '/^VmHWM/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
now_ms() { date +%s%3N; }
div() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b > 0 ? a / b : 0) }'; }
# bench_put SERVER SECONDS CLIENTS BYTES: prints "puts/s p99_ms"
# (a run that fails, e.g. a leader change, prints "0 0" and says why)
bench_put() {
  local out
  out=$("$QRAFT_KV" bench --server "$1" --seconds "$2" --clients "$3" --value-bytes "$4" --op put 2>&1) ||
    echo "  (puts to $1 failed: $(grep -m1 'first failure' <<<"$out" || tail -1 <<<"$out"))" >&2
  local r
  r=$(sed -n 's/.*: \([0-9]*\) puts\/s, p50 [0-9.]* ms, p99 \([0-9.]*\) ms.*/\1 \2/p' <<<"$out")
  echo "${r:-0 0}"
}
# Digests of GiBs: 300 s each, converged within 10 min (lib.sh).
BIG_DIGEST_S=300 BIG_CONVERGE_S=600
stop_all() { for i in "${!PID[@]}"; do stop9 "$i"; done; rm -rf "$D"/n* "$D"/k* "$D"/id* "$D"/log* "$D"/e*; }
ETCD=$(command -v etcd || true)
ehttp() { echo "http://127.0.0.1:$((BASE + 40 + $1))"; }
epeer() { echo "http://127.0.0.1:$((BASE + 50 + $1))"; }
estatus() { curl -s -m 2 -X POST "$(ehttp "$1")/v3/maintenance/status" -d '{}' 2>/dev/null || true; }
estart() { # estart I CLUSTER STATE
  setsid "$ETCD" --name "e$1" --data-dir "$D/e$1" --listen-client-urls "$(ehttp "$1")" \
    --advertise-client-urls "$(ehttp "$1")" --listen-peer-urls "$(epeer "$1")" \
    --initial-advertise-peer-urls "$(epeer "$1")" --initial-cluster "$2" \
    --initial-cluster-state "$3" --initial-cluster-token "growth-$$" \
    --snapshot-count 1000 --quota-backend-bytes $((8 << 30)) \
    --logger zap --log-level error >>"$D/loge$1" 2>&1 &
  PID[e$1]=$!
}
# etcd_join S: sets E_JOIN_MS E_ANON E_BEFORE E_DURING for a fourth etcd
# member joining S MiB of 64 KiB values (E_JOIN_MS 0: no result). Runs in
# this shell (not a $(...) subshell), so that PID holds the etcd processes
# and stop_all stops them.
etcd_join() {
  local S=$1 EC="" i EL=""
  E_JOIN_MS=0 E_ANON=0 E_BEFORE=0 E_DURING=0
  [ -z "$(estatus 1)$(estatus 4)" ] || { echo "  (etcd: its ports answer already; no comparison)"; return 0; }
  for i in 1 2 3; do EC="$EC${EC:+,}e$i=$(epeer "$i")"; done
  for i in 1 2 3; do estart "$i" "$EC" new; done
  for _ in $(seq 200); do
    for i in 1 2 3; do
      local st; st=$(estatus "$i")
      if [ -n "$st" ] && [ "$(jq -r '.leader // empty' <<<"$st")" = "$(jq -r '.header.member_id // "x"' <<<"$st")" ]; then
        EL=$i; break 2
      fi
    done
    sleep 0.05
  done
  [ -n "$EL" ] || { echo "  (etcd elected no leader)" >&2; return 0; }
  "$QRAFT_KV" bench --target etcd --server "$(ehttp "$EL")" --clients 16 --count $((S * 16)) \
    --value-bytes 65536 --op put >"$D/eload.out" 2>&1 || true
  local before during
  before=$("$QRAFT_KV" bench --target etcd --server "$(ehttp "$EL")" --seconds 5 --clients 8 \
    --value-bytes 1024 --op put 2>&1 | sed -n 's/.*: \([0-9]*\) puts\/s.*/\1/p')
  curl -s -m 10 -X POST "$(ehttp "$EL")/v3/cluster/member/add" \
    -d "{\"peerURLs\":[\"$(epeer 4)\"]}" >"$D/eadd.out" || true
  jq -e '.member.ID' "$D/eadd.out" >/dev/null 2>&1 || { echo "  (etcd member add failed: $(cat "$D/eadd.out"))" >&2; return 0; }
  local t0; t0=$(now_ms)
  estart 4 "$EC,e4=$(epeer 4)" existing
  "$QRAFT_KV" bench --target etcd --server "$(ehttp "$EL")" --seconds 5 --clients 8 \
    --value-bytes 1024 --op put >"$D/eduring.out" 2>&1 &
  local bp=$! max_anon=0 caught=0 end=$(( $(date +%s) + 300 + S / 5 ))
  while [ "$(date +%s)" -lt "$end" ]; do
    local kb; kb=$(rss_anon_kb "${PID[e4]}"); [ "${kb:-0}" -gt "$max_anon" ] && max_anon=$kb
    local a4 aL
    a4=$(estatus 4 | jq -r '.raftAppliedIndex // empty' 2>/dev/null || true)
    aL=$(estatus "$EL" | jq -r '.raftIndex // empty' 2>/dev/null || true)
    if [ -n "$a4" ] && [ -n "$aL" ] && [ "$a4" -ge $((aL - 64)) ] && [ "$a4" -gt 0 ]; then
      caught=1; break
    fi
    sleep 0.05
  done
  local t1; t1=$(now_ms)
  wait "$bp" || true
  during=$(sed -n 's/.*: \([0-9]*\) puts\/s.*/\1/p' "$D/eduring.out")
  [ $caught = 1 ] || { echo "  (etcd's fourth member did not catch up)" >&2; return 0; }
  E_JOIN_MS=$((t1 - t0)) E_ANON=$((max_anon / 1024)) E_BEFORE=${before:-0} E_DURING=${during:-0}
}

# ---- 1. growth with the state ----
echo "== growth: a fourth member joins a state of $SIZES MiB (64 KiB values)"
printf '%-8s %9s %9s %9s %9s %9s %8s %8s %8s %9s %9s %7s %8s %5s\n' size_MiB load_MB/s \
  join_s join_MB/s disk_MB/s loop_MB/s join/disk anon_MiB hwm_MiB puts_before puts_join ratio stall_s lead
: >"$PLOT_DIR/growth-join.dat"
for S in $SIZES; do
  for i in 1 2 3 4; do keygen "$i"; done
  M=$(members_arg 1 2 3)
  OPTS=(--snapshot-log-bytes 256M)
  for i in 1 2 3; do start "$i" --bootstrap "$M" "${OPTS[@]}"; done
  L=$(wait_leader 1 2 3) || { echo "no leader" >&2; exit 1; }
  t0=$(now_ms)
  "$QRAFT_KV" bench --server "$(http "$L")" --clients 16 --count $((S * 16)) \
    --value-bytes 65536 --op put >"$D/load.out" 2>&1 || true
  t1=$(now_ms)
  load_failed=$(sed -n 's/.*, \([0-9]*\) failed$/\1/p' "$D/load.out")
  [ "${load_failed:-0}" = 0 ] || echo "  ($load_failed of the load's puts failed: $(grep -m1 'first failure' "$D/load.out" || true))"
  # the failed puts' keys are missing: the state is a little smaller
  load_mbs=$(( S * 1048576 / 1000 / (t1 - t0 > 0 ? t1 - t0 : 1) ))
  converged_big 1 2 3 || { echo "members differ after the load" >&2; exit 1; }
  L=$(wait_leader 1 2 3) || { echo "no leader after the load" >&2; exit 1; } # it may have moved
  for i in 1 2 3; do
    m=$(kcurl "$i" "$(http "$i")/metrics" || true)
    echo "  member $i after the load: $(awk '$1 == "qraft_leader_changes_total" {lc = $2} $1 == "qraft_loop_stall_seconds_max" {st = $2} $1 == "qraft_snapshots_taken_total" {tk = $2} $1 == "qraft_snapshots_installed_total" {in_ = $2} END {printf "leader changes %s, snapshots taken %s, installed %s, longest loop stall %s s", lc, tk, in_, st}' <<<"$m")"
  done
  # raw copies of the leader's LMDB file: on this disk, and over loopback
  f="$D/n$L/kv/data.mdb"
  bytes=$(stat -c %s "$f")
  sync
  t0=$(now_ms); cp "$f" "$D/copy.mdb"; sync; t1=$(now_ms)
  disk_mbs=$(( bytes / 1000 / (t1 - t0 > 0 ? t1 - t0 : 1) ))
  rm -f "$D/copy.mdb"
  loop_mbs=0
  if command -v socat >/dev/null; then
    port=$((BASE + 99))
    socat -u "TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr" OPEN:/dev/null &
    sp=$!
    sleep 0.2
    t0=$(now_ms); socat -u "FILE:$f" "TCP:127.0.0.1:$port"; wait "$sp" || true; t1=$(now_ms)
    loop_mbs=$(( bytes / 1000 / (t1 - t0 > 0 ? t1 - t0 : 1) ))
  fi
  read -r before _ <<<"$(bench_put "$(http "$L")" 5 8 1024)"
  lc0=$(kcurl "$L" "$(http "$L")/metrics" | awk '$1 == "qraft_leader_changes_total" {print $2}' || true)
  # the join, with writes running during its first 5 s
  start 4 --join "$(http "$L")" "${OPTS[@]}"
  t0=$(now_ms)
  bench_put "$(http "$L")" 5 8 1024 >"$D/during.out" &
  bp=$!
  max_anon=0
  end=$(( $(date +%s) + 300 + S / 5 ))
  caught=0
  while [ "$(date +%s)" -lt "$end" ]; do
    kb=$(rss_anon_kb "${PID[4]}"); [ "${kb:-0}" -gt "$max_anon" ] && max_anon=$kb
    a4=$(field 4 kv_applied); aL=$(field "$L" kv_applied)
    inst=$(kcurl 4 "$(http 4)/metrics" | awk '$1 == "qraft_snapshots_installed_total" {print $2}' || true)
    if [ -n "$a4" ] && [ -n "$aL" ] && [ "${inst:-0}" -ge 1 ] && [ "$a4" -ge $((aL - 64)) ]; then
      caught=1; break
    fi
    sleep 0.05
  done
  t1=$(now_ms)
  hwm=$(hwm_kb "${PID[4]}")
  wait "$bp" || true
  read -r during _ <<<"$(cat "$D/during.out")"
  [ $caught = 1 ] || { echo "member 4 did not catch up" >&2; exit 1; }
  m4=$(kcurl 4 "$(http 4)/metrics" || true)
  stall4=$(awk '$1 == "qraft_loop_stall_seconds_max" {print $2}' <<<"$m4")
  echo "  member 4: $(awk '$1 == "qraft_snapshot_restore_steps_total" {rs = $2} $1 == "qraft_restore_waited_entries_total" {w = $2} END {printf "restore steps %s, entries that waited for the restore %s", rs, w}' <<<"$m4")"
  L2=$(wait_leader 1 2 3 4) || L2=$L
  lc1=$(kcurl "$L2" "$(http "$L2")/metrics" | awk '$1 == "qraft_leader_changes_total" {print $2}' || true)
  join_ms=$((t1 - t0))
  join_mbs=$(( bytes / 1000 / (join_ms > 0 ? join_ms : 1) ))
  printf '%-8s %9s %9.1f %9s %9s %9s %8.2f %8s %8s %9s %9s %7.2f %8.3f %5s\n' "$S" "$load_mbs" \
    "$(div "$join_ms" 1000)" "$join_mbs" "$disk_mbs" "$loop_mbs" \
    "$(div "$join_mbs" "$disk_mbs")" $((max_anon / 1024)) $((hwm / 1024)) \
    "${before:-0}" "${during:-0}" "$(div "${during:-0}" "${before:-0}")" \
    "${stall4:-0}" "$(( ${lc1:-0} - ${lc0:-0} ))"
  stop_all
  # the same join on etcd
  e_join_ms=0
  if [ -n "$ETCD" ]; then
    etcd_join "$S"
    e_join_ms=$E_JOIN_MS e_anon=$E_ANON e_before=$E_BEFORE e_during=$E_DURING
    if [ "${e_join_ms:-0}" -gt 0 ]; then
      e_mbs=$(( bytes / 1000 / e_join_ms ))
      printf '  etcd 3.4, same values: join and catch up %.1f s (%s MB/s; qraft-kv %.2fx as fast), RssAnon max %s MiB, puts/s before %s, during %s (%.2f)\n' \
        "$(div "$e_join_ms" 1000)" "$e_mbs" "$(div "$e_join_ms" "$join_ms")" "$e_anon" \
        "$e_before" "$e_during" "$(div "$e_during" "$e_before")"
    fi
    stop_all
  else
    echo "  (etcd: not installed and could not be; no comparison)"
  fi
  echo "$S $((join_ms)) $join_mbs $disk_mbs $loop_mbs $((max_anon / 1024)) $((hwm / 1024)) ${before:-0} ${during:-0} ${e_join_ms:-0} $(( ${e_join_ms:-0} > 0 ? bytes / 1000 / e_join_ms : 0 ))" >>"$PLOT_DIR/growth-join.dat"
done

# ---- 2. members ----
echo "== members: 1 KiB puts, 16 clients, 10 s, to the leader"
printf '%-8s %9s %9s %9s\n' members puts/s p99_ms vs_3
: >"$PLOT_DIR/growth-members.dat"
base=""
for N in $MEMBERS; do
  ids=$(seq 1 "$N")
  for i in $ids; do keygen "$i"; done
  # shellcheck disable=SC2086
  M=$(members_arg $ids)
  for i in $ids; do start "$i" --bootstrap "$M"; done
  # shellcheck disable=SC2086
  L=$(wait_leader $ids) || { echo "no leader" >&2; exit 1; }
  read -r ps p99 <<<"$(bench_put "$(http "$L")" 10 16 1024)"
  base=${base:-$ps}
  printf '%-8s %9s %9s %9.2f\n' "$N" "$ps" "$p99" "$(div "$ps" "$base")"
  echo "$N $ps $p99" >>"$PLOT_DIR/growth-members.dat"
  stop_all
done

# ---- 3. linearizable reads as the keys grow ----
echo "== linearizable gets (8 clients, 5 s) as the keys grow (100-byte values)"
printf '%-8s %9s %9s %9s\n' keys gets/s p50_ms vs_first
: >"$PLOT_DIR/growth-reads.dat"
for i in 1 2 3; do keygen "$i"; done
M=$(members_arg 1 2 3)
for i in 1 2 3; do start "$i" --bootstrap "$M"; done
L=$(wait_leader 1 2 3) || { echo "no leader" >&2; exit 1; }
first=""
for K in $KEYS; do
  # the bench's keys are its client and count: K puts hold about K keys
  # (the earlier rounds' are written again)
  "$QRAFT_KV" bench --server "$(http "$L")" --clients 16 --count "$K" \
    --value-bytes 100 --op put >"$D/load.out" 2>&1 || true
  read -r _ nkeys <<<"$(digest "$L")"
  "$QRAFT_KV" bench --server "$(http "$L")" --seconds 1 --clients 8 --op get >/dev/null 2>&1 || true
  out=$("$QRAFT_KV" bench --server "$(http "$L")" --seconds 5 --clients 8 --op get 2>&1 || true)
  gs=$(sed -n 's/.*: \([0-9]*\) gets\/s.*/\1/p' <<<"$out")
  p50=$(sed -n 's/.* p50 \([0-9.]*\) ms.*/\1/p' <<<"$out")
  first=${first:-$gs}
  printf '%-8s %9s %9s %9.2f\n' "$nkeys" "$gs" "$p50" "$(div "$gs" "$first")"
  echo "$nkeys $gs $p50" >>"$PLOT_DIR/growth-reads.dat"
done
stop_all

# ---- plots ----
if command -v gnuplot >/dev/null; then
  gnuplot -e "set terminal pngcairo size 800,500; set output '$PLOT_DIR/growth-join.png';
    set title 'A member joins: MB/s by state size (this machine, one run)';
    set xlabel 'state (MiB)'; set ylabel 'MB/s'; set logscale x; set key top left;
    plot '$PLOT_DIR/growth-join.dat' using 1:3 with linespoints lw 2 title 'join and catch up',
         '' using 1:4 with linespoints lw 2 title 'cp on this disk',
         '' using 1:5 with linespoints lw 2 title 'loopback TCP',
         '' using 1:(\$11 > 0 ? \$11 : 1/0) with linespoints lw 2 title 'etcd 3.4 join'" || true
  gnuplot -e "set terminal pngcairo size 800,500; set output '$PLOT_DIR/growth-members.png';
    set title '1 KiB puts/s by members (16 clients)'; set xlabel 'members';
    set ylabel 'puts/s'; set yrange [0:*];
    plot '$PLOT_DIR/growth-members.dat' using 1:2 with linespoints lw 2 notitle" || true
  gnuplot -e "set terminal pngcairo size 800,500; set output '$PLOT_DIR/growth-reads.png';
    set title 'Linearizable gets/s by keys held (8 clients)'; set xlabel 'keys';
    set ylabel 'gets/s'; set logscale x; set yrange [0:*];
    plot '$PLOT_DIR/growth-reads.dat' using 1:2 with linespoints lw 2 notitle" || true
  echo "plots: $PLOT_DIR/growth-{join,members,reads}.png"
fi
