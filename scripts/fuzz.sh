#!/usr/bin/env bash
# fuzz.sh build TREE           build the libFuzzer targets into build/fuzz/
# fuzz.sh smoke TREE SECONDS   replay each committed corpus, then fuzz each
#                              target for SECONDS (what `make test` runs)
# fuzz.sh run TREE SECONDS     fuzz each target for SECONDS (make fuzz)
# Targets are built with clang, ASan and UBSan. A finding fails the run and
# leaves the crashing input in build/fuzz/work-<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=$1
tree=$2
secs=${3:-600}
cmake -S . -B "$tree" -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DCMAKE_BUILD_TYPE=Debug -DQRAFT_FUZZ=ON -DQRAFT_SANITIZE=asan \
  -DQRAFT_BUILD_BENCH=OFF -DQRAFT_BUILD_TESTS=ON -DCMAKE_C_FLAGS=-O1 \
  -DCMAKE_CXX_FLAGS=-O1 >/dev/null
cmake --build "$tree" -j "$(nproc)" --target fuzz_all
[ "$mode" = build ] && exit 0
shopt -s nullglob
targets=(build/fuzz/fuzz_*)
if [ ${#targets[@]} -eq 0 ]; then
  echo "fuzz.sh: no fuzz targets are built yet"
  exit 0
fi
for f in "${targets[@]}"; do
  [ -x "$f" ] || continue
  name=$(basename "$f")
  corpus=tests/fuzz/corpus/${name#fuzz_}
  work=build/fuzz/work-${name#fuzz_}
  mkdir -p "$work"
  if [ "$mode" = smoke ]; then
    echo "== $name: replay $corpus"
    "$f" -runs=0 "$corpus"
  fi
  echo "== $name: fuzz ${secs}s (seed corpus $corpus, new inputs in $work)"
  "$f" -max_total_time="$secs" -print_final_stats=1 -artifact_prefix="$work/" \
    "$work" "$corpus"
done
