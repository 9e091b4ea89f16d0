#!/usr/bin/env bash
# The qraft-kv canaries of `make canaries`: builds qraft-kv once per planted
# bug (in the node, src/node/, as qraft-kv runs it) and checks that
# the power-cut test
# (powercut.sh) catches it within KV_CANARY_RUNS runs of KV_CANARY_CUTS cuts.
# Prints the check that caught it and the seed of that run.
#
#   tests/e2e/kv/canaries.sh [BUILD_DIR]     (default build/canary-kv)
set -euo pipefail
cd "$(dirname "$0")/../../.."
dir=${1:-build/canary-kv}
RUNS=${KV_CANARY_RUNS:-4}
CUTS=${KV_CANARY_CUTS:-6}
JOBS=${JOBS:-$(nproc)}
CANARIES=(
  NODE_COMPACT_PAST_DURABLE # install a snapshot, dropping the log, before LMDB holds it
)
missed=0
for c in "${CANARIES[@]}"; do
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DQRAFT_CANARY="$c" \
    -DQRAFT_BUILD_TESTS=OFF -DQRAFT_BUILD_BENCH=OFF >/dev/null
  cmake --build "$dir" -j "$JOBS" --target qraft-kv qraft-keygen qraft-lincheck \
    qraft-powercut qraft-powercut-shim >/dev/null
  caught=""
  for r in $(seq "$RUNS"); do
    out=$(QRAFT_KV="$dir/bin/qraft-kv" QRAFT_KEYGEN="$dir/bin/qraft-keygen" \
      QRAFT_LINCHECK="$dir/bin/qraft-lincheck" QRAFT_E2E_OUT="$dir/e2e" \
      QRAFT_POWERCUT="$dir/bin/qraft-powercut" \
      QRAFT_POWERCUT_SHIM="$dir/lib/libqraft-powercut.so" \
      QRAFT_E2E_CUTS="$CUTS" QRAFT_E2E_HIST="kv_canary_$c" \
      bash tests/e2e/kv/powercut.sh 2>&1) && continue
    seed=$(printf '%s\n' "$out" | sed -n 's/.*seed \([0-9]*\); replay.*/\1/p' | head -1)
    why=$(printf '%s\n' "$out" | grep -m1 '^FAILED' || true)
    caught="run $r, seed $seed: $why"
    break
  done
  if [ -n "$caught" ]; then
    printf 'canary %-28s caught in %s\n' "$c" "$caught"
  else
    printf 'canary %-28s NOT CAUGHT in %s runs of %s cuts\n' "$c" "$RUNS" "$CUTS"
    missed=$((missed + 1))
  fi
done
# leave the tree without a planted bug
cmake -S . -B "$dir" -DQRAFT_CANARY= >/dev/null
if [ $missed -gt 0 ]; then
  echo "$missed qraft-kv canaries were not caught"
  exit 1
fi
echo "every qraft-kv canary was caught"
