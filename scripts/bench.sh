#!/usr/bin/env bash
# make bench: runs every benchmark binary of the release build, then the
# qraft-kv end-to-end benchmark (scripts/bench_kv.sh). Each one measures its
# own baseline in the same run and prints ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build}
found=0
for b in "$dir"/bin/bench_*; do
  [ -x "$b" ] || continue
  found=1
  echo "== $(basename "$b")"
  "$b"
done
if [ $found -eq 0 ]; then
  echo "no benchmarks built in $dir/bin" >&2
  exit 1
fi
echo "== bench_kv"
bash scripts/bench_kv.sh "$dir"
