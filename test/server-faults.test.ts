// `rustasr serve` under faults and load: clients that leave mid-upload and mid-decode, oversized and
// truncated uploads, a wrong key, a full queue, N = 2 x max-concurrent clients at once, and shutdown
// (close() in process, SIGTERM to the CLI) under load. After each, no native session is left
// (liveObjects()), the admission gate is empty and no temp file remains. Loopback only; every wait bounded.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { loadModel, transcribe, type Model } from '../src/index.js';
import { native } from '../src/native.js';
import { serve, type RustAsrServer, type ServeOptions } from '../src/server/index.js';
import { FORM_OVERHEAD_BYTES } from '../src/server/upload.js';
import { BIN, ensureDist } from './helpers/cli.js';
import { goldenPath } from './helpers/golden.js';
import { get, metric, multipart, openPost, readResponse, until, type RawResponse } from './helpers/http.js';

const MODEL_DIR = goldenPath('models', 'tiny-a');
const SHORT = goldenPath('audio', 'en_5s.wav');
const LONG = goldenPath('audio', 'en_21s.wav');
/** Tokens per request in the long-decode tests: the tiny model never emits EOS, so each decodes this many. */
const LONG_TOKENS = 1500;
const SHORT_TOKENS = 16;

let model: Model;
let base: { models: number; sessions: number };
let tmpRoot: string;
let shortWav: Buffer;
let longWav: Buffer;
let shortText: string;
let longText: string;
const servers: RustAsrServer[] = [];

async function start(opts: Partial<ServeOptions> = {}): Promise<RustAsrServer> {
  const s = await serve({ model, port: 0, maxNewTokens: SHORT_TOKENS, tmpDir: tmpRoot, ...opts });
  await s.ready;
  servers.push(s);
  return s;
}

beforeAll(async () => {
  model = await loadModel(MODEL_DIR, { threads: 2 });
  await model.ready();
  base = native().liveObjects();
  tmpRoot = await mkdtemp(join(tmpdir(), 'rustasr-faults-'));
  shortWav = await readFile(SHORT);
  longWav = await readFile(LONG);
  shortText = (await transcribe(shortWav, { model, maxNewTokens: SHORT_TOKENS })).text;
  longText = (await transcribe(longWav, { model, maxNewTokens: LONG_TOKENS })).text;
});

afterAll(async () => {
  for (const s of servers) await s.close();
  model.dispose();
  await rm(tmpRoot, { recursive: true, force: true });
});

/** Nothing left: no native session beyond the baseline, the gate empty, no upload directory. */
async function clean(s: RustAsrServer): Promise<void> {
  await until(() => s.gate.running === 0 && s.gate.waiting === 0, 20_000, 'the gate to empty');
  await until(() => native().liveObjects().sessions === base.sessions, 20_000, 'native sessions back to the baseline');
  expect(native().liveObjects()).toEqual(base);
  await until(async () => (await readdir(tmpRoot)).length === 0, 20_000, 'upload dirs removed');
}

const url = (s: RustAsrServer) => `${s.url}/v1/audio/transcriptions`;

/** Starts a request with the whole body; resolves with the response (rejects on a connection error). */
function post(s: RustAsrServer, parts: Parameters<typeof multipart>[0], headers: Record<string, string> = {}) {
  const { body, contentType } = multipart(parts);
  const { req, response } = openPost(url(s), { 'content-type': contentType, 'content-length': body.length, ...headers });
  req.end(body);
  return { req, response: response.then(readResponse) };
}

const file = (value: Buffer) => ({ name: 'file', filename: 'a.wav', value });

