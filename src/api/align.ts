// align(): word timestamps for a known transcript with Qwen3-ForcedAligner (one non-autoregressive pass).
import { pipeline } from 'node:stream/promises';

import { RustAsrError } from '../errors.js';
import { DEFAULT_TARGET_RATE, Resampler } from '../stages/resample.js';
import { WavDecoder, type AudioChunk } from '../stages/wav-decode.js';
import { TIMESTAMP_TOKEN, alignerSlotsText, alignerUnits, fixTimestamp } from '../text/aligner-text.js';
import { normalizeLanguage } from '../text/prompt.js';
import { abortError } from '../core/abort.js';
import { loadModel, requireKind, type LoadModelOptions, type Model } from './model.js';
import { sourceFor, type AudioInput } from './recognize.js';

/** The aligner used when none is given (`rustasr pull Qwen/Qwen3-ForcedAligner-0.6B` caches it). */
export const DEFAULT_ALIGNER = 'Qwen/Qwen3-ForcedAligner-0.6B';
/** Longest audio aligned in one pass, in seconds (the official MAX_FORCE_ALIGN_INPUT_SECONDS). */
export const MAX_ALIGN_SECONDS = 180;

/** One aligned unit: a word (or a CJK character) of the transcript and its time span in seconds. */
export interface AlignItem {
  text: string;
  /** Start and end in seconds, to the millisecond (the official rounding: `round(ms / 1000, 3)`). */
  start: number;
  end: number;
}

export interface AlignResult {
  /** One item per word unit of the text, in order (punctuation dropped, see docs/guide.md). */
  items: AlignItem[];
}

export interface AlignOptions extends LoadModelOptions {
  /**
   * The aligner: a loaded forced-aligner Model (kept), a directory or a hub id (loaded for this call and
   * disposed after). Default DEFAULT_ALIGNER.
   */
  model?: Model | string;
  /**
   * The text's language, one of the aligner's support_languages (any case). It chooses how the text is split
   * into units: Japanese and Korean with a word segmenter, every other language at whitespace with each CJK
   * character on its own (also when omitted).
   */
  language?: string;
  /** Stops the work before or after the aligner pass (the pass itself runs to its end) with code ABORTED. */
  signal?: AbortSignal;
  /** Longest audio accepted, in seconds (default and most MAX_ALIGN_SECONDS = 180); longer audio rejects with AUDIO_TOO_LONG. */
  maxSeconds?: number;
}

/** Everything one aligner pass produced (for tests and diagnostics). */
export interface AlignmentDetail {
  units: string[];
  /** The argmax class of every `<timestamp>` slot (2 per unit). */
  classes: number[];
  /** class * timestamp_segment_time as float32 (the input of fix_timestamp), in ms. */
  rawMs: number[];
  /** After fix_timestamp, in integer ms: unit i spans [2i] .. [2i + 1]. */
  fixedMs: number[];
  items: AlignItem[];
  /** [slots, classifyNum] slot logits when asked for. */
  logits?: Float32Array;
}

/**
 * The word units of `text` for `aligner` in `language`, or NO_ALIGNABLE_TEXT when there are none (empty text,
 * or nothing but punctuation and symbols). `language` must already be normalised.
 */
export function unitsToAlign(text: string, language: string | undefined): string[] {
  if (typeof text !== 'string') throw new RustAsrError('INVALID_ARGUMENT', 'the text to align must be a string');
  if (text.trim() === '') throw new RustAsrError('NO_ALIGNABLE_TEXT', 'the text to align is empty');
  const units = alignerUnits(text, language);
  if (units.length === 0) {
    throw new RustAsrError('NO_ALIGNABLE_TEXT', `the text has no word to align (no letter or digit): ${JSON.stringify(text.slice(0, 60))}`);
  }
  return units;
}

/** Normalises a language name against the aligner's support_languages (UNSUPPORTED_LANGUAGE otherwise). */
export function alignerLanguage(aligner: Model, language: string | undefined): string | undefined {
  if (language === undefined || language === null || language === '') return undefined;
  return normalizeLanguage(language, aligner.info.supportLanguages);
}

/**
 * One aligner pass over 16 kHz mono `samples` for the units of `text` (language already normalised, or
 * undefined for the generic splitting). Times are relative to the first sample.
 */
export async function alignSamples(
  aligner: Model,
  samples: Float32Array,
  text: string,
  language: string | undefined,
  opts: { signal?: AbortSignal; wantLogits?: boolean } = {},
): Promise<AlignmentDetail> {
  requireKind(aligner, 'forced_aligner');
  const units = unitsToAlign(text, language);
  if (samples.length === 0) throw new RustAsrError('EMPTY_AUDIO', 'no audio samples');
  if (samples.length < aligner.info.minSamples) {
    throw new RustAsrError('AUDIO_TOO_SHORT', `${samples.length} samples is too short: at least ${aligner.info.minSamples} are needed`);
  }
  if (opts.signal?.aborted) throw abortError(opts.signal.reason, 'alignment aborted');
  await aligner.ready();
  const tok = aligner.tokenizer;
  const tsId = tok.tokenToId(TIMESTAMP_TOKEN);
  if (tsId === undefined || tsId !== aligner.info.timestampTokenId) {
    throw new RustAsrError(
      'INVALID_TOKENIZER',
      `the aligner's tokenizer_config.json does not define ${TIMESTAMP_TOKEN} as id ${aligner.info.timestampTokenId} (config.json timestamp_token_id)`,
    );
  }
  // Added tokens split the text, so the part after <|audio_end|> encodes on its own to the ids the whole
  // input text gives there; the engine puts the audio in front.
  const textIds = Int32Array.from(tok.encode(alignerSlotsText(units)));
  const native = aligner.createAligner();
  let out;
  try {
    out = await native.align(samples, textIds, opts.wantLogits === true);
  } finally {
    native.dispose();
  }
  if (opts.signal?.aborted) throw abortError(opts.signal.reason, 'alignment aborted');
  const classes = Array.from(out.classes);
  if (classes.length !== 2 * units.length) {
    throw new RustAsrError('INTERNAL', `the aligner input has ${classes.length} timestamp slots for ${units.length} units`);
  }
  const seg = aligner.info.timestampSegmentTime;
  const rawMs = classes.map((c) => Math.fround(c * seg));
  const fixedMs = fixTimestamp(rawMs);
  const items = units.map((u, i) => ({ text: u, start: fixedMs[2 * i]! / 1000, end: fixedMs[2 * i + 1]! / 1000 }));
  const detail: AlignmentDetail = { units, classes, rawMs, fixedMs, items };
  if (out.logits) detail.logits = out.logits;
  return detail;
}

