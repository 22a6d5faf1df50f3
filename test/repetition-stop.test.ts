// The repetition early stop wired into decoding (DecodeOptions / RecognizeOptions.repetitionGuard): on a
// synthetic model that loops for ever the cleaned result equals the full-length decode's, with far fewer
// steps; on the random-weight tiny-a (which loops, then drifts) the steps saved are measured.
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { Model, recognize, transcribe } from '../src/index.js';
import { buildPrompt, parseAsrOutput } from '../src/text/prompt.js';
import { goldenPath, listCaseEntries } from './helpers/golden.js';
import { makeLoopingModel } from './helpers/looping-model.js';

const TINY = goldenPath('models', 'tiny-a');
const WAV = goldenPath(listCaseEntries()[0]!.audio);
const MAX = 512;
const lines: string[] = [];

let looping: Model;
let loopDir: string;
let tiny: Model;

beforeAll(async () => {
  tiny = await (await Model.load(TINY)).ready();
  const vocab = JSON.parse(readFileSync(join(TINY, 'vocab.json'), 'utf8')) as Record<string, number>;
  // The last prompt token, then "Hello, I think I think I think ..." (byte-level BPE: 'Ġ' is a space).
  const last = buildPrompt(tiny.tokenizer, { audioTokens: 1 }).ids.at(-1)!;
  const chain = ['Hello', ',', 'ĠI', 'Ġthink'].map((t) => vocab[t]!);
  loopDir = makeLoopingModel(TINY, last, chain, 2);
  looping = await (await Model.load(loopDir)).ready();
}, 60_000);

afterAll(() => {
  looping?.dispose();
  tiny?.dispose();
  if (loopDir) rmSync(loopDir, { recursive: true, force: true });
  if (lines.length) console.log(lines.join('\n'));
});

describe('repetition early stop on a model that loops for ever', () => {
  it('same cleaned text as decoding to maxNewTokens, from a prefix of the same ids', async () => {
    const full = await transcribe(WAV, { model: looping, maxNewTokens: MAX, repetitionGuard: false });
    const early = await transcribe(WAV, { model: looping, maxNewTokens: MAX });
    expect(full.tokens).toHaveLength(MAX);
    expect(full.text).toBe('Hello, I think');
    expect(early.text).toBe(full.text);
    expect(early.language).toBe(full.language);
    expect(early.tokens).toEqual(full.tokens.slice(0, early.tokens.length));
    // "Hello" "," then 20 repeats of the 8-character " I think" (2 ids each), stopped in phase with MAX.
    expect(early.tokens.length).toBeGreaterThanOrEqual(2 + 2 * 20);
    expect(early.tokens.length).toBeLessThanOrEqual(2 + 2 * 22);
    expect((MAX - early.tokens.length) % 2).toBe(0);
    lines.push(
      `looping model: ${full.tokens.length} decode steps without the guard, ${early.tokens.length} with it ` +
        `(${MAX - early.tokens.length} saved); decode ${full.timings.decodeMs.toFixed(0)} ms -> ${early.timings.decodeMs.toFixed(0)} ms`,
    );
  });

  it('streaming: the tokens stop at the same place and the segment text is the cleaned one', async () => {
    const ref = await transcribe(WAV, { model: looping, maxNewTokens: MAX });
    const stream = recognize(WAV, { model: looping, maxNewTokens: MAX });
    const ids: number[] = [];
    let raw = '';
    for await (const t of stream) {
      ids.push(t.id);
      raw += t.text;
    }
    expect(ids).toEqual(ref.tokens);
    expect(stream.segments[0]!.text).toBe(ref.text);
    expect(parseAsrOutput(raw).text).toBe(ref.text);
  });

  it('a budget too small for 20 repeats decodes to the end', async () => {
    const r = await transcribe(WAV, { model: looping, maxNewTokens: 30 });
    expect(r.tokens).toHaveLength(30);
  });

  it('repetitionGuard must be a boolean', async () => {
    await expect(transcribe(WAV, { model: looping, repetitionGuard: 'yes' as unknown as boolean })).rejects.toMatchObject({
      code: 'INVALID_OPTION',
    });
  });
});

describe('repetition early stop on the random-weight tiny-a', () => {
  it.each(listCaseEntries().map((c) => [c.case, c] as const))('%s: a prefix of the full decode, its own clean-up', async (_n, c) => {
    const opts = { model: tiny, maxNewTokens: MAX, language: c.force_language ?? undefined, context: c.context };
    const full = await transcribe(goldenPath(c.audio), { ...opts, repetitionGuard: false });
    const early = await transcribe(goldenPath(c.audio), opts);
    expect(early.tokens).toEqual(full.tokens.slice(0, early.tokens.length));
    const raw = tiny.tokenizer.decode(early.tokens, { skipSpecial: true });
    expect(early.text).toBe(parseAsrOutput(raw, { forcedLanguage: opts.language }).text);
    lines.push(
      `tiny-a ${c.case}: ${full.tokens.length} -> ${early.tokens.length} steps (${full.tokens.length - early.tokens.length} saved); ` +
        `cleaned text ${early.text === full.text ? 'equal' : `differs (the model leaves its loop later): ${JSON.stringify(early.text.slice(0, 40))} vs ${JSON.stringify(full.text.slice(0, 40))}...`}`,
    );
  });
});
