#!/usr/bin/env node
// The live section of `npm run bench`: live recognition (listen()) on a synthetic checkpoint with the real
// shapes, measured against the issue's targets in one run (docs/performance.md, "Live recognition").
//
//   node bench/live.mjs [--variant 0.6b] [--threads 2] [--minutes 5] [--paced-seconds 60] [--memory-minutes 60]
//                       [--unbroken-seconds 64] [--models-dir DIR] [--out FILE] [--quick]
//
// Random weights never emit an end-of-sequence token, so speech is emulated by a per-step token budget: the
// 5 rolled-back tokens plus 3 per new second of audio (maxNewTokens as a function). The audio is golden speech
// clips with pauses between them (0.7-1.5 s), cycled to length; "unbroken" audio has no pauses.
//
// Each scenario runs in a fresh child process (`node bench/live.mjs child '<json>'`):
//  - keep-up: a time-compressed stream (the source waits for the engine: backpressure), fast mode with
//    endpointing, bf16 and int8: compute per chunk against the chunk duration, per minute;
//  - exact vs fast on unbroken audio without endpointing: the step cost at 60 s of segment audio;
//  - paced: real-time 100 ms pieces: latency from a chunk's last sample to its partial (p50, p95), and the
//    events equal to the time-compressed run's over the same audio;
//  - concurrency: two paced int8 streams on one model at once;
//  - memory: a long time-compressed int8 stream, RSS sampled every 30 s of stream time: drift after warm-up.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Readable } from 'node:stream';
import { clearTimeout, setTimeout } from 'node:timers';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '..');
const sdk = (file) => import(pathToFileURL(join(root, 'dist', file)).href);
const goldenDir = () => (process.env.RUSTASR_GOLDEN_DIR ? resolve(process.env.RUSTASR_GOLDEN_DIR) : resolve(root, '..', 'shared', 'golden'));
const log = (s) => process.stderr.write(`[live ${((performance.now()) / 1000).toFixed(1)}s] ${s}\n`);

function quantile(values, q) {
  const v = values.filter(Number.isFinite).sort((a, b) => a - b);
  if (v.length === 0) return NaN;
  const i = Math.min(v.length - 1, Math.max(0, Math.ceil(q * v.length) - 1));
  return v[i];
}
const median = (v) => quantile(v, 0.5);

// ------------------------------------------------------------------------------------------------ child

/** Golden clips cycled to `seconds` of 16 kHz audio; with `gaps`, a pause after each clip. */
async function speech(seconds, gaps, offset = 0) {
  const { loadAudio } = await sdk('index.js');
  const clips = [];
  for (const f of ['en_21s.wav', 'ru_11s.wav', 'en_5s.wav', 'en_1p2s.wav']) clips.push(await loadAudio(join(goldenDir(), 'audio', f), 16000));
  const pauses = [0.8, 1.2, 0.7, 1.5];
  const total = Math.round(seconds * 16000);
  const x = new Float32Array(total);
  let at = 0;
  for (let i = offset; at < total; i++) {
    const c = clips[i % clips.length];
    const n = Math.min(c.length, total - at);
    x.set(c.subarray(0, n), at);
    at += n;
    if (gaps) at += Math.round(pauses[i % pauses.length] * 16000);
  }
  return x;
}

/** 100 ms pieces; paced: delivered at real time (speed 1) from t0. */
function source(x, paced, delivered) {
  const step = 1600;
  const pieces = [];
  for (let i = 0; i < x.length; i += step) pieces.push({ samples: x.slice(i, i + step), sampleRate: 16000 });
  if (!paced) return Readable.from(pieces, { objectMode: true });
  return Readable.from(
    (async function* () {
      const t0 = performance.now();
      delivered.t0 = t0;
      for (let k = 0; k < pieces.length; k++) {
        const due = t0 + ((k + 1) * step * 1000) / 16000;
        const wait = due - performance.now();
        if (wait > 0) await sleep(wait);
        yield pieces[k];
      }
    })(),
    { objectMode: true },
  );
}

/** 5 rolled-back tokens plus 3 per new second of audio. */
const speechBudget = (info) => 5 + Math.round(3 * info.newSeconds);

