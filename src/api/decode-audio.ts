// decodeAudio(): a whole input (path or bytes) of any supported format -> planar float channels at the
// file's own rate, for users and tests that check a decode against a reference.
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

import type { RawAudioFormat } from '../audio/open.js';
import type { PlanarAudio } from '../audio/types.js';
import { RustAsrError } from '../errors.js';
import { AudioDecoder } from '../stages/audio-decode.js';
import { abortError } from '../core/abort.js';
import { fileSource } from './sources.js';

export interface DecodeAudioOptions {
  /** Headerless PCM: rate, channels and sample encoding (the bytes cannot say). */
  raw?: RawAudioFormat;
  /** The ffmpeg used for formats with no WebAssembly decoder (MP4/M4A, AAC, ...); default $RUSTASR_FFMPEG, else PATH; false: none. */
  ffmpeg?: string | false;
  /** Stops decoding; rejects with the signal's reason wrapped as ABORTED. */
  signal?: AbortSignal;
}

export interface DecodedAudio {
  /** One array per channel, samples in [-1, 1] (no down-mix). */
  channels: Float32Array[];
  /** The file's own rate (no resampling; Opus decodes at 48 kHz). */
  sampleRate: number;
  /** Container and codec: 'wav/pcm', 'wav/mulaw', 'rf64/pcm', 'mp3', 'flac', 'ogg/vorbis', 'ogg/opus', 'webm/opus', 'raw/s16le', 'MP4/M4A ... (ffmpeg)', ... */
  format: string;
}

/**
 * Decodes a whole audio file (a path, or its bytes) of any supported format, detected by its magic bytes:
 * WAV (PCM, float, μ-law, A-law, IMA ADPCM; RF64/BW64), MP3, FLAC, Ogg Vorbis, Ogg Opus, WebM/Opus, raw PCM
 * (with `raw`), and MP4/M4A/AAC and others through ffmpeg when it is on PATH. See docs/formats.md.
 */
export async function decodeAudio(input: string | Uint8Array, opts: DecodeAudioOptions = {}): Promise<DecodedAudio> {
  let source: Readable;
  if (typeof input === 'string') source = fileSource(input);
  else if (input instanceof Uint8Array) source = Readable.from([input], { objectMode: false });
  else throw new RustAsrError('INVALID_ARGUMENT', 'decodeAudio takes a file path, a Buffer or a Uint8Array');
  const dec = new AudioDecoder({ output: 'planar', raw: opts.raw, ffmpeg: opts.ffmpeg, path: typeof input === 'string' ? input : undefined });
  const parts: Float32Array[][] = [];
  let sampleRate = 0;
  const sink = new Writable({
    objectMode: true,
    write(chunk: PlanarAudio, _enc, cb) {
      if (sampleRate === 0) sampleRate = chunk.sampleRate;
      else if (chunk.sampleRate !== sampleRate) {
        cb(new RustAsrError('INVALID_AUDIO', `the sample rate changes inside the stream (${sampleRate} Hz, then ${chunk.sampleRate} Hz)`));
        return;
      }
      parts.push(chunk.channels);
      cb();
    },
  });
  try {
    await pipeline(source, dec, sink, opts.signal ? { signal: opts.signal } : {});
  } catch (err) {
    if ((err as Error).name === 'AbortError' && opts.signal?.aborted) {
      throw abortError(opts.signal.reason, 'decoding aborted');
    }
    throw err;
  }
  const n = parts.reduce((s, p) => s + (p[0]?.length ?? 0), 0);
  const channelCount = parts[0]?.length ?? 0;
  const channels = Array.from({ length: channelCount }, (_, c) => {
    const out = new Float32Array(n);
    let at = 0;
    for (const p of parts) {
      out.set(p[c]!, at);
      at += p[c]!.length;
    }
    return out;
  });
  return { channels, sampleRate, format: dec.format?.format ?? 'unknown' };
}
