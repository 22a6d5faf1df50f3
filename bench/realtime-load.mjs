// Load on `rustasr serve`'s WebSocket route: N concurrent realtime sessions (default 2 x --max-concurrent),
// each streaming a 16-bit PCM WAV clip as PCM16 frames, paced at --speed x real time (1: a microphone), for a
// number of rounds, against a server process started here on a loopback port. Reports sessions, statuses
// (200 complete, 429 refused at the upgrade, other), partial and final latency (from sending the last sample
// an event covers, or from `ready` for a session that waited for a slot, to receiving it), the wait for a slot,
// session length, and the server's peak RSS (VmHWM).
//
//   node bench/realtime-load.mjs --model DIR --clip WAV [--max-concurrent 2] [--max-queue 16] [--clients N]
//                                [--rounds 3] [--threads 2] [--speed 1] [--frame-ms 100] [--chunk-seconds 2]
//
// Prints a summary on stderr and one JSON line on stdout. Needs dist/ (npm run build).
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath, URL } from 'node:url';

import WebSocket from 'ws';

const args = process.argv.slice(2);
const opt = (name, def) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : def;
};
const model = opt('model');
const clip = opt('clip');
if (!model || !clip) {
  process.stderr.write(
    'usage: node bench/realtime-load.mjs --model DIR --clip WAV [--max-concurrent 2] [--max-queue 16] [--clients N] [--rounds 3] [--threads 2] [--speed 1] [--frame-ms 100] [--chunk-seconds 2]\n',
  );
  process.exit(2);
}
const maxConcurrent = Number(opt('max-concurrent', '2'));
const maxQueue = Number(opt('max-queue', '16'));
const clients = Number(opt('clients', String(2 * maxConcurrent)));
const rounds = Number(opt('rounds', '3'));
const threads = opt('threads', '2');
const speed = Number(opt('speed', '1'));
const frameMs = Number(opt('frame-ms', '100'));
const chunkSeconds = Number(opt('chunk-seconds', '2'));

/** The PCM16 data of a WAV file, with its rate and channels (RIFF chunks walked; 16-bit PCM only). */
function pcm16(path) {
  const b = readFileSync(path);
  if (b.toString('latin1', 0, 4) !== 'RIFF' || b.toString('latin1', 8, 12) !== 'WAVE') throw new Error(`${path}: not a WAV`);
  let fmt;
  for (let at = 12; at + 8 <= b.length; ) {
    const id = b.toString('latin1', at, at + 4);
    const size = b.readUInt32LE(at + 4);
    if (id === 'fmt ') fmt = { format: b.readUInt16LE(at + 8), channels: b.readUInt16LE(at + 10), sampleRate: b.readUInt32LE(at + 12), bits: b.readUInt16LE(at + 22) };
    if (id === 'data') {
      if (!fmt || fmt.format !== 1 || fmt.bits !== 16) throw new Error(`${path}: needs 16-bit PCM`);
      return { data: b.subarray(at + 8, Math.min(b.length, at + 8 + size)), sampleRate: fmt.sampleRate, channels: fmt.channels };
    }
    at += 8 + size + (size & 1);
  }
  throw new Error(`${path}: no data chunk`);
}

const audio = pcm16(clip);
const bytesPerSecond = audio.sampleRate * audio.channels * 2;
const frameBytes = Math.max(audio.channels * 2, Math.round((bytesPerSecond * frameMs) / 1000 / (audio.channels * 2)) * audio.channels * 2);

const bin = fileURLToPath(new URL('../bin/rustasr.js', import.meta.url));
const child = spawn(process.execPath, [bin, 'serve', '--model', model, '--port', '0', '--threads', threads, '--max-concurrent', String(maxConcurrent), '--max-queue', String(maxQueue)], {
  stdio: ['ignore', 'ignore', 'pipe'],
});
let log = '';
child.stderr.on('data', (d) => (log += d));
const deadline = Date.now() + 120_000;
while (!/ready: model/.test(log)) {
  if (child.exitCode !== null || Date.now() > deadline) throw new Error(`server did not start: ${log}`);
  await sleep(20);
}
const url = `${/listening on (http:\/\/[^\s;]+)/.exec(log)[1].replace(/^http/, 'ws')}/v1/realtime`;

