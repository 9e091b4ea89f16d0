#!/usr/bin/env bash
# bench_kv: qraft-kv end to end. Three qraft-kv processes on loopback (WAL
# and LMDB in a temporary folder under the build folder, syncs on), the
# client `qraft-kv bench` (one keep-alive HTTP/1.1 connection per client, one
# request at a time): 256-byte puts with 1, 16 and 64 clients and
# linearizable gets with 64 clients, to the leader. Each level runs REPEATS
# times (default 3) on the same cluster; the median run (by throughput) is
# printed.
#
# Baselines measured in the same run: bench_node (three nodes in one
# process, no HTTP, no state machine): the fdatasync + loopback round-trip
# floor and the node's proposals/s and p50 at 1 and 16 in flight. The etcd
# figures and the goals are quoted from PERFORMANCE.md: measured earlier on
# a machine of this kind, NOT in this run.
#
#   scripts/bench_kv.sh [BUILD_DIR]      (default build; needs bin/qraft-kv,
#                                         bin/qraft-keygen, bin/bench_node)
# Bounded: about 35 s; bench_node is cut after 120 s and each client run
# after 60 s. The members and the folder are removed on exit, also on
# failure or interrupt.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build}
REPEATS=${REPEATS:-3}
BIN=$dir/bin
for b in qraft-kv qraft-keygen bench_node; do
  [ -x "$BIN/$b" ] || { echo "bench_kv: $BIN/$b is not built" >&2; exit 1; }
done
KV=$BIN/qraft-kv
mkdir -p "$dir/bench-kv"
D=$(mktemp -d "$dir/bench-kv/run.XXXXXX")
BASE=$(( 20000 + ($$ % 400) * 100 ))
declare -A PID
cleanup() {
  exec 2>/dev/null # not bash's "Killed" notices of the members
  for i in "${!PID[@]}"; do kill -9 "${PID[$i]}" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$D"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
fail() {
  echo "bench_kv: FAILED: $*" >&2
  for f in "$D"/log*; do [ -f "$f" ] && { echo "--- $f" >&2; tail -5 "$f" >&2; }; done
  exit 1
}
http() { echo "http://127.0.0.1:$((BASE + 80 + $1))"; }

# ---- baseline: the node alone, in this run ----
node_out=$(timeout 120 "$BIN/bench_node" --seconds 1 --dir "$D/node") ||
  fail "bench_node"
floor_us=$(awk '/floor for one write/ {print $(NF-1)}' <<<"$node_out")
sync_us=$(awk '/append 256 B \+ fdatasync/ {print $(NF-1)}' <<<"$node_out")
rtt_us=$(awk '/loopback UDP round trip/ {print $(NF-1)}' <<<"$node_out")
read -r _ node1_rate node1_p50 _ < <(awk '$1 == 1 && NF >= 5' <<<"$node_out")
read -r _ node16_rate node16_p50 _ < <(awk '$1 == 16 && NF >= 5' <<<"$node_out")
if [ -z "$floor_us" ] || [ -z "${node1_rate:-}" ] || [ -z "${node16_rate:-}" ]; then
  fail "could not read bench_node's output: $node_out"
fi

# ---- the cluster ----
for i in 1 2 3; do "$BIN/qraft-keygen" "$D/k$i" >"$D/id$i"; done
M="$(cat "$D/id1")@127.0.0.1:$((BASE + 1)),$(cat "$D/id2")@127.0.0.1:$((BASE + 2))"
M="$M,$(cat "$D/id3")@127.0.0.1:$((BASE + 3))"
for i in 1 2 3; do
  setsid "$KV" serve --quiet --data "$D/n$i" --key "$D/k$i" \
    --raft "127.0.0.1:$((BASE + i))" --http "127.0.0.1:$((BASE + 80 + i))" \
    --bootstrap "$M" >>"$D/log$i" 2>&1 &
  PID[$i]=$!
done
L=""
for _ in $(seq 200); do
  for i in 1 2 3; do
    if curl -s -m 1 "$(http "$i")/v1/status" | grep -q '"role":"leader"'; then
      L=$i
      break 2
    fi
  done
  sleep 0.05
done
[ -n "$L" ] || fail "no leader elected"
sleep 0.5 # the members register their HTTP addresses
timeout 30 "$KV" bench --clients 4 --count 400 --server "$(http "$L")" >/dev/null ||
  fail "warm-up puts"

# run_level OP CLIENTS COUNT: the median of REPEATS runs, as
# "rate p50_ms p99_ms failed"
run_level() {
  local op=$1 c=$2 n=$3 out rows=""
  for _ in $(seq "$REPEATS"); do
    # exits 1 when a request failed: counted in the last column
    out=$(timeout 60 "$KV" bench --op "$op" --clients "$c" --count "$n" \
            --server "$(http "$L")") || true
    grep -q 'failed$' <<<"$out" || fail "bench --op $op --clients $c: $out"
    # bench: C clients, N puts of B bytes in S s: R puts/s, p50 X ms, p99 Y ms, max Z ms, F failed
    rows+=$(sed -E 's/.*: ([0-9]+) [a-z]+\/s, p50 ([0-9.]+) ms, p99 ([0-9.]+) ms, max [0-9.]+ ms, ([0-9]+) failed.*/\1 \2 \3 \4/' <<<"$out")$'\n'
  done
  sort -n <<<"${rows%$'\n'}" | sed -n "$(( (REPEATS + 1) / 2 ))p"
}
res=$(run_level put 1 1000)
read -r p1 p1_50 p1_99 f1 <<<"$res"
res=$(run_level put 16 8000)
read -r p16 p16_50 p16_99 f16 <<<"$res"
res=$(run_level put 64 16000)
read -r p64 p64_50 p64_99 f64 <<<"$res"
res=$(run_level get 64 32000)
read -r g64 g64_50 g64_99 fg <<<"$res"

# ---- the report ----
# etcd 3.4, 3 members on loopback, gRPC client (PERFORMANCE.md, not this run)
ETCD_P1=1401 ETCD_P16=6375 ETCD_P64=9230 ETCD_G64=13133
ETCD_P50_1=0.69 ETCD_P50_16=2.3 ETCD_P50_64=6.3 ETCD_P99_64=17.7
r() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "-"; else printf "%.2fx", a / b }'; }
echo "bench_kv: 3 qraft-kv members on loopback (WAL and LMDB syncs on), HTTP/1.1"
echo "  keep-alive, 256-byte values, one request at a time per client; median of $REPEATS runs"
echo "  baseline (this run, bench_node): fdatasync p50 ${sync_us} us, UDP round trip p50 ${rtt_us} us,"
echo "    floor ${floor_us} us; node alone: 1 in flight ${node1_rate}/s p50 ${node1_p50} us,"
echo "    16 in flight ${node16_rate}/s p50 ${node16_p50} us"
printf '  %-14s %9s %8s %8s %6s %10s %10s %11s\n' workload "ops/s" "p50 ms" "p99 ms" failed \
  "vs node" "p50/floor" "vs etcd*"
