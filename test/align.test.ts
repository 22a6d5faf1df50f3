// align() and transcribe({ timestamps: 'word' }) through the public API: every input form, chunked alignment
// (segments of at most maxAlignSeconds, times shifted by each segment's start), the 'words' event, and the
// bad inputs (each a coded error). Models: the golden tiny-a (ASR) and tiny-fa (aligner).
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { Model, align, loadAudio, recognize, splitAudio, transcribe } from '../src/index.js';
import { alignSamples } from '../src/api/align.js';
import { native } from '../src/native.js';
import { pyRound3 } from '../src/text/aligner-text.js';
import { goldenPath, listAlignerCases, loadAlignerCase, type AlignerCase } from './helpers/golden.js';

const TINY = goldenPath('models', 'tiny-a');
const FA = goldenPath('models', 'tiny-fa');
const LONG_WAV = goldenPath('audio', 'en_21s.wav');
const scratch = mkdtempSync(join(tmpdir(), 'rustasr-align-'));

let asr: Model;
let aligner: Model;
let first: AlignerCase;
const expected = (c: AlignerCase) => c.json.items.map((i) => ({ text: i.text, start: i.start_time, end: i.end_time }));

beforeAll(async () => {
  [asr, aligner] = await Promise.all([Model.load(TINY).then((m) => m.ready()), Model.load(FA).then((m) => m.ready())]);
  first = await loadAlignerCase(listAlignerCases()[0]!);
}, 60_000);
afterAll(() => {
  asr?.dispose();
  aligner?.dispose();
  rmSync(scratch, { recursive: true, force: true });
});

