// Synthetic checkpoints: the safetensors layout, official names and shapes, determinism, value sanity, and
// (when the native addon is built) that the engine accepts them.
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sade from 'sade';
import { afterAll, describe, expect, it } from 'vitest';

import { registerSynth, runSynth } from '../src/cli/synth.js';
import { RustAsrError } from '../src/errors.js';
import { writeSafetensors } from '../src/synth/safetensors-writer.js';
import {
  VARIANT_DIMS,
  checkpointTensors,
  defaultBaseDir,
  dimsOfConfig,
  fromBf16,
  initStd,
  patchConfig,
  synthCheckpoint,
  type DimsOverride,
  type TensorSpec,
} from '../src/synth/synth.js';
import { goldenPath } from './helpers/golden.js';

const BASE_DIR = defaultBaseDir();
const HAVE_BASE = existsSync(join(BASE_DIR, 'config.json'));
const TINY_A = goldenPath('models', 'tiny-a', 'model.safetensors');

/** The dims of the golden tiny-a model (and of the official names, 2 layers each). */
const TINY: DimsOverride = {
  audio: { d_model: 64, encoder_layers: 2, encoder_attention_heads: 4, encoder_ffn_dim: 128, downsample_hidden_size: 16, output_dim: 64 },
  text: { hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 16 },
};

