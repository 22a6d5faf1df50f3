// `rustasr worker` / enqueueTranscriptions() on a real BullMQ queue: a real redis-server (the Debian
// package; .ci/run installs it) started by this test on a free loopback port with its data in a temp
// dir, two worker processes, 50 jobs. One worker is SIGKILLed mid-job; in the other run Redis is
// restarted mid-run. Each job's ids equal transcribe()'s for its input, each is completed once.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer as createHttpServer } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { loadModel, transcribe, type Model } from '../src/index.js';
import { enqueueTranscriptions, jobIdOf, startWorker as startInProcessWorker, type TranscriptionJob, type WorkerJobEvent } from '../src/queue/index.js';
import { BIN, ensureDist } from './helpers/cli.js';
import { goldenPath, listCaseEntries } from './helpers/golden.js';
import { until } from './helpers/http.js';

const MODEL_DIR = goldenPath('models', 'tiny-a');
const JOBS = 50;
const children: ChildProcess[] = [];
let dataDir: string;
let model: Model;

/** Distinct inputs (audio, language, context) from the golden cases; jobs cycle through them. */
const INPUTS = listCaseEntries().map((c) => ({
  input: goldenPath(c.audio),
  options: { ...(c.force_language !== null ? { language: c.force_language } : {}), ...(c.context !== '' ? { context: c.context } : {}) },
}));

function redisBinary(): string {
  const r = spawnSync('redis-server', ['--version'], { encoding: 'utf8' });
  if (r.error || r.status !== 0) throw new Error('redis-server is not installed: apt-get install redis-server (.ci/run installs it)');
  return 'redis-server';
}

async function freePort(): Promise<number> {
  const srv = createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const port = (srv.address() as { port: number }).port;
  srv.close();
  await once(srv, 'close');
  return port;
}

