// GET /v1/realtime with a real WebSocket client (`ws`): PCM16 frames and WAV bytes give the events listen()
// gives for the same audio; bad options, bad audio and protocol errors give a coded error message and a close;
// a wrong key (401) and a full gate (429) are refused at the upgrade; a queued session runs when a slot frees;
// a client sending faster than the engine decodes is not read ahead of it (backpressure); a client that leaves
// mid-stream frees its native session; close() and SIGTERM drain an open session (its final, then close
// 1001).
// Loopback only; every wait bounded.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import { readFile } from 'node:fs/promises';
import { Readable } from 'node:stream';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';

import { listen, loadAudio, loadModel, type LiveEvent, type ListenOptions, type Model } from '../src/index.js';
import { native } from '../src/native.js';
import { REALTIME_MAX_MESSAGE_BYTES } from '../src/server/routes/realtime.js';
import { serve, type RustAsrServer, type ServeOptions } from '../src/server/index.js';
import { BIN, ensureDist } from './helpers/cli.js';
import { goldenPath } from './helpers/golden.js';
import { get, metric, until } from './helpers/http.js';

const MODEL_DIR = goldenPath('models', 'tiny-a');
const EN5 = goldenPath('audio', 'en_5s.wav');
const EN5_8K = goldenPath('audio', 'en_5s_8k.wav');
const EN21 = goldenPath('audio', 'en_21s.wav');
const FRAME_MS = 100;

let model: Model;
let base: { models: number; sessions: number };
let en5Wav: Buffer;
let en5At8k: Buffer;
let en21Wav: Buffer;
const servers: RustAsrServer[] = [];

/** The PCM of a canonical 44-byte-header WAV (the golden clips are). */
const pcmOf = (wav: Buffer) => wav.subarray(44);

async function start(opts: Partial<ServeOptions> = {}): Promise<RustAsrServer> {
  const s = await serve({ model, port: 0, ...opts });
  await s.ready;
  servers.push(s);
  return s;
}

beforeAll(async () => {
  model = await loadModel(MODEL_DIR, { threads: 2 });
  await model.ready();
  base = native().liveObjects();
  en5Wav = await readFile(EN5);
  en5At8k = await readFile(EN5_8K);
  en21Wav = await readFile(EN21);
  for (const w of [en5Wav, en5At8k, en21Wav]) expect(w.subarray(36, 40).toString('latin1')).toBe('data');
});

afterAll(async () => {
  for (const s of servers) await s.close();
  model.dispose();
});

type Msg = Record<string, unknown> & { type: string };

interface Client {
  ws: WebSocket;
  messages: Msg[];
  /** The close code and reason the client saw. */
  closed: Promise<{ code: number; reason: string }>;
  /** Resolves with the first message (from the start) that matches. */
  next(pred: (m: Msg) => boolean, what?: string): Promise<Msg>;
}

const wsUrl = (s: RustAsrServer) => `${s.url.replace(/^http/, 'ws')}/v1/realtime`;

/** Opens a session; rejects with `{ status, body }` when the upgrade is refused. */
function open(s: RustAsrServer, headers: Record<string, string> = {}): Promise<Client> {
  const ws = new WebSocket(wsUrl(s), { headers, perMessageDeflate: false });
  const messages: Msg[] = [];
  const waiters: (() => void)[] = [];
  ws.on('message', (data, isBinary) => {
    expect(isBinary).toBe(false);
    messages.push(JSON.parse(data.toString()) as Msg);
    for (const w of waiters.splice(0)) w();
  });
  const closed = new Promise<{ code: number; reason: string }>((resolve) => {
    ws.on('close', (code, reason) => {
      resolve({ code, reason: reason.toString() });
      for (const w of waiters.splice(0)) w();
    });
  });
  const next = async (pred: (m: Msg) => boolean, what = 'a message') => {
    const end = Date.now() + 30_000;
    for (;;) {
      const m = messages.find(pred);
      if (m) return m;
      if (ws.readyState === WebSocket.CLOSED) throw new Error(`closed before ${what}: ${JSON.stringify(messages)}`);
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
      await new Promise<void>((r) => {
        waiters.push(r);
        setTimeout(r, 100);
      });
    }
  };
  return new Promise((resolve, reject) => {
    ws.once('open', () => resolve({ ws, messages, closed, next }));
    ws.once('unexpected-response', (_req, res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => reject({ status: res.statusCode, headers: res.headers, body: JSON.parse(Buffer.concat(chunks).toString()) as unknown }));
    });
    ws.once('error', reject);
  });
}

