// Subtitle cues (SRT, WebVTT) from word timestamps, by common subtitle conventions:
//
//  - at most 42 characters per line and 2 lines per cue, the line break where the two lines are most even;
//  - at most 7 s per cue;
//  - a cue ends after sentence punctuation (. ! ? … 。 ！ ？) and at a pause (a gap of 0.5 s or more between
//    two words); a cue that runs out of room ends after its last clause punctuation (, ; : 、 ，) when that
//    keeps at least half of it;
//  - a cue is shown for at least 1 s where the next cue leaves room (never past the 7 s).
//
// The aligner's units drop punctuation ("Hello," is timed as "Hello"), so cues are built from the transcript
// itself: each of its whitespace-separated pieces (or, in text without spaces, each unit with the punctuation
// after it) takes the times of the units inside it.
//
// Without word times, cues follow the audio's pauses: each decoded segment (cut at a quiet point, at most
// 30 s) is split into cues by the same length rules, with times spread over the segment by character count.

import { isKeptChar } from './aligner-text.js';
import { isPySpace } from './asr-output.js';

/** A timed word unit (as the aligner gives it): the unit's text and its span in seconds. */
export interface TimedUnit {
  text: string;
  start: number;
  end: number;
}

/** A piece of the transcript as shown, with the times of the units inside it. */
export interface DisplayWord {
  text: string;
  start: number;
  end: number;
  /** Written after a space (false inside text without spaces, e.g. Chinese). */
  space: boolean;
}

export interface Cue {
  start: number;
  end: number;
  /** One or two lines. */
  lines: string[];
  /** The cue's words, for word-level (karaoke) timing. */
  words: DisplayWord[];
}

export interface CueOptions {
  /** Characters per line (default 42). */
  maxLineChars?: number;
  /** Lines per cue (default 2). */
  maxLines?: number;
  /** Longest cue in seconds (default 7). */
  maxCueSeconds?: number;
  /** A gap between two words of at least this many seconds ends the cue (default 0.5). */
  pauseSeconds?: number;
  /** Shortest time a cue stays up when the next one leaves room, in seconds (default 1). */
  minCueSeconds?: number;
}

export const SUBTITLE_DEFAULTS: Required<CueOptions> = Object.freeze({
  maxLineChars: 42,
  maxLines: 2,
  maxCueSeconds: 7,
  pauseSeconds: 0.5,
  minCueSeconds: 1,
});

/** The longest cue of the fallback without word times, in seconds. */
export const FALLBACK_CUE_SECONDS = 30;

