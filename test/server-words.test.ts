// Word timestamps in `rustasr serve` (ServeOptions.aligner / --aligner): verbose_json `words` with
// timestamp_granularities[]=word equal what transcribe({ timestamps: 'word' }) gives for the same file, srt/vtt
// cues equal `rustasr infer --aligner`'s, the aligner is loaded once with the model (a cached default one
// too), and without one word granularity is a 400. Models: the golden ASR models of cases/index.json and the
// forced aligners of aligner/index.json.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createReadStream, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { APIError } from 'openai';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';

import { parseServeFlags } from '../src/cli/serve.js';
import { DEFAULT_ALIGNER } from '../src/api/align.js';
import { resolveModel } from '../src/hub/resolve.js';
import { loadModel, transcribe, type Model, type TranscribeResult } from '../src/index.js';
import { native } from '../src/native.js';
import { createServer, serve, type RustAsrServer, type ServeOptions } from '../src/server/index.js';
import { formatSubtitles } from '../src/text/subtitles.js';
import { BIN, ensureDist, runCli } from './helpers/cli.js';
import { startFakeHub } from './helpers/fake-hub.js';
import { goldenPath, listCaseEntries, type GoldenIndexEntry } from './helpers/golden.js';
import { caseFields, caseOptions, client } from './helpers/serving.js';
import { get, metric, postForm, until } from './helpers/http.js';

const MAX_NEW = 16;
const CASES = listCaseEntries();
const MODEL_DIRS = [...new Set(CASES.map((c) => c.model_dir))];
/** The forced aligners of aligner/index.json (each case names its model directory). */
const ALIGNER_DIRS = [
  ...new Set((JSON.parse(readFileSync(goldenPath('aligner', 'index.json'), 'utf8')) as { cases: { model_dir: string }[] }).cases.map((c) => goldenPath(c.model_dir))),
];
/** The first aligner's support_languages (its config.json), known before any model loads. */
const ALIGNER_LANGUAGES = (JSON.parse(readFileSync(join(ALIGNER_DIRS[0]!, 'config.json'), 'utf8')) as { support_languages: string[] }).support_languages;
const scratch = mkdtempSync(join(tmpdir(), 'rustasr-server-words-'));

const models = new Map<string, Model>();
/** One aligner loaded by the test, for the references. */
let reference: Model;
/** Per ASR model: a server that loads the first aligner directory itself. */
const servers = new Map<string, RustAsrServer>();
const extra: RustAsrServer[] = [];
let base: { models: number; sessions: number; aligners: number };

beforeAll(async () => {
  ensureDist(join('cli', 'index.js'));
  expect(ALIGNER_DIRS.length).toBeGreaterThan(0);
  base = native().liveObjects();
  for (const dir of MODEL_DIRS) {
    const m = await loadModel(goldenPath(dir), { threads: 2 });
    await m.ready();
    models.set(dir, m);
  }
  reference = await loadModel(ALIGNER_DIRS[0]!, { threads: 2 });
  await reference.ready();
  for (const dir of MODEL_DIRS) {
    const s = await serve({ model: models.get(dir)!, aligner: ALIGNER_DIRS[0]!, load: { threads: 2 }, port: 0, maxNewTokens: MAX_NEW });
    await s.ready;
    servers.set(dir, s);
  }
}, 120_000);

afterAll(async () => {
  for (const s of [...servers.values(), ...extra]) await s.close();
  for (const m of models.values()) m.dispose();
  reference?.dispose();
  rmSync(scratch, { recursive: true, force: true });
  // Every model, session and aligner pass freed: the servers' own aligners too.
  expect(native().liveObjects()).toEqual(base);
});

async function start(opts: ServeOptions): Promise<RustAsrServer> {
  const s = await serve({ port: 0, maxNewTokens: MAX_NEW, ...opts });
  extra.push(s);
  return s;
}


/** Whether the aligner takes the case's forced language (any detected one is split generically). */
const alignable = (c: GoldenIndexEntry) => c.force_language === null || ALIGNER_LANGUAGES.some((l) => l.toLowerCase() === c.force_language!.toLowerCase());

