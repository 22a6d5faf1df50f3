import { readdirSync, readFileSync, statSync } from 'node:fs';
import { chmod, copyFile, mkdir, mkdtemp, readFile, readdir, rm, truncate, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RustAsrError, fromNative, isRustAsrError } from '../src/errors.js';
import * as tokenizerModule from '../src/text/tokenizer.js';
import { loadReferenceTokenizer, loadTokenizer, type AsrTokenizer } from '../src/text/tokenizer.js';
import { goldenPath, listCases, loadCase } from './helpers/golden.js';
import { streamDecoder } from './helpers/stream-decoder.js';

const MODEL_DIR = goldenPath('models', 'tiny-a');

// Tokenizer cache files of this file's loads go to a scratch root, never the user's cache.
let cacheRoot: string;
const savedCacheEnv = process.env['RUSTASR_CACHE_DIR'];
beforeAll(async () => {
  cacheRoot = await mkdtemp(join(tmpdir(), 'rustasr-tokcache-'));
  process.env['RUSTASR_CACHE_DIR'] = cacheRoot;
});
afterAll(async () => {
  if (savedCacheEnv === undefined) delete process.env['RUSTASR_CACHE_DIR'];
  else process.env['RUSTASR_CACHE_DIR'] = savedCacheEnv;
  await rm(cacheRoot, { recursive: true, force: true });
});

async function codeOf(p: Promise<unknown>): Promise<{ code: string | undefined; message: string }> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(RustAsrError);
    return { code: (e as RustAsrError).code, message: (e as Error).message };
  }
  throw new Error('expected a rejection');
}

