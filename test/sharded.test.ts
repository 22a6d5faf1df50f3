// A checkpoint split into shards (model.safetensors.index.json) loads and computes exactly what the
// single-file checkpoint computes; thread count does not change the golden parity either.
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

import { Model } from '../src/index.js';
import { devSession } from './helpers/dev.js';
import { listCases, loadCase } from './helpers/golden.js';
import { readSafetensors, writeSafetensors, type SafetensorsParts, type TensorEntry } from './helpers/safetensors.js';

const scratch = mkdtempSync(join(tmpdir(), 'rustasr-sharded-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** Writes `dir` as a copy of `source` whose weights are split into two shards plus an index. */
function shardCopy(source: string, dir: string): void {
  for (const f of readdirSync(source)) if (f !== 'model.safetensors') copyFileSync(join(source, f), join(dir, f));
  const parts = readSafetensors(join(source, 'model.safetensors'));
  const names = Object.keys(parts.header).filter((n) => n !== '__metadata__');
  const shards: [string, string[]][] = [
    ['model-00001-of-00002.safetensors', names.filter((_, i) => i % 2 === 0)],
    ['model-00002-of-00002.safetensors', names.filter((_, i) => i % 2 === 1)],
  ];
  const weightMap: Record<string, string> = {};
  for (const [file, members] of shards) {
    const header: SafetensorsParts['header'] = {};
    const chunks: Buffer[] = [];
    let offset = 0;
    for (const n of members) {
      const e = parts.header[n] as TensorEntry;
      const bytes = parts.data.subarray(e.data_offsets[0], e.data_offsets[1]);
      header[n] = { dtype: e.dtype, shape: e.shape, data_offsets: [offset, offset + bytes.length] };
      chunks.push(bytes);
      offset += bytes.length;
      weightMap[n] = file;
    }
    writeSafetensors(join(dir, file), { header, data: Buffer.concat(chunks) });
  }
  writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
}

describe('sharded checkpoints and thread counts', () => {
  const name = listCases()[0]!;

  it('a two-shard copy gives bit-identical prefill logits and decode ids', async () => {
    const c = await loadCase(name);
    const dir = join(scratch, 'sharded');
    mkdirSync(dir);
    shardCopy(c.modelDir, dir);
    const ids = Int32Array.from(c.ids('input_ids'));
    const embeds = c.f32('audio_embeds');
    const run = async (modelDir: string) => {
      const model = await Model.load(modelDir, { threads: 2 });
      const s = devSession(model);
      try {
        const pre = await s.prefill(ids, embeds);
        const next = await s.step(pre.id);
        return { logits: pre.logits, next: next.id };
      } finally {
        s.dispose();
        model.dispose();
      }
    };
    const single = await run(c.modelDir);
    const sharded = await run(dir);
    expect(sharded.next).toBe(single.next);
    expect(Buffer.from(sharded.logits.buffer).equals(Buffer.from(single.logits.buffer))).toBe(true);
  });

  it('one thread and two threads agree on the prefill logits', async () => {
    const c = await loadCase(name);
    const ids = Int32Array.from(c.ids('input_ids'));
    const embeds = c.f32('audio_embeds');
    const logits: Float32Array[] = [];
    for (const threads of [1, 2]) {
      const model = await Model.load(c.modelDir, { threads });
      expect(model.info.threads).toBe(threads);
      const s = devSession(model);
      logits.push((await s.prefill(ids, embeds)).logits);
      s.dispose();
      model.dispose();
    }
    let maxDiff = 0;
    let scale = 0;
    for (let i = 0; i < logits[0]!.length; i++) {
      maxDiff = Math.max(maxDiff, Math.abs(logits[0]![i]! - logits[1]![i]!));
      scale = Math.max(scale, Math.abs(logits[0]![i]!));
    }
    expect(maxDiff / scale).toBeLessThanOrEqual(1e-6);
  });
});
