// int8 weights (LoadModelOptions.quant = 'int8') against the golden cases.
//
// The decoder's linear weights and lm_head are quantised at load (symmetric int8, one float32 scale per 128
// columns), so the logits drift from the BF16 golden by far more than float32 rounding; the tolerance below
// is the int8 budget documented in docs/performance.md ("int8"): 1.5x the largest drift measured on the
// golden set (1.3e-2 on the prefill logits of tiny-a__en_1p2s; the kernels differ from each other by ~1e-6). Every case is checked on every CPU kernel, like the golden suite:
//   * prefill logits (golden prompt ids + golden audio embeddings): max |ours - golden| / max |golden|
//     <= INT8_LOGITS_TOL, and the argmax equal;
//   * the 16 decode steps, fed the golden ids (teacher forcing): the logits at the golden subset columns
//     within INT8_LOGITS_TOL (relative to max |prefill logits|), and each step's argmax equal to the golden
//     id wherever the golden margin allows it. Rule: step k is decided when
//         greedy.margins_top1_minus_top2[k] > 2 * INT8_LOGITS_TOL * greedy.logit_maxabs_per_step[k]
//     (the top-2 order can only flip if the two logits move towards each other by the whole margin, and each
//     moves by at most INT8_LOGITS_TOL * maxabs); a step that is not decided is reported, not asserted;
//   * wav -> 16 greedy ids end to end (free-running): identical to the golden ids when every step is
//     decided (after the first undecided step, the ids may legitimately differ).
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

import { Model, decodeWav } from '../src/index.js';
import { nativeDev } from '../src/native.js';
import { synthCheckpoint } from '../src/synth/synth.js';
import { buildPrompt } from '../src/text/prompt.js';
import { goldenPath } from './helpers/golden.js';
import { listCases, loadCase, type GoldenCase } from './helpers/golden.js';
import { greedyIds, maxAbs, maxAbsDiff, withSession } from './helpers/parity.js';

/** Documented int8 logit tolerance: max |int8 - golden| / max |golden prefill logits|. */
const INT8_LOGITS_TOL = 0.02;

// A private int8 cache (test/int8-cache.test.ts covers it): the first load of a model quantises and writes
// it, the later ones (other kernels) map it, so both paths are held to the golden budget below.
const cacheDir = mkdtempSync(join(tmpdir(), 'rustasr-int8-test-'));
const models = new Map<string, Promise<Model>>();
function int8Model(c: GoldenCase, kernel = 'auto'): Promise<Model> {
  const key = `${c.modelDir}#${kernel}`;
  let m = models.get(key);
  if (!m) {
    m = Model.load(c.modelDir, { kernel: kernel as 'auto', quant: 'int8', cacheDir });
    models.set(key, m);
  }
  return m;
}
afterAll(async () => {
  for (const m of models.values()) (await m).dispose();
  rmSync(cacheDir, { recursive: true, force: true });
});

/** Steps whose golden top-1 / top-2 margin exceeds twice the int8 logit budget. */
function decidedSteps(c: GoldenCase): boolean[] {
  const g = c.json.greedy;
  const maxabs = g['logit_maxabs_per_step'] as number[];
  return g.margins_top1_minus_top2.map((m, k) => m > 2 * INT8_LOGITS_TOL * maxabs[k]!);
}

async function checkPrefillAndSteps(model: Model, c: GoldenCase): Promise<void> {
  const golden = c.json.greedy.generated_ids;
  const decided = decidedSteps(c);
  const cols = c.ids('decode_logits_subset_ids');
  const refSubset = c.f32('decode_logits_subset');
  await withSession(model, async (s) => {
    const pre = await s.prefill(Int32Array.from(c.ids('input_ids')), c.f32('audio_embeds'));
    const refLogits = c.f32('prefill_logits');
    const scale = maxAbs(refLogits);
    expect(maxAbsDiff(pre.logits, refLogits) / scale, 'prefill logits').toBeLessThanOrEqual(INT8_LOGITS_TOL);
    if (decided[0]) expect(pre.id).toBe(golden[0]);
    const subset = new Float32Array(golden.length * cols.length);
    cols.forEach((id, j) => (subset[j] = pre.logits[id]!));
    for (let k = 1; k < golden.length; k++) {
      const r = await s.stepLogits(golden[k - 1]!);
      if (decided[k]) expect(r.id, `step ${k}`).toBe(golden[k]);
      cols.forEach((id, j) => (subset[k * cols.length + j] = r.logits![id]!));
    }
    expect(maxAbsDiff(subset, refSubset) / scale, 'decode logits subset').toBeLessThanOrEqual(INT8_LOGITS_TOL);
  });
}

