// The WAV format rules, shared by both WAV readers (the whole-buffer decodeWav in ./wav.ts and the streaming
// WavReader used by the AudioDecoder / WavDecoder stages): the format tags and their names, the fmt chunk,
// what is supported, the sample codecs (PCM, IEEE float, G.711 μ-law / A-law, IMA ADPCM), and the one RIFF
// chunk walker (RIFF, RF64 and BW64 headers; ds64, fmt, fact and data chunks; unknown chunks skipped).
import { createRequire } from 'node:module';
import type WaveFileModule from 'wavefile';

import { RustAsrError } from '../errors.js';
import type { AudioStreamFormat, SampleEncoding } from './types.js';

export const WAVE_FORMAT_PCM = 0x0001;
export const WAVE_FORMAT_IEEE_FLOAT = 0x0003;
export const WAVE_FORMAT_ALAW = 0x0006;
export const WAVE_FORMAT_MULAW = 0x0007;
export const WAVE_FORMAT_IMA_ADPCM = 0x0011;
export const WAVE_FORMAT_EXTENSIBLE = 0xfffe;
/** Highest sample rate the WAV readers accept. */
export const MAX_WAV_SAMPLE_RATE = 384_000;
/** Most frames one decoded WAV chunk holds. */
export const MAX_CHUNK_FRAMES = 65_536;

/** Names of the WAV format tags people meet, for error messages. */
const FORMAT_TAG_NAMES: Readonly<Record<number, string>> = {
  0x0001: 'PCM',
  0x0002: 'Microsoft ADPCM',
  0x0003: 'IEEE float',
  0x0006: 'A-law (G.711)',
  0x0007: 'μ-law (G.711)',
  0x0010: 'OKI ADPCM',
  0x0011: 'IMA ADPCM',
  0x0014: 'G.723 ADPCM',
  0x0022: 'DSP Group TrueSpeech',
  0x0031: 'GSM 6.10',
  0x0040: 'G.721 ADPCM',
  0x0042: 'G.723.1',
  0x0050: 'MPEG Layer I/II',
  0x0055: 'MPEG Layer III (MP3)',
  0x0064: 'G.726 ADPCM',
  0x0065: 'G.722 ADPCM',
  0x00ff: 'AAC',
  0x0160: 'Windows Media Audio 1',
  0x0161: 'Windows Media Audio 2',
  0x0162: 'Windows Media Audio Pro',
  0x1610: 'AAC (ADTS)',
  0x6750: 'Vorbis',
  0xf1ac: 'FLAC',
};

/** The conversion command every "unsupported" message gives. */
export const CONVERT_HINT = 'convert it first, e.g. `ffmpeg -i INPUT -ar 16000 -ac 1 -c:a pcm_s16le OUTPUT.wav`';
const SUPPORTED_WAV = 'PCM 8/16/24/32-bit, IEEE float 32/64, μ-law, A-law (8-bit) or IMA ADPCM (4-bit)';

/** "GSM 6.10 WAV (format tag 0x31)", or "WAV format tag 0x1234" for a tag without a name. */
export function describeFormatTag(tag: number): string {
  const name = FORMAT_TAG_NAMES[tag];
  return name === undefined ? `WAV format tag 0x${tag.toString(16)}` : `${name} WAV (format tag 0x${tag.toString(16)})`;
}

/** The raw fields of a fmt chunk, before any validation of the values. */
export interface RawWavFmt {
  formatTag: number;
  channels: number;
  sampleRate: number;
  blockAlign: number;
  bitsPerSample: number;
  /** IMA ADPCM: wSamplesPerBlock from the extra bytes (0 when absent). */
  samplesPerBlock: number;
}

/** The format of a WAV data chunk, once its fmt chunk has been validated (the 'format' event of the decoders). */
export interface WavStreamFormat extends AudioStreamFormat {
  sampleRate: number;
  channels: number;
  bitsPerSample: number;
  encoding: SampleEncoding;
  formatTag: number;
}

