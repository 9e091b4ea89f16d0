# Shared helpers of the qraft-kv end-to-end tests (sourced). Members are
# numbered 1..N; member i has Raft port BASE+i and HTTP port BASE+80+i on
# 127.0.0.1 (or on the address set in IP[i]), its data in $D/n$i.
set -Eeuo pipefail
: "${QRAFT_KV:?}" "${QRAFT_KEYGEN:?}" "${QRAFT_LINCHECK:?}" "${QRAFT_E2E_OUT:?}"
KV=$QRAFT_KV
mkdir -p "$QRAFT_E2E_OUT"
D=$(mktemp -d /tmp/qraft-e2e.XXXXXX)
# BASE: a block of 100 ports below the ephemeral range (ip_local_port_range),
# where no client connection (of this test or of another running at the
# same time) can hold a port and make a member's bind fail, from a
# pid-derived start that no socket uses.
source "$(dirname "${BASH_SOURCE[0]}")/../../../scripts/ports.sh"
pick_base
declare -A PID IP NS
START_S=$(date +%s)
cleanup_extra() { :; }
cleanup() {
  for i in "${!PID[@]}"; do kill -CONT "${PID[$i]}" 2>/dev/null || true; kill -9 "${PID[$i]}" 2>/dev/null || true; done
  cleanup_extra # before the wait: it may resume and end a stopped child
  wait 2>/dev/null || true
  rm -rf "$D"
}
trap cleanup EXIT
trap 'echo "FAILED: command at ${BASH_SOURCE[0]##*/}:$LINENO exited $?" >&2' ERR
log() { echo "[$(( $(date +%s) - START_S ))s] $*"; }
fail() {
  echo "FAILED: $*" >&2
  for f in "$D"/log*; do [ -f "$f" ] && { echo "--- $f" >&2; tail -20 "$f" >&2; }; done
  exit 1
}
ms() { echo $(( $(date +%s%N) / 1000000 )); }
host() { echo "${IP[$1]:-127.0.0.1}"; }
http() { echo "http://$(host "$1"):$((BASE + 80 + $1))"; }
raft() { echo "$(host "$1"):$((BASE + $1))"; }
# curl to member $1 (from the test's own namespace)
AUTH=()  # set to (-H "Authorization: Bearer TOKEN") when members need a token
kcurl() { local i=$1; shift; curl -s -m 3 "${AUTH[@]}" "$@"; }
status() { kcurl "$1" "$(http "$1")/v1/status" || true; }
field() { status "$1" | jq -r ".$2 // empty" 2>/dev/null || true; }
keygen() { "$QRAFT_KEYGEN" "$D/k$1" >"$D/id$1"; }
start() { # start N [serve options...]; PID[N] is the server itself
  local i=$1; shift
  local pre=()
  [ -n "${NS[$i]:-}" ] && pre=(ip netns exec "${NS[$i]}")
  "${pre[@]}" setsid "$KV" serve --quiet --data "$D/n$i" --key "$D/k$i" --raft "$(raft "$i")" \
    --http "$(host "$i"):$((BASE + 80 + i))" "$@" >>"$D/log$i" 2>&1 &
  PID[$i]=$!
}
stop9() { kill -9 "${PID[$1]}" 2>/dev/null || true; wait "${PID[$1]}" 2>/dev/null || true; unset "PID[$1]"; }
members_arg() { local s=""; for i in "$@"; do s="$s${s:+,}$(cat "$D/id$i")@$(raft "$i")"; done; echo "$s"; }
leader() { # leader MEMBER...: the number of a member that says it leads
  for i in "$@"; do [ "$(field "$i" role)" = leader ] && { echo "$i"; return 0; }; done
  return 1
}
wait_leader() { for _ in $(seq 300); do leader "$@" && return 0; sleep 0.05; done; return 1; }
digest() { kcurl "$1" "$(http "$1")/v1/digest" | jq -r '"\(.digest) \(.keys)"'; }
# A digest reads the whole state (seconds per GiB; a sanitizer build is
# slow): one at a time, with time to finish (an abandoned one still holds
# a server thread). BIG_DIGEST_S (60) per digest, BIG_CONVERGE_S (120) in
# all.
bigdigest() {
  curl -s -m "${BIG_DIGEST_S:-60}" "${AUTH[@]}" "$(http "$1")/v1/digest" 2>/dev/null |
    jq -r '"\(.digest) \(.keys)"' 2>/dev/null || true
}
converged_big() { # converged_big MEMBER...: the same digest on all
  local end=$(( $(date +%s) + ${BIG_CONVERGE_S:-120} ))
  while [ "$(date +%s)" -lt "$end" ]; do
    local first="" same=1 i d
    for i in "$@"; do
      d=$(bigdigest "$i")
      [ -z "$first" ] && first=$d
      { [ -n "$d" ] && [ "$d" = "$first" ]; } || same=0
    done
    [ $same = 1 ] && return 0
    sleep 0.1
  done
  return 1
}
converged() { # converged MEMBER...: same digest on all, within 15 s
  for _ in $(seq 300); do
    local first="" same=1
    for i in "$@"; do
      local d; d=$(digest "$i" 2>/dev/null || true)
      [ -z "$first" ] && first=$d
      { [ -n "$d" ] && [ "$d" = "$first" ]; } || same=0
    done
    [ $same = 1 ] && return 0
    sleep 0.05
  done
  return 1
}
no_sanitizer_reports() {
  if grep -l -E 'AddressSanitizer|UndefinedBehaviorSanitizer|ThreadSanitizer|runtime error:' "$D"/log* 2>/dev/null; then
    fail "sanitizer report in a member's log"
  fi
}
