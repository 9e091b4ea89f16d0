#!/usr/bin/env bash
# fuzz.sh build TREE           build the libFuzzer targets into build/fuzz/
# fuzz.sh run TREE SECONDS     fuzz each target for SECONDS over its corpus
set -euo pipefail
cd "$(dirname "$0")/.."
mode=$1
tree=$2
cmake -S . -B "$tree" -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DCMAKE_BUILD_TYPE=Debug -DQRAFT_FUZZ=ON -DQRAFT_SANITIZE=asan \
  -DQRAFT_BUILD_BENCH=OFF -DQRAFT_BUILD_TESTS=ON -DCMAKE_C_FLAGS=-O1 \
  -DCMAKE_CXX_FLAGS=-O1 >/dev/null
cmake --build "$tree" -j "$(nproc)" --target fuzz_all
[ "$mode" = build ] && exit 0
secs=${3:-600}
for f in build/fuzz/fuzz_*; do
  name=$(basename "$f")
  corpus=tests/fuzz/corpus/${name#fuzz_}
  work=build/fuzz/work-${name#fuzz_}
  mkdir -p "$work"
  echo "== $name for ${secs}s (corpus $corpus, new inputs in $work)"
  "$f" -max_total_time="$secs" -print_final_stats=1 "$work" "$corpus"
done
