// Subtitle cues (src/text/subtitles.ts): the transcript laid over its aligner units, the cue rules (42
// characters per line, 2 lines, 7 s, breaks at sentence punctuation and pauses) checked on a long synthetic
// transcript, the fallback without word times, and SRT / WebVTT formatting.
import { describe, expect, it } from 'vitest';

import { alignerUnits, pyRound3 } from '../src/text/aligner-text.js';
import {
  FALLBACK_CUE_SECONDS,
  SUBTITLE_DEFAULTS,
  cuesFromUnits,
  cuesWithoutTimes,
  displayWords,
  formatCue,
  formatTimestamp,
  type Cue,
  type TimedUnit,
} from '../src/text/subtitles.js';

/** Units of `text` timed one after another, `step` seconds each. */
function timed(text: string, language: string, step = 0.3): TimedUnit[] {
  return alignerUnits(text, language).map((u, i) => ({ text: u, start: pyRound3(i * step), end: pyRound3(i * step + step * 0.8) }));
}

const len = (s: string) => Array.from(s).length;

describe('displayWords', () => {
  it('keeps the punctuation of each piece with the unit inside it', () => {
    const text = '"Hello," she said — well... yes! 3.5% of state-of-the-art.';
    const w = displayWords(text, timed(text, 'English'));
    expect(w.map((x) => x.text)).toEqual(['"Hello,"', 'she', 'said —', 'well...', 'yes!', '3.5%', 'of', 'state-of-the-art.']);
    expect(w.map((x) => x.space)).toEqual([false, true, true, true, true, true, true, true]);
    expect(w[2]!.start).toBe(pyRound3(2 * 0.3));
  });

  it('text without spaces is cut before each unit; punctuation stays with the unit before it', () => {
    const text = '今天天气很好，我们去公园。Hello 世界!';
    const w = displayWords(text, timed(text, 'Chinese'));
    expect(w.map((x) => x.text)).toEqual(['今', '天', '天', '气', '很', '好，', '我', '们', '去', '公', '园。', 'Hello', '世', '界!']);
    expect(w.filter((x) => x.space).map((x) => x.text)).toEqual(['世']);
  });

  it('Japanese through the ICU word segmenter', () => {
    const text = '今日はいい天気ですね。';
    expect(displayWords(text, timed(text, 'Japanese')).map((x) => x.text).join('')).toBe(text);
  });

  it('a leading piece without a unit joins the first word', () => {
    const text = '— well, yes';
    expect(displayWords(text, timed(text, 'English')).map((x) => x.text)).toEqual(['— well,', 'yes']);
  });
});

/** A long transcript: sentences of random words with random durations and pauses (deterministic). */
function syntheticTranscript(sentences: number, seed = 7): { text: string; units: TimedUnit[] } {
  let s = seed;
  const rnd = () => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648);
  const vocab = ['the', 'a', 'subtitle', 'aligner', 'is', 'timing', 'every', 'word', 'of', 'long', 'talks', 'and',
    'interviews', 'so', 'that', 'people', 'can', 'read', 'them', 'comfortably', 'without', 'losing', 'track', 'we',
    'measured', 'extraordinarily', 'reasonable', 'results', 'on', 'it', 'today'];
  const pieces: string[] = [];
  for (let k = 0; k < sentences; k++) {
    const n = 3 + Math.floor(rnd() * 28);
    for (let i = 0; i < n; i++) {
      let w = vocab[Math.floor(rnd() * vocab.length)]!;
      if (i === 0) w = w[0]!.toUpperCase() + w.slice(1);
      if (i < n - 1 && rnd() < 0.08) w += ',';
      if (i === n - 1) w += rnd() < 0.8 ? '.' : rnd() < 0.5 ? '?' : '!';
      pieces.push(w);
    }
  }
  const text = pieces.join(' ');
  let t = 0;
  const units = alignerUnits(text, 'English').map((u) => {
    const start = t + (rnd() < 0.06 ? 0.5 + rnd() : rnd() * 0.15); // sometimes a pause
    const end = start + 0.12 + rnd() * 0.5;
    t = end;
    return { text: u, start: pyRound3(start), end: pyRound3(end) };
  });
  return { text, units };
}

