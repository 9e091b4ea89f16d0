# ports.sh (sourced): pick_base sets BASE to the first port of a block of
# 100 free TCP and UDP ports below the kernel's ephemeral range, so that no
# client connection (ours or another program's) can hold one of them when a
# member binds it. The block is chosen from the process id, and skipped
# while any socket uses a port of it.
pick_base() {
  local eph slots slot used
  eph=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
  slots=$(( (eph - 20000) / 100 ))
  [ "$slots" -ge 1 ] || slots=1
  used=$(ss -Htuan 2>/dev/null | awk '{print $5}' || true)
  slot=$(( $$ % slots ))
  for _ in $(seq "$slots"); do
    BASE=$(( 20000 + slot * 100 ))
    grep -qE ":$(( BASE / 100 ))[0-9][0-9]\$" <<<"$used" || return 0
    slot=$(( (slot + 1) % slots ))
  done
}
