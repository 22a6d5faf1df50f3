#!/usr/bin/env node
// Coverage-guided fuzzer for the TypeScript input paths (the native parsers have libFuzzer targets in
// native/tests/fuzz). The compiled code under test (dist/, and @huggingface/tokenizers for the tokenizer)
// is instrumented with block counters as it is imported (scripts/fuzz-instrument.mjs); after every
// execution the counters are bucketed by hit count as AFL / libFuzzer do (1, 2, 3, 4-7, 8-15, 16-31,
// 32-127, 128+), and a mutated input that sets a (counter, bucket) pair never seen before joins the corpus.
//
// Targets (each input is checked by oracles; any violation is a finding, saved under --artifacts):
//
//   wav          decodeWav on mutated WAV bytes (at a random byte offset inside a larger buffer). It must
//                return samples or throw a RustAsrError with a known code, and agree with an independent
//                reference reading of the header: same error class, same frame count, the same samples for a
//                handful of frames, all finite.
//   wav-stream   WavDecoder (the streaming stage) fed the same bytes in pieces chosen from the input's hash,
//                compared with decodeWav: identical samples when both succeed, the same error code when both
//                fail; an outcome difference is a finding unless it is the documented one (several fmt chunks).
//   tokenizer    AsrTokenizer.encode / decode, StreamingDetokenizer, buildPrompt(context),
//                normalizeLanguage and parseAsrOutput on mutated strings (lone surrogates, added-token text,
//                mixed scripts, long runs). Ids must be in [0, size); decode(encode(s)) must give s back (NFC
//                outside added tokens) for well-formed s; the incremental decoders must give the same text.
//   detokenizer  decode / StreamingDetokenizer on mutated id sequences (byte tokens that split
//                UTF-8 characters, added tokens, `language X<asr_text>` headers, out-of-range, negative and
//                non-integer ids). The incremental decoders must agree with decode.
//
// Each target runs in a worker thread; the main thread is the watchdog: an execution that runs past
// --timeout-ms is a hang (the worker is terminated and the input saved), as is running out of memory.
//
//   npm run fuzz:ts -- [--target wav|wav-stream|tokenizer|detokenizer|all|T1,T2] [--iterations N] [--seed S]
//                      [--artifacts DIR] [--corpus-out DIR] [--merge DIR] [--timeout-ms MS] [--slow-ms MS]
//                      [--max-len BYTES] [--max-text CHARS] [--no-coverage] [--verbose] [FILE...]
//
// Seeds: test/fuzz/<wav|tokenizer|detokenizer>/ (recursively; `--write-seeds` rewrites the hand-made ones at
// the top level; the minimized corpora are in test/fuzz/wav/corpus, test/fuzz/tokenizer/corpus and
// test/fuzz/detokenizer). FILEs given replace the seeds (`--iterations 0 FILE`: replay a finding).
// `--corpus-out DIR` writes each new corpus entry as it is found; `--merge DIR` writes the minimized corpus
// (hand-made seeds first, then the rest smallest first, kept when they add a feature) at the end.
// `--no-coverage` runs the same loop uninstrumented (to measure the cost of the counters; nothing is learnt).
// Exit status 1 when any oracle failed. Needs the TypeScript build (npm run build:ts).
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, extname, join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { clearInterval, setInterval } from 'node:timers';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs, TextDecoder, TextEncoder } from 'node:util';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';

import { buildWav, chunk, concatBytes, encodeSamples, rng } from './wav-builder.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const FUZZ_DIR = join(root, 'test', 'fuzz');
const TARGETS = ['wav', 'wav-stream', 'tokenizer', 'detokenizer'];
const EXTS = ['.wav', '.txt', '.json'];
/** Bytes of the shared buffer that holds the current input for the watchdog. */
const INPUT_SLOT = 1 << 20;

const OPTIONS = {
  target: { type: 'string', default: 'all' },
  iterations: { type: 'string', default: '20000' },
  seed: { type: 'string', default: '1' },
  'max-len': { type: 'string', default: '4096' },
  'max-text': { type: 'string', default: '256' },
  'long-text': { type: 'string', default: '4096' },
  'slow-ms': { type: 'string', default: '1000' },
  'timeout-ms': { type: 'string', default: '10000' },
  artifacts: { type: 'string' },
  'corpus-out': { type: 'string' },
  merge: { type: 'string' },
  model: { type: 'string' },
  'write-seeds': { type: 'boolean', default: false },
  verbose: { type: 'boolean', default: false },
  'no-coverage': { type: 'boolean', default: false },
  'progress-every': { type: 'string' },
};

// ================================================================================================ main thread

async function main() {
  const { values: args, positionals } = parseArgs({ options: OPTIONS, allowPositionals: true });
  // Files named on the command line are replayed (with --iterations 0: only replayed) instead of the seeds.
  args.replay = positionals.map((f) => resolve(f));
  if (args['write-seeds']) {
    writeSeeds();
    return;
  }
  if (!existsSync(join(root, 'dist', 'index.js'))) {
    console.error('fuzz-ts: dist/ is missing; run `npm run build:ts` first');
    process.exit(2);
  }
  const targets = args.target === 'all' ? TARGETS : args.target.split(',');
  for (const t of targets) {
    if (!TARGETS.includes(t)) {
      console.error(`fuzz-ts: unknown --target ${t} (one of ${TARGETS.join(', ')}, all)`);
      process.exit(2);
    }
  }
  const artifacts = resolve(args.artifacts ?? join(tmpdir(), `rustasr-fuzz-${process.pid}`));
  const summary = { seed: Number(args.seed), iterations: Number(args.iterations), targets: {}, findings: 0 };
  for (const target of targets) {
    const r = await runWorker(target, { ...args, artifacts });
    summary.targets[target] = r.stats;
    summary.findings += r.findings.length;
    if (r.findings.length) summary.targets[target].findingList = r.findings.slice(0, 20);
  }
  if (summary.findings) summary.artifacts = artifacts;
  summary.ok = summary.findings === 0;
  console.log(JSON.stringify(summary, null, 2));
  process.exitCode = summary.ok ? 0 : 1;
}

/** Runs one target in a worker; terminates it when one execution runs past --timeout-ms. */
function runWorker(target, args) {
  const timeoutMs = Number(args['timeout-ms']);
  // [0]: Date.now() when the current execution started (0 between executions); [1]: input length.
  // [2]: index in EXTS of the input's file extension.
  const clock = new Float64Array(new SharedArrayBuffer(24));
  const input = new Uint8Array(new SharedArrayBuffer(INPUT_SLOT));
  const worker = new Worker(fileURLToPath(import.meta.url), {
    workerData: { target, args, clock, input },
    resourceLimits: { maxOldGenerationSizeMb: 4096 },
    stdout: false,
    stderr: false,
  });
  const findings = [];
  let stats;
  let killed;
  return new Promise((done) => {
    const watchdog = setInterval(() => {
      const start = clock[0];
      if (start > 0 && Date.now() - start > timeoutMs && !killed) {
        killed = 'hang';
        void worker.terminate();
      }
    }, 100);
    worker.on('message', (m) => {
      if (m.type === 'finding') findings.push(m.finding);
      else if (m.type === 'stats') stats = m.stats;
      else if (m.type === 'log') console.error(m.line);
    });
    worker.on('error', (err) => {
      if (!killed) killed = /out of memory|ERR_WORKER_OUT_OF_MEMORY/i.test(`${err.code} ${err.message}`) ? 'oom' : 'worker-error';
      findings.push({ target, kind: killed, detail: String(err.stack ?? err).slice(0, 300) });
    });
    worker.on('exit', () => {
      clearInterval(watchdog);
      if (killed) {
        // The input of the execution that was running: clock[1] bytes of the shared slot.
        const bytes = Uint8Array.from(input.subarray(0, clock[1]));
        mkdirSync(args.artifacts, { recursive: true });
        const file = join(args.artifacts, `${target}-${killed}-${sha(bytes)}${EXTS[clock[2]] ?? '.bin'}`);
        writeFileSync(file, bytes);
        if (killed === 'hang') findings.push({ target, kind: 'hang', detail: `one execution ran past ${timeoutMs} ms`, file });
        else findings[findings.length - 1].file = file;
      }
      done({ stats: stats ?? { aborted: killed ?? 'no stats' }, findings });
    });
  });
}

