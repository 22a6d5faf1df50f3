// The fuzz corpora (test/fuzz/: hand-made seeds and the minimized coverage-guided corpora in */corpus/ and
// detokenizer/) replayed through the oracles of scripts/fuzz-ts.mjs, plus the inputs the fuzzer found bugs
// with. The fuzzer itself: `npm run fuzz:ts -- --target T --iterations N`.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { beforeAll, describe, expect, it } from 'vitest';

import { decodeWav } from '../src/audio/wav.js';
import { RustAsrError } from '../src/errors.js';
import { WavDecoder, type AudioChunk } from '../src/stages/index.js';
import { StreamingDetokenizer } from '../src/text/detokenizer.js';
import { buildPrompt } from '../src/text/prompt.js';
import { loadTokenizer, type AsrTokenizer } from '../src/text/tokenizer.js';
import { buildWav, encodeSamples } from '../scripts/wav-builder.mjs';
import { goldenPath, REPO_ROOT } from './helpers/golden.js';
import { streamDecoder } from './helpers/stream-decoder.js';

const FUZZ = join(REPO_ROOT, 'test', 'fuzz');
const seeds = (dir: string, ext: string) =>
  readdirSync(join(FUZZ, dir))
    .filter((f) => f.endsWith(ext))
    .sort();
/** Files under test/fuzz/<dir> (recursively) ending in one of `exts`, as paths relative to test/fuzz/<dir>. */
function corpus(dir: string, exts: string[], sub = ''): string[] {
  const out: string[] = [];
  for (const f of readdirSync(join(FUZZ, dir, sub)).sort()) {
    const rel = sub ? `${sub}/${f}` : f;
    if (statSync(join(FUZZ, dir, rel)).isDirectory()) out.push(...corpus(dir, exts, rel));
    else if (exts.some((e) => f.endsWith(e))) out.push(rel);
  }
  return out;
}
/** Tokenizer corpus entries: UTF-8 text (.txt) or, for strings with lone surrogates, a JSON string (.json). */
function readText(rel: string): string {
  const raw = readFileSync(join(FUZZ, 'tokenizer', rel), 'utf8');
  return rel.endsWith('.json') ? (JSON.parse(raw) as string) : raw;
}
const wellFormed = (s: string) => !/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/.test(s);
/** Occurrences of the 'fmt ' chunk id (an upper bound on the fmt chunks). */
function fmtTags(b: Uint8Array): number {
  let n = 0;
  for (let i = 12; i + 4 <= b.length; i++) if (b[i] === 0x66 && b[i + 1] === 0x6d && b[i + 2] === 0x74 && b[i + 3] === 0x20) n++;
  return n;
}

type Outcome = { ok: true; samples: Float32Array } | { ok: false; code: string };

async function viaStream(bytes: Uint8Array, piece: number): Promise<Outcome> {
  const parts: Buffer[] = [];
  for (let p = 0; p < bytes.length; p += piece) parts.push(Buffer.from(bytes.subarray(p, p + piece)));
  const out: number[] = [];
  try {
    await pipeline(Readable.from(parts), new WavDecoder(), async (src: AsyncIterable<AudioChunk>) => {
      for await (const c of src) out.push(...c.samples);
    });
    return { ok: true, samples: Float32Array.from(out) };
  } catch (err) {
    expect(err).toBeInstanceOf(RustAsrError);
    return { ok: false, code: (err as RustAsrError).code };
  }
}

function viaBuffer(bytes: Uint8Array): Outcome {
  try {
    return { ok: true, samples: decodeWav(bytes).samples };
  } catch (err) {
    expect(err).toBeInstanceOf(RustAsrError);
    return { ok: false, code: (err as RustAsrError).code };
  }
}