describe('tokenizer', () => {
  let tok: AsrTokenizer;
  beforeAll(async () => {
    tok = await loadTokenizer(MODEL_DIR);
  });

  it('knows the vocabulary and the added tokens', () => {
    expect(tok.size).toBe(151705);
    expect(tok.tokenToId('<|im_start|>')).toBe(151644);
    expect(tok.tokenToId('<|im_end|>')).toBe(151645);
    expect(tok.tokenToId('<|audio_start|>')).toBe(151669);
    expect(tok.tokenToId('<|audio_end|>')).toBe(151670);
    expect(tok.tokenToId('<|audio_pad|>')).toBe(151676);
    expect(tok.tokenToId('<asr_text>')).toBe(151704);
    expect(tok.tokenToId('system')).toBe(8948);
    expect(tok.tokenToId('Ċ')).toBe(198);
    expect(tok.tokenToId('no such token')).toBeUndefined();
    expect(tok.idToToken(77091)).toBe('assistant');
    expect(tok.idToToken(151644)).toBe('<|im_start|>');
    expect(tok.idToToken(151800)).toBeUndefined();
    expect(tok.idToToken(-1)).toBeUndefined();
    expect(tok.addedTokens).toHaveLength(62);
    expect(tok.isSpecial(151645)).toBe(true);
    expect(tok.isSpecial(151704)).toBe(false); // <asr_text> is not special
    expect(tok.isSpecial(9707)).toBe(false);
  });

  it('encodes known strings', () => {
    expect(tok.encode('language English<asr_text>')).toEqual([11528, 6364, 151704]);
    expect(tok.encode('language Russian<asr_text>')).toEqual([11528, 8522, 151704]);
    expect(tok.encode('Hello, world!')).toEqual([9707, 11, 1879, 0]);
    expect(tok.encode('')).toEqual([]);
  });

  it('recognises added tokens written literally, and nothing else special is inserted', () => {
    expect(tok.encode('<|im_start|>user\n')).toEqual([151644, 872, 198]);
    expect(tok.encode('<|audio_start|><|audio_pad|><|audio_end|>')).toEqual([151669, 151676, 151670]);
    expect(tok.encode('a<|im_end|>b')).toEqual([...tok.encode('a'), 151645, ...tok.encode('b')]);
  });

  it('applies NFC normalisation', () => {
    expect(tok.encode('Cafe\u0301')).toEqual(tok.encode('Caf\u00e9'));
  });

  it.each([
    ['English', 'The quick brown fox jumps over the lazy dog. It\'s 3:45 PM, isn\'t it?'],
    ['Russian', 'Съешь же ещё этих мягких французских булок, да выпей чаю.'],
    ['Chinese', '我们今天去公园散步，天气非常好。'],
    ['mixed', 'Qwen3-ASR: 中文 English русский 123456 🎉\n\n\ttabs  and   spaces\r\nend '],
  ])('round-trips %s text', (_lang, text) => {
    const ids = tok.encode(text);
    expect(ids.length).toBeGreaterThan(0);
    expect(tok.decode(ids)).toBe(text);
  });

  it('decode keeps or skips special tokens', () => {
    const hello = tok.encode('hello');
    const ids = [151644, ...hello, 151645, 151643];
    expect(tok.decode(ids)).toBe('<|im_start|>hello<|im_end|><|endoftext|>');
    expect(tok.decode(ids, { skipSpecial: true })).toBe('hello');
    // <asr_text> is not special: it survives skipSpecial so the output can be parsed.
    const out = [...tok.encode('language English<asr_text>hi'), 151645];
    expect(tok.decode(out, { skipSpecial: true })).toBe('language English<asr_text>hi');
    expect(tok.decode([])).toBe('');
  });

  it('ids outside the tokenizer vocabulary decode to nothing', () => {
    expect(tok.tokenBytes(151733)).toEqual(new Uint8Array(0));
    expect(tok.tokenBytes(10_000_000)).toEqual(new Uint8Array(0));
    expect(tok.tokenBytes(-5)).toEqual(new Uint8Array(0));
    expect(tok.decode([9707, 151733, 151935, 0])).toBe('Hello!');
  });

  it.each(listCases())('decodes the golden generated ids of %s', async (name) => {
    const c = await loadCase(name);
    const expected = c.json.greedy.generated_text_if_decoded;
    if (expected === undefined) return;
    expect(tok.decode(c.json.greedy.generated_ids, { skipSpecial: true })).toBe(expected);
  });

  it('tokenBytes gives raw bytes, including halves of a split multi-byte character', () => {
    expect(Array.from(tok.tokenBytes(198))).toEqual([0x0a]); // 'Ċ' -> '\n'
    expect(Array.from(tok.tokenBytes(1879))).toEqual([...Buffer.from(' world')]);
    expect(Array.from(tok.tokenBytes(151644))).toEqual([...Buffer.from('<|im_start|>')]);

    const ch = '𝄞'; // U+1D11E, 4 UTF-8 bytes, split across two tokens by the BPE
    const ids = tok.encode(ch);
    expect(ids.length).toBeGreaterThan(1);
    const parts = ids.map((id) => tok.tokenBytes(id));
    const joined = Buffer.concat(parts.map((p) => Buffer.from(p)));
    expect([...joined]).toEqual([...Buffer.from(ch, 'utf8')]);
    // The first piece alone is an incomplete UTF-8 sequence.
    expect(() => new TextDecoder('utf-8', { fatal: true }).decode(parts[0])).toThrow();
  });

  it('streamDecoder emits only complete characters', () => {
    const text = 'ab𝄞龘 ёж';
    const ids = tok.encode(text);
    const sd = streamDecoder(tok);
    const pieces = ids.map((id) => sd.push(id));
    pieces.push(sd.flush());
    expect(pieces.join('')).toBe(text);
    for (const p of pieces) expect(p).not.toContain('\uFFFD');
    expect(pieces.some((p) => p === '')).toBe(true); // a half character produced nothing yet

    const sd2 = streamDecoder(tok, { skipSpecial: true });
    expect(sd2.push(151644)).toBe('');
    expect(sd2.push(tok.encode('x')[0] as number)).toBe('x');
    const half = tok.encode('𝄞');
    expect(sd2.push(half[0] as number)).toBe('');
    expect(sd2.flush()).toBe('\uFFFD'); // dangling bytes at the end
  });
});

/** Every file under test/fuzz/tokenizer (the fuzz corpus and the hand-made seeds). */
function fuzzCorpus(): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const f of readdirSync(d).sort()) {
      const p = join(d, f);
      if (statSync(p).isDirectory()) walk(p);
      else out.push(readFileSync(p, 'utf8'));
    }
  };
  walk(join(import.meta.dirname, 'fuzz', 'tokenizer'));
  return out;
}

