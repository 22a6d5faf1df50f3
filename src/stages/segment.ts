// Segmentation of long audio for the model: 16 kHz mono chunks in, whole segments out.
//
// The model needs a whole segment before it can start (the mel is normalised by the segment's own maximum
// and the prompt holds every audio token), so audio is collected into segments. Audio no longer than
// `maxSeconds` is one segment. Longer audio is cut at low energy, as the official qwen_asr package
// (`split_audio_into_chunks` in qwen_asr/inference/utils.py, MAX_ASR_INPUT_SECONDS = 1200) does, with one
// deliberate difference: the official search runs ±`searchExpandSeconds` around the target, so a segment can
// run up to 5 s past the maximum, and with a maximum below 5 s the search reaches back to the segment start
// (a quiet opening then gives one-sample segments: 803 of 805 cues on a 5 s clip at 3 s). Here:
//
//  - the cut lies within [start + max(MIN_SEGMENT_SECONDS, maxSeconds - searchExpandSeconds), start + maxSeconds]:
//    a maximum is a maximum, and no segment but the last is shorter than the official minimum (0.5 s);
//  - inside that range, the window of `minWindowMs` (100 ms) samples whose sum of |x| is lowest is found, and
//    the cut goes at the quietest sample inside that window; on ties the latest wins (the official code takes
//    the first), so a long silence is cut near the maximum rather than into many short silent segments;
//  - the pieces tile the input exactly (no overlap, no gap); a piece shorter than MIN_SEGMENT_SECONDS is
//    zero-padded at its end to that length (only the last can be). Audio that is not split is never padded.
//
// Streaming: a cut is decided as soon as more than `maxSeconds` of audio past the segment start have arrived
// (the whole search range is then there), which gives exactly the cuts of the whole-input algorithm. So the
// segmenter holds at most that much audio (plus one input chunk), and segment k can be decoded downstream
// while segment k + 1 is still arriving.
import { Transform, type TransformCallback, type TransformOptions } from 'node:stream';

import { RustAsrError } from '../errors.js';
import { DEFAULT_TARGET_RATE } from './resample.js';
import type { AudioChunk } from './wav-decode.js';

/** Longest segment decoded in one pass, in seconds (the official MAX_ASR_INPUT_SECONDS). */
export const MAX_SEGMENT_SECONDS = 1200;
/** Half-width of the range searched for a quiet cut around the target, in seconds (official: 5.0). */
export const SEARCH_EXPAND_SECONDS = 5;
/** Length of the energy window of the cut search, in milliseconds (official: 100). */
export const MIN_WINDOW_MS = 100;
/** Pieces of split audio shorter than this are zero-padded to it, in seconds (official MIN_ASR_INPUT_SECONDS). */
export const MIN_SEGMENT_SECONDS = 0.5;

/** One segment of 16 kHz mono audio, decoded by the model in one pass. */
export interface AudioSegment {
  /** 0-based position of the segment in the stream. */
  index: number;
  /** The samples (zero-padded to MIN_SEGMENT_SECONDS when the audio was split and the piece is shorter). */
  samples: Float32Array;
  sampleRate: number;
  /** Index of the segment's first sample in the whole input. */
  startSample: number;
  /** Number of input samples the segment covers (before any padding). */
  sampleCount: number;
  /** Start time in the input, in seconds. */
  start: number;
  /** End time in the input, in seconds (start of the next segment). */
  end: number;
}

export interface SegmentOptions {
  /** Longest segment in seconds (default MAX_SEGMENT_SECONDS = 1200). */
  maxSeconds?: number;
  /** Search half-width around the target cut in seconds (default 5). */
  searchExpandSeconds?: number;
  /** Energy window in milliseconds (default 100). */
  minWindowMs?: number;
  /** Sample rate of the incoming chunks (default 16000); chunks at another rate fail the stream. */
  sampleRate?: number;
}

interface SplitParams {
  maxLen: number;
  expand: number;
  win: number;
  minLen: number;
}

