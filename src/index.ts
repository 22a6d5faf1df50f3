// rustasr: local Qwen3-ASR speech recognition for Node.js.
export { Model, loadModel, checkDevice, DEVICES, DEVICE_FALLBACK_WARNING } from './api/model.js';
export type { Device, DeviceKind, DecodeOptions, KernelName, LoadModelOptions, LoadModelProgressOptions, ModelInfo, ModelKind, Timings, TranscriptionResult } from './api/model.js';
export type { LoadProgress } from './hub/progress.js';
export { align, DEFAULT_ALIGNER, MAX_ALIGN_SECONDS } from './api/align.js';
export type { AlignItem, AlignOptions, AlignResult } from './api/align.js';
export { devices } from './api/devices.js';
export type { DeviceStatus } from './api/devices.js';
export { transcribe, loadAudio } from './api/transcribe.js';
export type { TranscribeOptions, TranscribeResult } from './api/transcribe.js';
export { recognize } from './api/recognize.js';
export type { AudioInput } from './api/recognize.js';
export { Transcriber, transcriber } from './api/transcriber.js';
export { listen, LiveTranscriber } from './api/listen.js';
export type { FinalEvent, ListenOptions, LiveEvent, LiveOptions, LiveSource, LiveStepInfo, LiveStepStats, PartialEvent } from './api/listen.js';
export { LIVE_DEFAULTS } from './core/live.js';
export { ENDPOINT_DEFAULTS, Endpointer } from './audio/endpoint.js';
export type { EndpointEvent, EndpointOptions } from './audio/endpoint.js';
export { parseAsrOutputOfficial, detectAndFixRepetitions } from './text/asr-output.js';
export type { RecognizeOptions, TranscriberOptions, TranscribeProgress, Word } from './api/transcriber.js';
export { decodeAudio } from './api/decode-audio.js';
export type { DecodeAudioOptions, DecodedAudio } from './api/decode-audio.js';
export { abortError, isAbortError } from './core/abort.js';
export { decodeWav } from './audio/wav.js';
export type { WavInfo } from './audio/wav.js';
export { AudioDecoder, audioDecoder, WavDecoder, Resampler, resample, DEFAULT_TARGET_RATE } from './stages/index.js';
export type { AudioDecoderOptions, AudioChunk, WavStreamFormat, ResamplerOptions } from './stages/index.js';
export type { AudioStreamFormat, PlanarAudio, SampleEncoding } from './audio/types.js';
export { RAW_ENCODINGS } from './audio/open.js';
export type { RawAudioFormat, RawEncoding } from './audio/open.js';
export {
  Segmenter,
  splitAudio,
  findCut,
  MAX_SEGMENT_SECONDS,
  SEARCH_EXPAND_SECONDS,
  MIN_WINDOW_MS,
  MIN_SEGMENT_SECONDS,
} from './stages/segment.js';
export type { AudioSegment, SegmentOptions } from './stages/segment.js';
export { TokenDecoder, TokenStream, mergeLanguages, DEFAULT_TOKEN_HIGH_WATER_MARK } from './stages/tokens.js';
export type { Token, SegmentResult, TokenStreamOptions, TokenDecoderOptions } from './stages/tokens.js';
export { StreamingDetokenizer } from './text/detokenizer.js';
export { buildCues, cuesFromUnits, cuesWithoutTimes, displayWords, formatCue, formatTimestamp, SUBTITLE_DEFAULTS, FALLBACK_CUE_SECONDS } from './text/subtitles.js';
export type { Cue, CueOptions, DisplayWord, TimedUnit } from './text/subtitles.js';
export { RustAsrError } from './errors.js';
export type { RustAsrErrorCode } from './errors.js';
export { resolveModel } from './hub/resolve.js';
export type { DownloadProgress, ResolveModelOptions } from './hub/resolve.js';
export { listCachedModels } from './hub/list.js';
export type { CachedModel } from './hub/list.js';
