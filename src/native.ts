// The one place that loads the compiled addon (prebuilt binary first, then a local build).
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface NativeModelInfo {
  numMelBins: number;
  encoderDModel: number;
  encoderLayers: number;
  audioOutputDim: number;
  hiddenSize: number;
  decoderLayers: number;
  vocabSize: number;
  audioTokenId: number;
  audioStartTokenId: number;
  audioEndTokenId: number;
  tiedEmbeddings: boolean;
  /** Audio rate the mel front end expects (16000). */
  sampleRate: number;
  /** Samples per mel frame (160). */
  hopLength: number;
  supportLanguages: string[];
  kernel: string;
  threads: number;
}

export interface NativeEncoderOutput {
  nTokens: number;
  embeds: Float32Array;
  convPos?: Float32Array;
  lnPost?: Float32Array;
}

export interface NativeSession {
  mel(samples: Float32Array): Promise<{ data: Float32Array; frames: number }>;
  encode(mel: Float32Array, frames: number, keepIntermediate: boolean): Promise<NativeEncoderOutput>;
  /** Runs the whole prompt (resetting the KV cache); `id` is the argmax of the last position's logits. */
  prefill(ids: Int32Array, audioEmbeds: Float32Array): Promise<{ id: number; logits: Float32Array; hiddenLast: Float32Array }>;
  /** Feeds one token; `id` is the argmax of its logits, which are returned only when asked for. */
  step(token: number, wantLogits?: boolean): Promise<{ id: number; logits?: Float32Array }>;
  /** Releases the session's state (the KV cache); a call in flight finishes first. */
  dispose(): void;
}

export interface NativeModel {
  info(): NativeModelInfo;
  createSession(): NativeSession;
  dispose(): void;
}

export interface NativeBinding {
  loadModel(dir: string, opts: { threads?: number; kernel?: string }): Promise<NativeModel>;
  argmax(v: Float32Array): number;
  /** Matrix-vector kernels this CPU can run, best first. */
  cpuKernels(): string[];
}

let cached: NativeBinding | undefined;

export function native(): NativeBinding {
  if (!cached) {
    const require = createRequire(import.meta.url);
    const root = join(dirname(fileURLToPath(import.meta.url)), '..');
    cached = require('node-gyp-build')(root) as NativeBinding;
  }
  return cached;
}
