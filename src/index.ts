// rustasr: local Qwen3-ASR speech recognition for Node.js.
export { Model, loadModel } from './api/model.js';
export type { DecodeOptions, KernelName, LoadModelOptions, Timings, TranscriptionResult } from './api/model.js';
export { transcribe, loadAudio } from './api/transcribe.js';
export type { AudioInput, TranscribeOptions } from './api/transcribe.js';
export { decodeWav } from './audio/wav.js';
export type { WavInfo } from './audio/wav.js';
export { RustAsrError } from './errors.js';
export type { RustAsrErrorCode } from './errors.js';