/** A WAV (or raw PCM) format with what the sample decoder needs. */
export interface WavCodecFormat extends WavStreamFormat {
  /** Bytes of one decoding unit: a frame (one sample of every channel), or an IMA ADPCM block. */
  unitBytes: number;
  /** Frames in one decoding unit (1, or the samples per channel of an IMA ADPCM block). */
  unitFrames: number;
}

/** Bytes of a fmt chunk body that matter (the WAVE_FORMAT_EXTENSIBLE layout is 40 bytes). */
export const FMT_BYTES_NEEDED = 40;

/**
 * Reads the fields of a fmt chunk. `body` holds the first bytes of the chunk body (at least
 * min(declaredSize, 40) of them). Throws INVALID_WAV when the chunk is too short for its format.
 */
export function parseFmtChunk(body: Uint8Array, declaredSize: number): RawWavFmt {
  if (declaredSize < 16 || body.length < 16) throw new RustAsrError('INVALID_WAV', 'fmt chunk is too short');
  const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
  let formatTag = view.getUint16(0, true);
  const channels = view.getUint16(2, true);
  const sampleRate = view.getUint32(4, true);
  const blockAlign = view.getUint16(12, true);
  const bitsPerSample = view.getUint16(14, true);
  let samplesPerBlock = 0;
  if (formatTag === WAVE_FORMAT_EXTENSIBLE) {
    if (declaredSize < 40 || body.length < 40) {
      throw new RustAsrError('INVALID_WAV', 'WAVE_FORMAT_EXTENSIBLE fmt chunk is too short');
    }
    formatTag = view.getUint16(24, true); // first two bytes of the SubFormat GUID
  } else if (formatTag === WAVE_FORMAT_IMA_ADPCM && declaredSize >= 20 && body.length >= 20 && view.getUint16(16, true) >= 2) {
    samplesPerBlock = view.getUint16(18, true);
  }
  return { formatTag, channels, sampleRate, blockAlign, bitsPerSample, samplesPerBlock };
}

function unsupported(fmt: RawWavFmt): never {
  throw new RustAsrError(
    'UNSUPPORTED_WAV_FORMAT',
    `unsupported WAV encoding: ${describeFormatTag(fmt.formatTag)}, ${fmt.bitsPerSample} bits; ` +
      `rustasr reads ${SUPPORTED_WAV} WAV; ${CONVERT_HINT}`,
  );
}

/**
 * Checks that a fmt chunk describes something the readers decode: >= 1 channel, a non-zero rate (at most
 * `maxSampleRate`), PCM 8/16/24/32-bit, IEEE float 32/64, μ-law / A-law 8-bit or IMA ADPCM 4-bit. Throws
 * UNSUPPORTED_WAV_FORMAT (naming the format and giving the conversion command) otherwise.
 */
export function validateWavFmt(fmt: RawWavFmt, maxSampleRate = Infinity): WavCodecFormat {
  const { formatTag, channels, sampleRate, bitsPerSample: bits } = fmt;
  if (channels === 0) throw new RustAsrError('UNSUPPORTED_WAV_FORMAT', 'WAV declares 0 channels');
  if (sampleRate === 0) throw new RustAsrError('UNSUPPORTED_WAV_FORMAT', 'WAV declares a sample rate of 0 Hz');
  if (sampleRate > maxSampleRate) {
    throw new RustAsrError(
      'UNSUPPORTED_WAV_FORMAT',
      `WAV declares a sample rate of ${sampleRate} Hz; at most ${maxSampleRate} Hz is supported`,
    );
  }
  let encoding: SampleEncoding;
  let unitBytes = (bits / 8) * channels;
  let unitFrames = 1;
  if (formatTag === WAVE_FORMAT_PCM && (bits === 8 || bits === 16 || bits === 24 || bits === 32)) encoding = 'pcm';
  else if (formatTag === WAVE_FORMAT_IEEE_FLOAT && (bits === 32 || bits === 64)) encoding = 'float';
  else if (formatTag === WAVE_FORMAT_MULAW && bits === 8) encoding = 'mulaw';
  else if (formatTag === WAVE_FORMAT_ALAW && bits === 8) encoding = 'alaw';
  else if (formatTag === WAVE_FORMAT_IMA_ADPCM && bits === 4) {
    encoding = 'ima-adpcm';
    // A block: per channel a 4-byte header (first sample, step index), then 4-byte groups of 8 samples
    // interleaved by channel. The block size is blockAlign; its frame count follows from it.
    unitBytes = fmt.blockAlign;
    if (unitBytes < 4 * channels || (unitBytes - 4 * channels) % (4 * channels) !== 0) {
      throw new RustAsrError(
        'INVALID_WAV',
        `IMA ADPCM block size ${fmt.blockAlign} is not 4 bytes per channel plus whole 4-byte groups for ${channels} channel(s)`,
      );
    }
    unitFrames = ((unitBytes - 4 * channels) * 2) / channels + 1;
    if (fmt.samplesPerBlock !== 0 && fmt.samplesPerBlock !== unitFrames) {
      throw new RustAsrError('INVALID_WAV', `IMA ADPCM declares ${fmt.samplesPerBlock} samples per block; a ${fmt.blockAlign}-byte block holds ${unitFrames}`);
    }
  } else unsupported(fmt);
  return { format: `wav/${encoding}`, sampleRate, channels, bitsPerSample: bits, encoding, formatTag, unitBytes, unitFrames };
}

