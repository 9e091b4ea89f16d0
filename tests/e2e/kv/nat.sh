#!/usr/bin/env bash
# Three qraft-kv members, each in a network namespace of its own behind a
# NAT of its own (a namespace that masquerades its traffic and drops every
# unsolicited inbound UDP datagram), and a qraft-relay in a "public"
# namespace. The members know each other by id and the relay only; there
# is no direct route between them. Under concurrent clients (in the public
# namespace; each NAT forwards its member's HTTP port), the cluster elects
# and commits through the relay, survives a SIGKILL of its leader, a
# restart of the relay, a member leaving and a new one (behind a fourth
# NAT) joining; the clients' history must be linearizable and the members
# must end with the same data. A process whose id the relay does not allow
# is refused at the handshake while the members go on. Needs root (network
# namespaces, iptables): skipped otherwise.
source "$(dirname "$0")/lib.sh"
if [ "$(id -u)" != 0 ]; then echo "SKIPPED: needs root for network namespaces"; exit 77; fi
for t in ip iptables; do command -v $t >/dev/null || { echo "SKIPPED: $t not installed"; exit 77; }; done
: "${QRAFT_RELAY:?}"
SECONDS_RUN=${QRAFT_E2E_SECONDS:-25}
HIST="$QRAFT_E2E_OUT/kv_nat.jsonl"
TAG=$(( $$ % 250 ))
PUB="qnpub$TAG"          # the public namespace: the relay and the clients
PUBNET="172.31.$TAG"     # its network; NAT i's public address is .i
RELAY_IP="$PUBNET.200"
RPORT=$((BASE + 50))
declare -A NATNS
cleanup_extra() {
  [ -n "${RELAY_PID:-}" ] && kill -9 "$RELAY_PID" 2>/dev/null || true
  for i in 1 2 3 4 5; do
    ip netns del "qnm$TAG-$i" 2>/dev/null || true
    ip netns del "qnn$TAG-$i" 2>/dev/null || true
  done
  ip netns del "$PUB" 2>/dev/null || true
}
in_pub() { ip netns exec "$PUB" "$@"; }
# member i: namespace qnm-i (10.77.i.2) behind qnn-i (lan 10.77.i.1, wan
# $PUBNET.i); HTTP reachable at the NAT's public address (DNAT, TCP only).
add_member_ns() {
  local i=$1 m="qnm$TAG-$1" n="qnn$TAG-$1"
  ip netns add "$m" && ip netns add "$n" || return 1
  ip -n "$n" link add lan type veth peer name eth0 netns "$m" || return 1
  ip -n "$n" link add wan type veth peer name "w$i" netns "$PUB" || return 1
  ip -n "$PUB" link set "w$i" master qbr up || return 1
  ip -n "$n" addr add "10.77.$i.1/24" dev lan && ip -n "$n" link set lan up || return 1
  ip -n "$n" addr add "$PUBNET.$i/24" dev wan && ip -n "$n" link set wan up || return 1
  ip -n "$n" link set lo up && ip -n "$m" link set lo up || return 1
  ip -n "$m" addr add "10.77.$i.2/24" dev eth0 && ip -n "$m" link set eth0 up || return 1
  ip -n "$m" route add default via "10.77.$i.1" || return 1
  ip netns exec "$n" sysctl -qw net.ipv4.ip_forward=1 || return 1
  local ipt=(ip netns exec "$n" iptables)
  "${ipt[@]}" -t nat -A POSTROUTING -o wan -j MASQUERADE || return 1
  "${ipt[@]}" -t nat -A PREROUTING -i wan -p tcp --dport $((BASE + 80 + i)) \
    -j DNAT --to-destination "10.77.$i.2" || return 1
  "${ipt[@]}" -P FORWARD DROP || return 1
  "${ipt[@]}" -A FORWARD -i lan -j ACCEPT || return 1
  "${ipt[@]}" -A FORWARD -i wan -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT || return 1
  "${ipt[@]}" -A FORWARD -i wan -p tcp -d "10.77.$i.2" --dport $((BASE + 80 + i)) -j ACCEPT || return 1
  "${ipt[@]}" -A FORWARD -i wan -j DROP || return 1
  NS[$i]=$m
  NATNS[$i]=$n
  IP[$i]=10.77.$i.2
}
setup() {
  ip netns add "$PUB" || return 1
  ip -n "$PUB" link set lo up || return 1
  ip -n "$PUB" link add qbr type bridge && ip -n "$PUB" link set qbr up || return 1
  ip -n "$PUB" addr add "$RELAY_IP/24" dev qbr || return 1
  for i in 1 2 3 4; do add_member_ns "$i" || return 1; done
}
if ! setup 2>"$D/setup.err"; then
  echo "SKIPPED: cannot build the namespaces: $(head -1 "$D/setup.err")"
  exit 77
