// The one place that loads the compiled addon (prebuilt binary first, then a local build).
import { existsSync, readFileSync } from 'node:fs';
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
  /** Fewest samples of a segment the mel front end accepts (n_fft / 2 + 1 = 201). */
  minSamples: number;
  /** Samples per encoder attention window (n_window_infer mel frames: 8 s for the real models). */
  windowSamples: number;
  supportLanguages: string[];
  kernel: string;
  threads: number;
  /** Decoder weight format in use: 'bf16', 'int8' or 'int4'. */
  quant: string;
  /** The arithmetic of the encoder and prefill products in use: 'f32' or 'bf16' (LoadModelOptions.precision). */
  precision: 'f32' | 'bf16';
  /**
   * int8 only, how the quantised decoder was obtained: 'hit' (mapped from the on-disk cache), 'miss'
   * (quantised at load, then written to the cache), 'unwritable' (quantised at load; the cache directory
   * could not be written), 'off' (bf16, or cacheDir: false).
   */
  int8Cache: 'hit' | 'miss' | 'unwritable' | 'off';
  /**
   * CPU on Linux, the weight files' page size (ModelLoadOptions.largePages): 'large' (cached in 2 MiB
   * pages), 'reread' (they were cached in 4 KiB pages: dropped from the page cache at load, read again in
   * 2 MiB pages as they are used), 'uncached' (read in 2 MiB pages when used, where the kernel can),
   * 'unsupported' (this file system or kernel maps them in 4 KiB pages), 'unknown' (the kernel cannot say,
   * before Linux 6.7), 'off' (largePages: false, a GPU backend, or not Linux).
   */
  largePages: 'large' | 'reread' | 'uncached' | 'unsupported' | 'unknown' | 'off';
  /** The backend in use ('auto' resolved). */
  device: 'cpu' | 'cuda' | 'metal';
  /** The GPU's name; '' on the CPU. */
  deviceName: string;
  /** With device 'auto': why a GPU that was found is not used (it failed to initialise); '' otherwise. */
  deviceFallback: string;
  /**
   * What the checkpoint is: 'asr' (Qwen3-ASR) or 'forced_aligner' (Qwen3-ForcedAligner: thinker_config.model_type
   * contains "forced_aligner"). The three fields after it are the aligner's (0 for 'asr').
   */
  kind: 'asr' | 'forced_aligner';
  /** Timestamp classes of the aligner's head (thinker_config.classify_num). */
  classifyNum: number;
  /** The `<timestamp>` slot token (config.json timestamp_token_id). */
  timestampTokenId: number;
  /** Milliseconds per timestamp class (config.json timestamp_segment_time). */
  timestampSegmentTime: number;
}

/** One device kind as probed on this machine. */
export interface NativeDeviceStatus {
  kind: 'cpu' | 'cuda' | 'metal';
  available: boolean;
  /** The GPU's name, or the best CPU kernel for 'cpu'. */
  name: string;
  /** Why it is unavailable ('' when available). */
  reason: string;
}

/** What NativeSession.start() did. */
export interface NativeStartResult {
  /** The first generated token (argmax at the last prompt position). */
  id: number;
  /** Audio pads in the prompt (encoder output rows). */
  audioTokens: number;
  /** head + audioTokens + tail. */
  promptTokens: number;
  /** Prompt positions whose KV entries were kept from the previous start (incremental only). */
  reusedTokens: number;
  /** Audio tokens the encoder computed in this call. */
  encodedTokens: number;
  /** Audio tokens in the session's encoder cache after this call (incremental only). */
  cachedTokens: number;
  melMs: number;
  encoderMs: number;
  prefillMs: number;
}

export interface NativeStartOptions {
  /** Start a new segment first (default true). */
  reset?: boolean;
  /** Reuse cached encoder windows and the KV prefix of this segment's previous start (fast live mode). */
  incremental?: boolean;
  /** Keep the segment's audio for a later start (live modes); default false: freed once the prompt has run. */
  keepAudio?: boolean;
}

