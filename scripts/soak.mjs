#!/usr/bin/env node
// Soak test: transcribes N generated inputs on one loaded model through the public API, in one process, and
// checks that nothing leaks or fails: `npm run soak -- [--files 1000] [--concurrency 2] [--model DIR]`.
//
// Inputs (deterministic for a --seed): the golden WAV files as they are; golden speech, white noise and
// silence cut to 0.3 .. 30 s, resampled to 8 / 16 / 22.05 / 44.1 / 48 kHz and written as PCM 8/16/24/32 or
// float 32/64, mono or stereo, plain or WAVE_FORMAT_EXTENSIBLE; given as WAV bytes, a byte stream, a file
// path or 16 kHz samples; plus ~10 % invalid inputs, each of which must fail with its RustAsrError code.
//
// Pass criteria (exit 1 otherwise): no valid input failed, every invalid input failed with the expected
// code, the golden files give the golden ids, RSS at the end within 5 % of RSS after warm-up and heap within
// 10 % (medians of three samples, see below), process.getActiveResourcesInfo() back to its warm-up state, and the native addon's live
// model/session counts back to zero once the model is disposed. Prints one JSON summary on stdout.
// Needs the TypeScript build (npm run build:ts) and the native addon. Runs itself under the node flags it needs
// (gc exposed, a fixed young generation: see NODE_FLAGS).
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Readable } from 'node:stream';
import { setImmediate as tick } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs, TextEncoder } from 'node:util';
import { Buffer } from 'node:buffer';
import { spawnSync } from 'node:child_process';

import { buildWav, encodeSamples, rng, wavFromSamples } from './wav-builder.mjs';

// V8 grows its young generation in steps (semi-spaces 1 -> 2 -> ... -> 16 MB) as allocation throughput
// rises, and each step adds its pages to RSS for good: +24 MB spread over the first few hundred files, which
// reads as a leak in a short run. The soak therefore runs with the young generation fixed at its default
// maximum from the start (and with gc exposed), re-executing itself with those flags when they are missing.
const NODE_FLAGS = ['--expose-gc', '--min-semi-space-size=16', '--max-semi-space-size=16'];
if (!NODE_FLAGS.every((f) => process.execArgv.includes(f))) {
  const r = spawnSync(process.execPath, [...new Set([...process.execArgv, ...NODE_FLAGS])].concat(fileURLToPath(import.meta.url), process.argv.slice(2)), {
    stdio: 'inherit',
  });
  process.exit(r.status ?? 1);
}

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
if (!existsSync(join(root, 'dist', 'index.js'))) {
  console.error('soak: dist/ is missing; run `npm run build:ts` first');
  process.exit(2);
}
const { loadModel, loadAudio, transcribe, RustAsrError } = await import('../dist/index.js');
const { resample } = await import('../dist/stages/resample.js');
const { native } = await import('../dist/native.js');

const { values: args } = parseArgs({
  options: {
    files: { type: 'string', default: '1000' },
    concurrency: { type: 'string', default: '2' },
    model: { type: 'string' },
    golden: { type: 'string' },
    threads: { type: 'string', default: '0' },
    'max-new-tokens': { type: 'string', default: '6' },
    seed: { type: 'string', default: '1' },
    'warmup': { type: 'string' },
    'rss-drift': { type: 'string', default: '5' },
    'heap-drift': { type: 'string', default: '10' },
    verbose: { type: 'boolean', default: false },
  },
});
const N = Number(args.files);
const CONCURRENCY = Math.max(1, Number(args.concurrency));
const MAX_NEW = Number(args['max-new-tokens']);
const WARMUP = args.warmup !== undefined ? Number(args.warmup) : Math.min(N - 1, Math.max(20, Math.round(N / 10)));
const goldenDir = resolve(args.golden ?? process.env.RUSTASR_GOLDEN_DIR ?? join(root, '..', 'shared', 'golden'));
const modelDir = resolve(args.model ?? join(goldenDir, 'models', 'tiny-a'));
if (!Number.isInteger(N) || N < 2) {
  console.error('soak: --files must be an integer >= 2');
  process.exit(2);
}

const gc = typeof globalThis.gc === 'function' ? globalThis.gc : undefined;
const settle = async () => {
  for (let i = 0; i < 3; i++) {
    await tick();
    gc?.();
  }
};

// ------------------------------------------------------------------------------------------------ inputs

const rand = rng(Number(args.seed));
const pick = (xs) => xs[Math.floor(rand() * xs.length)];
const RATES = [8000, 16000, 22050, 44100, 48000];
const LAYOUTS = [
  { bits: 8 },
  { bits: 16 },
  { bits: 24 },
  { bits: 32 },
  { bits: 32, float: true },
  { bits: 64, float: true },
];