async function runStream(model, o, x, tag) {
  const { listen } = await sdk('index.js');
  const delivered = {};
  const events = [];
  const steps = [];
  const latencies = [];
  const rss = [];
  let nextRss = 0;
  const t0 = performance.now();
  for await (const e of listen(source(x, o.paced, delivered), {
    model,
    exact: o.mode === 'exact',
    endpoint: o.endpoint,
    chunkSeconds: o.chunkSeconds,
    maxNewTokens: speechBudget,
  })) {
    const now = performance.now();
    const at = e.type === 'partial' ? e.audioSeconds : e.end;
    events.push({ type: e.type, segment: e.segment, text: e.text, at });
    if (e.step) steps.push({ at, ms: e.step.ms, segSeconds: at - (e.start ?? 0), encoded: e.step.encodedTokens, reused: e.step.reusedTokens, prompt: e.step.promptTokens, generated: e.step.generated, final: e.type === 'final' });
    // The chunk's last sample arrived with its 100 ms piece.
    if (o.paced && e.type === 'partial') latencies.push(now - (delivered.t0 + Math.ceil((e.audioSeconds * 16000) / 1600 - 1e-9) * 100));
    if (o.rssEvery && at >= nextRss) {
      rss.push({ at, rssMiB: process.memoryUsage().rss / 2 ** 20 });
      nextRss = at + o.rssEvery;
    }
  }
  return { tag, wallMs: performance.now() - t0, audioSeconds: x.length / 16000, events, steps, latencies, rss };
}

async function child(o) {
  const { loadModel } = await sdk('index.js');
  const model = await loadModel(o.model, { threads: o.threads, ...(o.quant !== 'bf16' ? { quant: o.quant } : {}) });
  await model.ready();
  const out = { ok: true, scenario: o.scenario, quant: o.quant, kernel: model.info.kernel, runs: [] };
  if (o.scenario === 'pair') {
    const [a, b] = await Promise.all([speech(o.seconds, true, 0), speech(o.seconds, true, 1)]);
    out.runs = await Promise.all([runStream(model, o, a, 'A'), runStream(model, o, b, 'B')]);
  } else {
    const x = await speech(o.seconds, o.gaps);
    out.runs.push(await runStream(model, o, x, o.scenario));
    if (o.alsoCompressed) out.runs.push(await runStream(model, { ...o, paced: false }, x, `${o.scenario}-compressed`));
  }
  out.peakRssMiB = process.resourceUsage().maxRSS / 1024;
  model.dispose();
  process.stdout.write(JSON.stringify(out) + '\n');
}

// ------------------------------------------------------------------------------------------------ parent

