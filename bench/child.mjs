// One measurement in a fresh process (spawned by bench/run.mjs); prints one JSON line on stdout.
//
//   node bench/child.mjs probe '<json opts>'     machine floors: read bandwidth + GEMM rates (native probe)
//   node bench/child.mjs check <modelDir>        exit 0 when the model loads (a complete checkpoint)
//   node bench/child.mjs prime '<json opts>'     loads opts.model as int8 with opts.cacheDir (writes the cache)
//   node bench/child.mjs case '<json opts>'      load + cold start + idle CPU + timed transcriptions
//                                                (opts.coldOnly: exit right before the first encode)
//   node bench/child.mjs batch '<json opts>'     batched decoding: 1 and opts.sessions transcriptions decoding
//                                                at once on one model, alternately, aggregate tokens/s
//
// For `case`, opts.spawnEpochMs is the parent's clock right before spawn(): cold start is measured from it
// to the moment the first encode call is issued (node start, imports, audio read, Model.load with the
// weights memory-mapped, the session, the mel).
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { URL, pathToFileURL } from 'node:url';

import { epochMs, median as medianOf } from './lib.mjs';

const startEpochMs = epochMs();
const [mode, arg] = process.argv.slice(2);

// The SDK build under test: the run's snapshot of dist/ + the addon (RUSTASR_BENCH_ROOT, see run.mjs), so a
// concurrent rebuild of the working tree cannot change or remove it mid-run; else this checkout's dist/.
const sdkRoot = process.env.RUSTASR_BENCH_ROOT ? pathToFileURL(`${process.env.RUSTASR_BENCH_ROOT}/`) : new URL('../', import.meta.url);
const dist = (file) => import(new URL(`dist/${file}`, sdkRoot).href);
/** The SDK as `import 'rustasr'` loads it: the package's "import" entry (the ES module bundle). */
const sdkEntry = () => {
  const pkg = JSON.parse(readFileSync(new URL('package.json', sdkRoot), 'utf8'));
  return import(new URL(pkg.exports?.['.']?.import?.default ?? 'dist/index.js', sdkRoot).href);
};

