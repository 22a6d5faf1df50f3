// Load on `rustasr serve`: N concurrent clients (default 2 x --max-concurrent) posting a WAV, for a number
// of rounds, against a server process started here on a loopback port. Reports requests, concurrency,
// statuses, p50/p95/max latency of the 200s, and the server's peak RSS (VmHWM from /proc/<pid>/status).
//
//   node bench/server-load.mjs --model DIR --clip WAV [--max-concurrent 2] [--max-queue 16] [--clients N]
//                              [--rounds 10] [--threads 2] [--tokens 32] [--stream]
//
// Prints a summary on stderr and one JSON line on stdout. Needs dist/ (npm run build).
import { Buffer } from 'node:buffer';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import { performance } from 'node:perf_hooks';
import { setTimeout } from 'node:timers';
import { fileURLToPath, URL } from 'node:url';

const args = process.argv.slice(2);
const opt = (name, def) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : def;
};
const model = opt('model');
const clip = opt('clip');
if (!model || !clip) {
  process.stderr.write('usage: node bench/server-load.mjs --model DIR --clip WAV [--max-concurrent 2] [--max-queue 16] [--clients N] [--rounds 10] [--threads 2] [--tokens 32] [--stream]\n');
  process.exit(2);
}
const maxConcurrent = Number(opt('max-concurrent', '2'));
const maxQueue = Number(opt('max-queue', '16'));
const clients = Number(opt('clients', String(2 * maxConcurrent)));
const rounds = Number(opt('rounds', '10'));
const threads = opt('threads', '2');
const tokens = opt('tokens', '32');
const stream = args.includes('--stream');

const bin = fileURLToPath(new URL('../bin/rustasr.js', import.meta.url));
const child = spawn(process.execPath, [bin, 'serve', '--model', model, '--port', '0', '--threads', threads, '--max-new-tokens', tokens, '--max-concurrent', String(maxConcurrent), '--max-queue', String(maxQueue)], {
  stdio: ['ignore', 'ignore', 'pipe'],
});
let log = '';
child.stderr.on('data', (d) => (log += d));
const deadline = Date.now() + 120_000;
while (!/ready: model/.test(log)) {
  if (child.exitCode !== null || Date.now() > deadline) throw new Error(`server did not start: ${log}`);
  await new Promise((r) => setTimeout(r, 20));
}
const base = /listening on (http:\/\/[^\s;]+)/.exec(log)[1];

const wav = readFileSync(clip);
const boundary = '----rustasr-bench';
const parts = [
  Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\nContent-Type: audio/wav\r\n\r\n`),
  wav,
  Buffer.from(`\r\n--${boundary}\r\nContent-Disposition: form-data; name="stream"\r\n\r\n${stream}\r\n--${boundary}--\r\n`),
];
const body = Buffer.concat(parts);

function post() {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const req = request(`${base}/v1/audio/transcriptions`, {
      method: 'POST',
      agent: false,
      headers: { 'content-type': `multipart/form-data; boundary=${boundary}`, 'content-length': body.length },
    });
    req.on('response', (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode, ms: performance.now() - t0 }));
    });
    req.on('error', (e) => resolve({ status: e.code ?? 'error', ms: performance.now() - t0 }));
    req.end(body);
  });
}

const hwm = () => Number(/^VmHWM:\s+(\d+) kB/m.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'))[1]) * 1024;
const results = [];
const t0 = performance.now();
for (let r = 0; r < rounds; r++) results.push(...(await Promise.all(Array.from({ length: clients }, post))));
const wall = performance.now() - t0;
const peak = hwm();
child.kill('SIGTERM');
await new Promise((r) => child.once('exit', r));

const ok = results.filter((x) => x.status === 200).map((x) => x.ms).sort((a, b) => a - b);
const pct = (p) => (ok.length ? ok[Math.min(ok.length - 1, Math.ceil((p / 100) * ok.length) - 1)] : NaN);
const statuses = {};
for (const x of results) statuses[x.status] = (statuses[x.status] ?? 0) + 1;
const out = {
  requests: results.length,
  clients,
  maxConcurrent,
  maxQueue,
  rounds,
  stream,
  statuses,
  p50Ms: pct(50),
  p95Ms: pct(95),
  maxMs: ok.at(-1),
  wallMs: wall,
  peakRssBytes: peak,
  exitCode: child.exitCode,
};
process.stderr.write(
  `${out.requests} requests, ${clients} clients, max-concurrent ${maxConcurrent}: ${JSON.stringify(statuses)}; ` +
    `p50 ${out.p50Ms.toFixed(0)} ms, p95 ${out.p95Ms.toFixed(0)} ms, max ${out.maxMs?.toFixed(0)} ms; peak RSS ${(peak / 1048576).toFixed(0)} MiB; exit ${out.exitCode}\n`,
);
process.stdout.write(JSON.stringify(out) + '\n');