const refs = new Map<string, TranscribeResult>();
/** transcribe() with word timestamps, by the SDK directly (the test's own aligner). */
async function withWords(c: GoldenIndexEntry): Promise<TranscribeResult> {
  let r = refs.get(c.case);
  if (!r) {
    r = await transcribe(goldenPath(c.audio), { model: models.get(c.model_dir)!, ...caseOptions(c, MAX_NEW), timestamps: 'word', aligner: reference });
    refs.set(c.case, r);
  }
  return r;
}

const openAiWords = (ws: readonly { text: string; start: number; end: number }[] | undefined) => (ws ?? []).map((w) => ({ word: w.text, start: w.start, end: w.end }));

describe('verbose_json with timestamp_granularities[]=word', () => {
  it.each(CASES.map((c) => [c.case, c] as const))('%s: words (overall and per segment) equal transcribe({ timestamps: "word" })', async (_n, c) => {
    const s = servers.get(c.model_dir)!;
    const req = () => ({
      model: s.context.modelId,
      file: createReadStream(goldenPath(c.audio)),
      response_format: 'verbose_json' as const,
      timestamp_granularities: ['word', 'segment'] as ('word' | 'segment')[],
      ...caseFields(c),
    });
    if (!alignable(c)) {
      const err = await client(s).audio.transcriptions.create(req()).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(APIError);
      expect([(err as APIError).status, (err as APIError).code, (err as APIError).param]).toEqual([400, 'unsupported_language', 'language']);
      return;
    }
    const ref = await withWords(c);
    expect(ref.tokens).toEqual(c.generated_ids.slice(0, MAX_NEW));
    expect(ref.words).toBeDefined();
    const v = await client(s).audio.transcriptions.create(req());
    expect(v.text).toBe(ref.text);
    expect(v.words).toEqual(openAiWords(ref.words));
    const segs = v.segments as unknown as { id: number; start: number; end: number; text: string; tokens: number[]; words: unknown }[];
    expect(segs.map((g) => ({ id: g.id, start: g.start, end: g.end, text: g.text, tokens: g.tokens, words: g.words }))).toEqual(
      ref.segments.map((g, i) => ({ id: i, start: g.start, end: g.end, text: g.text, tokens: g.tokens, words: openAiWords(g.words) })),
    );
    expect(v.words).toEqual(segs.flatMap((g) => g.words as unknown[]));
  });

  it('an aligner Model passed in is shared: it runs for word granularity and srt/vtt only, and stays loaded', async () => {
    const c = CASES.find(alignable)!;
    const s = await start({ model: models.get(c.model_dir)!, aligner: reference });
    await s.ready;
    expect(s.aligner).toBe(reference);
    const ref = await withWords(c);
    const passes = vi.spyOn(reference, 'createAligner');
    const segs = ref.segments.filter((g) => (g.words ?? []).length > 0).length;
    expect(segs).toBeGreaterThan(0);
    try {
      const ask = (extra: Record<string, unknown>) =>
        client(s).audio.transcriptions.create({ model: s.context.modelId, file: createReadStream(goldenPath(c.audio)), ...caseFields(c), ...extra } as never) as Promise<unknown>;
      // Word granularity alone gives words too.
      const only = (await ask({ response_format: 'verbose_json', timestamp_granularities: ['word'] })) as { words: unknown };
      expect(only.words).toEqual(openAiWords(ref.words));
      expect(passes).toHaveBeenCalledTimes(segs);
      passes.mockClear();
      // Without word granularity nothing changes and no aligner pass runs.
      for (const extra of [{ response_format: 'verbose_json', timestamp_granularities: ['segment'] }, { response_format: 'verbose_json' }, {}, { response_format: 'text' }]) {
        const v = (await ask(extra)) as string | { text: string; words?: unknown; segments?: Record<string, unknown>[] };
        if (typeof v === 'string') expect(v).toBe(`${ref.text}\n`);
        else {
          expect(v.text).toBe(ref.text);
          expect(v.words).toBeUndefined();
          expect((v.segments ?? []).every((g) => !('words' in g))).toBe(true);
        }
      }
      expect(passes).not.toHaveBeenCalled();
      expect(await ask({ response_format: 'vtt' })).toBe(formatSubtitles('vtt', ref.segments));
      expect(passes).toHaveBeenCalledTimes(segs);
    } finally {
      passes.mockRestore();
    }
    expect(metric((await get(`${s.url}/metrics`)).body.toString(), 'rustasr_native_live_objects{kind="aligners"}')).toBe(0);
    await s.close();
    expect(reference.disposed).toBe(false);
  });

  it('one aligner for the whole server: loaded with the model, shared by every request (also concurrent ones)', async () => {
    const c = CASES.find(alignable)!;
    const s = servers.get(c.model_dir)!;
    const a = s.aligner;
    expect(a).toBeDefined();
    expect(a!.kind).toBe('forced_aligner');
    expect(a!.dir).toBe(ALIGNER_DIRS[0]);
    const loaded = native().liveObjects().models;
    const ref = await withWords(c);
    // No model is loaded while the requests run (an aligner loaded per request would show up here).
    let most = loaded;
    const poll = setInterval(() => (most = Math.max(most, native().liveObjects().models)), 1);
    const all = await Promise.all(
      [0, 1, 2].map(() =>
        client(s).audio.transcriptions.create({
          model: s.context.modelId,
          file: createReadStream(goldenPath(c.audio)),
          response_format: 'verbose_json',
          timestamp_granularities: ['word'],
          ...caseFields(c),
        }),
      ),
    );
    clearInterval(poll);
    for (const v of all) expect(v.words).toEqual(openAiWords(ref.words));
    expect(most).toBe(loaded);
    expect(native().liveObjects().models).toBe(loaded);
    expect(s.aligner).toBe(a);
    expect(a!.disposed).toBe(false);
  });

  it('a forced language the aligner does not support is 400 unsupported_language (param language)', async () => {
    const s = servers.get(MODEL_DIRS[0]!)!;
    const asrOnly = models.get(MODEL_DIRS[0]!)!.info.supportLanguages.find((l) => !s.aligner!.info.supportLanguages.includes(l));
    expect(asrOnly, 'a language the ASR model has and the aligner lacks').toBeDefined();
    const c = CASES.find((x) => x.model_dir === MODEL_DIRS[0])!;
    const err = await client(s)
      .audio.transcriptions.create({
        model: s.context.modelId,
        file: createReadStream(goldenPath(c.audio)),
        language: asrOnly!,
        response_format: 'verbose_json',
        timestamp_granularities: ['word'],
      })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(APIError);
    expect([(err as APIError).status, (err as APIError).code, (err as APIError).param]).toEqual([400, 'unsupported_language', 'language']);
    // srt in that language still works: cue times estimated, as without an aligner.
    const srt = await client(s).audio.transcriptions.create({ model: s.context.modelId, file: createReadStream(goldenPath(c.audio)), language: asrOnly!, response_format: 'srt' });
    const plain = await transcribe(goldenPath(c.audio), { model: models.get(MODEL_DIRS[0]!)!, maxNewTokens: MAX_NEW, language: asrOnly! });
    expect(srt).toBe(formatSubtitles('srt', plain.segments));
  });
});

