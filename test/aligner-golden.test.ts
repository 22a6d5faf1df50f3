// Qwen3-ForcedAligner parity: every case of the golden aligner set (shared/golden/aligner, computed with the
// official code) through the SDK, on the default device and on every CPU kernel. Exact: units, input ids,
// <timestamp> positions, argmax classes, raw and fixed timestamps, items. Within the index's tolerances:
// slot logits, slot hidden rows, audio embeddings.
import { afterAll, describe, expect, it } from 'vitest';

import { Model } from '../src/index.js';
import { alignSamples } from '../src/api/align.js';
import { loadAudio } from '../src/api/transcribe.js';
import { nativeDev } from '../src/native.js';
import { alignerInputText, alignerUnits } from '../src/text/aligner-text.js';
import { devAligner, devSession } from './helpers/dev.js';
import { listAlignerCases, loadAlignerCase, type AlignerCase } from './helpers/golden.js';

const models = new Map<string, Promise<Model>>();
function modelFor(c: AlignerCase, kernel = 'auto'): Promise<Model> {
  const key = `${c.modelDir}#${kernel}`;
  let m = models.get(key);
  if (!m) {
    m = Model.load(c.modelDir, { kernel: kernel as 'auto', device: kernel === 'auto' ? 'auto' : 'cpu' }).then((x) => x.ready());
    models.set(key, m);
  }
  return m;
}
afterAll(async () => {
  for (const m of models.values()) (await m).dispose();
});

function tol(c: AlignerCase, key: string): number {
  const t = c.tolerances[key] as { max_abs_over_ref_maxabs: number };
  return t.max_abs_over_ref_maxabs;
}

/** max |a - b| / max |b| (NaN counts as infinite). */
function relDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let d = 0;
  let s = 0;
  for (let i = 0; i < b.length; i++) {
    const x = Math.abs(a[i]! - b[i]!);
    d = Number.isNaN(x) ? Infinity : Math.max(d, x);
    s = Math.max(s, Math.abs(b[i]!));
  }
  return d / s;
}

/** Golden input ids + golden audio embeddings -> slot classes, logits and hidden rows. */
async function checkSlots(model: Model, c: AlignerCase): Promise<{ logits: number; hidden: number }> {
  const a = devAligner(model);
  try {
    const r = await a.classify(Int32Array.from(c.ids('input_ids')), c.f32('audio_embeds'));
    expect(Array.from(r.positions)).toEqual(c.json.timestamp_positions);
    expect(Array.from(r.classes)).toEqual(c.json.argmax_classes);
    const logits = relDiff(r.logits!, c.f32('slot_logits'));
    const hidden = relDiff(r.hidden!, c.f32('slot_hidden'));
    expect(logits).toBeLessThanOrEqual(tol(c, 'slot_logits'));
    expect(hidden).toBeLessThanOrEqual(tol(c, 'slot_hidden'));
    return { logits, hidden };
  } finally {
    a.dispose();
  }
}

/** wav -> items end to end (own mel, encoder, ids, pass, fix_timestamp): all exact. */
async function checkEndToEnd(model: Model, c: AlignerCase): Promise<void> {
  const samples = await loadAudio(c.audioPath, model.info.sampleRate);
  const d = await alignSamples(model, samples, c.json.text, c.json.language);
  expect(d.units).toEqual(c.json.word_units);
  expect(d.classes).toEqual(c.json.argmax_classes);
  expect(d.rawMs).toEqual(c.json.timestamps_ms_raw);
  expect(d.fixedMs).toEqual(c.json.timestamps_ms_fixed);
  expect(d.items).toEqual(c.json.items.map((i) => ({ text: i.text, start: i.start_time, end: i.end_time })));
}

const cases = listAlignerCases();
const report: string[] = [];
afterAll(() => {
  if (report.length) console.log(report.join('\n'));
});

describe.each(cases)('aligner golden case %s', (name) => {
  it('word units and input ids (pads expanded), exact', async () => {
    const c = await loadAlignerCase(name);
    const model = await modelFor(c);
    expect(model.kind).toBe('forced_aligner');
    const units = alignerUnits(c.json.text, c.json.language);
    expect(units).toEqual(c.json.word_units);
    const text = alignerInputText(units);
    expect(text).toBe(c.json.aligner_input_text_before_audio_expansion);
    const ids = model.tokenizer.encode(text);
    const pad = model.info.audioTokenId;
    const at = ids.indexOf(pad);
    expect(at).toBe(c.json.audio_pad_start);
    const expanded = [...ids.slice(0, at), ...new Array<number>(c.json.audio_pad_count).fill(pad), ...ids.slice(at + 1)];
    expect(expanded).toEqual(c.json.input_ids);
    expect(c.ids('input_ids')).toEqual(c.json.input_ids);
  });

  it('own mel -> encoder: audio embeddings', async () => {
    const c = await loadAlignerCase(name);
    const model = await modelFor(c);
    const s = devSession(model);
    try {
      const samples = await loadAudio(c.audioPath, model.info.sampleRate);
      const mel = await s.mel(samples);
      const enc = await s.encode(mel.data, mel.frames, false);
      expect(enc.nTokens).toBe(c.json.audio_pad_count);
      const d = relDiff(enc.embeds, c.f32('audio_embeds'));
      expect(d).toBeLessThanOrEqual(tol(c, 'audio_embeds'));
      report.push(`${name} [${model.info.kernel}]: audio_embeds ${d.toExponential(2)}`);
    } finally {
      s.dispose();
    }
  });

  it('golden ids + audio embeddings -> slot logits, hidden rows, classes', async () => {
    const c = await loadAlignerCase(name);
    const model = await modelFor(c);
    const d = await checkSlots(model, c);
    report.push(`${name} [${model.info.kernel}]: slot_logits ${d.logits.toExponential(2)}, slot_hidden ${d.hidden.toExponential(2)}`);
  });

  it('wav -> items end to end, exact', async () => {
    const c = await loadAlignerCase(name);
    await checkEndToEnd(await modelFor(c), c);
  });
});

describe.each(nativeDev().cpuKernels())('aligner on kernel %s', (kernel) => {
  it.each(cases)('%s: slots and end-to-end items', async (name) => {
    const c = await loadAlignerCase(name);
    const model = await modelFor(c, kernel);
    expect(model.info.kernel).toBe(kernel);
    const d = await checkSlots(model, c);
    report.push(`${name} [${kernel}]: slot_logits ${d.logits.toExponential(2)}, slot_hidden ${d.hidden.toExponential(2)}`);
    await checkEndToEnd(model, c);
  });
});
