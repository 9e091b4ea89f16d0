#!/usr/bin/env bash
# full_release.sh BUILD_DIR SEEDS [START]: the full-stack simulation
# (qraft-sim --full) over SEEDS seeds from START (default 1) with the
# release build in BUILD_DIR. Under ASan a seed takes seconds, so `make
# test` runs only a few there (tests/sim/CMakeLists.txt) and the many here.
# A failure prints the command that replays its seed.
set -euo pipefail
dir=$1
n=$2
start=${3:-1}
jobs=${JOBS:-$(nproc)}
sim="$dir/bin/qraft-sim"
[ -x "$sim" ] || { echo "full_release.sh: no $sim (make release first)" >&2; exit 1; }
echo "== qraft-sim --full: seeds $start..$((start + n - 1)) (replay one: $sim --full --seed S --trace)"
"$sim" --full --seeds "$n" --start "$start" --jobs "$jobs"
# Steady seeds (a healthy network, stalls only): leadership must not move
# without a long stall of its leader. A fifth as many.
steady=$(( n / 5 > 0 ? n / 5 : 1 ))
echo "== qraft-sim --full --steady: seeds $start..$((start + steady - 1)) (replay one: $sim --full --steady --seed S --trace)"
"$sim" --full --steady --seeds "$steady" --start "$start" --jobs "$jobs"