// ===================================================================================== worker: the engine

const sha = (bytes) => createHash('sha1').update(bytes).digest('hex').slice(0, 16);

/** An oracle violation (thrown by a target's `run`). */
class Finding extends Error {
  constructor(kind, detail) {
    super(detail);
    this.kind = kind;
  }
}

/** FNV-1a over bytes: per-input choices (stream piece sizes, options) depend on the input only. */
function hashBytes(b) {
  let h = 0x811c9dc5;
  for (let i = 0; i < b.length; i++) h = Math.imul(h ^ b[i], 0x01000193);
  return h >>> 0;
}

/** AFL hit-count buckets as a bit: 1, 2, 3, 4-7, 8-15, 16-31, 32-127, 128+. */
const BUCKET = new Uint8Array(256);
for (let c = 1; c < 256; c++) BUCKET[c] = c === 1 ? 1 : c === 2 ? 2 : c === 3 ? 4 : c < 8 ? 8 : c < 16 ? 16 : c < 32 ? 32 : c < 128 ? 64 : 128;

/** A line for the main thread's stderr. */
const log = (line) => parentPort.postMessage({ type: 'log', line });

async function workerMain({ target: name, args, clock, input: slot }) {
  // The counter map: instrumented modules take consecutive ranges of it as they load.
  const map = new Uint32Array(1 << 18);
  const files = [];
  let used = 0;
  globalThis.__rustasrFuzz = {
    alloc(file, n, lines) {
      if (used + n > map.length) throw new Error('fuzz-ts: counter map is full');
      files.push({ file: file.startsWith(pathToFileURL(root).href) ? file.slice(pathToFileURL(root).href.length + 1) : file, counters: n, start: used, lines });
      used += n;
      return map.subarray(used - n, used);
    },
  };
  const target = TARGET_DEFS[name];
  const { registerCoverageHooks } = await import('./fuzz-instrument.mjs');
  // --no-coverage: the same loop without instrumentation (to measure its cost); the corpus never grows.
  if (!args['no-coverage']) registerCoverageHooks(target.instrument.map((p) => pathToFileURL(join(root, p)).href));
  const rand = rng(Number(args.seed));
  const ctx = {
    args,
    rand,
    int: (n) => Math.floor(rand() * n),
    pick: (xs) => xs[Math.floor(rand() * xs.length)],
    maxLen: Number(args['max-len']),
    maxText: Number(args['max-text']),
    longText: Number(args['long-text']),
  };
  const t = await target.setup(ctx);
  map.fill(0); // what loading and setting up touched is no input's coverage

  const virgin = new Uint8Array(map.length);
  const slowMs = Number(args['slow-ms']);
  const findings = [];
  const findingKinds = new Map();
  let executions = 0;
  let slowest = 0;

  /** Counts the features (counter, bucket) of the last execution never seen before, marks them, clears the map. */
  const newFeatures = () => {
    let fresh = 0;
    for (let i = 0; i < used; i++) {
      const c = map[i];
      if (c === 0) continue;
      const b = BUCKET[c > 255 ? 255 : c];
      if ((virgin[i] & b) === 0) {
        fresh++;
        virgin[i] |= b;
      }
    }
    map.fill(0, 0, used);
    return fresh;
  };

  const report = (kind, detail, bytes) => {
    const n = (findingKinds.get(kind) ?? 0) + 1;
    findingKinds.set(kind, n);
    if (n > 5) return; // keep the first five inputs of each kind
    mkdirSync(args.artifacts, { recursive: true });
    const file = join(args.artifacts, `${name}-${kind}-${sha(bytes)}${t.ext}`);
    writeFileSync(file, bytes);
    const finding = { target: name, kind, detail: String(detail).slice(0, 400), file };
    findings.push(finding);
    parentPort.postMessage({ type: 'finding', finding });
    if (args.verbose) log(`fuzz-ts: ${name} ${kind}: ${finding.detail} -> ${file}`);
  };

  /** One execution; returns the number of new features. */
  const execute = (inp) => {
    const bytes = t.serialize(inp);
    const n = Math.min(bytes.length, INPUT_SLOT);
    slot.set(n === bytes.length ? bytes : bytes.subarray(0, n));
    clock[1] = n;
    clock[2] = EXTS.indexOf(t.extOf(inp));
    const t0 = performance.now();
    clock[0] = Date.now();
    try {
      t.run(inp);
    } catch (err) {
      if (err instanceof Finding) report(err.kind, err.message, bytes);
      else report('harness-exception', err?.stack ?? err, bytes);
    }
    clock[0] = 0;
    const ms = performance.now() - t0;
    if (ms > slowest) slowest = ms;
    if (ms > slowMs) report('slow', `${ms.toFixed(0)} ms for an input of ${bytes.length} bytes`, bytes);
    executions++;
    return newFeatures();
  };

  // Seeds first (or only the files named on the command line): all of them stay in the corpus. The
  // hand-made seeds (top level of test/fuzz/<dir>/) are not written again by --merge.
  const t0 = performance.now();
  const corpus = [];
  const handSeeds = new Set();
  const inputs = args.replay?.length ? args.replay.map((f) => ({ bytes: new Uint8Array(readFileSync(f)), ext: extname(f) })) : target.seedDirs.flatMap((d) => readTree(join(FUZZ_DIR, d), t.exts));
  for (const { bytes, ext, top } of inputs) {
    const inp = t.deserialize(bytes, ext);
    corpus.push(inp);
    if (top) handSeeds.add(inp);
  }
  if (corpus.length === 0) corpus.push(...t.fallbackSeeds());
  for (const s of corpus) execute(s);
  const seedCount = corpus.length;
  const corpusOut = args['corpus-out'] ? resolve(args['corpus-out']) : undefined;
  if (corpusOut) mkdirSync(corpusOut, { recursive: true });

  const iterations = Number(args.iterations);
  const progressEvery = Number(args['progress-every'] ?? 0) || Math.max(1, Math.floor(iterations / 10));
  let lastNew = 0;
  for (let i = 0; i < iterations; i++) {
    const parent = ctx.pick(corpus);
    const child = t.mutate(parent, corpus, ctx);
    if (execute(child) > 0) {
      corpus.push(child);
      lastNew = executions;
      if (corpusOut) {
        const b = t.serialize(child);
        writeFileSync(join(corpusOut, `${sha(b)}${t.extOf(child)}`), b);
      }
    }
    if (args.verbose && (i + 1) % progressEvery === 0) {
      const mem = process.memoryUsage();
      // Through the port: the worker's own stderr is only flushed when its event loop turns (at the end).
      log(
        `fuzz-ts: ${name} ${i + 1}/${iterations}: ${coverage().features} features, corpus ${corpus.length}, ${((i + 1) / ((performance.now() - t0) / 1000)).toFixed(0)}/s, ` +
          `slowest ${slowest.toFixed(0)} ms, heap ${(mem.heapUsed / 2 ** 20).toFixed(0)} MiB`,
      );
    }
  }
  const seconds = (performance.now() - t0) / 1000;
  const cov = coverage();

  function coverage() {
    let reached = 0;
    let features = 0;
    for (let i = 0; i < used; i++) {
      if (virgin[i]) reached++;
      for (let b = virgin[i]; b; b &= b - 1) features++;
    }
    return { counters: used, reached, features };
  }

  /** Per instrumented file: counters, those reached, and the source lines of the others (dist/ files only). */
  const perFile = () =>
    files.map(({ file, counters, start, lines }) => {
      let reached = 0;
      const missed = new Set();
      for (let k = 0; k < counters; k++) {
        if (virgin[start + k]) reached++;
        else missed.add(lines[k]);
      }
      return { file, counters, reached, ...(file.startsWith('dist/') ? { unreachedLines: [...missed].sort((a, b) => a - b) } : {}) };
    });
  const fileCoverage = perFile();

  // Minimized corpus: on a fresh map, the hand-made seeds, then the rest smallest first, each kept (written
  // to the --merge directory) when it adds a feature.
  let merged;
  if (args.merge) {
    const dir = resolve(args.merge);
    mkdirSync(dir, { recursive: true });
    virgin.fill(0);
    for (const c of handSeeds) execute(c);
    const order = corpus.filter((c) => !handSeeds.has(c)).map((c) => ({ c, b: t.serialize(c) })).sort((x, y) => x.b.length - y.b.length);
    merged = { kept: 0, bytes: 0, dir };
    for (const { c, b } of order) {
      if (execute(c) > 0) {
        writeFileSync(join(dir, `${sha(b)}${t.extOf(c)}`), b);
        merged.kept++;
        merged.bytes += b.length;
      }
    }
  }

  const stats = {
    executions: iterations + seedCount,
    seconds: +seconds.toFixed(1),
    execsPerSecond: Math.round((iterations + seedCount) / seconds),
    counters: cov.counters,
    countersReached: cov.reached,
    features: cov.features,
    corpus: corpus.length,
    seeds: seedCount,
    lastNewFeatureAt: lastNew,
    slowestMs: +slowest.toFixed(1),
    instrumented: fileCoverage,
    ...t.stats(),
    ...(merged ? { merged } : {}),
    findings: findings.length,
    findingKinds: Object.fromEntries(findingKinds),
  };
  parentPort.postMessage({ type: 'stats', stats });
}

