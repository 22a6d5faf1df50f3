// The official Qwen3-ASR output clean-up and parsing (qwen_asr/inference/utils.py: `detect_and_fix_repetitions`,
// `parse_asr_output`, `normalize_language_name`), reproduced exactly, with Python's string semantics:
//
//  - indices count Unicode code points (not UTF-16 units): an emoji is one character;
//  - `strip()` removes Python's whitespace set (str.isspace), which differs from String.prototype.trim (Python
//    strips U+001C..U+001F and U+0085, not U+FEFF);
//  - `splitlines()` breaks at Python's line boundaries.
//
// This is the one implementation of the model-answer parsing: offline segments, live partials and finals and
// the streaming detokenizer's header all go through it. ../../shared/golden/text holds the references.

/** The tag that separates the `language X` header of the model's answer from the transcript. */
export const ASR_TEXT_TAG = '<asr_text>';
const LANG_PREFIX = 'language ';
/** Repeats (of a character, or of a 1..20-character pattern) that the clean-up collapses (official: 20). */
export const REPETITION_THRESHOLD = 20;
/** Longest repeated pattern the clean-up looks for, in characters (official: 20). */
export const REPETITION_MAX_PATTERN = 20;

/** Python's str.isspace() code points. */
export function isPySpace(cp: number): boolean {
  return (
    (cp >= 0x09 && cp <= 0x0d) ||
    (cp >= 0x1c && cp <= 0x20) ||
    cp === 0x85 ||
    cp === 0xa0 ||
    cp === 0x1680 ||
    (cp >= 0x2000 && cp <= 0x200a) ||
    cp === 0x2028 ||
    cp === 0x2029 ||
    cp === 0x202f ||
    cp === 0x205f ||
    cp === 0x3000
  );
}

/** Python's `s.strip()` (no argument). */
export function pyStrip(s: string): string {
  let a = 0;
  let b = s.length;
  // Every Python whitespace code point is in the BMP, so one UTF-16 unit each.
  while (a < b && isPySpace(s.charCodeAt(a))) a++;
  while (b > a && isPySpace(s.charCodeAt(b - 1))) b--;
  return s.slice(a, b);
}

/** Python's `s.splitlines()` (line breaks dropped; no empty last line). */
export function pySplitLines(s: string): string[] {
  const out: string[] = [];
  let start = 0;
  let i = 0;
  while (i < s.length) {
    const c = s.charCodeAt(i);
    const brk =
      c === 0x0a || c === 0x0b || c === 0x0c || c === 0x0d || c === 0x1c || c === 0x1d || c === 0x1e || c === 0x85 || c === 0x2028 || c === 0x2029;
    if (!brk) {
      i++;
      continue;
    }
    out.push(s.slice(start, i));
    i += c === 0x0d && s.charCodeAt(i + 1) === 0x0a ? 2 : 1;
    start = i;
  }
  if (start < s.length) out.push(s.slice(start));
  return out;
}

/** The official `normalize_language_name`: first character upper case, the rest lower case ('cHINese' -> 'Chinese'). */
export function normalizeLanguageName(language: string): string {
  const s = pyStrip(language);
  const cps = Array.from(s);
  if (cps.length === 0) return '';
  return cps[0]!.toUpperCase() + cps.slice(1).join('').toLowerCase();
}

function sameRun(cps: readonly string[], a: number, b: number, k: number): boolean {
  for (let j = 0; j < k; j++) if (cps[a + j] !== cps[b + j]) return false;
  return true;
}

/** Stage 1: runs of more than `thresh` identical characters collapse to one. */
function fixCharRepeats(cps: readonly string[], thresh: number): string[] {
  const out: string[] = [];
  let i = 0;
  while (i < cps.length) {
    let count = 1;
    while (i + count < cps.length && cps[i + count] === cps[i]) count++;
    if (count > thresh) out.push(cps[i]!);
    else for (let j = 0; j < count; j++) out.push(cps[i + j]!);
    i += count;
  }
  return out;
}

/**
 * Stage 2: from the left, the first 1..maxLen-character pattern repeated at least `thresh` times in a row is kept
 * once, and the search goes on after its last repeat (the official recursion, written as a loop). Only start
 * positions up to len - 2 * thresh of the remaining string are tried, and a remaining string shorter than
 * 2 * thresh characters is left as it is.
 */
function fixPatternRepeats(cps: readonly string[], thresh: number, maxLen: number): string[] {
  const out: string[] = [];
  const minRepeatChars = thresh * 2;
  let base = 0; // start of the remaining string (the recursive call's `s`)
  for (;;) {
    const n = cps.length - base;
    if (n < minRepeatChars) {
      for (let j = base; j < cps.length; j++) out.push(cps[j]!);
      return out;
    }
    let i = 0;
    let found = false;
    while (i <= n - minRepeatChars) {
      for (let k = 1; k <= maxLen; k++) {
        if (i + k * thresh > n) break;
        const at = base + i;
        let valid = true;
        for (let rep = 1; rep < thresh; rep++) {
          if (!sameRun(cps, at, at + rep * k, k)) {
            valid = false;
            break;
          }
        }
        if (!valid) continue;
        let end = i + thresh * k;
        while (end + k <= n && sameRun(cps, at, base + end, k)) end += k;
        for (let j = 0; j < k; j++) out.push(cps[at + j]!);
        base += end;
        found = true;
        break;
      }
      if (found) break;
      out.push(cps[base + i]!);
      i++;
    }
    if (!found) {
      for (let j = base + i; j < cps.length; j++) out.push(cps[j]!);
      return out;
    }
  }
}

/** The official `detect_and_fix_repetitions(text, threshold=20)`. */
export function detectAndFixRepetitions(text: string, threshold = REPETITION_THRESHOLD): string {
  const cps = fixCharRepeats(Array.from(text), threshold);
  return fixPatternRepeats(cps, threshold, REPETITION_MAX_PATTERN).join('');
}

/**
 * The official `parse_asr_output(raw, user_language)`: returns [language, text], '' for "none".
 *
 * - The raw answer is stripped and cleaned of runaway repetitions (header included).
 * - With a forced language the whole cleaned answer is the text.
 * - Without a `<asr_text>` tag the whole answer is the text.
 * - A header containing "language none" (any case, as a substring) gives no language.
 * - Otherwise the first non-empty header line starting with "language " (any case) names the language,
 *   normalised by `normalizeLanguageName`.
 */
export function parseAsrOutputOfficial(raw: string | null | undefined, userLanguage?: string | null): [string, string] {
  if (raw === null || raw === undefined) return ['', ''];
  let s = pyStrip(String(raw));
  if (s === '') return ['', ''];
  s = detectAndFixRepetitions(s);
  if (userLanguage) return [userLanguage, s];
  const at = s.indexOf(ASR_TEXT_TAG);
  if (at < 0) return ['', pyStrip(s)];
  const meta = s.slice(0, at);
  const text = s.slice(at + ASR_TEXT_TAG.length);
  if (meta.toLowerCase().includes('language none')) {
    const t = pyStrip(text);
    return ['', t];
  }
  let lang = '';
  for (const rawLine of pySplitLines(meta)) {
    const line = pyStrip(rawLine);
    if (line === '') continue;
    if (line.toLowerCase().startsWith(LANG_PREFIX)) {
      const val = pyStrip(line.slice(LANG_PREFIX.length));
      if (val !== '') lang = normalizeLanguageName(val);
      break;
    }
  }
  return [lang, pyStrip(text)];
}