/** One transcription's native state: a segment's audio, its encoder cache and its KV cache. */
export interface NativeSession {
  /**
   * Appends `samples` (16 kHz mono; null for none) to the segment, runs log-mel, encoder and the prompt
   * head + audio pads + tail, and resolves with the first generated token: one crossing per segment.
   */
  start(samples: Float32Array | null, head: Int32Array, tail: Int32Array, opts?: NativeStartOptions): Promise<NativeStartResult>;
  /** Feeds one token; `id` is the argmax of its logits (taken on the worker). */
  step(token: number): Promise<{ id: number }>;
  /**
   * Cuts the segment's audio back to its first `samples` samples (a live endpoint behind what was fed); the
   * encoder cache and the reusable KV prefix shrink to match. Synchronous; the session must be idle.
   */
  truncate(samples: number): void;
  /** The call in flight (and every later one) stops at its next check and rejects with code ABORTED. */
  cancel(): void;
  /** Releases the session's state (the KV cache); a call in flight finishes first. */
  dispose(): void;
}

/** The result of one aligner pass: the argmax class of every `<timestamp>` slot, in input order. */
export interface NativeAlignerOutput {
  classes: Int32Array;
  /** Input positions of the slots (ascending). */
  positions: Int32Array;
  nAudioTokens: number;
  /** [slots, classifyNum] slot logits, when asked for (classify always). */
  logits?: Float32Array;
  /** [slots, hiddenSize] final-RMSNorm rows at the slots (classify only). */
  hidden?: Float32Array;
}

/** A forced aligner's state: one call at a time. */
export interface NativeAligner {
  /** 16 kHz samples + the ids after `<|audio_end|>` (units and their `<timestamp>` pairs) -> slot classes. */
  align(samples: Float32Array, textIds: Int32Array, wantLogits?: boolean): Promise<NativeAlignerOutput>;
  dispose(): void;
}

/** An aligner of a dev build: also a whole given input -> slot classes, logits and hidden rows (golden checks). */
export interface NativeDevAligner extends NativeAligner {
  classify(ids: Int32Array, audioEmbeds: Float32Array): Promise<NativeAlignerOutput>;
}

export interface NativeModel {
  info(): NativeModelInfo;
  createSession(): NativeSession;
  /** A forced aligner's state (rejects with INVALID_ARGUMENT for an ASR model). */
  createAligner(): NativeAligner;
  /** Decode steps since load: batched steps run (one pass over the weights each) and the session steps they served. */
  batchStats(): { batches: number; rows: number };
  dispose(): void;
}

export interface NativeBinding {
  loadModel(
    /** A path, or a Buffer of its bytes (names that are not valid UTF-8). */
    dir: string | Buffer,
    opts: { threads?: number; kernel?: string; quant?: string; precision?: string; cacheDir?: string | false; lowMemory?: boolean; largePages?: boolean; device?: string; deviceIndex?: number },
  ): Promise<NativeModel>;
  /** cpu, cuda, metal (in that order) as probed here; probing a GPU loads its driver, off the main thread. */
  devices(): Promise<NativeDeviceStatus[]>;
  /**
   * Engine objects alive in this process (all threads), for /metrics and leak checks: loaded models whose weights are
   * still held (by a handle or a running session), sessions and aligners whose state is not yet freed.
   */
  liveObjects(): { models: number; sessions: number; aligners: number };
  /** The test/dev surface, present in builds from source (RUSTASR_DEV unset or 1), absent in prebuilt binaries. */
  dev?: NativeDevBinding;
}

// ---------------------------------------------------------------------------------------- dev surface

export interface NativeEncoderOutput {
  nTokens: number;
  embeds: Float32Array;
  convPos?: Float32Array;
  lnPost?: Float32Array;
}

/** A session of a dev build: the engine's stages one by one, with their intermediate results. */
export interface NativeDevSession extends NativeSession {
  mel(samples: Float32Array): Promise<{ data: Float32Array; frames: number }>;
  encode(mel: Float32Array, frames: number, keepIntermediate: boolean): Promise<NativeEncoderOutput>;
  /** Runs the whole prompt (resetting the KV cache); `id` is the argmax of the last position's logits. */
  prefill(ids: Int32Array, audioEmbeds: Float32Array): Promise<{ id: number; logits: Float32Array; hiddenLast: Float32Array }>;
  /** Feeds one token and returns its logits. */
  stepLogits(token: number): Promise<{ id: number; logits: Float32Array }>;
}

