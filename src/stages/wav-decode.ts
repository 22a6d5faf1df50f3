// Streaming WAV (RIFF/WAVE) decoding: a Transform that takes the bytes of a WAV file in chunks of any size
// and emits mono float32 sample chunks as the data arrives. The format rules (and the helpers below) are
// shared with the whole-buffer parser in src/audio/wav.ts, so both decode every sample identically.
import { Transform, type TransformCallback, type TransformOptions } from 'node:stream';

import { RustAsrError } from '../errors.js';

/** A chunk of mono float samples, as emitted by WavDecoder and consumed / emitted by Resampler. */
export interface AudioChunk {
  /** Mono samples, nominally in [-1, 1]. */
  samples: Float32Array;
  /** Samples per second. */
  sampleRate: number;
}

/** The stream format of a WAV file, known once its fmt chunk has been read and the data chunk begins. */
export interface WavStreamFormat {
  sampleRate: number;
  channels: number;
  bitsPerSample: number;
  encoding: 'pcm' | 'float';
  /** The effective format tag (for WAVE_FORMAT_EXTENSIBLE, the first two bytes of the SubFormat GUID). */
  formatTag: number;
}

/** The raw fields of a fmt chunk, before any validation of the values. */
export interface RawWavFmt {
  formatTag: number;
  channels: number;
  sampleRate: number;
  blockAlign: number;
  bitsPerSample: number;
}

export const WAVE_FORMAT_PCM = 0x0001;
export const WAVE_FORMAT_IEEE_FLOAT = 0x0003;
export const WAVE_FORMAT_EXTENSIBLE = 0xfffe;
/** Highest sample rate the streaming decoder accepts. */
export const MAX_WAV_SAMPLE_RATE = 384_000;
/** Most frames WavDecoder puts in one output chunk. */
export const MAX_CHUNK_FRAMES = 65_536;

/** Bytes of a fmt chunk body that matter (the WAVE_FORMAT_EXTENSIBLE layout is 40 bytes). */
const FMT_BYTES_NEEDED = 40;

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
  if (formatTag === WAVE_FORMAT_EXTENSIBLE) {
    if (declaredSize < 40 || body.length < 40) {
      throw new RustAsrError('INVALID_WAV', 'WAVE_FORMAT_EXTENSIBLE fmt chunk is too short');
    }
    formatTag = view.getUint16(24, true); // first two bytes of the SubFormat GUID
  }
  return { formatTag, channels, sampleRate, blockAlign, bitsPerSample };
}

/**
 * Checks that a fmt chunk describes something we can decode: >= 1 channel, a non-zero rate (and at most
 * `maxSampleRate`), PCM 8/16/24/32-bit or IEEE float 32/64. Throws UNSUPPORTED_WAV_FORMAT otherwise.
 */
export function validateWavFmt(fmt: RawWavFmt, maxSampleRate = Infinity): WavStreamFormat {
  const { formatTag, channels, sampleRate, bitsPerSample: bits } = fmt;
  if (channels === 0) throw new RustAsrError('UNSUPPORTED_WAV_FORMAT', 'WAV declares 0 channels');
  if (sampleRate === 0) throw new RustAsrError('UNSUPPORTED_WAV_FORMAT', 'WAV declares a sample rate of 0 Hz');
  if (sampleRate > maxSampleRate) {
    throw new RustAsrError(
      'UNSUPPORTED_WAV_FORMAT',
      `WAV declares a sample rate of ${sampleRate} Hz; at most ${maxSampleRate} Hz is supported`,
    );
  }
  let encoding: 'pcm' | 'float';
  if (formatTag === WAVE_FORMAT_PCM && (bits === 8 || bits === 16 || bits === 24 || bits === 32)) encoding = 'pcm';
  else if (formatTag === WAVE_FORMAT_IEEE_FLOAT && (bits === 32 || bits === 64)) encoding = 'float';
  else {
    throw new RustAsrError(
      'UNSUPPORTED_WAV_FORMAT',
      `unsupported WAV encoding (format tag 0x${formatTag.toString(16)}, ${bits} bits); use PCM 8/16/24/32-bit or IEEE float 32/64`,
    );
  }
  return { sampleRate, channels, bitsPerSample: bits, encoding, formatTag };
}