describe('srt and vtt with an aligner', () => {
  const runs = CASES.filter(alignable).flatMap((c) => (['srt', 'vtt'] as const).map((f) => [`${c.case} ${f}`, c, f] as const));

  it.each(runs)('%s: the cues of `rustasr infer --aligner` for the same input', async (_n, c, format) => {
    const s = servers.get(c.model_dir)!;
    const body = await client(s).audio.transcriptions.create({ model: s.context.modelId, file: createReadStream(goldenPath(c.audio)), response_format: format, ...caseFields(c) });
    const args = ['infer', goldenPath(c.audio), '-m', goldenPath(c.model_dir), '--aligner', ALIGNER_DIRS[0]!, '--format', format, '--max-new-tokens', String(MAX_NEW), '-q'];
    if (c.force_language !== null) args.push('--language', c.force_language);
    if (c.context !== '') args.push('--context', c.context);
    const cli = await runCli(args, { ...process.env, RUSTASR_OFFLINE: '1', RUSTASR_CACHE_DIR: join(scratch, 'cli-cache') });
    expect(cli.stderr).toBe('');
    expect(cli.code).toBe(0);
    expect(body).toBe(cli.stdout);
    // Word-timed cues: the SDK's segments with their words, through the same cue builder.
    const ref = await withWords(c);
    expect(ref.segments.every((g) => g.words !== undefined)).toBe(true);
    expect(body).toBe(formatSubtitles(format, ref.segments));
  });
});

