// Streaming audio stages: audio bytes -> mono float chunks -> 16 kHz chunks -> segments -> tokens.
export { AudioDecoder, audioDecoder } from './audio-decode.js';
export type { AudioDecoderOptions } from './audio-decode.js';
export { WavDecoder, MAX_CHUNK_FRAMES, MAX_WAV_SAMPLE_RATE, parseFmtChunk, validateWavFmt } from './wav-decode.js';
export type { AudioChunk, RawWavFmt, WavStreamFormat } from './wav-decode.js';
export {
  Resampler,
  resample,
  resampledLength,
  DEFAULT_TARGET_RATE,
  MAX_OUTPUT_CHUNK,
  MAX_RESAMPLE_RATE,
} from './resample.js';
export type { ResamplerOptions } from './resample.js';
export {
  Segmenter,
  splitAudio,
  findCut,
  MAX_SEGMENT_SECONDS,
  SEARCH_EXPAND_SECONDS,
  MIN_WINDOW_MS,
  MIN_SEGMENT_SECONDS,
} from './segment.js';
export type { AudioSegment, SegmentOptions } from './segment.js';
export { TokenDecoder, TokenStream, mergeLanguages, DEFAULT_TOKEN_HIGH_WATER_MARK } from './tokens.js';
export type { Token, SegmentResult, TokenStreamOptions, TokenDecoderOptions } from './tokens.js';
