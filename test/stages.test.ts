// Streaming audio stages: WavDecoder (WAV bytes -> mono float chunks) and Resampler (-> 16 kHz).
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

import { describe, expect, it } from 'vitest';

import { decodeWav } from '../src/audio/wav.js';
import { isRustAsrError } from '../src/errors.js';
import {
  MAX_CHUNK_FRAMES,
  MAX_OUTPUT_CHUNK,
  Resampler,
  WavDecoder,
  resample,
  resampledLength,
  type AudioChunk,
  type WavStreamFormat,
} from '../src/stages/index.js';

const GOLDEN_AUDIO = join(process.env.RUSTASR_GOLDEN_DIR ?? join(import.meta.dirname, '..', '..', 'shared', 'golden'), 'audio');
const golden = (name: string) => join(GOLDEN_AUDIO, name);
const haveGolden = existsSync(golden('en_5s.wav'));

// ---------------------------------------------------------------------------------------------------
// helpers

/** Deterministic PRNG (mulberry32). */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Splits `bytes` into pieces whose sizes come from `size()` (clamped to >= 1). */
function split(bytes: Uint8Array, size: () => number): Buffer[] {
  const out: Buffer[] = [];
  for (let p = 0; p < bytes.length; ) {
    const n = Math.max(1, Math.min(bytes.length - p, size()));
    out.push(Buffer.from(bytes.subarray(p, p + n)));
    p += n;
  }
  return out;
}

function concat(parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** Bit-exact comparison of two sample arrays (fast, unlike toEqual on long typed arrays). */
function expectSame(got: Float32Array, want: Float32Array): void {
  expect(got.length).toBe(want.length);
  const a = new Uint32Array(got.buffer, got.byteOffset, got.length);
  const b = new Uint32Array(want.buffer, want.byteOffset, want.length);
  let i = 0;
  while (i < a.length && a[i] === b[i]) i++;
  if (i < a.length) expect.fail(`sample ${i} differs: ${got[i]} != ${want[i]}`);
}

interface Decoded {
  samples: Float32Array;
  chunks: AudioChunk[];
  format: WavStreamFormat | null;
  formatEvents: WavStreamFormat[];
}

async function decodeStream(bytes: Uint8Array, size: () => number = () => bytes.length): Promise<Decoded> {
  const dec = new WavDecoder();
  const formatEvents: WavStreamFormat[] = [];
  dec.on('format', (f: WavStreamFormat) => formatEvents.push(f));
  const chunks: AudioChunk[] = [];
  await pipeline(Readable.from(split(bytes, size)), dec, async (source: AsyncIterable<AudioChunk>) => {
    for await (const c of source) chunks.push(c);
  });
  return { samples: concat(chunks.map((c) => c.samples)), chunks, format: dec.format, formatEvents };
}

async function expectCode(p: Promise<unknown>, code: string, message?: RegExp): Promise<void> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(isRustAsrError(err), `expected a RustAsrError ${code}, got ${String(err)}`).toBe(true);
  expect((err as { code: string }).code).toBe(code);
  if (message) expect((err as Error).message).toMatch(message);
}

interface WavSpec {
  formatTag?: number;
  channels?: number;
  rate?: number;
  bits?: number;
  /** Use WAVE_FORMAT_EXTENSIBLE with this SubFormat tag. */
  extensibleSubFormat?: number;
  data: Uint8Array;
  /** Declared data size (default: data.length). */
  dataSize?: number;
  before?: Uint8Array[];
  between?: Uint8Array[];
  after?: Uint8Array[];
}

function chunk(id: string, body: Uint8Array): Uint8Array {
  const out = new Uint8Array(8 + body.length + (body.length & 1));
  out.set(Buffer.from(id, 'latin1'), 0);
  new DataView(out.buffer).setUint32(4, body.length, true);
  out.set(body, 8);
  return out;
}

