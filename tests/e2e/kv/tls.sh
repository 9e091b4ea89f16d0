#!/usr/bin/env bash
# HTTPS on the client API, with a CA made here (openssl). Three members
# serve HTTPS with certificates the CA signed (for 127.0.0.1) and a bearer
# token. curl and qraft-kv with --cacert work; a client that trusts another
# CA, plain HTTP to the TLS port, and a missing or wrong token are refused,
# and the members keep serving others. A fourth member joins over HTTPS.
# Then member 1 asks for client certificates (--tls-client-ca): a request
# without one, or with one of another CA, gets 401; with one the CA signed,
# 200.
source "$(dirname "$0")/lib.sh"
command -v openssl >/dev/null || { echo "SKIPPED: openssl is not installed"; exit 77; }

# ca NAME: a CA; leaf NAME CA: a certificate NAME.pem/NAME.key that CA
# signed, for 127.0.0.1, usable by a server and a client
ca() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$D/$1.key" -out "$D/$1.pem" -days 2 -subj "/CN=qraft test $1" 2>/dev/null
}
leaf() {
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$D/$1.key" -out "$D/$1.csr" -subj "/CN=$1" 2>/dev/null &&
  printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n' >"$D/$1.ext" &&
  openssl x509 -req -in "$D/$1.csr" -CA "$D/$2.pem" -CAkey "$D/$2.key" \
    -CAcreateserial -out "$D/$1.pem" -days 2 -extfile "$D/$1.ext" 2>/dev/null
}
ca ca && ca otherca && leaf member ca && leaf client ca && leaf stranger otherca ||
  fail "openssl could not make the certificates"
echo "tls-token-$$" >"$D/token"
AUTH=(-H "Authorization: Bearer tls-token-$$")
TLS=(--tls-cert "$D/member.pem" --tls-key "$D/member.key" --cacert "$D/ca.pem" --token-file "$D/token")
https() { echo "https://127.0.0.1:$((BASE + 80 + $1))"; }
# code ARGS...: curl's HTTP code (000: no HTTP answer)
code() { curl -s -m 5 -o "$D/curl.out" -w '%{http_code}' "$@" 2>/dev/null || true; }

for i in 1 2 3; do keygen "$i"; done
M=$(members_arg 1 2 3)
for i in 1 2 3; do start "$i" --bootstrap "$M" "${TLS[@]}"; done
for _ in $(seq 100); do [ "$(code --cacert "$D/ca.pem" "${AUTH[@]}" "$(https 1)/v1/status")" = 200 ] && break; sleep 0.1; done
L=0
for _ in $(seq 100); do
  for i in 1 2 3; do
    [ "$(curl -s -m 2 --cacert "$D/ca.pem" "${AUTH[@]}" "$(https "$i")/v1/status" | jq -r .role 2>/dev/null)" = leader ] && L=$i
  done
  [ $L != 0 ] && break; sleep 0.1
done
[ $L != 0 ] || fail "no leader over HTTPS"
log "leader: member $L, over HTTPS"

KVS=(--server "$(https 1),$(https 2),$(https 3)" --cacert "$D/ca.pem" --token-file "$D/token")
"$KV" put color blue "${KVS[@]}" >/dev/null || fail "qraft-kv put over HTTPS"
[ "$("$KV" get color "${KVS[@]}")" = blue ] || fail "qraft-kv get over HTTPS"
[ "$(code --cacert "$D/ca.pem" "${AUTH[@]}" "$(https 2)/v1/kv/color")" = 200 ] || fail "curl --cacert: $(cat "$D/curl.out")"
jq -e '.value == "blue"' "$D/curl.out" >/dev/null || fail "curl read $(cat "$D/curl.out")"
log "curl and qraft-kv with --cacert: ok"

# refused: another CA, plain HTTP, no token, a wrong token
[ "$(code --cacert "$D/otherca.pem" "${AUTH[@]}" "$(https 1)/v1/status")" = 000 ] || fail "curl trusted a member with another CA"
if "$KV" get color --server "$(https 1)" --cacert "$D/otherca.pem" --token-file "$D/token" 2>"$D/wrongca.err"; then
  fail "qraft-kv trusted a member with another CA"
fi
grep -q "not trusted" "$D/wrongca.err" || fail "qraft-kv does not say why: $(cat "$D/wrongca.err")"
log "another CA: $(head -1 "$D/wrongca.err" | cut -c1-150)"
[ "$(code "${AUTH[@]}" "http://127.0.0.1:$((BASE + 81))/v1/status")" = 000 ] || fail "plain HTTP to the TLS port got an answer"
[ "$(code --cacert "$D/ca.pem" "$(https 1)/v1/status")" = 401 ] || fail "no token: not 401"
[ "$(code --cacert "$D/ca.pem" -H "Authorization: Bearer nope" "$(https 1)/v1/status")" = 401 ] || fail "wrong token: not 401"
[ "$(code --cacert "$D/ca.pem" "${AUTH[@]}" "$(https 1)/v1/status")" = 200 ] || fail "member 1 stopped serving after the refusals"
log "refused: another CA, plain HTTP, no token, a wrong token; member 1 serves on"

log "a fourth member joins over HTTPS"
keygen 4
start 4 --join "$(https "$L")" "${TLS[@]}"
for _ in $(seq 200); do
  [ "$(curl -s -m 2 --cacert "$D/ca.pem" "${AUTH[@]}" "$(https "$L")/v1/members" | jq '[.members[] | select(.role == "voter")] | length' 2>/dev/null)" = 4 ] && break
  sleep 0.1
done
[ "$(curl -s -m 2 --cacert "$D/ca.pem" "${AUTH[@]}" "$(https "$L")/v1/members" | jq '[.members[] | select(.role == "voter")] | length')" = 4 ] ||
  fail "member 4 did not join over HTTPS"
[ "$("$KV" get color --server "$(https 4)" --cacert "$D/ca.pem" --token-file "$D/token")" = blue ] || fail "member 4 does not read what was written"

log "client certificates on member 1"
stop9 1
start 1 "${TLS[@]}" --tls-client-ca "$D/ca.pem"
for _ in $(seq 100); do [ "$(code --cacert "$D/ca.pem" --cert "$D/client.pem" --key "$D/client.key" "${AUTH[@]}" "$(https 1)/v1/status")" = 200 ] && break; sleep 0.1; done
[ "$(code --cacert "$D/ca.pem" --cert "$D/client.pem" --key "$D/client.key" "${AUTH[@]}" "$(https 1)/v1/status")" = 200 ] || fail "a client certificate of the CA: not 200"
[ "$(code --cacert "$D/ca.pem" "${AUTH[@]}" "$(https 1)/v1/status")" = 401 ] || fail "no client certificate: not 401"
jq -e '.message | test("client certificate")' "$D/curl.out" >/dev/null || fail "the 401 does not say why: $(cat "$D/curl.out")"
c=$(code --cacert "$D/ca.pem" --cert "$D/stranger.pem" --key "$D/stranger.key" "${AUTH[@]}" "$(https 1)/v1/status")
[ "$c" = 401 ] || [ "$c" = 000 ] || fail "a client certificate of another CA: $c"
# (a local read: member 1 may be between leaders after its restart)
"$KV" get color --stale --server "$(https 1)" --cacert "$D/ca.pem" --cert "$D/client.pem" --key "$D/client.key" --token-file "$D/token" >/dev/null ||
  fail "qraft-kv with a client certificate"
log "client certificates: the CA's 200, none 401, another CA's $c"
no_sanitizer_reports
log "passed"
