#!/usr/bin/env bash
# bench_kv: qraft-kv end to end, next to etcd in the same run. Three
# qraft-kv processes and three etcd 3.4 processes (Debian's etcd-server,
# installed here when missing: bench only) on loopback, data under the
# build folder, syncs on, each with its default settings. One load client
# for both, `qraft-kv bench` (one keep-alive HTTP/1.1 connection per
# client, one request at a time; etcd through its v3 JSON gateway,
# --target etcd; and through its gRPC Go client, bench/etcd/grpcload.go,
# built against Debian's golang-etcd-server-dev): 256-byte puts with 1, 16
# and 64 clients and linearizable
# gets with 64 clients, to the leader, in rounds that alternate the two
# servers, REPEATS (default 3) of each; the median run (by throughput) is
# printed. Then one saturation round of SATURATION_S (default 60) seconds
# at 256 clients on each.
#
# Every run also counts its failed requests and the leader changes during
# it (qraft-kv: qraft_leader_changes_total; etcd:
# etcd_server_leader_changes_seen_total; the largest increase over the
# members). On a healthy cluster both must be 0 for both servers; the
# script exits 1 if qraft-kv's are not.
#
# Plots (gnuplot-nox, installed when missing): puts/s by clients and the
# latency distributions of four levels, PNG files in BUILD_DIR/bench/.
#
# Baselines measured in the same run: bench_node (three nodes in one
# process, no HTTP, no state machine): the fdatasync + loopback round-trip
# floor and the node's proposals/s and p50 at 1 and 16 in flight.
#
#   scripts/bench_kv.sh [BUILD_DIR]      (default build; needs bin/qraft-kv,
#                                         bin/qraft-keygen, bin/bench_node)
# Bounded: about 5 minutes; bench_node is cut after 120 s and each client
# run after SATURATION_S + 60 s. The members and the folder are removed on
# exit, also on failure or interrupt. Without etcd (no apt, no network) the
# qraft-kv half still runs and the etcd columns say why they are empty.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build}
REPEATS=${REPEATS:-3}
SATURATION_S=${SATURATION_S:-60}
BIN=$dir/bin
for b in qraft-kv qraft-keygen bench_node; do
  [ -x "$BIN/$b" ] || { echo "bench_kv: $BIN/$b is not built" >&2; exit 1; }
done
KV=$BIN/qraft-kv
mkdir -p "$dir/bench-kv"
PLOT_DIR=$dir/bench # the plots and their data
rm -rf "$PLOT_DIR"
mkdir -p "$PLOT_DIR"
D=$(mktemp -d "$dir/bench-kv/run.XXXXXX")
source scripts/ports.sh
pick_base # a free block below the ephemeral range
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
http() { echo "http://127.0.0.1:$((BASE + 80 + $1))"; }   # qraft-kv member i
ehttp() { echo "http://127.0.0.1:$((BASE + 40 + $1))"; }  # etcd member i

# ---- etcd, installed when missing (bench only) ----
ETCD=$(command -v etcd || true)
if [ -z "$ETCD" ] && [ -x /usr/bin/apt-get ] && [ "$(id -u)" = 0 ]; then
  echo "bench_kv: installing Debian's etcd-server for the comparison" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q etcd-server >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null 2>&1 &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q etcd-server >/dev/null 2>&1; } || true
  ETCD=$(command -v etcd || true)
fi
ETCD_WHY=""
[ -n "$ETCD" ] || ETCD_WHY="etcd is not installed and could not be (apt-get install etcd-server)"
# etcd's gRPC client (its fast path): bench/etcd/grpcload.go, built in GOPATH
# mode against Debian's golang-etcd-server-dev (nothing downloaded).
GRPC=""
GRPC_WHY="no etcd"
if [ -n "$ETCD" ]; then
  # shellcheck source=go_etcd.sh
  source scripts/go_etcd.sh
  GRPC_WHY=""
  GRPC=$dir/bench-etcd/grpcload
  go_etcd_build bench/etcd/grpcload.go "$GRPC" || { GRPC_WHY=$GO_ETCD_WHY; GRPC=""; }
