// The forced aligner's text side, as the official Qwen3ForceAlignProcessor does it
// (qwen_asr/inference/qwen3_forced_aligner.py; ../../shared/golden/text holds the references):
//
//  - the transcript is split into word units: letters, digits and ASCII apostrophes are kept, everything
//    else is dropped; whitespace-separated languages split on Python whitespace, and every CJK ideograph
//    becomes a unit of its own;
//  - Japanese and Korean use dictionary word segmenters in the official code (nagisa, soynlp); here they use
//    the ICU word segmenter of `Intl.Segmenter`, so their units can differ (docs/guide.md, "Word timestamps");
//  - the aligner input is `<|audio_start|><|audio_pad|><|audio_end|>` followed by each unit and two
//    `<timestamp>` tokens;
//  - the predicted times go through `fix_timestamp`, which repairs non-monotonic values.
//
// Strings are handled as Unicode code points, as Python does.

import { RustAsrError } from '../errors.js';
import { isPySpace } from './asr-output.js';

export const TIMESTAMP_TOKEN = '<timestamp>';
const AUDIO_PREFIX = '<|audio_start|><|audio_pad|><|audio_end|>';
const LETTER_OR_NUMBER = /^[\p{L}\p{N}]$/u;

/** The official `is_kept_char`: ASCII `'`, or a character of Unicode category L* or N*. */
export function isKeptChar(ch: string): boolean {
  return ch === "'" || LETTER_OR_NUMBER.test(ch);
}

/** The official `clean_token`: only the kept characters, in order. */
export function cleanToken(token: string): string {
  let out = '';
  for (const ch of token) if (isKeptChar(ch)) out += ch;
  return out;
}

/** The official `is_cjk_char`: CJK Unified Ideographs, Extensions A-E and the compatibility ideographs. */
export function isCjkChar(cp: number): boolean {
  return (
    (cp >= 0x4e00 && cp <= 0x9fff) ||
    (cp >= 0x3400 && cp <= 0x4dbf) ||
    (cp >= 0x20000 && cp <= 0x2a6df) ||
    (cp >= 0x2a700 && cp <= 0x2b73f) ||
    (cp >= 0x2b740 && cp <= 0x2b81f) ||
    (cp >= 0x2b820 && cp <= 0x2ceaf) ||
    (cp >= 0xf900 && cp <= 0xfaff)
  );
}

/** Python's `s.split()`: pieces between runs of whitespace, no empty pieces. */
function pySplit(s: string): string[] {
  const out: string[] = [];
  let cur = '';
  for (const ch of s) {
    // Every Python whitespace character is in the BMP.
    if (ch.length === 1 && isPySpace(ch.charCodeAt(0))) {
      if (cur !== '') out.push(cur);
      cur = '';
    } else {
      cur += ch;
    }
  }
  if (cur !== '') out.push(cur);
  return out;
}

/** Splits a cleaned piece: each CJK ideograph alone, runs of other characters together. */
function splitCjk(piece: string, out: string[]): void {
  let buf = '';
  for (const ch of piece) {
    if (isCjkChar(ch.codePointAt(0)!)) {
      if (buf !== '') out.push(buf);
      buf = '';
      out.push(ch);
    } else {
      buf += ch;
    }
  }
  if (buf !== '') out.push(buf);
}

/** The official `tokenize_space_lang`: every language but Japanese and Korean. */
export function spaceLanguageUnits(text: string): string[] {
  const out: string[] = [];
  for (const piece of pySplit(text)) {
    const cleaned = cleanToken(piece);
    if (cleaned !== '') splitCjk(cleaned, out);
  }
  return out;
}

const segmenters = new Map<string, Intl.Segmenter>();

/**
 * Japanese and Korean: ICU's dictionary word segmentation (`Intl.Segmenter`, granularity 'word'), each
 * segment cleaned as the official code cleans nagisa's / soynlp's words. ICU keeps a Korean eojeol whole
 * (`학생입니다`) where soynlp's LTokenizer splits off the ending, and its Japanese words can differ from nagisa's.
 */