describe('align()', () => {
  it.each(listAlignerCases())('%s: the golden items from a WAV path and an aligner directory', async (name) => {
    const c = await loadAlignerCase(name);
    const r = await align(c.audioPath, c.json.text, { model: c.modelDir, language: c.json.language });
    expect(r.items).toEqual(expected(c));
  });

  it('every audio input form, with a loaded aligner that stays usable', async () => {
    const want = expected(first);
    const bytes = readFileSync(first.audioPath);
    const samples = await loadAudio(first.audioPath, 16000);
    const opts = { model: aligner, language: first.json.language };
    for (const input of [bytes, new Uint8Array(bytes), samples, Readable.from([bytes.subarray(0, 1000), bytes.subarray(1000)])]) {
      expect((await align(input, first.json.text, opts)).items).toEqual(want);
    }
    expect(aligner.disposed).toBe(false);
    expect(native().liveObjects().aligners).toBe(0);
  });

  it('the language only changes how the text is split (no language: the generic split)', async () => {
    const r = await align(first.audioPath, first.json.text, { model: aligner });
    expect(r.items.map((i) => i.text)).toEqual(first.json.word_units);
  });

  it.each([
    ['empty text', '', 'NO_ALIGNABLE_TEXT'],
    ['whitespace', ' \n\t ', 'NO_ALIGNABLE_TEXT'],
    ['punctuation only', '... -- !? “” 🙂', 'NO_ALIGNABLE_TEXT'],
  ])('%s -> %s', async (_n, text, code) => {
    await expect(align(first.audioPath, text, { model: aligner })).rejects.toMatchObject({ code });
    expect(native().liveObjects().aligners).toBe(0);
  });

  it('an ASR model as the aligner -> WRONG_MODEL_KIND (directory and loaded Model)', async () => {
    await expect(align(first.audioPath, 'hello', { model: TINY })).rejects.toMatchObject({ code: 'WRONG_MODEL_KIND' });
    await expect(align(first.audioPath, 'hello', { model: asr })).rejects.toMatchObject({ code: 'WRONG_MODEL_KIND' });
  });

  it('a language the aligner does not support -> UNSUPPORTED_LANGUAGE', async () => {
    expect(asr.info.supportLanguages).toContain('Arabic');
    expect(aligner.info.supportLanguages).not.toContain('Arabic');
    await expect(align(first.audioPath, 'hello', { model: aligner, language: 'Arabic' })).rejects.toMatchObject({ code: 'UNSUPPORTED_LANGUAGE' });
  });

  it('audio over maxSeconds -> AUDIO_TOO_LONG; bad maxSeconds -> INVALID_OPTION', async () => {
    await expect(align(first.audioPath, 'hello', { model: aligner, maxSeconds: 0.5 })).rejects.toMatchObject({ code: 'AUDIO_TOO_LONG' });
    await expect(align(first.audioPath, 'hello', { model: aligner, maxSeconds: 181 })).rejects.toMatchObject({ code: 'INVALID_OPTION' });
  });

  it('too little audio, a disposed aligner, a hub id not in the (offline) cache', async () => {
    await expect(align(new Float32Array(100), 'hello', { model: aligner })).rejects.toMatchObject({ code: 'AUDIO_TOO_SHORT' });
    await expect(align(new Float32Array(0), 'hello', { model: aligner })).rejects.toMatchObject({ code: 'EMPTY_AUDIO' });
    const m = await Model.load(FA);
    m.dispose();
    await expect(align(first.audioPath, 'hello', { model: m })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    const env = { off: process.env['RUSTASR_OFFLINE'], dir: process.env['RUSTASR_CACHE_DIR'] };
    process.env['RUSTASR_OFFLINE'] = '1';
    process.env['RUSTASR_CACHE_DIR'] = join(scratch, 'cache');
    try {
      await expect(align(first.audioPath, 'hello', {})).rejects.toMatchObject({ code: 'MODEL_NOT_FOUND' });
    } finally {
      for (const [k, v] of [['RUSTASR_OFFLINE', env.off], ['RUSTASR_CACHE_DIR', env.dir]] as const) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
  });

  it('the aligner as the ASR model -> WRONG_MODEL_KIND', async () => {
    await expect(transcribe(first.audioPath, { model: FA })).rejects.toMatchObject({ code: 'WRONG_MODEL_KIND' });
    await expect(transcribe(first.audioPath, { model: aligner })).rejects.toMatchObject({ code: 'WRONG_MODEL_KIND' });
    const gen = aligner.decode(await loadAudio(first.audioPath, 16000));
    await expect(gen.next()).rejects.toMatchObject({ code: 'WRONG_MODEL_KIND' });
  });
});

/** Each segment's words = one aligner pass over that segment's samples and text, shifted by its start. */
async function expectShifted(samples: Float32Array, r: Awaited<ReturnType<typeof transcribe>>, maxSeconds: number) {
  const pieces = splitAudio(samples, { maxSeconds });
  expect(r.segments.map((s) => [s.start, s.end])).toEqual(pieces.map((p) => [p.start, p.end]));
  for (const [k, seg] of r.segments.entries()) {
    const own = seg.text.trim() === '' ? [] : (await alignSamples(aligner, pieces[k]!.samples, seg.text, seg.language)).items;
    expect(seg.words).toEqual(own.map((w) => ({ text: w.text, start: pyRound3(w.start + seg.start), end: pyRound3(w.end + seg.start) })));
  }
  expect(r.words).toEqual(r.segments.flatMap((s) => s.words!));
}

describe("transcribe({ timestamps: 'word' })", () => {
  it('segments of at most maxAlignSeconds, each aligned and shifted by its start', async () => {
    const r = await transcribe(LONG_WAV, { model: asr, timestamps: 'word', aligner, maxAlignSeconds: 8, maxNewTokens: 24 });
    expect(r.segments.length).toBeGreaterThan(2);
    expect(r.words!.length).toBeGreaterThan(0);
    await expectShifted(await loadAudio(LONG_WAV, 16000), r, 8);
  });

  it('audio longer than 180 s: aligned in 180 s chunks, the second one shifted', async () => {
    const one = await loadAudio(LONG_WAV, 16000);
    const long = new Float32Array(190 * 16000);
    for (let at = 0; at < long.length; at += one.length) long.set(one.subarray(0, Math.min(one.length, long.length - at)), at);
    const r = await transcribe(long, { model: asr, timestamps: 'word', aligner: FA, maxNewTokens: 8 });
    expect(r.segments).toHaveLength(2);
    expect(r.segments[1]!.start).toBeGreaterThan(170);
    await expectShifted(long, r, 180);
    expect(r.segments[1]!.words!.every((w) => w.start >= r.segments[1]!.start)).toBe(true);
  });

  it("streaming: a segment's 'words' event comes after its tokens and before its 'segment' event", async () => {
    const events: string[] = [];
    const stream = recognize(LONG_WAV, { model: asr, timestamps: 'word', aligner, maxAlignSeconds: 8, maxNewTokens: 6 });
    const words = new Map<number, unknown>();
    stream.on('words', (w: unknown, seg: number) => {
      events.push(`words ${seg}`);
      words.set(seg, w);
    });
    stream.on('segment', (s: { index: number }) => events.push(`segment ${s.index}`));
    for await (const t of stream) events.push(`token ${t.segment}`);
    const order = events.filter((e, i) => e !== events[i - 1]);
    const n = stream.segments.length;
    expect(order).toEqual(Array.from({ length: n }, (_, k) => [`token ${k}`, `words ${k}`, `segment ${k}`]).flat());
    for (const s of stream.segments) expect(words.get(s.index)).toEqual(s.words);
  });

  it('an aligner loaded by the stream is disposed with it; a given one is kept', async () => {
    const before = native().liveObjects().models;
    await transcribe(first.audioPath, { model: asr, timestamps: 'word', aligner: FA, maxNewTokens: 4 });
    // Released when the stream closes, just after the transcription resolves.
    for (let i = 0; i < 100 && native().liveObjects().models !== before; i++) await new Promise((r) => setTimeout(r, 10));
    expect(native().liveObjects().models).toBe(before);
    expect(native().liveObjects().aligners).toBe(0);
    await transcribe(first.audioPath, { model: asr, timestamps: 'word', aligner, maxNewTokens: 4 });
    expect(aligner.disposed).toBe(false);
  });

  it('no timestamps: no words', async () => {
    const r = await transcribe(first.audioPath, { model: asr, maxNewTokens: 4 });
    expect(r.words).toBeUndefined();
    expect(r.segments[0]!.words).toBeUndefined();
  });

  it.each([
    ['a forced language the aligner lacks', { language: 'Arabic' }, 'UNSUPPORTED_LANGUAGE'],
    ['timestamps: char', { timestamps: 'char' }, 'INVALID_OPTION'],
    ['maxAlignSeconds 0', { maxAlignSeconds: 0 }, 'INVALID_OPTION'],
    ['maxAlignSeconds 200', { maxAlignSeconds: 200 }, 'INVALID_OPTION'],
    ['an ASR model as the aligner', { aligner: TINY }, 'WRONG_MODEL_KIND'],
    ['a missing aligner directory', { aligner: join(scratch, 'nope') }, 'MODEL_NOT_FOUND'],
  ])('%s -> %s', async (_n, extra, code) => {
    const opts = { model: asr, timestamps: 'word' as const, aligner, maxNewTokens: 4, ...extra } as Parameters<typeof transcribe>[1];
    await expect(transcribe(first.audioPath, opts)).rejects.toMatchObject({ code });
  });
});
