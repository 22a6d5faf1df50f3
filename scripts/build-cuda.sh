#!/usr/bin/env bash
# Builds the CUDA backend plugin: build/Release/rustasr_cuda.so (or $1/rustasr_cuda.so).
#
#   npm run build:cuda            (= bash scripts/build-cuda.sh)
#   bash scripts/build-cuda.sh DIR
#
# nvcc from $NVCC, else PATH, else /usr/local/cuda*/bin. SASS for sm_75 sm_80 sm_86 sm_89 sm_90 plus
# compute_90 PTX (JIT on newer GPUs), static cudart (the plugin needs only the driver, libcuda.so.1, at
# run time), hidden visibility: the three rustasr_plugin_* functions are the only exports. Objects go to
# build-cuda/ and are rebuilt when a source or header is newer. node-gyp rebuild deletes build/: run this
# after `npm run build`. NVCC_THREADS (default 2) limits nvcc's parallelism; the build runs under nice -n 10.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
OUT_DIR="${1:-$REPO/build/Release}"
OBJ="$REPO/build-cuda"  # outside build/: node-gyp rebuild deletes build/
SRC="$REPO/native/src/backend/cuda"
THREADS="${NVCC_THREADS:-2}"

NVCC="${NVCC:-}"
if [ -z "$NVCC" ]; then
  NVCC="$(command -v nvcc || true)"
  if [ -z "$NVCC" ]; then
    for c in /usr/local/cuda/bin/nvcc /usr/local/cuda-*/bin/nvcc; do
      [ -x "$c" ] && { NVCC="$c"; break; }
    done
  fi
fi
if [ -z "$NVCC" ] || [ ! -x "$NVCC" ]; then
  echo "build-cuda: nvcc not found (install the CUDA toolkit, or set NVCC=/path/to/nvcc)" >&2
  exit 2
fi

GENCODE=(
  -gencode arch=compute_75,code=sm_75
  -gencode arch=compute_80,code=sm_80
  -gencode arch=compute_86,code=sm_86
  -gencode arch=compute_89,code=sm_89
  -gencode arch=compute_90,code=[sm_90,compute_90]
)
FLAGS=(
  -std=c++17 -O3 --default-stream per-thread -cudart static --threads "$THREADS"
  -Werror all-warnings
  -Xcompiler -fPIC,-fvisibility=hidden,-fvisibility-inlines-hidden,-Wall,-Wextra
  -I"$REPO/native/include" -I"$REPO/native/src"
)

mkdir -p "$OBJ" "$OUT_DIR"
start=$(date +%s)
objs=()
headers=("$SRC"/*.cuh "$SRC"/plugin_api.h "$REPO"/native/src/backend/backend.h "$REPO"/native/src/util/tensor.h
         "$REPO"/native/include/rustasr/engine.h)
compile() {  # source object [extra flags]
  local src="$1" obj="$2"
  shift 2
  local stale=0
  [ -f "$obj" ] || stale=1
  if [ $stale -eq 0 ]; then
    for dep in "$src" "${headers[@]}" "$0"; do [ "$dep" -nt "$obj" ] && { stale=1; break; }; done
  fi
  if [ $stale -eq 1 ]; then
    echo "  nvcc $(basename "$src")"
    nice -n 10 "$NVCC" "${FLAGS[@]}" "$@" -c "$src" -o "$obj"
  fi
  objs+=("$obj")
}
echo "build-cuda: $("$NVCC" --version | tail -1)"
for f in "$SRC"/*.cu; do
  compile "$f" "$OBJ/$(basename "$f" .cu).o" "${GENCODE[@]}"
done
# Engine helpers the backend uses (Weight conversion, error names): plain host code.
for f in util/tensor.cpp util/error.cpp; do
  compile "$REPO/native/src/$f" "$OBJ/$(basename "$f" .cpp).o"
done
nice -n 10 "$NVCC" "${FLAGS[@]}" "${GENCODE[@]}" -shared -o "$OUT_DIR/rustasr_cuda.so" "${objs[@]}" \
  -Xlinker --version-script="$SRC/exports.map" -Xlinker --exclude-libs,ALL -Xlinker -z,defs
strip --strip-unneeded "$OUT_DIR/rustasr_cuda.so"
end=$(date +%s)
echo "build-cuda: $OUT_DIR/rustasr_cuda.so ($(du -h "$OUT_DIR/rustasr_cuda.so" | cut -f1), $((end - start)) s)"
