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
import type { AsrTokenizer } from './tokenizer.js';

export const IM_START = '<|im_start|>';
export const IM_END = '<|im_end|>';
export const AUDIO_START = '<|audio_start|>';
export const AUDIO_PAD = '<|audio_pad|>';
export const AUDIO_END = '<|audio_end|>';
/** Separates the `language X` header of the model's answer from the transcript (a non-special added token). */
export const ASR_TEXT_TAG = '<asr_text>';

/** The 30 languages of Qwen3-ASR's `support_languages` (config.json), in the config's order. */
export const SUPPORTED_LANGUAGES: readonly string[] = Object.freeze([
  'Chinese', 'English', 'Cantonese', 'Arabic', 'German', 'French', 'Spanish', 'Portuguese', 'Indonesian',
  'Italian', 'Korean', 'Russian', 'Thai', 'Vietnamese', 'Japanese', 'Turkish', 'Hindi', 'Malay', 'Dutch',
  'Swedish', 'Danish', 'Finnish', 'Polish', 'Czech', 'Filipino', 'Persian', 'Greek', 'Romanian', 'Hungarian',
  'Macedonian',
]);

/** Mel frames per encoder conv chunk (2 * n_window, n_window = 50 in the official code). */
export const FRAMES_PER_CHUNK = 100;
/** Encoder tokens produced by a full 100-frame chunk (three stride-2 convs: 100 -> 50 -> 25 -> 13). */
export const TOKENS_PER_CHUNK = 13;

/**
 * Number of audio tokens (<|audio_pad|> copies) the encoder produces for `melFrames` mel frames:
 * `13 * floor(T / 100) + ceil((T % 100) / 8)`. Every full 100-frame chunk gives 13 tokens; the tail of
 * r frames gives ceil(r / 8) (three stride-2 convolutions with padding 1: ceil(ceil(ceil(r/2)/2)/2)).
 * The native engine reports the real count; this is for planning and checks.
 */
export function audioTokenCount(melFrames: number): number {
  if (!Number.isInteger(melFrames) || melFrames < 0) {
    throw new RustAsrError('INVALID_OPTION', `melFrames must be a non-negative integer, got ${melFrames}`);
  }
  const full = Math.floor(melFrames / FRAMES_PER_CHUNK);
  const rest = melFrames % FRAMES_PER_CHUNK;
  return TOKENS_PER_CHUNK * full + Math.ceil(rest / 8);
}

function findLanguage(name: string, supported: readonly string[]): string | undefined {
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
  /** System-message text (glossary, hints). Default ''. Inserted verbatim, as the official template does. */
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

function requireId(tok: AsrTokenizer, token: string): number {
  const id = tok.tokenToId(token);
  if (id === undefined) throw new RustAsrError('INVALID_TOKENIZER', `tokenizer lacks the added token ${token}`);
  return id;
}

/** Builds the exact official Qwen3-ASR prompt ids for one audio item. */
export function buildPrompt(tok: AsrTokenizer, opts: PromptOptions): Prompt {
  const { audioTokens } = opts;
  if (!Number.isInteger(audioTokens) || audioTokens < 1) {
    throw new RustAsrError('INVALID_OPTION', `audioTokens must be a positive integer, got ${audioTokens}`);
  }
  const context = opts.context ?? '';
  if (typeof context !== 'string') throw new RustAsrError('INVALID_OPTION', 'context must be a string');
  if (context.includes(AUDIO_PAD)) {
    // The processor would expand it as audio: the prompt could no longer match the audio embeddings.
    throw new RustAsrError('INVALID_OPTION', `context must not contain ${AUDIO_PAD}`);
  }
  const language =
    opts.language === undefined ? undefined : normalizeLanguage(opts.language, opts.supportedLanguages);

  const before = `${IM_START}system\n${context}${IM_END}\n${IM_START}user\n${AUDIO_START}`;
  const after = `${AUDIO_END}${IM_END}\n${IM_START}assistant\n` + (language ? `language ${language}${ASR_TEXT_TAG}` : '');
  const padId = requireId(tok, AUDIO_PAD);
  requireId(tok, AUDIO_START);
  requireId(tok, AUDIO_END);

  const head = tok.encode(before);
  const tail = tok.encode(after);
  const ids = new Int32Array(head.length + audioTokens + tail.length);
  ids.set(head, 0);
  ids.fill(padId, head.length, head.length + audioTokens);
  ids.set(tail, head.length + audioTokens);
  const prompt: Prompt = {
    ids,
    audioPadStart: head.length,
    audioPadCount: audioTokens,
    text: before + AUDIO_PAD + after,
  };
  if (language !== undefined) prompt.language = language;
  return prompt;
}

export interface AsrOutput {
  /** Detected (or forced) language, undefined when the model reported none or no header was present. */
  language?: string;
  /** The transcript, trimmed. */
  text: string;
}

/**
 * Splits a decoded model answer (decode with skipSpecial so <|im_end|> is gone; <asr_text> is not special
 * and stays) into language and transcript, following the official output convention:
 *
 * - `forcedLanguage` given: the prompt already ended with `language X<asr_text>`, so the whole answer is
 *   the transcript and the language is the forced one.
 * - `language English<asr_text>hello` -> { language: 'English', text: 'hello' } (the name is normalised to
 *   the supported spelling when it is one, otherwise kept as written).
 * - `language None<asr_text>...` (the model's answer for no speech) -> language undefined.
 * - no `<asr_text>` tag -> language undefined, the whole answer is the text.
 *
 * The official package additionally collapses long degenerate repetitions; that is not done here.
 */
export function parseAsrOutput(
  raw: string,
  opts?: { forcedLanguage?: string; supportedLanguages?: readonly string[] },
): AsrOutput {
  const supported = opts?.supportedLanguages ?? SUPPORTED_LANGUAGES;
  if (opts?.forcedLanguage !== undefined) {
    const forced = findLanguage(opts.forcedLanguage, supported) ?? opts.forcedLanguage.trim();
    return { language: forced, text: raw.trim() };
  }
  const tagAt = raw.indexOf(ASR_TEXT_TAG);
  if (tagAt < 0) return { text: raw.trim() };
  const header = raw.slice(0, tagAt);
  const text = raw.slice(tagAt + ASR_TEXT_TAG.length).trim();
  const m = /(?:^|\s)language[ \t]+([^\r\n]*)/i.exec(header);
  const value = m?.[1]?.trim() ?? '';
  if (value === '' || value.toLowerCase() === 'none') return { text };
  return { language: findLanguage(value, supported) ?? value, text };
}
