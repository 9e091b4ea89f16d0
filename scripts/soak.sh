#!/usr/bin/env bash
# make soak: the long runs that do not fit in `make test`.
#   SEEDS  simulator seeds (default 20000)   KILLS  crash-test kills (5000)
#   E2E_SECONDS  qraft-kv clients under faults (120)   CUTS  power cuts (60)
#   FULL_SEEDS  full-stack simulator seeds (qraft-sim --full; SEEDS / 5)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build}
SEEDS=${SEEDS:-20000}
KILLS=${KILLS:-5000}
FULL_SEEDS=${FULL_SEEDS:-$((SEEDS / 5))}
ran=0
if [ -x "$dir/bin/qraft-sim" ]; then
  start=$(( $(date +%s) % 1000000 * 100 ))
  echo "== qraft-sim: $SEEDS seeds from $start on $(nproc) cores"
  "$dir/bin/qraft-sim" --seeds "$SEEDS" --start "$start" --jobs "$(nproc)" \
    --progress 30
  ran=1
fi
if [ -x "$dir/bin/qraft-sim" ] && "$dir/bin/qraft-sim" --help 2>&1 | grep -q -- --full; then
  # from a start of its own: make test runs seeds 1..300
  start=$(( $(date +%s) % 1000000 * 100 + 1000 ))
  echo "== qraft-sim --full: $FULL_SEEDS seeds from $start on $(nproc) cores"
  "$dir/bin/qraft-sim" --full --seeds "$FULL_SEEDS" --start "$start" \
    --jobs "$(nproc)" --progress 60
fi
if [ -x "$dir/bin/qraft-crashtest" ]; then
  d=$(mktemp -d)
  trap 'rm -rf "$d"' EXIT
  echo "== qraft-crashtest: $KILLS kills"
  "$dir/bin/qraft-crashtest" --kills "$KILLS" --dir "$d"
  ran=1
fi
if [ -x "$dir/bin/qraft-kv" ] && [ -x "$dir/bin/qraft-lincheck" ]; then
  # The qraft-kv fault schedules with clients running longer (E2E_SECONDS).
  export QRAFT_KV="$dir/bin/qraft-kv" QRAFT_KEYGEN="$dir/bin/qraft-keygen" \
    QRAFT_LINCHECK="$dir/bin/qraft-lincheck" QRAFT_E2E_OUT="$dir/e2e" \
    QRAFT_E2E_SECONDS="${E2E_SECONDS:-120}"
  [ -x "$dir/tests/nfdelay" ] && export QRAFT_NFDELAY="$dir/tests/nfdelay"
  echo "== qraft-kv under faults, clients for $QRAFT_E2E_SECONDS s"
  bash tests/e2e/kv/faults.sh
  rc=0; bash tests/e2e/kv/partition.sh || rc=$?
  [ $rc = 0 ] || [ $rc = 77 ] || exit $rc
  echo "== the NAT lab: every pair of NAT types (tests/e2e/kv/natlab.sh)"
  rc=0; QRAFT_RELAY="$dir/bin/qraft-relay" QRAFT_NATLAB_MATRIX=full \
    bash tests/e2e/kv/natlab.sh || rc=$?
  [ $rc = 0 ] || [ $rc = 77 ] || exit $rc
  echo "== a member joins a ${BIG_STATE_MB:-2048} MiB state, with cut transfers"
  QRAFT_E2E_STATE_MB="${BIG_STATE_MB:-2048}" bash tests/e2e/kv/bigstate.sh
  # 16 GiB would need about 200 GB of disk here (four members, each with
  # its LMDB file and the WAL's snapshot file, and a temporary one while a
  # snapshot streams in): GROWTH_SIZES_MB="1024 4096 16384" on a larger disk.
  echo "== growth: 1 and 4 GiB of state (GROWTH_SIZES_MB)"
  GROWTH_SIZES_MB="${GROWTH_SIZES_MB:-1024 4096}" GROWTH_KEYS="${GROWTH_KEYS:-1000 100000 1000000}" \
    bash scripts/bench_growth.sh "$dir"
  ran=1
fi
if [ -x "$dir/bin/qraft-kv" ] && [ -x "$dir/bin/qraft-powercut" ]; then
  echo "== qraft-kv under power cuts: ${CUTS:-60} cuts"
  QRAFT_KV="$dir/bin/qraft-kv" QRAFT_KEYGEN="$dir/bin/qraft-keygen" \
    QRAFT_LINCHECK="$dir/bin/qraft-lincheck" QRAFT_E2E_OUT="$dir/e2e" \
    QRAFT_POWERCUT="$dir/bin/qraft-powercut" \
    QRAFT_POWERCUT_SHIM="$dir/lib/libqraft-powercut.so" \
    QRAFT_E2E_CUTS="${CUTS:-60}" bash tests/e2e/kv/powercut.sh
  ran=1
fi
[ $ran -eq 1 ] || { echo "nothing to soak yet" >&2; exit 1; }
