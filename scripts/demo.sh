#!/usr/bin/env bash
# make demo: the best demonstration of what qraft can do today. It shows only
# what it runs; it exits non-zero if any step fails.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=build/bin

if [ -x "$BIN/qraft-sim" ]; then
  echo "== qraft deterministic simulator: Raft clusters under faults =="
  seed=$(( $(date +%s) % 100000 ))
  echo "-- one run, seed $seed, printed as it goes (replay: $BIN/qraft-sim --seed $seed --trace)"
  "$BIN/qraft-sim" --seed "$seed" --summary
  echo "-- 200 seeds, each a random cluster with random faults, every step checked"
  "$BIN/qraft-sim" --seeds 200 --start "$seed" --jobs 2
  echo "demo passed"
  exit 0
fi

echo "qraft-sim is not built; nothing more to show than the unit tests." >&2
exit 1
