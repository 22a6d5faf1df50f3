// recognize(): any audio input -> an async-iterable stream of Tokens.
import { createReadStream } from 'node:fs';
import { Readable, pipeline } from 'node:stream';

import { RustAsrError } from '../errors.js';
import { notUtf8Hint } from '../model/files.js';
import { DEFAULT_TARGET_RATE } from '../stages/resample.js';
import type { AudioChunk } from '../stages/wav-decode.js';
import { Transcriber, type RecognizeOptions } from './transcriber.js';

/**
 * Audio to recognise: a WAV file path, WAV file bytes (Buffer / Uint8Array), a stream or async iterable of
 * WAV bytes, or 16 kHz mono float samples (Float32Array). A file whose name is not valid UTF-8 (which a JS
 * string cannot hold) is given as a stream: `fs.createReadStream(pathBuffer)`.
 */
export type AudioInput = string | Uint8Array | Float32Array | NodeJS.ReadableStream | AsyncIterable<Uint8Array>;

/** A stream of a file's bytes whose open/read errors become RustAsrError IO_ERROR. */
function fileSource(path: string): Readable {
  return Readable.from(
    (async function* () {
      try {
        for await (const chunk of createReadStream(path)) yield chunk as Buffer;
      } catch (err) {
        throw new RustAsrError('IO_ERROR', `cannot read ${path}: ${(err as Error).message}${notUtf8Hint(path)}`, { cause: err });
      }
    })(),
    { objectMode: false },
  );
}

/** The byte (or, for a Float32Array, audio-chunk) stream an AudioInput reads from. Throws INVALID_ARGUMENT. */
export function sourceFor(input: AudioInput): { source: Readable; input: 'wav' | 'audio' } {
  if (input instanceof Float32Array) {
    const chunk: AudioChunk = { samples: input, sampleRate: DEFAULT_TARGET_RATE };
    return { source: Readable.from([chunk], { objectMode: true }), input: 'audio' };
  }
  if (typeof input === 'string') return { source: fileSource(input), input: 'wav' };
  if (input instanceof Uint8Array) {
    const buf = Buffer.isBuffer(input) ? input : Buffer.from(input.buffer, input.byteOffset, input.byteLength);
    return { source: Readable.from([buf], { objectMode: false }), input: 'wav' };
  }
  if (input instanceof Readable) return { source: input, input: 'wav' };
  if (input !== null && typeof input === 'object' && Symbol.asyncIterator in input) {
    return { source: Readable.from(input as AsyncIterable<Uint8Array>, { objectMode: false }), input: 'wav' };
  }
  if (input !== null && typeof input === 'object' && typeof (input as NodeJS.ReadableStream).pipe === 'function') {
    return { source: new Readable({ objectMode: false }).wrap(input as NodeJS.ReadableStream), input: 'wav' };
  }
  throw new RustAsrError('INVALID_ARGUMENT', 'audio input must be a path, WAV bytes, a readable stream of WAV bytes or a Float32Array');
}

/**
 * Recognises `input`, returning the Transcriber it is piped into: iterate it (`for await (const t of
 * recognize(...))`) for Tokens as they are decoded; `language`, `segments` and `timings` fill in as it
 * goes. Do not write to it. Errors (bad input, bad options, abort) surface from the iteration.
 */
export function recognize(input: AudioInput, opts: RecognizeOptions): Transcriber {
  let src: { source: Readable; input: 'wav' | 'audio' };
  try {
    src = sourceFor(input);
  } catch (err) {
    const t = new Transcriber({ ...opts });
    queueMicrotask(() => t.destroy(err as Error));
    return t;
  }
  const t = new Transcriber({ ...opts, input: src.input });
  // Errors reach `t` (pipeline destroys every stream with the first error); nothing to do here.
  pipeline(src.source, t, () => {});
  return t;
}