fi
# Clients and checks run in the public namespace, against the NATs'
# forwarded HTTP ports.
http() {
  if [ "$1" = 5 ]; then echo "http://$RELAY_IP:$((BASE + 85))"  # in the public namespace
  else echo "http://$PUBNET.$1:$((BASE + 80 + $1))"; fi
}
echo "s3cret-$$" >"$D/token"
AUTH=(-H "Authorization: Bearer s3cret-$$")
kcurl() { local i=$1; shift; in_pub curl -s -m 3 "${AUTH[@]}" "$@"; }
# (plain HTTP between namespaces of the test's own: --insecure-token)
TOK=(--token-file "$D/token" --insecure-token)

# The relay admits the members 1 to 4 only.
"$QRAFT_KEYGEN" "$D/krelay" >"$D/idrelay"
for i in 1 2 3 4 5; do keygen "$i"; done
for i in 1 2 3 4; do cat "$D/id$i"; done >"$D/allow"
start_relay() {
  in_pub "$QRAFT_RELAY" --key "$D/krelay" --listen "$RELAY_IP:$RPORT" \
    --allow "$D/allow" --metrics "$RELAY_IP:$((BASE + 51))" \
    >>"$D/logrelay" 2>&1 &
  RELAY_PID=$!
  for _ in $(seq 100); do
    grep -q "^relay .* listening on" "$D/logrelay" 2>/dev/null && return 0
    sleep 0.05
  done
  fail "the relay did not start: $(cat "$D/logrelay")"
}
# A write through the leader of MEMBERS commits (retried for up to 10 s).
write_commits() {
  local key=$1; shift
  for _ in $(seq 100); do
    local l code
    l=$(leader "$@") || { sleep 0.1; continue; }
    code=$(kcurl "$l" -o /dev/null -w '%{http_code}' -X PUT "$(http "$l")/v1/kv/$key" -d '{"value":"x"}' || true)
    [ "$code" = 200 ] && return 0
    sleep 0.1
  done
  return 1
}
relay_metric() { in_pub curl -s -m 3 "http://$RELAY_IP:$((BASE + 51))/metrics" | awk -v k="$1" '$1 == k {print $2}'; }
start_relay
RELAY="$(cat "$D/idrelay")@$RELAY_IP:$RPORT"
log "relay $(cut -c1-16 "$D/idrelay") at $RELAY_IP:$RPORT; members behind NATs at $PUBNET.1-4"

# Members known by id alone: no direct address anywhere.
M="$(cat "$D/id1"),$(cat "$D/id2"),$(cat "$D/id3")"
for i in 1 2 3; do
  start "$i" --bootstrap "$M" --relay "$RELAY" --advertise-http "$(http "$i")" "${TOK[@]}"
done
L=$(wait_leader 1 2 3) || fail "no leader through the relay"
log "leader: member $L"

# Each member's relay saw it at its NAT's public address: the mapping the
# test set up, observed rather than assumed.
for i in 1 2 3; do
  ok=0
  for _ in $(seq 100); do
    ob=$(status "$i" | jq -r '.relays[0].observed_addr // empty')
    if [ "${ob%:*}" = "$PUBNET.$i" ]; then ok=1; break; fi
    sleep 0.05
  done
  [ $ok = 1 ] || fail "member $i: the relay sees it at '$ob', not at its NAT $PUBNET.$i"
done
log "the relay sees each member at its NAT's address ($PUBNET.1-3)"

in_pub "$KV" workload --server "$(http 1),$(http 2),$(http 3)" --token-file "$D/token" --clients 4 --keys 10 \
  --seconds "$SECONDS_RUN" --history "$HIST" >"$D/workload.out" 2>&1 &
WL=$!

