#!/usr/bin/env bash
# Installs the Debian 12 packages qraft needs, and only those that are missing.
# Called by `make test`, `make demo` and `make bench`; safe to run again.
set -euo pipefail

PACKAGES=(
  # build
  build-essential cmake pkg-config clang libclang-rt-14-dev
  # library dependencies
  libgnutls28-dev libunistring-dev nettle-dev libngtcp2-dev libngtcp2-crypto-gnutls-dev libuv1-dev
  liblmdb-dev
  # qraft-kv
  libmicrohttpd-dev libjansson-dev
  # tests, fuzzing and benchmarks
  libcmocka-dev librapidcheck-dev libprotobuf-c-dev protobuf-c-compiler
  protobuf-compiler libbenchmark-dev
  # end-to-end tests and the demo
  iproute2 iptables curl jq procps
  # the NAT lab flushes NAT mappings (tests/e2e/kv/natlab.sh)
  conntrack
  # certificates for the HTTPS test (tests/e2e/kv/tls.sh)
  openssl
  # delay between members where tc netem is missing (tests/e2e/kv/nfdelay.c)
  libnetfilter-queue-dev
)

missing=()
for p in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  if [ "$status" != "install ok installed" ]; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "deps.sh: installing ${missing[*]}" >&2
SUDO=
if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