/** Sends `data` as binary frames of `size` bytes. */
function sendFrames(ws: WebSocket, data: Buffer, size: number): void {
  for (let i = 0; i < data.length; i += size) ws.send(data.subarray(i, i + size), { binary: true });
}

/** A whole session: optional config, the audio in frames, end; all messages and the close. */
async function session(s: RustAsrServer, config: Record<string, unknown> | undefined, audio: Buffer, frameBytes: number) {
  const c = await open(s);
  if (config) c.ws.send(JSON.stringify({ type: 'config', ...config }));
  sendFrames(c.ws, audio, frameBytes);
  c.ws.send(JSON.stringify({ type: 'end' }));
  const close = await c.closed;
  return { messages: c.messages, close };
}

/** The events as the server sends them (step stats differ run to run: only their presence is compared). */
const strip = (es: readonly Record<string, unknown>[]) =>
  es.map((e) => {
    const { step, ...rest } = e;
    return { ...rest, language: rest['language'] ?? null, hasStep: step !== undefined };
  });

async function reference(source: string | Float32Array, opts: Omit<ListenOptions, 'model'> = {}): Promise<LiveEvent[]> {
  const src = typeof source === 'string' ? source : Readable.from([{ samples: source, sampleRate: 16000 }], { objectMode: true });
  const out: LiveEvent[] = [];
  for await (const e of listen(src, { model, ...opts })) out.push(e as LiveEvent);
  return out;
}

/** Nothing left: the gate empty, no realtime session open, native sessions back to the baseline. */
async function clean(s: RustAsrServer): Promise<void> {
  await until(() => s.gate.running === 0 && s.gate.waiting === 0, 20_000, 'the gate to empty');
  await until(() => native().liveObjects().sessions === base.sessions, 20_000, 'native sessions back to the baseline');
  expect(native().liveObjects()).toEqual(base);
  expect(metric((await get(`${s.url}/metrics`)).body, 'rustasr_realtime_sessions')).toBe(0);
}

describe('GET /v1/realtime: audio in, live events out', () => {
  it('PCM16 frames (no config: 16 kHz mono) give the partials and finals listen() gives, then close 1000', async () => {
    const s = await start();
    const ref = await reference(EN5);
    expect(ref.filter((e) => e.type === 'partial').length).toBeGreaterThan(0);
    expect(ref.at(-1)!.type).toBe('final');
    const pcm = pcmOf(en5Wav);
    const { messages, close } = await session(s, undefined, pcm, 16000 * 2 * (FRAME_MS / 1000));
    expect(close).toEqual({ code: 1000, reason: 'end of input' });
    expect(messages[0]).toEqual({ type: 'ready', model: s.context.modelId, input: { format: 'pcm16', sampleRate: 16000, channels: 1 } });
    expect(strip(messages.slice(1))).toEqual(strip(ref as unknown as Record<string, unknown>[]));
    const t = (await get(`${s.url}/metrics`)).body;
    expect(metric(t, 'rustasr_http_requests_total{route="realtime",status="200"}')).toBe(1);
    expect(metric(t, 'rustasr_realtime_audio_seconds_total')).toBeCloseTo(pcm.length / 2 / 16000, 6);
    expect(metric(t, 'rustasr_audio_seconds_total')).toBeCloseTo(pcm.length / 2 / 16000, 6);
    await clean(s);
  });

  it('a declared rate (PCM16 at 8 kHz, samples straddling frames), an ISO language code and exact mode: the events of listen() with the same options', async () => {
    const s = await start();
    const ref = await reference(EN5_8K, { language: 'English', exact: true });
    const { messages, close } = await session(s, { language: 'en', exact: true, input: { format: 'pcm16', sampleRate: 8000 } }, pcmOf(en5At8k), 1601);
    expect(close.code).toBe(1000);
    expect(messages[0]).toMatchObject({ type: 'ready', input: { format: 'pcm16', sampleRate: 8000, channels: 1 } });
    expect(strip(messages.slice(1))).toEqual(strip(ref as unknown as Record<string, unknown>[]));
    expect(messages.at(-1)).toMatchObject({ type: 'final', language: 'English' });
    await clean(s);
  });

  it('WAV bytes in frames that split the header give the events of listen() on the file', async () => {
    const s = await start();
    const ref = await reference(EN5);
    const c = await open(s);
    c.ws.send(JSON.stringify({ type: 'config', input: 'wav' }));
    sendFrames(c.ws, en5Wav.subarray(0, 100), 7); // the 44-byte header in pieces
    sendFrames(c.ws, en5Wav.subarray(100), 1001); // odd sizes: samples straddle frames
    c.ws.send(JSON.stringify({ type: 'end' }));
    const close = await c.closed;
    const messages = c.messages;
    expect(close.code).toBe(1000);
    expect(messages[0]).toMatchObject({ type: 'ready', input: { format: 'wav' } });
    expect(strip(messages.slice(1))).toEqual(strip(ref as unknown as Record<string, unknown>[]));
    await clean(s);
  });

  it('end before any audio: no events, close 1000; messages after end are ignored; the --max-new-tokens cap applies per step', async () => {
    const s = await start({ maxNewTokens: 4 });
    const empty = await session(s, undefined, Buffer.alloc(0), 1);
    expect([empty.messages, empty.close.code]).toEqual([[], 1000]);
    const c = await open(s);
    c.ws.send(JSON.stringify({ type: 'config', maxNewTokens: 100 }));
    sendFrames(c.ws, pcmOf(en5Wav), 3200);
    c.ws.send(JSON.stringify({ type: 'end' }));
    // Anything after end is ignored: it cannot cost the session its final.
    c.ws.send('not json');
    c.ws.send(pcmOf(en5Wav).subarray(0, 3200));
    expect((await c.closed).code).toBe(1000);
    const messages = c.messages;
    const ref = await reference(EN5, { maxNewTokens: 4 });
    expect(strip(messages.slice(1))).toEqual(strip(ref as unknown as Record<string, unknown>[]));
    for (const m of messages.slice(1)) if (m['step'] !== undefined) expect((m['step'] as { generated: number }).generated).toBeLessThanOrEqual(4);
    await clean(s);
  });
});

