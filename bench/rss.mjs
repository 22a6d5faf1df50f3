// Where the resident memory goes, phase by phase, in one fresh process (Linux only: /proc/self).
//
//   node bench/rss.mjs --model DIR --clip WAV [--quant bf16|int8] [--threads 2] [--tokens 32] [--reps 1] [--low-memory on|off]
//                      [--smaps]
//
// Runs what a bench case runs (load, mel, the first encode, then `reps` full transcriptions) and prints, after
// each phase, the resident set split into anonymous memory (heap, thread arenas, JS heap) and file-backed
// pages (the memory-mapped weights; shared page cache, but counted in RSS), plus the phase's own peak: the
// peak counter (VmHWM) is reset before each phase by writing 5 to /proc/self/clear_refs. --smaps adds the
// largest mappings of /proc/self/smaps at the end. Prints a table on stderr and one JSON line on stdout.
import { readFileSync, writeFileSync } from 'node:fs';
import { clearInterval, setInterval } from 'node:timers';
import { performance } from 'node:perf_hooks';
import { resolve } from 'node:path';
import { pathToFileURL, URL } from 'node:url';

const args = process.argv.slice(2);
const opt = (name, def) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : def;
};
const model = opt('model');
const clip = opt('clip');
if (!model || !clip) {
  process.stderr.write('usage: node bench/rss.mjs --model DIR --clip WAV [--quant bf16|int8] [--threads 2] [--tokens 32] [--reps 1] [--low-memory on|off] [--smaps]\n');
  process.exit(2);
}
const quant = opt('quant', 'bf16');
const threads = Number(opt('threads', '2'));
const tokens = Number(opt('tokens', '32'));
const reps = Number(opt('reps', '1'));

const sdkRoot = process.env.RUSTASR_BENCH_ROOT ? pathToFileURL(`${resolve(process.env.RUSTASR_BENCH_ROOT)}/`) : new URL('../', import.meta.url);
const sdk = await import(new URL('dist/index.js', sdkRoot).href);

const MB = 1024 * 1024;
function status() {
  const s = readFileSync('/proc/self/status', 'utf8');
  const kb = (key) => {
    const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(s);
    return m ? (Number(m[1]) * 1024) / MB : NaN;
  };
  return { rss: kb('VmRSS'), anon: kb('RssAnon'), file: kb('RssFile'), hwm: kb('VmHWM') };
}
function resetPeak() {
  try {
    writeFileSync('/proc/self/clear_refs', '5');
    return true;
  } catch {
    return false;
  }
}

const rows = [];
let canReset = resetPeak();
async function phase(name, fn) {
  canReset = resetPeak() && canReset;
  // The native work runs on worker threads, so this thread can sample the split at the phase's largest RSS.
  let top = status();
  const timer = setInterval(() => {
    const s = status();
    if (s.rss > top.rss) top = s;
  }, 10);
  const t0 = performance.now();
  const r = await fn();
  const ms = performance.now() - t0;
  clearInterval(timer);
  const s = status();
  if (s.rss > top.rss) top = s;
  const heap = process.memoryUsage();
  rows.push({
    phase: name,
    ms,
    ...s,
    topAnon: top.anon,
    topFile: top.file,
    jsHeap: heap.heapUsed / MB,
    external: heap.external / MB,
    arrayBuffers: heap.arrayBuffers / MB,
  });
  return r;
}

rows.push({ phase: 'start', ms: 0, ...status(), jsHeap: process.memoryUsage().heapUsed / MB });
const samples = await phase('read audio', () => sdk.loadAudio(clip, 16000));
const lowMemory = opt('low-memory', 'on') !== 'off';
const m = await phase('Model.load', () => sdk.Model.load(model, { threads, lowMemory, ...(quant !== 'bf16' ? { quant } : {}) }));
await phase('tokenizer', () => m.ready());
const session = m.createSession();
const mel = await phase('mel', () => session.mel(samples));
const enc = await phase('encode', () => session.encode(mel.data, mel.frames, false));
session.dispose();
void enc;
for (let r = 0; r < reps; r++) {
  await phase(`transcribe ${r + 1}`, async () => {
    const gen = m.decode(samples, { maxNewTokens: tokens });
    for (;;) if ((await gen.next()).done) break;
  });
}
const globalPeak = Math.max(...rows.map((r) => r.hwm));
const smapsText = args.includes('--smaps') ? readFileSync('/proc/self/smaps', 'utf8') : undefined;
m.dispose();
await phase('dispose', () => undefined);

const fmt = (v) => (Number.isFinite(v) ? v.toFixed(0) : '-');
const lines = [`rss phases: ${model} ${clip} ${quant}, ${threads} threads, ${tokens} tokens (MiB; peak = VmHWM ${canReset ? 'within the phase' : 'since start, clear_refs refused'})`];
lines.push('phase            ms     rss   anon   file   peak  jsHeap  | largest sampled rss: anon   file');
for (const r of rows) {
  lines.push(
    `${r.phase.padEnd(14)} ${fmt(r.ms).padStart(6)} ${fmt(r.rss).padStart(7)} ${fmt(r.anon).padStart(6)} ${fmt(r.file).padStart(6)} ${fmt(r.hwm).padStart(6)} ${fmt(r.jsHeap).padStart(7)}  | ${fmt(r.topAnon).padStart(25)} ${fmt(r.topFile).padStart(6)}`,
  );
}
let smaps;
if (smapsText) {
  // Largest mappings by Rss, read before dispose (the weights are still mapped).
  smaps = [];
  let cur;
  for (const line of smapsText.split('\n')) {
    const head = /^([0-9a-f]+)-([0-9a-f]+)\s+\S+\s+\S+\s+\S+\s+\S+\s*(.*)$/.exec(line);
    if (head) {
      cur = { name: head[3] || '[anon]', size: (parseInt(head[2], 16) - parseInt(head[1], 16)) / MB, rss: 0 };
      smaps.push(cur);
      continue;
    }
    const kv = /^Rss:\s+(\d+) kB/.exec(line);
    if (kv && cur) cur.rss = Number(kv[1]) / 1024;
  }
  smaps.sort((a, b) => b.rss - a.rss);
  smaps = smaps.slice(0, 12);
  for (const s of smaps) lines.push(`  smaps ${fmt(s.rss).padStart(6)} MiB of ${fmt(s.size).padStart(6)} ${s.name}`);
}
lines.push(`peak RSS over the whole run: ${fmt(globalPeak)} MiB (${(globalPeak * MB / 1e9).toFixed(2)} GB)${canReset ? ' (max of the phase peaks)' : ''}`);
process.stderr.write(`${lines.join('\n')}\n`);
process.stdout.write(`${JSON.stringify({ model, clip, quant, threads, tokens, info: m.info, phases: rows, smaps })}\n`);
