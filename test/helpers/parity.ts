// The golden parity checks shared by test/golden.test.ts (CPU) and test/golden-cuda.test.ts (CUDA): each
// stage of the engine fed the golden input of that stage and compared at the tolerances of the case JSON.
import { readFileSync } from 'node:fs';
import { expect } from 'vitest';

import { Model, decodeWav } from '../../src/index.js';
import { nativeDev, type NativeDevSession } from '../../src/native.js';
import { devSession } from './dev.js';
import { buildPrompt } from '../../src/text/prompt.js';
import type { GoldenCase } from './golden.js';

type TolField = 'max_abs' | 'max_abs_over_ref_maxabs' | 'max_abs_over_prefill_logits_maxabs';
type Tol = Record<string, Partial<Record<TolField, number>>>;

export function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
}

/** max |a - b| (NaN anywhere counts as infinite); the lengths must match. */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    if (!(d <= m)) m = Number.isNaN(d) ? Infinity : d;
  }
  return m;
}

/** A tolerance from the case JSON (throws if the case does not define it). */
export function tolerance(c: GoldenCase, key: string, field: TolField): number {
  const t = (c.json.tolerances as Tol)[key]?.[field];
  if (typeof t !== 'number') throw new Error(`${c.name}: no ${key}.${field} tolerance in the case JSON`);
  return t;
}

export function argmax(v: Float32Array): number {
  return nativeDev().argmax(v);
}

export async function withSession<T>(model: Model, fn: (s: NativeDevSession) => Promise<T>): Promise<T> {
  const s = devSession(model);
  try {
    return await fn(s);
  } finally {
    s.dispose();
  }
}

/** Greedy steps after a prefill, fed the golden ids; returns each step's logits at the subset columns. */
export async function decodeSubset(s: NativeDevSession, c: GoldenCase, prefillLogits: Float32Array): Promise<Float32Array> {
  const cols = c.ids('decode_logits_subset_ids');
  const golden = c.json.greedy.generated_ids;
  const out = new Float32Array(golden.length * cols.length);
  const take = (row: number, logits: Float32Array) => cols.forEach((id, j) => (out[row * cols.length + j] = logits[id]!));
  take(0, prefillLogits);
  for (let k = 1; k < golden.length; k++) {
    const r = await s.stepLogits(golden[k - 1]!);
    expect(r.id).toBe(golden[k]);
    take(k, r.logits!);
  }
  return out;
}

/** wav -> mel vs `mel` (max abs). */
export async function checkMel(model: Model, c: GoldenCase): Promise<void> {
  const { info, samples } = decodeWav(readFileSync(c.audioPath));
  expect(info.sampleRate).toBe(c.json.sample_rate);
  expect(samples.length).toBe(c.json.n_samples);
  const mel = await withSession(model, (s) => s.mel(samples));
  expect(mel.frames).toBe(c.json.mel_frames);
  expect(maxAbsDiff(mel.data, c.f32('mel'))).toBeLessThanOrEqual(tolerance(c, 'mel', 'max_abs'));
}

/** Golden mel -> encoder: conv stem + positions, ln_post, audio embeddings (relative). */
export async function checkEncoder(model: Model, c: GoldenCase): Promise<void> {
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
}

/**
 * Golden prompt + embeddings -> prefill logits (relative, argmax) and, with `hidden`, prefill_hidden_last;
 * then every decode step fed the golden ids vs decode_logits_subset (KV cache, positions).
 */
export async function checkPrefillDecode(model: Model, c: GoldenCase, hidden = true): Promise<void> {
  await withSession(model, async (s) => {
    const pre = await s.prefill(Int32Array.from(c.ids('input_ids')), c.f32('audio_embeds'));
    const refLogits = c.f32('prefill_logits');
    const scale = maxAbs(refLogits);
    expect(maxAbsDiff(pre.logits, refLogits) / scale).toBeLessThanOrEqual(tolerance(c, 'prefill_logits', 'max_abs_over_ref_maxabs'));
    if (hidden) {
      expect(pre.id).toBe(argmax(refLogits));
      const refHidden = c.f32('prefill_hidden_last');
      expect(maxAbsDiff(pre.hiddenLast, refHidden) / maxAbs(refHidden)).toBeLessThanOrEqual(
        tolerance(c, 'prefill_hidden_last', 'max_abs_over_ref_maxabs'),
      );
    }
    const subset = await decodeSubset(s, c, pre.logits);
    expect(maxAbsDiff(subset, c.f32('decode_logits_subset')) / scale).toBeLessThanOrEqual(
      tolerance(c, 'decode_logits_subset', 'max_abs_over_prefill_logits_maxabs'),
    );
  });
}

/**
 * The case's wav through mel, encoder, the case's prompt and free-running greedy steps, as many ids as the
 * golden run has. The golden run has no EOS stop, so the session is driven directly, not through decode().
 */
export async function greedyIds(model: Model, c: GoldenCase, samples: Float32Array): Promise<number[]> {
  const n = c.json.greedy.generated_ids.length;
  return withSession(model, async (s) => {
    const mel = await s.mel(samples);
    const enc = await s.encode(mel.data, mel.frames, false);
    const p = buildPrompt(model.tokenizer, {
      context: c.json.context,
      language: c.json.force_language ?? undefined,
      audioTokens: enc.nTokens,
    });
    const out = [(await s.prefill(p.ids, enc.embeds)).id];
    while (out.length < n) out.push((await s.step(out[out.length - 1]!)).id);
    return out;
  });
}

/** wav -> the golden greedy ids end to end (exact), then the public decode loop up to the first EOS. */
export async function checkEndToEnd(model: Model, c: GoldenCase): Promise<void> {
  const { samples } = decodeWav(readFileSync(c.audioPath));
  const golden = c.json.greedy.generated_ids;
  expect(await greedyIds(model, c, samples)).toEqual(golden);
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
}
