// Golden parity: every stage of the engine against tensors computed by the official Qwen3-ASR code.
// The golden root comes from RUSTASR_GOLDEN_DIR (default ../shared/golden) and the cases from its
// cases/index.json, so any golden set in the same layout runs unchanged. Each stage is fed the golden
// input of that stage; tolerances are read from each case's JSON (the golden README's values).
import { readFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';

import { Model, decodeWav } from '../src/index.js';
import { native, type NativeSession } from '../src/native.js';
import { buildPrompt } from '../src/text/prompt.js';
import { listCases, loadCase, type GoldenCase } from './helpers/golden.js';

type Tol = Record<string, { max_abs?: number; max_abs_over_ref_maxabs?: number; max_abs_over_prefill_logits_maxabs?: number }>;

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    if (!(d <= m)) m = Number.isNaN(d) ? Infinity : d;
  }
  return m;
}

function tolerance(c: GoldenCase, key: string, field: 'max_abs' | 'max_abs_over_ref_maxabs' | 'max_abs_over_prefill_logits_maxabs'): number {
  const t = (c.json.tolerances as Tol)[key]?.[field];
  if (typeof t !== 'number') throw new Error(`${c.name}: no ${key}.${field} tolerance in the case JSON`);
  return t;
}

function argmax(v: Float32Array): number {
  return native().argmax(v);
}

const models = new Map<string, Promise<Model>>();
function modelFor(c: GoldenCase, kernel = 'auto'): Promise<Model> {
  const key = `${c.modelDir}#${kernel}`;
  let m = models.get(key);
  if (!m) {
    m = Model.load(c.modelDir, { kernel: kernel as 'auto' }).then((model) => model.ready());
    models.set(key, m);
  }
  return m;
}
afterAll(async () => {
  for (const m of models.values()) (await m).dispose();
});

async function withSession<T>(model: Model, fn: (s: NativeSession) => Promise<T>): Promise<T> {
  const s = model.createSession();
  try {
    return await fn(s);
  } finally {
    s.dispose();
  }
}

/** Greedy steps after a prefill, fed the golden ids; returns each step's logits at the subset columns. */
async function decodeSubset(s: NativeSession, c: GoldenCase, prefillLogits: Float32Array): Promise<Float32Array> {
  const cols = c.ids('decode_logits_subset_ids');
  const golden = c.json.greedy.generated_ids;
  const out = new Float32Array(golden.length * cols.length);
  const take = (row: number, logits: Float32Array) => cols.forEach((id, j) => (out[row * cols.length + j] = logits[id]!));
  take(0, prefillLogits);
  for (let k = 1; k < golden.length; k++) {
    const r = await s.step(golden[k - 1]!, true);
    expect(r.id).toBe(golden[k]);
    take(k, r.logits!);
  }
  return out;
}

const cases = listCases();