function runChild(opts, timeoutMs = 90 * 60 * 1000) {
  return new Promise((res) => {
    const c = spawn(process.execPath, [fileURLToPath(import.meta.url), 'child', JSON.stringify(opts)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    c.stdout.on('data', (d) => (stdout += d));
    c.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => c.kill('SIGKILL'), timeoutMs);
    c.on('close', (code) => {
      clearTimeout(timer);
      try {
        res(JSON.parse(stdout.trim().split('\n').pop()));
      } catch {
        res({ ok: false, error: `child exited ${code}: ${stderr.slice(-2000)}` });
      }
    });
  });
}

async function ensureModel(o) {
  if (o.variant === 'tiny') return join(goldenDir(), 'models', 'tiny-a');
  if (!/^\d+(\.\d+)?b$/i.test(o.variant)) return resolve(o.variant);
  const dir = join(o.modelsDir, `synth-${o.variant.toLowerCase()}`);
  if (existsSync(join(dir, 'config.json')) && existsSync(join(dir, 'model.safetensors'))) return dir;
  log(`generating synthetic ${o.variant} checkpoint in ${dir}`);
  const code = await new Promise((r) => spawn(process.execPath, [join(root, 'bin', 'rustasr.js'), 'synth', '--variant', o.variant, '--out', dir], { stdio: ['ignore', 'ignore', 'inherit'] }).on('close', r));
  if (code !== 0) throw new Error(`rustasr synth failed (${code})`);
  return dir;
}

/** Compute per chunk: every step's cost over the chunk duration; per minute of stream time. */
function perChunk(run, chunkSeconds) {
  const ratios = run.steps.map((s) => s.ms / 1000 / chunkSeconds);
  const byMinute = new Map();
  for (const s of run.steps) {
    const m = Math.floor(s.at / 60);
    if (!byMinute.has(m)) byMinute.set(m, []);
    byMinute.get(m).push(s.ms / 1000 / chunkSeconds);
  }
  const minutes = [...byMinute.entries()].sort((a, b) => a[0] - b[0]).map(([m, v]) => ({ minute: m + 1, median: median(v), p95: quantile(v, 0.95), n: v.length }));
  return { median: median(ratios), p95: quantile(ratios, 0.95), max: Math.max(...ratios), minutes };
}

function parseArgs(argv) {
  const o = { variant: '0.6b', threads: 2, minutes: 5, pacedSeconds: 60, memoryMinutes: 60, unbrokenSeconds: 64, chunkSeconds: 2, modelsDir: os.tmpdir(), out: undefined, quick: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const v = () => argv[++i];
    if (a === '--variant') o.variant = v();
    else if (a === '--threads') o.threads = Number(v());
    else if (a === '--minutes') o.minutes = Number(v());
    else if (a === '--paced-seconds') o.pacedSeconds = Number(v());
    else if (a === '--memory-minutes') o.memoryMinutes = Number(v());
    else if (a === '--unbroken-seconds') o.unbrokenSeconds = Number(v());
    else if (a === '--models-dir') o.modelsDir = v();
    else if (a === '--out') o.out = v();
    else if (a === '--quick') o.quick = true;
    else throw new Error(`unknown option ${a}`);
  }
  if (o.quick) Object.assign(o, { variant: 'tiny', minutes: 0.25, pacedSeconds: 4, memoryMinutes: 0.5, unbrokenSeconds: 12 });
  return o;
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const model = await ensureModel(o);
  const load = [os.loadavg()[0]];
  const base = { model, threads: o.threads, chunkSeconds: o.chunkSeconds };
  const result = { machine: { cpus: os.cpus()[0]?.model, threads: o.threads, loadStart: os.loadavg() }, options: o, scenarios: {} };
  const check = (r, what) => {
    if (!r.ok) throw new Error(`${what}: ${r.error}`);
    return r;
  };

  log(`keep-up: ${o.minutes} min time-compressed, fast mode with endpointing (bf16, int8)`);
  for (const quant of ['bf16', 'int8']) {
    const r = check(await runChild({ ...base, scenario: 'keep-up', quant, seconds: o.minutes * 60, gaps: true, mode: 'fast', endpoint: true, paced: false }), `keep-up ${quant}`);
    const pc = perChunk(r.runs[0], o.chunkSeconds);
    const first = pc.minutes[0]?.median;
    // The last full minute (a stream of N minutes with pauses ends in a short N+1th minute of a chunk or two).
    const full = pc.minutes.filter((m) => m.n >= 0.8 * (pc.minutes[0]?.n ?? 0));
    const last = full[full.length - 1]?.median;
    result.scenarios[`keepUp_${quant}`] = { perChunk: pc, lastOverFirstMinute: last / first, finals: r.runs[0].events.filter((e) => e.type === 'final').length, steps: r.runs[0].steps.length, peakRssMiB: r.peakRssMiB, wallMs: r.runs[0].wallMs };
    log(`  ${quant}: compute/chunk median ${pc.median.toFixed(3)} p95 ${pc.p95.toFixed(3)}; minute ${full[full.length - 1]?.minute} / minute 1 = ${(last / first).toFixed(2)}`);
  }

  log(`exact vs fast: ${o.unbrokenSeconds} s of unbroken audio, no endpointing (bf16)`);
  const ex = check(await runChild({ ...base, scenario: 'exact', quant: 'bf16', seconds: o.unbrokenSeconds, gaps: false, mode: 'exact', endpoint: false, paced: false }), 'exact');
  const fa = check(await runChild({ ...base, scenario: 'fast', quant: 'bf16', seconds: o.unbrokenSeconds, gaps: false, mode: 'fast', endpoint: false, paced: false }), 'fast');
  const target = Math.min(60, o.unbrokenSeconds - 2 * o.chunkSeconds);
  const near = (run) => run.steps.filter((s) => !s.final).reduce((best, s) => (Math.abs(s.segSeconds - target) < Math.abs(best.segSeconds - target) ? s : best));
  const se = near(ex.runs[0]);
  const sf = near(fa.runs[0]);
  result.scenarios.exactVsFast = { atSeconds: se.segSeconds, exactStepMs: se.ms, fastStepMs: sf.ms, ratio: sf.ms / se.ms, exactSteps: ex.runs[0].steps.map((s) => [s.segSeconds, Math.round(s.ms)]), fastSteps: fa.runs[0].steps.map((s) => [s.segSeconds, Math.round(s.ms), s.reused, s.encoded]) };
  log(`  at ${se.segSeconds.toFixed(1)} s: exact ${se.ms.toFixed(0)} ms, fast ${sf.ms.toFixed(0)} ms (ratio ${(sf.ms / se.ms).toFixed(3)})`);

  log(`paced: ${o.pacedSeconds} s at real time (int8, bf16), and the same audio time-compressed`);
  for (const quant of ['int8', 'bf16']) {
    const r = check(await runChild({ ...base, scenario: 'paced', quant, seconds: o.pacedSeconds, gaps: true, mode: 'fast', endpoint: true, paced: true, alsoCompressed: true }), `paced ${quant}`);
    const [paced, compressed] = r.runs;
    const same = JSON.stringify(paced.events.map((e) => [e.type, e.segment, e.text])) === JSON.stringify(compressed.events.map((e) => [e.type, e.segment, e.text]));
    const lat = paced.latencies;
    result.scenarios[`paced_${quant}`] = { latencyMs: { p50: median(lat), p95: quantile(lat, 0.95), max: Math.max(...lat), n: lat.length }, overChunk: { p50: median(lat) / 1000 / o.chunkSeconds, p95: quantile(lat, 0.95) / 1000 / o.chunkSeconds }, sameEventsAsCompressed: same, perChunk: perChunk(paced, o.chunkSeconds) };
    log(`  ${quant}: latency p50 ${median(lat).toFixed(0)} ms p95 ${quantile(lat, 0.95).toFixed(0)} ms (x chunk ${(quantile(lat, 0.95) / 1000 / o.chunkSeconds).toFixed(3)}); same events as compressed: ${same}`);
  }

  log(`concurrency: two paced int8 streams on one model, ${o.pacedSeconds} s`);
  const pr = check(await runChild({ ...base, scenario: 'pair', quant: 'int8', seconds: o.pacedSeconds, gaps: true, mode: 'fast', endpoint: true, paced: true }), 'pair');
  result.scenarios.concurrency = pr.runs.map((r) => {
    const pc = perChunk(r, o.chunkSeconds);
    const lastEvent = r.events[r.events.length - 1];
    return { tag: r.tag, latencyMs: { p50: median(r.latencies), p95: quantile(r.latencies, 0.95) }, perChunk: { median: pc.median, p95: pc.p95 }, keptUp: r.wallMs / 1000 <= r.audioSeconds + o.chunkSeconds * 2, wallOverAudio: r.wallMs / 1000 / r.audioSeconds, lastAt: lastEvent?.at };
  });
  for (const c of result.scenarios.concurrency) log(`  ${c.tag}: latency p50 ${c.latencyMs.p50.toFixed(0)} p95 ${c.latencyMs.p95.toFixed(0)} ms, compute/chunk p95 ${c.perChunk.p95.toFixed(3)}, wall/audio ${c.wallOverAudio.toFixed(3)}`);

  log(`memory: ${o.memoryMinutes} min time-compressed int8 stream`);
  const mem = check(await runChild({ ...base, scenario: 'memory', quant: 'int8', seconds: o.memoryMinutes * 60, gaps: true, mode: 'fast', endpoint: true, paced: false, rssEvery: Math.min(30, (o.memoryMinutes * 60) / 20) }), 'memory');
  const samples = mem.runs[0].rss;
  const warm = Math.min(300, (o.memoryMinutes * 60) / 5);
  const afterWarm = samples.filter((s) => s.at >= warm);
  const atWarm = afterWarm[0]?.rssMiB;
  const maxAfter = Math.max(...afterWarm.map((s) => s.rssMiB));
  result.scenarios.memory = { warmUpSeconds: warm, rssAtWarmUpMiB: atWarm, maxAfterWarmUpMiB: maxAfter, endMiB: samples[samples.length - 1]?.rssMiB, drift: (maxAfter - atWarm) / atWarm, peakRssMiB: mem.peakRssMiB, samples };
  log(`  RSS at warm-up ${atWarm?.toFixed(0)} MiB, max after ${maxAfter.toFixed(0)} MiB: drift ${((100 * (maxAfter - atWarm)) / atWarm).toFixed(2)} %`);

  load.push(os.loadavg()[0]);
  result.machine.loadEnd = os.loadavg();
  const out = o.out ?? join(os.tmpdir(), 'rustasr-bench', `live-${Date.now()}.json`);
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, JSON.stringify(result, null, 1));
  report(result, o);
  log(`JSON: ${out}`);
}