function out(obj) {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

/** Peak and current memory from /proc (Linux), else from process.resourceUsage(). */
function memory() {
  const res = { maxRssMB: process.resourceUsage().maxRSS / 1024 };
  try {
    const s = readFileSync('/proc/self/status', 'utf8');
    const kb = (key) => {
      const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(s);
      return m ? Number(m[1]) / 1024 : undefined;
    };
    Object.assign(res, { vmHwmMB: kb('VmHWM'), rssAnonMB: kb('RssAnon'), rssFileMB: kb('RssFile') });
  } catch {
    // not Linux
  }
  return res;
}

/** CPU used by this whole process (all threads) while it sleeps for `ms`, as % of one core. */
async function idleCpu(ms) {
  const r0 = process.resourceUsage();
  const t0 = performance.now();
  await sleep(ms);
  const r1 = process.resourceUsage();
  const wall = performance.now() - t0;
  const cpuMs = (r1.userCPUTime - r0.userCPUTime + r1.systemCPUTime - r0.systemCPUTime) / 1000;
  return { ms: wall, cpuMs, pct: (100 * cpuMs) / wall };
}

async function probe(opts) {
  const { nativeDev } = await dist('native.js');
  const t0 = performance.now();
  const r = await nativeDev().probe(opts);
  out({ ok: true, ...r, wallMs: performance.now() - t0 });
}

async function prime(o) {
  const { Model } = await dist('index.js');
  const m = await Model.load(o.model, { threads: o.threads, quant: o.quant ?? 'int8', cacheDir: o.cacheDir });
  const state = m.info.int8Cache;
  await m.ready(); // the tokenizer tables are written to the cache too
  m.dispose();
  out({ ok: true, int8Cache: state });
}

async function check(dir) {
  const { Model } = await dist('index.js');
  const m = await Model.load(dir, { threads: 1 });
  m.dispose();
  out({ ok: true });
}

async function runCase(o) {
  const tImport = performance.now();
  const sdk = await sdkEntry();
  const importMs = performance.now() - tImport;
  let buildPrompt;
  try {
    ({ buildPrompt } = await dist('text/prompt.js'));
  } catch {
    buildPrompt = undefined;
  }
  const samples = await sdk.loadAudio(o.clip, 16000);

  const loadOpts = { threads: o.threads, kernel: o.kernel };
  if (o.device && o.device !== 'cpu') loadOpts.device = o.device;
  if (o.quant && o.quant !== 'bf16') loadOpts.quant = o.quant;
  if (o.precision && o.precision !== 'f32') loadOpts.precision = o.precision;
  if (o.cacheDir !== undefined) loadOpts.cacheDir = o.cacheDir;
  const memoryPhases = { start: memory() };
  const tLoad = performance.now();
  const model = await sdk.Model.load(o.model, loadOpts);
  const loadMs = performance.now() - tLoad;
  const info = model.info;
  memoryPhases.loaded = memory();

  // Cold start: the first encode of the process.
  const session = model.createSession();
  const tMel = performance.now();
  const mel = await session.mel(samples);
  const coldMelMs = performance.now() - tMel;
  const encodeStartEpochMs = epochMs();
  if (o.coldOnly) {
    // Only the cold start is wanted: leave before any encoder work.
    out({ ok: true, coldStartMs: encodeStartEpochMs - o.spawnEpochMs, nodeStartMs: startEpochMs - o.spawnEpochMs, importMs, loadMs, int8Cache: info.int8Cache });
    process.exit(0);
  }
  const tEnc = performance.now();
  const enc = await session.encode(mel.data, mel.frames, false);
  const coldEncodeMs = performance.now() - tEnc;
  session.dispose();
  memoryPhases.firstEncode = memory();

  let promptTokens = enc.nTokens + 9;
  if (buildPrompt) {
    try {
      promptTokens = buildPrompt((await model.ready()).tokenizer, {
        context: '',
        audioTokens: enc.nTokens,
        supportedLanguages: info.supportLanguages,
      }).ids.length;
    } catch {
      // keep the estimate
    }
  }

  const idle = await idleCpu(o.idleMs);

  const reps = [];
  for (let r = 0; r < o.reps; r++) {
    const gen = model.decode(samples, { maxNewTokens: o.tokens, repetitionGuard: false });
    let res;
    // When each token arrived: the first comes from prefill, each later one from one decode step, so the
    // gaps between arrivals are the steps' times (the loop here does nothing else).
    const arrivals = [];
    for (;;) {
      const it = await gen.next();
      if (it.done) {
        res = it.value;
        break;
      }
      arrivals.push(performance.now());
    }
    const stepMs = arrivals.slice(1).map((x, i) => x - arrivals[i]);
    const t = res.timings;
    const steps = res.tokens.length - 1; // the first token comes from prefill
    reps.push({
      melMs: t.melMs,
      encoderMs: t.encoderMs,
      prefillMs: t.prefillMs,
      decodeMs: t.decodeMs,
      totalMs: t.totalMs,
      rtf: t.rtf,
      tokens: res.tokens.length,
      decodeMsPerToken: steps > 0 ? t.decodeMs / steps : NaN,
      stepMsMedian: stepMs.length > 0 ? medianOf(stepMs) : NaN,
      stepMsMax: stepMs.length > 0 ? Math.max(...stepMs) : NaN,
    });
  }
  const quantInfo = Object.fromEntries(Object.entries(info).filter(([k]) => /quant|dtype/i.test(k)));
  const memoryAfterRuns = memory();

  // Floors probed in this process right after the timed runs (the machine is shared: load varies), and
  // after the peak RSS was read (the probe's buffer would count).
  let localProbe;
  if (o.localProbe) {
    try {
      const { nativeDev } = await dist('native.js');
      localProbe = await nativeDev().probe(o.localProbe);
    } catch (err) {
      localProbe = { error: String(err?.message ?? err) };
    }
  }
  model.dispose();

  // Where Model.load's time goes (measured after everything else, weights now in the page cache):
  // the native load (mmap + tensor validation) and the tokenizer (vocab.json + merges.txt).
  const loadParts = {};
  try {
    const { native } = await dist('native.js');
    let t = performance.now();
    const nm = await native().loadModel(o.model, {
      threads: o.threads,
      kernel: o.kernel,
      ...(loadOpts.quant ? { quant: loadOpts.quant } : {}),
      ...(loadOpts.cacheDir !== undefined ? { cacheDir: loadOpts.cacheDir } : {}),
    });
    loadParts.nativeMs = performance.now() - t;
    nm.dispose();
    const { loadTokenizer } = await dist('text/tokenizer.js');
    t = performance.now();
    await loadTokenizer(o.model, { cacheDir: o.cacheDir ?? false });
    loadParts.tokenizerMs = performance.now() - t;
  } catch (err) {
    loadParts.error = String(err?.message ?? err);
  }
  out({
    ok: true,
    pid: process.pid,
    nodeStartMs: startEpochMs - o.spawnEpochMs,
    importMs,
    loadMs,
    coldMelMs,
    coldEncodeMs,
    coldStartMs: encodeStartEpochMs - o.spawnEpochMs,
    audioSeconds: samples.length / 16000,
    melFrames: mel.frames,
    audioTokens: enc.nTokens,
    promptTokens,
    idle,
    kernel: info.kernel,
    precision: info.precision,
    device: info.device,
    threads: info.threads,
    quantInfo,
    int8Cache: info.int8Cache,
    reps,
    localProbe,
    loadParts,
    memory: memoryAfterRuns,
    memoryPhases: { ...memoryPhases, afterRuns: memoryAfterRuns },
  });
}

/** One transcription with forced tokens; the arrival time of each token (ms, performance.now()). */
async function timedDecode(model, samples, tokens) {
  const arrivals = [];
  const gen = model.decode(samples, { maxNewTokens: tokens, repetitionGuard: false });
  for (;;) {
    const it = await gen.next();
    if (it.done) break;
    arrivals.push(performance.now());
  }
  return arrivals;
}

async function batch(o) {
  const sdk = await dist('index.js');
  const samples = await sdk.loadAudio(o.clip, 16000);
  const loadOpts = { threads: o.threads, kernel: o.kernel };
  if (o.quant && o.quant !== 'bf16') loadOpts.quant = o.quant;
  if (o.cacheDir !== undefined) loadOpts.cacheDir = o.cacheDir;
  const model = await sdk.Model.load(o.model, loadOpts);
  await model.ready();
  await timedDecode(model, samples, 4); // warm-up: pages, buffers
  const rounds = [];
  for (let r = 0; r < o.reps; r++) {
    for (const n of [1, o.sessions]) {
      const before = model.batchStats();
      const arrivals = await Promise.all(Array.from({ length: n }, () => timedDecode(model, samples, o.tokens)));
      const after = model.batchStats();
      // The window in which every session decodes: from the last first token (all are past their prefill) to
      // the first last token (none has finished); the tokens that arrived in it, per second.
      const start = Math.max(...arrivals.map((a) => a[0]));
      const end = Math.min(...arrivals.map((a) => a[a.length - 1]));
      const steps = arrivals.reduce((s, a) => s + a.filter((t) => t > start && t <= end).length, 0);
      rounds.push({
        sessions: n,
        windowMs: end - start,
        steps,
        tokensPerSec: end > start ? (steps * 1000) / (end - start) : NaN,
        rowsPerPass: (after.rows - before.rows) / Math.max(1, after.batches - before.batches),
      });
    }
  }
  const info = model.info;
  model.dispose();
  out({ ok: true, quant: info.quant, kernel: info.kernel, rounds });
}

try {
  if (mode === 'probe') await probe(JSON.parse(arg ?? '{}'));
  else if (mode === 'batch') await batch(JSON.parse(arg));
  else if (mode === 'check') await check(arg);
  else if (mode === 'prime') await prime(JSON.parse(arg));
  else if (mode === 'case') await runCase(JSON.parse(arg));
  else throw new Error(`unknown mode ${mode}`);
} catch (err) {
  out({ ok: false, error: String(err?.message ?? err), code: err?.code });
  process.exitCode = 1;
}
