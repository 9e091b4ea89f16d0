#!/usr/bin/env bash
# qraft-kv serve --config FILE: a one-member cluster started from a config
# file takes writes; the command line overrides the file; a bad file is a
# clear error (exit 2), not a crash.
. "$(dirname "$0")/lib.sh"
keygen 1
ID=$(cat "$D/id1")
RP=$((BASE + 1)); HP=$((BASE + 81)); HP2=$((BASE + 82))
cat > "$D/kv.conf" <<CONF
# a qraft-kv member
data = $D/n1
key    $D/k1
raft = 127.0.0.1:$RP
http = 127.0.0.1:$HP
bootstrap = $ID@127.0.0.1:$RP
quiet = true
CONF
# the command line moves HTTP to another port: the flag wins
"$KV" serve --config "$D/kv.conf" --http "127.0.0.1:$HP2" >"$D/log1" 2>&1 &
PID[1]=$!
for _ in $(seq 1 100); do
  curl -s -m 1 "http://127.0.0.1:$HP2/v1/status" | jq -se '.[0].role == "leader"' \
    >/dev/null 2>&1 && break
  sleep 0.05
done
out=$(curl -s -m 3 -X PUT "http://127.0.0.1:$HP2/v1/kv/a" -d '{"value":"b"}')
echo "$out" | jq -e '.rev > 0' >/dev/null || fail "put through the config's member: $out"
got=$(curl -s -m 3 "http://127.0.0.1:$HP2/v1/kv/a" | jq -r .value)
[ "$got" = b ] || fail "read back '$got'"
if curl -s -m 1 "http://127.0.0.1:$HP/v1/status" >/dev/null 2>&1; then
  fail "the file's --http address answers although the flag overrode it"
fi
log "config file: member served writes on the overriding --http"
kill "${PID[1]}"; wait "${PID[1]}" 2>/dev/null || true; unset 'PID[1]'
# bad files: a setting without a value, and a missing file
printf 'data\n' > "$D/bad.conf"
rc=0; rc2=0
"$KV" serve --config "$D/bad.conf" >"$D/out" 2>&1 || rc=$?
"$KV" serve --config "$D/missing.conf" >"$D/out2" 2>&1 || rc2=$?
[ $rc -eq 2 ] && grep -q "has no value" "$D/out" || fail "bad config: rc $rc: $(cat "$D/out")"
[ $rc2 -eq 2 ] && grep -q "missing.conf" "$D/out2" || fail "missing config: rc $rc2"
log "bad config files are refused with a clear message"
echo "config test passed"
