// Model: the loaded, shareable engine (weights, tokenizer) and the greedy transcription loop over it.
import { performance } from 'node:perf_hooks';

import { RustAsrError, fromNative } from '../errors.js';
import { childPath, FILE_LIMITS, readRegularFile, showPath, statRegularFile } from '../hub/files.js';
import { downloadMeter, type LoadProgress } from '../hub/progress.js';
import { resolveModel } from '../hub/resolve.js';
import { native, type NativeAligner, type NativeModel, type NativeModelInfo, type NativeSession } from '../native.js';
import { loadTokenizer, type AsrTokenizer } from '../text/tokenizer.js';
import { normalizeLanguage, parseAsrOutput, promptPieces } from '../text/prompt.js';
import { RepetitionGuard } from '../text/repetition-guard.js';
import { abortError } from './abort.js';
import { checkLoadOptions, checkMaxNewTokens, DEFAULT_MAX_NEW_TOKENS, type Device, type KernelName, type NativeLoadParams } from './options.js';

export { checkDevice, DEVICES } from './options.js';
export type { Device, KernelName } from './options.js';

/** A concrete backend: what a loaded model runs on, and what devices() reports. */
export type DeviceKind = 'cpu' | 'cuda' | 'metal';

/** Facts about a loaded model (from config.json and the backend in use). */
export type ModelInfo = NativeModelInfo;

/** What a checkpoint is for: speech recognition, or forced alignment (word timestamps). */
export type ModelKind = 'asr' | 'forced_aligner';

const KIND_NAMES: Record<ModelKind, string> = {
  asr: 'a speech-recognition model (Qwen3-ASR)',
  forced_aligner: 'a forced aligner (Qwen3-ForcedAligner)',
};

/** Throws WRONG_MODEL_KIND unless `model` is of `kind` (an aligner given as the ASR model, or the other way round). */
export function requireKind(model: { kind: ModelKind; dir: string }, kind: ModelKind): void {
  if (model.kind !== kind) {
    throw new RustAsrError('WRONG_MODEL_KIND', `${model.dir} is ${KIND_NAMES[model.kind]}, but ${KIND_NAMES[kind]} is needed here`);
  }
}

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
  /** Worker threads for the native kernels (default: all hardware threads; at most 4096). */
  threads?: number;
  /** Force a CPU matrix-vector kernel (default 'auto': the best this CPU supports). */
  kernel?: KernelName;
  /**
   * Decoder weight format (default 'bf16': the checkpoint's weights, read in place). 'int8' quantises the
   * decoder's linear weights and lm_head at load (symmetric int8, one scale per 128 columns): about half
   * the memory traffic per decoded token and a smaller resident set, at a small accuracy cost
   * (docs/performance.md, "int8"). 'int4' (CPU only): symmetric int4 in blocks of 32 columns with a scale
   * each, ~0.63 bytes per weight (a third of BF16's traffic per token), at a larger accuracy cost
   * (docs/performance.md, "int4").
   */
  quant?: 'bf16' | 'int8' | 'int4';
  /**
   * CPU: the arithmetic of the batched products of the encoder and the prefill (default 'f32': float32
   * activations times the exact weights, the golden-exact numerics). 'bf16' rounds the activations to BF16
   * and uses the CPU's BF16 dot product (AVX512-BF16; about twice the products' peak rate), at a measured
   * drift (docs/performance.md, "BF16 activations"); CPUs without it keep 'f32' (`info.precision` says
   * which is in use). Decode steps are not affected.
   */
  precision?: 'f32' | 'bf16';
  /**
   * Where derived data is cached between loads, one file per model directory, rebuilt whenever its sources
   * change: the tokenizer's binary BPE tables (`<cacheDir>/tokenizer/`: a later process reads them in a few
   * milliseconds instead of building the tokenizer from vocab.json and merges.txt), and with quant 'int8' the
   * quantised decoder (`<cacheDir>/int8/`: later loads map it instead of quantising again, and its pages are
   * file-backed). Default: $RUSTASR_CACHE_DIR, else $XDG_CACHE_HOME/rustasr, else ~/.cache/rustasr (the model
   * download cache). `false`: nothing is cached (the tokenizer tables are built and int8 quantised at every
   * load). An unwritable directory is not an error; `info.int8Cache` says what happened to int8.
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
  /**
   * Aborts the load (and a hub download it waits for) with ABORTED. A native load already running
   * finishes on its worker thread and is freed.
   */
  signal?: AbortSignal;
}

