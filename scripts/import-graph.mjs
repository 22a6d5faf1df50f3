#!/usr/bin/env node
// The TypeScript import graph of src/: file-level cycles and imports that point up the layers.
//
//   node scripts/import-graph.mjs [--root DIR] [--edges]      exit code 1 when there is a cycle or an upward arrow
//
// Layers, bottom to top (docs/architecture.md): a file may import its own layer and the layers below.
//   0 errors.ts, native.ts
//   1 text/, audio/, hub/
//   2 core/
//   3 stages/
//   4 api/
//   5 index.ts, rx.ts, cli/, server/, queue/, synth/
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const args = process.argv.slice(2);
const root = resolve(args.includes('--root') ? args[args.indexOf('--root') + 1] : join(dirname(fileURLToPath(import.meta.url)), '..'));
const src = join(root, 'src');

const LAYERS = [
  ['errors.ts', 'native.ts'],
  ['text', 'audio', 'hub'],
  ['core'],
  ['stages'],
  ['api'],
  ['index.ts', 'rx.ts', 'cli', 'server', 'queue', 'synth'],
];
function layerOf(file) {
  const top = relative(src, file).split('/')[0];
  const i = LAYERS.findIndex((l) => l.includes(top));
  return i < 0 ? undefined : i;
}

function files(dir) {
  const out = [];
  for (const e of readdirSync(dir)) {
    const p = join(dir, e);
    if (statSync(p).isDirectory()) out.push(...files(p));
    else if (p.endsWith('.ts') && !p.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

const graph = new Map();
for (const f of files(src)) {
  const text = readFileSync(f, 'utf8');
  const deps = new Set();
  // Static imports and re-exports (type-only ones too: they are arrows of the design as well).
  for (const m of text.matchAll(/^\s*(?:import|export)\s[^'"]*?from\s+['"](\.{1,2}\/[^'"]+)['"]/gm)) {
    deps.add(resolve(dirname(f), m[1].replace(/\.js$/, '.ts')));
  }
  graph.set(f, [...deps].filter((d) => d.startsWith(src)));
}

const rel = (f) => relative(src, f);
const up = [];
for (const [f, deps] of graph) {
  for (const d of deps) {
    const a = layerOf(f);
    const b = layerOf(d);
    if (a === undefined || b === undefined) up.push(`${rel(f)} -> ${rel(d)} (no layer)`);
    else if (b > a) up.push(`${rel(f)} -> ${rel(d)} (layer ${a} imports layer ${b})`);
  }
}

// Cycles: strongly connected components with more than one file (Tarjan).
let index = 0;
const idx = new Map();
const low = new Map();
const stack = [];
const on = new Set();
const cycles = [];
function strong(v) {
  idx.set(v, index);
  low.set(v, index);
  index++;
  stack.push(v);
  on.add(v);
  for (const w of graph.get(v) ?? []) {
    if (!idx.has(w)) {
      strong(w);
      low.set(v, Math.min(low.get(v), low.get(w)));
    } else if (on.has(w)) low.set(v, Math.min(low.get(v), idx.get(w)));
  }
  if (low.get(v) === idx.get(v)) {
    const comp = [];
    let w;
    do {
      w = stack.pop();
      on.delete(w);
      comp.push(w);
    } while (w !== v);
    if (comp.length > 1) cycles.push(comp.map(rel).sort());
  }
}
for (const v of graph.keys()) if (!idx.has(v)) strong(v);

if (args.includes('--edges')) for (const [f, deps] of graph) for (const d of deps) console.log(`${rel(f)} -> ${rel(d)}`);
console.log(`files: ${graph.size}, imports: ${[...graph.values()].reduce((a, d) => a + d.length, 0)}`);
console.log(`cycles: ${cycles.length}`);
for (const c of cycles) console.log(`  ${c.join(' <-> ')}`);
console.log(`upward arrows: ${up.length}`);
for (const u of up) console.log(`  ${u}`);
if (cycles.length || up.length) process.exitCode = 1;
