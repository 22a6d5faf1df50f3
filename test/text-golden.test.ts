// The official pure-text functions against the golden references (shared/golden/text): exact outputs.
import { readFileSync } from 'node:fs';

import { describe, expect, it } from 'vitest';

import { alignerInputText, alignerUnits, fixTimestamp } from '../src/text/aligner-text.js';
import { detectAndFixRepetitions, parseAsrOutputOfficial, pySplitLines, pyStrip } from '../src/text/asr-output.js';
import { parseAsrOutput } from '../src/text/prompt.js';
import { goldenPath } from './helpers/golden.js';

interface TextCase<I, O> {
  name: string;
  input: I;
  output?: O;
  error?: unknown;
  user_language?: string | null;
}

function load<I, O>(file: string): TextCase<I, O>[] {
  const d = JSON.parse(readFileSync(goldenPath('text', file), 'utf8')) as { n_cases: number; cases: TextCase<I, O>[] };
  expect(d.cases.length).toBe(d.n_cases);
  return d.cases;
}

describe('detect_and_fix_repetitions (golden text references)', () => {
  const cases = load<string, string>('detect_and_fix_repetitions.json');
  it.each(cases.map((c) => [c.name, c] as const))('%s', (_name, c) => {
    expect(detectAndFixRepetitions(c.input)).toBe(c.output);
  });
});

describe('parse_asr_output (golden text references)', () => {
  const cases = load<string | null, [string, string]>('parse_asr_output.json');
  it.each(cases.map((c) => [c.name, c] as const))('%s', (_name, c) => {
    expect(parseAsrOutputOfficial(c.input, c.user_language)).toEqual(c.output);
    // The SDK's form: '' language -> undefined.
    if (c.input !== null && !c.user_language) {
      const [lang, text] = c.output!;
      expect(parseAsrOutput(c.input)).toEqual(lang === '' ? { text } : { language: lang, text });
    }
  });
});

describe('fix_timestamp (golden text references)', () => {
  const cases = load<number[], number[]>('fix_timestamp.json');
  it.each(cases.map((c) => [c.name, c] as const))('%s', (_name, c) => {
    if (c.error !== undefined) {
      // The official function raises on an empty list (max() of an empty sequence); align() never calls it so.
      expect(c.input).toEqual([]);
      expect(() => fixTimestamp(c.input)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    } else {
      expect(fixTimestamp(c.input)).toEqual(c.output);
    }
  });
});

describe('aligner text units (golden text references)', () => {
  interface UnitCase {
    name: string;
    text: string;
    language: string;
    word_units: string[];
    aligner_input_text: string;
  }
  const d = JSON.parse(readFileSync(goldenPath('text', 'aligner_text_units.json'), 'utf8')) as { n_cases: number; cases: UnitCase[] };
  it('holds every case', () => expect(d.cases.length).toBe(d.n_cases));
  it.each(d.cases.map((c) => [c.name, c] as const))('%s', (_name, c) => {
    const units = alignerUnits(c.text, c.language);
    expect(units).toEqual(c.word_units);
    expect(alignerInputText(units)).toBe(c.aligner_input_text);
  });
});

describe('Python string helpers', () => {
  it('strip() uses Python whitespace, not JS trim()', () => {
    expect(pyStrip('\x1c\x1f\x85 a \u3000')).toBe('a');
    expect(pyStrip('\ufeffa\ufeff')).toBe('\ufeffa\ufeff');
  });
  it('splitlines() breaks at Python line boundaries', () => {
    expect(pySplitLines('a\r\nb\rc\nd\x0be\x1cf\u2028g\n')).toEqual(['a', 'b', 'c', 'd', 'e', 'f', 'g']);
    expect(pySplitLines('')).toEqual([]);
    expect(pySplitLines('\n\n')).toEqual(['', '']);
  });
});
