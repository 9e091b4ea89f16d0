#!/usr/bin/env bash
# The NAT lab: qraft-kv members, each in a network namespace of its own,
# behind a NAT of a given type (or none), and a qraft-relay in a "public"
# namespace. The members know each other by id and the relay only. For each
# case, a 3-member cluster runs under concurrent clients, and the test
# checks:
#   - the mapping each NAT really has, as the relay and the peers observe
#     it (not what the rules are assumed to do);
#   - the path each pair of members ends on: direct where the NAT types
#     allow it, the relay where they do not (symmetric against symmetric or
#     against port-restricted), and the time to the first direct path;
#   - that a direct path that dies (the NAT starts dropping the pair's
#     datagrams) falls back to the relay within a bound and goes direct
#     again once healed, and that a symmetric NAT's mappings flushed
#     (conntrack -F) give a direct path again;
#   - that Raft commits throughout, the clients' history is linearizable
#     and the members end with the same data.
#
# NAT types (iptables in the NAT's namespace, UDP):
#   none        the member has a public address (no NAT)
#   full        endpoint-independent mapping (the member's port, pinned by
#               SNAT) and endpoint-independent filtering (DNAT from anyone)
#   restricted  endpoint-independent mapping, address-and-port-dependent
#               filtering (conntrack: only replies get in)
#   symmetric   endpoint-dependent mapping (MASQUERADE --random-fully) and
#               address-and-port-dependent filtering
#
# QRAFT_NATLAB_CASES: the cases, each three types for members 1, 2 and 3;
# QRAFT_NATLAB_MATRIX=full: six cases that cover every pair of types (make
# soak). The default, for make test, is the short matrix: three cases, 7 of
# the 10 pairs, every relay pair among them.
# QRAFT_NATLAB_REPORT: a file the matrix is appended to (markdown rows).
# Needs root (network namespaces, iptables, conntrack): skipped otherwise.
source "$(dirname "$0")/lib.sh"
if [ "$(id -u)" != 0 ]; then echo "SKIPPED: needs root for network namespaces"; exit 77; fi
for t in ip iptables conntrack; do command -v $t >/dev/null || { echo "SKIPPED: $t not installed"; exit 77; }; done
: "${QRAFT_RELAY:?}"
SHORT="none,full,symmetric restricted,symmetric,restricted symmetric,symmetric,none"
FULL="$SHORT none,none,full full,full,restricted none,restricted,full"
CASES=${QRAFT_NATLAB_CASES:-$SHORT}
[ "${QRAFT_NATLAB_MATRIX:-}" = full ] && CASES=$FULL
DIRECT_WITHIN_S=${QRAFT_NATLAB_DIRECT_S:-15}   # first direct path
RELAY_HOLD_S=12      # a relay pair stays so through two rounds of pings
FALLBACK_WITHIN_S=15 # path_trust_ms (6.5 s) and a margin
UPGRADE_WITHIN_S=15  # path_retry_ms (5 s) and a margin
WL_SECONDS=${QRAFT_NATLAB_SECONDS:-30} # the clients, each case
TAG=$(( $$ % 250 ))
PUB="qlpub$TAG"
PUBNET="172.30.$TAG"   # NAT (or member) i's public address is .i
RELAY_IP="$PUBNET.200"
RPORT=$((BASE + 50))
declare -A NATNS TYPE PUBIP
cleanup_members() {
  for i in 1 2 3; do
    [ -n "${PID[$i]:-}" ] && stop9 "$i"
    ip netns del "qlm$TAG-$i" 2>/dev/null || true
    ip netns del "qln$TAG-$i" 2>/dev/null || true
    ip -n "$PUB" link del "lw$i" 2>/dev/null || true
  done
  # (a namespace's deletion finishes in the background: wait for its
  # veth's other end to go)
  for _ in $(seq 100); do
    ip -n "$PUB" link show 2>/dev/null | grep -q " lw[123]@" || break
    sleep 0.05
  done
}
cleanup_extra() {
  [ -n "${RELAY_PID:-}" ] && kill -9 "$RELAY_PID" 2>/dev/null || true
  cleanup_members
  ip netns del "$PUB" 2>/dev/null || true
}
in_pub() { ip netns exec "$PUB" "$@"; }
in_nat() { local i=$1; shift; ip netns exec "${NATNS[$i]}" "$@"; }