fi

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

# ---- the clusters ----
for i in 1 2 3; do "$BIN/qraft-keygen" "$D/k$i" >"$D/id$i"; done
M="$(cat "$D/id1")@127.0.0.1:$((BASE + 1)),$(cat "$D/id2")@127.0.0.1:$((BASE + 2))"
M="$M,$(cat "$D/id3")@127.0.0.1:$((BASE + 3))"
for i in 1 2 3; do
  setsid "$KV" serve --quiet --data "$D/n$i" --key "$D/k$i" \
    --raft "127.0.0.1:$((BASE + i))" --http "127.0.0.1:$((BASE + 80 + i))" \
    --bootstrap "$M" >>"$D/log$i" 2>&1 &
  PID[$i]=$!
done
if [ -n "$ETCD" ]; then
  EC=""
  for i in 1 2 3; do EC="$EC${EC:+,}e$i=http://127.0.0.1:$((BASE + 50 + i))"; done
  for i in 1 2 3; do
    setsid "$ETCD" --name "e$i" --data-dir "$D/e$i" \
      --listen-client-urls "$(ehttp "$i")" --advertise-client-urls "$(ehttp "$i")" \
      --listen-peer-urls "http://127.0.0.1:$((BASE + 50 + i))" \
      --initial-advertise-peer-urls "http://127.0.0.1:$((BASE + 50 + i))" \
      --initial-cluster "$EC" --initial-cluster-state new \
      --initial-cluster-token "bench-$$" --logger zap --log-level error \
      >>"$D/loge$i" 2>&1 &
    PID[e$i]=$!
  done
fi
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
[ -n "$L" ] || fail "no qraft-kv leader elected"
EL=""
if [ -n "$ETCD" ]; then
  for _ in $(seq 200); do
    for i in 1 2 3; do
      st=$(curl -s -m 1 -X POST "$(ehttp "$i")/v3/maintenance/status" -d '{}' || true)
      if [ -n "$st" ] && [ "$(jq -r '.leader // empty' <<<"$st")" = \
           "$(jq -r '.header.member_id // "x"' <<<"$st")" ]; then
        EL=$i
        break 2
      fi
    done
    sleep 0.05
  done
  [ -n "$EL" ] || { ETCD_WHY="etcd elected no leader (logs: $D/loge*)"; ETCD=""; }
fi
sleep 0.5 # the members register their HTTP addresses
timeout 30 "$KV" bench --clients 4 --count 400 --server "$(http "$L")" >/dev/null ||
  fail "warm-up puts"
if [ -n "$ETCD" ]; then
  timeout 30 "$KV" bench --target etcd --clients 4 --count 400 --server "$(ehttp "$EL")" \
    >/dev/null || fail "warm-up puts on etcd"
fi