sleep 3
L=$(wait_leader 1 2 3) || fail "no leader"
log "SIGKILL the leader, member $L"
stop9 "$L"
others=()
for i in 1 2 3; do [ "$i" != "$L" ] && others+=("$i"); done
t0=$(ms)
NL=$(wait_leader "${others[@]}") || fail "no new leader after the SIGKILL"
log "member $NL leads after $(( $(ms) - t0 )) ms; member $L restarts"
start "$L" --relay "$RELAY" --advertise-http "$(http "$L")" "${TOK[@]}"
sleep 4

log "restart the relay"
kill -TERM "$RELAY_PID"
wait "$RELAY_PID" 2>/dev/null || true
sleep 1
start_relay
t0=$(ms)
ok=0
for _ in $(seq 300); do
  n=0
  for i in 1 2 3; do
    [ "$(status "$i" | jq -r '.relays[0].connected')" = true ] && n=$((n + 1))
  done
  [ $n = 3 ] && { ok=1; break; }
  sleep 0.05
done
[ $ok = 1 ] || fail "the members did not reconnect to the restarted relay"
log "all three reconnected to the relay in $(( $(ms) - t0 )) ms"
write_commits probe-relay-restart 1 2 3 || fail "no write commits after the relay restart"
sleep 3

L=$(wait_leader 1 2 3) || fail "no leader after the relay restart"
OUT=$(( L % 3 + 1 ))
log "member $OUT leaves (removed through leader $L); member 4 joins behind a fourth NAT"
in_pub "$KV" members remove "$(cat "$D/id$OUT")" --server "$(http "$L")" --token-file "$D/token" >"$D/remove.out" 2>&1 ||
  fail "remove member $OUT: $(cat "$D/remove.out")"
stop9 "$OUT"
start 4 --join "$(http "$L")" --relay "$RELAY" --advertise-http "$(http 4)" "${TOK[@]}"
ok=0
for _ in $(seq 400); do
  [ "$(status "$L" | jq -r --arg id "$(cat "$D/id4")" '.members[] | select(.id == $id) | .role')" = voter ] && { ok=1; break; }
  sleep 0.05
done
[ $ok = 1 ] || fail "member 4 did not become a voter"
log "member 4 is a voter"
write_commits probe-joined 1 2 3 4 || fail "no write commits after member 4 joined"

# A process the relay does not allow: refused at the handshake.
keep=()
for i in 1 2 3 4; do [ "$i" != "$OUT" ] && keep+=("$i"); done
NS[5]=$PUB
IP[5]=$RELAY_IP
f0=$(relay_metric 'qraft_relay_handshake_failures_total{reason="unauthorized"}')
start 5 --bootstrap "$(cat "$D/id5")" --relay "$RELAY" "${TOK[@]}"
ok=0
for _ in $(seq 200); do
  f=$(relay_metric 'qraft_relay_handshake_failures_total{reason="unauthorized"}')
  [ "${f:-0}" -gt "${f0:-0}" ] && { ok=1; break; }
  sleep 0.05
done
[ $ok = 1 ] || fail "the relay did not refuse member 5's id"
[ "$(status 5 | jq -r '.relays[0].connected')" = false ] || fail "member 5 got through the relay"
log "the relay refused an id not on its list"

wait "$WL" || fail "workload: $(cat "$D/workload.out")"
log "$(cat "$D/workload.out")"
ok=$(awk '/operations/ {print $4}' "$D/workload.out")
[ "${ok:-0}" -gt 0 ] || fail "no operation succeeded"
converged "${keep[@]}" || fail "members differ: $(for i in "${keep[@]}"; do echo "member $i: $(digest "$i")"; done)"
log "members ${keep[*]} converged: $(digest "${keep[0]}")"
# Every pair talked through the relay: nothing went direct.
for i in "${keep[@]}"; do
  paths=$(status "$i" | jq -r '[.members[] | select(.path != null) | .path] | join(",")')
  case ",$paths," in *,direct,*) fail "member $i has a direct path ($paths) through NATs that allow none";; esac
  log "member $i: paths to the others: $paths"
done
in_pub curl -s -m 3 "http://$RELAY_IP:$((BASE + 51))/metrics" | grep -E '^qraft_relay_(clients|datagrams_out_total|drops_total)' | tr '\n' ' '; echo
"$QRAFT_LINCHECK" --time-ms 60000 "$HIST" || fail "history $HIST is not linearizable"
no_sanitizer_reports
log "passed"