/** Deterministic strings mixing scripts, spacing, digits, contractions, combining marks, emoji and added tokens. */
function generatedStrings(count: number): string[] {
  const pieces = [
    'a', 'Z', 'the', ' ', '  ', '   ', '\n', '\r\n', '\r', '\t', ' \n', '1', '23', '4567', '.', ',', '!?', '...', "'s", "'S",
    "'ll", "'LL", "'Re", "'ſ", 'ſ', 'K', 'é', 'e\u0301', 'A\u030a', 'Ω', 'жук', 'Ёлка', '中文', 'ゃ', '한국어', 'ไทย', 'مرحبا',
    '😀', '👩‍👩‍👧', '🇺🇦', '\u00a0', '\u2028', '\u0085', '\ufeff', '\u200b', '\u3000', '<|im_start|>', '<|im_end|>', '<asr_text>',
    '<|audio_pad|>', '<|im_start', '|>', '<', '_', '-', '—', '$', '%', '½', '²', '٣', '\u0000', '\u007f', '\ud800', 'x\udc00y',
  ];
  let seed = 0x2545f491;
  const rnd = (n: number): number => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) % n;
  };
  const out: string[] = [];
  for (let i = 0; i < count; i++) {
    let s = '';
    const len = 1 + rnd(12);
    for (let k = 0; k < len; k++) s += pieces[rnd(pieces.length)] as string;
    out.push(s);
  }
  return out;
}

