// The Qwen3-ASR prompt, language names and output parsing.
//
// The prompt is the one the official `Qwen3ASRModel._build_text_prompt` renders with the checkpoint's
// chat_template.json (system message = context, one user audio item, generation prompt), plus the
// forced-language prefix of the assistant turn:
//
//   <|im_start|>system\n{context}<|im_end|>\n<|im_start|>user\n<|audio_start|><|audio_pad|><|audio_end|><|im_end|>\n<|im_start|>assistant\n
//   + (language ? `language {Language}<asr_text>` : '')
//
// The official processor then replaces the single <|audio_pad|> by one pad per audio-encoder output token.
// Here the expansion happens on ids, so the tokenizer never sees thousands of pads; because the pad and its
// neighbours are added tokens, encoding the text on both sides separately gives the same ids as encoding the
// whole string.

import { languageFromCode } from './languages.js';
import { RustAsrError } from '../errors.js';
import { ASR_TEXT_TAG, parseAsrOutputOfficial } from './asr-output.js';
import type { AsrTokenizer } from './tokenizer.js';

export const IM_START = '<|im_start|>';
export const IM_END = '<|im_end|>';
export const AUDIO_START = '<|audio_start|>';
export const AUDIO_PAD = '<|audio_pad|>';
export const AUDIO_END = '<|audio_end|>';
export { ASR_TEXT_TAG } from './asr-output.js';

/** The 30 languages of Qwen3-ASR's `support_languages` (config.json), in the config's order. */
export const SUPPORTED_LANGUAGES: readonly string[] = Object.freeze([
  'Chinese', 'English', 'Cantonese', 'Arabic', 'German', 'French', 'Spanish', 'Portuguese', 'Indonesian',
  'Italian', 'Korean', 'Russian', 'Thai', 'Vietnamese', 'Japanese', 'Turkish', 'Hindi', 'Malay', 'Dutch',
  'Swedish', 'Danish', 'Finnish', 'Polish', 'Czech', 'Filipino', 'Persian', 'Greek', 'Romanian', 'Hungarian',
  'Macedonian',
]);

/** The spelling in `supported` of a language name or ISO 639 code (any case), or undefined when it is not there. */
export function findLanguage(name: string, supported: readonly string[]): string | undefined {
  if (supported.length === 0) supported = SUPPORTED_LANGUAGES; // a config without support_languages
  const key = name.trim().toLowerCase();
  if (key === '') return undefined;
  const byCode = languageFromCode(key)?.toLowerCase();
  return supported.find((l) => l.toLowerCase() === key) ?? supported.find((l) => l.toLowerCase() === byCode);
}

/**
 * Normalises a language name or ISO 639-1/639-3 code to its spelling in `support_languages`
 * (case-insensitive, surrounding whitespace ignored): 'english', 'en', 'eng' -> 'English'. Throws RustAsrError 'UNSUPPORTED_LANGUAGE' for names
 * the model does not support. An empty `supported` list means the default SUPPORTED_LANGUAGES.
 */
export function normalizeLanguage(name: string, supported: readonly string[] = SUPPORTED_LANGUAGES): string {
  const found = typeof name === 'string' ? findLanguage(name, supported) : undefined;
  if (found === undefined) {
    throw new RustAsrError(
      'UNSUPPORTED_LANGUAGE',
      `unsupported language ${JSON.stringify(name)}; supported: ${(supported.length ? supported : SUPPORTED_LANGUAGES).join(', ')}`,
    );
  }
  return found;
}

export interface PromptOptions {
  /**
   * System-message text (glossary, hints). Default ''. Inserted verbatim, as the official template does.
   * At most MAX_CONTEXT_CHARS (10,000) UTF-16 code units.
   */
  context?: string;
  /** Force the transcript language (any case of a supported name); omit for automatic language detection. */
  language?: string;
  /** Number of audio tokens from the encoder; the single <|audio_pad|> is expanded to this many. */
  audioTokens: number;
  /** Languages accepted for `language` (the model's `support_languages`). Default SUPPORTED_LANGUAGES. */
  supportedLanguages?: readonly string[];
}

export interface Prompt {
  /** Prompt token ids with the audio pads expanded. */
  ids: Int32Array;
  /** Index of the first <|audio_pad|> in `ids`. */
  audioPadStart: number;
  /** Number of <|audio_pad|> ids (= audioTokens). */
  audioPadCount: number;
  /** The prompt text before pad expansion (one <|audio_pad|>), i.e. the official rendered prompt. */
  text: string;
  /** The normalised forced language, if any. */
  language?: string;
}

/**
 * Longest accepted `context`, in UTF-16 code units (characters, for most scripts). The context is prefilled
 * with the audio, so its cost grows with its length (a 120 KB context took 18 s); 10,000 characters is
 * ~2,500-10,000 tokens, under the 15,600 audio tokens of a 20-minute segment, and far above a glossary.
 */
export const MAX_CONTEXT_CHARS = 10_000;

/**
 * Checks a `context` option: a string (undefined counts as '') of at most MAX_CONTEXT_CHARS code units,
 * without <|audio_pad|>. Throws INVALID_OPTION otherwise; returns the context.
 */
export function checkContext(context: unknown): string {
  if (context === undefined) return '';
  if (typeof context !== 'string') throw new RustAsrError('INVALID_OPTION', 'context must be a string');
  if (context.length > MAX_CONTEXT_CHARS) {
    throw new RustAsrError('INVALID_OPTION', `context is ${context.length} characters long; the limit is ${MAX_CONTEXT_CHARS}`);
  }
  if (context.includes(AUDIO_PAD)) {
    // The processor would expand it as audio: the prompt could no longer match the audio embeddings.
    throw new RustAsrError('INVALID_OPTION', `context must not contain ${AUDIO_PAD}`);
  }
  return context;
}

