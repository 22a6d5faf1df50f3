// Response bodies of POST /v1/audio/transcriptions, in OpenAI's shapes.
import type { TranscribeResult } from '../api/transcribe.js';
import { formatSubtitles } from '../text/subtitles.js';

export const RESPONSE_FORMATS = ['json', 'text', 'srt', 'vtt', 'verbose_json'] as const;
export type ResponseFormat = (typeof RESPONSE_FORMATS)[number];

/** A word with its times in seconds (verbose_json with `timestamp_granularities[]=word`), as OpenAI's. */
export interface WordTiming {
  word: string;
  start: number;
  end: number;
}

/** One entry of verbose_json's `segments`: the fields rustasr measures (no log-probabilities: decoding is greedy). */
export interface VerboseSegment {
  id: number;
  start: number;
  end: number;
  text: string;
  tokens: number[];
  temperature: number;
  /** The segment's words (with `timestamp_granularities[]=word`). */
  words?: WordTiming[];
}

export interface VerboseJson {
  task: 'transcribe';
  language: string;
  duration: number;
  text: string;
  segments: VerboseSegment[];
  words?: WordTiming[];
  usage: { type: 'duration'; seconds: number };
}

/** OpenAI reports the language as a lower-case name ('english'); merged ones stay comma-separated. */
function languageOf(r: TranscribeResult): string {
  return (r.language ?? '').toLowerCase();
}

/** The SDK's words ({ text, start, end }, from the forced aligner) in OpenAI's shape ({ word, start, end }). */
function wordTimings(words: readonly { text: string; start: number; end: number }[] | undefined): WordTiming[] {
  return (words ?? []).map((w) => ({ word: w.text, start: w.start, end: w.end }));
}

/** verbose_json; `words`: add the word times (the transcription ran with `timestamps: 'word'`), overall and per segment. */
export function verboseJson(r: TranscribeResult, opts: { words?: boolean } = {}): VerboseJson {
  const body: VerboseJson = {
    task: 'transcribe',
    language: languageOf(r),
    duration: r.timings.audioSeconds,
    text: r.text,
    segments: r.segments.map((s, i) => {
      const seg: VerboseSegment = { id: i, start: s.start, end: s.end, text: s.text, tokens: s.tokens, temperature: 0 };
      if (opts.words === true) seg.words = wordTimings(s.words);
      return seg;
    }),
    usage: { type: 'duration', seconds: r.timings.audioSeconds },
  };
  if (opts.words === true) body.words = wordTimings(r.words ?? r.segments.flatMap((s) => s.words ?? []));
  return body;
}

/**
 * The response body and content type for a finished transcription. `words`: verbose_json gets the word
 * times. srt/vtt: cues from the segments' word times when they have them (the transcription ran with the
 * aligner), as `rustasr infer` builds them, else spread over each segment (formatSubtitles).
 */
export function formatResult(format: ResponseFormat, r: TranscribeResult, opts: { words?: boolean } = {}): { contentType: string; body: string } {
  switch (format) {
    case 'json':
      return {
        contentType: 'application/json',
        body: JSON.stringify({ text: r.text, usage: { type: 'duration', seconds: r.timings.audioSeconds } }),
      };
    case 'verbose_json':
      return { contentType: 'application/json', body: JSON.stringify(verboseJson(r, opts)) };
    case 'text':
      return { contentType: 'text/plain; charset=utf-8', body: `${r.text}\n` };
    case 'srt':
      return { contentType: 'application/x-subrip; charset=utf-8', body: formatSubtitles('srt', r.segments) };
    case 'vtt':
      return { contentType: 'text/vtt; charset=utf-8', body: formatSubtitles('vtt', r.segments) };
  }
}
