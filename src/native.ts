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
  supportLanguages: string[];
  kernel: string;
  threads: number;
  /** Decoder weight format in use: 'bf16' or 'int8'. */
  quant: string;
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

export interface NativeProbeResult {
  /** The linked BLAS, e.g. "openblas Haswell (OpenBLAS 0.3.21 ...)", "accelerate" or "none". */
  blas: string;
  bandwidth?: { threads: number; bytes: number; isa: string; seconds: number[] };
  gemm: { impl: string; isa: string; threads: number; n: number; rows: number; cols: number; flops: number; seconds: number[] }[];
}

export interface NativeBinding {
  loadModel(
    dir: string,
    opts: { threads?: number; kernel?: string; quant?: string; cacheDir?: string | false; lowMemory?: boolean; largePages?: boolean; device?: string; deviceIndex?: number },
  ): Promise<NativeModel>;
  /** cpu, cuda, metal (in that order) as probed here; probing a GPU loads its driver, off the main thread. */
  devices(): Promise<NativeDeviceStatus[]>;
  argmax(v: Float32Array): number;
  /** Matrix-vector kernels this CPU can run, best first. */
  cpuKernels(): string[];
  /**
   * Machine probes for `npm run bench`: read bandwidth (threads stream a large buffer) and the engine's
   * batched-product rate on BF16 weights. Seconds are per repetition. bandwidthBytes = 0 skips bandwidth.
   */
  probe(opts?: {
    threads?: number;
    kernel?: string;
    bandwidthBytes?: number;
    bandwidthReps?: number;
    gemm?: { impl: 'auto' | 'own' | 'blas' | 'blas-threaded'; n: number; rows: number; cols: number }[];
    gemmReps?: number;
  }): Promise<NativeProbeResult>;
  /**
   * Engine objects alive in this process (all threads), for leak checks: loaded models whose weights are
   * still held (by a handle or a running session) and sessions whose state is not yet freed.
   */
  liveObjects(): { models: number; sessions: number };
}

let cached: NativeBinding | undefined;

/**
 * The package root (where binding.gyp, build/ and prebuilds/ are): the nearest ancestor of this module with
 * rustasr's package.json. The ES build runs from dist/, the CommonJS bundle from dist/cjs/.
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
