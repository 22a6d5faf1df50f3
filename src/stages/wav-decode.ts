// The WAV-only decoding stage (kept for code that wants WAV and nothing else): an AudioDecoder whose input
// must be WAV (RIFF/WAVE, RF64, BW64). The format rules and the chunk walker live in src/audio/wav-format.ts,
// shared with the whole-buffer decodeWav and with the any-format AudioDecoder.
import type { WavStreamFormat } from '../audio/wav-format.js';
import { AudioDecoder, type AudioDecoderOptions } from './audio-decode.js';

export type { AudioChunk } from '../audio/types.js';
export { MAX_CHUNK_FRAMES, MAX_WAV_SAMPLE_RATE, parseFmtChunk, validateWavFmt } from '../audio/wav-format.js';
export type { RawWavFmt, WavStreamFormat } from '../audio/wav-format.js';

/**
 * A stream.Transform from WAV file bytes (chunks of any size, down to one byte) to objectMode mono
 * AudioChunks (the mean of the channels), emitted as the data arrives, at most MAX_CHUNK_FRAMES frames each
 * and one at a time as they are read (a huge write is not converted at once). The header is parsed
 * incrementally: unknown chunks (LIST, ...) are skipped wherever they fall, odd-sized chunks are padded, and
 * everything after the data chunk is ignored. Emits `'format'` when the data chunk begins.
 *
 * Errors (RustAsrError): INVALID_WAV for non-WAV bytes, a missing/short fmt chunk, data before fmt or a
 * NaN/Inf float sample; UNSUPPORTED_WAV_FORMAT for other codecs (named), 0 channels, 0 Hz or > 384 kHz;
 * TRUNCATED_WAV when the stream ends before the data chunk or before the data chunk's declared size (a
 * declared size of 0 or 0xFFFFFFFF means "until the end of the stream"); EMPTY_AUDIO when no whole frame
 * was read. A partial trailing frame is dropped.
 */
export class WavDecoder extends AudioDecoder {
  constructor(options?: Omit<AudioDecoderOptions, 'format' | 'raw' | 'output' | 'ffmpeg' | 'path'>) {
    super({ ...options, format: 'wav' });
  }

  /** The stream format (with the fmt chunk's fields), or null until the data chunk begins. */
  override get format(): WavStreamFormat | null {
    return super.format as WavStreamFormat | null;
  }
}
