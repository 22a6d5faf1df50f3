#!/usr/bin/env bash
# Cross-builds the linux-arm64 prebuilt addon, prebuilds/linux-arm64/rustasr.glibc.node, on a Debian x86-64
# host with Debian's aarch64 toolchain and OpenBLAS, then checks the file it produced (see docs/architecture.md,
# "linux-arm64"). Run it through npm, `npm run prebuildify:arm64`, so that node-gyp gets npm's config (nodedir).
#
# Needs: g++-aarch64-linux-gnu and libopenblas-dev:arm64 (dpkg --add-architecture arm64). The build runs in a
# scratch copy of binding.gyp + native/{addon,include,src}, so build/Release (the host's addon, which
# node-gyp-build loads before any prebuild) is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
triple=aarch64-linux-gnu
for f in "/usr/bin/$triple-g++" "/usr/bin/$triple-strip" "/usr/lib/$triple/openblas-pthread/libopenblas.a"; do
  if [ ! -e "$f" ]; then
    echo "prebuildify-arm64: $f missing (apt-get install g++-aarch64-linux-gnu libopenblas-dev:arm64," \
      "after dpkg --add-architecture arm64 && apt-get update)" >&2
    exit 2
  fi
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/native"
cp -r binding.gyp package.json "$work/"
cp -r native/addon native/include native/src "$work/native/"
ln -s "$repo/node_modules" "$work/node_modules"

out="$repo/prebuilds/linux-arm64"
rm -rf "$out"
RUSTASR_DEV=0 CC="$triple-gcc" CXX="$triple-g++" LINK="$triple-g++" AR="$triple-ar" JOBS="${JOBS:-2}" \
  prebuildify --napi --strip --tag-libc --arch arm64 --strip-bin "$triple-strip" --out "$repo" "$work"

# The file must be an aarch64 shared object with the N-API entry point, OpenBLAS linked in (no libopenblas
# dependency) and kept private (--exclude-libs), needing nothing beyond glibc, libstdc++ and libgcc_s.
node=$(ls "$out"/*.node)
[ "$(echo "$node" | wc -l)" = 1 ] || { echo "prebuildify-arm64: expected one .node in $out, got: $node" >&2; exit 1; }
fail() { echo "prebuildify-arm64: $node: $*" >&2; exit 1; }
header=$(readelf -h "$node")
grep -q 'Type: *DYN' <<<"$header" || fail "not a shared object"
grep -q 'Machine: *AArch64' <<<"$header" || fail "not AArch64"
needed=$(readelf -d "$node" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | sort | paste -sd' ')
for lib in $needed; do
  case "$lib" in
    libc.so.6 | libm.so.6 | libstdc++.so.6 | libgcc_s.so.1 | libpthread.so.0 | libdl.so.2 | ld-linux-aarch64.so.1) ;;
    *) fail "unexpected dependency $lib (needs: $needed)" ;;
  esac
done
dynsyms=$(readelf --dyn-syms -W "$node")
grep -Eq ' GLOBAL +DEFAULT +[0-9]+ napi_register_module_v1$' <<<"$dynsyms" || fail "napi_register_module_v1 not exported"
if grep -Eq ' (GLOBAL|WEAK) +DEFAULT +[0-9]+ (cblas_|openblas_|sgemm_)' <<<"$dynsyms"; then fail "exports OpenBLAS symbols"; fi
glibc=$(readelf -V "$node" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1)
if command -v file >/dev/null; then echo "prebuildify-arm64: $(file -b "$node")"; fi
echo "prebuildify-arm64: ok $node ($(stat -c %s "$node") bytes; needs $needed; newest symbol version $glibc)"

# With qemu-user: the arm64 dynamic loader (Debian's cross glibc) must load it (NEEDED libraries, symbol
# versions, relocations, static initialisers) and find the entry point. There is no arm64 node here, so the
# napi_* imports are left unbound (RTLD_LAZY) and the module is not initialised.
if command -v qemu-aarch64 >/dev/null; then
  cat >"$work/load.c" <<'C'
#include <dlfcn.h>
#include <stdio.h>
int main(int argc, char** argv) {
  if (argc != 2) return 2;
  void* h = dlopen(argv[1], RTLD_LAZY | RTLD_LOCAL);
  if (!h) { fprintf(stderr, "dlopen: %s\n", dlerror()); return 1; }
  if (!dlsym(h, "napi_register_module_v1")) { fprintf(stderr, "dlsym: %s\n", dlerror()); return 1; }
  return dlclose(h) == 0 ? 0 : 1;
}
C
  "$triple-gcc" -Wall -Wextra -Werror -O1 "$work/load.c" -o "$work/load" -ldl
  # -L and LD_LIBRARY_PATH: all of the loader and libraries from libc6-arm64-cross (see native/tests/run.sh arm64).
  qemu-aarch64 -L "/usr/$triple" -E "LD_LIBRARY_PATH=/usr/$triple/lib" "$work/load" "$node" ||
    fail "does not load under qemu-aarch64"
  echo "prebuildify-arm64: dlopen under qemu-aarch64: ok"
else
  echo "prebuildify-arm64: qemu-aarch64 not found: load check skipped"
fi