# Member i of type t: namespace qlm-i. Behind a NAT: qlm-i (10.66.i.2) on
# the LAN of qln-i (lan 10.66.i.1, wan $PUBNET.i); HTTP reachable at the
# NAT's public address (DNAT, TCP). No NAT: qlm-i on the public bridge at
# $PUBNET.i.
add_member() {
  local i=$1 t=$2 m="qlm$TAG-$1" n="qln$TAG-$1" port=$((BASE + $1))
  TYPE[$i]=$t
  PUBIP[$i]=$PUBNET.$i
  ip netns add "$m" || return 1
  ip -n "$m" link set lo up || return 1
  if [ "$t" = none ]; then
    ip -n "$m" link add eth0 type veth peer name "lw$i" netns "$PUB" || return 1
    ip -n "$PUB" link set "lw$i" master lbr up || return 1
    ip -n "$m" addr add "$PUBNET.$i/24" dev eth0 && ip -n "$m" link set eth0 up || return 1
    NS[$i]=$m
    IP[$i]=$PUBNET.$i
    NATNS[$i]=
    return 0
  fi
  ip netns add "$n" || return 1
  ip -n "$n" link add lan type veth peer name eth0 netns "$m" || return 1
  ip -n "$n" link add wan type veth peer name "lw$i" netns "$PUB" || return 1
  ip -n "$PUB" link set "lw$i" master lbr up || return 1
  ip -n "$n" addr add "10.66.$i.1/24" dev lan && ip -n "$n" link set lan up || return 1
  ip -n "$n" addr add "$PUBNET.$i/24" dev wan && ip -n "$n" link set wan up || return 1
  ip -n "$n" link set lo up || return 1
  ip -n "$m" addr add "10.66.$i.2/24" dev eth0 && ip -n "$m" link set eth0 up || return 1
  ip -n "$m" route add default via "10.66.$i.1" || return 1
  ip netns exec "$n" sysctl -qw net.ipv4.ip_forward=1 || return 1
  local ipt=(ip netns exec "$n" iptables)
  case "$t" in
    full|restricted)
      "${ipt[@]}" -t nat -A POSTROUTING -o wan -p udp -s "10.66.$i.2" --sport "$port" \
        -j SNAT --to-source "$PUBNET.$i:$port" || return 1 ;;
    symmetric)
      "${ipt[@]}" -t nat -A POSTROUTING -o wan -p udp -j MASQUERADE --random-fully || return 1 ;;
    *) echo "unknown NAT type $t" >&2; return 1 ;;
  esac
  "${ipt[@]}" -t nat -A POSTROUTING -o wan -j MASQUERADE || return 1
  "${ipt[@]}" -t nat -A PREROUTING -i wan -p tcp --dport $((BASE + 80 + i)) \
    -j DNAT --to-destination "10.66.$i.2" || return 1
  # Unsolicited UDP to the NAT's own address is dropped before conntrack
  # confirms it: otherwise a peer's early probe (delivered locally and
  # answered with an ICMP error) leaves a conntrack entry whose tuple
  # clashes with the mapping the member is about to open toward that
  # peer, and the kernel moves that mapping to another port.
  "${ipt[@]}" -A INPUT -i wan -p udp -j DROP || return 1
  "${ipt[@]}" -P FORWARD DROP || return 1
  "${ipt[@]}" -A FORWARD -i lan -j ACCEPT || return 1
  "${ipt[@]}" -A FORWARD -i wan -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT || return 1
  "${ipt[@]}" -A FORWARD -i wan -p tcp -d "10.66.$i.2" --dport $((BASE + 80 + i)) -j ACCEPT || return 1
  if [ "$t" = full ]; then
    "${ipt[@]}" -t nat -A PREROUTING -i wan -p udp --dport "$port" \
      -j DNAT --to-destination "10.66.$i.2:$port" || return 1
    "${ipt[@]}" -A FORWARD -i wan -p udp -d "10.66.$i.2" --dport "$port" -j ACCEPT || return 1
  fi
  NS[$i]=$m
  IP[$i]=10.66.$i.2
  NATNS[$i]=$n
}
setup_pub() {
  ip netns add "$PUB" || return 1
  ip -n "$PUB" link set lo up || return 1
  ip -n "$PUB" link add lbr type bridge && ip -n "$PUB" link set lbr up || return 1
  ip -n "$PUB" addr add "$RELAY_IP/24" dev lbr || return 1
}
if ! setup_pub 2>"$D/setup.err"; then
  echo "SKIPPED: cannot build the namespaces: $(head -1 "$D/setup.err")"
  exit 77
