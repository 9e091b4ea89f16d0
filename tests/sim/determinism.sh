#!/usr/bin/env bash
# determinism.sh QRAFT_SIM N [FLAGS...]: runs N seeds twice each (in
# separate processes) and fails unless every run prints the same trace hash
# twice. FLAGS (such as --full) go to every run.
set -euo pipefail
sim=$1
n=$2
shift 2
flags=("$@")
start=$(( $(date +%s) % 100000 ))
seeds=()
for ((s = start; s < start + n; s++)); do seeds+=("$s"); done
# DET_SEEDS="A B": these seeds as well (e.g. seeds known to draw a feature)
read -ra extra <<< "${DET_SEEDS:-}"
seeds+=(${extra[@]+"${extra[@]}"})
echo "seeds ${seeds[*]} (replay one: $sim ${flags[*]:-} --seed S --trace)"
for s in "${seeds[@]}"; do
  a=$("$sim" ${flags[@]+"${flags[@]}"} --seed "$s" | sed -n 's/.*trace hash \([0-9a-f]*\).*/\1/p')
  b=$("$sim" ${flags[@]+"${flags[@]}"} --seed "$s" | sed -n 's/.*trace hash \([0-9a-f]*\).*/\1/p')
  if [ -z "$a" ]; then
    # a failing seed prints no hash: that is the swarm tests' business,
    # but the failure line must be the same twice
    a=$("$sim" ${flags[@]+"${flags[@]}"} --seed "$s" || true)
    b=$("$sim" ${flags[@]+"${flags[@]}"} --seed "$s" || true)
  fi
  if [ "$a" != "$b" ]; then
    echo "seed $s: trace hash $a, then $b: the run is not deterministic"
    exit 1
  fi
done
echo "${#seeds[@]} seeds gave the same trace hash twice"
