#!/usr/bin/env bash
# Builds the prebuilt addon for this machine (prebuilds/<platform>-<arch>/rustasr.<libc>.node): the production
# surface only (RUSTASR_DEV=0: no stage-by-stage calls, no probes; see native/addon/dev.cpp). Run it through npm,
# `npm run prebuildify`, so that node-gyp gets npm's config (nodedir).
#
# The build runs in a scratch copy of binding.gyp + native/{addon,include,src}, so build/Release (the
# development addon with its dev surface, which node-gyp-build loads before any prebuild and the tests use) is
# left alone.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/native"
cp -r binding.gyp package.json "$work/"
cp -r native/addon native/include native/src "$work/native/"
ln -s "$repo/node_modules" "$work/node_modules"
RUSTASR_DEV=0 JOBS="${JOBS:-2}" prebuildify --napi --strip --tag-libc --out "$repo" "$work"
# The production surface only: no `dev` export.
node=$(ls "$repo"/prebuilds/"$(node -p 'process.platform + "-" + process.arch')"/*.node | head -1)
node -e "
  const b = require(process.argv[1]);
  if (b.dev !== undefined) { console.error('prebuildify-host: ' + process.argv[1] + ' has the dev surface'); process.exit(1); }
  for (const f of ['loadModel', 'devices', 'liveObjects']) if (typeof b[f] !== 'function') { console.error('prebuildify-host: no ' + f); process.exit(1); }
  console.log('prebuildify-host: ok ' + process.argv[1]);
" "$node"
