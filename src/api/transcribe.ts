// transcribe(): the promise helper over Model.decode for a whole input.
import { readFile } from 'node:fs/promises';

import { decodeWav } from '../audio/wav.js';
import { RustAsrError } from '../errors.js';
import { resample } from '../stages/resample.js';
import { Model, type DecodeOptions, type LoadModelOptions, type TranscriptionResult } from './model.js';

export type AudioInput = string | Uint8Array | Float32Array;

export interface TranscribeOptions extends DecodeOptions, LoadModelOptions {
  /** A loaded Model, or a model directory. */
  model: Model | string;
}

/**
 * Reads a WAV path / buffer (or takes 16 kHz mono samples) and returns mono float samples at the model's rate
 * (windowed-sinc resampling from any other rate).
 */
export async function loadAudio(input: AudioInput, sampleRate: number): Promise<Float32Array> {
  if (input instanceof Float32Array) return input;
  let bytes: Uint8Array;
  if (typeof input === 'string') {
    try {
      bytes = await readFile(input);
    } catch (err) {
      throw new RustAsrError('IO_ERROR', `cannot read ${input}: ${(err as Error).message}`, { cause: err });
    }
  } else {
    bytes = input;
  }
  const { info, samples } = decodeWav(bytes);
  return info.sampleRate === sampleRate ? samples : resample(samples, info.sampleRate, sampleRate);
}

export async function transcribe(input: AudioInput, opts: TranscribeOptions): Promise<TranscriptionResult> {
  const owned = typeof opts.model === 'string';
  const model = typeof opts.model === 'string' ? await Model.load(opts.model, opts) : opts.model;
  try {
    const samples = await loadAudio(input, model.info.sampleRate);
    const gen = model.decode(samples, opts);
    for (;;) {
      const r = await gen.next();
      if (r.done) return r.value;
    }
  } finally {
    if (owned) model.dispose();
  }
}
