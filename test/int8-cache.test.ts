// The on-disk int8 cache (LoadModelOptions.cacheDir, model.info.int8Cache): the first int8 load quantises and
// writes `<cacheDir>/int8/<key>.rq8`, later loads map it; a stale, truncated or damaged file is rebuilt, an
// unwritable directory falls back to quantising at load. Every path must give the very same logits as
// quantising at load without a cache (cacheDir: false).
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync, truncateSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { Model } from '../src/index.js';
import { native, type NativeDevSession, type NativeModel } from '../src/native.js';
import { listCases, loadCase, type GoldenCase } from './helpers/golden.js';

const root = mkdtempSync(join(tmpdir(), 'rustasr-int8-cache-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

let golden: GoldenCase;
/** Prefill logits of the golden prompt with the decoder quantised at load and no cache. */
let reference: Float32Array;

interface LoadOpts {
  cacheDir?: string | false;
  threads?: number;
  kernel?: string;
}

/**
 * Loads `dir` as int8 through the native binding (no tokenizer: these tests feed golden ids) and returns the
 * int8Cache state, the prefill logits of the golden prompt + golden audio embeddings and 3 greedy ids after it.
 */
async function run(dir: string, opts: LoadOpts): Promise<{ state: string; logits: Float32Array; ids: number[] }> {
  const m: NativeModel = await native().loadModel(dir, { quant: 'int8', ...opts });
  try {
    expect(m.info().quant).toBe('int8');
    const s = m.createSession() as NativeDevSession;
    try {
      const pre = await s.prefill(Int32Array.from(golden.ids('input_ids')), golden.f32('audio_embeds'));
      const ids = [pre.id];
      for (let k = 0; k < 3; k++) ids.push((await s.step(ids[ids.length - 1]!)).id);
      return { state: m.info().int8Cache, logits: pre.logits, ids };
    } finally {
      s.dispose();
    }
  } finally {
    m.dispose();
  }
}

function cacheFiles(dir: string): string[] {
  try {
    return readdirSync(join(dir, 'int8')).sort();
  } catch {
    return [];
  }
}

let referenceIds: number[];
beforeAll(async () => {
  golden = await loadCase(listCases()[0]!);
  const r = await run(golden.modelDir, { cacheDir: false });
  expect(r.state).toBe('off');
  reference = r.logits;
  referenceIds = r.ids;
});

describe('int8 cache', () => {
  it('the first load writes the cache (miss), the next ones map it (hit), with identical logits', async () => {
    const dir = join(root, 'basic');
    const first = await run(golden.modelDir, { cacheDir: dir });
    expect(first.state).toBe('miss');
    const files = cacheFiles(dir);
    expect(files).toHaveLength(1);
    expect(files[0]).toMatch(/^[0-9a-f]{16}\.rq8$/); // no temporary file left behind
    const second = await run(golden.modelDir, { cacheDir: dir });
    expect(second.state).toBe('hit');
    const third = await run(golden.modelDir, { cacheDir: dir, threads: 1, kernel: 'scalar' });
    expect(third.state).toBe('hit');
    for (const r of [first, second]) {
      expect(r.logits).toEqual(reference);
      expect(r.ids).toEqual(referenceIds);
    }
    expect(cacheFiles(dir)).toEqual(files); // a hit rewrites nothing
  });

  it('bf16 and cacheDir: false neither read nor write a cache', async () => {
    const dir = join(root, 'off');
    const r = await run(golden.modelDir, { cacheDir: false });
    expect(r.state).toBe('off');
    const m = await native().loadModel(golden.modelDir, { cacheDir: dir });
    try {
      expect(m.info().quant).toBe('bf16');
      expect(m.info().int8Cache).toBe('off');
    } finally {
      m.dispose();
    }
    expect(cacheFiles(dir)).toEqual([]);
  });

  // Each damage is detected by the header or the size check, rebuilt (miss) with the reference logits, and
  // the rebuilt file is then a hit.
  const damages: [string, (file: string) => void][] = [
    ['truncated', (f) => truncateSync(f, statSync(f).size - 4096)],
    ['extended', (f) => writeFileSync(f, Buffer.alloc(64), { flag: 'a' })],
    ['empty', (f) => truncateSync(f, 0)],
    ['bad magic', (f) => patch(f, 0, 'XXXX')],
    ['another format version', (f) => patch(f, 8, '\x63')],
    ['tensor table edited', (f) => patchText(f, 'tensor thinker.', 'tensor thinkex.')],
    ['a tensor offset edited', (f) => patchText(f, ' 0 ', ' 1 ')],
    ['the whole header zeroed', (f) => patch(f, 0, '\0'.repeat(4096))],
  ];

  function patch(file: string, offset: number, text: string): void {
    const b = readFileSync(file);
    Buffer.from(text, 'latin1').copy(b, offset);
    writeFileSync(file, b);
  }
  function patchText(file: string, from: string, to: string): void {
    const b = readFileSync(file);
    const at = b.indexOf(from, 64, 'latin1');
    expect(at).toBeGreaterThan(0);
    Buffer.from(to, 'latin1').copy(b, at);
    writeFileSync(file, b);
  }

  it.each(damages)('damaged cache file (%s): rebuilt, identical logits', async (name, damage) => {
    const dir = join(root, `damage-${name.replace(/\W+/g, '-')}`);
    expect((await run(golden.modelDir, { cacheDir: dir })).state).toBe('miss');
    const [file] = cacheFiles(dir);
    damage(join(dir, 'int8', file!));
    const rebuilt = await run(golden.modelDir, { cacheDir: dir });
    expect(rebuilt.state).toBe('miss');
    expect(rebuilt.logits).toEqual(reference);
    expect(rebuilt.ids).toEqual(referenceIds);
    expect(cacheFiles(dir)).toEqual([file]);
    expect((await run(golden.modelDir, { cacheDir: dir })).state).toBe('hit');
  });

  it('a checkpoint that changed since the cache was written (new mtime) is quantised again', async () => {
    // A private model directory: the golden files linked, model.safetensors copied so its mtime can change.
    const model = join(root, 'model-copy');
    mkdirSync(model);
    for (const f of readdirSync(golden.modelDir)) {
      if (f === 'model.safetensors') copyFileSync(join(golden.modelDir, f), join(model, f));
      else symlinkSync(join(golden.modelDir, f), join(model, f));
    }
    const dir = join(root, 'stale');
    expect((await run(model, { cacheDir: dir })).state).toBe('miss');
    expect((await run(model, { cacheDir: dir })).state).toBe('hit');
    const later = new Date(Date.now() + 60_000);
    utimesSync(join(model, 'model.safetensors'), later, later);
    const r = await run(model, { cacheDir: dir });
    expect(r.state).toBe('miss');
    expect(r.logits).toEqual(reference);
    expect(cacheFiles(dir)).toHaveLength(1); // one file per model directory, rewritten in place
    expect((await run(model, { cacheDir: dir })).state).toBe('hit');
  });

  it('an unwritable cache directory falls back to quantising at load', async () => {
    // A path below a regular file can be created by nobody, root included.
    const blocker = join(root, 'not-a-directory');
    writeFileSync(blocker, 'x');
    const r = await run(golden.modelDir, { cacheDir: join(blocker, 'cache') });
    expect(r.state).toBe('unwritable');
    expect(r.logits).toEqual(reference);
    expect(r.ids).toEqual(referenceIds);
  });

  it('two loads racing on an empty cache both succeed and leave one valid file', async () => {
    const dir = join(root, 'race');
    const [a, b] = await Promise.all([run(golden.modelDir, { cacheDir: dir }), run(golden.modelDir, { cacheDir: dir })]);
    expect(['miss', 'hit']).toContain(a.state);
    expect(['miss', 'hit']).toContain(b.state);
    expect(a.logits).toEqual(reference);
    expect(b.logits).toEqual(reference);
    expect(cacheFiles(dir)).toHaveLength(1);
    expect((await run(golden.modelDir, { cacheDir: dir })).state).toBe('hit');
  });

  it('defaults to $RUSTASR_CACHE_DIR', async () => {
    const dir = join(root, 'from-env');
    const saved = process.env['RUSTASR_CACHE_DIR'];
    process.env['RUSTASR_CACHE_DIR'] = dir;
    try {
      expect((await run(golden.modelDir, {})).state).toBe('miss');
      expect(cacheFiles(dir)).toHaveLength(1);
      expect((await run(golden.modelDir, {})).state).toBe('hit');
    } finally {
      if (saved === undefined) delete process.env['RUSTASR_CACHE_DIR'];
      else process.env['RUSTASR_CACHE_DIR'] = saved;
    }
  });

  it('Model.load passes cacheDir and reports the state in info', async () => {
    const dir = join(root, 'sdk');
    for (const want of ['miss', 'hit']) {
      const m = await Model.load(golden.modelDir, { quant: 'int8', cacheDir: dir });
      try {
        expect(m.info.int8Cache).toBe(want);
      } finally {
        m.dispose();
      }
    }
  });

  it('rejects a cacheDir that is neither a non-empty string nor false', async () => {
    for (const bad of [1, true, '', {}]) {
      await expect(Model.load(golden.modelDir, { quant: 'int8', cacheDir: bad as string })).rejects.toMatchObject({ code: 'INVALID_OPTION' });
    }
    // The binding checks its argument before queuing the load, so it throws synchronously.
    expect(() => native().loadModel(golden.modelDir, { quant: 'int8', cacheDir: 1 as unknown as string })).toThrow(
      /cacheDir must be a string or false/,
    );
  });
});