describe('GET /v1/realtime: errors', () => {
  /** Sends `first` (then audio and end); expects one error message with `status` and `code`, then close 4000 + status. */
  async function expectError(s: RustAsrServer, first: string | Buffer | null, audio: Buffer, status: number, code: string, param?: string | null) {
    const c = await open(s);
    if (first !== null) c.ws.send(first);
    sendFrames(c.ws, audio, 3200);
    if (c.ws.readyState === WebSocket.OPEN) c.ws.send(JSON.stringify({ type: 'end' }));
    const close = await c.closed;
    const errors = c.messages.filter((m) => m.type === 'error');
    expect(errors).toHaveLength(1);
    const e = errors[0] as unknown as { status: number; error: { code: string; type: string; param: string | null; message: string } };
    expect([e.status, e.error.code, close.code, close.reason]).toEqual([status, code, 4000 + status, code]);
    if (param !== undefined) expect(e.error.param).toBe(param);
    expect(c.messages.at(-1)).toBe(errors[0]); // nothing after the error
    return e;
  }

  it('bad options and bad audio: a coded error message, then a close; nothing leaks', async () => {
    const s = await start();
    const pcm = pcmOf(en5Wav);
    const cfg = (o: Record<string, unknown>) => JSON.stringify({ type: 'config', ...o });
    await expectError(s, cfg({ chunkSeconds: 0 }), pcm, 400, 'invalid_option');
    await expectError(s, cfg({ language: 'Klingon' }), pcm, 400, 'unsupported_language', 'language');
    await expectError(s, cfg({ exact: 'yes' }), pcm, 400, 'invalid_value', 'exact');
    await expectError(s, cfg({ chunk_seconds: 1 }), pcm, 400, 'unknown_parameter', 'chunk_seconds');
    await expectError(s, cfg({ input: { format: 'mp3' } }), pcm, 400, 'invalid_value', 'input.format');
    await expectError(s, cfg({ input: { format: 'pcm16', sampleRate: 7 } }), pcm, 400, 'invalid_value', 'input.sampleRate');
    await expectError(s, cfg({ model: 'whisper-1' }), pcm, 404, 'model_not_found', 'model');
    await expectError(s, 'not json', pcm, 400, 'invalid_json');
    await expectError(s, JSON.stringify({ type: 'speak' }), pcm, 400, 'invalid_request', 'type');
    // A config after audio.
    const late = await open(s);
    late.ws.send(pcm.subarray(0, 3200));
    late.ws.send(cfg({}));
    expect((await late.closed).code).toBe(4400);
    expect(late.messages.at(-1)).toMatchObject({ type: 'error', error: { code: 'invalid_request' } });
    // Not a WAV, and a WAV cut short, as the transcription route answers them.
    await expectError(s, cfg({ input: 'wav' }), Buffer.from('RIFF....not a wave file at all, not even close'.repeat(4)), 415, 'invalid_wav', 'file');
    await expectError(s, cfg({ input: 'wav' }), en5Wav.subarray(0, 30), 400, 'truncated_wav', 'file');
    const t = (await get(`${s.url}/metrics`)).body;
    expect(metric(t, 'rustasr_http_requests_total{route="realtime",status="400"}')).toBe(10);
    expect(metric(t, 'rustasr_errors_total{code="invalid_option"}')).toBe(1);
    await clean(s);
  });

  it('a malformed handshake is refused with 400 invalid_handshake', async () => {
    const s = await start();
    const raw = await new Promise<string>((resolve, reject) => {
      const sock = connect(Number(new URL(s.url).port), '127.0.0.1');
      let out = '';
      sock.on('data', (d) => (out += d.toString()));
      sock.on('end', () => resolve(out));
      sock.on('error', reject);
      sock.write('GET /v1/realtime HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n');
    });
    expect(raw.split('\r\n')[0]).toBe('HTTP/1.1 400 Bad Request');
    expect(JSON.parse(raw.slice(raw.indexOf('\r\n\r\n') + 4)).error.code).toBe('invalid_handshake');
    await clean(s);
  });

  it('a message over the limit closes with 1009', async () => {
    const s = await start();
    const c = await open(s);
    c.ws.send(Buffer.alloc(REALTIME_MAX_MESSAGE_BYTES + 2));
    expect((await c.closed).code).toBe(1009);
    await clean(s);
    expect(metric((await get(`${s.url}/metrics`)).body, 'rustasr_errors_total{code="message_too_large"}')).toBe(1);
  });

  it('an unknown key is refused at the upgrade (401); the right key opens a session', async () => {
    const s = await start({ apiKey: 'sk-right' });
    await expect(open(s, { authorization: 'Bearer sk-wrong' })).rejects.toMatchObject({ status: 401, body: { error: { code: 'invalid_api_key', type: 'authentication_error' } } });
    await expect(open(s)).rejects.toMatchObject({ status: 401, body: { error: { code: 'invalid_api_key' } } });
    const c = await open(s, { authorization: 'Bearer sk-right' });
    c.ws.send(JSON.stringify({ type: 'end' }));
    expect((await c.closed).code).toBe(1000);
    await clean(s);
  });

  it('a full gate gives 429 at the upgrade; a queued session runs once a slot frees', async () => {
    const s = await start({ maxConcurrent: 1, maxQueue: 1 });
    const ref = await reference(EN5);
    const a = await open(s);
    a.ws.send(JSON.stringify({ type: 'config' }));
    await a.next((m) => m.type === 'ready', 'ready');
    const b = await open(s);
    b.ws.send(JSON.stringify({ type: 'config' }));
    sendFrames(b.ws, pcmOf(en5Wav), 3200);
    b.ws.send(JSON.stringify({ type: 'end' }));
    await until(() => s.gate.running === 1 && s.gate.waiting === 1, 20_000, 'a running and a queued session');
    await expect(open(s)).rejects.toMatchObject({ status: 429, headers: { 'retry-after': '1' }, body: { error: { code: 'queue_full', type: 'rate_limit_error' } } });
    expect(b.messages).toEqual([]); // waits for the slot
    a.ws.send(JSON.stringify({ type: 'end' }));
    expect((await a.closed).code).toBe(1000);
    expect((await b.closed).code).toBe(1000);
    expect(b.messages[0]!.type).toBe('ready');
    expect(strip(b.messages.slice(1))).toEqual(strip(ref as unknown as Record<string, unknown>[]));
    expect(metric((await get(`${s.url}/metrics`)).body, 'rustasr_http_requests_total{route="realtime",status="429"}')).toBe(1);
    await clean(s);
  });
});