describe('without an aligner, and the default one', () => {
  it('aligner: false -> word granularity is 400 word_timestamps_unavailable naming --aligner; srt/vtt as before', async () => {
    const c = CASES[0]!;
    const s = await start({ model: models.get(c.model_dir)!, aligner: false });
    await s.ready;
    expect(s.aligner).toBeUndefined();
    const r = await postForm(`${s.url}/v1/audio/transcriptions`, [
      { name: 'file', filename: 'a.wav', value: readFileSync(goldenPath(c.audio)) },
      { name: 'response_format', value: 'verbose_json' },
      { name: 'timestamp_granularities[]', value: 'word' },
    ]);
    expect(r.status).toBe(400);
    const e = (JSON.parse(r.body.toString()) as { error: { code: string; param: string; message: string; type: string } }).error;
    expect([e.code, e.param, e.type]).toEqual(['word_timestamps_unavailable', 'timestamp_granularities', 'invalid_request_error']);
    expect(e.message).toContain('--aligner');
    const plain = await transcribe(goldenPath(c.audio), { model: models.get(c.model_dir)!, ...caseOptions(c, MAX_NEW) });
    for (const f of ['srt', 'vtt'] as const) {
      expect(await client(s).audio.transcriptions.create({ model: s.context.modelId, file: createReadStream(goldenPath(c.audio)), response_format: f, ...caseFields(c) })).toBe(
        formatSubtitles(f, plain.segments),
      );
    }
  });

  it('default: Qwen/Qwen3-ForcedAligner-0.6B when it is already in the cache (never downloaded), else none', async () => {
    const hub = await startFakeHub();
    const saved = { dir: process.env['RUSTASR_CACHE_DIR'], off: process.env['RUSTASR_OFFLINE'] };
    try {
      const dir = ALIGNER_DIRS[0]!;
      hub.addRepo(DEFAULT_ALIGNER, Object.fromEntries(readdirSync(dir).map((f) => [f, readFileSync(join(dir, f))])));
      const empty = join(scratch, 'empty-cache');
      const cache = join(scratch, 'cache');
      process.env['RUSTASR_CACHE_DIR'] = empty;
      delete process.env['RUSTASR_OFFLINE'];
      const c = CASES[0]!;
      const none = await start({ model: models.get(c.model_dir)! });
      await none.ready;
      expect(none.aligner).toBeUndefined();
      expect(hub.requests).toEqual([]); // not downloaded
      const cached = await resolveModel(DEFAULT_ALIGNER, { cacheDir: cache, endpoint: hub.endpoint });
      process.env['RUSTASR_CACHE_DIR'] = cache;
      const models0 = native().liveObjects().models;
      const s = await start({ model: models.get(c.model_dir)!, load: { threads: 2 } });
      await s.ready;
      expect(s.aligner?.dir).toBe(cached);
      expect(native().liveObjects().models).toBe(models0 + 1);
      const v = await client(s).audio.transcriptions.create({
        model: s.context.modelId,
        file: createReadStream(goldenPath(c.audio)),
        response_format: 'verbose_json',
        timestamp_granularities: ['word'],
        ...caseFields(c),
      });
      if (alignable(c)) expect(v.words).toEqual(openAiWords((await withWords(c)).words));
      await s.close();
      expect(native().liveObjects().models).toBe(models0); // the server's aligner disposed at close
      const off = await start({ model: models.get(c.model_dir)!, aligner: false });
      await off.ready;
      expect(off.aligner).toBeUndefined();
    } finally {
      for (const [k, v] of [['RUSTASR_CACHE_DIR', saved.dir], ['RUSTASR_OFFLINE', saved.off]] as const) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
      await hub.close();
    }
  });

  it('an aligner that cannot be loaded fails the start (the model it loaded is disposed); bad option values throw', async () => {
    const models0 = native().liveObjects().models;
    const wrongKind = await start({ model: goldenPath(MODEL_DIRS[0]!), aligner: goldenPath(MODEL_DIRS[0]!), load: { threads: 2 } });
    await expect(wrongKind.ready).rejects.toMatchObject({ code: 'WRONG_MODEL_KIND' });
    const missing = await start({ model: goldenPath(MODEL_DIRS[0]!), aligner: join(scratch, 'nope'), load: { threads: 2 } });
    await expect(missing.ready).rejects.toMatchObject({ code: 'MODEL_NOT_FOUND' });
    expect(native().liveObjects().models).toBe(models0);
    const r = await get(`${missing.url}/readyz`);
    expect(r.status).toBe(503);
    for (const bad of ['', 42, null, {}]) {
      expect(() => createServer({ model: models.get(MODEL_DIRS[0]!)!, aligner: bad as never })).toThrow(expect.objectContaining({ code: 'INVALID_OPTION' }));
    }
  });

  it.each([
    ['--aligner DIR', true],
    ['--no-aligner', false],
  ] as const)('`rustasr serve %s`: the start-up line names the aligner; word requests get words (or the 400)', async (_n, withAligner) => {
    const c = CASES.find(alignable)!;
    const args = [BIN, 'serve', '--model', goldenPath(c.model_dir), '--port', '0', '--threads', '2', '--max-new-tokens', String(MAX_NEW)];
    args.push(...(withAligner ? ['--aligner', ALIGNER_DIRS[0]!] : ['--no-aligner']));
    const env = { ...process.env, RUSTASR_OFFLINE: '1', RUSTASR_CACHE_DIR: join(scratch, 'cli-cache') };
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'], env });
    let log = '';
    child.stderr.on('data', (d: Buffer) => (log += d.toString()));
    const exited = once(child, 'exit') as Promise<[number | null, string | null]>;
    try {
      await until(() => /ready: model/.test(log), 60_000, 'the server to be ready');
      expect(log).toContain(withAligner ? `; aligner ${ALIGNER_DIRS[0]!}\n` : '; no forced aligner (no word timestamps; --aligner DIR|ID');
      const url = /listening on (http:\/\/[^\s;]+)/.exec(log)![1]!;
      const parts = [
        { name: 'file', filename: 'a.wav', value: readFileSync(goldenPath(c.audio)) },
        { name: 'response_format', value: 'verbose_json' },
        { name: 'timestamp_granularities[]', value: 'word' },
        ...Object.entries(caseFields(c)).map(([name, value]) => ({ name, value })),
      ];
      const r = await postForm(`${url}/v1/audio/transcriptions`, parts);
      const body = JSON.parse(r.body.toString()) as { words?: unknown; error?: { code: string } };
      if (withAligner) {
        expect(r.status).toBe(200);
        expect(body.words).toEqual(openAiWords((await withWords(c)).words));
      } else {
        expect([r.status, body.error?.code]).toEqual([400, 'word_timestamps_unavailable']);
      }
      child.kill('SIGTERM');
      expect(await exited).toEqual([0, null]);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  });

  it('rustasr serve --aligner DIR | --no-aligner', () => {
    expect(parseServeFlags({ aligner: '/x/fa' }, {}).aligner).toBe('/x/fa');
    expect(parseServeFlags({ aligner: false }, {}).aligner).toBe(false);
    expect(parseServeFlags({}, {}).aligner).toBeUndefined();
    expect(() => parseServeFlags({ aligner: true }, {})).toThrow(/--aligner needs a value/);
  });
});