function requireId(tok: AsrTokenizer, token: string): number {
  const id = tok.tokenToId(token);
  if (id === undefined) throw new RustAsrError('INVALID_TOKENIZER', `tokenizer lacks the added token ${token}`);
  return id;
}

export interface PromptPieceOptions {
  /** System-message text (glossary, hints). Default ''. Inserted verbatim, as the official template does. */
  context?: string;
  /** Force the transcript language (any case of a supported name); omit for automatic language detection. */
  language?: string;
  /** Languages accepted for `language` (the model's `support_languages`). Default SUPPORTED_LANGUAGES. */
  supportedLanguages?: readonly string[];
  /**
   * Text appended to the rendered prompt after the assistant header (and the forced-language header): the
   * official streaming loop's rolled-back prefix. Encoded together with the text before it, as the official
   * code encodes `prompt_raw + prefix`.
   */
  prefixText?: string;
}

/** The prompt around the audio: what the engine's start() takes (the audio pads go between head and tail). */
export interface PromptPieces {
  /** Ids before the audio pads (ends with <|audio_start|>). */
  head: Int32Array;
  /** Ids after the audio pads (<|audio_end|>, the assistant header, the forced-language header, a prefix). */
  tail: Int32Array;
  /** The text before the audio pads and after it (the official rendered prompt is `before + AUDIO_PAD + after`). */
  before: string;
  after: string;
  /** The normalised forced language, if any. */
  language?: string;
}

/** The exact official Qwen3-ASR prompt for one audio item, as the ids before and after the audio pads. */
export function promptPieces(tok: AsrTokenizer, opts: PromptPieceOptions = {}): PromptPieces {
  const context = checkContext(opts.context);
  const prefix = opts.prefixText ?? '';
  if (prefix.includes(AUDIO_PAD)) throw new RustAsrError('INVALID_OPTION', `the text prefix must not contain ${AUDIO_PAD}`);
  const language =
    opts.language === undefined ? undefined : normalizeLanguage(opts.language, opts.supportedLanguages);
  requireId(tok, AUDIO_PAD);
  requireId(tok, AUDIO_START);
  requireId(tok, AUDIO_END);
  const before = `${IM_START}system\n${context}${IM_END}\n${IM_START}user\n${AUDIO_START}`;
  const after = `${AUDIO_END}${IM_END}\n${IM_START}assistant\n` + (language ? `language ${language}${ASR_TEXT_TAG}` : '') + prefix;
  const pieces: PromptPieces = {
    head: Int32Array.from(tok.encode(before)),
    tail: Int32Array.from(tok.encode(after)),
    before,
    after,
  };
  if (language !== undefined) pieces.language = language;
  return pieces;
}

/** Builds the exact official Qwen3-ASR prompt ids for one audio item (audio pads expanded). */
export function buildPrompt(tok: AsrTokenizer, opts: PromptOptions): Prompt {
  const { audioTokens } = opts;
  if (!Number.isInteger(audioTokens) || audioTokens < 1) {
    throw new RustAsrError('INVALID_OPTION', `audioTokens must be a positive integer, got ${audioTokens}`);
  }
  const p = promptPieces(tok, opts);
  const padId = requireId(tok, AUDIO_PAD);
  const ids = new Int32Array(p.head.length + audioTokens + p.tail.length);
  ids.set(p.head, 0);
  ids.fill(padId, p.head.length, p.head.length + audioTokens);
  ids.set(p.tail, p.head.length + audioTokens);
  const prompt: Prompt = {
    ids,
    audioPadStart: p.head.length,
    audioPadCount: audioTokens,
    text: p.before + AUDIO_PAD + p.after,
  };
  if (p.language !== undefined) prompt.language = p.language;
  return prompt;
}

export interface AsrOutput {
  /** Detected (or forced) language, undefined when the model reported none or no header was present. */
  language?: string;
  /** The transcript, stripped and cleaned of runaway repetitions (the official output parsing). */
  text: string;
}

/**
 * Splits a decoded model answer (decoded with skipSpecial, so <|im_end|> is gone; <asr_text> is not special
 * and stays) into language and transcript, exactly as the official `parse_asr_output` does (see
 * text/asr-output.ts): the answer is stripped and cleaned of runaway repetitions, then
 *
 * - `forcedLanguage` given: the prompt already ended with `language X<asr_text>`, so the whole answer is
 *   the transcript and the language is the forced one;
 * - `language English<asr_text>hello` -> { language: 'English', text: 'hello' } (the name normalised as the
 *   official code does: first letter upper case, the rest lower case);
 * - `language None<asr_text>...` (the model's answer for no speech) -> language undefined;
 * - no `<asr_text>` tag -> language undefined, the whole answer is the text.
 */
export function parseAsrOutput(
  raw: string,
  opts?: { forcedLanguage?: string; supportedLanguages?: readonly string[] },
): AsrOutput {
  if (opts?.forcedLanguage !== undefined) {
    const forced = findLanguage(opts.forcedLanguage, opts.supportedLanguages ?? SUPPORTED_LANGUAGES) ?? opts.forcedLanguage.trim();
    const [, text] = parseAsrOutputOfficial(raw, forced);
    return { language: forced, text };
  }
  const [language, text] = parseAsrOutputOfficial(raw);
  return language === '' ? { text } : { language, text };
}
