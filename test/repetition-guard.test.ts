// The early stop for runaway repetition (src/text/repetition-guard.ts) on crafted token sequences: a pure
// unit, fed ids whose text comes from a small vocabulary. The property checked everywhere: when the guard
// stops, the clean-up of what was generated equals the clean-up of the full-length output (the sequence as the
// "model" would have gone on to maxTokens).
import { describe, expect, it } from 'vitest';

import { detectAndFixRepetitions, parseAsrOutputOfficial, pyStrip } from '../src/text/asr-output.js';
import { RepetitionGuard } from '../src/text/repetition-guard.js';

const clean = (raw: string): string => detectAndFixRepetitions(pyStrip(raw));

/** A vocabulary: id i has text vocab[i]. */
function decoderOf(vocab: readonly string[]): (ids: readonly number[]) => string {
  return (ids) => ids.map((i) => vocab[i]!).join('');
}

/** Feeds `seq` (the full-length output) until the guard stops; returns how many tokens were generated. */
function run(seq: readonly number[], vocab: readonly string[], maxTokens = seq.length, opts: { clean?: (s: string) => string } = {}) {
  const guard = new RepetitionGuard({ maxTokens, decode: decoderOf(vocab), clean: opts.clean });
  let n = 0;
  for (const id of seq) {
    n++;
    if (guard.push(id)) break;
  }
  return { n, guard };
}

/** prefix, then `cycle` repeated until `total` ids. */
function looping(prefix: number[], cycle: number[], total: number): number[] {
  const out = prefix.slice();
  while (out.length < total) out.push(cycle[(out.length - prefix.length) % cycle.length]!);
  return out;
}

describe('RepetitionGuard on crafted sequences', () => {
  const vocab = ['Hello', ',', ' I', ' think', ' so', '.', 'a', '資', '料', ' the end', 'x'];
  const dec = decoderOf(vocab);

  it('"I think" x N: stops once 20 repeats are there, phase-aligned, and the cleaned text is the full one', () => {
    const full = looping([0, 1], [2, 3], 512);
    const { n, guard } = run(full, vocab);
    expect(guard.stopped).toBe(true);
    expect(guard.period).toBe(2);
    expect((512 - n) % 2).toBe(0);
    // 20 repeats of the 8-character pattern " I think" need 40 ids after the prefix.
    expect(n).toBeGreaterThanOrEqual(2 + 40);
    expect(n).toBeLessThan(2 + 48);
    expect(guard.savedSteps).toBe(512 - n);
    expect(clean(dec(full.slice(0, n)))).toBe(clean(dec(full)));
    expect(clean(dec(full))).toBe('Hello, I think');
  });

  it('a single repeated character: stops after 20+ identical characters', () => {
    const full = looping([0], [6], 300);
    const { n, guard } = run(full, vocab);
    expect(guard.stopped).toBe(true);
    expect(guard.period).toBe(1);
    expect(n - 1).toBeGreaterThanOrEqual(20);
    expect(clean(dec(full.slice(0, n)))).toBe(clean(dec(full)));
  });

  it('multi-token CJK loop: stops with the full-length clean-up', () => {
    const full = looping([0, 1], [7, 8], 400);
    const { n, guard } = run(full, vocab);
    expect(guard.stopped).toBe(true);
    expect(clean(dec(full.slice(0, n)))).toBe(clean(dec(full)));
    expect(clean(dec(full))).toBe('Hello,資料');
  });

  it('a repeated pattern longer than 20 characters is never stopped (the clean-up keeps it)', () => {
    const long = ['The weather is lovely today', ' and'];
    const full = looping([], [0, 1], 200);
    const { n, guard } = run(full, long);
    expect(guard.stopped).toBe(false);
    expect(n).toBe(200);
    expect(guard.savedSteps).toBe(0);
  });

  it('a loop that ends before 20 repeats is never stopped', () => {
    const full = [0, 1, ...looping([], [2, 3], 38), 9, 5];
    const { n, guard } = run(full, vocab, 100);
    expect(guard.stopped).toBe(false);
    expect(n).toBe(full.length);
  });

  it('no stop on the last step (nothing to save) and none with a budget too small for 20 repeats', () => {
    expect(run(looping([], [6], 20), vocab).guard.stopped).toBe(false);
    const { guard } = run(looping([], [6], 21), vocab);
    expect(guard.stopped).toBe(false);
  });

  it('the official parsing (header + text) as the clean-up: the language survives', () => {
    const v = ['language English<asr_text>', 'Yes', ' no'];
    const parse = (raw: string) => parseAsrOutputOfficial(raw).join('\u0000');
    const full = looping([0, 1], [2], 256);
    const { n, guard } = run(full, v, 256, { clean: parse });
    expect(guard.stopped).toBe(true);
    expect(parseAsrOutputOfficial(decoderOf(v)(full.slice(0, n)))).toEqual(parseAsrOutputOfficial(decoderOf(v)(full)));
    expect(parseAsrOutputOfficial(decoderOf(v)(full))).toEqual(['English', 'Yes no']);
  });

  it('a sub-cycle inside a longer cycle does not hide the longer one', () => {
    // cycle: x a a x a a ... is period 3 ("xaa"), with period-1 runs of 'a' inside it.
    const full = looping([0], [10, 6, 6], 600);
    const { n, guard } = run(full, vocab);
    expect(guard.stopped).toBe(true);
    expect(guard.period).toBe(3);
    expect(clean(dec(full.slice(0, n)))).toBe(clean(dec(full)));
  });

  it('random loops: whenever it stops, the cleaned text equals the full-length one; short patterns always stop', () => {
    let seed = 12345;
    const rnd = (k: number) => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return Math.floor((seed / 2147483648) * k);
    };
    const pieces = ['a', 'b', ' ', 'ab', 'ba', ' the', '.', '資', ',', 'zz', 'x y'];
    let stopped = 0;
    for (let trial = 0; trial < 300; trial++) {
      const prefix = Array.from({ length: rnd(12) }, () => rnd(pieces.length));
      const cycle = Array.from({ length: 1 + rnd(6) }, () => rnd(pieces.length));
      const max = 60 + rnd(400);
      const full = looping(prefix, cycle, max);
      const d = decoderOf(pieces);
      const { n, guard } = run(full, pieces);
      if (guard.stopped) {
        stopped++;
        expect(clean(d(full.slice(0, n))), `trial ${trial}`).toBe(clean(d(full)));
        expect(n).toBeLessThan(max);
      }
      // A cycle whose text is 1..20 characters and that repeats 40+ times over a long remaining budget is a
      // runaway the guard must catch.
      const cycleText = d(cycle);
      const cps = Array.from(cycleText).length;
      if (cps >= 1 && cps <= 20 && (max - prefix.length) / cycle.length >= 60 + 2 * cycle.length) {
        expect(guard.stopped, `trial ${trial}: ${JSON.stringify(cycleText)} x ${(max - prefix.length) / cycle.length}`).toBe(true);
      }
    }
    expect(stopped).toBeGreaterThan(100);
  });
});