/** One session: paced frames, end, until the server closes. */
function session() {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const sentAt = []; // [stream seconds covered, time sent]
    const partialMs = [];
    const finalMs = [];
    let endAt = 0;
    let readyAt = 0;
    let openAt = 0;
    let partials = 0;
    let finals = 0;
    let error;
    const ws = new WebSocket(url, { perMessageDeflate: false });
    ws.on('unexpected-response', (_req, res) => {
      res.resume();
      resolve({ status: res.statusCode, ms: performance.now() - t0 });
    });
    ws.on('error', (e) => resolve({ status: e.code ?? 'error', ms: performance.now() - t0 }));
    ws.on('message', (data) => {
      const e = JSON.parse(data.toString());
      const now = performance.now();
      // Latency of an event: from the moment the server could have it (the last sample it covers was sent, and
      // the session was running) to its arrival. Time spent queued for a slot is reported as queueMs.
      const since = (seconds) => {
        const sent = sentAt.find(([s]) => s >= seconds - 1e-6);
        const at = sent ? sent[1] : endAt;
        return at > 0 ? now - Math.max(at, readyAt) : undefined;
      };
      if (e.type === 'ready') readyAt = now;
      else if (e.type === 'partial') {
        partials++;
        const ms = since(e.audioSeconds);
        if (ms !== undefined) partialMs.push(ms);
      } else if (e.type === 'final') {
        finals++;
        // A final at the end of the input waits for the end message; one at a pause for the pause to be long enough.
        const ms = since(e.end);
        if (ms !== undefined) finalMs.push(ms);
      } else if (e.type === 'error') error = e.error.code;
    });
    ws.on('close', (code) => {
      const status = error ?? (code === 1000 ? 200 : `close ${code}`);
      resolve({ status, ms: performance.now() - t0, partialMs, finalMs, queueMs: readyAt > 0 ? readyAt - openAt : undefined, partials, finals });
    });
    ws.on('open', async () => {
      openAt = performance.now();
      ws.send(JSON.stringify({ type: 'config', chunkSeconds, input: { format: 'pcm16', sampleRate: audio.sampleRate, channels: audio.channels } }));
      const start = performance.now();
      for (let at = 0; at < audio.data.length; at += frameBytes) {
        const due = start + ((at / bytesPerSecond) * 1000) / speed;
        const wait = due - performance.now();
        if (wait > 0) await sleep(wait);
        if (ws.readyState !== WebSocket.OPEN) return;
        const frame = audio.data.subarray(at, at + frameBytes);
        ws.send(frame);
        sentAt.push([(at + frame.length) / bytesPerSecond, performance.now()]);
      }
      endAt = performance.now();
      ws.send(JSON.stringify({ type: 'end' }));
    });
  });
}

const hwm = () => Number(/^VmHWM:\s+(\d+) kB/m.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'))[1]) * 1024;
const results = [];
const t0 = performance.now();
for (let r = 0; r < rounds; r++) results.push(...(await Promise.all(Array.from({ length: clients }, session))));
const wall = performance.now() - t0;
const peak = hwm();
child.kill('SIGTERM');
await new Promise((r) => child.once('exit', r));

const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)] : NaN;
};
const ok = results.filter((x) => x.status === 200);
const partialMs = ok.flatMap((x) => x.partialMs);
const finalMs = ok.flatMap((x) => x.finalMs);
const queueMs = ok.map((x) => x.queueMs).filter((x) => x !== undefined);
const statuses = {};
for (const x of results) statuses[x.status] = (statuses[x.status] ?? 0) + 1;
const out = {
  sessions: results.length,
  clients,
  maxConcurrent,
  maxQueue,
  rounds,
  speed,
  clipSeconds: audio.data.length / bytesPerSecond,
  chunkSeconds,
  statuses,
  partials: partialMs.length,
  partialP50Ms: pct(partialMs, 50),
  partialP95Ms: pct(partialMs, 95),
  finals: finalMs.length,
  finalP50Ms: pct(finalMs, 50),
  finalP95Ms: pct(finalMs, 95),
  queueP50Ms: pct(queueMs, 50),
  queueMaxMs: Math.max(...queueMs),
  sessionP50Ms: pct(ok.map((x) => x.ms), 50),
  sessionP95Ms: pct(ok.map((x) => x.ms), 95),
  wallMs: wall,
  peakRssBytes: peak,
  exitCode: child.exitCode,
};
process.stderr.write(
  `${out.sessions} realtime sessions, ${clients} clients, max-concurrent ${maxConcurrent}, ${speed}x real time: ${JSON.stringify(statuses)}; ` +
    `partial latency p50 ${out.partialP50Ms.toFixed(0)} ms, p95 ${out.partialP95Ms.toFixed(0)} ms (${out.partials} partials); ` +
    `final latency p50 ${out.finalP50Ms.toFixed(0)} ms, p95 ${out.finalP95Ms.toFixed(0)} ms (${out.finals} finals); ` +
    `queued for a slot p50 ${out.queueP50Ms.toFixed(0)} ms, max ${out.queueMaxMs.toFixed(0)} ms; session p50 ${out.sessionP50Ms.toFixed(0)} ms; ` +
    `peak RSS ${(peak / 1048576).toFixed(0)} MiB; exit ${out.exitCode}\n`,
);
process.stdout.write(JSON.stringify(out) + '\n');