describe('WAV seed corpus', () => {
  it.each(seeds('wav', '.wav'))('%s: both decoders agree, samples are finite, errors are RustAsrErrors', async (name) => {
    const bytes = new Uint8Array(readFileSync(join(FUZZ, 'wav', name)));
    const a = viaBuffer(bytes);
    for (const piece of [1, 5, bytes.length]) {
      const b = await viaStream(bytes, piece);
      if (a.ok && b.ok) expect(b.samples).toEqual(a.samples);
      else expect(b.ok ? 'ok' : b.code).toBe(a.ok ? 'ok' : a.code);
    }
    if (a.ok) {
      expect(a.samples.length).toBeGreaterThan(0);
      expect(a.samples.every((v) => Number.isFinite(v))).toBe(true);
    }
  });

  it('the coverage-guided corpus (test/fuzz/wav/corpus) replays through both decoders', async () => {
    const files = corpus('wav', ['.wav']).filter((f) => f.includes('/'));
    expect(files.length).toBeGreaterThan(20);
    const outcomes = new Set<string>();
    for (const rel of files) {
      const bytes = new Uint8Array(readFileSync(join(FUZZ, 'wav', rel)));
      const a = viaBuffer(bytes);
      outcomes.add(a.ok ? 'ok' : a.code);
      for (const piece of [1, 7, bytes.length]) {
        const b = await viaStream(bytes, piece);
        if (a.ok && b.ok) expect(b.samples, rel).toEqual(a.samples);
        else if (a.ok || b.ok) {
          // The one documented difference: WavDecoder validates every fmt chunk as it reads it, decodeWav
          // only the last one before the data. (Both failing with different codes is a matter of precedence.)
          expect({ rel, stream: b.ok ? 'ok' : b.code }).toEqual({ rel, stream: 'UNSUPPORTED_WAV_FORMAT' });
          expect(a.ok ? fmtTags(bytes) : 0, rel).toBeGreaterThan(1);
        }
      }
      if (a.ok) {
        expect(a.samples.length, rel).toBeGreaterThan(0);
        expect(a.samples.every((v) => Number.isFinite(v)), rel).toBe(true);
      }
    }
    // The corpus reaches every outcome of the parser.
    expect([...outcomes].sort()).toEqual(['EMPTY_AUDIO', 'INVALID_WAV', 'TRUNCATED_WAV', 'UNSUPPORTED_WAV_FORMAT', 'ok']);
  });

  it('a float64 sample beyond the float32 range is INVALID_WAV, not an Infinity sample (fuzz finding)', async () => {
    for (const big of [1e39, -3.5e38, Number.MAX_VALUE]) {
      const bytes = buildWav({ formatTag: 3, bits: 64, data: encodeSamples([0.1, big, 0.2], { bits: 64, float: true }) });
      expect(viaBuffer(bytes)).toEqual({ ok: false, code: 'INVALID_WAV' });
      expect(await viaStream(bytes, 3)).toEqual({ ok: false, code: 'INVALID_WAV' });
    }
    // The largest float32 itself is finite and kept.
    const edge = buildWav({ formatTag: 3, bits: 64, data: encodeSamples([3.4028234663852886e38], { bits: 64, float: true }) });
    expect(viaBuffer(edge)).toEqual({ ok: true, samples: Float32Array.of(3.4028234663852886e38) });
  });
});

