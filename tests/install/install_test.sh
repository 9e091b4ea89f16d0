#!/usr/bin/env bash
# install_test.sh SRC WORK: `make install DESTDIR=...` from a release build
# of its own, then compile and run hello.c with `pkg-config --cflags --libs
# qraft`, linked once against the shared and once against the static library.
set -euo pipefail
src=$1
work=$2
rm -rf "$work"
mkdir -p "$work"
dest="$work/dest"
make -C "$src" --no-print-directory install DESTDIR="$dest" PREFIX=/usr/local \
  REL="$work/build" \
  CMAKE_FLAGS="-DQRAFT_BUILD_TESTS=OFF -DQRAFT_BUILD_BENCH=OFF" >"$work/install.log" 2>&1 \
  || { cat "$work/install.log"; exit 1; }

pcdir=$(dirname "$(find "$dest" -name qraft.pc | head -n 1)")
test -f "$pcdir/qraft.pc" || { echo "qraft.pc not installed"; exit 1; }
test -f "$dest/usr/local/include/qraft/qraft.h" || { echo "headers not installed"; exit 1; }
export PKG_CONFIG_PATH="$pcdir"

cflags=$(pkg-config --cflags qraft)
libs=$(pkg-config --libs qraft)
static_libs=$(pkg-config --static --libs qraft)
libdir=$(pkg-config --variable=libdir qraft)
echo "cflags: $cflags"
echo "libs: $libs"

cc -std=c11 -Wall -Wextra -Werror $cflags -o "$work/hello" \
  "$src/tests/install/hello.c" $libs
LD_LIBRARY_PATH="$libdir" "$work/hello" | tee "$work/out.txt"
grep -q "qraft 0" "$work/out.txt"

cc -std=c11 -Wall -Wextra -Werror $cflags -o "$work/hello-static" \
  "$src/tests/install/hello.c" -Wl,-Bstatic $libs -Wl,-Bdynamic $static_libs
"$work/hello-static" | grep -q "crc32c=e3069283"
if ldd "$work/hello-static" | grep -q libqraft; then
  echo "static program links libqraft.so"; exit 1
fi
echo "install test passed"