// ---- sample codecs -------------------------------------------------------------------------------------

let g711: { mulaw: Float32Array; alaw: Float32Array } | undefined;

/** The 256-entry G.711 decoding tables, from wavefile's codecs, as floats (x / 32768). */
function g711Tables(): { mulaw: Float32Array; alaw: Float32Array } {
  if (!g711) {
    // Loaded on first use (40-50 ms of the SDK's import otherwise, for a codec few inputs need).
    const wavefile = createRequire(import.meta.url)('wavefile') as typeof WaveFileModule;
    const all = Uint8Array.from({ length: 256 }, (_, i) => i);
    const table = (bitDepth: '8m' | '8a'): Float32Array => {
      const wf = new wavefile.WaveFile();
      wf.fromScratch(1, 8000, bitDepth, all);
      if (bitDepth === '8m') wf.fromMuLaw();
      else wf.fromALaw();
      const pcm = wf.getSamples(false, Int16Array) as unknown as Int16Array;
      return Float32Array.from(pcm, (v) => v / 32768);
    };
    g711 = { mulaw: table('8m'), alaw: table('8a') };
  }
  return g711;
}

type SampleReader = (src: Uint8Array, dv: DataView, p: number) => number;

function readerFor(fmt: WavCodecFormat): SampleReader {
  switch (fmt.encoding) {
    case 'float':
      return fmt.bitsPerSample === 32 ? (_s, dv, p) => dv.getFloat32(p, true) : (_s, dv, p) => dv.getFloat64(p, true);
    case 'mulaw': {
      const t = g711Tables().mulaw;
      return (s, _dv, p) => t[s[p]!]!;
    }
    case 'alaw': {
      const t = g711Tables().alaw;
      return (s, _dv, p) => t[s[p]!]!;
    }
    default:
      break;
  }
  switch (fmt.bitsPerSample) {
    case 8:
      return (_s, dv, p) => (dv.getUint8(p) - 128) / 128;
    case 16:
      return (_s, dv, p) => dv.getInt16(p, true) / 32768;
    case 24:
      return (_s, dv, p) => (dv.getUint8(p) | (dv.getUint8(p + 1) << 8) | (dv.getInt8(p + 2) << 16)) / 8388608;
    default:
      return (_s, dv, p) => dv.getInt32(p, true) / 2147483648;
  }
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Where decoded frames go: one mono array (the mean of the channels) or one array per channel. */
export type FrameSink = Float32Array | Float32Array[];

// IMA ADPCM (the step and index tables of the IMA/DVI ADPCM recommendation).
const IMA_STEPS = Int32Array.from([
  7, 8, 9, 10, 11, 12, 13, 14, 16, 17, 19, 21, 23, 25, 28, 31, 34, 37, 41, 45, 50, 55, 60, 66, 73, 80, 88, 97, 107, 118, 130, 143, 157, 173,
  190, 209, 230, 253, 279, 307, 337, 371, 408, 449, 494, 544, 598, 658, 724, 796, 876, 963, 1060, 1166, 1282, 1411, 1552, 1707, 1878, 2066,
  2272, 2499, 2749, 3024, 3327, 3660, 4026, 4428, 4871, 5358, 5894, 6484, 7132, 7845, 8630, 9493, 10442, 11487, 12635, 13899, 15289, 16818,
  18500, 20350, 22385, 24623, 27086, 29794, 32767,
]);
const IMA_INDEX = Int8Array.from([-1, -1, -1, -1, 2, 4, 6, 8, -1, -1, -1, -1, 2, 4, 6, 8]);

/** Decodes one IMA ADPCM block (`fmt.unitBytes` bytes at `off`) into planar int16 values. */
function decodeImaBlock(src: Uint8Array, off: number, fmt: WavCodecFormat, out: Int16Array[]): void {
  const ch = fmt.channels;
  for (let c = 0; c < ch; c++) {
    const h = off + 4 * c;
    let pred = (src[h]! | (src[h + 1]! << 8)) << 16 >> 16;
    let index = Math.min(src[h + 2]!, 88);
    const o = out[c]!;
    o[0] = pred;
    let n = 1;
    // Groups of 4 bytes (8 samples) per channel, interleaved: channel c's k-th group is at 4 * (k * ch + c).
    for (let g = off + 4 * ch + 4 * c; g < off + fmt.unitBytes; g += 4 * ch) {
      for (let b = 0; b < 4; b++) {
        const byte = src[g + b]!;
        for (let s = 0; s < 2; s++) {
          const nib = s === 0 ? byte & 0x0f : byte >> 4;
          // ((2 d + 1) step) / 8 with d the magnitude bits: the product that the reference's shift-and-add
          // approximates, as ffmpeg decodes (and encodes) it; the two differ by rounding only.
          const diff = ((2 * (nib & 7) + 1) * IMA_STEPS[index]!) >> 3;
          pred = nib & 8 ? Math.max(-32768, pred - diff) : Math.min(32767, pred + diff);
          index = Math.min(88, Math.max(0, index + IMA_INDEX[nib]!));
          o[n++] = pred;
        }
      }
    }
  }
}

/**
 * Decodes `units` whole units (frames, or IMA ADPCM blocks) of `src` from byte `srcOffset` into `out` from
 * frame `outOffset`: the mean of the channels into one array, or each channel into its own. `firstFrameIndex`
 * is the index of the first frame in the whole stream, used to name a non-finite float sample (INVALID_WAV).
 */
export function decodeUnits(
  src: Uint8Array,
  srcOffset: number,
  units: number,
  fmt: WavCodecFormat,
  out: FrameSink,
  outOffset: number,
  firstFrameIndex: number,
): void {
  if (units <= 0) return;
  const channels = fmt.channels;
  if (fmt.encoding === 'ima-adpcm') {
    const block = Array.from({ length: channels }, () => new Int16Array(fmt.unitFrames));
    for (let u = 0; u < units; u++) {
      decodeImaBlock(src, srcOffset + u * fmt.unitBytes, fmt, block);
      const at = outOffset + u * fmt.unitFrames;
      if (Array.isArray(out)) {
        for (let c = 0; c < channels; c++) {
          const o = out[c]!;
          const b = block[c]!;
          for (let i = 0; i < b.length; i++) o[at + i] = b[i]! / 32768;
        }
      } else {
        for (let i = 0; i < fmt.unitFrames; i++) {
          let acc = 0;
          for (let c = 0; c < channels; c++) acc += block[c]![i]! / 32768;
          out[at + i] = 0 + acc / channels;
        }
      }
    }
    return;
  }
  const frames = units;
  if (fmt.encoding === 'pcm' && fmt.bitsPerSample === 16 && channels === 1 && !Array.isArray(out)) {
    // The common case (16-bit mono PCM) without the per-sample reader: a typed view where the bytes are
    // aligned (little-endian, as every platform Node runs on), else the same arithmetic byte by byte.
    // Measured: the generic loop cost ~11 ms of an 11 s clip on a cold JIT.
    const at = src.byteOffset + srcOffset;
    if (LITTLE_ENDIAN && (at & 1) === 0) {
      const pcm = new Int16Array(src.buffer, at, frames);
      for (let i = 0; i < frames; i++) out[outOffset + i] = pcm[i]! / 32768;
    } else {
      for (let i = 0, p = srcOffset; i < frames; i++, p += 2) {
        out[outOffset + i] = ((src[p]! | (src[p + 1]! << 8)) << 16 >> 16) / 32768;
      }
    }
    return;
  }
  const dv = new DataView(src.buffer, src.byteOffset + srcOffset, frames * fmt.unitBytes);
  const bytes = src.subarray(srcOffset, srcOffset + frames * fmt.unitBytes);
  const read = readerFor(fmt);
  const size = fmt.bitsPerSample / 8;
  const checkFinite = fmt.encoding === 'float';
  let p = 0;
  if (Array.isArray(out)) {
    for (let i = 0; i < frames; i++) {
      for (let c = 0; c < channels; c++, p += size) {
        const v = read(bytes, dv, p);
        if (checkFinite && !Number.isFinite(Math.fround(v))) {
          throw new RustAsrError('INVALID_WAV', `sample ${firstFrameIndex + i} is not a finite number`);
        }
        out[c]![outOffset + i] = v;
      }
    }
    return;
  }
  for (let i = 0; i < frames; i++) {
    let v: number;
    if (channels === 1) {
      v = 0 + read(bytes, dv, p); // as the mean does: -0 becomes +0
      p += size;
    } else {
      let acc = 0;
      for (let c = 0; c < channels; c++, p += size) acc += read(bytes, dv, p);
      v = acc / channels;
    }
    // Math.fround: a float64 sample beyond the float32 range would become ±Infinity in `out`.
    if (checkFinite && !Number.isFinite(Math.fround(v))) {
      throw new RustAsrError('INVALID_WAV', `sample ${firstFrameIndex + i} is not a finite number`);
    }
    out[outOffset + i] = v;
  }
}

// ---- the chunk walker ------------------------------------------------------------------------------------

/** What the walker reports to its reader. */
export interface RiffHandler {
  /** The data chunk begins: its format, and its size in bytes (Infinity: until the end of the input). */
  onDataStart(fmt: WavCodecFormat, size: number): void;
  /** Bytes of the data chunk (a view of the input: copy what must outlive the call). */
  onData(bytes: Uint8Array): void;
}

const State = { Riff: 0, ChunkHeader: 1, Body: 2, Skip: 3, Data: 4, Done: 5 } as const;
type State = (typeof State)[keyof typeof State];

const MAGICS = ['RIFF', 'RF64', 'BW64'].map((m) => Array.from(m, (c) => c.charCodeAt(0)));
const WAVE = Array.from('WAVE', (c) => c.charCodeAt(0));
/** Bytes of a ds64 chunk body that matter: riff size, data size, sample count (8 bytes each). */
const DS64_BYTES = 24;
const U32_UNKNOWN = 0xffffffff;

function fourcc(b: Uint8Array, off: number): string {
  return String.fromCharCode(b[off]!, b[off + 1]!, b[off + 2]!, b[off + 3]!);
}

function u64(view: DataView, off: number): number {
  return view.getUint32(off, true) + view.getUint32(off + 4, true) * 2 ** 32;
}

/**
 * The one RIFF/WAVE chunk walker of both readers. Fed the bytes of a WAV file in pieces of any size (down to
 * one byte), it checks the RIFF/RF64/BW64 + WAVE header byte by byte, reads the ds64 (RF64/BW64: 64-bit sizes),
 * fmt and fact chunks, skips unknown chunks wherever they fall (odd sizes padded), validates the format before
 * the data begins, and hands the data chunk's bytes to the handler. Everything after the data chunk is ignored.
 *
 * A data size of 0 or 0xFFFFFFFF (a RIFF header that was never patched) means "until the end of the input";
 * in an RF64/BW64 file 0xFFFFFFFF means "the size in ds64".
 */
export class RiffWalker {
  private state: State = State.Riff;
  private readonly hdr = new Uint8Array(FMT_BYTES_NEEDED);
  private hdrLen = 0;
  private need = 12;
  private bodyId = '';
  private chunkSize = 0;
  private skip = 0;
  private rf64 = false;
  private ds64DataSize: number | undefined;
  private rawFmt: RawWavFmt | undefined;
  private fmt: WavCodecFormat | undefined;
  /** Data bytes still expected (Infinity: until the end of the input). */
  private remaining = 0;
  private declaredDataSize = 0;
  private bytesIn = 0;
  /** The fact chunk's frame count (compressed codecs), if any. */
  factFrames: number | undefined;

  constructor(private readonly handler: RiffHandler) {}

  /** The container: 'wav', or 'rf64' for RF64 / BW64 files (known after 4 bytes). */
  get container(): 'wav' | 'rf64' {
    return this.rf64 ? 'rf64' : 'wav';
  }

  get format(): WavCodecFormat | undefined {
    return this.fmt;
  }

  /** Feeds the next bytes. */
  push(chunk: Uint8Array): void {
    let p = 0;
    const n = chunk.length;
    this.bytesIn += n;
    while (p < n) {
      switch (this.state) {
        case State.Riff: {
          const take = Math.min(this.need - this.hdrLen, n - p);
          for (let i = 0; i < take; i++) {
            const at = this.hdrLen + i;
            const b = chunk[p + i]!;
            if (at < 4 ? !MAGICS.some((m) => m[at] === b && this.matches(m, at)) : at >= 8 && b !== WAVE[at - 8]) {
              throw new RustAsrError('INVALID_WAV', 'not a WAV file (no RIFF/WAVE header)');
            }
            this.hdr[at] = b;
          }
          this.hdrLen += take;
          p += take;
          if (this.hdrLen === this.need) {
            this.rf64 = fourcc(this.hdr, 0) !== 'RIFF';
            this.expectChunkHeader();
          }
          break;
        }
        case State.ChunkHeader:
        case State.Body: {
          const take = Math.min(this.need - this.hdrLen, n - p);
          this.hdr.set(chunk.subarray(p, p + take), this.hdrLen);
          this.hdrLen += take;
          p += take;
          if (this.hdrLen === this.need) {
            if (this.state === State.ChunkHeader) this.onChunkHeader();
            else this.onBody();
          }
          break;
        }
        case State.Skip: {
          const take = Math.min(this.skip, n - p);
          this.skip -= take;
          p += take;
          if (this.skip === 0) this.expectChunkHeader();
          break;
        }
        case State.Data: {
          const take = Math.min(n - p, this.remaining);
          if (take > 0) this.handler.onData(chunk.subarray(p, p + take));
          p += take;
          this.remaining -= take;
          if (this.remaining === 0) this.state = State.Done;
          break;
        }
        case State.Done:
          return;
      }
    }
  }

  /** True while the header bytes so far match magic `m` (so 'RIFF' and 'RF64' can share a first byte). */
  private matches(m: number[], at: number): boolean {
    for (let i = 0; i < at; i++) if (this.hdr[i] !== m[i]) return false;
    return true;
  }

  private expectChunkHeader(): void {
    this.state = State.ChunkHeader;
    this.hdrLen = 0;
    this.need = 8;
  }

  private onChunkHeader(): void {
    const id = fourcc(this.hdr, 0);
    const size = new DataView(this.hdr.buffer).getUint32(4, true);
    if (id === 'fmt ' || id === 'ds64' || id === 'fact') {
      this.state = State.Body;
      this.bodyId = id;
      this.chunkSize = size;
      this.hdrLen = 0;
      this.need = Math.min(size, id === 'fmt ' ? FMT_BYTES_NEEDED : id === 'ds64' ? DS64_BYTES : 4);
      if (this.need === 0) this.onBody();
    } else if (id === 'data') {
      this.onDataHeader(size);
    } else {
      this.skipBytes(size + (size & 1));
    }
  }

  private skipBytes(count: number): void {
    if (count === 0) {
      this.expectChunkHeader();
    } else {
      this.state = State.Skip;
      this.skip = count;
    }
  }

  private onBody(): void {
    const size = this.chunkSize;
    const body = this.hdr.subarray(0, this.hdrLen);
    const view = new DataView(body.buffer, 0, body.length);
    if (this.bodyId === 'fmt ') {
      this.rawFmt = parseFmtChunk(body, size);
      // Validate now, so a stream in an unsupported format fails before its data is read.
      validateWavFmt(this.rawFmt, MAX_WAV_SAMPLE_RATE);
    } else if (this.bodyId === 'ds64') {
      if (body.length < DS64_BYTES) throw new RustAsrError('INVALID_WAV', 'ds64 chunk is too short');
      this.ds64DataSize = u64(view, 8);
    } else if (body.length === 4) {
      this.factFrames = view.getUint32(0, true);
    }
    this.skipBytes(size - this.hdrLen + (size & 1));
  }

  private onDataHeader(size: number): void {
    if (!this.rawFmt) throw new RustAsrError('INVALID_WAV', 'data chunk before fmt chunk');
    const fmt = { ...validateWavFmt(this.rawFmt, MAX_WAV_SAMPLE_RATE) };
    fmt.format = `${this.container}/${fmt.encoding}`;
    this.fmt = fmt;
    let bytes: number;
    if (this.rf64 && size === U32_UNKNOWN) {
      if (this.ds64DataSize === undefined) throw new RustAsrError('INVALID_WAV', `${fourcc(this.hdr, 0)} file without a ds64 chunk`);
      bytes = this.ds64DataSize;
    } else bytes = size;
    this.declaredDataSize = bytes;
    // A stream whose RIFF sizes were never patched (0 or 0xFFFFFFFF) runs until the end of the input.
    this.remaining = bytes === 0 || (!this.rf64 && bytes === U32_UNKNOWN) ? Infinity : bytes;
    this.state = State.Data;
    this.handler.onDataStart(fmt, this.remaining);
  }

  /**
   * The input has ended: throws when it ended before or inside the data chunk. `whole` (a complete file
   * in a buffer): a file without a header, fmt or data chunk is INVALID_WAV; a stream that ends before them
   * is TRUNCATED_WAV (a prefix of a valid header, as far as it goes).
   */
  end(whole: boolean): void {
    switch (this.state) {
      case State.Riff:
        if (whole || this.bytesIn === 0 || this.hdrLen < 4) {
          throw new RustAsrError('INVALID_WAV', `not a WAV file (${this.bytesIn} bytes, no RIFF/WAVE header)`);
        }
        throw new RustAsrError('TRUNCATED_WAV', `the WAV stream ended inside its RIFF header (${this.bytesIn} bytes)`);
      case State.ChunkHeader:
      case State.Body:
      case State.Skip:
        // A fmt chunk cut by the end of the input is still read for what it says (an unsupported format is
        // named as such rather than as a missing chunk).
        if (this.state === State.Body && this.bodyId === 'fmt ' && this.hdrLen >= 16) {
          validateWavFmt(parseFmtChunk(this.hdr.subarray(0, this.hdrLen), this.chunkSize), MAX_WAV_SAMPLE_RATE);
        }
        if (whole) throw new RustAsrError('INVALID_WAV', this.rawFmt ? 'no data chunk' : 'no fmt chunk');
        throw new RustAsrError(
          'TRUNCATED_WAV',
          this.rawFmt
            ? `the WAV stream ended after ${this.bytesIn} bytes, before its data chunk`
            : `the WAV stream ended after ${this.bytesIn} bytes, before its fmt chunk`,
        );
      case State.Data:
        if (Number.isFinite(this.remaining) && this.remaining > 0) {
          const got = this.declaredDataSize - this.remaining;
          throw new RustAsrError(
            'TRUNCATED_WAV',
            whole
              ? `data chunk declares ${this.declaredDataSize} bytes but only ${got} remain`
              : `data chunk declares ${this.declaredDataSize} bytes but the stream ended after ${got}`,
          );
        }
        break;
      case State.Done:
        break;
    }
  }
}