/** Files under `dir` (recursively) whose extension is in `exts`, sorted by path. */
function readTree(dir, exts, depth = 0) {
  if (!existsSync(dir)) return [];
  const out = [];
  for (const f of readdirSync(dir).sort()) {
    const p = join(dir, f);
    if (statSync(p).isDirectory()) out.push(...readTree(p, exts, depth + 1));
    else if (exts.includes(extname(f))) out.push({ bytes: new Uint8Array(readFileSync(p)), ext: extname(f), top: depth === 0 });
  }
  return out;
}

// ============================================================================================ WAV targets

const INTERESTING_32 = [0, 1, 2, 3, 4, 7, 8, 15, 16, 17, 39, 40, 41, 0x7f, 0x80, 0xff, 0x100, 0x7fff, 0x8000, 0xffff, 0x10000, 8000, 16000, 44100, 48000, 384000, 384001, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff];
const INTERESTING_16 = [0, 1, 2, 3, 6, 7, 8, 12, 16, 17, 24, 32, 64, 0x11, 0x55, 0xfffe, 0xffff, 0x7fff, 0x8000];
const TAGS = ['RIFF', 'WAVE', 'fmt ', 'data', 'LIST', 'fact', 'JUNK', 'RIFX', 'RF64'];

function mutateBytes(src, corpus, { rand, int, pick, maxLen }) {
  let b = Uint8Array.from(src);
  const rounds = 1 + int(5);
  for (let r = 0; r < rounds; r++) {
    const n = b.length;
    switch (int(14)) {
      case 0: // bit flip
        if (n) b[int(n)] ^= 1 << int(8);
        break;
      case 1: // random byte
        if (n) b[int(n)] = int(256);
        break;
      case 2: // interesting u16 LE
        if (n >= 2) new DataView(b.buffer).setUint16(int(n - 1), pick(INTERESTING_16), true);
        break;
      case 3: // interesting u32 LE, often on a field of a known chunk
        if (n >= 4) {
          const at = rand() < 0.7 ? fieldOffset(b, pick) : int(n - 3);
          new DataView(b.buffer).setUint32(Math.min(at, n - 4), pick(INTERESTING_32) >>> 0, true);
        }
        break;
      case 4: // u32 size +- small delta
        if (n >= 8) {
          const at = Math.min(fieldOffset(b, pick), n - 4);
          const v = new DataView(b.buffer);
          v.setUint32(at, (v.getUint32(at, true) + int(9) - 4) >>> 0, true);
        }
        break;
      case 5: // truncate
        b = b.subarray(0, int(n + 1));
        break;
      case 6: // delete a range
        if (n) {
          const a = int(n);
          const len = 1 + int(Math.min(64, n - a));
          b = concatBytes([b.subarray(0, a), b.subarray(a + len)]);
        }
        break;
      case 7: // insert random bytes
        {
          const a = int(n + 1);
          const ins = Uint8Array.from({ length: 1 + int(16) }, () => int(256));
          b = concatBytes([b.subarray(0, a), ins, b.subarray(a)]);
        }
        break;
      case 8: // insert a chunk (known or random tag)
        {
          const a = Math.min(n, 12 + 2 * int(Math.max(1, (n - 12) / 2)));
          const c = chunk(pick(TAGS), Uint8Array.from({ length: int(48) }, () => int(256)));
          b = concatBytes([b.subarray(0, a), c, b.subarray(a)]);
        }
        break;
      case 9: // overwrite a 4-byte tag
        if (n >= 4) {
          const at = int(n - 3);
          const t = pick(TAGS);
          for (let i = 0; i < 4; i++) b[at + i] = t.charCodeAt(i);
        }
        break;
      case 10: // splice with another corpus entry
        {
          const o = pick(corpus);
          const a = int(n + 1);
          const s = int(o.length + 1);
          b = concatBytes([b.subarray(0, a), o.subarray(s, s + int(256))]);
        }
        break;
      case 11: // duplicate a range
        if (n) {
          const a = int(n);
          const len = 1 + int(Math.min(128, n - a));
          b = concatBytes([b.subarray(0, a + len), b.subarray(a, a + len), b.subarray(a + len)]);
        }
        break;
      case 12: // an extreme sample value (float or PCM) somewhere in the data
        if (n >= 8) {
          const v = new DataView(b.buffer);
          const at = int(n - 7);
          if (rand() < 0.5) v.setFloat64(at, pick([NaN, Infinity, -Infinity, 1e39, -3.5e38, Number.MAX_VALUE, 3.4028234663852886e38, -0, 5e-324]), true);
          else v.setFloat32(at, pick([NaN, Infinity, -Infinity, 3.4028234663852886e38, -0, 1e-45]), true);
        }
        break;
      default: // a freshly generated structured file
        b = generateWav({ rand, int, pick });
    }
  }
  return b.length > maxLen ? b.slice(0, maxLen) : Uint8Array.from(b);
}

/** Offset of a size or fmt field: RIFF size, a chunk size, or a fmt field, found by scanning for tags. */
function fieldOffset(b, pick) {
  const offs = [4];
  for (let i = 12; i + 8 <= b.length; i++) {
    const t = String.fromCharCode(b[i], b[i + 1], b[i + 2], b[i + 3]);
    if (t === 'data' || t === 'LIST') offs.push(i + 4);
    if (t === 'fmt ') offs.push(i + 4, i + 8, i + 10, i + 12, i + 20, i + 22, i + 32);
  }
  return pick(offs);
}