describe('tokenizer fast path (binary tables) against @huggingface/tokenizers', () => {
  let fast: AsrTokenizer;
  let ref: AsrTokenizer;
  let scratch: string;
  beforeAll(async () => {
    scratch = await mkdtemp(join(tmpdir(), 'rustasr-tokfast-'));
    ref = await loadReferenceTokenizer(MODEL_DIR);
    fast = await loadTokenizer(MODEL_DIR, { cacheDir: join(scratch, 'cache') });
  });
  afterAll(async () => {
    await rm(scratch, { recursive: true, force: true });
  });

  it('encodes the fuzz corpus exactly as the library (whole files, each line, each line after an added token)', () => {
    const corpus = fuzzCorpus();
    expect(corpus.length).toBeGreaterThan(50);
    let checked = 0;
    for (const text of corpus) {
      for (const s of [text, ...text.split('\n'), ...text.split('\n').map((l) => `<|im_start|>${l}<|im_end|>`)]) {
        expect(fast.encode(s), JSON.stringify(s.slice(0, 120))).toEqual(ref.encode(s));
        checked++;
      }
    }
    expect(checked).toBeGreaterThan(200);
  });

  it('encodes 3000 generated strings exactly as the library', () => {
    for (const s of generatedStrings(3000)) expect(fast.encode(s), JSON.stringify(s)).toEqual(ref.encode(s));
  });

  it('encodes the text of every 5th vocabulary token exactly as the library', () => {
    const dec = new TextDecoder('utf-8', { fatal: true });
    let n = 0;
    for (let id = 0; id < 151643; id += 5) {
      let text: string;
      try {
        text = dec.decode(ref.tokenBytes(id));
      } catch {
        continue; // part of a multi-byte character
      }
      expect(fast.encode(text), `id ${id}`).toEqual(ref.encode(text));
      n++;
    }
    expect(n).toBeGreaterThan(25_000);
  });

  it('decodes, looks up and streams as the reference tokenizer', () => {
    expect(fast.size).toBe(ref.size);
    expect(fast.addedTokens).toEqual(ref.addedTokens);
    const ids = [...ref.encode('Привет, world! 中文 😀'), 151644, 151704, 151645, 151800, -3, 3.5];
    expect(fast.decode(ids)).toBe(ref.decode(ids));
    expect(fast.decode(ids, { skipSpecial: true })).toBe(ref.decode(ids, { skipSpecial: true }));
    for (const id of [0, 1, 198, 8948, 77091, 151642, 151643, 151644, 151704, 151705, 200000, -1]) {
      expect(fast.idToToken(id), `idToToken(${id})`).toBe(ref.idToToken(id));
      expect([...fast.tokenBytes(id)], `tokenBytes(${id})`).toEqual([...ref.tokenBytes(id)]);
      expect(fast.isSpecial(id)).toBe(ref.isSpecial(id));
    }
    for (const t of ['system', 'Ċ', 'Ġthe', '<|im_start|>', '<asr_text>', 'no such token']) expect(fast.tokenToId(t)).toBe(ref.tokenToId(t));
    const a = streamDecoder(fast), b = streamDecoder(ref);
    for (const id of ref.encode('ёжик 😀 中')) expect(a.push(id)).toBe(b.push(id));
    expect(a.flush()).toBe(b.flush());
  });

  it('caches its tables: a miss writes the file, a hit reads it; a damaged, truncated or stale file is rebuilt', async () => {
    const dir = join(scratch, 'model');
    await mkdir(dir, { recursive: true });
    for (const f of ['vocab.json', 'merges.txt', 'tokenizer_config.json']) await copyFile(join(MODEL_DIR, f), join(dir, f));
    const root = join(scratch, 'cache2');
    const sample = 'Hello, мир! 中文 <|im_end|>';
    const want = ref.encode(sample);
    const load = async (): Promise<[string, number[]]> => {
      const t = await loadTokenizer(dir, { cacheDir: root });
      return [tokenizerModule.lastTokenizerSource, t.encode(sample)];
    };
    expect(await load()).toEqual(['miss', want]);
    const files = await readdir(join(root, 'tokenizer'));
    expect(files).toHaveLength(1);
    const file = join(root, 'tokenizer', files[0] as string);
    expect(await load()).toEqual(['hit', want]);
    // One flipped payload byte: the checksum fails.
    const bytes = await readFile(file);
    bytes[bytes.length - 100] = (bytes[bytes.length - 100] as number) ^ 0x40;
    await writeFile(file, bytes);
    expect(await load()).toEqual(['miss', want]);
    await truncate(file, 1000);
    expect(await load()).toEqual(['miss', want]);
    expect(await load()).toEqual(['hit', want]);
    // The source changed (a new modification time): rebuilt.
    await utimes(join(dir, 'merges.txt'), new Date(), new Date(Date.now() - 3600_000));
    expect(await load()).toEqual(['miss', want]);
    expect(await load()).toEqual(['hit', want]);
    // No cache, or one that cannot be written: built every time, same ids.
    const t = await loadTokenizer(dir, { cacheDir: false });
    expect([tokenizerModule.lastTokenizerSource, t.encode(sample)]).toEqual(['off', want]);
    if (process.getuid?.() !== 0) {
      const ro = join(scratch, 'ro');
      await mkdir(ro);
      await chmod(ro, 0o500);
      const u = await loadTokenizer(dir, { cacheDir: join(ro, 'sub') });
      expect([tokenizerModule.lastTokenizerSource, u.encode(sample)]).toEqual(['unwritable', want]);
    }
    const blocked = join(scratch, 'blocked');
    await writeFile(blocked, 'a file where the cache directory should be');
    const v = await loadTokenizer(dir, { cacheDir: blocked });
    expect([tokenizerModule.lastTokenizerSource, v.encode(sample)]).toEqual(['unwritable', want]);
  });

  it('falls back to the library for an added token the fast path does not cover (lstrip)', async () => {
    const dir = join(scratch, 'lstrip');
    await mkdir(dir, { recursive: true });
    for (const f of ['vocab.json', 'merges.txt']) await copyFile(join(MODEL_DIR, f), join(dir, f));
    const config = JSON.parse(await readFile(join(MODEL_DIR, 'tokenizer_config.json'), 'utf8')) as { added_tokens_decoder: Record<string, { lstrip?: boolean }> };
    (config.added_tokens_decoder['151645'] as { lstrip?: boolean }).lstrip = true;
    await writeFile(join(dir, 'tokenizer_config.json'), JSON.stringify(config));
    const t = await loadTokenizer(dir, { cacheDir: join(scratch, 'cache3') });
    expect(tokenizerModule.lastTokenizerSource).toBe('reference');
    // lstrip: the space before <|im_end|> is taken by the token.
    expect(t.encode('a <|im_end|>')).toEqual([64, 151645]);
  });
});