# changes TARGET: the largest leader-change counter over the members
changes() {
  local t=$1 best=0 v i
  for i in 1 2 3; do
    if [ "$t" != qraft-kv ]; then
      v=$(curl -s -m 2 "$(ehttp "$i")/metrics" |
          awk '$1 == "etcd_server_leader_changes_seen_total" {print int($2)}')
    else
      v=$(curl -s -m 2 "$(http "$i")/metrics" |
          awk '$1 == "qraft_leader_changes_total" {print int($2)}')
    fi
    [ -n "$v" ] && [ "$v" -gt "$best" ] && best=$v
  done
  echo "$best"
}
# Where a write's time goes on qraft-kv's leader: the mean of each stage
# histogram (docs/node.md, "Where the time of a write goes") over a run,
# from the leader's /metrics before and after it.
STAGE_NAMES="kv_write_http_in write_queued write_to_wal write_wal_sync write_quorum write_apply write_callback kv_write_http_out kv_write"
stage_means() { # stage_means BEFORE AFTER: the means in us, in STAGE_NAMES order
  awk -v names="$STAGE_NAMES" '
    FNR == 1 { f++ }
    /^qraft_[a-z_]*_seconds_(sum|count) / { v[f, $1] = $2 }
    END {
      n = split(names, a, " ")
      for (i = 1; i <= n; i++) {
        s = "qraft_" a[i] "_seconds_sum"; c = "qraft_" a[i] "_seconds_count"
        dc = v[2, c] - v[1, c]
        printf "%s%s", (i > 1 ? " " : ""), (dc > 0 ? sprintf("%.0f", (v[2, s] - v[1, s]) / dc * 1e6) : "-")
      }
      print ""
    }' "$1" "$2"
}
# one TARGET OP CLIENTS (--count N | --seconds S): "rate p50 p99 max failed changes"
one() {
  local t=$1 op=$2 c=$3 url out c0 c1
  shift 3
  if [ "$t" = qraft-kv ]; then url=$(http "$L"); else url=$(ehttp "$EL"); fi
  if [ "$t" = qraft-kv ] && [ "$op" = put ]; then
    curl -s -m 5 "$url/metrics" >"$D/m0" || true
  fi
  c0=$(changes "$t")
  # exits 1 when a request failed: counted in the failed column
  # the latency distribution of the last run of each series and level
  local q="$PLOT_DIR/$t-$op-$c.q"
  if [ "$t" = etcd-grpc ]; then
    out=$(timeout $((SATURATION_S + 60)) "$GRPC" --op "$op" --clients "$c" "$@" \
            --quantiles "$q" --server "${url#http://}" 2>/dev/null) || true
  else
    out=$(timeout $((SATURATION_S + 60)) "$KV" bench --target "$t" --op "$op" \
            --clients "$c" "$@" --quantiles "$q" --server "$url" 2>/dev/null) || true
  fi
  grep -q 'failed$' <<<"$out" || fail "bench --target $t --op $op --clients $c: $out"
  if [ "$t" = qraft-kv ] && [ "$op" = put ]; then
    curl -s -m 5 "$url/metrics" >"$D/m1" || true
    stage_means "$D/m0" "$D/m1" >"$PLOT_DIR/stages-$c.txt"
  fi
  c1=$(changes "$t")
  # bench: C clients, N puts of B bytes in S s: R puts/s, p50 X ms, p99 Y ms, max Z ms, F failed
  echo "$(sed -E 's/.*: ([0-9]+) [a-z]+\/s, p50 ([0-9.]+) ms, p99 ([0-9.]+) ms, max ([0-9.]+) ms, ([0-9]+) failed.*/\1 \2 \3 \4 \5/' <<<"$out") $((c1 - c0))"
}
# level OP CLIENTS COUNT: REPEATS rounds, the servers alternating; sets
# Q (qraft-kv), E (etcd, JSON gateway) and G (etcd, gRPC) to the median
# runs, with the failures and leader changes of all runs summed into the
# last two fields.
level() {
  local op=$1 c=$2 n=$3 qrows="" erows="" grows=""
  for _ in $(seq "$REPEATS"); do
    qrows+=$(one qraft-kv "$op" "$c" --count "$n")$'\n'
    if [ -n "$ETCD" ]; then erows+=$(one etcd "$op" "$c" --count "$n")$'\n'; fi
    if [ -n "$GRPC" ]; then grows+=$(one etcd-grpc "$op" "$c" --count "$n")$'\n'; fi
  done
  Q=$(median "${qrows%$'\n'}")
  E=$([ -n "$ETCD" ] && median "${erows%$'\n'}" || echo "- - - - - -")
  G=$([ -n "$GRPC" ] && median "${grows%$'\n'}" || echo "- - - - - -")
}
median() {
  local rows=$1 m f ch
  m=$(sort -n <<<"$rows" | sed -n "$(( (REPEATS + 1) / 2 ))p")
  f=$(awk '{s += $5} END {print s}' <<<"$rows")
  ch=$(awk '{s += $6} END {print s}' <<<"$rows")
  awk -v f="$f" -v ch="$ch" '{print $1, $2, $3, $4, f, ch}' <<<"$m"
}
level put 1 1000;   Q1=$Q;  E1=$E;  G1=$G
level put 16 8000;  Q16=$Q; E16=$E; G16=$G
level put 64 16000; Q64=$Q; E64=$E; G64=$G
level get 64 32000; QG=$Q;  EG=$E;  GG=$G
QS=$(one qraft-kv put 256 --seconds "$SATURATION_S")
ES="- - - - - -"
GS="- - - - - -"
[ -n "$ETCD" ] && ES=$(one etcd put 256 --seconds "$SATURATION_S")
[ -n "$GRPC" ] && GS=$(one etcd-grpc put 256 --seconds "$SATURATION_S")

