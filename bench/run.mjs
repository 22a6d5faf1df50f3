#!/usr/bin/env node
// `npm run bench`: end-to-end performance of the engine against the machine's physical floors.
//
// Every model x quantisation x clip is measured in a fresh child process (bench/child.mjs): load time,
// cold start, idle CPU, peak RSS, then `--reps` timed transcriptions (mel, encoder, prefill, decode with a
// forced token count). The memory read bandwidth and the GEMM rate are probed by the native side in
// separate children at the start and at the end of the same run; each stage is then printed as a ratio
// to its floor. Results: JSON on stdout and in --out, a readable table on stderr. See docs/performance.md.
//
//   npm run bench -- [--variants 0.6b,1.7b] [--clips 11s,60s] [--reps 3] [--threads N] [--tokens 32]
//                    [--quant bf16,int8] [--kernel auto] [--device cpu] [--models-dir DIR] [--out FILE] [--quick]
import { spawn } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { clearTimeout, setTimeout } from 'node:timers';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';

import {
  decodeBytes,
  encodeWavF32,
  encoderFlops,
  epochMs,
  fix,
  median,
  prefillFlops,
  readDims,
  stats,
  table,
} from './lib.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '..');
const childPath = join(here, 'child.mjs');
const t0 = performance.now();

// ------------------------------------------------------------------------------------------------
// Options

const USAGE = `usage: npm run bench -- [options]
  --variants LIST   0.6b,1.7b (default), 'tiny' (golden tiny-a) or model directories
  --clips LIST      11s,60s (default) or WAV paths
  --reps N          timed transcriptions per case (default 3); medians are reported
  --threads N       engine threads (default: os.availableParallelism())
  --tokens N        forced decode length, maxNewTokens (default 32; random weights never emit EOS)
  --quant LIST      bf16 (default), int8, int4: passed to Model.load when it supports it
  --precision LIST  f32 (default), bf16: the encoder / prefill arithmetic (Model.load precision); bf16 cases are
                    measured against the BF16 dot-product peak
  --batch N         sessions decoding at once in the batched-decoding section (default 4; 0 skips it): aggregate
                    decode tokens/s against one session's, for the first synthetic variant, bf16 and int8
  --cli N           runs of \`rustasr infer\` per case in the whole-process section (default 5; 0 skips it): the
                    CLI as a user runs it (11 s clip, 30 tokens), against the reference figures of issue 17
  --kernel NAME     matrix-vector kernel (default auto)
  --device NAME     compute device passed to Model.load: cpu (default), cuda, metal or auto
  --int8-cache MODE int8 cases: warm (default: the on-disk int8 cache is written by an unmeasured load first,
                    so every measured load maps it), cold (each process starts from an empty cache: quantises
                    and writes it) or off (cacheDir: false, quantised at every load). The bench uses its own
                    cache directory (<tmp>/rustasr-bench/int8-cache), never the user's
  --models-dir DIR  where synth-<variant> checkpoints live / are generated (default ${os.tmpdir()})
  --idle-ms N       idle window for the idle-CPU measurement (default 2000)
  --bw-mib N        bandwidth probe buffer in MiB (default 1024)
  --out FILE        JSON result file (default <tmp>/rustasr-bench/bench-<time>.json)
  --no-snapshot     children load this checkout's dist/ and build/ directly (default: a private copy)
  --no-live         skip the live-recognition section (bench/live.mjs: keep-up, exact vs fast, latency,
                    concurrency, memory; it runs on the first synthetic variant after the other cases)
  --live-minutes N, --live-paced-seconds N, --live-memory-minutes N   its stream lengths (default 5, 60, 60)
  --quick           CI smoke: golden tiny model, one short clip, 1 rep, small probes, a short live section`;

