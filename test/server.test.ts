// `rustasr serve` API with real clients: the official `openai` package (unchanged, baseURL pointed at the
// server) in every response_format and with stream: true, curl -F, and raw HTTP for the error cases. Every
// result is compared with what transcribe() / recognize() give for the same input and options, and with
// the golden ids.
import { execFile } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { mkdtemp, readFile, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { APIError } from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { loadModel, recognize, transcribe, type Model, type TranscribeResult } from '../src/index.js';
import { native } from '../src/native.js';
import { serve, type RustAsrServer, type ServeOptions } from '../src/server/index.js';
import { formatSubtitles } from '../src/text/subtitles.js';
import { goldenPath, listCaseEntries, type GoldenIndexEntry } from './helpers/golden.js';
import { caseFields, caseOptions, client } from './helpers/serving.js';
import { get, metric, multipart, openPost, postForm, readResponse, until } from './helpers/http.js';

const MAX_NEW = 16;
const CASES = listCaseEntries();
const MODEL_DIRS = [...new Set(CASES.map((c) => c.model_dir))];
const WAV = goldenPath('audio', 'en_5s.wav');

const models = new Map<string, Model>();
const servers = new Map<string, RustAsrServer>();
const extra: RustAsrServer[] = [];

async function start(opts: ServeOptions): Promise<RustAsrServer> {
  const s = await serve({ port: 0, maxNewTokens: MAX_NEW, ...opts });
  await s.ready.catch(() => undefined);
  extra.push(s);
  return s;
}

beforeAll(async () => {
  for (const dir of MODEL_DIRS) {
    const m = await loadModel(goldenPath(dir), { threads: 2 });
    await m.ready();
    models.set(dir, m);
    // No forced aligner (not even a cached default): word timestamps are test/server-words.test.ts's.
    const s = await serve({ model: m, port: 0, maxNewTokens: MAX_NEW, aligner: false });
    await s.ready;
    servers.set(dir, s);
  }
});

afterAll(async () => {
  for (const s of [...servers.values(), ...extra]) await s.close();
  for (const m of models.values()) m.dispose();
  expect(native().liveObjects().sessions).toBe(0);
});

function serverOf(c: GoldenIndexEntry): RustAsrServer {
  return servers.get(c.model_dir)!;
}


const expected = new Map<string, TranscribeResult>();
async function reference(c: GoldenIndexEntry): Promise<TranscribeResult> {
  let r = expected.get(c.case);
  if (!r) {
    r = await transcribe(goldenPath(c.audio), { model: models.get(c.model_dir)!, ...caseOptions(c, MAX_NEW) });
    expected.set(c.case, r);
  }
  return r;
}

describe('the openai client against rustasr serve', () => {
  it.each(CASES.map((c) => [c.case, c] as const))('%s: json, text, srt, vtt and verbose_json equal transcribe()', async (_n, c) => {
    const s = serverOf(c);
    const api = client(s);
    const ref = await reference(c);
    expect(ref.tokens).toEqual(c.generated_ids.slice(0, MAX_NEW));
    const base = { model: s.context.modelId, ...caseFields(c) };
    const file = () => createReadStream(goldenPath(c.audio));

    const json = await api.audio.transcriptions.create({ ...base, file: file() });
    expect(json.text).toBe(ref.text);
    expect(json.usage).toEqual({ type: 'duration', seconds: ref.timings.audioSeconds });

    expect(await api.audio.transcriptions.create({ ...base, file: file(), response_format: 'text' })).toBe(`${ref.text}\n`);
    expect(await api.audio.transcriptions.create({ ...base, file: file(), response_format: 'srt' })).toBe(formatSubtitles('srt', ref.segments));
    expect(await api.audio.transcriptions.create({ ...base, file: file(), response_format: 'vtt' })).toBe(formatSubtitles('vtt', ref.segments));

    const verbose = await api.audio.transcriptions.create({ ...base, file: file(), response_format: 'verbose_json', timestamp_granularities: ['segment'] });
    expect(verbose.text).toBe(ref.text);
    expect(verbose.language).toBe((ref.language ?? '').toLowerCase());
    expect(verbose.duration).toBe(ref.timings.audioSeconds);
    expect(verbose.segments?.map((g) => ({ id: g.id, start: g.start, end: g.end, text: g.text, tokens: g.tokens }))).toEqual(
      ref.segments.map((g, i) => ({ id: i, start: g.start, end: g.end, text: g.text, tokens: g.tokens })),
    );
    expect(verbose.segments?.flatMap((g) => g.tokens)).toEqual(c.generated_ids.slice(0, MAX_NEW));
    expect(verbose.words).toBeUndefined();
  });

  it.each(CASES.map((c) => [c.case, c] as const))('%s: stream=true gives a delta per decoded token text, then done', async (_n, c) => {
    const s = serverOf(c);
    const ref = await reference(c);
    const toks: string[] = [];
    for await (const t of recognize(goldenPath(c.audio), { model: models.get(c.model_dir)!, ...caseOptions(c, MAX_NEW) })) if (t.text !== '') toks.push(t.text);
    const stream = await client(s).audio.transcriptions.create({
      model: s.context.modelId,
      file: createReadStream(goldenPath(c.audio)),
      stream: true,
      ...caseFields(c),
    });
    const events: { type: string; delta?: string; text?: string }[] = [];
    for await (const ev of stream) events.push(ev as { type: string });
    expect(events.slice(0, -1).map((e) => e.type)).toEqual(toks.map(() => 'transcript.text.delta'));
    expect(events.slice(0, -1).map((e) => e.delta)).toEqual(toks);
    expect(events.at(-1)).toEqual({ type: 'transcript.text.done', text: ref.text });
  });

  it('takes ISO language codes (en = English); word granularity without an aligner is 400 word_timestamps_unavailable', async () => {
    const c = CASES.find((x) => x.force_language === 'English');
    expect(c, 'a golden case forcing English').toBeDefined();
    const s = serverOf(c!);
    const ref = await reference(c!);
    const v = await client(s).audio.transcriptions.create({
      model: s.context.modelId,
      file: createReadStream(goldenPath(c!.audio)),
      language: 'en',
      response_format: 'verbose_json',
      timestamp_granularities: ['segment'],
    });
    expect(v.segments?.flatMap((g) => g.tokens)).toEqual(ref.tokens);
    expect(v.language).toBe('english');
    expect(v.words).toBeUndefined();
    expect(s.aligner).toBeUndefined();
    const err = await client(s)
      .audio.transcriptions.create({
        model: s.context.modelId,
        file: createReadStream(goldenPath(c!.audio)),
        language: 'en',
        response_format: 'verbose_json',
        timestamp_granularities: ['word', 'segment'],
      })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(APIError);
    expect((err as APIError).status).toBe(400);
    expect((err as APIError).code).toBe('word_timestamps_unavailable');
    expect((err as APIError).param).toBe('timestamp_granularities');
    expect((err as APIError).message).toContain('--aligner');
  });

  it('lists and retrieves the served model', async () => {
    const s = servers.get(MODEL_DIRS[0]!)!;
    const api = client(s);
    const list = await api.models.list();
    expect(list.data.map((m) => [m.id, m.object, m.owned_by])).toEqual([[s.context.modelId, 'model', 'rustasr']]);
    expect((await api.models.retrieve(s.context.modelId)).id).toBe(s.context.modelId);
    const err = await api.models.retrieve('whisper-1').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(APIError);
    expect((err as APIError).status).toBe(404);
    expect((err as APIError).code).toBe('model_not_found');
  });

  it('maps errors to OpenAI error bodies and status codes', async () => {
    const s = servers.get(MODEL_DIRS[0]!)!;
    const api = client(s);
    const fail = async (p: Promise<unknown>) => {
      const e = await p.then(
        () => undefined,
        (x: unknown) => x,
      );
      expect(e).toBeInstanceOf(APIError);
      return e as APIError;
    };
    const model = s.context.modelId;
    let e = await fail(api.audio.transcriptions.create({ model, file: createReadStream(join(goldenPath('models', 'tiny-a'), 'config.json')) }));
    expect([e.status, e.code, e.type, e.param]).toEqual([415, 'unsupported_audio_format', 'invalid_request_error', 'file']);
    e = await fail(api.audio.transcriptions.create({ model, file: createReadStream(WAV), language: 'xx' }));
    expect([e.status, e.code, e.param]).toEqual([400, 'unsupported_language', 'language']);
    e = await fail(api.audio.transcriptions.create({ model: 'whisper-1', file: createReadStream(WAV) }));
    expect([e.status, e.code, e.param]).toEqual([404, 'model_not_found', 'model']);
    e = await fail(api.audio.transcriptions.create({ model, file: createReadStream(WAV), response_format: 'diarized_json' }));
    expect([e.status, e.code, e.param]).toEqual([400, 'invalid_value', 'response_format']);
    e = await fail(api.audio.transcriptions.create({ model, file: createReadStream(WAV), response_format: 'srt', stream: true }));
    expect([e.status, e.code, e.param]).toEqual([400, 'invalid_value', 'stream']);
    e = await fail(api.audio.transcriptions.create({ model, file: createReadStream(WAV), response_format: 'json', timestamp_granularities: ['word'] }));
    expect([e.status, e.code]).toEqual([400, 'invalid_value']);

    // A WAV cut after 1000 bytes of its data: TRUNCATED_WAV, 400.
    const wav = await readFile(WAV);
    let r = await postForm(`${s.url}/v1/audio/transcriptions`, [{ name: 'file', filename: 'a.wav', value: wav.subarray(0, 1044) }]);
    expect([r.status, JSON.parse(r.body).error.code]).toEqual([400, 'truncated_wav']);
    r = await postForm(`${s.url}/v1/audio/transcriptions`, [{ name: 'model', value: model }]);
    expect([r.status, JSON.parse(r.body).error.code, JSON.parse(r.body).error.param]).toEqual([400, 'missing_file', 'file']);
    r = await new Promise((resolve, reject) => {
      const { req, response } = openPost(`${s.url}/v1/audio/transcriptions`, { 'content-type': 'application/json' });
      req.end('{"file":"x"}');
      response.then(readResponse).then(resolve, reject);
    });
    expect([r.status, JSON.parse(r.body).error.code]).toEqual([400, 'invalid_content_type']);
    r = await get(`${s.url}/v1/nothing`);
    expect([r.status, JSON.parse(r.body).error.code]).toEqual([404, 'not_found']);
    r = await get(`${s.url}/v1/audio/transcriptions`);
    expect([r.status, r.headers.allow, JSON.parse(r.body).error.code]).toEqual([405, 'POST', 'method_not_allowed']);
  });

  it('curl -F file=@... gets the same JSON as the SDK', async () => {
    const c = CASES[0]!;
    const s = serverOf(c);
    const ref = await reference(c);
    const { stdout } = await promisify(execFile)('curl', ['-sS', '-F', `file=@${goldenPath(c.audio)}`, '-F', `model=${s.context.modelId}`, ...Object.entries(caseFields(c)).flatMap(([k, v]) => ['-F', `${k}=${v}`]), `${s.url}/v1/audio/transcriptions`]);
    expect(JSON.parse(stdout)).toEqual({ text: ref.text, usage: { type: 'duration', seconds: ref.timings.audioSeconds } });
    const { stdout: text } = await promisify(execFile)('curl', ['-sS', '-F', `file=@${goldenPath(c.audio)}`, '-F', 'response_format=text', ...Object.entries(caseFields(c)).flatMap(([k, v]) => ['-F', `${k}=${v}`]), `${s.url}/v1/audio/transcriptions`]);
    expect(text).toBe(`${ref.text}\n`);
  });
});

describe('probes, metrics and the API key', () => {
  it('requires the Bearer key on every route but the health probes', async () => {
    const m = models.get(MODEL_DIRS[0]!)!;
    const s = await start({ model: m, apiKey: 'sk-test-123' });
    const ref = await transcribe(WAV, { model: m, maxNewTokens: MAX_NEW });
    expect((await get(`${s.url}/healthz`)).status).toBe(200);
    expect((await get(`${s.url}/readyz`)).status).toBe(200);
    for (const path of ['/v1/models', '/metrics']) {
      const none = await get(`${s.url}${path}`);
      expect([none.status, JSON.parse(none.body).error.code, none.headers['www-authenticate']]).toEqual([401, 'invalid_api_key', 'Bearer']);
      expect((await get(`${s.url}${path}`, { authorization: 'Bearer sk-test-124' })).status).toBe(401);
      expect((await get(`${s.url}${path}`, { authorization: 'Bearer sk-test-123' })).status).toBe(200);
    }
    const wrong = await client(s, 'sk-wrong').audio.transcriptions.create({ model: s.context.modelId, file: createReadStream(WAV) }).catch((e: unknown) => e);
    expect([(wrong as APIError).status, (wrong as APIError).code, (wrong as APIError).type]).toEqual([401, 'invalid_api_key', 'authentication_error']);
    const ok = await client(s, 'sk-test-123').audio.transcriptions.create({ model: s.context.modelId, file: createReadStream(WAV) });
    expect(ok.text).toBe(ref.text);
  });

  it('answers 503 while no model is loaded, and /readyz says why', async () => {
    const s = await start({ model: join(tmpdir(), 'rustasr-no-such-model-dir') });
    const ready = await get(`${s.url}/readyz`);
    expect([ready.status, JSON.parse(ready.body).status]).toEqual([503, 'failed']);
    expect((await get(`${s.url}/healthz`)).status).toBe(200);
    const r = await postForm(`${s.url}/v1/audio/transcriptions`, [{ name: 'file', filename: 'a.wav', value: await readFile(WAV) }]);
    expect([r.status, JSON.parse(r.body).error.code, JSON.parse(r.body).error.type]).toEqual([503, 'model_not_loaded', 'server_error']);
    expect(JSON.parse((await get(`${s.url}/v1/models`)).body)).toEqual({ object: 'list', data: [] });
  });

  it('exposes Prometheus metrics: requests, errors by code, audio seconds, RTF, tokens, queue depth, live objects', async () => {
    const m = models.get(MODEL_DIRS[0]!)!;
    const s = await start({ model: m });
    const ref = await transcribe(WAV, { model: m, maxNewTokens: MAX_NEW });
    const wav = await readFile(WAV);
    for (let i = 0; i < 2; i++) expect((await postForm(`${s.url}/v1/audio/transcriptions`, [{ name: 'file', filename: 'a.wav', value: wav }])).status).toBe(200);
    expect((await postForm(`${s.url}/v1/audio/transcriptions`, [{ name: 'file', filename: 'a.wav', value: Buffer.from('not a wav') }])).status).toBe(415);
    const r = await get(`${s.url}/metrics`);
    expect(r.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
    const t = r.body;
    expect(metric(t, 'rustasr_http_requests_total{route="transcriptions",status="200"}')).toBe(2);
    expect(metric(t, 'rustasr_http_requests_total{route="transcriptions",status="415"}')).toBe(1);
    expect(metric(t, 'rustasr_errors_total{code="unsupported_audio_format"}')).toBe(1);
    expect(metric(t, 'rustasr_audio_seconds_total')).toBeCloseTo(2 * ref.timings.audioSeconds, 9);
    expect(metric(t, 'rustasr_tokens_total')).toBe(2 * ref.tokens.length);
    expect(metric(t, 'rustasr_rtf_count')).toBe(2);
    expect(metric(t, 'rustasr_decode_tokens_per_second_count')).toBe(2);
    expect(metric(t, 'rustasr_queue_depth')).toBe(0);
    expect(metric(t, 'rustasr_sessions_running')).toBe(0);
    expect(metric(t, 'rustasr_native_live_objects{kind="sessions"}')).toBe(0);
    expect(t).toMatch(/^rustasr_process_resident_memory_bytes \d+/m);
  });

  it('keeps small uploads in memory and spools large ones to a private temp dir that is removed', async () => {
    const m = models.get(MODEL_DIRS[0]!)!;
    const root = await mkdtemp(join(tmpdir(), 'rustasr-spool-test-'));
    try {
      const wav = await readFile(WAV);
      const ref = await transcribe(WAV, { model: m, maxNewTokens: MAX_NEW });
      const s = await start({ model: m, tmpDir: root, memoryUploadMb: 64 / 1024 });
      // Whole requests, both sides of the threshold: same result, nothing left behind.
      const smallWav = await readFile(goldenPath('audio', 'en_1p2s.wav'));
      expect(smallWav.length).toBeLessThan(64 << 10);
      const small = await postForm(`${s.url}/v1/audio/transcriptions`, [{ name: 'file', filename: 'a.wav', value: smallWav }]);
      const smallRef = await transcribe(smallWav, { model: m, maxNewTokens: MAX_NEW });
      expect([small.status, JSON.parse(small.body).text]).toEqual([200, smallRef.text]);
      const big = await postForm(`${s.url}/v1/audio/transcriptions`, [{ name: 'file', filename: 'a.wav', value: wav }]);
      expect([big.status, JSON.parse(big.body).text]).toEqual([200, ref.text]);
      await until(async () => (await readdir(root)).length === 0 && s.gate.running === 0, 20_000, 'the spool dir removal');
      // An upload held open past the threshold: a 0700 dir holding one 0600 file, removed when the client leaves.
      const { body, contentType } = multipart([{ name: 'file', filename: 'a.wav', value: wav }]);
      const { req, response } = openPost(`${s.url}/v1/audio/transcriptions`, { 'content-type': contentType, 'content-length': body.length });
      req.write(body.subarray(0, 100_000));
      await until(async () => (await readdir(root)).length === 1 && (await readdir(join(root, (await readdir(root))[0]!))).length === 1, 20_000, 'the spool file');
      const dir = join(root, (await readdir(root))[0]!);
      expect((await stat(dir)).mode & 0o777).toBe(0o700);
      expect((await stat(join(dir, 'audio'))).mode & 0o777).toBe(0o600);
      req.destroy();
      await response.catch(() => undefined);
      await until(async () => (await readdir(root)).length === 0 && s.gate.waiting === 0, 20_000, 'the spool dir removal');
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});

describe('WebSocket upgrade dispatch (the plug point for upgrade routes)', () => {
  it('refuses unknown paths (404) and bad keys (401), hands authorised upgrades to the route; close() fires drainSignal', async () => {
    const { RustAsrServer } = await import('../src/server/index.js');
    const { HTTP_ROUTES, UPGRADE_ROUTES } = await import('../src/server/routes/index.js');
    const { connect } = await import('node:net');
    const seen: string[] = [];
    const echo = {
      name: 'test-upgrade',
      path: '/test-upgrade',
      auth: true,
      upgrade(req: import('node:http').IncomingMessage, socket: import('node:stream').Duplex, _head: Buffer, ctx: import('../src/server/index.js').ServerContext) {
        seen.push(`${req.url} ${ctx.modelId}`);
        socket.end('HTTP/1.1 101 Switching Protocols\r\nupgrade: test\r\nconnection: Upgrade\r\n\r\n');
      },
    };
    const s = new RustAsrServer({ model: models.get(MODEL_DIRS[0]!)!, port: 0, apiKey: 'k' }, { http: HTTP_ROUTES, upgrade: [...UPGRADE_ROUTES, echo] });
    await s.listen();
    await s.ready;
    extra.push(s);
    const port = Number(new URL(s.url).port);
    const raw = (path: string, key?: string) =>
      new Promise<string>((resolve, reject) => {
        const sock = connect(port, '127.0.0.1');
        let out = '';
        sock.on('data', (d) => (out += d.toString()));
        sock.on('end', () => resolve(out));
        sock.on('error', reject);
        sock.write(`GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: test\r\n${key ? `Authorization: Bearer ${key}\r\n` : ''}\r\n`);
      });
    const status = (r: string) => r.split('\r\n')[0];
    expect(status(await raw('/v1/nothing', 'k'))).toBe('HTTP/1.1 404 Not Found');
    const r401 = await raw('/test-upgrade', 'wrong');
    expect([status(r401), JSON.parse(r401.slice(r401.indexOf('\r\n\r\n') + 4)).error.code]).toEqual(['HTTP/1.1 401 Unauthorized', 'invalid_api_key']);
    expect(status(await raw('/test-upgrade?x=1', 'k'))).toBe('HTTP/1.1 101 Switching Protocols');
    expect(seen).toEqual([`/test-upgrade?x=1 ${s.context.modelId}`]);
    const closing = s.close();
    expect(s.context.drainSignal.aborted).toBe(true);
    await closing;
  });
});
