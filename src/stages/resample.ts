// Sample-rate conversion to the model's rate (16 kHz by default): a windowed-sinc polyphase filter.
//
// Design (all rates are integers; L/M = to/from reduced by their gcd):
//  - the kernel is h(d) = 2·fc·sinc(2·fc·d)·kaiser(d/H, β = 9.6), d in input samples, with the -6 dB
//    cutoff fc at 0.96 of the lower Nyquist frequency and a transition band of 0.08 of it (passband flat
//    to 0.92, stopband from 1.00 of the lower Nyquist, so nothing aliases), and the Kaiser-formula length
//    for the ~96 dB stopband that β = 9.6 gives;
//  - output sample k sits at input time t_k = k·M/L exactly (integer phase arithmetic, so the output does
//    not depend on how the input is chunked); the filter is centred on t_k, so the output is time-aligned
//    with the input (zero phase: the group delay is compensated, as soxr/librosa do), the input being
//    zero before its start and after its end;
//  - when L·taps is small (44.1k -> 16k: L = 160) a table of all L phases is used exactly; otherwise a
//    table of P (<= 1024) phases with linear interpolation between neighbouring phases;
//  - the output length is ceil(n·to/from) (every output instant inside the input's duration), as
//    librosa.resample gives; the streaming Resampler emits the same samples as `resample` on the whole
//    input, the filter tail being flushed at the end of the stream.
import { Transform, type TransformCallback, type TransformOptions } from 'node:stream';

import { RustAsrError } from '../errors.js';
import type { AudioChunk } from '../audio/types.js';

/** The rate the model consumes. */
export const DEFAULT_TARGET_RATE = 16_000;
/** Highest input or target rate accepted. */
export const MAX_RESAMPLE_RATE = 384_000;
/** Most samples in one output chunk of the Resampler. */
export const MAX_OUTPUT_CHUNK = 65_536;

const KAISER_BETA = 9.6;
/** -6 dB point of the anti-aliasing / anti-imaging filter, as a fraction of the lower Nyquist frequency. */
const CUTOFF = 0.96;
/** Width of the transition band, as a fraction of the lower Nyquist frequency. */
const TRANSITION = 0.08;
/** Largest exact polyphase table (phases x taps) before switching to interpolated phases. */
const MAX_EXACT_TABLE = 1 << 20;
const MAX_INTERP_PHASES = 1024;
const MAX_INTERP_TABLE = 1 << 22;

interface Kernel {
  /** Output step in input samples is M/L. */
  L: number;
  M: number;
  /** Half the number of taps: output at t uses input samples floor(t)-H+1 .. floor(t)+H. */
  H: number;
  /** Taps per phase (2H). */
  K: number;
  /** Number of phase rows; exact tables have L rows, interpolated ones P + 1. */
  P: number;
  exact: boolean;
  table: Float32Array;
}

function gcd(a: number, b: number): number {
  while (b !== 0) [a, b] = [b, a % b];
  return a;
}

/** Zeroth-order modified Bessel function of the first kind (power series). */
function besselI0(x: number): number {
  const q = (x * x) / 4;
  let term = 1;
  let sum = 1;
  for (let k = 1; k < 500; k++) {
    term *= q / (k * k);
    sum += term;
    if (term < sum * 1e-17) break;
  }
  return sum;
}

const kernelCache = new Map<string, Kernel>();

function kernelFor(from: number, to: number): Kernel {
  const key = `${from}:${to}`;
  const cached = kernelCache.get(key);
  if (cached) return cached;
  const g = gcd(from, to);
  const L = to / g;
  const M = from / g;
  const nyquist = Math.min(from, to) / 2;
  const fc = (CUTOFF * nyquist) / from; // cycles per input sample
  const transition = (TRANSITION * nyquist) / from;
  const attenuation = KAISER_BETA / 0.1102 + 8.7; // dB, inverse of Kaiser's beta formula
  const order = (attenuation - 7.95) / (2.285 * 2 * Math.PI * transition);
  const H = Math.max(2, Math.ceil(order / 2));
  const K = 2 * H;
  const exact = L * K <= MAX_EXACT_TABLE;
  let P = L;
  if (!exact) {
    P = MAX_INTERP_PHASES;
    while (P > 128 && (P + 1) * K > MAX_INTERP_TABLE) P >>= 1;
  }
  const rows = exact ? L : P + 1;
  const table = new Float32Array(rows * K);
  const i0Beta = besselI0(KAISER_BETA);
  for (let r = 0; r < rows; r++) {
    const frac = r / P;
    for (let j = 0; j < K; j++) {
      const d = frac + (H - 1 - j);
      const u = d / H;
      if (u <= -1 || u >= 1) continue;
      const x = 2 * fc * d;
      const sinc = x === 0 ? 1 : Math.sin(Math.PI * x) / (Math.PI * x);
      const w = besselI0(KAISER_BETA * Math.sqrt(1 - u * u)) / i0Beta;
      table[r * K + j] = 2 * fc * sinc * w;
    }
  }
  const kernel: Kernel = { L, M, H, K, P, exact, table };
  if (kernelCache.size >= 8) kernelCache.delete(kernelCache.keys().next().value!);
  kernelCache.set(key, kernel);
  return kernel;
}

