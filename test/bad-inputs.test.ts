// Bad inputs through the public API: every one fails with a RustAsrError whose code names the problem.
// WAV inputs go through all three entry points that parse WAV bytes: decodeWav / loadAudio (whole buffer),
// the streaming WavDecoder stage, and transcribe() (file bytes -> tokens). Model directories that
// test/model-errors.test.ts already covers (missing dir / weights / tensor / tokenizer file, wrong shape,
// dtypes, truncated weights, offsets outside the file, header length beyond the file, bad config) are not
// repeated here.
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { decodeWav, loadAudio, loadModel, RustAsrError, transcribe, type Model, type RustAsrErrorCode } from '../src/index.js';
import { WavDecoder, type AudioChunk } from '../src/stages/index.js';
import { buildWav, chunk, encodeSamples, wavFromSamples } from '../scripts/wav-builder.mjs';
import { goldenPath } from './helpers/golden.js';
import { readSafetensors, withEntry, writeSafetensors, type TensorEntry } from './helpers/safetensors.js';

const MODEL_DIR = goldenPath('models', 'tiny-a');
const scratch = mkdtempSync(join(tmpdir(), 'rustasr-bad-inputs-'));
let model: Model;

beforeAll(async () => {
  model = await loadModel(MODEL_DIR, { threads: 2 });
});
afterAll(() => {
  model.dispose();
  rmSync(scratch, { recursive: true, force: true });
});

/** The error a promise (or a function) fails with; fails the test if it succeeds or throws something else. */
async function errorOf(f: () => unknown): Promise<RustAsrError> {
  try {
    await f();
  } catch (err) {
    if (!(err instanceof RustAsrError)) throw new Error(`expected a RustAsrError, got ${String(err)}`, { cause: err });
    return err;
  }
  throw new Error('expected a failure');
}

/** Streams `bytes` through a WavDecoder in `piece`-byte writes; returns the decoded samples. */
async function streamDecode(bytes: Uint8Array, piece = 7): Promise<Float32Array> {
  const parts: Buffer[] = [];
  for (let p = 0; p < bytes.length; p += piece) parts.push(Buffer.from(bytes.subarray(p, p + piece)));
  const out: number[] = [];
  await pipeline(Readable.from(parts), new WavDecoder(), async (src: AsyncIterable<AudioChunk>) => {
    for await (const c of src) out.push(...c.samples);
  });
  return Float32Array.from(out);
}

/** Codes of the same bytes through decodeWav, loadAudio, WavDecoder and transcribe (undefined = success). */
async function codes(bytes: Uint8Array): Promise<{ decodeWav?: string; loadAudio?: string; stream?: string; transcribe?: string }> {
  const code = async (f: () => unknown) => {
    try {
      await f();
      return undefined;
    } catch (err) {
      if (!(err instanceof RustAsrError)) throw err;
      return err.code;
    }
  };
  return {
    decodeWav: await code(() => decodeWav(bytes)),
    loadAudio: await code(() => loadAudio(bytes, 16000)),
    stream: await code(() => streamDecode(bytes)),
    transcribe: await code(() => transcribe(bytes, { model, maxNewTokens: 1 })),
  };
}

const all = (c: RustAsrErrorCode) => ({ decodeWav: c, loadAudio: c, stream: c, transcribe: c });

const tone = (n: number, rate = 16000) => Float32Array.from({ length: n }, (_, i) => 0.3 * Math.sin((2 * Math.PI * 440 * i) / rate));
const pcm16 = (n: number) => encodeSamples(tone(n), { bits: 16 });

