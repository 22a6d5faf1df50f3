// `npm pack` / `npm publish` guard (the prepack script): the tarball must carry the prebuilt addons for
// linux-x64 and linux-arm64 (and the CUDA plugin when this machine can build it), each an ELF file of the
// right machine, built from the native sources as they are now. Without them it fails loudly and says how
// to make them (`npm run prebuild:all`), instead of packing a package that compiles at install or does not load.
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { execSync } from 'node:child_process';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const problems = [];

/** Newest modification time of the native sources the addon is built from. */
function newestSource() {
  let t = statSync(join(root, 'binding.gyp')).mtimeMs;
  const walk = (dir) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else t = Math.max(t, statSync(p).mtimeMs);
    }
  };
  for (const d of ['native/addon', 'native/src', 'native/include']) if (existsSync(join(root, d))) walk(join(root, d));
  return t;
}

/** ELF e_machine of a file (62 x86-64, 183 AArch64), or undefined when it is not a 64-bit little-endian ELF. */
function elfMachine(file) {
  const b = readFileSync(file).subarray(0, 20);
  if (b.length < 20 || b[0] !== 0x7f || b.toString('latin1', 1, 4) !== 'ELF' || b[4] !== 2 || b[5] !== 1) return undefined;
  return b.readUInt16LE(18);
}

const sources = newestSource();
const wanted = [
  { dir: 'linux-x64', machine: 62, ext: '.node', make: 'npm run prebuildify' },
  { dir: 'linux-arm64', machine: 183, ext: '.node', make: 'npm run prebuildify:arm64' },
];
let nvcc = false;
try {
  execSync('command -v nvcc || ls /usr/local/cuda*/bin/nvcc', { stdio: 'ignore', shell: '/bin/sh' });
  nvcc = true;
} catch {
  // no CUDA toolkit here: the plugin is not part of this pack
}
if (nvcc) wanted.push({ dir: 'linux-x64', machine: 62, ext: '.so', make: 'npm run prebuildify:cuda', name: 'rustasr_cuda.so' });

for (const w of wanted) {
  const dir = join(root, 'prebuilds', w.dir);
  const files = existsSync(dir) ? readdirSync(dir).filter((f) => (w.name ? f === w.name : f.endsWith(w.ext))) : [];
  if (files.length !== 1) {
    problems.push(`prebuilds/${w.dir}: expected one ${w.name ?? `*${w.ext}`}, found ${files.length === 0 ? 'none' : files.join(', ')} (make it with \`${w.make}\`)`);
    continue;
  }
  const file = join(dir, files[0]);
  const machine = elfMachine(file);
  if (machine !== w.machine) problems.push(`prebuilds/${w.dir}/${files[0]}: not an ELF file for ${w.dir} (e_machine ${machine})`);
  if (statSync(file).mtimeMs < sources) problems.push(`prebuilds/${w.dir}/${files[0]} is older than the native sources (rebuild it with \`${w.make}\`)`);
  else console.error(`check-prebuilds: ${w.dir}/${files[0]} ${statSync(file).size} bytes`);
}

if (problems.length > 0) {
  console.error('check-prebuilds: the package would ship without usable prebuilt binaries:');
  for (const p of problems) console.error(`  - ${p}`);
  console.error('Run `npm run prebuild:all` (x64 and arm64; the CUDA plugin with `npm run prebuildify:cuda` where nvcc is), then pack again.');
  process.exit(1);
}