function makeWav(spec: WavSpec): Uint8Array {
  const channels = spec.channels ?? 1;
  const rate = spec.rate ?? 16000;
  const bits = spec.bits ?? 16;
  const ext = spec.extensibleSubFormat !== undefined;
  const fmt = new Uint8Array(ext ? 40 : 16);
  const v = new DataView(fmt.buffer);
  v.setUint16(0, ext ? 0xfffe : (spec.formatTag ?? 1), true);
  v.setUint16(2, channels, true);
  v.setUint32(4, rate, true);
  v.setUint32(8, (rate * channels * bits) / 8, true);
  v.setUint16(12, (channels * bits) / 8, true);
  v.setUint16(14, bits, true);
  if (ext) {
    v.setUint16(16, 22, true); // cbSize
    v.setUint16(18, bits, true); // valid bits
    v.setUint32(20, 0, true); // channel mask
    v.setUint16(24, spec.extensibleSubFormat!, true);
    fmt.set([0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xaa, 0x00, 0x38, 0x9b, 0x71], 26);
  }
  const dataHeader = new Uint8Array(8);
  dataHeader.set(Buffer.from('data', 'latin1'));
  new DataView(dataHeader.buffer).setUint32(4, spec.dataSize ?? spec.data.length, true);
  const parts = [
    ...(spec.before ?? []),
    chunk('fmt ', fmt),
    ...(spec.between ?? []),
    dataHeader,
    spec.data,
    ...(spec.data.length & 1 && spec.after ? [new Uint8Array(1)] : []),
    ...(spec.after ?? []),
  ];
  const body = concatBytes(parts);
  const head = new Uint8Array(12);
  head.set(Buffer.from('RIFF', 'latin1'));
  new DataView(head.buffer).setUint32(4, 4 + body.length, true);
  head.set(Buffer.from('WAVE', 'latin1'), 8);
  return concatBytes([head, body]);
}