describe('bad WAV bytes', () => {
  it('an empty file is INVALID_WAV for the WAV readers, EMPTY_AUDIO for the any-format ones (bytes and path)', async () => {
    expect(await codes(new Uint8Array(0))).toEqual({ decodeWav: 'INVALID_WAV', loadAudio: 'EMPTY_AUDIO', stream: 'INVALID_WAV', transcribe: 'EMPTY_AUDIO' });
    const p = join(scratch, 'empty.wav');
    writeFileSync(p, new Uint8Array(0));
    expect((await errorOf(() => transcribe(p, { model, maxNewTokens: 1 }))).code).toBe('EMPTY_AUDIO');
    expect((await errorOf(() => loadAudio(p, 16000))).code).toBe('EMPTY_AUDIO');
  });

  it('a missing file is IO_ERROR', async () => {
    const p = join(scratch, 'nope.wav');
    expect((await errorOf(() => loadAudio(p, 16000))).code).toBe('IO_ERROR');
    expect((await errorOf(() => transcribe(p, { model, maxNewTokens: 1 }))).code).toBe('IO_ERROR');
  });

  it('non-WAV bytes are INVALID_WAV for the WAV readers; the any-format readers say what they are', async () => {
    const wavOnly = { decodeWav: 'INVALID_WAV', stream: 'INVALID_WAV' };
    const samples: [Uint8Array, string][] = [
      [new TextEncoder().encode('hello, this is not audio at all'), 'UNSUPPORTED_AUDIO_FORMAT'],
      [Uint8Array.from([0x49, 0x44, 0x33, 0x04, 0, 0, 0, 0, 0, 0x21, 0xff, 0xfb, 0x90, 0x64]), 'UNSUPPORTED_AUDIO_FORMAT'], // ID3 running past the end
      [Uint8Array.from([0x4f, 0x67, 0x67, 0x53, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0]), 'UNSUPPORTED_AUDIO_FORMAT'], // OggS without a packet
      [Uint8Array.from([0x66, 0x4c, 0x61, 0x43, 0, 0, 0, 0x22]), 'INVALID_AUDIO'], // fLaC without frames
      [buildWav({ data: pcm16(400) }).map((b, i) => (i >= 8 && i < 12 ? 0x41 : b)), 'UNSUPPORTED_AUDIO_FORMAT'], // RIFF....AAAA (not WAVE)
      [Uint8Array.from([0x52, 0x49, 0x46, 0x58, 0, 0, 0, 0, 0x57, 0x41, 0x56, 0x45]), 'UNSUPPORTED_AUDIO_FORMAT'], // RIFX (big-endian RIFF)
    ];
    for (const [b, any] of samples) expect(await codes(b)).toEqual({ ...wavOnly, loadAudio: any, transcribe: any });
  });

  it('a header without samples: EMPTY_AUDIO (data size 0), TRUNCATED_WAV (data size > 0)', async () => {
    expect(await codes(buildWav({ data: new Uint8Array(0) }))).toEqual(all('EMPTY_AUDIO'));
    expect(await codes(buildWav({ data: new Uint8Array(0), dataSize: 32000 }))).toEqual(all('TRUNCATED_WAV'));
    // Less than one frame (1 byte of a 16-bit sample) is no sample either.
    expect(await codes(buildWav({ data: new Uint8Array(1), dataSize: 1 }))).toEqual(all('EMPTY_AUDIO'));
  });

  it('a file that ends before its data chunk: the whole-buffer parser says INVALID_WAV, the stream TRUNCATED_WAV', async () => {
    // The whole-buffer parser cannot tell a short file from one that lacks the chunk; the stream knows it ended early.
    const riffOnly = buildWav({ noFmt: true, noData: true });
    const fmtOnly = buildWav({ noData: true });
    for (const b of [riffOnly, fmtOnly]) {
      expect(await codes(b)).toEqual({ decodeWav: 'INVALID_WAV', loadAudio: 'INVALID_WAV', stream: 'TRUNCATED_WAV', transcribe: 'TRUNCATED_WAV' });
    }
    // Cut inside the RIFF header itself (a prefix of 'RIFF....WAVE'): loadAudio cannot tell WAV yet, and
    // reads it as a stream would.
    expect(await codes(riffOnly.subarray(0, 8))).toEqual({
      decodeWav: 'INVALID_WAV',
      loadAudio: 'TRUNCATED_WAV',
      stream: 'TRUNCATED_WAV',
      transcribe: 'TRUNCATED_WAV',
    });
    // Cut inside the fmt chunk.
    expect((await codes(fmtOnly.subarray(0, 24))).stream).toBe('TRUNCATED_WAV');
  });

  it('a truncated data chunk is TRUNCATED_WAV', async () => {
    const whole = buildWav({ data: pcm16(8000) });
    const cut = whole.subarray(0, whole.length - 1000);
    expect(await codes(cut)).toEqual(all('TRUNCATED_WAV'));
  });

  it('a stream that ends early is TRUNCATED_WAV, whatever the write sizes', async () => {
    const whole = buildWav({ data: pcm16(4000) });
    for (const piece of [1, 3, 4096]) {
      const e = await errorOf(() => streamDecode(whole.subarray(0, whole.length - 3), piece));
      expect(e.code).toBe('TRUNCATED_WAV');
      expect(e.message).toMatch(/declares 8000 bytes/);
    }
  });

  it('RIFF sizes that lie are tolerated: the RIFF size is ignored, a too-small data size ends the data', async () => {
    const data = pcm16(1000);
    const ref = decodeWav(buildWav({ data })).samples;
    for (const riffSize of [0, 4, 0xffffffff, 10_000_000]) {
      const b = buildWav({ data, riffSize });
      expect(decodeWav(b).samples).toEqual(ref);
      expect(await streamDecode(b)).toEqual(ref);
    }
    // Data size smaller than the data present: only the declared bytes are samples (the rest is ignored).
    const small = buildWav({ data, dataSize: 400 });
    expect(decodeWav(small).samples).toEqual(ref.subarray(0, 200));
    expect(await streamDecode(small)).toEqual(ref.subarray(0, 200));
    // Unpatched streaming sizes (0 / 0xFFFFFFFF) mean "until the end".
    for (const dataSize of [0, 0xffffffff]) {
      expect(decodeWav(buildWav({ data, dataSize })).samples).toEqual(ref);
      expect(await streamDecode(buildWav({ data, dataSize }))).toEqual(ref);
    }
    // A data size larger than the file is a truncated file (see above), not a lie we can recover from.
    expect(await codes(buildWav({ data, dataSize: data.length + 2 }))).toEqual(all('TRUNCATED_WAV'));
  });

  it('μ-law, A-law and IMA ADPCM decode; MS ADPCM, MP3-in-WAV and other codecs are UNSUPPORTED_WAV_FORMAT', async () => {
    const decoded = [
      { formatTag: 7, bits: 8 }, // μ-law
      { formatTag: 6, bits: 8 }, // A-law
      { formatTag: 0x11, bits: 4, blockAlign: 256 }, // IMA ADPCM
      { formatTag: 7, bits: 8, extensible: true }, // μ-law as an EXTENSIBLE SubFormat
    ];
    for (const c of decoded) expect(await codes(buildWav({ ...c, data: new Uint8Array(1024) })), JSON.stringify(c)).toEqual({});
    const cases = [
      { formatTag: 2, bits: 4, blockAlign: 256 }, // MS ADPCM
      { formatTag: 0x55, bits: 0 }, // MP3 in WAV
      { formatTag: 0x31, bits: 0 }, // GSM 6.10
      { formatTag: 7, bits: 16 }, // μ-law of another width
      { formatTag: 1, bits: 12 }, // PCM with an odd width
      { formatTag: 3, bits: 16 }, // half floats
    ];
    for (const c of cases) {
      const e = await codes(buildWav({ ...c, data: new Uint8Array(1024) }));
      expect(e, JSON.stringify(c)).toEqual(all('UNSUPPORTED_WAV_FORMAT'));
    }
  });

  it('0 channels, 0 Hz and rates above 384 kHz are UNSUPPORTED_WAV_FORMAT', async () => {
    expect(await codes(buildWav({ channels: 0, data: pcm16(400) }))).toEqual(all('UNSUPPORTED_WAV_FORMAT'));
    expect(await codes(buildWav({ sampleRate: 0, data: pcm16(400) }))).toEqual(all('UNSUPPORTED_WAV_FORMAT'));
    for (const sampleRate of [384_001, 768_000, 0xffffffff]) {
      expect(await codes(buildWav({ sampleRate, data: pcm16(400) }))).toEqual(all('UNSUPPORTED_WAV_FORMAT'));
    }
    // 384 kHz itself is fine.
    expect(decodeWav(buildWav({ sampleRate: 384_000, data: pcm16(400) })).info.sampleRate).toBe(384_000);
  });

  it('a fmt chunk that is too short, or data before fmt, is INVALID_WAV', async () => {
    const shortFmt = concatRiff([chunk('fmt ', new Uint8Array(12)), chunk('data', pcm16(400))]);
    expect(await codes(shortFmt)).toEqual(all('INVALID_WAV'));
    const shortExt = concatRiff([chunk('fmt ', Uint8Array.from([0xfe, 0xff, 1, 0, 0x80, 0x3e, 0, 0, 0, 0x7d, 0, 0, 2, 0, 16, 0, 0, 0])), chunk('data', pcm16(400))]);
    expect(await codes(shortExt)).toEqual(all('INVALID_WAV'));
    expect(await codes(buildWav({ data: pcm16(400), dataFirst: true }))).toEqual(all('INVALID_WAV'));
  });

  it('NaN and ±Inf float samples are INVALID_WAV naming the sample', async () => {
    for (const bits of [32, 64]) {
      for (const bad of [NaN, Infinity, -Infinity]) {
        const x = Array.from(tone(1000));
        x[777] = bad;
        const b = buildWav({ formatTag: 3, bits, data: encodeSamples(x, { bits, float: true }) });
        expect(await codes(b)).toEqual(all('INVALID_WAV'));
        expect((await errorOf(() => decodeWav(b))).message).toContain('sample 777');
      }
    }
    // In a stereo file the bad sample poisons its frame.
    const st = Array.from(tone(800));
    st[301] = NaN;
    expect((await errorOf(() => decodeWav(buildWav({ formatTag: 3, bits: 32, channels: 2, data: encodeSamples(st, { bits: 32, float: true }) })))).message).toContain('sample 150');
  });

  it('huge float values (finite) are accepted as they are', async () => {
    const b = wavFromSamples(Float32Array.from(tone(4000), (v) => v * 1e30), { bits: 32, float: true });
    const r = await transcribe(b, { model, maxNewTokens: 2 });
    expect(r.tokens.length).toBeLessThanOrEqual(2);
  });
});