const LOAD_ABORTED = 'model load aborted';

export interface DecodeOptions {
  /** Forced language, one of the model's support_languages (case-insensitive). */
  language?: string;
  /** System-prompt context (glossary, names) given to the decoder. */
  context?: string;
  /** Upper bound on generated tokens (default 512). */
  maxNewTokens?: number;
  /** Stop decoding and reject with code ABORTED. */
  signal?: AbortSignal;
  /**
   * Stop a runaway repetition early (default true): once the tail of the output is a loop the official
   * clean-up removes (20+ repeats of a 1-20 character pattern) and decoding it to maxNewTokens could not
   * change the cleaned text, decoding stops (text/repetition-guard.ts). `false` decodes to EOS or
   * maxNewTokens as before.
   */
  repetitionGuard?: boolean;
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


const DEFAULT_EOS_IDS = [151643, 151645]; // <|endoftext|>, <|im_end|>

/**
 * The EOS ids of generation_config.json (optional: absent, or without eos_token_id, gives the Qwen3
 * defaults). Read as a regular file under FILE_LIMITS.json; malformed JSON or a bad eos_token_id is
 * INVALID_CONFIG (a broken file is reported, not silently replaced by defaults).
 */
async function readEosIds(dir: string | Buffer): Promise<number[]> {
  const file = childPath(dir, 'generation_config.json');
  const bytes = await readRegularFile(file, { maxBytes: FILE_LIMITS.json, label: 'generation_config.json', tooLargeCode: 'INVALID_CONFIG' });
  if (bytes === undefined) return DEFAULT_EOS_IDS;
  let gen: unknown;
  try {
    gen = JSON.parse(bytes.toString('utf8'));
  } catch (err) {
    throw new RustAsrError('INVALID_CONFIG', `${showPath(file)}: not valid JSON: ${(err as Error).message}`, { cause: err });
  }
  if (gen === null || typeof gen !== 'object' || Array.isArray(gen)) {
    throw new RustAsrError('INVALID_CONFIG', `${showPath(file)}: expected a JSON object`);
  }
  const eos = (gen as { eos_token_id?: unknown }).eos_token_id;
  if (eos === undefined || eos === null) return DEFAULT_EOS_IDS;
  const ids = Array.isArray(eos) ? eos : [eos];
  if (ids.length === 0 || !ids.every((id) => Number.isSafeInteger(id) && (id as number) >= 0)) {
    throw new RustAsrError('INVALID_CONFIG', `${showPath(file)}: eos_token_id must be a non-negative integer or a non-empty array of them`);
  }
  return ids as number[];
}

/**
 * Files the tokenizer is built from, with their size caps. They are checked at load (present, regular files
 * under the cap: a FIFO is IO_ERROR and a huge file INVALID_TOKENIZER at once), parsed in the background.
 */
const TOKENIZER_FILES: readonly [string, number][] = [
  ['vocab.json', FILE_LIMITS.tokenizer],
  ['merges.txt', FILE_LIMITS.tokenizer],
  ['tokenizer_config.json', FILE_LIMITS.json],
];

async function checkTokenizerFiles(dir: string | Buffer): Promise<void> {
  for (const [name, cap] of TOKENIZER_FILES) {
    const file = childPath(dir, name);
    const st = await statRegularFile(file, { missing: { code: 'MODEL_NOT_FOUND', message: `tokenizer file not found: ${showPath(file)}` } });
    if (st && st.size > cap) {
      throw new RustAsrError('INVALID_TOKENIZER', `${showPath(file)}: ${st.size} bytes is over the ${cap}-byte limit for ${name}`);
    }
  }
}

/** Rejects with ABORTED when `signal` fires first; a value that arrives after that is handed to `late`. */
function untilAborted<T>(p: Promise<T>, signal: AbortSignal | undefined, what: string, late: (v: T) => void): Promise<T> {
  if (!signal) return p;
  return new Promise<T>((resolve, reject) => {
    let done = false;
    const onAbort = () => {
      if (done) return;
      done = true;
      reject(abortError(signal.reason, what));
    };
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        if (done) late(v);
        else {
          done = true;
          resolve(v);
        }
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort);
        if (!done) {
          done = true;
          reject(err as Error);
        }
      },
    );
  });
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

  /**
   * Loads a model directory (config.json, safetensors, tokenizer files). Weights are memory-mapped. `dir`
   * may be a Buffer holding the path's bytes (a name that is not valid UTF-8). With `opts.signal`, an
   * abort rejects at once with ABORTED; a native load already running finishes on its worker thread and is
   * freed (nothing in a model directory can block it: FIFOs and devices are refused before being opened).
   */
  static async load(dir: string | Buffer, opts: LoadModelOptions = {}): Promise<Model> {
    return Model.loadChecked(dir, checkLoadOptions(opts as Record<string, unknown>), opts.signal);
  }

  /** Model.load with options already checked (checkLoadOptions): loadModel checks them before a download. */
  static async loadChecked(dir: string | Buffer, params: NativeLoadParams, signal: AbortSignal | undefined): Promise<Model> {
    if (!((typeof dir === 'string' || Buffer.isBuffer(dir)) && dir.length > 0)) {
      throw new RustAsrError('INVALID_OPTION', 'the model directory must be a non-empty string or Buffer');
    }
    if (typeof dir === 'string' ? dir.includes('\0') : dir.includes(0)) {
      throw new RustAsrError('INVALID_OPTION', 'the model directory must not contain a NUL byte');
    }
    if (signal?.aborted) throw abortError(signal.reason, LOAD_ABORTED);
    let nm: NativeModel;
    try {
      const loading = native().loadModel(dir, params);
      nm = await untilAborted(loading, signal, LOAD_ABORTED, (late) => late.dispose());
    } catch (err) {
      throw fromNative(err);
    }
    let model: Model;
    try {
      const [, eos] = await untilAborted(Promise.all([checkTokenizerFiles(dir), readEosIds(dir)]), signal, LOAD_ABORTED, () => undefined);
      model = new Model(nm, showPath(dir), nm.info(), loadTokenizer(dir, { cacheDir: params.cacheDir }), new Set(eos));
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
   * Decode steps since the model was loaded: `batches` passes over the weights and the `rows` (session steps)
   * they served. Transcriptions on one model that decode at the same time step together, up to 4 per pass,
   * with the same results as alone: rows / batches is the sharing achieved. Zeros after dispose().
   */
  batchStats(): { batches: number; rows: number } {
    return this.nativeModel ? this.nativeModel.batchStats() : { batches: 0, rows: 0 };
  }

  /** What the checkpoint is: 'asr' (Qwen3-ASR) or 'forced_aligner' (Qwen3-ForcedAligner, see align()). */
  get kind(): ModelKind {
    return this.info.kind;
  }

  /** A native forced-aligner state (one alignment's buffers). Internal: see align(). */
  createAligner(): NativeAligner {
    if (!this.nativeModel) throw new RustAsrError('INVALID_ARGUMENT', 'the model has been disposed');
    requireKind(this, 'forced_aligner');
    try {
      return this.nativeModel.createAligner();
    } catch (err) {
      throw fromNative(err);
    }
  }

  /**
   * Transcribes 16 kHz mono float samples, yielding token ids as they are decoded, then returns the
   * full result. Greedy decoding; stops at an EOS id or after maxNewTokens. The segment crosses into the
   * engine once (samples and prompt in, the first token out); then one native step per token.
   */
  async *decode(samples: Float32Array, opts: DecodeOptions = {}): AsyncGenerator<number, TranscriptionResult> {
    const maxNewTokens = checkMaxNewTokens(opts.maxNewTokens) ?? DEFAULT_MAX_NEW_TOKENS;
    requireKind(this, 'asr');
    if (opts.repetitionGuard !== undefined && typeof opts.repetitionGuard !== 'boolean') {
      throw new RustAsrError('INVALID_OPTION', `repetitionGuard must be a boolean, got ${String(opts.repetitionGuard)}`);
    }
    const language = opts.language === undefined ? undefined : normalizeLanguage(opts.language, this.info.supportLanguages);
    if (samples.length === 0) throw new RustAsrError('EMPTY_AUDIO', 'no audio samples');
    if (samples.length < this.info.minSamples) {
      throw new RustAsrError('AUDIO_TOO_SHORT', `${samples.length} samples is too short: at least ${this.info.minSamples} are needed`);
    }
    const signal = opts.signal;
    const checkAbort = () => {
      if (signal?.aborted) throw abortError(signal.reason);
    };
    checkAbort();
    const tokenizer = await this.tokenizerPromise;
    checkAbort();
    const pieces = promptPieces(tokenizer, {
      context: opts.context ?? '',
      language,
      supportedLanguages: this.info.supportLanguages,
    });
    const session = this.createSession();
    // An abort stops the native call in flight at its next check (between layers, blocks, steps).
    const cancel = () => session.cancel();
    signal?.addEventListener('abort', cancel, { once: true });
    const t0 = performance.now();
    try {
      const st = await session.start(samples, pieces.head, pieces.tail);
      const t3 = performance.now();
      let next = st.id;
      const tokens: number[] = [];
      const guard = opts.repetitionGuard === false ? undefined : repetitionGuardFor(tokenizer, maxNewTokens, language);
      for (;;) {
        if (this.eosIds.has(next)) break;
        tokens.push(next);
        yield next;
        if (tokens.length >= maxNewTokens || guard?.push(next)) break;
        checkAbort();
        next = (await session.step(next)).id;
      }
      const t4 = performance.now();
      const raw = tokenizer.decode(tokens, { skipSpecial: true });
      const parsed = parseAsrOutput(raw, { forcedLanguage: language });
      const audioSeconds = samples.length / this.info.sampleRate;
      // The mel and encoder times are measured on the worker; the prefill takes the rest of the start call.
      const startMs = t3 - t0;
      return {
        text: parsed.text,
        language: language ?? parsed.language,
        tokens,
        timings: {
          melMs: st.melMs,
          encoderMs: st.encoderMs,
          prefillMs: Math.max(0, startMs - st.melMs - st.encoderMs),
          decodeMs: t4 - t3,
          totalMs: t4 - t0,
          audioSeconds,
          rtf: (t4 - t0) / 1000 / audioSeconds,
        },
      };
    } catch (err) {
      if (signal?.aborted) throw abortError(signal.reason);
      throw err instanceof RustAsrError ? err : fromNative(err);
    } finally {
      signal?.removeEventListener('abort', cancel);
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

/** The early stop for runaway repetition of one decode: the final text's decoding and parsing must not change. */
function repetitionGuardFor(tokenizer: AsrTokenizer, maxNewTokens: number, language: string | undefined): RepetitionGuard {
  return new RepetitionGuard({
    maxTokens: maxNewTokens,
    decode: (ids) => tokenizer.decode(ids, { skipSpecial: true }),
    clean: (raw) => {
      const p = parseAsrOutput(raw, { forcedLanguage: language });
      return `${p.language ?? ''}\u0000${p.text}`;
    },
  });
}

/**
 * Turns a model reference into a local directory: an existing directory (or a path starting with '.', '/'
 * or '~') as it is, otherwise a Hugging Face repo id resolved through the download cache (see
 * docs/models.md). Every API that takes a model name goes through here.
 */
export async function resolveModelDir(idOrDir: string, opts?: ResolveDirOptions): Promise<string>;
export async function resolveModelDir(idOrDir: string | Buffer, opts?: ResolveDirOptions): Promise<string | Buffer>;
export async function resolveModelDir(idOrDir: string | Buffer, opts: ResolveDirOptions = {}): Promise<string | Buffer> {
  return resolveModel(idOrDir, { signal: opts.signal, onProgress: opts.onProgress && downloadMeter(opts.onProgress) });
}

interface ResolveDirOptions {
  signal?: AbortSignal;
  onProgress?: (p: LoadProgress) => void;
}

/** Options of loadModel(): the load options, and progress reports while a hub model downloads. */
export interface LoadModelProgressOptions extends LoadModelOptions {
  /**
   * Called as a hub model downloads (never for a local directory or a complete cache entry): the file, its
   * bytes so far and total, the speed and the ETA.
   */
  onProgress?: (p: LoadProgress) => void;
}

/**
 * Loads a model from a directory or a Hugging Face repo id (downloaded once into the cache). A Buffer is a
 * local directory's path bytes. `opts.signal` aborts the download, the wait for it, and the load.
 */
export async function loadModel(dirOrId: string | Buffer, opts: LoadModelProgressOptions = {}): Promise<Model> {
  // Every option is checked once, before any download.
  const params = checkLoadOptions(opts as Record<string, unknown>);
  if (opts.onProgress !== undefined && typeof opts.onProgress !== 'function') {
    throw new RustAsrError('INVALID_OPTION', 'onProgress must be a function');
  }
  return Model.loadChecked(await resolveModelDir(dirOrId, { signal: opts.signal, onProgress: opts.onProgress }), params, opts.signal);
}