const scratch = mkdtempSync(join(tmpdir(), 'rustasr-synth-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));
let counter = 0;
const freshDir = () => join(scratch, `m${counter++}`);

interface Entry {
  dtype: string;
  shape: number[];
  data_offsets: [number, number];
}

interface Parsed {
  headerLen: number;
  keys: string[];
  header: Record<string, unknown>;
  entries: Map<string, Entry>;
  file: Buffer;
}

function parse(path: string): Parsed {
  const file = readFileSync(path);
  const headerLen = Number(file.readBigUInt64LE(0));
  const text = file.subarray(8, 8 + headerLen).toString('utf8');
  const header = JSON.parse(text) as Record<string, unknown>;
  const entries = new Map<string, Entry>();
  for (const [k, v] of Object.entries(header)) if (k !== '__metadata__') entries.set(k, v as Entry);
  return { headerLen, keys: Object.keys(header), header, entries, file };
}

const numel = (shape: readonly number[]) => shape.reduce((p, d) => p * d, 1);

function bf16Values(p: Parsed, name: string): Uint16Array {
  const e = p.entries.get(name);
  if (!e) throw new Error(`no tensor ${name}`);
  const start = 8 + p.headerLen + e.data_offsets[0];
  const bytes = p.file.subarray(start, 8 + p.headerLen + e.data_offsets[1]);
  return new Uint16Array(new Uint8Array(bytes).buffer);
}

async function tiny(opts: { seed?: number; untied?: boolean; bufferBytes?: number } = {}): Promise<string> {
  const out = freshDir();
  await synthCheckpoint({ variant: '0.6b', out, dims: TINY, baseDir: BASE_DIR, ...opts });
  return out;
}

describe.skipIf(!HAVE_BASE)('synthCheckpoint (tiny dims)', () => {
  let dir = '';
  let parsed: Parsed;

  it('writes a well-formed safetensors file', async () => {
    dir = await tiny();
    parsed = parse(join(dir, 'model.safetensors'));
    const { headerLen, keys, entries, file, header } = parsed;
    expect((8 + headerLen) % 8).toBe(0);
    // Padding after the JSON is spaces only.
    const raw = file.subarray(8, 8 + headerLen).toString('utf8');
    expect(raw.trimEnd()).toBe(JSON.stringify(header));
    expect(keys[0]).toBe('__metadata__');
    expect(header.__metadata__).toMatchObject({ format: 'pt', rustasr_synthetic: 'true' });
    let offset = 0;
    for (const [name, e] of entries) {
      expect(e.dtype, name).toBe('BF16');
      expect(e.data_offsets[0], name).toBe(offset);
      expect(e.data_offsets[1] - e.data_offsets[0], name).toBe(numel(e.shape) * 2);
      offset = e.data_offsets[1];
    }
    expect(file.length).toBe(8 + headerLen + offset);
  });

  it('has exactly the official tensor names and shapes for these dims', () => {
    const want = checkpointTensors({ audio: { ...VARIANT_DIMS['0.6b'].audio, ...TINY.audio }, text: { ...VARIANT_DIMS['0.6b'].text, ...TINY.text } });
    expect([...parsed.entries.keys()]).toEqual(want.map((t) => t.name));
    for (const t of want) expect(parsed.entries.get(t.name)?.shape, t.name).toEqual(t.shape);
    expect(parsed.entries.has('thinker.lm_head.weight')).toBe(false);
    expect(parsed.entries.get('thinker.audio_tower.conv_out.weight')?.shape).toEqual([64, 16 * 16]);
    expect(parsed.entries.get('thinker.model.layers.1.self_attn.k_proj.weight')?.shape).toEqual([32, 64]);
  });

  it.skipIf(!existsSync(TINY_A))('matches the golden tiny-a checkpoint name for name, shape for shape (untied)', async () => {
    const golden = parse(TINY_A);
    const synth = parse(join(await tiny({ untied: true }), 'model.safetensors'));
    const shapes = (p: Parsed) => Object.fromEntries([...p.entries].map(([k, e]) => [k, [e.dtype, e.shape]]));
    expect(shapes(synth)).toEqual(shapes(golden));
  });

  it('writes values that are finite BF16 with the intended scales', () => {
    for (const name of parsed.entries.keys()) {
      const v = bf16Values(parsed, name);
      for (let i = 0; i < v.length; i++) {
        if ((v[i]! & 0x7f80) === 0x7f80) throw new Error(`${name}[${i}] is not finite (bits ${v[i]!.toString(16)})`);
      }
    }
    const stats = (name: string) => {
      const v = bf16Values(parsed, name);
      let s = 0;
      let s2 = 0;
      for (const b of v) {
        const x = fromBf16(b);
        s += x;
        s2 += x * x;
      }
      const mean = s / v.length;
      return { mean, std: Math.sqrt(s2 / v.length - mean * mean), n: v.length };
    };
    const emb = stats('thinker.model.embed_tokens.weight');
    expect(Math.abs(emb.mean)).toBeLessThan(0.001);
    expect(emb.std).toBeCloseTo(1 / 8, 2); // 1/sqrt(hidden 64)
    const fc1 = stats('thinker.audio_tower.layers.0.fc1.weight');
    expect(fc1.std / (1 / 8)).toBeGreaterThan(0.9);
    expect(fc1.std / (1 / 8)).toBeLessThan(1.1);
    const conv2 = stats('thinker.audio_tower.conv2d2.weight');
    expect(conv2.std / (1 / 12)).toBeGreaterThan(0.85); // fan_in 16 * 3 * 3
    expect(conv2.std / (1 / 12)).toBeLessThan(1.15);
    const norm = stats('thinker.model.layers.0.input_layernorm.weight');
    expect(norm.mean).toBeGreaterThan(0.98);
    expect(norm.mean).toBeLessThan(1.02);
    const bias = stats('thinker.audio_tower.layers.1.fc1.bias');
    expect(Math.abs(bias.mean)).toBeLessThan(0.01);
    expect(bias.std).toBeLessThan(0.05);
    // Different tensors of one shape get different values.
    expect(Buffer.from(bf16Values(parsed, 'thinker.model.layers.0.self_attn.o_proj.weight').buffer)).not.toEqual(
      Buffer.from(bf16Values(parsed, 'thinker.model.layers.1.self_attn.o_proj.weight').buffer),
    );
  });

  it('is deterministic per seed, whatever the staging buffer size', async () => {
    const a = readFileSync(join(dir, 'model.safetensors'));
    const b = readFileSync(join(await tiny({ bufferBytes: 1000 }), 'model.safetensors'));
    expect(b.equals(a)).toBe(true);
    const c = readFileSync(join(await tiny({ seed: 7 }), 'model.safetensors'));
    expect(c.length).toBe(a.length);
    expect(c.equals(a)).toBe(false);
    const d = readFileSync(join(await tiny({ seed: 7, bufferBytes: 4096 }), 'model.safetensors'));
    expect(d.equals(c)).toBe(true);
  });

  it('writes the patched config and copies the tokenizer files byte for byte', () => {
    const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
    const base = JSON.parse(readFileSync(join(BASE_DIR, 'config.json'), 'utf8')) as Record<string, unknown>;
    const dims = dimsOfConfig(cfg);
    expect(dims.audio).toMatchObject(TINY.audio!);
    expect(dims.text).toMatchObject(TINY.text!);
    const thinker = cfg.thinker_config as { audio_config: Record<string, unknown>; text_config: Record<string, unknown> };
    expect(thinker.audio_config.num_hidden_layers).toBe(2);
    expect((thinker.text_config.rope_scaling as { mrope_section: number[] }).mrope_section).toEqual([4, 2, 2]);
    expect(cfg.support_languages).toEqual(base.support_languages);
    expect(thinker.text_config.rope_theta).toBe(1000000);
    for (const f of ['vocab.json', 'merges.txt', 'tokenizer_config.json', 'chat_template.json', 'preprocessor_config.json', 'generation_config.json']) {
      if (!existsSync(join(BASE_DIR, f))) continue;
      expect(readFileSync(join(dir, f)).equals(readFileSync(join(BASE_DIR, f))), f).toBe(true);
    }
    expect(existsSync(join(dir, 'model.safetensors.tmp-' + process.pid))).toBe(false);
  });

  it(
    'loads in the native engine (every tensor validated by name, shape, dtype)',
    async () => {
    const { loadModel } = await import('../src/index.js');
    for (const d of [dir, await tiny({ untied: true })]) {
      const m = await loadModel(d, { threads: 1 });
      try {
        expect(m.info.hiddenSize).toBe(64);
        expect(m.info.encoderLayers).toBe(2);
        expect(m.info.decoderLayers).toBe(2);
        expect(m.info.vocabSize).toBe(151936);
      } finally {
        m.dispose();
      }
    }
  });
});

describe.skipIf(!HAVE_BASE)('the real variants (no weights written)', () => {
  it('0.6B dims equal the real config.json', () => {
    const base = JSON.parse(readFileSync(join(BASE_DIR, 'config.json'), 'utf8')) as unknown;
    expect(dimsOfConfig(base)).toEqual(VARIANT_DIMS['0.6b']);
    expect(patchConfig(base, VARIANT_DIMS['0.6b'])).toEqual(base);
  });

  it('1.7B config patches the encoder and decoder widths only', () => {
    const base = JSON.parse(readFileSync(join(BASE_DIR, 'config.json'), 'utf8')) as Record<string, unknown>;
    const cfg = patchConfig(base, VARIANT_DIMS['1.7b']);
    expect(dimsOfConfig(cfg)).toEqual(VARIANT_DIMS['1.7b']);
    const ac = (cfg.thinker_config as { audio_config: Record<string, unknown> }).audio_config;
    expect(ac).toMatchObject({ d_model: 1024, encoder_layers: 24, num_hidden_layers: 24, encoder_attention_heads: 16, encoder_ffn_dim: 4096, output_dim: 2048 });
    const tc = (cfg.thinker_config as { text_config: Record<string, unknown> }).text_config;
    expect(tc).toMatchObject({ hidden_size: 2048, intermediate_size: 6144, num_hidden_layers: 28, head_dim: 128, tie_word_embeddings: true });
    expect((tc.rope_scaling as { mrope_section: number[] }).mrope_section).toEqual([24, 20, 20]);
    expect(base).toEqual(JSON.parse(readFileSync(join(BASE_DIR, 'config.json'), 'utf8')));
  });

  it('lists 611 / 707 tensors (tied) with the expected parameter counts', () => {
    const count = (specs: TensorSpec[]) => specs.reduce((p, s) => p + numel(s.shape), 0);
    const small = checkpointTensors(VARIANT_DIMS['0.6b']);
    const big = checkpointTensors(VARIANT_DIMS['1.7b']);
    expect(small.length).toBe(611);
    expect(big.length).toBe(707);
    expect(count(small)).toBe(782_426_112);
    expect(count(big)).toBe(2_038_052_480);
    const untied = checkpointTensors(VARIANT_DIMS['1.7b'], { untied: true });
    expect(untied.at(-1)).toEqual({ name: 'thinker.lm_head.weight', shape: [151936, 2048], init: 'matrix' });
    expect(initStd(untied.at(-1)!)).toBeCloseTo(1 / Math.sqrt(2048), 8);
    expect(new Set(big.map((s) => s.name)).size).toBe(big.length);
  });
});

describe('synth errors and CLI', () => {
  it('rejects a bad variant, seed or dims, and a missing base directory', async () => {
    const expectCode = async (p: Promise<unknown>, code: string) => {
      await expect(p).rejects.toBeInstanceOf(RustAsrError);
      await expect(p).rejects.toMatchObject({ code });
    };
    const out = freshDir();
    await expectCode(synthCheckpoint({ variant: '3b' as '0.6b', out }), 'INVALID_OPTION');
    await expectCode(synthCheckpoint({ variant: '0.6b', out, seed: -1 }), 'INVALID_OPTION');
    await expectCode(synthCheckpoint({ variant: '0.6b', out, dims: { text: { hidden_size: 100 } } }), 'INVALID_OPTION');
    await expectCode(synthCheckpoint({ variant: '0.6b', out, baseDir: join(scratch, 'nowhere') }), 'MODEL_NOT_FOUND');
    await expectCode(runSynth({ variant: '0.6b', out: '', log: null }), 'INVALID_OPTION');
    expect(existsSync(out)).toBe(false);
  });

  it('the synth command reports a usage error with exit code 2', async () => {
    const prog = registerSynth(sade('rustasr'));
    const lazy = prog.parse(['node', 'rustasr', 'synth', '--variant', '2b', '--out', freshDir()], { lazy: true });
    const saved = process.exitCode;
    const writes: string[] = [];
    const orig = process.stderr.write.bind(process.stderr);
    process.stderr.write = ((chunk: string) => (writes.push(String(chunk)), true)) as typeof process.stderr.write;
    try {
      await lazy.handler(...lazy.args);
      expect(process.exitCode).toBe(2);
    } finally {
      process.stderr.write = orig;
      process.exitCode = saved;
    }
    expect(writes.join('')).toContain('INVALID_OPTION');
  });
});

describe('writeSafetensors', () => {
  it('writes mixed dtypes and odd-sized tensors contiguously, with every chunk element-aligned', async () => {
    const path = join(scratch, 'mixed.safetensors');
    const fills: [string, number, number][] = [];
    const res = await writeSafetensors(
      path,
      [
        { name: 'a', dtype: 'BF16', shape: [3], fill: (c, o) => (fills.push(['a', c.byteOffset, o]), c.fill(1)) },
        { name: 'b', dtype: 'F32', shape: [5, 7], fill: (c, o) => (fills.push(['b', c.byteOffset, o]), c.fill(2)) },
        { name: 'c', dtype: 'U8', shape: [0], fill: () => undefined },
        { name: 'd', dtype: 'BF16', shape: [41], fill: (c, o) => (fills.push(['d', c.byteOffset, o]), c.fill(3)) },
      ],
      { bufferBytes: 24, dataAlign: 64, metadata: { k: 'v' } },
    );
    const p = parse(path);
    expect((8 + p.headerLen) % 64).toBe(0);
    expect(res.bytes).toBe(statSync(path).size);
    expect(p.entries.get('a')?.data_offsets).toEqual([0, 6]);
    expect(p.entries.get('b')?.data_offsets).toEqual([6, 146]);
    expect(p.entries.get('c')?.data_offsets).toEqual([146, 146]);
    expect(p.entries.get('d')?.data_offsets).toEqual([146, 228]);
    const data = p.file.subarray(8 + p.headerLen);
    expect([...data.subarray(0, 6)].every((x) => x === 1)).toBe(true);
    expect([...data.subarray(6, 146)].every((x) => x === 2)).toBe(true);
    expect([...data.subarray(146)].every((x) => x === 3)).toBe(true);
    for (const [, byteOffset] of fills) expect(byteOffset % 8).toBe(0);
    // Each tensor's chunks cover it in order.
    expect(fills.filter((f) => f[0] === 'b').map((f) => f[2])).toEqual([0, 24, 48, 72, 96, 120]);
  });

  it('removes its temporary file when a filler throws', async () => {
    const path = join(scratch, 'fail.safetensors');
    await expect(
      writeSafetensors(path, [{ name: 'x', dtype: 'BF16', shape: [64], fill: () => { throw new Error('boom'); } }]),
    ).rejects.toThrow('boom');
    expect(existsSync(path)).toBe(false);
    expect(existsSync(`${path}.tmp-${process.pid}`)).toBe(false);
  });
});