function generateWav({ rand, int, pick }) {
  const bits = pick([8, 16, 24, 32, 64, 4, 12, 0]);
  const float = rand() < 0.3;
  const channels = pick([1, 1, 2, 3, 0, 8, 65535]);
  const frames = int(64);
  const x = Array.from({ length: frames * Math.max(1, Math.min(channels, 4)) }, () => (rand() < 0.02 ? pick([NaN, Infinity, -Infinity, 1e30]) : 2 * rand() - 1));
  const okBits = [8, 16, 24, 32, 64].includes(bits) && (!float || bits >= 32) && (float || bits <= 32);
  const data = okBits ? encodeSamples(x, { bits, float }) : Uint8Array.from({ length: int(256) }, () => int(256));
  return buildWav({
    formatTag: float ? 3 : pick([1, 1, 1, 2, 6, 7, 0x11]),
    channels,
    sampleRate: pick([8000, 16000, 44100, 0, 384000, 384001, 1, 0xffffffff]),
    bits,
    extensible: rand() < 0.2,
    data,
    ...(rand() < 0.2 ? { dataSize: pick([0, 0xffffffff, data.length + 1, Math.max(0, data.length - 1)]) } : {}),
    ...(rand() < 0.2 ? { riffSize: pick([0, 4, 0xffffffff]) } : {}),
    before: rand() < 0.2 ? [chunk('JUNK', new Uint8Array(int(5)))] : [],
    after: rand() < 0.3 ? [chunk('LIST', new Uint8Array(int(7)))] : [],
  });
}

/**
 * An independent reading of a WAV header, written from the format rules (not from src/): RIFF, RF64 or BW64
 * (RF64/BW64: a data size of 0xFFFFFFFF is the ds64 chunk's), every fmt chunk validated as it is met (the
 * last one before the first data chunk applies), odd chunks padded, a data size of 0 (or 0xFFFFFFFF in RIFF)
 * meaning "to the end". Codecs: PCM 8/16/24/32, float 32/64, μ-law / A-law 8-bit, IMA ADPCM 4-bit (blocks).
 * Returns the expected error code (for TRUNCATED_WAV with the layout of the bytes that are there, since the
 * samples before the cut are decoded first), or the layout: { fmt, dataOffset, frames, frameBytes, fmtChunks }.
 */
function referenceWav(b) {
  const u32 = (o) => (b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | (b[o + 3] << 24)) >>> 0;
  const u16 = (o) => b[o] | (b[o + 1] << 8);
  const id = (o) => String.fromCharCode(b[o], b[o + 1], b[o + 2], b[o + 3]);
  if (b.length < 12 || !['RIFF', 'RF64', 'BW64'].includes(id(0)) || id(8) !== 'WAVE') return { error: 'INVALID_WAV' };
  const rf64 = id(0) !== 'RIFF';
  let fmt;
  let ds64;
  let fmtChunks = 0;
  for (let o = 12; o + 8 <= b.length; ) {
    const size = u32(o + 4);
    const body = o + 8;
    const have = Math.min(size, b.length - body);
    if (id(o) === 'fmt ') {
      fmtChunks++;
      if (size < 16 || have < 16) return { error: 'INVALID_WAV', fmtChunks };
      let tag = u16(body);
      if (tag === 0xfffe) {
        if (size < 40 || have < 40) return { error: 'INVALID_WAV', fmtChunks };
        tag = u16(body + 24);
      }
      const channels = u16(body + 2);
      const rate = u32(body + 4);
      const blockAlign = u16(body + 12);
      const bits = u16(body + 14);
      const spb = u16(body) === 0x11 && size >= 20 && have >= 20 && u16(body + 16) >= 2 ? u16(body + 18) : 0;
      if (channels === 0 || rate === 0 || rate > 384000) return { error: 'UNSUPPORTED_WAV_FORMAT', fmtChunks };
      let encoding;
      if (tag === 1 && [8, 16, 24, 32].includes(bits)) encoding = 'pcm';
      else if (tag === 3 && (bits === 32 || bits === 64)) encoding = 'float';
      else if (tag === 7 && bits === 8) encoding = 'mulaw';
      else if (tag === 6 && bits === 8) encoding = 'alaw';
      else if (tag === 0x11 && bits === 4) encoding = 'ima-adpcm';
      else return { error: 'UNSUPPORTED_WAV_FORMAT', fmtChunks };
      let frameBytes = (bits / 8) * channels;
      let unitFrames = 1;
      if (encoding === 'ima-adpcm') {
        if (blockAlign < 4 * channels || (blockAlign - 4 * channels) % (4 * channels) !== 0) return { error: 'INVALID_WAV', fmtChunks };
        frameBytes = blockAlign;
        unitFrames = ((blockAlign - 4 * channels) * 2) / channels + 1;
        if (spb !== 0 && spb !== unitFrames) return { error: 'INVALID_WAV', fmtChunks };
      }
      fmt = { tag, channels, rate, bits, encoding, float: encoding === 'float', frameBytes, unitFrames };
    } else if (id(o) === 'ds64') {
      if (have < 24) return { error: 'INVALID_WAV', fmtChunks };
      ds64 = u32(body + 8) + u32(body + 12) * 2 ** 32;
    } else if (id(o) === 'data') {
      if (!fmt) return { error: 'INVALID_WAV', fmtChunks };
      let declared = size;
      if (rf64 && size === 0xffffffff) {
        if (ds64 === undefined) return { error: 'INVALID_WAV', fmtChunks };
        declared = ds64;
      }
      const open = declared === 0 || (!rf64 && declared === 0xffffffff);
      const len = open ? b.length - body : Math.min(declared, b.length - body);
      const units = Math.floor(len / fmt.frameBytes);
      const layout = { fmt, dataOffset: body, frames: units * fmt.unitFrames, frameBytes: fmt.frameBytes, fmtChunks };
      if (!open && body + declared > b.length) return { error: 'TRUNCATED_WAV', layout, fmtChunks };
      if (units === 0) return { error: 'EMPTY_AUDIO', fmtChunks };
      return layout;
    }
    o = body + size + (size & 1);
  }
  return { error: 'INVALID_WAV', fmtChunks };
}

/** G.711 μ-law and A-law byte -> linear value (ITU-T G.711), / 32768. */
function g711(x, mulaw) {
  if (mulaw) {
    const u = ~x & 0xff;
    const t = (((u & 0x0f) << 3) + 0x84) << ((u & 0x70) >> 4);
    return (u & 0x80 ? 0x84 - t : t - 0x84) / 32768;
  }
  const a = x ^ 0x55;
  let t = (a & 0x0f) << 4;
  const seg = (a & 0x70) >> 4;
  if (seg === 0) t += 8;
  else if (seg === 1) t += 0x108;
  else t = (t + 0x108) << (seg - 1);
  return (a & 0x80 ? t : -t) / 32768;
}

/**
 * The mono sample of frame `i` by the reference layout (the mean of the channels, as float32); for IMA ADPCM
 * only the first frame of each block (the predictors in the block headers) is known, undefined otherwise.
 */
