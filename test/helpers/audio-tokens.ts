// The official audio-token count (_get_feat_extract_output_lengths), written out for the prompt tests; the
// engine derives it from config.json (Model::audio_tokens), never from these constants.
import { RustAsrError } from '../../src/errors.js';

/** Mel frames per encoder conv chunk (2 * n_window, n_window = 50 in the official code). */
export const FRAMES_PER_CHUNK = 100;
/** Encoder tokens produced by a full 100-frame chunk (three stride-2 convs: 100 -> 50 -> 25 -> 13). */
export const TOKENS_PER_CHUNK = 13;

/**
 * Number of audio tokens (<|audio_pad|> copies) the encoder produces for `melFrames` mel frames:
 * `13 * floor(T / 100) + ceil((T % 100) / 8)`. Every full 100-frame chunk gives 13 tokens; the tail of
 * r frames gives ceil(r / 8) (three stride-2 convolutions with padding 1: ceil(ceil(ceil(r/2)/2)/2)).
 * The native engine reports the real count (from config.json); this is the tests' reference.
 */
export function audioTokenCount(melFrames: number): number {
  if (!Number.isInteger(melFrames) || melFrames < 0) {
    throw new RustAsrError('INVALID_OPTION', `melFrames must be a non-negative integer, got ${melFrames}`);
  }
  const full = Math.floor(melFrames / FRAMES_PER_CHUNK);
  const rest = melFrames % FRAMES_PER_CHUNK;
  return TOKENS_PER_CHUNK * full + Math.ceil(rest / 8);
}

