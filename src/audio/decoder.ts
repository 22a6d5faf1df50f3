// The interface every format decoder implements (WAV, raw PCM, MP3, FLAC, Ogg Vorbis, Ogg Opus, WebM Opus,
// ffmpeg), so that one stream stage (src/stages/audio-decode.ts) and one whole-input function (./decode.ts)
// drive them all.
import type { AudioStreamFormat } from './types.js';

/**
 * Decoded samples from a FormatDecoder: planar channels, or a single mono channel (the mean of the channels)
 * when the decoder was created with `mono: true`. Each block holds at most MAX_BLOCK_FRAMES frames.
 */
export interface DecodedBlock {
  channels: Float32Array[];
  sampleRate: number;
}

/** Most frames in one DecodedBlock (larger decodes are split). */
export const MAX_BLOCK_FRAMES = 65_536;

/** Bytes of compressed input handed to a WebAssembly decoder in one call, so one call's output stays small. */
export const COMPRESSED_SLICE_BYTES = 16 * 1024;

/** Blocks, produced lazily: the stage pulls one at a time and stops pulling while its reader is full. */
export type BlockSource = Iterable<DecodedBlock> | AsyncIterable<DecodedBlock>;

export interface FormatDecoder {
  /** What was found (container, codec, rate, channels); undefined until the decoder knows. */
  readonly info: AudioStreamFormat | undefined;
  /**
   * Decodes the next bytes of the stream. The bytes are read while the returned source is iterated (it must be
   * iterated to its end before the next call); they are not kept after that.
   */
  write(bytes: Uint8Array): BlockSource;
  /** The input has ended: the remaining blocks; throws (TRUNCATED_*, EMPTY_AUDIO, ...) when the stream is incomplete. */
  end(): BlockSource;
  /** Frees the decoder's memory (WebAssembly heaps, child processes, temp files). Idempotent. */
  free(): void;
}

/** Options every decoder takes. */
export interface DecoderOptions {
  /** Emit the mean of the channels as one channel (what the recognition pipeline wants) instead of planar channels. */
  mono: boolean;
}

/** Mixes planar channels to their mean (a new array; one channel is returned as it is). */
export function downmix(channels: Float32Array[]): Float32Array {
  if (channels.length === 1) return channels[0]!;
  const n = channels[0]?.length ?? 0;
  const out = new Float32Array(n);
  const k = channels.length;
  for (let i = 0; i < n; i++) {
    let acc = 0;
    for (let c = 0; c < k; c++) acc += channels[c]![i]!;
    out[i] = acc / k;
  }
  return out;
}

/** Splits planar audio into blocks of at most MAX_BLOCK_FRAMES frames (mixed to mono when asked). */
export function* blocksOf(channels: Float32Array[], sampleRate: number, mono: boolean): Generator<DecodedBlock> {
  const n = channels[0]?.length ?? 0;
  if (n === 0) return;
  const chans = mono ? [downmix(channels)] : channels;
  for (let at = 0; at < n; at += MAX_BLOCK_FRAMES) {
    const end = Math.min(n, at + MAX_BLOCK_FRAMES);
    yield { channels: at === 0 && end === n ? chans : chans.map((c) => c.subarray(at, end)), sampleRate };
  }
}
