#!/usr/bin/env bash
# qraft-lincheck's exit codes: 0 linearizable, 1 not, 2 unknown or error.
# Usage: lincheck_cli_test.sh QRAFT_LINCHECK_BINARY DATA_DIR
set -u
bin=$1
data=$2
failed=0

expect() {
  local want=$1 grep_for=$2
  shift 2
  local out
  out=$("$bin" "$@" 2>&1)
  local got=$?
  if [ "$got" -ne "$want" ]; then
    echo "FAIL: qraft-lincheck $* exited $got, want $want"
    echo "$out"
    failed=1
  elif [ -n "$grep_for" ] && ! grep -qF -- "$grep_for" <<<"$out"; then
    echo "FAIL: qraft-lincheck $* does not print '$grep_for':"
    echo "$out"
    failed=1
  else
    echo "ok: qraft-lincheck $* -> $got"
  fi
}

expect 0 "linearizable: 7 operations on 2 keys" "$data/linearizable.jsonl"
expect 0 "" --quiet "$data/linearizable.jsonl"
expect 1 'cannot be placed next' "$data/stale_read.jsonl"
expect 1 '#2 process 3 get "x": read "a" [500, 600]' "$data/stale_read.jsonl"
expect 2 "unknown: the step budget ran out after 1 steps" --steps 1 "$data/linearizable.jsonl"
expect 2 "line 2" "$data/malformed.jsonl"
expect 2 "open" "$data/no-such-file.jsonl"
expect 2 "usage" --steps
expect 2 "usage"
expect 2 "wants a number" --steps lots "$data/linearizable.jsonl"
exit $failed
