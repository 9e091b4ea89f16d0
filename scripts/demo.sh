#!/usr/bin/env bash
# make demo: the best demonstration of what qraft can do today. Every line
# it prints comes from a program it runs; it exits non-zero if a step fails.
#
# Until the node and qraft-kv exist (issues 7 and 9), this tours the parts
# that do: the Raft core under the deterministic simulator, the write-ahead
# log under real SIGKILLs, and the wire codec's debugging tool.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=build/bin
for b in qraft-sim qraft-crashtest qraft-wire; do
  [ -x "$BIN/$b" ] || { echo "demo: $BIN/$b is not built (run make)" >&2; exit 1; }
done
seed=$(( $(date +%s) % 100000 + 1 ))

echo "== 1. One simulated Raft cluster, seed $seed"
echo "   (a random cluster with random faults; every step is checked;"
echo "    replay with: $BIN/qraft-sim --seed $seed --trace)"
"$BIN/qraft-sim" --seed "$seed" --summary
echo

echo "== 2. 300 more seeds, two at a time; each prints a replay command if it fails"
"$BIN/qraft-sim" --seeds 300 --start "$((seed + 1))" --jobs 2
echo

echo "== 3. The write-ahead log, SIGKILLed 30 times while it writes"
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
"$BIN/qraft-crashtest" --kills 30 --dir "$d"
echo

echo "== 4. A frame of Raft messages from the fuzz seed corpus, decoded by qraft-wire"
"$BIN/qraft-wire" decode --frame tests/fuzz/corpus/frame/mixed | head -20
echo "   ... ($("$BIN/qraft-wire" decode --frame tests/fuzz/corpus/frame/mixed | grep -c '^  message') messages in the frame)"
echo
echo "demo passed"