describe('loadTokenizer errors', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'rustasr-tok-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function modelDirWith(name: string, files: Record<string, string | null>): Promise<string> {
    const d = join(dir, name);
    await rm(d, { recursive: true, force: true });
    await mkdir(d, { recursive: true });
    for (const [file, content] of Object.entries(files)) {
      if (content === null) await copyFile(join(MODEL_DIR, file), join(d, file));
      else await writeFile(join(d, file), content);
    }
    return d;
  }

  it('missing vocab.json -> MODEL_NOT_FOUND naming the file', async () => {
    const d = await modelDirWith('no-vocab', { 'merges.txt': null, 'tokenizer_config.json': null });
    const { code, message } = await codeOf(loadTokenizer(d));
    expect(code).toBe('MODEL_NOT_FOUND');
    expect(message).toContain('vocab.json');
  });

  it('missing directory -> MODEL_NOT_FOUND', async () => {
    const { code } = await codeOf(loadTokenizer(join(dir, 'does-not-exist')));
    expect(code).toBe('MODEL_NOT_FOUND');
  });

  it('malformed vocab.json -> INVALID_TOKENIZER', async () => {
    const d = await modelDirWith('bad-vocab', { 'vocab.json': '{not json', 'merges.txt': null, 'tokenizer_config.json': null });
    const { code, message } = await codeOf(loadTokenizer(d));
    expect(code).toBe('INVALID_TOKENIZER');
    expect(message).toContain('vocab.json');
  });

  it('malformed merges.txt -> INVALID_TOKENIZER', async () => {
    const d = await modelDirWith('bad-merges', {
      'vocab.json': '{"a": 0, "b": 1, "ab": 2}',
      'merges.txt': '#version: 0.2\na b c\n',
      'tokenizer_config.json': '{}',
    });
    expect((await codeOf(loadTokenizer(d))).code).toBe('INVALID_TOKENIZER');
  });

  it('malformed added_tokens_decoder -> INVALID_TOKENIZER', async () => {
    const d = await modelDirWith('bad-config', {
      'vocab.json': '{"a": 0, "b": 1, "ab": 2}',
      'merges.txt': '#version: 0.2\na b\n',
      'tokenizer_config.json': '{"added_tokens_decoder": {"x": {"content": "<|s|>"}}}',
    });
    expect((await codeOf(loadTokenizer(d))).code).toBe('INVALID_TOKENIZER');
  });

  it('a minimal valid tokenizer loads', async () => {
    const d = await modelDirWith('tiny', {
      'vocab.json': '{"a": 0, "b": 1, "ab": 2}',
      'merges.txt': '#version: 0.2\na b\n',
      'tokenizer_config.json': '{"added_tokens_decoder": {"3": {"content": "<|s|>", "special": true}}}',
    });
    const t = await loadTokenizer(d);
    expect(t.encode('ab<|s|>a')).toEqual([2, 3, 0]);
    expect(t.decode([2, 3, 0], { skipSpecial: true })).toBe('aba');
  });
});

describe('errors', () => {
  it('RustAsrError carries name, code, message and cause', () => {
    const cause = new Error('low level');
    const e = new RustAsrError('EMPTY_AUDIO', 'no samples', { cause });
    expect(e).toBeInstanceOf(Error);
    expect(e.name).toBe('RustAsrError');
    expect(e.code).toBe('EMPTY_AUDIO');
    expect(e.message).toBe('no samples');
    expect(e.cause).toBe(cause);
    expect(isRustAsrError(e)).toBe(true);
    expect(isRustAsrError(e, 'EMPTY_AUDIO')).toBe(true);
    expect(isRustAsrError(e, 'INTERNAL')).toBe(false);
    expect(new RustAsrError('INTERNAL', 'x').cause).toBeUndefined();
  });

  it('fromNative maps addon errors by code', () => {
    const native = Object.assign(new Error('tensor model.x missing'), { code: 'MISSING_TENSOR' });
    const e = fromNative(native);
    expect(e).toBeInstanceOf(RustAsrError);
    expect(e.code).toBe('MISSING_TENSOR');
    expect(e.message).toBe('tensor model.x missing');
    expect(e.cause).toBe(native);
  });

  it('fromNative maps unknown or missing codes to INTERNAL and keeps the message', () => {
    expect(fromNative(Object.assign(new Error('weird'), { code: 'ESOMETHING' }))).toMatchObject({ code: 'INTERNAL', message: 'weird' });
    expect(fromNative(new Error('plain'))).toMatchObject({ code: 'INTERNAL', message: 'plain' });
    expect(fromNative('a string')).toMatchObject({ code: 'INTERNAL', message: 'a string' });
    const already = new RustAsrError('ABORTED', 'stop');
    expect(fromNative(already)).toBe(already);
  });
});