function concatBytes(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

function int16Bytes(values: number[]): Uint8Array {
  const out = new Uint8Array(values.length * 2);
  const v = new DataView(out.buffer);
  values.forEach((x, i) => v.setInt16(2 * i, x, true));
  return out;
}

/** Decodes with 1-byte writes, random writes and one write; all must agree (and match decodeWav). */
async function decodeAllWays(bytes: Uint8Array, seed = 1): Promise<Float32Array> {
  const whole = await decodeStream(bytes);
  const bytewise = await decodeStream(bytes, () => 1);
  const r = rng(seed);
  const random = await decodeStream(bytes, () => 1 + Math.floor(r() * 7));
  expectSame(bytewise.samples, whole.samples);
  expectSame(random.samples, whole.samples);
  expectSame(whole.samples, decodeWav(bytes).samples);
  return whole.samples;
}

// ---------------------------------------------------------------------------------------------------
// WavDecoder

describe('WavDecoder', () => {
  const files = ['en_1p2s.wav', 'en_5s.wav', 'en_21s.wav', 'ru_11s.wav', 'en_5s_8k.wav', 'en_5s_44k1_stereo.wav'];
  for (const name of files) {
    it.runIf(haveGolden)(`decodes golden ${name} in random chunks exactly as decodeWav`, async () => {
      const bytes = readFileSync(golden(name));
      const ref = decodeWav(bytes);
      const r = rng(name.length * 7919);
      // Mostly small random writes, now and then a large one.
      const got = await decodeStream(bytes, () => (r() < 0.1 ? Math.floor(r() * 200_000) : 1 + Math.floor(r() * 5000)));
      expectSame(got.samples, ref.samples);
      expect(got.format).toEqual({
        format: 'wav/pcm',
        sampleRate: ref.info.sampleRate,
        channels: ref.info.channels,
        bitsPerSample: 16,
        encoding: 'pcm',
        formatTag: 1,
      });
      expect(got.formatEvents).toEqual([got.format]);
      for (const c of got.chunks) {
        expect(c.sampleRate).toBe(ref.info.sampleRate);
        expect(c.samples.length).toBeGreaterThan(0);
        expect(c.samples.length).toBeLessThanOrEqual(MAX_CHUNK_FRAMES);
      }
    });
  }

  it('16-bit mono PCM: every sample is int16 / 32768 exactly, at even and at odd byte offsets of the input', async () => {
    // The extremes, both signs, and a pseudo-random run long enough for several decode blocks.
    const r = rng(4242);
    const values = [-32768, -32767, -257, -256, -1, 0, 1, 255, 256, 32766, 32767];
    for (let i = 0; i < 20_000; i++) values.push(Math.floor(r() * 65536) - 32768);
    const want = Float32Array.from(values, (x) => x / 32768);
    const wav = makeWav({ data: int16Bytes(values) });
    // The same bytes at an odd offset of a larger buffer: the decoder cannot take an Int16Array view there.
    const shifted = new Uint8Array(wav.length + 1);
    shifted.set(wav, 1);
    for (const bytes of [wav, shifted.subarray(1)]) {
      expectSame(decodeWav(bytes).samples, want);
      expectSame((await decodeStream(bytes, () => 1 + Math.floor(r() * 777))).samples, want);
    }
  });

  it.runIf(haveGolden)('decodes a small golden file written 1 byte at a time', async () => {
    const bytes = readFileSync(golden('en_1p2s.wav'));
    const got = await decodeStream(bytes, () => 1);
    expectSame(got.samples, decodeWav(bytes).samples);
  });

  it.runIf(haveGolden)('down-mixes the 44.1 kHz stereo golden file by the mean of the channels', async () => {
    const bytes = readFileSync(golden('en_5s_44k1_stereo.wav'));
    const got = await decodeStream(bytes, () => 4093);
    const dv = new DataView(bytes.buffer, bytes.byteOffset + 44, bytes.length - 44);
    expect(got.format?.channels).toBe(2);
    expect(got.samples.length).toBe((bytes.length - 44) / 4);
    for (let i = 0; i < got.samples.length; i++) {
      const l = dv.getInt16(4 * i, true) / 32768;
      const r = dv.getInt16(4 * i + 2, true) / 32768;
      if (got.samples[i] !== Math.fround((l + r) / 2)) throw new Error(`frame ${i}: ${got.samples[i]} != mean(${l}, ${r})`);
    }
  });

  it('caps output chunks at MAX_CHUNK_FRAMES frames for one huge write', async () => {
    const frames = 3 * MAX_CHUNK_FRAMES + 17;
    const data = new Uint8Array(frames * 2);
    for (let i = 0; i < data.length; i++) data[i] = (i * 31) & 0xff;
    const got = await decodeStream(makeWav({ data }));
    expect(got.chunks.map((c) => c.samples.length)).toEqual([MAX_CHUNK_FRAMES, MAX_CHUNK_FRAMES, MAX_CHUNK_FRAMES, 17]);
  });

  it('decodes 8-bit unsigned PCM', async () => {
    const s = await decodeAllWays(makeWav({ bits: 8, data: Uint8Array.from([0, 64, 128, 192, 255]) }));
    expect(Array.from(s)).toEqual([-1, -0.5, 0, 0.5, 127 / 128]);
  });

  it('decodes 16-bit PCM', async () => {
    const s = await decodeAllWays(makeWav({ data: int16Bytes([-32768, -16384, 0, 16384, 32767]) }));
    expect(Array.from(s)).toEqual([-1, -0.5, 0, 0.5, Math.fround(32767 / 32768)]);
  });

  it('decodes 24-bit PCM', async () => {
    const vals = [-8388608, -4194304, -1, 0, 1, 4194304, 8388607];
    const data = new Uint8Array(vals.length * 3);
    vals.forEach((x, i) => data.set([x & 0xff, (x >> 8) & 0xff, (x >> 16) & 0xff], 3 * i));
    const s = await decodeAllWays(makeWav({ bits: 24, data }));
    expect(Array.from(s)).toEqual(vals.map((x) => Math.fround(x / 8388608)));
  });

  it('decodes 32-bit PCM', async () => {
    const vals = [-2147483648, -1073741824, 0, 1073741824, 2147483647];
    const data = new Uint8Array(vals.length * 4);
    vals.forEach((x, i) => new DataView(data.buffer).setInt32(4 * i, x, true));
    const s = await decodeAllWays(makeWav({ bits: 32, data }));
    expect(Array.from(s)).toEqual(vals.map((x) => Math.fround(x / 2147483648)));
  });

  it('decodes IEEE float 32 and 64', async () => {
    const vals = [-1, -0.25, 0, 0.125, 0.999, 1.5];
    const f32 = new Uint8Array(new Float32Array(vals).buffer);
    const f64 = new Uint8Array(new Float64Array(vals).buffer);
    const expected = vals.map((x) => Math.fround(x));
    expect(Array.from(await decodeAllWays(makeWav({ formatTag: 3, bits: 32, data: f32 })))).toEqual(expected);
    expect(Array.from(await decodeAllWays(makeWav({ formatTag: 3, bits: 64, data: f64 })))).toEqual(expected);
    const got = await decodeStream(makeWav({ formatTag: 3, bits: 64, data: f64 }));
    expect(got.format).toEqual({ format: 'wav/float', sampleRate: 16000, channels: 1, bitsPerSample: 64, encoding: 'float', formatTag: 3 });
  });

  it('decodes WAVE_FORMAT_EXTENSIBLE (PCM and float sub-formats)', async () => {
    const pcm = makeWav({ extensibleSubFormat: 1, data: int16Bytes([1000, -2000, 3000]) });
    expect(Array.from(await decodeAllWays(pcm))).toEqual([1000, -2000, 3000].map((x) => x / 32768));
    const flt = makeWav({ extensibleSubFormat: 3, bits: 32, data: new Uint8Array(new Float32Array([0.5, -0.75]).buffer) });
    expect(Array.from(await decodeAllWays(flt))).toEqual([0.5, -0.75]);
    const got = await decodeStream(flt, () => 3);
    expect(got.format?.encoding).toBe('float');
    expect(got.format?.formatTag).toBe(3);
  });

  it('down-mixes 3 channels by the mean', async () => {
    const s = await decodeAllWays(makeWav({ channels: 3, data: int16Bytes([3000, 6000, 9000, -300, 0, 300, 1, 2, 4]) }));
    expect(Array.from(s)).toEqual([6000 / 32768, 0, Math.fround(7 / 3 / 32768)]);
  });

  it('skips LIST chunks before fmt and between fmt and data, odd-sized ones padded, and ignores trailing chunks', async () => {
    const list = (n: number) => chunk('LIST', Uint8Array.from({ length: n }, (_, i) => (i * 13 + 7) & 0xff));
    const bytes = makeWav({
      before: [list(5), chunk('JUNK', new Uint8Array(0))],
      between: [list(27), chunk('fact', Uint8Array.from([1, 2, 3, 4])), list(1)],
      data: int16Bytes([100, -100, 200, -200, 300]),
      after: [list(9)],
    });
    expect(Array.from(await decodeAllWays(bytes))).toEqual([100, -100, 200, -200, 300].map((x) => x / 32768));
  });

  it('handles an odd-sized data chunk followed by another chunk', async () => {
    // 8-bit stereo: 5 bytes = 2 whole frames and half a frame (dropped); the pad byte and LIST are ignored.
    const bytes = makeWav({ bits: 8, channels: 2, data: Uint8Array.from([128, 192, 0, 0, 255]), after: [chunk('LIST', new Uint8Array(3))] });
    expect(Array.from(await decodeAllWays(bytes))).toEqual([0.25, -1]);
  });

  it('accepts the streaming data sizes 0 and 0xFFFFFFFF, dropping a partial trailing frame', async () => {
    for (const dataSize of [0, 0xffffffff]) {
      const bytes = makeWav({ data: Uint8Array.from([0, 64, 0, 192, 7]), dataSize });
      expect(Array.from(await decodeAllWays(bytes))).toEqual([0.5, -0.5]);
    }
  });

  describe('errors', () => {
    const ok = () => makeWav({ data: int16Bytes([1, 2, 3]) });

    it('non-WAV bytes -> INVALID_WAV (also fewer than 12 and zero bytes)', async () => {
      await expectCode(decodeStream(Buffer.from('this is certainly not a WAV file, just text')), 'INVALID_WAV');
      await expectCode(decodeStream(Buffer.from('this is certainly not a WAV file'), () => 1), 'INVALID_WAV');
      await expectCode(decodeStream(Buffer.from('abc')), 'INVALID_WAV');
      await expectCode(decodeStream(new Uint8Array(0)), 'INVALID_WAV');
      const rifx = ok();
      rifx.set(Buffer.from('AVI '), 8); // RIFF but not WAVE
      await expectCode(decodeStream(rifx, () => 1), 'INVALID_WAV');
    });

    it('unsupported codecs -> UNSUPPORTED_WAV_FORMAT naming the format tag', async () => {
      await expectCode(decodeStream(makeWav({ formatTag: 7, bits: 16, data: new Uint8Array(10) })), 'UNSUPPORTED_WAV_FORMAT', /μ-law \(G\.711\) WAV \(format tag 0x7\), 16 bits/);
      await expectCode(decodeStream(makeWav({ formatTag: 0x31, bits: 0, data: new Uint8Array(10) })), 'UNSUPPORTED_WAV_FORMAT', /GSM 6\.10 WAV \(format tag 0x31\)/);
      await expectCode(decodeStream(makeWav({ formatTag: 2, bits: 4, data: new Uint8Array(10) }), () => 3), 'UNSUPPORTED_WAV_FORMAT', /0x2\b/);
      await expectCode(decodeStream(makeWav({ extensibleSubFormat: 0x55, bits: 0, data: new Uint8Array(10) })), 'UNSUPPORTED_WAV_FORMAT', /MPEG Layer III \(MP3\) WAV \(format tag 0x55\)/);
      await expectCode(decodeStream(makeWav({ bits: 12, data: new Uint8Array(10) })), 'UNSUPPORTED_WAV_FORMAT', /12 bits/);
      await expectCode(decodeStream(makeWav({ formatTag: 3, bits: 16, data: new Uint8Array(10) })), 'UNSUPPORTED_WAV_FORMAT');
    });

    it('0 channels, 0 Hz, 500 kHz -> UNSUPPORTED_WAV_FORMAT', async () => {
      await expectCode(decodeStream(makeWav({ channels: 0, data: new Uint8Array(10) })), 'UNSUPPORTED_WAV_FORMAT', /0 channels/);
      await expectCode(decodeStream(makeWav({ rate: 0, data: new Uint8Array(10) })), 'UNSUPPORTED_WAV_FORMAT', /0 Hz/);
      await expectCode(decodeStream(makeWav({ rate: 500_000, data: new Uint8Array(10) })), 'UNSUPPORTED_WAV_FORMAT', /500000/);
      expect((await decodeStream(makeWav({ rate: 384_000, data: new Uint8Array(10) }))).format?.sampleRate).toBe(384_000);
    });

    it('a header-only file -> EMPTY_AUDIO (also a data chunk shorter than one frame)', async () => {
      const headerOnly = makeWav({ data: new Uint8Array(0) });
      expect(headerOnly.length).toBe(44);
      await expectCode(decodeStream(headerOnly), 'EMPTY_AUDIO');
      await expectCode(decodeStream(headerOnly, () => 1), 'EMPTY_AUDIO');
      await expectCode(decodeStream(makeWav({ channels: 2, data: new Uint8Array(3) })), 'EMPTY_AUDIO');
    });

    it('a truncated data chunk -> TRUNCATED_WAV', async () => {
      const full = makeWav({ data: new Uint8Array(1000) });
      await expectCode(decodeStream(full.subarray(0, 44 + 500), () => 37), 'TRUNCATED_WAV', /1000/);
      await expectCode(decodeStream(full.subarray(0, 44)), 'TRUNCATED_WAV');
    });

    it('a stream ending inside the header -> TRUNCATED_WAV', async () => {
      const full = ok();
      for (const n of [4, 8, 11, 12, 16, 20, 30, 36, 40, 43]) {
        await expectCode(decodeStream(full.subarray(0, n), () => 1), 'TRUNCATED_WAV');
      }
      // Inside an unknown chunk that precedes fmt.
      const withList = makeWav({ before: [chunk('LIST', new Uint8Array(100))], data: int16Bytes([1]) });
      await expectCode(decodeStream(withList.subarray(0, 60)), 'TRUNCATED_WAV');
      // A whole file without a data chunk.
      await expectCode(decodeStream(ok().subarray(0, 36)), 'TRUNCATED_WAV');
    });

    it('NaN / Inf float samples -> INVALID_WAV naming the sample index', async () => {
      const f = new Float32Array([0, 0.5, -0.5, NaN, 0.25]);
      await expectCode(decodeStream(makeWav({ formatTag: 3, bits: 32, data: new Uint8Array(f.buffer) }), () => 5), 'INVALID_WAV', /sample 3\b/);
      const d = new Float64Array(70_000);
      d[66_000] = Infinity;
      await expectCode(decodeStream(makeWav({ formatTag: 3, bits: 64, data: new Uint8Array(d.buffer) }), () => 10_007), 'INVALID_WAV', /sample 66000\b/);
    });

    it('a data chunk before fmt, or a short fmt chunk -> INVALID_WAV', async () => {
      const data = chunk('data', int16Bytes([1, 2]));
      const head = Buffer.concat([Buffer.from('RIFF'), Buffer.alloc(4), Buffer.from('WAVE')]);
      await expectCode(decodeStream(concatBytes([head, data])), 'INVALID_WAV', /before fmt/);
      await expectCode(decodeStream(concatBytes([head, chunk('fmt ', new Uint8Array(14)), data]), () => 2), 'INVALID_WAV', /fmt/);
    });
  });
});

// ---------------------------------------------------------------------------------------------------
// Resampler

function sine(n: number, freq: number, rate: number, amp = 0.5, phase = 0.3): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = amp * Math.sin((2 * Math.PI * freq * i) / rate + phase);
  return out;
}