function concatRiff(chunks: Uint8Array[]): Uint8Array {
  const body = chunks.reduce((n, c) => n + c.length, 0);
  const out = new Uint8Array(12 + body);
  out.set([0x52, 0x49, 0x46, 0x46]);
  new DataView(out.buffer).setUint32(4, body + 4, true);
  out.set([0x57, 0x41, 0x56, 0x45], 8);
  let o = 12;
  for (const c of chunks) {
    out.set(c, o);
    o += c.length;
  }
  return out;
}

describe('audio the model cannot use', () => {
  it('no samples is EMPTY_AUDIO', async () => {
    expect((await errorOf(() => model.decode(new Float32Array(0), { maxNewTokens: 1 }).next())).code).toBe('EMPTY_AUDIO');
    expect((await errorOf(() => transcribe(new Float32Array(0), { model, maxNewTokens: 1 }))).code).toBe('EMPTY_AUDIO');
  });

  it('fewer than 201 samples at 16 kHz is AUDIO_TOO_SHORT; 201 decodes', async () => {
    for (const n of [1, 160, 200]) {
      const e = await errorOf(() => model.decode(tone(n), { maxNewTokens: 1 }).next());
      expect(e.code).toBe('AUDIO_TOO_SHORT');
      expect(e.message).toContain(`${n} samples`);
      expect((await errorOf(() => transcribe(wavFromSamples(tone(n)), { model, maxNewTokens: 1 }))).code).toBe('AUDIO_TOO_SHORT');
    }
    // 100 samples at 8 kHz resample to 200 at 16 kHz: still too short.
    expect((await errorOf(() => transcribe(wavFromSamples(tone(100, 8000), { sampleRate: 8000 }), { model, maxNewTokens: 1 }))).code).toBe(
      'AUDIO_TOO_SHORT',
    );
    const ok = await transcribe(tone(201), { model, maxNewTokens: 2 });
    expect(ok.tokens.length).toBeGreaterThan(0);
  });

  it('NaN samples given directly as a Float32Array are INVALID_ARGUMENT from the engine', async () => {
    const x = tone(4000);
    x[10] = NaN;
    const e = await errorOf(() => model.decode(x, { maxNewTokens: 1 }).next());
    expect(e.code).toBe('INVALID_ARGUMENT');
  });

  it('there is no length limit yet: maxSegmentSeconds splits long audio instead of rejecting it', async () => {
    // A limit option ("audio longer than N s -> error") does not exist; see docs/errors.md. A bad
    // maxSegmentSeconds is an option error.
    const e = await errorOf(() => transcribe(tone(4000), { model, maxNewTokens: 1, maxSegmentSeconds: -1 }));
    expect(['INVALID_OPTION', 'INVALID_ARGUMENT']).toContain(e.code);
  });
});