# ---- the report ----
r() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0 || b == "-" || a == "-") print "-"; else printf "%.2fx", a / b }'; }
echo "bench_kv: 3 qraft-kv members and 3 etcd members ($(${ETCD:-false} --version 2>/dev/null | head -1 || true)) on loopback,"
echo "  syncs on, default settings; HTTP/1.1 keep-alive, 256-byte values, one request at a"
echo "  time per client, to the leader; median of $REPEATS runs, the servers alternating"
[ -n "$ETCD_WHY" ] && echo "  etcd: none this run: $ETCD_WHY"
echo "  baseline (this run, bench_node): fdatasync p50 ${sync_us} us, UDP round trip p50 ${rtt_us} us,"
echo "    floor ${floor_us} us; node alone: 1 in flight ${node1_rate}/s p50 ${node1_p50} us,"
echo "    16 in flight ${node16_rate}/s p50 ${node16_p50} us"
[ -n "$GRPC_WHY" ] && echo "  etcd's gRPC client: none this run: $GRPC_WHY"
printf '  %-16s | %7s %6s %6s %4s %3s | %7s %6s %6s %4s %3s | %7s %6s %6s %4s %3s | %6s %6s\n' workload \
  "qraft/s" "p50" "p99" fail chg "gw/s" "p50" "p99" fail chg "grpc/s" "p50" "p99" fail chg "ops" "p99"
row() {
  local name=$1 q e g b
  read -ra q <<<"$2"; read -ra e <<<"$3"; read -ra g <<<"$4"
  # the faster of etcd's two paths
  b=("${e[@]}")
  if [ "${g[0]}" != - ] && { [ "${e[0]}" = - ] || [ "${g[0]}" -gt "${e[0]}" ]; }; then b=("${g[@]}"); fi
  printf '  %-16s | %7s %6s %6s %4s %3s | %7s %6s %6s %4s %3s | %7s %6s %6s %4s %3s | %6s %6s\n' "$name" \
    "${q[0]}" "${q[1]}" "${q[2]}" "${q[4]}" "${q[5]}" "${e[0]}" "${e[1]}" "${e[2]}" "${e[4]}" "${e[5]}" \
    "${g[0]}" "${g[1]}" "${g[2]}" "${g[4]}" "${g[5]}" "$(r "${q[0]}" "${b[0]}")" "$(r "${b[2]}" "${q[2]}")"
}
row "put, 1 client" "$Q1" "$E1" "$G1"
row "put, 16" "$Q16" "$E16" "$G16"
row "put, 64" "$Q64" "$E64" "$G64"
row "get, 64" "$QG" "$EG" "$GG"
row "put, 256, ${SATURATION_S} s" "$QS" "$ES" "$GS"
echo "  gw: etcd through its JSON gateway, grpc: through its Go client; p50 and p99 in ms;"
echo "  fail: failed requests, chg: leader changes, summed over the $REPEATS runs of a level;"
echo "  ops: qraft-kv's ops/s over the faster etcd path's; p99: that path's p99 over"
echo "  qraft-kv's (above 1: qraft-kv's clients wait less)."
echo "  where a qraft-kv write's time goes on the leader, mean us over the last run of a level"
echo "  (headers -> proposed -> taken by the loop -> handed to the WAL and sent -> durable"
echo "  here -> committed -> applied -> callback returned -> answer queued; total):"
printf '  %-16s | %7s %7s %7s %7s %7s %7s %7s %7s | %7s\n' clients http_in queued to_wal \
  wal_sync quorum apply cb http_out total