function splitParams(opts: SegmentOptions, rate: number): SplitParams {
  const maxSeconds = opts.maxSeconds ?? MAX_SEGMENT_SECONDS;
  const expandSeconds = opts.searchExpandSeconds ?? SEARCH_EXPAND_SECONDS;
  const windowMs = opts.minWindowMs ?? MIN_WINDOW_MS;
  if (!(Number.isFinite(maxSeconds) && maxSeconds > 0)) {
    throw new RustAsrError('INVALID_OPTION', `maxSeconds must be a positive number, got ${String(maxSeconds)}`);
  }
  if (!(Number.isFinite(expandSeconds) && expandSeconds >= 0)) {
    throw new RustAsrError('INVALID_OPTION', `searchExpandSeconds must be a non-negative number, got ${String(expandSeconds)}`);
  }
  if (!(Number.isFinite(windowMs) && windowMs >= 0)) {
    throw new RustAsrError('INVALID_OPTION', `minWindowMs must be a non-negative number, got ${String(windowMs)}`);
  }
  if (maxSeconds < MIN_SEGMENT_SECONDS) {
    throw new RustAsrError('INVALID_OPTION', `maxSeconds must be at least ${MIN_SEGMENT_SECONDS} (the shortest segment the model is given), got ${maxSeconds}`);
  }
  const maxLen = Math.floor(maxSeconds * rate);
  return {
    maxLen,
    expand: Math.floor(expandSeconds * rate),
    win: Math.max(4, Math.floor((windowMs / 1000) * rate)),
    minLen: Math.floor(MIN_SEGMENT_SECONDS * rate),
  };
}

/**
 * Where to cut `samples[0 .. length)` whose first segment may be at most `maxLen` long: the quietest sample of
 * the quietest `win`-sample window within [max(minLen, maxLen - expand), maxLen] (the latest on ties). `length`
 * must exceed `maxLen`.
 */
export function findCut(samples: Float32Array, length: number, maxLen: number, expand: number, win: number, minLen = 0): number {
  const cut = Math.min(maxLen, length);
  const left = Math.min(cut, Math.max(minLen, cut - expand, 0));
  const right = cut;
  let boundary = cut;
  if (right - left > win) {
    // Window sums from float64 prefix sums: exact zeros stay exactly zero, so silent windows tie exactly.
    const n = right - left;
    const prefix = new Float64Array(n + 1);
    for (let i = 0; i < n; i++) prefix[i + 1] = prefix[i]! + Math.abs(samples[left + i]!);
    let best = 0;
    let bestSum = Infinity;
    for (let p = 0; p + win <= n; p++) {
      const s = prefix[p + win]! - prefix[p]!;
      if (s <= bestSum) {
        bestSum = s;
        best = p;
      }
    }
    let inner = 0;
    let innerMin = Infinity;
    for (let i = 0; i < win; i++) {
      const a = Math.abs(samples[left + best + i]!);
      if (a <= innerMin) {
        innerMin = a;
        inner = i;
      }
    }
    boundary = left + best + inner;
  }
  return Math.min(Math.max(boundary, 1), cut);
}

/**
 * Splits whole 16 kHz mono audio into segments exactly as the Segmenter stream does (for tests and for
 * callers that already hold the whole input).
 */
export function splitAudio(samples: Float32Array, opts: SegmentOptions = {}): AudioSegment[] {
  const rate = opts.sampleRate ?? DEFAULT_TARGET_RATE;
  const { maxLen, expand, win, minLen } = splitParams(opts, rate);
  if (samples.length === 0) throw new RustAsrError('EMPTY_AUDIO', 'no audio samples');
  const out: AudioSegment[] = [];
  let start = 0;
  while (samples.length - start > maxLen) {
    const view = samples.subarray(start);
    const b = findCut(view, view.length, maxLen, expand, win, minLen);
    out.push(makeSegment(out.length, samples.slice(start, start + b), start, rate, true));
    start += b;
  }
  out.push(makeSegment(out.length, samples.slice(start), start, rate, out.length > 0));
  return out;
}

