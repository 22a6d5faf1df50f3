// A broken model directory gives a typed error with a stable code that names the problem.
import { copyFileSync, mkdtempSync, readdirSync, rmSync, writeFileSync, readFileSync, truncateSync, statSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

import { loadModel, RustAsrError } from '../src/index.js';
import { goldenRoot } from './helpers/golden.js';
import { readSafetensors, withEntry, withoutTensor, writeSafetensors, type TensorEntry } from './helpers/safetensors.js';

const source = join(goldenRoot(), 'models', 'tiny-a');
const scratch = mkdtempSync(join(tmpdir(), 'rustasr-model-errors-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

let counter = 0;
/** A fresh copy of tiny-a that `mutate` may break. */
function brokenCopy(mutate: (dir: string) => void): string {
  const dir = join(scratch, `m${counter++}`);
  mkdirSync(dir);
  for (const f of readdirSync(source)) copyFileSync(join(source, f), join(dir, f));
  mutate(dir);
  return dir;
}

async function loadError(dir: string): Promise<RustAsrError> {
  try {
    const m = await loadModel(dir, { threads: 1 });
    m.dispose();
  } catch (err) {
    expect(err).toBeInstanceOf(RustAsrError);
    return err as RustAsrError;
  }
  throw new Error(`loading ${dir} unexpectedly succeeded`);
}

describe('model loading errors', () => {
  it('loads the intact copy', async () => {
    const m = await loadModel(brokenCopy(() => {}), { threads: 1 });
    expect(m.info.vocabSize).toBe(151936);
    m.dispose();
  });

  it('a missing directory is MODEL_NOT_FOUND', async () => {
    const e = await loadError(join(scratch, 'does-not-exist'));
    expect(e.code).toBe('MODEL_NOT_FOUND');
  });

  it('a missing weights file is MODEL_NOT_FOUND', async () => {
    const e = await loadError(brokenCopy((d) => rmSync(join(d, 'model.safetensors'))));
    expect(e.code).toBe('MODEL_NOT_FOUND');
    expect(e.message).toContain('model.safetensors');
  });

  it('a missing tensor is MISSING_TENSOR naming it', async () => {
    const name = 'thinker.model.layers.1.mlp.up_proj.weight';
    const e = await loadError(
      brokenCopy((d) => {
        const p = join(d, 'model.safetensors');
        writeSafetensors(p, withoutTensor(readSafetensors(p), name));
      }),
    );
    expect(e.code).toBe('MISSING_TENSOR');
    expect(e.message).toContain(name);
  });

  it('an untied model without lm_head is MISSING_TENSOR', async () => {
    const e = await loadError(
      brokenCopy((d) => {
        const p = join(d, 'model.safetensors');
        writeSafetensors(p, withoutTensor(readSafetensors(p), 'thinker.lm_head.weight'));
      }),
    );
    expect(e.code).toBe('MISSING_TENSOR');
    expect(e.message).toContain('thinker.lm_head.weight');
  });

  it('a wrong shape is TENSOR_SHAPE naming the tensor and both shapes', async () => {
    const name = 'thinker.audio_tower.layers.0.fc2.weight'; // [64, 128] -> [128, 64], same byte size
    const e = await loadError(
      brokenCopy((d) => {
        const p = join(d, 'model.safetensors');
        const parts = readSafetensors(p);
        const shape = (parts.header[name] as TensorEntry).shape;
        writeSafetensors(p, withEntry(parts, name, { shape: [shape[1]!, shape[0]!] }));
      }),
    );
    expect(e.code).toBe('TENSOR_SHAPE');
    expect(e.message).toContain(name);
    expect(e.message).toContain('128, 64');
  });

  it('an unsupported dtype is UNSUPPORTED_DTYPE naming the tensor', async () => {
    const name = 'thinker.model.norm.weight'; // BF16 [64] = 128 bytes = I16 [64]
    const e = await loadError(
      brokenCopy((d) => {
        const p = join(d, 'model.safetensors');
        writeSafetensors(p, withEntry(readSafetensors(p), name, { dtype: 'I16' }));
      }),
    );
    expect(e.code).toBe('UNSUPPORTED_DTYPE');
    expect(e.message).toContain(name);
  });

  it('an unknown dtype string is UNSUPPORTED_DTYPE naming it', async () => {
    const name = 'thinker.model.norm.weight';
    const e = await loadError(
      brokenCopy((d) => {
        const p = join(d, 'model.safetensors');
        writeSafetensors(p, withEntry(readSafetensors(p), name, { dtype: 'BF17' }));
      }),
    );
    expect(e.code).toBe('UNSUPPORTED_DTYPE');
    expect(e.message).toContain('BF17');
  });

  it('a truncated weights file is CORRUPT_WEIGHTS', async () => {
    const e = await loadError(
      brokenCopy((d) => {
        const p = join(d, 'model.safetensors');
        truncateSync(p, statSync(p).size - 4096);
      }),
    );
    expect(e.code).toBe('CORRUPT_WEIGHTS');
  });

  it('a header whose offsets point outside the file is CORRUPT_WEIGHTS naming the tensor', async () => {
    const name = 'thinker.audio_tower.conv2d1.bias';
    const e = await loadError(
      brokenCopy((d) => {
        const p = join(d, 'model.safetensors');
        const parts = readSafetensors(p);
        const end = parts.data.length;
        writeSafetensors(p, withEntry(parts, name, { data_offsets: [end, end + 32] }));
      }),
    );
    expect(e.code).toBe('CORRUPT_WEIGHTS');
    expect(e.message).toContain(name);
  });

  it('a header length beyond the file is CORRUPT_WEIGHTS', async () => {
    const e = await loadError(
      brokenCopy((d) => {
        const p = join(d, 'model.safetensors');
        const buf = readFileSync(p);
        buf.writeBigUInt64LE(BigInt(buf.length) * 2n, 0);
        writeFileSync(p, buf);
      }),
    );
    expect(e.code).toBe('CORRUPT_WEIGHTS');
  });

  it('malformed config JSON is INVALID_CONFIG', async () => {
    const e = await loadError(
      brokenCopy((d) => {
        const p = join(d, 'config.json');
        writeFileSync(p, readFileSync(p, 'utf8').slice(0, 200));
      }),
    );
    expect(e.code).toBe('INVALID_CONFIG');
  });

  it('a config missing a dimension is INVALID_CONFIG naming the field', async () => {
    const e = await loadError(
      brokenCopy((d) => {
        const p = join(d, 'config.json');
        const cfg = JSON.parse(readFileSync(p, 'utf8')) as { thinker_config: { text_config: Record<string, unknown> } };
        delete cfg.thinker_config.text_config.hidden_size;
        writeFileSync(p, JSON.stringify(cfg));
      }),
    );
    expect(e.code).toBe('INVALID_CONFIG');
    expect(e.message).toContain('hidden_size');
  });

  it('a missing tokenizer file is MODEL_NOT_FOUND naming it', async () => {
    const e = await loadError(brokenCopy((d) => rmSync(join(d, 'vocab.json'))));
    expect(e.code).toBe('MODEL_NOT_FOUND');
    expect(e.message).toContain('vocab.json');
  });
});