// Golden WAV files, and the ids their case (no language, no context) gives for the first tokens.
const index = JSON.parse(readFileSync(join(goldenDir, 'cases', 'index.json'), 'utf8'));
const goldenFiles = ['en_1p2s', 'en_5s', 'en_21s', 'ru_11s', 'en_5s_8k', 'en_5s_44k1_stereo'].map((name) => {
  const audio = `audio/${name}.wav`;
  const c = index.cases.find((e) => e.audio === audio && e.force_language === null && e.context === '');
  return { name, bytes: readFileSync(join(goldenDir, audio)), ids: c ? c.generated_ids.slice(0, MAX_NEW) : undefined };
});
const speech16k = await Promise.all(goldenFiles.slice(0, 4).map((g) => loadAudio(g.bytes, 16000)));

/** A mono 16 kHz source signal of `seconds`: speech (tiled golden audio), noise or silence; `r` draws the choices. */
function source(kind, seconds, r = rand) {
  const n = Math.max(1, Math.round(seconds * 16000));
  const out = new Float32Array(n);
  if (kind === 'speech') {
    const s = speech16k[Math.floor(r() * speech16k.length)];
    const off = Math.floor(r() * s.length);
    for (let i = 0; i < n; i++) out[i] = s[(off + i) % s.length];
  } else if (kind === 'noise') {
    const amp = 0.01 + r() * 0.9;
    for (let i = 0; i < n; i++) out[i] = amp * (2 * r() - 1);
  }
  return out;
}

const tooShort = () => wavFromSamples(new Float32Array(150).fill(0.1));
/** Invalid inputs and the code each must fail with. */
const INVALID = [
  { name: 'empty', code: 'EMPTY_AUDIO', make: () => new Uint8Array(0) },
  { name: 'not-audio', code: 'UNSUPPORTED_AUDIO_FORMAT', make: () => new TextEncoder().encode('ID3 definitely not a wave file') },
  { name: 'header-only', code: 'EMPTY_AUDIO', make: () => buildWav({ data: new Uint8Array(0) }) },
  { name: 'truncated', code: 'TRUNCATED_WAV', make: () => buildWav({ data: new Uint8Array(3200), dataSize: 32000 }) },
  { name: 'gsm', code: 'UNSUPPORTED_WAV_FORMAT', make: () => buildWav({ formatTag: 0x31, bits: 0, data: new Uint8Array(8000) }) },
  { name: 'ms-adpcm', code: 'UNSUPPORTED_WAV_FORMAT', make: () => buildWav({ formatTag: 2, bits: 4, blockAlign: 256, data: new Uint8Array(8192) }) },
  { name: '0-channels', code: 'UNSUPPORTED_WAV_FORMAT', make: () => buildWav({ channels: 0, data: new Uint8Array(3200) }) },
  { name: '0-hz', code: 'UNSUPPORTED_WAV_FORMAT', make: () => buildWav({ sampleRate: 0, data: new Uint8Array(3200) }) },
  { name: '400-khz', code: 'UNSUPPORTED_WAV_FORMAT', make: () => buildWav({ sampleRate: 400000, data: new Uint8Array(3200) }) },
  {
    name: 'nan',
    code: 'INVALID_WAV',
    make: () => buildWav({ formatTag: 3, bits: 32, data: encodeSamples([0.1, 0.2, NaN, 0.1], { bits: 32, float: true }) }),
  },
  { name: 'too-short', code: 'AUDIO_TOO_SHORT', make: tooShort },
];

/** The i-th input: { kind, input (for transcribe), expectCode?, ids?, seconds }. */
function makeInput(i) {
  const r = rand();
  if (r < 0.1) {
    const bad = pick(INVALID);
    return { kind: `invalid:${bad.name}`, input: bad.make(), expectCode: bad.code, seconds: 0 };
  }
  if (r < 0.2) {
    const g = goldenFiles[i % goldenFiles.length];
    return { kind: `golden:${g.name}`, input: g.bytes, ids: g.ids, seconds: 0 };
  }
  const kind = r < 0.7 ? 'speech' : r < 0.9 ? 'noise' : 'silence';
  const seconds = 0.3 * Math.pow(100, rand()); // log-uniform 0.3 .. 30 s
  const x16 = source(kind, seconds);
  const rate = pick(RATES);
  const layout = pick(LAYOUTS);
  const channels = rand() < 0.3 ? 2 : 1;
  const extensible = rand() < 0.2;
  const x = rate === 16000 ? x16 : resample(x16, 16000, rate);
  const how = rand();
  if (how < 0.1) return { kind, input: x16, seconds, rate: 16000, layout: 'f32-samples', channels: 1 };
  const wav = wavFromSamples(x, { sampleRate: rate, ...layout, channels, extensible });
  const desc = { kind, seconds, rate, layout: `${layout.float ? 'f' : 'pcm'}${layout.bits}`, channels };
  if (how < 0.2) return { ...desc, input: Readable.from(chunks(wav, 4096)) };
  if (how < 0.25) return { ...desc, input: wav, viaFile: true };
  return { ...desc, input: wav };
}

