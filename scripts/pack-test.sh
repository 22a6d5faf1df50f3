#!/usr/bin/env bash
# Packs rustasr with its prebuilt binaries (linux-x64 and linux-arm64, and the CUDA plugin where nvcc is),
# checks the tarball's contents, installs it into a fresh directory with no C/C++ compiler reachable, and
# transcribes the tiny golden model there from ES modules and from CommonJS: the golden ids must come out.
# Needs: `npm run build` done (dist/), ../shared/golden (or RUSTASR_GOLDEN_DIR); the arm64 cross toolchain
# when prebuilds/linux-arm64 is not built yet (.ci/run builds it first).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
golden=${RUSTASR_GOLDEN_DIR:-$repo/../shared/golden}
golden=$(cd "$golden" && pwd)

npm run prebuildify >/dev/null
ls prebuilds/linux-arm64/*.node >/dev/null 2>&1 || npm run prebuildify:arm64 >/dev/null
# The CUDA plugin rides along next to the x64 addon when nvcc is here (CI builds it): the installed package
# must then find it (probe reason from the plugin itself, not "not installed").
cuda_plugin=no
if [ "$(uname -m)" = x86_64 ] && { command -v nvcc >/dev/null || ls /usr/local/cuda*/bin/nvcc >/dev/null 2>&1; }; then
  npm run prebuildify:cuda >/dev/null
  cuda_plugin=yes
fi
ls prebuilds/*/*.node prebuilds/*/*.so 2>/dev/null || true
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# prepack (scripts/check-prebuilds.mjs) refuses a pack without the prebuilt binaries.
tarball=$(npm pack --silent --pack-destination "$work" | tail -n 1)

# The tarball: both prebuilds (and the CUDA plugin when built), the CommonJS build, LICENSE and docs; no
# native tests, no source maps.
contents=$(tar -tzf "$work/$tarball")
need() { grep -qx "package/$1" <<<"$contents" || { echo "pack-test: the tarball lacks $1" >&2; exit 1; }; }
need prebuilds/linux-x64/rustasr.glibc.node
need prebuilds/linux-arm64/rustasr.glibc.node
need dist/esm/index.js
need dist/esm/cli.js
need dist/cjs/index.js
need dist/cjs/index.d.ts
need dist/cjs/package.json
need LICENSE
need docs/formats.md
need README.md
if [ "$cuda_plugin" = yes ]; then need prebuilds/linux-x64/rustasr_cuda.so; fi
if grep -E '^package/(native/tests/|dist/.*\.map$|scripts/|test/|src/)' <<<"$contents"; then
  echo "pack-test: the tarball holds files it should not (above)" >&2
  exit 1
fi
echo "pack-test: $tarball: $(stat -c %s "$work/$tarball") bytes packed, $(wc -l <<<"$contents") files"

# A PATH with node, npm and sh only (npm runs lifecycle scripts through sh): no cc, c++, g++, make or python.
mkdir -p "$work/bin" "$work/app"
ln -s "$(command -v node)" "$work/bin/node"
ln -s "$(command -v sh)" "$work/bin/sh"
ln -s "$(readlink -f "$(command -v npm)")" "$work/bin/npm"
for tool in cc c++ gcc g++ make python3; do
  if PATH="$work/bin" command -v "$tool" >/dev/null 2>&1; then echo "pack-test: $tool is still reachable" >&2; exit 1; fi
done

cd "$work/app"
echo '{"name":"pack-test","version":"1.0.0","private":true,"type":"module"}' > package.json
PATH="$work/bin" CC=false CXX=false npm install --no-audit --no-fund --silent "$work/$tarball"
test ! -e node_modules/rustasr/build || { echo "pack-test: a build/ folder was produced (compiled?)" >&2; exit 1; }

cat > check.mjs <<'JS'
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { devices, transcribe } from 'rustasr';

const golden = process.argv[2];
const c = JSON.parse(readFileSync(join(golden, 'cases', 'tiny-a__en_5s.json'), 'utf8'));
const want = c.greedy.generated_ids;
const r = await transcribe(join(golden, c.audio), { model: join(golden, c.model_dir), maxNewTokens: want.length });
const ok = JSON.stringify(r.tokens) === JSON.stringify(want);
console.log(`pack-test: ids ${ok ? 'match' : 'DIFFER'}: ${r.tokens.join(' ')}`);
const cuda = (await devices()).find((d) => d.kind === 'cuda');
console.log(`pack-test: cuda: ${cuda.available ? 'available ' + cuda.name : cuda.reason}`);
const pluginFound = cuda.available || !/not installed/.test(cuda.reason);
if (process.argv[3] === 'yes' && !pluginFound) console.log('pack-test: the packed CUDA plugin was not found');
process.exit(ok && (process.argv[3] !== 'yes' || pluginFound) ? 0 : 1);
JS
PATH="$work/bin" node check.mjs "$golden" "$cuda_plugin"

# CommonJS: require('rustasr') from a .cjs file, the same golden ids, and the decoders work from CommonJS
# (rustasr/rx needs the optional rxjs peer; test/cjs.test.ts requires it in the repository).
cat > check.cjs <<'JS'
const { readFileSync } = require('node:fs');
const { join } = require('node:path');
const rustasr = require('rustasr');
const golden = process.argv[2];
const c = JSON.parse(readFileSync(join(golden, 'cases', 'tiny-a__en_5s.json'), 'utf8'));
const want = c.greedy.generated_ids;
(async () => {
  const r = await rustasr.transcribe(join(golden, c.audio), { model: join(golden, c.model_dir), maxNewTokens: want.length });
  const ok = JSON.stringify(r.tokens) === JSON.stringify(want);
  console.log(`pack-test (CommonJS): ids ${ok ? 'match' : 'DIFFER'}`);
  const a = await rustasr.decodeAudio(join(golden, c.audio));
  if (a.format !== 'wav/pcm' || a.channels.length !== 1) throw new Error(`decodeAudio: ${a.format}`);
  const err = await rustasr.decodeAudio(Buffer.from('OggS\0\2' + '\0'.repeat(40))).catch((e) => e);
  if (!(err instanceof rustasr.RustAsrError)) throw new Error(`decodeAudio error: ${err}`);
  process.exit(ok ? 0 : 1);
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
JS
PATH="$work/bin" node check.cjs "$golden"

# Messages of the installed package name only what it has: no `npm run build:cuda` (scripts/ is not shipped).
devices=$(PATH="$work/bin" node node_modules/rustasr/bin/rustasr.js devices)
echo "$devices"
if grep -q 'npm run build:cuda' <<<"$devices"; then echo "pack-test: devices names npm run build:cuda" >&2; exit 1; fi