function checkRate(rate: unknown, what: string, code: 'INVALID_ARGUMENT' | 'INVALID_OPTION'): number {
  if (typeof rate !== 'number' || !Number.isInteger(rate) || rate < 1 || rate > MAX_RESAMPLE_RATE) {
    throw new RustAsrError(code, `${what} must be an integer from 1 to ${MAX_RESAMPLE_RATE} Hz (got ${String(rate)})`);
  }
  return rate;
}

/** Streaming polyphase state shared by `resample` and `Resampler`. */
class PolyphaseState {
  private readonly k: Kernel;
  /** Input history: buf[i] is the input sample at absolute index bufStart + i (negative = leading zeros). */
  private buf: Float32Array;
  private bufStart: number;
  private bufLen: number;
  private received = 0;
  /** Next output: integer input position and phase (t = ipos + phase / L). */
  private ipos = 0;
  private phase = 0;
  private produced = 0;

  constructor(from: number, to: number) {
    this.k = kernelFor(from, to);
    const H = this.k.H;
    this.buf = new Float32Array(Math.max(4 * this.k.K, 8192));
    this.bufStart = -(H - 1); // H-1 zeros of history before the first sample
    this.bufLen = H - 1;
  }

  /** Total output length for an input of n samples: ceil(n·L/M). */
  static outputLength(n: number, L: number, M: number): number {
    return Math.floor((n * L + M - 1) / M);
  }

  /** Feeds input (and, when `final`, the end of the stream); returns the output now computable. */
  process(input: Float32Array, final: boolean): Float32Array[] {
    this.append(input);
    this.received += input.length;
    const { L, M, H } = this.k;
    let target: number;
    if (final) {
      target = PolyphaseState.outputLength(this.received, L, M);
      this.append(new Float32Array(H)); // zeros after the end
    } else {
      // Output k needs input up to floor(t_k) + H, i.e. floor(k·M/L) <= received - H - 1.
      const limit = this.received - H;
      target = limit > 0 ? PolyphaseState.outputLength(limit, L, M) : 0;
    }
    const pieces: Float32Array[] = [];
    while (this.produced < target) {
      const out = new Float32Array(Math.min(MAX_OUTPUT_CHUNK, target - this.produced));
      this.run(out);
      pieces.push(out);
    }
    return pieces;
  }

  private run(out: Float32Array): void {
    const { L, M, H, K, P, exact, table } = this.k;
    const buf = this.buf;
    let ipos = this.ipos;
    let phase = this.phase;
    const n = out.length;
    for (let o = 0; o < n; o++) {
      const base = ipos - H + 1 - this.bufStart;
      if (exact) {
        const row = phase * K;
        let acc = 0;
        for (let j = 0; j < K; j++) acc += buf[base + j]! * table[row + j]!;
        out[o] = acc;
      } else {
        const pos = (phase * P) / L;
        const r = Math.floor(pos);
        const f = pos - r;
        const row0 = r * K;
        const row1 = row0 + K;
        let acc0 = 0;
        let acc1 = 0;
        for (let j = 0; j < K; j++) {
          const x = buf[base + j]!;
          acc0 += x * table[row0 + j]!;
          acc1 += x * table[row1 + j]!;
        }
        out[o] = acc0 + f * (acc1 - acc0);
      }
      phase += M;
      if (phase >= L) {
        ipos += Math.floor(phase / L);
        phase %= L;
      }
    }
    this.ipos = ipos;
    this.phase = phase;
    this.produced += n;
  }