/** Reads any AudioInput whole, as 16 kHz mono samples (the recognize() decoding and resampling). */
export async function readAudio(input: AudioInput, signal?: AbortSignal): Promise<Float32Array> {
  if (input instanceof Float32Array) return input;
  const src = sourceFor(input);
  const chunks: Float32Array[] = [];
  let total = 0;
  const sink = async (source: AsyncIterable<AudioChunk>): Promise<void> => {
    for await (const c of source) {
      chunks.push(c.samples);
      total += c.samples.length;
    }
  };
  const resampler = new Resampler({ targetRate: DEFAULT_TARGET_RATE });
  try {
    if (src.input === 'wav') await pipeline(src.source, new WavDecoder(), resampler, sink, signal ? { signal } : {});
    else await pipeline(src.source, resampler, sink, signal ? { signal } : {});
  } catch (err) {
    if (signal?.aborted) throw abortError(signal.reason, 'alignment aborted');
    throw err;
  }
  const out = new Float32Array(total);
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.length;
  }
  return out;
}

/** The aligner of an `aligner` / `model` option: a loaded Model (kept), or a directory / hub id loaded now (owned). */
export async function alignerFor(ref: Model | string | undefined, load: LoadModelOptions): Promise<{ model: Model; owns: boolean }> {
  if (ref === undefined || typeof ref === 'string') {
    const model = await loadModel(ref ?? DEFAULT_ALIGNER, load);
    try {
      requireKind(model, 'forced_aligner');
      await model.ready();
    } catch (err) {
      model.dispose();
      throw err;
    }
    return { model, owns: true };
  }
  if (ref === null || typeof ref !== 'object' || typeof (ref as Model).createAligner !== 'function') {
    throw new RustAsrError('INVALID_OPTION', 'the aligner must be a Model, a model directory or a hub id');
  }
  if (ref.disposed) throw new RustAsrError('INVALID_ARGUMENT', 'the model has been disposed');
  requireKind(ref, 'forced_aligner');
  return { model: ref, owns: false };
}

/** The load options of an options object (what loading a model by name uses). */
export function loadOptionsOf(o: LoadModelOptions): LoadModelOptions {
  return {
    device: o.device,
    deviceIndex: o.deviceIndex,
    threads: o.threads,
    kernel: o.kernel,
    quant: o.quant,
    precision: o.precision,
    cacheDir: o.cacheDir,
    lowMemory: o.lowMemory,
    largePages: o.largePages,
  };
}

/**
 * Word timestamps for a known transcript: `align(audio, text, { model: aligner, language })` resolves to
 * `{ items: [{ text, start, end }] }`, one item per word unit (seconds, to the millisecond). `audio` is
 * anything recognize() accepts, at most `maxSeconds` (180) long; for longer audio use
 * `transcribe(audio, { timestamps: 'word' })`, which aligns each segment.
 *
 * Errors: NO_ALIGNABLE_TEXT (empty text, or no letter or digit in it), UNSUPPORTED_LANGUAGE (not in the
 * aligner's support_languages), WRONG_MODEL_KIND (an ASR model given as the aligner), AUDIO_TOO_LONG, and the
 * audio and model errors of recognize().
 */
export async function align(audio: AudioInput, text: string, opts: AlignOptions = {}): Promise<AlignResult> {
  const maxSeconds = opts.maxSeconds ?? MAX_ALIGN_SECONDS;
  if (!(Number.isFinite(maxSeconds) && maxSeconds > 0 && maxSeconds <= MAX_ALIGN_SECONDS)) {
    throw new RustAsrError('INVALID_OPTION', `maxSeconds must be a number in (0, ${MAX_ALIGN_SECONDS}], got ${String(opts.maxSeconds)}`);
  }
  if (typeof text !== 'string') throw new RustAsrError('INVALID_ARGUMENT', 'the text to align must be a string');
  if (opts.signal?.aborted) throw abortError(opts.signal.reason, 'alignment aborted');
  const { model, owns } = await alignerFor(opts.model, loadOptionsOf(opts));
  try {
    const language = alignerLanguage(model, opts.language);
    unitsToAlign(text, language); // text errors before the audio is read
    const samples = await readAudio(audio, opts.signal);
    const seconds = samples.length / model.info.sampleRate;
    if (seconds > maxSeconds) {
      throw new RustAsrError(
        'AUDIO_TOO_LONG',
        `${seconds.toFixed(2)} s of audio is longer than the ${maxSeconds} s the aligner takes in one pass; use transcribe({ timestamps: 'word' }) to align long audio in chunks`,
      );
    }
    const detail = await alignSamples(model, samples, text, language, { signal: opts.signal });
    return { items: detail.items };
  } finally {
    if (owns) model.dispose();
  }
}
