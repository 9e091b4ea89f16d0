#!/usr/bin/env bash
# Bad input to a qraft-kv member: malformed JSON, wrong types, oversized
# keys, values and bodies, unknown routes and methods, a client that never
# finishes its request, more connections than the limit, a missing bearer
# token. Each gets a clear JSON error or is cut off by a limit, and the
# member keeps serving everyone else.
source "$(dirname "$0")/lib.sh"
keygen 1
start 1 --bootstrap "$(members_arg 1)"
wait_leader 1 >/dev/null || fail "no leader"
U=$(http 1)

expect() { # expect STATUS CODE DESCRIPTION curl-args...
  local want=$1 code=$2 what=$3; shift 3
  local out st
  out=$(curl -s -m 5 -w '\n%{http_code}' "$@") || fail "$what: curl failed"
  st=${out##*$'\n'}
  body=${out%$'\n'*}
  [ "$st" = "$want" ] || fail "$what: want $want, got $st: $body"
  if [ -n "$code" ]; then
    [ "$(jq -r .code <<<"$body")" = "$code" ] || fail "$what: want code $code: $body"
  fi
  log "$what: $st ${code:-}"
}

expect 200 "" "put" -X PUT "$U/v1/kv/a" -d '{"value":"1"}'
expect 400 malformed "malformed JSON" -X PUT "$U/v1/kv/a" -d '{"value":'
expect 400 malformed "JSON that is not an object" -X PUT "$U/v1/kv/a" -d '[1,2]'
expect 400 malformed "value of the wrong type" -X PUT "$U/v1/kv/a" -d '{"value":5}'
expect 400 malformed "two compare conditions" -X PUT "$U/v1/kv/a" -d '{"value":"x","prev_rev":1,"prev_value":"1"}'
expect 400 malformed "empty body" -X PUT "$U/v1/kv/a"
expect 400 malformed "binary garbage" -X PUT "$U/v1/kv/a" --data-binary $'\x00\xff\xfe{'
expect 413 too_large "key of 2000 bytes" -X PUT "$U/v1/kv/$(head -c 2000 /dev/zero | tr '\0' k)" -d '{"value":"x"}'
head -c 300000 /dev/zero | tr '\0' v | sed 's/^/{"value":"/; s/$/"}/' >"$D/big.json"
expect 413 too_large "value of 300000 bytes" -X PUT "$U/v1/kv/a" --data-binary @"$D/big.json"
head -c 2000000 /dev/zero | tr '\0' ' ' >"$D/huge.json"
expect 413 too_large "body of 2 MB" -X PUT "$U/v1/kv/a" --data-binary @"$D/huge.json"
expect 404 no_route "unknown route" "$U/v2/nothing"
expect 405 method "wrong method" -X PATCH "$U/v1/kv/a"
expect 404 not_found "missing key" "$U/v1/kv/missing"
expect 409 compare_failed "compare on a stale revision" -X PUT "$U/v1/kv/a" -d '{"value":"2","prev_rev":1}'
expect 400 malformed "member with a bad id" -X POST "$U/v1/members" -d '{"id":"zz","addr":"1.2.3.4:5"}'
expect 400 malformed "member with a bad address" -X POST "$U/v1/members" -d "{\"id\":\"$(cat "$D/id1" | tr 0-9a-f 1-9a-f0)\",\"addr\":\"nowhere\"}"
expect 400 malformed "list with a bad limit" "$U/v1/kv?limit=-3"
expect 200 "" "the member still serves" "$U/v1/kv/a"

# A client that sends half a request and waits: the member serves others
# meanwhile and cuts it off after its connection timeout (10 s).
exec {slow}<>"/dev/tcp/127.0.0.1/$((BASE + 81))"
printf 'PUT /v1/kv/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"val' >&$slow
t0=$(ms)
expect 200 "" "served while a slow client waits" -X PUT "$U/v1/kv/b" -d '{"value":"2"}'
if timeout 20 cat <&$slow >/dev/null; then
  log "slow client cut off after $(( $(ms) - t0 )) ms"
else
  fail "the slow client was not cut off within 20 s"
fi
exec {slow}>&-

# More connections than the limit (256): the extra ones wait in the
# kernel's listen backlog (idle ones are cut after 10 s), the member stays
# up and serves again once they go.
fds=()
for _ in $(seq 300); do
  exec {fd}<>"/dev/tcp/127.0.0.1/$((BASE + 81))" 2>/dev/null && fds+=("$fd") || true
done
log "opened ${#fds[@]} idle connections (beyond 256 they wait in the listen backlog)"
code=$(curl -s -m 2 -o /dev/null -w '%{http_code}' "$U/v1/kv/a" || true)
log "a request while they are open: ${code} (000: not served until a slot frees)"
kill -0 "${PID[1]}" || fail "the member died under 300 connections"
for fd in "${fds[@]}"; do exec {fd}>&-; done
ok=0
for _ in $(seq 50); do
  if [ "$(curl -s -m 2 -o /dev/null -w '%{http_code}' "$U/v1/kv/a")" = 200 ]; then ok=1; break; fi
  sleep 0.1
done
[ $ok = 1 ] || fail "the member did not serve after the connections closed"
log "served again after they closed"
kill -0 "${PID[1]}" || fail "the member died"

# Any address but loopback needs a token, and then every request carries it.
keygen 2
if "$KV" serve --quiet --data "$D/n2" --key "$D/k2" --raft "127.0.0.1:$((BASE + 2))" \
     --http "0.0.0.0:$((BASE + 82))" --bootstrap "$(members_arg 2)" 2>"$D/notoken.err"; then
  fail "served on 0.0.0.0 without a token"
fi
log "refused 0.0.0.0 without --token-file: $(head -1 "$D/notoken.err")"
echo "s3cret-token" >"$D/token"
# ... and over plain HTTP, an explicit --insecure-token (else the token
# would cross the network in clear: tls.sh serves it over HTTPS)
if "$KV" serve --quiet --data "$D/n2" --key "$D/k2" --raft "127.0.0.1:$((BASE + 2))" \
     --http "0.0.0.0:$((BASE + 82))" --bootstrap "$(members_arg 2)" \
     --token-file "$D/token" 2>"$D/insecure.err"; then
  fail "served a token over plain HTTP on 0.0.0.0 without --insecure-token"
fi
grep -q "would cross the network in clear" "$D/insecure.err" || fail "the refusal does not say why: $(cat "$D/insecure.err")"
log "refused a token over plain HTTP: $(head -1 "$D/insecure.err" | cut -c1-120)..."
IP[2]=0.0.0.0
start 2 --bootstrap "$(members_arg 2)" --token-file "$D/token" --insecure-token
for _ in $(seq 300); do curl -s -m 1 -o /dev/null "http://127.0.0.1:$((BASE + 82))/v1/status" && break; sleep 0.05; done
expect 401 unauthorized "no token" "http://127.0.0.1:$((BASE + 82))/v1/status"
expect 401 unauthorized "wrong token" -H "Authorization: Bearer nope" "http://127.0.0.1:$((BASE + 82))/v1/status"
expect 200 "" "right token" -H "Authorization: Bearer s3cret-token" "http://127.0.0.1:$((BASE + 82))/v1/status"
"$KV" status --server "http://127.0.0.1:$((BASE + 82))" --token-file "$D/token" >/dev/null ||
  fail "the client with --token-file"
# A graceful stop (SIGTERM) exits 0, with no leak or sanitizer report.
for i in 1 2; do kill -TERM "${PID[$i]}"; done
for i in 1 2; do
  rc=0; wait "${PID[$i]}" || rc=$?
  unset "PID[$i]"
  [ $rc = 0 ] || fail "member $i exited with $rc after SIGTERM"
done
log "both members stopped cleanly on SIGTERM"
no_sanitizer_reports
log "passed"
