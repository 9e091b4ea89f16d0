#!/usr/bin/env bash
# qraft-relay's command line: wrong flags, lists and config files are
# usage errors (status 2) that name what is wrong, a key that does not
# load or a port in use is status 1; a relay started from a config file
# prints its id (the key's) and the port it bound, serves Prometheus
# metrics (404 elsewhere), reads its allow-list again on SIGHUP (keeping
# the old one when the new file is malformed) and stops with status 0
# within 5 s of SIGTERM.
#
# Nothing here is random: every port is picked by the kernel (port 0) and
# read back from the relay, and printed. Replay with
#   QRAFT_RELAY=build/bin/qraft-relay QRAFT_KEYGEN=build/bin/qraft-keygen \
#     bash tests/e2e/relay/cli.sh
set -Eeuo pipefail
: "${QRAFT_RELAY:?}" "${QRAFT_KEYGEN:?}"
for tool in curl jq; do
  command -v "$tool" >/dev/null || { echo "SKIP: $tool is not installed (scripts/deps.sh)"; exit 77; }
done
RELAY=$QRAFT_RELAY
D=$(mktemp -d /tmp/qraft-relay-cli.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$D"
}
trap cleanup EXIT
trap 'echo "FAILED: command at ${BASH_SOURCE[0]##*/}:$LINENO exited $?" >&2' ERR
START_S=$(date +%s)
log() { echo "[$(( $(date +%s) - START_S ))s] $*"; }
fail() {
  echo "FAILED: $*" >&2
  for f in "$D"/*.out "$D"/*.err; do [ -s "$f" ] && { echo "--- $f" >&2; tail -20 "$f" >&2; }; done
  exit 1
}
# expect STATUS PATTERN ARGS...: qraft-relay ARGS exits STATUS and its
# stderr matches the grep pattern PATTERN
expect() {
  local want=$1 pat=$2 rc=0; shift 2
  "$RELAY" "$@" >"$D/x.out" 2>"$D/x.err" </dev/null || rc=$?
  [ "$rc" -eq "$want" ] || fail "qraft-relay $*: status $rc, want $want: $(cat "$D/x.err")"
  grep -qE -- "$pat" "$D/x.err" || fail "qraft-relay $*: stderr lacks '$pat': $(cat "$D/x.err")"
  [ ! -s "$D/x.out" ] || fail "qraft-relay $*: wrote to stdout: $(cat "$D/x.out")"
}

"$QRAFT_KEYGEN" "$D/key" >/dev/null
ID=$("$QRAFT_KEYGEN" --show "$D/key")
# ids for the lists: hex of either case and base32
A=$(printf '%064d' 1)
B=$(printf 'AB%062d' 2)
C=$(printf 'A%.0s' $(seq 52))
printf '# relay clients\n%s\n\n%s  # the second\n' "$A" "$B" >"$D/allow"
printf '%s\n%s\nnot-an-id\n' "$A" "$B" >"$D/allow.bad"

# ---- usage errors (2) and failures (1) ----
expect 2 "unknown flag '--bogus'" --bogus --key "$D/key"
expect 2 "--key KEYFILE is required" --listen 127.0.0.1:0
expect 2 "--allow and --deny exclude each other" --key "$D/key" --allow "$D/allow" --deny "$D/allow"
expect 2 "allow.bad:3: 'not-an-id' is not a node id" --key "$D/key" --allow "$D/allow.bad"
expect 2 "--queue-bytes: bad value 'lots'" --key "$D/key" --queue-bytes lots
expect 2 "--ping-timeout-ms: bad value '0'" --key "$D/key" --ping-timeout-ms 0
expect 2 "--listen: bad address" --key "$D/key" --listen nowhere
expect 2 "a burst needs a rate" --key "$D/key" --burst 1M
printf 'listen = 127.0.0.1:0\nqueue-size = 1M\n' >"$D/unknown.conf"
expect 2 "unknown.conf:2: unknown setting 'queue-size'" --config "$D/unknown.conf" --key "$D/key"
printf '# values\nkey = %s\n\nwrite-timeout-ms = soon\n' "$D/key" >"$D/badvalue.conf"
expect 2 "badvalue.conf:4: write-timeout-ms: bad value 'soon'" --config "$D/badvalue.conf"
printf 'allow = %s\ndeny = %s\n' "$D/allow" "$D/allow" >"$D/both.conf"
expect 2 "both.conf:2: allow and deny exclude each other" --config "$D/both.conf" --key "$D/key"
expect 1 "cannot load the key" --key "$D/missing-key" --listen 127.0.0.1:0
log "usage errors exit 2 and name the flag, file and line; a missing key exits 1"

# ---- a relay from a config file; the command line overrides it ----
cat >"$D/relay.conf" <<CONF
# the test's relay
key = $D/key
listen = 127.0.0.1:3340   # overridden below
allow = $D/allow
ping-interval-ms = 15000
CONF
"$RELAY" --config "$D/relay.conf" --listen 127.0.0.1:0 --metrics 127.0.0.1:0 \
  --log-format json --log-level info >"$D/relay.out" 2>"$D/relay.err" </dev/null &
RP=$!
PIDS+=("$RP")
for _ in $(seq 100); do [ -s "$D/relay.out" ] && break; sleep 0.1; done
line=$(head -1 "$D/relay.out")
[[ "$line" =~ ^relay\ ([0-9a-f]{64})\ listening\ on\ 127\.0\.0\.1:([0-9]+)$ ]] ||
  fail "start line: '$line'"
[ "${BASH_REMATCH[1]}" = "$ID" ] || fail "relay id ${BASH_REMATCH[1]}, key's id $ID"
UDP_PORT=${BASH_REMATCH[2]}
[ "$UDP_PORT" != 0 ] && [ "$UDP_PORT" != 3340 ] || fail "bound port $UDP_PORT"
started=$(jq -c 'select(.msg == "relay started")' "$D/relay.err")
M=$(jq -r .metrics <<<"$started")
[[ "$M" =~ ^127\.0\.0\.1:[1-9][0-9]*$ ]] || fail "metrics address '$M'"
[ "$(jq -r .list_ids <<<"$started")" = 2 ] || fail "allow-list ids: $started"
log "relay $ID on UDP port $UDP_PORT, metrics on $M"

# ---- metrics ----
metrics() { curl -s -m 3 "http://$M/metrics"; }
body=$(metrics) || fail "GET /metrics"
grep -qx 'qraft_relay_clients 0' <<<"$body" || fail "no 'qraft_relay_clients 0': $body"
grep -qx '# TYPE qraft_relay_clients gauge' <<<"$body" || fail "no TYPE line for clients"
grep -qx '# TYPE qraft_relay_datagrams_in_total counter' <<<"$body" || fail "no TYPE line for datagrams_in_total"
grep -q '^# HELP qraft_relay_drops_total ' <<<"$body" || fail "no HELP line for drops_total"
for r in no_peer queue rate inactive; do
  grep -qx "qraft_relay_drops_total{reason=\"$r\"} 0" <<<"$body" || fail "no drops_total $r"
done
grep -qx 'qraft_relay_handshake_failures_total{reason="unauthorized"} 0' <<<"$body" ||
  fail "no handshake_failures_total unauthorized"
# every sample line is NAME{LABELS} VALUE of a metric announced by TYPE
bad=$(grep -v '^#' <<<"$body" | grep -vE '^qraft_relay_[a-z_]+(\{reason="[a-z_]+"\})? [0-9]+$' || true)
[ -z "$bad" ] || fail "malformed sample lines: $bad"
code=$(curl -s -m 3 -o /dev/null -w '%{http_code}' "http://$M/other")
[ "$code" = 404 ] || fail "GET /other: $code, want 404"
code=$(curl -s -m 3 -o /dev/null -w '%{http_code}' -X POST "http://$M/metrics")
[ "$code" = 405 ] || fail "POST /metrics: $code, want 405"
# a request that never ends its headers gets 431 and is closed
big=$(head -c 9000 /dev/zero | tr '\0' a)
code=$(curl -s -m 3 -o /dev/null -w '%{http_code}' -H "X-Big: $big" "http://$M/metrics" || true)
[ "$code" = 431 ] || fail "an oversized request: $code, want 431"
log "GET /metrics: qraft_relay_clients 0 with HELP and TYPE lines; /other 404; POST 405; 9 KB of headers 431"

# ---- a second relay on the same UDP port cannot bind ----
expect 1 "cannot listen on 127.0.0.1:$UDP_PORT" --key "$D/key" --listen "127.0.0.1:$UDP_PORT"
log "a port in use exits 1"

# ---- SIGHUP reads the allow-list again ----
# wait_log MSG N: the relay has written at least N records with message MSG
wait_log() {
  for _ in $(seq 50); do
    local n
    n=$(jq -r --arg m "$1" 'select(.msg == $m) | .msg' "$D/relay.err" 2>/dev/null | wc -l || true)
    [ "${n:-0}" -ge "$2" ] && return 0
    sleep 0.1
  done
  fail "no '$1' record (want $2)"
}
cp "$D/allow.bad" "$D/allow"
kill -HUP "$RP"
wait_log "list not reloaded: the old one stays" 1
why=$(jq -r 'select(.msg == "list not reloaded: the old one stays") | .error' "$D/relay.err")
grep -q "allow:3: 'not-an-id' is not a node id" <<<"$why" || fail "the reload error names no line: $why"
body=$(metrics)
grep -qx 'qraft_relay_list_ids 2' <<<"$body" || fail "the old list did not stay"
grep -qx 'qraft_relay_list_reload_errors_total 1' <<<"$body" || fail "reload error not counted"
printf '%s\n%s\n%s\n' "$A" "$B" "$C" >"$D/allow"
kill -HUP "$RP"
wait_log "list reloaded" 1
grep -qx 'qraft_relay_list_ids 3' <<<"$(metrics)" || fail "the new list (3 ids) is not in use"
log "SIGHUP: a malformed list leaves the old one (error names the line); a good one replaces it"

# ---- SIGTERM stops it with status 0 within 5 s ----
# exited PID: the process has ended (a zombie until waited for)
exited() {
  local st
  st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1 || true)
  [ -z "$st" ] || [ "$st" = Z ] || [ "$st" = X ]
}
t0=$(date +%s%N)
kill -TERM "$RP"
for _ in $(seq 100); do exited "$RP" && break; sleep 0.05; done
t_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
exited "$RP" || fail "still running $t_ms ms after SIGTERM"
rc=0; wait "$RP" || rc=$?
PIDS=()
[ "$rc" -eq 0 ] || fail "status $rc after SIGTERM"
wait_log "relay stopped" 1
while IFS= read -r l; do
  jq -e 'type == "object" and (.msg | type) == "string"' <<<"$l" >/dev/null 2>&1 ||
    fail "a stderr line that is not a JSON record: $l"
done <"$D/relay.err"
[ "$(wc -l <"$D/relay.out")" -eq 1 ] || fail "stdout holds more than the start line"
log "SIGTERM: status 0 after $t_ms ms; stderr all JSON records; stdout the one start line"
echo "relay cli test passed"