function checkRules(cues: Cue[], words: ReturnType<typeof displayWords>) {
  const o = SUBTITLE_DEFAULTS;
  // Every word once, in order.
  expect(cues.flatMap((c) => c.words)).toEqual(words);
  let sentence = 0;
  let pause = 0;
  let other = 0;
  for (let i = 0; i < cues.length; i++) {
    const c = cues[i]!;
    expect(c.lines.length).toBeGreaterThanOrEqual(1);
    expect(c.lines.length).toBeLessThanOrEqual(o.maxLines);
    for (const l of c.lines) expect(len(l)).toBeLessThanOrEqual(o.maxLineChars);
    expect(c.end - c.start).toBeLessThanOrEqual(o.maxCueSeconds + 1e-9);
    expect(c.end).toBeGreaterThanOrEqual(c.words[c.words.length - 1]!.end);
    if (i + 1 < cues.length) expect(c.end).toBeLessThanOrEqual(cues[i + 1]!.start);
    // No sentence end and no pause inside a cue.
    for (let k = 0; k + 1 < c.words.length; k++) {
      expect(c.words[k]!.text).not.toMatch(/[.!?]$/);
      expect(c.words[k + 1]!.start - c.words[k]!.end).toBeLessThan(o.pauseSeconds);
    }
    if (i + 1 < cues.length) {
      const last = c.words[c.words.length - 1]!;
      if (/[.!?]$/.test(last.text)) sentence++;
      else if (cues[i + 1]!.words[0]!.start - last.end >= o.pauseSeconds) pause++;
      else other++;
    }
  }
  return { sentence, pause, other };
}

describe('cue rules on a long synthetic transcript', () => {
  it('42 characters per line, 2 lines, 7 s, breaks at sentences and pauses; every word once', () => {
    const { text, units } = syntheticTranscript(400);
    const words = displayWords(text, units);
    const cues = cuesFromUnits(text, units);
    const breaks = checkRules(cues, words);
    const lines = cues.flatMap((c) => c.lines.map(len));
    const durations = cues.map((c) => c.end - c.start);
    const stats = {
      words: words.length,
      minutes: +((units[units.length - 1]!.end - units[0]!.start) / 60).toFixed(1),
      cues: cues.length,
      twoLineCues: cues.filter((c) => c.lines.length === 2).length,
      meanLineChars: +(lines.reduce((a, b) => a + b, 0) / lines.length).toFixed(1),
      maxLineChars: Math.max(...lines),
      meanCueSeconds: +(durations.reduce((a, b) => a + b, 0) / durations.length).toFixed(2),
      maxCueSeconds: +Math.max(...durations).toFixed(3),
      breaks,
    };
    console.log('cue statistics:', JSON.stringify(stats));
    expect(breaks.sentence).toBeGreaterThan(300);
    expect(breaks.pause).toBeGreaterThan(0);
    expect(breaks.other).toBeGreaterThan(0); // long sentences are cut by length or time
    expect(stats.maxLineChars).toBeLessThanOrEqual(42);
  });

  it('a cue out of room ends after a clause comma when that keeps at least half of it', () => {
    const text = 'one two three four five six seven eight nine, ten eleven twelve thirteen fourteen fifteen sixteen seventeen';
    const cues = cuesFromUnits(text, timed(text, 'English', 0.2));
    expect(cues.map((c) => c.lines.join(' '))).toEqual([
      'one two three four five six seven eight nine,',
      'ten eleven twelve thirteen fourteen fifteen sixteen seventeen',
    ]);
  });

  it('the line break is the most even one (on a tie, the shorter first line), after punctuation when close', () => {
    const text = 'this sentence is long enough to need two lines but not three';
    const [cue] = cuesFromUnits(text, timed(text, 'English', 0.1));
    expect(cue!.lines).toEqual(['this sentence is long enough', 'to need two lines but not three']);
    const comma = 'this sentence, which is long, needs two lines but not three';
    expect(cuesFromUnits(comma, timed(comma, 'English', 0.1))[0]!.lines).toEqual(['this sentence, which is long,', 'needs two lines but not three']);
  });

  it('short cues stay up for 1 s when the next cue leaves room; clamped into the segment span', () => {
    const units = [
      { text: 'Yes', start: 1, end: 1.2 },
      { text: 'No', start: 1.5, end: 1.6 },
      { text: 'Maybe', start: 5, end: 5.1 },
    ];
    const cues = cuesFromUnits('Yes. No. Maybe', units);
    expect(cues.map((c) => [c.start, c.end])).toEqual([[1, 1.5], [1.5, 2.5], [5, 6]]);
    const clamped = cuesFromUnits('Yes. No. Maybe', units, {}, { start: 0, end: 5.05 });
    expect(clamped.map((c) => [c.start, c.end])).toEqual([[1, 1.5], [1.5, 2.5], [5, 5.05]]);
  });
});

