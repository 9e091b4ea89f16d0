# go_etcd.sh (sourced by the benchmarks): go_etcd_build SRC OUT builds a Go
# program against etcd 3.4's packages from Debian (golang-go and
# golang-etcd-server-dev, installed with apt-get when missing and when we
# are root), in GOPATH mode, so nothing is downloaded from elsewhere.
# Rebuilds only when SRC is newer than OUT. Returns 0, or 1 with the reason
# in GO_ETCD_WHY.
go_etcd_build() {
  local src=$1 out=$2
  GO_ETCD_WHY=""
  if { ! command -v go >/dev/null || [ ! -d /usr/share/gocode/src/go.etcd.io/etcd/raft ]; } &&
     [ -x /usr/bin/apt-get ] && [ "$(id -u)" = 0 ]; then
    echo "installing Debian's golang-go and golang-etcd-server-dev (benchmarks only)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q golang-go golang-etcd-server-dev \
      >/dev/null 2>&1 ||
      { apt-get update -q >/dev/null 2>&1 &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q golang-go \
          golang-etcd-server-dev >/dev/null 2>&1; } || true
  fi
  if ! command -v go >/dev/null || [ ! -d /usr/share/gocode/src/go.etcd.io/etcd/raft ]; then
    GO_ETCD_WHY="Go or etcd's Go packages are missing (apt-get install golang-go golang-etcd-server-dev)"
    return 1
  fi
  if [ -x "$out" ] && [ ! "$src" -nt "$out" ]; then
    return 0
  fi
  mkdir -p "$(dirname "$out")"
  local log cache
  cache="$(cd "$(dirname "$out")" && pwd)/gocache" # go wants it absolute
  log=$(GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE="$cache" \
          go build -o "$out" "$src" 2>&1) ||
    { GO_ETCD_WHY="could not build $src: $(tail -1 <<<"$log")"; return 1; }
}
