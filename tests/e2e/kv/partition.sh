#!/usr/bin/env bash
# Three qraft-kv members, each in a network namespace of its own joined by
# veth pairs to a bridge, under concurrent clients, while the network fails:
# the leader is cut off from the others (iptables), then every link gets
# delay and loss (tc netem; where the kernel has no netem, loss with
# iptables' statistic match and delay with nfdelay.c behind an iptables
# NFQUEUE rule), then a partial partition (1 and 3 cannot talk, both talk
# to 2). The history must be linearizable and the members must end
# with the same data. Needs root (network namespaces): skipped otherwise.
source "$(dirname "$0")/lib.sh"
if [ "$(id -u)" != 0 ]; then echo "SKIPPED: needs root for network namespaces"; exit 77; fi
for t in ip tc iptables; do command -v $t >/dev/null || { echo "SKIPPED: $t not installed"; exit 77; }; done
SECONDS_RUN=${QRAFT_E2E_SECONDS:-20}
HIST="$QRAFT_E2E_OUT/${QRAFT_E2E_HIST:-kv_partition}.jsonl"
TAG=$(( $$ % 250 ))
BR="qkvbr$TAG"
NET="10.213.$TAG"
NFD_PIDS=()
stop_nfdelay() {
  for p in "${NFD_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${NFD_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  NFD_PIDS=()
}
cleanup_extra() {
  stop_nfdelay
  for i in 1 2 3; do ip netns del "qkv$TAG-$i" 2>/dev/null || true; done
  ip link del "$BR" 2>/dev/null || true
}
setup() {
  ip link add "$BR" type bridge || return 1
  ip addr add "$NET.254/24" dev "$BR" && ip link set "$BR" up || return 1
  for i in 1 2 3; do
    local ns="qkv$TAG-$i"
    ip netns add "$ns" || return 1
    ip link add "qkv$TAG-$i" type veth peer name "qkv$TAG-${i}p" || return 1
    ip link set "qkv$TAG-$i" netns "$ns" || return 1
    ip link set "qkv$TAG-${i}p" master "$BR" up || return 1
    ip -n "$ns" addr add "$NET.$i/24" dev "qkv$TAG-$i" || return 1
    ip -n "$ns" link set "qkv$TAG-$i" up && ip -n "$ns" link set lo up || return 1
    NS[$i]=$ns
    IP[$i]=$NET.$i
  done
}
if ! setup 2>"$D/setup.err"; then
  echo "SKIPPED: cannot build the namespaces: $(head -1 "$D/setup.err")"
  exit 77
fi
ns_ipt() { ip netns exec "${NS[$1]}" iptables "${@:2}"; }
cut() { # cut A B: drop Raft traffic between members A and B (both ways)
  ns_ipt "$1" -A INPUT -p udp -s "${IP[$2]}" -j DROP
  ns_ipt "$1" -A OUTPUT -p udp -d "${IP[$2]}" -j DROP
  ns_ipt "$2" -A INPUT -p udp -s "${IP[$1]}" -j DROP
  ns_ipt "$2" -A OUTPUT -p udp -d "${IP[$1]}" -j DROP
}
heal() {
  for i in 1 2 3; do ns_ipt "$i" -F; ip netns exec "${NS[$i]}" tc qdisc del dev "qkv$TAG-$i" root 2>/dev/null || true; done
  stop_nfdelay
}

echo "s3cret-$$" >"$D/token"
AUTH=(-H "Authorization: Bearer s3cret-$$")
for i in 1 2 3; do keygen "$i"; done
M=$(members_arg 1 2 3)
# (plain HTTP between namespaces of the test's own: --insecure-token)
for i in 1 2 3; do start "$i" --bootstrap "$M" --token-file "$D/token" --insecure-token --snapshot-entries 300; done
L=$(wait_leader 1 2 3) || fail "no leader"
log "leader: member $L (members in namespaces ${NS[1]} ${NS[2]} ${NS[3]}, $NET.0/24)"

# QRAFT_E2E_STALE=1: the clients read with ?stale=1 (no ReadIndex), and the
# checker is expected to find the stale reads of the cut-off leader.
STALE=()
[ "${QRAFT_E2E_STALE:-0}" = 1 ] && STALE=(--stale)
"$KV" workload "${STALE[@]}" --server "$(http 1),$(http 2),$(http 3)" --token-file "$D/token" \
  --clients 4 --keys 10 --seconds "$SECONDS_RUN" --history "$HIST" >"$D/workload.out" 2>&1 &
WL=$!

