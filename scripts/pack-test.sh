#!/usr/bin/env bash
# Packs rustasr with its prebuilt binary, installs the tarball into a fresh directory with no C/C++
# compiler reachable, and transcribes the tiny golden model there: the golden ids must come out.
# Needs: `npm run build` done (dist/), ../shared/golden (or RUSTASR_GOLDEN_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
golden=${RUSTASR_GOLDEN_DIR:-$repo/../shared/golden}
golden=$(cd "$golden" && pwd)

npm run prebuildify >/dev/null
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
tarball=$(npm pack --silent --pack-destination "$work" | tail -n 1)

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