function* chunks(bytes, size) {
  for (let p = 0; p < bytes.length; p += size) yield Buffer.from(bytes.subarray(p, p + size));
}

// ------------------------------------------------------------------------------------------------ run

const mem = () => {
  const m = process.memoryUsage();
  return { rss: m.rss, heapUsed: m.heapUsed, external: m.external, arrayBuffers: m.arrayBuffers };
};
const resources = () => {
  const counts = {};
  for (const r of process.getActiveResourcesInfo()) counts[r] = (counts[r] ?? 0) + 1;
  return counts;
};

const tmp = mkdtempSync(join(tmpdir(), 'rustasr-soak-'));
const nativeBefore = native().liveObjects();
const t0 = performance.now();
const model = await loadModel(modelDir, { threads: Number(args.threads) });
const loadMs = performance.now() - t0;

const stats = {
  valid: 0,
  invalid: 0,
  errors: 0,
  wrongCode: 0,
  unexpectedSuccess: 0,
  goldenChecked: 0,
  goldenMismatch: 0,
  audioSeconds: 0,
  tokens: 0,
  byKind: {},
};
const failures = [];


async function runOne(i) {
  const item = makeInput(i);
  let input = item.input;
  let file;
  if (item.viaFile) {
    file = join(tmp, `in-${i}.wav`);
    writeFileSync(file, input);
    input = file;
  }
  const kindKey = item.kind.split(':')[0];
  stats.byKind[kindKey] = (stats.byKind[kindKey] ?? 0) + 1;
  try {
    const r = await transcribe(input, { model, maxNewTokens: MAX_NEW });
    if (item.expectCode) {
      stats.invalid++;
      stats.unexpectedSuccess++;
      failures.push({ i, kind: item.kind, expected: item.expectCode, got: 'success' });
    } else {
      stats.valid++;
      stats.audioSeconds += r.timings.audioSeconds;
      stats.tokens += r.tokens.length;
      if (item.ids) {
        stats.goldenChecked++;
        if (JSON.stringify(r.tokens) !== JSON.stringify(item.ids)) {
          stats.goldenMismatch++;
          failures.push({ i, kind: item.kind, expectedIds: item.ids, got: r.tokens });
        }
      }
    }
  } catch (err) {
    const code = err instanceof RustAsrError ? err.code : `not a RustAsrError: ${err?.name}`;
    if (item.expectCode) {
      stats.invalid++;
      if (code !== item.expectCode) {
        stats.wrongCode++;
        failures.push({ i, kind: item.kind, expected: item.expectCode, got: code, message: String(err?.message) });
      }
    } else {
      stats.valid++;
      stats.errors++;
      const desc = { ...item };
      delete desc.input;
      failures.push({ i, ...desc, error: code, message: String(err?.message) });
    }
  } finally {
    if (file) rmSync(file, { force: true });
  }
}

/** Runs inputs [from, to) with CONCURRENCY transcriptions in flight. Inputs are made in order (one PRNG). */
async function runRange(from, to) {
  let next = from;
  const worker = async () => {
    while (next < to) {
      const i = next++;
      await runOne(i);
      if (args.verbose && (i + 1) % 50 === 0) console.error(`soak: ${i + 1}/${N} (${((performance.now() - t0) / 1000).toFixed(0)} s)`);
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, () => worker()));
}

/** The largest inputs the generator makes (30 s, 48 kHz, float64 stereo; as bytes, a stream, a file and as
 * samples), run CONCURRENCY at a time before the random warm-up: the allocator's arenas reach the high-water
 * mark of the biggest buffers at once, rather than stepping up whenever such an input first turns up in the
 * measured part of the run. They use their own generator, so the random inputs are the same for a --seed. */
async function warmLargest() {
  const x16 = source('speech', 30, rng(Number(args.seed) + 1));
  const wav = wavFromSamples(resample(x16, 16000, 48000), { sampleRate: 48000, bits: 64, float: true, channels: 2 });
  const file = join(tmp, 'warm-largest.wav');
  writeFileSync(file, wav);
  const inputs = [wav, () => Readable.from(chunks(wav, 4096)), file, x16];
  for (const input of inputs) {
    await Promise.all(
      Array.from({ length: CONCURRENCY }, () => transcribe(typeof input === 'function' ? input() : input, { model, maxNewTokens: MAX_NEW })),
    );
  }
  rmSync(file, { force: true });
}