printf '  %-14s %9s %8s %8s %6s %10s %10s %11s\n' "put, 1 client" "$p1" "$p1_50" "$p1_99" "$f1" \
  "$(r "$p1" "$node1_rate")" "$(r "$(awk -v a="$p1_50" 'BEGIN{print a*1000}')" "$floor_us")" \
  "$(r "$p1" "$ETCD_P1")"
printf '  %-14s %9s %8s %8s %6s %10s %10s %11s\n' "put, 16" "$p16" "$p16_50" "$p16_99" "$f16" \
  "$(r "$p16" "$node16_rate")" "" "$(r "$p16" "$ETCD_P16")"
printf '  %-14s %9s %8s %8s %6s %10s %10s %11s\n' "put, 64" "$p64" "$p64_50" "$p64_99" "$f64" \
  "" "" "$(r "$p64" "$ETCD_P64")"
printf '  %-14s %9s %8s %8s %6s %10s %10s %11s\n' "get, 64" "$g64" "$g64_50" "$g64_99" "$fg" \
  "" "" "$(r "$g64" "$ETCD_G64")"
echo "  vs node: our ops/s over the node alone at the same number in flight (this run)."
echo "  * etcd 3.4 (PERFORMANCE.md, measured earlier on a machine of this kind, NOT in this"
echo "    run): puts/s $ETCD_P1 / $ETCD_P16 / $ETCD_P64, p50 $ETCD_P50_1 / $ETCD_P50_16 / $ETCD_P50_64 ms,"
echo "    p99 at 64 $ETCD_P99_64 ms; linearizable gets at 64: $ETCD_G64/s."
awk -v p64="$p64" -v p99="$p64_99" -v p50="$p1_50" -v e64="$ETCD_P64" -v e99="$ETCD_P99_64" \
    -v e50="$ETCD_P50_1" 'BEGIN {
  printf "  goals (PERFORMANCE.md): puts/s at 64 >= 5x etcd (%d): %.2fx of it, %s\n",
         5 * e64, p64 / (5 * e64), (p64 >= 5 * e64 ? "met" : "misses")
  printf "    p99 at 64 <= etcd/3 (%.1f ms): %.1f ms, %s\n", e99 / 3, p99,
         (p99 <= e99 / 3 ? "met" : "misses")
  printf "    p50 with 1 client <= etcd/3 (%.2f ms): %.2f ms, %s\n", e50 / 3, p50,
         (p50 <= e50 / 3 ? "met" : "misses")
}'