function parseArgs(argv) {
  const o = {
    variants: ['0.6b', '1.7b'],
    clips: ['11s', '60s'],
    reps: 3,
    threads: os.availableParallelism(),
    tokens: 32,
    quant: ['bf16'],
    precision: ['f32'],
    batch: 4,
    cli: 5,
    kernel: 'auto',
    device: 'cpu',
    int8Cache: 'warm',
    modelsDir: os.tmpdir(),
    idleMs: 2000,
    bwMiB: 1024,
    out: undefined,
    quick: false,
    noSnapshot: false,
    live: true,
    liveArgs: {},
  };
  const list = (v) => v.split(',').map((s) => s.trim()).filter(Boolean);
  const int = (k, v) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new Error(`--${k} needs a positive integer, got ${v}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const [key, inline] = a.startsWith('--') ? a.slice(2).split(/=(.*)/s, 2) : [a, undefined];
    const val = () => inline ?? argv[++i] ?? '';
    switch (key) {
      case 'variants': o.variants = list(val()); break;
      case 'clips': o.clips = list(val()); break;
      case 'reps': o.reps = int(key, val()); break;
      case 'threads': o.threads = int(key, val()); break;
      case 'tokens': o.tokens = int(key, val()); break;
      case 'quant': o.quant = list(val()); break;
      case 'precision': o.precision = list(val()); break;
      case 'batch': o.batch = Number(val()); if (!Number.isInteger(o.batch) || o.batch < 0) throw new Error('--batch needs an integer >= 0'); break;
      case 'cli': o.cli = Number(val()); if (!Number.isInteger(o.cli) || o.cli < 0) throw new Error('--cli needs an integer >= 0'); break;
      case 'kernel': o.kernel = val(); break;
      case 'device': o.device = val(); break;
      case 'int8-cache':
        o.int8Cache = val();
        if (!['warm', 'cold', 'off'].includes(o.int8Cache)) throw new Error(`--int8-cache must be warm, cold or off, got ${o.int8Cache}`);
        break;
      case 'models-dir': o.modelsDir = resolve(val()); break;
      case 'idle-ms': o.idleMs = int(key, val()); break;
      case 'bw-mib': o.bwMiB = int(key, val()); break;
      case 'out': o.out = resolve(val()); break;
      case 'quick': o.quick = true; break;
      case 'no-live': o.live = false; break;
      case 'live-minutes': o.liveArgs.minutes = Number(val()); break;
      case 'live-paced-seconds': o.liveArgs['paced-seconds'] = Number(val()); break;
      case 'live-memory-minutes': o.liveArgs['memory-minutes'] = Number(val()); break;
      case 'no-snapshot': o.noSnapshot = true; break;
      case 'help': case 'h': process.stdout.write(`${USAGE}\n`); process.exit(0); break;
      default: throw new Error(`unknown option ${a}\n${USAGE}`);
    }
  }
  if (o.tokens < 2) throw new Error('--tokens must be at least 2 (one prefill token plus decode steps)');
  if (o.quick) {
    Object.assign(o, { variants: ['tiny'], clips: ['5s'], reps: 1, tokens: 8, idleMs: 300, bwMiB: 128, batch: 2, cli: 1 });
  }
  return o;
}

const log = (msg) => process.stderr.write(`[bench ${((performance.now() - t0) / 1000).toFixed(1)}s] ${msg}\n`);

// ------------------------------------------------------------------------------------------------
// Children

let sdkRoot = root; // the snapshot the children load (see snapshotSdk)

function runChild(args, { timeoutMs = 30 * 60 * 1000 } = {}) {
  return new Promise((resolvePromise) => {
    const env = { ...process.env, RUSTASR_BENCH_ROOT: sdkRoot };
    const child = spawn(process.execPath, [childPath, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const line = stdout.trim().split('\n').pop() ?? '';
      let res;
      try {
        res = JSON.parse(line);
      } catch {
        res = { ok: false, error: `child exited ${code ?? signal}: ${stderr.trim().slice(-2000) || stdout.slice(-2000)}` };
      }
      resolvePromise(res);
    });
  });
}

/** Spawns a `case` child; the spawn timestamp is taken right before spawn(). */
function runCaseChild(opts) {
  return runChild(['case', JSON.stringify({ ...opts, spawnEpochMs: epochMs() })]);
}

/**
 * Copies the build under test (dist/, the compiled addon, package.json; node_modules linked) to `dir`, so
 * that other people rebuilding this working tree during a long run cannot swap or delete it under the
 * children. Waits up to two minutes for a build in progress to produce the addon.
 */
async function snapshotSdk(dir) {
  const release = join(root, 'build', 'Release');
  let addon;
  for (let i = 0; i < 60; i++) {
    addon = existsSync(release) ? readdirSync(release).find((f) => f.endsWith('.node')) : undefined;
    if (addon || existsSync(join(root, 'prebuilds'))) break;
    if (i === 0) log('build/Release has no addon (a rebuild in progress?): waiting');
    await sleep(2000);
  }
  if (!addon && !existsSync(join(root, 'prebuilds'))) throw new Error('no compiled addon: run npm run build:native');
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(join(dir, 'build', 'Release'), { recursive: true });
  cpSync(join(root, 'dist'), join(dir, 'dist'), { recursive: true });
  cpSync(join(root, 'package.json'), join(dir, 'package.json'));
  cpSync(join(root, 'bin'), join(dir, 'bin'), { recursive: true }); // the CLI of the whole-process section
  if (addon) cpSync(join(release, addon), join(dir, 'build', 'Release', addon));
  // The CUDA plugin is found next to the addon (--device cuda).
  if (existsSync(join(release, 'rustasr_cuda.so'))) cpSync(join(release, 'rustasr_cuda.so'), join(dir, 'build', 'Release', 'rustasr_cuda.so'));
  if (existsSync(join(root, 'prebuilds'))) cpSync(join(root, 'prebuilds'), join(dir, 'prebuilds'), { recursive: true });
  symlinkSync(join(root, 'node_modules'), join(dir, 'node_modules'), 'dir');
  return dir;
}

const sdk = (file) => import(pathToFileURL(join(sdkRoot, 'dist', file)).href);

// ------------------------------------------------------------------------------------------------
// Inputs: models and clips

function goldenDir() {
  return process.env.RUSTASR_GOLDEN_DIR ? resolve(process.env.RUSTASR_GOLDEN_DIR) : resolve(root, '..', 'shared', 'golden');
}

async function ensureModel(variant, o) {
  if (variant === 'tiny') return join(goldenDir(), 'models', 'tiny-a');
  if (!/^\d+(\.\d+)?b$/i.test(variant)) return resolve(variant);
  const dir = join(o.modelsDir, `synth-${variant.toLowerCase()}`);
  const ok = existsSync(join(dir, 'config.json')) && (await runChild(['check', dir])).ok;
  if (ok) return dir;
  log(`generating synthetic ${variant} checkpoint in ${dir} (node bin/rustasr.js synth)`);
  const gen = await new Promise((res) => {
    const c = spawn(process.execPath, [join(root, 'bin', 'rustasr.js'), 'synth', '--variant', variant, '--out', dir], {
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    c.on('close', (code) => res(code));
  });
  if (gen !== 0 || !(await runChild(['check', dir])).ok) throw new Error(`could not build the synthetic ${variant} model in ${dir}`);
  return dir;
}

async function ensureClip(name, dir) {
  const golden = join(goldenDir(), 'audio');
  if (name === '11s') return join(golden, 'ru_11s.wav');
  if (name === '5s') return join(golden, 'en_5s.wav');
  const m = /^(\d+)s$/.exec(name);
  if (!m) return resolve(name);
  // An N-second clip: golden speech clips back to back (en_21s, ru_11s, en_5s, en_1p2s, ...), cut to N s.
  const seconds = Number(m[1]);
  const path = join(dir, `clip_${seconds}s.wav`);
  if (existsSync(path)) return path;
  const { loadAudio } = await sdk('index.js');
  const parts = [];
  for (const f of ['en_21s.wav', 'ru_11s.wav', 'en_5s.wav', 'en_1p2s.wav']) parts.push(await loadAudio(join(golden, f), 16000));
  const total = seconds * 16000;
  const pcm = new Float32Array(total);
  for (let off = 0, i = 0; off < total; i++) {
    const p = parts[i % parts.length];
    const n = Math.min(p.length, total - off);
    pcm.set(p.subarray(0, n), off);
    off += n;
  }
  mkdirSync(dir, { recursive: true });
  writeFileSync(path, encodeWavF32(pcm, 16000));
  return path;
}

/** Whether Model.load accepts a `quant` option in this build (its declared options, wherever they live). */
function quantSupport() {
  for (const f of ['core/model.d.ts', 'api/model.d.ts']) {
    try {
      const dts = readFileSync(join(sdkRoot, 'dist', f), 'utf8');
      const m = /interface LoadModelOptions\s*{([\s\S]*?)\n}/.exec(dts);
      if (m && /\bquant\??\s*:/.test(m[1])) return true;
    } catch {
      // not in this build
    }
  }
  return false;
}

// ------------------------------------------------------------------------------------------------
// Probes

function probeOpts(o) {
  const n = o.quick ? 256 : 1024;
  const shapes = o.quick
    ? [{ impl: 'auto', n, rows: 1024, cols: 1024 }]
    : [
        // The issue's reference shape: x[1024, 1024] * W[4096, 1024]^T (like q/gate/up projections).
        { impl: 'auto', n, rows: 4096, cols: 1024 },
        { impl: 'own', n, rows: 4096, cols: 1024 },
        { impl: 'blas', n, rows: 4096, cols: 1024 },
        // A wide input (down / fc2 projections): x[1024, 4096] * W[1024, 4096]^T.
        { impl: 'auto', n, rows: 1024, cols: 4096 },
        { impl: 'own', n, rows: 1024, cols: 4096 },
        { impl: 'blas', n, rows: 1024, cols: 4096 },
      ];
  return {
    threads: o.threads,
    kernel: o.kernel,
    bandwidthBytes: o.bwMiB * 1024 * 1024,
    bandwidthReps: o.quick ? 3 : 5,
    peakReps: o.quick ? 2 : 5,
    peakSeconds: o.quick ? 0.05 : 0.2,
    gemm: shapes,
    gemmReps: o.quick ? 2 : 3,
  };
}

async function runProbe(o, when) {
  log(`probe (${when}): read bandwidth ${o.bwMiB} MiB, GEMM`);
  const r = await runChild(['probe', JSON.stringify(probeOpts(o))]);
  if (!r.ok) throw new Error(`probe failed: ${r.error}`);
  return { when, loadavg: os.loadavg(), ...r };
}

/** Floors from all probe samples of the run: median bandwidth, median register-only peaks, best median GEMM rate. */
function floorsFrom(probes) {
  const bwSamples = probes.flatMap((p) => p.bandwidth.seconds.map((s) => p.bandwidth.bytes / s / 1e9));
  const byShape = new Map();
  for (const p of probes)
    for (const g of p.gemm) {
      const key = `${g.impl} ${g.n}x${g.rows}x${g.cols}`;
      const arr = byShape.get(key) ?? [];
      arr.push(...g.seconds.map((s) => g.flops / s / 1e9));
      byShape.set(key, arr);
    }
  const gemm = [...byShape.entries()].map(([key, v]) => ({ key, gflops: stats(v) }));
  const best = gemm.reduce((a, b) => (b.gflops.median > (a?.gflops.median ?? 0) ? b : a), undefined);
  const peak = (kind) => {
    const v = probes.flatMap((p) => (p.peak ?? []).filter((x) => x.kind === kind).flatMap((x) => x.seconds.map((s) => x.flops / s / 1e9)));
    return v.length ? stats(v) : undefined;
  };
  const fp32 = peak('fp32-fma'), bf16 = peak('bf16-dot');
  return {
    // The silicon's compute peak (register-only loops): the floors of the encoder and the prefill.
    fp32PeakGflops: fp32?.median ?? NaN,
    fp32Peak: fp32,
    bf16PeakGflops: bf16?.median ?? NaN,
    bf16Peak: bf16,
    bandwidthGBs: stats(bwSamples),
    bandwidthPerProbe: probes.map((p) => ({ when: p.when, median: median(p.bandwidth.seconds.map((s) => p.bandwidth.bytes / s / 1e9)) })),
    gemm,
    // The engine's own GEMM rate (reported, not a floor).
    gemmPeakGflops: best?.gflops.median ?? NaN,
    gemmPeakShape: best?.key,
  };
}

// ------------------------------------------------------------------------------------------------
// Cases

/**
 * The cache directory a case child gets: the bench's own (never the user's), primed by an unmeasured load so
 * that the measured ones read the tokenizer tables (and the int8 / int4 decoder) from it; for int8 / int4 see
 * --int8-cache.
 */
let coldCaches = 0;
async function int8CacheFor(o, c, workDir) {
  const quantised = c.quant === 'int8' || c.quant === 'int4';
  if (!quantised) {
    const dir = join(workDir, 'cache');
    const r = await runChild(['prime', JSON.stringify({ model: c.modelDir, cacheDir: dir, threads: o.threads, quant: 'bf16' })]);
    if (!r.ok) throw new Error(`could not write the tokenizer cache: ${r.error}`);
    return dir;
  }
  if (o.int8Cache === 'off') return false;
  if (o.int8Cache === 'cold') {
    const dir = join(workDir, `int8-cold-${process.pid}-${coldCaches++}`);
    rmSync(dir, { recursive: true, force: true });
    process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
    return dir;
  }
  const dir = join(workDir, 'int8-cache');
  const r = await runChild(['prime', JSON.stringify({ model: c.modelDir, cacheDir: dir, threads: o.threads, quant: c.quant })]);
  if (!r.ok) throw new Error(`could not write the ${c.quant} cache: ${r.error}`);
  return dir;
}

async function runCase(o, c, floors, workDir) {
  const base = { model: c.modelDir, clip: c.clipPath, threads: o.threads, kernel: o.kernel, device: o.device, quant: c.quant, precision: c.precision, tokens: o.tokens, reps: o.reps, idleMs: o.idleMs };
  const r = await runCaseChild({ ...base, cacheDir: await int8CacheFor(o, c, workDir), localProbe: localProbeOpts(o) });
  if (!r.ok) return { ...c, error: r.error };
  // More cold starts, in processes that leave right before encoding (cold start is one sample per process).
  const cold = [r.coldStartMs];
  const int8Cache = [r.int8Cache];
  for (let i = 1; i < o.reps; i++) {
    const x = await runCaseChild({ ...base, cacheDir: await int8CacheFor(o, c, workDir), coldOnly: true });
    if (x.ok) {
      cold.push(x.coldStartMs);
      int8Cache.push(x.int8Cache);
    }
  }
  const dims = readDims(c.modelDir);
  const med = (k) => median(r.reps.map((x) => x[k]));
  const avgPos = r.promptTokens + o.tokens / 2;
  const bytes = decodeBytes(dims, { ...quantLayout(c.quant), pos: avgPos });
  const enc = encoderFlops(dims, r.melFrames);
  const pre = prefillFlops(dims, r.promptTokens);
  const m = {
    loadMs: r.loadMs,
    coldStartMs: median(cold),
    coldStartSamplesMs: cold,
    melMs: med('melMs'),
    encoderMs: med('encoderMs'),
    prefillMs: med('prefillMs'),
    decodeMsPerToken: med('decodeMsPerToken'),
    // The median step (robust to the stalls of a shared VM: a 100-250 ms pause of the host shows up in a
    // few steps of a run and moves the mean by several ms per token); the mean above is what a run took.
    decodeStepMsMedian: med('stepMsMedian'),
    decodeStepMsMax: Math.max(...r.reps.map((x) => x.stepMsMax)),
    totalMs: med('totalMs'),
    rtf: med('rtf'),
    peakRssMB: r.memory.vmHwmMB ?? r.memory.maxRssMB,
    idleCpuPct: r.idle.pct,
  };
  const notes = [];
  if (r.reps.some((x) => x.tokens < o.tokens)) notes.push(`an EOS stopped decoding early (${r.reps.map((x) => x.tokens).join(',')} tokens)`);
  if (c.quant !== 'bf16' && !Object.values(r.quantInfo ?? {}).some((v) => String(v).toLowerCase().includes(c.quant)))
    notes.push(`model.info does not report quant=${c.quant} (fields: ${JSON.stringify(r.quantInfo)})`);
  const local = r.localProbe && !r.localProbe.error ? floorsFrom([{ when: 'case', ...r.localProbe }]) : undefined;
  return applyFloors({
    ...c,
    localFloors: local,
    localProbe: r.localProbe,
    kernel: r.kernel,
    precisionInUse: r.precision ?? 'f32',
    threads: r.threads,
    audioSeconds: r.audioSeconds,
    melFrames: r.melFrames,
    audioTokens: r.audioTokens,
    promptTokens: r.promptTokens,
    tokens: o.tokens,
    metrics: m,
    floors: {
      decodeWeightBytes: bytes.weights,
      decodeKvBytesAvg: bytes.kvCache,
      encoderGflop: enc.total / 1e9,
      encoderConvStemGflop: enc.conv / 1e9,
      prefillGflop: pre.total / 1e9,
    },
    cold: { nodeStartMs: r.nodeStartMs, importMs: r.importMs, loadMs: r.loadMs, melMs: r.coldMelMs, firstEncodeMs: r.coldEncodeMs },
    loadParts: r.loadParts,
    int8Cache: c.quant === 'int8' || c.quant === 'int4' ? { mode: o.int8Cache, states: int8Cache } : undefined,
    idle: r.idle,
    memory: r.memory,
    memoryPhases: r.memoryPhases,
    reps: r.reps,
    notes,
  }, floors);
}

/** Bytes per weight of a decoder quantisation, as Model.load documents it (the decode floor's bytes). */
function quantLayout(quant) {
  if (quant === 'int8') return { weightBytes: 1, groupScaleBytes: 4, group: 128 };
  if (quant === 'int4') return { weightBytes: 0.5, groupScaleBytes: 4, group: 32 };
  return { weightBytes: 2, groupScaleBytes: 0, group: 128 };
}

/**
 * Floors (ms) of a case's stages and measured / floor ratios. `c.ratios` use the case's own probe (run in
 * its process right after the timed runs, so it saw the same machine load) when there is one, else the
 * run's floors; `c.runRatios` always use the run's floors (start + end probes).
 */
function applyFloors(c, floors) {
  const derive = (fl) => {
    const bw = fl.bandwidthGBs.median * 1e9; // bytes/s
    // The compute floor: the silicon's register-only peak for the case's arithmetic (fp32 FMA; the BF16 dot
    // product for precision bf16 where the CPU has it), never the engine's own GEMM rate.
    const bf = c.precisionInUse === 'bf16' && Number.isFinite(fl.bf16PeakGflops);
    const peakGflops = bf ? fl.bf16PeakGflops : fl.fp32PeakGflops;
    const peak = peakGflops * 1e9; // FLOP/s
    const f = c.floors;
    const ms = {
      bandwidthGBs: fl.bandwidthGBs.median,
      peakGflops,
      peakKind: bf ? 'bf16-dot' : 'fp32-fma',
      gemmPeakGflops: fl.gemmPeakGflops,
      decodeFloorMs: (f.decodeWeightBytes / bw) * 1000,
      decodeKvFloorMs: ((f.decodeWeightBytes + f.decodeKvBytesAvg) / bw) * 1000,
      encoderFloorMs: ((f.encoderGflop * 1e9) / peak) * 1000,
      prefillFloorMs: ((f.prefillGflop * 1e9) / peak) * 1000,
    };
    const m = c.metrics;
    const enginePeak = fl.gemmPeakGflops * 1e9;
    return {
      floorsMs: ms,
      decodeVsBandwidth: m.decodeStepMsMedian / ms.decodeFloorMs,
      decodeVsBandwidthWithKv: m.decodeStepMsMedian / ms.decodeKvFloorMs,
      decodeMeanVsBandwidth: m.decodeMsPerToken / ms.decodeFloorMs,
      encoderVsPeak: m.encoderMs / ms.encoderFloorMs,
      prefillVsPeak: m.prefillMs / ms.prefillFloorMs,
      encoderPrefillVsPeak: (m.encoderMs + m.prefillMs) / (ms.encoderFloorMs + ms.prefillFloorMs),
      // Against the engine's own GEMM rate (earlier runs' "GEMM floor"), for comparison only.
      encoderPrefillVsEngineGemm: (m.encoderMs + m.prefillMs) / (((f.encoderGflop + f.prefillGflop) * 1e9) / enginePeak * 1000),
    };
  };
  c.runRatios = derive(floors);
  c.ratios = c.localFloors ? { basis: 'case probe', ...derive(c.localFloors) } : { basis: 'run probes', ...c.runRatios };
  return c;
}

/** The probe each case child runs right after its timed transcriptions (a few seconds). */
function localProbeOpts(o) {
  const n = o.quick ? 256 : 1024;
  return {
    threads: o.threads,
    kernel: o.kernel,
    bandwidthBytes: Math.min(o.bwMiB, 512) * 1024 * 1024,
    bandwidthReps: 3,
    gemm: [{ impl: 'auto', n, rows: o.quick ? 1024 : 4096, cols: 1024 }],
    gemmReps: 2,
    peakReps: 3,
    peakSeconds: o.quick ? 0.05 : 0.15,
  };
}

// Targets of issues 4 and 17 (0.6B cases; the int4 decode target on every int4 case).
const TARGETS = [
  // Bytes per token = the weights + the KV cache a step reads (at the run's average position); the step is
  // the median one (see decodeStepMsMedian).
  {
    key: 'decode',
    label: 'decode step <= 1.15x bandwidth floor (weights + KV cache)',
    applies: (c) => c.quant !== 'int4',
    get: (c) => c.ratios.decodeVsBandwidthWithKv,
    ok: (v) => v <= 1.15,
    fmt: (v) => `${v.toFixed(2)}x`,
  },
  {
    key: 'decodeInt4',
    label: 'int4 decode step <= 1.2x its bandwidth floor (weights + KV cache)',
    applies: (c) => c.quant === 'int4',
    get: (c) => c.ratios.decodeVsBandwidthWithKv,
    ok: (v) => v <= 1.2,
    fmt: (v) => `${v.toFixed(2)}x`,
  },
  {
    key: 'encPre',
    label: 'encoder+prefill <= 1.3x FLOPs / peak',
    get: (c) => c.ratios.encoderPrefillVsPeak,
    ok: (v) => v <= 1.3,
    fmt: (v, c) => `${v.toFixed(2)}x ${c.ratios.floorsMs.peakKind}`,
  },
  { key: 'cold', label: 'start to first encoder work <= 100 ms', get: (c) => c.metrics.coldStartMs, ok: (v) => v <= 100, fmt: (v) => `${v.toFixed(0)} ms` },
  {
    key: 'rss',
    label: 'peak RSS <= 2.0 GB (int8 1.2 GB)',
    get: (c) => c.metrics.peakRssMB,
    ok: (v, c) => v * 1024 * 1024 <= (c.quant === 'bf16' ? 2.0e9 : 1.2e9),
    fmt: (v) => `${((v * 1024 * 1024) / 1e9).toFixed(2)} GB`,
  },
  { key: 'idle', label: 'idle CPU < 1%', get: (c) => c.metrics.idleCpuPct, ok: (v) => v < 1, fmt: (v) => `${v.toFixed(2)}%` },
];

/**
 * The reference figures of issue 17: the popular C implementation of Qwen3-ASR (BLAS build), whole process,
 * 2 threads, 11 s English clip, 30 forced tokens, measured side by side on the reference VM. The comparison
 * program is not part of this project: these numbers are the reference.
 */
const REFERENCE_CLI_S = { '0.6b': 3.98, '1.7b': 9.12 };
const CLI_TARGETS = { '0.6b/bf16': 3, '0.6b/int8': 4, '1.7b/bf16': 3 };

// ------------------------------------------------------------------------------------------------
// Batched decoding and the whole process

/** Aggregate decode tokens/s of o.batch sessions against one session's, alternately in one process. */
async function batchSection(o, m, quant, clipPath, workDir) {
  const cacheDir = await int8CacheFor(o, { quant, modelDir: m.modelDir }, workDir);
  log(`batched decoding ${m.variant} ${quant}: 1 vs ${o.batch} sessions, ${2 * o.tokens} tokens, ${o.reps} rounds`);
  const r = await runChild(['batch', JSON.stringify({ model: m.modelDir, clip: clipPath, threads: o.threads, kernel: o.kernel, quant, cacheDir, sessions: o.batch, tokens: 2 * o.tokens, reps: o.reps })]);
  if (!r.ok) return { variant: m.variant, quant, error: r.error };
  const one = median(r.rounds.filter((x) => x.sessions === 1).map((x) => x.tokensPerSec));
  const many = median(r.rounds.filter((x) => x.sessions === o.batch).map((x) => x.tokensPerSec));
  const rows = median(r.rounds.filter((x) => x.sessions === o.batch).map((x) => x.rowsPerPass));
  return { variant: m.variant, quant, sessions: o.batch, oneTokensPerSec: one, manyTokensPerSec: many, ratio: many / one, rowsPerPass: rows, rounds: r.rounds };
}

/** `rustasr infer` as a user runs it: o.cli timed runs (after one untimed), wall time of the process, median. */
async function cliSection(o, m, quant, clipPath, workDir) {
  const env = { ...process.env, RUSTASR_CACHE_DIR: join(workDir, 'cache') };
  const args = [join(sdkRoot, 'bin', 'rustasr.js'), 'infer', clipPath, '--model', m.modelDir, '--threads', String(o.threads),
    '--max-new-tokens', '30', '--no-repetition-guard', '--format', 'json'];
  if (quant !== 'bf16') args.push('--quant', quant);
  log(`whole process ${m.variant} ${quant}: rustasr infer x ${o.cli + 1} (the first untimed)`);
  const times = [];
  let tokens;
  for (let i = 0; i <= o.cli; i++) {
    const t0 = epochMs();
    const res = await new Promise((resolvePromise) => {
      const c = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
      let so = '', se = '';
      c.stdout.on('data', (d) => (so += d));
      c.stderr.on('data', (d) => (se += d));
      c.on('close', (code) => resolvePromise({ code, so, se }));
    });
    const ms = epochMs() - t0;
    if (res.code !== 0) return { variant: m.variant, quant, error: `rustasr infer exited ${res.code}: ${res.se.slice(-500)}` };
    try {
      tokens = JSON.parse(res.so.trim().split('\n').pop()).tokens.length;
    } catch {
      tokens = undefined;
    }
    if (i > 0) times.push(ms);
  }
  const wall = median(times);
  const ref = REFERENCE_CLI_S[m.variant];
  return { variant: m.variant, quant, runs: times, wallMs: wall, tokens, referenceS: ref, speedup: ref ? (ref * 1000) / wall : NaN, target: CLI_TARGETS[`${m.variant}/${quant}`] };
}

// ------------------------------------------------------------------------------------------------

function machineInfo() {
  let flags = '';
  try {
    const m = /^flags\s*:\s*(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'));
    flags = (m?.[1] ?? '').split(' ').filter((f) => /^(avx2|avx512f|avx512_bf16|avx512bw|avx512vl|fma|amx_\w+)$/.test(f)).join(' ');
  } catch {
    // not Linux
  }
  return {
    cpu: os.cpus()[0]?.model ?? 'unknown',
    logicalCpus: os.availableParallelism(),
    memGB: os.totalmem() / 1e9,
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    node: process.version,
    cpuFlags: flags,
    openblasEnv: Object.fromEntries(Object.entries(process.env).filter(([k]) => /^(OPENBLAS_|GOTO_|OMP_NUM_THREADS)/.test(k))),
  };
}

function report(result) {
  const { floors, cases } = result;
  const ok = cases.filter((c) => !c.error && !c.skipped);
  const lines = [];
  lines.push('');
  lines.push(`rustasr bench ${result.date}  ${result.machine.cpu}, ${result.machine.logicalCpus} logical CPUs, node ${result.machine.node}`);
  lines.push(`threads ${result.options.threads}, kernel ${ok[0]?.kernel ?? result.options.kernel} (this CPU: ${result.cpuKernels.join(', ')}), BLAS ${result.blas}`);
  lines.push(`env ${JSON.stringify(result.machine.openblasEnv)}; load average ${result.loadavg.start.map((x) => x.toFixed(2)).join(' ')} -> ${result.loadavg.end.map((x) => x.toFixed(2)).join(' ')}`);
  const bw = floors.bandwidthGBs;
  lines.push(`read bandwidth ${bw.median.toFixed(1)} GB/s (median of ${bw.n}, range ${bw.min.toFixed(1)}-${bw.max.toFixed(1)}; per probe ${floors.bandwidthPerProbe.map((p) => `${p.when} ${p.median.toFixed(1)}`).join(', ')})`);
  const pk = (x) => (x ? `${x.median.toFixed(0)} GFLOP/s (median of ${x.n}, range ${x.min.toFixed(0)}-${x.max.toFixed(0)})` : 'n/a');
  lines.push(`compute peak (register-only loops, ${result.options.threads} threads): fp32 FMA ${pk(floors.fp32Peak)}, BF16 dot ${pk(floors.bf16Peak)}`);
  lines.push(`engine GEMM (BF16 W, gflop/s medians): ${floors.gemm.map((g) => `${g.key} ${g.gflops.median.toFixed(0)}`).join(', ')}`);
  lines.push(
    `engine GEMM best ${floors.gemmPeakGflops.toFixed(0)} GFLOP/s (${floors.gemmPeakShape}) = ${(floors.gemmPeakGflops / floors.fp32PeakGflops).toFixed(2)} of the fp32 FMA peak (not a floor)`,
  );
  lines.push('');
  lines.push(
    table(
      [
        { key: 'variant', title: 'model' },
        { key: 'clip', title: 'clip/quant', fmt: (_, r) => `${r.clip}/${r.quant}${r.precision && r.precision !== 'f32' ? `/${r.precision}` : ''}` },
        { key: 'load', title: 'load ms', fmt: fix(0) },
        { key: 'cold', title: 'cold ms', fmt: fix(0) },
        { key: 'mel', title: 'mel ms', fmt: fix(0) },
        { key: 'enc', title: 'enc ms', fmt: fix(0) },
        { key: 'encR', title: 'enc/pk', fmt: fix(2) },
        { key: 'pre', title: 'prefill ms', fmt: fix(0) },
        { key: 'preR', title: 'pre/pk', fmt: fix(2) },
        { key: 'epR', title: 'enc+pre/pk', fmt: fix(2) },
        { key: 'dec', title: 'dec ms/tok', fmt: fix(1) },
        { key: 'step', title: 'step ms', fmt: fix(1) },
        { key: 'decF', title: 'floor ms', fmt: fix(1) },
        { key: 'decR', title: 'step/fl', fmt: fix(2) },
        { key: 'decMR', title: 'dec/fl', fmt: fix(2) },
        { key: 'decKvR', title: 'dec/fl+kv', fmt: fix(2) },
        { key: 'rtf', title: 'RTF', fmt: fix(3) },
        { key: 'bw', title: 'GB/s', fmt: fix(1) },
        { key: 'gp', title: 'peak GF/s', fmt: fix(0) },
        { key: 'rss', title: 'peak RSS MiB', fmt: fix(0) },
        { key: 'idle', title: 'idle %', fmt: fix(2) },
      ],
      ok.map((c) => ({
        variant: c.variant,
        clip: c.clip,
        quant: c.quant,
        precision: c.precisionInUse,
        load: c.metrics.loadMs,
        cold: c.metrics.coldStartMs,
        mel: c.metrics.melMs,
        enc: c.metrics.encoderMs,
        encR: c.ratios.encoderVsPeak,
        pre: c.metrics.prefillMs,
        preR: c.ratios.prefillVsPeak,
        epR: c.ratios.encoderPrefillVsPeak,
        dec: c.metrics.decodeMsPerToken,
        step: c.metrics.decodeStepMsMedian,
        decF: c.ratios.floorsMs.decodeFloorMs,
        decMR: c.ratios.decodeMeanVsBandwidth,
        bw: c.ratios.floorsMs.bandwidthGBs,
        gp: c.ratios.floorsMs.peakGflops,
        decR: c.ratios.decodeVsBandwidth,
        decKvR: c.ratios.decodeVsBandwidthWithKv,
        rtf: c.metrics.rtf,
        rss: c.metrics.peakRssMB,
        idle: c.metrics.idleCpuPct,
      })),
    ),
  );
  lines.push('');
  lines.push(
    `medians of ${result.options.reps} rep(s); decode forced to ${result.options.tokens} tokens; 'dec ms/tok' = decode time / steps, 'step ms' = ` +
      `median step (the decode target's measure: robust to host stalls); '/fl' = measured / physical floor (1.00 = at the floor), ` +
      `'/pk' = measured / (FLOPs / the compute peak: fp32 FMA, BF16 dot for precision bf16); ` +
      `floors from the bandwidth (GB/s) and the compute peak (GFLOP/s) probed in each case's process right after its runs`,
  );
  for (const c of cases) {
    if (c.skipped) lines.push(`skipped ${c.variant} ${c.clip} ${c.quant}: ${c.skipped}`);
    else if (c.error) lines.push(`FAILED ${c.variant} ${c.clip} ${c.quant}: ${c.error}`);
    else {
      const k = c.cold, lp = c.loadParts ?? {};
      lines.push(
        `cold start ${c.variant} ${c.clip}/${c.quant}: node start ${fix(0)(k.nodeStartMs)} ms, imports ${fix(0)(k.importMs)}, ` +
          `Model.load ${fix(0)(k.loadMs)} (native ${fix(0)(lp.nativeMs)}, tokenizer ${fix(0)(lp.tokenizerMs)}), mel ${fix(0)(k.melMs)}; ` +
          `peak RSS ${fix(0)(c.memory.vmHwmMB)} MB (now anon ${fix(0)(c.memory.rssAnonMB)} + file ${fix(0)(c.memory.rssFileMB)})` +
          (c.int8Cache ? `; int8 cache ${c.int8Cache.mode}: ${c.int8Cache.states.join(',')}` : ''),
      );
      for (const n of c.notes) lines.push(`note ${c.variant} ${c.clip} ${c.quant}: ${n}`);
    }
  }
  for (const b of result.batched ?? []) {
    if (b.error) lines.push(`FAILED batched decoding ${b.variant} ${b.quant}: ${b.error}`);
    else
      lines.push(
        `batched decoding ${b.variant} ${b.quant}: 1 session ${b.oneTokensPerSec.toFixed(1)} tok/s, ${b.sessions} sessions ${b.manyTokensPerSec.toFixed(1)} tok/s ` +
          `aggregate = ${b.ratio.toFixed(2)}x (${b.rowsPerPass.toFixed(2)} sessions per weight pass)`,
      );
  }
  for (const c of result.cli ?? []) {
    if (c.error) lines.push(`FAILED whole process ${c.variant} ${c.quant}: ${c.error}`);
    else
      lines.push(
        `whole process (rustasr infer, 11 s, ${c.tokens} tokens) ${c.variant} ${c.quant}: median ${(c.wallMs / 1000).toFixed(2)} s of ${c.runs.length} ` +
          `[${c.runs.map((x) => (x / 1000).toFixed(2)).join(' ')}]` +
          (c.referenceS ? `; reference ${c.referenceS} s -> ${c.speedup.toFixed(2)}x faster` : ''),
      );
  }
  const targeted = ok.filter((c) => c.variant === '0.6b' || c.quant === 'int4');
  if (targeted.length) {
    lines.push('');
    lines.push(`targets (0.6B; int4 cases; ${result.options.threads} threads):`);
    for (const t of TARGETS) {
      const vals = targeted
        .filter((c) => (!t.applies || t.applies(c)) && (c.variant === '0.6b' || t.key === 'decodeInt4'))
        .map((c) => {
          const v = t.get(c);
          return `${c.variant} ${c.clip}/${c.quant}${c.precision && c.precision !== 'f32' ? `/${c.precision}` : ''} ${t.fmt(v, c)} ${t.ok(v, c) ? 'ok' : 'MISS'}`;
        });
      if (vals.length) lines.push(`  ${t.label.padEnd(40)} ${vals.join('  |  ')}`);
    }
    for (const [k, v] of Object.entries(result.targets).filter(([k]) => k.startsWith('batch/') || k.startsWith('cli/'))) {
      const x = Object.values(v)[0];
      lines.push(`  ${x.target.padEnd(40)} ${k} ${x.value.toFixed(2)}x ${x.met ? 'ok' : 'MISS'}`);
    }
  }
  lines.push(`JSON: ${result.outFile}  (${((performance.now() - t0) / 1000).toFixed(1)} s)`);
  process.stderr.write(`${lines.join('\n')}\n`);
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  for (const f of ['index.js', 'native.js']) {
    if (!existsSync(join(root, 'dist', f))) throw new Error(`dist/${f} is missing: run npm run build`);
  }
  const workDir = join(os.tmpdir(), 'rustasr-bench');
  mkdirSync(workDir, { recursive: true });
  const date = new Date().toISOString();
  const outFile = o.out ?? join(workDir, `bench-${date.replace(/[:.]/g, '-')}.json`);
  if (!o.noSnapshot) {
    sdkRoot = await snapshotSdk(join(workDir, `sdk-${process.pid}`));
    const snap = sdkRoot;
    process.on('exit', () => rmSync(snap, { recursive: true, force: true }));
  }
  const { nativeDev } = await sdk('native.js');
  const cpuKernels = nativeDev().cpuKernels();
  const loadStart = os.loadavg();

  // Inputs first (synth generation and clip writing are not measured).
  const models = [];
  for (const v of o.variants) models.push({ variant: v, modelDir: await ensureModel(v, o) });
  const clips = [];
  for (const c of o.clips) clips.push({ clip: c, clipPath: await ensureClip(c, workDir) });
  const hasQuant = quantSupport();

  const probes = [await runProbe(o, 'start')];
  let floors = floorsFrom(probes);

  const cases = [];
  for (const m of models)
    for (const q of o.quant)
      for (const pr of o.precision)
      for (const c of clips) {
        const base = { ...m, ...c, quant: q, precision: pr };
        if (q !== 'bf16' && !hasQuant) {
          cases.push({ ...base, skipped: `Model.load has no 'quant' option in this build (dist/api/model.d.ts); not measured` });
          continue;
        }
        log(`case ${m.variant} ${c.clip} ${q}${pr === 'f32' ? '' : ` ${pr}`}: ${o.reps} rep(s), ${o.tokens} tokens, ${o.threads} threads`);
        cases.push(await runCase(o, base, floors, workDir));
        const last = cases[cases.length - 1];
        if (last.error) log(`case failed: ${last.error}`);
        writeFileSync(`${outFile}.partial`, `${JSON.stringify({ date, probes, cases }, null, 2)}\n`);
      }

  if (!o.quick) {
    try {
      probes.push(await runProbe(o, 'end'));
    } catch (err) {
      log(`${err.message}: floors from the start probe only`);
    }
    floors = floorsFrom(probes);
    // Re-derive the ratios with the floors of the whole run (start and end probes).
    for (const c of cases) if (!c.error && !c.skipped) applyFloors(c, floors);
  }

  // Batched decoding (the first synthetic variant) and the whole process through the CLI.
  const batched = [];
  const synthVariant = models.find((m) => /^\d+(\.\d+)?b$/i.test(m.variant)) ?? models[0];
  if (o.batch > 1 && synthVariant) {
    for (const q of o.quant.filter((x) => x === 'bf16' || x === 'int8')) {
      batched.push(await batchSection(o, synthVariant, q, clips[0].clipPath, workDir));
      if (batched[batched.length - 1].error) log(`batched decoding failed: ${batched[batched.length - 1].error}`);
    }
  }
  const cli = [];
  if (o.cli > 0) {
    const clip11 = clips.find((c) => c.clip === '11s') ?? clips[0];
    for (const m of models)
      for (const q of o.quant)
        if (REFERENCE_CLI_S[m.variant] === undefined ? m === models[0] && q === o.quant[0] : q !== 'int4') {
          cli.push(await cliSection(o, m, q, clip11.clipPath, workDir));
          if (cli[cli.length - 1].error) log(`whole process failed: ${cli[cli.length - 1].error}`);
        }
  }

  const targets = {};
  for (const c of cases.filter((x) => x.variant === '0.6b' && x.metrics))
    targets[`${c.clip}/${c.quant}${c.precision === 'f32' || !c.precision ? '' : `/${c.precision}`}`] = Object.fromEntries(
      TARGETS.filter((t) => !t.applies || t.applies(c)).map((t) => [t.key, { value: t.get(c), met: t.ok(t.get(c), c), target: t.label }]),
    );
  for (const b of batched.filter((x) => !x.error))
    targets[`batch/${b.variant}/${b.quant}`] = { batch: { value: b.ratio, met: b.ratio >= 3, target: `${b.sessions} sessions >= 3x one session's decode tokens/s` } };
  for (const c of cli.filter((x) => !x.error && x.target))
    targets[`cli/${c.variant}/${c.quant}`] = { cli: { value: c.speedup, met: c.speedup >= c.target, target: `whole process >= ${c.target}x faster than the reference` } };

  const result = {
    date,
    machine: machineInfo(),
    options: { ...o, out: undefined },
    cpuKernels,
    blas: probes[0].blas,
    quantOption: hasQuant,
    loadavg: { start: loadStart, end: os.loadavg() },
    floors,
    probes,
    cases,
    batched,
    cli,
    targets,
    outFile,
  };
  mkdirSync(dirname(outFile), { recursive: true });
  writeFileSync(outFile, `${JSON.stringify(result, null, 2)}\n`);
  rmSync(`${outFile}.partial`, { force: true });
  process.stdout.write(`${JSON.stringify(result)}\n`);
  report(result);
  if (cases.some((c) => c.error)) process.exitCode = 1;
  if (o.live) await liveSection(o);
}

/** The live-recognition section (bench/live.mjs), in its own process; its figures go to stderr and its JSON file. */
async function liveSection(o) {
  const variant = o.quick ? 'tiny' : (o.variants.find((v) => /^\d+(\.\d+)?b$/i.test(v)) ?? o.variants[0]);
  const args = [join(here, 'live.mjs'), '--variant', variant, '--threads', String(o.threads), '--models-dir', o.modelsDir];
  if (o.quick) args.push('--quick');
  for (const [flag, v] of Object.entries(o.liveArgs)) args.push(`--${flag}`, String(v));
  log(`live section: node ${args.map((a) => (a.includes(' ') ? JSON.stringify(a) : a)).join(' ')}`);
  const code = await new Promise((res) => spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'inherit'] }).on('close', res));
  if (code !== 0) process.exitCode = 1;
}

main().catch((err) => {
  process.stderr.write(`bench: ${err?.stack ?? err}\n`);
  process.exitCode = 2;
});
