// The fuzz seed corpus (test/fuzz/) replayed through the oracles of scripts/fuzz-ts.mjs, plus the inputs the
// fuzzer found bugs with. The fuzzer itself: `npm run fuzz:ts -- --iterations N`.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { beforeAll, describe, expect, it } from 'vitest';

import { decodeWav } from '../src/audio/wav.js';
import { RustAsrError } from '../src/errors.js';
import { WavDecoder, type AudioChunk } from '../src/stages/index.js';
import { buildPrompt } from '../src/text/prompt.js';
import { loadTokenizer, type AsrTokenizer } from '../src/text/tokenizer.js';
import { buildWav, encodeSamples } from '../scripts/wav-builder.mjs';
import { goldenPath, REPO_ROOT } from './helpers/golden.js';

const FUZZ = join(REPO_ROOT, 'test', 'fuzz');
const seeds = (dir: string, ext: string) =>
  readdirSync(join(FUZZ, dir))
    .filter((f) => f.endsWith(ext))
    .sort();

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
    const d = tok.streamDecoder();
    expect(ids.map((id) => d.push(id)).join('') + d.flush()).toBe(s);
  });

  it('a context holding the audio pad token is INVALID_OPTION', () => {
    expect(() => buildPrompt(tok, { context: 'x<|audio_pad|>y', audioTokens: 3 })).toThrow(expect.objectContaining({ code: 'INVALID_OPTION' }));
  });
});