function makeSegment(index: number, piece: Float32Array, startSample: number, rate: number, split: boolean): AudioSegment {
  const sampleCount = piece.length;
  let samples = piece;
  const minLen = Math.floor(MIN_SEGMENT_SECONDS * rate);
  if (split && sampleCount < minLen) {
    samples = new Float32Array(minLen);
    samples.set(piece);
  }
  return {
    index,
    samples,
    sampleRate: rate,
    startSample,
    sampleCount,
    start: startSample / rate,
    end: (startSample + sampleCount) / rate,
  };
}

/**
 * An objectMode Transform from AudioChunks (16 kHz mono, as the Resampler emits them) to AudioSegments.
 * Holds at most `maxSeconds` of audio plus one input chunk. Its readable side holds
 * one segment by default (readableHighWaterMark 1), so a slow decoder stalls the input instead of letting
 * segments pile up.
 *
 * Errors (RustAsrError): EMPTY_AUDIO when the stream ends without a sample; INVALID_ARGUMENT for a chunk
 * that is not `{ samples: Float32Array, sampleRate }` at the expected rate; INVALID_OPTION for bad options.
 */
export class Segmenter extends Transform {
  readonly sampleRate: number;
  private readonly params: SplitParams;
  private buf: Float32Array;
  private len = 0;
  /** Index of buf[0] in the whole input. */
  private offset = 0;
  private count = 0;

  constructor(opts: SegmentOptions & Omit<TransformOptions, 'objectMode' | 'readableObjectMode' | 'writableObjectMode'> = {}) {
    const { maxSeconds, searchExpandSeconds, minWindowMs, sampleRate, ...rest } = opts;
    super({ readableHighWaterMark: 1, writableHighWaterMark: 4, ...rest, objectMode: true });
    this.sampleRate = sampleRate ?? DEFAULT_TARGET_RATE;
    this.params = splitParams({ maxSeconds, searchExpandSeconds, minWindowMs }, this.sampleRate);
    this.buf = new Float32Array(Math.min(this.params.maxLen + 1, 1 << 20));
  }

  /** Segments emitted so far. */
  get segmentCount(): number {
    return this.count;
  }

  override _transform(chunk: AudioChunk, _encoding: BufferEncoding, callback: TransformCallback): void {
    try {
      if (!chunk || !(chunk.samples instanceof Float32Array)) {
        throw new RustAsrError('INVALID_ARGUMENT', 'Segmenter expects { samples: Float32Array, sampleRate } chunks');
      }
      if (chunk.sampleRate !== this.sampleRate) {
        throw new RustAsrError('INVALID_ARGUMENT', `Segmenter expects ${this.sampleRate} Hz chunks, got ${chunk.sampleRate} Hz`);
      }
      this.append(chunk.samples);
      // More than the maximum is here: the whole search range (which ends at the maximum) is, so the cut is final.
      while (this.len > this.params.maxLen) this.cut();
      callback();
    } catch (err) {
      callback(err as Error);
    }
  }

  override _flush(callback: TransformCallback): void {
    try {
      while (this.len > this.params.maxLen) this.cut();
      if (this.len > 0) {
        const split = this.count > 0;
        this.push(makeSegment(this.count++, this.buf.slice(0, this.len), this.offset, this.sampleRate, split));
        this.offset += this.len;
        this.len = 0;
      } else if (this.count === 0) {
        throw new RustAsrError('EMPTY_AUDIO', 'no audio samples');
      }
      callback();
    } catch (err) {
      callback(err as Error);
    }
  }

  private append(samples: Float32Array): void {
    const need = this.len + samples.length;
    if (need > this.buf.length) {
      const grown = new Float32Array(Math.max(need, this.buf.length * 2));
      grown.set(this.buf.subarray(0, this.len));
      this.buf = grown;
    }
    this.buf.set(samples, this.len);
    this.len = need;
  }

  private cut(): void {
    const { maxLen, expand, win, minLen } = this.params;
    const b = findCut(this.buf, this.len, maxLen, expand, win, minLen);
    this.push(makeSegment(this.count++, this.buf.slice(0, b), this.offset, this.sampleRate, true));
    this.buf.copyWithin(0, b, this.len);
    this.len -= b;
    this.offset += b;
  }
}