/** Bytes per frame (one sample of every channel). The fmt chunk's blockAlign is not trusted. */
export function frameBytesOf(fmt: WavStreamFormat): number {
  return (fmt.bitsPerSample / 8) * fmt.channels;
}

type SampleReader = (dv: DataView, p: number) => number;

function readerFor(fmt: WavStreamFormat): SampleReader {
  if (fmt.encoding === 'float') {
    return fmt.bitsPerSample === 32 ? (dv, p) => dv.getFloat32(p, true) : (dv, p) => dv.getFloat64(p, true);
  }
  switch (fmt.bitsPerSample) {
    case 8:
      return (dv, p) => (dv.getUint8(p) - 128) / 128;
    case 16:
      return (dv, p) => dv.getInt16(p, true) / 32768;
    case 24:
      return (dv, p) => (dv.getUint8(p) | (dv.getUint8(p + 1) << 8) | (dv.getInt8(p + 2) << 16)) / 8388608;
    default:
      return (dv, p) => dv.getInt32(p, true) / 2147483648;
  }
}

/**
 * Decodes `frames` whole frames of `src` starting at byte `srcOffset` into `out[outOffset..]`, down-mixed
 * to mono by the mean of the channels. `firstFrameIndex` is the index of the first frame in the whole
 * stream, used to name a non-finite sample (INVALID_WAV).
 */
export function decodeFrames(
  src: Uint8Array,
  srcOffset: number,
  frames: number,
  fmt: WavStreamFormat,
  out: Float32Array,
  outOffset: number,
  firstFrameIndex: number,
): void {
  if (frames <= 0) return;
  const dv = new DataView(src.buffer, src.byteOffset + srcOffset, frames * frameBytesOf(fmt));
  const read = readerFor(fmt);
  const channels = fmt.channels;
  const bytes = fmt.bitsPerSample / 8;
  const checkFinite = fmt.encoding === 'float';
  let p = 0;
  for (let i = 0; i < frames; i++) {
    let v: number;
    if (channels === 1) {
      v = 0 + read(dv, p); // as the mean does: -0 becomes +0
      p += bytes;
    } else {
      let acc = 0;
      for (let c = 0; c < channels; c++, p += bytes) acc += read(dv, p);
      v = acc / channels;
    }
    // Math.fround: a float64 sample beyond the float32 range would become ±Infinity in `out`.
    if (checkFinite && !Number.isFinite(Math.fround(v))) {
      throw new RustAsrError('INVALID_WAV', `sample ${firstFrameIndex + i} is not a finite number`);
    }
    out[outOffset + i] = v;
  }
}

/** Parser states: what the next input bytes are. */
const State = { Riff: 0, ChunkHeader: 1, Fmt: 2, Skip: 3, Data: 4, Done: 5 } as const;
type State = (typeof State)[keyof typeof State];

const RIFF_MAGIC = [0x52, 0x49, 0x46, 0x46]; // 'RIFF'
const WAVE_MAGIC = [0x57, 0x41, 0x56, 0x45]; // 'WAVE'

function fourcc(b: Uint8Array, off: number): string {
  return String.fromCharCode(b[off]!, b[off + 1]!, b[off + 2]!, b[off + 3]!);
}

