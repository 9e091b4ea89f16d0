#!/usr/bin/env bash
# make bench: runs every benchmark binary of the release build, then the
# qraft-kv end-to-end benchmark (scripts/bench_kv.sh). Each one measures its
# own baseline in the same run and prints ratios; bench_core is compared
# with etcd raft's RawNode run just before it (bench/etcd/rawnode.go, built
# against Debian's Go packages, installed when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build}
found=0
# etcd raft's RawNode in bench_core's workloads, measured in this run just
# before bench_core, which prints it beside our core (bench/etcd/rawnode.go).
source scripts/go_etcd.sh
etcd_raft=""
if go_etcd_build bench/etcd/rawnode.go "$dir/bench-etcd/rawnode"; then
  echo "== etcd raft 3.4 RawNode (bench/etcd/rawnode.go)"
  if "$dir/bench-etcd/rawnode" >"$dir/bench-etcd/rawnode.txt"; then
    cat "$dir/bench-etcd/rawnode.txt"
    etcd_raft=$dir/bench-etcd/rawnode.txt
  else
    echo "rawnode failed; bench_core compares with the reference figures"
  fi
else
  echo "== etcd raft: not run: $GO_ETCD_WHY (bench_core compares with the reference figures)"
fi
for b in "$dir"/bin/bench_*; do
  [ -x "$b" ] || continue
  found=1
  echo "== $(basename "$b")"
  if [ "$(basename "$b")" = bench_core ] && [ -n "$etcd_raft" ]; then
    "$b" --etcd "$etcd_raft"
  else
    "$b"
  fi
done
if [ $found -eq 0 ]; then
  echo "no benchmarks built in $dir/bin" >&2
  exit 1
fi
echo "== bench_kv"
bash scripts/bench_kv.sh "$dir"
echo "== bench_growth (qraft-kv as its data and membership grow)"
bash scripts/bench_growth.sh "$dir"
