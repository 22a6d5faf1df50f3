import { beforeAll, describe, expect, it } from 'vitest';
import { RustAsrError } from '../src/errors.js';
import {
  SUPPORTED_LANGUAGES,
  buildPrompt,
  normalizeLanguage,
  parseAsrOutput,
} from '../src/text/prompt.js';
import { loadTokenizer, type AsrTokenizer } from '../src/text/tokenizer.js';
import { goldenPath, listCaseEntries, listCases, loadCase } from './helpers/golden.js';
import { audioTokenCount } from './helpers/audio-tokens.js';

const cache = new Map<string, Promise<AsrTokenizer>>();
function tokenizerFor(modelDir: string): Promise<AsrTokenizer> {
  let t = cache.get(modelDir);
  if (!t) {
    t = loadTokenizer(modelDir);
    cache.set(modelDir, t);
  }
  return t;
}

describe('buildPrompt reproduces the golden input_ids', () => {
  const cases = listCases();

  it('index.json lists cases', () => {
    expect(cases.length).toBeGreaterThan(0);
  });

  it.each(cases)('%s', async (name) => {
    const c = await loadCase(name);
    const tok = await tokenizerFor(c.modelDir);
    const p = buildPrompt(tok, {
      context: c.json.context,
      language: c.json.force_language ?? undefined,
      audioTokens: c.json.audio_pad_count,
    });
    expect(Array.from(p.ids)).toEqual(c.json.input_ids);
    expect(p.audioPadStart).toBe(c.json.audio_pad_start);
    expect(p.audioPadCount).toBe(c.json.audio_pad_count);
    expect(p.ids.length).toBe(c.json.prompt_len);
    expect(p.text).toBe(c.json.prompt_text_before_audio_expansion);
    // The safetensors copy of the ids agrees too.
    expect(Array.from(p.ids)).toEqual(c.ids('input_ids'));
    // Every pad sits in the announced range.
    const pad = c.json.audio_pad_token_id;
    p.ids.forEach((id, i) => {
      const inRange = i >= p.audioPadStart && i < p.audioPadStart + p.audioPadCount;
      expect(id === pad).toBe(inRange);
    });
  });
});

describe('audioTokenCount', () => {
  it.each(listCaseEntries().map((e) => [e.case, e.mel_frames, e.n_audio_tokens] as const))(
    '%s: %i mel frames -> %i tokens',
    (_name, frames, tokens) => {
      expect(audioTokenCount(frames)).toBe(tokens);
    },
  );

  it('follows 13 * floor(T/100) + ceil((T%100)/8)', () => {
    expect(audioTokenCount(0)).toBe(0);
    expect(audioTokenCount(1)).toBe(1);
    expect(audioTokenCount(8)).toBe(1);
    expect(audioTokenCount(9)).toBe(2);
    expect(audioTokenCount(99)).toBe(13);
    expect(audioTokenCount(100)).toBe(13);
    expect(audioTokenCount(101)).toBe(14);
    expect(audioTokenCount(200)).toBe(26);
  });

  it('rejects bad input', () => {
    expect(() => audioTokenCount(-1)).toThrow(RustAsrError);
    expect(() => audioTokenCount(1.5)).toThrow(RustAsrError);
  });
});

