#!/usr/bin/env bash
# The power-cut shim and qraft-powercut on their own, with dd and sync as the
# writing process: a synced write survives a cut, an unsynced one is undone
# (a whole one, a torn one page by page, a file extension), a write through
# an O_DSYNC descriptor is durable at once, and a file outside the folder
# is never touched.
#   test_shim.sh SHIM QRAFT_POWERCUT
set -euo pipefail
SHIM=$1 PC=$2
T=$(mktemp -d /tmp/qraft-powercut-shim.XXXXXX)
trap 'rm -rf "$T"' EXIT
mkdir -p "$T/d" "$T/u"
fail() { echo "FAILED: $*" >&2; exit 1; }
shimmed() { QRAFT_POWERCUT_DIR="$T/d" QRAFT_POWERCUT_UNDO="$T/u" LD_PRELOAD="$SHIM" "$@"; }
page() { # page BYTE: 4096 bytes of one value
  head -c 4096 /dev/zero | tr '\0' "\\$(printf '%03o' "$1")"
}
put() { # put FILE PAGE_NO BYTE [dd flags...]: one page through the shim
  local f=$1 p=$2 b=$3; shift 3
  page "$b" | shimmed dd of="$f" bs=4096 seek="$p" count=1 conv=notrunc "$@" status=none
}
sum() { cksum <"$1" | cut -d' ' -f1; }
rollback() { "$PC" rollback --dir "$T/d" --undo "$T/u" "$@" >/dev/null; }

f=$T/d/f
put "$f" 0 1; put "$f" 1 1
shimmed sync --data "$f"
synced=$(sum "$f")

# an unsynced overwrite is undone; the synced bytes stay
put "$f" 1 2
rollback --mode all
[ "$(sum "$f")" = "$synced" ] || fail "an unsynced overwrite survived the cut"

# an unsynced extension is undone, size and all
put "$f" 5 3
rollback --mode all
[ "$(stat -c %s "$f")" = 8192 ] || fail "size $(stat -c %s "$f") after undoing an extension, not 8192"

# a write through an O_DSYNC descriptor is durable
put "$f" 0 4 oflag=dsync
dsynced=$(sum "$f")
rollback --mode all
[ "$(sum "$f")" = "$dsynced" ] || fail "a write through O_DSYNC was undone"

# torn: each page ends as one of its versions, and some seed mixes them
mixed=0
for seed in $(seq 1 16); do
  put "$f" 0 5; put "$f" 1 6
  rollback --mode torn --seed "$seed"
  p0=$(head -c 4096 "$f" | od -An -v -tu1 | tr -s ' \n' '\n' | sort -u | grep -v '^$' | tr '\n' ' ')
  p1=$(tail -c 4096 "$f" | od -An -v -tu1 | tr -s ' \n' '\n' | sort -u | grep -v '^$' | tr '\n' ' ')
  case "$p0" in "4 "|"5 ") ;; *) fail "seed $seed: page 0 holds bytes $p0, neither version" ;; esac
  case "$p1" in "1 "|"6 ") ;; *) fail "seed $seed: page 1 holds bytes $p1, neither version" ;; esac
  { [ "$p0" = "4 " ] && [ "$p1" = "6 " ]; } || { [ "$p0" = "5 " ] && [ "$p1" = "1 " ]; } && mixed=1
  shimmed sync --data "$f" # start the next seed from what is on disk now
  put "$f" 0 4; put "$f" 1 1; shimmed sync --data "$f"
done
[ $mixed = 1 ] || fail "no seed of 16 tore the two pages apart"

# a file outside the folder is not logged
logs=$(ls "$T/u" | wc -l)
page 7 | shimmed dd of="$T/outside" bs=4096 count=1 status=none
[ "$(ls "$T/u" | wc -l)" = "$logs" ] || fail "a write outside the folder was logged"
echo "shim test passed"