/** Starts redis-server on 127.0.0.1:port with an append-only file in `dir` (so a restart keeps the queue). */
async function startRedis(port: number, dir: string): Promise<ChildProcess> {
  const p = spawn(redisBinary(), ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--appendonly', 'yes', '--appendfsync', 'always', '--save', '', '--daemonize', 'no'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(p);
  let out = '';
  p.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  await until(() => /Ready to accept connections/.test(out) || p.exitCode !== null, 20_000, 'redis-server to start');
  if (p.exitCode !== null) throw new Error(`redis-server exited: ${out}`);
  return p;
}

async function stop(p: ChildProcess, signal: NodeJS.Signals): Promise<number | null> {
  if (p.exitCode !== null || p.signalCode !== null) return p.exitCode;
  const exited = once(p, 'exit') as Promise<[number | null]>;
  p.kill(signal);
  return (await exited)[0];
}

interface WorkerProc {
  proc: ChildProcess;
  name: string;
  events: WorkerJobEvent[];
}

async function startWorker(name: string, redis: string, queue: string, maxNew: number, lockSeconds: number): Promise<WorkerProc> {
  const proc = spawn(
    process.execPath,
    [BIN, 'worker', '--redis', redis, '--queue', queue, '--model', MODEL_DIR, '--threads', '1', '--max-new-tokens', String(maxNew), '--lock-seconds', String(lockSeconds), '--name', name],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  children.push(proc);
  const w: WorkerProc = { proc, name, events: [] };
  let ready = false;
  let err = '';
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  createInterface({ input: proc.stdout! }).on('line', (line) => {
    const e = JSON.parse(line) as WorkerJobEvent | { event: 'ready' };
    if (e.event === 'ready') ready = true;
    else w.events.push(e as WorkerJobEvent);
  });
  await until(() => ready || proc.exitCode !== null, 60_000, `worker ${name} to be ready`);
  if (!ready) throw new Error(`worker ${name} exited: ${err}`);
  return w;
}

const jobsFor = (prefix: string): TranscriptionJob[] => Array.from({ length: JOBS }, (_, i) => ({ id: `${prefix}-${i}`, ...INPUTS[i % INPUTS.length]! }));

/** Expected ids per input, with the workers' max-new-tokens. */
async function referenceTokens(maxNew: number): Promise<number[][]> {
  const out: number[][] = [];
  for (const inp of INPUTS) out.push((await transcribe(inp.input, { model, maxNewTokens: maxNew, ...inp.options })).tokens);
  return out;
}

const count = (w: WorkerProc[], event: string, id: string) => w.reduce((n, x) => n + x.events.filter((e) => e.event === event && e.id === id).length, 0);

beforeAll(async () => {
  ensureDist('cli/index.js');
  redisBinary();
  dataDir = await mkdtemp(join(tmpdir(), 'rustasr-redis-'));
  model = await loadModel(MODEL_DIR, { threads: 1 });
});

afterAll(async () => {
  for (const c of children.reverse()) await stop(c, 'SIGKILL');
  model?.dispose();
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
});

describe('transcription workers on a BullMQ queue', () => {
  it('two workers, 50 jobs, one worker SIGKILLed mid-job: its job is finished by the other, nothing lost or reported twice', async () => {
    const maxNew = 100;
    const expected = await referenceTokens(maxNew);
    const port = await freePort();
    const dir = join(dataDir, 'kill');
    await rm(dir, { recursive: true, force: true });
    await import('node:fs/promises').then((fs) => fs.mkdir(dir));
    const redis = await startRedis(port, dir);
    const url = `redis://127.0.0.1:${port}`;
    const a = await startWorker('A', url, 'kill', maxNew, 2);
    const b = await startWorker('B', url, 'kill', maxNew, 2);
    const jobs = jobsFor('k');
    const done = enqueueTranscriptions(url, jobs, { queue: 'kill', timeoutMs: 180_000 });
    // Kill A while it holds a job, once both have been working for a while.
    let victim = '';
    await until(() => {
      const started = a.events.filter((e) => e.event === 'started');
      const last = started.at(-1);
      if (started.length < 5 || last === undefined || count([a], 'completed', last.id) > 0) return false;
      victim = last.id;
      a.proc.kill('SIGKILL');
      return true;
    }, 120_000, 'worker A mid-job');
    await once(a.proc, 'exit');
    const outcomes = await done;
    expect(outcomes.map((o) => [o.id, o.state])).toEqual(jobs.map((j) => [j.id, 'completed']));
    outcomes.forEach((o, i) => {
      expect(o.result?.id).toBe(jobs[i]!.id);
      expect(o.result?.tokens).toEqual(expected[i % INPUTS.length]);
    });
    // A's job in flight: taken over by B after its lock expired, completed there once.
    expect(count([a], 'completed', victim)).toBe(0);
    const taken = outcomes.find((o) => o.id === victim)!;
    expect(taken.result?.worker).toBe('B');
    expect(b.events.find((e) => e.event === 'started' && e.id === victim)?.attempt).toBeGreaterThanOrEqual(2);
    for (const j of jobs) {
      const n = count([a, b], 'completed', j.id!);
      expect(n).toBeLessThanOrEqual(1);
      const r = outcomes.find((o) => o.id === j.id)!.result!;
      // Completed by A just before the kill, before its log line: the result says so.
      if (n === 0) expect(r.worker).toBe('A');
      else expect(b.events.some((e) => e.event === 'completed' && e.id === j.id)).toBe(r.worker === 'B');
    }
    // Idempotent by job id: submitting a finished job again returns its result; no worker runs it again.
    const startedBefore = b.events.filter((e) => e.event === 'started').length;
    const again = await enqueueTranscriptions(url, [jobs[0]!], { queue: 'kill', timeoutMs: 30_000 });
    expect(again).toEqual([outcomes[0]]);
    expect(b.events.filter((e) => e.event === 'started').length).toBe(startedBefore);
    // SIGTERM: the worker finishes and exits 0.
    expect(await stop(b.proc, 'SIGTERM')).toBe(0);
    await stop(redis, 'SIGTERM');
  });

  it('Redis restarted mid-run: the workers reconnect and the queue drains', async () => {
    const maxNew = 100;
    const expected = await referenceTokens(maxNew);
    const port = await freePort();
    const dir = join(dataDir, 'restart');
    await import('node:fs/promises').then((fs) => fs.mkdir(dir, { recursive: true }));
    let redis = await startRedis(port, dir);
    const url = `redis://127.0.0.1:${port}`;
    const ws = [await startWorker('A', url, 'restart', maxNew, 5), await startWorker('B', url, 'restart', maxNew, 5)];
    const jobs = jobsFor('r');
    const done = enqueueTranscriptions(url, jobs, { queue: 'restart', timeoutMs: 180_000 });
    await until(() => ws.reduce((n, w) => n + w.events.filter((e) => e.event === 'completed').length, 0) >= 10, 120_000, '10 completed jobs');
    expect(await stop(redis, 'SIGTERM')).toBe(0);
    const completedAtStop = ws.reduce((n, w) => n + w.events.filter((e) => e.event === 'completed').length, 0);
    expect(completedAtStop).toBeLessThan(JOBS);
    await new Promise((r) => setTimeout(r, 500));
    redis = await startRedis(port, dir);
    const outcomes = await done;
    expect(outcomes.map((o) => [o.id, o.state])).toEqual(jobs.map((j) => [j.id, 'completed']));
    outcomes.forEach((o, i) => expect(o.result?.tokens).toEqual(expected[i % INPUTS.length]));
    for (const w of ws) expect(w.proc.exitCode).toBe(null); // still running: reconnected, not crashed
    for (const w of ws) expect(await stop(w.proc, 'SIGTERM')).toBe(0);
    await stop(redis, 'SIGTERM');
  });

  it('an in-process worker: URL inputs, bad input failed at once without retries, ids from input and options', async () => {
    const port = await freePort();
    const dir = join(dataDir, 'api');
    await import('node:fs/promises').then((fs) => fs.mkdir(dir, { recursive: true }));
    const redis = await startRedis(port, dir);
    const url = `redis://127.0.0.1:${port}`;
    const wav = await readFile(INPUTS[0]!.input);
    const files = createHttpServer((req, res) => {
      if (req.url === '/a.wav') res.end(wav);
      else res.writeHead(404).end();
    });
    files.listen(0, '127.0.0.1');
    await once(files, 'listening');
    const base = `http://127.0.0.1:${(files.address() as { port: number }).port}`;
    const worker = await startInProcessWorker({ redis: url, queue: 'api', model, maxNewTokens: 16, lockDurationMs: 2000, name: 'inproc' });
    const events: WorkerJobEvent[] = [];
    worker.on('job', (e: WorkerJobEvent) => events.push(e));
    try {
      const ref = await transcribe(wav, { model, maxNewTokens: 16, ...INPUTS[0]!.options });
      const jobs: TranscriptionJob[] = [
        { input: `${base}/a.wav`, options: INPUTS[0]!.options },
        { input: join(goldenPath('models', 'tiny-a'), 'config.json') },
        { input: `${base}/missing.wav` },
      ];
      const out = await enqueueTranscriptions(url, jobs, { queue: 'api', timeoutMs: 60_000, attempts: 2 });
      expect(out.map((o) => o.id)).toEqual(jobs.map(jobIdOf));
      expect(jobIdOf(jobs[0]!)).toBe(jobIdOf({ input: `${base}/a.wav`, options: { ...INPUTS[0]!.options } }));
      expect([out[0]!.state, out[0]!.result?.tokens, out[0]!.result?.text, out[0]!.result?.worker]).toEqual(['completed', ref.tokens, ref.text, 'inproc']);
      expect([out[1]!.state, out[1]!.error?.split(':')[0]]).toEqual(['failed', 'UNSUPPORTED_AUDIO_FORMAT']);
      expect(events.filter((e) => e.id === out[1]!.id).map((e) => [e.event, e.attempt])).toEqual([['started', 1], ['failed', 1]]);
      // A download failure is transient: retried (2 runs here), then failed.
      expect([out[2]!.state, out[2]!.error?.split(':')[0]]).toEqual(['failed', 'DOWNLOAD_FAILED']);
      expect(events.filter((e) => e.id === out[2]!.id && e.event === 'started').map((e) => e.attempt)).toEqual([1, 2]);
      const pending = await enqueueTranscriptions(url, [{ input: `${base}/a.wav`, options: INPUTS[0]!.options }], { queue: 'api', wait: false });
      expect(pending).toEqual([{ id: out[0]!.id, state: 'completed', result: out[0]!.result }]);
      expect(() => jobIdOf({ id: '12', input: 'x' })).toThrow(/not an integer/);
    } finally {
      await worker.close();
      files.close();
      await stop(redis, 'SIGTERM');
    }
  });
});
