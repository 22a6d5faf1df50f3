// Hostile or broken model directories (issue 18): FIFOs and devices in place of every file, files over their
// size caps, preprocessor_config.json outside what the engine implements, config dimensions the weights do
// not back, overlapping tensors, integral floats, loadModel's AbortSignal, paths that are not valid UTF-8,
// the bounded context, and the int8 cache with planted FIFOs and symlinks. Each gives its typed error at once.
import { execFile, execFileSync } from 'node:child_process';
import {
  closeSync,
  copyFileSync,
  createReadStream,
  existsSync,
  ftruncateSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { loadModel, Model, RustAsrError, transcribe, transcriber } from '../src/index.js';
import { FILE_LIMITS } from '../src/hub/files.js';
import { native } from '../src/native.js';
import { buildPrompt, MAX_CONTEXT_CHARS } from '../src/text/prompt.js';
import { loadTokenizer } from '../src/text/tokenizer.js';
import { ensureDist, runCli } from './helpers/cli.js';
import { rejection } from './helpers/errors.js';
import { goldenRoot, listCaseEntries, REPO_ROOT, type GoldenIndexEntry } from './helpers/golden.js';
import { readSafetensors, withEntry, writeSafetensors, type TensorEntry } from './helpers/safetensors.js';

const source = join(goldenRoot(), 'models', 'tiny-a');
const scratch = mkdtempSync(join(tmpdir(), 'rustasr-hostile-dir-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

let counter = 0;
/** A fresh copy of tiny-a that `mutate` may break. */
function copyModel(mutate: (dir: string) => void = () => {}): string {
  const dir = join(scratch, `m${counter++}`);
  mkdirSync(dir);
  for (const f of readdirSync(source)) copyFileSync(join(source, f), join(dir, f));
  mutate(dir);
  return dir;
}

function mkfifo(p: string): void {
  rmSync(p, { force: true });
  execFileSync('mkfifo', [p]);
}

/** A sparse regular file of `size` bytes (nothing is written: refused from its size, it is never read). */
function sparse(p: string, size: number): void {
  rmSync(p, { force: true });
  const fd = openSync(p, 'w');
  ftruncateSync(fd, size);
  closeSync(fd);
}

function editJson(p: string, edit: (o: Record<string, unknown>) => void): void {
  const o = JSON.parse(readFileSync(p, 'utf8')) as Record<string, unknown>;
  edit(o);
  writeFileSync(p, JSON.stringify(o, null, 2));
}

/**
 * config.json with thinker_config.{audio,text}_config.<field> set to `raw`, written verbatim (64.0, 4e6, 1e300 stay
 * as they are, which JSON.stringify would not keep).
 */
function withConfigField(field: string, raw: string): string {
  // num_hidden_layers is also an (unused) audio_config field: the text decoder's fields name their section.
  const TEXT_FIELDS = ['num_hidden_layers', 'vocab_size', 'hidden_size', 'rope_theta'];
  const section = TEXT_FIELDS.includes(field) ? 'text_config' : 'audio_config';
  return copyModel((d) => {
    const p = join(d, 'config.json');
    const cfg = JSON.parse(readFileSync(p, 'utf8')) as { thinker_config: Record<string, Record<string, unknown>> };
    if (!(field in (cfg.thinker_config[section] ?? {}))) throw new Error(`config has no ${section}.${field}`);
    (cfg.thinker_config[section] as Record<string, unknown>)[field] = '__RAW__';
    writeFileSync(p, JSON.stringify(cfg, null, 2).replace('"__RAW__"', raw));
  });
}

async function loadError(dir: string | Buffer, opts: Parameters<typeof loadModel>[1] = {}): Promise<RustAsrError> {
  return rejection(
    (async () => {
      const m = await loadModel(dir, { threads: 1, ...opts });
      try {
        await m.ready();
      } finally {
        m.dispose();
      }
    })(),
  );
}

/** Waits until the addon's live models/sessions are back to `models` (a late native load is freed when it lands). */
async function liveModelsReach(models: number): Promise<void> {
  for (let i = 0; i < 200 && native().liveObjects().models !== models; i++) await new Promise((r) => setTimeout(r, 25));
  expect(native().liveObjects().models).toBe(models);
}

describe('FIFOs, devices and huge files in a model directory', () => {
  const files = [
    'config.json',
    'model.safetensors',
    'model.safetensors.index.json',
    'preprocessor_config.json',
    'generation_config.json',
    'vocab.json',
    'merges.txt',
    'tokenizer_config.json',
  ];

  it.each(files)('a FIFO named %s is IO_ERROR at once, naming it', async (name) => {
    const dir = copyModel((d) => mkfifo(join(d, name)));
    const t0 = Date.now();
    const e = await loadError(dir);
    expect(e.code).toBe('IO_ERROR');
    expect(e.message).toContain(`${name} is not a regular file (a FIFO)`);
    expect(Date.now() - t0).toBeLessThan(10_000);
  });

  it.each(files.filter((f) => f !== 'model.safetensors'))('%s symlinked to /dev/zero is IO_ERROR (a character device), nothing read', async (name) => {
    const dir = copyModel((d) => {
      rmSync(join(d, name), { force: true });
      symlinkSync('/dev/zero', join(d, name));
    });
    const rss0 = process.memoryUsage().rss;
    const e = await loadError(dir);
    expect(e.code).toBe('IO_ERROR');
    expect(e.message).toContain('a character device');
    expect(process.memoryUsage().rss - rss0).toBeLessThan(200 * 1024 * 1024);
  });

  it.each([
    ['config.json', FILE_LIMITS.json, 'INVALID_CONFIG'],
    ['preprocessor_config.json', FILE_LIMITS.json, 'INVALID_CONFIG'],
    ['model.safetensors.index.json', FILE_LIMITS.index, 'CORRUPT_WEIGHTS'],
    ['generation_config.json', FILE_LIMITS.json, 'INVALID_CONFIG'],
    ['vocab.json', FILE_LIMITS.tokenizer, 'INVALID_TOKENIZER'],
    ['merges.txt', FILE_LIMITS.tokenizer, 'INVALID_TOKENIZER'],
    ['tokenizer_config.json', FILE_LIMITS.json, 'INVALID_TOKENIZER'],
  ] as const)('%s one byte over its cap (%i bytes) is %s from its size', async (name, cap, code) => {
    const dir = copyModel((d) => sparse(join(d, name), cap + 1));
    const e = await loadError(dir);
    expect(e.code).toBe(code);
    expect(e.message).toContain(`${cap + 1} bytes is over the ${cap}-byte limit`);
  });

  it('the tokenizer refuses a FIFO vocab.json by itself too (loadTokenizer)', async () => {
    const dir = copyModel((d) => mkfifo(join(d, 'vocab.json')));
    const e = await rejection(loadTokenizer(dir));
    expect(e.code).toBe('IO_ERROR');
  });

  it('a process that met FIFOs in a model directory exits by itself', async () => {
    ensureDist('index.js');
    const dir = copyModel((d) => {
      for (const f of ['preprocessor_config.json', 'generation_config.json', 'vocab.json']) mkfifo(join(d, f));
    });
    const script =
      `import { loadModel } from ${JSON.stringify(pathToFileURL(join(REPO_ROOT, 'dist', 'index.js')).href)};` +
      `try { await loadModel(${JSON.stringify(dir)}, { threads: 1 }); console.log('loaded'); } catch (e) { console.log(e.code); }`;
    const out = await new Promise<{ code: number | null; stdout: string }>((resolve) => {
      const child = execFile(process.execPath, ['--input-type=module', '-e', script], { timeout: 30_000 }, (err, stdout) =>
        resolve({ code: err ? ((err as { code?: number }).code ?? -1) : 0, stdout }),
      );
      child.stdin?.end();
    });
    expect(out).toEqual({ code: 0, stdout: 'IO_ERROR\n' });
  });
});

describe('preprocessor_config.json is held to the official processor', () => {
  it.each([
    ['n_fft', 20014, 'n_fft'],
    ['n_fft', 2 ** 28, 'n_fft'],
    ['hop_length', 1, 'hop_length'],
    ['sampling_rate', 2, 'sampling_rate'],
    ['sampling_rate', 8000, 'sampling_rate'],
    ['feature_size', 80, 'feature_size'],
    ['n_fft', '400', 'expected an integer'],
    ['hop_length', 160.5, 'expected an integer'],
  ])('%s = %j is INVALID_CONFIG', async (field, value, mention) => {
    const dir = copyModel((d) => editJson(join(d, 'preprocessor_config.json'), (o) => (o[field] = value)));
    const rss0 = process.memoryUsage().rss;
    const e = await loadError(dir);
    expect(e.code).toBe('INVALID_CONFIG');
    expect(e.message).toContain('preprocessor_config.json');
    expect(e.message).toContain(mention);
    expect(process.memoryUsage().rss - rss0).toBeLessThan(200 * 1024 * 1024);
  });

  it('the official values, as integers or integral floats, load (sampling_rate 16000, n_fft 400.0)', async () => {
    const dir = copyModel((d) => {
      const p = join(d, 'preprocessor_config.json');
      editJson(p, (o) => (o['sampling_rate'] = 16000));
      writeFileSync(p, readFileSync(p, 'utf8').replace(/"n_fft": 400/, '"n_fft": 400.0'));
    });
    const m = await loadModel(dir, { threads: 1 });
    expect(m.info.sampleRate).toBe(16000);
    expect(m.info.hopLength).toBe(160);
    m.dispose();
  });

  it('a preprocessor_config.json that is not an object is INVALID_CONFIG', async () => {
    const dir = copyModel((d) => writeFileSync(join(d, 'preprocessor_config.json'), '[400]'));
    expect((await loadError(dir)).code).toBe('INVALID_CONFIG');
  });
});

describe('config.json dimensions are checked before anything is sized by them', () => {
  it.each([
    ['encoder_layers', '1000000', 'encoder_layers'],
    ['encoder_layers', '4e6', 'encoder_layers'],
    ['encoder_layers', '2147483647', 'encoder_layers'],
    ['encoder_layers', '3', 'encoder_layers is 3, but the weights hold 2'],
    ['num_hidden_layers', '3', 'num_hidden_layers is 3, but the weights hold 2'],
    ['num_hidden_layers', '1000000', 'num_hidden_layers'],
    ['vocab_size', '4000000000', 'vocab_size'],
    ['hidden_size', '64.5', 'got 64.5 (not an integer)'],
    ['n_window_infer', '1e300', 'n_window_infer'],
    ['num_mel_bins', '80', 'num_mel_bins'],
    ['rope_theta', '1e300', 'rope_theta'],
  ])('%s = %s is INVALID_CONFIG, with no large allocation', async (field, value, mention) => {
    const rss0 = process.memoryUsage().rss;
    const t0 = Date.now();
    const e = await loadError(withConfigField(field, value));
    expect(e.code).toBe('INVALID_CONFIG');
    expect(e.message).toContain(mention);
    expect(process.memoryUsage().rss - rss0).toBeLessThan(200 * 1024 * 1024);
    expect(Date.now() - t0).toBeLessThan(10_000);
  });

  it('integral floats are integers: hidden_size 64.0 and encoder_layers 2.0 load', async () => {
    const dir = copyModel((d) => {
      const p = join(d, 'config.json');
      writeFileSync(p, readFileSync(p, 'utf8').replace(/"hidden_size": 64\b/g, '"hidden_size": 64.0').replace(/"encoder_layers": 2\b/, '"encoder_layers": 2.0'));
    });
    expect(readFileSync(join(dir, 'config.json'), 'utf8')).toContain('"hidden_size": 64.0');
    const m = await loadModel(dir, { threads: 1 });
    expect(m.info.hiddenSize).toBe(64);
    expect(m.info.encoderLayers).toBe(2);
    m.dispose();
  });
});

it('threads above 4096 is INVALID_OPTION before any thread starts', async () => {
  for (const threads of [4097, 2 ** 31 - 1]) expect((await loadError(source, { threads })).code).toBe('INVALID_OPTION');
});

describe('overlapping tensors', () => {
  it('data_offsets that overlap another tensor are CORRUPT_WEIGHTS naming both', async () => {
    const dir = copyModel((d) => {
      const p = join(d, 'model.safetensors');
      const parts = readSafetensors(p);
      const names = Object.keys(parts.header).filter((n) => n !== '__metadata__');
      // Two tensors of the same byte size: the second made to alias the first's bytes exactly.
      const size = (n: string) => (parts.header[n] as TensorEntry).data_offsets[1] - (parts.header[n] as TensorEntry).data_offsets[0];
      const a = names.find((n) => names.some((m) => m !== n && size(m) === size(n) && size(n) > 0)) as string;
      const b = names.find((m) => m !== a && size(m) === size(a)) as string;
      writeSafetensors(p, withEntry(parts, b, { data_offsets: (parts.header[a] as TensorEntry).data_offsets }));
    });
    const e = await loadError(dir);
    expect(e.code).toBe('CORRUPT_WEIGHTS');
    expect(e.message).toContain('overlap');
  });
});

describe('loadModel with an AbortSignal', () => {
  it('an aborted signal rejects with ABORTED before any native work', async () => {
    const ac = new AbortController();
    ac.abort();
    const before = native().liveObjects().models;
    const e = await loadError(source, { signal: ac.signal });
    expect(e.code).toBe('ABORTED');
    expect(e.name).toBe('AbortError');
    expect(native().liveObjects().models).toBe(before);
  });

  it('an abort during the load rejects at once; the native model that lands later is freed', async () => {
    const before = native().liveObjects().models;
    const ac = new AbortController();
    const p = loadModel(source, { threads: 1, signal: ac.signal });
    ac.abort();
    const e = await rejection(p);
    expect(e.code).toBe('ABORTED');
    await liveModelsReach(before);
  });

  it('a signal that is not an AbortSignal is INVALID_OPTION', async () => {
    expect((await loadError(source, { signal: 'stop' as unknown as AbortSignal })).code).toBe('INVALID_OPTION');
  });
});

describe('paths that are not valid UTF-8', () => {
  const bad = Buffer.concat([Buffer.from(join(scratch, 'caf')), Buffer.from([0xe9]), Buffer.from('-model')]); // Latin-1 "café"
  let shortest: GoldenIndexEntry;

  beforeAll(() => {
    mkdirSync(bad);
    for (const f of readdirSync(source)) copyFileSync(join(source, f), Buffer.concat([bad, Buffer.from(`/${f}`)]));
    shortest = listCaseEntries()
      .filter((c) => c.model === 'tiny-a' && c.force_language === null && c.context === '')
      .sort((x, y) => x.n_samples - y.n_samples)[0] as GoldenIndexEntry;
  });

  it('a model directory given as a Buffer loads, tokenizer included', async () => {
    const m = await (await loadModel(bad, { threads: 1 })).ready();
    expect(m.info.vocabSize).toBe(151936);
    expect(m.dir).toBe(bad.toString('utf8'));
    m.dispose();
  });

  it('the same name as a (lossily decoded) string is MODEL_NOT_FOUND saying why', async () => {
    const e = await loadError(bad.toString('utf8'));
    expect(e.code).toBe('MODEL_NOT_FOUND');
    expect(e.message).toContain('not valid UTF-8');
  });

  it('a WAV file so named is transcribed from fs.createReadStream(Buffer); as a lossy string the error says why', async () => {
    const wav = Buffer.concat([Buffer.from(join(scratch, 'sp')), Buffer.from([0xe9]), Buffer.from('ech.wav')]);
    copyFileSync(join(goldenRoot(), shortest.audio), wav);
    const n = Math.min(8, shortest.generated_ids.length);
    const r = await transcribe(createReadStream(wav), { model: source, maxNewTokens: n, threads: 1 });
    expect(r.tokens).toEqual(shortest.generated_ids.slice(0, n));
    const e = await rejection(transcribe(wav.toString('utf8'), { model: source, maxNewTokens: 1, threads: 1 }));
    expect(e.code).toBe('IO_ERROR');
    expect(e.message).toContain('not valid UTF-8');
  });

  it('a Buffer or string path with a NUL byte is INVALID_OPTION', async () => {
    expect((await loadError(Buffer.from('/tmp/a\0b'))).code).toBe('INVALID_OPTION');
    expect((await loadError('/tmp/a\0b')).code).toBe('INVALID_OPTION');
  });
});

describe('the context is bounded', () => {
  it(`buildPrompt accepts ${MAX_CONTEXT_CHARS} characters and refuses one more`, async () => {
    const tok = await loadTokenizer(source);
    expect(buildPrompt(tok, { context: 'a'.repeat(MAX_CONTEXT_CHARS), audioTokens: 4 }).ids.length).toBeGreaterThan(4);
    let err: unknown;
    try {
      buildPrompt(tok, { context: 'a'.repeat(MAX_CONTEXT_CHARS + 1), audioTokens: 4 });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(RustAsrError);
    expect((err as RustAsrError).code).toBe('INVALID_OPTION');
    expect((err as RustAsrError).message).toContain(`limit is ${MAX_CONTEXT_CHARS}`);
  });

  it('a transcriber with a 120 KB context fails with INVALID_OPTION before loading any model', async () => {
    const t = transcriber({ model: join(scratch, 'no-such-model'), context: 'x'.repeat(120_000) });
    const e = await rejection(
      new Promise((_resolve, reject) => {
        t.on('error', reject);
        t.resume();
      }),
    );
    expect(e.code).toBe('INVALID_OPTION');
    expect(e.message).toContain('context');
  });

  it('rustasr infer --context of 120 KB is exit 2 at once', async () => {
    ensureDist('cli/index.js');
    const r = await runCli(['infer', join(scratch, 'none.wav'), '--model', source, '--context', 'x'.repeat(120_000)], { ...process.env, RUSTASR_OFFLINE: '1' });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`limit is ${MAX_CONTEXT_CHARS}`);
  });
});

describe('the int8 cache with planted files', () => {
  it('a FIFO or a symlink in place of the cache file is replaced, never opened through; a symlinked int8/ is not written', async () => {
    const cacheDir = join(scratch, `int8-cache${counter++}`);
    const first = await loadModel(source, { threads: 1, quant: 'int8', cacheDir });
    expect(first.info.int8Cache).toBe('miss');
    first.dispose();
    const [file] = readdirSync(join(cacheDir, 'int8')).filter((f) => f.endsWith('.rq8'));
    const path = join(cacheDir, 'int8', file as string);

    mkfifo(path);
    const viaFifo = await loadModel(source, { threads: 1, quant: 'int8', cacheDir });
    expect(viaFifo.info.int8Cache).toBe('miss');
    viaFifo.dispose();

    const outside = join(scratch, `outside-int8-${counter++}`);
    writeFileSync(outside, 'outside');
    rmSync(path);
    symlinkSync(outside, path);
    const viaLink = await loadModel(source, { threads: 1, quant: 'int8', cacheDir });
    expect(viaLink.info.int8Cache).toBe('miss');
    viaLink.dispose();
    expect(readFileSync(outside, 'utf8')).toBe('outside');
    const again = await loadModel(source, { threads: 1, quant: 'int8', cacheDir });
    expect(again.info.int8Cache).toBe('hit');
    again.dispose();

    const linkedCache = join(scratch, `int8-linked${counter++}`);
    const target = join(scratch, `int8-target${counter++}`);
    mkdirSync(linkedCache);
    mkdirSync(target);
    symlinkSync(target, join(linkedCache, 'int8'));
    const m = await loadModel(source, { threads: 1, quant: 'int8', cacheDir: linkedCache });
    expect(m.info.int8Cache).toBe('unwritable');
    m.dispose();
    expect(readdirSync(target)).toEqual([]);
    expect(existsSync(join(linkedCache, 'int8'))).toBe(true);
  });
});

it('Model.load is the same entry point (a FIFO config.json through Model.load)', async () => {
  const dir = copyModel((d) => mkfifo(join(d, 'config.json')));
  const e = await rejection(Model.load(dir, { threads: 1 }));
  expect(e.code).toBe('IO_ERROR');
});