# One round of faults takes about 17 s; rounds repeat while the clients
# run (QRAFT_E2E_SECONDS, 20 by default: one round; make soak: more).
END_S=$(( $(date +%s) + SECONDS_RUN ))
round=0
while [ $(( END_S - $(date +%s) )) -ge 19 ] || [ $round = 0 ]; do
  round=$((round + 1))
  log "round $round"
  sleep 2
  L=$(wait_leader 1 2 3) || fail "no leader before the partition"
  A=$(( L % 3 + 1 )); B=$(( A % 3 + 1 ))
  log "isolate the leader, member $L, from members $A and $B for 4 s"
  cut "$L" "$A"; cut "$L" "$B"
  t0=$(ms)
  NL=""
  for _ in $(seq 200); do
    for i in $A $B; do [ "$(field "$i" role)" = leader ] && NL=$i; done
    [ -n "$NL" ] && break
    sleep 0.05
  done
  [ -n "$NL" ] || fail "the majority side elected no leader"
  log "the majority elected member $NL in $(( $(ms) - t0 )) ms"
  sleep 3
  heal
  log "healed"

  sleep 2
  if ip netns exec "${NS[1]}" tc qdisc add dev "qkv$TAG-1" root netem delay 30ms 10ms loss 10% 2>/dev/null; then
    log "delay 30 ms +- 10 ms and 10% loss on every link for 4 s (tc netem)"
    for i in 2 3; do
      ip netns exec "${NS[$i]}" tc qdisc add dev "qkv$TAG-$i" root netem delay 30ms 10ms loss 10%
    done
  else
    # No sch_netem in this kernel: loss with iptables' statistic match, and
    # delay by nfdelay, which holds each Raft datagram a member sends for
    # 20 to 40 ms (iptables NFQUEUE; --queue-bypass lets packets through
    # whenever nfdelay is not running).
    for i in 1 2 3; do
      ns_ipt "$i" -A INPUT -p udp -m statistic --mode random --probability 0.1 -j DROP
      ns_ipt "$i" -A OUTPUT -p udp -m statistic --mode random --probability 0.1 -j DROP
    done
    if [ -n "${QRAFT_NFDELAY:-}" ]; then
      for i in 1 2 3; do
        ns_ipt "$i" -A OUTPUT -p udp -d "$NET.0/24" -j NFQUEUE --queue-num 0 --queue-bypass
        ip netns exec "${NS[$i]}" "$QRAFT_NFDELAY" --queue 0 --delay-ms 30 --jitter-ms 10 \
          --seed "$((round * 10 + i))" --seconds 10 2>>"$D/nfdelay.log" &
        NFD_PIDS+=($!)
      done
      log "delay 30 ms +- 10 ms (nfdelay, iptables NFQUEUE) and 10% loss (iptables) on every link for 4 s"
    else
      log "10% loss on every link for 4 s (iptables statistic; no tc netem and no nfdelay built, so no delay)"
    fi
  fi
  sleep 4
  delayed=${#NFD_PIDS[@]}
  heal
  if [ "$delayed" -gt 0 ]; then
    n=$(awk '/packets delayed/ {s += $4} END {print s + 0}' "$D/nfdelay.log")
    [ "$n" -gt 0 ] || fail "nfdelay delayed no packets: $(cat "$D/nfdelay.log")"
    log "healed ($n datagrams were delayed in all so far)"
  else
    log "healed"
  fi

  sleep 1
  log "partial partition: members 1 and 3 cannot talk, both reach 2, for 4 s"
  cut 1 3
  sleep 4
  heal
  log "healed"
done

wait "$WL" || fail "workload: $(cat "$D/workload.out")"
log "$(cat "$D/workload.out")"
converged 1 2 3 || fail "members differ: $(for i in 1 2 3; do echo "member $i: $(digest "$i") $(status "$i" | jq -c '{role,leader,term,commit,applied,kv_applied,snapshot_index}')"; done)"
log "members converged: $(digest 1)"
if [ "${QRAFT_E2E_STALE:-0}" = 1 ]; then
  # Key by key, with a small time budget each (the time budget is shared
  # by all keys of one check, and stale reads make some keys expensive to
  # search); one key proven non-linearizable is the verdict the canary needs.
  found=""
  for k in $(jq -r .key "$HIST" | sort -u); do
    jq -c --arg k "$k" 'select(.key == $k)' "$HIST" >"$D/key.jsonl"
    rc=0; "$QRAFT_LINCHECK" --quiet --time-ms 3000 "$D/key.jsonl" >/dev/null || rc=$?
    if [ $rc = 1 ]; then found=$k; break; fi
  done
  [ -n "$found" ] || fail "canary: stale reads went unnoticed"
  log "canary: the checker found stale reads on key $found, as it must"
else
  "$QRAFT_LINCHECK" --time-ms 60000 "$HIST" || fail "history $HIST is not linearizable"
fi
no_sanitizer_reports
log "passed"
