// Byte sources of the API's inputs.
import { createReadStream } from 'node:fs';
import { Readable } from 'node:stream';

import type { AudioChunk } from '../audio/types.js';
import { RustAsrError } from '../errors.js';
import { notUtf8Hint } from '../hub/files.js';
import { DEFAULT_TARGET_RATE } from '../stages/resample.js';

/** A stream of a file's bytes whose open/read errors become RustAsrError IO_ERROR. */
export function fileSource(path: string): Readable {
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

/**
 * Audio to recognise: a file path, file bytes (Buffer / Uint8Array), a stream or async iterable of file bytes
 * (any supported format, detected by its magic bytes: WAV, MP3, FLAC, Ogg, WebM, ...; raw PCM with the `raw`
 * option), or 16 kHz mono float samples (Float32Array).
 */
export type AudioInput = string | Uint8Array | Float32Array | NodeJS.ReadableStream | AsyncIterable<Uint8Array>;

export function sourceFor(input: AudioInput): { source: Readable; input: 'bytes' | 'audio'; path?: string } {
  if (input instanceof Float32Array) {
    const chunk: AudioChunk = { samples: input, sampleRate: DEFAULT_TARGET_RATE };
    return { source: Readable.from([chunk], { objectMode: true }), input: 'audio' };
  }
  if (typeof input === 'string') return { source: fileSource(input), input: 'bytes', path: input };
  if (input instanceof Uint8Array) {
    const buf = Buffer.isBuffer(input) ? input : Buffer.from(input.buffer, input.byteOffset, input.byteLength);
    return { source: Readable.from([buf], { objectMode: false }), input: 'bytes' };
  }
  if (input instanceof Readable) return { source: input, input: 'bytes' };
  if (input !== null && typeof input === 'object' && Symbol.asyncIterator in input) {
    return { source: Readable.from(input as AsyncIterable<Uint8Array>, { objectMode: false }), input: 'bytes' };
  }
  if (input !== null && typeof input === 'object' && typeof (input as NodeJS.ReadableStream).pipe === 'function') {
    return { source: new Readable({ objectMode: false }).wrap(input as NodeJS.ReadableStream), input: 'bytes' };
  }
  throw new RustAsrError('INVALID_ARGUMENT', 'audio input must be a path, file bytes, a readable stream of file bytes or a Float32Array');
}