fi
# Clients and checks run in the public namespace, at the members' public
# addresses.
http() { echo "http://$PUBNET.$1:$((BASE + 80 + $1))"; }
echo "s3cret-$$" >"$D/token"
AUTH=(-H "Authorization: Bearer s3cret-$$")
kcurl() { local i=$1; shift; in_pub curl -s -m 3 "${AUTH[@]}" "$@"; }
TOK=(--token-file "$D/token" --insecure-token)

"$QRAFT_KEYGEN" "$D/krelay" >"$D/idrelay"
in_pub "$QRAFT_RELAY" --key "$D/krelay" --listen "$RELAY_IP:$RPORT" >>"$D/logrelay" 2>&1 &
RELAY_PID=$!
for _ in $(seq 100); do grep -q "^relay .* listening on" "$D/logrelay" 2>/dev/null && break; sleep 0.05; done
grep -q "^relay .* listening on" "$D/logrelay" || fail "the relay did not start: $(cat "$D/logrelay")"
RELAY="$(cat "$D/idrelay")@$RELAY_IP:$RPORT"

# expect A B: the path two members of types A and B must end on.
expect() {
  case "$1,$2" in
    symmetric,symmetric|symmetric,restricted|restricted,symmetric) echo relay ;;
    *) echo direct ;;
  esac
}
# peer I J FIELD: member I's view of member J, one field of its status.
peer() { status "$1" | jq -r --arg id "$(cat "$D/id$2")" ".members[] | select(.id == \$id) | .$3 // empty" 2>/dev/null || true; }
observed() { status "$1" | jq -r '.relays[0].observed_addr // empty'; }
port_of() { echo "${1##*:}"; }
# wait_path I J KIND SECONDS: both ends report KIND; prints the ms it took.
wait_path() {
  local i=$1 j=$2 kind=$3 t0 end
  t0=$(ms); end=$(( t0 + $4 * 1000 ))
  while [ "$(ms)" -lt "$end" ]; do
    if [ "$(peer "$i" "$j" path)" = "$kind" ] && [ "$(peer "$j" "$i" path)" = "$kind" ]; then
      echo $(( $(ms) - t0 )); return 0
    fi
    sleep 0.1
  done
  return 1
}
# block I J on|off: member I's NAT (or its own namespace) drops every UDP
# datagram between it and member J's public address.
block() {
  local i=$1 j=$2 op=-I
  [ "$3" = off ] && op=-D
  if [ -n "${NATNS[$i]}" ]; then
    in_nat "$i" iptables "$op" FORWARD -i wan -p udp -s "${PUBIP[$j]}" -j DROP
    in_nat "$i" iptables "$op" FORWARD -i lan -p udp -d "${PUBIP[$j]}" -j DROP
  else
    ip netns exec "${NS[$i]}" iptables "$op" INPUT -p udp -s "${PUBIP[$j]}" -j DROP
    ip netns exec "${NS[$i]}" iptables "$op" OUTPUT -p udp -d "${PUBIP[$j]}" -j DROP
  fi
}

