// Builds the CommonJS entry points (dist/cjs/index.js, dist/cjs/rx.js) for `require('rustasr')`, next to the
// ES module build that tsc writes to dist/. esbuild bundles src/ into one CommonJS file per entry point
// (dependencies stay external; the WebAssembly audio decoders, ES modules only, are loaded with import(),
// which CommonJS code can call); the type declarations are tsc's, copied under dist/cjs/ where a
// package.json marks them CommonJS. Run by `npm run build:ts`, after tsc.
import { build } from 'esbuild';
import { cpSync, mkdirSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const dist = join(root, 'dist');
const out = join(dist, 'cjs');

const common = {
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  packages: 'external',
  // import.meta.url is what the ES build uses to find its own files; in CommonJS it is __filename's URL.
  define: { 'import.meta.url': '__rustasr_import_meta_url' },
  banner: { js: "const __rustasr_import_meta_url = require('node:url').pathToFileURL(__filename).href;" },
  logLevel: 'warning',
  absWorkingDir: root,
};

await build({ ...common, entryPoints: ['src/index.ts'], outfile: join(out, 'index.js') });
// rustasr/rx shares the index bundle's classes (one RustAsrError, one Transcriber): its imports of the SDK
// resolve to the index bundle.
await build({
  ...common,
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
    if (p === out) continue;
    if (statSync(p).isDirectory()) copyDeclarations(p);
    else if (name.endsWith('.d.ts')) {
      const to = join(out, relative(dist, p));
      mkdirSync(dirname(to), { recursive: true });
      cpSync(p, to);
    }
  }
}
copyDeclarations(dist);
