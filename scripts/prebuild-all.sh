#!/usr/bin/env bash
# Builds every prebuilt binary the npm package ships (what `npm pack` requires, see scripts/check-prebuilds.mjs):
# linux-x64, linux-arm64 (cross-built), and the CUDA plugin when nvcc is here. Run through npm:
# `npm run prebuild:all`.
set -euo pipefail
cd "$(dirname "$0")/.."
npm run prebuildify
npm run prebuildify:arm64
if command -v nvcc >/dev/null || ls /usr/local/cuda*/bin/nvcc >/dev/null 2>&1; then
  npm run prebuildify:cuda
fi
node scripts/check-prebuilds.mjs
