// Model: the loaded, shareable engine (weights, tokenizer) and the greedy transcription loop over it.
import { access, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';

import { RustAsrError, fromNative } from '../errors.js';
import { resolveModel } from '../model/resolve.js';
import { native, type NativeModel, type NativeModelInfo, type NativeSession } from '../native.js';
import { loadTokenizer, type AsrTokenizer } from '../text/tokenizer.js';
import { buildPrompt, normalizeLanguage, parseAsrOutput } from '../text/prompt.js';
import { abortError } from './abort.js';
import { downloadMeter, type LoadProgress } from './progress.js';

export type KernelName = 'auto' | 'avx512bf16' | 'avx512f' | 'avx2' | 'neon' | 'scalar';

/**
 * Compute device. 'auto' (the default): CUDA when a usable GPU and the CUDA plugin are found, else Metal
 * (macOS builds), else the CPU; a GPU that probes usable but fails to initialise falls back to the CPU with
 * a RUSTASR_DEVICE_FALLBACK warning. An explicitly named GPU that cannot be used rejects with
 * UNSUPPORTED_DEVICE. See docs/devices.md.
 */
export type Device = 'auto' | 'cpu' | 'cuda' | 'metal';

/** A concrete backend: what a loaded model runs on, and what devices() reports. */
export type DeviceKind = 'cpu' | 'cuda' | 'metal';

export const DEVICES: readonly Device[] = Object.freeze(['auto', 'cpu', 'cuda', 'metal']);

/**
 * Checks a device name and returns it ('auto' for undefined). Any name outside DEVICES throws
 * INVALID_ARGUMENT. Whether a named device is usable is decided by the native engine at load
 * (UNSUPPORTED_DEVICE, with the reason).
 */
export function checkDevice(device: unknown): Device {
  if (device === undefined) return 'auto';
  if (typeof device === 'string' && (DEVICES as readonly string[]).includes(device)) return device as Device;
  throw new RustAsrError('INVALID_ARGUMENT', `unknown device ${JSON.stringify(device)}; expected one of ${DEVICES.join(', ')}`);
}

/** Facts about a loaded model (from config.json and the backend in use). */
export type ModelInfo = NativeModelInfo;

/** The Node warning emitted (once per load) when device 'auto' found a GPU but had to run on the CPU. */
export const DEVICE_FALLBACK_WARNING = Object.freeze({ type: 'RustasrWarning', code: 'RUSTASR_DEVICE_FALLBACK' });

export interface LoadModelOptions {
  /**
   * Compute device (default 'auto': CUDA, else Metal, else the CPU). 'cuda' | 'metal' load on that GPU or
   * reject with UNSUPPORTED_DEVICE saying why; an unknown name rejects with INVALID_ARGUMENT.
   */
  device?: Device;
  /** Which GPU (CUDA device ordinal; default 0). Ignored on the CPU. */
  deviceIndex?: number;
  /** Worker threads for the native kernels (default: all hardware threads). */
  threads?: number;
  /** Force a CPU matrix-vector kernel (default 'auto': the best this CPU supports). */
  kernel?: KernelName;
  /**
   * Decoder weight format (default 'bf16': the checkpoint's weights, read in place). 'int8' quantises the
   * decoder's linear weights and lm_head at load (symmetric int8, one scale per 128 columns): about half
   * the memory traffic per decoded token and a smaller resident set, at a small accuracy cost
   * (docs/performance.md, "int8").
   */
  quant?: 'bf16' | 'int8';
  /**
   * With quant 'int8': where the quantised decoder is cached between loads (in `<cacheDir>/int8/`, one
   * file per model directory, rebuilt whenever the checkpoint changes). Later loads map it instead of
   * quantising again: a fast cold start, and its pages are file-backed. Default: $RUSTASR_CACHE_DIR, else
   * $XDG_CACHE_HOME/rustasr, else ~/.cache/rustasr (the model download cache). `false`: quantise at every
   * load. An unwritable directory is not an error (the model is quantised at load); `info.int8Cache` says
   * what happened.
   */
  cacheDir?: string | false;
  /**
   * CPU: keep only the running stage's weights resident (default true). Before encoding, the decoder's
   * mapped weight pages are released and the encoder's mapped in one call; after encoding, the reverse
   * (skipped while another transcription on this model is busy). Peak RSS is lower by the encoder's size
   * (~0.35 GB for 0.6B) for ~30 ms per GB of re-mapping from the page cache per audio segment (with
   * `largePages`); the encoder's activation buffers of inputs over ~25 s are freed too. `false` keeps every weight
   * resident.
   */
  lowMemory?: boolean;
  /**
   * CPU on Linux: map the weight files in 2 MiB pages where the kernel can (default true). The stage
   * switches of `lowMemory` then cost almost nothing, and the encoder and prefill products run faster
   * (docs/performance.md, "2 MiB pages"). A checkpoint whose page cache holds it in 4 KiB pages (a file
   * just downloaded, written or copied) is dropped from the page cache once at load, where the file system
   * can hold it in 2 MiB pages, and read again as it is used. `info.largePages` says what was found.
   * `false`: no advice, no page-cache drop.
   */
  largePages?: boolean;
}

export interface DecodeOptions {
  /** Forced language, one of the model's support_languages (case-insensitive). */
  language?: string;
  /** System-prompt context (glossary, names) given to the decoder. */
  context?: string;
  /** Upper bound on generated tokens (default 512). */
  maxNewTokens?: number;
  /** Stop decoding and reject with code ABORTED. */
  signal?: AbortSignal;
}

export interface Timings {
  melMs: number;
  encoderMs: number;
  prefillMs: number;
  decodeMs: number;
  totalMs: number;
  audioSeconds: number;
  /** Real-time factor: processing time / audio length. */
  rtf: number;
}

export interface TranscriptionResult {
  text: string;
  language: string | undefined;
  /** Generated token ids (EOS excluded). */
  tokens: number[];
  timings: Timings;
}

const DEFAULT_MAX_NEW_TOKENS = 512;
/** Fewest samples the mel front end accepts (n_fft / 2 + 1, for the STFT's reflect padding): 12.6 ms at 16 kHz. */
const MIN_AUDIO_SAMPLES = 201;

async function readEosIds(dir: string): Promise<number[]> {
  try {
    const gen = JSON.parse(await readFile(join(dir, 'generation_config.json'), 'utf8')) as { eos_token_id?: number | number[] };
    const eos = gen.eos_token_id;
    if (Array.isArray(eos)) return eos;
    if (typeof eos === 'number') return [eos];
  } catch {
    // generation_config.json is optional; fall through to the Qwen3 defaults.
  }
  return [151643, 151645]; // <|endoftext|>, <|im_end|>
}

/** Files the tokenizer is built from; their presence is checked at load, their parsing runs in the background. */
const TOKENIZER_FILES = ['vocab.json', 'merges.txt', 'tokenizer_config.json'];

async function checkTokenizerFiles(dir: string): Promise<void> {
  for (const name of TOKENIZER_FILES) {
    const file = join(dir, name);
    try {
      await access(file);
    } catch (err) {
      throw new RustAsrError('MODEL_NOT_FOUND', `tokenizer file not found: ${file}`, { cause: err });
    }
  }
}

export class Model {
  private nativeModel: NativeModel | undefined;
  private loadedTokenizer: AsrTokenizer | undefined;

  private constructor(
    nativeModel: NativeModel,
    readonly dir: string,
    readonly info: ModelInfo,
    private readonly tokenizerPromise: Promise<AsrTokenizer>,
    readonly eosIds: ReadonlySet<number>,
  ) {
    this.nativeModel = nativeModel;
    // Failures surface from ready() / decode(); this handler only records success.
    tokenizerPromise.then((t) => (this.loadedTokenizer = t)).catch(() => undefined);
  }

  /**
   * The tokenizer. Building it (151k BPE merges) takes a few seconds of JS, so Model.load() starts it in the
   * background and returns as soon as the weights are mapped: the first transcription's mel and encoder run
   * on the native worker thread meanwhile. Throws until the tokenizer is built: await ready() first.
   */
  get tokenizer(): AsrTokenizer {
    if (!this.loadedTokenizer) {
      throw new RustAsrError('INVALID_ARGUMENT', 'the tokenizer is still loading: await model.ready() first');
    }
    return this.loadedTokenizer;
  }

  /** Resolves once the tokenizer is built (rejects with its load error, e.g. INVALID_TOKENIZER). */
  async ready(): Promise<this> {
    await this.tokenizerPromise;
    return this;
  }

  /** Loads a model directory (config.json, safetensors, tokenizer files). Weights are memory-mapped. */
  static async load(dir: string, opts: LoadModelOptions = {}): Promise<Model> {
    const device = checkDevice(opts.device);
    if (typeof dir !== 'string' || dir === '') throw new RustAsrError('INVALID_OPTION', 'the model directory must be a non-empty string');
    if (opts.threads !== undefined && (!Number.isInteger(opts.threads) || opts.threads < 0)) {
      throw new RustAsrError('INVALID_OPTION', `threads must be a non-negative integer, got ${String(opts.threads)}`);
    }
    if (opts.cacheDir !== undefined && opts.cacheDir !== false && (typeof opts.cacheDir !== 'string' || opts.cacheDir === '')) {
      throw new RustAsrError('INVALID_OPTION', `cacheDir must be a non-empty string or false, got ${String(opts.cacheDir)}`);
    }
    if (opts.lowMemory !== undefined && typeof opts.lowMemory !== 'boolean') {
      throw new RustAsrError('INVALID_OPTION', `lowMemory must be a boolean, got ${String(opts.lowMemory)}`);
    }
    if (opts.largePages !== undefined && typeof opts.largePages !== 'boolean') {
      throw new RustAsrError('INVALID_OPTION', `largePages must be a boolean, got ${String(opts.largePages)}`);
    }
    if (opts.deviceIndex !== undefined && (!Number.isInteger(opts.deviceIndex) || opts.deviceIndex < 0)) {
      throw new RustAsrError('INVALID_OPTION', `deviceIndex must be a non-negative integer, got ${String(opts.deviceIndex)}`);
    }
    let nm: NativeModel;
    try {
      nm = await native().loadModel(dir, {
        threads: opts.threads,
        kernel: opts.kernel,
        quant: opts.quant,
        cacheDir: opts.cacheDir,
        lowMemory: opts.lowMemory,
        largePages: opts.largePages,
        device,
        deviceIndex: opts.deviceIndex,
      });
    } catch (err) {
      throw fromNative(err);
    }
    let model: Model;
    try {
      const [, eos] = await Promise.all([checkTokenizerFiles(dir), readEosIds(dir)]);
      model = new Model(nm, dir, nm.info(), loadTokenizer(dir), new Set(eos));
    } catch (err) {
      nm.dispose();
      throw err;
    }
    if (model.deviceFallback !== '') {
      process.emitWarning(`device 'auto' found a GPU but runs on the ${model.device}: ${model.deviceFallback}`, DEVICE_FALLBACK_WARNING);
    }
    return model;
  }

  /** The backend the model runs on: 'cpu', 'cuda' or 'metal' (what 'auto' resolved to). */
  get device(): DeviceKind {
    return this.info.device;
  }

  /** The GPU's name (e.g. 'NVIDIA H100 80GB HBM3', 'Apple M2'); '' on the CPU. */
  get deviceName(): string {
    return this.info.deviceName;
  }

  /** With device 'auto': why a GPU that was found is not used ('' when none was, or when it is used). */
  get deviceFallback(): string {
    return this.info.deviceFallback;
  }

  get disposed(): boolean {
    return this.nativeModel === undefined;
  }

  /** A native session (one transcription's state). Internal: sessions are created per transcription. */
  createSession(): NativeSession {
    if (!this.nativeModel) throw new RustAsrError('INVALID_ARGUMENT', 'the model has been disposed');
    return this.nativeModel.createSession();
  }

  /**
   * Transcribes 16 kHz mono float samples, yielding token ids as they are decoded, then returns the
   * full result. Greedy decoding; stops at an EOS id or after maxNewTokens.
   */
  async *decode(samples: Float32Array, opts: DecodeOptions = {}): AsyncGenerator<number, TranscriptionResult> {
    const maxNewTokens = opts.maxNewTokens ?? DEFAULT_MAX_NEW_TOKENS;
    if (!Number.isInteger(maxNewTokens) || maxNewTokens < 1) {
      throw new RustAsrError('INVALID_OPTION', `maxNewTokens must be a positive integer, got ${String(maxNewTokens)}`);
    }
    const language = opts.language === undefined ? undefined : normalizeLanguage(opts.language, this.info.supportLanguages);
    if (samples.length === 0) throw new RustAsrError('EMPTY_AUDIO', 'no audio samples');
    if (samples.length < MIN_AUDIO_SAMPLES) {
      throw new RustAsrError('AUDIO_TOO_SHORT', `${samples.length} samples is too short: at least ${MIN_AUDIO_SAMPLES} are needed`);
    }
    const checkAbort = () => {
      if (opts.signal?.aborted) throw abortError(opts.signal.reason);
    };
    checkAbort();
    const session = this.createSession();
    const t0 = performance.now();
    try {
      const mel = await session.mel(samples);
      const t1 = performance.now();
      checkAbort();
      const enc = await session.encode(mel.data, mel.frames, false);
      const t2 = performance.now();
      checkAbort();
      const tokenizer = await this.tokenizerPromise;
      const prompt = buildPrompt(tokenizer, {
        context: opts.context ?? '',
        language,
        audioTokens: enc.nTokens,
        supportedLanguages: this.info.supportLanguages,
      });
      let next = (await session.prefill(prompt.ids, enc.embeds)).id;
      const t3 = performance.now();
      const tokens: number[] = [];
      for (;;) {
        if (this.eosIds.has(next)) break;
        tokens.push(next);
        yield next;
        if (tokens.length >= maxNewTokens) break;
        checkAbort();
        next = (await session.step(next)).id;
      }
      const t4 = performance.now();
      const raw = tokenizer.decode(tokens, { skipSpecial: true });
      const parsed = parseAsrOutput(raw, { forcedLanguage: language });
      const audioSeconds = samples.length / this.info.sampleRate;
      return {
        text: parsed.text,
        language: language ?? parsed.language,
        tokens,
        timings: {
          melMs: t1 - t0,
          encoderMs: t2 - t1,
          prefillMs: t3 - t2,
          decodeMs: t4 - t3,
          totalMs: t4 - t0,
          audioSeconds,
          rtf: (t4 - t0) / 1000 / audioSeconds,
        },
      };
    } catch (err) {
      throw err instanceof RustAsrError ? err : fromNative(err);
    } finally {
      session.dispose();
    }
  }

  /** Frees the native model once no session uses it any more. Idempotent. */
  dispose(): void {
    this.nativeModel?.dispose();
    this.nativeModel = undefined;
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}

/**
 * Turns a model reference into a local directory: an existing directory (or a path starting with '.', '/'
 * or '~') as it is, otherwise a Hugging Face repo id resolved through the download cache (see
 * docs/models.md). Every API that takes a model name goes through here.
 */
export async function resolveModelDir(
  idOrDir: string,
  opts: { signal?: AbortSignal; onProgress?: (p: LoadProgress) => void } = {},
): Promise<string> {
  return resolveModel(idOrDir, { signal: opts.signal, onProgress: opts.onProgress && downloadMeter(opts.onProgress) });
}

/** Options of loadModel(): the load options, and progress reports while a hub model downloads. */
export interface LoadModelProgressOptions extends LoadModelOptions {
  /**
   * Called as a hub model downloads (never for a local directory or a complete cache entry): the file, its
   * bytes so far and total, the speed and the ETA.
   */
  onProgress?: (p: LoadProgress) => void;
}

/** Loads a model from a directory or a Hugging Face repo id (downloaded once into the cache). */
export async function loadModel(dirOrId: string, opts: LoadModelProgressOptions = {}): Promise<Model> {
  checkDevice(opts.device); // an unknown device name fails before any download
  if (opts.onProgress !== undefined && typeof opts.onProgress !== 'function') {
    throw new RustAsrError('INVALID_OPTION', 'onProgress must be a function');
  }
  const { onProgress, ...load } = opts;
  return Model.load(await resolveModelDir(dirOrId, { onProgress }), load);
}