describe('tokenizer seed corpus', () => {
  let tok: AsrTokenizer;
  beforeAll(async () => {
    tok = await loadTokenizer(goldenPath('models', 'tiny-a'));
  });

  it('every seed encodes to valid ids, decodes back to its NFC form, and builds a prompt', () => {
    for (const name of seeds('tokenizer', '.txt')) {
      const s = readFileSync(join(FUZZ, 'tokenizer', name), 'utf8');
      const ids = tok.encode(s);
      expect(ids.every((id) => Number.isInteger(id) && id >= 0 && id < tok.size), name).toBe(true);
      expect(tok.decode(ids), name).toBe(s.normalize('NFC'));
      if (!s.includes('<|audio_pad|>')) expect(buildPrompt(tok, { context: s, audioTokens: 3 }).ids.length).toBeGreaterThan(3);
    }
  });

  it('a leading U+FEFF survives decode and the stream decoder (fuzz finding)', () => {
    const s = '\ufeffhello';
    const ids = tok.encode(s);
    expect(tok.decode(ids)).toBe(s);
    const d = streamDecoder(tok);
    expect(ids.map((id) => d.push(id)).join('') + d.flush()).toBe(s);
  });

  it('a context holding the audio pad token is INVALID_OPTION', () => {
    expect(() => buildPrompt(tok, { context: 'x<|audio_pad|>y', audioTokens: 3 })).toThrow(expect.objectContaining({ code: 'INVALID_OPTION' }));
  });

  /** decode(encode(s)) for well-formed s: added tokens kept as written, NFC between them. */
  const expected = (s: string): string => {
    const contents = tok.addedTokens.map((t) => t.content).sort((a, b) => b.length - a.length);
    const re = new RegExp(contents.map((c) => c.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('|'), 'g');
    let out = '';
    let last = 0;
    for (const m of s.matchAll(re)) {
      out += s.slice(last, m.index).normalize('NFC') + m[0];
      last = m.index + m[0].length;
    }
    return out + s.slice(last).normalize('NFC');
  };

  /** decode(ids), the stream decoder and StreamingDetokenizer (no header) give the same text. */
  const decodeAllWays = (ids: number[], skipSpecial: boolean): string => {
    const full = tok.decode(ids, { skipSpecial });
    const sd = streamDecoder(tok, { skipSpecial });
    expect(ids.map((id) => sd.push(id)).join('') + sd.flush()).toBe(full);
    const det = new StreamingDetokenizer(tok, { expectHeader: false, skipSpecial });
    expect(ids.map((id) => det.push(id)).join('') + det.end()).toBe(full);
    return full;
  };

  it('NFC applies between added tokens, not across them: ">" + U+0338 after <|im_end|> stays as written', () => {
    const s = 'x<|im_end|>\u0338';
    expect(s.normalize('NFC')).toBe('x<|im_end|\u226f'); // whole-string NFC would eat the token's '>'
    const ids = tok.encode(s);
    expect(ids).toContain(tok.tokenToId('<|im_end|>'));
    expect(tok.decode(ids)).toBe(s);
  });

  it('the coverage-guided corpus (test/fuzz/tokenizer/corpus) encodes, round-trips and decodes incrementally', () => {
    const files = corpus('tokenizer', ['.txt', '.json']).filter((f) => f.includes('/'));
    expect(files.length).toBeGreaterThan(20);
    let illFormed = 0;
    for (const rel of files) {
      const s = readText(rel);
      const ids = tok.encode(s);
      expect(ids.every((id) => Number.isInteger(id) && id >= 0 && id < tok.size), rel).toBe(true);
      const text = decodeAllWays(ids, false);
      decodeAllWays(ids, true);
      if (wellFormed(s)) expect(text, rel).toBe(expected(s));
      else illFormed++;
      if (!s.includes('<|audio_pad|>')) {
        const p = buildPrompt(tok, { context: s, audioTokens: 3 });
        expect(Array.from(p.ids.subarray(p.audioPadStart, p.audioPadStart + 3)), rel).toEqual(Array(3).fill(tok.tokenToId('<|audio_pad|>')));
      } else {
        expect(() => buildPrompt(tok, { context: s, audioTokens: 3 }), rel).toThrow(expect.objectContaining({ code: 'INVALID_OPTION' }));
      }
    }
    expect(illFormed).toBeGreaterThan(0); // lone surrogates are in the corpus (as .json strings)
  });

  it('the detokenizer corpus (test/fuzz/detokenizer): id sequences decode the same all ways, never throw', () => {
    const files = corpus('detokenizer', ['.json']);
    expect(files.length).toBeGreaterThan(10);
    for (const rel of files) {
      const ids = (JSON.parse(readFileSync(join(FUZZ, 'detokenizer', rel), 'utf8')) as (number | string)[]).map(Number);
      decodeAllWays(ids, false);
      const text = decodeAllWays(ids, true);
      // With a header: all of the text, or what follows the first <asr_text>.
      const det = new StreamingDetokenizer(tok, { expectHeader: true, skipSpecial: true });
      const out = ids.map((id) => det.push(id)).join('') + det.end();
      const at = text.indexOf('<asr_text>');
      expect([text, at >= 0 ? text.slice(at + '<asr_text>'.length) : text], rel).toContain(out);
    }
  });
});
