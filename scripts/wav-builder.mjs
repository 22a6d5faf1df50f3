// In-memory WAV (RIFF/WAVE) files for tests, the soak run and the fuzzer: any PCM / float layout, and
// deliberately broken headers (lying sizes, odd format tags, missing chunks). No dependencies.

/** Little-endian chunk: 4-char id, u32 size (or `size` when given, to lie), body, pad byte when odd. */
export function chunk(id, body, size = body.length) {
  const out = new Uint8Array(8 + body.length + (body.length & 1));
  for (let i = 0; i < 4; i++) out[i] = id.charCodeAt(i);
  new DataView(out.buffer).setUint32(4, size >>> 0, true);
  out.set(body, 8);
  return out;
}

/** Concatenates byte arrays. */
export function concatBytes(parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/**
 * The body of a fmt chunk. `extensible` writes the 40-byte WAVE_FORMAT_EXTENSIBLE layout with `formatTag`
 * as the SubFormat GUID's first two bytes.
 */
export function fmtBody({ formatTag = 1, channels = 1, sampleRate = 16000, bits = 16, blockAlign, extensible = false }) {
  const align = blockAlign ?? Math.max(1, channels * Math.ceil(bits / 8));
  const body = new Uint8Array(extensible ? 40 : 16);
  const v = new DataView(body.buffer);
  v.setUint16(0, extensible ? 0xfffe : formatTag, true);
  v.setUint16(2, channels, true);
  v.setUint32(4, sampleRate >>> 0, true);
  v.setUint32(8, (sampleRate * align) >>> 0, true);
  v.setUint16(12, align & 0xffff, true);
  v.setUint16(14, bits, true);
  if (extensible) {
    v.setUint16(16, 22, true);
    v.setUint16(18, bits, true);
    v.setUint32(20, 0, true);
    v.setUint16(24, formatTag, true);
    // the rest of the KSDATAFORMAT GUID: 0000-0010-8000-00aa00389b71
    body.set([0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xaa, 0x00, 0x38, 0x9b, 0x71], 26);
  }
  return body;
}

/**
 * A whole WAV file. `data` is the raw data-chunk body. Lies: `riffSize`, `dataSize` (declared sizes),
 * `before` / `after` (extra chunks before fmt / between fmt and data), `noFmt`, `noData`, `dataFirst`.
 */
export function buildWav(opts) {
  const { data = new Uint8Array(0), riffSize, dataSize, before = [], after = [], noFmt = false, noData = false, dataFirst = false } = opts;
  const fmt = noFmt ? [] : [chunk('fmt ', fmtBody(opts))];
  // A declared data size is written as is, and then the body is not padded.
  const dataChunks = noData ? [] : [dataSize !== undefined ? dataChunkRaw(data, dataSize) : chunk('data', data)];
  const chunks = dataFirst ? [...before, ...dataChunks, ...fmt, ...after] : [...before, ...fmt, ...after, ...dataChunks];
  const body = concatBytes(chunks);
  const head = new Uint8Array(12);
  head.set([0x52, 0x49, 0x46, 0x46], 0);
  new DataView(head.buffer).setUint32(4, (riffSize ?? body.length + 4) >>> 0, true);
  head.set([0x57, 0x41, 0x56, 0x45], 8);
  return concatBytes([head, body]);
}

function dataChunkRaw(data, size) {
  const out = new Uint8Array(8 + data.length);
  out.set([0x64, 0x61, 0x74, 0x61], 0);
  new DataView(out.buffer).setUint32(4, size >>> 0, true);
  out.set(data, 8);
  return out;
}

/**
 * Encodes interleaved float samples in [-1, 1] as PCM 8/16/24/32 (`float` false) or IEEE float 32/64.
 * PCM values are clamped and rounded.
 */
export function encodeSamples(samples, { bits = 16, float = false } = {}) {
  const bytes = bits / 8;
  const out = new Uint8Array(samples.length * bytes);
  const v = new DataView(out.buffer);
  for (let i = 0; i < samples.length; i++) {
    const x = samples[i];
    const p = i * bytes;
    if (float) {
      if (bits === 32) v.setFloat32(p, x, true);
      else v.setFloat64(p, x, true);
      continue;
    }
    const c = Math.max(-1, Math.min(1, x));
    switch (bits) {
      case 8:
        v.setUint8(p, Math.max(0, Math.min(255, Math.round(c * 128 + 128))));
        break;
      case 16:
        v.setInt16(p, Math.max(-32768, Math.min(32767, Math.round(c * 32768))), true);
        break;
      case 24: {
        const q = Math.max(-8388608, Math.min(8388607, Math.round(c * 8388608)));
        v.setUint8(p, q & 0xff);
        v.setUint8(p + 1, (q >> 8) & 0xff);
        v.setInt8(p + 2, q >> 16);
        break;
      }
      default:
        v.setInt32(p, Math.max(-2147483648, Math.min(2147483647, Math.round(c * 2147483648))), true);
    }
  }
  return out;
}

/** A WAV of mono samples, written with `channels` identical channels in the given layout. */
export function wavFromSamples(samples, { sampleRate = 16000, bits = 16, float = false, channels = 1, extensible = false } = {}) {
  let inter = samples;
  if (channels > 1) {
    inter = new Float32Array(samples.length * channels);
    for (let i = 0; i < samples.length; i++) for (let c = 0; c < channels; c++) inter[i * channels + c] = samples[i];
  }
  return buildWav({
    formatTag: float ? 3 : 1,
    channels,
    sampleRate,
    bits,
    extensible,
    data: encodeSamples(inter, { bits, float }),
  });
}

/** Deterministic PRNG (mulberry32) in [0, 1). */
export function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
