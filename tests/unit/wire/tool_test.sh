#!/usr/bin/env bash
# qraft-wire reads what the codec writes, in text and JSON, and refuses
# malformed input with its context and a non-zero exit.
# usage: tool_test.sh QRAFT_WIRE SOURCE_DIR
set -euo pipefail
tool=$1
src=$2
corpus=$src/tests/fuzz/corpus
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "tool_test: $*" >&2; exit 1; }

# A message, every field, text.
out=$("$tool" decode --message "$corpus/message/full")
for want in "message MsgAppend" "commit_term: 7" "priority: -5" \
            "[1] EntryConfChangeV2 term 7 index 42 data 2 bytes" \
            "voters: [1, 2, 300]" "learners_next: [18446744073709551615]"; do
  grep -qF -- "$want" <<<"$out" || fail "text output lacks '$want'"
done
# From stdin, as JSON that jq reads.
"$tool" decode --message - --json <"$corpus/message/append_100" >"$tmp/a.json"
[ "$(jq '.entries | length' "$tmp/a.json")" = 100 ] || fail "json entries"
[ "$(jq -r '.entries[5].data' "$tmp/a.json" | base64 -d)" = ffffffffffffffff ] ||
  fail "json entry data"
# A stream: preamble then two frames.
"$tool" decode --frame "$corpus/preamble/stream" --json >"$tmp/s.json"
[ "$(jq '.preamble.cluster_id' "$tmp/s.json")" = $((0xc1a55e5)) ] || fail "preamble"
[ "$(jq '.frames | length' "$tmp/s.json")" = 2 ] || fail "frames"
[ "$(jq '.frames[1].messages | length' "$tmp/s.json")" = 4 ] || fail "messages"
out=$("$tool" decode --frame "$corpus/frame/mixed")
grep -qF "group 7, 4 messages" <<<"$out" || fail "frame text"

# Malformed input: non-zero exit, the error names the field and offset.
expect_error() { # want-substring, then the command's arguments
  local want=$1; shift
  if "$tool" "$@" >/dev/null 2>"$tmp/err"; then
    fail "'$*' succeeded on bad input"
  fi
  grep -qF -- "$want" "$tmp/err" || fail "'$*': error lacks '$want': $(cat "$tmp/err")"
}
printf '\x08\x13' >"$tmp/badtype"
expect_error "Message.msg_type (field 1) at offset 0: unknown enum value 19" \
  decode --message "$tmp/badtype"
head -c 100 "$corpus/message/append_100" >"$tmp/cut"
expect_error "QRAFT_ETRUNCATED" decode --message "$tmp/cut"
head -c 2000 "$corpus/preamble/stream" >"$tmp/cutstream"
expect_error "frame 1 at offset" decode --frame "$tmp/cutstream"
printf 'QRFW\x09\x00' >"$tmp/v9"
expect_error "peer speaks wire version 9, this node speaks version 1" \
  decode --frame "$tmp/v9"
printf '\0\0\0\0' >"$tmp/zero"
expect_error "zero-length frame" decode --frame "$tmp/zero"
expect_error "No such file" decode --message "$tmp/missing"
# Bad usage: exit 2.
set +e
"$tool" decode 2>/dev/null; [ $? = 2 ] || fail "usage exit"
"$tool" frobnicate 2>/dev/null; [ $? = 2 ] || fail "usage exit"
set -e
echo "tool_test: ok"
