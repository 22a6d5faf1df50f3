// The public face of the core Model (src/core/model.ts): loading by directory or hub id, and its types.
export {
  Model,
  loadModel,
  resolveModelDir,
  checkDevice,
  DEVICES,
  DEVICE_FALLBACK_WARNING,
  requireKind,
} from '../core/model.js';
export type {
  Device,
  DeviceKind,
  DecodeOptions,
  KernelName,
  LoadModelOptions,
  LoadModelProgressOptions,
  ModelInfo,
  ModelKind,
  Timings,
  TranscriptionResult,
} from '../core/model.js';