describe('clients that go away', () => {
  it('mid-upload: the queue place and the temp file are freed', async () => {
    const s = await start({ memoryUploadMb: 0.05 });
    const { body, contentType } = multipart([file(longWav)]);
    const { req, response } = openPost(url(s), { 'content-type': contentType, 'content-length': body.length });
    req.write(body.subarray(0, 200_000));
    await until(async () => s.gate.waiting === 1 && (await readdir(tmpRoot)).length === 1, 20_000, 'the upload to be spooled');
    req.destroy();
    await expect(response).rejects.toThrow();
    await clean(s);
    expect(metric((await get(`${s.url}/metrics`)).body, 'rustasr_errors_total{code="client_closed"}')).toBe(1);
  });

  it('mid-decode (json): decoding stops and the native session is freed', async () => {
    const s = await start({ maxNewTokens: LONG_TOKENS });
    const { req, response } = post(s, [file(longWav)]);
    await until(() => s.gate.running === 1 && native().liveObjects().sessions === base.sessions + 1, 20_000, 'decoding to start');
    req.destroy();
    await expect(response).rejects.toThrow();
    await clean(s);
    const t = (await get(`${s.url}/metrics`)).body;
    expect(metric(t, 'rustasr_http_requests_total{route="transcriptions",status="client_closed"}')).toBe(1);
    expect(metric(t, 'rustasr_tokens_total')).toBe(0);
  });

  it('mid-decode (stream=true): after the first delta, the stream and the session end', async () => {
    const s = await start({ maxNewTokens: LONG_TOKENS });
    const { body, contentType } = multipart([file(longWav), { name: 'stream', value: 'true' }]);
    const { req, response } = openPost(url(s), { 'content-type': contentType, 'content-length': body.length });
    req.end(body);
    const res = await response;
    expect([res.statusCode, res.headers['content-type']]).toEqual([200, 'text/event-stream; charset=utf-8']);
    const [first] = (await once(res, 'data')) as [Buffer];
    expect(first.toString()).toMatch(/^data: \{"type":"transcript\.text\.delta","delta":/);
    res.destroy();
    await clean(s);
  });
});

describe('bad uploads', () => {
  it('oversized: 413 from Content-Length before the body, and while streaming a chunked body', async () => {
    const s = await start({ maxUploadMb: 0.1 });
    expect(longWav.length).toBeGreaterThan(0.1 * 1048576 + FORM_OVERHEAD_BYTES);
    let r = await post(s, [file(longWav)]).response;
    expect([r.status, JSON.parse(r.body).error.code, JSON.parse(r.body).error.param, r.headers.connection]).toEqual([413, 'file_too_large', 'file', 'close']);
    // No Content-Length: the limit is found in the stream, at the first byte past it.
    const { body, contentType } = multipart([file(shortWav)]);
    expect(shortWav.length).toBeGreaterThan(0.1 * 1048576);
    const { req, response } = openPost(url(s), { 'content-type': contentType, 'transfer-encoding': 'chunked' });
    req.write(body.subarray(0, 150_000));
    r = await readResponse(await response);
    expect([r.status, JSON.parse(r.body).error.code]).toEqual([413, 'file_too_large']);
    req.destroy();
    await clean(s);
  });

  it('truncated: a body without its closing boundary is 400, a WAV cut short is 400 truncated_wav', async () => {
    const s = await start();
    const { body, contentType } = multipart([file(shortWav)]);
    const cut = body.subarray(0, body.length - 60);
    const { req, response } = openPost(url(s), { 'content-type': contentType, 'content-length': cut.length });
    req.end(cut);
    let r = await readResponse(await response);
    expect([r.status, JSON.parse(r.body).error.code]).toEqual([400, 'invalid_multipart']);
    r = await post(s, [file(shortWav.subarray(0, shortWav.length - 1001))]).response;
    expect([r.status, JSON.parse(r.body).error.code]).toEqual([400, 'truncated_wav']);
    await clean(s);
  });

  it('a wrong key is refused before the body is read', async () => {
    const s = await start({ apiKey: 'sk-right' });
    const r = await post(s, [file(shortWav)], { authorization: 'Bearer sk-wrong' }).response;
    expect([r.status, JSON.parse(r.body).error.code]).toEqual([401, 'invalid_api_key']);
    const ok = await post(s, [file(shortWav)], { authorization: 'Bearer sk-right' }).response;
    expect([ok.status, JSON.parse(ok.body).text]).toEqual([200, shortText]);
    await clean(s);
  });
});

describe('limits and load', () => {
  it('answers 429 once max-concurrent + max-queue requests are admitted', async () => {
    const s = await start({ maxConcurrent: 1, maxQueue: 0 });
    const { body, contentType } = multipart([file(shortWav)]);
    const { req, response } = openPost(url(s), { 'content-type': contentType, 'content-length': body.length });
    req.write(body.subarray(0, 1000)); // holds the only place while it uploads
    await until(() => s.gate.waiting === 1, 20_000, 'the first request to be admitted');
    const r = await post(s, [file(shortWav)]).response;
    expect([r.status, JSON.parse(r.body).error.code, JSON.parse(r.body).error.type, r.headers['retry-after']]).toEqual([429, 'queue_full', 'rate_limit_error', '1']);
    req.end(body.subarray(1000));
    const first = await readResponse(await response);
    expect([first.status, JSON.parse(first.body).text]).toEqual([200, shortText]);
    await clean(s);
  });

  it('N = 2 x max-concurrent clients at once, 3 rounds: each answered with the right text or 429, none lost', async () => {
    const maxConcurrent = 2;
    const s = await start({ maxConcurrent, maxQueue: 1 });
    const statuses: number[] = [];
    for (let round = 0; round < 3; round++) {
      const rs = await Promise.all(Array.from({ length: 2 * maxConcurrent }, () => post(s, [file(shortWav)]).response));
      for (const r of rs) {
        if (r.status === 200) expect(JSON.parse(r.body).text).toBe(shortText);
        else expect([r.status, JSON.parse(r.body).error.code]).toEqual([429, 'queue_full']);
        statuses.push(r.status);
      }
    }
    expect(statuses).toHaveLength(3 * 2 * maxConcurrent);
    const t = (await get(`${s.url}/metrics`)).body;
    const answered = metric(t, 'rustasr_http_requests_total{route="transcriptions",status="200"}') + metric(t, 'rustasr_http_requests_total{route="transcriptions",status="429"}');
    expect(answered).toBe(statuses.length);
    await clean(s);
  });
});

describe('shutdown', () => {
  it('close() under load: admitted requests finish, new connections are refused, the owned model is disposed', async () => {
    const s = await serve({ model: MODEL_DIR, load: { threads: 2 }, port: 0, maxNewTokens: LONG_TOKENS, maxConcurrent: 2, maxQueue: 2, tmpDir: tmpRoot });
    await s.ready;
    expect(native().liveObjects().models).toBe(base.models + 1);
    const address = s.url;
    const inflight = Array.from({ length: 4 }, () => post(s, [file(longWav)]).response);
    await until(() => s.gate.running === 2 && s.gate.waiting === 2, 20_000, 'four admitted requests');
    const closed = s.close();
    expect((await get(`${address}/readyz`).catch((e: Error) => e)) instanceof Error).toBe(true);
    const rs = await Promise.all(inflight);
    expect(rs.map((r) => [r.status, JSON.parse(r.body).text])).toEqual(rs.map(() => [200, longText]));
    await closed;
    // A session is freed once the native call in flight returns, which may be just after the response.
    await until(() => native().liveObjects().sessions === base.sessions && native().liveObjects().models === base.models, 20_000, 'the model disposed');
  });

  it('close() past the drain timeout stops running work with 503 shutting_down', async () => {
    // The repetition guard off: the random model loops, and the guard would end the decode before the deadline.
    const s = await serve({ model, port: 0, maxNewTokens: LONG_TOKENS * 20, repetitionGuard: false, drainTimeoutMs: 200, tmpDir: tmpRoot });
    // Ready first: the server also looks for the default forced aligner in the cache before it is ready, and
    // a request before that is 503 model_not_loaded (seen once under CI load: decoding never started).
    await s.ready;
    const { response } = post(s, [file(longWav)]);
    await until(() => s.gate.running === 1 && native().liveObjects().sessions === base.sessions + 1, 20_000, 'decoding to start');
    await s.close();
    const r: RawResponse = await response;
    expect([r.status, JSON.parse(r.body).error.code]).toEqual([503, 'shutting_down']);
    await until(() => native().liveObjects().sessions === base.sessions, 20_000, 'native sessions back to the baseline');
    expect(native().liveObjects()).toEqual(base);
  });

  it('SIGTERM to `rustasr serve` under load: running requests finish, then it exits 0', async () => {
    ensureDist('cli/index.js');
    const child = spawn(process.execPath, [BIN, 'serve', '--model', MODEL_DIR, '--port', '0', '--threads', '2', '--max-new-tokens', String(LONG_TOKENS), '--max-concurrent', '2'], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let log = '';
    child.stderr.on('data', (d: Buffer) => (log += d.toString()));
    const exited = once(child, 'exit') as Promise<[number | null, string | null]>;
    try {
      await until(() => /ready: model/.test(log), 60_000, 'the server to be ready');
      const address = /listening on (http:\/\/[^\s;]+)/.exec(log)![1]!;
      const target = `${address}/v1/audio/transcriptions`;
      const { body, contentType } = multipart([file(longWav), { name: 'stream', value: 'true' }]);
      const inflight = Array.from({ length: 3 }, () => {
        const { req, response } = openPost(target, { 'content-type': contentType, 'content-length': body.length });
        req.end(body);
        return response.then(readResponse);
      });
      await until(async () => {
        const t = (await get(`${address}/metrics`)).body;
        return metric(t, 'rustasr_sessions_running') + metric(t, 'rustasr_queue_depth') === 3 && metric(t, 'rustasr_native_live_objects{kind="sessions"}') === 2;
      }, 30_000, 'three admitted requests');
      child.kill('SIGTERM');
      const rs = await Promise.all(inflight);
      for (const r of rs) {
        expect(r.status).toBe(200);
        expect(r.body.trimEnd().split('\n\n').at(-1)).toBe(`data: ${JSON.stringify({ type: 'transcript.text.done', text: longText })}`);
      }
      const [code, signal] = await exited;
      expect([code, signal]).toEqual([0, null]);
      expect(log).toMatch(/SIGTERM: draining/);
      const refused = await new Promise<string>((resolve) => {
        const r = request(target, { method: 'POST' });
        r.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? ''));
        r.on('response', () => resolve('answered'));
        r.end();
      });
      expect(refused).toBe('ECONNREFUSED');
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  });
});
