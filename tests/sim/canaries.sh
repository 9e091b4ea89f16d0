#!/usr/bin/env bash
# make canaries: plant each known bug in turn (a build option), run the
# simulator, and fail unless every canary is caught within SEEDS seeds.
# Prints which checker caught each one and the seed that replays it.
#
#   tests/sim/canaries.sh [BUILD_DIR]     (default build/canary)
set -euo pipefail
cd "$(dirname "$0")/../.."
dir=${1:-build/canary}
SEEDS=${CANARY_SEEDS:-3000}
JOBS=${JOBS:-$(nproc)}
CANARIES=(
  COMMIT_PREVIOUS_TERM     # Figure 8: commit an old-term entry by counting
  VOTE_WITHOUT_LOG_CHECK   # grant votes without the up-to-date check (5.4.1)
  ACK_BEFORE_DURABLE       # acknowledge an append before it is durable
  READ_WITHOUT_QUORUM      # answer ReadIndex without confirming leadership
  NO_CHECK_QUORUM_STEP_DOWN # keep leading when check-quorum says step down
)
missed=0
for c in "${CANARIES[@]}"; do
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DQRAFT_CANARY="$c" \
    -DQRAFT_BUILD_TESTS=OFF -DQRAFT_BUILD_BENCH=OFF >/dev/null
  cmake --build "$dir" -j "$JOBS" --target qraft-sim >/dev/null
  out=$("$dir/bin/qraft-sim" --seeds "$SEEDS" --jobs "$JOBS" --expect-fail || true)
  line=$(printf '%s\n' "$out" | grep -m1 '^FAILED seed' || true)
  if [ -n "$line" ]; then
    seed=$(printf '%s\n' "$line" | awk '{print $3}' | tr -d ':')
    checker=$(printf '%s\n' "$line" | awk '{print $5}')
    printf 'canary %-26s caught by %-22s seed %s\n' "$c" "$checker" "$seed"
  else
    printf 'canary %-26s NOT CAUGHT in %s seeds\n' "$c" "$SEEDS"
    missed=$((missed + 1))
  fi
done
# leave the tree without a planted bug
cmake -S . -B "$dir" -DQRAFT_CANARY= >/dev/null
if [ $missed -gt 0 ]; then
  echo "$missed canaries were not caught"
  exit 1
fi
echo "every canary was caught"
