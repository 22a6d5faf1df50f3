// The two WAV readers: WavReader (incremental, the format decoder behind the AudioDecoder and WavDecoder
// stages) and decodeWav (a whole buffer). Both walk the file with the one RiffWalker and decode samples with
// the one set of codecs in ./wav-format.ts, so they decode every sample identically.
import { RustAsrError } from '../errors.js';
import { type DecodedBlock, type DecoderOptions, type FormatDecoder } from './decoder.js';
import type { SampleEncoding } from './types.js';
import { decodeUnits, MAX_CHUNK_FRAMES, RiffWalker, type WavCodecFormat } from './wav-format.js';

/**
 * Reads WAV (RIFF/WAVE, RF64, BW64) bytes in pieces of any size and yields blocks of at most MAX_CHUNK_FRAMES
 * frames, lazily: a huge write is decoded one block at a time as the blocks are pulled. A partial trailing
 * frame (or IMA ADPCM block) is dropped.
 */
export class WavReader implements FormatDecoder {
  private readonly walker: RiffWalker;
  private fmt: WavCodecFormat | undefined;
  private pending: Uint8Array[] = [];
  private carry = new Uint8Array(0);
  private carryLen = 0;
  private framesOut = 0;
  /** Called once when the data chunk begins (before its first block). */
  onFormat: ((fmt: WavCodecFormat) => void) | undefined;

  /**
   * `whole`: the bytes are a complete file (decodeWav's error wording). `raw`: headerless samples in this
   * format (raw PCM): every byte is data.
   */
  constructor(private readonly opts: DecoderOptions & { whole?: boolean; raw?: WavCodecFormat }) {
    if (opts.raw) {
      this.fmt = opts.raw;
      this.carry = new Uint8Array(opts.raw.unitBytes);
    }
    this.walker = new RiffWalker({
      onDataStart: (fmt) => {
        this.fmt = fmt;
        this.carry = new Uint8Array(fmt.unitBytes);
        this.onFormat?.(fmt);
      },
      onData: (bytes) => this.pending.push(bytes),
    });
  }

  get info(): WavCodecFormat | undefined {
    return this.fmt;
  }

  /** Frames decoded so far. */
  get frames(): number {
    return this.framesOut;
  }

  *write(bytes: Uint8Array): Generator<DecodedBlock> {
    if (this.opts.raw) {
      yield* this.decodeData(bytes);
      return;
    }
    this.walker.push(bytes);
    const parts = this.pending;
    this.pending = [];
    for (const part of parts) yield* this.decodeData(part);
  }

  *end(): Generator<DecodedBlock> {
    if (this.opts.raw) {
      if (this.framesOut === 0) throw new RustAsrError('EMPTY_AUDIO', 'the raw input holds no whole frame');
      return;
    }
    this.walker.end(this.opts.whole === true);
    if (this.framesOut === 0) throw new RustAsrError('EMPTY_AUDIO', 'the WAV data chunk holds no samples');
    yield* [];
  }

  free(): void {}

  private newBlock(frames: number): Float32Array[] {
    const n = this.opts.mono ? 1 : this.fmt!.channels;
    return Array.from({ length: n }, () => new Float32Array(frames));
  }

  private *decodeData(chunk: Uint8Array): Generator<DecodedBlock> {
    const fmt = this.fmt!;
    const ub = fmt.unitBytes;
    const uf = fmt.unitFrames;
    const unitsPerBlock = Math.max(1, Math.floor(MAX_CHUNK_FRAMES / uf));
    let start = 0;
    let left = chunk.length;
    let carryUnit = 0;
    if (this.carryLen > 0) {
      const take = Math.min(ub - this.carryLen, left);
      this.carry.set(chunk.subarray(0, take), this.carryLen);
      this.carryLen += take;
      start += take;
      left -= take;
      if (this.carryLen === ub) carryUnit = 1;
    }
    const total = carryUnit + Math.floor(left / ub);
    const restAt = start + (total - carryUnit) * ub;
    // The bytes after the last whole unit are carried into the next write before any block is yielded, so
    // the state is right whenever the consumer resumes.
    const rest = chunk.subarray(restAt);
    let done = 0;
    while (done < total) {
      const count = Math.min(unitsPerBlock, total - done);
      const block = this.newBlock(count * uf);
      const sink = this.opts.mono ? block[0]! : block;
      let o = 0;
      if (done === 0 && carryUnit === 1) {
        decodeUnits(this.carry, 0, 1, fmt, sink, 0, this.framesOut);
        this.carryLen = 0;
        o = 1;
      }
      decodeUnits(chunk, start, count - o, fmt, sink, o * uf, this.framesOut + o * uf);
      start += (count - o) * ub;
      this.framesOut += count * uf;
      done += count;
      if (done === total && rest.length > 0) this.keep(rest);
      yield { channels: block, sampleRate: fmt.sampleRate };
    }
    if (total === 0 && rest.length > 0) this.keep(rest);
  }

  private keep(rest: Uint8Array): void {
    this.carry.set(rest, this.carryLen);
    this.carryLen += rest.length;
  }
}

export interface WavInfo {
  sampleRate: number;
  channels: number;
  bitsPerSample: number;
  /** The sample encoding ('pcm', 'float', 'mulaw', 'alaw', 'ima-adpcm'). */
  format: SampleEncoding;
  /** Frames (samples per channel) decoded from the data chunk. */
  frames: number;
}

function concat(parts: Float32Array[], n: number): Float32Array {
  if (parts.length === 1 && parts[0]!.length === n) return parts[0]!;
  const out = new Float32Array(n);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/**
 * Parses a complete WAV file (RIFF, RF64 or BW64; PCM, float, μ-law, A-law or IMA ADPCM) and returns its
 * samples down-mixed to mono float32 in [-1, 1] (the mean of the channels). For planar channels and other
 * formats, use decodeAudio().
 */
export function decodeWav(buf: Uint8Array): { info: WavInfo; samples: Float32Array } {
  const reader = new WavReader({ mono: true, whole: true });
  const parts: Float32Array[] = [];
  for (const b of reader.write(buf)) parts.push(b.channels[0]!);
  for (const b of reader.end()) parts.push(b.channels[0]!);
  const fmt = reader.info!;
  const n = reader.frames;
  return {
    info: { sampleRate: fmt.sampleRate, channels: fmt.channels, bitsPerSample: fmt.bitsPerSample, format: fmt.encoding, frames: n },
    samples: concat(parts, n),
  };
}
