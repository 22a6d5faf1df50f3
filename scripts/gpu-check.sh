#!/usr/bin/env bash
# `npm run test:gpu`: the CUDA backend checked on a machine with an NVIDIA GPU (see docs/cuda.md).
#
#   1. builds the addon if missing, then the plugin (scripts/build-cuda.sh -> build/Release/rustasr_cuda.so)
#   2. prints devices(): cuda must be available (else stops, with the reason)
#   3. native: golden_main --device cuda (every golden case bf16 + int8, then op-by-op CUDA vs CPU parity)
#   4. node:   test/golden-cuda.test.ts and test/golden.test.ts with RUSTASR_TEST_DEVICE=cuda
#   5. bench:  npm run bench -- --device cuda on the golden tiny model and (unless --quick) the 0.6B shapes
#
#   bash scripts/gpu-check.sh [--quick] [--no-bench]
set -euo pipefail
cd "$(dirname "$0")/.."
QUICK=0
BENCH=1
for a in "$@"; do
  case "$a" in
    --quick) QUICK=1 ;;
    --no-bench) BENCH=0 ;;
    *) echo "usage: gpu-check.sh [--quick] [--no-bench]" >&2; exit 2 ;;
  esac
done
step() { printf '\n== %s\n' "$*"; }
status=0

step "toolchain"
nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv || echo "(nvidia-smi unavailable)"
if ! ls build/Release/*.node >/dev/null 2>&1 || [ ! -d dist ]; then
  step "npm run build (addon + TypeScript)"
  npm run build
fi
step "npm run build:cuda"
bash scripts/build-cuda.sh

step "devices()"
node --input-type=module -e "
  const { devices } = await import('./dist/index.js');
  const d = await devices();
  console.log(JSON.stringify(d, null, 2));
  const c = d.find((x) => x.kind === 'cuda');
  if (!c || !c.available) { console.error('no usable CUDA device: ' + (c ? c.reason : 'not reported')); process.exit(1); }
"

step "native golden cases + op parity on cuda (golden_main --device cuda)"
make -s -C native/tests -j2 MODE=release golden
cp build/Release/rustasr_cuda.so native/tests/build/release/rustasr_cuda.so
if [ $QUICK -eq 1 ]; then
  native/tests/build/release/golden_main --device cuda --quick --no-errors || status=1
else
  native/tests/build/release/golden_main --device cuda --no-errors || status=1
fi

step "vitest: golden parity on cuda"
npx vitest run test/golden-cuda.test.ts || status=1
RUSTASR_TEST_DEVICE=cuda npx vitest run test/golden.test.ts || status=1

if [ $BENCH -eq 1 ]; then
  step "bench on cuda"
  if [ $QUICK -eq 1 ]; then
    npm run bench -- --quick --device cuda || status=1
  else
    npm run bench -- --device cuda --variants tiny,0.6b --clips 11s --reps 3 || status=1
  fi
fi

step "result"
if [ $status -eq 0 ]; then echo "gpu-check: all passed"; else echo "gpu-check: FAILURES (see above)"; fi
exit $status