for c in 1 16 64 256; do
  [ -f "$PLOT_DIR/stages-$c.txt" ] || continue
  read -ra sm <"$PLOT_DIR/stages-$c.txt"
  printf '  %-16s | %7s %7s %7s %7s %7s %7s %7s %7s | %7s\n' "put, $c" "${sm[@]}"
done
# ---- the plots (gnuplot, installed when missing: bench only) ----
{
  echo "# clients qraft-kv etcd-gateway etcd-grpc: puts/s, the median run"
  for l in 1 16 64; do
    v=Q$l; e=E$l; g=G$l
    read -ra a <<<"${!v}"; read -ra b <<<"${!e}"; read -ra c <<<"${!g}"
    echo "$l ${a[0]} ${b[0]/-/NaN} ${c[0]/-/NaN}"
  done
} >"$PLOT_DIR/kv-puts.dat"
if ! command -v gnuplot >/dev/null && [ -x /usr/bin/apt-get ] && [ "$(id -u)" = 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q gnuplot-nox >/dev/null 2>&1 || true
fi
if command -v gnuplot >/dev/null; then
  when="$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs"
  cdf() { # cdf OP CLIENTS TITLE: the latency distributions of one level
    local f="$PLOT_DIR/kv-$1-$2.png" plots=""
    local t name
    for t in qraft-kv etcd etcd-grpc; do
      [ -s "$PLOT_DIR/$t-$1-$2.q" ] || continue
      case $t in etcd) name="etcd, JSON gateway" ;; etcd-grpc) name="etcd, gRPC" ;; *) name=$t ;; esac
      plots="$plots${plots:+, }'$PLOT_DIR/$t-$1-$2.q' using 2:1 with lines lw 2 title '$name'"
    done
    [ -n "$plots" ] || return 0
    gnuplot -e "set terminal pngcairo size 800,500; set output '$f';
      set title '$3, latency distribution ($when)'; set logscale x;
      set xlabel 'latency, ms (log)'; set ylabel 'fraction of requests';
      set key bottom right; set grid; plot $plots" 2>"$D/gnuplot.err" ||
      echo "  plot $f: $(head -1 "$D/gnuplot.err")"
  }
  gnuplot -e "set terminal pngcairo size 800,500; set output '$PLOT_DIR/kv-puts.png';
    set title '256-byte puts by clients, one request at a time each ($when)';
    set logscale x 2; set xlabel 'clients'; set ylabel 'puts/s'; set key top left;
    set grid; set xrange [0.8:80];
    plot '$PLOT_DIR/kv-puts.dat' using 1:2 with linespoints lw 2 title 'qraft-kv',
         '' using 1:3 with linespoints lw 2 title 'etcd, JSON gateway',
         '' using 1:4 with linespoints lw 2 title 'etcd, gRPC'" 2>"$D/gnuplot.err" ||
    echo "  plot kv-puts.png: $(head -1 "$D/gnuplot.err")"
  cdf put 1 "puts, 1 client"
  cdf put 64 "puts, 64 clients"
  cdf get 64 "linearizable gets, 64 clients"
  cdf put 256 "puts, 256 clients for ${SATURATION_S} s"
  echo "  plots: $(cd "$PLOT_DIR" && ls -- *.png | tr '\n' ' ')in $PLOT_DIR"
else
  echo "  plots: none (gnuplot is not installed and could not be)"
fi
read -ra qs <<<"$QS"
echo "  saturation: qraft-kv max latency ${qs[3]} ms; node alone 1 in flight ${node1_rate}/s"
bad=$(awk '{f += $5; c += $6} END {print f + c}' <<<"$Q1"$'\n'"$Q16"$'\n'"$Q64"$'\n'"$QG"$'\n'"$QS")
if [ "$bad" != 0 ]; then
  echo "bench_kv: qraft-kv failed requests or changed leader on a healthy cluster" >&2
  exit 1
fi
