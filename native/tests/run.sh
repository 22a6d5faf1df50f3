#!/usr/bin/env bash
# Native reliability checks, built without Node (see docs/reliability.md).
#
#   bash native/tests/run.sh release  [golden_main args]   golden parity, all kernels, optimised build
#   bash native/tests/run.sh asan     [golden_main args]   same under ASan + UBSan (+ LeakSanitizer); CI: --quick
#   bash native/tests/run.sh valgrind [CASE]               memcheck on one golden case (default tiny-a__en_1p2s)
#   bash native/tests/run.sh fuzz     [SECONDS]            each libFuzzer target for SECONDS (default 20)
#   bash native/tests/run.sh coverage                      gcov build: golden_main (full) + fuzz corpus replay,
#                                                          line coverage of native/src (gcovr)
#   bash native/tests/run.sh arm64    [golden_main args]   aarch64 cross build (g++-aarch64-linux-gnu,
#                                                          libopenblas-dev:arm64) run under qemu-aarch64: golden
#                                                          parity on the neon and scalar kernels (all cases;
#                                                          --quick: the two shortest)
# Golden data: $RUSTASR_GOLDEN_DIR or <repo>/../shared/golden. Builds go to native/tests/build/<mode>/ (ignored).
# JOBS (default 2) sets make's parallelism.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
JOBS="${JOBS:-2}"
MODE="${1:-}"
[ $# -gt 0 ] && shift
BUILD="$HERE/build"
TARGETS=(json safetensors config)

need() {
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || {
      echo "run.sh: '$tool' not found (apt-get install -y clang libclang-rt-14-dev valgrind gcovr)" >&2
      exit 2
    }
  done
}
build() { make -s -C "$HERE" -j"$JOBS" MODE="$1" "${@:2}"; }

case "$MODE" in
  release)
    build release golden
    exec "$BUILD/release/golden_main" "$@"
    ;;

  asan)
    need clang++
    build asan golden
    # LeakSanitizer is on by default with ASan on Linux; spell it out. OpenBLAS is not instrumented.
    export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:abort_on_error=0:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
    export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
    exec "$BUILD/asan/golden_main" "$@"
    ;;

  valgrind)
    need valgrind
    build valgrind golden
    CASE="${1:-tiny-a__en_1p2s}"
    # One OpenBLAS thread: its worker threads' startup allocations otherwise show up as "possibly lost".
    export OPENBLAS_NUM_THREADS=1
    exec valgrind --tool=memcheck --error-exitcode=1 --leak-check=full --show-leak-kinds=definite,indirect,possible \
      --errors-for-leak-kinds=definite,indirect,possible --track-origins=yes \
      --suppressions="$HERE/valgrind.supp" --gen-suppressions=all \
      "$BUILD/valgrind/golden_main" --case "$CASE" --kernel auto --threads 2 --serial
    ;;

  fuzz)
    need clang++
    SECONDS_EACH="${1:-20}"
    build fuzz fuzz
    status=0
    for t in "${TARGETS[@]}"; do
      corpus="$BUILD/fuzz-corpus/$t"   # grows across runs (ignored); the committed seeds stay as they are
      mkdir -p "$corpus" "$BUILD/fuzz-artifacts"
      echo "== fuzz_$t: ${SECONDS_EACH}s"
      log="$BUILD/fuzz-artifacts/fuzz_$t.log"
      if "$BUILD/fuzz/fuzz_$t" -max_total_time="$SECONDS_EACH" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
          -dict="$HERE/fuzz/json.dict" -artifact_prefix="$BUILD/fuzz-artifacts/fuzz_$t-" \
          "$corpus" "$REPO/test/fuzz/$t" >"$log" 2>&1; then
        echo "   ok: $(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | awk '{print $2}') executions," \
          "corpus $(ls "$corpus" | wc -l) inputs"
      else
        status=1
        echo "   FAILED (see $log):"
        tail -40 "$log"
      fi
    done
    exit $status
    ;;

  coverage)
    need gcovr
    build coverage golden replay
    find "$BUILD/coverage" -name '*.gcda' -delete
    "$BUILD/coverage/golden_main" "$@" | tail -1
    for t in "${TARGETS[@]}"; do
      dirs=("$REPO/test/fuzz/$t")
      [ -d "$BUILD/fuzz-corpus/$t" ] && dirs+=("$BUILD/fuzz-corpus/$t")
      printf 'replay_%s: ' "$t"
      "$BUILD/coverage/replay_$t" "${dirs[@]}"
    done
    gcovr --root "$REPO" --filter "$REPO/native/src/" --object-directory "$BUILD/coverage" \
      --txt "$BUILD/coverage/coverage.txt" --print-summary "$BUILD/coverage"
    echo "per-file report: $BUILD/coverage/coverage.txt"
    ;;

  arm64)
    for f in /usr/bin/aarch64-linux-gnu-g++ /usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.a; do
      [ -e "$f" ] || { echo "run.sh: $f missing (dpkg --add-architecture arm64; apt-get update;" \
        "apt-get install -y g++-aarch64-linux-gnu qemu-user libopenblas-dev:arm64)" >&2; exit 2; }
    done
    command -v qemu-aarch64 >/dev/null 2>&1 || { echo "run.sh: 'qemu-aarch64' not found (apt-get install -y qemu-user)" >&2; exit 2; }
    build arm64 golden
    # Every kernel of the build (neon, scalar), also with --quick (whose default is "auto" only).
    args=("$@")
    [[ " $* " == *" --kernel "* ]] || args+=(--kernel all)
    # The loader and all libraries from Debian's cross glibc (libc6-arm64-cross): -L maps the ELF
    # interpreter, LD_LIBRARY_PATH the libraries. Without LD_LIBRARY_PATH the cross ld.so picks up the
    # libc.so.6 of libc6:arm64 (/lib/aarch64-linux-gnu, pulled in by libopenblas-dev:arm64), another glibc
    # build, and the first pthread_create never returns.
    exec qemu-aarch64 -L /usr/aarch64-linux-gnu -E LD_LIBRARY_PATH=/usr/aarch64-linux-gnu/lib \
      "$BUILD/arm64/golden_main" "${args[@]}"
    ;;

  *)
    sed -n '2,15p' "$0" >&2
    exit 2
    ;;
esac