export interface NativeProbeResult {
  /** The linked BLAS, e.g. "openblas Haswell (OpenBLAS 0.3.21 ...)", "accelerate" or "none". */
  blas: string;
  bandwidth?: { threads: number; bytes: number; isa: string; seconds: number[] };
  /** Register-only multiply-add loops (the silicon's compute peak): 'fp32-fma' always, 'bf16-dot' where the CPU has it. */
  peak: { kind: 'fp32-fma' | 'bf16-dot'; isa: string; threads: number; flops: number; seconds: number[] }[];
  gemm: { impl: string; isa: string; threads: number; n: number; rows: number; cols: number; flops: number; seconds: number[] }[];
}

export interface NativeDevBinding {
  argmax(v: Float32Array): number;
  /** Matrix-vector kernels this CPU can run, best first. */
  cpuKernels(): string[];
  /**
   * Machine probes for `npm run bench`: read bandwidth (threads stream a large buffer), the compute peak
   * (register-only multiply-add loops, `peakReps` repetitions of about `peakSeconds`; 0 reps skips it) and the
   * engine's batched-product rate on BF16 weights. Seconds are per repetition. bandwidthBytes = 0 skips bandwidth.
   */
  probe(opts?: {
    threads?: number;
    kernel?: string;
    bandwidthBytes?: number;
    bandwidthReps?: number;
    peakSeconds?: number;
    peakReps?: number;
    gemm?: { impl: 'auto' | 'own' | 'blas' | 'blas-threaded'; n: number; rows: number; cols: number }[];
    gemmReps?: number;
  }): Promise<NativeProbeResult>;
}

let cached: NativeBinding | undefined;

/**
 * The package root (where binding.gyp, build/ and prebuilds/ are): the nearest ancestor of this module with
 * rustasr's package.json. The package runs from its bundles in dist/esm/ (ES) and dist/cjs/ (CommonJS); the
 * repository's scripts from the per-module build in dist/.
 */
export function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg)) {
      try {
        if ((JSON.parse(readFileSync(pkg, 'utf8')) as { name?: unknown }).name === 'rustasr') return dir;
      } catch {
        // not ours (dist/cjs/package.json only says "commonjs"); keep walking up
      }
    }
    const up = dirname(dir);
    if (up === dir) return join(dirname(fileURLToPath(import.meta.url)), '..');
    dir = up;
  }
}

/**
 * Rewrites the engine's advice for an installed package: the engine says "build it with `npm run build:cuda`",
 * which only a source checkout (with scripts/build-cuda.sh) can do. Messages name only what the user has.
 */
export function adviceForThisInstall(message: string, root = packageRoot()): string {
  if (!message.includes('npm run build:cuda') || existsSync(join(root, 'scripts', 'build-cuda.sh'))) return message;
  const where = `${process.platform}-${process.arch}`;
  return message
    .replace(/;? ?build it with `npm run build:cuda`/, `; this rustasr package has no CUDA plugin for ${where}: see ${join(root, 'docs', 'cuda.md')} ("Build")`)
    .replace(/\(rebuild it with `npm run build:cuda`\)/, `(it does not match this rustasr version: see ${join(root, 'docs', 'cuda.md')})`);
}

function withAdvice(err: unknown): unknown {
  if (err instanceof Error) err.message = adviceForThisInstall(err.message);
  return err;
}

export function native(): NativeBinding {
  if (!cached) {
    const require = createRequire(import.meta.url);
    const b = require('node-gyp-build')(packageRoot()) as NativeBinding;
    cached = Object.assign(Object.create(b) as NativeBinding, {
      loadModel: (dir: string, opts: Parameters<NativeBinding['loadModel']>[1]) =>
        b.loadModel(dir, opts).catch((err: unknown) => Promise.reject(withAdvice(err))),
      devices: async () => (await b.devices()).map((d) => ({ ...d, reason: adviceForThisInstall(d.reason) })),
    });
  }
  return cached;
}

/** The test/dev surface of the addon; throws in a prebuilt (production) binary, which leaves it out. */
export function nativeDev(): NativeDevBinding {
  const dev = native().dev;
  if (!dev) throw new Error('this rustasr binary has no dev surface (prebuilt binaries leave it out; build from source)');
  return dev;
}