REPORT=${QRAFT_NATLAB_REPORT:-$D/report.md}
CASE_N=0
for case in $CASES; do
  CASE_N=$((CASE_N + 1))
  IFS=, read -r t1 t2 t3 <<<"$case"
  log "case $CASE_N: members behind $t1, $t2, $t3"
  for i in 1 2 3; do
    t=$t1; [ $i = 2 ] && t=$t2; [ $i = 3 ] && t=$t3
    add_member "$i" "$t" 2>"$D/setup.err" || fail "case $case: namespaces: $(cat "$D/setup.err")"
    rm -rf "$D/n$i" "$D/k$i"; keygen "$i"
  done
  M="$(cat "$D/id1"),$(cat "$D/id2"),$(cat "$D/id3")"
  for i in 1 2 3; do
    start "$i" --bootstrap "$M" --relay "$RELAY" --advertise-http "$(http "$i")" "${TOK[@]}"
  done
  L=$(wait_leader 1 2 3) || fail "case $case: no leader"
  TERM0=$(field "$L" term)
  HIST="$QRAFT_E2E_OUT/kv_natlab_$CASE_N.jsonl"
  in_pub "$KV" workload --server "$(http 1),$(http 2),$(http 3)" --token-file "$D/token" --clients 3 --keys 10 \
    --seconds "$WL_SECONDS" --history "$HIST" >"$D/workload$CASE_N.out" 2>&1 &
  WL=$!

  # The mappings, as the relay sees them: each member at its public
  # address; behind an endpoint-independent NAT, at its own (pinned) port.
  for i in 1 2 3; do
    ob=""
    for _ in $(seq 100); do ob=$(observed "$i"); [ -n "$ob" ] && break; sleep 0.05; done
    [ "${ob%:*}" = "${PUBIP[$i]}" ] || fail "member $i ($(printf %s "${TYPE[$i]}")): the relay sees it at '$ob', not at ${PUBIP[$i]}"
    case "${TYPE[$i]}" in
      none|full|restricted)
        [ "$(port_of "$ob")" = $((BASE + i)) ] || fail "member $i (${TYPE[$i]}): the relay sees port $(port_of "$ob"), not its own $((BASE + i))" ;;
    esac
    OBS[$i]=$ob
  done

  # The path of each pair: the direct ones first, then the relay ones,
  # which must still be on the relay RELAY_HOLD_S after the case began.
  FIRST_DIRECT=""
  RELAY_PAIRS=()
  T_CASE=$(ms)
  for pair in "1 2" "1 3" "2 3"; do
    read -r i j <<<"$pair"
    if [ "$(expect "${TYPE[$i]}" "${TYPE[$j]}")" = relay ]; then
      RELAY_PAIRS+=("$pair")
      continue
    fi
    took=$(wait_path "$i" "$j" direct "$DIRECT_WITHIN_S") ||
      fail "members $i (${TYPE[$i]}) and $j (${TYPE[$j]}): no direct path within ${DIRECT_WITHIN_S}s: $i sees $(peer "$i" "$j" path), $j sees $(peer "$j" "$i" path)"
    ti=$(peer "$i" "$j" time_to_direct_ms); tj=$(peer "$j" "$i" time_to_direct_ms)
    di=$(peer "$i" "$j" direct_addr); dj=$(peer "$j" "$i" direct_addr)
    # The address each reaches the other at is the other's NAT, and the
    # mapping the type says: the relay's own behind an endpoint-
    # independent NAT, another one behind a symmetric NAT.
    for x in "$i $j $di" "$j $i $dj"; do
      read -r a b d <<<"$x"
      [ "${d%:*}" = "${PUBIP[$b]}" ] || fail "member $a reaches $b at '$d', not at ${PUBIP[$b]}"
      if [ "${TYPE[$b]}" = symmetric ]; then
        [ "$d" != "${OBS[$b]}" ] || fail "member $b is behind a symmetric NAT, yet $a and the relay see one mapping ($d)"
      else
        [ "$d" = "${OBS[$b]}" ] || fail "member $b (${TYPE[$b]}): $a sees $d, the relay ${OBS[$b]}"
      fi
    done
    log "  $i (${TYPE[$i]}) - $j (${TYPE[$j]}): direct (time to direct ${ti} ms / ${tj} ms; $i reaches $di, $j reaches $dj)"
    echo "| ${TYPE[$i]} | ${TYPE[$j]} | direct | ${ti%.*} / ${tj%.*} |" >>"$REPORT"
    [ -z "$FIRST_DIRECT" ] && [ -n "${NATNS[$i]}${NATNS[$j]}" ] && FIRST_DIRECT="$i $j"
  done
  if [ ${#RELAY_PAIRS[@]} -gt 0 ]; then
    left=$(( RELAY_HOLD_S * 1000 - ($(ms) - T_CASE) ))
    [ "$left" -gt 0 ] && sleep "$(( (left + 999) / 1000 ))"
  fi
  for pair in ${RELAY_PAIRS[@]+"${RELAY_PAIRS[@]}"}; do
    read -r i j <<<"$pair"
    for x in "$i $j" "$j $i"; do
      read -r a b <<<"$x"
      p=$(peer "$a" "$b" path)
      [ "$p" = relay ] || fail "members $a (${TYPE[$a]}) and $b (${TYPE[$b]}): path '$p' where no direct path can exist"
      [ "$(peer "$a" "$b" pongs_in)" = 0 ] || fail "member $a had a PONG from $b through NATs that allow none"
      [ "$(peer "$a" "$b" pings_out)" -ge 2 ] || fail "member $a did not try $b again"
    done
    log "  $i (${TYPE[$i]}) - $j (${TYPE[$j]}): relay (after ${RELAY_HOLD_S}s and $(peer "$i" "$j" pings_out) pings unanswered)"
    echo "| ${TYPE[$i]} | ${TYPE[$j]} | relay | - |" >>"$REPORT"
  done

  # A direct path that dies falls back to the relay; healed, it upgrades.
  if [ -n "$FIRST_DIRECT" ]; then
    read -r i j <<<"$FIRST_DIRECT"
    n=$i; [ -z "${NATNS[$i]}" ] && n=$j
    o=$j; [ "$n" = "$j" ] && o=$i
    block "$n" "$o" on
    took=$(wait_path "$i" "$j" relay "$FALLBACK_WITHIN_S") ||
      { block "$n" "$o" off; fail "members $i and $j: no fallback to the relay within ${FALLBACK_WITHIN_S}s of the NAT dropping them"; }
    log "  $n's NAT drops $o: members $i and $j on the relay after $took ms"
    block "$n" "$o" off
    took=$(wait_path "$i" "$j" direct "$UPGRADE_WITHIN_S") ||
      fail "members $i and $j: not direct again within ${UPGRADE_WITHIN_S}s of the NAT healed"
    log "  healed: direct again after $took ms (fallbacks $(peer "$i" "$j" path_fallbacks), upgrades $(peer "$i" "$j" path_upgrades))"
  fi
  # A symmetric NAT's mappings flushed: its member comes out of new ports;
  # its direct paths come back (at a new address or through a fallback).
  for i in 1 2 3; do
    [ "${TYPE[$i]}" = symmetric ] || continue
    for j in 1 2 3; do
      [ "$j" != "$i" ] && [ "$(expect "${TYPE[$i]}" "${TYPE[$j]}")" = direct ] || continue
      before=$(peer "$j" "$i" direct_addr)
      in_nat "$i" conntrack -F >/dev/null 2>&1
      sleep 2
      took=$(wait_path "$i" "$j" direct "$UPGRADE_WITHIN_S") ||
        fail "members $i (symmetric, mappings flushed) and $j: not direct within ${UPGRADE_WITHIN_S}s"
      log "  member $i's NAT flushed: $j reached it at $before, now at $(peer "$j" "$i" direct_addr)"
      break 2
    done
  done

  wait "$WL" || fail "case $case: workload: $(tail -3 "$D/workload$CASE_N.out")"
  log "  workload: $(tail -1 "$D/workload$CASE_N.out"); term $TERM0 -> $(field "$(wait_leader 1 2 3)" term)"
  "$QRAFT_LINCHECK" --time-ms 60000 "$HIST" || fail "case $case: history $HIST is not linearizable"
  converged 1 2 3 || fail "case $case: the members differ"
  no_sanitizer_reports
  cleanup_members
done
log "matrix:"
cat "$REPORT"
log "passed"
