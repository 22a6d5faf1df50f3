#!/usr/bin/env bash
# CI step for the CUDA backend on a machine without a GPU (the CI image has the CUDA toolkit):
#   - nvcc must exist (fails otherwise) and builds the plugin, timed;
#   - the plugin exports exactly the three rustasr_plugin_* functions;
#   - devices() from Node loads the plugin and reports cuda unavailable with the probe's reason (no driver,
#     no GPU) instead of crashing - or available, on a machine that has a GPU.
# Run after `npm run build` (node-gyp rebuild deletes build/, the plugin's directory).
set -euo pipefail
cd "$(dirname "$0")/.."

NVCC="$(command -v nvcc || ls /usr/local/cuda/bin/nvcc /usr/local/cuda-*/bin/nvcc 2>/dev/null | head -1 || true)"
if [ -z "$NVCC" ]; then
  echo "ci-cuda: nvcc not found: the CI image must have the CUDA toolkit" >&2
  exit 1
fi
"$NVCC" --version
start=$(date +%s)
NVCC="$NVCC" bash scripts/build-cuda.sh
echo "ci-cuda: plugin build took $(( $(date +%s) - start )) s"

so=build/Release/rustasr_cuda.so
exports="$(nm -D --defined-only "$so" | awk '$2 ~ /^[TtWw]$/ {print $3}' | sort | tr '\n' ' ')"
echo "ci-cuda: exports: $exports"
if [ "$exports" != "rustasr_plugin_abi rustasr_plugin_create rustasr_plugin_probe " ]; then
  echo "ci-cuda: $so must export exactly rustasr_plugin_abi, rustasr_plugin_create, rustasr_plugin_probe" >&2
  exit 1
fi

node --input-type=module -e "
  const { devices } = await import('./dist/index.js');
  const all = await devices();
  const c = all.find((d) => d.kind === 'cuda');
  console.log('ci-cuda: devices():', JSON.stringify(all));
  if (!c) throw new Error('devices() has no cuda entry');
  if (c.available) {
    console.log('ci-cuda: cuda available here: ' + c.name);
  } else {
    if (!c.reason) throw new Error('cuda unavailable without a reason');
    if (/plugin not installed|cannot load the CUDA plugin|not a rustasr CUDA plugin|ABI/.test(c.reason))
      throw new Error('the CUDA plugin was not loaded: ' + c.reason);
    console.log('ci-cuda: cuda unavailable, as expected without a GPU: ' + c.reason);
  }
"