function referenceSample(b, ref, i) {
  const { channels, bits, float, encoding, unitFrames } = ref.fmt;
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  if (encoding === 'ima-adpcm') {
    if (i % unitFrames !== 0) return undefined;
    const p = ref.dataOffset + (i / unitFrames) * ref.frameBytes;
    let acc = 0;
    for (let c = 0; c < channels; c++) acc += v.getInt16(p + 4 * c, true) / 32768;
    return acc / channels;
  }
  let acc = 0;
  for (let c = 0; c < channels; c++) {
    const p = ref.dataOffset + i * ref.frameBytes + (c * bits) / 8;
    let x;
    if (float) x = bits === 32 ? v.getFloat32(p, true) : v.getFloat64(p, true);
    else if (encoding === 'mulaw' || encoding === 'alaw') x = g711(b[p], encoding === 'mulaw');
    else if (bits === 8) x = (b[p] - 128) / 128;
    else if (bits === 16) x = v.getInt16(p, true) / 32768;
    else if (bits === 24) x = ((b[p] | (b[p + 1] << 8) | (b[p + 2] << 16)) << 8 >> 8) / 8388608;
    else x = v.getInt32(p, true) / 2147483648;
    acc += x;
  }
  return acc / channels;
}

function wavTarget(stream) {
  return {
    instrument: ['dist/audio/wav.js', 'dist/audio/wav-format.js', 'dist/stages/audio-decode.js'],
    seedDirs: ['wav'],
    async setup(ctx) {
      const { decodeWav } = await import('../dist/audio/wav.js');
      const { WavDecoder } = await import('../dist/stages/wav-decode.js');
      const { RustAsrError, isRustAsrErrorCode } = await import('../dist/errors.js');
      const divergences = {};
      let bothOk = 0;

      /** Calls f; a RustAsrError with a known code is an outcome, anything else a finding. */
      const outcome = (api, f) => {
        try {
          return { ok: true, value: f() };
        } catch (err) {
          if (err instanceof Finding) throw err;
          if (err instanceof RustAsrError && isRustAsrErrorCode(err.code)) return { ok: false, code: err.code, message: err.message };
          throw new Finding('non-RustAsrError', `${api}: ${err?.stack ?? err}`);
        }
      };

      /** WavDecoder run synchronously (its _transform / _flush call back synchronously) over pieces. */
      const streamDecode = (bytes, r) => {
        const dec = new WavDecoder();
        const out = [];
        dec.push = (c) => {
          if (c !== null) {
            if (!(c.samples instanceof Float32Array) || c.samples.length === 0 || c.samples.length > 65536) throw new Finding('bad-stream-chunk', `chunk of ${c.samples?.length} samples`);
            out.push(c.samples);
          }
          return true;
        };
        let error;
        const cb = (err) => {
          if (err) error = err;
        };
        // Piece sizes from the input's hash: whole, single bytes, small or mixed pieces.
        const mode = Math.floor(r() * 4);
        for (let p = 0; p < bytes.length && !error; ) {
          const n = mode === 0 ? bytes.length : mode === 1 ? 1 : mode === 2 ? 1 + Math.floor(r() * 16) : r() < 0.5 ? 1 + Math.floor(r() * 4) : 1 + Math.floor(r() * 512);
          dec._transform(bytes.subarray(p, p + n), 'buffer', cb);
          p += n;
        }
        if (!error) dec._flush(cb);
        if (error) throw error;
        let len = 0;
        for (const s of out) len += s.length;
        const all = new Float32Array(len);
        let o = 0;
        for (const s of out) {
          all.set(s, o);
          o += s.length;
        }
        return { samples: all, format: dec.format };
      };

      /** decodeWav checked against the reference reading. */
      const checkDecode = (bytes, r) => {
        // At an offset inside a larger buffer, so byteOffset handling is exercised too.
        const pad = Math.floor(r() * 8);
        const host = new Uint8Array(bytes.length + pad + 3);
        host.set(bytes, pad);
        const a = outcome('decodeWav', () => decodeWav(host.subarray(pad, pad + bytes.length)));
        const ref = referenceWav(bytes);
        if (!a.ok) {
          // A non-finite float sample is found while decoding, before a cut at the end is noticed; the
          // reference does not look at samples.
          const layout = ref.error === 'TRUNCATED_WAV' ? ref.layout : ref.error ? undefined : ref;
          const expected = layout?.fmt.float && a.code === 'INVALID_WAV' ? 'INVALID_WAV' : (ref.error ?? 'ok');
          if (a.code !== expected) throw new Finding('reference-mismatch', `decodeWav ${a.code} (${a.message}), reference ${ref.error ?? 'ok'}`);
          if (a.code === 'INVALID_WAV' && layout) {
            // Then some sample must really be NaN / ±Infinity / beyond the float32 range.
            let bad = false;
            for (let i = 0; i < layout.frames && !bad; i++) bad = !Number.isFinite(Math.fround(referenceSample(bytes, layout, i)));
            if (!bad || !/not a finite number/.test(a.message)) throw new Finding('reference-mismatch', `decodeWav: ${a.message}, reference finds no bad sample`);
          }
          return { a, ref };
        }
        const { info, samples } = a.value;
        if (ref.error) throw new Finding('reference-mismatch', `decodeWav decoded ${samples.length} samples, reference ${ref.error}`);
        if (!(samples instanceof Float32Array) || samples.length !== ref.frames || info.frames !== ref.frames) {
          throw new Finding('frame-count', `decodeWav ${samples.length} samples (info ${info.frames}), reference ${ref.frames}`);
        }
        if (info.channels !== ref.fmt.channels || info.sampleRate !== ref.fmt.rate || info.bitsPerSample !== ref.fmt.bits || info.format !== ref.fmt.encoding) {
          throw new Finding('info-mismatch', JSON.stringify({ info, ref: ref.fmt }));
        }
        const pcm = !ref.fmt.float;
        const check = (i) => {
          const w = referenceSample(bytes, ref, i);
          if (w === undefined) return;
          const want = Math.fround(w);
          const got = samples[i];
          if (!Number.isFinite(got) || (pcm && (got < -1 || got > 1))) throw new Finding('bad-sample', `sample ${i} = ${got}`);
          // The mean is summed in the same order, so the float32 result is bit-identical (up to -0 / +0).
          if (got !== want) throw new Finding('sample-mismatch', `sample ${i}: ${got}, reference ${want}`);
        };
        const n = samples.length;
        for (let i = 0; i < Math.min(n, 4); i++) check(i);
        check(n - 1);
        check(Math.floor(r() * n));
        for (let i = 0; i < n; i++) if (!Number.isFinite(samples[i])) throw new Finding('non-finite-sample', `sample ${i}`);
        return { a, ref };
      };

      return {
        ext: '.wav',
        exts: ['.wav'],
        extOf: () => '.wav',
        serialize: (b) => b,
        deserialize: (b) => b,
        fallbackSeeds: () => [generateWav(ctx)],
        mutate: (b, corpus) => mutateBytes(b, corpus, ctx),
        run(bytes) {
          const r = rng(hashBytes(bytes));
          const { a, ref } = checkDecode(bytes, r);
          if (!stream) return;
          const s = outcome('WavDecoder', () => streamDecode(bytes, r));
          if (a.ok && s.ok) {
            bothOk++;
            const x = a.value.samples;
            const y = s.value.samples;
            const { info } = a.value;
            const f = s.value.format;
            if (!f || f.sampleRate !== info.sampleRate || f.channels !== info.channels || f.bitsPerSample !== info.bitsPerSample || f.encoding !== info.format) {
              throw new Finding('format-mismatch', `WavDecoder.format ${JSON.stringify(f)}, decodeWav ${JSON.stringify(info)}`);
            }
            let same = x.length === y.length;
            for (let i = 0; same && i < x.length; i++) same = Object.is(x[i], y[i]);
            if (!same) throw new Finding('decoders-disagree', `decodeWav ${x.length} samples, WavDecoder ${y.length}`);
          } else if (a.ok !== s.ok || a.code !== s.code) {
            const kind = `${a.ok ? 'ok' : a.code}/${s.ok ? 'ok' : s.code}`;
            divergences[kind] = (divergences[kind] ?? 0) + 1;
            // Both failing with different codes is a difference of precedence (the stream validates the fmt
            // chunk as soon as it is read, and calls a missing chunk at the end of its input TRUNCATED_WAV).
            // One failing and the other not is a finding, but for the documented case: WavDecoder validates
            // every fmt chunk as it reads it, decodeWav only the last one before the data.
            const documented = ref.fmtChunks > 1 && !s.ok && s.code === 'UNSUPPORTED_WAV_FORMAT';
            if ((a.ok || s.ok) && !documented) {
              throw new Finding('decoders-diverge', `${kind}: ${a.ok ? '' : a.message} / ${s.ok ? '' : s.message}`);
            }
          }
        },
        stats: () => (stream ? { bothDecoded: bothOk, divergences } : {}),
      };
    },
  };
}