const tRun = performance.now();
await warmLargest();
await runRange(0, WARMUP);
await settle();
const warm = { mem: mem(), resources: resources(), native: native().liveObjects() };
// After warm-up, the run goes in ~20 batches; after each, with nothing in flight and after a gc, RSS and heap
// are sampled. A single RSS reading swings by +-10 % with what the allocator keeps from the last inputs (a
// 30 s 48 kHz float64 stereo file is 23 MB), so the drift compares the median of the first three samples
// with the median of the last three: a leak grows steadily and shows there; allocator noise does not.
const checkpoints = [{ files: WARMUP, ...warm.mem }];
const batch = Math.max(1, Math.ceil((N - WARMUP) / 20));
for (let from = WARMUP; from < N; from += batch) {
  await runRange(from, Math.min(N, from + batch));
  await settle();
  checkpoints.push({ files: Math.min(N, from + batch), ...mem() });
}
const runMs = performance.now() - tRun;
await settle();
const end = { mem: mem(), resources: resources(), native: native().liveObjects() };
model.dispose();
await settle();
const nativeAfter = native().liveObjects();
rmSync(tmp, { recursive: true, force: true });

// ------------------------------------------------------------------------------------------------ verdict

const pct = (a, b) => (100 * (b - a)) / a;
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const k = Math.min(3, Math.floor(checkpoints.length / 2));
const head = checkpoints.slice(0, k);
const tail = checkpoints.slice(-k);
const rssWarm = median(head.map((c) => c.rss));
const rssEnd = median(tail.map((c) => c.rss));
const heapWarm = median(head.map((c) => c.heapUsed));
const heapEnd = median(tail.map((c) => c.heapUsed));
const rssDrift = pct(rssWarm, rssEnd);
const heapDrift = pct(heapWarm, heapEnd);
const sameResources = JSON.stringify(Object.entries(warm.resources).sort()) === JSON.stringify(Object.entries(end.resources).sort());
const criteria = {
  noErrors: stats.errors === 0,
  invalidInputsFailCorrectly: stats.wrongCode === 0 && stats.unexpectedSuccess === 0,
  goldenIds: stats.goldenMismatch === 0,
  rssDrift: rssDrift < Number(args['rss-drift']),
  heapDrift: heapDrift < Number(args['heap-drift']),
  activeResourcesBaseline: sameResources,
  nativeSessionsIdle: end.native.sessions === nativeBefore.sessions && end.native.models === nativeBefore.models + 1,
  nativeObjectsBaseline: nativeAfter.models === nativeBefore.models && nativeAfter.sessions === nativeBefore.sessions,
};
const summary = {
  ok: Object.values(criteria).every(Boolean),
  criteria,
  files: N,
  warmupFiles: WARMUP,
  concurrency: CONCURRENCY,
  maxNewTokens: MAX_NEW,
  seed: Number(args.seed),
  gc: gc !== undefined,
  model: modelDir,
  threads: model.info.threads,
  kernel: model.info.kernel,
  loadMs: Math.round(loadMs),
  runSeconds: +(runMs / 1000).toFixed(1),
  ...stats,
  audioSeconds: +stats.audioSeconds.toFixed(1),
  memory: {
    rssWarmMiB: +(rssWarm / 2 ** 20).toFixed(1),
    rssEndMiB: +(rssEnd / 2 ** 20).toFixed(1),
    rssDriftPct: +rssDrift.toFixed(2),
    rssRawDriftPct: +pct(warm.mem.rss, end.mem.rss).toFixed(2),
    heapWarmMiB: +(heapWarm / 2 ** 20).toFixed(2),
    heapEndMiB: +(heapEnd / 2 ** 20).toFixed(2),
    heapDriftPct: +heapDrift.toFixed(2),
    externalEndMiB: +(end.mem.external / 2 ** 20).toFixed(2),
    /** [files done, RSS MiB, heap MiB] after warm-up and after each batch (each after a gc). */
    checkpoints: checkpoints.map((c) => [c.files, +(c.rss / 2 ** 20).toFixed(1), +(c.heapUsed / 2 ** 20).toFixed(1)]),
  },
  activeResources: { warm: warm.resources, end: end.resources },
  native: { before: nativeBefore, warm: warm.native, end: end.native, afterDispose: nativeAfter },
  failures: failures.slice(0, 20),
};
console.log(JSON.stringify(summary, null, 2));
process.exitCode = summary.ok ? 0 : 1;