/**
 * Least-squares fit of a sine at `freq` over the interior of `y` (edges of `margin` samples skipped).
 * Returns the tone's amplitude, the residual (everything else) relative to the tone in dB, and the error
 * against the ideal time-aligned sine `amp·sin(2π f k / rate + phase)` in dB (this also checks alignment).
 */
function toneFit(y: Float32Array, freq: number, rate: number, margin: number, amp = 0.5, phase = 0.3) {
  let cc = 0, ss = 0, cs = 0, yc = 0, ys = 0;
  for (let k = margin; k < y.length - margin; k++) {
    const w = (2 * Math.PI * freq * k) / rate;
    const c = Math.cos(w), s = Math.sin(w), v = y[k]!;
    cc += c * c; ss += s * s; cs += c * s; yc += v * c; ys += v * s;
  }
  const det = cc * ss - cs * cs;
  const a = (yc * ss - ys * cs) / det;
  const b = (ys * cc - yc * cs) / det;
  let res = 0, tone = 0, ideal = 0;
  for (let k = margin; k < y.length - margin; k++) {
    const w = (2 * Math.PI * freq * k) / rate;
    const fit = a * Math.cos(w) + b * Math.sin(w);
    const v = y[k]!;
    res += (v - fit) ** 2;
    tone += fit * fit;
    ideal += (v - amp * Math.sin(w + phase)) ** 2;
  }
  const toneRef = ((y.length - 2 * margin) * amp * amp) / 2;
  return {
    amplitude: Math.hypot(a, b),
    spuriousDb: 10 * Math.log10(res / tone),
    alignedErrorDb: 10 * Math.log10(ideal / toneRef),
    /** Total interior energy relative to the input tone (for stopband checks). */
    energyDb: 10 * Math.log10(y.subarray(margin, y.length - margin).reduce((e, v) => e + v * v, 0) / toneRef),
  };
}