// ====================================================================================== tokenizer targets

const SPECIAL = ['<|im_start|>', '<|im_end|>', '<|audio_pad|>', '<|audio_start|>', '<|audio_end|>', '<asr_text>', '<|endoftext|>', '<tool_call>', '</think>', '<|', '|>', '<', 'language English<asr_text>', 'language None<asr_text>', 'language '];
const PIECES = ['a', 'Z', ' ', '  ', '\n', '\r\n', '\r', '\t', "'s", "'LL", "'", '123', '4567', '.', '!?', 'ß', 'é', 'e\u0301', '>\u0338', '\u0338', 'İ', 'ﬁ', '中文', 'Привет', 'مرحبا', 'שלום', 'नमस्ते', 'ไทย', '한국어', 'ｶﾀｶﾅ', '\u200d', '\u200b', '\ufeff', '\u0000', '\u007f', '\u0085', '😀', '👨‍👩‍👧', '🇺🇦', '\ud83d', '\ude00', '\udbff', '\uffff', '\ufffd', 'Ａ', '١٢٣', '\u2028', '\u00a0', '\u3000', ...SPECIAL];

function mutateString(s, corpus, { rand, int, pick, maxText, longText }) {
  const cps = Array.from(s);
  const rounds = 1 + int(4);
  for (let r = 0; r < rounds; r++) {
    switch (int(10)) {
      case 0:
        cps.splice(int(cps.length + 1), 0, pick(PIECES));
        break;
      case 1:
        if (cps.length) cps.splice(int(cps.length), 1 + int(8));
        break;
      case 2: // any code point
        cps.splice(int(cps.length + 1), 0, String.fromCodePoint(int(0x110000) & ~(rand() < 0.5 ? 0 : 0x1f0000)));
        break;
      case 3: // any UTF-16 unit: may be a lone surrogate
        cps.splice(int(cps.length + 1), 0, String.fromCharCode(int(0x10000)));
        break;
      case 4: {
        const o = Array.from(pick(corpus));
        const a = int(o.length + 1);
        cps.splice(int(cps.length + 1), 0, ...o.slice(a, a + int(32)));
        break;
      }
      case 5: // a run (rarely a long one)
        cps.splice(int(cps.length + 1), 0, pick(PIECES).repeat(1 + int(rand() < 0.02 ? 1000 : 16)));
        break;
      case 6: // printable ASCII
        cps.splice(int(cps.length + 1), 0, String.fromCharCode(32 + int(95)));
        break;
      case 7: // duplicate a range
        if (cps.length) {
          const a = int(cps.length);
          cps.splice(a, 0, ...cps.slice(a, a + 1 + int(16)));
        }
        break;
      case 8: // truncate
        cps.length = int(cps.length + 1);
        break;
      default:
        if (cps.length) cps[int(cps.length)] = pick(PIECES);
    }
  }
  const out = cps.join('');
  // Short inputs by default (the encoder's cost grows faster than linearly); now and then a long one.
  const limit = rand() < 0.01 ? longText : maxText;
  return out.length > limit ? out.slice(0, limit) : out;
}

const wellFormed = (s) => !/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/.test(s);
const utf8 = new TextEncoder();

/** A JS string as bytes, lone surrogates included: UTF-8 (.txt) when well formed, else a JSON string (.json). */
const stringCodec = {
  extOf: (s) => (wellFormed(s) ? '.txt' : '.json'),
  serialize: (s) => utf8.encode(wellFormed(s) ? s : JSON.stringify(s)),
  deserialize: (b, ext) => {
    const text = new TextDecoder('utf-8', { ignoreBOM: true }).decode(b);
    return ext === '.json' ? String(JSON.parse(text)) : text;
  },
};

async function loadTok(ctx) {
  const { loadTokenizer } = await import('../dist/text/tokenizer.js');
  const goldenDir = resolve(process.env.RUSTASR_GOLDEN_DIR ?? join(root, '..', 'shared', 'golden'));
  const dir = resolve(ctx.args.model ?? join(goldenDir, 'models', 'tiny-a'));
  // The fast path without a cache file (built from the sources): the tokenizer production uses.
  return loadTokenizer(dir, { cacheDir: false });
}

/** The reference tokenizer (@huggingface/tokenizers), the oracle of the fast path's encode. */
async function loadRefTok(ctx) {
  const { loadReferenceTokenizer } = await import('../dist/text/tokenizer.js');
  const goldenDir = resolve(process.env.RUSTASR_GOLDEN_DIR ?? join(root, '..', 'shared', 'golden'));
  return loadReferenceTokenizer(resolve(ctx.args.model ?? join(goldenDir, 'models', 'tiny-a')));
}

/**
 * Expected decode(encode(s)): added tokens are matched in the raw text (longest first) and kept as they
 * are; NFC applies to the text between them. (NFC of the whole string is not it: '>' + U+0338 composes
 * to U+226F, which would eat the '>' of a preceding added token.)
 */