describe.each(cases)('golden case %s', (name) => {
  it('wav -> mel', async () => {
    const c = await loadCase(name);
    const { info, samples } = decodeWav(readFileSync(c.audioPath));
    expect(info.sampleRate).toBe(c.json.sample_rate);
    expect(samples.length).toBe(c.json.n_samples);
    const model = await modelFor(c);
    const mel = await withSession(model, (s) => s.mel(samples));
    expect(mel.frames).toBe(c.json.mel_frames);
    expect(maxAbsDiff(mel.data, c.f32('mel'))).toBeLessThanOrEqual(tolerance(c, 'mel', 'max_abs'));
  });

  it('golden mel -> encoder (conv stem + positions, ln_post, audio embeddings)', async () => {
    const c = await loadCase(name);
    const model = await modelFor(c);
    const enc = await withSession(model, (s) => s.encode(c.f32('mel'), c.json.mel_frames, true));
    expect(enc.nTokens).toBe(c.json.n_audio_tokens);
    for (const [ours, key] of [
      [enc.convPos!, 'enc_conv_pos'],
      [enc.lnPost!, 'enc_ln_post'],
      [enc.embeds, 'audio_embeds'],
    ] as const) {
      const ref = c.f32(key);
      const rel = maxAbsDiff(ours, ref) / maxAbs(ref);
      expect(rel, key).toBeLessThanOrEqual(tolerance(c, key, 'max_abs_over_ref_maxabs'));
    }
  });

  it('prompt ids', async () => {
    const c = await loadCase(name);
    const model = await modelFor(c);
    const p = buildPrompt(model.tokenizer, {
      context: c.json.context,
      language: c.json.force_language ?? undefined,
      audioTokens: c.json.n_audio_tokens,
    });
    expect(Array.from(p.ids)).toEqual(c.ids('input_ids'));
    expect(p.audioPadStart).toBe(c.json.audio_pad_start);
  });

  it('golden prompt + embeddings -> prefill logits, then every decode step (KV cache, positions)', async () => {
    const c = await loadCase(name);
    const model = await modelFor(c);
    await withSession(model, async (s) => {
      const pre = await s.prefill(Int32Array.from(c.ids('input_ids')), c.f32('audio_embeds'));
      const refLogits = c.f32('prefill_logits');
      const scale = maxAbs(refLogits);
      expect(maxAbsDiff(pre.logits, refLogits) / scale).toBeLessThanOrEqual(tolerance(c, 'prefill_logits', 'max_abs_over_ref_maxabs'));
      expect(pre.id).toBe(argmax(refLogits));
      const refHidden = c.f32('prefill_hidden_last');
      expect(maxAbsDiff(pre.hiddenLast, refHidden) / maxAbs(refHidden)).toBeLessThanOrEqual(
        tolerance(c, 'prefill_hidden_last', 'max_abs_over_ref_maxabs'),
      );
      const subset = await decodeSubset(s, c, pre.logits);
      expect(maxAbsDiff(subset, c.f32('decode_logits_subset')) / scale).toBeLessThanOrEqual(
        tolerance(c, 'decode_logits_subset', 'max_abs_over_prefill_logits_maxabs'),
      );
    });
  });

  it('wav -> 16 greedy ids end to end', async () => {
    const c = await loadCase(name);
    const model = await modelFor(c);
    const { samples } = decodeWav(readFileSync(c.audioPath));
    const golden = c.json.greedy.generated_ids;
    // The golden run has no EOS stop: drive the session directly for exactly as many steps.
    const ids = await withSession(model, async (s) => {
      const mel = await s.mel(samples);
      const enc = await s.encode(mel.data, mel.frames, false);
      const p = buildPrompt(model.tokenizer, {
        context: c.json.context,
        language: c.json.force_language ?? undefined,
        audioTokens: enc.nTokens,
      });
      const out = [(await s.prefill(p.ids, enc.embeds)).id];
      while (out.length < golden.length) out.push((await s.step(out[out.length - 1]!)).id);
      return out;
    });
    expect(ids).toEqual(golden);
    // The public decode loop (which stops at EOS) yields the same ids up to the first EOS.
    const firstEos = golden.findIndex((id) => model.eosIds.has(id));
    const expected = firstEos < 0 ? golden : golden.slice(0, firstEos);
    const gen = model.decode(samples, {
      maxNewTokens: golden.length,
      context: c.json.context,
      language: c.json.force_language ?? undefined,
    });
    const got: number[] = [];
    for await (const id of gen) got.push(id);
    expect(got).toEqual(expected);
  });
});

// Every matrix-vector kernel this CPU supports must keep decode-time parity (forced one by one).
describe.each(native().cpuKernels())('kernel %s', (kernel) => {
  it.each(cases)('prefill + decode steps of %s', async (name) => {
    const c = await loadCase(name);
    const model = await modelFor(c, kernel);
    expect(model.info.kernel).toBe(kernel);
    await withSession(model, async (s) => {
      const pre = await s.prefill(Int32Array.from(c.ids('input_ids')), c.f32('audio_embeds'));
      const refLogits = c.f32('prefill_logits');
      const scale = maxAbs(refLogits);
      expect(maxAbsDiff(pre.logits, refLogits) / scale).toBeLessThanOrEqual(tolerance(c, 'prefill_logits', 'max_abs_over_ref_maxabs'));
      const subset = await decodeSubset(s, c, pre.logits);
      expect(maxAbsDiff(subset, c.f32('decode_logits_subset')) / scale).toBeLessThanOrEqual(
        tolerance(c, 'decode_logits_subset', 'max_abs_over_prefill_logits_maxabs'),
      );
    });
  });
});
