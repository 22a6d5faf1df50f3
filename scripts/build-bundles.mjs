// Builds the bundles the package runs from, next to the ES module build that tsc writes to dist/ (which keeps
// the type declarations and serves the repository's scripts). Run by `npm run build:ts`, after tsc.
// - dist/esm/: `import 'rustasr'`, `rustasr/rx`, `rustasr/server`, `rustasr/queue` and the CLI
//   (bin/rustasr.js) as ES module bundles with shared chunks, so each module exists once across them (one
//   RustAsrError class). One file instead of ~50 modules halves the SDK's import (run 8: 94 -> 37 ms; Node's
//   ES module loader costs ~1 ms per module).
// - dist/cjs/: the CommonJS entry points (index.js, rx.js) for `require('rustasr')`, one file each.
// Dependencies stay external; the WebAssembly audio decoders (ES modules only) are loaded with import(),
// which CommonJS code can call. The type declarations are tsc's, copied under dist/cjs/ where a package.json
// marks them CommonJS.
import { build } from 'esbuild';
import { cpSync, mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const dist = join(root, 'dist');
const out = join(dist, 'cjs');

const common = { bundle: true, platform: 'node', target: 'node20', packages: 'external', logLevel: 'warning', absWorkingDir: root };
const cjs = {
  ...common,
  format: 'cjs',
  // import.meta.url is what the ES build uses to find its own files; in CommonJS it is __filename's URL.
  define: { 'import.meta.url': '__rustasr_import_meta_url' },
  banner: { js: "const __rustasr_import_meta_url = require('node:url').pathToFileURL(__filename).href;" },
};

rmSync(join(dist, 'esm'), { recursive: true, force: true }); // chunk names carry a hash: none may linger
await build({
  ...common,
  format: 'esm',
  splitting: true,
  entryPoints: { index: 'src/index.ts', rx: 'src/rx.ts', server: 'src/server/index.ts', queue: 'src/queue/index.ts', cli: 'src/cli/index.ts' },
  outdir: join(dist, 'esm'),
  chunkNames: 'chunks/[name]-[hash]',
});

await build({ ...cjs, entryPoints: ['src/index.ts'], outfile: join(out, 'index.js') });
// rustasr/rx shares the index bundle's classes (one RustAsrError, one Transcriber): its imports of the SDK
// resolve to the index bundle.
await build({
  ...cjs,
  entryPoints: ['src/rx.ts'],
  outfile: join(out, 'rx.js'),
  plugins: [
    {
      name: 'rx-uses-index',
      setup(b) {
        b.onResolve({ filter: /^\.\/(api|stages)\// }, (args) =>
          args.importer.endsWith(join('src', 'rx.ts')) ? { path: './index.js', external: true } : undefined,
        );
      },
    },
  ],
});

writeFileSync(join(out, 'package.json'), JSON.stringify({ type: 'commonjs' }) + '\n');

// tsc's declarations, under the CommonJS package.json: TypeScript then reads them as CommonJS types.
function copyDeclarations(dir) {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (p === out || p === join(dist, 'esm')) continue;
    if (statSync(p).isDirectory()) copyDeclarations(p);
    else if (name.endsWith('.d.ts')) {
      const to = join(out, relative(dist, p));
      mkdirSync(dirname(to), { recursive: true });
      cpSync(p, to);
    }
  }
}
copyDeclarations(dist);