describe('GET /v1/realtime: backpressure, disconnects and shutdown', () => {
  it('a client sending faster than the engine decodes is read only as fast as it decodes; leaving mid-stream frees everything', async () => {
    const s = await start();
    const sockets: Socket[] = [];
    s.http.on('connection', (sock: Socket) => sockets.push(sock));
    const pcm = pcmOf(en21Wav);
    const audio = Buffer.concat(Array.from({ length: 10 }, () => pcm)); // 210 s, sent at once
    const c = await open(s);
    sendFrames(c.ws, audio, 3200);
    const first = await c.next((m) => m.type === 'partial', 'the first partial');
    expect(sockets).toHaveLength(1);
    // Read so far: the audio decoded, plus what the pipeline holds (bounded), never the whole stream.
    const decodedBytes = (first['audioSeconds'] as number) * 16000 * 2;
    expect(sockets[0]!.bytesRead).toBeLessThan(decodedBytes + (1 << 20));
    expect(audio.length).toBeGreaterThan(decodedBytes + 4 * (1 << 20));
    expect(native().liveObjects().sessions).toBe(base.sessions + 1);
    c.ws.terminate();
    await clean(s);
    const t = (await get(`${s.url}/metrics`)).body;
    expect(metric(t, 'rustasr_http_requests_total{route="realtime",status="client_closed"}')).toBe(1);
    expect(metric(t, 'rustasr_errors_total{code="client_closed"}')).toBe(1);
  });

  it('a close frame mid-stream aborts the session (no final) and frees its native session', async () => {
    const s = await start();
    const c = await open(s);
    sendFrames(c.ws, pcmOf(en21Wav), 3200);
    await c.next((m) => m.type === 'partial', 'a partial');
    c.ws.close(1000);
    await c.closed;
    await clean(s);
    expect(c.messages.some((m) => m.type === 'final')).toBe(false);
  });

  it('close() drains an open session: the audio received is decoded, its final is sent, then close 1001', async () => {
    const s = await serve({ model, port: 0 });
    await s.ready;
    const x = (await loadAudio(EN5, 16000)).slice(0, 4 * 16000);
    const ref = await reference(x);
    const partials = ref.filter((e) => e.type === 'partial');
    // The last partial covers all 4 s: once the client has it, the server holds every sample.
    expect((partials.at(-1) as { audioSeconds: number }).audioSeconds).toBe(4);
    const c = await open(s);
    sendFrames(c.ws, pcmOf(en5Wav).subarray(0, 4 * 16000 * 2), 3200);
    await until(() => c.messages.filter((m) => m.type === 'partial').length === partials.length, 20_000, 'every partial');
    const url = s.url;
    const closing = s.close();
    const close = await c.closed;
    await closing;
    expect(close).toEqual({ code: 1001, reason: 'shutting_down' });
    expect(strip(c.messages.slice(1))).toEqual(strip(ref as unknown as Record<string, unknown>[]));
    expect(c.messages.at(-1)).toMatchObject({ type: 'final', reason: 'input', end: 4 });
    await until(() => native().liveObjects().sessions === base.sessions, 20_000, 'native sessions back to the baseline');
    // New sessions are refused once the drain began (the listener is closed).
    await expect(open({ url } as RustAsrServer)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
  });

  it('SIGTERM to `rustasr serve` drains an open session (its final, then close 1001) and exits 0', async () => {
    ensureDist('cli/index.js');
    const x = (await loadAudio(EN5, 16000)).slice(0, 4 * 16000);
    const ref = await reference(x);
    const partials = ref.filter((e) => e.type === 'partial');
    const child = spawn(process.execPath, [BIN, 'serve', '--model', MODEL_DIR, '--port', '0', '--threads', '2'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let log = '';
    child.stderr.on('data', (d: Buffer) => (log += d.toString()));
    const exited = once(child, 'exit') as Promise<[number | null, string | null]>;
    try {
      await until(() => /ready: model/.test(log), 60_000, 'the server to be ready');
      const url = /listening on (http:\/\/[^\s;]+)/.exec(log)![1]!;
      const c = await open({ url } as RustAsrServer);
      sendFrames(c.ws, pcmOf(en5Wav).subarray(0, 4 * 16000 * 2), 3200);
      await until(() => c.messages.filter((m) => m.type === 'partial').length === partials.length, 20_000, 'every partial');
      child.kill('SIGTERM');
      expect(await c.closed).toEqual({ code: 1001, reason: 'shutting_down' });
      expect(strip(c.messages.slice(1))).toEqual(strip(ref as unknown as Record<string, unknown>[]));
      expect(await exited).toEqual([0, null]);
      expect(log).toMatch(/SIGTERM: draining \(1 running, 0 queued\)/);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  });

  it('past the drain deadline a session is stopped with 503 shutting_down', async () => {
    const s = await serve({ model, port: 0, drainTimeoutMs: 100 });
    await s.ready;
    const c = await open(s);
    // Exact mode on one growing segment, 200 tokens a step: the final cannot be ready within the deadline.
    c.ws.send(JSON.stringify({ type: 'config', exact: true, endpoint: false, maxNewTokens: 200 }));
    sendFrames(c.ws, pcmOf(en21Wav), 3200);
    await c.next((m) => m.type === 'partial', 'a partial');
    await s.close();
    const close = await c.closed;
    expect([close.code, close.reason]).toEqual([4503, 'shutting_down']);
    expect(c.messages.at(-1)).toMatchObject({ type: 'error', status: 503, error: { code: 'shutting_down' } });
    await until(() => native().liveObjects().sessions === base.sessions, 20_000, 'native sessions back to the baseline');
  });
});