export function segmenterUnits(text: string, locale: 'ja' | 'ko'): string[] {
  let seg = segmenters.get(locale);
  if (!seg) {
    seg = new Intl.Segmenter(locale, { granularity: 'word' });
    segmenters.set(locale, seg);
  }
  const out: string[] = [];
  for (const s of seg.segment(text)) {
    const cleaned = cleanToken(s.segment);
    if (cleaned !== '') out.push(cleaned);
  }
  return out;
}

/**
 * The word units the aligner times for `text` in `language` (any case; '' or undefined: the generic
 * whitespace/CJK rule, as for every language other than Japanese and Korean).
 */
export function alignerUnits(text: string, language?: string): string[] {
  const lang = (language ?? '').toLowerCase();
  if (lang === 'japanese') return segmenterUnits(text, 'ja');
  if (lang === 'korean') return segmenterUnits(text, 'ko');
  return spaceLanguageUnits(text);
}

/** The text after `<|audio_end|>`: each unit followed by two `<timestamp>` tokens (2 slots even for no unit). */
export function alignerSlotsText(units: readonly string[]): string {
  const slots = TIMESTAMP_TOKEN + TIMESTAMP_TOKEN;
  return units.join(slots) + slots;
}

/** The aligner's input text before the audio pad is expanded (the official `encode_timestamp`). */
export function alignerInputText(units: readonly string[]): string {
  return AUDIO_PREFIX + alignerSlotsText(units);
}

/**
 * The official `fix_timestamp`: the longest non-decreasing subsequence is kept (O(n^2); for each i the first j
 * that gives a strictly longer chain, and the first index of the maximal length as its end); every run of
 * other values is repaired from the nearest kept values on each side: a run of 1 or 2 takes the nearer side
 * (the left one on a tie, the only one when one side is missing), a longer run is interpolated linearly
 * between them (or copies the one side there is). Every value is then truncated to an integer.
 */
export function fixTimestamp(data: readonly number[]): number[] {
  const n = data.length;
  if (n === 0) throw new RustAsrError('INVALID_ARGUMENT', 'fixTimestamp: no values');
  const dp = new Array<number>(n).fill(1);
  const parent = new Array<number>(n).fill(-1);
  for (let i = 1; i < n; i++) {
    for (let j = 0; j < i; j++) {
      if (data[j]! <= data[i]! && dp[j]! + 1 > dp[i]!) {
        dp[i] = dp[j]! + 1;
        parent[i] = j;
      }
    }
  }
  let end = 0;
  for (let i = 1; i < n; i++) if (dp[i]! > dp[end]!) end = i;
  const normal = new Array<boolean>(n).fill(false);
  for (let i = end; i !== -1; i = parent[i]!) normal[i] = true;

  const out = data.slice();
  for (let i = 0; i < n; ) {
    if (normal[i]) {
      i++;
      continue;
    }
    let j = i;
    while (j < n && !normal[j]) j++;
    const count = j - i;
    let left: number | undefined;
    for (let k = i - 1; k >= 0; k--) {
      if (normal[k]) {
        left = out[k]!;
        break;
      }
    }
    let right: number | undefined;
    for (let k = j; k < n; k++) {
      if (normal[k]) {
        right = out[k]!;
        break;
      }
    }
    for (let k = i; k < j; k++) {
      if (count <= 2) {
        if (left === undefined) out[k] = right!;
        else if (right === undefined) out[k] = left;
        else out[k] = k - (i - 1) <= j - k ? left : right;
      } else if (left !== undefined && right !== undefined) {
        out[k] = left + ((right - left) / (count + 1)) * (k - i + 1);
      } else {
        out[k] = (left ?? right)!;
      }
    }
    i = j;
  }
  return out.map((v) => Math.trunc(v));
}

/**
 * Python's `round(x, 3)` for x >= 0: the nearest multiple of 0.001, ties to even on the exact binary value
 * (the official code rounds shifted times so). A double is exactly halfway between two multiples of 0.001
 * only when x * 16 is an odd integer; every other x rounds as toFixed(3) does.
 */
export function pyRound3(x: number): number {
  const t = x * 16;
  if (Number.isInteger(t) && t % 2 !== 0) {
    const lo = Math.floor(x * 1000); // x * 1000 = 62.5 * t: exact
    return (lo % 2 === 0 ? lo : lo + 1) / 1000;
  }
  return Number(x.toFixed(3));
}
