// transcribe(): the promise helper over recognize() for a whole input.
import { readFile } from 'node:fs/promises';

import { downmix } from '../audio/decoder.js';
import { decodeWav } from '../audio/wav.js';
import { RustAsrError } from '../errors.js';
import { notUtf8Hint } from '../hub/files.js';
import { decodeAudio } from './decode-audio.js';
import { resample } from '../stages/resample.js';
import type { SegmentResult } from '../stages/tokens.js';
import type { TranscriptionResult } from './model.js';
import { recognize, type AudioInput } from './recognize.js';
import type { RecognizeOptions, Word } from './transcriber.js';

export type { AudioInput } from './recognize.js';

export type TranscribeOptions = RecognizeOptions;

export interface TranscribeResult extends TranscriptionResult {
  /**
   * The transcript: each segment's text (trimmed) concatenated without separator, as the official
   * pipeline joins its chunks. `language` is the merged language ('English', or 'Chinese,English' when
   * segments differ), `tokens` every generated id (EOS excluded), `timings` the sums over segments.
   */
  text: string;
  /** One entry per decoded segment (a single one unless the audio exceeded maxSegmentSeconds). */
  segments: SegmentResult[];
  /** With `timestamps: 'word'`: every word with its time span in the input (seconds), in order. */
  words?: Word[];
}

/**
 * Reads an audio file (path or bytes, any supported format; see decodeAudio) or takes 16 kHz mono samples,
 * and returns mono float samples (the mean of the channels) at `sampleRate` (windowed-sinc resampling).
 */
export async function loadAudio(input: string | Uint8Array | Float32Array, sampleRate: number): Promise<Float32Array> {
  if (input instanceof Float32Array) return input;
  let bytes: Uint8Array;
  if (typeof input === 'string') {
    try {
      bytes = await readFile(input);
    } catch (err) {
      throw new RustAsrError('IO_ERROR', `cannot read ${input}: ${(err as Error).message}${notUtf8Hint(input)}`, { cause: err });
    }
  } else {
    bytes = input;
  }
  const tag = String.fromCharCode(...bytes.subarray(0, 4));
  let samples: Float32Array;
  let rate: number;
  // WAV through decodeWav (the mean of the channels in double precision, as the streaming path); the rest
  // through decodeAudio.
  if ((tag === 'RIFF' || tag === 'RF64' || tag === 'BW64') && String.fromCharCode(...bytes.subarray(8, 12)) === 'WAVE') {
    const wav = decodeWav(bytes);
    samples = wav.samples;
    rate = wav.info.sampleRate;
  } else {
    const a = await decodeAudio(bytes);
    samples = downmix(a.channels);
    rate = a.sampleRate;
  }
  return rate === sampleRate ? samples : resample(samples, rate, sampleRate);
}

/** Transcribes a whole input; resolves when decoding is done. */
export async function transcribe(input: AudioInput, opts: TranscribeOptions): Promise<TranscribeResult> {
  const stream = recognize(input, opts);
  const tokens: number[] = [];
  for await (const t of stream) tokens.push(t.id);
  const segments = [...stream.segments];
  const result: TranscribeResult = {
    text: segments.map((s) => s.text).join(''),
    language: stream.language,
    tokens,
    timings: stream.timings,
    segments,
  };
  if ((opts.timestamps ?? 'none') === 'word') result.words = segments.flatMap((s) => s.words ?? []);
  return result;
}