function expectedTextFn(tok) {
  const contents = tok.addedTokens.map((t) => t.content).sort((a, b) => b.length - a.length);
  const re = new RegExp(contents.map((c) => c.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('|'), 'g');
  return (s) => {
    let out = '';
    let last = 0;
    for (const m of s.matchAll(re)) {
      out += s.slice(last, m.index).normalize('NFC') + m[0];
      last = m.index + m[0].length;
    }
    return out + s.slice(last).normalize('NFC');
  };
}

/** Shared oracle helpers of the tokenizer targets. */
async function textOracles(ctx) {
  const tok = await loadTok(ctx);
  const { StreamingDetokenizer } = await import('../dist/text/detokenizer.js');
  const { buildPrompt, normalizeLanguage, parseAsrOutput, SUPPORTED_LANGUAGES } = await import('../dist/text/prompt.js');
  const { pyStrip } = await import('../dist/text/asr-output.js');
  const { RustAsrError, isRustAsrErrorCode } = await import('../dist/errors.js');
  const call = (api, f, allowed = []) => {
    try {
      return { ok: true, value: f() };
    } catch (err) {
      if (err instanceof RustAsrError && isRustAsrErrorCode(err.code) && allowed.includes(err.code)) return { ok: false, code: err.code };
      throw new Finding(err instanceof RustAsrError ? `unexpected-${err.code}` : 'non-RustAsrError', `${api}: ${err?.stack ?? err}`);
    }
  };
  const show = (s) => JSON.stringify(s).slice(0, 160);
  /** The incremental decoders must produce decode(ids) exactly. */
  const checkIncremental = (ids, skipSpecial) => {
    const full = call('decode', () => tok.decode(ids, { skipSpecial })).value;
    if (typeof full !== 'string') throw new Finding('decode-type', typeof full);
    // A plain incremental UTF-8 decoder over the token bytes (the reference the detokenizer is held to).
    const viaStream = call('tokenBytes', () => {
      const dec = new TextDecoder('utf-8', { ignoreBOM: true });
      const parts = ids.map((id) => (skipSpecial && tok.isSpecial(id) ? '' : dec.decode(tok.tokenBytes(id), { stream: true })));
      return parts.join('') + dec.decode();
    }).value;
    if (viaStream !== full) throw new Finding('stream-decoder-mismatch', `${show(ids)}: ${show(viaStream)} != ${show(full)}`);
    // `false` is the short form of { expectHeader: false } (skipSpecial then defaults to true).
    const det = new StreamingDetokenizer(tok, skipSpecial ? false : { expectHeader: false, skipSpecial });
    const viaDet = call('StreamingDetokenizer', () => ids.map((id) => det.push(id)).join('') + det.end()).value;
    if (viaDet !== full) throw new Finding('detokenizer-mismatch', `${show(ids)}: ${show(viaDet)} != ${show(full)}`);
    if (det.pending || !det.headerParsed) throw new Finding('detokenizer-state', `${show(ids)}: pending ${det.pending} after end()`);
    return full;
  };
  /** With a header: the text is either all of decode(ids) or what follows the first <asr_text>. */
  const checkHeader = (ids) => {
    const full = tok.decode(ids, { skipSpecial: true });
    const det = new StreamingDetokenizer(tok, { expectHeader: true, skipSpecial: true });
    const out = call('StreamingDetokenizer', () => ids.map((id) => det.push(id)).join('') + det.end()).value;
    if (det.pending || !det.headerParsed) throw new Finding('detokenizer-state', `${show(ids)}: pending ${det.pending} after end()`);
    const at = full.indexOf('<asr_text>');
    if (out !== full && !(at >= 0 && out === full.slice(at + '<asr_text>'.length))) {
      throw new Finding('header-split', `${show(full)} -> ${show(out)}`);
    }
    const parsed = call('parseAsrOutput', () => parseAsrOutput(full)).value;
    // One parser: a language the stream reports is the one the final parsing gives.
    if (det.language !== undefined && (typeof det.language !== 'string' || det.language === '' || det.language !== parsed.language)) {
      throw new Finding('header-language', `${show(full)} -> language ${show(det.language)}, parsed ${show(parsed.language)}`);
    }
    // Stripped as Python strips (the official parse_asr_output): a leading U+FEFF, which trim() removes, stays.
    if (typeof parsed.text !== 'string' || parsed.text !== pyStrip(parsed.text)) throw new Finding('parse-output', `${show(full)} -> ${show(parsed)}`);
  };
  return { tok, call, show, checkIncremental, checkHeader, buildPrompt, normalizeLanguage, SUPPORTED_LANGUAGES };
}

const TOKENIZER_FILES = ['dist/text/tokenizer.js', 'dist/text/bpe.js', 'dist/text/prompt.js', 'dist/text/detokenizer.js', 'node_modules/@huggingface/tokenizers/dist/tokenizers.mjs'];

const tokenizerTarget = {
  instrument: TOKENIZER_FILES,
  seedDirs: ['tokenizer'],
  async setup(ctx) {
    const o = await textOracles(ctx);
    const { tok, call, show } = o;
    const ref = await loadRefTok(ctx);
    const expectedText = expectedTextFn(tok);
    let roundTrips = 0;
    let prompts = 0;
    return {
      ext: '.txt',
      exts: ['.txt', '.json'],
      ...stringCodec,
      fallbackSeeds: () => ['hello world'],
      mutate: (s, corpus) => mutateString(s, corpus, ctx),
      run(s) {
        let h = 0x811c9dc5;
        for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
        const r = rng(h >>> 0);
        const ids = call('encode', () => tok.encode(s)).value;
        if (!Array.isArray(ids) || ids.some((id) => !Number.isInteger(id) || id < 0 || id >= tok.size)) throw new Finding('bad-ids', `${show(s)} -> ${show(ids)}`);
        if (s !== '' && ids.length === 0) throw new Finding('bad-ids', `${show(s)} encodes to nothing`);
        // The fast path (text/bpe.ts) must give the library's ids.
        const refIds = ref.encode(s);
        if (refIds.length !== ids.length || refIds.some((id, i) => id !== ids[i])) {
          throw new Finding('fast-path-mismatch', `${show(s)} -> ${show(ids)}, the library ${show(refIds)}`);
        }
        const text = o.checkIncremental(ids, r() < 0.3);
        if (wellFormed(s)) {
          const back = tok.decode(ids);
          if (back !== expectedText(s)) throw new Finding('round-trip', `${show(s)} -> ${show(back)} (via ${show(text)})`);
          roundTrips++;
        }
        // The rest re-encodes or throws (costly): on a quarter of the inputs, chosen by their hash.
        if (r() < 0.75) return;
        o.checkHeader(ids);
        const audioTokens = 1 + Math.floor(r() * 40);
        const language = r() < 0.2 ? o.SUPPORTED_LANGUAGES[Math.floor(r() * o.SUPPORTED_LANGUAGES.length)].toUpperCase() : undefined;
        const p = call('buildPrompt', () => o.buildPrompt(tok, { context: s, audioTokens, language }), ['INVALID_OPTION']);
        if (!p.ok) {
          if (!s.includes('<|audio_pad|>')) throw new Finding('prompt-rejected', show(s));
        } else {
          prompts++;
          const { ids: pids, audioPadStart, audioPadCount } = p.value;
          const pad = tok.tokenToId('<|audio_pad|>');
          let pads = 0;
          for (const id of pids) if (id === pad) pads++;
          if (audioPadCount !== audioTokens || pads !== audioTokens || pids[audioPadStart] !== pad || pids[audioPadStart + audioTokens - 1] !== pad) {
            throw new Finding('prompt-pads', `${show(s)}: ${pads} pads, start ${audioPadStart}`);
          }
          if (wellFormed(s)) {
            const want = expectedText(p.value.text.replace('<|audio_pad|>', '<|audio_pad|>'.repeat(audioTokens)));
            const got = tok.decode(pids);
            if (got !== want) throw new Finding('prompt-text', `${show(s)}: ${show(got)} != ${show(want)}`);
          }
        }
        // Language names: a supported spelling back, or UNSUPPORTED_LANGUAGE.
        const lang = call('normalizeLanguage', () => o.normalizeLanguage(s), ['UNSUPPORTED_LANGUAGE']);
        if (lang.ok && !o.SUPPORTED_LANGUAGES.includes(lang.value)) throw new Finding('language', `${show(s)} -> ${show(lang.value)}`);
      },
      stats: () => ({ roundTripsChecked: roundTrips, promptsChecked: prompts }),
    };
  },
};

/** Id sequences for the detokenizer target, stored as JSON arrays. */
const detokenizerTarget = {
  instrument: TOKENIZER_FILES,
  seedDirs: ['detokenizer'],
  async setup(ctx) {
    const o = await textOracles(ctx);
    const { tok, checkIncremental, checkHeader } = o;
    const { int, pick, rand } = ctx;
    // Ids of single byte-level tokens (byte b -> its GPT-2 alphabet character).
    const byteId = [];
    for (let b = 0, extra = 0; b < 256; b++) {
      const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
      byteId.push(tok.tokenToId(String.fromCodePoint(printable ? b : 256 + extra++)));
    }
    const added = tok.addedTokens.map((t) => t.id);
    const phrases = ['language English<asr_text>', 'language None<asr_text>hi', 'language  français <asr_text>', 'language', ' ', '\n', 'hello world', 'Привет', '😀', '<|im_end|>', 'language x\ny<asr_text>z'].map((s) => tok.encode(s));
    const oddIds = [-1, -0, 0.5, NaN, Infinity, -Infinity, 2 ** 31, 2 ** 53, tok.size, tok.size + 1, 151935, 200000, 1e9];
    // Short sequences by default (every id costs a TextDecoder call in each incremental decoder); 1 % long.
    const ID_LIMIT = 128;
    const LONG_ID_LIMIT = 1024;
    let sequences = 0;
    const mutate = (src, corpus) => {
      const ids = src.slice();
      const rounds = 1 + int(4);
      for (let r = 0; r < rounds; r++) {
        const at = int(ids.length + 1);
        switch (int(9)) {
          case 0: // a byte token: continuation, lead or invalid bytes most of the time
            ids.splice(at, 0, byteId[rand() < 0.7 ? pick([0x80 + int(64), 0xc0 + int(64), 0xf5 + int(11), 0xef, 0xbb, 0xbf, 0xed, 0xa0]) : int(256)]);
            break;
          case 1:
            ids.splice(at, 0, pick(added));
            break;
          case 2:
            ids.splice(at, 0, ...pick(phrases));
            break;
          case 3:
            ids.splice(at, 0, int(tok.size));
            break;
          case 4:
            ids.splice(at, 0, pick(oddIds));
            break;
          case 5:
            if (ids.length) ids.splice(int(ids.length), 1 + int(4));
            break;
          case 6: {
            const other = pick(corpus);
            const a = int(other.length + 1);
            ids.splice(at, 0, ...other.slice(a, a + 1 + int(16)));
            break;
          }
          case 7:
            if (ids.length) ids[int(ids.length)] = byteId[int(256)];
            break;
          default: // duplicate a range
            if (ids.length) {
              const a = int(ids.length);
              ids.splice(a, 0, ...ids.slice(a, a + 1 + int(8)));
            }
        }
      }
      const limit = rand() < 0.01 ? LONG_ID_LIMIT : ID_LIMIT;
      return ids.length > limit ? ids.slice(0, limit) : ids;
    };
    return {
      ext: '.json',
      exts: ['.json'],
      extOf: () => '.json',
      // JSON has no NaN / Infinity / -0: they are written as strings and read back.
      serialize: (ids) => utf8.encode(JSON.stringify(ids.map((id) => (Number.isFinite(id) && !Object.is(id, -0) ? id : String(id))))),
      deserialize: (b) => JSON.parse(new TextDecoder().decode(b)).map(Number),
      fallbackSeeds: () => phrases.slice(),
      mutate,
      run(ids) {
        sequences++;
        checkIncremental(ids, false);
        checkIncremental(ids, true);
        checkHeader(ids);
      },
      stats: () => ({ sequences }),
    };
  },
};

const TARGET_DEFS = {
  wav: wavTarget(false),
  'wav-stream': wavTarget(true),
  tokenizer: tokenizerTarget,
  detokenizer: detokenizerTarget,
};

// ================================================================================================== seeds

function writeSeeds() {
  const WAV_SEEDS = join(FUZZ_DIR, 'wav');
  const TOK_SEEDS = join(FUZZ_DIR, 'tokenizer');
  mkdirSync(WAV_SEEDS, { recursive: true });
  mkdirSync(TOK_SEEDS, { recursive: true });
  const r = rng(7);
  const tone = (n, ch = 1) => Array.from({ length: n * ch }, (_, i) => 0.5 * Math.sin(i / 3) + 0.1 * (r() - 0.5));
  const seeds = {
    'pcm8-mono': buildWav({ bits: 8, data: encodeSamples(tone(64), { bits: 8 }) }),
    'pcm16-mono': buildWav({ data: encodeSamples(tone(64)) }),
    'pcm16-stereo-44k1': buildWav({ channels: 2, sampleRate: 44100, data: encodeSamples(tone(48, 2)) }),
    'pcm24-mono-8k': buildWav({ bits: 24, sampleRate: 8000, data: encodeSamples(tone(40), { bits: 24 }) }),
    'pcm32-mono-48k': buildWav({ bits: 32, sampleRate: 48000, data: encodeSamples(tone(40), { bits: 32 }) }),
    'f32-mono': buildWav({ formatTag: 3, bits: 32, data: encodeSamples(tone(40), { bits: 32, float: true }) }),
    'f64-stereo': buildWav({ formatTag: 3, bits: 64, channels: 2, data: encodeSamples(tone(24, 2), { bits: 64, float: true }) }),
    'extensible-pcm16-3ch': buildWav({ extensible: true, channels: 3, data: encodeSamples(tone(30, 3)) }),
    'extensible-f32': buildWav({ extensible: true, formatTag: 3, bits: 32, data: encodeSamples(tone(30), { bits: 32, float: true }) }),
    'list-junk-odd': buildWav({
      bits: 8,
      data: encodeSamples(tone(33), { bits: 8 }),
      before: [chunk('JUNK', new Uint8Array(3))],
      after: [chunk('LIST', new TextEncoder().encode('INFOISFT\u0005\0\0\0Lavf\0'))],
    }),
    'streaming-sizes': buildWav({ data: encodeSamples(tone(50)), dataSize: 0xffffffff, riffSize: 0xffffffff }),
    'data-size-zero': buildWav({ data: encodeSamples(tone(50)), dataSize: 0 }),
    'truncated-data': buildWav({ data: encodeSamples(tone(50)), dataSize: 400 }),
    'mulaw': buildWav({ formatTag: 7, bits: 8, data: new Uint8Array(64).fill(0xff) }),
    'ima-adpcm': buildWav({ formatTag: 0x11, bits: 4, blockAlign: 256, data: new Uint8Array(256) }),
    'nan-f32': buildWav({ formatTag: 3, bits: 32, data: encodeSamples([0.1, NaN, 0.2], { bits: 32, float: true }) }),
    'header-only': buildWav({ data: new Uint8Array(0) }),
  };
  for (const [name, bytes] of Object.entries(seeds)) writeFileSync(join(WAV_SEEDS, `${name}.wav`), bytes);
  const texts = {
    'en-glossary': 'Glossary: Qwen3-ASR, antirez, llama.cpp, whisper.cpp. Names: Ana, Bjørn.',
    'ru': 'Привет, мир! Это проверка токенизатора — 123 456.',
    'zh-ja-ko': '你好，世界。こんにちは世界。안녕하세요 세계.',
    'emoji-zwj': 'family 👨‍👩‍👧 flags 🇺🇦🇯🇵 skin 👋🏽 text\u200dwith\u200bjoiners',
    'special-tokens': '<|im_start|>system\nhello<|im_end|>\n<|im_start|>user\n<|audio_start|><|audio_end|><|im_end|>\n<asr_text>',
    'whitespace': ' \t\n\r\n  \u00a0\u2003\u3000 x  \n\n\n',
    'combining': 'e\u0301 a\u0308 \u1100\u1161\u11a8 Ω Å ﬁ ẞ İı',
    'numbers-punct': "It's 3.14159; we'll say 1,000,000 — isn't it? (yes!) [no] {maybe} #tag @user",
  };
  for (const [name, s] of Object.entries(texts)) writeFileSync(join(TOK_SEEDS, `${name}.txt`), s);
  console.log(`fuzz-ts: wrote ${Object.keys(seeds).length} WAV and ${Object.keys(texts).length} text seeds`);
}

// =================================================================================================== entry

// Last, so that every module-level constant above is initialised.
if (isMainThread) await main();
else await workerMain(workerData);