describe('cues without word times (pause-based fallback)', () => {
  it('tile the segment, each within the length rules, at most the segment (<= 30 s) long', () => {
    const { text } = syntheticTranscript(12, 3);
    const cues = cuesWithoutTimes(text, 100, 100 + FALLBACK_CUE_SECONDS);
    expect(cues[0]!.start).toBe(100);
    expect(cues[cues.length - 1]!.end).toBe(100 + FALLBACK_CUE_SECONDS);
    for (let i = 0; i < cues.length; i++) {
      for (const l of cues[i]!.lines) expect(len(l)).toBeLessThanOrEqual(42);
      if (i > 0) expect(cues[i]!.start).toBe(cues[i - 1]!.end);
      expect(cues[i]!.end - cues[i]!.start).toBeLessThanOrEqual(FALLBACK_CUE_SECONDS);
    }
    expect(cues.map((c) => c.lines.join(' ')).join(' ')).toBe(text);
    expect(cues.length).toBeGreaterThan(3);
  });

  it('text without spaces breaks between characters, keeping Latin runs whole', () => {
    const cues = cuesWithoutTimes('今天天气很好，我们去公园散步。然后我们一起吃了晚饭，聊了很久很久的天，直到深夜才回家休息。ok_ok', 0, 10);
    for (const c of cues) for (const l of c.lines) expect(len(l)).toBeLessThanOrEqual(42);
    expect(cues.map((c) => c.lines.join('')).join('')).toBe('今天天气很好，我们去公园散步。然后我们一起吃了晚饭，聊了很久很久的天，直到深夜才回家休息。ok_ok');
  });
});

describe('formatting', () => {
  const cue: Cue = {
    start: 62.5,
    end: 3725.0456,
    lines: ['a <b> & c', 'd'],
    words: [
      { text: 'a', start: 62.5, end: 63, space: false },
      { text: '<b>', start: 63.25, end: 64, space: true },
      { text: '&', start: 64, end: 64.5, space: true },
      { text: 'c', start: 65, end: 66, space: true },
      { text: 'd', start: 70, end: 71, space: true },
    ],
  };
  it('SRT and WebVTT', () => {
    expect(formatCue('srt', 3, cue)).toBe('3\n00:01:02,500 --> 01:02:05,046\na <b> & c\nd\n\n');
    expect(formatCue('vtt', 3, cue)).toBe('00:01:02.500 --> 01:02:05.046\na &lt;b&gt; &amp; c\nd\n\n');
  });
  it('WebVTT karaoke: each word after the first carries its start', () => {
    expect(formatCue('vtt', 1, cue, true)).toBe(
      '00:01:02.500 --> 01:02:05.046\na <00:01:03.250>&lt;b&gt; <00:01:04.000>&amp; <00:01:05.000>c\n<00:01:10.000>d\n\n',
    );
  });
  it('timestamps and Python rounding', () => {
    expect(formatTimestamp(0.0004, ',')).toBe('00:00:00,000');
    expect(formatTimestamp(3599.9996, '.')).toBe('01:00:00.000');
    // round(x, 3) as Python: ties to even only where the double is exactly halfway.
    expect([0.0625, 0.1875, 1.0625, 2.5625, 12.34567, 0.0005, 4.0].map(pyRound3)).toEqual([0.062, 0.188, 1.062, 2.562, 12.346, 0.001, 4]);
  });
});