describe('bad model directories (beyond test/model-errors.test.ts)', () => {
  const source = MODEL_DIR;
  let n = 0;
  function brokenCopy(mutate: (dir: string) => void): string {
    const dir = join(scratch, `m${n++}`);
    mkdirSync(dir);
    for (const f of readdirSync(source)) copyFileSync(join(source, f), join(dir, f));
    mutate(dir);
    return dir;
  }
  const loadCode = async (dir: string) => (await errorOf(() => loadModel(dir, { threads: 1 }))).code;

  it('a missing config.json is MODEL_NOT_FOUND', async () => {
    expect(await loadCode(brokenCopy((d) => rmSync(join(d, 'config.json'))))).toBe('MODEL_NOT_FOUND');
  });

  it('a path that is a file, not a directory, is MODEL_NOT_FOUND', async () => {
    expect(await loadCode(join(source, 'config.json'))).toBe('MODEL_NOT_FOUND');
  });

  it('an empty or non-safetensors weights file is CORRUPT_WEIGHTS', async () => {
    expect(await loadCode(brokenCopy((d) => writeFileSync(join(d, 'model.safetensors'), new Uint8Array(0))))).toBe('CORRUPT_WEIGHTS');
    expect(await loadCode(brokenCopy((d) => writeFileSync(join(d, 'model.safetensors'), 'not a safetensors file at all')))).toBe(
      'CORRUPT_WEIGHTS',
    );
    // A header that is not JSON.
    const notJson = Buffer.concat([Buffer.from([16, 0, 0, 0, 0, 0, 0, 0]), Buffer.from('{"a": [1, 2, 3'), Buffer.alloc(64)]);
    expect(await loadCode(brokenCopy((d) => writeFileSync(join(d, 'model.safetensors'), notJson)))).toBe('CORRUPT_WEIGHTS');
  });

  it('safetensors offsets that are reversed, or disagree with the shape, are CORRUPT_WEIGHTS / TENSOR_SHAPE', async () => {
    // (Offsets past the end of the file: test/model-errors.test.ts.)
    const name = 'thinker.model.norm.weight'; // BF16 [64]: 128 bytes
    const reversed = brokenCopy((d) => {
      const p = join(d, 'model.safetensors');
      const parts = readSafetensors(p);
      const [b, e] = (parts.header[name] as TensorEntry).data_offsets;
      writeSafetensors(p, withEntry(parts, name, { data_offsets: [e, b] }));
    });
    expect(await loadCode(reversed)).toBe('CORRUPT_WEIGHTS');
    // The shape says 32 elements (64 bytes), the offsets span 128 bytes.
    const mismatch = brokenCopy((d) => {
      const p = join(d, 'model.safetensors');
      writeSafetensors(p, withEntry(readSafetensors(p), name, { shape: [32] }));
    });
    expect(['CORRUPT_WEIGHTS', 'TENSOR_SHAPE']).toContain(await loadCode(mismatch));
  });

  it('a corrupt vocab.json is INVALID_TOKENIZER, from ready() and from the first transcription', async () => {
    const dir = brokenCopy((d) => writeFileSync(join(d, 'vocab.json'), readFileSync(join(d, 'vocab.json'), 'utf8').slice(0, 1000)));
    // The tokenizer is built in the background: loading succeeds, the error surfaces where it is needed.
    const model = await loadModel(dir, { threads: 1 });
    try {
      expect((await errorOf(() => model.ready())).code).toBe('INVALID_TOKENIZER');
      const samples = new Float32Array(16000).map((_, i) => Math.sin(i / 10) * 0.1);
      expect((await errorOf(() => transcribe(samples, { model, maxNewTokens: 2 }))).code).toBe('INVALID_TOKENIZER');
    } finally {
      model.dispose();
    }
  });
});