async function resampleStream(input: Float32Array, rate: number, size: () => number, targetRate?: number): Promise<AudioChunk[]> {
  const parts: AudioChunk[] = [];
  for (let p = 0; p < input.length; ) {
    const n = Math.min(input.length - p, Math.max(0, size()));
    parts.push({ samples: input.slice(p, p + n), sampleRate: rate });
    p += n;
  }
  const out: AudioChunk[] = [];
  await pipeline(Readable.from(parts), new Resampler(targetRate === undefined ? {} : { targetRate }), async (source: AsyncIterable<AudioChunk>) => {
    for await (const c of source) out.push(c);
  });
  return out;
}

describe('resample / Resampler', () => {
  const margin = 400; // output samples skipped at each end (the onset / end of the tone)

  for (const from of [44100, 8000, 48000, 22050, 32000, 11025, 44101]) {
    it(`1 kHz sine at ${from} Hz -> 16 kHz: spurious energy < -70 dB, time-aligned`, () => {
      const y = resample(sine(from, 1000, from), from);
      expect(y.length).toBe(16000);
      const fit = toneFit(y, 1000, 16000, margin);
      expect(fit.spuriousDb).toBeLessThan(-70);
      expect(fit.alignedErrorDb).toBeLessThan(-70);
      expect(Math.abs(20 * Math.log10(fit.amplitude / 0.5))).toBeLessThan(0.01);
    });
  }

  it('passband: a 6 kHz tone at 48 kHz keeps its amplitude within 0.1 dB (7 kHz from 44.1 kHz too)', () => {
    for (const [from, f] of [[48000, 6000], [44100, 7000], [8000, 3500]] as const) {
      const fit = toneFit(resample(sine(from, f, from), from), f, 16000, margin);
      expect(Math.abs(20 * Math.log10(fit.amplitude / 0.5))).toBeLessThan(0.1);
      expect(fit.spuriousDb).toBeLessThan(-70);
    }
  });

  it('stopband: a 10 kHz tone at 48 kHz -> 16 kHz is attenuated by >= 70 dB (8.3 kHz from 44.1 kHz by >= 80 dB)', () => {
    expect(toneFit(resample(sine(48000, 10000, 48000), 48000), 6000, 16000, margin).energyDb).toBeLessThan(-70);
    expect(toneFit(resample(sine(44100, 8300, 44100), 44100), 7700, 16000, margin).energyDb).toBeLessThan(-80);
  });

  it('upsampling 8 kHz -> 16 kHz suppresses the image of a 3.5 kHz tone by >= 70 dB', () => {
    const y = resample(sine(8000, 3500, 8000), 8000);
    expect(toneFit(y, 3500, 16000, margin).spuriousDb).toBeLessThan(-70);
  });

  it('keeps DC gain at 1', () => {
    const y = resample(new Float32Array(44100).fill(0.5), 44100);
    for (let k = margin; k < y.length - margin; k++) expect(Math.abs(y[k]! - 0.5)).toBeLessThan(1e-4);
  });

  it('output length is ceil(n * to / from), streaming or not', async () => {
    for (const from of [44100, 8000, 48000, 22050, 44101, 12345]) {
      for (const n of [0, 1, 2, 3, 440, 441, 442, 1000, 4999]) {
        const want = Math.ceil((n * 16000) / from);
        expect(resampledLength(n, from)).toBe(want);
        expect(resample(new Float32Array(n), from).length).toBe(want);
      }
      const n = 7777;
      const out = await resampleStream(new Float32Array(n).fill(0.1), from, () => 1000);
      expect(out.reduce((t, c) => t + c.samples.length, 0)).toBe(Math.ceil((n * 16000) / from));
    }
  });

  it('output is identical however the input is chunked', async () => {
    const r = rng(42);
    for (const from of [44100, 8000, 48000, 44101, 22050]) {
      const x = new Float32Array(Math.round(from * 0.25));
      for (let i = 0; i < x.length; i++) x[i] = Math.sin(i * 0.05) * 0.3 + (r() - 0.5) * 0.2;
      const whole = resample(x, from);
      for (const size of [() => 1, () => Math.floor(r() * 3), () => Math.floor(r() * 3000), () => x.length]) {
        const out = await resampleStream(x, from, size);
        for (const c of out) {
          expect(c.sampleRate).toBe(16000);
          expect(c.samples.length).toBeLessThanOrEqual(MAX_OUTPUT_CHUNK);
        }
        expectSame(concat(out.map((c) => c.samples)), whole);
      }
    }
  });

  it('caps output chunks at MAX_OUTPUT_CHUNK samples', async () => {
    const out = await resampleStream(new Float32Array(100_000), 8000, () => 100_000);
    expect(out.slice(0, 3).map((c) => c.samples.length)).toEqual([MAX_OUTPUT_CHUNK, MAX_OUTPUT_CHUNK, MAX_OUTPUT_CHUNK]);
    expect(out.reduce((t, c) => t + c.samples.length, 0)).toBe(200_000);
    expect(Math.max(...out.map((c) => c.samples.length))).toBeLessThanOrEqual(MAX_OUTPUT_CHUNK);
  });

  it('passes same-rate input through untouched', async () => {
    const a = { samples: Float32Array.from([0.1, 0.2]), sampleRate: 16000 };
    const b = { samples: Float32Array.from([0.3]), sampleRate: 16000 };
    const out: AudioChunk[] = [];
    await pipeline(Readable.from([a, b]), new Resampler(), async (source: AsyncIterable<AudioChunk>) => {
      for await (const c of source) out.push(c);
    });
    expect(out[0]).toBe(a);
    expect(out[1]).toBe(b);
    const x = Float32Array.from([1, 2, 3]);
    expect(resample(x, 16000)).toEqual(x);
    // Another target rate.
    const up = await resampleStream(sine(16000, 1000, 16000), 16000, () => 999, 48000);
    expect(up.every((c) => c.sampleRate === 48000)).toBe(true);
    expect(toneFit(concat(up.map((c) => c.samples)), 1000, 48000, 1200).spuriousDb).toBeLessThan(-70);
  });

  it('rejects bad rates and a rate change mid-stream', async () => {
    expect(() => resample(new Float32Array(4), 0)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    expect(() => resample(new Float32Array(4), 44100.5)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    expect(() => new Resampler({ targetRate: -1 })).toThrow(expect.objectContaining({ code: 'INVALID_OPTION' }));
    const run = (chunks: AudioChunk[]) =>
      pipeline(Readable.from(chunks), new Resampler(), async (source: AsyncIterable<AudioChunk>) => {
        for await (const c of source) void c;
      });
    await expectCode(run([{ samples: new Float32Array(10), sampleRate: 500_000 }]), 'INVALID_ARGUMENT');
    await expectCode(
      run([
        { samples: new Float32Array(10), sampleRate: 44100 },
        { samples: new Float32Array(10), sampleRate: 48000 },
      ]),
      'INVALID_ARGUMENT',
      /changed/,
    );
  });
});

describe.runIf(haveGolden)('WavDecoder -> Resampler on golden audio', () => {
  it('44.1 kHz stereo -> 16 kHz equals resample(decodeWav) and matches en_5s.wav', async () => {
    const bytes = readFileSync(golden('en_5s_44k1_stereo.wav'));
    const r = rng(7);
    const out: AudioChunk[] = [];
    await pipeline(Readable.from(split(bytes, () => 1 + Math.floor(r() * 9000))), new WavDecoder(), new Resampler(), async (source: AsyncIterable<AudioChunk>) => {
      for await (const c of source) out.push(c);
    });
    const y = concat(out.map((c) => c.samples));
    const ref = decodeWav(bytes);
    expectSame(y, resample(ref.samples, 44100));
    expect(y.length).toBe(Math.ceil((ref.samples.length * 16000) / 44100));
    // The stereo file holds (left, 0.5 left), a 4.05 s excerpt of en_5s.wav starting 2400 samples in.
    const a16 = decodeWav(readFileSync(golden('en_5s.wav'))).samples;
    let err = 0;
    let sig = 0;
    for (let k = 0; k < y.length; k++) {
      const want = a16[k + 2400]!;
      err += (y[k]! / 0.75 - want) ** 2;
      sig += want * want;
    }
    expect(10 * Math.log10(sig / err)).toBeGreaterThan(45);
  });
});