  private append(input: Float32Array): void {
    if (input.length === 0) return;
    if (this.bufLen + input.length > this.buf.length) {
      // Drop history no longer needed: the next output uses samples from ipos - H + 1 on.
      const keepFrom = Math.max(0, this.ipos - this.k.H + 1 - this.bufStart);
      if (keepFrom > 0) {
        this.buf.copyWithin(0, keepFrom, this.bufLen);
        this.bufStart += keepFrom;
        this.bufLen -= keepFrom;
      }
      if (this.bufLen + input.length > this.buf.length) {
        const grown = new Float32Array(Math.max(this.bufLen + input.length, 2 * this.buf.length));
        grown.set(this.buf.subarray(0, this.bufLen));
        this.buf = grown;
      }
    }
    this.buf.set(input, this.bufLen);
    this.bufLen += input.length;
  }
}

function concat(pieces: Float32Array[]): Float32Array {
  if (pieces.length === 1) return pieces[0]!;
  let n = 0;
  for (const p of pieces) n += p.length;
  const out = new Float32Array(n);
  let o = 0;
  for (const p of pieces) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/**
 * Resamples a whole buffer from `from` Hz to `to` Hz (integers from 1 to 384000). Returns
 * ceil(samples.length · to / from) samples, time-aligned with the input; the same code as Resampler, so
 * the result equals the concatenated output of a Resampler fed the same samples in any chunking. Equal
 * rates return a copy.
 */
export function resample(samples: Float32Array, from: number, to: number = DEFAULT_TARGET_RATE): Float32Array {
  checkRate(from, 'the input sample rate', 'INVALID_ARGUMENT');
  checkRate(to, 'the target sample rate', 'INVALID_ARGUMENT');
  if (from === to) return samples.slice();
  return concat(new PolyphaseState(from, to).process(samples, true));
}

/** Output length of `resample` for n input samples. */
export function resampledLength(n: number, from: number, to: number = DEFAULT_TARGET_RATE): number {
  const g = gcd(from, to);
  return PolyphaseState.outputLength(n, to / g, from / g);
}

export interface ResamplerOptions extends Omit<TransformOptions, 'objectMode' | 'readableObjectMode' | 'writableObjectMode'> {
  /** Output rate in Hz (default 16000). */
  targetRate?: number;
}

/**
 * An objectMode stream.Transform from AudioChunks at any rate (1 Hz to 384 kHz, constant over the stream)
 * to AudioChunks at `targetRate` (16 kHz by default), at most MAX_OUTPUT_CHUNK samples each. Chunks
 * already at the target rate pass through untouched (the same objects). The filter state is carried
 * across chunks, so the output does not depend on the chunking; the tail is flushed when the input ends.
 * A chunk with a bad or changed sample rate fails the stream with INVALID_ARGUMENT.
 */
export class Resampler extends Transform {
  readonly targetRate: number;
  private inputRate: number | null = null;
  private state: PolyphaseState | null = null;

  constructor(options: ResamplerOptions = {}) {
    const { targetRate = DEFAULT_TARGET_RATE, ...rest } = options;
    super({ ...rest, objectMode: true });
    this.targetRate = checkRate(targetRate, 'targetRate', 'INVALID_OPTION');
  }

  override _transform(chunk: AudioChunk, _encoding: BufferEncoding, callback: TransformCallback): void {
    try {
      if (!chunk || !(chunk.samples instanceof Float32Array)) {
        throw new RustAsrError('INVALID_ARGUMENT', 'Resampler expects { samples: Float32Array, sampleRate } chunks');
      }
      const rate = checkRate(chunk.sampleRate, 'the chunk sample rate', 'INVALID_ARGUMENT');
      if (this.inputRate === null) {
        this.inputRate = rate;
        if (rate !== this.targetRate) this.state = new PolyphaseState(rate, this.targetRate);
      } else if (rate !== this.inputRate) {
        throw new RustAsrError('INVALID_ARGUMENT', `the sample rate changed mid-stream (${this.inputRate} -> ${rate} Hz)`);
      }
      if (this.state) this.pushAll(this.state.process(chunk.samples, false));
      else this.push(chunk);
      callback();
    } catch (err) {
      callback(err as Error);
    }
  }

  override _flush(callback: TransformCallback): void {
    if (this.state) this.pushAll(this.state.process(new Float32Array(0), true));
    callback();
  }

  private pushAll(pieces: Float32Array[]): void {
    for (const samples of pieces) this.push({ samples, sampleRate: this.targetRate } satisfies AudioChunk);
  }
}