/**
 * A stream.Transform from WAV file bytes (Buffer / Uint8Array chunks of any size, down to one byte) to
 * objectMode `AudioChunk`s of mono float32 samples (the mean of the channels), emitted as the data
 * arrives, at most MAX_CHUNK_FRAMES frames each. The header is parsed incrementally: unknown chunks
 * (LIST, ...) are skipped wherever they fall, odd-sized chunks are padded, and everything after the
 * data chunk is ignored.
 *
 * Emits `'format'` (with a WavStreamFormat, also available as `.format`) when the data chunk begins.
 *
 * Errors (RustAsrError): INVALID_WAV for non-WAV bytes, a missing/short fmt chunk, data before fmt or a
 * NaN/Inf float sample; UNSUPPORTED_WAV_FORMAT for other codecs, 0 channels, 0 Hz or > 384 kHz;
 * TRUNCATED_WAV when the stream ends before the data chunk or before the data chunk's declared size (a
 * declared size of 0 or 0xFFFFFFFF means "until the end of the stream"); EMPTY_AUDIO when no whole
 * frame was read. An input of fewer than 12 bytes that is not a prefix of a RIFF/WAVE header (or is
 * empty) is INVALID_WAV. A partial trailing frame is dropped.
 */
export class WavDecoder extends Transform {
  private state: State = State.Riff;
  /** Header bytes being collected (RIFF header, chunk header or fmt body). */
  private readonly hdr = new Uint8Array(FMT_BYTES_NEEDED);
  private hdrLen = 0;
  /** Bytes of header wanted in the current state. */
  private need = 12;
  /** For Fmt: the chunk's declared size. */
  private chunkSize = 0;
  /** For Skip: bytes still to skip. */
  private skip = 0;
  private rawFmt: RawWavFmt | undefined;
  private fmt: WavStreamFormat | null = null;
  private frameBytes = 0;
  /** Data bytes still expected (Infinity for the streaming conventions). */
  private remaining = 0;
  private declaredDataSize = 0;
  /** A partial frame carried over between writes. */
  private carry = new Uint8Array(0);
  private carryLen = 0;
  private framesOut = 0;
  private bytesIn = 0;

  constructor(options?: Omit<TransformOptions, 'objectMode' | 'readableObjectMode' | 'writableObjectMode'>) {
    super({ ...options, readableObjectMode: true, writableObjectMode: false });
  }

  /** The stream format, or null until the data chunk begins. */
  get format(): WavStreamFormat | null {
    return this.fmt;
  }

  override _transform(chunk: Buffer | Uint8Array, _encoding: BufferEncoding, callback: TransformCallback): void {
    try {
      this.consume(chunk);
      callback();
    } catch (err) {
      callback(err as Error);
    }
  }

  override _flush(callback: TransformCallback): void {
    try {
      this.finish();
      callback();
    } catch (err) {
      callback(err as Error);
    }
  }