/** Scripts written without spaces between words (Han, kana). */
const UNSPACED = /[\p{Script=Han}\p{Script=Hiragana}\p{Script=Katakana}]/u;
const SENTENCE_END = /[.!?…。！？‼⁇⁈⁉]["'”’»)\]」』]*$/u;
const CLAUSE_END = /[,;:、，；：]["'”’»)\]」』]*$/u;

/** Length in code points (what a reader sees as characters, near enough). */
function charCount(s: string): number {
  return Array.from(s).length;
}

/**
 * Lays the transcript's pieces over its timed units. `units` must be the aligner units of `text`, in order
 * (their characters are the text's letters, digits and apostrophes, in order). A whitespace-separated piece
 * holding one unit is one word ("Hello," takes the times of "Hello"); a piece holding several (text without
 * spaces, "今天很好，") is cut before each unit, punctuation staying with the unit before it; a piece without
 * a unit (a dash, an ellipsis) joins the word before it (or, at the start, the word after it).
 */
export function displayWords(text: string, units: readonly TimedUnit[]): DisplayWord[] {
  const chars = Array.from(text);
  // The unit each kept character belongs to (-1: whitespace and punctuation).
  const owner = new Int32Array(chars.length).fill(-1);
  {
    let u = 0;
    let k = 0;
    let unit = units.length > 0 ? Array.from(units[0]!.text) : [];
    for (let i = 0; i < chars.length && u < units.length; i++) {
      if (!isKeptChar(chars[i]!) || chars[i] !== unit[k]) continue;
      owner[i] = u;
      if (++k === unit.length) {
        k = 0;
        if (++u < units.length) unit = Array.from(units[u]!.text);
      }
    }
  }
  const out: DisplayWord[] = [];
  let prefix = ''; // unitless pieces before the first word
  let i = 0;
  let spaced = false;
  while (i < chars.length) {
    const c = chars[i]!;
    if (c.length === 1 && isPySpace(c.charCodeAt(0))) {
      spaced = true;
      i++;
      continue;
    }
    let j = i;
    while (j < chars.length && !(chars[j]!.length === 1 && isPySpace(chars[j]!.charCodeAt(0)))) j++;
    // The piece chars[i, j): cut before each unit's first character.
    const starts: number[] = [];
    for (let x = i; x < j; x++) {
      if (owner[x]! >= 0 && (starts.length === 0 || owner[x] !== owner[starts[starts.length - 1]!])) starts.push(x);
    }
    if (starts.length === 0) {
      const piece = chars.slice(i, j).join('');
      if (out.length > 0) out[out.length - 1]!.text += (spaced ? ' ' : '') + piece;
      else prefix += piece + ' ';
    } else {
      starts.forEach((x, k) => {
        const from = k === 0 ? i : x;
        const to = k + 1 < starts.length ? starts[k + 1]! : j;
        const unit = units[owner[x]!]!;
        const word: DisplayWord = { text: chars.slice(from, to).join(''), start: unit.start, end: unit.end, space: k === 0 && spaced && out.length > 0 };
        if (prefix !== '') {
          word.text = prefix + word.text;
          prefix = '';
        }
        out.push(word);
      });
    }
    spaced = false;
    i = j;
  }
  return out;
}

function joinWords(words: readonly DisplayWord[]): string {
  let s = '';
  for (let i = 0; i < words.length; i++) s += (i > 0 && words[i]!.space ? ' ' : '') + words[i]!.text;
  return s;
}

/** The most even split of `words` into at most `maxLines` lines of at most `maxChars` (null when none fits). */
function splitLines(words: readonly DisplayWord[], maxChars: number, maxLines: number): DisplayWord[][] | null {
  const whole = charCount(joinWords(words));
  if (whole <= maxChars) return [words.slice()];
  if (maxLines < 2) return null;
  let best: DisplayWord[][] | null = null;
  let bestScore = Infinity;
  for (let k = 1; k < words.length; k++) {
    const a = charCount(joinWords(words.slice(0, k)));
    const b = charCount(joinWords(words.slice(k)));
    if (a > maxChars) break;
    if (b > maxChars) continue;
    // Even lines first; a break after punctuation is worth a few characters of evenness.
    const score = Math.abs(a - b) - (CLAUSE_END.test(words[k - 1]!.text) || SENTENCE_END.test(words[k - 1]!.text) ? 6 : 0);
    if (score < bestScore) {
      bestScore = score;
      best = [words.slice(0, k), words.slice(k)];
    }
  }
  return best;
}

/** Cues from words (in time order) by the rules at the top of this file. */
export function buildCues(words: readonly DisplayWord[], opts: CueOptions = {}): Cue[] {
  const o = { ...SUBTITLE_DEFAULTS, ...opts };
  const groups: DisplayWord[][] = [];
  let cur: DisplayWord[] = [];
  const fits = (ws: DisplayWord[]) =>
    ws[ws.length - 1]!.end - ws[0]!.start <= o.maxCueSeconds && splitLines(ws, o.maxLineChars, o.maxLines) !== null;
  for (const w of words) {
    if (cur.length > 0) {
      const prev = cur[cur.length - 1]!;
      const pause = w.start - prev.end >= o.pauseSeconds;
      if (pause || SENTENCE_END.test(prev.text)) {
        groups.push(cur);
        cur = [];
      } else if (!fits([...cur, w])) {
        // Out of room: end after the last clause punctuation when that keeps at least half of the cue.
        let at = -1;
        for (let k = cur.length - 1; k > 0; k--) {
          if (CLAUSE_END.test(cur[k - 1]!.text)) {
            at = k;
            break;
          }
        }
        const half = charCount(joinWords(cur)) / 2;
        if (at > 0 && charCount(joinWords(cur.slice(0, at))) >= half) {
          groups.push(cur.slice(0, at));
          cur = cur.slice(at);
          if (!fits([...cur, w])) {
            groups.push(cur);
            cur = [];
          }
        } else {
          groups.push(cur);
          cur = [];
        }
      }
    }
    cur.push(w);
  }
  if (cur.length > 0) groups.push(cur);

  const cues: Cue[] = groups.map((g) => ({
    start: g[0]!.start,
    end: g[g.length - 1]!.end,
    // A single word longer than a line stays on one line (nothing to break at).
    lines: (splitLines(g, o.maxLineChars, o.maxLines) ?? [g]).map(joinWords),
    words: g,
  }));
  // Minimum display time, never into the next cue nor past the longest cue.
  for (let i = 0; i < cues.length; i++) {
    const c = cues[i]!;
    const next = i + 1 < cues.length ? cues[i + 1]!.start : Infinity;
    const want = Math.min(c.start + o.minCueSeconds, c.start + o.maxCueSeconds, next);
    if (c.end < want) c.end = want;
  }
  return cues;
}

/**
 * Cues for one transcript with its aligner units (see displayWords). `span` (the segment's start and end):
 * word times are clamped into it, so that cues of consecutive segments never overlap.
 */
export function cuesFromUnits(text: string, units: readonly TimedUnit[], opts: CueOptions = {}, span?: { start: number; end: number }): Cue[] {
  const clamp = (t: number) => (span ? Math.min(Math.max(t, span.start), span.end) : t);
  const words = displayWords(text, units).map((w) => ({ ...w, start: clamp(w.start), end: clamp(w.end) }));
  const cues = buildCues(words, opts);
  if (span) for (const c of cues) c.end = Math.min(c.end, span.end);
  return cues;
}

/**
 * Cues for a segment without word times: its words spread over the segment's span in proportion to their
 * characters (an estimate), then cut by the same rules (no pauses are known); the cues tile the segment.
 */
export function cuesWithoutTimes(text: string, start: number, end: number, opts: CueOptions = {}): Cue[] {
  const pieces = text.split(/(\s+)/u);
  const words: DisplayWord[] = [];
  let space = false;
  for (const p of pieces) {
    if (p === '') continue;
    if (/^\s+$/u.test(p)) {
      space = true;
      continue;
    }
    // Text without spaces (Chinese, Japanese) is cut before each letter so that lines can break there;
    // punctuation stays with the letter before it.
    const parts: string[] = [];
    if (UNSPACED.test(p)) {
      let prev = '';
      for (const ch of p) {
        const cut = parts.length === 0 || (isKeptChar(ch) && (UNSPACED.test(ch) || UNSPACED.test(prev) || !isKeptChar(prev)));
        if (cut) parts.push(ch);
        else parts[parts.length - 1] += ch;
        prev = ch;
      }
    } else {
      parts.push(p);
    }
    parts.forEach((t, i) => {
      words.push({ text: t, start: 0, end: 0, space: i === 0 ? space && words.length > 0 : false });
    });
    space = false;
  }
  if (words.length === 0) return [];
  // Times proportional to characters, so that the length rules can use them.
  const total = words.reduce((n, w) => n + charCount(w.text) + 1, 0);
  let t = 0;
  for (const w of words) {
    w.start = start + ((end - start) * t) / total;
    t += charCount(w.text) + 1;
    w.end = start + ((end - start) * t) / total;
  }
  const o = { ...opts, pauseSeconds: Infinity, minCueSeconds: 0 };
  const cues = buildCues(words, o);
  // Back to back over the segment.
  cues.forEach((c, i) => {
    c.start = i === 0 ? start : cues[i - 1]!.end;
    if (i === cues.length - 1) c.end = end;
  });
  return cues;
}

/** HH:MM:SS,mmm (SRT) or HH:MM:SS.mmm (WebVTT). */
export function formatTimestamp(seconds: number, sep: ',' | '.'): string {
  const ms = Math.max(0, Math.round(seconds * 1000));
  const h = Math.floor(ms / 3_600_000);
  const m = Math.floor(ms / 60_000) % 60;
  const s = Math.floor(ms / 1000) % 60;
  const pad = (n: number, w = 2) => String(n).padStart(w, '0');
  return `${pad(h)}:${pad(m)}:${pad(s)}${sep}${pad(ms % 1000, 3)}`;
}

function escapeVtt(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** What formatCue takes: a built cue, or any span with a text (one line, e.g. a whole segment). */
export type CueLike = (Pick<Cue, 'start' | 'end' | 'lines'> & { words?: DisplayWord[] }) | { start: number; end: number; text: string };

/**
 * One cue as SRT (`n` is its 1-based number) or WebVTT. `karaoke` (WebVTT only): each word after the first
 * carries its start time (`<00:00:01.200>word`), for word-by-word highlighting.
 */
export function formatCue(format: 'srt' | 'vtt', n: number, c: CueLike, karaoke = false): string {
  const cue = 'lines' in c ? c : { start: c.start, end: c.end, lines: [c.text] };
  const sep = format === 'srt' ? ',' : '.';
  const head = format === 'srt' ? `${n}\n` : '';
  let body: string;
  if (format === 'vtt' && karaoke && cue.words && cue.words.length > 0) {
    // The lines again, word by word with their times.
    const lines: string[] = [];
    let w = 0;
    for (const line of cue.lines) {
      let s = '';
      let len = 0;
      const target = charCount(line);
      while (w < cue.words.length && len < target) {
        const word = cue.words[w]!;
        const lead = s === '' ? '' : word.space ? ' ' : '';
        const stamp = w === 0 ? '' : `<${formatTimestamp(word.start, '.')}>`;
        s += lead + stamp + escapeVtt(word.text);
        len += charCount(lead + word.text);
        w++;
      }
      lines.push(s);
    }
    body = lines.join('\n');
  } else {
    body = format === 'vtt' ? cue.lines.map(escapeVtt).join('\n') : cue.lines.join('\n');
  }
  return `${head}${formatTimestamp(cue.start, sep)} --> ${formatTimestamp(cue.end, sep)}\n${body}\n\n`;
}

/** A decoded segment as the subtitle builders use it (SegmentResult has these fields). */
export interface SubtitleSegment {
  start: number;
  end: number;
  text: string;
  /** Word units with times in the input (timestamps: 'word'); absent: the pause-based fallback. */
  words?: readonly TimedUnit[];
}

/** The cues of one segment: from its word times when it has them, else spread over it (cuesWithoutTimes). */
export function segmentCues(seg: SubtitleSegment, opts: CueOptions = {}): Cue[] {
  if (seg.text === '') return [];
  return seg.words ? cuesFromUnits(seg.text, seg.words, opts, seg) : cuesWithoutTimes(seg.text, seg.start, seg.end, opts);
}

/**
 * A whole subtitle file for decoded segments (WebVTT starts with its 'WEBVTT' line): each segment's cues by
 * segmentCues, numbered across segments; segments with no text get none. `karaoke`: WebVTT word timing.
 */
export function formatSubtitles(
  format: 'srt' | 'vtt',
  segments: readonly SubtitleSegment[],
  opts: CueOptions & { karaoke?: boolean } = {},
): string {
  let out = format === 'vtt' ? 'WEBVTT\n\n' : '';
  let n = 0;
  for (const seg of segments) for (const cue of segmentCues(seg, opts)) out += formatCue(format, ++n, cue, opts.karaoke === true);
  return out;
}
