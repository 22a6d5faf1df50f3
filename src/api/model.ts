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

export type KernelName = 'auto' | 'avx512bf16' | 'avx512f' | 'avx2' | 'neon' | 'scalar';

/** Compute device. 'auto' and 'cpu' run the CPU backend; 'cuda' and 'metal' are not built yet. */
export type Device = 'auto' | 'cpu' | 'cuda' | 'metal';

export const DEVICES: readonly Device[] = Object.freeze(['auto', 'cpu', 'cuda', 'metal']);

/**
 * Checks a device name: 'auto' and 'cpu' (and undefined) pass; 'cuda', 'metal' and any other name throw
 * UNSUPPORTED_DEVICE (this build has only the CPU backend).
 */
export function checkDevice(device: unknown): 'cpu' {
  if (device === undefined || device === 'auto' || device === 'cpu') return 'cpu';
  if (device === 'cuda' || device === 'metal') {
    throw new RustAsrError('UNSUPPORTED_DEVICE', `device '${device}' is not available: this build has only the CPU backend`);
  }
  throw new RustAsrError('UNSUPPORTED_DEVICE', `unknown device ${JSON.stringify(device)}; expected one of ${DEVICES.join(', ')}`);
}

export interface LoadModelOptions {
  /** Compute device (default 'auto': the best available; today the CPU). 'cuda' | 'metal': UNSUPPORTED_DEVICE. */
  device?: Device;
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
    readonly info: NativeModelInfo,
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
    checkDevice(opts.device);
    if (typeof dir !== 'string' || dir === '') throw new RustAsrError('INVALID_OPTION', 'the model directory must be a non-empty string');
    if (opts.threads !== undefined && (!Number.isInteger(opts.threads) || opts.threads < 0)) {
      throw new RustAsrError('INVALID_OPTION', `threads must be a non-negative integer, got ${String(opts.threads)}`);
    }
    let nm: NativeModel;
    try {
      nm = await native().loadModel(dir, { threads: opts.threads, kernel: opts.kernel, quant: opts.quant });
    } catch (err) {
      throw fromNative(err);
    }
    try {
      const [, eos] = await Promise.all([checkTokenizerFiles(dir), readEosIds(dir)]);
      return new Model(nm, dir, nm.info(), loadTokenizer(dir), new Set(eos));
    } catch (err) {
      nm.dispose();
      throw err;
    }
  }

  /** The device the model runs on. */
  get device(): 'cpu' {
    return 'cpu';
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
export async function resolveModelDir(idOrDir: string, opts: { signal?: AbortSignal } = {}): Promise<string> {
  return resolveModel(idOrDir, { signal: opts.signal });
}

/** Loads a model from a directory or a Hugging Face repo id (downloaded once into the cache). */
export async function loadModel(dirOrId: string, opts: LoadModelOptions = {}): Promise<Model> {
  checkDevice(opts.device);
  return Model.load(await resolveModelDir(dirOrId), opts);
}