  private consume(chunk: Uint8Array): void {
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
            if ((at < 4 && b !== RIFF_MAGIC[at]) || (at >= 8 && b !== WAVE_MAGIC[at - 8])) {
              throw new RustAsrError('INVALID_WAV', 'not a WAV file (no RIFF/WAVE header)');
            }
            this.hdr[at] = b;
          }
          this.hdrLen += take;
          p += take;
          if (this.hdrLen === this.need) this.expectChunkHeader();
          break;
        }
        case State.ChunkHeader:
        case State.Fmt: {
          const take = Math.min(this.need - this.hdrLen, n - p);
          this.hdr.set(chunk.subarray(p, p + take), this.hdrLen);
          this.hdrLen += take;
          p += take;
          if (this.hdrLen === this.need) {
            if (this.state === State.ChunkHeader) this.onChunkHeader();
            else this.onFmt();
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
        case State.Data:
          p = this.onData(chunk, p);
          break;
        case State.Done:
          return;
      }
    }
  }

  private expectChunkHeader(): void {
    this.state = State.ChunkHeader;
    this.hdrLen = 0;
    this.need = 8;
  }

  private onChunkHeader(): void {
    const id = fourcc(this.hdr, 0);
    const size = new DataView(this.hdr.buffer).getUint32(4, true);
    if (id === 'fmt ') {
      this.state = State.Fmt;
      this.chunkSize = size;
      this.hdrLen = 0;
      this.need = Math.min(size, FMT_BYTES_NEEDED);
      if (this.need === 0) this.onFmt();
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

  private onFmt(): void {
    const size = this.chunkSize;
    this.rawFmt = parseFmtChunk(this.hdr.subarray(0, this.hdrLen), size);
    // Validate now, so a stream in an unsupported format fails before its data is read.
    validateWavFmt(this.rawFmt, MAX_WAV_SAMPLE_RATE);
    this.skipBytes(size - this.hdrLen + (size & 1));
  }

  private onDataHeader(size: number): void {
    if (!this.rawFmt) throw new RustAsrError('INVALID_WAV', 'data chunk before fmt chunk');
    const fmt = validateWavFmt(this.rawFmt, MAX_WAV_SAMPLE_RATE);
    this.fmt = fmt;
    this.frameBytes = frameBytesOf(fmt);
    this.carry = new Uint8Array(this.frameBytes);
    this.carryLen = 0;
    this.declaredDataSize = size;
    // A stream whose RIFF sizes were never patched (0 or 0xFFFFFFFF) runs until the end of the input.
    this.remaining = size === 0 || size === 0xffffffff ? Infinity : size;
    this.state = State.Data;
    this.emit('format', fmt);
  }

  /** Decodes the data bytes of `chunk` from `p`; returns the new position. */
  private onData(chunk: Uint8Array, p: number): number {
    const fmt = this.fmt!;
    const fb = this.frameBytes;
    const avail = Math.min(chunk.length - p, this.remaining);
    let start = p;
    let left = avail;
    let carryFrame = 0;
    if (this.carryLen > 0) {
      const take = Math.min(fb - this.carryLen, left);
      this.carry.set(chunk.subarray(start, start + take), this.carryLen);
      this.carryLen += take;
      start += take;
      left -= take;
      if (this.carryLen === fb) carryFrame = 1;
    }
    const direct = Math.floor(left / fb);
    const total = carryFrame + direct;
    let done = 0;
    while (done < total) {
      const count = Math.min(MAX_CHUNK_FRAMES, total - done);
      const out = new Float32Array(count);
      let o = 0;
      if (done === 0 && carryFrame === 1) {
        decodeFrames(this.carry, 0, 1, fmt, out, 0, this.framesOut);
        this.carryLen = 0;
        o = 1;
      }
      decodeFrames(chunk, start, count - o, fmt, out, o, this.framesOut + o);
      start += (count - o) * fb;
      this.framesOut += count;
      done += count;
      this.push({ samples: out, sampleRate: fmt.sampleRate } satisfies AudioChunk);
    }
    const rest = p + avail - start;
    if (rest > 0) {
      this.carry.set(chunk.subarray(start, start + rest), this.carryLen);
      this.carryLen += rest;
    }
    this.remaining -= avail;
    if (this.remaining === 0) this.state = State.Done;
    return p + avail;
  }

  private finish(): void {
    switch (this.state) {
      case State.Riff: {
        // A prefix of a RIFF/WAVE header (checked byte by byte in consume) is a truncated file.
        if (this.bytesIn === 0 || this.hdrLen < 4) {
          throw new RustAsrError('INVALID_WAV', `not a WAV file (${this.bytesIn} bytes, no RIFF/WAVE header)`);
        }
        throw new RustAsrError('TRUNCATED_WAV', `the WAV stream ended inside its RIFF header (${this.bytesIn} bytes)`);
      }
      case State.ChunkHeader:
      case State.Fmt:
      case State.Skip:
        throw new RustAsrError(
          'TRUNCATED_WAV',
          this.rawFmt
            ? `the WAV stream ended after ${this.bytesIn} bytes, before its data chunk`
            : `the WAV stream ended after ${this.bytesIn} bytes, before its fmt chunk`,
        );
      case State.Data:
        if (Number.isFinite(this.remaining) && this.remaining > 0) {
          throw new RustAsrError(
            'TRUNCATED_WAV',
            `data chunk declares ${this.declaredDataSize} bytes but the stream ended after ${
              this.declaredDataSize - this.remaining
            }`,
          );
        }
        break;
      case State.Done:
        break;
    }
    if (this.framesOut === 0) throw new RustAsrError('EMPTY_AUDIO', 'the WAV data chunk holds no samples');
  }
}
