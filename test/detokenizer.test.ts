// StreamingDetokenizer with the real Qwen3-ASR tokenizer: text split across tokens comes out whole, the
// language header is split off, special tokens give no text.
import { beforeAll, describe, expect, it } from 'vitest';

import { StreamingDetokenizer, completeUtf8Length } from '../src/text/detokenizer.js';
import { parseAsrOutput } from '../src/text/prompt.js';
import { loadTokenizer, type AsrTokenizer } from '../src/text/tokenizer.js';
import { goldenPath } from './helpers/golden.js';

let tok: AsrTokenizer;
beforeAll(async () => {
  tok = await loadTokenizer(goldenPath('models', 'tiny-a'));
});

/** Feeds `ids` one by one; returns the pieces, the pending flags after each id and the end() flush. */
function stream(ids: number[], expectHeader: boolean) {
  const d = new StreamingDetokenizer(tok, { expectHeader });
  const pieces: string[] = [];
  const pending: boolean[] = [];
  for (const id of ids) {
    pieces.push(d.push(id));
    pending.push(d.pending);
  }
  return { pieces, pending, rest: d.end(), language: d.language };
}

const TEXTS: Record<string, string> = {
  russian: 'Съешь же ещё этих мягких французских булок, да выпей чаю. Электрификация!',
  chinese: '我能吞下玻璃而不伤身体。龘靐齉爩，鱻麤。',
  mixed: 'naïve café — 東京 🙂 ok',
};

describe('StreamingDetokenizer', () => {
  it.each(Object.entries(TEXTS))('%s text split across tokens is reassembled, no U+FFFD mid-way', (_name, text) => {
    const ids = tok.encode(text);
    expect(ids.length).toBeGreaterThan(3);
    const { pieces, rest } = stream(ids, false);
    expect(pieces.join('') + rest).toBe(text);
    expect(rest).toBe('');
    for (const p of pieces) expect(p).not.toContain('\uFFFD');
  });

  it('some Chinese characters really are split across tokens (the case is exercised)', () => {
    const ids = tok.encode(TEXTS.chinese!);
    const { pieces, pending } = stream(ids, false);
    expect(pending.some(Boolean)).toBe(true);
    expect(pieces.some((p, i) => p === '' && pending[i])).toBe(true);
    const byte = ids.map((id) => tok.tokenBytes(id).length);
    expect(byte.some((n, i) => n > 0 && completeUtf8Length(tok.tokenBytes(ids[i]!)) < n)).toBe(true);
  });

  it('splits off the `language X<asr_text>` header and reports the language', () => {
    const ids = tok.encode(`language Russian<asr_text>${TEXTS.russian}`);
    const { pieces, rest, language } = stream(ids, true);
    expect(language).toBe('Russian');
    expect(pieces.join('') + rest).toBe(TEXTS.russian);
    const tagAt = ids.indexOf(tok.tokenToId('<asr_text>')!);
    expect(pieces.slice(0, tagAt + 1).every((p) => p === '')).toBe(true);
  });

  it('`language None` gives no language; text without a header passes through at once', () => {
    const none = stream(tok.encode('language None<asr_text>'), true);
    expect(none.language).toBeUndefined();
    expect(none.pieces.join('') + none.rest).toBe('');
    const plain = stream(tok.encode('hello there'), true);
    expect(plain.pieces[0]).toBe('hello');
    expect(plain.language).toBeUndefined();
  });

  it.each([
    ['LANGUAGE english<asr_text>Hi', 'English', 'Hi'],
    ['\nlanguage cHINese<asr_text>你好', 'Chinese', '你好'],
    ['language Chinese,English<asr_text>ok', 'Chinese,english', 'ok'],
    ['language Nonesuch<asr_text>x', undefined, 'x'],
  ])('the header is parsed as the final text is (official parse_asr_output): %j', (raw, lang, text) => {
    const r = stream(tok.encode(raw), true);
    expect(r.language).toBe(lang);
    expect(r.pieces.join('') + r.rest).toBe(text);
    expect(parseAsrOutput(raw)).toEqual(lang === undefined ? { text } : { language: lang, text });
  });

  it('a header that never completes is flushed as text by end()', () => {
    const r = stream(tok.encode('language'), true);
    expect(r.pieces.join('')).toBe('');
    expect(r.rest).toBe('language');
  });

  it('special tokens give no text; a dangling partial character ends as U+FFFD', () => {
    const d = new StreamingDetokenizer(tok, { expectHeader: false });
    expect(d.push(tok.tokenToId('<|im_end|>')!)).toBe('');
    const ids = tok.encode('龘');
    if (ids.length > 1) {
      expect(d.push(ids[0]!)).toBe('');
      expect(d.pending).toBe(true);
      expect(d.end()).toBe('\uFFFD');
    }
  });

  it('completeUtf8Length holds back only incomplete trailing sequences', () => {
    const b = (...x: number[]) => new Uint8Array(x);
    expect(completeUtf8Length(b(0x61, 0xe4, 0xb8))).toBe(1);
    expect(completeUtf8Length(b(0xe4, 0xb8, 0xad))).toBe(3);
    expect(completeUtf8Length(b(0xf0, 0x9f, 0x99))).toBe(0);
    expect(completeUtf8Length(b(0xf0, 0x9f, 0x99, 0x82))).toBe(4);
    expect(completeUtf8Length(b(0x61, 0xff))).toBe(2);
    expect(completeUtf8Length(b(0x80, 0x80))).toBe(2);
  });
});