const cases = listCases();

describe.each(cases)('int8 golden case %s', (name) => {
  it('loads as int8', async () => {
    const c = await loadCase(name);
    const model = await int8Model(c);
    expect(model.info.quant).toBe('int8');
    expect(['miss', 'hit']).toContain(model.info.int8Cache);
  });

  it('golden prompt + embeddings -> prefill logits and 16 teacher-forced decode steps within the int8 budget', async () => {
    const c = await loadCase(name);
    await checkPrefillAndSteps(await int8Model(c), c);
  });

  it('wav -> 16 greedy ids end to end (exact where every golden margin allows)', async () => {
    const c = await loadCase(name);
    const model = await int8Model(c);
    const { samples } = decodeWav(readFileSync(c.audioPath));
    const golden = c.json.greedy.generated_ids;
    const ids = await greedyIds(model, c, samples);
    const decided = decidedSteps(c);
    const firstUndecided = decided.indexOf(false);
    const n = firstUndecided < 0 ? golden.length : firstUndecided;
    expect(ids.slice(0, n)).toEqual(golden.slice(0, n));
  });
});

// Every matrix-vector kernel this CPU supports runs the int8 path too (forced one by one).
describe.each(nativeDev().cpuKernels())('int8 kernel %s', (kernel) => {
  it.each(cases)('prefill + decode steps of %s', async (name) => {
    const c = await loadCase(name);
    const model = await int8Model(c, kernel);
    expect(model.info.kernel).toBe(kernel);
    expect(model.info.quant).toBe('int8');
    await checkPrefillAndSteps(model, c);
  });
});

// Other model shapes (issue 17: hidden 80 with 8 query heads on 2 KV heads, a shape whose rows are not a
// multiple of 32): int8's drift against the same model in BF16 on random weights, three seeds. Rows of 80
// columns are quantised in groups of 16 (they were one group per row: 1.2-1.9e-2 on these seeds); measured
// 1.0e-2, 1.6e-2, 1.3e-2 (docs/performance.md, "int8").
describe('int8 on other model shapes', () => {
  it.each([1, 2, 3])('hidden 80, GQA 4, seed %i: prefill logits within the int8 budget of the BF16 model', async (seed) => {
    const dir = join(cacheDir, `h80-${seed}`);
    await synthCheckpoint({
      variant: '0.6b',
      out: dir,
      seed,
      untied: true,
      baseDir: goldenPath('models', 'tiny-a'),
      dims: {
        audio: { d_model: 64, encoder_layers: 2, encoder_attention_heads: 4, encoder_ffn_dim: 128, downsample_hidden_size: 16, output_dim: 80 },
        text: { hidden_size: 80, intermediate_size: 160, num_hidden_layers: 2, num_attention_heads: 8, num_key_value_heads: 2, head_dim: 16 },
      },
    });
    const { samples } = decodeWav(readFileSync(goldenPath('audio', 'en_5s.wav')));
    const logits: Float32Array[] = [];
    for (const quant of ['bf16', 'int8'] as const) {
      const m = await Model.load(dir, { quant, cacheDir });
      try {
        await m.ready();
        await withSession(m, async (s) => {
          const mel = await s.mel(samples);
          const enc = await s.encode(mel.data, mel.frames, false);
          const p = buildPrompt(m.tokenizer, { audioTokens: enc.nTokens, supportedLanguages: m.info.supportLanguages });
          logits.push((await s.prefill(p.ids, enc.embeds)).logits);
        });
      } finally {
        m.dispose();
      }
    }
    const drift = maxAbsDiff(logits[1]!, logits[0]!) / maxAbs(logits[0]!);
    console.log(`int8 hidden 80 / GQA 4, seed ${seed}: prefill drift ${drift.toPrecision(3)} of max |bf16 logits|`);
    expect(drift).toBeLessThanOrEqual(INT8_LOGITS_TOL);
  });
});

describe('quant option', () => {
  it('rejects an unknown format', async () => {
    const c = await loadCase(cases[0]!);
    await expect(Model.load(c.modelDir, { quant: 'int3' as 'int8' })).rejects.toMatchObject({ code: 'INVALID_OPTION' });
    // The native layer checks it too (a caller of the binding directly).
    const { native } = await import('../src/native.js');
    await expect(native().loadModel(c.modelDir, { quant: 'int3' })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
  });

  it('bf16 is the default', async () => {
    const c = await loadCase(cases[0]!);
    const m = await Model.load(c.modelDir);
    try {
      expect(m.info.quant).toBe('bf16');
    } finally {
      m.dispose();
    }
  });
});