function report(r, o) {
  const s = r.scenarios;
  const rows = [];
  const yes = (b) => (b ? 'met' : 'NOT met');
  for (const q of ['bf16', 'int8']) {
    const k = s[`keepUp_${q}`];
    rows.push(`keep-up ${q}: compute per ${o.chunkSeconds} s chunk median ${k.perChunk.median.toFixed(3)}, p95 ${k.perChunk.p95.toFixed(3)} (target <= 0.5: ${yes(k.perChunk.p95 <= 0.5)}); last full minute / first ${k.lastOverFirstMinute.toFixed(2)} (target 0.8-1.2: ${yes(k.lastOverFirstMinute >= 0.8 && k.lastOverFirstMinute <= 1.2)}); ${k.finals} finals, peak RSS ${k.peakRssMiB.toFixed(0)} MiB`);
    rows.push(`  per minute (median / p95): ${k.perChunk.minutes.map((m) => `${m.minute}: ${m.median.toFixed(3)}/${m.p95.toFixed(3)}`).join('  ')}`);
  }
  rows.push(`exact vs fast at ${s.exactVsFast.atSeconds.toFixed(1)} s of segment audio: exact ${s.exactVsFast.exactStepMs.toFixed(0)} ms, fast ${s.exactVsFast.fastStepMs.toFixed(0)} ms, ratio ${s.exactVsFast.ratio.toFixed(3)} (target <= 0.333: ${yes(s.exactVsFast.ratio <= 1 / 3)})`);
  for (const q of ['int8', 'bf16']) {
    const p = s[`paced_${q}`];
    rows.push(`latency ${q} (paced): p50 ${p.latencyMs.p50.toFixed(0)} ms, p95 ${p.latencyMs.p95.toFixed(0)} ms = ${p.overChunk.p50.toFixed(3)} / ${p.overChunk.p95.toFixed(3)} x chunk${q === 'int8' ? ` (target <= 0.5: ${yes(p.overChunk.p95 <= 0.5)})` : ''}; same events as time-compressed: ${p.sameEventsAsCompressed}`);
  }
  for (const c of s.concurrency) rows.push(`concurrency int8 stream ${c.tag}: latency p50 ${c.latencyMs.p50.toFixed(0)} / p95 ${c.latencyMs.p95.toFixed(0)} ms, compute per chunk p95 ${c.perChunk.p95.toFixed(3)}, kept up: ${c.keptUp}`);
  rows.push(`memory: ${o.memoryMinutes} min int8 stream: RSS ${s.memory.rssAtWarmUpMiB.toFixed(0)} MiB after ${s.memory.warmUpSeconds} s, max after ${s.memory.maxAfterWarmUpMiB.toFixed(0)} MiB, drift ${(100 * s.memory.drift).toFixed(2)} % (target < 5 %: ${yes(s.memory.drift < 0.05)})`);
  rows.push(`load average: start ${r.machine.loadStart.map((x) => x.toFixed(2)).join(' ')}, end ${r.machine.loadEnd.map((x) => x.toFixed(2)).join(' ')}`);
  process.stderr.write(rows.join('\n') + '\n');
  process.stdout.write(JSON.stringify({ live: r.scenarios.keepUp_bf16 ? summary(r) : r }) + '\n');
}

function summary(r) {
  const s = r.scenarios;
  return {
    keepUp: { bf16: s.keepUp_bf16.perChunk, int8: s.keepUp_int8.perChunk, lastOverFirst: [s.keepUp_bf16.lastOverFirstMinute, s.keepUp_int8.lastOverFirstMinute] },
    exactVsFast: { at: s.exactVsFast.atSeconds, ratio: s.exactVsFast.ratio },
    latency: { int8: s.paced_int8.latencyMs, bf16: s.paced_bf16.latencyMs },
    concurrency: s.concurrency,
    memory: { drift: s.memory.drift, peakRssMiB: s.memory.peakRssMiB },
    load: [r.machine.loadStart, r.machine.loadEnd],
  };
}

if (process.argv[2] === 'child') {
  child(JSON.parse(process.argv[3])).catch((err) => {
    process.stdout.write(JSON.stringify({ ok: false, error: String(err?.stack ?? err) }) + '\n');
    process.exitCode = 1;
  });
} else {
  main().catch((err) => {
    process.stderr.write(`live bench failed: ${err?.stack ?? err}\n`);
    process.exitCode = 1;
  });
}