describe('buildPrompt details', () => {
  let tok: AsrTokenizer;
  beforeAll(async () => {
    tok = await tokenizerFor(goldenPath('models', 'tiny-a'));
  });

  const PREFIX = [151644, 8948, 198, 151645, 198, 151644, 872, 198, 151669];
  const SUFFIX = [151670, 151645, 198, 151644, 77091, 198];

  it('empty context matches the documented PREFIX/SUFFIX', () => {
    const p = buildPrompt(tok, { audioTokens: 3 });
    expect(Array.from(p.ids)).toEqual([...PREFIX, 151676, 151676, 151676, ...SUFFIX]);
    expect(p.audioPadStart).toBe(PREFIX.length);
    expect(p.language).toBeUndefined();
  });

  it('forced language appends "language X<asr_text>" and normalises case', () => {
    const p = buildPrompt(tok, { audioTokens: 1, language: 'russian' });
    expect(Array.from(p.ids)).toEqual([...PREFIX, 151676, ...SUFFIX, 11528, 8522, 151704]);
    expect(p.language).toBe('Russian');
    expect(p.text.endsWith('<|im_start|>assistant\nlanguage Russian<asr_text>')).toBe(true);
  });

  it('context sits between "system\\n" and <|im_end|>', () => {
    const ctx = 'Names: Qwen, Ада Лавлейс';
    const p = buildPrompt(tok, { audioTokens: 2, context: ctx });
    const ctxIds = tok.encode(ctx);
    expect(Array.from(p.ids.subarray(0, 3))).toEqual([151644, 8948, 198]);
    expect(Array.from(p.ids.subarray(3, 3 + ctxIds.length))).toEqual(ctxIds);
    expect(p.ids[3 + ctxIds.length]).toBe(151645);
  });

  it('expansion on ids equals tokenising the fully expanded text', () => {
    const p = buildPrompt(tok, { audioTokens: 5, context: 'hi there', language: 'English' });
    const expandedText = p.text.replace('<|audio_pad|>', '<|audio_pad|>'.repeat(5));
    expect(Array.from(p.ids)).toEqual(tok.encode(expandedText));
  });

  it('rejects bad options', () => {
    const code = (f: () => unknown): string | undefined => {
      try {
        f();
      } catch (e) {
        return (e as RustAsrError).code;
      }
      return undefined;
    };
    expect(code(() => buildPrompt(tok, { audioTokens: 0 }))).toBe('INVALID_OPTION');
    expect(code(() => buildPrompt(tok, { audioTokens: 2.5 }))).toBe('INVALID_OPTION');
    expect(code(() => buildPrompt(tok, { audioTokens: 1, language: 'Klingon' }))).toBe('UNSUPPORTED_LANGUAGE');
    expect(code(() => buildPrompt(tok, { audioTokens: 1, context: 'x<|audio_pad|>' }))).toBe('INVALID_OPTION');
  });
});

describe('languages', () => {
  it('normalizeLanguage maps any case to the supported spelling', () => {
    expect(normalizeLanguage('english')).toBe('English');
    expect(normalizeLanguage('  CHINESE ')).toBe('Chinese');
    expect(normalizeLanguage('Macedonian')).toBe('Macedonian');
    expect(SUPPORTED_LANGUAGES).toHaveLength(30);
  });

  it('normalizeLanguage rejects unknown names', () => {
    expect(() => normalizeLanguage('Elvish')).toThrow(expect.objectContaining({ code: 'UNSUPPORTED_LANGUAGE' }));
    expect(() => normalizeLanguage('')).toThrow(RustAsrError);
  });

  it('accepts a custom supported list', () => {
    expect(normalizeLanguage('klingon', ['Klingon'])).toBe('Klingon');
    expect(() => normalizeLanguage('English', ['Klingon'])).toThrow(RustAsrError);
    expect(normalizeLanguage('english', [])).toBe('English'); // empty list -> default list
  });
});

describe('parseAsrOutput', () => {
  it('splits header and text', () => {
    expect(parseAsrOutput('language English<asr_text>hello world')).toEqual({ language: 'English', text: 'hello world' });
    expect(parseAsrOutput('language russian<asr_text> Привет. ')).toEqual({ language: 'Russian', text: 'Привет.' });
  });

  it('language None means no language', () => {
    expect(parseAsrOutput('language None<asr_text>')).toEqual({ text: '' });
  });

  it('no header: whole text, no language', () => {
    expect(parseAsrOutput(' just text ')).toEqual({ text: 'just text' });
  });

  it('unknown language names are kept as written', () => {
    expect(parseAsrOutput('language Esperanto<asr_text>saluton')).toEqual({ language: 'Esperanto', text: 'saluton' });
  });

  it('forced language: the whole output is text', () => {
    expect(parseAsrOutput('hello', { forcedLanguage: 'english' })).toEqual({ language: 'English', text: 'hello' });
  });
});
